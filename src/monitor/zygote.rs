//! The zygote: a single-threaded process that forks monitors and sandbox holders for the
//! multi-threaded daemon.
//!
//! Daemon side: `Zygote` (spawn, then async requests). Zygote side: `zygote_main`, plain
//! blocking code that never starts a thread.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};

use super::process::{close_fds_except, exit_now, fork_detached, has_exited, is_multithreaded};
use super::protocol::{
    decode_frame, encode_frame, CreateViewKind, Fault, Report, ZygoteReply, ZygoteRequest, ACK,
    MAX_FRAME,
};
use super::sandbox::{self, SandboxCreated, SandboxRequest};
use super::spare::Spare;
use super::{container, MonitorError, MONITOR_SOCKET};
use crate::spec::process::DEFAULT_PATH;

/// The hidden subcommand of the `proxrt` binary that runs the zygote (see `spawn_exec`).
pub const ZYGOTE_SUBCOMMAND: &str = "__zygote";
/// The fd on which a re-exec'd zygote finds its socket.
pub const ZYGOTE_FD: RawFd = 3;

/// How long a monitor that reported failure may take to exit before the daemon stops
/// waiting for it.
const FAILED_CHILD_EXIT_WAIT: Duration = Duration::from_secs(5);

/// What a monitor needs to create one container.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CreateRequest {
    /// The container id (64 hex characters in proxrt; libcontainer accepts `[A-Za-z0-9_+.-]`).
    pub id: String,
    /// Contains config.json; the rootfs is already mounted by the caller at the path the
    /// spec names. If the spec has `process.oomScoreAdj`, the monitor removes it from
    /// config.json (libcontainer would apply it to the monitor itself): use `oom_score_adj`.
    pub bundle: PathBuf,
    /// The monitor writes status.json here and listens on monitor.sock here. Keep it short:
    /// the socket path must fit in 107 bytes.
    pub state_dir: PathBuf,
    /// The runtime's state root: libcontainer's `with_root_path`, crun's `--root`.
    pub runtime_root: PathBuf,
    /// The CRI log file, opened confined to its directory; None discards the
    /// container's output.
    pub log: Option<crate::logs::LogTarget>,
    /// Lines longer than this are split into `P` records; 0 means 16 KiB.
    pub max_log_line_size: usize,
    /// Written to `/proc/<init>/oom_score_adj` between build() and start(); the caller has
    /// clamped it to what this host allows.
    pub oom_score_adj: Option<i32>,
    /// Cap on each of ExecSync's stdout and stderr (the rest is read and discarded);
    /// 0 means 16 MiB.
    pub exec_max_output: usize,
    /// The container gets a terminal (the spec's `process.terminal` must say the same):
    /// the monitor holds the pty's master, logs what it reads as stdout and feeds it the
    /// input of attach sessions.
    pub tty: bool,
    /// The container's stdin is a pipe whose write end the monitor holds (kept open while
    /// nobody is attached); false: /dev/null. With a tty, input goes to the terminal.
    #[serde(default)]
    pub stdin: bool,
    /// The stdin pipe is closed when the first attach session that fed it ends (CRI
    /// `stdin_once`; not for tty containers, as containerd).
    #[serde(default)]
    pub stdin_once: bool,
    /// What creates the container (libcontainer when absent, as in older daemons' requests).
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// The daemon's pods dir when it is a mount of its own: the container is then created
    /// in a mount namespace without it (from the create template, or a copy of the host's
    /// with only the mounts below it that the spec names carried over), and the monitor
    /// returns to the host's namespace after (`container/view.rs`). None: created in the
    /// host's namespace.
    #[serde(default)]
    pub pods_mount: Option<PathBuf>,
    /// Use the zygote's create template (`create_template.rs`), which the zygote lets go
    /// after this many seconds without a create; None: copy the host's namespace.
    #[serde(default)]
    pub create_template_idle_secs: Option<u64>,
    /// Bind mounts the daemon took out of config.json for the monitor to attach to the
    /// rootfs itself before libcontainer runs (`premount.rs`); given back to config.json
    /// when it cannot.
    #[serde(default)]
    pub premounts: Vec<crate::monitor::premount::Premount>,
    /// The container's seccomp filter was compiled by the daemon into the bundle's
    /// `seccomp.bpf` and taken out of config.json (`seccomp_bpf.rs`): the init and each
    /// exec load it as it is.
    #[serde(default)]
    pub seccomp: Option<crate::monitor::seccomp_bpf::FilterLoad>,
}

