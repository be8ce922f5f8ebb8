//! The backend conformance suite: the same lifecycle tests against every backend, through
//! a real daemon, each pod asking for its backend with a RuntimeClass handler.
//!
//! Every test below is a function taking the backend's name; `conformance!` makes one
//! `#[tokio::test]` per backend and function (`libcontainer::exec_sync`, `crun::exec_sync`).
//! A backend that cannot run on this host is skipped with a printed reason, never silently.
//!
//! crun on this kind of host: crun 1.8.1 refuses hybrid cgroups whose cgroup2 hierarchy
//! still lists a controller (LIBCONTAINER.md). The suite then runs crun with
//! `[crun] hybrid_cgroups = "v1-view"` (crun commands in a private mount namespace without
//! the cgroup2 mount; nothing on the host changes) and says so on stderr; what the default
//! configuration does on such a host (the backend reported unavailable, FailedPrecondition)
//! is tested in tests/selection.rs.
//!
//! `interleaved_latency` (ignored by default) is the benchmark: per-operation median and
//! p99 of both backends in one interleaved run:
//! `cargo test --test backend_conformance -- --ignored --nocapture interleaved_latency`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::pods::*;
use k8s_cri::v1::{
    security_profile::ProfileType, Capability, ContainerConfig, ContainerState, NamespaceMode,
    PodSandboxConfig, PodSandboxStatusRequest, RunPodSandboxRequest, SecurityProfile,
    StopPodSandboxRequest,
};
use tonic::Code;

/// A daemon whose pods run on one backend.
struct Suite {
    env: PodEnv,
    backend: &'static str,
}

impl Suite {
    async fn start(backend: &'static str) -> Option<Suite> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: {backend} conformance: needs root (namespaces, mounts, cgroups)");
            return None;
        }
        let extra = backend_config(backend)?;
        Some(Suite {
            env: PodEnv::start_with(&extra).await,
            backend,
        })
    }

    /// A pod on this suite's backend (RuntimeClass handler = the backend's name).
    async fn pod(&mut self, name: &str) -> Pod {
        let config = self.env.pod_config(name);
        run_pod_on(&mut self.env, config, self.backend).await
    }

    /// A privileged pod on this suite's backend.
    async fn privileged_pod(&mut self, name: &str) -> Pod {
        let mut config = self.env.pod_config(name);
        pod_security(&mut config).privileged = true;
        run_pod_on(&mut self.env, config, self.backend).await
    }

    /// A running container in its own pod, so that the cgroup parents and the runtime's
    /// state root exist before a leak check's "before" (runtimes remove only leaves).
    async fn steady(&mut self) {
        let pod = self.pod("steady").await;
        let cfg = self
            .env
            .container_config(&pod, "steady", &["sleep", "1000"]);
        self.env.create_start(&pod, cfg).await;
    }

    /// The daemon's state once it stopped changing (the daemon connects to a started
    /// container's monitor in the background, to learn of its exit).
    async fn settled_snapshot(&self) -> Snapshot {
        let mut last = self.env.snapshot();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.env.snapshot();
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    /// crun's state root must hold only the steady container once containers are gone.
    fn assert_no_runtime_state(&self, context: &str) {
        let dir = self.env.daemon().run_dir.join("crun");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path().display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let expected = usize::from(self.backend == "crun");
        assert_eq!(
            left.len(),
            expected,
            "{context}: crun state in {}: {left:?}",
            dir.display()
        );
    }
}

async fn run_pod_on(env: &mut PodEnv, config: PodSandboxConfig, handler: &str) -> Pod {
    let name = config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let id = env
        .cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .unwrap_or_else(|s| {
            panic!(
                "RunPodSandbox {name} on {handler}: {s:?}\n{}",
                env.daemon().log()
            )
        })
        .into_inner()
        .pod_sandbox_id;
    Pod { id, config }
}

/// The `info` JSON of a verbose ContainerStatus.
async fn pod_info(env: &mut PodEnv, id: &str) -> serde_json::Value {
    let r = env
        .cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap_or_else(|s| panic!("PodSandboxStatus {id}: {s:?}"))
        .into_inner();
    serde_json::from_str(r.info.get("info").expect("verbose info")).expect("info is JSON")
}

macro_rules! conformance {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(stringify!($backend)).await
                }
            )*
        }
    };
}

macro_rules! every_backend {
    ($($test:ident),* $(,)?) => {
        conformance!(libcontainer: $($test),*);
        conformance!(crun: $($test),*);
    };
}

every_backend!(
    create_start_logs_exit_code_remove,
    stop_sends_the_stop_signal_then_kills,
    stop_kills_every_process_of_a_container_in_the_pods_pid_namespace,
    exec_sync_runs_in_the_container,
    oom_kill_is_reported,
    containers_survive_a_daemon_restart,
    removing_a_pod_with_running_containers_leaves_nothing,
    a_missing_executable_fails_and_leaves_nothing,
    seccomp_profile_binds_the_main_process_and_exec,
    runtime_default_seccomp_keeps_to_the_capabilities_asked_for,
    a_filter_the_kernel_refuses_fails_the_container_and_leaves_nothing,
    stdin_and_tty_containers,
    the_rootfs_is_mounted_in_the_container_only,
);

