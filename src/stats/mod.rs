//! Resource usage of containers and pods, read from the host: cgroup files (v1 and v2),
//! the writable layer on disk, a pod's network namespace. The stats RPCs (src/cri/*stats*)
//! translate what this module answers; nothing here knows gRPC.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the usage types, the cgroup layout of this host, reading a cgroup, errors |
//! | `v1.rs` / `v2.rs` | pure parsers of each version's files, and the readers using them |
//! | `net.rs` | `/proc/<pid>/net/dev` of a pod's namespace holder |
//! | `cpu.rs` | the previous CPU sample per container and pod, for nano-cores |
//! | `reader.rs` | [`StatsReader`]: a container's and a pod's usage, assembled |
//!
//! Every parser is pure and unit-tested on fixture text, so both versions are covered on
//! any host; the readers only open files and hand the text over.

mod cpu;
mod net;
mod reader;
mod v1;
mod v2;

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Classify, Kind};

pub use cpu::CpuSamples;
pub use net::InterfaceUsage;
pub use reader::{ContainerUsage, PodUsage, StatsReader};

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("parse {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Classify for StatsError {
    fn kind(&self) -> Kind {
        match self {
            StatsError::Read { .. } | StatsError::Parse { .. } => Kind::Internal,
        }
    }
}

/// What one cgroup (a container's, a pod's) has used, as of one reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// Cumulative CPU time of every process that ran in the cgroup, in nanoseconds.
    pub cpu_ns: Option<u64>,
    pub memory: Option<MemoryUsage>,
    /// Processes (v1: tasks counted by `pids.current`) in the cgroup and below it.
    pub processes: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Everything charged to the cgroup, page cache included.
    pub usage: u64,
    /// `usage - inactive_file`: what kubelet evicts and OOM-ranks on.
    pub working_set: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub rss: u64,
    /// The cgroup's own limit, if it has one.
    pub limit: Option<u64>,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

impl MemoryUsage {
    /// `limit - working_set`, when there is a limit.
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.working_set))
    }

    /// The working set as kubelet's peers compute it: usage less the inactive page cache,
    /// never below zero (the counters are read one after the other).
    fn new_working_set(usage: u64, inactive_file: u64) -> u64 {
        usage.saturating_sub(inactive_file)
    }
}

impl CgroupUsage {
    /// The usage of several cgroups together (a pod without a cgroup of its own: the sum of
    /// its containers). A field is known when any part knows it; limits do not add up,
    /// so the sum has none.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a CgroupUsage>) -> CgroupUsage {
        fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.saturating_add(b)),
                (a, b) => a.or(b),
            }
        }
        let mut total = CgroupUsage::default();
        for p in parts {
            total.cpu_ns = add(total.cpu_ns, p.cpu_ns);
            total.processes = add(total.processes, p.processes);
            if let Some(m) = p.memory {
                let t = total.memory.get_or_insert_with(MemoryUsage::default);
                t.usage += m.usage;
                t.working_set += m.working_set;
                t.rss += m.rss;
                t.page_faults += m.page_faults;
                t.major_page_faults += m.major_page_faults;
            }
        }
        total
    }
}

/// Where this host mounts the cgroup hierarchies the stats come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// The unified hierarchy (Proxmox VE 7 and later): every controller under one root.
    V2 { root: PathBuf },
    /// One hierarchy per controller (a v1 or hybrid host: libcontainer and crun manage the
    /// v1 controllers there, so that is where containers are accounted); a controller not
    /// mounted is `None` and its figures are not reported.
    V1 {
        cpuacct: Option<PathBuf>,
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
}

impl Cgroups {
    /// The layout of this host, from the daemon's mount table.
    pub fn probe() -> Cgroups {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Cgroups::from_mountinfo(&mountinfo)
    }

