//! Entering a running container for an exec: the exec'd process gets everything the
//! container's init got, read from the container's own config.json.
//!
//! Why not libcontainer's tenant builder (`as_tenant()`): in 0.7 it rebuilds the spec's
//! `linux` section from the namespaces, cgroup path, personality and time offsets only, so
//! the seccomp filter is dropped and an exec'd probe escapes RuntimeDefault or a localhost
//! profile (it also takes AppArmor only when asked). proxrt enters the container itself, in
//! the order runc's `setns` path and libcontainer's init use, with libcontainer's public
//! helpers for what must match the init exactly (uid/gid switch, capabilities, AppArmor, the
//! seccomp filter):
//!
//! 1. In the exec child (host namespaces): open `/proc/<init>/ns/<type>` for every namespace
//!    the spec lists and, in every hierarchy where the init's cgroup is not the monitor's,
//!    the file through which a process joins it (`cgroup_join_files`), then `setns` the pid
//!    namespace, which only applies to children.
//! 2. Fork, into the init's cgroup v2 cgroup (`clone3(CLONE_INTO_CGROUP)`) when it has one
//!    the monitor is not in. The new process is in the container's pid namespace; it moves
//!    itself into the init's v1 cgroups (and the v2 one if the kernel refused to start it
//!    there) and oom_score_adj, then joins the other namespaces, the mount namespace last
//!    (which sets its root and cwd to the container's root).
//! 3. no_new_privs, AppArmor, then the seccomp filter before capabilities are dropped when
//!    no_new_privs is not set (without it, loading a filter needs CAP_SYS_ADMIN), user and
//!    groups, capabilities, cwd, and the filter as late as possible when no_new_privs is set.
//! 4. execve with the container's environment.
//!
//! Whatever fails before execve is written to a close-on-exec pipe: the parent reads EOF
//! (the command runs) or a message (it does not, and the process is reaped).

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use libcontainer::syscall::syscall::create_syscall;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Pid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, Process, Spec};

use super::cgroup_join::CgroupJoin;
use super::process::{exit_now, reset_signals, wait_pid, Forked};
use super::seccomp_bpf::{ContainerFilter, Program};

/// `PATH` when the container's environment has none (runc's and containerd's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How much of the container's /etc/passwd is read to find HOME.
const MAX_PASSWD: u64 = 4 << 20;

/// The container to enter.
pub(crate) struct Target<'a> {
    pub init_pid: Pid,
    /// The container's spec, as the backend created it (libcontainer's seccomp form).
    pub spec: &'a Spec,
    /// The container's filter compiled by the daemon; the spec has none then.
    pub seccomp: Option<&'a ContainerFilter>,
}

/// Starts `args` inside the container with the given stdio; returns its pid (a child of the
/// caller) once it has exec'd. With `tty`, stdin is a terminal's slave side that becomes the
/// process's controlling terminal (a new session: job control and ^C work as in a login).
pub(crate) fn spawn(
    target: &Target,
    args: &[String],
    stdio: [OwnedFd; 3],
    tty: bool,
) -> Result<Pid, String> {
    let process = target
        .spec
        .process()
        .as_ref()
        .ok_or("the container's spec has no process")?;
    let plan = Plan::prepare(target, args)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // Children only: the caller stays in the host's pid namespace.
    if let Some(pid_ns) = &plan.pid_ns {
        nix::sched::setns(pid_ns, CloneFlags::CLONE_NEWPID)
            .map_err(|e| format!("join the pid namespace: {e}"))?;
    }
    // The exec child is single-threaded; the child only makes syscalls and exits.
    match plan.cgroups.fork() {
        Ok(Forked::Child { in_cgroup }) => {
            drop(err_r);
            let failure = plan.enter_and_exec(stdio, process, tty, in_cgroup);
            let mut err_w = File::from(err_w);
            let _ = err_w.write_all(failure.as_bytes());
            exit_now(127)
        }
        Ok(Forked::Parent(child)) => {
            drop(err_w);
            drop(stdio);
            let mut message = String::new();
            let _ = File::from(err_r).read_to_string(&mut message);
            if message.is_empty() {
                Ok(child)
            } else {
                let _ = wait_pid(child);
                Err(message)
            }
        }
        Err(e) => Err(format!("fork: {e}")),
    }
}

