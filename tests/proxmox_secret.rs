//! The API token secret never reaches a log line, a trace field or an error: a whole
//! session (every operation, a failed task, a bad token, a fingerprint mismatch) runs
//! under a TRACE-level subscriber that also captures `log` records of the TLS and HTTP
//! crates, and the capture must not hold the secret.

mod pve_sim;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxrt::proxmox::{Client, CreateLxc, Fingerprint, NetConfig, RootFs, Secret, TlsMode};
use pve_sim::PveSim;
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_secret_is_absent_from_trace_output_and_errors() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("install the TRACE subscriber");

    let sim = PveSim::start();
    let c = sim.client();
    let mut errors = Vec::new();
    sim.set_faults(json!({"fail_next_tasks": {"vzstart": 1},
        "rules": [{"method": "GET", "path": "/cluster/nextid", "action": "status", "status": 503, "count": 1}]}))
        .await;
    let p = CreateLxc {
        ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
        hostname: Some("s1".into()),
        rootfs: Some(RootFs {
            storage: "local-lvm".into(),
            size_gb: 8,
        }),
        net0: Some(NetConfig::dhcp("vmbr0")),
        ..Default::default()
    };
    let (vmid, upid) = c.create_with_next_vmid(&p, 5).await.unwrap();
    c.wait_task(&upid, Duration::from_secs(30)).await.unwrap();
    c.list_lxc().await.unwrap();
    c.get_config(vmid).await.unwrap();
    let start = c.start(vmid).await.unwrap();
    errors.push(
        c.wait_task(&start, Duration::from_secs(30))
            .await
            .unwrap_err(),
    );
    let start = c.start(vmid).await.unwrap();
    c.wait_task(&start, Duration::from_secs(30)).await.unwrap();
    c.status_current(vmid).await.unwrap();
    c.interfaces(vmid).await.unwrap();
    errors.push(c.start(vmid).await.unwrap_err());
    let stop = c.stop(vmid).await.unwrap();
    c.wait_task(&stop, Duration::from_secs(30)).await.unwrap();
    let d = c.destroy(vmid, true, false).await.unwrap();
    c.wait_task(&d, Duration::from_secs(30)).await.unwrap();
    errors.push(c.status_current(vmid).await.unwrap_err());

    let mut o = sim.options();
    o.secret = Secret::new(format!("{}-wrong", sim.secret));
    errors.push(Client::new(o).unwrap().nextid().await.unwrap_err());
    let mut o = sim.options();
    o.tls = TlsMode::Fingerprint(Fingerprint([1; 32]));
    errors.push(Client::new(o).unwrap().nextid().await.unwrap_err());
    let o = sim.options();
    let debug_of_options = format!("{o:?} {:?}", Client::new(o.clone()).unwrap());

    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The capture works: it holds the client's own trace and debug lines.
    assert!(text.contains("proxmox request"), "no client trace captured");
    assert!(text.contains("TRACE"), "no TRACE lines captured");
    // `log` records of the TLS and HTTP crates are captured too.
    assert!(
        text.contains("rustls") || text.contains("reqwest"),
        "no log records captured"
    );
    assert!(!text.contains(&sim.secret), "secret in trace output");
    for e in &errors {
        for s in [
            e.to_string(),
            format!("{e:?}"),
            e.to_status().message().to_owned(),
        ] {
            assert!(!s.contains(&sim.secret), "secret in error: {s}");
        }
    }
    assert!(
        !debug_of_options.contains(&sim.secret),
        "{debug_of_options}"
    );
}
