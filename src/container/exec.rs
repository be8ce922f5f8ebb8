//! ExecSync, streaming Exec and ReopenContainerLog.

use std::time::Duration;

use super::{ContainerError, Phase};
use crate::backend::BackendError;
use crate::context::Ctx;
use crate::error::Kind;
use crate::monitor::ExecSyncResult;
use crate::streaming::session::{Outcome, StdioStreams, StreamOpts};

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

/// Checks that a streaming exec can run now (CRI Exec, before the URL is handed out);
/// returns the container's full id.
pub fn check_exec_stream(
    ctx: &Ctx<'_>,
    id: &str,
    cmd: &[String],
    opts: StreamOpts,
) -> Result<String, ContainerError> {
    if cmd.is_empty() {
        return Err(ContainerError::Invalid("Exec: cmd is empty".into()));
    }
    check_stream_opts("Exec", opts)?;
    check_streamable(ctx, id, "exec needs a running container")
}

/// What every streaming session asks of its flags (kubelet's checks): at least one stream,
/// and no stderr with a tty (the terminal carries it).
pub fn check_stream_opts(rpc: &str, opts: StreamOpts) -> Result<(), ContainerError> {
    if !opts.stdin && !opts.stdout && !opts.stderr {
        return Err(ContainerError::Invalid(format!(
            "{rpc}: one of stdin, stdout or stderr must be requested"
        )));
    }
    if opts.tty && opts.stderr {
        return Err(ContainerError::Invalid(format!(
            "{rpc}: tty and stderr cannot both be requested (the terminal carries stderr)"
        )));
    }
    Ok(())
}

/// The container exists, runs, and its backend serves streaming sessions; its full id.
pub fn check_streamable(ctx: &Ctx<'_>, id: &str, what: &str) -> Result<String, ContainerError> {
    let c = ctx.containers.get(id)?;
    let snap = c.refresh();
    if snap.phase() != Phase::Running {
        return Err(snap.wrong_state(&c.id, what));
    }
    let backend = ctx.backends.get(&c.record.backend)?;
    if let Some(why) = backend.streaming_unsupported() {
        return Err(BackendError::Failed {
            backend: backend.name(),
            kind: Kind::FailedPrecondition,
            message: why,
        }
        .into());
    }
    Ok(c.id.clone())
}

/// Runs a streaming exec with the client's streams, to its end (the session behind an
/// Exec URL). What goes wrong is the outcome the client is shown.
pub async fn exec_stream(
    ctx: &Ctx<'_>,
    id: &str,
    cmd: Vec<String>,
    opts: StreamOpts,
    streams: StdioStreams,
) -> Outcome {
    let run = async {
        check_exec_stream(ctx, id, &cmd, opts)?;
        let c = ctx.containers.get(id)?;
        let backend = ctx.backends.get(&c.record.backend)?;
        Ok::<_, ContainerError>(
            backend
                .exec_stream(&c.record.run_dir, cmd, opts, streams)
                .await?,
        )
    };
    match run.await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::debug!(container = %id, error = %e, "exec session failed");
            Outcome::Failure(e.to_string())
        }
    }
}
