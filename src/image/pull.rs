//! Pulling an image: resolve its manifest through the registry client, lease what it
//! names, download the config and the layers this store lacks (at most
//! `max_concurrent_downloads` at a time, each blob once whoever else wants it), unpack
//! each layer once per diff_id, then record the image. No lock is held across network
//! I/O; the whole pull has a deadline (`[images] pull_timeout_secs`). The HTTP side
//! is `registry`'s.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use oci_client::manifest::OciDescriptor;
use oci_client::Reference;
use oci_spec::image::Descriptor;

use super::content;
use super::ingest::IngestFile;
use super::reference::{self, parse_reference};
use super::registry::{self, Credentials, MAX_MANIFEST_BYTES};
use super::snapshot::Unpacked;
use super::unpack::Compression;
use super::{
    blocking, index, layer_records, new_record, CollectOnDrop, Held, ImageEntry, ImageError,
    Images, LayerRecord,
};

impl Images {
    /// Pulls `image` from its registry (or a configured mirror) unless an identical
    /// image is already stored, and returns it.
    pub async fn pull(
        self: &Arc<Self>,
        image: &str,
        creds: &Credentials,
    ) -> Result<Arc<ImageEntry>, ImageError> {
        let reference = parse_reference(image)?;
        let key = reference.whole();
        let _one_pull = self.locks.lock(&format!("pull:{key}")).await;
        let mut cleanup = CollectOnDrop(Some(self.clone()));
        let unpacks = StreamedUnpacks::default();
        // On the deadline the pull's future is dropped: downloads stop and remove their
        // ingest files, running unpacks finish under `gc_lock` (from stored blobs) or
        // at the end of their stream (`StreamedUnpacks`), and the collection below
        // removes what the pull stored.
        let pulled = self.pull_leased(&reference, creds, &unpacks);
        let result = tokio::time::timeout(self.pull_timeout, pulled)
            .await
            .unwrap_or_else(|_| {
                Err(ImageError::PullTimeout {
                    reference: key.clone(),
                    secs: self.pull_timeout.as_secs(),
                })
            });
        cleanup.0 = None;
        match result {
            Ok(entry) => {
                self.invalidate_usage();
                Ok(entry)
            }
            Err(e) => {
                tracing::info!(image = %key, error = %e, "pull failed; collecting what it left");
                unpacks.ended().await;
                if let Err(gc) = self.collect_garbage().await {
                    tracing::warn!(error = %gc, "garbage collection after a failed pull");
                }
                Err(e)
            }
        }
    }

    async fn pull_leased(
        &self,
        reference: &Reference,
        creds: &Credentials,
        unpacks: &StreamedUnpacks,
    ) -> Result<Arc<ImageEntry>, ImageError> {
        let resolved = self.registry.resolve(reference, creds).await?;
        let manifest = &resolved.manifest;
        let config_digest = manifest.config().digest().to_string();
        let names = names_for(reference, &resolved);
        if manifest.config().size() > MAX_MANIFEST_BYTES {
            return Err(ImageError::TooLarge {
                what: format!("config {config_digest} of {}", reference.whole()),
                limit: MAX_MANIFEST_BYTES,
            });
        }
        // Downloads start before the config is read: every digest they put in a URL or
        // a path is checked first (the store holds sha256 blobs only).
        content::hex_of(&config_digest)?;
        for layer in manifest.layers() {
            content::hex_of(layer.digest().as_ref())?;
        }

        // Everything this pull may store, leased before anything is looked at or stored
        // (a RemoveImage's collection may run meanwhile; it keeps what a lease names).
        let existing = self.index().get(&config_digest);
        let mut held = Held {
            blobs: vec![resolved.manifest_digest.clone(), config_digest.clone()],
            ..Default::default()
        };
        held.blobs
            .extend(resolved.index.as_ref().map(|(_, d)| d.clone()));
        held.blobs
            .extend(manifest.layers().iter().map(|l| l.digest().to_string()));
        if let Some(existing) = &existing {
            held.diffs
                .extend(existing.record.layers.iter().map(|l| l.diff_id.clone()));
        }
        let _lease = self.lease(held).await;

        // Fast path: the image is already complete; only its names may be new.
        let existing = self.index().get(&config_digest);
        if let Some(existing) = existing {
            if existing.record.manifest_digest == resolved.manifest_digest
                && existing
                    .record
                    .layers
                    .iter()
                    .all(|l| self.snapshots.exists(&l.diff_id))
            {
                return self.record_image(existing.record.clone(), existing.config.clone(), names);
            }
        }

        // Three things run side by side from here: storing the manifest, fetching the
        // config, and downloading the layers, which need only the manifest's digests. A
        // layer is unpacked once its blob is stored and the config has named its
        // diff_id; a failed config stops the layers waiting for it.
        let resolved = &resolved;
        let (layers_tx, layers_rx) = tokio::sync::watch::channel(None);
        let config = async move {
            let layers_tx = layers_tx;
            self.fetch_blob(
                resolved,
                reference,
                &oci_descriptor(manifest.config()),
                None,
            )
            .await?;
            let config = index::load_config(&self.content, &config_digest)?;
            let layers = layer_records(manifest.layers(), &config, &reference.whole())?;
            let lease = self
                .lease(Held {
                    diffs: layers.iter().map(|l| l.diff_id.clone()).collect(),
                    ..Default::default()
                })
                .await;
            layers_tx.send_replace(Some(Arc::new(layers.clone())));
            Ok::<_, ImageError>((config, layers, lease))
        };
        let layers = stream::iter(manifest.layers().iter().cloned().enumerate())
            .map(|(i, desc)| {
                let mut layers_rx = layers_rx.clone();
                async move {
                    let unpacked = self
                        .fetch_layer(resolved, reference, &desc, unpacks)
                        .await?;
                    let layers = layers_rx
                        .wait_for(Option::is_some)
                        .await
                        .map(|layers| layers.clone())
                        .ok()
                        .flatten()
                        // Never returned: the config's own error is (below).
                        .ok_or_else(|| ImageError::Store("the image config failed".into()))?;
                    self.ensure_layer(resolved, reference, &desc, &layers[i], unpacked)
                        .await
                }
            })
            .buffer_unordered(self.max_downloads)
            .try_collect::<Vec<()>>();
        let (stored, config, unpacked) =
            tokio::join!(self.store_manifest(resolved), config, layers);
        stored?;
        let (config, layers, _snapshots) = config?;
        unpacked?;

        let record = new_record(
            manifest,
            resolved.manifest_digest.clone(),
            resolved.index.as_ref().map(|(_, d)| d.clone()),
            layers,
        );
        let entry = self.record_image(record, config, names)?;
        crate::crash_point!("pull_image.record");
        Ok(entry)
    }