    /// Pure part of [`Cgroups::probe`]: v1 hierarchies win when any is mounted (a hybrid
    /// host's cgroup2 holds no container), else the cgroup2 mount. A hierarchy mounted more
    /// than once is read where it shows its whole tree (mount root `/`) under
    /// /sys/fs/cgroup, as the runtimes resolve it; else the first mount seen.
    pub fn from_mountinfo(mountinfo: &str) -> Cgroups {
        // (how well the mount suits, mount point) per hierarchy.
        type Slot = Option<(u8, PathBuf)>;
        fn offer(slot: &mut Slot, score: u8, point: &Path) {
            if slot.as_ref().is_none_or(|(best, _)| score > *best) {
                *slot = Some((score, point.to_owned()));
            }
        }
        let (mut cpuacct, mut memory, mut pids, mut unified): (Slot, Slot, Slot, Slot) =
            (None, None, None, None);
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mut fields = left.split(' ');
            let (Some(root), Some(point)) = (fields.nth(3), fields.next()) else {
                continue;
            };
            let mut tail = right.split(' ');
            let (Some(fstype), Some(options)) = (tail.next(), tail.nth(1)) else {
                continue;
            };
            let point = PathBuf::from(crate::mounts::unescape(point));
            let score = u8::from(root == "/") * 2 + u8::from(point.starts_with("/sys/fs/cgroup"));
            match fstype {
                "cgroup2" => offer(&mut unified, score, &point),
                "cgroup" => {
                    for option in options.split(',') {
                        match option {
                            "cpuacct" => offer(&mut cpuacct, score, &point),
                            "memory" => offer(&mut memory, score, &point),
                            "pids" => offer(&mut pids, score, &point),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        let path = |slot: Slot| slot.map(|(_, p)| p);
        match path(unified) {
            Some(root) if cpuacct.is_none() && memory.is_none() && pids.is_none() => {
                Cgroups::V2 { root }
            }
            _ => Cgroups::V1 {
                cpuacct: path(cpuacct),
                memory: path(memory),
                pids: path(pids),
            },
        }
    }

    /// The usage of the cgroup at `path` (as in `linux.cgroupsPath`: absolute from the
    /// hierarchy's root), or None when it does not exist (the container has not started,
    /// or has exited and its cgroup was removed).
    pub fn read(&self, path: &str) -> Result<Option<CgroupUsage>, StatsError> {
        let rel = path.trim_start_matches('/');
        match self {
            Cgroups::V2 { root } => v2::read(&root.join(rel)),
            Cgroups::V1 {
                cpuacct,
                memory,
                pids,
            } => v1::read(v1::Dirs {
                cpuacct: cpuacct.as_ref().map(|p| p.join(rel)),
                memory: memory.as_ref().map(|p| p.join(rel)),
                pids: pids.as_ref().map(|p| p.join(rel)),
            }),
        }
    }

    pub fn version(&self) -> &'static str {
        match self {
            Cgroups::V2 { .. } => "v2",
            Cgroups::V1 { .. } => "v1",
        }
    }
}

/// A cgroup file's text, or None when the file (or the cgroup) is gone: a container
/// exiting mid-reading removes its cgroup, which is "no figures", not an error.
fn read_optional(path: &Path) -> Result<Option<String>, StatsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        // ENODEV: a cgroup being removed answers reads of its files with it.
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) => {
            Ok(None)
        }
        Err(source) => Err(StatsError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Parses a file's text, naming the file in the error.
fn parse_with<T>(
    path: &Path,
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, StatsError> {
    parse(text).map_err(|message| StatsError::Parse {
        path: path.to_owned(),
        message,
    })
}

/// A file holding one unsigned number (`cpuacct.usage`, `memory.current`, `pids.current`).
fn parse_u64(text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("not a number: {:?}", text.trim()))
}

/// `key value` lines (`memory.stat`, `cpu.stat`); a key missing from the map is 0 to the
/// caller only where the kernel omits zero counters, so lookups go through [`field`].
fn flat_keyed(text: &str) -> Result<std::collections::HashMap<&str, u64>, String> {
    let mut map = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("not a `key value` line: {line:?}"));
        };
        let value = value
            .parse()
            .map_err(|_| format!("{key}: not a number: {value:?}"))?;
        map.insert(key, value);
    }
    Ok(map)
}

fn field(map: &std::collections::HashMap<&str, u64>, key: &str) -> Result<u64, String> {
    map.get(key).copied().ok_or_else(|| format!("no {key}"))
}

