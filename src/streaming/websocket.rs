//! Kubernetes' channel protocol over WebSocket (apimachinery's `wsstream`): every binary
//! message starts with a channel byte.
//!
//! remotecommand: 0 stdin, 1 stdout, 2 stderr, 3 error (the outcome: a metav1.Status in
//! v4/v5, plain text before), 4 resize (`{"Width":…,"Height":…}`). v5 adds a message
//! `[255, channel]` that closes one stream (the client's stdin EOF).
//!
//! port-forward (kubelet's WebSocket port-forward): the ports are the URL's `port`
//! parameters; port *i* has data channel 2*i* and error channel 2*i*+1, and the first
//! message the server sends on each is the port as a little-endian u16.

use std::future::Future;
use std::io;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::session::{Dialer, Outcome, StdioStreams, StreamOpts, TermSize};
use super::task;

pub(crate) const STDIN: u8 = 0;
pub(crate) const STDOUT: u8 = 1;
pub(crate) const STDERR: u8 = 2;
pub(crate) const ERROR: u8 = 3;
pub(crate) const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` closes that stream.
pub(crate) const CLOSE: u8 = 255;

/// Chunks queued per stream between the connection and the runtime side.
const QUEUE: usize = 16;
/// Largest chunk read from a forwarded port at once.
const CHUNK: usize = 32 * 1024;

/// A resize message's JSON (Go's field names).
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Resize {
    width: u16,
    height: u16,
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

fn ws_err(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    match e {
        tokio_tungstenite::tungstenite::Error::Io(e) => e,
        other => io::Error::other(other),
    }
}

/// Serves one exec or attach session on an upgraded connection; `run` gets the client's
/// streams and its Outcome is sent on the error stream before the connection closes.
pub(crate) async fn serve_remotecommand<IO, F, Fut>(
    io: IO,
    protocol: &str,
    opts: StreamOpts,
    run: F,
) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(StdioStreams) -> Fut + Send + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut incoming) = ws.split();
    let closes_streams = protocol == "v5.channel.k8s.io";
    let status_json = matches!(protocol, "v5.channel.k8s.io" | "v4.channel.k8s.io");

    let (stdin_tx, stdin_rx) = split(opts.stdin.then(|| mpsc::channel::<Bytes>(QUEUE)));
    let (out_tx, out_rx) = split(opts.stdout.then(|| mpsc::channel::<Bytes>(QUEUE)));
    let (err_tx, err_rx) = split((opts.stderr && !opts.tty).then(|| mpsc::channel::<Bytes>(QUEUE)));
    let (resize_tx, resize_rx) = split(opts.tty.then(|| mpsc::channel::<TermSize>(QUEUE)));
    let streams = StdioStreams {
        stdin: stdin_rx,
        stdout: out_tx,
        stderr: err_tx,
        resize: resize_rx,
    };
    let mut session = task::spawn(run(streams));

    // The client's messages: stdin, resizes, v5's stream close. Ends with the connection.
    let reader = task::spawn(async move {
        let mut stdin = stdin_tx;
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
                CLOSE if closes_streams && body.first() == Some(&STDIN) => stdin = None,
                STDIN => {
                    if let Some(tx) = &stdin {
                        if tx.send(data.slice(1..)).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                RESIZE => {
                    if let (Some(tx), Ok(r)) = (&resize_tx, serde_json::from_slice::<Resize>(body))
                    {
                        let _ = tx
                            .send(TermSize {
                                width: r.width,
                                height: r.height,
                            })
                            .await;
                    }
                }
                _ => {}
            }
        }
    });

    let mut out_rx = out_rx;
    let mut err_rx = err_rx;
    let mut outcome = None;
    // Output until the runtime side is done; then what is still queued.
    let result: io::Result<()> = async {
        loop {
            tokio::select! {
                Some(chunk) = recv(&mut out_rx) => sink.send(frame(STDOUT, &chunk)).await.map_err(ws_err)?,
                Some(chunk) = recv(&mut err_rx) => sink.send(frame(STDERR, &chunk)).await.map_err(ws_err)?,
                r = &mut session, if outcome.is_none() => {
                    outcome = Some(r.unwrap_or_else(|e| Outcome::Failure(format!("session task: {e}"))));
                }
                else => break,
            }
            if outcome.is_some() {
                for (channel, rx) in [(STDOUT, &mut out_rx), (STDERR, &mut err_rx)] {
                    while let Some(chunk) = rx.as_mut().and_then(|rx| rx.try_recv().ok()) {
                        sink.send(frame(channel, &chunk)).await.map_err(ws_err)?;
                    }
                    *rx = None;
                }
                break;
            }
        }
        let outcome = outcome.take().unwrap_or(Outcome::Failure("session ended".into()));
        let error = if status_json {
            Some(outcome.status_json())
        } else {
            match &outcome {
                Outcome::Success => None,
                Outcome::ExitCode(code) => Some(
                    format!("command terminated with non-zero exit code: {code}").into_bytes(),
                ),
                Outcome::Failure(message) => Some(message.clone().into_bytes()),
            }
        };
        if let Some(error) = error {
            sink.send(frame(ERROR, &error)).await.map_err(ws_err)?;
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        Ok(())
    }
    .await;
    reader.abort();
    if result.is_err() {
        // The client went away: the runtime side sees its stdout closed; it is not awaited.
        session.abort();
    }
    result
}

fn split<T>(
    pair: Option<(mpsc::Sender<T>, mpsc::Receiver<T>)>,
) -> (Option<mpsc::Sender<T>>, Option<mpsc::Receiver<T>>) {
    match pair {
        Some((tx, rx)) => (Some(tx), Some(rx)),
        None => (None, None),
    }
}

/// The next chunk of an optional stream; pending forever once it is absent or closed
/// (`select!` then takes the other branches).
async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => match r.recv().await {
            Some(v) => Some(v),
            None => {
                *rx = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Serves one port-forward session: each port's data channel is spliced to `dialer(port)`.
pub(crate) async fn serve_portforward<IO>(
    io: IO,
    _protocol: &str,
    ports: Vec<u16>,
    dialer: Dialer,
) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut incoming) = ws.split();
    if ports.is_empty() {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: "no port to forward: name them as ?port=N&port=M".into(),
            })))
            .await;
        return Ok(());
    }
    if ports.len() > 127 {
        return Err(io::Error::other("more than 127 ports in one port-forward"));
    }
    // Everything for the client goes through one queue to the one writer.
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(QUEUE);
    let mut to_pod: Vec<mpsc::Sender<Bytes>> = Vec::new();
    let mut tasks = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let data_ch = (2 * i) as u8;
        let err_ch = data_ch + 1;
        let prefix = port.to_le_bytes();
        out_tx
            .send(frame(data_ch, &prefix))
            .await
            .map_err(|_| io::Error::other("writer gone"))?;
        out_tx
            .send(frame(err_ch, &prefix))
            .await
            .map_err(|_| io::Error::other("writer gone"))?;
        let (pod_tx, mut pod_rx) = mpsc::channel::<Bytes>(QUEUE);
        to_pod.push(pod_tx);
        let out = out_tx.clone();
        let dial = dialer.clone();
        tasks.push(task::spawn(async move {
            let conn = match dial(port).await {
                Ok(c) => c,
                Err(e) => {
                    let message = format!("port-forward to port {port} in the pod: {e}");
                    tracing::debug!(%message);
                    let _ = out.send(frame(err_ch, message.as_bytes())).await;
                    return;
                }
            };
            let (mut r, mut w) = conn.into_split();
            let upstream = async {
                while let Some(chunk) = pod_rx.recv().await {
                    if w.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = w.shutdown().await;
            };
            let downstream = async {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if out.send(frame(data_ch, &buf[..n])).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            // The pod closing its side ends the port (the protocol has no half-close); once
            // every port has ended, the session closes.
            tokio::select! {
                () = upstream => {}
                () = downstream => {}
            }
        }));
    }
    drop(out_tx);
    let writer = async {
        while let Some(msg) = out_rx.recv().await {
            sink.send(msg).await.map_err(ws_err)?;
        }
        let _ = sink.send(Message::Close(None)).await;
        Ok::<(), io::Error>(())
    };
    let reader = async {
        while let Some(msg) = incoming.next().await {
            let data = match msg {
                Ok(Message::Binary(d)) => d,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let Some((&channel, _)) = data.split_first() else {
                continue;
            };
            // Data for the pod on even channels; what the client sends on error
            // channels means nothing.
            if channel % 2 == 0 {
                if let Some(tx) = to_pod.get((channel / 2) as usize) {
                    let _ = tx.send(data.slice(1..)).await;
                }
            }
        }
        // The client closed: every connection to the pod gets EOF.
        to_pod.clear();
    };
    // The session lasts until the client closes or every port's connection has ended.
    let result = tokio::select! {
        r = writer => r,
        () = reader => Ok(()),
    };
    for t in tasks {
        t.abort();
    }
    result
}
