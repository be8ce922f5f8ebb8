//! Mount propagation of a libcontainer container's bind mounts, and the read-only cgroup
//! view on a cgroup v1 host, set after `build()`.
//!
//! libcontainer 0.7 makes bind mounts with `open_tree(OPEN_TREE_CLONE)` + `move_mount` and
//! ignores their propagation options (`rprivate`, `rslave`, `rshared`): each bind keeps what
//! it was cloned with, which is a slave of the host (the container's root is made rslave
//! first), or a peer of the host when the rootfs propagation is `shared`. So a PRIVATE
//! volume saw mounts made later on the host, and a HOST_TO_CONTAINER one next to a
//! BIDIRECTIONAL one would have leaked mounts back to the host.
//!
//! On a cgroup v1 (or hybrid) host libcontainer 0.7 mounts the spec's `cgroup` mount as a
//! tmpfs with a bind of each hierarchy's container cgroup in it, and ignores the mount's
//! `ro`: a container could write its own limits (`memory.limit_in_bytes`) and make
//! sub-cgroups. runc and crun make the tmpfs and the binds read-only, and so does this, for
//! the whole tree in one `mount_setattr(AT_RECURSIVE)` (on a cgroup v2 host, where
//! libcontainer honours `ro`, it changes nothing).
//!
//! Fixed here rather than by a hook: once `build()` returned, the init has prepared its
//! root and waits for `start()`, nothing runs in the container yet, and every mount is in
//! place. The monitor (single-threaded) enters the init's mount namespace and root itself,
//! applies each bind mount's propagation, parents before children (the spec's order), the
//! way runc and crun do while mounting, and returns to the mount namespace it came from
//! (`setns` also resets its root and working directory to that namespace's root). No
//! process is forked for it: a fork, a pipe and a wait cost more than the mounts.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::mount_attr::{self, MountAttr};

/// Applies the propagation option of every bind mount of `spec` inside the container whose
/// init is `init` (waiting for `start()`). Must be called by a single-threaded process
/// (`setns` into a mount namespace refuses a shared filesystem context anyway). On return,
/// success or not, the caller is back in its own mount namespace with `/` as root and
/// working directory; when even that fails the init is killed and this process exits at
/// once, since nothing it would do from inside the container's root is safe.
pub(crate) fn apply(init: Pid, spec: &Spec) -> Result<(), String> {
    let wanted = bind_propagation(spec);
    let cgroup = readonly_cgroup_mount(spec);
    if wanted.is_empty() && cgroup.is_none() {
        return Ok(());
    }
    let home = File::open("/proc/self/ns/mnt")
        .map_err(|e| format!("open this process's mount namespace: {e}"))?;
    let ns_path = format!("/proc/{init}/ns/mnt");
    let ns = File::open(&ns_path).map_err(|e| format!("open {ns_path}: {e}"))?;
    let root_path = format!("/proc/{init}/root");
    let root = File::open(&root_path).map_err(|e| format!("open {root_path}: {e}"))?;
    nix::sched::setns(&ns, CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("join the container's mount namespace: {e}"))?;
    let applied = enter_root_and_apply(&root, &wanted, cgroup.as_ref());
    if nix::sched::setns(&home, CloneFlags::CLONE_NEWNS).is_err() {
        // Not expected of a single-threaded root process returning to a namespace it holds.
        let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
        super::process::exit_now(1);
    }
    applied
}

fn enter_root_and_apply(
    root: &File,
    wanted: &[(PathBuf, MsFlags)],
    cgroup: Option<&(PathBuf, u64)>,
) -> Result<(), String> {
    // The init's root (its pivot_root'ed rootfs): destinations resolve as the container
    // sees them.
    nix::unistd::fchdir(root.as_raw_fd())
        .and_then(|()| nix::unistd::chroot("."))
        .map_err(|e| format!("enter the container's root: {e}"))?;
    for (destination, flags) in wanted {
        nix::mount::mount(
            None::<&str>,
            destination,
            None::<&str>,
            *flags,
            None::<&str>,
        )
        .map_err(|e| format!("set propagation of {}: {e}", destination.display()))?;
    }
    if let Some((destination, flags)) = cgroup {
        let attr = MountAttr {
            attr_set: *flags,
            ..MountAttr::default()
        };
        let cwd = rustix::fs::CWD;
        mount_attr::set(
            cwd,
            destination,
            (libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW) as libc::c_uint,
            &attr,
        )
        .map_err(|e| format!("make {} read-only: {e}", destination.display()))?;
    }
    Ok(())
}

