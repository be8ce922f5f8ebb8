//! The monitor's crun code path: the same monitor (log pipes, status.json, reaping, OOM,
//! exec, the socket) supervising a container that the `crun` binary creates.
//!
//! Each operation runs crun as a child of the monitor and waits for it: `create`, `start`,
//! `kill --all`, `delete -f`, and `exec --detach` in an exec child. With no terminal, crun
//! hands its own fds 0–2 to the container's process, so `create` and `exec` run with
//! /dev/null and the monitor's pipes there. When `crun create` exits, the container's init
//! is re-parented to the monitor (a child subreaper) and reaped by it like a libcontainer
//! init; `crun exec --detach` leaves its process to the exec child the same way.
//!
//! crun reports errors on stderr and, with `--log`, as JSON lines in a file: that file
//! (`crun.log` in the container's state dir) is where error messages are read from,
//! because during `create` stderr is the container's own stderr pipe.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;

use nix::unistd::Pid;

use super::process::ProcStat;
use crate::spec::process::DEFAULT_PATH;

/// Files in the container's state dir: crun's `--log`, and the init's `--pid-file` (removed
/// once read). Each exec writes `exec-<pid>.json`/`.pid` beside them for its duration.
const LOG_FILE: &str = "crun.log";
const INIT_PID_FILE: &str = "init.pid";

/// One container as crun knows it.
#[derive(Clone, Debug)]
pub(crate) struct Crun {
    binary: PathBuf,
    root: PathBuf,
    id: String,
    /// Run crun in a private mount namespace without the cgroup2 mount.
    v1_view: bool,
    /// The container's state dir (crun.log, pid files).
    state_dir: PathBuf,
}

/// What an exec runs: the container's process from config.json with other args.
pub(crate) struct CrunExec {
    pub crun: Crun,
    pub process: oci_spec::runtime::Process,
}

impl Crun {
    pub(crate) fn new(
        binary: &Path,
        root: &Path,
        id: &str,
        v1_view: bool,
        state_dir: &Path,
    ) -> Crun {
        Crun {
            binary: binary.to_owned(),
            root: root.to_owned(),
            id: id.to_owned(),
            v1_view,
            state_dir: state_dir.to_owned(),
        }
    }

    /// crun's state of this container (`<root>/<id>`).
    pub(crate) fn state_path(&self) -> PathBuf {
        self.root.join(&self.id)
    }

    fn log_path(&self) -> PathBuf {
        self.state_dir.join(LOG_FILE)
    }