/// Which runtime creates the container. The monitor supervises either the same way: logs,
/// status.json, reaping, exit codes, OOM, exec.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RuntimeKind {
    /// youki's libcontainer, in the monitor process .
    #[default]
    Libcontainer,
    /// The crun binary, run by the monitor for each operation (see monitor/crun.rs).
    Crun {
        /// Absolute path of the crun binary (`--root` is the request's `runtime_root`).
        path: PathBuf,
        /// Run every crun command in a private mount namespace without the cgroup2 mount
        /// (`[crun] hybrid_cgroups = "v1-view"`).
        #[serde(default)]
        v1_view: bool,
    },
}

/// A container in the created state, with its monitor running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Created {
    /// The container's init (host pid), waiting for start.
    pub init_pid: i32,
    /// The container's monitor (host pid).
    pub monitor_pid: i32,
}

/// The daemon's handle on the zygote. Dropping it closes the socket, which makes the
/// zygote exit; monitors and holders it forked keep running.
pub struct Zygote {
    pid: i32,
    /// None only inside `drop`.
    chan: Option<Arc<Channel>>,
    /// The zygote process when started with `spawn_exec`.
    child: Option<Child>,
}

/// The daemon's end of the zygote socket. Shared with the task that runs each exchange, so
/// that a cancelled caller never leaves a reply (and the report socket it carries) unread.
struct Channel {
    /// SOCK_SEQPACKET, non-blocking.
    sock: OwnedFd,
    /// One request/reply exchange at a time.
    lock: tokio::sync::Mutex<()>,
    seq: AtomicU64,
}

impl Zygote {
    /// MUST be called in main() before the tokio runtime or any thread exists. Forks the
    /// zygote: a single-threaded child that dies with the daemon (PR_SET_PDEATHSIG, and EOF
    /// on its socket) and forks one monitor per container. Refuses to run in a process that
    /// already has threads (use `spawn_exec` there).
    pub fn spawn() -> Result<Zygote, MonitorError> {
        if is_multithreaded() {
            return Err(MonitorError::Spawn(
                "Zygote::spawn called in a multi-threaded process; call it first in main() \
                 or use Zygote::spawn_exec"
                    .into(),
            ));
        }
        let (ours, theirs) = seqpacket_pair()?;
        let parent = nix::unistd::getpid();
        // SAFETY: the process is single-threaded (checked above).
        match unsafe { fork() }.map_err(|e| MonitorError::Spawn(format!("fork: {e}")))? {
            ForkResult::Child => {
                let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
                if nix::unistd::getppid() != parent {
                    exit_now(0);
                }
                let fd = theirs.as_raw_fd();
                std::mem::forget(theirs);
                drop(ours);
                zygote_main(fd)
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                Ok(Zygote::new(child.as_raw(), ours, None))
            }
        }
    }

