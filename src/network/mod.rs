//! Pod networking through CNI (docs/networking.md): which network config is in force
//! (NetworkReady), the pod CIDR kubelet hands over (UpdateRuntimeConfig), and attaching
//! and detaching a pod's network namespace. The host backends call [`Network::attach`]
//! when they make a pod with its own network namespace and [`Network::detach`] when they
//! stop it; what ADD returned is kept in the sandbox record ([`PodNetwork`]) so that DEL,
//! also after a daemon restart, runs the same config with the same arguments.

pub mod cni;
pub mod fast;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use k8s_cri::v1::{PodSandboxConfig, Protocol};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::CniConfig;
use crate::error::{Classify, Kind};

/// The interface name inside the pod (kubelet's and containerd's).
pub const IFNAME: &str = "eth0";

/// The file UpdateRuntimeConfig writes from `[cni] conf_template` (containerd writes
/// `10-containerd-net.conflist`).
pub const TEMPLATE_FILE: &str = "10-proxrt-net.conflist";

/// The reason NetworkReady carries while it is false (kubelet's and containerd's word).
pub const NOT_READY_REASON: &str = "NetworkPluginNotReady";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No valid config: the pod cannot get a network now.
    #[error("network not ready: {0}")]
    NotReady(String),
    #[error("{0}")]
    Invalid(String),
    /// A plugin failed (its name and message); what the list had made is undone.
    #[error("set up pod network {network:?} ({file}): {source}")]
    Plugin {
        network: String,
        file: String,
        source: cni::PluginError,
    },
    #[error("tear down pod network {network:?}: {source}")]
    Teardown {
        network: String,
        source: cni::PluginError,
    },
    #[error("{0}")]
    Internal(String),
}

impl Classify for NetworkError {
    /// A plugin failure is the host's, not the request's: Internal (containerd lets it
    /// through as Unknown; proxrt keeps every internal failure Internal, STYLE.md).
    fn kind(&self) -> Kind {
        match self {
            NetworkError::NotReady(_) => Kind::FailedPrecondition,
            NetworkError::Invalid(_) => Kind::InvalidArgument,
            NetworkError::Plugin { .. }
            | NetworkError::Teardown { .. }
            | NetworkError::Internal(_) => Kind::Internal,
        }
    }
}

/// What a pod's ADD used and returned, persisted in its sandbox record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodNetwork {
    /// The config file it came from (for `inspect`; DEL uses `config`).
    pub file: PathBuf,
    /// The network list as used at ADD (JSON), so that DEL runs the same plugins even
    /// when the directory changed since.
    pub config: String,
    pub container_id: String,
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// The capability args (`runtimeConfig` before filtering per plugin), JSON.
    pub runtime: String,
    /// The list's final result, JSON: `prevResult` of DEL.
    pub result: String,
    /// The pod's addresses from the result, IPv4 first.
    pub ips: Vec<String>,
    /// ADD was done by the fast path (src/network/fast), not the plugins.
    #[serde(default)]
    pub in_process: bool,
}

/// What ADD needs of a pod.
#[derive(Debug, Clone, Copy)]
pub struct AttachRequest<'a> {
    /// The pod sandbox id (`CNI_CONTAINERID`, `K8S_POD_INFRA_CONTAINER_ID`).
    pub id: &'a str,
    pub config: &'a PodSandboxConfig,
    /// The pod's network namespace file.
    pub netns: &'a Path,
}

/// The config in force and what it was read from.
struct Loaded {
    /// (file, modified, length) of every config file when last read.
    signature: Vec<(PathBuf, Option<SystemTime>, u64)>,
    current: Result<Arc<cni::NetworkList>, String>,
}

pub struct Network {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    conf_template: PathBuf,
    fast_path: bool,
    /// Which plugin builds the fast path may stand in for.
    plugin_check: fast::PluginCheck,
    loaded: Mutex<Option<Loaded>>,
    /// From UpdateRuntimeConfig: kubelet's `podCIDR` (comma-separated for dual stack).
    pod_cidrs: Mutex<Vec<String>>,
}

impl Network {
    pub fn new(config: &CniConfig) -> Network {
        Network {
            conf_dir: config.conf_dir.clone(),
            bin_dirs: config.bin_dirs.clone(),
            conf_template: config.conf_template.clone(),
            fast_path: config.fast_path,
            plugin_check: fast::PluginCheck::default(),
            loaded: Mutex::new(None),
            pod_cidrs: Mutex::new(Vec::new()),
        }
    }

