//! Layer snapshots: `<root>/snapshots/<diff_id hex>/`, each one layer unpacked alone,
//! overlayfs-ready (whiteouts as 0:0 char devices, opaque dirs as xattrs), made once
//! and shared read-only as a lowerdir by every container of every image using it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::content::hex_of;
use super::renames::PendingRenames;
use super::unpack::{self, Compression};
use super::ImageError;
use crate::store::random_hex;

#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    /// Snapshots renamed into `dir` whose names are not yet durable (`renames.rs`).
    renames: PendingRenames,
}

const TMP_PREFIX: &str = ".tmp-";

impl SnapshotStore {
    pub fn open(dir: &Path) -> io::Result<SnapshotStore> {
        fs::create_dir_all(dir)?;
        Ok(SnapshotStore {
            dir: dir.to_owned(),
            renames: PendingRenames::new(dir),
        })
    }

    pub fn path(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.dir.join(hex_of(diff_id)?))
    }

    pub fn exists(&self, diff_id: &str) -> bool {
        self.path(diff_id).map(|p| p.is_dir()).unwrap_or(false)
    }

    /// Unpacks the layer blob at `blob` into its snapshot: `unpack` then `commit`.
    pub fn create(
        &self,
        diff_id: &str,
        blob: &Path,
        compression: Compression,
    ) -> Result<PathBuf, ImageError> {
        let file = fs::File::open(blob).map_err(|source| unpack::UnpackError::Blob {
            path: blob.to_owned(),
            source,
        })?;
        let unpacked = self.unpack(file, compression)?;
        self.commit(unpacked, diff_id)
    }

    /// Unpacks a layer, read from `layer` to its end, into a temp dir of this store. The
    /// result becomes a snapshot only through `commit`; dropped, it is removed.
    pub fn unpack(
        &self,
        layer: impl std::io::Read,
        compression: Compression,
    ) -> Result<Unpacked, ImageError> {
        let tmp = self.dir.join(format!("{TMP_PREFIX}{}", random_hex(8)));
        fs::create_dir(&tmp).map_err(|e| ImageError::io(format!("create {}", tmp.display()), e))?;
        let mut unpacked = Unpacked {
            tmp,
            stats: Default::default(),
            committed: false,
        };
        unpacked.stats = unpack::unpack_reader(layer, compression, &unpacked.tmp)?;
        Ok(unpacked)
    }

    /// Checks an unpacked layer's diff_id, flushes it to disk, then renames it into
    /// place: a snapshot dir exists only complete and verified. The rename is made
    /// durable by `sync_renames`, before a record names the snapshot. A snapshot that
    /// appeared meanwhile (another copy of the layer, compressed differently) is the
    /// same content: the temp dir is dropped and that one is kept.
    pub fn commit(&self, mut unpacked: Unpacked, diff_id: &str) -> Result<PathBuf, ImageError> {
        let dest = self.path(diff_id)?;
        let stats = &unpacked.stats;
        if stats.diff_id != diff_id {
            return Err(ImageError::DigestMismatch {
                what: "layer content (diff_id)".into(),
                expected: diff_id.into(),
                actual: stats.diff_id.clone(),
            });
        }
        for skipped in &stats.skipped {
            tracing::warn!(layer = diff_id, %skipped, "layer entry skipped");
        }
        let tmp = &unpacked.tmp;
        sync_filesystem(tmp).map_err(|e| ImageError::io(format!("sync {}", tmp.display()), e))?;
        crate::crash_point!("pull_image.unpacked");
        match fs::rename(tmp, &dest) {
            Ok(()) => {
                unpacked.committed = true;
                self.renames.made();
            }
            // rename(2) of a dir onto a non-empty dir: ENOTEMPTY (or EEXIST).
            Err(e) if dest.is_dir() => {
                tracing::debug!(layer = diff_id, error = %e, "snapshot already there");
            }
            Err(e) => return Err(ImageError::io(format!("store snapshot {diff_id}"), e)),
        }
        Ok(dest)
    }

    /// Makes every snapshot renamed into place so far survive a power loss (one fsync
    /// of the snapshot directory, none if nothing new is there).
    pub fn sync_renames(&self) -> Result<(), ImageError> {
        self.renames
            .sync()
            .map_err(|e| ImageError::io(format!("sync {}", self.dir.display()), e))
    }

    /// Every complete snapshot's diff_id.
    pub fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(name) = name.to_str() {
                if name.len() == 64 && !name.starts_with('.') {
                    out.push(format!("sha256:{name}"));
                }
            }
        }
        Ok(out)
    }

    pub fn remove(&self, diff_id: &str) -> Result<(), ImageError> {
        remove_tree(&self.path(diff_id)?)
            .map_err(|e| ImageError::io(format!("remove snapshot {diff_id}"), e))
    }

    /// Removes half-made snapshots left by a crash: only when no pull runs.
    pub fn clear_temp(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = remove_tree(&entry.path());
            }
        }
        Ok(())
    }
}

/// A layer unpacked into a temp dir of the snapshot store, not yet a snapshot: removed
/// when dropped unless `SnapshotStore::commit` renamed it into place.
#[derive(Debug)]
pub struct Unpacked {
    tmp: PathBuf,
    stats: unpack::UnpackStats,
    committed: bool,
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(&self.tmp);
        }
    }
}

/// Flushes every file and dir of the filesystem holding `path` (syncfs(2)): one call
/// for a whole unpacked layer, where fsync per file would be thousands.
fn sync_filesystem(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = fs::File::open(path)?;
    nix::unistd::syncfs(dir.as_raw_fd()).map_err(io::Error::from)
}

fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
