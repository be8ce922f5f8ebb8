//! The per-container monitor: creates the container with libcontainer (or the crun binary,
//! see `crun.rs`), then serves its socket, copies its output into the CRI log, reaps it and
//! records how it ended.
//!
//! Single-threaded for its whole life (libcontainer is unsafe otherwise, docs/libcontainer.md
//! pitfall 1); one `poll(2)` loop over a signalfd (SIGCHLD), the stdout/stderr pipes, the
//! listening socket and the client connections.
//!
//! `create.rs` builds the container, `engine.rs` starts, kills and deletes it through
//! libcontainer or crun, `event_loop.rs` is the poll loop, `cgroup.rs` cleans its leaf cgroups,
//! `stdio.rs` makes the container's pipes or terminal, `attach.rs` serves attach sessions,
//! `view.rs` the mount namespace the container is created in.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::process::{clear_env, ignore_sigpipe, kill_and_reap_children};
use super::protocol::{acknowledged, write_frame, Fault, Report};
use super::zygote::CreateRequest;
use crate::rollback::Rollback;

mod cgroup;
pub use cgroup::kill_cgroup;
mod attach;
mod create;
mod engine;
mod event_loop;
mod stdio;
mod view;

pub(crate) use crate::error::error_chain;
pub(crate) use cgroup::remove_cgroup_leaf;
use create::create;
pub(crate) use create::rehearse;
use event_loop::Monitor;
pub(crate) use stdio::ChildStdio;

pub(crate) type Failure = (Fault, String);

/// The monitor process's main: runs in the detached grandchild of the zygote, returns the
/// process's exit code. `template`: the zygote's create template, inherited (an fd this
/// process owns from here on; dropped once the create has joined it).
pub(crate) fn run_monitor(req: CreateRequest, report: OwnedFd, template: Option<RawFd>) -> i32 {
    let mut keep = vec![report.as_raw_fd()];
    keep.extend(template);
    super::process::set_up_child(&keep);
    // SAFETY: the zygote's fd, inherited by this fork and kept open just above; nothing
    // else in this process owns it.
    let template = template.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    match set_up_monitor() {
        Ok(sigfd) => monitor(req, report, template, sigfd, false),
        Err(failure) => fail(&mut UnixStream::from(report), failure),
    }
}

/// What makes a zygote child (`process::set_up_child`) a monitor: the environment
/// cleared, its name, the subreaper bit, and SIGCHLD blocked and turned into the returned
/// signalfd before anything can exit, so that no exit is lost.
pub(crate) fn set_up_monitor() -> Result<SignalFd, Failure> {
    clear_env();
    ignore_sigpipe();
    let _ = nix::sys::prctl::set_name(c"proxrt-monitor");
    // Orphans of a container without its own pid namespace are re-parented here, not to
    // the host's init.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()
        .and_then(|_| SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC))
        .map_err(|e| (Fault::Internal, format!("signalfd: {e}")))
}

/// Creates the container `req` names, reports it on `report`, and supervises it until it
/// is removed; returns the process's exit code. `spare`: this process was the zygote's
/// spare (said in the report).
pub(crate) fn monitor(
    req: CreateRequest,
    report: OwnedFd,
    template: Option<OwnedFd>,
    sigfd: SignalFd,
    spare: bool,
) -> i32 {
    let mut report = UnixStream::from(report);
    let mut rollback = Rollback::new(format!("create container {}", req.id));
    let mut built = match create(&req, &mut rollback, template) {
        Ok(built) => built,
        Err(failure) => {
            drop(rollback);
            kill_and_reap_children();
            return fail(&mut report, failure);
        }
    };

    let reported = write_frame(
        &mut report,
        &Report::Created {
            init_pid: built.init_pid.as_raw(),
            monitor_pid: std::process::id() as i32,
            view: built.view.clone(),
            spare,
        },
    );
    // Torn down off the create's path, now that it is reported.
    drop(built.view_ns.take());
    if reported.is_err() || !acknowledged(&mut report) {
        // Nobody took ownership of the container (the daemon died or dropped the request).
        drop(rollback);
        kill_and_reap_children();
        return 1;
    }
    rollback.commit();
    drop(report);

    Monitor::new(req, built, sigfd).run()
}

pub(crate) fn fail(report: &mut UnixStream, (fault, message): Failure) -> i32 {
    let _ = write_frame(report, &Report::Failed { message, fault });
    1
}
