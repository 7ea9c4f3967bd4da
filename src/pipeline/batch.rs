//! Packing queued items into Datadog request payloads that never exceed the
//! endpoint's limits.
//!
//! Owns: the request wrappers (`{"series":[…]}`, `[…]`, a lone event), the
//! order-preserving split of a run of items into payloads, and the guarantee
//! that every payload satisfies [`Limits`]: compressed body ≤
//! `max_compressed`, uncompressed body ≤ `max_uncompressed`, items ≤
//! `max_items`, each item ≤ `max_item`. Knows nothing of the network, retries,
//! tenants or the queue: items in, bodies out.
//!
//! Limits are [`Endpoint::limits`]: series v2 512,000 B compressed /
//! 5,242,880 B uncompressed ("less than", so one byte less; docs/datadog.md
//! "Series v2"); logs 5,000,000 B, 1000 entries, 1,000,000 B per entry
//! (docs/datadog.md "Logs"); events one per request (docs/datadog.md
//! "Events v1"); check_run the Agent's 2.5 MB / 4 MB caps (docs/datadog.md
//! "Service checks").
//!
//! Exact, not estimated. The uncompressed size and the item count are
//! counted. The compressed size is bounded by `Encoder::final_bound`: an
//! item goes in only while the bound with it (and the closing wrapper) stays
//! within `max_compressed`. When the bound says no, the encoder is sync-
//! flushed, which replaces the worst case of everything since the last flush
//! by its real size, and the bound is asked again; only when it still says no
//! is the payload finished. The real size is then at most the last bound that
//! said yes. Payloads far below the cap (the common case for small batches)
//! are compressed in one pass with no flush at all. As a last line of
//! defence, a finished body over the cap (impossible while the bound is
//! right) is split in halves and packed again, so the limit holds regardless.
//!
//! Fill (`benches/pipeline.rs`, level 1): series v2 with high-cardinality
//! tags end at 99.9% of the 512,000-byte cap (gzip and zstd); typical series
//! (~260 B, 5 tags) hit the 10,000-series cap first (~2.6 MB, ~336 KB gzip);
//! logs of 300 B – 2 KB hit the 1000-entry cap, large logs the 5,000,000-byte
//! cap. The on-demand sync flushes cost under 0.1% of compression ratio
//! against compressing each body in one shot.

use std::ops::Range;

use bytes::Bytes;

use super::encode::{EncodeError, Encoder};
use crate::site::{Encoding, Endpoint, Limits};

/// One request body, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub body: Bytes,
    pub(crate) encoding: Encoding,
    /// The payload holds `items[first_item..first_item + item_count]`.
    pub(crate) first_item: usize,
    pub item_count: usize,
    pub uncompressed_len: usize,
}

impl Payload {
    pub(crate) fn items(&self) -> Range<usize> {
        self.first_item..self.first_item + self.item_count
    }
}

/// Items that did not become a payload. Each covers a range of the input,
/// in order with the payloads around it, so nothing is lost silently.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// This item cannot be sent even alone (it should have been refused at
    /// ingest); the caller dead-letters it.
    #[error("item {index} ({size} bytes) cannot fit in any {endpoint} request: {reason}")]
    Oversized {
        index: usize,
        size: usize,
        endpoint: Endpoint,
        reason: String,
    },
    /// The compressor failed (not expected: it writes to memory); the items
    /// may be retried.
    #[error("compressing items {first_item}..{} failed: {source}", first_item + item_count)]
    Encode {
        first_item: usize,
        item_count: usize,
        #[source]
        source: EncodeError,
    },
}

impl BatchError {
    /// The input items this error covers.
    pub(crate) fn items(&self) -> Range<usize> {
        match self {
            BatchError::Oversized { index, .. } => *index..index + 1,
            BatchError::Encode {
                first_item,
                item_count,
                ..
            } => *first_item..first_item + item_count,
        }
    }
}

/// A list of items the packer reads by index: a slice of byte strings, or
/// a take's item table (`pipeline::items`), whose items are ranges of the
/// records' buffers.
pub trait Items {
    /// How many items the list holds.
    fn count(&self) -> usize;
    /// Item `i` (`i < count()`).
    fn item(&self, i: usize) -> &[u8];
}

impl<T: AsRef<[u8]>> Items for [T] {
    fn count(&self) -> usize {
        self.len()
    }
    fn item(&self, i: usize) -> &[u8] {
        self[i].as_ref()
    }
}

