//! What a queue record's payload holds, as the ingest API writes it and
//! delivery reads it. Two forms:
//!
//! - **Items**: compact JSON items joined by `\n` (JSON text never holds a
//!   raw newline outside strings, and compact JSON none at all). Delivery
//!   splits them (`item_ranges`) and packs them, with the items of other
//!   records, into Datadog payloads.
//! - **Ready**: one Datadog payload, packed and compressed at ingest, sent
//!   as stored. The ingest API stores a request this way when its items
//!   alone fill at least half a payload ([`pack_ready`]), on
//!   endpoints where the queue's own compression (LZ4) is costly and poor
//!   (logs: LZ4 stores 2.2× smaller at ~0.4–0.6 GB/s, where the payload's
//!   gzip is paid anyway; see BENCHMARKS.md "Change 7: large logs requests
//!   stored ready to send (2026-11-23)"). A ready record
//!   costs delivery no parsing, packing or compression, and the queue holds
//!   the smaller gzip bytes instead of LZ4's.
//!
//! - **Piece** (traces, [`stores_pieces`]): the items compressed at ingest
//!   as one raw-deflate piece (`super::splice`), which delivery splices
//!   with the pieces of other records into one gzip payload. Nothing is
//!   compressed twice, and records still merge into full payloads.
//!
//! Binary kinds (traces and stats, [`Endpoint::binary`]) hold their items
//! each prefixed by its length (unsigned LEB128 varint), one after another
//! (`join_binary`, `binary_ranges`). Stats are never stored ready; traces
//! are stored as pieces when the queue compresses and delivery gzips.
//!
//! A ready payload starts with a zero byte, which JSON text can never hold
//! and a binary record cannot start with (its first item's length; a trace
//! item is never empty), so the forms cannot be confused:
//!
//! ```text
//! 0x00                      marker
//! 0x01                      version
//! u8                        encoding: 1 gzip, 2 deflate (zlib), 3 zstd,
//!                           4 gzip piece
//! varint                    uncompressed length of the body (a piece:
//!                           of its items, without the payload's closing)
//! u32 little-endian         a piece only: the CRC-32 of those bytes
//! varint                    item count n
//! varint × n                each item's length (to rebuild the items)
//! …                         the compressed body, to the end
//! ```
//!
//! Varints are unsigned LEB128. The queue checksums the whole payload, so a
//! ready record that does not parse is a bug, not disk damage; delivery then
//! dead-letters its bytes rather than dropping them.
//!
//! Delivery falls back to the items when it must: the record is partly past
//! Datadog's acceptance window (items are trimmed one by one), or Datadog
//! answers the payload with a 400-class refusal (items are dead-lettered) or
//! an unexpected 413 (items are split in halves). `Ready::items` rebuilds
//! them from the body and the lengths.
//!
//! Compatibility: a build from before ready records would read one as a
//! single item of binary garbage, which Datadog refuses (400): it ends in
//! the dead-letter store, not lost. A build from before pieces reads a
//! piece as trace items of garbage, refused the same way. Drain the queue
//! before going back.

use std::ops::Range;

use bytes::Bytes;

use super::batch::{Packer, Payload};
use super::splice::{self, Sum};
use crate::codec;
use crate::site::{Encoding, Endpoint};

const MARKER: u8 = 0;
const VERSION: u8 = 1;
/// The encoding code of a piece.
const PIECE: u8 = 4;
/// No Datadog payload is larger (logs: 5 MB); a header claiming more is
/// refused before anything is allocated for it.
const MAX_UNCOMPRESSED: usize = 64 << 20;

/// The items of a record payload (compact JSON joined by `\n`), found with
/// a vectorised search: this runs over every byte that is delivered.
pub(crate) fn item_ranges(payload: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    memchr::memchr_iter(b'\n', payload)
        .chain(std::iter::once(payload.len()))
        .filter_map(move |end| {
            let r = start..end;
            start = end + 1;
            (!r.is_empty()).then_some(r)
        })
}

