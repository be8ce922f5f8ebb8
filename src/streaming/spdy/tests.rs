//! The adapter driven from outside: a raw-frame client written on the codec (for what a
//! well-behaved client never does: bad frames, flow control, missing streams), and Go's
//! moby/spdystream, the SPDY implementation every Kubernetes client uses.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::frame::{self, Frame, FrameReader, HeaderEncoder, Headers, Setting};
use super::session::Connection;
use super::{remotecommand, serve_portforward, serve_remotecommand};
use crate::streaming::session::{Dialer, Outcome, StdioStreams, StreamOpts};

/// A SPDY client that speaks frames, nothing more.
struct RawClient {
    io: DuplexStream,
    enc: HeaderEncoder,
    reader: FrameReader,
    buf: BytesMut,
}

impl RawClient {
    fn new(io: DuplexStream) -> Self {
        RawClient {
            io,
            enc: HeaderEncoder::new(),
            reader: FrameReader::new(),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, f: Frame) {
        let mut out = Vec::new();
        frame::encode(&f, &mut self.enc, &mut out).unwrap();
        self.io.write_all(&out).await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// The next frame (a DATA frame whole, its pieces joined); None at EOF.
    async fn recv(&mut self) -> Option<Frame> {
        let mut joined: Option<(u32, Vec<u8>)> = None;
        loop {
            while let Some(f) = self.reader.next(&mut self.buf).unwrap() {
                match f {
                    Frame::Data {
                        stream,
                        flags,
                        data,
                    } => {
                        let j = joined.get_or_insert_with(|| (stream, Vec::new()));
                        j.1.extend_from_slice(&data);
                        if !self.reader.in_data() {
                            return Some(Frame::Data {
                                stream,
                                flags,
                                data: Bytes::from(joined.take().unwrap().1),
                            });
                        }
                    }
                    f => return Some(f),
                }
            }
            self.buf.reserve(64 * 1024);
            if self.io.read_buf(&mut self.buf).await.unwrap() == 0 {
                return None;
            }
        }
    }

    /// Opens stream `id` with `streamtype` and the given extra headers.
    async fn open(&mut self, id: u32, streamtype: &str, extra: &[(&str, &str)]) {
        let mut headers: Headers = vec![("streamtype".into(), streamtype.into())];
        headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        self.send(Frame::SynStream {
            stream: id,
            associated: 0,
            priority: 0,
            flags: 0,
            headers,
        })
        .await;
    }

    /// Collects frames until EOF: per stream, the data and whether FIN came; the other
    /// frames in order.
    async fn drain(&mut self) -> Drained {
        let mut d = Drained::default();
        while let Some(f) = self.recv().await {
            match f {
                Frame::Data {
                    stream,
                    flags,
                    data,
                } => {
                    let e = d.data.entry(stream).or_default();
                    e.0.extend_from_slice(&data);
                    e.1 |= flags & frame::FLAG_FIN != 0;
                }
                other => d.control.push(other),
            }
        }
        d
    }
}

#[derive(Default)]
struct Drained {
    data: std::collections::HashMap<u32, (Vec<u8>, bool)>,
    control: Vec<Frame>,
}

impl Drained {
    fn text(&self, stream: u32) -> String {
        String::from_utf8_lossy(self.data.get(&stream).map_or(&[][..], |d| &d.0)).into_owned()
    }
    fn finished(&self, stream: u32) -> bool {
        self.data.get(&stream).is_some_and(|d| d.1)
    }
}

fn opts(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> StreamOpts {
    StreamOpts {
        stdin,
        stdout,
        stderr,
        tty,
    }
}

// ---------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pings_are_answered_and_streams_replied() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let (conn, mut streams) = Connection::start(server);
    let mut c = RawClient::new(client);
    c.send(Frame::Ping { id: 1 }).await;
    assert_eq!(c.recv().await, Some(Frame::Ping { id: 1 }));
    // An even id would be an answer to the server's own ping: not echoed.
    c.send(Frame::Ping { id: 2 }).await;
    c.open(1, "stdout", &[("port", "80")]).await;
    assert!(matches!(
        c.recv().await,
        Some(Frame::SynReply { stream: 1, .. })
    ));
    let s = streams.recv().await.unwrap();
    assert_eq!((s.id, s.header("streamtype")), (1, Some("stdout")));
    assert_eq!(s.header("port"), Some("80"));
    s.writer.write(Bytes::from_static(b"out")).await.unwrap();
    s.writer.finish().await.unwrap();
    assert!(s.writer.write(Bytes::from_static(b"late")).await.is_err());
    conn.shutdown(frame::GOAWAY_OK).await.unwrap();
    let d = c.drain().await;
    assert_eq!(d.text(1), "out");
    assert!(d.finished(1));
    assert_eq!(
        d.control,
        [Frame::GoAway {
            last_good: 0,
            status: frame::GOAWAY_OK
        }]
    );
}

/// A connection dropped without `shutdown` (its session cancelled, e.g. by the idle
/// timeout) closes the socket: the client reads EOF, even with a stream still open.
#[tokio::test]
async fn a_dropped_connection_closes_the_socket() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let (conn, mut streams) = Connection::start(server);
    let mut c = RawClient::new(client);
    c.open(1, "stdout", &[]).await;
    assert!(matches!(
        c.recv().await,
        Some(Frame::SynReply { stream: 1, .. })
    ));
    let _open = streams.recv().await.unwrap();
    drop(conn);
    let eof = tokio::time::timeout(Duration::from_secs(10), c.recv()).await;
    assert_eq!(eof, Ok(None), "the socket closed");
}

#[tokio::test]
async fn inbound_data_is_delivered_and_its_window_given_back() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let (_conn, mut streams) = Connection::start(server);
    let mut c = RawClient::new(client);
    c.open(1, "stdin", &[]).await;
    c.recv().await.unwrap();
    let mut s = streams.recv().await.unwrap();
    c.send(Frame::Data {
        stream: 1,
        flags: 0,
        data: Bytes::from(vec![1u8; 1000]),
    })
    .await;
    assert_eq!(s.data.recv().await.unwrap().len(), 1000);
    assert_eq!(
        c.recv().await,
        Some(Frame::WindowUpdate {
            stream: 1,
            delta: 1000
        })
    );
    assert_eq!(
        c.recv().await,
        Some(Frame::WindowUpdate {
            stream: 0,
            delta: 1000
        })
    );
    c.send(Frame::Data {
        stream: 1,
        flags: frame::FLAG_FIN,
        data: Bytes::from_static(b"last"),
    })
    .await;
    assert_eq!(&s.data.recv().await.unwrap()[..], b"last");
    assert_eq!(s.data.recv().await, None, "FIN is EOF");
    // DATA after FIN, and on a stream never opened, are refused.
    for stream in [1, 9] {
        c.send(Frame::Data {
            stream,
            flags: 0,
            data: Bytes::from_static(b"x"),
        })
        .await;
    }
    let mut rsts = Vec::new();
    while rsts.len() < 2 {
        if let Some(Frame::RstStream { stream, status }) = c.recv().await {
            rsts.push((stream, status));
        }
    }
    assert_eq!(
        rsts,
        [
            (1, frame::RST_STREAM_ALREADY_CLOSED),
            (9, frame::RST_INVALID_STREAM)
        ]
    );
}

