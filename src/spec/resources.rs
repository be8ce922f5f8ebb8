//! cgroup limits and the OOM score.
//!
//! CRI's LinuxContainerResources has no pids limit (kubelet sets it on the pod cgroup), so
//! none is set here.

use std::collections::HashMap;

use k8s_cri::v1::{HugepageLimit, LinuxContainerResources};
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources, Spec};

use super::{process_mut, resources_mut, HostView, SpecError, SpecInput};

/// The kernel's bounds for oom_score_adj.
pub const OOM_SCORE_ADJ_MIN: i32 = -1000;
pub const OOM_SCORE_ADJ_MAX: i32 = 1000;

pub fn apply_resources(spec: &mut Spec, input: &SpecInput) -> Result<(), SpecError> {
    let Some(requested) = input
        .config
        .linux
        .as_ref()
        .and_then(|l| l.resources.as_ref())
    else {
        return Ok(());
    };
    let oom = oom_score_adj(requested.oom_score_adj, input.host.oom_score_adj_min);
    process_mut(spec).set_oom_score_adj(Some(oom));

    let computed = container_resources(requested, input.host)?;
    // Keep what other steps put there (the device rules).
    let resources = resources_mut(spec);
    resources.set_cpu(computed.cpu().clone());
    resources.set_memory(*computed.memory());
    resources.set_hugepage_limits(computed.hugepage_limits().clone());
    resources.set_unified(computed.unified().clone());
    Ok(())
}

/// Clamps to what the daemon may set: the kernel's [-1000, 1000], raised to the host's
/// minimum where root lacks CAP_SYS_RESOURCE and negative values are refused (docs/libcontainer.md).
pub fn oom_score_adj(requested: i64, host_min: i32) -> i32 {
    let low = i64::from(host_min.clamp(OOM_SCORE_ADJ_MIN, OOM_SCORE_ADJ_MAX));
    // The clamp keeps the value inside i32, so the conversion cannot fail.
    i32::try_from(requested.clamp(low, i64::from(OOM_SCORE_ADJ_MAX))).unwrap_or(OOM_SCORE_ADJ_MAX)
}

/// CPU, memory, hugepages and unified settings. Zero means "not specified" for every field, as
/// in the CRI.
///
/// Swap: an explicit `memory_swap_limit_in_bytes` is used as sent. Without one, on cgroup v1
/// swap is set equal to the limit (memory+swap = memory: no swap, containerd's behaviour); on
/// cgroup v2 it is left alone, because kubelet controls swap there through
/// `unified["memory.swap.max"]`.
pub fn container_resources(
    r: &LinuxContainerResources,
    host: &HostView,
) -> Result<LinuxResources, SpecError> {
    let mut out = LinuxResources::default();

    let mut cpu = LinuxCpu::default();
    let mut cpu_set = false;
    if r.cpu_shares != 0 {
        cpu.set_shares(Some(non_negative("cpu_shares", r.cpu_shares)?));
        cpu_set = true;
    }
    if r.cpu_quota != 0 {
        // -1 is "unlimited" for CFS; anything below that is meaningless.
        if r.cpu_quota < -1 {
            return Err(SpecError::InvalidResource {
                field: "cpu_quota",
                reason: format!("{} is below -1", r.cpu_quota),
            });
        }
        cpu.set_quota(Some(r.cpu_quota));
        cpu_set = true;
    }
    if r.cpu_period != 0 {
        cpu.set_period(Some(non_negative("cpu_period", r.cpu_period)?));
        cpu_set = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(cpuset("cpuset_cpus", &r.cpuset_cpus)?));
        cpu_set = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(cpuset("cpuset_mems", &r.cpuset_mems)?));
        cpu_set = true;
    }
    if cpu_set {
        out.set_cpu(Some(cpu));
    }

    let mut memory = LinuxMemory::default();
    let mut memory_set = false;
    if r.memory_limit_in_bytes != 0 {
        let limit = positive("memory_limit_in_bytes", r.memory_limit_in_bytes)?;
        memory.set_limit(Some(limit));
        if !host.cgroup_v2 {
            memory.set_swap(Some(limit));
        }
        memory_set = true;
    }
    if r.memory_swap_limit_in_bytes != 0 {
        // -1 is "unlimited swap".
        if r.memory_swap_limit_in_bytes < -1 {
            return Err(SpecError::InvalidResource {
                field: "memory_swap_limit_in_bytes",
                reason: format!("{} is below -1", r.memory_swap_limit_in_bytes),
            });
        }
        memory.set_swap(Some(r.memory_swap_limit_in_bytes));
        memory_set = true;
    }
    if memory_set {
        out.set_memory(Some(memory));
    }

    let hugepages = hugepage_limits(&r.hugepage_limits, &host.hugepage_sizes)?;
    if !hugepages.is_empty() {
        out.set_hugepage_limits(Some(hugepages));
    }

    if !r.unified.is_empty() {
        if !host.cgroup_v2 {
            let mut keys: Vec<String> = r.unified.keys().cloned().collect();
            keys.sort();
            return Err(SpecError::UnifiedOnCgroupV1 { keys });
        }
        let mut keys: Vec<&String> = r.unified.keys().collect();
        keys.sort();
        for key in keys {
            if let Some(why) = super::unified::unified_key_refusal(key) {
                return Err(SpecError::InvalidResource {
                    field: "unified",
                    reason: format!("{key:?} {why}"),
                });
            }
        }
        out.set_unified(Some(
            r.unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        ));
    }
    Ok(out)
}

