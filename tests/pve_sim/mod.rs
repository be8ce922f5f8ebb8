//! A real `pve-sim` process on 127.0.0.1 with its own temp dir, for the Proxmox client
//! tests. Dropping it kills the process and removes the dir.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use proxrt::proxmox::{Client, ClientOptions, RetryPolicy, Secret, TlsMode};
use serde_json::Value;
use tempfile::TempDir;

pub struct SimOptions {
    /// Shortened from PVE's ~3 s.
    pub auth_delay_ms: u64,
    pub task_ms: u64,
    /// Faults file content, passed with --faults at start.
    pub faults_toml: Option<String>,
    pub extra_args: Vec<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            auth_delay_ms: 50,
            task_ms: 30,
            faults_toml: None,
            extra_args: Vec::new(),
        }
    }
}

pub struct PveSim {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    pub dir: TempDir,
    pub port: u16,
    pub fingerprint: String,
    pub ca_file: PathBuf,
    pub token_id: String,
    pub secret: String,
    control: reqwest::Client,
}

impl PveSim {
    pub fn start() -> PveSim {
        PveSim::with(SimOptions::default())
    }

    pub fn with(opts: SimOptions) -> PveSim {
        let dir = tempfile::Builder::new()
            .prefix("pve-sim-test-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pve-sim"));
        cmd.arg("--state-dir")
            .arg(dir.path())
            .arg("--auth-delay-ms")
            .arg(opts.auth_delay_ms.to_string())
            .arg("--task-ms")
            .arg(opts.task_ms.to_string())
            .args(&opts.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(f) = &opts.faults_toml {
            let p = dir.path().join("faults.toml");
            std::fs::write(&p, f).expect("write faults");
            cmd.arg("--faults").arg(p);
        }
        let mut child = cmd.spawn().expect("spawn pve-sim");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read pve-sim ready line");
        let Some(json) = line.trim().strip_prefix("pve-sim ready ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pve-sim did not start: {line:?}");
        };
        let info: Value = serde_json::from_str(json).expect("info json");
        let secret = std::fs::read_to_string(dir.path().join("token-secret"))
            .expect("token secret")
            .trim()
            .to_owned();
        let control = reqwest::Client::builder()
            .no_proxy()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .expect("control client");
        PveSim {
            child,
            _stdout: stdout,
            port: info["port"].as_u64().expect("port") as u16,
            fingerprint: info["fingerprint"]
                .as_str()
                .expect("fingerprint")
                .to_owned(),
            ca_file: info["ca_file"].as_str().expect("ca_file").into(),
            token_id: info["token_id"].as_str().expect("token_id").to_owned(),
            secret,
            dir,
            control,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Client options verifying with the simulator's CA, with fast retries.
    pub fn options(&self) -> ClientOptions {
        let mut o = ClientOptions::new(
            vec![self.endpoint()],
            "pve",
            self.token_id.clone(),
            Secret::new(self.secret.clone()),
            TlsMode::CaFile(self.ca_file.clone()),
        );
        o.retry = RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        };
        o
    }

    pub fn client(&self) -> Client {
        Client::new(self.options()).expect("client")
    }

    /// The raw HTTP client used for control calls and raw API requests.
    pub fn http(&self) -> &reqwest::Client {
        &self.control
    }

    pub fn auth_header(&self) -> String {
        format!("PVEAPIToken={}={}", self.token_id, self.secret)
    }

    async fn ctl(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .control
            .request(method, self.url(&format!("/_sim/{path}")));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("control call");
        let status = resp.status();
        let v: Value = resp.json().await.expect("control json");
        assert!(status.is_success(), "control {path}: {status} {v}");
        v["data"].clone()
    }

    pub async fn set_faults(&self, faults: Value) {
        self.ctl(reqwest::Method::POST, "faults", Some(faults))
            .await;
    }

    pub async fn clear_faults(&self) {
        self.ctl(reqwest::Method::DELETE, "faults", None).await;
    }

    /// Every guest the simulator holds: what an orphan check looks at.
    pub async fn guests(&self) -> Vec<Value> {
        match self.ctl(reqwest::Method::GET, "guests", None).await {
            Value::Array(a) => a,
            other => panic!("guests: {other}"),
        }
    }

    /// The guest powers itself off (as `poweroff` inside it would).
    pub async fn power_off(&self, vmid: u64) {
        self.ctl(
            reqwest::Method::POST,
            &format!("guests/{vmid}/poweroff"),
            None,
        )
        .await;
    }

    /// Calls seen on the API, `{method, path, status}` (status 0: connection dropped).
    pub async fn requests(&self) -> Vec<Value> {
        match self.ctl(reqwest::Method::GET, "requests", None).await {
            Value::Array(a) => a,
            other => panic!("requests: {other}"),
        }
    }

    pub async fn requests_to(&self, method: &str, path: &str) -> usize {
        self.requests()
            .await
            .iter()
            .filter(|r| r["method"] == method && r["path"] == format!("/api2/json{path}"))
            .count()
    }
}

impl Drop for PveSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 where nothing listens (connections are refused).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}
