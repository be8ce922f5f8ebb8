//! The one contract every runtime backend implements, for pods and their containers.
//!
//! A backend owns a pod from RunPodSandbox to RemovePodSandbox (containerd's sandbox
//! `Controller` and CRI-O's `RuntimeImpl` are the models) and every container in it: the
//! host backends (libcontainer, crun: [`host::HostBackend`]) run a pod as namespaces held
//! open by a holder process and its containers under one monitor each; a Proxmox backend
//! runs a pod as one LXC guest. The sandbox and container code never asks which one it
//! holds: it reserves names, selects the backend, persists records and rolls back.
//!
//! The trait is async and takes run dirs and records as handles, so that a slow, remote,
//! task-based backend (Proxmox: every change is a UPID task) fits the same calls.
//!
//! [`registry::Backends`] owns which backends exist on this daemon and why one cannot take
//! new pods; the daemon, `proxrt info` and `proxrt select` all ask it.

pub mod crun;
#[cfg(test)]
pub(crate) mod fake;
pub mod host;
pub mod proxmox;
pub mod registry;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;
use k8s_cri::v1::{ContainerConfig, LinuxContainerResources, PodSandboxConfig};
use oci_spec::runtime::{LinuxResources, Spec};

use crate::error::{Classify, Kind};
use crate::intent::{IntentOnDisk, PodIntent};
use crate::monitor::{
    AttachInput, AttachOutput, AttachStreams, ExecStreamRequest, ExecSyncRequest, ExecSyncResult,
    ExitStatus, MonitorClient, MonitorError,
};
use crate::sandbox::{SandboxNamespaces, SandboxRecord};
use crate::streaming::session::{Dialer, Outcome, StdioStreams, StreamOpts};

pub use registry::Backends;

/// How long a SIGKILLed container's monitor gets to report the exit before the daemon
/// kills the cgroup itself (`Backend::kill_unsupervised`).
const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error("proxmox-lxc: {0}")]
    Proxmox(#[from] crate::proxmox::ProxmoxError),
    #[error("backend {backend}: {message}")]
    Failed {
        backend: &'static str,
        kind: Kind,
        message: String,
    },
}

impl BackendError {
    /// A failure of `backend` that is this daemon's or this host's, not the request's.
    pub fn internal(backend: &'static str, message: impl Into<String>) -> BackendError {
        BackendError::Failed {
            backend,
            kind: Kind::Internal,
            message: message.into(),
        }
    }
}

impl Classify for BackendError {
    fn kind(&self) -> Kind {
        match self {
            BackendError::Monitor(e) => e.kind(),
            BackendError::Proxmox(e) => e.kind(),
            BackendError::Failed { kind, .. } => *kind,
        }
    }
}

/// What `run_pod` needs: the validated pod config and the pod's run dir, which the backend
/// creates and owns (and removes again on failure and in `remove_pod`).
#[derive(Debug, Clone)]
pub struct PodParams<'a> {
    pub id: &'a str,
    pub config: &'a PodSandboxConfig,
    /// `<run_dir>/s/<id16>`.
    pub run_dir: &'a Path,
    /// The pod's intent on its way to the disk: awaited before the backend makes anything
    /// that outlives a host crash (`Backend::pod_outlives_host`; the host backends: CNI
    /// ADD). RunPodSandbox awaits it after `run_pod` too.
    pub intent_on_disk: &'a IntentOnDisk,
}

/// What a backend made for a pod, persisted in the sandbox record so that a restarted
/// daemon (and the backend's later calls) find it again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRuntime {
    /// The hostname the pod's containers see.
    pub hostname: String,
    /// The process holding the pod's namespaces, if the backend runs one.
    pub holder_pid: Option<i32>,
    /// The namespace files containers of the pod join; `None` = the host's.
    pub namespaces: SandboxNamespaces,
    /// Whether `<run_dir>/shm` is a tmpfs this pod mounted.
    pub shm_mounted: bool,
    /// What CNI ADD set up in the pod's network namespace (host pods with their own).
    pub network: Option<crate::network::PodNetwork>,
}

/// What a backend makes its containers from; CreateContainer prepares that and nothing
/// else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerForm {
    /// An OCI bundle: config.json from the CRI request and the image config, and the
    /// image's layers mounted as an overlay rootfs (libcontainer, crun).
    Bundle,
    /// A guest made from a template image on a remote host (Proxmox LXC): no bundle, no
    /// rootfs on this host.
    Guest,
}

