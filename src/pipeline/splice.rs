//! One gzip payload spliced from pieces compressed apart, so that what was
//! compressed at ingest is never compressed again and records can still be
//! merged into full payloads.
//!
//! A **piece** is raw deflate (RFC 1951) of some bytes, from its own
//! compressor, ended by a sync flush: the last block is closed and an empty
//! stored block pads it to a byte boundary, and no block has BFINAL set.
//! A deflate stream is a sequence of self-delimiting blocks, and a piece's
//! back-references never reach before its own start, so pieces laid end to
//! end decode to their bytes laid end to end.
//!
//! A payload is the gzip header (RFC 1952), the pieces in order, a closing
//! piece (the payload's closing bytes in stored blocks, the last one final)
//! and the trailer: the CRC-32 of all the bytes, combined from each
//! piece's own without reading them again, and their length modulo 2^32.
//! It is one ordinary gzip member.

use flate2::{Decompress, FlushCompress, FlushDecompress};

use super::encode::Deflater;

/// The CRC-32 and length of a piece's uncompressed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sum {
    pub(crate) crc: u32,
    pub(crate) len: u64,
}

impl Sum {
    fn of(bytes: &[u8]) -> Sum {
        let mut h = crc32fast::Hasher::new();
        h.update(bytes);
        Sum {
            crc: h.finalize(),
            len: bytes.len() as u64,
        }
    }
}

/// Compresses `parts`, in order, into one piece appended to `out`, at
/// zlib `level` (0..=9); returns the sum of the parts joined. `None` when
/// the compressor fails to progress (not expected; the caller then keeps
/// the bytes uncompressed).
pub(crate) fn deflate<'a>(
    level: u32,
    parts: impl IntoIterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) -> Option<Sum> {
    let mut c = Deflater::new(level, false);
    let mut crc = crc32fast::Hasher::new();
    for part in parts {
        crc.update(part);
        c.feed(part, FlushCompress::None, out)?;
    }
    c.feed(&[], FlushCompress::Sync, out)?;
    Some(Sum {
        crc: crc.finalize(),
        len: c.total_in(),
    })
}

/// Decompresses one piece, which must give exactly `len` bytes; `None`
/// otherwise.
pub(crate) fn inflate(piece: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(len);
    d.decompress_vec(piece, &mut out, FlushDecompress::Sync)
        .ok()?;
    (d.total_in() == piece.len() as u64 && out.len() == len).then_some(out)
}

/// The largest stored block's content (RFC 1951: LEN is 16 bits).
const STORED_MAX: usize = 65_535;
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
const GZIP_TRAILER: usize = 8;

/// The bytes a spliced payload adds to its pieces, for `closing` bytes.
pub(crate) fn overhead(closing: &[u8]) -> usize {
    let blocks = closing.len().div_ceil(STORED_MAX).max(1);
    GZIP_HEADER.len() + 5 * blocks + closing.len() + GZIP_TRAILER
}

/// One gzip stream: `pieces` (each with its sum), then `closing` stored.
pub(crate) fn splice<'a>(
    pieces: impl Iterator<Item = (&'a [u8], Sum)> + Clone,
    closing: &[u8],
) -> Vec<u8> {
    let size = pieces.clone().map(|(p, _)| p.len()).sum::<usize>() + overhead(closing);
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&GZIP_HEADER);
    let mut crc = crc32fast::Hasher::new();
    for (piece, sum) in pieces {
        out.extend_from_slice(piece);
        crc.combine(&crc32fast::Hasher::new_with_initial_len(sum.crc, sum.len));
    }
    store_final(closing, &mut out);
    let end = Sum::of(closing);
    crc.combine(&crc32fast::Hasher::new_with_initial_len(end.crc, end.len));
    // The hasher counts the bytes it combined: the whole stream's length.
    let total = crc.total_len();
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out
}

/// `bytes` as stored blocks, the last one final (a piece before leaves
/// the stream byte-aligned, so each header is one byte, then LEN, NLEN).
fn store_final(bytes: &[u8], out: &mut Vec<u8>) {
    let mut chunks = bytes.chunks(STORED_MAX).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = u8::from(chunks.peek().is_none());
        let len = chunk.len() as u16;
        out.push(last);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn text(seed: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| b"abcdefgh ,:{}0123"[((i * 7 + seed * 13 + i / 5) % 17) as usize])
            .collect()
    }

    #[test]
    fn pieces_splice_into_one_gzip_member_of_their_bytes() {
        let a = text(1, 70_000);
        let b = text(2, 10);
        let c = text(3, 300_000);
        let closing = text(4, 70_000); // two stored blocks
        for level in [0, 1, 6, 9] {
            let mut pieces = Vec::new();
            for parts in [vec![&a[..], &b[..]], vec![&c[..]], vec![]] {
                let mut body = Vec::new();
                let sum = deflate(level, parts.iter().copied(), &mut body).unwrap();
                assert_eq!(sum.len, parts.iter().map(|p| p.len() as u64).sum::<u64>());
                pieces.push((body, sum));
            }
            for closing in [&closing[..], b"tail", b""] {
                let out = splice(pieces.iter().map(|(p, s)| (&p[..], *s)), closing);
                let want = [&a[..], &b, &c, closing].concat();
                assert_eq!(gunzip(&out), want, "level {level}");
                let pieces_len: usize = pieces.iter().map(|(p, _)| p.len()).sum();
                assert_eq!(out.len(), pieces_len + overhead(closing));
                // The trailer's checks are what the decoder above verified;
                // checked here byte for byte too.
                let mut crc = flate2::Crc::new();
                crc.update(&want);
                assert_eq!(out[out.len() - 8..out.len() - 4], crc.sum().to_le_bytes());
                assert_eq!(out[out.len() - 4..], (want.len() as u32).to_le_bytes());
            }
        }
    }

    #[test]
    fn a_piece_inflates_only_to_its_own_length() {
        let a = text(5, 50_000);
        let mut body = Vec::new();
        let sum = deflate(1, [&a[..]], &mut body).unwrap();
        assert!(body.len() < a.len() / 2, "compressed: {}", body.len());
        assert_eq!(inflate(&body, a.len()).unwrap(), a);
        assert_eq!(inflate(&body, a.len() - 1), None, "longer than said");
        assert_eq!(inflate(&body, a.len() + 1), None, "shorter than said");
        assert_eq!(inflate(&body[..body.len() - 9], a.len()), None, "cut short");
        assert_eq!(sum, Sum::of(&a));
    }
}
