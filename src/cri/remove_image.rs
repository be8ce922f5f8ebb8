use k8s_cri::v1::{RemoveImageRequest, RemoveImageResponse};
use tonic::Status;

use super::errors::{invalid, to_status};
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(image))]
pub async fn remove_image(
    d: &Daemon,
    req: RemoveImageRequest,
) -> Result<RemoveImageResponse, Status> {
    let name = req.image.map(|s| s.image).unwrap_or_default();
    tracing::Span::current().record("image", name.as_str());
    if name.trim().is_empty() {
        return Err(invalid("RemoveImage: image is required"));
    }
    // Removing an image that is already gone succeeds: kubelet's image GC relies on it.
    if let Some(removed) = d.images().remove(&name).await.map_err(to_status)? {
        tracing::info!(image = %name, id = %removed.record.id, "image removed");
    }
    Ok(RemoveImageResponse {})
}
