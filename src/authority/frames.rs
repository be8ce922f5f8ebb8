//! The client→server HTTP/2 byte stream of one connection, walked frame by frame
//! without I/O: `Rewriter::next` looks at the bytes read so far and says how many to
//! forward as they are, or which bytes replace a header block.
//!
//! Only HEADERS and their CONTINUATIONs are looked into; every other frame is forwarded
//! untouched, its payload without being buffered. A header block is held until it is
//! complete (END_HEADERS), decoded, and either forwarded byte for byte or re-encoded
//! (see `blocks.rs`) and cut again into frames the server accepts.

use std::borrow::Cow;

use super::blocks::HeaderBlocks;
use super::RewriteError;

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const FRAME_HEADER_LEN: usize = 9;

pub const TYPE_HEADERS: u8 = 0x1;
pub const TYPE_CONTINUATION: u8 = 0x9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

/// The largest frame payload the rewritten frames carry. 16 KiB is the protocol's
/// initial SETTINGS_MAX_FRAME_SIZE, which every server accepts whatever it advertises
/// (hyper, under tonic, advertises exactly this by default).
pub const MAX_REWRITTEN_PAYLOAD: usize = 16_384;

/// The largest header block (all its frames, as sent) held for decoding. The server
/// refuses a header list above 16 KiB (hyper's default SETTINGS_MAX_HEADER_LIST_SIZE)
/// anyway; this bound only keeps a client from making the daemon buffer without end
/// (an endless CONTINUATION sequence).
pub const MAX_HEADER_BLOCK: usize = 1 << 20;

/// What to do with the bytes at the front of the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Forward the next `n` input bytes unchanged (n > 0).
    Forward(usize),
    /// Drop the next `consumed` input bytes and forward `with` in their place.
    Replace { consumed: usize, with: Vec<u8> },
    /// Nothing can be decided until more bytes are read.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Matching the client connection preface; `seen` bytes matched so far.
    Preface { seen: usize },
    /// Between or inside frames.
    Frames,
    /// Not an HTTP/2 client (no preface): everything is forwarded and the server
    /// answers as it would without this layer.
    Off,
}

/// A frame's 9-byte header (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8]) -> Option<FrameHeader> {
        let b: &[u8; FRAME_HEADER_LEN] = b.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
        Some(FrameHeader {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        let len = (self.len as u32).to_be_bytes();
        out.extend_from_slice(&len[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&self.stream.to_be_bytes());
    }
}

/// One connection's client→server direction.
pub struct Rewriter {
    phase: Phase,
    /// Payload bytes of a forwarded frame that have not been read yet.
    payload_left: usize,
    blocks: HeaderBlocks,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter::new()
    }
}

impl Rewriter {
    pub fn new() -> Rewriter {
        Rewriter {
            phase: Phase::Preface { seen: 0 },
            payload_left: 0,
            blocks: HeaderBlocks::new(),
        }
    }

    /// How many bytes coming next are the payload of a frame being forwarded: they
    /// may go to the server without being looked at (`consumed_payload` after).
    pub fn payload_left(&self) -> usize {
        match self.phase {
            Phase::Frames => self.payload_left,
            _ => 0,
        }
    }

    /// Records that `n` (≤ `payload_left()`) payload bytes went to the server directly.
    pub fn consumed_payload(&mut self, n: usize) {
        self.payload_left = self.payload_left.saturating_sub(n);
    }

    /// Whether everything from here on goes to the server as it is (a trusted or an
    /// unfollowable connection).
    pub fn is_off(&self) -> bool {
        matches!(self.phase, Phase::Off)
    }

    /// Whether header blocks are being re-encoded on this connection (a client sent an
    /// authority the server refuses).
    pub fn is_rewriting(&self) -> bool {
        self.blocks.is_rewriting()
    }

    /// Decides what happens to the front of `input` (the bytes read and not yet
    /// forwarded). An error is a connection error: the stream cannot be followed.
    ///
    /// Before any block was rewritten, what cannot be followed (broken framing or
    /// HPACK, oversized blocks) goes to the server as it is, and so does everything after
    /// it: the server then answers exactly as it would without this layer.
    pub fn next(&mut self, input: &[u8]) -> Result<Step, RewriteError> {
        match self.step(input) {
            Err(e) if !self.blocks.is_rewriting() => {
                tracing::debug!(error = %e, "cannot follow the client's frames; forwarding the rest as it is");
                self.phase = Phase::Off;
                Ok(Step::Forward(input.len()))
            }
            decided => decided,
        }
    }

