//! Fixtures shared by the integration tests: a real `proxrt serve` on a temp root and
//! socket (`TestDaemon`), a real registry on 127.0.0.1 (`Registry`), test images pushed
//! into it (`push_busybox`, `TestImage`), and thin CRI call helpers.
//!
//! Everything a fixture makes lives in its own temp dir under /tmp and on 127.0.0.1,
//! and goes away on drop, so tests run in parallel (nextest: one process per test).
//! Each test binary uses a different subset of this module.
#![allow(dead_code)]
pub mod fake_registry;
pub mod metrics;
pub mod pods;

use std::fs;
use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    Image, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ImageStatusResponse,
    ListImagesRequest, PullImageRequest, RemoveImageRequest, VersionRequest,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use proxrt::client::Cri;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

/// How long a daemon may take to answer Version after it was spawned.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a daemon may take to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Deadline of each CRI call the helpers make (a pull of a small image takes well under).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(60);

/// The `proxrt` binary under test.
pub fn proxrt_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_proxrt"))
}

/// A script of the repository's `hack/` dir.
pub fn hack(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hack")
        .join(script)
}

/// A fresh temp dir under /tmp (never the caller's cwd or $TMPDIR, which may be shared).
pub fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("create temp dir under /tmp")
}

/// `n` random bytes as hex: unique repository names, ids.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("getrandom");
    hex::encode(buf)
}

/// Runs a future to completion on a private runtime in its own thread, so that sync
/// fixture code may make a gRPC call whether or not the caller is inside a runtime.
fn block_on<F: Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build probe runtime")
                .block_on(f)
        })
        .join()
        .expect("probe thread panicked")
    })
}

// ---------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------

/// The CNI config every `TestDaemon` gets unless its test gives `[cni] conf_dir`: the
/// loopback plugin alone, so pods with their own network namespace have `lo` only.
pub const LOOPBACK_CNI: &str =
    r#"{"cniVersion":"1.0.0","name":"proxrt-test-lo","plugins":[{"type":"loopback"}]}"#;

/// A `proxrt serve` process with its own state root, run dir and socket in a temp dir.
///
/// Drop stops it (SIGTERM, SIGKILL after `STOP_GRACE`) and removes the temp dir. When
/// the test has not failed, drop also checks the teardown: the daemon exited 0 on
/// SIGTERM and removed its socket, and no download or unpack was left half-done. On a
/// failure the daemon's log is printed.
pub struct TestDaemon {
    pub socket: PathBuf,
    pub root: PathBuf,
    pub run_dir: PathBuf,
    /// The config file it was started with.
    pub config: PathBuf,
    log_path: PathBuf,
    /// Extra environment of the daemon process (`start_with_env`).
    env: Vec<(String, String)>,
    /// A network namespace file the daemon runs in (and with it every CNI plugin it
    /// runs: bridges, veths, iptables rules and sysctls stay in the test's namespace).
    netns: Option<PathBuf>,
    /// Runs the daemon in a mount namespace of its own where `/sys/fs/cgroup` is the
    /// cgroup2 hierarchy alone: a pure cgroup v2 host, as Proxmox VE 7+ runs, on a hybrid
    /// test machine (`start_in_cgroup_v2_view`).
    cgroup_v2_view: bool,
    child: Option<Child>,
    /// Runs the connections `cri()` makes, apart from the test's runtime: a daemon
    /// stopping on SIGTERM waits for each client to acknowledge its HTTP/2 GOAWAY,
    /// and a test blocked in `drop` or `restart` could not.
    clients: Option<tokio::runtime::Runtime>,
    dir: TempDir,
}

impl TestDaemon {
    /// A daemon with the default configuration (and the fixture's paths).
    pub fn start() -> TestDaemon {
        TestDaemon::start_with("")
    }

    /// A daemon whose config file is `extra_toml` laid over the fixture's `[daemon]`
    /// paths (`root`, `run_dir`, `socket`). `extra_toml` may have its own `[daemon]`
    /// keys (say `log_level`), but not those three.
    pub fn start_with(extra_toml: &str) -> TestDaemon {
        TestDaemon::start_with_env(extra_toml, &[])
    }

