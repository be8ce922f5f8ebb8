//! Containers outlive the daemon (DESIGN.md decision 2): after `kill -9` of `proxrt serve`
//! and a restart on the same root, every pod and container is found again with the right
//! state, running ones still run and log, and exits that happened while the daemon was
//! down, or after it came back, are reported with their codes.

mod common;

use std::fs;
use std::path::Path;

use common::pods::*;
use k8s_cri::v1::{ContainerFilter, ContainerState, Mount, PodSandboxFilter, PodSandboxState};
use tonic::Code;

/// The tick numbers a ticker container has logged so far.
fn ticks(log: &Path) -> Vec<u64> {
    log_lines(&read_log(log), "stdout")
        .iter()
        .filter(|l| *l != "stopping")
        .map(|l| {
            l.strip_prefix("tick ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad line {l:?}"))
        })
        .collect()
}

async fn survives(kill9: bool) {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("survivor")).await;
    let gone = env.run_pod(env.pod_config("stopped")).await;
    env.stop_pod(&gone.id).await.unwrap();

    // A host dir the test uses to tell a container when to exit.
    let ctl = env.daemon().dir().join("ctl");
    fs::create_dir(&ctl).unwrap();
    let ctl_mount = Mount {
        container_path: "/ctl".into(),
        host_path: ctl.display().to_string(),
        ..Default::default()
    };

    let ticker_cfg = env.container_config(
        &pod,
        "ticker",
        &["sh", "-c", "trap 'echo stopping; exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"],
    );
    let ticker_log = pod.log_path(&ticker_cfg);
    let ticker = env.create_start(&pod, ticker_cfg.clone()).await;
    let mut waiter_cfg = env.container_config(
        &pod,
        "waiter",
        &[
            "sh",
            "-c",
            "while [ ! -e /ctl/go ]; do sleep 0.05; done; echo going; exit 5",
        ],
    );
    waiter_cfg.mounts = vec![ctl_mount];
    let waiter_log = pod.log_path(&waiter_cfg);
    let waiter = env.create_start(&pod, waiter_cfg).await;
    let (done_status, _) = env
        .run_to_exit(
            &pod,
            env.container_config(&pod, "done", &["sh", "-c", "exit 3"]),
        )
        .await;
    let done = done_status.id.clone();
    let created = env
        .create(
            &pod,
            env.container_config(&pod, "created", &["sleep", "1000"]),
        )
        .await
        .unwrap();
    wait_log(&ticker_log, "a few ticks", |r| r.len() >= 3).await;

    if kill9 {
        env.kill9();
        // While the daemon is down its containers go on: the ticker keeps logging.
        let before = ticks(&ticker_log).len();
        wait_log(&ticker_log, "ticks while the daemon is down", |r| {
            r.len() >= before + 3
        })
        .await;
    }
    env.restart().await;

    // Pods and containers are all there, in the right states.
    let pods = env.list_pods(PodSandboxFilter::default()).await;
    let state_of = |id: &str| pods.iter().find(|p| p.id == id).map(|p| p.state);
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert_eq!(
        state_of(&pod.id),
        Some(PodSandboxState::SandboxReady as i32)
    );
    assert_eq!(
        state_of(&gone.id),
        Some(PodSandboxState::SandboxNotready as i32)
    );
    let containers = env.list_containers(ContainerFilter::default()).await;
    assert_eq!(containers.len(), 4, "{containers:?}");
    for (id, state) in [
        (&ticker, ContainerState::ContainerRunning),
        (&waiter, ContainerState::ContainerRunning),
        (&done, ContainerState::ContainerExited),
        (&created, ContainerState::ContainerCreated),
    ] {
        let st = env.status(id).await;
        assert_eq!(st.state, state as i32, "after restart: {st:?}");
    }
    assert!(
        containers.iter().all(|c| c.pod_sandbox_id == pod.id),
        "{containers:?}"
    );
    let st = env.status(&done).await;
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (3, "Error"),
        "an exited container keeps its exit code: {st:?}"
    );
    assert_eq!(
        st.finished_at, done_status.finished_at,
        "and its finish time"
    );

    // The running one still runs: exec works, and its log goes on where it was.
    assert_eq!(env.exec_ok(&ticker, &["hostname"]).await, "survivor\n");
    let seen = ticks(&ticker_log).len();
    wait_log(&ticker_log, "ticks after the restart", |r| {
        r.len() >= seen + 3
    })
    .await;
    let all = ticks(&ticker_log);
    assert_eq!(
        all,
        (0..all.len() as u64).collect::<Vec<_>>(),
        "no tick lost or repeated across the restart"
    );

    // A container that exits after the restart reports its code.
    fs::write(ctl.join("go"), "").unwrap();
    let st = env.wait_exit(&waiter).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (5, "Error"), "{st:?}");
    assert_eq!(log_lines(&read_log(&waiter_log), "stdout"), ["going"]);

    // The created one can still be started, names are still reserved.
    env.start_container(&created)
        .await
        .expect("start a container created before the restart");
    env.wait_state(&created, ContainerState::ContainerRunning)
        .await;
    let again = env.container_config(&pod, "ticker", &["true"]);
    let s = env
        .create(&pod, again)
        .await
        .expect_err("the name is still taken");
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
    assert!(s.message().contains(&ticker), "{s:?}");
    let s = env
        .try_run_pod(pod.config.clone())
        .await
        .expect_err("the pod name is still taken");
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");

    // And everything can be stopped and removed.
    env.stop_container(&ticker, 5).await.unwrap();
    let st = env.status(&ticker).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (0, "Completed"),
        "the ticker got StopContainer's SIGTERM: {st:?}"
    );
    assert_eq!(
        log_lines(&read_log(&ticker_log), "stdout")
            .last()
            .map(String::as_str),
        Some("stopping")
    );
    env.remove_pod(&pod.id).await.unwrap();
    env.remove_pod(&gone.id).await.unwrap();
    assert!(env.list_pods(PodSandboxFilter::default()).await.is_empty());
    assert!(env
        .list_containers(ContainerFilter::default())
        .await
        .is_empty());
}

