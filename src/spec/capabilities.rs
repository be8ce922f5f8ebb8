//! The container's capability sets.

use std::collections::HashSet;

use k8s_cri::v1::Capability as CriCapability;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, Spec};

use super::{process_mut, security_context, SpecError, SpecInput};

/// Every capability proxrt knows, by kernel name without the `CAP_` prefix, in kernel order
/// (the index is the capability's bit number). All of them exist on the kernels proxrt
/// targets (5.9+ for CHECKPOINT_RESTORE; Proxmox VE 8 ships 6.x). "ALL" and privileged mode
/// do not mean this list but what the daemon holds (`HostView::capabilities`): a host or an
/// LXC guest may have a smaller bounding set, and asking for more fails in the kernel.
pub const ALL_CAPABILITIES: [(&str, Capability); 41] = [
    ("CHOWN", Capability::Chown),
    ("DAC_OVERRIDE", Capability::DacOverride),
    ("DAC_READ_SEARCH", Capability::DacReadSearch),
    ("FOWNER", Capability::Fowner),
    ("FSETID", Capability::Fsetid),
    ("KILL", Capability::Kill),
    ("SETGID", Capability::Setgid),
    ("SETUID", Capability::Setuid),
    ("SETPCAP", Capability::Setpcap),
    ("LINUX_IMMUTABLE", Capability::LinuxImmutable),
    ("NET_BIND_SERVICE", Capability::NetBindService),
    ("NET_BROADCAST", Capability::NetBroadcast),
    ("NET_ADMIN", Capability::NetAdmin),
    ("NET_RAW", Capability::NetRaw),
    ("IPC_LOCK", Capability::IpcLock),
    ("IPC_OWNER", Capability::IpcOwner),
    ("SYS_MODULE", Capability::SysModule),
    ("SYS_RAWIO", Capability::SysRawio),
    ("SYS_CHROOT", Capability::SysChroot),
    ("SYS_PTRACE", Capability::SysPtrace),
    ("SYS_PACCT", Capability::SysPacct),
    ("SYS_ADMIN", Capability::SysAdmin),
    ("SYS_BOOT", Capability::SysBoot),
    ("SYS_NICE", Capability::SysNice),
    ("SYS_RESOURCE", Capability::SysResource),
    ("SYS_TIME", Capability::SysTime),
    ("SYS_TTY_CONFIG", Capability::SysTtyConfig),
    ("MKNOD", Capability::Mknod),
    ("LEASE", Capability::Lease),
    ("AUDIT_WRITE", Capability::AuditWrite),
    ("AUDIT_CONTROL", Capability::AuditControl),
    ("SETFCAP", Capability::Setfcap),
    ("MAC_OVERRIDE", Capability::MacOverride),
    ("MAC_ADMIN", Capability::MacAdmin),
    ("SYSLOG", Capability::Syslog),
    ("WAKE_ALARM", Capability::WakeAlarm),
    ("BLOCK_SUSPEND", Capability::BlockSuspend),
    ("AUDIT_READ", Capability::AuditRead),
    ("PERFMON", Capability::Perfmon),
    ("BPF", Capability::Bpf),
    ("CHECKPOINT_RESTORE", Capability::CheckpointRestore),
];

/// containerd's default set (the same as Docker's).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

pub fn apply_capabilities(
    spec: &mut Spec,
    input: &SpecInput,
    privileged: bool,
) -> Result<(), SpecError> {
    let requested = security_context(input.config).and_then(|sc| sc.capabilities.as_ref());
    let caps = container_capabilities(requested, privileged, &input.host.capabilities)?;
    process_mut(spec).set_capabilities(Some(caps));
    Ok(())
}

/// Bounding = effective = permitted = the container's set; inheritable and ambient empty
/// (containerd's choice: ambient caps would survive exec of non-root programs) unless the
/// request names ambient capabilities, which must be in the set and are then inheritable too.
///
/// The set: privileged = all the daemon holds (`held`, its bounding set); else the default
/// set (less what the daemon lacks), then `ALL` in add (all held), then `ALL` in drop (none),
/// then the named adds, then the named drops. Names are case-insensitive, with or without
/// `CAP_`; an unknown name is an error (except under privileged, which ignores add and drop,
/// as the CRI allows), and so is a named add the daemon does not hold: the kernel would
/// refuse it when the container starts, with a message that names nothing.
pub fn container_capabilities(
    requested: Option<&CriCapability>,
    privileged: bool,
    held: &Capabilities,
) -> Result<LinuxCapabilities, SpecError> {
    let set: Capabilities = if privileged {
        held.clone()
    } else {
        let empty = CriCapability::default();
        let requested = requested.unwrap_or(&empty);
        let mut set: Capabilities = DEFAULT_CAPABILITIES
            .into_iter()
            .filter(|c| held.contains(c))
            .collect();
        let adds = parse_names(&requested.add_capabilities)?;
        let drops = parse_names(&requested.drop_capabilities)?;
        if adds.all {
            set = held.clone();
        }
        if drops.all {
            set.clear();
        }
        if let Some(missing) = adds.named.iter().find(|c| !held.contains(c)) {
            return Err(SpecError::CapabilityNotHeld(name_of(*missing)));
        }
        set.extend(adds.named);
        for cap in &drops.named {
            set.remove(cap);
        }
        set
    };

    let ambient_names = requested.map(|r| r.add_ambient_capabilities.as_slice());
    let ambient = parse_names(ambient_names.unwrap_or_default())?;
    let ambient: Capabilities = if ambient.all {
        set.clone()
    } else {
        ambient.named.into_iter().collect()
    };
    if let Some(missing) = ambient.iter().find(|c| !set.contains(c)) {
        return Err(SpecError::AmbientNotInSet(name_of(*missing).to_string()));
    }

    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    caps.set_inheritable(Some(ambient.clone()));
    caps.set_ambient(Some(ambient));
    Ok(caps)
}

