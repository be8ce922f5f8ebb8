//! Who the container's process runs as: uid, gid and supplementary groups, resolved against
//! the image's own /etc/passwd and /etc/group.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use k8s_cri::v1::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};
use oci_spec::runtime::Spec;

use super::{process_mut, security_context, SpecError, SpecInput};

/// One line of /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One line of /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The image's user database. Empty when the image has no /etc/passwd or /etc/group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserDb {
    pub users: Vec<PasswdEntry>,
    pub groups: Vec<GroupEntry>,
}

impl UserDb {
    fn user_by_name(&self, name: &str) -> Option<&PasswdEntry> {
        self.users.iter().find(|u| u.name == name)
    }

    fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.users.iter().find(|u| u.uid == uid)
    }

    fn group_by_name(&self, name: &str) -> Option<&GroupEntry> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// The highest uid/gid accepted, as Kubernetes validates runAsUser/runAsGroup and containerd
/// parses image users; (u32)-1 is the kernel's "no id".
const MAX_ID: i64 = i32::MAX as i64;

/// The process identity the spec gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, primary gid first (see [`resolve_user`]).
    pub additional_gids: Vec<u32>,
}

pub fn apply_user(spec: &mut Spec, input: &SpecInput) -> Result<(), SpecError> {
    let resolved = resolve_user(
        security_context(input.config),
        input.image.user().as_deref(),
        input.users,
    )?;
    let user = process_mut(spec).user_mut();
    user.set_uid(resolved.uid);
    user.set_gid(resolved.gid);
    user.set_additional_gids(Some(resolved.additional_gids));
    user.set_username(None);
    user.set_umask(None);
    Ok(())
}

/// Resolves the user the way containerd's CRI plugin does:
/// - `run_as_username`, else `run_as_user`, else the image `User` (`name`, `uid`, `name:group`,
///   `uid:gid`, empty = root);
/// - a name must exist in /etc/passwd; a numeric uid need not (gid 0 then, else its passwd gid);
/// - `run_as_group` replaces the gid and is only valid together with a CRI user;
/// - supplementary groups = the groups of /etc/group listing the user's name (unless the
///   policy is Strict) + `supplemental_groups`, deduplicated, with the primary gid first.
///
/// The primary gid is kept in the supplementary list (containerd's `ensureAdditionalGids`,
/// the fix for CVE-2023-25173): a process that later changes its gid (setgid binary, `sg`)
/// must not shed its original group and slip past "deny this group" permissions.
pub fn resolve_user(
    sc: Option<&LinuxContainerSecurityContext>,
    image_user: Option<&str>,
    db: &UserDb,
) -> Result<ResolvedUser, SpecError> {
    let cri_name = sc.map(|s| s.run_as_username.as_str()).unwrap_or_default();
    let cri_uid = sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value);
    let cri_gid = sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value);

    let (uid, mut gid, username) = if !cri_name.is_empty() {
        let entry = db
            .user_by_name(cri_name)
            .ok_or_else(|| SpecError::UserNotFound(cri_name.to_string()))?;
        (entry.uid, entry.gid, Some(entry.name.clone()))
    } else if let Some(uid) = cri_uid {
        let uid = checked_id(uid, &uid.to_string(), "uid")?;
        let (gid, name) = db
            .user_by_uid(uid)
            .map_or((0, None), |e| (e.gid, Some(e.name.clone())));
        (uid, gid, name)
    } else {
        resolve_image_user(image_user.unwrap_or_default(), db)?
    };

    if let Some(g) = cri_gid {
        if cri_name.is_empty() && cri_uid.is_none() {
            return Err(SpecError::GroupWithoutUser);
        }
        gid = checked_id(g, &g.to_string(), "gid")?;
    }

    let strict =
        sc.is_some_and(|s| s.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32);
    let mut additional = vec![gid];
    if let (Some(name), false) = (&username, strict) {
        for g in &db.groups {
            if g.members.iter().any(|m| m == name) && !additional.contains(&g.gid) {
                additional.push(g.gid);
            }
        }
    }
    for &g in sc
        .map(|s| s.supplemental_groups.as_slice())
        .unwrap_or_default()
    {
        let g = checked_id(g, &g.to_string(), "supplemental group")?;
        if !additional.contains(&g) {
            additional.push(g);
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
    })
}

