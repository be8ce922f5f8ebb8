//! The OCI bundle of a host container (libcontainer, crun): what is checked before
//! anything is made ([`BundleInputs::gather`]), then the overlay rootfs, the spec and
//! config.json ([`BundleInputs::make`]). Every step that makes something pushes its undo
//! on the caller's rollback.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, MountPropagation, PodSandboxConfig};

use super::{confine, rootfs, ContainerError, ContainerPaths};
use crate::backend::{Backend, Payload};
use crate::context::Ctx;
use crate::image::ImageEntry;
use crate::rollback::Rollback;
use crate::sandbox::SandboxRecord;
use crate::spec::{self, ResolvedDevice, SandboxView, SpecInput};

/// What a bundle needs from the host and the request, checked before anything is made.
pub(super) struct BundleInputs {
    devices: Vec<ResolvedDevice>,
    seccomp_profile: Option<String>,
}

impl BundleInputs {
    /// Resolves mount sources (in `config`) and devices, reads a localhost seccomp
    /// profile: every refusal here comes before a name is reserved.
    pub(super) fn gather(
        config: &mut ContainerConfig,
        image: &ImageEntry,
    ) -> Result<BundleInputs, ContainerError> {
        if let Some(template) = &image.record.template {
            return Err(ContainerError::WrongImage(format!(
                "image {} is the Proxmox template {template}: only proxmox-lxc pods run it",
                image.record.id
            )));
        }
        resolve_mount_sources(config)?;
        require_shared_sources(config)?;
        let mut devices = resolve_devices(config)?;
        if spec::security_context_privileged(config) {
            add_host_devices(&mut devices)?;
        }
        let seccomp_profile = match spec::seccomp_localhost_path(config)? {
            Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| {
                ContainerError::Invalid(format!("seccomp profile {}: {e}", path.display()))
            })?),
            None => None,
        };
        Ok(BundleInputs {
            devices,
            seccomp_profile,
        })
    }

    /// Mounts the rootfs, writes config.json; the undo of the mount goes on `rb`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn make(
        self,
        ctx: &Ctx<'_>,
        rb: &mut Rollback,
        id: &str,
        paths: &ContainerPaths,
        sb: &SandboxRecord,
        sandbox_config: &PodSandboxConfig,
        config: &ContainerConfig,
        image: &ImageEntry,
        backend: &dyn Backend,
    ) -> Result<Payload, ContainerError> {
        let (bundle, upper, work) = (paths.bundle(), paths.upper(), paths.work());
        let rootfs_dir = paths.rootfs();
        for dir in [&bundle, &upper, &work, &rootfs_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| ContainerError::io(format!("create {}", dir.display()), e))?;
        }
        let lower = ctx.images.lower_dirs(image)?;
        rootfs::mount_overlay(&lower, &upper, &work, &rootfs_dir)
            .map_err(|e| ContainerError::io("prepare rootfs", e))?;
        {
            let target = rootfs_dir.clone();
            rb.push("rootfs mount", move || {
                if let Err(e) = rootfs::unmount(&target) {
                    tracing::warn!(error = %e, "rollback: unmount rootfs");
                }
            });
        }

        let users = spec::read_user_db(&rootfs_dir)?;
        let view = SandboxView {
            net_ns: sb.namespaces.net.clone(),
            ipc_ns: sb.namespaces.ipc.clone(),
            uts_ns: sb.namespaces.uts.clone(),
            pid_ns: sb.namespaces.pid.clone(),
            target_pid_ns: target_pid_ns(ctx, config, &sb.id)?,
            hostname: sb.hostname.clone(),
            hostname_path: Some(sb.paths().hostname()),
            hosts_path: Some(sb.paths().hosts()),
            resolv_conf_path: Some(sb.paths().resolv_conf()),
            shm_path: sb.shm_mounted.then(|| sb.paths().shm()),
            privileged: sb.privileged(),
        };
        let cgroups_path = confine::cgroups_path(sb.cgroup_parent(), id)?;
        let image_config = image.config.config().clone().unwrap_or_default();
        let input = SpecInput {
            container_id: id,
            config,
            sandbox_config,
            image: &image_config,
            rootfs: &rootfs_dir,
            users: &users,
            sandbox: &view,
            host: ctx.host,
            cgroups_path: &cgroups_path,
            seccomp_localhost: self.seccomp_profile.as_deref(),
            devices: &self.devices,
        };
        let mut oci = spec::container_spec(&input)?;
        require_apparmor_loaded(ctx.host, &oci)?;
        ensure_workdir(&rootfs_dir, &oci)?;
        let prepared = backend.prepare_spec(&mut oci)?;
        let spec_json = serde_json::to_vec(&oci).map_err(|e| {
            ContainerError::io("serialize spec", std::io::Error::other(e.to_string()))
        })?;
        // Derived from the record, so not fsync'd: after a crash the container is gone anyway.
        crate::store::replace_file(&bundle.join("config.json"), &spec_json)?;
        if let Some(filter) = &prepared.seccomp {
            filter.write(&bundle)?;
        }
        Ok(Payload::Bundle { bundle, prepared })
    }
}

