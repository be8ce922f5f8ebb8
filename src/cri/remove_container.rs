use k8s_cri::v1::{RemoveContainerRequest, RemoveContainerResponse};
use tonic::Status;

use super::errors::to_status;
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(container = %req.container_id))]
pub async fn remove_container(
    d: &Daemon,
    req: RemoveContainerRequest,
) -> Result<RemoveContainerResponse, Status> {
    crate::container::remove_container(&d.ctx(), &req.container_id)
        .await
        .map_err(to_status)?;
    Ok(RemoveContainerResponse {})
}
