//! What one take sends, as plain synchronous code (no I/O, no clock, no
//! locks): the records taken from the queue become the items to pack and
//! the payloads stored ready (trace pieces joined as far as one payload
//! holds them, [`Plan::work`]), with what passed Datadog's acceptance window
//! dropped, and the bookkeeping that tells, once the payloads are
//! answered, which records are settled (acked) and which go back.
//!
//! The sending loop (`send/take.rs`) runs [`Plan::work`]: it packs the
//! items, sends each ready payload as stored, and tells the plan each
//! answer's [`Verdict`] ([`Plan::answered`]), which settles items, splits
//! work or stops; at the end [`Plan::settlement`] says which records to ack
//! and which go back to the queue.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::Bytes;

use super::age::{self, Trimmed};
use super::items::{ItemTable, Source};
use super::record::{Ready, binary_ranges, is_ready, item_ranges, may_be_ready, stores_pieces};
use super::retry::Verdict;
use crate::queue::Taken;
use crate::site::Endpoint;

/// One take, planned.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The items to pack: those of the records not stored ready (one run,
    /// [`Plan::items_run`]). Items are ranges of the records' buffers, so
    /// they move without copying. Each ready record has a run of item
    /// indices after them (in `ready`), whose items exist here only once
    /// rebuilt ([`Plan::rebuild`], when its payload must fall back to
    /// items): a ready record is sent as stored, and a take of trace pieces
    /// holds hundreds of thousands of spans, so placeholders made up front
    /// would cost 12 bytes a span for nothing.
    pub(crate) items: ItemTable,
    /// For each record (in the take), the indices of its items, in order
    /// (a ready record's are placeholders until rebuilt): a record is acked
    /// once they are all settled, at once when it has none left to send
    /// (all aged out, or damaged). Per record, not per item: a take of
    /// trace pieces holds up to a million spans.
    pub(crate) runs: Vec<Range<u32>>,
    /// The items to pack.
    pub(crate) items_run: Range<usize>,
    /// The ready records: their placeholders' range and stored payload.
    pub(crate) ready: Vec<(Range<usize>, Ready)>,
    /// Items dropped for being past the window.
    pub(crate) aged: u64,
    /// Records whose stored payload cannot be read back: (record index,
    /// why). Their items are not sent (the caller dead-letters them).
    pub(crate) damaged: Vec<(usize, String)>,
    /// Which items are settled (delivered or dead-lettered).
    settled: Bits,
}

/// One bit per item.
#[derive(Debug, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn set(&mut self, r: Range<usize>) {
        for i in r {
            self.0[i / 64] |= 1 << (i % 64);
        }
    }

    fn all(&self, r: Range<usize>) -> bool {
        r.into_iter().all(|i| self.0[i / 64] & (1 << (i % 64)) != 0)
    }
}

/// One unit of sending: a run of items packed into payloads of at most
/// `max_items` items, or ready records over their placeholder items: one
/// stored payload sent as is, or pieces spliced into one payload. `ready`
/// holds each record's placeholders, in order; together they are `range`.
#[derive(Debug)]
pub(crate) struct Work {
    pub(crate) range: Range<usize>,
    pub(crate) max_items: usize,
    pub(crate) ready: Vec<(Range<usize>, Ready)>,
}

/// What to do after one payload's answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Delivered; its items are settled.
    Next,
    /// Refused for good: dead-letter these items (they are settled).
    DeadLetter(Range<usize>),
    /// An unexpected 413: send these items again in smaller payloads.
    Split(Range<usize>, usize),
    /// Stop the take (retry later, or the Forbidden fallback); every item
    /// not settled goes back to the queue.
    Stop,
}

/// Which records of a take to ack and which to give back, by index.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Settlement {
    pub(crate) ack: Vec<usize>,
    pub(crate) release: Vec<usize>,
}

