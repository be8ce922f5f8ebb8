//! `proxrt image import`: OCI layout directories, OCI archives and docker-archive tars.
//!
//! Everything read here is untrusted. Blobs named by a digest are verified before
//! they enter the content store, JSON documents are read with a size cap, and tar
//! entry names are never used as paths: an archive is read entry by entry and only
//! the entries the layout or `manifest.json` asks for are streamed, straight into
//! `content/ingest`. Nothing is extracted, so a name like `../x` can write nowhere.
//!
//! One file per form: `oci_layout` (a directory, and what every OCI layout shares),
//! `oci_archive` (a tar of a layout), `docker_archive` (`docker save`); `archive`
//! is the tar reader the last two share. This file picks the form and records
//! what was staged.
//!
//! A failed import leaves nothing: images it recorded are removed again, and a
//! garbage collection takes every blob and snapshot no image references.

mod archive;
mod docker_archive;
mod oci_archive;
mod oci_layout;

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use super::content::ContentStore;
use super::reference::{parse_reference, tag_name};
use super::{ImageEntry, ImageError, Images};
use archive::Archive;
use docker_archive::stage_docker;
use oci_layout::stage_oci;
use oci_layout::LayoutDir;

/// Largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 4 << 20;

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
fn parse_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    raw: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(raw)
        .map_err(|e| ImageError::InvalidContent(format!("{}: {what}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

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