/// What `create` needs.
#[derive(Debug, Clone)]
pub struct CreateParams {
    pub id: String,
    /// The container's run dir: the backend's handle for every later call.
    pub run_dir: PathBuf,
    /// The CRI log file, confined to the pod's log directory.
    pub log: Option<crate::logs::LogTarget>,
    pub tty: bool,
    /// The container keeps a stdin open for attach sessions (CRI `stdin`).
    pub stdin: bool,
    /// Its stdin closes when the first attach session that fed it ends (CRI `stdin_once`).
    pub stdin_once: bool,
    pub payload: Payload,
}

/// The container itself, in the backend's [`ContainerForm`].
#[derive(Debug, Clone)]
pub enum Payload {
    /// The bundle (config.json + mounted rootfs) is ready.
    Bundle {
        bundle: PathBuf,
        /// What `prepare_spec` took out of the spec for the backend to apply itself.
        prepared: PreparedSpec,
    },
    Guest(Box<GuestRequest>),
}

/// A guest container: its template, its CRI config and its pod.
#[derive(Debug, Clone)]
pub struct GuestRequest {
    /// The template volid the image was pulled as (`local:vztmpl/…`).
    pub template: String,
    pub config: ContainerConfig,
    pub pod: SandboxRecord,
}

/// A template a backend provides for an image name (PullImage of a Proxmox template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateImage {
    pub template: String,
    pub size: u64,
}

/// A container whose supervisor does not answer, as `kill_unsupervised` needs it.
#[derive(Debug, Clone, Copy)]
pub struct Unsupervised<'a> {
    pub id: &'a str,
    pub run_dir: &'a Path,
    /// Holds config.json, which names the container's cgroup.
    pub bundle: &'a Path,
    /// Why the daemon kills it; shown as the exit's message.
    pub reason: &'a str,
}

/// Settings a backend takes out of the spec in `prepare_spec` and applies another way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreparedSpec {
    /// Written into the container's init by its monitor (libcontainer would write the
    /// spec's value into its caller instead: docs/libcontainer.md).
    pub oom_score_adj: Option<i32>,
    /// Bind mounts taken out of the spec that the monitor attaches to the rootfs before
    /// libcontainer runs (monitor/premount.rs).
    pub premounts: Vec<crate::monitor::premount::Premount>,
    /// The spec's seccomp filter, compiled, for the monitor to load in the runtime's
    /// stead (monitor/seccomp_bpf.rs).
    pub seccomp: Option<crate::monitor::seccomp_bpf::ContainerFilter>,
}

#[tonic::async_trait]
pub trait Backend: Send + Sync {
    /// The name configs, selection reasons and `inspect` use (`libcontainer`, `crun`).
    fn name(&self) -> &'static str;

    /// Why new pods and containers cannot be made with this backend on this host (a
    /// missing binary, a cgroup layout it refuses, an unreachable API), or None when they
    /// can. Pods and containers it already runs are still supervised, stopped and removed
    /// through it.
    fn unavailable_reason(&self) -> Option<String> {
        None
    }

    /// What `proxrt info` (Status verbose) shows about the backend: versions, paths.
    fn describe(&self) -> serde_json::Value {
        serde_json::Value::Object(Default::default())
    }

    /// What this backend's containers are made from.
    fn container_form(&self) -> ContainerForm {
        ContainerForm::Bundle
    }

    // ----- images -----

    /// The template this backend runs `image` as, when an image name maps to one (Proxmox
    /// `[[proxmox.templates]]`); None: the image comes from a registry.
    fn template_for(&self, _image: &str) -> Option<String> {
        None
    }

    /// Checks that `template` exists where the backend will need it, and its size.
    async fn pull_template(&self, template: &str) -> Result<TemplateImage, BackendError> {
        Err(BackendError::internal(
            self.name(),
            format!("backend has no templates ({template})"),
        ))
    }

    // ----- pods -----

    /// Whether `run_pod` makes something of this pod that outlives a host crash (an IP
    /// address allocated on disk, a guest): RunPodSandbox then makes the pod's intent
    /// durable before `run_pod`, so that the start after a crash undoes it. Default: yes.
    fn pod_outlives_host(&self, _config: &PodSandboxConfig) -> bool {
        true
    }

