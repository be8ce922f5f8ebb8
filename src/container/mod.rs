//! Containers: the record kept for each one, the in-memory store every RPC reads
//! (no disk access on Status/List), and the lifecycle operations, one per file.
//!
//! On disk: `<root>/containers/<id>/container.json` (record), `…/bundle/config.json`,
//! `…/upper`, `…/work` (overlay); `<run_dir>/c/<id16>/` is the monitor's dir
//! (status.json, monitor.sock) and `<run_dir>/c/<id16>/rootfs` the overlay mount.

mod create;
mod exec;
mod lifecycle;
pub mod rootfs;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_cri::v1::ContainerConfig;
use serde::{Deserialize, Serialize};

use crate::backend::BackendError;
use crate::error::{Classify, Kind};
use crate::image::ImageError;
use crate::monitor::ContainerStatusFile;
use crate::names::NameTaken;
use crate::sandbox::SandboxError;
use crate::spec::SpecError;
use crate::store::{ById, Lookup};

pub use create::create_container;
pub use exec::{exec_sync, reopen_log};
pub use lifecycle::{remove_container, start_container, stop_container, watch_exit};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{0}")]
    Invalid(String),
    #[error("container {0:?} not found")]
    NotFound(String),
    #[error("container id prefix {0:?} matches more than one container")]
    Ambiguous(String),
    #[error("container {id} is {state}: {what}")]
    WrongState {
        id: String,
        state: &'static str,
        what: String,
    },
    #[error(transparent)]
    Name(#[from] NameTaken),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Runtime selection refused the request (unknown handler, unavailable backend, mixed pod).
    #[error(transparent)]
    Select(#[from] crate::select::SelectError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(
        "mount source {path:?} is not on a shared mount (it sits on {mount_point:?}): \
         BIDIRECTIONAL propagation needs one (mount --make-shared)"
    )]
    MountNotShared { path: String, mount_point: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl ContainerError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ContainerError::Io {
            context: context.into(),
            source,
        }
    }
}

impl Classify for ContainerError {
    fn kind(&self) -> Kind {
        match self {
            ContainerError::Invalid(_) | ContainerError::Ambiguous(_) => Kind::InvalidArgument,
            ContainerError::NotFound(_) => Kind::NotFound,
            ContainerError::WrongState { .. } | ContainerError::MountNotShared { .. } => {
                Kind::FailedPrecondition
            }
            ContainerError::Name(e) => e.kind(),
            ContainerError::Sandbox(e) => e.kind(),
            ContainerError::Image(e) => e.kind(),
            ContainerError::Spec(e) => e.kind(),
            ContainerError::Backend(e) => e.kind(),
            ContainerError::Select(e) => e.kind(),
            ContainerError::Store(_) | ContainerError::Io { .. } => Kind::Internal,
        }
    }
}

/// What is persisted for a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    /// `<name>_<pod>_<namespace>_<uid>_<attempt>`, reserved while the container exists.
    pub name: String,
    pub sandbox_id: String,
    pub config: ContainerConfig,
    /// The image as the request named it.
    pub image_name: String,
    /// The image id (config digest).
    pub image_id: String,
    /// A digest reference of the image (`repo@sha256:…`), or the id when it has none.
    pub image_ref: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub log_path: Option<PathBuf>,
    pub backend: String,
    pub backend_reason: String,
    /// Signal StopContainer sends first (image StopSignal or SIGTERM).
    pub stop_signal: i32,
    /// `<run_dir>/c/<id16>`: the monitor's dir.
    pub run_dir: PathBuf,
}

impl ContainerRecord {
    pub fn rootfs(&self) -> PathBuf {
        self.run_dir.join("rootfs")
    }
}

/// The container's life as CRI shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Created,
    Running,
    Exited,
    Unknown,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Created => "created",
            Phase::Running => "running",
            Phase::Exited => "exited",
            Phase::Unknown => "unknown",
        }
    }
}

/// A live container: its record and the last status its monitor reported.
pub struct Container {
    pub id: String,
    pub record: ContainerRecord,
    status: Mutex<Option<ContainerStatusFile>>,
    /// Serializes start/stop/remove of this container.
    pub op_lock: tokio::sync::Mutex<()>,
}