    fn command(&self, args: &[OsString]) -> Command {
        let sealed = sealed_copy(&self.binary);
        let mut cmd = match sealed {
            Some(fd) => {
                let mut cmd = Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                cmd.arg0(&self.binary);
                cmd
            }
            None => Command::new(&self.binary),
        };
        cmd.arg("--root")
            .arg(&self.root)
            .arg(format!("--log=file:{}", self.log_path().display()))
            .arg("--log-format=json")
            .arg("--cgroup-manager=cgroupfs")
            .args(args)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .current_dir("/");
        if sealed.is_some() {
            cmd.env(CLONED_BINARY_ENV, "1");
        }
        let v1_view = self.v1_view;
        // SAFETY: between fork and exec only async-signal-safe calls are made: sigprocmask,
        // sigaction, unshare, mount, umount2.
        unsafe {
            cmd.pre_exec(move || {
                // The monitor blocks SIGCHLD and ignores SIGPIPE; crun's container process
                // must not inherit either (docs/libcontainer.md pitfall 5 applies to crun too).
                super::process::reset_signals();
                if v1_view {
                    enter_v1_view()?;
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs crun to its end; on failure the error is crun's own message.
    fn run(&self, op: &str, mut cmd: Command) -> Result<(), String> {
        let offset = fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0);
        let status = cmd
            .spawn()
            .and_then(|mut c| c.wait())
            .map_err(|e| format!("crun {op}: run {}: {e}", self.binary.display()))?;
        if status.success() {
            return Ok(());
        }
        Err(format!("crun {op}: {}", self.error_since(offset, status)))
    }

    /// The error crun logged after `offset`, or how it exited.
    fn error_since(&self, offset: u64, status: ExitStatus) -> String {
        let text = fs::read(self.log_path()).unwrap_or_default();
        let tail =
            String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default()).into_owned();
        let messages: Vec<String> = tail
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] != "debug")
            .filter_map(|v| v["msg"].as_str().map(str::to_owned))
            .collect();
        match messages.is_empty() {
            true => format!("exited with {status}"),
            false => messages.join("; "),
        }
    }

    /// `crun create`: the init waits for `start`. Returns its pid; on error crun has
    /// removed what it made (the caller still runs `delete` to be sure).
    /// With `console_socket` (a tty container) crun sends the terminal's master there.
    pub(crate) fn create(
        &self,
        bundle: &Path,
        stdio: super::container::ChildStdio,
        console_socket: Option<&Path>,
    ) -> Result<Pid, String> {
        let pid_file = self.state_dir.join(INIT_PID_FILE);
        let mut args: Vec<OsString> = vec![
            "create".into(),
            "--bundle".into(),
            bundle.into(),
            "--pid-file".into(),
            pid_file.clone().into(),
        ];
        if let Some(path) = console_socket {
            let mut arg = OsString::from("--console-socket=");
            arg.push(path);
            args.push(arg);
        }
        args.push(self.id.clone().into());
        let mut cmd = self.command(&args);
        cmd.stdin(Stdio::from(stdio.stdin))
            .stdout(Stdio::from(stdio.stdout))
            .stderr(Stdio::from(stdio.stderr));
        self.run("create", cmd)?;
        let pid = read_pid(&pid_file);
        let _ = fs::remove_file(&pid_file);
        let pid = pid?;
        // The init was crun's child; crun has exited, so it must be ours now (we are a
        // child subreaper). If it is not, the monitor could never reap it.
        let parent = ProcStat::read(pid).map(|s| s.ppid);
        if parent != Some(std::process::id() as i32) {
            return Err(format!(
                "crun create: the container's init {pid} was re-parented to {parent:?}, not to its monitor"
            ));
        }
        Ok(Pid::from_raw(pid))
    }

    pub(crate) fn start(&self) -> Result<(), String> {
        self.run(
            "start",
            self.quiet(&["start".into(), self.id.clone().into()]),
        )
    }

    /// Sends `signal` to every process of the container (`crun kill --all`).
    pub(crate) fn kill_all(&self, signal: i32) -> Result<(), String> {
        self.run(
            "kill",
            self.quiet(&[
                "kill".into(),
                "--all".into(),
                self.id.clone().into(),
                signal.to_string().into(),
            ]),
        )
    }

    /// `crun delete -f`: kills what is left, removes the cgroups and crun's state.
    pub(crate) fn delete(&self) -> Result<(), String> {
        self.run(
            "delete",
            self.quiet(&["delete".into(), "-f".into(), self.id.clone().into()]),
        )
    }

    /// Removes what the monitor kept for crun in the state dir.
    pub(crate) fn remove_files(&self) {
        let _ = fs::remove_file(self.log_path());
        let _ = fs::remove_file(self.state_dir.join(INIT_PID_FILE));
    }

    fn quiet(&self, args: &[OsString]) -> Command {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }
}

impl CrunExec {
    /// `crun exec --detach` of `args` as the container's process; returns the process's pid.
    /// The caller must be a child subreaper: once crun exits, the process is its child.
    pub(crate) fn spawn(
        &self,
        args: &[String],
        [stdin, stdout, stderr]: [OwnedFd; 3],
    ) -> Result<Pid, String> {
        let me = std::process::id();
        let json = self.crun.state_dir.join(format!("exec-{me}.json"));
        let pid_file = self.crun.state_dir.join(format!("exec-{me}.pid"));
        let mut process = self.process.clone();
        process.set_args(Some(args.to_vec()));
        process.set_terminal(Some(false));
        process.set_console_size(None);
        process.set_oom_score_adj(None);
        let bytes =
            serde_json::to_vec(&process).map_err(|e| format!("exec: serialize process: {e}"))?;
        fs::write(&json, bytes).map_err(|e| format!("exec: write {}: {e}", json.display()))?;
        let mut cmd = self.crun.command(&[
            "exec".into(),
            "--detach".into(),
            "--process".into(),
            json.clone().into(),
            "--pid-file".into(),
            pid_file.clone().into(),
            self.crun.id.clone().into(),
        ]);
        cmd.stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        let ran = self.crun.run("exec", cmd);
        let _ = fs::remove_file(&json);
        let pid = ran.and_then(|()| read_pid(&pid_file));
        let _ = fs::remove_file(&pid_file);
        Ok(Pid::from_raw(pid?))
    }
}

fn read_pid(path: &Path) -> Result<i32, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{} holds no pid: {text:?}", path.display()))
}

