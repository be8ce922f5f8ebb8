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
mod holder_cgroup;
mod migration;
mod pod;
mod seccomp_filters;
mod unsupervised;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use k8s_cri::v1::{LinuxContainerResources, PodSandboxConfig};
use oci_spec::runtime::{LinuxResources, Spec};

pub use engine::Engine;
pub use migration::MigrationLock;

use super::crun::CrunProbe;
use super::{
    Backend, BackendError, CreateParams, Payload, PodParams, PodRuntime, PreparedSpec, Unsupervised,
};
use crate::config::Config;
use crate::intent::PodIntent;
use crate::monitor::{CreateRequest, Zygote};
use crate::network::Network;
use crate::sandbox::SandboxRecord;

pub use files::{check_hostname, hosts, resolv_conf};

/// Applies `resources` to the existing cgroup at `path` (`linux.cgroupsPath`). A cgroup
/// that is gone (the container exited meanwhile) is not made again.
fn update_cgroup(path: &str, resources: &LinuxResources) -> Result<(), String> {
    use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt};
    let exists = ["memory", "cpu", "pids", ""].iter().any(|c| {
        Path::new("/sys/fs/cgroup")
            .join(c)
            .join(path.trim_start_matches('/'))
            .is_dir()
    });
    if !exists {
        return Err(format!(
            "cgroup {path} does not exist (has the container exited?)"
        ));
    }
    let manager = libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: path.into(),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| format!("cgroup manager for {path}: {e}"))?;
    manager
        .apply(&ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| format!("apply resources to {path}: {e}"))
}

pub struct HostBackend {
    engine: Engine,
    /// None in offline use (`proxrt select`): the backend then reports whether it is
    /// available but cannot run anything.
    zygote: Option<Arc<Zygote>>,
    max_log_line_size: usize,
    exec_max_output: usize,
    /// CNI for pods with their own network namespace (shared by the host backends).
    network: Arc<Network>,
    /// Warmed when a create begins and when a pod is running, and kept warm for a while
    /// (migration.rs).
    migration: Arc<MigrationLock>,
    /// The pods dir when the daemon made it a mount of its own (`CreateRequest::pods_mount`).
    pods_mount: Option<PathBuf>,
    /// `CreateRequest::create_template_idle_secs`.
    create_template_idle_secs: Option<u64>,
}

impl HostBackend {
    pub fn new(
        engine: Engine,
        zygote: Option<Arc<Zygote>>,
        config: &Config,
        network: Arc<Network>,
    ) -> HostBackend {
        let pods_dir = crate::sandbox::SandboxPaths::pods_dir(&config.daemon.run_dir);
        HostBackend {
            engine,
            zygote,
            network,
            pods_mount: crate::mounts::is_mount_root(&pods_dir)
                .unwrap_or(false)
                .then_some(pods_dir),
            migration: MigrationLock::for_this_process(std::time::Duration::from_millis(
                config.runtime.keep_cgroup_lock_warm_ms,
            )),
            max_log_line_size: config.runtime.max_log_line_size,
            exec_max_output: config.runtime.exec_sync_max_output,
            create_template_idle_secs: config
                .runtime
                .create_template
                .then_some(config.runtime.create_template_idle_seconds),
        }
    }

    /// libcontainer, with its state under `<run_dir>/libcontainer`.
    pub fn libcontainer(
        config: &Config,
        zygote: Option<Arc<Zygote>>,
        network: Arc<Network>,
    ) -> HostBackend {
        let root = config.daemon.run_dir.join("libcontainer");
        HostBackend::new(Engine::libcontainer(root), zygote, config, network)
    }

