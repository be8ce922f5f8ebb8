//! Layer unpacking: one OCI/Docker layer tar, alone, into an overlayfs-ready snapshot dir.
//!
//! The snapshot is a lowerdir: OCI whiteouts (`.wh.name`) become overlayfs whiteouts (a 0:0
//! character device named `name`), opaque markers (`.wh..wh..opq`) become the
//! `trusted.overlay.opaque=y` xattr on their directory. The `diff_id` is the sha256 of the whole
//! uncompressed stream, read to its end (trailer and padding included).
//!
//! # Hostile layers
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
//! `stream.rs` the reader adapters under the tar reader (diff_id hash, missing end of archive),
//! `unpacker.rs` the per-entry work (create, replace, whiteouts, metadata).

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::error::{Classify, Kind};

mod stream;
mod sys;
#[cfg(test)]
mod tests;
mod unpacker;

use stream::{HashingReader, StreamPos, TrailerReader};
use unpacker::Unpacker;

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
