use std::sync::Arc;

use k8s_cri::v1::{
    Container as CriContainer, ContainerFilter, ImageSpec, ListContainersRequest,
    ListContainersResponse,
};
use prost::Message;
use tonic::Status;

use super::container_status::cri_state;
use crate::container::{Container, ContainerRecord};
use crate::daemon::Daemon;

/// The answer as messages (the generated service's path; the daemon serves the encoded
/// one below, `list_containers_wire.rs`, and tests hold the two equal).
#[tracing::instrument(level = "debug", skip_all)]
pub fn list_containers(
    d: &Daemon,
    req: ListContainersRequest,
) -> Result<ListContainersResponse, Status> {
    let f = req.filter.unwrap_or_default();
    Ok(ListContainersResponse {
        containers: answer(candidates(d, &f), &f),
    })
}

/// The answer as the protobuf bytes of a `ListContainersResponse`.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) fn list_containers_encoded(d: &Daemon, req: ListContainersRequest) -> Vec<u8> {
    let f = req.filter.unwrap_or_default();
    encode_answer(candidates(d, &f), &f)
}

/// The containers the filter's pod part selects (all without one).
fn candidates(d: &Daemon, f: &ContainerFilter) -> Vec<Arc<Container>> {
    if f.pod_sandbox_id.is_empty() {
        d.containers().all()
    } else {
        match d.sandboxes().get(&f.pod_sandbox_id) {
            Ok(s) => d.containers().in_sandbox(&s.id),
            Err(_) => Vec::new(),
        }
    }
}

/// Whether `c` passes the filter's id, state and label parts, and with which state: one
/// status reading per container, so the state filtered on is the state answered.
fn selected(c: &Container, f: &ContainerFilter) -> Option<i32> {
    if !f.id.is_empty() && !c.id.starts_with(&f.id) {
        return None;
    }
    let state = cri_state(c.snapshot().phase()) as i32;
    if f.state.as_ref().is_some_and(|s| s.state != state) {
        return None;
    }
    let labels = &c.record.config.labels;
    f.label_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        .then_some(state)
}

/// The answer for `candidates` under the filter's id, state and label parts (the pod part
/// chose the candidates). Pure over the in-memory store; the criterion bench runs it on
/// 1000.
pub(crate) fn answer(candidates: Vec<Arc<Container>>, f: &ContainerFilter) -> Vec<CriContainer> {
    candidates
        .into_iter()
        .filter_map(|c| selected(&c, f).map(|state| to_cri(&c.record, state)))
        .collect()
}

fn to_cri(r: &ContainerRecord, state: i32) -> CriContainer {
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
}

/// `state`'s number in the CRI `Container` message: the entry is cut there.
const STATE_FIELD: u32 = 6;

/// A container's entry as protobuf without its state, in two parts: the fields numbered
/// before `state` and those after it (a message's encoding is the concatenation of its
/// fields', in number order as prost writes them). Encoded once per container: the
/// record never changes.
pub(crate) fn entry_parts(r: &ContainerRecord) -> (Vec<u8>, Vec<u8>) {
    let full = to_cri(r, 0);
    let before = CriContainer {
        id: full.id,
        pod_sandbox_id: full.pod_sandbox_id,
        metadata: full.metadata,
        image: full.image,
        image_ref: full.image_ref,
        ..Default::default()
    };
    let after = CriContainer {
        created_at: full.created_at,
        labels: full.labels,
        annotations: full.annotations,
        image_id: full.image_id,
        ..Default::default()
    };
    (before.encode_to_vec(), after.encode_to_vec())
}

