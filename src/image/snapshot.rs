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

    /// Unpacks `blob` into a temp dir, checks the result's diff_id, flushes it to disk,
    /// then renames it into place: a snapshot dir exists only complete and verified.
    /// The rename is made durable by `sync_renames`, before a record names the snapshot. A snapshot that appeared meanwhile
    /// (another copy of the layer, compressed differently) is the same content: the
    /// temp dir is dropped and that one is kept.
    pub fn create(
        &self,
        diff_id: &str,
        blob: &Path,
        compression: Compression,
    ) -> Result<PathBuf, ImageError> {
        let dest = self.path(diff_id)?;
        let tmp = self.dir.join(format!("{TMP_PREFIX}{}", random_hex(8)));
        fs::create_dir(&tmp).map_err(|e| ImageError::io(format!("create {}", tmp.display()), e))?;
        let result = unpack::unpack_layer(blob, compression, &tmp)
            .map_err(ImageError::from)
            .and_then(|stats| {
                if stats.diff_id != diff_id {
                    return Err(ImageError::DigestMismatch {
                        what: "layer content (diff_id)".into(),
                        expected: diff_id.into(),
                        actual: stats.diff_id,
                    });
                }
                for skipped in &stats.skipped {
                    tracing::warn!(layer = diff_id, %skipped, "layer entry skipped");
                }
                sync_filesystem(&tmp)
                    .map_err(|e| ImageError::io(format!("sync {}", tmp.display()), e))?;
                crate::crash_point!("pull_image.unpacked");
                match fs::rename(&tmp, &dest) {
                    Ok(()) => {
                        self.renames.made();
                        Ok(())
                    }
                    // rename(2) of a dir onto a non-empty dir: ENOTEMPTY (or EEXIST).
                    Err(e) if dest.is_dir() => {
                        tracing::debug!(layer = diff_id, error = %e, "snapshot already there");
                        let _ = remove_tree(&tmp);
                        Ok(())
                    }
                    Err(e) => Err(ImageError::io(format!("store snapshot {diff_id}"), e)),
                }
            });
        if let Err(e) = result {
            let _ = remove_tree(&tmp);
            return Err(e);
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
