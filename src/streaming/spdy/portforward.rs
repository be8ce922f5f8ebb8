//! Port-forward over SPDY: kubelet's `portforward.k8s.io` protocol.
//!
//! The client opens streams in pairs, an `error` and a `data` stream (header `streamtype`)
//! with the same `port` and `requestid`. Each complete pair gets its own connection to the
//! port inside the pod; its data stream is spliced to it both ways, and a failure (dial
//! refused, a port that was not requested) is written as text on the pair's error stream.

use std::collections::HashMap;
use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

use super::frame;
use super::session::{Connection, Stream, StreamWriter};
use crate::streaming::session::Dialer;

pub(crate) const PROTOCOL: &str = "portforward.k8s.io";

/// The pair a stream belongs to. Clients older than Kubernetes 1.6 send no `requestid`:
/// like kubelet, pair the data stream with the error stream opened just before it.
fn request_id(s: &Stream, kind: &str) -> String {
    match s.header("requestid") {
        Some(id) => id.to_string(),
        None if kind == "data" => s.id.saturating_sub(2).to_string(),
        None => s.id.to_string(),
    }
}

#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

pub(crate) async fn serve<IO>(
    io: IO,
    protocol: &str,
    ports: Vec<u16>,
    dialer: Dialer,
) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if protocol != PROTOCOL {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("port-forward over SPDY does not speak {protocol:?}"),
        ));
    }
    let (conn, mut incoming) = Connection::start(io);
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    while let Some(s) = incoming.recv().await {
        let kind = s.header("streamtype").unwrap_or("").to_string();
        if kind != "error" && kind != "data" {
            s.writer.reset(frame::RST_PROTOCOL_ERROR).await;
            continue;
        }
        let id = request_id(&s, &kind);
        let pair = pending.entry(id.clone()).or_default();
        let slot = if kind == "error" {
            &mut pair.error
        } else {
            &mut pair.data
        };
        if slot.is_some() {
            s.writer.reset(frame::RST_STREAM_IN_USE).await;
            continue;
        }
        *slot = Some(s);
        if pair.error.is_some() && pair.data.is_some() {
            if let Some(Pair {
                error: Some(error),
                data: Some(data),
            }) = pending.remove(&id)
            {
                forwards.spawn(forward(error, data, ports.clone(), dialer.clone()));
            }
        } else if pending.len() > 1024 {
            // Halves of pairs that never complete are not allowed to pile up.
            break;
        }
        // Reap finished forwards so a long session does not accumulate them.
        while forwards.try_join_next().is_some() {}
    }
    // The client has gone (GOAWAY or EOF): forwards still open are cut.
    forwards.abort_all();
    while forwards.join_next().await.is_some() {}
    conn.shutdown(frame::GOAWAY_OK).await
}

async fn forward(error: Stream, data: Stream, ports: Vec<u16>, dialer: Dialer) {
    drop(error.data);
    let port = match data.header("port").map(str::parse::<u16>) {
        Some(Ok(p)) if p > 0 => p,
        other => {
            let msg = match other {
                None => "port-forward stream without a port header".to_string(),
                Some(_) => format!(
                    "port-forward: invalid port {:?}",
                    data.header("port").unwrap_or("")
                ),
            };
            fail(&error.writer, &data.writer, msg).await;
            return;
        }
    };
    if !ports.is_empty() && !ports.contains(&port) {
        let msg = format!("port {port} was not in the PortForward request ({ports:?})");
        fail(&error.writer, &data.writer, msg).await;
        return;
    }
    let tcp = match dialer(port).await {
        Ok(t) => t,
        Err(e) => {
            fail(
                &error.writer,
                &data.writer,
                format!("error forwarding port {port}: {e}"),
            )
            .await;
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    let Stream {
        data: mut from_client,
        writer: to_client,
        ..
    } = data;
    let upstream = async move {
        while let Some(b) = from_client.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
        // The client half-closed: so does the connection to the pod.
        let _ = wr.shutdown().await;
    };
    let downstream = async {
        let mut buf = BytesMut::with_capacity(frame::MAX_DATA_WRITE);
        loop {
            buf.reserve(frame::MAX_DATA_WRITE);
            match rd.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {
                    if to_client.write(buf.split().freeze()).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let msg = format!("error forwarding port {port}: read: {e}");
                    let _ = error.writer.write(Bytes::from(msg)).await;
                    break;
                }
            }
        }
        let _ = to_client.finish().await;
    };
    tokio::join!(upstream, downstream);
    let _ = error.writer.finish().await;
}

async fn fail(error: &StreamWriter, data: &StreamWriter, msg: String) {
    tracing::debug!("{msg}");
    let _ = error.write(Bytes::from(msg)).await;
    let _ = error.finish().await;
    let _ = data.finish().await;
}
