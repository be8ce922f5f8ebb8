//! Pod namespace holders.
//!
//! The zygote forks (detached) a setup process that unshares the requested namespaces and
//! forks the holder: `proxrt-pause`, pid 1 of the pod's new pid namespace, which only
//! sleeps and reaps. The setup process, still in the host's mount namespace but in the new
//! net/ipc/uts namespaces, sets the hostname, brings `lo` up, writes the sysctls, and
//! bind-mounts the holder's namespace files onto `<dir>/{net,ipc,uts}` so that containers
//! can join them (and they outlive the holder). Then it reports and exits; on any failure
//! it first undoes everything, holder included.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::cgroup_join::CgroupJoin;
use super::holder_confine::HolderRoot;
use super::process::{exit_now, pidfd_open, pidfd_send_signal, poll_one, reset_signals, Forked};
use super::protocol::{acknowledged, write_frame, Fault, Report};
use super::MonitorError;
use crate::rollback::Rollback;

/// The holder's process name (`/proc/<pid>/comm`): `teardown_sandbox` checks it before
/// killing a pid, so a recycled pid is never killed.
pub const HOLDER_NAME: &str = "proxrt-pause";

const HOLDER_EXIT_WAIT: Duration = Duration::from_secs(5);

/// A pod's namespaces to create.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SandboxRequest {
    /// The sandbox id (for error messages).
    pub id: String,
    /// Where the namespace files are bind-mounted (`net`, `ipc`, `uts`); created if missing.
    pub dir: PathBuf,
    /// A new network namespace (with `lo` up), else the host's.
    pub new_net: bool,
    /// A new IPC namespace, else the host's.
    pub new_ipc: bool,
    /// A new UTS namespace (hostname), else the host's.
    pub new_uts: bool,
    /// A new pid namespace whose init is the holder, else the host's.
    pub new_pid: bool,
    /// Set in the new uts namespace; ignored without `new_uts` (the pod then uses the
    /// node's hostname).
    pub hostname: Option<String>,
    /// Written to `/proc/sys` inside the new namespaces. Only namespaced sysctls are
    /// accepted (`net.*` needs `new_net`; `kernel.shm*`, `kernel.msg*`, `kernel.sem`,
    /// `fs.mqueue.*` need `new_ipc`; `kernel.hostname`/`kernel.domainname` need `new_uts`):
    /// anything else would change the host. Keys use `.` or `/` as separator, as in Kubernetes.
    pub sysctls: BTreeMap<String, String>,
    /// The holder's cgroup in each hierarchy (made by the daemon), which it starts in
    /// without a move through `cgroup.procs` (cgroup_join.rs; the setup process that forks
    /// it stays where it is). Empty: the daemon's cgroups.
    #[serde(default)]
    pub cgroup_dirs: Vec<PathBuf>,
}

/// The holder and the namespace files containers join.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SandboxCreated {
    /// The holder process (host pid), for `teardown_sandbox`.
    pub holder_pid: i32,
    /// `<dir>/net`, bind-mounted, when a new net namespace was requested: the CNI
    /// plugins are handed this path, and their DEL must find the namespace whatever
    /// became of the holder (a recycled pid must never name it).
    pub net_ns: Option<PathBuf>,
    /// `/proc/<holder>/ns/ipc` when a new IPC namespace was requested. Not bind-mounted
    /// (one host mount less per pod, issue 13): containers join it only while the holder
    /// lives, checked by the namespace's inode (backend/host/pod.rs, `alive`).
    pub ipc_ns: Option<PathBuf>,
    /// `/proc/<holder>/ns/uts` when a new UTS namespace was requested, as `ipc_ns`.
    pub uts_ns: Option<PathBuf>,
    /// `/proc/<holder>/ns/pid`: a pid namespace cannot outlive its init, so it is not
    /// bind-mounted.
    pub pid_ns: Option<PathBuf>,
}

/// Checks a request before anything is forked.
pub(crate) fn validate(req: &SandboxRequest) -> Result<(), MonitorError> {
    for key in req.sysctls.keys() {
        sysctl_path(key, req).map_err(MonitorError::InvalidRequest)?;
    }
    if let Some(h) = &req.hostname {
        if req.new_uts && (h.is_empty() || h.len() > 64) {
            return Err(MonitorError::InvalidRequest(format!(
                "invalid hostname {h:?}"
            )));
        }
    }
    if let Some(dir) = req.cgroup_dirs.iter().find(|d| !d.is_absolute()) {
        return Err(MonitorError::InvalidRequest(format!(
            "holder cgroup {} must be an absolute path",
            dir.display()
        )));
    }
    Ok(())
}

