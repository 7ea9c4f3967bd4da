//! Unit tests of the queue: framing, recovery, quotas, segments,
//! compaction, purge and fairness. Crash tests with a real `kill -9` are in
//! `tests/queue_crash.rs`, the model test in `tests/queue_model.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::format::{self, HEADER_LEN, RecordError};
use super::spare;
use super::*;
use crate::pipeline::batch::tests::noise;

fn limits(segment_bytes: u64) -> Limits {
    Limits {
        max_bytes: 1 << 30,
        tenant_max_bytes: 1 << 30,
        held_max_bytes: 1 << 30,
        segment_bytes,
        preallocate: true,
    }
}

fn rec<'a>(tenant: &'a str, stream: u8, payload: &'a [u8]) -> NewRecord<'a> {
    NewRecord {
        tenant,
        generation: 0,
        stream,
        items: payload.len() as u32 % 7 + 1,
        created_ms: 1_000 + payload.len() as i64,
        oldest_ms: 900,
        newest_ms: 1_100,
        payload,
    }
}

fn open(dir: &Path, l: Limits) -> (Queue, Recovery) {
    Queue::open(dir, l).expect("open")
}

fn segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    v.sort();
    v
}

fn take_all(q: &Queue, tenant: &str, stream: u8) -> Vec<Taken> {
    q.take(tenant, stream, usize::MAX, usize::MAX)
        .expect("take")
}

fn payloads(t: &[Taken]) -> Vec<Vec<u8>> {
    t.iter().map(|t| t.payload.to_vec()).collect()
}

#[test]
fn framing_round_trip() {
    let mut buf = format::encode("tenant-1", 3, 42, 10, 9, 11, b"hello payload", false);
    format::stamp(&mut buf, 77, format::FLAG_MORE);
    assert_eq!(buf.len(), format::record_len(8, 13));
    let v = format::verify(&buf).expect("valid");
    let h = v.header;
    assert_eq!(
        (h.seq, h.stream, h.items, h.tenant_len, h.payload_len),
        (77, 3, 42, 8, 13)
    );
    assert_eq!((h.created_ms, h.oldest_ms, h.newest_ms), (10, 9, 11));
    assert_eq!(h.flags, format::FLAG_MORE);
    assert_eq!(&buf[HEADER_LEN..HEADER_LEN + 8], b"tenant-1");
    assert_eq!(&buf[HEADER_LEN + 8..], b"hello payload");
    // Negative timestamps survive too.
    let mut b2 = format::encode("", 0, 0, -5, i64::MIN, i64::MAX, b"", true);
    format::stamp(&mut b2, 1, 0);
    let h2 = format::verify(&b2).expect("valid").header;
    assert_eq!(
        (h2.created_ms, h2.oldest_ms, h2.newest_ms),
        (-5, i64::MIN, i64::MAX)
    );
}

/// A payload LZ4 shrinks a lot (ingest JSON repeats its keys and tags).
fn compressible(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("{{\"metric\":\"m.{}\",\"tags\":[\"env:prod\"]}}\n", i % 10))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn lz4_records_store_less_and_decode_to_the_original() {
    let payload = compressible(200);
    let mut buf = format::encode("tenant-1", 2, 200, 10, 9, 11, &payload, true);
    format::stamp(&mut buf, 5, format::FLAG_MORE);
    let h = format::verify(&buf).expect("valid").header;
    assert_eq!(h.flags, format::FLAG_MORE | format::FLAG_LZ4);
    assert!(buf.len() < payload.len() / 4, "{} stored", buf.len());
    let stored = &buf[HEADER_LEN + 8..];
    assert_eq!(format::raw_len(h.flags, stored), Some(payload.len()));
    let decoded = format::decode_payload(h.flags, stored).expect("decodes");
    assert_eq!(decoded.as_deref(), Some(&payload[..]));
    // Clearing MORE (compaction, the last record of a batch) keeps LZ4.
    format::stamp(&mut buf, 5, 0);
    assert_eq!(
        format::verify(&buf).expect("valid").header.flags,
        format::FLAG_LZ4
    );

    // What LZ4 cannot shrink by an eighth is stored as is, unflagged.
    let noise = noise(1, 4096);
    let mut buf = format::encode("t", 1, 1, 0, 0, 0, &noise, true);
    format::stamp(&mut buf, 6, 0);
    let h = format::verify(&buf).expect("valid").header;
    assert_eq!(h.flags & format::FLAG_LZ4, 0);
    assert_eq!(&buf[HEADER_LEN + 1..], &noise[..]);

    // An unknown flag bit is not a record start.
    let mut buf = format::encode("t", 1, 1, 0, 0, 0, b"x", false);
    format::stamp(&mut buf, 7, 0);
    buf[5] |= 4;
    assert!(matches!(
        format::verify(&buf),
        Err(RecordError::Header(format::HeaderError::Framing))
    ));
}

