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

use std::cell::Cell;
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

/// Tees every decompressed byte into the diff_id hash.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// How far the tar reader has read, and where the last entry it handed out (and that was
/// unpacked whole) ended.
#[derive(Default)]
struct StreamPos {
    read: Cell<u64>,
    entry_end: Cell<Option<u64>>,
}

/// Supplies the end-of-archive a layer left out.
///
/// Some writers stop right after the last entry's data: no padding to 512 bytes, no two zero
/// blocks (`umoci insert` in Debian 12's umoci 0.4.7). containerd and Docker (Go's
/// archive/tar) accept such layers; the tar crate fails them with "unexpected EOF during skip"
/// while skipping the missing padding. When the stream ends exactly where the last complete
/// entry ended, or inside its padding, this reader goes on with zeros up to the padding's end
/// plus two zero blocks, so the tar reader finds a regular end. A stream that ends anywhere
/// else (inside an entry's data or header) still ends there and stays an error. The zeros
/// are added above the hashing reader: the diff_id covers the bytes the layer really has.
struct TrailerReader<R> {
    inner: R,
    pos: Rc<StreamPos>,
    /// Set once the trailer is being supplied: the stream offset where it ends.
    synthesize_until: Option<u64>,
}

impl<R: Read> Read for TrailerReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let at = self.pos.read.get();
        let n = match self.synthesize_until {
            Some(end) => {
                let n = (end - at).min(buf.len() as u64) as usize;
                buf[..n].fill(0);
                n
            }
            None => {
                let n = self.inner.read(buf)?;
                if n == 0 && !buf.is_empty() {
                    if let Some(end) = missing_trailer_end(at, self.pos.entry_end.get()) {
                        self.synthesize_until = Some(end);
                        return self.read(buf);
                    }
                }
                n
            }
        };
        self.pos.read.set(at + n as u64);
        Ok(n)
    }
}

