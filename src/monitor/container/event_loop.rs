//! The monitor's event loop: one `poll(2)` over the signalfd, the output pipes, the socket and
//! its connections; serves requests, reaps the init and exec children, records how it ended.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use crate::logs::{CriLogWriter, Stream};
use crate::monitor::exec::{self, ExecJob};
use crate::monitor::exec_stream::{self, ExecStreamJob};
use crate::monitor::oom::oom_kill_count;
use crate::monitor::process::{exit_code_of, exit_now, now_nanos, poll_one, set_nonblocking};
use crate::monitor::protocol::{
    encode_line, Fault, MonitorReply, MonitorRequest, MAX_REQUEST_LINE,
};
use crate::monitor::seccomp_bpf::ContainerFilter;
use crate::monitor::status::{write_status, ContainerStatusFile};
use crate::monitor::zygote::CreateRequest;
use crate::monitor::MONITOR_SOCKET;

use super::attach::{Input, Session, INPUT_BACKLOG};
use super::cgroup::{kill_cgroup_procs, sweep_cgroup_leaf};
use super::create::Built;
use super::engine::Engine;
use super::stdio::set_size;

/// After the init exited: how long exec children get to report before they are killed,
/// and how long the pipes get to reach EOF (processes outside the container's cgroup may
/// hold them open).
const EXEC_GRACE: Duration = Duration::from_secs(2);
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// After the init exited: how long what is left in its cgroup gets to die.
const KILL_DEADLINE: Duration = Duration::from_secs(5);
const READ_CHUNK: usize = 64 * 1024;
/// Bytes one stream may move into the log per wakeup of the loop. A container that writes
/// without pause (`yes`) keeps its pipe full: draining it "until empty" never ends, and the
/// socket (stop, reopen_log) and the signalfd were never looked at again.
const OUTPUT_BUDGET: usize = 4 * READ_CHUNK;

/// A client connection whose request line is not complete yet.
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

pub(super) struct Monitor {
    req: CreateRequest,
    engine: Engine,
    init_pid: Pid,
    spec: Spec,
    /// The compiled seccomp filter the init loaded, for execs.
    seccomp: Option<Arc<ContainerFilter>>,
    cgroups_path: Option<PathBuf>,
    sigfd: SignalFd,
    listener: UnixListener,
    /// stdout and stderr read ends (a tty's master as stdout); None after EOF.
    streams: [Option<OwnedFd>; 2],
    /// The tty's master, for resizes.
    terminal: Option<OwnedFd>,
    /// Where attach sessions' input goes (stdin pipe or tty master, non-blocking), and
    /// what is queued for it; None: no stdin, or it was closed.
    input: Option<OwnedFd>,
    input_queue: Vec<u8>,
    /// Close `input` once its queue is written (stdin_once: a session's stdin ended).
    input_closing: bool,
    /// Attached clients.
    sessions: Vec<Session>,
    log: CriLogWriter,
    conns: Vec<Conn>,
    waiters: Vec<UnixStream>,
    exec_children: Vec<Pid>,
    status: ContainerStatusFile,
    exited: Option<WaitStatus>,
    /// Scratch buffer for the output pipes.
    buf: Vec<u8>,
    /// The container's own mount namespace, held for the monitor's life: when the
    /// container's last process exits, its teardown (the kernel's RCU grace period, the
    /// overlay's) is then the monitor's at its own exit, after the exit is reported, and
    /// not part of the exit the monitor waits for. Opened once the create is reported.
    _init_mnt_ns: Option<OwnedFd>,
}

const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

#[derive(Clone, Copy)]
enum Source {
    Signals,
    Listener,
    Output(usize),
    Conn(usize),
    Waiter(usize),
    Session(usize),
    Input,
}