    fn step(&mut self, input: &[u8]) -> Result<Step, RewriteError> {
        if input.is_empty() {
            return Ok(Step::NeedMore);
        }
        match self.phase {
            Phase::Off => Ok(Step::Forward(input.len())),
            Phase::Preface { seen } => {
                let n = input.len().min(PREFACE.len() - seen);
                if input[..n] != PREFACE[seen..seen + n] {
                    self.phase = Phase::Off;
                    return Ok(Step::Forward(input.len()));
                }
                self.phase = match seen + n {
                    done if done == PREFACE.len() => Phase::Frames,
                    seen => Phase::Preface { seen },
                };
                Ok(Step::Forward(n))
            }
            Phase::Frames if self.payload_left > 0 => {
                let n = input.len().min(self.payload_left);
                self.payload_left -= n;
                Ok(Step::Forward(n))
            }
            Phase::Frames => {
                let Some(header) = FrameHeader::parse(input) else {
                    return Ok(Step::NeedMore);
                };
                match header.kind {
                    TYPE_HEADERS => self.header_block(input),
                    TYPE_CONTINUATION => Err(RewriteError::StrayContinuation {
                        stream: header.stream,
                    }),
                    _ => {
                        let n = input.len().min(FRAME_HEADER_LEN + header.len);
                        self.payload_left = FRAME_HEADER_LEN + header.len - n;
                        Ok(Step::Forward(n))
                    }
                }
            }
        }
    }

    /// A HEADERS frame starts `input`: once its block is complete, forward it as it is
    /// or replace it.
    fn header_block(&mut self, input: &[u8]) -> Result<Step, RewriteError> {
        let Some(block) = HeaderBlock::split(input)? else {
            return Ok(Step::NeedMore);
        };
        let (priority, fragment) = block.fragment(input)?;
        match self.blocks.process(&fragment)? {
            None => {
                if self.blocks.is_trusted() {
                    self.phase = Phase::Off;
                }
                Ok(Step::Forward(block.len))
            }
            Some(encoded) => Ok(Step::Replace {
                consumed: block.len,
                with: block.frames_for(priority, &encoded),
            }),
        }
    }
}

/// Where the frames of one complete header block sit in the input.
struct HeaderBlock {
    /// The HEADERS frame.
    first: FrameHeader,
    /// Payload ranges of the CONTINUATION frames.
    continuations: Vec<std::ops::Range<usize>>,
    /// Bytes the block takes in the input, frame headers included.
    len: usize,
}

impl HeaderBlock {
    /// Finds the HEADERS frame at the front of `input` and its CONTINUATIONs. None
    /// until END_HEADERS has been read.
    fn split(input: &[u8]) -> Result<Option<HeaderBlock>, RewriteError> {
        let mut pos = 0;
        let mut first: Option<FrameHeader> = None;
        let mut continuations = Vec::new();
        loop {
            let Some(header) = input.get(pos..).and_then(FrameHeader::parse) else {
                return Ok(None);
            };
            match first {
                None => first = Some(header),
                Some(f) if header.kind == TYPE_CONTINUATION && header.stream == f.stream => {
                    continuations.push(pos + FRAME_HEADER_LEN..pos + FRAME_HEADER_LEN + header.len)
                }
                Some(f) => {
                    return Err(RewriteError::InterruptedHeaderBlock {
                        stream: f.stream,
                        kind: header.kind,
                        other_stream: header.stream,
                    })
                }
            }
            let end = pos + FRAME_HEADER_LEN + header.len;
            if end > MAX_HEADER_BLOCK {
                return Err(RewriteError::HeaderBlockTooLarge {
                    stream: header.stream,
                    limit: MAX_HEADER_BLOCK,
                });
            }
            if input.len() < end {
                return Ok(None);
            }
            pos = end;
            if header.flags & FLAG_END_HEADERS != 0 {
                break;
            }
        }
        let Some(first) = first else {
            return Ok(None);
        };
        Ok(Some(HeaderBlock {
            first,
            continuations,
            len: pos,
        }))
    }