    /// Starts the zygote by executing `program` with `args` (the `proxrt` binary with its
    /// hidden `__zygote` subcommand, whose main must call `zygote_main(ZYGOTE_FD)`), with the
    /// socket on fd 3 and an empty environment. Safe from a multi-threaded process (tests,
    /// or a daemon that already runs threads); the zygote exits when this handle is dropped
    /// or the daemon dies (EOF on its socket).
    pub fn spawn_exec(program: &Path, args: &[&str]) -> Result<Zygote, MonitorError> {
        let (ours, theirs) = seqpacket_pair()?;
        let theirs_raw = theirs.as_raw_fd();
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if theirs_raw == ZYGOTE_FD {
                    if libc::fcntl(ZYGOTE_FD, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(theirs_raw, ZYGOTE_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| MonitorError::Spawn(format!("exec {}: {e}", program.display())))?;
        drop(theirs);
        Ok(Zygote::new(child.id() as i32, ours, Some(child)))
    }

    fn new(pid: i32, sock: OwnedFd, child: Option<Child>) -> Zygote {
        Zygote {
            pid,
            chan: Some(Arc::new(Channel {
                sock,
                lock: tokio::sync::Mutex::new(()),
                seq: AtomicU64::new(0),
            })),
            child,
        }
    }

    /// The zygote's pid.
    /// Whether the zygote process still runs (not exited, not a zombie).
    pub fn is_alive(&self) -> bool {
        !has_exited(self.pid)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Asks the zygote for a new monitor that creates the container through libcontainer
    /// (build(), not start()). Returns once the container's init exists (created state) or
    /// with the creation error text, after the failed attempt has been cleaned up.
    ///
    /// Cancel-safe: if this future is dropped before it returns, the monitor notices the
    /// closed report socket, deletes the container and exits.
    pub async fn create_container(&self, req: CreateRequest) -> Result<Created, MonitorError> {
        validate_create(&req)?;
        let id = req.id.clone();
        let failed = |message: String| MonitorError::Create {
            id: id.clone(),
            message,
        };
        let (created, (view, spare)) = self
            .create_acknowledged(
                |seq| ZygoteRequest::Create { seq, req },
                &format!("container {id}"),
                "monitor",
                failed,
                |report| match report {
                    Report::Created {
                        init_pid,
                        monitor_pid,
                        view,
                        spare,
                    } => Ok((
                        Created {
                            init_pid,
                            monitor_pid,
                        },
                        (view, spare),
                    )),
                    other => Err(other),
                },
                |_| Ok(()),
            )
            .await?;
        tracing::debug!(
            container = %id,
            init_pid = created.init_pid,
            monitor_pid = created.monitor_pid,
            view = view.as_str(),
            spare,
            "container created"
        );
        if let CreateViewKind::Copy {
            template_unfit: Some(why),
        } = &view
        {
            tracing::debug!(container = %id, "the create template did not fit: {why}");
        }
        crate::metrics::container_created_in(view.as_str());
        crate::metrics::container_monitor_from(if spare { "spare" } else { "fork" });
        Ok(created)
    }

    /// Forks a pod's namespace holder: new net/ipc/uts/pid namespaces as requested, hostname,
    /// `lo` up, sysctls, and the namespace files bind-mounted under `req.dir`. Returns once
    /// all of that is done, or with the error after it has been undone. Cancel-safe like
    /// `create_container`. Undo with `teardown_sandbox`.
    ///
    /// `before_ack` runs with the result before the setup process is told to keep it: a
    /// caller that records the holder there (`backend/host/pod.rs`) can always find it,
    /// since a daemon killed before the acknowledgement leaves the setup to undo it all.
    /// An error from it is the call's, after the undo.
    pub async fn spawn_sandbox(
        &self,
        req: SandboxRequest,
        before_ack: impl FnOnce(&SandboxCreated) -> Result<(), String>,
    ) -> Result<SandboxCreated, MonitorError> {
        sandbox::validate(&req)?;
        let id = req.id.clone();
        let failed = |message: String| MonitorError::Sandbox {
            id: id.clone(),
            message,
        };
        self.create_acknowledged(
            |seq| ZygoteRequest::Sandbox { seq, req },
            &format!("sandbox {id}"),
            "holder setup",
            failed,
            |report| match report {
                Report::Sandbox(created) => Ok(created),
                other => Err(other),
            },
            before_ack,
        )
        .await
    }

    /// The exchange both creations share: send the request, read the forked child's
    /// first report. A success (`accept` picks it out, `before_ack` agrees) is
    /// acknowledged, which lets the child carry on; without the acknowledgement (this
    /// future dropped, `before_ack` failed, the daemon killed) it undoes its work. A failure is awaited until the child has undone its work and exited.
    /// `subject` ("container <id>") prefixes a refused request; `child` names who went
    /// away when the acknowledgement cannot be sent.
    async fn create_acknowledged<T>(
        &self,
        make: impl FnOnce(u64) -> ZygoteRequest,
        subject: &str,
        child: &str,
        failed: impl Fn(String) -> MonitorError,
        accept: impl FnOnce(Report) -> Result<T, Report>,
        before_ack: impl FnOnce(&T) -> Result<(), String>,
    ) -> Result<T, MonitorError> {
        let fd = self.call(make).await?;
        let mut report = report_stream(fd)?;
        match read_report(&mut report).await.map_err(&failed)? {
            Report::Failed { message, fault } => {
                wait_for_exit(&mut report).await;
                tracing::debug!(%subject, error = %message, "creation failed");
                Err(match fault {
                    Fault::Invalid => MonitorError::InvalidRequest(format!("{subject}: {message}")),
                    _ => failed(message),
                })
            }
            other => match accept(other) {
                Ok(created) => {
                    if let Err(message) = before_ack(&created) {
                        // Dropping the report socket unacknowledged makes the child undo.
                        drop(report);
                        return Err(failed(message));
                    }
                    report.write_all(&[ACK]).await.map_err(|e| {
                        failed(format!("{child} went away before the acknowledgement: {e}"))
                    })?;
                    Ok(created)
                }
                Err(other) => Err(MonitorError::Protocol(format!(
                    "unexpected report {other:?}"
                ))),
            },
        }
    }

    /// Sends one request and returns the report socket of the forked child.
    ///
    /// The exchange runs in its own task: if this caller is cancelled, the task still
    /// receives the reply and drops its report socket, which tells the child to clean up
    /// at once (instead of waiting for an acknowledgement that never comes).
    async fn call(&self, make: impl FnOnce(u64) -> ZygoteRequest) -> Result<OwnedFd, MonitorError> {
        let chan = self
            .chan
            .clone()
            .ok_or_else(|| MonitorError::ZygoteGone("closed".into()))?;
        let seq = chan.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let frame = encode_frame(&make(seq));
        if frame.len() > MAX_FRAME {
            return Err(MonitorError::InvalidRequest(format!(
                "request of {} bytes is too large",
                frame.len()
            )));
        }
        tokio::spawn(async move { chan.exchange(seq, &frame).await })
            .await
            .map_err(|e| MonitorError::ZygoteGone(format!("zygote exchange: {e}")))?
    }
}

impl Channel {
    async fn exchange(&self, seq: u64, frame: &[u8]) -> Result<OwnedFd, MonitorError> {
        let _one_at_a_time = self.lock.lock().await;
        // SAFETY: the fd stays open for the AsyncFd's whole life: `self.sock` is only closed
        // when the Channel is dropped, which cannot happen while this borrows it.
        let afd = unsafe {
            AsyncFd::register_with_interest(
                BorrowedSock(self.sock.as_raw_fd()),
                Interest::READABLE | Interest::WRITABLE,
            )
        }
        .map_err(|e| MonitorError::io("register zygote socket", io::Error::other(e.to_string())))?;
        loop {
            let mut ready = afd
                .writable()
                .await
                .map_err(|e| MonitorError::io("zygote socket", e))?;
            match ready.try_io(|s| {
                nix::sys::socket::send(
                    s.get_ref().0,
                    frame,
                    MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                )
                .map_err(io::Error::from)
            }) {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => return Err(MonitorError::ZygoteGone(format!("send: {e}"))),
                Err(_would_block) => continue,
            }
        }
        loop {
            let mut ready = afd
                .readable()
                .await
                .map_err(|e| MonitorError::io("zygote socket", e))?;
            let (bytes, fd) =
                match ready.try_io(|s| recv_with_fds(s.get_ref().0, MsgFlags::MSG_DONTWAIT)) {
                    Ok(Ok((bytes, fds))) => (bytes, fds.into_iter().next()),
                    Ok(Err(e)) => return Err(MonitorError::ZygoteGone(format!("receive: {e}"))),
                    Err(_would_block) => continue,
                };
            if bytes.is_empty() {
                return Err(MonitorError::ZygoteGone("it closed its socket".into()));
            }
            let reply: ZygoteReply = decode_frame(&bytes)?;
            if reply.seq() != seq {
                // The reply to an exchange that was aborted (runtime shut down): dropping
                // its fd makes that child clean up after itself.
                drop(fd);
                continue;
            }
            return match reply {
                ZygoteReply::Forked { .. } => {
                    fd.ok_or_else(|| MonitorError::Protocol("fork reply without a socket".into()))
                }
                ZygoteReply::Error { message, .. } => Err(MonitorError::Failed {
                    op: "zygote fork",
                    message,
                }),
            };
        }
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // EOF on its socket makes the zygote exit (once no exchange task holds it).
        drop(self.chan.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        match &mut self.child {
            Some(child) => loop {
                match child.try_wait() {
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    _ => break,
                }
            },
            None => loop {
                match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Ok(WaitStatus::StillAlive) => {
                        let _ = nix::sys::signal::kill(
                            Pid::from_raw(self.pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        let _ = waitpid(Pid::from_raw(self.pid), None);
                        break;
                    }
                    _ => break,
                }
            },
        }
    }
}

/// A socket fd registered with tokio for the duration of one call, without giving up
/// ownership (AsyncFd would otherwise close it).
struct BorrowedSock(RawFd);

impl AsRawFd for BorrowedSock {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), MonitorError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| MonitorError::Spawn(format!("socketpair: {e}")))?;
    // A daemon started with a closed stdio fd could get the socket as fd 0..2, which the
    // child's stdio setup would then overwrite.
    let b = above_stdio(b).map_err(|e| MonitorError::Spawn(format!("zygote socket: {e}")))?;
    super::process::set_nonblocking(a.as_raw_fd(), true)
        .map_err(|e| MonitorError::Spawn(format!("zygote socket: {e}")))?;
    Ok((a, b))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: dup is fresh.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

fn validate_create(req: &CreateRequest) -> Result<(), MonitorError> {
    validate_id(&req.id)?;
    if let RuntimeKind::Crun { path, .. } = &req.runtime {
        if !path.is_absolute() || !req.runtime_root.is_absolute() {
            return Err(MonitorError::InvalidRequest(format!(
                "crun binary {} and root {} must be absolute paths",
                path.display(),
                req.runtime_root.display()
            )));
        }
    }
    if let Some(dir) = req.pods_mount.as_ref().filter(|d| !d.is_absolute()) {
        return Err(MonitorError::InvalidRequest(format!(
            "pods mount {} must be an absolute path",
            dir.display()
        )));
    }
    let sock = req.state_dir.join(MONITOR_SOCKET);
    if sock.as_os_str().len() > 107 {
        return Err(MonitorError::InvalidRequest(format!(
            "state dir {} is too long for a unix socket path",
            req.state_dir.display()
        )));
    }
    Ok(())
}

/// libcontainer's id rule (its state dir is named after the id).
pub(crate) fn validate_id(id: &str) -> Result<(), MonitorError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(MonitorError::InvalidRequest(format!(
            "invalid container id {id:?}"
        )))
    }
}

fn report_stream(fd: OwnedFd) -> Result<tokio::net::UnixStream, MonitorError> {
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true)
        .map_err(|e| MonitorError::io("report socket", e))?;
    tokio::net::UnixStream::from_std(std).map_err(|e| MonitorError::io("report socket", e))
}

async fn read_report(stream: &mut tokio::net::UnixStream) -> Result<Report, String> {
    let len = stream
        .read_u32_le()
        .await
        .map_err(|e| format!("the child exited before reporting ({e})"))? as usize;
    if len > MAX_FRAME {
        return Err(format!("report of {len} bytes"));
    }
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| format!("read report: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("malformed report: {e}"))
}

/// After a failure report, waits (bounded) until the child has exited (its end of the
/// socket closes), so that "create failed" also means "no process left".
async fn wait_for_exit(stream: &mut tokio::net::UnixStream) {
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(FAILED_CHILD_EXIT_WAIT, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// One datagram and the fds it carries (at most two).
pub(super) fn recv_with_fds(fd: RawFd, flags: MsgFlags) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_FRAME + 4];
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    let (bytes, truncated, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            fd,
            &mut iov,
            Some(&mut cmsg),
            flags | MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(received) = c {
                // SAFETY: the kernel just installed these descriptors for us.
                fds.extend(
                    received
                        .into_iter()
                        .map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
                );
            }
        }
        let truncated = msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        (msg.bytes, truncated, fds)
    };
    if truncated {
        return Err(io::Error::other("message truncated"));
    }
    buf.truncate(bytes);
    Ok((buf, fds))
}

/// The zygote's main loop; the `proxrt` binary's hidden `__zygote` subcommand calls
/// `zygote_main(ZYGOTE_FD)` first thing in `main`, before anything starts a thread.
/// Serves requests from the daemon on `fd` (a SOCK_SEQPACKET socket) until it is closed.
pub fn zygote_main(fd: RawFd) -> ! {
    let mut sock_type: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes an int into sock_type.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut sock_type as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || sock_type != libc::SOCK_SEQPACKET {
        eprintln!("proxrt zygote: fd {fd} is not the daemon's socket; run by proxrt serve only");
        exit_now(2);
    }
    close_fds_except(&[fd]);
    let _ = nix::unistd::chdir("/");
    let _ = super::process::set_nonblocking(fd, false);
    let _ = nix::sys::prctl::set_name(c"proxrt-zygote");
    // Every monitor and exec child is forked from here and finds cgroups through it.
    super::enter::remember_cgroup_mounts();
    // Compiled once, loaded by every pod's holder; without it each holder compiles its own.
    let _ = super::holder_confine::compile_filter()
        .inspect_err(|e| eprintln!("proxrt zygote: {e}; each pod holder compiles its own"));
    // Made once, joined by every pod's holder; without it each holder builds its own.
    let holders_ns = super::holder_confine::holders_namespace()
        .inspect_err(|e| eprintln!("proxrt zygote: {e}; each pod holder makes its own"))
        .ok();
    let holders_ns_fd = holders_ns.as_ref().map(AsRawFd::as_raw_fd);
    let mut template = Template::NotYet { last: None };
    // The next request's child, forked ahead: now, and after each request.
    let mut spare = fork_spare();
    // SAFETY: fd is the daemon's socket, owned by this process from here on.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    loop {
        if let Some(idle) = template.idle_limit() {
            // No create for that long: let the template (and what it holds) go.
            if let Ok(false) = super::process::poll_one(sock.as_raw_fd(), libc::POLLIN, Some(idle))
            {
                template = template.release();
                continue;
            }
        }
        let (bytes, _) = match recv_with_fds(sock.as_raw_fd(), MsgFlags::empty()) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.to_string().contains("truncated") => {
                send_reply(
                    &sock,
                    &ZygoteReply::Error {
                        seq: 0,
                        message: e.to_string(),
                    },
                    None,
                );
                continue;
            }
            Err(_) => exit_now(1),
        };
        if bytes.is_empty() {
            // The daemon closed its end or died.
            exit_now(0);
        }
        let mut pod_made = false;
        let mut crun = None;
        let (seq, result) = match decode_frame::<ZygoteRequest>(&bytes) {
            Err(e) => (0, Err(e.to_string())),
            Ok(ZygoteRequest::Create { seq, req }) => {
                if let RuntimeKind::Crun { path, .. } = &req.runtime {
                    crun = Some(path.clone());
                }
                let template_fd = template.for_create(&req);
                let result = hand_or_fork(
                    spare.take(),
                    req,
                    |s, req| s.hand_create(req, template_fd),
                    move |req, report| container::run_monitor(req, report, template_fd),
                );
                (seq, result)
            }
            Ok(ZygoteRequest::Sandbox { seq, req }) => {
                pod_made = true;
                let result = hand_or_fork(
                    spare.take(),
                    req,
                    |s, req| s.hand_sandbox(req, holders_ns_fd),
                    move |req, report| sandbox::run_setup(req, report, holders_ns_fd),
                );
                (seq, result)
            }
        };
        match result {
            Ok(daemon_end) => send_reply(&sock, &ZygoteReply::Forked { seq }, Some(&daemon_end)),
            Err(message) => send_reply(&sock, &ZygoteReply::Error { seq, message }, None),
        }
        if pod_made {
            // Its containers come next: make the template they will be created from while
            // the daemon sets the pod up, not in their first create.
            template.prepare();
        }
        if let Some(binary) = crun {
            // One sealed copy of crun for every monitor forked from now on (crun.rs), made
            // at the first crun create, after it was handed on.
            super::crun::seal_for_children(&binary);
        }
        if spare.is_none() {
            // The child just handed the request runs first: woken by this process, it
            // tends to be queued on this CPU, where it would wait for the fork below
            // (docs/benchmarks.md, sixth session: its pick-up 0.27 -> 0.15 ms median).
            std::thread::yield_now();
            // While that child works: the next request's.
            spare = fork_spare();
        }
    }
}