impl Monitor {
    pub(super) fn new(req: CreateRequest, built: Built, sigfd: SignalFd) -> Monitor {
        for fd in built
            .stdio
            .output
            .iter()
            .chain([&built.stdio.input])
            .flatten()
        {
            let _ = set_nonblocking(fd.as_raw_fd(), true);
        }
        let cgroups_path = built
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone());
        Monitor {
            req,
            engine: built.engine,
            init_pid: built.init_pid,
            spec: built.spec,
            seccomp: built.seccomp,
            cgroups_path,
            sigfd,
            listener: built.listener,
            streams: built.stdio.output,
            terminal: built.stdio.terminal,
            input: built.stdio.input,
            input_queue: Vec::new(),
            input_closing: false,
            sessions: Vec::new(),
            log: built.log,
            conns: Vec::new(),
            waiters: Vec::new(),
            exec_children: Vec::new(),
            status: built.status,
            exited: None,
            buf: vec![0u8; READ_CHUNK],
            _init_mnt_ns: std::fs::File::open(format!("/proc/{}/ns/mnt", built.init_pid))
                .ok()
                .map(OwnedFd::from),
        }
    }

    pub(super) fn run(mut self) -> i32 {
        while self.exited.is_none() {
            let mut sources = vec![Source::Signals, Source::Listener];
            let mut fds = vec![
                pollin(self.sigfd.as_raw_fd()),
                pollin(self.listener.as_raw_fd()),
            ];
            for (i, s) in self.streams.iter().enumerate() {
                if let Some(fd) = s {
                    sources.push(Source::Output(i));
                    fds.push(pollin(fd.as_raw_fd()));
                }
            }
            for (i, c) in self.conns.iter().enumerate() {
                sources.push(Source::Conn(i));
                fds.push(pollin(c.stream.as_raw_fd()));
            }
            // Waiters are watched too, so that a client that gave up (a daemon restarted)
            // does not pin a connection until the container exits.
            for (i, w) in self.waiters.iter().enumerate() {
                sources.push(Source::Waiter(i));
                fds.push(pollin(w.as_raw_fd()));
            }
            // A full stdin queue stops reading the input of sessions that feed it: the
            // container's reading pace reaches the clients through their sockets.
            let input_full = self.input_queue.len() >= INPUT_BACKLOG;
            for (i, s) in self.sessions.iter().enumerate() {
                let mut events = 0;
                if !(input_full && s.feeds_stdin()) {
                    events |= libc::POLLIN;
                }
                if s.has_queued() {
                    events |= libc::POLLOUT;
                }
                sources.push(Source::Session(i));
                fds.push(libc::pollfd {
                    fd: s.stream.as_raw_fd(),
                    events,
                    revents: 0,
                });
            }
            if let (Some(fd), false) = (&self.input, self.input_queue.is_empty()) {
                sources.push(Source::Input);
                fds.push(libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                });
            }
            // SAFETY: fds is a valid array of pollfd.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if rc < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // poll itself failing is a bug; keep the container's record consistent anyway.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let mut ready_conns = Vec::new();
            let mut ready_waiters = Vec::new();
            let mut inputs = Vec::new();
            for (src, pfd) in sources.iter().zip(&fds) {
                if pfd.revents == 0 {
                    continue;
                }
                match *src {
                    Source::Signals => self.reap(),
                    Source::Listener => self.accept(),
                    Source::Output(i) => self.read_output(i),
                    Source::Conn(i) => ready_conns.push(i),
                    Source::Waiter(i) => ready_waiters.push(i),
                    Source::Session(i) => {
                        if pfd.revents & !libc::POLLOUT != 0 {
                            self.sessions[i].read(&mut inputs);
                        }
                    }
                    Source::Input => {}
                }
            }
            for input in inputs {
                self.apply_input(input);
            }
            self.write_input();
            self.flush_sessions();
            // Before the connections: handling a request may add a waiter.
            for i in ready_waiters.into_iter().rev() {
                let mut sink = [0u8; 256];
                match (&self.waiters[i]).read(&mut sink) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(n) if n > 0 => {}
                    _ => {
                        self.waiters.swap_remove(i);
                    }
                }
            }
            // Highest index first so that removing a connection keeps the others' indices.
            for i in ready_conns.into_iter().rev() {
                self.read_conn(i);
            }
        }
        self.finish()
    }

    fn reap(&mut self) {
        while let Ok(Some(_)) = self.sigfd.read_signal() {}
        let init = self.init_pid;
        let mut exited = None;
        let exec_children = &mut self.exec_children;
        crate::monitor::process::reap_all_nonblocking(|status| match status.pid() {
            Some(pid) if pid == init => exited = Some(status),
            Some(pid) => {
                if let Some(i) = exec_children.iter().position(|&p| p == pid) {
                    exec_children.swap_remove(i);
                }
            }
            None => {}
        });
        if exited.is_some() {
            self.exited = exited;
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.conns.push(Conn {
                            stream,
                            buf: Vec::new(),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }

    /// Copies what is available on one output pipe into the log and to the attached
    /// clients, at most [`OUTPUT_BUDGET`]: the rest waits for the next turn of the loop.
    fn read_output(&mut self, i: usize) {
        let Some(fd) = self.streams[i].as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        let (log, sessions, stream) = (&mut self.log, &mut self.sessions, STREAMS[i]);
        let pumped = pump(fd, &mut self.buf, OUTPUT_BUDGET, |data| {
            let _ = log.write_chunk(stream, data, chrono::Utc::now());
            for s in sessions.iter_mut() {
                s.output(i, data);
            }
        });
        match pumped {
            Pumped::Eof => {
                let _ = self.log.close_stream(stream, chrono::Utc::now());
                self.streams[i] = None;
            }
            // A terminal's master reads EIO once every slave fd is closed: its EOF.
            Pumped::Failed if self.terminal.is_some() => {
                let _ = self.log.close_stream(stream, chrono::Utc::now());
                self.streams[i] = None;
            }
            Pumped::Failed => self.streams[i] = None,
            Pumped::Empty | Pumped::Budget => {}
        }
    }

    /// Writes queued output to the clients; drops the ones that went away or fell too far
    /// behind (their stdin ends).
    fn flush_sessions(&mut self) {
        let mut inputs = Vec::new();
        let mut i = 0;
        while i < self.sessions.len() {
            self.sessions[i].flush();
            if self.sessions[i].gone {
                self.sessions.swap_remove(i).close(&mut inputs);
            } else {
                i += 1;
            }
        }
        for input in inputs {
            self.apply_input(input);
        }
        self.write_input();
    }

    fn apply_input(&mut self, input: Input) {
        match input {
            Input::Stdin(data) => {
                if self.input.is_some() && !self.input_closing {
                    self.input_queue.extend_from_slice(&data);
                }
            }
            // CRI stdin_once: the stdin pipe closes when the first session feeding it ends
            // (a terminal stays, as with containerd).
            Input::StdinEnded => {
                if self.req.stdin_once && self.terminal.is_none() {
                    self.input_closing = true;
                }
            }
            Input::Resize { width, height } => {
                if let Some(t) = &self.terminal {
                    if width > 0 && height > 0 {
                        let _ = set_size(t.as_raw_fd(), width, height);
                    }
                }
            }
        }
    }

    /// Writes what is queued for the container's stdin until the pipe is full; closes it
    /// when it is to be closed and everything was written, or when the container's side
    /// is gone (EPIPE, or EIO on a terminal).
    fn write_input(&mut self) {
        let Some(fd) = &self.input else {
            self.input_queue.clear();
            return;
        };
        let mut written = 0;
        let mut broken = false;
        while written < self.input_queue.len() {
            match nix::unistd::write(fd, &self.input_queue[written..]) {
                Ok(n) => written += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        self.input_queue.drain(..written);
        if broken || (self.input_closing && self.input_queue.is_empty()) {
            self.input = None;
            self.input_queue.clear();
        }
    }

    fn read_conn(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        let mut chunk = [0u8; 4096];
        let mut closed = false;
        loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if let Some(nl) = conn.buf.iter().position(|&b| b == b'\n') {
            let conn = self.conns.swap_remove(i);
            self.handle(conn.stream, &conn.buf[..nl], &conn.buf[nl + 1..]);
        } else if closed || conn.buf.len() > MAX_REQUEST_LINE {
            self.conns.swap_remove(i);
        }
    }

    /// `rest`: what the client sent after the request line (attach frames).
    fn handle(&mut self, stream: UnixStream, line: &[u8], rest: &[u8]) {
        let request: MonitorRequest = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                return reply(
                    stream,
                    &MonitorReply::error(Fault::Invalid, format!("bad request: {e}")),
                )
            }
        };
        match request {
            MonitorRequest::Start => reply(stream, &self.start()),
            MonitorRequest::Signal { signal } => reply(stream, &self.signal(signal)),
            MonitorRequest::Wait => self.waiters.push(stream),
            MonitorRequest::Exec { args, timeout_ms } => self.exec(stream, args, timeout_ms),
            MonitorRequest::Attach {
                stdin,
                stdout,
                stderr,
            } => self.attach(stream, stdin, [stdout, stderr], rest),
            MonitorRequest::ExecStream {
                args,
                tty,
                stdin,
                stdout,
                stderr,
            } => self.exec_stream(
                stream,
                ExecStreamJob {
                    crun: self.engine.crun_exec(self.spec.process().as_ref()),
                    init_pid: self.init_pid,
                    spec: self.spec.clone(),
                    seccomp: self.seccomp.clone(),
                    args,
                    tty,
                    stdin,
                    stdout,
                    stderr,
                },
            ),
            MonitorRequest::ReopenLog => reply(
                stream,
                &match self.log.reopen() {
                    Ok(()) => MonitorReply::Ok,
                    Err(e) => MonitorReply::error(Fault::Internal, format!("reopen log: {e}")),
                },
            ),
        }
    }

    fn start(&mut self) -> MonitorReply {
        if self.exited.is_some() {
            return MonitorReply::error(Fault::State, "container has exited");
        }
        if self.status.started_at.is_some() {
            return MonitorReply::error(Fault::State, "container was already started");
        }
        if let Err((fault, message)) = self.engine.start(self.init_pid) {
            return MonitorReply::error(fault, format!("start: {message}"));
        }
        self.status.started_at = Some(now_nanos());
        if let Err(e) = write_status(&self.req.state_dir, &self.status) {
            return MonitorReply::error(Fault::Internal, format!("container started, but {e}"));
        }
        MonitorReply::Ok
    }

    fn signal(&mut self, signal: i32) -> MonitorReply {
        if !(1..=64).contains(&signal) {
            return MonitorReply::error(Fault::Invalid, format!("invalid signal {signal}"));
        }
        if self.exited.is_some() {
            // Stopping a container that already exited succeeds (CRI).
            return MonitorReply::Ok;
        }
        // The init is our child and not yet reaped, so its pid cannot have been reused.
        // SAFETY: plain kill(2).
        let rc = unsafe { libc::kill(self.init_pid.as_raw(), signal) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                return MonitorReply::error(
                    Fault::Internal,
                    format!("kill {}: {err}", self.init_pid),
                );
            }
        }
        if signal == libc::SIGKILL {
            // Also every other process of the cgroup (frozen first, so none can fork away):
            // a container sharing the pod's pid namespace does not die with its init.
            if let Err(message) = self
                .engine
                .kill_all(self.init_pid, self.cgroups_path.as_deref())
            {
                return MonitorReply::error(Fault::Internal, format!("kill all: {message}"));
            }
        }
        MonitorReply::Ok
    }

    /// Why an exec cannot run now, if it cannot.
    fn exec_refused(&self, args: &[String]) -> Option<MonitorReply> {
        if self.exited.is_some() {
            return Some(MonitorReply::error(Fault::State, "container has exited"));
        }
        if self.status.started_at.is_none() {
            return Some(MonitorReply::error(
                Fault::State,
                "container is not running",
            ));
        }
        if args.is_empty() {
            return Some(MonitorReply::error(Fault::Invalid, "empty command"));
        }
        None
    }

    fn exec_stream(&mut self, stream: UnixStream, job: ExecStreamJob) {
        if let Some(refusal) = self.exec_refused(&job.args) {
            return reply(stream, &refusal);
        }
        // SAFETY: the monitor is single-threaded.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                exit_now(exec_stream::run_exec_stream_child(stream, job))
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => self.exec_children.push(child),
            Err(e) => reply(
                stream,
                &MonitorReply::error(Fault::Internal, format!("fork exec: {e}")),
            ),
        }
    }

    fn exec(&mut self, stream: UnixStream, args: Vec<String>, timeout_ms: Option<u64>) {
        if let Some(refusal) = self.exec_refused(&args) {
            return reply(stream, &refusal);
        }
        let job = ExecJob {
            crun: self.engine.crun_exec(self.spec.process().as_ref()),
            init_pid: self.init_pid,
            spec: self.spec.clone(),
            seccomp: self.seccomp.clone(),
            args,
            timeout: timeout_ms.map(Duration::from_millis),
            max_output: self.req.exec_max_output,
        };
        // SAFETY: the monitor is single-threaded.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => exit_now(exec::run_exec_child(stream, job)),
            Ok(nix::unistd::ForkResult::Parent { child }) => self.exec_children.push(child),
            Err(e) => reply(
                stream,
                &MonitorReply::error(Fault::Internal, format!("fork exec: {e}")),
            ),
        }
    }

    /// A client joins the container's stdio: `Ok`, then attach frames (see attach.rs).
    fn attach(&mut self, mut stream: UnixStream, stdin: bool, wants: [bool; 2], rest: &[u8]) {
        if self.exited.is_some() {
            return reply(
                stream,
                &MonitorReply::error(Fault::State, "container has exited"),
            );
        }
        if self.status.started_at.is_none() {
            return reply(
                stream,
                &MonitorReply::error(Fault::State, "container is not running"),
            );
        }
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        if stream.write_all(&encode_line(&MonitorReply::Ok)).is_err() {
            return;
        }
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        // Output from before the attach is in the log, not replayed (as containerd).
        let feeds = stdin && self.req.stdin && self.input.is_some();
        let mut session = Session::new(stream, feeds, wants);
        let mut inputs = Vec::new();
        session.take(rest, &mut inputs);
        self.sessions.push(session);
        for input in inputs {
            self.apply_input(input);
        }
    }

    /// The init has exited: record how, clean up, answer the waiters.
    fn finish(mut self) -> i32 {
        let status = self.exited.take().unwrap_or(WaitStatus::StillAlive);
        let (exit_code, signal) = exit_code_of(&status).unwrap_or((255, None));
        let oom_killed = self
            .cgroups_path
            .as_deref()
            .and_then(oom_kill_count)
            .is_some_and(|n| n > 0);
        self.drain_output(Duration::ZERO);

        let mut problems = Vec::new();
        // Nothing of the container outlives its exit's answer: whatever is left in the
        // cgroup (exec'd processes, daemons of a container sharing a pid namespace) is
        // killed first, and again once the exec children are done when there were any (one
        // that raced the exit may have put a process in the cgroup meanwhile; the loop takes
        // no new request from here on).
        let execs_in_flight = !self.exec_children.is_empty();
        problems.extend(self.kill_what_is_left());
        let delete_late = self.engine.deletes_after_the_answer();
        if !delete_late {
            if let Err(message) = self.engine.delete(self.cgroups_path.as_deref()) {
                problems.push(format!("delete: {message}"));
            }
        }
        self.wait_exec_children();
        if execs_in_flight {
            problems.extend(self.kill_what_is_left());
        }
        self.drain_output(DRAIN_GRACE);
        for (i, s) in STREAMS.iter().enumerate() {
            let _ = self.log.close_stream(*s, chrono::Utc::now());
            self.streams[i] = None;
        }
        // Attached clients get the rest of the output and the end of the session.
        for s in std::mem::take(&mut self.sessions) {
            s.finish();
        }

        self.status.finished_at = Some(now_nanos());
        self.status.exit_code = Some(exit_code);
        self.status.signal = signal;
        self.status.oom_killed = oom_killed;
        if !problems.is_empty() {
            self.status.message = Some(problems.join("; "));
        }
        // Final status first, then the socket goes: a client that cannot connect any more
        // always finds the final status.
        let wrote = write_status(&self.req.state_dir, &self.status);
        let _ = fs::remove_file(self.req.state_dir.join(MONITOR_SOCKET));
        let answer = match wrote {
            Ok(()) => MonitorReply::Exited,
            Err(e) => MonitorReply::error(Fault::Internal, format!("container exited, but {e}")),
        };
        for w in std::mem::take(&mut self.waiters) {
            reply(w, &answer);
        }
        // Then what the exit left, after the answers: the cgroup's empty leaves (an rmdir
        // per hierarchy, ~0.5 ms on a cgroup v1 host) and the runtime's state. A failure
        // leaves an empty leaf, which RemoveContainer removes.
        if delete_late {
            let _ = self.engine.delete(self.cgroups_path.as_deref());
        }
        if let Some(cg) = self.cgroups_path.as_deref() {
            sweep_cgroup_leaf(cg);
        }
        0
    }

    /// SIGKILL to every process of the container's cgroup until none is left (the leaves
    /// stay); why not, if some outlived the deadline.
    fn kill_what_is_left(&self) -> Option<String> {
        let cg = self.cgroups_path.as_deref()?;
        kill_cgroup_procs(cg, KILL_DEADLINE)
            .err()
            .map(|message| format!("kill: {message}"))
    }

    /// Gives running exec children a moment to report (their processes were just killed),
    /// then kills and reaps the rest. Reaps any other exited child on the way.
    fn wait_exec_children(&mut self) {
        let deadline = Instant::now() + EXEC_GRACE;
        while !self.exec_children.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = poll_one(self.sigfd.as_raw_fd(), libc::POLLIN, Some(left));
            self.reap();
        }
        for pid in std::mem::take(&mut self.exec_children) {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        crate::monitor::process::reap_all_nonblocking(|_| {});
    }

    /// Copies what is left in the pipes into the log, waiting up to `grace` for EOF.
    fn drain_output(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        loop {
            // Budgeted like the loop's reads: a writer outside the container's cgroup that
            // keeps the pipe full must not hold the exit past the deadline.
            for i in 0..2 {
                self.read_output(i);
            }
            let open: Vec<RawFd> = self
                .streams
                .iter()
                .flatten()
                .map(|f| f.as_raw_fd())
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if open.is_empty() || left.is_zero() {
                return;
            }
            let mut fds: Vec<libc::pollfd> = open.iter().map(|&fd| pollin(fd)).collect();
            // SAFETY: valid pollfd array.
            unsafe {
                libc::poll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    left.as_millis().min(i32::MAX as u128) as i32,
                )
            };
        }
    }
}