/// Once the backend has created the container, its init has pivoted into its own copy of
/// the overlay (in the container's mount namespace) and waits for StartContainer: the
/// daemon's mount in the host's namespace is no longer used by anyone, so it goes. The
/// host's mount table then holds nothing per container, and the calls that read or copy
/// that table (libcontainer's cgroup manager reads it many times per create, every new
/// mount namespace copies it) do not slow down as containers are added. The overlay
/// itself lives on as long as the container's namespace does. Run beside CreateContainer's
/// answer (its failure is logged, not the create's); RemoveContainer's unmount stays for
/// containers made before this, or whose daemon was killed before it ran.
pub(super) fn release_host_rootfs(paths: &ContainerPaths) -> Result<(), ContainerError> {
    rootfs::unmount(&paths.rootfs()).map_err(|e| ContainerError::io("release rootfs", e))
}

/// A Localhost AppArmor profile must be loaded now (an operator may load one at any
/// time, so this is read per create): otherwise the runtime would fail at exec with a
/// message far from the cause.
fn require_apparmor_loaded(
    host: &spec::HostView,
    oci: &oci_spec::runtime::Spec,
) -> Result<(), ContainerError> {
    let crate::apparmor::AppArmorHost::Enabled { default } = &host.apparmor else {
        return Ok(());
    };
    let Some(profile) = oci
        .process()
        .as_ref()
        .and_then(|p| p.apparmor_profile().clone())
    else {
        return Ok(());
    };
    // The default was loaded (or found) at start: no read of the profiles file per create.
    if default.as_deref() == Ok(profile.as_str()) {
        return Ok(());
    }
    match crate::apparmor::is_loaded(Path::new("/sys"), &profile) {
        Ok(true) => Ok(()),
        Ok(false) => Err(spec::SpecError::AppArmorNotLoaded { profile }.into()),
        Err(e) => Err(ContainerError::io(
            "read the loaded AppArmor profiles",
            std::io::Error::other(e),
        )),
    }
}

/// CRI mounts name host paths; a symlinked host path is resolved here (on the host, by
/// the daemon) so the runtime binds what the symlink points at, and a missing source is
/// a clear error instead of a failed mount later.
fn resolve_mount_sources(config: &mut ContainerConfig) -> Result<(), ContainerError> {
    for m in &mut config.mounts {
        if m.host_path.is_empty() {
            return Err(ContainerError::Invalid(format!(
                "mount {:?}: host_path is empty",
                m.container_path
            )));
        }
        let real = std::fs::canonicalize(&m.host_path)
            .map_err(|e| ContainerError::Invalid(format!("mount source {:?}: {e}", m.host_path)))?;
        m.host_path = real.to_string_lossy().into_owned();
    }
    Ok(())
}

/// A BIDIRECTIONAL mount propagates both ways only if its source sits on a shared mount of
/// the host (kubelet's volume dirs are; a plain directory on a private mount is not): said
/// here, rather than a container whose mounts silently never reach the host.
fn require_shared_sources(config: &ContainerConfig) -> Result<(), ContainerError> {
    let bidirectional: Vec<&str> = config
        .mounts
        .iter()
        .filter(|m| m.propagation == MountPropagation::PropagationBidirectional as i32)
        .map(|m| m.host_path.as_str())
        .collect();
    if bidirectional.is_empty() {
        return Ok(());
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| ContainerError::io("read /proc/self/mountinfo", e))?;
    for source in bidirectional {
        let (point, shared) = mount_of(&mountinfo, Path::new(source)).unwrap_or_default();
        if !shared {
            return Err(ContainerError::MountNotShared {
                path: source.to_string(),
                mount_point: point,
            });
        }
    }
    Ok(())
}

