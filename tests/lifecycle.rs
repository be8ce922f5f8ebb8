//! Pods and containers through CRI against a real daemon: the lifecycle kubelet drives,
//! List filters, shared pod namespaces, ExecSync, exit codes and OOM kills, the CRI log
//! format, name reservations, and the gRPC code of every bad request.

mod common;

use std::time::{Duration, Instant};

use common::assert_code;
use common::pods::*;
use k8s_cri::v1::{
    ContainerFilter, ContainerState, ContainerStateValue, PodSandboxFilter, PodSandboxState,
    PodSandboxStateValue,
};
use tonic::Code;

#[tokio::test]
async fn full_pod_lifecycle() {
    let mut env = PodEnv::start().await;
    let mut config = env.pod_config("web");
    config.labels.insert("app".into(), "web".into());
    config.annotations.insert("note".into(), "hello".into());
    let pod = env.run_pod(config.clone()).await;
    assert_eq!(pod.id.len(), 64, "sandbox ids are 64 hex chars");

    let s = env.pod_status(&pod.id).await.unwrap();
    assert_eq!(s.id, pod.id);
    assert_eq!(s.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(s.metadata, config.metadata);
    assert_eq!(s.labels, config.labels);
    assert_eq!(s.annotations, config.annotations);
    assert!(s.created_at > 0);

    // A process that ignores SIGTERM: StopContainer must kill it after its timeout.
    let c = env.container_config(
        &pod,
        "main",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo up; while true; do sleep 1; done",
        ],
    );
    let log = pod.log_path(&c);
    let id = env.create(&pod, c.clone()).await.expect("CreateContainer");
    assert_eq!(id.len(), 64, "container ids are 64 hex chars");
    let st = env.status(&id).await;
    assert_eq!(st.state, ContainerState::ContainerCreated as i32, "{st:?}");
    assert_eq!(st.metadata, c.metadata);
    assert_eq!(st.labels, c.labels);
    assert_eq!(st.annotations, c.annotations);
    assert_eq!(st.log_path, log.display().to_string());
    assert!(
        st.created_at > 0 && st.started_at == 0 && st.finished_at == 0,
        "{st:?}"
    );

    env.start_container(&id).await.expect("StartContainer");
    let st = env.status(&id).await;
    assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
    assert!(st.started_at >= st.created_at, "{st:?}");
    wait_log(&log, "\"up\"", |r| log_lines(r, "stdout") == ["up"]).await;

    env.stop_container(&id, 1).await.expect("StopContainer");
    let st = env.status(&id).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32, "{st:?}");
    assert_eq!(st.exit_code, 137, "SIGKILL after the timeout: {st:?}");
    assert_eq!(st.reason, "Error", "{st:?}");
    assert!(st.finished_at >= st.started_at, "{st:?}");
    // Stopping again is fine.
    env.stop_container(&id, 1)
        .await
        .expect("second StopContainer");

    env.remove_container(&id).await.expect("RemoveContainer");
    assert_code(
        env.try_status(&id).await,
        Code::NotFound,
        "status of a removed container",
    );
    assert!(env
        .list_containers(ContainerFilter::default())
        .await
        .is_empty());

    env.stop_pod(&pod.id).await.expect("StopPodSandbox");
    let s = env.pod_status(&pod.id).await.unwrap();
    assert_eq!(s.state, PodSandboxState::SandboxNotready as i32);
    env.stop_pod(&pod.id).await.expect("second StopPodSandbox");
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    assert_code(
        env.pod_status(&pod.id).await,
        Code::NotFound,
        "status of a removed pod",
    );
    assert!(env.list_pods(PodSandboxFilter::default()).await.is_empty());
    env.remove_pod(&pod.id)
        .await
        .expect("second RemovePodSandbox");
}

