//! Images: registry pulls, the content store, layer snapshots and the image index.
//!
//! On disk under `<root>/images/`:
//! ```text
//! content/blobs/sha256/<hex>   verified blobs (manifests, configs, compressed layers)
//! content/ingest/<tmp>         downloads in flight (removed on failure and at start)
//! snapshots/<diff_id hex>/     each layer unpacked once, overlayfs-ready
//! records/<id hex>.json        one record per image (names, manifest, layers)
//! ```
//! An image becomes visible only when its record is written, after every blob and
//! snapshot it needs is complete; a failed or cancelled pull is followed by a garbage
//! collection, so it leaves nothing behind.

pub mod content;
pub mod import;
pub mod index;
mod ingest;
mod locks;
mod pull;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod unpack;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};

use oci_spec::image::{Descriptor, ImageConfiguration};

use crate::config::Config;
use crate::error::{Classify, Kind};
use content::ContentStore;
use index::ImageIndex;
pub use index::{ImageEntry, ImageRecord, LayerRecord};
use locks::KeyedLocks;
pub use locks::StoreGuard;
use reference::{parse_query, parse_reference};
pub use registry::Credentials;

/// The config label naming the Proxmox template an image record stands for.
pub const TEMPLATE_LABEL: &str = "io.proxrt.proxmox.template";
use snapshot::SnapshotStore;
use unpack::Compression;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("invalid registry credentials: {0}")]
    InvalidAuth(String),
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("image id prefix {0:?} matches more than one image")]
    AmbiguousId(String),
    #[error("image {image} is in use by container(s) {containers}")]
    InUse { image: String, containers: String },
    #[error("{message}")]
    Registry { kind: Kind, message: String },
    #[error("pulling {reference} failed on every endpoint: {details}")]
    AllEndpointsFailed {
        reference: String,
        kind: Kind,
        details: String,
    },
    #[error("{reference} has no image for {platform}")]
    NoPlatform { reference: String, platform: String },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("invalid image content: {0}")]
    InvalidContent(String),
    #[error("unpacking layer: {0}")]
    Unpack(#[from] unpack::UnpackError),
    #[error("image store: {0}")]
    Store(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl ImageError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> ImageError {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn kind_of(&self) -> Kind {
        self.kind()
    }
}

impl Classify for ImageError {
    fn kind(&self) -> Kind {
        match self {
            ImageError::InvalidReference { .. }
            | ImageError::InvalidAuth(_)
            | ImageError::AmbiguousId(_) => Kind::InvalidArgument,
            ImageError::NotFound(_) | ImageError::NoPlatform { .. } => Kind::NotFound,
            ImageError::InUse { .. } => Kind::FailedPrecondition,
            ImageError::Registry { kind, .. } | ImageError::AllEndpointsFailed { kind, .. } => {
                *kind
            }
            ImageError::DigestMismatch { .. } => Kind::DataLoss,
            ImageError::InvalidContent(_) => Kind::InvalidArgument,
            ImageError::Unpack(e) => e.kind(),
            ImageError::Store(_) | ImageError::Io { .. } => Kind::Internal,
        }
    }
}

/// Who uses an image: the container store answers, so that an image in use is not
/// removed under a container's rootfs.
pub trait ImageUsers: Send + Sync {
    /// Ids of the containers created from image `image_id`.
    fn containers_using(&self, image_id: &str) -> Vec<String>;
}

/// Bytes and inodes the image store occupies (ImageFsInfo).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub bytes: u64,
    pub inodes: u64,
}

pub struct Images {
    root: PathBuf,
    content: ContentStore,
    snapshots: SnapshotStore,
    index: RwLock<ImageIndex>,
    registry: registry::Registry,
    max_downloads: usize,
    /// One pull per reference at a time; one download or unpack per blob at a time.
    locks: KeyedLocks,
    /// Pulls and imports hold it shared; garbage collection holds it exclusively.
    gc_lock: tokio::sync::RwLock<()>,
    usage: Mutex<Option<FsUsage>>,
    users: RwLock<Option<Weak<dyn ImageUsers>>>,
}

impl Images {
    /// Opens (or creates) the store under `<state root>/images`, loads every record
    /// and removes what an earlier crash left half-made.
    pub fn open(state_root: &Path, config: &Config) -> Result<Images, ImageError> {
        let root = state_root.join("images");
        let io = |what: &str, e| {
            ImageError::io(format!("open image store {}: {what}", root.display()), e)
        };
        let content = ContentStore::open(&root.join("content")).map_err(|e| io("content", e))?;
        let snapshots =
            SnapshotStore::open(&root.join("snapshots")).map_err(|e| io("snapshots", e))?;
        let index = ImageIndex::load(&root.join("records"), &content)?;
        let images = Images {
            root,
            content,
            snapshots,
            index: RwLock::new(index),
            registry: registry::Registry::new(config),
            max_downloads: config.images.max_concurrent_downloads,
            locks: KeyedLocks::default(),
            gc_lock: tokio::sync::RwLock::new(()),
            usage: Mutex::new(None),
            users: RwLock::new(None),
        };
        images.collect_garbage_now()?;
        Ok(images)
    }

    /// Lets the container store veto removal of images it uses.
    pub fn set_users(&self, users: Weak<dyn ImageUsers>) {
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Some(users);
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, ImageIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Unpacks a stored layer blob into its snapshot, off the async runtime. The caller
    /// holds the layer's lock and found no snapshot.
    async fn unpack_layer(&self, layer: &LayerRecord) -> Result<(), ImageError> {
        let blob = self.content.path(&layer.digest)?;
        let compression = layer_compression(&layer.media_type, &blob)?;
        let (snapshots, diff_id) = (self.snapshots.clone(), layer.diff_id.clone());
        tokio::task::spawn_blocking(move || snapshots.create(&diff_id, &blob, compression))
            .await
            .map_err(|e| ImageError::Store(format!("unpack task: {e}")))??;
        Ok(())
    }

    /// Adds or updates the record for a complete image and gives it `names`.
    fn record_image(
        &self,
        mut record: ImageRecord,
        config: ImageConfiguration,
        names: (Vec<String>, Vec<String>),
    ) -> Result<Arc<ImageEntry>, ImageError> {
        record.repo_tags = names.0;
        record.repo_digests = names.1;
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        index.add(ImageEntry { record, config })
    }

    /// Stores an image whose blobs an importer already put in the content store
    /// (verified), unpacking its layers. Used by `image import`.
    /// The caller holds `guard` from before it put the image's blobs in the content store,
    /// so that no garbage collection removes them in between.
    pub async fn store_local(
        self: &Arc<Self>,
        _guard: &StoreGuard<'_>,
        manifest_raw: Vec<u8>,
        tags: Vec<String>,
    ) -> Result<Arc<ImageEntry>, ImageError> {
        let manifest_digest = content::sha256_bytes(&manifest_raw);
        let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&manifest_raw)
            .map_err(|e| ImageError::InvalidContent(format!("manifest: {e}")))?;
        self.content.write_bytes(&manifest_digest, &manifest_raw)?;
        let config_digest = manifest.config().digest().to_string();
        let config = index::load_config(&self.content, &config_digest)?;
        let layers = layer_records(manifest.layers(), &config, "imported image")?;
        for layer in &layers {
            let _one = self.locks.lock(&format!("layer:{}", layer.digest)).await;
            if self.snapshots.exists(&layer.diff_id) {
                continue;
            }
            self.unpack_layer(layer).await?;
        }
        let mut repo_tags = Vec::new();
        let mut repo_digests = Vec::new();
        for tag in tags {
            let r = parse_reference(&tag)?;
            repo_digests.push(reference::digest_name(&r, &manifest_digest));
            repo_tags.extend(reference::tag_name(&r));
        }
        let record = new_record(&manifest, manifest_digest, None, layers);
        let entry = self.record_image(record, config, (repo_tags, repo_digests))?;
        self.invalidate_usage();
        Ok(entry)
    }

    /// Records `name` as the Proxmox template `template` of `size` bytes: an image with no
    /// layers whose config (kept in the content store like any image's) names the
    /// template, so that ImageStatus, ListImages and RemoveImage work for it as for any
    /// image. Removing it forgets the record; the template on its storage is never touched.
    pub async fn record_template(
        &self,
        name: &str,
        template: &str,
        size: u64,
    ) -> Result<Arc<ImageEntry>, ImageError> {
        let r = parse_reference(name)?;
        let tag = reference::tag_name(&r).ok_or_else(|| ImageError::InvalidReference {
            reference: name.to_owned(),
            reason: "a Proxmox template is pulled by tag, not by digest".into(),
        })?;
        let config_raw = serde_json::to_vec(&serde_json::json!({
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            "os": "linux",
            "config": { "Labels": { TEMPLATE_LABEL: template } },
            "rootfs": { "type": "layers", "diff_ids": [] },
        }))
        .map_err(|e| ImageError::Store(format!("template config: {e}")))?;
        let config: ImageConfiguration = serde_json::from_slice(&config_raw)
            .map_err(|e| ImageError::Store(format!("template config: {e}")))?;
        let id = content::sha256_bytes(&config_raw);
        let _shared = self.gc_lock.read().await;
        self.content.write_bytes(&id, &config_raw)?;
        let record = ImageRecord {
            id: id.clone(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            manifest_digest: id,
            index_digest: None,
            layers: Vec::new(),
            size,
            stored_at: chrono::Utc::now().timestamp(),
            template: Some(template.to_owned()),
        };
        let entry = self.record_image(record, config, (vec![tag], Vec::new()))?;
        self.invalidate_usage();
        Ok(entry)
    }

    /// Keeps garbage collection away while an importer adds blobs no record references yet.
    pub async fn guard(&self) -> StoreGuard<'_> {
        StoreGuard(self.gc_lock.read().await)
    }

    /// The content store, for importers that verify and add blobs themselves.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// Looks an image up by id, id prefix, tag or digest. `Ok(None)`: no such image.
    pub fn status(&self, image: &str) -> Result<Option<Arc<ImageEntry>>, ImageError> {
        let query = parse_query(image)?;
        self.index().find(&query)
    }

    /// Like `status`, but a missing image is a NotFound error.
    pub fn get(&self, image: &str) -> Result<Arc<ImageEntry>, ImageError> {
        self.status(image)?
            .ok_or_else(|| ImageError::NotFound(image.to_owned()))
    }

    /// Every image, or those `filter` names (any form `status` accepts).
    pub fn list(&self, filter: Option<&str>) -> Result<Vec<Arc<ImageEntry>>, ImageError> {
        match filter.filter(|f| !f.is_empty()) {
            Some(f) => Ok(self.status(f)?.into_iter().collect()),
            None => {
                let mut all: Vec<_> = self.index().all().cloned().collect();
                all.sort_by(|a, b| a.record.id.cmp(&b.record.id));
                Ok(all)
            }
        }
    }

    /// Removes an image by any name (all its names go with it) and collects the blobs
    /// and snapshots no other image needs. Removing a missing image succeeds (CRI
    /// contract); removing one a container was created from is refused.
    pub async fn remove(&self, image: &str) -> Result<Option<Arc<ImageEntry>>, ImageError> {
        let query = parse_query(image)?;
        let Some(entry) = self.index().find(&query)? else {
            return Ok(None);
        };
        let users = self
            .users
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|w| w.upgrade());
        if let Some(users) = users {
            let containers = users.containers_using(&entry.record.id);
            if !containers.is_empty() {
                return Err(ImageError::InUse {
                    image: image.to_owned(),
                    containers: containers.join(", "),
                });
            }
        }
        let removed = self
            .index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&entry.record.id)?;
        self.collect_garbage().await?;
        Ok(removed)
    }

    /// The lowerdirs of an image's rootfs, topmost layer first (overlayfs order).
    pub fn lower_dirs(&self, entry: &ImageEntry) -> Result<Vec<PathBuf>, ImageError> {
        entry
            .record
            .layers
            .iter()
            .rev()
            .map(|l| self.snapshots.path(&l.diff_id))
            .collect()
    }

    /// Removes every blob and snapshot no image record references, and whatever
    /// downloads or unpacks a crash left. Waits for running pulls to finish.
    pub async fn collect_garbage(&self) -> Result<(), ImageError> {
        let _exclusive = self.gc_lock.write().await;
        self.collect_garbage_now()
    }

    fn collect_garbage_now(&self) -> Result<(), ImageError> {
        let (blobs, diffs): (HashSet<String>, HashSet<String>) = {
            let index = self.index();
            let mut blobs = HashSet::new();
            let mut diffs = HashSet::new();
            for e in index.all() {
                let r = &e.record;
                blobs.insert(r.id.clone());
                blobs.insert(r.manifest_digest.clone());
                blobs.extend(r.index_digest.clone());
                for l in &r.layers {
                    blobs.insert(l.digest.clone());
                    diffs.insert(l.diff_id.clone());
                }
            }
            (blobs, diffs)
        };
        let io = |what: &str, e| ImageError::io(format!("garbage collection: {what}"), e);
        self.content.clear_ingest().map_err(|e| io("ingest", e))?;
        self.snapshots
            .clear_temp()
            .map_err(|e| io("snapshots", e))?;
        let mut removed = 0;
        for digest in self.content.list().map_err(|e| io("blobs", e))? {
            if !blobs.contains(&digest) {
                self.content.delete(&digest)?;
                removed += 1;
            }
        }
        for diff_id in self.snapshots.list().map_err(|e| io("snapshots", e))? {
            if !diffs.contains(&diff_id) {
                self.snapshots.remove(&diff_id)?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::debug!(removed, "garbage collected");
        }
        self.invalidate_usage();
        Ok(())
    }

    fn invalidate_usage(&self) {
        *self.usage.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Bytes and inodes under the image store, cached until the store changes.
    pub async fn fs_usage(&self) -> Result<FsUsage, ImageError> {
        if let Some(u) = *self.usage.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(u);
        }
        let root = self.root.clone();
        let usage = tokio::task::spawn_blocking(move || disk_usage(&root))
            .await
            .map_err(|e| ImageError::Store(format!("usage task: {e}")))?
            .map_err(|e| ImageError::io("measure image store", e))?;
        *self.usage.lock().unwrap_or_else(|e| e.into_inner()) = Some(usage);
        Ok(usage)
    }

    /// The directory the image store lives in (ImageFsInfo's mountpoint).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// The record of a complete image, before `record_image` gives it its names.
fn new_record(
    manifest: &oci_spec::image::ImageManifest,
    manifest_digest: String,
    index_digest: Option<String>,
    layers: Vec<LayerRecord>,
) -> ImageRecord {
    let size = manifest.config().size() + manifest.layers().iter().map(|l| l.size()).sum::<u64>();
    ImageRecord {
        id: manifest.config().digest().to_string(),
        repo_tags: Vec::new(),
        repo_digests: Vec::new(),
        manifest_digest,
        index_digest,
        layers,
        size,
        stored_at: chrono::Utc::now().timestamp(),
        template: None,
    }
}

fn layer_records(
    layers: &[Descriptor],
    config: &ImageConfiguration,
    what: &str,
) -> Result<Vec<LayerRecord>, ImageError> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != layers.len() {
        return Err(ImageError::InvalidContent(format!(
            "{what}: manifest lists {} layers but the config has {} diff_ids",
            layers.len(),
            diff_ids.len()
        )));
    }
    layers
        .iter()
        .zip(diff_ids)
        .map(|(d, diff_id)| {
            content::hex_of(diff_id)?;
            content::hex_of(d.digest().as_ref())?;
            Ok(LayerRecord {
                digest: d.digest().to_string(),
                diff_id: diff_id.clone(),
                media_type: d.media_type().to_string(),
                size: d.size(),
            })
        })
        .collect()
}

