//! no_new_privs, read-only rootfs, masked and read-only paths, AppArmor.
//!
//! SELinux options are accepted and ignored: Proxmox VE and Debian hosts run AppArmor, not
//! SELinux, and a label the host cannot apply would only make the create fail.

use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{LinuxContainerSecurityContext, SecurityProfile};
use oci_spec::runtime::Spec;

use super::{linux_mut, process_mut, security_context, SpecError, SpecInput};
use crate::apparmor::AppArmorHost;

/// containerd's default masked paths: kernel interfaces that leak host data or let a
/// container poke hardware.
pub const DEFAULT_MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's default read-only paths.
pub const DEFAULT_READONLY_PATHS: [&str; 6] = [
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub fn apply_security(
    spec: &mut Spec,
    input: &SpecInput,
    privileged: bool,
) -> Result<(), SpecError> {
    let sc = security_context(input.config);
    let readonly_rootfs = sc.is_some_and(|s| s.readonly_rootfs);
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(readonly_rootfs));
    }

    let apparmor = apparmor_profile(sc, privileged, &input.host.apparmor)?;
    let process = process_mut(spec);
    process.set_no_new_privileges(Some(sc.is_some_and(|s| s.no_new_privs)));
    process.set_apparmor_profile(apparmor);

    let (masked, readonly) = protected_paths(sc, privileged);
    let linux = linux_mut(spec);
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly));
    Ok(())
}

/// Masked and read-only paths. kubelet sends the lists it wants; protobuf cannot tell an empty
/// list from an absent one, so empty gets containerd's defaults (as containerd behaves: a
/// `procMount: Unmasked` pod is masked there too). Privileged containers get none.
pub fn protected_paths(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
) -> (Vec<String>, Vec<String>) {
    if privileged {
        return (Vec::new(), Vec::new());
    }
    let pick = |sent: Option<&Vec<String>>, defaults: &[&str]| match sent {
        Some(list) if !list.is_empty() => list.clone(),
        _ => defaults.iter().map(|p| p.to_string()).collect(),
    };
    (
        pick(sc.map(|s| &s.masked_paths), &DEFAULT_MASKED_PATHS),
        pick(sc.map(|s| &s.readonly_paths), &DEFAULT_READONLY_PATHS),
    )
}

/// What a container's security context asks of AppArmor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppArmorRequest {
    /// Nothing said: RuntimeDefault, as containerd and Kubernetes treat it.
    Unspecified,
    RuntimeDefault,
    Unconfined,
    Localhost(String),
}

/// The AppArmor profile to put in the spec, if any.
///
/// Where AppArmor enforces: RuntimeDefault (also when nothing is said) is the profile
/// proxrt loaded at start (refused, not run unconfined, if that failed), Localhost is the
/// named profile (the caller checks it is loaded), Unconfined none. Where AppArmor is
/// absent every request is accepted (after its syntax is checked) and none is applied;
/// the Status says so. Privileged containers get none, as with containerd.
pub fn apparmor_profile(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
    host: &AppArmorHost,
) -> Result<Option<String>, SpecError> {
    if privileged {
        return Ok(None);
    }
    let request = apparmor_request(sc)?;
    let AppArmorHost::Enabled { default } = host else {
        return Ok(None);
    };
    match request {
        AppArmorRequest::Unconfined => Ok(None),
        AppArmorRequest::Localhost(name) => Ok(Some(name)),
        AppArmorRequest::Unspecified | AppArmorRequest::RuntimeDefault => match default {
            Ok(name) => Ok(Some(name.clone())),
            Err(reason) => Err(SpecError::AppArmorDefaultUnavailable {
                reason: reason.clone(),
            }),
        },
    }
}

