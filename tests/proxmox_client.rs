//! The Proxmox VE API client against the real simulator binary over HTTPS on 127.0.0.1:
//! every operation, PVE's errors as typed errors, TLS modes, auth, retries only where safe,
//! failover, task waiting, and concurrent creators racing for VMIDs.

mod pve_sim;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use proxrt::proxmox::{
    Client, CreateLxc, Fingerprint, NetConfig, ProxmoxError, RootFs, Secret, TaskOutcome, TlsMode,
    Upid,
};
use pve_sim::{closed_port, PveSim, SimOptions};
use serde_json::json;
use tonic::Code;

const TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
const DEADLINE: Duration = Duration::from_secs(30);

fn guest(hostname: &str) -> CreateLxc {
    CreateLxc {
        ostemplate: TEMPLATE.into(),
        hostname: Some(hostname.into()),
        memory_mib: Some(512),
        swap_mib: Some(0),
        cores: Some(1),
        rootfs: Some(RootFs {
            storage: "local-lvm".into(),
            size_gb: 8,
        }),
        net0: Some(NetConfig::dhcp("vmbr0")),
        unprivileged: Some(true),
        nesting: Some(true),
        tags: vec!["proxrt".into(), "pod-0123".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn every_operation_on_the_happy_path() {
    let sim = PveSim::start();
    let c = sim.client();
    // A create task that outlasts the calls below, to see the create lock.
    sim.set_faults(json!({"task_ms": {"vzcreate": 4000}})).await;

    let templates = c.storage_content("local", "vztmpl").await.unwrap();
    assert!(templates.iter().any(|t| t.volid == TEMPLATE && t.size > 0));

    let vmid = c.nextid().await.unwrap();
    assert_eq!(vmid, 100);
    let upid = c
        .create_lxc(&CreateLxc {
            vmid,
            ..guest("web-1")
        })
        .await
        .unwrap();
    assert_eq!(upid.task_type, "vzcreate");
    assert_eq!(upid.id, "100");
    assert_eq!(upid.node, "pve");
    // nextid reserves nothing, but a guest being created is taken.
    assert_eq!(c.nextid().await.unwrap(), 101);
    let listed = c.list_lxc().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].vmid, 100);
    assert_eq!(listed[0].lock.as_deref(), Some("create"));
    assert_eq!(c.wait_task(&upid, DEADLINE).await.unwrap(), TaskOutcome::Ok);
    let listed = c.list_lxc().await.unwrap();
    assert_eq!(listed[0].lock, None);
    assert_eq!(listed[0].name.as_deref(), Some("web-1"));
    assert_eq!(listed[0].tags.as_deref(), Some("proxrt;pod-0123"));
    let log = c.task_log(&upid, 0, 50).await.unwrap();
    assert_eq!(log.last().map(|l| l.t.as_str()), Some("TASK OK"));

    let st = c.status_current(vmid).await.unwrap();
    assert!(!st.is_running());
    assert_eq!(st.pid, None);
    let config = c.get_config(vmid).await.unwrap();
    assert_eq!(config["hostname"], "web-1");
    assert_eq!(config["memory"], 512);
    assert_eq!(config["features"], "nesting=1");
    assert_eq!(config["rootfs"], "local-lvm:vm-100-disk-0,size=8G");
    let net0 = config["net0"].as_str().unwrap();
    assert!(net0.starts_with("name=eth0,bridge=vmbr0,ip=dhcp"), "{net0}");
    assert_eq!(c.interfaces(vmid).await.unwrap(), None);

    let start = c.start(vmid).await.unwrap();
    assert_eq!(
        c.wait_task(&start, DEADLINE).await.unwrap(),
        TaskOutcome::Ok
    );
    let st = c.status_current(vmid).await.unwrap();
    assert!(st.is_running());
    assert!(st.pid.is_some());
    let ifs = c
        .interfaces(vmid)
        .await
        .unwrap()
        .expect("interfaces of a running guest");
    let eth0 = ifs.iter().find(|i| i.name == "eth0").expect("eth0");
    assert!(
        eth0.inet.as_deref().is_some_and(|a| a.starts_with("10.")),
        "{eth0:?}"
    );

    c.set_config(vmid, &[("memory".into(), "1024".into())])
        .await
        .unwrap();
    assert_eq!(c.get_config(vmid).await.unwrap()["memory"], 1024);

    let shut = c
        .shutdown(vmid, Some(Duration::from_secs(10)), true)
        .await
        .unwrap();
    assert_eq!(shut.task_type, "vzshutdown");
    c.wait_task(&shut, DEADLINE).await.unwrap();
    assert!(!c.status_current(vmid).await.unwrap().is_running());
    let start = c.start(vmid).await.unwrap();
    c.wait_task(&start, DEADLINE).await.unwrap();
    let stop = c.stop(vmid).await.unwrap();
    c.wait_task(&stop, DEADLINE).await.unwrap();
    assert!(!c.status_current(vmid).await.unwrap().is_running());

    let destroy = c.destroy(vmid, true, false).await.unwrap();
    c.wait_task(&destroy, DEADLINE).await.unwrap();
    assert!(c.list_lxc().await.unwrap().is_empty());
    let gone = c.status_current(vmid).await.unwrap_err();
    assert_eq!(gone.grpc_code(), Code::NotFound, "{gone}");
    assert!(gone
        .to_string()
        .contains("Configuration file 'nodes/pve/lxc/100.conf' does not exist"));
    assert!(sim.guests().await.is_empty());
}

#[tokio::test]
async fn nextid_is_a_json_string_and_the_client_reads_it() {
    let sim = PveSim::start();
    let raw: serde_json::Value = sim
        .http()
        .get(sim.url("/api2/json/cluster/nextid"))
        .header("Authorization", sim.auth_header())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["data"], json!("100"));
    assert_eq!(sim.client().nextid().await.unwrap(), 100);
}

