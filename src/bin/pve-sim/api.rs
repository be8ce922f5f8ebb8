//! The PVE endpoints the client uses (docs/proxmox.md), with PVE's status codes and messages.
//!
//! Guests are state only: no container is ever made. A guest is a config map, a status
//! and a lock; tasks are timers that apply their effect when they end (a create that
//! fails removes its guest, as PVE's create worker does).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use sha2::Digest;

use crate::faults::Faults;
use crate::params::Params;
use crate::schema::{self, Errors, Schema};

/// What a handler answers.
#[derive(Debug)]
pub enum Reply {
    Data(Value),
    /// `{"data": …, "total": n}` (task logs).
    DataTotal(Value, usize),
    Error {
        status: u16,
        message: String,
        errors: Option<Errors>,
    },
}

pub fn err(status: u16, message: impl Into<String>) -> Reply {
    Reply::Error {
        status,
        message: message.into(),
        errors: None,
    }
}

fn param_errors(errors: Errors) -> Reply {
    Reply::Error {
        status: 400,
        message: "Parameter verification failed.".into(),
        errors: Some(errors),
    }
}

pub struct Template {
    pub volid: String,
    pub size: u64,
}

pub struct Settings {
    pub node: String,
    pub token_id: String,
    pub secret: String,
    pub auth_delay: Duration,
    pub task_ms: u64,
    pub lock_wait: Duration,
    pub templates: Vec<Template>,
    /// Storages that hold container root filesystems (`rootdir` content).
    pub rootdir_storages: Vec<String>,
}