/// The image config's `User`: `user[:group]`, each part a name or a number.
fn resolve_image_user(spec: &str, db: &UserDb) -> Result<(u32, u32, Option<String>), SpecError> {
    if spec.is_empty() {
        let name = db.user_by_uid(0).map(|e| e.name.clone());
        return Ok((0, 0, name));
    }
    let invalid = |reason: &str| SpecError::InvalidUser {
        user: spec.to_string(),
        reason: reason.to_string(),
    };
    let (user, group) = match spec.split_once(':') {
        Some((_, g)) if g.contains(':') => return Err(invalid("more than one ':'")),
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(invalid("empty user or group part"));
    }

    let (uid, mut gid, name) = match numeric_id(user, spec, "uid")? {
        Some(uid) => {
            let (gid, name) = db
                .user_by_uid(uid)
                .map_or((0, None), |e| (e.gid, Some(e.name.clone())));
            (uid, gid, name)
        }
        None => {
            let e = db
                .user_by_name(user)
                .ok_or_else(|| SpecError::UserNotFound(user.to_string()))?;
            (e.uid, e.gid, Some(e.name.clone()))
        }
    };
    if let Some(group) = group {
        gid = match numeric_id(group, spec, "gid")? {
            Some(gid) => gid,
            None => {
                db.group_by_name(group)
                    .ok_or_else(|| SpecError::GroupNotFound(group.to_string()))?
                    .gid
            }
        };
    }
    Ok((uid, gid, name))
}

/// `Some(id)` when `part` is all digits (then it must be in range), `None` for a name.
fn numeric_id(part: &str, whole: &str, what: &str) -> Result<Option<u32>, SpecError> {
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let value: i64 = part.parse().map_err(|_| SpecError::InvalidUser {
        user: whole.to_string(),
        reason: format!("{what} out of range"),
    })?;
    checked_id(value, whole, what).map(Some)
}

fn checked_id(value: i64, whole: &str, what: &str) -> Result<u32, SpecError> {
    if !(0..=MAX_ID).contains(&value) {
        return Err(SpecError::InvalidUser {
            user: whole.to_string(),
            reason: format!("{what} {value} out of range 0..={MAX_ID}"),
        });
    }
    u32::try_from(value).map_err(|_| SpecError::InvalidUser {
        user: whole.to_string(),
        reason: format!("{what} out of range"),
    })
}

/// Parses /etc/passwd (`name:password:uid:gid:gecos:home:shell`). Comments, blank lines, NIS
/// `+`/`-` lines and lines with a missing or non-numeric uid/gid are skipped, like libc does.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            if line.is_empty() || line.starts_with('#') || line.starts_with(['+', '-']) {
                return None;
            }
            let mut f = line.split(':');
            let name = f.next()?;
            let _password = f.next()?;
            let uid = f.next()?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            let _gecos = f.next();
            let home = f.next().unwrap_or_default();
            (!name.is_empty()).then(|| PasswdEntry {
                name: name.to_string(),
                uid,
                gid,
                home: home.to_string(),
            })
        })
        .collect()
}

/// Parses /etc/group (`name:password:gid:member,member`), skipping what libc skips.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            if line.is_empty() || line.starts_with('#') || line.starts_with(['+', '-']) {
                return None;
            }
            let mut f = line.split(':');
            let name = f.next()?;
            let _password = f.next()?;
            let gid = f.next()?.parse().ok()?;
            let members = f
                .next()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect();
            (!name.is_empty()).then(|| GroupEntry {
                name: name.to_string(),
                gid,
                members,
            })
        })
        .collect()
}

/// Files larger than this are refused: a real passwd is kilobytes; a hostile image could ship
/// a sparse multi-gigabyte one to exhaust the daemon's memory.
const MAX_USER_DB_FILE: u64 = 16 << 20;

