use k8s_cri::v1::{StartContainerRequest, StartContainerResponse};
use tonic::Status;

use super::errors::to_status;
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(container = %req.container_id))]
pub async fn start_container(
    d: &Daemon,
    req: StartContainerRequest,
) -> Result<StartContainerResponse, Status> {
    crate::container::start_container(&d.ctx(), &req.container_id)
        .await
        .map_err(to_status)?;
    Ok(StartContainerResponse {})
}
