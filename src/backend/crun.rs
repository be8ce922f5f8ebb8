//! What the crun engine needs to know about this host: the binary and the cgroup layout.
//! crun runs the same bundle libcontainer gets, under the same per-container monitor
//! (`HostBackend` with `Engine::Crun`); see src/monitor/crun.rs for the monitor's side.
//!
//! Whether crun can create containers on this host is decided once, at startup: the binary
//! must run, and crun (1.x) refuses a hybrid cgroup host whose cgroup2 hierarchy at
//! /sys/fs/cgroup/unified still lists controllers ("cgroups in hybrid mode not supported,
//! drop all controllers from cgroupv2"; docs/libcontainer.md). Unless `[crun] hybrid_cgroups =
//! "v1-view"` works around that, the backend is then unavailable with that reason: new
//! containers are refused with FailedPrecondition, existing ones are still supervised.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{CrunConfig, HybridCgroups};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Where hybrid hosts mount cgroup2, and where crun looks for it.
const HYBRID_CGROUP2: &str = "/sys/fs/cgroup/unified";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The cgroup layout as crun classifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum CgroupLayout {
    /// cgroup2 at /sys/fs/cgroup (Proxmox VE 7+).
    Unified,
    /// cgroup v1 hierarchies only.
    Legacy,
    /// v1 hierarchies plus cgroup2 at /sys/fs/cgroup/unified, whose `cgroup.controllers`
    /// lists these controllers.
    Hybrid { cgroup2_controllers: Vec<String> },
}

impl CgroupLayout {
    /// Reads the layout the way crun does: the file system type of /sys/fs/cgroup, then of
    /// /sys/fs/cgroup/unified, then that hierarchy's `cgroup.controllers`.
    // `f_type` is an i64 here, but a u32 or i32 on other targets.
    #[allow(clippy::unnecessary_cast)]
    pub fn detect() -> CgroupLayout {
        let fs_type = |p: &str| {
            nix::sys::statfs::statfs(p)
                .ok()
                .map(|s| s.filesystem_type().0 as i64)
        };
        let controllers =
            std::fs::read_to_string(Path::new(HYBRID_CGROUP2).join("cgroup.controllers"))
                .unwrap_or_default();
        CgroupLayout::classify(fs_type(CGROUP_ROOT), fs_type(HYBRID_CGROUP2), &controllers)
    }

    fn classify(root: Option<i64>, unified: Option<i64>, controllers: &str) -> CgroupLayout {
        match (root, unified) {
            (Some(CGROUP2_SUPER_MAGIC), _) => CgroupLayout::Unified,
            (Some(TMPFS_MAGIC), Some(CGROUP2_SUPER_MAGIC)) => CgroupLayout::Hybrid {
                cgroup2_controllers: controllers.split_whitespace().map(str::to_owned).collect(),
            },
            _ => CgroupLayout::Legacy,
        }
    }

    /// Why crun refuses this layout, if it does.
    pub fn crun_refusal(&self) -> Option<String> {
        match self {
            CgroupLayout::Hybrid { cgroup2_controllers } if !cgroup2_controllers.is_empty() => Some(format!(
                "this host has hybrid cgroups and the cgroup2 hierarchy at {HYBRID_CGROUP2} still has controllers \
                 (cgroup.controllers: {:?}), which crun refuses: \"cgroups in hybrid mode not supported, drop all \
                 controllers from cgroupv2\"; mount those controllers as cgroup v1 hierarchies, or set [crun] \
                 hybrid_cgroups = \"v1-view\"",
                cgroup2_controllers.join(" ")
            )),
            _ => None,
        }
    }
}

/// What the startup probe found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrunProbe {
    /// The binary, resolved to an absolute path.
    pub binary: Option<PathBuf>,
    /// The first line of `crun --version`.
    pub version: Option<String>,
    pub cgroups: CgroupLayout,
    /// Every crun command runs in a private cgroup v1 view (the layout needs it and the
    /// config allows it).
    pub v1_view: bool,
    /// Why the backend cannot create containers here.
    pub unavailable: Option<String>,
}

impl CrunProbe {
    /// A probe that found crun unusable for `reason` (a config that disables it, tests).
    pub fn unavailable(reason: &str) -> CrunProbe {
        CrunProbe {
            binary: None,
            version: None,
            cgroups: CgroupLayout::Legacy,
            v1_view: false,
            unavailable: Some(reason.to_owned()),
        }
    }

    /// Finds the binary, runs `crun --version` and checks the cgroup layout.
    pub fn run(config: &CrunConfig) -> CrunProbe {
        CrunProbe::with_layout(config, CgroupLayout::detect())
    }

