//! The per-entry work of unpacking: resolving parents in the root, creating, replacing and
//! removing entries, whiteouts, opaque markers, metadata and the deferred directory mtimes.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use tar::EntryType;

use super::sys;
use super::{
    c_name, clean_path, errno, fs_error, refused, split_parent, Meta, UnpackError, UnpackStats,
    OPAQUE_XATTR, WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX,
};

/// Where to set an entry's xattrs: an open fd, or a name in a parent dirfd (symlinks and
/// device nodes, which must not be opened for real).
enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    Name(BorrowedFd<'a>, &'a CStr),
}

/// A directory mtime to set once everything inside it exists.
pub(super) struct DirTime {
    ino: libc::ino_t,
    mtime: libc::timespec,
}

pub(super) struct Unpacker {
    /// `dest`, the root every layer path is resolved in.
    pub(super) root: OwnedFd,
    /// The last parent directory resolved: tar entries come grouped by directory, so this one
    /// slot saves most `openat2` calls. Cleared whenever anything is removed: a removed
    /// directory or symlink may be on a cached path (not with one slot, which holds the removed
    /// entry's own parent, but with any bigger cache).
    pub(super) parent: Option<(Vec<u8>, Rc<OwnedFd>)>,
    pub(super) dir_times: BTreeMap<Vec<u8>, DirTime>,
    pub(super) buf: Vec<u8>,
    pub(super) stats: UnpackStats,
}

