//! Exec and attach over SPDY: kubelet's remotecommand protocol (`channel.k8s.io`, v2–v4).
//!
//! The client opens one stream per channel, named by the `streamtype` header: `error`,
//! `stdin`, `stdout`, `stderr`, and (v3+, tty) `resize`, which carries JSON lines
//! `{"Width":80,"Height":24}`. Once the streams the request asked for are there, the
//! session runs; its outcome goes on the error stream (v4: a metav1.Status; earlier
//! versions: the message text, nothing on success) and the connection closes.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::frame;
use super::session::{Connection, Stream, StreamWriter};
use crate::streaming::session::{Outcome, StdioStreams, StreamOpts, TermSize};
use crate::streaming::task;

/// How long the client has to open its streams (kubelet's default stream creation timeout).
pub(crate) const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// A resize message longer than this is not a terminal size.
const MAX_RESIZE_LINE: usize = 4096;

/// The remotecommand subprotocol versions SPDY carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Version {
    V1,
    V2,
    V3,
    V4,
}

impl Version {
    pub(crate) fn parse(protocol: &str) -> Option<Version> {
        Some(match protocol {
            "channel.k8s.io" => Version::V1,
            "v2.channel.k8s.io" => Version::V2,
            "v3.channel.k8s.io" => Version::V3,
            "v4.channel.k8s.io" => Version::V4,
            _ => return None,
        })
    }
}

/// Which streams the client must open for `opts` (besides `error`, always).
fn expected(opts: StreamOpts, version: Version) -> Vec<&'static str> {
    let mut want = vec!["error"];
    if opts.stdin {
        want.push("stdin");
    }
    if opts.stdout {
        want.push("stdout");
    }
    // With a tty the terminal carries stderr; v1 clients still opened the stream.
    if opts.stderr && (!opts.tty || version == Version::V1) {
        want.push("stderr");
    }
    if opts.tty && version >= Version::V3 {
        want.push("resize");
    }
    want
}

