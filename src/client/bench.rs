//! `proxrt bench`: times CRI calls against any CRI endpoint (proxrt, containerd,
//! CRI-O) and prints, per call, how many were timed and their median, p99, min and
//! max in milliseconds.
//!
//! One async function per workload (`images` today; pods and containers fit the same
//! shape) records each timed call in a `Report` under the RPC's name; setup and
//! cleanup calls are made but not timed.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ImageSpec, ImageStatusRequest, ListImagesRequest, PullImageRequest, RemoveImageRequest,
};

use super::{ClientError, Cri};

/// `proxrt bench [--json] WORKLOAD`
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Print the results as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
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
    /// Per round: a pod and a container from nothing to running, each lifecycle call
    /// timed (RunPodSandbox … RemovePodSandbox, ExecSync `true`); see bench_pods.rs.
    Pods {
        /// The container image; must already be present (pull or import it first).
        #[arg(long)]
        image: String,
        /// Rounds.
        #[arg(short = 'n', long = "rounds", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        n: u32,
        /// Idle containers (one pod each) to start before timing.
        #[arg(long, default_value_t = 0)]
        live: u32,
    },
}

/// Runs the workload `args` names against `cri` and prints its report.
pub async fn run(cri: &mut Cri, args: &BenchArgs) -> Result<(), ClientError> {
    let (report, about) = match &args.workload {
        Workload::Images { image, n } => (
            images(cri, image, *n as usize).await?,
            format!("image {image}"),
        ),
        Workload::Pods { image, n, live } => (
            super::bench_pods::pods(cri, image, *n as usize, *live as usize).await?,
            format!("pods: image {image}, {n} rounds, {live} live containers"),
        ),
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let mut value = report.to_json();
        value["workload"] = serde_json::Value::String(about);
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        )
    } else {
        writeln!(out, "# {about}").and_then(|_| report.print_table(&mut out))
    };
    written.map_err(|e| ClientError::Usage(format!("write report: {e}")))
}

/// The images workload: what kubelet's image manager and image GC call.
pub async fn images(cri: &mut Cri, image: &str, n: usize) -> Result<Report, ClientError> {
    let spec = || {
        Some(ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        })
    };
    let mut report = Report::default();
    for _ in 0..n {
        // Removing an image that is not there succeeds (CRI), so the first round is alike.
        cri.images
            .remove_image(RemoveImageRequest { image: spec() })
            .await
            .map_err(|s| ClientError::rpc("RemoveImage", s))?;
        let req = PullImageRequest {
            image: spec(),
            auth: None,
            sandbox_config: None,
        };
        report
            .time("PullImage", cri.images.pull_image(req))
            .await
            .map_err(|s| ClientError::rpc("PullImage", s))?;
    }
    for _ in 0..n {
        let req = ImageStatusRequest {
            image: spec(),
            verbose: false,
        };
        let status = report
            .time("ImageStatus", cri.images.image_status(req))
            .await
            .map_err(|s| ClientError::rpc("ImageStatus", s))?;
        if status.into_inner().image.is_none() {
            return Err(ClientError::Usage(format!(
                "ImageStatus: {image} is gone right after its pull"
            )));
        }
    }
    for _ in 0..n {
        report
            .time(
                "ListImages",
                cri.images.list_images(ListImagesRequest { filter: None }),
            )
            .await
            .map_err(|s| ClientError::rpc("ListImages", s))?;
    }
    Ok(report)
}

/// Durations of one operation.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    durations: Vec<Duration>,
}

impl Samples {
    pub fn add(&mut self, d: Duration) {
        self.durations.push(d);
    }

    pub fn len(&self) -> usize {
        self.durations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.durations.is_empty()
    }

    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.durations.clone();
        v.sort_unstable();
        v
    }

    /// The middle value; the mean of the two middle values for an even count.
    pub fn median(&self) -> Duration {
        let v = self.sorted();
        match v.len() {
            0 => Duration::ZERO,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2,
        }
    }

    /// The nearest-rank percentile: the smallest sample with at least `p` percent of
    /// the samples at or below it. With fewer than 100 samples p99 is the maximum.
    pub fn percentile(&self, p: f64) -> Duration {
        let v = self.sorted();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn p99(&self) -> Duration {
        self.percentile(99.0)
    }

    pub fn min(&self) -> Duration {
        self.durations.iter().min().copied().unwrap_or_default()
    }

    pub fn max(&self) -> Duration {
        self.durations.iter().max().copied().unwrap_or_default()
    }
}