    /// As `start_with`, with `env` added to the daemon's environment (say NOTIFY_SOCKET).
    pub fn start_with_env(extra_toml: &str, env: &[(&str, &str)]) -> TestDaemon {
        TestDaemon::start_full(extra_toml, env, None, false)
    }

    /// As `start_with`, the daemon (also after `restart`) in the network namespace
    /// `netns` (a file such as /run/netns/<name>).
    pub fn start_in_netns(extra_toml: &str, netns: &Path) -> TestDaemon {
        TestDaemon::start_full(extra_toml, &[], Some(netns.to_owned()), false)
    }

    /// As `start_with`, the daemon (also after `restart`) seeing a pure cgroup v2 host: in
    /// a mount namespace of its own (a slave of the host's) whose `/sys/fs/cgroup` is the
    /// cgroup2 hierarchy and nothing else, the v1 hierarchies unmounted there. Its cgroups
    /// are the host's cgroup2 ones (on a hybrid host, under /sys/fs/cgroup/unified, with
    /// no controllers). Its mounts are in that namespace only.
    pub fn start_in_cgroup_v2_view(extra_toml: &str) -> TestDaemon {
        TestDaemon::start_full(extra_toml, &[], None, true)
    }

    fn start_full(
        extra_toml: &str,
        env: &[(&str, &str)],
        netns: Option<PathBuf>,
        cgroup_v2_view: bool,
    ) -> TestDaemon {
        let dir = temp_dir("proxrt-test-");
        let root = dir.path().join("root");
        let run_dir = dir.path().join("run");
        let socket = run_dir.join("proxrt.sock");
        let config = dir.path().join("config.toml");
        let mut table: toml::Table =
            toml::from_str(extra_toml).expect("extra_toml is not valid TOML");
        let daemon = table
            .entry("daemon")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("[daemon] must be a table");
        for (key, path) in [("root", &root), ("run_dir", &run_dir), ("socket", &socket)] {
            assert!(
                !daemon.contains_key(key),
                "TestDaemon sets daemon.{key} itself"
            );
            daemon.insert(key.into(), toml::Value::String(path.display().to_string()));
        }
        // Pods get loopback only from CNI unless the test brings its own network
        // (tests/cni.rs): NetworkReady needs a config, and /etc/cni/net.d is the host's.
        let cni = table
            .entry("cni")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("[cni] must be a table");
        if !cni.contains_key("conf_dir") {
            let conf_dir = dir.path().join("cni");
            fs::create_dir_all(&conf_dir).expect("create cni conf dir");
            fs::write(conf_dir.join("10-loopback.conflist"), LOOPBACK_CNI)
                .expect("write cni config");
            cni.insert(
                "conf_dir".into(),
                toml::Value::String(conf_dir.display().to_string()),
            );
        }
        fs::write(&config, toml::to_string(&table).expect("serialize config"))
            .expect("write config");
        let mut d = TestDaemon {
            socket,
            root,
            run_dir,
            log_path: dir.path().join("daemon.log"),
            config,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            netns,
            cgroup_v2_view,
            child: None,
            clients: Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("test-cri-client")
                    .enable_all()
                    .build()
                    .expect("build client runtime"),
            ),
            dir,
        };
        d.spawn();
        d
    }

    /// The temp dir holding root, run dir, config and log: a test's own scratch space.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `unix://<socket>`, as `proxrt --endpoint` and kubelet take it.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The running daemon's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A CRI connection to the daemon (usable from any runtime; it is served by the
    /// fixture's own, see `clients`).
    pub async fn cri(&self) -> Cri {
        let endpoint = self.endpoint();
        let clients = self.clients.as_ref().expect("client runtime");
        clients
            .spawn(async move { proxrt::client::connect(&endpoint, RPC_TIMEOUT).await })
            .await
            .expect("connect task")
            .unwrap_or_else(|e| panic!("connect to the test daemon: {e}\n{}", self.log_banner()))
    }

    /// Everything the daemon (and earlier runs on this root) wrote to stderr/stdout.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `proxrt serve --config <this daemon's config>` with output captured, for tests
    /// that start a second daemon next to this one (add `--socket`/`--root` to vary).
    pub fn serve_command(&self) -> Command {
        let mut cmd = Command::new(proxrt_bin());
        cmd.arg("serve").arg("--config").arg(&self.config);
        cmd
    }

    /// Stops the daemon cleanly (asserting it exits 0 on SIGTERM) and starts it again
    /// on the same root, config and socket. After `kill9`, just starts it.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let (status, killed) = self.stop();
            assert!(
                status.success() && !killed,
                "daemon did not stop cleanly on SIGTERM: {status}{}\n{}",
                if killed { " (needed SIGKILL)" } else { "" },
                self.log_banner()
            );
        }
        self.spawn();
    }

    /// Sets (`Some`) or removes (`None`) a variable of the daemon's environment, from
    /// its next start on.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_owned(), v.to_owned()));
        }
    }

    /// Waits up to `timeout` for the daemon to exit by itself (a crash point killed it);
    /// its exit status, or None (and it goes on running) if it did not.
    pub fn wait_exited(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, as a crash or an OOM kill would: no cleanup runs in the daemon.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `STOP_GRACE`. Returns the exit status and whether
    /// SIGKILL was needed.
    pub fn stop(&mut self) -> (ExitStatus, bool) {
        let mut child = self.child.take().expect("daemon is not running");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return (status, false),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    return (child.wait().expect("wait for the daemon"), true);
                }
            }
        }
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open daemon log");
        let _ = writeln!(
            &log,
            "---- test fixture: proxrt serve --config {}",
            self.config.display()
        );
        let mut cmd = Command::new(proxrt_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        // Opened here: the child only calls setns(2) between fork and exec.
        let netns = self.netns.as_ref().map(|p| {
            fs::File::open(p).unwrap_or_else(|e| panic!("open netns {}: {e}", p.display()))
        });
        if let Some(ns) = &netns {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = ns.as_raw_fd();
            // SAFETY: setns is async-signal-safe; nothing is allocated in the child.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if self.cgroup_v2_view {
            use std::os::unix::process::CommandExt;
            let cgroup = c"/sys/fs/cgroup";
            let (root, fstype) = (c"/", c"cgroup2");
            // SAFETY: unshare, mount and umount2 are async-signal-safe; the strings were
            // made before the fork and nothing is allocated in the child.
            unsafe {
                cmd.pre_exec(move || {
                    let check = |r: libc::c_int| match r {
                        0 => Ok(()),
                        _ => Err(std::io::Error::last_os_error()),
                    };
                    check(libc::unshare(libc::CLONE_NEWNS))?;
                    check(libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_SLAVE,
                        std::ptr::null(),
                    ))?;
                    // Detaching the top takes every hierarchy mounted below it.
                    check(libc::umount2(cgroup.as_ptr(), libc::MNT_DETACH))?;
                    check(libc::mount(
                        fstype.as_ptr(),
                        cgroup.as_ptr(),
                        fstype.as_ptr(),
                        0,
                        std::ptr::null(),
                    ))
                });
            }
        }
        let child = cmd.spawn().expect("spawn proxrt serve");
        drop(netns);
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the socket answers Version; panics with the log on a timeout or
    /// when the daemon exits first.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "proxrt serve exited with {status} before serving\n{}",
                    self.log_banner()
                );
            }
            if self.socket.exists() && version_answers(&self.endpoint()) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "proxrt serve did not answer Version on {} within {:?}\n{}",
                    self.socket.display(),
                    READY_TIMEOUT,
                    self.log_banner()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn log_banner(&self) -> String {
        format!(
            "---- daemon log ({}) ----\n{}---- end of daemon log ----",
            self.log_path.display(),
            self.log()
        )
    }

    // ----- the image store on disk -----

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn blobs_dir(&self) -> PathBuf {
        self.images_dir().join("content/blobs/sha256")
    }
    pub fn ingest_dir(&self) -> PathBuf {
        self.images_dir().join("content/ingest")
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.images_dir().join("snapshots")
    }
    pub fn records_dir(&self) -> PathBuf {
        self.images_dir().join("records")
    }

    /// Asserts that the image store holds nothing: no record, blob, snapshot (complete
    /// or half-made) or download in flight. Lists what it found when it fails.
    pub fn assert_image_store_empty(&self, context: &str) {
        let mut found = Vec::new();
        for dir in [
            self.records_dir(),
            self.blobs_dir(),
            self.snapshots_dir(),
            self.ingest_dir(),
        ] {
            if let Ok(entries) = fs::read_dir(&dir) {
                found.extend(entries.flatten().map(|e| e.path().display().to_string()));
            }
        }
        assert!(
            found.is_empty(),
            "{context}: image store not empty:\n  {}",
            found.join("\n  ")
        );
    }

    /// What a teardown must not find: downloads or unpacks left half-done.
    fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        if let Ok(entries) = fs::read_dir(self.ingest_dir()) {
            found.extend(
                entries
                    .flatten()
                    .map(|e| format!("ingest file {}", e.path().display())),
            );
        }
        if let Ok(entries) = fs::read_dir(self.snapshots_dir()) {
            found.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| format!("half-made snapshot {}", e.path().display())),
            );
        }
        found
    }
}

