use k8s_cri::v1::{ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox};
use tonic::Status;

use super::pod_sandbox_status::cri_state;
use crate::daemon::Daemon;

#[tracing::instrument(level = "debug", skip_all)]
pub fn list_pod_sandbox(
    d: &Daemon,
    req: ListPodSandboxRequest,
) -> Result<ListPodSandboxResponse, Status> {
    let filter = req.filter.unwrap_or_default();
    let items = d
        .sandboxes()
        .all()
        .into_iter()
        .map(|s| s.record())
        .filter(|r| filter.id.is_empty() || r.id.starts_with(&filter.id))
        .filter(|r| {
            filter
                .state
                .as_ref()
                .is_none_or(|s| s.state == cri_state(r.state) as i32)
        })
        .filter(|r| {
            filter
                .label_selector
                .iter()
                .all(|(k, v)| r.config.labels.get(k) == Some(v))
        })
        .map(|r| PodSandbox {
            id: r.id.clone(),
            metadata: r.config.metadata.clone(),
            state: cri_state(r.state) as i32,
            created_at: r.created_at,
            labels: r.config.labels.clone(),
            annotations: r.config.annotations.clone(),
            runtime_handler: r.runtime_handler.clone(),
        })
        .collect();
    Ok(ListPodSandboxResponse { items })
}
