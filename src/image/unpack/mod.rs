//! Layer unpacking: one OCI/Docker layer tar, alone, into an overlayfs-ready snapshot dir.
//!
//! The snapshot is a lowerdir: OCI whiteouts (`.wh.name`) become overlayfs whiteouts (a 0:0
//! character device named `name`), opaque markers (`.wh..wh..opq`) become the
//! `trusted.overlay.opaque=y` xattr on their directory. The `diff_id` is the sha256 of the whole
//! uncompressed stream, read to its end (trailer and padding included).
//!
//! # Hostile layers (DESIGN.md decision 5)
//!
//! Unpacking never creates, changes or deletes anything outside `dest`, whatever the tar says.
//! The policy is **clamp**, with `dest` acting as `/` for every path in the layer, the way a
//! chroot would treat it:
//!
//! - Entry names are cleaned lexically with `..` stopping at the root, like Go's
//!   `filepath.Join(root, Clean("/"+name))`: `../x`, `a/../../x` and `/x` all land on `dest/x`.
//!   This is what containerd does (`fs.RootPath`), so a layer containerd accepts unpacks here
//!   too, and it is the same rule the kernel applies below, so there is one rule, not two.
//! - Each entry's parent directory is resolved with `openat2(RESOLVE_IN_ROOT)` from a dirfd on
//!   `dest`: symlinks on the way (`evil -> /etc`, `up -> ../../..`) are followed as if `dest` were
//!   the root, so they can only lead to places inside `dest`. A missing parent is created one
//!   component at a time with `mkdirat` + `O_NOFOLLOW`; a parent that is a dangling symlink or a
//!   non-directory rejects the layer.
//! - The entry itself is created relative to that parent dirfd (`mkdirat`, `openat(O_CREAT |
//!   O_EXCL | O_NOFOLLOW)`, `symlinkat`, `linkat`, `mknodat`) and its metadata is applied through
//!   the fd or with `AT_SYMLINK_NOFOLLOW`; the last component is never followed. Symlink targets
//!   are stored verbatim and never followed at unpack time.
//! - Hard link targets are resolved the same way (in the root) and linked without following the
//!   last component, so a hard link can only name an inode already inside `dest`.
//! - A later entry replaces an earlier one of the same path (unless both are directories); the
//!   old one is removed with `unlinkat`, recursing through directories by dirfd, never following
//!   a symlink.
//! - Whiteout names that hide nothing nameable (`.wh.`, `.wh..`, `.wh...`) and `.wh.` prefixes on
//!   a parent component reject the layer; AUFS metadata (`.wh..wh.*` other than the opaque
//!   marker) is ignored; overlayfs xattrs (`trusted.overlay.*`, `user.overlay.*`) are only ever
//!   made from whiteout entries, never copied from the layer's own xattrs.
//!
//! A rejected layer is an `InvalidArgument`-kind error and may leave a partial snapshot in `dest`
//! (inside it only); the caller discards `dest`.
//!
//! `sys.rs` holds the fd-relative syscall wrappers (`openat2`, `mknodat`, `linkat`, xattrs, ...),
//! `stream.rs` the reader adapters under the tar reader (diff_id hash, missing end of archive).

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use sha2::{Digest, Sha256};
use tar::EntryType;

use crate::error::{Classify, Kind};

mod stream;
mod sys;
#[cfg(test)]
mod tests;

use stream::{HashingReader, StreamPos, TrailerReader};

/// Copy buffer and stream buffer size: big enough to amortise syscalls, small enough to not
/// matter per pull.
const BUF_SIZE: usize = 64 * 1024;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From a layer media type: OCI `application/vnd.oci.image.layer.v1.tar`, `+gzip`, `+zstd`,
    /// the nondistributable variants, Docker `application/vnd.docker.image.rootfs.diff.tar.gzip`
    /// (and `.tar`). None for unknown types.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type.trim() {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// From the first bytes of a blob (gzip 1f 8b, zstd 28 b5 2f fd, else None = plain tar).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// What an unpack produced.
#[derive(Debug, Clone, Default)]
pub struct UnpackStats {
    /// "sha256:<hex>" of the uncompressed tar stream, read to its very end (the layer's diff_id).
    pub diff_id: String,
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Entries skipped because the host does not allow them (e.g. mknod refused), with the reason.
    pub skipped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("open layer blob {path}: {source}")]
    Blob { path: PathBuf, source: io::Error },
    #[error("open unpack destination {path}: {source}")]
    Dest { path: PathBuf, source: io::Error },
    /// The compressed or tar stream could not be read: corrupt (no OS error) or a host fault.
    #[error("read layer stream ({at}): {source}")]
    Stream { at: String, source: io::Error },
    /// The layer asks for something unsafe or self-contradictory.
    #[error("layer entry {entry:?} refused: {reason}")]
    Refused { entry: String, reason: String },
    #[error("layer entry {entry:?}: {op}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        source: io::Error,
    },
}

