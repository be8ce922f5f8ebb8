use k8s_cri::v1::{UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};
use tonic::Status;

use super::errors::{invalid, to_status};
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(container = %req.container_id))]
pub async fn update_container_resources(
    d: &Daemon,
    req: UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse, Status> {
    let Some(linux) = req.linux else {
        return Err(invalid(
            "UpdateContainerResources: linux resources are required (Windows ones are not supported)",
        ));
    };
    crate::container::update_resources(&d.ctx(), &req.container_id, linux)
        .await
        .map_err(to_status)?;
    Ok(UpdateContainerResourcesResponse {})
}