#[test]
fn lz4_payloads_that_lie_about_their_length_are_rejected() {
    let payload = compressible(50);
    let buf = format::encode("t", 1, 1, 0, 0, 0, &payload, true);
    let stored = buf[HEADER_LEN + 1..].to_vec();
    let flags = format::FLAG_LZ4;
    // Claims one byte more, or less, than the block holds.
    for delta in [1i64, -1] {
        let mut s = stored.clone();
        let n = (payload.len() as i64 + delta) as u32;
        s[..4].copy_from_slice(&n.to_le_bytes());
        assert_eq!(
            format::decode_payload(flags, &s).err(),
            Some(RecordError::Payload),
            "delta {delta}"
        );
    }
    // Claims more than any record may hold: refused before allocating.
    let mut s = stored.clone();
    s[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(format::raw_len(flags, &s), None);
    assert_eq!(format::raw_len(flags, &s[..3]), None);
}

#[tokio::test]
async fn compressed_and_plain_records_share_a_stream_across_reopen_and_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, _) = open(dir.path(), limits(1 << 20));
    let big = compressible(2_000);
    let noise = noise(2, 3_000);
    let mut want = Vec::new();
    for (i, (payload, lz4)) in [
        (&big, true),
        (&noise, true),
        (&big, false),
        (&b"tiny"[..].to_vec(), true),
    ]
    .into_iter()
    .enumerate()
    {
        let p = Prepared::new(&rec("a", 1, payload), lz4).expect("prepare");
        if i == 0 {
            assert!(p.stored_len() < big.len() / 4, "{}", p.stored_len());
        }
        q.append_prepared(vec![p]).await.expect("append");
        want.push(payload.clone());
    }
    // Quotas and stats count bytes as stored: well under the raw total.
    let raw: usize = want.iter().map(Vec::len).sum();
    let stats = q.tenant_stats("a");
    assert!(
        stats.disk_bytes < raw as u64,
        "{} of {raw}",
        stats.disk_bytes
    );
    // Something else in the segment, acked, so compaction has work.
    let other = q.append(rec("b", 1, &noise)).await.expect("append");
    q.close().await;
    drop(q);

    let (q, r) = open(dir.path(), limits(1 << 20));
    assert_eq!((r.records, r.corrupt_records), (5, 0));
    let t = take_all(&q, "b", 1);
    assert_eq!(t[0].id, other);
    q.ack(&[other]);
    assert!(q.compact().await.expect("compact") >= 1);
    let t = take_all(&q, "a", 1);
    assert_eq!(payloads(&t), want);
    q.release(&t.iter().map(|t| t.id).collect::<Vec<_>>());
    q.close().await;
    drop(q);
    let (q, r) = open(dir.path(), limits(1 << 20));
    assert_eq!(r.corrupt_records, 0);
    assert_eq!(payloads(&take_all(&q, "a", 1)), want);
}

#[tokio::test]
async fn take_caps_decoded_bytes_when_records_are_compressed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, _) = open(dir.path(), limits(1 << 20));
    let payload = compressible(1_000);
    let mut ids = Vec::new();
    for _ in 0..6 {
        let p = Prepared::new(&rec("a", 1, &payload), true).expect("prepare");
        // Stored at a tenth of its size or less: six fit a two-record cap.
        assert!(p.stored_len() * 3 < payload.len());
        ids.extend(q.append_prepared(vec![p]).await.expect("append"));
    }
    let cap = payload.len() * 2 + payload.len() / 2;
    let t = q.take("a", 1, usize::MAX, cap).expect("take");
    assert_eq!(t.iter().map(|t| t.id).collect::<Vec<_>>(), ids[..2]);
    // The rest went back to the front, in order, and a record larger than
    // the cap is still taken alone.
    let t = q.take("a", 1, usize::MAX, 10).expect("take");
    assert_eq!(t.iter().map(|t| t.id).collect::<Vec<_>>(), ids[2..3]);
    assert_eq!(t[0].payload.len(), payload.len());
    let t = take_all(&q, "a", 1);
    assert_eq!(t.iter().map(|t| t.id).collect::<Vec<_>>(), ids[3..]);
}

#[test]
fn the_index_costs_32_bytes_per_record() {
    // The figure the module doc promises.
    assert_eq!(std::mem::size_of::<super::index::Entry>(), 32);
}

#[test]
fn crc_detects_every_flipped_byte() {
    let mut buf = format::encode("t", 1, 2, 3, 4, 5, b"some payload bytes", false);
    format::stamp(&mut buf, 9, 0);
    for i in 0..buf.len() {
        let mut bad = buf.clone();
        bad[i] ^= 0x10;
        let err = format::verify(&bad).expect_err("flip must be detected");
        if i > HEADER_LEN {
            assert_eq!(err, RecordError::Payload, "byte {i}");
        }
    }
    // A truncated record is short, not valid.
    assert_eq!(
        format::verify(&buf[..buf.len() - 1]).err(),
        Some(RecordError::Short)
    );
}

#[test]
fn ack_entries_round_trip_and_reject_garbage() {
    let mut buf = Vec::new();
    format::encode_ack(5, &mut buf);
    format::encode_ack(u64::MAX >> 1, &mut buf);
    buf.extend_from_slice(&[0; 12]);
    buf.extend_from_slice(&[1, 2, 3]);
    let (seqs, bad, end) = format::decode_acks(&buf);
    assert_eq!(seqs, vec![5, u64::MAX >> 1]);
    assert_eq!(bad, 1, "one run of stray bytes");
    assert_eq!(end, 24, "the last whole entry ends there");
}

/// A write cut short (a full disk, a kill) leaves stray bytes off the
/// 12-byte grid; entries appended after them are still read. Before, every
/// later entry of the file was misread (acked data resent, purged data
/// back).
#[test]
fn ack_entries_after_a_short_write_are_still_read() {
    let mut buf = Vec::new();
    format::encode_ack(7, &mut buf);
    let mut torn = Vec::new();
    format::encode_ack(8, &mut torn);
    buf.extend_from_slice(&torn[..5]);
    for seq in [9, 10, 11] {
        format::encode_ack(seq, &mut buf);
    }
    let (seqs, bad, end) = format::decode_acks(&buf);
    assert_eq!(seqs, vec![7, 9, 10, 11]);
    assert_eq!((bad, end), (1, buf.len()));
    // Stray bytes at every offset of the grid.
    for cut in 1..12 {
        let mut buf = Vec::new();
        format::encode_ack(1, &mut buf);
        buf.extend_from_slice(&torn[..cut]);
        format::encode_ack(2, &mut buf);
        assert_eq!(format::decode_acks(&buf).0, vec![1, 2], "cut at {cut}");
    }
}

/// The same through the queue: an ack file with a short write in it keeps
/// every ack written before and after it across a restart, and a torn
/// tail is cut so that new acks start on the grid.
#[tokio::test]
async fn acks_written_after_a_short_write_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, _) = open(dir.path(), limits(1 << 20));
    let mut ids = Vec::new();
    for p in [b"one".as_slice(), b"two", b"three", b"four"] {
        ids.push(q.append(rec("a", 1, p)).await.expect("append"));
    }
    let _ = take_all(&q, "a", 1);
    q.ack(&[ids[0]]);
    q.close().await;
    drop(q);
    let ack_file = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "ack"))
        .expect("an ack file");
    // A short write: 5 bytes of an entry that never finished.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&ack_file)
        .expect("open ack file");
    std::io::Write::write_all(&mut f, &[0xAB; 5]).expect("stray bytes");
    drop(f);

    let (q, r) = open(dir.path(), limits(1 << 20));
    assert_eq!(r.records, 3);
    assert_eq!(std::fs::metadata(&ack_file).expect("meta").len() % 12, 0);
    let _ = take_all(&q, "a", 1);
    q.ack(&[ids[1], ids[2]]);
    q.close().await;
    drop(q);
    // Stray bytes in the middle this time, then an ack after them.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&ack_file)
        .expect("open ack file");
    std::io::Write::write_all(&mut f, &[0xCD; 7]).expect("stray bytes");
    let mut entry = Vec::new();
    format::encode_ack(ids[3].seq(), &mut entry);
    std::io::Write::write_all(&mut f, &entry).expect("entry");
    drop(f);

    let (q, r) = open(dir.path(), limits(1 << 20));
    assert_eq!(r.records, 0, "every ack was kept: {r:?}");
    assert!(take_all(&q, "a", 1).is_empty());
}

