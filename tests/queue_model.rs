//! Model test of the durable queue: any interleaving of appends, takes,
//! acks (deliveries), releases (failed sends), purges, compactions,
//! restarts (close + reopen), crashes (drop without close) and crashes in
//! the middle of an unacknowledged append (a torn record at the end of the
//! newest segment) is checked step by step against a plain in-memory model.
//!
//! Checked after every step: `take` returns exactly the model's oldest
//! ready records of that stream within the limits (so nothing in flight,
//! acked or purged is returned again, nothing is duplicated, order holds);
//! global and per-tenant record/item/byte counts match. At the end, after
//! a clean close and reopen, everything appended and not acked is taken,
//! byte for byte, and nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ddrelay::queue::{AppendError, Limits, NewRecord, Prepared, Queue, RecordId};
use proptest::prelude::*;

const SEGMENT: u64 = 512;
const TENANTS: [&str; 3] = ["t0", "t1", "t2"];
const HEADER: usize = 60;

fn limits() -> Limits {
    Limits {
        max_bytes: 1 << 30,
        tenant_max_bytes: 1 << 30,
        held_max_bytes: 1 << 30,
        segment_bytes: SEGMENT,
        preallocate: true,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        tenant: usize,
        stream: u8,
        lens: Vec<usize>,
        /// Store payloads LZ4-compressed where that pays.
        lz4: bool,
    },
    Take {
        tenant: usize,
        stream: u8,
        max_records: usize,
        max_bytes: usize,
    },
    Ack {
        pick: usize,
        count: usize,
    },
    Release {
        pick: usize,
        count: usize,
    },
    Purge {
        tenant: usize,
    },
    Compact,
    Restart,
    /// The process dies (`kill -9`): the queue is dropped without `close`.
    /// Acks already made are plain writes in the page cache, so they hold.
    Crash,
    /// The process dies in the middle of writing an append that was never
    /// acknowledged: `len` bytes of a torn record are left at the end of
    /// the newest segment.
    TornWrite {
        len: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..2u8, prop::collection::vec(0..300usize, 1..4), any::<bool>())
            .prop_map(|(tenant, stream, lens, lz4)| Op::Append { tenant, stream, lens, lz4 }),
        4 => (0..3usize, 0..2u8, 1..5usize, 0..700usize).prop_map(|(tenant, stream, max_records, max_bytes)| {
            Op::Take { tenant, stream, max_records, max_bytes }
        }),
        3 => (any::<usize>(), 1..4usize).prop_map(|(pick, count)| Op::Ack { pick, count }),
        2 => (any::<usize>(), 1..4usize).prop_map(|(pick, count)| Op::Release { pick, count }),
        1 => (0..3usize).prop_map(|tenant| Op::Purge { tenant }),
        1 => Just(Op::Compact),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
        1 => (1..200usize).prop_map(|len| Op::TornWrite { len }),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    payload: Vec<u8>,
    items: u32,
    created_ms: i64,
}

type Key = (usize, u8);

#[derive(Default)]
struct Model {
    ready: BTreeMap<Key, BTreeMap<RecordId, Rec>>,
    in_flight: BTreeMap<RecordId, (Key, Rec)>,
    counter: u64,
    /// Payload bytes as stored (what the queue's statistics count).
    stored: BTreeMap<RecordId, u64>,
}

impl Model {
    fn all(&self) -> impl Iterator<Item = (Key, RecordId, &Rec)> {
        self.ready
            .iter()
            .flat_map(|(k, m)| m.iter().map(move |(id, r)| (*k, *id, r)))
            .chain(self.in_flight.iter().map(|(id, (k, r))| (*k, *id, r)))
    }

    fn totals(&self, tenant: Option<usize>) -> (u64, u64, u64) {
        self.all()
            .filter(|(k, _, _)| tenant.is_none_or(|t| k.0 == t))
            .fold((0, 0, 0), |(r, i, b), (_, id, rec)| {
                (r + 1, i + u64::from(rec.items), b + self.stored[&id])
            })
    }