#[tokio::test]
async fn list_filters() {
    let mut env = PodEnv::start().await;
    let mut a_cfg = env.pod_config("alpha");
    a_cfg.labels.insert("tier".into(), "front".into());
    let a = env.run_pod(a_cfg).await;
    let mut b_cfg = env.pod_config("beta");
    b_cfg.labels.insert("tier".into(), "back".into());
    let b = env.run_pod(b_cfg).await;

    // alpha: one running and one created container; beta: one exited.
    let mut run = env.container_config(&a, "run", &["sleep", "1000"]);
    run.labels.insert("role".into(), "server".into());
    let running = env.create_start(&a, run).await;
    let mut idle = env.container_config(&a, "idle", &["sleep", "1000"]);
    idle.labels.insert("role".into(), "spare".into());
    let created = env.create(&a, idle).await.unwrap();
    let done = env
        .create_start(&b, env.container_config(&b, "done", &["true"]))
        .await;
    env.wait_exit(&done).await;

    let ids = |cs: Vec<k8s_cri::v1::Container>| {
        let mut v: Vec<String> = cs.into_iter().map(|c| c.id).collect();
        v.sort();
        v
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let all = env.list_containers(ContainerFilter::default()).await;
    assert_eq!(
        ids(all.clone()),
        sorted(vec![running.clone(), created.clone(), done.clone()])
    );
    let c = all.iter().find(|c| c.id == running).unwrap();
    assert_eq!(c.pod_sandbox_id, a.id);
    assert_eq!(c.state, ContainerState::ContainerRunning as i32);
    assert_eq!(c.metadata.as_ref().unwrap().name, "run");

    let by = |f: ContainerFilter| f;
    let cases: Vec<(&str, ContainerFilter, Vec<String>)> = vec![
        (
            "full id",
            by(ContainerFilter {
                id: running.clone(),
                ..Default::default()
            }),
            vec![running.clone()],
        ),
        (
            "id prefix",
            by(ContainerFilter {
                id: created[..12].into(),
                ..Default::default()
            }),
            vec![created.clone()],
        ),
        (
            "unknown id",
            by(ContainerFilter {
                id: "f".repeat(64),
                ..Default::default()
            }),
            vec![],
        ),
        (
            "state running",
            by(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
            vec![running.clone()],
        ),
        (
            "state created",
            by(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerCreated as i32,
                }),
                ..Default::default()
            }),
            vec![created.clone()],
        ),
        (
            "state exited",
            by(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerExited as i32,
                }),
                ..Default::default()
            }),
            vec![done.clone()],
        ),
        (
            "pod id",
            by(ContainerFilter {
                pod_sandbox_id: a.id.clone(),
                ..Default::default()
            }),
            sorted(vec![running.clone(), created.clone()]),
        ),
        (
            "pod id prefix",
            by(ContainerFilter {
                pod_sandbox_id: b.id[..10].into(),
                ..Default::default()
            }),
            vec![done.clone()],
        ),
        (
            "unknown pod",
            by(ContainerFilter {
                pod_sandbox_id: "0".repeat(64),
                ..Default::default()
            }),
            vec![],
        ),
        (
            "label",
            by(ContainerFilter {
                label_selector: [("role".to_string(), "server".to_string())].into(),
                ..Default::default()
            }),
            vec![running.clone()],
        ),
        (
            "kubelet's pod uid label",
            by(ContainerFilter {
                label_selector: [(
                    "io.kubernetes.pod.uid".to_string(),
                    b.config.metadata.as_ref().unwrap().uid.clone(),
                )]
                .into(),
                ..Default::default()
            }),
            vec![done.clone()],
        ),
        (
            "label and pod",
            by(ContainerFilter {
                pod_sandbox_id: b.id.clone(),
                label_selector: [("role".to_string(), "server".to_string())].into(),
                ..Default::default()
            }),
            vec![],
        ),
        (
            "two labels",
            by(ContainerFilter {
                label_selector: [
                    ("role".to_string(), "spare".to_string()),
                    (
                        "io.kubernetes.container.name".to_string(),
                        "idle".to_string(),
                    ),
                ]
                .into(),
                ..Default::default()
            }),
            vec![created.clone()],
        ),
    ];
    for (what, filter, want) in cases {
        assert_eq!(
            ids(env.list_containers(filter).await),
            want,
            "ListContainers by {what}"
        );
    }

    env.stop_pod(&b.id).await.unwrap();
    let pod_ids = |ps: Vec<k8s_cri::v1::PodSandbox>| {
        let mut v: Vec<String> = ps.into_iter().map(|p| p.id).collect();
        v.sort();
        v
    };
    let state = |s: PodSandboxState| Some(PodSandboxStateValue { state: s as i32 });
    let cases: Vec<(&str, PodSandboxFilter, Vec<String>)> = vec![
        (
            "nothing",
            PodSandboxFilter::default(),
            sorted(vec![a.id.clone(), b.id.clone()]),
        ),
        (
            "full id",
            PodSandboxFilter {
                id: a.id.clone(),
                ..Default::default()
            },
            vec![a.id.clone()],
        ),
        (
            "id prefix",
            PodSandboxFilter {
                id: b.id[..12].into(),
                ..Default::default()
            },
            vec![b.id.clone()],
        ),
        (
            "unknown id",
            PodSandboxFilter {
                id: "0".repeat(64),
                ..Default::default()
            },
            vec![],
        ),
        (
            "ready",
            PodSandboxFilter {
                state: state(PodSandboxState::SandboxReady),
                ..Default::default()
            },
            vec![a.id.clone()],
        ),
        (
            "not ready",
            PodSandboxFilter {
                state: state(PodSandboxState::SandboxNotready),
                ..Default::default()
            },
            vec![b.id.clone()],
        ),
        (
            "label",
            PodSandboxFilter {
                label_selector: [("tier".to_string(), "back".to_string())].into(),
                ..Default::default()
            },
            vec![b.id.clone()],
        ),
        (
            "label and state",
            PodSandboxFilter {
                label_selector: [("tier".to_string(), "back".to_string())].into(),
                state: state(PodSandboxState::SandboxReady),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (what, filter, want) in cases {
        assert_eq!(
            pod_ids(env.list_pods(filter).await),
            want,
            "ListPodSandbox by {what}"
        );
    }
    // Stopping the pod stopped its container.
    assert_eq!(
        env.status(&done).await.state,
        ContainerState::ContainerExited as i32
    );
}

/// The namespaces a process is in, as `readlink /proc/self/ns/<ns>` shows them.
async fn namespaces(env: &mut PodEnv, id: &str) -> Vec<String> {
    let out = env
        .exec_ok(
            id,
            &[
                "sh",
                "-c",
                "for n in net ipc uts pid; do readlink /proc/self/ns/$n; done; hostname",
            ],
        )
        .await;
    out.lines().map(String::from).collect()
}

#[tokio::test]
async fn containers_of_a_pod_share_net_ipc_and_uts() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("shared")).await;
    let one = env.start_sleeper(&pod, "one").await;
    let two = env.start_sleeper(&pod, "two").await;
    let a = namespaces(&mut env, &one).await;
    let b = namespaces(&mut env, &two).await;
    assert_eq!(a.len(), 5, "{a:?}");
    assert_eq!(a[..3], b[..3], "net, ipc and uts are the pod's");
    assert_ne!(
        a[3], b[3],
        "pid namespace is per container (NamespaceMode::Container)"
    );
    assert_eq!(a[4], "shared", "hostname is the pod's");
    assert_eq!(b[4], "shared");
    for (i, ns) in ["net", "ipc", "uts"].iter().enumerate() {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(
            a[i],
            host.display().to_string(),
            "the pod has its own {ns} namespace"
        );
    }
    // A second pod has namespaces of its own.
    let other = env.run_pod(env.pod_config("other")).await;
    let three = env.start_sleeper(&other, "three").await;
    let c = namespaces(&mut env, &three).await;
    for i in 0..3 {
        assert_ne!(a[i], c[i], "pods do not share namespaces");
    }
    assert_eq!(c[4], "other");
    // The container's log shows the same hostname (output through the log, not exec).
    let mut cfg = env.container_config(
        &pod,
        "printer",
        &["sh", "-c", "hostname; readlink /proc/self/ns/net"],
    );
    cfg.log_path = "printer/0.log".into();
    let (st, log) = env.run_to_exit(&pod, cfg).await;
    assert_eq!(st.exit_code, 0);
    assert_eq!(
        log_lines(&log, "stdout"),
        vec!["shared".to_string(), a[0].clone()]
    );
}

#[tokio::test]
async fn exec_sync_output_exit_code_and_timeout() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("exec")).await;
    let id = env.start_sleeper(&pod, "main").await;

    let r = env
        .try_exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 3"], 10)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&r.stderr), "err\n");
    assert_eq!(r.exit_code, 3);

    let r = env
        .try_exec(&id, &["cat", "/etc/hostname"], 0)
        .await
        .unwrap();
    assert_eq!(
        (String::from_utf8_lossy(&r.stdout).trim(), r.exit_code),
        ("exec", 0),
        "no timeout: {r:?}"
    );

    let started = Instant::now();
    let r = env.try_exec(&id, &["sleep", "30"], 1).await;
    let took = started.elapsed();
    // Either the runtime's answer for a killed probe, or DeadlineExceeded: never a
    // success, and never after the command would have ended by itself.
    match r {
        Ok(r) => assert_ne!(r.exit_code, 0, "a timed-out exec reports failure: {r:?}"),
        Err(s) => assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}"),
    }
    assert!(
        took < Duration::from_secs(20),
        "ExecSync waited {took:?} for a 1 s timeout"
    );
    // The container is unharmed and the killed process is gone.
    let ps = env.exec_ok(&id, &["ps", "-o", "args"]).await;
    assert!(
        !ps.contains("sleep 30"),
        "the timed-out process was killed: {ps}"
    );

    let r = env.try_exec(&id, &["/no/such/binary"], 5).await;
    match r {
        Ok(r) => assert_ne!(r.exit_code, 0, "{r:?}"),
        Err(s) => assert_ne!(s.code(), Code::Ok, "{s:?}"),
    }
    assert_code(
        env.try_exec(&id, &[], 5).await,
        Code::InvalidArgument,
        "empty ExecSync command",
    );
}