#[tokio::test]
async fn append_take_ack_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, r) = open(dir.path(), limits(1 << 20));
    assert_eq!(r, Recovery::default());
    let a = q.append(rec("a", 1, b"one")).await.expect("append");
    let b = q.append(rec("a", 1, b"two")).await.expect("append");
    let c = q.append(rec("a", 1, b"three")).await.expect("append");
    assert!(a < b && b < c);
    let t = q.take("a", 1, 2, usize::MAX).expect("take");
    assert_eq!(payloads(&t), vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(t[0].items, 4);
    assert_eq!(
        (t[0].created_ms, t[0].oldest_ms, t[0].newest_ms),
        (1003, 900, 1100)
    );
    q.ack(&[a]);
    q.release(&[b]);
    // Released goes back to the front, in order.
    let t = take_all(&q, "a", 1);
    assert_eq!(t.iter().map(|t| t.id).collect::<Vec<_>>(), vec![b, c]);
    q.close().await;
    drop(q);
    let (q, r) = open(dir.path(), limits(1 << 20));
    assert_eq!((r.records, r.bytes, r.corrupt_records), (2, 8, 0));
    let t = take_all(&q, "a", 1);
    assert_eq!(t.iter().map(|t| t.id).collect::<Vec<_>>(), vec![b, c]);
    assert!(matches!(q.append(rec("a", 1, b"x")).await, Ok(id) if id > c));
    q.close().await;
    assert!(matches!(
        q.append(rec("a", 1, b"x")).await,
        Err(AppendError::Closed)
    ));
}

#[tokio::test]
async fn a_second_open_of_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, _) = open(dir.path(), limits(1 << 20));
    assert!(matches!(
        Queue::open(dir.path(), limits(1 << 20)),
        Err(QueueError::Locked(_))
    ));
    drop(q);
    let (_q, _) = open(dir.path(), limits(1 << 20));
}

#[tokio::test]
async fn torn_tail_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, _) = open(dir.path(), limits(1 << 20));
    for i in 0..5u8 {
        q.append(rec("t", 1, &[i; 100])).await.expect("append");
    }
    q.close().await;
    drop(q);
    let seg = dir.path().join(&segments(dir.path())[0]);
    let full = std::fs::metadata(&seg).expect("meta").len();
    // Cut the last record in half, as a kill during its write would.
    let cut = full - 50;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(cut)
        .expect("truncate");
    let (q, r) = open(dir.path(), limits(1 << 20));
    assert_eq!(r.records, 4);
    assert_eq!(r.truncated_bytes, cut - 4 * (full / 5));
    assert_eq!(r.corrupt_records, 0);
    assert_eq!(std::fs::metadata(&seg).expect("meta").len(), 4 * (full / 5));
    let t = take_all(&q, "t", 1);
    assert_eq!(
        payloads(&t),
        (0..4u8).map(|i| vec![i; 100]).collect::<Vec<_>>()
    );
    // Garbage appended after valid records is a torn tail too.
    q.close().await;
    drop(q);
    let seg = dir
        .path()
        .join(segments(dir.path()).last().expect("a segment"));
    let mut data = std::fs::read(&seg).expect("read");
    data.extend_from_slice(b"DDRQ\x01garbage");
    std::fs::write(&seg, &data).expect("write");
    let (_q, r) = open(dir.path(), limits(1 << 20));
    assert_eq!((r.records, r.truncated_bytes), (4, 12));
}

#[tokio::test]
async fn an_unfinished_batch_is_dropped_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, _) = open(dir.path(), limits(1 << 20));
    q.append(rec("t", 1, b"alone")).await.expect("append");
    let batch = [rec("t", 1, b"b1"), rec("t", 2, b"b2"), rec("u", 1, b"b3")];
    let ids = q.append_batch(&batch).await.expect("batch");
    assert_eq!(ids.len(), 3);
    q.close().await;
    drop(q);
    let seg = dir.path().join(&segments(dir.path())[0]);
    let len = std::fs::metadata(&seg).expect("meta").len();
    // Remove exactly the batch's last record: the first two are complete
    // records, but the batch is not.
    let last = format::record_len(1, 2) as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(len - last)
        .expect("truncate");
    let (q, r) = open(dir.path(), limits(1 << 20));
    assert_eq!(r.records, 1);
    assert_eq!(r.truncated_bytes, 2 * format::record_len(1, 2) as u64);
    assert_eq!(payloads(&take_all(&q, "t", 1)), vec![b"alone".to_vec()]);
    assert!(take_all(&q, "t", 2).is_empty());
}

