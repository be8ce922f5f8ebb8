//! Any `:authority` on the unix socket.
//!
//! gRPC clients dialing a unix socket put all sorts of things in `:authority`: the
//! socket path (grpc-go given a bare path and a context dialer: crictl up to 1.26, older
//! kubelets, CSI tooling; grpc-java), a %-encoded path (grpcio since 1.57), `localhost`
//! (newer kubelets) or nothing. hyper's HTTP/2 layer (h2) parses it as a URI authority
//! and resets the stream with PROTOCOL_ERROR when that fails, before tonic sees the
//! request; h2 has no switch for it (hyperium/h2 PR 487, unmerged).
//!
//! `AuthorityRewrite` sits between each accepted unix connection and the server: it
//! reads the client's HTTP/2 frames and replaces an `:authority` the server would refuse
//! with `localhost` (frames.rs walks the frames, blocks.rs does the HPACK part). The
//! server→client direction is untouched. Connections whose authorities are all valid
//! are forwarded byte for byte. Why it exists and when it can go:
//! vendor-notes/tonic-h2.md.

mod blocks;
mod frames;

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

pub use blocks::{is_valid_authority, HeaderBlocks, REPLACEMENT_AUTHORITY};
pub use frames::{Rewriter, Step};

/// Why a client's byte stream could not be followed. Each is a connection error: the
/// connection is closed, as the server would close it for the same bytes.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("CONTINUATION frame on stream {stream} without a HEADERS frame before it")]
    StrayContinuation { stream: u32 },
    #[error("header block of stream {stream} interrupted by a frame of type {kind:#x} on stream {other_stream}")]
    InterruptedHeaderBlock {
        stream: u32,
        kind: u8,
        other_stream: u32,
    },
    #[error("HEADERS frame on stream {stream}: padding or priority longer than the frame")]
    BadPadding { stream: u32 },
    #[error("header block of stream {stream} is over {limit} bytes")]
    HeaderBlockTooLarge { stream: u32, limit: usize },
    #[error("header list is over {limit} bytes decoded")]
    HeaderListTooLarge { limit: usize },
    #[error("HPACK: {0}")]
    Hpack(String),
}

