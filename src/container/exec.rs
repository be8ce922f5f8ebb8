//! ExecSync and ReopenContainerLog.

use std::time::Duration;

use super::{ContainerError, Phase};
use crate::context::Ctx;
use crate::monitor::ExecSyncResult;

/// Runs `cmd` in the running container; `timeout_secs` 0 means no deadline. At the
/// deadline the process is killed and the result says so.
pub async fn exec_sync(
    ctx: &Ctx<'_>,
    id: &str,
    cmd: Vec<String>,
    timeout_secs: i64,
) -> Result<ExecSyncResult, ContainerError> {
    let c = ctx.containers.get(id)?;
    if cmd.is_empty() {
        return Err(ContainerError::Invalid("ExecSync: cmd is empty".into()));
    }
    let snap = c.refresh();
    if snap.phase() != Phase::Running {
        return Err(snap.wrong_state(&c.id, "exec needs a running container"));
    }
    let timeout = (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs as u64));
    let backend = ctx.backends.get(&c.record.backend)?;
    Ok(backend.exec_sync(&c.record.run_dir, cmd, timeout).await?)
}

pub async fn reopen_log(ctx: &Ctx<'_>, id: &str) -> Result<(), ContainerError> {
    let c = ctx.containers.get(id)?;
    let snap = c.refresh();
    if snap.phase() != Phase::Running {
        return Err(snap.wrong_state(&c.id, "only a running container's log can be reopened"));
    }
    let backend = ctx.backends.get(&c.record.backend)?;
    Ok(backend.reopen_log(&c.record.run_dir).await?)
}
