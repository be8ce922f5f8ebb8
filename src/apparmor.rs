//! AppArmor on this host: whether it enforces, the RuntimeDefault profile proxrt loads,
//! and which profiles are loaded.
//!
//! Proxmox VE hosts run AppArmor (their LXC guests use it). There, a container without a
//! profile of its own, or asking for RuntimeDefault, gets `proxrt-default` (loaded with
//! `apparmor_parser` at daemon start when absent), and `localhost/<name>` must name a
//! loaded profile. On a host without AppArmor every profile request is accepted and none
//! is applied; `proxrt info` (the CRI Status's verbose info) says so and why.
//!
//! The probe and the decisions are pure over a sysfs root so they can be tested anywhere;
//! only [`ensure_default`] runs a program.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The RuntimeDefault profile's name.
pub const DEFAULT_PROFILE: &str = "proxrt-default";

/// What this host does with AppArmor, read once at daemon start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppArmorHost {
    /// Not enforced here: requests are accepted and not applied.
    Disabled { reason: String },
    /// Enforced. `default` is the RuntimeDefault profile's name, or why it could not be
    /// loaded (then containers that would get it are refused rather than run unconfined).
    Enabled { default: Result<String, String> },
}

impl Default for AppArmorHost {
    fn default() -> Self {
        AppArmorHost::Disabled {
            reason: "not probed".into(),
        }
    }
}

impl AppArmorHost {
    /// For `proxrt info`: one line.
    pub fn describe(&self) -> String {
        match self {
            AppArmorHost::Disabled { reason } => {
                format!("disabled: {reason}; profiles are accepted and not applied")
            }
            AppArmorHost::Enabled { default: Ok(name) } => {
                format!("enabled; RuntimeDefault is {name}")
            }
            AppArmorHost::Enabled { default: Err(e) } => format!(
                "enabled; the RuntimeDefault profile could not be loaded ({e}): containers \
                 that need it are refused"
            ),
        }
    }
}

/// Whether AppArmor enforces on the host whose sysfs is at `sys` (`/sys`).
pub fn probe(sys: &Path) -> Result<(), String> {
    let enabled = sys.join("module/apparmor/parameters/enabled");
    match std::fs::read_to_string(&enabled) {
        Err(_) => Err(format!(
            "the kernel has no AppArmor ({} is missing)",
            enabled.display()
        )),
        Ok(v) if v.trim() != "Y" => Err(format!(
            "AppArmor is off in the kernel ({} is {:?})",
            enabled.display(),
            v.trim()
        )),
        Ok(_) => {
            let profiles = profiles_file(sys);
            if profiles.exists() {
                Ok(())
            } else {
                Err(format!(
                    "securityfs is not mounted ({} is missing)",
                    profiles.display()
                ))
            }
        }
    }
}

fn profiles_file(sys: &Path) -> std::path::PathBuf {
    sys.join("kernel/security/apparmor/profiles")
}

