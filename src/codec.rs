//! Body codecs: bounded decompression of what clients send, and one-shot
//! compression. Used by the ingest API, fakedog, `verify` and the bench;
//! the pipeline's size-exact streaming encoder lives in
//! `pipeline/encode.rs`.
//!
//! Decompression is always bounded: a body that inflates past `limit` stops
//! with [`CodecError::TooLarge`] after reading at most `limit + 1` bytes of
//! output, so a decompression bomb costs a bounded amount of memory and CPU.

use std::io::{Read, Write};

use crate::site::Encoding;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("body decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("body is not valid {encoding}: {message}")]
    Corrupt {
        encoding: &'static str,
        message: String,
    },
    /// The caller's memory budget refused more output.
    #[error("{0}")]
    Budget(String),
}

/// What the `grow` callback of `decompress_with` says when the budget
/// refuses: its message becomes [`CodecError::Budget`].
#[derive(Debug)]
pub struct OverBudget(pub String);

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OverBudget {}

/// A reader that reports every chunk it yields to `grow` first.
struct Counted<'a, R> {
    inner: R,
    grow: &'a mut dyn FnMut(usize) -> Result<(), OverBudget>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.grow)(n).map_err(std::io::Error::other)?;
        Ok(n)
    }
}

fn name(e: Encoding) -> &'static str {
    match e {
        Encoding::Identity => "identity",
        Encoding::Gzip => "gzip",
        Encoding::Deflate => "deflate (zlib)",
        Encoding::Zstd => "zstd",
    }
}

/// Decompresses `body`, refusing output larger than `limit` bytes.
/// Identity bodies are checked against `limit` and copied.
pub fn decompress(encoding: Encoding, body: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    decompress_with(encoding, body, limit, &mut |_| Ok(()))
}

/// As [`decompress`], telling `grow` the size of every chunk of output
/// before keeping it; a refusal stops the decoding with
/// [`CodecError::Budget`] (memory budgets reserve as the output grows).
pub(crate) fn decompress_with(
    encoding: Encoding,
    body: &[u8],
    limit: usize,
    grow: &mut dyn FnMut(usize) -> Result<(), OverBudget>,
) -> Result<Vec<u8>, CodecError> {
    let corrupt = |e: std::io::Error| match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<OverBudget>())
    {
        Some(over) => CodecError::Budget(over.0.clone()),
        None => CodecError::Corrupt {
            encoding: name(encoding),
            message: e.to_string(),
        },
    };
    if encoding == Encoding::Identity {
        if body.len() > limit {
            return Err(CodecError::TooLarge { limit });
        }
        grow(body.len()).map_err(|over| CodecError::Budget(over.0))?;
        return Ok(body.to_vec());
    }
    let mut out = Vec::with_capacity(capacity_hint(encoding, body, limit));
    grow(out.capacity()).map_err(|over| CodecError::Budget(over.0))?;
    let reader: Box<dyn Read + '_> = match encoding {
        // MultiGzDecoder: concatenated gzip members are valid gzip.
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(body)),
        Encoding::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(body).map_err(corrupt)?)
        }
        Encoding::Identity => unreachable!("handled above"),
    };
    // The first `capacity` bytes were reserved with the buffer.
    let mut reserved = out.capacity();
    let mut counted = |n: usize| {
        let beyond = n.saturating_sub(reserved);
        reserved = reserved.saturating_sub(n);
        grow(beyond)
    };
    Counted {
        inner: reader,
        grow: &mut counted,
    }
    .take(limit as u64 + 1)
    .read_to_end(&mut out)
    .map_err(corrupt)?;
    if out.len() > limit {
        return Err(CodecError::TooLarge { limit });
    }
    Ok(out)
}

