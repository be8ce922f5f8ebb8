use k8s_cri::v1::{UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse};
use tonic::Status;

use super::errors::to_status;
use crate::daemon::Daemon;

/// kubelet hands over the node's pod CIDR (once it has one): kept for CNI's `ipRanges`
/// capability and `[cni] conf_template` (docs/networking.md), shown by `proxrt info`.
#[tracing::instrument(level = "debug", skip_all)]
pub fn update_runtime_config(
    d: &Daemon,
    req: UpdateRuntimeConfigRequest,
) -> Result<UpdateRuntimeConfigResponse, Status> {
    let pod_cidr = req
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
        .unwrap_or_default();
    d.network().set_pod_cidr(&pod_cidr).map_err(to_status)?;
    Ok(UpdateRuntimeConfigResponse {})
}