/// kubelet sends a limit for every hugepage size it found on the node. Sizes the host does not
/// offer are dropped rather than refused: writing their cgroup file would fail the create for a
/// limit that cannot be used anyway.
pub fn hugepage_limits(
    limits: &[HugepageLimit],
    host_sizes: &[String],
) -> Result<Vec<LinuxHugepageLimit>, SpecError> {
    let mut out = Vec::new();
    for l in limits {
        let size = parse_page_size(&l.page_size)?;
        if !host_sizes
            .iter()
            .any(|h| parse_page_size(h).is_ok_and(|hs| hs == size))
        {
            tracing::debug!(page_size = %l.page_size, "hugepage size not offered by this host; limit dropped");
            continue;
        }
        let limit = i64::try_from(l.limit).map_err(|_| SpecError::InvalidResource {
            field: "hugepage_limits",
            reason: format!("limit {} for {} is too large", l.limit, l.page_size),
        })?;
        let mut h = LinuxHugepageLimit::default();
        h.set_page_size(l.page_size.clone());
        h.set_limit(limit);
        out.push(h);
    }
    Ok(out)
}

/// `<n><unit>B` with unit K, M, G, T or P (base 1024), as the CRI defines it; the size in bytes.
fn parse_page_size(s: &str) -> Result<u64, SpecError> {
    let invalid = || SpecError::InvalidResource {
        field: "hugepage_limits",
        reason: format!("page size {s:?} is not like \"2MB\" or \"1GB\""),
    };
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (number, unit) = s.split_at(digits_end);
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let shift = match unit {
        "KB" => 10,
        "MB" => 20,
        "GB" => 30,
        "TB" => 40,
        "PB" => 50,
        _ => return Err(invalid()),
    };
    n.checked_shl(shift)
        .filter(|v| v >> shift == n && *v > 0)
        .ok_or_else(invalid)
}

/// A cpuset list like "0-3,8,10-11"; only its shape is checked, the kernel checks the CPUs.
fn cpuset(field: &'static str, s: &str) -> Result<String, SpecError> {
    let ok = s.split(',').all(|part| {
        let mut ends = part.trim().splitn(2, '-');
        let first = ends.next().unwrap_or_default();
        let valid = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
        valid(first) && ends.next().is_none_or(valid)
    });
    if !ok {
        return Err(SpecError::InvalidResource {
            field,
            reason: format!("{s:?} is not a cpu list like \"0-3,8\""),
        });
    }
    Ok(s.to_string())
}