impl Plan {
    /// The take's work: the ready payloads first (pieces spliced together
    /// as far as one `endpoint` payload holds them), then the items to pack.
    pub(crate) fn work(&mut self, endpoint: Endpoint) -> VecDeque<Work> {
        let max_items = endpoint.limits().max_items;
        let mut work: VecDeque<Work> = VecDeque::new();
        let mut room = Room::new(endpoint);
        for (range, ready) in std::mem::take(&mut self.ready) {
            // Pieces join the pieces before them; a stored payload is alone.
            let after_piece = work
                .back()
                .is_some_and(|w| w.ready.first().is_some_and(|(_, r)| r.is_piece()));
            let joins = after_piece && ready.is_piece() && room.takes(&ready);
            if let (true, Some(w)) = (joins, work.back_mut()) {
                w.range.end = range.end;
                w.ready.push((range, ready));
                continue;
            }
            room = Room::new(endpoint);
            room.takes(&ready);
            work.push_back(Work {
                range: range.clone(),
                max_items,
                ready: vec![(range, ready)],
            });
        }
        if !self.items_run.is_empty() {
            work.push_back(Work {
                range: self.items_run.clone(),
                max_items,
                ready: Vec::new(),
            });
        }
        work
    }

    /// Marks items settled (delivered, dead-lettered, or unpackable).
    pub(crate) fn settle(&mut self, r: Range<usize>) {
        self.settled.set(r);
    }

    /// The record (its index in the take) item `i` belongs to.
    pub(crate) fn record_of(&self, i: usize) -> Option<usize> {
        self.runs.iter().position(|r| r.contains(&(i as u32)))
    }

    /// Applies the verdict on the payload that carried items `r`.
    pub(crate) fn answered(&mut self, r: Range<usize>, verdict: Verdict) -> Step {
        match verdict {
            Verdict::Delivered => {
                self.settle(r);
                Step::Next
            }
            // Halves until one item is left: one that Datadog still finds
            // too large will never fit, and is refused for good.
            Verdict::Split if r.len() > 1 => {
                let half = r.len().div_ceil(2);
                Step::Split(r, half)
            }
            Verdict::DeadLetter | Verdict::Split => {
                self.settle(r.clone());
                Step::DeadLetter(r)
            }
            Verdict::Forbidden | Verdict::Retry { .. } => Step::Stop,
        }
    }

    /// Fills a ready record's placeholders (`r`) with the items rebuilt
    /// from its payload, for when the payload cannot be sent as stored.
    pub(crate) fn rebuild(
        &mut self,
        ready: &Ready,
        endpoint: Endpoint,
        r: Range<usize>,
    ) -> Result<(), String> {
        let list = ready.items(endpoint).map_err(|e| e.to_string())?;
        if list.len() != r.len() {
            return Err("stored payload's item count differs from its header".into());
        }
        for (i, item) in r.zip(list) {
            self.items.set(i, item);
        }
        Ok(())
    }

    /// The items `r`, as far as they exist: a ready record's only once
    /// rebuilt.
    pub(crate) fn items_in(&self, r: Range<usize>) -> Vec<&[u8]> {
        self.items.slice(r)
    }

    /// The records whose items are all settled (or that had none left to
    /// send) are acked; the others go back to the queue whole.
    pub(crate) fn settlement(&self) -> Settlement {
        let mut out = Settlement::default();
        for (ri, run) in self.runs.iter().enumerate() {
            if self.settled.all(run.start as usize..run.end as usize) {
                out.ack.push(ri);
            } else {
                out.release.push(ri);
            }
        }
        out
    }
}

/// What is left of one spliced payload's limits.
struct Room {
    limits: crate::site::Limits,
    items: usize,
    raw: usize,
    compressed: usize,
}

impl Room {
    fn new(endpoint: Endpoint) -> Room {
        let closing = super::batch::frame_parts(endpoint).2;
        Room {
            limits: endpoint.limits(),
            items: 0,
            raw: closing.len(),
            compressed: super::splice::overhead(closing),
        }
    }

