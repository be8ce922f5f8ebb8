//! cgroup v1: one hierarchy per controller.
//!
//! - CPU: `cpuacct.usage` (nanoseconds, hierarchical).
//! - memory: `memory.usage_in_bytes`, `memory.limit_in_bytes` (a huge value = none) and the
//!   hierarchical `total_*` counters of `memory.stat`: `total_inactive_file` (working
//!   set), `total_rss`, `total_pgfault`, `total_pgmajfault` (every fault; "minor" in
//!   CRI's sense is what cadvisor reports too).
//! - processes: `pids.current`, else the `cgroup.procs` of the memory hierarchy's tree.

use std::path::{Path, PathBuf};

use super::{
    count_procs, field, flat_keyed, parse_u64, parse_with, read_optional, CgroupUsage, MemoryUsage,
    StatsError,
};

/// The cgroup's dir in each hierarchy this host mounts.
pub(super) struct Dirs {
    pub cpuacct: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub pids: Option<PathBuf>,
}

/// v1 writes "no limit" as the largest page-aligned counter (9223372036854771712 with 4 KiB
/// pages); anything this large is no limit.
const NO_LIMIT_FROM: u64 = 1 << 62;

pub(super) fn read(dirs: Dirs) -> Result<Option<CgroupUsage>, StatsError> {
    let exists = [&dirs.cpuacct, &dirs.memory, &dirs.pids]
        .into_iter()
        .flatten()
        .any(|d| d.is_dir());
    if !exists {
        return Ok(None);
    }
    let mut usage = CgroupUsage::default();
    if let Some(dir) = &dirs.cpuacct {
        let path = dir.join("cpuacct.usage");
        if let Some(text) = read_optional(&path)? {
            usage.cpu_ns = Some(parse_with(&path, &text, parse_u64)?);
        }
    }
    if let Some(dir) = &dirs.memory {
        usage.memory = read_memory(dir)?;
    }
    usage.processes = match (&dirs.pids, &dirs.memory) {
        (Some(dir), _) if dir.is_dir() => {
            let path = dir.join("pids.current");
            match read_optional(&path)? {
                Some(text) => Some(parse_with(&path, &text, parse_u64)?),
                None => None,
            }
        }
        (_, Some(dir)) => count_procs(dir)?,
        _ => None,
    };
    Ok(Some(usage))
}

fn read_memory(dir: &Path) -> Result<Option<MemoryUsage>, StatsError> {
    let files = [
        "memory.usage_in_bytes",
        "memory.limit_in_bytes",
        "memory.stat",
    ];
    let mut texts = Vec::with_capacity(files.len());
    for f in files {
        match read_optional(&dir.join(f))? {
            Some(t) => texts.push(t),
            None => return Ok(None),
        }
    }
    parse_with(dir, "", |_| memory(&texts[0], &texts[1], &texts[2])).map(Some)
}