impl Unpacker {
    pub(super) fn unpack_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let kind = match entry.header().entry_type() {
            EntryType::XGlobalHeader => return Ok(()),
            // Pre-POSIX tars mark directories as regular files named with a trailing slash
            // (Go's archive/tar reads them the same way).
            EntryType::Regular if raw_path.ends_with(b"/") => EntryType::Directory,
            kind => kind,
        };
        let path = clean_path(&raw_path);
        let meta = Meta::from_entry(entry, shown, &mut self.stats.skipped)?;
        if path.is_empty() {
            if kind != EntryType::Directory {
                return Err(refused(shown, "a non-directory entry at the layer root"));
            }
            return self.apply_root_meta(&meta, shown);
        }
        let (parent, name) = split_parent(&path);
        for comp in parent.split(|&b| b == b'/') {
            if comp.starts_with(WHITEOUT_META_PREFIX) {
                tracing::debug!(entry = shown, "AUFS metadata ignored");
                return Ok(());
            }
            if comp.starts_with(WHITEOUT_PREFIX) {
                return Err(refused(shown, "whiteout name used as a directory"));
            }
        }
        if name == WHITEOUT_OPAQUE {
            return self.mark_opaque(parent, shown);
        }
        if name.starts_with(WHITEOUT_META_PREFIX) {
            tracing::debug!(entry = shown, "AUFS metadata ignored");
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if matches!(hidden, b"" | b"." | b"..") {
                return Err(refused(shown, "whiteout of nothing nameable"));
            }
            return self.whiteout(parent, hidden, &meta, shown);
        }
        let name = c_name(shown, name)?;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let dir = self.parent_dir(parent, shown)?;
                self.create_file(&dir, &name, entry, &meta, shown)
            }
            EntryType::Directory => {
                let dir = self.parent_dir(parent, shown)?;
                self.create_dir(&dir, &name, &path, &meta, shown)
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| refused(shown, "symlink without a target"))?;
                let target = c_name(shown, &target)?;
                let dir = self.parent_dir(parent, shown)?;
                self.create_symlink(&dir, &name, &target, &meta, shown)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refused(shown, "hard link without a target"))?;
                let target = clean_path(&target);
                if target.is_empty() || target == path {
                    return Err(refused(shown, "hard link to the root or to itself"));
                }
                let dir = self.parent_dir(parent, shown)?;
                self.create_hardlink(&dir, &name, &target, shown)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let file_type = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let dev = libc::makedev(major, minor);
                let dir = self.parent_dir(parent, shown)?;
                self.create_node(&dir, &name, file_type, dev, &meta, shown)
            }
            other => Err(refused(shown, format!("unsupported entry type {other:?}"))),
        }
    }

    /// Opens (creating if missing) the parent directory `parent` inside the root.
    fn parent_dir(&mut self, parent: &[u8], shown: &str) -> Result<Rc<OwnedFd>, UnpackError> {
        if let Some((cached, fd)) = &self.parent {
            if cached == parent {
                return Ok(Rc::clone(fd));
            }
        }
        let fd = Rc::new(self.open_or_create_dir(parent, shown)?);
        self.parent = Some((parent.to_vec(), Rc::clone(&fd)));
        Ok(fd)
    }

    fn open_dir(&self, path: &[u8], shown: &str) -> Result<io::Result<OwnedFd>, UnpackError> {
        let path = if path.is_empty() { &b"."[..] } else { path };
        let path = c_name(shown, path)?;
        Ok(sys::open_in_root(
            self.root.as_fd(),
            &path,
            libc::O_RDONLY | libc::O_DIRECTORY,
        ))
    }

    fn open_or_create_dir(&self, path: &[u8], shown: &str) -> Result<OwnedFd, UnpackError> {
        match self.open_dir(path, shown)? {
            Ok(fd) => return Ok(fd),
            Err(e) if errno(&e) == libc::ENOENT => {}
            Err(e) => return Err(fs_error(shown, "resolve parent directory", e)),
        }
        // Slow path: some component is missing. Walk down, creating what is missing; each
        // prefix is still resolved in the root, so a symlink met on the way stays inside it.
        let mut dir = self
            .open_dir(b"", shown)?
            .map_err(|e| fs_error(shown, "open root", e))?;
        let mut end = 0;
        for comp in path.split(|&b| b == b'/') {
            end += comp.len() + usize::from(end > 0);
            let prefix = &path[..end];
            match self.open_dir(prefix, shown)? {
                Ok(fd) => dir = fd,
                Err(e) if errno(&e) == libc::ENOENT => {
                    let name = c_name(shown, comp)?;
                    sys::mkdirat(dir.as_fd(), &name, 0o755).map_err(|e| {
                        if errno(&e) == libc::EEXIST {
                            refused(
                                shown,
                                format!(
                                    "parent {:?} is a symlink to nothing",
                                    String::from_utf8_lossy(prefix)
                                ),
                            )
                        } else {
                            fs_error(shown, "create parent directory", e)
                        }
                    })?;
                    let fd = sys::openat(
                        dir.as_fd(),
                        &name,
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                        0,
                    )
                    .map_err(|e| fs_error(shown, "open created parent directory", e))?;
                    // Implied directories are 0755 whatever the daemon's umask.
                    sys::fchmod(fd.as_fd(), 0o755)
                        .map_err(|e| fs_error(shown, "chmod created parent directory", e))?;
                    dir = fd;
                }
                Err(e) => return Err(fs_error(shown, "resolve parent directory", e)),
            }
        }
        Ok(dir)
    }

    /// Runs `create`; if the name is taken, removes what is there (a later entry wins) and
    /// runs it once more. The outer error is the removal's, the inner one `create`'s.
    fn replacing<T>(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        shown: &str,
        mut create: impl FnMut() -> io::Result<T>,
    ) -> Result<io::Result<T>, UnpackError> {
        match create() {
            Err(e) if errno(&e) == libc::EEXIST => {
                self.remove(dir, name, shown)?;
                Ok(create())
            }
            other => Ok(other),
        }
    }

    /// Removes `name` from `dir` without following it, recursively if it is a directory.
    fn remove(&mut self, dir: BorrowedFd<'_>, name: &CStr, shown: &str) -> Result<(), UnpackError> {
        self.parent = None;
        sys::remove_tree(dir, name).map_err(|e| fs_error(shown, "remove replaced entry", e))
    }

    fn create_file<R: Read>(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = self
            .replacing(dir.as_fd(), name, shown, || {
                sys::openat(dir.as_fd(), name, flags, 0o600)
            })?
            .map_err(|e| fs_error(shown, "create file", e))?;
        let mut file = File::from(fd);
        let expected = entry.size();
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(UnpackError::Stream {
                        at: format!("content of {shown:?}"),
                        source,
                    })
                }
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| fs_error(shown, "write file", e))?;
            written += n as u64;
        }
        // The tar crate reports a stream cut inside a file's content as a short read.
        if written != expected {
            return Err(UnpackError::Stream {
                at: format!("content of {shown:?}"),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{written} of {expected} bytes"),
                ),
            });
        }
        self.stats.bytes += written;
        let fd = file.as_fd();
        if written > 0 {
            // Only an early start for the snapshot's flush (`SnapshotStore::commit`),
            // which is what makes the data durable: a file system without it loses
            // nothing.
            let _ = sys::start_writeback(fd);
        }
        self.apply_owner_mode(fd, meta, shown)?;
        self.set_xattrs(XattrTarget::Fd(fd), meta, shown)?;
        sys::futimens(fd, meta.mtime).map_err(|e| fs_error(shown, "set mtime", e))
    }

    fn create_dir(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        path: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        match sys::mkdirat(dir.as_fd(), name, 0o700) {
            Ok(()) => {}
            Err(e) if errno(&e) == libc::EEXIST => {
                let existing = sys::fstatat_nofollow(dir.as_fd(), name)
                    .map_err(|e| fs_error(shown, "stat existing entry", e))?;
                if existing.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    self.remove(dir.as_fd(), name, shown)?;
                    sys::mkdirat(dir.as_fd(), name, 0o700)
                        .map_err(|e| fs_error(shown, "create directory", e))?;
                }
            }
            Err(e) => return Err(fs_error(shown, "create directory", e)),
        }
        let fd = sys::openat(
            dir.as_fd(),
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| fs_error(shown, "open directory", e))?;
        self.apply_dir_meta(fd.as_fd(), path, meta, shown)
    }

    fn apply_root_meta(&mut self, meta: &Meta, shown: &str) -> Result<(), UnpackError> {
        let root = sys::openat(
            self.root.as_fd(),
            c".",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| fs_error(shown, "open root", e))?;
        self.apply_dir_meta(root.as_fd(), b"", meta, shown)
    }

    /// Owner, mode and xattrs now; the mtime once the directory's content is in place.
    fn apply_dir_meta(
        &mut self,
        fd: BorrowedFd<'_>,
        path: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        self.apply_owner_mode(fd, meta, shown)?;
        self.set_xattrs(XattrTarget::Fd(fd), meta, shown)?;
        let st = sys::fstat(fd).map_err(|e| fs_error(shown, "stat directory", e))?;
        self.dir_times.insert(
            path.to_vec(),
            DirTime {
                ino: st.st_ino,
                mtime: meta.mtime,
            },
        );
        Ok(())
    }

    /// chown before chmod: chown clears setuid/setgid.
    fn apply_owner_mode(
        &self,
        fd: BorrowedFd<'_>,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        sys::fchown(fd, meta.uid, meta.gid).map_err(|e| fs_error(shown, "chown", e))?;
        sys::fchmod(fd, meta.mode).map_err(|e| fs_error(shown, "chmod", e))
    }

    fn create_symlink(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        target: &CStr,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        self.replacing(dir.as_fd(), name, shown, || {
            sys::symlinkat(target, dir.as_fd(), name)
        })?
        .map_err(|e| fs_error(shown, "create symlink", e))?;
        sys::fchownat_nofollow(dir.as_fd(), name, meta.uid, meta.gid)
            .map_err(|e| fs_error(shown, "chown symlink", e))?;
        self.set_xattrs(XattrTarget::Name(dir.as_fd(), name), meta, shown)?;
        sys::utimensat_nofollow(dir.as_fd(), name, meta.mtime)
            .map_err(|e| fs_error(shown, "set symlink mtime", e))
    }

    /// The target is resolved in the root like any path and its last component is not
    /// followed, so the new name can only share an inode that is already inside the root.
    /// The header's metadata is not applied: it belongs to the target's own entry.
    fn create_hardlink(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        target: &[u8],
        shown: &str,
    ) -> Result<(), UnpackError> {
        let (target_parent, target_name) = split_parent(target);
        let target_name = c_name(shown, target_name)?;
        let shown_target = String::from_utf8_lossy(target);
        let target_dir = self
            .open_dir(target_parent, shown)?
            .map_err(|e| match errno(&e) {
                libc::ENOENT | libc::ENOTDIR | libc::ELOOP => refused(
                    shown,
                    format!("hard link target {shown_target:?} is not in the layer: {e}"),
                ),
                _ => fs_error(shown, "resolve hard link target", e),
            })?;
        let linked = self.replacing(dir.as_fd(), name, shown, || {
            sys::linkat(target_dir.as_fd(), &target_name, dir.as_fd(), name)
        })?;
        linked.map_err(|e| match errno(&e) {
            libc::ENOENT | libc::EPERM | libc::EXDEV => refused(
                shown,
                format!("hard link to {shown_target:?} (missing or a directory): {e}"),
            ),
            _ => fs_error(shown, "create hard link", e),
        })
    }

    fn create_node(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        file_type: libc::mode_t,
        dev: libc::dev_t,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let made = self.replacing(dir.as_fd(), name, shown, || {
            sys::mknodat(dir.as_fd(), name, file_type | 0o600, dev)
        })?;
        match made {
            Ok(()) => {}
            Err(e) if errno(&e) == libc::EPERM => {
                tracing::debug!(entry = shown, "device node skipped: {e}");
                self.stats.skipped.push(format!("{shown}: mknod: {e}"));
                return Ok(());
            }
            Err(e) => return Err(fs_error(shown, "mknod", e)),
        }
        sys::fchownat_nofollow(dir.as_fd(), name, meta.uid, meta.gid)
            .map_err(|e| fs_error(shown, "chown node", e))?;
        // fchmodat follows a final symlink, but `name` is the node mknodat just made in this
        // dirfd and nothing else writes into the snapshot while it is unpacked.
        sys::fchmodat(dir.as_fd(), name, meta.mode)
            .map_err(|e| fs_error(shown, "chmod node", e))?;
        self.set_xattrs(XattrTarget::Name(dir.as_fd(), name), meta, shown)?;
        sys::utimensat_nofollow(dir.as_fd(), name, meta.mtime)
            .map_err(|e| fs_error(shown, "set node mtime", e))
    }

    /// `.wh.name`: a 0:0 character device hides `name` of the layers below. Unlike other
    /// device nodes, failing to make one fails the layer: skipping it would resurrect files.
    /// Only the mtime is taken from the header, so that snapshots are reproducible.
    fn whiteout(
        &mut self,
        parent: &[u8],
        hidden: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let name = c_name(shown, hidden)?;
        let dir = self.parent_dir(parent, shown)?;
        self.replacing(dir.as_fd(), &name, shown, || {
            sys::mknodat(dir.as_fd(), &name, libc::S_IFCHR, libc::makedev(0, 0))
        })?
        .map_err(|e| UnpackError::Io {
            entry: shown.to_string(),
            op: "create overlay whiteout (needs CAP_MKNOD)",
            source: e,
        })?;
        sys::utimensat_nofollow(dir.as_fd(), &name, meta.mtime)
            .map_err(|e| fs_error(shown, "set whiteout mtime", e))
    }

    fn mark_opaque(&mut self, parent: &[u8], shown: &str) -> Result<(), UnpackError> {
        let dir = self.parent_dir(parent, shown)?;
        sys::fsetxattr(dir.as_fd(), OPAQUE_XATTR, b"y").map_err(|e| UnpackError::Io {
            entry: shown.to_string(),
            op: "set trusted.overlay.opaque (needs CAP_SYS_ADMIN)",
            source: e,
        })
    }

    fn set_xattrs(
        &mut self,
        target: XattrTarget<'_>,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), UnpackError> {
        if meta.xattrs.is_empty() {
            return Ok(());
        }
        let proc_path = match &target {
            XattrTarget::Fd(_) => None,
            XattrTarget::Name(dir, name) => {
                // The dirfd as an intermediate component, then `name` looked up without
                // following: the *at form lsetxattr lacks.
                let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
                p.extend_from_slice(name.to_bytes());
                Some(c_name(shown, &p)?)
            }
        };
        for (key, value) in &meta.xattrs {
            let set = match (&target, &proc_path) {
                (XattrTarget::Fd(fd), _) => sys::fsetxattr(*fd, key, value),
                (XattrTarget::Name(..), Some(path)) => sys::lsetxattr(path, key, value),
                (XattrTarget::Name(..), None) => continue,
            };
            match set {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        errno(&e),
                        libc::EPERM
                            | libc::EOPNOTSUPP
                            | libc::EACCES
                            | libc::EINVAL
                            | libc::ERANGE
                            | libc::E2BIG
                    ) =>
                {
                    self.stats
                        .skipped
                        .push(format!("{shown}: xattr {}: {e}", key.to_string_lossy()));
                }
                Err(e) => return Err(fs_error(shown, "set xattr", e)),
            }
        }
        Ok(())
    }

    /// Directory mtimes last: creating anything inside a directory bumps its mtime.
    pub(super) fn apply_dir_times(&mut self) -> Result<(), UnpackError> {
        let times = std::mem::take(&mut self.dir_times);
        let mut last_parent: Option<(&[u8], OwnedFd)> = None;
        for (path, time) in &times {
            let shown = String::from_utf8_lossy(path);
            if path.is_empty() {
                let st =
                    sys::fstat(self.root.as_fd()).map_err(|e| fs_error(&shown, "stat root", e))?;
                if st.st_ino == time.ino {
                    sys::futimens(self.root.as_fd(), time.mtime)
                        .map_err(|e| fs_error(&shown, "set root mtime", e))?;
                }
                continue;
            }
            let (parent, name) = split_parent(path);
            let name = c_name(&shown, name)?;
            if last_parent.as_ref().is_none_or(|(p, _)| *p != parent) {
                match self.open_dir(parent, &shown)? {
                    Ok(fd) => last_parent = Some((parent, fd)),
                    // Replaced by a later entry; its own metadata stands.
                    Err(_) => continue,
                }
            }
            let Some((_, dir)) = &last_parent else {
                continue;
            };
            match sys::fstatat_nofollow(dir.as_fd(), &name) {
                Ok(st) if st.st_ino == time.ino && st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                    sys::utimensat_nofollow(dir.as_fd(), &name, time.mtime)
                        .map_err(|e| fs_error(&shown, "set directory mtime", e))?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
