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
//!
//! Concurrency: garbage collection holds `gc_lock` exclusively; it never waits for the
//! network. A pull downloads without any lock, holding a lease (`lease.rs`) on what it
//! fetches; it takes `gc_lock` shared only to take its lease and while it unpacks (local
//! work, so that a collection after a failed pull sees the unpack's result). Blobs are
//! downloaded once per digest (`blob:` lock), snapshots made once per diff_id (`layer:`
//! lock): two differently compressed copies of one layer make one snapshot.

pub mod content;
pub mod import;
pub mod index;
mod ingest;
mod lease;
mod locks;
mod pull;
pub mod reference;
pub mod registry;
mod renames;
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
pub use lease::Lease;
use lease::{Held, Leases};
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
    #[error("image {0} is in use by a container being created")]
    InUseByCreate(String),
    #[error("{what} is over the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("{what}: the registry sent {got} bytes where the descriptor says {expected}")]
    SizeMismatch {
        what: String,
        expected: u64,
        got: String,
    },
    #[error("pulling {reference} took longer than [images] pull_timeout_secs = {secs}")]
    PullTimeout { reference: String, secs: u64 },
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
            ImageError::InUse { .. } | ImageError::InUseByCreate(_) => Kind::FailedPrecondition,
            // What a registry served is refused, like a layer that is not a tar.
            ImageError::TooLarge { .. } => Kind::InvalidArgument,
            // Bytes that are not what the descriptor promised, like a digest mismatch.
            ImageError::SizeMismatch { .. } => Kind::DataLoss,
            ImageError::PullTimeout { .. } => Kind::DeadlineExceeded,
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
    /// Ids of every image some container was created from.
    fn images_in_use(&self) -> Vec<String>;
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
    /// One pull per reference at a time; one download per blob, one unpack per
    /// snapshot at a time.
    locks: KeyedLocks,
    /// Garbage collection holds it exclusively; taking a lease and unpacking hold it
    /// shared (never across network I/O).
    gc_lock: Arc<tokio::sync::RwLock<()>>,
    leases: Leases,
    /// A whole pull's deadline (`[images] pull_timeout_secs`).
    pull_timeout: std::time::Duration,
    usage: Mutex<Option<FsUsage>>,
    users: RwLock<Option<Weak<dyn ImageUsers>>>,
}