    /// crun as probed on this host, with its state under `<run_dir>/crun`.
    pub fn crun(
        config: &Config,
        zygote: Option<Arc<Zygote>>,
        network: Arc<Network>,
    ) -> HostBackend {
        let engine = Engine::crun(
            CrunProbe::run(&config.crun),
            config.daemon.run_dir.join("crun"),
        );
        HostBackend::new(engine, zygote, config, network)
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

    /// Only CNI's allocations (host-local's files, the fast path's store) outlive a
    /// reboot; a pod on the node's network has none.
    fn pod_outlives_host(&self, config: &PodSandboxConfig) -> bool {
        !pod::host_network(config)
    }

    async fn run_pod(&self, pod: PodParams<'_>) -> Result<PodRuntime, BackendError> {
        // The holder starts in its cgroup without a move through cgroup.procs
        // (monitor/sandbox.rs): no warm-up of the cgroup migration lock before it, which
        // would hold off the holder leaf's mkdir while it waits. After it, one for the
        // pod's first container, which kubelet creates next: its grace period passes
        // meanwhile (migration.rs).
        let running = pod::run(self.zygote()?, &self.network, &pod).await?;
        self.migration.warm();
        Ok(running)
    }

    async fn stop_pod(&self, pod: &SandboxRecord) -> Result<(), BackendError> {
        pod::stop(&self.network, pod).await
    }

    async fn remove_pod(&self, pod: &SandboxRecord) -> Result<(), BackendError> {
        pod::remove(pod)
    }

    async fn abandon_pod(&self, intent: &PodIntent) -> Result<(), BackendError> {
        pod::abandon(&self.network, intent).await
    }

    fn pod_alive(&self, pod: &SandboxRecord) -> bool {
        pod::alive(pod)
    }

    fn pod_gone(&self, pod: &SandboxRecord) -> Option<BoxFuture<'static, ()>> {
        pod::gone(pod)
    }

    fn expect_cgroup_move(&self) {
        self.migration.warm();
    }

    fn prepare_spec(&self, spec: &mut Spec) -> Result<PreparedSpec, BackendError> {
        self.engine.prepare_spec(spec, self.pods_mount.is_some())
    }

    /// Writes the new limits into the container's cgroup (libcgroups, as libcontainer and
    /// crun manage it: v1, hybrid or v2).
    async fn update_resources(
        &self,
        _run_dir: &Path,
        cgroup: Option<&str>,
        _requested: &LinuxContainerResources,
        computed: &LinuxResources,
    ) -> Result<(), BackendError> {
        let Some(cgroup) = cgroup else {
            return Err(BackendError::internal(
                self.name(),
                "container has no cgroup path",
            ));
        };
        let (name, path, resources) = (self.name(), cgroup.to_owned(), computed.clone());
        tokio::task::spawn_blocking(move || update_cgroup(&path, &resources))
            .await
            .map_err(|e| BackendError::internal(name, format!("update task: {e}")))?
            .map_err(|e| BackendError::internal(name, e))
    }

    async fn kill_unsupervised(&self, c: Unsupervised<'_>) -> Result<(), BackendError> {
        unsupervised::kill(self.name(), self.engine.root(), c).await
    }

    async fn create(&self, p: CreateParams) -> Result<(), BackendError> {
        let Payload::Bundle { bundle, prepared } = p.payload else {
            return Err(BackendError::internal(
                self.name(),
                "a host backend runs OCI bundles, not guests",
            ));
        };
        let runtime = self.engine.runtime_kind()?;
        self.zygote()?
            .create_container(CreateRequest {
                id: p.id,
                bundle,
                state_dir: p.run_dir,
                runtime_root: self.engine.root().to_owned(),
                log: p.log,
                max_log_line_size: self.max_log_line_size,
                oom_score_adj: prepared.oom_score_adj,
                premounts: prepared.premounts,
                seccomp: prepared.seccomp.as_ref().map(|f| f.request()),
                exec_max_output: self.exec_max_output,
                tty: p.tty,
                stdin: p.stdin,
                stdin_once: p.stdin_once,
                runtime,
                pods_mount: self.pods_mount.clone(),
                create_template_idle_secs: self.create_template_idle_secs,
            })
            .await?;
        Ok(())
    }
}
