use k8s_cri::v1::{StopContainerRequest, StopContainerResponse};
use tonic::Status;

use super::errors::to_status;
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(container = %req.container_id))]
pub async fn stop_container(
    d: &Daemon,
    req: StopContainerRequest,
) -> Result<StopContainerResponse, Status> {
    crate::container::stop_container(&d.ctx(), &req.container_id, req.timeout)
        .await
        .map_err(to_status)?;
    Ok(StopContainerResponse {})
}
