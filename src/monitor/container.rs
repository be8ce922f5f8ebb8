//! The per-container monitor: creates the container with libcontainer (or the crun binary,
//! see `crun.rs`), then serves its socket, copies its output into the CRI log, reaps it and
//! records how it ended.
//!
//! Single-threaded for its whole life (libcontainer is unsafe otherwise, LIBCONTAINER.md
//! pitfall 1); one `poll(2)` loop over a signalfd (SIGCHLD), the stdout/stderr pipes, the
//! listening socket and the client connections.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::crun::{Crun, CrunExec};
use super::exec::{self, ExecJob};
use super::executor::CleanSignalsExecutor;
use super::oom::oom_kill_count;
use super::process::{
    clear_env, close_fds_except, exit_code_of, exit_now, ignore_sigpipe, kill_and_reap_children,
    now_nanos, poll_one, set_nonblocking, stdio_to_dev_null,
};
use super::protocol::{
    acknowledged, encode_line, write_frame, Fault, MonitorReply, MonitorRequest, Report,
    MAX_REQUEST_LINE,
};
use super::status::{write_status, ContainerStatusFile, STATUS_FILE};
use super::zygote::{CreateRequest, RuntimeKind};
use super::MONITOR_SOCKET;
use crate::logs::{CriLogWriter, Stream};
use crate::rollback::Rollback;
use crate::store::atomic_write;

/// After the init exited: how long exec children get to report before they are killed,
/// and how long the pipes get to reach EOF (processes outside the container's cgroup may
/// hold them open).
const EXEC_GRACE: Duration = Duration::from_secs(2);
const DRAIN_GRACE: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 64 * 1024;

type Failure = (Fault, String);

/// The monitor process's main: runs in the detached grandchild of the zygote, returns the
/// process's exit code.
pub(crate) fn run_monitor(req: CreateRequest, report: OwnedFd) -> i32 {
    close_fds_except(&[report.as_raw_fd()]);
    let _ = stdio_to_dev_null();
    clear_env();
    ignore_sigpipe();
    let _ = nix::unistd::chdir("/");
    let _ = nix::sys::prctl::set_name(c"proxrt-monitor");
    // Orphans of a container without its own pid namespace are re-parented here, not to
    // the host's init.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let mut report = UnixStream::from(report);

    // SIGCHLD is blocked before anything can exit so that no exit is lost; the signalfd
    // turns it into a readable fd for the poll loop.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let sigfd = mask
        .thread_block()
        .and_then(|_| SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC));
    let sigfd = match sigfd {
        Ok(s) => s,
        Err(e) => return fail(&mut report, (Fault::Internal, format!("signalfd: {e}"))),
    };

    let mut rollback = Rollback::new(format!("create container {}", req.id));
    let built = match create(&req, &mut rollback) {
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
        },
    );
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

fn fail(report: &mut UnixStream, (fault, message): Failure) -> i32 {
    let _ = write_frame(report, &Report::Failed { message, fault });
    1
}

/// What `create` made and the loop needs.
struct Built {
    engine: Engine,
    init_pid: Pid,
    spec: Spec,
    stdout: OwnedFd,
    stderr: OwnedFd,
    log: CriLogWriter,
    listener: UnixListener,
    status: ContainerStatusFile,
}