    /// The config in force, re-read when the directory's config files changed (their
    /// names, mtimes or sizes: a stat per file, cheap enough for every Status call, and
    /// it sees a file written in place, a directory made later and a bin dir that got
    /// its plugins) or when there was none. Err: why NetworkReady is false.
    pub fn current(&self) -> Result<Arc<cni::NetworkList>, String> {
        let signature = self.signature();
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = loaded.as_ref() {
            if l.signature == signature && l.current.is_ok() {
                return l.current.clone();
            }
        }
        let current = cni::config::load_dir(&self.conf_dir, &self.bin_dirs).map(Arc::new);
        let changed = loaded.as_ref().map(|l| {
            (
                l.current.as_ref().map(|c| c.file.clone()).ok(),
                current.as_ref().map(|c| c.file.clone()).ok(),
            )
        });
        match (&changed, &current) {
            (Some((before, now)), _) if before == now => {}
            (_, Ok(list)) => {
                tracing::info!(file = %list.file.display(), network = %list.name, plugins = ?list.types(), "CNI config in force")
            }
            (_, Err(why)) => tracing::warn!(reason = %why, "no CNI config: NetworkReady is false"),
        }
        *loaded = Some(Loaded {
            signature,
            current: current.clone(),
        });
        current
    }

    fn signature(&self) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
        cni::config::config_files(&self.conf_dir)
            .unwrap_or_default()
            .into_iter()
            .map(|f| {
                let meta = std::fs::metadata(&f).ok();
                let modified = meta.as_ref().and_then(|m| m.modified().ok());
                let len = meta.map(|m| m.len()).unwrap_or(0);
                (f, modified, len)
            })
            .collect()
    }

    /// NetworkReady's reason and message while it is false.
    pub fn not_ready(&self) -> Option<(String, String)> {
        self.current()
            .err()
            .map(|why| (NOT_READY_REASON.to_owned(), format!("cni config: {why}")))
    }

    /// What `proxrt info` shows.
    pub fn describe(&self) -> Value {
        let current = self.current();
        serde_json::json!({
            "confDir": self.conf_dir,
            "binDirs": self.bin_dirs,
            "confTemplate": self.conf_template,
            "config": current.as_ref().ok().map(|l| serde_json::json!({
                "file": l.file,
                "name": l.name,
                "cniVersion": l.cni_version,
                "plugins": l.types(),
            })),
            "notReady": current.err(),
            "podCIDRs": self.pod_cidrs(),
        })
    }

    pub fn pod_cidrs(&self) -> Vec<String> {
        self.pod_cidrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// UpdateRuntimeConfig: keeps kubelet's pod CIDR(s) for the `ipRanges` capability of
    /// later ADDs and, with `[cni] conf_template` and no valid config yet, writes the
    /// template filled in as `<conf_dir>/10-proxrt-net.conflist` (containerd's behaviour).
    /// An empty CIDR changes nothing (containerd's too).
    pub fn set_pod_cidr(&self, pod_cidr: &str) -> Result<(), NetworkError> {
        let cidrs = parse_cidrs(pod_cidr).map_err(NetworkError::Invalid)?;
        if cidrs.is_empty() {
            return Ok(());
        }
        *self.pod_cidrs.lock().unwrap_or_else(|e| e.into_inner()) = cidrs.clone();
        tracing::info!(pod_cidrs = ?cidrs, "pod CIDR from UpdateRuntimeConfig");
        if self.conf_template.as_os_str().is_empty() || self.current().is_ok() {
            return Ok(());
        }
        let template = std::fs::read_to_string(&self.conf_template).map_err(|e| {
            NetworkError::Internal(format!(
                "read [cni] conf_template {}: {e}",
                self.conf_template.display()
            ))
        })?;
        let text = fill_template(&template, &cidrs);
        let path = self.conf_dir.join(TEMPLATE_FILE);
        std::fs::create_dir_all(&self.conf_dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                crate::store::atomic_write(&path, text.as_bytes()).map_err(|e| e.to_string())
            })
            .map_err(|e| NetworkError::Internal(format!("write {}: {e}", path.display())))?;
        tracing::info!(file = %path.display(), "CNI config written from the template");
        Ok(())
    }

    /// ADD for a new pod with the config in force. A plugin failure runs DEL of the
    /// whole list before returning, so nothing the list made stays (veth, address,
    /// iptables rules).
    pub async fn attach(&self, pod: AttachRequest<'_>) -> Result<PodNetwork, NetworkError> {
        let list = self.current().map_err(NetworkError::NotReady)?;
        let args = cni_args(pod.id, pod.config);
        let runtime = runtime_args(pod.config, &self.pod_cidrs()).map_err(NetworkError::Invalid)?;
        let inv = cni::Invocation {
            command: cni::Command::Add,
            container_id: pod.id,
            netns: pod.netns,
            ifname: IFNAME,
            args: &args,
            bin_dirs: &self.bin_dirs,
        };
        let started = std::time::Instant::now();
        let plan = self.fast_plan("ADD", &list, &runtime, pod.id);
        let path = if plan.is_some() {
            "in_process"
        } else {
            "plugins"
        };
        let added = match &plan {
            Some(plan) => fast::add(plan, pod.id, pod.netns, IFNAME)
                .await
                .map_err(|message| cni::PluginError {
                    plugin: "bridge (in-process)".into(),
                    command: "ADD",
                    message,
                }),
            None => cni::add(&list, &inv, &runtime).await,
        };
        crate::metrics::cni_finished("add", path, added.is_ok(), started.elapsed());
        let result = match added {
            Ok(r) => r,
            Err(source) => {
                // The plugins' DEL undoes the fast path's work as well as their own.
                let del = cni::Invocation {
                    command: cni::Command::Del,
                    ..inv
                };
                if let Err(e) = cni::del(&list, &del, &runtime, None).await {
                    tracing::warn!(sandbox = pod.id, error = %e, "DEL after a failed ADD");
                }
                return Err(NetworkError::Plugin {
                    network: list.name.clone(),
                    file: list.file.display().to_string(),
                    source,
                });
            }
        };
        let ips = cni::pod_ips(&result, IFNAME)
            .iter()
            .map(IpAddr::to_string)
            .collect();
        Ok(PodNetwork {
            file: list.file.clone(),
            config: list.to_json().to_string(),
            container_id: pod.id.to_owned(),
            ifname: IFNAME.to_owned(),
            args,
            runtime: Value::Object(runtime).to_string(),
            result: result.to_string(),
            ips,
            in_process: plan.is_some(),
        })
    }

    /// The fast path's plan for a pod's ADD or DEL (`command`, for the log), when it is
    /// on, takes the config and the pod's capability args, and the plugin binaries are
    /// builds it reproduces.
    fn fast_plan(
        &self,
        command: &str,
        list: &cni::NetworkList,
        runtime: &Map<String, Value>,
        id: &str,
    ) -> Option<fast::Plan> {
        if !self.fast_path || !fast::plain_name(id) {
            return None;
        }
        let verdict = fast::plan(list, runtime).and_then(|plan| {
            for kind in list.types().into_iter().chain(["host-local"]) {
                let binary = cni::config::find_plugin(&self.bin_dirs, kind)
                    .ok_or_else(|| format!("plugin {kind} not found"))?;
                self.plugin_check.check(&binary)?;
            }
            Ok(plan)
        });
        match verdict {
            Ok(plan) => Some(plan),
            Err(why) => {
                tracing::debug!(sandbox = id, reason = %why, "CNI {command} through the plugins");
                None
            }
        }
    }

    /// DEL with what ADD used: the stored config, arguments and result. `netns` that is
    /// no longer a namespace (unmounted, host rebooted) is passed empty. Succeeds again
    /// when run twice (the plugins' DEL is idempotent). The fast path does it when it
    /// takes the stored config, unless the pod's interface holds other than one IPv4
    /// address; else the plugins.
    pub async fn detach(&self, net: &PodNetwork, netns: Option<&Path>) -> Result<(), NetworkError> {
        let bad = |what: &str, e: serde_json::Error| {
            NetworkError::Internal(format!("stored pod network {what}: {e}"))
        };
        let config: Value = serde_json::from_str(&net.config).map_err(|e| bad("config", e))?;
        let list = cni::config::parse(Path::new("stored.conflist"), config.to_string().as_bytes())
            .map_err(|e| NetworkError::Internal(format!("stored pod network config: {e}")))?;
        let runtime = match serde_json::from_str(&net.runtime).map_err(|e| bad("args", e))? {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let result: Value = serde_json::from_str(&net.result).map_err(|e| bad("result", e))?;
        let netns = cni::netns_for_del(netns);
        let started = std::time::Instant::now();
        if let Some(plan) = self.fast_plan("DEL", &list, &runtime, &net.container_id) {
            match fast::del(&plan, &net.container_id, &netns, &net.ifname).await {
                Ok(fast::DelOutcome::Done) => {
                    crate::metrics::cni_finished("del", "in_process", true, started.elapsed());
                    return Ok(());
                }
                Ok(fast::DelOutcome::Plugins(why)) => {
                    tracing::debug!(sandbox = %net.container_id, reason = %why, "CNI DEL through the plugins")
                }
                // The plugins' DEL takes what is left from where it stopped.
                Err(e) => {
                    tracing::warn!(sandbox = %net.container_id, error = %e, "in-process CNI DEL failed; the plugins' DEL follows")
                }
            }
        }
        let inv = cni::Invocation {
            command: cni::Command::Del,
            container_id: &net.container_id,
            netns: &netns,
            ifname: &net.ifname,
            args: &net.args,
            bin_dirs: &self.bin_dirs,
        };
        let deleted = cni::del(&list, &inv, &runtime, Some(&result)).await;
        crate::metrics::cni_finished("del", "plugins", deleted.is_ok(), started.elapsed());
        deleted.map_err(|source| NetworkError::Teardown {
            network: list.name.clone(),
            source,
        })
    }
}

