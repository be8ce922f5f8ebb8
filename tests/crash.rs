//! Crash consistency (issue 12, item 8): the daemon, built with named crash points
//! (`--features failpoints`, src/crash.rs), is killed with SIGKILL at each step of
//! RunPodSandbox, CreateContainer, StartContainer, RemoveContainer and PullImage, then
//! started again on the same root. After each restart what the daemon reports is true
//! (a listed pod runs containers, a listed container is in the state it says, an image
//! listed is whole), what was interrupted is gone or can be made again under the same
//! name, and once everything is removed nothing is left: no mount, process, cgroup,
//! state or run dir, image file. 74 kills in all (the container steps on libcontainer and
//! on crun).
//!
//! Without the feature this file is empty: `hack/test` runs the suite with it.

#![cfg(feature = "failpoints")]

mod common;

use std::fmt::Debug;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::pods::*;
use common::*;
use k8s_cri::v1::{
    ContainerFilter, ContainerState, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxFilter, PodSandboxState,
};
use tonic::Status;

/// How long a daemon set to die at a crash point may take to reach it.
const CRASH_TIMEOUT: Duration = Duration::from_secs(30);

/// A daemon whose pods run on `backend` by default (libcontainer or crun), or None
/// (printed) when the backend cannot run on this host.
async fn env_on(backend: &str) -> Option<PodEnv> {
    let extra = backend_config(backend)?;
    Some(
        PodEnv::start_with(&format!(
            "[runtime]\ndefault_backend = {backend:?}\n{extra}"
        ))
        .await,
    )
}

/// Restarts the daemon set to kill itself at `point` after `skip` passes.
async fn arm(env: &mut PodEnv, point: &str, skip: usize) {
    let actions = match skip {
        0 => "return".to_owned(),
        n => format!("{n}*off->return"),
    };
    env.daemon_mut()
        .set_env("FAILPOINTS", Some(&format!("{point}={actions}")));
    env.restart().await;
}

/// The call the daemon was set to die in has returned: it failed, the daemon died of
/// SIGKILL at `point`, and it is started again (without crash points) on the same root.
async fn restart_after_crash<T: Debug>(env: &mut PodEnv, point: &str, call: Result<T, Status>) {
    assert!(call.is_err(), "{point}: the call succeeded: {call:?}");
    let status = env
        .daemon_mut()
        .wait_exited(CRASH_TIMEOUT)
        .unwrap_or_else(|| panic!("{point}: the daemon did not die\n{}", env.daemon().log()));
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{point}: the daemon ended otherwise: {status}\n{}",
        env.daemon().log()
    );
    let log = env.daemon().log();
    assert!(
        log.lines()
            .any(|l| l.contains("crash point") && l.contains(point)),
        "{point}: the daemon died elsewhere\n{log}"
    );
    env.daemon_mut().set_env("FAILPOINTS", None);
    env.restart().await;
}

/// A pod's config with the pod's own pid namespace (the holder is its pid 1).
fn shared_pid(env: &PodEnv, name: &str) -> PodSandboxConfig {
    let mut p = env.pod_config(name);
    pod_security(&mut p).namespace_options = Some(NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        ..pod_namespaces()
    });
    p
}

/// A pod's config on the node's network and IPC (no netns, no /dev/shm of its own).
fn host_network(env: &PodEnv, name: &str) -> PodSandboxConfig {
    let mut p = env.pod_config(name);
    pod_security(&mut p).namespace_options = Some(NamespaceOption {
        network: NamespaceMode::Node as i32,
        ipc: NamespaceMode::Node as i32,
        ..pod_namespaces()
    });
    p
}

/// A listed pod that says it is ready really is: a container runs in it and answers.
async fn assert_usable(env: &mut PodEnv, pod: &Pod, context: &str) {
    let id = env
        .create(pod, env.container_config(pod, "probe", &["sleep", "1000"]))
        .await
        .unwrap_or_else(|s| panic!("{context}: CreateContainer in the pod: {s:?}"));
    env.start_container(&id)
        .await
        .unwrap_or_else(|s| panic!("{context}: StartContainer in the pod: {s:?}"));
    assert_eq!(env.exec_ok(&id, &["echo", "alive"]).await.trim(), "alive");
    env.remove_container(&id).await.unwrap();
}

/// Removes every pod and container through CRI and checks nothing is left.
async fn assert_all_removable(env: &mut PodEnv, baseline: &Snapshot, context: &str) {
    for c in env.list_containers(ContainerFilter::default()).await {
        env.remove_container(&c.id)
            .await
            .unwrap_or_else(|s| panic!("{context}: RemoveContainer {}: {s:?}", c.id));
    }
    for p in env.list_pods(PodSandboxFilter::default()).await {
        env.remove_pod(&p.id)
            .await
            .unwrap_or_else(|s| panic!("{context}: RemovePodSandbox {}: {s:?}", p.id));
    }
    env.assert_work_back_to(baseline, context).await;
}

