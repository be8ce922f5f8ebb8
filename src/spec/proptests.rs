//! Property test of the CRI → OCI translation (issue 12): arbitrary container configs,
//! with hostile strings (`..`, `/`, NUL, unicode, 64 KiB values) and any numbers
//! (negative, huge), never make `container_spec` panic, and every refusal is a request
//! error: InvalidArgument, or FailedPrecondition for the three refusals that depend on
//! the pod or the host rather than on the request alone (a privileged container in an
//! unprivileged pod, BIDIRECTIONAL propagation without privilege, a namespace the pod
//! does not have). Never Internal: nothing a request says is a proxrt bug.
//!
//! The case count is bounded (`PROPTEST_CASES` overrides it) so that it runs in seconds
//! in hack/test.

use std::collections::HashMap;

use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, HugepageLimit, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext, Mount,
    NamespaceOption, SecurityProfile,
};
use proptest::prelude::*;

use super::fixture::Fixture;
use super::{container_spec, SpecError};
use crate::error::{Classify, Kind};

/// Cases per property unless `PROPTEST_CASES` says otherwise.
pub(crate) const CASES: u32 = 256;

pub(crate) fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CASES),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings a hostile or careless client sends: path pieces, NUL, unicode, shell and
/// separator characters, sometimes very long.
pub(crate) fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::collection::vec(
            prop_oneof![
                Just("..".to_owned()),
                Just("/".to_owned()),
                Just("\0".to_owned()),
                Just(".".to_owned()),
                Just("=".to_owned()),
                Just(":".to_owned()),
                Just(",".to_owned()),
                Just("-".to_owned()),
                Just(" ".to_owned()),
                Just("é".to_owned()),
                Just("🦀".to_owned()),
                Just("\u{202e}".to_owned()),
                Just("ALL".to_owned()),
                Just("CAP_SYS_ADMIN".to_owned()),
                Just("NET_RAW".to_owned()),
                Just("memory.max".to_owned()),
                Just("cgroup.procs".to_owned()),
                Just("root".to_owned()),
                Just("1000".to_owned()),
                Just("-1".to_owned()),
                Just("runtime/default".to_owned()),
                Just("localhost/".to_owned()),
                "[a-z0-9]{1,6}",
            ],
            0..8,
        )
        .prop_map(|parts| parts.concat()),
        1 => Just(String::new()),
        1 => (1usize..4).prop_map(|n| "a/".repeat((n * 16) << 10)),
    ]
}

fn strings(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(hostile(), 0..max)
}

/// Any number, with the edges over-represented.
pub(crate) fn number() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(-1),
        Just(i64::MIN),
        Just(i64::MAX),
        Just(1 << 40),
        -2000i64..2000,
        any::<i64>(),
    ]
}

fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![0i32..5, any::<i32>()]
}

fn map(max: usize) -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(hostile(), hostile(), 0..max)
}

fn mount() -> impl Strategy<Value = Mount> {
    (
        hostile(),
        hostile(),
        any::<bool>(),
        enum_value(),
        any::<bool>(),
    )
        .prop_map(
            |(container_path, host_path, readonly, propagation, recursive_read_only)| Mount {
                container_path,
                host_path,
                readonly,
                propagation,
                recursive_read_only,
                ..Default::default()
            },
        )
}

fn profile() -> impl Strategy<Value = Option<SecurityProfile>> {
    prop::option::of(
        (enum_value(), hostile()).prop_map(|(profile_type, localhost_ref)| SecurityProfile {
            profile_type,
            localhost_ref,
        }),
    )
}

