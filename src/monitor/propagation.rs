//! Mount propagation of a libcontainer container's bind mounts, set after `build()`.
//!
//! libcontainer 0.7 makes bind mounts with `open_tree(OPEN_TREE_CLONE)` + `move_mount` and
//! ignores their propagation options (`rprivate`, `rslave`, `rshared`): each bind keeps what
//! it was cloned with, which is a slave of the host (the container's root is made rslave
//! first), or a peer of the host when the rootfs propagation is `shared`. So a PRIVATE
//! volume saw mounts made later on the host, and a HOST_TO_CONTAINER one next to a
//! BIDIRECTIONAL one would have leaked mounts back to the host.
//!
//! Fixed here rather than by a hook: once `build()` returned, the init has prepared its
//! root and waits for `start()`, nothing runs in the container yet, and every mount is in
//! place. A forked child enters the init's mount namespace and root and applies each
//! bind mount's propagation, parents before children (the spec's order), the way runc and
//! crun do while mounting. The monitor itself never leaves the host's mount namespace.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::process::{exit_now, wait_pid};

/// Applies the propagation option of every bind mount of `spec` inside the container whose
/// init is `init` (waiting for `start()`).
pub(crate) fn apply(init: Pid, spec: &Spec) -> Result<(), String> {
    let wanted = bind_propagation(spec);
    if wanted.is_empty() {
        return Ok(());
    }
    let ns_path = format!("/proc/{init}/ns/mnt");
    let ns = File::open(&ns_path).map_err(|e| format!("open {ns_path}: {e}"))?;
    let root_path = format!("/proc/{init}/root");
    let root = File::open(&root_path).map_err(|e| format!("open {root_path}: {e}"))?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the monitor is single-threaded; the child only makes syscalls and exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(err_r);
            let result = enter_and_apply(&ns, &root, &wanted);
            let code = match result {
                Ok(()) => 0,
                Err(message) => {
                    let _ = File::from(err_w).write_all(message.as_bytes());
                    1
                }
            };
            exit_now(code)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(err_w);
            let mut message = String::new();
            let _ = File::from(err_r).read_to_string(&mut message);
            let status = wait_pid(child).map_err(|e| format!("wait: {e}"))?;
            match (message.is_empty(), status) {
                (true, nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
                (true, other) => Err(format!("set mount propagation: child ended {other:?}")),
                (false, _) => Err(message),
            }
        }
        Err(e) => Err(format!("fork: {e}")),
    }
}

fn enter_and_apply(ns: &File, root: &File, wanted: &[(PathBuf, MsFlags)]) -> Result<(), String> {
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("join the container's mount namespace: {e}"))?;
    // The init's root (its pivot_root'ed rootfs): destinations resolve as the container
    // sees them.
    nix::unistd::fchdir(std::os::fd::AsRawFd::as_raw_fd(root))
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
    Ok(())
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
}