/// As the slice it holds.
impl<T: AsRef<[u8]>> Items for Vec<T> {
    fn count(&self) -> usize {
        self.as_slice().count()
    }
    fn item(&self, i: usize) -> &[u8] {
        self.as_slice().item(i)
    }
}

/// How items are joined into one body.
struct Frame {
    open: &'static [u8],
    sep: &'static [u8],
    close: &'static [u8],
}

fn frame(endpoint: Endpoint) -> Frame {
    match endpoint {
        Endpoint::SeriesV2 | Endpoint::SeriesV1 | Endpoint::Distribution => Frame {
            open: br#"{"series":["#,
            sep: b",",
            close: b"]}",
        },
        Endpoint::Logs | Endpoint::CheckRun => Frame {
            open: b"[",
            sep: b",",
            close: b"]",
        },
        // One event per request: the item is the body.
        Endpoint::Events | Endpoint::EventsV2 => Frame {
            open: b"",
            sep: b"",
            close: b"",
        },
        // Each item is one `AgentPayload.tracerPayloads` field, framed
        // (`crate::traces::pb`): the body is the items, then the relay's own
        // fields of the `AgentPayload`.
        Endpoint::Traces => Frame {
            open: b"",
            sep: b"",
            close: crate::traces::agent_payload_tail(),
        },
        // A MessagePack array announces its length first: stats are packed
        // by `pack_counted`, which knows the count before it writes.
        Endpoint::TraceStats | Endpoint::ClientStats => Frame {
            open: b"",
            sep: b"",
            close: b"",
        },
    }
}

/// The bytes that open a body, separate its items and close it, for
/// code that rebuilds items from a body (`record::Ready::items`).
pub(crate) fn frame_parts(endpoint: Endpoint) -> (&'static [u8], &'static [u8], &'static [u8]) {
    let f = frame(endpoint);
    (f.open, f.sep, f.close)
}

/// Packs items for one endpoint with one encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packer {
    endpoint: Endpoint,
    encoding: Encoding,
    level: i32,
    limits: Limits,
}

/// A payload being filled.
struct Open {
    enc: Encoder,
    first: usize,
    count: usize,
}

impl Packer {
    /// A packer for `endpoint` within its Datadog limits. `level`: see
    /// [`Encoder::new`].
    pub fn new(endpoint: Endpoint, encoding: Encoding, level: i32) -> Packer {
        Packer {
            endpoint,
            encoding,
            level,
            limits: endpoint.limits(),
        }
        .with_limits(endpoint.limits())
    }

    /// At most `n` items per payload (never more than the endpoint allows,
    /// never fewer than one): used to split in halves after an unexpected 413.
    pub(crate) fn with_max_items(mut self, n: usize) -> Packer {
        self.limits.max_items = n.clamp(1, self.limits.max_items.max(1));
        self
    }

    /// Replaces the limits, e.g. smaller ones for tests. Sending with limits
    /// above [`Endpoint::limits`] gets payloads refused by Datadog.
    /// Events always go one per request (their body is the event itself).
    pub(crate) fn with_limits(mut self, limits: Limits) -> Packer {
        self.limits = limits;
        if self.endpoint.one_per_request() {
            self.limits.max_items = self.limits.max_items.min(1);
        }
        self
    }

    #[cfg(test)]
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// Packs `items` (compact JSON, in order) into payloads. The entries
    /// cover `0..items.count()` in order, each a contiguous range, every item
    /// exactly once: `Ok` payloads satisfy every limit; an `Err` names the
    /// items it covers ([`BatchError::items`]).
    pub fn pack<L: Items + ?Sized>(&self, items: &L) -> Vec<Result<Payload, BatchError>> {
        let mut out = Vec::new();
        let all = 0..items.count();
        if self.endpoint.is_stats() {
            self.pack_counted(items, all, &mut out);
        } else {
            self.pack_into(items, all, &mut out);
        }
        out
    }

