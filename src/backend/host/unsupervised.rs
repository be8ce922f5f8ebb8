//! Killing a container whose monitor does not answer (flooded, wedged) or is gone
//! (killed, crashed): issue 12, items 5 and 6. The daemon does what the monitor would
//! have done at the container's exit: kill the cgroup, let the init be reaped (by the
//! monitor if it lives, else by init), delete the runtime's state, record the exit.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::super::{BackendError, Unsupervised};
use crate::monitor::{kill_cgroup, read_status, write_status, ContainerStatusFile, MonitorClient};

/// How long the container's processes get to die after SIGKILL.
const KILL_DEADLINE: Duration = Duration::from_secs(10);
/// How long a monitor that still lives gets to record the exit itself.
const MONITOR_RECORDS: Duration = Duration::from_secs(5);

/// Exit status recorded for a container the daemon killed: 128 + SIGKILL.
const KILLED: i32 = 128 + libc::SIGKILL;

pub(super) async fn kill(
    backend: &'static str,
    runtime_root: &Path,
    c: Unsupervised<'_>,
) -> Result<(), BackendError> {
    let fail = |message: String| BackendError::internal(backend, message);
    let monitor = MonitorClient::new(c.run_dir);
    if final_status(c.run_dir).is_some() {
        return Ok(());
    }
    let cgroups_path = cgroups_path(c.bundle).map_err(fail)?;
    tokio::task::spawn_blocking(move || kill_cgroup(&cgroups_path, KILL_DEADLINE))
        .await
        .map_err(|e| fail(format!("kill cgroup: {e}")))?
        .map_err(|e| fail(format!("kill container {}: {e}", c.id)))?;

    // A monitor that is alive sees its init die and records the exit itself.
    let until = Instant::now() + MONITOR_RECORDS;
    while monitor.is_alive() && Instant::now() < until {
        if final_status(c.run_dir).is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if final_status(c.run_dir).is_some() {
        return Ok(());
    }

    let state = runtime_root.join(c.id);
    match std::fs::remove_dir_all(&state) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(fail(format!("remove {}: {e}", state.display())))
        }
        _ => {}
    }
    let status = exited(read_status(c.run_dir).ok().flatten(), c.reason);
    // A run dir that is gone (a daemon killed in RemoveContainer, a host reboot) is made
    // again for the record of the exit; removal takes it with the rest.
    std::fs::create_dir_all(c.run_dir)
        .map_err(|e| fail(format!("create {}: {e}", c.run_dir.display())))?;
    write_status(c.run_dir, &status).map_err(|e| fail(e.to_string()))?;
    tracing::warn!(container = %c.id, reason = c.reason, "killed a container its monitor did not answer for");
    Ok(())
}

fn final_status(run_dir: &Path) -> Option<ContainerStatusFile> {
    read_status(run_dir).ok().flatten().filter(|s| s.is_final())
}

/// The container's final status after the daemon killed it: what the monitor last
/// recorded, finished now by SIGKILL, with the reason as its message.
fn exited(last: Option<ContainerStatusFile>, reason: &str) -> ContainerStatusFile {
    let now = crate::store::now_nanos();
    let mut s = last.unwrap_or_else(|| ContainerStatusFile::created(0, 0, now));
    s.finished_at = Some(now);
    s.exit_code = Some(KILLED);
    s.signal = Some(libc::SIGKILL);
    s.message = Some(reason.to_owned());
    s
}

/// `linux.cgroupsPath` of the bundle's config.json.
fn cgroups_path(bundle: &Path) -> Result<PathBuf, String> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let spec: oci_spec::runtime::Spec =
        serde_json::from_slice(&text).map_err(|e| format!("parse {}: {e}", path.display()))?;
    spec.linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .ok_or_else(|| format!("{} names no cgroup", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_keeps_what_the_monitor_recorded_and_says_why() {
        let mut last = ContainerStatusFile::created(10, 11, 5);
        last.started_at = Some(6);
        let s = exited(Some(last), "monitor gone");
        assert!(s.is_final());
        assert_eq!((s.init_pid, s.created_at, s.started_at), (11, 5, Some(6)));
        assert_eq!((s.exit_code, s.signal), (Some(137), Some(9)));
        assert_eq!(s.message.as_deref(), Some("monitor gone"));
    }
}