impl TestDaemon {
    /// Stops a running daemon with SIGTERM and returns what its teardown got wrong
    /// (nothing when it was not running).
    pub fn shut_down(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.child.is_some() {
            let (status, killed) = self.stop();
            if killed {
                problems.push(format!(
                    "daemon ignored SIGTERM for {STOP_GRACE:?} and was killed"
                ));
            } else if !status.success() {
                problems.push(format!("daemon exited with {status} on SIGTERM"));
            } else if self.socket.exists() {
                problems.push(format!(
                    "daemon left its socket {} behind",
                    self.socket.display()
                ));
            }
            problems.extend(self.leftovers());
        }
        problems
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let problems = self.shut_down();
        if let Some(clients) = self.clients.take() {
            clients.shutdown_background();
        }
        // A daemon killed or stopped with pods keeps its pods dir mounted (for the next
        // daemon); the temp dir cannot go with a mount in it.
        let mounts = mounts_under(&self.dir().display().to_string());
        for m in mounts.iter().rev() {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        let failing = std::thread::panicking();
        if failing || !problems.is_empty() {
            eprintln!("{}", self.log_banner());
        }
        if !failing && !problems.is_empty() {
            panic!("test daemon teardown: {}", problems.join("; "));
        }
    }
}

/// The writes into a cgroup's `cgroup.procs` or `tasks` file that strace saw, as (file,
/// what was written).
pub fn cgroup_writes(trace: &str) -> Vec<(String, String)> {
    trace
        .lines()
        .filter_map(|line| {
            let call = line.split_once(' ')?.1.trim_start();
            let rest = call.strip_prefix("write(")?;
            let path = rest.split_once('<')?.1.split_once('>')?.0;
            let data = rest.split_once(", \"")?.1.split_once('"')?.0;
            (path.ends_with("/cgroup.procs") || path.ends_with("/tasks"))
                .then(|| (path.to_owned(), data.to_owned()))
        })
        .collect()
}

/// Mount points in this process's mount namespace at or below `dir`, in table order.
pub fn mounts_under(dir: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m == dir || m.starts_with(&format!("{dir}/")))
        .collect()
}