#[derive(Debug, Clone)]
struct Guest {
    running: bool,
    lock: Option<String>,
    config: BTreeMap<String, Value>,
    pid: Option<u32>,
    started: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Task {
    upid: String,
    task_type: String,
    id: String,
    user: String,
    pid: u32,
    pstart: u32,
    starttime: u64,
    exitstatus: Option<String>,
    log: Vec<String>,
}

#[derive(Default)]
struct State {
    guests: BTreeMap<u32, Guest>,
    tasks: HashMap<String, Task>,
    next_pid: u32,
}

pub struct Sim {
    pub settings: Settings,
    pub faults: Mutex<Faults>,
    state: Mutex<State>,
    schema: Schema,
    pub requests: Mutex<Vec<Value>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn conf_missing(node: &str, vmid: u32) -> Reply {
    err(
        500,
        format!("Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist"),
    )
}

/// Deterministic data for a running guest's eth0: never contacted, only reported.
fn dhcp_address(vmid: u32) -> String {
    format!(
        "10.{}.{}.{}/8",
        (vmid >> 16) & 0xff,
        (vmid >> 8) & 0xff,
        (vmid & 0xff).max(2)
    )
}

fn hwaddr(vmid: u32) -> String {
    format!(
        "BC:24:11:{:02X}:{:02X}:{:02X}",
        (vmid >> 16) & 0xff,
        (vmid >> 8) & 0xff,
        vmid & 0xff
    )
}

impl Sim {
    pub fn new(settings: Settings, faults: Faults) -> Sim {
        Sim {
            settings,
            faults: Mutex::new(faults),
            state: Mutex::new(State {
                next_pid: 0x1000,
                ..State::default()
            }),
            schema: Schema::load(),
            requests: Mutex::new(Vec::new()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change that matters
        // more than answering: keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `GET /_sim/guests`: every guest with its state, for orphan checks.
    pub fn guests_json(&self) -> Value {
        let st = self.state();
        Value::Array(
            st.guests
                .iter()
                .map(|(vmid, g)| {
                    json!({"vmid": vmid, "status": if g.running {"running"} else {"stopped"},
                           "lock": g.lock, "config": g.config})
                })
                .collect(),
        )
    }

    /// A running guest powers itself off. False: no such running guest.
    pub fn power_off(&self, vmid: u32) -> bool {
        let mut st = self.state();
        match st.guests.get_mut(&vmid) {
            Some(g) if g.running => {
                g.running = false;
                g.pid = None;
                g.started = None;
                true
            }
            _ => false,
        }
    }

    pub fn tasks_json(&self) -> Value {
        let st = self.state();
        Value::Array(
            st.tasks
                .values()
                .map(|t| json!({"upid": t.upid, "type": t.task_type, "id": t.id, "exitstatus": t.exitstatus}))
                .collect(),
        )
    }

    /// Dispatches one authenticated API call. `segments` are the decoded path pieces
    /// after /api2/json.
    pub async fn handle(
        self: &Arc<Self>,
        method: &str,
        segments: &[String],
        mut params: Params,
        user: &str,
    ) -> Reply {
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        let (template, path_params): (&str, Vec<(&str, &str)>) = match seg.as_slice() {
            ["version"] => ("/version", vec![]),
            ["cluster", "nextid"] => ("/cluster/nextid", vec![]),
            ["nodes", n, "lxc"] => ("/nodes/{node}/lxc", vec![("node", *n)]),
            ["nodes", n, "lxc", v] => {
                ("/nodes/{node}/lxc/{vmid}", vec![("node", *n), ("vmid", *v)])
            }
            ["nodes", n, "lxc", v, "status", "current"] => (
                "/nodes/{node}/lxc/{vmid}/status/current",
                vec![("node", *n), ("vmid", *v)],
            ),
            ["nodes", n, "lxc", v, "status", "start"] => (
                "/nodes/{node}/lxc/{vmid}/status/start",
                vec![("node", *n), ("vmid", *v)],
            ),
            ["nodes", n, "lxc", v, "status", "stop"] => (
                "/nodes/{node}/lxc/{vmid}/status/stop",
                vec![("node", *n), ("vmid", *v)],
            ),
            ["nodes", n, "lxc", v, "status", "shutdown"] => (
                "/nodes/{node}/lxc/{vmid}/status/shutdown",
                vec![("node", *n), ("vmid", *v)],
            ),
            ["nodes", n, "lxc", v, "config"] => (
                "/nodes/{node}/lxc/{vmid}/config",
                vec![("node", *n), ("vmid", *v)],
            ),
            ["nodes", n, "lxc", v, "interfaces"] => (
                "/nodes/{node}/lxc/{vmid}/interfaces",
                vec![("node", *n), ("vmid", *v)],
            ),
            ["nodes", n, "tasks", u, "status"] => (
                "/nodes/{node}/tasks/{upid}/status",
                vec![("node", *n), ("upid", *u)],
            ),
            ["nodes", n, "tasks", u, "log"] => (
                "/nodes/{node}/tasks/{upid}/log",
                vec![("node", *n), ("upid", *u)],
            ),
            ["nodes", n, "storage", s, "content"] => (
                "/nodes/{node}/storage/{storage}/content",
                vec![("node", *n), ("storage", *s)],
            ),
            _ => return not_implemented(method, segments),
        };
        let allowed: &[&str] = match template {
            "/nodes/{node}/lxc" => &["GET", "POST"],
            "/nodes/{node}/lxc/{vmid}" => &["GET", "DELETE"],
            "/nodes/{node}/lxc/{vmid}/config" => &["GET", "PUT"],
            t if t.contains("/status/") && !t.ends_with("current") => &["POST"],
            _ => &["GET"],
        };
        if !allowed.contains(&method) {
            return not_implemented(method, segments);
        }
        // Path parameters are validated with the others, as PVE does.
        for (k, v) in &path_params {
            params.insert((*k).to_owned(), (*v).to_owned());
        }
        if let Err(errors) = self.schema.validate(template, method, &params) {
            return param_errors(errors);
        }
        if let Some(node) = params.get("node") {
            if *node != self.settings.node {
                return err(500, format!("no such cluster node '{node}'"));
            }
        }
        let vmid: u32 = params.get("vmid").and_then(|v| v.parse().ok()).unwrap_or(0);
        match (method, template) {
            ("GET", "/version") => {
                Reply::Data(json!({"version": "9.1.2", "release": "9.1", "repoid": "pve-sim"}))
            }
            ("GET", "/cluster/nextid") => self.nextid(&params),
            ("GET", "/nodes/{node}/lxc") => self.list(),
            ("POST", "/nodes/{node}/lxc") => self.create(params, user),
            ("GET", "/nodes/{node}/lxc/{vmid}") => match self.state().guests.contains_key(&vmid) {
                true => Reply::Data(
                    json!([{"subdir": "config"}, {"subdir": "status"}, {"subdir": "interfaces"}]),
                ),
                false => conf_missing(&self.settings.node, vmid),
            },
            ("DELETE", _) => self.destroy(vmid, &params, user).await,
            ("GET", t) if t.ends_with("/status/current") => self.status(vmid),
            ("POST", t) if t.ends_with("/start") => self.start(vmid, user).await,
            ("POST", t) if t.ends_with("/stop") => self.stop(vmid, "vzstop", user),
            ("POST", t) if t.ends_with("/shutdown") => self.shutdown(vmid, &params, user),
            ("GET", t) if t.ends_with("/config") => self.config(vmid),
            ("PUT", _) => self.set_config(vmid, params).await,
            ("GET", t) if t.ends_with("/interfaces") => self.interfaces(vmid),
            ("GET", t) if t.ends_with("/tasks/{upid}/status") => self.task_status(&params),
            ("GET", t) if t.ends_with("/tasks/{upid}/log") => self.task_log(&params),
            ("GET", t) if t.ends_with("/content") => self.storage_content(&params),
            _ => not_implemented(method, segments),
        }
    }

    fn nextid(&self, params: &Params) -> Reply {
        let st = self.state();
        if let Some(v) = params.get("vmid").and_then(|v| v.parse::<u32>().ok()) {
            if st.guests.contains_key(&v) {
                let mut e = Errors::new();
                e.insert("vmid".into(), format!("VM {v} already exists"));
                return param_errors(e);
            }
            return Reply::Data(Value::String(v.to_string()));
        }
        let mut id = 100u32;
        while st.guests.contains_key(&id) {
            id += 1;
        }
        // PVE returns the id as a JSON string; it reserves nothing.
        Reply::Data(Value::String(id.to_string()))
    }

    fn summary(&self, vmid: u32, g: &Guest) -> Map<String, Value> {
        let mem = g
            .config
            .get("memory")
            .and_then(Value::as_u64)
            .unwrap_or(512);
        let swap = g.config.get("swap").and_then(Value::as_u64).unwrap_or(512);
        let disk_gb = g
            .config
            .get("rootfs")
            .and_then(Value::as_str)
            .and_then(|r| r.split("size=").nth(1))
            .and_then(|s| s.trim_end_matches('G').parse::<u64>().ok())
            .unwrap_or(4);
        let mut m = Map::new();
        m.insert("vmid".into(), json!(vmid));
        m.insert("type".into(), json!("lxc"));
        m.insert(
            "status".into(),
            json!(if g.running { "running" } else { "stopped" }),
        );
        if let Some(h) = g.config.get("hostname") {
            m.insert("name".into(), h.clone());
        }
        m.insert("maxmem".into(), json!(mem * 1024 * 1024));
        m.insert("maxswap".into(), json!(swap * 1024 * 1024));
        m.insert("maxdisk".into(), json!(disk_gb << 30));
        m.insert(
            "cpus".into(),
            g.config.get("cores").cloned().unwrap_or(json!(1)),
        );
        m.insert("cpu".into(), json!(0));
        m.insert("mem".into(), json!(if g.running { 32 << 20 } else { 0 }));
        m.insert("disk".into(), json!(0));
        m.insert("netin".into(), json!(0));
        m.insert("netout".into(), json!(0));
        m.insert("diskread".into(), json!(0));
        m.insert("diskwrite".into(), json!(0));
        m.insert(
            "uptime".into(),
            json!(g.started.map(|s| s.elapsed().as_secs()).unwrap_or(0)),
        );
        if let Some(l) = &g.lock {
            m.insert("lock".into(), json!(l));
        }
        if let Some(t) = g.config.get("tags") {
            m.insert("tags".into(), t.clone());
        }
        m
    }

    fn list(&self) -> Reply {
        let st = self.state();
        Reply::Data(Value::Array(
            st.guests
                .iter()
                .map(|(v, g)| Value::Object(self.summary(*v, g)))
                .collect(),
        ))
    }

    fn status(&self, vmid: u32) -> Reply {
        let st = self.state();
        let Some(g) = st.guests.get(&vmid) else {
            return conf_missing(&self.settings.node, vmid);
        };
        let mut m = self.summary(vmid, g);
        m.insert("ha".into(), json!({"managed": 0}));
        if let Some(pid) = g.pid.filter(|_| g.running) {
            m.insert("pid".into(), json!(pid));
        }
        Reply::Data(Value::Object(m))
    }

    fn config(&self, vmid: u32) -> Reply {
        let st = self.state();
        let Some(g) = st.guests.get(&vmid) else {
            return conf_missing(&self.settings.node, vmid);
        };
        let mut c: Map<String, Value> = g.config.clone().into_iter().collect();
        if let Some(l) = &g.lock {
            c.insert("lock".into(), json!(l));
        }
        let digest = hex::encode(sha2::Sha256::digest(
            Value::Object(c.clone()).to_string().as_bytes(),
        ));
        c.insert("digest".into(), json!(&digest[..40]));
        Reply::Data(Value::Object(c))
    }

    fn interfaces(&self, vmid: u32) -> Reply {
        let st = self.state();
        let Some(g) = st.guests.get(&vmid).filter(|g| g.running) else {
            // PVE: null for a stopped or unknown guest.
            return Reply::Data(Value::Null);
        };
        let mut out = vec![
            json!({"name": "lo", "hwaddr": "00:00:00:00:00:00", "hardware-address": "00:00:00:00:00:00",
            "inet": "127.0.0.1/8", "inet6": "::1/128",
            "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "inet", "prefix": 8},
                             {"ip-address": "::1", "ip-address-type": "inet6", "prefix": 128}]}),
        ];
        if let Some(net0) = g.config.get("net0").and_then(Value::as_str) {
            let kv: BTreeMap<&str, &str> =
                net0.split(',').filter_map(|i| i.split_once('=')).collect();
            let name = kv.get("name").copied().unwrap_or("eth0");
            let hw = kv
                .get("hwaddr")
                .map(|s| s.to_string())
                .unwrap_or_else(|| hwaddr(vmid));
            let inet = match kv.get("ip") {
                Some(&"dhcp") | None => Some(dhcp_address(vmid)),
                Some(&"manual") => None,
                Some(cidr) => Some(cidr.to_string()),
            };
            let inet6 = format!("fd00::{vmid:x}/64");
            let mut addrs = vec![];
            if let Some(i) = &inet {
                if let Some((a, p)) = i.split_once('/') {
                    addrs.push(json!({"ip-address": a, "ip-address-type": "inet", "prefix": p.parse::<u32>().unwrap_or(24)}));
                }
            }
            addrs.push(json!({"ip-address": format!("fd00::{vmid:x}"), "ip-address-type": "inet6", "prefix": 64}));
            let mut e = json!({"name": name, "hwaddr": hw, "hardware-address": hw, "inet6": inet6, "ip-addresses": addrs});
            if let Some(i) = inet {
                e["inet"] = json!(i);
            }
            out.push(e);
        }
        Reply::Data(Value::Array(out))
    }

    fn new_task(self: &Arc<Self>, st: &mut State, task_type: &str, id: &str, user: &str) -> String {
        st.next_pid += 1;
        let pid = st.next_pid;
        let pstart = 0x00C0_0000 + pid;
        let starttime = now_secs();
        let upid = format!(
            "UPID:{}:{pid:08X}:{pstart:08X}:{starttime:08X}:{task_type}:{id}:{user}:",
            self.settings.node
        );
        st.tasks.insert(
            upid.clone(),
            Task {
                upid: upid.clone(),
                task_type: task_type.into(),
                id: id.into(),
                user: user.into(),
                pid,
                pstart,
                starttime,
                exitstatus: None,
                log: Vec::new(),
            },
        );
        upid
    }

    /// Runs a task for its configured time, then `finish` applies its effect and
    /// returns the log lines and `Err(message)` for a failure.
    fn run_task(
        self: &Arc<Self>,
        upid: String,
        task_type: &str,
        finish: impl FnOnce(&mut State, bool) -> (Vec<String>, Result<(), String>) + Send + 'static,
    ) {
        self.run_task_for(upid, task_type, None, finish)
    }

    /// `run_task` with a run time set by the call rather than the faults.
    fn run_task_for(
        self: &Arc<Self>,
        upid: String,
        task_type: &str,
        ms: Option<u64>,
        finish: impl FnOnce(&mut State, bool) -> (Vec<String>, Result<(), String>) + Send + 'static,
    ) {
        let (ms, fail, warn) = {
            let mut f = self.faults();
            (
                ms.unwrap_or_else(|| f.task_ms(task_type, self.settings.task_ms)),
                f.take_failure(task_type),
                f.take_warning(task_type),
            )
        };
        let sim = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let mut st = sim.state();
            let (mut log, result) = finish(&mut st, fail);
            let exit = match result {
                Ok(()) if warn => {
                    log.push("WARN: simulated warning (pve-sim)".into());
                    log.push("TASK WARNINGS: 1".into());
                    "WARNINGS: 1".to_owned()
                }
                Ok(()) => {
                    log.push("TASK OK".into());
                    "OK".to_owned()
                }
                Err(m) => {
                    log.push(format!("TASK ERROR: {m}"));
                    m
                }
            };
            if let Some(t) = st.tasks.get_mut(&upid) {
                t.log = log;
                t.exitstatus = Some(exit);
            }
        });
    }

