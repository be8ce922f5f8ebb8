//! The stats RPCs against a real daemon and real cgroups: a container burning CPU and
//! holding memory shows its CPU growing and its memory, limit and writable layer; the
//! List filters select what they say; a pod shows its own cgroup, its containers and the
//! counters of its network namespace; unknown ids are NotFound.

mod common;

use std::process::Command;
use std::time::Duration;

use common::pods::*;
use k8s_cri::v1::{
    ContainerStats, ContainerStatsFilter, ContainerStatsRequest, ListContainerStatsRequest,
    ListPodSandboxStatsRequest, PodSandboxStats, PodSandboxStatsFilter, PodSandboxStatsRequest,
    PodSandboxStatusRequest,
};
use tonic::Code;

const LIMIT: i64 = 256 << 20;

async fn container_stats(env: &mut PodEnv, id: &str) -> Result<ContainerStats, tonic::Status> {
    Ok(env
        .cri
        .runtime
        .container_stats(ContainerStatsRequest {
            container_id: id.into(),
        })
        .await?
        .into_inner()
        .stats
        .expect("ContainerStats answers stats"))
}

async fn list_container_stats(env: &mut PodEnv, f: ContainerStatsFilter) -> Vec<String> {
    let mut ids: Vec<String> = env
        .cri
        .runtime
        .list_container_stats(ListContainerStatsRequest { filter: Some(f) })
        .await
        .unwrap_or_else(|s| panic!("ListContainerStats: {s:?}"))
        .into_inner()
        .stats
        .into_iter()
        .map(|s| s.attributes.unwrap().id)
        .collect();
    ids.sort();
    ids
}

async fn pod_stats(env: &mut PodEnv, id: &str) -> Result<PodSandboxStats, tonic::Status> {
    Ok(env
        .cri
        .runtime
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: id.into(),
        })
        .await?
        .into_inner()
        .stats
        .expect("PodSandboxStats answers stats"))
}

async fn list_pod_stats(env: &mut PodEnv, f: PodSandboxStatsFilter) -> Vec<String> {
    env.cri
        .runtime
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: Some(f) })
        .await
        .unwrap_or_else(|s| panic!("ListPodSandboxStats: {s:?}"))
        .into_inner()
        .stats
        .into_iter()
        .map(|s| s.attributes.unwrap().id)
        .collect()
}

