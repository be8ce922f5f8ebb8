//! Network counters of a pod's network namespace, from `/proc/<pid>/net/dev` of a process
//! in it (the pod's namespace holder): procfs shows the namespace of the process named,
//! so no `setns` is needed.

use std::path::PathBuf;

use super::{read_optional, StatsError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceUsage {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// Every interface of the namespace `pid` is in but loopback (kubelet and cadvisor leave
/// `lo` out), or None when the process is gone.
pub(super) fn read(pid: i32) -> Result<Option<Vec<InterfaceUsage>>, StatsError> {
    let path = PathBuf::from(format!("/proc/{pid}/net/dev"));
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    super::parse_with(&path, &text, parse)
        .map(|all| Some(all.into_iter().filter(|i| i.name != "lo").collect()))
}

/// Pure: the interfaces of a `net/dev` text. Two header lines, then per interface
/// `name: rx bytes packets errs drop fifo frame compressed multicast tx bytes packets errs …`.
pub(super) fn parse(text: &str) -> Result<Vec<InterfaceUsage>, String> {
    let mut out = Vec::new();
    for line in text.lines().skip(2).filter(|l| !l.trim().is_empty()) {
        let (name, counters) = line
            .split_once(':')
            .ok_or_else(|| format!("no interface name in {line:?}"))?;
        let values: Vec<u64> = counters
            .split_whitespace()
            .map(|v| v.parse())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("bad counter in {line:?}"))?;
        let at = |i: usize| {
            values
                .get(i)
                .copied()
                .ok_or_else(|| format!("{} counters in {line:?}, 16 expected", values.len()))
        };
        out.push(InterfaceUsage {
            name: name.trim().to_owned(),
            rx_bytes: at(0)?,
            rx_errors: at(2)?,
            tx_bytes: at(8)?,
            tx_errors: at(10)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1400      14    0    0    0     0          0         0     1400      14    0    0    0     0       0          0
  eth0: 5718921    4181    3    0    0     0          0         0   394728    3120    7    0    0     0       0          0
";

    #[test]
    fn counters_per_interface() {
        let all = parse(NET_DEV).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[1],
            InterfaceUsage {
                name: "eth0".into(),
                rx_bytes: 5718921,
                rx_errors: 3,
                tx_bytes: 394728,
                tx_errors: 7,
            }
        );
        assert_eq!(all[0].name, "lo");
    }

    #[test]
    fn short_or_bad_lines_are_errors() {
        let header = NET_DEV.lines().take(2).collect::<Vec<_>>().join("\n");
        assert!(parse(&format!("{header}\n eth0: 1 2 3\n")).is_err());
        assert!(parse(&format!("{header}\n eth0 1 2 3\n")).is_err());
        assert!(parse(&format!("{header}\n")).unwrap().is_empty());
    }

    #[test]
    fn this_process_namespace_reads() {
        // Whatever namespace the test runs in, its own net/dev parses.
        assert!(read(std::process::id() as i32).unwrap().is_some());
        assert_eq!(read(i32::MAX).unwrap(), None);
    }
}
