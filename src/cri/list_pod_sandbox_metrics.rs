//! ListPodSandboxMetrics: every pod's and container's figures as the metrics
//! ListMetricDescriptors describes, read the way ListPodSandboxStats reads them. Values
//! are read on demand, so each metric's timestamp is 0 (kubelet's "not cached").

use k8s_cri::v1::{
    ContainerMetrics, ListPodSandboxMetricsRequest, ListPodSandboxMetricsResponse, Metric,
    MetricType, PodSandboxMetrics, UInt64Value,
};
use tonic::Status;

use super::list_metric_descriptors::*;
use super::pod_sandbox_stats::pod_usage;
use crate::container::ContainerRecord;
use crate::daemon::Daemon;
use crate::sandbox::SandboxRecord;
use crate::stats::{CgroupUsage, PodUsage};

#[tracing::instrument(level = "debug", skip_all)]
pub fn list_pod_sandbox_metrics(
    d: &Daemon,
    _req: ListPodSandboxMetricsRequest,
) -> Result<ListPodSandboxMetricsResponse, Status> {
    let pod_metrics = d
        .sandboxes()
        .all()
        .into_iter()
        .map(|s| s.record())
        .filter_map(|r| match pod_usage(d, &r) {
            Ok(u) => Some(to_cri_metrics(&r, &u)),
            Err(e) => {
                tracing::warn!(sandbox = %r.id, error = %e, "pod metrics");
                None
            }
        })
        .collect();
    Ok(ListPodSandboxMetricsResponse { pod_metrics })
}

/// The label values of a row, in `LABELS` order.
struct Row {
    values: Vec<String>,
}

impl Row {
    fn pod(p: &SandboxRecord) -> Row {
        Row::new(p, "", &p.id, "", "")
    }

    fn container(p: &SandboxRecord, c: &ContainerRecord) -> Row {
        let name = c.config.metadata.as_ref().map(|m| m.name.as_str());
        Row::new(p, name.unwrap_or_default(), &c.id, &c.image_name, &c.name)
    }

    fn new(p: &SandboxRecord, container: &str, id: &str, image: &str, name: &str) -> Row {
        let meta = p.config.metadata.clone().unwrap_or_default();
        Row {
            values: vec![
                container.into(),
                id.into(),
                image.into(),
                name.into(),
                meta.namespace,
                meta.name,
            ],
        }
    }

    fn metric(&self, name: &str, kind: MetricType, value: u64, extra: Option<&str>) -> Metric {
        Metric {
            name: name.into(),
            timestamp: 0,
            metric_type: kind as i32,
            label_values: self
                .values
                .iter()
                .cloned()
                .chain(extra.map(String::from))
                .collect(),
            value: Some(UInt64Value { value }),
        }
    }

    /// The cgroup figures known; what was not read is left out, not reported as zero.
    fn cgroup(&self, g: &CgroupUsage) -> Vec<Metric> {
        use MetricType::{Counter, Gauge};
        let mut out = Vec::new();
        if let Some(ns) = g.cpu_ns {
            out.push(self.metric(CPU_SECONDS, Counter, ns / 1_000_000_000, None));
        }
        if let Some(m) = g.memory {
            out.push(self.metric(MEMORY_USAGE, Gauge, m.usage, None));
            out.push(self.metric(MEMORY_WORKING_SET, Gauge, m.working_set, None));
            out.push(self.metric(MEMORY_RSS, Gauge, m.rss, None));
            if let Some(limit) = m.limit {
                out.push(self.metric(MEMORY_LIMIT, Gauge, limit, None));
            }
        }
        if let Some(n) = g.processes {
            out.push(self.metric(PROCESSES, Gauge, n, None));
        }
        out
    }
}

pub(super) fn to_cri_metrics(p: &SandboxRecord, u: &PodUsage) -> PodSandboxMetrics {
    let row = Row::pod(p);
    let mut metrics = u.cgroup.as_ref().map(|g| row.cgroup(g)).unwrap_or_default();
    for i in u.network.iter().flatten() {
        let name = Some(i.name.as_str());
        metrics.extend([
            row.metric(RX_BYTES, MetricType::Counter, i.rx_bytes, name),
            row.metric(RX_ERRORS, MetricType::Counter, i.rx_errors, name),
            row.metric(TX_BYTES, MetricType::Counter, i.tx_bytes, name),
            row.metric(TX_ERRORS, MetricType::Counter, i.tx_errors, name),
        ]);
    }
    PodSandboxMetrics {
        pod_sandbox_id: p.id.clone(),
        metrics,
        container_metrics: u
            .containers
            .iter()
            .map(|(c, cu)| ContainerMetrics {
                container_id: c.id.clone(),
                metrics: cu
                    .cgroup
                    .as_ref()
                    .map(|g| Row::container(p, &c.record).cgroup(g))
                    .unwrap_or_default(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::stats::{InterfaceUsage, MemoryUsage};

    /// Every metric has a descriptor, and as many label values as it has label keys
    /// (kubelet drops a metric whose count differs).
    #[test]
    fn every_metric_matches_its_descriptor() {
        let descriptors: HashMap<String, usize> = descriptors()
            .into_iter()
            .map(|d| (d.name, d.label_keys.len()))
            .collect();
        let pod = crate::sandbox::SandboxRecord::for_tests(
            &"p".repeat(64),
            crate::sandbox::SandboxState::Ready,
        );
        let usage = PodUsage {
            timestamp: 1,
            cgroup: Some(CgroupUsage {
                cpu_ns: Some(2_500_000_000),
                memory: Some(MemoryUsage {
                    usage: 10,
                    working_set: 8,
                    rss: 6,
                    limit: Some(64 << 20),
                    ..Default::default()
                }),
                processes: Some(3),
            }),
            network: Some(vec![InterfaceUsage {
                name: "eth0".into(),
                rx_bytes: 100,
                rx_errors: 0,
                tx_bytes: 50,
                tx_errors: 1,
            }]),
            ..Default::default()
        };
        let m = to_cri_metrics(&pod, &usage);
        assert_eq!(m.metrics.len(), 10);
        for metric in &m.metrics {
            assert_eq!(
                Some(&metric.label_values.len()),
                descriptors.get(&metric.name),
                "{metric:?}"
            );
            assert_eq!(metric.label_values[1], pod.id);
            assert_eq!(metric.label_values[4..6], ["default", "web"]);
        }
        let value = |name: &str| {
            m.metrics
                .iter()
                .find(|x| x.name == name)
                .and_then(|x| x.value)
                .unwrap()
                .value
        };
        assert_eq!(value(CPU_SECONDS), 2, "whole seconds");
        assert_eq!(value(MEMORY_WORKING_SET), 8);
        assert_eq!(value(TX_ERRORS), 1);
    }
}
