//! Pods and containers driven over CRI the way kubelet drives them, for the lifecycle,
//! mapping, restart and leak tests.
//!
//! `PodEnv` is a `TestDaemon` with the busybox image imported, a cgroup parent of the
//! test's own (`/proxrt-test-<random>`, given to every pod it configures) and builders
//! for kubelet-shaped `PodSandboxConfig`/`ContainerConfig`. The daemon, its zygote and
//! everything they fork (monitors, pod holders, exec helpers) are moved into
//! `<parent>/daemon` of the pids hierarchy, so "the processes this daemon made" is a
//! cgroup listing that other tests running in parallel cannot disturb; containers live
//! in `<parent>/proxrt-<id>` beside it.
//!
//! Teardown removes every pod, stops the daemon, waits for its processes to end and
//! removes the cgroup parent in every hierarchy; processes still there once the daemon
//! stopped cleanly fail the test (they outlived everything that should end them).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState, ContainerStatus,
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ExecSyncResponse, ImageSpec,
    KeyValue, LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListContainersRequest,
    ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatus, PodSandboxStatusRequest, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use proxrt::admin::admin_client::AdminClient;
use proxrt::admin::ImportImageRequest;
use proxrt::client::Cri;
use tonic::Status;

use super::{busybox_layout, random_hex, TestDaemon};

/// How long a container may take to reach a state the test waits for (exit, running).
pub const STATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon's processes, mounts and fds may take to settle after an operation
/// before a difference counts as a leak (an exiting monitor is not instantly gone).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a waiting helper asks again.
const POLL: Duration = Duration::from_millis(5);

/// The name the imported busybox image gets in every `PodEnv`'s daemon.
pub const BUSYBOX: &str = "proxrt.test/busybox:latest";

/// A daemon with busybox imported, plus the cgroup parent of this test's pods.
pub struct PodEnv {
    pub cri: Cri,
    /// The image name to put in container configs.
    pub image: String,
    /// `/proxrt-test-<random>`: every pod's `linux.cgroup_parent`.
    pub cgroup_parent: String,
    daemon: Option<TestDaemon>,
}

/// A pod the daemon made, with the config it was made from (CreateContainer sends it again).
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
}

impl Pod {
    /// The host path of a container's CRI log file.
    pub fn log_path(&self, container: &ContainerConfig) -> PathBuf {
        Path::new(&self.config.log_directory).join(&container.log_path)
    }
}

impl PodEnv {
    pub async fn start() -> PodEnv {
        PodEnv::start_with("").await
    }

    /// A daemon started with `extra_toml` (see `TestDaemon::start_with`).
    pub async fn start_with(extra_toml: &str) -> PodEnv {
        PodEnv::start_daemon(|| TestDaemon::start_with(extra_toml)).await
    }

    /// A daemon started with `extra_toml` in the network namespace `netns`
    /// (`TestDaemon::start_in_netns`): the CNI tests' bridges and rules stay there.
    pub async fn start_in_netns(extra_toml: &str, netns: &Path) -> PodEnv {
        PodEnv::start_daemon(|| TestDaemon::start_in_netns(extra_toml, netns)).await
    }

    /// A daemon that sees a pure cgroup v2 host (`TestDaemon::start_in_cgroup_v2_view`).
    pub async fn start_in_cgroup_v2_view(extra_toml: &str) -> PodEnv {
        PodEnv::start_daemon(|| TestDaemon::start_in_cgroup_v2_view(extra_toml)).await
    }

    async fn start_daemon(start: impl FnOnce() -> TestDaemon) -> PodEnv {
        assert!(
            nix::unistd::geteuid().is_root(),
            "pods need root (namespaces, mounts, cgroups): run the tests with sudo (hack/test)"
        );
        let daemon = start();
        let cgroup_parent = format!("/proxrt-test-{}", random_hex(6));
        let mut env = PodEnv {
            cri: daemon.cri().await,
            image: String::new(),
            cgroup_parent,
            daemon: Some(daemon),
        };
        env.adopt_daemon();
        env.image = env.import_busybox().await;
        env
    }

