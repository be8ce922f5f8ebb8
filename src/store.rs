//! Atomic state files: write a temp file, fsync, rename, fsync the directory.
//!
//! Readers tolerate a missing or torn file and say which one (see `read_json`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is torn or not valid JSON: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Replaces `path` with `bytes` so that a reader (or a crash) sees either the old
/// content or the new, never a mix.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_replace(path, bytes, true)
}

/// Like `atomic_write` (readers never see a mix) but without fsync: for derived files
/// that are rebuilt, never recovered, after a crash (an OCI bundle's config.json).
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_replace(path, bytes, false)
}

fn write_replace(path: &Path, bytes: &[u8], durable: bool) -> Result<(), StoreError> {
    let err = |source| StoreError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    // Unique per call: two tasks of one process may replace the same file at once.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp{}.{seq}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Serializes `value` as JSON and writes it atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Write {
        path: path.to_owned(),
        source: io::Error::other(e),
    })?;
    atomic_write(path, &bytes)
}

/// Serializes `value` as JSON and replaces `path` atomically without fsync: for state
/// that lives under the run dir (tmpfs on a real host, gone with a host crash, and a
/// daemon crash keeps the page cache), such as a monitor's status file.
pub fn replace_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Write {
        path: path.to_owned(),
        source: io::Error::other(e),
    })?;
    replace_file(path, &bytes)
}

/// Makes a file written without fsync (`replace_json`, `replace_file`) durable: its data,
/// then the directory entry that names it. A file removed meanwhile is not an error (its
/// owner went; there is nothing left to make durable).
pub fn sync_written(path: &Path) -> io::Result<()> {
    let synced = File::open(path)
        .and_then(|f| f.sync_all())
        .and_then(|()| File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all());
    match synced {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Reads a JSON state file. `Ok(None)` when it does not exist; `Corrupt` names the
/// file when it cannot be parsed (a torn write from before atomic writes, or a disk fault).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StoreError::Corrupt {
            path: path.to_owned(),
            source,
        })
}

/// Creates `path` and its parents with the given mode for the last component.
pub fn create_dir_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
}

/// Creates `path` (and its parents) and gives it exactly `mode`, whatever the umask and
/// whatever mode an older daemon created it with.
pub fn ensure_dir_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    create_dir_mode(path, mode)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// What a record beside an intent in its state dir means (`intent.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BesideIntent {
    /// The create had not finished (a container's record is written while the backend
    /// creates it): not loaded.
    Unfinished,
    /// The create had finished and the intent's removal had not happened yet (a pod's
    /// record is written once the pod is made; its intent goes once the record is
    /// durable): loaded.
    Finished,
}

/// Reads `<dir>/<id>/<file>` for every subdirectory of `dir` (created if missing).
/// A subdirectory without the file is a create or a removal the daemon was killed in:
/// it is not loaded, and the start's reconcile undoes it (`intent.rs`); one with an
/// intent beside the file is loaded or not as `beside_intent` says. A torn or unreadable
/// record is skipped with a warning naming it, so one bad file never keeps the daemon
/// from starting.
pub fn load_records<R: DeserializeOwned>(
    dir: &Path,
    file: &str,
    beside_intent: BesideIntent,
) -> io::Result<Vec<R>> {
    fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.')
            || (beside_intent == BesideIntent::Unfinished
                && entry.path().join(crate::intent::INTENT_FILE).exists())
        {
            continue;
        }
        match read_json::<R>(&entry.path().join(file)) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "state record skipped"),
        }
    }
    Ok(out)
}

/// Reads every `<dir>/*.json` (one record per file). A torn or unreadable record is
/// skipped with a warning naming it.
pub fn load_flat<R: DeserializeOwned>(dir: &Path) -> io::Result<Vec<R>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        match read_json::<R>(&path) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "state record skipped"),
        }
    }
    Ok(out)
}

/// Live objects by id, with the lookups CRI clients use: full id, or a unique prefix.
pub struct ById<T> {
    map: std::sync::RwLock<std::collections::HashMap<String, std::sync::Arc<T>>>,
}

/// What a lookup by id or prefix found.
pub enum Lookup<T> {
    Found(std::sync::Arc<T>),
    Empty,
    Missing,
    Ambiguous,
}

