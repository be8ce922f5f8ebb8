//! `proxrt run`: a pod and a container from nothing, the output streamed, the exit code
//! returned, everything removed afterwards (unless `--keep`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, KeyValue,
    PodSandboxConfig, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};

use super::{ClientError, Cri};

/// Where `proxrt run` asks the daemon to write container logs (like kubelet's /var/log/pods).
pub const LOG_ROOT: &str = "/var/log/proxrt/pods";

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub name: Option<String>,
    pub host_network: bool,
    pub runtime_handler: String,
    pub keep: bool,
}

/// Returns the container's exit code.
pub async fn run(cri: &mut Cri, opts: &RunOptions) -> Result<i32, ClientError> {
    let suffix = crate::store::random_hex(4);
    let name = opts.name.clone().unwrap_or_else(|| format!("run-{suffix}"));
    let uid = format!("proxrt-run-{}", crate::store::random_hex(8));
    let pod = super::pods::pod_config(&name, "default", &uid, opts.host_network);
    let log_dir = PathBuf::from(&pod.log_directory);
    let sandbox_id = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: opts.runtime_handler.clone(),
        })
        .await
        .map_err(|s| ClientError::rpc("RunPodSandbox", s))?
        .into_inner()
        .pod_sandbox_id;
    let result = run_in_pod(cri, opts, &sandbox_id, &pod, &log_dir).await;
    if !opts.keep {
        let _ = cri
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: sandbox_id.clone(),
            })
            .await;
        let _ = cri
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: sandbox_id.clone(),
            })
            .await;
        let _ = std::fs::remove_dir_all(&log_dir);
    } else {
        eprintln!("kept pod {sandbox_id}");
    }
    result
}

async fn run_in_pod(
    cri: &mut Cri,
    opts: &RunOptions,
    sandbox_id: &str,
    pod: &PodSandboxConfig,
    log_dir: &Path,
) -> Result<i32, ClientError> {
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "main".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: opts.image.clone(),
            ..Default::default()
        }),
        command: opts.command.clone(),
        envs: opts
            .env
            .iter()
            .map(|e| {
                let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
                KeyValue {
                    key: k.into(),
                    value: v.into(),
                }
            })
            .collect(),
        log_path: "main/0.log".into(),
        linux: Some(k8s_cri::v1::LinuxContainerConfig {
            security_context: Some(k8s_cri::v1::LinuxContainerSecurityContext {
                // As kubelet does: the container's namespaces follow the pod's.
                namespace_options: pod
                    .linux
                    .as_ref()
                    .and_then(|l| l.security_context.as_ref())
                    .and_then(|s| s.namespace_options.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .map_err(|s| ClientError::rpc("CreateContainer", s))?
        .into_inner()
        .container_id;
    cri.runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .map_err(|s| ClientError::rpc("StartContainer", s))?;
    let log = log_dir.join("main/0.log");
    follow_until_exit(cri, &id, &log).await
}

/// Prints the container's log as it grows and returns its exit code once it exits.
pub async fn follow_until_exit(cri: &mut Cri, id: &str, log: &Path) -> Result<i32, ClientError> {
    let mut follower = LogFollower::new(log);
    loop {
        let status = cri.status_of(id).await?;
        let exited = status.state == k8s_cri::v1::ContainerState::ContainerExited as i32;
        follower.print_new();
        if exited {
            follower.print_new();
            return Ok(status.exit_code);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a CRI log file incrementally and writes each record's text to stdout/stderr.
pub struct LogFollower {
    path: PathBuf,
    offset: u64,
    pending: Vec<u8>,
}

impl LogFollower {
    pub fn new(path: &Path) -> LogFollower {
        LogFollower {
            path: path.to_owned(),
            offset: 0,
            pending: Vec::new(),
        }
    }

    pub fn print_new(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if let Ok(n) = f.read_to_end(&mut buf) {
            self.offset += n as u64;
        }
        self.pending.extend_from_slice(&buf);
        while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            if let Some(rec) = parse_cri_line(&line[..line.len() - 1]) {
                let mut text = rec.text.to_vec();
                if rec.full {
                    text.push(b'\n');
                }
                if rec.stderr {
                    let _ = std::io::stderr().write_all(&text);
                } else {
                    let _ = std::io::stdout().write_all(&text);
                    let _ = std::io::stdout().flush();
                }
            }
        }
    }
}

/// One CRI log record: `<time> <stdout|stderr> <F|P> <text>`.
pub struct LogRecord<'a> {
    pub time: &'a str,
    pub stderr: bool,
    pub full: bool,
    pub text: &'a [u8],
}

pub fn parse_cri_line(line: &[u8]) -> Option<LogRecord<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or(&[]);
    Some(LogRecord {
        time,
        stderr: stream == b"stderr",
        full: tag != b"P",
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cri_lines() {
        let r = parse_cri_line(b"2026-11-26T06:08:02.123456789Z stderr P hello world").unwrap();
        assert!(r.stderr && !r.full);
        assert_eq!(r.text, b"hello world");
        let r = parse_cri_line(b"2026-11-26T06:08:02.123456789Z stdout F ").unwrap();
        assert!(!r.stderr && r.full && r.text.is_empty());
        assert!(parse_cri_line(b"garbage").is_none());
    }
}
