//! Building the container: with libcontainer or the crun binary, the monitor's socket, pipes,
//! CRI log and status file, each step's undo pushed onto the rollback.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::logs::CriLogWriter;
use crate::monitor::crun::Crun;
use crate::monitor::executor::CleanSignalsExecutor;
use crate::monitor::premount::{self, Premount};
use crate::monitor::process::now_nanos;
use crate::monitor::protocol::{CreateViewKind, Fault};
use crate::monitor::seccomp_bpf::ContainerFilter;
use crate::monitor::status::{write_status, ContainerStatusFile, STATUS_FILE};
use crate::monitor::zygote::{CreateRequest, RuntimeKind};
use crate::monitor::MONITOR_SOCKET;
use crate::rollback::Rollback;
use crate::store::atomic_write;

use super::cgroup::{is_cgroup2, make_v2_leaf, V2_ROOT};
use super::engine::Engine;
use super::remove_cgroup_leaf;
use super::stdio::{self, ChildStdio, ConsoleSocket, MonitorStdio};
use super::view::{pods_is_a_mount, CreateView};
use super::{error_chain, Failure};

/// What `create` made and the loop needs.
pub(super) struct Built {
    pub(super) engine: Engine,
    pub(super) init_pid: Pid,
    pub(super) spec: Spec,
    pub(super) stdio: MonitorStdio,
    pub(super) log: CriLogWriter,
    pub(super) listener: UnixListener,
    pub(super) status: ContainerStatusFile,
    pub(super) view: CreateViewKind,
    /// The mount namespace the create ran in, held until the create is reported
    /// (`CreateView::leave`).
    pub(super) view_ns: Option<OwnedFd>,
    /// The compiled seccomp filter the init loaded, for each exec to load too.
    pub(super) seccomp: Option<Arc<ContainerFilter>>,
}

