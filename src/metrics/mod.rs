//! Prometheus metrics: what is counted, and the calls the rest of the daemon records with.
//!
//! The counters and histograms live for the whole process (`METRICS`) and are recorded
//! whether or not `[metrics] address` serves them: recording is a few atomic adds. Gauges
//! of state (containers and pods by state and backend) are computed from the stores at
//! scrape time (`state.rs`), so they can never drift from what CRI answers. `rpc.rs` is
//! the tower layer timing every gRPC call; `http.rs` serves `/metrics`.
//!
//! Recording API, for code that has something to count:
//! - `pull_finished(outcome, duration)` and `blob_downloaded(bytes)`: image pulls;
//! - `monitor_watched()`: a guard held while the daemon waits on a container's monitor;
//! - `proxmox_call(method, outcome, duration)` and `proxmox_task(kind, outcome,
//!   duration)`: the Proxmox VE API (for src/proxmox and the proxmox-lxc backend);
//! - `cni_finished(command, path, ok, duration)`: a pod network's ADD or DEL, in-process
//!   (the fast path) or by the plugins (src/network);
//! - `container_created_in(view)`: a host backend's create, by the mount namespace it ran
//!   in (monitor/container/view.rs);
//! - `container_monitor_from(from)`: whether that create's monitor was the zygote's spare
//!   (monitor/spare.rs).
//!
//! Every label value is a `&'static str` or a gRPC method name: a label must never carry
//! an id, a name or a path, or each pod would make new series.

mod http;
mod rpc;
mod state;

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

pub use http::{bind, serve, MetricsError};
pub use rpc::RpcMetricsLayer;
pub use state::StateSource;

/// The version and commit this binary was built from (`build.rs` sets the commit when
/// the source is a git checkout, or from `PROXRT_GIT_COMMIT`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_COMMIT: &str = match option_env!("PROXRT_GIT_COMMIT") {
    Some(c) => c,
    None => "",
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    service: String,
    method: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxmoxCallLabels {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxmoxTaskLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CniLabels {
    command: &'static str,
    path: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewLabels {
    view: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MonitorLabels {
    from: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The process's counters and histograms. Clones share the values (each metric is an
/// `Arc` inside), which is how a scrape's `Registry` reads them.
#[derive(Clone)]
struct Metrics {
    rpc_duration: HistogramFamily<MethodLabels>,
    rpc_handled: Family<CodeLabels, Counter>,
    pulls: Family<OutcomeLabels, Counter>,
    pull_duration: HistogramFamily<OutcomeLabels>,
    pull_bytes: Counter,
    monitors: Gauge,
    proxmox_calls: Family<ProxmoxCallLabels, Counter>,
    proxmox_call_duration: HistogramFamily<ProxmoxCallLabels>,
    proxmox_task_duration: HistogramFamily<ProxmoxTaskLabels>,
    cni_operations: Family<CniLabels, Counter>,
    cni_duration: HistogramFamily<CniLabels>,
    creates_by_view: Family<ViewLabels, Counter>,
    monitors_by_origin: Family<MonitorLabels, Counter>,
}

/// 1 ms to ~150 s: a Version call to a slow CreateContainer or a pull.
fn rpc_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 14))
}

/// 100 ms to ~14 min: pulls and Proxmox tasks (a guest create copies a template).
fn long_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 14))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    rpc_duration: Family::new_with_constructor(rpc_buckets),
    rpc_handled: Family::default(),
    pulls: Family::default(),
    pull_duration: Family::new_with_constructor(long_buckets),
    pull_bytes: Counter::default(),
    monitors: Gauge::default(),
    proxmox_calls: Family::default(),
    proxmox_call_duration: Family::new_with_constructor(rpc_buckets),
    proxmox_task_duration: Family::new_with_constructor(long_buckets),
    cni_operations: Family::default(),
    cni_duration: Family::new_with_constructor(rpc_buckets),
    creates_by_view: Family::default(),
    monitors_by_origin: Family::default(),
});