impl<T> ById<T> {
    pub fn new(items: impl IntoIterator<Item = (String, std::sync::Arc<T>)>) -> Self {
        ById {
            map: std::sync::RwLock::new(items.into_iter().collect()),
        }
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, std::collections::HashMap<String, std::sync::Arc<T>>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, id: String, item: std::sync::Arc<T>) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, item);
    }

    /// Forgets `id`, returning what was held.
    pub fn remove(&self, id: &str) -> Option<std::sync::Arc<T>> {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    /// By full id first (the hot path: one hash lookup), else a unique prefix.
    pub fn lookup(&self, id: &str) -> Lookup<T> {
        let map = self.read();
        if let Some(item) = map.get(id) {
            return Lookup::Found(item.clone());
        }
        if id.is_empty() {
            return Lookup::Empty;
        }
        let mut found = map.iter().filter(|(k, _)| k.starts_with(id));
        match (found.next(), found.next()) {
            (Some((_, item)), None) => Lookup::Found(item.clone()),
            (None, _) => Lookup::Missing,
            _ => Lookup::Ambiguous,
        }
    }

    pub fn all(&self) -> Vec<std::sync::Arc<T>> {
        self.read().values().cloned().collect()
    }

    pub fn filter(&self, keep: impl Fn(&T) -> bool) -> Vec<std::sync::Arc<T>> {
        self.read()
            .values()
            .filter(|item| keep(item))
            .cloned()
            .collect()
    }
}

/// `n` random bytes as hex (temp names, name suffixes).
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // getrandom only fails when the kernel has no entropy source at all.
    if getrandom::fill(&mut buf).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        buf.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (t >> ((i % 16) * 8)) as u8 ^ std::process::id() as u8);
    }
    hex::encode(buf)
}

/// A new container or sandbox id: 64 hex digits, like containerd's.
pub fn new_id() -> String {
    random_hex(32)
}

/// The current time in unix nanoseconds: what every record and status file stores.
pub fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_and_torn() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        assert!(read_json::<Vec<u32>>(&p).unwrap().is_none());
        write_json(&p, &vec![1u32, 2]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), Some(vec![1, 2]));
        fs::write(&p, b"[1, 2").unwrap();
        let err = read_json::<Vec<u32>>(&p).unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
        // no temp file is left beside it
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn lookups_by_id_and_unique_prefix() {
        let ids = ById::new([
            ("abc1".to_owned(), std::sync::Arc::new(1)),
            ("abd2".to_owned(), std::sync::Arc::new(2)),
        ]);
        assert!(matches!(ids.lookup("abd2"), Lookup::Found(v) if *v == 2));
        assert!(matches!(ids.lookup("abc"), Lookup::Found(v) if *v == 1));
        assert!(matches!(ids.lookup("ab"), Lookup::Ambiguous));
        assert!(matches!(ids.lookup("x"), Lookup::Missing));
        assert!(matches!(ids.lookup(""), Lookup::Empty));
        ids.remove("abc1");
        assert_eq!(ids.filter(|v| *v > 0).len(), 1);
    }

    #[test]
    fn load_records_skips_torn_unfinished_and_retired() {
        let dir = tempfile::tempdir().unwrap();
        for (id, body) in [
            ("good", Some("[1]")),
            ("torn", Some("[1")),
            ("unfinished", None),
            ("recorded-unfinished", Some("[3]")),
            (".removing-gone", Some("[2]")),
        ] {
            fs::create_dir(dir.path().join(id)).unwrap();
            if let Some(body) = body {
                fs::write(dir.path().join(id).join("r.json"), body).unwrap();
            }
        }
        fs::write(dir.path().join("recorded-unfinished/intent.json"), "{}").unwrap();
        let records: Vec<Vec<u32>> =
            load_records(dir.path(), "r.json", BesideIntent::Unfinished).unwrap();
        assert_eq!(records, vec![vec![1]]);
        // A pod's record beside its intent: made, the intent not yet gone.
        let mut records: Vec<Vec<u32>> =
            load_records(dir.path(), "r.json", BesideIntent::Finished).unwrap();
        records.sort();
        assert_eq!(records, vec![vec![1], vec![3]]);
        // Left to the start's reconcile (intent.rs), which knows what to undo first.
        assert!(dir.path().join("unfinished").exists());
        assert!(dir.path().join("recorded-unfinished").exists());
        assert!(
            dir.path().join("torn").exists(),
            "a torn record is kept for inspection"
        );
    }

    #[test]
    fn sync_written_keeps_the_file_and_a_missing_one_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        replace_json(&path, &[1]).unwrap();
        sync_written(&path).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), Some(vec![1]));
        fs::remove_file(&path).unwrap();
        sync_written(&path).unwrap();
        let err = sync_written(&dir.path().join("not-a-dir/r.json"));
        assert!(err.is_ok(), "{err:?}");
    }
}
