//! Running one plugin the way the CNI spec (1.0.0, "Execution protocol") says: the
//! parameters in `CNI_*` environment variables, the config on stdin, the result or a
//! JSON error `{code, msg, details}` on stdout, success by exit status 0.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// A plugin that has not finished after this long is killed (a hung iptables lock,
/// a DHCP plugin waiting forever); the pod operation fails with what it said.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Where stdout/stderr of a failing plugin are cut when quoted in an error.
const QUOTE_MAX: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
}

impl Command {
    fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
        }
    }
}

/// The parameters of one call, the same for every plugin of a list.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub command: Command,
    pub container_id: &'a str,
    /// The netns file; empty for a DEL whose namespace is gone.
    pub netns: &'a Path,
    pub ifname: &'a str,
    /// `CNI_ARGS`: `K=V;K=V`.
    pub args: &'a str,
    pub bin_dirs: &'a [PathBuf],
}

/// What a failing plugin said.
#[derive(Debug, thiserror::Error)]
#[error("CNI plugin {plugin} {command} failed: {message}")]
pub struct PluginError {
    pub plugin: String,
    pub command: &'static str,
    pub message: String,
}

/// `PATH` for what runs iptables when the daemon was started without one.
pub const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `binary` (plugin type `plugin`) with `stdin`; returns its result (ADD), or
/// `None` when it printed nothing (DEL).
pub async fn run(
    plugin: &str,
    binary: &Path,
    inv: &Invocation<'_>,
    stdin: &Value,
) -> Result<Option<Value>, PluginError> {
    let fail = |message: String| PluginError {
        plugin: plugin.to_owned(),
        command: inv.command.name(),
        message,
    };
    let cni_path =
        std::env::join_paths(inv.bin_dirs).map_err(|e| fail(format!("bin dirs: {e}")))?;
    let mut cmd = tokio::process::Command::new(binary);
    cmd.env("CNI_COMMAND", inv.command.name())
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // bridge, portmap and firewall run iptables: a daemon started with a bare
    // environment still finds it.
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", FALLBACK_PATH);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("run {}: {e}", binary.display())))?;
    let input = serde_json::to_vec(stdin).map_err(|e| fail(format!("encode config: {e}")))?;
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin may exit without reading its config (it failed early): that is its
        // exit status's to tell, not a broken pipe's.
        let _ = pipe.write_all(&input).await;
    }
    let output = match tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(fail(format!("wait: {e}"))),
        Err(_) => {
            return Err(fail(format!(
                "did not finish within {}s (killed)",
                PLUGIN_TIMEOUT.as_secs()
            )))
        }
    };
    if !output.status.success() {
        return Err(fail(error_message(
            &output.stdout,
            &output.stderr,
            output.status,
        )));
    }
    let out = String::from_utf8_lossy(&output.stdout);
    if out.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&out)
        .map(Some)
        .map_err(|e| fail(format!("result is not JSON ({e}): {}", quote(&out))))
}

/// The spec's error object when the plugin printed one, else its stderr, else the exit.
fn error_message(stdout: &[u8], stderr: &[u8], status: std::process::ExitStatus) -> String {
    if let Ok(Value::Object(e)) = serde_json::from_slice::<Value>(stdout) {
        let msg = e.get("msg").and_then(Value::as_str).unwrap_or("");
        let details = e.get("details").and_then(Value::as_str).unwrap_or("");
        let code = e.get("code").and_then(Value::as_u64);
        if !msg.is_empty() || !details.is_empty() {
            let mut s = msg.to_owned();
            if !details.is_empty() {
                s.push_str(&format!(" ({details})"));
            }
            if let Some(code) = code {
                s.push_str(&format!(" [code {code}]"));
            }
            return s;
        }
    }
    let err = String::from_utf8_lossy(stderr);
    let out = String::from_utf8_lossy(stdout);
    let text = if !err.trim().is_empty() { err } else { out };
    if text.trim().is_empty() {
        format!("{status}")
    } else {
        format!("{status}: {}", quote(text.trim()))
    }
}

fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn error_messages_prefer_the_spec_object() {
        let status = std::process::ExitStatus::from_raw(1 << 8);
        let spec = br#"{"code":11,"msg":"failed to allocate","details":"range full"}"#;
        assert_eq!(
            error_message(spec, b"noise", status),
            "failed to allocate (range full) [code 11]"
        );
        assert!(error_message(b"", b"boom\n", status).ends_with(": boom"));
        assert!(error_message(b"", b"", status).contains("exit status: 1"));
    }
}