/// Reads `<rootfs>/etc/passwd` and `<rootfs>/etc/group`. A missing file gives an empty list.
///
/// The rootfs comes from an image and is hostile: `/etc/passwd -> /etc/shadow` (or
/// `../../../../etc/shadow`) must resolve to the image's file, not the host's. Both files are
/// opened with openat2(RESOLVE_IN_ROOT), so every symlink and `..` is resolved as if `rootfs`
/// were `/`; magic links (/proc/self/...) are refused. They are opened O_NONBLOCK and must be
/// regular files, so a FIFO or device planted there cannot block or feed the daemon.
pub fn read_user_db(rootfs: &Path) -> Result<UserDb, SpecError> {
    let root = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(rootfs)
        .map_err(|source| SpecError::ReadUserDb {
            path: rootfs.display().to_string(),
            source,
        })?;
    let users = read_in_root(&root, "etc/passwd")?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default();
    let groups = read_in_root(&root, "etc/group")?
        .map(|t| parse_group(&t))
        .unwrap_or_default();
    Ok(UserDb { users, groups })
}

/// `struct open_how` of openat2(2); libc's is `#[non_exhaustive]`, so it cannot be built here.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Reads `rel` inside the directory `root` as if `root` were `/`. `Ok(None)` when absent.
fn read_in_root(root: &File, rel: &str) -> Result<Option<String>, SpecError> {
    let shown = format!("/{rel}");
    let io_err = |source| SpecError::ReadUserDb {
        path: shown.clone(),
        source,
    };
    let c_rel = CString::new(Path::new(rel).as_os_str().as_bytes())
        .map_err(|e| io_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // EAGAIN: the kernel saw a concurrent rename inside the root and asks for a retry.
    let mut attempts = 0;
    let fd = loop {
        // SAFETY: a plain syscall with a valid dirfd, a NUL-terminated path and a pointer to a
        // correctly sized, initialised open_how; the result is checked below.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c_rel.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if ret >= 0 {
            let raw = i32::try_from(ret)
                .map_err(|_| io_err(std::io::Error::other("openat2 returned an invalid fd")))?;
            // SAFETY: the kernel just returned this fd to us and nothing else owns it.
            break unsafe { OwnedFd::from_raw_fd(raw) };
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => return Ok(None),
            Some(libc::EAGAIN) if attempts < 8 => attempts += 1,
            _ => return Err(io_err(err)),
        }
    };
    let mut file = File::from(fd);
    let meta = file.metadata().map_err(io_err)?;
    if !meta.file_type().is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else if meta.file_type().is_fifo() {
            "a FIFO"
        } else {
            "not a regular file"
        };
        return Err(SpecError::BadUserDbFile {
            path: shown,
            reason: format!("is {kind}"),
        });
    }
    if meta.len() > MAX_USER_DB_FILE {
        return Err(SpecError::BadUserDbFile {
            path: shown,
            reason: format!("{} bytes, more than {MAX_USER_DB_FILE}", meta.len()),
        });
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_USER_DB_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_USER_DB_FILE {
        return Err(SpecError::BadUserDbFile {
            path: shown,
            reason: format!("more than {MAX_USER_DB_FILE} bytes"),
        });
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::*;
    use crate::error::{Classify, Kind};
    use k8s_cri::v1::Int64Value;

    fn db() -> UserDb {
        UserDb {
            users: parse_passwd(
                "root:x:0:0:root:/root:/bin/sh\n\
                 # comment\n\
                 daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n\
                 app:x:1000:1000:App:/home/app:/bin/sh\n\
                 nogid:x:1001:50::/:/bin/sh\n",
            ),
            groups: parse_group(
                "root:x:0:\n\
                 app:x:1000:\n\
                 wheel:x:10:root,app\n\
                 audio:x:29:app, daemon\n\
                 staff:x:50:\n",
            ),
        }
    }

    fn sc() -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext::default()
    }

    #[test]
    fn parse_passwd_skips_junk() {
        let users = parse_passwd(
            "root:x:0:0:root:/root:/bin/sh\n\n#c\n+nis\nbad:x:notanumber:0::/:\nshort:x:1\n:x:5:5::/:\nok:x:7:8\r\n",
        );
        assert_eq!(users.len(), 2);
        assert_eq!(
            users[1],
            PasswdEntry {
                name: "ok".into(),
                uid: 7,
                gid: 8,
                home: String::new()
            }
        );
    }

    #[test]
    fn parse_group_reads_members() {
        let groups = parse_group("wheel:x:10:a,b,,c\nempty:x:11:\nnomembers:x:12\nbad:x:z:a\n");
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].members, ["a", "b", "c"]);
        assert!(groups[1].members.is_empty());
        assert!(groups[2].members.is_empty());
    }

    #[test]
    fn no_user_anywhere_is_root() {
        let r = resolve_user(None, None, &UserDb::default()).unwrap();
        assert_eq!(
            r,
            ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![0]
            }
        );
    }

    #[test]
    fn root_gets_groups_listing_root() {
        let r = resolve_user(None, Some(""), &db()).unwrap();
        assert_eq!((r.uid, r.gid), (0, 0));
        assert_eq!(r.additional_gids, [0, 10]);
    }

    #[test]
    fn run_as_username_is_resolved() {
        let mut c = sc();
        c.run_as_username = "app".into();
        let r = resolve_user(Some(&c), Some("daemon"), &db()).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1000));
        assert_eq!(r.additional_gids, [1000, 10, 29]);
    }

    #[test]
    fn unknown_run_as_username_is_an_error() {
        let mut c = sc();
        c.run_as_username = "nobody2".into();
        let err = resolve_user(Some(&c), None, &db()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "user \"nobody2\" not found in /etc/passwd of the image"
        );
        assert_eq!(err.kind(), Kind::InvalidArgument);
    }

    #[test]
    fn run_as_user_beats_image_user() {
        let mut c = sc();
        c.run_as_user = Some(Int64Value { value: 1 });
        let r = resolve_user(Some(&c), Some("app"), &db()).unwrap();
        assert_eq!((r.uid, r.gid), (1, 1));
        assert_eq!(r.additional_gids, [1, 29]);
    }

    #[test]
    fn numeric_uid_without_passwd_entry_gets_gid_zero() {
        let mut c = sc();
        c.run_as_user = Some(Int64Value { value: 4242 });
        let r = resolve_user(Some(&c), None, &UserDb::default()).unwrap();
        assert_eq!((r.uid, r.gid), (4242, 0));
        assert_eq!(r.additional_gids, [0]);
    }

    #[test]
    fn run_as_group_overrides_gid() {
        let mut c = sc();
        c.run_as_user = Some(Int64Value { value: 1000 });
        c.run_as_group = Some(Int64Value { value: 3000 });
        let r = resolve_user(Some(&c), None, &db()).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 3000));
        assert_eq!(r.additional_gids, [3000, 10, 29]);
    }

    #[test]
    fn run_as_group_without_user_is_an_error() {
        let mut c = sc();
        c.run_as_group = Some(Int64Value { value: 3000 });
        let err = resolve_user(Some(&c), Some("app"), &db()).unwrap_err();
        assert!(matches!(err, SpecError::GroupWithoutUser));
        assert_eq!(err.kind(), Kind::InvalidArgument);
    }

    #[test]
    fn supplemental_groups_are_added_once_after_primary() {
        let mut c = sc();
        c.run_as_user = Some(Int64Value { value: 1000 });
        c.supplemental_groups = vec![2000, 10, 1000, 2000];
        let r = resolve_user(Some(&c), None, &db()).unwrap();
        assert_eq!(r.additional_gids, [1000, 10, 29, 2000]);
    }

    #[test]
    fn strict_policy_ignores_etc_group() {
        let mut c = sc();
        c.run_as_user = Some(Int64Value { value: 1000 });
        c.supplemental_groups = vec![2000];
        c.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
        let r = resolve_user(Some(&c), None, &db()).unwrap();
        assert_eq!(r.additional_gids, [1000, 2000]);
    }

    #[test]
    fn out_of_range_ids_are_rejected() {
        let mut c = sc();
        c.run_as_user = Some(Int64Value { value: -1 });
        assert!(matches!(
            resolve_user(Some(&c), None, &db()),
            Err(SpecError::InvalidUser { .. })
        ));
        c.run_as_user = Some(Int64Value { value: 1 << 40 });
        assert!(resolve_user(Some(&c), None, &db()).is_err());
        c.run_as_user = Some(Int64Value { value: 1 });
        c.supplemental_groups = vec![-5];
        assert!(resolve_user(Some(&c), None, &db()).is_err());
        assert!(resolve_user(None, Some("99999999999999999999"), &db()).is_err());
    }

    #[test]
    fn image_user_forms() {
        let d = db();
        let r = resolve_user(None, Some("app"), &d).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1000));
        let r = resolve_user(None, Some("1000"), &d).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1000));
        assert_eq!(
            r.additional_gids,
            [1000, 10, 29],
            "uid resolves to a name for groups"
        );
        let r = resolve_user(None, Some("app:staff"), &d).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 50));
        let r = resolve_user(None, Some("1000:7"), &d).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 7));
        let r = resolve_user(None, Some("5555:wheel"), &d).unwrap();
        assert_eq!((r.uid, r.gid), (5555, 10));
        let r = resolve_user(None, Some("nogid"), &d).unwrap();
        assert_eq!((r.uid, r.gid), (1001, 50));
    }

    #[test]
    fn image_user_errors() {
        let d = db();
        assert!(matches!(
            resolve_user(None, Some("ghost"), &d),
            Err(SpecError::UserNotFound(ref n)) if n == "ghost"
        ));
        assert!(matches!(
            resolve_user(None, Some("app:ghosts"), &d),
            Err(SpecError::GroupNotFound(ref n)) if n == "ghosts"
        ));
        for bad in ["a:b:c", ":", "app:", ":10"] {
            assert!(
                matches!(
                    resolve_user(None, Some(bad), &d),
                    Err(SpecError::InvalidUser { .. })
                ),
                "{bad}"
            );
        }
        // No /etc/passwd at all: a name cannot be resolved.
        assert!(resolve_user(None, Some("app"), &UserDb::default()).is_err());
    }

    #[test]
    fn apply_user_sets_process_user() {
        let mut f = Fixture::new();
        f.users = db();
        f.image = serde_json::from_str(r#"{"User":"app"}"#).unwrap();
        let mut spec = Spec::default();
        apply_user(&mut spec, &f.input()).unwrap();
        let u = spec.process().as_ref().unwrap().user();
        assert_eq!((u.uid(), u.gid()), (1000, 1000));
        assert_eq!(u.additional_gids().as_deref(), Some(&[1000, 10, 29][..]));
    }

    #[test]
    fn read_user_db_reads_files_and_tolerates_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(etc.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let db = read_user_db(dir.path()).unwrap();
        assert_eq!(db.users.len(), 1);
        assert!(db.groups.is_empty());

        let empty = tempfile::tempdir().unwrap();
        assert_eq!(read_user_db(empty.path()).unwrap(), UserDb::default());
    }

    #[test]
    fn read_user_db_resolves_symlinks_inside_the_rootfs() {
        // A hostile image links /etc/passwd to an absolute path and to a `..` escape; both
        // must land inside the rootfs, never on the host's file.
        let host = tempfile::tempdir().unwrap();
        let host_secret = host.path().join("secret");
        std::fs::write(&host_secret, "hostroot:x:0:0::/:/bin/sh\n").unwrap();

        let rootfs = tempfile::tempdir().unwrap();
        let etc = rootfs.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::os::unix::fs::symlink(&host_secret, etc.join("passwd")).unwrap();
        let up = "../".repeat(32) + host_secret.strip_prefix("/").unwrap().to_str().unwrap();
        std::os::unix::fs::symlink(&up, etc.join("group")).unwrap();

        let db = read_user_db(rootfs.path()).unwrap();
        assert!(db.users.is_empty(), "read the host's file: {:?}", db.users);
        assert!(db.groups.is_empty());

        // The same absolute target present inside the rootfs is what gets read.
        let inside = rootfs.path().join(host_secret.strip_prefix("/").unwrap());
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::write(&inside, "img:x:5:5::/:/bin/sh\n").unwrap();
        let db = read_user_db(rootfs.path()).unwrap();
        assert_eq!(db.users[0].name, "img");
    }

    #[test]
    fn read_user_db_refuses_fifo_and_directory() {
        let rootfs = tempfile::tempdir().unwrap();
        let etc = rootfs.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        let fifo = CString::new(etc.join("passwd").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let err = read_user_db(rootfs.path()).unwrap_err();
        assert!(matches!(err, SpecError::BadUserDbFile { .. }), "{err}");
        assert_eq!(err.kind(), Kind::InvalidArgument);

        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::fs::create_dir(etc.join("passwd")).unwrap();
        assert!(matches!(
            read_user_db(rootfs.path()),
            Err(SpecError::BadUserDbFile { .. })
        ));
    }

    #[test]
    fn read_user_db_missing_rootfs_is_internal() {
        let err = read_user_db(Path::new("/nonexistent/proxrt-rootfs")).unwrap_err();
        assert_eq!(err.kind(), Kind::Internal);
    }
}