#[tokio::test]
async fn quota_and_budget_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let per = format::record_len(1, 100) as u64;
    let l = Limits {
        max_bytes: 5 * per,
        tenant_max_bytes: 3 * per,
        held_max_bytes: 3 * per,
        segment_bytes: 1 << 20,
        preallocate: true,
    };
    let (q, _) = open(dir.path(), l);
    for _ in 0..3 {
        q.append(rec("a", 1, &[0; 100])).await.expect("append");
    }
    match q.append(rec("a", 1, &[0; 100])).await {
        Err(AppendError::TenantFull {
            tenant_bytes,
            limit,
            retry_after,
        }) => {
            assert_eq!((tenant_bytes, limit), (3 * per, 3 * per));
            assert_eq!(retry_after, TENANT_FULL_RETRY_AFTER);
        }
        other => panic!("expected TenantFull, got {other:?}"),
    }
    q.append(rec("b", 1, &[0; 100])).await.expect("append");
    q.append(rec("c", 1, &[0; 100])).await.expect("append");
    let e = q.append(rec("d", 1, &[0; 100])).await.expect_err("full");
    assert!(matches!(e, AppendError::DiskFull { .. }));
    assert_eq!(e.retry_after(), Some(DISK_FULL_RETRY_AFTER));
    // A record that could never fit is TooLarge, not "full".
    let big = vec![0; 4 * per as usize];
    assert!(matches!(
        q.append(rec("e", 1, &big)).await,
        Err(AppendError::TooLarge { .. })
    ));
    // Nothing was silently dropped and the refused ones left no trace.
    assert_eq!(q.stats().records, 5);
    assert_eq!(q.tenant_stats("a").disk_bytes, 3 * per);
    assert_eq!(q.tenant_stats("d"), Stats::default());
    // Acking frees the tenant's quota at once; the disk budget counts
    // segment files, and the head segment is not reclaimed until it rolls.
    let t = q.take("a", 1, 1, usize::MAX).expect("take");
    q.ack(&[t[0].id]);
    assert_eq!(q.tenant_stats("a").disk_bytes, 2 * per);
    assert!(matches!(
        q.append(rec("a", 1, &[0; 100])).await,
        Err(AppendError::DiskFull { .. })
    ));
}

#[tokio::test]
async fn segments_roll_and_are_deleted_once_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Plain segments, so the files' sizes are exactly the accounted bytes
    // (a written-ahead head is longer: see the test of those).
    let l = Limits {
        preallocate: false,
        ..limits(1024)
    };
    let (q, _) = open(dir.path(), l);
    for i in 0..40u8 {
        q.append(rec("t", 1, &[i; 200])).await.expect("append");
    }
    let segs = segments(dir.path());
    assert!(segs.len() >= 10, "{segs:?}");
    let disk = q.stats().disk_bytes;
    let on_disk: u64 = segs
        .iter()
        .map(|s| std::fs::metadata(dir.path().join(s)).expect("meta").len())
        .sum();
    assert_eq!(disk, on_disk);
    assert!(
        segs.iter()
            .all(|s| std::fs::metadata(dir.path().join(s)).expect("meta").len() <= 1024)
    );
    // Ack the first half: the segments holding only those go away.
    let t = q.take("t", 1, 20, usize::MAX).expect("take");
    assert_eq!(t.len(), 20);
    q.ack(&t.iter().map(|t| t.id).collect::<Vec<_>>());
    let after = segments(dir.path());
    assert!(after.len() <= segs.len() - 4, "{after:?}");
    assert!(q.stats().disk_bytes < disk);
    let rest = take_all(&q, "t", 1);
    assert_eq!(
        payloads(&rest),
        (20..40u8).map(|i| vec![i; 200]).collect::<Vec<_>>()
    );
    q.ack(&rest.iter().map(|t| t.id).collect::<Vec<_>>());
    // Only the head segment is left, and its acks are on disk.
    assert_eq!(segments(dir.path()).len(), 1);
    assert_eq!(q.stats().records, 0);
    q.close().await;
    drop(q);
    let (_q, r) = open(dir.path(), l);
    assert_eq!(r.records, 0);
    assert!(segments(dir.path()).is_empty());
}

#[tokio::test]
async fn compaction_keeps_exactly_the_live_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = limits(2048);
    let (q, _) = open(dir.path(), l);
    // A held tenant interleaved with a busy one: every segment is pinned by
    // one or two held records.
    let mut held = Vec::new();
    for i in 0..60u8 {
        let tenant = if i % 5 == 0 { "held" } else { "busy" };
        let id = q.append(rec(tenant, 1, &[i; 150])).await.expect("append");
        if tenant == "held" {
            held.push((id, vec![i; 150]));
        }
    }
    // Take one held record, keep it in flight across compaction.
    let inflight = q.take("held", 1, 1, usize::MAX).expect("take");
    let busy = take_all(&q, "busy", 1);
    q.ack(&busy.iter().map(|t| t.id).collect::<Vec<_>>());
    let before = segments(dir.path()).len();
    let disk_before = q.stats().disk_bytes;
    let n = q.compact().await.expect("compact");
    assert!(n >= 3, "compacted {n}");
    let after = segments(dir.path()).len();
    assert!(after < before / 2, "{before} -> {after}");
    assert!(q.stats().disk_bytes < disk_before / 2);
    assert_eq!(q.stats().records, held.len() as u64);
    // The in-flight record can still be acked by its id after the move.
    q.ack(&[inflight[0].id]);
    let rest = take_all(&q, "held", 1);
    let want: Vec<_> = held[1..].to_vec();
    assert_eq!(
        rest.iter()
            .map(|t| (t.id, t.payload.to_vec()))
            .collect::<Vec<_>>(),
        want
    );
    q.release(&rest.iter().map(|t| t.id).collect::<Vec<_>>());
    q.close().await;
    drop(q);
    let (q, r) = open(dir.path(), l);
    assert_eq!((r.records, r.corrupt_records), (want.len() as u64, 0));
    let rest = take_all(&q, "held", 1);
    assert_eq!(
        rest.iter()
            .map(|t| (t.id, t.payload.to_vec()))
            .collect::<Vec<_>>(),
        want
    );
}

#[tokio::test]
async fn duplicate_copies_from_an_interrupted_compaction_resolve_to_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = limits(1 << 20);
    let (q, _) = open(dir.path(), l);
    let id = q.append(rec("t", 1, b"moved")).await.expect("append");
    q.close().await;
    drop(q);
    // A crash after the copy was synced but before the old segment was
    // deleted leaves the same record in two segments.
    let segs = segments(dir.path());
    std::fs::copy(dir.path().join(&segs[0]), dir.path().join("00000009.seg")).expect("copy");
    let (q, r) = open(dir.path(), l);
    assert_eq!(r.records, 1);
    assert_eq!(segments(dir.path()), vec!["00000009.seg".to_string()]);
    let t = take_all(&q, "t", 1);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].id, id);
    q.ack(&[id]);
    q.close().await;
    drop(q);
    let (_q, r) = open(dir.path(), l);
    assert_eq!(r.records, 0);
}

