//! `proxrt serve`: the daemon's state and its life on a unix socket.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::admin::admin_server::AdminServer;
use crate::authority::AuthorityRewrite;
use crate::config::Config;
use crate::cri::{AdminApi, ImageApi, RuntimeApi};
use std::collections::HashMap;

use crate::backend::crun::CrunBackend;
use crate::backend::libcontainer::LibcontainerBackend;
use crate::backend::{Backend, BackendError};
use crate::container::{ContainerError, ContainerStore, Phase};
use crate::image::{ImageError, Images};
use crate::monitor::Zygote;
use crate::names::NameRegistry;
use crate::sandbox::{SandboxError, SandboxRecord, SandboxStore};
use crate::select::{Decision, PodChoice, SelectError, Selector};
use crate::spec::HostView;

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
    sandboxes: SandboxStore,
    containers: Arc<ContainerStore>,
    names: Arc<NameRegistry>,
    /// Every backend implemented here, available or not: containers a backend already
    /// runs are supervised through it even when it can no longer create new ones.
    backends: HashMap<&'static str, Arc<dyn Backend>>,
    selector: Selector,
    host: HostView,
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
        let sandboxes = SandboxStore::load(&root.join("sandboxes"))
            .map_err(|e| DaemonError::Recover(e.to_string()))?;
        let containers = Arc::new(
            ContainerStore::load(&root.join("containers"))
                .map_err(|e| DaemonError::Recover(e.to_string()))?,
        );
        let zygote = Arc::new(zygote);
        let mut backends: HashMap<&'static str, Arc<dyn Backend>> = HashMap::new();
        let libcontainer = LibcontainerBackend::new(
            zygote.clone(),
            config.daemon.run_dir.join("libcontainer"),
            config.runtime.max_log_line_size,
            config.runtime.exec_sync_max_output,
        );
        backends.insert(libcontainer.name(), Arc::new(libcontainer));
        let crun = CrunBackend::new(zygote.clone(), &config);
        backends.insert(crun.name(), Arc::new(crun));
        for b in backends.values() {
            if let Some(reason) = b.unavailable_reason() {
                tracing::warn!(backend = b.name(), %reason, "backend unavailable: new containers cannot use it");
            }
        }
        let selector =
            Selector::new(&config).map_err(|(key, message)| DaemonError::Config(key, message))?;
        let users: Arc<dyn crate::image::ImageUsers> = containers.clone();
        images.set_users(Arc::downgrade(&users));
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
            config,
            images,
            zygote,
            sandboxes,
            containers,
            names,
            backends,
            selector,
            host: probe_host(),
        }))
    }

    /// Re-attaches to containers that kept running while the daemon was down, and marks
    /// sandboxes whose namespaces are gone (host reboot, holder killed) NotReady.
    pub fn watch_running(&self) {
        for s in self.sandboxes.all() {
            let r = s.record();
            if r.state == crate::sandbox::SandboxState::Ready
                && !crate::sandbox::namespaces_alive(&r)
            {
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
            c.refresh();
            let Ok(backend) = self.backend(&c.record.backend) else {
                continue;
            };
            match c.phase() {
                Phase::Running | Phase::Created if backend.is_alive(&c.record.run_dir) => {
                    crate::container::watch_exit(backend, c.clone());
                }
                Phase::Running | Phase::Created => {
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

    pub fn names(&self) -> &NameRegistry {
        &self.names
    }

    pub fn names_arc(&self) -> Arc<NameRegistry> {
        self.names.clone()
    }

    pub fn host(&self) -> &HostView {
        &self.host
    }

    /// The backend registered under `name`, to supervise a container it already runs.
    pub fn backend(&self, name: &str) -> Result<Arc<dyn Backend>, BackendError> {
        self.backends
            .get(name)
            .cloned()
            .ok_or_else(|| BackendError::Failed {
                backend: "daemon",
                kind: crate::error::Kind::FailedPrecondition,
                message: format!(
                    "backend {name} is not available on this daemon ({})",
                    self.unavailable_reason(name)
                ),
            })
    }

    /// Why `name` cannot take new containers here ("not implemented yet", crun's cgroup
    /// refusal, ...), or None.
    fn why_unavailable(&self, name: &str) -> Option<String> {
        match self.backends.get(name) {
            Some(b) => b.unavailable_reason(),
            None => Some(self.unavailable_reason(name)),
        }
    }

    fn unavailable_reason(&self, name: &str) -> String {
        match crate::select::known_backend(name) {
            Some(k) if !k.implemented => "not implemented yet".into(),
            Some(_) => "not registered".into(),
            None => "unknown backend".into(),
        }
    }

    /// The backend a decision names, when it can take a new container.
    fn backend_for_new(&self, decision: &Decision) -> Result<Arc<dyn Backend>, SelectError> {
        if let Some(why) = self.why_unavailable(&decision.backend) {
            return Err(SelectError::Unavailable {
                backend: decision.backend.clone(),
                why,
                reason: decision.reason.clone(),
            });
        }
        self.backends
            .get(decision.backend.as_str())
            .cloned()
            .ok_or_else(|| SelectError::Unavailable {
                backend: decision.backend.clone(),
                why: "not registered".into(),
                reason: decision.reason.clone(),
            })
    }

    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// Which backend a new pod gets, and why (docs/runtime-selection.md): the handler, the
    /// `proxrt.io/runtime` annotation, or the default. Refused before anything is made when
    /// the handler is unknown (InvalidArgument) or the backend cannot take new pods here
    /// (FailedPrecondition).
    pub fn select_sandbox_backend(
        &self,
        runtime_handler: &str,
        config: &k8s_cri::v1::PodSandboxConfig,
    ) -> Result<(String, String), SandboxError> {
        let decision = self
            .selector
            .for_pod(runtime_handler, &config.annotations)?;
        self.backend_for_new(&decision)?;
        Ok((decision.backend, decision.reason))
    }

    /// Which backend a new container of `sandbox` gets, and why: the pod's when a handler or
    /// the annotation chose it, else the first matching image rule of the same backend
    /// family, else the pod's (`default`). Pure lookups: called before CreateContainer
    /// makes anything.
    pub fn select_container_backend(
        &self,
        sandbox: &SandboxRecord,
        image: &k8s_cri::v1::ImageSpec,
    ) -> Result<(Arc<dyn Backend>, String), ContainerError> {
        let pod = PodChoice::from_request(
            &sandbox.backend,
            &sandbox.backend_reason,
            &sandbox.runtime_handler,
            &sandbox.config.annotations,
        );
        // kubelet (1.28+) sends the pod spec's image in `user_specified_image` and the
        // resolved image id in `image`; an id is matched by the names the store has for it.
        let written = match image.user_specified_image.as_str() {
            "" => image.image.as_str(),
            name => name,
        };
        let mut names = vec![written.to_owned()];
        if matches!(
            crate::image::reference::parse_query(written),
            Ok(crate::image::reference::ImageQuery::Id(_))
        ) {
            if let Ok(entry) = self.images.get(written) {
                names.extend(entry.record.repo_tags.iter().cloned());
                names.extend(entry.record.repo_digests.iter().cloned());
            }
        }
        let decision = self.selector.for_container(pod, written, &names)?;
        let backend = self.backend_for_new(&decision)?;
        Ok((backend, decision.reason))
    }

    /// Every backend this daemon knows and whether it takes new containers, for Status
    /// verbose info (`proxrt info`).
    pub fn backends_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for known in crate::select::KNOWN_BACKENDS {
            let mut v = match self.backends.get(known.name) {
                Some(b) => b.describe(),
                None => serde_json::json!({}),
            };
            let why = self.why_unavailable(known.name);
            v["available"] = serde_json::Value::Bool(why.is_none());
            if let Some(why) = why {
                v["reason"] = serde_json::Value::String(why);
            }
            v["family"] = serde_json::Value::String(known.family.into());
            v["default"] =
                serde_json::Value::Bool(self.config.runtime.default_backend == known.name);
            out.insert(known.name.into(), v);
        }
        serde_json::Value::Object(out)
    }

    pub fn health(&self) -> Health {
        let default_backend = &self.config.runtime.default_backend;
        let runtime = if !self.zygote.is_alive() {
            Some((
                "ZygoteDead".to_owned(),
                "the process that creates containers exited; restart proxrt".to_owned(),
            ))
        } else {
            self.why_unavailable(default_backend).map(|why| {
                (
                    "DefaultBackendUnavailable".to_owned(),
                    format!("the default backend {default_backend} cannot create containers here: {why}"),
                )
            })
        };
        Health {
            runtime,
            network: Some((
                "NetworkPluginNotReady".into(),
                "proxrt has no CNI support yet: pods with their own network namespace get loopback only; host-network pods work".into(),
            )),
        }
    }

    /// The effective configuration, for Status verbose info.
    pub fn config_json(&self) -> String {
        serde_json::to_string(&self.config).unwrap_or_default()
    }
}

/// Holds the state root's lock for the daemon's lifetime.
pub struct RootLock(#[allow(dead_code)] File);

/// Takes the state root: refuses when another daemon holds it.
pub fn lock_root(root: &Path) -> Result<RootLock, DaemonError> {
    crate::store::create_dir_mode(root, 0o711)
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
        crate::store::create_dir_mode(dir, 0o711)
            .map_err(io_err(format!("create {}", dir.display())))?;
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
pub async fn serve(config: Config, zygote: Zygote) -> Result<(), DaemonError> {
    let _lock = lock_root(&config.daemon.root)?;
    crate::store::create_dir_mode(&config.daemon.run_dir, 0o711).map_err(io_err(format!(
        "create run dir {}",
        config.daemon.run_dir.display()
    )))?;
    let listener = bind_socket(&config)?;
    let socket = config.daemon.socket.clone();
    let daemon = Daemon::open(config, zygote)?;
    daemon.watch_running();
    tracing::info!(socket = %socket.display(), version = env!("CARGO_PKG_VERSION"), "proxrt serving");

    const MAX_MESSAGE: usize = 64 * 1024 * 1024;
    let runtime = RuntimeServiceServer::new(RuntimeApi(daemon.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let images = ImageServiceServer::new(ImageApi(daemon.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let admin = AdminServer::new(AdminApi(daemon.clone()));
    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = stopping.clone();
    let server = tonic::transport::Server::builder()
        .add_service(runtime)
        .add_service(images)
        .add_service(admin)
        .serve_with_incoming_shutdown(lenient_authority(listener), async move {
            shutdown_signal().await;
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

/// The unix socket's connections, each behind the layer that replaces an `:authority`
/// h2 would refuse (the socket path grpc-go, grpcio and grpc-java send) with
/// `localhost`: see src/authority. A TCP listener would be served without it.
fn lenient_authority(
    listener: UnixListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<AuthorityRewrite<tokio::net::UnixStream>>> {
    use tokio_stream::StreamExt as _;
    UnixListenerStream::new(listener).map(|conn| conn.map(AuthorityRewrite::new))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Facts about this host the spec translation needs, read once at start.
fn probe_host() -> HostView {
    // CAP_SYS_RESOURCE (bit 24) decides whether a negative oom_score_adj may be written.
    let cap_eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
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
    HostView {
        oom_score_adj_min,
        cgroup_v2,
        hugepage_sizes,
    }
}
