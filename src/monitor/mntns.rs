//! Mount namespaces the zygote makes once and keeps, for its forks to join: the pod
//! holders' (`holder_confine.rs`) and the one containers are created from
//! (`create_template.rs`).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Puts the calling process in a copy of its mount namespace in which every mount is
/// private: nothing done there (an unmount above all) reaches the original's peers.
pub(crate) fn private_copy() -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make the copy's mounts private: {e}"))
}

/// Runs `build` in a child of the calling process and returns a handle on the mount
/// namespace the child is in once `build` succeeded: the handle keeps that namespace alive
/// after the child exits. `build` is expected to `unshare(CLONE_NEWNS)` and shape the copy;
/// whatever it does stays in the child. For a single-threaded caller (the zygote): the
/// child waits while this process opens its namespace, then exits; this process reaps it.
pub(crate) fn made_by_child(
    what: &str,
    build: impl FnOnce() -> Result<(), String>,
) -> Result<OwnedFd, String> {
    use nix::fcntl::OFlag;
    let (ready_r, ready_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (done_r, done_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the caller is single-threaded; the child makes system calls and exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop((ready_r, done_w));
            let mut ready = std::fs::File::from(ready_w);
            let built = build();
            let _ = match &built {
                Ok(()) => ready.write_all(b"ok"),
                Err(e) => ready.write_all(e.as_bytes()),
            };
            drop(ready);
            // Until the parent has the namespace open (it closes its end then).
            let _ = std::fs::File::from(done_r).read(&mut [0u8; 1]);
            super::process::exit_now(built.is_err() as i32)
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop((ready_w, done_r));
            let mut word = String::new();
            let _ = std::fs::File::from(ready_r).read_to_string(&mut word);
            let ns = match word.as_str() {
                "ok" => std::fs::File::open(format!("/proc/{child}/ns/mnt"))
                    .map(OwnedFd::from)
                    .map_err(|e| format!("open {what}: {e}")),
                "" => Err(format!("the builder of {what} died")),
                why => Err(format!("{what}: {why}")),
            };
            drop(done_w);
            let _ = super::process::wait_pid(child);
            ns
        }
    }
}