    fn restart(&mut self) {
        for (id, (k, r)) in std::mem::take(&mut self.in_flight) {
            self.ready.entry(k).or_default().insert(id, r);
        }
    }
}

fn check_counts(q: &Queue, m: &Model) {
    let s = q.stats();
    assert_eq!(
        (s.records, s.items, s.bytes),
        m.totals(None),
        "global stats"
    );
    for (t, name) in TENANTS.iter().enumerate() {
        let s = q.tenant_stats(name);
        assert_eq!(
            (s.records, s.items, s.bytes),
            m.totals(Some(t)),
            "stats of {name}"
        );
    }
    let all = q.all_tenant_stats();
    let with_records = TENANTS
        .iter()
        .enumerate()
        .filter(|(t, _)| m.totals(Some(*t)).0 > 0)
        .count();
    assert_eq!(all.len(), with_records);
}

/// Leaves `len` bytes of a torn record (a header cut short, then zeros) at
/// the end of the newest segment; returns how many bytes were added.
fn tear(dir: &Path, len: usize) -> u64 {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    segs.sort();
    let Some(last) = segs.last() else {
        return 0;
    };
    let mut torn = b"DDRQ\x01\x00\x01\x00\x02\x00".to_vec();
    torn.resize(len.min(HEADER - 1), 0);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(last))
        .unwrap();
    std::io::Write::write_all(&mut f, &torn).unwrap();
    // Recovery counts torn bytes up to the last non-zero one: a zeroed tail
    // is what a written-ahead segment has beyond its data.
    torn.iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i as u64 + 1)
}

