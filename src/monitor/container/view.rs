//! The mount namespace a container is created in: not the host's, but one without the
//! mounts other pods and other software keep there.
//!
//! Every pod adds its /dev/shm and its net namespace file to the host's mount table, under
//! the daemon's pods dir, and a node holds others' mounts too (kubelet's volumes, other
//! runtimes' rootfs). What a create costs grows with that table: libcontainer's cgroup
//! manager reads it many times per create (16 on a cgroup v1 host), crun reads it too, and
//! the container's own mount namespace starts as a copy of it. So the monitor creates the
//! container in a namespace of its own, made one of two ways:
//!
//! - **from the template** the zygote made (`create_template.rs`): a copy of it, into which
//!   everything the spec names is cloned from the host's namespace (`open_tree`, with what
//!   is mounted below) and attached at the same path: the rootfs, every bind mount's source,
//!   every namespace file. Before attaching, the directory each goes into, and the runtime's
//!   own directories, must be the same directories in the copy as on the host; else
//! - **a copy of the host's** in which the pods dir (a mount of its own, made by the daemon
//!   at start) is detached in one call, after cloning the mounts below it that this
//!   container's spec names and putting them back where they were.
//!
//! After the create the monitor returns to the host's namespace (`leave`): it serves the
//! container from there as before (log reopening, volumes mounted later on the host), and
//! the private namespace goes with its last process. Clones keep the propagation of what
//! they clone (a clone of a shared mount is its peer), so a Bidirectional volume's mount in
//! the container is still a peer of the host's either way.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::Spec;
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};

use crate::monitor::create_template::Identity;
use crate::monitor::protocol::CreateViewKind;

/// In the private namespace until [`CreateView::leave`] (or drop) returns to the host's.
pub(super) struct CreateView {
    host: Option<OwnedFd>,
    kind: CreateViewKind,
}

/// Whether the create has a namespace of its own: `pods` is still the mount the daemon
/// made it (an older daemon's pods below it kept it from being one, or it was unmounted
/// since: the create then happens in the host's namespace, seeing every pod's mounts).
pub(super) fn pods_is_a_mount(pods: &Path) -> Result<bool, String> {
    crate::mounts::is_mount_root(pods).map_err(|e| format!("stat {}: {e}", pods.display()))
}

