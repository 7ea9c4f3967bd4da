//! The durable queue: where every accepted request lives between the
//! ingest API's `202` and Datadog's `2xx`.
//!
//! It stores bytes, not domain types: per record, a tenant id string, an
//! opaque generation number, an opaque stream code
//! (`site::Endpoint::code()`, never interpreted here),
//! an item count, three caller-given timestamps and the payload. No API
//! key, token or Datadog host is ever written to it. It knows nothing of
//! HTTP, retries, batching or compression.
//!
//! # Guarantees
//! - [`Queue::append`] resolves only once the record is on disk and
//!   `fdatasync`ed. Appends are **group-committed**: one writer thread takes
//!   every pending append, writes them all (vectored), syncs once and then
//!   completes them all, so many concurrent small appends share one fsync.
//! - `kill -9` at any instant loses nothing whose append completed. A torn
//!   tail is truncated at the next open (never fatal, never blocks start).
//! - At least once: a record leaves only on [`Queue::ack`] (or
//!   [`Queue::purge_tenant`]). Duplicates are possible only across a crash
//!   (see "Ack files"); within one process a record is never handed out
//!   twice unless released.
//! - Backpressure, never silent drops: over the tenant quota an append fails
//!   with [`AppendError::TenantFull`] (HTTP 429), over the global disk budget
//!   with [`AppendError::DiskFull`] (HTTP 503), both with a retry-after.
//! - Memory is bounded by the number of records, not their size: the index
//!   keeps **32 bytes per record** (`index::Entry`: seq, created_ms,
//!   segment, offset, length, items; up to ~64 bytes with `VecDeque`
//!   growth slack), plus ~150 bytes per (tenant, stream) and per segment.
//!   Payloads are read from disk with `pread` on every `take`, never cached.
//! - Payloads may be stored **LZ4-compressed** (the appender's choice, per
//!   record: [`Prepared::new`]); `take` always returns the bytes as
//!   appended, and both kinds of record can share a segment. Quotas, budgets
//!   and byte statistics count bytes as stored.
//!
//! # On-disk format (version 1)
//! A directory holding a `LOCK` file (an OS lock: one process at a time),
//! segment files `{id:08x}.seg` and their ack files `{id:08x}.ack`, and a
//! `seq` file: one 12-byte entry (as in ack files) reserving record seqs a
//! million at a time (replaced by write, fsync, rename, directory fsync), so
//! a seq is never reused even after every trace of it is deleted. Segment
//! ids grow; the highest is the head, the only one appended to; each new
//! segment file is made durable with a directory fsync before its first
//! record is acknowledged. A segment is rolled before it would exceed
//! `segment_bytes` (< 4 GiB); a batch never spans two segments.
//!
//! ## Record framing
//! Records are laid end to end in a segment, no padding. Little-endian.
//! ```text
//! off len field
//!   0   4 magic        b"DDRQ"
//!   4   1 version      1
//!   5   1 flags        bit 0 MORE: the next record is part of the same batch
//!                      bit 1 LZ4: payload = u32 original length ‖ LZ4 block
//!   6   1 stream       opaque stream code
//!   7   1 gen_lo       generation (opaque, 24 bits), bits 0-7
//!   8   2 tenant_len
//!  10   2 gen_hi       generation, bits 8-23
//!  12   4 items
//!  16   4 payload_len
//!  20   8 seq          record id, unique for the life of the directory
//!  28   8 created_ms
//!  36   8 oldest_ms
//!  44   8 newest_ms
//!  52   4 pcrc         CRC32C(payload)
//!  56   4 hcrc         CRC32C(bytes 0..56 ‖ tenant)
//!  60   … tenant (UTF-8), then payload
//! ```
//! `hcrc` covers the header, which includes `pcrc`: together they checksum
//! header and payload, and a corrupted length is never trusted. The records
//! of one `append_batch` carry `MORE` on all but the last: recovery drops an
//! unfinished batch at a segment's end, so a batch is all or nothing even
//! across a crash. (One exception, for a batch never acknowledged: after a
//! power loss, a written-ahead head's unsynced writes can reach the disk in
//! any order; if a hole falls inside such a batch, its records after the
//! hole are recovered without those in it. Acknowledged data is synced and
//! not affected.) `payload_len` and `pcrc` are of the payload as stored.
//!
//! Compatibility: the `LZ4` bit and the generation (bytes 7, 10 and 11,
//! reserved and zero before) were added after the first release of this
//! format. Earlier builds refuse any record carrying either (unknown flag
//! bits and non-zero reserved bytes are framing errors, counted corrupt and
//! skipped), so before going back to such a build, let the queue drain.
//!
//! ## Ack files
//! Entries of 12 bytes: a u64 (`seq`, top bit = kind) and CRC32C of those 8
//! bytes, read back self-synchronising: stray bytes (a write cut short by a
//! full disk or a kill) are skipped until entries line up again, so the
//! entries after them still count; a torn tail is cut at open, and a write
//! that fails part way is cut back to its last whole entry at once. Kind `ACK` (top bit 0): the
//! record `seq` was delivered (or purged, or found corrupt) — every copy of
//! it, wherever it is, is dead. Kind `DROP` (top bit 1): only the copy of
//! `seq` in *this* segment is dead (a duplicate left by an interrupted
//! compaction, or a corrupt copy). An ack entry is written to the ack file of
//! the segment holding the record, under the index lock, with a plain
//! `write` and **no fsync** ([`Queue::close`] syncs them all). So:
//! - after `kill -9`, every ack whose `ack()` returned is on disk (the page
//!   cache survives the process) and is never resurrected;
//! - after a power loss, acks since the last `close()` may be lost: those
//!   records are delivered again. At-least-once allows it; ack fsyncs on
//!   every delivery would cost more than the rare duplicate.
//!
//! A segment is deleted (data file first, then its ack file) as soon as it
//! is sealed and holds no live record.
//!
//! ## Recovery (at `open`)
//! 1. Delete ack files without a segment (a crash between the two unlinks).
//! 2. Read every ack file (global `ACK` set; each segment's own entries).
//! 3. Scan each segment: check every header's `hcrc`; in the last segment
//!    also every payload's `pcrc` (the only place an un-synced write can
//!    be; older segments were synced whole before the roll, and their
//!    payloads are checked when read). A region that does not parse is
//!    skipped up to the next valid header and counted corrupt; a tail that
//!    does not parse, a record running past the end, a last record whose
//!    payload fails (a write torn inside a written-ahead segment's zeros),
//!    or an unfinished `MORE` batch is **truncated**
//!    (`Recovery::truncated_bytes` counts its bytes up to the last non-zero
//!    one; a zeroed tail is a written-ahead segment's unused room, cut
//!    without being counted, see `spare.rs`). A leftover spare is deleted.
//! 4. Liveness: a copy is dead if its `seq` is in the `ACK` set, or its own
//!    segment `DROP`s it. Of several live copies of one `seq` (compaction
//!    interrupted after the copy was synced but before the old segment was
//!    deleted) the newest segment's wins.
//! 5. Make each dead copy dead *in its own ack file* (an `ACK` carried over
//!    from another segment, a `DROP` for a losing duplicate or a corrupt
//!    copy) and fsync those files, so no later deletion can resurrect it.
//! 6. Build the index in `seq` order; delete segments with nothing live.
//!    Appends then go to a new segment; the next `seq` is above any seen.
//!
//! Startup reads every header (one small `pread` per record) and the whole
//! last segment, not the whole queue.
//!
//! ## Compaction
//! A tenant whose data is held (e.g. awaiting reauthorization) must not pin
//! whole segments. The writer thread compacts a sealed segment whose live
//! bytes are under 50 % once it has been sealed 30 s (or under 90 % when
//! the disk is over 90 % of the budget; [`Queue::compact`] forces every
//! segment with dead bytes): it reads each live record, verifies it, copies
//! it **unchanged, same `seq`** (only `MORE` cleared) to the head, fsyncs,
//! then, under the index lock, points the index at the copies, writes an
//! `ACK` next to the copy of any record acked meanwhile, and deletes the
//! old segment. So a [`RecordId`] never changes, callers holding one from
//! `take` can always ack it, and there is **no duplicate window**: the old
//! copy goes only after the new one is durable, and a crash in between
//! leaves two copies of the same `seq`, which recovery resolves to one.
//! A segment is never deleted while it is being compacted (its ack file
//! must outlive the uncommitted copies); copies of a compaction that fails
//! are `DROP`ped in their own ack files. Disk use stays under about twice
//! the live data plus the head segment; copies are not counted against the
//! budget. Compaction runs on the writer thread, so appends wait for it
//! (one segment at a time: at most half a segment is copied per step).
//!
//! # Layout
//! - `format`: record and ack-entry framing (pure).
//! - `index`: the in-memory index, accounting, ack files, deletions.
//! - `recover`: the recovery procedure.
//! - `writer`: the group-commit thread and compaction.
//! - `spare`: segments written ahead with zeros by a helper thread, so a
//!   group commit's `fdatasync` overwrites allocated blocks instead of
//!   growing the file (`Limits::preallocate`, `queue.preallocate`).

