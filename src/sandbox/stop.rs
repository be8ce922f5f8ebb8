//! StopPodSandbox and RemovePodSandbox: both succeed when the sandbox is already
//! stopped or gone (kubelet relies on it).

use super::{SandboxError, SandboxState};
use crate::context::Ctx;

/// Stops every container of the pod, then the pod itself (its backend's `stop_pod`). The
/// record stays, NotReady, until RemovePodSandbox.
pub async fn stop_pod_sandbox(ctx: &Ctx<'_>, id: &str) -> Result<(), SandboxError> {
    let sandbox = match ctx.sandboxes.get(id) {
        Err(SandboxError::NotFound(_)) => return Ok(()),
        other => other?,
    };
    let _op = sandbox.op_lock.lock().await;
    for c in ctx.containers.in_sandbox(&sandbox.id) {
        crate::container::stop_container(ctx, &c.id, 0)
            .await
            .map_err(of_container(&c.id, &sandbox.id))?;
    }
    let record = sandbox.record();
    // A pod still attached to its network is stopped (CNI DEL) also when its
    // namespaces are already gone (holder killed, host rebooted).
    if record.state == SandboxState::Ready
        || record.holder_pid.is_some()
        || record.network.is_some()
    {
        ctx.backends.get(&record.backend)?.stop_pod(&record).await?;
        sandbox.update_unsynced(ctx.sandboxes.dir(), |r| {
            r.state = SandboxState::NotReady;
            r.holder_pid = None;
            r.network = None;
        })?;
        tracing::info!(sandbox = %sandbox.id, "pod sandbox stopped");
    }
    Ok(())
}

/// Stops the pod if needed, removes its containers, what its backend made, its record.
pub async fn remove_pod_sandbox(ctx: &Ctx<'_>, id: &str) -> Result<(), SandboxError> {
    let sandbox = match ctx.sandboxes.get(id) {
        Err(SandboxError::NotFound(_)) => return Ok(()),
        other => other?,
    };
    stop_pod_sandbox(ctx, &sandbox.id).await?;
    let _op = sandbox.op_lock.lock().await;
    for c in ctx.containers.in_sandbox(&sandbox.id) {
        crate::container::remove_container(ctx, &c.id)
            .await
            .map_err(of_container(&c.id, &sandbox.id))?;
    }
    let record = sandbox.record();
    ctx.backends
        .get(&record.backend)?
        .remove_pod(&record)
        .await?;
    let state_dir = ctx.sandboxes.record_dir(&record.id);
    // Out of the store at once, its files after the answer.
    crate::mounts::retire_tree_later(&state_dir)
        .map_err(|e| SandboxError::io(format!("remove {}", state_dir.display()), e))?;
    ctx.names.release(&record.name, &record.id);
    ctx.sandboxes.remove(&record.id);
    tracing::info!(sandbox = %record.id, "pod sandbox removed");
    Ok(())
}

/// A container of the pod failed to stop or go: the pod operation fails with its error.
fn of_container<'a>(
    id: &'a str,
    pod: &'a str,
) -> impl FnOnce(crate::container::ContainerError) -> SandboxError + 'a {
    move |e| SandboxError::Container {
        id: id.to_owned(),
        pod: pod.to_owned(),
        source: Box::new(e),
    }
}
