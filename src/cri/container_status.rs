use std::collections::HashMap;

use k8s_cri::v1::{
    ContainerResources, ContainerState, ContainerStatus, ContainerStatusRequest,
    ContainerStatusResponse, ImageSpec, LinuxContainerResources, Mount,
};
use tonic::Status;

use super::errors::to_status;
use crate::container::{ContainerRecord, Phase, StatusSnapshot};
use crate::daemon::Daemon;

#[tracing::instrument(level = "debug", skip_all, fields(container = %req.container_id))]
pub fn container_status(
    d: &Daemon,
    req: ContainerStatusRequest,
) -> Result<ContainerStatusResponse, Status> {
    let c = d.containers().get(&req.container_id).map_err(to_status)?;
    let snap = c.snapshot();
    let mut info = HashMap::new();
    if req.verbose {
        let s = snap.status();
        info.insert(
            "info".into(),
            serde_json::json!({
                "sandboxId": c.record.sandbox_id,
                "backend": c.record.backend,
                "backendReason": c.record.backend_reason,
                "bundle": d.containers().paths(&c.record).bundle(),
                "runDir": c.record.run_dir,
                // Mounted only in the container's own mount namespace (bundle.rs,
                // `release_host_rootfs`): seen from the host through its init.
                "rootfs": s
                    .filter(|_| matches!(snap.phase(), Phase::Created | Phase::Running))
                    .map(|s| format!("/proc/{}/root", s.init_pid)),
                "pid": s.map(|s| s.init_pid),
                "monitorPid": s.map(|s| s.monitor_pid),
                "stopSignal": c.record.stop_signal,
                "imageId": c.record.image_id,
            })
            .to_string(),
        );
    }
    Ok(ContainerStatusResponse {
        status: Some(to_cri_status(&c.record, &snap, c.resources())),
        info,
    })
}

pub(super) fn cri_state(phase: Phase) -> ContainerState {
    match phase {
        Phase::Created => ContainerState::ContainerCreated,
        Phase::Running => ContainerState::ContainerRunning,
        Phase::Exited => ContainerState::ContainerExited,
        Phase::Unknown => ContainerState::ContainerUnknown,
    }
}

/// The CRI status of the container `r` as of `snap`: every field and the state come from
/// that one snapshot (see `Container::snapshot`).
pub(super) fn to_cri_status(
    r: &ContainerRecord,
    snap: &StatusSnapshot,
    resources: Option<LinuxContainerResources>,
) -> ContainerStatus {
    let s = snap.status();
    let phase = snap.phase();
    let exit_code = s.and_then(|s| s.exit_code).unwrap_or(0);
    let (reason, message) = match (s, phase) {
        (Some(s), Phase::Exited) if s.oom_killed => {
            ("OOMKilled", s.message.clone().unwrap_or_default())
        }
        (Some(s), Phase::Exited) if exit_code == 0 => {
            ("Completed", s.message.clone().unwrap_or_default())
        }
        (Some(s), Phase::Exited) => ("Error", s.message.clone().unwrap_or_default()),
        _ => ("", String::new()),
    };
    ContainerStatus {
        id: r.id.clone(),
        metadata: r.config.metadata.clone(),
        state: cri_state(phase) as i32,
        created_at: r.created_at,
        started_at: s.and_then(|s| s.started_at).unwrap_or(0),
        finished_at: s.and_then(|s| s.finished_at).unwrap_or(0),
        exit_code,
        image: Some(ImageSpec {
            image: r.image_name.clone(),
            user_specified_image: r.image_name.clone(),
            ..Default::default()
        }),
        image_ref: r.image_ref.clone(),
        reason: reason.into(),
        message,
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        mounts: r
            .config
            .mounts
            .iter()
            .map(|m| Mount { ..m.clone() })
            .collect(),
        log_path: r
            .log_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        image_id: r.image_id.clone(),
        resources: resources.map(|linux| ContainerResources {
            linux: Some(linux),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::container::{Container, ContainerRecord};
    use crate::monitor::ContainerStatusFile;

    fn running() -> ContainerStatusFile {
        ContainerStatusFile {
            monitor_pid: 10,
            init_pid: 11,
            created_at: 1,
            started_at: Some(2),
            finished_at: None,
            exit_code: None,
            signal: None,
            oom_killed: false,
            message: None,
        }
    }

    fn container() -> Container {
        let record = ContainerRecord {
            id: "c".repeat(64),
            name: "n_p_ns_uid_0".into(),
            sandbox_id: "s".repeat(64),
            config: Default::default(),
            image_name: "busybox".into(),
            image_id: "sha256:00".into(),
            image_ref: "sha256:00".into(),
            created_at: 1,
            log_path: None,
            backend: "libcontainer".into(),
            backend_reason: "default".into(),
            stop_signal: 15,
            run_dir: "/nonexistent".into(),
        };
        Container::new(record, Some(running()), Default::default())
    }

    /// The exit lands while another thread builds answers as fast as it can: every
    /// answer is either wholly "running" or wholly "exited 5" (one snapshot each).
    #[test]
    fn an_exit_landing_mid_answer_never_tears_it() {
        for _ in 0..500 {
            let c = Arc::new(container());
            let exited = Arc::new(AtomicBool::new(false));
            let writer = {
                let (c, exited) = (c.clone(), exited.clone());
                std::thread::spawn(move || {
                    std::thread::yield_now();
                    let mut s = running();
                    s.finished_at = Some(3);
                    s.exit_code = Some(5);
                    c.advance_status(s);
                    exited.store(true, Ordering::Release);
                })
            };
            loop {
                let done = exited.load(Ordering::Acquire);
                let a = to_cri_status(&c.record, &c.snapshot(), c.resources());
                if a.state == ContainerState::ContainerExited as i32 {
                    assert_eq!(
                        (a.finished_at, a.exit_code, a.reason.as_str()),
                        (3, 5, "Error")
                    );
                } else {
                    assert_eq!(a.state, ContainerState::ContainerRunning as i32);
                    assert_eq!((a.finished_at, a.exit_code, a.reason.as_str()), (0, 0, ""));
                }
                if done {
                    break;
                }
            }
            writer.join().unwrap();
        }
    }

    /// A reader that loaded an older status.json cannot move the cached status back.
    #[test]
    fn the_cached_status_only_moves_forward() {
        let c = container();
        let mut exited = running();
        exited.finished_at = Some(3);
        exited.exit_code = Some(5);
        c.advance_status(exited.clone());
        let after = c.advance_status(running());
        assert_eq!(after.phase(), Phase::Exited);
        assert_eq!(after.status(), Some(&exited));
    }
}
