//! `proxrt bench pods`: the pod and container lifecycle kubelet drives, each CRI call
//! timed, against any CRI endpoint.
//!
//! Per round: RunPodSandbox, CreateContainer, StartContainer (and their sum, "pod +
//! container to running"), ContainerStatus, ListContainers, ExecSync `true`,
//! StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox. One untimed round
//! first warms caches (the image's snapshots, the daemon's first-use paths). With
//! `live`, that many idle containers (one pod each) are started before timing, to
//! show whether latency stays flat as the node fills up. Everything the benchmark made
//! is removed at the end, also after an error.

use std::path::{Path, PathBuf};
use std::time::Instant;

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, ImageSpec, ImageStatusRequest, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListContainersRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest,
};

use super::bench::Report;
use super::{ClientError, Cri};

/// The container under test: exits 0 on SIGTERM at once. A pid 1 without a handler
/// ignores SIGTERM, and a plain `sleep` would make StopContainer measure its timeout;
/// `wait` returns as soon as a trapped signal arrives.
const SCRIPT: &str = "trap 'exit 0' TERM; sleep 3600 & wait";
/// Seconds StopContainer may wait before SIGKILL (never reached with `SCRIPT`).
const STOP_TIMEOUT: i64 = 2;
/// The time from nothing to a running container, as a row of the report.
pub const POD_TO_RUNNING: &str = "pod+container to running";

/// Runs the workload; `image` must already be present on the endpoint.
pub async fn pods(
    cri: &mut Cri,
    image: &str,
    rounds: usize,
    live: usize,
) -> Result<Report, ClientError> {
    let present = cri
        .images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .map_err(|s| ClientError::rpc("ImageStatus", s))?
        .into_inner()
        .image
        .is_some();
    if !present {
        return Err(ClientError::Usage(format!(
            "image {image} is not present on the endpoint: pull or import it first"
        )));
    }
    let mut bench = Bench {
        cri: cri.clone(),
        image: image.to_owned(),
        run: crate::store::random_hex(4),
        logs: std::env::temp_dir().join(format!("proxrt-bench-{}", crate::store::random_hex(6))),
        pods: Vec::new(),
    };
    let result = bench.measure(rounds, live).await;
    bench.clean_up().await;
    result
}

struct Bench {
    cri: Cri,
    image: String,
    /// Distinguishes this run's pod names from another run's on the same endpoint.
    run: String,
    /// Pods' log directories live under it; removed at the end.
    logs: PathBuf,
    /// Every pod made and not yet removed: the cleanup list.
    pods: Vec<String>,
}

impl Bench {
    async fn measure(&mut self, rounds: usize, live: usize) -> Result<Report, ClientError> {
        for i in 0..live {
            let (pod, config) = self
                .run_pod(&mut Report::default(), &format!("live-{i}"))
                .await?;
            let id = self.create(&mut Report::default(), &pod, &config).await?;
            self.start(&mut Report::default(), &id).await?;
        }
        self.round(&mut Report::default(), "warmup").await?;
        let mut report = Report::default();
        for i in 0..rounds {
            self.round(&mut report, &format!("round-{i}")).await?;
        }
        Ok(report)
    }