// ----- RunPodSandbox ---------------------------------------------------------------------

const POD_POINTS: &[&str] = &[
    "run_pod_sandbox.intent",
    "run_pod_sandbox.shm",
    "run_pod_sandbox.holder",
    "run_pod_sandbox.holder_cgroup",
    "run_pod_sandbox.network",
    "run_pod_sandbox.made",
    "run_pod_sandbox.record",
];

/// Points a pod on the node's network and IPC passes (no /dev/shm, no CNI).
const HOST_POD_POINTS: &[&str] = &[
    "run_pod_sandbox.intent",
    "run_pod_sandbox.holder",
    "run_pod_sandbox.holder_cgroup",
    "run_pod_sandbox.made",
    "run_pod_sandbox.record",
];

#[tokio::test]
async fn run_pod_sandbox_killed_at_each_step() {
    let mut env = PodEnv::start().await;
    let baseline = env.work_snapshot();
    let mut kills = 0;
    let cases = POD_POINTS
        .iter()
        .map(|p| (*p, "own-net"))
        .chain(
            [
                "run_pod_sandbox.holder",
                "run_pod_sandbox.holder_cgroup",
                "run_pod_sandbox.network",
            ]
            .into_iter()
            .map(|p| (p, "shared-pid")),
        )
        .chain(HOST_POD_POINTS.iter().map(|p| (*p, "host-net")));
    for (point, shape) in cases {
        let context = format!("{point} ({shape})");
        let config = match shape {
            "shared-pid" => shared_pid(&env, "crash"),
            "host-net" => host_network(&env, "crash"),
            _ => env.pod_config("crash"),
        };
        arm(&mut env, point, 0).await;
        let call = env.try_run_pod(config.clone()).await;
        restart_after_crash(&mut env, point, call).await;
        kills += 1;

        let pods = env.list_pods(PodSandboxFilter::default()).await;
        if point == "run_pod_sandbox.record" {
            // The record was written (its intent still beside it: that goes once the
            // record is on disk, after the answer): the pod was made, and is reported
            // ready; the start made the record durable and let the intent go.
            assert_eq!(pods.len(), 1, "{context}: {pods:?}");
            assert_eq!(
                pods[0].state,
                PodSandboxState::SandboxReady as i32,
                "{context}"
            );
            let state_dir = env.daemon().root.join("sandboxes").join(&pods[0].id);
            assert!(state_dir.join("sandbox.json").is_file(), "{context}");
            assert!(
                !state_dir.join("intent.json").exists(),
                "{context}: the intent stayed after the start"
            );
            let pod = Pod {
                id: pods[0].id.clone(),
                config: config.clone(),
            };
            assert_usable(&mut env, &pod, &context).await;
        } else {
            // Undone at start: not listed, and the name is free again.
            assert!(pods.is_empty(), "{context}: {pods:?}");
            env.assert_work_back_to(&baseline, &context).await;
            let pod = env
                .try_run_pod(config)
                .await
                .unwrap_or_else(|s| panic!("{context}: the same pod again: {s:?}"));
            assert_usable(&mut env, &pod, &context).await;
        }
        assert_all_removable(&mut env, &baseline, &context).await;
    }
    eprintln!("RunPodSandbox: {kills} kills");
    assert_eq!(kills, 15);
}

// ----- CreateContainer -------------------------------------------------------------------

const CREATE_POINTS: &[&str] = &[
    "create_container.intent",
    "create_container.bundle",
    "create_container.created",
    "create_container.record",
];

#[tokio::test]
async fn create_container_killed_at_each_step_on_libcontainer() {
    create_container_killed_at_each_step("libcontainer").await
}

#[tokio::test]
async fn create_container_killed_at_each_step_on_crun() {
    create_container_killed_at_each_step("crun").await
}

