//! Paths and references a request names, confined before anything is made with them
//! (issue 12, item 3). Pure functions: they look at strings and records, never at the
//! filesystem; what must be resolved on disk (the log file) is resolved later, confined
//! again by `openat2` (`crate::logs::LogTarget`).
//!
//! - `log_directory` + `log_path`: the log file is written as root, so a `..` or an
//!   absolute `log_path` would let a pod append its output to any host file.
//! - `cgroup_parent`: `..` would place the container's cgroup outside the pod's (escaping
//!   its limits, or writing into another tenant's hierarchy).
//! - pid mode TARGET: joining a container's pid namespace lets a process see and signal
//!   (with ptrace, read the memory of) the target's processes: only within one pod.

use std::path::{Component, Path};

use crate::error::{Classify, Kind};
use crate::logs::{split_confined, LogTarget};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfineError {
    #[error("log_directory {0:?} must be an absolute path without `..`")]
    LogDirectory(String),
    #[error("log_path {0:?} must be a relative path below the pod's log_directory, without `..`")]
    LogPath(String),
    #[error("cgroup_parent {0:?} must not contain `..`")]
    CgroupParent(String),
    #[error(
        "pid namespace TARGET {target} belongs to pod {target_pod}, not to this container's \
         pod {pod}: only a container of the same pod can be joined"
    )]
    TargetInAnotherPod {
        target: String,
        target_pod: String,
        pod: String,
    },
}

impl Classify for ConfineError {
    fn kind(&self) -> Kind {
        Kind::InvalidArgument
    }
}

/// The container's CRI log file, or None when the pod or the container names none (CRI
/// allows both: the output is discarded).
pub fn log_target(log_directory: &str, log_path: &str) -> Result<Option<LogTarget>, ConfineError> {
    if log_directory.is_empty() || log_path.is_empty() {
        return Ok(None);
    }
    let dir = Path::new(log_directory);
    if !dir.is_absolute() || has_dot_dot(dir) {
        return Err(ConfineError::LogDirectory(log_directory.into()));
    }
    if split_confined(Path::new(log_path)).is_none() {
        return Err(ConfineError::LogPath(log_path.into()));
    }
    Ok(Some(LogTarget {
        dir: dir.to_owned(),
        file: log_path.into(),
    }))
}

/// Refuses a pod's `cgroup_parent` that climbs with `..`. Relative and absolute parents
/// are both fine (cgroupfs paths are relative to each hierarchy's root either way).
pub fn check_cgroup_parent(parent: &str) -> Result<(), ConfineError> {
    if has_dot_dot(Path::new(parent)) {
        return Err(ConfineError::CgroupParent(parent.into()));
    }
    Ok(())
}

/// The container's `linux.cgroupsPath`: `/proxrt/<id>` without a parent, else
/// `<parent>/proxrt-<id>`, the parent checked by [`check_cgroup_parent`].
pub fn cgroups_path(parent: &str, id: &str) -> Result<String, ConfineError> {
    check_cgroup_parent(parent)?;
    Ok(match parent {
        "" => format!("/proxrt/{id}"),
        parent => format!("{}/proxrt-{id}", parent.trim_end_matches('/')),
    })
}

/// A pid namespace TARGET must be a container of the same pod.
pub fn check_pid_target(target: &str, target_pod: &str, pod: &str) -> Result<(), ConfineError> {
    if target_pod != pod {
        return Err(ConfineError::TargetInAnotherPod {
            target: target.into(),
            target_pod: target_pod.into(),
            pod: pod.into(),
        });
    }
    Ok(())
}

fn has_dot_dot(path: &Path) -> bool {
    path.components().any(|c| c == Component::ParentDir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_target_is_the_directory_and_a_relative_path_below_it() {
        let t = log_target("/var/log/pods/ns_p_uid", "c/0.log")
            .unwrap()
            .unwrap();
        assert_eq!(t.path(), Path::new("/var/log/pods/ns_p_uid/c/0.log"));
        assert_eq!(t.file, Path::new("c/0.log"));
    }

    #[test]
    fn no_directory_or_no_path_means_no_log() {
        assert_eq!(log_target("", "c/0.log"), Ok(None));
        assert_eq!(log_target("/var/log/pods/x", ""), Ok(None));
    }

    #[test]
    fn log_paths_that_leave_the_directory_are_refused() {
        for bad in [
            "../x.log",
            "c/../../x.log",
            "/etc/profile.d/x.sh",
            ".",
            "c/..",
        ] {
            assert_eq!(
                log_target("/var/log/pods/x", bad),
                Err(ConfineError::LogPath(bad.into())),
                "{bad}"
            );
        }
        for bad in ["relative/dir", "/var/log/pods/../../etc"] {
            assert_eq!(
                log_target(bad, "0.log"),
                Err(ConfineError::LogDirectory(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            ConfineError::LogPath(String::new()).kind(),
            Kind::InvalidArgument
        );
    }

    #[test]
    fn cgroup_parent_may_not_climb() {
        assert_eq!(cgroups_path("", "abc"), Ok("/proxrt/abc".into()));
        assert_eq!(
            cgroups_path("/kubepods/burstable/podX/", "abc"),
            Ok("/kubepods/burstable/podX/proxrt-abc".into())
        );
        assert_eq!(
            cgroups_path("kubepods", "abc"),
            Ok("kubepods/proxrt-abc".into())
        );
        for bad in ["/kubepods/../..", "..", "/a/../b"] {
            assert_eq!(
                cgroups_path(bad, "abc"),
                Err(ConfineError::CgroupParent(bad.into()))
            );
        }
        // A name that merely contains dots is fine.
        assert!(check_cgroup_parent("/kubepods/pod..x").is_ok());
    }

    #[test]
    fn pid_target_only_in_the_same_pod() {
        assert_eq!(check_pid_target("t", "pod-a", "pod-a"), Ok(()));
        assert!(matches!(
            check_pid_target("t", "pod-a", "pod-b"),
            Err(ConfineError::TargetInAnotherPod { .. })
        ));
    }
}
