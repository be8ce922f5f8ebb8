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
//! Mounts that are not proxrt's count too (another runtime's overlays and namespace files,
//! kubelet's volume mounts of other pods): with 1500 of them in the host's table a create
//! took 19.5 ms instead of 6.2 (measured, host network). So in the copy every mount that
//! none of the create's paths lies in or under (the spec's root, mount sources, namespace
//! files and hooks, the bundle, the state and runtime dirs), and that is not one of the
//! host's system trees (`/proc`, `/sys`, `/dev`, `/usr`, `/etc`, `/bin`, `/sbin`, `/lib*`),
//! is made private (so that nothing propagates back to the host) and detached, a whole
//! subtree per call ([`unrelated_mounts`]).
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
    pub(super) fn enter(
        pods: &Path,
        spec: &Spec,
        also_needed: &[&Path],
    ) -> Result<Option<CreateView>, String> {
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
        let mut needed = needed_paths(spec);
        needed.extend(also_needed.iter().map(|p| p.to_path_buf()));
        detach_unrelated(&needed)?;
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

/// The host paths a create uses through this namespace, from the spec: the root, the
/// mount sources, the namespace files and the hooks.
fn needed_paths(spec: &Spec) -> Vec<PathBuf> {
    let root = spec.root().iter().map(|r| r.path().clone());
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
    let hooks = spec.hooks().iter().flat_map(|h| {
        #[allow(deprecated)]
        let all = [
            h.prestart(),
            h.create_runtime(),
            h.create_container(),
            h.start_container(),
            h.poststart(),
            h.poststop(),
        ];
        all.into_iter()
            .flatten()
            .flatten()
            .map(|hook| hook.path().clone())
            .collect::<Vec<_>>()
    });
    root.chain(sources)
        .chain(namespaces)
        .chain(hooks)
        .filter(|p| p.is_absolute())
        .collect()
}

/// The host's trees a runtime and its hooks may use without the spec naming them.
const SYSTEM_TREES: &[&str] = &[
    "/proc", "/sys", "/dev", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// One line of `/proc/self/mountinfo`: the mount's id, its parent's, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountLine {
    id: u64,
    parent: u64,
    point: PathBuf,
}

fn parse_mountinfo(table: &str) -> Vec<MountLine> {
    table
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let id = f.next()?.parse().ok()?;
            let parent = f.next()?.parse().ok()?;
            let point = unescape(f.nth(2)?);
            Some(MountLine { id, parent, point })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The mounts of `table` that none of `needed` lies in or under, that are not `/` or in
/// a system tree, and whose parent is kept: detaching each takes its whole subtree. A
/// mount point with more than one mount stacked on it is left alone (an unmount there
/// takes only the top one).
fn unrelated_mounts(table: &[MountLine], needed: &[PathBuf]) -> Vec<PathBuf> {
    use std::collections::{HashMap, HashSet};
    let mut stacked: HashMap<&Path, usize> = HashMap::new();
    for m in table {
        *stacked.entry(m.point.as_path()).or_default() += 1;
    }
    let unrelated = |m: &MountLine| {
        m.point != Path::new("/")
            && stacked.get(m.point.as_path()) == Some(&1)
            && !SYSTEM_TREES.iter().any(|t| m.point.starts_with(t))
            && !needed
                .iter()
                .any(|p| p.starts_with(&m.point) || m.point.starts_with(p))
    };
    let detachable: HashSet<u64> = table
        .iter()
        .filter(|m| unrelated(m))
        .map(|m| m.id)
        .collect();
    table
        .iter()
        .filter(|m| detachable.contains(&m.id) && !detachable.contains(&m.parent))
        .map(|m| m.point.clone())
        .collect()
}

/// Detaches [`unrelated_mounts`] in this namespace, each made private first so that the
/// unmount stays here. A mount that cannot be made private is left in place.
fn detach_unrelated(needed: &[PathBuf]) -> Result<(), String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read this namespace's mount table: {e}"))?;
    for point in unrelated_mounts(&parse_mountinfo(&table), needed) {
        let private = mount(
            None::<&str>,
            &point,
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        );
        if private.is_ok() {
            let _ = umount2(&point, MntFlags::MNT_DETACH);
        }
    }
    Ok(())
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

    fn line(id: u64, parent: u64, point: &str) -> MountLine {
        MountLine {
            id,
            parent,
            point: point.into(),
        }
    }

    #[test]
    fn mountinfo_points_are_unescaped() {
        let table = "21 1 0:20 / / rw - ext4 /dev/vda rw\n\
                     30 21 0:40 / /tmp/a\\040b\\134c rw shared:5 - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mountinfo(table),
            vec![line(21, 1, "/"), line(30, 21, "/tmp/a b\\c")]
        );
    }

    #[test]
    fn unrelated_subtrees_go_whole_and_what_the_create_uses_stays() {
        let table = vec![
            line(1, 0, "/"),
            line(2, 1, "/proc"),
            line(3, 1, "/sys"),
            line(4, 3, "/sys/fs/cgroup/cpu"),
            line(5, 1, "/run"),
            // The create's own: its rootfs under the run dir, a volume with a submount.
            line(6, 5, "/run/proxrt/c/x/rootfs"),
            line(7, 1, "/var/lib/kubelet/pods/mine/volumes/v"),
            line(8, 7, "/var/lib/kubelet/pods/mine/volumes/v/sub"),
            // Not the create's: another pod's volume, another runtime's tree.
            line(9, 1, "/var/lib/kubelet/pods/other/volumes/v"),
            line(10, 5, "/run/containerd"),
            line(11, 10, "/run/containerd/task/y/rootfs"),
            line(12, 5, "/run/netns/cni-1"),
            // Stacked on one point: left alone.
            line(13, 1, "/mnt/stack"),
            line(14, 13, "/mnt/stack"),
            line(15, 1, "/usr/local"),
        ];
        let needed: Vec<PathBuf> = [
            "/run/proxrt/c/x/rootfs",
            "/var/lib/kubelet/pods/mine/volumes/v",
            "/proc/77/ns/ipc",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let want: Vec<PathBuf> = [
            "/var/lib/kubelet/pods/other/volumes/v",
            "/run/containerd",
            "/run/netns/cni-1",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(unrelated_mounts(&table, &needed), want);
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