    /// Makes the pod: its namespaces, files, guest. On error nothing it made remains.
    async fn run_pod(&self, pod: PodParams<'_>) -> Result<PodRuntime, BackendError>;

    /// Stops what keeps the pod alive (its containers are already stopped). Succeeds when
    /// it is already stopped.
    async fn stop_pod(&self, pod: &SandboxRecord) -> Result<(), BackendError>;

    /// Removes everything `run_pod` made (after `stop_pod`). Succeeds when it is gone.
    async fn remove_pod(&self, pod: &SandboxRecord) -> Result<(), BackendError>;

    /// Whether a ready pod is still alive (its namespaces, its guest), for PodSandboxStatus
    /// after a restart.
    fn pod_alive(&self, pod: &SandboxRecord) -> bool;

    /// A future that resolves when a ready pod's namespaces die under it (its holder
    /// exits), for marking the pod NotReady at once; None when the backend has nothing to
    /// watch (no holder, or a guest polled by other means).
    fn pod_gone(&self, _pod: &SandboxRecord) -> Option<BoxFuture<'static, ()>> {
        None
    }

    /// The pod's IP addresses as the backend knows them without asking anyone (no call
    /// on the RPC path): a guest's addresses as last seen; a host pod's from its CNI
    /// result (none for host-network pods and after StopPodSandbox).
    fn pod_ips(&self, pod: &SandboxRecord) -> Vec<String> {
        pod.network
            .as_ref()
            .map(|n| n.ips.clone())
            .unwrap_or_default()
    }

    // ----- containers -----

    /// A create is about to move a process between this host's cgroups: start now what
    /// makes that move fast (host/migration.rs; the host backends also start it when a
    /// pod is running, for its first container). Default: nothing. (An exec and a pod's
    /// holder join without that lock: `monitor::cgroup_join_files`, monitor/sandbox.rs.)
    fn expect_cgroup_move(&self) {}

    /// Last adjustments to a spec before it is written into the bundle; what it takes
    /// out, `create` gets back in `CreateParams::prepared`.
    fn prepare_spec(&self, spec: &mut Spec) -> Result<PreparedSpec, BackendError>;

    /// Creates the container (created state, not started). On error nothing it made
    /// remains.
    async fn create(&self, params: CreateParams) -> Result<(), BackendError>;

    // After create, the host backends (libcontainer, crun) are driven through the
    // container's monitor alike: these defaults talk to it. A remote backend (Proxmox,
    // where a container is a guest) overrides them.

    async fn start(&self, run_dir: &Path) -> Result<(), BackendError> {
        Ok(MonitorClient::new(run_dir).start().await?)
    }

    /// Sends a signal to the container (SIGKILL: to every process in it). Succeeds when it
    /// has already exited.
    async fn signal(&self, run_dir: &Path, signal: i32) -> Result<(), BackendError> {
        Ok(MonitorClient::new(run_dir).signal(signal).await?)
    }

    /// Resolves when the container has exited and its exit status is recorded.
    async fn wait(&self, run_dir: &Path) -> Result<ExitStatus, BackendError> {
        Ok(MonitorClient::new(run_dir).wait().await?)
    }

    /// Stops a created or running container: `stop_signal`, up to `timeout` for it to
    /// exit (zero: no grace), then SIGKILL. Resolves once the exit is recorded.
    async fn stop(
        &self,
        run_dir: &Path,
        stop_signal: i32,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        if !timeout.is_zero() {
            self.signal(run_dir, stop_signal).await?;
            match tokio::time::timeout(timeout, self.wait(run_dir)).await {
                Ok(r) => return r.map(drop),
                Err(_) => tracing::info!(
                    run_dir = %run_dir.display(),
                    timeout_secs = timeout.as_secs(),
                    "stop signal ignored; killing"
                ),
            }
        }
        self.signal(run_dir, libc::SIGKILL).await?;
        tokio::time::timeout(KILL_WAIT, self.wait(run_dir))
            .await
            .map_err(|_| MonitorError::Timeout("wait after SIGKILL".into()))?
            .map(drop)
    }

    /// Removes what `create` made, once the container has exited. The host backends'
    /// monitors remove their runtime state when the container exits: nothing is left.
    async fn remove(&self, _run_dir: &Path) -> Result<(), BackendError> {
        Ok(())
    }

