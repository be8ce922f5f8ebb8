//! `proxrt create|start|stop|rm|ps|inspect|logs|exec`: containers through CRI, as
//! crictl does it, for hosts without kubelet.

use std::io::Write;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{
    Container, ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState,
    ContainerStateValue, ContainerStatusRequest, ContainerStatusResponse, CreateContainerRequest,
    ExecSyncRequest, ImageSpec, KeyValue, LinuxContainerConfig, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListContainersRequest, PodSandboxConfig,
    PodSandboxStatus, RemoveContainerRequest, StartContainerRequest, StopContainerRequest,
};

use super::pods::{for_each, label_selector, pod_status, print_inspect};
use super::run::{follow_until_exit, LogFollower};
use super::table::{age, short_id, Table};
use super::{config_file, ClientError, Cri};
use crate::store::now_nanos;

/// What `proxrt create` makes a container from: a config file, or flags.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub pod_id: String,
    /// A crictl-style container config (JSON); the flags below are ignored when given.
    pub config: Option<PathBuf>,
    /// The pod's config (JSON) to send as sandbox_config; default: built from the
    /// pod's PodSandboxStatus.
    pub pod_config: Option<PathBuf>,
    pub name: Option<String>,
    pub image: Option<String>,
    pub env: Vec<String>,
    pub labels: Vec<String>,
    pub workdir: Option<String>,
    pub command: Vec<String>,
}

/// `proxrt create POD_ID [CONFIG [POD_CONFIG]]`: prints the new container's id.
pub async fn create(cri: &mut Cri, opts: &CreateOptions) -> Result<(), ClientError> {
    let pod = pod_status(cri, &opts.pod_id, false)
        .await?
        .status
        .ok_or_else(|| ClientError::Usage(format!("pod {} has no status", opts.pod_id)))?;
    let sandbox_config = match &opts.pod_config {
        Some(path) => config_file::read_config(path)?,
        None => sandbox_config_of(&pod),
    };
    let mut config: ContainerConfig = match (&opts.config, &opts.name, &opts.image) {
        (Some(path), _, _) => config_file::read_config(path)?,
        (None, Some(name), Some(image)) => container_config(name, image, opts)?,
        (None, _, _) => {
            return Err(ClientError::Usage(
                "create: give a container config file, or --name and --image".into(),
            ))
        }
    };
    inherit_namespaces(&mut config, &sandbox_config);
    if config.log_path.is_empty() {
        if let Some(m) = &config.metadata {
            // The daemon ignores it when the pod has no log_directory.
            config.log_path = format!("{}/{}.log", m.name, m.attempt);
        }
    }
    let id = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        })
        .await
        .map_err(|s| ClientError::rpc("CreateContainer", s))?
        .into_inner()
        .container_id;
    println!("{id}");
    Ok(())
}

