//! The host's mount table (`/proc/self/mountinfo`) as the daemon reads it, and the
//! removal of a directory tree that may still hold mounts: a crash can leave an overlay,
//! a tmpfs or a namespace file mounted under a container's or pod's directory, and a
//! plain recursive delete would walk into them (issue 12, item 8).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
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

/// Removes `dir` and all it holds, never inside a mount: every mount below it is
/// detached first, and the walk refuses (as `rm --one-file-system`) to descend into a
/// directory of another filesystem rather than delete what is mounted there. A missing
/// `dir` is fine.
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    let top = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    detach_under(dir)?;
    if !top.is_dir() {
        return fs::remove_file(dir);
    }
    remove_within(dir, top.dev())
}

fn remove_within(dir: &Path, dev: u64) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            if meta.dev() != dev {
                return Err(io::Error::other(format!(
                    "{} is another filesystem (a mount that would not go): not removed",
                    path.display()
                )));
            }
            remove_within(&path, dev)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Takes a directory out of its store at once (a rename into `.removing-<name>` beside
/// it, which no loader reads), then removes it with `remove_tree`. A crash in between
/// leaves only the `.removing-` directory, which the next start removes. Missing is fine.
pub fn retire_tree(dir: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return remove_tree(dir);
    };
    let retired = parent.join(format!("{RETIRED_PREFIX}{}", name.to_string_lossy()));
    match fs::rename(dir, &retired) {
        Ok(()) => remove_tree(&retired),
        Err(e) if e.kind() == io::ErrorKind::NotFound => remove_tree(&retired),
        Err(e) => Err(e),
    }
}

/// The name prefix of a directory being removed by `retire_tree`.
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
        retire_tree(&tree).unwrap();
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
        retire_tree(&tree).unwrap();
    }
}
