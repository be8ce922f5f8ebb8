//! `proxrt bench`: times CRI calls against one or two CRI endpoints (proxrt, containerd,
//! CRI-O) and prints, per call, how many were timed and their median, p90, p99 and max
//! in milliseconds, with the run's throughput.
//!
//! With two `--endpoint`s the rounds interleave the endpoints, A B, B A, A B, …, so that
//! noise on a shared machine hits both alike and each goes first in every other round
//! (what one leaves settling — its teardown after the answer, caches it warmed — then
//! falls on both alike too: in a fixed A, B order one build against itself read pod +
//! container up to 14 % faster as B; docs/benchmarks.md), and a comparison of medians
//! (B/A) follows the two tables.
//! One async function per workload (`images` here, `pods` in bench_pods.rs) records each
//! timed call in a `Report` under the RPC's name; setup and cleanup calls are made but
//! not timed. Ctrl-C stops after the calls in flight and cleans up (bench_pods.rs).

use std::io::{IsTerminal as _, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ImageSpec, ImageStatusRequest, ListImagesRequest, PullImageRequest, RemoveImageRequest,
    VersionRequest,
};

use super::bench_report::{median_ratios, print_comparison, Report};
use super::{ClientError, Cri};

/// `proxrt bench [--json FILE] WORKLOAD`
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Also write the results as JSON to FILE ("-": print only JSON, on stdout).
    #[arg(long, global = true, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[command(subcommand)]
    pub workload: Workload,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Workload {
    /// Per round: RemoveImage (untimed), PullImage (timed); then n × ImageStatus and
    /// n × ListImages. Leaves the image pulled.
    Images {
        /// The image to pull, e.g. 127.0.0.1:5000/busybox:latest.
        #[arg(long)]
        image: String,
        /// Rounds, and calls of each read-only RPC.
        #[arg(short = 'n', long = "rounds", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        n: u32,
    },
    /// Per pod: a pod and a container from nothing to running, each lifecycle call
    /// timed (RunPodSandbox … RemovePodSandbox, ContainerStatus, ListContainers,
    /// ExecSync `test -e <ready file>`); see bench_pods.rs.
    Pods {
        /// The container image; must already be present (pull or import it first).
        #[arg(long)]
        image: String,
        /// Pods measured on each endpoint.
        #[arg(short = 'n', long = "pods", visible_alias = "rounds", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        n: u32,
        /// Idle containers (one pod each) started on each endpoint before timing, and
        /// kept running while measuring.
        #[arg(long, default_value_t = 0)]
        live: u32,
        /// Pod lifecycles run at once.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
        parallel: u32,
        /// Pods in the host's network namespace (hostNetwork: no CNI on any runtime).
        #[arg(long)]
        host_network: bool,
        /// The containers' security context: `none` (unconfined, the runtime's default
        /// capabilities), `runtime-default` (seccomp RuntimeDefault, what kubelet's
        /// `seccompDefault` gives every container), `restricted` (as the Pod Security
        /// Standards' restricted profile has them: RuntimeDefault, allowPrivilegeEscalation
        /// false, every capability dropped; still as root, the bench's script writes its
        /// ready file at /).
        #[arg(long, value_enum, default_value_t = super::bench_pods::Security::None)]
        security: super::bench_pods::Security,
        /// The pods' RuntimeClass handler (RunPodSandbox's `runtime_handler`), the same
        /// on every endpoint: on proxrt `libcontainer`, `crun` or another configured
        /// handler. Empty: each runtime's default.
        #[arg(long, default_value = "")]
        runtime_handler: String,
    },
}

/// One endpoint under test.
pub struct Target {
    pub endpoint: String,
    /// `RuntimeName RuntimeVersion` from its Version answer.
    pub runtime: String,
    pub cri: Cri,
}

/// What one endpoint's run measured.
pub struct Measured {
    pub report: Report,
    /// Wall time of the timed part on this endpoint (its rounds only).
    pub wall: Duration,
    /// Units of work done in `wall` (pods, pulls): the throughput's numerator.
    pub units: usize,
}