/// Processes in `dir` and every cgroup below it, from `cgroup.procs` (used where no pids
/// controller counts them). Cgroups vanishing meanwhile count as empty.
fn count_procs(dir: &Path) -> Result<Option<u64>, StatsError> {
    let Some(procs) = read_optional(&dir.join("cgroup.procs"))? else {
        return Ok(None);
    };
    let mut count = procs.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(count)),
        Err(source) => {
            return Err(StatsError::Read {
                path: dir.to_owned(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            count += count_procs(&entry.path())?.unwrap_or(0);
        }
    }
    Ok(Some(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn a_hybrid_host_reads_the_v1_controllers() {
        assert_eq!(
            Cgroups::from_mountinfo(HYBRID),
            Cgroups::V1 {
                cpuacct: Some("/sys/fs/cgroup/cpuacct".into()),
                memory: Some("/sys/fs/cgroup/memory".into()),
                pids: Some("/sys/fs/cgroup/pids".into()),
            }
        );
    }

    #[test]
    fn co_mounted_v1_controllers_share_a_dir() {
        let m = "28 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let Cgroups::V1 {
            cpuacct, memory, ..
        } = Cgroups::from_mountinfo(m)
        else {
            panic!("v1 expected");
        };
        assert_eq!(cpuacct, Some("/sys/fs/cgroup/cpu,cpuacct".into()));
        assert_eq!(memory, None);
    }

    #[test]
    fn a_proxmox_host_is_unified() {
        let m = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
        assert_eq!(
            Cgroups::from_mountinfo(m),
            Cgroups::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
    }

    /// A bind mount of part of a hierarchy (a container runtime's, mounted earlier or
    /// later) does not hide the host's mount of the whole tree.
    #[test]
    fn the_whole_tree_under_sys_fs_cgroup_wins_over_other_mounts() {
        let m = "\
90 80 0:32 /lxc/100 /var/lib/lxc/100/rootfs/sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
91 80 0:32 / /mnt/memory rw - cgroup cgroup rw,memory
92 80 0:38 /sub /mnt/unified rw - cgroup2 cgroup2 rw
";
        let Cgroups::V1 { memory, .. } = Cgroups::from_mountinfo(m) else {
            panic!("v1 expected");
        };
        assert_eq!(memory, Some("/sys/fs/cgroup/memory".into()));
        let v2 = "\
92 80 0:38 /sub /mnt/unified rw - cgroup2 cgroup2 rw
30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            Cgroups::from_mountinfo(v2),
            Cgroups::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
    }

    #[test]
    fn a_pod_without_a_cgroup_sums_its_containers() {
        let a = CgroupUsage {
            cpu_ns: Some(10),
            memory: Some(MemoryUsage {
                usage: 100,
                working_set: 80,
                rss: 50,
                limit: Some(1000),
                page_faults: 7,
                major_page_faults: 1,
            }),
            processes: Some(2),
        };
        let exited = CgroupUsage::default();
        let b = CgroupUsage {
            cpu_ns: Some(5),
            memory: Some(MemoryUsage {
                usage: 1,
                working_set: 1,
                rss: 1,
                limit: None,
                page_faults: 1,
                major_page_faults: 0,
            }),
            processes: Some(1),
        };
        let sum = CgroupUsage::sum([&a, &exited, &b]);
        assert_eq!(sum.cpu_ns, Some(15));
        assert_eq!(sum.processes, Some(3));
        let m = sum.memory.unwrap();
        assert_eq!(
            (
                m.usage,
                m.working_set,
                m.rss,
                m.page_faults,
                m.major_page_faults
            ),
            (101, 81, 51, 8, 1)
        );
        assert_eq!(m.limit, None, "limits of parts do not add up to the pod's");
        assert_eq!(CgroupUsage::sum([&exited]), CgroupUsage::default());
    }

    #[test]
    fn available_is_the_limit_less_the_working_set() {
        let m = MemoryUsage {
            working_set: 300,
            limit: Some(1000),
            ..Default::default()
        };
        assert_eq!(m.available(), Some(700));
        let over = MemoryUsage {
            working_set: 2000,
            limit: Some(1000),
            ..Default::default()
        };
        assert_eq!(over.available(), Some(0));
        assert_eq!(MemoryUsage::default().available(), None);
    }

    #[test]
    fn flat_keyed_files_parse_and_name_bad_lines() {
        let m = flat_keyed("usage_usec 12\nuser_usec 7\n\n").unwrap();
        assert_eq!((m["usage_usec"], m["user_usec"]), (12, 7));
        assert!(flat_keyed("usage_usec twelve\n")
            .unwrap_err()
            .contains("usage_usec"));
        assert!(flat_keyed("a 1 2\n").is_err());
    }

    #[test]
    fn a_missing_cgroup_is_no_figures_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let v2 = Cgroups::V2 {
            root: dir.path().to_owned(),
        };
        assert_eq!(v2.read("/gone").unwrap(), None);
        assert_eq!(read_optional(&gone.join("memory.current")).unwrap(), None);
        assert_eq!(count_procs(&gone).unwrap(), None);
    }
}