/// What the entering process needs, opened while still in the host's namespaces.
struct Plan {
    pid_ns: Option<File>,
    /// The other namespaces, the mount namespace last.
    namespaces: Vec<(File, CloneFlags, &'static str)>,
    /// The init's root directory (its pivot_root'ed rootfs), opened from the host.
    root: File,
    /// The init's cgroups the entering process is not in already.
    cgroups: CgroupJoin,
    oom_score_adj: Option<String>,
    seccomp: Seccomp,
    argv: Vec<CString>,
}

impl Plan {
    fn prepare(target: &Target, args: &[String]) -> Result<Plan, String> {
        let init = target.init_pid;
        let mut pid_ns = None;
        let mut namespaces = Vec::new();
        let mut mount = None;
        let listed = target
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        for ns in listed {
            let (name, flag) = match ns.typ() {
                LinuxNamespaceType::Pid => ("pid", CloneFlags::CLONE_NEWPID),
                LinuxNamespaceType::Network => ("net", CloneFlags::CLONE_NEWNET),
                LinuxNamespaceType::Ipc => ("ipc", CloneFlags::CLONE_NEWIPC),
                LinuxNamespaceType::Uts => ("uts", CloneFlags::CLONE_NEWUTS),
                LinuxNamespaceType::Cgroup => ("cgroup", CloneFlags::CLONE_NEWCGROUP),
                LinuxNamespaceType::Mount => ("mnt", CloneFlags::CLONE_NEWNS),
                other => return Err(format!("cannot enter a {other:?} namespace")),
            };
            let path = format!("/proc/{init}/ns/{name}");
            let file = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
            match ns.typ() {
                LinuxNamespaceType::Pid => pid_ns = Some(file),
                LinuxNamespaceType::Mount => mount = Some((file, flag, name)),
                _ => namespaces.push((file, flag, name)),
            }
        }
        namespaces.extend(mount);
        let root_path = format!("/proc/{init}/root");
        let root = File::open(&root_path).map_err(|e| format!("open {root_path}: {e}"))?;
        let cgroups = CgroupJoin::open(&cgroup_join_files(init)?).map_err(|e| e.to_string())?;
        let oom_score_adj = fs::read_to_string(format!("/proc/{init}/oom_score_adj"))
            .ok()
            .map(|s| s.trim().to_string());
        let argv = args
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("command {args:?} contains a NUL byte"))?;
        if argv.is_empty() {
            return Err("empty command".into());
        }
        let seccomp = match target.seccomp {
            Some(filter) => Seccomp::Compiled(filter.program.clone()),
            None => match target
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.seccomp().clone())
            {
                Some(profile) => Seccomp::Profile(profile),
                None => Seccomp::None,
            },
        };
        Ok(Plan {
            pid_ns,
            namespaces,
            root,
            cgroups,
            oom_score_adj,
            seccomp,
            argv,
        })
    }

    /// Runs in the forked process; returns only on failure, with the reason.
    fn enter_and_exec(
        self,
        stdio: [OwnedFd; 3],
        process: &Process,
        tty: bool,
        in_cgroup: bool,
    ) -> String {
        match self.try_enter_and_exec(stdio, process, tty, in_cgroup) {
            Ok(never) => match never {},
            Err(message) => message,
        }
    }

    fn try_enter_and_exec(
        self,
        stdio: [OwnedFd; 3],
        process: &Process,
        tty: bool,
        in_cgroup: bool,
    ) -> Result<std::convert::Infallible, String> {
        reset_signals();
        for (fd, target) in stdio.iter().zip(0..) {
            nix::unistd::dup2(fd.as_raw_fd(), target).map_err(|e| format!("dup2: {e}"))?;
        }
        drop(stdio);
        if tty {
            // Before the namespaces: the terminal is the host's pty, which the
            // process keeps wherever it goes.
            nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
            // SAFETY: TIOCSCTTY on fd 0 with arg 0 (do not steal another session's tty).
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
                return Err(format!(
                    "make the terminal controlling: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        self.cgroups.join(in_cgroup)?;
        if let Some(adj) = &self.oom_score_adj {
            // Best effort: only a value below the caller's own needs CAP_SYS_RESOURCE, and
            // the init's was written by the same monitor.
            let _ = fs::write("/proc/self/oom_score_adj", adj);
        }
        for (file, flag, name) in &self.namespaces {
            nix::sched::setns(file, *flag)
                .map_err(|e| format!("join the {name} namespace: {e}"))?;
        }
        drop(self.namespaces);
        drop(self.pid_ns);
        // Joining the mount namespace put us at its root; the init's root is where the
        // container lives (the same place once it pivot_root'ed, made certain here).
        nix::unistd::fchdir(self.root.as_raw_fd())
            .and_then(|()| nix::unistd::chroot("."))
            .map_err(|e| format!("enter the container's root: {e}"))?;
        drop(self.root);

        let seccomp = self.seccomp;
        let nnp = process.no_new_privileges() == Some(true);
        if nnp {
            nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
        }
        if let Some(profile) = process.apparmor_profile() {
            libcontainer::apparmor::apply_profile(profile)
                .map_err(|e| format!("apparmor profile {profile:?}: {e}"))?;
        }
        if !nnp {
            load_seccomp(&seccomp)?;
        }
        let syscall = create_syscall();
        let user = process.user();
        if let Some(gids) = user.additional_gids().as_ref().filter(|g| !g.is_empty()) {
            let gids: Vec<Gid> = gids.iter().map(|g| Gid::from_raw(*g)).collect();
            syscall
                .set_groups(&gids)
                .map_err(|e| format!("set supplementary groups {gids:?}: {e}"))?;
        }
        syscall
            .set_id(Uid::from_raw(user.uid()), Gid::from_raw(user.gid()))
            .map_err(|e| format!("set uid {} gid {}: {e}", user.uid(), user.gid()))?;
        libcontainer::capabilities::reset_effective(syscall.as_ref())
            .map_err(|e| format!("reset capabilities: {e}"))?;
        if let Some(caps) = process.capabilities() {
            libcontainer::capabilities::drop_privileges(caps, syscall.as_ref())
                .map_err(|e| format!("set capabilities: {e}"))?;
        }
        let cwd = process.cwd();
        nix::unistd::chdir(cwd).map_err(|e| format!("chdir {}: {e}", cwd.display()))?;
        if nnp {
            load_seccomp(&seccomp)?;
        }
        // Nothing of the monitor's reaches the command (the error pipe is close-on-exec).
        mark_cloexec_from(3);

        let env = environment(process, user.uid());
        let program = resolve_program(&self.argv[0], &env)?;
        let env: Vec<CString> = env
            .into_iter()
            .filter_map(|e| CString::new(e).ok())
            .collect();
        let err = nix::unistd::execve(&program, &self.argv, &env).unwrap_err();
        Err(format!("exec {}: {err}", program.to_string_lossy()))
    }
}

/// The filter an entering process loads.
enum Seccomp {
    None,
    /// Compiled by the daemon (`seccomp_bpf.rs`): loaded as it is.
    Compiled(Program),
    /// Built by libseccomp in the entering process, as libcontainer does.
    Profile(LinuxSeccomp),
}

fn load_seccomp(seccomp: &Seccomp) -> Result<(), String> {
    let seccomp = match seccomp {
        Seccomp::None => return Ok(()),
        Seccomp::Compiled(program) => {
            return program
                .load()
                .map_err(|e| format!("load the seccomp filter: {e}"))
        }
        Seccomp::Profile(profile) => profile,
    };
    let notify = libcontainer::seccomp::initialize_seccomp(seccomp)
        .map_err(|e| format!("load the seccomp filter: {e}"))?;
    if let Some(fd) = notify {
        // SAFETY: the notify fd was just created for this process and is not used elsewhere.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

fn mark_cloexec_from(first: RawFd) {
    // SAFETY: marks descriptors close-on-exec; closes nothing.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
}

/// The container's environment, with HOME from the container's /etc/passwd when unset (as
/// libcontainer gives the init). The file is parsed here, never through libc's NSS, which
/// would load the container's own `libnss_*.so` into this still-privileged process.
fn environment(process: &Process, uid: u32) -> Vec<String> {
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let mut passwd = String::new();
        if let Ok(file) = File::open("/etc/passwd") {
            let _ = file.take(MAX_PASSWD).read_to_string(&mut passwd);
        }
        let home = crate::spec::parse_passwd(&passwd)
            .into_iter()
            .find(|e| e.uid == uid)
            .map(|e| e.home)
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "/".to_string());
        env.push(format!("HOME={home}"));
    }
    env
}

/// The executable: `argv[0]` itself when it has a slash, else the first match in the
/// container's `PATH` (resolved inside the container: this runs after entering its root).
fn resolve_program(argv0: &CString, env: &[String]) -> Result<CString, String> {
    let name = argv0.to_string_lossy();
    if name.contains('/') {
        return Ok(argv0.clone());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(&*name);
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            && candidate.is_file()
        {
            return CString::new(candidate.into_os_string().into_encoded_bytes())
                .map_err(|_| format!("{name}: bad path"));
        }
    }
    Err(format!("{name:?}: executable file not found in $PATH"))
}

/// The `cgroup.procs` file of every cgroup `pid` is in, one per hierarchy mounted here.
pub(crate) fn cgroup_procs_files(pid: Pid) -> Result<Vec<PathBuf>, String> {
    let path = format!("/proc/{pid}/cgroup");
    let cgroups = fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    Ok(memberships(&cgroups)?
        .into_iter()
        .map(|m| m.dir.join("cgroup.procs"))
        .collect())
}

/// What an exec child (a fork of this process, single-threaded) writes "0" into to join
/// the cgroups `pid` is in: nothing in a hierarchy where this process is in the same cgroup
/// already; `tasks` in a cgroup v1 hierarchy; `cgroup.procs` in cgroup v2.
///
/// Why these files, and how they are used without the kernel's cgroup migration lock:
/// cgroup_join.rs.
pub(crate) fn cgroup_join_files(pid: Pid) -> Result<Vec<PathBuf>, String> {
    let read = |path: &str| fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"));
    let theirs = read(&format!("/proc/{pid}/cgroup"))?;
    let ours = read("/proc/self/cgroup")?;
    Ok(join_files(&theirs, &ours, &memberships(&theirs)?))
}

/// Pure part of [`cgroup_join_files`]: `memberships` are those of `theirs`.
fn join_files(theirs: &str, ours: &str, memberships: &[Membership]) -> Vec<PathBuf> {
    // `<id>:<controllers>:<path>`; the path may hold colons itself.
    let by_hierarchy = |text: &'_ str| -> std::collections::HashMap<String, String> {
        text.lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                Some((format!("{id}:{controllers}"), path.to_owned()))
            })
            .collect()
    };
    let (ours, theirs) = (by_hierarchy(ours), by_hierarchy(theirs));
    memberships
        .iter()
        .filter(|m| ours.get(&m.hierarchy) != theirs.get(&m.hierarchy))
        .map(|m| m.dir.join(if m.v2 { "cgroup.procs" } else { "tasks" }))
        .collect()
}