impl Network {
    /// DEL for a pod whose ADD may or may not have run: a daemon killed between them and
    /// the sandbox record (issue 12, item 8). Runs the config in force now with the pod's
    /// arguments and no `prevResult`; the plugins' DEL is idempotent, so a pod that was
    /// never attached is fine. Without a config there is nothing to release.
    pub async fn release(
        &self,
        id: &str,
        config: &PodSandboxConfig,
        netns: Option<&Path>,
    ) -> Result<(), NetworkError> {
        let Ok(list) = self.current() else {
            return Ok(());
        };
        let args = cni_args(id, config);
        let runtime = runtime_args(config, &self.pod_cidrs()).map_err(NetworkError::Invalid)?;
        let netns = cni::netns_for_del(netns);
        let inv = cni::Invocation {
            command: cni::Command::Del,
            container_id: id,
            netns: &netns,
            ifname: IFNAME,
            args: &args,
            bin_dirs: &self.bin_dirs,
        };
        cni::del(&list, &inv, &runtime, None)
            .await
            .map_err(|source| NetworkError::Teardown {
                network: list.name.clone(),
                source,
            })
    }
}

/// `CNI_ARGS` as kubelet's peers pass them (`IgnoreUnknown` lets plugins that check
/// their args accept the K8S_ ones).
pub fn cni_args(id: &str, config: &PodSandboxConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID={}",
        m.namespace, m.name, m.uid
    )
}