#[tokio::test]
async fn a_duplicate_vmid_is_a_typed_already_exists() {
    let sim = PveSim::start();
    let c = sim.client();
    let upid = c
        .create_lxc(&CreateLxc {
            vmid: 120,
            ..guest("a")
        })
        .await
        .unwrap();
    let e = c
        .create_lxc(&CreateLxc {
            vmid: 120,
            ..guest("b")
        })
        .await
        .unwrap_err();
    assert!(e.is_already_exists(), "{e:?}");
    assert_eq!(e.grpc_code(), Code::AlreadyExists);
    assert!(matches!(e, ProxmoxError::Server { status: 500, .. }));
    assert_eq!(e.pve_message(), Some("CT 120 already exists on node 'pve'"));
    c.wait_task(&upid, DEADLINE).await.unwrap();
    assert_eq!(sim.guests().await.len(), 1);
}

#[tokio::test]
async fn parameter_errors_carry_pves_errors_map() {
    let sim = PveSim::start();
    let c = sim.client();
    // Neither rootfs nor storage: PVE falls back to `local`, which holds no containers.
    let e = c
        .create_lxc(&CreateLxc {
            vmid: 100,
            rootfs: None,
            ..guest("a")
        })
        .await
        .unwrap_err();
    match &e {
        ProxmoxError::BadRequest {
            message, errors, ..
        } => {
            assert_eq!(message, "Parameter verification failed.");
            assert_eq!(
                errors["storage"],
                "storage 'local' does not support container directories"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.grpc_code(), Code::InvalidArgument);
    assert!(e
        .to_string()
        .contains("storage 'local' does not support container directories"));

    let upid = c
        .create_lxc(&CreateLxc {
            vmid: 100,
            ..guest("a")
        })
        .await
        .unwrap();
    c.wait_task(&upid, DEADLINE).await.unwrap();
    let e = c
        .set_config(
            100,
            &[
                ("unprivileged".into(), "true".into()),
                ("cores".into(), "0".into()),
            ],
        )
        .await
        .unwrap_err();
    match &e {
        ProxmoxError::BadRequest { errors, .. } => {
            assert_eq!(
                errors["unprivileged"],
                "type check ('boolean') failed - got 'true'"
            );
            assert_eq!(errors["cores"], "value must have a minimum value of 1");
        }
        other => panic!("{other:?}"),
    }
    // Feature flags other than nesting are root@pam's only.
    let e = c
        .set_config(100, &[("features".into(), "keyctl=1".into())])
        .await
        .unwrap_err();
    assert!(matches!(e, ProxmoxError::Forbidden { .. }), "{e:?}");
    assert_eq!(e.grpc_code(), Code::PermissionDenied);
    // An unknown template is PVE's own error.
    let e = c
        .create_lxc(&CreateLxc {
            vmid: 101,
            ostemplate: "local:vztmpl/nope.tar.zst".into(),
            ..guest("b")
        })
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("can't find file '/var/lib/vz/template/cache/nope.tar.zst'"),
        "{e}"
    );
    // Out-of-range VMIDs never leave the client.
    let e = c
        .create_lxc(&CreateLxc {
            vmid: 99,
            ..guest("c")
        })
        .await
        .unwrap_err();
    assert!(matches!(e, ProxmoxError::InvalidParam { .. }));
    assert_eq!(sim.requests_to("POST", "/nodes/pve/lxc").await, 3);
}

#[tokio::test]
async fn semantic_failures_keep_pves_messages_and_codes() {
    let sim = PveSim::start();
    let c = sim.client();
    // Unknown VMIDs differ by call, as in PVE.
    let start = c.start(4242).await.unwrap();
    let e = c.wait_task(&start, DEADLINE).await.unwrap_err();
    assert!(matches!(e, ProxmoxError::TaskFailed { .. }), "{e:?}");
    assert_eq!(e.grpc_code(), Code::NotFound);
    let e = c.stop(4242).await.unwrap_err();
    assert_eq!(e.pve_message(), Some("CT 4242 not running"));
    assert_eq!(e.grpc_code(), Code::FailedPrecondition);
    let e = c.shutdown(4242, None, false).await.unwrap_err();
    assert_eq!(e.pve_message(), Some("CT 4242 not running"));
    assert_eq!(c.interfaces(4242).await.unwrap(), None);

    let upid = c
        .create_lxc(&CreateLxc {
            vmid: 100,
            ..guest("a")
        })
        .await
        .unwrap();
    // A start issued while the create runs waits for the create lock.
    let start = c.start(100).await.unwrap();
    c.wait_task(&upid, DEADLINE).await.unwrap();
    c.wait_task(&start, DEADLINE).await.unwrap();
    let e = c.start(100).await.unwrap_err();
    assert_eq!(e.pve_message(), Some("CT 100 already running"));
    assert_eq!(e.grpc_code(), Code::FailedPrecondition);
    let e = c.destroy(100, true, false).await.unwrap_err();
    assert_eq!(
        e.pve_message(),
        Some("unable to destroy CT 100 - container is running")
    );
    assert_eq!(e.grpc_code(), Code::FailedPrecondition);
    let d = c.destroy(100, true, true).await.unwrap();
    c.wait_task(&d, DEADLINE).await.unwrap();
    assert!(sim.guests().await.is_empty());

    // A node that is not in the cluster.
    let mut o = sim.options();
    o.node = "pve2".into();
    let e = Client::new(o).unwrap().list_lxc().await.unwrap_err();
    assert_eq!(e.pve_message(), Some("no such cluster node 'pve2'"));
    assert_eq!(e.grpc_code(), Code::NotFound);
}

#[tokio::test]
async fn tls_ca_and_pinned_fingerprint_are_accepted() {
    let sim = PveSim::start();
    assert_eq!(sim.client().nextid().await.unwrap(), 100);
    let mut o = sim.options();
    let fp: Fingerprint = sim.fingerprint.to_lowercase().parse().unwrap();
    o.tls = TlsMode::Fingerprint(fp);
    assert_eq!(Client::new(o).unwrap().nextid().await.unwrap(), 100);
    let mut o = sim.options();
    o.tls = TlsMode::CaPem(std::fs::read(&sim.ca_file).unwrap());
    assert_eq!(Client::new(o).unwrap().nextid().await.unwrap(), 100);
    let mut o = sim.options();
    o.tls = TlsMode::Insecure;
    assert_eq!(Client::new(o).unwrap().nextid().await.unwrap(), 100);
}

#[tokio::test]
async fn a_pinned_fingerprint_skips_the_host_name_check_and_a_ca_does_not() {
    // The node's certificate names only "pve.example" while we connect to 127.0.0.1, as
    // when a PVE node is reached by IP.
    let sim = PveSim::with(SimOptions {
        extra_args: vec!["--leaf-name".into(), "pve.example".into()],
        ..Default::default()
    });
    let e = sim.client().nextid().await.unwrap_err();
    assert!(matches!(e, ProxmoxError::Tls { .. }), "{e:?}");
    let mut o = sim.options();
    o.tls = TlsMode::Fingerprint(sim.fingerprint.parse().unwrap());
    assert_eq!(Client::new(o).unwrap().nextid().await.unwrap(), 100);
}

#[tokio::test]
async fn a_fingerprint_mismatch_is_refused_before_any_request() {
    let sim = PveSim::start();
    let mut o = sim.options();
    o.tls = TlsMode::Fingerprint(Fingerprint([0xAB; 32]));
    let e = Client::new(o).unwrap().nextid().await.unwrap_err();
    match &e {
        ProxmoxError::FingerprintMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &Fingerprint([0xAB; 32]).to_string());
            assert_eq!(actual, &sim.fingerprint);
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("fingerprint mismatch"), "{e}");
    assert_eq!(e.grpc_code(), Code::Unavailable);
    assert!(
        sim.requests().await.is_empty(),
        "a request reached the server"
    );
}

