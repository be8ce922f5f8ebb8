use k8s_cri::v1::{RunPodSandboxRequest, RunPodSandboxResponse};
use tonic::Status;

use super::errors::{invalid, to_status};
use crate::daemon::Daemon;

#[tracing::instrument(skip_all, fields(pod))]
pub async fn run_pod_sandbox(
    d: &Daemon,
    req: RunPodSandboxRequest,
) -> Result<RunPodSandboxResponse, Status> {
    let config = req
        .config
        .ok_or_else(|| invalid("RunPodSandbox: config is required"))?;
    if let Some(m) = &config.metadata {
        tracing::Span::current().record("pod", format!("{}/{}", m.namespace, m.name));
    }
    let id = crate::sandbox::run_pod_sandbox(&d.ctx(), config, &req.runtime_handler)
        .await
        .map_err(to_status)?;
    Ok(RunPodSandboxResponse { pod_sandbox_id: id })
}