    /// Stores the manifest, and the index it was chosen from, off the async runtime.
    async fn store_manifest(&self, resolved: &registry::Resolved) -> Result<(), ImageError> {
        let content = self.content.clone();
        let mut docs = vec![(
            resolved.manifest_digest.clone(),
            resolved.manifest_raw.clone(),
        )];
        docs.extend(
            resolved
                .index
                .as_ref()
                .map(|(raw, digest)| (digest.clone(), raw.clone())),
        );
        blocking("store manifest", move || {
            for (digest, raw) in &docs {
                content.write_bytes(digest, raw)?;
            }
            crate::crash_point!("pull_image.manifest");
            Ok(())
        })
        .await
    }

    /// Makes sure one layer's snapshot exists: commit the layer unpacked as it
    /// downloaded (`unpacked`), or download (unless the blob is stored) and unpack, once
    /// per diff_id, whoever else pulls an image sharing the layer right now, compressed
    /// the same way or not. A snapshot found after waiting is success.
    async fn ensure_layer(
        &self,
        resolved: &registry::Resolved,
        reference: &Reference,
        desc: &Descriptor,
        layer: &LayerRecord,
        unpacked: Option<Streamed>,
    ) -> Result<(), ImageError> {
        let _one = self.locks.lock(&format!("layer:{}", layer.diff_id)).await;
        if self.snapshots.exists(&layer.diff_id) {
            if let Some(unpacked) = unpacked {
                blocking("remove unpacked layer", move || {
                    drop(unpacked);
                    Ok(())
                })
                .await?;
            }
            return Ok(());
        }
        match unpacked {
            Some(streamed) => self.commit_layer(streamed.unpacked, layer).await?,
            None => {
                self.fetch_blob(resolved, reference, &oci_descriptor(desc), None)
                    .await?;
                self.unpack_layer(layer).await?;
            }
        }
        crate::crash_point!("pull_image.layer");
        Ok(())
    }

    /// Downloads a layer's blob unless it is stored. When the layer's media type says
    /// how it is compressed, it is unpacked as it arrives, beside the download, and
    /// returned unpacked: it becomes a snapshot (`ensure_layer`) once the config has
    /// given its diff_id. The download time and the unpack time overlap instead of
    /// adding up.
    async fn fetch_layer(
        &self,
        resolved: &registry::Resolved,
        reference: &Reference,
        desc: &Descriptor,
        unpacks: &StreamedUnpacks,
    ) -> Result<Option<Streamed>, ImageError> {
        let unpack_as = Compression::from_media_type(desc.media_type().as_ref())
            .map(|compression| (compression, unpacks));
        self.fetch_blob(resolved, reference, &oci_descriptor(desc), unpack_as)
            .await
    }