#[tokio::test]
async fn without_a_ca_and_not_insecure_the_simulators_certificate_is_refused() {
    let sim = PveSim::start();
    let mut o = sim.options();
    o.tls = TlsMode::System;
    let e = Client::new(o).unwrap().nextid().await.unwrap_err();
    assert!(matches!(e, ProxmoxError::Tls { .. }), "{e:?}");
    assert!(sim.requests().await.is_empty());
}

#[tokio::test]
async fn a_bad_token_is_a_typed_401_that_does_not_quote_the_secret() {
    let sim = PveSim::start();
    let mut o = sim.options();
    o.secret = Secret::new("wrong-secret-5f3a9c");
    let e = Client::new(o).unwrap().list_lxc().await.unwrap_err();
    assert!(matches!(e, ProxmoxError::Unauthorized { .. }), "{e:?}");
    // No body: the message comes from the status line, as pveproxy sends it.
    assert_eq!(e.pve_message(), Some("authentication failure"));
    assert_eq!(e.grpc_code(), Code::Unauthenticated);
    for text in [
        e.to_string(),
        format!("{e:?}"),
        e.to_status().message().to_owned(),
    ] {
        assert!(!text.contains("wrong-secret-5f3a9c"), "{text}");
        assert!(!text.contains(&sim.secret), "{text}");
    }
    // 401 is not retried: one request.
    assert_eq!(sim.requests_to("GET", "/nodes/pve/lxc").await, 1);
}