impl From<RewriteError> for io::Error {
    fn from(e: RewriteError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Bytes asked of the connection at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A client connection whose read side (what the server reads) has its refused
/// `:authority` values replaced; writes go to the connection unchanged.
pub struct AuthorityRewrite<S> {
    inner: S,
    rewriter: Rewriter,
    /// Read from the client, not yet handed to the server.
    input: BytesMut,
    /// Bytes at the front of `input` to hand over unchanged.
    forward: usize,
    /// Bytes replacing a header block, handed over before anything in `input`.
    replacement: bytes::Bytes,
    /// The client closed its side; what is left in `input` is handed over unchanged.
    eof: bool,
    /// Met after bytes before it were handed over: returned by the next read.
    failed: Option<RewriteError>,
}

impl<S> AuthorityRewrite<S> {
    pub fn new(inner: S) -> AuthorityRewrite<S> {
        AuthorityRewrite {
            inner,
            rewriter: Rewriter::new(),
            input: BytesMut::new(),
            forward: 0,
            replacement: bytes::Bytes::new(),
            eof: false,
            failed: None,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Whether this connection's header blocks are being re-encoded.
    pub fn is_rewriting(&self) -> bool {
        self.rewriter.is_rewriting()
    }

    /// Hands over what is decided (replacement first, then forwarded input) and decides
    /// more while `buf` has room. Ok(true) when something was written to `buf`.
    fn drain_into(&mut self, buf: &mut ReadBuf<'_>) -> Result<bool, RewriteError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let start = buf.filled().len();
        match self.decide_into(buf) {
            Err(e) if buf.filled().len() > start => {
                self.failed = Some(e);
                Ok(true)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(buf.filled().len() > start),
        }
    }

    fn decide_into(&mut self, buf: &mut ReadBuf<'_>) -> Result<(), RewriteError> {
        while buf.remaining() > 0 {
            if !self.replacement.is_empty() {
                let n = self.replacement.len().min(buf.remaining());
                buf.put_slice(&self.replacement[..n]);
                self.replacement.advance(n);
            } else if self.forward > 0 {
                let n = self.forward.min(buf.remaining());
                buf.put_slice(&self.input[..n]);
                self.input.advance(n);
                self.forward -= n;
            } else if self.eof {
                self.forward = self.input.len();
                if self.forward == 0 {
                    break;
                }
            } else {
                match self.rewriter.next(&self.input)? {
                    Step::Forward(n) => self.forward = n,
                    Step::Replace { consumed, with } => {
                        self.input.advance(consumed);
                        self.replacement = with.into();
                    }
                    Step::NeedMore => break,
                }
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRewrite<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.rewriter.is_off()
                && this.input.is_empty()
                && this.replacement.is_empty()
                && this.forward == 0
                && this.failed.is_none()
                && !this.eof
            {
                // Nothing left to look at on this connection: read straight through.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.drain_into(buf)? || buf.remaining() == 0 || (this.eof && this.input.is_empty())
            {
                return Poll::Ready(Ok(()));
            }
            // The payload of a frame being forwarded (DATA, mostly) goes from the
            // connection to the server's buffer without a copy through ours.
            let direct = this.rewriter.payload_left().min(buf.remaining());
            if direct > 0 && this.input.is_empty() {
                let mut part = buf.take(direct);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
                let n = part.filled().len();
                if n == 0 {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                // SAFETY: the inner reader initialised and filled `n` bytes of `part`,
                // which are the next `n` bytes of `buf`'s unfilled part.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                this.rewriter.consumed_payload(n);
                return Poll::Ready(Ok(()));
            }
            this.input.reserve(READ_CHUNK);
            let mut spare = ReadBuf::uninit(this.input.spare_capacity_mut());
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut spare))?;
            let n = spare.filled().len();
            // SAFETY: the reader filled (so initialised) the first `n` bytes of the
            // spare capacity, right after `input`'s current end.
            unsafe { this.input.set_len(this.input.len() + n) };
            if n == 0 {
                this.eof = true;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRewrite<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityRewrite<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::frames::tests::{frame, headers_frame, request, rewrite, server_sees, SOCKET};
    use super::frames::PREFACE;
    use super::*;
    use loona_hpack::Encoder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection's worth of client bytes: requests with valid and refused
    /// authorities, a large DATA frame, a header block over several frames.
    fn client_bytes() -> Vec<u8> {
        let mut enc = Encoder::new();
        let mut out = PREFACE.to_vec();
        out.extend(frame(0x4, 0, 0, &[]));
        out.extend(headers_frame(&mut enc, 1, &request(None, "/a/B", &[])));
        out.extend(frame(0x0, 0x1, 1, &vec![7; 70_000]));
        out.extend(headers_frame(
            &mut enc,
            3,
            &request(Some(SOCKET), "/a/C", &[]),
        ));
        out.extend(frame(0x0, 0x1, 3, b"\0\0\0\0\0"));
        let big = "b".repeat(20_000);
        let h = request(Some(SOCKET), "/a/D", &[("x-big", &big)]);
        let block = super::frames::tests::encode(&mut enc, &h);
        out.extend(frame(0x1, 0, 5, &block[..100]));
        out.extend(frame(0x9, 0x4, 5, &block[100..]));
        out.extend(frame(0x6, 0, 0, b"12345678"));
        out
    }

    /// Writes `input` into one end of a socket pair in `write_chunk` pieces and reads the
    /// other end through `AuthorityRewrite` with a `read_size` buffer, as hyper would.
    async fn through_layer(input: Vec<u8>, write_chunk: usize, read_size: usize) -> Vec<u8> {
        let (mut client, server) = tokio::net::UnixStream::pair().expect("socketpair");
        let writer = tokio::spawn(async move {
            for piece in input.chunks(write_chunk) {
                client.write_all(piece).await.expect("write");
                tokio::task::yield_now().await;
            }
        });
        let mut layer = AuthorityRewrite::new(server);
        let mut out = Vec::new();
        let mut buf = vec![0; read_size];
        loop {
            let n = layer.read(&mut buf).await.expect("read through the layer");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        writer.await.expect("writer");
        assert!(layer.is_rewriting());
        out
    }

    #[tokio::test]
    async fn reads_through_the_layer_match_the_rewriter() {
        let input = client_bytes();
        let want = rewrite(&input, input.len()).expect("rewrite");
        let seen = server_sees(&want);
        assert_eq!(seen.blocks.len(), 3);
        assert_eq!(seen.blocks[0].get(":authority"), None);
        assert!(seen.blocks[1..]
            .iter()
            .all(|b| b.get(":authority") == Some("localhost")));
        for (write_chunk, read_size) in [(1 << 20, 1 << 20), (1000, 64), (7, 16_384), (65_536, 9)] {
            let got = through_layer(input.clone(), write_chunk, read_size).await;
            assert!(
                got == want,
                "writes of {write_chunk}, reads of {read_size}: differs"
            );
        }
    }

    #[tokio::test]
    async fn a_broken_stream_after_a_rewrite_fails_the_read() {
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(
            &mut Encoder::new(),
            1,
            &request(Some(SOCKET), "/a/B", &[]),
        ));
        input.extend(frame(0x9, 0x4, 1, b"\x82"));
        let (mut client, server) = tokio::net::UnixStream::pair().expect("socketpair");
        client.write_all(&input).await.expect("write");
        drop(client);
        let mut layer = AuthorityRewrite::new(server);
        let mut out = Vec::new();
        let err = layer
            .read_to_end(&mut out)
            .await
            .expect_err("a stray CONTINUATION fails the connection");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("CONTINUATION"), "{err}");
        assert!(out.starts_with(PREFACE), "what came before was handed over");
    }

    #[tokio::test]
    async fn writes_reach_the_client_unchanged() {
        let (mut client, server) = tokio::net::UnixStream::pair().expect("socketpair");
        let mut layer = AuthorityRewrite::new(server);
        let reply = frame(0x1, 0x5, 1, b"\x88");
        layer.write_all(&reply).await.expect("write");
        layer.flush().await.expect("flush");
        let mut got = vec![0; reply.len()];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(got, reply);
    }
}