async fn create_container_killed_at_each_step(backend: &str) {
    let Some(mut env) = env_on(backend).await else {
        return;
    };
    let baseline = env.work_snapshot();
    let mut kills = 0;
    for point in CREATE_POINTS {
        // Alone in its pod, and beside a running container (the second create dies).
        for skip in [0, 1] {
            let context = format!("{point} (after {skip})");
            let pod = env.run_pod(env.pod_config("crash")).await;
            arm(&mut env, point, skip).await;
            let mut others = Vec::new();
            for i in 0..skip {
                let cfg = env.container_config(&pod, &format!("other{i}"), &["sleep", "1000"]);
                others.push(env.create_start(&pod, cfg).await);
            }
            let config = env.container_config(&pod, "crash", &["sleep", "1000"]);
            let call = env.create(&pod, config.clone()).await;
            restart_after_crash(&mut env, point, call).await;
            kills += 1;

            let listed = env.list_containers(ContainerFilter::default()).await;
            let crashed: Vec<_> = listed.iter().filter(|c| !others.contains(&c.id)).collect();
            for other in &others {
                let st = env.status(other).await;
                assert_eq!(
                    st.state,
                    ContainerState::ContainerRunning as i32,
                    "{context}: {st:?}"
                );
            }
            if *point == "create_container.record" {
                assert_eq!(crashed.len(), 1, "{context}: {listed:?}");
                let id = crashed[0].id.clone();
                let st = env.status(&id).await;
                assert_eq!(
                    st.state,
                    ContainerState::ContainerCreated as i32,
                    "{context}: {st:?}"
                );
                env.start_container(&id).await.unwrap();
                assert_eq!(env.exec_ok(&id, &["echo", "ok"]).await.trim(), "ok");
            } else {
                assert!(crashed.is_empty(), "{context}: {listed:?}");
                // The name is free and the pod takes the same container again.
                let id = env
                    .create(&pod, config)
                    .await
                    .unwrap_or_else(|s| panic!("{context}: the same container again: {s:?}"));
                env.start_container(&id).await.unwrap();
                assert_eq!(env.exec_ok(&id, &["echo", "ok"]).await.trim(), "ok");
            }
            assert_all_removable(&mut env, &baseline, &context).await;
        }
    }
    eprintln!("CreateContainer on {backend}: {kills} kills");
    assert_eq!(kills, 8);
}

// ----- StartContainer --------------------------------------------------------------------

#[tokio::test]
async fn start_container_killed_at_each_step_on_libcontainer() {
    start_container_killed_at_each_step("libcontainer").await
}

#[tokio::test]
async fn start_container_killed_at_each_step_on_crun() {
    start_container_killed_at_each_step("crun").await
}

async fn start_container_killed_at_each_step(backend: &str) {
    let Some(mut env) = env_on(backend).await else {
        return;
    };
    let baseline = env.work_snapshot();
    let mut kills = 0;
    for point in ["start_container.begin", "start_container.started"] {
        // A long-running container, one that exits at once, one in a shared-pid pod.
        for (shape, command) in [
            ("sleeper", &["sleep", "1000"][..]),
            ("quick", &["sh", "-c", "exit 7"][..]),
            ("shared-pid", &["sleep", "1000"][..]),
        ] {
            let context = format!("{point} ({shape})");
            let config = if shape == "shared-pid" {
                shared_pid(&env, "crash")
            } else {
                env.pod_config("crash")
            };
            let pod = env.run_pod(config).await;
            let id = env
                .create(&pod, env.container_config(&pod, "crash", command))
                .await
                .unwrap();
            // The runtime's own state of it is under the daemon's run dir, by backend.
            let state = env.daemon().run_dir.join(backend).join(&id);
            assert!(state.exists(), "{context}: no {}", state.display());
            arm(&mut env, point, 0).await;
            let call = env.start_container(&id).await;
            restart_after_crash(&mut env, point, call).await;
            kills += 1;

            let st = env.status(&id).await;
            match (point, shape) {
                ("start_container.begin", _) => {
                    // Not started: created still, and it starts now.
                    assert_eq!(
                        st.state,
                        ContainerState::ContainerCreated as i32,
                        "{context}: {st:?}"
                    );
                    env.start_container(&id).await.unwrap();
                }
                (_, "quick") => {
                    let st = env.wait_exit(&id).await;
                    assert_eq!(st.exit_code, 7, "{context}: {st:?}");
                }
                _ => {
                    assert_eq!(
                        st.state,
                        ContainerState::ContainerRunning as i32,
                        "{context}: {st:?}"
                    );
                    assert_eq!(env.exec_ok(&id, &["echo", "ok"]).await.trim(), "ok");
                }
            }
            if shape == "quick" {
                let st = env.wait_exit(&id).await;
                assert_eq!(st.exit_code, 7, "{context}: {st:?}");
            }
            assert_all_removable(&mut env, &baseline, &context).await;
        }
    }
    eprintln!("StartContainer on {backend}: {kills} kills");
    assert_eq!(kills, 6);
}

// ----- RemoveContainer -------------------------------------------------------------------

const REMOVE_POINTS: &[&str] = &[
    "remove_container.stopped",
    "remove_container.backend",
    "remove_container.unmounted",
    "remove_container.run_dir",
    "remove_container.record",
];

#[tokio::test]
async fn remove_container_killed_at_each_step_on_libcontainer() {
    remove_container_killed_at_each_step("libcontainer").await
}

#[tokio::test]
async fn remove_container_killed_at_each_step_on_crun() {
    remove_container_killed_at_each_step("crun").await
}

