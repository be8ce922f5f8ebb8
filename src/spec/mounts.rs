//! The container's mounts: the filesystems every container gets, the pod's shared files, and
//! the CRI volume mounts (bind mounts), plus the rootfs propagation they need.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use k8s_cri::v1::{Mount as CriMount, MountPropagation};
use oci_spec::runtime::{Mount, Spec};

use super::namespaces::NamespacePlan;
use super::{linux_mut, security_context, SandboxView, SpecError, SpecInput};

pub const ETC_HOSTNAME: &str = "/etc/hostname";
pub const ETC_HOSTS: &str = "/etc/hosts";
pub const ETC_RESOLV_CONF: &str = "/etc/resolv.conf";
pub const DEV_SHM: &str = "/dev/shm";

/// Sets `mounts` and `linux.rootfsPropagation`.
///
/// Order of precedence for a destination: CRI mounts, then the pod's files (/etc/hostname,
/// /etc/hosts, /etc/resolv.conf, /dev/shm), then the defaults. A CRI mount on /dev also
/// removes every default below /dev (containerd does the same). The result is sorted so that
/// a parent is mounted before its children.
pub fn apply_mounts(
    spec: &mut Spec,
    input: &SpecInput,
    privileged: bool,
    plan: &NamespacePlan,
) -> Result<(), SpecError> {
    let readonly_rootfs = security_context(input.config).is_some_and(|sc| sc.readonly_rootfs);
    let mut cri = Vec::with_capacity(input.config.mounts.len());
    let mut propagation = RootfsPropagation::Private;
    for m in &input.config.mounts {
        let (mount, p) = cri_mount(m)?;
        if p == RootfsPropagation::Shared && !privileged {
            // Mounts made in the container would reach the host: kubelet only allows it for
            // privileged containers, and so does every runtime.
            return Err(SpecError::BidirectionalNeedsPrivileged {
                destination: m.container_path.clone(),
            });
        }
        propagation = propagation.max(p);
        cri.push(mount);
    }
    let mounts = merge_mounts(
        cri,
        sandbox_mounts(input.sandbox, readonly_rootfs, plan.host_ipc),
        default_mounts(privileged),
    )?;
    spec.set_mounts(Some(mounts));
    linux_mut(spec).set_rootfs_propagation(propagation.as_spec_value().map(String::from));
    Ok(())
}

/// How the container's root mount must propagate so that its volumes can.
///
/// The values are the runtime-spec's `shared`/`slave` (the root is always re-mounted with
/// MS_REC): libcontainer 0.7 rejects containerd's `rshared`/`rslave` spelling here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RootfsPropagation {
    /// Nothing needed: leave the runtime's default.
    Private,
    /// A HOST_TO_CONTAINER volume needs host mounts to reach it: at least slave.
    Slave,
    /// A BIDIRECTIONAL volume needs mounts made in the container to reach the host.
    Shared,
}

impl RootfsPropagation {
    pub fn as_spec_value(self) -> Option<&'static str> {
        match self {
            RootfsPropagation::Private => None,
            RootfsPropagation::Slave => Some("slave"),
            RootfsPropagation::Shared => Some("shared"),
        }
    }
}

/// A CRI volume: a recursive bind of `host_path` (already resolved by the caller, symlinks
/// included) with the requested propagation and read-only-ness.
pub fn cri_mount(m: &CriMount) -> Result<(Mount, RootfsPropagation), SpecError> {
    let destination = clean_destination(&m.container_path)?;
    let invalid = |reason: &str| SpecError::InvalidMount {
        destination: m.container_path.clone(),
        reason: reason.to_string(),
    };
    if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
        return Err(SpecError::Unsupported(format!(
            "image volume mount on {}",
            m.container_path
        )));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(SpecError::Unsupported(format!(
            "id-mapped mount on {}",
            m.container_path
        )));
    }
    if m.host_path.is_empty() {
        return Err(invalid("empty host_path"));
    }
    if !m.host_path.starts_with('/') {
        return Err(invalid("host_path is not absolute"));
    }
    if m.host_path.contains('\0') {
        return Err(invalid("host_path contains a NUL byte"));
    }
    let propagation = MountPropagation::try_from(m.propagation)
        .map_err(|_| invalid(&format!("unknown propagation {}", m.propagation)))?;
    if m.recursive_read_only && !(m.readonly && propagation == MountPropagation::PropagationPrivate)
    {
        // CRI: recursive_read_only requires readonly and PRIVATE propagation.
        return Err(invalid(
            "recursive_read_only needs readonly and PRIVATE propagation",
        ));
    }
    let (option, rootfs) = match propagation {
        MountPropagation::PropagationPrivate => ("rprivate", RootfsPropagation::Private),
        MountPropagation::PropagationHostToContainer => ("rslave", RootfsPropagation::Slave),
        MountPropagation::PropagationBidirectional => ("rshared", RootfsPropagation::Shared),
    };
    let mut options = vec!["rbind".to_string(), option.to_string()];
    options.push(
        match (m.readonly, m.recursive_read_only) {
            // "rro" makes every submount read-only too (mount_setattr AT_RECURSIVE); kubelet
            // only asks when the runtime advertises RecursiveReadOnlyMounts.
            (true, true) => "rro",
            (true, false) => "ro",
            (false, _) => "rw",
        }
        .to_string(),
    );
    Ok((bind(&destination, Path::new(&m.host_path), options), rootfs))
}

