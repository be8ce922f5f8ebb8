//! ContainerStats, and the CRI shape of a container's usage the other stats RPCs share.

use k8s_cri::v1::{
    ContainerAttributes, ContainerStats, ContainerStatsRequest, ContainerStatsResponse, CpuUsage,
    FilesystemIdentifier, FilesystemUsage, MemoryUsage as CriMemoryUsage, UInt64Value,
};
use tonic::Status;

use super::errors::to_status;
use crate::container::Container;
use crate::daemon::Daemon;
use crate::stats::{ContainerUsage, MemoryUsage};

#[tracing::instrument(level = "debug", skip_all, fields(container = %req.container_id))]
pub fn container_stats(
    d: &Daemon,
    req: ContainerStatsRequest,
) -> Result<ContainerStatsResponse, Status> {
    let c = d.containers().get(&req.container_id).map_err(to_status)?;
    let usage = d
        .stats()
        .container(d.containers(), d.backends(), &c)
        .map_err(to_status)?;
    Ok(ContainerStatsResponse {
        stats: Some(to_cri_stats(d, &c, &usage)),
    })
}

/// A container's usage as CRI shows it: figures not known (no cgroup on this host, the
/// container not running) are left out rather than reported as zero.
pub(super) fn to_cri_stats(d: &Daemon, c: &Container, u: &ContainerUsage) -> ContainerStats {
    let r = &c.record;
    let cgroup = u.cgroup.as_ref();
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: r.id.clone(),
            metadata: r.config.metadata.clone(),
            labels: r.config.labels.clone(),
            annotations: r.config.annotations.clone(),
        }),
        cpu: cgroup
            .and_then(|g| g.cpu_ns)
            .map(|ns| cpu_usage(u.timestamp, ns, u.cpu_nano_cores)),
        memory: cgroup
            .and_then(|g| g.memory)
            .map(|m| memory_usage(u.timestamp, &m)),
        writable_layer: u.writable_layer.map(|fs| FilesystemUsage {
            timestamp: u.timestamp,
            // The filesystem holding every container's writable layer.
            fs_id: Some(FilesystemIdentifier {
                mountpoint: d.containers().dir().display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: fs.bytes }),
            inodes_used: Some(UInt64Value { value: fs.inodes }),
        }),
        swap: None,
    }
}

pub(super) fn cpu_usage(timestamp: i64, cumulative_ns: u64, nano_cores: Option<u64>) -> CpuUsage {
    CpuUsage {
        timestamp,
        usage_core_nano_seconds: Some(UInt64Value {
            value: cumulative_ns,
        }),
        usage_nano_cores: nano_cores.map(|value| UInt64Value { value }),
    }
}

pub(super) fn memory_usage(timestamp: i64, m: &MemoryUsage) -> CriMemoryUsage {
    let value = |value| Some(UInt64Value { value });
    CriMemoryUsage {
        timestamp,
        working_set_bytes: value(m.working_set),
        available_bytes: m.available().map(|value| UInt64Value { value }),
        usage_bytes: value(m.usage),
        rss_bytes: value(m.rss),
        page_faults: value(m.page_faults),
        major_page_faults: value(m.major_page_faults),
    }
}
