//! `mount_setattr(2)`, which neither nix nor rustix wraps: what libcontainer sets on the
//! mounts it makes, for the mounts the monitor makes or fixes in its place
//! (`premount.rs`, `propagation.rs`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

// linux/mount.h
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub(crate) const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub(crate) const MOUNT_ATTR__ATIME: u64 = 0x70;
pub(crate) const MS_PRIVATE: u64 = 1 << 18;

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

/// The `MOUNT_ATTR_*` bits libcontainer's `mount_setattr` sets for a mount's options
/// `ro`/`rw` (the last wins), `nosuid`, `nodev`, `noexec`; other options set nothing here.
pub(crate) fn flags_of(options: &[String]) -> u64 {
    let mut set = 0;
    for o in options {
        match o.as_str() {
            "ro" => set |= MOUNT_ATTR_RDONLY,
            "rw" => set &= !MOUNT_ATTR_RDONLY,
            "nosuid" => set |= MOUNT_ATTR_NOSUID,
            "nodev" => set |= MOUNT_ATTR_NODEV,
            "noexec" => set |= MOUNT_ATTR_NOEXEC,
            _ => {}
        }
    }
    set
}

/// What libcontainer's `mount_setattr` sets on a new filesystem with `options`: the bits
/// of [`flags_of`], and `strictatime` (which takes the atime bits' place: set, with
/// `MOUNT_ATTR__ATIME` cleared); `relatime` is the kernel's default, nothing to set.
pub(crate) fn of_filesystem(options: &[String]) -> MountAttr {
    let mut attr = MountAttr {
        attr_set: flags_of(options),
        ..MountAttr::default()
    };
    if options.iter().any(|o| o == "strictatime") {
        attr.attr_set |= MOUNT_ATTR_STRICTATIME;
        attr.attr_clr |= MOUNT_ATTR__ATIME;
    }
    attr
}

/// `mount_setattr(dirfd, path, flags, attr)`; `flags`: `AT_EMPTY_PATH`, `AT_RECURSIVE`,
/// `AT_SYMLINK_NOFOLLOW`.
pub(crate) fn set(
    dirfd: BorrowedFd<'_>,
    path: &Path,
    flags: libc::c_uint,
    attr: &MountAttr,
) -> io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` is NUL-terminated and `attr` points to a live `struct mount_attr` of
    // the size passed; the kernel only reads both.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_libcontainers() {
        let o = |v: &[&str]| flags_of(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(o(&["rbind", "rprivate", "rw"]), 0);
        assert_eq!(o(&["rbind", "rprivate", "ro"]), MOUNT_ATTR_RDONLY);
        assert_eq!(o(&["ro", "rw"]), 0, "the last of ro/rw wins");
        assert_eq!(o(&["rw", "ro"]), MOUNT_ATTR_RDONLY);
        assert_eq!(
            o(&["nosuid", "nodev", "noexec", "relatime"]),
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC
        );
    }

    #[test]
    fn a_new_filesystems_attributes_are_libcontainers() {
        let o = |v: &[&str]| of_filesystem(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        // /dev as libcontainer sets it (strace of its init): NOSUID|STRICTATIME, atime
        // bits cleared.
        let dev = o(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(dev.attr_set, MOUNT_ATTR_NOSUID | MOUNT_ATTR_STRICTATIME);
        assert_eq!(dev.attr_clr, MOUNT_ATTR__ATIME);
        let sys = o(&["nosuid", "noexec", "nodev", "ro"]);
        assert_eq!(
            sys,
            MountAttr {
                attr_set: MOUNT_ATTR_RDONLY
                    | MOUNT_ATTR_NOSUID
                    | MOUNT_ATTR_NODEV
                    | MOUNT_ATTR_NOEXEC,
                ..MountAttr::default()
            }
        );
        assert_eq!(o(&["relatime", "rw"]), MountAttr::default());
    }
}