/// `/proc/sys/<path>` for a sysctl key, refusing keys that are not namespaced by one of the
/// new namespaces. `a.b.c` and `a/b/c` are both accepted; with `/` as separator a `.` is part
/// of a name (`net/ipv4/conf/eth0.100/forwarding`), as in Kubernetes.
fn sysctl_path(key: &str, req: &SandboxRequest) -> Result<PathBuf, String> {
    let slash_first = match (key.find('/'), key.find('.')) {
        (Some(s), Some(d)) => s < d,
        (Some(_), None) => true,
        _ => false,
    };
    let rel: String = if slash_first {
        key.to_string()
    } else {
        key.chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect()
    };
    let parts: Vec<&str> = rel.split('/').collect();
    let valid = parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        });
    if !valid {
        return Err(format!("invalid sysctl name {key:?}"));
    }
    let namespaced = match (parts[0], parts[1]) {
        ("net", _) => req.new_net,
        ("kernel", p) if p.starts_with("shm") || p.starts_with("msg") || p == "sem" => req.new_ipc,
        ("kernel", "hostname" | "domainname") => req.new_uts,
        ("fs", "mqueue") => req.new_ipc,
        _ => false,
    };
    if !namespaced {
        return Err(format!(
            "sysctl {key} is not namespaced by the pod's own namespaces; refusing to change the host"
        ));
    }
    Ok(Path::new("/proc/sys").join(rel))
}

type Failure = (Fault, String);

/// The setup process's main (detached grandchild of the zygote); returns its exit code.
/// `holders_ns`: the zygote's handle on the holders' mount namespace, if it has one
/// (holder_confine.rs).
pub(crate) fn run_setup(req: SandboxRequest, report: OwnedFd, holders_ns: Option<RawFd>) -> i32 {
    let mut keep = vec![report.as_raw_fd()];
    keep.extend(holders_ns);
    super::process::set_up_child(&keep);
    // SAFETY: inherited from the zygote and kept open above; owned by this process now.
    let holders_ns = holders_ns.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    serve_setup(req, report, holders_ns)
}

/// The setup process's work once set up as a zygote child (`process::set_up_child`; a
/// spare was, `monitor/spare.rs`): makes the pod's namespaces and holder, reports them,
/// and keeps them only if the daemon acknowledges. Returns the exit code.
pub(crate) fn serve_setup(
    req: SandboxRequest,
    report: OwnedFd,
    holders_ns: Option<OwnedFd>,
) -> i32 {
    let mut report = UnixStream::from(report);
    let mut rollback = Rollback::new(format!("create sandbox {}", req.id));
    let created = match setup(&req, &mut rollback, report.as_raw_fd(), holders_ns) {
        Ok(c) => c,
        Err((fault, message)) => {
            drop(rollback);
            let _ = write_frame(&mut report, &Report::Failed { message, fault });
            return 1;
        }
    };
    if write_frame(&mut report, &Report::Sandbox(created)).is_err() || !acknowledged(&mut report) {
        drop(rollback);
        return 1;
    }
    rollback.commit();
    0
}

