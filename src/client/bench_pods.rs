//! `proxrt bench pods`: the pod and container lifecycle kubelet drives, each CRI call
//! timed, against one or two CRI endpoints.
//!
//! Per pod: RunPodSandbox, CreateContainer, StartContainer (and their sum, "pod +
//! container to running"), ContainerStatus, ListContainers, ExecSync `test -e
//! <ready file>`, StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox. One
//! untimed pod first warms caches (the image's snapshots, the daemon's first-use paths). With
//! `live`, that many idle containers (one pod each) are started on each endpoint before
//! timing and kept running, to show whether latency stays flat as the node fills up.
//! `parallel` lifecycles run at once; with two endpoints each batch runs on A, then on
//! B. Every pod carries the label `proxrt.io/bench-run=<run>`; at the end, after an
//! error and after Ctrl-C, the pods with this run's label are listed and removed, so
//! a pod whose RunPodSandbox was in flight is found too.

use std::path::{Path, PathBuf};
use std::time::Instant;

use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, ExecSyncResponse, ImageSpec, ImageStatusRequest, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListContainersRequest, ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxFilter, PodSandboxMetadata, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, SecurityProfile, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use tokio::task::JoinSet;

use super::bench::{Measured, Progress, Stop, Target};
use super::bench_report::Report;
use super::{ClientError, Cri};

/// The container under test: exits 0 on SIGTERM at once, once it has said so by
/// making `READY`. A pid 1 without a handler ignores SIGTERM, and a plain `sleep` would
/// make StopContainer measure its timeout; `wait` returns as soon as a trapped signal
/// arrives.
const SCRIPT: &str = "trap 'exit 0' TERM; : > /proxrt-bench-ready; sleep 3600 & wait";
/// Made by `SCRIPT` once its trap is set. A SIGTERM sent before that (the shell not yet
/// scheduled on a busy node) is dropped, and StopContainer would wait out its timeout.
const READY: &str = "/proxrt-bench-ready";
/// Seconds StopContainer may wait before SIGKILL (never reached once `READY` exists).
const STOP_TIMEOUT: i64 = 2;
/// How long a container may take to make `READY` before the run fails.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);
/// The time from nothing to a running container, as a row of the report.
pub const POD_TO_RUNNING: &str = "pod+container to running";
/// The label every pod of a run carries: what the cleanup lists.
pub const RUN_LABEL: &str = "proxrt.io/bench-run";

pub struct PodsArgs {
    pub image: String,
    /// Pods measured per endpoint.
    pub pods: usize,
    /// Idle containers kept running on each endpoint while measuring.
    pub live: usize,
    /// Lifecycles at once.
    pub parallel: usize,
    /// Pods in the host's network namespace (no CNI).
    pub host_network: bool,
    pub security: Security,
    /// The pods' RuntimeClass handler ("": the runtime's default).
    pub runtime_handler: String,
}

/// The containers' security context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Security {
    /// Unconfined, the runtime's default capabilities.
    None,
    /// Seccomp RuntimeDefault (kubelet's `seccompDefault`).
    RuntimeDefault,
    /// RuntimeDefault, no_new_privs, no capabilities (Pod Security `restricted`, as root).
    Restricted,
}

