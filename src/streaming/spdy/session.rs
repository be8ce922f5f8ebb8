//! The server side of one SPDY/3.1 connection: accepts the streams the client opens
//! (SYN_STREAM answered by SYN_REPLY), delivers their DATA, writes the server's DATA within
//! the flow control windows, half-closes with FIN, resets, answers PING, ends on GOAWAY or
//! EOF.
//!
//! Two tasks: a reader that owns the read half and the inbound zlib context, and a writer
//! that owns the write half and the outbound one; everything else talks to the writer over
//! a bounded channel, so frames leave in the order they were queued.
//!
//! Flow control. Inbound: each stream's data goes to a bounded channel and the reader waits
//! while it is full, so a peer that ignores windows is held back by TCP instead of by
//! memory (what kubelet's spdystream does too); WINDOW_UPDATE is sent for every delivered
//! piece, so a peer that honours windows never stalls. Outbound: the peer's windows
//! (64 KiB initial, per stream and for the connection) are tracked always and enforced once
//! the peer has shown it does flow control, with a WINDOW_UPDATE or SETTINGS
//! INITIAL_WINDOW_SIZE. spdystream (every Kubernetes client) never sends either and never
//! limits what it buffers: holding it to 64 KiB would stall `kubectl exec cat bigfile`
//! forever.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

use super::frame::{self, Frame, FrameReader, HeaderEncoder, Headers};
use crate::streaming::task;

/// SPDY/3.1's initial window, per stream and for the connection.
const INITIAL_WINDOW: i64 = 64 * 1024;
/// Pieces of a stream's inbound data buffered before the reader waits.
const STREAM_QUEUE: usize = 8;
/// Frames queued for the writer before senders wait.
const WRITE_QUEUE: usize = 64;
const READ_CHUNK: usize = 32 * 1024;

/// A stream the client opened.
pub(crate) struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// The client's data, piece by piece; closed at the client's FIN, a reset or the end
    /// of the connection. Dropping it discards what the client sends later.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

impl Stream {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        frame::header(&self.headers, name)
    }
}

/// Writes the server's side of one stream.
#[derive(Clone)]
pub(crate) struct StreamWriter {
    id: u32,
    shared: Arc<Shared>,
    out: mpsc::Sender<Frame>,
}

struct Shared {
    state: Mutex<State>,
    /// Woken when a window grows or the connection or a stream ends.
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// The peer sent WINDOW_UPDATE or SETTINGS INITIAL_WINDOW_SIZE: enforce its windows.
    flow_control: bool,
    initial_window: i64,
    conn_window: i64,
    /// Per open stream: its send window; absent once reset, closed by us or never opened.
    send_windows: HashMap<u32, i64>,
    closed: bool,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "SPDY stream or connection closed",
    )
}