/// Builds the container and everything the monitor serves it with; every step pushes its
/// undo onto `rb`. `template`: the zygote's create template, if it made one (view.rs).
pub(super) fn create(
    req: &CreateRequest,
    rb: &mut Rollback,
    template: Option<OwnedFd>,
) -> Result<Built, Failure> {
    let internal =
        |what: &str, e: &dyn std::fmt::Display| (Fault::Internal, format!("{what}: {e}"));
    crate::monitor::zygote::validate_id(&req.id).map_err(|e| (Fault::Invalid, e.to_string()))?;

    if !req.state_dir.exists() {
        fs::create_dir_all(&req.state_dir)
            .map_err(|e| internal(&format!("create state dir {}", req.state_dir.display()), &e))?;
        let dir = req.state_dir.clone();
        rb.push("state dir", move || {
            let _ = fs::remove_dir(&dir);
        });
    }

    let mut spec = load_spec(&req.bundle, &req.runtime)?;
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    if terminal != req.tty {
        return Err((
            Fault::Invalid,
            format!(
                "the request says tty {} but the spec's process.terminal is {terminal}",
                req.tty
            ),
        ));
    }
    let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());

    // Opened here (not by the writer) to learn whether this create made the file, once:
    // the writer takes the open file.
    let file = match &req.log {
        Some(target) => {
            let (file, created) = target
                .open_append()
                .map_err(|e| (log_fault(&e), format!("open log: {e}")))?;
            if created {
                let target = target.clone();
                rb.push("log file", move || {
                    let _ = target.remove();
                });
            }
            Some(file)
        }
        None => None,
    };
    let log = CriLogWriter::with_file(req.log.as_ref(), file, req.max_log_line_size);

    // A tty container's runtime sends the terminal's master on the console socket; the
    // container's own stdio is the terminal's slave.
    let (child, console, pipes) = match req.tty {
        true => (
            stdio::null_stdio()?,
            Some(ConsoleSocket::bind(&req.state_dir, rb)?),
            None,
        ),
        false => {
            let (child, kept) = stdio::pipes(req.stdin)?;
            (child, None, Some(kept))
        }
    };
    let console_path = console.as_ref().map(|c| c.path().to_owned());

    // The pod's files the monitor mounts itself (premount.rs), cloned while in the host's
    // namespace; those it cannot mount as libcontainer would go back into config.json.
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| req.bundle.join(r.path()))
        .unwrap_or_default();
    // The runtime sees a mount table without the other pods' mounts (view.rs), when the
    // pods dir is a mount of its own; premounts are made only there, never in the host's.
    let pods = match &req.pods_mount {
        Some(pods) => pods_is_a_mount(pods)
            .map_err(|e| (Fault::Internal, e))?
            .then_some(pods),
        None => None,
    };
    let own_namespace = pods.is_some();
    let (detached, back) = match req.runtime {
        RuntimeKind::Libcontainer if own_namespace => {
            let ipc = premount::namespace_path(&spec, LinuxNamespaceType::Ipc).flatten();
            premount::detach(req.premounts.clone(), &rootfs, ipc)
                .map_err(|e| (Fault::Internal, e))?
        }
        _ => (Vec::new(), req.premounts.clone()),
    };
    let still_out: Vec<usize> = detached.iter().map(premount::Detached::index).collect();
    give_back(&mut spec, &req.bundle, back, &still_out)?;

    let view = match pods {
        Some(pods) => {
            let dirs = crate::monitor::create_template::runtime_dirs(req);
            let view = CreateView::enter(pods, &spec, &req.bundle, template, &dirs)
                .map_err(|e| (Fault::Internal, e))?;
            premount::attach(detached, &rootfs).map_err(|e| (Fault::Internal, e))?;
            Some(view)
        }
        None => None,
    };
    let view_kind = view
        .as_ref()
        .map_or(CreateViewKind::Host, |v| v.kind().clone());
    let seccomp = match (&req.runtime, &req.seccomp) {
        (RuntimeKind::Libcontainer, Some(load)) => Some(Arc::new(
            ContainerFilter::read(&req.bundle, load).map_err(|e| (Fault::Internal, e))?,
        )),
        _ => None,
    };
    let created = match &req.runtime {
        RuntimeKind::Libcontainer => create_with_libcontainer(
            req,
            child,
            console_path,
            &cgroups_path,
            seccomp.as_ref(),
            rb,
        ),
        RuntimeKind::Crun { path, v1_view } => {
            let crun = Crun::new(path, &req.runtime_root, &req.id, *v1_view, &req.state_dir);
            create_with_crun(req, crun, child, console_path, &cgroups_path, rb)
        }
    };
    let view_ns = match view {
        Some(view) => view.leave().map_err(|e| (Fault::Internal, e))?,
        None => None,
    };
    let (engine, init_pid) = created?;
    // The spec the monitor keeps (for execs) has the capabilities the container asked for,
    // not those widened for the filter's load in the init.
    if let Some(caps) = seccomp.as_ref().and_then(|f| f.capabilities.clone()) {
        if let Some(process) = spec.process_mut() {
            process.set_capabilities(Some(*caps));
        }
    }
    let stdio = match (pipes, console) {
        (Some(pipes), _) => pipes,
        (None, Some(console)) => {
            let size = spec
                .process()
                .as_ref()
                .and_then(|p| p.console_size())
                .map(|b| {
                    (
                        b.width().min(u16::MAX as u64) as u16,
                        b.height().min(u16::MAX as u64) as u16,
                    )
                })
                .filter(|&(w, h)| w > 0 && h > 0);
            stdio::terminal(console.receive_master()?, req.stdin, size)?
        }
        (None, None) => return Err(internal("stdio", &"neither pipes nor a terminal")),
    };

    if let Engine::Libcontainer(_) = engine {
        // libcontainer 0.7 ignores bind mounts' propagation options (crun applies them).
        crate::monitor::propagation::apply(init_pid, &spec)
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
        stdio,
        log,
        listener,
        status,
        view: view_kind,
        view_ns,
        seccomp,
    })
}

