use k8s_cri::v1::{ExecRequest, ExecResponse};
use tonic::Status;

use super::errors::to_status;
use crate::daemon::Daemon;
use crate::streaming::session::StreamOpts;
use crate::streaming::tokens::StreamRequest;

/// Exec: validates now (missing container, not running, no stream, tty with stderr), then
/// hands out a single-use URL on the streaming server where the session runs.
#[tracing::instrument(level = "debug", skip_all, fields(container = %req.container_id))]
pub fn exec(d: &Daemon, req: ExecRequest) -> Result<ExecResponse, Status> {
    let opts = StreamOpts {
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
        tty: req.tty,
    };
    let container_id =
        crate::container::check_exec_stream(&d.ctx(), &req.container_id, &req.cmd, opts)
            .map_err(to_status)?;
    let url = d
        .streaming()
        .url_for(StreamRequest::Exec {
            container_id,
            cmd: req.cmd,
            opts,
        })
        .map_err(to_status)?;
    Ok(ExecResponse { url })
}