impl Security {
    /// As on the command line (`--security`).
    pub fn name(self) -> &'static str {
        match self {
            Security::None => "none",
            Security::RuntimeDefault => "runtime-default",
            Security::Restricted => "restricted",
        }
    }

    fn context(self) -> LinuxContainerSecurityContext {
        let runtime_default = Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        match self {
            Security::None => LinuxContainerSecurityContext::default(),
            Security::RuntimeDefault => LinuxContainerSecurityContext {
                seccomp: runtime_default,
                ..Default::default()
            },
            Security::Restricted => LinuxContainerSecurityContext {
                seccomp: runtime_default,
                no_new_privs: true,
                capabilities: Some(Capability {
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }
}

/// Runs the workload on every target; `image` must already be present on each.
pub async fn pods(
    targets: &[Target],
    args: &PodsArgs,
    stop: &Stop,
) -> Result<Vec<Measured>, ClientError> {
    let run = crate::store::random_hex(4);
    let logs = std::env::temp_dir().join(format!("proxrt-bench-{run}"));
    let benches: Vec<Bench> = targets
        .iter()
        .map(|t| Bench {
            cri: t.cri.clone(),
            endpoint: t.endpoint.clone(),
            image: args.image.clone(),
            run: run.clone(),
            logs: logs.clone(),
            host_network: args.host_network,
            security: args.security,
            runtime_handler: args.runtime_handler.clone(),
        })
        .collect();
    let result = measure(&benches, args, stop).await;
    let mut removed = 0;
    for b in &benches {
        removed += b.clean_up().await;
    }
    let _ = std::fs::remove_dir_all(&logs);
    if matches!(result, Err(ClientError::Interrupted)) {
        eprintln!("proxrt: bench interrupted: removed the {removed} pod(s) it had made");
    }
    result
}

async fn measure(
    benches: &[Bench],
    args: &PodsArgs,
    stop: &Stop,
) -> Result<Vec<Measured>, ClientError> {
    for b in benches {
        b.check_image().await?;
    }
    let batches = |total: usize| {
        (0..total)
            .step_by(args.parallel)
            .map(move |first| first..(first + args.parallel).min(total))
    };
    let mut progress = Progress::new("bench pods: live containers", args.live * benches.len());
    for b in benches {
        for batch in batches(args.live) {
            stop.check()?;
            let n = batch.len();
            b.batch(
                batch.map(|i| format!("live-{i}")).collect(),
                Round::KeepRunning,
            )
            .await?;
            progress.advance(n);
        }
    }
    progress.finish();
    for b in benches {
        stop.check()?;
        b.batch(vec!["warmup".into()], Round::Full).await?;
    }
    let mut results: Vec<Measured> = benches
        .iter()
        .map(|_| Measured {
            report: Report::default(),
            wall: std::time::Duration::ZERO,
            units: 0,
        })
        .collect();
    let mut progress = Progress::new("bench pods: pods", args.pods * benches.len());
    for (round, batch) in batches(args.pods).enumerate() {
        for i in super::bench::round_order(round, benches.len()) {
            let (b, m) = (&benches[i], &mut results[i]);
            stop.check()?;
            let n = batch.len();
            let started = Instant::now();
            let report = b
                .batch(
                    batch.clone().map(|i| format!("p{i}")).collect(),
                    Round::Full,
                )
                .await?;
            m.wall += started.elapsed();
            m.report.merge(report);
            m.units += n;
            progress.advance(n);
        }
    }
    progress.finish();
    Ok(results)
}

/// What a lifecycle does once its container runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Round {
    /// The whole lifecycle down to RemovePodSandbox, timed.
    Full,
    /// Leave it running (a live container), untimed.
    KeepRunning,
}

#[derive(Clone)]
struct Bench {
    cri: Cri,
    endpoint: String,
    image: String,
    /// Distinguishes this run's pods from another run's on the same endpoint.
    run: String,
    /// Pods' log directories live under it; removed at the end.
    logs: PathBuf,
    host_network: bool,
    security: Security,
    runtime_handler: String,
}

impl Bench {
    async fn check_image(&self) -> Result<(), ClientError> {
        let present = self
            .cri
            .clone()
            .images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: self.image.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .map_err(|s| ClientError::rpc("ImageStatus", s))?
            .into_inner()
            .image
            .is_some();
        match present {
            true => Ok(()),
            false => Err(ClientError::Usage(format!(
                "image {} is not present on {}: pull or import it first",
                self.image, self.endpoint
            ))),
        }
    }

    /// The lifecycles named `names`, all at once; their reports merged.
    async fn batch(&self, names: Vec<String>, round: Round) -> Result<Report, ClientError> {
        let mut set = JoinSet::new();
        for name in names {
            let bench = self.clone();
            set.spawn(async move { bench.lifecycle(&name, round).await });
        }
        let mut report = Report::default();
        let mut first_error = None;
        while let Some(done) = set.join_next().await {
            match done {
                Ok(Ok(r)) => report.merge(r),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error
                        .get_or_insert(ClientError::Usage(format!("bench worker failed: {e}")));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    async fn lifecycle(mut self, name: &str, round: Round) -> Result<Report, ClientError> {
        let mut report = Report::default();
        let started = Instant::now();
        let (pod, config) = self.run_pod(&mut report, name).await?;
        let id = self.create(&mut report, &pod, &config).await?;
        self.start(&mut report, &id).await?;
        report.samples(POD_TO_RUNNING).add(started.elapsed());
        if round == Round::KeepRunning {
            return Ok(Report::default());
        }

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
        let ready = report
            .time("ExecSync", runtime.exec_sync(is_ready(&id)))
            .await
            .map_err(|s| ClientError::rpc("ExecSync", s))?
            .into_inner();
        if !ready_answer(&ready)? {
            self.wait_until_ready(&id).await?;
        }
        let runtime = &mut self.cri.runtime;
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
        self.check_stopped_by_its_trap(&id).await?;
        let runtime = &mut self.cri.runtime;
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
        Ok(report)
    }

    /// Asks until the container has set its SIGTERM trap (untimed: the ExecSync before
    /// it was the timed one).
    async fn wait_until_ready(&mut self, id: &str) -> Result<(), ClientError> {
        let since = Instant::now();
        loop {
            let answer = self
                .cri
                .runtime
                .exec_sync(is_ready(id))
                .await
                .map_err(|s| ClientError::rpc("ExecSync", s))?
                .into_inner();
            if ready_answer(&answer)? {
                return Ok(());
            }
            if since.elapsed() > READY_WITHIN {
                return Err(ClientError::Usage(format!(
                    "container {id} did not make {READY} within {}s",
                    READY_WITHIN.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// A container that was ready exits 0 through its trap; any other end (137: the
    /// SIGKILL after the timeout) means StopContainer's sample measured a timeout, or
    /// the runtime signalled something else than the container's pid 1.
    async fn check_stopped_by_its_trap(&mut self, id: &str) -> Result<(), ClientError> {
        let status = self.cri.status_of(id).await?;
        match status.exit_code {
            0 => Ok(()),
            code => Err(ClientError::Usage(format!(
                "container {id} ended with exit code {code} ({}) after StopContainer, not \
                 through its SIGTERM trap: StopContainer did not deliver SIGTERM to it",
                status.reason
            ))),
        }
    }

    async fn run_pod(
        &mut self,
        report: &mut Report,
        name: &str,
    ) -> Result<(String, PodSandboxConfig), ClientError> {
        let name = format!("bench-{}-{name}", self.run);
        let config = pod_config(&name, &self.run, &self.logs, self.host_network);
        // kubelet makes the pod's and the container's log directories; runtimes
        // (containerd among them) expect them.
        let container_logs = Path::new(&config.log_directory).join("bench");
        std::fs::create_dir_all(&container_logs)
            .map_err(|e| ClientError::Usage(format!("create {}: {e}", container_logs.display())))?;
        let id = report
            .time(
                "RunPodSandbox",
                self.cri.runtime.run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: self.runtime_handler.clone(),
                }),
            )
            .await
            .map_err(|s| ClientError::rpc("RunPodSandbox", s))?
            .into_inner()
            .pod_sandbox_id;
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
            config: Some(container_config(&self.image, config, self.security)),
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

    /// Stops and removes every pod carrying this run's label (their containers go with
    /// them); returns how many were removed.
    async fn clean_up(&self) -> usize {
        let mut runtime = self.cri.runtime.clone();
        let filter = PodSandboxFilter {
            label_selector: [(RUN_LABEL.to_owned(), self.run.clone())].into(),
            ..Default::default()
        };
        let pods = match runtime
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await
        {
            Ok(r) => r.into_inner().items,
            Err(s) => {
                eprintln!(
                    "proxrt: bench cleanup on {}: ListPodSandbox: {}",
                    self.endpoint,
                    s.message()
                );
                return 0;
            }
        };
        let mut removed = 0;
        for pod in pods {
            let id = pod.id;
            if let Err(s) = runtime
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
            {
                eprintln!(
                    "proxrt: bench cleanup: StopPodSandbox {id}: {}",
                    s.message()
                );
            }
            match runtime
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
            {
                Ok(_) => removed += 1,
                Err(s) => {
                    eprintln!(
                        "proxrt: bench cleanup: RemovePodSandbox {id}: {}",
                        s.message()
                    )
                }
            }
        }
        removed
    }
}

fn pod_config(name: &str, run: &str, logs: &Path, host_network: bool) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "proxrt-bench".into(),
            uid: name.into(),
            attempt: 0,
        }),
        // kubelet leaves the hostname empty for hostNetwork pods (runc refuses to set one
        // without a private UTS namespace).
        hostname: match host_network {
            true => String::new(),
            false => name.into(),
        },
        log_directory: logs.join(name).display().to_string(),
        labels: [(RUN_LABEL.to_owned(), run.to_owned())].into(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(host_network)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What kubelet asks for a pod without hostPID/shareProcessNamespace, with or without
/// hostNetwork.
fn namespaces(host_network: bool) -> NamespaceOption {
    NamespaceOption {
        network: match host_network {
            true => NamespaceMode::Node,
            false => NamespaceMode::Pod,
        } as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// ExecSync `test -e READY`: the timed exec, and the readiness question.
fn is_ready(id: &str) -> ExecSyncRequest {
    ExecSyncRequest {
        container_id: id.to_owned(),
        cmd: vec!["test".into(), "-e".into(), READY.into()],
        timeout: 10,
    }
}

/// `test` answers 0 (ready) or 1 (not yet); anything else is the exec failing.
fn ready_answer(answer: &ExecSyncResponse) -> Result<bool, ClientError> {
    match answer.exit_code {
        0 => Ok(true),
        1 => Ok(false),
        code => Err(ClientError::Usage(format!(
            "ExecSync `test -e {READY}` exited {code}: {}",
            String::from_utf8_lossy(&answer.stderr)
        ))),
    }
}

/// The container under test.
fn container_config(image: &str, pod: &PodSandboxConfig, security: Security) -> ContainerConfig {
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
                namespace_options: pod
                    .linux
                    .as_ref()
                    .and_then(|l| l.security_context.as_ref())
                    .and_then(|s| s.namespace_options.clone()),
                ..security.context()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(exit_code: i32) -> ExecSyncResponse {
        ExecSyncResponse {
            exit_code,
            stderr: b"no such file".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn test_answers_ready_not_yet_or_an_error() {
        assert!(ready_answer(&answer(0)).expect("0 is an answer"));
        assert!(!ready_answer(&answer(1)).expect("1 is an answer"));
        // 126/127: no `test` in the image; 137: killed. Neither means "not yet".
        for code in [2, 126, 127, 137, -1] {
            let e = ready_answer(&answer(code)).expect_err("not a readiness answer");
            assert!(e.to_string().contains(&code.to_string()), "{e}");
        }
    }

    #[test]
    fn the_ready_file_is_made_after_the_trap_is_set() {
        let trap = SCRIPT
            .find("trap 'exit 0' TERM;")
            .expect("the script sets a trap");
        let ready = SCRIPT
            .find(&format!(": > {READY};"))
            .expect("the script makes READY");
        assert!(trap < ready, "{SCRIPT}");
        assert_eq!(is_ready("c").cmd, ["test", "-e", READY]);
    }
}