#[tokio::test]
async fn a_dropped_duplicate_does_not_kill_the_live_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = limits(1 << 20);
    let (q, _) = open(dir.path(), l);
    for p in [b"a", b"b", b"c"] {
        q.append(rec("t", 1, p)).await.expect("append");
    }
    q.close().await;
    drop(q);
    // The copy holds a and b only: segment 1 keeps c live, and gets DROP
    // entries for its copies of a and b, which must stay local to it.
    let segs = segments(dir.path());
    let copy = dir.path().join("00000009.seg");
    std::fs::copy(dir.path().join(&segs[0]), &copy).expect("copy");
    let two = 2 * format::record_len(1, 1) as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&copy)
        .expect("open")
        .set_len(two)
        .expect("truncate");
    for _ in 0..3 {
        let (q, r) = open(dir.path(), l);
        assert_eq!(r.records, 3);
        assert_eq!(segments(dir.path()).len(), 2);
        let t = take_all(&q, "t", 1);
        assert_eq!(
            payloads(&t),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        q.close().await;
    }
}

#[tokio::test]
async fn an_ack_in_one_segment_kills_the_copy_in_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = limits(1 << 20);
    let (q, _) = open(dir.path(), l);
    q.append(rec("t", 1, b"keep")).await.expect("append");
    q.append(rec("t", 1, b"acked")).await.expect("append");
    let t = take_all(&q, "t", 1);
    q.ack(&[t[1].id]);
    q.release(&[t[0].id]);
    q.close().await;
    drop(q);
    // A second copy of both records, without the ack: recovery must carry
    // the ack over to the copy before the original segment (and its ack
    // file) is deleted, or a later restart would resurrect it.
    let segs = segments(dir.path());
    std::fs::copy(dir.path().join(&segs[0]), dir.path().join("00000009.seg")).expect("copy");
    for _ in 0..3 {
        let (q, r) = open(dir.path(), l);
        assert_eq!(r.records, 1);
        assert_eq!(segments(dir.path()), vec!["00000009.seg".to_string()]);
        let t = take_all(&q, "t", 1);
        assert_eq!(payloads(&t), vec![b"keep".to_vec()]);
        q.close().await;
    }
}

/// Found by the `queue_segment` fuzz target: a corrupt region followed by
/// a torn last record was kept (counted corrupt) while the torn record was
/// cut, so the *next* recovery truncated the region after all. A region
/// with nothing complete after it is part of the torn tail: it goes at
/// once, and recovering again changes nothing.
#[tokio::test]
async fn a_corrupt_region_before_a_torn_tail_goes_with_the_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = limits(1 << 20);
    let (q, _) = open(dir.path(), l);
    for i in 0..3u8 {
        q.append(rec("t", 1, &[i; 100])).await.expect("append");
    }
    q.close().await;
    drop(q);
    let seg = dir.path().join(&segments(dir.path())[0]);
    let mut data = std::fs::read(&seg).expect("read");
    let per = data.len() / 3;
    data[per + 20] ^= 0xff; // the middle record's seq: its header fails
    data.truncate(data.len() - 30); // the last record is torn
    std::fs::write(&seg, &data).expect("write");
    let (q, r) = open(dir.path(), l);
    assert_eq!(r.records, 1);
    assert_eq!(r.corrupt_records, 0, "the region is part of the torn tail");
    assert_eq!(r.truncated_bytes, (data.len() - per) as u64);
    assert_eq!(payloads(&take_all(&q, "t", 1)), vec![vec![0u8; 100]]);
    drop(q);
    let (q, r) = open(dir.path(), l);
    assert_eq!((r.records, r.corrupt_records, r.truncated_bytes), (1, 0, 0));
    assert_eq!(take_all(&q, "t", 1).len(), 1);
}

#[tokio::test]
async fn a_corrupt_record_is_counted_and_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = limits(1 << 20);
    let (q, _) = open(dir.path(), l);
    for i in 0..3u8 {
        q.append(rec("t", 1, &[i; 100])).await.expect("append");
    }
    q.close().await;
    drop(q);
    // Reopen so the segment is sealed (payloads not verified at recovery),
    // then flip a payload byte of the middle record.
    let (q, r) = open(dir.path(), l);
    assert_eq!(r.records, 3);
    let seg = dir.path().join(&segments(dir.path())[0]);
    let mut data = std::fs::read(&seg).expect("read");
    let per = data.len() / 3;
    data[per + HEADER_LEN + 1 + 10] ^= 0xff;
    std::fs::write(&seg, &data).expect("write");
    let t = take_all(&q, "t", 1);
    assert_eq!(payloads(&t), vec![vec![0; 100], vec![2; 100]]);
    assert_eq!(q.corrupt_records(), 1);
    assert_eq!(q.stats().records, 2);
    q.release(&t.iter().map(|t| t.id).collect::<Vec<_>>());
    q.close().await;
    drop(q);
    // Dropped for good, not found again.
    let (q, r) = open(dir.path(), l);
    assert_eq!((r.records, r.corrupt_records), (2, 0));
    assert_eq!(take_all(&q, "t", 1).len(), 2);
}

#[tokio::test]
async fn recovery_counts_a_corrupt_payload_in_the_last_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = limits(1 << 20);
    let (q, _) = open(dir.path(), l);
    for i in 0..3u8 {
        q.append(rec("t", 1, &[i; 100])).await.expect("append");
    }
    q.close().await;
    drop(q);
    let seg = dir.path().join(&segments(dir.path())[0]);
    let mut data = std::fs::read(&seg).expect("read");
    data[HEADER_LEN + 1 + 5] ^= 1;
    // And a corrupt header in the middle record: skipped by resync.
    let per = data.len() / 3;
    data[per + 20] ^= 1;
    std::fs::write(&seg, &data).expect("write");
    let (q, r) = open(dir.path(), l);
    assert_eq!((r.records, r.corrupt_records, r.truncated_bytes), (1, 2, 0));
    assert_eq!(q.corrupt_records(), 2);
    assert_eq!(payloads(&take_all(&q, "t", 1)), vec![vec![2; 100]]);
}

