//! Containers: the record kept for each one, the in-memory store every RPC reads
//! (no disk access on Status/List), and the lifecycle operations, one per file.
//!
//! On disk: `<root>/containers/<id>/container.json` (record), `…/bundle/config.json`,
//! `…/upper`, `…/work` (overlay); `<run_dir>/c/<id16>/` is the monitor's dir
//! (status.json, monitor.sock) and `<run_dir>/c/<id16>/rootfs` the overlay mount.

mod attach;
mod bundle;
pub mod confine;
mod create;
mod exec;
mod lifecycle;
#[cfg(test)]
mod lifecycle_tests;
pub mod rootfs;
mod update;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use k8s_cri::v1::{ContainerConfig, LinuxContainerResources};
use serde::{Deserialize, Serialize};

use crate::backend::BackendError;
use crate::error::{Classify, Kind};
use crate::events::{ContainerView, EventKind, Events};
use crate::image::ImageError;
use crate::monitor::ContainerStatusFile;
use crate::names::NameTaken;
use crate::sandbox::SandboxError;
use crate::spec::SpecError;
use crate::store::{ById, Lookup};

pub(crate) use attach::{attach, validate_attach};
pub(crate) use create::abandon;
pub use create::create_container;
// `exec::check_stream_opts` and `exec::check_streamable` are what Attach checks too.
pub use exec::{check_exec_stream, exec_stream, exec_sync, reopen_log};
pub use lifecycle::{remove_container, start_container, stop_container, watch_exit};
pub use update::update_resources;

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
    /// The image cannot run on the container's backend (a Proxmox template in a host pod,
    /// an OCI image in a Proxmox pod).
    #[error("{0}")]
    WrongImage(String),
    #[error(transparent)]
    Name(#[from] NameTaken),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A path or reference of the request reaches outside what the container may use.
    #[error(transparent)]
    Confine(#[from] confine::ConfineError),
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
            ContainerError::WrongState { .. }
            | ContainerError::MountNotShared { .. }
            | ContainerError::WrongImage(_) => Kind::FailedPrecondition,
            ContainerError::Name(e) => e.kind(),
            ContainerError::Sandbox(e) => e.kind(),
            ContainerError::Image(e) => e.kind(),
            ContainerError::Spec(e) => e.kind(),
            ContainerError::Confine(e) => e.kind(),
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

/// Where a container's files live; the one place these paths are spelled.
///
/// `<root>/containers/<id>/` holds the record, `bundle/config.json` and the writable
/// layer (`upper/`, `work/`); `<run_dir>/c/<id16>/` is the monitor's dir (status.json,
/// monitor.sock: kept short for the socket path) with the rootfs mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPaths {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
}

impl ContainerPaths {
    /// The paths of a new container `id` (64 hex characters).
    pub fn new(store_dir: &Path, daemon_run_dir: &Path, id: &str) -> ContainerPaths {
        ContainerPaths {
            state_dir: store_dir.join(id),
            run_dir: daemon_run_dir.join("c").join(id.get(..16).unwrap_or(id)),
        }
    }
    pub fn record(&self) -> PathBuf {
        self.state_dir.join(RECORD_FILE)
    }
    pub fn bundle(&self) -> PathBuf {
        self.state_dir.join("bundle")
    }
    pub fn upper(&self) -> PathBuf {
        self.state_dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.state_dir.join("work")
    }
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

/// One reading of a container's monitor status, and the phase derived from it.
#[derive(Debug, Clone, Default)]
pub struct StatusSnapshot(Option<ContainerStatusFile>);

impl StatusSnapshot {
    pub fn phase(&self) -> Phase {
        match &self.0 {
            None => Phase::Unknown,
            Some(s) if s.finished_at.is_some() => Phase::Exited,
            Some(s) if s.started_at.is_some() => Phase::Running,
            Some(_) => Phase::Created,
        }
    }

    /// The monitor's status as read, if it ever reported one.
    pub fn status(&self) -> Option<&ContainerStatusFile> {
        self.0.as_ref()
    }

    /// The error for an operation that needs another phase, naming the one seen.
    pub fn wrong_state(&self, id: &str, what: &str) -> ContainerError {
        ContainerError::WrongState {
            id: id.to_owned(),
            state: self.phase().name(),
            what: what.to_owned(),
        }
    }
}

/// How far a status has got: created, started, finished. A cached status only moves
/// forward.
fn progress(s: &ContainerStatusFile) -> u8 {
    match (s.started_at, s.finished_at) {
        (_, Some(_)) => 2,
        (Some(_), None) => 1,
        (None, None) => 0,
    }
}

/// A live container: its record and the last status its monitor reported.
pub struct Container {
    pub id: String,
    pub record: ContainerRecord,
    status: Mutex<Option<ContainerStatusFile>>,
    /// Serializes start/stop/remove of this container.
    pub op_lock: tokio::sync::Mutex<()>,
    /// `linux.cgroupsPath` of the container's spec, read once: see [`ContainerStore::cgroup`].
    cgroup: OnceLock<Option<String>>,
    /// The resources in force: the create request's, then each UpdateContainerResources'.
    resources: Mutex<Option<LinuxContainerResources>>,
    /// Where its status changes are told (started, stopped).
    events: Events,
    /// Its ListContainers entry as protobuf, but for the state: the record never changes
    /// (cri/list_containers.rs, `entry_parts`).
    pub(crate) list_entry: OnceLock<(Vec<u8>, Vec<u8>)>,
}

impl Container {
    pub fn new(
        record: ContainerRecord,
        status: Option<ContainerStatusFile>,
        events: Events,
    ) -> Container {
        Container {
            id: record.id.clone(),
            status: Mutex::new(status),
            events,
            op_lock: tokio::sync::Mutex::new(()),
            cgroup: OnceLock::new(),
            list_entry: OnceLock::new(),
            resources: Mutex::new(
                record
                    .config
                    .linux
                    .as_ref()
                    .and_then(|l| l.resources.clone()),
            ),
            record,
        }
    }

    /// The resources in force (ContainerStatus reports them).
    pub fn resources(&self) -> Option<LinuxContainerResources> {
        self.resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One consistent reading of the container's status. Every answer about the
    /// container (its phase, times, exit code, reason) is built from one snapshot: the
    /// phase is derived from the same copy as the fields shown with it, never read again,
    /// so an exit landing mid-answer cannot produce "EXITED, finished_at 0, exit 0".
    pub fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot(
            self.status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Replaces the cached status, never moving it backwards: a reader that loaded an
    /// older status.json (created, running) must not overwrite the exit another task
    /// recorded meanwhile. Returns the status now cached.
    ///
    /// This is where every start and every exit is first seen (whoever caused it: a
    /// StartContainer, a process ending on its own, a stop), so the started and stopped
    /// events are published here, once per step forward. They are sent after the lock is
    /// released (capturing the pod's other containers takes their locks); their order still
    /// holds because the steps cannot race: only StartContainer (under the op lock) sees the
    /// start, and the exit watcher is spawned after it; an exit is published by whichever
    /// reader sees it first, the others find nothing new.
    pub(crate) fn advance_status(&self, next: ContainerStatusFile) -> StatusSnapshot {
        let mut cur = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let before = cur.as_ref().map(progress);
        let keep = before.is_some_and(|b| b > progress(&next));
        if !keep {
            *cur = Some(next);
        }
        let snap = StatusSnapshot(cur.clone());
        drop(cur);
        self.publish_progress(before, &snap);
        snap
    }

    /// Started and stopped events for the steps between `before` and `now`. A container
    /// whose exit is seen before its start was still started first (kubelet's Evented
    /// PLEG reacts to each).
    fn publish_progress(&self, before: Option<u8>, now: &StatusSnapshot) {
        let Some(after) = now.status().map(progress) else {
            return;
        };
        let before = before.unwrap_or(0);
        let started = now.status().is_some_and(|s| s.started_at.is_some());
        if before < 1 && after >= 1 && started {
            self.events.container(EventKind::Started, || self.view(now));
        }
        if before < 2 && after >= 2 {
            self.events.container(EventKind::Stopped, || self.view(now));
        }
    }

    /// The container as of `snap`, for an event.
    pub fn view(&self, snap: &StatusSnapshot) -> ContainerView {
        ContainerView {
            record: self.record.clone(),
            snapshot: snap.clone(),
            resources: self.resources(),
        }
    }

    /// The monitor died without recording an exit (killed, host trouble): the container
    /// is reported exited with code 255 and a message saying why, never "running" forever.
    pub fn mark_lost(&self) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if s.as_ref().is_some_and(|s| s.finished_at.is_some()) {
            return;
        }
        let now = crate::store::now_nanos();
        let mut next = s
            .clone()
            .unwrap_or_else(|| ContainerStatusFile::created(0, 0, self.record.created_at));
        next.finished_at = Some(now);
        next.exit_code = Some(255);
        next.message =
            Some("the container's monitor exited without recording an exit status".into());
        *s = Some(next);
        let snap = StatusSnapshot(s.clone());
        drop(s);
        self.events
            .container(EventKind::Stopped, || self.view(&snap));
    }

    /// Refreshes the cached status from the monitor's status.json and returns the
    /// snapshot to decide on.
    pub fn refresh(&self) -> StatusSnapshot {
        match crate::monitor::read_status(&self.record.run_dir) {
            Ok(Some(s)) => self.advance_status(s),
            Ok(None) => self.snapshot(),
            Err(e) => {
                tracing::warn!(container = %self.id, error = %e, "status.json unreadable");
                self.snapshot()
            }
        }
    }
}

pub const RECORD_FILE: &str = "container.json";
/// The resources of the last UpdateContainerResources, beside the record.
const RESOURCES_FILE: &str = "resources.json";

/// Every container, by id, with an index by sandbox.
pub struct ContainerStore {
    dir: PathBuf,
    items: ById<Container>,
    events: Events,
}

impl ContainerStore {
    /// Loads every record; each container's status comes from its monitor's status.json.
    /// Changes from now on are published to `events`.
    pub fn load(dir: &Path, events: Events) -> Result<ContainerStore, ContainerError> {
        // CreateContainer writes its record while the backend creates: beside an intent it
        // is a create that did not finish.
        let records = crate::store::load_records::<ContainerRecord>(
            dir,
            RECORD_FILE,
            crate::store::BesideIntent::Unfinished,
        )
        .map_err(|e| ContainerError::io(format!("load containers from {}", dir.display()), e))?;
        Ok(ContainerStore {
            dir: dir.to_owned(),
            events: events.clone(),
            items: ById::new(records.into_iter().map(|r| {
                let status = crate::monitor::read_status(&r.run_dir).ok().flatten();
                let updated = crate::store::read_json::<LinuxContainerResources>(
                    &dir.join(&r.id).join(RESOURCES_FILE),
                )
                .ok()
                .flatten();
                let c = Container::new(r, status, events.clone());
                if updated.is_some() {
                    *c.resources.lock().unwrap_or_else(|e| e.into_inner()) = updated;
                }
                (c.id.clone(), Arc::new(c))
            })),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What a new container publishes its changes to.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Records the resources an update put in force, on disk first.
    pub fn set_resources(
        &self,
        c: &Container,
        r: LinuxContainerResources,
    ) -> Result<(), ContainerError> {
        crate::store::write_json(&self.dir.join(&c.id).join(RESOURCES_FILE), &r)?;
        *c.resources.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        Ok(())
    }

    /// The paths of a container this store holds (or is about to).
    pub fn paths(&self, record: &ContainerRecord) -> ContainerPaths {
        ContainerPaths {
            state_dir: self.dir.join(&record.id),
            run_dir: record.run_dir.clone(),
        }
    }

    /// The cgroup the container was created in, as its runtime was told: `linux.cgroupsPath`
    /// of the spec in its bundle (create decides it once; nothing derives it again). Read
    /// once per container and kept. None when the spec has none or cannot be read.
    pub fn cgroup(&self, c: &Container) -> Option<String> {
        c.cgroup
            .get_or_init(|| {
                let path = self.paths(&c.record).bundle().join("config.json");
                match spec_cgroups_path(&path) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(container = %c.id, error = %e, "no cgroup path");
                        None
                    }
                }
            })
            .clone()
    }

    /// A created container becomes visible: the created event.
    pub fn insert(&self, c: Arc<Container>) {
        self.items.insert(c.id.clone(), c.clone());
        self.events
            .container(EventKind::Created, || c.view(&c.snapshot()));
    }

    /// A removed container is forgotten: the deleted event, with its last status.
    pub fn remove(&self, id: &str) {
        if let Some(c) = self.items.remove(id) {
            self.events
                .container(EventKind::Deleted, || c.view(&c.snapshot()));
        }
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

    fn images_in_use(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .items
            .all()
            .into_iter()
            .map(|c| c.record.image_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// `linux.cgroupsPath` of the OCI spec at `path`, reading only that field.
fn spec_cgroups_path(path: &Path) -> Result<Option<String>, String> {
    #[derive(Deserialize)]
    struct Spec {
        linux: Option<Linux>,
    }
    #[derive(Deserialize)]
    struct Linux {
        #[serde(rename = "cgroupsPath")]
        cgroups_path: Option<String>,
    }
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let spec: Spec =
        serde_json::from_slice(&bytes).map_err(|e| format!("parse {}: {e}", path.display()))?;
    Ok(spec.linux.and_then(|l| l.cgroups_path))
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

#[cfg(test)]
mod cgroup_tests {
    use super::*;

    fn record(id: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            name: "n_p_ns_uid_0".into(),
            sandbox_id: "s".repeat(64),
            config: Default::default(),
            image_name: "busybox".into(),
            image_id: "sha256:00".into(),
            image_ref: "sha256:00".into(),
            created_at: 1,
            log_path: None,
            backend: "libcontainer".into(),
            backend_reason: "default".into(),
            stop_signal: 15,
            run_dir: "/nonexistent".into(),
        }
    }

    /// The cgroup is the one the bundle's spec names, read once: a spec rewritten later
    /// does not move a container's stats elsewhere.
    #[test]
    fn a_containers_cgroup_is_its_specs() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContainerStore::load(dir.path(), Events::default()).unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let write = |id: &str, json: &str| {
            let bundle = store.paths(&record(id)).bundle();
            std::fs::create_dir_all(&bundle).unwrap();
            std::fs::write(bundle.join("config.json"), json).unwrap();
        };
        write(
            &a,
            r#"{"ociVersion":"1.0.2","linux":{"cgroupsPath":"/kubepods/pod1/proxrt-a","namespaces":[]}}"#,
        );
        write(&b, r#"{"ociVersion":"1.0.2","linux":{}}"#);
        let ca = Container::new(record(&a), None, Events::default());
        assert_eq!(
            store.cgroup(&ca).as_deref(),
            Some("/kubepods/pod1/proxrt-a")
        );
        write(&a, r#"{"linux":{"cgroupsPath":"/elsewhere"}}"#);
        assert_eq!(
            store.cgroup(&ca).as_deref(),
            Some("/kubepods/pod1/proxrt-a")
        );
        assert_eq!(
            store.cgroup(&Container::new(record(&b), None, Events::default())),
            None
        );
        let missing = Container::new(record(&"c".repeat(64)), None, Events::default());
        assert_eq!(store.cgroup(&missing), None);
    }
}