impl Images {
    /// Opens (or creates) the store under `<state root>/images` and loads every record.
    /// The owner runs `collect_garbage_at_start` once it knows which images its
    /// containers use.
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
            gc_lock: Arc::new(tokio::sync::RwLock::new(())),
            leases: Leases::default(),
            pull_timeout: std::time::Duration::from_secs(config.images.pull_timeout_secs),
            usage: Mutex::new(None),
            users: RwLock::new(None),
        };
        Ok(images)
    }

    /// The collection at start: removes what a crash left half-made (downloads,
    /// unpacks) and what no record references. Runs after the containers are loaded
    /// (`set_users`): while a container uses an image whose record is missing, or any
    /// record could not be read, no blob or snapshot is removed (the warning says
    /// which), since one of them may be what a container's rootfs is made of.
    pub fn collect_garbage_at_start(&self) -> Result<(), ImageError> {
        let io = |what: &str, e| ImageError::io(format!("garbage collection: {what}"), e);
        self.content.clear_ingest().map_err(|e| io("ingest", e))?;
        self.snapshots
            .clear_temp()
            .map_err(|e| io("snapshots", e))?;
        self.sweep()
    }

    /// Lets the container store veto removal of images it uses.
    pub fn set_users(&self, users: Weak<dyn ImageUsers>) {
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Some(users);
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, ImageIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Unpacks a stored layer blob into its snapshot, off the async runtime. The caller
    /// holds the snapshot's (`layer:<diff_id>`) lock and a lease on it, and found no
    /// snapshot. The unpack holds `gc_lock` shared until it ends, even if the caller is
    /// cancelled: a collection after a failed pull then sees (and removes) its result.
    async fn unpack_layer(&self, layer: &LayerRecord) -> Result<(), ImageError> {
        let blob = self.content.path(&layer.digest)?;
        let compression = layer_compression(&layer.media_type, &blob)?;
        let (snapshots, diff_id) = (self.snapshots.clone(), layer.diff_id.clone());
        let shared = self.gc_lock.clone().read_owned().await;
        blocking("unpack", move || {
            let _shared = shared;
            snapshots.create(&diff_id, &blob, compression).map(drop)
        })
        .await
    }

    /// Makes a layer unpacked as it downloaded its snapshot (checks its diff_id, flushes,
    /// renames into place), under the same conditions and `gc_lock` as `unpack_layer`.
    async fn commit_layer(
        &self,
        unpacked: snapshot::Unpacked,
        layer: &LayerRecord,
    ) -> Result<(), ImageError> {
        let (snapshots, diff_id) = (self.snapshots.clone(), layer.diff_id.clone());
        let shared = self.gc_lock.clone().read_owned().await;
        blocking("commit unpacked layer", move || {
            let _shared = shared;
            snapshots.commit(unpacked, &diff_id).map(drop)
        })
        .await
    }

    /// Takes a lease on content about to be added, at a moment no collection runs.
    async fn lease(&self, held: Held) -> Lease {
        let _shared = self.gc_lock.read().await;
        self.leases.take(held)
    }

    /// Looks up the image a container is created from and leases it: until the lease
    /// is dropped (once the container is in the container store), RemoveImage refuses
    /// the image, so its snapshots stay under the rootfs being mounted.
    pub fn lease_for_container(&self, image: &str) -> Result<(Arc<ImageEntry>, Lease), ImageError> {
        let query = parse_query(image)?;
        let index = self.index();
        let entry = index
            .find(&query)?
            .ok_or_else(|| ImageError::NotFound(image.to_owned()))?;
        let lease = self.leases.take(Held {
            image: Some(entry.record.id.clone()),
            blobs: Vec::new(),
            diffs: entry
                .record
                .layers
                .iter()
                .map(|l| l.diff_id.clone())
                .collect(),
            everything: false,
        });
        Ok((entry, lease))
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
        // Every blob and snapshot the record names was renamed into place before this
        // call: those renames become durable before the record does (`renames.rs`).
        self.content.sync_renames()?;
        self.snapshots.sync_renames()?;
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        index.add(ImageEntry { record, config })
    }

    /// Stores an image whose blobs an importer already put in the content store
    /// (verified), unpacking its layers. Used by `image import`.
    /// The caller holds `guard` from before it put the image's blobs in the content store,
    /// so that no garbage collection removes them in between.
    pub async fn store_local(
        self: &Arc<Self>,
        _guard: &StoreGuard,
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
            let _one = self.locks.lock(&format!("layer:{}", layer.diff_id)).await;
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
        let _lease = self
            .lease(Held {
                blobs: vec![id.clone()],
                ..Default::default()
            })
            .await;
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

    /// Keeps garbage collection from removing anything while an importer adds blobs no
    /// record references yet (a lease on everything: collections run, and remove nothing).
    pub async fn guard(&self) -> StoreGuard {
        StoreGuard(
            self.lease(Held {
                everything: true,
                ..Default::default()
            })
            .await,
        )
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
    /// contract); removing one a container was created from, or is being created from,
    /// is refused with FailedPrecondition (CRI-O's choice: containerd instead drops the
    /// record and keeps the layers while containers use them; refusing keeps
    /// ListImages true about what is on disk).
    pub async fn remove(&self, image: &str) -> Result<Option<Arc<ImageEntry>>, ImageError> {
        let query = parse_query(image)?;
        let users = self.users();
        let removed = {
            // Checked and removed under the index's write lock, which
            // `lease_for_container` reads under: a create either leased the image before
            // this check (refused here) or finds it gone (NotFound there). A created
            // container is in the container store before its lease ends.
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            let Some(entry) = index.find(&query)? else {
                return Ok(None);
            };
            if self.leases.image_leased(&entry.record.id) {
                return Err(ImageError::InUseByCreate(image.to_owned()));
            }
            if let Some(users) = &users {
                let containers = users.containers_using(&entry.record.id);
                if !containers.is_empty() {
                    return Err(ImageError::InUse {
                        image: image.to_owned(),
                        containers: containers.join(", "),
                    });
                }
            }
            index.remove(&entry.record.id)?
        };
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

    /// Removes every blob and snapshot that no image record references and no lease
    /// holds. Waits for running unpacks, never for downloads: downloads in flight own
    /// their ingest files and remove them themselves.
    pub async fn collect_garbage(&self) -> Result<(), ImageError> {
        let _exclusive = self.gc_lock.write().await;
        self.sweep()
    }

    fn sweep(&self) -> Result<(), ImageError> {
        let kept = self.leases.kept();
        let (mut blobs, mut diffs) = (kept.blobs, kept.diffs);
        let mut keep_all = kept.everything;
        {
            let index = self.index();
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
            for (path, error) in index.unreadable() {
                tracing::warn!(
                    record = %path.display(), %error,
                    "image record unreadable: keeping every blob and snapshot until it is \
                     repaired or removed"
                );
                keep_all = true;
            }
            let users = self.users();
            for id in users.map(|u| u.images_in_use()).unwrap_or_default() {
                if index.get(&id).is_none() {
                    tracing::warn!(
                        image = %id,
                        containers = %self.users_of(&id).join(", "),
                        "a container uses an image that has no record: keeping every blob \
                         and snapshot"
                    );
                    keep_all = true;
                }
            }
        }
        if keep_all {
            return Ok(());
        }
        let io = |what: &str, e| ImageError::io(format!("garbage collection: {what}"), e);
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

    /// Who uses images (the container store), while it lives.
    fn users(&self) -> Option<Arc<dyn ImageUsers>> {
        self.users
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|w| w.upgrade())
    }

    fn users_of(&self, image_id: &str) -> Vec<String> {
        self.users()
            .map(|u| u.containers_using(image_id))
            .unwrap_or_default()
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

/// Runs `work` (file system calls that may wait on the disk: fsync, unpacking) on
/// tokio's blocking pool, so that it holds up no RPC. It runs to its end even if the
/// caller is cancelled.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ImageError::Store(format!("{what} task: {e}")))?
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
