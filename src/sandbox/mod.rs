//! Pod sandboxes: the name, the backend chosen for the pod, the record that survives a
//! daemon restart, and the store every RPC reads. What a pod is made of (namespaces and
//! files on this host, a Proxmox guest) is its backend's: `Backend::run_pod`.
//!
//! On disk: `<root>/sandboxes/<id>/sandbox.json` (the record) and `<run_dir>/s/<id16>/`
//! (what the backend keeps: for a host pod ns files, hostname, hosts, resolv.conf, shm).

#[cfg(test)]
mod lifecycle_tests;
mod port_forward;
mod rehome;
mod run;
mod stop;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_cri::v1::PodSandboxConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Classify, Kind};
use crate::events::{EventKind, Events};
use crate::names::NameTaken;
use crate::store::{ById, Lookup};

pub use port_forward::{check_port_forward, pod_dialer};
pub use rehome::{can_move, move_pod};
pub use run::run_pod_sandbox;
pub use stop::{remove_pod_sandbox, stop_pod_sandbox};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0}")]
    Invalid(String),
    #[error("pod sandbox {0:?} not found")]
    NotFound(String),
    #[error("pod sandbox id prefix {0:?} matches more than one sandbox")]
    Ambiguous(String),
    #[error("pod sandbox {id} is not ready ({state})")]
    NotReady { id: String, state: &'static str },
    #[error(transparent)]
    Name(#[from] NameTaken),
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    /// A container of the pod could not be stopped or removed: the pod operation fails
    /// with the container's error code.
    #[error("container {id} of pod {pod}: {source}")]
    Container {
        id: String,
        pod: String,
        source: Box<crate::container::ContainerError>,
    },
    /// Runtime selection refused the request (unknown handler, unavailable backend, mixed pod).
    #[error(transparent)]
    Select(#[from] crate::select::SelectError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl SandboxError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }
}

impl Classify for SandboxError {
    fn kind(&self) -> Kind {
        match self {
            SandboxError::Invalid(_) | SandboxError::Ambiguous(_) => Kind::InvalidArgument,
            SandboxError::NotFound(_) => Kind::NotFound,
            SandboxError::NotReady { .. } => Kind::FailedPrecondition,
            SandboxError::Name(e) => e.kind(),
            SandboxError::Backend(e) => e.kind(),
            SandboxError::Container { source, .. } => source.kind(),
            SandboxError::Select(e) => e.kind(),
            SandboxError::Store(_) | SandboxError::Io { .. } => Kind::Internal,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Ready,
    NotReady,
}

/// The namespace files containers of this pod join; `None` = the host's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: Option<PathBuf>,
    /// The inode of `pid` when the pod was made: the pid namespace's identity, checked
    /// before a container joins it (records from before it have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_inode: Option<u64>,
    /// The same for `ipc` and `uts` when they are the holder's `/proc/<pid>/ns/…`
    /// (records from before that had bind-mounted files and none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc_inode: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uts_inode: Option<u64>,
}

impl SandboxNamespaces {
    /// Each namespace path with the identity recorded for it (if any).
    pub fn identities(&self) -> [(Option<&Path>, Option<u64>); 3] {
        [
            (self.pid.as_deref(), self.pid_inode),
            (self.ipc.as_deref(), self.ipc_inode),
            (self.uts.as_deref(), self.uts_inode),
        ]
    }
}

/// What is persisted for a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    /// `<name>_<namespace>_<uid>_<attempt>`, reserved while the sandbox exists.
    pub name: String,
    pub config: PodSandboxConfig,
    pub runtime_handler: String,
    /// The backend every container of this pod uses.
    pub backend: String,
    /// Why that backend ("default", "handler crun", ...).
    pub backend_reason: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub state: SandboxState,
    pub holder_pid: Option<i32>,
    pub namespaces: SandboxNamespaces,
    pub hostname: String,
    /// `<run_dir>/s/<id16>`: hostname, hosts, resolv.conf, shm, ns files.
    pub run_dir: PathBuf,
    /// Whether `<run_dir>/shm` is a tmpfs this sandbox mounted.
    pub shm_mounted: bool,
    /// The pod's CNI attachment until StopPodSandbox has run DEL (records of older
    /// daemons have none).
    #[serde(default)]
    pub network: Option<crate::network::PodNetwork>,
}

#[cfg(test)]
impl SandboxRecord {
    /// A record for unit tests: pod `web` of namespace `default` (uid `uid`) on the fake
    /// backend, created at 5 ns, with no holder, namespaces or files.
    pub(crate) fn for_tests(id: &str, state: SandboxState) -> SandboxRecord {
        SandboxRecord {
            id: id.into(),
            name: "web_default_uid_0".into(),
            config: PodSandboxConfig {
                metadata: Some(k8s_cri::v1::PodSandboxMetadata {
                    name: "web".into(),
                    namespace: "default".into(),
                    uid: "uid".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            runtime_handler: String::new(),
            backend: "fake".into(),
            backend_reason: "default".into(),
            created_at: 5,
            state,
            holder_pid: None,
            namespaces: Default::default(),
            hostname: String::new(),
            run_dir: "/nonexistent".into(),
            shm_mounted: false,
            network: None,
        }
    }
}

/// Where a pod's files live under the daemon's run dir: `<run_dir>/s/<id16>/` holds
/// what its backend keeps for it (a host pod: hostname, hosts, resolv.conf, shm, ns/).
/// The one place these paths are spelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPaths {
    pub run_dir: PathBuf,
}

impl SandboxPaths {
    /// The dir every pod's run dir is in: `<run_dir>/s`. The daemon makes it a mount of
    /// its own (`mounts::make_own_mount`), which a container's create detaches in its own
    /// mount namespace (`monitor::container::view`).
    pub fn pods_dir(daemon_run_dir: &Path) -> PathBuf {
        daemon_run_dir.join("s")
    }
    /// The paths of a new pod `id` (64 hex characters) under the daemon's run dir.
    pub fn new(daemon_run_dir: &Path, id: &str) -> SandboxPaths {
        SandboxPaths {
            run_dir: SandboxPaths::pods_dir(daemon_run_dir).join(id.get(..16).unwrap_or(id)),
        }
    }
    pub fn of_run_dir(run_dir: &Path) -> SandboxPaths {
        SandboxPaths {
            run_dir: run_dir.to_owned(),
        }
    }
    pub fn hostname(&self) -> PathBuf {
        self.run_dir.join("hostname")
    }
    pub fn hosts(&self) -> PathBuf {
        self.run_dir.join("hosts")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.run_dir.join("resolv.conf")
    }
    pub fn shm(&self) -> PathBuf {
        self.run_dir.join("shm")
    }
    pub fn ns_dir(&self) -> PathBuf {
        self.run_dir.join("ns")
    }
    /// The holder's pid, written before the holder is kept (so that a pod whose record
    /// was never written can still be undone: `intent.rs`).
    pub fn holder(&self) -> PathBuf {
        self.run_dir.join("holder")
    }
}

/// The pod's namespace options as sent (each mode POD when none were).
pub fn namespace_options(config: &PodSandboxConfig) -> k8s_cri::v1::NamespaceOption {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

impl SandboxRecord {
    pub fn paths(&self) -> SandboxPaths {
        SandboxPaths::of_run_dir(&self.run_dir)
    }
    /// The pod's cgroup parent as kubelet sent it (may be empty).
    pub fn cgroup_parent(&self) -> &str {
        self.config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.as_str())
            .unwrap_or("")
    }
    pub fn privileged(&self) -> bool {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged)
    }
}

/// A live sandbox: its record behind a lock (state changes), shared by RPCs.
pub struct Sandbox {
    pub id: String,
    record: Mutex<SandboxRecord>,
    /// Serializes stop/remove of this sandbox.
    pub op_lock: tokio::sync::Mutex<()>,
    /// Where the pod turning NotReady is told.
    events: Events,
}

impl Sandbox {
    pub fn new(record: SandboxRecord, events: Events) -> Sandbox {
        Sandbox {
            id: record.id.clone(),
            record: Mutex::new(record),
            op_lock: tokio::sync::Mutex::new(()),
            events,
        }
    }

    pub fn record(&self) -> SandboxRecord {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn state(&self) -> SandboxState {
        self.record.lock().unwrap_or_else(|e| e.into_inner()).state
    }

    /// Changes the record and persists it atomically and durably. A pod that goes from
    /// ready to not ready (stopped, or found gone) publishes the stopped event.
    pub fn update(
        &self,
        store_dir: &Path,
        f: impl FnOnce(&mut SandboxRecord),
    ) -> Result<(), SandboxError> {
        self.update_with(store_dir, crate::store::write_json, f)
    }

    /// Like `update`, without waiting for the disk: for a change that a host crash may
    /// lose because the start after it finds the same again. A stopped pod is one: its
    /// holder and namespaces are gone after a reboot whatever the record says, and
    /// StopPodSandbox, which kubelet calls again for a pod it finds not ready, is
    /// idempotent (CNI DEL included).
    pub fn update_unsynced(
        &self,
        store_dir: &Path,
        f: impl FnOnce(&mut SandboxRecord),
    ) -> Result<(), SandboxError> {
        self.update_with(store_dir, crate::store::replace_json, f)
    }

    fn update_with(
        &self,
        store_dir: &Path,
        write: fn(&Path, &SandboxRecord) -> Result<(), crate::store::StoreError>,
        f: impl FnOnce(&mut SandboxRecord),
    ) -> Result<(), SandboxError> {
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = r.clone();
        f(&mut next);
        write(&store_dir.join(&self.id).join(RECORD_FILE), &next)?;
        let stopped = r.state == SandboxState::Ready && next.state == SandboxState::NotReady;
        *r = next.clone();
        drop(r);
        if stopped {
            self.events.sandbox(EventKind::Stopped, || next);
        }
        Ok(())
    }
}

/// Marks a ready pod NotReady as soon as its backend says its namespaces died under it
/// (the holder killed or crashed: with a shared pid namespace every container died with
/// it), so kubelet sees the pod gone and makes a new one. A stop in progress holds the
/// pod's op lock and marks it NotReady itself, so a deliberate stop is never reported
/// twice. The holder's pid stays in the record: StopPodSandbox still tears down what is
/// left (namespace files, network), and checks the pid's name before signalling it.
pub fn watch_pod(
    backend: &Arc<dyn crate::backend::Backend>,
    sandbox: Arc<Sandbox>,
    store_dir: PathBuf,
) {
    let record = sandbox.record();
    if record.state != SandboxState::Ready {
        return;
    }
    let Some(gone) = backend.pod_gone(&record) else {
        return;
    };
    tokio::spawn(async move {
        gone.await;
        let _op = sandbox.op_lock.lock().await;
        if sandbox.state() != SandboxState::Ready {
            return;
        }
        tracing::warn!(sandbox = %sandbox.id, "pod namespace holder exited; marking the sandbox NotReady");
        if let Err(e) = sandbox.update(&store_dir, |r| r.state = SandboxState::NotReady) {
            tracing::warn!(sandbox = %sandbox.id, error = %e, "update sandbox record");
        }
    });
}

pub const RECORD_FILE: &str = "sandbox.json";

/// Every sandbox, by id.
pub struct SandboxStore {
    dir: PathBuf,
    items: ById<Sandbox>,
    events: Events,
}

impl SandboxStore {
    /// Loads every record under `<root>/sandboxes`; unreadable ones are skipped with a
    /// warning. Changes from now on are published to `events`.
    pub fn load(dir: &Path, events: Events) -> Result<SandboxStore, SandboxError> {
        // RunPodSandbox writes its record once the pod is made: beside an intent it is a pod
        // whose intent had not gone yet (`intent::clear_once_durable`).
        let records = crate::store::load_records::<SandboxRecord>(
            dir,
            RECORD_FILE,
            crate::store::BesideIntent::Finished,
        )
        .map_err(|e| SandboxError::io(format!("load sandboxes from {}", dir.display()), e))?;
        Ok(SandboxStore {
            dir: dir.to_owned(),
            items: ById::new(
                records
                    .into_iter()
                    .map(|r| (r.id.clone(), Arc::new(Sandbox::new(r, events.clone())))),
            ),
            events,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<root>/sandboxes/<id>`: the sandbox's record lives here.
    pub fn record_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// `<root>/sandboxes/<id>/sandbox.json`.
    pub fn record_path(&self, id: &str) -> PathBuf {
        self.record_dir(id).join(RECORD_FILE)
    }

    /// Writes a new record atomically, not yet durably: RunPodSandbox answers without
    /// waiting for the disk and has it made durable afterwards, removing the intent only
    /// then (`intent::clear_once_durable`). Later changes go through `Sandbox::update`.
    pub fn persist(&self, record: &SandboxRecord) -> Result<(), SandboxError> {
        Ok(crate::store::replace_json(
            &self.record_path(&record.id),
            record,
        )?)
    }

    /// What a new sandbox publishes its changes to.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// A pod made and ready becomes visible: the created and started events (a pod
    /// runs from the moment it exists, as containerd reports its sandboxes).
    pub fn insert(&self, sandbox: Arc<Sandbox>) {
        self.items.insert(sandbox.id.clone(), sandbox.clone());
        self.events.sandbox(EventKind::Created, || sandbox.record());
        if sandbox.state() == SandboxState::Ready {
            self.events.sandbox(EventKind::Started, || sandbox.record());
        }
    }

    /// A removed pod is forgotten: the deleted event, with its last record.
    pub fn remove(&self, id: &str) {
        if let Some(s) = self.items.remove(id) {
            self.events.sandbox(EventKind::Deleted, || s.record());
        }
    }

    /// By full id or unique prefix.
    pub fn get(&self, id: &str) -> Result<Arc<Sandbox>, SandboxError> {
        match self.items.lookup(id) {
            Lookup::Found(s) => Ok(s),
            Lookup::Empty => Err(SandboxError::Invalid("pod sandbox id is required".into())),
            Lookup::Missing => Err(SandboxError::NotFound(id.to_owned())),
            Lookup::Ambiguous => Err(SandboxError::Ambiguous(id.to_owned())),
        }
    }

    pub fn all(&self) -> Vec<Arc<Sandbox>> {
        self.items.all()
    }
}

/// The name CRI reserves for a sandbox.
pub fn sandbox_name(config: &PodSandboxConfig) -> Result<String, SandboxError> {
    let m = config
        .metadata
        .as_ref()
        .ok_or_else(|| SandboxError::Invalid("sandbox config has no metadata".into()))?;
    for (field, value) in [
        ("name", &m.name),
        ("namespace", &m.namespace),
        ("uid", &m.uid),
    ] {
        if value.is_empty() {
            return Err(SandboxError::Invalid(format!(
                "sandbox metadata.{field} is required"
            )));
        }
        if value.contains('/') || value.contains('\0') {
            return Err(SandboxError::Invalid(format!(
                "sandbox metadata.{field} {value:?} has a forbidden character"
            )));
        }
    }
    Ok(format!(
        "{}_{}_{}_{}",
        m.name, m.namespace, m.uid, m.attempt
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::PodSandboxMetadata;

    #[test]
    fn names_follow_cri_and_refuse_missing_fields() {
        let mut c = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                attempt: 2,
            }),
            ..Default::default()
        };
        assert_eq!(sandbox_name(&c).unwrap(), "web_default_u1_2");
        c.metadata.as_mut().unwrap().namespace.clear();
        assert!(sandbox_name(&c)
            .unwrap_err()
            .to_string()
            .contains("namespace"));
        c.metadata = None;
        assert!(sandbox_name(&c).is_err());
    }
}
