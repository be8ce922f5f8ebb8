//! ExecSync: a child of the monitor enters the running container (`enter.rs`; or runs `crun
//! exec --detach` for crun's containers), collects the output, enforces the deadline and
//! answers the client itself.
//!
//! A dedicated child keeps the monitor responsive (it goes on serving while an exec runs)
//! and is the one that joins the container's pid namespace for its children.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::crun::CrunExec;
use super::enter::{self, Target};
use super::process::{close_fds_except, exit_code_of, pidfd_open, set_nonblocking, wait_pid};
use super::protocol::{encode_line, Fault, MonitorReply};
use super::seccomp_bpf::ContainerFilter;

/// containerd's cap on ExecSync output when none is configured.
const DEFAULT_MAX_OUTPUT: usize = 16 * 1024 * 1024;
/// After the exec'd process exited, how long its pipes may stay open (held by a background
/// child it left behind) before the output is returned without waiting for EOF.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// What one exec runs, and in which container.
pub(crate) struct ExecJob {
    /// Some: the container was created by crun, and crun execs into it.
    pub crun: Option<CrunExec>,
    /// The container's init (the monitor's unreaped child: its pid cannot be reused).
    pub init_pid: Pid,
    /// The container's spec (config.json as the backend got it): the exec'd process gets
    /// its process identity, capabilities, AppArmor profile, seccomp filter and namespaces.
    pub spec: Spec,
    /// The filter the daemon compiled for the container (its spec has none then).
    pub seccomp: Option<Arc<ContainerFilter>>,
    pub args: Vec<String>,
    pub timeout: Option<Duration>,
    pub max_output: usize,
}

struct Outcome {
    exit_code: i32,
    timed_out: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs in the forked child; returns its exit code.
pub(crate) fn run_exec_child(mut client: UnixStream, job: ExecJob) -> i32 {
    close_fds_except(&[client.as_raw_fd()]);
    let _ = client.set_nonblocking(false);
    let _ = nix::sys::prctl::set_name(c"proxrt-exec");
    let reply = match run(&job) {
        Ok(out) => {
            let mut bytes = encode_line(&MonitorReply::Exec {
                exit_code: out.exit_code,
                timed_out: out.timed_out,
                stdout_len: out.stdout.len(),
                stderr_len: out.stderr.len(),
            });
            bytes.extend_from_slice(&out.stdout);
            bytes.extend_from_slice(&out.stderr);
            bytes
        }
        Err((fault, message)) => encode_line(&MonitorReply::error(fault, message)),
    };
    match client.write_all(&reply) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn run(job: &ExecJob) -> Result<Outcome, (Fault, String)> {
    let internal =
        |what: &str, e: &dyn std::fmt::Display| (Fault::Internal, format!("{what}: {e}"));
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| internal("pipe", &e))?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| internal("pipe", &e))?;
    let stdin = std::fs::File::open("/dev/null").map_err(|e| internal("open /dev/null", &e))?;
    let started = Instant::now();
    if let Some(crun) = &job.crun {
        // crun exits once the process runs; as a subreaper this child inherits the
        // process and can wait for it (and its exit status) like libcontainer's.
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| internal("become a child subreaper", &e))?;
        let pid = crun
            .spawn(&job.args, [stdin.into(), out_w, err_w])
            .map_err(|message| (Fault::Internal, format!("exec {:?}: {message}", job.args)))?;
        let deadline = job.timeout.map(|t| started + t);
        return collect(pid, [out_r, err_r], deadline, max_output(job))
            .map_err(|e| internal("exec output", &e));
    }
    let target = Target {
        init_pid: job.init_pid,
        spec: &job.spec,
        seccomp: job.seccomp.as_deref(),
    };
    let pid = enter::spawn(&target, &job.args, [stdin.into(), out_w, err_w], false)
        .map_err(|message| (Fault::Internal, format!("exec {:?}: {message}", job.args)))?;
    let deadline = job.timeout.map(|t| started + t);
    collect(pid, [out_r, err_r], deadline, max_output(job)).map_err(|e| internal("exec output", &e))
}

fn max_output(job: &ExecJob) -> usize {
    match job.max_output {
        0 => DEFAULT_MAX_OUTPUT,
        n => n,
    }
}

/// Reads both pipes (keeping at most `max` bytes of each) until the process has exited and
/// the pipes are closed; SIGKILLs the process at `deadline`.
fn collect(
    pid: Pid,
    pipes: [OwnedFd; 2],
    deadline: Option<Instant>,
    max: usize,
) -> io::Result<Outcome> {
    let pidfd = pidfd_open(pid.as_raw())?;
    let mut pipes: [Option<OwnedFd>; 2] = pipes.map(Some);
    for p in pipes.iter().flatten() {
        set_nonblocking(p.as_raw_fd(), true)?;
    }
    let mut kept: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut timed_out = false;
    let mut status: Option<WaitStatus> = None;
    let mut drain_until: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if status.is_none() && !timed_out && deadline.is_some_and(|d| now >= d) {
            let _ = super::process::pidfd_send_signal(&pidfd, libc::SIGKILL);
            timed_out = true;
        }
        if status.is_some()
            && (pipes.iter().all(Option::is_none) || drain_until.is_some_and(|d| now >= d))
        {
            break;
        }
        let wake_at = match (status.is_some(), timed_out) {
            (true, _) => drain_until,
            (false, false) => deadline,
            (false, true) => None,
        };
        let timeout_ms = wake_at
            .map(|w| {
                w.saturating_duration_since(now)
                    .as_millis()
                    .min(i32::MAX as u128) as i32
            })
            .unwrap_or(-1);

        let mut fds = Vec::with_capacity(3);
        let mut which = Vec::with_capacity(3);
        for (i, p) in pipes.iter().enumerate() {
            if let Some(p) = p {
                fds.push(libc::pollfd {
                    fd: p.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                which.push(Some(i));
            }
        }
        if status.is_none() {
            fds.push(libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            which.push(None);
        }
        // SAFETY: valid pollfd array.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        for (pfd, w) in fds.iter().zip(&which) {
            if pfd.revents == 0 {
                continue;
            }
            match w {
                Some(i) => {
                    while let Some(p) = &pipes[*i] {
                        match nix::unistd::read(p.as_raw_fd(), &mut buf) {
                            Ok(0) => {
                                pipes[*i] = None;
                                break;
                            }
                            Ok(n) => {
                                let room = max.saturating_sub(kept[*i].len());
                                kept[*i].extend_from_slice(&buf[..n.min(room)]);
                            }
                            Err(nix::errno::Errno::EINTR) => continue,
                            Err(nix::errno::Errno::EAGAIN) => break,
                            Err(_) => {
                                pipes[*i] = None;
                                break;
                            }
                        }
                    }
                }
                None => {
                    status = Some(wait_pid(pid)?);
                    drain_until = Some(Instant::now() + DRAIN_GRACE);
                }
            }
        }
    }
    let exit_code = status
        .as_ref()
        .and_then(exit_code_of)
        .map(|(c, _)| c)
        .unwrap_or(255);
    let [stdout, stderr] = kept;
    Ok(Outcome {
        exit_code,
        timed_out,
        stdout,
        stderr,
    })
}
