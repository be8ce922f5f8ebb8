//! Property tests of request validation (issue 12): arbitrary RunPodSandbox and
//! CreateContainer configs, with hostile strings (`..`, `/`, NUL, unicode, 64 KiB
//! values) and any numbers, go through the domain operations the CRI services call
//! (`sandbox::run_pod_sandbox`, `container::create_container`, the pod holder's request
//! check) against the fake backend and temp stores. None panics; every refusal is
//! InvalidArgument; a refused request leaves no record, dir or name behind.
//!
//! The translation of container configs to OCI specs has its own property
//! (`spec::proptests`); the fake backend takes containers in the guest form, so these
//! exercise what CreateContainer checks before any spec is made.

use k8s_cri::v1::{
    DnsConfig, ImageSpec, Int64Value, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PortMapping,
};
use proptest::prelude::*;

use crate::backend::fake::FakeWorld;
use crate::error::{Classify, Kind};
use crate::spec::proptests::{config, container_config, hostile, number};

/// Each case builds a world of temp stores: fewer cases than the pure properties.
fn world_config() -> ProptestConfig {
    let mut c = config();
    c.cases = c.cases.min(64);
    c
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn strings(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(hostile(), 0..max)
}

fn pod_config() -> impl Strategy<Value = PodSandboxConfig> {
    (
        (hostile(), hostile(), hostile(), any::<u32>()),
        (hostile(), hostile()),
        (strings(3), strings(3), strings(3)),
        prop::collection::vec(
            (any::<i32>(), any::<i32>(), any::<i32>(), hostile()).prop_map(
                |(protocol, container_port, host_port, host_ip)| PortMapping {
                    protocol,
                    container_port,
                    host_port,
                    host_ip,
                },
            ),
            0..3,
        ),
        prop::collection::hash_map(hostile(), hostile(), 0..3),
        (
            hostile(),
            prop::collection::btree_map(hostile(), hostile(), 0..3),
        ),
        (any::<i32>(), any::<i32>(), any::<i32>(), any::<bool>()),
        prop::option::of(number()),
    )
        .prop_map(
            |(
                (name, namespace, uid, attempt),
                (hostname, log_directory),
                (servers, searches, options),
                port_mappings,
                annotations,
                (cgroup_parent, sysctls),
                (network, pid, ipc, privileged),
                run_as_user,
            )| PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name,
                    namespace,
                    uid,
                    attempt,
                }),
                hostname,
                log_directory,
                dns_config: Some(DnsConfig {
                    servers,
                    searches,
                    options,
                }),
                port_mappings,
                annotations,
                linux: Some(LinuxPodSandboxConfig {
                    cgroup_parent,
                    sysctls: sysctls.into_iter().collect(),
                    security_context: Some(LinuxSandboxSecurityContext {
                        namespace_options: Some(NamespaceOption {
                            network,
                            pid,
                            ipc,
                            ..Default::default()
                        }),
                        privileged,
                        run_as_user: run_as_user.map(|value| Int64Value { value }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
}

/// A handler none of the configured ones is: those name real backends the fake
/// world does not have (a FailedPrecondition of its own, not a request error).
fn handler() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), hostile()].prop_filter("a configured handler", |h| {
        !crate::config::Config::default().handlers.contains_key(h)
    })
}

fn assert_request_error<E: Classify + std::fmt::Display>(e: &E) -> Result<(), TestCaseError> {
    prop_assert_eq!(e.kind(), Kind::InvalidArgument, "refused as: {}", e);
    Ok(())
}

proptest! {
    #![proptest_config(world_config())]

    #[test]
    fn any_run_pod_sandbox_config_runs_or_is_invalid_argument(
        config in pod_config(),
        handler in handler(),
    ) {
        let w = FakeWorld::new();
        let result = runtime().block_on(crate::sandbox::run_pod_sandbox(&w.ctx(), config, &handler));
        match result {
            Ok(id) => prop_assert!(w.sandboxes.get(&id).is_ok()),
            Err(e) => {
                assert_request_error(&e)?;
                prop_assert!(w.sandboxes.all().is_empty());
                let left = std::fs::read_dir(w.sandboxes.dir()).map(|d| d.count()).unwrap_or(0);
                prop_assert_eq!(left, 0, "sandbox dirs left");
            }
        }
    }

    #[test]
    fn any_create_container_config_is_created_or_invalid_argument(
        mut config in container_config(),
        log_directory in hostile(),
    ) {
        let w = FakeWorld::new();
        w.fake.guest_form.store(true, std::sync::atomic::Ordering::Relaxed);
        let rt = runtime();
        let mut pod = crate::backend::fake::pod_config();
        pod.log_directory = log_directory;
        let pod_id = rt.block_on(async {
            w.images
                .record_template("tpl/debian", "local:vztmpl/debian.tar.zst", 10)
                .await
                .expect("template image");
            crate::sandbox::run_pod_sandbox(&w.ctx(), pod, "").await
        });
        let pod_id = match pod_id {
            Ok(id) => id,
            // A hostile log_directory may be refused with the pod already.
            Err(e) => return assert_request_error(&e),
        };
        config.image = Some(ImageSpec {
            image: "tpl/debian".into(),
            ..Default::default()
        });
        let result = rt.block_on(crate::container::create_container(&w.ctx(), &pod_id, config, None));
        match result {
            Ok(id) => prop_assert!(w.containers.get(&id).is_ok()),
            Err(e) => {
                assert_request_error(&e)?;
                prop_assert!(w.containers.all().is_empty());
                let left = std::fs::read_dir(w.containers.dir()).map(|d| d.count()).unwrap_or(0);
                prop_assert_eq!(left, 0, "container dirs left");
            }
        }
    }

    #[test]
    fn any_pod_holder_request_is_valid_or_invalid_argument(
        sysctls in prop::collection::btree_map(hostile(), hostile(), 0..6),
        hostname in prop::option::of(hostile()),
        (new_net, new_ipc, new_uts, new_pid) in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
    ) {
        let req = crate::monitor::sandbox::SandboxRequest {
            id: "p".into(),
            dir: "/nonexistent".into(),
            new_net,
            new_ipc,
            new_uts,
            new_pid,
            hostname,
            sysctls,
            cgroup_dirs: Vec::new(),
        };
        if let Err(e) = crate::monitor::sandbox::validate(&req) {
            assert_request_error(&e)?;
        }
    }
}