/// Builds the container and everything the monitor serves it with; every step pushes its
/// undo onto `rb`.
fn create(req: &CreateRequest, rb: &mut Rollback) -> Result<Built, Failure> {
    let internal =
        |what: &str, e: &dyn std::fmt::Display| (Fault::Internal, format!("{what}: {e}"));
    if req.tty {
        return Err((
            Fault::Invalid,
            "tty containers are not supported yet".into(),
        ));
    }
    super::zygote::validate_id(&req.id).map_err(|e| (Fault::Invalid, e.to_string()))?;

    if !req.state_dir.exists() {
        fs::create_dir_all(&req.state_dir)
            .map_err(|e| internal(&format!("create state dir {}", req.state_dir.display()), &e))?;
        let dir = req.state_dir.clone();
        rb.push("state dir", move || {
            let _ = fs::remove_dir(&dir);
        });
    }

    let spec = load_spec(&req.bundle, &req.runtime)?;
    let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());

    let log_existed = req.log_path.as_deref().is_some_and(Path::exists);
    let log = CriLogWriter::open(req.log_path.as_deref(), req.max_log_line_size)
        .map_err(|e| internal("open log", &e))?;
    if let (Some(path), false) = (req.log_path.clone(), log_existed) {
        rb.push("log file", move || {
            let _ = fs::remove_file(&path);
        });
    }

    let (stdout, stdout_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| internal("pipe", &e))?;
    let (stderr, stderr_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| internal("pipe", &e))?;
    let stdin = fs::File::open("/dev/null").map_err(|e| internal("open /dev/null", &e))?;

    let (engine, init_pid) = match &req.runtime {
        RuntimeKind::Libcontainer => {
            create_with_libcontainer(req, stdin, stdout_w, stderr_w, &cgroups_path, rb)?
        }
        RuntimeKind::Crun { path, v1_view } => {
            let crun = Crun::new(path, &req.runtime_root, &req.id, *v1_view, &req.state_dir);
            create_with_crun(req, crun, stdin, stdout_w, stderr_w, &cgroups_path, rb)?
        }
    };

    if let Engine::Libcontainer(_) = engine {
        // libcontainer 0.7 ignores bind mounts' propagation options (crun applies them).
        super::propagation::apply(init_pid, &spec)
            .map_err(|message| (Fault::Internal, format!("mount propagation: {message}")))?;
    }

    if let Some(adj) = req.oom_score_adj {
        fs::write(format!("/proc/{init_pid}/oom_score_adj"), adj.to_string())
            .map_err(|e| internal(&format!("set oom_score_adj {adj} of the init"), &e))?;
    }

    let sock_path = req.state_dir.join(MONITOR_SOCKET);
    let _ = fs::remove_file(&sock_path);
    // Bound only now, after build(): the init (cloned during build) must not inherit the
    // listener, or it would accept-queue clients after the monitor died.
    let listener = UnixListener::bind(&sock_path)
        .map_err(|e| internal(&format!("listen on {}", sock_path.display()), &e))?;
    {
        let sock_path = sock_path.clone();
        rb.push("monitor socket", move || {
            let _ = fs::remove_file(&sock_path);
        });
    }
    let _ = fs::set_permissions(&sock_path, fs::Permissions::from_mode(0o600));
    listener
        .set_nonblocking(true)
        .map_err(|e| internal("monitor socket", &e))?;

    let status =
        ContainerStatusFile::created(std::process::id() as i32, init_pid.as_raw(), now_nanos());
    write_status(&req.state_dir, &status).map_err(|e| internal("write status", &e))?;
    {
        let path = req.state_dir.join(STATUS_FILE);
        rb.push("status file", move || {
            let _ = fs::remove_file(&path);
        });
    }

    Ok(Built {
        engine,
        init_pid,
        spec,
        stdout,
        stderr,
        log,
        listener,
        status,
    })
}

/// libcontainer `build()`: the init is cloned by this process and waits for `start()`.
fn create_with_libcontainer(
    req: &CreateRequest,
    stdin: fs::File,
    stdout_w: OwnedFd,
    stderr_w: OwnedFd,
    cgroups_path: &Option<PathBuf>,
    rb: &mut Rollback,
) -> Result<(Engine, Pid), Failure> {
    fs::create_dir_all(&req.runtime_root).map_err(|e| {
        (
            Fault::Internal,
            format!("create {}: {e}", req.runtime_root.display()),
        )
    })?;
    let container_dir = req.runtime_root.join(&req.id);
    if container_dir.exists() {
        return Err((
            Fault::State,
            format!(
                "libcontainer state {} already exists",
                container_dir.display()
            ),
        ));
    }

    let built = ContainerBuilder::new(req.id.clone(), SyscallType::default())
        .with_executor(CleanSignalsExecutor)
        .with_root_path(&req.runtime_root)
        .and_then(|b| b.validate_id())
        .map(|b| {
            b.with_stdin(stdin)
                .with_stdout(stdout_w)
                .with_stderr(stderr_w)
                .as_init(&req.bundle)
                .with_systemd(false)
                .with_detach(true)
        })
        .and_then(|b| b.build());
    // libcontainer marks its caller non-dumpable (LIBCONTAINER.md pitfall 3); a dumpable
    // monitor keeps /proc/<monitor> readable for the daemon and debuggers.
    let _ = nix::sys::prctl::set_dumpable(true);
    let container = match built {
        Ok(c) => c,
        Err(e) => {
            // libcontainer removes the cgroup and its state dir itself when the failure
            // came from cloning the init; failures before that (a bad spec, a state save)
            // leave the dir behind.
            let _ = fs::remove_dir_all(&container_dir);
            if let Some(cg) = &cgroups_path {
                remove_cgroup_leaf(cg);
            }
            return Err((Fault::Internal, error_chain(&e)));
        }
    };
    let init_pid = container.pid();
    {
        let mut container = container.clone();
        let cgroups_path = cgroups_path.clone();
        rb.push("container", move || {
            if let Some(pid) = init_pid {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
            }
            if container.delete(true).is_err() {
                let _ = fs::remove_dir_all(container.root.as_path());
            }
            if let Some(cg) = &cgroups_path {
                remove_cgroup_leaf(cg);
            }
        });
    }
    let init_pid = init_pid.ok_or_else(|| {
        (
            Fault::Internal,
            "libcontainer reported no init pid".to_string(),
        )
    })?;
    Ok((Engine::Libcontainer(container), init_pid))
}

