//! Renames into a store directory, made durable in batches.
//!
//! A blob or a snapshot is renamed into place only complete and flushed (its own data
//! is synced first), so its name never stands for torn content. The rename itself needs
//! to survive a power loss only once an image record names the entry: until then a lost
//! entry is at worst fetched or unpacked again, and the collection at start removes
//! whatever no record references. So a rename is not followed by an fsync of its
//! directory each time: `Images::record_image` calls [`PendingRenames::sync`] on the
//! blob and snapshot directories once, covering every rename made before it, and only
//! then writes the record that depends on them. A pull used to pay four directory
//! fsyncs (manifest, config, layer, snapshot); it now pays at most two, and none when
//! another pull's record already covered its renames.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A directory and how many renames into it are not yet known durable.
#[derive(Debug, Clone)]
pub(super) struct PendingRenames(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Renames made into `dir` so far.
    made: AtomicU64,
    /// `made` as it was when the last successful fsync of `dir` began.
    synced: AtomicU64,
}

impl PendingRenames {
    pub(super) fn new(dir: &Path) -> PendingRenames {
        PendingRenames(Arc::new(Inner {
            dir: dir.to_owned(),
            made: AtomicU64::new(0),
            synced: AtomicU64::new(0),
        }))
    }

    /// Counts a rename into the directory; call it after `rename(2)` returned.
    pub(super) fn made(&self) {
        self.0.made.fetch_add(1, Ordering::SeqCst);
    }

    /// Makes every rename counted before this call durable: one fsync of the directory,
    /// none if an fsync that began after the last of them already succeeded.
    pub(super) fn sync(&self) -> io::Result<()> {
        let made = self.0.made.load(Ordering::SeqCst);
        if self.0.synced.load(Ordering::SeqCst) >= made {
            return Ok(());
        }
        File::open(&self.0.dir)?.sync_all()?;
        self.0.synced.fetch_max(made, Ordering::SeqCst);
        Ok(())
    }

    /// Whether a rename is counted that no fsync covers yet.
    #[cfg(test)]
    pub(super) fn pending(&self) -> bool {
        self.0.synced.load(Ordering::SeqCst) < self.0.made.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sync_covers_every_rename_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let renames = PendingRenames::new(dir.path());
        assert!(!renames.pending());
        renames.made();
        renames.made();
        assert!(renames.pending());
        renames.sync().unwrap();
        assert!(!renames.pending());
        // A rename after the sync is pending again.
        renames.made();
        assert!(renames.pending());
    }

    #[test]
    fn a_failed_sync_leaves_the_renames_pending() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let renames = PendingRenames::new(&gone);
        renames.made();
        assert!(renames.sync().is_err());
        assert!(
            renames.pending(),
            "a failed fsync must not count as durable"
        );
    }

    #[test]
    fn nothing_pending_needs_no_directory() {
        let renames = PendingRenames::new(Path::new("/nonexistent/proxrt-test"));
        renames
            .sync()
            .expect("nothing to sync: the directory is not even opened");
    }
}
