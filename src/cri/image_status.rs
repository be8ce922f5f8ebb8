use std::collections::HashMap;

use k8s_cri::v1::{Image, ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value};
use tonic::Status;

use super::errors::{invalid, to_status};
use crate::daemon::Daemon;
use crate::image::ImageEntry;

#[tracing::instrument(level = "debug", skip_all, fields(image))]
pub fn image_status(d: &Daemon, req: ImageStatusRequest) -> Result<ImageStatusResponse, Status> {
    let name = req.image.map(|s| s.image).unwrap_or_default();
    tracing::Span::current().record("image", name.as_str());
    if name.is_empty() {
        return Err(invalid("ImageStatus: image is required"));
    }
    // CRI: an image that is not present is a response with no image, not an error.
    let Some(entry) = d.images().status(&name).map_err(to_status)? else {
        return Ok(ImageStatusResponse::default());
    };
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("info".into(), verbose_info(&entry));
    }
    Ok(ImageStatusResponse {
        image: Some(to_cri_image(&entry)),
        info,
    })
}

/// A stored image as CRI describes it. The user is the image config's `User`:
/// numeric → `uid`, a name → `username` (kubelet's runAsNonRoot check reads these).
pub(super) fn to_cri_image(entry: &ImageEntry) -> Image {
    let r = &entry.record;
    let user = entry
        .config
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    let user = user.split(':').next().unwrap_or_default().to_owned();
    let (uid, username) = match user.parse::<i64>() {
        Ok(uid) => (Some(Int64Value { value: uid }), String::new()),
        Err(_) if user.is_empty() => (Some(Int64Value { value: 0 }), String::new()),
        Err(_) => (None, user),
    };
    Image {
        id: r.id.clone(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size,
        uid,
        username,
        spec: Some(ImageSpec {
            image: r.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

fn verbose_info(entry: &ImageEntry) -> String {
    let r = &entry.record;
    serde_json::json!({
        "id": r.id,
        "manifestDigest": r.manifest_digest,
        "indexDigest": r.index_digest,
        "size": r.size,
        "storedAt": r.stored_at,
        "layers": r.layers,
        "config": entry.config,
    })
    .to_string()
}
