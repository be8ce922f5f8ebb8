//! Unit tests of layer unpacking: hostile names and links, whiteouts, metadata, streams.

use super::stream::missing_trailer_end;
use super::*;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::atomic::{AtomicU32, Ordering};
use tar::{Builder, EntryType, Header};

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
