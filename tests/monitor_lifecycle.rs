//! The process model end to end, as root: a zygote re-exec'd from the `proxrt` binary,
//! monitors creating busybox containers through libcontainer, CRI logs, exec, sandbox
//! holders, and after each test a check that nothing leaked (cgroup, libcontainer state,
//! monitor process, mounts).
//!
//! Skipped (passing) when not run as root. The binary's `main` must dispatch
//! `proxrt __zygote` to `proxrt::monitor::zygote_main(3)`.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oci_spec::runtime::{
    HookBuilder, HooksBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, Mount, MountBuilder, RootBuilder, Spec,
};
use proxrt::error::{Classify, Kind};
use proxrt::monitor::seccomp_bpf::{ContainerFilter, Program};
use proxrt::monitor::{
    read_status, teardown_sandbox, AttachEvent, AttachOutput, AttachStreams, ContainerStatusFile,
    CreateRequest, Created, ExecSyncRequest, MonitorClient, MonitorError, SandboxCreated,
    SandboxRequest, Zygote,
};

const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "id", "true", "false", "hostname", "ls", "yes", "head", "wc",
    "touch", "test", "[", "stty", "tty",
];

struct Fixture {
    tmp: tempfile::TempDir,
    zygote: Zygote,
    /// Every container's cgroup is `/<cg_parent>/<id>`; the parent is removed on drop.
    cg_parent: String,
    /// What a failing test may leave running, stopped on drop: container state dirs and
    /// sandbox (dir, holder) pairs.
    containers: Mutex<Vec<PathBuf>>,
    sandboxes: Mutex<Vec<(PathBuf, i32)>>,
}

impl Fixture {
    /// None (the test passes vacuously) when not root.
    fn new() -> Option<Fixture> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix("pxm")
            .tempdir_in("/tmp")
            .unwrap();
        let rootfs = tmp.path().join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in BUSYBOX_APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let zygote = Zygote::spawn_exec(Path::new(env!("CARGO_BIN_EXE_proxrt")), &["__zygote"])
            .expect("spawn zygote");
        let cg_parent = format!("proxrt-test-{}", &random_id()[..12]);
        Some(Fixture {
            tmp,
            zygote,
            cg_parent,
            containers: Mutex::new(Vec::new()),
            sandboxes: Mutex::new(Vec::new()),
        })
    }

    async fn create(&self, req: &CreateRequest) -> Result<Created, MonitorError> {
        self.containers.lock().unwrap().push(req.state_dir.clone());
        self.zygote.create_container(req.clone()).await
    }

    async fn sandbox(&self, req: &SandboxRequest) -> Result<SandboxCreated, MonitorError> {
        let created = self.zygote.spawn_sandbox(req.clone(), |_| Ok(())).await?;
        self.sandboxes
            .lock()
            .unwrap()
            .push((req.dir.clone(), created.holder_pid));
        Ok(created)
    }

    fn rootfs(&self) -> PathBuf {
        self.tmp.path().join("rootfs")
    }

    /// A bundle running `args` and the request to create it.
    fn request(&self, args: &[&str], tweak: impl FnOnce(&mut Spec)) -> CreateRequest {
        let id = random_id();
        let short = &id[..12];
        let bundle = self.tmp.path().join("bundles").join(short);
        fs::create_dir_all(&bundle).unwrap();
        let mut spec = Spec::default();
        spec.set_root(Some(
            RootBuilder::default()
                .path(self.rootfs())
                .readonly(false)
                .build()
                .unwrap(),
        ));
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        process.set_terminal(Some(false));
        spec.set_process(Some(process));
        let mut linux = spec.linux().clone().unwrap();
        linux.set_cgroups_path(Some(PathBuf::from(format!("/{}/{id}", self.cg_parent))));
        linux.set_namespaces(Some(
            [
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Network,
            ]
            .into_iter()
            .map(|t| LinuxNamespaceBuilder::default().typ(t).build().unwrap())
            .collect(),
        ));
        spec.set_linux(Some(linux));
        tweak(&mut spec);
        spec.save(bundle.join("config.json")).unwrap();
        CreateRequest {
            id: id.clone(),
            bundle,
            state_dir: self.tmp.path().join("s").join(short),
            runtime_root: self.tmp.path().join("lc"),
            log: Some(proxrt::logs::LogTarget {
                dir: self.tmp.path().join("logs"),
                file: format!("{short}.log").into(),
            }),
            max_log_line_size: 0,
            oom_score_adj: None,
            exec_max_output: 0,
            tty: false,
            stdin: false,
            stdin_once: false,
            runtime: Default::default(),
            pods_mount: None,
            create_template_idle_secs: None,
            premounts: Vec::new(),
            seccomp: None,
        }
    }

    /// Live monitors of this fixture's containers: they hold a log file under its dir.
    fn live_monitors(&self) -> Vec<i32> {
        let ours = self.tmp.path().to_path_buf();
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "proxrt-monitor")
                    && !is_dead(*pid)
                    && fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                        fds.flatten()
                            .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(&ours)))
                    })
            })
            .collect()
    }

    fn cgroup_leaves(&self, id: &str) -> Vec<PathBuf> {
        cgroup_roots()
            .into_iter()
            .map(|r| r.join(&self.cg_parent).join(id))
            .filter(|p| p.exists())
            .collect()
    }

    /// Nothing of the container is left but its final status.json (and its log), once its
    /// monitor is gone (it removes the cgroup and the runtime's state after answering the
    /// exit).
    fn assert_clean(&self, req: &CreateRequest, status: &ContainerStatusFile) {
        assert!(status.is_final(), "{status:?}");
        assert!(
            wait_until_dead(status.monitor_pid),
            "monitor {} still running",
            status.monitor_pid
        );
        assert!(
            !req.runtime_root.join(&req.id).exists(),
            "libcontainer state left behind"
        );
        assert_eq!(
            self.cgroup_leaves(&req.id),
            Vec::<PathBuf>::new(),
            "cgroup left behind"
        );
        let left: Vec<String> = fs::read_dir(&req.state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["status.json".to_string()]);
    }

    fn assert_nothing_created(&self, req: &CreateRequest) {
        assert!(
            !req.runtime_root.join(&req.id).exists(),
            "libcontainer state left"
        );
        assert_eq!(
            self.cgroup_leaves(&req.id),
            Vec::<PathBuf>::new(),
            "cgroup left"
        );
        let left: Vec<_> = fs::read_dir(&req.state_dir)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "state dir content left: {left:?}");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for (dir, holder) in self.sandboxes.lock().unwrap().drain(..) {
            let _ = teardown_sandbox(&dir, Some(holder));
        }
        for state_dir in self.containers.lock().unwrap().drain(..) {
            let Ok(Some(status)) = read_status(&state_dir) else {
                continue;
            };
            if !status.is_final() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(status.init_pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            // The monitor removes the container's leaf cgroups after it has written the
            // final status: the parent can go once the monitor is gone.
            wait_until_dead(status.monitor_pid);
        }
        for root in cgroup_roots() {
            let _ = fs::remove_dir(root.join(&self.cg_parent));
        }
    }
}

fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    roots.extend(
        fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir()),
    );
    roots
}

fn random_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Dead, or a zombie: exited processes re-parented to a pid 1 that does not reap (as in
/// some CI sandboxes) stay zombies forever.
fn is_dead(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
    }
}

fn wait_until_dead(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if is_dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn log_lines(req: &CreateRequest) -> Vec<String> {
    fs::read_to_string(req.log.as_ref().unwrap().path())
        .unwrap_or_default()
        .lines()
        // drop the timestamp
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect()
}

/// Whether `line` (without its timestamp) reaches the container's log within 10 s: what a
/// container prints at start may come after the first exec on a busy machine.
async fn logged(req: &CreateRequest, line: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_lines(req).iter().any(|l| l == line) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

fn exec(args: &[&str], timeout: Option<Duration>) -> ExecSyncRequest {
    ExecSyncRequest {
        args: args.iter().map(|s| s.to_string()).collect(),
        timeout,
    }
}

async fn kill_and_wait(client: &MonitorClient) -> ContainerStatusFile {
    client.signal(libc::SIGKILL).await.unwrap();
    client.wait().await.unwrap();
    client.status().unwrap().unwrap()
}

#[tokio::test]
async fn container_output_exit_code_and_cleanup() {
    let Some(fx) = Fixture::new() else { return };
    let req = fx.request(&["sh", "-c", "echo hello; echo oops >&2; exit 3"], |_| {});
    let created = fx.create(&req).await.unwrap();
    let status = read_status(&req.state_dir).unwrap().unwrap();
    assert_eq!(status.init_pid, created.init_pid);
    assert_eq!(status.monitor_pid, created.monitor_pid);
    assert!(status.started_at.is_none() && !status.is_final());
    // The monitor is not the zygote's child (double fork): it was re-parented.
    let stat = fs::read_to_string(format!("/proc/{}/stat", created.monitor_pid)).unwrap();
    let ppid: i32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(ppid, fx.zygote.pid());

    let client = MonitorClient::new(&req.state_dir);
    assert!(client.is_alive());
    client.start().await.unwrap();
    let exit = client.wait().await.unwrap();
    assert_eq!(exit.exit_code, 3);
    assert_eq!(exit.signal, None);
    assert!(!exit.oom_killed);

    let status = read_status(&req.state_dir).unwrap().unwrap();
    assert!(status.started_at.is_some());
    assert!(status.finished_at >= status.started_at);
    assert_eq!(status.exit_code, Some(3));
    let lines = log_lines(&req);
    assert!(lines.contains(&"stdout F hello".to_string()), "{lines:?}");
    assert!(lines.contains(&"stderr F oops".to_string()), "{lines:?}");
    fx.assert_clean(&req, &status);
    assert!(!client.is_alive());
    // After the monitor is gone the status file still answers.
    assert_eq!(client.wait().await.unwrap(), exit);
    client.signal(libc::SIGTERM).await.unwrap();
    assert_eq!(
        client.start().await.unwrap_err().kind(),
        Kind::FailedPrecondition
    );
}

#[tokio::test]
async fn sigkill_ends_a_running_container() {
    let Some(fx) = Fixture::new() else { return };
    let req = fx.request(&["sleep", "1000"], |_| {});
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();
    let status = kill_and_wait(&client).await;
    assert_eq!(status.exit_code, Some(137));
    assert_eq!(status.signal, Some(9));
    fx.assert_clean(&req, &status);
}

#[tokio::test]
async fn a_created_container_that_is_killed_ends_cleanly() {
    let Some(fx) = Fixture::new() else { return };
    let req = fx.request(&["sleep", "1000"], |_| {});
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    let status = kill_and_wait(&client).await;
    assert!(status.started_at.is_none());
    assert_eq!(status.exit_code, Some(137));
    fx.assert_clean(&req, &status);
}

#[tokio::test]
async fn wrong_state_requests_are_refused() {
    let Some(fx) = Fixture::new() else { return };
    let req = fx.request(&["sleep", "1000"], |_| {});
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    let err = client.exec_sync(exec(&["true"], None)).await.unwrap_err();
    assert_eq!(err.kind(), Kind::FailedPrecondition, "{err}");
    client.start().await.unwrap();
    let err = client.start().await.unwrap_err();
    assert_eq!(err.kind(), Kind::FailedPrecondition, "{err}");
    let err = client.signal(0).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    // A waiter that gives up does not leave its connection open in the monitor.
    let monitor = client.status().unwrap().unwrap().monitor_pid;
    let fds = || fs::read_dir(format!("/proc/{monitor}/fd")).unwrap().count();
    // The monitor closes a connection just after writing its reply: let that settle.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = fds();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), client.wait())
            .await
            .is_err()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while fds() != before {
        assert!(
            Instant::now() < deadline,
            "the abandoned wait stays connected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = kill_and_wait(&client).await;
    fx.assert_clean(&req, &status);
}

#[tokio::test]
async fn exec_sync_output_exit_code_cap_and_timeout() {
    let Some(fx) = Fixture::new() else { return };
    let mut req = fx.request(&["sleep", "1000"], |_| {});
    req.exec_max_output = 1000;
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();

    let r = client
        .exec_sync(exec(&["sh", "-c", "echo out; echo err >&2; exit 5"], None))
        .await
        .unwrap();
    assert_eq!((r.exit_code, r.timed_out), (5, false));
    assert_eq!(r.stdout, b"out\n");
    assert_eq!(r.stderr, b"err\n");

    // The container process's identity and environment.
    let r = client
        .exec_sync(exec(&["sh", "-c", "id -u; pwd; echo $PATH"], None))
        .await
        .unwrap();
    let out = String::from_utf8(r.stdout).unwrap();
    assert!(out.starts_with("0\n/\n/usr/local/sbin"), "{out}");

    // Output beyond the cap is discarded; `yes | head` ends, so SIGPIPE is not ignored.
    let r = client
        .exec_sync(exec(
            &["sh", "-c", "yes | head -c 100000; echo done >&2"],
            Some(Duration::from_secs(20)),
        ))
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0);
    assert!(!r.timed_out);
    assert_eq!(r.stdout.len(), 1000);
    assert_eq!(r.stderr, b"done\n");

    let r = client
        .exec_sync(exec(&["sleep", "100"], Some(Duration::from_millis(300))))
        .await
        .unwrap();
    assert!(r.timed_out);
    assert_eq!(r.exit_code, 137);

    let err = client
        .exec_sync(exec(&["/no/such/binary"], None))
        .await
        .unwrap_err();
    eprintln!("exec of a nonexistent binary: {err}");
    assert!(err.to_string().contains("/no/such/binary"), "{err}");

    // Concurrent execs are served side by side.
    let (a, b) = tokio::join!(
        client.exec_sync(exec(&["echo", "a"], None)),
        client.exec_sync(exec(&["echo", "b"], None))
    );
    assert_eq!(a.unwrap().stdout, b"a\n");
    assert_eq!(b.unwrap().stdout, b"b\n");

    // No tenant notify sockets pile up in libcontainer's state dir.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let leftovers: Vec<_> = fs::read_dir(req.runtime_root.join(&req.id))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tenant-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let status = kill_and_wait(&client).await;
    fx.assert_clean(&req, &status);
}

#[tokio::test]
async fn monitor_survives_the_zygote_and_a_new_client_talks_to_it() {
    let Some(fx) = Fixture::new() else { return };
    let req = fx.request(&["sh", "-c", "echo started; exec sleep 1000"], |_| {});
    let created = fx.create(&req).await.unwrap();
    MonitorClient::new(&req.state_dir).start().await.unwrap();

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(fx.zygote.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until_dead(fx.zygote.pid()));
    assert!(!is_dead(created.monitor_pid));

    let fresh = MonitorClient::new(&req.state_dir);
    assert!(fresh.is_alive());
    let r = fresh
        .exec_sync(exec(&["echo", "still here"], None))
        .await
        .unwrap();
    assert_eq!(r.stdout, b"still here\n");
    let err = fx.create(&fx.request(&["true"], |_| {})).await.unwrap_err();
    assert!(matches!(err, MonitorError::ZygoteGone(_)), "{err}");

    assert!(
        logged(&req, "stdout F started").await,
        "{:?}",
        log_lines(&req)
    );
    let status = kill_and_wait(&fresh).await;
    assert!(log_lines(&req).contains(&"stdout F started".to_string()));
    fx.assert_clean(&req, &status);
}

#[tokio::test]
async fn create_failures_leave_nothing() {
    let Some(fx) = Fixture::new() else { return };

    let req = fx.request(&["/no/such/binary"], |_| {});
    let err = fx.create(&req).await.unwrap_err();
    eprintln!("nonexistent binary: {err}");
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    fx.assert_nothing_created(&req);

    let mut req = fx.request(&["true"], |_| {});
    req.bundle = fx.tmp.path().join("no-such-bundle");
    let err = fx.create(&req).await.unwrap_err();
    eprintln!("missing bundle: {err}");
    assert!(err.to_string().contains("config.json"), "{err}");
    fx.assert_nothing_created(&req);

    let mut req = fx.request(&["true"], |_| {});
    req.tty = true;
    let err = fx.create(&req).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument);

    // The zygote still serves after failures.
    let req = fx.request(&["true"], |_| {});
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();
    assert_eq!(client.wait().await.unwrap().exit_code, 0);
    fx.assert_clean(&req, &client.status().unwrap().unwrap());
}

/// A profile refusing utimensat (busybox `touch` of any path) with EPERM, compiled.
fn no_touch_filter() -> ContainerFilter {
    let profile: oci_spec::runtime::LinuxSeccomp = serde_json::from_str(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["utimensat", "utime", "utimes", "futimesat"],
                          "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .unwrap();
    ContainerFilter {
        program: Program::compile(&profile).unwrap().unwrap(),
        capabilities: None,
    }
}

const TOUCH: &str = "touch /touched && echo touched || echo refused";

/// The daemon's compiled filter (the bundle's seccomp.bpf, `FilterLoad` in the request)
/// binds the container's process and its execs; one that cannot be read or loaded fails
/// the create and leaves nothing.
#[tokio::test]
async fn a_compiled_filter_binds_the_container_and_its_execs_or_fails_the_create() {
    let Some(fx) = Fixture::new() else { return };
    let filter = no_touch_filter();
    let nnp = |spec: &mut Spec| {
        let mut process = spec.process().clone().unwrap();
        process.set_no_new_privileges(Some(true));
        spec.set_process(Some(process));
    };
    let mut req = fx.request(&["sh", "-c", &format!("{TOUCH}; sleep 1000")], nnp);
    filter.write(&req.bundle).unwrap();
    req.seccomp = Some(filter.request());
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();
    let said = |line: &str| {
        log_lines(&req)
            .iter()
            .any(|l| l.starts_with("stdout F ") && l.ends_with(line))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !said("refused") && !said("touched") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(said("refused"), "main process: {:?}", log_lines(&req));
    let r = client
        .exec_sync(exec(&["sh", "-c", TOUCH], None))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "refused\n", "ExecSync");
    let status = kill_and_wait(&client).await;
    fx.assert_clean(&req, &status);

    // Without no_new_privs and without CAP_SYS_ADMIN lent for the load, the kernel
    // refuses it in the init: the create fails, saying so.
    let mut req = fx.request(&["true"], |spec| {
        let mut process = spec.process().clone().unwrap();
        process.set_no_new_privileges(None);
        spec.set_process(Some(process));
    });
    filter.write(&req.bundle).unwrap();
    req.seccomp = Some(filter.request());
    let err = fx.create(&req).await.unwrap_err();
    eprintln!("a filter the kernel refuses: {err}");
    assert!(err.to_string().contains("seccomp"), "{err}");
    fx.assert_nothing_created(&req);

    // The program missing from the bundle.
    let mut req = fx.request(&["true"], nnp);
    req.seccomp = Some(filter.request());
    let err = fx.create(&req).await.unwrap_err();
    assert!(err.to_string().contains("seccomp.bpf"), "{err}");
    fx.assert_nothing_created(&req);
}

#[tokio::test]
async fn oom_score_adj_is_set_on_the_init_not_the_monitor() {
    let Some(fx) = Fixture::new() else { return };
    let mut req = fx.request(&["sleep", "1000"], |spec| {
        let mut p = spec.process().clone().unwrap();
        p.set_oom_score_adj(Some(500));
        spec.set_process(Some(p));
    });
    req.oom_score_adj = Some(300);
    let created = fx.create(&req).await.unwrap();
    let adj = |pid: i32| fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    assert_eq!(adj(created.init_pid).trim(), "300");
    assert_eq!(adj(created.monitor_pid).trim(), "0");
    let spec = Spec::load(req.bundle.join("config.json")).unwrap();
    assert_eq!(spec.process().as_ref().unwrap().oom_score_adj(), None);
    let client = MonitorClient::new(&req.state_dir);
    let status = kill_and_wait(&client).await;
    fx.assert_clean(&req, &status);
}

#[tokio::test]
async fn reopen_log_continues_in_a_new_file() {
    let Some(fx) = Fixture::new() else { return };
    let req = fx.request(
        &[
            "sh",
            "-c",
            "echo one; while ! test -e /tmp/go-$0; do sleep 0.02; done; echo two",
        ],
        |_| {},
    );
    // $0 of `sh -c` is the next argument: give the container a unique flag file name.
    let mut req = req;
    let short = req.id[..12].to_string();
    let mut spec = Spec::load(req.bundle.join("config.json")).unwrap();
    let mut p = spec.process().clone().unwrap();
    let mut args = p.args().clone().unwrap();
    args.push(short.clone());
    p.set_args(Some(args));
    spec.set_process(Some(p));
    spec.save(req.bundle.join("config.json")).unwrap();
    req.max_log_line_size = 0;

    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();
    let log = req.log.as_ref().unwrap().path();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_lines(&req).contains(&"stdout F one".to_string()) {
        assert!(Instant::now() < deadline, "first line never logged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rotated = log.with_extension("log.1");
    fs::rename(&log, &rotated).unwrap();
    client.reopen_log().await.unwrap();
    fs::write(fx.rootfs().join("tmp").join(format!("go-{short}")), b"").unwrap();
    assert_eq!(client.wait().await.unwrap().exit_code, 0);
    assert_eq!(log_lines(&req), vec!["stdout F two".to_string()]);
    assert!(fs::read_to_string(&rotated)
        .unwrap()
        .contains("stdout F one"));
    fx.assert_clean(&req, &client.status().unwrap().unwrap());
}

#[tokio::test]
async fn memory_limit_oom_is_recorded() {
    let Some(fx) = Fixture::new() else { return };
    let limit = 8 * 1024 * 1024;
    let req = fx.request(&["sh", "-c", "x=a; while true; do x=$x$x; done"], |spec| {
        let mut linux = spec.linux().clone().unwrap();
        linux.set_resources(Some(
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .limit(limit)
                        .swap(limit)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        ));
        spec.set_linux(Some(linux));
    });
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(60), client.wait())
        .await
        .expect("the OOM killer never struck")
        .unwrap();
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.exit_code, 137);
    fx.assert_clean(&req, &client.status().unwrap().unwrap());
}

#[tokio::test]
async fn concurrent_creates_each_get_their_own_monitor() {
    let Some(fx) = Fixture::new() else { return };
    let reqs: Vec<CreateRequest> = (0..6)
        .map(|i| fx.request(&["sh", "-c", &format!("echo container-{i}")], |_| {}))
        .collect();
    let created = futures_join_all(reqs.iter().map(|r| fx.create(r))).await;
    let mut monitors: Vec<i32> = created
        .into_iter()
        .map(|c| c.unwrap().monitor_pid)
        .collect();
    monitors.dedup();
    assert_eq!(monitors.len(), reqs.len());
    for (i, req) in reqs.iter().enumerate() {
        let client = MonitorClient::new(&req.state_dir);
        client.start().await.unwrap();
        assert_eq!(client.wait().await.unwrap().exit_code, 0);
        assert_eq!(log_lines(req), vec![format!("stdout F container-{i}")]);
        fx.assert_clean(req, &client.status().unwrap().unwrap());
    }
}

#[tokio::test]
async fn a_cancelled_create_leaves_nothing() {
    let Some(fx) = Fixture::new() else { return };
    let mut cancelled = Vec::new();
    for delay_us in [0u64, 1000, 3000, 5000, 7000, 9000, 12000, 16000, 25000] {
        let req = fx.request(&["sleep", "1000"], |_| {});
        match tokio::time::timeout(Duration::from_micros(delay_us), fx.create(&req)).await {
            Ok(created) => {
                // Fast enough to finish: clean up the normal way.
                created.unwrap();
                kill_and_wait(&MonitorClient::new(&req.state_dir)).await;
            }
            Err(_) => cancelled.push(req),
        }
    }
    assert!(!cancelled.is_empty());
    // The zygote skips the replies of cancelled calls and keeps serving (and once this
    // create returns, every cancelled request has been forked).
    let req = fx.request(&["true"], |_| {});
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();
    client.wait().await.unwrap();
    fx.assert_clean(&req, &client.status().unwrap().unwrap());

    // Each monitor whose create was cancelled notices that nobody took its container,
    // removes it and exits. Checked twice, apart, so that a monitor still starting up
    // cannot pass for one that already cleaned up.
    let all_gone = || {
        fx.live_monitors().is_empty()
            && cancelled.iter().all(|req| {
                !req.runtime_root.join(&req.id).exists()
                    && fx.cgroup_leaves(&req.id).is_empty()
                    && fs::read_dir(&req.state_dir)
                        .map(|d| d.count() == 0)
                        .unwrap_or(true)
            })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if all_gone() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if all_gone() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "cancelled creates left state or monitors: {:?}",
            fx.live_monitors()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the futures concurrently on this task (no extra crate needed).
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

/// `Zygote::spawn` (the fork variant `main` uses) refuses multi-threaded processes, and the
/// test harness has threads: run it in a forked child of the test, which has only the
/// forking thread. The child prints nothing (stderr's lock may be held by another thread
/// at fork time) and reports through its exit code.
#[test]
fn forked_zygote_serves_like_the_exec_one() {
    let Some(fx) = Fixture::new() else { return };
    let req = fx.request(&["sh", "-c", "echo forked; exec sleep 1000"], |_| {});
    fx.containers.lock().unwrap().push(req.state_dir.clone());
    // SAFETY: the child only runs this test's code and exits with _exit.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let outcome = std::panic::catch_unwind(|| {
                let zygote = Zygote::spawn().map_err(|_| 10)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|_| 11)?;
                rt.block_on(async {
                    zygote.create_container(req.clone()).await.map_err(|_| 12)?;
                    let client = MonitorClient::new(&req.state_dir);
                    client.start().await.map_err(|_| 13)?;
                    let r = client
                        .exec_sync(exec(&["echo", "exec"], None))
                        .await
                        .map_err(|_| 14)?;
                    if r.stdout != b"exec\n" {
                        return Err(15);
                    }
                    // The shell may not have printed yet on a busy machine: the kill
                    // waits for its line in the log.
                    if !logged(&req, "stdout F forked").await {
                        return Err(19);
                    }
                    client.signal(libc::SIGKILL).await.map_err(|_| 16)?;
                    let exit = client.wait().await.map_err(|_| 17)?;
                    if exit.exit_code != 137 {
                        return Err(18);
                    }
                    Ok::<(), i32>(())
                })
            });
            let code = match outcome {
                Ok(Ok(())) => 0,
                Ok(Err(code)) => code,
                Err(_) => 99,
            };
            // SAFETY: leave without running the harness's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
    assert_eq!(log_lines(&req), vec!["stdout F forked".to_string()]);
    fx.assert_clean(&req, &read_status(&req.state_dir).unwrap().unwrap());
}

/// The daemon is `kill -9`ed: its zygote dies with it (PR_SET_PDEATHSIG), the container's
/// monitor does not, and a fresh client (a restarted daemon) finds it again. The "daemon"
/// is a forked child of the test that uses `Zygote::spawn`, as `main` does.
#[test]
fn monitor_survives_kill_9_of_the_daemon() {
    let Some(fx) = Fixture::new() else { return };
    let req = fx.request(&["sh", "-c", "echo before; exec sleep 1000"], |_| {});
    fx.containers.lock().unwrap().push(req.state_dir.clone());
    let (ready_r, ready_w) = nix::unistd::pipe().unwrap();
    // SAFETY: the child only runs this code and never returns.
    let daemon = match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            // A panic must not unwind into the test harness's copy in this child.
            let code = std::panic::catch_unwind(|| {
                let zygote = Zygote::spawn().map_err(|_| 10)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|_| 11)?;
                rt.block_on(async {
                    zygote.create_container(req.clone()).await.map_err(|_| 12)?;
                    MonitorClient::new(&req.state_dir)
                        .start()
                        .await
                        .map_err(|_| 13)?;
                    Ok::<(), i32>(())
                })?;
                nix::unistd::write(&ready_w, &zygote.pid().to_ne_bytes()).map_err(|_| 14)?;
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
            .unwrap_or(Err(99));
            let code: i32 = match code {
                Err(c) => c,
                Ok(()) => 0,
            };
            // SAFETY: leave without running the harness's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(ready_w);
    let mut zygote_pid = [0u8; 4];
    let n = nix::unistd::read(ready_r.as_raw_fd(), &mut zygote_pid).unwrap();
    assert_eq!(
        n,
        4,
        "the daemon failed: {:?}",
        nix::sys::wait::waitpid(daemon, None)
    );
    let zygote_pid = i32::from_ne_bytes(zygote_pid);

    nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGKILL).unwrap();
    nix::sys::wait::waitpid(daemon, None).unwrap();
    assert!(
        wait_until_dead(zygote_pid),
        "the zygote outlived the daemon"
    );

    // The test's own runtime starts only now: the forked "daemon" above must not inherit
    // one (it builds its own).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let restarted = MonitorClient::new(&req.state_dir);
    let status = restarted.status().unwrap().unwrap();
    assert!(
        !is_dead(status.monitor_pid),
        "the monitor died with the daemon"
    );
    assert!(restarted.is_alive());
    let r = rt
        .block_on(restarted.exec_sync(exec(&["echo", "after"], None)))
        .unwrap();
    assert_eq!(r.stdout, b"after\n");
    let status = rt.block_on(kill_and_wait(&restarted));
    assert_eq!(status.exit_code, Some(137));
    assert_eq!(log_lines(&req), vec!["stdout F before".to_string()]);
    fx.assert_clean(&req, &status);
}

/// A pods dir as the daemon makes it (a private mount of its own) with two pods' /dev/shm
/// tmpfs mounts below it, each holding a file naming its pod; all detached on drop.
struct PodsDir(PathBuf);

impl PodsDir {
    fn new(fx: &Fixture, own_mount: bool) -> PodsDir {
        let dir = fx.tmp.path().join("pods-dir");
        fs::create_dir_all(&dir).unwrap();
        if own_mount {
            // As the daemon makes it (mounts::make_own_mount).
            use nix::mount::{mount, MsFlags};
            mount(
                Some(&dir),
                &dir,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .unwrap();
            mount(
                None::<&str>,
                &dir,
                None::<&str>,
                MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .unwrap();
        }
        let pods = PodsDir(dir);
        for pod in ["mine", "other"] {
            let shm = pods.shm(pod);
            fs::create_dir_all(&shm).unwrap();
            nix::mount::mount(
                Some("shm"),
                &shm,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
            fs::write(shm.join("marker"), pod).unwrap();
        }
        pods
    }

    fn shm(&self, pod: &str) -> PathBuf {
        self.0.join(pod).join("shm")
    }

    /// A spec whose /dev/shm is pod `mine`'s and whose createRuntime hook (run by the
    /// runtime, in the namespace it creates the container from) writes the mount table
    /// it sees to `seen`.
    fn spec(&self, spec: &mut Spec, seen: &Path) {
        let mut mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
        mounts.retain(|m| m.destination() != Path::new("/dev/shm"));
        mounts.push(
            MountBuilder::default()
                .destination("/dev/shm")
                .typ("bind")
                .source(self.shm("mine"))
                .options(vec!["rbind".to_string(), "rw".to_string()])
                .build()
                .unwrap(),
        );
        spec.set_mounts(Some(mounts));
        let hook = HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "sh".to_string(),
                "-c".to_string(),
                format!("cat /proc/self/mountinfo > {}", seen.display()),
            ])
            .build()
            .unwrap();
        spec.set_hooks(Some(
            HooksBuilder::default()
                .create_runtime(vec![hook])
                .build()
                .unwrap(),
        ));
    }
}

impl Drop for PodsDir {
    fn drop(&mut self) {
        for pod in ["mine", "other"] {
            let _ = nix::mount::umount2(&self.shm(pod), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
        .collect()
}

/// With the daemon's pods dir a mount of its own, the runtime creates the container in a
/// copy of the host's mount namespace without the other pods' mounts: the mount table
/// the runtime's own createRuntime hook reads has this pod's /dev/shm and none of the
/// other pod's. The container uses that /dev/shm, the monitor serves it from the host's
/// namespace, and the host still has both pods' mounts.
#[tokio::test]
async fn a_container_is_created_without_the_other_pods_mounts() {
    let Some(fx) = Fixture::new() else { return };
    let pods = PodsDir::new(&fx, true);
    let (req, created, points) = create_seeing(&fx, &pods).await;
    assert!(points.contains(&pods.shm("mine")), "{points:#?}");
    assert!(
        !points.iter().any(|p| p.starts_with(pods.0.join("other"))),
        "the runtime saw the other pod's mounts: {points:#?}"
    );
    assert!(!points.contains(&pods.0), "{points:#?}");
    assert_eq!(
        fs::read_link(format!("/proc/{}/ns/mnt", created.monitor_pid)).unwrap(),
        fs::read_link("/proc/self/ns/mnt").unwrap(),
        "the monitor did not return to the host's mount namespace"
    );
    let host = mount_points(&fs::read_to_string("/proc/self/mountinfo").unwrap());
    assert!(host.contains(&pods.shm("other")) && host.contains(&pods.0));
    runs_with_its_pods_shm(&fx, &req).await;
}

/// A pods dir that is not a mount (an older daemon's pods below it kept the daemon from
/// making it one, or it was unmounted since): the container is created in the host's
/// namespace, seeing every pod's mounts, as without the option.
#[tokio::test]
async fn a_pods_dir_that_is_not_a_mount_leaves_the_create_in_the_hosts_namespace() {
    let Some(fx) = Fixture::new() else { return };
    let pods = PodsDir::new(&fx, false);
    let (req, _, points) = create_seeing(&fx, &pods).await;
    assert!(points.contains(&pods.shm("mine")), "{points:#?}");
    assert!(points.contains(&pods.shm("other")), "{points:#?}");
    runs_with_its_pods_shm(&fx, &req).await;
}

/// Creates a container of pod `mine` (its /dev/shm) with `pods_mount` set to `pods`, and
/// returns its request, what the monitor reported and the mount points its runtime's
/// createRuntime hook saw.
async fn create_seeing(fx: &Fixture, pods: &PodsDir) -> (CreateRequest, Created, Vec<PathBuf>) {
    let seen = fx.tmp.path().join("seen-mountinfo");
    let mut req = fx.request(&["cat", "/dev/shm/marker"], |spec| pods.spec(spec, &seen));
    req.pods_mount = Some(pods.0.clone());
    let created = fx.create(&req).await.unwrap();
    let points = mount_points(&fs::read_to_string(&seen).expect("the hook ran"));
    (req, created, points)
}

/// Starts the container of `create_seeing`: it reads pod `mine`'s marker from its
/// /dev/shm and ends, leaving nothing.
async fn runs_with_its_pods_shm(fx: &Fixture, req: &CreateRequest) {
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();
    assert_eq!(client.wait().await.unwrap().exit_code, 0);
    assert_eq!(log_lines(req), vec!["stdout F mine".to_string()]);
    fx.assert_clean(req, &read_status(&req.state_dir).unwrap().unwrap());
}

fn mounted_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

fn nsenter(args: &[&str]) -> String {
    let out = Command::new("nsenter").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "nsenter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sandbox_request(fx: &Fixture, name: &str) -> SandboxRequest {
    SandboxRequest {
        id: random_id(),
        dir: fx.tmp.path().join("pods").join(name),
        new_net: true,
        new_ipc: true,
        new_uts: true,
        new_pid: true,
        hostname: Some("pod-host".into()),
        sysctls: BTreeMap::new(),
        cgroup_dirs: Vec::new(),
    }
}

#[tokio::test]
async fn sandbox_holder_namespaces_and_teardown() {
    let Some(fx) = Fixture::new() else { return };
    let mut req = sandbox_request(&fx, "p1");
    req.sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "100".into());
    let sb = fx.sandbox(&req).await.unwrap();
    let net = sb.net_ns.clone().unwrap();
    let uts = sb.uts_ns.clone().unwrap();
    // Only the net namespace is bind-mounted (CNI's DEL must find it whatever became of
    // the holder); ipc and uts are reached through the holder.
    for (ns, name) in [(sb.ipc_ns.as_ref().unwrap(), "ipc"), (&uts, "uts")] {
        assert_eq!(
            ns,
            &PathBuf::from(format!("/proc/{}/ns/{name}", sb.holder_pid))
        );
        assert_ne!(
            fs::read_link(ns).unwrap(),
            fs::read_link(format!("/proc/self/ns/{name}")).unwrap()
        );
    }
    assert_eq!(
        fs::read_to_string(format!("/proc/{}/comm", sb.holder_pid))
            .unwrap()
            .trim(),
        "proxrt-pause"
    );
    let pid_ns = sb.pid_ns.clone().unwrap();
    assert_ne!(
        fs::read_link(&pid_ns).unwrap(),
        fs::read_link("/proc/self/ns/pid").unwrap()
    );
    // The holder is pid 1 of the new pid namespace.
    let status = fs::read_to_string(format!("/proc/{}/status", sb.holder_pid)).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.trim_end().ends_with("\t1"), "{nspid}");

    let net_arg = format!("--net={}", net.display());
    let uts_arg = format!("--uts={}", uts.display());
    assert_eq!(nsenter(&[&uts_arg, "hostname"]).trim(), "pod-host");
    assert_ne!(
        fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "pod-host"
    );
    let lo = nsenter(&[&net_arg, "/bin/busybox", "ip", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    assert_eq!(
        nsenter(&[
            &net_arg,
            "cat",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start"
        ])
        .trim(),
        "100"
    );
    assert_eq!(mounted_under(&req.dir).len(), 1, "the net namespace file");

    teardown_sandbox(&req.dir, Some(sb.holder_pid)).unwrap();
    assert!(is_dead(sb.holder_pid));
    assert!(mounted_under(&req.dir).is_empty());
    assert_eq!(fs::read_dir(&req.dir).unwrap().count(), 0);
    // Idempotent.
    teardown_sandbox(&req.dir, Some(sb.holder_pid)).unwrap();
}

#[tokio::test]
async fn teardown_does_not_kill_a_process_that_is_not_a_holder() {
    let Some(fx) = Fixture::new() else { return };
    let dir = fx.tmp.path().join("pods").join("none");
    fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new("sleep").arg("100").spawn().unwrap();
    teardown_sandbox(&dir, Some(child.id() as i32)).unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "teardown killed a stranger"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn bad_sysctls_are_refused_and_leave_nothing() {
    let Some(fx) = Fixture::new() else { return };
    let mut req = sandbox_request(&fx, "p2");
    req.sysctls.insert("kernel.panic".into(), "1".into());
    let err = fx.sandbox(&req).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");

    let mut req = sandbox_request(&fx, "p3");
    req.sysctls
        .insert("net.ipv4.no_such_knob".into(), "1".into());
    let err = fx.sandbox(&req).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("no_such_knob"), "{err}");
    assert!(mounted_under(&req.dir).is_empty());
    assert_eq!(fs::read_dir(&req.dir).unwrap().count(), 0);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `cargo test --test monitor_lifecycle -- --ignored --nocapture latency`
#[tokio::test]
#[ignore]
async fn latency() {
    let Some(fx) = Fixture::new() else { return };
    let (mut create, mut start, mut exec_t, mut sandbox) = (vec![], vec![], vec![], vec![]);
    for _ in 0..20 {
        let req = fx.request(&["sleep", "1000"], |_| {});
        let t = Instant::now();
        fx.create(&req).await.unwrap();
        create.push(t.elapsed());
        let client = MonitorClient::new(&req.state_dir);
        let t = Instant::now();
        client.start().await.unwrap();
        start.push(t.elapsed());
        kill_and_wait(&client).await;
    }
    let req = fx.request(&["sleep", "1000"], |_| {});
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();
    for _ in 0..20 {
        let t = Instant::now();
        let r = client.exec_sync(exec(&["true"], None)).await.unwrap();
        exec_t.push(t.elapsed());
        assert_eq!(r.exit_code, 0);
    }
    kill_and_wait(&client).await;
    for i in 0..20 {
        let req = sandbox_request(&fx, &format!("bench{i}"));
        let t = Instant::now();
        let sb = fx.sandbox(&req).await.unwrap();
        sandbox.push(t.elapsed());
        teardown_sandbox(&req.dir, Some(sb.holder_pid)).unwrap();
    }
    println!(
        "create (zygote → monitor → build → report) median {:?}",
        median(create)
    );
    println!("start median {:?}", median(start));
    println!("exec_sync `true` median {:?}", median(exec_t));
    println!(
        "sandbox holder (net+ipc+uts+pid) median {:?}",
        median(sandbox)
    );
}

// ----- stdin, tty and attach -----

/// A guard against a hang, not a timing assertion: generous on a loaded machine.
const ATTACH_GUARD: Duration = Duration::from_secs(60);

fn attach_streams(stdin: bool, stdout: bool, stderr: bool) -> AttachStreams {
    AttachStreams {
        stdin,
        stdout,
        stderr,
    }
}

/// Reads the session's stdout until it contains `want`; returns everything read.
async fn read_until(out: &mut AttachOutput, want: &str) -> String {
    let mut got = String::new();
    let read = async {
        while !got.contains(want) {
            match out.next().await.unwrap() {
                Some(AttachEvent::Stdout(d)) => got.push_str(&String::from_utf8_lossy(&d)),
                Some(AttachEvent::Stderr(_)) => {}
                other => panic!("waiting for {want:?} in {got:?}: {other:?}"),
            }
        }
    };
    if tokio::time::timeout(ATTACH_GUARD, read).await.is_err() {
        panic!("{want:?} never came; got {got:?}");
    }
    got
}

/// Reads the session to its end; returns the stdout bytes and how it ended.
async fn read_to_end(out: &mut AttachOutput) -> (Vec<u8>, Option<AttachEvent>) {
    let mut got = Vec::new();
    let read = async {
        loop {
            match out.next().await.unwrap() {
                Some(AttachEvent::Stdout(d)) => got.extend_from_slice(&d),
                Some(AttachEvent::Stderr(_)) => {}
                end => return end,
            }
        }
    };
    let end = tokio::time::timeout(ATTACH_GUARD, read)
        .await
        .expect("session never ended");
    (got, end)
}

#[tokio::test]
async fn attach_to_cat_echoes_and_stdin_stays_open_between_sessions() {
    let Some(fx) = Fixture::new() else { return };
    let mut req = fx.request(&["sh", "-c", "cat; echo stdin-closed"], |_| {});
    req.stdin = true;
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    // Not before start (CRI: attach needs a running container).
    let early = client.attach(attach_streams(true, true, true)).await;
    assert_eq!(early.unwrap_err().kind(), Kind::FailedPrecondition);
    client.start().await.unwrap();

    let (mut out, mut input) = client
        .attach(attach_streams(true, true, true))
        .await
        .unwrap();
    input.stdin(b"hello\n").await.unwrap();
    read_until(&mut out, "hello\n").await;
    // The first session leaves (its stdin ends): without stdin_once the container's
    // stdin stays open for the next one.
    input.close_stdin().await.unwrap();
    drop((out, input));

    let (mut out, mut input) = client
        .attach(attach_streams(true, true, false))
        .await
        .unwrap();
    input.stdin(b"again\n").await.unwrap();
    read_until(&mut out, "again\n").await;
    let status = client.status().unwrap().unwrap();
    assert!(!status.is_final(), "{status:?}");

    let status = kill_and_wait(&client).await;
    let lines = log_lines(&req);
    assert!(lines.contains(&"stdout F hello".to_string()), "{lines:?}");
    assert!(lines.contains(&"stdout F again".to_string()), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("stdin-closed")),
        "{lines:?}"
    );
    // The session ends with the container.
    assert_eq!(read_to_end(&mut out).await.1, Some(AttachEvent::Exited));
    fx.assert_clean(&req, &status);
}

#[tokio::test]
async fn stdin_once_closes_stdin_when_the_first_session_ends() {
    let Some(fx) = Fixture::new() else { return };
    let mut req = fx.request(&["sh", "-c", "cat; echo stdin-closed"], |_| {});
    req.stdin = true;
    req.stdin_once = true;
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();

    // A watcher without stdin sees the whole story.
    let (mut watch, _watch_in) = client
        .attach(attach_streams(false, true, false))
        .await
        .unwrap();
    let (mut out, mut input) = client
        .attach(attach_streams(true, true, false))
        .await
        .unwrap();
    input.stdin(b"one\n").await.unwrap();
    read_until(&mut out, "one\n").await;
    input.close_stdin().await.unwrap();
    // cat reads EOF, the shell goes on and the container exits 0.
    let (rest, end) = read_to_end(&mut out).await;
    assert_eq!(String::from_utf8_lossy(&rest), "stdin-closed\n");
    assert_eq!(end, Some(AttachEvent::Exited));
    let (seen, end) = read_to_end(&mut watch).await;
    assert_eq!(String::from_utf8_lossy(&seen), "one\nstdin-closed\n");
    assert_eq!(end, Some(AttachEvent::Exited));
    let exit = client.wait().await.unwrap();
    assert_eq!(exit.exit_code, 0);
    let status = client.status().unwrap().unwrap();
    fx.assert_clean(&req, &status);
}

#[tokio::test]
async fn stdin_once_also_closes_when_the_client_just_disconnects() {
    let Some(fx) = Fixture::new() else { return };
    let mut req = fx.request(&["sh", "-c", "cat >/dev/null; echo stdin-closed"], |_| {});
    req.stdin = true;
    req.stdin_once = true;
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();
    let (mut watch, _w) = client
        .attach(attach_streams(false, true, false))
        .await
        .unwrap();
    let (out, mut input) = client
        .attach(attach_streams(true, false, false))
        .await
        .unwrap();
    input.stdin(b"data").await.unwrap();
    drop((out, input));
    let (seen, end) = read_to_end(&mut watch).await;
    assert_eq!(String::from_utf8_lossy(&seen), "stdin-closed\n");
    assert_eq!(end, Some(AttachEvent::Exited));
    assert_eq!(client.wait().await.unwrap().exit_code, 0);
}

#[tokio::test]
async fn a_container_without_stdin_reads_eof_and_ignores_attached_input() {
    let Some(fx) = Fixture::new() else { return };
    let req = fx.request(&["sh", "-c", "cat; echo eof; sleep 1000"], |_| {});
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();
    // /dev/null: cat ends at once (the echo may come before the attach: read the log).
    let deadline = Instant::now() + ATTACH_GUARD;
    while !log_lines(&req).contains(&"stdout F eof".to_string()) {
        assert!(Instant::now() < deadline, "{:?}", log_lines(&req));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_out, mut input) = client
        .attach(attach_streams(true, true, true))
        .await
        .unwrap();
    input.stdin(b"ignored\n").await.unwrap();
    input.close_stdin().await.unwrap();
    let status = kill_and_wait(&client).await;
    assert_eq!(log_lines(&req), vec!["stdout F eof".to_string()]);
    fx.assert_clean(&req, &status);
}

#[tokio::test]
async fn two_attachers_both_get_the_output() {
    let Some(fx) = Fixture::new() else { return };
    let mut req = fx.request(&["cat"], |_| {});
    req.stdin = true;
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();
    let (mut a, mut a_in) = client
        .attach(attach_streams(true, true, true))
        .await
        .unwrap();
    let (mut b, mut b_in) = client
        .attach(attach_streams(true, true, false))
        .await
        .unwrap();
    a_in.stdin(b"from-a\n").await.unwrap();
    read_until(&mut a, "from-a\n").await;
    read_until(&mut b, "from-a\n").await;
    b_in.stdin(b"from-b\n").await.unwrap();
    read_until(&mut a, "from-b\n").await;
    read_until(&mut b, "from-b\n").await;
    let status = kill_and_wait(&client).await;
    fx.assert_clean(&req, &status);
}

#[tokio::test]
async fn a_client_that_does_not_read_is_dropped_and_the_log_gets_everything() {
    let Some(fx) = Fixture::new() else { return };
    // About 4.5 MB of numbered lines, far more than a client may fall behind by.
    let script = "i=0; while [ $i -lt 600000 ]; do echo $i; i=$((i+1)); done";
    let req = fx.request(&["sh", "-c", script], |_| {});
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();
    // Attached before the output starts flowing in earnest; never read until the end.
    let (mut slow, _slow_in) = client
        .attach(attach_streams(false, true, true))
        .await
        .unwrap();
    let exit = tokio::time::timeout(ATTACH_GUARD * 5, client.wait())
        .await
        .expect("the container was held up by a client that does not read")
        .unwrap();
    assert_eq!(exit.exit_code, 0);
    // The slow client got a prefix of the output, then was disconnected (no `Exited`).
    let (got, end) = read_to_end(&mut slow).await;
    assert_eq!(end, None);
    assert!(got.len() < 4_000_000, "{} bytes", got.len());
    // The log has every line, in order.
    let lines = log_lines(&req);
    assert_eq!(lines.len(), 600000);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l, &format!("stdout F {i}"));
    }
    let status = client.status().unwrap().unwrap();
    fx.assert_clean(&req, &status);
}

fn tty_request(fx: &Fixture, args: &[&str]) -> CreateRequest {
    let mut req = fx.request(args, |spec| {
        let mut process = spec.process().clone().unwrap();
        process.set_terminal(Some(true));
        spec.set_process(Some(process));
    });
    req.tty = true;
    req.stdin = true;
    req
}

#[tokio::test]
async fn a_tty_container_gets_a_terminal_that_attach_drives_and_resizes() {
    let Some(fx) = Fixture::new() else { return };
    let req = tty_request(&fx, &["sh"]);
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();
    // A terminal has no separate stderr: asking for it gets nothing more.
    let (mut out, mut input) = client
        .attach(attach_streams(true, true, true))
        .await
        .unwrap();
    input
        .stdin(b"tty; stty size; echo err >&2\n")
        .await
        .unwrap();
    let got = read_until(&mut out, "24 80").await;
    assert!(got.contains("/dev/pts/"), "{got:?}");
    // "err" may have come in the same chunk as the size.
    if !got.contains("err") {
        read_until(&mut out, "err").await;
    }
    input.resize(100, 30).await.unwrap();
    input.stdin(b"stty size\n").await.unwrap();
    read_until(&mut out, "30 100").await;
    input.stdin(b"exit 7\n").await.unwrap();
    let (_, end) = read_to_end(&mut out).await;
    assert_eq!(end, Some(AttachEvent::Exited));
    assert_eq!(client.wait().await.unwrap().exit_code, 7);
    // Everything the terminal showed is in the log, as stdout.
    let lines = log_lines(&req);
    assert!(lines.iter().all(|l| l.starts_with("stdout ")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("30 100")), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(" err\r") || l.ends_with(" err")),
        "{lines:?}"
    );
    let status = client.status().unwrap().unwrap();
    fx.assert_clean(&req, &status);
}

#[tokio::test]
async fn a_tty_container_runs_without_anyone_attached_and_logs_its_output() {
    let Some(fx) = Fixture::new() else { return };
    let mut req = tty_request(&fx, &["sh", "-c", "tty; stty size; exit 4"]);
    req.stdin = false;
    fx.create(&req).await.unwrap();
    let client = MonitorClient::new(&req.state_dir);
    client.start().await.unwrap();
    assert_eq!(client.wait().await.unwrap().exit_code, 4);
    let lines = log_lines(&req);
    assert!(
        lines.iter().any(|l| l.starts_with("stdout F /dev/pts/")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("24 80")), "{lines:?}");
    let status = client.status().unwrap().unwrap();
    fx.assert_clean(&req, &status);
}

#[tokio::test]
async fn tty_request_and_spec_must_agree() {
    let Some(fx) = Fixture::new() else { return };
    let mut req = fx.request(&["true"], |_| {});
    req.tty = true;
    let err = fx.create(&req).await.unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument, "{err}");
    fx.assert_nothing_created(&req);
}