#[tokio::test]
async fn purge_drops_one_tenant_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = limits(1024);
    let (q, _) = open(dir.path(), l);
    for i in 0..10u8 {
        q.append(rec("gone", i % 2, &[i; 100]))
            .await
            .expect("append");
        q.append(rec("stays", 1, &[i; 50])).await.expect("append");
    }
    let inflight = q.take("gone", 0, 2, usize::MAX).expect("take");
    let gone = q.tenant_stats("gone");
    assert_eq!(q.purge_tenant("gone"), (10, gone.items, 1000));
    assert_eq!(q.tenant_stats("gone"), Stats::default());
    assert!(!q.all_tenant_stats().contains_key("gone"));
    assert!(q.ready_streams().iter().all(|(t, _)| &**t == "stays"));
    q.ack(&[inflight[0].id]); // harmless
    assert_eq!(q.stats().records, 10);
    q.close().await;
    drop(q);
    let (q, r) = open(dir.path(), l);
    assert_eq!(r.records, 10);
    assert!(take_all(&q, "gone", 0).is_empty());
    assert_eq!(take_all(&q, "stays", 1).len(), 10);
}

#[tokio::test]
async fn ready_streams_are_served_fairly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, _) = open(dir.path(), limits(1 << 20));
    // "big" has a long, older backlog; the others arrive later.
    for _ in 0..20 {
        q.append(rec("big", 1, b"x")).await.expect("append");
    }
    q.append(rec("small", 1, b"x")).await.expect("append");
    q.append(rec("other", 2, b"x")).await.expect("append");
    let names = |q: &Queue| {
        q.ready_streams()
            .into_iter()
            .map(|(t, s)| format!("{t}/{s}"))
            .collect::<Vec<_>>()
    };
    // Nobody served yet: oldest first.
    assert_eq!(names(&q), vec!["big/1", "small/1", "other/2"]);
    // Serving "big" sends it to the back even though its data is oldest.
    let t = q.take("big", 1, 1, usize::MAX).expect("take");
    assert_eq!(names(&q), vec!["small/1", "other/2", "big/1"]);
    q.ack(&[t[0].id]);
    q.take("small", 1, 1, usize::MAX).expect("take");
    assert_eq!(names(&q), vec!["other/2", "big/1"]);
    q.take("other", 2, 1, usize::MAX).expect("take");
    q.take("big", 1, 1, usize::MAX).expect("take");
    assert_eq!(names(&q), vec!["big/1"]);
    // Limits: bytes cap, but always at least one record.
    let t = q.take("big", 1, 100, 3).expect("take");
    assert_eq!(t.len(), 3);
    let t = q.take("big", 1, 100, 0).expect("take");
    assert_eq!(t.len(), 1);
}

#[tokio::test]
async fn stats_track_records_items_bytes_and_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, _) = open(dir.path(), limits(1 << 20));
    let mut r1 = rec("a", 1, b"12345");
    r1.created_ms = 50;
    let mut r2 = rec("a", 2, b"123");
    r2.created_ms = 70;
    let mut r3 = rec("b", 1, b"1");
    r3.created_ms = 60;
    q.append_batch(&[r1, r2, r3]).await.expect("batch");
    let s = q.stats();
    assert_eq!(
        (s.records, s.items, s.bytes, s.oldest_created_ms),
        (3, 6 + 4 + 2, 9, Some(50))
    );
    let a = q.tenant_stats("a");
    assert_eq!((a.records, a.bytes, a.oldest_created_ms), (2, 8, Some(50)));
    let t = q.take("a", 1, 1, usize::MAX).expect("take");
    // In flight still counts.
    assert_eq!(q.tenant_stats("a").records, 2);
    q.ack(&[t[0].id]);
    let all = q.all_tenant_stats();
    assert_eq!(all.len(), 2);
    assert_eq!(all["a"].oldest_created_ms, Some(70));
    assert_eq!(all["b"].bytes, 1);
}

#[tokio::test]
async fn ready_info_counts_up_to_enough_bytes_or_items() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, _) = open(dir.path(), limits(1 << 20));
    let mut batch = Vec::new();
    for (i, payload) in [&b"aaaa"[..], b"bbbb", b"cccc"].into_iter().enumerate() {
        let mut r = rec("a", 1, payload);
        r.items = 10;
        r.created_ms = 100 - i as i64;
        batch.push(r);
    }
    q.append_batch(&batch).await.expect("batch");
    let all = q.ready_info("a", 1, u64::MAX, u64::MAX).expect("ready");
    assert_eq!((all.records, all.bytes, all.items), (3, 12, 30));
    assert_eq!(all.oldest_created_ms, 98);
    // Stops at the record that reaches enough items, or enough bytes.
    let by_items = q.ready_info("a", 1, u64::MAX, 15).expect("ready");
    assert_eq!((by_items.records, by_items.items), (2, 20));
    let by_bytes = q.ready_info("a", 1, 4, u64::MAX).expect("ready");
    assert_eq!((by_bytes.records, by_bytes.bytes), (1, 4));
    assert!(q.ready_info("a", 2, 1, 1).is_none(), "no such stream");
}

#[tokio::test]
async fn concurrent_appends_share_fsyncs_and_all_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, _) = open(dir.path(), limits(64 << 10));
    let mut tasks = Vec::new();
    for w in 0..16u32 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..20u32 {
                let payload = format!("{w}-{i}");
                let id = q
                    .append(rec(
                        &format!("t{}", w % 4),
                        (w % 2) as u8,
                        payload.as_bytes(),
                    ))
                    .await
                    .expect("append");
                ids.push((id, payload));
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    assert_eq!(q.stats().records, 320);
    let mut got = Vec::new();
    for (t, s) in q.ready_streams() {
        got.extend(
            take_all(&q, &t, s)
                .into_iter()
                .map(|t| (t.id, String::from_utf8(t.payload.to_vec()).expect("utf8"))),
        );
    }
    got.sort();
    all.sort();
    assert_eq!(got, all);
}

#[tokio::test]
async fn wait_for_data_wakes_on_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, _) = open(dir.path(), limits(1 << 20));
    let q2 = q.clone();
    let waiter = tokio::spawn(async move {
        loop {
            if !q2.ready_streams().is_empty() {
                return;
            }
            q2.wait_for_data().await;
        }
    });
    tokio::task::yield_now().await;
    q.append(rec("t", 1, b"x")).await.expect("append");
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .expect("task");
}