/// Samples per operation, printed in the order the operations were first timed.
#[derive(Debug, Default)]
pub struct Report {
    order: Vec<String>,
    ops: BTreeMap<String, Samples>,
}

impl Report {
    /// The samples of `op`, created empty on first use.
    pub fn samples(&mut self, op: &str) -> &mut Samples {
        if !self.ops.contains_key(op) {
            self.order.push(op.to_owned());
        }
        self.ops.entry(op.to_owned()).or_default()
    }

    /// Awaits `call`, adding its wall time to `op` whether it succeeds or not.
    pub async fn time<T>(&mut self, op: &str, call: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let out = call.await;
        self.samples(op).add(started.elapsed());
        out
    }

    /// `op  n  median  p99  min  max`, times in milliseconds.
    pub fn print_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        let width = self.order.iter().map(String::len).max().unwrap_or(2).max(2);
        writeln!(
            out,
            "{:<width$}  {:>5}  {:>9}  {:>9}  {:>9}  {:>9}",
            "op", "n", "median", "p99", "min", "max"
        )?;
        for op in &self.order {
            let s = &self.ops[op];
            writeln!(
                out,
                "{op:<width$}  {:>5}  {:>9.3}  {:>9.3}  {:>9.3}  {:>9.3}",
                s.len(),
                ms(s.median()),
                ms(s.p99()),
                ms(s.min()),
                ms(s.max())
            )?;
        }
        Ok(())
    }

    /// `{"unit": "ms", "ops": [{"op", "n", "median", "p99", "min", "max"}, ...]}`
    pub fn to_json(&self) -> serde_json::Value {
        let ops: Vec<serde_json::Value> = self
            .order
            .iter()
            .map(|op| {
                let s = &self.ops[op];
                serde_json::json!({
                    "op": op,
                    "n": s.len(),
                    "median": ms(s.median()),
                    "p99": ms(s.p99()),
                    "min": ms(s.min()),
                    "max": ms(s.max()),
                })
            })
            .collect();
        serde_json::json!({ "unit": "ms", "ops": ops })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ms: &[u64]) -> Samples {
        let mut s = Samples::default();
        for &m in ms {
            s.add(Duration::from_millis(m));
        }
        s
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(samples(&[5, 1, 3]).median(), Duration::from_millis(3));
        assert_eq!(samples(&[4, 1, 3, 2]).median(), Duration::from_micros(2500));
        assert_eq!(samples(&[]).median(), Duration::ZERO);
    }

    #[test]
    fn p99_is_nearest_rank() {
        // 1..=200: rank ceil(0.99 * 200) = 198.
        let s = samples(&(1..=200).rev().collect::<Vec<_>>());
        assert_eq!(s.p99(), Duration::from_millis(198));
        assert_eq!(s.percentile(50.0), Duration::from_millis(100));
        assert_eq!(s.percentile(0.0), Duration::from_millis(1));
        // Fewer than 100 samples: p99 is the maximum.
        assert_eq!(samples(&[7, 9, 8]).p99(), Duration::from_millis(9));
        assert_eq!(
            (s.min(), s.max()),
            (Duration::from_millis(1), Duration::from_millis(200))
        );
    }

    #[test]
    fn table_and_json_keep_first_timed_order() {
        let mut r = Report::default();
        r.samples("PullImage").add(Duration::from_millis(12));
        r.samples("ImageStatus").add(Duration::from_micros(250));
        r.samples("PullImage").add(Duration::from_millis(14));
        let mut out = Vec::new();
        r.print_table(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("op ") && lines[0].ends_with("max"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("PullImage") && lines[1].contains("13.000"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("ImageStatus") && lines[2].contains("0.250"),
            "{text}"
        );
        let json = r.to_json();
        assert_eq!(json["ops"][0]["op"], "PullImage");
        assert_eq!(json["ops"][0]["n"], 2);
        assert_eq!(json["ops"][1]["max"], 0.25);
    }
}
