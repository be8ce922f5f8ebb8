//! StartContainer, StopContainer, RemoveContainer. Stop and remove succeed when the
//! container is already stopped or gone (kubelet relies on it).

use std::sync::Arc;
use std::time::Duration;

use super::{rootfs, Container, ContainerError, Phase};
use crate::backend::Backend;
use crate::context::Ctx;

pub async fn start_container(ctx: &Ctx<'_>, id: &str) -> Result<(), ContainerError> {
    let c = ctx.containers.get(id)?;
    let _op = c.op_lock.lock().await;
    let snap = c.refresh();
    if snap.phase() != Phase::Created {
        return Err(snap.wrong_state(&c.id, "only a created container can be started"));
    }
    let backend = ctx.backends.get(&c.record.backend)?;
    backend.start(&c.record.run_dir).await?;
    c.refresh();
    watch_exit(backend, c.clone());
    tracing::info!(container = %c.id, "container started");
    Ok(())
}

/// Keeps the cached status true when the container exits, without anyone polling.
pub fn watch_exit(backend: Arc<dyn Backend>, c: Arc<Container>) {
    let watched = crate::metrics::monitor_watched();
    tokio::spawn(async move {
        let _watched = watched;
        if let Err(e) = backend.wait(&c.record.run_dir).await {
            tracing::debug!(container = %c.id, error = %e, "wait for exit");
        }
        c.refresh();
    });
}

/// Sends the stop signal, waits up to `timeout_secs`, then SIGKILL.
pub async fn stop_container(
    ctx: &Ctx<'_>,
    id: &str,
    timeout_secs: i64,
) -> Result<(), ContainerError> {
    let c = match ctx.containers.get(id) {
        Err(ContainerError::NotFound(_)) => return Ok(()),
        other => other?,
    };
    let _op = c.op_lock.lock().await;
    stop_locked(ctx, &c, timeout_secs).await
}

async fn stop_locked(
    ctx: &Ctx<'_>,
    c: &Arc<Container>,
    timeout_secs: i64,
) -> Result<(), ContainerError> {
    let snap = c.refresh();
    let backend = ctx.backends.get(&c.record.backend)?;
    match snap.phase() {
        Phase::Exited => return Ok(()),
        Phase::Unknown if !backend.is_alive(&c.record.run_dir) => return Ok(()),
        Phase::Running if timeout_secs > 0 => {
            backend
                .signal(&c.record.run_dir, c.record.stop_signal)
                .await?;
            let waited = tokio::time::timeout(
                Duration::from_secs(timeout_secs as u64),
                backend.wait(&c.record.run_dir),
            )
            .await;
            if let Ok(r) = waited {
                r?;
                c.refresh();
                return Ok(());
            }
            tracing::info!(container = %c.id, timeout_secs, "stop signal ignored; killing");
        }
        _ => {}
    }
    backend.signal(&c.record.run_dir, libc::SIGKILL).await?;
    backend.wait(&c.record.run_dir).await?;
    c.refresh();
    Ok(())
}

/// Kills the container if it runs, then removes its rootfs, dirs, name and record.
pub async fn remove_container(ctx: &Ctx<'_>, id: &str) -> Result<(), ContainerError> {
    let c = match ctx.containers.get(id) {
        Err(ContainerError::NotFound(_)) => return Ok(()),
        other => other?,
    };
    let _op = c.op_lock.lock().await;
    stop_locked(ctx, &c, 0).await?;
    let r = &c.record;
    let paths = ctx.containers.paths(r);
    rootfs::unmount(&paths.rootfs()).map_err(|e| ContainerError::io("remove rootfs", e))?;
    for dir in [&paths.run_dir, &paths.state_dir] {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ContainerError::io(format!("remove {}", dir.display()), e))
            }
            _ => {}
        }
    }
    ctx.names.release(&r.name, &r.id);
    ctx.containers.remove(&r.id);
    tracing::info!(container = %r.id, "container removed");
    Ok(())
}
