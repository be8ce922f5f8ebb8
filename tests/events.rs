//! GetContainerEvents as kubelet's Evented PLEG reads it: one event per container and pod
//! change, with the pod's full status and every container's status as of that change, to
//! every subscriber; an exit nobody asked for is an event too; a subscriber that goes away
//! disturbs nothing.

mod common;

use std::time::Duration;

use common::pods::PodEnv;
use k8s_cri::v1::{
    ContainerEventResponse, ContainerEventType, ContainerState, GetEventsRequest, PodSandboxState,
};
use tonic::Streaming;

type Events = Streaming<ContainerEventResponse>;

async fn subscribe(env: &PodEnv) -> Events {
    env.cri
        .runtime
        .clone()
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner()
}

/// The next event (a hang guard only: the event is expected at once).
async fn next(events: &mut Events) -> ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(60), events.message())
        .await
        .expect("an event within a minute")
        .expect("the stream stays healthy")
        .expect("the stream stays open")
}

fn kind(e: &ContainerEventResponse) -> ContainerEventType {
    ContainerEventType::try_from(e.container_event_type).expect("a known event type")
}

/// The state `id` has in the event's container list, None when it is not listed.
fn state_of(e: &ContainerEventResponse, id: &str) -> Option<ContainerState> {
    e.containers_statuses
        .iter()
        .find(|c| c.id == id)
        .map(|c| ContainerState::try_from(c.state).unwrap())
}

fn pod_state(e: &ContainerEventResponse) -> PodSandboxState {
    let pod = e.pod_sandbox_status.as_ref().expect("the pod's status");
    PodSandboxState::try_from(pod.state).unwrap()
}

/// Asserts the next event is `want` about `id`, with the pod's status naming the pod.
async fn expect(
    events: &mut Events,
    want: ContainerEventType,
    id: &str,
    pod: &common::pods::Pod,
) -> ContainerEventResponse {
    let e = next(events).await;
    assert_eq!((kind(&e), e.container_id.as_str()), (want, id), "{e:#?}");
    let status = e.pod_sandbox_status.as_ref().expect("the pod's status");
    assert_eq!(status.id, pod.id);
    assert_eq!(
        status.metadata, pod.config.metadata,
        "kubelet keys on the pod uid"
    );
    assert!(
        e.created_at > 1_600_000_000_000_000_000,
        "nanoseconds: {}",
        e.created_at
    );
    e
}

#[tokio::test]
async fn containers_and_pods_are_told_to_every_subscriber() {
    use ContainerEventType::*;
    let mut env = PodEnv::start().await;
    let (mut a, mut b) = (subscribe(&env).await, subscribe(&env).await);

    let pod = env.run_pod(env.pod_config("ev")).await;
    let config = env.container_config(&pod, "app", &["sleep", "600"]);
    let app = env.create(&pod, config).await.unwrap();
    env.start_container(&app).await.unwrap();
    let config = env.container_config(&pod, "once", &["sh", "-c", "exit 3"]);
    let once = env.create_start(&pod, config).await;
    env.wait_exit(&once).await;
    env.stop_container(&app, 0).await.unwrap();
    env.remove_container(&app).await.unwrap();
    env.stop_pod(&pod.id).await.unwrap();
    env.remove_pod(&pod.id).await.unwrap();

    for events in [&mut a, &mut b] {
        let e = expect(events, ContainerCreatedEvent, &pod.id, &pod).await;
        assert_eq!(pod_state(&e), PodSandboxState::SandboxReady);
        assert!(e.containers_statuses.is_empty());
        expect(events, ContainerStartedEvent, &pod.id, &pod).await;

        let e = expect(events, ContainerCreatedEvent, &app, &pod).await;
        assert_eq!(state_of(&e, &app), Some(ContainerState::ContainerCreated));
        let e = expect(events, ContainerStartedEvent, &app, &pod).await;
        assert_eq!(state_of(&e, &app), Some(ContainerState::ContainerRunning));

        let e = expect(events, ContainerCreatedEvent, &once, &pod).await;
        assert_eq!(state_of(&e, &app), Some(ContainerState::ContainerRunning));
        assert_eq!(state_of(&e, &once), Some(ContainerState::ContainerCreated));
        expect(events, ContainerStartedEvent, &once, &pod).await;
        // Nobody stopped it: the exit itself is the event, with its code.
        let e = expect(events, ContainerStoppedEvent, &once, &pod).await;
        assert_eq!(state_of(&e, &once), Some(ContainerState::ContainerExited));
        let status = e.containers_statuses.iter().find(|c| c.id == once).unwrap();
        assert_eq!(status.exit_code, 3);
        assert_eq!(state_of(&e, &app), Some(ContainerState::ContainerRunning));

        let e = expect(events, ContainerStoppedEvent, &app, &pod).await;
        assert_eq!(state_of(&e, &app), Some(ContainerState::ContainerExited));
        let e = expect(events, ContainerDeletedEvent, &app, &pod).await;
        assert_eq!(
            state_of(&e, &app),
            None,
            "a deleted container is not listed"
        );
        assert_eq!(state_of(&e, &once), Some(ContainerState::ContainerExited));

        // StopPodSandbox: `once` had already stopped, so the pod is next.
        let e = expect(events, ContainerStoppedEvent, &pod.id, &pod).await;
        assert_eq!(pod_state(&e), PodSandboxState::SandboxNotready);
        // RemovePodSandbox removes the pod's remaining container, then the pod.
        let e = expect(events, ContainerDeletedEvent, &once, &pod).await;
        assert_eq!(pod_state(&e), PodSandboxState::SandboxNotready);
        let e = expect(events, ContainerDeletedEvent, &pod.id, &pod).await;
        assert!(e.containers_statuses.is_empty());
    }
}

