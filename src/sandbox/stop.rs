//! StopPodSandbox and RemovePodSandbox: both succeed when the sandbox is already
//! stopped or gone (kubelet relies on it).

use super::{SandboxError, SandboxState};
use crate::daemon::Daemon;
use crate::monitor::teardown_sandbox;

/// Stops every container of the pod, then its namespaces (the holder is killed and the
/// namespace files unmounted). The record stays, NotReady, until RemovePodSandbox.
pub async fn stop_pod_sandbox(d: &Daemon, id: &str) -> Result<(), SandboxError> {
    let sandbox = match d.sandboxes().get(id) {
        Err(SandboxError::NotFound(_)) => return Ok(()),
        other => other?,
    };
    let _op = sandbox.op_lock.lock().await;
    for c in d.containers().in_sandbox(&sandbox.id) {
        crate::container::stop_container(d, &c.id, 0)
            .await
            .map_err(|e| {
                SandboxError::Invalid(format!(
                    "stop container {} of pod {}: {e}",
                    c.id, sandbox.id
                ))
            })?;
    }
    let record = sandbox.record();
    if record.state == SandboxState::Ready || record.holder_pid.is_some() {
        let (dir, pid) = (record.ns_dir(), record.holder_pid);
        tokio::task::spawn_blocking(move || teardown_sandbox(&dir, pid))
            .await
            .map_err(|e| SandboxError::Invalid(format!("teardown task: {e}")))??;
        sandbox.update(d.sandboxes().dir(), |r| {
            r.state = SandboxState::NotReady;
            r.holder_pid = None;
        })?;
        tracing::info!(sandbox = %sandbox.id, "pod sandbox stopped");
    }
    Ok(())
}

/// Stops the pod if needed, removes its containers, its files and its record.
pub async fn remove_pod_sandbox(d: &Daemon, id: &str) -> Result<(), SandboxError> {
    let sandbox = match d.sandboxes().get(id) {
        Err(SandboxError::NotFound(_)) => return Ok(()),
        other => other?,
    };
    stop_pod_sandbox(d, &sandbox.id).await?;
    let _op = sandbox.op_lock.lock().await;
    for c in d.containers().in_sandbox(&sandbox.id) {
        crate::container::remove_container(d, &c.id)
            .await
            .map_err(|e| {
                SandboxError::Invalid(format!(
                    "remove container {} of pod {}: {e}",
                    c.id, sandbox.id
                ))
            })?;
    }
    let record = sandbox.record();
    if record.shm_mounted {
        match nix::mount::umount2(&record.shm_path(), nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(SandboxError::io(
                    format!("unmount {}", record.shm_path().display()),
                    e.into(),
                ))
            }
        }
    }
    for dir in [&record.run_dir, &d.sandboxes().dir().join(&record.id)] {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(SandboxError::io(format!("remove {}", dir.display()), e))
            }
            _ => {}
        }
    }
    d.names().release(&record.name, &record.id);
    d.sandboxes().remove(&record.id);
    tracing::info!(sandbox = %record.id, "pod sandbox removed");
    Ok(())
}