/// The parts of a pod's config its status carries back (kubelet would send the
/// config it made the pod with; the daemon keeps that one anyway).
fn sandbox_config_of(pod: &PodSandboxStatus) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: pod.metadata.clone(),
        labels: pod.labels.clone(),
        annotations: pod.annotations.clone(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: pod
                    .linux
                    .as_ref()
                    .and_then(|l| l.namespaces.as_ref())
                    .and_then(|n| n.options.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(
    name: &str,
    image: &str,
    opts: &CreateOptions,
) -> Result<ContainerConfig, ClientError> {
    Ok(ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: opts.command.clone(),
        working_dir: opts.workdir.clone().unwrap_or_default(),
        envs: parse_env(&opts.env)?,
        labels: label_selector(&opts.labels)?,
        ..Default::default()
    })
}

/// A container whose config names no namespace options gets the pod's, as kubelet
/// always sends them (a config file written for crictl often leaves them out).
fn inherit_namespaces(config: &mut ContainerConfig, pod: &PodSandboxConfig) {
    let linux = config
        .linux
        .get_or_insert_with(LinuxContainerConfig::default);
    let security = linux
        .security_context
        .get_or_insert_with(LinuxContainerSecurityContext::default);
    if security.namespace_options.is_none() {
        security.namespace_options = pod
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
    }
}

/// `-e KEY=VALUE` → CRI env entries (`-e KEY` is KEY set to "").
fn parse_env(env: &[String]) -> Result<Vec<KeyValue>, ClientError> {
    env.iter()
        .map(|e| {
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            if k.is_empty() {
                return Err(ClientError::Usage(format!("-e {e:?}: expected KEY=VALUE")));
            }
            Ok(KeyValue {
                key: k.into(),
                value: v.into(),
            })
        })
        .collect()
}

/// `proxrt start ID...`
pub async fn start(cri: &mut Cri, ids: &[String]) -> Result<(), ClientError> {
    for_each(ids, |id| {
        let mut cri = cri.clone();
        async move {
            cri.runtime
                .start_container(StartContainerRequest { container_id: id })
                .await
                .map_err(|s| ClientError::rpc("StartContainer", s))
                .map(drop)
        }
    })
    .await
}

/// `proxrt stop [-t SECS] ID...`: the stop signal, then SIGKILL after `timeout` seconds.
pub async fn stop(cri: &mut Cri, ids: &[String], timeout: i64) -> Result<(), ClientError> {
    for_each(ids, |id| {
        let mut cri = cri.clone();
        async move { stop_one(&mut cri, id, timeout).await }
    })
    .await
}

async fn stop_one(cri: &mut Cri, id: String, timeout: i64) -> Result<(), ClientError> {
    cri.runtime
        .stop_container(StopContainerRequest {
            container_id: id,
            timeout,
        })
        .await
        .map_err(|s| ClientError::rpc("StopContainer", s))
        .map(drop)
}

/// `proxrt rm [-f] ID...`: with `force`, kills each container first.
pub async fn rm(cri: &mut Cri, ids: &[String], force: bool) -> Result<(), ClientError> {
    for_each(ids, |id| {
        let mut cri = cri.clone();
        async move {
            if force {
                stop_one(&mut cri, id.clone(), 0).await?;
            }
            cri.runtime
                .remove_container(RemoveContainerRequest { container_id: id })
                .await
                .map_err(|s| ClientError::rpc("RemoveContainer", s))
                .map(drop)
        }
    })
    .await
}

#[derive(Debug, Clone, Default)]
pub struct PsOptions {
    /// Every container, not only running ones.
    pub all: bool,
    pub quiet: bool,
    pub pod: Option<String>,
    /// `created`, `running`, `exited` or `unknown`; overrides `all`.
    pub state: Option<String>,
    pub labels: Vec<String>,
}

/// `proxrt ps`
pub async fn ps(cri: &mut Cri, opts: &PsOptions) -> Result<(), ClientError> {
    let state = match (&opts.state, opts.all) {
        (Some(s), _) => Some(container_state(s)?),
        (None, true) => None,
        (None, false) => Some(ContainerState::ContainerRunning),
    };
    let filter = ContainerFilter {
        id: String::new(),
        state: state.map(|s| ContainerStateValue { state: s as i32 }),
        pod_sandbox_id: opts.pod.clone().unwrap_or_default(),
        label_selector: label_selector(&opts.labels)?,
    };
    let mut containers = cri
        .runtime
        .list_containers(ListContainersRequest {
            filter: Some(filter),
        })
        .await
        .map_err(|s| ClientError::rpc("ListContainers", s))?
        .into_inner()
        .containers;
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    if opts.quiet {
        for c in &containers {
            println!("{}", c.id);
        }
    } else {
        print!("{}", container_table(&containers, now_nanos()));
    }
    Ok(())
}

fn container_table(containers: &[Container], now: i64) -> String {
    let mut t = Table::new(&["CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "POD"]);
    for c in containers {
        t.row(vec![
            short_id(&c.id).into(),
            c.image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default(),
            age(now, c.created_at),
            state_name(c.state).into(),
            c.metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            short_id(&c.pod_sandbox_id).into(),
        ]);
    }
    t.render()
}

fn state_name(state: i32) -> &'static str {
    match ContainerState::try_from(state) {
        Ok(ContainerState::ContainerCreated) => "Created",
        Ok(ContainerState::ContainerRunning) => "Running",
        Ok(ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

fn container_state(s: &str) -> Result<ContainerState, ClientError> {
    match s.to_ascii_lowercase().as_str() {
        "created" => Ok(ContainerState::ContainerCreated),
        "running" => Ok(ContainerState::ContainerRunning),
        "exited" => Ok(ContainerState::ContainerExited),
        "unknown" => Ok(ContainerState::ContainerUnknown),
        _ => Err(ClientError::Usage(format!(
            "--state {s:?}: expected created, running, exited or unknown"
        ))),
    }
}

async fn container_status(
    cri: &mut Cri,
    id: &str,
    verbose: bool,
) -> Result<ContainerStatusResponse, ClientError> {
    Ok(cri
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose,
        })
        .await
        .map_err(|s| ClientError::rpc("ContainerStatus", s))?
        .into_inner())
}

/// `proxrt inspect ID`: ContainerStatus with verbose info, as JSON.
pub async fn inspect(cri: &mut Cri, id: &str) -> Result<(), ClientError> {
    let resp = container_status(cri, id, true).await?;
    print_inspect(serde_json::json!({ "status": resp.status }), resp.info);
    Ok(())
}

/// `proxrt logs [-f] ID`: the text of each record of the container's CRI log file, to
/// stdout or stderr as it was written; with `follow`, until the container exits. The
/// file is read directly, so this runs on the daemon's host.
pub async fn logs(cri: &mut Cri, id: &str, follow: bool) -> Result<(), ClientError> {
    let status = cri.status_of(id).await?;
    if status.log_path.is_empty() {
        return Err(ClientError::Usage(format!(
            "container {} has no log file (its pod has no log_directory or it has no log_path)",
            status.id
        )));
    }
    let path = Path::new(&status.log_path);
    if follow {
        follow_until_exit(cri, &status.id, path).await?;
    } else {
        LogFollower::new(path).print_new();
    }
    Ok(())
}

/// `proxrt exec [--timeout S] ID -- CMD...`: ExecSync; prints the command's output and
/// returns its exit code.
pub async fn exec(
    cri: &mut Cri,
    id: &str,
    cmd: &[String],
    timeout: i64,
) -> Result<i32, ClientError> {
    if cmd.is_empty() {
        return Err(ClientError::Usage("exec: give the command after --".into()));
    }
    let r = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: cmd.to_vec(),
            timeout,
        })
        .await
        .map_err(|s| ClientError::rpc("ExecSync", s))?
        .into_inner();
    let _ = std::io::stdout().write_all(&r.stdout);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(&r.stderr);
    Ok(r.exit_code)
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{
        LinuxPodSandboxStatus, Namespace, NamespaceMode, NamespaceOption, PodSandboxMetadata,
    };

    use super::*;

    #[test]
    fn container_table_shows_short_ids_states_and_ages() {
        let now = 1_800_000_000_000_000_000;
        let c = Container {
            id: "c".repeat(64),
            pod_sandbox_id: "p".repeat(64),
            metadata: Some(ContainerMetadata {
                name: "main".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: "docker.io/library/busybox:latest".into(),
                ..Default::default()
            }),
            state: ContainerState::ContainerExited as i32,
            created_at: now - 5_000_000_000,
            ..Default::default()
        };
        let table = container_table(&[c], now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "CONTAINER       IMAGE                              CREATED         STATE    NAME   POD"
        );
        assert_eq!(
            lines[1],
            "ccccccccccccc   docker.io/library/busybox:latest   5 seconds ago   Exited   main   ppppppppppppp"
        );
    }

    #[test]
    fn container_states_parse_and_print() {
        assert_eq!(
            container_state("Running").unwrap(),
            ContainerState::ContainerRunning
        );
        assert_eq!(
            container_state("exited").unwrap(),
            ContainerState::ContainerExited
        );
        assert!(container_state("stopped").is_err());
        assert_eq!(
            state_name(ContainerState::ContainerCreated as i32),
            "Created"
        );
        assert_eq!(state_name(42), "Unknown");
    }

    #[test]
    fn env_flags_become_key_values() {
        let env = parse_env(&["A=1".into(), "B=x=y".into(), "C".into()]).unwrap();
        let pairs: Vec<(&str, &str)> = env
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect();
        assert_eq!(pairs, [("A", "1"), ("B", "x=y"), ("C", "")]);
        assert!(parse_env(&["=1".into()]).is_err());
    }

    #[test]
    fn created_containers_share_the_pods_namespaces() {
        let pod = PodSandboxStatus {
            id: "p".into(),
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                ..Default::default()
            }),
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace {
                    options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                }),
            }),
            ..Default::default()
        };
        let sandbox = sandbox_config_of(&pod);
        assert_eq!(sandbox.metadata.as_ref().unwrap().name, "web");
        let opts = CreateOptions {
            command: vec!["sleep".into(), "1".into()],
            workdir: Some("/tmp".into()),
            ..Default::default()
        };
        let mut c = container_config("main", "busybox", &opts).unwrap();
        assert_eq!(c.command, ["sleep", "1"]);
        assert_eq!(c.working_dir, "/tmp");
        inherit_namespaces(&mut c, &sandbox);
        let ns = c
            .linux
            .as_ref()
            .unwrap()
            .security_context
            .as_ref()
            .unwrap()
            .namespace_options
            .clone()
            .unwrap();
        assert_eq!(ns.network, NamespaceMode::Node as i32);

        // Options the config names are kept.
        let own = NamespaceOption {
            pid: NamespaceMode::Pod as i32,
            ..Default::default()
        };
        c.linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .namespace_options = Some(own.clone());
        inherit_namespaces(&mut c, &sandbox);
        assert_eq!(
            c.linux.unwrap().security_context.unwrap().namespace_options,
            Some(own)
        );
    }
}
