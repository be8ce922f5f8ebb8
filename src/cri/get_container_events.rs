//! GetContainerEvents: a stream of the daemon's lifecycle events (src/events.rs) in CRI's
//! shape, for kubelet's Evented PLEG. Each event names the container (or, for a pod
//! event, the sandbox: containerd does the same and kubelet drops the pod from its cache
//! on a DELETED event whose id is the sandbox's) and carries the pod's full status and
//! every container's status as of the event.
//!
//! A subscriber that falls more than `events::BUFFER` events behind gets
//! `ResourceExhausted` and its stream ends: kubelet relists on a stream error and
//! subscribes again, which is exact, where silently skipping would leave its cache wrong.

use std::pin::Pin;
use std::sync::Arc;

use k8s_cri::v1::{ContainerEventResponse, ContainerEventType, GetEventsRequest};
use tokio_stream::Stream;
use tonic::Status;

use super::container_status::to_cri_status as container_status;
use super::pod_sandbox_status::to_cri_status as pod_status;
use crate::daemon::Daemon;
use crate::events::{Event, EventKind, Lagged, Subscription};

pub type EventStream =
    Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send + 'static>>;

#[tracing::instrument(level = "debug", skip_all)]
pub fn get_container_events(d: &Arc<Daemon>, _req: GetEventsRequest) -> EventStream {
    let sub = d.events().subscribe();
    tracing::debug!("event subscriber joined");
    stream(d.clone(), sub)
}

/// The subscriber's events until it lags (one error, then the end) or the daemon stops.
/// Dropped by tonic when the client goes, which unsubscribes it.
fn stream(d: Arc<Daemon>, sub: Subscription) -> EventStream {
    Box::pin(futures_util::stream::unfold(Some(sub), move |sub| {
        let d = d.clone();
        async move {
            let mut sub = sub?;
            match sub.next().await? {
                Ok(event) => {
                    let ips = pod_ips(&d, &event);
                    Some((Ok(to_cri_event(&event, &ips)), Some(sub)))
                }
                Err(lagged) => {
                    tracing::warn!(
                        missed = lagged.0,
                        "event subscriber fell behind; ending its stream"
                    );
                    Some((Err(lagged_status(lagged)), None))
                }
            }
        }
    }))
}

fn lagged_status(Lagged(n): Lagged) -> Status {
    Status::resource_exhausted(format!(
        "this event stream fell {n} events behind and was ended; list pods and containers \
         again and subscribe anew"
    ))
}

fn pod_ips(d: &Daemon, e: &Event) -> Vec<String> {
    e.pod
        .as_ref()
        .and_then(|p| d.backends().get(&p.backend).ok().map(|b| b.pod_ips(p)))
        .unwrap_or_default()
}

pub(super) fn cri_event_type(kind: EventKind) -> ContainerEventType {
    match kind {
        EventKind::Created => ContainerEventType::ContainerCreatedEvent,
        EventKind::Started => ContainerEventType::ContainerStartedEvent,
        EventKind::Stopped => ContainerEventType::ContainerStoppedEvent,
        EventKind::Deleted => ContainerEventType::ContainerDeletedEvent,
    }
}

/// The CRI shape of `e` (`ips`: the pod's addresses).
fn to_cri_event(e: &Event, ips: &[String]) -> ContainerEventResponse {
    ContainerEventResponse {
        container_id: e.id.clone(),
        container_event_type: cri_event_type(e.kind) as i32,
        created_at: e.at,
        pod_sandbox_status: e.pod.as_ref().map(|p| pod_status(p, ips)),
        containers_statuses: e
            .containers
            .iter()
            .map(|c| container_status(&c.record, &c.snapshot, c.resources.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lagging_subscriber_gets_resource_exhausted_saying_what_to_do() {
        let s = lagged_status(Lagged(7));
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(s.message().contains("7 events behind"), "{}", s.message());
    }

    #[test]
    fn a_pod_event_names_the_sandbox_and_carries_its_status() {
        let record = crate::sandbox::SandboxRecord::for_tests(
            &"p".repeat(64),
            crate::sandbox::SandboxState::NotReady,
        );
        let e = Event {
            kind: EventKind::Stopped,
            id: record.id.clone(),
            sandbox_id: record.id.clone(),
            at: 42,
            pod: Some(Box::new(record)),
            containers: Vec::new(),
        };
        let r = to_cri_event(&e, &["10.0.0.2".into()]);
        assert_eq!(r.container_id, "p".repeat(64));
        assert_eq!(
            r.container_event_type,
            ContainerEventType::ContainerStoppedEvent as i32
        );
        assert_eq!(r.created_at, 42);
        let pod = r.pod_sandbox_status.unwrap();
        assert_eq!(pod.id, "p".repeat(64));
        assert_eq!(pod.metadata.unwrap().uid, "uid");
        assert_eq!(
            pod.state,
            k8s_cri::v1::PodSandboxState::SandboxNotready as i32
        );
        assert_eq!(pod.network.unwrap().ip, "10.0.0.2");
    }
}
