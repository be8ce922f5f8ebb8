//! A backend for unit tests of the pod and container operations: it makes nothing, records
//! every call, and fails where a test tells it to. With temp stores it lets rollback paths
//! and error codes be tested without a zygote, mounts or root.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oci_spec::runtime::Spec;

use super::{
    Backend, BackendError, ContainerForm, CreateParams, PodParams, PodRuntime, PreparedSpec,
};
use crate::backend::Backends;
use crate::config::Config;
use crate::container::ContainerStore;
use crate::context::Ctx;
use crate::error::Kind;
use crate::image::Images;
use crate::names::NameRegistry;
use crate::sandbox::{SandboxRecord, SandboxStore};
use crate::select::Selector;
use crate::spec::HostView;

/// Where the fake fails, and with which error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailAt {
    RunPod(Kind),
    StopPod(Kind),
    RemovePod(Kind),
    Create(Kind),
}

type Hook = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
pub struct FakeBackend {
    pub fail: Mutex<Vec<FailAt>>,
    /// Every call, as `"run_pod <id>"`, `"stop_pod <id>"`, ...
    pub calls: Mutex<Vec<String>>,
    /// Runs inside `run_pod` with the pod id (a test's way to sabotage a later step).
    pub on_run_pod: Mutex<Option<Hook>>,
    /// Guest: containers need no bundle (no mounts, no root), like a Proxmox guest's.
    pub guest_form: std::sync::atomic::AtomicBool,
}

impl FakeBackend {
    pub fn new() -> Arc<FakeBackend> {
        Arc::new(FakeBackend::default())
    }

    pub fn fail_at(&self, at: FailAt) {
        self.fail.lock().unwrap().push(at);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn call(
        &self,
        what: &str,
        id: &str,
        fails: impl Fn(FailAt) -> Option<Kind>,
    ) -> Result<(), BackendError> {
        self.calls.lock().unwrap().push(format!("{what} {id}"));
        match self.fail.lock().unwrap().iter().find_map(|f| fails(*f)) {
            Some(kind) => Err(BackendError::Failed {
                backend: "libcontainer",
                kind,
                message: format!("fake {what} failure"),
            }),
            None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        // Registered under the default backend's name, so that selection picks it.
        "libcontainer"
    }

    async fn run_pod(&self, pod: PodParams<'_>) -> Result<PodRuntime, BackendError> {
        if let Some(hook) = self.on_run_pod.lock().unwrap().as_ref() {
            hook(pod.id);
        }
        self.call("run_pod", pod.id, |f| match f {
            FailAt::RunPod(k) => Some(k),
            _ => None,
        })?;
        Ok(PodRuntime {
            hostname: pod.config.hostname.clone(),
            ..Default::default()
        })
    }

    async fn stop_pod(&self, pod: &SandboxRecord) -> Result<(), BackendError> {
        self.call("stop_pod", &pod.id, |f| match f {
            FailAt::StopPod(k) => Some(k),
            _ => None,
        })
    }

    async fn remove_pod(&self, pod: &SandboxRecord) -> Result<(), BackendError> {
        self.call("remove_pod", &pod.id, |f| match f {
            FailAt::RemovePod(k) => Some(k),
            _ => None,
        })
    }

    fn pod_alive(&self, _pod: &SandboxRecord) -> bool {
        true
    }

    fn container_form(&self) -> ContainerForm {
        match self.guest_form.load(std::sync::atomic::Ordering::Relaxed) {
            true => ContainerForm::Guest,
            false => ContainerForm::Bundle,
        }
    }

    fn prepare_spec(&self, _spec: &mut Spec) -> Result<PreparedSpec, BackendError> {
        Ok(PreparedSpec::default())
    }

    async fn create(&self, params: CreateParams) -> Result<(), BackendError> {
        self.call("create", &params.id, |f| match f {
            FailAt::Create(k) => Some(k),
            _ => None,
        })
    }

    fn is_alive(&self, _run_dir: &Path) -> bool {
        false
    }
}

/// Temp stores, a default config and a `FakeBackend` registered as the default backend:
/// what pod and container operations need, without a zygote, mounts or root.
pub(crate) struct FakeWorld {
    _dir: tempfile::TempDir,
    pub(crate) sandboxes: Arc<SandboxStore>,
    pub(crate) containers: Arc<ContainerStore>,
    pub(crate) events: crate::events::Events,
    pub(crate) names: Arc<NameRegistry>,
    pub(crate) images: Images,
    pub(crate) backends: Backends,
    pub(crate) selector: Selector,
    pub(crate) host: HostView,
    pub(crate) run_dir: PathBuf,
    pub(crate) fake: Arc<FakeBackend>,
}

impl FakeWorld {
    pub(crate) fn new() -> FakeWorld {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::default();
        let fake = FakeBackend::new();
        let events = crate::events::Events::default();
        let sandboxes =
            Arc::new(SandboxStore::load(&dir.path().join("sandboxes"), events.clone()).unwrap());
        let containers =
            Arc::new(ContainerStore::load(&dir.path().join("containers"), events.clone()).unwrap());
        events.set_stores(&sandboxes, &containers);
        FakeWorld {
            sandboxes,
            containers,
            events,
            names: Arc::default(),
            images: Images::open(dir.path(), &config).unwrap(),
            backends: Backends::with(vec![fake.clone()], &config.runtime.default_backend),
            selector: Selector::new(&config).unwrap(),
            host: HostView {
                oom_score_adj_min: 0,
                cgroup_v2: false,
                hugepage_sizes: Vec::new(),
                capabilities: Default::default(),
                apparmor: Default::default(),
            },
            run_dir: dir.path().join("run"),
            _dir: dir,
            fake,
        }
    }

    pub(crate) fn ctx(&self) -> Ctx<'_> {
        Ctx {
            sandboxes: &self.sandboxes,
            containers: &self.containers,
            names: &self.names,
            images: &self.images,
            backends: &self.backends,
            selector: &self.selector,
            host: &self.host,
            run_dir: &self.run_dir,
        }
    }
}

/// What is left in a store's directory: what has not left it by the answer at once, and a
/// removal's `.removing-` entry if it is still there after 10 s (its files are removed
/// beside the answer, `mounts::retire_tree_later`).
pub(crate) fn left_in_store(dir: &Path) -> Vec<PathBuf> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let removing = left.iter().any(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .starts_with(crate::mounts::RETIRED_PREFIX)
            })
        });
        if !removing || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The pod config the unit tests run: `web` in `default`, uid `uid-1`, attempt 0.
pub(crate) fn pod_config() -> k8s_cri::v1::PodSandboxConfig {
    k8s_cri::v1::PodSandboxConfig {
        metadata: Some(k8s_cri::v1::PodSandboxMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: "uid-1".into(),
            attempt: 0,
        }),
        hostname: "web".into(),
        ..Default::default()
    }
}