#[tokio::test]
async fn reads_are_retried_after_5xx_and_resets() {
    let sim = PveSim::start();
    let c = sim.client();
    sim.set_faults(json!({"rules": [
        {"method": "GET", "path": "/cluster/nextid", "action": "status", "status": 503, "count": 2},
        {"method": "GET", "path": "/nodes/pve/lxc", "action": "reset", "count": 1}
    ]}))
    .await;
    assert_eq!(c.nextid().await.unwrap(), 100);
    assert_eq!(sim.requests_to("GET", "/cluster/nextid").await, 3);
    assert!(c.list_lxc().await.unwrap().is_empty());
    assert_eq!(sim.requests_to("GET", "/nodes/pve/lxc").await, 2);
    // A 500 is an answer, not an outage: not retried.
    let e = c.status_current(555).await.unwrap_err();
    assert_eq!(e.grpc_code(), Code::NotFound);
    assert_eq!(
        sim.requests_to("GET", "/nodes/pve/lxc/555/status/current")
            .await,
        1
    );
}

#[tokio::test]
async fn a_create_that_reached_the_server_is_never_repeated() {
    let sim = PveSim::start();
    let c = sim.client();
    // The simulator creates the guest, then drops the connection before answering.
    sim.set_faults(json!({"rules": [{"method": "POST", "path": "/nodes/pve/lxc", "action": "reset_after", "count": 1}]}))
        .await;
    let e = c
        .create_lxc(&CreateLxc {
            vmid: 100,
            ..guest("a")
        })
        .await
        .unwrap_err();
    assert!(matches!(e, ProxmoxError::Transport { .. }), "{e:?}");
    assert_eq!(e.grpc_code(), Code::Unavailable);
    assert_eq!(sim.requests_to("POST", "/nodes/pve/lxc").await, 1);
    assert_eq!(sim.guests().await.len(), 1, "the create happened once");

    // Through the helper, the VMID whose fate is unknown is reported for cleanup.
    sim.set_faults(json!({"rules": [{"method": "POST", "path": "/nodes/pve/lxc", "action": "reset_after", "count": 1}]}))
        .await;
    match c.create_with_next_vmid(&guest("b"), 5).await.unwrap_err() {
        ProxmoxError::CreateOutcomeUnknown { vmid, .. } => assert_eq!(vmid, 101),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.requests_to("POST", "/nodes/pve/lxc").await, 2);

    // A 503 on a POST is not retried either: PVE may have acted before failing.
    sim.set_faults(json!({"rules": [{"method": "POST", "path": "/nodes/pve/lxc", "action": "status", "status": 503, "count": 1}]}))
        .await;
    let e = c
        .create_lxc(&CreateLxc {
            vmid: 150,
            ..guest("c")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProxmoxError::Server { status: 503, .. }),
        "{e:?}"
    );
    assert_eq!(sim.requests_to("POST", "/nodes/pve/lxc").await, 3);
}