/// Reads the request from the `apparmor` field, or the deprecated `apparmor_profile`
/// string (`runtime/default`, `unconfined`, `localhost/<name>`) older kubelets and the
/// conformance suite still send.
#[allow(deprecated)] // apparmor_profile: the deprecated string form
pub fn apparmor_request(
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<AppArmorRequest, SpecError> {
    let Some(sc) = sc else {
        return Ok(AppArmorRequest::Unspecified);
    };
    if let Some(profile) = &sc.apparmor {
        return apparmor_from_profile(profile);
    }
    let legacy = sc.apparmor_profile.as_str();
    match legacy {
        "" => Ok(AppArmorRequest::Unspecified),
        "runtime/default" => Ok(AppArmorRequest::RuntimeDefault),
        "unconfined" => Ok(AppArmorRequest::Unconfined),
        _ => match legacy.strip_prefix("localhost/") {
            Some(name) if !name.is_empty() => Ok(AppArmorRequest::Localhost(name.to_string())),
            _ => Err(SpecError::InvalidApparmor {
                profile: legacy.to_string(),
                reason: "expected runtime/default, unconfined or localhost/<name>".into(),
            }),
        },
    }
}

fn apparmor_from_profile(profile: &SecurityProfile) -> Result<AppArmorRequest, SpecError> {
    let invalid = |reason: &str| SpecError::InvalidApparmor {
        profile: profile.localhost_ref.clone(),
        reason: reason.to_string(),
    };
    match ProfileType::try_from(profile.profile_type) {
        Ok(ProfileType::RuntimeDefault) => Ok(AppArmorRequest::RuntimeDefault),
        Ok(ProfileType::Unconfined) => Ok(AppArmorRequest::Unconfined),
        Ok(ProfileType::Localhost) => {
            // kubelet sends the bare name; tolerate the "localhost/" form some clients send.
            let name = profile.localhost_ref.trim();
            let name = name.strip_prefix("localhost/").unwrap_or(name);
            if name.is_empty() {
                return Err(invalid("Localhost profile without a name"));
            }
            Ok(AppArmorRequest::Localhost(name.to_string()))
        }
        Err(_) => Err(SpecError::InvalidApparmor {
            profile: format!("type {} {:?}", profile.profile_type, profile.localhost_ref),
            reason: "unknown profile type (expected RuntimeDefault, Unconfined or Localhost)"
                .into(),
        }),
    }
}

#[cfg(test)]
#[allow(deprecated)]
mod tests {
    use super::super::fixture::Fixture;
    use super::*;
    use crate::error::{Classify, Kind};

    fn profile(t: ProfileType, r: &str) -> SecurityProfile {
        SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        }
    }

    fn applied(f: &Fixture, privileged: bool) -> Spec {
        let mut spec = Spec::default();
        apply_security(&mut spec, &f.input(), privileged).unwrap();
        spec
    }

    #[test]
    fn no_new_privs_and_readonly_rootfs_follow_the_request() {
        let mut f = Fixture::new();
        let spec = applied(&f, false);
        assert_eq!(
            spec.process().as_ref().unwrap().no_new_privileges(),
            Some(false)
        );
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));

        f.security_context().no_new_privs = true;
        f.security_context().readonly_rootfs = true;
        let spec = applied(&f, false);
        assert_eq!(
            spec.process().as_ref().unwrap().no_new_privileges(),
            Some(true)
        );
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    }

    #[test]
    fn default_masked_and_readonly_paths_when_lists_are_empty() {
        let f = Fixture::new();
        let spec = applied(&f, false);
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.masked_paths().as_ref().unwrap(),
            &DEFAULT_MASKED_PATHS.map(String::from)
        );
        assert_eq!(
            linux.readonly_paths().as_ref().unwrap(),
            &DEFAULT_READONLY_PATHS.map(String::from)
        );
    }

    #[test]
    fn sent_lists_are_used_as_sent() {
        let mut f = Fixture::new();
        f.security_context().masked_paths = vec!["/proc/x".into()];
        f.security_context().readonly_paths = vec!["/proc/y".into()];
        let spec = applied(&f, false);
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.masked_paths().as_deref().unwrap(), ["/proc/x"]);
        assert_eq!(linux.readonly_paths().as_deref().unwrap(), ["/proc/y"]);
    }

    #[test]
    fn privileged_has_no_masked_or_readonly_paths_and_no_apparmor() {
        let mut f = Fixture::new();
        f.security_context().masked_paths = vec!["/proc/x".into()];
        f.security_context().apparmor = Some(profile(ProfileType::Localhost, "k8s-nginx"));
        let spec = applied(&f, true);
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.masked_paths().as_ref().unwrap().is_empty());
        assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
        assert!(spec
            .process()
            .as_ref()
            .unwrap()
            .apparmor_profile()
            .is_none());
    }

    fn enabled() -> AppArmorHost {
        AppArmorHost::Enabled {
            default: Ok("proxrt-default".into()),
        }
    }

    fn disabled() -> AppArmorHost {
        AppArmorHost::Disabled {
            reason: "the kernel has no AppArmor".into(),
        }
    }

    /// The profile `sc` gets on `host` (not privileged).
    fn on(host: &AppArmorHost, sc: &LinuxContainerSecurityContext) -> Option<String> {
        apparmor_profile(Some(sc), false, host).unwrap()
    }

    #[test]
    fn where_apparmor_enforces_runtime_default_is_proxrts_profile() {
        let host = enabled();
        let mut sc = LinuxContainerSecurityContext::default();
        // Nothing said is RuntimeDefault (as containerd and Kubernetes treat it).
        assert_eq!(on(&host, &sc).as_deref(), Some("proxrt-default"));
        assert_eq!(
            apparmor_profile(None, false, &host).unwrap().as_deref(),
            Some("proxrt-default")
        );
        sc.apparmor = Some(profile(ProfileType::RuntimeDefault, ""));
        assert_eq!(on(&host, &sc).as_deref(), Some("proxrt-default"));
        sc.apparmor = Some(profile(ProfileType::Localhost, "k8s-nginx"));
        assert_eq!(on(&host, &sc).as_deref(), Some("k8s-nginx"));
        sc.apparmor = Some(profile(ProfileType::Unconfined, ""));
        assert_eq!(on(&host, &sc), None);
    }

    #[test]
    fn a_default_that_could_not_be_loaded_refuses_rather_than_runs_unconfined() {
        let host = AppArmorHost::Enabled {
            default: Err("run apparmor_parser: not found".into()),
        };
        let err = apparmor_profile(None, false, &host).unwrap_err();
        assert_eq!(err.kind(), Kind::FailedPrecondition);
        assert!(err.to_string().contains("apparmor_parser"), "{err}");
        // What does not need the default still works.
        let sc = LinuxContainerSecurityContext {
            apparmor: Some(profile(ProfileType::Unconfined, "")),
            ..Default::default()
        };
        assert_eq!(on(&host, &sc), None);
    }

    #[test]
    fn without_apparmor_every_valid_request_is_accepted_and_none_applied() {
        let host = disabled();
        let mut sc = LinuxContainerSecurityContext::default();
        for p in [
            profile(ProfileType::Localhost, "k8s-nginx"),
            profile(ProfileType::RuntimeDefault, ""),
            profile(ProfileType::Unconfined, ""),
        ] {
            sc.apparmor = Some(p);
            assert_eq!(on(&host, &sc), None);
        }
        // A malformed request is still refused.
        sc.apparmor = Some(profile(ProfileType::Localhost, ""));
        assert!(apparmor_profile(Some(&sc), false, &host).is_err());
    }

    #[test]
    fn apparmor_deprecated_strings() {
        let host = enabled();
        let mut sc = LinuxContainerSecurityContext::default();
        for (s, want) in [
            ("runtime/default", Some("proxrt-default")),
            ("unconfined", None),
            ("localhost/my-prof", Some("my-prof")),
        ] {
            sc.apparmor_profile = s.into();
            assert_eq!(on(&host, &sc).as_deref(), want, "{s}");
        }
        // The structured field wins over the string.
        sc.apparmor = Some(profile(ProfileType::Unconfined, ""));
        assert_eq!(on(&host, &sc), None);
    }

    #[test]
    fn apparmor_privileged_is_unconfined_whatever_is_asked() {
        let host = enabled();
        let sc = LinuxContainerSecurityContext {
            apparmor_profile: "bogus".into(),
            ..Default::default()
        };
        assert_eq!(apparmor_profile(Some(&sc), true, &host).unwrap(), None);
        assert_eq!(apparmor_profile(None, true, &host).unwrap(), None);
        let err = apparmor_profile(Some(&sc), false, &host).unwrap_err();
        assert!(err.to_string().contains("\"bogus\""), "{err}");
    }

    #[test]
    fn apparmor_errors() {
        let host = enabled();
        let mut sc = LinuxContainerSecurityContext {
            apparmor_profile: "bogus".into(),
            ..Default::default()
        };
        let err = apparmor_profile(Some(&sc), false, &host).unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidArgument);
        sc.apparmor_profile = "localhost/".into();
        assert!(apparmor_profile(Some(&sc), false, &host).is_err());
        sc.apparmor_profile.clear();
        sc.apparmor = Some(profile(ProfileType::Localhost, " "));
        assert!(apparmor_profile(Some(&sc), false, &host).is_err());
        sc.apparmor = Some(SecurityProfile {
            profile_type: 7,
            localhost_ref: String::new(),
        });
        assert!(apparmor_profile(Some(&sc), false, &host).is_err());
    }
}