/// Set by Ctrl-C: the workloads stop starting work and clean up.
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A flag set by the first Ctrl-C; a second one ends the process at once (exit 130,
    /// no cleanup).
    fn on_ctrl_c() -> Stop {
        let stop = Stop::default();
        let flag = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "\nproxrt: bench interrupted: finishing the calls in flight, then cleaning up (Ctrl-C again to quit now)"
                );
                flag.0.store(true, Ordering::SeqCst);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        stop
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Interrupted)` once Ctrl-C was pressed.
    pub fn check(&self) -> Result<(), ClientError> {
        match self.is_set() {
            true => Err(ClientError::Interrupted),
            false => Ok(()),
        }
    }
}

/// `done/total` on stderr, rewritten in place, only when stderr is a terminal.
pub struct Progress {
    what: String,
    total: usize,
    done: usize,
    on: bool,
}

impl Progress {
    pub fn new(what: impl Into<String>, total: usize) -> Progress {
        Progress {
            what: what.into(),
            total,
            done: 0,
            on: std::io::stderr().is_terminal(),
        }
    }

    pub fn advance(&mut self, by: usize) {
        self.done += by;
        if self.on {
            eprint!("\r{} {}/{}   ", self.what, self.done, self.total);
        }
    }

    pub fn finish(&mut self) {
        if self.on {
            eprint!("\r{:width$}\r", "", width = self.what.len() + 24);
        }
    }
}

/// Connects to every endpoint, runs the workload `args` names (interleaved across the
/// endpoints) and prints its report.
pub async fn run(
    endpoints: &[String],
    rpc_timeout: Duration,
    args: &BenchArgs,
) -> Result<(), ClientError> {
    if endpoints.is_empty() || endpoints.len() > 2 {
        return Err(ClientError::Usage(format!(
            "bench compares one or two endpoints, got {} --endpoint",
            endpoints.len()
        )));
    }
    let mut targets = Vec::new();
    for endpoint in endpoints {
        let mut cri = super::connect(endpoint, rpc_timeout).await?;
        let v = cri
            .runtime
            .version(VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(|s| ClientError::rpc("Version", s))?
            .into_inner();
        targets.push(Target {
            endpoint: endpoint.clone(),
            runtime: format!("{} {}", v.runtime_name, v.runtime_version),
            cri,
        });
    }
    let stop = Stop::on_ctrl_c();
    let (about, unit, results) = match &args.workload {
        Workload::Images { image, n } => (
            serde_json::json!({"workload": "images", "image": image, "rounds": n}),
            "pulls",
            images(&mut targets, image, *n as usize, &stop).await?,
        ),
        Workload::Pods {
            image,
            n,
            live,
            parallel,
            host_network,
            security,
            runtime_handler,
        } => (
            serde_json::json!({
                "workload": "pods", "image": image, "pods": n, "live": live,
                "parallel": parallel, "host_network": host_network,
                "security": security.name(), "runtime_handler": runtime_handler,
            }),
            "pods",
            super::bench_pods::pods(
                &targets,
                &super::bench_pods::PodsArgs {
                    image: image.clone(),
                    pods: *n as usize,
                    live: *live as usize,
                    parallel: *parallel as usize,
                    host_network: *host_network,
                    security: *security,
                    runtime_handler: runtime_handler.clone(),
                },
                &stop,
            )
            .await?,
        ),
    };
    let json = to_json(about.clone(), unit, &targets, &results);
    let write_err = |e: std::io::Error| ClientError::Usage(format!("write report: {e}"));
    match &args.json {
        Some(path) if path.as_os_str() == "-" => {
            let text = serde_json::to_string_pretty(&json).unwrap_or_default();
            return writeln!(std::io::stdout().lock(), "{text}").map_err(write_err);
        }
        Some(path) => {
            let text = serde_json::to_string_pretty(&json).unwrap_or_default() + "\n";
            std::fs::write(path, text).map_err(|e| {
                ClientError::Usage(format!("write JSON report {}: {e}", path.display()))
            })?;
        }
        None => {}
    }
    print_tables(
        &about,
        unit,
        &targets,
        &results,
        &mut std::io::stdout().lock(),
    )
    .map_err(write_err)
}

/// The order the `n` endpoints take in round `round`: A B in even rounds, B A in odd ones
/// (module doc); one endpoint always goes alone.
pub(super) fn round_order(round: usize, n: usize) -> impl Iterator<Item = usize> {
    let flip = round % 2 == 1;
    (0..n).map(move |i| if flip { n - 1 - i } else { i })
}

fn throughput(m: &Measured) -> f64 {
    match m.wall.as_secs_f64() {
        w if w > 0.0 => m.units as f64 / w,
        _ => 0.0,
    }
}

fn label(i: usize) -> &'static str {
    ["A", "B"].get(i).copied().unwrap_or("?")
}

fn print_tables(
    about: &serde_json::Value,
    unit: &str,
    targets: &[Target],
    results: &[Measured],
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(out, "# {about}")?;
    for (i, (t, m)) in targets.iter().zip(results).enumerate() {
        writeln!(out, "\n## {} = {} ({})", label(i), t.endpoint, t.runtime)?;
        m.report.print_table(out)?;
        writeln!(
            out,
            "throughput: {:.1} {unit}/s ({} in {:.2} s)",
            throughput(m),
            m.units,
            m.wall.as_secs_f64()
        )?;
    }
    if let [a, b] = results {
        writeln!(out, "\n## B/A (medians, ms)")?;
        print_comparison(&a.report, &b.report, out)?;
    }
    Ok(())
}

/// `{"workload", ..., "unit": "ms", "endpoints": [{"endpoint", "runtime", "throughput",
/// "wall_secs", "units", "ops": [...]}], "ratios": [{"op", "median_b_over_a"}]}`
fn to_json(
    mut about: serde_json::Value,
    unit: &str,
    targets: &[Target],
    results: &[Measured],
) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = targets
        .iter()
        .zip(results)
        .map(|(t, m)| {
            serde_json::json!({
                "endpoint": t.endpoint,
                "runtime": t.runtime,
                "units": m.units,
                "wall_secs": m.wall.as_secs_f64(),
                "throughput": throughput(m),
                "ops": m.report.to_json(),
            })
        })
        .collect();
    about["unit"] = "ms".into();
    about["throughput_unit"] = format!("{unit}/s").into();
    about["endpoints"] = endpoints.into();
    if let [a, b] = results {
        about["ratios"] = median_ratios(&a.report, &b.report)
            .into_iter()
            .map(|(op, r)| serde_json::json!({"op": op, "median_b_over_a": r}))
            .collect::<Vec<_>>()
            .into();
    }
    about
}

/// The images workload, what kubelet's image manager and image GC call, interleaved
/// across the endpoints call by call ([`round_order`]).
async fn images(
    targets: &mut [Target],
    image: &str,
    n: usize,
    stop: &Stop,
) -> Result<Vec<Measured>, ClientError> {
    let spec = || {
        Some(ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        })
    };
    let mut results: Vec<Measured> = targets
        .iter()
        .map(|_| Measured {
            report: Report::default(),
            wall: Duration::ZERO,
            units: 0,
        })
        .collect();
    let mut progress = Progress::new("bench images: pulls", n * targets.len());
    for round in 0..n {
        for i in round_order(round, targets.len()) {
            let (t, m) = (&mut targets[i], &mut results[i]);
            stop.check()?;
            // Removing an image that is not there succeeds (CRI), so the first round is alike.
            t.cri
                .images
                .remove_image(RemoveImageRequest { image: spec() })
                .await
                .map_err(|s| ClientError::rpc("RemoveImage", s))?;
            let req = PullImageRequest {
                image: spec(),
                auth: None,
                sandbox_config: None,
            };
            let started = Instant::now();
            m.report
                .time("PullImage", t.cri.images.pull_image(req))
                .await
                .map_err(|s| ClientError::rpc("PullImage", s))?;
            m.wall += started.elapsed();
            m.units += 1;
            progress.advance(1);
        }
    }
    progress.finish();
    for round in 0..n {
        for i in round_order(round, targets.len()) {
            let (t, m) = (&mut targets[i], &mut results[i]);
            let req = ImageStatusRequest {
                image: spec(),
                verbose: false,
            };
            let status = m
                .report
                .time("ImageStatus", t.cri.images.image_status(req))
                .await
                .map_err(|s| ClientError::rpc("ImageStatus", s))?;
            if status.into_inner().image.is_none() {
                return Err(ClientError::Usage(format!(
                    "ImageStatus: {image} is gone from {} right after its pull",
                    t.endpoint
                )));
            }
            m.report
                .time(
                    "ListImages",
                    t.cri.images.list_images(ListImagesRequest { filter: None }),
                )
                .await
                .map_err(|s| ClientError::rpc("ListImages", s))?;
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::round_order;

    #[test]
    fn each_endpoint_goes_first_in_every_other_round() {
        let rounds: Vec<Vec<usize>> = (0..4).map(|r| round_order(r, 2).collect()).collect();
        assert_eq!(rounds, [[0, 1], [1, 0], [0, 1], [1, 0]]);
        for r in 0..3 {
            assert_eq!(round_order(r, 1).collect::<Vec<_>>(), [0], "one endpoint");
        }
    }
}
