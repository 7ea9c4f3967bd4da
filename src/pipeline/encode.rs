//! A streaming compressor for one request body that always knows how large
//! the finished body can still become.
//!
//! Owns: the four wire encodings (gzip, zlib-wrapped `deflate`, zstd,
//! identity) as streaming encoders, and the worst-case arithmetic that lets
//! [`super::batch`] promise Datadog's compressed-size caps without
//! compressing anything twice. Knows nothing of items, endpoints or the
//! network.
//!
//! How the promise works: after a sync flush every byte written so far is
//! final output, so the finished body is at most
//! `output at the last flush + worst_case(input since that flush) + trailer`
//! (`Encoder::final_bound`). The worst cases are the libraries' own bounds:
//! - deflate/gzip, zlib-rs: `n + ⌈n/8⌉ + ⌈n/64⌉ + 5` (zlib-rs
//!   `deflate::bound`; the `n/8` is level 1's "quick" strategy, which codes
//!   every literal with a fixed Huffman code of up to 9 bits and never falls
//!   back to stored blocks), plus the 5-byte empty stored block of a sync
//!   flush;
//! - zstd: `ZSTD_compressBound(n) = n + n/256 + (128 KiB − n)/2048` (for
//!   `n < 128 KiB`), which covers raw-block fallback and block headers.
//!
//! The caller flushes only when the bound stops promising a fit (see
//! `batch`), so a payload that ends up far below its cap pays no flush, and
//! one that approaches it pays a few dozen small ones.
//!
//! Also owns [`Deflater`]: zlib-rs compressors kept per thread and reset
//! for the next body instead of built anew. A new compressor allocates and
//! zeroes a few hundred kB of state; below saturation, with one small
//! payload per request, that was about a twentieth of the relay's CPU for
//! spans, and a reset costs half of it (BENCHMARKS.md "Change 21:
//! compressors kept per thread (2026-12-07)").

use std::cell::RefCell;
use std::io::Write;

use flate2::{Compress, Compression, FlushCompress};

use crate::site::Encoding;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("{encoding:?} encoder failed: {source}")]
    Io {
        encoding: Encoding,
        #[source]
        source: std::io::Error,
    },
}

/// Input staged before one call into the compressor: one call per ~32 KiB
/// instead of one per item (items are often ~200 bytes) saves per-call
/// overhead, and is far below any cap so it never delays a flush decision.
const STAGE: usize = 32 * 1024;

/// A gzip header as flate2 writes it (no name, comment or extra field).
const GZIP_HEADER: usize = 10;
/// CRC-32 and ISIZE, plus the final empty block and padding (≤ 3 bytes),
/// rounded up.
const GZIP_TRAILER: usize = 8 + 8;
/// The zlib header (CMF, FLG).
const ZLIB_HEADER: usize = 2;
/// Adler-32, plus the final empty block and padding, rounded up.
const ZLIB_TRAILER: usize = 4 + 8;
/// The largest zstd frame header (magic 4, descriptor 1, window 1,
/// dictionary id 4, content size 8).
const ZSTD_HEADER: usize = 18;
/// The last (empty) block header and an optional checksum, rounded up.
const ZSTD_TRAILER: usize = 3 + 4 + 5;

/// Worst-case compressed size of `n` input bytes written between two sync
/// flushes (or before `finish`), headers and trailers excluded.
pub(crate) fn segment_bound(encoding: Encoding, n: usize) -> usize {
    match encoding {
        Encoding::Identity => n,
        // zlib-rs `deflate::bound`, plus a 5-byte empty stored block for the
        // sync flush that ends the segment and a byte of alignment.
        Encoding::Gzip | Encoding::Deflate => n + n.div_ceil(8) + n.div_ceil(64) + 5 + 6,
        // ZSTD_compressBound, plus one block header for the flush.
        Encoding::Zstd => {
            const BLOCK: usize = 128 << 10;
            n + (n >> 8) + if n < BLOCK { (BLOCK - n) >> 11 } else { 0 } + 3
        }
    }
}

fn header_trailer(encoding: Encoding) -> (usize, usize) {
    match encoding {
        Encoding::Identity => (0, 0),
        Encoding::Gzip => (GZIP_HEADER, GZIP_TRAILER),
        Encoding::Deflate => (ZLIB_HEADER, ZLIB_TRAILER),
        Encoding::Zstd => (ZSTD_HEADER, ZSTD_TRAILER),
    }
}

/// The compressors a thread keeps for reuse, at most this many.
const KEPT_PER_THREAD: usize = 2;

