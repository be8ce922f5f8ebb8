//! `proxrt exec -i/-t`, `proxrt attach` and `proxrt port-forward`: CRI Exec, Attach or
//! PortForward, then the returned URL over WebSocket (`v5.channel.k8s.io`, kubelet's v4
//! WebSocket port-forward). Works against any runtime whose streaming server speaks
//! WebSocket.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;

use futures_util::{SinkExt, StreamExt};
use k8s_cri::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::{ClientError, Cri};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Connects to a streaming URL with `protocol`.
async fn connect(
    url: &str,
    protocol: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, ClientError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        ClientError::Usage(format!("streaming URL {url}: {what}: {e}"))
    };
    let ws_url = url
        .strip_prefix("http://")
        .map(|rest| format!("ws://{rest}"))
        .ok_or_else(|| fail("only http:// URLs are supported", &"no TLS client"))?;
    let mut req = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| fail("bad URL", &e))?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        http::HeaderValue::from_str(protocol).map_err(|e| fail("protocol", &e))?,
    );
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .ok_or_else(|| fail("no host", &"URL"))?;
    let tcp = TcpStream::connect(&host)
        .await
        .map_err(|e| fail("connect", &e))?;
    let _ = tcp.set_nodelay(true);
    let (ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .map_err(|e| fail("upgrade", &e))?;
    Ok(ws)
}

/// The local terminal in raw mode until dropped.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = nix::sys::termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(stdin.as_fd(), nix::sys::termios::SetArg::TCSANOW, &raw)
            .ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin().as_fd(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// The local terminal's size as a resize message.
fn resize_message() -> Option<Message> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize.
    if unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } != 0 {
        return None;
    }
    let json = serde_json::json!({"Width": ws.ws_col, "Height": ws.ws_row});
    let mut v = vec![RESIZE];
    v.extend_from_slice(json.to_string().as_bytes());
    Some(Message::Binary(v.into()))
}

/// The exit code a remotecommand Status carries; a failure without one is an error.
fn exit_code_of(status: &[u8]) -> Result<i32, ClientError> {
    if status.is_empty() {
        return Ok(0);
    }
    let v: serde_json::Value = serde_json::from_slice(status).map_err(|_| {
        ClientError::Usage(format!("exec: {}", String::from_utf8_lossy(status).trim()))
    })?;
    if v["status"] == "Success" {
        return Ok(0);
    }
    if v["reason"] == "NonZeroExitCode" {
        if let Some(code) = v["details"]["causes"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse().ok())
        {
            return Ok(code);
        }
    }
    Err(ClientError::Usage(format!(
        "exec: {}",
        v["message"].as_str().unwrap_or("failed")
    )))
}

