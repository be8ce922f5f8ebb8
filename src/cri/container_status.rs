use std::collections::HashMap;

use k8s_cri::v1::{
    ContainerState, ContainerStatus, ContainerStatusRequest, ContainerStatusResponse, ImageSpec,
    Mount,
};
use tonic::Status;

use super::errors::to_status;
use crate::container::{Container, Phase};
use crate::daemon::Daemon;

#[tracing::instrument(level = "debug", skip_all, fields(container = %req.container_id))]
pub fn container_status(
    d: &Daemon,
    req: ContainerStatusRequest,
) -> Result<ContainerStatusResponse, Status> {
    let c = d.containers().get(&req.container_id).map_err(to_status)?;
    let mut info = HashMap::new();
    if req.verbose {
        let s = c.status();
        info.insert(
            "info".into(),
            serde_json::json!({
                "sandboxId": c.record.sandbox_id,
                "backend": c.record.backend,
                "backendReason": c.record.backend_reason,
                "bundle": d.containers().dir().join(&c.id).join("bundle"),
                "runDir": c.record.run_dir,
                "rootfs": c.record.rootfs(),
                "pid": s.as_ref().map(|s| s.init_pid),
                "monitorPid": s.as_ref().map(|s| s.monitor_pid),
                "stopSignal": c.record.stop_signal,
                "imageId": c.record.image_id,
            })
            .to_string(),
        );
    }
    Ok(ContainerStatusResponse {
        status: Some(to_cri_status(&c)),
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

fn to_cri_status(c: &Container) -> ContainerStatus {
    let r = &c.record;
    let s = c.status();
    let phase = c.phase();
    let exit_code = s.as_ref().and_then(|s| s.exit_code).unwrap_or(0);
    let (reason, message) = match (&s, phase) {
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
        started_at: s.as_ref().and_then(|s| s.started_at).unwrap_or(0),
        finished_at: s.as_ref().and_then(|s| s.finished_at).unwrap_or(0),
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
        ..Default::default()
    }
}
