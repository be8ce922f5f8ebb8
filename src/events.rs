//! Lifecycle events for GetContainerEvents (kubelet's Evented PLEG): one broadcast channel
//! the stores publish to where a state changes, any number of subscribers.
//!
//! The single points that publish: `ContainerStore::insert` (created), the container's
//! status cache moving forward (`Container::advance_status`, `mark_lost`: started,
//! stopped — also an exit nobody asked for, seen by the monitor or the Proxmox watcher),
//! `ContainerStore::remove` (deleted); for pods `SandboxStore::insert` (created, then
//! started), `Sandbox::update` turning the pod NotReady (stopped), `SandboxStore::remove`
//! (deleted). Pod events carry the sandbox id as their container id, as containerd's do:
//! kubelet's Evented PLEG drops a pod from its cache on a DELETED event whose id is the
//! sandbox's.
//!
//! An event carries what it changed as of the change (the container's record and status
//! snapshot, the pod's record) so a subscriber answering later still shows that moment, and
//! a deleted container or pod can still be described. Publishing never blocks: with no
//! subscriber nothing is built at all; otherwise the send is a copy into a ring of
//! [`BUFFER`] events. A subscriber that falls more than that behind is told so
//! ([`Lagged`]) and its stream ends (kubelet re-lists and subscribes again).

use std::sync::{Arc, OnceLock, Weak};

use k8s_cri::v1::LinuxContainerResources;
use tokio::sync::broadcast;

use crate::container::{ContainerRecord, ContainerStore, StatusSnapshot};
use crate::sandbox::{SandboxRecord, SandboxStore};

/// Events kept for subscribers that have not read them yet.
pub const BUFFER: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Started => "started",
            EventKind::Stopped => "stopped",
            EventKind::Deleted => "deleted",
        }
    }
}

/// A container as of an event.
#[derive(Debug, Clone)]
pub struct ContainerView {
    pub record: ContainerRecord,
    pub snapshot: StatusSnapshot,
    pub resources: Option<LinuxContainerResources>,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    /// The container's id, or the sandbox's for a pod event.
    pub id: String,
    pub sandbox_id: String,
    /// Unix nanoseconds.
    pub at: i64,
    /// The pod as of the event; None when a container's pod is already gone. Boxed: the
    /// channel preallocates [`BUFFER`] slots of this struct (1.8 MB with the record
    /// inline, most of an idle daemon's heap).
    pub pod: Option<Box<SandboxRecord>>,
    /// Every container of the pod as of the event (a deleted one no longer among them).
    pub containers: Vec<ContainerView>,
}

/// A subscriber fell behind by more than [`BUFFER`] events; `0` says how many it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged(pub u64);

/// The publishing side, cloned into both stores and every live container and pod.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    /// Where an event finds the pod's record and containers; set once the daemon holds
    /// its stores.
    stores: Arc<OnceLock<Stores>>,
    /// Set at shutdown: every subscription ends, so no open stream holds the daemon up.
    closed: Arc<tokio::sync::watch::Sender<bool>>,
}

struct Stores {
    pods: Weak<SandboxStore>,
    containers: Weak<ContainerStore>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new(BUFFER)
    }
}

impl Events {
    pub fn new(capacity: usize) -> Events {
        Events {
            tx: broadcast::channel(capacity.max(1)).0,
            stores: Arc::new(OnceLock::new()),
            closed: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Ends every subscription (the daemon is stopping); later ones end at once.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Lets events carry their pod's record and containers.
    pub fn set_stores(&self, pods: &Arc<SandboxStore>, containers: &Arc<ContainerStore>) {
        let _ = self.stores.set(Stores {
            pods: Arc::downgrade(pods),
            containers: Arc::downgrade(containers),
        });
    }

    /// The pod's record (unless given) and every container of it, as of now; `subject`
    /// stands in for its own entry (its status as of the change, not a later one).
    fn capture(
        &self,
        sandbox_id: &str,
        pod: Option<SandboxRecord>,
        subject: Option<&ContainerView>,
    ) -> (Option<SandboxRecord>, Vec<ContainerView>) {
        let Some(stores) = self.stores.get() else {
            return (pod, subject.into_iter().cloned().collect());
        };
        let pod = pod.or_else(|| {
            let pods = stores.pods.upgrade()?;
            pods.get(sandbox_id).ok().map(|s| s.record())
        });
        let mut containers: Vec<ContainerView> = match stores.containers.upgrade() {
            Some(store) => store
                .in_sandbox(sandbox_id)
                .into_iter()
                .filter(|c| subject.is_none_or(|s| s.record.id != c.id))
                .map(|c| c.view(&c.snapshot()))
                .collect(),
            None => Vec::new(),
        };
        containers.extend(subject.cloned());
        containers.sort_by_key(|c| c.record.created_at);
        (pod, containers)
    }

    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
            closed: self.closed.subscribe(),
        }
    }

