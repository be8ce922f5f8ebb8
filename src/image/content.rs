//! The content-addressed blob store: `<root>/content/blobs/sha256/<hex>`.
//!
//! Blobs arrive through `ingest/` (a temp name per download) and are renamed into
//! place only once their digest is verified, so a blob path always holds exactly
//! the bytes its name promises. An interrupted download leaves only an ingest file,
//! which the next start (or the failed pull's own cleanup) removes.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::renames::PendingRenames;
use super::ImageError;
// Kept at its old path for the callers that import it from here.
pub use crate::store::random_hex;

#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
    /// Blobs renamed into `blobs` whose names are not yet durable (`renames.rs`).
    renames: PendingRenames,
}

impl ContentStore {
    pub fn open(root: &Path) -> io::Result<ContentStore> {
        let blobs = root.join("blobs").join("sha256");
        let store = ContentStore {
            renames: PendingRenames::new(&blobs),
            blobs,
            ingest: root.join("ingest"),
        };
        fs::create_dir_all(&store.blobs)?;
        fs::create_dir_all(&store.ingest)?;
        Ok(store)
    }

    /// The path a verified blob lives at. `digest` is `sha256:<hex>` and was checked
    /// by `hex_of` (no `/` or `..` can reach the filesystem).
    pub fn path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.blobs.join(hex_of(digest)?))
    }

    pub fn exists(&self, digest: &str) -> bool {
        self.path(digest).map(|p| p.exists()).unwrap_or(false)
    }

    pub fn read(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.path(digest)?;
        fs::read(&path).map_err(|e| ImageError::io(format!("read blob {digest}"), e))
    }

    /// A fresh temp path in the ingest dir for one download.
    pub fn ingest_path(&self) -> PathBuf {
        self.ingest.join(random_hex(8))
    }

    /// Moves a downloaded file into place after checking its sha256 (`verify`) or
    /// trusting a check already made while it streamed (`!verify`). Its data is flushed
    /// before the rename; the rename is made durable by `sync_renames`, before a record
    /// names the blob.
    pub fn commit_file(
        &self,
        tmp: &Path,
        digest: &str,
        verify: bool,
    ) -> Result<PathBuf, ImageError> {
        let dest = self.path(digest)?;
        if verify {
            let actual = sha256_file(tmp)
                .map_err(|e| ImageError::io(format!("hash {}", tmp.display()), e))?;
            if actual != digest {
                let _ = fs::remove_file(tmp);
                return Err(ImageError::DigestMismatch {
                    what: "blob".into(),
                    expected: digest.into(),
                    actual,
                });
            }
        }
        fs::File::open(tmp)
            .and_then(|f| f.sync_data())
            .and_then(|_| fs::rename(tmp, &dest))
            .map(|_| self.renames.made())
            .map_err(|e| {
                let _ = fs::remove_file(tmp);
                ImageError::io(format!("store blob {digest}"), e)
            })?;
        Ok(dest)
    }

    /// Stores bytes already in memory (manifests, configs) under their verified digest.
    pub fn write_bytes(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let actual = sha256_bytes(bytes);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: "blob".into(),
                expected: digest.into(),
                actual,
            });
        }
        if self.exists(digest) {
            return Ok(());
        }
        // A temp name of this call's own (store::atomic_write's is per process): two
        // pulls of one image, by tag and by digest, write the same manifest at once.
        let tmp = self.ingest_path();
        if let Err(e) = fs::write(&tmp, bytes) {
            let _ = fs::remove_file(&tmp);
            return Err(ImageError::io(format!("write blob {digest}"), e));
        }
        self.commit_file(&tmp, digest, false)?;
        Ok(())
    }

    /// Makes every blob renamed into place so far survive a power loss (one fsync of
    /// the blob directory, none if nothing new is there).
    pub fn sync_renames(&self) -> Result<(), ImageError> {
        self.renames
            .sync()
            .map_err(|e| ImageError::io(format!("sync {}", self.blobs.display()), e))
    }

    /// Every stored blob digest.
    pub fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs)? {
            let name = entry?.file_name();
            if let Some(name) = name.to_str() {
                if name.len() == 64 {
                    out.push(format!("sha256:{name}"));
                }
            }
        }
        Ok(out)
    }

    pub fn delete(&self, digest: &str) -> Result<(), ImageError> {
        match fs::remove_file(self.path(digest)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ImageError::io(format!("delete blob {digest}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Removes every ingest file: called when no pull is running (startup, GC).
    pub fn clear_ingest(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.ingest)? {
            let _ = fs::remove_file(entry?.path());
        }
        Ok(())
    }

    pub fn ingest_dir(&self) -> &Path {
        &self.ingest
    }
}

/// The hex part of a `sha256:<64 hex>` digest; anything else is refused so that a
/// digest from a registry or an archive can never become a path like `../x`.
pub fn hex_of(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(ImageError::InvalidContent(format!(
            "unsupported or malformed digest {digest:?}"
        ))),
    }
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_digests_never_become_paths() {
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:",
            "md5:abc",
            &format!("sha256:{}", "A".repeat(64)),
        ] {
            assert!(hex_of(bad).is_err(), "{bad}");
        }
        assert!(hex_of(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }

    #[test]
    fn commit_verifies_and_refuses_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let tmp = store.ingest_path();
        fs::write(&tmp, b"hello").unwrap();
        let good = sha256_bytes(b"hello");
        let wrong = sha256_bytes(b"world");
        assert!(matches!(
            store.commit_file(&tmp, &wrong, true),
            Err(ImageError::DigestMismatch { .. })
        ));
        assert!(!tmp.exists(), "a rejected download is removed");
        assert!(!store.exists(&wrong));
        fs::write(&tmp, b"hello").unwrap();
        store.commit_file(&tmp, &good, true).unwrap();
        assert!(store.exists(&good));
        assert_eq!(store.list().unwrap(), vec![good.clone()]);
        store.delete(&good).unwrap();
        assert!(store.list().unwrap().is_empty());
    }
}
