//! SPDY/3.1 framing: the eight control frames and DATA, with header blocks compressed by
//! zlib against SPDY/3's dictionary (one compression context per direction for the whole
//! connection, as the spec requires: a block cannot be decoded without the ones before it).
//!
//! Every length on the wire is checked against a bound before anything is allocated, so a
//! client cannot make the daemon hold more than one control frame and one read buffer per
//! connection; a malformed frame is a `FrameError`, never a panic.

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub(crate) const VERSION: u16 = 3;

pub(crate) const FLAG_FIN: u8 = 0x01;
pub(crate) const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// SETTINGS ids (SPDY/3 2.6.4).
pub(crate) const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// RST_STREAM status codes (SPDY/3 2.6.3).
pub(crate) const RST_PROTOCOL_ERROR: u32 = 1;
pub(crate) const RST_INVALID_STREAM: u32 = 2;
pub(crate) const RST_REFUSED_STREAM: u32 = 3;
#[cfg(test)]
pub(crate) const RST_CANCEL: u32 = 5;
pub(crate) const RST_FLOW_CONTROL_ERROR: u32 = 7;
pub(crate) const RST_STREAM_IN_USE: u32 = 8;
pub(crate) const RST_STREAM_ALREADY_CLOSED: u32 = 9;

/// GOAWAY status codes (SPDY/3 2.6.6).
pub(crate) const GOAWAY_OK: u32 = 0;
pub(crate) const GOAWAY_PROTOCOL_ERROR: u32 = 1;

/// The largest control frame accepted: Kubernetes' header blocks are a few dozen bytes
/// compressed; anything near this is not a client we serve.
pub(crate) const MAX_CONTROL_LEN: usize = 64 * 1024;
/// The largest header block after decompression (bounds a zlib bomb).
pub(crate) const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// The largest DATA payload the codec writes; incoming DATA may be as large as the wire
/// allows (24 bits) but is handed on in pieces of at most the read buffer's size.
pub(crate) const MAX_DATA_WRITE: usize = 32 * 1024;
/// The length field is 24 bits.
const MAX_WIRE_LEN: usize = (1 << 24) - 1;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// Header names (lowercase) and values; a value holding several values separates them
/// with NUL, as on the wire.
pub(crate) type Headers = Vec<(String, String)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    /// A DATA frame, or (when read) a piece of one: FIN is only on the last piece.
    Data {
        stream: u32,
        flags: u8,
        data: Bytes,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FrameError {
    #[error("SPDY version {0} (only 3 is spoken)")]
    Version(u16),
    #[error("control frame of {0} bytes (at most {MAX_CONTROL_LEN})")]
    TooLarge(usize),
    #[error("{kind} frame: {what}")]
    Malformed { kind: &'static str, what: String },
    #[error("header block: {0}")]
    HeaderBlock(String),
}

fn malformed(kind: &'static str, what: impl Into<String>) -> FrameError {
    FrameError::Malformed {
        kind,
        what: what.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Header compression
// ---------------------------------------------------------------------------------------

/// SPDY/3's zlib dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1): these words, each
/// preceded by its length as a 32-bit big-endian number, then the tail as is.
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1423);
    for w in DICTIONARY_WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    d
}

/// Compresses the header blocks one side of the connection sends.
pub(crate) struct HeaderEncoder {
    z: Compress,
}

impl HeaderEncoder {
    pub(crate) fn new() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        // Setting a dictionary on a fresh stream cannot fail with the zlib-rs backend.
        let _ = z.set_dictionary(&dictionary());
        HeaderEncoder { z }
    }

    fn encode(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let mut raw = Vec::with_capacity(64);
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for s in [name.as_str(), value.as_str()] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        if raw.len() > MAX_HEADER_BLOCK {
            return Err(FrameError::HeaderBlock(format!(
                "{} bytes to send (at most {MAX_HEADER_BLOCK})",
                raw.len()
            )));
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before_in = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::HeaderBlock(format!("compress: {e}")))?;
            input = &input[(self.z.total_in() - before_in) as usize..];
            // A sync flush is complete once the input is used up and zlib left spare room.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Decompresses the header blocks the peer sends.
pub(crate) struct HeaderDecoder {
    z: Decompress,
}

impl HeaderDecoder {
    pub(crate) fn new() -> Self {
        HeaderDecoder {
            z: Decompress::new(true),
        }
    }

    fn decode(&mut self, block: &[u8]) -> Result<Headers, FrameError> {
        let err = |what: String| FrameError::HeaderBlock(what);
        let mut out: Vec<u8> = Vec::with_capacity(256);
        let mut input = block;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(err(format!(
                        "more than {MAX_HEADER_BLOCK} bytes once decompressed"
                    )));
                }
                out.reserve(out.len().min(MAX_HEADER_BLOCK - out.len()));
            }
            let before_in = self.z.total_in();
            let before_out = out.len();
            match self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => return Err(err("zlib stream ended".into())),
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(_) => {
                        self.z
                            .set_dictionary(&dictionary())
                            .map_err(|e| err(format!("dictionary: {e}")))?;
                    }
                    None => return Err(err(format!("decompress: {e}"))),
                },
            }
            input = &input[(self.z.total_in() - before_in) as usize..];
            let progressed = out.len() > before_out || self.z.total_in() > before_in;
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if !progressed && out.len() < out.capacity() {
                return Err(err("truncated compressed block".into()));
            }
        }
        parse_header_block(&out)
    }
}