pub(crate) mod format;
mod index;
mod recover;
mod spare;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use crate::config::QueueConfig;
use format::HEADER_LEN;
pub(crate) use index::ReadyInfo;
use index::{StateCell, StreamKey, ToRead};
use writer::{Job, Pending, Writer};

/// Retry-after suggested when a tenant is over its quota: its backlog
/// drains at its destination's pace, usually slower than the budget's.
pub(crate) const TENANT_FULL_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Retry-after suggested when the global budget is full: senders and
/// compaction free space continuously.
pub(crate) const DISK_FULL_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Longest tenant id stored (it is a `u16` on disk).
pub(crate) const MAX_TENANT_LEN: usize = u16::MAX as usize;
/// Smallest `segment_bytes` accepted (tests use small segments).
const MIN_SEGMENT_BYTES: u64 = 256;

/// Size limits of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Global disk budget: segment files, live or not yet reclaimed.
    pub max_bytes: u64,
    /// Per-tenant quota of live framed bytes (header + tenant + payload).
    pub tenant_max_bytes: u64,
    /// Live framed bytes of held tenants (`Queue::set_held`), in all.
    /// Held bytes do not count against `max_bytes` for the other tenants:
    /// the disk holds up to `max_bytes + held_max_bytes` (plus segments
    /// written ahead).
    pub held_max_bytes: u64,
    /// Size at which a segment is rolled; also the largest batch.
    pub segment_bytes: u64,
    /// Write segments ahead with zeros so that a group commit's
    /// `fdatasync` is an overwrite (see `spare.rs`). Not a limit, but fixed
    /// for the life of the queue like the others. The two segments this can
    /// hold beyond the data (the head's unwritten tail and the spare) count
    /// against `max_bytes`; with a `max_bytes` under four segments it is off.
    pub preallocate: bool,
}