async fn remove_container_killed_at_each_step(backend: &str) {
    let Some(mut env) = env_on(backend).await else {
        return;
    };
    let baseline = env.work_snapshot();
    let mut kills = 0;
    for point in REMOVE_POINTS {
        for running in [true, false] {
            let context = format!("{point} (running {running})");
            let pod = env.run_pod(env.pod_config("crash")).await;
            let command: &[&str] = if running {
                &["sleep", "1000"]
            } else {
                &["sh", "-c", "exit 3"]
            };
            let id = env
                .create_start(&pod, env.container_config(&pod, "crash", command))
                .await;
            if !running {
                env.wait_exit(&id).await;
            }
            arm(&mut env, point, 0).await;
            let call = env.remove_container(&id).await;
            restart_after_crash(&mut env, point, call).await;
            kills += 1;

            let listed = env.list_containers(ContainerFilter::default()).await;
            if *point == "remove_container.record" {
                assert!(listed.is_empty(), "{context}: {listed:?}");
            } else {
                // Still there, exited (it was stopped first), and removable now.
                assert_eq!(listed.len(), 1, "{context}: {listed:?}");
                let st = env.status(&id).await;
                assert_eq!(
                    st.state,
                    ContainerState::ContainerExited as i32,
                    "{context}: {st:?}"
                );
                env.remove_container(&id)
                    .await
                    .unwrap_or_else(|s| panic!("{context}: RemoveContainer again: {s:?}"));
            }
            // The name is free again.
            env.start_sleeper(&pod, "crash").await;
            assert_all_removable(&mut env, &baseline, &context).await;
        }
    }
    eprintln!("RemoveContainer on {backend}: {kills} kills");
    assert_eq!(kills, 10);
}

// ----- PullImage -------------------------------------------------------------------------

#[tokio::test]
async fn pull_image_killed_at_each_step() {
    let registry = Registry::shared();
    let mut env = PodEnv::start().await;
    let baseline = env.work_snapshot();
    let store = |env: &PodEnv| {
        let d = env.daemon();
        [
            files_under(&d.blobs_dir()),
            files_under(&d.snapshots_dir()),
            files_under(&d.ingest_dir()),
            files_under(&d.records_dir()),
        ]
    };
    let before = store(&env);
    let mut kills = 0;
    // (point, passes before the kill, gzip): the config and the layer download side by
    // side, so either may be the first blob a point is passed for.
    let cases = [
        ("pull_image.manifest", 0, false),
        ("pull_image.downloaded", 0, false),
        ("pull_image.downloaded", 1, false),
        ("pull_image.blob", 0, false),
        ("pull_image.blob", 1, false),
        ("pull_image.unpacked", 0, false),
        ("pull_image.layer", 0, false),
        ("pull_image.record", 0, false),
        ("pull_image.downloaded", 1, true),
        ("pull_image.unpacked", 0, true),
        ("pull_image.record", 0, true),
    ];
    for (point, skip, gzip) in cases {
        let context = format!("{point} (after {skip}, gzip {gzip})");
        let mut image = TestImage::new().file("crash", random_hex(16).as_bytes());
        if gzip {
            image = image.gzip();
        }
        let pushed = image.push(&registry, &format!("{}:1", unique_repo("crash")));
        arm(&mut env, point, skip).await;
        let call = pull(&mut env.cri, &pushed.name).await;
        restart_after_crash(&mut env, point, call).await;
        kills += 1;

        let status = image_status(&mut env.cri, &pushed.name).await;
        let ingest = files_under(&env.daemon().ingest_dir());
        assert_eq!(ingest, 0, "{context}: a download was left half done");
        if point == "pull_image.record" {
            let st = status.unwrap_or_else(|| panic!("{context}: the pulled image is not listed"));
            assert_eq!(st.id, pushed.id, "{context}");
        } else {
            assert!(
                status.is_none(),
                "{context}: a half-pulled image is listed: {status:?}"
            );
            assert_eq!(
                pull(&mut env.cri, &pushed.name).await.unwrap(),
                pushed.id,
                "{context}: pulled again"
            );
        }
        // The image is whole: its layer is unpacked with the file in it.
        assert!(
            has_file(&env.daemon().snapshots_dir(), "crash"),
            "{context}: the layer's file is not in any snapshot"
        );
        remove_image(&mut env.cri, &pushed.name).await.unwrap();
        env.assert_work_back_to(&baseline, &context).await;
        assert_eq!(
            store(&env),
            before,
            "{context}: the image store is not back to before"
        );
    }
    eprintln!("PullImage: {kills} kills");
    assert_eq!(kills, 11);
}

/// Whether a file named `name` is somewhere under `dir`.
fn has_file(dir: &std::path::Path, name: &str) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => has_file(&path, name),
                Ok(t) if t.is_file() => e.file_name() == name,
                _ => false,
            }
        })
}