/// `crun create`: crun clones the init, which waits for `crun start`; once crun has exited
/// the init is this (subreaper) monitor's child.
fn create_with_crun(
    req: &CreateRequest,
    crun: Crun,
    stdin: fs::File,
    stdout_w: OwnedFd,
    stderr_w: OwnedFd,
    cgroups_path: &Option<PathBuf>,
    rb: &mut Rollback,
) -> Result<(Engine, Pid), Failure> {
    let state = crun.state_path();
    if let Some(root) = state.parent() {
        fs::create_dir_all(root)
            .map_err(|e| (Fault::Internal, format!("create {}: {e}", root.display())))?;
    }
    if state.exists() {
        return Err((
            Fault::State,
            format!("crun state {} already exists", state.display()),
        ));
    }
    let undo = {
        let crun = crun.clone();
        let cgroups_path = cgroups_path.clone();
        move |init: Option<Pid>| {
            if let Some(pid) = init {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
            }
            if crun.delete().is_err() {
                let _ = fs::remove_dir_all(crun.state_path());
            }
            crun.remove_files();
            if let Some(cg) = &cgroups_path {
                remove_cgroup_leaf(cg);
            }
        }
    };
    let init_pid = match crun.create(&req.bundle, stdin, stdout_w, stderr_w) {
        Ok(pid) => pid,
        Err(message) => {
            undo(None);
            return Err((Fault::Internal, message));
        }
    };
    rb.push("container", move || undo(Some(init_pid)));
    Ok((Engine::Crun(crun), init_pid))
}

/// Loads the bundle's spec. For libcontainer a `process.oomScoreAdj` is removed from
/// config.json (the daemon's libcontainer engine already does; this is the safety net):
/// libcontainer writes it into its caller's own /proc/self/oom_score_adj
/// (docs/libcontainer.md); the monitor sets the init's instead, from the request. crun
/// applies the spec's value itself.
fn load_spec(bundle: &Path, runtime: &RuntimeKind) -> Result<Spec, Failure> {
    let path = bundle.join("config.json");
    let mut spec = Spec::load(&path).map_err(|e| {
        (
            Fault::Internal,
            format!("load {}: {}", path.display(), error_chain(&e)),
        )
    })?;
    if spec.process().as_ref().and_then(|p| p.terminal()) == Some(true) {
        return Err((
            Fault::Invalid,
            "tty containers are not supported yet".into(),
        ));
    }
    let has_adj = *runtime == RuntimeKind::Libcontainer
        && spec
            .process()
            .as_ref()
            .and_then(|p| p.oom_score_adj())
            .is_some();
    if has_adj {
        if let Some(p) = spec.process_mut().as_mut() {
            p.set_oom_score_adj(None);
        }
        let bytes = serde_json::to_vec(&spec)
            .map_err(|e| (Fault::Internal, format!("serialize spec: {e}")))?;
        atomic_write(&path, &bytes).map_err(|e| (Fault::Internal, e.to_string()))?;
    }
    Ok(spec)
}