/// A binary kind's record payload: each item prefixed by its length.
pub(crate) fn join_binary<T: AsRef<[u8]>>(items: &[T]) -> Vec<u8> {
    let len: usize = items.iter().map(|i| i.as_ref().len() + 5).sum();
    let mut out = Vec::with_capacity(len);
    for item in items {
        put_item_len(&mut out, item.as_ref().len());
        out.extend_from_slice(item.as_ref());
    }
    out
}

/// Appends the prefix of an item of `len` bytes to a binary kind's record
/// payload (the item's bytes follow): [`join_binary`] one item at a time.
pub(crate) fn put_item_len(out: &mut Vec<u8>, len: usize) {
    put_varint(out, len as u64);
}

/// The items of a binary kind's record payload. The queue checksums the
/// payload, so a length that runs past the end is a bug: the items before
/// it are still given, and the rest ends the list.
pub(crate) fn binary_ranges(payload: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= payload.len() {
            return None;
        }
        let len = get_varint(payload, &mut at).ok()?;
        let end = at.checked_add(len).filter(|e| *e <= payload.len())?;
        let r = at..end;
        at = end;
        Some(r)
    })
}

/// Endpoints whose large requests are stored ready to send. Logs only:
/// their items are long text, which LZ4 compresses slowly and by little.
/// Series compress ten-fold under LZ4 at several GB/s, so packing them at
/// ingest would only move gzip or zstd into the acknowledgement's path.
pub(crate) fn packs_at_ingest(endpoint: Endpoint) -> bool {
    endpoint == Endpoint::Logs
}

/// Whether `payload` is in the ready form.
pub(crate) fn is_ready(payload: &[u8]) -> bool {
    payload.first() == Some(&MARKER)
}

/// Whether `endpoint`'s records may be in the ready form: the JSON kinds,
/// and the kinds stored as pieces.
pub(crate) fn may_be_ready(endpoint: Endpoint) -> bool {
    !endpoint.binary() || stores_pieces(endpoint)
}

/// Endpoints whose records are stored as one compressed piece when
/// delivery sends gzip: traces, whose payload is its items with nothing
/// between them, then the relay's own closing fields (see BENCHMARKS.md
/// "Change 18: trace records stored as gzip pieces (2026-12-07)").
pub(crate) fn stores_pieces(endpoint: Endpoint) -> bool {
    let (open, sep, _) = super::batch::frame_parts(endpoint);
    endpoint == Endpoint::Traces && open.is_empty() && sep.is_empty()
}

/// A binary kind's record payload (`join_binary`) as a piece, its items
/// compressed at zlib `level`, when `endpoint` stores pieces and they fit
/// one payload with its closing; `None` otherwise (store the items).
pub(crate) fn pack_piece(endpoint: Endpoint, level: i32, payload: &[u8]) -> Option<Vec<u8>> {
    if !stores_pieces(endpoint) {
        return None;
    }
    let limits = endpoint.limits();
    let closing = super::batch::frame_parts(endpoint).2;
    let ranges: Vec<Range<usize>> = binary_ranges(payload).collect();
    let raw: usize = ranges.iter().map(|r| r.len()).sum();
    if ranges.is_empty()
        || ranges.len() > limits.max_items
        || raw + closing.len() > limits.max_uncompressed
    {
        return None;
    }
    let mut out = Vec::with_capacity(raw / 2 + 16 + 3 * ranges.len());
    out.extend_from_slice(&[MARKER, VERSION, PIECE]);
    put_varint(&mut out, raw as u64);
    let crc_at = out.len();
    out.extend_from_slice(&[0; 4]);
    put_varint(&mut out, ranges.len() as u64);
    for r in &ranges {
        put_varint(&mut out, r.len() as u64);
    }
    let body_at = out.len();
    let level = level.clamp(0, 9).unsigned_abs();
    let sum = splice::deflate(level, ranges.iter().map(|r| &payload[r.clone()]), &mut out)?;
    out[crc_at..crc_at + 4].copy_from_slice(&sum.crc.to_le_bytes());
    (out.len() - body_at + splice::overhead(closing) <= limits.max_compressed).then_some(out)
}