#[tokio::test]
async fn a_post_is_retried_when_the_connection_failed_before_sending() {
    let sim = PveSim::start();
    // A fresh client has no pooled connection: the first connect is reset by the server.
    sim.set_faults(json!({"close_next_connections": 1})).await;
    let c = sim.client();
    let upid = c
        .create_lxc(&CreateLxc {
            vmid: 100,
            ..guest("a")
        })
        .await
        .unwrap();
    c.wait_task(&upid, DEADLINE).await.unwrap();
    assert_eq!(sim.requests_to("POST", "/nodes/pve/lxc").await, 1);
    assert_eq!(sim.guests().await.len(), 1);
}

#[tokio::test]
async fn timeouts_are_typed_and_only_reads_retry_them() {
    let sim = PveSim::start();
    let mut o = sim.options();
    o.request_timeout = Duration::from_millis(1000);
    let c = Client::new(o).unwrap();
    sim.set_faults(json!({"rules": [
        {"method": "GET", "path": "/cluster/nextid", "action": "delay", "delay_ms": 5000, "count": 1},
        {"method": "POST", "path": "/nodes/pve/lxc", "action": "delay", "delay_ms": 5000, "count": 1}
    ]}))
    .await;
    assert_eq!(c.nextid().await.unwrap(), 100);
    let e = c
        .create_lxc(&CreateLxc {
            vmid: 100,
            ..guest("a")
        })
        .await
        .unwrap_err();
    assert!(matches!(e, ProxmoxError::Timeout { .. }), "{e:?}");
    assert_eq!(e.grpc_code(), Code::Unavailable);
}

#[tokio::test]
async fn failover_to_the_next_endpoint_when_the_first_refuses_connections() {
    let sim = PveSim::start();
    let mut o = sim.options();
    o.endpoints = vec![
        format!("https://127.0.0.1:{}", closed_port()),
        sim.endpoint(),
    ];
    let c = Client::new(o).unwrap();
    assert_eq!(c.nextid().await.unwrap(), 100);
    let upid = c
        .create_lxc(&CreateLxc {
            vmid: 100,
            ..guest("a")
        })
        .await
        .unwrap();
    c.wait_task(&upid, DEADLINE).await.unwrap();
    assert_eq!(sim.guests().await.len(), 1);

    // With every endpoint refusing, the error says so.
    let mut o = sim.options();
    o.endpoints = vec![format!("https://127.0.0.1:{}", closed_port())];
    let e = Client::new(o).unwrap().nextid().await.unwrap_err();
    assert!(matches!(e, ProxmoxError::Connect { .. }), "{e:?}");
    assert_eq!(e.grpc_code(), Code::Unavailable);
}