/// Every capability proxrt knows (what a full-powered root holds).
pub fn all_capabilities() -> Capabilities {
    ALL_CAPABILITIES.iter().map(|(_, c)| *c).collect()
}

/// The capabilities of a kernel bit mask (`CapBnd:` in /proc/<pid>/status). Bits proxrt has
/// no name for (capabilities newer than this build) are left out.
pub fn from_mask(mask: u64) -> Capabilities {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, (_, c))| *c)
        .collect()
}

/// The kernel bit mask of a capability set (as /proc/<pid>/status shows it).
#[cfg(test)]
pub fn to_mask(caps: &Capabilities) -> u64 {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(_, (_, c))| caps.contains(c))
        .fold(0, |mask, (bit, _)| mask | (1u64 << bit))
}

/// Parses a capability name: `NET_ADMIN`, `CAP_NET_ADMIN`, `net_admin`.
pub fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    ALL_CAPABILITIES
        .iter()
        .find(|(n, _)| *n == bare)
        .map(|(_, c)| *c)
        .ok_or_else(|| SpecError::UnknownCapability(name.to_string()))
}

/// The kernel name of a capability, `CAP_` included.
pub fn name_of(cap: Capability) -> String {
    let bare = ALL_CAPABILITIES
        .iter()
        .find(|(_, c)| *c == cap)
        .map_or("UNKNOWN", |(n, _)| n);
    format!("CAP_{bare}")
}

struct Names {
    all: bool,
    named: Vec<Capability>,
}

fn parse_names(names: &[String]) -> Result<Names, SpecError> {
    let mut out = Names {
        all: false,
        named: Vec::new(),
    };
    for name in names {
        if name.trim().eq_ignore_ascii_case("ALL") {
            out.all = true;
        } else {
            out.named.push(parse_capability(name)?);
        }
    }
    Ok(out)
}

