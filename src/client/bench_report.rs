//! What `proxrt bench` measured: samples per operation, their statistics, and the
//! table and JSON they are printed as. Pure: no I/O beyond the writer it is given.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

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

    pub fn p90(&self) -> Duration {
        self.percentile(90.0)
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

    pub fn mean(&self) -> Duration {
        match self.durations.len() {
            0 => Duration::ZERO,
            n => self.durations.iter().sum::<Duration>() / n as u32,
        }
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

    /// The samples of `op`, if it was timed.
    pub fn get(&self, op: &str) -> Option<&Samples> {
        self.ops.get(op)
    }

    /// Operation names in the order they were first timed.
    pub fn ops(&self) -> &[String] {
        &self.order
    }

    /// Awaits `call`, adding its wall time to `op` whether it succeeds or not.
    pub async fn time<T>(&mut self, op: &str, call: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let out = call.await;
        self.samples(op).add(started.elapsed());
        out
    }

    /// Adds every sample of `other` (a concurrent worker's report) to this one.
    pub fn merge(&mut self, other: Report) {
        let Report { order, mut ops } = other;
        for op in order {
            if let Some(s) = ops.remove(&op) {
                for d in s.durations {
                    self.samples(&op).add(d);
                }
            }
        }
    }

    /// `op  n  median  p90  p99  max`, times in milliseconds.
    pub fn print_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        let width = self.order.iter().map(String::len).max().unwrap_or(2).max(2);
        writeln!(
            out,
            "{:<width$}  {:>5}  {:>9}  {:>9}  {:>9}  {:>9}",
            "op", "n", "median", "p90", "p99", "max"
        )?;
        for op in &self.order {
            let s = &self.ops[op];
            writeln!(
                out,
                "{op:<width$}  {:>5}  {:>9.3}  {:>9.3}  {:>9.3}  {:>9.3}",
                s.len(),
                ms(s.median()),
                ms(s.p90()),
                ms(s.p99()),
                ms(s.max())
            )?;
        }
        Ok(())
    }

    /// `[{"op", "n", "median", "p90", "p99", "min", "max", "mean"}, ...]` in milliseconds.
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
                    "p90": ms(s.p90()),
                    "p99": ms(s.p99()),
                    "min": ms(s.min()),
                    "max": ms(s.max()),
                    "mean": ms(s.mean()),
                })
            })
            .collect();
        serde_json::Value::Array(ops)
    }
}

/// Per operation timed on both, `b`'s median over `a`'s (`> 1`: `b` is slower).
pub fn median_ratios(a: &Report, b: &Report) -> Vec<(String, f64)> {
    a.order
        .iter()
        .filter_map(|op| {
            let (sa, sb) = (a.get(op)?, b.get(op)?);
            let base = sa.median().as_secs_f64();
            (base > 0.0).then(|| (op.clone(), sb.median().as_secs_f64() / base))
        })
        .collect()
}

/// `op  A median  B median  B/A` for two endpoints' reports.
pub fn print_comparison(a: &Report, b: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let ratios = median_ratios(a, b);
    let width = ratios
        .iter()
        .map(|(op, _)| op.len())
        .max()
        .unwrap_or(2)
        .max(2);
    writeln!(
        out,
        "{:<width$}  {:>10}  {:>10}  {:>7}",
        "op", "A median", "B median", "B/A"
    )?;
    for (op, ratio) in ratios {
        writeln!(
            out,
            "{op:<width$}  {:>10.3}  {:>10.3}  {:>7.2}",
            ms(a.ops[&op].median()),
            ms(b.ops[&op].median()),
            ratio
        )?;
    }
    Ok(())
}

pub fn ms(d: Duration) -> f64 {
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
        assert_eq!(samples(&[4, 1, 3, 2]).mean(), Duration::from_micros(2500));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        // 1..=200: rank ceil(0.99 * 200) = 198.
        let s = samples(&(1..=200).rev().collect::<Vec<_>>());
        assert_eq!(s.p99(), Duration::from_millis(198));
        assert_eq!(s.p90(), Duration::from_millis(180));
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
        assert_eq!(json[0]["op"], "PullImage");
        assert_eq!(json[0]["n"], 2);
        assert_eq!(json[0]["mean"], 13.0);
        assert_eq!(json[1]["max"], 0.25);
    }

    #[test]
    fn merged_workers_keep_every_sample_and_the_first_order() {
        let mut a = Report::default();
        a.samples("RunPodSandbox").add(Duration::from_millis(1));
        let mut b = Report::default();
        b.samples("CreateContainer").add(Duration::from_millis(3));
        b.samples("RunPodSandbox").add(Duration::from_millis(2));
        a.merge(b);
        assert_eq!(a.ops(), ["RunPodSandbox", "CreateContainer"]);
        assert_eq!(a.get("RunPodSandbox").map(Samples::len), Some(2));
        assert_eq!(a.get("CreateContainer").map(Samples::len), Some(1));
    }

    #[test]
    fn ratios_compare_medians_of_ops_timed_on_both() {
        let mut a = Report::default();
        a.samples("CreateContainer").add(Duration::from_millis(2));
        a.samples("OnlyA").add(Duration::from_millis(1));
        let mut b = Report::default();
        b.samples("CreateContainer").add(Duration::from_millis(8));
        assert_eq!(median_ratios(&a, &b), vec![("CreateContainer".into(), 4.0)]);
        let mut out = Vec::new();
        print_comparison(&a, &b, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("CreateContainer") && text.contains("4.00"),
            "{text}"
        );
        assert!(!text.contains("OnlyA"), "{text}");
    }
}