/// Where each of the cgroups in `cgroups` (a `/proc/<pid>/cgroup`) is, one per hierarchy
/// mounted here.
///
/// Where each hierarchy is mounted comes from the cgroup lines of the mount table that
/// this process remembered (`remember_cgroup_mounts`: the zygote at its start, whose forks
/// the monitors and exec children are, and the daemon), so an exec does not read a table
/// that grows with every pod. When one of the hierarchies is not among them (mounted
/// since; or, on a host with no cgroup2 mount at all, the v2 line every process has),
/// the table is read.
fn memberships(cgroups: &str) -> Result<Vec<Membership>, String> {
    if let Some(remembered) = CGROUP_MOUNTS.get() {
        let found = cgroup_dirs(cgroups, &cgroup_mounts(remembered));
        if found.len() == cgroups.lines().filter(|l| !l.is_empty()).count() {
            return Ok(found);
        }
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    Ok(cgroup_dirs(cgroups, &cgroup_mounts(&mountinfo)))
}

/// The cgroup and cgroup2 lines of this process's mount table, once read.
static CGROUP_MOUNTS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Reads the mount table once and keeps its cgroup lines for `cgroup_procs_files`.
pub(crate) fn remember_cgroup_mounts() {
    if CGROUP_MOUNTS.get().is_some() {
        return;
    }
    if let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") {
        let _ = CGROUP_MOUNTS.set(cgroup_lines(&mountinfo));
    }
}

