//! The mount namespace containers are created from: a copy of the host's made once by the
//! zygote, holding only the mounts a create reads (`/`, `/proc`, `/sys`, `/dev` and what
//! is below them, the mounts on the way to the runtime's own directories and binaries, and
//! every mount other mounts sit in) — not the leaves other software keeps mounted: kubelet's
//! volumes, other runtimes' rootfs and namespace files, the host's datasets and disks, nor
//! the daemon's pods dir with each pod's /dev/shm and net namespace.
//!
//! What a create costs grows with the mount table it runs in: libcontainer's cgroup manager
//! reads it many times (16 on a cgroup v1 host), crun reads it, the monitor's view of it and
//! the container's own namespace are copies of it (~9 µs per mount per create, measured in
//! docs/benchmarks.md). A monitor copies this namespace instead of the host's and clones
//! into the copy what its spec names from the host's (`container/view.rs`).
//!
//! The namespace is private: nothing mounted or unmounted on the host after it was made
//! reaches it, so it does not grow back; what a create needs from the host is cloned at
//! each create. It keeps the filesystems it holds referenced (system ones, those the
//! runtime's directories live on, those other mounts sit in), so the zygote lets it go
//! when no create came for a while and makes it again for the next pod or create
//! (`zygote.rs`, `Template`). Checked when made (each runtime directory must be the same
//! directory in it as on the host) and at every create (the monitor's checks); when it
//! cannot be made, creates copy the host's namespace, as before it existed.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{umount2, MntFlags};

use super::zygote::{CreateRequest, RuntimeKind};

/// Mounts at or below these are always kept: the runtime reads `/proc` and `/sys` (cgroups,
/// security modules) and device nodes.
const SYSTEM_TREES: &[&str] = &["/proc", "/sys", "/dev"];

/// Kept with the mounts on the way to them: where binaries and their libraries live (a
/// runtime binary, hooks) and the host's configuration.
const HOST_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc"];

/// The directories a create of `req` uses besides what its spec names: they must be the
/// same in the template as on the host.
pub(crate) fn runtime_dirs(req: &CreateRequest) -> Vec<PathBuf> {
    let mut dirs = vec![
        req.state_dir.clone(),
        req.runtime_root.clone(),
        req.bundle.clone(),
    ];
    if let RuntimeKind::Crun { path, .. } = &req.runtime {
        dirs.push(path.clone());
    }
    dirs
}

/// Makes the template for creates whose daemon keeps its pods under `pods` and whose
/// runtime uses `dirs` ([`runtime_dirs`]); returns a handle that keeps it alive. For a
/// single-threaded caller (the zygote).
pub(crate) fn build(pods: &Path, dirs: &[PathBuf]) -> Result<OwnedFd, String> {
    if let Some(d) = dirs.iter().find(|d| d.starts_with(pods)) {
        return Err(format!(
            "{} is inside the pods dir {}",
            d.display(),
            pods.display()
        ));
    }
    super::mntns::made_by_child("the create template", || shape(pods, dirs))
}

/// In the builder child: a private copy of its namespace with [`detach_list`]'s mounts
/// gone, checked.
fn shape(pods: &Path, dirs: &[PathBuf]) -> Result<(), String> {
    let keep: Vec<PathBuf> = dirs
        .iter()
        .cloned()
        .chain(HOST_DIRS.iter().map(PathBuf::from))
        .collect();
    let before: Vec<Option<Identity>> = keep.iter().map(|p| Identity::nearest(p)).collect();
    // Private before anything is unmounted: an unmount must not reach the host's peers.
    super::mntns::private_copy()?;
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read the mount table: {e}"))?;
    for point in detach_list(&table, pods, dirs) {
        // A point another mount hides, or one already gone with its parent: kept mounts
        // cost a create a little, they never break one.
        let _ = umount2(&point, MntFlags::MNT_DETACH);
    }
    for (path, was) in keep.iter().zip(before) {
        if Identity::nearest(path) != was {
            return Err(format!(
                "{} is not the same directory there as on the host",
                path.display()
            ));
        }
    }
    Ok(())
}

/// The mount points to detach (lazily, each with what is below it) from a copy of the
/// namespace `mountinfo` describes, to leave what the module says: everything at or below
/// `pods`; of the rest, every mount that no other mount sits in, that is not `/` nor in a
/// [`SYSTEM_TREES`] tree, and that is not on the way to one of `keep` or [`HOST_DIRS`]
/// (at it or above it). A point mounted several times is listed as many times. Pure; in
/// no particular order.
pub(crate) fn detach_list(mountinfo: &str, pods: &Path, keep: &[PathBuf]) -> Vec<PathBuf> {
    let mut points: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for point in mountinfo.lines().filter_map(|l| l.split(' ').nth(4)) {
        *points
            .entry(lexical(crate::mounts::unescape(point)))
            .or_default() += 1;
    }
    let system = |p: &Path| SYSTEM_TREES.iter().any(|t| p.starts_with(t));
    let on_the_way = |p: &Path| {
        keep.iter()
            .map(lexical)
            .chain(HOST_DIRS.iter().map(lexical))
            .any(|k| k.starts_with(p))
    };
    // In sorted order a point's descendants follow it directly.
    let has_mounts_below = |p: &Path| {
        points
            .range::<Path, _>((std::ops::Bound::Excluded(p), std::ops::Bound::Unbounded))
            .next()
            .is_some_and(|(next, _)| next.starts_with(p))
    };
    let dropped = |p: &Path| {
        p.starts_with(pods)
            || !(p == Path::new("/") || system(p) || on_the_way(p) || has_mounts_below(p))
    };
    let mut out = Vec::new();
    for (point, &count) in &points {
        let outermost = point
            .ancestors()
            .skip(1)
            .all(|a| !(points.contains_key(a) && dropped(a)));
        if dropped(point) && outermost {
            out.extend(std::iter::repeat_n(point.clone(), count));
        }
    }
    out
}