#[tokio::test]
async fn exit_codes_and_reasons() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("exits")).await;
    let (st, _) = env
        .run_to_exit(
            &pod,
            env.container_config(&pod, "seven", &["sh", "-c", "exit 7"]),
        )
        .await;
    assert_eq!((st.exit_code, st.reason.as_str()), (7, "Error"), "{st:?}");
    let (st, _) = env
        .run_to_exit(&pod, env.container_config(&pod, "ok", &["true"]))
        .await;
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (0, "Completed"),
        "{st:?}"
    );
    // A signal from inside does not end the init of a pid namespace; a child's death is
    // the shell's to report.
    let (st, log) = env
        .run_to_exit(
            &pod,
            env.container_config(
                &pod,
                "signal",
                &["sh", "-c", "sh -c 'kill -9 $$'; echo $?; exit 130"],
            ),
        )
        .await;
    assert_eq!(st.exit_code, 130, "{st:?}");
    assert_eq!(log_lines(&log, "stdout"), ["137"]);
    // No command: the image's Cmd (`sh`) runs, reads EOF from stdin and exits 0.
    let (st, _) = env
        .run_to_exit(&pod, env.container_config(&pod, "image-cmd", &[]))
        .await;
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (0, "Completed"),
        "{st:?}"
    );
    // args without command are appended to nothing: they are the argv.
    let mut cfg = env.container_config(&pod, "args", &[]);
    cfg.args = vec!["sh".into(), "-c".into(), "echo from-args; exit 4".into()];
    let (st, log) = env.run_to_exit(&pod, cfg).await;
    assert_eq!(st.exit_code, 4);
    assert_eq!(log_lines(&log, "stdout"), ["from-args"]);
}

#[tokio::test]
async fn memory_hog_is_oom_killed() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("oom")).await;
    let mut cfg = env.container_config(
        &pod,
        "hog",
        &["sh", "-c", "x=0123456789; while true; do x=\"$x$x\"; done"],
    );
    resources(&mut cfg).memory_limit_in_bytes = 8 << 20;
    let (st, _) = env.run_to_exit(&pod, cfg).await;
    assert_eq!(st.reason, "OOMKilled", "{st:?}");
    assert_eq!(st.exit_code, 137, "{st:?}");
}

#[tokio::test]
async fn log_file_format_with_partial_lines() {
    let mut env = PodEnv::start_with("[runtime]\nmax_log_line_size = 1024\n").await;
    let pod = env.run_pod(env.pod_config("logs")).await;
    // 2500 bytes on one line, a short line, a line on stderr, a last line with no newline.
    let script = "printf 'a%.0s' $(seq 2500); echo; echo short; echo oops >&2; printf tail";
    let (st, log) = env
        .run_to_exit(
            &pod,
            env.container_config(&pod, "main", &["sh", "-c", script]),
        )
        .await;
    assert_eq!(st.exit_code, 0);
    let stdout: Vec<(char, usize)> = log
        .iter()
        .filter(|r| r.stream == "stdout")
        .map(|r| (r.tag, r.text.len()))
        .collect();
    assert_eq!(
        stdout[..3],
        [('P', 1024), ('P', 1024), ('F', 452)],
        "a long line is cut at max_log_line_size into P records ending with F: {stdout:?}"
    );
    let lines = log_lines(&log, "stdout");
    assert_eq!(lines[0], "a".repeat(2500));
    assert_eq!(lines[1], "short");
    // The unterminated last line is flushed when the container exits (as a full line).
    assert_eq!(lines[2..], ["tail"], "{log:#?}");
    assert_eq!(log_lines(&log, "stderr"), ["oops"]);
    // Timestamps never go backwards.
    for w in log.windows(2) {
        assert!(w[0].time <= w[1].time, "{log:#?}");
    }
}

#[tokio::test]
async fn name_clashes_name_the_first_id() {
    let mut env = PodEnv::start().await;
    let config = env.pod_config("clash");
    let pod = env.run_pod(config.clone()).await;
    let s = assert_code(
        env.try_run_pod(config.clone()).await,
        Code::AlreadyExists,
        "same pod twice",
    );
    assert!(
        s.message().contains(&pod.id),
        "the error names the first sandbox: {s:?}"
    );

    let cfg = env.container_config(&pod, "main", &["sleep", "1000"]);
    let first = env.create(&pod, cfg.clone()).await.unwrap();
    let s = assert_code(
        env.create(&pod, cfg.clone()).await,
        Code::AlreadyExists,
        "same container twice",
    );
    assert!(
        s.message().contains(&first),
        "the error names the first container: {s:?}"
    );
    // Another attempt is another name.
    let mut next = cfg.clone();
    next.metadata.as_mut().unwrap().attempt = 1;
    next.log_path = "main/1.log".into();
    let second = env.create(&pod, next).await.expect("attempt 1");
    assert_ne!(first, second);
    // Once removed, the name is free again.
    env.remove_container(&first).await.unwrap();
    env.create(&pod, cfg)
        .await
        .expect("name free after RemoveContainer");
    env.remove_pod(&pod.id).await.unwrap();
    env.run_pod(config).await;
}