impl Limits {
    /// Bytes of `max_bytes` set aside for segments written ahead.
    pub(crate) fn written_ahead(&self) -> u64 {
        if self.preallocate {
            2 * self.segment_bytes
        } else {
            0
        }
    }
}

impl From<&QueueConfig> for Limits {
    fn from(c: &QueueConfig) -> Limits {
        Limits {
            max_bytes: c.max_bytes,
            tenant_max_bytes: c.tenant_max_bytes,
            held_max_bytes: c.held_max_bytes,
            segment_bytes: c.segment_bytes,
            preallocate: c.preallocate,
        }
    }
}

/// A generation as records store it (modulo 2^24): compare a record's
/// [`Taken::generation`] with this of the current one.
pub(crate) fn stored_generation(generation: i64) -> u32 {
    (generation.rem_euclid(i64::from(format::GENERATION_MODULUS))) as u32
}

/// Identifies a record for the life of the queue directory (compaction
/// keeps it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(u64);

impl RecordId {
    /// The record's sequence number (ascending in append order).
    pub fn seq(self) -> u64 {
        self.0
    }

    /// An id for tests that build [`Taken`] records by hand.
    #[cfg(test)]
    pub(crate) fn for_tests(seq: u64) -> RecordId {
        RecordId(seq)
    }
}

/// A record to append.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    pub tenant: &'a str,
    /// An opaque number stored with the record and handed back by `take`,
    /// modulo 2^24 (the relay stores the tenant's connection generation:
    /// a record is only ever sent for the connection it was accepted for).
    pub generation: u32,
    pub stream: u8,
    pub items: u32,
    pub created_ms: i64,
    pub oldest_ms: i64,
    pub newest_ms: i64,
    pub payload: &'a [u8],
}