/// The zygote's create template (`create_template.rs`): made at the first create that asks
/// for it, let go after the idle time that create named without another create (it keeps
/// the filesystems it holds referenced: an unmount on the host would leave them busy), made
/// again when a pod is set up (its containers come next) or at the next create.
enum Template {
    /// None made, or let go; `last`: what the last one was made for.
    NotYet { last: Option<Recipe> },
    Made {
        recipe: Recipe,
        ns: OwnedFd,
        /// When it was made or last handed to a create.
        used: Instant,
    },
    /// It could not be made (said on stderr): creates copy the host's namespace until the
    /// idle time has passed, then it is tried again.
    Failed { recipe: Recipe, since: Instant },
}

/// What a template is made for: the daemon's pods dir, the runtime's directories, and how
/// long it is kept without a create.
#[derive(Clone)]
struct Recipe {
    pods: PathBuf,
    dirs: Vec<PathBuf>,
    idle: Duration,
}

impl Template {
    /// The template's fd for a monitor creating `req` (inherited by its fork), if any.
    fn for_create(&mut self, req: &CreateRequest) -> Option<RawFd> {
        let pods = req.pods_mount.as_ref()?;
        let idle = Duration::from_secs(req.create_template_idle_secs?);
        if let Template::NotYet { .. } = self {
            *self = Template::made(Recipe {
                pods: pods.clone(),
                dirs: super::create_template::runtime_dirs(req),
                idle,
            });
        }
        match self {
            Template::Made { recipe, ns, used } if recipe.pods == *pods => {
                *used = Instant::now();
                Some(ns.as_raw_fd())
            }
            _ => None,
        }
    }