/// Issue 13: nothing per container in the host's mount table. Once CreateContainer
/// returns, the overlay is mounted only in the container's own mount namespace; it is
/// still the container's live root (its writes land in the writable layer), created and
/// running containers add no host mount, and removal leaves nothing.
async fn the_rootfs_is_mounted_in_the_container_only(backend: &'static str) {
    let Some(mut s) = Suite::start(backend).await else {
        return;
    };
    let pod = s.pod("rootfs").await;
    s.steady().await;
    let before = s.settled_snapshot().await;
    let containers_run_dir = s.env.daemon().run_dir.join("c");
    let containers_run_dir = containers_run_dir.to_str().expect("UTF-8 run dir");
    let host_before = common::mounts_under(containers_run_dir);

    let mut ids = Vec::new();
    for i in 0..4 {
        let cfg = s
            .env
            .container_config(&pod, &format!("c{i}"), &["sleep", "1000"]);
        let id = s.env.create(&pod, cfg).await.expect("CreateContainer");
        // Created (init waiting for StartContainer), then running: neither is in the
        // host's table (the daemon's mount is released beside CreateContainer's answer),
        // and the container's root is reachable through its init.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while common::mounts_under(containers_run_dir) != host_before
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(
            common::mounts_under(containers_run_dir),
            host_before,
            "container {i} created"
        );
        let info = s.env.container_info(&id).await;
        let root = PathBuf::from(
            info["rootfs"]
                .as_str()
                .expect("rootfs of a created container"),
        );
        assert!(
            root.join("bin/busybox").exists(),
            "{} shows the image's files: {info}",
            root.display()
        );
        if i % 2 == 0 {
            s.env.start_container(&id).await.expect("StartContainer");
        }
        ids.push((id, info));
    }
    assert_eq!(
        common::mounts_under(containers_run_dir),
        host_before,
        "4 containers"
    );

    // The running container's root is the overlay: what it writes is in its upper dir.
    let (id, info) = &ids[0];
    assert_eq!(
        s.env
            .exec_ok(id, &["sh", "-c", "echo written > /tmp/w; cat /tmp/w"])
            .await
            .trim(),
        "written"
    );
    let upper = PathBuf::from(info["bundle"].as_str().expect("bundle"))
        .parent()
        .expect("state dir")
        .join("upper/tmp/w");
    assert_eq!(
        std::fs::read_to_string(&upper).expect("the write is in the writable layer"),
        "written\n"
    );
    // A created container starts from its released mount.
    let (created, _) = &ids[1];
    s.env
        .start_container(created)
        .await
        .expect("StartContainer");
    assert!(!s
        .env
        .exec_ok(created, &["cat", "/etc/hostname"])
        .await
        .is_empty());

    for (id, _) in &ids {
        s.env.remove_container(id).await.expect("RemoveContainer");
    }
    s.env.assert_back_to(&before, "containers removed").await;
}

/// What a container's fd 0-2 are, seen from inside, and that a stdin pipe stays open
/// with nobody attached; a tty container's output is logged as stdout (no attach yet: the
/// CRI log, ExecSync and ContainerStatus show it).
async fn stdin_and_tty_containers(backend: &'static str) {
    let Some(mut s) = Suite::start(backend).await else {
        return;
    };
    let pod = s.pod("stdio").await;
    s.steady().await;
    let before = s.settled_snapshot().await;
    let fds = "for f in 0 1 2; do echo fd$f=$(readlink /proc/$$/fd/$f); done";

    // stdin: a pipe nobody writes to and nobody closes: `cat` waits on it.
    let mut cfg = s.env.container_config(
        &pod,
        "stdin",
        &[
            "sh",
            "-c",
            &format!("{fds}; cat; echo cat-ended; sleep 1000"),
        ],
    );
    cfg.stdin = true;
    let log = pod.log_path(&cfg);
    let with_stdin = s.env.create_start(&pod, cfg).await;
    let records = wait_log(&log, "fd lines", |r| log_lines(r, "stdout").len() >= 3).await;
    let lines = log_lines(&records, "stdout");
    assert!(lines[0].starts_with("fd0=pipe:"), "{lines:?}");
    assert!(lines[1].starts_with("fd1=pipe:"), "{lines:?}");
    // cat is still reading: its process is there and nothing more was printed.
    let ps = s.env.exec_ok(&with_stdin, &["ps", "-o", "comm"]).await;
    assert!(ps.lines().any(|l| l.trim() == "cat"), "{ps}");
    assert_eq!(
        s.env.status(&with_stdin).await.state,
        ContainerState::ContainerRunning as i32
    );
    assert_eq!(log_lines(&read_log(&log), "stdout").len(), 3);

    // No stdin: /dev/null, cat ends at once.
    let cfg = s.env.container_config(
        &pod,
        "nostdin",
        &["sh", "-c", &format!("{fds}; cat; echo cat-ended")],
    );
    let (st, records) = s.env.run_to_exit(&pod, cfg).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let lines = log_lines(&records, "stdout");
    assert_eq!(lines[0], "fd0=/dev/null", "{lines:?}");
    assert_eq!(lines[3], "cat-ended", "{lines:?}");

    // tty: fds 0-2 are the terminal; 80x24 until someone resizes it; everything it
    // shows is logged as stdout, lines ending in \r as a terminal writes them.
    let mut cfg = s.env.container_config(
        &pod,
        "tty",
        &[
            "sh",
            "-c",
            &format!("{fds}; stty size; echo to-stderr >&2; exit 4"),
        ],
    );
    cfg.tty = true;
    cfg.stdin = true;
    let (st, records) = s.env.run_to_exit(&pod, cfg).await;
    assert_eq!(st.exit_code, 4, "{st:?}");
    assert!(records.iter().all(|r| r.stream == "stdout"), "{records:?}");
    let lines: Vec<String> = log_lines(&records, "stdout")
        .into_iter()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    for f in 0..3 {
        assert!(
            lines[f].starts_with(&format!("fd{f}=/dev/pts/")),
            "{lines:?}"
        );
    }
    assert_eq!(&lines[3..], ["24 80", "to-stderr"], "{lines:?}");

    s.env
        .stop_container(&with_stdin, 0)
        .await
        .expect("StopContainer");
    for c in s.env.list_containers(Default::default()).await {
        if c.pod_sandbox_id == pod.id {
            s.env
                .remove_container(&c.id)
                .await
                .expect("RemoveContainer");
        }
    }
    s.env
        .assert_back_to(&before, "stdio containers removed")
        .await;
    s.assert_no_runtime_state("stdio containers removed");
}