#[tokio::test]
async fn bad_requests_get_the_right_code() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("bad")).await;
    let good = env.container_config(&pod, "main", &["sleep", "1000"]);
    let unknown = "0123456789abcdef".repeat(4);

    // Sandboxes.
    let mut c = env.pod_config("nometa");
    c.metadata = None;
    assert_code(
        env.try_run_pod(c).await,
        Code::InvalidArgument,
        "pod without metadata",
    );
    let mut c = env.pod_config("noname");
    c.metadata.as_mut().unwrap().name.clear();
    assert_code(
        env.try_run_pod(c).await,
        Code::InvalidArgument,
        "pod without a name",
    );
    let mut c = env.pod_config("badhost");
    c.hostname = "bad host".into();
    assert_code(
        env.try_run_pod(c).await,
        Code::InvalidArgument,
        "invalid hostname",
    );
    let c = env.pod_config("handler");
    let r = env
        .cri
        .runtime
        .run_pod_sandbox(k8s_cri::v1::RunPodSandboxRequest {
            config: Some(c),
            runtime_handler: "no-such-handler".into(),
        })
        .await;
    assert_code(r, Code::InvalidArgument, "unknown runtime handler");
    let r = env
        .cri
        .runtime
        .run_pod_sandbox(k8s_cri::v1::RunPodSandboxRequest::default())
        .await;
    assert_code(r, Code::InvalidArgument, "RunPodSandbox without config");
    assert_code(
        env.pod_status(&unknown).await,
        Code::NotFound,
        "PodSandboxStatus of an unknown id",
    );

    // CreateContainer.
    let missing_pod = Pod {
        id: unknown.clone(),
        config: pod.config.clone(),
    };
    assert_code(
        env.create(&missing_pod, good.clone()).await,
        Code::NotFound,
        "create in a missing sandbox",
    );
    let mut c = good.clone();
    c.image.as_mut().unwrap().image = "proxrt.test/no-such-image:1".into();
    assert_code(env.create(&pod, c).await, Code::NotFound, "missing image");
    let mut c = good.clone();
    c.metadata = None;
    assert_code(
        env.create(&pod, c).await,
        Code::InvalidArgument,
        "container without metadata",
    );
    let r = env
        .cri
        .runtime
        .create_container(k8s_cri::v1::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: None,
            sandbox_config: None,
        })
        .await;
    assert_code(r, Code::InvalidArgument, "CreateContainer without config");
    let mut c = good.clone();
    c.image = None;
    assert_code(
        env.create(&pod, c).await,
        Code::InvalidArgument,
        "container without image",
    );
    let mut c = good.clone();
    c.working_dir = "relative/dir".into();
    assert_code(
        env.create(&pod, c).await,
        Code::InvalidArgument,
        "relative working_dir",
    );
    let mut c = good.clone();
    security(&mut c).capabilities = Some(k8s_cri::v1::Capability {
        add_capabilities: vec!["CAP_NO_SUCH".into()],
        ..Default::default()
    });
    assert_code(
        env.create(&pod, c).await,
        Code::InvalidArgument,
        "unknown capability",
    );
    let mut c = good.clone();
    security(&mut c).privileged = true;
    assert_code(
        env.create(&pod, c).await,
        Code::FailedPrecondition,
        "privileged container in an unprivileged pod",
    );
    let mut c = good.clone();
    security(&mut c).run_as_username = "nosuchuser".into();
    assert_code(
        env.create(&pod, c).await,
        Code::InvalidArgument,
        "unknown user",
    );
    let mut c = good.clone();
    c.envs = vec![key_value("", "x")];
    assert_code(
        env.create(&pod, c).await,
        Code::InvalidArgument,
        "env with an empty name",
    );
    let mut c = good.clone();
    c.mounts = vec![k8s_cri::v1::Mount {
        container_path: "/data".into(),
        host_path: env.daemon().dir().join("no-such-dir").display().to_string(),
        ..Default::default()
    }];
    assert_code(
        env.create(&pod, c).await,
        Code::InvalidArgument,
        "mount of a missing host path",
    );
    let mut c = good.clone();
    security(&mut c).seccomp = Some(k8s_cri::v1::SecurityProfile {
        profile_type: k8s_cri::v1::security_profile::ProfileType::Localhost as i32,
        localhost_ref: env
            .daemon()
            .dir()
            .join("no-such-profile.json")
            .display()
            .to_string(),
    });
    assert_code(
        env.create(&pod, c).await,
        Code::InvalidArgument,
        "missing seccomp profile",
    );
    // None of the refused creates holds the name.
    let id = env
        .create(&pod, good.clone())
        .await
        .expect("the name is still free");

    // Unknown ids.
    assert_code(
        env.try_status(&unknown).await,
        Code::NotFound,
        "ContainerStatus of an unknown id",
    );
    assert_code(
        env.start_container(&unknown).await,
        Code::NotFound,
        "StartContainer of an unknown id",
    );
    assert_code(
        env.try_exec(&unknown, &["true"], 5).await,
        Code::NotFound,
        "ExecSync in an unknown id",
    );
    env.stop_container(&unknown, 0)
        .await
        .expect("StopContainer of an unknown id is OK");
    env.remove_container(&unknown)
        .await
        .expect("RemoveContainer of an unknown id is OK");
    env.stop_pod(&unknown)
        .await
        .expect("StopPodSandbox of an unknown id is OK");
    env.remove_pod(&unknown)
        .await
        .expect("RemovePodSandbox of an unknown id is OK");

    // Wrong states.
    assert_code(
        env.try_exec(&id, &["true"], 5).await,
        Code::FailedPrecondition,
        "ExecSync before start",
    );
    env.start_container(&id).await.unwrap();
    assert_code(
        env.start_container(&id).await,
        Code::FailedPrecondition,
        "StartContainer twice",
    );
    env.stop_container(&id, 0).await.unwrap();
    assert_code(
        env.try_exec(&id, &["true"], 5).await,
        Code::FailedPrecondition,
        "ExecSync after exit",
    );
    assert_code(
        env.start_container(&id).await,
        Code::FailedPrecondition,
        "StartContainer after exit",
    );

    // A stopped sandbox takes no new containers.
    env.stop_pod(&pod.id).await.unwrap();
    let mut c = good.clone();
    c.metadata.as_mut().unwrap().name = "late".into();
    assert_code(
        env.create(&pod, c).await,
        Code::FailedPrecondition,
        "create in a stopped sandbox",
    );
}

/// Runs an exec that prints its own and the init's `/proc/<pid>/cgroup` while strace (not
/// proxrt) follows the container's monitor, which forks every exec, for `syscalls`;
/// checks that the exec is in the init's cgroups and returns the trace.
async fn traced_exec_in_init_cgroups(env: &mut PodEnv, id: &str, syscalls: &str) -> String {
    let monitor = env.container_info(id).await["monitorPid"]
        .as_u64()
        .expect("verbose info has the monitor's pid") as u32;
    let out = env.daemon().dir().join("strace-exec.out");
    let strace = common::Strace::attach(monitor, syscalls, &out).await;
    let seen = env
        .exec_ok(
            id,
            &[
                "sh",
                "-c",
                "cat /proc/self/cgroup; echo --; cat /proc/1/cgroup",
            ],
        )
        .await;
    let trace = strace.finish();
    // Both read from inside the container's cgroup namespace, if it has one.
    let (exec_view, init_view) = seen.split_once("--\n").expect("both cgroup files");
    assert_eq!(
        exec_view.trim(),
        init_view.trim(),
        "the exec is not in the init's cgroups"
    );
    trace
}

/// Whether this host mounts a cgroup v1 hierarchy (hybrid or legacy).
fn v1_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" - cgroup "))
}

/// A daemon that keeps the cgroup migration lock warm for `window` after a create or a
/// running pod (`[runtime] keep_cgroup_lock_warm_ms`).
async fn keeping_the_lock_warm(window: Duration) -> PodEnv {
    PodEnv::start_with(&format!(
        "[runtime]\nkeep_cgroup_lock_warm_ms = {}\n",
        window.as_millis()
    ))
    .await
}

/// The `cgroup.procs` files an strace of `pid` saw it write its own pid into (the
/// warm-ups of backend/host/migration.rs).
fn own_cgroup_procs_writes(trace: &str, pid: u32) -> Vec<String> {
    common::cgroup_writes(trace)
        .into_iter()
        .filter(|(file, data)| *data == pid.to_string() && file.ends_with("/cgroup.procs"))
        .map(|(file, _)| file)
        .collect()
}