thread_local! {
    /// Idle compressors, each with its level and whether it writes the
    /// zlib wrapper.
    static KEPT: RefCell<Vec<(u32, bool, Compress)>> = const { RefCell::new(Vec::new()) };
}

/// A deflate compressor at one level, raw (`zlib_header` false) or
/// zlib-wrapped, taken from this thread's kept ones (reset) or made; it
/// goes back to the kept ones of the thread that drops it.
pub(crate) struct Deflater {
    level: u32,
    zlib_header: bool,
    c: Option<Compress>,
}

impl Deflater {
    pub(crate) fn new(level: u32, zlib_header: bool) -> Deflater {
        let level = level.min(9);
        let kept = KEPT.with(|k| {
            let mut k = k.borrow_mut();
            let at = k
                .iter()
                .position(|(l, z, _)| (*l, *z) == (level, zlib_header))?;
            Some(k.swap_remove(at).2)
        });
        let c = match kept {
            Some(mut c) => {
                c.reset();
                c
            }
            None => Compress::new(Compression::new(level), zlib_header),
        };
        Deflater {
            level,
            zlib_header,
            c: Some(c),
        }
    }

    /// Runs the compressor over `input` with `flush`, growing `out`, until
    /// the input is taken and (for a flush or the finish) everything is
    /// written: zlib's rule is that a call that leaves output room has
    /// flushed all it had. `None` when the compressor fails to progress
    /// (not expected).
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        flush: FlushCompress,
        out: &mut Vec<u8>,
    ) -> Option<()> {
        let c = self.c.as_mut()?;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(4096));
            }
            let (taken, written) = (c.total_in(), c.total_out());
            c.compress_vec(input, out, flush).ok()?;
            let consumed = usize::try_from(c.total_in() - taken).ok()?;
            input = input.get(consumed..)?;
            if input.is_empty() && out.len() < out.capacity() {
                return Some(());
            }
            if consumed == 0 && c.total_out() == written {
                return None;
            }
        }
    }

    /// Input bytes taken since this body began.
    pub(crate) fn total_in(&self) -> u64 {
        self.c.as_ref().map_or(0, Compress::total_in)
    }
}

impl Drop for Deflater {
    fn drop(&mut self) {
        let Some(c) = self.c.take() else { return };
        // During thread exit the thread-local may be gone: then the
        // compressor is simply freed.
        let _ = KEPT.try_with(|k| {
            let mut k = k.borrow_mut();
            if k.len() >= KEPT_PER_THREAD {
                k.remove(0);
            }
            k.push((self.level, self.zlib_header, c));
        });
    }
}

/// gzip's header as flate2's `GzEncoder` writes it: no name, comment,
/// extra field or time; XFL 4 at level ≤ 1, 2 at 9; OS 255 (unknown).
fn gzip_header(level: u32) -> [u8; GZIP_HEADER] {
    let xfl = match level {
        0 | 1 => 4,
        9 => 2,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff]
}