pub(crate) async fn serve<IO, F, Fut>(
    io: IO,
    protocol: &str,
    opts: StreamOpts,
    run: F,
    creation_timeout: Duration,
) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(StdioStreams) -> Fut + Send + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let version = Version::parse(protocol).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("remotecommand over SPDY does not speak {protocol:?}"),
        )
    })?;
    let (conn, mut incoming) = Connection::start(io);
    let want = expected(opts, version);
    let mut got: Vec<(&'static str, Stream)> = Vec::new();
    let arrived = tokio::time::timeout(creation_timeout, async {
        while got.len() < want.len() {
            let Some(s) = incoming.recv().await else {
                return false;
            };
            let kind = s.header("streamtype").unwrap_or("");
            match want.iter().find(|w| **w == kind) {
                Some(w) if !got.iter().any(|(g, _)| g == w) => got.push((w, s)),
                // A stream the request did not ask for, or a second one of a kind.
                _ => s.writer.reset(frame::RST_PROTOCOL_ERROR).await,
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    let mut take = |kind: &str| {
        got.iter()
            .position(|(k, _)| *k == kind)
            .map(|i| got.swap_remove(i).1)
    };
    let error = take("error");
    if !arrived {
        let msg = format!(
            "timed out waiting for the client to open its streams (wanted {})",
            want.join(", ")
        );
        if let Some(e) = &error {
            let _ = e.writer.write(Bytes::from(msg.clone())).await;
            let _ = e.writer.finish().await;
        }
        let _ = conn.shutdown(frame::GOAWAY_OK).await;
        return Err(io::Error::new(io::ErrorKind::TimedOut, msg));
    }
    let stdin = take("stdin").map(|s| s.data);
    let (stdout, stdout_pump) = output(take("stdout"));
    let (stderr, stderr_pump) = output(take("stderr"));
    let resize = take("resize").map(|s| {
        let (tx, rx) = mpsc::channel(4);
        // Ends when the connection's reader drops the stream's sender.
        tokio::spawn(resize_pump(s.data, tx));
        rx
    });
    // Whatever the client sends on the error stream is not read.
    let Some(error) = error else {
        return conn.shutdown(frame::GOAWAY_OK).await;
    };
    let error_writer = error.writer;
    drop(error.data);

    let outcome = run(StdioStreams {
        stdin,
        stdout,
        stderr,
        resize,
    })
    .await;
    // Everything the session wrote reaches the client before its status.
    for pump in [stdout_pump, stderr_pump].into_iter().flatten() {
        let _ = pump.await;
    }
    let status = match version {
        Version::V4 => Some(outcome.status_json()),
        _ => message(&outcome).map(String::into_bytes),
    };
    if let Some(status) = status {
        let _ = error_writer.write(Bytes::from(status)).await;
    }
    let _ = error_writer.finish().await;
    conn.shutdown(frame::GOAWAY_OK).await
}

/// The text v1–v3 clients get on the error stream (what v4's Status carries as message).
fn message(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Success => None,
        Outcome::ExitCode(code) => Some(format!(
            "command terminated with non-zero exit code: {code}"
        )),
        Outcome::Failure(m) => Some(m.clone()),
    }
}

/// A channel for the session to write into and the task that copies it to `stream`
/// (then FIN).
fn output(stream: Option<Stream>) -> (Option<mpsc::Sender<Bytes>>, Option<task::Owned<()>>) {
    let Some(stream) = stream else {
        return (None, None);
    };
    let (tx, rx) = mpsc::channel(16);
    drop(stream.data);
    (Some(tx), Some(task::spawn(copy_out(rx, stream.writer))))
}

async fn copy_out(mut rx: mpsc::Receiver<Bytes>, writer: StreamWriter) {
    while let Some(b) = rx.recv().await {
        if writer.write(b).await.is_err() {
            // The client is gone: dropping `rx` makes the session's sends fail.
            return;
        }
    }
    let _ = writer.finish().await;
}

/// Turns the resize stream's JSON lines into terminal sizes.
async fn resize_pump(mut data: mpsc::Receiver<Bytes>, sizes: mpsc::Sender<TermSize>) {
    let mut line = Vec::new();
    while let Some(chunk) = data.recv().await {
        line.extend_from_slice(&chunk);
        // spdystream writes one JSON object per message, kubectl's encoder ends each with
        // a newline; a stream of bare objects is split by the decoder below as well.
        loop {
            let mut objects = serde_json::Deserializer::from_slice(&line).into_iter();
            match objects.next() {
                Some(Ok(size)) => {
                    let used = objects.byte_offset();
                    line.drain(..used);
                    if let Some(size) = term_size(&size) {
                        if sizes.send(size).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    tracing::debug!("SPDY resize stream: not JSON, ignoring the rest");
                    return;
                }
                None => {
                    line.clear();
                    break;
                }
            }
        }
        if line.len() > MAX_RESIZE_LINE {
            return;
        }
    }
}

fn term_size(v: &serde_json::Value) -> Option<TermSize> {
    let dim = |k: &str| v.get(k)?.as_u64().and_then(|n| u16::try_from(n).ok());
    Some(TermSize {
        width: dim("Width")?,
        height: dim("Height")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> StreamOpts {
        StreamOpts {
            stdin,
            stdout,
            stderr,
            tty,
        }
    }

    #[test]
    fn versions_are_the_spdy_family_only() {
        assert_eq!(Version::parse("v4.channel.k8s.io"), Some(Version::V4));
        assert_eq!(Version::parse("channel.k8s.io"), Some(Version::V1));
        assert_eq!(Version::parse("v5.channel.k8s.io"), None);
        assert_eq!(Version::parse("portforward.k8s.io"), None);
    }

    #[test]
    fn expected_streams_follow_the_request_and_the_version() {
        assert_eq!(
            expected(opts(true, true, true, false), Version::V4),
            ["error", "stdin", "stdout", "stderr"]
        );
        assert_eq!(
            expected(opts(true, true, true, true), Version::V4),
            ["error", "stdin", "stdout", "resize"]
        );
        assert_eq!(
            expected(opts(false, true, false, true), Version::V2),
            ["error", "stdout"]
        );
        assert_eq!(
            expected(opts(false, true, true, true), Version::V1),
            ["error", "stdout", "stderr"]
        );
    }

    #[test]
    fn old_versions_get_the_message_and_nothing_on_success() {
        assert_eq!(message(&Outcome::Success), None);
        assert_eq!(
            message(&Outcome::ExitCode(3)).as_deref(),
            Some("command terminated with non-zero exit code: 3")
        );
        assert_eq!(
            message(&Outcome::Failure("no such container".into())).as_deref(),
            Some("no such container")
        );
    }

    #[tokio::test]
    async fn resize_lines_split_anywhere_become_sizes() {
        let (tx, rx) = mpsc::channel(8);
        let (sizes_tx, mut sizes) = mpsc::channel(8);
        let pump = tokio::spawn(resize_pump(rx, sizes_tx));
        for piece in [
            &b"{\"Width\":80,\"Hei"[..],
            b"ght\":24}\n{\"Width\":100,\"Height\":50}\n",
            b"{\"Width\":70000,\"Height\":1}\n{\"Width\":1,",
            b"\"Height\":2}",
        ] {
            tx.send(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(s) = sizes.recv().await {
            got.push((s.width, s.height));
        }
        pump.await.unwrap();
        // 70000 does not fit a terminal dimension: skipped, not truncated.
        assert_eq!(got, [(80, 24), (100, 50), (1, 2)]);
    }
}