    /// Makes the template again if one was made before and let go.
    fn prepare(&mut self) {
        if let Template::NotYet { last: Some(recipe) } = self {
            *self = Template::made(recipe.clone());
        }
    }

    fn made(recipe: Recipe) -> Template {
        match super::create_template::build(&recipe.pods, &recipe.dirs) {
            Ok(ns) => Template::Made {
                recipe,
                ns,
                used: Instant::now(),
            },
            Err(e) => {
                eprintln!(
                    "proxrt zygote: no create template ({e}); creates copy the host's mount namespace"
                );
                Template::Failed {
                    recipe,
                    since: Instant::now(),
                }
            }
        }
    }

    /// Lets the template go (closing its handle), remembering what it was made for.
    fn release(self) -> Template {
        match self {
            Template::Made { recipe, .. } | Template::Failed { recipe, .. } => {
                Template::NotYet { last: Some(recipe) }
            }
            not_yet => not_yet,
        }
    }

    /// How long the zygote may wait for a request before the template is to go (zero:
    /// now); None: there is none to let go.
    fn idle_limit(&self) -> Option<Duration> {
        match self {
            Template::NotYet { .. } => None,
            Template::Made { recipe, used, .. } => Some(recipe.idle.saturating_sub(used.elapsed())),
            Template::Failed { recipe, since } => Some(recipe.idle.saturating_sub(since.elapsed())),
        }
    }
}

