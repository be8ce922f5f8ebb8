use k8s_cri::v1::{ListPodSandboxStatsRequest, ListPodSandboxStatsResponse};
use tonic::Status;

use super::pod_sandbox_stats::{pod_usage, to_cri_stats_of_pod};
use crate::daemon::Daemon;

/// Every pod the filter selects (id prefix, labels), ready or not. A pod whose figures
/// cannot be read is logged and listed with its attributes only.
#[tracing::instrument(level = "debug", skip_all)]
pub fn list_pod_sandbox_stats(
    d: &Daemon,
    req: ListPodSandboxStatsRequest,
) -> Result<ListPodSandboxStatsResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let stats = d
        .sandboxes()
        .all()
        .into_iter()
        .map(|s| s.record())
        .filter(|r| f.id.is_empty() || r.id.starts_with(&f.id))
        .filter(|r| {
            f.label_selector
                .iter()
                .all(|(k, v)| r.config.labels.get(k) == Some(v))
        })
        .map(|r| {
            let usage = pod_usage(d, &r).unwrap_or_else(|e| {
                tracing::warn!(sandbox = %r.id, error = %e, "pod stats");
                crate::stats::PodUsage {
                    timestamp: crate::store::now_nanos(),
                    ..Default::default()
                }
            });
            to_cri_stats_of_pod(d, &r, &usage)
        })
        .collect();
    d.stats().forget_gone(
        |id| d.containers().get(id).is_ok(),
        |id| d.sandboxes().get(id).is_ok(),
    );
    Ok(ListPodSandboxStatsResponse { stats })
}
