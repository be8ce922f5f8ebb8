//! The host's mount table (`/proc/self/mountinfo`) as the daemon reads it, and the
//! removal of a directory tree that may still hold mounts: a crash can leave an overlay,
//! a tmpfs or a namespace file mounted under a container's or pod's directory, and a
//! plain recursive delete would walk into them (issue 12, item 8).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points of `mountinfo` at `dir` or below it, deepest first (the order in
/// which they can be unmounted); a point mounted twice is listed twice.
pub fn points_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    // Later mounts stack on earlier ones: unmount in reverse order, children first.
    points.reverse();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

/// Detaches every mount at or below `dir` (lazily: a busy one goes from the namespace at
/// once and from the kernel when its last user does).
pub fn detach_under(dir: &Path) -> io::Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    for point in points_under(&mountinfo, dir) {
        match umount2(&point, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("unmount {}: {e}", point.display()),
                ))
            }
        }
    }
    Ok(())
}

/// Removes `dir` and all it holds, never inside a mount: every mount at or below it is
/// detached, and the walk refuses (as `rm --one-file-system`) to descend into a directory
/// of another filesystem rather than delete what is mounted there. A missing `dir` is
/// fine.
///
/// The walk finds the mounts itself: the kernel marks each mount's root (`statx`'s
/// `STATX_ATTR_MOUNT_ROOT`, Linux 5.8+), so an entry with a mount on it is detached before
/// it is looked at, in the one `statx` the walk makes per entry anyway. Reading the mount
/// table instead costs in proportion to every mount on the host (two per pod: with 500
/// pods, ~1 ms per removal, several per pod lifecycle); it is what a kernel that does
/// not mark mount roots gets.
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    let mut top = match uncover(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if top.mount_root.is_none() {
        // The walk cannot see mounts: detach them all from the mount table first.
        detach_under(dir)?;
        top = match stat_entry(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
    }
    if !top.dir {
        return gone_is_fine(fs::remove_file(dir));
    }
    remove_within(dir, top.dev)
}

/// What the walk needs to know of a path (not followed), from one `statx`.
struct Entry {
    dir: bool,
    dev: (u32, u32),
    /// Whether a mount sits on it; `None` when the kernel does not say (before 5.8).
    mount_root: Option<bool>,
}

fn stat_entry(path: &Path) -> io::Result<Entry> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))?;
    // SAFETY: all-zero is a valid statx buffer; the kernel fills it.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and buffer, both alive for the call.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE,
            &mut stx,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let mount_root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    Ok(Entry {
        dir: u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFDIR,
        dev: (stx.stx_dev_major, stx.stx_dev_minor),
        mount_root: (stx.stx_attributes_mask & mount_root != 0)
            .then_some(stx.stx_attributes & mount_root != 0),
    })
}

/// Detaches whatever is mounted on `path` (mounts may be stacked there) and returns what
/// is left at `path`.
fn uncover(path: &Path) -> io::Result<Entry> {
    // More stacked mounts than this is not something proxrt or a crash makes.
    for _ in 0..64 {
        let entry = stat_entry(path)?;
        if entry.mount_root != Some(true) {
            return Ok(entry);
        }
        match umount2(path, MntFlags::MNT_DETACH) {
            // EINVAL: no longer a mount (another thread detached it meanwhile, as
            // CreateContainer's release of the daemon's rootfs mount may): stat again.
            Ok(()) | Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("unmount {}: {e}", path.display()),
                ))
            }
        }
    }
    Err(io::Error::other(format!(
        "{}: still a mount after 64 unmounts",
        path.display()
    )))
}

