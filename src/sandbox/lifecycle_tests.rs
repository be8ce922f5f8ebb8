//! RunPodSandbox, StopPodSandbox and RemovePodSandbox against a fake backend and temp
//! stores: every failure leaves nothing behind and maps to its gRPC code.

use k8s_cri::v1::PodSandboxConfig;
use tonic::Code;

use super::*;
use crate::backend::fake::{FailAt, FakeWorld};
use crate::error::Kind;

type World = FakeWorld;

trait Empty {
    fn assert_empty(&self);
}

impl Empty for FakeWorld {
    /// Nothing of any pod is left: no record, no state dir, no name.
    fn assert_empty(&self) {
        assert!(self.sandboxes.all().is_empty());
        let left = crate::backend::fake::left_in_store(self.sandboxes.dir());
        assert!(left.is_empty(), "left in the store: {left:?}");
        self.names
            .reserve(&name(), "probe")
            .expect("the name is free");
        self.names.release(&name(), "probe");
    }
}

fn name() -> String {
    "web_default_uid-1_0".into()
}

fn pod() -> PodSandboxConfig {
    crate::backend::fake::pod_config()
}

fn code(e: SandboxError) -> Code {
    crate::cri::errors::to_status(e).code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_lives_through_its_backend_and_leaves_nothing() {
    let w = World::new();
    let id = run_pod_sandbox(&w.ctx(), pod(), "").await.unwrap();
    let s = w.sandboxes.get(&id).unwrap();
    assert_eq!(s.record().backend, "libcontainer");
    assert_eq!(s.record().hostname, "web");
    assert!(w.sandboxes.record_dir(&id).join(RECORD_FILE).is_file());
    let clash = run_pod_sandbox(&w.ctx(), pod(), "").await.unwrap_err();
    assert!(clash.to_string().contains(&id), "{clash}");
    assert_eq!(code(clash), Code::AlreadyExists);

    stop_pod_sandbox(&w.ctx(), &id).await.unwrap();
    assert_eq!(s.state(), SandboxState::NotReady);
    // Stop again is a no-op (kubelet retries).
    stop_pod_sandbox(&w.ctx(), &id).await.unwrap();
    remove_pod_sandbox(&w.ctx(), &id).await.unwrap();
    remove_pod_sandbox(&w.ctx(), &id).await.unwrap();
    assert_eq!(
        w.fake.calls(),
        vec![
            format!("run_pod {id}"),
            format!("stop_pod {id}"),
            format!("remove_pod {id}")
        ]
    );
    w.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_intent_goes_once_its_record_is_on_disk_and_a_start_keeps_the_pod_meanwhile() {
    let w = World::new();
    let id = run_pod_sandbox(&w.ctx(), pod(), "").await.unwrap();
    let state_dir = w.sandboxes.record_dir(&id);
    assert!(state_dir.join(RECORD_FILE).is_file());
    // Removed by a task of its own after the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while state_dir.join(crate::intent::INTENT_FILE).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the intent stayed beside the record"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // A start that finds both (the daemon killed before that task ran) keeps the pod.
    std::fs::write(state_dir.join(crate::intent::INTENT_FILE), "{}").unwrap();
    let reloaded = SandboxStore::load(w.sandboxes.dir(), w.sandboxes.events().clone()).unwrap();
    assert_eq!(reloaded.get(&id).unwrap().record().id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_fails_to_run_the_pod_leaves_no_name_or_record() {
    for kind in [Kind::Internal, Kind::InvalidArgument, Kind::Unavailable] {
        let w = World::new();
        w.fake.fail_at(FailAt::RunPod(kind));
        let e = run_pod_sandbox(&w.ctx(), pod(), "").await.unwrap_err();
        assert_eq!(code(e), crate::cri::errors::code(kind));
        w.assert_empty();
        // The backend cleans up after its own failure; nothing else was asked of it.
        assert_eq!(w.fake.calls().len(), 1, "{:?}", w.fake.calls());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_written_undoes_the_backends_pod() {
    let w = World::new();
    let store = w.sandboxes.dir().to_owned();
    // The record's final name is taken by a directory: the atomic rename fails.
    *w.fake.on_run_pod.lock().unwrap() = Some(Box::new(move |id| {
        std::fs::create_dir_all(store.join(id).join(RECORD_FILE).join("x")).unwrap();
    }));
    let e = run_pod_sandbox(&w.ctx(), pod(), "").await.unwrap_err();
    assert_eq!(code(e), Code::Internal);
    let calls = w.fake.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[1].starts_with("stop_pod ") && calls[2].starts_with("remove_pod "));
    w.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_dir_that_cannot_be_made_fails_before_the_backend_runs() {
    let w = World::new();
    std::fs::remove_dir_all(w.sandboxes.dir()).unwrap();
    std::fs::write(w.sandboxes.dir(), "not a dir").unwrap();
    let e = run_pod_sandbox(&w.ctx(), pod(), "").await.unwrap_err();
    assert_eq!(code(e), Code::Internal);
    assert!(w.fake.calls().is_empty());
    assert!(w.sandboxes.all().is_empty());
    w.names.reserve(&name(), "probe").expect("the name is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_before_anything_is_made() {
    let w = World::new();
    let e = run_pod_sandbox(&w.ctx(), pod(), "no-such-handler")
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::InvalidArgument);
    let e = run_pod_sandbox(&w.ctx(), PodSandboxConfig::default(), "")
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::InvalidArgument);
    // A backend this daemon does not have (crun is not registered here).
    let mut p = pod();
    p.annotations
        .insert(crate::select::RUNTIME_ANNOTATION.into(), "crun".into());
    let e = run_pod_sandbox(&w.ctx(), p, "").await.unwrap_err();
    assert_eq!(code(e), Code::FailedPrecondition);
    assert!(w.fake.calls().is_empty());
    w.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_pods_are_not_found_or_already_gone() {
    let w = World::new();
    let missing = "f".repeat(64);
    assert_eq!(
        code(w.sandboxes.get(&missing).map(|_| ()).unwrap_err()),
        Code::NotFound
    );
    stop_pod_sandbox(&w.ctx(), &missing).await.unwrap();
    remove_pod_sandbox(&w.ctx(), &missing).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failing_to_stop_keeps_the_pod_ready_and_says_why() {
    let w = World::new();
    let id = run_pod_sandbox(&w.ctx(), pod(), "").await.unwrap();
    w.fake.fail_at(FailAt::StopPod(Kind::Internal));
    let e = remove_pod_sandbox(&w.ctx(), &id).await.unwrap_err();
    assert_eq!(code(e), Code::Internal);
    assert_eq!(w.sandboxes.get(&id).unwrap().state(), SandboxState::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failing_to_remove_keeps_the_record_to_retry() {
    let w = World::new();
    let id = run_pod_sandbox(&w.ctx(), pod(), "").await.unwrap();
    w.fake.fail_at(FailAt::RemovePod(Kind::Unavailable));
    let e = remove_pod_sandbox(&w.ctx(), &id).await.unwrap_err();
    assert_eq!(code(e), Code::Unavailable);
    assert!(
        w.sandboxes.get(&id).is_ok(),
        "the record stays for kubelet's retry"
    );
    w.fake.fail.lock().unwrap().clear();
    remove_pod_sandbox(&w.ctx(), &id).await.unwrap();
    w.assert_empty();
}

/// A pod's life is told as created, started, stopped, deleted, each naming the sandbox
/// and carrying its record as of that moment; a failed RunPodSandbox tells nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_life_is_published_and_a_failed_run_is_not() {
    use crate::events::EventKind;
    let failing = World::new();
    let mut sub = failing.events.subscribe();
    failing.fake.fail_at(FailAt::RunPod(Kind::Internal));
    assert!(run_pod_sandbox(&failing.ctx(), pod(), "").await.is_err());
    drop(failing);
    assert!(sub.next().await.is_none(), "a failed run publishes nothing");

    let w = World::new();
    let ctx = w.ctx();
    let mut sub = w.events.subscribe();
    let id = run_pod_sandbox(&ctx, pod(), "").await.unwrap();
    stop_pod_sandbox(&ctx, &id).await.unwrap();
    stop_pod_sandbox(&ctx, &id).await.unwrap();
    remove_pod_sandbox(&ctx, &id).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = sub.next().await.unwrap().unwrap();
        assert_eq!(
            (e.id.as_str(), e.sandbox_id.as_str()),
            (id.as_str(), id.as_str())
        );
        let pod = e.pod.expect("the pod's record");
        seen.push((e.kind, pod.state));
    }
    assert_eq!(
        seen,
        [
            (EventKind::Created, SandboxState::Ready),
            (EventKind::Started, SandboxState::Ready),
            (EventKind::Stopped, SandboxState::NotReady),
            (EventKind::Deleted, SandboxState::NotReady),
        ]
    );
    drop(w);
    assert!(sub.next().await.is_none(), "nothing more was published");
}