/// The capability args of a pod (CNI CONVENTIONS.md): `portMappings` (host_port set),
/// `dns`, `bandwidth` (from kubernetes.io/ingress-bandwidth and egress-bandwidth) and
/// `ipRanges` (the pod CIDRs). Each reaches only the plugins declaring it.
pub fn runtime_args(
    config: &PodSandboxConfig,
    pod_cidrs: &[String],
) -> Result<Map<String, Value>, String> {
    let mut rt = Map::new();
    let ports: Vec<Value> = config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let protocol = match Protocol::try_from(p.protocol) {
                Ok(Protocol::Udp) => "udp",
                Ok(Protocol::Sctp) => "sctp",
                _ => "tcp",
            };
            let mut m = serde_json::json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": protocol,
            });
            if !p.host_ip.is_empty() {
                m["hostIP"] = Value::String(p.host_ip.clone());
            }
            m
        })
        .collect();
    if !ports.is_empty() {
        rt.insert("portMappings".into(), Value::Array(ports));
    }
    if let Some(dns) = &config.dns_config {
        rt.insert(
            "dns".into(),
            serde_json::json!({
                "servers": dns.servers,
                "searches": dns.searches,
                "options": dns.options,
            }),
        );
    }
    let rate = |key: &str| -> Result<Option<u64>, String> {
        match config.annotations.get(key) {
            None => Ok(None),
            Some(v) => parse_quantity(v)
                .map(Some)
                .ok_or_else(|| format!("annotation {key}: {v:?} is not a bandwidth like \"10M\"")),
        }
    };
    let (ingress, egress) = (
        rate("kubernetes.io/ingress-bandwidth")?,
        rate("kubernetes.io/egress-bandwidth")?,
    );
    if ingress.is_some() || egress.is_some() {
        // Burst as kubelet's and containerd's: effectively unlimited (bits).
        let mut b = Map::new();
        if let Some(r) = ingress {
            b.insert("ingressRate".into(), r.into());
            b.insert("ingressBurst".into(), (i32::MAX as u64).into());
        }
        if let Some(r) = egress {
            b.insert("egressRate".into(), r.into());
            b.insert("egressBurst".into(), (i32::MAX as u64).into());
        }
        rt.insert("bandwidth".into(), Value::Object(b));
    }
    if !pod_cidrs.is_empty() {
        let ranges: Vec<Value> = pod_cidrs
            .iter()
            .map(|c| serde_json::json!([{ "subnet": c }]))
            .collect();
        rt.insert("ipRanges".into(), Value::Array(ranges));
    }
    Ok(rt)
}