    async fn exec_sync(
        &self,
        run_dir: &Path,
        args: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<ExecSyncResult, BackendError> {
        Ok(MonitorClient::new(run_dir)
            .exec_sync(ExecSyncRequest { args, timeout })
            .await?)
    }

    /// Why this backend cannot serve streaming sessions (Exec, Attach, PortForward), or
    /// None when it can. Asked at the CRI call, before a URL is handed out.
    fn streaming_unsupported(&self) -> Option<String> {
        None
    }

    /// Runs a streaming exec (CRI Exec) in the running container with the client's streams,
    /// until it ends. Errors are those before the process ran.
    async fn exec_stream(
        &self,
        run_dir: &Path,
        args: Vec<String>,
        opts: StreamOpts,
        streams: StdioStreams,
    ) -> Result<Outcome, BackendError> {
        let session = MonitorClient::new(run_dir)
            .exec_stream(ExecStreamRequest {
                args,
                tty: opts.tty,
                stdin: opts.stdin,
                stdout: opts.stdout,
                stderr: opts.stderr && !opts.tty,
            })
            .await?;
        Ok(crate::streaming::pump::exec_session(session, streams).await)
    }

    /// Opens TCP connections to ports on the pod's loopback, inside its network namespace
    /// (the host's for a host-network pod): PortForward.
    fn pod_dialer(&self, pod: &SandboxRecord) -> Result<Dialer, BackendError> {
        Ok(crate::streaming::port_forward::netns_dialer(
            pod.namespaces.net.clone(),
        ))
    }

    async fn reopen_log(&self, run_dir: &Path) -> Result<(), BackendError> {
        Ok(MonitorClient::new(run_dir).reopen_log().await?)
    }

    /// Why this backend cannot attach to its containers' stdio, or None when it can
    /// (asked by the Attach RPC before it hands out a URL).
    fn attach_unsupported(&self) -> Option<String> {
        None
    }

    /// Joins a running container's stdio (Attach): its output from now on and, with
    /// `streams.stdin`, its stdin; the session lasts until the container exits or either
    /// side closes it.
    async fn attach(
        &self,
        run_dir: &Path,
        streams: AttachStreams,
    ) -> Result<(AttachOutput, AttachInput), BackendError> {
        Ok(MonitorClient::new(run_dir).attach(streams).await?)
    }

    /// Applies new limits to a created or running container (UpdateContainerResources):
    /// `requested` as CRI sent them, `computed` as the OCI spec would carry them.
    /// `cgroup` is the container's `linux.cgroupsPath` when it has one on this host.
    async fn update_resources(
        &self,
        _run_dir: &Path,
        _cgroup: Option<&str>,
        _requested: &LinuxContainerResources,
        _computed: &LinuxResources,
    ) -> Result<(), BackendError> {
        Err(BackendError::Failed {
            backend: self.name(),
            kind: Kind::FailedPrecondition,
            message: "this backend cannot change a container's resources".into(),
        })
    }

    /// Undoes whatever `run_pod` may have made of a pod whose record was never written (a
    /// daemon killed in the middle of RunPodSandbox, found at the next start): all of it
    /// is found from the intent, and anything missing is fine. Default: the run dir.
    async fn abandon_pod(&self, intent: &PodIntent) -> Result<(), BackendError> {
        crate::mounts::remove_tree(&intent.run_dir).map_err(|e| {
            BackendError::internal(
                self.name(),
                format!("remove {}: {e}", intent.run_dir.display()),
            )
        })
    }

    /// Work after startup, off the RPC path (the Proxmox backend looks for orphan guests).
    async fn reconcile(&self) {}

    /// Whether this backend's containers and pods live in this host's cgroups (their
    /// `linux.cgroupsPath`, the pod's `cgroup_parent`), so the stats RPCs read them there. A
    /// backend whose containers run elsewhere (a Proxmox guest) says false: its containers
    /// are reported with what is known without cgroups (the writable layer, if on this host).
    fn host_cgroups(&self) -> bool {
        true
    }

    /// Whether something still supervises the container (its monitor answers).
    fn is_alive(&self, run_dir: &Path) -> bool {
        MonitorClient::new(run_dir).is_alive()
    }

    /// The container's supervisor did not answer or is gone: kill every process of the
    /// container, remove what the runtime kept for it and record its exit with `reason`,
    /// so that Stop and Remove still work. Succeeds when it has already exited.
    async fn kill_unsupervised(&self, c: Unsupervised<'_>) -> Result<(), BackendError> {
        Err(BackendError::internal(
            self.name(),
            format!(
                "container {} has no supervisor and cannot be killed without one",
                c.id
            ),
        ))
    }
}