/// A create moves a process into the container's cgroup, which waits for an RCU grace
/// period when the kernel's migration lock is cold; the daemon takes that lock first, by
/// writing its own pid into its own cgroup (backend/host/migration.rs), and keeps taking
/// it for `keep_cgroup_lock_warm_ms` after the create began. strace (not proxrt) sees
/// those writes, more than one while the window lasts and none after, and the daemon is
/// still where it was. An exec joins the v1 hierarchies through `tasks` ("0": the child
/// itself) and starts in its v2 cgroup, neither of which takes the lock: no warm-up for
/// it, and no write into a v1 `cgroup.procs` (the v2 side:
/// `the_lifecycle_on_a_pure_cgroup_v2_host`).
#[tokio::test]
async fn a_create_warms_the_cgroup_lock_for_a_while_and_an_exec_joins_v1_without_it() {
    let window = Duration::from_millis(400);
    let mut env = keeping_the_lock_warm(window).await;
    let pid = env.daemon().pid().expect("daemon running");
    let before = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let pod = env.run_pod(env.pod_config("warm")).await;
    let out = env.daemon().dir().join("strace.out");
    // Past any warm-up from before (none here: a pod takes no lock) and its window.
    let settle = || tokio::time::sleep(window + Duration::from_millis(500));

    settle().await;
    let strace = common::Strace::attach(pid, "write", &out).await;
    let c = env.container_config(&pod, "warm", &["sleep", "3600"]);
    let id = env.create_start(&pod, c).await;
    tokio::time::sleep(window / 2).await;
    let create = strace.finish();
    let own = own_cgroup_procs_writes(&create, pid);
    assert!(
        own.len() >= 2,
        "create: the daemon did not write its pid into a cgroup.procs again within the \
         window: {:?}",
        common::cgroup_writes(&create)
    );
    for file in own {
        let members = std::fs::read_to_string(&file).unwrap();
        assert!(
            members.lines().any(|p| p == pid.to_string()),
            "create: {file} is not the daemon's own cgroup"
        );
    }

    settle().await;
    let daemon_out = env.daemon().dir().join("strace-daemon.out");
    let daemon_trace = common::Strace::attach(pid, "write", &daemon_out).await;
    let exec = common::cgroup_writes(&traced_exec_in_init_cgroups(&mut env, &id, "write").await);
    let daemon = common::cgroup_writes(&daemon_trace.finish());
    assert!(
        daemon.is_empty(),
        "exec: the daemon warmed the lock: {daemon:?}"
    );
    if v1_mounted() {
        assert!(
            exec.iter()
                .any(|(file, data)| file.ends_with("/tasks") && data == "0"),
            "exec: no join through tasks: {exec:?}"
        );
        let v2 = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(" - cgroup2 "))
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .collect::<Vec<_>>();
        let procs: Vec<_> = exec
            .iter()
            .filter(|(file, _)| file.ends_with("/cgroup.procs"))
            .filter(|(file, _)| !v2.iter().any(|m| file.starts_with(m.as_str())))
            .collect();
        assert!(
            procs.is_empty(),
            "exec: moved through a v1 cgroup.procs: {procs:?}"
        );
    }
    let after = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(before, after, "the daemon's cgroups changed");
}

/// The lifecycle on a pure cgroup v2 host (Proxmox VE 7 and later), seen from a mount
/// namespace whose /sys/fs/cgroup is the cgroup2 hierarchy alone: the container's init and
/// its children land in a cgroup v2 leaf under the pod's parent, an exec joins that leaf,
/// StopContainer's SIGKILL reaches every process in it (the monitor writes `cgroup.kill`
/// there) and RemoveContainer leaves no cgroup behind (PodEnv's teardown checks the
/// cgroup2 hierarchy with the others).
#[tokio::test]
async fn the_lifecycle_on_a_pure_cgroup_v2_host() {
    let mut env = PodEnv::start_in_cgroup_v2_view("").await;
    let pod = env.run_pod(env.pod_config("v2")).await;
    // pid 1 is a `sleep` (no SIGTERM handler: the stop ends in SIGKILL), with a second
    // `sleep` beside it that only a kill of the whole cgroup reaches.
    let c = env.container_config(&pod, "v2", &["sh", "-c", "sleep 3600 & exec sleep 3601"]);
    let id = env.create_start(&pod, c).await;
    let init = env.container_info(&id).await["pid"]
        .as_i64()
        .expect("verbose info has the pid");

    // Where the init is, seen from the host: its cgroup v2 path, under the pod's parent.
    let host_view = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    let path = host_view
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 membership")
        .to_owned();
    assert!(
        path.starts_with(&format!("{}/", env.cgroup_parent)),
        "the init's cgroup v2 cgroup {path} is not under the pod's parent {}",
        env.cgroup_parent
    );
    let leaf = cgroup2_mount().join(path.trim_start_matches('/'));
    let members = || -> Vec<i32> {
        std::fs::read_to_string(leaf.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while members().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the second sleep never started: {:?}",
            members()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sleepers = members();
    assert!(
        sleepers.contains(&(init as i32)),
        "{sleepers:?} without the init {init}"
    );

    // The exec is in the init's cgroup, started there by clone3(CLONE_INTO_CGROUP) rather
    // than moved through cgroup.procs (a move would wait for the kernel's migration lock):
    // strace on the monitor and its forks sees the clone and no such write.
    let trace = traced_exec_in_init_cgroups(&mut env, &id, "clone3,write").await;
    assert!(
        trace
            .lines()
            .any(|l| l.contains("clone3(") && l.contains("CLONE_INTO_CGROUP")),
        "no clone3(CLONE_INTO_CGROUP): {trace}"
    );
    let moves = common::cgroup_writes(&trace);
    assert!(
        moves.is_empty(),
        "the exec moved through a cgroup file: {moves:?}"
    );

    env.stop_container(&id, 1).await.expect("StopContainer");
    let status = env.wait_exit(&id).await;
    assert_eq!(status.exit_code, 137, "{status:?}");
    for pid in sleepers {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
        {
            assert!(
                Instant::now() < deadline,
                "pid {pid} of the container outlived its stop"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    env.remove_container(&id).await.expect("RemoveContainer");
    assert!(
        !leaf.exists(),
        "{} left after RemoveContainer",
        leaf.display()
    );
}

/// Once a pod runs, the daemon takes the cgroup migration lock for the pod's first
/// container (kubelet creates it next; the grace period passes in between): strace (not
/// proxrt) on the daemon sees its pid written into its own `cgroup.procs` after
/// RunPodSandbox, and none once the window is over.
#[tokio::test]
async fn a_running_pod_warms_the_cgroup_lock_for_its_first_container() {
    let window = Duration::from_millis(300);
    let mut env = keeping_the_lock_warm(window).await;
    let pid = env.daemon().pid().expect("daemon running");
    let out = env.daemon().dir().join("strace-pod.out");
    let strace = common::Strace::attach(pid, "write", &out).await;
    let pod = env.run_pod(env.pod_config("warm-pod")).await;
    tokio::time::sleep(window / 2).await;
    let warmed = own_cgroup_procs_writes(&strace.finish(), pid);
    assert!(
        !warmed.is_empty(),
        "the daemon did not take the lock after RunPodSandbox"
    );
    tokio::time::sleep(window + Duration::from_millis(500)).await;
    let out = env.daemon().dir().join("strace-after.out");
    let strace = common::Strace::attach(pid, "write", &out).await;
    tokio::time::sleep(window / 2).await;
    let after = own_cgroup_procs_writes(&strace.finish(), pid);
    assert!(after.is_empty(), "still warmed after the window: {after:?}");
    env.stop_pod(&pod.id).await.expect("StopPodSandbox");
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
}

/// On a pure cgroup v2 host the monitor makes the container's cgroup before libcontainer
/// runs, enabling in the cgroups above it only the controllers not enabled yet
/// (libcontainer's manager writes every one into the root's and the parent's
/// `cgroup.subtree_control` at every create, and each such write waits until the cgroups
/// removed lately have gone offline). strace (not proxrt) on the zygote's spare and its
/// forks: the pod's first container enables the root's controllers in the pod's new
/// parent, each once; the second writes no `cgroup.subtree_control` at all; both containers get
/// every controller of the root, as libcontainer's manager gives them.
#[tokio::test]
async fn on_cgroup_v2_a_create_enables_only_the_controllers_still_off() {
    let mut env = PodEnv::start_in_cgroup_v2_view("").await;
    let root = cgroup2_mount();
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap();
    let available: Vec<&str> = available.split_whitespace().collect();
    assert!(
        !available.is_empty(),
        "no controller in {}: nothing to enable",
        root.display()
    );
    let pod = env.run_pod(env.pod_config("v2-leaf")).await;
    let sleep = &["sleep", "3600"];
    let mut enabled = Vec::new();
    for name in ["first", "second"] {
        let out = env.daemon().dir().join(format!("strace-{name}.out"));
        let strace =
            common::Strace::attach_all(&zygote_and_spare(zygote_of(&env)), &[], "write", &out)
                .await;
        let id = env
            .create_start(&pod, env.container_config(&pod, name, sleep))
            .await;
        let trace = strace.finish();
        let writes: Vec<(String, String)> = trace
            .lines()
            .filter_map(|line| {
                let rest = line.split_once("write(")?.1;
                let file = rest.split_once('<')?.1.split_once('>')?.0;
                let data = rest.split_once(", \"")?.1.split_once('"')?.0;
                file.ends_with("/cgroup.subtree_control")
                    .then(|| (file.to_owned(), data.to_owned()))
            })
            .collect();
        enabled.push(writes);

        let init = env.container_info(&id).await["pid"].as_i64().unwrap();
        let membership = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
        let path = membership
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 membership");
        let leaf = root.join(path.trim_start_matches('/'));
        let got = std::fs::read_to_string(leaf.join("cgroup.controllers")).unwrap();
        assert_eq!(
            got.split_whitespace().collect::<Vec<_>>(),
            available,
            "{name}: the controllers of {}",
            leaf.display()
        );
    }
    let parent = format!("{}/cgroup.subtree_control", env.cgroup_parent);
    let first = &enabled[0];
    assert!(
        !first.is_empty(),
        "first: no controller enabled in the pod's new parent {parent}"
    );
    assert!(
        first.iter().all(|(file, _)| file.ends_with(&parent)),
        "first: written outside the pod's new parent {parent}: {first:?}"
    );
    let mut once = first.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), first.len(), "first: written twice: {first:?}");
    assert!(
        enabled[1].is_empty(),
        "second: controllers enabled again: {:?}",
        enabled[1]
    );
}

/// Where this (host) process sees the cgroup2 hierarchy.
fn cgroup2_mount() -> std::path::PathBuf {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split(' ').nth(4).map(std::path::PathBuf::from))?
        })
        .expect("a cgroup2 mount")
}