/// The effective set of a spec's process (empty when none), for steps that depend on it.
pub fn effective_capabilities(spec: &Spec) -> HashSet<Capability> {
    spec.process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.effective().clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::*;
    use crate::error::{Classify, Kind};

    fn req(add: &[&str], drop: &[&str]) -> CriCapability {
        CriCapability {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            add_ambient_capabilities: vec![],
        }
    }

    fn bounding(c: &LinuxCapabilities) -> Capabilities {
        c.bounding().clone().unwrap()
    }

    #[test]
    fn default_set_is_containerds() {
        let c = container_capabilities(None, false, &all_capabilities()).unwrap();
        let set = bounding(&c);
        assert_eq!(set.len(), 14);
        assert!(set.contains(&Capability::NetBindService));
        assert!(!set.contains(&Capability::SysAdmin));
        assert_eq!(c.effective(), c.bounding());
        assert_eq!(c.permitted(), c.bounding());
        assert!(c.inheritable().as_ref().unwrap().is_empty());
        assert!(c.ambient().as_ref().unwrap().is_empty());
    }

    #[test]
    fn names_with_or_without_prefix_in_any_case() {
        for name in ["SYS_ADMIN", "CAP_SYS_ADMIN", "sys_admin", "cap_sys_admin"] {
            assert_eq!(
                parse_capability(name).unwrap(),
                Capability::SysAdmin,
                "{name}"
            );
        }
    }

    #[test]
    fn add_and_drop() {
        let c = container_capabilities(
            Some(&req(&["SYS_ADMIN"], &["CAP_NET_RAW"])),
            false,
            &all_capabilities(),
        )
        .unwrap();
        let set = bounding(&c);
        assert!(set.contains(&Capability::SysAdmin));
        assert!(!set.contains(&Capability::NetRaw));
        assert_eq!(set.len(), 14);
    }

    #[test]
    fn add_all_then_drop_named() {
        let c =
            container_capabilities(Some(&req(&["ALL"], &["CHOWN"])), false, &all_capabilities())
                .unwrap();
        let set = bounding(&c);
        assert_eq!(set.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!set.contains(&Capability::Chown));
    }

    #[test]
    fn drop_all_then_add_named() {
        let c = container_capabilities(
            Some(&req(&["NET_BIND_SERVICE"], &["all"])),
            false,
            &all_capabilities(),
        )
        .unwrap();
        assert_eq!(
            bounding(&c),
            [Capability::NetBindService]
                .into_iter()
                .collect::<Capabilities>()
        );
    }

    #[test]
    fn drop_wins_over_add_of_the_same_name() {
        let c = container_capabilities(
            Some(&req(&["SYS_TIME"], &["SYS_TIME"])),
            false,
            &all_capabilities(),
        )
        .unwrap();
        assert!(!bounding(&c).contains(&Capability::SysTime));
    }

    #[test]
    fn unknown_names_are_errors() {
        for r in [req(&["SYS_WIZARD"], &[]), req(&[], &["CAP_NOPE"])] {
            let err = container_capabilities(Some(&r), false, &all_capabilities()).unwrap_err();
            assert!(matches!(err, SpecError::UnknownCapability(_)), "{err}");
            assert_eq!(err.kind(), Kind::InvalidArgument);
        }
    }

    #[test]
    fn privileged_gets_everything_and_ignores_add_drop() {
        let c = container_capabilities(Some(&req(&["BOGUS"], &["ALL"])), true, &all_capabilities())
            .unwrap();
        assert_eq!(bounding(&c).len(), ALL_CAPABILITIES.len());
    }

    #[test]
    fn ambient_caps_must_be_in_the_set() {
        let mut r = req(&[], &[]);
        r.add_ambient_capabilities = vec!["NET_BIND_SERVICE".into()];
        let c = container_capabilities(Some(&r), false, &all_capabilities()).unwrap();
        let amb = c.ambient().clone().unwrap();
        assert!(amb.contains(&Capability::NetBindService));
        assert_eq!(c.inheritable().clone().unwrap(), amb);

        r.add_ambient_capabilities = vec!["SYS_ADMIN".into()];
        assert!(matches!(
            container_capabilities(Some(&r), false, &all_capabilities()),
            Err(SpecError::AmbientNotInSet(ref n)) if n == "CAP_SYS_ADMIN"
        ));
    }

    /// This machine's root: everything but CAP_SYS_RESOURCE (bit 24).
    fn reduced() -> Capabilities {
        from_mask(0x01ff_ffff_ffff & !(1 << 24))
    }

    #[test]
    fn masks_follow_kernel_bit_numbers() {
        assert_eq!(from_mask(0x01ff_ffff_ffff), all_capabilities());
        assert_eq!(
            from_mask(1 << 21 | 1),
            [Capability::SysAdmin, Capability::Chown]
                .into_iter()
                .collect()
        );
        assert_eq!(to_mask(&from_mask(0xa80425fb)), 0xa80425fb);
        // Bits beyond the table (a newer kernel's capabilities) are not invented.
        assert_eq!(from_mask(1 << 63), Capabilities::new());
        assert!(!reduced().contains(&Capability::SysResource));
        assert_eq!(reduced().len(), ALL_CAPABILITIES.len() - 1);
    }

    #[test]
    fn all_and_privileged_mean_what_the_daemon_holds() {
        let held = reduced();
        let privileged = container_capabilities(None, true, &held).unwrap();
        assert_eq!(bounding(&privileged), held);
        assert_eq!(privileged.effective().as_ref(), Some(&held));
        assert_eq!(privileged.permitted().as_ref(), Some(&held));
        let all = container_capabilities(Some(&req(&["ALL"], &[])), false, &held).unwrap();
        assert_eq!(bounding(&all), held);
        let err =
            container_capabilities(Some(&req(&["SYS_RESOURCE"], &[])), false, &held).unwrap_err();
        assert!(
            matches!(err, SpecError::CapabilityNotHeld(ref n) if n == "CAP_SYS_RESOURCE"),
            "{err}"
        );
        assert_eq!(err.kind(), Kind::FailedPrecondition);
        // A default capability the daemon lacks is left out rather than refused.
        let mut no_mknod = held.clone();
        no_mknod.remove(&Capability::Mknod);
        let default = container_capabilities(None, false, &no_mknod).unwrap();
        assert_eq!(bounding(&default).len(), DEFAULT_CAPABILITIES.len() - 1);
    }

    #[test]
    fn table_names_match_oci_spec_serialization() {
        for (name, cap) in ALL_CAPABILITIES {
            let json = serde_json::to_string(&cap).unwrap();
            assert_eq!(json, format!("\"CAP_{name}\""));
        }
    }

    #[test]
    fn apply_sets_process_capabilities() {
        let mut f = Fixture::new();
        f.security_context().capabilities = Some(req(&["NET_ADMIN"], &[]));
        let mut spec = Spec::default();
        apply_capabilities(&mut spec, &f.input(), false).unwrap();
        assert!(effective_capabilities(&spec).contains(&Capability::NetAdmin));
    }
}