/// Whether a daemon answers Version on `endpoint` (a short connect timeout).
pub fn version_answers(endpoint: &str) -> bool {
    let endpoint = endpoint.to_owned();
    block_on(async move {
        let Ok(mut cri) = proxrt::client::connect(&endpoint, Duration::from_secs(2)).await else {
            return false;
        };
        cri.runtime
            .version(VersionRequest {
                version: "v1".into(),
            })
            .await
            .is_ok()
    })
}

// ---------------------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------------------

/// A registry on 127.0.0.1. `shared()` may be the one hack/test started for every test
/// (nothing to stop); `private()` is this test's own, started with hack/registry and
/// stopped on drop, with its storage and access log at hand.
pub struct Registry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    own: Option<TempDir>,
}

impl Registry {
    /// `PROXRT_TEST_REGISTRY` (set by hack/test) or, when unset, a private registry.
    /// Give each test its own repository (`unique_repo`): others push to it too.
    pub fn shared() -> Registry {
        match std::env::var("PROXRT_TEST_REGISTRY") {
            Ok(addr) if !addr.is_empty() => Registry { addr, own: None },
            _ => Registry::private(),
        }
    }

    /// A registry of this test's own, with its access log on: for tests that corrupt
    /// its storage or count what it served.
    pub fn private() -> Registry {
        let dir = temp_dir("proxrt-registry-");
        let out = Command::new(hack("registry"))
            .arg("start")
            .arg(dir.path())
            .env("REGISTRY_ACCESSLOG", "1")
            .output()
            .expect("run hack/registry start");
        let addr = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || addr.is_empty() {
            let _ = Command::new(hack("registry"))
                .arg("stop")
                .arg(dir.path())
                .status();
            panic!(
                "hack/registry start failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Registry {
            addr,
            own: Some(dir),
        }
    }

    fn own_dir(&self) -> &Path {
        self.own
            .as_ref()
            .expect("only a private registry's storage and log are reachable")
            .path()
    }

    /// The file holding a blob's bytes in the registry's filesystem storage.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.own_dir()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The registry's log (access log lines included for a private registry).
    pub fn log(&self) -> String {
        fs::read_to_string(self.own_dir().join("registry.log")).unwrap_or_default()
    }

    /// How many times the registry answered `GET /v2/<repo>/blobs/<digest>` with 200.
    pub fn blob_gets(&self, repo: &str, digest: &str) -> usize {
        let request = format!("\"GET /v2/{repo}/blobs/{digest} ");
        self.log()
            .lines()
            .filter(|l| l.contains(&request))
            .filter(|l| {
                l.split('"')
                    .nth(2)
                    .is_some_and(|s| s.trim_start().starts_with("200"))
            })
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(dir) = &self.own {
            let _ = Command::new(hack("registry"))
                .arg("stop")
                .arg(dir.path())
                .status();
        }
    }
}

/// A repository name no other test uses: `proxrt-test/<what>-<random>`.
pub fn unique_repo(what: &str) -> String {
    format!("proxrt-test/{what}-{}", random_hex(6))
}

// ---------------------------------------------------------------------------------------
// Test images
// ---------------------------------------------------------------------------------------

/// An image pushed to a registry.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `127.0.0.1:PORT/repo:tag`
    pub name: String,
    /// `127.0.0.1:PORT/repo`
    pub repository: String,
    /// The manifest digest, `sha256:…`.
    pub digest: String,
    /// The config digest: the CRI image id.
    pub id: String,
    /// Compressed layer digests, in manifest order.
    pub layers: Vec<String>,
    /// Config plus compressed layers, in bytes (what a pull transfers besides manifests).
    pub size: u64,
}

