//! Mounts attached to the container's rootfs by the monitor before libcontainer runs,
//! instead of by libcontainer's init: binds of a single file (the pod's /etc/hostname,
//! /etc/hosts, /etc/resolv.conf, kubelet's etc-hosts and termination log, file volumes),
//! binds of a directory (the pod's /dev/shm, directory volumes), and the filesystems that
//! belong to no namespace the container may have of its own or to one it joins (the /dev
//! tmpfs, /dev/pts; /dev/mqueue, of the pod's IPC namespace; /sys when the container
//! stays in the host's network namespace).
//!
//! libcontainer's init mounts each of the spec's mounts through pathrs' hardened path
//! resolution: 60 to 75 system calls per mount (procfs checks of every fd it opens), ~0.1
//! ms each on a quiet host, and every container has six or seven of these. The monitor
//! makes the same mount with about ten, checks included: it clones a bind's source in the
//! host's mount namespace, and in the private namespace the container is created in
//! (`container/view.rs`) makes each new filesystem (`fsopen`, `fsconfig`, `fsmount`, as
//! libcontainer does) and attaches it or the clone on the destination inside the rootfs,
//! with the spec's flags (and a bind's private propagation). libcontainer's init then
//! finds them there: its recursive bind of the rootfs carries them into the container as
//! it carries the rootfs' own mounts, and the spec's other mounts (/proc, the cgroups, a
//! pod network's /sys) are made on top as before.
//!
//! Only where the result is the one libcontainer would make; everything else stays in the
//! spec for libcontainer:
//!
//! - the daemon takes out of the spec ([`take`]), in a spec without a user namespace or a
//!   mount label and whose root propagation is the default, `slave` or `private` (never
//!   `shared`, which would turn what is attached into a peer):
//!   - a bind of a regular file or a directory whose options are only `bind`/`rbind`, an
//!     explicit `rprivate`/`private`, `ro`/`rw`, `nosuid`, `nodev`, `noexec`;
//!   - a `tmpfs` or `devpts` mount, a `sysfs` one when the spec has no network namespace
//!     (the container then stays in the monitor's, the host's), an `mqueue` one unless
//!     the spec asks for a new IPC namespace (the monitor opens it in the namespace the
//!     container joins, the pod's, or in its own, the host's, when there is none), whose
//!     options are only flags (`nosuid`, `nodev`, `noexec`, `ro`/`rw` — not `ro` on /dev,
//!     which libcontainer ignores there —, `strictatime`, `relatime`) and data
//!     libcontainer hands to `fsconfig` as they are (`mode=`, `size=`, `ptmxmode=`,
//!     `gid=`, `newinstance`);
//!
//!   whose destination is a clean absolute path that no mount before it in the spec is
//!   below and no other mount is on or above — but a filesystem taken before it as its
//!   direct parent (/dev/pts in /dev), which the monitor mounts first. (Paths are
//!   compared as written: a mount before it whose destination leads below it through a
//!   symlink in the image, which libcontainer's order would hide under it, is made on it
//!   instead; proxrt's specs list parents first, so only a link to a deeper place can.)
//! - the monitor ([`detach`]) gives a mount back (and rewrites config.json, which only
//!   then differs from what the daemon wrote) unless the rootfs is a mount of its own, a
//!   bind's source is still a regular file or a directory, and the destination's
//!   directory resolves inside the rootfs without a symlink and holds by that name a
//!   regular file or nothing for a file, a directory for anything else — the cases
//!   libcontainer resolves the same way, symlinks and all, and where it creates the file
//!   just as the monitor does (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0644 under the same
//!   umask). A mount in a filesystem the monitor mounts goes back with it; else the
//!   monitor makes its place in the new filesystem as libcontainer would (that file, or a
//!   directory of mode 0755);
//! - the monitor makes the rootfs mount private in the view before attaching (already so
//!   on a proxrt host, whose mount namespace shares nothing): nothing attached there can
//!   reach another namespace. A filesystem made by `fsmount` is private, as libcontainer's.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};
use rustix::fs::{fstat, mkdirat, openat, statat, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    open_tree, FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags,
};
use serde::{Deserialize, Serialize};