enum Sink {
    Identity(Vec<u8>),
    /// Raw deflate, framed here (header, CRC-32 and length).
    Gzip(Deflater, Vec<u8>, crc32fast::Hasher),
    /// The compressor writes the zlib header and the Adler-32 itself.
    Deflate(Deflater, Vec<u8>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

/// One body being compressed. Write input, [`sync_flush`](Self::sync_flush)
/// when [`final_bound`](Self::final_bound) must be tightened, then
/// [`finish`](Self::finish).
pub(crate) struct Encoder {
    sink: Sink,
    encoding: Encoding,
    staged: Vec<u8>,
    /// Output bytes at the last sync flush: final, whatever comes next.
    flushed_out: usize,
    /// Input bytes since the last sync flush (staged ones included).
    unflushed_in: usize,
    total_in: usize,
}

impl Encoder {
    /// A new body. `level` is 0..=9 for gzip and deflate, 1..=19 for zstd
    /// (clamped); `capacity` pre-sizes the output buffer.
    pub(crate) fn new(
        encoding: Encoding,
        level: i32,
        capacity: usize,
    ) -> Result<Encoder, EncodeError> {
        let mut out = Vec::with_capacity(capacity);
        let zlib_level = level.clamp(0, 9).unsigned_abs();
        let sink = match encoding {
            Encoding::Identity => Sink::Identity(out),
            Encoding::Gzip => {
                out.extend_from_slice(&gzip_header(zlib_level));
                let crc = crc32fast::Hasher::new();
                Sink::Gzip(Deflater::new(zlib_level, false), out, crc)
            }
            Encoding::Deflate => Sink::Deflate(Deflater::new(zlib_level, true), out),
            Encoding::Zstd => Sink::Zstd(
                zstd::stream::write::Encoder::new(out, level.clamp(1, 19))
                    .map_err(|source| EncodeError::Io { encoding, source })?,
            ),
        };
        Ok(Encoder {
            sink,
            encoding,
            staged: Vec::new(),
            flushed_out: 0,
            unflushed_in: 0,
            total_in: 0,
        })
    }

    /// Input bytes written so far: the body's uncompressed length.
    pub(crate) fn uncompressed_len(&self) -> usize {
        self.total_in
    }

    /// Input bytes not yet covered by a sync flush (always 0 for identity).
    pub(crate) fn unflushed(&self) -> usize {
        self.unflushed_in
    }

    /// The most bytes the finished body can have if `extra` more input bytes
    /// are written before [`finish`](Self::finish). Exact for identity.
    pub(crate) fn final_bound(&self, extra: usize) -> usize {
        let (header, trailer) = header_trailer(self.encoding);
        let header = if self.flushed_out == 0 { header } else { 0 };
        self.flushed_out
            + header
            + segment_bound(self.encoding, self.unflushed_in + extra)
            + trailer
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        self.total_in += data.len();
        if let Sink::Identity(v) = &mut self.sink {
            v.extend_from_slice(data);
            self.flushed_out = v.len();
            return Ok(());
        }
        self.unflushed_in += data.len();
        self.staged.extend_from_slice(data);
        if self.staged.len() >= STAGE {
            self.push_staged()?;
        }
        Ok(())
    }

    fn push_staged(&mut self) -> Result<(), EncodeError> {
        let result = match &mut self.sink {
            Sink::Identity(_) => Ok(()),
            Sink::Gzip(d, out, crc) => {
                crc.update(&self.staged);
                deflate(d, &self.staged, FlushCompress::None, out)
            }
            Sink::Deflate(d, out) => deflate(d, &self.staged, FlushCompress::None, out),
            Sink::Zstd(e) => e.write_all(&self.staged),
        };
        self.staged.clear();
        result.map_err(|source| EncodeError::Io {
            encoding: self.encoding,
            source,
        })
    }

    /// Makes all input so far final output (a deflate sync flush, a zstd
    /// block flush), so [`final_bound`](Self::final_bound) only has to
    /// bound what comes after.
    pub(crate) fn sync_flush(&mut self) -> Result<(), EncodeError> {
        if self.unflushed_in == 0 {
            return Ok(());
        }
        self.push_staged()?;
        let encoding = self.encoding;
        let io = |source| EncodeError::Io { encoding, source };
        self.flushed_out = match &mut self.sink {
            Sink::Identity(v) => v.len(),
            Sink::Gzip(d, out, _) | Sink::Deflate(d, out) => {
                deflate(d, &[], FlushCompress::Sync, out).map_err(io)?;
                out.len()
            }
            Sink::Zstd(e) => {
                e.flush().map_err(io)?;
                e.get_ref().len()
            }
        };
        self.unflushed_in = 0;
        Ok(())
    }

    /// Ends the stream and returns the body.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>, EncodeError> {
        self.push_staged()?;
        let encoding = self.encoding;
        let io = |source| EncodeError::Io { encoding, source };
        match self.sink {
            Sink::Identity(v) => Ok(v),
            Sink::Gzip(mut d, mut out, crc) => {
                deflate(&mut d, &[], FlushCompress::Finish, &mut out).map_err(io)?;
                out.extend_from_slice(&crc.finalize().to_le_bytes());
                // ISIZE: the input's length modulo 2^32 (RFC 1952).
                out.extend_from_slice(&(d.total_in() as u32).to_le_bytes());
                Ok(out)
            }
            Sink::Deflate(mut d, mut out) => {
                deflate(&mut d, &[], FlushCompress::Finish, &mut out).map_err(io)?;
                Ok(out)
            }
            Sink::Zstd(e) => e.finish().map_err(io),
        }
    }
}

/// [`Deflater::feed`] as an I/O result.
fn deflate(
    d: &mut Deflater,
    input: &[u8],
    flush: FlushCompress,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    d.feed(input, flush, out)
        .ok_or_else(|| std::io::Error::other("the deflate compressor made no progress"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    const ALL: [Encoding; 4] = [
        Encoding::Identity,
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Zstd,
    ];

    /// xorshift: reproducible bytes without a dependency.
    fn noise(seed: u64, n: usize, alphabet: &[u8]) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect()
    }

    fn all_bytes() -> Vec<u8> {
        (0..=255).collect()
    }

    /// The bound taken before any write holds for the finished body, at
    /// every step of a stream mixing data of every kind, flushed or not.
    #[test]
    fn final_bound_is_never_exceeded() {
        let chunks: Vec<Vec<u8>> = vec![
            noise(1, 70_000, &all_bytes()),
            noise(2, 5_000, b"abcdefghijklmnopqrstuvwxyz0123456789"),
            b"{\"metric\":\"a.b\",\"points\":[{\"timestamp\":1,\"value\":2}]}".repeat(900),
            noise(3, 200_000, &all_bytes()),
            vec![0u8; 40_000],
            noise(4, 3, &all_bytes()),
            noise(5, 140_000, &[0x80, 0xff, 0x90, 0xc3]),
        ];
        for encoding in ALL {
            for level in [1, 6] {
                for flush_every in [1usize, 100] {
                    // Stop after chunk `k`: the bound taken before writing it
                    // must cover the finished body.
                    for k in 0..chunks.len() {
                        let mut e = Encoder::new(encoding, level, 0).unwrap();
                        let mut promise = 0;
                        for (i, c) in chunks[..=k].iter().enumerate() {
                            promise = e.final_bound(c.len());
                            e.write(c).unwrap();
                            if i % flush_every == 0 {
                                e.sync_flush().unwrap();
                            }
                        }
                        let n = e.uncompressed_len();
                        let body = e.finish().unwrap();
                        let what = format!("{encoding:?} level {level} flush {flush_every} k {k}");
                        assert!(body.len() <= promise, "{what}: {} > {promise}", body.len());
                        let input = chunks[..=k].concat();
                        assert_eq!(
                            codec::decompress(encoding, &body, n).unwrap(),
                            input,
                            "{what}"
                        );
                    }
                }
            }
        }
    }

    /// A kept compressor gives the bytes a new one gives, whatever the
    /// body before it left behind (finished, or dropped halfway), and
    /// whichever level and wrapper the thread used in between.
    #[test]
    fn a_kept_compressor_compresses_as_a_new_one() {
        let data = noise(9, 90_000, b"abcdefgh{}:,0123");
        let fresh = |encoding| {
            std::thread::scope(|s| {
                s.spawn(|| {
                    let mut e = Encoder::new(encoding, 1, 0).unwrap();
                    e.write(&data).unwrap();
                    e.finish().unwrap()
                })
                .join()
                .unwrap()
            })
        };
        let (gzip, zlib) = (fresh(Encoding::Gzip), fresh(Encoding::Deflate));
        for round in 0..3 {
            // Left halfway: written and flushed, never finished.
            let mut half = Encoder::new(Encoding::Gzip, 1, 0).unwrap();
            half.write(&data[..40_000]).unwrap();
            half.sync_flush().unwrap();
            drop(half);
            let mut other = Deflater::new(6, false);
            other.feed(&data[..5_000], FlushCompress::None, &mut Vec::new());
            drop(other);
            for (encoding, want) in [(Encoding::Gzip, &gzip), (Encoding::Deflate, &zlib)] {
                let mut e = Encoder::new(encoding, 1, 0).unwrap();
                e.write(&data).unwrap();
                assert_eq!(&e.finish().unwrap(), want, "{encoding:?}, round {round}");
            }
        }
        assert!(KEPT.with(|k| k.borrow().len()) <= KEPT_PER_THREAD);
        // The gzip framing is flate2's own: the same header and trailer
        // (CRC-32 and length), and flate2 reads the body back.
        let mut theirs = flate2::write::GzEncoder::new(Vec::new(), Compression::new(1));
        theirs.write_all(&data).unwrap();
        let theirs = theirs.finish().unwrap();
        assert_eq!(gzip[..GZIP_HEADER], theirs[..GZIP_HEADER]);
        assert_eq!(gzip[gzip.len() - 8..], theirs[theirs.len() - 8..]);
        assert_eq!(
            codec::decompress(Encoding::Gzip, &gzip, data.len()).unwrap(),
            data
        );
    }

    /// Incompressible input alone: the worst case the bound is for.
    #[test]
    fn bound_on_incompressible_input() {
        for encoding in ALL {
            for n in [0usize, 1, 100, 16_383, 65_536, 131_072, 600_000] {
                for alphabet in [all_bytes(), vec![0x80, 0xa5, 0xff, 0xc0, 0x91]] {
                    let data = noise(n as u64 + 7, n, &alphabet);
                    let mut e = Encoder::new(encoding, 1, 0).unwrap();
                    let bound = e.final_bound(n);
                    e.write(&data).unwrap();
                    let body = e.finish().unwrap();
                    assert!(
                        body.len() <= bound,
                        "{encoding:?} {n}: {} > {bound}",
                        body.len()
                    );
                }
            }
        }
    }
}