impl Pushed {
    /// `127.0.0.1:PORT/repo@sha256:…`
    pub fn by_digest(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }
    /// The repository path without the registry (as registry URLs and logs spell it).
    pub fn repo_path(&self) -> &str {
        self.repository
            .split_once('/')
            .map(|(_, r)| r)
            .unwrap_or(&self.repository)
    }
}

/// Pushes the busybox image (hack/busybox-image, ~1 MB, one layer) as `repo_tag` and
/// returns what was pushed (`.digest` is the manifest digest).
pub fn push_busybox(registry: &Registry, repo_tag: &str) -> Pushed {
    push_layout(registry, &busybox_layout(), repo_tag)
}

/// The busybox OCI layout, built once and kept in cargo's test scratch dir
/// (`CARGO_TARGET_TMPDIR`), keyed by the host busybox and the script that builds it.
pub fn busybox_layout() -> PathBuf {
    let mut key = Sha256::new();
    key.update(fs::read("/bin/busybox").expect("read /bin/busybox (install busybox-static)"));
    key.update(fs::read(hack("busybox-image")).expect("read hack/busybox-image"));
    let key = hex::encode(key.finalize());
    let cached = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("busybox-oci-{}", &key[..16]));
    if cached.join("index.json").exists() {
        return cached;
    }
    let tmp =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(".busybox-oci-{}", random_hex(6)));
    run(Command::new(hack("busybox-image")).arg(&tmp));
    // Another test process may have won the race: either copy is the same bytes.
    if fs::rename(&tmp, &cached).is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    cached
}

