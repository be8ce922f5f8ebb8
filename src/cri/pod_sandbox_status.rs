use std::collections::HashMap;

use k8s_cri::v1::{
    LinuxPodSandboxStatus, Namespace, PodIp, PodSandboxNetworkStatus, PodSandboxState,
    PodSandboxStatus, PodSandboxStatusRequest, PodSandboxStatusResponse,
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
    let ips = d
        .backends()
        .get(&r.backend)
        .map(|b| b.pod_ips(&r))
        .unwrap_or_default();
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
                "network": match (&r.network, ips.is_empty()) {
                    (Some(n), _) => serde_json::json!({
                        "cni": n.file,
                        "ifname": n.ifname,
                        "args": n.args,
                        "inProcess": n.in_process,
                        "result": serde_json::from_str::<serde_json::Value>(&n.result).ok(),
                    }),
                    (None, true) => "the host's, or loopback only when stopped".into(),
                    (None, false) => "the backend's (guest interfaces)".into(),
                },
            })
            .to_string(),
        );
    }
    Ok(PodSandboxStatusResponse {
        status: Some(to_cri_status(&r, &ips)),
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

pub(super) fn to_cri_status(r: &SandboxRecord, ips: &[String]) -> PodSandboxStatus {
    let options = crate::sandbox::namespace_options(&r.config);
    PodSandboxStatus {
        id: r.id.clone(),
        metadata: r.config.metadata.clone(),
        state: cri_state(r.state) as i32,
        created_at: r.created_at,
        // A host pod has the addresses CNI gave it (host-network pods use the node's and
        // show none, as with containerd). A guest has those its interfaces last showed.
        network: Some(PodSandboxNetworkStatus {
            ip: ips.first().cloned().unwrap_or_default(),
            additional_ips: ips
                .iter()
                .skip(1)
                .map(|ip| PodIp { ip: ip.clone() })
                .collect(),
        }),
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