#[tokio::test]
async fn wait_task_reports_ok_warnings_failure_with_log_tail_and_deadline() {
    let sim = PveSim::start();
    let c = sim.client();
    sim.set_faults(json!({"warn_next_tasks": {"vzcreate": 1}, "fail_next_tasks": {"vzstart": 1}}))
        .await;
    let upid = c
        .create_lxc(&CreateLxc {
            vmid: 100,
            ..guest("a")
        })
        .await
        .unwrap();
    assert_eq!(
        c.wait_task(&upid, DEADLINE).await.unwrap(),
        TaskOutcome::Warnings(1)
    );

    let start = c.start(100).await.unwrap();
    match c.wait_task(&start, DEADLINE).await.unwrap_err() {
        e @ ProxmoxError::TaskFailed { .. } => {
            let ProxmoxError::TaskFailed {
                exitstatus,
                log_tail,
                ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(exitstatus, "startup for container '100' failed");
            assert_eq!(
                log_tail.last().map(String::as_str),
                Some("TASK ERROR: startup for container '100' failed")
            );
            assert!(e.to_string().contains("log tail"), "{e}");
            assert_eq!(e.grpc_code(), Code::Internal);
        }
        other => panic!("{other:?}"),
    }

    // A failed create removes its guest, as PVE's worker does: nothing is left behind.
    sim.set_faults(json!({"fail_next_tasks": {"vzcreate": 1}}))
        .await;
    let upid = c
        .create_lxc(&CreateLxc {
            vmid: 101,
            ..guest("b")
        })
        .await
        .unwrap();
    let e = c.wait_task(&upid, DEADLINE).await.unwrap_err();
    assert!(e.to_string().contains("unable to create CT 101"), "{e}");
    assert!(!sim.guests().await.iter().any(|g| g["vmid"] == 101));

    // The caller's deadline passes while the task still runs.
    sim.set_faults(json!({"task_ms": {"vzcreate": 3000}})).await;
    let upid = c
        .create_lxc(&CreateLxc {
            vmid: 102,
            ..guest("c")
        })
        .await
        .unwrap();
    let e = c
        .wait_task(&upid, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, ProxmoxError::TaskTimeout { .. }), "{e:?}");
    assert_eq!(e.grpc_code(), Code::DeadlineExceeded);
    c.wait_task(&upid, DEADLINE).await.unwrap();

    let bad: Result<Upid, _> = "UPID:pve:nope".parse();
    assert!(bad.is_err());
}

#[tokio::test]
async fn a_shutdown_the_guest_ignores_fails_or_force_stops() {
    let sim = PveSim::start();
    let c = sim.client();
    let upid = c
        .create_lxc(&CreateLxc {
            vmid: 100,
            ..guest("a")
        })
        .await
        .unwrap();
    c.wait_task(&upid, DEADLINE).await.unwrap();
    let start = c.start(100).await.unwrap();
    c.wait_task(&start, DEADLINE).await.unwrap();
    sim.set_faults(json!({"ignore_shutdown": true})).await;
    let shut = c
        .shutdown(100, Some(Duration::from_secs(1)), false)
        .await
        .unwrap();
    let e = c.wait_task(&shut, DEADLINE).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("lxc-stop -n 100 --nokill --timeout 1"),
        "{e}"
    );
    assert!(c.status_current(100).await.unwrap().is_running());
    let shut = c
        .shutdown(100, Some(Duration::from_secs(1)), true)
        .await
        .unwrap();
    c.wait_task(&shut, DEADLINE).await.unwrap();
    assert!(!c.status_current(100).await.unwrap().is_running());
}