/// The mount point `path` sits on (the deepest mount containing it; the last one mounted
/// there when several are stacked) and whether that mount is shared.
fn mount_of(mountinfo: &str, path: &Path) -> Option<(String, bool)> {
    let mut best: Option<(String, bool)> = None;
    for line in mountinfo.lines() {
        let Some((left, _)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let Some(point) = fields.get(4).map(|p| crate::mounts::unescape(p)) else {
            continue;
        };
        if !path.starts_with(&point) {
            continue;
        }
        let shared = fields.iter().skip(6).any(|f| f.starts_with("shared:"));
        let deeper = best.as_ref().is_none_or(|(b, _)| {
            Path::new(&point).components().count() >= Path::new(b).components().count()
        });
        if deeper {
            best = Some((point, shared));
        }
    }
    best
}

/// Stats each requested device node on the host.
fn resolve_devices(config: &ContainerConfig) -> Result<Vec<ResolvedDevice>, ContainerError> {
    let mut out = Vec::new();
    for dev in &config.devices {
        let meta = std::fs::metadata(&dev.host_path)
            .map_err(|e| ContainerError::Invalid(format!("device {:?}: {e}", dev.host_path)))?;
        let kind = if meta.file_type().is_char_device() {
            'c'
        } else if meta.file_type().is_block_device() {
            'b'
        } else {
            return Err(ContainerError::Invalid(format!(
                "device {:?} is not a device node",
                dev.host_path
            )));
        };
        let rdev = meta.rdev();
        out.push(ResolvedDevice {
            container_path: if dev.container_path.is_empty() {
                dev.host_path.clone()
            } else {
                dev.container_path.clone()
            },
            kind,
            major: nix::sys::stat::major(rdev) as i64,
            minor: nix::sys::stat::minor(rdev) as i64,
            file_mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            permissions: dev.permissions.clone(),
        });
    }
    Ok(out)
}

/// Directories of /dev a privileged container gets its own of, or that hold no devices
/// (containerd's and runc's list).
const HOST_DEV_SKIPPED_DIRS: [&str; 7] =
    ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// A privileged container sees the host's device nodes (containerd's `HostDevices`): every
/// character and block device under /dev, except the console (the container has its own)
/// and those in [`HOST_DEV_SKIPPED_DIRS`]. Devices the request names keep their request's
/// container path and permissions.
fn add_host_devices(devices: &mut Vec<ResolvedDevice>) -> Result<(), ContainerError> {
    let mut dirs = vec![PathBuf::from("/dev")];
    let mut found = Vec::new();
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            ContainerError::io(format!("list host devices in {}", dir.display()), e)
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            // Not following symlinks: /dev/fd, /dev/stdin and friends point into /proc.
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue; // gone meanwhile (hotplug)
            };
            let kind = meta.file_type();
            if kind.is_dir() {
                if !(dir == Path::new("/dev") && HOST_DEV_SKIPPED_DIRS.iter().any(|d| name == *d)) {
                    dirs.push(path);
                }
                continue;
            }
            let kind = if kind.is_char_device() {
                'c'
            } else if kind.is_block_device() {
                'b'
            } else {
                continue;
            };
            if path == Path::new("/dev/console") {
                continue;
            }
            let rdev = meta.rdev();
            found.push(ResolvedDevice {
                container_path: path.to_string_lossy().into_owned(),
                kind,
                major: nix::sys::stat::major(rdev) as i64,
                minor: nix::sys::stat::minor(rdev) as i64,
                file_mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                permissions: String::new(),
            });
        }
    }
    found.sort_by(|a, b| a.container_path.cmp(&b.container_path));
    found.retain(|d| devices.iter().all(|r| r.container_path != d.container_path));
    devices.extend(found);
    Ok(())
}

/// For pid mode TARGET: the target container's pid namespace.
fn target_pid_ns(
    ctx: &Ctx<'_>,
    config: &ContainerConfig,
    sandbox_id: &str,
) -> Result<Option<PathBuf>, ContainerError> {
    let target = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .filter(|n| n.pid == k8s_cri::v1::NamespaceMode::Target as i32)
        .map(|n| n.target_id.clone());
    let Some(target) = target else {
        return Ok(None);
    };
    let c = ctx.containers.get(&target)?;
    confine::check_pid_target(&c.id, &c.record.sandbox_id, sandbox_id)?;
    let snap = c.snapshot();
    let pid = snap
        .status()
        .filter(|s| s.finished_at.is_none())
        .map(|s| s.init_pid)
        .ok_or_else(|| {
            snap.wrong_state(&c.id, "a TARGET pid namespace needs a running container")
        })?;
    Ok(Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))))
}

/// The process's cwd must exist in the rootfs (runc creates it; so do we), created
/// inside the root without following the image's symlinks out of it.
fn ensure_workdir(rootfs: &Path, spec: &oci_spec::runtime::Spec) -> Result<(), ContainerError> {
    let Some(cwd) = spec.process().as_ref().map(|p| p.cwd().clone()) else {
        return Ok(());
    };
    let mut dir = rootfs.to_path_buf();
    for comp in cwd.components() {
        if let std::path::Component::Normal(c) = comp {
            dir.push(c);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                // A symlink or file in the way: leave it to the runtime, which resolves
                // it inside the container's root.
                Ok(_) => return Ok(()),
                Err(_) => rootfs::create_dir_0755(&dir).map_err(|e| {
                    ContainerError::io(format!("create workdir {}", dir.display()), e)
                })?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:50 / /var/lib/kubelet rw shared:20 - tmpfs tmpfs rw
41 22 0:51 / /srv/private rw - tmpfs tmpfs rw
42 41 0:52 / /srv/private/with\\040space rw shared:30 - tmpfs tmpfs rw
";

    #[test]
    fn the_deepest_mount_decides_whether_a_source_is_shared() {
        let of = |p: &str| mount_of(MOUNTINFO, Path::new(p)).unwrap();
        assert_eq!(
            of("/var/lib/kubelet/pods/x"),
            ("/var/lib/kubelet".into(), true)
        );
        assert_eq!(of("/srv/private/dir"), ("/srv/private".into(), false));
        assert_eq!(
            of("/srv/private/with space/d"),
            ("/srv/private/with space".into(), true)
        );
        assert_eq!(of("/srv/privatex"), ("/".into(), true));
    }
}