fn setup(
    req: &SandboxRequest,
    rb: &mut Rollback,
    report_fd: i32,
    holders_ns: Option<OwnedFd>,
) -> Result<SandboxCreated, Failure> {
    let internal =
        |what: &str, e: &dyn std::fmt::Display| (Fault::Internal, format!("{what}: {e}"));
    // Validated by the daemon already; checked again because this process acts on it.
    let sysctls: Vec<(PathBuf, &String, &String)> = req
        .sysctls
        .iter()
        .map(|(k, v)| sysctl_path(k, req).map(|p| (p, k, v)))
        .collect::<Result<_, _>>()
        .map_err(|e| (Fault::Invalid, e))?;

    fs::create_dir_all(&req.dir)
        .map_err(|e| internal(&format!("create {}", req.dir.display()), &e))?;

    let mut flags = CloneFlags::empty();
    for (wanted, flag) in [
        (req.new_net, CloneFlags::CLONE_NEWNET),
        (req.new_ipc, CloneFlags::CLONE_NEWIPC),
        (req.new_uts, CloneFlags::CLONE_NEWUTS),
        (req.new_pid, CloneFlags::CLONE_NEWPID),
    ] {
        if wanted {
            flags |= flag;
        }
    }
    unshare(flags).map_err(|e| internal("unshare namespaces", &e))?;

    let cgroups = CgroupJoin::open_dirs(&req.cgroup_dirs)
        .map_err(|e| internal("put the pod holder in its cgroup", &e))?;

    // The holder says on this pipe whether it confined itself ("ok" or the failure).
    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| internal("pipe", &e))?;
    // Named before the fork so the holder carries its name from its first instant:
    // teardown recognizes holders by it.
    let _ = nix::sys::prctl::set_name(c"proxrt-pause");
    // This process is single-threaded.
    let holder = match cgroups.fork().map_err(|e| internal("fork holder", &e))? {
        Forked::Child { in_cgroup } => {
            let _ = nix::unistd::close(report_fd);
            drop(ready_r);
            if let Err(e) = cgroups.join(in_cgroup) {
                let mut ready = fs::File::from(ready_w);
                let _ = write!(ready, "put the pod holder in its cgroup: {e}");
                exit_now(1)
            }
            hold(ready_w, holders_ns, &req.dir)
        }
        Forked::Parent(child) => child,
    };
    drop((ready_w, holders_ns));
    let _ = nix::sys::prctl::set_name(c"proxrt-sandbox");
    rb.push("holder", move || kill_holder(holder));
    holder_ready(ready_r).map_err(|e| internal("confine the pod holder", &e))?;

    if let (true, Some(h)) = (req.new_uts, &req.hostname) {
        nix::unistd::sethostname(h).map_err(|e| internal(&format!("set hostname {h:?}"), &e))?;
    }
    if req.new_net {
        loopback_up().map_err(|e| internal("bring lo up", &e))?;
    }
    for (path, key, value) in sysctls {
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|e| (Fault::Invalid, format!("sysctl {key}={value}: {e}")))?;
    }

    let of_holder = |wanted: bool, name: &str| {
        wanted.then(|| PathBuf::from(format!("/proc/{holder}/ns/{name}")))
    };
    let net_ns = match req.new_net {
        true => Some(bind_ns(holder, "net", &req.dir, rb)?),
        false => None,
    };
    Ok(SandboxCreated {
        holder_pid: holder.as_raw(),
        net_ns,
        ipc_ns: of_holder(req.new_ipc, "ipc"),
        uts_ns: of_holder(req.new_uts, "uts"),
        pid_ns: of_holder(req.new_pid, "pid"),
    })
}

/// Bind-mounts `/proc/<holder>/ns/<name>` onto an empty file `<dir>/<name>`.
fn bind_ns(
    holder: Pid,
    name: &'static str,
    dir: &Path,
    rb: &mut Rollback,
) -> Result<PathBuf, Failure> {
    let target = dir.join(name);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&target)
        .map_err(|e| (Fault::Internal, format!("create {}: {e}", target.display())))?;
    {
        let target = target.clone();
        rb.push("ns file", move || {
            let _ = fs::remove_file(&target);
        });
    }
    let source = PathBuf::from(format!("/proc/{holder}/ns/{name}"));
    mount(
        Some(&source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        (
            Fault::Internal,
            format!("bind {} on {}: {e}", source.display(), target.display()),
        )
    })?;
    {
        let target = target.clone();
        rb.push("ns mount", move || {
            let _ = umount2(&target, MntFlags::MNT_DETACH);
        });
    }
    Ok(target)
}

/// The holder: confines itself (holder_confine.rs), says so on `ready`, then sleeps
/// until SIGTERM/SIGINT/SIGKILL, reaping children (it is pid 1 of the pod's pid
/// namespace). Signals are blocked and taken with sigwait: blocked signals reach a
/// pid-namespace init even without a handler, and no handler code ever runs.
fn hold(ready: OwnedFd, holders_ns: Option<OwnedFd>, dir: &Path) -> ! {
    reset_signals();
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGCHLD,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    let _ = set.thread_block();
    let mut ready = fs::File::from(ready);
    match super::holder_confine::confine_holder(HolderRoot::of(holders_ns.as_ref(), dir)) {
        Ok(()) => {
            // Joined: the holder keeps no handle on it (nor anything else but stdio).
            drop(holders_ns);
            let _ = ready.write_all(b"ok");
            drop(ready);
        }
        Err(e) => {
            let _ = ready.write_all(e.as_bytes());
            exit_now(1)
        }
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => super::process::reap_all_nonblocking(|_| {}),
            Ok(Signal::SIGTERM | Signal::SIGINT) => exit_now(0),
            _ => {}
        }
    }
}

/// Waits for the holder's word on `ready`: "ok" once it is confined, else why not.
fn holder_ready(ready: OwnedFd) -> Result<(), String> {
    use std::io::Read as _;
    if !poll_one(ready.as_raw_fd(), libc::POLLIN, Some(HOLDER_EXIT_WAIT)).unwrap_or(false) {
        return Err(format!("no answer in {HOLDER_EXIT_WAIT:?}"));
    }
    let mut word = String::new();
    fs::File::from(ready)
        .read_to_string(&mut word)
        .map_err(|e| format!("read its answer: {e}"))?;
    match word.as_str() {
        "ok" => Ok(()),
        "" => Err("it exited without an answer".into()),
        why => Err(why.to_owned()),
    }
}

