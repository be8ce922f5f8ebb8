//! Every failure rolls back and every removal is complete (DESIGN.md decision 3): the
//! daemon's mounts, cgroups, state dirs, processes and fds are compared before and after
//! failing creates, pod removal with running containers, and 200 container cycles.

mod common;

use common::pods::*;
use k8s_cri::v1::{ContainerState, Int64Value};
use tonic::Code;

#[tokio::test]
async fn failed_creates_leave_nothing_behind() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("rollback")).await;
    // One running container, so that "nothing changed" is checked next to live state.
    env.start_sleeper(&pod, "steady").await;
    let before = env.settled_snapshot().await;
    assert!(
        !before.processes.is_empty() && !before.mounts.is_empty() && !before.dirs.is_empty(),
        "{before:#?}"
    );

    let failing: Vec<(&str, k8s_cri::v1::ContainerConfig)> = vec![
        // libcontainer refuses it at create time: everything up to the backend was made.
        (
            "missing binary",
            env.container_config(&pod, "main", &["/no/such/binary", "arg"]),
        ),
        ("unknown user", {
            let mut c = env.container_config(&pod, "main", &["true"]);
            security(&mut c).run_as_username = "nosuchuser".into();
            c
        }),
        ("group without user", {
            let mut c = env.container_config(&pod, "main", &["true"]);
            security(&mut c).run_as_group = Some(Int64Value { value: 5 });
            c
        }),
        ("relative mount destination", {
            let mut c = env.container_config(&pod, "main", &["true"]);
            c.mounts = vec![k8s_cri::v1::Mount {
                container_path: "relative".into(),
                host_path: env.daemon().dir().display().to_string(),
                ..Default::default()
            }];
            c
        }),
        ("missing image", {
            let mut c = env.container_config(&pod, "main", &["true"]);
            c.image.as_mut().unwrap().image = "proxrt.test/missing:1".into();
            c
        }),
    ];
    for (what, config) in failing {
        let r = env.create(&pod, config).await;
        let s = r.expect_err(what);
        assert_ne!(s.code(), Code::Ok, "{what}");
        env.assert_back_to(&before, &format!("failed create ({what}: {s:?})"))
            .await;
    }
    // None of them kept the name.
    let id = env
        .create(&pod, env.container_config(&pod, "main", &["true"]))
        .await
        .expect("the name is free");
    env.remove_container(&id).await.unwrap();
    env.assert_back_to(&before, "create + remove").await;

    // A failing RunPodSandbox: a sysctl that does not exist fails in the namespace setup,
    // after the pod's files and /dev/shm were made.
    let mut bad = env.pod_config("badsysctl");
    bad.linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("net.ipv4.no_such_sysctl".into(), "1".into());
    let s = env
        .try_run_pod(bad.clone())
        .await
        .expect_err("unknown sysctl");
    assert_ne!(s.code(), Code::Ok);
    env.assert_back_to(&before, &format!("failed RunPodSandbox ({s:?})"))
        .await;
    // Its name was released too.
    bad.linux.as_mut().unwrap().sysctls.clear();
    let p = env.run_pod(bad).await;
    env.remove_pod(&p.id).await.unwrap();
    env.assert_back_to(&before, "run + remove pod").await;
}

#[tokio::test]
async fn removing_a_pod_with_running_containers_leaves_nothing() {
    let mut env = PodEnv::start().await;
    let before = env.settled_snapshot().await;
    let pod = env.run_pod(env.pod_config("busy")).await;
    let one = env.start_sleeper(&pod, "one").await;
    // A process that ignores SIGTERM and a second process in the container.
    env.create_start(
        &pod,
        env.container_config(
            &pod,
            "two",
            &["sh", "-c", "trap '' TERM; sleep 1000 & wait"],
        ),
    )
    .await;
    env.create(
        &pod,
        env.container_config(&pod, "three", &["sleep", "1000"]),
    )
    .await
    .unwrap();
    env.exec_ok(&one, &["true"]).await;
    assert_ne!(env.snapshot(), before);
    env.remove_pod(&pod.id)
        .await
        .expect("RemovePodSandbox without StopPodSandbox first");
    env.assert_back_to(&before, "RemovePodSandbox").await;
}

