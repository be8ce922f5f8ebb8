//! StartContainer, StopContainer, RemoveContainer. Stop and remove succeed when the
//! container is already stopped or gone (kubelet relies on it).

use std::sync::Arc;
use std::time::Duration;

use super::{rootfs, Container, ContainerError, Phase};
use crate::backend::{Backend, BackendError, ContainerForm, Unsupervised};
use crate::context::Ctx;

pub async fn start_container(ctx: &Ctx<'_>, id: &str) -> Result<(), ContainerError> {
    let c = ctx.containers.get(id)?;
    let _op = c.op_lock.lock().await;
    let snap = c.refresh();
    if snap.phase() != Phase::Created {
        return Err(snap.wrong_state(&c.id, "only a created container can be started"));
    }
    let backend = ctx.backends.get(&c.record.backend)?;
    crate::crash_point!("start_container.begin");
    backend.start(&c.record.run_dir).await?;
    crate::crash_point!("start_container.started");
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

/// Stops through the container's monitor; when the monitor does not answer (a flooded
/// or wedged loop) or is gone (killed), the daemon kills the container's cgroup itself
/// and records the exit with the reason, instead of hanging or refusing forever.
async fn stop_locked(
    ctx: &Ctx<'_>,
    c: &Arc<Container>,
    timeout_secs: i64,
) -> Result<(), ContainerError> {
    let backend = ctx.backends.get(&c.record.backend)?;
    let run_dir = &c.record.run_dir;
    let recorded = crate::monitor::read_status(run_dir)
        .ok()
        .flatten()
        .is_some_and(|s| s.is_final());
    // Exited in memory without a final status.json: its monitor was lost (after a daemon
    // restart), and what it ran may still be alive.
    let lost = c.snapshot().phase() == Phase::Exited && !recorded;
    let outcome = match lost {
        true => Err(BackendError::Monitor(
            crate::monitor::MonitorError::MonitorGone {
                state_dir: run_dir.clone(),
            },
        )),
        false => stop_through_monitor(backend.as_ref(), c, timeout_secs).await,
    };
    match outcome {
        Err(BackendError::Monitor(e)) if e.is_unresponsive() => {
            let reason = format!(
                "killed by proxrt: the container's monitor {}",
                unresponsive(&e)
            );
            tracing::warn!(container = %c.id, error = %e, "monitor unresponsive; killing the container's cgroup");
            let bundle = ctx.containers.paths(&c.record).bundle();
            backend
                .kill_unsupervised(Unsupervised {
                    id: &c.id,
                    run_dir,
                    bundle: &bundle,
                    reason: &reason,
                })
                .await?;
            c.refresh();
            Ok(())
        }
        other => Ok(other?),
    }
}

/// The reason's wording for a monitor that timed out or is gone.
fn unresponsive(e: &crate::monitor::MonitorError) -> &'static str {
    match e {
        crate::monitor::MonitorError::Timeout(_) => "did not answer",
        _ => "is gone",
    }
}

async fn stop_through_monitor(
    backend: &dyn Backend,
    c: &Arc<Container>,
    timeout_secs: i64,
) -> Result<(), BackendError> {
    let snap = c.refresh();
    let grace = match snap.phase() {
        Phase::Exited => return Ok(()),
        Phase::Unknown if !backend.is_alive(&c.record.run_dir) => return Ok(()),
        Phase::Running => Duration::from_secs(timeout_secs.max(0) as u64),
        // Never started (or unknown): nothing to shut down gracefully.
        _ => Duration::ZERO,
    };
    backend
        .stop(&c.record.run_dir, c.record.stop_signal, grace)
        .await?;
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
    crate::crash_point!("remove_container.stopped");
    let backend = ctx.backends.get(&r.backend)?;
    backend.remove(&r.run_dir).await?;
    if matches!(backend.container_form(), ContainerForm::Bundle) {
        // The monitor removes the container's leaf cgroups after it has answered the
        // exit; one killed before that left them, empty: they go here (an rmdir never
        // removes a cgroup with processes), beside the answer.
        if let Some(cg) = ctx.containers.cgroup(&c) {
            tokio::task::spawn_blocking(move || {
                crate::monitor::remove_cgroup_leaf(std::path::Path::new(&cg))
            });
        }
    }
    crate::crash_point!("remove_container.backend");
    let paths = ctx.containers.paths(r);
    rootfs::unmount(&paths.rootfs()).map_err(|e| ContainerError::io("remove rootfs", e))?;
    crate::crash_point!("remove_container.unmounted");
    crate::mounts::remove_tree(&paths.run_dir)
        .map_err(|e| ContainerError::io(format!("remove {}", paths.run_dir.display()), e))?;
    crate::crash_point!("remove_container.run_dir");
    // The record goes last and at once (a rename out of the store): a daemon killed
    // before it finds the container again (exited) and removes it on the next call. The
    // files go after the answer.
    crate::mounts::retire_tree_later(&paths.state_dir)
        .map_err(|e| ContainerError::io(format!("remove {}", paths.state_dir.display()), e))?;
    crate::crash_point!("remove_container.record");
    ctx.names.release(&r.name, &r.id);
    ctx.containers.remove(&r.id);
    tracing::info!(container = %r.id, "container removed");
    Ok(())
}