impl Container {
    pub fn new(record: ContainerRecord, status: Option<ContainerStatusFile>) -> Container {
        Container {
            id: record.id.clone(),
            record,
            status: Mutex::new(status),
            op_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn status(&self) -> Option<ContainerStatusFile> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_status(&self, s: Option<ContainerStatusFile>) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    pub fn phase(&self) -> Phase {
        match self.status() {
            None => Phase::Unknown,
            Some(s) if s.finished_at.is_some() => Phase::Exited,
            Some(s) if s.started_at.is_some() => Phase::Running,
            Some(_) => Phase::Created,
        }
    }

    /// The monitor died without recording an exit (killed, host trouble): the container
    /// is reported exited with code 255 and a message saying why, never "running" forever.
    pub fn mark_lost(&self) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let mut next = s.clone().unwrap_or(ContainerStatusFile {
            monitor_pid: 0,
            init_pid: 0,
            created_at: self.record.created_at,
            started_at: None,
            finished_at: None,
            exit_code: None,
            signal: None,
            oom_killed: false,
            message: None,
        });
        next.finished_at = Some(now);
        next.exit_code = Some(255);
        next.message =
            Some("the container's monitor exited without recording an exit status".into());
        *s = Some(next);
    }

    /// Refreshes the cached status from the monitor's status.json.
    pub fn refresh(&self) {
        match crate::monitor::read_status(&self.record.run_dir) {
            Ok(Some(s)) => self.set_status(Some(s)),
            Ok(None) => {}
            Err(e) => tracing::warn!(container = %self.id, error = %e, "status.json unreadable"),
        }
    }
}

pub const RECORD_FILE: &str = "container.json";

/// Every container, by id, with an index by sandbox.
pub struct ContainerStore {
    dir: PathBuf,
    items: ById<Container>,
}

impl ContainerStore {
    /// Loads every record; each container's status comes from its monitor's status.json.
    pub fn load(dir: &Path) -> Result<ContainerStore, ContainerError> {
        let records =
            crate::store::load_records::<ContainerRecord>(dir, RECORD_FILE).map_err(|e| {
                ContainerError::io(format!("load containers from {}", dir.display()), e)
            })?;
        Ok(ContainerStore {
            dir: dir.to_owned(),
            items: ById::new(records.into_iter().map(|r| {
                let status = crate::monitor::read_status(&r.run_dir).ok().flatten();
                (r.id.clone(), Arc::new(Container::new(r, status)))
            })),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn insert(&self, c: Arc<Container>) {
        self.items.insert(c.id.clone(), c);
    }

    pub fn remove(&self, id: &str) {
        self.items.remove(id);
    }

    /// By full id or unique prefix.
    pub fn get(&self, id: &str) -> Result<Arc<Container>, ContainerError> {
        match self.items.lookup(id) {
            Lookup::Found(c) => Ok(c),
            Lookup::Empty => Err(ContainerError::Invalid("container id is required".into())),
            Lookup::Missing => Err(ContainerError::NotFound(id.to_owned())),
            Lookup::Ambiguous => Err(ContainerError::Ambiguous(id.to_owned())),
        }
    }

    pub fn all(&self) -> Vec<Arc<Container>> {
        self.items.all()
    }

    pub fn in_sandbox(&self, sandbox_id: &str) -> Vec<Arc<Container>> {
        self.items.filter(|c| c.record.sandbox_id == sandbox_id)
    }
}

impl crate::image::ImageUsers for ContainerStore {
    fn containers_using(&self, image_id: &str) -> Vec<String> {
        self.items
            .filter(|c| c.record.image_id == image_id)
            .into_iter()
            .map(|c| c.id.clone())
            .collect()
    }
}

/// The name CRI reserves for a container.
pub fn container_name(
    config: &ContainerConfig,
    sandbox: &k8s_cri::v1::PodSandboxConfig,
) -> Result<String, ContainerError> {
    let m = config
        .metadata
        .as_ref()
        .ok_or_else(|| ContainerError::Invalid("container config has no metadata".into()))?;
    if m.name.is_empty() {
        return Err(ContainerError::Invalid(
            "container metadata.name is required".into(),
        ));
    }
    if m.name.contains('/') || m.name.contains('\0') {
        return Err(ContainerError::Invalid(format!(
            "container name {:?} has a forbidden character",
            m.name
        )));
    }
    let p = sandbox
        .metadata
        .as_ref()
        .ok_or_else(|| ContainerError::Invalid("sandbox config has no metadata".into()))?;
    Ok(format!(
        "{}_{}_{}_{}_{}",
        m.name, p.name, p.namespace, p.uid, m.attempt
    ))
}
