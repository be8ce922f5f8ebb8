use k8s_cri::v1::{ExecSyncRequest, ExecSyncResponse};
use tonic::Status;

use super::errors::to_status;
use crate::daemon::Daemon;

#[tracing::instrument(level = "debug", skip_all, fields(container = %req.container_id))]
pub async fn exec_sync(d: &Daemon, req: ExecSyncRequest) -> Result<ExecSyncResponse, Status> {
    let r = crate::container::exec_sync(&d.ctx(), &req.container_id, req.cmd, req.timeout)
        .await
        .map_err(to_status)?;
    // A timed-out command is reported like kubelet expects from other runtimes: the
    // output so far and a non-zero exit code (the process was killed).
    Ok(ExecSyncResponse {
        stdout: r.stdout,
        stderr: r.stderr,
        exit_code: if r.timed_out && r.exit_code == 0 {
            137
        } else {
            r.exit_code
        },
    })
}
