//! `proxrt image import`: OCI layout directories, OCI archives and docker-archive tars.
//!
//! Everything read here is untrusted. Blobs named by a digest are verified before
//! they enter the content store, JSON documents are read with a size cap, and tar
//! entry names are never used as paths: an archive is read entry by entry and only
//! the entries the layout or `manifest.json` asks for are streamed, straight into
//! `content/ingest`. Nothing is extracted, so a name like `../x` can write nowhere.
//!
//! An archive is read twice. The first pass keeps its small JSON documents in memory
//! (`index.json`, manifests, configs: enough to decide what is needed); the second
//! streams only the layer blobs the chosen images use. Multi-platform indexes give
//! this host's manifest (`pull::select_platform`), as a pull would.
//!
//! A docker-archive has no manifest of its own: one is written for each image
//! (Docker schema2, the config and the layer files as they are), so the image gets
//! an id and a manifest digest like any other.
//!
//! A failed import leaves nothing: images it recorded are removed again, and a
//! garbage collection takes every blob and snapshot no image references.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, Write};
use std::ops::ControlFlow;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::content::{hex_of, sha256_bytes, ContentStore};
use super::pull::{
    host_platform_name, select_platform, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
};
use super::reference::{parse_reference, tag_name};
use super::unpack::Compression;
use super::{ImageEntry, ImageError, Images};

/// Largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 4 << 20;
/// Most JSON an archive's first pass keeps in memory, all documents together.
const MAX_JSON_TOTAL: u64 = 64 << 20;
/// Indexes nested deeper than this are refused (an index may point at itself).
const MAX_INDEX_DEPTH: usize = 4;
/// How many first bytes of a small archive entry tell whether it may be JSON.
const JSON_SNIFF: u64 = 512;
const COPY_BUF: usize = 256 << 10;

/// containerd's annotation: the image's full name.
const NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation: often only a tag (`latest`), sometimes a full name.
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Imports every image found at `path`.
///
/// `tags` (normalized like a pull reference) name the image instead of the names the
/// archive carries; they are accepted only for an archive holding a single image.
pub async fn import(
    images: &Arc<Images>,
    path: &Path,
    tags: &[String],
) -> Result<Vec<Arc<ImageEntry>>, ImageError> {
    let tags = normalize_tags(tags)?;
    let started = std::time::Instant::now();
    let mut on_cancel = super::CollectOnDrop(Some(images.clone()));
    let mut created = Vec::new();
    let result = import_all(images, path, &tags, &mut created).await;
    on_cancel.0 = None;
    match result {
        Ok(entries) => {
            tracing::info!(
                path = %path.display(),
                images = entries.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "imported"
            );
            Ok(entries)
        }
        Err(e) => {
            tracing::info!(path = %path.display(), error = %e, "import failed; removing what it stored");
            for id in created.iter().rev() {
                if let Err(re) = images.remove(id).await {
                    tracing::warn!(image = %id, error = %re, "removing an image of a failed import");
                }
            }
            if let Err(gc) = images.collect_garbage().await {
                tracing::warn!(error = %gc, "garbage collection after a failed import");
            }
            Err(e)
        }
    }
}