/// What is gone already is fine at every step: another party may remove parts of the
/// tree at the same time (a container's monitor removes its socket and state files while
/// it exits, which may be while RemoveContainer removes its dir).
fn remove_within(dir: &Path, dev: (u32, u32)) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let entry = match uncover(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if entry.dir {
            if entry.dev != dev {
                return Err(io::Error::other(format!(
                    "{} is another filesystem (a mount that would not go): not removed",
                    path.display()
                )));
            }
            remove_within(&path, dev)?;
        } else {
            gone_is_fine(fs::remove_file(&path))?;
        }
    }
    gone_is_fine(fs::remove_dir(dir))
}

fn gone_is_fine(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether a mount sits on `path` (not followed); false when the kernel does not say
/// (before Linux 5.8): callers then take the path that needs no such knowledge.
pub fn is_mount_root(path: &Path) -> io::Result<bool> {
    Ok(stat_entry(path)?.mount_root == Some(true))
}

/// Makes `dir` a private mount of its own (bound onto itself), so that everything later
/// mounted below it can be detached in one call in another mount namespace
/// (`monitor::container::view`). Already one: only made private again. Returns whether
/// `dir` is its own mount now: not when mounts are already below it (pods of a daemon
/// from before this existed: a bind over them would hide them from their removal) or
/// when the kernel cannot tell mount roots (before 5.8). Reads the mount table: for
/// startup only.
pub fn make_own_mount(dir: &Path) -> io::Result<bool> {
    use nix::mount::{mount, MsFlags};
    let private = |dir: &Path| {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("make {} private: {e}", dir.display()),
            )
        })
    };
    match stat_entry(dir)?.mount_root {
        None => return Ok(false),
        Some(true) => return private(dir).map(|()| true),
        Some(false) => {}
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    if !points_under(&mountinfo, dir).is_empty() {
        return Ok(false);
    }
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("bind {} onto itself: {e}", dir.display()),
        )
    })?;
    private(dir).map(|()| true)
}

/// Undoes [`make_own_mount`] when nothing is left below `dir` (a daemon stopping with no
/// pods); with pods left, the mount stays for the daemon that finds them.
pub fn release_own_mount(dir: &Path) -> io::Result<()> {
    if !is_mount_root(dir)? || fs::read_dir(dir)?.next().is_some() {
        return Ok(());
    }
    umount2(dir, MntFlags::MNT_DETACH).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("unmount {}: {e}", dir.display()),
        )
    })
}

/// Takes a directory out of its store at once: renames it into `.removing-<name>` beside
/// it, which no loader reads, and returns what is left to remove (that directory; the
/// `.removing-` one an earlier try left when `dir` is gone already; `dir` itself when it
/// has no parent to be renamed in). A crash before the removal leaves only the
/// `.removing-` directory, which the next start removes.
pub fn retire(dir: &Path) -> io::Result<PathBuf> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Ok(dir.to_owned());
    };
    let retired = parent.join(format!("{RETIRED_PREFIX}{}", name.to_string_lossy()));
    match fs::rename(dir, &retired) {
        Ok(()) => Ok(retired),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(retired),
        Err(e) => Err(e),
    }
}

/// [`retire`] now, the removal beside the caller's answer (a blocking task; the caller
/// runs in the daemon's runtime): a removed container's or pod's directory is out of the
/// store once this returns, and its files (a writable layer with whatever the container
/// wrote: ~1 ms on this VM's ext4 for a busybox container, unbounded for a large one) go
/// after the answer. A failed removal is logged; a daemon stopped before it ran leaves
/// the `.removing-` directory, which the next start removes.
pub fn retire_tree_later(dir: &Path) -> io::Result<()> {
    let retired = retire(dir)?;
    tokio::task::spawn_blocking(move || {
        if let Err(e) = remove_tree(&retired) {
            tracing::warn!(dir = %retired.display(), error = %e, "remove a retired directory");
        }
    });
    Ok(())
}

