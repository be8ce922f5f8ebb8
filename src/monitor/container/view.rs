//! The mount namespace a container is created in: a copy of the host's without the other
//! pods' mounts.
//!
//! Every pod adds its /dev/shm and its net namespace file to the host's mount table, under
//! the daemon's pods dir. What a create costs grows with that table: libcontainer's cgroup
//! manager reads it many times per create (16 on a cgroup v1 host), crun reads it too, and
//! the container's own mount namespace starts as a copy of it. So the monitor creates the
//! container in a namespace of its own in which the pods dir (a mount of its own, made by
//! the daemon at start) is detached in one call, after cloning the mounts below it that
//! this container's spec names (its pod's /dev/shm and net namespace) and putting them
//! back where they were. Then the runtime sees the table of an idle host.
//!
//! After the create the monitor returns to the host's namespace (`leave`): it serves the
//! container from there as before (log reopening, volumes mounted later on the host), and
//! the private namespace goes with its last process. The container's own namespace was
//! copied from it; mounts the copy shares with the host (a Bidirectional volume) stay
//! peers of the host's, since only the pods dir was made private.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::Spec;
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};

/// In the private namespace until [`CreateView::leave`] (or drop) returns to the host's.
pub(super) struct CreateView {
    host: Option<OwnedFd>,
}

impl CreateView {
    /// Enters a copy of this process's mount namespace in which `pods` (a mount of its
    /// own) is detached and the mounts below it that `spec` names are back in place.
    /// None, and nothing done, when `pods` is not a mount (anymore): the create then
    /// happens in the host's namespace, as it would without the daemon's mount. Must be
    /// called by a single-threaded process (the monitor). On error this process is back
    /// in the host's namespace.
    pub(super) fn enter(pods: &Path, spec: &Spec) -> Result<Option<CreateView>, String> {
        match crate::mounts::is_mount_root(pods) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(format!("stat {}: {e}", pods.display())),
        }
        let host = std::fs::File::open("/proc/self/ns/mnt")
            .map(OwnedFd::from)
            .map_err(|e| format!("open the host's mount namespace: {e}"))?;
        let carried = mounts_to_carry(pods, &paths_under(spec, pods))?;
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
        // From here on, a failure returns to the host's namespace by the drop.
        let view = CreateView { host: Some(host) };
        let clones = carried
            .iter()
            .map(|path| {
                let flags = OpenTreeFlags::OPEN_TREE_CLONE
                    | OpenTreeFlags::OPEN_TREE_CLOEXEC
                    | OpenTreeFlags::AT_RECURSIVE;
                open_tree(rustix::fs::CWD, path, flags)
                    .map_err(|e| format!("clone the mount on {}: {e}", path.display()))
            })
            .collect::<Result<Vec<OwnedFd>, String>>()?;
        // Private first: in this namespace only, and so the unmount does not propagate
        // to the host's (were the pods dir ever shared).
        mount(
            None::<&str>,
            pods,
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("make {} private: {e}", pods.display()))?;
        umount2(pods, MntFlags::MNT_DETACH)
            .map_err(|e| format!("detach {}: {e}", pods.display()))?;
        for (path, clone) in carried.iter().zip(clones) {
            move_mount(
                &clone,
                "",
                rustix::fs::CWD,
                path,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .map_err(|e| format!("put back the mount on {}: {e}", path.display()))?;
        }
        Ok(Some(view))
    }

    /// Returns to the host's mount namespace.
    pub(super) fn leave(mut self) -> Result<(), String> {
        self.return_home()
    }

    fn return_home(&mut self) -> Result<(), String> {
        match self.host.take() {
            Some(host) => setns(host, CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("return to the host's mount namespace: {e}")),
            None => Ok(()),
        }
    }
}

impl Drop for CreateView {
    fn drop(&mut self) {
        let _ = self.return_home();
    }
}

/// The paths `spec` names below `pods`: bind mounts' sources and namespace files.
fn paths_under(spec: &Spec, pods: &Path) -> Vec<PathBuf> {
    let sources = spec
        .mounts()
        .iter()
        .flatten()
        .filter_map(|m| m.source().clone());
    let namespaces = spec
        .linux()
        .iter()
        .flat_map(|l| l.namespaces().iter().flatten())
        .filter_map(|n| n.path().clone());
    let mut paths: Vec<PathBuf> = sources
        .chain(namespaces)
        .filter(|p| p.starts_with(pods) && p != pods)
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// For each of `paths` (below `pods`), the outermost mount between `pods` and it, if any:
/// what must be cloned (with everything mounted below it) to be seen after `pods` is
/// detached. A path on no mount of its own is a file of the pods dir's filesystem and
/// stays visible without help.
fn mounts_to_carry(pods: &Path, paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut carried: Vec<PathBuf> = Vec::new();
    for path in paths {
        let Ok(rest) = path.strip_prefix(pods) else {
            continue;
        };
        let mut at = pods.to_path_buf();
        for part in rest.components() {
            at.push(part);
            match crate::mounts::is_mount_root(&at) {
                Ok(true) => {
                    carried.push(at.clone());
                    break;
                }
                Ok(false) => {}
                // Missing: the runtime will say so with the spec's own path.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(format!("stat {}: {e}", at.display())),
            }
        }
    }
    carried.sort();
    carried.dedup();
    Ok(carried)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder,
    };

    fn spec(sources: &[&str], netns: &str) -> Spec {
        let mut spec = Spec::default();
        let mounts = sources
            .iter()
            .map(|s| {
                MountBuilder::default()
                    .destination("/x")
                    .typ("bind")
                    .source(s)
                    .build()
                    .unwrap()
            })
            .collect::<Vec<_>>();
        spec.set_mounts(Some(mounts));
        let ns = LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(netns)
            .build()
            .unwrap();
        spec.set_linux(Some(
            LinuxBuilder::default()
                .namespaces(vec![ns])
                .build()
                .unwrap(),
        ));
        spec
    }

    #[test]
    fn only_paths_below_the_pods_dir_are_named_once_each() {
        let s = spec(
            &[
                "/run/p/s/a/shm",
                "/run/p/s/a/hosts",
                "/proc",
                "/run/p/sx/b",
                "/run/p/s",
            ],
            "/run/p/s/a/ns/net",
        );
        let got = paths_under(&s, Path::new("/run/p/s"));
        let want: Vec<PathBuf> = ["/run/p/s/a/hosts", "/run/p/s/a/ns/net", "/run/p/s/a/shm"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_plain_file_is_not_carried_and_a_missing_path_is_left_to_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let pods = dir.path();
        std::fs::create_dir_all(pods.join("a")).unwrap();
        std::fs::write(pods.join("a/hosts"), "").unwrap();
        let paths = [pods.join("a/hosts"), pods.join("b/shm")];
        assert_eq!(
            mounts_to_carry(pods, &paths).unwrap(),
            Vec::<PathBuf>::new()
        );
    }
}