fn parse_header_block(mut b: &[u8]) -> Result<Headers, FrameError> {
    let err = |what: &str| FrameError::HeaderBlock(what.to_string());
    fn take_u32(b: &mut &[u8]) -> Option<usize> {
        if b.len() < 4 {
            return None;
        }
        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        *b = &b[4..];
        Some(n)
    }
    fn take_str(b: &mut &[u8]) -> Option<String> {
        let n = take_u32(b)?;
        if b.len() < n {
            return None;
        }
        let s = String::from_utf8(b[..n].to_vec()).ok()?;
        *b = &b[n..];
        Some(s)
    }
    let count = take_u32(&mut b).ok_or_else(|| err("no pair count"))?;
    // Each pair takes at least 8 bytes: a count beyond that is a lie, not an allocation.
    if count > b.len() / 8 {
        return Err(err("more pairs announced than the block holds"));
    }
    let mut headers = Headers::with_capacity(count);
    for _ in 0..count {
        let name = take_str(&mut b).ok_or_else(|| err("truncated or non-UTF-8 name"))?;
        let value = take_str(&mut b).ok_or_else(|| err("truncated or non-UTF-8 value"))?;
        if name.is_empty() {
            return Err(err("empty header name"));
        }
        if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            return Err(err("duplicate header name"));
        }
        headers.push((name.to_ascii_lowercase(), value));
    }
    if !b.is_empty() {
        return Err(err("bytes after the last pair"));
    }
    Ok(headers)
}

/// The value of header `name` (the first, when it holds several).
pub(crate) fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

fn control_head(out: &mut Vec<u8>, kind: u16, flags: u8, len: usize) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
}

