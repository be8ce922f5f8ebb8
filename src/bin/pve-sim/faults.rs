//! Fault injection, set at startup (`--faults FILE`, JSON or TOML) and changed at run
//! time (`POST /_sim/faults` merges, `DELETE /_sim/faults` clears):
//!
//! ```json
//! { "task_ms": {"default": 200, "vzcreate": 1500},
//!   "fail_next_tasks": {"vzcreate": 2, "vzstart": 1},
//!   "warn_next_tasks": {"vzcreate": 1},
//!   "close_next_connections": 1,
//!   "ignore_shutdown": true,
//!   "rules": [{"method": "GET", "path": "/cluster/nextid", "action": "status",
//!              "status": 503, "count": 2}] }
//! ```
//! Rule actions: `status` (answer `status`/`message`, nothing done), `reset` (drop the
//! connection without an answer, nothing done), `reset_after` (do the call, then drop the
//! connection: the client cannot know it happened), `delay` (`delay_ms`, then answer
//! normally). `path` is a prefix of the API path (after /api2/json); `count` 0 means
//! every matching call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Status,
    Reset,
    ResetAfter,
    Delay,
}

fn one() -> u32 {
    1
}

fn s503() -> u16 {
    503
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub method: Option<String>,
    pub path: String,
    pub action: Action,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default = "s503")]
    pub status: u16,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub delay_ms: u64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Task run time by type (`vzcreate`, …) or `default`, in ms.
    pub task_ms: BTreeMap<String, u64>,
    /// The next N tasks of a type fail.
    pub fail_next_tasks: BTreeMap<String, u32>,
    /// The next N tasks of a type end with `WARNINGS: 1`.
    pub warn_next_tasks: BTreeMap<String, u32>,
    /// The next N TCP connections are closed at once, before TLS.
    pub close_next_connections: u32,
    /// Guests ignore a clean shutdown (the task waits its `timeout`, then force-stops
    /// with `forceStop=1` or fails).
    pub ignore_shutdown: bool,
    pub rules: Vec<Rule>,
}

impl Faults {
    pub fn merge(&mut self, other: Faults) {
        self.task_ms.extend(other.task_ms);
        self.fail_next_tasks.extend(other.fail_next_tasks);
        self.warn_next_tasks.extend(other.warn_next_tasks);
        self.close_next_connections += other.close_next_connections;
        self.ignore_shutdown |= other.ignore_shutdown;
        self.rules.extend(other.rules);
    }

    pub fn task_ms(&self, task_type: &str, fallback: u64) -> u64 {
        self.task_ms
            .get(task_type)
            .or_else(|| self.task_ms.get("default"))
            .copied()
            .unwrap_or(fallback)
    }

    fn take(map: &mut BTreeMap<String, u32>, key: &str) -> bool {
        match map.get_mut(key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    pub fn take_failure(&mut self, task_type: &str) -> bool {
        Self::take(&mut self.fail_next_tasks, task_type)
    }

    pub fn take_warning(&mut self, task_type: &str) -> bool {
        Self::take(&mut self.warn_next_tasks, task_type)
    }

    pub fn take_close(&mut self) -> bool {
        if self.close_next_connections > 0 {
            self.close_next_connections -= 1;
            true
        } else {
            false
        }
    }

    /// The first rule matching the call, used up by one.
    pub fn take_rule(&mut self, method: &str, path: &str) -> Option<Rule> {
        let i = self.rules.iter().position(|r| {
            path.starts_with(&r.path)
                && r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
        })?;
        let rule = self.rules[i].clone();
        if rule.count > 0 {
            self.rules[i].count -= 1;
            if self.rules[i].count == 0 {
                self.rules.remove(i);
            }
        }
        Some(rule)
    }

    /// From a file given with `--faults`: TOML if it ends in .toml, else JSON.
    pub fn load(path: &std::path::Path) -> Result<Faults, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            _ => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
        }
    }
}
