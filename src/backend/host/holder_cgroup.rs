//! The pod namespace holder in the pod's cgroup (issue 12, item 1): with a
//! `cgroup_parent` (kubelet always gives one), the holder lives in a leaf of its own under
//! it, `<parent>/proxrt-pause-<pod id>`, in every hierarchy, as containerd's pause
//! container does. The daemon makes the leaf; the holder starts in it (monitor/sandbox.rs:
//! no move through `cgroup.procs`). A leaf, not the parent itself: on cgroup v2 a cgroup with controllers
//! enabled for its children cannot hold processes. Without a parent the holder stays in
//! the daemon's cgroup.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The leaf's path relative to each hierarchy's root, or None without a parent.
pub(super) fn leaf(cgroup_parent: &str, pod_id: &str) -> Result<Option<PathBuf>, String> {
    if cgroup_parent.is_empty() {
        return Ok(None);
    }
    let path = crate::container::confine::cgroups_path(cgroup_parent, &format!("pause-{pod_id}"))
        .map_err(|e| e.to_string())?;
    Ok(Some(PathBuf::from(path.trim_start_matches('/'))))
}

/// The roots of the hierarchies a process belongs to: `/sys/fs/cgroup` on cgroup v2, each
/// v1 hierarchy mounted below it otherwise (a co-mounted hierarchy's symlinks and the
/// hybrid layout's empty `unified` tree left out).
pub(super) fn hierarchy_roots(base: &Path) -> Vec<PathBuf> {
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_owned()];
    }
    let Ok(entries) = fs::read_dir(base) else {
        return Vec::new();
    };
    let mut roots: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "unified"))
        .filter(|p| p.join("cgroup.procs").is_file())
        .collect();
    roots.sort();
    roots
}

/// Creates the leaf in every hierarchy (parents as needed); the dirs made, for removal.
pub(super) fn create(base: &Path, leaf: &Path) -> io::Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    for root in hierarchy_roots(base) {
        let dir = root.join(leaf);
        if let Err(e) = fs::create_dir_all(&dir) {
            let _ = remove(&made, Duration::ZERO);
            return Err(io::Error::new(
                e.kind(),
                format!("create cgroup {}: {e}", dir.display()),
            ));
        }
        made.push(dir);
        if root.join("cpuset.cpus").is_file() {
            if let Err(e) = inherit_cpuset(&root, leaf) {
                let _ = remove(&made, Duration::ZERO);
                return Err(e);
            }
        }
    }
    Ok(made)
}

/// cgroup v1's cpuset starts a new cgroup with no CPUs and no memory nodes (a task moved
/// there gets ENOSPC): each level from the root down takes its parent's where empty.
fn inherit_cpuset(root: &Path, leaf: &Path) -> io::Result<()> {
    let mut parent = root.to_owned();
    for part in leaf.components() {
        let dir = parent.join(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let mine = fs::read_to_string(dir.join(file))?;
            if mine.trim().is_empty() {
                let theirs = fs::read_to_string(parent.join(file))?;
                fs::write(dir.join(file), theirs.trim()).map_err(|e| {
                    io::Error::new(e.kind(), format!("write {}: {e}", dir.join(file).display()))
                })?;
            }
        }
        parent = dir;
    }
    Ok(())
}

/// The leaf's dir in every hierarchy where it exists.
pub(super) fn existing(base: &Path, leaf: &Path) -> Vec<PathBuf> {
    hierarchy_roots(base)
        .into_iter()
        .map(|root| root.join(leaf))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// Removes the leaves once the holder has left them (it is killed first; an exiting
/// process leaves its cgroups within moments), waiting up to `patience`. Err names a leaf
/// that could not be removed.
pub(super) fn remove(dirs: &[PathBuf], patience: Duration) -> Result<(), String> {
    let deadline = Instant::now() + patience;
    let mut last = None;
    for dir in dirs {
        loop {
            match fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => {
                    last = Some(format!("remove cgroup {}: {e}", dir.display()));
                    break;
                }
            }
        }
    }
    last.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leaf_is_under_the_parent_and_none_without_one() {
        assert_eq!(leaf("", "abc").unwrap(), None);
        assert_eq!(
            leaf("/kubepods/besteffort/pod1", "abc").unwrap(),
            Some(PathBuf::from("kubepods/besteffort/pod1/proxrt-pause-abc"))
        );
        assert!(leaf("/kubepods/../etc", "abc").is_err());
    }

    #[test]
    fn roots_are_v2s_single_tree_or_each_v1_hierarchy() {
        let v2 = tempfile::tempdir().unwrap();
        fs::write(v2.path().join("cgroup.controllers"), "cpu memory").unwrap();
        fs::create_dir(v2.path().join("system.slice")).unwrap();
        assert_eq!(hierarchy_roots(v2.path()), [v2.path().to_owned()]);

        let v1 = tempfile::tempdir().unwrap();
        for h in ["memory", "pids", "unified"] {
            fs::create_dir(v1.path().join(h)).unwrap();
            fs::write(v1.path().join(h).join("cgroup.procs"), "").unwrap();
        }
        std::os::unix::fs::symlink(v1.path().join("memory"), v1.path().join("mem")).unwrap();
        assert_eq!(
            hierarchy_roots(v1.path()),
            [v1.path().join("memory"), v1.path().join("pids")]
        );
    }
}
