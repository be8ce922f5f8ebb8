//! Leases: what garbage collection keeps besides what image records reference.
//!
//! A pull leases the blobs and snapshots of the image it is fetching from the moment
//! its manifest is known until its record is written; an import leases the whole store
//! while it stages blobs no record names yet; a container being created leases its
//! image until the container is in the container store (RemoveImage refuses an image
//! that is leased or used, so its layers cannot go from under a rootfs being mounted).
//! Like containerd's leases, they hold content, not locks: no one waits on a lease,
//! garbage collection just skips what one names.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// What one lease keeps.
#[derive(Debug, Default, Clone)]
pub(super) struct Held {
    /// The image (id) a container is being created from: not removable meanwhile.
    pub image: Option<String>,
    /// Blob digests (manifests, configs, compressed layers).
    pub blobs: Vec<String>,
    /// Snapshot diff_ids.
    pub diffs: Vec<String>,
    /// Keep every blob and snapshot (an import staging content before any record names it).
    pub everything: bool,
}

#[derive(Default)]
struct Table {
    next: u64,
    held: HashMap<u64, Held>,
}

/// Every lease held now.
#[derive(Clone, Default)]
pub(super) struct Leases(Arc<Mutex<Table>>);

/// What garbage collection must keep because of leases, read in one go.
pub(super) struct Kept {
    pub blobs: HashSet<String>,
    pub diffs: HashSet<String>,
    pub everything: bool,
}

impl Leases {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a lease; it ends when the returned guard is dropped. Callers that add
    /// content take it while garbage collection cannot run (`Images::lease`).
    pub(super) fn take(&self, held: Held) -> Lease {
        let mut t = self.table();
        t.next += 1;
        let id = t.next;
        t.held.insert(id, held);
        Lease {
            leases: self.clone(),
            id,
        }
    }

    /// Whether a container being created holds a lease on image `id`.
    pub(super) fn image_leased(&self, id: &str) -> bool {
        self.table()
            .held
            .values()
            .any(|h| h.image.as_deref() == Some(id))
    }

    pub(super) fn kept(&self) -> Kept {
        let t = self.table();
        let mut kept = Kept {
            blobs: HashSet::new(),
            diffs: HashSet::new(),
            everything: false,
        };
        for h in t.held.values() {
            kept.blobs.extend(h.blobs.iter().cloned());
            kept.diffs.extend(h.diffs.iter().cloned());
            kept.everything |= h.everything;
        }
        kept
    }
}

/// A lease held until dropped.
pub struct Lease {
    leases: Leases,
    id: u64,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({})", self.id)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.leases.table().held.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_keeps_its_content_until_dropped() {
        let leases = Leases::default();
        let a = leases.take(Held {
            image: Some("sha256:i".into()),
            blobs: vec!["b1".into()],
            diffs: vec!["d1".into()],
            everything: false,
        });
        let b = leases.take(Held {
            blobs: vec!["b2".into()],
            ..Default::default()
        });
        let kept = leases.kept();
        assert!(kept.blobs.contains("b1") && kept.blobs.contains("b2"));
        assert!(kept.diffs.contains("d1") && !kept.everything);
        assert!(leases.image_leased("sha256:i"));
        drop(a);
        assert!(!leases.image_leased("sha256:i"));
        assert!(!leases.kept().blobs.contains("b1"));
        drop(b);
        assert!(leases.kept().blobs.is_empty());
    }
}
