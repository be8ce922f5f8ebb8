use k8s_cri::v1::{ListImagesRequest, ListImagesResponse};
use tonic::Status;

use super::errors::to_status;
use super::image_status::to_cri_image;
use crate::daemon::Daemon;

#[tracing::instrument(level = "debug", skip_all)]
pub fn list_images(d: &Daemon, req: ListImagesRequest) -> Result<ListImagesResponse, Status> {
    let filter = req.filter.and_then(|f| f.image).map(|s| s.image);
    let images = d.images().list(filter.as_deref()).map_err(to_status)?;
    Ok(ListImagesResponse {
        images: images.iter().map(|e| to_cri_image(e)).collect(),
    })
}
