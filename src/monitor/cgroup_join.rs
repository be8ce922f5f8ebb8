//! Putting a new process into cgroups without the kernel's cgroup migration lock.
//!
//! A move through `cgroup.procs` takes the kernel's global `cgroup_threadgroup_rwsem` for
//! writing, whose writer first waits for an RCU grace period when no move happened within
//! about the last one (4–16 ms on the test VM; docs/benchmarks.md, "A lone exec without the
//! cgroup migration lock"), and holds off every fork, exec and exit on the host meanwhile.
//! Two ways around it, used by the exec child (`enter.rs`) and the pod holder
//! (`sandbox.rs`): in a cgroup v1 hierarchy a single-threaded process writes "0" into the
//! cgroup's `tasks` (a thread moving itself takes no global lock); in cgroup v2, where only
//! threaded subtrees move single threads, the process is created in its cgroup by
//! `clone3(CLONE_INTO_CGROUP)`, with a write into `cgroup.procs` only when the kernel
//! refuses that.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::process::{fork_into_cgroup, Forked};

/// The cgroups a process about to be forked starts in, opened by its parent.
pub(crate) struct CgroupJoin {
    /// The `tasks` file of each cgroup v1 cgroup, which the child writes "0" into.
    tasks: Vec<(File, PathBuf)>,
    /// The cgroup v2 cgroup, opened for `clone3(CLONE_INTO_CGROUP)`, and its `cgroup.procs`
    /// (opened for writing) for when the kernel refuses that.
    v2: Option<(File, File, PathBuf)>,
}

impl CgroupJoin {
    /// From the files through which a process joins each cgroup: `…/tasks` in v1,
    /// `…/cgroup.procs` in v2 (`enter::cgroup_join_files`).
    pub(crate) fn open(files: &[PathBuf]) -> io::Result<CgroupJoin> {
        let mut join = CgroupJoin {
            tasks: Vec::new(),
            v2: None,
        };
        for file in files {
            let opened = open_write(file)?;
            match file.parent().filter(|_| file.ends_with("cgroup.procs")) {
                Some(dir) => {
                    let dir_fd = OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
                        .open(dir)
                        .map_err(named(dir))?;
                    join.v2 = Some((dir_fd, opened, file.clone()));
                }
                None => join.tasks.push((opened, file.clone())),
            }
        }
        Ok(join)
    }

    /// From cgroup directories: a v1 one has a `tasks` file, a v2 one does not.
    pub(crate) fn open_dirs(dirs: &[PathBuf]) -> io::Result<CgroupJoin> {
        let files: Vec<PathBuf> = dirs
            .iter()
            .map(|dir| match dir.join("tasks") {
                tasks if tasks.is_file() => tasks,
                _ => dir.join("cgroup.procs"),
            })
            .collect();
        CgroupJoin::open(&files)
    }

    /// Forks (the caller must be single-threaded), the child created in the v2 cgroup
    /// when there is one and the kernel agrees.
    pub(crate) fn fork(&self) -> io::Result<Forked> {
        fork_into_cgroup(self.v2.as_ref().map(|(dir, _, _)| dir))
    }

    /// In the child: joins each v1 cgroup, and the v2 one unless it was created there.
    pub(crate) fn join(self, in_cgroup: bool) -> Result<(), String> {
        let v2 = self
            .v2
            .filter(|_| !in_cgroup)
            .map(|(_, procs, path)| (procs, path));
        for (mut file, path) in self.tasks.into_iter().chain(v2) {
            // "0" is the writer itself, whatever its pid is called in its namespace.
            file.write_all(b"0")
                .map_err(|e| format!("join cgroup {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

fn open_write(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(named(path))
}

fn named(path: &Path) -> impl FnOnce(io::Error) -> io::Error {
    let path = path.to_owned();
    move |e| io::Error::new(e.kind(), format!("open {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dir_with_tasks_is_v1_and_one_without_is_v2() {
        let base = tempfile::tempdir().unwrap();
        let (v1, v2) = (base.path().join("v1"), base.path().join("v2"));
        for dir in [&v1, &v2] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        }
        std::fs::write(v1.join("tasks"), "").unwrap();
        let join = CgroupJoin::open_dirs(&[v1.clone(), v2.clone()]).unwrap();
        assert_eq!(join.tasks.len(), 1);
        assert_eq!(join.tasks[0].1, v1.join("tasks"));
        assert_eq!(join.v2.as_ref().unwrap().2, v2.join("cgroup.procs"));
        // Not started in the v2 one: both files get "0".
        join.join(false).unwrap();
        assert_eq!(std::fs::read_to_string(v1.join("tasks")).unwrap(), "0");
        assert_eq!(
            std::fs::read_to_string(v2.join("cgroup.procs")).unwrap(),
            "0"
        );
    }
}
