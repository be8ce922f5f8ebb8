//! A container's and a pod's usage, assembled from the readers, with the CPU rate kept
//! between calls. Takes the stores and backends it reads from, never the daemon.

use std::path::Path;
use std::sync::Arc;

use super::{net, CgroupUsage, Cgroups, CpuSamples, InterfaceUsage, StatsError};
use crate::backend::Backends;
use crate::container::{Container, ContainerStore};
use crate::image::FsUsage;
use crate::sandbox::{SandboxRecord, SandboxState};

/// What one container has used, as of `timestamp`.
#[derive(Debug, Clone, Default)]
pub struct ContainerUsage {
    /// Unix nanoseconds, taken before the figures were read.
    pub timestamp: i64,
    /// None when the container has no cgroup on this host (not started, exited and
    /// removed, a backend without host cgroups).
    pub cgroup: Option<CgroupUsage>,
    /// CPU nanoseconds per second since the previous reading of this container.
    pub cpu_nano_cores: Option<u64>,
    /// Bytes and inodes of the container's writable layer (its overlay upper dir).
    pub writable_layer: Option<FsUsage>,
}

/// What one pod has used: its own cgroup (kubelet's pod cgroup, the sandbox's
/// `cgroup_parent`) or else the sum of its containers', and its network namespace.
#[derive(Clone, Default)]
pub struct PodUsage {
    pub timestamp: i64,
    pub cgroup: Option<CgroupUsage>,
    pub cpu_nano_cores: Option<u64>,
    /// Whether `cgroup` is the pod's own cgroup (true) or its containers' sum (false).
    pub from_pod_cgroup: bool,
    /// Interfaces of the pod's network namespace but `lo`; None for a host-network pod
    /// (the node's interfaces are the node's stats, not the pod's) or a stopped one.
    pub network: Option<Vec<InterfaceUsage>>,
    pub containers: Vec<(Arc<Container>, ContainerUsage)>,
}

/// The cgroup layout of this host and the previous CPU readings.
pub struct StatsReader {
    cgroups: Cgroups,
    cpu: CpuSamples,
}

impl StatsReader {
    /// The reader for this host's cgroup mounts.
    pub fn probe() -> StatsReader {
        StatsReader::new(Cgroups::probe())
    }

    pub fn new(cgroups: Cgroups) -> StatsReader {
        StatsReader {
            cgroups,
            cpu: CpuSamples::default(),
        }
    }

    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }

    /// The usage of container `c`.
    pub fn container(
        &self,
        store: &ContainerStore,
        backends: &Backends,
        c: &Container,
    ) -> Result<ContainerUsage, StatsError> {
        let timestamp = crate::store::now_nanos();
        // An exited container has no cgroup figures: its monitor removes the cgroup just
        // after answering the exit, and what is left of it until then is not reported.
        let exited = c.snapshot().phase() == crate::container::Phase::Exited;
        let cgroup = match (host_cgroups(backends, &c.record.backend) && !exited)
            .then(|| store.cgroup(c))
            .flatten()
        {
            Some(path) => self.cgroups.read(&path)?,
            None => None,
        };
        let cpu_nano_cores = cgroup
            .as_ref()
            .and_then(|u| u.cpu_ns)
            .and_then(|ns| self.cpu.nano_cores(&c.id, timestamp, ns));
        let upper = store.paths(&c.record).upper();
        Ok(ContainerUsage {
            timestamp,
            cgroup,
            cpu_nano_cores,
            writable_layer: writable_layer(&upper)?,
        })
    }

    /// The usage of `pod` and each of `containers` (the pod's). A container whose figures
    /// cannot be read is logged and shown without them rather than failing the pod.
    pub fn pod(
        &self,
        store: &ContainerStore,
        backends: &Backends,
        pod: &SandboxRecord,
        containers: Vec<Arc<Container>>,
    ) -> Result<PodUsage, StatsError> {
        let containers: Vec<(Arc<Container>, ContainerUsage)> = containers
            .into_iter()
            .map(|c| {
                let usage = self.container(store, backends, &c).unwrap_or_else(|e| {
                    tracing::warn!(container = %c.id, error = %e, "container stats");
                    ContainerUsage {
                        timestamp: crate::store::now_nanos(),
                        ..Default::default()
                    }
                });
                (c, usage)
            })
            .collect();
        let timestamp = crate::store::now_nanos();
        let on_host = host_cgroups(backends, &pod.backend);
        let own = match pod.cgroup_parent() {
            "" => None,
            _ if !on_host => None,
            parent => self.cgroups.read(parent)?,
        };
        let from_pod_cgroup = own.is_some();
        let cgroup = own.or_else(|| {
            let parts: Vec<&CgroupUsage> = containers
                .iter()
                .filter_map(|(_, u)| u.cgroup.as_ref())
                .collect();
            (!parts.is_empty()).then(|| CgroupUsage::sum(parts))
        });
        let cpu_nano_cores = cgroup
            .as_ref()
            .and_then(|u| u.cpu_ns)
            .and_then(|ns| self.cpu.nano_cores(&pod_key(&pod.id), timestamp, ns));
        let network = match (pod.state, pod.namespaces.net.is_some(), pod.holder_pid) {
            (SandboxState::Ready, true, Some(pid)) if on_host => net::read(pid)?,
            _ => None,
        };
        Ok(PodUsage {
            timestamp,
            cgroup,
            cpu_nano_cores,
            from_pod_cgroup,
            network,
            containers,
        })
    }

    /// Drops the CPU readings of containers and pods that no longer exist.
    pub fn forget_gone(
        &self,
        container_exists: impl Fn(&str) -> bool,
        pod_exists: impl Fn(&str) -> bool,
    ) {
        self.cpu.retain(|key| match key.strip_prefix("pod/") {
            Some(pod) => pod_exists(pod),
            None => container_exists(key),
        });
    }
}

fn pod_key(id: &str) -> String {
    format!("pod/{id}")
}

/// Whether `backend`'s containers live in this host's cgroups; an unregistered backend's
/// (a record from a build with more backends) are not read.
fn host_cgroups(backends: &Backends, backend: &str) -> bool {
    backends.get(backend).is_ok_and(|b| b.host_cgroups())
}

fn writable_layer(upper: &Path) -> Result<Option<FsUsage>, StatsError> {
    if !upper.is_dir() {
        return Ok(None);
    }
    crate::image::disk_usage(upper)
        .map(Some)
        .map_err(|source| StatsError::Read {
            path: upper.to_owned(),
            source,
        })
}