/// [`answer`], encoded as a `ListContainersResponse`: for each selected container its
/// cached entry with the state it has now put in between. With 1000 containers building
/// the messages (copying every string of every record, then freeing them) cost the
/// daemon ~4 ms per call; this copies one buffer per container.
pub(crate) fn encode_answer(candidates: Vec<Arc<Container>>, f: &ContainerFilter) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    let mut out = Vec::new();
    for c in candidates {
        let Some(state) = selected(&c, f) else {
            continue;
        };
        let (before, after) = c.list_entry.get_or_init(|| entry_parts(&c.record));
        // proto3: a zero (CONTAINER_CREATED) is not written, as prost does.
        let state = (state != 0).then_some(state as u64);
        let state_len = state.map_or(0, |s| 1 + encoded_len_varint(s));
        let len = before.len() + state_len + after.len();
        out.reserve(1 + encoded_len_varint(len as u64) + len);
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(len as u64, &mut out);
        out.extend_from_slice(before);
        if let Some(s) = state {
            encode_key(STATE_FIELD, WireType::Varint, &mut out);
            encode_varint(s, &mut out);
        }
        out.extend_from_slice(after);
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{ContainerStateValue, ListContainersResponse};
    use proptest::prelude::*;

    use super::*;
    use crate::events::Events;
    use crate::monitor::ContainerStatusFile;
    use crate::spec::proptests::{config, container_config, hostile};

    /// A container as the store holds it, with any config and strings and a status in any
    /// phase (none, created, running, exited).
    fn container() -> impl Strategy<Value = (ContainerRecord, Option<ContainerStatusFile>)> {
        (
            container_config(),
            (hostile(), hostile(), hostile(), hostile()),
            any::<i64>(),
            0..4u8,
        )
            .prop_map(
                |(config, (id, sandbox, image, image_id), created_at, phase)| {
                    let mut record = crate::bench_api::container_record(0);
                    record.config = config;
                    (record.id, record.sandbox_id) = (id, sandbox);
                    (record.image_name, record.image_id) = (image.clone(), image_id);
                    record.image_ref = image;
                    record.created_at = created_at;
                    let mut status = ContainerStatusFile::created(1, 2, 3);
                    if phase >= 2 {
                        status.started_at = Some(4);
                    }
                    if phase == 3 {
                        (status.finished_at, status.exit_code) = (Some(5), Some(1));
                    }
                    (record, (phase > 0).then_some(status))
                },
            )
    }

    /// Filters as kubelet sends them (state, labels) and as operators do (id prefixes),
    /// built from the containers so that they select some.
    fn filter(containers: &[Arc<Container>], pick: usize, kind: u8) -> ContainerFilter {
        let Some(c) = containers.get(pick % containers.len().max(1)) else {
            return ContainerFilter::default();
        };
        let mut f = ContainerFilter::default();
        match kind {
            0 => {}
            1 => f.id = c.id.chars().take(3).collect(),
            2 => f.state = Some(ContainerStateValue { state: 1 }),
            _ => {
                f.label_selector = c.record.config.labels.clone();
                f.state = Some(ContainerStateValue {
                    state: cri_state(c.snapshot().phase()) as i32,
                });
            }
        }
        f
    }

    proptest! {
        #![proptest_config(config())]

        /// What the daemon sends (the cached entries with their states) is, decoded, the
        /// answer built as messages: same containers, same order, every field.
        #[test]
        fn the_encoded_answer_is_the_answer(
            parts in prop::collection::vec(container(), 0..6),
            pick in any::<usize>(),
            kind in 0..4u8,
            twice in any::<bool>(),
        ) {
            let containers: Vec<Arc<Container>> = parts
                .into_iter()
                .map(|(r, s)| Arc::new(Container::new(r, s, Events::default())))
                .collect();
            let f = filter(&containers, pick, kind);
            if twice {
                // A cached entry serves later answers alike.
                encode_answer(containers.clone(), &f);
            }
            let bytes = encode_answer(containers.clone(), &f);
            let decoded = ListContainersResponse::decode(bytes.as_slice()).unwrap();
            let built = ListContainersResponse { containers: answer(containers, &f) };
            prop_assert_eq!(decoded, built);
        }
    }

    /// A state change after the entry was cached shows in the next answer.
    #[test]
    fn the_state_is_read_at_each_answer() {
        let record = crate::bench_api::container_record(1);
        let c = Arc::new(Container::new(
            record,
            Some(ContainerStatusFile::created(1, 2, 3)),
            Events::default(),
        ));
        let states = |c: &Arc<Container>| {
            let bytes = encode_answer(vec![c.clone()], &ContainerFilter::default());
            ListContainersResponse::decode(bytes.as_slice())
                .unwrap()
                .containers
                .iter()
                .map(|c| c.state)
                .collect::<Vec<_>>()
        };
        assert_eq!(states(&c), [0]);
        let mut started = ContainerStatusFile::created(1, 2, 3);
        started.started_at = Some(4);
        c.advance_status(started);
        assert_eq!(states(&c), [1]);
    }
}