/// The host's mount table grows by two lines per pod; the daemon must not read it for
/// each pod or container (removals find mounts by walking, the cgroup lock's warm-up
/// remembers where the daemon's cgroups are mounted). strace (not proxrt) watches the
/// daemon's own threads through a whole pod lifecycle after a first one.
#[tokio::test]
async fn a_pod_lifecycle_does_not_read_the_mount_table_in_the_daemon() {
    let mut env = PodEnv::start().await;
    let first = env.run_pod(env.pod_config("first")).await;
    let c = env.container_config(&first, "first", &["sleep", "3600"]);
    let warm = env.create_start(&first, c).await;
    env.exec_ok(&warm, &["true"]).await;

    let pid = env.daemon().pid().expect("daemon running");
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let out = env.daemon().dir().join("strace-mountinfo.out");
    let strace = common::Strace::attach(pid, "open,openat,openat2", &out).await;
    let pod = env.run_pod(env.pod_config("second")).await;
    let c = env.container_config(&pod, "second", &["sleep", "3600"]);
    let id = env.create_start(&pod, c).await;
    env.exec_ok(&id, &["true"]).await;
    env.stop_container(&id, 0).await.expect("StopContainer");
    env.remove_container(&id).await.expect("RemoveContainer");
    env.stop_pod(&pod.id).await.expect("StopPodSandbox");
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    let trace = strace.finish();

    assert!(
        trace.lines().any(|l| l.contains("/containers/")),
        "strace saw none of the daemon's opens: {trace}"
    );
    let reads: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("mountinfo"))
        .filter(|l| {
            let tid = l.split_whitespace().next().unwrap_or_default();
            threads.iter().any(|t| t == tid)
        })
        .collect();
    assert!(
        reads.is_empty(),
        "the daemon read the mount table: {reads:#?}"
    );
}

/// An exec joins the init's cgroups; where their hierarchies are mounted comes from what
/// the zygote read of the mount table at its start (which grows with every pod on the
/// host), not from a read per exec. strace on the container's monitor and what it forks
/// (not proxrt) sees no read of the mount table at the container's first exec, whose
/// process still lands in the init's cgroups.
#[tokio::test]
async fn a_containers_execs_do_not_read_the_mount_table() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("execs")).await;
    let c = env.container_config(&pod, "execs", &["sleep", "3600"]);
    let id = env.create_start(&pod, c).await;
    let trace = traced_exec_in_init_cgroups(&mut env, &id, "open,openat,openat2").await;

    assert!(
        trace
            .lines()
            .any(|l| l.contains("/cgroup.procs\"") || l.contains("/tasks\"")),
        "strace did not see the exec open its cgroups: {trace}"
    );
    let reads: Vec<&str> = trace.lines().filter(|l| l.contains("mountinfo")).collect();
    assert!(
        reads.is_empty(),
        "the exec read the mount table: {reads:#?}"
    );
}

/// A bind of `source` at `container_path`, as kubelet asks for a hostPath volume.
fn volume(source: &std::path::Path, container_path: &str) -> k8s_cri::v1::Mount {
    k8s_cri::v1::Mount {
        container_path: container_path.into(),
        host_path: source.display().to_string(),
        ..Default::default()
    }
}

