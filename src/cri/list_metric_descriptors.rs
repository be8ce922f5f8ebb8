//! ListMetricDescriptors: the cadvisor-named metrics ListPodSandboxMetrics reports, from
//! what the stats RPCs already read (src/stats). kubelet reads the descriptors once and
//! serves the values on its `/metrics/cadvisor` endpoint when
//! `PodAndContainerStatsFromCRI` is on.

use k8s_cri::v1::{ListMetricDescriptorsRequest, ListMetricDescriptorsResponse, MetricDescriptor};
use tonic::Status;

/// Labels of every metric: cadvisor's resource labels. For a pod-level row `container`,
/// `image` and `name` are empty and `id` is the sandbox id.
pub(super) const LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];
/// Network metrics (pod level only) add the interface.
pub(super) const INTERFACE_LABEL: &str = "interface";

pub(super) const CPU_SECONDS: &str = "container_cpu_usage_seconds_total";
pub(super) const MEMORY_USAGE: &str = "container_memory_usage_bytes";
pub(super) const MEMORY_WORKING_SET: &str = "container_memory_working_set_bytes";
pub(super) const MEMORY_RSS: &str = "container_memory_rss";
pub(super) const MEMORY_LIMIT: &str = "container_spec_memory_limit_bytes";
pub(super) const PROCESSES: &str = "container_processes";
pub(super) const RX_BYTES: &str = "container_network_receive_bytes_total";
pub(super) const RX_ERRORS: &str = "container_network_receive_errors_total";
pub(super) const TX_BYTES: &str = "container_network_transmit_bytes_total";
pub(super) const TX_ERRORS: &str = "container_network_transmit_errors_total";

/// (name, help, whether it is per interface).
const DESCRIPTORS: [(&str, &str, bool); 10] = [
    (
        CPU_SECONDS,
        "Cumulative CPU time consumed, in whole seconds (the stats RPCs have nanoseconds)",
        false,
    ),
    (
        MEMORY_USAGE,
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        false,
    ),
    (
        MEMORY_WORKING_SET,
        "Current working set in bytes (usage minus inactive file cache)",
        false,
    ),
    (MEMORY_RSS, "Size of RSS in bytes (anonymous memory)", false),
    (
        MEMORY_LIMIT,
        "Memory limit in bytes (absent when unlimited)",
        false,
    ),
    (
        PROCESSES,
        "Number of processes running inside the cgroup",
        false,
    ),
    (RX_BYTES, "Cumulative count of bytes received", true),
    (
        RX_ERRORS,
        "Cumulative count of errors encountered while receiving",
        true,
    ),
    (TX_BYTES, "Cumulative count of bytes transmitted", true),
    (
        TX_ERRORS,
        "Cumulative count of errors encountered while transmitting",
        true,
    ),
];

pub fn list_metric_descriptors(
    _req: ListMetricDescriptorsRequest,
) -> Result<ListMetricDescriptorsResponse, Status> {
    Ok(ListMetricDescriptorsResponse {
        descriptors: descriptors(),
    })
}

pub(super) fn descriptors() -> Vec<MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|(name, help, per_interface)| MetricDescriptor {
            name: (*name).into(),
            help: (*help).into(),
            label_keys: LABELS
                .iter()
                .copied()
                .chain(per_interface.then_some(INTERFACE_LABEL))
                .map(String::from)
                .collect(),
        })
        .collect()
}
