//! UpdateContainerResources: new CPU, memory, hugepage and unified limits applied to a
//! created or running container by its backend (the host's cgroup, a guest's config),
//! then kept (`<state_dir>/resources.json`) for ContainerStatus to report.

use k8s_cri::v1::LinuxContainerResources;

use super::{ContainerError, Phase};
use crate::context::Ctx;

pub async fn update_resources(
    ctx: &Ctx<'_>,
    id: &str,
    requested: LinuxContainerResources,
) -> Result<(), ContainerError> {
    let c = ctx.containers.get(id)?;
    let _op = c.op_lock.lock().await;
    let snap = c.refresh();
    if !matches!(snap.phase(), Phase::Created | Phase::Running) {
        return Err(snap.wrong_state(&c.id, "only a created or running container can be updated"));
    }
    let computed = crate::spec::resources::container_resources(&requested, ctx.host)?;
    let backend = ctx.backends.get(&c.record.backend)?;
    let cgroup = ctx.containers.cgroup(&c);
    backend
        .update_resources(&c.record.run_dir, cgroup.as_deref(), &requested, &computed)
        .await?;
    ctx.containers.set_resources(&c, requested)?;
    tracing::info!(container = %c.id, "container resources updated");
    Ok(())
}