impl CreateView {
    /// Enters a namespace for the create of `spec` (whose relative paths are relative to
    /// `bundle`) without what the daemon keeps under `pods`, a mount of its own (the
    /// caller checked: [`pods_is_a_mount`]): a copy of `template` when there is one and it
    /// fits (the runtime's `dirs` are the same there), else a copy of this process's. Must
    /// be called by a single-threaded process (the monitor). On error this process is back
    /// in the host's namespace.
    pub(super) fn enter(
        pods: &Path,
        spec: &Spec,
        bundle: &Path,
        template: Option<OwnedFd>,
        dirs: &[PathBuf],
    ) -> Result<CreateView, String> {
        let host = std::fs::File::open("/proc/self/ns/mnt")
            .map(OwnedFd::from)
            .map_err(|e| format!("open the host's mount namespace: {e}"))?;
        let template_unfit = if let Some(template) = template {
            match from_template(&host, template, spec, bundle, dirs) {
                Ok(()) => {
                    return Ok(CreateView {
                        host: Some(host),
                        kind: CreateViewKind::Template,
                    })
                }
                // Back in the host's namespace: the copy below serves this create.
                Err(Unfit::Fallback(why)) => Some(why),
                Err(Unfit::Stuck(why)) => return Err(why),
            }
        } else {
            None
        };
        let carried = mounts_to_carry(pods, &paths_under(spec, pods))?;
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
        // From here on, a failure returns to the host's namespace by the drop.
        let view = CreateView {
            host: Some(host),
            kind: CreateViewKind::Copy { template_unfit },
        };
        let clones = carried
            .iter()
            .map(|path| {
                clone_tree(path).map_err(|e| format!("clone the mount on {}: {e}", path.display()))
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
            attach(&clone, path)?;
        }
        Ok(view)
    }

    /// How this view was made.
    pub(super) fn kind(&self) -> &CreateViewKind {
        &self.kind
    }

    /// Returns to the host's mount namespace. Returns a handle on the namespace the create
    /// ran in when this process left one (nothing else uses it once the container's init
    /// has its own): while held, the namespace and its mounts stay; its teardown, when the
    /// handle goes, waits for the kernel's RCU grace period, so the caller lets it go once
    /// the create is reported, not before.
    pub(super) fn leave(mut self) -> Result<Option<OwnedFd>, String> {
        let view = match self.host {
            Some(_) => std::fs::File::open("/proc/self/ns/mnt")
                .ok()
                .map(OwnedFd::from),
            None => None,
        };
        self.return_home()?;
        Ok(view)
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

/// Why the template did not serve a create.
enum Unfit {
    /// Back in the host's namespace (or never left it): copy that one instead.
    Fallback(String),
    /// Could not return to the host's namespace: the create must not go on.
    Stuck(String),
}

/// Enters a copy of `template` with everything `spec` names cloned from the host's
/// namespace (`host`, this process's) and attached where the spec names it, after checking
/// that the directories they go into and the runtime's `dirs` are the same in the copy as
/// on the host. On `Fallback` this process is back in the host's namespace.
fn from_template(
    host: &OwnedFd,
    template: OwnedFd,
    spec: &Spec,
    bundle: &Path,
    dirs: &[PathBuf],
) -> Result<(), Unfit> {
    let fallback = |what: String| Unfit::Fallback(what);
    let mut carried = Vec::new();
    for path in paths_named(spec, bundle) {
        let clone = match clone_tree(&path) {
            Ok(clone) => clone,
            // Missing: the runtime says so with the spec's own path.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(fallback(format!("clone {}: {e}", path.display()))),
        };
        let into = path.parent().and_then(Identity::nearest);
        carried.push((path, clone, into));
    }
    let dirs: Vec<(PathBuf, Option<Identity>)> = dirs
        .iter()
        .map(|d| (d.clone(), Identity::nearest(d)))
        .collect();
    setns(template.as_fd(), CloneFlags::CLONE_NEWNS)
        .map_err(|e| fallback(format!("join the create template: {e}")))?;
    drop(template);
    let home = |why: String| match setns(host.as_fd(), CloneFlags::CLONE_NEWNS) {
        Ok(()) => Unfit::Fallback(why),
        Err(e) => Unfit::Stuck(format!("{why}; return to the host's mount namespace: {e}")),
    };
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
        return Err(home(format!("unshare(CLONE_NEWNS): {e}")));
    }
    for (dir, was) in &dirs {
        if Identity::nearest(dir) != *was {
            return Err(home(format!("{} differs from the host's", dir.display())));
        }
    }
    for (path, _, into) in &carried {
        if path.parent().and_then(Identity::nearest) != *into {
            return Err(home(format!("{} differs from the host's", path.display())));
        }
    }
    for (path, clone, _) in &carried {
        if let Err(e) = attach(clone, path) {
            return Err(home(e));
        }
    }
    Ok(())
}

/// Every absolute path the spec has the runtime open or mount: the rootfs (relative to
/// `bundle` when relative), bind mounts' sources and namespace files, except those in
/// `/proc` (the same procfs everywhere), each once, in order.
fn paths_named(spec: &Spec, bundle: &Path) -> Vec<PathBuf> {
    let root = spec.root().as_ref().map(|r| bundle.join(r.path()));
    let mut paths: Vec<PathBuf> = root
        .into_iter()
        .chain(sources_and_namespaces(spec))
        .filter(|p| p.is_absolute() && !p.starts_with("/proc"))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Bind mounts' sources and namespace files named by `spec`.
fn sources_and_namespaces(spec: &Spec) -> impl Iterator<Item = PathBuf> + '_ {
    let binds = spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| {
            m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind")
        })
        .filter_map(|m| m.source().clone());
    let namespaces = spec
        .linux()
        .iter()
        .flat_map(|l| l.namespaces().iter().flatten())
        .filter_map(|n| n.path().clone());
    binds.chain(namespaces)
}

/// A detached copy of the mount tree at `path` (what a recursive bind of it would mount).
fn clone_tree(path: &Path) -> Result<OwnedFd, rustix::io::Errno> {
    let flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_RECURSIVE;
    open_tree(rustix::fs::CWD, path, flags)
}

/// Attaches a [`clone_tree`] on `path`, following a symlink there as the clone followed it.
fn attach(clone: &OwnedFd, path: &Path) -> Result<(), String> {
    move_mount(
        clone,
        "",
        rustix::fs::CWD,
        path,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_SYMLINKS,
    )
    .map_err(|e| format!("attach the clone of {} there: {e}", path.display()))
}

/// The paths `spec` names below `pods`: bind mounts' sources and namespace files.
fn paths_under(spec: &Spec, pods: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = sources_and_namespaces(spec)
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
    fn the_rootfs_binds_and_namespaces_are_named_but_not_proc_nor_other_mounts() {
        let mut s = spec(
            &["/var/lib/kubelet/pods/u/volumes/v", "/run/p/s/a/shm"],
            "/proc/7/ns/net",
        );
        let mut mounts = s.mounts().clone().unwrap();
        mounts.push(
            MountBuilder::default()
                .destination("/t")
                .typ("tmpfs")
                .source("/not/a/bind")
                .build()
                .unwrap(),
        );
        mounts.push(
            MountBuilder::default()
                .destination("/o")
                .source("/opt/rbound")
                .options(vec!["rbind".to_string(), "ro".to_string()])
                .build()
                .unwrap(),
        );
        s.set_mounts(Some(mounts));
        let got = paths_named(&s, Path::new("/run/p/c/id"));
        let want: Vec<PathBuf> = [
            "/opt/rbound",
            "/run/p/c/id/rootfs",
            "/run/p/s/a/shm",
            "/var/lib/kubelet/pods/u/volumes/v",
        ]
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