/// What a written-ahead head looks like after a crash: its records, then
/// zeros to the segment size.
fn zero_fill(seg: &Path, to: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(seg)
        .expect("open");
    assert!(f.metadata().expect("meta").len() < to);
    f.set_len(to).expect("extend with zeros");
}

/// Appends `[1; 100]`, `[2; 100]`, `[3; 100]` for tenant "t" (non-zero
/// payloads, so only a zeroed tail is zeros), closes, and returns the
/// segment's path.
async fn three_records_closed(dir: &Path, l: Limits) -> std::path::PathBuf {
    let (q, _) = open(dir, l);
    for i in 1..=3u8 {
        q.append(rec("t", 1, &[i; 100])).await.expect("append");
    }
    q.close().await;
    drop(q);
    dir.join(&segments(dir)[0])
}

#[tokio::test]
async fn a_zeroed_tail_is_cut_without_counting_it_torn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = limits(1 << 20);
    let seg = three_records_closed(dir.path(), l).await;
    let data_len = std::fs::metadata(&seg).expect("meta").len();
    zero_fill(&seg, 1 << 20);
    // A spare the crash left behind is deleted, not read as a segment.
    std::fs::write(dir.path().join(spare::SPARE_FILE), [0u8; 4096]).expect("spare");
    let (q, r) = open(dir.path(), l);
    assert_eq!((r.records, r.corrupt_records, r.truncated_bytes), (3, 0, 0));
    assert_eq!(std::fs::metadata(&seg).expect("meta").len(), data_len);
    assert!(!dir.path().join(spare::SPARE_FILE).exists());
    assert_eq!(
        payloads(&take_all(&q, "t", 1)),
        (1..=3u8).map(|i| vec![i; 100]).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_record_torn_inside_a_zeroed_tail_is_counted_and_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = limits(1 << 20);
    let seg = three_records_closed(dir.path(), l).await;
    let data = std::fs::read(&seg).expect("read");
    let per = data.len() / 3;
    // The last record's write reached the disk only in part (its header
    // and 30 payload bytes); the rest of the block is still zeros.
    let keep = per * 2 + HEADER_LEN + 1 + 30;
    let mut torn = data[..keep].to_vec();
    torn.resize(1 << 20, 0);
    std::fs::write(&seg, &torn).expect("write");
    let (q, r) = open(dir.path(), l);
    // Its payload checksum fails and nothing follows: a torn tail.
    assert_eq!(
        (r.records, r.corrupt_records, r.truncated_bytes),
        (2, 0, (HEADER_LEN + 1 + 30) as u64)
    );
    assert_eq!(
        std::fs::metadata(&seg).expect("meta").len() as usize,
        2 * per
    );
    assert_eq!(payloads(&take_all(&q, "t", 1)).len(), 2);
    q.close().await;
    drop(q);
    // Only the header written: the record's length runs past nothing but
    // zeros; the header bytes are the torn tail.
    let mut torn = data[..per + HEADER_LEN + 1].to_vec();
    torn.resize(1 << 20, 0);
    std::fs::write(&seg, &torn).expect("write");
    let (_q, r) = open(dir.path(), l);
    assert_eq!(r.records, 1);
    assert!(r.truncated_bytes > 0 && r.truncated_bytes <= (HEADER_LEN + 1) as u64);
    assert_eq!(std::fs::metadata(&seg).expect("meta").len() as usize, per);
}

#[tokio::test]
async fn written_ahead_segments_hold_records_and_are_cut_when_sealed_or_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seg_bytes = 4096u64;
    let l = limits(seg_bytes);
    let (q, _) = open(dir.path(), l);
    let payload = |i: u64| noise(i, 1500);
    // Each append of two records fills a segment, so every append rolls.
    // The preparer answers in the background; keep rolling until a head
    // segment is seen written ahead (its file longer than its data).
    let mut appended = Vec::new();
    let mut seen_ahead = false;
    for i in 0..2000u64 {
        let (a, b) = (payload(2 * i), payload(2 * i + 1));
        q.append_batch(&[rec("t", 1, &a), rec("t", 1, &b)])
            .await
            .expect("append");
        appended.extend([a, b]);
        let segs = segments(dir.path());
        let head = dir.path().join(segs.last().expect("a segment"));
        if std::fs::metadata(&head).expect("meta").len() == seg_bytes {
            let data = std::fs::read(&head).expect("read");
            if data.ends_with(&[0; 512]) {
                seen_ahead = true;
                break;
            }
        }
    }
    assert!(seen_ahead, "no head segment was ever written ahead");
    // The accounting counts data; the disk holds at most the head's zeros
    // and a spare more.
    let on_disk: u64 = segments(dir.path())
        .iter()
        .map(|s| std::fs::metadata(dir.path().join(s)).expect("meta").len())
        .sum();
    let disk = q.stats().disk_bytes;
    assert!(
        disk < on_disk && on_disk <= disk + seg_bytes,
        "{disk} {on_disk}"
    );
    let sealed_lens: Vec<u64> = segments(dir.path())
        .iter()
        .rev()
        .skip(1)
        .map(|s| std::fs::metadata(dir.path().join(s)).expect("meta").len())
        .collect();
    assert!(
        sealed_lens.iter().all(|l| *l < seg_bytes),
        "sealed segments keep no zeroed tail: {sealed_lens:?}"
    );
    let got = payloads(&take_all(&q, "t", 1));
    assert_eq!(got, appended);
    q.close().await;
    drop(q);
    assert!(
        !dir.path().join(spare::SPARE_FILE).exists(),
        "close deletes the spare"
    );
    for s in segments(dir.path()) {
        let data = std::fs::read(dir.path().join(&s)).expect("read");
        assert!(
            !data.ends_with(&[0; 64]),
            "{s} keeps a zeroed tail after close"
        );
    }
    let (q, r) = open(dir.path(), l);
    assert_eq!(
        (r.records, r.corrupt_records, r.truncated_bytes),
        (appended.len() as u64, 0, 0)
    );
    assert_eq!(payloads(&take_all(&q, "t", 1)), appended);
}