/// A record encoded for the queue: framed, checksummed and, if asked and
/// worth it, LZ4-compressed (the payload is stored compressed when that
/// saves at least an eighth; `take` gives back the original bytes). Making
/// one is the CPU-heavy part of an append: do it where CPU work belongs
/// (for a large payload, not on an async worker), then hand it to
/// [`Queue::append_prepared`].
#[derive(Debug)]
pub struct Prepared {
    bytes: Vec<u8>,
    tenant: Box<str>,
    stream: u8,
    items: u32,
    created_ms: i64,
    raw_len: usize,
}

impl Prepared {
    /// Encodes `record`, compressing its payload if `lz4`. Fails only for a
    /// tenant id or payload no record can hold (`TooLarge`).
    pub fn new(record: &NewRecord<'_>, lz4: bool) -> Result<Prepared, AppendError> {
        let max_payload = u32::MAX as usize - HEADER_LEN - MAX_TENANT_LEN;
        if record.tenant.len() > MAX_TENANT_LEN || record.payload.len() > max_payload {
            return Err(AppendError::TooLarge {
                len: record.payload.len(),
                limit: max_payload,
            });
        }
        let mut bytes = format::encode(
            record.tenant,
            record.stream,
            record.items,
            record.created_ms,
            record.oldest_ms,
            record.newest_ms,
            record.payload,
            lz4,
        );
        format::set_generation(&mut bytes, record.generation);
        Ok(Prepared {
            bytes,
            tenant: record.tenant.into(),
            stream: record.stream,
            items: record.items,
            created_ms: record.created_ms,
            raw_len: record.payload.len(),
        })
    }

    /// Bytes the record takes on disk (and against the quotas).
    pub fn stored_len(&self) -> usize {
        self.bytes.len()
    }

    fn tenant(&self) -> &str {
        &self.tenant
    }
}

/// A record handed out by [`Queue::take`]; in flight until acked or released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub id: RecordId,
    pub tenant: Arc<str>,
    /// The generation it was appended with, modulo 2^24 (see
    /// [`NewRecord::generation`]).
    pub(crate) generation: u32,
    pub stream: u8,
    pub items: u32,
    pub created_ms: i64,
    pub oldest_ms: i64,
    pub newest_ms: i64,
    pub payload: Bytes,
}

/// What [`Queue::open`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Live records recovered, their items and payload bytes (as stored).
    pub records: u64,
    pub items: u64,
    pub bytes: u64,
    /// Records (or unparseable regions) that failed their checksum: lost.
    pub corrupt_records: u64,
    /// Torn-tail bytes cut off the end of segments.
    pub truncated_bytes: u64,
}

/// Queue (or tenant) statistics; ready and in-flight records both count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub records: u64,
    pub items: u64,
    /// Payload bytes, as stored (after any compression).
    pub bytes: u64,
    /// `created_ms` of the earliest-appended record, per stream, minimum.
    pub(crate) oldest_created_ms: Option<i64>,
    /// Whole queue: bytes of segment files. Per tenant: its live framed bytes.
    pub(crate) disk_bytes: u64,
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("tenant queue quota reached ({tenant_bytes} of {limit} bytes)")]
    TenantFull {
        tenant_bytes: u64,
        limit: u64,
        retry_after: Duration,
    },
    #[error("queue disk budget reached")]
    DiskFull { retry_after: Duration },
    #[error("record too large for the queue ({len} bytes, limit {limit})")]
    TooLarge { len: usize, limit: usize },
    #[error("queue write failed: {0}")]
    Io(#[source] std::io::Error),
    #[error("queue is closed")]
    Closed,
}

