//! The zygote's spare monitor: a monitor process forked before the create that will use
//! it, and set up as far as a monitor can be before it knows its container (detached,
//! every fd but its socket closed, stdio on /dev/null, environment cleared, SIGCHLD on a
//! signalfd: `container::set_up_process`). It waits on a socket of its own; a create
//! hands it the request, with the report socket and the create template passed along
//! (`SCM_RIGHTS`), instead of forking, so the fork, the detach and that set-up are off
//! the create's path. The zygote forks the next spare while the monitor it handed the
//! create to works. A spare whose zygote is gone (its socket closed) exits; one that is
//! gone when a create comes (killed) is replaced by a fork, as before spares.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

use super::container;
use super::process::fork_detached;
use super::protocol::{decode_frame, encode_frame, MAX_FRAME};
use super::zygote::{recv_with_fds, CreateRequest};

/// The zygote's handle on its spare: the zygote's end of the spare's socket.
pub(super) struct Spare {
    sock: OwnedFd,
}

/// What the zygote sends a spare: the request; the report socket comes first among the
/// fds, the template second when `template` says there is one.
#[derive(Serialize, Deserialize)]
struct Handed {
    req: CreateRequest,
    template: bool,
}

impl Spare {
    /// Forks a spare, detached as every monitor.
    pub(super) fn fork() -> io::Result<Spare> {
        let (sock, spare_end) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        // The child closes the zygote's end (with every other inherited fd) first thing;
        // the closure owns spare_end, so the zygote's copy goes when it is dropped here.
        fork_detached(move || wait_for_create(spare_end))?;
        Ok(Spare { sock })
    }

    /// Hands the create `req` to the spare (with `template`, the zygote's create
    /// template, if any); returns the daemon's end of the new monitor's report socket.
    /// An error: the spare is gone, nothing was handed.
    pub(super) fn hand(self, req: &CreateRequest, template: Option<RawFd>) -> io::Result<OwnedFd> {
        let frame = encode_frame(&Handed {
            req: req.clone(),
            template: template.is_some(),
        });
        if frame.len() > MAX_FRAME {
            return Err(io::Error::other(format!(
                "request of {} bytes is too large",
                frame.len()
            )));
        }
        let (daemon_end, monitor_end) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut fds = vec![monitor_end.as_raw_fd()];
        fds.extend(template);
        sendmsg::<()>(
            self.sock.as_raw_fd(),
            &[IoSlice::new(&frame)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(io::Error::from)?;
        // The spare has its own copies now; ours (and the spare's socket) close here.
        Ok(daemon_end)
    }
}

/// The spare's main: set up, then wait for the one create it serves (or for the zygote
/// to go: exit). Returns the process's exit code.
fn wait_for_create(sock: OwnedFd) -> i32 {
    let sigfd = match container::set_up_process(&[sock.as_raw_fd()]) {
        Ok(sigfd) => sigfd,
        // Not a monitor yet: nobody to report to; the zygote forks one at the next create.
        Err(_) => return 1,
    };
    let _ = nix::sys::prctl::set_name(c"proxrt-spare");
    let (bytes, mut fds) = loop {
        match recv_with_fds(sock.as_raw_fd(), MsgFlags::empty()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(got) => break got,
            Err(_) => return 1,
        }
    };
    drop(sock);
    if bytes.is_empty() || fds.is_empty() {
        // The zygote went (the daemon stopped) before a create came.
        return 0;
    }
    let report = fds.remove(0);
    let Ok(handed) = decode_frame::<Handed>(&bytes) else {
        // Dropping the report socket unanswered fails that create at once.
        return 1;
    };
    let template = if handed.template { fds.pop() } else { None };
    let _ = nix::sys::prctl::set_name(c"proxrt-monitor");
    container::monitor(handed.req, report, template, sigfd, true)
}