    fn with_layout(config: &CrunConfig, cgroups: CgroupLayout) -> CrunProbe {
        let mut probe = CrunProbe {
            binary: None,
            version: None,
            cgroups,
            v1_view: false,
            unavailable: None,
        };
        let binary = match resolve_binary(&config.path) {
            Ok(b) => b,
            Err(reason) => {
                probe.unavailable = Some(reason);
                return probe;
            }
        };
        match version_of(&binary) {
            Ok(v) => probe.version = Some(v),
            Err(reason) => probe.unavailable = Some(reason),
        }
        probe.binary = Some(binary);
        if probe.unavailable.is_none() {
            if let Some(refusal) = probe.cgroups.crun_refusal() {
                match config.hybrid_cgroups {
                    HybridCgroups::Refuse => probe.unavailable = Some(refusal),
                    HybridCgroups::V1View => probe.v1_view = true,
                }
            }
        }
        probe
    }
}

/// `path` as given when it has a slash, else the first executable `path` in `$PATH`.
fn resolve_binary(path: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if path.contains('/') {
        let p = std::fs::canonicalize(path).map_err(|e| format!("crun binary {path}: {e}"))?;
        return match executable(&p) {
            true => Ok(p),
            false => Err(format!("crun binary {path} is not an executable file")),
        };
    }
    let search =
        std::env::var("PATH").unwrap_or_else(|_| crate::spec::process::DEFAULT_PATH.into());
    search
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(path))
        .find(|p| executable(p))
        .ok_or_else(|| format!("crun binary {path:?} not found in PATH ({search}); install crun or set [crun] path"))
}

fn version_of(binary: &Path) -> Result<String, String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("run {} --version: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), text.lines().next()) {
        (true, Some(first)) => Ok(first.trim().to_owned()),
        _ => Err(format!(
            "{} --version failed ({}): {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crun_config(path: &str, hybrid: HybridCgroups) -> CrunConfig {
        CrunConfig {
            path: path.into(),
            hybrid_cgroups: hybrid,
        }
    }

    #[test]
    fn layouts_are_classified_like_crun_does() {
        assert_eq!(
            CgroupLayout::classify(Some(CGROUP2_SUPER_MAGIC), None, ""),
            CgroupLayout::Unified
        );
        assert_eq!(
            CgroupLayout::classify(Some(TMPFS_MAGIC), None, ""),
            CgroupLayout::Legacy
        );
        let hybrid =
            CgroupLayout::classify(Some(TMPFS_MAGIC), Some(CGROUP2_SUPER_MAGIC), "hugetlb\n");
        assert_eq!(
            hybrid,
            CgroupLayout::Hybrid {
                cgroup2_controllers: vec!["hugetlb".into()]
            }
        );
        let reason = hybrid.crun_refusal().unwrap();
        assert!(
            reason.contains("cgroup.controllers: \"hugetlb\""),
            "{reason}"
        );
        assert!(reason.contains("hybrid_cgroups = \"v1-view\""), "{reason}");
        // A hybrid host with an empty cgroup2 hierarchy is fine for crun.
        let empty = CgroupLayout::classify(Some(TMPFS_MAGIC), Some(CGROUP2_SUPER_MAGIC), "\n");
        assert_eq!(empty.crun_refusal(), None);
        assert_eq!(CgroupLayout::Unified.crun_refusal(), None);
    }

    #[test]
    fn the_probe_refuses_or_works_around_a_hybrid_host_as_configured() {
        let hybrid = CgroupLayout::Hybrid {
            cgroup2_controllers: vec!["hugetlb".into()],
        };
        // /bin/echo stands in for crun: it answers --version.
        let p = CrunProbe::with_layout(
            &crun_config("/bin/echo", HybridCgroups::Refuse),
            hybrid.clone(),
        );
        assert!(
            p.unavailable
                .as_deref()
                .unwrap_or_default()
                .contains("hybrid"),
            "{p:?}"
        );
        let p = CrunProbe::with_layout(&crun_config("/bin/echo", HybridCgroups::V1View), hybrid);
        assert_eq!(p.unavailable, None);
        assert!(p.v1_view);
        let p = CrunProbe::with_layout(
            &crun_config("/bin/echo", HybridCgroups::V1View),
            CgroupLayout::Unified,
        );
        assert!(!p.v1_view);
    }

    #[test]
    fn a_missing_binary_makes_the_backend_unavailable_with_the_reason() {
        let p = CrunProbe::with_layout(
            &crun_config("crun-that-does-not-exist", HybridCgroups::Refuse),
            CgroupLayout::Unified,
        );
        let reason = p.unavailable.unwrap();
        assert!(
            reason.contains("\"crun-that-does-not-exist\" not found in PATH"),
            "{reason}"
        );
        let p = CrunProbe::with_layout(
            &crun_config("/nonexistent/crun", HybridCgroups::Refuse),
            CgroupLayout::Unified,
        );
        assert!(p.unavailable.unwrap().contains("/nonexistent/crun"));
    }
}