/// The pod's shared files. Read-only when the rootfs is (containerd's rule: a read-only
/// container must not be able to rewrite the pod's /etc/hosts for its siblings).
///
/// /dev/shm: the host's when the container shares the host IPC namespace (its SysV/POSIX
/// shared memory lives there); else the pod's shm mount when it has one, so all containers of
/// the pod share it; else the default private tmpfs stays.
pub fn sandbox_mounts(sandbox: &SandboxView, readonly_rootfs: bool, host_ipc: bool) -> Vec<Mount> {
    let ro = if readonly_rootfs { "ro" } else { "rw" };
    let mut mounts = Vec::new();
    for (destination, source) in [
        (ETC_HOSTNAME, &sandbox.hostname_path),
        (ETC_HOSTS, &sandbox.hosts_path),
        (ETC_RESOLV_CONF, &sandbox.resolv_conf_path),
    ] {
        if let Some(source) = source {
            mounts.push(bind(
                destination,
                source,
                vec!["rbind".into(), "rprivate".into(), ro.into()],
            ));
        }
    }
    let shm_source = if host_ipc {
        Some(Path::new(DEV_SHM))
    } else {
        sandbox.shm_path.as_deref()
    };
    if let Some(source) = shm_source {
        mounts.push(bind(
            DEV_SHM,
            source,
            ["rbind", "rprivate", "nosuid", "nodev", "noexec", "rw"]
                .map(String::from)
                .to_vec(),
        ));
    }
    mounts
}

/// The filesystems every container gets (containerd's defaults). /sys and the cgroup mount
/// are read-only unless privileged.
pub fn default_mounts(privileged: bool) -> Vec<Mount> {
    let ro = if privileged { "rw" } else { "ro" };
    vec![
        fs("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        fs(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        fs(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        fs(
            DEV_SHM,
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        fs(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        fs("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", ro]),
        fs(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", ro],
        ),
    ]
}

/// Merges the three layers (see [`apply_mounts`]) and sorts parents first.
pub fn merge_mounts(
    cri: Vec<Mount>,
    sandbox: Vec<Mount>,
    defaults: Vec<Mount>,
) -> Result<Vec<Mount>, SpecError> {
    let mut taken: HashSet<PathBuf> = HashSet::new();
    for m in &cri {
        if !taken.insert(m.destination().clone()) {
            return Err(SpecError::InvalidMount {
                destination: m.destination().display().to_string(),
                reason: "more than one mount for this destination".into(),
            });
        }
    }
    let cri_dev = taken.contains(Path::new("/dev"));
    let mut mounts = cri;
    for m in sandbox.into_iter().chain(defaults) {
        let dst = m.destination();
        if taken.contains(dst) || (cri_dev && dst.starts_with("/dev")) {
            continue;
        }
        taken.insert(dst.clone());
        mounts.push(m);
    }
    // Stable sort by depth: a parent always precedes its children, and mounts of equal depth
    // keep their layer order (defaults first among equals would not matter: they are disjoint).
    mounts.sort_by_key(|m| m.destination().components().count());
    Ok(mounts)
}

/// A CRI container path made canonical: absolute, no `..`, no `.`, no repeated or trailing
/// slashes. `..` is refused rather than resolved: the path is read by code that resolves it
/// inside the rootfs, and a request that climbs is malformed.
pub fn clean_destination(path: &str) -> Result<String, SpecError> {
    let invalid = |reason: &str| SpecError::InvalidMount {
        destination: path.to_string(),
        reason: reason.to_string(),
    };
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    if !path.starts_with('/') {
        return Err(invalid("destination is not an absolute path"));
    }
    let mut clean = String::new();
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(invalid("destination contains '..'")),
            Component::Normal(part) => {
                clean.push('/');
                clean.push_str(&part.to_string_lossy());
            }
            Component::Prefix(_) => return Err(invalid("unexpected path prefix")),
        }
    }
    if clean.is_empty() {
        return Err(invalid("cannot mount over the container's root"));
    }
    Ok(clean)
}

