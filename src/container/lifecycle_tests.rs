//! CreateContainer, Start, Stop, Remove and ExecSync against a fake backend and temp
//! stores: requests refused before anything is made, with their gRPC codes, and nothing
//! left behind (no name, no dir, no record).

use k8s_cri::v1::{ContainerConfig, ContainerMetadata, ImageSpec, PodSandboxConfig};
use tonic::Code;

use super::*;
use crate::backend::fake::FakeWorld;

fn pod() -> PodSandboxConfig {
    crate::backend::fake::pod_config()
}

fn container(image: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["true".into()],
        ..Default::default()
    }
}

fn code(e: ContainerError) -> Code {
    crate::cri::errors::to_status(e).code()
}

/// No container, no container dir, and the container's name is free.
fn assert_no_container(w: &FakeWorld) {
    assert!(w.containers.all().is_empty());
    let left = crate::backend::fake::left_in_store(w.containers.dir());
    assert!(left.is_empty(), "left in the store: {left:?}");
    let name = "app_web_default_uid-1_0";
    w.names.reserve(name, "probe").expect("the name is free");
    w.names.release(name, "probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_refuses_bad_requests_with_their_codes_and_makes_nothing() {
    let w = FakeWorld::new();
    let ctx = w.ctx();
    let missing = "f".repeat(64);
    let e = create_container(&ctx, &missing, container("busybox"), None).await;
    assert_eq!(code(e.unwrap_err()), Code::NotFound);

    let pod_id = crate::sandbox::run_pod_sandbox(&ctx, pod(), "")
        .await
        .unwrap();
    let cases: Vec<(ContainerConfig, Code)> = vec![
        (ContainerConfig::default(), Code::InvalidArgument),
        (container(""), Code::InvalidArgument),
        (
            ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "a/b".into(),
                    attempt: 0,
                }),
                ..container("busybox")
            },
            Code::InvalidArgument,
        ),
        // CreateContainer never pulls.
        (container("busybox:not-pulled"), Code::NotFound),
        // The shipped rule sends lxc/ images to proxmox-lxc: another backend family than
        // this pod's, refused before anything is made.
        (container("lxc/debian-12"), Code::FailedPrecondition),
    ];
    for (config, want) in cases {
        let e = create_container(&ctx, &pod_id, config.clone(), None)
            .await
            .unwrap_err();
        assert_eq!(code(e), want, "{config:?}");
        assert_no_container(&w);
    }
    assert_eq!(
        w.fake.calls().len(),
        1,
        "only the pod: {:?}",
        w.fake.calls()
    );

    // A pod that is no longer ready takes no new container.
    crate::sandbox::stop_pod_sandbox(&ctx, &pod_id)
        .await
        .unwrap();
    let e = create_container(&ctx, &pod_id, container("busybox"), None).await;
    assert_eq!(code(e.unwrap_err()), Code::FailedPrecondition);
    assert_no_container(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_missing_containers_are_not_found_or_already_done() {
    let w = FakeWorld::new();
    let ctx = w.ctx();
    let missing = "f".repeat(64);
    assert_eq!(
        code(start_container(&ctx, &missing).await.unwrap_err()),
        Code::NotFound
    );
    assert_eq!(
        code(
            exec_sync(&ctx, &missing, vec!["true".into()], 0)
                .await
                .unwrap_err()
        ),
        Code::NotFound
    );
    assert_eq!(
        code(reopen_log(&ctx, &missing).await.unwrap_err()),
        Code::NotFound
    );
    assert_eq!(
        code(start_container(&ctx, "").await.unwrap_err()),
        Code::InvalidArgument
    );
    // Stop and remove of something gone succeed (kubelet relies on it).
    stop_container(&ctx, &missing, 10).await.unwrap();
    remove_container(&ctx, &missing).await.unwrap();
    assert!(w.fake.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_create_rolls_everything_back_and_keeps_its_code() {
    let w = FakeWorld::new();
    w.fake
        .guest_form
        .store(true, std::sync::atomic::Ordering::Relaxed);
    w.images
        .record_template("tpl/debian", "local:vztmpl/debian.tar.zst", 10)
        .await
        .unwrap();
    let ctx = w.ctx();
    let pod_id = crate::sandbox::run_pod_sandbox(&ctx, pod(), "")
        .await
        .unwrap();
    for kind in [
        crate::error::Kind::Unavailable,
        crate::error::Kind::Internal,
        crate::error::Kind::DeadlineExceeded,
    ] {
        w.fake.fail.lock().unwrap().clear();
        w.fake.fail_at(crate::backend::fake::FailAt::Create(kind));
        let e = create_container(&ctx, &pod_id, container("tpl/debian"), None)
            .await
            .unwrap_err();
        assert_eq!(
            code(e),
            crate::cri::errors::to_status(ContainerError::Backend(
                crate::backend::BackendError::Failed {
                    backend: "x",
                    kind,
                    message: String::new()
                }
            ))
            .code()
        );
        assert_no_container(&w);
        let run_dirs: Vec<_> = std::fs::read_dir(w.run_dir.join("c"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(run_dirs.is_empty(), "run dirs left: {run_dirs:?}");
    }
    w.fake.fail.lock().unwrap().clear();
    let id = create_container(&ctx, &pod_id, container("tpl/debian"), None)
        .await
        .unwrap();
    // A guest pod takes one container; an OCI image is not a template.
    let mut second = container("tpl/debian");
    second.metadata.as_mut().unwrap().name = "second".into();
    let e = create_container(&ctx, &pod_id, second, None)
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::FailedPrecondition);
    assert_eq!(w.containers.all().len(), 1);
    assert_eq!(w.containers.all()[0].id, id);
}