/// The spec's read-only `cgroup` mount, if it has one, with the flags its tree must have
/// (module doc).
pub(crate) fn readonly_cgroup_mount(spec: &Spec) -> Option<(PathBuf, u64)> {
    spec.mounts().iter().flatten().find_map(|m| {
        let flags = mount_attr::flags_of(m.options().as_deref().unwrap_or_default());
        (m.typ().as_deref() == Some("cgroup") && flags & mount_attr::MOUNT_ATTR_RDONLY != 0)
            .then(|| (m.destination().clone(), flags))
    })
}

/// The bind mounts of `spec` with a propagation option, in the spec's order, with the flags
/// that set it (the last propagation option of a mount wins, as in runc).
pub(crate) fn bind_propagation(spec: &Spec) -> Vec<(PathBuf, MsFlags)> {
    let mut out = Vec::new();
    for m in spec.mounts().as_deref().unwrap_or_default() {
        let options = m.options().as_deref().unwrap_or_default();
        if !options.iter().any(|o| o == "bind" || o == "rbind") {
            continue;
        }
        let flags = options.iter().rev().find_map(|o| {
            Some(match o.as_str() {
                "private" => MsFlags::MS_PRIVATE,
                "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
                "slave" => MsFlags::MS_SLAVE,
                "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
                "shared" => MsFlags::MS_SHARED,
                "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
                "unbindable" => MsFlags::MS_UNBINDABLE,
                "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
                _ => return None,
            })
        });
        if let Some(flags) = flags {
            out.push((m.destination().clone(), flags));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Mount;

    fn mount(destination: &str, options: &[&str]) -> Mount {
        let mut m = Mount::default();
        m.set_destination(destination.into());
        m.set_typ(Some("bind".into()));
        m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
        m
    }

    #[test]
    fn bind_mounts_with_a_propagation_option_in_order() {
        let mut spec = Spec::default();
        let mut proc_mount = mount("/proc", &["nosuid"]);
        proc_mount.set_typ(Some("proc".into()));
        spec.set_mounts(Some(vec![
            proc_mount,
            mount("/data", &["rbind", "rprivate", "rw"]),
            mount("/data/in", &["rbind", "rslave", "ro"]),
            mount("/shared", &["rbind", "rshared", "rw"]),
            mount("/plain", &["rbind", "ro"]),
            mount("/last", &["bind", "rshared", "private"]),
        ]));
        assert_eq!(
            bind_propagation(&spec),
            [
                ("/data".into(), MsFlags::MS_PRIVATE | MsFlags::MS_REC),
                ("/data/in".into(), MsFlags::MS_SLAVE | MsFlags::MS_REC),
                ("/shared".into(), MsFlags::MS_SHARED | MsFlags::MS_REC),
                ("/last".into(), MsFlags::MS_PRIVATE),
            ]
        );
    }

    #[test]
    fn the_read_only_cgroup_mount_with_its_flags() {
        let mut spec = Spec::default();
        let mut cgroup = mount(
            "/sys/fs/cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        );
        cgroup.set_typ(Some("cgroup".into()));
        let mut rw = cgroup.clone();
        rw.set_options(Some(vec!["nosuid".into(), "rw".into()]));
        spec.set_mounts(Some(vec![mount("/data", &["rbind", "ro"]), cgroup]));
        use mount_attr::*;
        assert_eq!(
            readonly_cgroup_mount(&spec),
            Some((
                "/sys/fs/cgroup".into(),
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC
            ))
        );
        // A privileged container's is read-write: left as the runtime made it.
        spec.set_mounts(Some(vec![rw]));
        assert_eq!(readonly_cgroup_mount(&spec), None);
    }
}