    pub fn daemon(&self) -> &TestDaemon {
        self.daemon.as_ref().expect("daemon")
    }

    pub fn daemon_mut(&mut self) -> &mut TestDaemon {
        self.daemon.as_mut().expect("daemon")
    }

    /// `kill -9` of the daemon (containers and their monitors keep running).
    pub fn kill9(&mut self) {
        self.daemon.as_mut().expect("daemon").kill9();
    }

    /// Starts the daemon again on the same root (after `kill9`, or stopping it cleanly
    /// first) and reconnects.
    pub async fn restart(&mut self) {
        self.daemon.as_mut().expect("daemon").restart();
        self.adopt_daemon();
        self.cri = self.daemon().cri().await;
    }

    async fn import_busybox(&mut self) -> String {
        self.import_layout(&busybox_layout(), BUSYBOX).await
    }

    /// Imports the OCI layout at `layout` as `tag`; returns the name to use in configs.
    pub async fn import_layout(&mut self, layout: &Path, tag: &str) -> String {
        let mut admin = AdminClient::new(self.cri.channel.clone());
        let resp = admin
            .import_image(ImportImageRequest {
                path: layout.display().to_string(),
                tags: vec![tag.into()],
            })
            .await
            .unwrap_or_else(|s| panic!("ImportImage {}: {s:?}", layout.display()))
            .into_inner();
        let image = resp.images.first().expect("ImportImage imported an image");
        image
            .repo_tags
            .first()
            .cloned()
            .unwrap_or_else(|| image.id.clone())
    }

    // ----- configs -----