#[tokio::test]
async fn twenty_concurrent_creators_never_share_a_vmid() {
    let sim = PveSim::start();
    let c = Arc::new(sim.client());
    let mut handles = Vec::new();
    for i in 0..20 {
        let c = c.clone();
        handles.push(tokio::spawn(async move {
            let (vmid, upid) = c
                .create_with_next_vmid(&guest(&format!("pod-{i}")), 40)
                .await?;
            c.wait_task(&upid, DEADLINE).await?;
            Ok::<u32, ProxmoxError>(vmid)
        }));
    }
    let mut vmids = HashSet::new();
    for h in handles {
        let vmid = h.await.unwrap().unwrap();
        assert!(vmids.insert(vmid), "VMID {vmid} given twice");
    }
    assert_eq!(vmids.len(), 20);
    let guests = sim.guests().await;
    assert_eq!(guests.len(), 20);
    // Each guest carries the hostname of the loop that made it: no loop took another's.
    let names: HashSet<String> = guests
        .iter()
        .map(|g| g["config"]["hostname"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 20);
}

/// Client overhead per call: the client's GET against the same request sent with a bare
/// reqwest client (same TLS, same keep-alive). Run with
/// `cargo nextest run --test proxmox_client --run-ignored only --no-capture measure`.
#[tokio::test]
#[ignore]
async fn measure_call_overhead() {
    let sim = PveSim::with(SimOptions {
        task_ms: 0,
        ..Default::default()
    });
    let c = sim.client();
    let upid = c
        .create_lxc(&CreateLxc {
            vmid: 100,
            ..guest("a")
        })
        .await
        .unwrap();
    c.wait_task(&upid, DEADLINE).await.unwrap();
    let n = 2000;
    let pct = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 2], v[v.len() * 99 / 100])
    };
    let raw_client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tls_certs_only([
            reqwest::Certificate::from_pem(&std::fs::read(&sim.ca_file).unwrap()).unwrap(),
        ])
        .build()
        .unwrap();
    let url = sim.url("/api2/json/nodes/pve/lxc/100/status/current");
    let auth = sim.auth_header();
    let mut raw = Vec::with_capacity(n);
    let mut ours = Vec::with_capacity(n);
    for _ in 0..50 {
        c.status_current(100).await.unwrap();
        raw_client
            .get(&url)
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    for _ in 0..n {
        let t = std::time::Instant::now();
        let b = raw_client
            .get(&url)
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let _: serde_json::Value = serde_json::from_slice(&b).unwrap();
        raw.push(t.elapsed().as_secs_f64() * 1e3);
        let t = std::time::Instant::now();
        c.status_current(100).await.unwrap();
        ours.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut cycle = Vec::new();
    for i in 0..100 {
        let t = std::time::Instant::now();
        let (vmid, upid) = c
            .create_with_next_vmid(&guest(&format!("m{i}")), 10)
            .await
            .unwrap();
        c.wait_task(&upid, DEADLINE).await.unwrap();
        let d = c.destroy(vmid, true, false).await.unwrap();
        c.wait_task(&d, DEADLINE).await.unwrap();
        cycle.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // With a realistic-shaped task time: what the client adds on top of it.
    sim.set_faults(json!({"task_ms": {"vzcreate": 200}})).await;
    let mut over = Vec::new();
    for i in 0..30 {
        let t = std::time::Instant::now();
        let (_, upid) = c
            .create_with_next_vmid(&guest(&format!("t{i}")), 10)
            .await
            .unwrap();
        c.wait_task(&upid, DEADLINE).await.unwrap();
        over.push(t.elapsed().as_secs_f64() * 1e3 - 200.0);
    }
    let (ovm, ovp) = pct(over);
    println!("nextid+create+wait beyond a 200 ms create task: median {ovm:.2} ms, p99 {ovp:.2} ms");
    let (rm, rp) = pct(raw);
    let (om, op) = pct(ours);
    let (cm, cp) = pct(cycle);
    println!("status_current via proxrt client: median {om:.3} ms, p99 {op:.3} ms ({n} calls)");
    println!("same GET via bare reqwest:        median {rm:.3} ms, p99 {rp:.3} ms");
    println!("client overhead (median):         {:.3} ms", om - rm);
    println!("nextid+create+wait+destroy+wait (task time 0): median {cm:.2} ms, p99 {cp:.2} ms");
}