/// Containers are created in a copy of the zygote's create template
/// (monitor/create_template.rs), which leaves out the mounts other software keeps on the
/// host (here tmpfs mounts made before the daemon started, as kubelet's volumes or other
/// runtimes' rootfs are): strace (not proxrt) sees libcontainer read the mount table during
/// a create, and none of them is in it, nor the pods dir, nor another pod's mounts. What a
/// spec names is cloned from the host's namespace: a volume with such a mount below it
/// shows it, a volume mounted after the template was made (named through a symlink) shows
/// its content, a volume of the host's root shows every mount below it. A volume inside a
/// mount the template left out is created in a copy of the host's namespace instead. The
/// metrics count each way.
#[tokio::test]
async fn containers_are_created_without_the_hosts_other_mounts() {
    let dir = common::temp_dir("proxrt-foreign-");
    let foreign = dir.path().join("foreign");
    let mut mounts = common::HostMounts::default();
    for i in 0..3 {
        mounts.tmpfs(&foreign.join(i.to_string()));
    }
    std::fs::create_dir(foreign.join("0/data")).unwrap();
    std::fs::write(foreign.join("0/data/mark"), "inside\n").unwrap();
    let vol = dir.path().join("vol");
    mounts.tmpfs(&vol.join("below"));
    std::fs::write(vol.join("below/mark"), "below\n").unwrap();

    let mut env = PodEnv::start_with("[metrics]\naddress = \"127.0.0.1:0\"\n").await;
    let pod = env.run_pod(env.pod_config("foreign")).await;
    let other = env.run_pod(env.pod_config("foreign-other")).await;
    let sleep = &["sleep", "3600"];
    // The first create makes the template.
    env.create_start(&other, env.container_config(&other, "first", sleep))
        .await;

    let zygote = zygote_of(&env);
    let out = env.daemon().dir().join("strace-view.out");
    // The next create is the zygote's spare's.
    let strace =
        common::Strace::attach_all(&zygote_and_spare(zygote), &["-s", "1048576"], "read", &out)
            .await;
    let mut c = env.container_config(&pod, "volumes", sleep);
    c.mounts = vec![volume(&vol, "/vol")];
    let id = env.create_start(&pod, c).await;
    let trace = strace.finish();
    let tables: Vec<&str> = trace.lines().filter(|l| l.contains("mountinfo>")).collect();
    assert!(
        tables.iter().any(|l| l.contains("/sys/fs/cgroup")),
        "strace saw no read of the mount table in the create: {trace}"
    );
    // The pods dir's own mount and the other pod's mounts are not there; this pod's
    // files are (cloned: the spec names them).
    let pods_dir = env.daemon().run_dir.join("s");
    let other_pod = pods_dir.join(&other.id[..16]);
    for table in &tables {
        // read(<fd>, "<the lines>"..., <size>) = <n>
        let text = table
            .split_once('"')
            .and_then(|(_, rest)| rest.rsplit_once('"'))
            .map_or("", |(text, _)| text);
        let points: Vec<&str> = text
            .split("\\n")
            .filter_map(|l| l.split(' ').nth(4))
            .collect();
        let under = |dir: &std::path::Path| {
            let dir = dir.to_str().unwrap().to_owned();
            points
                .iter()
                .any(|p| *p == dir || p.starts_with(&format!("{dir}/")))
        };
        assert!(
            !under(&foreign),
            "{foreign:?} in the create's mount table: {points:#?}"
        );
        assert!(
            !under(&other_pod),
            "{other_pod:?} in the create's mount table: {points:#?}"
        );
        assert!(
            !points.contains(&pods_dir.to_str().unwrap()),
            "the pods dir in the create's mount table: {points:#?}"
        );
    }
    assert_eq!(
        env.exec_ok(&id, &["cat", "/vol/below/mark"]).await,
        "below\n"
    );

    let late = dir.path().join("late");
    mounts.tmpfs(&late);
    std::fs::write(late.join("mark"), "late\n").unwrap();
    // Named through a symlink, as a hostPath may be.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&late, &link).unwrap();
    let mut c = env.container_config(&pod, "late", sleep);
    c.mounts = vec![volume(&link, "/late")];
    let id = env.create_start(&pod, c).await;
    assert_eq!(env.exec_ok(&id, &["cat", "/late/mark"]).await, "late\n");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());

    let mut c = env.container_config(&pod, "inside", sleep);
    c.mounts = vec![volume(&foreign.join("0/data"), "/data")];
    let id = env.create_start(&pod, c).await;
    assert_eq!(env.exec_ok(&id, &["cat", "/data/mark"]).await, "inside\n");

    // The host's root, with what is mounted anywhere below it (node-exporter's hostPath).
    std::fs::write(foreign.join("1/mark"), "host\n").unwrap();
    let mut c = env.container_config(&pod, "root", sleep);
    c.mounts = vec![k8s_cri::v1::Mount {
        readonly: true,
        ..volume(std::path::Path::new("/"), "/host")
    }];
    let id = env.create_start(&pod, c).await;
    let seen = foreign.join("1/mark");
    let seen = format!("/host{}", seen.display());
    assert_eq!(env.exec_ok(&id, &["cat", &seen]).await, "host\n");

    assert_eq!(creates_by_view(&env), [4.0, 1.0], "(template, copy)");
}

/// How many containers the daemon created in each kind of mount namespace, from its
/// metrics: (`template`, `copy`).
/// (template, copy) creates.
fn creates_by_view(env: &PodEnv) -> Vec<f64> {
    common::metrics::counts(
        env.daemon(),
        "proxrt_container_creates_by_view_total",
        "view",
        &["template", "copy"],
    )
}

/// The daemon's zygote, found among its children by name.
fn zygote_of(env: &PodEnv) -> i32 {
    let daemon = env.daemon().pid().expect("daemon running") as i32;
    children_of(daemon)
        .into_iter()
        .find(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default()
                == "proxrt-zygote\n"
        })
        .expect("the daemon's zygote")
}

/// The mount namespaces `pid` holds open (`mnt:[…]` fds).
fn mount_namespaces_held(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.display().to_string())
        .filter(|l| l.starts_with("mnt:"))
        .collect()
}

