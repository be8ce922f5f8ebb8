use k8s_cri::v1::{PullImageRequest, PullImageResponse};
use tonic::Status;

use super::errors::{invalid, to_status};
use crate::daemon::Daemon;
use crate::image::Credentials;
use crate::metrics::{self, PullOutcome};

#[tracing::instrument(skip_all, fields(image))]
pub async fn pull_image(d: &Daemon, req: PullImageRequest) -> Result<PullImageResponse, Status> {
    let name = req.image.map(|s| s.image).unwrap_or_default();
    tracing::Span::current().record("image", name.as_str());
    if name.trim().is_empty() {
        return Err(invalid("PullImage: image is required"));
    }
    let creds = match req.auth {
        Some(a) => Credentials::from_cri(&a.username, &a.password, &a.auth, &a.registry_token)
            .map_err(to_status)?,
        None => Credentials::Anonymous,
    };
    let started = std::time::Instant::now();
    let pulled = match d.backends().template_for(&name) {
        // A Proxmox template: checked on its storage and recorded, never downloaded.
        Some((backend, template)) => match backend.pull_template(&template).await {
            Ok(found) => d
                .images()
                .record_template(&name, &found.template, found.size)
                .await
                .map_err(to_status),
            Err(e) => Err(to_status(e)),
        },
        None => d.images().pull(&name, &creds).await.map_err(to_status),
    };
    let outcome = match pulled {
        Ok(_) => PullOutcome::Success,
        Err(_) => PullOutcome::Failure,
    };
    metrics::pull_finished(outcome, started.elapsed());
    let entry = pulled?;
    tracing::info!(image = %name, id = %entry.record.id, elapsed_ms = started.elapsed().as_millis() as u64, "pulled");
    Ok(PullImageResponse {
        image_ref: entry.record.id.clone(),
    })
}