/// A subscriber that goes away mid-stream (a kubelet restarting) leaves the daemon and
/// the other subscribers as they were, and a new subscriber starts from now.
#[tokio::test]
async fn a_subscriber_that_leaves_disturbs_nothing() {
    use ContainerEventType::*;
    let mut env = PodEnv::start().await;
    let mut stays = subscribe(&env).await;
    let leaves = subscribe(&env).await;
    let pod = env.run_pod(env.pod_config("evgone")).await;
    drop(leaves);
    // A connection of its own, gone when its stream is dropped.
    let channel = env.daemon().cri().await;
    let mut other = channel
        .runtime
        .clone()
        .get_container_events(GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    drop(channel);
    let config = env.container_config(&pod, "app", &["sleep", "600"]);
    let app = env.create_start(&pod, config).await;
    let e = next(&mut other).await;
    assert_eq!(
        (kind(&e), e.container_id.as_str()),
        (ContainerCreatedEvent, app.as_str())
    );
    drop(other);

    let mut late = subscribe(&env).await;
    env.stop_container(&app, 0).await.unwrap();
    expect(&mut stays, ContainerCreatedEvent, &pod.id, &pod).await;
    expect(&mut stays, ContainerStartedEvent, &pod.id, &pod).await;
    expect(&mut stays, ContainerCreatedEvent, &app, &pod).await;
    expect(&mut stays, ContainerStartedEvent, &app, &pod).await;
    expect(&mut stays, ContainerStoppedEvent, &app, &pod).await;
    expect(&mut late, ContainerStoppedEvent, &app, &pod).await;
    // The daemon still answers.
    assert_eq!(env.status(&app).await.exit_code, 137);
    env.remove_pod(&pod.id).await.unwrap();
    expect(&mut late, ContainerStoppedEvent, &pod.id, &pod).await;
    expect(&mut late, ContainerDeletedEvent, &app, &pod).await;
    expect(&mut late, ContainerDeletedEvent, &pod.id, &pod).await;
}

/// A stopping daemon ends its event streams (kubelet sees the stream end and subscribes
/// again to the next daemon) instead of waiting on them until its grace runs out.
#[tokio::test]
async fn a_stopping_daemon_ends_the_streams() {
    let mut d = common::TestDaemon::start();
    let cri = d.cri().await;
    let mut events = cri
        .runtime
        .clone()
        .get_container_events(GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let (status, killed) = d.stop();
    assert!(status.success() && !killed, "{status}\n{}", d.log());
    let end = tokio::time::timeout(Duration::from_secs(60), events.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
    assert!(!d.log().contains("still running after"), "{}", d.log());
}