    fn create(self: &Arc<Self>, params: Params, user: &str) -> Reply {
        let node = self.settings.node.clone();
        let vmid: u32 = params.get("vmid").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut st = self.state();
        if st.guests.contains_key(&vmid) {
            return err(500, format!("CT {vmid} already exists on node '{node}'"));
        }
        // Permission checks for a token (never root@pam), in PVE's order.
        let rootfs_schema = self.schema.property("/nodes/{node}/lxc", "POST", "rootfs");
        let storage_default = params
            .get("storage")
            .cloned()
            .unwrap_or_else(|| "local".into());
        let rootfs = params
            .get("rootfs")
            .cloned()
            .unwrap_or_else(|| format!("{storage_default}:4"));
        let volume = rootfs_schema
            .and_then(|s| s.get("format"))
            .and_then(Value::as_object)
            .and_then(|f| schema::parse_property_string("rootfs", &rootfs, f).ok())
            .and_then(|m| m.get("volume").cloned())
            .unwrap_or_default();
        for (k, v) in &params {
            let is_mp = k.starts_with("mp") && k[2..].bytes().all(|b| b.is_ascii_digit());
            let vol = if is_mp {
                v.split(',').next().unwrap_or("")
            } else {
                ""
            };
            if is_mp && (vol.starts_with('/') || !vol.contains(':')) {
                return err(500, "Only root can pass arbitrary filesystem paths.");
            }
        }
        if volume.starts_with('/') || !volume.contains(':') {
            return err(500, "Only root can pass arbitrary filesystem paths.");
        }
        if let Some(f) = params.get("features") {
            let other = f
                .split(',')
                .filter_map(|i| i.split_once('='))
                .any(|(k, _)| k != "nesting");
            if other {
                return err(
                    403,
                    "changing feature flags (except nesting) is only allowed for root@pam",
                );
            }
        }
        let (storage, size) = volume.split_once(':').unwrap_or(("", ""));
        let known_storages: Vec<&str> = std::iter::once("local")
            .chain(self.settings.rootdir_storages.iter().map(String::as_str))
            .collect();
        if !known_storages.contains(&storage) {
            return err(500, format!("storage '{storage}' does not exist"));
        }
        if !self.settings.rootdir_storages.iter().any(|s| s == storage) {
            let mut e = Errors::new();
            e.insert(
                "storage".into(),
                format!("storage '{storage}' does not support container directories"),
            );
            return param_errors(e);
        }
        let size_gb: u64 = match size.parse::<f64>() {
            Ok(s) if s > 0.0 => s.ceil() as u64,
            _ => return err(500, format!("unable to parse volume ID '{volume}'")),
        };
        let ostemplate = params.get("ostemplate").cloned().unwrap_or_default();
        let Some((tstorage, tpath)) = ostemplate.split_once(':') else {
            return err(500, format!("unable to parse volume ID '{ostemplate}'"));
        };
        if !known_storages.contains(&tstorage) {
            return err(500, format!("storage '{tstorage}' does not exist"));
        }
        if !self
            .settings
            .templates
            .iter()
            .any(|t| t.volid == ostemplate)
        {
            let file = tpath.trim_start_matches("vztmpl/");
            return err(
                500,
                match tstorage {
                    "local" => format!("can't find file '/var/lib/vz/template/cache/{file}'"),
                    _ => format!("volume '{ostemplate}' does not exist"),
                },
            );
        }
        // The config PVE writes (values as its config parser returns them).
        let mut config = BTreeMap::new();
        config.insert("arch".to_owned(), json!("amd64"));
        config.insert(
            "hostname".to_owned(),
            json!(params
                .get("hostname")
                .cloned()
                .unwrap_or_else(|| format!("CT{vmid}"))),
        );
        config.insert(
            "memory".to_owned(),
            json!(params
                .get("memory")
                .and_then(|m| m.parse::<u64>().ok())
                .unwrap_or(512)),
        );
        config.insert(
            "swap".to_owned(),
            json!(params
                .get("swap")
                .and_then(|m| m.parse::<u64>().ok())
                .unwrap_or(512)),
        );
        config.insert(
            "rootfs".to_owned(),
            json!(format!("{storage}:vm-{vmid}-disk-0,size={size_gb}G")),
        );
        let ostype = params.get("ostype").cloned().unwrap_or_else(|| {
            ["alpine", "ubuntu", "centos", "fedora", "archlinux"]
                .into_iter()
                .find(|o| tpath.contains(o))
                .unwrap_or("debian")
                .to_owned()
        });
        config.insert("ostype".to_owned(), json!(ostype));
        for k in ["cores", "cpuunits", "unprivileged"] {
            if let Some(v) = params.get(k).and_then(|v| v.parse::<u64>().ok()) {
                config.insert(k.to_owned(), json!(v));
            }
        }
        for k in [
            "cpulimit",
            "features",
            "nameserver",
            "searchdomain",
            "description",
        ] {
            if let Some(v) = params.get(k) {
                config.insert(k.to_owned(), json!(v));
            }
        }
        if let Some(t) = params.get("tags") {
            let tags: Vec<&str> = t.split([';', ',', ' ']).filter(|t| !t.is_empty()).collect();
            config.insert("tags".to_owned(), json!(tags.join(";")));
        }
        for (k, v) in &params {
            if k.starts_with("net") && k[3..].bytes().all(|b| b.is_ascii_digit()) && k.len() > 3 {
                // PVE adds a MAC and the type when the client gives none.
                let mut v = v.clone();
                if !v.contains("hwaddr=") {
                    v.push_str(&format!(",hwaddr={}", hwaddr(vmid)));
                }
                if !v.contains("type=") {
                    v.push_str(",type=veth");
                }
                config.insert(k.clone(), json!(v));
            }
        }
        let start_after = params.get("start").is_some_and(|s| s == "1");
        st.guests.insert(
            vmid,
            Guest {
                running: false,
                lock: Some("create".into()),
                config,
                pid: None,
                started: None,
            },
        );
        let upid = self.new_task(&mut st, "vzcreate", &vmid.to_string(), user);
        drop(st);
        let template_file = ostemplate.clone();
        self.run_task(upid.clone(), "vzcreate", move |st, fail| {
            let mut log = vec![
                format!("extracting archive '{template_file}'"),
                "Total bytes read: 524288000 (500MiB, 250MiB/s)".into(),
                "Detected container architecture: amd64".into(),
                "Creating SSH host key 'ssh_host_ed25519_key' - this may take some time ...".into(),
            ];
            if fail {
                // PVE's create worker destroys what it made on failure.
                st.guests.remove(&vmid);
                log.push("simulated failure injected by pve-sim".into());
                return (
                    log,
                    Err(format!(
                        "unable to create CT {vmid} - simulated failure (pve-sim)"
                    )),
                );
            }
            if let Some(g) = st.guests.get_mut(&vmid) {
                g.lock = None;
                if start_after {
                    g.running = true;
                    g.pid = Some(20000 + vmid % 10000);
                    g.started = Some(Instant::now());
                }
            }
            (log, Ok(()))
        });
        Reply::Data(Value::String(upid))
    }