    /// A pod config shaped like kubelet's: metadata with a fresh uid, kubelet's labels,
    /// a log directory `<test dir>/pods/<ns>_<name>_<uid>`, the test's cgroup parent,
    /// and pod-level network and IPC with a container-level pid namespace.
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let uid = format!("{}-{}", name, random_hex(4));
        let log_directory = self
            .daemon()
            .dir()
            .join("pods")
            .join(format!("default_{name}_{uid}"));
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: "default".into(),
                uid: uid.clone(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_directory.display().to_string(),
            labels: [
                ("io.kubernetes.pod.name".to_string(), name.to_string()),
                ("io.kubernetes.pod.namespace".into(), "default".into()),
                ("io.kubernetes.pod.uid".into(), uid),
            ]
            .into(),
            annotations: [("kubernetes.io/config.source".to_string(), "api".to_string())].into(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(pod_namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A container config shaped like kubelet's for `pod`: busybox running `command`,
    /// log path `<name>/0.log`, kubelet's labels, the pod's namespace options.
    pub fn container_config(&self, pod: &Pod, name: &str, command: &[&str]) -> ContainerConfig {
        let pod_meta = pod.config.metadata.clone().unwrap_or_default();
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                user_specified_image: self.image.clone(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}/0.log"),
            labels: [
                ("io.kubernetes.container.name".to_string(), name.to_string()),
                ("io.kubernetes.pod.name".into(), pod_meta.name),
                ("io.kubernetes.pod.namespace".into(), pod_meta.namespace),
                ("io.kubernetes.pod.uid".into(), pod_meta.uid),
            ]
            .into(),
            annotations: [(
                "io.kubernetes.container.restartCount".to_string(),
                "0".to_string(),
            )]
            .into(),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources::default()),
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(pod_namespaces()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    // ----- pods -----

    pub async fn try_run_pod(&mut self, config: PodSandboxConfig) -> Result<Pod, Status> {
        let id = self
            .cri
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        Ok(Pod { id, config })
    }

    /// RunPodSandbox; panics on an error.
    pub async fn run_pod(&mut self, config: PodSandboxConfig) -> Pod {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        self.try_run_pod(config)
            .await
            .unwrap_or_else(|s| panic!("RunPodSandbox {name}: {s:?}\n{}", self.daemon().log()))
    }

    pub async fn pod_status(&mut self, id: &str) -> Result<PodSandboxStatus, Status> {
        let r = self
            .cri
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await?
            .into_inner();
        Ok(r.status.expect("PodSandboxStatus has a status"))
    }

    pub async fn stop_pod(&mut self, id: &str) -> Result<(), Status> {
        self.cri
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    pub async fn remove_pod(&mut self, id: &str) -> Result<(), Status> {
        self.cri
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    // ----- containers -----

    pub async fn create(&mut self, pod: &Pod, config: ContainerConfig) -> Result<String, Status> {
        self.cri
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(config),
                sandbox_config: Some(pod.config.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    pub async fn start_container(&mut self, id: &str) -> Result<(), Status> {
        self.cri
            .runtime
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// CreateContainer + StartContainer; panics (with the daemon's log) on an error.
    pub async fn create_start(&mut self, pod: &Pod, config: ContainerConfig) -> String {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let id = match self.create(pod, config).await {
            Ok(id) => id,
            Err(s) => panic!("CreateContainer {name}: {s:?}\n{}", self.daemon().log()),
        };
        if let Err(s) = self.start_container(&id).await {
            panic!("StartContainer {name}: {s:?}\n{}", self.daemon().log());
        }
        id
    }

    pub async fn stop_container(&mut self, id: &str, timeout: i64) -> Result<(), Status> {
        self.cri
            .runtime
            .stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await
            .map(|_| ())
    }

    pub async fn remove_container(&mut self, id: &str) -> Result<(), Status> {
        self.cri
            .runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    pub async fn try_status(&mut self, id: &str) -> Result<ContainerStatus, Status> {
        let r = self
            .cri
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await?
            .into_inner();
        Ok(r.status.expect("ContainerStatus has a status"))
    }

    /// ContainerStatus; panics on an error.
    pub async fn status(&mut self, id: &str) -> ContainerStatus {
        self.try_status(id)
            .await
            .unwrap_or_else(|s| panic!("ContainerStatus {id}: {s:?}"))
    }

    /// Polls ContainerStatus until the container is in `state`; panics after `STATE_TIMEOUT`.
    pub async fn wait_state(&mut self, id: &str, state: ContainerState) -> ContainerStatus {
        let deadline = Instant::now() + STATE_TIMEOUT;
        loop {
            let s = self.status(id).await;
            if s.state == state as i32 {
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "container {id} not {state:?} after {STATE_TIMEOUT:?}: {s:?}\n{}",
                    self.daemon().log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Creates and starts a container of `pod` that sleeps (`sleep 1000`); returns its id.
    pub async fn start_sleeper(&mut self, pod: &Pod, name: &str) -> String {
        let config = self.container_config(pod, name, &["sleep", "1000"]);
        self.create_start(pod, config).await
    }

    /// Waits for the container to exit and returns its final status.
    pub async fn wait_exit(&mut self, id: &str) -> ContainerStatus {
        self.wait_state(id, ContainerState::ContainerExited).await
    }

    /// Runs a container to its end: create, start, wait for the exit; returns the final
    /// status and the log records.
    pub async fn run_to_exit(
        &mut self,
        pod: &Pod,
        config: ContainerConfig,
    ) -> (ContainerStatus, Vec<LogRecord>) {
        let log = pod.log_path(&config);
        let id = self.create_start(pod, config).await;
        let status = self.wait_exit(&id).await;
        (status, read_log(&log))
    }

    /// ExecSync as the daemon answers it.
    /// ContainerStatus's verbose info of `id`, as JSON (`pid`, `monitorPid`, the spec…).
    pub async fn container_info(&mut self, id: &str) -> serde_json::Value {
        let r = self
            .cri
            .runtime
            .container_status(k8s_cri::v1::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap_or_else(|s| panic!("ContainerStatus {id}: {s:?}"))
            .into_inner();
        serde_json::from_str(r.info.get("info").expect("verbose info")).expect("info is JSON")
    }

    pub async fn try_exec(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecSyncResponse, Status> {
        self.cri
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// ExecSync that must succeed with exit code 0; returns its stdout.
    pub async fn exec_ok(&mut self, id: &str, cmd: &[&str]) -> String {
        let r = self
            .try_exec(id, cmd, 10)
            .await
            .unwrap_or_else(|s| panic!("ExecSync {cmd:?} in {id}: {s:?}\n{}", self.daemon().log()));
        assert_eq!(
            r.exit_code,
            0,
            "ExecSync {cmd:?}: stdout {:?} stderr {:?}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8_lossy(&r.stdout).into_owned()
    }

    pub async fn list_containers(
        &mut self,
        filter: ContainerFilter,
    ) -> Vec<k8s_cri::v1::Container> {
        self.cri
            .runtime
            .list_containers(ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .unwrap_or_else(|s| panic!("ListContainers: {s:?}"))
            .into_inner()
            .containers
    }

    pub async fn list_pods(
        &mut self,
        filter: k8s_cri::v1::PodSandboxFilter,
    ) -> Vec<k8s_cri::v1::PodSandbox> {
        self.cri
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await
            .unwrap_or_else(|s| panic!("ListPodSandbox: {s:?}"))
            .into_inner()
            .items
    }

    // ----- leaks -----

    /// Where the daemon's own processes live (pids hierarchy, or the v2 root).
    fn daemon_cgroup(&self) -> PathBuf {
        process_cgroup_root()
            .join(self.cgroup_parent.trim_start_matches('/'))
            .join("daemon")
    }

    /// Moves the daemon and its children (the zygote, forked before it served) into
    /// `daemon_cgroup`, where everything they fork later is born.
    fn adopt_daemon(&self) {
        let dir = self.daemon_cgroup();
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let daemon = self.daemon().pid().expect("daemon running") as i32;
        let mut pids = vec![daemon];
        pids.extend(children_of(daemon));
        for pid in pids {
            fs::write(dir.join("cgroup.procs"), pid.to_string())
                .unwrap_or_else(|e| panic!("move pid {pid} into {}: {e}", dir.display()));
        }
    }

    /// What the daemon has made so far, as a leak check compares it.
    pub fn snapshot(&self) -> Snapshot {
        let d = self.daemon();
        let dir = d.dir().display().to_string();
        let mounts = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&dir))
            // Drop mount id, parent id and device: a new overlay gets a new anonymous device.
            .map(|l| l.split(' ').skip(3).collect::<Vec<_>>().join(" "))
            .collect();
        let mut cgroups = BTreeSet::new();
        for root in cgroup_roots() {
            let top = root.join(self.cgroup_parent.trim_start_matches('/'));
            // The parent itself is the pod's (kubelet makes and removes it); the daemon
            // owns what it creates below.
            walk_dirs(&top, &mut |p| {
                if p != top {
                    cgroups.insert(p.display().to_string());
                }
            });
        }
        let mut dirs = BTreeSet::new();
        for sub in [
            d.root.join("containers"),
            d.root.join("sandboxes"),
            d.run_dir.join("c"),
            d.run_dir.join("s"),
            d.run_dir.join("libcontainer"),
        ] {
            if let Ok(entries) = fs::read_dir(&sub) {
                dirs.extend(entries.flatten().map(|e| e.path().display().to_string()));
            }
        }
        let mut processes = BTreeSet::new();
        let top = process_cgroup_root().join(self.cgroup_parent.trim_start_matches('/'));
        walk_dirs(&top, &mut |p| {
            for pid in cgroup_procs(p) {
                if !is_dead(pid) {
                    processes.insert(format!("{pid} {}", comm(pid)));
                }
            }
        });
        // The zygote's spare monitor is the daemon's, as the zygote: it comes with the
        // first create and is renewed by each. More than one is a leak.
        let spares: Vec<String> = processes
            .iter()
            .filter(|p| p.ends_with(" proxrt-spare"))
            .cloned()
            .collect();
        processes.retain(|p| !p.ends_with(" proxrt-spare"));
        if spares.len() > 1 {
            processes.insert(format!("spare monitors: {}", spares.join(", ")));
        }
        let daemon_fds = d
            .pid()
            .map(|pid| {
                fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|e| e.count())
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        Snapshot {
            mounts,
            cgroups,
            dirs,
            processes,
            daemon_fds,
        }
    }

    /// The daemon's state once it stopped changing: after StartContainer the daemon
    /// connects to the container's monitor in the background (to learn of its exit), so
    /// a snapshot taken right away may miss that connection's fd; and a removed
    /// container's or pod's files go after the answer (a `.removing-` dir and the fd its
    /// removal holds), which a loaded machine may take longer than one poll to finish.
    pub async fn settled_snapshot(&self) -> Snapshot {
        let mut last = self.snapshot();
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.snapshot();
            let removing = now.dirs.iter().any(|d| d.contains("/.removing-"));
            if now == last && !removing {
                return now;
            }
            last = now;
        }
        last
    }

    /// What the daemon has made, as compared across restarts of the daemon: without the
    /// daemon's own process, its zygote (and any plugin it runs right now) and its fds,
    /// which a restart renews. Processes the old daemon left stay in: monitors, holders,
    /// and a zygote that outlived its daemon would be a leak.
    pub fn work_snapshot(&self) -> Snapshot {
        let mut s = self.snapshot();
        if let Some(pid) = self.daemon().pid() {
            let pid = pid as i32;
            let ours: BTreeSet<String> = std::iter::once(pid)
                .chain(children_of(pid))
                .map(|p| format!("{p} "))
                .collect();
            s.processes
                .retain(|p| !ours.iter().any(|prefix| p.starts_with(prefix.as_str())));
        }
        s.daemon_fds = 0;
        s
    }

    /// As `assert_back_to`, with `work_snapshot`s: for a `before` taken by an earlier
    /// daemon on this root.
    pub async fn assert_work_back_to(&self, before: &Snapshot, context: &str) {
        self.wait_back_to(before, context, PodEnv::work_snapshot)
            .await
    }

    /// Waits (up to `SETTLE_TIMEOUT`) for the daemon's state to be `before` again;
    /// panics with what differs.
    pub async fn assert_back_to(&self, before: &Snapshot, context: &str) {
        self.wait_back_to(before, context, PodEnv::snapshot).await
    }

    async fn wait_back_to(
        &self,
        before: &Snapshot,
        context: &str,
        snapshot: impl Fn(&PodEnv) -> Snapshot,
    ) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let now = snapshot(self);
            if &now == before {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{context}: left behind:\n{}\n{}",
                    before.diff(&now),
                    self.daemon().log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PodEnv {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        let mut problems = Vec::new();
        let Some(mut daemon) = self.daemon.take() else {
            return;
        };
        if daemon.pid().is_some() {
            block_on(remove_all_pods(self.cri.clone()));
        }
        // With every pod removed nothing of the daemon's may stay mounted but its pods dir
        // (a mount of its own while it runs, gone when it stops: checked below); a failed
        // test may leave mounts, which must go before the temp dir does.
        let dir = daemon.dir().display().to_string();
        let pods_dir = daemon.run_dir.join("s").display().to_string();
        let mounts: Vec<String> = super::mounts_under(&dir)
            .into_iter()
            .filter(|m| *m != pods_dir)
            .collect();
        if !mounts.is_empty() {
            problems.push(format!(
                "mounts left after removing every pod: {}",
                mounts.join(", ")
            ));
            for m in mounts.iter().rev() {
                let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let log = daemon.log();
        let daemon_pid = daemon.pid();
        // Stops the daemon and checks its own teardown (TestDaemon::shut_down), then that
        // a daemon stopped with no pods took its pods dir's mount with it.
        let stopped_here = daemon.pid().is_some();
        problems.extend(daemon.shut_down());
        let left = super::mounts_under(&dir);
        if stopped_here && !left.is_empty() {
            problems.push(format!(
                "mounts left after the daemon stopped with no pods: {}",
                left.join(", ")
            ));
        }
        drop(daemon);
        // Monitors and holders end with their containers and pods; give them a moment.
        let top = process_cgroup_root().join(self.cgroup_parent.trim_start_matches('/'));
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut left = live_processes(&top);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = live_processes(&top);
        }
        if !left.is_empty() {
            let left: Vec<String> = left.iter().map(|(p, c)| format!("{p} {c}")).collect();
            problems.push(format!(
                "processes outlived the daemon (pid {daemon_pid:?}) and every pod: {}",
                left.join(", ")
            ));
        }
        // Container cgroups are gone with their containers; only ours may remain.
        let ours = self.daemon_cgroup();
        for root in cgroup_roots() {
            let top = root.join(self.cgroup_parent.trim_start_matches('/'));
            walk_dirs(&top, &mut |p| {
                if p != top && p != ours {
                    problems.push(format!("cgroup left: {}", p.display()));
                }
            });
        }
        remove_cgroup_tree(&self.cgroup_parent);
        if !failing && !problems.is_empty() {
            panic!("pod env teardown: {}\n{log}", problems.join("; "));
        }
    }
}

/// Teardown's CRI part: RemovePodSandbox of every pod (which removes its containers),
/// then RemoveContainer of any container left.
async fn remove_all_pods(mut cri: Cri) {
    if let Ok(pods) = cri
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
    {
        for p in pods.into_inner().items {
            let req = RemovePodSandboxRequest {
                pod_sandbox_id: p.id.clone(),
            };
            if let Err(s) = cri.runtime.remove_pod_sandbox(req).await {
                eprintln!("teardown: RemovePodSandbox {}: {s:?}", p.id);
            }
        }
    }
    if let Ok(cs) = cri
        .runtime
        .list_containers(ListContainersRequest { filter: None })
        .await
    {
        for c in cs.into_inner().containers {
            let req = RemoveContainerRequest {
                container_id: c.id.clone(),
            };
            if let Err(s) = cri.runtime.remove_container(req).await {
                eprintln!("teardown: RemoveContainer {}: {s:?}", c.id);
            }
        }
    }
}

/// kubelet's default for a pod: its own network and IPC, a pid namespace per container.
pub fn pod_namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The container's security context, created if missing.
pub fn security(c: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// The container's resources, created if missing.
pub fn resources(c: &mut ContainerConfig) -> &mut LinuxContainerResources {
    c.linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Default::default)
}

/// The pod's security context, created if missing.
pub fn pod_security(p: &mut PodSandboxConfig) -> &mut LinuxSandboxSecurityContext {
    p.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

pub fn key_value(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
    }
}

// ---------------------------------------------------------------------------------------
// CRI log files
// ---------------------------------------------------------------------------------------

/// One record of a CRI log file: `<RFC3339Nano> <stdout|stderr> <F|P> <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub time: chrono::DateTime<chrono::FixedOffset>,
    pub stream: String,
    /// 'F' (full line) or 'P' (partial).
    pub tag: char,
    pub text: String,
}

/// Parses a CRI log file strictly: every line must be a well-formed record. A missing
/// file is an empty log.
pub fn read_log(path: &Path) -> Vec<LogRecord> {
    let Ok(raw) = fs::read(path) else {
        return Vec::new();
    };
    let text =
        String::from_utf8(raw).unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{}: last record not terminated",
        path.display()
    );
    text.lines()
        .map(|line| {
            parse_log_line(line)
                .unwrap_or_else(|| panic!("{}: malformed CRI log line {line:?}", path.display()))
        })
        .collect()
}

fn parse_log_line(line: &str) -> Option<LogRecord> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next()?;
    // RFC3339Nano in UTC, as kubelet's parser reads it.
    if !time.ends_with('Z') {
        return None;
    }
    let time = chrono::DateTime::parse_from_rfc3339(time).ok()?;
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let tag = match tag {
        "F" => 'F',
        "P" => 'P',
        _ => return None,
    };
    Some(LogRecord {
        time,
        stream: stream.into(),
        tag,
        text: text.into(),
    })
}

/// The lines of one stream, partial records joined as kubelet joins them.
pub fn log_lines(records: &[LogRecord], stream: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending = String::new();
    for r in records.iter().filter(|r| r.stream == stream) {
        pending.push_str(&r.text);
        if r.tag == 'F' {
            lines.push(std::mem::take(&mut pending));
        }
    }
    lines
}

/// Polls a container's log until `pred` holds for its records; panics after `STATE_TIMEOUT`.
pub async fn wait_log(
    path: &Path,
    what: &str,
    pred: impl Fn(&[LogRecord]) -> bool,
) -> Vec<LogRecord> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let records = read_log(path);
        if pred(&records) {
            return records;
        }
        if Instant::now() > deadline {
            panic!(
                "{}: no {what} after {STATE_TIMEOUT:?}: {records:#?}",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Leak snapshots
// ---------------------------------------------------------------------------------------

/// What a daemon has made that a failed or undone operation must not add to: mounts
/// under its temp dir, cgroups under the test's parent, state entries, live processes
/// (its own and its containers') and its open fds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub mounts: Vec<String>,
    pub cgroups: BTreeSet<String>,
    pub dirs: BTreeSet<String>,
    pub processes: BTreeSet<String>,
    pub daemon_fds: usize,
}

impl Snapshot {
    /// What `after` has that `self` has not, and the reverse.
    pub fn diff(&self, after: &Snapshot) -> String {
        fn sets<T: Ord + std::fmt::Display + Clone>(
            what: &str,
            a: &BTreeSet<T>,
            b: &BTreeSet<T>,
            out: &mut String,
        ) {
            for x in b.difference(a) {
                out.push_str(&format!("  + {what} {x}\n"));
            }
            for x in a.difference(b) {
                out.push_str(&format!("  - {what} {x}\n"));
            }
        }
        let mut out = String::new();
        let count = |v: &Vec<String>| {
            let mut m = BTreeMap::<String, usize>::new();
            for x in v {
                *m.entry(x.clone()).or_default() += 1;
            }
            m.into_iter()
                .map(|(k, n)| format!("{k} (x{n})"))
                .collect::<BTreeSet<_>>()
        };
        sets(
            "mount",
            &count(&self.mounts),
            &count(&after.mounts),
            &mut out,
        );
        sets("cgroup", &self.cgroups, &after.cgroups, &mut out);
        sets("dir", &self.dirs, &after.dirs, &mut out);
        sets("process", &self.processes, &after.processes, &mut out);
        if self.daemon_fds != after.daemon_fds {
            out.push_str(&format!(
                "  daemon fds {} -> {}\n",
                self.daemon_fds, after.daemon_fds
            ));
        }
        out
    }
}

/// Every cgroup hierarchy root: each v1 controller dir under /sys/fs/cgroup and the
/// cgroup2 mount (the root itself on a v2-only host).
pub fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_owned()];
    }
    let mut roots: Vec<PathBuf> = fs::read_dir(base)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir()
                        && !fs::symlink_metadata(p)
                            .map(|m| m.file_type().is_symlink())
                            .unwrap_or(true)
                })
                .collect()
        })
        .unwrap_or_default();
    roots.sort();
    roots
}

/// The hierarchy processes are tracked in: v1 `pids`, else the v2 root.
fn process_cgroup_root() -> PathBuf {
    let pids = Path::new("/sys/fs/cgroup/pids");
    if pids.join("cgroup.procs").exists() {
        pids.to_owned()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// `dir` and every dir below it (cgroup control files are not dirs), parents first.
fn walk_dirs(dir: &Path, f: &mut dyn FnMut(&Path)) {
    if !dir.is_dir() {
        return;
    }
    f(dir);
    if let Ok(entries) = fs::read_dir(dir) {
        let mut subs: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        subs.sort();
        for s in subs {
            walk_dirs(&s, f);
        }
    }
}

fn cgroup_procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Live (not zombie) processes in the cgroup tree at `top`: (pid, comm).
fn live_processes(top: &Path) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    walk_dirs(top, &mut |p| {
        out.extend(
            cgroup_procs(p)
                .into_iter()
                .filter(|&pid| !is_dead(pid))
                .map(|pid| (pid, comm(pid))),
        );
    });
    out
}

/// Kills whatever is still in the test's cgroups (a failed test's containers), then
/// removes the cgroup parent in every hierarchy, children first.
pub fn remove_cgroup_tree(parent: &str) {
    let rel = parent.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    for root in cgroup_roots() {
        let top = root.join(rel);
        let mut dirs = Vec::new();
        walk_dirs(&top, &mut |p| dirs.push(p.to_owned()));
        for d in &dirs {
            for pid in cgroup_procs(d) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for d in dirs.iter().rev() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Every cgroup dir named `name` directly under the test's parent, in any hierarchy.
pub fn cgroup_dirs_of(parent: &str, name: &str) -> Vec<PathBuf> {
    cgroup_roots()
        .into_iter()
        .map(|r| r.join(parent.trim_start_matches('/')).join(name))
        .filter(|p| p.exists())
        .collect()
}

/// The processes whose parent is `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&p| ppid(p) == Some(pid))
                .collect()
        })
        .unwrap_or_default()
}

fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(String::from).collect())
}

fn ppid(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The zygote's spare monitor: the process named `proxrt-spare` at the other end of one
/// of the zygote's sockets (`ss` pairs them).
pub fn spare_monitor_of(zygote: i32) -> Option<i32> {
    let ours: Vec<String> = std::fs::read_dir(format!("/proc/{zygote}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.display().to_string();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let out = std::process::Command::new("ss")
        .arg("-xpn")
        .output()
        .unwrap();
    assert!(out.status.success(), "ss: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let peer = fields.get(7)?;
            let pid = line
                .split_once("((\"proxrt-spare\",pid=")?
                .1
                .split(',')
                .next()?;
            ours.iter().any(|i| i == peer).then(|| pid.parse().ok())?
        })
}

/// The zygote and its spare, which serves the next request (what a trace of the zygote's
/// next child attaches to: strace -f follows a fork, not a process forked before).
pub fn zygote_and_spare(zygote: i32) -> Vec<u32> {
    std::iter::once(zygote)
        .chain(spare_monitor_of(zygote))
        .map(|p| p as u32)
        .collect()
}

/// Gone, or a zombie (exited, parent not done reaping).
pub fn is_dead(pid: i32) -> bool {
    stat_fields(pid).is_none_or(|f| f.first().is_some_and(|s| s == "Z" || s == "X"))
}

pub fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Runs a future on a private runtime in its own thread (usable from `Drop`, inside or
/// outside the test's runtime).
fn block_on<F: Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build teardown runtime")
                .block_on(f)
        })
        .join()
        .expect("teardown thread panicked")
    })
}

/// The config a backend's daemon needs on this host, or None (printed) when the backend
/// cannot run here at all.
pub fn backend_config(backend: &str) -> Option<String> {
    if backend != "crun" {
        return Some(String::new());
    }
    let probe = proxrt::backend::crun::CrunProbe::run(&proxrt::config::CrunConfig {
        path: "crun".into(),
        hybrid_cgroups: proxrt::config::HybridCgroups::Refuse,
    });
    match probe.unavailable {
        None => Some(String::new()),
        Some(reason) if probe.binary.is_some() && probe.cgroups.crun_refusal().is_some() => {
            eprintln!(
                "NOTE: with the default config crun is unavailable on this host ({reason}); \
                 this test runs crun with [crun] hybrid_cgroups = \"v1-view\""
            );
            Some("[crun]\nhybrid_cgroups = \"v1-view\"\n".into())
        }
        Some(reason) => {
            eprintln!("SKIP: crun conformance: crun cannot run on this host: {reason}");
            None
        }
    }
}
