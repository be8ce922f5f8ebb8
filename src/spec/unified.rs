//! Which `unified` (cgroup v2 file) keys a container may set.
//!
//! A `unified` entry is written as root into the container's cgroup directory, so the key
//! decides which file: `cgroup.procs` would move any host process into (or `cgroup.kill`
//! kill every process of) the container's cgroup, `cgroup.subtree_control` and
//! `cgroup.type` reshape the hierarchy the runtime manages. runc and crun only refuse
//! keys with a `/`; kubelet only ever sends resource files (`memory.high`,
//! `memory.swap.max`, ...). So: resource controllers' files only, by controller prefix,
//! none of the `cgroup.*` core files, and not `cpuset.cpus.partition`, which turns the
//! cgroup into a partition root and takes CPUs away from its siblings.

/// The resource controllers whose interface files a container may write.
const CONTROLLERS: [&str; 8] = [
    "cpu", "cpuset", "io", "memory", "pids", "hugetlb", "rdma", "misc",
];

/// Files of those controllers that reach beyond the container's own cgroup.
const DENIED: [&str; 1] = ["cpuset.cpus.partition"];

/// Why `key` may not be set, or None when it may.
pub fn unified_key_refusal(key: &str) -> Option<&'static str> {
    let shaped = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if !shaped || key.starts_with('.') || key.contains("..") {
        return Some("is not a cgroup file name");
    }
    let Some((controller, file)) = key.split_once('.') else {
        return Some("is not a controller's file (<controller>.<file>)");
    };
    if controller == "cgroup" {
        return Some("is a cgroup core file: the runtime manages those");
    }
    if !CONTROLLERS.contains(&controller) || file.is_empty() {
        return Some("is not a file of a resource controller (cpu, cpuset, io, memory, pids, hugetlb, rdma, misc)");
    }
    if DENIED.contains(&key) {
        return Some("changes more than the container's own cgroup");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_files_are_allowed() {
        for key in [
            "memory.high",
            "memory.swap.max",
            "memory.oom.group",
            "cpu.max",
            "cpu.weight",
            "io.max",
            "pids.max",
            "hugetlb.2MB.max",
            "cpuset.cpus",
        ] {
            assert_eq!(unified_key_refusal(key), None, "{key}");
        }
    }

    #[test]
    fn core_files_and_other_shapes_are_refused() {
        for key in [
            "cgroup.procs",
            "cgroup.threads",
            "cgroup.subtree_control",
            "cgroup.kill",
            "cgroup.freeze",
            "cgroup.type",
            "cpuset.cpus.partition",
            "devices.allow",
            "freezer.state",
            "memory",
            "memory.",
            "",
            "../memory.max",
            "memory/../cgroup.procs",
            ".memory.max",
            "memory..max",
            "memory.max\n",
        ] {
            assert!(unified_key_refusal(key).is_some(), "{key:?}");
        }
    }
}
