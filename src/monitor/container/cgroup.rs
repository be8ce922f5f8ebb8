//! The container's leaf cgroups: making the cgroup v2 one before libcontainer's cgroup
//! manager runs, removing them after a failed build or delete, sweeping what an exec that
//! raced the exit left in them.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Where cgroup v2 is mounted on a pure cgroup v2 host, and where libcgroups looks.
pub(super) const V2_ROOT: &str = "/sys/fs/cgroup";

/// Whether `root` is a cgroup v2 mount (a pure cgroup v2 host when it is [`V2_ROOT`]),
/// as libcgroups decides it (`get_cgroup_setup`).
pub(super) fn is_cgroup2(root: &Path) -> bool {
    nix::sys::statfs::statfs(root)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// Makes the container's cgroup v2 leaf below `root` (a cgroup v2 mount) before
/// libcontainer's cgroup manager runs, as that manager would make it
/// (`create_unified_cgroup`): every controller of the root's `cgroup.controllers` enabled
/// in the `cgroup.subtree_control` of the root and of each cgroup above the leaf (best
/// effort), the missing directories made. Unlike the manager, which writes every
/// controller at every create, only the ones not enabled yet are written: a write into
/// `cgroup.subtree_control` takes the kernel's `cgroup_mutex` and first waits until every
/// cgroup removed lately below it has gone offline (an RCU grace period) — below the
/// root, any container's removal on the host. With the leaf there, the manager only moves
/// the process (`add_task` finds the directory).
///
/// Returns whether the leaf was made here (`false`: it was there, or the path is not a
/// plain one below the root: libcontainer then does as it always does).
pub(super) fn make_v2_leaf(root: &Path, cgroups_path: &Path) -> io::Result<bool> {
    let mut names = Vec::new();
    for component in cgroups_path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => names.push(name),
            _ => return Ok(false),
        }
    }
    let Some((leaf, above)) = names.split_last() else {
        return Ok(false);
    };
    let available = fs::read_to_string(root.join("cgroup.controllers"))?;
    let available: Vec<&str> = available.split_whitespace().collect();
    let mut dir = root.to_path_buf();
    enable_controllers(&dir, &available);
    for name in above {
        dir.push(name);
        made(fs::create_dir(&dir))?;
        enable_controllers(&dir, &available);
    }
    dir.push(leaf);
    made(fs::create_dir(&dir))
}

/// `Ok(true)` for a directory made, `Ok(false)` for one that was there.
fn made(created: io::Result<()>) -> io::Result<bool> {
    match created {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes `+<controller>` into `dir`'s `cgroup.subtree_control` for each of `available`
/// it does not list yet; a controller the kernel refuses stays off, as libcgroups leaves
/// it (the container then lacks that controller's files).
fn enable_controllers(dir: &Path, available: &[&str]) {
    let file = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&file).unwrap_or_default();
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    for controller in available.iter().filter(|c| !enabled.contains(c)) {
        // Not `fs::write`: it would create the file in a cgroup that is gone.
        let written = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .and_then(|mut f| io::Write::write_all(&mut f, format!("+{controller}").as_bytes()));
        if let Err(e) = written {
            tracing::debug!("enable {controller} in {}: {e}", file.display());
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_is_not_plain_is_left_to_libcontainer() {
        let root = tempfile::tempdir().unwrap();
        for odd in ["", "/", "/a/../b", "a/./b/.."] {
            assert!(
                !make_v2_leaf(root.path(), Path::new(odd)).unwrap(),
                "{odd:?}"
            );
        }
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn what_is_missing_is_made_and_what_is_there_is_kept() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "").unwrap();
        assert!(make_v2_leaf(root.path(), Path::new("/a/b/leaf")).unwrap());
        assert!(root.path().join("a/b/leaf").is_dir());
        assert!(!make_v2_leaf(root.path(), Path::new("/a/b/leaf")).unwrap());
        fs::remove_dir(root.path().join("a/b/leaf")).unwrap();
        let file_in_the_way = root.path().join("c");
        fs::write(&file_in_the_way, "").unwrap();
        assert!(make_v2_leaf(root.path(), Path::new("/c/leaf")).is_err());
    }

    #[test]
    fn only_controllers_not_enabled_yet_are_written() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        // A regular file takes each write from its start: what is left is the last one.
        let control = root.path().join("cgroup.subtree_control");
        fs::write(&control, "cpu\n").unwrap();
        make_v2_leaf(root.path(), Path::new("/leaf")).unwrap();
        assert_eq!(fs::read_to_string(&control).unwrap(), "+memory");
        fs::write(&control, "cpu memory\n").unwrap();
        make_v2_leaf(root.path(), Path::new("/leaf2")).unwrap();
        assert_eq!(fs::read_to_string(&control).unwrap(), "cpu memory\n");
    }
}