async fn create_start_logs_exit_code_remove(backend: &'static str) {
    let Some(mut s) = Suite::start(backend).await else {
        return;
    };
    let pod = s.pod("life").await;
    let info = pod_info(&mut s.env, &pod.id).await;
    assert_eq!(info["backend"], backend, "{info}");
    assert_eq!(
        info["backendReason"],
        format!("handler {backend}"),
        "{info}"
    );

    s.steady().await;
    let before = s.settled_snapshot().await;
    let cfg = s.env.container_config(
        &pod,
        "main",
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    let log = pod.log_path(&cfg);
    let id = s.env.create(&pod, cfg).await.expect("CreateContainer");
    let st = s.env.status(&id).await;
    assert_eq!(st.state, ContainerState::ContainerCreated as i32, "{st:?}");
    let info = s.env.container_info(&id).await;
    assert_eq!(info["backend"], backend, "{info}");
    assert_eq!(
        info["backendReason"],
        format!("handler {backend}"),
        "{info}"
    );

    s.env.start_container(&id).await.expect("StartContainer");
    let st = s.env.wait_exit(&id).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"), "{st:?}");
    assert!(
        st.started_at > 0 && st.finished_at >= st.started_at,
        "{st:?}"
    );
    let records = read_log(&log);
    assert_eq!(log_lines(&records, "stdout"), ["out"]);
    assert_eq!(log_lines(&records, "stderr"), ["err"]);
    // Starting it again is refused: it ran once.
    assert_eq!(
        s.env.start_container(&id).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    let (st, _) = s
        .env
        .run_to_exit(&pod, s.env.container_config(&pod, "ok", &["true"]))
        .await;
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (0, "Completed"),
        "{st:?}"
    );
    for c in s.env.list_containers(Default::default()).await {
        if c.pod_sandbox_id == pod.id {
            s.env
                .remove_container(&c.id)
                .await
                .expect("RemoveContainer");
        }
    }
    s.env
        .remove_container(&id)
        .await
        .expect("RemoveContainer of a removed container succeeds");
    s.env.assert_back_to(&before, "containers removed").await;
    s.assert_no_runtime_state("containers removed");
}

/// Host pids whose command line is exactly `argv`.
fn pids_running(argv: &[&str]) -> Vec<i32> {
    let want = argv.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
        })
        .collect()
}

/// In the pod's pid namespace a container's other processes do not die with its init (the
/// pod holder is their pid 1): StopContainer must kill them too, through the cgroup.
async fn stop_kills_every_process_of_a_container_in_the_pods_pid_namespace(backend: &'static str) {
    let Some(mut s) = Suite::start(backend).await else {
        return;
    };
    let mut config = s.env.pod_config("shared-pid");
    pod_security(&mut config)
        .namespace_options
        .get_or_insert_with(pod_namespaces)
        .pid = NamespaceMode::Pod as i32;
    let pod = run_pod_on(&mut s.env, config, s.backend).await;
    // A sleep length no other process on the host has (tests of both backends run at
    // once in this process): the background one is found by it.
    let offset = if backend == "crun" { 100_000 } else { 0 };
    let marker = format!("{}", 900_000 + offset + std::process::id() % 99_999);
    let script = format!("sleep {marker} & echo up; exec sleep 3600");
    let mut c = s.env.container_config(&pod, "bg", &["sh", "-c", &script]);
    security(&mut c)
        .namespace_options
        .get_or_insert_with(pod_namespaces)
        .pid = NamespaceMode::Pod as i32;
    let log = pod.log_path(&c);
    let id = s.env.create_start(&pod, c).await;
    wait_log(&log, "up", |r| log_lines(r, "stdout") == ["up"]).await;
    // "up" is echoed once the background shell is forked, maybe before it has exec'd sleep.
    let deadline = Instant::now() + STATE_TIMEOUT;
    while pids_running(&["sleep", &marker]).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        pids_running(&["sleep", &marker]).len(),
        1,
        "the background sleep runs"
    );

    s.env.stop_container(&id, 0).await.expect("StopContainer");
    let st = s.env.status(&id).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32, "{st:?}");
    // Killed with the init, not left to the pod holder: gone at once or within moments
    // (the holder reaps it).
    let mut left = pids_running(&["sleep", &marker]);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = pids_running(&["sleep", &marker]);
    }
    assert!(
        left.is_empty(),
        "still running after StopContainer: {left:?}"
    );
    s.env.remove_container(&id).await.expect("RemoveContainer");
    s.env.stop_pod(&pod.id).await.expect("StopPodSandbox");
    s.env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
}

async fn stop_sends_the_stop_signal_then_kills(backend: &'static str) {
    let Some(mut s) = Suite::start(backend).await else {
        return;
    };
    let pod = s.pod("stop").await;
    let trap = s.env.container_config(
        &pod,
        "trap",
        &[
            "sh",
            "-c",
            "trap 'echo got TERM; exit 42' TERM; echo up; while true; do sleep 0.1; done",
        ],
    );
    let log = pod.log_path(&trap);
    let id = s.env.create_start(&pod, trap).await;
    wait_log(&log, "up", |r| log_lines(r, "stdout") == ["up"]).await;
    s.env.stop_container(&id, 10).await.expect("StopContainer");
    let st = s.env.status(&id).await;
    assert_eq!(
        (st.state, st.exit_code),
        (ContainerState::ContainerExited as i32, 42),
        "{st:?}"
    );
    assert_eq!(log_lines(&read_log(&log), "stdout"), ["up", "got TERM"]);

    let deaf = s.env.container_config(
        &pod,
        "deaf",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo up; while true; do sleep 0.1; done",
        ],
    );
    let log = pod.log_path(&deaf);
    let id = s.env.create_start(&pod, deaf).await;
    wait_log(&log, "up", |r| log_lines(r, "stdout") == ["up"]).await;
    s.env.stop_container(&id, 1).await.expect("StopContainer");
    let st = s.env.status(&id).await;
    assert_eq!(
        (st.state, st.exit_code),
        (ContainerState::ContainerExited as i32, 137),
        "{st:?}"
    );
    // Stopping an exited container succeeds.
    s.env
        .stop_container(&id, 1)
        .await
        .expect("StopContainer again");
}

