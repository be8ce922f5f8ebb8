//! A backend for unit tests of the pod and container operations: it makes nothing, records
//! every call, and fails where a test tells it to. With temp stores it lets rollback paths
//! and error codes be tested without a zygote, mounts or root.

use std::path::Path;
use std::sync::{Arc, Mutex};

use oci_spec::runtime::Spec;

use super::{Backend, BackendError, CreateParams, PodParams, PodRuntime, PreparedSpec};
use crate::error::Kind;
use crate::sandbox::SandboxRecord;

/// Where the fake fails, and with which error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailAt {
    RunPod(Kind),
    StopPod(Kind),
    RemovePod(Kind),
    /// Used by the CreateContainer tests once the bundle step moves into the backend.
    #[allow(dead_code)]
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