/// Packs an items payload into the ready form when its items fill at least
/// half of one `endpoint` payload (by count or by uncompressed bytes) and
/// all fit in exactly one; `None` otherwise (store the items). Smaller
/// requests stay items so that delivery can merge them into fuller
/// payloads: a stream sends one request at a time, so a ready record costs
/// at most twice the requests of the fullest payloads.
pub fn pack_ready(
    endpoint: Endpoint,
    encoding: Encoding,
    level: i32,
    payload: &[u8],
) -> Option<Vec<u8>> {
    pack_ready_as_sent(endpoint, encoding, level, payload, None)
}

/// A request body as the client sent it: its compressed bytes, their
/// encoding, and what they decompress to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsSent<'a> {
    pub(crate) encoding: Encoding,
    pub(crate) wire: &'a [u8],
    pub(crate) body: &'a [u8],
}

impl AsSent<'_> {
    /// Whether the client's compressed bytes are already the payload the
    /// items would be packed into: `body` is exactly the endpoint's framing
    /// of `items` (compact JSON in brackets, comma-separated, nothing
    /// else), and `wire` is gzip whose trailer holds the CRC-32 and length
    /// of all of `body`, in the encoding the payload is sent with.
    ///
    /// A stream of several gzip members passes only when the members before
    /// the last decompress to nothing. docs/datadog.md "Intakes" says gzip
    /// is accepted, not whether several members are (so unconfirmed: the
    /// safe reading is that they may not be); such a payload, if refused,
    /// falls back to its items like any refused ready payload (the
    /// module's doc), which the relay's own decoder gives back.
    fn is_payload_of(&self, endpoint: Endpoint, encoding: Encoding, items: &[&[u8]]) -> bool {
        self.encoding == Encoding::Gzip
            && encoding == Encoding::Gzip
            && frames(endpoint, items, self.body)
            && gzip_trailer_matches(self.wire, self.body)
    }
}

/// `body` is `open item sep item … close`, byte for byte.
fn frames(endpoint: Endpoint, items: &[&[u8]], body: &[u8]) -> bool {
    let (open, sep, close) = super::batch::frame_parts(endpoint);
    let Some(mut rest) = body.strip_prefix(open) else {
        return false;
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            match rest.strip_prefix(sep) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        match rest.strip_prefix(*item) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest == close
}

/// A gzip stream (RFC 1952: magic, deflate method) whose last eight bytes,
/// CRC-32 and length modulo 2^32, are those of `body`.
fn gzip_trailer_matches(wire: &[u8], body: &[u8]) -> bool {
    const HEADER: usize = 10;
    const TRAILER: usize = 8;
    if wire.len() < HEADER + TRAILER || wire[..3] != [0x1f, 0x8b, 8] {
        return false;
    }
    let trailer = &wire[wire.len() - TRAILER..];
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut crc = flate2::Crc::new();
    crc.update(body);
    word(&trailer[4..]) == body.len() as u32 && word(&trailer[..4]) == crc.sum()
}

/// As [`pack_ready`]; when the client's compressed bytes already are the
/// payload (`AsSent::is_payload_of`), they are stored as they came and
/// nothing is compressed on the acknowledgement's path (BENCHMARKS.md
/// "Change 16: a logs request stored as the client compressed it
/// (2026-12-07)").
pub(crate) fn pack_ready_as_sent(
    endpoint: Endpoint,
    encoding: Encoding,
    level: i32,
    payload: &[u8],
    sent: Option<AsSent<'_>>,
) -> Option<Vec<u8>> {
    let code = encoding_code(encoding)?;
    let limits = endpoint.limits();
    let items: Vec<&[u8]> = item_ranges(payload).map(|r| &payload[r]).collect();
    let fills = items.len() >= limits.max_items.div_ceil(2).max(2)
        || payload.len() >= limits.max_uncompressed / 2;
    // The body is the items joined by commas (for newlines) in brackets:
    // two bytes more than the payload. One too large for a single payload
    // is not compressed only to be thrown away.
    if !fills || items.len() > limits.max_items || payload.len() + 2 > limits.max_uncompressed {
        return None;
    }
    let packed;
    let (body, uncompressed_len) =
        match sent.filter(|s| s.is_payload_of(endpoint, encoding, &items)) {
            Some(sent) => (sent.wire, sent.body.len()),
            None => {
                let mut all = Packer::new(endpoint, encoding, level).pack(&items);
                if all.len() != 1 {
                    return None;
                }
                packed = match all.pop() {
                    Some(Ok(p)) if p.item_count == items.len() => p,
                    _ => return None,
                };
                (&packed.body[..], packed.uncompressed_len)
            }
        };
    let mut out = Vec::with_capacity(body.len() + 16 + 3 * items.len());
    out.extend_from_slice(&[MARKER, VERSION, code]);
    put_varint(&mut out, uncompressed_len as u64);
    put_varint(&mut out, items.len() as u64);
    for item in &items {
        put_varint(&mut out, item.len() as u64);
    }
    out.extend_from_slice(body);
    Some(out)
}

/// A ready record, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Ready {
    encoding: Encoding,
    uncompressed_len: usize,
    /// A piece: the CRC-32 of its uncompressed bytes.
    piece_crc: Option<u32>,
    item_lens: Vec<usize>,
    body: Bytes,
}