fn non_negative(field: &'static str, v: i64) -> Result<u64, SpecError> {
    u64::try_from(v).map_err(|_| SpecError::InvalidResource {
        field,
        reason: format!("{v} is negative"),
    })
}

fn positive(field: &'static str, v: i64) -> Result<i64, SpecError> {
    if v <= 0 {
        return Err(SpecError::InvalidResource {
            field,
            reason: format!("{v} is not positive"),
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::Fixture;
    use super::*;
    use crate::error::{Classify, Kind};

    fn v1() -> HostView {
        HostView {
            cgroup_v2: false,
            hugepage_sizes: vec!["2MB".into()],
            ..Default::default()
        }
    }

    fn v2() -> HostView {
        HostView {
            cgroup_v2: true,
            hugepage_sizes: vec!["2MB".into(), "1GB".into()],
            ..Default::default()
        }
    }

    #[test]
    fn cpu_fields_are_copied() {
        let r = LinuxContainerResources {
            cpu_shares: 256,
            cpu_quota: 20_000,
            cpu_period: 100_000,
            cpuset_cpus: "0-1,3".into(),
            cpuset_mems: "0".into(),
            ..Default::default()
        };
        let out = container_resources(&r, &v2()).unwrap();
        let cpu = out.cpu().clone().unwrap();
        assert_eq!(cpu.shares(), Some(256));
        assert_eq!(cpu.quota(), Some(20_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1,3"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
    }

    #[test]
    fn nothing_requested_sets_nothing() {
        let out = container_resources(&LinuxContainerResources::default(), &v2()).unwrap();
        assert_eq!(out, LinuxResources::default());
    }

    #[test]
    fn memory_swap_equals_limit_on_v1_when_unset() {
        let r = LinuxContainerResources {
            memory_limit_in_bytes: 1 << 30,
            ..Default::default()
        };
        let mem = container_resources(&r, &v1()).unwrap().memory().unwrap();
        assert_eq!(mem.limit(), Some(1 << 30));
        assert_eq!(mem.swap(), Some(1 << 30));

        let mem = container_resources(&r, &v2()).unwrap().memory().unwrap();
        assert_eq!(mem.limit(), Some(1 << 30));
        assert_eq!(mem.swap(), None);
    }

    #[test]
    fn explicit_swap_is_used() {
        let r = LinuxContainerResources {
            memory_limit_in_bytes: 1 << 30,
            memory_swap_limit_in_bytes: 2 << 30,
            ..Default::default()
        };
        for host in [v1(), v2()] {
            let mem = container_resources(&r, &host).unwrap().memory().unwrap();
            assert_eq!(mem.swap(), Some(2 << 30));
        }
    }

    #[test]
    fn hugepages_for_offered_sizes_only() {
        let r = LinuxContainerResources {
            hugepage_limits: vec![
                HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 4 << 21,
                },
                HugepageLimit {
                    page_size: "1GB".into(),
                    limit: 0,
                },
            ],
            ..Default::default()
        };
        let out = container_resources(&r, &v1()).unwrap();
        let hp = out.hugepage_limits().clone().unwrap();
        assert_eq!(hp.len(), 1);
        assert_eq!(hp[0].page_size(), "2MB");
        assert_eq!(hp[0].limit(), 4 << 21);
        assert_eq!(
            container_resources(&r, &v2())
                .unwrap()
                .hugepage_limits()
                .as_ref()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn malformed_page_size_is_an_error() {
        for bad in ["2M", "MB", "2mb", "", "0MB", "99999999999999PB"] {
            let r = LinuxContainerResources {
                hugepage_limits: vec![HugepageLimit {
                    page_size: bad.into(),
                    limit: 1,
                }],
                ..Default::default()
            };
            assert!(
                matches!(
                    container_resources(&r, &v2()),
                    Err(SpecError::InvalidResource {
                        field: "hugepage_limits",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unified_on_v2_is_copied() {
        let r = LinuxContainerResources {
            unified: [("memory.swap.max".to_string(), "0".to_string())].into(),
            ..Default::default()
        };
        let out = container_resources(&r, &v2()).unwrap();
        assert_eq!(out.unified().as_ref().unwrap()["memory.swap.max"], "0");
    }

    #[test]
    fn unified_on_v1_is_an_error() {
        let r = LinuxContainerResources {
            unified: [("memory.high".to_string(), "1G".to_string())].into(),
            ..Default::default()
        };
        let err = container_resources(&r, &v1()).unwrap_err();
        assert!(matches!(err, SpecError::UnifiedOnCgroupV1 { .. }), "{err}");
        assert_eq!(err.kind(), Kind::InvalidArgument);
        assert!(err.to_string().contains("memory.high"));
    }

    #[test]
    fn unified_key_must_be_a_file_name() {
        let r = LinuxContainerResources {
            unified: [("../memory.max".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        assert!(container_resources(&r, &v2()).is_err());
    }

    #[test]
    fn unified_core_files_are_refused() {
        for key in ["cgroup.procs", "cgroup.subtree_control", "cgroup.kill"] {
            let r = LinuxContainerResources {
                unified: [(key.to_string(), "1".to_string())].into(),
                ..Default::default()
            };
            let err = container_resources(&r, &v2()).unwrap_err();
            assert_eq!(err.kind(), Kind::InvalidArgument, "{key}: {err}");
        }
    }

    #[test]
    fn negative_values_are_rejected() {
        let cases = [
            LinuxContainerResources {
                cpu_shares: -2,
                ..Default::default()
            },
            LinuxContainerResources {
                cpu_period: -1,
                ..Default::default()
            },
            LinuxContainerResources {
                cpu_quota: -5,
                ..Default::default()
            },
            LinuxContainerResources {
                memory_limit_in_bytes: -1,
                ..Default::default()
            },
            LinuxContainerResources {
                memory_swap_limit_in_bytes: -7,
                ..Default::default()
            },
            LinuxContainerResources {
                cpuset_cpus: "0-a".into(),
                ..Default::default()
            },
            LinuxContainerResources {
                cpuset_mems: "1,,2".into(),
                ..Default::default()
            },
        ];
        for r in cases {
            assert!(container_resources(&r, &v2()).is_err(), "{r:?}");
        }
        let unlimited = LinuxContainerResources {
            cpu_quota: -1,
            ..Default::default()
        };
        assert!(container_resources(&unlimited, &v2()).is_ok());
    }

    #[test]
    fn oom_score_adj_is_clamped() {
        assert_eq!(oom_score_adj(500, -1000), 500);
        assert_eq!(oom_score_adj(-998, -1000), -998);
        assert_eq!(oom_score_adj(-998, 0), 0, "host refuses negative values");
        assert_eq!(oom_score_adj(5000, 0), 1000);
        assert_eq!(oom_score_adj(i64::MIN, -5000), -1000);
        assert_eq!(oom_score_adj(i64::MAX, 0), 1000);
    }

    #[test]
    fn apply_sets_oom_and_keeps_device_rules() {
        let mut f = Fixture::new();
        f.host.oom_score_adj_min = 0;
        f.resources().oom_score_adj = -997;
        f.resources().memory_limit_in_bytes = 1 << 20;
        let mut spec = Spec::default();
        let mut rule = oci_spec::runtime::LinuxDeviceCgroup::default();
        rule.set_allow(false);
        resources_mut(&mut spec).set_devices(Some(vec![rule]));
        apply_resources(&mut spec, &f.input()).unwrap();
        assert_eq!(spec.process().as_ref().unwrap().oom_score_adj(), Some(0));
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(res.devices().as_ref().unwrap().len(), 1);
        assert_eq!(res.memory().unwrap().limit(), Some(1 << 20));
    }

    #[test]
    fn no_resources_no_oom_score() {
        let f = Fixture::new();
        let mut spec = Spec::default();
        spec.set_process(None);
        apply_resources(&mut spec, &f.input()).unwrap();
        assert!(spec.process().is_none());
    }
}