    /// Packs stats: a MessagePack `StatsPayload` announces how many client
    /// payloads it holds before them, so each payload's items are chosen
    /// first (by uncompressed size and count, exact), then written and
    /// compressed in one pass. A compressed body over the cap (possible
    /// only for data gzip cannot shrink) is packed again in halves.
    fn pack_counted<L: Items + ?Sized>(
        &self,
        items: &L,
        range: Range<usize>,
        out: &mut Vec<Result<Payload, BatchError>>,
    ) {
        let l = self.limits;
        let computed = self.endpoint == Endpoint::ClientStats;
        let overhead = crate::traces::stats::stats_payload(computed, std::iter::empty()).len() + 4;
        let mut i = range.start;
        let len = |k: usize| items.item(k).len();
        while i < range.end {
            if len(i) > l.max_item || overhead + len(i) > l.max_uncompressed {
                let why = format!("Datadog accepts at most {} bytes per item", l.max_item);
                out.push(Err(self.oversized(i, len(i), why)));
                i += 1;
                continue;
            }
            let (mut j, mut size) = (i, overhead);
            while j < range.end
                && j - i < l.max_items
                && len(j) <= l.max_item
                && size + len(j) <= l.max_uncompressed
            {
                size += len(j);
                j += 1;
            }
            let body = crate::traces::stats::stats_payload(computed, (i..j).map(|k| items.item(k)));
            let encoded = Encoder::new(self.encoding, self.level, body.len() / 2 + 64)
                .and_then(|mut e| e.write(&body).map(|()| e))
                .and_then(|e| e.finish());
            match encoded {
                Ok(c) if c.len() > l.max_compressed && j - i > 1 => {
                    self.with_max_items((j - i).div_ceil(2))
                        .pack_counted(items, i..j, out);
                }
                Ok(c) if c.len() > l.max_compressed => {
                    let why = format!(
                        "it compresses to {} bytes; Datadog accepts at most {}",
                        c.len(),
                        l.max_compressed
                    );
                    out.push(Err(self.oversized(i, len(i), why)));
                }
                Ok(c) => out.push(Ok(Payload {
                    body: Bytes::from(c),
                    encoding: self.encoding,
                    first_item: i,
                    item_count: j - i,
                    uncompressed_len: body.len(),
                })),
                Err(source) => out.push(Err(BatchError::Encode {
                    first_item: i,
                    item_count: j - i,
                    source,
                })),
            }
            i = j;
        }
    }

    /// Packs `items[range]` onto `out`.
    fn pack_into<L: Items + ?Sized>(
        &self,
        items: &L,
        range: Range<usize>,
        out: &mut Vec<Result<Payload, BatchError>>,
    ) {
        let frame = frame(self.endpoint);
        let mut open: Option<Open> = None;
        // Bytes of the items from this one on: a payload's buffer is sized
        // for what is left to pack, not for the largest payload.
        let mut left: usize = range.clone().map(|k| items.item(k).len()).sum();
        for k in range {
            let item = items.item(k);
            let rest = left;
            left -= item.len();
            if let Some(mut p) = open.take() {
                match self.try_add(&frame, &mut p, item) {
                    Ok(true) => {
                        open = Some(p);
                        continue;
                    }
                    Ok(false) => self.close(&frame, p, items, out),
                    Err(source) => out.push(Err(BatchError::Encode {
                        first_item: p.first,
                        item_count: p.count,
                        source,
                    })),
                }
            }
            open = self.start(&frame, k, item, rest, out);
        }
        if let Some(p) = open {
            self.close(&frame, p, items, out);
        }
    }

    fn oversized(&self, index: usize, size: usize, reason: String) -> BatchError {
        BatchError::Oversized {
            index,
            size,
            endpoint: self.endpoint,
            reason,
        }
    }

    /// Starts a payload with `item`, or settles the item alone when the
    /// bound cannot promise it fits: compressed alone it either fits (a
    /// payload of one) or is oversized.
    fn start(
        &self,
        frame: &Frame,
        index: usize,
        item: &[u8],
        rest: usize,
        out: &mut Vec<Result<Payload, BatchError>>,
    ) -> Option<Open> {
        let l = &self.limits;
        let unc = frame.open.len() + item.len() + frame.close.len();
        let reason = if item.len() > l.max_item {
            Some(format!(
                "Datadog accepts at most {} bytes per item",
                l.max_item
            ))
        } else if unc > l.max_uncompressed {
            Some(format!(
                "its request would be {unc} bytes; Datadog accepts at most {}",
                l.max_uncompressed
            ))
        } else if l.max_items == 0 {
            Some("the endpoint accepts no items".into())
        } else {
            None
        };
        if let Some(reason) = reason {
            out.push(Err(self.oversized(index, item.len(), reason)));
            return None;
        }
        let encode_err = |source| BatchError::Encode {
            first_item: index,
            item_count: 1,
            source,
        };
        let capacity = self.capacity(rest);
        let mut enc = match Encoder::new(self.encoding, self.level, capacity) {
            Ok(e) => e,
            Err(e) => {
                out.push(Err(encode_err(e)));
                return None;
            }
        };
        let fits = enc.final_bound(unc) <= l.max_compressed;
        let written = enc.write(frame.open).and_then(|()| enc.write(item));
        if let Err(e) = written {
            out.push(Err(encode_err(e)));
            return None;
        }
        let p = Open {
            enc,
            first: index,
            count: 1,
        };
        if fits {
            return Some(p);
        }
        match self.finish(frame, p) {
            Ok(payload) if payload.body.len() <= l.max_compressed => out.push(Ok(payload)),
            Ok(payload) => out.push(Err(self.oversized(
                index,
                item.len(),
                format!(
                    "it compresses to {} bytes; Datadog accepts at most {}",
                    payload.body.len(),
                    l.max_compressed
                ),
            ))),
            Err(e) => out.push(Err(encode_err(e))),
        }
        None
    }