/// The name prefix of a directory being removed (`retire`).
pub const RETIRED_PREFIX: &str = ".removing-";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b\\c"), r"/a b\\c");
        assert_eq!(unescape(r"/x\011y\012z\134"), "/x\ty\nz\\");
        assert_eq!(unescape(r"/short\04"), r"/short\04");
    }

    #[test]
    fn points_below_a_dir_come_deepest_and_newest_first() {
        let info = "\
20 1 0:1 / / rw - ext4 /dev/vda rw
30 20 0:2 / /srv/c/abc/rootfs rw - overlay overlay rw
31 20 0:3 / /srv/c/abcdef rw - tmpfs tmpfs rw
32 20 0:4 / /srv/c/abc rw - tmpfs tmpfs rw
33 32 0:5 / /srv/c/abc/ns/net rw - nsfs nsfs rw
34 32 0:5 / /srv/c/abc/ns/net rw - nsfs nsfs rw
35 20 0:6 / /srv/c/a\\040b rw - tmpfs tmpfs rw
";
        let got = points_under(info, Path::new("/srv/c/abc"));
        let want: Vec<PathBuf> = [
            "/srv/c/abc/ns/net",
            "/srv/c/abc/ns/net",
            "/srv/c/abc/rootfs",
            "/srv/c/abc",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
        assert_eq!(
            points_under(info, Path::new("/srv/c/a b")),
            vec![PathBuf::from("/srv/c/a b")]
        );
    }

    #[test]
    fn a_tree_with_a_mount_in_it_is_removed_without_touching_what_was_mounted() {
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), "keep").unwrap();
        let tree = base.path().join("tree");
        let inner = tree.join("a/b");
        fs::create_dir_all(&inner).unwrap();
        fs::write(tree.join("a/file"), "x").unwrap();
        nix::mount::mount(
            Some(&outside),
            &inner,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        remove_tree(&retire(&tree).unwrap()).unwrap();
        assert!(!tree.exists());
        assert!(!base.path().join(".removing-tree").exists());
        assert_eq!(
            fs::read_to_string(outside.join("precious")).unwrap(),
            "keep"
        );
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(points_under(&mountinfo, base.path()).is_empty());
        // Gone already: fine.
        remove_tree(&tree).unwrap();
        remove_tree(&retire(&tree).unwrap()).unwrap();
    }

    /// Parts of the tree removed by someone else meanwhile (a monitor removing its own
    /// files as it exits) are not an error: four walks over one tree at once all succeed.
    #[test]
    fn a_tree_removed_by_several_at_once_is_removed_without_error() {
        let base = tempfile::tempdir().unwrap();
        for round in 0..5 {
            let tree = base.path().join(format!("tree{round}"));
            for d in 0..30 {
                let dir = tree.join(format!("d{d}/inner"));
                fs::create_dir_all(&dir).unwrap();
                for f in 0..20 {
                    fs::write(dir.join(format!("f{f}")), "x").unwrap();
                    fs::write(tree.join(format!("d{d}/g{f}")), "x").unwrap();
                }
            }
            let start = std::sync::Arc::new(std::sync::Barrier::new(4));
            let walks: Vec<_> = (0..4)
                .map(|_| {
                    let (tree, start) = (tree.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        remove_tree(&tree)
                    })
                })
                .collect();
            for walk in walks {
                walk.join().unwrap().unwrap();
            }
            assert!(!tree.exists(), "round {round}");
        }
    }

    /// A retired directory is out of its store (no longer under its name) before anything
    /// of it is removed; a second try finds what the first left.
    #[test]
    fn a_retired_tree_leaves_its_name_at_once_and_its_files_later() {
        let base = tempfile::tempdir().unwrap();
        let tree = base.path().join("abc");
        fs::create_dir_all(tree.join("upper/etc")).unwrap();
        fs::write(tree.join("upper/etc/file"), "x").unwrap();
        let retired = retire(&tree).unwrap();
        assert_eq!(retired, base.path().join(".removing-abc"));
        assert!(!tree.exists());
        assert_eq!(
            fs::read_to_string(retired.join("upper/etc/file")).unwrap(),
            "x"
        );
        // The daemon stopped before the removal: the next try names the same leftover.
        assert_eq!(retire(&tree).unwrap(), retired);
        remove_tree(&retired).unwrap();
        assert!(fs::read_dir(base.path()).unwrap().next().is_none());
    }

    #[test]
    fn stacked_mounts_file_mounts_and_a_mount_on_the_top_are_all_detached() {
        use nix::mount::{mount, MsFlags};
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), "keep").unwrap();
        let tree = base.path().join("tree");
        fs::create_dir_all(tree.join("shm")).unwrap();
        fs::write(tree.join("netns"), "").unwrap();
        // Two tmpfs stacked on one dir, the lower holding a file of its own.
        let tmpfs = || {
            mount(
                Some("tmpfs"),
                &tree.join("shm"),
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .unwrap()
        };
        tmpfs();
        fs::write(tree.join("shm/lower"), "x").unwrap();
        tmpfs();
        // A file bind-mounted on a file (as a pod's network namespace file is).
        let bind = |from: &Path, to: &Path| {
            mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap()
        };
        bind(&outside.join("precious"), &tree.join("netns"));
        // This kernel marks mount roots: the walk, not the mount table, finds them.
        assert_eq!(
            stat_entry(&tree.join("shm")).unwrap().mount_root,
            Some(true)
        );
        assert_eq!(
            stat_entry(&tree.join("netns")).unwrap().mount_root,
            Some(true)
        );
        assert_eq!(stat_entry(&tree).unwrap().mount_root, Some(false));
        // And the top itself a mount (outside bound over it), over the tree.
        let top = base.path().join("top");
        fs::create_dir(&top).unwrap();
        fs::write(top.join("under"), "x").unwrap();
        bind(&outside, &top);

        remove_tree(&tree).unwrap();
        remove_tree(&top).unwrap();
        assert!(!tree.exists() && !top.exists());
        assert_eq!(
            fs::read_to_string(outside.join("precious")).unwrap(),
            "keep"
        );
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(points_under(&mountinfo, base.path()).is_empty());
    }

    fn mounted_at(dir: &Path) -> usize {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        points_under(&mountinfo, dir)
            .iter()
            .filter(|p| *p == dir)
            .count()
    }

    #[test]
    fn the_pods_dir_is_bound_once_and_released_only_when_empty() {
        let base = tempfile::tempdir().unwrap();
        let pods = base.path().join("s");
        fs::create_dir(&pods).unwrap();
        assert!(make_own_mount(&pods).unwrap());
        assert!(is_mount_root(&pods).unwrap());
        // A second daemon start finds it and does not stack another.
        assert!(make_own_mount(&pods).unwrap());
        assert_eq!(mounted_at(&pods), 1);
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(pods.to_str().unwrap()))
            .unwrap();
        assert!(!line.contains("shared:"), "not private: {line}");

        fs::create_dir(pods.join("pod")).unwrap();
        release_own_mount(&pods).unwrap();
        assert!(is_mount_root(&pods).unwrap(), "released with a pod in it");
        fs::remove_dir(pods.join("pod")).unwrap();
        release_own_mount(&pods).unwrap();
        assert!(!is_mount_root(&pods).unwrap());
        release_own_mount(&pods).unwrap();
    }

    #[test]
    fn a_pods_dir_with_mounts_below_it_is_not_bound_over_them() {
        use nix::mount::{mount, MsFlags};
        let base = tempfile::tempdir().unwrap();
        let pods = base.path().join("s");
        let shm = pods.join("pod/shm");
        fs::create_dir_all(&shm).unwrap();
        mount(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let made = make_own_mount(&pods);
        let bound = is_mount_root(&pods);
        umount2(&shm, MntFlags::MNT_DETACH).unwrap();
        let _ = umount2(&pods, MntFlags::MNT_DETACH);
        assert!(!made.unwrap());
        assert!(!bound.unwrap());
    }
}
