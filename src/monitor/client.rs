//! The daemon's side of a container's monitor socket.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::protocol::{
    encode_line, AttachFrame, Fault, MonitorReply, MonitorRequest, MAX_ATTACH_PAYLOAD,
};
use super::status::{read_status, ContainerStatusFile};
use super::{MonitorError, MONITOR_SOCKET};

/// Extra time an exec gets beyond its own timeout before the client gives up on the monitor
/// (the monitor enforces the timeout itself; this only guards against a wedged monitor).
const EXEC_GUARD: Duration = Duration::from_secs(10);

/// How long start, signal and reopen_log may take: a monitor answers them from one turn of
/// its loop, in milliseconds. One that does not answer in this time is wedged (or its loop
/// is flooded) and the caller falls back (StopContainer kills the cgroup) instead of
/// hanging with the container's lock held.
pub const CALL_DEADLINE: Duration = Duration::from_secs(15);

/// How a container ended, from its final status.json.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit status, or 128 + the signal that killed the init.
    pub exit_code: i32,
    /// The signal that killed the init, if one did.
    pub signal: Option<i32>,
    /// Unix nanoseconds.
    pub finished_at: i64,
    /// The OOM killer killed a process of the container's memory cgroup.
    pub oom_killed: bool,
}

impl ExitStatus {
    fn from_status(s: &ContainerStatusFile) -> Option<ExitStatus> {
        Some(ExitStatus {
            exit_code: s.exit_code?,
            signal: s.signal,
            finished_at: s.finished_at?,
            oom_killed: s.oom_killed,
        })
    }
}

/// A command to run in a running container, as its process's user, env and cwd
/// (from config.json).
#[derive(Clone, Debug)]
pub struct ExecSyncRequest {
    /// argv; `args[0]` is looked up in the container process's `$PATH`.
    pub args: Vec<String>,
    /// The process is SIGKILLed at this deadline; None waits forever.
    pub timeout: Option<Duration>,
}

/// What an ExecSync produced. Each stream is cut at the container's `exec_max_output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSyncResult {
    /// The exit status, or 128 + the signal (137 when the timeout killed it).
    pub exit_code: i32,
    /// What the process wrote on stdout (at most the cap).
    pub stdout: Vec<u8>,
    /// What the process wrote on stderr (at most the cap).
    pub stderr: Vec<u8>,
    /// The timeout expired and the process was killed.
    pub timed_out: bool,
}

/// A streaming exec (CRI Exec): which of the process's stdio the client wants.
#[derive(Clone, Debug)]
pub struct ExecStreamRequest {
    pub args: Vec<String>,
    /// A terminal for stdin, stdout and stderr at once.
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A running streaming exec: the daemon's ends of its stdio (the streams not asked for
/// are /dev/null in the process) and the monitor connection its exit comes on.
pub struct ExecSession {
    /// Write end of the process's stdin; dropping it is EOF.
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// The terminal's master side (tty sessions: it carries stdin, stdout and stderr).
    pub pty: Option<OwnedFd>,
    rest: BufReader<tokio::io::Chain<std::io::Cursor<Vec<u8>>, UnixStream>>,
}

impl ExecSession {
    /// Waits for the process to exit: its status, or 128 + the signal.
    pub async fn exit_code(mut self) -> Result<i32, MonitorError> {
        let mut line = Vec::new();
        let n = self
            .rest
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| MonitorError::io("exec: read exit", e))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Err(MonitorError::Protocol(
                "the exec ended without an exit status (its monitor or the container went away)"
                    .into(),
            ));
        }
        match serde_json::from_slice(&line[..line.len() - 1])
            .map_err(|e| MonitorError::Protocol(format!("exec exit: {e}")))?
        {
            MonitorReply::ExecExited { exit_code } => Ok(exit_code),
            MonitorReply::Error { message, fault } => Err(reply_error("exec", fault, message)),
            other => Err(MonitorError::Protocol(format!(
                "unexpected exec reply {other:?}"
            ))),
        }
    }
}