async fn exec_sync_runs_in_the_container(backend: &'static str) {
    let Some(mut s) = Suite::start(backend).await else {
        return;
    };
    let pod = s.pod("exec").await;
    let mut cfg = s.env.container_config(
        &pod,
        "main",
        &["sh", "-c", "echo hi > /tmp/made-by-init; sleep 1000"],
    );
    cfg.envs.push(key_value("GREETING", "hello"));
    cfg.working_dir = "/tmp".into();
    let id = s.env.create_start(&pod, cfg).await;

    let r = s
        .env
        .try_exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 5"], 10)
        .await
        .unwrap();
    assert_eq!(
        (
            String::from_utf8_lossy(&r.stdout).as_ref(),
            String::from_utf8_lossy(&r.stderr).as_ref(),
            r.exit_code
        ),
        ("out\n", "err\n", 5)
    );
    // The container's process: its env, cwd, files and hostname.
    let deadline = Instant::now() + STATE_TIMEOUT;
    while s
        .env
        .try_exec(&id, &["test", "-e", "/tmp/made-by-init"], 5)
        .await
        .unwrap()
        .exit_code
        != 0
    {
        assert!(Instant::now() < deadline, "the init never wrote its file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = s
        .env
        .exec_ok(
            &id,
            &[
                "sh",
                "-c",
                "echo $GREETING $(pwd) $(cat made-by-init) $(hostname)",
            ],
        )
        .await;
    assert_eq!(out.trim(), "hello /tmp hi exec");
    // A killed command: non-zero, and the container is unharmed.
    let r = s
        .env
        .try_exec(&id, &["sh", "-c", "kill -9 $$"], 5)
        .await
        .unwrap();
    assert_eq!(r.exit_code, 137);
    let r = s.env.try_exec(&id, &["sleep", "30"], 1).await;
    match r {
        Ok(r) => assert_ne!(r.exit_code, 0, "a timed-out exec reports failure: {r:?}"),
        Err(st) => assert_eq!(st.code(), Code::DeadlineExceeded, "{st:?}"),
    }
    assert_eq!(
        s.env.status(&id).await.state,
        ContainerState::ContainerRunning as i32
    );
    let r = s.env.try_exec(&id, &["/no/such/binary"], 5).await;
    match r {
        Ok(r) => assert_ne!(r.exit_code, 0, "{r:?}"),
        Err(st) => assert_ne!(st.code(), Code::Ok, "{st:?}"),
    }

    s.env.stop_container(&id, 0).await.expect("StopContainer");
    let st = s.env.try_exec(&id, &["true"], 5).await.unwrap_err();
    assert_eq!(
        st.code(),
        Code::FailedPrecondition,
        "exec in an exited container: {st:?}"
    );
}

/// What the probe below prints when the filter refuses both calls.
const REFUSED: [&str; 2] = ["chmod-refused", "hostname-refused"];
const ALLOWED: [&str; 2] = ["chmod-ok", "hostname-ok"];
const PROBE: &str = "touch /tmp/f; chmod 600 /tmp/f && echo chmod-ok || echo chmod-refused; \
                     hostname probe && echo hostname-ok || echo hostname-refused";

/// Starts `cfg` running PROBE then sleeping; returns its id and what the main process
/// printed.
async fn probe_main(s: &mut Suite, pod: &Pod, mut cfg: ContainerConfig) -> (String, Vec<String>) {
    cfg.command = vec!["sh".into(), "-c".into(), format!("{PROBE}; sleep 1000")];
    let log = pod.log_path(&cfg);
    let id = s.env.create_start(pod, cfg).await;
    let records = wait_log(&log, "the probe's two lines", |r| {
        log_lines(r, "stdout").len() >= 2
    })
    .await;
    (id, log_lines(&records, "stdout"))
}

/// PROBE run by ExecSync: its stdout lines and stderr.
async fn probe_exec(s: &mut Suite, id: &str) -> (Vec<String>, String) {
    let r = s.env.try_exec(id, &["sh", "-c", PROBE], 10).await.unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    (
        stdout.lines().map(String::from).collect(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// A localhost profile refusing chmod and sethostname (EPERM) binds the container's main
/// process and its ExecSync alike (an exec that escapes the filter is a security hole);
/// a privileged container is unconfined whatever it asks for.
async fn seccomp_profile_binds_the_main_process_and_exec(backend: &'static str) {
    let Some(mut s) = Suite::start(backend).await else {
        return;
    };
    let profile = s.env.daemon().dir().join("no-chmod-no-sethostname.json");
    std::fs::write(
        &profile,
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{
                "names": ["chmod", "fchmod", "fchmodat", "fchmodat2", "sethostname"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 1
            }]
        }"#,
    )
    .unwrap();
    let localhost = || {
        Some(SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: profile.display().to_string(),
        })
    };
    // CAP_SYS_ADMIN, so that only the filter can refuse sethostname.
    let sys_admin = || {
        Some(Capability {
            add_capabilities: vec!["SYS_ADMIN".into()],
            ..Default::default()
        })
    };

    let pod = s.pod("seccomp").await;
    let mut cfg = s.env.container_config(&pod, "confined", &[]);
    let sc = security(&mut cfg);
    sc.capabilities = sys_admin();
    sc.seccomp = localhost();
    let (id, main) = probe_main(&mut s, &pod, cfg).await;
    assert_eq!(main, REFUSED, "main process");
    let (exec, stderr) = probe_exec(&mut s, &id).await;
    assert_eq!(exec, REFUSED, "ExecSync: {stderr}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");

    // The deprecated string form, with no_new_privs (the filter is then loaded last).
    let mut cfg = s.env.container_config(&pod, "legacy-nnp", &[]);
    let sc = security(&mut cfg);
    sc.capabilities = sys_admin();
    sc.no_new_privs = true;
    #[allow(deprecated)]
    {
        sc.seccomp_profile_path = format!("localhost/{}", profile.display());
    }
    let (id, main) = probe_main(&mut s, &pod, cfg).await;
    assert_eq!(main, REFUSED, "main process");
    assert_eq!(probe_exec(&mut s, &id).await.0, REFUSED, "ExecSync");

    // Without the profile the same container may do both.
    let mut cfg = s.env.container_config(&pod, "unconfined", &[]);
    security(&mut cfg).capabilities = sys_admin();
    let (id, main) = probe_main(&mut s, &pod, cfg).await;
    assert_eq!(main, ALLOWED, "main process");
    assert_eq!(probe_exec(&mut s, &id).await.0, ALLOWED, "ExecSync");

    // Privileged: unconfined, profile or not.
    let pod = s.privileged_pod("seccomp-privileged").await;
    let mut cfg = s.env.container_config(&pod, "privileged", &[]);
    let sc = security(&mut cfg);
    sc.privileged = true;
    sc.seccomp = localhost();
    let (id, main) = probe_main(&mut s, &pod, cfg).await;
    assert_eq!(main, ALLOWED, "main process");
    assert_eq!(probe_exec(&mut s, &id).await.0, ALLOWED, "ExecSync");
}

/// The capability and seccomp lines of /proc/self/status.
const STATUS: &str = "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status";

/// STATUS run by ExecSync: its lines, and its stderr.
async fn exec_status(s: &mut Suite, id: &str) -> (Vec<String>, String) {
    let r = s.env.try_exec(id, &["sh", "-c", STATUS], 10).await.unwrap();
    let lines = String::from_utf8_lossy(&r.stdout)
        .lines()
        .map(String::from)
        .collect();
    (lines, String::from_utf8_lossy(&r.stderr).into_owned())
}

/// RuntimeDefault (what kubelet's `seccompDefault` gives every container) without
/// no_new_privs and without CAP_SYS_ADMIN: the filter must be loaded before the
/// capabilities are dropped, or loaded with CAP_SYS_ADMIN lent for the moment (libcontainer
/// containers load one the daemon compiled, after libcontainer has set the capabilities:
/// seccomp_bpf.rs). Either way the main process and an ExecSync'd one are filtered and
/// have exactly the capabilities asked for: crun, which loads its own filter, is the
/// yardstick here.
async fn runtime_default_seccomp_keeps_to_the_capabilities_asked_for(backend: &'static str) {
    let Some(mut s) = Suite::start(backend).await else {
        return;
    };
    let runtime_default = || {
        Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        })
    };
    let pod = s.pod("runtime-default").await;
    // CAP_CHOWN (bit 0) and CAP_NET_BIND_SERVICE (bit 10) only; the process runs as root,
    // so its permitted and effective sets after exec are its bounding set.
    let asked = "0000000000000401";
    let expected: Vec<String> = [
        "CapInh:\t0000000000000000".to_string(),
        format!("CapPrm:\t{asked}"),
        format!("CapEff:\t{asked}"),
        format!("CapBnd:\t{asked}"),
        "CapAmb:\t0000000000000000".to_string(),
        "NoNewPrivs:\t0".to_string(),
        "Seccomp:\t2".to_string(),
        "Seccomp_filters:\t1".to_string(),
    ]
    .into();
    let mut cfg = s.env.container_config(&pod, "two-caps", &[]);
    cfg.command = vec!["sh".into(), "-c".into(), format!("{STATUS}; sleep 1000")];
    let sc = security(&mut cfg);
    sc.seccomp = runtime_default();
    sc.capabilities = Some(Capability {
        drop_capabilities: vec!["ALL".into()],
        add_capabilities: vec!["CHOWN".into(), "NET_BIND_SERVICE".into()],
        ..Default::default()
    });
    let log = pod.log_path(&cfg);
    let id = s.env.create(&pod, cfg).await.expect("CreateContainer");
    // Created, not started: the init waits with the capabilities it will exec with (not
    // with CAP_SYS_ADMIN still lent), and filtered already.
    let pid = s.env.container_info(&id).await["pid"]
        .as_i64()
        .expect("init pid");
    let init: Vec<String> = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter(|l| {
            ["Cap", "NoNewPrivs", "Seccomp"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(String::from)
        .collect();
    assert_eq!(init, expected, "the created container's init");
    s.env.start_container(&id).await.expect("StartContainer");
    let records = wait_log(&log, "the status lines", |r| {
        log_lines(r, "stdout").len() >= expected.len()
    })
    .await;
    assert_eq!(log_lines(&records, "stdout"), expected, "main process");
    let (exec, stderr) = exec_status(&mut s, &id).await;
    assert_eq!(exec, expected, "ExecSync: {stderr}");

    // The runtime's default capabilities: CAP_SYS_ADMIN is not among them, and neither
    // process has it in any set.
    let mut cfg = s.env.container_config(&pod, "default-caps", &[]);
    cfg.command = vec!["sh".into(), "-c".into(), format!("{STATUS}; sleep 1000")];
    security(&mut cfg).seccomp = runtime_default();
    let log = pod.log_path(&cfg);
    let id = s.env.create_start(&pod, cfg).await;
    let records = wait_log(&log, "the status lines", |r| {
        log_lines(r, "stdout").len() >= expected.len()
    })
    .await;
    let main = log_lines(&records, "stdout");
    let (exec, stderr) = exec_status(&mut s, &id).await;
    assert_eq!(exec, main, "ExecSync and the main process: {stderr}");
    let field = |name: &str| {
        main.iter()
            .find_map(|l| l.strip_prefix(&format!("{name}:\t")))
            .unwrap_or_else(|| panic!("{name} in {main:?}"))
            .to_string()
    };
    let bounding = u64::from_str_radix(&field("CapBnd"), 16).unwrap();
    assert_eq!(bounding & (1 << 21), 0, "CAP_SYS_ADMIN bounding: {main:?}");
    assert_ne!(bounding, 0, "{main:?}");
    for set in ["CapPrm", "CapEff"] {
        assert_eq!(field(set), field("CapBnd"), "{set}: {main:?}");
    }
    assert_eq!(field("Seccomp"), "2", "{main:?}");
}

/// crun loads the seccomp program the daemon compiled once (given to it in the
/// `run.oci.seccomp_bpf_data` annotation, engine.rs) rather than compiling the profile at
/// every create and exec; and that program is exactly the one crun compiles itself from
/// the same profile — the default profile's argument rules included (whose
/// SCMP_CMP_MASKED_EQ values libcontainer reads the other way round). A request's own
/// `run.oci.*` annotations never reach crun: kept for ContainerStatus, out of config.json.
#[tokio::test]
async fn crun_loads_the_program_the_daemon_compiled_the_one_it_compiles_itself() {
    use base64::Engine as _;
    let Some(mut s) = Suite::start("crun").await else {
        return;
    };
    let pod = s.pod("compiled").await;
    let mut cfg = s.env.container_config(&pod, "runtime-default", &[]);
    cfg.command = vec!["sleep".into(), "1000".into()];
    security(&mut cfg).seccomp = Some(SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    // What a request could say to crun if its annotations reached it: no filter at all
    // (an empty program fails every load: the container would not start).
    for (key, value) in [
        ("run.oci.seccomp_bpf_data", ""),
        ("run.oci.hooks.stdout", "/proxrt-test-hooks-out"),
    ] {
        cfg.annotations.insert(key.into(), value.into());
    }
    let annotations = cfg.annotations.clone();
    let id = s.env.create(&pod, cfg).await.expect("CreateContainer");
    let daemon = s.env.daemon();
    let bundle_config = daemon
        .root
        .join("containers")
        .join(&id)
        .join("bundle/config.json");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&bundle_config).unwrap()).unwrap();
    let data = config["annotations"]["run.oci.seccomp_bpf_data"]
        .as_str()
        .unwrap_or_else(|| panic!("the compiled program in {}", bundle_config.display()));
    let ours = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64");
    assert!(
        !ours.is_empty() && ours.len().is_multiple_of(8),
        "{} bytes",
        ours.len()
    );
    assert_eq!(config["annotations"].get("run.oci.hooks.stdout"), None);
    assert!(
        config["linux"]["seccomp"].is_object(),
        "the profile stays for crun's flags"
    );
    // crun writes the program it loads into its state dir.
    let loaded = std::fs::read(daemon.run_dir.join("crun").join(&id).join("seccomp.bpf"))
        .expect("crun's seccomp.bpf");
    assert!(loaded == ours, "crun loaded another program");
    let own = crun_compiles(&config["linux"]["seccomp"]);
    assert_eq!(own.len(), ours.len(), "crun's own program and the daemon's");
    assert!(own == ours, "crun's own program and the daemon's differ");

    s.env.start_container(&id).await.expect("StartContainer");
    let (status, stderr) = exec_status(&mut s, &id).await;
    assert!(
        status.contains(&"Seccomp:\t2".to_string()),
        "{status:?} {stderr}"
    );
    let info = s.env.status(&id).await;
    assert_eq!(
        info.annotations.get("run.oci.hooks.stdout"),
        annotations.get("run.oci.hooks.stdout"),
        "ContainerStatus gives the request's annotations back"
    );
    assert!(!std::path::Path::new("/proxrt-test-hooks-out").exists());
}

/// crun runs from one sealed copy of itself that the monitors share, rather than copying
/// itself into a new one and executing again at every command (monitor/crun.rs): a created
/// container's init (crun's own process until StartContainer) runs from the monitors'
/// copy, which nothing can write (the defence crun's copy is for); the zygote's copy, made
/// at the first crun create, is the one every later monitor runs crun from; the containers
/// start and exec as before.
#[tokio::test]
async fn crun_runs_from_the_monitors_sealed_copy_of_itself() {
    use std::os::unix::fs::MetadataExt;
    let Some(mut s) = Suite::start("crun").await else {
        return;
    };
    let pod = s.pod("sealed").await;
    let mut copies = Vec::new();
    let mut ids = Vec::new();
    for name in ["first", "second", "third"] {
        let mut cfg = s.env.container_config(&pod, name, &[]);
        cfg.command = vec!["sleep".into(), "1000".into()];
        let id = s.env.create(&pod, cfg).await.expect("CreateContainer");
        let pid = s.env.container_info(&id).await["pid"]
            .as_i64()
            .expect("init pid");
        let exe = format!("/proc/{pid}/exe");
        let target = std::fs::read_link(&exe).unwrap();
        assert!(
            target.to_string_lossy().starts_with("/memfd:proxrt-crun"),
            "{name}: crun's init runs from {}",
            target.display()
        );
        let file = std::fs::File::open(&exe).unwrap();
        // SAFETY: F_GET_SEALS on a descriptor this test owns.
        let seals =
            unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_GET_SEALS) };
        let all = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        assert_eq!(seals, all, "{name}: the copy's seals");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .open(&exe)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"\x7fELF"));
        assert!(written.is_err(), "{name}: the sealed copy took a write");
        let meta = file.metadata().unwrap();
        copies.push((meta.dev(), meta.ino()));
        ids.push(id);
    }
    // The first create's monitor was forked before the zygote made its copy.
    assert_eq!(copies[1], copies[2], "one copy for the later monitors");

    for id in &ids {
        s.env.start_container(id).await.expect("StartContainer");
        assert_eq!(s.env.exec_ok(id, &["echo", "exec"]).await.trim(), "exec");
    }
}

