use std::collections::HashMap;

use k8s_cri::v1::{
    LinuxPodSandboxStatus, Namespace, PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus,
    PodSandboxStatusRequest, PodSandboxStatusResponse,
};
use tonic::Status;

use super::errors::to_status;
use crate::daemon::Daemon;
use crate::sandbox::{SandboxRecord, SandboxState};

#[tracing::instrument(level = "debug", skip_all, fields(sandbox = %req.pod_sandbox_id))]
pub fn pod_sandbox_status(
    d: &Daemon,
    req: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse, Status> {
    let sandbox = d.sandboxes().get(&req.pod_sandbox_id).map_err(to_status)?;
    let r = sandbox.record();
    let mut info = HashMap::new();
    if req.verbose {
        info.insert(
            "info".into(),
            serde_json::json!({
                "pid": r.holder_pid,
                "backend": r.backend,
                "backendReason": r.backend_reason,
                "runtimeHandler": r.runtime_handler,
                "namespaces": r.namespaces,
                "runDir": r.run_dir,
                "cgroupParent": r.cgroup_parent(),
                "network": "loopback only (no CNI)",
            })
            .to_string(),
        );
    }
    Ok(PodSandboxStatusResponse {
        status: Some(to_cri_status(&r)),
        info,
        ..Default::default()
    })
}

pub(super) fn cri_state(state: SandboxState) -> PodSandboxState {
    match state {
        SandboxState::Ready => PodSandboxState::SandboxReady,
        SandboxState::NotReady => PodSandboxState::SandboxNotready,
    }
}

fn to_cri_status(r: &SandboxRecord) -> PodSandboxStatus {
    let options = r
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    PodSandboxStatus {
        id: r.id.clone(),
        metadata: r.config.metadata.clone(),
        state: cri_state(r.state) as i32,
        created_at: r.created_at,
        // No CNI yet: a pod has no IP beyond loopback (host-network pods use the node's).
        network: Some(PodSandboxNetworkStatus::default()),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(options),
            }),
        }),
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        runtime_handler: r.runtime_handler.clone(),
    }
}
