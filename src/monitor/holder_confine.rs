//! Confinement of the pod namespace holder (`proxrt-pause`).
//!
//! The holder is pid 1 of a pod's pid namespace, so in a pod with
//! `shareProcessNamespace: true` every container sees it as `/proc/1`: its root, its
//! mount table and its capabilities must give nothing away. Before it starts waiting it
//! takes, in this order:
//! 1. a mount namespace with nothing in it but an empty, read-only tmpfs as its root:
//!    `/proc/1/root` shows an empty directory, `/proc/1/mountinfo` one line. The zygote
//!    makes that namespace once ([`holders_namespace`]) and every holder joins it; only
//!    when it could not be made does a holder build one of its own (unshare, make
//!    private, `pivot_root` onto the tmpfs, detach the old root), as holders once all
//!    did. Building one copies the host's mount table, which holds two mounts per pod
//!    (its /dev/shm and net namespace file): with 500 pods, 1000 mounts copied, made
//!    private and detached again at every RunPodSandbox;
//! 3. no capabilities in any set (bounding, ambient, inheritable, permitted, effective);
//! 4. `no_new_privs`;
//! 5. a seccomp filter allowing only what waiting and reaping use (`EPERM` for the rest),
//!    compiled to BPF once by the zygote ([`compile_filter`]) and loaded as is; only when
//!    that failed does a holder build it with libseccomp itself.
//!
//! The process is single-threaded (a fork of the sandbox setup process), so the
//! allocations libseccomp makes are safe.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

use caps::CapSet;
use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::seccomp_bpf::Program;

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

/// Where a holder's root comes from.
#[derive(Clone, Copy)]
pub(crate) enum HolderRoot<'a> {
    /// The holders' mount namespace ([`holders_namespace`]), joined.
    Shared(BorrowedFd<'a>),
    /// None could be made: a namespace of the holder's own, its root a tmpfs mounted on
    /// this directory (any existing one) inside that namespace, invisible to the host.
    Own(&'a Path),
}

/// Confines the calling process (the holder, just forked) as the module says.
pub(crate) fn confine_holder(root: HolderRoot<'_>) -> Result<(), String> {
    match root {
        // setns also makes the namespace's root this process's root and working directory.
        HolderRoot::Shared(ns) => nix::sched::setns(ns, CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("join the holders' mount namespace: {e}"))?,
        HolderRoot::Own(dir) => empty_root(dir)?,
    }
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

fn step(what: &'static str) -> impl Fn(nix::errno::Errno) -> String {
    move |e| format!("{what}: {e}")
}

/// Puts the calling process in a mount namespace of its own whose only mount is an
/// empty, read-only tmpfs, its root: the namespace is a copy of the caller's, made
/// private (nothing propagates to the host), the tmpfs mounted on `dir` inside it,
/// `pivot_root` onto it and the old root detached.
fn empty_root(dir: &Path) -> Result<(), String> {
    super::mntns::private_copy()?;
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=0555"),
    )
    .map_err(step("mount the empty root"))?;
    nix::unistd::chdir(dir).map_err(step("chdir to the empty root"))?;
    // pivot_root(".", "."): the old root is stacked under the new one and detached next.
    nix::unistd::pivot_root(".", ".").map_err(step("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("detach the old root"))?;
    nix::unistd::chdir("/").map_err(step("chdir /"))
}

/// Makes the mount namespace holders join (the module's first step) and returns a handle
/// on it, which keeps it alive. For a single-threaded caller (the zygote, at its start).
pub(crate) fn holders_namespace() -> Result<OwnedFd, String> {
    // Any directory of the copy will do as the tmpfs's mount point.
    super::mntns::made_by_child("the holders' mount namespace", || {
        empty_root(Path::new("/proc"))
    })
}

impl HolderRoot<'_> {
    /// The shared namespace when there is one, else a namespace of the holder's own on
    /// `dir`.
    pub(crate) fn of<'a>(shared: Option<&'a OwnedFd>, dir: &'a Path) -> HolderRoot<'a> {
        match shared {
            Some(ns) => HolderRoot::Shared(ns.as_fd()),
            None => HolderRoot::Own(dir),
        }
    }
}

/// The holders' filter as BPF, compiled once by the zygote at its start
/// ([`compile_filter`]) and inherited by every holder forked after. Unset: each holder
/// builds its own.
static COMPILED_FILTER: OnceLock<Program> = OnceLock::new();

/// Compiles the holders' seccomp filter once (libseccomp, exported as BPF): each holder
/// forked by the caller from then on loads those instructions as they are instead of
/// building the filter again, which took ~0.15 ms of every RunPodSandbox (libseccomp's
/// work in a freshly forked process). For a single-threaded caller (the zygote, at its
/// start).
pub(crate) fn compile_filter() -> Result<(), String> {
    let bpf = filter()
        .and_then(|f| Program::export(&f))
        .map_err(|e| format!("compile the holders' seccomp filter: {e}"))?;
    let _ = COMPILED_FILTER.set(bpf);
    Ok(())
}

fn filter() -> Result<ScmpFilterContext, String> {
    let mut filter =
        ScmpFilterContext::new(ScmpAction::Errno(libc::EPERM)).map_err(|e| e.to_string())?;
    for name in HOLDER_SYSCALLS {
        ScmpSyscall::from_name(name)
            .and_then(|call| filter.add_rule(ScmpAction::Allow, call))
            .map_err(|e| e.to_string())?;
    }
    Ok(filter)
}

fn load_filter() -> Result<(), String> {
    match COMPILED_FILTER.get() {
        // Holders set no_new_privs first; libseccomp's load would pass no flags either.
        Some(program) => program.load().map_err(|e| e.to_string()),
        None => filter().and_then(|f| f.load().map_err(|e| e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a forked child (it makes only raw syscalls after the fork): `no_new_privs`, the
    /// compiled filter, then `getppid` (not the holders') and `write` (the holders').
    /// Exit code 0: getppid refused with EPERM and write allowed.
    fn run_confined(program: &Program) -> i32 {
        // SAFETY: the child makes raw syscalls and exits; it touches no lock or allocation.
        match unsafe { libc::fork() } {
            0 => unsafe {
                let code = if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || program.load().is_err()
                {
                    2
                } else if libc::syscall(libc::SYS_getppid) != -1
                    || *libc::__errno_location() != libc::EPERM
                {
                    3
                } else if libc::write(-1, std::ptr::null(), 0) != -1
                    || *libc::__errno_location() != libc::EBADF
                {
                    4
                } else {
                    0
                };
                libc::_exit(code)
            },
            pid => {
                let mut status = 0;
                // SAFETY: waits for the child forked above.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                assert!(libc::WIFEXITED(status), "status {status:#x}");
                libc::WEXITSTATUS(status)
            }
        }
    }

    #[test]
    fn the_compiled_filter_refuses_what_holders_do_not_use_and_allows_what_they_do() {
        let program = Program::export(&filter().unwrap()).unwrap();
        assert_eq!(run_confined(&program), 0);
    }

    #[test]
    fn an_empty_program_is_refused_by_the_kernel_not_loaded() {
        assert_eq!(run_confined(&Program::empty()), 2);
    }
}
