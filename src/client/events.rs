//! `proxrt events [-o json]`: GetContainerEvents, one line per event as it comes, until
//! Ctrl-C (exit 0) or the runtime ends the stream (an error, e.g. when this reader fell
//! behind, exits 1).

use k8s_cri::v1::{ContainerEventResponse, ContainerEventType, GetEventsRequest};

use super::table::short_id;
use super::{ClientError, Cri, Output};

pub async fn events(cri: &mut Cri, output: Output) -> Result<(), ClientError> {
    let mut stream = cri
        .runtime
        .get_container_events(GetEventsRequest {})
        .await
        .map_err(|s| ClientError::rpc("GetContainerEvents", s))?
        .into_inner();
    // The runtime has subscribed this stream by now: what happens from here is shown.
    eprintln!("watching container and pod events (Ctrl-C ends)");
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let event = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            e = stream.message() => e.map_err(|s| ClientError::rpc("GetContainerEvents", s))?,
        };
        let Some(e) = event else {
            return Ok(());
        };
        let line = match output {
            Output::Json => serde_json::to_string(&e).unwrap_or_default(),
            Output::Table => line(&e),
        };
        println!("{line}");
    }
}

fn type_name(t: i32) -> &'static str {
    match ContainerEventType::try_from(t) {
        Ok(ContainerEventType::ContainerCreatedEvent) => "created",
        Ok(ContainerEventType::ContainerStartedEvent) => "started",
        Ok(ContainerEventType::ContainerStoppedEvent) => "stopped",
        Ok(ContainerEventType::ContainerDeletedEvent) => "deleted",
        Err(_) => "unknown",
    }
}

/// `TIME TYPE KIND ID NAME POD`: KIND is `pod` when the id is the pod's own.
fn line(e: &ContainerEventResponse) -> String {
    let time =
        chrono::DateTime::from_timestamp_nanos(e.created_at).format("%Y-%m-%dT%H:%M:%S%.6fZ");
    let pod = e.pod_sandbox_status.as_ref();
    let pod_name = pod
        .and_then(|p| p.metadata.as_ref())
        .map(|m| format!("{}/{}", m.namespace, m.name))
        .unwrap_or_else(|| "-".into());
    let (kind, name) = match pod.filter(|p| p.id == e.container_id) {
        Some(_) => ("pod", "-".to_owned()),
        None => (
            "container",
            e.containers_statuses
                .iter()
                .find(|c| c.id == e.container_id)
                .and_then(|c| c.metadata.as_ref())
                .map(|m| m.name.clone())
                .unwrap_or_else(|| "-".into()),
        ),
    };
    format!(
        "{time} {} {kind} {} {name} {pod_name}",
        type_name(e.container_event_type),
        short_id(&e.container_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{ContainerMetadata, ContainerStatus, PodSandboxMetadata, PodSandboxStatus};

    #[test]
    fn a_line_says_what_happened_to_whom() {
        let pod = PodSandboxStatus {
            id: "p".repeat(64),
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut e = ContainerEventResponse {
            container_id: "c".repeat(64),
            container_event_type: ContainerEventType::ContainerStoppedEvent as i32,
            created_at: 1_700_000_000_123_456_789,
            pod_sandbox_status: Some(pod),
            containers_statuses: vec![ContainerStatus {
                id: "c".repeat(64),
                metadata: Some(ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }],
        };
        assert_eq!(
            line(&e),
            "2023-11-14T22:13:20.123456Z stopped container ccccccccccccc app default/web"
        );
        e.container_id = "p".repeat(64);
        e.container_event_type = ContainerEventType::ContainerDeletedEvent as i32;
        assert_eq!(
            line(&e),
            "2023-11-14T22:13:20.123456Z deleted pod ppppppppppppp - default/web"
        );
    }
}
