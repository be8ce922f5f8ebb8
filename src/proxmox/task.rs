//! PVE tasks (UPIDs): status, log, and waiting for the end.
//!
//! Every create/start/stop/destroy in PVE returns at once with a UPID while a worker does
//! the job; the job's result is only in the task's exit status. A caller that does not
//! poll reports success before anything happened (the seed project's bug).

use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::debug;

use super::error::ProxmoxError;
use super::transport::Client;
use super::upid::Upid;

/// Lines of a failed task's log kept in its error.
const LOG_TAIL_LINES: usize = 10;
/// Log lines read to find the tail (create logs are a few dozen lines).
const LOG_FETCH_LIMIT: u64 = 1000;
// The pause between polls is a tenth of the time waited so far, within these bounds: a
// task is seen done at most max(10 ms, 10 %) after it ended (short starts and stops stay
// fast), while a long create on slow storage costs PVE at most two polls a second.
const POLL_MIN: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TaskStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// When stopped: `OK`, `WARNINGS: <n>`, or the error text.
    #[serde(default)]
    pub exitstatus: Option<String>,
    #[serde(default, rename = "type")]
    pub task_type: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct LogLine {
    pub n: u64,
    pub t: String,
}

/// How a successful task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    Ok,
    /// PVE's `WARNINGS: <n>`: done, with warnings in the log.
    Warnings(u32),
}

/// `OK` and `WARNINGS: n` are success; anything else is the error text.
pub(crate) fn outcome(exitstatus: &str) -> Option<TaskOutcome> {
    let s = exitstatus.trim();
    if s == "OK" {
        return Some(TaskOutcome::Ok);
    }
    s.strip_prefix("WARNINGS:")
        .and_then(|n| n.trim().parse().ok())
        .map(TaskOutcome::Warnings)
}

impl Client {
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, ProxmoxError> {
        let v = self
            .get(
                &["nodes", &upid.node, "tasks", upid.as_str(), "status"],
                &[],
            )
            .await?;
        serde_json::from_value(v).map_err(|e| ProxmoxError::Decode {
            method: "GET".into(),
            path: "/nodes/{node}/tasks/{upid}/status".into(),
            message: e.to_string(),
        })
    }

    pub async fn task_log(
        &self,
        upid: &Upid,
        start: u64,
        limit: u64,
    ) -> Result<Vec<LogLine>, ProxmoxError> {
        let q = [
            ("start".to_owned(), start.to_string()),
            ("limit".to_owned(), limit.to_string()),
        ];
        let v = self
            .get(&["nodes", &upid.node, "tasks", upid.as_str(), "log"], &q)
            .await?;
        serde_json::from_value(v).map_err(|e| ProxmoxError::Decode {
            method: "GET".into(),
            path: "/nodes/{node}/tasks/{upid}/log".into(),
            message: e.to_string(),
        })
    }

    /// Polls until the task stops or `deadline` passes, pausing a tenth of the time
    /// waited so far between polls (10 ms to 500 ms). A failed task is `TaskFailed` with the end of its log.
    pub async fn wait_task(
        &self,
        upid: &Upid,
        deadline: Duration,
    ) -> Result<TaskOutcome, ProxmoxError> {
        let started = Instant::now();
        loop {
            let st = self.task_status(upid).await?;
            if st.status != "running" {
                let exit = st.exitstatus.unwrap_or_else(|| "unknown".into());
                crate::metrics::proxmox_task(
                    task_kind(upid),
                    if outcome(&exit).is_some() {
                        "ok"
                    } else {
                        "failed"
                    },
                    started.elapsed(),
                );
                if let Some(o) = outcome(&exit) {
                    debug!(%upid, ?o, elapsed_ms = started.elapsed().as_millis() as u64, "task done");
                    return Ok(o);
                }
                // The failure matters more than its log: a log that cannot be read
                // leaves the tail empty.
                let log_tail = match self.task_log(upid, 0, LOG_FETCH_LIMIT).await {
                    Ok(lines) => {
                        let skip = lines.len().saturating_sub(LOG_TAIL_LINES);
                        lines.into_iter().skip(skip).map(|l| l.t).collect()
                    }
                    Err(e) => {
                        debug!(%upid, error = %e, "task log unreadable");
                        Vec::new()
                    }
                };
                return Err(ProxmoxError::TaskFailed {
                    upid: upid.to_string(),
                    exitstatus: exit,
                    log_tail,
                });
            }
            let elapsed = started.elapsed();
            if elapsed >= deadline {
                crate::metrics::proxmox_task(task_kind(upid), "timeout", elapsed);
                return Err(ProxmoxError::TaskTimeout {
                    upid: upid.to_string(),
                    waited: elapsed,
                });
            }
            let pause = (elapsed / 10).clamp(POLL_MIN, POLL_MAX);
            tokio::time::sleep(pause.min(deadline - elapsed)).await;
        }
    }
}

/// A task's type as a metrics label (a fixed set; anything else is `other`).
fn task_kind(upid: &Upid) -> &'static str {
    const KINDS: [&str; 6] = [
        "vzcreate",
        "vzstart",
        "vzstop",
        "vzshutdown",
        "vzdestroy",
        "vzmigrate",
    ];
    KINDS
        .into_iter()
        .find(|k| upid.task_type == *k)
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses() {
        assert_eq!(outcome("OK"), Some(TaskOutcome::Ok));
        assert_eq!(outcome("WARNINGS: 3"), Some(TaskOutcome::Warnings(3)));
        assert_eq!(outcome("WARNINGS: x"), None);
        assert_eq!(outcome("unable to create CT 105 - no space"), None);
        assert_eq!(outcome(""), None);
    }
}
