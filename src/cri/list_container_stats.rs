use k8s_cri::v1::{ListContainerStatsRequest, ListContainerStatsResponse};
use tonic::Status;

use super::container_stats::to_cri_stats;
use crate::daemon::Daemon;

/// Every container the filter selects (id prefix, pod, labels), running or not: one that
/// is not running has no CPU or memory figures. A container whose figures cannot be read
/// is logged and listed without them, so one broken cgroup does not hide every other.
#[tracing::instrument(level = "debug", skip_all)]
pub fn list_container_stats(
    d: &Daemon,
    req: ListContainerStatsRequest,
) -> Result<ListContainerStatsResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let candidates = if f.pod_sandbox_id.is_empty() {
        d.containers().all()
    } else {
        match d.sandboxes().get(&f.pod_sandbox_id) {
            Ok(s) => d.containers().in_sandbox(&s.id),
            Err(_) => Vec::new(),
        }
    };
    let stats = candidates
        .into_iter()
        .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
        .filter(|c| {
            f.label_selector
                .iter()
                .all(|(k, v)| c.record.config.labels.get(k) == Some(v))
        })
        .map(|c| {
            let usage = d
                .stats()
                .container(d.containers(), d.backends(), &c)
                .unwrap_or_else(|e| {
                    tracing::warn!(container = %c.id, error = %e, "container stats");
                    crate::stats::ContainerUsage {
                        timestamp: crate::store::now_nanos(),
                        ..Default::default()
                    }
                });
            to_cri_stats(d.containers().dir(), &c, &usage)
        })
        .collect();
    d.stats().forget_gone(
        |id| d.containers().get(id).is_ok(),
        |id| d.sandboxes().get(id).is_ok(),
    );
    Ok(ListContainerStatsResponse { stats })
}
