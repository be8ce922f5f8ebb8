//! The simulator refuses what PVE refuses, with PVE's codes and messages (PROXMOX.md):
//! raw HTTP requests, so nothing of proxrt's client is involved.

mod pve_sim;

use pve_sim::{PveSim, SimOptions};
use reqwest::Method;
use serde_json::{json, Value};

const TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

/// (status, reason phrase's text in `message`, body JSON or Null)
async fn call(
    sim: &PveSim,
    method: Method,
    path: &str,
    ct: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut req = sim
        .http()
        .request(method, sim.url(&format!("/api2/json{path}")))
        .header("Authorization", sim.auth_header());
    if let Some(ct) = ct {
        req = req.header("Content-Type", ct);
    }
    if !body.is_empty() {
        req = req.body(body.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

fn create_form(extra: &str) -> String {
    format!(
        "vmid=100&ostemplate={}{extra}",
        TEMPLATE.replace(':', "%3A").replace('/', "%2F")
    )
}

#[tokio::test]
async fn form_parsing_is_pves() {
    let sim = PveSim::start();
    // An unencoded property string is cut at its second '=': PVE sees net0=name.
    let (s, b) = call(
        &sim,
        Method::POST,
        "/nodes/pve/lxc",
        FORM,
        &create_form("&rootfs=local-lvm%3A8&net0=name=eth0,bridge=vmbr0"),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(b["message"], "Parameter verification failed.\n");
    assert!(
        b["errors"]["net0"]
            .as_str()
            .unwrap()
            .contains("value without key"),
        "{b}"
    );
    // ';' separates parameters too.
    let body = create_form(";rootfs=local-lvm%3A8;net0=name%3Deth0%2Cbridge%3Dvmbr0%2Cip%3Ddhcp");
    let (s, b) = call(&sim, Method::POST, "/nodes/pve/lxc", FORM, &body).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["data"].as_str().unwrap().starts_with("UPID:pve:"));
    // Booleans are 0/1 in a form.
    let (s, b) = call(
        &sim,
        Method::POST,
        "/nodes/pve/lxc",
        FORM,
        &create_form("&rootfs=local-lvm%3A8&unprivileged=true").replace("vmid=100", "vmid=101"),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["errors"]["unprivileged"],
        "type check ('boolean') failed - got 'true'\n"
    );
    // Malformed and out-of-range VMIDs.
    for (vmid, msg) in [
        (
            "99",
            "invalid format - value does not look like a valid VM ID\n",
        ),
        ("abc", "type check ('integer') failed - got 'abc'\n"),
    ] {
        let (s, b) = call(
            &sim,
            Method::POST,
            "/nodes/pve/lxc",
            FORM,
            &create_form("&rootfs=local-lvm%3A8").replace("vmid=100", &format!("vmid={vmid}")),
        )
        .await;
        assert_eq!(s, 400);
        assert_eq!(b["errors"]["vmid"], msg);
    }
    let (s, b) = call(
        &sim,
        Method::GET,
        "/nodes/pve/lxc/abc/status/current",
        None,
        "",
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = call(&sim, Method::POST, "/nodes/pve/lxc", FORM, "hostname=x").await;
    assert_eq!(s, 400);
    assert_eq!(
        b["errors"]["vmid"],
        "property is missing and it is not optional\n"
    );
}

#[tokio::test]
async fn token_only_refusals() {
    let sim = PveSim::start();
    let (s, b) = call(
        &sim,
        Method::POST,
        "/nodes/pve/lxc",
        FORM,
        &create_form("&rootfs=8"),
    )
    .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            500,
            Some("Only root can pass arbitrary filesystem paths.\n")
        )
    );
    let (s, b) = call(
        &sim,
        Method::POST,
        "/nodes/pve/lxc",
        FORM,
        &create_form("&rootfs=local-lvm%3A8&features=keyctl%3D1%2Cnesting%3D1"),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(
        b["message"],
        "changing feature flags (except nesting) is only allowed for root@pam\n"
    );
    let (s, b) = call(
        &sim,
        Method::POST,
        "/nodes/pve/lxc",
        FORM,
        &create_form("&rootfs=local-lvm%3A8&mp0=%2Fsrv%2Fdata%2Cmp%3D%2Fdata"),
    )
    .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            500,
            Some("Only root can pass arbitrary filesystem paths.\n")
        )
    );
    let (s, b) = call(&sim, Method::POST, "/nodes/pve/lxc", FORM, &create_form("")).await;
    assert_eq!(s, 400);
    assert_eq!(
        b["errors"]["storage"],
        "storage 'local' does not support container directories\n"
    );
    // With storage= the rootfs defaults to <storage>:4.
    let (s, _) = call(
        &sim,
        Method::POST,
        "/nodes/pve/lxc",
        FORM,
        &create_form("&storage=local-lvm"),
    )
    .await;
    assert_eq!(s, 200);
    assert!(sim.guests().await[0]["config"]["rootfs"]
        .as_str()
        .unwrap()
        .ends_with("size=4G"));
}

#[tokio::test]
async fn bodies_and_content_types() {
    let sim = PveSim::start();
    let (s, b) = call(&sim, Method::GET, "/cluster/nextid", FORM, "vmid=100").await;
    assert_eq!(s, 501);
    assert_eq!(b["message"], "Unexpected content for method 'GET'\n");
    let (s, _) = call(&sim, Method::DELETE, "/nodes/pve/lxc/100", FORM, "purge=1").await;
    assert_eq!(s, 501);
    let (s, b) = call(
        &sim,
        Method::POST,
        "/nodes/pve/lxc/100/status/start",
        Some("application/json"),
        "",
    )
    .await;
    assert_eq!(s, 500);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON string"),
        "{b}"
    );
    let body =
        json!({"vmid": 100, "ostemplate": TEMPLATE, "rootfs": "local-lvm:8", "unprivileged": true})
            .to_string();
    let (s, b) = call(
        &sim,
        Method::POST,
        "/nodes/pve/lxc",
        Some("application/json"),
        &body,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(&sim, Method::GET, "/nodes/pve/nope", None, "").await;
    assert_eq!(s, 501);
    assert_eq!(
        b["message"],
        "Method 'GET /nodes/pve/nope' not implemented\n"
    );
    let (s, b) = call(&sim, Method::GET, "/nodes/pve/lxc/777/interfaces", None, "").await;
    assert_eq!((s, b["data"].clone()), (200, Value::Null));
    let (s, b) = call(&sim, Method::GET, "/nodes/pve/lxc/777/config", None, "").await;
    assert_eq!(s, 500);
    assert_eq!(
        b["message"],
        "Configuration file 'nodes/pve/lxc/777.conf' does not exist\n"
    );
}

#[tokio::test]
async fn auth_failures_are_bodyless_401s() {
    let sim = PveSim::start();
    for auth in [
        None,
        Some("PVEAPIToken=proxrt@pve!cri=wrong".to_owned()),
        Some(format!("PVEAPIToken=root@pam!cri={}", sim.secret)),
    ] {
        let mut req = sim.http().get(sim.url("/api2/json/cluster/nextid"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        assert!(resp.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn faults_from_a_toml_file_at_start() {
    let sim = PveSim::with(SimOptions {
        faults_toml: Some("[fail_next_tasks]\nvzcreate = 1\n[[rules]]\npath = \"/version\"\naction = \"status\"\nstatus = 502\ncount = 1\n".into()),
        ..Default::default()
    });
    let (s, _) = call(&sim, Method::GET, "/version", None, "").await;
    assert_eq!(s, 502);
    let (s, _) = call(&sim, Method::GET, "/version", None, "").await;
    assert_eq!(s, 200);
    let (s, b) = call(
        &sim,
        Method::POST,
        "/nodes/pve/lxc",
        FORM,
        &create_form("&rootfs=local-lvm%3A8"),
    )
    .await;
    assert_eq!(s, 200);
    let upid = b["data"].as_str().unwrap().to_owned();
    let path = format!(
        "/nodes/pve/tasks/{}/status",
        upid.replace(':', "%3A")
            .replace('!', "%21")
            .replace('@', "%40")
    );
    let exit = loop {
        let (_, b) = call(&sim, Method::GET, &path, None, "").await;
        if b["data"]["status"] == "stopped" {
            break b["data"]["exitstatus"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        exit,
        "unable to create CT 100 - simulated failure (pve-sim)"
    );
    assert!(
        sim.guests().await.is_empty(),
        "a failed create leaves no guest"
    );
}