/// A registry over the process's metrics and `source`'s state, for one endpoint.
pub fn registry(source: Box<dyn StateSource>) -> Registry {
    let m = METRICS.clone();
    // Both pull outcomes from the start: a rate over a series that appears with its
    // first failure misses that failure.
    for outcome in [PullOutcome::Success, PullOutcome::Failure] {
        let labels = outcome.labels();
        drop(m.pulls.get_or_create(&labels));
        drop(m.pull_duration.get_or_create(&labels));
    }
    let mut r = Registry::with_prefix("proxrt");
    r.register(
        "build",
        "The proxrt build: version and git commit (\"\" when unknown)",
        Info::new(vec![
            ("version", VERSION.to_owned()),
            ("git_commit", GIT_COMMIT.to_owned()),
        ]),
    );
    r.register_with_unit(
        "grpc_request_duration",
        "Time from a gRPC request's arrival to the end of its response, by method",
        Unit::Seconds,
        m.rpc_duration,
    );
    r.register(
        "grpc_requests_handled",
        "gRPC requests completed, by method and status code (OK included)",
        m.rpc_handled,
    );
    r.register(
        "image_pulls",
        "PullImage calls finished, by outcome (success, failure)",
        m.pulls,
    );
    r.register_with_unit(
        "image_pull_duration",
        "Time a PullImage took, by outcome",
        Unit::Seconds,
        m.pull_duration,
    );
    r.register_with_unit(
        "image_pull_downloaded",
        "Bytes of blobs downloaded from registries (blobs already stored are not counted)",
        Unit::Bytes,
        m.pull_bytes,
    );
    r.register(
        "monitors",
        "Container monitors the daemon is watching (one per created or running host container)",
        m.monitors,
    );
    r.register(
        "proxmox_api_calls",
        "Proxmox VE API calls, by call and outcome",
        m.proxmox_calls,
    );
    r.register_with_unit(
        "proxmox_api_call_duration",
        "Time one Proxmox VE API call took, by call and outcome",
        Unit::Seconds,
        m.proxmox_call_duration,
    );
    r.register_with_unit(
        "proxmox_task_duration",
        "Time a Proxmox VE task took from start to its end, by kind and outcome",
        Unit::Seconds,
        m.proxmox_task_duration,
    );
    r.register(
        "cni_operations",
        "Pod network ADDs and DELs, by command (add, del), path (in_process: the fast path; plugins) and outcome",
        m.cni_operations,
    );
    r.register_with_unit(
        "cni_operation_duration",
        "Time a pod network's ADD or DEL took, by command, path and outcome",
        Unit::Seconds,
        m.cni_duration,
    );
    r.register(
        "container_creates_by_view",
        "Containers a host backend created, by the mount namespace the runtime ran in (template: a copy of the zygote's create template; copy: a copy of the host's; host: the host's own)",
        m.creates_by_view,
    );
    r.register(
        "container_monitors_by_origin",
        "Monitors of containers a host backend created, by how they came to be (spare: the zygote's spare, forked ahead; fork: forked for the create)",
        m.monitors_by_origin,
    );
    r.register_collector(Box::new(state::StateCollector(source)));
    r
}

/// One gRPC call finished: `service` and `method` from its path, `code` its status.
fn rpc_finished(service: &str, method: &str, code: tonic::Code, elapsed: Duration) {
    let m = &*METRICS;
    m.rpc_duration
        .get_or_create(&MethodLabels {
            service: service.to_owned(),
            method: method.to_owned(),
        })
        .observe(elapsed.as_secs_f64());
    m.rpc_handled
        .get_or_create(&CodeLabels {
            service: service.to_owned(),
            method: method.to_owned(),
            code: code_name(code),
        })
        .inc();
}

/// A gRPC code as grpc-go and kubelet spell it (`NotFound`, `DeadlineExceeded`).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// How a PullImage ended.
#[derive(Debug, Clone, Copy)]
pub enum PullOutcome {
    Success,
    Failure,
}

impl PullOutcome {
    fn labels(self) -> OutcomeLabels {
        OutcomeLabels {
            outcome: match self {
                PullOutcome::Success => "success",
                PullOutcome::Failure => "failure",
            },
        }
    }
}

/// A PullImage finished (after validation: a request refused for its arguments is
/// counted by the RPC metrics only).
pub fn pull_finished(outcome: PullOutcome, elapsed: Duration) {
    let labels = outcome.labels();
    METRICS.pulls.get_or_create(&labels).inc();
    METRICS
        .pull_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
}

