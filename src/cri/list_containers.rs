use std::sync::Arc;

use k8s_cri::v1::{
    Container as CriContainer, ContainerFilter, ImageSpec, ListContainersRequest,
    ListContainersResponse,
};
use tonic::Status;

use super::container_status::cri_state;
use crate::container::Container;
use crate::daemon::Daemon;

#[tracing::instrument(level = "debug", skip_all)]
pub fn list_containers(
    d: &Daemon,
    req: ListContainersRequest,
) -> Result<ListContainersResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let candidates = if f.pod_sandbox_id.is_empty() {
        d.containers().all()
    } else {
        match d.sandboxes().get(&f.pod_sandbox_id) {
            Ok(s) => d.containers().in_sandbox(&s.id),
            Err(_) => Vec::new(),
        }
    };
    Ok(ListContainersResponse {
        containers: answer(candidates, &f),
    })
}

/// The answer for `candidates` under the filter's id, state and label parts (the pod part
/// chose the candidates): one status snapshot per container, so the state filtered on is
/// the state answered. Pure over the in-memory store; the criterion bench runs it on 1000.
pub(crate) fn answer(candidates: Vec<Arc<Container>>, f: &ContainerFilter) -> Vec<CriContainer> {
    candidates
        .into_iter()
        .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
        .map(|c| {
            let state = cri_state(c.snapshot().phase()) as i32;
            (c, state)
        })
        .filter(|(_, state)| f.state.as_ref().is_none_or(|s| s.state == *state))
        .filter(|(c, _)| {
            f.label_selector
                .iter()
                .all(|(k, v)| c.record.config.labels.get(k) == Some(v))
        })
        .map(|(c, state)| {
            let r = &c.record;
            CriContainer {
                id: r.id.clone(),
                pod_sandbox_id: r.sandbox_id.clone(),
                metadata: r.config.metadata.clone(),
                image: Some(ImageSpec {
                    image: r.image_name.clone(),
                    user_specified_image: r.image_name.clone(),
                    ..Default::default()
                }),
                image_ref: r.image_ref.clone(),
                state,
                created_at: r.created_at,
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
                image_id: r.image_id.clone(),
            }
        })
        .collect()
}
