//! proxrt.v1.Admin/ImportImage: load images from a local archive or layout.

use std::path::Path;

use tonic::Status;

use super::errors::{invalid, to_status};
use crate::admin::{ImportImageRequest, ImportImageResponse, ImportedImage};
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(path = %req.path))]
pub async fn import_image(
    d: &Daemon,
    req: ImportImageRequest,
) -> Result<ImportImageResponse, Status> {
    let path = Path::new(&req.path);
    if !path.is_absolute() {
        return Err(invalid(format!(
            "ImportImage: path {:?} must be absolute",
            req.path
        )));
    }
    let imported = crate::image::import::import(d.images(), path, &req.tags)
        .await
        .map_err(to_status)?;
    Ok(ImportImageResponse {
        images: imported
            .iter()
            .map(|e| ImportedImage {
                id: e.record.id.clone(),
                repo_tags: e.record.repo_tags.clone(),
                size: e.record.size,
            })
            .collect(),
    })
}
