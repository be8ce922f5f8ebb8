//! Bind mounts of single files (the pod's /etc/hostname, /etc/hosts, /etc/resolv.conf,
//! kubelet's etc-hosts, any volume that is one file) attached to the container's rootfs by
//! the monitor before libcontainer runs, instead of by libcontainer's init.
//!
//! libcontainer's init mounts each of the spec's mounts through pathrs' hardened path
//! resolution: about 75 system calls per bind mount (procfs checks of every fd it opens),
//! ~0.1 ms each on a quiet host and three of them in every container. The monitor makes
//! the same mount with about ten, checks included: it clones the source in the host's
//! mount namespace, and in the private namespace the container is created in
//! (`container/view.rs`) attaches the clone on the destination inside the rootfs, with
//! the spec's flags and private propagation. libcontainer's init then finds it there:
//! its recursive bind of the rootfs carries it into the container as it carries the
//! rootfs' own mounts.
//!
//! Only where the result is the one libcontainer would make; everything else stays in the
//! spec for libcontainer:
//!
//! - the daemon takes out of the spec ([`take`]) a bind of a regular file whose options
//!   are only `bind`/`rbind`, an explicit `rprivate`/`private`, `ro`/`rw`, `nosuid`,
//!   `nodev`, `noexec`; whose destination is a clean absolute path that no other mount of
//!   the spec covers (is on or above); in a spec without a user namespace and whose root
//!   propagation is the default, `slave` or `private` (never `shared`, which would turn
//!   the attached file into a peer);
//! - the monitor ([`detach`]) gives a mount back (and rewrites config.json, which only
//!   then differs from what the daemon wrote) unless the rootfs is a mount of its own,
//!   the source is still a regular file, and the destination's directory resolves inside
//!   the rootfs without a symlink and holds a regular file (or nothing) by that name — the
//!   cases libcontainer resolves the same way, symlinks and all, and creates the file just
//!   as the monitor does (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0644 under the same umask);
//! - the monitor makes the rootfs mount private in the view before attaching (already so
//!   on a proxrt host, whose mount namespace shares nothing): nothing attached there can
//!   reach another namespace.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};
use rustix::fs::{fstat, openat, statat, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};
use serde::{Deserialize, Serialize};

use super::mount_attr::{self, MountAttr};

/// A mount the daemon took out of the spec for the monitor to attach.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Premount {
    /// Its place in the spec's list of mounts as the daemon made it: given back there.
    pub index: usize,
    pub mount: Mount,
}

/// Options a premount may have (anything else stays with libcontainer).
const OPTIONS: &[&str] = &[
    "bind", "rbind", "rprivate", "private", "ro", "rw", "nosuid", "nodev", "noexec",
];

/// Takes out of `spec` the mounts the monitor can attach as libcontainer would (module
/// doc); `is_file` tells whether a source is a regular file (following symlinks, as
/// libcontainer canonicalizes sources). The rest of the spec's mounts keep their order.
pub fn take(spec: &mut Spec, is_file: impl Fn(&Path) -> bool) -> Vec<Premount> {
    if !spec_allows(spec) {
        return Vec::new();
    }
    let Some(mounts) = spec.mounts().clone() else {
        return Vec::new();
    };
    let chosen: Vec<usize> = (0..mounts.len())
        .filter(|&i| {
            candidate(&mounts[i]) && !covered(&mounts, i) && source_is_file(&mounts[i], &is_file)
        })
        .collect();
    if chosen.is_empty() {
        return Vec::new();
    }
    let mut kept = Vec::with_capacity(mounts.len() - chosen.len());
    let mut taken = Vec::with_capacity(chosen.len());
    for (index, mount) in mounts.into_iter().enumerate() {
        if chosen.contains(&index) {
            taken.push(Premount { index, mount });
        } else {
            kept.push(mount);
        }
    }
    spec.set_mounts(Some(kept));
    taken
}

