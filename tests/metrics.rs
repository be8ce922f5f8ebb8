//! The Prometheus endpoint as a scraper sees it: a daemon with `[metrics] address` on a
//! free loopback port, found through `proxrt info`, scraped over HTTP before and after
//! a few RPCs (a NotFound among them) and two pulls (one from a registry that is not
//! there).

mod common;

use std::process::Command;
use std::time::Duration;

use common::metrics::{get, metrics_url, sample};
use common::{output_within, proxrt_bin, pull, unique_repo, Registry, TestDaemon, TestImage};
use k8s_cri::v1::{ContainerStatusRequest, VersionRequest};

const RUNTIME: &str = "service=\"runtime.v1.RuntimeService\"";
const IMAGES: &str = "service=\"runtime.v1.ImageService\"";

#[tokio::test]
async fn rpcs_and_pulls_move_the_counters_and_histograms() {
    let registry = Registry::shared();
    let image = TestImage::new()
        .file("hello", b"counted\n")
        .push(&registry, &format!("{}:1", unique_repo("metrics")));
    let d = TestDaemon::start_with("[metrics]\naddress = \"127.0.0.1:0\"\n");
    let url = metrics_url(&d);
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"),
        "{url}"
    );

    let (status, headers, before) = get(&url);
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        headers.contains("content-type: application/openmetrics-text"),
        "{headers}"
    );
    assert!(before.contains("proxrt_build_info{version=\""), "{before}");
    assert!(before.trim_end().ends_with("# EOF"), "{before}");

    let version_count =
        format!("proxrt_grpc_request_duration_seconds_count{{{RUNTIME},method=\"Version\"}}");
    let version_ok =
        format!("proxrt_grpc_requests_handled_total{{{RUNTIME},method=\"Version\",code=\"OK\"}}");
    let not_found = format!(
        "proxrt_grpc_requests_handled_total{{{RUNTIME},method=\"ContainerStatus\",code=\"NotFound\"}}"
    );
    let version_before = sample(&before, &version_count);

    let mut cri = d.cri().await;
    for _ in 0..3 {
        cri.runtime
            .version(VersionRequest {
                version: "v1".into(),
            })
            .await
            .expect("Version");
    }
    let err = cri
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: "no-such-container".into(),
            verbose: false,
        })
        .await
        .expect_err("ContainerStatus of an unknown id");
    assert_eq!(err.code(), tonic::Code::NotFound);
    pull(&mut cri, &image.name).await.expect("pull");
    // A port nothing listens on: the pull fails (and is counted) quickly.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    pull(&mut cri, &format!("{gone}/nothing:1"))
        .await
        .expect_err("pull from a closed port");

    let (_, _, after) = get(&url);
    assert_eq!(
        sample(&after, &version_count) - version_before,
        3.0,
        "Version calls timed\n{after}"
    );
    assert!(sample(&after, &version_ok) >= 3.0, "{after}");
    assert_eq!(sample(&after, &not_found), 1.0, "{after}");
    let pull_ok =
        format!("proxrt_grpc_requests_handled_total{{{IMAGES},method=\"PullImage\",code=\"OK\"}}");
    assert_eq!(sample(&after, &pull_ok), 1.0, "{after}");
    // Every Version call falls in the +Inf bucket, and the buckets are cumulative.
    let inf = format!(
        "proxrt_grpc_request_duration_seconds_bucket{{le=\"+Inf\",{RUNTIME},method=\"Version\"}}"
    );
    assert_eq!(
        sample(&after, &inf),
        sample(&after, &version_count),
        "{after}"
    );
    assert!(
        sample(
            &after,
            &format!("proxrt_grpc_request_duration_seconds_sum{{{RUNTIME},method=\"Version\"}}")
        ) > 0.0
    );

    assert_eq!(
        sample(&after, "proxrt_image_pulls_total{outcome=\"success\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "proxrt_image_pulls_total{outcome=\"failure\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "proxrt_image_pull_duration_seconds_count{outcome=\"success\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&after, "proxrt_image_pull_downloaded_bytes_total"),
        image.size as f64,
        "config and layer downloaded: {after}"
    );
    assert_eq!(
        sample(
            &after,
            "proxrt_containers{state=\"running\",backend=\"libcontainer\"}"
        ),
        0.0
    );
    assert!(after.contains("proxrt_pods{state=\"ready\",backend=\"libcontainer\"} 0"));
    assert!(after.contains("proxrt_monitors 0"), "{after}");

    let (status, _, _) = get(&url.replace("/metrics", "/other"));
    assert!(status.contains(" 404 "), "{status}");
}

#[test]
fn metrics_are_off_by_default_and_info_says_so() {
    let d = TestDaemon::start();
    assert!(metrics_url(&d).starts_with("off"));
}

/// `proxrt serve` with `[metrics] address` set, in a temp dir: (exit code, stderr, dir).
fn serve_with_metrics_address(address: &str) -> (Option<i32>, String, tempfile::TempDir) {
    let dir = common::temp_dir("proxrt-metrics-");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nroot = \"{0}/root\"\nrun_dir = \"{0}/run\"\nsocket = \"{0}/run/s.sock\"\n[metrics]\naddress = \"{address}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = output_within(
        Command::new(proxrt_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr, dir)
}

#[test]
fn a_bad_metrics_address_stops_startup_naming_the_key() {
    let (code, stderr, _dir) = serve_with_metrics_address("localhost:9712");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("metrics.address"), "{stderr}");
}

#[test]
fn a_metrics_port_in_use_stops_startup_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (code, stderr, dir) = serve_with_metrics_address(&address);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("metrics address {address}")),
        "{stderr}"
    );
    assert!(
        !dir.path().join("run/s.sock").exists(),
        "no CRI socket is left behind"
    );
    let mounts = common::mounts_under(&dir.path().display().to_string());
    for m in &mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    assert_eq!(mounts, Vec::<String>::new(), "no mount is left behind");
}
