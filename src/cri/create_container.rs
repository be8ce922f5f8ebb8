use k8s_cri::v1::{CreateContainerRequest, CreateContainerResponse};
use tonic::Status;

use super::errors::{invalid, to_status};
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(sandbox = %req.pod_sandbox_id, container))]
pub async fn create_container(
    d: &Daemon,
    req: CreateContainerRequest,
) -> Result<CreateContainerResponse, Status> {
    let config = req
        .config
        .ok_or_else(|| invalid("CreateContainer: config is required"))?;
    if let Some(m) = &config.metadata {
        tracing::Span::current().record("container", m.name.as_str());
    }
    let id = crate::container::create_container(
        &d.ctx(),
        &req.pod_sandbox_id,
        config,
        req.sandbox_config,
    )
    .await
    .map_err(to_status)?;
    Ok(CreateContainerResponse { container_id: id })
}