impl StreamWriter {
    /// Sends `data` on the stream, in frames that fit the peer's windows.
    pub(crate) async fn write(&self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.reserve(data.len().min(frame::MAX_DATA_WRITE)).await?;
            let piece = data.split_to(n);
            self.send(Frame::Data {
                stream: self.id,
                flags: 0,
                data: piece,
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes the stream (an empty DATA frame with FIN); later writes fail.
    pub(crate) async fn finish(&self) -> io::Result<()> {
        let open = self.forget();
        if !open {
            return Err(gone());
        }
        self.send(Frame::Data {
            stream: self.id,
            flags: frame::FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }

    /// Ends the stream both ways with RST_STREAM `status`.
    pub(crate) async fn reset(&self, status: u32) {
        self.forget();
        let _ = self
            .send(Frame::RstStream {
                stream: self.id,
                status,
            })
            .await;
    }

    fn forget(&self) -> bool {
        let open = lock(&self.shared).send_windows.remove(&self.id).is_some();
        self.shared.changed.notify_waiters();
        open
    }

    async fn send(&self, f: Frame) -> io::Result<()> {
        self.out.send(f).await.map_err(|_| gone())
    }

    /// Waits until up to `want` bytes may be sent and takes them from the windows.
    async fn reserve(&self, want: usize) -> io::Result<usize> {
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut st = lock(&self.shared);
                if st.closed {
                    return Err(gone());
                }
                let enforce = st.flow_control;
                let conn = st.conn_window;
                let Some(win) = st.send_windows.get_mut(&self.id) else {
                    return Err(gone());
                };
                let n = if enforce {
                    (want as i64).min(*win).min(conn).max(0) as usize
                } else {
                    want
                };
                if n > 0 {
                    *win -= n as i64;
                    st.conn_window -= n as i64;
                    return Ok(n);
                }
            }
            changed.await;
        }
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// One connection: its two tasks and the writer's queue.
pub(crate) struct Connection {
    out: mpsc::Sender<Frame>,
    shared: Arc<Shared>,
    reader: task::Owned<()>,
    writer: task::Owned<io::Result<()>>,
}

impl Connection {
    /// Starts serving `io`; the client's streams come out of the receiver, already
    /// answered with SYN_REPLY. The receiver ends with the connection (GOAWAY, EOF, a
    /// protocol error).
    pub(crate) fn start<IO>(io: IO) -> (Connection, mpsc::Receiver<Stream>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                initial_window: INITIAL_WINDOW,
                conn_window: INITIAL_WINDOW,
                ..State::default()
            }),
            changed: Notify::new(),
        });
        let (out, out_rx) = mpsc::channel(WRITE_QUEUE);
        let (streams_tx, streams) = mpsc::channel(16);
        // Owned: a connection dropped without `shutdown` (a session cancelled by the idle
        // timeout) ends both tasks, and with them the socket.
        let writer = task::spawn(write_loop(wr, out_rx, shared.clone()));
        let reader = task::spawn(read_loop(rd, streams_tx, out.clone(), shared.clone()));
        (
            Connection {
                out,
                shared,
                reader,
                writer,
            },
            streams,
        )
    }

    /// Ends the connection: GOAWAY `status` after everything queued so far, then the
    /// write half is shut down. Returns once the bytes are out (or the peer has gone).
    pub(crate) async fn shutdown(self, status: u32) -> io::Result<()> {
        let _ = self
            .out
            .send(Frame::GoAway {
                last_good: 0,
                status,
            })
            .await;
        drop(self.out);
        let written = match self.writer.await {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(e)),
        };
        self.reader.abort();
        lock(&self.shared).closed = true;
        self.shared.changed.notify_waiters();
        written
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut frames: mpsc::Receiver<Frame>,
    shared: Arc<Shared>,
) -> io::Result<()> {
    let mut enc = HeaderEncoder::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let result = async {
        while let Some(f) = frames.recv().await {
            let mut last = matches!(f, Frame::GoAway { .. });
            frame::encode(&f, &mut enc, &mut buf).map_err(io::Error::other)?;
            // Batch what is already queued into one write.
            while !last && buf.len() < 64 * 1024 {
                let Ok(f) = frames.try_recv() else { break };
                last = matches!(f, Frame::GoAway { .. });
                frame::encode(&f, &mut enc, &mut buf).map_err(io::Error::other)?;
            }
            wr.write_all(&buf).await?;
            wr.flush().await?;
            buf.clear();
            if last {
                break;
            }
        }
        wr.shutdown().await
    }
    .await;
    lock(&shared).closed = true;
    shared.changed.notify_waiters();
    result
}

/// What the reader knows about a stream the client opened.
struct Inbound {
    /// None once the client half-closed or reset it.
    data: Option<mpsc::Sender<Bytes>>,
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    streams: mpsc::Sender<Stream>,
    out: mpsc::Sender<Frame>,
    shared: Arc<Shared>,
) {
    let mut reader = FrameReader::new();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut inbound: HashMap<u32, Inbound> = HashMap::new();
    let mut last_id = 0u32;
    let status = 'conn: loop {
        loop {
            let f = match reader.next(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("SPDY: bad frame from the client: {e}");
                    break 'conn Some(frame::GOAWAY_PROTOCOL_ERROR);
                }
            };
            match f {
                Frame::SynStream {
                    stream,
                    flags,
                    headers,
                    ..
                } => {
                    if stream == 0 || stream.is_multiple_of(2) || stream <= last_id {
                        break 'conn Some(frame::GOAWAY_PROTOCOL_ERROR);
                    }
                    last_id = stream;
                    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                    let fin = flags & frame::FLAG_FIN != 0;
                    inbound.insert(
                        stream,
                        Inbound {
                            data: (!fin).then_some(tx),
                        },
                    );
                    {
                        let mut st = lock(&shared);
                        let w = st.initial_window;
                        if flags & frame::FLAG_UNIDIRECTIONAL == 0 {
                            st.send_windows.insert(stream, w);
                        }
                    }
                    let reply = Frame::SynReply {
                        stream,
                        flags: 0,
                        headers: Headers::new(),
                    };
                    if out.send(reply).await.is_err() {
                        break 'conn None;
                    }
                    let s = Stream {
                        id: stream,
                        headers,
                        data: rx,
                        writer: StreamWriter {
                            id: stream,
                            shared: shared.clone(),
                            out: out.clone(),
                        },
                    };
                    if streams.send(s).await.is_err() {
                        // Nobody accepts streams any more: refuse it.
                        let _ = out
                            .send(Frame::RstStream {
                                stream,
                                status: frame::RST_REFUSED_STREAM,
                            })
                            .await;
                    }
                }
                Frame::Data {
                    stream,
                    flags,
                    data,
                } => {
                    let Some(s) = inbound.get_mut(&stream) else {
                        let _ = out
                            .send(Frame::RstStream {
                                stream,
                                status: frame::RST_INVALID_STREAM,
                            })
                            .await;
                        continue;
                    };
                    let Some(tx) = &s.data else {
                        let _ = out
                            .send(Frame::RstStream {
                                stream,
                                status: frame::RST_STREAM_ALREADY_CLOSED,
                            })
                            .await;
                        continue;
                    };
                    let n = data.len() as u32;
                    if n > 0 {
                        // A dropped receiver means nobody reads this stream: discard.
                        let _ = tx.send(data).await;
                    }
                    let fin = flags & frame::FLAG_FIN != 0;
                    if fin {
                        s.data = None;
                    }
                    if n > 0 {
                        if !fin {
                            let _ = out.send(Frame::WindowUpdate { stream, delta: n }).await;
                        }
                        let _ = out
                            .send(Frame::WindowUpdate {
                                stream: 0,
                                delta: n,
                            })
                            .await;
                    }
                }
                Frame::RstStream { stream, .. } => {
                    inbound.remove(&stream);
                    lock(&shared).send_windows.remove(&stream);
                    shared.changed.notify_waiters();
                }
                Frame::Settings { entries, .. } => {
                    apply_settings(&shared, &entries);
                    shared.changed.notify_waiters();
                }
                Frame::WindowUpdate { stream, delta } => {
                    let overflow = grow_window(&shared, stream, delta);
                    shared.changed.notify_waiters();
                    if overflow && stream == 0 {
                        break 'conn Some(frame::GOAWAY_PROTOCOL_ERROR);
                    } else if overflow {
                        lock(&shared).send_windows.remove(&stream);
                        let _ = out
                            .send(Frame::RstStream {
                                stream,
                                status: frame::RST_FLOW_CONTROL_ERROR,
                            })
                            .await;
                    }
                }
                Frame::Ping { id } => {
                    // Odd ids are the client's: echo them. Even ones would be answers to
                    // pings this server never sends.
                    if id % 2 == 1 && out.send(Frame::Ping { id }).await.is_err() {
                        break 'conn None;
                    }
                }
                Frame::GoAway { .. } => break 'conn None,
                // HEADERS only matters for its (already decoded) compression context; a
                // SYN_REPLY to a stream this server never opened is ignored likewise.
                Frame::Headers { .. } | Frame::SynReply { .. } => {}
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK {
            buf.reserve(READ_CHUNK);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break None,
            Ok(_) => {}
        }
    };
    if let Some(status) = status {
        let _ = out
            .send(Frame::GoAway {
                last_good: last_id,
                status,
            })
            .await;
    }
    // The receivers see EOF; writers stop.
    drop(inbound);
    lock(&shared).closed = true;
    shared.changed.notify_waiters();
}

fn apply_settings(shared: &Shared, entries: &[frame::Setting]) {
    let mut st = lock(shared);
    for e in entries {
        if e.id == frame::SETTINGS_INITIAL_WINDOW_SIZE {
            let new = i64::from(e.value & 0x7fff_ffff);
            let delta = new - st.initial_window;
            st.initial_window = new;
            st.flow_control = true;
            for w in st.send_windows.values_mut() {
                *w += delta;
            }
        }
    }
}

/// Adds a WINDOW_UPDATE's delta; true when the window passes 2^31-1 (a flow control
/// error, SPDY/3.1 2.6.8).
fn grow_window(shared: &Shared, stream: u32, delta: u32) -> bool {
    let mut st = lock(shared);
    st.flow_control = true;
    let delta = i64::from(delta);
    let max = i64::from(i32::MAX);
    if stream == 0 {
        st.conn_window += delta;
        st.conn_window > max
    } else {
        st.send_windows.get_mut(&stream).is_some_and(|w| {
            *w += delta;
            *w > max
        })
    }
}
