use k8s_cri::v1::{RemovePodSandboxRequest, RemovePodSandboxResponse};
use tonic::Status;

use super::errors::to_status;
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(sandbox = %req.pod_sandbox_id))]
pub async fn remove_pod_sandbox(
    d: &Daemon,
    req: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse, Status> {
    crate::sandbox::remove_pod_sandbox(&d.ctx(), &req.pod_sandbox_id)
        .await
        .map_err(to_status)?;
    Ok(RemovePodSandboxResponse {})
}
