//! `usage_nano_cores` is a rate: the CPU time used between two readings over the time
//! between them. The previous reading of each container and pod is kept here, in memory
//! (a restarted daemon starts over: its first answer has no rate, and kubelet computes
//! one itself when the field is absent).

use std::collections::HashMap;
use std::sync::Mutex;

/// The last (timestamp ns, cumulative CPU ns) seen per key (a container id, `pod/<id>`).
#[derive(Debug, Default)]
pub struct CpuSamples(Mutex<HashMap<String, (i64, u64)>>);

impl CpuSamples {
    /// Records `usage_ns` at `at` for `key` and returns the rate since the previous
    /// reading, if there was one it can be computed from.
    pub fn nano_cores(&self, key: &str, at: i64, usage_ns: u64) -> Option<u64> {
        let mut samples = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let previous = samples.insert(key.to_owned(), (at, usage_ns));
        previous.and_then(|p| rate(p, (at, usage_ns)))
    }

    /// Forgets every key `keep` refuses (containers and pods that are gone).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut samples = self.0.lock().unwrap_or_else(|e| e.into_inner());
        samples.retain(|k, _| keep(k));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Pure: CPU nanoseconds per second between two (timestamp ns, cumulative ns) readings.
/// None when no time passed or the counter went back (a cgroup made again under the same
/// name, a pod whose summed containers changed).
fn rate((t0, u0): (i64, u64), (t1, u1): (i64, u64)) -> Option<u64> {
    let dt = u128::try_from(t1.checked_sub(t0)?)
        .ok()
        .filter(|&d| d > 0)?;
    let du = u128::from(u1.checked_sub(u0)?);
    u64::try_from(du * 1_000_000_000 / dt).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_cpu_time_over_wall_time() {
        // Half a core: 0.5 s of CPU over 1 s.
        assert_eq!(
            rate((1_000, 10), (1_000_001_000, 500_000_010)),
            Some(500_000_000)
        );
        // Two cores busy for 2 s.
        assert_eq!(
            rate((0, 0), (2_000_000_000, 4_000_000_000)),
            Some(2_000_000_000)
        );
        assert_eq!(rate((5, 0), (5, 10)), None, "no time passed");
        assert_eq!(rate((5, 0), (4, 10)), None, "time went back");
        assert_eq!(rate((0, 10), (5, 9)), None, "counter went back");
    }

    #[test]
    fn the_first_reading_has_no_rate() {
        let s = CpuSamples::default();
        assert_eq!(s.nano_cores("a", 0, 0), None);
        assert_eq!(
            s.nano_cores("a", 1_000_000_000, 250_000_000),
            Some(250_000_000)
        );
        assert_eq!(s.nano_cores("b", 1_000_000_000, 1), None, "per key");
        s.retain(|k| k != "a");
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.nano_cores("a", 2_000_000_000, 300_000_000),
            None,
            "forgotten"
        );
    }
}