/// Puts `back` into `spec` where [`take`] found them, among the mounts it left;
/// `still_out`: the indices of the premounts taken with them that stay out.
pub fn give_back(spec: &mut Spec, mut back: Vec<Premount>, still_out: &[usize]) {
    if back.is_empty() {
        return;
    }
    back.sort_by_key(|p| p.index);
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for p in back {
        // Ascending: everything before it is in place but what stays out.
        let missing = still_out.iter().filter(|&&i| i < p.index).count();
        let at = (p.index - missing).min(mounts.len());
        mounts.insert(at, p.mount);
    }
    spec.set_mounts(Some(mounts));
}

fn spec_allows(spec: &Spec) -> bool {
    let Some(linux) = spec.linux() else {
        return false;
    };
    let user_ns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::User);
    let mapped = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    let propagation = matches!(
        linux.rootfs_propagation().as_deref(),
        None | Some("slave") | Some("private")
    );
    !user_ns && !mapped && propagation
}

/// A bind with only the options in [`OPTIONS`], an explicit private propagation and a
/// clean absolute destination below `/`.
fn candidate(m: &Mount) -> bool {
    let options = m.options().as_deref().unwrap_or_default();
    let bind = options.iter().any(|o| o == "bind" || o == "rbind");
    let private = options.iter().any(|o| o == "rprivate" || o == "private");
    let typ_ok = matches!(m.typ().as_deref(), None | Some("bind") | Some("none"));
    bind && private
        && typ_ok
        && options.iter().all(|o| OPTIONS.contains(&o.as_str()))
        && m.source().as_ref().is_some_and(|s| s.is_absolute())
        && clean_below_root(m.destination())
}

/// Absolute, at least one name below `/`, and spelled as its components (no `.`, `..`,
/// doubled or trailing `/`).
fn clean_below_root(path: &Path) -> bool {
    let mut components = path.components();
    components.next() == Some(Component::RootDir)
        && path.file_name().is_some()
        && components.all(|c| matches!(c, Component::Normal(_)))
        && path.components().collect::<PathBuf>().as_os_str() == path.as_os_str()
}

/// Whether another mount of `mounts` is on `mounts[i]`'s destination or above it (it
/// would hide or replace what is attached before the runtime runs).
fn covered(mounts: &[Mount], i: usize) -> bool {
    let destination = mounts[i].destination();
    mounts
        .iter()
        .enumerate()
        .any(|(j, m)| j != i && destination.starts_with(m.destination()))
}

fn source_is_file(m: &Mount, is_file: &impl Fn(&Path) -> bool) -> bool {
    m.source().as_deref().is_some_and(is_file)
}

/// A premount's source, cloned; attached by [`attach`].
pub(crate) struct Detached {
    premount: Premount,
    tree: OwnedFd,
    /// No file by that name in the rootfs yet: created before attaching.
    create: bool,
}

impl Detached {
    /// Its place in the spec's list as the daemon made it.
    pub(crate) fn index(&self) -> usize {
        self.premount.index
    }
}

/// In the host's mount namespace, before the create's own (`container/view.rs`): clones
/// each premount's source and checks its destination in `rootfs`. Returns what [`attach`]
/// attaches and the premounts to give back to the spec (module doc).
pub(crate) fn detach(premounts: Vec<Premount>, rootfs: &Path) -> (Vec<Detached>, Vec<Premount>) {
    if premounts.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let root = match crate::mounts::is_mount_root(rootfs) {
        Ok(true) => open_dir(rootfs),
        _ => return (Vec::new(), premounts),
    };
    let Ok(root) = root else {
        return (Vec::new(), premounts);
    };
    let mut detached = Vec::with_capacity(premounts.len());
    let mut back = Vec::new();
    for premount in premounts {
        match detach_one(&premount, root.as_fd()) {
            Some((tree, create)) => detached.push(Detached {
                premount,
                tree,
                create,
            }),
            None => back.push(premount),
        }
    }
    (detached, back)
}

