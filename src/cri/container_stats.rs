//! ContainerStats, and the CRI shape of a container's usage the other stats RPCs share.

use std::path::Path;

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
        stats: Some(to_cri_stats(d.containers().dir(), &c, &usage)),
    })
}

/// A container's usage as CRI shows it: figures not known (no cgroup on this host, the
/// container not running) are left out rather than reported as zero. `layers_fs` is the
/// directory holding every container's writable layer (the layer's `fs_id`).
pub(super) fn to_cri_stats(layers_fs: &Path, c: &Container, u: &ContainerUsage) -> ContainerStats {
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
                mountpoint: layers_fs.display().to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::ContainerRecord;
    use crate::image::FsUsage;
    use crate::stats::CgroupUsage;

    fn container() -> Container {
        let record = ContainerRecord {
            id: "c".repeat(64),
            name: "n_p_ns_uid_0".into(),
            sandbox_id: "s".repeat(64),
            config: k8s_cri::v1::ContainerConfig {
                labels: [("role".to_string(), "web".to_string())].into(),
                ..Default::default()
            },
            image_name: "busybox".into(),
            image_id: "sha256:00".into(),
            image_ref: "sha256:00".into(),
            created_at: 1,
            log_path: None,
            backend: "libcontainer".into(),
            backend_reason: "default".into(),
            stop_signal: 15,
            run_dir: "/nonexistent".into(),
        };
        Container::new(record, None, Default::default())
    }

    #[test]
    fn every_known_figure_is_shown_with_the_reading_time() {
        let u = ContainerUsage {
            timestamp: 42,
            cgroup: Some(CgroupUsage {
                cpu_ns: Some(5_000),
                memory: Some(MemoryUsage {
                    usage: 100,
                    working_set: 60,
                    rss: 30,
                    limit: Some(1000),
                    page_faults: 9,
                    major_page_faults: 2,
                }),
                processes: Some(3),
            }),
            cpu_nano_cores: Some(250),
            writable_layer: Some(FsUsage {
                bytes: 8192,
                inodes: 2,
            }),
        };
        let s = to_cri_stats(Path::new("/var/lib/proxrt/containers"), &container(), &u);
        let attrs = s.attributes.unwrap();
        assert_eq!(attrs.id, "c".repeat(64));
        assert_eq!(attrs.labels["role"], "web");
        let cpu = s.cpu.unwrap();
        assert_eq!(cpu.timestamp, 42);
        assert_eq!(cpu.usage_core_nano_seconds.unwrap().value, 5_000);
        assert_eq!(cpu.usage_nano_cores.unwrap().value, 250);
        let m = s.memory.unwrap();
        assert_eq!(m.timestamp, 42);
        assert_eq!(m.working_set_bytes.unwrap().value, 60);
        assert_eq!(m.available_bytes.unwrap().value, 940);
        assert_eq!(m.usage_bytes.unwrap().value, 100);
        assert_eq!(m.rss_bytes.unwrap().value, 30);
        assert_eq!(m.page_faults.unwrap().value, 9);
        assert_eq!(m.major_page_faults.unwrap().value, 2);
        let fs = s.writable_layer.unwrap();
        assert_eq!(fs.fs_id.unwrap().mountpoint, "/var/lib/proxrt/containers");
        assert_eq!(
            (fs.used_bytes.unwrap().value, fs.inodes_used.unwrap().value),
            (8192, 2)
        );
    }

    /// No cgroup (not running, a backend without host cgroups), no rate yet, no limit:
    /// those figures are absent, not zero.
    #[test]
    fn unknown_figures_are_left_out() {
        let bare = ContainerUsage {
            timestamp: 42,
            ..Default::default()
        };
        let s = to_cri_stats(Path::new("/x"), &container(), &bare);
        assert!(s.attributes.is_some());
        assert!(s.cpu.is_none() && s.memory.is_none() && s.writable_layer.is_none());

        let first = ContainerUsage {
            timestamp: 42,
            cgroup: Some(CgroupUsage {
                cpu_ns: Some(1),
                memory: Some(MemoryUsage::default()),
                processes: None,
            }),
            ..Default::default()
        };
        let s = to_cri_stats(Path::new("/x"), &container(), &first);
        assert!(s.cpu.unwrap().usage_nano_cores.is_none());
        assert!(s.memory.unwrap().available_bytes.is_none());
    }
}
