//! Process plumbing shared by the zygote, monitors, exec children and sandbox holders:
//! detaching forks, fd hygiene, signal state, pidfds.
//!
//! Everything here runs in single-threaded processes (the zygote and its descendants),
//! where `fork` is safe and the process environment may be changed.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, setsid, ForkResult, Pid};

/// Runs `child` in a grandchild that is re-parented to init (or the nearest subreaper) at
/// once: the middle process exits immediately after forking, so the caller only ever waits
/// for that short-lived middle process and the grandchild is nobody's zombie in the zygote.
/// The grandchild starts a new session so terminal or process-group signals aimed at the
/// daemon never reach it. `child` returns the grandchild's exit code.
pub(crate) fn fork_detached(child: impl FnOnce() -> i32) -> io::Result<()> {
    // SAFETY: the zygote is single-threaded, so the child may run arbitrary code.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Child => {
            // SAFETY: as above; this middle process only forks and exits.
            let code = match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    let _ = setsid();
                    let code = child();
                    exit_now(code)
                }
                Ok(ForkResult::Parent { .. }) => 0,
                Err(_) => 1,
            };
            exit_now(code)
        }
        ForkResult::Parent { child: middle } => match wait_pid(middle)? {
            WaitStatus::Exited(_, 0) => Ok(()),
            other => Err(io::Error::other(format!(
                "detaching fork failed ({other:?})"
            ))),
        },
    }
}

/// Which side of [`fork_into_cgroup`] this is.
pub(crate) enum Forked {
    /// The child; `in_cgroup`: it started in the cgroup asked for.
    Child {
        in_cgroup: bool,
    },
    Parent(Pid),
}

/// The kernel's `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (libc's constant is deprecated: it overflows its type).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `fork(2)`, with the child started in the cgroup v2 directory `cgroup` when given
/// (`clone3` with `CLONE_INTO_CGROUP`): no move, so no wait for the kernel's cgroup
/// migration lock. When the kernel refuses that (before 5.7, not a cgroup v2 directory,
/// a cgroup that cannot take processes), a plain fork, and the child is told so.
/// For a single-threaded caller only, as fork. The raw `clone3` child skips glibc's fork
/// bookkeeping (its cached thread id is the parent's): it must only make system calls and
/// exec, as the exec child does; libcontainer clones its own processes the same way.
pub(crate) fn fork_into_cgroup(cgroup: Option<&File>) -> io::Result<Forked> {
    if let Some(dir) = cgroup {
        let mut args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: no new stack: like fork(2), the child continues on a copy of this
        // single-threaded process; `args` lives across the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match r {
            0 => return Ok(Forked::Child { in_cgroup: true }),
            pid if pid > 0 => return Ok(Forked::Parent(Pid::from_raw(pid as i32))),
            _ => {} // refused: fork, and the child joins by writing
        }
    }
    // SAFETY: the caller is single-threaded (see above).
    match unsafe { fork() }? {
        ForkResult::Child => Ok(Forked::Child { in_cgroup: false }),
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
    }
}

/// `_exit`: a forked child must not run the parent's atexit handlers or flush its buffers.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit(code) }
}