#[tokio::test]
async fn everything_survives_kill_9_of_the_daemon() {
    survives(true).await;
}

#[tokio::test]
async fn everything_survives_a_clean_restart() {
    survives(false).await;
}

#[tokio::test]
async fn a_container_that_exits_while_the_daemon_is_down_reports_its_code() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("downtime")).await;
    let ctl = env.daemon().dir().join("ctl");
    fs::create_dir(&ctl).unwrap();
    let mut cfg = env.container_config(
        &pod,
        "main",
        &[
            "sh",
            "-c",
            "while [ ! -e /ctl/go ]; do sleep 0.05; done; echo bye; exit 9",
        ],
    );
    cfg.mounts = vec![Mount {
        container_path: "/ctl".into(),
        host_path: ctl.display().to_string(),
        ..Default::default()
    }];
    let log = pod.log_path(&cfg);
    let id = env.create_start(&pod, cfg).await;
    env.kill9();
    fs::write(ctl.join("go"), "").unwrap();
    wait_log(&log, "the last line", |r| !r.is_empty()).await;
    env.restart().await;
    let st = env.wait_exit(&id).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (9, "Error"), "{st:?}");
    assert!(st.finished_at > st.started_at, "{st:?}");
    assert_eq!(log_lines(&read_log(&log), "stdout"), ["bye"]);
}

/// A container whose record cannot be read at start (a disk fault) is not loaded, but
/// nothing of it is removed as if it were a leftover: its state dir (with its writable
/// layer), its run dir and its processes stay, and with the record back it is found
/// again, still running.
#[tokio::test]
async fn an_unreadable_record_is_kept_with_everything_of_its_container() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("unreadable")).await;
    let id = env.start_sleeper(&pod, "kept").await;
    let state_dir = env.daemon().root.join("containers").join(&id);
    let run_dir = env.daemon().run_dir.join("c").join(&id[..16]);
    let record = state_dir.join("container.json");
    let good = fs::read(&record).unwrap();
    // StartContainer answers once the init is let go: its exec of `sleep` may come after.
    let deadline = std::time::Instant::now() + STATE_TIMEOUT;
    let theirs: Vec<String> = loop {
        let theirs: Vec<String> = env
            .snapshot()
            .processes
            .into_iter()
            .filter(|p| p.ends_with(" sleep") || p.ends_with(" proxrt-monitor"))
            .collect();
        if theirs.len() == 2 || std::time::Instant::now() > deadline {
            break theirs;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(theirs.len(), 2, "the container and its monitor: {theirs:?}");

    env.kill9();
    fs::write(&record, &good[..good.len() / 2]).unwrap();
    env.restart().await;
    let listed = env.list_containers(ContainerFilter::default()).await;
    assert!(listed.is_empty(), "a torn record is not loaded: {listed:?}");
    assert!(
        state_dir.join("upper").is_dir(),
        "its writable layer is kept"
    );
    assert!(run_dir.join("rootfs").is_dir(), "its run dir is kept");
    let now = env.snapshot().processes;
    assert!(
        theirs.iter().all(|p| now.contains(p)),
        "its processes run on: {theirs:?} in {now:?}"
    );

    env.kill9();
    fs::write(&record, &good).unwrap();
    env.restart().await;
    let st = env.status(&id).await;
    assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
    assert_eq!(env.exec_ok(&id, &["echo", "back"]).await, "back\n");
}