#[tokio::test]
async fn a_peer_that_does_flow_control_gets_no_more_than_its_window() {
    let (client, server) = tokio::io::duplex(1 << 20);
    let (_conn, mut streams) = Connection::start(server);
    let mut c = RawClient::new(client);
    c.send(Frame::Settings {
        flags: 0,
        entries: vec![Setting {
            flags: 0,
            id: frame::SETTINGS_INITIAL_WINDOW_SIZE,
            value: 10,
        }],
    })
    .await;
    c.open(1, "stdout", &[]).await;
    c.recv().await.unwrap();
    let s = streams.recv().await.unwrap();
    let writer = s.writer.clone();
    let write = tokio::spawn(async move { writer.write(Bytes::from(vec![5u8; 100])).await });
    // Without windows the 100 bytes would leave as one frame.
    let first = c.recv().await.unwrap();
    assert!(
        matches!(&first, Frame::Data { stream: 1, data, .. } if data.len() == 10),
        "{first:?}"
    );
    c.send(Frame::WindowUpdate {
        stream: 1,
        delta: 90,
    })
    .await;
    let second = c.recv().await.unwrap();
    assert!(
        matches!(&second, Frame::Data { stream: 1, data, .. } if data.len() == 90),
        "{second:?}"
    );
    write.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_peer_that_never_updates_windows_like_spdystream_is_not_stalled() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let (conn, mut streams) = Connection::start(server);
    let mut c = RawClient::new(client);
    c.open(1, "stdout", &[]).await;
    let s = streams.recv().await.unwrap();
    let write = tokio::spawn(async move {
        s.writer
            .write(Bytes::from(vec![5u8; 300_000]))
            .await
            .unwrap();
        s.writer.finish().await.unwrap();
        conn.shutdown(frame::GOAWAY_OK).await.unwrap();
    });
    let d = c.drain().await;
    assert_eq!(d.data[&1].0.len(), 300_000);
    assert!(d.finished(1));
    write.await.unwrap();
}