    /// Adds `item` to `p` if every limit still provably holds. `Ok(false)`:
    /// the payload is full.
    fn try_add(&self, frame: &Frame, p: &mut Open, item: &[u8]) -> Result<bool, EncodeError> {
        let l = &self.limits;
        let add = frame.sep.len() + item.len();
        if p.count >= l.max_items
            || item.len() > l.max_item
            || p.enc.uncompressed_len() + add + frame.close.len() > l.max_uncompressed
        {
            return Ok(false);
        }
        if p.enc.final_bound(add + frame.close.len()) > l.max_compressed {
            if p.enc.unflushed() == 0 {
                return Ok(false);
            }
            p.enc.sync_flush()?;
            if p.enc.final_bound(add + frame.close.len()) > l.max_compressed {
                return Ok(false);
            }
        }
        p.enc.write(frame.sep)?;
        p.enc.write(item)?;
        p.count += 1;
        Ok(true)
    }

    fn finish(&self, frame: &Frame, mut p: Open) -> Result<Payload, EncodeError> {
        p.enc.write(frame.close)?;
        let uncompressed_len = p.enc.uncompressed_len();
        let body = p.enc.finish()?;
        Ok(Payload {
            body: Bytes::from(body),
            encoding: self.encoding,
            first_item: p.first,
            item_count: p.count,
            uncompressed_len,
        })
    }

    /// Finishes `p` onto `out`.
    fn close<L: Items + ?Sized>(
        &self,
        frame: &Frame,
        p: Open,
        items: &L,
        out: &mut Vec<Result<Payload, BatchError>>,
    ) {
        let (first, count) = (p.first, p.count);
        match self.finish(frame, p) {
            Ok(payload) if payload.body.len() <= self.limits.max_compressed => {
                out.push(Ok(payload));
            }
            // Unreachable while `final_bound` is a true bound (tested in
            // `encode`); if it ever is not, the limit still holds.
            Ok(payload) if count > 1 => {
                debug_assert!(false, "final_bound was exceeded: {}", payload.body.len());
                tracing::warn!(
                    endpoint = %self.endpoint,
                    size = payload.body.len(),
                    limit = self.limits.max_compressed,
                    "compressed payload above its bound; splitting it"
                );
                self.with_max_items(count.div_ceil(2))
                    .pack_into(items, first..first + count, out);
            }
            Ok(payload) => out.push(Err(self.oversized(
                first,
                items.item(first).len(),
                format!(
                    "it compresses to {} bytes; Datadog accepts at most {}",
                    payload.body.len(),
                    self.limits.max_compressed
                ),
            ))),
            Err(source) => out.push(Err(BatchError::Encode {
                first_item: first,
                item_count: count,
                source,
            })),
        }
    }

    /// A starting size for the output buffer of a payload that begins
    /// with `rest` bytes of items left to pack: a quarter of those (JSON
    /// and span items compress four to ten times; a payload that does not
    /// grows its buffer), at most a quarter of the compressed cap (most
    /// payloads end near it or are small) and 1 MiB. Packed payloads wait
    /// for their turn to be sent, so their unused room is memory held: a
    /// take of a light series tenant packs about 25 KB into a buffer that
    /// was 128 KB (BENCHMARKS.md "Change 23: delivery's bookkeeping sized
    /// to the items (2026-12-07)").
    fn capacity(&self, rest: usize) -> usize {
        (self.limits.max_compressed / 4)
            .min(1 << 20)
            .min(rest / 4 + 4096)
    }
}

#[cfg(test)]
pub(crate) mod tests;