use super::mount_attr::{self, MountAttr};

/// A mount the daemon took out of the spec for the monitor to attach.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Premount {
    /// Its place in the spec's list of mounts as the daemon made it: given back there.
    pub index: usize,
    pub mount: Mount,
}

/// What a bind's source is, as the daemon sees it (the monitor checks its clone again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    File,
    Dir,
}

/// Options a bind premount may have (anything else stays with libcontainer).
const BIND_OPTIONS: &[&str] = &[
    "bind", "rbind", "rprivate", "private", "ro", "rw", "nosuid", "nodev", "noexec",
];

/// Filesystems of no namespace: the same whichever process mounts them (`sysfs`, of the
/// mounting process's network namespace, is added when the container has none).
const FS_TYPES: &[&str] = &["tmpfs", "devpts"];

/// `mqueue`: of the IPC namespace of the process that opens it (`fsopen`).
const MQUEUE: &str = "mqueue";

/// A filesystem premount's flags (libcontainer's `mount_setattr`)…
const FS_FLAGS: &[&str] = &[
    "nosuid",
    "nodev",
    "noexec",
    "ro",
    "rw",
    "strictatime",
    "relatime",
];
/// …and its data, handed to `fsconfig` as they are: a flag, or a key of `key=value`.
const FS_DATA: &[&str] = &["newinstance"];
const FS_DATA_KEYS: &[&str] = &["mode", "size", "ptmxmode", "gid"];