fn fork_spare() -> Option<Spare> {
    Spare::fork()
        .inspect_err(|e| eprintln!("proxrt zygote: no spare ({e}); the next request forks"))
        .ok()
}

/// Hands `req` to `spare` (`hand`), or forks a child running `run` with it when there is
/// no spare or it could not take the request (gone, or the request too large for its
/// socket; said on stderr). Returns the daemon's end of the child's report socket.
fn hand_or_fork<R>(
    spare: Option<Spare>,
    req: R,
    hand: impl FnOnce(Spare, &R) -> io::Result<OwnedFd>,
    run: impl FnOnce(R, OwnedFd) -> i32,
) -> Result<OwnedFd, String> {
    match spare.map(|s| hand(s, &req)) {
        Some(Ok(daemon_end)) => return Ok(daemon_end),
        Some(Err(e)) => {
            eprintln!("proxrt zygote: the spare could not take the request ({e}); forking instead")
        }
        None => {}
    }
    fork_with_report(move |report| run(req, report))
}

/// A report socket: the daemon's end, the child's end.
pub(super) fn report_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

/// Forks a detached child running `run` with its end of a new report socket; returns the
/// daemon's end.
fn fork_with_report(run: impl FnOnce(OwnedFd) -> i32) -> Result<OwnedFd, String> {
    let (daemon_end, child_end) = report_pair().map_err(|e| format!("socketpair: {e}"))?;
    // The child closes daemon_end (with every other inherited fd) first thing; the closure
    // owns child_end, so the zygote's copy is closed when the closure is dropped below.
    fork_detached(move || run(child_end)).map_err(|e| format!("fork: {e}"))?;
    Ok(daemon_end)
}

