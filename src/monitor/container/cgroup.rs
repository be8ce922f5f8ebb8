//! The container's leaf cgroups: removing them after a failed build or delete, sweeping
//! what an exec that raced the exit left in them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Removes the container's (empty) leaf cgroup in every hierarchy: the safety net for a
/// failed build or delete. rmdir never removes a cgroup that still has processes.
pub(crate) fn remove_cgroup_leaf(cgroups_path: &Path) {
    let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    if rel.as_os_str().is_empty() {
        return;
    }
    for root in cgroup_roots() {
        let leaf = root.join(rel);
        if leaf.is_dir() {
            let _ = fs::remove_dir(&leaf);
        }
    }
}

/// An exec that raced the container's exit can re-create the leaf cgroup after the
/// engine's delete removed it (the cgroup manager's add_task creates the directory) and
/// leave a process in it: once no exec child is left, kill whatever is in the leaf, reap
/// what is ours, and remove it again.
pub(super) fn sweep_cgroup_leaf(cgroups_path: &Path) {
    let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    if rel.as_os_str().is_empty() {
        return;
    }
    let leaves: Vec<PathBuf> = cgroup_roots()
        .into_iter()
        .map(|root| root.join(rel))
        .filter(|leaf| leaf.is_dir())
        .collect();
    if leaves.is_empty() {
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let mut left = false;
        for leaf in &leaves {
            if !leaf.is_dir() {
                continue;
            }
            let procs = fs::read_to_string(leaf.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            crate::monitor::process::reap_all_nonblocking(|_| {});
            if fs::remove_dir(leaf).is_err() {
                left = true;
            }
        }
        if !left || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every cgroup hierarchy's root: `/sys/fs/cgroup` (cgroup v2) and each v1 controller
/// mount below it.
fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    roots
}