/// Reads from `stream` up to and including a newline with recvmsg, keeping the fds that
/// came with it. Returns the line (without its newline; None on EOF before one), the bytes
/// read past it, and the fds.
async fn read_line_with_fds(
    stream: &UnixStream,
) -> std::io::Result<(Option<Vec<u8>>, Vec<u8>, Vec<OwnedFd>)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut got = Vec::new();
    let mut fds = Vec::new();
    loop {
        if let Some(nl) = got.iter().position(|&b| b == b'\n') {
            let rest = got.split_off(nl + 1);
            got.truncate(nl);
            return Ok((Some(got), rest, fds));
        }
        let mut buf = [0u8; 4096];
        let n = stream
            .async_io(tokio::io::Interest::READABLE, || {
                let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
                let msg = nix::sys::socket::recvmsg::<()>(
                    stream.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
                )
                .map_err(std::io::Error::from)?;
                for c in msg.cmsgs().map_err(std::io::Error::from)? {
                    if let nix::sys::socket::ControlMessageOwned::ScmRights(raw) = c {
                        // SAFETY: the kernel just installed these fds for us.
                        fds.extend(
                            raw.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                Ok(msg.bytes)
            })
            .await?;
        if n == 0 {
            return Ok((None, Vec::new(), fds));
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// Which of the container's streams an attach session joins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttachStreams {
    /// Feed the container's stdin (ignored when the container has none).
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// What the monitor sends an attached client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The container exited and all its output was sent: the session is over.
    Exited,
}

/// The container's output, as an attached client receives it.
#[derive(Debug)]
pub struct AttachOutput {
    reader: OwnedReadHalf,
    buf: Vec<u8>,
}

/// An attached client's input to the container.
#[derive(Debug)]
pub struct AttachInput {
    writer: OwnedWriteHalf,
}

impl AttachOutput {
    /// The next event. None: the monitor closed the session without `Exited` (it
    /// disconnects a client that falls too far behind the output; or it died).
    pub async fn next(&mut self) -> std::io::Result<Option<AttachEvent>> {
        loop {
            let decoded = AttachFrame::decode(&self.buf)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if let Some((frame, n)) = decoded {
                self.buf.drain(..n);
                return match frame {
                    AttachFrame::Stdout(d) => Ok(Some(AttachEvent::Stdout(d))),
                    AttachFrame::Stderr(d) => Ok(Some(AttachEvent::Stderr(d))),
                    AttachFrame::Exited => Ok(Some(AttachEvent::Exited)),
                    other => Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("unexpected attach frame from the monitor: {other:?}"),
                    )),
                };
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.reader.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl AttachInput {
    /// Bytes for the container's stdin (or terminal).
    pub async fn stdin(&mut self, data: &[u8]) -> std::io::Result<()> {
        for chunk in data.chunks(MAX_ATTACH_PAYLOAD) {
            self.send(AttachFrame::Stdin(chunk.to_vec())).await?;
        }
        Ok(())
    }

    /// The client's stdin ended (with `stdin_once`, the container's stdin closes).
    pub async fn close_stdin(&mut self) -> std::io::Result<()> {
        self.send(AttachFrame::StdinEof).await
    }

    /// The client's terminal has a new size (tty containers).
    pub async fn resize(&mut self, width: u16, height: u16) -> std::io::Result<()> {
        self.send(AttachFrame::Resize { width, height }).await
    }

    async fn send(&mut self, frame: AttachFrame) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        frame.encode_into(&mut bytes);
        self.writer.write_all(&bytes).await
    }
}

/// Both ends of an attach session over `stream` (its other end plays the monitor).
#[cfg(test)]
pub(crate) fn attach_session_for_tests(stream: UnixStream) -> (AttachOutput, AttachInput) {
    let (reader, writer) = stream.into_split();
    (
        AttachOutput {
            reader,
            buf: Vec::new(),
        },
        AttachInput { writer },
    )
}

/// The bytes of a stdout frame carrying `data`, as a monitor sends it.
#[cfg(test)]
pub(crate) fn encode_attach_output_for_tests(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    AttachFrame::encode_output(0, data, &mut out);
    out
}

/// A connection to one container's monitor (unix socket `<state_dir>/monitor.sock`). Holds
/// no connection between calls, so it works unchanged after a daemon restart.
#[derive(Clone, Debug)]
pub struct MonitorClient {
    state_dir: PathBuf,
}

impl MonitorClient {
    /// A client for the monitor whose state dir is `state_dir`.
    pub fn new(state_dir: &Path) -> MonitorClient {
        MonitorClient {
            state_dir: state_dir.to_owned(),
        }
    }

    /// The container's status.json, if there is one.
    pub fn status(&self) -> Result<Option<ContainerStatusFile>, MonitorError> {
        read_status(&self.state_dir)
    }

    /// Starts the created container (libcontainer `start()`); `started_at` is in status.json
    /// when this returns.
    pub async fn start(&self) -> Result<(), MonitorError> {
        let (reply, _) = self.call_within("start", MonitorRequest::Start).await?;
        expect_ok("start", reply)
    }

    /// Sends `signal` to the container's init; SIGKILL goes to every process of the
    /// container's cgroup. Succeeds when the container has already exited.
    pub async fn signal(&self, signal: i32) -> Result<(), MonitorError> {
        match self
            .call_within("signal", MonitorRequest::Signal { signal })
            .await
        {
            Ok((reply, _)) => expect_ok("signal", reply),
            Err(MonitorError::MonitorGone { .. }) if self.final_status()?.is_some() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Resolves when the container has exited and status.json is final (at once if it
    /// already is, also when the monitor is long gone). No deadline of its own: the wait
    /// lasts as long as the container; callers bound it.
    pub async fn wait(&self) -> Result<ExitStatus, MonitorError> {
        if let Some(done) = self.final_status()? {
            return Ok(done);
        }
        let outcome = self.call("wait", MonitorRequest::Wait).await;
        // Whatever the socket said (exited, EOF because the monitor exited, refused because
        // it just removed its socket), the final status file is the answer.
        if let Some(done) = self.final_status()? {
            return Ok(done);
        }
        match outcome {
            Ok((MonitorReply::Error { message, fault }, _)) => {
                Err(reply_error("wait", fault, message))
            }
            Ok(_) => Err(MonitorError::Protocol(
                "monitor answered wait but status.json is not final".into(),
            )),
            Err(e) => Err(e),
        }
    }

    /// Runs a command in the running container and returns its output and exit code.
    pub async fn exec_sync(&self, req: ExecSyncRequest) -> Result<ExecSyncResult, MonitorError> {
        let request = MonitorRequest::Exec {
            args: req.args,
            timeout_ms: req
                .timeout
                .map(|t| t.as_millis().min(u64::MAX as u128) as u64),
        };
        let run = async {
            let (reply, mut reader) = self.call("exec", request).await?;
            match reply {
                MonitorReply::Exec {
                    exit_code,
                    timed_out,
                    stdout_len,
                    stderr_len,
                } => {
                    let mut stdout = vec![0u8; stdout_len];
                    let mut stderr = vec![0u8; stderr_len];
                    let read = async {
                        reader.read_exact(&mut stdout).await?;
                        reader.read_exact(&mut stderr).await
                    };
                    read.await
                        .map_err(|e| MonitorError::io("read exec output", e))?;
                    Ok(ExecSyncResult {
                        exit_code,
                        stdout,
                        stderr,
                        timed_out,
                    })
                }
                MonitorReply::Error { message, fault } => Err(reply_error("exec", fault, message)),
                other => Err(MonitorError::Protocol(format!(
                    "unexpected exec reply {other:?}"
                ))),
            }
        };
        match req.timeout {
            Some(t) => tokio::time::timeout(t + EXEC_GUARD, run)
                .await
                .map_err(|_| MonitorError::Timeout("exec".into()))?,
            None => run.await,
        }
    }

    /// Starts a streaming exec: the process runs once this returns, with the daemon's ends
    /// of its stdio in the session; [`ExecSession::exit_code`] waits for it.
    pub async fn exec_stream(&self, req: ExecStreamRequest) -> Result<ExecSession, MonitorError> {
        let gone = || MonitorError::MonitorGone {
            state_dir: self.state_dir.clone(),
        };
        let request = MonitorRequest::ExecStream {
            args: req.args,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        };
        let mut stream = UnixStream::connect(self.socket_path())
            .await
            .map_err(|_| gone())?;
        stream
            .write_all(&encode_line(&request))
            .await
            .map_err(|_| gone())?;
        // The reply line carries the fds: read it with recvmsg, up to its newline.
        let start = tokio::time::timeout(CALL_DEADLINE, read_line_with_fds(&stream));
        let (line, rest, mut fds) = start
            .await
            .map_err(|_| {
                MonitorError::Timeout(format!("exec (monitor in {})", self.state_dir.display()))
            })?
            .map_err(|e| MonitorError::io("exec: read reply", e))?;
        let Some(line) = line else {
            return Err(gone());
        };
        let reply: MonitorReply = serde_json::from_slice(&line)
            .map_err(|e| MonitorError::Protocol(format!("exec reply: {e}")))?;
        let which = match reply {
            MonitorReply::ExecStarted { fds } => fds,
            MonitorReply::Error { message, fault } => {
                return Err(reply_error("exec", fault, message))
            }
            other => {
                return Err(MonitorError::Protocol(format!(
                    "unexpected exec reply {other:?}"
                )))
            }
        };
        if fds.len() != which.count() {
            return Err(MonitorError::Protocol(format!(
                "exec reply names {} fds, carries {}",
                which.count(),
                fds.len()
            )));
        }
        let mut take = |wanted: bool| wanted.then(|| fds.remove(0));
        Ok(ExecSession {
            stdin: take(which.stdin),
            stdout: take(which.stdout),
            stderr: take(which.stderr),
            pty: take(which.pty),
            rest: BufReader::new(std::io::Cursor::new(rest).chain(stream)),
        })
    }

    /// ReopenContainerLog: the monitor reopens the CRI log file at its path.
    pub async fn reopen_log(&self) -> Result<(), MonitorError> {
        let (reply, _) = self
            .call_within("reopen log", MonitorRequest::ReopenLog)
            .await?;
        expect_ok("reopen log", reply)
    }

    /// Joins the running container's stdio: its output from now on (what came before is
    /// in the log) and, with `streams.stdin`, its stdin. The session lasts until the
    /// container exits or either side closes it.
    pub async fn attach(
        &self,
        streams: AttachStreams,
    ) -> Result<(AttachOutput, AttachInput), MonitorError> {
        let request = MonitorRequest::Attach {
            stdin: streams.stdin,
            stdout: streams.stdout,
            stderr: streams.stderr,
        };
        let (reply, reader) = self.call_within("attach", request).await?;
        expect_ok("attach", reply)?;
        // Frames may already sit in the reader's buffer behind the reply line.
        let buf = reader.buffer().to_vec();
        let (reader, writer) = reader.into_inner().into_split();
        Ok((AttachOutput { reader, buf }, AttachInput { writer }))
    }

    /// True when a monitor listens on the socket (it is connectable).
    pub fn is_alive(&self) -> bool {
        std::os::unix::net::UnixStream::connect(self.socket_path()).is_ok()
    }

    fn socket_path(&self) -> PathBuf {
        self.state_dir.join(MONITOR_SOCKET)
    }

    fn final_status(&self) -> Result<Option<ExitStatus>, MonitorError> {
        Ok(self
            .status()?
            .as_ref()
            .filter(|s| s.is_final())
            .and_then(ExitStatus::from_status))
    }

    /// [`Self::call`] bounded by [`CALL_DEADLINE`]; `Timeout` when the monitor does not answer.
    async fn call_within(
        &self,
        op: &'static str,
        request: MonitorRequest,
    ) -> Result<(MonitorReply, BufReader<UnixStream>), MonitorError> {
        tokio::time::timeout(CALL_DEADLINE, self.call(op, request))
            .await
            .map_err(|_| {
                MonitorError::Timeout(format!("{op} (monitor in {})", self.state_dir.display()))
            })?
    }

    /// One request on a fresh connection; returns the reply line and the reader positioned
    /// after it (an exec reply is followed by its output).
    async fn call(
        &self,
        op: &'static str,
        request: MonitorRequest,
    ) -> Result<(MonitorReply, BufReader<UnixStream>), MonitorError> {
        let gone = || MonitorError::MonitorGone {
            state_dir: self.state_dir.clone(),
        };
        let mut stream = UnixStream::connect(self.socket_path())
            .await
            .map_err(|_| gone())?;
        stream
            .write_all(&encode_line(&request))
            .await
            .map_err(|_| gone())?;
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        let n = match reader.read_until(b'\n', &mut line).await {
            Ok(n) => n,
            // A monitor that exits with our request unread resets the connection.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(MonitorError::io(format!("{op}: read reply"), e)),
        };
        if n == 0 || line.last() != Some(&b'\n') {
            // The monitor exited (container finished) or was killed mid-request.
            return Err(gone());
        }
        let reply = serde_json::from_slice(&line[..line.len() - 1])
            .map_err(|e| MonitorError::Protocol(format!("{op} reply: {e}")))?;
        Ok((reply, reader))
    }
}

fn expect_ok(op: &'static str, reply: MonitorReply) -> Result<(), MonitorError> {
    match reply {
        MonitorReply::Ok => Ok(()),
        MonitorReply::Error { message, fault } => Err(reply_error(op, fault, message)),
        other => Err(MonitorError::Protocol(format!(
            "unexpected {op} reply {other:?}"
        ))),
    }
}

fn reply_error(op: &'static str, fault: Fault, message: String) -> MonitorError {
    match fault {
        Fault::Invalid => MonitorError::InvalidRequest(format!("{op}: {message}")),
        Fault::State => MonitorError::WrongState { op, message },
        Fault::Internal => MonitorError::Failed { op, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::status::{write_status, ContainerStatusFile};

    /// A monitor that accepts one connection and exits (drops it) without reading the
    /// request: the client's read sees a reset, not an end of file.
    fn monitor_that_exits_unread(state_dir: &Path) -> std::thread::JoinHandle<()> {
        let listener =
            std::os::unix::net::UnixListener::bind(state_dir.join(MONITOR_SOCKET)).unwrap();
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            // Until the request has arrived, unread.
            let mut waiting = [0u8; 1];
            let _ = nix::sys::socket::recv(
                std::os::fd::AsRawFd::as_raw_fd(&conn),
                &mut waiting,
                nix::sys::socket::MsgFlags::MSG_PEEK,
            );
            drop(conn);
        })
    }

    #[tokio::test]
    async fn a_monitor_gone_mid_request_is_gone_and_signal_then_finds_the_container_ended() {
        let dir = tempfile::tempdir().unwrap();
        let client = MonitorClient::new(dir.path());
        let monitor = monitor_that_exits_unread(dir.path());
        let err = client
            .call("signal", MonitorRequest::Signal { signal: 9 })
            .await;
        monitor.join().unwrap();
        assert!(
            matches!(err, Err(MonitorError::MonitorGone { .. })),
            "{:?}",
            err.map(|_| ())
        );

        let _ = std::fs::remove_file(dir.path().join(MONITOR_SOCKET));
        let mut ended = ContainerStatusFile::created(1, 2, 3);
        ended.started_at = Some(4);
        ended.finished_at = Some(5);
        ended.exit_code = Some(137);
        write_status(dir.path(), &ended).unwrap();
        let monitor = monitor_that_exits_unread(dir.path());
        client.signal(9).await.unwrap();
        monitor.join().unwrap();
    }
}