/// A Kubernetes quantity as the bandwidth annotations use it (`10M`, `1Gi`, `500k`,
/// `1000`), in units (bits per second); None for anything else (fractions included).
pub fn parse_quantity(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, suffix) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// kubelet's `podCIDR`: one CIDR or two (dual stack), comma-separated.
pub fn parse_cidrs(s: &str) -> Result<Vec<String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            let ok = c.split_once('/').is_some_and(|(ip, len)| {
                ip.parse::<IpAddr>().is_ok_and(|ip| {
                    len.parse::<u8>()
                        .is_ok_and(|l| l <= if ip.is_ipv4() { 32 } else { 128 })
                })
            });
            ok.then(|| c.to_owned())
                .ok_or_else(|| format!("pod CIDR {c:?} is not an address/prefix"))
        })
        .collect()
}

/// containerd's template placeholders: `{{.PodCIDR}}` the first CIDR,
/// `{{.PodCIDRRanges}}` all of them comma-separated (proxrt fills placeholders, it does
/// not run Go templates).
pub fn fill_template(template: &str, cidrs: &[String]) -> String {
    template
        .replace(
            "{{.PodCIDR}}",
            cidrs.first().map(String::as_str).unwrap_or(""),
        )
        .replace("{{.PodCIDRRanges}}", &cidrs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{DnsConfig, PodSandboxMetadata, PortMapping};

    fn pod() -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                namespace: "prod".into(),
                uid: "u-1".into(),
                attempt: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn cni_args_name_the_pod() {
        assert_eq!(
            cni_args("abc", &pod()),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
        );
    }

    #[test]
    fn capability_args_from_the_pod() {
        let mut p = pod();
        assert!(runtime_args(&p, &[]).unwrap().is_empty());
        p.port_mappings = vec![
            PortMapping {
                protocol: Protocol::Udp as i32,
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into(),
            },
            PortMapping {
                container_port: 80,
                host_port: 0,
                ..Default::default()
            },
        ];
        p.dns_config = Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            ..Default::default()
        });
        p.annotations
            .insert("kubernetes.io/ingress-bandwidth".into(), "10M".into());
        let rt = runtime_args(&p, &["10.244.1.0/24".into()]).unwrap();
        assert_eq!(
            Value::Object(rt.clone())["portMappings"],
            serde_json::json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}])
        );
        assert_eq!(rt["dns"]["servers"][0], "10.96.0.10");
        assert_eq!(rt["bandwidth"]["ingressRate"], 10_000_000);
        assert!(rt["bandwidth"].get("egressRate").is_none());
        assert_eq!(rt["ipRanges"][0][0]["subnet"], "10.244.1.0/24");
        p.annotations
            .insert("kubernetes.io/egress-bandwidth".into(), "fast".into());
        assert!(runtime_args(&p, &[])
            .unwrap_err()
            .contains("egress-bandwidth"));
    }

    #[test]
    fn quantities_and_cidrs() {
        assert_eq!(parse_quantity("1Mi"), Some(1 << 20));
        assert_eq!(parse_quantity("500k"), Some(500_000));
        assert_eq!(parse_quantity("1.5M"), None);
        assert_eq!(parse_quantity(""), None);
        assert_eq!(
            parse_cidrs("10.244.1.0/24, fd00:1::/64").unwrap(),
            ["10.244.1.0/24", "fd00:1::/64"]
        );
        assert!(parse_cidrs("").unwrap().is_empty());
        assert!(parse_cidrs("10.0.0.0/33").is_err());
        assert!(parse_cidrs("nope").is_err());
        assert_eq!(
            fill_template(
                r#"{"subnet":"{{.PodCIDR}}","all":"{{.PodCIDRRanges}}"}"#,
                &["a".into(), "b".into()]
            ),
            r#"{"subnet":"a","all":"a,b"}"#
        );
    }
}
