//! The guests this daemon made: one record per container, `<root>/proxmox/guests/<id16>.json`,
//! written as soon as PVE accepted the create (the VMID is known) and removed once the
//! guest is destroyed. On the state root, not the run dir: guests outlive a host reboot,
//! and a restarted daemon must find its VMIDs again (and never mistake them for orphans).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuestRecord {
    pub container_id: String,
    pub pod_id: String,
    pub vmid: u32,
    pub node: String,
    pub template: String,
    /// The container's CRI log file (lifecycle lines).
    pub log: Option<crate::logs::LogTarget>,
    /// The container's run dir (status.json): the key every backend call comes with.
    pub run_dir: PathBuf,
    /// IPv4/IPv6 addresses (no prefix) as last read from the guest's interfaces.
    #[serde(default)]
    pub ips: Vec<String>,
}

pub struct Guests {
    dir: PathBuf,
    by_key: Mutex<HashMap<String, GuestRecord>>,
}

/// A container's key: the last component of its run dir (`<id16>`, unique per daemon).
fn key(run_dir: &Path) -> String {
    run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Guests {
    /// Loads every record under `dir` (created when missing); unreadable ones are
    /// skipped with a warning, their guests then show up as orphans, never destroyed.
    pub fn load(dir: &Path) -> std::io::Result<Guests> {
        crate::store::create_dir_mode(dir, 0o700)?;
        let records = crate::store::load_flat::<GuestRecord>(dir)?;
        Ok(Guests {
            dir: dir.to_owned(),
            by_key: Mutex::new(records.into_iter().map(|r| (key(&r.run_dir), r)).collect()),
        })
    }

    /// No records and no dir (offline use: `proxrt select`).
    pub fn empty() -> Guests {
        Guests {
            dir: PathBuf::new(),
            by_key: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, GuestRecord>> {
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, k: &str) -> PathBuf {
        self.dir.join(format!("{k}.json"))
    }

    pub fn get(&self, run_dir: &Path) -> Option<GuestRecord> {
        self.map().get(&key(run_dir)).cloned()
    }

    /// Persists (fsync'd: it is the only trace of a VMID) and caches `r`.
    pub fn put(&self, r: GuestRecord) -> Result<(), crate::store::StoreError> {
        let k = key(&r.run_dir);
        crate::store::write_json(&self.path(&k), &r)?;
        self.map().insert(k, r);
        Ok(())
    }

    pub fn remove(&self, run_dir: &Path) -> std::io::Result<()> {
        let k = key(run_dir);
        match std::fs::remove_file(self.path(&k)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.map().remove(&k);
        Ok(())
    }

    /// Caches addresses (not persisted: they are re-read while the guest runs).
    pub fn set_ips(&self, run_dir: &Path, ips: Vec<String>) {
        if let Some(r) = self.map().get_mut(&key(run_dir)) {
            r.ips = ips;
        }
    }

    pub fn of_pod(&self, pod_id: &str) -> Vec<GuestRecord> {
        self.map()
            .values()
            .filter(|r| r.pod_id == pod_id)
            .cloned()
            .collect()
    }

    pub fn vmids(&self) -> BTreeSet<u32> {
        self.map().values().map(|r| r.vmid).collect()
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }
}
