//! Blobs on their way into the content store: an ingest file removed unless it was
//! committed (renamed into `blobs/`), and the streaming copy that fills one.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use super::content::ContentStore;
use super::ImageError;

const COPY_BUF: usize = 256 << 10;

/// A blob in the ingest dir.
pub(super) struct Ingested {
    pub(super) tmp: IngestFile,
    /// `sha256:<hex>` of the bytes, when they were hashed on the way.
    pub(super) digest: Option<String>,
    pub(super) size: u64,
    pub(super) head: [u8; 4],
}

/// Streams `reader` into a fresh ingest file, feeding `hasher` as it goes.
pub(super) fn ingest(
    content: &ContentStore,
    reader: &mut dyn Read,
    mut hasher: Option<&mut Sha256>,
    what: &str,
) -> Result<Ingested, ImageError> {
    let tmp = IngestFile(content.ingest_path());
    let write_err = |e| ImageError::io(format!("write {}", tmp.0.display()), e);
    let mut out = File::options()
        .write(true)
        .create_new(true)
        .open(&tmp.0)
        .map_err(write_err)?;
    let mut buf = vec![0u8; COPY_BUF];
    let mut size = 0u64;
    let mut head = [0u8; 4];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ImageError::InvalidContent(format!("reading {what}: {e}"))),
        };
        let chunk = &buf[..n];
        if size < head.len() as u64 {
            let at = size as usize;
            let take = (head.len() - at).min(n);
            head[at..at + take].copy_from_slice(&chunk[..take]);
        }
        if let Some(h) = hasher.as_deref_mut() {
            h.update(chunk);
        }
        out.write_all(chunk).map_err(write_err)?;
        size += n as u64;
    }
    drop(out);
    Ok(Ingested {
        tmp,
        digest: None,
        size,
        head,
    })
}

/// Moves an ingested blob into the content store under `digest`, checking its bytes
/// when `verify`; a mismatch names `what`.
pub(super) fn commit(
    content: &ContentStore,
    blob: Ingested,
    digest: &str,
    verify: bool,
    what: &str,
) -> Result<(), ImageError> {
    match content.commit_file(&blob.tmp.0, digest, verify) {
        Ok(_) => Ok(()),
        Err(ImageError::DigestMismatch {
            expected, actual, ..
        }) => Err(ImageError::DigestMismatch {
            what: what.to_owned(),
            expected,
            actual,
        }),
        Err(e) => Err(e),
    }
}

/// An ingest file this import wrote; removed unless it was committed (renamed away).
pub(super) struct IngestFile(pub(super) PathBuf);

impl Drop for IngestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
