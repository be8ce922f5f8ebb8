//! `proxrt serve`: the daemon's state and its life on a unix socket.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::admin::admin_server::AdminServer;
use crate::authority::AuthorityRewrite;
use crate::backend::Backends;
use crate::config::Config;
use crate::container::{ContainerStore, Phase};
use crate::context::Ctx;
use crate::cri::{AdminApi, ImageApi, RuntimeApi};
use crate::events::Events;
use crate::image::{ImageError, Images};
use crate::metrics::{MetricsError, RpcMetricsLayer, StateSource};
use crate::monitor::Zygote;
use crate::names::NameRegistry;
use crate::network::Network;
use crate::notify::Notifier;
use crate::sandbox::SandboxStore;
use crate::select::Selector;
use crate::spec::HostView;
use crate::stats::StatsReader;
use crate::streaming::{Streaming, StreamingError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("another proxrt daemon is serving on {socket}; stop it first (or give this one another --socket)")]
    SocketInUse { socket: PathBuf },
    #[error("state root {root} is in use by another proxrt daemon{holder}; two daemons must not share a root")]
    RootInUse { root: PathBuf, holder: String },
    #[error("socket group {0:?} does not exist")]
    NoSuchGroup(String),
    #[error(transparent)]
    Images(#[from] ImageError),
    #[error("recover state: {0}")]
    Recover(String),
    #[error("config: key `{0}`: {1}")]
    Config(String, String),
    #[error("gRPC server: {0}")]
    Server(String),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Streaming(#[from] StreamingError),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let context = context.into();
    move |source| DaemonError::Io { context, source }
}

/// What the daemon holds for its whole life; shared by every RPC.
pub struct Daemon {
    config: Config,
    images: Arc<Images>,
    zygote: Arc<Zygote>,
    sandboxes: Arc<SandboxStore>,
    containers: Arc<ContainerStore>,
    /// Lifecycle events for GetContainerEvents, published by both stores.
    events: Events,
    names: Arc<NameRegistry>,
    backends: Backends,
    /// CNI: NetworkReady, the pod CIDR; the host backends hold the same one.
    network: Arc<Network>,
    selector: Selector,
    host: HostView,
    stats: StatsReader,
    /// Where `/metrics` is served, once bound (`[metrics] address` may ask for port 0).
    metrics_address: OnceLock<SocketAddr>,
    /// Exec/Attach/PortForward URLs: the pending tokens and the server's address.
    streaming: Streaming,
}

/// Why a runtime condition is false: (reason, message). `None` means healthy.
pub struct Health {
    pub runtime: Option<(String, String)>,
    pub network: Option<(String, String)>,
}

impl Daemon {
    /// Opens every store under the state root and recovers what a crash or restart left:
    /// names are reserved again, running containers are watched again.
    pub fn open(config: Config, zygote: Zygote) -> Result<Arc<Daemon>, DaemonError> {
        let root = config.daemon.root.clone();
        let images = Arc::new(Images::open(&root, &config)?);
        let events = Events::default();
        let sandboxes = Arc::new(
            SandboxStore::load(&root.join("sandboxes"), events.clone())
                .map_err(|e| DaemonError::Recover(e.to_string()))?,
        );
        let containers = Arc::new(
            ContainerStore::load(&root.join("containers"), events.clone())
                .map_err(|e| DaemonError::Recover(e.to_string()))?,
        );
        events.set_stores(&sandboxes, &containers);
        let zygote = Arc::new(zygote);
        let network = Arc::new(Network::new(&config.cni));
        let backends = Backends::probe(&config, Some(zygote.clone()), network.clone());
        backends.log_unavailable();
        let selector =
            Selector::new(&config).map_err(|(key, message)| DaemonError::Config(key, message))?;
        let users: Arc<dyn crate::image::ImageUsers> = containers.clone();
        images.set_users(Arc::downgrade(&users));
        // Only now: the collection must know which images the loaded containers use.
        images.collect_garbage_at_start()?;
        let names = Arc::new(NameRegistry::default());
        for s in sandboxes.all() {
            let r = s.record();
            if let Err(e) = names.reserve(&r.name, &r.id) {
                tracing::warn!(error = %e, "sandbox name clash on recovery");
            }
        }
        for c in containers.all() {
            if let Err(e) = names.reserve(&c.record.name, &c.id) {
                tracing::warn!(error = %e, "container name clash on recovery");
            }
        }
        Ok(Arc::new(Daemon {
            streaming: Streaming::new(std::time::Duration::from_secs(
                config.streaming.idle_timeout_secs,
            )),
            config,
            images,
            zygote,
            sandboxes,
            containers,
            events,
            names,
            backends,
            network,
            selector,
            host: probe_host(),
            stats: StatsReader::probe(),
            metrics_address: OnceLock::new(),
        }))
    }

    /// Re-attaches to containers that kept running while the daemon was down, and marks
    /// sandboxes whose namespaces are gone (host reboot, holder killed) NotReady.
    pub fn watch_running(&self) {
        for s in self.sandboxes.all() {
            let r = s.record();
            let backend = self.backends.get(&r.backend);
            let alive = backend.as_ref().is_ok_and(|b| b.pod_alive(&r));
            if let (Ok(backend), true) = (&backend, alive) {
                crate::sandbox::watch_pod(backend, s.clone(), self.sandboxes.dir().to_owned());
            }
            if r.state == crate::sandbox::SandboxState::Ready && !alive {
                tracing::warn!(sandbox = %r.id, "pod namespaces are gone; marking the sandbox NotReady");
                if let Err(e) = s.update(self.sandboxes.dir(), |r| {
                    r.state = crate::sandbox::SandboxState::NotReady;
                    r.holder_pid = None;
                }) {
                    tracing::warn!(sandbox = %r.id, error = %e, "update sandbox record");
                }
            }
        }
        for c in self.containers.all() {
            let snap = c.refresh();
            let Ok(backend) = self.backends.get(&c.record.backend) else {
                continue;
            };
            match snap.phase() {
                Phase::Running | Phase::Created if backend.is_alive(&c.record.run_dir) => {
                    crate::container::watch_exit(backend, c.clone());
                }
                // Unknown: no status at all, its run dir is gone (a host reboot, a daemon
                // killed in RemoveContainer): nothing of it runs.
                Phase::Running | Phase::Created | Phase::Unknown => {
                    tracing::warn!(container = %c.id, "monitor gone without a final status; marking exited");
                    c.mark_lost();
                }
                _ => {}
            }
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn images(&self) -> &Arc<Images> {
        &self.images
    }

    pub fn zygote(&self) -> &Zygote {
        &self.zygote
    }

    pub fn sandboxes(&self) -> &SandboxStore {
        &self.sandboxes
    }

    pub fn containers(&self) -> &ContainerStore {
        &self.containers
    }

    /// Where GetContainerEvents subscribes.
    pub fn events(&self) -> &Events {
        &self.events
    }

    pub fn names(&self) -> &NameRegistry {
        &self.names
    }

    pub fn host(&self) -> &HostView {
        &self.host
    }

    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The stats RPCs' reader: this host's cgroup layout and the previous CPU readings.
    pub fn stats(&self) -> &StatsReader {
        &self.stats
    }

    /// The streaming server's tokens and address (Exec, Attach, PortForward).
    pub fn streaming(&self) -> &Streaming {
        &self.streaming
    }

    /// What the pod and container operations use of the daemon.
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            sandboxes: &self.sandboxes,
            containers: &self.containers,
            names: &self.names,
            images: &self.images,
            backends: &self.backends,
            selector: &self.selector,
            host: &self.host,
            run_dir: &self.config.daemon.run_dir,
        }
    }

    pub fn health(&self) -> Health {
        let default_backend = &self.config.runtime.default_backend;
        let runtime = if !self.zygote.is_alive() {
            Some((
                "ZygoteDead".to_owned(),
                "the process that creates containers exited; restart proxrt".to_owned(),
            ))
        } else {
            self.backends.why_unavailable(default_backend).map(|why| {
                (
                    "DefaultBackendUnavailable".to_owned(),
                    format!("the default backend {default_backend} cannot create containers here: {why}"),
                )
            })
        };
        Health {
            runtime,
            network: self.network.not_ready(),
        }
    }

    /// Where Prometheus metrics are served, for Status verbose info (`proxrt info`).
    pub fn metrics_url(&self) -> String {
        match self.metrics_address.get() {
            Some(a) => format!("http://{a}/metrics"),
            None => "off ([metrics] address is empty)".to_owned(),
        }
    }

    /// The effective configuration, for Status verbose info.
    pub fn config_json(&self) -> String {
        serde_json::to_string(&self.config).unwrap_or_default()
    }
}

/// The daemon's umask: whatever it creates is its own unless it says otherwise
/// (issue 12, item 2; files containers or kubelet read get explicit modes).
const DAEMON_UMASK: u32 = 0o077;
/// The state root and the trees under it and under the run dir: an unprivileged host user
/// must not reach unpacked layers (setuid binaries, device nodes, private images' files:
/// CVE-2021-41103 in containerd), container upper dirs, or pod files.
const PRIVATE_DIR_MODE: u32 = 0o700;
/// The run dir itself stays traversable: the CRI socket in it is 0660 for its group.
const RUN_DIR_MODE: u32 = 0o711;

/// Gives the state root's and the run dir's trees [`PRIVATE_DIR_MODE`], also when an
/// older daemon made them 0755: `images/`, `containers/`, `sandboxes/` under the root,
/// `c/`, `s/` and the runtimes' state under the run dir.
fn make_state_dirs_private(config: &Config) -> Result<(), DaemonError> {
    let (root, run) = (&config.daemon.root, &config.daemon.run_dir);
    create_missing_dir(run, RUN_DIR_MODE)?;
    let private = ["images", "containers", "sandboxes"]
        .iter()
        .map(|d| root.join(d))
        .chain(
            ["c", "s", "libcontainer", "crun"]
                .iter()
                .map(|d| run.join(d)),
        );
    for dir in private {
        crate::store::ensure_dir_mode(&dir, PRIVATE_DIR_MODE)
            .map_err(io_err(format!("create {}", dir.display())))?;
    }
    Ok(())
}

/// The pods dir as a mount of its own while the daemon runs, so that a container is
/// created in a mount namespace without the other pods' mounts (`monitor::container::view`:
/// the mount table every create reads and copies stays the size of an idle host's). Not
/// possible (pods of an older daemon below it, a kernel before 5.8, no privilege for
/// mounts): containers are created in the host's namespace as before, which only costs
/// time. Dropped when the daemon stops or fails to start: unmounted unless pods are left,
/// which the next daemon finds with it.
struct PodsMount(PathBuf);

impl PodsMount {
    fn make(run_dir: &Path) -> PodsMount {
        let dir = crate::sandbox::SandboxPaths::pods_dir(run_dir);
        match crate::mounts::make_own_mount(&dir) {
            Ok(true) => {}
            Ok(false) => tracing::info!(
                dir = %dir.display(),
                "pods dir not made a mount of its own (mounts already below it, or a kernel \
                 that does not mark mount roots): containers are created in the host's mount \
                 namespace"
            ),
            Err(e) => tracing::warn!(
                dir = %dir.display(), error = %e,
                "pods dir not made a mount of its own: containers are created in the host's \
                 mount namespace"
            ),
        }
        PodsMount(dir)
    }
}

impl Drop for PodsMount {
    fn drop(&mut self) {
        if let Err(e) = crate::mounts::release_own_mount(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "pods dir left mounted");
        }
    }
}

