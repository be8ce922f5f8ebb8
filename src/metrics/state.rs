//! Gauges of the daemon's state, counted from its stores at each scrape: containers and
//! pods by state and backend. Counting at scrape time (rather than keeping gauges up to
//! date on every change) means the numbers are the ones List calls would answer.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::select::KNOWN_BACKENDS;

/// What the state gauges are counted from (the daemon's stores; a fixed list in tests).
pub trait StateSource: Send + Sync + 'static {
    /// One `(state, backend)` per container; state as `proxrt ps` prints it lowercased:
    /// `created`, `running`, `exited`, `unknown`.
    fn containers(&self) -> Vec<(&'static str, String)>;
    /// One `(state, backend)` per pod sandbox: `ready` or `notready`.
    fn pods(&self) -> Vec<(&'static str, String)>;
}

const CONTAINER_STATES: &[&str] = &["created", "running", "exited", "unknown"];
const POD_STATES: &[&str] = &["ready", "notready"];

pub(super) struct StateCollector(pub Box<dyn StateSource>);

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_counts(
            &mut encoder,
            "containers",
            "Containers by state and backend",
            CONTAINER_STATES,
            self.0.containers(),
        )?;
        encode_counts(
            &mut encoder,
            "pods",
            "Pod sandboxes by state and backend",
            POD_STATES,
            self.0.pods(),
        )
    }
}

/// One gauge family: every known state × known backend, zeros included (a series that
/// vanishes at zero would read as "no data" on a dashboard), plus any pair the store
/// holds beyond those (a record of a backend this build no longer knows).
fn encode_counts(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    states: &[&'static str],
    items: Vec<(&'static str, String)>,
) -> Result<(), std::fmt::Error> {
    let mut counts: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
    for known in KNOWN_BACKENDS {
        for state in states {
            counts.insert((known.name.to_owned(), state), 0);
        }
    }
    for (state, backend) in items {
        *counts.entry((backend, state)).or_default() += 1;
    }
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for ((backend, state), n) in counts {
        let labels = [("state", state.to_owned()), ("backend", backend)];
        ConstGauge::new(n).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}
