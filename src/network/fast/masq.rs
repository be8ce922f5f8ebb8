//! The bridge plugin's `ipMasq` rules (containernetworking-plugins 1.1, `SetupIPMasq`),
//! written in one `iptables-restore --noflush` instead of the plugin's nine `iptables`
//! runs: in the nat table a chain of the pod's own, `CNI-` + the first 24 hex digits of
//! sha512(network name + container id), accepting traffic to the pod's subnet and
//! masquerading the rest but multicast, and a POSTROUTING jump to it for the pod's
//! address — each rule with the plugin's comment, so the plugin's DEL finds and removes
//! them. Same `iptables` backend (the `iptables-restore` of the same alternative).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use sha2::{Digest, Sha512};

/// `utils.FormatChainName`: 28 characters.
pub fn chain_name(network: &str, id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{id}").as_bytes());
    let mut name = format!("CNI-{}", hex::encode(digest));
    name.truncate(28);
    name
}

/// `utils.FormatComment` (Go's `%q`; the fast path only takes names and ids that need
/// no escaping).
pub fn comment(network: &str, id: &str) -> String {
    format!("name: \"{network}\" id: \"{id}\"")
}

/// The comment as one word of the restore format: quoted, its quotes escaped.
fn quoted_comment(network: &str, id: &str) -> String {
    format!("\"{}\"", comment(network, id).replace('"', "\\\""))
}

/// What `iptables-restore --noflush` reads: the chain declared (made) and its two rules,
/// then the POSTROUTING jump, in the plugin's order.
pub fn restore_input(
    network: &str,
    id: &str,
    ip: Ipv4Addr,
    subnet: Ipv4Addr,
    prefix: u8,
) -> String {
    let (chain, quoted) = (chain_name(network, id), quoted_comment(network, id));
    format!(
        "*nat\n:{chain} - [0:0]\n\
         -A {chain} -d {subnet}/{prefix} -m comment --comment {quoted} -j ACCEPT\n\
         -A {chain} ! -d 224.0.0.0/4 -m comment --comment {quoted} -j MASQUERADE\n\
         -A POSTROUTING -s {ip}/32 -m comment --comment {quoted} -j {chain}\n\
         COMMIT\n"
    )
}

/// What DEL's `iptables-restore --noflush` reads: the POSTROUTING jump, the chain's rules
/// and the chain removed — all or nothing, so a pod whose rules are not as ADD left
/// them (one of them gone already) changes nothing and goes to the plugin's DEL, which
/// tolerates every partial state.
pub fn teardown_input(network: &str, id: &str, ip: Ipv4Addr) -> String {
    let (chain, quoted) = (chain_name(network, id), quoted_comment(network, id));
    format!(
        "*nat\n\
         -D POSTROUTING -s {ip}/32 -m comment --comment {quoted} -j {chain}\n\
         -F {chain}\n\
         -X {chain}\n\
         COMMIT\n"
    )
}

/// The plugin's `TeardownIPMasq` step by step, for rules not as ADD left them: the
/// POSTROUTING jump deleted (and the jump older plugins wrote with the pod's subnet),
/// each where it exists; the chain made if missing, flushed and removed.
pub fn teardown_each(network: &str, id: &str, ip: Ipv4Addr, prefix: u8) -> Result<(), String> {
    let (chain, quoted) = (chain_name(network, id), quoted_comment(network, id));
    let subnet =
        Ipv4Addr::from(u32::from(ip) & (u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)));
    for source in [format!("{ip}/32"), format!("{subnet}/{prefix}")] {
        // "No such rule": nothing to delete.
        let _ = apply(&format!(
            "*nat\n-D POSTROUTING -s {source} -m comment --comment {quoted} -j {chain}\nCOMMIT\n"
        ));
    }
    apply(&format!("*nat\n:{chain} - [0:0]\n-X {chain}\nCOMMIT\n"))
}

/// Runs `iptables-restore --noflush` with `input`, in the calling thread's network
/// namespace (a child inherits the thread's). It waits for the xtables lock (the legacy
/// backend's) as long as a plugin may run, then fails.
pub fn apply(input: &str) -> Result<(), String> {
    let wait = format!(
        "--wait={}",
        crate::network::cni::exec::PLUGIN_TIMEOUT.as_secs()
    );
    let mut cmd = Command::new("iptables-restore");
    cmd.args(["--noflush", &wait])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", crate::network::cni::exec::FALLBACK_PATH);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("run iptables-restore: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for iptables-restore: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables-restore: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_rules_as_the_plugin_names_them() {
        // Observed from bridge 1.1.1 (network "fpnet", container "abc123").
        assert_eq!(
            chain_name("fpnet", "abc123"),
            "CNI-49ad08d6849554b6c6a143d9"
        );
        let input = restore_input(
            "fpnet",
            "abc123",
            Ipv4Addr::new(10, 77, 0, 2),
            Ipv4Addr::new(10, 77, 0, 0),
            24,
        );
        assert_eq!(
            input,
            "*nat\n:CNI-49ad08d6849554b6c6a143d9 - [0:0]\n\
             -A CNI-49ad08d6849554b6c6a143d9 -d 10.77.0.0/24 -m comment --comment \"name: \\\"fpnet\\\" id: \\\"abc123\\\"\" -j ACCEPT\n\
             -A CNI-49ad08d6849554b6c6a143d9 ! -d 224.0.0.0/4 -m comment --comment \"name: \\\"fpnet\\\" id: \\\"abc123\\\"\" -j MASQUERADE\n\
             -A POSTROUTING -s 10.77.0.2/32 -m comment --comment \"name: \\\"fpnet\\\" id: \\\"abc123\\\"\" -j CNI-49ad08d6849554b6c6a143d9\n\
             COMMIT\n"
        );
        assert_eq!(
            teardown_input("fpnet", "abc123", Ipv4Addr::new(10, 77, 0, 2)),
            "*nat\n\
             -D POSTROUTING -s 10.77.0.2/32 -m comment --comment \"name: \\\"fpnet\\\" id: \\\"abc123\\\"\" -j CNI-49ad08d6849554b6c6a143d9\n\
             -F CNI-49ad08d6849554b6c6a143d9\n\
             -X CNI-49ad08d6849554b6c6a143d9\n\
             COMMIT\n"
        );
    }
}
