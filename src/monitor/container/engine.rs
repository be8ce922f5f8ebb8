//! The engine that created the container (libcontainer or crun): start, kill, delete, and
//! how an exec child reaches the container.

use std::fs;
use std::path::Path;

use libcontainer::container::Container;
use nix::unistd::Pid;

use crate::monitor::crun::{Crun, CrunExec};
use crate::monitor::protocol::Fault;

use super::cgroup::kill_cgroup_once;
use super::{error_chain, Failure};
use super::{kill_cgroup, remove_cgroup_leaf};

/// How long the processes left in a container's cgroup get to die at delete.
const DELETE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// What created the container, and is asked to start, kill and delete it.
pub(super) enum Engine {
    Libcontainer(Container),
    Crun(Crun),
}

impl Engine {
    /// Lets the created init run the container's process.
    pub(super) fn start(&mut self, init_pid: Pid) -> Result<(), Failure> {
        match self {
            Engine::Libcontainer(c) => c.start().map_err(|e| {
                // IncorrectStatus: the init died before it was started (killed, OOM).
                let fault = match e {
                    libcontainer::error::LibcontainerError::IncorrectStatus(_) => Fault::State,
                    _ => Fault::Internal,
                };
                (fault, error_chain(&e))
            }),
            Engine::Crun(c) => c.start().map_err(|message| {
                let fault = match crate::monitor::process::has_exited(init_pid.as_raw()) {
                    true => Fault::State,
                    false => Fault::Internal,
                };
                (fault, message)
            }),
        }
    }

    /// SIGKILL to every other process of the container's cgroup (the init has it already):
    /// one pass, not waited for; `delete` kills until the cgroup is empty.
    pub(super) fn kill_all(
        &mut self,
        init_pid: Pid,
        cgroups_path: Option<&Path>,
    ) -> Result<(), String> {
        match self {
            // Not libcontainer's kill(all): see `delete`. The init is signalled already.
            Engine::Libcontainer(_) => {
                if let Some(cg) = cgroups_path {
                    kill_cgroup_once(cg);
                }
                Ok(())
            }
            // crun refuses to signal a container whose init has just exited (not reaped
            // yet): what is left in the cgroup then goes with `delete -f` in `finish`.
            Engine::Crun(c) => match c.kill_all(libc::SIGKILL) {
                Err(_) if crate::monitor::process::has_exited(init_pid.as_raw()) => Ok(()),
                other => other,
            },
        }
    }

    /// Whether `delete` may run after the exit is answered: libcontainer's state is in its
    /// own root and the cgroup in the cgroup file systems, neither of which the daemon
    /// touches; crun writes its log into the container's run dir, which RemoveContainer
    /// removes once it has the answer.
    pub(super) fn deletes_after_the_answer(&self) -> bool {
        matches!(self, Engine::Libcontainer(_))
    }

    /// After the init was reaped: kills what is left in the cgroup, removes the cgroup and
    /// the runtime's state. On failure the state dir and the leaf cgroup are removed anyway.
    pub(super) fn delete(&mut self, cgroups_path: Option<&Path>) -> Result<(), String> {
        let result = match self {
            // What libcontainer's delete(force) does for a container proxrt made (no hooks,
            // cgroupfs, no systemd), done directly: its cgroup manager reads
            // /proc/self/mountinfo and /proc/self/cgroup some 25 times through hardened
            // procfs handles on cgroup v1 (~12 ms of a stop on the test machine;
            // vendor-notes/libcontainer.md). Kill what is left, remove the leaves, then
            // libcontainer's state dir.
            Engine::Libcontainer(c) => {
                let killed = match cgroups_path {
                    Some(cg) => kill_cgroup(cg, DELETE_DEADLINE),
                    None => Ok(()),
                };
                let removed = match fs::remove_dir_all(c.root.as_path()) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(format!("remove {}: {e}", c.root.display()))
                    }
                    _ => Ok(()),
                };
                killed.and(removed)
            }
            Engine::Crun(c) => {
                let deleted = c.delete().inspect_err(|_| {
                    let _ = fs::remove_dir_all(c.state_path());
                });
                c.remove_files();
                deleted
            }
        };
        if result.is_err() {
            if let Some(cg) = cgroups_path {
                remove_cgroup_leaf(cg);
            }
        }
        result
    }

    /// How an exec child reaches the container through crun (None: libcontainer).
    pub(super) fn crun_exec(
        &self,
        process: Option<&oci_spec::runtime::Process>,
    ) -> Option<CrunExec> {
        match self {
            Engine::Libcontainer(_) => None,
            Engine::Crun(c) => Some(CrunExec {
                crun: c.clone(),
                process: process.cloned().unwrap_or_default(),
            }),
        }
    }
}
