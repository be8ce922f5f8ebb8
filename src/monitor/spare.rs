//! The zygote's spare: a child forked before the request that will use it, detached and
//! set up as every zygote child is (`process::set_up_child`), waiting on a socket of its
//! own. The next CreateContainer or RunPodSandbox is handed to it (the request, with the
//! report socket and the create template or the holders' namespace passed along by
//! `SCM_RIGHTS`) instead of a fork: the fork and the detach are off that call's path. It
//! becomes the container's monitor or the pod's setup process; the zygote forks the next
//! spare while it works. A spare whose zygote is gone (its socket closed) exits; one that
//! is gone when a request comes (killed) is replaced by a fork, as before spares.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

use super::container;
use super::process::{fork_detached, poll_one, set_up_child};
use super::protocol::{decode_frame, encode_frame, MAX_FRAME};
use super::sandbox::{self, SandboxRequest};
use super::zygote::{recv_with_fds, report_pair, CreateRequest};

/// The zygote's handle on its spare: the zygote's end of the spare's socket.
pub(super) struct Spare {
    sock: OwnedFd,
}

/// What the zygote sends a spare (serialized from borrowed requests, received owned). The
/// report socket comes first among the fds, the namespace (`with_ns`: the create
/// template, the holders' namespace) second.
#[derive(Serialize, Deserialize)]
struct Handed<C, S> {
    work: Work<C, S>,
    with_ns: bool,
}

#[derive(Serialize, Deserialize)]
enum Work<C, S> {
    Create(C),
    Sandbox(S),
}

type Sent<'a> = Work<&'a CreateRequest, &'a SandboxRequest>;
type Received = Handed<CreateRequest, SandboxRequest>;

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
        fork_detached(move || wait_for_request(spare_end))?;
        Ok(Spare { sock })
    }

    /// Hands the create `req` to the spare (with `template`, the zygote's create
    /// template, if any); returns the daemon's end of the new monitor's report socket.
    /// An error: the spare is gone, nothing was handed.
    pub(super) fn hand_create(
        self,
        req: &CreateRequest,
        template: Option<RawFd>,
    ) -> io::Result<OwnedFd> {
        self.hand(Work::Create(req), template)
    }

    /// Hands a pod's setup `req` to the spare (with `holders_ns`, the holders' mount
    /// namespace, if any), as `hand_create`.
    pub(super) fn hand_sandbox(
        self,
        req: &SandboxRequest,
        holders_ns: Option<RawFd>,
    ) -> io::Result<OwnedFd> {
        self.hand(Work::Sandbox(req), holders_ns)
    }

    fn hand(self, work: Sent<'_>, ns: Option<RawFd>) -> io::Result<OwnedFd> {
        let frame = encode_frame(&Handed {
            work,
            with_ns: ns.is_some(),
        });
        if frame.len() > MAX_FRAME {
            return Err(io::Error::other(format!(
                "request of {} bytes is too large",
                frame.len()
            )));
        }
        let (daemon_end, child_end) = report_pair()?;
        let mut fds = vec![child_end.as_raw_fd()];
        fds.extend(ns);
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

/// The spare's main: set up, rehearse a create's first-run costs (`container::rehearse`),
/// then wait for the one request it serves (or for the zygote to go: exit). Returns the
/// process's exit code.
fn wait_for_request(sock: OwnedFd) -> i32 {
    set_up_child(&[sock.as_raw_fd()]);
    let _ = nix::sys::prctl::set_name(c"proxrt-spare");
    // Not when a request is already there: it would wait for the rehearsal.
    if let Ok(false) = poll_one(sock.as_raw_fd(), libc::POLLIN, Some(Duration::ZERO)) {
        container::rehearse();
    }
    let (bytes, mut fds) = loop {
        match recv_with_fds(sock.as_raw_fd(), MsgFlags::empty()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(got) => break got,
            Err(_) => return 1,
        }
    };
    drop(sock);
    if bytes.is_empty() || fds.is_empty() {
        // The zygote went (the daemon stopped) before a request came.
        return 0;
    }
    let report = fds.remove(0);
    let Ok(handed) = decode_frame::<Received>(&bytes) else {
        // Dropping the report socket unanswered fails that request at once.
        return 1;
    };
    let ns = if handed.with_ns { fds.pop() } else { None };
    match handed.work {
        Work::Create(req) => match container::set_up_monitor() {
            Ok(sigfd) => container::monitor(req, report, ns, sigfd, true),
            Err(failure) => container::fail(&mut UnixStream::from(report), failure),
        },
        Work::Sandbox(req) => {
            let _ = nix::sys::prctl::set_name(c"proxrt-sandbox");
            sandbox::serve_setup(req, report, ns)
        }
    }
}