fn bind(destination: &str, source: &Path, options: Vec<String>) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some("bind".into()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(Some(options));
    m
}

fn fs(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some(typ.into()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::super::namespaces::plan_namespaces;
    use super::*;
    use crate::error::{Classify, Kind};
    use k8s_cri::v1::{ImageSpec, NamespaceMode, NamespaceOption};

    fn cri(dst: &str, src: &str) -> CriMount {
        CriMount {
            container_path: dst.into(),
            host_path: src.into(),
            ..Default::default()
        }
    }

    fn options(m: &Mount) -> Vec<&str> {
        m.options()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(String::as_str)
            .collect()
    }

    fn build(f: &Fixture, privileged: bool) -> Spec {
        let opts =
            super::super::security_context(&f.config).and_then(|sc| sc.namespace_options.as_ref());
        let plan = plan_namespaces(opts, &f.sandbox, &f.host).unwrap();
        let mut spec = Spec::default();
        apply_mounts(&mut spec, &f.input(), privileged, &plan).unwrap();
        spec
    }

    fn at<'a>(spec: &'a Spec, dst: &str) -> Vec<&'a Mount> {
        spec.mounts()
            .as_deref()
            .unwrap()
            .iter()
            .filter(|m| m.destination() == Path::new(dst))
            .collect()
    }

    #[test]
    fn clean_destination_rules() {
        assert_eq!(clean_destination("/data").unwrap(), "/data");
        assert_eq!(clean_destination("/data/").unwrap(), "/data");
        assert_eq!(clean_destination("//a/./b//").unwrap(), "/a/b");
        for bad in ["data", "", "/a/../b", "/..", "/", "/a\0b"] {
            let err = clean_destination(bad).unwrap_err();
            assert!(matches!(err, SpecError::InvalidMount { .. }), "{bad:?}");
            assert_eq!(err.kind(), Kind::InvalidArgument);
        }
    }

    #[test]
    fn cri_mount_options_follow_propagation_and_readonly() {
        let mut m = cri("/data", "/srv/data");
        let (mount, p) = cri_mount(&m).unwrap();
        assert_eq!(mount.typ().as_deref(), Some("bind"));
        assert_eq!(mount.source().as_deref(), Some(Path::new("/srv/data")));
        assert_eq!(options(&mount), ["rbind", "rprivate", "rw"]);
        assert_eq!(p, RootfsPropagation::Private);

        m.readonly = true;
        m.propagation = MountPropagation::PropagationHostToContainer as i32;
        let (mount, p) = cri_mount(&m).unwrap();
        assert_eq!(options(&mount), ["rbind", "rslave", "ro"]);
        assert_eq!(p, RootfsPropagation::Slave);

        m.propagation = MountPropagation::PropagationBidirectional as i32;
        let (mount, p) = cri_mount(&m).unwrap();
        assert_eq!(options(&mount), ["rbind", "rshared", "ro"]);
        assert_eq!(p, RootfsPropagation::Shared);
    }

    #[test]
    fn recursive_read_only() {
        let mut m = cri("/data", "/srv");
        m.readonly = true;
        m.recursive_read_only = true;
        let (mount, _) = cri_mount(&m).unwrap();
        assert_eq!(options(&mount), ["rbind", "rprivate", "rro"]);
        m.readonly = false;
        assert!(cri_mount(&m).is_err());
        m.readonly = true;
        m.propagation = MountPropagation::PropagationHostToContainer as i32;
        assert!(cri_mount(&m).is_err());
    }

    #[test]
    fn cri_mount_errors() {
        for bad in [
            cri("relative", "/srv"),
            cri("/a/../etc", "/srv"),
            cri("/data", ""),
            cri("/data", "srv"),
        ] {
            let err = cri_mount(&bad).unwrap_err();
            assert!(matches!(err, SpecError::InvalidMount { .. }), "{bad:?}");
        }
        let mut m = cri("/data", "/srv");
        m.propagation = 9;
        assert!(cri_mount(&m).is_err());
        let mut m = cri("/data", "");
        m.image = Some(ImageSpec {
            image: "sha256:aa".into(),
            ..Default::default()
        });
        assert!(matches!(cri_mount(&m), Err(SpecError::Unsupported(_))));
    }

    #[test]
    fn defaults_are_present_and_sys_is_read_only() {
        let f = Fixture::new();
        let spec = build(&f, false);
        for dst in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
        ] {
            assert_eq!(at(&spec, dst).len(), 1, "{dst}");
        }
        assert!(options(at(&spec, "/sys")[0]).contains(&"ro"));
        assert!(options(at(&spec, "/sys/fs/cgroup")[0]).contains(&"ro"));
        assert_eq!(
            at(&spec, "/sys/fs/cgroup")[0].typ().as_deref(),
            Some("cgroup")
        );
    }

    #[test]
    fn privileged_gets_rw_sys_and_cgroup() {
        let f = Fixture::new();
        let spec = build(&f, true);
        assert!(options(at(&spec, "/sys")[0]).contains(&"rw"));
        assert!(!options(at(&spec, "/sys")[0]).contains(&"ro"));
        assert!(options(at(&spec, "/sys/fs/cgroup")[0]).contains(&"rw"));
    }

    #[test]
    fn sandbox_files_are_bound() {
        let f = Fixture::new();
        let spec = build(&f, false);
        let hosts = at(&spec, ETC_HOSTS);
        assert_eq!(
            hosts[0].source().as_deref(),
            Some(Path::new("/run/proxrt/pod/hosts"))
        );
        assert_eq!(options(hosts[0]), ["rbind", "rprivate", "rw"]);
        assert_eq!(at(&spec, ETC_HOSTNAME).len(), 1);
        assert_eq!(at(&spec, ETC_RESOLV_CONF).len(), 1);
    }

    #[test]
    fn sandbox_files_read_only_with_read_only_rootfs() {
        let mut f = Fixture::new();
        f.security_context().readonly_rootfs = true;
        let spec = build(&f, false);
        assert!(options(at(&spec, ETC_RESOLV_CONF)[0]).contains(&"ro"));
    }

    #[test]
    fn sandbox_files_absent_when_paths_absent() {
        let mut f = Fixture::new();
        f.sandbox.hostname_path = None;
        f.sandbox.hosts_path = None;
        f.sandbox.resolv_conf_path = None;
        let spec = build(&f, false);
        assert!(at(&spec, ETC_HOSTS).is_empty());
        assert!(at(&spec, ETC_HOSTNAME).is_empty());
        assert!(at(&spec, ETC_RESOLV_CONF).is_empty());
    }

    #[test]
    fn shm_comes_from_the_pod() {
        let f = Fixture::new();
        let spec = build(&f, false);
        let shm = at(&spec, DEV_SHM);
        assert_eq!(shm.len(), 1);
        assert_eq!(shm[0].typ().as_deref(), Some("bind"));
        assert_eq!(
            shm[0].source().as_deref(),
            Some(Path::new("/run/proxrt/pod/shm"))
        );
    }

    #[test]
    fn shm_is_the_hosts_with_host_ipc() {
        let mut f = Fixture::new();
        f.security_context().namespace_options = Some(NamespaceOption {
            ipc: NamespaceMode::Node as i32,
            pid: NamespaceMode::Container as i32,
            ..Default::default()
        });
        let spec = build(&f, false);
        let shm = at(&spec, DEV_SHM);
        assert_eq!(shm[0].source().as_deref(), Some(Path::new("/dev/shm")));
        assert_eq!(shm[0].typ().as_deref(), Some("bind"));
    }

    #[test]
    fn shm_is_a_private_tmpfs_without_pod_shm() {
        let mut f = Fixture::new();
        f.sandbox.shm_path = None;
        let spec = build(&f, false);
        let shm = at(&spec, DEV_SHM);
        assert_eq!(shm[0].typ().as_deref(), Some("tmpfs"));
    }

    #[test]
    fn cri_mounts_win_over_sandbox_and_defaults() {
        let mut f = Fixture::new();
        f.config.mounts = vec![
            cri("/etc/hosts", "/kubelet/etc-hosts"),
            cri("/dev/shm/", "/kubelet/shm"),
            cri("/proc", "/kubelet/proc"),
        ];
        let spec = build(&f, false);
        let hosts = at(&spec, ETC_HOSTS);
        assert_eq!(hosts.len(), 1);
        assert_eq!(
            hosts[0].source().as_deref(),
            Some(Path::new("/kubelet/etc-hosts"))
        );
        let shm = at(&spec, DEV_SHM);
        assert_eq!(shm.len(), 1);
        assert_eq!(shm[0].source().as_deref(), Some(Path::new("/kubelet/shm")));
        assert_eq!(at(&spec, "/proc").len(), 1);
    }

    #[test]
    fn cri_dev_mount_replaces_all_dev_defaults() {
        let mut f = Fixture::new();
        f.config.mounts = vec![cri("/dev", "/host/dev")];
        let spec = build(&f, false);
        let under_dev: Vec<_> = spec
            .mounts()
            .as_deref()
            .unwrap()
            .iter()
            .filter(|m| m.destination().starts_with("/dev"))
            .collect();
        assert_eq!(under_dev.len(), 1);
        assert_eq!(
            under_dev[0].source().as_deref(),
            Some(Path::new("/host/dev"))
        );
    }

    #[test]
    fn duplicate_cri_destinations_are_rejected() {
        let err = merge_mounts(
            vec![
                cri_mount(&cri("/a", "/x")).unwrap().0,
                cri_mount(&cri("/a/", "/y")).unwrap().0,
            ],
            vec![],
            vec![],
        )
        .unwrap_err();
        assert!(matches!(err, SpecError::InvalidMount { .. }));
    }

    #[test]
    fn parents_mount_before_children() {
        let mut f = Fixture::new();
        f.config.mounts = vec![
            cri("/data/cache/tmp", "/c"),
            cri("/data", "/a"),
            cri("/data/cache", "/b"),
        ];
        let spec = build(&f, false);
        let order: Vec<_> = spec
            .mounts()
            .as_deref()
            .unwrap()
            .iter()
            .map(|m| m.destination().clone())
            .collect();
        for (i, m) in order.iter().enumerate() {
            for earlier in &order[i + 1..] {
                assert!(
                    !m.starts_with(earlier) || m == earlier,
                    "{} before its parent {}",
                    m.display(),
                    earlier.display()
                );
            }
        }
    }

    #[test]
    fn rootfs_propagation_is_the_strongest_needed() {
        let mut f = Fixture::new();
        let spec = build(&f, false);
        assert!(spec
            .linux()
            .as_ref()
            .unwrap()
            .rootfs_propagation()
            .is_none());

        let mut slave = cri("/a", "/a");
        slave.propagation = MountPropagation::PropagationHostToContainer as i32;
        f.config.mounts = vec![slave.clone()];
        let spec = build(&f, false);
        assert_eq!(
            spec.linux()
                .as_ref()
                .unwrap()
                .rootfs_propagation()
                .as_deref(),
            Some("slave")
        );

        let mut shared = cri("/b", "/b");
        shared.propagation = MountPropagation::PropagationBidirectional as i32;
        f.config.mounts = vec![shared, slave];
        let spec = build(&f, true);
        assert_eq!(
            spec.linux()
                .as_ref()
                .unwrap()
                .rootfs_propagation()
                .as_deref(),
            Some("shared")
        );
    }

    #[test]
    fn bidirectional_needs_a_privileged_container() {
        let mut f = Fixture::new();
        let mut shared = cri("/b", "/b");
        shared.propagation = MountPropagation::PropagationBidirectional as i32;
        f.config.mounts = vec![shared];
        let opts =
            super::super::security_context(&f.config).and_then(|sc| sc.namespace_options.as_ref());
        let plan = plan_namespaces(opts, &f.sandbox, &f.host).unwrap();
        let err = apply_mounts(&mut Spec::default(), &f.input(), false, &plan).unwrap_err();
        assert!(
            matches!(err, SpecError::BidirectionalNeedsPrivileged { ref destination } if destination == "/b"),
            "{err}"
        );
        assert_eq!(err.kind(), Kind::FailedPrecondition);
    }
}