/// The program crun compiles for `profile` itself: `crun create` of a bundle of its own
/// (a rootfs of /dev and an empty executable: the init waits for `start`, which never
/// comes), no cgroup, then
/// `crun delete`.
fn crun_compiles(profile: &serde_json::Value) -> Vec<u8> {
    let dir = common::temp_dir("crun-compile");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("dev")).unwrap();
    // crun checks at create that the process's file is there and executable; it is never
    // run.
    std::fs::write(rootfs.join("true"), "").unwrap();
    std::fs::set_permissions(
        rootfs.join("true"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": rootfs },
        "process": { "args": ["/true"], "cwd": "/", "user": { "uid": 0, "gid": 0 } },
        "mounts": [],
        "linux": {
            "namespaces": [{ "type": "mount" }, { "type": "pid" }],
            "seccomp": profile,
        },
    });
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let state = dir.path().join("state");
    let id = format!("compile-{}", common::random_hex(8));
    // In a mount namespace without a hybrid host's cgroup2 mount, which crun refuses
    // whatever its cgroup manager (the backend's `hybrid_cgroups = "v1-view"`). Output to
    // nothing (the init would hold a pipe open), errors into crun's log.
    let log = dir.path().join("crun.log");
    let crun = |args: &[&str]| -> Result<(), String> {
        let mut child = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("umount /sys/fs/cgroup/unified 2>/dev/null; exec crun \"$@\"")
            .arg("sh")
            .arg("--root")
            .arg(&state)
            .arg(format!("--log=file:{}", log.display()))
            .arg("--cgroup-manager=disabled")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return match status.success() {
                    true => Ok(()),
                    false => Err(std::fs::read_to_string(&log).unwrap_or_default()),
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("crun {args:?} did not end"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let bundle = dir.path().to_str().unwrap();
    let created = crun(&["create", "--bundle", bundle, &id]);
    let program = std::fs::read(state.join(&id).join("seccomp.bpf"));
    let deleted = crun(&["delete", "--force", &id]);
    created.unwrap_or_else(|e| panic!("crun create: {e}"));
    deleted.unwrap_or_else(|e| panic!("crun delete: {e}"));
    program.expect("crun's own seccomp.bpf")
}

/// A profile libseccomp compiles but the kernel refuses to load (past BPF_MAXINSNS, 4096
/// instructions): the container never runs, the failing call says why, and nothing is
/// left behind (libcontainer containers load the daemon's compiled program, crun its own).
async fn a_filter_the_kernel_refuses_fails_the_container_and_leaves_nothing(backend: &'static str) {
    let Some(mut s) = Suite::start(backend).await else {
        return;
    };
    // personality(n) refused for 6000 values of n, everything else allowed: thousands of
    // comparisons, one per value.
    let values: Vec<String> = (0..6000)
        .map(|v| format!(r#"{{"index": 0, "value": {v}, "op": "SCMP_CMP_EQ"}}"#))
        .collect();
    let rules: Vec<String> = values
        .iter()
        .map(|arg| {
            format!(r#"{{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [{arg}]}}"#)
        })
        .collect();
    let profile = s.env.daemon().dir().join("too-long.json");
    std::fs::write(
        &profile,
        format!(
            r#"{{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{}]}}"#,
            rules.join(", ")
        ),
    )
    .unwrap();
    let pod = s.pod("too-long").await;
    s.steady().await;
    let before = s.settled_snapshot().await;
    let mut cfg = s.env.container_config(&pod, "too-long", &["true"]);
    security(&mut cfg).seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: profile.display().to_string(),
    });
    let failed = match s.env.create(&pod, cfg).await {
        Err(st) => st,
        Ok(id) => {
            let r = s.env.start_container(&id).await;
            let st = s.env.status(&id).await;
            assert_ne!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
            s.env.remove_container(&id).await.expect("RemoveContainer");
            r.expect_err("StartContainer of a container whose filter cannot load")
        }
    };
    assert!(failed.message().contains("seccomp"), "{failed:?}");
    s.env
        .assert_back_to(&before, "failed container removed")
        .await;
    s.assert_no_runtime_state("failed container removed");
}

async fn oom_kill_is_reported(backend: &'static str) {
    let Some(mut s) = Suite::start(backend).await else {
        return;
    };
    let pod = s.pod("oom").await;
    let mut cfg = s.env.container_config(
        &pod,
        "hog",
        &["sh", "-c", "x=0123456789; while true; do x=\"$x$x\"; done"],
    );
    resources(&mut cfg).memory_limit_in_bytes = 8 << 20;
    let (st, _) = s.env.run_to_exit(&pod, cfg).await;
    assert_eq!(
        (st.reason.as_str(), st.exit_code),
        ("OOMKilled", 137),
        "{st:?}"
    );
}

async fn containers_survive_a_daemon_restart(backend: &'static str) {
    let Some(mut s) = Suite::start(backend).await else {
        return;
    };
    let pod = s.pod("restart").await;
    let wait_for = |file: &str, code: i32| {
        format!(
            "echo before; while [ ! -e /tmp/{file} ]; do sleep 0.05; done; echo after; exit {code}"
        )
    };
    let runs = s
        .env
        .container_config(&pod, "runs", &["sh", "-c", &wait_for("go", 7)]);
    let ends = s
        .env
        .container_config(&pod, "ends", &["sh", "-c", &wait_for("go", 4)]);
    let (runs_log, ends_log) = (pod.log_path(&runs), pod.log_path(&ends));
    let runs = s.env.create_start(&pod, runs).await;
    let ends = s.env.create_start(&pod, ends).await;
    for log in [&runs_log, &ends_log] {
        wait_log(log, "before", |r| log_lines(r, "stdout") == ["before"]).await;
    }
    let monitor = s.env.container_info(&runs).await["monitorPid"].clone();
    let ends_pid = s.env.container_info(&ends).await["pid"].clone();

    s.env.kill9();
    // While no daemon runs: one container ends (its trigger written into its rootfs from
    // the host, through its init: the overlay is mounted only in the container), its monitor records the exit code and the last log line.
    let rootfs = PathBuf::from(format!("/proc/{}/root", ends_pid));
    std::fs::write(rootfs.join("tmp/go"), b"").expect("touch the trigger in the rootfs");
    wait_log(&ends_log, "after", |r| {
        log_lines(r, "stdout") == ["before", "after"]
    })
    .await;
    s.env.restart().await;

    let st = s.env.wait_exit(&ends).await;
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (4, "Error"),
        "exited while the daemon was down: {st:?}"
    );
    let st = s.env.status(&runs).await;
    assert_eq!(
        st.state,
        ContainerState::ContainerRunning as i32,
        "still running after the restart: {st:?}"
    );
    let info = s.env.container_info(&runs).await;
    assert_eq!(
        info["monitorPid"], monitor,
        "the same monitor supervises it"
    );
    assert_eq!(info["backend"], backend);
    // Exec through the restarted daemon ends it.
    s.env.exec_ok(&runs, &["touch", "/tmp/go"]).await;
    let st = s.env.wait_exit(&runs).await;
    assert_eq!(st.exit_code, 7, "{st:?}");
    assert_eq!(
        log_lines(&read_log(&runs_log), "stdout"),
        ["before", "after"]
    );
    // And a new container on the same backend works after the restart.
    let (st, _) = s
        .env
        .run_to_exit(
            &pod,
            s.env.container_config(&pod, "new", &["sh", "-c", "exit 9"]),
        )
        .await;
    assert_eq!(st.exit_code, 9);
}

async fn removing_a_pod_with_running_containers_leaves_nothing(backend: &'static str) {
    let Some(mut s) = Suite::start(backend).await else {
        return;
    };
    s.steady().await;
    let before = s.settled_snapshot().await;
    let pod = s.pod("gone").await;
    for name in ["a", "b"] {
        let cfg = s.env.container_config(&pod, name, &["sleep", "1000"]);
        s.env.create_start(&pod, cfg).await;
    }
    let created = s.env.container_config(&pod, "created", &["sleep", "1000"]);
    s.env.create(&pod, created).await.expect("CreateContainer");
    s.env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    s.env.assert_back_to(&before, "pod removed").await;
    s.assert_no_runtime_state("pod removed");
}

async fn a_missing_executable_fails_and_leaves_nothing(backend: &'static str) {
    let Some(mut s) = Suite::start(backend).await else {
        return;
    };
    let pod = s.pod("missing").await;
    s.steady().await;
    let before = s.settled_snapshot().await;
    let cfg = s.env.container_config(&pod, "nope", &["/no/such/binary"]);
    // libcontainer checks the executable at create, crun only when the init execs it at
    // start: either call fails, naming it, and the container never runs.
    let failed = match s.env.create(&pod, cfg).await {
        Err(st) => Some(st),
        Ok(id) => {
            let r = s.env.start_container(&id).await;
            let st = s.env.status(&id).await;
            assert_ne!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
            s.env.remove_container(&id).await.expect("RemoveContainer");
            match r {
                Err(st) => Some(st),
                // Started, then the exec failed: the exit code says so.
                Ok(()) => {
                    assert_ne!(st.exit_code, 0, "{st:?}");
                    None
                }
            }
        }
    };
    if let Some(st) = failed {
        assert!(st.message().contains("/no/such/binary"), "{st:?}");
    }
    s.env
        .assert_back_to(&before, "failed container removed")
        .await;
    s.assert_no_runtime_state("failed container removed");
}

// ---------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Per-operation latency of both backends, measured by a CRI client in one run with the
/// backends interleaved (pod by pod), so that both see the same machine load.
#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn interleaved_latency() {
    let rounds: usize = std::env::var("PROXRT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut backends = vec!["libcontainer"];
    let extra = match backend_config("crun") {
        Some(extra) => {
            backends.push("crun");
            extra
        }
        None => String::new(),
    };
    let mut env = PodEnv::start_with(&extra).await;
    let mut samples: BTreeMap<(&str, &str), Vec<Duration>> = BTreeMap::new();
    let ops = [
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
        "ContainerStatus",
        "ExecSync true",
        "StopContainer",
        "RemoveContainer",
        "create+start+exit (true)",
        "RemovePodSandbox",
    ];
    // One warm-up round each, not recorded.
    for round in 0..=rounds {
        let order: Vec<&str> = match round % 2 {
            0 => backends.clone(),
            _ => backends.iter().rev().copied().collect(),
        };
        for &backend in &order {
            let mut t = |op: &'static str, d: Duration| {
                if round > 0 {
                    samples.entry((op, backend)).or_default().push(d);
                }
            };
            let name = format!("bench-{backend}-{round}");
            let config = env.pod_config(&name);
            let start = Instant::now();
            let pod = run_pod_on(&mut env, config, backend).await;
            t("RunPodSandbox", start.elapsed());

            let cfg = env.container_config(&pod, "sleeper", &["sleep", "1000"]);
            let start = Instant::now();
            let id = env.create(&pod, cfg).await.expect("CreateContainer");
            t("CreateContainer", start.elapsed());
            let start = Instant::now();
            env.start_container(&id).await.expect("StartContainer");
            t("StartContainer", start.elapsed());
            let start = Instant::now();
            env.try_status(&id).await.expect("ContainerStatus");
            t("ContainerStatus", start.elapsed());
            let start = Instant::now();
            let r = env.try_exec(&id, &["true"], 10).await.expect("ExecSync");
            t("ExecSync true", start.elapsed());
            assert_eq!(r.exit_code, 0);
            let start = Instant::now();
            env.stop_container(&id, 0).await.expect("StopContainer");
            t("StopContainer", start.elapsed());
            let start = Instant::now();
            env.remove_container(&id).await.expect("RemoveContainer");
            t("RemoveContainer", start.elapsed());

            let cfg = env.container_config(&pod, "once", &["true"]);
            let start = Instant::now();
            let id = env.create(&pod, cfg).await.expect("CreateContainer");
            env.start_container(&id).await.expect("StartContainer");
            loop {
                let st = env.try_status(&id).await.expect("ContainerStatus");
                if st.state == ContainerState::ContainerExited as i32 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            t("create+start+exit (true)", start.elapsed());

            let start = Instant::now();
            env.cri
                .runtime
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.id.clone(),
                })
                .await
                .expect("StopPodSandbox");
            env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
            t("RemovePodSandbox", start.elapsed());
        }
    }
    println!("\n{rounds} rounds, backends interleaved; milliseconds, median / p99:");
    print!("| operation |");
    for b in &backends {
        print!(" {b} median | {b} p99 |");
    }
    println!();
    println!("|---|{}", "---|---|".repeat(backends.len()));
    for op in ops {
        print!("| {op} |");
        for &b in &backends {
            let mut v = samples.remove(&(op, b)).unwrap_or_default();
            v.sort();
            if v.is_empty() {
                print!(" - | - |");
            } else {
                print!(
                    " {} | {} |",
                    ms(percentile(&v, 0.5)),
                    ms(percentile(&v, 0.99))
                );
            }
        }
        println!();
    }
}