async fn run(dir: &Path, ops: Vec<Op>) {
    let (mut q, _) = Queue::open(dir, limits()).expect("open");
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Append {
                tenant,
                stream,
                lens,
                lz4,
            } => {
                let payloads: Vec<Vec<u8>> = lens
                    .iter()
                    .map(|len| {
                        m.counter += 1;
                        let mut p = m.counter.to_le_bytes().to_vec();
                        p.resize(*len.max(&8), (m.counter % 251) as u8);
                        p
                    })
                    .collect();
                let records: Vec<NewRecord<'_>> = payloads
                    .iter()
                    .map(|p| NewRecord {
                        tenant: TENANTS[tenant],
                        generation: 0,
                        stream,
                        items: (p.len() % 13) as u32,
                        created_ms: p.len() as i64,
                        oldest_ms: 0,
                        newest_ms: 0,
                        payload: p,
                    })
                    .collect();
                // Stored compressed (where it pays) or as is: either way a
                // take gives back the bytes appended.
                let prepared: Vec<Prepared> = records
                    .iter()
                    .map(|r| Prepared::new(r, lz4).expect("prepare"))
                    .collect();
                let framed: usize = prepared.iter().map(Prepared::stored_len).sum();
                let stored: Vec<u64> = prepared
                    .iter()
                    .map(|p| (p.stored_len() - HEADER - TENANTS[tenant].len()) as u64)
                    .collect();
                if !lz4 {
                    let plain: usize = payloads.iter().map(|p| HEADER + 2 + p.len()).sum();
                    assert_eq!(framed, plain);
                }
                let res = q.append_prepared(prepared).await;
                if framed as u64 > SEGMENT {
                    assert!(matches!(res, Err(AppendError::TooLarge { .. })), "{res:?}");
                    continue;
                }
                let ids = res.expect("append");
                assert_eq!(ids.len(), payloads.len());
                for ((id, r), stored) in ids.into_iter().zip(&records).zip(stored) {
                    m.stored.insert(id, stored);
                    m.ready.entry((tenant, stream)).or_default().insert(
                        id,
                        Rec {
                            payload: r.payload.to_vec(),
                            items: r.items,
                            created_ms: r.created_ms,
                        },
                    );
                }
            }
            Op::Take {
                tenant,
                stream,
                max_records,
                max_bytes,
            } => {
                let got = q
                    .take(TENANTS[tenant], stream, max_records, max_bytes)
                    .expect("take");
                let ready = m.ready.entry((tenant, stream)).or_default();
                let mut want = Vec::new();
                let mut bytes = 0;
                for (id, r) in ready.iter() {
                    if want.len() == max_records
                        || (!want.is_empty() && bytes + r.payload.len() > max_bytes)
                    {
                        break;
                    }
                    bytes += r.payload.len();
                    want.push((*id, r.clone()));
                }
                let got_v: Vec<(RecordId, Rec)> = got
                    .iter()
                    .map(|t| {
                        assert_eq!(&*t.tenant, TENANTS[tenant]);
                        assert_eq!(t.stream, stream);
                        (
                            t.id,
                            Rec {
                                payload: t.payload.to_vec(),
                                items: t.items,
                                created_ms: t.created_ms,
                            },
                        )
                    })
                    .collect();
                assert_eq!(got_v, want, "take {tenant}/{stream}");
                for (id, r) in want {
                    ready.remove(&id);
                    m.in_flight.insert(id, ((tenant, stream), r));
                }
            }
            Op::Ack { pick, count } | Op::Release { pick, count } => {
                let ids: Vec<RecordId> = m.in_flight.keys().copied().collect();
                if ids.is_empty() {
                    continue;
                }
                let chosen: Vec<RecordId> = (0..count)
                    .map(|i| ids[(pick + i * 7) % ids.len()])
                    .collect();
                if matches!(op, Op::Ack { .. }) {
                    q.ack(&chosen);
                    for id in chosen {
                        m.in_flight.remove(&id);
                    }
                } else {
                    q.release(&chosen);
                    for id in chosen {
                        if let Some((k, r)) = m.in_flight.remove(&id) {
                            m.ready.entry(k).or_default().insert(id, r);
                        }
                    }
                }
            }
            Op::Purge { tenant } => {
                let want = m.totals(Some(tenant));
                assert_eq!(q.purge_tenant(TENANTS[tenant]), want);
                m.ready.retain(|k, _| k.0 != tenant);
                m.in_flight.retain(|_, (k, _)| k.0 != tenant);
            }
            Op::Compact => {
                q.compact().await.expect("compact");
            }
            Op::Restart | Op::Crash | Op::TornWrite { .. } => {
                if matches!(op, Op::Restart) {
                    q.close().await;
                }
                drop(q);
                let torn = match op {
                    Op::TornWrite { len } => tear(dir, len),
                    _ => 0,
                };
                let (q2, rec) = Queue::open(dir, limits()).expect("reopen");
                m.restart();
                let (records, items, bytes) = m.totals(None);
                assert_eq!(
                    (rec.records, rec.items, rec.bytes),
                    (records, items, bytes),
                    "{op:?}"
                );
                assert_eq!(
                    (rec.corrupt_records, rec.truncated_bytes),
                    (0, torn),
                    "{op:?}"
                );
                q = q2;
            }
        }
        check_counts(&q, &m);
        assert_eq!(q.corrupt_records(), 0);
    }
    // Clean close and reopen: exactly what is not acked comes back.
    q.close().await;
    drop(q);
    let (q, _) = Queue::open(dir, limits()).expect("reopen");
    m.restart();
    let mut got: HashMap<RecordId, (Key, Rec)> = HashMap::new();
    for (tenant, stream) in q.ready_streams() {
        let t = TENANTS
            .iter()
            .position(|n| **n == *tenant)
            .expect("known tenant");
        for r in q
            .take(&tenant, stream, usize::MAX, usize::MAX)
            .expect("take")
        {
            let rec = Rec {
                payload: r.payload.to_vec(),
                items: r.items,
                created_ms: r.created_ms,
            };
            assert!(got.insert(r.id, ((t, stream), rec)).is_none(), "duplicate");
        }
    }
    let want: HashMap<RecordId, (Key, Rec)> = m
        .ready
        .iter()
        .flat_map(|(k, recs)| recs.iter().map(move |(id, r)| (*id, (*k, r.clone()))))
        .collect();
    assert_eq!(got, want);
    q.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn queue_matches_model(ops in prop::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(run(dir.path(), ops));
    }
}
