//! The image store's locks: one operation per name at a time (a pull per reference,
//! a download per blob, an unpack per snapshot), and the guard that keeps garbage
//! collection away from blobs no image record references yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Held while blobs are added that no image record references yet (see `Images::guard`):
/// a lease on the whole store, not a lock, so garbage collection never waits for it.
pub struct StoreGuard(#[allow(dead_code)] pub(super) super::lease::Lease);

/// Async locks by name, created on demand and dropped when nobody holds them.
#[derive(Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, w| w.strong_count() > 0);
            match map.get(key).and_then(|w| w.upgrade()) {
                Some(l) => l,
                None => {
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.to_owned(), Arc::downgrade(&l));
                    l
                }
            }
        };
        lock.lock_owned().await
    }
}