/// Where the synthesized end of archive stops, if a stream ending at `at` only lacks
/// padding and zero blocks after the last complete entry (which ended at `entry_end`).
fn missing_trailer_end(at: u64, entry_end: Option<u64>) -> Option<u64> {
    const BLOCK: u64 = 512;
    let entry_end = entry_end?;
    let padded = entry_end.div_ceil(BLOCK) * BLOCK;
    (entry_end..=padded)
        .contains(&at)
        .then_some(padded + 2 * BLOCK)
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

/// Thin, fd-relative syscall wrappers. Every path argument is a single component relative to a
/// trusted dirfd, except `open_in_root`, which resolves inside its root by construction.
mod sys {
    use std::ffi::{CStr, CString};
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

    fn cvt(ret: libc::c_int) -> io::Result<()> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn owned(ret: libc::c_int) -> io::Result<OwnedFd> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: the kernel just returned this fd to us; nothing else owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
        }
    }

    /// `struct open_how` (linux/openat2.h); libc's is `non_exhaustive`, so it cannot be built.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }

    pub fn open(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
        // SAFETY: `path` is a valid NUL-terminated string.
        owned(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })
    }

    /// `openat2(root, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: `..` and absolute
    /// symlinks stop at `root`, so whatever `path` and the symlinks on it say, the result is
    /// inside `root`.
    pub fn open_in_root(
        root: BorrowedFd<'_>,
        path: &CStr,
        flags: libc::c_int,
    ) -> io::Result<OwnedFd> {
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        };
        let mut attempts = 0;
        loop {
            // SAFETY: valid fd, NUL-terminated path, `how` lives across the call and its size
            // is passed.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    root.as_raw_fd(),
                    path.as_ptr(),
                    &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                )
            };
            if ret >= 0 {
                return owned(ret as libc::c_int);
            }
            let err = io::Error::last_os_error();
            // EAGAIN: RESOLVE_IN_ROOT saw a concurrent rename and asks for a retry.
            match err.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) if attempts < 16 => attempts += 1,
                _ => return Err(err),
            }
        }
    }

    pub fn openat(
        dir: BorrowedFd<'_>,
        name: &CStr,
        flags: libc::c_int,
        mode: libc::mode_t,
    ) -> io::Result<OwnedFd> {
        // SAFETY: valid fd and NUL-terminated name.
        owned(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })
    }

    pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
        // SAFETY: valid fd and NUL-terminated name.
        cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
    }

    pub fn mknodat(
        dir: BorrowedFd<'_>,
        name: &CStr,
        mode: libc::mode_t,
        dev: libc::dev_t,
    ) -> io::Result<()> {
        // SAFETY: valid fd and NUL-terminated name.
        cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) })
    }

    pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        // SAFETY: valid fd and NUL-terminated strings.
        cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
    }

    /// Flags 0: a symlink as the old name is linked itself, not followed.
    pub fn linkat(
        old_dir: BorrowedFd<'_>,
        old_name: &CStr,
        new_dir: BorrowedFd<'_>,
        new_name: &CStr,
    ) -> io::Result<()> {
        // SAFETY: valid fds and NUL-terminated names.
        cvt(unsafe {
            libc::linkat(
                old_dir.as_raw_fd(),
                old_name.as_ptr(),
                new_dir.as_raw_fd(),
                new_name.as_ptr(),
                0,
            )
        })
    }

    pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid fd; the kernel fills `st` on success.
        cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
        // SAFETY: fstat succeeded.
        Ok(unsafe { st.assume_init() })
    }

    pub fn fstatat_nofollow(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid fd and name; the kernel fills `st` on success.
        cvt(unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        // SAFETY: fstatat succeeded.
        Ok(unsafe { st.assume_init() })
    }

    pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
        // SAFETY: valid fd.
        cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
    }

    pub fn fchownat_nofollow(
        dir: BorrowedFd<'_>,
        name: &CStr,
        uid: u32,
        gid: u32,
    ) -> io::Result<()> {
        // SAFETY: valid fd and NUL-terminated name.
        cvt(unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                name.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
        // SAFETY: valid fd.
        cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })
    }

    pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
        // SAFETY: valid fd and NUL-terminated name.
        cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, 0) })
    }

    /// atime = mtime, as containerd does when the header carries no atime.
    pub fn futimens(fd: BorrowedFd<'_>, mtime: libc::timespec) -> io::Result<()> {
        let times = [mtime, mtime];
        // SAFETY: valid fd and a two-element array.
        cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })
    }

    pub fn utimensat_nofollow(
        dir: BorrowedFd<'_>,
        name: &CStr,
        mtime: libc::timespec,
    ) -> io::Result<()> {
        let times = [mtime, mtime];
        // SAFETY: valid fd, NUL-terminated name and a two-element array.
        cvt(unsafe {
            libc::utimensat(
                dir.as_raw_fd(),
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    pub fn fsetxattr(fd: BorrowedFd<'_>, key: &CStr, value: &[u8]) -> io::Result<()> {
        // SAFETY: valid fd, NUL-terminated key, value pointer and length from one slice.
        cvt(unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        })
    }

    pub fn lsetxattr(path: &CStr, key: &CStr, value: &[u8]) -> io::Result<()> {
        // SAFETY: NUL-terminated path and key, value pointer and length from one slice.
        cvt(unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        })
    }

    /// Removes `name` from `dir`, never following a symlink: a directory is emptied through
    /// its own dirfd (opened `O_NOFOLLOW`), then removed.
    pub fn remove_tree(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        // SAFETY: valid fd and NUL-terminated name.
        match cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }) {
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {}
            other => return other,
        }
        let sub = openat(
            dir,
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        for child in entry_names(&sub)? {
            remove_tree(std::os::fd::AsFd::as_fd(&sub), &child)?;
        }
        // SAFETY: valid fd and NUL-terminated name.
        cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) })
    }

    /// Names in a directory (without `.` and `..`), read through a duplicate of its fd.
    fn entry_names(dir: &OwnedFd) -> io::Result<Vec<CString>> {
        let dup = dir.try_clone()?;
        let mut stream = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(dup))
            .map_err(io::Error::from)?;
        let mut names = Vec::new();
        for ent in stream.iter() {
            let ent = ent.map_err(io::Error::from)?;
            let name = ent.file_name();
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::sync::atomic::{AtomicU32, Ordering};
    use tar::{Builder, Header};

    const MTIME: u64 = 1_600_000_000;

    /// Writes layer tars header by header, so that names the tar crate's helpers refuse (`..`,
    /// absolute paths, whiteout tricks) can be written too.
    struct Layer {
        tar: Builder<Vec<u8>>,
    }

    impl Layer {
        fn new() -> Layer {
            Layer {
                tar: Builder::new(Vec::new()),
            }
        }

        fn entry(
            &mut self,
            name: &[u8],
            kind: EntryType,
            mode: u32,
            link: &[u8],
            data: &[u8],
            edit: impl FnOnce(&mut Header),
        ) -> &mut Layer {
            let mut pax: Vec<(&str, &[u8])> = Vec::new();
            if name.len() >= 100 {
                pax.push(("path", name));
            }
            if link.len() >= 100 {
                pax.push(("linkpath", link));
            }
            if !pax.is_empty() {
                self.tar.append_pax_extensions(pax).unwrap();
            }
            let mut h = Header::new_gnu();
            let short = &name[..name.len().min(99)];
            h.as_old_mut().name[..short.len()].copy_from_slice(short);
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(MTIME);
            h.set_size(data.len() as u64);
            if !link.is_empty() {
                h.set_link_name_literal(&link[..link.len().min(99)])
                    .unwrap();
            }
            edit(&mut h);
            h.set_cksum();
            self.tar.append(&h, data).unwrap();
            self
        }

        fn file(&mut self, name: impl AsRef<[u8]>, data: &[u8]) -> &mut Layer {
            self.entry(name.as_ref(), EntryType::Regular, 0o644, b"", data, |_| {})
        }

        fn dir(&mut self, name: impl AsRef<[u8]>) -> &mut Layer {
            self.entry(name.as_ref(), EntryType::Directory, 0o755, b"", b"", |_| {})
        }

        fn symlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Layer {
            let target = target.as_ref();
            self.entry(
                name.as_ref(),
                EntryType::Symlink,
                0o777,
                target,
                b"",
                |_| {},
            )
        }

        fn hardlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Layer {
            let target = target.as_ref();
            self.entry(name.as_ref(), EntryType::Link, 0o644, target, b"", |_| {})
        }

        fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Layer {
            self.tar
                .append_pax_extensions(records.iter().copied())
                .unwrap();
            self
        }

        fn finish(self) -> Vec<u8> {
            self.tar.into_inner().unwrap()
        }
    }

    /// `top/` (a tempdir, the place "nothing appeared" is checked) holds `jail/dest/`, the
    /// unpack target, and `jail/outside/`, the host files a layer must not touch.
    struct Sandbox {
        tmp: tempfile::TempDir,
        dest: PathBuf,
        outside: PathBuf,
        before: BTreeMap<PathBuf, String>,
        token: String,
    }

    fn sandbox() -> Sandbox {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let tmp = tempfile::tempdir().unwrap();
        let jail = tmp.path().join("jail");
        let dest = jail.join("dest");
        let outside = jail.join("outside");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("sentinel"), b"sentinel content\n").unwrap();
        std::fs::write(outside.join("sub/inner"), b"inner").unwrap();
        std::os::unix::fs::symlink("sentinel", outside.join("link")).unwrap();
        let token = format!(
            "proxrt-escape-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let before = tree(tmp.path(), Some(&dest), true);
        Sandbox {
            tmp,
            dest,
            outside,
            before,
            token,
        }
    }

    impl Sandbox {
        fn unpack(&self, tar: &[u8]) -> Result<UnpackStats, UnpackError> {
            unpack_reader(tar, Compression::None, &self.dest)
        }

        fn outside_bytes(&self) -> &[u8] {
            self.outside.as_os_str().as_bytes()
        }

        /// Nothing outside `dest` changed: not a byte, mode, owner, link count or ctime of the
        /// sandbox, and nothing named after this test's token next to it or at `/`.
        fn assert_contained(&self) {
            assert_eq!(
                tree(self.tmp.path(), Some(&self.dest), true),
                self.before,
                "something outside dest changed"
            );
            for dir in [
                self.tmp.path().parent().unwrap(),
                Path::new("/"),
                Path::new("/etc"),
            ] {
                for suffix in ["", "2", "3"] {
                    let p = dir.join(format!("{}{suffix}", self.token));
                    assert!(p.symlink_metadata().is_err(), "{} appeared", p.display());
                }
            }
        }
    }

    /// Describes every entry under `root` (not following symlinks), skipping `skip`.
    /// `volatile` adds inode numbers and ctimes, which differ between two unpacks.
    fn tree(root: &Path, skip: Option<&Path>, volatile: bool) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(path) = todo.pop() {
            if Some(path.as_path()) == skip {
                continue;
            }
            let md = path.symlink_metadata().unwrap();
            let ft = md.file_type();
            let mut desc = format!(
                "mode={:o} uid={} gid={} nlink={} size={} mtime={}.{}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.nlink(),
                if ft.is_dir() { 0 } else { md.size() },
                md.mtime(),
                md.mtime_nsec()
            );
            if volatile {
                desc += &format!(" ino={} ctime={}.{}", md.ino(), md.ctime(), md.ctime_nsec());
            }
            if ft.is_file() {
                let data = std::fs::read(&path).unwrap();
                desc += &format!(" sha256={}", hex::encode(Sha256::digest(data)));
            } else if ft.is_symlink() {
                desc += &format!(" -> {:?}", std::fs::read_link(&path).unwrap());
            } else if ft.is_char_device() || ft.is_block_device() {
                desc += &format!(" rdev={}", md.rdev());
            } else if ft.is_dir() {
                for child in std::fs::read_dir(&path).unwrap() {
                    todo.push(child.unwrap().path());
                }
            }
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            out.insert(rel, desc);
        }
        out
    }

    fn etc_passwd() -> String {
        let md = Path::new("/etc/passwd").symlink_metadata().unwrap();
        format!(
            "ino={} nlink={} ctime={}.{} data={:?}",
            md.ino(),
            md.nlink(),
            md.ctime(),
            md.ctime_nsec(),
            std::fs::read("/etc/passwd").unwrap()
        )
    }

    fn assert_refused(result: Result<UnpackStats, UnpackError>) -> UnpackError {
        match result {
            Ok(stats) => panic!("layer accepted: {stats:?}"),
            Err(e) => {
                assert_eq!(e.kind(), Kind::InvalidArgument, "{e}");
                e
            }
        }
    }

    fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        let p = CString::new(path.as_os_str().as_bytes()).unwrap();
        let n = CString::new(name).unwrap();
        let mut buf = vec![0u8; 256];
        // SAFETY: valid strings and a buffer of the given length.
        let len =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        (len >= 0).then(|| buf[..len as usize].to_vec())
    }

    fn read(path: impl AsRef<Path>) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn is_whiteout(path: &Path) -> bool {
        path.symlink_metadata()
            .is_ok_and(|md| md.file_type().is_char_device() && md.rdev() == 0)
    }

    // ---- hostile paths ----

    #[test]
    fn dotdot_names_are_clamped_into_dest() {
        let sb = sandbox();
        let t = &sb.token;
        let mut l = Layer::new();
        l.file(format!("../{t}"), b"one")
            .file(format!("../../{t}2"), b"two")
            .file(format!("a/../../{t}3"), b"three")
            .file("./../outside/sentinel", b"pwned");
        sb.unpack(&l.finish()).unwrap();
        sb.assert_contained();
        assert_eq!(read(sb.dest.join(t)), b"one");
        assert_eq!(read(sb.dest.join(format!("{t}2"))), b"two");
        assert_eq!(read(sb.dest.join(format!("{t}3"))), b"three");
        assert_eq!(read(sb.dest.join("outside/sentinel")), b"pwned");
    }

    #[test]
    fn absolute_names_are_clamped_into_dest() {
        let sb = sandbox();
        let mut sentinel = sb.outside_bytes().to_vec();
        sentinel.extend_from_slice(b"/sentinel");
        let mut l = Layer::new();
        l.file(format!("/{}", sb.token), b"abs")
            .file(&sentinel, b"pwned");
        sb.unpack(&l.finish()).unwrap();
        sb.assert_contained();
        assert_eq!(read(sb.dest.join(&sb.token)), b"abs");
        let inside = sb.dest.join(sb.outside.strip_prefix("/").unwrap());
        assert_eq!(read(inside.join("sentinel")), b"pwned");
    }

    #[test]
    fn absolute_symlink_parent_cannot_reach_the_host() {
        let sb = sandbox();
        let mut l = Layer::new();
        l.symlink("evil", sb.outside_bytes())
            .file("evil/sentinel", b"pwned")
            .file("evil/new", b"pwned");
        let e = assert_refused(sb.unpack(&l.finish()));
        assert!(e.to_string().contains("evil"), "{e}");
        sb.assert_contained();
        assert!(sb
            .dest
            .join("evil")
            .symlink_metadata()
            .unwrap()
            .is_symlink());
    }

    /// `evil -> /abs/outside` where the layer also has `abs/outside/`: the symlink resolves to
    /// the layer's own copy. (Aimed at the sandbox, not /etc, so that a regression cannot
    /// damage the host running the test.)
    #[test]
    fn absolute_symlink_parent_resolves_inside_dest() {
        let sb = sandbox();
        let mirror = sb.outside.strip_prefix("/").unwrap();
        let mut l = Layer::new();
        l.dir(mirror.as_os_str().as_bytes())
            .file(
                mirror.join("sentinel").as_os_str().as_bytes(),
                b"layer's own",
            )
            .symlink("evil", sb.outside_bytes())
            .file("evil/sentinel", b"pwned")
            .file("evil/new", b"new");
        sb.unpack(&l.finish()).unwrap();
        sb.assert_contained();
        assert_eq!(read(sb.dest.join(mirror).join("sentinel")), b"pwned");
        assert_eq!(read(sb.dest.join(mirror).join("new")), b"new");
        assert_eq!(
            std::fs::read_link(sb.dest.join("evil")).unwrap(),
            sb.outside
        );
    }

    #[test]
    fn relative_dotdot_symlink_parent_stays_inside() {
        let sb = sandbox();
        let t = &sb.token;
        let mut l = Layer::new();
        l.symlink("up", "../../..")
            .file(format!("up/{t}"), b"clamped")
            .symlink("up2", "../outside")
            .file("up2/sentinel", b"pwned");
        assert_refused(sb.unpack(&l.finish()));
        sb.assert_contained();
        assert_eq!(read(sb.dest.join(t)), b"clamped");
    }

    #[test]
    fn symlinked_parent_chain_stays_inside() {
        let sb = sandbox();
        let jail = sb.outside.parent().unwrap().as_os_str().as_bytes().to_vec();
        let mut l = Layer::new();
        l.dir("real")
            .symlink("l1", "l2")
            .symlink("l2", "/real")
            .file("l1/f", b"inside")
            .symlink("a", "b")
            .symlink("b", "c/")
            .symlink("c", &jail)
            .file("a/outside/sentinel", b"pwned")
            .file("a/new/x", b"pwned");
        assert_refused(sb.unpack(&l.finish()));
        sb.assert_contained();
        assert_eq!(read(sb.dest.join("real/f")), b"inside");
    }

    #[test]
    fn hardlink_to_dotdot_target_is_refused() {
        let sb = sandbox();
        let mut l = Layer::new();
        l.hardlink("h", "../outside/sentinel");
        assert_refused(sb.unpack(&l.finish()));
        sb.assert_contained();
        assert!(sb.dest.join("h").symlink_metadata().is_err());
    }

    #[test]
    fn hardlink_dotdot_target_is_clamped_to_the_layers_own_file() {
        let sb = sandbox();
        let mut l = Layer::new();
        l.file("outside/sentinel", b"layer's own")
            .hardlink("h", "../../outside/sentinel");
        sb.unpack(&l.finish()).unwrap();
        sb.assert_contained();
        let own = sb.dest.join("outside/sentinel").metadata().unwrap();
        let h = sb.dest.join("h").metadata().unwrap();
        assert_eq!((h.ino(), h.nlink()), (own.ino(), 2));
    }

    #[test]
    fn hardlink_to_host_etc_passwd_is_refused() {
        let passwd = etc_passwd();
        for target in ["/etc/passwd", "../../../../../../../../etc/passwd"] {
            let sb = sandbox();
            let mut l = Layer::new();
            l.hardlink("h", target);
            assert_refused(sb.unpack(&l.finish()));
            sb.assert_contained();
            assert!(sb.dest.join("h").symlink_metadata().is_err());
        }
        assert_eq!(etc_passwd(), passwd);
    }

    #[test]
    fn hardlink_through_symlink_is_refused() {
        let passwd = etc_passwd();
        let sb = sandbox();
        let mut l = Layer::new();
        l.symlink("d", "/etc").hardlink("h", "d/passwd");
        assert_refused(sb.unpack(&l.finish()));
        sb.assert_contained();

        let sb = sandbox();
        let mut l = Layer::new();
        l.symlink("o", "../outside").hardlink("h", "o/sentinel");
        assert_refused(sb.unpack(&l.finish()));
        sb.assert_contained();

        let sb = sandbox();
        let mut l = Layer::new();
        l.symlink("o", sb.outside_bytes())
            .hardlink("h", "o/sentinel");
        assert_refused(sb.unpack(&l.finish()));
        sb.assert_contained();
        assert_eq!(etc_passwd(), passwd);
    }

    #[test]
    fn hardlink_to_symlink_links_the_symlink_itself() {
        let sb = sandbox();
        let mut sentinel = sb.outside_bytes().to_vec();
        sentinel.extend_from_slice(b"/sentinel");
        let mut l = Layer::new();
        l.symlink("s", &sentinel).hardlink("h", "s");
        sb.unpack(&l.finish()).unwrap();
        sb.assert_contained();
        let h = sb.dest.join("h").symlink_metadata().unwrap();
        assert!(h.is_symlink());
        assert_eq!(h.nlink(), 2);
    }

    // ---- whiteouts ----

    #[test]
    fn whiteout_of_missing_file_is_a_char_device() {
        let sb = sandbox();
        let mut l = Layer::new();
        l.file(".wh.gone", b"").file("dir/.wh.gone2", b"");
        let stats = sb.unpack(&l.finish()).unwrap();
        assert!(is_whiteout(&sb.dest.join("gone")));
        assert!(is_whiteout(&sb.dest.join("dir/gone2")));
        assert!(sb.dest.join(".wh.gone").symlink_metadata().is_err());
        assert!(sb.dest.join("dir/.wh.gone2").symlink_metadata().is_err());
        assert_eq!(stats.entries, 2);
        sb.assert_contained();
    }

    #[test]
    fn whiteout_cannot_reach_outside() {
        let sb = sandbox();
        let mut l = Layer::new();
        l.file("../.wh.sentinel", b"")
            .file("../outside/.wh.sentinel", b"");
        sb.unpack(&l.finish()).unwrap();
        sb.assert_contained();
        assert!(is_whiteout(&sb.dest.join("sentinel")));
        assert!(is_whiteout(&sb.dest.join("outside/sentinel")));
    }

    #[test]
    fn opaque_marker_sets_the_overlay_xattr() {
        let sb = sandbox();
        let mut l = Layer::new();
        l.dir("d")
            .file("d/keep", b"kept")
            .file("d/.wh..wh..opq", b"")
            .file("e/.wh..wh..opq", b"");
        sb.unpack(&l.finish()).unwrap();
        for dir in ["d", "e"] {
            let dir = sb.dest.join(dir);
            assert_eq!(
                xattr(&dir, "trusted.overlay.opaque").as_deref(),
                Some(&b"y"[..])
            );
            assert!(dir.join(".wh..wh..opq").symlink_metadata().is_err());
        }
        assert_eq!(read(sb.dest.join("d/keep")), b"kept");
        assert!(xattr(&sb.dest, "trusted.overlay.opaque").is_none());
        sb.assert_contained();
    }

    #[test]
    fn whiteout_name_tricks_are_refused() {
        let names: [&[u8]; 5] = [b".wh.", b"d/.wh..", b"d/.wh...", b".wh.x/y", b"d/.wh./z"];
        for name in names {
            let sb = sandbox();
            let mut l = Layer::new();
            l.dir("d").file(name, b"");
            assert_refused(sb.unpack(&l.finish()));
            sb.assert_contained();
            let whiteouts: Vec<_> = tree(&sb.dest, None, false)
                .into_iter()
                .filter(|(_, d)| d.contains("rdev="))
                .collect();
            assert!(whiteouts.is_empty(), "{name:?} made {whiteouts:?}");
        }
    }

    #[test]
    fn aufs_metadata_is_ignored() {
        let sb = sandbox();
        let mut l = Layer::new();
        l.dir(".wh..wh.plnk")
            .file(".wh..wh.plnk/123.456", b"x")
            .file(".wh..wh.aufs", b"");
        sb.unpack(&l.finish()).unwrap();
        assert_eq!(std::fs::read_dir(&sb.dest).unwrap().count(), 0);
    }

    #[test]
    fn overlay_xattrs_from_the_layer_are_skipped() {
        let sb = sandbox();
        let mut l = Layer::new();
        l.pax(&[
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.user.kept", b"v"),
        ])
        .dir("d");
        let stats = sb.unpack(&l.finish()).unwrap();
        assert!(xattr(&sb.dest.join("d"), "trusted.overlay.opaque").is_none());
        assert_eq!(
            xattr(&sb.dest.join("d"), "user.kept").as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(stats.skipped.len(), 1, "{:?}", stats.skipped);
        assert!(stats.skipped[0].contains("trusted.overlay.opaque"));
    }

    // ---- duplicates ----

    #[test]
    fn duplicate_entries_later_wins_without_following() {
        let sb = sandbox();
        let mut sentinel = sb.outside_bytes().to_vec();
        sentinel.extend_from_slice(b"/sentinel");
        let mut l = Layer::new();
        l.file("f", b"old")
            .symlink("f", &sentinel)
            .symlink("s", &sentinel)
            .file("s", b"new")
            .symlink("sd", sb.outside_bytes())
            .entry(b"sd/", EntryType::Directory, 0o700, b"", b"", |_| {})
            .dir("dd")
            .file("dd/child", b"c")
            .file("dd", b"now a file")
            .dir("keep")
            .file("keep/a", b"a")
            .entry(b"keep", EntryType::Directory, 0o700, b"", b"", |_| {})
            .file("x", b"x")
            .hardlink("y", "x")
            .file("y", b"other");
        sb.unpack(&l.finish()).unwrap();
        sb.assert_contained();
        let d = &sb.dest;
        assert_eq!(
            std::fs::read_link(d.join("f"))
                .unwrap()
                .as_os_str()
                .as_bytes(),
            sentinel
        );
        assert!(d.join("s").symlink_metadata().unwrap().is_file());
        assert_eq!(read(d.join("s")), b"new");
        let sd = d.join("sd").symlink_metadata().unwrap();
        assert!(sd.is_dir());
        assert_eq!(sd.mode() & 0o7777, 0o700);
        assert_eq!(read(d.join("dd")), b"now a file");
        let keep = d.join("keep").symlink_metadata().unwrap();
        assert_eq!(keep.mode() & 0o7777, 0o700);
        assert_eq!(read(d.join("keep/a")), b"a");
        assert_eq!(read(d.join("x")), b"x");
        assert_eq!(read(d.join("y")), b"other");
        assert_eq!(d.join("x").metadata().unwrap().nlink(), 1);
    }

    // ---- happy path ----

    fn rich_layer() -> (Vec<u8>, u64) {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut l = Layer::new();
        l.dir("./")
            .dir("usr")
            .dir("usr/bin")
            .file("usr/bin/tool", &big)
            .file("usr/bin/empty", b"")
            .symlink("bin", "usr/bin")
            .hardlink("usr/bin/tool2", "usr/bin/tool")
            .dir("etc")
            .file("etc/motd", b"hello\n")
            .file(".wh.removed", b"");
        let mut tar = l.finish();
        // GNU tar pads to 10 KiB records and the diff_id covers the padding too. Pad past
        // the stream buffer, so that only reading to the very end hashes it all.
        tar.resize(tar.len().div_ceil(10240) * 10240 + 2 * BUF_SIZE, 0);
        (tar, big.len() as u64 + 6)
    }

    #[test]
    fn gzip_zstd_and_plain_layers_give_the_same_tree_and_diff_id() {
        let (tar, content) = rich_layer();
        let want = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        assert_eq!(Compression::sniff(&gz), Compression::Gzip);
        assert_eq!(Compression::sniff(&zst), Compression::Zstd);
        assert_eq!(Compression::sniff(&tar), Compression::None);

        let mut trees = Vec::new();
        for (blob, compression) in [
            (&tar, Compression::None),
            (&gz, Compression::Gzip),
            (&zst, Compression::Zstd),
        ] {
            let sb = sandbox();
            let path = sb.tmp.path().join("blob");
            std::fs::write(&path, blob).unwrap();
            let stats = unpack_layer(&path, compression, &sb.dest).unwrap();
            assert_eq!(stats.diff_id, want, "{compression:?}");
            assert_eq!(stats.entries, 10);
            assert_eq!(stats.bytes, content);
            assert!(stats.skipped.is_empty(), "{:?}", stats.skipped);
            trees.push(tree(&sb.dest, None, false));
        }
        assert_eq!(trees[0], trees[1]);
        assert_eq!(trees[0], trees[2]);
        assert_eq!(trees[0].len(), 10, "{:#?}", trees[0]);
    }

    #[test]
    fn metadata_is_preserved() {
        let sb = sandbox();
        let mut l = Layer::new();
        l.entry(b"d", EntryType::Directory, 0o2775, b"", b"", |h| {
            h.set_uid(1000);
            h.set_gid(1001);
            h.set_mtime(1_400_000_000);
        })
        .pax(&[
            ("mtime", b"1500000000.123456789"),
            ("SCHILY.xattr.user.test", b"hello"),
        ])
        .entry(
            b"d/suid",
            EntryType::Regular,
            0o4755,
            b"",
            b"#!/bin/sh\n",
            |h| {
                h.set_uid(1234);
                h.set_gid(5678);
            },
        )
        .entry(b"d/ln", EntryType::Symlink, 0o777, b"suid", b"", |h| {
            h.set_uid(42);
            h.set_gid(43);
            h.set_mtime(1_300_000_000);
        })
        .entry(
            b"d/sub/sticky",
            EntryType::Directory,
            0o1777,
            b"",
            b"",
            |_| {},
        );
        let stats = sb.unpack(&l.finish()).unwrap();
        assert!(stats.skipped.is_empty(), "{:?}", stats.skipped);

        let suid = sb.dest.join("d/suid").symlink_metadata().unwrap();
        assert_eq!(suid.mode() & 0o7777, 0o4755);
        assert_eq!((suid.uid(), suid.gid()), (1234, 5678));
        assert_eq!(
            (suid.mtime(), suid.mtime_nsec()),
            (1_500_000_000, 123_456_789)
        );
        assert_eq!(
            xattr(&sb.dest.join("d/suid"), "user.test").as_deref(),
            Some(&b"hello"[..])
        );

        let d = sb.dest.join("d").symlink_metadata().unwrap();
        assert_eq!(d.mode() & 0o7777, 0o2775);
        assert_eq!((d.uid(), d.gid()), (1000, 1001));
        // Set after its content was created.
        assert_eq!(d.mtime(), 1_400_000_000);

        let ln = sb.dest.join("d/ln").symlink_metadata().unwrap();
        assert!(ln.is_symlink());
        assert_eq!((ln.uid(), ln.gid(), ln.mtime()), (42, 43, 1_300_000_000));

        let sticky = sb.dest.join("d/sub/sticky").symlink_metadata().unwrap();
        assert_eq!(sticky.mode() & 0o7777, 0o1777);
        assert_eq!(sticky.mtime(), MTIME as i64);
        // Implied parent: 0755 root whatever the umask.
        let sub = sb.dest.join("d/sub").symlink_metadata().unwrap();
        assert_eq!(sub.mode() & 0o7777, 0o755);
    }

    #[test]
    fn root_entry_sets_dest_metadata() {
        let sb = sandbox();
        let mut l = Layer::new();
        l.entry(b"./", EntryType::Directory, 0o711, b"", b"", |h| {
            h.set_mtime(1_234_567_890)
        })
        .file("./f", b"f");
        sb.unpack(&l.finish()).unwrap();
        let md = sb.dest.symlink_metadata().unwrap();
        assert_eq!(md.mode() & 0o7777, 0o711);
        assert_eq!(md.mtime(), 1_234_567_890);
        sb.assert_contained();

        for name in [".", "..", "/"] {
            let sb = sandbox();
            let mut l = Layer::new();
            l.symlink(name, "/somewhere");
            assert_refused(sb.unpack(&l.finish()));
            assert!(sb.dest.symlink_metadata().unwrap().is_dir());
            sb.assert_contained();
        }
    }

    #[test]
    fn old_style_directory_entry_is_a_directory() {
        let sb = sandbox();
        let mut l = Layer::new();
        l.entry(b"olddir/", EntryType::Regular, 0o750, b"", b"", |_| {})
            .file("olddir/f", b"f");
        sb.unpack(&l.finish()).unwrap();
        let md = sb.dest.join("olddir").symlink_metadata().unwrap();
        assert!(md.is_dir());
        assert_eq!(md.mode() & 0o7777, 0o750);
    }

    #[test]
    fn hardlink_within_layer_shares_the_inode() {
        let sb = sandbox();
        let mut l = Layer::new();
        l.file("a", b"shared")
            .hardlink("b", "a")
            .hardlink("sub/c", "./a");
        sb.unpack(&l.finish()).unwrap();
        let a = sb.dest.join("a").metadata().unwrap();
        let b = sb.dest.join("b").metadata().unwrap();
        let c = sb.dest.join("sub/c").metadata().unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 3));
        assert_eq!(a.ino(), c.ino());
        assert_eq!(read(sb.dest.join("sub/c")), b"shared");
    }

    #[test]
    fn device_nodes_and_fifos() {
        let sb = sandbox();
        let mut l = Layer::new();
        l.entry(b"dev/null", EntryType::Char, 0o666, b"", b"", |h| {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        })
        .entry(b"dev/loop0", EntryType::Block, 0o660, b"", b"", |h| {
            h.set_device_major(7).unwrap();
            h.set_device_minor(0).unwrap();
            h.set_gid(6);
        })
        .entry(b"run/pipe", EntryType::Fifo, 0o620, b"", b"", |_| {});
        let stats = sb.unpack(&l.finish()).unwrap();
        assert!(stats.skipped.is_empty(), "{:?}", stats.skipped);
        let null = sb.dest.join("dev/null").symlink_metadata().unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), libc::makedev(1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
        let lp = sb.dest.join("dev/loop0").symlink_metadata().unwrap();
        assert!(lp.file_type().is_block_device());
        assert_eq!((lp.rdev(), lp.gid()), (libc::makedev(7, 0), 6));
        let pipe = sb.dest.join("run/pipe").symlink_metadata().unwrap();
        assert!(pipe.file_type().is_fifo());
        assert_eq!(pipe.mode() & 0o7777, 0o620);
        assert_eq!(pipe.mtime(), MTIME as i64);
    }

    #[test]
    fn long_gnu_and_pax_names() {
        let sb = sandbox();
        let long = format!("{}/file", "d".repeat(120));
        let long_link = format!("/{}", "t".repeat(150));
        let mut b = Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"long"[..]).unwrap();
        let mut l = Layer { tar: b };
        l.pax(&[("path", b"pax/named")])
            .file("ignored-short-name", b"pax")
            .symlink(format!("{}/link", "l".repeat(110)), long_link.as_bytes());
        sb.unpack(&l.finish()).unwrap();
        assert_eq!(read(sb.dest.join(&long)), b"long");
        assert_eq!(read(sb.dest.join("pax/named")), b"pax");
        assert!(sb
            .dest
            .join("ignored-short-name")
            .symlink_metadata()
            .is_err());
        let link = sb.dest.join(format!("{}/link", "l".repeat(110)));
        assert_eq!(std::fs::read_link(link).unwrap(), Path::new(&long_link));
    }

    #[test]
    fn corrupt_streams_are_invalid_argument() {
        let (tar, _) = rich_layer();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let cases: [(&[u8], Compression); 4] = [
            (&gz[..gz.len() / 2], Compression::Gzip),
            (b"definitely not zstd", Compression::Zstd),
            // Cut inside usr/bin/tool's content.
            (&tar[..10_000], Compression::None),
            (&[0x55; 1024], Compression::None),
        ];
        for (blob, compression) in cases {
            let sb = sandbox();
            let e = unpack_reader(blob, compression, &sb.dest).unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidArgument, "{compression:?}: {e}");
            sb.assert_contained();
        }
        let e = unpack_layer(
            Path::new("/nonexistent/blob"),
            Compression::None,
            Path::new("/"),
        )
        .unwrap_err();
        assert_eq!(e.kind(), Kind::Internal);
    }

    /// `etc/` then `etc/a` (3 bytes) then `etc/b` (700 bytes): the offsets the cuts use.
    fn two_file_layer() -> Vec<u8> {
        let mut l = Layer::new();
        l.dir("etc")
            .file("etc/a", b"abc")
            .file("etc/b", &[b'x'; 700]);
        let tar = l.finish();
        // dir header 512, a: header 512 + data 3 (+509 padding), b: header 512 + 700 data
        // (+324 padding), two zero blocks; the tar crate pads no further.
        assert_eq!(tar.len(), 512 + 1024 + 512 + 1024 + 1024);
        tar
    }

    #[test]
    fn layer_without_end_of_archive_is_accepted() {
        let tar = two_file_layer();
        let b_end = 512 + 1024 + 512 + 700;
        // As umoci insert writes them: nothing after the last entry's data; then partial
        // padding, whole padding, and one of the two zero blocks.
        for cut in [b_end, b_end + 100, 3072, 3072 + 512] {
            let blob = &tar[..cut];
            let want = format!("sha256:{}", hex::encode(Sha256::digest(blob)));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(blob).unwrap();
            let gz = gz.finish().unwrap();
            for (bytes, compression) in [(blob, Compression::None), (&gz[..], Compression::Gzip)] {
                let sb = sandbox();
                let stats = unpack_reader(bytes, compression, &sb.dest)
                    .unwrap_or_else(|e| panic!("cut at {cut} ({compression:?}): {e}"));
                assert_eq!(
                    stats.diff_id, want,
                    "the diff_id covers the bytes as they are"
                );
                assert_eq!(stats.entries, 3);
                assert_eq!(read(sb.dest.join("etc/a")), b"abc");
                assert_eq!(read(sb.dest.join("etc/b")), [b'x'; 700]);
            }
        }
    }

    #[test]
    fn layer_cut_inside_an_entry_is_refused() {
        let tar = two_file_layer();
        // Inside etc/a's data, inside etc/b's header, inside etc/b's data (short by one),
        // and a header whose data is missing entirely.
        for cut in [
            512 + 512 + 2,
            1536 + 100,
            512 + 1024 + 512 + 699,
            512 + 1024 + 512,
        ] {
            let sb = sandbox();
            let e = assert_refused(unpack_reader(&tar[..cut], Compression::None, &sb.dest));
            assert!(matches!(e, UnpackError::Stream { .. }), "cut at {cut}: {e}");
        }
    }

    #[test]
    fn missing_trailer_is_only_supplied_right_after_an_entry() {
        assert_eq!(missing_trailer_end(0, None), None);
        assert_eq!(missing_trailer_end(515, Some(515)), Some(2048));
        assert_eq!(missing_trailer_end(1000, Some(515)), Some(2048));
        assert_eq!(missing_trailer_end(1024, Some(515)), Some(2048));
        assert_eq!(missing_trailer_end(1025, Some(515)), None);
        assert_eq!(missing_trailer_end(514, Some(515)), None);
        assert_eq!(missing_trailer_end(1024, Some(1024)), Some(2048));
    }

    #[test]
    fn media_types() {
        let cases = [
            (
                "application/vnd.oci.image.layer.v1.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar",
                Some(Compression::None),
            ),
            ("application/vnd.oci.image.config.v1+json", None),
            ("application/vnd.oci.image.layer.v1.tar+bzip2", None),
        ];
        for (media_type, want) in cases {
            assert_eq!(
                Compression::from_media_type(media_type),
                want,
                "{media_type}"
            );
        }
        assert_eq!(Compression::sniff(&[0x1f]), Compression::None);
        assert_eq!(Compression::sniff(&[]), Compression::None);
    }

    #[test]
    fn pax_times() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t("12"), Some((12, 0)));
        assert_eq!(t("12.5"), Some((12, 500_000_000)));
        assert_eq!(t("12.0000000019"), Some((12, 1)));
        assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(t("-3"), Some((-3, 0)));
        assert_eq!(t(""), None);
        assert_eq!(t("1e3"), None);
        assert_eq!(t(".5"), None);
    }

    /// A ~1 MB gzip layer (a few hundred files across dirs). Measures; asserts nothing on time.
    /// `cargo test --lib image::unpack::tests::unpack_1mb_gzip_timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn unpack_1mb_gzip_timing() {
        let mut l = Layer::new();
        let mut state = 0x2545_f491_u32;
        let mut total = 0;
        for d in 0..16 {
            l.dir(format!("usr/lib/pkg{d}"));
            for f in 0..16 {
                let len = 1024 + (f * 613 + d * 97) % 6144;
                // Half random, half text-like: compresses about like real binaries.
                let data: Vec<u8> = (0..len)
                    .map(|i| {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        if i % 2 == 0 {
                            (state & 0xff) as u8
                        } else {
                            b'a' + (i % 26) as u8
                        }
                    })
                    .collect();
                total += len;
                l.file(format!("usr/lib/pkg{d}/file{f}.so"), &data);
            }
            l.symlink(format!("usr/lib/pkg{d}/current"), "file0.so");
        }
        let tar = l.finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let mut times = Vec::new();
        for _ in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            let start = std::time::Instant::now();
            let stats = unpack_reader(&gz[..], Compression::Gzip, tmp.path()).unwrap();
            times.push(start.elapsed());
            assert_eq!(stats.bytes, total as u64);
        }
        times.sort();
        println!(
            "1 MB gzip layer: tar {} B, gzip {} B, {} entries; median {:?} (min {:?}, max {:?})",
            tar.len(),
            gz.len(),
            16 * 18,
            times[10],
            times[0],
            times[19]
        );
    }
}
