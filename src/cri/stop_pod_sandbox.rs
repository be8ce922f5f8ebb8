use k8s_cri::v1::{StopPodSandboxRequest, StopPodSandboxResponse};
use tonic::Status;

use super::errors::to_status;
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(sandbox = %req.pod_sandbox_id))]
pub async fn stop_pod_sandbox(
    d: &Daemon,
    req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse, Status> {
    crate::sandbox::stop_pod_sandbox(&d.ctx(), &req.pod_sandbox_id)
        .await
        .map_err(to_status)?;
    Ok(StopPodSandboxResponse {})
}