impl Classify for UnpackError {
    fn kind(&self) -> Kind {
        match self {
            UnpackError::Blob { .. } | UnpackError::Dest { .. } | UnpackError::Io { .. } => {
                Kind::Internal
            }
            // An OS error under the decoder is the disk; anything else is the bytes themselves
            // (bad gzip/zstd data, bad tar checksum, truncated stream).
            UnpackError::Stream { source, .. } if source.raw_os_error().is_some() => Kind::Internal,
            UnpackError::Stream { .. } | UnpackError::Refused { .. } => Kind::InvalidArgument,
        }
    }
}

/// Unpacks the layer blob at `blob` into `dest` (an existing, empty directory).
pub fn unpack_layer(
    blob: &Path,
    compression: Compression,
    dest: &Path,
) -> Result<UnpackStats, UnpackError> {
    let file = File::open(blob).map_err(|source| UnpackError::Blob {
        path: blob.to_path_buf(),
        source,
    })?;
    unpack_reader(file, compression, dest)
}

/// Same, from any reader (used by tests and by image import).
pub fn unpack_reader(
    reader: impl Read,
    compression: Compression,
    dest: &Path,
) -> Result<UnpackStats, UnpackError> {
    let _span =
        tracing::debug_span!("unpack_layer", dest = %dest.display(), ?compression).entered();
    let root = open_dest(dest)?;
    let decoded: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(reader),
        // Multi-member: concatenated gzip members are one valid stream (pigz, some registries).
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => {
            Box::new(
                zstd::Decoder::new(reader).map_err(|source| UnpackError::Stream {
                    at: "zstd header".into(),
                    source,
                })?,
            )
        }
    };
    let hashing = HashingReader {
        inner: decoded,
        hasher: Sha256::new(),
    };
    let pos = Rc::new(StreamPos::default());
    let stream = TrailerReader {
        inner: BufReader::with_capacity(BUF_SIZE, hashing),
        pos: Rc::clone(&pos),
        synthesize_until: None,
    };
    let mut archive = tar::Archive::new(stream);
    let mut unpacker = Unpacker {
        root,
        parent: None,
        dir_times: BTreeMap::new(),
        buf: vec![0; BUF_SIZE],
        stats: UnpackStats::default(),
    };
    let mut last = String::from("start of stream");
    let entries = archive.entries().map_err(|source| UnpackError::Stream {
        at: last.clone(),
        source,
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| UnpackError::Stream {
            at: format!("after entry {last:?}"),
            source,
        })?;
        last = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        unpacker.stats.entries += 1;
        unpacker.unpack_entry(&mut entry, &last)?;
        pos.entry_end.set(Some(pos.read.get()));
    }
    // The tar reader stops at the first zero block; the diff_id covers the rest too.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| UnpackError::Stream {
        at: "end of archive".into(),
        source,
    })?;
    unpacker.apply_dir_times()?;
    let mut stats = unpacker.stats;
    stats.diff_id = format!(
        "sha256:{}",
        hex::encode(rest.inner.into_inner().hasher.finalize())
    );
    tracing::debug!(
        entries = stats.entries,
        bytes = stats.bytes,
        skipped = stats.skipped.len(),
        diff_id = %stats.diff_id,
        "layer unpacked"
    );
    Ok(stats)
}

fn open_dest(dest: &Path) -> Result<OwnedFd, UnpackError> {
    let err = |source| UnpackError::Dest {
        path: dest.to_path_buf(),
        source,
    };
    let path = CString::new(dest.as_os_str().as_encoded_bytes())
        .map_err(|_| err(io::Error::from_raw_os_error(libc::EINVAL)))?;
    sys::open(&path, libc::O_RDONLY | libc::O_DIRECTORY).map_err(err)
}

