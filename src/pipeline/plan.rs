//! What one take sends, as plain synchronous code (no I/O, no clock, no
//! locks): the records taken from the queue become the items to pack and
//! the payloads stored ready, with what passed Datadog's acceptance window
//! dropped, and the bookkeeping that tells, once the payloads are
//! answered, which records are settled (acked) and which go back.
//!
//! The sending loop in `send.rs` packs [`Plan::items_run`], sends each
//! ready payload as stored, marks items settled, and acks a record once
//! [`Plan::remaining`] reaches zero for it.

use std::ops::Range;

use bytes::Bytes;

use super::age::{self, Trimmed};
use super::record::{Ready, is_ready, item_ranges};
use crate::queue::Taken;
use crate::site::Endpoint;

/// One take, planned.
#[derive(Debug)]
pub struct Plan {
    /// Every item to send: first the items of the records not stored ready
    /// (one run, [`Plan::items_run`]), then one run of placeholders per
    /// ready record (rebuilt only if its payload must fall back to items).
    /// Items share the records' buffers, so they move without copying.
    pub items: Vec<Bytes>,
    /// For each item, the index of the record (in the take) it belongs to.
    pub owner: Vec<usize>,
    /// For each record, how many of its items are still to be settled: a
    /// record at zero (all sent, or all aged out, or damaged) is acked.
    pub remaining: Vec<u32>,
    /// The items to pack.
    pub items_run: Range<usize>,
    /// The ready records: their placeholders' range and stored payload.
    pub ready: Vec<(Range<usize>, Ready)>,
    /// Items dropped for being past the window.
    pub aged: u64,
    /// Records whose stored payload cannot be read back: (record index,
    /// why). Their items are not sent (the caller dead-letters them).
    pub damaged: Vec<(usize, String)>,
}

/// Plans `taken` for `endpoint`: items older than `cutoff_ms` (Datadog's
/// acceptance window) are dropped, a record partly past it is trimmed item
/// by item (a ready one is rebuilt into its items for that), and a ready
/// record wholly inside it stays one payload.
pub fn plan(taken: &[Taken], endpoint: Endpoint, cutoff_ms: i64) -> Plan {
    let mut p = Plan {
        items: Vec::new(),
        owner: Vec::new(),
        remaining: vec![0; taken.len()],
        items_run: 0..0,
        ready: Vec::new(),
        aged: 0,
        damaged: Vec::new(),
    };
    let mut ready_records: Vec<(usize, Ready)> = Vec::new();
    for (ri, rec) in taken.iter().enumerate() {
        if rec.newest_ms < cutoff_ms {
            p.aged += u64::from(rec.items);
            continue;
        }
        let rebuilt = if is_ready(&rec.payload) {
            match Ready::parse(&rec.payload) {
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
        let record_items: Box<dyn Iterator<Item = Bytes>> = match rebuilt {
            Some(list) => Box::new(list.into_iter()),
            None => Box::new(item_ranges(&rec.payload).map(|r| rec.payload.slice(r))),
        };
        for mut item in record_items {
            if rec.oldest_ms < cutoff_ms {
                match age::trim(endpoint, &item, cutoff_ms) {
                    Trimmed::Keep => {}
                    Trimmed::Drop => {
                        p.aged += 1;
                        continue;
                    }
                    Trimmed::Rewritten(bytes) => item = Bytes::from(bytes),
                }
            }
            p.items.push(item);
            p.owner.push(ri);
            p.remaining[ri] += 1;
        }
    }
    // The ready records' placeholders go after every other item, so that
    // the items of the other records form one run to pack.
    p.items_run = 0..p.items.len();
    for (ri, r) in ready_records {
        let start = p.items.len();
        p.items.resize(start + r.item_count(), Bytes::new());
        p.owner.resize(p.items.len(), ri);
        p.remaining[ri] += r.item_count() as u32;
        p.ready.push((start..p.items.len(), r));
    }
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
        assert_eq!(p.owner, vec![0, 0, 1]);
        assert_eq!(p.remaining, vec![2, 1]);
        assert_eq!(p.items_run, 0..3);
        assert_eq!(&p.items[1][..], b.as_bytes());
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
        assert_eq!(p.remaining, vec![0, 2], "the first record settles at once");
        assert_eq!(p.owner, vec![1, 1]);
        assert_eq!(&p.items[0][..], series(&[500]).as_bytes(), "rewritten");
        assert_eq!(&p.items[1][..], fresh.as_bytes(), "kept as is");
    }

    #[test]
    fn a_damaged_ready_record_is_reported_not_sent() {
        let mut bad = taken(&["x"], 10, 10);
        // The ready form starts with a zero byte; this one is truncated.
        bad.payload = Bytes::from_static(&[0, 1, 2]);
        let p = plan(&[bad], Endpoint::Logs, 1);
        assert_eq!(p.damaged.len(), 1, "{:?}", p.damaged);
        assert_eq!(p.remaining, vec![0]);
        assert!(p.items.is_empty());
    }

    proptest::proptest! {
        /// Every item of a take is either planned (once, owned by its
        /// record, counted in its record's `remaining`) or aged out, and
        /// nothing planned is older than the cut.
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
            for (ri, _) in take.iter().enumerate() {
                let owned = p.owner.iter().filter(|o| **o == ri).count() as u32;
                proptest::prop_assert_eq!(p.remaining[ri], owned);
            }
            let kept = records.iter().flatten().filter(|t| **t >= cut).count();
            proptest::prop_assert_eq!(p.items.len(), kept);
        }
    }
}