/// Creates `dir` with exactly `mode` when it is missing; an existing one is left as it
/// is (it may be a directory proxrt does not own, like `/run` for `/run/proxrt.sock`).
fn create_missing_dir(dir: &Path, mode: u32) -> Result<(), DaemonError> {
    if dir.is_dir() {
        return Ok(());
    }
    crate::store::ensure_dir_mode(dir, mode).map_err(io_err(format!("create {}", dir.display())))
}

/// Holds the state root's lock for the daemon's lifetime.
pub struct RootLock(#[allow(dead_code)] File);

/// Takes the state root: refuses when another daemon holds it.
pub fn lock_root(root: &Path) -> Result<RootLock, DaemonError> {
    crate::store::ensure_dir_mode(root, PRIVATE_DIR_MODE)
        .map_err(io_err(format!("create state root {}", root.display())))?;
    let path = root.join("proxrt.lock");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(format!("open {}", path.display())))?;
    use std::os::fd::AsRawFd;
    // flock(2) on the open file: released by the kernel when the daemon dies, so a
    // kill -9 never leaves a stale lock behind.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = fs::read_to_string(&path)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .map(|pid| format!(" (pid {pid})"))
            .unwrap_or_default();
        return Err(DaemonError::RootInUse {
            root: root.to_owned(),
            holder,
        });
    }
    file.set_len(0)
        .map_err(io_err(format!("truncate {}", path.display())))?;
    use std::io::Write as _;
    (&file)
        .write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(io_err(format!("write {}", path.display())))?;
    Ok(RootLock(file))
}