/// waitpid that retries on EINTR.
pub(crate) fn wait_pid(pid: Pid) -> io::Result<WaitStatus> {
    loop {
        match waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// What every child of the zygote (a monitor, a pod's setup process, a spare) does
/// first: every fd but `keep` closed, stdio on /dev/null, `/` as its working directory.
pub(crate) fn set_up_child(keep: &[RawFd]) {
    close_fds_except(keep);
    let _ = stdio_to_dev_null();
    let _ = nix::unistd::chdir("/");
}

/// Closes every fd except stdio, `keep` and this process's sealed copy of crun (which a
/// monitor's children run crun from: crun.rs; close-on-exec), so a monitor holds none of
/// the daemon's or the zygote's sockets (which would keep them open after the daemon died).
pub(crate) fn close_fds_except(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep
        .iter()
        .copied()
        .chain(super::crun::sealed_fd())
        .filter(|&fd| fd > 2)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first: u32 = 3;
    for fd in keep {
        if (fd as u32) > first {
            close_range(first, fd as u32 - 1);
        }
        first = fd as u32 + 1;
    }
    close_range(first, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes descriptors; nothing in this process refers to them
    // any more (they were inherited).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc != 0 {
        // Kernels before 5.9: close them one by one.
        let end = last.min(65_536);
        for fd in first..=end {
            // SAFETY: as above.
            unsafe { libc::close(fd as i32) };
        }
    }
}

/// Points fds 0, 1 and 2 at /dev/null. A monitor has no terminal and must not write into
/// the daemon's stderr (which may be a pipe the daemon's supervisor reads).
pub(crate) fn stdio_to_dev_null() -> io::Result<()> {
    let null = File::options().read(true).write(true).open("/dev/null")?;
    for fd in 0..3 {
        nix::unistd::dup2(null.as_raw_fd(), fd)?;
    }
    Ok(())
}

/// Unblocks every signal and restores every disposition to its default. Run before exec'ing
/// container processes: the Rust runtime ignores SIGPIPE and the monitor blocks SIGCHLD, and
/// both are inherited across exec (docs/libcontainer.md pitfall 5).
pub(crate) fn reset_signals() {
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring SIG_DFL installs no handler code. Signals reserved by libc
        // (32, 33) are refused with EINVAL, which is fine.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Ignores SIGPIPE: a monitor writing to a client that went away must get EPIPE, not die.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: SIG_IGN installs no handler code.
    let _ = unsafe { signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}

/// Removes every environment variable: libcontainer's init reads `LISTEN_FDS` and friends
/// from its own environment (docs/libcontainer.md pitfall 6).
pub(crate) fn clear_env() {
    let keys: Vec<_> = std::env::vars_os().map(|(k, _)| k).collect();
    for k in keys {
        // SAFETY: the caller is single-threaded.
        unsafe { std::env::remove_var(k) };
    }
}

pub(crate) use crate::store::now_nanos;

/// What proxrt reads from `/proc/<pid>/stat`: the fields after the `)` that closes the
/// command name (which may itself hold spaces and parentheses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// `R`, `S`, `Z` (a zombie), `X` (dead)…
    pub state: char,
    pub ppid: i32,
}

impl ProcStat {
    pub(crate) fn parse(stat: &str) -> Option<ProcStat> {
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        Some(ProcStat { state, ppid })
    }

    /// `None`: no such process (or an unreadable stat file).
    pub(crate) fn read(pid: i32) -> Option<ProcStat> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// A zombie waiting for its parent, or dead.
    pub(crate) fn has_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Whether `pid` has exited: a zombie, dead, or gone from /proc.
pub(crate) fn has_exited(pid: i32) -> bool {
    ProcStat::read(pid).is_none_or(|s| s.has_exited())
}

/// A pidfd for `pid`: lets a non-parent wait for a process's exit and signal it without
/// pid-reuse races.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned fd is owned by us.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub(crate) fn pidfd_send_signal(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Polls one fd for `events` up to `timeout` (None: forever). True when ready.
pub(crate) fn poll_one(fd: RawFd, events: i16, timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32,
        };
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(rc > 0);
    }
}

/// Sets or clears O_NONBLOCK.
pub(crate) fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The children of this process, from /proc (every thread's list; we have one thread).
pub(crate) fn own_children() -> Vec<i32> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills and reaps every remaining child: the last step of a failed create, so an init or
/// intermediate process libcontainer left behind does not outlive the attempt.
pub(crate) fn kill_and_reap_children() {
    for _ in 0..50 {
        let children = own_children();
        if children.is_empty() {
            break;
        }
        for pid in children {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
    }
    reap_all_nonblocking(|_| {});
}

/// Reaps every child that has exited, calling `on_exit` for each.
pub(crate) fn reap_all_nonblocking(mut on_exit: impl FnMut(WaitStatus)) {
    use nix::sys::wait::WaitPidFlag;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(status) => on_exit(status),
        }
    }
}

/// The exit code CRI reports: the status, or 128 + the signal number.
pub(crate) fn exit_code_of(status: &WaitStatus) -> Option<(i32, Option<i32>)> {
    match status {
        WaitStatus::Exited(_, code) => Some((*code, None)),
        WaitStatus::Signaled(_, sig, _) => Some((128 + *sig as i32, Some(*sig as i32))),
        _ => None,
    }
}

/// True when this process has more than one thread (then forking children that run Rust
/// code, as libcontainer does, can deadlock).
pub(crate) fn is_multithreaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("Threads:")
                        .map(|n| n.trim().parse::<u32>().ok())
                })
                .flatten()
        })
        .map(|n| n > 1)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        let pid = Pid::from_raw(1);
        assert_eq!(exit_code_of(&WaitStatus::Exited(pid, 3)), Some((3, None)));
        assert_eq!(
            exit_code_of(&WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((137, Some(9)))
        );
    }

    #[test]
    fn test_binary_is_multithreaded() {
        // libtest runs tests on worker threads: this is exactly the situation in which
        // Zygote::spawn must refuse to fork.
        let t = std::thread::spawn(is_multithreaded);
        assert!(t.join().unwrap());
    }

    #[test]
    fn proc_stat_reads_past_the_command_name() {
        let stat = "42 (a) b (c)) S 7 42 42 0 -1 4194560 0 0";
        assert_eq!(
            ProcStat::parse(stat),
            Some(ProcStat {
                state: 'S',
                ppid: 7
            })
        );
        assert!(ProcStat::parse("42 (zombie) Z 1 0").unwrap().has_exited());
        assert_eq!(ProcStat::parse("42 (cut"), None);
        let me = ProcStat::read(std::process::id() as i32).unwrap();
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw());
        assert!(!has_exited(std::process::id() as i32));
    }
}
