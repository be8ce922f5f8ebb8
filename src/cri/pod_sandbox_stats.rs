//! PodSandboxStats, and the CRI shape of a pod's usage ListPodSandboxStats shares.

use k8s_cri::v1::{
    LinuxPodSandboxStats, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes,
    PodSandboxStats, PodSandboxStatsRequest, PodSandboxStatsResponse, ProcessUsage, UInt64Value,
};
use tonic::Status;

use super::container_stats::{cpu_usage, memory_usage, to_cri_stats};
use super::errors::to_status;
use crate::daemon::Daemon;
use crate::sandbox::SandboxRecord;
use crate::stats::{InterfaceUsage, PodUsage, StatsError};

/// kubelet's name for a pod's primary interface (what CNI plugins create).
const DEFAULT_INTERFACE: &str = "eth0";

#[tracing::instrument(level = "debug", skip_all, fields(sandbox = %req.pod_sandbox_id))]
pub fn pod_sandbox_stats(
    d: &Daemon,
    req: PodSandboxStatsRequest,
) -> Result<PodSandboxStatsResponse, Status> {
    let sandbox = d.sandboxes().get(&req.pod_sandbox_id).map_err(to_status)?;
    let record = sandbox.record();
    let usage = pod_usage(d, &record).map_err(to_status)?;
    Ok(PodSandboxStatsResponse {
        stats: Some(to_cri_stats_of_pod(d, &record, &usage)),
    })
}

pub(super) fn pod_usage(d: &Daemon, pod: &SandboxRecord) -> Result<PodUsage, StatsError> {
    let containers = d.containers().in_sandbox(&pod.id);
    d.stats().pod(d.containers(), d.backends(), pod, containers)
}

pub(super) fn to_cri_stats_of_pod(d: &Daemon, r: &SandboxRecord, u: &PodUsage) -> PodSandboxStats {
    let cgroup = u.cgroup.as_ref();
    PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: r.id.clone(),
            metadata: r.config.metadata.clone(),
            labels: r.config.labels.clone(),
            annotations: r.config.annotations.clone(),
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu: cgroup
                .and_then(|g| g.cpu_ns)
                .map(|ns| cpu_usage(u.timestamp, ns, u.cpu_nano_cores)),
            memory: cgroup
                .and_then(|g| g.memory)
                .map(|m| memory_usage(u.timestamp, &m)),
            network: u
                .network
                .as_ref()
                .map(|interfaces| network_usage(u.timestamp, interfaces)),
            process: cgroup.and_then(|g| g.processes).map(|n| ProcessUsage {
                timestamp: u.timestamp,
                process_count: Some(UInt64Value { value: n }),
            }),
            containers: u
                .containers
                .iter()
                .map(|(c, cu)| to_cri_stats(d.containers().dir(), c, cu))
                .collect(),
        }),
        windows: None,
    }
}

/// `eth0` as the default interface, every other one (but `lo`, left out when read) listed.
fn network_usage(timestamp: i64, interfaces: &[InterfaceUsage]) -> NetworkUsage {
    let cri = |i: &InterfaceUsage| NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: Some(UInt64Value { value: i.rx_bytes }),
        rx_errors: Some(UInt64Value { value: i.rx_errors }),
        tx_bytes: Some(UInt64Value { value: i.tx_bytes }),
        tx_errors: Some(UInt64Value { value: i.tx_errors }),
    };
    NetworkUsage {
        timestamp,
        default_interface: interfaces
            .iter()
            .find(|i| i.name == DEFAULT_INTERFACE)
            .map(cri),
        interfaces: interfaces
            .iter()
            .filter(|i| i.name != DEFAULT_INTERFACE)
            .map(cri)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface(name: &str, tx_bytes: u64) -> InterfaceUsage {
        InterfaceUsage {
            name: name.into(),
            rx_bytes: 1,
            rx_errors: 2,
            tx_bytes,
            tx_errors: 3,
        }
    }

    #[test]
    fn eth0_is_the_default_interface_and_the_rest_are_listed() {
        let n = network_usage(7, &[interface("net1", 5), interface("eth0", 9)]);
        assert_eq!(n.timestamp, 7);
        let eth0 = n.default_interface.unwrap();
        assert_eq!(
            (eth0.name.as_str(), eth0.tx_bytes.unwrap().value),
            ("eth0", 9)
        );
        assert_eq!(eth0.rx_errors.unwrap().value, 2);
        let names: Vec<&str> = n.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["net1"]);

        let none = network_usage(7, &[]);
        assert!(none.default_interface.is_none() && none.interfaces.is_empty());
    }
}