/// Binds the CRI socket: a stale file is replaced, a live daemon makes us refuse.
pub fn bind_socket(config: &Config) -> Result<UnixListener, DaemonError> {
    let path = &config.daemon.socket;
    if let Some(dir) = path.parent() {
        create_missing_dir(dir, RUN_DIR_MODE)?;
    }
    if fs::symlink_metadata(path).is_ok() {
        if StdUnixStream::connect(path).is_ok() {
            return Err(DaemonError::SocketInUse {
                socket: path.clone(),
            });
        }
        tracing::info!(socket = %path.display(), "replacing stale socket");
        fs::remove_file(path).map_err(io_err(format!("remove stale socket {}", path.display())))?;
    }
    let listener = UnixListener::bind(path).map_err(io_err(format!("bind {}", path.display())))?;
    let mode = config.daemon.socket_mode().unwrap_or(0o660);
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", path.display())))?;
    if !config.daemon.socket_group.is_empty() {
        let group = nix::unistd::Group::from_name(&config.daemon.socket_group)
            .ok()
            .flatten()
            .ok_or_else(|| DaemonError::NoSuchGroup(config.daemon.socket_group.clone()))?;
        nix::unistd::chown(path, None, Some(group.gid))
            .map_err(|e| io_err(format!("chown {}", path.display()))(e.into()))?;
    }
    Ok(listener)
}

