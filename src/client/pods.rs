//! `proxrt pods|runp|stopp|rmp|inspectp`: pod sandboxes through CRI, as crictl does
//! it, for hosts without kubelet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode,
    NamespaceOption, PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata,
    PodSandboxState, PodSandboxStateValue, PodSandboxStatusRequest, PodSandboxStatusResponse,
    RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};

use super::run::LOG_ROOT;
use super::table::{age, short_id, Table};
use super::{config_file, ClientError, Cri};
use crate::store::now_nanos;

#[derive(Debug, Clone, Default)]
pub struct PodsOptions {
    pub quiet: bool,
    /// `ready` or `notready`.
    pub state: Option<String>,
    /// `k=v` selectors, all of which must match.
    pub labels: Vec<String>,
}

/// `proxrt pods`
pub async fn pods(cri: &mut Cri, opts: &PodsOptions) -> Result<(), ClientError> {
    let state = opts.state.as_deref().map(pod_state).transpose()?;
    let filter = PodSandboxFilter {
        id: String::new(),
        state: state.map(|s| PodSandboxStateValue { state: s as i32 }),
        label_selector: label_selector(&opts.labels)?,
    };
    let mut items = cri
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await
        .map_err(|s| ClientError::rpc("ListPodSandbox", s))?
        .into_inner()
        .items;
    items.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    if opts.quiet {
        for p in &items {
            println!("{}", p.id);
        }
    } else {
        print!("{}", pod_table(&items, now_nanos()));
    }
    Ok(())
}

fn pod_table(items: &[PodSandbox], now: i64) -> String {
    let mut t = Table::new(&["ID", "NAME", "NAMESPACE", "STATE", "CREATED", "HANDLER"]);
    for p in items {
        let (name, namespace) = p
            .metadata
            .as_ref()
            .map(|m| (m.name.clone(), m.namespace.clone()))
            .unwrap_or_default();
        let state = match PodSandboxState::try_from(p.state) {
            Ok(PodSandboxState::SandboxReady) => "Ready",
            _ => "NotReady",
        };
        let handler = if p.runtime_handler.is_empty() {
            "(default)"
        } else {
            p.runtime_handler.as_str()
        };
        t.row(vec![
            short_id(&p.id).into(),
            name,
            namespace,
            state.into(),
            age(now, p.created_at),
            handler.into(),
        ]);
    }
    t.render()
}

fn pod_state(s: &str) -> Result<PodSandboxState, ClientError> {
    match s.to_ascii_lowercase().as_str() {
        "ready" => Ok(PodSandboxState::SandboxReady),
        "notready" | "not-ready" => Ok(PodSandboxState::SandboxNotready),
        _ => Err(ClientError::Usage(format!(
            "--state {s:?}: expected ready or notready"
        ))),
    }
}

/// `--label k=v` selectors → CRI's label_selector (every pair must match).
pub(super) fn label_selector(labels: &[String]) -> Result<HashMap<String, String>, ClientError> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(ClientError::Usage(format!(
                "--label {l:?}: expected KEY=VALUE"
            ))),
        })
        .collect()
}

/// What `proxrt runp` makes a pod from: a config file, or flags.
#[derive(Debug, Clone, Default)]
pub struct RunpOptions {
    /// A crictl-style pod config (JSON); the flags below are ignored when it is given.
    pub config: Option<PathBuf>,
    pub name: Option<String>,
    pub namespace: String,
    pub host_network: bool,
    /// `k=v` pod labels.
    pub labels: Vec<String>,
    pub runtime_handler: String,
}

/// `proxrt runp`: prints the new pod's id.
pub async fn runp(cri: &mut Cri, opts: &RunpOptions) -> Result<(), ClientError> {
    let config: PodSandboxConfig = match (&opts.config, &opts.name) {
        (Some(path), _) => with_hostname(config_file::read_config(path)?),
        (None, Some(name)) => {
            let uid = format!("proxrt-runp-{}", crate::store::random_hex(8));
            let mut config = pod_config(name, &opts.namespace, &uid, opts.host_network);
            config.labels = label_selector(&opts.labels)?;
            config
        }
        (None, None) => {
            return Err(ClientError::Usage(
                "runp: give a pod config file or --name".into(),
            ))
        }
    };
    let id = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: opts.runtime_handler.clone(),
        })
        .await
        .map_err(|s| ClientError::rpc("RunPodSandbox", s))?
        .into_inner()
        .pod_sandbox_id;
    println!("{id}");
    Ok(())
}

/// A pod's hostname defaults to its name (kubelet always sends one; crictl files often
/// leave it out).
fn with_hostname(mut config: PodSandboxConfig) -> PodSandboxConfig {
    if config.hostname.is_empty() {
        config.hostname = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
    }
    config
}

/// The log directory `runp --name` gives a pod, named like kubelet's /var/log/pods
/// entries; `rmp` removes it again.
fn log_directory(namespace: &str, name: &str, uid: &str) -> PathBuf {
    Path::new(LOG_ROOT).join(format!("{namespace}_{name}_{uid}"))
}

