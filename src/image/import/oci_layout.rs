//! OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/…`): what every
//! layout shares, wherever its files come from, and the directory form.
//!
//! Multi-platform indexes give this host's manifest (`registry::select_platform`),
//! as a pull would.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;

use super::super::content::{hex_of, sha256_bytes, ContentStore};
use super::super::ingest::{commit, ingest};
use super::super::reference::parse_reference;
use super::super::registry::{
    host_platform_name, select_platform, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
};
use super::super::ImageError;
use super::{assign_names, merge_names, parse_json, stored_name, Staged, MAX_JSON};

/// Indexes nested deeper than this are refused (an index may point at itself).
const MAX_INDEX_DEPTH: usize = 4;
/// containerd's annotation: the image's full name.
const NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation: often only a tag (`latest`), sometimes a full name.
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Where an OCI layout's files come from: a directory, or a tar of one.
pub(super) trait OciSource {
    /// Where the layout is, for messages.
    fn path(&self) -> &Path;
    /// A top-level file (`oci-layout`, `index.json`), size-capped.
    fn top_file(&self, name: &str) -> Result<Vec<u8>, ImageError>;
    /// A JSON blob (index, manifest, config) as the layout holds it, unverified.
    fn json_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError>;
    /// Copies blobs into the content store, each verified against its digest.
    fn store_blobs(&self, content: &ContentStore, digests: &[String]) -> Result<(), ImageError>;
}

pub(super) fn stage_oci(
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

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`).
pub(super) struct LayoutDir {
    pub(super) root: PathBuf,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