/// Removes the container's (empty) leaf cgroup in every hierarchy: the safety net for a
/// failed build or delete. rmdir never removes a cgroup that still has processes.
pub(crate) fn remove_cgroup_leaf(cgroups_path: &Path) {
    let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    if rel.as_os_str().is_empty() {
        return;
    }
    for root in cgroup_roots() {
        let leaf = root.join(rel);
        if leaf.is_dir() {
            let _ = fs::remove_dir(&leaf);
        }
    }
}

/// An exec that raced the container's exit can re-create the leaf cgroup after the
/// engine's delete removed it (the cgroup manager's add_task creates the directory) and
/// leave a process in it: once no exec child is left, kill whatever is in the leaf, reap
/// what is ours, and remove it again.
fn sweep_cgroup_leaf(cgroups_path: &Path) {
    let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    if rel.as_os_str().is_empty() {
        return;
    }
    let leaves: Vec<PathBuf> = cgroup_roots()
        .into_iter()
        .map(|root| root.join(rel))
        .filter(|leaf| leaf.is_dir())
        .collect();
    if leaves.is_empty() {
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let mut left = false;
        for leaf in &leaves {
            if !leaf.is_dir() {
                continue;
            }
            let procs = fs::read_to_string(leaf.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            super::process::reap_all_nonblocking(|_| {});
            if fs::remove_dir(leaf).is_err() {
                left = true;
            }
        }
        if !left || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every cgroup hierarchy's root: `/sys/fs/cgroup` (cgroup v2) and each v1 controller
/// mount below it.
fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    roots
}

pub(crate) use crate::error::error_chain;

/// What created the container, and is asked to start, kill and delete it.
enum Engine {
    Libcontainer(Container),
    Crun(Crun),
}

impl Engine {
    /// Lets the created init run the container's process.
    fn start(&mut self, init_pid: Pid) -> Result<(), Failure> {
        match self {
            Engine::Libcontainer(c) => c.start().map_err(|e| {
                // IncorrectStatus: the init died before it was started (killed, OOM).
                let fault = match e {
                    libcontainer::error::LibcontainerError::IncorrectStatus(_) => Fault::State,
                    _ => Fault::Internal,
                };
                (fault, error_chain(&e))
            }),
            Engine::Crun(c) => c.start().map_err(|message| {
                let fault = match super::process::has_exited(init_pid.as_raw()) {
                    true => Fault::State,
                    false => Fault::Internal,
                };
                (fault, message)
            }),
        }
    }

    /// SIGKILL to every process of the container's cgroup (frozen first by libcontainer).
    fn kill_all(&mut self, init_pid: Pid) -> Result<(), String> {
        match self {
            Engine::Libcontainer(c) => c.kill(Signal::SIGKILL, true).map_err(|e| error_chain(&e)),
            // crun refuses to signal a container whose init has just exited (not reaped
            // yet): what is left in the cgroup then goes with `delete -f` in `finish`.
            Engine::Crun(c) => match c.kill_all(libc::SIGKILL) {
                Err(_) if super::process::has_exited(init_pid.as_raw()) => Ok(()),
                other => other,
            },
        }
    }

    /// After the init was reaped: kills what is left in the cgroup, removes the cgroup and
    /// the runtime's state. On failure the state dir and the leaf cgroup are removed anyway.
    fn delete(&mut self, cgroups_path: Option<&Path>) -> Result<(), String> {
        let result = match self {
            Engine::Libcontainer(c) => c.delete(true).map_err(|e| {
                let _ = fs::remove_dir_all(c.root.as_path());
                error_chain(&e)
            }),
            Engine::Crun(c) => {
                let deleted = c.delete().inspect_err(|_| {
                    let _ = fs::remove_dir_all(c.state_path());
                });
                c.remove_files();
                deleted
            }
        };
        if result.is_err() {
            if let Some(cg) = cgroups_path {
                remove_cgroup_leaf(cg);
            }
        }
        result
    }

    /// How an exec child reaches the container through crun (None: libcontainer).
    fn crun_exec(&self, process: Option<&oci_spec::runtime::Process>) -> Option<CrunExec> {
        match self {
            Engine::Libcontainer(_) => None,
            Engine::Crun(c) => Some(CrunExec {
                crun: c.clone(),
                process: process.cloned().unwrap_or_default(),
            }),
        }
    }
}

/// A client connection whose request line is not complete yet.
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

struct Monitor {
    req: CreateRequest,
    engine: Engine,
    init_pid: Pid,
    spec: Spec,
    cgroups_path: Option<PathBuf>,
    sigfd: SignalFd,
    listener: UnixListener,
    /// stdout and stderr read ends; None after EOF.
    streams: [Option<OwnedFd>; 2],
    log: CriLogWriter,
    conns: Vec<Conn>,
    waiters: Vec<UnixStream>,
    exec_children: Vec<Pid>,
    status: ContainerStatusFile,
    exited: Option<WaitStatus>,
    /// Scratch buffer for the output pipes.
    buf: Vec<u8>,
}

const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

#[derive(Clone, Copy)]
enum Source {
    Signals,
    Listener,
    Output(usize),
    Conn(usize),
    Waiter(usize),
}

impl Monitor {
    fn new(req: CreateRequest, built: Built, sigfd: SignalFd) -> Monitor {
        for fd in [&built.stdout, &built.stderr] {
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
            cgroups_path,
            sigfd,
            listener: built.listener,
            streams: [Some(built.stdout), Some(built.stderr)],
            log: built.log,
            conns: Vec::new(),
            waiters: Vec::new(),
            exec_children: Vec::new(),
            status: built.status,
            exited: None,
            buf: vec![0u8; READ_CHUNK],
        }
    }

    fn run(mut self) -> i32 {
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
                }
            }
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
        super::process::reap_all_nonblocking(|status| match status.pid() {
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

    /// Copies what is available on one output pipe into the log.
    fn read_output(&mut self, i: usize) {
        while self.read_output_once(i) {}
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
            let line = conn.buf[..nl].to_vec();
            self.handle(conn.stream, &line);
        } else if closed || conn.buf.len() > MAX_REQUEST_LINE {
            self.conns.swap_remove(i);
        }
    }

    fn handle(&mut self, stream: UnixStream, line: &[u8]) {
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
            if let Err(message) = self.engine.kill_all(self.init_pid) {
                return MonitorReply::error(Fault::Internal, format!("kill all: {message}"));
            }
        }
        MonitorReply::Ok
    }

    fn exec(&mut self, stream: UnixStream, args: Vec<String>, timeout_ms: Option<u64>) {
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
        if args.is_empty() {
            return reply(
                stream,
                &MonitorReply::error(Fault::Invalid, "empty command"),
            );
        }
        let job = ExecJob {
            crun: self.engine.crun_exec(self.spec.process().as_ref()),
            init_pid: self.init_pid,
            spec: self.spec.clone(),
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
        // Kills whatever is left in the cgroup (exec'd processes, daemons of a container
        // sharing a pid namespace), removes the cgroup and the runtime's state.
        if let Err(message) = self.engine.delete(self.cgroups_path.as_deref()) {
            problems.push(format!("delete: {message}"));
        }
        self.wait_exec_children();
        if let Some(cg) = self.cgroups_path.as_deref() {
            sweep_cgroup_leaf(cg);
        }
        self.drain_output(DRAIN_GRACE);
        for (i, s) in STREAMS.iter().enumerate() {
            let _ = self.log.close_stream(*s, chrono::Utc::now());
            self.streams[i] = None;
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
        0
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
        super::process::reap_all_nonblocking(|_| {});
    }

    /// Copies what is left in the pipes into the log, waiting up to `grace` for EOF.
    fn drain_output(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        loop {
            for i in 0..2 {
                while self.streams[i].is_some() && self.read_output_once(i) {}
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

    /// One read; true when more may be available right away.
    fn read_output_once(&mut self, i: usize) -> bool {
        let Some(fd) = &self.streams[i] else {
            return false;
        };
        match nix::unistd::read(fd.as_raw_fd(), &mut self.buf) {
            Ok(0) => {
                let _ = self.log.close_stream(STREAMS[i], chrono::Utc::now());
                self.streams[i] = None;
                false
            }
            Ok(n) => {
                let _ = self
                    .log
                    .write_chunk(STREAMS[i], &self.buf[..n], chrono::Utc::now());
                true
            }
            Err(nix::errno::Errno::EINTR) => true,
            Err(nix::errno::Errno::EAGAIN) => false,
            Err(_) => {
                self.streams[i] = None;
                false
            }
        }
    }
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
