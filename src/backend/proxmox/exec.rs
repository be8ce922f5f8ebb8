//! ExecSync in a guest: `pct exec <vmid> -- <cmd…>` on the node (the PVE API has no exec
//! for LXC guests; `pct` is the node's own tool). proxrt must then run on the node the
//! guests live on (`[proxmox] node`); `pct_path` may name a wrapper (ssh to the node, or a
//! test stand-in).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::monitor::ExecSyncResult;

/// Runs the command with `timeout` (None: no deadline), keeping at most `max_output`
/// bytes of each stream (the rest is read and dropped, so the process never blocks on a
/// full pipe). At the deadline `pct` is killed: the result says so with exit code 137.
pub async fn pct_exec(
    pct: &Path,
    vmid: u32,
    args: &[String],
    timeout: Option<Duration>,
    max_output: usize,
) -> std::io::Result<ExecSyncResult> {
    let mut child = tokio::process::Command::new(pct)
        .arg("exec")
        .arg(vmid.to_string())
        .arg("--")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("run {}: {e}", pct.display())))?;
    let stdout = capped(child.stdout.take(), max_output);
    let stderr = capped(child.stderr.take(), max_output);
    let run = async {
        let (out, err, status) = tokio::join!(stdout, stderr, child.wait());
        Ok::<_, std::io::Error>((out, err, status?))
    };
    let finished = match timeout {
        Some(t) => tokio::time::timeout(t, run).await.ok(),
        None => Some(run.await),
    };
    match finished {
        Some(r) => {
            let (stdout, stderr, status) = r?;
            use std::os::unix::process::ExitStatusExt;
            let exit_code = status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(255);
            Ok(ExecSyncResult {
                exit_code,
                stdout,
                stderr,
                timed_out: false,
            })
        }
        None => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Ok(ExecSyncResult {
                exit_code: 128 + libc::SIGKILL,
                stdout: Vec::new(),
                stderr: Vec::new(),
                timed_out: true,
            })
        }
    }
}

async fn capped(stream: Option<impl AsyncRead + Unpin>, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(mut s) = stream else {
        return out;
    };
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = max.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}