/// Pushes the `latest` image of an OCI layout dir as `<registry>/<repo_tag>` with skopeo.
pub fn push_layout(registry: &Registry, layout: &Path, repo_tag: &str) -> Pushed {
    let scratch = temp_dir("proxrt-push-");
    let digest_file = scratch.path().join("digest");
    let dest = format!("{}/{repo_tag}", registry.addr);
    run(Command::new("skopeo")
        // --preserve-digests: push the layout byte for byte (skopeo would gzip plain tar
        // layers and rewrite the manifest), so tests know every digest in advance.
        .args([
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--digestfile",
        ])
        .arg(&digest_file)
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{dest}"))
        // skopeo buffers blobs in TMPDIR: keep that inside this push's own dir.
        .env("TMPDIR", scratch.path()));
    let digest = fs::read_to_string(&digest_file)
        .expect("skopeo --digestfile")
        .trim()
        .to_owned();
    let (id, layers, size) = read_manifest(layout, &digest);
    let repository = match repo_tag.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => format!("{}/{repo}", registry.addr),
        _ => format!("{}/{repo_tag}", registry.addr),
    };
    Pushed {
        name: dest,
        repository,
        digest,
        id,
        layers,
        size,
    }
}

/// (config digest, layer digests, config + layers size) of the manifest `digest` in
/// an OCI layout.
fn read_manifest(layout: &Path, digest: &str) -> (String, Vec<String>, u64) {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let raw = fs::read(layout.join("blobs/sha256").join(hex)).unwrap_or_else(|e| {
        panic!(
            "manifest {digest} is not in {} (did skopeo rewrite it?): {e}",
            layout.display()
        )
    });
    let m: serde_json::Value = serde_json::from_slice(&raw).expect("manifest JSON");
    let id = m["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_owned();
    let layers = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("layer digest").to_owned())
        .collect();
    let size = m["config"]["size"].as_u64().expect("config size")
        + m["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["size"].as_u64().expect("layer size"))
            .sum::<u64>();
    (id, layers, size)
}

/// Runs `cmd` with output captured; kills it and panics if it runs past `timeout`
/// (a daemon that should have refused to start but serves instead).
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Output {
    output_with_input_within(cmd, None, timeout)
}

/// As [`output_within`], with `input` written to the command's stdin (then closed) when
/// given, stdin from /dev/null otherwise.
pub fn output_with_input_within(
    cmd: &mut Command,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Output {
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let input = input.to_vec();
        // A writer of its own: the command may not read all of it before it answers.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "{cmd:?} still running after {timeout:?}; killed. stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A small single-layer image built in memory: distinct from busybox, and able to be
/// wrong in the ways a registry can serve wrong images (a layer that is not a tar, a
/// config whose diff_id does not match).
#[derive(Debug, Clone, Default)]
pub struct TestImage {
    files: Vec<(String, Vec<u8>)>,
    executables: Vec<(String, Vec<u8>)>,
    symlinks: Vec<(String, String)>,
    raw_layer: Option<Vec<u8>>,
    media_type: Option<String>,
    diff_id: Option<String>,
    gzip: bool,
    label: Option<String>,
}

impl TestImage {
    pub fn new() -> TestImage {
        TestImage::default()
    }

    /// Adds a regular file (mode 0644, root-owned) to the layer.
    pub fn file(mut self, path: &str, contents: &[u8]) -> TestImage {
        self.files.push((path.to_owned(), contents.to_vec()));
        self
    }

    /// Adds an executable (mode 0755, root-owned) to the layer.
    pub fn executable(mut self, path: &str, contents: &[u8]) -> TestImage {
        self.executables.push((path.to_owned(), contents.to_vec()));
        self
    }

    /// Adds a symlink `path` → `target` to the layer.
    pub fn symlink(mut self, path: &str, target: &str) -> TestImage {
        self.symlinks.push((path.to_owned(), target.to_owned()));
        self
    }

    /// Uses `bytes` as the layer blob verbatim (media type: uncompressed tar), whatever
    /// they are; the config's diff_id is their digest, so only the content is wrong.
    pub fn raw_layer(mut self, bytes: &[u8]) -> TestImage {
        self.raw_layer = Some(bytes.to_vec());
        self
    }

    /// Declares the layer with this media type (default: uncompressed OCI tar).
    pub fn media_type(mut self, media_type: &str) -> TestImage {
        self.media_type = Some(media_type.to_owned());
        self
    }

    /// Pushes the layer gzip-compressed (the diff_id stays the tar's digest).
    pub fn gzip(mut self) -> TestImage {
        self.gzip = true;
        self
    }

    /// A config label: two images of one layer with different labels are two images.
    pub fn label(mut self, value: &str) -> TestImage {
        self.label = Some(value.to_owned());
        self
    }

    /// Makes the config claim this diff_id instead of the layer's real one.
    pub fn diff_id(mut self, diff_id: &str) -> TestImage {
        self.diff_id = Some(diff_id.to_owned());
        self
    }

    /// The uncompressed layer tar.
    pub fn layer_tar(&self) -> Vec<u8> {
        if let Some(raw) = &self.raw_layer {
            return raw.clone();
        }
        let mut builder = tar::Builder::new(Vec::new());
        let files = self.files.iter().map(|(p, c)| (p, c, 0o644));
        let executables = self.executables.iter().map(|(p, c)| (p, c, 0o755));
        for (path, contents, mode) in files.chain(executables) {
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(mode);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, path, contents.as_slice())
                .expect("tar entry");
        }
        for (path, target) in &self.symlinks {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_mode(0o777);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Symlink);
            builder
                .append_link(&mut header, path, target)
                .expect("tar symlink");
        }
        builder.into_inner().expect("finish tar")
    }

    /// Writes an OCI layout (tagged `latest`) into `dir`; returns the manifest digest.
    pub fn write_layout(&self, dir: &Path) -> String {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).expect("create layout");
        let put = |bytes: &[u8]| -> (String, usize) {
            let digest = sha256(bytes);
            fs::write(blobs.join(&digest["sha256:".len()..]), bytes).expect("write blob");
            (digest, bytes.len())
        };
        let tar = self.layer_tar();
        let layer = if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&tar).expect("gzip layer");
            gz.finish().expect("gzip layer")
        } else {
            tar.clone()
        };
        let (layer_digest, layer_size) = put(&layer);
        let diff_id = self.diff_id.clone().unwrap_or_else(|| sha256(&tar));
        let default_type = if self.gzip {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/hello"], "Env": ["PATH=/usr/bin:/bin"],
                       "Labels": {"test": self.label.clone().unwrap_or_default()}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let (config_digest, config_size) = put(&serde_json::to_vec(&config).expect("config JSON"));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{
                "mediaType": self.media_type.as_deref().unwrap_or(default_type),
                "digest": layer_digest,
                "size": layer_size,
            }],
        });
        let (manifest_digest, manifest_size) =
            put(&serde_json::to_vec(&manifest).expect("manifest JSON"));
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }],
        });
        fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&index).expect("index JSON"),
        )
        .expect("write index");
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        manifest_digest
    }

    /// Builds the layout in a temp dir and pushes it as `<registry>/<repo_tag>`.
    pub fn push(&self, registry: &Registry, repo_tag: &str) -> Pushed {
        let dir = temp_dir("proxrt-image-");
        self.write_layout(dir.path());
        push_layout(registry, dir.path(), repo_tag)
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

// ---------------------------------------------------------------------------------------
// CRI calls
// ---------------------------------------------------------------------------------------

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// PullImage; the image ref (the image id) or the daemon's status.
/// The status of a call that must fail with `code`; panics with `what` otherwise.
pub fn assert_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    what: &str,
) -> tonic::Status {
    match result {
        Ok(v) => panic!("{what}: expected {code:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {s:?}");
            s
        }
    }
}

