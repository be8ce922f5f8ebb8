//! A streaming exec (CRI Exec): a child of the monitor makes the process's stdio (pipes,
//! or a terminal), starts the process in the container like ExecSync does (`enter.rs`, or
//! `crun exec --detach`), hands the daemon its ends of the stdio over the client
//! connection (SCM_RIGHTS) and reports the exit code on the same connection.
//!
//! The daemon moves the bytes itself: the monitor stays out of the data path, and a daemon
//! restart ends the session (the client reconnects) without touching the container.

use std::fs::File;
use std::io::{IoSlice, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::crun::CrunExec;
use super::enter::{self, Target};
use super::process::{close_fds_except, exit_code_of, wait_pid};
use super::protocol::{encode_line, ExecFds, Fault, MonitorReply};
use super::seccomp_bpf::ContainerFilter;

/// What one streaming exec runs, in which container, with which streams.
pub(crate) struct ExecStreamJob {
    /// Some: the container was created by crun, and crun execs into it.
    pub crun: Option<CrunExec>,
    pub init_pid: Pid,
    pub spec: Spec,
    /// The filter the daemon compiled for the container (its spec has none then).
    pub seccomp: Option<Arc<ContainerFilter>>,
    pub args: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// The process's stdio and the daemon's ends of it.
struct Stdio {
    child: [OwnedFd; 3],
    fds: ExecFds,
    /// In `ExecFds` order.
    daemon: Vec<OwnedFd>,
}

/// Runs in the forked child; returns its exit code.
pub(crate) fn run_exec_stream_child(client: UnixStream, job: ExecStreamJob) -> i32 {
    close_fds_except(&[client.as_raw_fd()]);
    let _ = client.set_nonblocking(false);
    let _ = nix::sys::prctl::set_name(c"proxrt-exec-io");
    let pid = match start(&job) {
        Ok((pid, fds, daemon_ends)) => {
            let line = encode_line(&MonitorReply::ExecStarted { fds });
            let raw: Vec<RawFd> = daemon_ends.iter().map(|f| f.as_raw_fd()).collect();
            if send_with_fds(&client, &line, &raw).is_err() {
                // The daemon went away: the process runs on with its stdio closed.
                return 1;
            }
            drop(daemon_ends);
            pid
        }
        Err((fault, message)) => {
            let _ = (&client).write_all(&encode_line(&MonitorReply::error(fault, message)));
            return 1;
        }
    };
    let exit_code = match wait_pid(pid) {
        Ok(status) => exit_code_of(&status).map(|(c, _)| c).unwrap_or(255),
        Err(e) => {
            let message = format!("wait for the exec'd process: {e}");
            let _ =
                (&client).write_all(&encode_line(&MonitorReply::error(Fault::Internal, message)));
            return 1;
        }
    };
    match (&client).write_all(&encode_line(&MonitorReply::ExecExited { exit_code })) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn start(job: &ExecStreamJob) -> Result<(Pid, ExecFds, Vec<OwnedFd>), (Fault, String)> {
    let internal =
        |what: &str, e: &dyn std::fmt::Display| (Fault::Internal, format!("{what}: {e}"));
    let stdio = make_stdio(job).map_err(|e| internal("exec stdio", &e))?;
    let Stdio { child, fds, daemon } = stdio;
    let pid = if let Some(crun) = &job.crun {
        // crun exits once the process runs; as a subreaper this child inherits the process
        // and waits for it. crun's `--tty` wants a console socket: the process gets the
        // terminal as its stdio instead, without making it its controlling terminal.
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| internal("become a child subreaper", &e))?;
        crun.spawn(&job.args, child)
            .map_err(|message| (Fault::Internal, format!("exec {:?}: {message}", job.args)))?
    } else {
        let target = Target {
            init_pid: job.init_pid,
            spec: &job.spec,
            seccomp: job.seccomp.as_deref(),
        };
        enter::spawn(&target, &job.args, child, job.tty)
            .map_err(|message| (Fault::Internal, format!("exec {:?}: {message}", job.args)))?
    };
    Ok((pid, fds, daemon))
}

fn make_stdio(job: &ExecStreamJob) -> std::io::Result<Stdio> {
    let null_in = || -> std::io::Result<OwnedFd> { Ok(File::open("/dev/null")?.into()) };
    let null_out = || -> std::io::Result<OwnedFd> {
        Ok(File::options().write(true).open("/dev/null")?.into())
    };
    if job.tty {
        let pty = nix::pty::openpty(
            None::<&nix::pty::Winsize>,
            None::<&nix::sys::termios::Termios>,
        )
        .map_err(std::io::Error::from)?;
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )?;
        }
        let child = [pty.slave.try_clone()?, pty.slave.try_clone()?, pty.slave];
        return Ok(Stdio {
            child,
            fds: ExecFds {
                pty: true,
                ..ExecFds::default()
            },
            daemon: vec![pty.master],
        });
    }
    let mut fds = ExecFds::default();
    let mut daemon = Vec::new();
    let stdin = if job.stdin {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        fds.stdin = true;
        daemon.push(w);
        r
    } else {
        null_in()?
    };
    let mut out = |wanted: bool, flag: &mut bool| -> std::io::Result<OwnedFd> {
        if !wanted {
            return null_out();
        }
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        *flag = true;
        daemon.push(r);
        Ok(w)
    };
    let stdout = out(job.stdout, &mut fds.stdout)?;
    let stderr = out(job.stderr, &mut fds.stderr)?;
    Ok(Stdio {
        child: [stdin, stdout, stderr],
        fds,
        daemon,
    })
}

/// Sends `bytes` with `fds` attached in one message (the fds arrive with its first byte).
fn send_with_fds(client: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
    let sent = loop {
        match sendmsg::<()>(client.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(std::io::Error::from)?,
        }
    };
    if sent < bytes.len() {
        (&*client).write_all(&bytes[sent..])?;
    }
    Ok(())
}
