//! The reader adapters between the layer stream and the tar reader: the diff_id hash of the
//! decompressed bytes, and the end of archive some writers leave out.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use sha2::{Digest, Sha256};

/// Tees every decompressed byte into the diff_id hash.
pub(super) struct HashingReader<R> {
    pub(super) inner: R,
    pub(super) hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// How far the tar reader has read, and where the last entry it handed out (and that was
/// unpacked whole) ended.
#[derive(Default)]
pub(super) struct StreamPos {
    pub(super) read: Cell<u64>,
    pub(super) entry_end: Cell<Option<u64>>,
}

/// Supplies the end-of-archive a layer left out.
///
/// Some writers stop right after the last entry's data: no padding to 512 bytes, no two zero
/// blocks (`umoci insert` in Debian 12's umoci 0.4.7). containerd and Docker (Go's
/// archive/tar) accept such layers; the tar crate fails them with "unexpected EOF during skip"
/// while skipping the missing padding. When the stream ends exactly where the last complete
/// entry ended, or inside its padding, this reader goes on with zeros up to the padding's end
/// plus two zero blocks, so the tar reader finds a regular end. A stream that ends anywhere
/// else (inside an entry's data or header) still ends there and stays an error. The zeros
/// are added above the hashing reader: the diff_id covers the bytes the layer really has.
pub(super) struct TrailerReader<R> {
    pub(super) inner: R,
    pub(super) pos: Rc<StreamPos>,
    /// Set once the trailer is being supplied: the stream offset where it ends.
    pub(super) synthesize_until: Option<u64>,
}

impl<R: Read> Read for TrailerReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let at = self.pos.read.get();
        let n = match self.synthesize_until {
            Some(end) => {
                let n = (end - at).min(buf.len() as u64) as usize;
                buf[..n].fill(0);
                n
            }
            None => {
                let n = self.inner.read(buf)?;
                if n == 0 && !buf.is_empty() {
                    if let Some(end) = missing_trailer_end(at, self.pos.entry_end.get()) {
                        self.synthesize_until = Some(end);
                        return self.read(buf);
                    }
                }
                n
            }
        };
        self.pos.read.set(at + n as u64);
        Ok(n)
    }
}

/// Where the synthesized end of archive stops, if a stream ending at `at` only lacks
/// padding and zero blocks after the last complete entry (which ended at `entry_end`).
pub(super) fn missing_trailer_end(at: u64, entry_end: Option<u64>) -> Option<u64> {
    const BLOCK: u64 = 512;
    let entry_end = entry_end?;
    let padded = entry_end.div_ceil(BLOCK) * BLOCK;
    (entry_end..=padded)
        .contains(&at)
        .then_some(padded + 2 * BLOCK)
}