/// A ready record that does not parse or whose body does not give back its
/// items (a bug: the queue checksums what it stores).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored payload is not a valid ready payload: {0}")]
pub(crate) struct BadReady(&'static str);

impl Ready {
    /// Parses a payload for which [`is_ready`] holds. Shares its buffer.
    pub(crate) fn parse(payload: &Bytes) -> Result<Ready, BadReady> {
        let mut at = 0usize;
        let byte = |at: &mut usize| -> Result<u8, BadReady> {
            let b = *payload.get(*at).ok_or(BadReady("truncated header"))?;
            *at += 1;
            Ok(b)
        };
        if byte(&mut at)? != MARKER || byte(&mut at)? != VERSION {
            return Err(BadReady("unknown marker or version"));
        }
        let code = byte(&mut at)?;
        let encoding = match code {
            1 | PIECE => Encoding::Gzip,
            2 => Encoding::Deflate,
            3 => Encoding::Zstd,
            _ => return Err(BadReady("unknown encoding")),
        };
        let uncompressed_len = get_varint(payload, &mut at)?;
        if uncompressed_len > MAX_UNCOMPRESSED {
            return Err(BadReady("uncompressed length too large"));
        }
        let piece_crc = match code {
            PIECE => {
                let word = payload
                    .get(at..at + 4)
                    .ok_or(BadReady("truncated header"))?;
                at += 4;
                Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
            }
            _ => None,
        };
        let n = get_varint(payload, &mut at)?;
        if n == 0 {
            return Err(BadReady("no items"));
        }
        // Each length takes at least one byte: a count larger than what is
        // left cannot be right (and must not size an allocation).
        if n > payload.len().saturating_sub(at) {
            return Err(BadReady("item count exceeds the payload"));
        }
        let mut item_lens = Vec::with_capacity(n);
        for _ in 0..n {
            item_lens.push(get_varint(payload, &mut at)?);
        }
        Ok(Ready {
            encoding,
            uncompressed_len,
            piece_crc,
            item_lens,
            body: payload.slice(at..),
        })
    }

    pub(crate) fn item_count(&self) -> usize {
        self.item_lens.len()
    }

    /// Whether this is a piece, to be spliced with others ([`spliced`]).
    pub(crate) fn is_piece(&self) -> bool {
        self.piece_crc.is_some()
    }

    /// Bytes of the stored body (compressed).
    pub(crate) fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Bytes the body decompresses to.
    pub(crate) fn uncompressed_len(&self) -> usize {
        self.uncompressed_len
    }

    /// The payload to send, covering items `0..item_count()`.
    pub(crate) fn payload(&self, endpoint: Endpoint) -> Payload {
        match self.piece_crc {
            Some(_) => spliced(endpoint, &[self]),
            None => Payload {
                body: self.body.clone(),
                encoding: self.encoding,
                first_item: 0,
                item_count: self.item_lens.len(),
                uncompressed_len: self.uncompressed_len,
            },
        }
    }

    /// Rebuilds the items (compact JSON) from the body and their lengths.
    pub(crate) fn items(&self, endpoint: Endpoint) -> Result<Vec<Bytes>, BadReady> {
        let raw = match self.piece_crc {
            Some(_) => splice::inflate(&self.body, self.uncompressed_len),
            None => codec::decompress(self.encoding, &self.body, self.uncompressed_len).ok(),
        }
        .ok_or(BadReady("body does not decompress"))?;
        if raw.len() != self.uncompressed_len {
            return Err(BadReady("body length differs from the header"));
        }
        let raw = Bytes::from(raw);
        let (mut open, sep, mut close) = super::batch::frame_parts(endpoint);
        // A piece holds the items alone: the payload's closing is added
        // when pieces are spliced.
        if self.is_piece() {
            (open, close) = (b"", b"");
        }
        let mut at = 0;
        let expect = |at: &mut usize, part: &[u8]| -> Result<(), BadReady> {
            if raw.get(*at..*at + part.len()) == Some(part) {
                *at += part.len();
                Ok(())
            } else {
                Err(BadReady("body framing differs from the endpoint's"))
            }
        };
        expect(&mut at, open)?;
        let mut items = Vec::with_capacity(self.item_lens.len());
        for (i, &len) in self.item_lens.iter().enumerate() {
            if i > 0 {
                expect(&mut at, sep)?;
            }
            let end = at
                .checked_add(len)
                .filter(|&e| e <= raw.len())
                .ok_or(BadReady("item lengths exceed the body"))?;
            items.push(raw.slice(at..end));
            at = end;
        }
        expect(&mut at, close)?;
        if at != raw.len() {
            return Err(BadReady("bytes after the last item"));
        }
        Ok(items)
    }
}

/// One gzip payload of pieces (the `endpoint`'s closing after them),
/// covering their items in order from 0. Each must be a piece.
/// (A record that is not would get a wrong CRC-32, which the intake
/// refuses; the refusal falls back to the items, as for any ready payload.)
pub(crate) fn spliced(endpoint: Endpoint, pieces: &[&Ready]) -> Payload {
    let closing = super::batch::frame_parts(endpoint).2;
    let parts = pieces.iter().map(|r| {
        let sum = Sum {
            crc: r.piece_crc.unwrap_or_default(),
            len: r.uncompressed_len as u64,
        };
        (&r.body[..], sum)
    });
    let body = splice::splice(parts, closing);
    let items = pieces.iter().map(|r| r.item_count()).sum();
    let raw: usize = pieces.iter().map(|r| r.uncompressed_len).sum();
    Payload {
        body: Bytes::from(body),
        encoding: Encoding::Gzip,
        first_item: 0,
        item_count: items,
        uncompressed_len: raw + closing.len(),
    }
}

fn encoding_code(encoding: Encoding) -> Option<u8> {
    match encoding {
        Encoding::Identity => None,
        Encoding::Gzip => Some(1),
        Encoding::Deflate => Some(2),
        Encoding::Zstd => Some(3),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], at: &mut usize) -> Result<usize, BadReady> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at).ok_or(BadReady("truncated varint"))?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return usize::try_from(v).map_err(|_| BadReady("varint too large"));
        }
    }
    Err(BadReady("varint too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(n: usize, len: usize) -> Vec<u8> {
        let mut p = Vec::new();
        for i in 0..n {
            if i > 0 {
                p.push(b'\n');
            }
            let msg = format!("{i:06} {}", "x".repeat(len));
            p.extend_from_slice(format!(r#"{{"message":"{msg}","service":"web"}}"#).as_bytes());
        }
        p
    }

    #[test]
    fn binary_items_are_length_prefixed() {
        let items: [&[u8]; 3] = [b"\n\x00", &[7u8; 300], b""];
        let p = join_binary(&items);
        let back: Vec<&[u8]> = binary_ranges(&p).map(|r| &p[r]).collect();
        assert_eq!(back, items);
        // A cut record gives the whole items before the cut.
        assert_eq!(binary_ranges(&p[..10]).count(), 1);
    }

    #[test]
    fn item_ranges_split_on_newlines_and_skip_empty_items() {
        let p = b"{\"a\":1}\n{\"b\":2}\n\n{\"c\":3}";
        let items: Vec<&[u8]> = item_ranges(p).map(|r| &p[r]).collect();
        assert_eq!(items, [&b"{\"a\":1}"[..], b"{\"b\":2}", b"{\"c\":3}"]);
        assert_eq!(item_ranges(b"").count(), 0);
        assert_eq!(item_ranges(b"x\n").count(), 1);
    }

    #[test]
    fn a_ready_record_sends_the_items_and_gives_them_back() {
        for encoding in [Encoding::Gzip, Encoding::Deflate, Encoding::Zstd] {
            let payload = logs(500, 200);
            let stored = pack_ready(Endpoint::Logs, encoding, 1, &payload).expect("fills");
            assert!(is_ready(&stored), "{encoding:?}");
            assert!(!is_ready(&payload));
            assert!(stored.len() < payload.len() / 4, "{encoding:?}: compressed");
            let ready = Ready::parse(&Bytes::from(stored)).expect("parses");
            assert_eq!(ready.item_count(), 500);
            let sent = ready.payload(Endpoint::Logs);
            assert_eq!((sent.encoding, sent.item_count), (encoding, 500));
            // The body is what Datadog gets: a JSON array of the items.
            let body = codec::decompress(encoding, &sent.body, 1 << 24).expect("body");
            assert_eq!(body.len(), sent.uncompressed_len);
            let parsed: Vec<serde_json::Value> = serde_json::from_slice(&body).expect("json");
            assert_eq!(parsed.len(), 500);
            assert_eq!(
                parsed[7]["message"].as_str().map(|m| &m[..6]),
                Some("000007")
            );
            // The items come back byte for byte.
            let items = ready.items(Endpoint::Logs).expect("items");
            let want: Vec<&[u8]> = item_ranges(&payload).map(|r| &payload[r]).collect();
            let got: Vec<&[u8]> = items.iter().map(|b| b.as_ref()).collect();
            assert_eq!(got, want, "{encoding:?}");
        }
    }

    /// The JSON array a client sends for `payload`'s items, and its gzip.
    fn as_client_sends(payload: &[u8], level: i32) -> (Vec<u8>, Vec<u8>) {
        let mut body = b"[".to_vec();
        body.extend(payload.iter().map(|&b| if b == b'\n' { b',' } else { b }));
        body.push(b']');
        let wire = codec::compress(Encoding::Gzip, level, &body);
        (body, wire)
    }

    fn stored_as_sent(payload: &[u8], wire: &[u8], body: &[u8], encoding: Encoding) -> Vec<u8> {
        let sent = AsSent {
            encoding,
            wire,
            body,
        };
        pack_ready_as_sent(Endpoint::Logs, Encoding::Gzip, 1, payload, Some(sent)).expect("fills")
    }

    #[test]
    fn a_request_that_is_already_the_payload_is_stored_as_the_client_compressed_it() {
        let payload = logs(500, 200);
        // Level 6: not what the relay would produce at level 1.
        let (body, wire) = as_client_sends(&payload, 6);
        let stored = stored_as_sent(&payload, &wire, &body, Encoding::Gzip);
        assert!(stored.ends_with(&wire), "the client's bytes, as they came");
        let ready = Ready::parse(&Bytes::from(stored)).expect("parses");
        let sent = ready.payload(Endpoint::Logs);
        assert_eq!(&sent.body[..], &wire[..]);
        assert_eq!(
            (sent.encoding, sent.item_count, sent.uncompressed_len),
            (Encoding::Gzip, 500, body.len())
        );
        // The items come back byte for byte, as from a payload the relay packed.
        let items = ready.items(Endpoint::Logs).expect("items");
        let want: Vec<&[u8]> = item_ranges(&payload).map(|r| &payload[r]).collect();
        let got: Vec<&[u8]> = items.iter().map(|b| b.as_ref()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_request_that_is_not_exactly_the_payload_is_packed_by_the_relay() {
        let payload = logs(500, 200);
        let (body, wire) = as_client_sends(&payload, 6);
        let packed_here = pack_ready(Endpoint::Logs, Encoding::Gzip, 1, &payload).expect("fills");
        let mut spaced = body.clone();
        spaced.insert(1, b' ');
        let (_, spaced_wire) = as_client_sends(&payload, 6);
        // Two gzip members that together decompress to the body.
        let gzip = |part: &[u8]| codec::compress(Encoding::Gzip, 1, part);
        let two_members = [gzip(&body[..1000]), gzip(&body[1000..])].concat();
        assert_eq!(
            codec::decompress(Encoding::Gzip, &two_members, 1 << 24).expect("valid gzip"),
            body
        );
        let mut bad_crc = wire.clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 1;
        // Items the relay changed or dropped (fewer than the body holds).
        let fewer = logs(499, 200);
        let fewer = [fewer.clone(), b"\n".to_vec(), logs(1, 200)].concat();
        for (why, payload, wire, body, encoding) in [
            (
                "deflate, not gzip",
                &payload,
                &wire,
                &body,
                Encoding::Deflate,
            ),
            (
                "a space in the body",
                &payload,
                &spaced_wire,
                &spaced,
                Encoding::Gzip,
            ),
            ("two members", &payload, &two_members, &body, Encoding::Gzip),
            (
                "a trailer that is not the body's",
                &payload,
                &bad_crc,
                &body,
                Encoding::Gzip,
            ),
            ("items not the body's", &fewer, &wire, &body, Encoding::Gzip),
        ] {
            let stored = stored_as_sent(payload, wire, body, encoding);
            assert!(!stored.ends_with(wire), "{why}");
            if payload == &logs(500, 200) {
                assert_eq!(stored, packed_here, "{why}");
            }
        }
    }

    #[test]
    fn only_requests_that_fill_half_a_payload_and_fit_one_are_packed() {
        // 499 small logs: under half of 1000 items and of 5 MB.
        assert!(pack_ready(Endpoint::Logs, Encoding::Gzip, 1, &logs(499, 100)).is_none());
        assert!(pack_ready(Endpoint::Logs, Encoding::Gzip, 1, &logs(500, 100)).is_some());
        // Few but large logs: half the uncompressed limit.
        assert!(pack_ready(Endpoint::Logs, Encoding::Gzip, 1, &logs(2, 900_000)).is_none());
        assert!(pack_ready(Endpoint::Logs, Encoding::Gzip, 1, &logs(3, 900_000)).is_some());
        // More than one payload's worth: stays items, delivery splits it.
        assert!(pack_ready(Endpoint::Logs, Encoding::Gzip, 1, &logs(1001, 10)).is_none());
        assert!(pack_ready(Endpoint::Logs, Encoding::Gzip, 1, &logs(6, 900_000)).is_none());
        // Identity is never stored ready (nothing would be gained).
        assert!(pack_ready(Endpoint::Logs, Encoding::Identity, 1, &logs(600, 100)).is_none());
    }

    #[test]
    fn damaged_ready_records_are_refused_with_a_reason() {
        let stored = pack_ready(Endpoint::Logs, Encoding::Gzip, 1, &logs(500, 50)).expect("fills");
        for cut in [1, 2, 3, 5, 40] {
            let err = Ready::parse(&Bytes::copy_from_slice(&stored[..cut]))
                .and_then(|r| r.items(Endpoint::Logs))
                .expect_err("truncated");
            assert!(!err.to_string().is_empty());
        }
        let mut bad = stored.clone();
        bad[2] = 9;
        assert_eq!(
            Ready::parse(&Bytes::from(bad)).err(),
            Some(BadReady("unknown encoding"))
        );
        // A header that claims more items than bytes left.
        let huge = [MARKER, VERSION, 1, 10, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(
            Ready::parse(&Bytes::copy_from_slice(&huge)).err(),
            Some(BadReady("item count exceeds the payload"))
        );
        // Lengths that do not match the body's framing.
        let mut ready = Ready::parse(&Bytes::from(stored)).expect("parses");
        ready.item_lens[0] += 1;
        assert!(ready.items(Endpoint::Logs).is_err());
    }

    /// `n` trace items (framed tracer payloads) of one span each, ids from
    /// `first`, joined as a binary record.
    fn trace_record(first: u64, n: u64) -> (Vec<Vec<u8>>, Vec<u8>) {
        use crate::traces::pb;
        let items: Vec<Vec<u8>> = (first..first + n)
            .map(|id| {
                crate::traces::frame(&pb::TracerPayload {
                    language_name: "python".into(),
                    chunks: vec![pb::TraceChunk {
                        spans: vec![pb::Span {
                            trace_id: id,
                            span_id: id,
                            service: "checkout".into(),
                            name: "http.request".into(),
                            resource: format!("GET /orders/{}", id % 7),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            })
            .collect();
        let joined = join_binary(&items);
        (items, joined)
    }

    /// The trace ids of a traces payload as Datadog decodes it.
    fn trace_ids(payload: &Payload) -> Vec<u64> {
        use prost::Message as _;
        let body = codec::decompress(payload.encoding, &payload.body, 1 << 24).expect("gzip");
        assert_eq!(body.len(), payload.uncompressed_len);
        let decoded = crate::traces::pb::AgentPayload::decode(&body[..]).expect("AgentPayload");
        assert_eq!(
            decoded.agent_version,
            crate::traces::AGENT_VERSION,
            "the closing"
        );
        decoded
            .tracer_payloads
            .iter()
            .map(|t| t.chunks[0].spans[0].trace_id)
            .collect()
    }

    #[test]
    fn trace_pieces_splice_into_one_payload_and_give_their_items_back() {
        let (items_a, a) = trace_record(1, 300);
        let (items_b, b) = trace_record(301, 2);
        let pieces: Vec<Ready> = [&a, &b]
            .iter()
            .map(|r| {
                let stored = pack_piece(Endpoint::Traces, 1, r).expect("a piece");
                assert!(is_ready(&stored) && !is_ready(r));
                Ready::parse(&Bytes::from(stored)).expect("parses")
            })
            .collect();
        assert!(pieces[0].is_piece() && pieces[0].body_len() < a.len() / 3);
        // Alone, each is a payload of its own items.
        let one = pieces[1].payload(Endpoint::Traces);
        assert_eq!((one.encoding, one.item_count), (Encoding::Gzip, 2));
        assert_eq!(trace_ids(&one), vec![301, 302]);
        // Spliced, one payload of both, in order.
        let both = spliced(Endpoint::Traces, &[&pieces[0], &pieces[1]]);
        assert_eq!(both.item_count, 302);
        assert_eq!(trace_ids(&both), (1..=302).collect::<Vec<_>>());
        // The items come back byte for byte.
        for (ready, want) in pieces.iter().zip([items_a, items_b]) {
            let got = ready.items(Endpoint::Traces).expect("items");
            assert!(got.iter().map(|b| &b[..]).eq(want.iter().map(|v| &v[..])));
        }
    }

    #[test]
    fn only_traces_store_pieces_and_only_what_fits_one_payload() {
        let (_, small) = trace_record(1, 3);
        assert!(pack_piece(Endpoint::TraceStats, 1, &small).is_none());
        assert!(pack_piece(Endpoint::Logs, 1, &small).is_none());
        assert!(pack_piece(Endpoint::Traces, 1, &[]).is_none(), "no items");
        let max = Endpoint::Traces.limits().max_items as u64;
        let (_, many) = trace_record(1, max + 1);
        assert!(
            pack_piece(Endpoint::Traces, 1, &many).is_none(),
            "too many items"
        );
        let big = join_binary(&vec![vec![7u8; 900_000]; 4]);
        assert!(
            pack_piece(Endpoint::Traces, 1, &big).is_none(),
            "too many bytes"
        );
        // A cut or altered piece is reported, not sent as garbage items.
        let stored = pack_piece(Endpoint::Traces, 1, &small).expect("a piece");
        let cut = Bytes::from(stored[..stored.len() - 20].to_vec());
        let ready = Ready::parse(&cut).expect("the header parses");
        assert!(ready.items(Endpoint::Traces).is_err());
    }
}