pub async fn pull(cri: &mut Cri, image: &str) -> Result<String, tonic::Status> {
    cri.images
        .pull_image(PullImageRequest {
            image: spec(image),
            auth: None,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

/// ImageStatus (not verbose); `None` when the image is not stored. Panics on an error.
pub async fn image_status(cri: &mut Cri, image: &str) -> Option<Image> {
    try_image_status(cri, image, false)
        .await
        .unwrap_or_else(|s| panic!("ImageStatus({image:?}): {s:?}"))
        .image
}

/// ImageStatus as the daemon answers it, verbose info included when asked.
pub async fn try_image_status(
    cri: &mut Cri,
    image: &str,
    verbose: bool,
) -> Result<ImageStatusResponse, tonic::Status> {
    cri.images
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose,
        })
        .await
        .map(|r| r.into_inner())
}

/// ListImages, all or filtered by a name/id. Panics on an error.
pub async fn list_images(cri: &mut Cri, filter: Option<&str>) -> Vec<Image> {
    cri.images
        .list_images(ListImagesRequest {
            filter: filter.map(|f| ImageFilter { image: spec(f) }),
        })
        .await
        .unwrap_or_else(|s| panic!("ListImages({filter:?}): {s:?}"))
        .into_inner()
        .images
}

pub async fn remove_image(cri: &mut Cri, image: &str) -> Result<(), tonic::Status> {
    cri.images
        .remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .map(|_| ())
}

/// ImageFsInfo of the image filesystem: (used bytes, used inodes).
pub async fn image_fs_usage(cri: &mut Cri) -> (u64, u64) {
    let info = cri
        .images
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap_or_else(|s| panic!("ImageFsInfo: {s:?}"))
        .into_inner();
    let fs = info
        .image_filesystems
        .first()
        .expect("ImageFsInfo lists the image filesystem");
    (
        fs.used_bytes.as_ref().map(|v| v.value).unwrap_or_default(),
        fs.inodes_used.as_ref().map(|v| v.value).unwrap_or_default(),
    )
}

/// Every entry (file, dir, link, device) below `dir`, recursively; 0 when it is missing.
pub fn files_under(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let is_dir = e
                .file_type()
                .map(|t| t.is_dir() && !t.is_symlink())
                .unwrap_or(false);
            1 + if is_dir { files_under(&e.path()) } else { 0 }
        })
        .sum()
}