    /// The HEADERS payload: (priority fields, block fragment), padding dropped.
    fn headers_payload<'a>(&self, input: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), RewriteError> {
        let payload = &input[FRAME_HEADER_LEN..FRAME_HEADER_LEN + self.first.len];
        let bad = || RewriteError::BadPadding {
            stream: self.first.stream,
        };
        let (payload, pad) = if self.first.flags & FLAG_PADDED != 0 {
            let (&pad, rest) = payload.split_first().ok_or_else(bad)?;
            (rest, usize::from(pad))
        } else {
            (payload, 0)
        };
        let (priority, payload) = if self.first.flags & FLAG_PRIORITY != 0 {
            if payload.len() < 5 {
                return Err(bad());
            }
            payload.split_at(5)
        } else {
            (&payload[..0], payload)
        };
        let end = payload.len().checked_sub(pad).ok_or_else(bad)?;
        Ok((priority, &payload[..end]))
    }

    /// The priority fields (empty without PRIORITY) and the whole header block
    /// fragment: HEADERS' own, then each CONTINUATION's.
    fn fragment<'a>(&self, input: &'a [u8]) -> Result<(&'a [u8], Cow<'a, [u8]>), RewriteError> {
        let (priority, first) = self.headers_payload(input)?;
        if self.continuations.is_empty() {
            return Ok((priority, Cow::Borrowed(first)));
        }
        let mut all = first.to_vec();
        for range in &self.continuations {
            all.extend_from_slice(&input[range.clone()]);
        }
        Ok((priority, Cow::Owned(all)))
    }

    /// `encoded` as frames: one HEADERS (END_STREAM and the priority fields kept, no
    /// padding), then CONTINUATIONs; none over `MAX_REWRITTEN_PAYLOAD`.
    fn frames_for(&self, priority: &[u8], encoded: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(encoded.len() + priority.len() + 2 * FRAME_HEADER_LEN);
        let room = MAX_REWRITTEN_PAYLOAD - priority.len();
        let (head, mut rest) = encoded.split_at(encoded.len().min(room));
        FrameHeader {
            len: priority.len() + head.len(),
            kind: TYPE_HEADERS,
            flags: (self.first.flags & (FLAG_END_STREAM | FLAG_PRIORITY))
                | if rest.is_empty() { FLAG_END_HEADERS } else { 0 },
            stream: self.first.stream,
        }
        .write(&mut out);
        out.extend_from_slice(priority);
        out.extend_from_slice(head);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_REWRITTEN_PAYLOAD));
            FrameHeader {
                len: chunk.len(),
                kind: TYPE_CONTINUATION,
                flags: if tail.is_empty() { FLAG_END_HEADERS } else { 0 },
                stream: self.first.stream,
            }
            .write(&mut out);
            out.extend_from_slice(chunk);
            rest = tail;
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use loona_hpack::{Decoder, Encoder};

    pub const SOCKET: &str = "/run/proxrt/proxrt.sock";
    pub const ENCODED_SOCKET: &str = "%2Frun%2Fproxrt%2Fproxrt.sock";

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameHeader {
            len: payload.len(),
            kind,
            flags,
            stream,
        }
        .write(&mut out);
        out.extend_from_slice(payload);
        out
    }

    /// A gRPC request's header list with `authority` (none when None) and `extra`.
    pub fn request(
        authority: Option<&str>,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let mut h = vec![(":method".to_owned(), "POST".to_owned())];
        h.push((":scheme".into(), "http".into()));
        h.push((":path".into(), path.into()));
        if let Some(a) = authority {
            h.push((":authority".into(), a.into()));
        }
        h.push(("content-type".into(), "application/grpc".into()));
        h.push(("te".into(), "trailers".into()));
        h.push(("user-agent".into(), "grpc-go/1.33.3".into()));
        h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        h
    }

    pub fn encode(encoder: &mut Encoder<'_>, headers: &[(String, String)]) -> Vec<u8> {
        encoder.encode(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    /// One HEADERS frame (END_HEADERS) carrying `headers` on `stream`.
    pub fn headers_frame(
        encoder: &mut Encoder<'_>,
        stream: u32,
        headers: &[(String, String)],
    ) -> Vec<u8> {
        frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            stream,
            &encode(encoder, headers),
        )
    }

    /// Feeds `input` to a fresh rewriter `chunk` bytes at a time, as reads would bring
    /// it; returns what goes to the server.
    pub fn rewrite(input: &[u8], chunk: usize) -> Result<Vec<u8>, RewriteError> {
        let mut r = Rewriter::new();
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            pending.extend_from_slice(piece);
            loop {
                match r.next(&pending)? {
                    Step::Forward(n) => {
                        assert!(
                            n > 0 && n <= pending.len(),
                            "Forward({n}) of {}",
                            pending.len()
                        );
                        out.extend(pending.drain(..n));
                    }
                    Step::Replace { consumed, with } => {
                        pending.drain(..consumed);
                        out.extend(with);
                    }
                    Step::NeedMore => break,
                }
            }
        }
        assert!(pending.is_empty(), "{} bytes never decided", pending.len());
        Ok(out)
    }

    /// What the server makes of the bytes: every frame, and each header block decoded
    /// (with one decoder for the connection, as the server has) with the flags and
    /// priority fields of its HEADERS frame. Asserts the framing rules the server
    /// enforces.
    #[derive(Debug, Default)]
    pub struct Seen {
        pub frames: Vec<FrameHeader>,
        pub blocks: Vec<SeenBlock>,
    }

    #[derive(Debug)]
    pub struct SeenBlock {
        pub stream: u32,
        pub flags: u8,
        pub priority: Vec<u8>,
        pub headers: Vec<(String, String)>,
        pub frames: usize,
    }

    impl SeenBlock {
        pub fn get(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    pub fn server_sees(bytes: &[u8]) -> Seen {
        assert_eq!(&bytes[..24], PREFACE, "the preface goes first");
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(4096);
        let mut seen = Seen::default();
        let mut pos = 24;
        let mut open: Option<(SeenBlock, Vec<u8>)> = None;
        while pos < bytes.len() {
            let h = FrameHeader::parse(&bytes[pos..]).expect("whole frame header");
            let payload = &bytes[pos + 9..pos + 9 + h.len];
            pos += 9 + h.len;
            seen.frames.push(h);
            if h.kind == TYPE_HEADERS || h.kind == TYPE_CONTINUATION {
                assert!(
                    h.len <= MAX_REWRITTEN_PAYLOAD,
                    "header frame over 16 KiB: {h:?}"
                );
            }
            let done = match (h.kind, open.as_mut()) {
                (TYPE_HEADERS, None) => {
                    let mut p = payload;
                    let mut pad = 0;
                    if h.flags & FLAG_PADDED != 0 {
                        pad = usize::from(p[0]);
                        p = &p[1..];
                    }
                    let mut priority = Vec::new();
                    if h.flags & FLAG_PRIORITY != 0 {
                        priority = p[..5].to_vec();
                        p = &p[5..];
                    }
                    let block = SeenBlock {
                        stream: h.stream,
                        flags: h.flags,
                        priority,
                        headers: Vec::new(),
                        frames: 1,
                    };
                    open = Some((block, p[..p.len() - pad].to_vec()));
                    h.flags & FLAG_END_HEADERS != 0
                }
                (TYPE_CONTINUATION, Some((block, fragment))) => {
                    assert_eq!(h.stream, block.stream);
                    block.frames += 1;
                    fragment.extend_from_slice(payload);
                    h.flags & FLAG_END_HEADERS != 0
                }
                (_, Some(_)) => panic!("frame {h:?} inside a header block"),
                (TYPE_CONTINUATION, None) => panic!("stray CONTINUATION"),
                _ => false,
            };
            if done {
                let (mut block, fragment) = open.take().expect("open block");
                block.headers = decoder
                    .decode(&fragment)
                    .expect("server decodes the block")
                    .into_iter()
                    .map(|(n, v)| {
                        (
                            String::from_utf8(n).expect("utf-8"),
                            String::from_utf8(v).expect("utf-8"),
                        )
                    })
                    .collect();
                seen.blocks.push(block);
            }
        }
        assert!(open.is_none(), "header block left open");
        seen
    }

    fn with_preface(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        for f in frames {
            out.extend_from_slice(f);
        }
        out
    }

    /// `headers` with its `:authority` replaced by `localhost`.
    fn as_rewritten(headers: &[(String, String)]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(n, v)| match n.as_str() {
                ":authority" => (n.clone(), "localhost".to_owned()),
                _ => (n.clone(), v.clone()),
            })
            .collect()
    }

    const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

    #[test]
    fn valid_authorities_pass_byte_for_byte() {
        let mut enc = Encoder::new();
        let mut frames = vec![SETTINGS.to_vec()];
        for (i, authority) in [
            Some("localhost"),
            None,
            Some("127.0.0.1:10250"),
            Some("localhost"),
        ]
        .into_iter()
        .enumerate()
        {
            let stream = 1 + 2 * i as u32;
            let h = request(authority, "/runtime.v1.RuntimeService/Version", &[]);
            frames.push(headers_frame(&mut enc, stream, &h));
            frames.push(frame(
                0x0,
                FLAG_END_STREAM,
                stream,
                b"\0\0\0\0\x04\x0a\x02v1",
            ));
        }
        let input = with_preface(&frames);
        for chunk in [1, 7, 9, 100, input.len()] {
            assert_eq!(rewrite(&input, chunk).unwrap(), input, "chunk {chunk}");
        }
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost() {
        for authority in [SOCKET, ENCODED_SOCKET, "", "unix:///run/proxrt.sock"] {
            let h = request(Some(authority), "/runtime.v1.RuntimeService/Version", &[]);
            let input = with_preface(&[
                SETTINGS.to_vec(),
                headers_frame(&mut Encoder::new(), 1, &h),
                frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0"),
            ]);
            let out = rewrite(&input, 5).unwrap();
            let seen = server_sees(&out);
            if is_valid_authority_str(authority) {
                assert_eq!(out, input, "{authority:?} is valid: untouched");
                continue;
            }
            assert_eq!(seen.blocks.len(), 1);
            assert_eq!(seen.blocks[0].headers, as_rewritten(&h), "{authority:?}");
            assert_eq!(seen.blocks[0].flags, FLAG_END_HEADERS);
            let kinds: Vec<u8> = seen.frames.iter().map(|f| f.kind).collect();
            assert_eq!(kinds, [0x4, TYPE_HEADERS, 0x0], "{authority:?}");
        }
    }

    fn is_valid_authority_str(a: &str) -> bool {
        super::super::is_valid_authority(a.as_bytes())
    }

    #[test]
    fn the_server_refuses_the_authorities_clients_send_on_unix_sockets() {
        // What h2 refuses is what the layer replaces: the same parser decides both.
        assert!(!is_valid_authority_str(SOCKET));
        assert!(!is_valid_authority_str(ENCODED_SOCKET));
        assert!(!is_valid_authority_str(""));
        assert!(is_valid_authority_str("localhost"));
        assert!(is_valid_authority_str("[::1]:10010"));
    }

    #[test]
    fn no_authority_passes_untouched() {
        let h = request(None, "/runtime.v1.RuntimeService/Version", &[]);
        let input = with_preface(&[headers_frame(&mut Encoder::new(), 1, &h)]);
        assert_eq!(rewrite(&input, 3).unwrap(), input);
    }

    #[test]
    fn padding_is_dropped_and_priority_and_end_stream_kept() {
        let h = request(Some(SOCKET), "/runtime.v1.RuntimeService/Version", &[]);
        let fragment = encode(&mut Encoder::new(), &h);
        let priority = [0x80, 0, 0, 0x03, 0xff]; // exclusive, depends on stream 3, weight 256
        let mut payload = vec![7u8]; // pad length
        payload.extend_from_slice(&priority);
        payload.extend_from_slice(&fragment);
        payload.extend_from_slice(&[0; 7]);
        let flags = FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY;
        let input = with_preface(&[frame(TYPE_HEADERS, flags, 5, &payload)]);
        let seen = server_sees(&rewrite(&input, 4).unwrap());
        let block = &seen.blocks[0];
        assert_eq!(block.stream, 5);
        assert_eq!(
            block.flags,
            FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PRIORITY,
            "PADDED dropped, the rest kept"
        );
        assert_eq!(block.priority, priority);
        assert_eq!(block.get(":authority"), Some("localhost"));
        assert_eq!(block.headers, as_rewritten(&h));
    }

    #[test]
    fn a_block_split_over_continuations_is_reassembled() {
        let h = request(
            Some(SOCKET),
            "/runtime.v1.RuntimeService/ListContainers",
            &[("x-one", "1"), ("x-two", "2")],
        );
        let fragment = encode(&mut Encoder::new(), &h);
        let (a, rest) = fragment.split_at(10);
        let (b, c) = rest.split_at(rest.len() / 2);
        let input = with_preface(&[
            frame(TYPE_HEADERS, FLAG_END_STREAM, 1, a),
            frame(TYPE_CONTINUATION, 0, 1, b),
            frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, c),
            SETTINGS.to_vec(),
        ]);
        for chunk in [1, 13, input.len()] {
            let seen = server_sees(&rewrite(&input, chunk).unwrap());
            assert_eq!(seen.blocks.len(), 1);
            assert_eq!(seen.blocks[0].headers, as_rewritten(&h));
            assert_eq!(seen.blocks[0].frames, 1, "a small block fits one frame");
            assert_eq!(seen.blocks[0].flags, FLAG_END_STREAM | FLAG_END_HEADERS);
            assert_eq!(seen.frames.last().map(|f| f.kind), Some(0x4));
        }
    }

    #[test]
    fn a_huge_block_is_cut_into_frames_the_server_accepts() {
        let big = "x".repeat(40_000);
        let h = request(
            Some(SOCKET),
            "/runtime.v1.RuntimeService/Version",
            &[("x-big", &big), ("x-after", "end")],
        );
        let fragment = encode(&mut Encoder::new(), &h);
        // The client may send frames as large as the server allows (here 64 KiB).
        let input = with_preface(&[frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_PRIORITY,
            3,
            &[&[0, 0, 0, 1, 15][..], &fragment].concat(),
        )]);
        let seen = server_sees(&rewrite(&input, 4096).unwrap());
        let block = &seen.blocks[0];
        assert_eq!(block.headers, as_rewritten(&h));
        assert_eq!(block.priority, [0, 0, 0, 1, 15]);
        assert!(block.frames >= 3, "{} frames", block.frames);
        let flags: Vec<u8> = seen.frames.iter().map(|f| f.flags).collect();
        assert_eq!(flags.first(), Some(&FLAG_PRIORITY));
        assert_eq!(flags.last(), Some(&FLAG_END_HEADERS));
    }

    #[test]
    fn a_connection_whose_first_authority_is_valid_is_left_alone() {
        let mut enc = Encoder::new();
        let requests = [
            request(Some("localhost"), "/runtime.v1.RuntimeService/Version", &[]),
            request(Some(SOCKET), "/runtime.v1.RuntimeService/Version", &[]),
        ];
        let frames: Vec<_> = requests
            .iter()
            .enumerate()
            .map(|(i, h)| headers_frame(&mut enc, 1 + 2 * i as u32, h))
            .collect();
        let input = with_preface(&frames);
        // Byte for byte, and undecoded: gRPC clients keep one authority per connection.
        assert_eq!(rewrite(&input, 11).unwrap(), input);
    }

    #[test]
    fn dynamic_table_stays_consistent_across_requests() {
        // The client's encoder indexes fields; the first request has no authority and
        // passes as sent, the second is rewritten (and every one after it).
        let mut enc = Encoder::new();
        let meta = [("x-trace", "abc"), ("grpc-timeout", "2S")];
        let requests = [
            request(None, "/runtime.v1.RuntimeService/Version", &meta),
            request(Some(SOCKET), "/runtime.v1.RuntimeService/Version", &meta),
            request(
                Some(SOCKET),
                "/runtime.v1.RuntimeService/ListContainers",
                &meta,
            ),
            request(
                Some("localhost"),
                "/runtime.v1.RuntimeService/Status",
                &meta,
            ),
            request(
                None,
                "/runtime.v1.RuntimeService/Version",
                &[("x-new", "1")],
            ),
            request(Some(SOCKET), "/runtime.v1.RuntimeService/Version", &meta),
        ];
        let mut frames = Vec::new();
        for (i, h) in requests.iter().enumerate() {
            frames.push(headers_frame(&mut enc, 1 + 2 * i as u32, h));
        }
        let input = with_preface(&frames);
        let out = rewrite(&input, 11).unwrap();
        let first_len = 24 + frames[0].len();
        assert_eq!(
            out[..first_len],
            input[..first_len],
            "the first passes as sent"
        );
        let seen = server_sees(&out);
        let got: Vec<_> = seen.blocks.iter().map(|b| b.headers.clone()).collect();
        let want: Vec<_> = requests.iter().map(|h| as_rewritten(h)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn many_requests_evicting_entries_stay_consistent() {
        // More indexed fields than a 4 KiB table holds, so both tables evict.
        let mut enc = Encoder::new();
        let mut frames = Vec::new();
        let mut want = Vec::new();
        for i in 0..200u32 {
            let value = format!("{i:0>100}");
            let authority = if i % 3 == 0 { SOCKET } else { "localhost" };
            let h = request(
                Some(authority),
                "/runtime.v1.RuntimeService/ContainerStatus",
                &[("x-id", &value), ("x-same", "same")],
            );
            frames.push(headers_frame(&mut enc, 1 + 2 * i, &h));
            want.push(as_rewritten(&h));
        }
        let out = rewrite(&with_preface(&frames), 1000).unwrap();
        let got: Vec<_> = server_sees(&out)
            .blocks
            .into_iter()
            .map(|b| b.headers)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn client_table_size_updates_are_followed() {
        let mut enc = Encoder::new();
        let h = request(Some(SOCKET), "/a/B", &[("x-k", "v")]);
        let mut block = vec![0x20]; // size update to 0 ...
        loona_hpack::encoder::encode_integer_into(1024, 5, 0x20, &mut block).unwrap(); // ... then 1024
        enc.set_max_table_size(1024);
        block.extend(encode(&mut enc, &h));
        let second = encode(&mut enc, &h);
        let input = with_preface(&[
            frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block),
            frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &second),
        ]);
        let seen = server_sees(&rewrite(&input, 64).unwrap());
        assert_eq!(seen.blocks[0].headers, as_rewritten(&h));
        assert_eq!(seen.blocks[1].headers, as_rewritten(&h));
    }

    #[test]
    fn other_frames_pass_untouched_even_split_across_reads() {
        let data = vec![0xab; 50_000];
        let mut enc = Encoder::new();
        let input = with_preface(&[
            SETTINGS.to_vec(),
            frame(0x4, 0x1, 0, b""),         // SETTINGS ack
            frame(0x8, 0, 0, &[0, 1, 0, 0]), // WINDOW_UPDATE
            frame(0x6, 0, 0, b"pingpong"),   // PING
            headers_frame(&mut enc, 1, &request(Some(SOCKET), "/a/B", &[])),
            frame(0x0, 0x8, 1, &[&[3u8][..], &data, &[0, 0, 0]].concat()), // padded DATA
            frame(0x3, 0, 1, &[0, 0, 0, 8]),                               // RST_STREAM
            frame(0x7, 0, 0, &[0; 8]),                                     // GOAWAY
        ]);
        for chunk in [1, 9, 1000, input.len()] {
            let seen = server_sees(&rewrite(&input, chunk).unwrap());
            let kinds: Vec<u8> = seen.frames.iter().map(|f| f.kind).collect();
            assert_eq!(kinds, [4, 4, 8, 6, 1, 0, 3, 7]);
            assert_eq!(
                seen.frames[5].len, 50_004,
                "DATA payload and padding as sent"
            );
        }
    }

    #[test]
    fn not_http2_is_forwarded_as_it_is() {
        let input = b"GET / HTTP/1.1\r\nHost: /run/proxrt.sock\r\n\r\n";
        assert_eq!(rewrite(input, 3).unwrap(), input);
    }

    /// The error `frames` make once the connection is being rewritten. Before that,
    /// they go to the server as they are.
    fn error_of(frames: &[Vec<u8>]) -> RewriteError {
        let verbatim = with_preface(frames);
        assert_eq!(
            rewrite(&verbatim, 7).expect("passed as it is"),
            verbatim,
            "before any rewrite the server judges"
        );
        let mut enc = Encoder::new();
        let mut all = vec![headers_frame(
            &mut enc,
            1,
            &request(Some(SOCKET), "/a/B", &[]),
        )];
        all.extend(frames.iter().cloned());
        let input = with_preface(&all);
        match rewrite(&input, input.len()) {
            Err(e) => e,
            Ok(out) => panic!("expected an error, forwarded {} bytes", out.len()),
        }
    }

    #[test]
    fn broken_framing_is_a_connection_error() {
        let h = encode(&mut Encoder::new(), &request(Some(SOCKET), "/a/B", &[]));
        let e = error_of(&[frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &h)]);
        assert!(
            matches!(e, RewriteError::StrayContinuation { stream: 1 }),
            "{e}"
        );

        let e = error_of(&[
            frame(TYPE_HEADERS, 0, 1, &h[..5]),
            frame(0x0, 0, 1, b"data"),
        ]);
        assert!(
            matches!(e, RewriteError::InterruptedHeaderBlock { .. }),
            "{e}"
        );

        let e = error_of(&[
            frame(TYPE_HEADERS, 0, 1, &h[..5]),
            frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &h[5..]),
        ]);
        assert!(
            matches!(e, RewriteError::InterruptedHeaderBlock { .. }),
            "{e}"
        );

        let e = error_of(&[frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_PADDED,
            1,
            &[200, 1, 2],
        )]);
        assert!(matches!(e, RewriteError::BadPadding { .. }), "{e}");

        let e = error_of(&[frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_PRIORITY,
            1,
            &[1, 2],
        )]);
        assert!(matches!(e, RewriteError::BadPadding { .. }), "{e}");
    }

    #[test]
    fn broken_hpack_is_a_connection_error() {
        for block in [
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..], // integer too long
            &[0xc0],                                   // index 64: empty dynamic table
            &[0x80],                                   // index 0
            &[0x41, 0x85, 0xff],                       // string longer than the block
            &[0x3f, 0xe1, 0x3f],                       // table size update over 4096
        ] {
            let e = error_of(&[frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, block)]);
            assert!(matches!(e, RewriteError::Hpack(_)), "{block:?}: {e}");
        }
    }

    #[test]
    fn endless_continuations_are_refused() {
        let mut frames = vec![frame(TYPE_HEADERS, 0, 1, &[0x82])];
        for _ in 0..(MAX_HEADER_BLOCK / 16_384 + 2) {
            frames.push(frame(TYPE_CONTINUATION, 0, 1, &[0x82; 16_384]));
        }
        let e = error_of(&frames);
        assert!(matches!(e, RewriteError::HeaderBlockTooLarge { .. }), "{e}");
        // Refused from the frame header on: the oversized frame is never buffered.
        let huge_headers = [0xff, 0xff, 0xff, TYPE_HEADERS, 0, 0, 0, 0, 1];
        let e = error_of(&[huge_headers.to_vec()]);
        assert!(matches!(e, RewriteError::HeaderBlockTooLarge { .. }), "{e}");
    }

    #[test]
    fn small_indexed_references_cannot_blow_up_memory() {
        // One 4000-byte field in the table, then a block of 1-byte references to it.
        let big = "v".repeat(4000);
        let mut block = encode(&mut Encoder::new(), &[("x-big".into(), big)]);
        block.extend(std::iter::repeat_n(0x80 | 62, 1000));
        let e = error_of(&[frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block)]);
        assert!(matches!(e, RewriteError::HeaderListTooLarge { .. }), "{e}");
    }

    #[test]
    fn garbage_never_panics() {
        // xorshift: the same bytes on every run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let rewritten = headers_frame(&mut Encoder::new(), 1, &request(Some(SOCKET), "/a/B", &[]));
        for round in 0..2000 {
            let len = (next() % 300) as usize;
            // A rewritten request first, so that nothing is forwarded unexamined.
            let mut input = with_preface(std::slice::from_ref(&rewritten));
            let at = input.len();
            // Mostly plausible frame headers, so the HPACK side gets garbage too.
            let kind = [TYPE_HEADERS, TYPE_CONTINUATION, 0, 4][(next() % 4) as usize];
            let flags = (next() & 0x2d) as u8;
            input.extend(frame(kind, flags, 1, &[])[..9].iter());
            input[at..at + 3].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
            input.extend((0..len).map(|_| next() as u8));
            if round % 2 == 0 {
                input.extend((0..(next() % 64)).map(|_| next() as u8));
            }
            // Ok or a RewriteError; a panic fails the test.
            let _ = rewrite_lenient(&input);
        }
    }

    /// Like `rewrite`, without asserting every byte was decided (garbage may end
    /// mid-frame).
    fn rewrite_lenient(input: &[u8]) -> Result<usize, RewriteError> {
        let mut r = Rewriter::new();
        let mut pending = input.to_vec();
        let mut forwarded = 0;
        loop {
            match r.next(&pending)? {
                Step::Forward(n) => {
                    pending.drain(..n);
                    forwarded += n;
                }
                Step::Replace { consumed, with } => {
                    pending.drain(..consumed);
                    forwarded += with.len();
                }
                Step::NeedMore => return Ok(forwarded),
            }
        }
    }
}
