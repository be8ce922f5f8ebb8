//! Intent records and the startup reconcile (issue 12, item 8).
//!
//! RunPodSandbox and CreateContainer write an intent in the new object's state dir
//! (`intent.json`) before they make anything, and remove it once the record that
//! supersedes it is written. A daemon killed in between leaves an intent and no
//! record; at the next start, before any RPC is served, `finish_half_made` undoes each
//! such pod and container through its backend (the holder, namespace files, /dev/shm,
//! CNI, cgroups, the monitor and container, the overlay), then removes its dirs without
//! ever walking into a mount (`mounts::remove_tree`). What has a record and no intent is
//! kept: the create had finished. A container's record beside an intent is not
//! (CreateContainer writes its record while the backend creates, and clears the intent
//! only when both are done); a pod's is (RunPodSandbox writes its record once the pod
//! is made, answers, and removes the intent once the record is durable:
//! `clear_once_durable`). Dirs with neither (killed before the intent was written, or in
//! the middle of a removal) and run dirs that no record or intent owns are removed the
//! same way.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use k8s_cri::v1::PodSandboxConfig;
use serde::{Deserialize, Serialize};

use crate::context::Ctx;
use crate::store::StoreError;

/// The intent's file name in a pod's or container's state dir.
pub const INTENT_FILE: &str = "intent.json";

/// What RunPodSandbox is about to make: enough to undo it without a record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodIntent {
    pub id: String,
    /// The backend chosen for it (`Backend::abandon_pod` undoes).
    pub backend: String,
    /// The pod's run dir (namespace files, /dev/shm, the holder's pid).
    pub run_dir: PathBuf,
    /// Its config: the cgroup parent of the holder's cgroup, the namespaces, CNI's args.
    pub config: PodSandboxConfig,
}

/// What CreateContainer is about to make.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerIntent {
    pub id: String,
    pub backend: String,
    pub sandbox_id: String,
    /// The container's run dir (its monitor's socket and status, the rootfs mount).
    pub run_dir: PathBuf,
}

/// Writes a pod's intent; when what the pod is made of outlives a host crash (`durable`:
/// `Backend::pod_outlives_host`, an IP address allocated on disk, a Proxmox guest) it is
/// then fsync'd beside the backend's first steps, and the backend waits for that before
/// its first such step (`IntentOnDisk::wait`), so that the start after a crash undoes
/// it. Otherwise (a host-network pod of a host backend: processes, mounts, cgroups) it
/// is not fsync'd, as a container's.
pub fn write_pod(
    state_dir: &Path,
    intent: &PodIntent,
    durable: bool,
) -> Result<IntentOnDisk, StoreError> {
    let path = state_dir.join(INTENT_FILE);
    crate::store::replace_json(&path, intent)?;
    Ok(if durable {
        IntentOnDisk::sync(path)
    } else {
        IntentOnDisk::not_needed()
    })
}

/// A pod's intent on its way to the disk (`write_pod`).
#[derive(Clone)]
pub struct IntentOnDisk(Shared<BoxFuture<'static, Result<(), String>>>);

impl IntentOnDisk {
    fn sync(path: PathBuf) -> IntentOnDisk {
        let task = tokio::task::spawn_blocking(move || {
            crate::slow_point!("run_pod_sandbox.intent_sync");
            crate::store::sync_written(&path)
        });
        IntentOnDisk(
            async move {
                match task.await {
                    Ok(synced) => synced.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            .boxed()
            .shared(),
        )
    }

    /// Nothing to wait for: the pod leaves nothing a reboot does not remove (or it has no
    /// intent: a pod moved between backends, `rehome.rs`).
    pub fn not_needed() -> IntentOnDisk {
        IntentOnDisk(futures_util::future::ready(Ok(())).boxed().shared())
    }

    /// Resolves once the intent is on disk; an error says why it could not be synced.
    pub async fn wait(&self) -> Result<(), String> {
        self.0.clone().await
    }
}

impl std::fmt::Debug for IntentOnDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntentOnDisk")
    }
}

/// Writes a container's intent. Not fsync'd: all a container is made of (processes,
/// mounts, cgroups, run dir) is gone with a host crash, and a state dir whose intent
/// did not reach the disk is removed at start all the same.
pub fn write_container(state_dir: &Path, intent: &ContainerIntent) -> Result<(), StoreError> {
    crate::store::replace_json(&state_dir.join(INTENT_FILE), intent)
}

/// The record is written: the intent has served.
pub fn clear(state_dir: &Path) {
    if let Err(e) = std::fs::remove_file(state_dir.join(INTENT_FILE)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %state_dir.display(), error = %e, "remove intent");
        }
    }
}

/// A pod's record, written without fsync once the pod is made, supersedes its intent:
/// the record is made durable, then the intent goes. Until then a start finds both and
/// keeps the pod (`store::BesideIntent::Finished`); a host crash before the record
/// reached the disk leaves the intent alone (or beside a torn record), and the start
/// undoes the pod. If the record cannot be made durable the intent stays for the next
/// start to decide.
pub fn clear_once_durable(state_dir: &Path, record: &Path) {
    match crate::store::sync_written(record) {
        Ok(()) => clear(state_dir),
        Err(e) => {
            tracing::warn!(record = %record.display(), error = %e, "sync the record; its intent stays")
        }
    }
}

/// What a state dir that no loaded record owns holds.
enum Leftover<T> {
    /// An intent: the backend undoes what may have been made.
    Intent(T),
    /// No intent (or an unreadable one): only the dirs are removed.
    Bare,
}

