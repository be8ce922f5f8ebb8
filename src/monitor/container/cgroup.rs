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

/// SIGKILL to every process in the container's leaf cgroups, once, without waiting: on
/// cgroup v2 `cgroup.kill` (forks included), on v1 each listed pid. What forks in between
/// goes with [`kill_cgroup`] once the init is reaped.
pub(super) fn kill_cgroup_once(cgroups_path: &Path) {
    let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    if rel.as_os_str().is_empty() {
        return;
    }
    let mut killed = std::collections::BTreeSet::new();
    for leaf in cgroup_roots().into_iter().map(|root| root.join(rel)) {
        if fs::write(leaf.join("cgroup.kill"), "1").is_ok() {
            continue;
        }
        let procs = fs::read_to_string(leaf.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if killed.insert(pid) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Kills every process of the container's cgroup, in every hierarchy, and removes the
/// leaves once they are empty: what the daemon does itself when the container's monitor
/// does not answer or is gone (issue 12, items 5 and 6). See [`kill_cgroup_procs`].
pub fn kill_cgroup(cgroups_path: &Path, deadline: Duration) -> Result<(), String> {
    for leaf in kill_cgroup_procs(cgroups_path, deadline)? {
        let _ = fs::remove_dir(leaf);
    }
    Ok(())
}

/// Kills every process of the container's cgroup, in every hierarchy, until none is left;
/// returns the leaves (empty now, not removed). On cgroup v2 `cgroup.kill` kills the whole
/// cgroup at once, forks included; on v1 the listing is killed until it stays empty. The
/// processes are not the caller's children: their parent (the monitor, or init after the
/// monitor died) reaps them. Err names what is still alive at `deadline`.
pub(super) fn kill_cgroup_procs(
    cgroups_path: &Path,
    deadline: Duration,
) -> Result<Vec<PathBuf>, String> {
    let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    if rel.as_os_str().is_empty() {
        return Err("the container has no cgroup of its own".into());
    }
    let leaves: Vec<PathBuf> = cgroup_roots()
        .into_iter()
        .map(|root| root.join(rel))
        .filter(|leaf| leaf.join("cgroup.procs").is_file())
        .collect();
    for leaf in &leaves {
        let _ = fs::write(leaf.join("cgroup.kill"), "1");
    }
    let until = Instant::now() + deadline;
    loop {
        let mut alive = Vec::new();
        for leaf in &leaves {
            let procs = fs::read_to_string(leaf.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                alive.push(pid);
            }
        }
        if alive.is_empty() {
            return Ok(leaves);
        }
        if Instant::now() >= until {
            return Err(format!(
                "processes {alive:?} still alive in {}",
                rel.display()
            ));
        }
        // A killed process leaves the listing as it exits: microseconds, usually.
        std::thread::sleep(Duration::from_millis(2));
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
