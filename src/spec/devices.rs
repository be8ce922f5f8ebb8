//! Device nodes and the device cgroup.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, Spec};

use super::mounts::clean_destination;
use super::{linux_mut, resources_mut, SpecError, SpecInput};

/// A CRI device after the caller stat'ed its host path (the only I/O devices need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDevice {
    /// Where the node appears in the container.
    pub container_path: String,
    /// 'c' (character) or 'b' (block).
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    /// Permission bits of the node (st_mode & 0o7777).
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Cgroup access, some of "rwm"; empty means "rwm".
    pub permissions: String,
}

/// runc's default allow-list (also what libcgroups and crun add on their own), written out so
/// the spec says what the container may open.
const DEFAULT_ALLOWED: [(LinuxDeviceType, Option<i64>, Option<i64>, &str); 11] = [
    // mknod of any device; opening one still needs an allow rule below.
    (LinuxDeviceType::C, None, None, "m"),
    (LinuxDeviceType::B, None, None, "m"),
    (LinuxDeviceType::C, Some(1), Some(3), "rwm"), // /dev/null
    (LinuxDeviceType::C, Some(1), Some(5), "rwm"), // /dev/zero
    (LinuxDeviceType::C, Some(1), Some(7), "rwm"), // /dev/full
    (LinuxDeviceType::C, Some(5), Some(0), "rwm"), // /dev/tty
    (LinuxDeviceType::C, Some(1), Some(8), "rwm"), // /dev/random
    (LinuxDeviceType::C, Some(1), Some(9), "rwm"), // /dev/urandom
    (LinuxDeviceType::C, Some(5), Some(1), "rwm"), // /dev/console
    (LinuxDeviceType::C, Some(5), Some(2), "rwm"), // /dev/ptmx
    (LinuxDeviceType::C, Some(136), None, "rwm"),  // /dev/pts/*
];

/// Sets `linux.devices` (the requested nodes) and `linux.resources.devices` (deny all, the
/// default allow-list, then one rule per requested device; privileged: allow all).
///
/// Privileged containers should also see every host device node; enumerating the host's /dev
/// is I/O, so the caller passes those as `input.devices` too.
pub fn apply_devices(
    spec: &mut Spec,
    input: &SpecInput,
    privileged: bool,
) -> Result<(), SpecError> {
    let mut nodes = Vec::with_capacity(input.devices.len());
    let mut rules = Vec::new();
    if privileged {
        rules.push(rule(true, LinuxDeviceType::A, None, None, "rwm"));
    } else {
        rules.push(rule(false, LinuxDeviceType::A, None, None, "rwm"));
        for (typ, major, minor, access) in DEFAULT_ALLOWED {
            rules.push(rule(true, typ, major, minor, access));
        }
    }
    for device in input.devices {
        let (node, cgroup) = device_entry(device)?;
        nodes.push(node);
        if !privileged {
            rules.push(cgroup);
        }
    }
    linux_mut(spec).set_devices(Some(nodes));
    resources_mut(spec).set_devices(Some(rules));
    Ok(())
}