/// The lines of `mountinfo` that mount a cgroup hierarchy.
fn cgroup_lines(mountinfo: &str) -> String {
    mountinfo
        .lines()
        .filter(|l| {
            l.split_once(" - ")
                .and_then(|(_, right)| right.split(' ').next())
                .is_some_and(|fstype| fstype == "cgroup" || fstype == "cgroup2")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A mounted cgroup hierarchy: (v2?, super options, root inside the hierarchy, mount point).
struct CgroupMount<'a> {
    v2: bool,
    options: Vec<&'a str>,
    root: &'a str,
    point: &'a str,
}

fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount<'_>> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let tail: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype), Some(opts)) =
            (fields.get(3), fields.get(4), tail.first(), tail.get(2))
        else {
            continue;
        };
        let v2 = match *fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        out.push(CgroupMount {
            v2,
            options: opts.split(',').collect(),
            root,
            point,
        });
    }
    out
}

/// A process's cgroup in one hierarchy, as seen through this process's mounts.
#[derive(Debug, PartialEq)]
struct Membership {
    /// The hierarchy as `/proc/<pid>/cgroup` names it (`4:cpu,cpuacct`, `0:`).
    hierarchy: String,
    v2: bool,
    dir: PathBuf,
}

/// Pure part of [`memberships`]: `/proc/<pid>/cgroup` lines matched with mounts.
fn cgroup_dirs(cgroups: &str, mounts: &[CgroupMount]) -> Vec<Membership> {
    let mut found = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let v2 = id == "0" && controllers.is_empty();
        let wanted: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
        let mount = mounts
            .iter()
            .find(|m| m.v2 == v2 && (v2 || wanted.iter().all(|c| m.options.contains(c))));
        let Some(mount) = mount else {
            continue; // a hierarchy not mounted here: nothing to join through
        };
        let Some(rel) = Path::new(path).strip_prefix(mount.root).ok() else {
            continue; // outside what this mount shows
        };
        found.push(Membership {
            hierarchy: format!("{id}:{controllers}"),
            v2,
            dir: Path::new(mount.point).join(rel),
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw
28 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
29 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
30 25 0:28 / /sys/fs/cgroup/systemd rw shared:13 - cgroup cgroup rw,xattr,name=systemd
";

    #[test]
    fn hybrid_hierarchies_map_to_their_mounts() {
        let mounts = cgroup_mounts(MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        let cgroups = "\
12:memory:/proxrt/abc
4:cpu,cpuacct:/proxrt/abc
1:name=systemd:/
3:blkio:/proxrt/abc
0::/
";
        assert_eq!(
            dirs(cgroups, &mounts),
            [
                "/sys/fs/cgroup/memory/proxrt/abc",
                "/sys/fs/cgroup/cpu,cpuacct/proxrt/abc",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn only_cgroup_lines_are_remembered_and_they_map_the_same() {
        let lines = cgroup_lines(MOUNTINFO);
        assert_eq!(lines.lines().count(), 4, "{lines}");
        assert!(lines.lines().all(|l| l.contains(" - cgroup")), "{lines}");
        let cgroups = "12:memory:/proxrt/abc\n0::/\n";
        assert_eq!(
            cgroup_dirs(cgroups, &cgroup_mounts(&lines)),
            cgroup_dirs(cgroups, &cgroup_mounts(MOUNTINFO))
        );
    }

    #[test]
    fn pure_v2() {
        let mounts = cgroup_mounts(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(
            dirs("0::/kubepods/pod1/proxrt-abc\n", &mounts),
            [PathBuf::from("/sys/fs/cgroup/kubepods/pod1/proxrt-abc")]
        );
    }

    fn dirs(cgroups: &str, mounts: &[CgroupMount]) -> Vec<PathBuf> {
        cgroup_dirs(cgroups, mounts)
            .into_iter()
            .map(|m| m.dir)
            .collect()
    }

    #[test]
    fn an_exec_joins_v1_through_tasks_v2_through_cgroup_procs_and_skips_where_it_is() {
        let mounts = cgroup_mounts(MOUNTINFO);
        let theirs =
            "12:memory:/proxrt/abc\n4:cpu,cpuacct:/proxrt/abc\n1:name=systemd:/\n0::/pod\n";
        let ours = "12:memory:/daemon\n4:cpu,cpuacct:/daemon\n1:name=systemd:/\n0::/\n";
        assert_eq!(
            join_files(theirs, ours, &cgroup_dirs(theirs, &mounts)),
            [
                "/sys/fs/cgroup/memory/proxrt/abc/tasks",
                "/sys/fs/cgroup/cpu,cpuacct/proxrt/abc/tasks",
                "/sys/fs/cgroup/unified/pod/cgroup.procs",
            ]
            .map(PathBuf::from)
        );
        // Already where the init is everywhere: nothing to write.
        assert!(join_files(theirs, theirs, &cgroup_dirs(theirs, &mounts)).is_empty());
        let v2 = cgroup_mounts(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        let theirs = "0::/kubepods/pod1/proxrt-abc\n";
        assert_eq!(
            join_files(theirs, "0::/proxrt.slice\n", &cgroup_dirs(theirs, &v2)),
            [PathBuf::from(
                "/sys/fs/cgroup/kubepods/pod1/proxrt-abc/cgroup.procs"
            )]
        );
    }
}