/// The zygote holds the create template only while creates come: with
/// `create_template_idle_seconds = 1` the namespace goes a second after a create (the
/// zygote keeps only the pod holders' one); the next pod makes it again, before its
/// containers' creates, which use it; with `create_template = false` every create copies
/// the host's namespace.
#[tokio::test]
async fn the_create_template_goes_when_idle_and_can_be_switched_off() {
    let metrics = "[metrics]\naddress = \"127.0.0.1:0\"\n";
    let mut env = PodEnv::start_with(&format!(
        "[runtime]\ncreate_template_idle_seconds = 1\n{metrics}"
    ))
    .await;
    let first = env.run_pod(env.pod_config("idle")).await;
    let zygote = zygote_of(&env);
    let holders = mount_namespaces_held(zygote);
    assert_eq!(holders.len(), 1, "the holders' namespace only: {holders:?}");
    let sleep = &["sleep", "3600"];
    let wait_for = |want: usize, what: &str| {
        let what = what.to_owned();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let held = mount_namespaces_held(zygote);
                if held.len() == want {
                    return held;
                }
                assert!(Instant::now() < deadline, "{what}: {held:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    env.create_start(&first, env.container_config(&first, "first", sleep))
        .await;
    let held = mount_namespaces_held(zygote);
    assert_eq!(held.len(), 2, "the template and the holders': {held:?}");
    wait_for(1, "the template was kept").await;

    let again = env.run_pod(env.pod_config("again")).await;
    let made = wait_for(2, "no template made for the pod's containers").await;
    env.create_start(&again, env.container_config(&again, "again", sleep))
        .await;
    assert_eq!(
        mount_namespaces_held(zygote),
        made,
        "the create made a template of its own"
    );
    wait_for(1, "the template was kept").await;
    assert_eq!(creates_by_view(&env), [2.0, 0.0], "(template, copy)");
    drop(env);

    let mut env =
        PodEnv::start_with(&format!("[runtime]\ncreate_template = false\n{metrics}")).await;
    let pod = env.run_pod(env.pod_config("off")).await;
    env.create_start(&pod, env.container_config(&pod, "off", sleep))
        .await;
    assert_eq!(mount_namespaces_held(zygote_of(&env)).len(), 1);
    assert_eq!(creates_by_view(&env), [0.0, 1.0], "(template, copy)");
}

/// (spare, fork) monitors.
fn monitors_by_origin(env: &PodEnv) -> Vec<f64> {
    common::metrics::counts(
        env.daemon(),
        "proxrt_container_monitors_by_origin_total",
        "from",
        &["spare", "fork"],
    )
}

async fn wait_for_spare(zygote: i32, not: Option<i32>) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = spare_monitor_of(zygote).filter(|p| Some(*p) != not) {
            return pid;
        }
        assert!(Instant::now() < deadline, "no new spare monitor");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The zygote forks the child of its next request ahead (its spare, monitor/spare.rs):
/// from the start and after each request. A pod's setup process is the spare (it exits
/// once the pod is made), so is each container's monitor (and serves its container); a
/// spare killed before a create is replaced by a fork for it; a spare goes with its
/// daemon.
#[tokio::test]
async fn the_zygotes_next_child_is_forked_ahead_and_goes_with_the_daemon() {
    let mut env = PodEnv::start_with("[metrics]\naddress = \"127.0.0.1:0\"\n").await;
    let zygote = zygote_of(&env);
    let first_spare = wait_for_spare(zygote, None).await;
    let pod = env.run_pod(env.pod_config("spare")).await;
    let spare = wait_for_spare(zygote, Some(first_spare)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_dead(first_spare) {
        assert!(Instant::now() < deadline, "the pod's setup stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sleep = &["sleep", "3600"];

    let first = env
        .create_start(&pod, env.container_config(&pod, "first", sleep))
        .await;
    assert_eq!(monitors_by_origin(&env), [1.0, 0.0], "(spare, fork)");
    assert_eq!(
        comm(spare),
        "proxrt-monitor",
        "the spare is the monitor now"
    );
    assert_eq!(
        env.exec_ok(&first, &["echo", "served"]).await.trim(),
        "served"
    );
    // The container's own mount namespace only: the one its create ran in is let go once
    // the create is reported; the container's is held until the monitor exits.
    let containers = env
        .exec_ok(&first, &["readlink", "/proc/self/ns/mnt"])
        .await;
    assert_eq!(
        mount_namespaces_held(spare),
        vec![containers.trim().to_owned()],
    );

    let killed = wait_for_spare(zygote, Some(spare)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    while !is_dead(killed) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = env
        .create_start(&pod, env.container_config(&pod, "second", sleep))
        .await;
    assert_eq!(monitors_by_origin(&env), [1.0, 1.0], "(spare, fork)");
    assert_eq!(
        env.exec_ok(&second, &["echo", "served"]).await.trim(),
        "served"
    );

    let last = wait_for_spare(zygote, Some(killed)).await;
    drop(env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_dead(last) {
        assert!(Instant::now() < deadline, "the spare outlived its daemon");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The daemon makes its pods dir a mount of its own, and each container is created in a
/// mount namespace without it, its pod's /dev/shm and net namespace carried over
/// (monitor/container/view.rs): two containers of one pod share that /dev/shm and the
/// pod's network, a container of another pod has neither, and every monitor serves its
/// container from the daemon's mount namespace, with the host's root.
#[tokio::test]
async fn containers_are_created_with_their_pods_mounts_only() {
    let mut env = PodEnv::start().await;
    let pods_dir = env.daemon().run_dir.join("s");
    let pods_dir = pods_dir.to_str().unwrap();
    assert_eq!(common::mounts_under(pods_dir), vec![pods_dir.to_string()]);
    let pod = env.run_pod(env.pod_config("shm")).await;
    let other = env.run_pod(env.pod_config("shm-other")).await;
    let sleep = &["sleep", "3600"];
    let one = env
        .create_start(&pod, env.container_config(&pod, "one", sleep))
        .await;
    env.exec_ok(&one, &["sh", "-c", "echo shared > /dev/shm/mark"])
        .await;
    let two = env
        .create_start(&pod, env.container_config(&pod, "two", sleep))
        .await;
    let three = env
        .create_start(&other, env.container_config(&other, "three", sleep))
        .await;

    assert_eq!(
        env.exec_ok(&two, &["cat", "/dev/shm/mark"]).await,
        "shared\n"
    );
    // The pod's tmpfs itself, not the directory it is mounted on.
    let shm = std::path::Path::new(pods_dir)
        .join(&pod.id[..16])
        .join("shm");
    let dev = std::os::linux::fs::MetadataExt::st_dev(&std::fs::metadata(&shm).unwrap());
    let seen = env.exec_ok(&one, &["stat", "-c", "%d", "/dev/shm"]).await;
    assert_eq!(
        seen.trim(),
        dev.to_string(),
        "/dev/shm is not {}",
        shm.display()
    );
    let net = ["readlink", "/proc/self/ns/net"];
    assert_eq!(env.exec_ok(&one, &net).await, env.exec_ok(&two, &net).await);
    assert_ne!(
        env.exec_ok(&one, &net).await,
        env.exec_ok(&three, &net).await
    );
    let r = env
        .try_exec(&three, &["cat", "/dev/shm/mark"], 10)
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0, "another pod's /dev/shm");

    let daemon = env.daemon().pid().unwrap();
    let host = std::fs::read_link(format!("/proc/{daemon}/ns/mnt")).unwrap();
    for id in [&one, &two, &three] {
        let monitor = env.container_info(id).await["monitorPid"].as_u64().unwrap();
        let ns = std::fs::read_link(format!("/proc/{monitor}/ns/mnt")).unwrap();
        assert_eq!(
            ns, host,
            "monitor {monitor} is not in the daemon's mount namespace"
        );
        // It entered each container's root to set its binds' propagation
        // (monitor/propagation.rs) and came back out.
        for link in ["root", "cwd"] {
            assert_eq!(
                std::fs::read_link(format!("/proc/{monitor}/{link}")).unwrap(),
                std::path::Path::new("/"),
                "monitor {monitor}'s {link}"
            );
        }
    }
}