/// How long in-flight RPCs may run after SIGTERM before the daemon exits anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the daemon until SIGTERM or SIGINT, then drains in-flight RPCs and removes
/// the socket. Containers keep running: they belong to their monitors.
pub async fn serve(config: Config, zygote: Zygote, notifier: Notifier) -> Result<(), DaemonError> {
    // Only this process: the zygote (forked before) keeps the umask proxrt was started
    // with, so monitors, containers and exec'd processes see the usual one.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(DAEMON_UMASK));
    let _lock = lock_root(&config.daemon.root)?;
    make_state_dirs_private(&config)?;
    // Released when serve returns, also when startup fails after this line.
    let _pods_mount = PodsMount::make(&config.daemon.run_dir);
    // Before the CRI socket: a port in use stops startup without leaving a socket file.
    let metrics_listener = match config.metrics.socket_addr() {
        Ok(Some(address)) => Some(crate::metrics::bind(address).await?),
        Ok(None) => None,
        Err(message) => return Err(DaemonError::Config("metrics.address".into(), message)),
    };
    let streaming_address = config
        .streaming
        .socket_addr()
        .map_err(|message| DaemonError::Config("streaming.address".into(), message))?;
    let streaming_listener = crate::streaming::server::bind(streaming_address).await?;
    // The handlers are installed before the socket exists: a client that got an answer
    // may stop the daemon at once, and SIGTERM's default action would kill it uncleanly.
    let signals = ShutdownSignals::install()?;
    let listener = bind_socket(&config)?;
    let socket = config.daemon.socket.clone();
    let daemon = Daemon::open(config, zygote)?;
    // Before anything is served or watched: what a killed daemon left half made.
    crate::intent::finish_half_made(&daemon.ctx()).await;
    daemon.watch_running();
    {
        let d = daemon.clone();
        tokio::spawn(async move { d.backends().reconcile().await });
    }
    if let Some(listener) = metrics_listener {
        let address = listener
            .local_addr()
            .map_err(io_err("metrics endpoint address"))?;
        let _ = daemon.metrics_address.set(address);
        let registry = crate::metrics::registry(Box::new(DaemonState(daemon.clone())));
        tokio::spawn(crate::metrics::serve(listener, registry));
        tracing::info!(url = %daemon.metrics_url(), "serving metrics");
    }
    let streaming_address = streaming_listener
        .local_addr()
        .map_err(io_err("streaming server address"))?;
    daemon.streaming().listening_on(streaming_address);
    tokio::spawn(crate::streaming::server::serve(
        streaming_listener,
        daemon.clone(),
    ));
    tracing::info!(address = %streaming_address, "streaming server listening");
    tracing::info!(socket = %socket.display(), version = env!("CARGO_PKG_VERSION"), "proxrt serving");

    const MAX_MESSAGE: usize = 64 * 1024 * 1024;
    let runtime = RuntimeServiceServer::new(RuntimeApi(daemon.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let runtime = crate::cri::EncodedList::new(runtime, daemon.clone(), MAX_MESSAGE);
    let images = ImageServiceServer::new(ImageApi(daemon.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let admin = AdminServer::new(AdminApi(daemon.clone()));
    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = stopping.clone();
    let events = daemon.events().clone();
    // The connections are already accepted into the listener's backlog from here on.
    notifier.ready(&format!("serving CRI on {}", socket.display()));
    let server = tonic::transport::Server::builder()
        .layer(RpcMetricsLayer)
        .add_service(runtime)
        .add_service(images)
        .add_service(admin)
        .serve_with_incoming_shutdown(lenient_authority(listener), async move {
            signals.received().await;
            notifier.stopping();
            // Event streams never end by themselves: end them, or they hold up the
            // graceful shutdown until its grace runs out.
            events.close();
            notify.notify_one();
        });
    // In-flight RPCs get a grace period; a stuck one (a pull from a dead registry)
    // must not keep the daemon from stopping.
    let result = tokio::select! {
        r = server => r,
        _ = async {
            stopping.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("RPCs still running after {}s; stopping anyway", SHUTDOWN_GRACE.as_secs());
            Ok(())
        }
    };
    let _ = fs::remove_file(&socket);
    tracing::info!("proxrt stopped");
    result.map_err(|e| DaemonError::Server(e.to_string()))
}

/// The daemon's stores as the metrics' state gauges see them.
struct DaemonState(Arc<Daemon>);

impl StateSource for DaemonState {
    fn containers(&self) -> Vec<(&'static str, String)> {
        self.0
            .containers
            .all()
            .iter()
            .map(|c| (c.snapshot().phase().name(), c.record.backend.clone()))
            .collect()
    }

    fn pods(&self) -> Vec<(&'static str, String)> {
        self.0
            .sandboxes
            .all()
            .iter()
            .map(|s| {
                let r = s.record();
                let state = match r.state {
                    crate::sandbox::SandboxState::Ready => "ready",
                    crate::sandbox::SandboxState::NotReady => "notready",
                };
                (state, r.backend)
            })
            .collect()
    }
}

/// The unix socket's connections, each behind the layer that replaces an `:authority`
/// h2 would refuse (the socket path grpc-go, grpcio and grpc-java send) with
/// `localhost`: see src/authority. A TCP listener would be served without it.
fn lenient_authority(
    listener: UnixListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<AuthorityRewrite<tokio::net::UnixStream>>> {
    use tokio_stream::StreamExt as _;
    UnixListenerStream::new(listener).map(|conn| conn.map(AuthorityRewrite::new))
}

/// SIGTERM and SIGINT, taken by the daemon from the moment it is installed.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Result<ShutdownSignals, DaemonError> {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind| signal(kind).map_err(io_err("install signal handlers"));
        Ok(ShutdownSignals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
        })
    }

    async fn received(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = self.int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}

/// Facts about this host the spec translation needs, read once at start.
fn probe_host() -> HostView {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_mask = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    // CAP_SYS_RESOURCE (bit 24) decides whether a negative oom_score_adj may be written.
    let cap_eff = cap_mask("CapEff:");
    // "All capabilities" for containers: what this process may pass on. A host or LXC guest
    // without some capability has it missing here, and asking the kernel for it would fail.
    let capabilities = crate::spec::capabilities::from_mask(cap_mask("CapBnd:"));
    let oom_score_adj_min = if cap_eff & (1 << 24) != 0 { -1000 } else { 0 };
    let cgroup_v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let mut hugepage_sizes = Vec::new();
    if let Ok(entries) = fs::read_dir("/sys/kernel/mm/hugepages") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(kb) = name
                .strip_prefix("hugepages-")
                .and_then(|s| s.strip_suffix("kB"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                hugepage_sizes.push(match kb {
                    kb if kb >= 1 << 20 => format!("{}GB", kb >> 20),
                    kb if kb >= 1 << 10 => format!("{}MB", kb >> 10),
                    kb => format!("{kb}KB"),
                });
            }
        }
    }
    let apparmor = crate::apparmor::host(Path::new("/sys"));
    match &apparmor {
        crate::apparmor::AppArmorHost::Enabled { default: Err(e) } => {
            tracing::error!(error = %e, "AppArmor: the RuntimeDefault profile could not be loaded")
        }
        other => tracing::info!("AppArmor: {}", other.describe()),
    }
    HostView {
        oom_score_adj_min,
        cgroup_v2,
        hugepage_sizes,
        capabilities,
        apparmor,
    }
}
