use k8s_cri::v1::{PortForwardRequest, PortForwardResponse};
use tonic::Status;

use super::errors::{invalid, to_status};
use crate::daemon::Daemon;
use crate::streaming::tokens::StreamRequest;

/// PortForward: validates now (missing or stopped pod, bad ports), then hands out a
/// single-use URL on the streaming server.
#[tracing::instrument(level = "debug", skip_all, fields(sandbox = %req.pod_sandbox_id))]
pub fn port_forward(d: &Daemon, req: PortForwardRequest) -> Result<PortForwardResponse, Status> {
    let ports = req
        .port
        .iter()
        .map(|&p| match u16::try_from(p) {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(invalid(format!("PortForward: port {p} is not in 1-65535"))),
        })
        .collect::<Result<Vec<u16>, Status>>()?;
    let sandbox_id =
        crate::sandbox::check_port_forward(&d.ctx(), &req.pod_sandbox_id).map_err(to_status)?;
    let url = d
        .streaming()
        .url_for(StreamRequest::PortForward { sandbox_id, ports })
        .map_err(to_status)?;
    Ok(PortForwardResponse { url })
}