// The deprecated fields are still sent by older kubelets, and read by the translation.
#[allow(deprecated)]
fn security() -> impl Strategy<Value = LinuxContainerSecurityContext> {
    (
        (strings(4), strings(4), strings(3)),
        any::<bool>(),
        (enum_value(), enum_value(), enum_value(), hostile()),
        (
            prop::option::of(number()),
            prop::option::of(number()),
            hostile(),
            prop::collection::vec(number(), 0..4),
        ),
        (any::<bool>(), any::<bool>(), strings(3), strings(3)),
        (profile(), profile(), hostile(), hostile()),
    )
        .prop_map(
            |(
                (add, drop, ambient),
                privileged,
                (network, pid, ipc, target_id),
                (uid, gid, username, groups),
                (readonly_rootfs, no_new_privs, masked_paths, readonly_paths),
                (seccomp, apparmor, apparmor_profile, seccomp_profile_path),
            )| LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: add,
                    drop_capabilities: drop,
                    add_ambient_capabilities: ambient,
                }),
                privileged,
                namespace_options: Some(NamespaceOption {
                    network,
                    pid,
                    ipc,
                    target_id,
                    userns_options: None,
                }),
                run_as_user: uid.map(|value| Int64Value { value }),
                run_as_group: gid.map(|value| Int64Value { value }),
                run_as_username: username,
                readonly_rootfs,
                supplemental_groups: groups,
                no_new_privs,
                masked_paths,
                readonly_paths,
                seccomp,
                apparmor,
                apparmor_profile,
                seccomp_profile_path,
                ..Default::default()
            },
        )
}

fn resources() -> impl Strategy<Value = LinuxContainerResources> {
    (
        (number(), number(), number(), number(), number(), number()),
        (hostile(), hostile()),
        prop::collection::vec(
            (hostile(), any::<u64>())
                .prop_map(|(page_size, limit)| HugepageLimit { page_size, limit }),
            0..3,
        ),
        map(4),
    )
        .prop_map(
            |((period, quota, shares, memory, oom, swap), (cpus, mems), hugepages, unified)| {
                LinuxContainerResources {
                    cpu_period: period,
                    cpu_quota: quota,
                    cpu_shares: shares,
                    memory_limit_in_bytes: memory,
                    oom_score_adj: oom,
                    cpuset_cpus: cpus,
                    cpuset_mems: mems,
                    hugepage_limits: hugepages,
                    unified,
                    memory_swap_limit_in_bytes: swap,
                }
            },
        )
}

/// A CreateContainer config, every field the translation reads chosen freely.
pub(crate) fn container_config() -> impl Strategy<Value = ContainerConfig> {
    (
        (hostile(), any::<u32>()),
        (strings(4), strings(4), hostile()),
        prop::collection::vec(
            (hostile(), hostile()).prop_map(|(key, value)| KeyValue { key, value }),
            0..4,
        ),
        prop::collection::vec(mount(), 0..4),
        (map(3), map(3), hostile()),
        (any::<bool>(), any::<bool>()),
        prop::option::of(security()),
        prop::option::of(resources()),
    )
        .prop_map(
            |(
                (name, attempt),
                (command, args, working_dir),
                envs,
                mounts,
                (labels, annotations, log_path),
                (tty, stdin),
                security_context,
                resources,
            )| ContainerConfig {
                metadata: Some(ContainerMetadata { name, attempt }),
                command,
                args,
                working_dir,
                envs,
                mounts,
                labels,
                annotations,
                log_path,
                tty,
                stdin,
                linux: Some(LinuxContainerConfig {
                    security_context,
                    resources,
                }),
                ..Default::default()
            },
        )
}

/// The refusals that depend on the pod or the host, not the request alone.
fn is_precondition(e: &SpecError) -> bool {
    matches!(
        e,
        SpecError::PrivilegedNotAllowed { .. }
            | SpecError::BidirectionalNeedsPrivileged { .. }
            | SpecError::NamespaceUnavailable { .. }
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_container_config_translates_or_is_refused_as_a_request_error(
        config in container_config(),
        privileged_pod in any::<bool>(),
        cgroup_v2 in any::<bool>(),
    ) {
        let mut f = Fixture::new();
        f.config = config;
        f.sandbox.privileged = privileged_pod;
        f.host.cgroup_v2 = cgroup_v2;
        match container_spec(&f.input()) {
            Ok(spec) => {
                // What was accepted serializes as config.json.
                prop_assert!(serde_json::to_vec(&spec).is_ok());
            }
            Err(e) => match e.kind() {
                Kind::InvalidArgument => {}
                Kind::FailedPrecondition if is_precondition(&e) => {}
                other => prop_assert!(false, "{other:?} for a request: {e}"),
            },
        }
    }
}