/// A blob of `bytes` was downloaded and stored.
pub fn blob_downloaded(bytes: u64) {
    METRICS.pull_bytes.inc_by(bytes);
}

/// Counts one watched monitor until dropped.
pub struct MonitorWatch(());

impl Drop for MonitorWatch {
    fn drop(&mut self) {
        METRICS.monitors.dec();
    }
}

/// The daemon starts waiting on a container's monitor; the count drops with the guard.
pub fn monitor_watched() -> MonitorWatch {
    METRICS.monitors.inc();
    MonitorWatch(())
}

/// The hook for the Proxmox VE API client: one API call finished.
///
/// `method` names the call, not the request: `"GET /nodes/{node}/lxc/{vmid}/status/current"`
/// or a short name like `"lxc_status"`, never with a vmid or node filled in. `outcome` is
/// one of a few fixed words: `"ok"`, `"http_4xx"`, `"http_5xx"`, `"timeout"`, `"connect"`,
/// `"tls"`. Retries are separate calls.
pub fn proxmox_call(method: &'static str, outcome: &'static str, elapsed: Duration) {
    let labels = ProxmoxCallLabels { method, outcome };
    METRICS.proxmox_calls.get_or_create(&labels).inc();
    METRICS
        .proxmox_call_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
}

/// The hook for Proxmox VE tasks (UPIDs): one task ended, `elapsed` from its start to
/// its end as the client saw it. `kind` is the task type (`"vzcreate"`, `"vzstart"`,
/// `"vzstop"`, `"vzdestroy"`); `outcome` `"ok"`, `"failed"` or `"timeout"`.
pub fn proxmox_task(kind: &'static str, outcome: &'static str, elapsed: Duration) {
    METRICS
        .proxmox_task_duration
        .get_or_create(&ProxmoxTaskLabels { kind, outcome })
        .observe(elapsed.as_secs_f64());
}

/// A pod network's CNI `command` (`"add"`, `"del"`) finished, done on `path`
/// (`"in_process"`: the fast path; `"plugins"`).
pub fn cni_finished(command: &'static str, path: &'static str, ok: bool, elapsed: Duration) {
    let labels = CniLabels {
        command,
        path,
        outcome: if ok { "success" } else { "failure" },
    };
    METRICS.cni_operations.get_or_create(&labels).inc();
    METRICS
        .cni_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
}

/// A host backend created a container in the mount namespace `view` (`"template"`,
/// `"copy"`, `"host"`).
pub fn container_created_in(view: &'static str) {
    METRICS
        .creates_by_view
        .get_or_create(&ViewLabels { view })
        .inc();
}

/// A host backend's container got its monitor `from` the zygote's spare (`"spare"`) or a
/// fork for the create (`"fork"`).
pub fn container_monitor_from(from: &'static str) {
    METRICS
        .monitors_by_origin
        .get_or_create(&MonitorLabels { from })
        .inc();
}

/// The text exposition of `registry` (OpenMetrics 1.0, which Prometheus reads).
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Empty;
    impl StateSource for Empty {
        fn containers(&self) -> Vec<(&'static str, String)> {
            Vec::new()
        }
        fn pods(&self) -> Vec<(&'static str, String)> {
            Vec::new()
        }
    }

    fn scrape() -> String {
        encode(&registry(Box::new(Empty))).unwrap()
    }

    #[test]
    fn proxmox_hooks_show_in_a_scrape() {
        proxmox_call("lxc_status", "ok", Duration::from_millis(30));
        proxmox_task("vzcreate", "failed", Duration::from_secs(3));
        let text = scrape();
        assert!(
            text.contains("proxrt_proxmox_api_calls_total{method=\"lxc_status\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("proxrt_proxmox_task_duration_seconds_count{kind=\"vzcreate\",outcome=\"failed\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn build_info_and_zero_state_gauges_are_always_there() {
        let text = scrape();
        assert!(
            text.contains(&format!("proxrt_build_info{{version=\"{VERSION}\"")),
            "{text}"
        );
        assert!(
            text.contains("proxrt_containers{state=\"running\",backend=\"libcontainer\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("proxrt_pods{state=\"ready\",backend=\"libcontainer\"} 0"),
            "{text}"
        );
    }
}
