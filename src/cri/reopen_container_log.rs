use k8s_cri::v1::{ReopenContainerLogRequest, ReopenContainerLogResponse};
use tonic::Status;

use super::errors::to_status;
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(container = %req.container_id))]
pub async fn reopen_container_log(
    d: &Daemon,
    req: ReopenContainerLogRequest,
) -> Result<ReopenContainerLogResponse, Status> {
    crate::container::reopen_log(&d.ctx(), &req.container_id)
        .await
        .map_err(to_status)?;
    Ok(ReopenContainerLogResponse {})
}