/// Stages every image (all blobs verified and in the content store), then records
/// them one by one; `created` collects the ids of images that did not exist before.
async fn import_all(
    images: &Arc<Images>,
    path: &Path,
    tags: &[String],
    created: &mut Vec<String>,
) -> Result<Vec<Arc<ImageEntry>>, ImageError> {
    // Held until every staged image is recorded: a concurrent garbage collection would
    // otherwise delete blobs that no record references yet.
    let guard = images.guard().await;
    let content = images.content().clone();
    let (source, names) = (path.to_owned(), tags.to_vec());
    let staged = tokio::task::spawn_blocking(move || stage(&content, &source, &names))
        .await
        .map_err(|e| ImageError::Store(format!("import task: {e}")))??;
    let mut entries = Vec::with_capacity(staged.len());
    for image in staged {
        let new = images.status(&image.config_digest)?.is_none();
        let entry = images
            .store_local(&guard, image.manifest_raw, image.names)
            .await?;
        if new {
            created.push(entry.record.id.clone());
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// `--tag` values as stored names; a digest cannot be given to an image.
fn normalize_tags(tags: &[String]) -> Result<Vec<String>, ImageError> {
    let mut out: Vec<String> = Vec::new();
    for tag in tags {
        let r = parse_reference(tag)?;
        let name = match (r.digest(), tag_name(&r)) {
            (None, Some(name)) => name,
            _ => {
                return Err(ImageError::InvalidReference {
                    reference: tag.clone(),
                    reason: "--tag takes a name[:tag], not a digest".into(),
                })
            }
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// An image whose blobs are all in the content store, ready for `store_local`.
struct Staged {
    manifest_raw: Vec<u8>,
    config_digest: String,
    names: Vec<String>,
}

/// Reads `path` in whichever form it has and puts every blob its images need into
/// the content store. Blocking: run it off the async runtime.
fn stage(content: &ContentStore, path: &Path, tags: &[String]) -> Result<Vec<Staged>, ImageError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ImageError::NotFound(path.display().to_string()),
        _ => ImageError::io(format!("import {}", path.display()), e),
    })?;
    if meta.is_dir() {
        if !path.join("oci-layout").is_file() {
            return Err(not_an_image(path, "a directory without an oci-layout file"));
        }
        return stage_oci(
            content,
            &LayoutDir {
                root: path.to_owned(),
            },
            tags,
        );
    }
    if !meta.is_file() {
        return Err(not_an_image(path, "neither a directory nor a regular file"));
    }
    let archive = Archive::scan(path)?;
    if archive.has("oci-layout") && archive.has("index.json") {
        // Docker 25+ writes both forms into one tar; the OCI one keeps the manifest
        // (and so the digest) the image had in its registry.
        stage_oci(content, &archive, tags)
    } else if archive.has("manifest.json") {
        stage_docker(content, &archive, tags)
    } else {
        Err(not_an_image(
            path,
            "a tar with neither oci-layout + index.json nor manifest.json at the top",
        ))
    }
}

fn not_an_image(path: &Path, why: &str) -> ImageError {
    ImageError::InvalidContent(format!(
        "{}: not an OCI layout, OCI archive or docker-archive ({why})",
        path.display()
    ))
}

/// Where an OCI layout's files come from: a directory, or a tar of one.
trait OciSource {
    /// Where the layout is, for messages.
    fn path(&self) -> &Path;
    /// A top-level file (`oci-layout`, `index.json`), size-capped.
    fn top_file(&self, name: &str) -> Result<Vec<u8>, ImageError>;
    /// A JSON blob (index, manifest, config) as the layout holds it, unverified.
    fn json_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError>;
    /// Copies blobs into the content store, each verified against its digest.
    fn store_blobs(&self, content: &ContentStore, digests: &[String]) -> Result<(), ImageError>;
}

fn stage_oci(
    content: &ContentStore,
    layout: &dyn OciSource,
    tags: &[String],
) -> Result<Vec<Staged>, ImageError> {
    let path = layout.path();
    check_layout_version(path, &layout.top_file("oci-layout")?)?;
    let index: ImageIndex = parse_json(path, "index.json", &layout.top_file("index.json")?)?;

    // Images by manifest digest, in index order: two entries (two tags) for the same
    // manifest are one image with both names.
    let mut found: Vec<(String, Vec<String>)> = Vec::new();
    let mut other_platforms = false;
    for desc in index.manifests() {
        if !for_this_host(desc) {
            other_platforms = true;
            continue;
        }
        let Some(manifest_digest) = resolve_manifest(layout, desc, 0)? else {
            tracing::debug!(path = %path.display(), media_type = %desc.media_type(), "index entry is no image; skipped");
            continue;
        };
        let names: Vec<String> = annotated_name(desc).into_iter().collect();
        match found.iter_mut().find(|(d, _)| *d == manifest_digest) {
            Some((_, known)) => merge_names(known, names),
            None => found.push((manifest_digest, names)),
        }
    }
    if found.is_empty() {
        if other_platforms {
            return Err(ImageError::NoPlatform {
                reference: path.display().to_string(),
                platform: host_platform_name(),
            });
        }
        return Err(ImageError::InvalidContent(format!(
            "{}: index.json lists no image",
            path.display()
        )));
    }
    let names = assign_names(path, tags, found.iter().map(|(_, n)| n.clone()).collect())?;

    let mut staged = Vec::with_capacity(found.len());
    let mut layers: Vec<String> = Vec::new();
    for ((manifest_digest, _), names) in found.into_iter().zip(names) {
        let manifest_raw = verified_json(layout, &manifest_digest, "manifest")?;
        let manifest: ImageManifest =
            parse_json(path, &format!("manifest {manifest_digest}"), &manifest_raw)?;
        let config_digest = manifest.config().digest().to_string();
        let config_raw = verified_json(layout, &config_digest, "image config")?;
        let config: ImageConfiguration =
            parse_json(path, &format!("image config {config_digest}"), &config_raw)?;
        let diff_ids = config.rootfs().diff_ids().len();
        if diff_ids != manifest.layers().len() {
            return Err(ImageError::InvalidContent(format!(
                "{}: manifest {manifest_digest} lists {} layers but its config has {diff_ids} diff_ids",
                path.display(),
                manifest.layers().len()
            )));
        }
        content.write_bytes(&config_digest, &config_raw)?;
        for layer in manifest.layers() {
            let digest = layer.digest().to_string();
            hex_of(&digest)?;
            if !content.exists(&digest) && !layers.contains(&digest) {
                layers.push(digest);
            }
        }
        staged.push(Staged {
            manifest_raw,
            config_digest,
            names,
        });
    }
    layout.store_blobs(content, &layers)?;
    Ok(staged)
}

fn check_layout_version(path: &Path, raw: &[u8]) -> Result<(), ImageError> {
    #[derive(Deserialize)]
    struct OciLayout {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let layout: OciLayout = parse_json(path, "oci-layout", raw)?;
    if layout.version.split('.').next() != Some("1") {
        return Err(ImageError::InvalidContent(format!(
            "{}: unsupported OCI layout version {:?}",
            path.display(),
            layout.version
        )));
    }
    Ok(())
}

/// Whether a top-level index entry is for this host. Entries without a platform (the
/// usual single-image layout) are; a flat multi-platform index keeps only ours.
fn for_this_host(desc: &Descriptor) -> bool {
    if desc.platform().is_none() {
        return true;
    }
    let mut one = ImageIndex::default();
    one.set_manifests(vec![desc.clone()]);
    select_platform(&one).is_some()
}

/// The manifest an index entry stands for on this host: the entry itself, or this
/// host's choice in the (possibly nested) index it points at. None: not an image
/// (an artifact, an attestation).
fn resolve_manifest(
    layout: &dyn OciSource,
    desc: &Descriptor,
    depth: usize,
) -> Result<Option<String>, ImageError> {
    let digest = desc.digest().to_string();
    match desc.media_type().to_string().as_str() {
        MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST => Ok(Some(digest)),
        MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST => {
            if depth >= MAX_INDEX_DEPTH {
                return Err(ImageError::InvalidContent(format!(
                    "{}: image indexes nested more than {MAX_INDEX_DEPTH} deep",
                    layout.path().display()
                )));
            }
            let raw = verified_json(layout, &digest, "image index")?;
            let index: ImageIndex =
                parse_json(layout.path(), &format!("image index {digest}"), &raw)?;
            let chosen = select_platform(&index).ok_or_else(|| ImageError::NoPlatform {
                reference: format!("{} (index {digest})", layout.path().display()),
                platform: host_platform_name(),
            })?;
            match index
                .manifests()
                .iter()
                .find(|m| m.digest().to_string() == chosen)
            {
                Some(child) => resolve_manifest(layout, child, depth + 1),
                None => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

/// The name an index entry gives its image: containerd's full-name annotation, else
/// an OCI ref.name that is itself a full name. A bare tag (`latest`) names nothing.
fn annotated_name(desc: &Descriptor) -> Option<String> {
    let annotations = desc.annotations().as_ref()?;
    if let Some(name) = annotations.get(NAME_ANNOTATION) {
        match parse_reference(name) {
            Ok(r) => return Some(stored_name(&r)),
            Err(e) => {
                tracing::warn!(name = %name, error = %e, "unusable {NAME_ANNOTATION} annotation")
            }
        }
    }
    let ref_name = annotations.get(REF_NAME_ANNOTATION)?;
    // A tag never holds `/` or `:`; a ref.name that does is meant as a whole name.
    if !ref_name.contains(['/', ':']) {
        return None;
    }
    parse_reference(ref_name).ok().map(|r| stored_name(&r))
}

fn stored_name(r: &oci_client::Reference) -> String {
    tag_name(r).unwrap_or_else(|| r.whole())
}

fn merge_names(known: &mut Vec<String>, more: Vec<String>) {
    for name in more {
        if !known.contains(&name) {
            known.push(name);
        }
    }
}

/// The names each found image gets: `tags` for a single image, else its own.
fn assign_names(
    path: &Path,
    tags: &[String],
    own: Vec<Vec<String>>,
) -> Result<Vec<Vec<String>>, ImageError> {
    if !tags.is_empty() {
        if own.len() > 1 {
            return Err(ImageError::InvalidReference {
                reference: tags.join(" "),
                reason: format!(
                    "give --tag only for a single-image archive ({} holds {} images)",
                    path.display(),
                    own.len()
                ),
            });
        }
        return Ok(vec![tags.to_vec(); own.len()]);
    }
    if own.iter().any(Vec::is_empty) {
        return Err(ImageError::InvalidContent(format!(
            "{}: the archive names no image: give --tag NAME",
            path.display()
        )));
    }
    Ok(own)
}

/// A JSON blob whose bytes match its digest.
fn verified_json(layout: &dyn OciSource, digest: &str, what: &str) -> Result<Vec<u8>, ImageError> {
    hex_of(digest)?;
    let raw = layout.json_blob(digest)?;
    let actual = sha256_bytes(&raw);
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            what: format!("{}: {what}", layout.path().display()),
            expected: digest.to_owned(),
            actual,
        });
    }
    Ok(raw)
}

fn parse_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    raw: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(raw)
        .map_err(|e| ImageError::InvalidContent(format!("{}: {what}: {e}", path.display())))
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`).
struct LayoutDir {
    root: PathBuf,
}

impl LayoutDir {
    fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs").join("sha256").join(hex_of(digest)?))
    }

    fn open(&self, file: &Path, what: &str) -> Result<File, ImageError> {
        File::open(file).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::InvalidContent(format!(
                "{}: the layout has no {what}",
                self.root.display()
            )),
            _ => ImageError::io(format!("open {}", file.display()), e),
        })
    }

    fn read_capped(&self, file: &Path, what: &str) -> Result<Vec<u8>, ImageError> {
        let mut raw = Vec::new();
        self.open(file, what)?
            .take(MAX_JSON + 1)
            .read_to_end(&mut raw)
            .map_err(|e| ImageError::io(format!("read {}", file.display()), e))?;
        if raw.len() as u64 > MAX_JSON {
            return Err(ImageError::InvalidContent(format!(
                "{}: {what} is larger than {} MiB",
                self.root.display(),
                MAX_JSON >> 20
            )));
        }
        Ok(raw)
    }
}

impl OciSource for LayoutDir {
    fn path(&self) -> &Path {
        &self.root
    }

    fn top_file(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        self.read_capped(&self.root.join(name), name)
    }

    fn json_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        self.read_capped(&self.blob_path(digest)?, &format!("blob {digest}"))
    }

    fn store_blobs(&self, content: &ContentStore, digests: &[String]) -> Result<(), ImageError> {
        for digest in digests {
            let file = self.blob_path(digest)?;
            let mut reader = self.open(&file, &format!("blob {digest}"))?;
            let what = file.display().to_string();
            let blob = ingest(content, &mut reader, None, &what)?;
            commit(content, blob, digest, true, &what)?;
        }
        Ok(())
    }
}

/// A tar (plain, gzip or zstd) read entry by entry, never extracted.
struct Archive {
    path: PathBuf,
    /// Every regular file, by normalized name.
    files: HashSet<String>,
    /// The small JSON documents among them (at most `MAX_JSON` each), by name.
    json: HashMap<String, Vec<u8>>,
}

impl Archive {
    /// The first pass: which files the archive holds, and its JSON documents.
    fn scan(path: &Path) -> Result<Archive, ImageError> {
        let mut files = HashSet::new();
        let mut json = HashMap::new();
        let mut json_total = 0u64;
        for_each_entry(path, &mut |entry| {
            let Some(name) = entry.name.take() else {
                return Ok(ControlFlow::Continue(()));
            };
            if !entry.is_file {
                return Ok(ControlFlow::Continue(()));
            }
            // Tar readers disagree on which of two same-named entries wins; refuse the ambiguity.
            if !files.insert(name.clone()) {
                return Err(ImageError::InvalidContent(format!(
                    "{}: the archive holds {name} twice",
                    path.display()
                )));
            }
            if entry.size > MAX_JSON {
                return Ok(ControlFlow::Continue(()));
            }
            // Layers are never JSON: look at their first bytes only (a plain tar then
            // seeks over the rest).
            let mut raw = Vec::new();
            (&mut *entry.reader)
                .take(JSON_SNIFF)
                .read_to_end(&mut raw)
                .map_err(|e| bad_archive(path, &name, e))?;
            if looks_like_json(&raw) {
                entry
                    .reader
                    .read_to_end(&mut raw)
                    .map_err(|e| bad_archive(path, &name, e))?;
                json_total += raw.len() as u64;
                if json_total > MAX_JSON_TOTAL {
                    return Err(ImageError::InvalidContent(format!(
                        "{}: more than {} MiB of JSON documents",
                        path.display(),
                        MAX_JSON_TOTAL >> 20
                    )));
                }
                json.insert(name, raw);
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(Archive {
            path: path.to_owned(),
            files,
            json,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.files.contains(name)
    }

    /// A JSON document the first pass kept.
    fn cached(&self, name: &str, what: &str) -> Result<&[u8], ImageError> {
        match self.json.get(name) {
            Some(raw) => Ok(raw),
            None if self.has(name) => Err(ImageError::InvalidContent(format!(
                "{}: {what} ({name}) is not a JSON document of at most {} MiB",
                self.path.display(),
                MAX_JSON >> 20
            ))),
            None => Err(ImageError::InvalidContent(format!(
                "{}: the archive has no {what} ({name})",
                self.path.display()
            ))),
        }
    }

    /// The second pass: streams each entry named in `wanted` into an ingest file
    /// (hashing it when `hash`) and hands it to `store`, which commits it.
    fn stream(
        &self,
        content: &ContentStore,
        wanted: &HashSet<String>,
        hash: bool,
        store: &mut dyn FnMut(&str, Ingested) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        if let Some(missing) = wanted.iter().find(|n| !self.has(n)) {
            return Err(ImageError::InvalidContent(format!(
                "{}: the archive has no file {missing}",
                self.path.display()
            )));
        }
        let mut left = wanted.clone();
        if left.is_empty() {
            return Ok(());
        }
        for_each_entry(&self.path, &mut |entry| {
            let Some(name) = entry.name.take() else {
                return Ok(ControlFlow::Continue(()));
            };
            if !entry.is_file || !left.remove(&name) {
                return Ok(ControlFlow::Continue(()));
            }
            let what = format!("{}: {name}", self.path.display());
            let mut hasher = hash.then(Sha256::new);
            let blob = ingest(content, entry.reader, hasher.as_mut(), &what)?;
            let blob = Ingested {
                digest: hasher.map(|h| format!("sha256:{}", hex::encode(h.finalize()))),
                ..blob
            };
            store(&name, blob)?;
            Ok(if left.is_empty() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        match left.iter().next() {
            // Only if the file changed between the two passes.
            Some(name) => Err(ImageError::InvalidContent(format!(
                "{}: {name} vanished from the archive while it was read",
                self.path.display()
            ))),
            None => Ok(()),
        }
    }
}

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

/// Whether a document's first bytes (`JSON_SNIFF` of them) may start a JSON object
/// or array; all whitespace so far may too.
fn looks_like_json(head: &[u8]) -> bool {
    matches!(
        head.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[') | None
    )
}

fn bad_archive(path: &Path, name: &str, e: io::Error) -> ImageError {
    ImageError::InvalidContent(format!("{}: reading {name}: {e}", path.display()))
}

/// One entry as `for_each_entry` hands it out.
struct ArchiveEntry<'a> {
    /// The normalized relative name; None for names that are absolute or climb out
    /// with `..` (never looked up, never written anywhere).
    name: Option<String>,
    is_file: bool,
    size: u64,
    reader: &'a mut dyn Read,
}

type Visit<'v> = dyn FnMut(&mut ArchiveEntry<'_>) -> Result<ControlFlow<()>, ImageError> + 'v;

/// Calls `visit` for each entry of the tar at `path`, decompressing a gzip or zstd
/// tar on the fly, until it breaks.
fn for_each_entry(path: &Path, visit: &mut Visit<'_>) -> Result<(), ImageError> {
    let io_err = |e| ImageError::io(format!("read {}", path.display()), e);
    let mut file = File::open(path).map_err(io_err)?;
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]).map_err(io_err)? {
            0 => break,
            got => n += got,
        }
    }
    file.rewind().map_err(io_err)?;
    match Compression::sniff(&head[..n]) {
        Compression::None => {
            visit_entries(path, tar::Archive::new(file).entries_with_seek(), visit)
        }
        Compression::Gzip => {
            let gz = flate2::read::MultiGzDecoder::new(BufReader::new(file));
            visit_entries(path, tar::Archive::new(gz).entries(), visit)
        }
        Compression::Zstd => {
            let zst = zstd::Decoder::new(file).map_err(io_err)?;
            visit_entries(path, tar::Archive::new(zst).entries(), visit)
        }
    }
}

fn visit_entries<R: Read>(
    path: &Path,
    entries: io::Result<tar::Entries<'_, R>>,
    visit: &mut Visit<'_>,
) -> Result<(), ImageError> {
    let mut seen_any = false;
    // Tar errors quote the bytes they choked on: escape them for the message.
    let bad = |seen_any: bool, e: io::Error| match seen_any {
        false => not_an_image(path, "not a tar archive"),
        true => ImageError::InvalidContent(format!(
            "{}: reading the tar: {}",
            path.display(),
            e.to_string().escape_debug()
        )),
    };
    for entry in entries.map_err(|e| bad(seen_any, e))? {
        let mut entry = entry.map_err(|e| bad(seen_any, e))?;
        seen_any = true;
        let raw_name = entry.path().map_err(|e| bad(true, e))?.into_owned();
        let name = entry_name(&raw_name);
        if name.is_none() && !entry.header().entry_type().is_dir() {
            tracing::warn!(archive = %path.display(), entry = %raw_name.display(), "archive entry with an absolute or `..` name ignored");
        }
        let is_file = matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        );
        let size = entry.size();
        let mut visited = ArchiveEntry {
            name,
            is_file,
            size,
            reader: &mut entry,
        };
        if visit(&mut visited)?.is_break() {
            break;
        }
    }
    Ok(())
}

/// A tar entry name (or a name `manifest.json` lists) as a relative path inside the
/// archive: `./a//b` is `a/b`; absolute names and any `..` are refused.
fn entry_name(raw: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A blob in the ingest dir.
struct Ingested {
    tmp: IngestFile,
    /// `sha256:<hex>` of the bytes, when they were hashed on the way.
    digest: Option<String>,
    size: u64,
    head: [u8; 4],
}

/// Streams `reader` into a fresh ingest file, feeding `hasher` as it goes.
fn ingest(
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
fn commit(
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

/// One image of a docker-archive's `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The Docker schema2 manifest written for a docker-archive image; field order is
/// fixed so that importing the same archive again gives the same digest.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Schema2Manifest {
    schema_version: u32,
    media_type: &'static str,
    config: Schema2Descriptor,
    layers: Vec<Schema2Descriptor>,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Schema2Descriptor {
    media_type: &'static str,
    size: u64,
    digest: String,
}

/// A docker-archive image: its config and layer file names, and its names.
struct DockerImage {
    config: String,
    layers: Vec<String>,
    names: Vec<String>,
}

fn stage_docker(
    content: &ContentStore,
    archive: &Archive,
    tags: &[String],
) -> Result<Vec<Staged>, ImageError> {
    let path = &archive.path;
    let listed: Vec<DockerArchiveImage> = parse_json(
        path,
        "manifest.json",
        archive.cached("manifest.json", "manifest.json")?,
    )?;
    let inside = |name: &str| {
        entry_name(Path::new(name)).ok_or_else(|| {
            ImageError::InvalidContent(format!(
                "{}: manifest.json names {name:?}, which is not a path inside the archive",
                path.display()
            ))
        })
    };
    let mut found: Vec<DockerImage> = Vec::new();
    for image in listed {
        let config = inside(&image.config)?;
        let layers = image
            .layers
            .iter()
            .map(|l| inside(l))
            .collect::<Result<Vec<_>, _>>()?;
        let names = image
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| parse_reference(t).map(|r| stored_name(&r)))
            .collect::<Result<Vec<_>, _>>()?;
        match found.iter_mut().find(|f| f.config == config) {
            Some(known) if known.layers == layers => merge_names(&mut known.names, names),
            Some(_) => {
                return Err(ImageError::InvalidContent(format!(
                    "{}: manifest.json lists {config} twice with different layers",
                    path.display()
                )))
            }
            None => found.push(DockerImage {
                config,
                layers,
                names,
            }),
        }
    }
    if found.is_empty() {
        return Err(ImageError::InvalidContent(format!(
            "{}: manifest.json lists no image",
            path.display()
        )));
    }
    let names = assign_names(path, tags, found.iter().map(|f| f.names.clone()).collect())?;

    // Configs came with the first pass; the image id is the digest of the bytes.
    let mut configs = Vec::with_capacity(found.len());
    for image in &found {
        let raw = archive.cached(&image.config, "image config")?;
        let config: ImageConfiguration = parse_json(path, &image.config, raw)?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != image.layers.len() {
            return Err(ImageError::InvalidContent(format!(
                "{}: {} has {} diff_ids but manifest.json lists {} layers",
                path.display(),
                image.config,
                diff_ids.len(),
                image.layers.len()
            )));
        }
        let digest = sha256_bytes(raw);
        content.write_bytes(&digest, raw)?;
        let descriptor = Schema2Descriptor {
            media_type: DOCKER_CONFIG,
            size: raw.len() as u64,
            digest,
        };
        configs.push((descriptor, diff_ids));
    }

    let wanted: HashSet<String> = found
        .iter()
        .flat_map(|f| f.layers.iter().cloned())
        .collect();
    let mut stored: HashMap<String, (Schema2Descriptor, Compression)> = HashMap::new();
    archive.stream(content, &wanted, true, &mut |name, blob| {
        let digest = blob
            .digest
            .clone()
            .ok_or_else(|| ImageError::Store(format!("import: {name} was not hashed")))?;
        let compression = Compression::sniff(&blob.head[..blob.size.min(4) as usize]);
        let media_type = match compression {
            Compression::None => DOCKER_LAYER,
            Compression::Gzip => DOCKER_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        };
        let size = blob.size;
        // The digest was computed from exactly these bytes as they were written:
        // there is no claimed digest to verify (the diff_ids are checked instead).
        commit(
            content,
            blob,
            &digest,
            false,
            &format!("{}: {name}", path.display()),
        )?;
        let descriptor = Schema2Descriptor {
            media_type,
            size,
            digest,
        };
        stored.insert(name.to_owned(), (descriptor, compression));
        Ok(())
    })?;

    let mut staged = Vec::with_capacity(found.len());
    for ((image, (config, diff_ids)), names) in found.iter().zip(configs).zip(names) {
        let mut layers = Vec::with_capacity(image.layers.len());
        for (layer, diff_id) in image.layers.iter().zip(&diff_ids) {
            let (descriptor, compression) = stored.get(layer).ok_or_else(|| {
                ImageError::InvalidContent(format!(
                    "{}: the archive has no file {layer}",
                    path.display()
                ))
            })?;
            // An uncompressed layer is its own diff: catch a mismatch before unpacking.
            if *compression == Compression::None && descriptor.digest != *diff_id {
                return Err(ImageError::DigestMismatch {
                    what: format!(
                        "{}: layer {layer} against the diff_ids of {}",
                        path.display(),
                        image.config
                    ),
                    expected: diff_id.clone(),
                    actual: descriptor.digest.clone(),
                });
            }
            layers.push(descriptor.clone());
        }
        let config_digest = config.digest.clone();
        let manifest = Schema2Manifest {
            schema_version: 2,
            media_type: MEDIA_DOCKER_MANIFEST,
            config,
            layers,
        };
        let manifest_raw = serde_json::to_vec(&manifest)
            .map_err(|e| ImageError::Store(format!("encode manifest: {e}")))?;
        staged.push(Staged {
            manifest_raw,
            config_digest,
            names,
        });
    }
    Ok(staged)
}

/// An ingest file this import wrote; removed unless it was committed (renamed away).
struct IngestFile(PathBuf);

impl Drop for IngestFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_stay_inside() {
        assert_eq!(
            entry_name(Path::new("./blobs//sha256/ab")).as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(
            entry_name(Path::new("manifest.json")).as_deref(),
            Some("manifest.json")
        );
        for bad in ["../evil", "/abs", "a/../../b", "a/..", ".", "./"] {
            assert_eq!(entry_name(Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn bare_ref_names_name_nothing() {
        let desc = |ann: &[(&str, &str)]| {
            let mut d: Descriptor = serde_json::from_str(&format!(
                r#"{{"mediaType":"{MEDIA_OCI_MANIFEST}","digest":"sha256:{}","size":1}}"#,
                "a".repeat(64)
            ))
            .unwrap();
            d.set_annotations(Some(
                ann.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ));
            d
        };
        assert_eq!(
            annotated_name(&desc(&[(REF_NAME_ANNOTATION, "latest")])),
            None
        );
        assert_eq!(
            annotated_name(&desc(&[(REF_NAME_ANNOTATION, "busybox:1.36")])).as_deref(),
            Some("docker.io/library/busybox:1.36")
        );
        assert_eq!(
            annotated_name(&desc(&[
                (NAME_ANNOTATION, "quay.io/a/b:v1"),
                (REF_NAME_ANNOTATION, "v1")
            ]))
            .as_deref(),
            Some("quay.io/a/b:v1")
        );
    }

    #[test]
    fn tags_with_digests_are_refused() {
        assert_eq!(
            normalize_tags(&["busybox".into()]).unwrap(),
            vec!["docker.io/library/busybox:latest"]
        );
        let d = format!("busybox@sha256:{}", "a".repeat(64));
        assert!(normalize_tags(&[d]).is_err());
    }
}