    async fn round(&mut self, report: &mut Report, name: &str) -> Result<(), ClientError> {
        let started = Instant::now();
        let (pod, config) = self.run_pod(report, name).await?;
        let id = self.create(report, &pod, &config).await?;
        self.start(report, &id).await?;
        report.samples(POD_TO_RUNNING).add(started.elapsed());

        let runtime = &mut self.cri.runtime;
        report
            .time(
                "ContainerStatus",
                runtime.container_status(ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                }),
            )
            .await
            .map_err(|s| ClientError::rpc("ContainerStatus", s))?;
        report
            .time(
                "ListContainers",
                runtime.list_containers(ListContainersRequest { filter: None }),
            )
            .await
            .map_err(|s| ClientError::rpc("ListContainers", s))?;
        let exec = report
            .time(
                "ExecSync",
                runtime.exec_sync(ExecSyncRequest {
                    container_id: id.clone(),
                    cmd: vec!["true".into()],
                    timeout: 10,
                }),
            )
            .await
            .map_err(|s| ClientError::rpc("ExecSync", s))?
            .into_inner();
        if exec.exit_code != 0 {
            return Err(ClientError::Usage(format!(
                "ExecSync `true` exited {}: {}",
                exec.exit_code,
                String::from_utf8_lossy(&exec.stderr)
            )));
        }
        report
            .time(
                "StopContainer",
                runtime.stop_container(StopContainerRequest {
                    container_id: id.clone(),
                    timeout: STOP_TIMEOUT,
                }),
            )
            .await
            .map_err(|s| ClientError::rpc("StopContainer", s))?;
        report
            .time(
                "RemoveContainer",
                runtime.remove_container(RemoveContainerRequest { container_id: id }),
            )
            .await
            .map_err(|s| ClientError::rpc("RemoveContainer", s))?;
        report
            .time(
                "StopPodSandbox",
                runtime.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                }),
            )
            .await
            .map_err(|s| ClientError::rpc("StopPodSandbox", s))?;
        report
            .time(
                "RemovePodSandbox",
                runtime.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                }),
            )
            .await
            .map_err(|s| ClientError::rpc("RemovePodSandbox", s))?;
        self.pods.retain(|p| *p != pod);
        Ok(())
    }

    async fn run_pod(
        &mut self,
        report: &mut Report,
        name: &str,
    ) -> Result<(String, PodSandboxConfig), ClientError> {
        let name = format!("bench-{}-{name}", self.run);
        let config = pod_config(&name, &self.logs);
        let id = report
            .time(
                "RunPodSandbox",
                self.cri.runtime.run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: String::new(),
                }),
            )
            .await
            .map_err(|s| ClientError::rpc("RunPodSandbox", s))?
            .into_inner()
            .pod_sandbox_id;
        self.pods.push(id.clone());
        Ok((id, config))
    }

    async fn create(
        &mut self,
        report: &mut Report,
        pod: &str,
        config: &PodSandboxConfig,
    ) -> Result<String, ClientError> {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.to_owned(),
            config: Some(container_config(&self.image, config)),
            sandbox_config: Some(config.clone()),
        };
        Ok(report
            .time("CreateContainer", self.cri.runtime.create_container(req))
            .await
            .map_err(|s| ClientError::rpc("CreateContainer", s))?
            .into_inner()
            .container_id)
    }

    async fn start(&mut self, report: &mut Report, id: &str) -> Result<(), ClientError> {
        let req = StartContainerRequest {
            container_id: id.to_owned(),
        };
        report
            .time("StartContainer", self.cri.runtime.start_container(req))
            .await
            .map_err(|s| ClientError::rpc("StartContainer", s))?;
        Ok(())
    }

    /// Removes every pod still listed (their containers go with them) and the logs.
    async fn clean_up(&mut self) {
        for pod in std::mem::take(&mut self.pods) {
            let runtime = &mut self.cri.runtime;
            if let Err(s) = runtime
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await
            {
                eprintln!(
                    "proxrt: bench cleanup: StopPodSandbox {pod}: {}",
                    s.message()
                );
            }
            if let Err(s) = runtime
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await
            {
                eprintln!(
                    "proxrt: bench cleanup: RemovePodSandbox {pod}: {}",
                    s.message()
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}

fn pod_config(name: &str, logs: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "proxrt-bench".into(),
            uid: name.into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.join(name).display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What kubelet asks for a pod without hostNetwork/hostPID/shareProcessNamespace.
fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn container_config(image: &str, pod: &PodSandboxConfig) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "bench".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), SCRIPT.into()],
        log_path: "bench/0.log".into(),
        labels: pod.labels.clone(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
