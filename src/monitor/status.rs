//! `status.json`: the container's lifecycle as its monitor saw it.
//!
//! Written atomically by the monitor at each transition (created, started, finished), read by
//! the daemon, also after a daemon restart when the monitor may long be gone.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::MonitorError;
use crate::store::{read_json, replace_json};

/// File name of the status file inside a container's state dir.
pub const STATUS_FILE: &str = "status.json";

/// status.json. Times are unix nanoseconds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ContainerStatusFile {
    /// The monitor process (host pid).
    pub monitor_pid: i32,
    /// The container's init process (host pid).
    pub init_pid: i32,
    /// When libcontainer's build() returned.
    pub created_at: i64,
    /// When start() returned.
    pub started_at: Option<i64>,
    /// Set, together with `exit_code`, once the container has exited and been cleaned up
    /// (cgroup and libcontainer state removed): the file is then final.
    pub finished_at: Option<i64>,
    /// The exit status; `128 + signal` when a signal killed the init.
    pub exit_code: Option<i32>,
    /// The signal that killed the init, if one did.
    pub signal: Option<i32>,
    /// The kernel OOM killer killed a process of the container's memory cgroup.
    pub oom_killed: bool,
    /// Anything the monitor could not do on the way (e.g. a cgroup it failed to remove).
    pub message: Option<String>,
}

impl ContainerStatusFile {
    /// A container just created: not started, not finished.
    pub fn created(monitor_pid: i32, init_pid: i32, created_at: i64) -> ContainerStatusFile {
        ContainerStatusFile {
            monitor_pid,
            init_pid,
            created_at,
            started_at: None,
            finished_at: None,
            exit_code: None,
            signal: None,
            oom_killed: false,
            message: None,
        }
    }

    /// The container has exited and this file will not change again.
    pub fn is_final(&self) -> bool {
        self.finished_at.is_some() && self.exit_code.is_some()
    }
}

/// Reads `<state_dir>/status.json`; `Ok(None)` when there is none (the monitor has not
/// reported creation yet, or the state dir was removed).
pub fn read_status(state_dir: &Path) -> Result<Option<ContainerStatusFile>, MonitorError> {
    Ok(read_json(&state_dir.join(STATUS_FILE))?)
}

/// Atomic, not fsync'd: the state dir is under the run dir, which a host crash empties
/// (tmpfs) and a daemon or monitor crash leaves in the page cache.
pub(crate) fn write_status(
    state_dir: &Path,
    status: &ContainerStatusFile,
) -> Result<(), MonitorError> {
    Ok(replace_json(&state_dir.join(STATUS_FILE), status)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_only_with_exit_code_and_time() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_status(dir.path()).unwrap().is_none());
        let mut s = ContainerStatusFile::created(1, 2, 3);
        write_status(dir.path(), &s).unwrap();
        assert!(!read_status(dir.path()).unwrap().unwrap().is_final());
        s.finished_at = Some(4);
        s.exit_code = Some(0);
        write_status(dir.path(), &s).unwrap();
        assert_eq!(read_status(dir.path()).unwrap().unwrap(), s);
        assert!(s.is_final());
    }
}