async fn goaway_after(bytes: &[u8]) -> Vec<Frame> {
    let (client, server) = tokio::io::duplex(1 << 16);
    let (_conn, _streams) = Connection::start(server);
    let mut c = RawClient::new(client);
    c.send_raw(bytes).await;
    let mut got = Vec::new();
    while let Some(f) = c.recv().await {
        let end = matches!(f, Frame::GoAway { .. });
        got.push(f);
        if end {
            break;
        }
    }
    got
}

#[tokio::test]
async fn bad_frames_end_the_connection_with_goaway_protocol_error() {
    let protocol_error = |last_good| Frame::GoAway {
        last_good,
        status: frame::GOAWAY_PROTOCOL_ERROR,
    };
    // SPDY/2.
    assert_eq!(
        goaway_after(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]).await,
        [protocol_error(0)]
    );
    // A control frame claiming 16 MiB.
    assert_eq!(
        goaway_after(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff]).await,
        [protocol_error(0)]
    );
    // Stream ids must be odd and increase.
    let mut wire = Vec::new();
    let mut enc = HeaderEncoder::new();
    for id in [3, 1] {
        let f = Frame::SynStream {
            stream: id,
            associated: 0,
            priority: 0,
            flags: 0,
            headers: vec![("streamtype".into(), "error".into())],
        };
        frame::encode(&f, &mut enc, &mut wire).unwrap();
    }
    let got = goaway_after(&wire).await;
    assert!(matches!(got[0], Frame::SynReply { stream: 3, .. }));
    assert_eq!(got[1..], [protocol_error(3)]);
}

// ---------------------------------------------------------------------------------------
// Remotecommand and port-forward with the raw client
// ---------------------------------------------------------------------------------------

fn serve_in_background<F, Fut>(
    protocol: &'static str,
    o: StreamOpts,
    run: F,
    timeout: Duration,
) -> (RawClient, tokio::task::JoinHandle<io::Result<()>>)
where
    F: FnOnce(StdioStreams) -> Fut + Send + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let (client, server) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(remotecommand::serve(server, protocol, o, run, timeout));
    (RawClient::new(client), task)
}

