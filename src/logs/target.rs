//! `LogTarget`: a CRI log file as a directory kubelet owns plus a path confined beneath it.
//!
//! The pair comes from a request (`log_directory` of the pod, `log_path` of the container)
//! and the file is written as root: joined naively, `../../etc/profile.d/x.sh` or a symlink
//! planted in the log directory would let a container append to any host file. So the file
//! is never opened by its joined path: every component below the directory is walked with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from a descriptor on the directory, and
//! missing directories on the way are made with `mkdirat` on the descriptor of their parent.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

/// Where a container's CRI log goes: `dir` (the pod's log directory, absolute) and `file`
/// (relative, only normal components: checked by whoever builds it, again on open).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogTarget {
    pub dir: PathBuf,
    pub file: PathBuf,
}

/// Mode of a new log file: kubelet reads it as root; group-readable for log shippers run
/// with the owner's group, as containerd does.
const LOG_FILE_MODE: u32 = 0o640;
/// Mode of a directory made on the way to the log file (kubelet makes its own 0755).
const LOG_DIR_MODE: u32 = 0o755;

impl LogTarget {
    /// The file as one path, for status answers and messages (never for opening it).
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    /// Opens the log file for appending, creating it and the directories on the way below
    /// `dir` (and `dir` itself), refusing `..`, absolute paths and symlinks below `dir`.
    /// Returns the file and whether this call created it.
    pub fn open_append(&self) -> io::Result<(File, bool)> {
        let (parent, name) = self.open_parent(true)?;
        let how = |flags: OFlag| {
            let how = OpenHow::new()
                .flags(flags | OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CLOEXEC)
                .resolve(beneath());
            // openat2 refuses a mode without O_CREAT (EINVAL), unlike open(2).
            match flags.contains(OFlag::O_CREAT) {
                true => how.mode(Mode::from_bits_truncate(LOG_FILE_MODE)),
                false => how,
            }
        };
        let context = |e: nix::Error| self.error("open", e.into());
        let (fd, created) = match openat2(
            parent.as_raw_fd(),
            name.as_os_str(),
            how(OFlag::O_CREAT | OFlag::O_EXCL),
        ) {
            Ok(fd) => (fd, true),
            Err(nix::errno::Errno::EEXIST) => (
                openat2(parent.as_raw_fd(), name.as_os_str(), how(OFlag::empty()))
                    .map_err(context)?,
                false,
            ),
            Err(e) => return Err(context(e)),
        };
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        Ok((unsafe { File::from_raw_fd(fd) }, created))
    }

    /// Removes the log file (a create that failed undoes the file it made), resolving its
    /// directory the same confined way.
    pub fn remove(&self) -> io::Result<()> {
        let (parent, name) = self.open_parent(false)?;
        nix::unistd::unlinkat(
            Some(parent.as_raw_fd()),
            name.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .map_err(|e| self.error("remove", e.into()))
    }

    /// A descriptor on the directory holding the file, and the file's name. With `create`,
    /// `dir` and the directories below it are made when missing.
    fn open_parent(&self, create: bool) -> io::Result<(OwnedFd, PathBuf)> {
        let (subdirs, name) = split_confined(&self.file)
            .ok_or_else(|| self.error("open", io::ErrorKind::InvalidInput.into()))?;
        if create {
            std::fs::create_dir_all(&self.dir).map_err(|e| self.error("create directory", e))?;
        }
        let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let raw = nix::fcntl::open(&self.dir, dir_flags, Mode::empty())
            .map_err(|e| self.error("open directory", e.into()))?;
        // SAFETY: a new descriptor that nothing else owns.
        let mut dir = unsafe { OwnedFd::from_raw_fd(raw) };
        for sub in subdirs {
            if create {
                match nix::sys::stat::mkdirat(
                    Some(dir.as_raw_fd()),
                    sub.as_os_str(),
                    Mode::from_bits_truncate(LOG_DIR_MODE),
                ) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(self.error("create directory", e.into())),
                }
            }
            let how = OpenHow::new().flags(dir_flags).resolve(beneath());
            let raw = openat2(dir.as_raw_fd(), sub.as_os_str(), how)
                .map_err(|e| self.error("open directory", e.into()))?;
            // SAFETY: as above.
            dir = unsafe { OwnedFd::from_raw_fd(raw) };
        }
        Ok((dir, name))
    }

    /// Adds what and where; a path that leads through a symlink (ELOOP) or out of the
    /// directory (EXDEV) becomes `InvalidInput`: the request's fault, not the host's.
    fn error(&self, what: &str, e: io::Error) -> io::Error {
        let kind = match e.raw_os_error() {
            Some(libc::ELOOP | libc::EXDEV) => io::ErrorKind::InvalidInput,
            _ => e.kind(),
        };
        io::Error::new(
            kind,
            format!(
                "{what} log {} (confined to {}): {e}",
                self.file.display(),
                self.dir.display()
            ),
        )
    }
}

fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS
}

/// The directories and the file name of a relative path made only of normal components
/// (`.` is skipped); None for anything else (absolute, `..`, empty).
pub fn split_confined(file: &Path) -> Option<(Vec<PathBuf>, PathBuf)> {
    let mut parts = Vec::new();
    for c in file.components() {
        match c {
            Component::Normal(p) => parts.push(PathBuf::from(p)),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    let name = parts.pop()?;
    Some((parts, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn target(dir: &Path, file: &str) -> LogTarget {
        LogTarget {
            dir: dir.to_owned(),
            file: file.into(),
        }
    }

    #[test]
    fn split_accepts_only_normal_relative_components() {
        let split = |p: &str| split_confined(Path::new(p));
        assert_eq!(
            split("c/./0.log"),
            Some((vec![PathBuf::from("c")], PathBuf::from("0.log")))
        );
        assert_eq!(split("0.log"), Some((vec![], PathBuf::from("0.log"))));
        for bad in ["", ".", "../x.log", "a/../../x.log", "/etc/x.log"] {
            assert_eq!(split(bad), None, "{bad}");
        }
    }

    #[test]
    fn creates_the_file_and_its_directories_then_appends() {
        let tmp = tempfile::tempdir().unwrap();
        let t = target(&tmp.path().join("pod"), "c/sub/0.log");
        let (mut f, created) = t.open_append().unwrap();
        assert!(created);
        f.write_all(b"one\n").unwrap();
        let (mut f, created) = t.open_append().unwrap();
        assert!(!created);
        f.write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(t.path()).unwrap(), "one\ntwo\n");
        t.remove().unwrap();
        assert!(!t.path().exists());
    }

    #[test]
    fn symlinks_below_the_directory_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim"), "").unwrap();
        let dir = tmp.path().join("pod");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), dir.join("file.log")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("sub")).unwrap();
        for file in ["file.log", "sub/victim", "sub/new.log"] {
            let err = target(&dir, file).open_append().expect_err(file);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{file}: {err}");
            assert!(err.to_string().contains("symbolic links"), "{file}: {err}");
        }
        assert_eq!(std::fs::read_to_string(outside.join("victim")).unwrap(), "");
        assert!(!outside.join("new.log").exists());
    }

    #[test]
    fn dot_dot_is_refused_even_when_built_by_hand() {
        let tmp = tempfile::tempdir().unwrap();
        let err = target(tmp.path(), "../x.log").open_append().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