    /// Whether anyone listens: publishers build nothing when no one does.
    pub fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// A container event; `view` is called only when someone listens. A deleted
    /// container is no longer in its pod's list.
    pub fn container(&self, kind: EventKind, view: impl FnOnce() -> ContainerView) {
        if !self.wanted() {
            return;
        }
        let at = crate::store::now_nanos();
        let view = view();
        let subject = (kind != EventKind::Deleted).then_some(&view);
        let (pod, containers) = self.capture(&view.record.sandbox_id, None, subject);
        self.send(Event {
            kind,
            id: view.record.id.clone(),
            sandbox_id: view.record.sandbox_id.clone(),
            at,
            pod: pod.map(Box::new),
            containers,
        });
    }

    /// A pod event; `record` is called only when someone listens.
    pub fn sandbox(&self, kind: EventKind, record: impl FnOnce() -> SandboxRecord) {
        if !self.wanted() {
            return;
        }
        let at = crate::store::now_nanos();
        let record = record();
        let id = record.id.clone();
        let (pod, containers) = self.capture(&id, Some(record), None);
        self.send(Event {
            kind,
            id: id.clone(),
            sandbox_id: id,
            at,
            pod: pod.map(Box::new),
            containers,
        });
    }

    fn send(&self, event: Event) {
        tracing::debug!(id = %event.id, kind = event.kind.name(), "event");
        // Err only when the last subscriber left meanwhile: nobody to tell.
        let _ = self.tx.send(event);
    }
}

/// One subscriber's view of the channel, from the moment it subscribed.
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
    closed: tokio::sync::watch::Receiver<bool>,
}

impl Subscription {
    /// The next event; None once the daemon is stopping (or the publisher is gone).
    pub async fn next(&mut self) -> Option<Result<Event, Lagged>> {
        tokio::select! {
            biased;
            _ = self.closed.wait_for(|closed| *closed) => None,
            r = self.rx.recv() => match r {
                Ok(e) => Some(Ok(e)),
                Err(broadcast::error::RecvError::Lagged(n)) => Some(Err(Lagged(n))),
                Err(broadcast::error::RecvError::Closed) => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> SandboxRecord {
        SandboxRecord::for_tests(id, crate::sandbox::SandboxState::Ready)
    }

    #[tokio::test]
    async fn every_subscriber_sees_every_event_in_order() {
        let events = Events::new(8);
        let (mut a, mut b) = (events.subscribe(), events.subscribe());
        events.sandbox(EventKind::Created, || record("p1"));
        events.sandbox(EventKind::Started, || record("p1"));
        for s in [&mut a, &mut b] {
            let first = s.next().await.unwrap().unwrap();
            let second = s.next().await.unwrap().unwrap();
            assert_eq!((first.kind, first.id.as_str()), (EventKind::Created, "p1"));
            assert_eq!(second.kind, EventKind::Started);
            assert!(second.at >= first.at);
            assert_eq!(second.pod.unwrap().id, "p1");
        }
    }

    #[tokio::test]
    async fn nothing_is_built_without_a_subscriber() {
        let events = Events::new(8);
        events.sandbox(EventKind::Created, || panic!("built for nobody"));
        let mut s = events.subscribe();
        events.sandbox(EventKind::Deleted, || record("p2"));
        assert_eq!(s.next().await.unwrap().unwrap().kind, EventKind::Deleted);
    }

    /// A reader that falls behind is told how much it missed instead of holding the
    /// publishers back; a dropped reader is simply gone.
    #[tokio::test]
    async fn a_lagging_subscriber_is_told_and_a_dropped_one_forgotten() {
        let events = Events::new(2);
        let mut slow = events.subscribe();
        let gone = events.subscribe();
        drop(gone);
        for _ in 0..5 {
            events.sandbox(EventKind::Started, || record("p3"));
        }
        assert_eq!(slow.next().await.unwrap().unwrap_err(), Lagged(3));
        assert!(events.wanted());
        drop(slow);
        assert!(!events.wanted());
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_publisher_goes() {
        let events = Events::new(2);
        let mut s = events.subscribe();
        drop(events);
        assert!(s.next().await.is_none());
    }

    /// Shutdown ends every open subscription, and any made after it, even with events
    /// still unread.
    #[tokio::test]
    async fn closing_ends_every_subscription() {
        let events = Events::new(8);
        let mut before = events.subscribe();
        events.sandbox(EventKind::Created, || record("p4"));
        events.close();
        assert!(before.next().await.is_none());
        assert!(events.subscribe().next().await.is_none());
    }
}