/// Appends `frame`'s bytes to `out`.
pub(crate) fn encode(
    frame: &Frame,
    enc: &mut HeaderEncoder,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let id = |n: u32| (n & 0x7fff_ffff).to_be_bytes();
    match frame {
        Frame::SynStream {
            stream,
            associated,
            priority,
            flags,
            headers,
        } => {
            let block = enc.encode(headers)?;
            control_head(out, TYPE_SYN_STREAM, *flags, 10 + block.len());
            out.extend_from_slice(&id(*stream));
            out.extend_from_slice(&id(*associated));
            out.push((priority & 0x07) << 5);
            out.push(0); // slot
            out.extend_from_slice(&block);
        }
        Frame::SynReply {
            stream,
            flags,
            headers,
        }
        | Frame::Headers {
            stream,
            flags,
            headers,
        } => {
            let kind = if matches!(frame, Frame::SynReply { .. }) {
                TYPE_SYN_REPLY
            } else {
                TYPE_HEADERS
            };
            let block = enc.encode(headers)?;
            control_head(out, kind, *flags, 4 + block.len());
            out.extend_from_slice(&id(*stream));
            out.extend_from_slice(&block);
        }
        Frame::RstStream { stream, status } => {
            control_head(out, TYPE_RST_STREAM, 0, 8);
            out.extend_from_slice(&id(*stream));
            out.extend_from_slice(&status.to_be_bytes());
        }
        Frame::Settings { flags, entries } => {
            control_head(out, TYPE_SETTINGS, *flags, 4 + 8 * entries.len());
            out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            for s in entries {
                out.push(s.flags);
                out.extend_from_slice(&s.id.to_be_bytes()[1..]);
                out.extend_from_slice(&s.value.to_be_bytes());
            }
        }
        Frame::Ping { id: ping } => {
            control_head(out, TYPE_PING, 0, 4);
            out.extend_from_slice(&ping.to_be_bytes());
        }
        Frame::GoAway { last_good, status } => {
            control_head(out, TYPE_GOAWAY, 0, 8);
            out.extend_from_slice(&id(*last_good));
            out.extend_from_slice(&status.to_be_bytes());
        }
        Frame::WindowUpdate { stream, delta } => {
            control_head(out, TYPE_WINDOW_UPDATE, 0, 8);
            out.extend_from_slice(&id(*stream));
            out.extend_from_slice(&id(*delta));
        }
        Frame::Data {
            stream,
            flags,
            data,
        } => {
            if data.len() > MAX_WIRE_LEN {
                return Err(malformed("DATA", format!("{} bytes to send", data.len())));
            }
            out.extend_from_slice(&id(*stream));
            out.push(*flags);
            out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(data);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

/// Reads frames out of the bytes a connection delivered. DATA payloads are handed on as
/// they arrive (in pieces), so only a control frame is ever buffered whole.
pub(crate) struct FrameReader {
    headers: HeaderDecoder,
    /// The DATA frame being passed through: stream, flags, bytes still to come.
    data: Option<(u32, u8, usize)>,
}

impl FrameReader {
    pub(crate) fn new() -> Self {
        FrameReader {
            headers: HeaderDecoder::new(),
            data: None,
        }
    }

    /// Inside a DATA frame: the last piece handed out was not its end.
    #[cfg(test)]
    pub(crate) fn in_data(&self) -> bool {
        self.data.is_some()
    }

    /// The next frame (or DATA piece) in `buf`, consuming its bytes; None until more bytes
    /// are needed. Ok(None) with an unknown control frame type consumes and skips it, as
    /// the spec asks; call again.
    pub(crate) fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some((stream, flags, left)) = self.data {
                if left > 0 && buf.is_empty() {
                    return Ok(None);
                }
                let n = left.min(buf.len());
                let data = buf.split_to(n).freeze();
                let last = n == left;
                self.data = if last {
                    None
                } else {
                    Some((stream, flags, left - n))
                };
                return Ok(Some(Frame::Data {
                    stream,
                    flags: if last { flags } else { flags & !FLAG_FIN },
                    data,
                }));
            }
            if buf.len() < 8 {
                return Ok(None);
            }
            let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
            let flags = buf[4];
            if buf[0] & 0x80 == 0 {
                let stream = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if stream == 0 {
                    return Err(malformed("DATA", "stream 0"));
                }
                buf.advance(8);
                self.data = Some((stream, flags, len));
                continue;
            }
            let version = u16::from_be_bytes([buf[0], buf[1]]) & 0x7fff;
            if version != VERSION {
                return Err(FrameError::Version(version));
            }
            if len > MAX_CONTROL_LEN {
                return Err(FrameError::TooLarge(len));
            }
            if buf.len() < 8 + len {
                buf.reserve(8 + len - buf.len());
                return Ok(None);
            }
            let kind = u16::from_be_bytes([buf[2], buf[3]]);
            buf.advance(8);
            let payload = buf.split_to(len);
            if let Some(frame) = self.control(kind, flags, &payload)? {
                return Ok(Some(frame));
            }
        }
    }

    fn control(&mut self, kind: u16, flags: u8, p: &[u8]) -> Result<Option<Frame>, FrameError> {
        let word = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let need = |name: &'static str, n: usize, exact: bool| {
            if p.len() < n || (exact && p.len() != n) {
                Err(malformed(name, format!("{} bytes", p.len())))
            } else {
                Ok(())
            }
        };
        Ok(Some(match kind {
            TYPE_SYN_STREAM => {
                need("SYN_STREAM", 10, false)?;
                Frame::SynStream {
                    stream: word(0) & 0x7fff_ffff,
                    associated: word(4) & 0x7fff_ffff,
                    priority: p[8] >> 5,
                    flags,
                    headers: self.headers.decode(&p[10..])?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need("SYN_REPLY/HEADERS", 4, false)?;
                let stream = word(0) & 0x7fff_ffff;
                let headers = self.headers.decode(&p[4..])?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream,
                        flags,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need("RST_STREAM", 8, true)?;
                Frame::RstStream {
                    stream: word(0) & 0x7fff_ffff,
                    status: word(4),
                }
            }
            TYPE_SETTINGS => {
                need("SETTINGS", 4, false)?;
                let count = word(0) as usize;
                if p.len() - 4 != count.saturating_mul(8) {
                    return Err(malformed(
                        "SETTINGS",
                        format!("{count} entries in {} bytes", p.len()),
                    ));
                }
                let entries = (0..count)
                    .map(|i| {
                        let at = 4 + 8 * i;
                        Setting {
                            flags: p[at],
                            id: word(at) & 0x00ff_ffff,
                            value: word(at + 4),
                        }
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                need("PING", 4, true)?;
                Frame::Ping { id: word(0) }
            }
            TYPE_GOAWAY => {
                // SPDY/3 added the status code; tolerate SPDY/2-sized frames without it.
                need("GOAWAY", 4, false)?;
                Frame::GoAway {
                    last_good: word(0) & 0x7fff_ffff,
                    status: if p.len() >= 8 { word(4) } else { GOAWAY_OK },
                }
            }
            TYPE_WINDOW_UPDATE => {
                need("WINDOW_UPDATE", 8, true)?;
                Frame::WindowUpdate {
                    stream: word(0) & 0x7fff_ffff,
                    delta: word(4) & 0x7fff_ffff,
                }
            }
            _ => return Ok(None),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 3,
                flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
                headers: hdrs(&[("streamtype", "error")]),
            },
            Frame::SynReply {
                stream: 1,
                flags: 0,
                headers: Headers::new(),
            },
            Frame::RstStream {
                stream: 3,
                status: RST_CANCEL,
            },
            Frame::Settings {
                flags: 1,
                entries: vec![Setting {
                    flags: 0,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: 1000,
                }],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good: 5,
                status: GOAWAY_PROTOCOL_ERROR,
            },
            Frame::Headers {
                stream: 5,
                flags: FLAG_FIN,
                headers: hdrs(&[("port", "80"), ("requestid", "0")]),
            },
            Frame::WindowUpdate {
                stream: 0,
                delta: 0x7fff_ffff,
            },
            Frame::Data {
                stream: 5,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream: 7,
                flags: 0,
                data: Bytes::new(),
            },
        ]
    }

    fn decode_all(reader: &mut FrameReader, buf: &mut BytesMut) -> Vec<Frame> {
        let mut got = Vec::new();
        while let Some(f) = reader.next(buf).unwrap() {
            got.push(f);
        }
        got
    }

    #[test]
    fn dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // Adler-32 of the spec's dictionary (what a zlib header with FDICT names).
        let (mut a, mut b) = (1u32, 0u32);
        for &x in &d {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn every_frame_round_trips() {
        let mut enc = HeaderEncoder::new();
        let mut wire = Vec::new();
        for f in all_frames() {
            encode(&f, &mut enc, &mut wire).unwrap();
        }
        let mut reader = FrameReader::new();
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(decode_all(&mut reader, &mut buf), all_frames());
        assert!(buf.is_empty());
    }

    #[test]
    fn one_compression_context_across_many_header_blocks_fed_byte_by_byte() {
        let mut enc = HeaderEncoder::new();
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        for i in 0..50u32 {
            let f = Frame::SynStream {
                stream: 2 * i + 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: hdrs(&[
                    ("streamtype", "data"),
                    ("port", &(8000 + i).to_string()),
                    ("requestid", &i.to_string()),
                ]),
            };
            encode(&f, &mut enc, &mut wire).unwrap();
            sent.push(f);
        }
        // Later blocks refer back to earlier ones: they only decode in one context.
        let second = {
            let mut e = Vec::new();
            encode(&sent[1], &mut HeaderEncoder::new(), &mut e).unwrap();
            e
        };
        assert!(wire.len() < sent.len() * second.len());
        let mut reader = FrameReader::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire {
            buf.extend_from_slice(&[byte]);
            got.extend(decode_all(&mut reader, &mut buf));
        }
        assert_eq!(got, sent);
    }

    #[test]
    fn data_arrives_in_pieces_with_fin_on_the_last() {
        let mut wire = Vec::new();
        let frame = Frame::Data {
            stream: 3,
            flags: FLAG_FIN,
            data: Bytes::from(vec![7u8; 1000]),
        };
        encode(&frame, &mut HeaderEncoder::new(), &mut wire).unwrap();
        let mut reader = FrameReader::new();
        let mut buf = BytesMut::from(&wire[..600]);
        let first = reader.next(&mut buf).unwrap().unwrap();
        assert_eq!(
            first,
            Frame::Data {
                stream: 3,
                flags: 0,
                data: Bytes::from(vec![7u8; 592])
            }
        );
        assert_eq!(reader.next(&mut buf).unwrap(), None);
        buf.extend_from_slice(&wire[600..]);
        let rest = reader.next(&mut buf).unwrap().unwrap();
        assert_eq!(
            rest,
            Frame::Data {
                stream: 3,
                flags: FLAG_FIN,
                data: Bytes::from(vec![7u8; 408])
            }
        );
    }

    #[test]
    fn unknown_control_frames_are_skipped() {
        let mut wire = Vec::new();
        control_head(&mut wire, 5, 0, 3); // NOOP (SPDY/2), with a payload
        wire.extend_from_slice(b"abc");
        encode(&Frame::Ping { id: 1 }, &mut HeaderEncoder::new(), &mut wire).unwrap();
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            decode_all(&mut FrameReader::new(), &mut buf),
            vec![Frame::Ping { id: 1 }]
        );
    }

    fn first_error(wire: &[u8]) -> FrameError {
        let mut reader = FrameReader::new();
        let mut buf = BytesMut::from(wire);
        loop {
            match reader.next(&mut buf) {
                Err(e) => return e,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("no error from {wire:?}"),
            }
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        // Wrong version.
        let mut w = vec![0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert_eq!(first_error(&w), FrameError::Version(2));
        // A control frame larger than the bound is refused from its head alone.
        w = vec![0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff];
        assert_eq!(first_error(&w), FrameError::TooLarge(0xff_ffff));
        // Short PING, short RST_STREAM, SETTINGS whose count lies, short SYN_STREAM.
        for (kind, payload) in [
            (TYPE_PING, vec![0u8; 3]),
            (TYPE_RST_STREAM, vec![0u8; 4]),
            (TYPE_SETTINGS, vec![0, 0, 0, 9, 0, 0, 0, 7, 0, 0, 0, 1]),
            (TYPE_SYN_STREAM, vec![0u8; 6]),
            (TYPE_WINDOW_UPDATE, vec![0u8; 9]),
        ] {
            let mut w = Vec::new();
            control_head(&mut w, kind, 0, payload.len());
            w.extend_from_slice(&payload);
            assert!(
                matches!(first_error(&w), FrameError::Malformed { .. }),
                "{kind}"
            );
        }
        // DATA on stream 0.
        assert!(matches!(
            first_error(&[0, 0, 0, 0, 0, 0, 0, 1, 9]),
            FrameError::Malformed { .. }
        ));
        // A header block that is not zlib.
        let mut w = Vec::new();
        control_head(&mut w, TYPE_SYN_STREAM, 0, 14);
        w.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert!(matches!(first_error(&w), FrameError::HeaderBlock(_)));
    }

    /// Compresses `raw` (an uncompressed header block) in the SPDY context.
    fn syn_with_raw_block(raw: &[u8]) -> Vec<u8> {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(&dictionary()).unwrap();
        let mut block = Vec::with_capacity(raw.len() + 1024);
        z.compress_vec(raw, &mut block, FlushCompress::Sync)
            .unwrap();
        let mut w = Vec::new();
        control_head(&mut w, TYPE_SYN_STREAM, 0, 10 + block.len());
        w.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        w.extend_from_slice(&block);
        w
    }

    #[test]
    fn header_blocks_that_lie_are_refused() {
        // A zlib bomb: 1 MiB of zeros compresses to about a kilobyte.
        let w = syn_with_raw_block(&vec![0u8; 1 << 20]);
        assert!(w.len() < MAX_CONTROL_LEN);
        let e = first_error(&w);
        assert!(e.to_string().contains("decompressed"), "{e}");
        // A pair count far beyond what the block holds.
        let e = first_error(&syn_with_raw_block(&[0xff, 0xff, 0xff, 0xff]));
        assert!(e.to_string().contains("pairs"), "{e}");
        // A name length beyond the block.
        let e = first_error(&syn_with_raw_block(&[
            0, 0, 0, 1, 0, 0, 0, 200, b'a', 0, 0, 0, 0,
        ]));
        assert!(e.to_string().contains("truncated"), "{e}");
        // Duplicate names.
        let mut raw = vec![0, 0, 0, 2];
        for _ in 0..2 {
            raw.extend_from_slice(&[0, 0, 0, 1, b'a', 0, 0, 0, 1, b'b']);
        }
        let e = first_error(&syn_with_raw_block(&raw));
        assert!(e.to_string().contains("duplicate"), "{e}");
    }

    #[test]
    fn a_syn_stream_from_gos_spdy_framer_decodes() {
        // What moby/spdystream sends for client-go's first stream (captured on the wire).
        let wire = b"\x80\x03\x00\x01\x00\x00\x00)\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00x\xf9\xe3\xc6\xa7\xc2b```\x04\xa7\xb3\x92\xa2\xd4\xc4\\hQ\xc2\x9a\n\nh\x00\x00\x00\x00\xff\xff";
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            decode_all(&mut FrameReader::new(), &mut buf),
            vec![Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: hdrs(&[("streamtype", "error")]),
            }]
        );
    }

    #[test]
    fn header_values_with_several_values_give_the_first() {
        let h = hdrs(&[(
            "x-stream-protocol-version",
            "v4.channel.k8s.io\0v3.channel.k8s.io",
        )]);
        assert_eq!(
            header(&h, "x-stream-protocol-version"),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(header(&h, "port"), None);
    }
}