/// How a turn of [`pump`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Pumped {
    /// The pipe is empty for now.
    Empty,
    /// The budget was used up; more may be waiting.
    Budget,
    /// Every writer closed the pipe.
    Eof,
    /// The pipe cannot be read (it is dropped).
    Failed,
}

/// Reads the non-blocking pipe `fd` through `buf` into `sink` until it is empty, reaches
/// EOF, or `budget` bytes were read.
fn pump(fd: RawFd, buf: &mut [u8], budget: usize, mut sink: impl FnMut(&[u8])) -> Pumped {
    let mut read = 0;
    while read < budget {
        let room = buf.len().min(budget - read);
        match nix::unistd::read(fd, &mut buf[..room]) {
            Ok(0) => return Pumped::Eof,
            Ok(n) => {
                sink(&buf[..n]);
                read += n;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => return Pumped::Empty,
            Err(_) => return Pumped::Failed,
        }
    }
    Pumped::Budget
}

fn pollin(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Writes one reply line and closes the connection. Replies are small; a client that does
/// not read them within a second loses them rather than stalling the monitor.
fn reply(mut stream: UnixStream, reply: &MonitorReply) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&encode_line(reply));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A pipe holding `fill` bytes of `y\n` (its capacity raised to hold them), read end
    /// non-blocking.
    fn full_pipe(fill: usize) -> (OwnedFd, OwnedFd) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        nix::fcntl::fcntl(
            w.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(fill as i32),
        )
        .unwrap();
        set_nonblocking(r.as_raw_fd(), true).unwrap();
        let data = b"y\n".repeat(fill / 2);
        assert_eq!(nix::unistd::write(w.as_fd(), &data).unwrap(), fill);
        (r, w)
    }

    #[test]
    fn a_full_pipe_is_read_up_to_the_budget_and_no_further() {
        let (r, _w) = full_pipe(1024 * 1024);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut got = 0;
        let pumped = pump(r.as_raw_fd(), &mut buf, OUTPUT_BUDGET, |d| got += d.len());
        assert_eq!((pumped, got), (Pumped::Budget, OUTPUT_BUDGET));
        // The rest is there for the next turns; then the pipe is empty, then at EOF.
        let mut turns = 1;
        while pump(r.as_raw_fd(), &mut buf, OUTPUT_BUDGET, |d| got += d.len()) == Pumped::Budget {
            turns += 1;
        }
        assert_eq!((got, turns), (1024 * 1024, 4));
        drop(_w);
        assert_eq!(
            pump(r.as_raw_fd(), &mut buf, OUTPUT_BUDGET, |_| {}),
            Pumped::Eof
        );
    }
}