/// libcontainer `build()`: the init is cloned by this process and waits for `start()`.
fn create_with_libcontainer(
    req: &CreateRequest,
    stdio: ChildStdio,
    console_socket: Option<PathBuf>,
    cgroups_path: &Option<PathBuf>,
    seccomp: Option<&Arc<ContainerFilter>>,
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

    // On a pure cgroup v2 host the leaf is made here, writing only the controllers still
    // to enable (cgroup.rs); libcontainer's manager then only moves its process into it.
    if let Some(cg) = cgroups_path {
        let root = Path::new(V2_ROOT);
        if is_cgroup2(root) {
            if let Err(e) = make_v2_leaf(root, cg) {
                tracing::debug!("cgroup {} left to libcontainer: {e}", cg.display());
            }
        }
    }
    let built = ContainerBuilder::new(req.id.clone(), SyscallType::default())
        .with_executor(CleanSignalsExecutor {
            seccomp: seccomp.cloned(),
        })
        .with_root_path(&req.runtime_root)
        .and_then(|b| b.validate_id())
        .map(|b| {
            b.with_stdin(stdio.stdin)
                .with_stdout(stdio.stdout)
                .with_stderr(stdio.stderr)
                .with_console_socket(console_socket)
                .as_init(&req.bundle)
                .with_systemd(false)
                .with_detach(true)
        })
        .and_then(|b| b.build());
    // libcontainer marks its caller non-dumpable (docs/libcontainer.md pitfall 3); a dumpable
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
    stdio: ChildStdio,
    console_socket: Option<PathBuf>,
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
    let init_pid = match crun.create(&req.bundle, stdio, console_socket.as_deref()) {
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
/// A log path that leads through a symlink or out of its directory is the request's
/// fault (`LogTarget` says so with `InvalidInput`); anything else (disk full,
/// permissions) is the host's.
fn log_fault(e: &std::io::Error) -> Fault {
    match e.kind() {
        std::io::ErrorKind::InvalidInput => Fault::Invalid,
        _ => Fault::Internal,
    }
}

/// config.json's bytes as a spec (what `Spec::load` does, from a slice).
fn parse_spec(bytes: &[u8]) -> serde_json::Result<Spec> {
    serde_json::from_slice(bytes)
}

/// What a spare (`monitor/spare.rs`) runs while it waits for its request: the first run,
/// in a freshly forked process, of code every create runs next — the spec's parse, the
/// status file's and the report's serialization — with nothing written anywhere. A
/// process's first pass through such code pays its page faults (the binary's pages, the
/// allocator's heap) on the create's path; here it pays them before the request comes.
pub(crate) fn rehearse() {
    if let Ok(json) = serde_json::to_vec(&Spec::default()) {
        let _ = std::hint::black_box(parse_spec(&json));
    }
    let status = ContainerStatusFile::created(0, 0, now_nanos());
    let _ = std::hint::black_box(serde_json::to_vec(&status));
    let _ = std::hint::black_box(crate::monitor::protocol::encode_frame(
        &crate::monitor::protocol::Report::Created {
            init_pid: 0,
            monitor_pid: 0,
            view: CreateViewKind::Host,
            spare: true,
        },
    ));
}

/// Puts premounts back into `spec` and into config.json, for the runtime to mount.
fn give_back(
    spec: &mut Spec,
    bundle: &Path,
    back: Vec<Premount>,
    still_out: &[usize],
) -> Result<(), Failure> {
    if back.is_empty() {
        return Ok(());
    }
    premount::give_back(spec, back, still_out);
    let bytes =
        serde_json::to_vec(spec).map_err(|e| (Fault::Internal, format!("serialize spec: {e}")))?;
    crate::store::replace_file(&bundle.join("config.json"), &bytes)
        .map_err(|e| (Fault::Internal, e.to_string()))
}

fn load_spec(bundle: &Path, runtime: &RuntimeKind) -> Result<Spec, Failure> {
    let path = bundle.join("config.json");
    let mut spec = fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| parse_spec(&bytes).map_err(|e| e.to_string()))
        .map_err(|e| (Fault::Internal, format!("load {}: {e}", path.display())))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_spec_reads_what_spec_load_reads() {
        let bundle = tempfile::tempdir().unwrap();
        let path = bundle.path().join("config.json");
        let json = crate::bench_api::SpecCase::typical().config_json().unwrap();
        fs::write(&path, &json).unwrap();
        let mut expected = Spec::load(&path).unwrap();
        assert!(expected.linux().as_ref().unwrap().seccomp().is_some());
        let ours = load_spec(
            bundle.path(),
            &RuntimeKind::Crun {
                path: "/usr/bin/crun".into(),
                v1_view: false,
            },
        )
        .unwrap();
        assert!(
            ours == expected,
            "crun's spec is read as Spec::load reads it"
        );
        // libcontainer would write the spec's oomScoreAdj into the monitor's own
        // /proc/self/oom_score_adj: the file loses it (the monitor writes the init's).
        let ours = load_spec(bundle.path(), &RuntimeKind::Libcontainer).unwrap();
        expected
            .process_mut()
            .as_mut()
            .unwrap()
            .set_oom_score_adj(None);
        assert!(ours == expected);
        assert!(Spec::load(&path).unwrap() == expected);
    }

    #[test]
    fn a_spec_that_does_not_parse_is_an_internal_failure_naming_the_file() {
        let bundle = tempfile::tempdir().unwrap();
        let (fault, message) = load_spec(bundle.path(), &RuntimeKind::Libcontainer).unwrap_err();
        assert_eq!(fault, Fault::Internal);
        assert!(message.contains("config.json"), "{message}");
        fs::write(bundle.path().join("config.json"), b"{\"ociVersion\": 1").unwrap();
        let (fault, message) = load_spec(bundle.path(), &RuntimeKind::Libcontainer).unwrap_err();
        assert_eq!(fault, Fault::Internal);
        assert!(message.contains("config.json"), "{message}");
    }
}