/// Pure: memory usage from the texts of `memory.usage_in_bytes`, `memory.limit_in_bytes`
/// and `memory.stat`.
pub(super) fn memory(usage: &str, limit: &str, stat: &str) -> Result<MemoryUsage, String> {
    let usage = parse_u64(usage).map_err(|e| format!("memory.usage_in_bytes: {e}"))?;
    let limit = parse_u64(limit).map_err(|e| format!("memory.limit_in_bytes: {e}"))?;
    let stat = flat_keyed(stat).map_err(|e| format!("memory.stat: {e}"))?;
    let get = |key| field(&stat, key).map_err(|e| format!("memory.stat: {e}"));
    Ok(MemoryUsage {
        usage,
        working_set: MemoryUsage::new_working_set(usage, get("total_inactive_file")?),
        rss: get("total_rss")?,
        limit: (limit < NO_LIMIT_FROM).then_some(limit),
        page_faults: get("total_pgfault")?,
        major_page_faults: get("total_pgmajfault")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container's memory.stat on cgroup v1 (kernel 6.x), trimmed of counters not read.
    const STAT: &str = "\
cache 12288000
rss 3375104
rss_huge 0
shmem 0
mapped_file 0
pgfault 2970
pgmajfault 1
inactive_anon 3371008
active_anon 4096
inactive_file 12283904
active_file 4096
unevictable 0
hierarchical_memory_limit 67108864
total_cache 12288000
total_rss 3375104
total_pgfault 2970
total_pgmajfault 1
total_inactive_anon 3371008
total_active_anon 4096
total_inactive_file 12283904
total_active_file 4096
";

    #[test]
    fn memory_with_a_limit() {
        let m = memory("15699968\n", "67108864\n", STAT).unwrap();
        assert_eq!(m.usage, 15699968);
        assert_eq!(m.working_set, 15699968 - 12283904);
        assert_eq!(m.rss, 3375104);
        assert_eq!(m.limit, Some(67108864));
        assert_eq!(m.available(), Some(67108864 - (15699968 - 12283904)));
        assert_eq!((m.page_faults, m.major_page_faults), (2970, 1));
    }

    #[test]
    fn the_huge_limit_is_no_limit() {
        let m = memory("15699968\n", "9223372036854771712\n", STAT).unwrap();
        assert_eq!(m.limit, None);
        assert_eq!(m.available(), None);
    }

    #[test]
    fn inactive_file_above_usage_is_a_zero_working_set() {
        let m = memory("4096\n", "9223372036854771712\n", STAT).unwrap();
        assert_eq!(m.working_set, 0);
    }

    #[test]
    fn a_missing_counter_is_named() {
        let e = memory("1\n", "2\n", "total_rss 1\n").unwrap_err();
        assert!(e.contains("total_inactive_file"), "{e}");
        assert!(memory("x\n", "2\n", STAT)
            .unwrap_err()
            .contains("usage_in_bytes"));
    }

    /// The reader on a tree of plain files laid out as v1 hierarchies.
    #[test]
    fn read_from_hierarchies() {
        let root = tempfile::tempdir().unwrap();
        let dir = |c: &str| root.path().join(c).join("pod/ctr");
        for c in ["cpuacct", "memory", "pids"] {
            std::fs::create_dir_all(dir(c)).unwrap();
        }
        std::fs::write(dir("cpuacct").join("cpuacct.usage"), "123456789\n").unwrap();
        std::fs::write(dir("memory").join("memory.usage_in_bytes"), "15699968\n").unwrap();
        std::fs::write(dir("memory").join("memory.limit_in_bytes"), "67108864\n").unwrap();
        std::fs::write(dir("memory").join("memory.stat"), STAT).unwrap();
        std::fs::write(dir("pids").join("pids.current"), "3\n").unwrap();
        let u = read(Dirs {
            cpuacct: Some(dir("cpuacct")),
            memory: Some(dir("memory")),
            pids: Some(dir("pids")),
        })
        .unwrap()
        .unwrap();
        assert_eq!(u.cpu_ns, Some(123456789));
        assert_eq!(u.processes, Some(3));
        assert_eq!(u.memory.unwrap().rss, 3375104);

        // Without a pids hierarchy, processes are counted in the memory one's tree.
        std::fs::write(dir("memory").join("cgroup.procs"), "10\n11\n").unwrap();
        std::fs::create_dir(dir("memory").join("child")).unwrap();
        std::fs::write(dir("memory").join("child/cgroup.procs"), "12\n").unwrap();
        let u = read(Dirs {
            cpuacct: None,
            memory: Some(dir("memory")),
            pids: None,
        })
        .unwrap()
        .unwrap();
        assert_eq!((u.cpu_ns, u.processes), (None, Some(3)));

        std::fs::write(dir("cpuacct").join("cpuacct.usage"), "lots\n").unwrap();
        let e = read(Dirs {
            cpuacct: Some(dir("cpuacct")),
            memory: None,
            pids: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("cpuacct.usage"), "{e}");
    }
}