/// `proxrt exec -i/-t ID -- CMD`: a streaming exec; returns the command's exit code.
pub async fn exec_stream(
    cri: &mut Cri,
    id: &str,
    cmd: &[String],
    stdin: bool,
    tty: bool,
) -> Result<i32, ClientError> {
    if cmd.is_empty() {
        return Err(ClientError::Usage("exec: give the command after --".into()));
    }
    let tty = tty && std::io::stdin().is_terminal();
    let url = cri
        .runtime
        .exec(ExecRequest {
            container_id: id.to_owned(),
            cmd: cmd.to_vec(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await
        .map_err(|s| ClientError::rpc("Exec", s))?
        .into_inner()
        .url;
    remote_command(&url, stdin, tty).await
}

/// `proxrt attach [-i] [-t] ID`: joins a running container's stdio (CRI Attach) until
/// the container exits or, without `stdin_once`, until this side's stdin ends. `-t` is
/// for containers made with `tty: true`: the terminal goes raw and its size follows.
/// Returns 0 when the session ends normally (the container's exit code is in `ps`).
pub async fn attach(cri: &mut Cri, id: &str, stdin: bool, tty: bool) -> Result<i32, ClientError> {
    let tty = tty && std::io::stdin().is_terminal();
    let url = cri
        .runtime
        .attach(AttachRequest {
            container_id: id.to_owned(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await
        .map_err(|s| ClientError::rpc("Attach", s))?
        .into_inner()
        .url;
    remote_command(&url, stdin, tty).await
}

/// One remotecommand session over WebSocket v5 on `url` (from Exec or Attach): local
/// stdin (if `stdin`) and terminal resizes (if `tty`) up, stdout/stderr down; the
/// session's Status gives the exit code.
async fn remote_command(url: &str, stdin: bool, tty: bool) -> Result<i32, ClientError> {
    let ws = connect(url, "v5.channel.k8s.io").await?;
    let (mut sink, mut incoming) = ws.split();
    let _raw = if tty { RawMode::enter() } else { None };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(16);
    if tty {
        if let Some(m) = resize_message() {
            let _ = tx.send(m).await;
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some(m) = resize_message() {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    if stdin {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 8192];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut v = vec![STDIN];
                        v.extend_from_slice(&buf[..n]);
                        if tx.send(Message::Binary(v.into())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Message::Binary(vec![CLOSE, STDIN].into())).await;
        });
    }
    drop(tx);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
    });
    let mut status = Vec::new();
    let mut stdout = tokio::io::stdout();
    while let Some(msg) = incoming.next().await {
        let data = match msg {
            Ok(Message::Binary(d)) => d,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let Some((&channel, body)) = data.split_first() else {
            continue;
        };
        match channel {
            STDOUT => {
                let _ = stdout.write_all(body).await;
                let _ = stdout.flush().await;
            }
            STDERR => {
                let _ = std::io::stderr().write_all(body);
            }
            ERROR => status.extend_from_slice(body),
            _ => {}
        }
    }
    writer.abort();
    drop(_raw);
    exit_code_of(&status)
}

/// `proxrt port-forward POD LOCAL:REMOTE`: listens on 127.0.0.1:LOCAL; each connection
/// gets its own PortForward URL and WebSocket session to REMOTE in the pod.
pub async fn port_forward(cri: &mut Cri, pod: &str, mapping: &str) -> Result<(), ClientError> {
    let usage = || {
        ClientError::Usage(format!(
            "port-forward: {mapping:?} is not LOCAL:REMOTE (e.g. 8080:80)"
        ))
    };
    let (local, remote) = match mapping.split_once(':') {
        Some((l, r)) => (
            l.parse::<u16>().map_err(|_| usage())?,
            r.parse::<u16>().map_err(|_| usage())?,
        ),
        None => {
            let p = mapping.parse::<u16>().map_err(|_| usage())?;
            (p, p)
        }
    };
    if remote == 0 {
        return Err(usage());
    }
    // Asked once up front: a missing pod fails here, not at the first connection.
    let mut url = Some(port_forward_url(cri, pod, remote).await?);
    let listener = TcpListener::bind(("127.0.0.1", local)).await.map_err(|e| {
        ClientError::Usage(format!("port-forward: listen on 127.0.0.1:{local}: {e}"))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| ClientError::Usage(format!("port-forward: {e}")))?;
    println!("Forwarding from {bound} -> {remote}");
    let _ = std::io::stdout().flush();
    loop {
        let (conn, _) = listener
            .accept()
            .await
            .map_err(|e| ClientError::Usage(format!("port-forward: accept: {e}")))?;
        let url = match url.take() {
            Some(u) => u,
            None => port_forward_url(cri, pod, remote).await?,
        };
        tokio::spawn(async move {
            if let Err(e) = splice(conn, &url, remote).await {
                eprintln!("port-forward: {e}");
            }
        });
    }
}

async fn port_forward_url(cri: &mut Cri, pod: &str, port: u16) -> Result<String, ClientError> {
    Ok(cri
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.to_owned(),
            port: vec![i32::from(port)],
        })
        .await
        .map_err(|s| ClientError::rpc("PortForward", s))?
        .into_inner()
        .url)
}

/// One local connection ⇄ one WebSocket port-forward session.
async fn splice(conn: TcpStream, url: &str, port: u16) -> Result<(), ClientError> {
    let url = format!("{url}?port={port}");
    let ws = connect(&url, "v4.channel.k8s.io").await?;
    let (mut sink, mut incoming) = ws.split();
    let (mut r, mut w) = conn.into_split();
    let up = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut v = vec![0u8];
                    v.extend_from_slice(&buf[..n]);
                    if sink.send(Message::Binary(v.into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    };
    let down = async {
        // The first message on each channel is the port.
        let mut prefixed = [false, false];
        while let Some(Ok(msg)) = incoming.next().await {
            let Message::Binary(data) = msg else {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                continue;
            };
            let Some((&channel, body)) = data.split_first() else {
                continue;
            };
            let ch = usize::from(channel).min(1);
            if !prefixed[ch] {
                prefixed[ch] = true;
                continue;
            }
            if channel == 0 {
                if w.write_all(body).await.is_err() {
                    break;
                }
            } else if !body.is_empty() {
                eprintln!("port-forward: {}", String::from_utf8_lossy(body));
                break;
            }
        }
        let _ = w.shutdown().await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_come_from_the_status() {
        let ok = crate::streaming::session::Outcome::Success.status_json();
        assert_eq!(exit_code_of(&ok).unwrap(), 0);
        let three = crate::streaming::session::Outcome::ExitCode(3).status_json();
        assert_eq!(exit_code_of(&three).unwrap(), 3);
        let failed =
            crate::streaming::session::Outcome::Failure("no such binary".into()).status_json();
        let e = exit_code_of(&failed).unwrap_err().to_string();
        assert!(e.contains("no such binary"), "{e}");
        assert_eq!(exit_code_of(b"").unwrap(), 0);
    }
}
