//! The one contract every runtime backend implements: create, start, signal, wait,
//! exec, reopen log. The daemon holds backends as `Arc<dyn Backend>` and never asks
//! which one it holds.
//!
//! The trait is async and takes the container's run dir as its handle so that a slow,
//! remote, task-based backend (Proxmox LXC: create is a UPID task that may take
//! seconds) fits the same calls as the in-process libcontainer one.

pub mod crun;
pub mod libcontainer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::Spec;

use crate::error::{Classify, Kind};
use crate::monitor::{ExecSyncRequest, ExecSyncResult, ExitStatus, MonitorClient, MonitorError};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error("backend {backend}: {message}")]
    Failed {
        backend: &'static str,
        kind: Kind,
        message: String,
    },
}

impl Classify for BackendError {
    fn kind(&self) -> Kind {
        match self {
            BackendError::Monitor(e) => e.kind(),
            BackendError::Failed { kind, .. } => *kind,
        }
    }
}

/// What `create` needs; the bundle (config.json + mounted rootfs) is ready.
#[derive(Debug, Clone)]
pub struct CreateParams {
    pub id: String,
    pub bundle: PathBuf,
    /// The container's run dir: the backend's handle for every later call.
    pub run_dir: PathBuf,
    pub log_path: Option<PathBuf>,
    pub oom_score_adj: Option<i32>,
    pub tty: bool,
}

#[tonic::async_trait]
pub trait Backend: Send + Sync {
    /// The name configs, selection reasons and `inspect` use (`libcontainer`, `crun`).
    fn name(&self) -> &'static str;

    /// Last adjustments to a spec before it is written into the bundle.
    fn prepare_spec(&self, spec: &mut Spec) -> Result<(), BackendError>;

    /// Creates the container (created state, not started). On error nothing it made
    /// remains.
    async fn create(&self, params: CreateParams) -> Result<(), BackendError>;

    // After create, the in-host backends (libcontainer, crun) are driven through the
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

    async fn reopen_log(&self, run_dir: &Path) -> Result<(), BackendError> {
        Ok(MonitorClient::new(run_dir).reopen_log().await?)
    }

    /// Whether something still supervises the container (its monitor answers).
    fn is_alive(&self, run_dir: &Path) -> bool {
        MonitorClient::new(run_dir).is_alive()
    }

    /// Why new containers cannot be created with this backend on this host (a missing
    /// binary, a cgroup layout it refuses, an unreachable API), or None when they can.
    /// Containers it already runs are still supervised, stopped and removed through it.
    fn unavailable_reason(&self) -> Option<String> {
        None
    }

    /// What `proxrt info` (Status verbose) shows about the backend: versions, paths.
    fn describe(&self) -> serde_json::Value {
        serde_json::Value::Object(Default::default())
    }
}
