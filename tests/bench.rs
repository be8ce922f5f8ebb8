//! `proxrt bench` itself, the real binary against real daemons: the counts it reports,
//! its JSON schema, two endpoints interleaved with ratios, and that it removes what it
//! made — at the end, and after Ctrl-C (SIGINT) in the middle of a run. No timing is
//! asserted: only that times were taken.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use k8s_cri::v1::{ListContainersRequest, ListPodSandboxRequest};
use serde_json::Value;

const BUSYBOX: &str = "docker.io/library/busybox:latest";
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// The rows every pods run reports.
const POD_OPS: [&str; 11] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "pod+container to running",
    "ContainerStatus",
    "ListContainers",
    "ExecSync",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];

fn bench(endpoints: &[String], args: &[&str]) -> Output {
    let mut cmd = Command::new(proxrt_bin());
    for e in endpoints {
        cmd.arg("--endpoint").arg(e);
    }
    output_within(cmd.arg("bench").args(args), CALL_TIMEOUT)
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

fn with_busybox() -> TestDaemon {
    busybox_into(TestDaemon::start())
}

fn busybox_into(d: TestDaemon) -> TestDaemon {
    let out = output_within(
        Command::new(proxrt_bin())
            .arg("--endpoint")
            .arg(d.endpoint())
            .args(["image", "import"])
            .arg(busybox_layout()),
        CALL_TIMEOUT,
    );
    ok(out, "image import");
    d
}

async fn assert_nothing_left(d: &TestDaemon, context: &str) {
    let mut cri = d.cri().await;
    let pods = cri
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    let containers = cri
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    assert!(
        pods.is_empty() && containers.is_empty(),
        "{context}: bench left {} pod(s) and {} container(s): {pods:?}",
        pods.len(),
        containers.len()
    );
}

/// Checks one endpoint's entry of the JSON report: every op with `n` samples and the
/// statistics in order.
fn check_endpoint(e: &Value, ops: &[&str], n: u64) {
    assert!(
        e["endpoint"]
            .as_str()
            .is_some_and(|s| s.starts_with("unix://")),
        "{e}"
    );
    assert!(
        e["runtime"]
            .as_str()
            .is_some_and(|s| s.starts_with("proxrt ")),
        "runtime from Version: {e}"
    );
    assert_eq!(e["units"], n, "{e}");
    assert!(e["throughput"].as_f64().is_some_and(|t| t > 0.0), "{e}");
    assert!(e["wall_secs"].as_f64().is_some_and(|t| t > 0.0), "{e}");
    let listed: Vec<&str> = e["ops"]
        .as_array()
        .expect("ops")
        .iter()
        .map(|o| o["op"].as_str().expect("op name"))
        .collect();
    assert_eq!(listed, ops, "ops in the order they were first timed");
    for op in e["ops"].as_array().expect("ops") {
        assert_eq!(op["n"], n, "{op}");
        let stat = |k: &str| op[k].as_f64().unwrap_or_else(|| panic!("{k} in {op}"));
        assert!(stat("min") > 0.0, "{op}");
        assert!(
            stat("min") <= stat("median")
                && stat("median") <= stat("p90")
                && stat("p90") <= stat("p99")
                && stat("p99") <= stat("max"),
            "{op}"
        );
        assert!(
            stat("mean") >= stat("min") && stat("mean") <= stat("max"),
            "{op}"
        );
    }
}

#[tokio::test]
async fn pods_counts_json_file_and_cleanup() {
    let d = with_busybox();
    let json = d.dir().join("bench.json");
    let table = ok(
        bench(
            &[d.endpoint()],
            &[
                "pods",
                "--image",
                BUSYBOX,
                "--pods",
                "3",
                "--parallel",
                "2",
                "--live",
                "1",
                "--json",
                json.to_str().unwrap(),
            ],
        ),
        "bench pods",
    );
    assert!(
        table.contains("throughput:") && table.contains("RunPodSandbox"),
        "a table is printed beside the JSON file:\n{table}"
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("JSON file")).expect("valid JSON");
    assert_eq!(report["workload"], "pods");
    assert_eq!(report["pods"], 3);
    assert_eq!(report["parallel"], 2);
    assert_eq!(report["live"], 1);
    assert_eq!(report["security"], "none");
    assert_eq!(report["unit"], "ms");
    assert_eq!(report["throughput_unit"], "pods/s");
    assert!(report.get("ratios").is_none(), "one endpoint: no ratios");
    let endpoints = report["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    check_endpoint(&endpoints[0], &POD_OPS, 3);
    // The live container was removed too.
    assert_nothing_left(&d, "after a run").await;
}

/// `--runtime-handler` puts every pod of the run, the live and warm-up ones too, on that handler's
/// backend (read from the daemon's log, not from the bench), and the report says which; a
/// handler the runtime does not know fails the run with the runtime's own error and
/// leaves nothing.
#[tokio::test]
async fn a_runtime_handler_puts_the_pods_on_its_backend() {
    let Some(extra) = common::pods::backend_config("crun") else {
        return;
    };
    let d = busybox_into(TestDaemon::start_with(&extra));
    let out = ok(
        bench(
            &[d.endpoint()],
            &[
                "--json",
                "-",
                "pods",
                "--image",
                BUSYBOX,
                "-n",
                "2",
                "--live",
                "1",
                "--host-network",
                "--runtime-handler",
                "crun",
            ],
        ),
        "bench pods on crun",
    );
    let report: Value = serde_json::from_str(&out).expect("only JSON on stdout with --json -");
    assert_eq!(report["runtime_handler"], "crun");
    check_endpoint(&report["endpoints"][0], &POD_OPS, 2);
    let log = d.log();
    let on = |backend: &str, what: &str| {
        log.lines()
            .filter(|l| l.contains(what) && l.contains(&format!("backend=\"{backend}\"")))
            .count()
    };
    // Two timed, one live, one untimed warm-up.
    assert_eq!(on("crun", "pod sandbox ready"), 4, "{log}");
    assert_eq!(on("crun", "container created"), 4, "{log}");
    assert_eq!(on("libcontainer", "pod sandbox ready"), 0, "{log}");
    assert_nothing_left(&d, "after the crun run").await;

    let out = bench(
        &[d.endpoint()],
        &[
            "pods",
            "--image",
            BUSYBOX,
            "-n",
            "1",
            "--host-network",
            "--runtime-handler",
            "no-such-handler",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an unknown handler: {stderr}");
    assert!(stderr.contains("no-such-handler"), "{stderr}");
    assert_nothing_left(&d, "after an unknown handler").await;
}

#[tokio::test]
async fn two_endpoints_interleaved_with_ratios() {
    let a = with_busybox();
    let b = with_busybox();
    let out = ok(
        bench(
            &[a.endpoint(), b.endpoint()],
            &[
                "--json",
                "-",
                "pods",
                "--image",
                BUSYBOX,
                "-n",
                "2",
                "--host-network",
                "--security",
                "restricted",
            ],
        ),
        "bench pods on two endpoints",
    );
    let report: Value = serde_json::from_str(&out).expect("only JSON on stdout with --json -");
    assert_eq!(report["host_network"], true);
    assert_eq!(report["security"], "restricted");
    let endpoints = report["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 2);
    assert_eq!(endpoints[0]["endpoint"], a.endpoint());
    assert_eq!(endpoints[1]["endpoint"], b.endpoint());
    for e in endpoints {
        check_endpoint(e, &POD_OPS, 2);
    }
    let ratios = report["ratios"]
        .as_array()
        .expect("ratios with two endpoints");
    assert_eq!(ratios.len(), POD_OPS.len(), "{ratios:?}");
    assert!(ratios
        .iter()
        .all(|r| r["median_b_over_a"].as_f64().is_some_and(|v| v > 0.0)));
    assert_nothing_left(&a, "endpoint A").await;
    assert_nothing_left(&b, "endpoint B").await;
}

#[tokio::test]
async fn sigint_stops_the_run_and_removes_everything() {
    let d = with_busybox();
    let mut child = Command::new(proxrt_bin())
        .arg("--endpoint")
        .arg(d.endpoint())
        .args(["bench", "pods", "--image", BUSYBOX, "--pods", "100000"])
        .args(["--live", "3", "--parallel", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bench");
    // Wait until it has made pods (the live ones first), then interrupt it mid-run.
    let mut cri = d.cri().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = cri
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items;
        if pods.len() >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "bench made no pods in 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let out = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + CALL_TIMEOUT;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("bench did not end after SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("output")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "exit 130 on SIGINT: {stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_nothing_left(&d, "after SIGINT").await;
}

#[tokio::test]
async fn a_missing_image_is_refused_before_anything_is_made() {
    let d = TestDaemon::start();
    let out = bench(
        &[d.endpoint()],
        &["pods", "--image", "docker.io/library/nothere:1", "-n", "1"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not present") && stderr.contains("nothere"),
        "{stderr}"
    );
    assert_nothing_left(&d, "after a refused run").await;

    let three = vec![d.endpoint(); 3];
    let out = bench(&three, &["pods", "--image", BUSYBOX]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("one or two endpoints"),
        "{out:?}"
    );
}

#[tokio::test]
async fn images_workload_counts() {
    let registry = Registry::shared();
    let image = TestImage::new()
        .file("hello", b"bench images\n")
        .push(&registry, &format!("{}:1", unique_repo("bench")));
    let d = TestDaemon::start();
    let out = ok(
        bench(
            &[d.endpoint()],
            &["--json", "-", "images", "--image", &image.name, "-n", "3"],
        ),
        "bench images",
    );
    let report: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["workload"], "images");
    assert_eq!(report["throughput_unit"], "pulls/s");
    check_endpoint(
        &report["endpoints"][0],
        &["PullImage", "ImageStatus", "ListImages"],
        3,
    );
    let mut cri = d.cri().await;
    assert!(
        image_status(&mut cri, &image.name).await.is_some(),
        "the images workload leaves the image pulled"
    );
}
