//! cgroup v2 (the unified hierarchy of Proxmox VE 7 and later): one dir per cgroup.
//!
//! - CPU: `usage_usec` of `cpu.stat` (present in every cgroup, controller or not).
//! - memory: `memory.current`, `memory.max` (`max` = none) and `memory.stat`:
//!   `inactive_file` (working set), `anon` (RSS), `pgfault`, `pgmajfault`.
//! - processes: `pids.current`, else the `cgroup.procs` of the cgroup's tree.
//!
//! Every figure is hierarchical: a pod's cgroup includes its containers'.

use std::path::Path;

use super::{
    count_procs, field, flat_keyed, parse_u64, parse_with, read_optional, CgroupUsage, MemoryUsage,
    StatsError,
};

pub(super) fn read(dir: &Path) -> Result<Option<CgroupUsage>, StatsError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut usage = CgroupUsage::default();
    let path = dir.join("cpu.stat");
    if let Some(text) = read_optional(&path)? {
        usage.cpu_ns = Some(parse_with(&path, &text, cpu_ns)?);
    }
    usage.memory = read_memory(dir)?;
    let path = dir.join("pids.current");
    usage.processes = match read_optional(&path)? {
        Some(text) => Some(parse_with(&path, &text, parse_u64)?),
        None => count_procs(dir)?,
    };
    Ok(Some(usage))
}

fn read_memory(dir: &Path) -> Result<Option<MemoryUsage>, StatsError> {
    let files = ["memory.current", "memory.max", "memory.stat"];
    let mut texts = Vec::with_capacity(files.len());
    for f in files {
        // Absent when the memory controller is not enabled for this cgroup.
        match read_optional(&dir.join(f))? {
            Some(t) => texts.push(t),
            None => return Ok(None),
        }
    }
    parse_with(dir, "", |_| memory(&texts[0], &texts[1], &texts[2])).map(Some)
}

/// Pure: cumulative CPU nanoseconds from `cpu.stat`.
pub(super) fn cpu_ns(cpu_stat: &str) -> Result<u64, String> {
    let stat = flat_keyed(cpu_stat)?;
    Ok(field(&stat, "usage_usec")?.saturating_mul(1000))
}

/// Pure: memory usage from the texts of `memory.current`, `memory.max` and `memory.stat`.
pub(super) fn memory(current: &str, max: &str, stat: &str) -> Result<MemoryUsage, String> {
    let usage = parse_u64(current).map_err(|e| format!("memory.current: {e}"))?;
    let limit = match max.trim() {
        "max" => None,
        v => Some(parse_u64(v).map_err(|e| format!("memory.max: {e}"))?),
    };
    let stat = flat_keyed(stat).map_err(|e| format!("memory.stat: {e}"))?;
    let get = |key| field(&stat, key).map_err(|e| format!("memory.stat: {e}"));
    Ok(MemoryUsage {
        usage,
        working_set: MemoryUsage::new_working_set(usage, get("inactive_file")?),
        rss: get("anon")?,
        limit,
        page_faults: get("pgfault")?,
        major_page_faults: get("pgmajfault")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cpu.stat` of a container on a Proxmox VE 8 host (kernel 6.8).
    const CPU_STAT: &str = "\
usage_usec 2531180
user_usec 2011634
system_usec 519546
core_sched.force_idle_usec 0
nr_periods 0
nr_throttled 0
throttled_usec 0
nr_bursts 0
burst_usec 0
";

    /// `memory.stat` of the same container, as the kernel prints it (every key, in order).
    const MEMORY_STAT: &str = "\
anon 10964992
file 21266432
kernel 1503232
kernel_stack 114688
pagetables 212992
sec_pagetables 0
percpu 4320
sock 0
vmalloc 8192
shmem 0
zswap 0
zswapped 0
file_mapped 10104832
file_dirty 0
file_writeback 0
swapcached 0
anon_thp 0
file_thp 0
shmem_thp 0
inactive_anon 10948608
active_anon 16384
inactive_file 16302080
active_file 4964352
unevictable 0
slab_reclaimable 711096
slab_unreclaimable 359128
slab 1070224
workingset_refault_anon 0
workingset_refault_file 0
workingset_activate_anon 0
workingset_activate_file 0
workingset_restore_anon 0
workingset_restore_file 0
workingset_nodereclaim 0
pgscan 0
pgsteal 0
pgscan_kswapd 0
pgscan_direct 0
pgscan_khugepaged 0
pgsteal_kswapd 0
pgsteal_direct 0
pgsteal_khugepaged 0
pgfault 8853
pgmajfault 73
pgrefill 0
pgactivate 1212
pgdeactivate 0
pglazyfree 0
pglazyfreed 0
zswpin 0
zswpout 0
thp_fault_alloc 0
thp_collapse_alloc 0
";

    #[test]
    fn cpu_from_usage_usec() {
        assert_eq!(cpu_ns(CPU_STAT).unwrap(), 2_531_180_000);
        assert!(cpu_ns("user_usec 1\n").unwrap_err().contains("usage_usec"));
    }

    #[test]
    fn memory_unlimited() {
        let m = memory("33734656\n", "max\n", MEMORY_STAT).unwrap();
        assert_eq!(m.usage, 33734656);
        assert_eq!(m.working_set, 33734656 - 16302080);
        assert_eq!(m.rss, 10964992);
        assert_eq!(m.limit, None);
        assert_eq!(m.available(), None);
        assert_eq!((m.page_faults, m.major_page_faults), (8853, 73));
    }

    #[test]
    fn memory_limited() {
        let m = memory("33734656\n", "268435456\n", MEMORY_STAT).unwrap();
        assert_eq!(m.limit, Some(268435456));
        assert_eq!(m.available(), Some(268435456 - (33734656 - 16302080)));
    }

    #[test]
    fn bad_files_are_named() {
        assert!(memory("1\n", "lots\n", MEMORY_STAT)
            .unwrap_err()
            .contains("memory.max"));
        assert!(memory("1\n", "max\n", "anon 1\n")
            .unwrap_err()
            .contains("inactive_file"));
    }

    /// The reader on a cgroup dir of plain files; one without the memory controller
    /// enabled has no memory figures, and processes come from cgroup.procs.
    #[test]
    fn read_a_cgroup_dir() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("kubepods/pod1/proxrt-abc");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpu.stat"), CPU_STAT).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "41\n42\n").unwrap();
        let u = read(&dir).unwrap().unwrap();
        assert_eq!(u.cpu_ns, Some(2_531_180_000));
        assert_eq!(u.memory, None);
        assert_eq!(u.processes, Some(2));

        std::fs::write(dir.join("memory.current"), "33734656\n").unwrap();
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.join("memory.stat"), MEMORY_STAT).unwrap();
        std::fs::write(dir.join("pids.current"), "5\n").unwrap();
        let u = read(&dir).unwrap().unwrap();
        assert_eq!(u.memory.unwrap().rss, 10964992);
        assert_eq!(u.processes, Some(5));

        let via_layout = super::super::Cgroups::V2 {
            root: root.path().to_owned(),
        }
        .read("/kubepods/pod1/proxrt-abc")
        .unwrap();
        assert_eq!(via_layout, Some(u));
    }
}