/// The node and the allow rule for one requested device.
pub fn device_entry(d: &ResolvedDevice) -> Result<(LinuxDevice, LinuxDeviceCgroup), SpecError> {
    let invalid = |reason: String| SpecError::InvalidDevice {
        path: d.container_path.clone(),
        reason,
    };
    let path = clean_destination(&d.container_path).map_err(|e| invalid(e.to_string()))?;
    let typ = match d.kind {
        'c' => LinuxDeviceType::C,
        'b' => LinuxDeviceType::B,
        other => return Err(invalid(format!("type {other:?} is not 'c' or 'b'"))),
    };
    if d.major < 0 || d.minor < 0 {
        return Err(invalid(format!(
            "bad device number {}:{}",
            d.major, d.minor
        )));
    }
    let access = if d.permissions.is_empty() {
        "rwm".to_string()
    } else {
        d.permissions.clone()
    };
    if access.chars().any(|c| !matches!(c, 'r' | 'w' | 'm')) {
        return Err(invalid(format!(
            "permissions {:?} must be made of r, w and m",
            d.permissions
        )));
    }

    let mut node = LinuxDevice::default();
    node.set_path(PathBuf::from(path));
    node.set_typ(typ);
    node.set_major(d.major);
    node.set_minor(d.minor);
    node.set_file_mode(Some(d.file_mode & 0o7777));
    node.set_uid(Some(d.uid));
    node.set_gid(Some(d.gid));
    let cgroup = rule(true, typ, Some(d.major), Some(d.minor), &access);
    Ok((node, cgroup))
}

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(typ));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::*;
    use crate::error::{Classify, Kind};

    fn fuse() -> ResolvedDevice {
        ResolvedDevice {
            container_path: "/dev/fuse".into(),
            kind: 'c',
            major: 10,
            minor: 229,
            file_mode: 0o20666,
            uid: 0,
            gid: 0,
            permissions: "rw".into(),
        }
    }

    fn applied(f: &Fixture, privileged: bool) -> Spec {
        let mut spec = Spec::default();
        apply_devices(&mut spec, &f.input(), privileged).unwrap();
        spec
    }

    fn rules(spec: &Spec) -> Vec<String> {
        spec.linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_deref()
            .unwrap()
            .iter()
            .map(|r| format!("{}{}", if r.allow() { "+" } else { "-" }, r))
            .collect()
    }

    #[test]
    fn default_policy_denies_all_then_allows_the_basics() {
        let f = Fixture::new();
        let spec = applied(&f, false);
        let rules = rules(&spec);
        assert_eq!(rules[0], "-a *:* rwm");
        assert!(rules.contains(&"+c 1:3 rwm".to_string()), "{rules:?}");
        assert!(rules.contains(&"+c 136:* rwm".to_string()));
        assert!(rules.contains(&"+c 5:2 rwm".to_string()));
        assert!(spec
            .linux()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn requested_devices_become_nodes_and_allow_rules() {
        let mut f = Fixture::new();
        f.devices = vec![fuse()];
        let spec = applied(&f, false);
        let nodes = spec.linux().as_ref().unwrap().devices().clone().unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].path(), &PathBuf::from("/dev/fuse"));
        assert_eq!(nodes[0].typ(), LinuxDeviceType::C);
        assert_eq!((nodes[0].major(), nodes[0].minor()), (10, 229));
        assert_eq!(nodes[0].file_mode(), Some(0o666));
        assert_eq!(rules(&spec).last().unwrap(), "+c 10:229 rw");
    }

    #[test]
    fn empty_permissions_mean_rwm() {
        let mut d = fuse();
        d.permissions.clear();
        let (_, rule) = device_entry(&d).unwrap();
        assert_eq!(rule.access().as_deref(), Some("rwm"));
    }

    #[test]
    fn privileged_allows_all_devices() {
        let mut f = Fixture::new();
        f.devices = vec![fuse()];
        let spec = applied(&f, true);
        assert_eq!(rules(&spec), ["+a *:* rwm"]);
        assert_eq!(
            spec.linux()
                .as_ref()
                .unwrap()
                .devices()
                .as_ref()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn bad_devices_are_rejected() {
        let mut bad_kind = fuse();
        bad_kind.kind = 'p';
        let mut bad_perm = fuse();
        bad_perm.permissions = "rwx".into();
        let mut bad_path = fuse();
        bad_path.container_path = "dev/fuse".into();
        let mut bad_dots = fuse();
        bad_dots.container_path = "/dev/../etc/x".into();
        let mut bad_num = fuse();
        bad_num.major = -1;
        for d in [bad_kind, bad_perm, bad_path, bad_dots, bad_num] {
            let err = device_entry(&d).unwrap_err();
            assert!(matches!(err, SpecError::InvalidDevice { .. }), "{d:?}");
            assert_eq!(err.kind(), Kind::InvalidArgument);
        }
    }
}