#[tokio::test]
async fn preallocation_off_writes_no_zeros() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Limits {
        preallocate: false,
        ..limits(4096)
    };
    let (q, _) = open(dir.path(), l);
    for i in 0..20u64 {
        let (a, b) = (noise(2 * i, 1500), noise(2 * i + 1, 1500));
        q.append_batch(&[rec("t", 1, &a), rec("t", 1, &b)])
            .await
            .expect("append");
    }
    assert!(!dir.path().join(spare::SPARE_FILE).exists());
    for s in segments(dir.path()) {
        let len = std::fs::metadata(dir.path().join(&s)).expect("meta").len();
        assert!(len < 4096, "{s}: {len}");
    }
}

#[tokio::test]
async fn a_failed_compaction_cuts_the_head_back_to_what_was_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = limits(16 << 20);
    let big = |i: u64| noise(i, 1 << 20);
    let (q, _) = open(dir.path(), l);
    let ids: Vec<RecordId> = {
        let mut v = Vec::new();
        for i in 0..10 {
            v.push(q.append(rec("t", 1, &big(i))).await.expect("append"));
        }
        v
    };
    q.close().await;
    drop(q);
    let first = dir.path().join(&segments(dir.path())[0]);
    // Half acked: the sealed segment is worth compacting.
    let (q, _) = open(dir.path(), l);
    let t = q.take("t", 1, 5, usize::MAX).expect("take");
    assert_eq!(t.iter().map(|t| t.id).collect::<Vec<_>>(), ids[..5]);
    q.ack(&ids[..5]);
    // A synced append in the new head, then the last record of the old
    // segment made unreadable (cut short): the compaction writes four
    // copies (one 4 MiB chunk, unsynced) and fails on the fifth.
    q.append(rec("u", 1, b"after reopen"))
        .await
        .expect("append");
    let head = dir.path().join(segments(dir.path()).last().expect("head"));
    let synced = std::fs::read(&head).expect("read").len();
    let len = std::fs::metadata(&first).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .expect("open")
        .set_len(len - 100)
        .expect("cut");
    assert!(q.compact().await.is_err(), "the compaction must fail");
    assert_eq!(
        std::fs::metadata(&head).expect("meta").len() as usize,
        synced,
        "the head keeps only what was synced before the compaction"
    );
    q.close().await;
    drop(q);
    let (q, r) = open(dir.path(), l);
    assert_eq!(r.corrupt_records, 0);
    let got = take_all(&q, "t", 1);
    assert_eq!(
        got.iter().map(|t| t.id).collect::<Vec<_>>(),
        ids[5..9],
        "each surviving record exactly once (the tenth was cut by the test)"
    );
    assert_eq!(payloads(&got), (5..9).map(big).collect::<Vec<_>>());
    assert_eq!(
        payloads(&take_all(&q, "u", 1)),
        vec![b"after reopen".to_vec()]
    );
}

/// Held tenants' data is bounded apart (`held_max_bytes`): however many
/// held tenants fill their shares, a tenant still delivering gets its own
/// share. Before, held data counted against `max_bytes` and two held
/// tenants refused every other tenant (README.md "Consent: disconnect,
/// reconnect, uninstall": held data is bounded apart).
#[tokio::test]
async fn held_tenants_never_fill_the_queue_for_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Limits {
        max_bytes: 64 << 10,
        tenant_max_bytes: 40 << 10,
        held_max_bytes: 16 << 10,
        segment_bytes: 8 << 10,
        preallocate: false,
    };
    let (q, _) = open(dir.path(), l);
    q.set_held(["h1", "h2"]);
    let payload = noise(1, 1000);
    let mut held = 0u64;
    for tenant in ["h1", "h2"] {
        loop {
            match q.append(rec(tenant, 1, &payload)).await {
                Ok(_) => held += 1,
                Err(AppendError::DiskFull { .. }) => break,
                Err(e) => panic!("{tenant}: {e}"),
            }
        }
    }
    assert!(held > 0 && held * 1000 <= 16 << 10, "{held} held records");
    for i in 0..35 {
        q.append(rec("c", 1, &payload))
            .await
            .unwrap_or_else(|e| panic!("the connected tenant's record {i}: {e}"));
    }
}

/// `expire` drops a stream's records accepted before a time, and only
/// those (the front of the stream), counting them.
#[tokio::test]
async fn expire_drops_only_records_older_than_the_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, _) = open(dir.path(), limits(1 << 20));
    for (i, created) in [100, 200, 300].into_iter().enumerate() {
        let payload = format!("p{i}");
        let mut r = rec("t", 1, payload.as_bytes());
        r.created_ms = created;
        r.items = 2;
        q.append(r).await.expect("append");
    }
    assert_eq!(q.expire("t", 1, 250), (2, 4));
    assert_eq!(q.expire("t", 2, 1_000), (0, 0), "another stream");
    let left = take_all(&q, "t", 1);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].created_ms, 300);
    assert_eq!(q.stats().items, 2);
}

/// Dead letters (files beside the queue) and the segments written ahead
/// count against `max_bytes`: with them the budget refuses sooner. Before,
/// both were outside it (16 MiB of dead letters per tenant times 10,000
/// tenants, two segments ahead).
#[tokio::test]
async fn dead_letters_and_written_ahead_segments_count_against_the_budget() {
    /// Records a fresh queue with `l` (and `outside` bytes beside it) takes.
    async fn fill(l: Limits, outside: u64) -> u32 {
        let dir = tempfile::tempdir().expect("tempdir");
        let (q, _) = open(dir.path(), l);
        q.set_outside_bytes(outside);
        let payload = noise(3, 1000);
        let mut n = 0;
        while q.append(rec("t", 1, &payload)).await.is_ok() {
            n += 1;
        }
        n
    }
    let ahead = Limits {
        max_bytes: 64 << 10,
        tenant_max_bytes: 64 << 10,
        held_max_bytes: 0,
        segment_bytes: 8 << 10,
        preallocate: true,
    };
    let plain = Limits {
        preallocate: false,
        ..ahead
    };
    let (ahead, with_dead, plain) = (
        fill(ahead, 0).await,
        fill(plain, 32 << 10).await,
        fill(plain, 0).await,
    );
    assert!(plain >= ahead + 14, "16 KiB set aside: {plain} vs {ahead}");
    assert!(
        plain >= with_dead + 30,
        "32 KiB of dead letters: {plain} vs {with_dead}"
    );
}
