//! Body codecs: bounded decompression of what clients send, and one-shot
//! compression. Used by the ingest API and by fakedog; the pipeline's
//! size-exact streaming encoder lives in `pipeline/encode.rs`.
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
    let corrupt = |e: std::io::Error| CodecError::Corrupt {
        encoding: name(encoding),
        message: e.to_string(),
    };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit).min(16 << 20));
    match encoding {
        Encoding::Identity => {
            if body.len() > limit {
                return Err(CodecError::TooLarge { limit });
            }
            out.extend_from_slice(body);
            return Ok(out);
        }
        Encoding::Gzip => {
            // MultiGzDecoder: concatenated gzip members are valid gzip.
            flate2::read::MultiGzDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(corrupt)?;
        }
        Encoding::Deflate => {
            flate2::read::ZlibDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(corrupt)?;
        }
        Encoding::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(corrupt)?;
            decoder
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(corrupt)?;
        }
    }
    if out.len() > limit {
        return Err(CodecError::TooLarge { limit });
    }
    Ok(out)
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
