//! Confinement of the pod namespace holder (`proxrt-pause`).
//!
//! The holder is pid 1 of a pod's pid namespace, so in a pod with
//! `shareProcessNamespace: true` every container sees it as `/proc/1`: its root, its
//! mount table and its capabilities must give nothing away. Before it starts waiting it
//! takes, in this order:
//! 1. a mount namespace of its own, made private (nothing propagates to the host);
//! 2. an empty, read-only tmpfs as its root (`pivot_root` onto it, the old root detached):
//!    `/proc/1/root` shows an empty directory, `/proc/1/mountinfo` one line;
//! 3. no capabilities in any set (bounding, ambient, inheritable, permitted, effective);
//! 4. `no_new_privs`;
//! 5. a seccomp filter allowing only what waiting and reaping use (`EPERM` for the rest).
//!
//! The process is single-threaded (a fork of the sandbox setup process), so the
//! allocations libseccomp makes are safe.

use std::path::Path;

use caps::CapSet;
use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// The only syscalls the confined holder makes: sigwait and the signal mask, reaping,
/// exiting, and reporting its readiness on a pipe (write, close).
pub(crate) const HOLDER_SYSCALLS: &[&str] = &[
    "rt_sigtimedwait",
    "rt_sigprocmask",
    "rt_sigreturn",
    "restart_syscall",
    "wait4",
    "waitid",
    "exit",
    "exit_group",
    "write",
    "close",
];

/// Confines the calling process (the holder, just forked) as the module says. `empty_dir`
/// is any existing directory: the new root is a tmpfs mounted on it inside the holder's
/// own mount namespace, invisible to the host.
pub(crate) fn confine_holder(empty_dir: &Path) -> Result<(), String> {
    fn step(what: &'static str) -> impl Fn(nix::errno::Errno) -> String {
        move |e| format!("{what}: {e}")
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(step("unshare mount namespace"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(step("make mounts private"))?;
    mount(
        Some("tmpfs"),
        empty_dir,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=0555"),
    )
    .map_err(step("mount the empty root"))?;
    nix::unistd::chdir(empty_dir).map_err(step("chdir to the empty root"))?;
    // pivot_root(".", "."): the old root is stacked under the new one and detached next.
    nix::unistd::pivot_root(".", ".").map_err(step("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("detach the old root"))?;
    nix::unistd::chdir("/").map_err(step("chdir /"))?;

    // Bounding first: dropping from it needs CAP_SETPCAP, gone once permitted is cleared.
    for set in [
        CapSet::Bounding,
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| format!("drop capabilities ({set:?}): {e}"))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(step("set no_new_privs"))?;
    load_filter().map_err(|e| format!("seccomp filter: {e}"))
}

fn load_filter() -> Result<(), libseccomp::error::SeccompError> {
    let mut filter = ScmpFilterContext::new(ScmpAction::Errno(libc::EPERM))?;
    for name in HOLDER_SYSCALLS {
        filter.add_rule(ScmpAction::Allow, ScmpSyscall::from_name(name)?)?;
    }
    filter.load()
}