    /// Downloads a blob unless it is stored; with `unpack_as`, also unpacks it as it
    /// arrives and returns the unpacked layer (`None` when the blob was stored already).
    async fn fetch_blob(
        &self,
        resolved: &registry::Resolved,
        reference: &Reference,
        desc: &OciDescriptor,
        unpack_as: Option<(Compression, &StreamedUnpacks)>,
    ) -> Result<Option<Streamed>, ImageError> {
        if self.content.exists(&desc.digest) {
            return Ok(None);
        }
        // One download per blob: two pulls of one image by different names (tag and
        // digest) share the config, which no layer lock covers.
        let _one = self.locks.lock(&format!("blob:{}", desc.digest)).await;
        if self.content.exists(&desc.digest) {
            return Ok(None);
        }
        // Created here, synchronously, right after its guard: a cancelled pull can never
        // leave an ingest file its guard did not remove.
        let tmp = IngestFile(self.content.ingest_path());
        let file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&tmp.0)
            .map_err(|e| ImageError::io(format!("create {}", tmp.0.display()), e))?;
        // The unpack reads what the download sends it, on the blocking pool, to the end
        // of what came. What it made counts only once the download is verified: on any
        // failure (or cancellation) its result is dropped, which removes it.
        let (tee, unpacking) = match unpack_as {
            Some((compression, unpacks)) => {
                let (tx, rx) = tokio::sync::mpsc::channel(STREAMED_CHUNKS);
                let snapshots = self.snapshots.clone();
                let held = unpacks.hold().await;
                let unpack = tokio::task::spawn_blocking(move || {
                    snapshots
                        .unpack(Arriving::new(rx), compression)
                        .map(|unpacked| Streamed {
                            unpacked,
                            _held: held,
                        })
                });
                (Some(tx), Some(unpack))
            }
            None => (None, None),
        };
        let downloaded = self
            .registry
            .fetch_blob(resolved, reference, desc, file, &tmp.0, tee.as_ref())
            .await;
        drop(tee);
        if let Err(e) = downloaded {
            // The unpack has its end of stream now: wait for it, so that what it made
            // from unverified bytes is removed before the pull answers.
            if let Some(unpack) = unpacking {
                let _ = unpack.await;
            }
            return Err(e);
        }
        crate::crash_point!("pull_image.downloaded");
        let (content, path, digest) = (self.content.clone(), tmp.0.clone(), desc.digest.clone());
        let commit = blocking("store blob", move || {
            content.commit_file(&path, &digest, false)?;
            crate::crash_point!("pull_image.blob");
            Ok(())
        });
        let unpacked = async {
            match unpacking {
                Some(unpack) => unpack
                    .await
                    .map_err(|e| ImageError::Store(format!("unpack task: {e}")))?
                    .map(Some),
                None => Ok(None),
            }
        };
        let (committed, unpacked) = tokio::join!(commit, unpacked);
        committed?;
        crate::metrics::blob_downloaded(desc.size.max(0) as u64);
        unpacked
    }
}

/// The unpacks one pull runs beside its downloads. One whose download was dropped (a
/// sibling layer failed, or the pull's deadline passed) runs on to the end of its
/// stream on the blocking pool and removes what it made; a failed pull waits for that
/// (`ended`) before it answers, so that its answer finds the store clean.
#[derive(Default)]
struct StreamedUnpacks(Arc<tokio::sync::RwLock<()>>);

impl StreamedUnpacks {
    async fn hold(&self) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.0.clone().read_owned().await
    }

    async fn ended(&self) {
        drop(self.0.write().await);
    }
}

/// A layer unpacked as it downloaded, holding its pull's `StreamedUnpacks` until its
/// temp dir is committed or removed (fields drop in order: the dir first).
struct Streamed {
    unpacked: Unpacked,
    _held: tokio::sync::OwnedRwLockReadGuard<()>,
}

/// Chunks of a layer in flight between the download and its unpack: a bound on the
/// memory one streamed layer holds (hyper's chunks are 8 KiB to a few hundred KiB).
const STREAMED_CHUNKS: usize = 32;

/// A layer's bytes as the download sends them, read on a blocking thread. The end of
/// the stream is the download's end, whatever it was: the caller knows whether the
/// download was whole and verified, and uses the unpack's result only if it was.
struct Arriving {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    chunk: bytes::Bytes,
}

impl Arriving {
    fn new(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Arriving {
        Arriving {
            rx,
            chunk: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for Arriving {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The tag and digest names an image gets from the reference it was pulled by.
fn names_for(reference: &Reference, resolved: &registry::Resolved) -> (Vec<String>, Vec<String>) {
    let tags: Vec<String> = if reference.digest().is_none() {
        reference::tag_name(reference).into_iter().collect()
    } else {
        Vec::new()
    };
    let top = resolved
        .index
        .as_ref()
        .map(|(_, d)| d.as_str())
        .unwrap_or(&resolved.manifest_digest);
    (tags, vec![reference::digest_name(reference, top)])
}

fn oci_descriptor(d: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size() as i64,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn arriving_reads_every_chunk_in_order_then_ends_when_the_sender_goes() {
        let (tx, rx) = tokio::sync::mpsc::channel(STREAMED_CHUNKS);
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            // Small reads split chunks; empty chunks are skipped, not an end.
            let mut arriving = Arriving::new(rx);
            let mut buf = [0u8; 3];
            loop {
                let n = arriving.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
            }
            all
        });
        for chunk in [&b"hello "[..], b"", b"streamed", b" world"] {
            tx.blocking_send(bytes::Bytes::copy_from_slice(chunk))
                .unwrap();
        }
        drop(tx);
        assert_eq!(reader.join().unwrap(), b"hello streamed world");
    }
}
