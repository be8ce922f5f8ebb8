//! The host backends, libcontainer and crun: one implementation parametrised by the
//! [`Engine`] that creates a container under its monitor.
//!
//! A pod is a set of namespaces (net, ipc, uts, pid) made by the zygote and held open by a
//! holder process, plus the files its containers see (hostname, hosts, resolv.conf) and a
//! private /dev/shm ([`pod`]). A container is an OCI bundle created by a per-container
//! monitor forked from the single-threaded zygote (docs/architecture.md, "The process
//! model"); after create every call goes to that monitor (the trait's defaults).

mod engine;
mod files;
mod pod;
mod unsupervised;

use std::sync::Arc;

use oci_spec::runtime::Spec;

pub use engine::Engine;

use super::crun::CrunProbe;
use super::{
    Backend, BackendError, CreateParams, PodParams, PodRuntime, PreparedSpec, Unsupervised,
};
use crate::config::Config;
use crate::monitor::{CreateRequest, Zygote};
use crate::sandbox::SandboxRecord;

pub use files::{check_hostname, hosts, resolv_conf};

pub struct HostBackend {
    engine: Engine,
    /// None in offline use (`proxrt select`): the backend then reports whether it is
    /// available but cannot run anything.
    zygote: Option<Arc<Zygote>>,
    max_log_line_size: usize,
    exec_max_output: usize,
}

impl HostBackend {
    pub fn new(engine: Engine, zygote: Option<Arc<Zygote>>, config: &Config) -> HostBackend {
        HostBackend {
            engine,
            zygote,
            max_log_line_size: config.runtime.max_log_line_size,
            exec_max_output: config.runtime.exec_sync_max_output,
        }
    }

    /// libcontainer, with its state under `<run_dir>/libcontainer`.
    pub fn libcontainer(config: &Config, zygote: Option<Arc<Zygote>>) -> HostBackend {
        let root = config.daemon.run_dir.join("libcontainer");
        HostBackend::new(Engine::Libcontainer { root }, zygote, config)
    }

    /// crun as probed on this host, with its state under `<run_dir>/crun`.
    pub fn crun(config: &Config, zygote: Option<Arc<Zygote>>) -> HostBackend {
        let engine = Engine::Crun {
            probe: CrunProbe::run(&config.crun),
            root: config.daemon.run_dir.join("crun"),
        };
        HostBackend::new(engine, zygote, config)
    }

    fn zygote(&self) -> Result<&Zygote, BackendError> {
        self.zygote.as_deref().ok_or_else(|| {
            BackendError::internal(self.name(), "no zygote: this process cannot run pods")
        })
    }
}

#[tonic::async_trait]
impl Backend for HostBackend {
    fn name(&self) -> &'static str {
        self.engine.name()
    }

    fn unavailable_reason(&self) -> Option<String> {
        self.engine.unavailable_reason()
    }

    fn describe(&self) -> serde_json::Value {
        self.engine.describe()
    }

    async fn run_pod(&self, pod: PodParams<'_>) -> Result<PodRuntime, BackendError> {
        pod::run(self.zygote()?, &pod).await
    }

    async fn stop_pod(&self, pod: &SandboxRecord) -> Result<(), BackendError> {
        pod::stop(pod).await
    }

    async fn remove_pod(&self, pod: &SandboxRecord) -> Result<(), BackendError> {
        pod::remove(pod)
    }

    fn pod_alive(&self, pod: &SandboxRecord) -> bool {
        pod::alive(pod)
    }

    fn prepare_spec(&self, spec: &mut Spec) -> Result<PreparedSpec, BackendError> {
        self.engine.prepare_spec(spec)
    }

    async fn kill_unsupervised(&self, c: Unsupervised<'_>) -> Result<(), BackendError> {
        unsupervised::kill(self.name(), self.engine.root(), c).await
    }

    async fn create(&self, p: CreateParams) -> Result<(), BackendError> {
        let runtime = self.engine.runtime_kind()?;
        self.zygote()?
            .create_container(CreateRequest {
                id: p.id,
                bundle: p.bundle,
                state_dir: p.run_dir,
                runtime_root: self.engine.root().to_owned(),
                log: p.log,
                max_log_line_size: self.max_log_line_size,
                oom_score_adj: p.prepared.oom_score_adj,
                exec_max_output: self.exec_max_output,
                tty: p.tty,
                runtime,
            })
            .await?;
        Ok(())
    }
}