/// What tells crun it already runs from a sealed copy of itself (runc's name, which crun
/// kept).
const CLONED_BINARY_ENV: &str = "_LIBCONTAINER_CLONED_BINARY";

/// The sealed copy of the crun binary this process runs crun from: the zygote's, which
/// every monitor forked after the zygote's first crun create inherits
/// ([`seal_for_children`]), or one made at this process's first crun command. None where
/// it could not be made (crun then copies itself, as always).
///
/// crun starts by copying its own binary into a memfd sealed against writes and executing
/// itself again from it, unless it already runs from such a copy ([`CLONED_BINARY_ENV`]
/// and the four seals, which crun checks): runc's defence against CVE-2019-5736, where a
/// container that can open its runtime's `/proc/<pid>/exe` for writing overwrites the
/// host's binary. That second exec, the dynamic linking again included, is ~1.5 ms of each
/// crun command on this project's machine, and a container's monitor runs five or more
/// (create, start, an exec per ExecSync, kill, delete). Every crun command runs from the
/// sealed copy made here instead: the defence holds (a container's `/proc/<pid>/exe` of
/// crun is that copy), and one copy (490 KB for Debian's crun) serves all the monitors
/// instead of one per command.
fn sealed_copy(binary: &Path) -> Option<&'static OwnedFd> {
    let sealed = SEALED
        .get_or_init(|| match Sealed::of(binary) {
            Ok(sealed) => Some(sealed),
            Err(e) => {
                tracing::debug!("crun left to copy itself: {e}");
                None
            }
        })
        .as_ref()?;
    (sealed.binary == binary && sealed.still_open()).then_some(&sealed.fd)
}

/// Makes this process's sealed copy of `binary` (the zygote's: its later children inherit
/// it and share it), if it has none.
pub(crate) fn seal_for_children(binary: &Path) {
    let _ = sealed_copy(binary);
}

/// This process's sealed copy of crun, if it has one: children keep it open
/// (`process::close_fds_except`; close-on-exec).
pub(crate) fn sealed_fd() -> Option<RawFd> {
    SEALED.get()?.as_ref().map(|s| s.fd.as_raw_fd())
}

static SEALED: OnceLock<Option<Sealed>> = OnceLock::new();

struct Sealed {
    binary: PathBuf,
    fd: OwnedFd,
    /// The memfd's inode: a descriptor closed since (by a child closing what it does not
    /// need) and its number reused is never executed.
    inode: (u64, u64),
}

impl Sealed {
    fn of(binary: &Path) -> io::Result<Sealed> {
        let fd = seal(binary)?;
        let inode = identity(&fd)?;
        Ok(Sealed {
            binary: binary.to_owned(),
            fd,
            inode,
        })
    }

    fn still_open(&self) -> bool {
        identity(&self.fd).is_ok_and(|id| id == self.inode)
    }
}

fn identity(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// A copy of `binary` in a memfd with crun's seals (no write, grow, shrink or new seal).
fn seal(binary: &Path) -> io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(
        c"proxrt-crun",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut copy = fs::File::from(fd);
    io::copy(&mut fs::File::open(binary)?, &mut copy)?;
    rustix::fs::fcntl_add_seals(
        &copy,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )?;
    Ok(copy.into())
}

/// In the forked child, before exec: a private mount namespace without the cgroup2 mount,
/// (where a hybrid host mounts it, and where crun looks to detect hybrid mode), in which
/// crun sees a cgroup v1 host (`[crun] hybrid_cgroups = "v1-view"`). Only this
/// crun process and what it leaves running see it; the host's mounts are untouched.
fn enter_v1_view() -> io::Result<()> {
    let fail = |what: &str| {
        let e = io::Error::last_os_error();
        io::Error::new(e.kind(), format!("private cgroup v1 view: {what}: {e}"))
    };
    // SAFETY: plain syscalls with constant, NUL-terminated arguments.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(fail("unshare(CLONE_NEWNS)"));
        }
        // Slave before unmounting: in a namespace whose mounts are shared with the host's,
        // the unmount would propagate and remove the host's cgroup2 mount too.
        let flags = libc::MS_REC | libc::MS_SLAVE;
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        ) != 0
        {
            return Err(fail("make / a slave mount"));
        }
        if libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) != 0 {
            let e = io::Error::last_os_error();
            // Not mounted (EINVAL) or missing: nothing to hide.
            if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
                return Err(fail("unmount /sys/fs/cgroup/unified"));
            }
        }
    }
    Ok(())
}