/// RemoveContainer and RemovePodSandbox answer once the record is out of its store (the
/// state dir renamed `.removing-<id>`, which no loader reads); the files (a writable layer
/// with what the container wrote) go after the answer, and what a daemon stopped before
/// that leaves is removed by its next start.
#[tokio::test]
async fn removed_state_dirs_leave_the_store_before_the_answer_and_their_files_after() {
    let mut env = PodEnv::start().await;
    let before = env.settled_snapshot().await;
    let containers = env.daemon().root.join("containers");
    let sandboxes = env.daemon().root.join("sandboxes");
    let pod = env.run_pod(env.pod_config("retire")).await;
    let id = env
        .create_start(
            &pod,
            env.container_config(
                &pod,
                "writer",
                &[
                    "sh",
                    "-c",
                    "mkdir -p /data/a/b && head -c 1000000 /dev/zero > /data/a/b/big && sleep 1000",
                ],
            ),
        )
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !containers.join(&id).join("upper/data/a/b/big").is_file() {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never wrote"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    env.remove_container(&id).await.unwrap();
    assert!(
        !containers.join(&id).exists(),
        "the container's state dir at the answer"
    );
    env.remove_pod(&pod.id).await.unwrap();
    assert!(
        !sandboxes.join(&pod.id).exists(),
        "the pod's state dir at the answer"
    );
    env.assert_back_to(&before, "the removals after their answers")
        .await;

    // A removal its daemon did not get to (killed before the files went): the retired
    // dir still holds the record.
    let left = containers.join(".removing-0123456789abcdef");
    std::fs::create_dir_all(left.join("upper/etc")).unwrap();
    std::fs::write(left.join("upper/etc/file"), "x").unwrap();
    std::fs::write(left.join("container.json"), "{}").unwrap();
    env.kill9();
    env.restart().await;
    assert!(!left.exists(), "the start removes what a removal left");
    assert_eq!(env.snapshot().dirs, before.dirs, "after the restart");
}

#[tokio::test]
async fn two_hundred_container_cycles_leak_nothing() {
    const CYCLES: u32 = 200;
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("cycles")).await;
    let cycle = |env: &PodEnv, attempt: u32| {
        let mut c = env.container_config(&pod, "c", &["true"]);
        c.metadata.as_mut().unwrap().attempt = attempt;
        c.log_path = format!("c/{attempt}.log");
        c
    };
    // One cycle first, so that whatever the daemon sets up once (connections to the
    // zygote, caches) is in the baseline.
    let id = env.create_start(&pod, cycle(&env, 0)).await;
    env.wait_exit(&id).await;
    env.remove_container(&id).await.unwrap();
    let before = env.settled_snapshot().await;

    for attempt in 1..=CYCLES {
        let id = env.create_start(&pod, cycle(&env, attempt)).await;
        let st = env.wait_exit(&id).await;
        assert_eq!(st.exit_code, 0, "cycle {attempt}: {st:?}");
        env.stop_container(&id, 0).await.unwrap();
        env.remove_container(&id).await.unwrap();
    }
    env.assert_back_to(
        &before,
        &format!("{CYCLES} create/start/stop/remove cycles"),
    )
    .await;
    assert_eq!(env.list_containers(Default::default()).await.len(), 0);
    let st = env.pod_status(&pod.id).await.unwrap();
    assert_eq!(st.state, k8s_cri::v1::PodSandboxState::SandboxReady as i32);
    // The pod still works.
    let id = env.start_sleeper(&pod, "after").await;
    env.wait_state(&id, ContainerState::ContainerRunning).await;
}
