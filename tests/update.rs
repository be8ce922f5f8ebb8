//! UpdateContainerResources: new limits land in the running container's cgroup files and
//! ContainerStatus reports them; refusals carry their codes.

mod common;

use common::pods::PodEnv;
use k8s_cri::v1::{
    ContainerStatusRequest, LinuxContainerResources, UpdateContainerResourcesRequest,
};
use tonic::Code;

/// The file of `controller` for the container's cgroup (`<parent>/proxrt-<id>`), on a v1
/// or hybrid host (`/sys/fs/cgroup/<controller>/…`) or a v2 one (`/sys/fs/cgroup/…`).
fn cgroup_file(env: &PodEnv, id: &str, controller: &str, v1: &str, v2: &str) -> String {
    let rel = format!("{}/proxrt-{id}", env.cgroup_parent.trim_start_matches('/'));
    let v1_path = format!("/sys/fs/cgroup/{controller}/{rel}/{v1}");
    let path = match std::path::Path::new(&v1_path).exists() {
        true => v1_path,
        false => format!("/sys/fs/cgroup/{rel}/{v2}"),
    };
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn an_update_reaches_the_cgroup_and_the_status() {
    let mut env = PodEnv::start().await;
    let pod = env.run_pod(env.pod_config("upd")).await;
    let id = env
        .create_start(&pod, env.container_config(&pod, "app", &["sleep", "600"]))
        .await;
    let wanted = LinuxContainerResources {
        cpu_shares: 512,
        cpu_quota: 20_000,
        cpu_period: 100_000,
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    };
    env.cri
        .runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(wanted.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let v2 = !std::path::Path::new("/sys/fs/cgroup/memory").exists();
    let memory = cgroup_file(&env, &id, "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(memory, (64u64 << 20).to_string());
    if v2 {
        assert_eq!(cgroup_file(&env, &id, "cpu", "", "cpu.max"), "20000 100000");
    } else {
        assert_eq!(
            cgroup_file(&env, &id, "cpu", "cpu.cfs_quota_us", ""),
            "20000"
        );
        assert_eq!(cgroup_file(&env, &id, "cpu", "cpu.shares", ""), "512");
    }
    let status = env
        .cri
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.resources.unwrap().linux, Some(wanted.clone()));
    // Still the process it was: the update did not restart anything.
    assert_eq!(env.exec_ok(&id, &["true"]).await, "");

    // Refusals: no linux resources, a missing container, an exited one, a bad value.
    let update =
        |id: &str, linux: Option<LinuxContainerResources>| UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux,
            ..Default::default()
        };
    let mut rt = env.cri.runtime.clone();
    let e = rt
        .update_container_resources(update(&id, None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let bad = LinuxContainerResources {
        cpu_quota: -5,
        ..Default::default()
    };
    let e = rt
        .update_container_resources(update(&id, Some(bad)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = rt
        .update_container_resources(update(&"f".repeat(64), Some(wanted.clone())))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    env.stop_container(&id, 0).await.unwrap();
    let e = rt
        .update_container_resources(update(&id, Some(wanted)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
}