fn value(v: &Option<k8s_cri::v1::UInt64Value>) -> u64 {
    v.as_ref().expect("a value").value
}

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn stats_of_a_busy_container_and_its_pod() {
    let mut env = PodEnv::start().await;
    // A cgroup of the pod's own under the test's parent, as kubelet gives every pod.
    let pod_cgroup = format!("{}/pod-stats", env.cgroup_parent);
    let mut config = env.pod_config("stats");
    config.linux.as_mut().unwrap().cgroup_parent = pod_cgroup.clone();
    config.labels.insert("app".into(), "stats".into());
    let pod = env.run_pod(config).await;
    let other = env.run_pod(env.pod_config("other")).await;

    // 16 MB held in a shell variable, 512 KiB written to the writable layer, then a busy loop.
    let mut busy = env.container_config(
        &pod,
        "busy",
        &[
            "sh",
            "-c",
            "x=$(head -c 16000000 /dev/zero | tr '\\0' a); \
             dd if=/dev/zero of=/blob bs=1024 count=512 2>/dev/null; \
             echo ready; while :; do :; done",
        ],
    );
    busy.labels.insert("role".into(), "busy".into());
    resources(&mut busy).memory_limit_in_bytes = LIMIT;
    let log = pod.log_path(&busy);
    let busy = env.create_start(&pod, busy).await;
    let mut idle = env.container_config(&pod, "idle", &["sleep", "1000"]);
    idle.labels.insert("role".into(), "idle".into());
    let idle = env.create_start(&pod, idle).await;
    let elsewhere = env.start_sleeper(&other, "elsewhere").await;
    wait_log(&log, "\"ready\"", |r| log_lines(r, "stdout") == ["ready"]).await;

    // ----- ContainerStats: CPU grows, memory is held, the limit shows, the layer is used.
    let first = container_stats(&mut env, &busy).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = container_stats(&mut env, &busy).await.unwrap();
    let attrs = s.attributes.as_ref().unwrap();
    assert_eq!(attrs.id, busy);
    assert_eq!(attrs.metadata.as_ref().unwrap().name, "busy");
    assert_eq!(attrs.labels.get("role").map(String::as_str), Some("busy"));
    let (cpu0, cpu) = (first.cpu.unwrap(), s.cpu.unwrap());
    assert!(cpu.timestamp > cpu0.timestamp, "{cpu0:?} then {cpu:?}");
    assert!(
        value(&cpu.usage_core_nano_seconds) > value(&cpu0.usage_core_nano_seconds),
        "CPU time grows under a busy loop: {cpu0:?} then {cpu:?}"
    );
    assert!(
        value(&cpu.usage_nano_cores) > 0,
        "a rate from the previous reading: {cpu:?}"
    );
    let mem = s.memory.unwrap();
    assert!(mem.timestamp > 0);
    assert!(value(&mem.working_set_bytes) > 0, "{mem:?}");
    assert!(value(&mem.usage_bytes) >= value(&mem.working_set_bytes));
    assert!(
        value(&mem.rss_bytes) > 10_000_000,
        "16 MB held in a variable: {mem:?}"
    );
    assert!(value(&mem.page_faults) > 0, "{mem:?}");
    let available = value(&mem.available_bytes);
    assert!(
        available > 0 && available < LIMIT as u64,
        "limit less working set: {mem:?}"
    );
    let layer = s.writable_layer.clone().unwrap();
    assert!(
        value(&layer.used_bytes) >= 512 * 1024,
        "the 512 KiB file: {layer:?}"
    );
    assert!(value(&layer.inodes_used) >= 1, "{layer:?}");
    assert!(layer.timestamp > 0);
    // Without a limit there is nothing available to report.
    let idle_stats = container_stats(&mut env, &idle).await.unwrap();
    assert!(idle_stats.cpu.is_some(), "{idle_stats:?}");
    assert!(idle_stats.memory.unwrap().available_bytes.is_none());

    // ----- ListContainerStats filters.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        list_container_stats(&mut env, Default::default()).await,
        sorted(vec![busy.clone(), idle.clone(), elsewhere.clone()])
    );
    let cases = [
        (
            "id prefix",
            ContainerStatsFilter {
                id: busy[..12].into(),
                ..Default::default()
            },
            vec![busy.clone()],
        ),
        (
            "pod",
            ContainerStatsFilter {
                pod_sandbox_id: pod.id.clone(),
                ..Default::default()
            },
            sorted(vec![busy.clone(), idle.clone()]),
        ),
        (
            "pod id prefix",
            ContainerStatsFilter {
                pod_sandbox_id: other.id[..12].into(),
                ..Default::default()
            },
            vec![elsewhere.clone()],
        ),
        (
            "label",
            ContainerStatsFilter {
                label_selector: [("role".to_string(), "idle".to_string())].into(),
                ..Default::default()
            },
            vec![idle.clone()],
        ),
        (
            "pod and label",
            ContainerStatsFilter {
                pod_sandbox_id: other.id.clone(),
                label_selector: [("role".to_string(), "idle".to_string())].into(),
                ..Default::default()
            },
            vec![],
        ),
        (
            "unknown pod",
            ContainerStatsFilter {
                pod_sandbox_id: "f".repeat(64),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (what, filter, want) in cases {
        assert_eq!(list_container_stats(&mut env, filter).await, want, "{what}");
    }

    // ----- PodSandboxStats: the pod's own cgroup, its containers, its network namespace.
    let status = env
        .cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    let holder = info["pid"].as_i64().expect("the pod's holder pid");
    // An eth0 in the pod's namespace (a veth, as CNI would make), with traffic sent out of it.
    sh(&format!(
        "nsenter -t {holder} -n sh -c 'ip link add eth0 type veth peer name peer0 && \
         ip addr add 10.254.77.1/24 dev eth0 && ip link set peer0 up && ip link set eth0 up && \
         sleep 1; ping -c 2 -W 1 10.254.77.2 >/dev/null; true'"
    ));

    let p = pod_stats(&mut env, &pod.id).await.unwrap();
    assert_eq!(p.attributes.as_ref().unwrap().id, pod.id);
    assert_eq!(
        p.attributes
            .as_ref()
            .unwrap()
            .labels
            .get("app")
            .map(String::as_str),
        Some("stats")
    );
    let linux = p.linux.unwrap();
    let pod_cpu = value(&linux.cpu.as_ref().unwrap().usage_core_nano_seconds);
    assert!(
        pod_cpu >= value(&cpu.usage_core_nano_seconds),
        "the pod's cgroup holds the busy container: pod {pod_cpu}, container {cpu:?}"
    );
    let pod_mem = linux.memory.unwrap();
    assert!(
        value(&pod_mem.working_set_bytes) > 0 && value(&pod_mem.rss_bytes) > 10_000_000,
        "{pod_mem:?}"
    );
    let processes = value(&linux.process.unwrap().process_count);
    assert!(processes >= 2, "sh and sleep at least: {processes}");
    let mut in_pod: Vec<String> = linux
        .containers
        .iter()
        .map(|c| c.attributes.as_ref().unwrap().id.clone())
        .collect();
    in_pod.sort();
    assert_eq!(in_pod, sorted(vec![busy.clone(), idle.clone()]));
    let net = linux.network.unwrap();
    assert!(net.timestamp > 0);
    let eth0 = net
        .default_interface
        .expect("eth0 is the default interface");
    assert_eq!(eth0.name, "eth0");
    assert!(value(&eth0.tx_bytes) > 0, "ARP and ping went out: {eth0:?}");
    let names: Vec<&str> = net.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["peer0"], "loopback is left out");

    // ----- ListPodSandboxStats filters.
    assert_eq!(list_pod_stats(&mut env, Default::default()).await.len(), 2);
    let by_label = PodSandboxStatsFilter {
        label_selector: [("app".to_string(), "stats".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(list_pod_stats(&mut env, by_label).await, [pod.id.as_str()]);
    let by_id = PodSandboxStatsFilter {
        id: other.id[..12].into(),
        ..Default::default()
    };
    assert_eq!(list_pod_stats(&mut env, by_id).await, [other.id.as_str()]);
    let nothing = PodSandboxStatsFilter {
        id: pod.id.clone(),
        label_selector: [("app".to_string(), "other".to_string())].into(),
    };
    assert!(list_pod_stats(&mut env, nothing).await.is_empty());

    // ----- An exited container has no cgroup figures, its writable layer is still there.
    env.stop_container(&busy, 0).await.unwrap();
    // The monitor deletes the container's cgroup just after recording the exit.
    let deadline = std::time::Instant::now() + SETTLE_TIMEOUT;
    let s = loop {
        let s = container_stats(&mut env, &busy).await.unwrap();
        if s.cpu.is_none() || std::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(s.cpu.is_none() && s.memory.is_none(), "{s:?}");
    assert!(value(&s.writable_layer.unwrap().used_bytes) >= 512 * 1024);

    // ----- Unknown and missing ids.
    let unknown = "0123456789abcdef".repeat(4);
    let e = container_stats(&mut env, &unknown).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = pod_stats(&mut env, &unknown).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = container_stats(&mut env, "").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    env.remove_pod(&pod.id).await.unwrap();
    env.remove_pod(&other.id).await.unwrap();
    // kubelet removes a pod's cgroup once the pod is gone; here the test does.
    remove_cgroup_tree(&pod_cgroup);
}

/// ListContainerStats and ListPodSandboxStats with 100 running containers (10 pods of
/// 10), each call timed from the client; prints median, p90, p99 and max. Measures,
/// asserts only that every container is answered:
/// `cargo nextest run --test stats --run-ignored only -E 'test(bench_)' --no-capture`
/// (`PROXRT_BENCH_ROUNDS` calls, default 200).
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_list_stats_with_100_containers() {
    use proxrt::client::bench_report::Samples;
    let rounds: usize = std::env::var("PROXRT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut env = PodEnv::start().await;
    let mut pods = Vec::new();
    for p in 0..10 {
        let pod = env
            .run_pod(env.pod_config(&format!("bench-stats-{p}")))
            .await;
        for c in 0..10 {
            let cfg = env.container_config(&pod, &format!("c{c}"), &["sleep", "3600"]);
            env.create_start(&pod, cfg).await;
        }
        pods.push(pod);
    }
    let (mut containers, mut sandboxes) = (Samples::default(), Samples::default());
    for i in 0..=rounds {
        let start = std::time::Instant::now();
        let n = env
            .cri
            .runtime
            .list_container_stats(ListContainerStatsRequest { filter: None })
            .await
            .expect("ListContainerStats")
            .into_inner()
            .stats
            .len();
        let took = start.elapsed();
        assert_eq!(n, 100);
        let start = std::time::Instant::now();
        let m = env
            .cri
            .runtime
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
            .await
            .expect("ListPodSandboxStats")
            .into_inner()
            .stats
            .len();
        let took_pods = start.elapsed();
        assert_eq!(m, 10);
        // Call 0 warms up.
        if i > 0 {
            containers.add(took);
            sandboxes.add(took_pods);
        }
    }
    for (what, s) in [
        ("ListContainerStats, 100 containers", containers),
        ("ListPodSandboxStats, 10 pods of 10", sandboxes),
    ] {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{what}: n={} median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            s.len(),
            ms(s.median()),
            ms(s.p90()),
            ms(s.p99()),
            ms(s.percentile(100.0))
        );
    }
    for pod in pods {
        env.stop_pod(&pod.id).await.expect("StopPodSandbox");
        env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    }
}