/// The entries of `dir` (a store's directory) that no loaded record owns and that hold an
/// intent or no record file at all (an unreadable record without an intent is kept for
/// inspection, with its data), and every removal's leftover (`.removing-*`, whatever it
/// still holds: RemoveContainer and RemovePodSandbox retire the dir with its record and
/// remove its files after their answer).
fn unowned<T: serde::de::DeserializeOwned>(
    dir: &Path,
    record_file: &str,
    known: &HashSet<String>,
) -> Vec<(PathBuf, Leftover<T>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let retired = name.starts_with(crate::mounts::RETIRED_PREFIX);
        let unfinished = path.join(INTENT_FILE).exists();
        if known.contains(&name)
            || !path.is_dir()
            || (!retired && path.join(record_file).exists() && !unfinished)
        {
            continue;
        }
        let leftover = match crate::store::read_json::<T>(&path.join(INTENT_FILE)) {
            Ok(Some(intent)) if !retired => Leftover::Intent(intent),
            Ok(_) => Leftover::Bare,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable intent: removing the dir only");
                Leftover::Bare
            }
        };
        out.push((path, leftover));
    }
    out
}

/// Undoes every pod and container a killed daemon left half made (see the module doc).
/// Runs once at start, before the socket serves and before the loaded containers are
/// watched. Failures are logged and the leftover kept (with its intent) for the next
/// start to try again: a start is never refused for a leftover, and nothing is removed
/// that may still run.
pub async fn finish_half_made(ctx: &Ctx<'_>) {
    let containers: HashSet<String> = ctx.containers.all().iter().map(|c| c.id.clone()).collect();
    for (state_dir, leftover) in unowned::<ContainerIntent>(
        ctx.containers.dir(),
        crate::container::RECORD_FILE,
        &containers,
    ) {
        if let Leftover::Intent(intent) = leftover {
            if !under_run_dir(&intent.id, &intent.run_dir, ctx.run_dir) {
                continue;
            }
            tracing::warn!(container = %intent.id, "undoing a container whose creation was interrupted");
            let backend = match ctx.backends.get(&intent.backend) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(container = %intent.id, error = %e, "cannot undo it now; kept for the next start");
                    continue;
                }
            };
            let paths = crate::container::ContainerPaths {
                state_dir: state_dir.clone(),
                run_dir: intent.run_dir.clone(),
            };
            crate::container::abandon(backend.as_ref(), &intent.id, &paths).await;
        }
        remove(&state_dir);
    }
    let pods: HashSet<String> = ctx.sandboxes.all().iter().map(|s| s.id.clone()).collect();
    // Pods made, whose intent had not gone: the record is made durable first.
    for id in &pods {
        let state_dir = ctx.sandboxes.record_dir(id);
        if state_dir.join(INTENT_FILE).exists() {
            clear_once_durable(&state_dir, &ctx.sandboxes.record_path(id));
        }
    }
    for (state_dir, leftover) in
        unowned::<PodIntent>(ctx.sandboxes.dir(), crate::sandbox::RECORD_FILE, &pods)
    {
        if let Leftover::Intent(intent) = leftover {
            if !under_run_dir(&intent.id, &intent.run_dir, ctx.run_dir) {
                continue;
            }
            tracing::warn!(sandbox = %intent.id, "undoing a pod whose creation was interrupted");
            let undone = match ctx.backends.get(&intent.backend) {
                Ok(backend) => backend.abandon_pod(&intent).await,
                Err(e) => Err(e),
            };
            if let Err(e) = undone {
                tracing::warn!(sandbox = %intent.id, error = %e, "undo the pod; kept for the next start");
                continue;
            }
            remove(&intent.run_dir);
        }
        remove(&state_dir);
    }
    // Run dirs no pod or container owns any more: one interrupted before its intent was
    // written, or after its state dir went in a removal. Owned: a record's run dir, and
    // any whose id still has a state dir (kept above, or an unreadable record's).
    for (kind, store) in [("s", ctx.sandboxes.dir()), ("c", ctx.containers.dir())] {
        let mut owned: HashSet<String> = std::fs::read_dir(store)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| run_dir_name(&e.file_name().to_string_lossy()))
            .collect();
        owned.extend(
            ctx.sandboxes
                .all()
                .iter()
                .map(|s| s.record().run_dir)
                .chain(
                    ctx.containers
                        .all()
                        .iter()
                        .map(|c| c.record.run_dir.clone()),
                )
                .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())),
        );
        let Ok(entries) = std::fs::read_dir(ctx.run_dir.join(kind)) else {
            continue;
        };
        for entry in entries.flatten() {
            if !owned.contains(entry.file_name().to_string_lossy().as_ref()) {
                tracing::warn!(dir = %entry.path().display(), "removing a run dir no pod or container owns");
                remove(&entry.path());
            }
        }
    }
}

/// Whether an intent's run dir is in the daemon's run dir (the state root is root's
/// alone, but an intent is never trusted to name anything else for removal).
fn under_run_dir(id: &str, run_dir: &Path, daemon_run_dir: &Path) -> bool {
    let ours = run_dir.starts_with(daemon_run_dir);
    if !ours {
        tracing::warn!(id, run_dir = %run_dir.display(), "intent names a run dir outside the daemon's: left alone");
    }
    ours
}

/// A pod's or container's run dir is named by the first 16 characters of its id.
fn run_dir_name(id: &str) -> String {
    id.get(..16).unwrap_or(id).to_owned()
}

fn remove(dir: &Path) {
    if let Err(e) = crate::mounts::remove_tree(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "remove what an interrupted operation left");
    }
}
