//! The HPACK side: every header block the client sends is decoded (the decoder's
//! dynamic table must follow the client's encoder), its `:authority` checked, and the
//! block either left as it was sent or re-encoded for the server.
//!
//! Until a block needs a new `:authority` the connection is left byte for byte as the
//! client sent it, and the server's decoder follows the client's encoder. From the first
//! rewritten block on, the server's decoder follows our encoder instead, so every later
//! block is re-encoded too. That first block starts with two dynamic table size updates,
//! to 0 and back to `SERVER_HEADER_TABLE_SIZE`: they empty the server's table, which
//! then matches our encoder's fresh one (RFC 7541 §4.2 allows several updates at the
//! start of a block; the smallest must come first).

use loona_hpack::{encoder::encode_integer_into, Decoder, Encoder};

use super::RewriteError;

/// The dynamic table size the server's decoder allows: the protocol default, since
/// neither hyper nor tonic advertise SETTINGS_HEADER_TABLE_SIZE to clients. It bounds
/// both what the client's encoder may use (our decoder) and what ours may (the server's
/// decoder).
pub const SERVER_HEADER_TABLE_SIZE: usize = 4096;

/// The largest decoded header list (RFC 9113 size: name + value + 32 per field) held
/// from one block. The server refuses anything above 16 KiB; this only bounds the
/// memory a block of small indexed references could make us allocate.
pub const MAX_HEADER_LIST: usize = 1 << 20;

/// What replaces an `:authority` the server would refuse: what newer kubelets send.
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

/// Whether the server (hyper/h2, which parses it with `http::uri::Authority`) takes
/// this `:authority` as it is.
pub fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// HPACK state of one connection's client→server direction.
pub struct HeaderBlocks {
    /// Mirrors the client's encoder.
    decoder: Decoder<'static>,
    /// Ours, once a block has been rewritten; the server's decoder mirrors it.
    encoder: Option<Encoder<'static>>,
    /// The connection's first authority was valid as sent: nothing more to look at.
    trusted: bool,
}

impl Default for HeaderBlocks {
    fn default() -> Self {
        HeaderBlocks::new()
    }
}

impl HeaderBlocks {
    pub fn new() -> HeaderBlocks {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(SERVER_HEADER_TABLE_SIZE);
        HeaderBlocks {
            decoder,
            encoder: None,
            trusted: false,
        }
    }

    pub fn is_rewriting(&self) -> bool {
        self.encoder.is_some()
    }

    /// The first `:authority` on this connection was one the server takes. gRPC clients
    /// send one authority per connection (the channel's), so the rest of the connection
    /// goes to the server untouched and undecoded: decoding every block costs ~50 µs a
    /// request (Huffman), which only connections that need a rewrite pay.
    pub fn is_trusted(&self) -> bool {
        self.trusted
    }

    /// Decodes one complete header block fragment. None: forward it as it was sent.
    /// Some: the fragment to send instead.
    pub fn process(&mut self, fragment: &[u8]) -> Result<Option<Vec<u8>>, RewriteError> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut list_size = 0usize;
        let mut refused_authority: Option<Vec<u8>> = None;
        self.decoder
            .decode_with_cb(fragment, |name, value| {
                list_size = list_size.saturating_add(name.len() + value.len() + 32);
                if list_size > MAX_HEADER_LIST {
                    return;
                }
                if &*name == b":authority" && !is_valid_authority(&value) {
                    refused_authority = Some(value.to_vec());
                }
                fields.push((name.into_owned(), value.into_owned()));
            })
            .map_err(|e| RewriteError::Hpack(format!("{e:?}")))?;
        if list_size > MAX_HEADER_LIST {
            return Err(RewriteError::HeaderListTooLarge {
                limit: MAX_HEADER_LIST,
            });
        }
        if self.encoder.is_none() && refused_authority.is_none() {
            self.trusted = fields.iter().any(|(n, _)| n.as_slice() == b":authority");
            return Ok(None);
        }
        let mut out = Vec::with_capacity(fragment.len() + 16);
        let encoder = match &mut self.encoder {
            Some(encoder) => encoder,
            None => {
                tracing::debug!(
                    authority = %String::from_utf8_lossy(refused_authority.as_deref().unwrap_or_default()),
                    "the server would refuse this :authority: it becomes localhost, and this connection's header blocks are re-encoded from now on"
                );
                for size in [0, SERVER_HEADER_TABLE_SIZE] {
                    encode_integer_into(size, 5, 0x20, &mut out)
                        .map_err(|e| RewriteError::Hpack(e.to_string()))?;
                }
                let mut encoder = Encoder::new();
                encoder.set_max_table_size(SERVER_HEADER_TABLE_SIZE);
                self.encoder.insert(encoder)
            }
        };
        for (name, value) in &mut fields {
            if name.as_slice() == b":authority" && !is_valid_authority(value) {
                *value = REPLACEMENT_AUTHORITY.to_vec();
            }
        }
        encoder
            .encode_into(
                fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
                &mut out,
            )
            .map_err(|e| RewriteError::Hpack(e.to_string()))?;
        Ok(Some(out))
    }
}