fn detach_one(premount: &Premount, root: BorrowedFd<'_>) -> Option<(OwnedFd, bool)> {
    let source = premount.mount.source().as_ref()?;
    // As libcontainer clones: with what is mounted on it for `rbind`.
    let options = premount.mount.options().as_deref().unwrap_or_default();
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if options.iter().any(|o| o == "rbind") {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = open_tree(rustix::fs::CWD, source.as_path(), flags).ok()?;
    if !is_regular(&tree) {
        return None;
    }
    let (parent, name) = split(premount.mount.destination())?;
    let dir = resolve_dir(root, &parent).ok()?;
    let create = match statat(&dir, name.as_path(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => false,
        Ok(_) => return None,
        Err(rustix::io::Errno::NOENT) => true,
        Err(_) => return None,
    };
    Some((tree, create))
}

/// In the create's mount namespace: makes the rootfs mount private, then attaches each
/// clone on its destination in `rootfs`, creating the file first where there was none,
/// with the spec's flags and private propagation.
pub(crate) fn attach(detached: Vec<Detached>, rootfs: &Path) -> Result<(), String> {
    if detached.is_empty() {
        return Ok(());
    }
    nix::mount::mount(
        None::<&str>,
        rootfs,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make the rootfs mount private: {e}"))?;
    let root =
        open_dir(rootfs).map_err(|e| format!("open the rootfs {}: {e}", rootfs.display()))?;
    for d in detached {
        let destination = d.premount.mount.destination();
        attach_one(&d, root.as_fd())
            .map_err(|e| format!("mount {} in the rootfs: {e}", destination.display()))?;
    }
    Ok(())
}

fn attach_one(d: &Detached, root: BorrowedFd<'_>) -> io::Result<()> {
    let (parent, name) = split(d.premount.mount.destination())
        .ok_or_else(|| io::Error::other("destination has no parent"))?;
    let dir = resolve_dir(root, &parent)?;
    if d.create {
        // As libcontainer's init would (its umask is this process's).
        openat(
            &dir,
            name.as_path(),
            OFlags::RDONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )?;
    }
    let target = openat(
        &dir,
        name.as_path(),
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if !is_regular(&target) {
        return Err(io::Error::other("not a regular file in the rootfs"));
    }
    move_mount(
        &d.tree,
        "",
        &target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?;
    // libcontainer's flags on the mount itself; then the propagation monitor/propagation.rs
    // sets on libcontainer's binds (the last option says; `rprivate`: the whole tree).
    let options = d.premount.mount.options().as_deref().unwrap_or_default();
    let here = libc::AT_EMPTY_PATH as libc::c_uint;
    let flags = MountAttr {
        attr_set: mount_attr::flags_of(options),
        ..MountAttr::default()
    };
    mount_attr::set(d.tree.as_fd(), Path::new(""), here, &flags)?;
    let last = options
        .iter()
        .rev()
        .find(|o| *o == "rprivate" || *o == "private");
    let recursive = match last.is_some_and(|o| o == "rprivate") {
        true => libc::AT_RECURSIVE as libc::c_uint,
        false => 0,
    };
    let private = MountAttr {
        propagation: mount_attr::MS_PRIVATE,
        ..MountAttr::default()
    };
    mount_attr::set(d.tree.as_fd(), Path::new(""), here | recursive, &private)
}

fn is_regular(fd: &OwnedFd) -> bool {
    fstat(fd).is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
}

/// The destination's directory (relative to the rootfs) and file name.
fn split(destination: &Path) -> Option<(PathBuf, PathBuf)> {
    let name = destination.file_name()?;
    let parent = destination.parent()?.strip_prefix("/").ok()?;
    Some((parent.to_path_buf(), PathBuf::from(name)))
}

/// `dir` (relative) inside `root`, without following a symlink or leaving the mount.
fn resolve_dir(root: BorrowedFd<'_>, dir: &Path) -> io::Result<OwnedFd> {
    if dir.as_os_str().is_empty() {
        return root.try_clone_to_owned();
    }
    let fd = rustix::fs::openat2(
        root,
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
    )?;
    Ok(fd)
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::fixture::Fixture;
    use k8s_cri::v1::{Mount as CriMount, MountPropagation};
    use oci_spec::runtime::LinuxNamespaceBuilder;

    const POD_FILES: [&str; 3] = ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];

    fn spec_of(mut f: Fixture) -> Spec {
        f.config.command = vec!["/bin/sh".into()];
        crate::spec::container_spec(&f.input()).unwrap()
    }

    fn destinations(mounts: &[Mount]) -> Vec<String> {
        mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect()
    }

    fn taken(spec: &mut Spec, files: &[&str]) -> Vec<String> {
        let taken = take(spec, |p| files.iter().any(|f| p == Path::new(f)));
        taken
            .iter()
            .map(|p| p.mount.destination().display().to_string())
            .collect()
    }

    fn volume(container_path: &str, host_path: &str, propagation: MountPropagation) -> CriMount {
        CriMount {
            container_path: container_path.into(),
            host_path: host_path.into(),
            propagation: propagation as i32,
            ..Default::default()
        }
    }

    /// The fixture's spec with a private volume of `/srv/v` on `container_path`.
    fn spec_with_volume_on(container_path: &str) -> Spec {
        let mut f = Fixture::new();
        let private = MountPropagation::PropagationPrivate;
        f.config.mounts = vec![volume(container_path, "/srv/v", private)];
        spec_of(f)
    }

    /// Every source of the fixture's pod files is a file.
    const FILES: [&str; 3] = [
        "/run/proxrt/pod/hostname",
        "/run/proxrt/pod/hosts",
        "/run/proxrt/pod/resolv.conf",
    ];

    #[test]
    fn the_pods_files_are_taken_and_the_rest_keeps_its_order() {
        let mut spec = spec_of(Fixture::new());
        let before = spec.mounts().clone().unwrap();
        assert_eq!(taken(&mut spec, &FILES), POD_FILES);
        let after = spec.mounts().clone().unwrap();
        let expected: Vec<Mount> = before
            .iter()
            .filter(|m| !POD_FILES.contains(&m.destination().to_str().unwrap()))
            .cloned()
            .collect();
        assert_eq!(after, expected);
        // /dev/shm is a bind too, but below the /dev tmpfs libcontainer mounts first.
        assert!(destinations(&after).contains(&"/dev/shm".to_string()));
    }

    #[test]
    fn given_back_the_spec_is_what_it_was() {
        let mut f = Fixture::new();
        f.config.mounts = vec![
            volume("/data", "/srv/data", MountPropagation::PropagationPrivate),
            volume(
                "/etc/app.conf",
                "/srv/app.conf",
                MountPropagation::PropagationPrivate,
            ),
            volume("/var/x", "/srv/x", MountPropagation::PropagationPrivate),
        ];
        let original = spec_of(f);
        let files: Vec<&str> = FILES
            .iter()
            .copied()
            .chain(["/srv/app.conf", "/srv/x"])
            .collect();
        let mut spec = original.clone();
        let premounts = take(&mut spec, |p| files.iter().any(|f| p == Path::new(f)));
        assert_eq!(premounts.len(), 5, "{premounts:#?}");
        // Any subset given back lands where it was.
        for mask in 0..(1u32 << premounts.len()) {
            let mut partial = spec.clone();
            let (back, kept): (Vec<_>, Vec<_>) = premounts
                .iter()
                .cloned()
                .enumerate()
                .partition(|(i, _)| mask & (1 << i) != 0);
            let out: Vec<usize> = kept.iter().map(|(_, p)| p.index).collect();
            give_back(
                &mut partial,
                back.into_iter().map(|(_, p)| p).collect(),
                &out,
            );
            give_back(
                &mut partial,
                kept.into_iter().map(|(_, p)| p).collect(),
                &[],
            );
            assert!(partial == original, "mask {mask:b}");
        }
    }

    #[test]
    fn a_directory_source_stays_with_libcontainer() {
        let mut spec = spec_of(Fixture::new());
        assert_eq!(taken(&mut spec, &[]), Vec::<String>::new());
        assert!(destinations(spec.mounts().as_ref().unwrap()).contains(&"/etc/hosts".into()));
    }

    #[test]
    fn a_mount_on_or_above_the_destination_keeps_it_with_libcontainer() {
        for above in ["/etc", "/etc/"] {
            let mut spec = spec_with_volume_on(above);
            let got = taken(&mut spec, &[FILES.as_slice(), &["/srv/v"]].concat());
            assert!(
                !got.iter().any(|d| POD_FILES.contains(&d.as_str())),
                "a volume on {above}: {got:?}"
            );
        }
        // kubelet's own /etc/hosts replaces the pod's, and is taken itself.
        let mut spec = spec_with_volume_on("/etc/hosts");
        let premounts = take(&mut spec, |p| {
            p == Path::new("/srv/v") || FILES.iter().any(|f| p == Path::new(f))
        });
        let hosts = premounts
            .iter()
            .find(|p| p.mount.destination() == Path::new("/etc/hosts"))
            .unwrap();
        assert_eq!(hosts.mount.source().as_deref(), Some(Path::new("/srv/v")));
        // Beside it is fine.
        let mut spec = spec_with_volume_on("/etcetera");
        assert_eq!(taken(&mut spec, &FILES), POD_FILES);
    }

    #[test]
    fn only_private_binds_with_plain_options_are_taken() {
        let base = spec_of(Fixture::new());
        let hosts = |spec: &Spec| {
            spec.mounts()
                .iter()
                .flatten()
                .position(|m| m.destination() == Path::new("/etc/hosts"))
                .unwrap()
        };
        for (options, expected) in [
            (vec!["rbind", "rprivate", "rw"], true),
            (
                vec!["bind", "private", "ro", "nosuid", "nodev", "noexec"],
                true,
            ),
            (vec!["rbind", "rw"], false),
            (vec!["rbind", "rslave", "rw"], false),
            (vec!["rbind", "rshared", "rw"], false),
            (vec!["rbind", "rprivate", "rro"], false),
            (vec!["rbind", "rprivate", "noatime"], false),
            (vec!["rprivate", "rw"], false),
        ] {
            let mut spec = base.clone();
            let i = hosts(&spec);
            let mut mounts = spec.mounts().clone().unwrap();
            mounts[i].set_options(Some(options.iter().map(|o| o.to_string()).collect()));
            spec.set_mounts(Some(mounts));
            let got = taken(&mut spec, &FILES);
            assert_eq!(
                got.contains(&"/etc/hosts".to_string()),
                expected,
                "{options:?}"
            );
        }
    }

    #[test]
    fn nothing_is_taken_with_a_user_namespace_or_shared_root_propagation() {
        let mut spec = spec_of(Fixture::new());
        let mut linux = spec.linux().clone().unwrap();
        let mut namespaces = linux.namespaces().clone().unwrap();
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .build()
                .unwrap(),
        );
        linux.set_namespaces(Some(namespaces));
        spec.set_linux(Some(linux));
        assert!(taken(&mut spec, &FILES).is_empty());

        for (propagation, expected) in [
            (None, 3),
            (Some("slave"), 3),
            (Some("private"), 3),
            (Some("shared"), 0),
        ] {
            let mut spec = spec_of(Fixture::new());
            let mut linux = spec.linux().clone().unwrap();
            linux.set_rootfs_propagation(propagation.map(String::from));
            spec.set_linux(Some(linux));
            assert_eq!(taken(&mut spec, &FILES).len(), expected, "{propagation:?}");
        }
    }

    #[test]
    fn destinations_must_be_clean_and_below_the_root() {
        for (destination, expected) in [
            ("/etc/hosts", true),
            ("/hosts", true),
            ("/", false),
            ("etc/hosts", false),
            ("/etc/../hosts", false),
            ("/etc/./hosts", false),
            ("/etc/hosts/", false),
            ("/etc//hosts", false),
        ] {
            assert_eq!(
                clean_below_root(Path::new(destination)),
                expected,
                "{destination}"
            );
        }
    }
}