fn send_reply(sock: &OwnedFd, reply: &ZygoteReply, fd: Option<&OwnedFd>) {
    let frame = encode_frame(reply);
    let iov = [IoSlice::new(&frame)];
    let raw;
    let cmsgs: Vec<ControlMessage> = match fd {
        Some(f) => {
            raw = [f.as_raw_fd()];
            vec![ControlMessage::ScmRights(&raw)]
        }
        None => Vec::new(),
    };
    if let Err(e) = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
        if e == nix::errno::Errno::EPIPE {
            exit_now(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon shares one Zygote between tonic handlers and awaits these futures in
    /// them: they must be Send, the handles Send + Sync. (Checked at compile time.)
    #[allow(dead_code)]
    fn handles_and_futures_can_cross_threads(
        z: &Zygote,
        c: &super::super::MonitorClient,
        req: CreateRequest,
        sreq: SandboxRequest,
    ) {
        fn send<T: Send>(_: T) {}
        fn shared<T: Send + Sync>() {}
        shared::<Zygote>();
        shared::<super::super::MonitorClient>();
        send(z.create_container(req));
        send(z.spawn_sandbox(sreq, |_| Ok(())));
        send(c.start());
        send(c.signal(9));
        send(c.wait());
        send(c.reopen_log());
        send(c.exec_sync(super::super::ExecSyncRequest {
            args: vec![],
            timeout: None,
        }));
    }

    #[test]
    fn ids_follow_libcontainer_rules() {
        assert!(validate_id(&"a".repeat(64)).is_ok());
        assert!(validate_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ä"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spawn_refuses_a_multithreaded_process() {
        let t = std::thread::spawn(Zygote::spawn);
        let err = match t.join().unwrap() {
            Err(e) => e.to_string(),
            Ok(_) => panic!("spawn must refuse"),
        };
        assert!(err.contains("multi-threaded"), "{err}");
    }

    /// A valid create request for `runtime`.
    fn request(runtime: RuntimeKind) -> CreateRequest {
        CreateRequest {
            id: "a".repeat(64),
            bundle: "/b".into(),
            state_dir: "/run/s".into(),
            runtime_root: "/run/l".into(),
            log: None,
            max_log_line_size: 0,
            oom_score_adj: None,
            exec_max_output: 0,
            tty: false,
            stdin: false,
            stdin_once: false,
            runtime,
            pods_mount: Some("/run/p".into()),
            create_template_idle_secs: Some(30),
            premounts: Vec::new(),
            seccomp: None,
        }
    }

    #[test]
    fn long_state_dirs_are_refused_before_forking() {
        let mut req = request(RuntimeKind::Libcontainer);
        req.tty = true;
        req.stdin = true;
        assert!(validate_create(&req).is_ok());
        req.state_dir = PathBuf::from("/run/").join("x".repeat(120));
        assert!(validate_create(&req).is_err());
    }

    #[test]
    fn a_relative_pods_mount_is_refused_and_none_is_fine() {
        let mut req = request(RuntimeKind::Libcontainer);
        req.pods_mount = Some("run/p".into());
        assert!(validate_create(&req).is_err());
        req.pods_mount = None;
        assert!(validate_create(&req).is_ok());
    }

    #[test]
    fn crun_requests_need_absolute_paths_and_default_to_libcontainer() {
        let mut req = request(RuntimeKind::Crun {
            path: "crun".into(),
            v1_view: false,
        });
        assert!(validate_create(&req)
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        req.runtime = RuntimeKind::Crun {
            path: "/usr/bin/crun".into(),
            v1_view: true,
        };
        assert!(validate_create(&req).is_ok());
        // A request from a daemon that predates the field is a libcontainer one.
        let mut json = serde_json::to_value(&req).unwrap();
        json.as_object_mut().unwrap().remove("runtime");
        let back: CreateRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back.runtime, RuntimeKind::Libcontainer);
    }
}