impl AppendError {
    /// The suggested retry-after, for the two "full" errors.
    #[cfg(test)]
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            AppendError::TenantFull { retry_after, .. } | AppendError::DiskFull { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

/// Errors opening, reading or compacting the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("queue directory {0} is in use by another process")]
    Locked(PathBuf),
    #[error("invalid queue limits: {0}")]
    Limits(&'static str),
    #[error("queue is closed")]
    Closed,
}

/// What the API side and the writer thread share.
pub(crate) struct Shared {
    pub(crate) state: StateCell,
    pub(crate) limits: Limits,
    pub(crate) dir: PathBuf,
    notify: Notify,
    pub(crate) closed: AtomicBool,
    corrupt: AtomicU64,
    /// Told the duration of every group commit (write + fdatasync).
    pub(crate) commit_observer: std::sync::OnceLock<CommitObserver>,
}

/// See [`Queue::observe_commits`].
pub(crate) type CommitObserver = Box<dyn Fn(std::time::Duration) + Send + Sync>;

impl Shared {
    pub(crate) fn notify_data(&self) {
        self.notify.notify_waiters();
        // Also store a permit for a waiter that is about to wait.
        self.notify.notify_one();
    }

    pub(crate) fn record_corrupt(&self, seg: u32, offset: u32, seq: u64) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            segment = seg,
            offset,
            seq,
            "queue record failed its checksum; dropped (data lost)"
        );
    }
}