/// A pod config as `proxrt runp --name` and `proxrt run` make it: its own network
/// namespace unless `host_network`, a pid namespace per container, logs under LOG_ROOT.
pub(super) fn pod_config(
    name: &str,
    namespace: &str,
    uid: &str,
    host_network: bool,
) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: namespace.into(),
            uid: uid.into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_directory(namespace, name, uid).display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: if host_network {
                        NamespaceMode::Node
                    } else {
                        NamespaceMode::Pod
                    } as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) async fn pod_status(
    cri: &mut Cri,
    id: &str,
    verbose: bool,
) -> Result<PodSandboxStatusResponse, ClientError> {
    Ok(cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose,
        })
        .await
        .map_err(|s| ClientError::rpc("PodSandboxStatus", s))?
        .into_inner())
}

/// `proxrt stopp ID...`
pub async fn stopp(cri: &mut Cri, ids: &[String]) -> Result<(), ClientError> {
    for_each(ids, |id| {
        let mut cri = cri.clone();
        async move {
            cri.runtime
                .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id })
                .await
                .map_err(|s| ClientError::rpc("StopPodSandbox", s))
                .map(drop)
        }
    })
    .await
}

/// `proxrt rmp [-f] ID...`: with `force`, stops each pod first. A log directory that
/// `runp --name` made is removed with its pod.
pub async fn rmp(cri: &mut Cri, ids: &[String], force: bool) -> Result<(), ClientError> {
    for_each(ids, |id| {
        let mut cri = cri.clone();
        async move {
            let status = pod_status(&mut cri, &id, false)
                .await?
                .status
                .unwrap_or_default();
            let id = if status.id.is_empty() { id } else { status.id };
            if force {
                cri.runtime
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await
                    .map_err(|s| ClientError::rpc("StopPodSandbox", s))?;
            }
            cri.runtime
                .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
                .map_err(|s| ClientError::rpc("RemovePodSandbox", s))?;
            if let Some(m) = status.metadata {
                let _ = std::fs::remove_dir_all(log_directory(&m.namespace, &m.name, &m.uid));
            }
            Ok(())
        }
    })
    .await
}

/// `proxrt inspectp ID`: PodSandboxStatus with verbose info, as JSON.
pub async fn inspectp(cri: &mut Cri, id: &str) -> Result<(), ClientError> {
    let resp = pod_status(cri, id, true).await?;
    print_inspect(serde_json::json!({ "status": resp.status }), resp.info);
    Ok(())
}

/// Prints `{status, <info key>: <info parsed as JSON>...}`.
pub(super) fn print_inspect(mut out: serde_json::Value, info: HashMap<String, String>) {
    for (k, v) in info {
        out[k] = serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v));
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
}

/// Runs `op` on every id in turn, printing each id that succeeded. Every id is tried;
/// all failures but the last are printed here and the last one is returned (`main`
/// prints it and exits 1).
pub(super) async fn for_each<F, Fut>(ids: &[String], mut op: F) -> Result<(), ClientError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let mut last = None;
    for id in ids {
        match op(id.clone()).await {
            Ok(()) => println!("{id}"),
            Err(e) => {
                if let Some(prev) = last.replace(e) {
                    eprintln!("proxrt: {prev}");
                }
            }
        }
    }
    last.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_need_key_and_equals() {
        let s = label_selector(&["app=web".into(), "tier=".into(), "x=a=b".into()]).unwrap();
        assert_eq!(s["app"], "web");
        assert_eq!(s["tier"], "");
        assert_eq!(s["x"], "a=b");
        assert!(label_selector(&["novalue".into()]).is_err());
        assert!(label_selector(&["=v".into()]).is_err());
        assert!(label_selector(&[]).unwrap().is_empty());
    }

    #[test]
    fn pod_states_parse_case_insensitively() {
        assert_eq!(pod_state("Ready").unwrap(), PodSandboxState::SandboxReady);
        assert_eq!(
            pod_state("notready").unwrap(),
            PodSandboxState::SandboxNotready
        );
        assert!(pod_state("running").is_err());
    }

    #[test]
    fn pod_table_shows_short_ids_and_ages() {
        let now = 1_800_000_000_000_000_000;
        let pod = |id: &str, name: &str, state: PodSandboxState, handler: &str| PodSandbox {
            id: id.into(),
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            state: state as i32,
            created_at: now - 120_000_000_000,
            runtime_handler: handler.into(),
            ..Default::default()
        };
        let table = pod_table(
            &[
                pod(&"a".repeat(64), "web", PodSandboxState::SandboxReady, ""),
                pod(
                    &"b".repeat(64),
                    "db",
                    PodSandboxState::SandboxNotready,
                    "crun",
                ),
            ],
            now,
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "ID              NAME   NAMESPACE   STATE      CREATED         HANDLER"
        );
        assert_eq!(
            lines[1],
            "aaaaaaaaaaaaa   web    default     Ready      2 minutes ago   (default)"
        );
        assert_eq!(
            lines[2],
            "bbbbbbbbbbbbb   db     default     NotReady   2 minutes ago   crun"
        );
    }

    #[test]
    fn runp_flags_make_a_pod_with_its_own_log_directory() {
        let c = pod_config("web", "team", "u1", true);
        assert_eq!(c.log_directory, "/var/log/proxrt/pods/team_web_u1");
        assert_eq!(c.hostname, "web");
        let ns = c
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, NamespaceMode::Node as i32);
    }
}