/// `p` without `.` components and trailing slashes (mountinfo's points are canonical; the
/// configured directories may not be).
fn lexical(p: impl AsRef<Path>) -> PathBuf {
    p.as_ref()
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Which directory a path is, as two namespaces may disagree on it: the device and inode
/// of the path or, when it does not exist yet, of its nearest existing ancestor.
#[derive(Debug, PartialEq, Eq, Clone)]
pub(crate) struct Identity {
    at: PathBuf,
    dev: u64,
    ino: u64,
}

impl Identity {
    pub(crate) fn nearest(path: &Path) -> Option<Identity> {
        path.ancestors().find_map(|at| {
            std::fs::metadata(at).ok().map(|m| Identity {
                at: at.to_owned(),
                dev: m.dev(),
                ino: m.ino(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mountinfo line for `point` (the fields before it do not matter here).
    fn table(points: &[&str]) -> String {
        points
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{} 1 0:{i} / {p} rw - tmpfs tmpfs rw\n", i + 20))
            .collect()
    }

    fn detached(points: &[&str], pods: &str, keep: &[&str]) -> Vec<String> {
        let keep: Vec<PathBuf> = keep.iter().map(PathBuf::from).collect();
        let mut out: Vec<String> = detach_list(&table(points), Path::new(pods), &keep)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn leaves_go_and_what_the_runtime_reads_stays() {
        let points = [
            "/",
            "/proc",
            "/proc/sys/fs/binfmt_misc",
            "/sys",
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/cpu",
            "/dev",
            "/dev/shm",
            "/run",
            "/run/user/0",
            "/run/netns/cni-1",
            "/boot",
            "/var/lib/kubelet",
            "/var/lib/kubelet/pods/u/volumes/kubernetes.io~projected/token",
            "/var/lib/proxrt",
            "/var/lib/proxrt/c/x/rootfs",
            "/run/proxrt/s",
            "/run/proxrt/s/pod/shm",
            "/run/proxrt/s/pod/ns/net",
            "/rpool",
            "/rpool/data",
            "/rpool/data/subvol-100-disk-0",
            "/usr",
            "/usr/local/share/x",
        ];
        let got = detached(
            &points,
            "/run/proxrt/s",
            &[
                "/var/lib/proxrt/c",
                "/run/proxrt/c/id",
                "/run/proxrt/runtime",
            ],
        );
        let want = [
            "/boot",
            "/rpool/data/subvol-100-disk-0",
            "/run/netns/cni-1",
            "/run/proxrt/s",
            "/run/user/0",
            "/usr/local/share/x",
            "/var/lib/kubelet/pods/u/volumes/kubernetes.io~projected/token",
            "/var/lib/proxrt/c/x/rootfs",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_point_mounted_twice_is_detached_twice_and_nothing_below_a_detached_one() {
        let points = [
            "/",
            "/mnt/a",
            "/mnt/a",
            "/run/p/s",
            "/run/p/s/x",
            "/run/p/s/x",
        ];
        assert_eq!(
            detached(&points, "/run/p/s", &[]),
            ["/mnt/a", "/mnt/a", "/run/p/s"]
        );
    }

    #[test]
    fn mounts_on_the_way_to_a_runtime_dir_stay_whatever_their_depth() {
        let points = ["/", "/srv/disk", "/srv/disk/proxrt", "/srv/other"];
        assert_eq!(
            detached(&points, "/run/p/s", &["/srv/disk/proxrt/./root/"]),
            ["/srv/other"]
        );
    }

    #[test]
    fn escaped_points_are_read_as_paths() {
        let table = "20 1 0:1 / / rw - ext4 x rw\n21 1 0:2 / /mnt/with\\040space rw - tmpfs t rw\n";
        assert_eq!(
            detach_list(table, Path::new("/run/p/s"), &[]),
            [PathBuf::from("/mnt/with space")]
        );
    }

    #[test]
    fn identity_falls_back_to_the_nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("a/b/c");
        let id = Identity::nearest(&missing).unwrap();
        assert_eq!(id, Identity::nearest(dir.path()).unwrap());
        assert_eq!(id.at, dir.path());
    }
}