struct Inner {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Job>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Disconnect, then wait for the writer to finish what it holds, so
        // the directory can be reopened as soon as the last handle is gone.
        self.tx.take();
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

/// The durable queue. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("dir", &self.inner.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens or creates the queue in `dir`, recovering what is there.
    pub fn open(dir: &Path, limits: Limits) -> Result<(Queue, Recovery), QueueError> {
        if limits.segment_bytes < MIN_SEGMENT_BYTES || limits.segment_bytes > u64::from(u32::MAX) {
            return Err(QueueError::Limits(
                "segment_bytes must be between 256 B and 4 GiB",
            ));
        }
        if limits.max_bytes == 0 || limits.tenant_max_bytes == 0 {
            return Err(QueueError::Limits(
                "max_bytes and tenant_max_bytes must not be 0",
            ));
        }
        let mut limits = limits;
        if limits.preallocate && limits.max_bytes < 4 * limits.segment_bytes {
            // Two segments written ahead would take half the budget or more.
            tracing::info!(
                max_bytes = limits.max_bytes,
                segment_bytes = limits.segment_bytes,
                "queue.preallocate is off: max_bytes holds fewer than four segments"
            );
            limits.preallocate = false;
        }
        let io = |source| QueueError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| QueueError::Io {
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(QueueError::Locked(dir.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(QueueError::Io {
                    path: lock_path,
                    source,
                });
            }
        }
        let rec = recover::recover(dir)?;
        let report = rec.report;
        if report.corrupt_records > 0 || report.truncated_bytes > 0 || report.records > 0 {
            tracing::info!(
                dir = %dir.display(),
                records = report.records,
                items = report.items,
                bytes = report.bytes,
                corrupt = report.corrupt_records,
                truncated_bytes = report.truncated_bytes,
                "queue recovered"
            );
        }
        let shared = Arc::new(Shared {
            state: StateCell::new(rec.state),
            limits,
            dir: dir.to_path_buf(),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            corrupt: AtomicU64::new(report.corrupt_records),
            commit_observer: std::sync::OnceLock::new(),
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(shared.clone(), rx, rec.next_seq, rec.next_seg);
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer.run())
            .map_err(io)?;
        let queue = Queue {
            inner: Arc::new(Inner {
                shared,
                tx: Some(tx),
                thread: Mutex::new(Some(thread)),
                _lock: lock,
            }),
        };
        Ok((queue, report))
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Largest framed record: it must fit a segment, the tenant quota and
    /// the budget, or it could never be accepted.
    fn max_record_len(&self) -> u64 {
        let l = &self.shared().limits;
        l.segment_bytes.min(l.tenant_max_bytes).min(l.max_bytes)
    }

    /// Appends one record; resolves once it is durable (group commit).
    pub async fn append(&self, record: NewRecord<'_>) -> Result<RecordId, AppendError> {
        let ids = self.append_batch(std::slice::from_ref(&record)).await?;
        ids.into_iter().next().ok_or(AppendError::Closed)
    }

    /// Appends several records in one durable step, all or nothing (also
    /// across a crash: see the `MORE` flag). The batch must fit one segment.
    /// Payloads are stored as is; see [`Prepared`] for compression.
    pub async fn append_batch(
        &self,
        records: &[NewRecord<'_>],
    ) -> Result<Vec<RecordId>, AppendError> {
        let prepared = records
            .iter()
            .map(|r| Prepared::new(r, false))
            .collect::<Result<Vec<_>, _>>()?;
        self.append_prepared(prepared).await
    }

    /// [`Queue::append_batch`] for records already encoded (and perhaps
    /// compressed) by [`Prepared::new`], off the caller's async worker.
    pub async fn append_prepared(
        &self,
        records: Vec<Prepared>,
    ) -> Result<Vec<RecordId>, AppendError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let shared = self.shared();
        if shared.closed.load(Ordering::SeqCst) {
            return Err(AppendError::Closed);
        }
        let max = self.max_record_len();
        let mut total = 0u64;
        let mut per_tenant: Vec<(&str, u64)> = Vec::new();
        for r in &records {
            let len = r.bytes.len() as u64;
            if len > max {
                let overhead = (HEADER_LEN + r.tenant().len()) as u64;
                return Err(AppendError::TooLarge {
                    len: r.raw_len,
                    limit: max.saturating_sub(overhead) as usize,
                });
            }
            total += len;
            match per_tenant.iter_mut().find(|(t, _)| *t == r.tenant()) {
                Some((_, b)) => *b += len,
                None => per_tenant.push((r.tenant(), len)),
            }
        }
        if total > shared.limits.segment_bytes {
            return Err(AppendError::TooLarge {
                len: total as usize,
                limit: shared.limits.segment_bytes as usize,
            });
        }
        let keys: Vec<StreamKey> = {
            let mut s = shared.state.lock();
            s.reserve(&per_tenant, &shared.limits)?;
            records
                .iter()
                .map(|r| (s.intern(r.tenant()), r.stream))
                .collect()
        };
        let pending: Vec<Pending> = records
            .into_iter()
            .zip(keys)
            .map(|(r, key)| Pending {
                key,
                bytes: r.bytes,
                items: r.items,
                created_ms: r.created_ms,
            })
            .collect();
        let (reply, rx) = oneshot::channel();
        let job = Job::Append {
            records: pending,
            reply,
        };
        let sent = match &self.inner.tx {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        };
        if let Err(Job::Append { records, .. }) = sent {
            let mut s = shared.state.lock();
            for p in &records {
                s.unreserve(&p.key.0, p.bytes.len() as u64);
            }
            return Err(AppendError::Closed);
        }
        rx.await.unwrap_or(Err(AppendError::Closed))
    }

    /// What is ready in one stream, counted from the front up to
    /// `enough_bytes` payload bytes (as stored) or `enough_items` items:
    /// lets the sender wait for a fuller batch.
    pub(crate) fn ready_info(
        &self,
        tenant: &str,
        stream: u8,
        enough_bytes: u64,
        enough_items: u64,
    ) -> Option<ReadyInfo> {
        self.shared()
            .state
            .lock()
            .ready_info(tenant, stream, enough_bytes, enough_items)
    }

    /// (tenant, stream) pairs with records ready to take, least recently
    /// served first: a stream just taken from goes to the back.
    pub fn ready_streams(&self) -> Vec<(Arc<str>, u8)> {
        self.shared().state.lock().ready_streams()
    }

    /// Takes up to `max_records` records and `max_bytes` payload bytes (at
    /// least one record if any; bytes as given to append, not as stored) of
    /// the oldest ready records of a stream, reading their payloads from
    /// disk. They are in flight until acked or released. A record failing
    /// its checksum is counted, logged, dropped and skipped, never returned.
    pub fn take(
        &self,
        tenant: &str,
        stream: u8,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Taken>, QueueError> {
        let shared = self.shared();
        loop {
            // The index picks records by their stored size, which is at most
            // their original size: a superset of what fits `max_bytes` once
            // decoded. The rest is given back below, unread.
            let (name, reads) = shared
                .state
                .lock()
                .take(tenant, stream, max_records, max_bytes);
            let Some(name) = name else {
                return Ok(Vec::new());
            };
            if reads.is_empty() {
                return Ok(Vec::new());
            }
            let mut out: Vec<Taken> = Vec::with_capacity(reads.len());
            let mut room = max_bytes;
            let mut corrupt = 0;
            for (i, r) in reads.iter().enumerate() {
                let give_back = |shared: &Shared, out: &[Taken]| {
                    let ids: Vec<RecordId> = reads[i..]
                        .iter()
                        .map(|r| RecordId(r.entry.seq))
                        .chain(out.iter().map(|t| t.id))
                        .collect();
                    shared.state.lock().release(&ids);
                };
                // The first record is always taken, whatever its size.
                let fits = if out.is_empty() { usize::MAX } else { room };
                match read_record(r, &name, stream, fits) {
                    Ok(Some(t)) => {
                        room = room.saturating_sub(t.payload.len());
                        out.push(t);
                    }
                    Ok(None) => {
                        give_back(shared, &[]);
                        return Ok(out);
                    }
                    Err(ReadError::Corrupt) => {
                        shared.record_corrupt(r.entry.seg, r.entry.offset, r.entry.seq);
                        shared.state.lock().drop_corrupt(r.entry.seq);
                        corrupt += 1;
                    }
                    Err(ReadError::Io(source)) => {
                        give_back(shared, &out);
                        return Err(QueueError::Io {
                            path: index::seg_path(&shared.dir, r.entry.seg),
                            source,
                        });
                    }
                }
            }
            if !out.is_empty() || corrupt == 0 {
                return Ok(out);
            }
        }
    }

    /// Delivered: removes the records for good (ids not in flight are
    /// ignored). Reclaims a segment once all its records are gone.
    pub fn ack(&self, ids: &[RecordId]) {
        self.shared().state.lock().ack(ids);
    }

    /// Not delivered: returns in-flight records to the front of their
    /// streams, in order.
    pub fn release(&self, ids: &[RecordId]) {
        if self.shared().state.lock().release(ids) {
            self.shared().notify_data();
        }
    }

    /// Drops every record of a tenant, ready or in flight; returns
    /// (records, items, payload bytes) removed. Appends in progress at the
    /// time of the call may still land after it.
    /// Whether an append for `tenant` is refused now whatever its size (the
    /// tenant's share or the queue is full): ingest asks before reading a
    /// body, so a client that keeps sending into a full share costs a
    /// header's worth of work per request, not a body's. Never refuses what
    /// the append would take.
    pub(crate) fn admits(&self, tenant: &str) -> Result<(), AppendError> {
        let shared = self.shared();
        if shared.closed.load(Ordering::SeqCst) {
            return Err(AppendError::Closed);
        }
        shared.state.lock().admits(tenant, &shared.limits)
    }

    /// Bytes of files kept beside the queue that count against its budget
    /// (the dead-letter areas); replaces the previous figure.
    pub(crate) fn set_outside_bytes(&self, bytes: u64) {
        self.shared().state.lock().outside = bytes;
    }

    /// Marks the tenants whose data is held (not connected): their live
    /// bytes count against `held_max_bytes` and no longer against
    /// `max_bytes` for the others. Replaces the previous set.
    pub(crate) fn set_held<'a>(&self, held: impl IntoIterator<Item = &'a str>) {
        let mut st = self.shared().state.lock();
        let held = held.into_iter().map(|t| st.intern(t)).collect();
        st.set_held(held);
    }

    /// Drops the records of one stream of `tenant` accepted before
    /// `before_ms` and not in flight: (records, items).
    pub(crate) fn expire(&self, tenant: &str, stream: u8, before_ms: i64) -> (u64, u64) {
        let mut st = self.shared().state.lock();
        let key = (st.intern(tenant), stream);
        st.expire(&key, before_ms)
    }

    pub fn purge_tenant(&self, tenant: &str) -> (u64, u64, u64) {
        self.shared().state.lock().purge_tenant(tenant)
    }

    pub fn stats(&self) -> Stats {
        self.shared().state.lock().stats()
    }

    /// One tenant's records across its streams, in flight included.
    pub fn tenant_stats(&self, tenant: &str) -> Stats {
        self.shared().state.lock().tenant_stats(tenant)
    }

    /// Every tenant with records (O(tenants + streams)).
    pub fn all_tenant_stats(&self) -> HashMap<Arc<str>, Stats> {
        self.shared().state.lock().all_tenant_stats()
    }

    /// Calls `f` with the duration of every group commit (the vectored
    /// write and its `fdatasync`): the disk's share of ingest latency. Set
    /// once; later calls are ignored.
    pub(crate) fn observe_commits(&self, f: impl Fn(std::time::Duration) + Send + Sync + 'static) {
        let _ = self.shared().commit_observer.set(Box::new(f));
    }

    /// Records found corrupt since open (at recovery, take or compaction).
    pub fn corrupt_records(&self) -> u64 {
        self.shared().corrupt.load(Ordering::Relaxed)
    }

    /// Resolves when new data may be ready (appended or released). May
    /// resolve spuriously; re-check [`Queue::ready_streams`].
    pub(crate) async fn wait_for_data(&self) {
        self.shared().notify.notified().await;
    }

    /// Compacts now every sealed segment holding reclaimable bytes (the
    /// writer also does it on its own; this is for tests and operators).
    /// Returns how many segments were compacted.
    pub async fn compact(&self) -> Result<u64, QueueError> {
        let (reply, rx) = oneshot::channel();
        match &self.inner.tx {
            Some(tx) if tx.send(Job::Compact { reply }).is_ok() => {}
            _ => return Err(QueueError::Closed),
        }
        rx.await.unwrap_or(Err(QueueError::Closed))
    }

    /// Stops accepting appends (they get `Closed`), completes those already
    /// accepted, syncs the head segment, every ack file and the directory.
    /// Acks made after `close` are written but not synced.
    pub async fn close(&self) {
        let shared = self.shared();
        shared.closed.store(true, Ordering::SeqCst);
        let (reply, rx) = oneshot::channel();
        if let Some(tx) = &self.inner.tx
            && tx.send(Job::Close { reply }).is_ok()
        {
            let _ = rx.await;
        }
        if let Some(h) = self.inner.thread.lock().take() {
            // The writer exits right after answering.
            let _ = h.join();
        }
        let synced = shared
            .state
            .lock()
            .sync_acks()
            .and_then(|()| writer::sync_dir(&shared.dir));
        if let Err(e) = synced {
            tracing::warn!(error = %e, "cannot sync queue ack files at close; acked records may be redelivered after a power loss");
        }
    }
}

enum ReadError {
    Corrupt,
    Io(std::io::Error),
}

/// Reads, verifies and decodes one record for `take`; `Ok(None)` if its
/// payload, decoded, is larger than `room` (it is then not decoded).
fn read_record(
    r: &ToRead,
    tenant: &Arc<str>,
    stream: u8,
    room: usize,
) -> Result<Option<Taken>, ReadError> {
    let Some(file) = &r.file else {
        return Err(ReadError::Corrupt);
    };
    let mut buf = vec![0u8; r.entry.len as usize];
    match file.read_exact_at(&mut buf, u64::from(r.entry.offset)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ReadError::Corrupt),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let h = match format::verify(&buf) {
        Ok(v) => v.header,
        Err(_) => return Err(ReadError::Corrupt),
    };
    let tenant_end = HEADER_LEN + usize::from(h.tenant_len);
    if h.seq != r.entry.seq
        || h.stream != stream
        || buf[HEADER_LEN..tenant_end] != *tenant.as_bytes()
    {
        return Err(ReadError::Corrupt);
    }
    let stored = &buf[tenant_end..tenant_end + h.payload_len as usize];
    match format::raw_len(h.flags, stored) {
        None => return Err(ReadError::Corrupt),
        Some(n) if n > room => return Ok(None),
        Some(_) => {}
    }
    let payload = match format::decode_payload(h.flags, stored) {
        Ok(Some(decoded)) => Bytes::from(decoded),
        Ok(None) => Bytes::from(buf).slice(tenant_end..tenant_end + h.payload_len as usize),
        Err(_) => return Err(ReadError::Corrupt),
    };
    Ok(Some(Taken {
        id: RecordId(h.seq),
        tenant: tenant.clone(),
        generation: h.generation,
        stream,
        items: h.items,
        created_ms: h.created_ms,
        oldest_ms: h.oldest_ms,
        newest_ms: h.newest_ms,
        payload,
    }))
}
