use k8s_cri::v1::{AttachRequest, AttachResponse};
use tonic::Status;

use super::errors::to_status;
use crate::daemon::Daemon;
use crate::streaming::session::StreamOpts;
use crate::streaming::tokens::StreamRequest;

/// Attach: validates now (missing container, not running, no stream, tty with stderr, a
/// backend that cannot attach), then hands out a single-use URL on the streaming server
/// where the session joins the container's stdio.
#[tracing::instrument(level = "debug", skip_all, fields(container = %req.container_id))]
pub fn attach(d: &Daemon, req: AttachRequest) -> Result<AttachResponse, Status> {
    let opts = StreamOpts {
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
        tty: req.tty,
    };
    let container_id =
        crate::container::validate_attach(&d.ctx(), &req.container_id, opts).map_err(to_status)?;
    let url = d
        .streaming()
        .url_for(StreamRequest::Attach { container_id, opts })
        .map_err(to_status)?;
    Ok(AttachResponse { url })
}
