//! RunPodSandbox: validate, select the backend, reserve the name, write the intent, have
//! the backend make the pod, persist the record; once that is on disk (after the answer)
//! the intent goes. Every step pushes its undo; a failure leaves nothing, and a daemon
//! killed midway leaves an intent the next start undoes (`intent.rs`).

use std::sync::Arc;

use k8s_cri::v1::PodSandboxConfig;

use super::{sandbox_name, Sandbox, SandboxError, SandboxPaths, SandboxRecord, SandboxState};
use crate::backend::PodParams;
use crate::context::Ctx;
use crate::rollback::Rollback;

pub async fn run_pod_sandbox(
    ctx: &Ctx<'_>,
    config: PodSandboxConfig,
    runtime_handler: &str,
) -> Result<String, SandboxError> {
    let name = sandbox_name(&config)?;
    let cgroup_parent = config.linux.as_ref().map(|l| l.cgroup_parent.as_str());
    crate::container::confine::check_cgroup_parent(cgroup_parent.unwrap_or_default())
        .map_err(|e| SandboxError::Invalid(e.to_string()))?;
    let (backend, decision) = ctx
        .backends
        .for_pod(ctx.selector, runtime_handler, &config)?;
    let id = crate::store::new_id();
    let mut rb = Rollback::new(format!("run pod sandbox {id}"));

    ctx.names.reserve(&name, &id)?;
    {
        let (names, name, id) = (ctx.names.clone(), name.clone(), id.clone());
        rb.push("name", move || names.release(&name, &id));
    }

    let state_dir = ctx.sandboxes.record_dir(&id);
    rb.create_dir_all(&state_dir)
        .map_err(|e| SandboxError::io(format!("create {}", state_dir.display()), e))?;

    let paths = SandboxPaths::new(ctx.run_dir, &id);
    let intent_on_disk = crate::intent::write_pod(
        &state_dir,
        &crate::intent::PodIntent {
            id: id.clone(),
            backend: backend.name().to_owned(),
            run_dir: paths.run_dir.clone(),
            config: config.clone(),
        },
        backend.pod_outlives_host(&config),
    )?;
    crate::crash_point!("run_pod_sandbox.intent");
    let made = backend
        .run_pod(PodParams {
            id: &id,
            config: &config,
            run_dir: &paths.run_dir,
            intent_on_disk: &intent_on_disk,
        })
        .await?;

    let record = SandboxRecord {
        id: id.clone(),
        name,
        config,
        runtime_handler: runtime_handler.to_owned(),
        backend: backend.name().to_owned(),
        backend_reason: decision.reason,
        created_at: crate::store::now_nanos(),
        state: SandboxState::Ready,
        holder_pid: made.holder_pid,
        namespaces: made.namespaces,
        hostname: made.hostname,
        run_dir: paths.run_dir,
        shm_mounted: made.shm_mounted,
        network: made.network,
    };
    {
        let (backend, record) = (backend.clone(), record.clone());
        rb.push_async("pod", move || async move {
            if let Err(e) = backend.stop_pod(&record).await {
                tracing::warn!(error = %e, "rollback: stop pod");
            }
            if let Err(e) = backend.remove_pod(&record).await {
                tracing::warn!(error = %e, "rollback: remove pod");
            }
        });
    }
    crate::crash_point!("run_pod_sandbox.made");
    // Before the record: a record on disk beside an intent that is not means a pod made.
    intent_on_disk
        .wait()
        .await
        .map_err(|e| SandboxError::io("sync the pod's intent", std::io::Error::other(e)))?;
    ctx.sandboxes.persist(&record)?;
    crate::crash_point!("run_pod_sandbox.record");
    rb.commit();
    // The pod is made and recorded: kubelet need not wait for the disk.
    {
        let record_path = ctx.sandboxes.record_path(&id);
        tokio::task::spawn_blocking(move || {
            crate::intent::clear_once_durable(&state_dir, &record_path)
        });
    }
    let sandbox = Arc::new(Sandbox::new(record, ctx.sandboxes.events().clone()));
    ctx.sandboxes.insert(sandbox.clone());
    super::watch_pod(&backend, sandbox, ctx.sandboxes.dir().to_owned());
    tracing::info!(sandbox = %id, backend = backend.name(), "pod sandbox ready");
    Ok(id)
}
