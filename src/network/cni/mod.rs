//! A small CNI runtime (what libcni does for containerd): config files, running a
//! plugin list for ADD and DEL, the addresses of a result. The plugins themselves are
//! the standard ones (Debian's containernetworking-plugins), executed, never
//! reimplemented.

pub mod config;
pub mod exec;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use config::NetworkList;
pub use exec::{Command, Invocation, PluginError};

/// ADD of every plugin of `list` in order, each given the previous one's result; the
/// last result is returned. On a failure the caller runs [`del`].
pub async fn add(
    list: &NetworkList,
    inv: &Invocation<'_>,
    runtime: &Map<String, Value>,
) -> Result<Value, PluginError> {
    let mut prev: Option<Value> = None;
    for (i, kind) in list.types().into_iter().enumerate() {
        let binary = binary(inv.bin_dirs, kind, Command::Add)?;
        let stdin = config::plugin_stdin(list, i, runtime, prev.as_ref());
        let result = exec::run(kind, &binary, inv, &stdin).await?;
        prev = Some(result.ok_or_else(|| PluginError {
            plugin: kind.to_owned(),
            command: "ADD",
            message: "printed no result".into(),
        })?);
    }
    Ok(prev.unwrap_or(Value::Null))
}

/// DEL of every plugin of `list` in reverse order, with `prev_result` (the ADD's
/// result, when there was one and the version passes it). Plugins' DEL is idempotent
/// (spec): running this twice, or after a partial ADD, is fine. Stops at the first
/// failure, as libcni does: the caller retries the whole DEL.
pub async fn del(
    list: &NetworkList,
    inv: &Invocation<'_>,
    runtime: &Map<String, Value>,
    prev_result: Option<&Value>,
) -> Result<(), PluginError> {
    let prev = prev_result.filter(|_| list.del_has_prev_result());
    for (i, kind) in list.types().into_iter().enumerate().rev() {
        let binary = binary(inv.bin_dirs, kind, Command::Del)?;
        let stdin = config::plugin_stdin(list, i, runtime, prev);
        exec::run(kind, &binary, inv, &stdin).await?;
    }
    Ok(())
}

fn binary(bin_dirs: &[PathBuf], kind: &str, command: Command) -> Result<PathBuf, PluginError> {
    config::find_plugin(bin_dirs, kind).ok_or_else(|| PluginError {
        plugin: kind.to_owned(),
        command: match command {
            Command::Add => "ADD",
            Command::Del => "DEL",
        },
        message: format!(
            "not found in {}",
            bin_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The pod's addresses in a result (0.3.0 and later: `ips[].address` as CIDR): those on
/// the pod's interface `ifname` inside the sandbox when the result says which interface
/// an address is on (as containerd picks eth0's), never loopback ones (the loopback
/// plugin reports 127.0.0.1), IPv4 first (kubelet takes the first as the pod's primary
/// IP), duplicates dropped.
pub fn pod_ips(result: &Value, ifname: &str) -> Vec<IpAddr> {
    let interfaces = result
        .get("interfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let in_sandbox = |idx: Option<u64>| match idx {
        None => true,
        Some(i) => interfaces.get(i as usize).is_some_and(|iface| {
            iface.get("name").and_then(Value::as_str) == Some(ifname)
                && iface
                    .get("sandbox")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
        }),
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for ip in result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(addr) = ip.get("address").and_then(Value::as_str) else {
            continue;
        };
        let Ok(addr) = addr.split('/').next().unwrap_or("").parse::<IpAddr>() else {
            continue;
        };
        if in_sandbox(ip.get("interface").and_then(Value::as_u64))
            && !addr.is_loopback()
            && !ips.contains(&addr)
        {
            ips.push(addr);
        }
    }
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips
}

/// The netns to hand DEL: the file when it is still a namespace, else empty (the pod's
/// namespace is gone: plugins then release what they hold outside it, as with
/// containerd).
pub fn netns_for_del(netns: Option<&Path>) -> PathBuf {
    match netns {
        Some(p) if is_netns(p) => p.to_owned(),
        _ => PathBuf::new(),
    }
}

/// Whether `path` is a namespace file (nsfs), not an unmounted placeholder.
fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_from_a_bridge_result() {
        let result = serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa"},
                {"name": "veth1", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/run/proxrt/s/x/ns/net"}
            ],
            "ips": [
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.22.0.5/16", "gateway": "10.22.0.1", "interface": 2},
                {"address": "10.22.0.1/16", "interface": 0}
            ]
        });
        let ips: Vec<String> = pod_ips(&result, "eth0")
            .iter()
            .map(|i| i.to_string())
            .collect();
        assert_eq!(ips, ["10.22.0.5", "fd00::5"]);
        assert!(pod_ips(&serde_json::json!({}), "eth0").is_empty());
        let no_iface = serde_json::json!({"ips": [{"address": "10.0.0.2/24"}]});
        assert_eq!(pod_ips(&no_iface, "eth0").len(), 1);
        let lo = serde_json::json!({
            "interfaces": [{"name": "lo", "sandbox": "/x"}],
            "ips": [{"address": "127.0.0.1/8", "interface": 0}, {"address": "::1/128"}]
        });
        assert!(pod_ips(&lo, "eth0").is_empty());
    }

    #[test]
    fn del_gets_an_empty_netns_when_the_namespace_is_gone() {
        assert_eq!(netns_for_del(None), PathBuf::new());
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("net");
        std::fs::write(&plain, "").unwrap();
        assert_eq!(netns_for_del(Some(&plain)), PathBuf::new());
        let own = Path::new("/proc/self/ns/net");
        assert_eq!(netns_for_del(Some(own)), own);
    }
}
