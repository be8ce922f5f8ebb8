//! Did the kernel OOM killer act in a container's memory cgroup?
//!
//! Read once the init has exited and before `delete()` removes the cgroup. cgroup v1 keeps
//! an `oom_kill` counter in `memory.oom_control` (kernel 4.13+); v2 in `memory.events`.

use std::path::{Path, PathBuf};

const V1_MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";
const V2_ROOT: &str = "/sys/fs/cgroup";

/// The files that may hold the container's `oom_kill` counter, v1 first (on hybrid hosts
/// the memory controller is a v1 hierarchy).
fn counter_files(cgroups_path: &Path) -> [PathBuf; 2] {
    let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    [
        Path::new(V1_MEMORY_ROOT)
            .join(rel)
            .join("memory.oom_control"),
        Path::new(V2_ROOT).join(rel).join("memory.events"),
    ]
}

/// How many processes the OOM killer killed in the cgroup at `cgroups_path` (the spec's
/// `linux.cgroupsPath`, cgroupfs driver); None when no counter could be read.
pub(crate) fn oom_kill_count(cgroups_path: &Path) -> Option<u64> {
    counter_files(cgroups_path)
        .iter()
        .find_map(|f| std::fs::read_to_string(f).ok())
        .and_then(|text| parse_oom_kill(&text))
}

fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("oom_kill"), Some(n)) => n.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_and_v2_counters() {
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n"),
            Some(1)
        );
        assert_eq!(parse_oom_kill("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn relative_and_absolute_paths_land_under_the_hierarchy() {
        let [v1, v2] = counter_files(Path::new("/proxrt/abc"));
        assert_eq!(
            v1,
            Path::new("/sys/fs/cgroup/memory/proxrt/abc/memory.oom_control")
        );
        assert_eq!(v2, Path::new("/sys/fs/cgroup/proxrt/abc/memory.events"));
        let [v1, _] = counter_files(Path::new("proxrt/abc"));
        assert_eq!(
            v1,
            Path::new("/sys/fs/cgroup/memory/proxrt/abc/memory.oom_control")
        );
    }
}