/// SIGKILLs the holder through a pidfd (no pid-reuse race) and waits until it has exited.
fn kill_holder(pid: Pid) {
    if let Ok(pidfd) = pidfd_open(pid.as_raw()) {
        let _ = pidfd_send_signal(&pidfd, libc::SIGKILL);
        let _ = poll_one(pidfd.as_raw_fd(), libc::POLLIN, Some(HOLDER_EXIT_WAIT));
    }
    // Our child while setup runs: reap it (after setup exits, init does).
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// `ip link set lo up` without the `ip` binary: SIOCGIFFLAGS/SIOCSIFFLAGS on a socket of
/// the new network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the ioctls read and write the ifreq we pass.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Stops a sandbox holder (SIGKILL its pid after checking it is ours, then waits for it),
/// unmounts and removes the namespace files in `dir`. Idempotent: a holder already gone
/// and files already removed are fine. Blocking (a few ms); call it off the async runtime.
pub fn teardown_sandbox(dir: &Path, holder_pid: Option<i32>) -> Result<(), MonitorError> {
    let mut problems = Vec::new();
    if let Some(pid) = holder_pid.filter(|&p| p > 0) {
        if let Err(e) = stop_holder(pid, dir) {
            problems.push(e);
        }
    }
    for name in ["net", "ipc", "uts"] {
        let file = dir.join(name);
        // A file may carry stacked mounts after a retried setup: unmount until EINVAL.
        for _ in 0..16 {
            match umount2(&file, MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
                Err(e) => {
                    problems.push(format!("unmount {}: {e}", file.display()));
                    break;
                }
            }
        }
        match fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("remove {}: {e}", file.display())),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(MonitorError::Failed {
            op: "teardown sandbox",
            message: problems.join("; "),
        })
    }
}

fn stop_holder(pid: i32, dir: &Path) -> Result<(), String> {
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(e) => return Err(format!("pidfd_open {pid}: {e}")),
    };
    // With the pidfd open the pid cannot be recycled under us: check that it is our holder.
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() != HOLDER_NAME {
        return Ok(());
    }
    for name in ["net", "ipc", "uts"] {
        let (Ok(mounted), Ok(theirs)) = (
            fs::metadata(dir.join(name)),
            fs::metadata(format!("/proc/{pid}/ns/{name}")),
        ) else {
            continue;
        };
        // An empty regular file (not mounted) has another device; only compare ns files.
        if mounted.dev() == theirs.dev() && mounted.ino() != theirs.ino() {
            // Another pod's holder that reuses the pid: not ours.
            return Ok(());
        }
    }
    match pidfd_send_signal(&pidfd, libc::SIGKILL) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(e) => return Err(format!("kill holder {pid}: {e}")),
    }
    match poll_one(pidfd.as_raw_fd(), libc::POLLIN, Some(HOLDER_EXIT_WAIT)) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("holder {pid} did not exit after SIGKILL")),
        Err(e) => Err(format!("wait for holder {pid}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(net: bool, ipc: bool, uts: bool) -> SandboxRequest {
        SandboxRequest {
            id: "s".into(),
            dir: "/tmp/x".into(),
            new_net: net,
            new_ipc: ipc,
            new_uts: uts,
            new_pid: true,
            hostname: None,
            sysctls: BTreeMap::new(),
            cgroup_dirs: Vec::new(),
        }
    }

    #[test]
    fn sysctl_keys_map_to_proc_sys_paths() {
        let r = req(true, true, true);
        assert_eq!(
            sysctl_path("net.ipv4.ip_unprivileged_port_start", &r).unwrap(),
            Path::new("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/forwarding", &r).unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        assert_eq!(
            sysctl_path("net.ipv4.conf.eth0/100.forwarding", &r).unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        assert_eq!(
            sysctl_path("kernel.shm_rmid_forced", &r).unwrap(),
            Path::new("/proc/sys/kernel/shm_rmid_forced")
        );
    }

    #[test]
    fn sysctls_that_would_change_the_host_are_refused() {
        assert!(sysctl_path("net.ipv4.ip_forward", &req(false, true, true)).is_err());
        assert!(sysctl_path("kernel.shmmax", &req(true, false, true)).is_err());
        assert!(sysctl_path("kernel.panic", &req(true, true, true)).is_err());
        assert!(sysctl_path("vm.swappiness", &req(true, true, true)).is_err());
        for bad in ["net", "net..ipv4", "net.ipv4/../../x", "net.ipv4.a b", ""] {
            assert!(sysctl_path(bad, &req(true, true, true)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn teardown_of_nothing_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        teardown_sandbox(dir.path(), None).unwrap();
        teardown_sandbox(&dir.path().join("missing"), Some(i32::MAX)).unwrap();
    }
}
