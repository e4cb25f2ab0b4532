//! gzip whose blocks of incompressible data are *stored*, not deflated.
//!
//! Deflating random or already compressed bytes (a layer of `.gz`, `.jpg`, `.zst` files,
//! encrypted data) at level 6 costs as much CPU as compressing text and gains nothing: zlib
//! ends up emitting a stored block anyway, after spending the match search on it. Go's
//! compress/flate and klauspost's pgzip (Buildah, skopeo, containerd) skip ahead on such
//! data; this is rbuild's equivalent, per gzp block: a block whose order-0 entropy is at
//! least [`STORED_ENTROPY_BITS`] bits per byte (Huffman coding could save at most 0.125% of
//! it) is copied into stored deflate blocks, at memory speed; every other block is deflated
//! exactly as [`gzp::deflate::Gzip`] does (the same bytes, so a compressible layer's digest
//! is unchanged).
//!
//! The decision depends on the block's bytes only (gzp's blocks have a fixed size), so the
//! output — and the blob digest — is the same for the same input whatever the thread count
//! or timing. The stream stays one gzip member: stored blocks are ordinary deflate blocks
//! (RFC 1951 §3.2.4), which every inflater reads.
//!
//! What the entropy test cannot see are repeats within deflate's 32 KiB window in
//! high-entropy data (the same small compressed file twice in a row): such a block is stored
//! where level 6 would have shrunk it. On a Debian tar (man pages, docs, binaries) that costs
//! about 0.04% of the compressed size.

use bytes::Bytes;
use flate2::{Compress, Compression};
use gzp::deflate::Gzip;
use gzp::{FormatSpec, GzpError};

/// Order-0 entropy (bits per byte) from which a block is stored. 128 KiB of random bytes
/// measure about 7.9986 (the finite-sample bias is (256 − 1) / (2 n ln 2) ≈ 0.0014).
pub(super) const STORED_ENTROPY_BITS: f64 = 7.99;

/// Blocks shorter than this are always deflated: their entropy estimate is biased low and
/// their cost is small.
const MIN_STORED_BLOCK: usize = 16 * 1024;

/// The longest stored deflate block (its LEN field is 16 bits).
const MAX_STORED_LEN: usize = 0xffff;

/// [`Gzip`] with incompressible blocks stored (see the module's documentation).
#[derive(Debug, Clone, Copy)]
pub struct GzipStoringIncompressible {
    deflate: Gzip,
}

impl FormatSpec for GzipStoringIncompressible {
    type C = <Gzip as FormatSpec>::C;
    type Compressor = Compress;

    fn new() -> Self {
        GzipStoringIncompressible {
            deflate: <Gzip as FormatSpec>::new(),
        }
    }

    fn needs_dict(&self) -> bool {
        // Blocks are independent (as with gzp's Gzip on the Rust backend): a stored block
        // could not feed a dictionary to the next one anyway.
        false
    }

    fn create_compressor(&self, level: Compression) -> Result<Compress, GzpError> {
        self.deflate.create_compressor(level)
    }

    fn encode(
        &self,
        input: &[u8],
        encoder: &mut Compress,
        level: Compression,
        _dict: Option<&Bytes>,
        is_last: bool,
    ) -> Result<Vec<u8>, GzpError> {
        if level.level() > 0 && is_incompressible(input) {
            Ok(stored_blocks(input, is_last))
        } else {
            self.deflate.encode(input, encoder, level, None, is_last)
        }
    }

    fn header(&self, level: Compression) -> Vec<u8> {
        self.deflate.header(level)
    }

    fn footer(&self, check: &Self::C) -> Vec<u8> {
        self.deflate.footer(check)
    }
}

/// Whether `block` is long enough and its order-0 entropy at least [`STORED_ENTROPY_BITS`].
pub(super) fn is_incompressible(block: &[u8]) -> bool {
    block.len() >= MIN_STORED_BLOCK && entropy_bits_per_byte(block) >= STORED_ENTROPY_BITS
}

/// Shannon entropy of the byte histogram, in bits per byte (0 for an empty slice).
fn entropy_bits_per_byte(block: &[u8]) -> f64 {
    // Four histograms, so consecutive equal bytes do not wait on one counter's store.
    let mut counts = [[0u32; 256]; 4];
    let mut quads = block.chunks_exact(4);
    for quad in &mut quads {
        counts[0][quad[0] as usize] += 1;
        counts[1][quad[1] as usize] += 1;
        counts[2][quad[2] as usize] += 1;
        counts[3][quad[3] as usize] += 1;
    }
    for &byte in quads.remainder() {
        counts[0][byte as usize] += 1;
    }
    let total = block.len() as f64;
    (0..256)
        .map(|b| counts[0][b] + counts[1][b] + counts[2][b] + counts[3][b])
        .filter(|&count| count > 0)
        .map(|count| {
            let p = f64::from(count) / total;
            -p * p.log2()
        })
        .sum()
}

/// `input` as stored deflate blocks starting on a byte boundary (gzp's blocks end on one:
/// a sync flush, or the stream's start). The last block of the stream has BFINAL set; the
/// others end byte-aligned, as the next gzp block expects.
fn stored_blocks(input: &[u8], is_last: bool) -> Vec<u8> {
    let pieces = input.len().div_ceil(MAX_STORED_LEN).max(1);
    let mut out = Vec::with_capacity(input.len() + 5 * pieces);
    let mut chunks = input.chunks(MAX_STORED_LEN).peekable();
    if chunks.peek().is_none() {
        // Only reached for an empty input, which `is_incompressible` never passes here.
        out.extend_from_slice(&[u8::from(is_last), 0, 0, 0xff, 0xff]);
        return out;
    }
    while let Some(chunk) = chunks.next() {
        let final_block = is_last && chunks.peek().is_none();
        // BFINAL (bit 0), BTYPE 00 (stored), then padding to the byte boundary.
        out.push(u8::from(final_block));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        rbuild_testutil::incompressible_bytes(len, seed)
    }

    #[test]
    fn noise_is_stored_and_text_is_deflated() {
        assert!(is_incompressible(&noise(128 * 1024, 1)));
        let text = b"the quick brown fox jumps over the lazy dog\n".repeat(3000);
        assert!(!is_incompressible(&text));
        // Too short to judge: deflated.
        assert!(!is_incompressible(&noise(1024, 2)));
    }

    #[test]
    fn stored_blocks_inflate_to_their_input_as_the_middle_or_the_end_of_a_stream() {
        let first = noise(200_000, 3);
        let second = noise(70_000, 4);
        let mut stream = stored_blocks(&first, false);
        stream.extend(stored_blocks(&second, true));
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(&stream[..])
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated, [first, second].concat());
        // Four blocks of the first part, two of the second: five header bytes each.
        assert_eq!(stream.len(), 270_000 + 6 * 5);
    }
}