    /// Counts `piece` in when the payload still holds it.
    fn takes(&mut self, piece: &Ready) -> bool {
        let items = self.items.saturating_add(piece.item_count());
        let raw = self.raw + piece.uncompressed_len();
        let compressed = self.compressed + piece.body_len();
        let fits = items <= self.limits.max_items
            && raw <= self.limits.max_uncompressed
            && compressed <= self.limits.max_compressed;
        if fits {
            (self.items, self.raw, self.compressed) = (items, raw, compressed);
        }
        fits
    }
}

/// An item of a record being planned: a range of its payload, or made
/// anew from a ready record's payload.
enum Kept {
    Range(Source, Range<usize>),
    Made(Bytes),
}

impl Plan {
    /// Adds `item` of `rec` to the items, trimmed item by item when the
    /// record is partly past the window (`cutoff_ms`); counts what aged out.
    fn keep(&mut self, endpoint: Endpoint, cutoff_ms: i64, rec: &Taken, item: Kept) {
        if rec.oldest_ms < cutoff_ms {
            let bytes = match &item {
                Kept::Range(_, r) => &rec.payload[r.clone()],
                Kept::Made(b) => &b[..],
            };
            match age::trim(endpoint, bytes, cutoff_ms) {
                Trimmed::Keep => {}
                Trimmed::Drop => {
                    self.aged += 1;
                    return;
                }
                Trimmed::Rewritten(bytes) => return self.items.push(Bytes::from(bytes)),
            }
        }
        match item {
            Kept::Range(source, r) => self.items.push_range(source, r),
            Kept::Made(b) => self.items.push(b),
        }
    }
}

