//! The container's stdio: pipes (stdout, stderr, and stdin when the container asked for
//! one) or a terminal whose master the monitor receives on a console socket.
//!
//! The monitor holds the write end of the stdin pipe for the container's whole life, so
//! that the container does not read EOF while nobody is attached (CRI `stdin`); only
//! `stdin_once` closes it, when the first attach session that fed it ends.

use std::fs;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::monitor::process::{poll_one, set_nonblocking};
use crate::monitor::protocol::Fault;
use crate::rollback::Rollback;

use super::Failure;

/// The console socket's name in the container's state dir (as long as `monitor.sock`,
/// whose path length the zygote checks).
const CONSOLE_SOCKET: &str = "console.sock";
/// How long the runtime may take to hand over the terminal after create returned (it was
/// sent before: libcontainer's init and crun send it during create).
const MASTER_WAIT: Duration = Duration::from_secs(10);
/// A new terminal's size until an attach session sends one (what runc and containerd use).
pub(super) const DEFAULT_SIZE: (u16, u16) = (80, 24);

/// The container's fds 0–2, as the engine hands them to the container's init.
pub(crate) struct ChildStdio {
    pub(crate) stdin: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

/// What the monitor keeps of the container's stdio.
pub(super) struct MonitorStdio {
    /// Read ends of stdout and stderr; with a terminal, its master as stdout and no stderr.
    pub(super) output: [Option<OwnedFd>; 2],
    /// Where attach sessions' input goes: the stdin pipe's write end or the terminal's
    /// master. None: the container has no stdin.
    pub(super) input: Option<OwnedFd>,
    /// The terminal's master (resizes), for tty containers.
    pub(super) terminal: Option<OwnedFd>,
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> Failure {
    (Fault::Internal, format!("{what}: {e}"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Failure> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| internal("pipe", &e))
}

fn dev_null() -> Result<OwnedFd, Failure> {
    fs::File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| internal("open /dev/null", &e))
}

/// stdout and stderr pipes, and a stdin pipe when `stdin` (else /dev/null).
pub(super) fn pipes(stdin: bool) -> Result<(ChildStdio, MonitorStdio), Failure> {
    let (stdout, stdout_w) = pipe()?;
    let (stderr, stderr_w) = pipe()?;
    let (stdin_r, input) = match stdin {
        true => {
            let (r, w) = pipe()?;
            (r, Some(w))
        }
        false => (dev_null()?, None),
    };
    Ok((
        ChildStdio {
            stdin: stdin_r,
            stdout: stdout_w,
            stderr: stderr_w,
        },
        MonitorStdio {
            output: [Some(stdout), Some(stderr)],
            input,
            terminal: None,
        },
    ))
}

/// What the engine gets for a tty container: /dev/null everywhere (the runtime replaces
/// fds 0–2 of the container's process with the terminal's slave).
pub(super) fn null_stdio() -> Result<ChildStdio, Failure> {
    Ok(ChildStdio {
        stdin: dev_null()?,
        stdout: dev_null()?,
        stderr: dev_null()?,
    })
}

/// The unix socket on which the runtime sends the terminal's master (OCI
/// `--console-socket`; libcontainer's `with_console_socket`).
pub(super) struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    pub(super) fn bind(state_dir: &Path, rb: &mut Rollback) -> Result<ConsoleSocket, Failure> {
        let path = state_dir.join(CONSOLE_SOCKET);
        let _ = fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| internal(&format!("listen on {}", path.display()), &e))?;
        {
            let path = path.clone();
            rb.push("console socket", move || {
                let _ = fs::remove_file(&path);
            });
        }
        Ok(ConsoleSocket { listener, path })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The terminal master the runtime sent; the socket file is gone afterwards.
    pub(super) fn receive_master(self) -> Result<OwnedFd, Failure> {
        let received = self.accept_master();
        let _ = fs::remove_file(&self.path);
        received.map_err(|e| internal("receive the terminal from the runtime", &e))
    }

    fn accept_master(&self) -> io::Result<OwnedFd> {
        if !poll_one(self.listener.as_raw_fd(), libc::POLLIN, Some(MASTER_WAIT))? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the runtime did not connect to the console socket",
            ));
        }
        let (conn, _) = self.listener.accept()?;
        if !poll_one(conn.as_raw_fd(), libc::POLLIN, Some(MASTER_WAIT))? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the runtime sent no terminal on the console socket",
            ));
        }
        recv_fd(conn.as_raw_fd())?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "the console socket message carried no file descriptor",
            )
        })
    }
}

/// Receives one message and the first descriptor it carries (others are closed).
fn recv_fd(fd: RawFd) -> io::Result<Option<OwnedFd>> {
    let mut buf = [0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
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
    Ok(fds.into_iter().next())
}

/// The monitor's side of a terminal: the master is the container's output (as stdout)
/// and, when the container has a stdin, where input goes. Sized 80×24 (or the spec's
/// `consoleSize`) until an attach session resizes it.
pub(super) fn terminal(
    master: OwnedFd,
    stdin: bool,
    size: Option<(u16, u16)>,
) -> Result<MonitorStdio, Failure> {
    let (width, height) = size.unwrap_or(DEFAULT_SIZE);
    set_size(master.as_raw_fd(), width, height).map_err(|e| internal("size the terminal", &e))?;
    set_nonblocking(master.as_raw_fd(), true)
        .map_err(|e| internal("terminal master non-blocking", &e))?;
    let dup = || master.try_clone().map_err(|e| internal("dup terminal", &e));
    let input = if stdin { Some(dup()?) } else { None };
    Ok(MonitorStdio {
        terminal: Some(dup()?),
        input,
        output: [Some(master), None],
    })
}

/// TIOCSWINSZ on a terminal master.
pub(super) fn set_size(fd: RawFd, width: u16, height: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
