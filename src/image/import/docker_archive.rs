//! docker-archives (`docker save`): `manifest.json` lists each image's config and
//! layer files. A docker-archive has no manifest of its own: one is written for
//! each image (Docker schema2, the config and the layer files as they are), so the
//! image gets an id and a manifest digest like any other.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use super::super::content::{sha256_bytes, ContentStore};
use super::super::ingest::commit;
use super::super::reference::parse_reference;
use super::super::registry::MEDIA_DOCKER_MANIFEST;
use super::super::unpack::Compression;
use super::super::ImageError;
use super::archive::{entry_name, Archive};
use super::{assign_names, merge_names, parse_json, stored_name, Staged};

const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

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

pub(super) fn stage_docker(
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