#[tokio::test]
async fn missing_streams_time_out_with_a_message_on_the_error_stream() {
    let (mut c, task) = serve_in_background(
        "v4.channel.k8s.io",
        opts(true, true, false, false),
        |_| async { panic!("must not run without its streams") },
        Duration::from_millis(200),
    );
    c.open(1, "error", &[]).await;
    c.open(3, "stdout", &[]).await;
    // A stream the request did not ask for is reset.
    c.open(5, "stderr", &[]).await;
    let d = c.drain().await;
    assert!(
        d.text(1).contains("timed out waiting for the client"),
        "{}",
        d.text(1)
    );
    assert!(d.control.contains(&Frame::RstStream {
        stream: 5,
        status: frame::RST_PROTOCOL_ERROR
    }));
    let e = task.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn v3_sends_the_message_text_and_nothing_on_success() {
    for (outcome, want) in [
        (
            Outcome::ExitCode(2),
            "command terminated with non-zero exit code: 2",
        ),
        (Outcome::Success, ""),
    ] {
        let (mut c, task) = serve_in_background(
            "v3.channel.k8s.io",
            opts(false, true, false, false),
            move |io| async move {
                io.stdout
                    .unwrap()
                    .send(Bytes::from_static(b"hi"))
                    .await
                    .unwrap();
                outcome
            },
            Duration::from_secs(30),
        );
        c.open(1, "error", &[]).await;
        c.open(3, "stdout", &[]).await;
        let d = c.drain().await;
        assert_eq!(d.text(3), "hi");
        assert_eq!(d.text(1), want);
        assert!(d.finished(1) && d.finished(3));
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn tty_sessions_get_resizes_and_no_stderr() {
    let (mut c, task) = serve_in_background(
        "v4.channel.k8s.io",
        opts(false, true, true, true),
        |io| async move {
            assert!(io.stderr.is_none() && io.stdin.is_none());
            let mut resize = io.resize.unwrap();
            let out = io.stdout.unwrap();
            while let Some(s) = resize.recv().await {
                let line = format!("{}x{}\n", s.width, s.height);
                out.send(Bytes::from(line)).await.unwrap();
            }
            Outcome::Success
        },
        Duration::from_secs(30),
    );
    c.open(1, "error", &[]).await;
    c.open(3, "stdout", &[]).await;
    c.open(5, "resize", &[]).await;
    c.send(Frame::Data {
        stream: 5,
        flags: 0,
        data: Bytes::from_static(b"{\"Width\":80,\"Height\":24}\n"),
    })
    .await;
    c.send(Frame::Data {
        stream: 5,
        flags: frame::FLAG_FIN,
        data: Bytes::from_static(b"{\"Width\":120,\"Height\":40}\n"),
    })
    .await;
    let d = c.drain().await;
    assert_eq!(d.text(3), "80x24\n120x40\n");
    assert_eq!(d.text(1), r#"{"metadata":{},"status":"Success"}"#);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn unknown_subprotocols_are_refused_before_any_frame() {
    let (_c, server) = tokio::io::duplex(64);
    let e = serve_remotecommand(
        server,
        "v5.channel.k8s.io",
        opts(false, true, false, false),
        |_| async { Outcome::Success },
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    let (_c, server) = tokio::io::duplex(64);
    let dialer: Dialer = Arc::new(|_| Box::pin(async { Err(io::Error::other("unused")) }));
    let e = serve_portforward(server, "v4.channel.k8s.io", vec![], dialer)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn port_forward_pairs_without_requestid_and_bad_ports() {
    let echo = echo_listener().await;
    let port = echo.to_string();
    let dialer = loopback_dialer();
    let (client, server) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(serve_portforward(
        server,
        "portforward.k8s.io",
        vec![],
        dialer,
    ));
    let mut c = RawClient::new(client);
    // A pre-1.6 client: no requestid, the data stream follows its error stream.
    c.open(1, "error", &[("port", &port)]).await;
    c.open(3, "data", &[("port", &port)]).await;
    c.send(Frame::Data {
        stream: 3,
        flags: frame::FLAG_FIN,
        data: Bytes::from_static(b"echo me"),
    })
    .await;
    // A port that is not a port.
    c.open(5, "error", &[("port", "http"), ("requestid", "7")])
        .await;
    c.open(7, "data", &[("port", "http"), ("requestid", "7")])
        .await;
    // A stream of neither kind.
    c.open(9, "stdin", &[]).await;
    let mut d = Drained::default();
    while !(d.finished(1) && d.finished(3) && d.finished(5) && d.finished(7)) {
        match c.recv().await.unwrap() {
            Frame::Data {
                stream,
                flags,
                data,
            } => {
                let e = d.data.entry(stream).or_default();
                e.0.extend_from_slice(&data);
                e.1 |= flags & frame::FLAG_FIN != 0;
            }
            other => d.control.push(other),
        }
    }
    assert_eq!(d.text(3), "echo me");
    assert_eq!(d.text(1), "");
    assert!(d.text(5).contains("invalid port \"http\""), "{}", d.text(5));
    assert!(d.control.contains(&Frame::RstStream {
        stream: 9,
        status: frame::RST_PROTOCOL_ERROR
    }));
    c.send(Frame::GoAway {
        last_good: 0,
        status: frame::GOAWAY_OK,
    })
    .await;
    task.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------
// Go's moby/spdystream, over TCP, through an HTTP upgrade
// ---------------------------------------------------------------------------------------

/// A listener that echoes every connection back until EOF; its port.
async fn echo_listener() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

fn loopback_dialer() -> Dialer {
    Arc::new(|port| Box::pin(TcpStream::connect(("127.0.0.1", port))))
}

/// Reads an HTTP request head byte by byte (nothing after it is consumed).
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = r.read_u8().await.unwrap();
        head.push(b);
        assert!(head.len() < 16 * 1024, "request head too long");
    }
    String::from_utf8(head).unwrap()
}

/// What the test's acceptor observed on the server side of the exec.
#[derive(Debug, PartialEq)]
struct ExecSeen {
    stdin_bytes: usize,
}

/// The test-only stand-in for the streaming HTTP server: answers the SPDY upgrade with the
/// first of the client's versions this adapter speaks, then serves `/exec` (echo stdin,
/// "to stderr", exit code 3) or `/portforward` (to `ports`).
async fn acceptor(l: TcpListener, ports: Vec<u16>, seen: mpsc::Sender<ExecSeen>) {
    while let Ok((mut s, _)) = l.accept().await {
        let head = read_head(&mut s).await;
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let offered: Vec<String> = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case("x-stream-protocol-version"))
            .map(|(_, v)| v.trim().to_string())
            .collect();
        let upgrade = head
            .lines()
            .any(|l| l.to_ascii_lowercase().replace(' ', "") == "upgrade:spdy/3.1");
        assert!(upgrade, "no Upgrade: SPDY/3.1 in {head}");
        let speaks: Vec<&str> = if path == "/exec" {
            super::REMOTECOMMAND_PROTOCOLS.to_vec()
        } else {
            vec![super::PORTFORWARD_PROTOCOL]
        };
        let chosen = offered
            .iter()
            .find(|p| speaks.contains(&p.as_str()))
            .cloned()
            .unwrap_or_default();
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: {chosen}\r\n\r\n"
        );
        s.write_all(answer.as_bytes()).await.unwrap();
        if path == "/exec" {
            let seen = seen.clone();
            let run = move |io: StdioStreams| async move {
                let mut stdin = io.stdin.unwrap();
                let stdout = io.stdout.unwrap();
                let stderr = io.stderr.unwrap();
                stderr
                    .send(Bytes::from_static(b"to stderr\n"))
                    .await
                    .unwrap();
                drop(stderr);
                let mut n = 0;
                while let Some(b) = stdin.recv().await {
                    n += b.len();
                    stdout.send(b).await.unwrap();
                }
                seen.send(ExecSeen { stdin_bytes: n }).await.unwrap();
                Outcome::ExitCode(3)
            };
            let o = opts(true, true, true, false);
            tokio::spawn(async move { serve_remotecommand(s, &chosen, o, run).await });
        } else {
            let ports = ports.clone();
            tokio::spawn(async move {
                serve_portforward(s, &chosen, ports, loopback_dialer())
                    .await
                    .unwrap()
            });
        }
    }
}

/// Builds tests/interop/go-spdy-client against Debian's spdystream sources (GOPATH mode:
/// nothing is downloaded), with its build cache in the target dir.
fn build_go_client() -> PathBuf {
    let gocode = Path::new("/usr/share/gocode");
    assert!(
        gocode.join("src/github.com/moby/spdystream").is_dir(),
        "no spdystream sources under {}: run hack/setup (golang-github-docker-spdystream-dev)",
        gocode.display()
    );
    // target/debug/deps/proxrt-… → target/go-spdy-client
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .ancestors()
        .nth(3)
        .unwrap_or(Path::new("/tmp"))
        .join("go-spdy-client");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("go-spdy-client");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/go-spdy-client/main.go");
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", gocode)
        .env("GOCACHE", dir.join("cache"))
        .env("GOFLAGS", "")
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("run go ({e}): run hack/setup (Debian golang-go)"));
    assert!(
        out.status.success(),
        "go build of the spdystream client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_spdystream_client_exec_and_port_forward() {
    let bin = tokio::task::spawn_blocking(build_go_client).await.unwrap();
    let echo = echo_listener().await;
    // A port with nothing behind it: bound, then let go.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // Refused before any dial: nothing needs to listen there.
    let unlisted = 1;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (seen_tx, mut seen) = mpsc::channel(1);
    let server = tokio::spawn(acceptor(l, vec![echo, closed], seen_tx));
    let log = bin.with_file_name(format!("client-{}.log", std::process::id()));
    let mut child = tokio::process::Command::new(&bin)
        .arg(addr.to_string())
        .arg(echo.to_string())
        .arg(closed.to_string())
        .arg(unlisted.to_string())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    let show = format!(
        "stdout:\n{}\nstderr:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
    );
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(log.with_extension("err"));
    let status = status
        .unwrap_or_else(|_| panic!("the Go client did not finish within 60 s: {show}"))
        .unwrap();
    server.abort();
    assert!(status.success(), "go-spdy-client failed: {show}");
    assert!(show.contains("exec: 320013 bytes echoed"), "{show}");
    assert_eq!(
        seen.recv().await,
        Some(ExecSeen {
            stdin_bytes: 320_013
        })
    );
}