fn layer_compression(media_type: &str, blob: &Path) -> Result<Compression, ImageError> {
    if let Some(c) = Compression::from_media_type(media_type) {
        return Ok(c);
    }
    // Unknown or generic media types (some archives say octet-stream): look at the bytes.
    let mut head = [0u8; 4];
    let n = std::fs::File::open(blob)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| ImageError::io(format!("read layer {}", blob.display()), e))?;
    Ok(Compression::sniff(&head[..n]))
}

/// Bytes (allocated blocks) and inodes under `root`, each hard-linked file once: what the
/// image store occupies (ImageFsInfo), and a container's writable layer (its stats).
/// Entries removed while the walk runs (a running container's files) are skipped.
pub fn disk_usage(root: &Path) -> std::io::Result<FsUsage> {
    use std::os::unix::fs::MetadataExt;
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut usage = FsUsage::default();
    let mut stack = vec![root.to_owned()];
    let mut seen = HashSet::new();
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if gone(&e) && dir != root => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e),
            };
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            usage.inodes += 1;
            usage.bytes += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(usage)
}

/// If a pull or an import is cancelled (the client went away), collect what it left
/// behind. Disarmed by taking the `Option` once the operation finished either way.
struct CollectOnDrop(Option<Arc<Images>>);

impl Drop for CollectOnDrop {
    fn drop(&mut self) {
        if let Some(images) = self.0.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = images.collect_garbage().await {
                        tracing::warn!(error = %e, "garbage collection after a cancelled pull or import");
                    }
                });
            }
        }
    }
}