/// Whether `path` is a unix socket file.
pub fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

/// Mounts a test puts in the host's table (inside its temp dir), detached (with what is below) on drop.
#[derive(Default)]
pub struct HostMounts(Vec<PathBuf>);

impl HostMounts {
    /// Mounts a 1 MiB tmpfs on `at` (made if missing).
    pub fn tmpfs(&mut self, at: &Path) {
        std::fs::create_dir_all(at).unwrap();
        nix::mount::mount(
            Some("proxrt-test"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap_or_else(|e| panic!("mount a tmpfs on {}: {e}", at.display()));
        self.0.push(at.to_owned());
    }
}

impl Drop for HostMounts {
    fn drop(&mut self) {
        for at in self.0.iter().rev() {
            let _ = nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// strace (not proxrt) following a running process and everything it forks, recording
/// the given system calls with the paths of their fds (`-y`).
pub struct Strace {
    child: Child,
    out: PathBuf,
}

impl Strace {
    /// Attaches to `pid` and returns once the tracer is in place. `calls`: strace's
    /// `trace=` list.
    pub async fn attach(pid: u32, calls: &str, out: &Path) -> Strace {
        Strace::attach_with(pid, &[], calls, out).await
    }

    /// As `attach`, with more of strace's options (`-s 65536`: whole strings).
    pub async fn attach_with(pid: u32, options: &[&str], calls: &str, out: &Path) -> Strace {
        Strace::attach_all(&[pid], options, calls, out).await
    }

    /// As `attach_with`, to several processes (and what each forks) at once.
    pub async fn attach_all(pids: &[u32], options: &[&str], calls: &str, out: &Path) -> Strace {
        let mut cmd = Command::new("strace");
        cmd.args(options)
            .args(["-f", "-qq", "-y", "-e"])
            .arg(format!("trace={calls}"))
            .arg("-o")
            .arg(out);
        for pid in pids {
            cmd.arg("-p").arg(pid.to_string());
        }
        let child = cmd.spawn().expect("run strace (hack/setup installs it)");
        // Attached once each traced process's main thread has a tracer.
        let deadline = Instant::now() + Duration::from_secs(60);
        for pid in pids {
            while !fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("TracerPid:") && l.trim_end() != "TracerPid:\t0")
            {
                assert!(Instant::now() < deadline, "strace did not attach");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Strace {
            child,
            out: out.to_owned(),
        }
    }

    /// Detaches and returns what was recorded.
    pub fn finish(mut self) -> String {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        self.child.wait().unwrap();
        fs::read_to_string(&self.out).unwrap()
    }
}