/// The names of the loaded profiles: each line of the profiles file is `NAME (MODE)`.
pub fn parse_profiles(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_end();
            let name = match l.rfind(" (") {
                Some(i) if l.ends_with(')') => &l[..i],
                _ => l,
            };
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// Whether `name` is loaded on the host whose sysfs is at `sys`.
pub fn is_loaded(sys: &Path, name: &str) -> Result<bool, String> {
    let path = profiles_file(sys);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(parse_profiles(&text).contains(name))
}

/// The RuntimeDefault profile: everything a container normally does (files, network,
/// capabilities its spec grants), minus what lets it reach around its namespaces —
/// mounting, writing kernel tunables and most of /proc and /sys, the kernel's memory and
/// keys, the security filesystem — and ptrace or signals only among processes under this
/// same profile (and from unconfined host processes).
pub fn default_profile_text(name: &str) -> String {
    format!(
        r#"# Written by proxrt: the profile of containers that ask for RuntimeDefault.
#include <tunables/global>

profile {name} flags=(attach_disconnected,mediate_deleted) {{
  #include <abstractions/base>

  file,
  network,
  capability,
  umount,

  # Signals and tracing stay among this profile's processes; the host may signal them.
  signal (send,receive) peer={name},
  signal (receive) peer=unconfined,
  ptrace (trace,read,tracedby,readby) peer={name},

  # No new mounts: the runtime made every mount the container has.
  deny mount,
  deny pivot_root,

  # /proc: the process's own entries stay writable; the kernel's do not.
  deny @{{PROC}}/* w,
  deny @{{PROC}}/sys/[^k]** w,
  deny @{{PROC}}/sys/kernel/{{?,??,[^s][^h][^m]**}} w,
  deny @{{PROC}}/sysrq-trigger rwklx,
  deny @{{PROC}}/kcore rwklx,
  deny @{{PROC}}/kmem rwklx,
  deny @{{PROC}}/mem rwklx,

  # /sys: only the container's own cgroup files may be written.
  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
}}
"#
    )
}

/// Loads the RuntimeDefault profile unless it is already loaded; its name, or why not.
pub fn ensure_default(sys: &Path) -> Result<String, String> {
    if is_loaded(sys, DEFAULT_PROFILE)? {
        return Ok(DEFAULT_PROFILE.to_string());
    }
    let mut child = Command::new("apparmor_parser")
        // -K: no cache file; -r: replace (or add) the profile.
        .args(["-K", "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run apparmor_parser: {e} (install Debian's apparmor package)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(default_profile_text(DEFAULT_PROFILE).as_bytes())
            .map_err(|e| format!("write the profile to apparmor_parser: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for apparmor_parser: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "apparmor_parser {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(DEFAULT_PROFILE.to_string())
}

/// Probes the host at `sys` and, where AppArmor enforces, makes sure the RuntimeDefault
/// profile is loaded.
pub fn host(sys: &Path) -> AppArmorHost {
    match probe(sys) {
        Err(reason) => AppArmorHost::Disabled { reason },
        Ok(()) => AppArmorHost::Enabled {
            default: ensure_default(sys),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysfs(enabled: Option<&str>, profiles: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(v) = enabled {
            let p = dir.path().join("module/apparmor/parameters");
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("enabled"), v).unwrap();
        }
        if let Some(text) = profiles {
            let p = dir.path().join("kernel/security/apparmor");
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("profiles"), text).unwrap();
        }
        dir
    }

    #[test]
    fn the_probe_says_why_apparmor_is_not_there() {
        let none = sysfs(None, None);
        let e = probe(none.path()).unwrap_err();
        assert!(e.contains("the kernel has no AppArmor"), "{e}");
        let off = sysfs(Some("N\n"), Some(""));
        let e = probe(off.path()).unwrap_err();
        assert!(
            e.contains("off in the kernel") && e.contains("\"N\""),
            "{e}"
        );
        let no_securityfs = sysfs(Some("Y\n"), None);
        let e = probe(no_securityfs.path()).unwrap_err();
        assert!(e.contains("securityfs is not mounted"), "{e}");
        let on = sysfs(Some("Y\n"), Some(""));
        assert_eq!(probe(on.path()), Ok(()));
    }

    #[test]
    fn loaded_profiles_are_read_by_name() {
        let text = "proxrt-default (enforce)\nlxc-container-default-cgns (enforce)\n\
                    /usr/bin/man (complain)\nk8s nginx (enforce)\n";
        let names = parse_profiles(text);
        assert!(names.contains("proxrt-default"));
        assert!(names.contains("/usr/bin/man"));
        assert!(
            names.contains("k8s nginx"),
            "a name may hold a space: {names:?}"
        );
        assert!(!names.contains("enforce"));
        let dir = sysfs(Some("Y"), Some(text));
        assert_eq!(
            is_loaded(dir.path(), "lxc-container-default-cgns"),
            Ok(true)
        );
        assert_eq!(is_loaded(dir.path(), "missing"), Ok(false));
    }

    #[test]
    fn an_already_loaded_default_is_used_without_running_the_parser() {
        let dir = sysfs(Some("Y"), Some("proxrt-default (enforce)\n"));
        assert_eq!(
            host(dir.path()),
            AppArmorHost::Enabled {
                default: Ok(DEFAULT_PROFILE.to_string())
            }
        );
        let off = sysfs(Some("N"), None);
        assert!(matches!(host(off.path()), AppArmorHost::Disabled { .. }));
    }

    #[test]
    fn the_default_profile_names_itself_and_denies_mounts_and_kernel_writes() {
        let text = default_profile_text("p1");
        assert!(text.contains("profile p1 flags=(attach_disconnected,mediate_deleted) {"));
        assert!(text.contains("#include <tunables/global>"));
        assert!(text.contains("peer=p1,"));
        for rule in [
            "deny mount,",
            "deny @{PROC}/sysrq-trigger rwklx,",
            "deny /sys/kernel/security/** rwklx,",
        ] {
            assert!(text.contains(rule), "{rule} missing:\n{text}");
        }
        // Balanced braces: the format! escapes came out right.
        let open = text.matches('{').count();
        assert_eq!(open, text.matches('}').count(), "{text}");
    }

    #[test]
    fn describe_says_what_happens_to_profiles() {
        let off = AppArmorHost::Disabled {
            reason: "the kernel has no AppArmor".into(),
        };
        assert!(off.describe().contains("accepted and not applied"));
        let broken = AppArmorHost::Enabled {
            default: Err("apparmor_parser: not found".into()),
        };
        assert!(broken.describe().contains("refused"));
    }
}
