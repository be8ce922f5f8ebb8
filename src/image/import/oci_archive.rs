//! OCI archives: a tar (plain, gzip or zstd) of an OCI layout. Its JSON documents
//! come from the archive's first pass; layer blobs are streamed in the second.

use std::collections::HashMap;
use std::path::Path;

use super::super::content::{hex_of, ContentStore};
use super::super::ingest::commit;
use super::super::ImageError;
use super::archive::Archive;
use super::oci_layout::OciSource;

impl OciSource for Archive {
    fn path(&self) -> &Path {
        &self.path
    }

    fn top_file(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        self.cached(name, name).map(<[u8]>::to_vec)
    }

    fn json_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        self.cached(&blob_name(digest)?, &format!("blob {digest}"))
            .map(<[u8]>::to_vec)
    }

    fn store_blobs(&self, content: &ContentStore, digests: &[String]) -> Result<(), ImageError> {
        let by_name = digests
            .iter()
            .map(|d| Ok((blob_name(d)?, d.as_str())))
            .collect::<Result<HashMap<String, &str>, ImageError>>()?;
        let wanted = by_name.keys().cloned().collect();
        self.stream(content, &wanted, false, &mut |name, blob| {
            let digest = by_name.get(name).ok_or_else(|| {
                ImageError::Store(format!("import: {name} streamed but not asked for"))
            })?;
            commit(
                content,
                blob,
                digest,
                true,
                &format!("{}: {name}", self.path.display()),
            )
        })
    }
}

/// `blobs/sha256/<hex>`: the only name an OCI archive's blob is looked up by.
fn blob_name(digest: &str) -> Result<String, ImageError> {
    Ok(format!("blobs/sha256/{}", hex_of(digest)?))
}