/// Takes out of `spec` the mounts the monitor can attach as libcontainer would (module
/// doc); `kind_of` tells what a bind's source is (following symlinks, as libcontainer
/// canonicalizes sources). The rest of the spec's mounts keep their order.
pub fn take(spec: &mut Spec, kind_of: impl Fn(&Path) -> Option<SourceKind>) -> Vec<Premount> {
    if !spec_allows(spec) {
        return Vec::new();
    }
    let Some(mounts) = spec.mounts().clone() else {
        return Vec::new();
    };
    let host_net = !has_namespace(spec, LinuxNamespaceType::Network);
    // A new IPC namespace exists only once the runtime made it.
    let ipc_exists = namespace_path(spec, LinuxNamespaceType::Ipc) != Some(None);
    let mut chosen = vec![false; mounts.len()];
    for i in 0..mounts.len() {
        let m = &mounts[i];
        let fits = if is_bind(m) {
            bind_candidate(m) && m.source().as_deref().and_then(&kind_of).is_some()
        } else {
            fs_candidate(m, host_net, ipc_exists)
        };
        chosen[i] = fits && placed(&mounts, i, &chosen);
    }
    if !chosen.contains(&true) {
        return Vec::new();
    }
    let mut kept = Vec::with_capacity(mounts.len());
    let mut taken = Vec::new();
    for (index, mount) in mounts.into_iter().enumerate() {
        if chosen[index] {
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
    let mapped = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    let propagation = matches!(
        linux.rootfs_propagation().as_deref(),
        None | Some("slave") | Some("private")
    );
    !has_namespace(spec, LinuxNamespaceType::User)
        && !mapped
        && linux.mount_label().is_none()
        && propagation
}

fn has_namespace(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    namespace_path(spec, typ).is_some()
}

/// The spec's entry for namespace `typ`: None without one, `Some(None)` for a new one,
/// else the path of the one to join.
pub(crate) fn namespace_path(spec: &Spec, typ: LinuxNamespaceType) -> Option<Option<&Path>> {
    spec.linux()
        .iter()
        .flat_map(|l| l.namespaces().iter().flatten())
        .find(|n| n.typ() == typ)
        .map(|n| n.path().as_deref())
}

/// libcontainer's test: a bind by its type or its options.
fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// A bind with only the options in [`BIND_OPTIONS`], an explicit private propagation and
/// a clean absolute destination below `/`.
fn bind_candidate(m: &Mount) -> bool {
    let options = m.options().as_deref().unwrap_or_default();
    let bind = options.iter().any(|o| o == "bind" || o == "rbind");
    let private = options.iter().any(|o| o == "rprivate" || o == "private");
    let typ_ok = matches!(m.typ().as_deref(), None | Some("bind") | Some("none"));
    bind && private
        && typ_ok
        && options.iter().all(|o| BIND_OPTIONS.contains(&o.as_str()))
        && m.source().as_ref().is_some_and(|s| s.is_absolute())
        && clean_below_root(m.destination())
}

/// A filesystem of [`FS_TYPES`] (or `sysfs` on the host's network, `mqueue` of an IPC
/// namespace that exists) with only the options of [`FS_FLAGS`] and data of
/// [`FS_DATA`]/[`FS_DATA_KEYS`], a source `fsconfig` takes, and a clean absolute
/// destination below `/`.
fn fs_candidate(m: &Mount, host_net: bool, ipc_exists: bool) -> bool {
    let Some(typ) = m.typ().as_deref() else {
        return false;
    };
    let typ_ok =
        FS_TYPES.contains(&typ) || (typ == "sysfs" && host_net) || (typ == MQUEUE && ipc_exists);
    let dev = m.destination() == Path::new("/dev");
    let options = m.options().as_deref().unwrap_or_default();
    typ_ok
        && m.source().as_deref().and_then(Path::to_str).is_some()
        && options.iter().all(|o| fs_option(o) && !(dev && o == "ro"))
        && clean_below_root(m.destination())
}

fn fs_option(o: &str) -> bool {
    FS_FLAGS.contains(&o)
        || FS_DATA.contains(&o)
        || o.split_once('=')
            .is_some_and(|(k, v)| FS_DATA_KEYS.contains(&k) && !v.is_empty())
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

/// Whether `mounts[i]` can be attached before the runtime runs without changing what the
/// container sees: no mount before it is below it (it would be hidden by it instead of
/// on it), and no other mount is on or above it but a filesystem `chosen` before it as
/// its direct parent (attached first, then this one in it).
fn placed(mounts: &[Mount], i: usize, chosen: &[bool]) -> bool {
    let destination = mounts[i].destination();
    mounts.iter().enumerate().all(|(j, m)| {
        let other = m.destination();
        if j == i {
            true
        } else if destination.starts_with(other) {
            j < i && chosen[j] && !is_bind(m) && destination.parent() == Some(other.as_path())
        } else {
            j > i || !other.starts_with(destination)
        }
    })
}

/// A premount ready for [`attach`].
pub(crate) struct Detached {
    premount: Premount,
    what: What,
    /// Nothing by that name yet: made before attaching.
    create: bool,
}

/// What is attached.
enum What {
    /// A clone of a bind's source, a regular file.
    File(OwnedFd),
    /// A clone of a bind's source, a directory.
    Dir(OwnedFd),
    /// A new filesystem, made in the create's namespace; from this context when it had to
    /// be opened ahead (`mqueue`, in the container's IPC namespace).
    Fs(Option<OwnedFd>),
}

impl What {
    /// A bind's clone; None for a filesystem (made only when attached).
    fn clone_of_source(&self) -> Option<&OwnedFd> {
        match self {
            What::File(tree) | What::Dir(tree) => Some(tree),
            What::Fs(_) => None,
        }
    }
}

impl Detached {
    /// Its place in the spec's list as the daemon made it.
    pub(crate) fn index(&self) -> usize {
        self.premount.index
    }
}

/// In the host's mount namespace, before the create's own (`container/view.rs`): clones
/// each bind's source, opens an `mqueue` in the IPC namespace `ipc` the container joins
/// (this process's own when None) and checks each destination in `rootfs`. Returns what
/// [`attach`] attaches and the premounts to give back to the spec (module doc); an error
/// only when this process could not return to its own IPC namespace.
pub(crate) fn detach(
    mut premounts: Vec<Premount>,
    rootfs: &Path,
    ipc: Option<&Path>,
) -> Result<(Vec<Detached>, Vec<Premount>), String> {
    if premounts.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let root = match crate::mounts::is_mount_root(rootfs) {
        Ok(true) => open_dir(rootfs),
        _ => return Ok((Vec::new(), premounts)),
    };
    let Ok(root) = root else {
        return Ok((Vec::new(), premounts));
    };
    // Parents first: a mount in a filesystem premount follows that premount.
    premounts.sort_by_key(|p| p.index);
    let destinations: Vec<PathBuf> = premounts
        .iter()
        .map(|p| p.mount.destination().clone())
        .collect();
    let mut detached: Vec<Detached> = Vec::with_capacity(premounts.len());
    let mut back = Vec::new();
    for premount in premounts {
        let parent = premount.mount.destination().parent();
        let inside = parent.filter(|p| destinations.iter().any(|d| d == p));
        let ready = match inside {
            // In a filesystem attached just before it, still empty there.
            Some(parent) => {
                let in_fs = detached.iter().any(|d| {
                    d.premount.mount.destination() == parent && matches!(d.what, What::Fs(_))
                });
                match in_fs {
                    true => detach_one(&premount, None, ipc)?,
                    false => None,
                }
            }
            None => detach_one(&premount, Some(root.as_fd()), ipc)?,
        };
        match ready {
            Some((what, create)) => detached.push(Detached {
                premount,
                what,
                create,
            }),
            None => back.push(premount),
        }
    }
    Ok((detached, back))
}

/// What to attach for `premount`, and whether its destination is to be made: always in a
/// new filesystem (`root` None), else where `root` has nothing by that name for a file.
/// None: given back; an error only from [`mqueue_context`].
fn detach_one(
    premount: &Premount,
    root: Option<BorrowedFd<'_>>,
    ipc: Option<&Path>,
) -> Result<Option<(What, bool)>, String> {
    let what = if is_bind(&premount.mount) {
        let Some(what) = clone_source(premount) else {
            return Ok(None);
        };
        what
    } else if premount.mount.typ().as_deref() == Some(MQUEUE) {
        match mqueue_context(ipc)? {
            Some(context) => What::Fs(Some(context)),
            None => return Ok(None),
        }
    } else {
        What::Fs(None)
    };
    let Some(root) = root else {
        return Ok(Some((what, true)));
    };
    Ok(destination_is_ready(premount, root, &what).map(|create| (what, create)))
}

/// A clone of a bind's source (a regular file or a directory), as libcontainer clones it.
fn clone_source(premount: &Premount) -> Option<What> {
    let source = premount.mount.source().as_ref()?;
    // As libcontainer clones: with what is mounted on it for `rbind`.
    let options = premount.mount.options().as_deref().unwrap_or_default();
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if options.iter().any(|o| o == "rbind") {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = open_tree(rustix::fs::CWD, source.as_path(), flags).ok()?;
    match file_type(&tree)? {
        FileType::RegularFile => Some(What::File(tree)),
        FileType::Directory => Some(What::Dir(tree)),
        _ => None,
    }
}

/// Whether `premount`'s destination in `root` is one the monitor attaches on as
/// libcontainer would: Some(true) when there is nothing by that name yet (for a file).
fn destination_is_ready(premount: &Premount, root: BorrowedFd<'_>, what: &What) -> Option<bool> {
    let (parent, name) = split(premount.mount.destination())?;
    let dir = resolve_dir(root, &parent).ok()?;
    let found = match statat(&dir, name.as_path(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Some(FileType::from_raw_mode(st.st_mode)),
        Err(rustix::io::Errno::NOENT) => None,
        Err(_) => return None,
    };
    let create = match (&what, found) {
        (What::File(_), Some(FileType::RegularFile)) => false,
        (What::File(_), None) => true,
        (What::Dir(_) | What::Fs(_), Some(FileType::Directory)) => false,
        _ => return None,
    };
    Some(create)
}

/// `fsopen("mqueue")` in the IPC namespace at `ipc` (the pod's: the queues are its),
/// then back in this process's own; in this process's own, the host's, when `ipc` is
/// None (the container stays in it). None when it cannot (given back to libcontainer); an
/// error when this process could not return to its own IPC namespace.
fn mqueue_context(ipc: Option<&Path>) -> Result<Option<OwnedFd>, String> {
    let open = || fsopen(MQUEUE, FsOpenFlags::FSOPEN_CLOEXEC).ok();
    let Some(ipc) = ipc else {
        return Ok(open());
    };
    let own = std::fs::File::open("/proc/thread-self/ns/ipc");
    let theirs = std::fs::File::open(ipc);
    let (Ok(own), Ok(theirs)) = (own, theirs) else {
        return Ok(None);
    };
    if setns(theirs.as_fd(), CloneFlags::CLONE_NEWIPC).is_err() {
        return Ok(None);
    }
    let context = open();
    setns(own.as_fd(), CloneFlags::CLONE_NEWIPC)
        .map_err(|e| format!("return to the monitor's IPC namespace: {e}"))?;
    Ok(context)
}

/// In the create's mount namespace: makes the rootfs mount private, then attaches each
/// premount on its destination in `rootfs` (or in the filesystem premount it is in),
/// making the destination first where there was none, with the spec's flags.
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
    // The filesystems attached so far, by destination: the premounts in them follow.
    let mut filesystems: Vec<(PathBuf, OwnedFd)> = Vec::new();
    for d in detached {
        let destination = d.premount.mount.destination().clone();
        let in_rootfs =
            |e: io::Error| format!("mount {} in the rootfs: {e}", destination.display());
        let (parent, name) = split(&destination)
            .ok_or_else(|| in_rootfs(io::Error::other("destination has no parent")))?;
        let resolved;
        let dir = match filesystems
            .iter()
            .find(|(at, _)| destination.parent() == Some(at.as_path()))
        {
            Some((_, fs)) => fs.as_fd(),
            None => {
                resolved = resolve_dir(root.as_fd(), &parent).map_err(in_rootfs)?;
                resolved.as_fd()
            }
        };
        if let Some(fs) = attach_one(d, dir, &name).map_err(in_rootfs)? {
            filesystems.push((destination, fs));
        }
    }
    Ok(())
}

/// Attaches `d` on `name` in `dir`; returns the filesystem it mounted, if it made one.
fn attach_one(mut d: Detached, dir: BorrowedFd<'_>, name: &Path) -> io::Result<Option<OwnedFd>> {
    let mount = &d.premount.mount;
    let options = mount.options().as_deref().unwrap_or_default();
    if d.create {
        match d.what {
            // As libcontainer's init would (its umask is this process's).
            What::File(_) => {
                openat(
                    dir,
                    name,
                    OFlags::RDONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )?;
            }
            What::Dir(_) | What::Fs(_) => mkdirat(dir, name, Mode::from_raw_mode(0o755))?,
        }
    }
    let target = openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let want = match d.what {
        What::File(_) => FileType::RegularFile,
        What::Dir(_) | What::Fs(_) => FileType::Directory,
    };
    if file_type(&target) != Some(want) {
        return Err(io::Error::other(format!("not a {want:?} in the rootfs")));
    }
    let made = match d.what {
        What::Fs(ref mut context) => Some(new_filesystem(mount, options, context.take())?),
        What::File(_) | What::Dir(_) => None,
    };
    let tree = made
        .as_ref()
        .or(d.what.clone_of_source())
        .ok_or_else(|| io::Error::other("nothing to attach"))?;
    move_mount(
        tree,
        "",
        &target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?;
    if made.is_none() {
        bind_attributes(tree.as_fd(), options)?;
    }
    Ok(made)
}

/// A new filesystem of `mount`'s type and source with its data options, as libcontainer
/// makes it (`fsopen`, unless `context` was opened ahead, `fsconfig` for each in order,
/// `fsmount`), with its flags set.
fn new_filesystem(
    mount: &Mount,
    options: &[String],
    context: Option<OwnedFd>,
) -> io::Result<OwnedFd> {
    let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
    let typ = mount.typ().as_deref().ok_or_else(invalid)?;
    let source = mount
        .source()
        .as_deref()
        .and_then(Path::to_str)
        .ok_or_else(invalid)?;
    let fs = match context {
        Some(context) => context,
        None => fsopen(typ, FsOpenFlags::FSOPEN_CLOEXEC)?,
    };
    fsconfig_set_string(&fs, "source", source)?;
    for o in options.iter().filter(|o| !FS_FLAGS.contains(&o.as_str())) {
        match o.split_once('=') {
            Some((key, value)) => fsconfig_set_string(&fs, key, value)?,
            None => fsconfig_set_flag(&fs, o.as_str())?,
        }
    }
    fsconfig_create(&fs)?;
    let mounted = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
    let here = libc::AT_EMPTY_PATH as libc::c_uint;
    mount_attr::set(
        mounted.as_fd(),
        Path::new(""),
        here,
        &mount_attr::of_filesystem(options),
    )?;
    Ok(mounted)
}

/// libcontainer's flags on an attached bind itself; then the propagation
/// monitor/propagation.rs sets on libcontainer's binds (the last option says; `rprivate`:
/// the whole tree).
fn bind_attributes(tree: BorrowedFd<'_>, options: &[String]) -> io::Result<()> {
    let here = libc::AT_EMPTY_PATH as libc::c_uint;
    let flags = MountAttr {
        attr_set: mount_attr::flags_of(options),
        ..MountAttr::default()
    };
    mount_attr::set(tree, Path::new(""), here, &flags)?;
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
    mount_attr::set(tree, Path::new(""), here | recursive, &private)
}

fn file_type(fd: &OwnedFd) -> Option<FileType> {
    fstat(fd).ok().map(|st| FileType::from_raw_mode(st.st_mode))
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

    /// What a source is: a file when in `files`, else a directory when in `dirs`.
    fn kinds<'a>(files: &'a [&str], dirs: &'a [&str]) -> impl Fn(&Path) -> Option<SourceKind> + 'a {
        move |p| {
            let is = |list: &[&str]| list.iter().any(|f| p == Path::new(f));
            if is(files) {
                Some(SourceKind::File)
            } else if is(dirs) {
                Some(SourceKind::Dir)
            } else {
                None
            }
        }
    }

    fn taken(spec: &mut Spec, files: &[&str]) -> Vec<String> {
        let taken = take(spec, kinds(files, &[]));
        taken
            .iter()
            .map(|p| p.mount.destination().display().to_string())
            .collect()
    }

    /// The fixture's spec with its Linux part changed by `change`.
    fn spec_with_linux(change: impl FnOnce(&mut oci_spec::runtime::Linux)) -> Spec {
        let mut spec = spec_of(Fixture::new());
        let mut linux = spec.linux().clone().unwrap();
        change(&mut linux);
        spec.set_linux(Some(linux));
        spec
    }

    /// The fixture's spec without its namespace `typ`, and with `entry` instead when some.
    fn spec_with_namespace(typ: LinuxNamespaceType, entry: Option<Option<&str>>) -> Spec {
        spec_with_linux(|linux| {
            let mut namespaces: Vec<_> = linux
                .namespaces()
                .iter()
                .flatten()
                .filter(|n| n.typ() != typ)
                .cloned()
                .collect();
            if let Some(path) = entry {
                let mut ns = LinuxNamespaceBuilder::default().typ(typ);
                if let Some(path) = path {
                    ns = ns.path(path);
                }
                namespaces.push(ns.build().unwrap());
            }
            linux.set_namespaces(Some(namespaces));
        })
    }

    /// `spec` with the options of its mount on `destination` replaced by `options`.
    fn with_options(mut spec: Spec, destination: &str, options: &[&str]) -> Spec {
        let mut mounts = spec.mounts().clone().unwrap();
        let at = mounts
            .iter()
            .position(|m| m.destination() == Path::new(destination))
            .unwrap();
        mounts[at].set_options(Some(options.iter().map(|o| o.to_string()).collect()));
        spec.set_mounts(Some(mounts));
        spec
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

    /// The pod's shm directory in the fixture.
    const SHM: &str = "/run/proxrt/pod/shm";

    #[test]
    fn the_pods_files_and_dev_are_taken_and_the_rest_keeps_its_order() {
        let mut spec = spec_of(Fixture::new());
        let before = spec.mounts().clone().unwrap();
        let got = take(&mut spec, kinds(&FILES, &[SHM]));
        let got: Vec<String> = got
            .iter()
            .map(|p| p.mount.destination().display().to_string())
            .collect();
        let expected = [
            "/dev",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/dev/shm",
            "/dev/pts",
            "/dev/mqueue",
        ];
        assert_eq!(got, expected);
        let after = spec.mounts().clone().unwrap();
        let rest: Vec<Mount> = before
            .iter()
            .filter(|m| !expected.contains(&m.destination().to_str().unwrap()))
            .cloned()
            .collect();
        assert_eq!(after, rest);
        // /proc, /sys (the pod has a network namespace) and the cgroups belong to the
        // container's namespaces: libcontainer's init mounts them.
        assert_eq!(destinations(&after), ["/proc", "/sys", "/sys/fs/cgroup"]);
    }

    #[test]
    fn sys_is_taken_only_on_the_hosts_network() {
        let mut spec = spec_with_namespace(LinuxNamespaceType::Network, None);
        let got = taken(&mut spec, &FILES);
        assert!(got.contains(&"/sys".to_string()), "{got:?}");
        // The cgroups on it stay: libcontainer mounts them on the monitor's sysfs.
        assert!(destinations(spec.mounts().as_ref().unwrap()).contains(&"/sys/fs/cgroup".into()));
    }

    #[test]
    fn mqueue_is_taken_unless_its_ipc_namespace_is_yet_to_be_made() {
        for (ipc, expected) in [
            (Some(Some("/proc/100/ns/ipc")), true),
            (None, true),
            (Some(None), false),
        ] {
            let mut spec = spec_with_namespace(LinuxNamespaceType::Ipc, ipc);
            let got = taken(&mut spec, &FILES);
            let mqueue = got.contains(&"/dev/mqueue".to_string());
            assert_eq!(mqueue, expected, "{ipc:?}");
        }
    }

    #[test]
    fn a_filesystem_with_other_options_stays_and_so_does_what_is_in_it() {
        let with_dev_options = |options: &[&str]| {
            let mut spec = with_options(spec_of(Fixture::new()), "/dev", options);
            take(&mut spec, kinds(&FILES, &[SHM]))
                .iter()
                .map(|p| p.mount.destination().display().to_string())
                .collect::<Vec<_>>()
        };
        let taken_all = with_dev_options(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert!(taken_all.contains(&"/dev/pts".to_string()));
        for options in [
            vec![
                "nosuid",
                "strictatime",
                "mode=755",
                "size=65536k",
                "nr_inodes=9",
            ],
            vec!["nosuid", "noatime", "mode=755"],
            // libcontainer mounts /dev read-write whatever it says: left to it.
            vec!["nosuid", "ro", "mode=755"],
            vec!["nosuid", "mode="],
        ] {
            let got = with_dev_options(&options);
            for d in ["/dev", "/dev/pts", "/dev/shm"] {
                assert!(!got.contains(&d.to_string()), "{options:?}: {got:?}");
            }
            assert_eq!(got, POD_FILES, "{options:?}");
        }
    }

    #[test]
    fn only_a_direct_child_of_a_filesystem_taken_before_it_is_taken_in_it() {
        let m = |destination: &str, typ: &str, source: &str, options: &[&str]| {
            oci_spec::runtime::MountBuilder::default()
                .destination(destination)
                .typ(typ)
                .source(source)
                .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                .build()
                .unwrap()
        };
        let tmpfs = |d: &str| m(d, "tmpfs", "tmpfs", &["nosuid", "mode=755"]);
        let file = |d: &str| m(d, "bind", "/srv/f", &["rbind", "rprivate", "ro"]);
        let dir = |d: &str| m(d, "bind", "/srv/d", &["rbind", "rprivate"]);
        let cases: Vec<(Vec<Mount>, Vec<&str>)> = vec![
            (vec![tmpfs("/a"), file("/a/f")], vec!["/a", "/a/f"]),
            (vec![tmpfs("/a"), dir("/a/d")], vec!["/a", "/a/d"]),
            // Not directly in it: left to libcontainer, which makes the directory.
            (vec![tmpfs("/a"), file("/a/d/f")], vec!["/a"]),
            // In a bind: its content is not the monitor's to make.
            (vec![dir("/a"), file("/a/f")], vec!["/a"]),
            // A mount in it before it: hidden by it (in libcontainer's order too), not on it.
            (vec![file("/a/f"), tmpfs("/a")], vec![]),
            (vec![tmpfs("/a"), tmpfs("/a")], vec![]),
            // What stays in it is made by libcontainer on the monitor's filesystem.
            (
                vec![tmpfs("/a"), m("/a/p", "proc", "proc", &[]), file("/a/f")],
                vec!["/a", "/a/f"],
            ),
        ];
        for (mounts, expected) in cases {
            let mut spec = spec_of(Fixture::new());
            spec.set_mounts(Some(mounts.clone()));
            let got: Vec<String> = take(&mut spec, kinds(&["/srv/f"], &["/srv/d"]))
                .iter()
                .map(|p| p.mount.destination().display().to_string())
                .collect();
            assert_eq!(got, expected, "{:?}", destinations(&mounts));
        }
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
        let premounts = take(&mut spec, kinds(&files, &[SHM]));
        // /dev, /dev/pts, /dev/shm, /dev/mqueue, the pod's three files and two volumes.
        assert_eq!(premounts.len(), 9, "{premounts:#?}");
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
    fn a_source_neither_file_nor_directory_stays_with_libcontainer() {
        let mut spec = spec_of(Fixture::new());
        assert_eq!(taken(&mut spec, &[]), ["/dev", "/dev/pts", "/dev/mqueue"]);
        let left = destinations(spec.mounts().as_ref().unwrap());
        for d in POD_FILES.iter().chain(&["/dev/shm"]) {
            assert!(left.contains(&d.to_string()), "{d}: {left:?}");
        }
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
        let premounts = take(
            &mut spec,
            kinds(&[FILES.as_slice(), &["/srv/v"]].concat(), &[]),
        );
        let hosts = premounts
            .iter()
            .find(|p| p.mount.destination() == Path::new("/etc/hosts"))
            .unwrap();
        assert_eq!(hosts.mount.source().as_deref(), Some(Path::new("/srv/v")));
        // Beside it is fine.
        let mut spec = spec_with_volume_on("/etcetera");
        let got = taken(&mut spec, &FILES);
        assert!(
            POD_FILES.iter().all(|f| got.contains(&f.to_string())),
            "{got:?}"
        );
    }

    #[test]
    fn only_private_binds_with_plain_options_are_taken() {
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
            let mut spec = with_options(spec_of(Fixture::new()), "/etc/hosts", &options);
            let got = taken(&mut spec, &FILES);
            let hosts = got.contains(&"/etc/hosts".to_string());
            assert_eq!(hosts, expected, "{options:?}");
        }
    }

    #[test]
    fn nothing_is_taken_with_a_user_namespace_a_mount_label_or_shared_root_propagation() {
        let mut spec = spec_with_namespace(LinuxNamespaceType::User, Some(None));
        assert!(taken(&mut spec, &FILES).is_empty());

        // libcontainer labels what it mounts, but proc and sysfs, with a mount label.
        let mut spec = spec_with_linux(|linux| {
            linux.set_mount_label(Some("system_u:object_r:container_file_t:s0".into()));
        });
        assert!(taken(&mut spec, &FILES).is_empty());

        // The pod's three files, /dev, /dev/pts and /dev/mqueue.
        for (propagation, expected) in [
            (None, 6),
            (Some("slave"), 6),
            (Some("private"), 6),
            (Some("shared"), 0),
        ] {
            let mut spec = spec_with_linux(|linux| {
                linux.set_rootfs_propagation(propagation.map(String::from));
            });
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
