//! A pod moves to another backend family before its first container: a pod that got the
//! default backend (no handler, no annotation) and whose first container's image an image
//! rule sends to another family (`lxc/…` → proxmox-lxc) becomes a pod of that backend,
//! which is what the rule asks for. RunPodSandbox carries no image, so this is the first
//! moment the choice can be made; a pod that already has a container stays where it is
//! (and the container is refused, see `select::SelectError::MixedPod`).

use std::sync::Arc;

use super::{Sandbox, SandboxError, SandboxState};
use crate::backend::{Backend, PodParams};
use crate::context::Ctx;

/// Whether `sandbox` may still move: ready and without containers.
pub fn can_move(ctx: &Ctx<'_>, sandbox: &Sandbox) -> bool {
    sandbox.state() == SandboxState::Ready && ctx.containers.in_sandbox(&sandbox.id).is_empty()
}

/// Takes the pod down on its backend and makes it on `to`, recording `reason`. When `to`
/// cannot make it, the pod is made again on its old backend (or, if that fails too, left
/// NotReady for kubelet to replace) and the error returned.
pub async fn move_pod(
    ctx: &Ctx<'_>,
    sandbox: &Sandbox,
    to: Arc<dyn Backend>,
    reason: String,
) -> Result<(), SandboxError> {
    let _op = sandbox.op_lock.lock().await;
    if !can_move(ctx, sandbox) {
        return Err(SandboxError::NotReady {
            id: sandbox.id.clone(),
            state: "in use by a container meanwhile",
        });
    }
    let old = sandbox.record();
    let from = ctx.backends.get(&old.backend)?;
    from.stop_pod(&old).await?;
    from.remove_pod(&old).await?;
    let intent_on_disk = crate::intent::IntentOnDisk::not_needed();
    let params = PodParams {
        id: &old.id,
        config: &old.config,
        run_dir: &old.run_dir,
        intent_on_disk: &intent_on_disk,
    };
    let (made, backend, reason, result) = match to.run_pod(params.clone()).await {
        Ok(made) => (made, to.name(), reason, Ok(())),
        Err(e) => {
            tracing::warn!(sandbox = %old.id, to = to.name(), error = %e, "moving the pod failed; making it again where it was");
            match from.run_pod(params).await {
                Ok(made) => (made, from.name(), old.backend_reason.clone(), Err(e.into())),
                Err(again) => {
                    tracing::warn!(sandbox = %old.id, error = %again, "pod lost; marking it NotReady");
                    sandbox.update(ctx.sandboxes.dir(), |r| {
                        r.state = SandboxState::NotReady;
                        r.holder_pid = None;
                        r.network = None;
                    })?;
                    return Err(e.into());
                }
            }
        }
    };
    sandbox.update(ctx.sandboxes.dir(), |r| {
        r.backend = backend.to_owned();
        r.backend_reason = reason;
        r.holder_pid = made.holder_pid;
        r.namespaces = made.namespaces;
        r.hostname = made.hostname;
        r.shm_mounted = made.shm_mounted;
        r.network = made.network;
    })?;
    tracing::info!(sandbox = %old.id, from = from.name(), to = backend, "pod moved to the backend its first container's image asks for");
    result
}