    /// PVE takes the guest's config lock; while a create holds it, callers wait up to
    /// 10 s (`lock_wait`), then fail with "can't lock file".
    async fn wait_unlocked(&self, vmid: u32) -> Result<(), Reply> {
        let started = Instant::now();
        loop {
            let locked = self
                .state()
                .guests
                .get(&vmid)
                .is_some_and(|g| g.lock.as_deref() == Some("create"));
            if !locked {
                return Ok(());
            }
            if started.elapsed() >= self.settings.lock_wait {
                return Err(err(
                    500,
                    format!("can't lock file '/run/lock/lxc/pve-config-{vmid}.lock' - got timeout"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn start(self: &Arc<Self>, vmid: u32, user: &str) -> Reply {
        if let Err(r) = self.wait_unlocked(vmid).await {
            return r;
        }
        let node = self.settings.node.clone();
        let mut st = self.state();
        match st.guests.get(&vmid) {
            Some(g) if g.running => return err(500, format!("CT {vmid} already running")),
            Some(Guest { lock: Some(l), .. }) => return err(500, format!("CT is locked ({l})")),
            _ => {}
        }
        // An unknown VMID still gets a task, which then fails (PVE checks in the worker).
        let upid = self.new_task(&mut st, "vzstart", &vmid.to_string(), user);
        drop(st);
        self.run_task(upid.clone(), "vzstart", move |st, fail| {
            let Some(g) = st.guests.get_mut(&vmid) else {
                return (
                    vec![],
                    Err(format!(
                        "Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist"
                    )),
                );
            };
            if fail {
                return (
                    vec![
                        format!("run_buffer: 571 Script exited with status 1"),
                        "lxc_init: 845 Failed to run lxc.hook.pre-start for container \""
                            .to_owned()
                            + &vmid.to_string()
                            + "\"",
                    ],
                    Err(format!("startup for container '{vmid}' failed")),
                );
            }
            g.running = true;
            g.pid = Some(20000 + vmid % 10000);
            g.started = Some(Instant::now());
            (vec![], Ok(()))
        });
        Reply::Data(Value::String(upid))
    }

    /// A clean shutdown; with the `ignore_shutdown` fault the guest ignores it, so the
    /// task lasts `timeout` seconds and then either hard-stops it (`forceStop=1`) or fails.
    fn shutdown(self: &Arc<Self>, vmid: u32, params: &Params, user: &str) -> Reply {
        if !self.faults().ignore_shutdown {
            return self.stop(vmid, "vzshutdown", user);
        }
        let timeout: u64 = params
            .get("timeout")
            .and_then(|t| t.parse().ok())
            .unwrap_or(60);
        let force = params.get("forceStop").is_some_and(|f| f == "1");
        let mut st = self.state();
        if !st.guests.get(&vmid).is_some_and(|g| g.running) {
            return err(500, format!("CT {vmid} not running"));
        }
        let upid = self.new_task(&mut st, "vzshutdown", &vmid.to_string(), user);
        drop(st);
        self.run_task_for(upid.clone(), "vzshutdown", Some(timeout * 1000), move |st, _| {
            if !force {
                return (
                    vec![],
                    Err(format!(
                        "command 'lxc-stop -n {vmid} --nokill --timeout {timeout}' failed: exit code 1"
                    )),
                );
            }
            if let Some(g) = st.guests.get_mut(&vmid) {
                g.running = false;
                g.pid = None;
                g.started = None;
            }
            (vec!["shutdown timeout reached, forcing stop".into()], Ok(()))
        });
        Reply::Data(Value::String(upid))
    }

    fn stop(self: &Arc<Self>, vmid: u32, task_type: &'static str, user: &str) -> Reply {
        let mut st = self.state();
        if !st.guests.get(&vmid).is_some_and(|g| g.running) {
            return err(500, format!("CT {vmid} not running"));
        }
        let upid = self.new_task(&mut st, task_type, &vmid.to_string(), user);
        drop(st);
        self.run_task(upid.clone(), task_type, move |st, fail| {
            if fail {
                return (
                    vec![],
                    Err(format!(
                        "command 'lxc-stop -n {vmid}' failed: exit code 1 (simulated)"
                    )),
                );
            }
            if let Some(g) = st.guests.get_mut(&vmid) {
                g.running = false;
                g.pid = None;
                g.started = None;
            }
            (vec![], Ok(()))
        });
        Reply::Data(Value::String(upid))
    }

    async fn destroy(self: &Arc<Self>, vmid: u32, params: &Params, user: &str) -> Reply {
        if let Err(r) = self.wait_unlocked(vmid).await {
            return r;
        }
        let node = self.settings.node.clone();
        let force = params.get("force").is_some_and(|f| f == "1");
        let purge = params.get("purge").is_some_and(|f| f == "1");
        let mut st = self.state();
        match st.guests.get_mut(&vmid) {
            None => return conf_missing(&node, vmid),
            Some(Guest { lock: Some(l), .. }) => return err(500, format!("CT is locked ({l})")),
            Some(g) if g.running && !force => {
                return err(
                    500,
                    format!("unable to destroy CT {vmid} - container is running"),
                )
            }
            Some(g) => g.lock = Some("destroyed".into()),
        }
        let upid = self.new_task(&mut st, "vzdestroy", &vmid.to_string(), user);
        drop(st);
        self.run_task(upid.clone(), "vzdestroy", move |st, fail| {
            if fail {
                if let Some(g) = st.guests.get_mut(&vmid) {
                    g.lock = None;
                }
                return (vec![], Err(format!("error during cfs-locked 'storage-local-lvm' operation: simulated failure for CT {vmid}")));
            }
            st.guests.remove(&vmid);
            let mut log = vec![format!("Logical volume \"vm-{vmid}-disk-0\" successfully removed.")];
            if purge {
                log.push(format!("purging CT {vmid} from related configurations.."));
            }
            (log, Ok(()))
        });
        Reply::Data(Value::String(upid))
    }

    async fn set_config(self: &Arc<Self>, vmid: u32, params: Params) -> Reply {
        if let Err(r) = self.wait_unlocked(vmid).await {
            return r;
        }
        if let Some(f) = params.get("features") {
            if f.split(',')
                .filter_map(|i| i.split_once('='))
                .any(|(k, _)| k != "nesting")
            {
                return err(
                    403,
                    "changing feature flags (except nesting) is only allowed for root@pam",
                );
            }
        }
        let mut st = self.state();
        let Some(g) = st.guests.get_mut(&vmid) else {
            return conf_missing(&self.settings.node, vmid);
        };
        if let Some(l) = &g.lock {
            return err(500, format!("CT is locked ({l})"));
        }
        for (k, v) in &params {
            match k.as_str() {
                "node" | "vmid" | "digest" | "revert" => {}
                "delete" => {
                    for key in v.split([',', ';', ' ']).filter(|k| !k.is_empty()) {
                        g.config.remove(key);
                    }
                }
                _ => {
                    let value = match v.parse::<u64>() {
                        Ok(n) if !k.starts_with("net") && k != "tags" && k != "hostname" => {
                            json!(n)
                        }
                        _ => json!(v),
                    };
                    g.config.insert(k.clone(), value);
                }
            }
        }
        Reply::Data(Value::Null)
    }

    fn task_status(&self, params: &Params) -> Reply {
        let upid = params.get("upid").cloned().unwrap_or_default();
        let st = self.state();
        let Some(t) = st.tasks.get(&upid) else {
            return unknown_task(&upid);
        };
        let mut m = json!({"upid": t.upid, "node": self.settings.node, "pid": t.pid, "pstart": t.pstart,
            "starttime": t.starttime, "type": t.task_type, "id": t.id, "user": t.user,
            "status": if t.exitstatus.is_some() {"stopped"} else {"running"}});
        if let Some(e) = &t.exitstatus {
            m["exitstatus"] = json!(e);
        }
        Reply::Data(m)
    }

    fn task_log(&self, params: &Params) -> Reply {
        let upid = params.get("upid").cloned().unwrap_or_default();
        let start: usize = params
            .get("start")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let limit: usize = params
            .get("limit")
            .and_then(|s| s.parse().ok())
            .unwrap_or(50);
        let st = self.state();
        let Some(t) = st.tasks.get(&upid) else {
            return unknown_task(&upid);
        };
        let lines: Vec<Value> = t
            .log
            .iter()
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(i, l)| json!({"n": i + 1, "t": l}))
            .collect();
        Reply::DataTotal(Value::Array(lines), t.log.len())
    }

    fn storage_content(&self, params: &Params) -> Reply {
        let storage = params.get("storage").map(String::as_str).unwrap_or("");
        let content = params.get("content").map(String::as_str);
        if storage == "local" {
            if content.is_some_and(|c| c != "vztmpl") {
                return Reply::Data(json!([]));
            }
            return Reply::Data(Value::Array(
                self.settings
                    .templates
                    .iter()
                    .filter(|t| t.volid.starts_with("local:"))
                    .map(|t| {
                        let format = if t.volid.ends_with(".tar.zst") { "tzst" } else if t.volid.ends_with(".tar.xz") { "txz" } else { "tgz" };
                        json!({"volid": t.volid, "format": format, "size": t.size, "content": "vztmpl", "ctime": 1717000000})
                    })
                    .collect(),
            ));
        }
        if !self.settings.rootdir_storages.iter().any(|s| s == storage) {
            return err(500, format!("storage '{storage}' does not exist"));
        }
        if content.is_some_and(|c| c != "rootdir" && c != "images") {
            return Reply::Data(json!([]));
        }
        let st = self.state();
        Reply::Data(Value::Array(
            st.guests
                .iter()
                .filter_map(|(vmid, g)| {
                    let r = g.config.get("rootfs")?.as_str()?;
                    let vol = r.split(',').next()?;
                    vol.starts_with(&format!("{storage}:"))
                        .then(|| json!({"volid": vol, "vmid": vmid, "format": "raw", "content": "rootdir", "size": 0}))
                })
                .collect(),
        ))
    }
}

fn unknown_task(upid: &str) -> Reply {
    if !upid.starts_with("UPID:") || upid.split(':').count() != 9 {
        return err(500, format!("unable to parse worker upid '{upid}'"));
    }
    err(
        500,
        format!("unable to open file '/var/log/pve/tasks/{upid}' - No such file or directory"),
    )
}

pub fn not_implemented(method: &str, segments: &[String]) -> Reply {
    err(
        501,
        format!("Method '{method} /{}' not implemented", segments.join("/")),
    )
}
