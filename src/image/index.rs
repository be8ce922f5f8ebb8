//! The image records (`<root>/images/<id hex>.json`) and the in-memory index that
//! answers by id, id prefix, tag or digest without touching the disk.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use super::content::{hex_of, ContentStore};
use super::reference::ImageQuery;
use super::ImageError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// Digest of the blob as stored (compressed).
    pub digest: String,
    /// Digest of the uncompressed tar: names the snapshot.
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<hex>` of the image config: the CRI image id.
    pub id: String,
    /// Normalized `registry/repository:tag` names pointing at this image.
    pub repo_tags: Vec<String>,
    /// Normalized `registry/repository@sha256:…` names (manifest or index digest).
    pub repo_digests: Vec<String>,
    pub manifest_digest: String,
    #[serde(default)]
    pub index_digest: Option<String>,
    pub layers: Vec<LayerRecord>,
    /// Config + compressed layers, in bytes (what a registry would transfer).
    pub size: u64,
    /// Unix seconds of the pull or import.
    pub stored_at: i64,
    /// A Proxmox template (`local:vztmpl/…`) this image name maps to: the image has no
    /// layers and runs only on the proxmox-lxc backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// One image as the daemon holds it: the record and its parsed config, shared with
/// CreateContainer so that it never re-reads or re-parses an image config.
#[derive(Debug)]
pub struct ImageEntry {
    pub record: ImageRecord,
    pub config: ImageConfiguration,
}

#[derive(Debug)]
pub struct ImageIndex {
    dir: PathBuf,
    by_id: HashMap<String, Arc<ImageEntry>>,
    /// tag names and digest names → id
    by_name: HashMap<String, String>,
    /// Records that could not be read at load, and why: what they reference is unknown,
    /// so garbage collection removes nothing while one is there.
    unreadable: Vec<(PathBuf, String)>,
}

impl ImageIndex {
    /// Loads every record; a torn or unreadable record is skipped with a warning rather
    /// than stopping the daemon, and remembered (`unreadable`): its blobs and snapshots
    /// are not garbage, since a container may run on them.
    pub fn load(dir: &Path, content: &ContentStore) -> Result<ImageIndex, ImageError> {
        fs::create_dir_all(dir)
            .map_err(|e| ImageError::io(format!("create {}", dir.display()), e))?;
        let mut index = ImageIndex {
            dir: dir.to_owned(),
            by_id: HashMap::new(),
            by_name: HashMap::new(),
            unreadable: Vec::new(),
        };
        let entries =
            fs::read_dir(dir).map_err(|e| ImageError::io(format!("read {}", dir.display()), e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let error = match crate::store::read_json::<ImageRecord>(&path) {
                Ok(Some(record)) => match load_config(content, &record.id) {
                    Ok(config) => {
                        index.insert_entry(Arc::new(ImageEntry { record, config }));
                        continue;
                    }
                    Err(e) => e.to_string(),
                },
                Ok(None) => continue,
                Err(e) => e.to_string(),
            };
            tracing::warn!(record = %path.display(), %error, "image record skipped");
            index.unreadable.push((path, error));
        }
        Ok(index)
    }

    fn record_path(&self, id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.dir.join(format!("{}.json", hex_of(id)?)))
    }

    fn insert_entry(&mut self, entry: Arc<ImageEntry>) {
        for name in entry
            .record
            .repo_tags
            .iter()
            .chain(&entry.record.repo_digests)
        {
            self.by_name.insert(name.clone(), entry.record.id.clone());
        }
        self.by_id.insert(entry.record.id.clone(), entry);
    }

    /// Records a pulled or imported image under `names`. Names already pointing at
    /// another image move to this one (the other keeps its remaining names, like
    /// `docker pull` of a moved tag). Persists every record it changes.
    pub fn add(&mut self, mut entry: ImageEntry) -> Result<Arc<ImageEntry>, ImageError> {
        if let Some(existing) = self.by_id.get(&entry.record.id) {
            // Same image again: keep its names and add the new ones.
            let mut merged = existing.record.clone();
            for n in entry.record.repo_tags.drain(..) {
                if !merged.repo_tags.contains(&n) {
                    merged.repo_tags.push(n);
                }
            }
            for n in entry.record.repo_digests.drain(..) {
                if !merged.repo_digests.contains(&n) {
                    merged.repo_digests.push(n);
                }
            }
            entry.record = merged;
        }
        let moved: Vec<(String, String)> = entry
            .record
            .repo_tags
            .iter()
            .filter_map(|n| match self.by_name.get(n) {
                Some(other) if *other != entry.record.id => Some((other.clone(), n.clone())),
                _ => None,
            })
            .collect();
        crate::store::write_json(&self.record_path(&entry.record.id)?, &entry.record)
            .map_err(|e| ImageError::Store(e.to_string()))?;
        for (other_id, name) in moved {
            if let Some(other) = self.by_id.get(&other_id).cloned() {
                let mut record = other.record.clone();
                record.repo_tags.retain(|t| *t != name);
                crate::store::write_json(&self.record_path(&other_id)?, &record)
                    .map_err(|e| ImageError::Store(e.to_string()))?;
                let updated = Arc::new(ImageEntry {
                    record,
                    config: other.config.clone(),
                });
                self.by_id.insert(other_id, updated);
            }
        }
        let entry = Arc::new(entry);
        self.insert_entry(entry.clone());
        Ok(entry)
    }

    /// Deletes an image's record and names. The caller collects its blobs.
    pub fn remove(&mut self, id: &str) -> Result<Option<Arc<ImageEntry>>, ImageError> {
        let Some(entry) = self.by_id.get(id).cloned() else {
            return Ok(None);
        };
        match fs::remove_file(self.record_path(id)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ImageError::io(format!("remove image record {id}"), e))
            }
            _ => {}
        }
        self.by_id.remove(id);
        self.by_name.retain(|_, v| v != id);
        Ok(Some(entry))
    }

    pub fn get(&self, id: &str) -> Option<Arc<ImageEntry>> {
        self.by_id.get(id).cloned()
    }

    /// Finds an image by id, unique id prefix, tag or digest name.
    pub fn find(&self, query: &ImageQuery) -> Result<Option<Arc<ImageEntry>>, ImageError> {
        match query {
            ImageQuery::Id(hex) if hex.len() == 64 => Ok(self.get(&format!("sha256:{hex}"))),
            ImageQuery::Id(prefix) => {
                let wanted = format!("sha256:{prefix}");
                let mut found = self.by_id.iter().filter(|(id, _)| id.starts_with(&wanted));
                match (found.next(), found.next()) {
                    (Some((_, e)), None) => Ok(Some(e.clone())),
                    (None, _) => Ok(None),
                    (Some(_), Some(_)) => Err(ImageError::AmbiguousId(prefix.clone())),
                }
            }
            ImageQuery::NameOrIdPrefix(r, prefix) => {
                match self.find(&ImageQuery::Name(r.clone()))? {
                    Some(e) => Ok(Some(e)),
                    None => self.find(&ImageQuery::Id(prefix.clone())),
                }
            }
            ImageQuery::Name(r) => {
                let key = match (r.digest(), super::reference::tag_name(r)) {
                    (Some(d), _) => super::reference::digest_name(r, d),
                    (None, Some(tag)) => tag,
                    (None, None) => return Ok(None),
                };
                Ok(self.by_name.get(&key).and_then(|id| self.get(id)))
            }
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ImageEntry>> {
        self.by_id.values()
    }

    /// Records that could not be read at load and are still there, unreplaced by a
    /// pull of the same image.
    pub fn unreadable(&self) -> Vec<(&Path, &str)> {
        self.unreadable
            .iter()
            .filter(|(path, _)| {
                let id = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(|hex| format!("sha256:{hex}"));
                path.exists() && !id.is_some_and(|id| self.by_id.contains_key(&id))
            })
            .map(|(p, e)| (p.as_path(), e.as_str()))
            .collect()
    }
}

/// Reads and parses an image config blob.
pub fn load_config(content: &ContentStore, digest: &str) -> Result<ImageConfiguration, ImageError> {
    let bytes = content.read(digest)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::InvalidContent(format!("image config {digest}: {e}")))
}