/// Plans `taken` for `endpoint`: items older than `cutoff_ms` (Datadog's
/// acceptance window) are dropped, a record partly past it is trimmed item
/// by item (a ready one is rebuilt into its items for that), and a ready
/// record wholly inside it stays one payload.
pub(crate) fn plan(taken: &[Taken], endpoint: Endpoint, cutoff_ms: i64) -> Plan {
    let mut p = Plan {
        items: ItemTable::default(),
        runs: vec![0..0; taken.len()],
        items_run: 0..0,
        ready: Vec::new(),
        aged: 0,
        damaged: Vec::new(),
        settled: Bits::default(),
    };
    let mut ready_records: Vec<(usize, Ready)> = Vec::new();
    for (ri, rec) in taken.iter().enumerate() {
        if rec.newest_ms < cutoff_ms {
            p.aged += u64::from(rec.items);
            continue;
        }
        let rebuilt = if may_be_ready(endpoint) && is_ready(&rec.payload) {
            match Ready::parse(&rec.payload) {
                Ok(r) if r.is_piece() && !stores_pieces(endpoint) => {
                    p.damaged
                        .push((ri, "a piece on an endpoint without pieces".into()));
                    continue;
                }
                Ok(r) if rec.oldest_ms >= cutoff_ms => {
                    ready_records.push((ri, r));
                    continue;
                }
                // Partly past the window: its items are trimmed one by one.
                parsed => match parsed.and_then(|r| r.items(endpoint)) {
                    Ok(list) => Some(list),
                    Err(e) => {
                        p.damaged.push((ri, e.to_string()));
                        continue;
                    }
                },
            }
        } else {
            None
        };
        let items = p.items.len();
        match rebuilt {
            Some(list) => {
                for item in list {
                    p.keep(endpoint, cutoff_ms, rec, Kept::Made(item));
                }
            }
            None => {
                let source = p.items.source(rec.payload.clone());
                let ranges: Box<dyn Iterator<Item = Range<usize>>> = if endpoint.binary() {
                    Box::new(binary_ranges(&rec.payload))
                } else {
                    Box::new(item_ranges(&rec.payload))
                };
                for r in ranges {
                    p.keep(endpoint, cutoff_ms, rec, Kept::Range(source, r));
                }
            }
        }
        p.runs[ri] = items as u32..p.items.len() as u32;
    }
    // The ready records' placeholders go after every other item, so that
    // the items of the other records form one run to pack.
    p.items_run = 0..p.items.len();
    let mut end = p.items.len();
    for (ri, r) in ready_records {
        let start = end;
        end += r.item_count();
        p.runs[ri] = start as u32..end as u32;
        p.ready.push((start..end, r));
    }
    p.settled = Bits::new(end);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::RecordId;

    fn taken(items: &[&str], oldest_ms: i64, newest_ms: i64) -> Taken {
        Taken {
            id: RecordId::for_tests(0),
            tenant: "t".into(),
            generation: 0,
            stream: Endpoint::SeriesV2.code(),
            items: items.len() as u32,
            created_ms: newest_ms,
            oldest_ms,
            newest_ms,
            payload: Bytes::from(items.join("\n")),
        }
    }

    fn series(ts: &[i64]) -> String {
        let points: Vec<String> = ts
            .iter()
            .map(|t| format!("{{\"timestamp\":{t},\"value\":1}}"))
            .collect();
        format!("{{\"metric\":\"m\",\"points\":[{}]}}", points.join(","))
    }

    #[test]
    fn records_become_items_with_their_owners() {
        let a = series(&[100]);
        let b = series(&[200]);
        let take = [
            taken(&[&a, &b], 100_000, 200_000),
            taken(&[&b], 200_000, 200_000),
        ];
        let p = plan(&take, Endpoint::SeriesV2, 0);
        assert_eq!(p.items.len(), 3);
        assert_eq!(p.runs, vec![0..2, 2..3]);
        assert_eq!(p.items_run, 0..3);
        assert_eq!(p.items.get(1), b.as_bytes());
        assert_eq!((p.aged, p.damaged.len(), p.ready.len()), (0, 0, 0));
    }

    #[test]
    fn what_passed_the_window_is_dropped_whole_or_trimmed() {
        let old = series(&[10]);
        let mixed = series(&[10, 500]);
        let fresh = series(&[500]);
        let take = [
            // Wholly past the window: aged as a record, nothing planned.
            taken(&[&old, &old], 10_000, 10_000),
            // Partly past: each item trimmed on its own.
            taken(&[&old, &mixed, &fresh], 10_000, 500_000),
        ];
        let p = plan(&take, Endpoint::SeriesV2, 100_000);
        assert_eq!(p.aged, 3, "two whole, one trimmed away");
        assert_eq!(p.runs, vec![0..0, 0..2], "the first record settles at once");
        assert_eq!(p.items.get(0), series(&[500]).as_bytes(), "rewritten");
        assert_eq!(p.items.get(1), fresh.as_bytes(), "kept as is");
    }

    #[test]
    fn a_damaged_ready_record_is_reported_not_sent() {
        let mut bad = taken(&["x"], 10, 10);
        // The ready form starts with a zero byte; this one is truncated.
        bad.payload = Bytes::from_static(&[0, 1, 2]);
        let p = plan(&[bad], Endpoint::Logs, 1);
        assert_eq!(p.damaged.len(), 1, "{:?}", p.damaged);
        assert_eq!(p.runs, vec![0..0]);
        assert!(p.items.is_empty());
    }

    fn logs(n: usize) -> Taken {
        let items: Vec<String> = (0..n).map(|i| format!("{{\"message\":\"{i}\"}}")).collect();
        let refs: Vec<&str> = items.iter().map(String::as_str).collect();
        let mut t = taken(&refs, 1000, 1000);
        t.stream = Endpoint::Logs.code();
        t
    }

    #[test]
    fn each_answer_settles_splits_or_stops() {
        let take = [logs(3), logs(4)];
        let mut p = plan(&take, Endpoint::Logs, 0);
        let work = p.work(Endpoint::Logs);
        assert_eq!(work.len(), 1);
        assert_eq!((work[0].range.clone(), work[0].max_items), (0..7, 1000));
        // 413 on all seven: halves.
        assert_eq!(p.answered(0..7, Verdict::Split), Step::Split(0..7, 4));
        // The first half delivered settles the first record only.
        assert_eq!(p.answered(0..4, Verdict::Delivered), Step::Next);
        assert_eq!(
            p.settlement(),
            Settlement {
                ack: vec![0],
                release: vec![1]
            }
        );
        // One item still too large is refused for good, as is a 400.
        assert_eq!(p.answered(4..5, Verdict::Split), Step::DeadLetter(4..5));
        assert_eq!(
            p.answered(5..6, Verdict::DeadLetter),
            Step::DeadLetter(5..6)
        );
        // A retry or a 403 stops the take: the last item is not settled,
        // so its record goes back whole.
        let retry = Verdict::Retry { after: None };
        assert_eq!(p.answered(6..7, retry), Step::Stop);
        assert_eq!(p.answered(6..7, Verdict::Forbidden), Step::Stop);
        assert_eq!(
            p.settlement(),
            Settlement {
                ack: vec![0],
                release: vec![1]
            }
        );
        p.settle(6..7);
        assert_eq!(
            p.settlement(),
            Settlement {
                ack: vec![0, 1],
                release: vec![]
            }
        );
    }

    #[test]
    fn a_record_with_nothing_left_to_send_is_acked() {
        let old = series(&[10]);
        let take = [
            taken(&[&old], 10_000, 10_000),
            taken(&[&series(&[500])], 500_000, 500_000),
        ];
        let mut p = plan(&take, Endpoint::SeriesV2, 100_000);
        assert_eq!(
            p.settlement(),
            Settlement {
                ack: vec![0],
                release: vec![1]
            }
        );
        assert_eq!(p.work(Endpoint::SeriesV2).len(), 1);
    }

    /// A traces record of `n` one-span items, stored as a piece.
    fn trace_piece(n: u64) -> Taken {
        let items: Vec<Vec<u8>> = (1..=n)
            .map(|id| {
                crate::traces::frame(&crate::traces::pb::TracerPayload {
                    container_id: format!("c{id}"),
                    ..Default::default()
                })
            })
            .collect();
        let joined = crate::pipeline::record::join_binary(&items);
        let piece = crate::pipeline::record::pack_piece(Endpoint::Traces, 1, &joined).unwrap();
        let mut t = taken(&[], 1000, 1000);
        (t.stream, t.items, t.payload) = (Endpoint::Traces.code(), n as u32, Bytes::from(piece));
        t
    }

    #[test]
    fn a_ready_records_items_exist_only_once_rebuilt() {
        let take: Vec<Taken> = (0..3).map(|_| trace_piece(3000)).collect();
        let mut p = plan(&take, Endpoint::Traces, 0);
        assert!(p.items.is_empty(), "no placeholders are made up front");
        assert_eq!(p.ready[1].0, 3000..6000);
        assert!(p.items_in(0..9000).is_empty());
        // The second record falls back to its items: they fill its run,
        // and only the runs up to it exist.
        let (r, ready) = p.ready[1].clone();
        p.rebuild(&ready, Endpoint::Traces, r.clone()).unwrap();
        assert_eq!(p.items_in(r.clone()).len(), 3000);
        assert!(p.items_in(r.clone()).iter().all(|i| !i.is_empty()));
        assert!(p.items_in(0..3000).iter().all(|i| i.is_empty()));
        assert!(p.items_in(6000..9000).is_empty());
        // Settlement counts every record's items, made or not.
        p.settle(0..6000);
        let out = p.settlement();
        assert_eq!((out.ack, out.release), (vec![0, 1], vec![2]));
    }

    #[test]
    fn pieces_join_while_one_payload_holds_them() {
        // 10,000 items at most per traces payload: three records of 3,000
        // join, the fourth starts the next payload.
        let take: Vec<Taken> = (0..4).map(|_| trace_piece(3000)).collect();
        let mut p = plan(&take, Endpoint::Traces, 0);
        assert_eq!((p.items_run.clone(), p.ready.len()), (0..0, 4));
        let work = p.work(Endpoint::Traces);
        let shape: Vec<(Range<usize>, usize)> = work
            .iter()
            .map(|w| (w.range.clone(), w.ready.len()))
            .collect();
        assert_eq!(shape, vec![(0..9000, 3), (9000..12000, 1)]);
        assert_eq!(work[0].ready[1].0, 3000..6000, "each record's placeholders");
        // Every item settled acks every record.
        p.settle(0..12000);
        assert_eq!(p.settlement().ack, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_stored_payload_is_sent_alone_and_a_piece_elsewhere_is_damaged() {
        let mut stored = logs(600);
        let ready = crate::pipeline::record::pack_ready(
            Endpoint::Logs,
            crate::site::Encoding::Gzip,
            1,
            &stored.payload,
        )
        .unwrap();
        stored.payload = Bytes::from(ready);
        let mut misplaced = trace_piece(5);
        misplaced.stream = Endpoint::Logs.code();
        let take = [stored.clone(), stored, misplaced];
        let mut p = plan(&take, Endpoint::Logs, 0);
        assert_eq!(p.damaged.len(), 1, "{:?}", p.damaged);
        assert_eq!(p.damaged[0].0, 2);
        let work = p.work(Endpoint::Logs);
        let shape: Vec<usize> = work.iter().map(|w| w.ready.len()).collect();
        assert_eq!(shape, vec![1, 1], "stored payloads never join");
    }

    proptest::proptest! {
        /// However the answers split and settle a take, a record is acked
        /// exactly when every one of its planned items is settled.
        #[test]
        fn a_record_is_acked_iff_all_its_items_are_settled(
            sizes in proptest::collection::vec(1usize..6, 1..6),
            settled in proptest::collection::vec(proptest::bool::ANY, 30),
        ) {
            let take: Vec<Taken> = sizes.iter().map(|n| logs(*n)).collect();
            let mut p = plan(&take, Endpoint::Logs, 0);
            for (i, s) in settled.iter().enumerate().take(p.items.len()) {
                if *s {
                    p.settle(i..i + 1);
                }
            }
            let out = p.settlement();
            for ri in 0..take.len() {
                let all = (0..p.items.len())
                    .filter(|i| p.record_of(*i) == Some(ri))
                    .all(|i| settled[i]);
                proptest::prop_assert_eq!(out.ack.contains(&ri), all);
                proptest::prop_assert_eq!(out.release.contains(&ri), !all);
            }
        }
    }

    proptest::proptest! {
        /// Every item of a take is either planned (once, in its record's
        /// run, the runs in the records' order) or aged out, and nothing
        /// planned is older than the cut.
        #[test]
        fn every_item_is_planned_or_aged_once(
            records in proptest::collection::vec(
                proptest::collection::vec(0i64..1000, 1..6), 0..8),
            cut in 0i64..1000,
        ) {
            let texts: Vec<Vec<String>> = records
                .iter()
                .map(|r| r.iter().map(|t| series(&[*t])).collect())
                .collect();
            let take: Vec<Taken> = records
                .iter()
                .zip(&texts)
                .map(|(ts, items)| {
                    let refs: Vec<&str> = items.iter().map(String::as_str).collect();
                    let oldest = ts.iter().min().copied().unwrap_or(0) * 1000;
                    let newest = ts.iter().max().copied().unwrap_or(0) * 1000;
                    taken(&refs, oldest, newest)
                })
                .collect();
            let p = plan(&take, Endpoint::SeriesV2, cut * 1000);
            let total: usize = records.iter().map(Vec::len).sum();
            proptest::prop_assert_eq!(p.items.len() as u64 + p.aged, total as u64);
            proptest::prop_assert_eq!(p.items_run.clone(), 0..p.items.len());
            let mut next = 0;
            for (ri, ts) in records.iter().enumerate() {
                let kept = ts.iter().filter(|t| **t >= cut).count() as u32;
                let run = p.runs[ri].clone();
                proptest::prop_assert_eq!(run.len() as u32, kept);
                if kept > 0 {
                    proptest::prop_assert_eq!(run.start, next);
                }
                next += kept;
            }
            let kept = records.iter().flatten().filter(|t| **t >= cut).count();
            proptest::prop_assert_eq!(p.items.len(), kept);
        }
    }
}
