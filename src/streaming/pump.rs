//! Moves bytes between a process's stdio fds (pipes or a terminal's master side, as the
//! monitor hands them over) and a session's [`StdioStreams`].

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::session::{Outcome, StdioStreams, TermSize};
use crate::monitor::{ExecSession, MonitorError};

/// After the process exited, how long its output may take to reach EOF (a background
/// child it left behind may hold the pipe open) before the session ends without it.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
const CHUNK: usize = 32 * 1024;

/// A non-blocking fd in tokio's reactor.
pub(crate) struct Fd(AsyncFd<OwnedFd>);

impl Fd {
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Fd> {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it (and so keeps it
        // open, the same fd) until it is dropped.
        let afd = unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Fd(afd))
    }

    /// Reads some bytes; 0 at EOF. A terminal's master side reads EIO once every slave fd
    /// is closed: that is EOF too.
    pub(crate) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), buf).map_err(io::Error::from))
            {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    pub(crate) async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from))
            {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Sets a terminal's size (TIOCSWINSZ on the master side).
    pub(crate) fn resize(&self, size: TermSize) -> io::Result<()> {
        let ws = libc::winsize {
            ws_row: size.height,
            ws_col: size.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Copies `fd` to `to` until EOF or until the client is gone.
async fn copy_out(fd: Option<&Fd>, to: Option<mpsc::Sender<Bytes>>) {
    let (Some(fd), Some(to)) = (fd, to) else {
        return;
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        match fd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Copies the client's stdin to `fd` until the client's EOF.
async fn copy_in(from: Option<mpsc::Receiver<Bytes>>, fd: Option<&Fd>) {
    let (Some(mut from), Some(fd)) = (from, fd) else {
        return;
    };
    while let Some(chunk) = from.recv().await {
        if fd.write_all(&chunk).await.is_err() {
            return;
        }
    }
}

async fn apply_resizes(from: Option<mpsc::Receiver<TermSize>>, pty: Option<&Fd>) {
    let (Some(mut from), Some(pty)) = (from, pty) else {
        return;
    };
    while let Some(size) = from.recv().await {
        if let Err(e) = pty.resize(size) {
            tracing::debug!(error = %e, "exec: resize the terminal");
        }
    }
}

/// Runs a streaming exec's session to its end: the client's streams to and from the
/// process, until it exited and its output is drained (or the grace passed).
pub(crate) async fn exec_session(mut session: ExecSession, streams: StdioStreams) -> Outcome {
    let wrap = |fd: Option<OwnedFd>| -> io::Result<Option<Fd>> { fd.map(Fd::new).transpose() };
    let fds = (|| -> io::Result<_> {
        Ok((
            wrap(session.stdin.take())?,
            wrap(session.stdout.take())?,
            wrap(session.stderr.take())?,
            wrap(session.pty.take())?,
        ))
    })();
    let (stdin_fd, stdout_fd, stderr_fd, pty) = match fds {
        Ok(f) => f,
        Err(e) => return Outcome::Failure(format!("exec: set up the process's stdio: {e}")),
    };
    let StdioStreams {
        stdin,
        stdout,
        stderr,
        resize,
    } = streams;
    // With a terminal, the master side is stdin and stdout at once.
    let out_fd = pty.as_ref().or(stdout_fd.as_ref());
    let output = async {
        tokio::join!(
            copy_out(out_fd, stdout),
            copy_out(stderr_fd.as_ref(), stderr)
        );
    };
    let input = async {
        let to_process = async {
            match (&pty, stdin_fd) {
                (Some(p), _) => copy_in(stdin, Some(p)).await,
                // The pipe's write end goes with `fd` here: the process reads EOF.
                (None, fd) => copy_in(stdin, fd.as_ref()).await,
            }
        };
        tokio::join!(to_process, apply_resizes(resize, pty.as_ref()));
    };
    tokio::pin!(output, input);
    let exit = session.exit_code();
    tokio::pin!(exit);
    let mut output_done = false;
    let mut input_done = false;
    let code = loop {
        tokio::select! {
            r = &mut exit => break r,
            () = &mut output, if !output_done => output_done = true,
            () = &mut input, if !input_done => input_done = true,
        }
    };
    if !output_done {
        let _ = tokio::time::timeout(DRAIN_GRACE, &mut output).await;
    }
    outcome(code)
}

fn outcome(code: Result<i32, MonitorError>) -> Outcome {
    match code {
        Ok(0) => Outcome::Success,
        Ok(code) => Outcome::ExitCode(code),
        Err(e) => Outcome::Failure(e.to_string()),
    }
}