/// The decompressed size to reserve up front, so the output is written once
/// instead of being copied at every doubling (those copies were ~2 % of the
/// relay's CPU on the series path). gzip's trailer and zstd's frame header
/// state the size; both are only hints from the client, so the hint is capped
/// by the limit, at 64 MiB and, for gzip, by deflate's maximum ratio (1032:1).
/// (Reserved and unwritten memory is address space, not RSS.)
fn capacity_hint(encoding: Encoding, body: &[u8], limit: usize) -> usize {
    let mut cap = limit.saturating_add(1).min(64 << 20);
    if encoding != Encoding::Zstd {
        cap = cap.min(body.len().saturating_mul(1032));
    }
    let stated = match encoding {
        Encoding::Identity => Some(body.len()),
        // ISIZE: the last member's size mod 2^32, little-endian.
        Encoding::Gzip if body.len() >= 18 => body
            .get(body.len() - 4..)
            .and_then(|t| <[u8; 4]>::try_from(t).ok())
            .map(|b| u32::from_le_bytes(b) as usize),
        Encoding::Zstd => zstd::zstd_safe::get_frame_content_size(body)
            .ok()
            .flatten()
            .and_then(|n| usize::try_from(n).ok()),
        _ => None,
    };
    // One byte more than stated: read_to_end then sees the end of the stream
    // without growing the buffer.
    stated
        .map(|n| n.saturating_add(1))
        .unwrap_or_else(|| body.len().saturating_mul(4))
        .min(cap)
}

/// Compresses `data` in one go (`level` 1..=9 for gzip/zlib, 1..=19 for zstd).
pub fn compress(encoding: Encoding, level: i32, data: &[u8]) -> Vec<u8> {
    // Writing into a Vec cannot fail; the unwrap_or_default paths are unreachable.
    match encoding {
        Encoding::Identity => data.to_vec(),
        Encoding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 4),
                flate2::Compression::new(level.clamp(1, 9) as u32),
            );
            let _ = e.write_all(data);
            e.finish().unwrap_or_default()
        }
        Encoding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(
                Vec::with_capacity(data.len() / 4),
                flate2::Compression::new(level.clamp(1, 9) as u32),
            );
            let _ = e.write_all(data);
            e.finish().unwrap_or_default()
        }
        Encoding::Zstd => zstd::bulk::compress(data, level.clamp(1, 19)).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_hint_uses_the_stated_size_within_bounds() {
        let data = vec![b'a'; 300_000];
        for e in [Encoding::Gzip, Encoding::Zstd] {
            let body = compress(e, 1, &data);
            assert_eq!(capacity_hint(e, &body, 5 << 20), 300_001, "{e:?}");
            // A stated size above the limit is capped at limit + 1.
            assert_eq!(capacity_hint(e, &body, 1000), 1001, "{e:?}");
            let out = decompress(e, &body, 5 << 20).unwrap();
            assert_eq!(out, data, "{e:?}");
            assert!(out.capacity() <= 300_001 + 64, "{e:?}: {}", out.capacity());
        }
        // A lying trailer (claims 4 GiB in 30 bytes) is capped by the ratio.
        let mut liar = compress(Encoding::Gzip, 1, b"tiny");
        let n = liar.len();
        liar[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(capacity_hint(Encoding::Gzip, &liar, 64 << 20) <= liar.len() * 1032);
        assert!(
            decompress(Encoding::Gzip, &liar, 64 << 20).is_err(),
            "size mismatch is corrupt"
        );
        // No size information: four times the body.
        let z = compress(Encoding::Deflate, 1, &data);
        assert_eq!(capacity_hint(Encoding::Deflate, &z, 5 << 20), z.len() * 4);
    }

    #[test]
    fn round_trips() {
        let data =
            br#"{"series":[{"metric":"a.b","points":[{"timestamp":1,"value":2}]}]}"#.repeat(100);
        for e in [
            Encoding::Identity,
            Encoding::Gzip,
            Encoding::Deflate,
            Encoding::Zstd,
        ] {
            let c = compress(e, 1, &data);
            assert_eq!(decompress(e, &c, data.len()).unwrap(), data, "{e:?}");
            assert_eq!(
                decompress(e, &c, data.len() - 1),
                Err(CodecError::TooLarge {
                    limit: data.len() - 1
                }),
                "{e:?}"
            );
        }
    }

    #[test]
    fn bomb_is_bounded() {
        let zeros = vec![0u8; 64 << 20];
        let bomb = compress(Encoding::Gzip, 9, &zeros);
        assert!(bomb.len() < 200_000);
        assert_eq!(
            decompress(Encoding::Gzip, &bomb, 1 << 20),
            Err(CodecError::TooLarge { limit: 1 << 20 })
        );
    }

    #[test]
    fn garbage_is_corrupt() {
        for e in [Encoding::Gzip, Encoding::Deflate, Encoding::Zstd] {
            assert!(
                matches!(
                    decompress(e, b"definitely not compressed", 1000),
                    Err(CodecError::Corrupt { .. })
                ),
                "{e:?}"
            );
        }
    }
}