/// Ownership, permissions, time and xattrs of one entry, from its header and PAX records.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: libc::timespec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Meta {
    fn from_entry<R: Read>(
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
        skipped: &mut Vec<String>,
    ) -> Result<Meta, UnpackError> {
        let refused = |reason: String| UnpackError::Refused {
            entry: shown.to_string(),
            reason,
        };
        let header = entry.header();
        let old = header.as_old();
        // The tar crate already applied PAX uid/gid over the header fields.
        let id = |v: io::Result<u64>, raw: &[u8], what: &str| {
            numeric(v, raw)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| refused(format!("bad {what} in header")))
        };
        let uid = id(header.uid(), &old.uid, "uid")?;
        let gid = id(header.gid(), &old.gid, "gid")?;
        let mode = numeric(header.mode().map(u64::from), &old.mode)
            .ok_or_else(|| refused("bad mode in header".into()))? as u32
            & 0o7777;
        let secs = numeric(header.mtime(), &old.mtime)
            .and_then(|v| libc::time_t::try_from(v).ok())
            .ok_or_else(|| refused("bad mtime in header".into()))?;
        let mut meta = Meta {
            uid,
            gid,
            mode,
            mtime: libc::timespec {
                tv_sec: secs,
                tv_nsec: 0,
            },
            xattrs: Vec::new(),
        };
        let pax = entry
            .pax_extensions()
            .map_err(|e| refused(format!("bad PAX header: {e}")))?;
        for ext in pax.into_iter().flatten() {
            let ext = ext.map_err(|e| refused(format!("bad PAX record: {e}")))?;
            let key = ext.key_bytes();
            if key == b"mtime" {
                meta.mtime = parse_pax_time(ext.value_bytes())
                    .ok_or_else(|| refused("bad PAX mtime".into()))?;
            } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
                    // Overlay metadata (redirects, opaque, origin) only comes from whiteouts.
                    skipped.push(format!(
                        "{shown}: xattr {}: overlayfs metadata not accepted from a layer",
                        String::from_utf8_lossy(name)
                    ));
                    continue;
                }
                let name = CString::new(name)
                    .ok()
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| refused("bad xattr name".into()))?;
                meta.xattrs.push((name, ext.value_bytes().to_vec()));
            }
        }
        Ok(meta)
    }
}

/// A numeric header field; one left blank (all NUL or spaces) reads as 0, as in Go's
/// archive/tar, which wrote or accepted most layers in the wild.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> Option<u64> {
    match parsed {
        Ok(v) => Some(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Some(0),
        Err(_) => None,
    }
}

/// PAX times are decimal seconds with an optional fraction, possibly negative.
fn parse_pax_time(value: &[u8]) -> Option<libc::timespec> {
    let s = std::str::from_utf8(value).ok()?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: libc::time_t = secs.parse().ok()?;
    let mut nanos: libc::c_long = 0;
    for i in 0..9 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| b - b'0');
        nanos = nanos * 10 + libc::c_long::from(digit);
    }
    Some(match (negative, nanos) {
        (false, _) => libc::timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
        (true, 0) => libc::timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        },
        (true, _) => libc::timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        },
    })
}

/// Lexically cleans a tar path with `dest` as `/`: drops empty and `.` components, lets `..`
/// stop at the root. The result has no leading or trailing slash; empty means the root itself.
fn clean_path(raw: &[u8]) -> Vec<u8> {
    let mut comps: Vec<&[u8]> = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                comps.pop();
            }
            c => comps.push(c),
        }
    }
    comps.join(&b'/')
}

/// Splits a cleaned, non-empty path into its parent (maybe empty = root) and last component.
fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn errno(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(0)
}

/// Maps a filesystem error to the layer's fault (the tar contradicts itself or the tree it
/// built) or the host's (anything else).
fn fs_error(entry: &str, op: &'static str, source: io::Error) -> UnpackError {
    match errno(&source) {
        libc::ENOTDIR
        | libc::ELOOP
        | libc::ENAMETOOLONG
        | libc::EISDIR
        | libc::EEXIST
        | libc::EMLINK => UnpackError::Refused {
            entry: entry.to_string(),
            reason: format!("{op}: {source}"),
        },
        _ => UnpackError::Io {
            entry: entry.to_string(),
            op,
            source,
        },
    }
}

fn refused(entry: &str, reason: impl Into<String>) -> UnpackError {
    UnpackError::Refused {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

fn c_name(entry: &str, bytes: &[u8]) -> Result<CString, UnpackError> {
    CString::new(bytes).map_err(|_| refused(entry, "NUL byte in name"))
}

/// Where to set an entry's xattrs: an open fd, or a name in a parent dirfd (symlinks and
/// device nodes, which must not be opened for real).
enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    Name(BorrowedFd<'a>, &'a CStr),
}

/// A directory mtime to set once everything inside it exists.
struct DirTime {
    ino: libc::ino_t,
    mtime: libc::timespec,
}

struct Unpacker {
    /// `dest`, the root every layer path is resolved in.
    root: OwnedFd,
    /// The last parent directory resolved: tar entries come grouped by directory, so this one
    /// slot saves most `openat2` calls. Cleared whenever anything is removed: a removed
    /// directory or symlink may be on a cached path (not with one slot, which holds the removed
    /// entry's own parent, but with any bigger cache).
    parent: Option<(Vec<u8>, Rc<OwnedFd>)>,
    dir_times: BTreeMap<Vec<u8>, DirTime>,
    buf: Vec<u8>,
    stats: UnpackStats,
}

impl Unpacker {
    fn unpack_entry<R: Read>(
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
    fn apply_dir_times(&mut self) -> Result<(), UnpackError> {
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
