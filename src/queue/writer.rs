//! The writer thread: group commit of appends, segment rolls, compaction.
//!
//! Owns the head segment's write handle and the sequence counter. Every
//! append reaches it over one channel; it takes every job waiting (up to
//! [`GROUP_MAX_BYTES`]), writes them with vectored writes, calls
//! `sync_data` once, only then publishes them in the index and completes
//! them all. A job (one `append` or `append_batch`) is never split across
//! segments, so a batch is all or nothing on disk too (the `MORE` flag,
//! see [`crate::queue`]).
//!
//! Compaction runs here as well, between groups, because it appends to the
//! head: it copies the live records of a sparse sealed segment to the head,
//! syncs, then commits the move in the index and deletes the old segment.
//!
//! Must not know: tenants' quotas (checked before a job is sent), payloads'
//! meaning, or the ready/in-flight state of records (the index's).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write as _};
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::format::{self, FLAG_MORE};
use super::index::{ACK_KIND_DROP, Entry, Move, Segment, StreamKey, seg_path};
use super::spare::{SPARE_FILE, Spares};
use super::{AppendError, QueueError, RecordId, Shared};

/// Largest amount of appended data committed in one fsync: bounds the
/// latency a group adds to its first member.
const GROUP_MAX_BYTES: u64 = 64 << 20;
/// How often the writer looks for a segment worth compacting.
const COMPACT_INTERVAL: Duration = Duration::from_secs(1);
/// A sealed segment is compacted once less than this fraction of its bytes
/// is live: disk use stays under ~2× the live data (plus the head).
const COMPACT_BELOW: f64 = 0.5;
/// ... and once it has been sealed this long, so that a backlog that is
/// draining normally is deleted rather than copied.
const COMPACT_MIN_AGE: Duration = Duration::from_secs(30);
/// Above this fraction of `max_bytes` on disk, any sealed segment under
/// [`PRESSURE_BELOW`] live is compacted, oldest-sparsest first, at once.
const PRESSURE_AT: f64 = 0.9;
const PRESSURE_BELOW: f64 = 0.9;
/// Compaction writes its copies in chunks of this size.
const COMPACT_CHUNK: usize = 4 << 20;
/// Sequence numbers are reserved on disk (the `seq` file) this many at a
/// time, so a seq is never reused even once every record that had it, and
/// its ack, are deleted: one small fsync per million appends.
const SEQ_BLOCK: u64 = 1 << 20;

/// One record ready to write (encoded by the appending task).
pub(crate) struct Pending {
    pub(crate) key: StreamKey,
    pub(crate) bytes: Vec<u8>,
    pub(crate) items: u32,
    pub(crate) created_ms: i64,
}

pub(crate) type AppendReply = oneshot::Sender<Result<Vec<RecordId>, AppendError>>;

/// Work for the writer.
pub(crate) enum Job {
    Append {
        records: Vec<Pending>,
        reply: AppendReply,
    },
    /// Compact every sealed segment holding dead bytes; replies with how
    /// many segments were compacted.
    Compact {
        reply: oneshot::Sender<Result<u64, QueueError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

struct Head {
    id: u32,
    /// Written at its cursor, which is always at `len` (not `O_APPEND`: a
    /// written-ahead file is longer than its data).
    file: File,
    len: u64,
    /// How much of `len` has been `fdatasync`ed.
    synced: u64,
    /// Written ahead with zeros (see [`super::spare`]): the zeroed tail
    /// beyond `len` is cut when the segment is sealed or the queue closed.
    written_ahead: bool,
}

impl Head {
    /// The length to account for a head abandoned after an error, once
    /// cut back to `keep` and synced (what was written after `keep` is
    /// unsynced: on a written-ahead file, a power loss could leave it torn
    /// in any order, holes included, in what is no longer the last
    /// segment, whose payloads recovery does not check). If the cut fails,
    /// what the file holds.
    fn cut_back(&self, keep: u64) -> u64 {
        match self.file.set_len(keep).and_then(|()| self.file.sync_data()) {
            Ok(()) => keep,
            Err(e) => {
                tracing::warn!(segment = self.id, error = %e, "cannot cut a failed queue segment back to its synced length");
                if self.written_ahead {
                    self.len
                } else {
                    self.file.metadata().map_or(self.len, |m| m.len())
                }
            }
        }
    }

    /// Cuts a written-ahead head's zeroed tail (not synced: recovery tells
    /// a zeroed tail from a torn one if this is lost).
    fn cut_tail(&self) {
        if self.written_ahead
            && let Err(e) = self.file.set_len(self.len)
        {
            tracing::warn!(segment = self.id, error = %e, "cannot cut a queue segment's zeroed tail");
        }
    }
}

/// Appends staged for the current head, not yet written.
#[derive(Default)]
struct Staged {
    bufs: Vec<Vec<u8>>,
    entries: Vec<(StreamKey, Entry)>,
    reserved: Vec<(Arc<str>, u64)>,
    replies: Vec<(AppendReply, Vec<RecordId>)>,
    /// Head length before the first staged byte.
    start_len: u64,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Job>,
    head: Option<Head>,
    next_seq: u64,
    /// Seqs below this are reserved in the `seq` file.
    seq_limit: u64,
    next_seg: u32,
    last_compact: Instant,
    /// Written-ahead segments (`None` when `Limits::preallocate` is off).
    spares: Option<Spares>,
}

/// `write_all` over several buffers (std's `write_all_vectored` is unstable).
fn write_all_vectored(file: &mut File, bufs: &[Vec<u8>]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// fsyncs a directory, so a file created (or deleted) in it survives power loss.
pub(crate) fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Name of the file holding the seq reservation (one ack-style entry).
pub(crate) const SEQ_FILE: &str = "seq";

/// Durably replaces the `seq` file (write a temporary, fsync, rename,
/// fsync the directory).
fn write_seq_file(dir: &std::path::Path, limit: u64) -> std::io::Result<()> {
    let tmp = dir.join("seq.tmp");
    let mut buf = Vec::with_capacity(format::ACK_ENTRY_LEN);
    format::encode_ack(limit, &mut buf);
    let mut f = File::create(&tmp)?;
    f.write_all(&buf)?;
    f.sync_data()?;
    std::fs::rename(&tmp, dir.join(SEQ_FILE))?;
    sync_dir(dir)
}

fn copy_err(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: Receiver<Job>,
        next_seq: u64,
        next_seg: u32,
    ) -> Writer {
        Writer {
            rx,
            head: None,
            next_seq,
            seq_limit: next_seq,
            next_seg,
            last_compact: Instant::now(),
            spares: shared
                .limits
                .preallocate
                .then(|| Spares::new(shared.dir.clone())),
            shared,
        }
    }

    /// The thread body: runs until `Close` or every sender is gone.
    pub(crate) fn run(mut self) {
        loop {
            let first = match self.rx.recv_timeout(COMPACT_INTERVAL) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    self.maybe_compact();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut group = Vec::new();
            let mut bytes = 0u64;
            let mut control = None;
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Append { records, reply } => {
                        bytes += records.iter().map(|p| p.bytes.len() as u64).sum::<u64>();
                        group.push((records, reply));
                    }
                    other => {
                        control = Some(other);
                        break;
                    }
                }
                if bytes < GROUP_MAX_BYTES {
                    next = self.rx.try_recv().ok();
                }
            }
            if !group.is_empty() {
                self.append_group(group);
            }
            match control {
                Some(Job::Compact { reply }) => {
                    let _ = reply.send(self.compact_all());
                }
                Some(Job::Close { reply }) => {
                    self.close();
                    let _ = reply.send(());
                    return;
                }
                Some(Job::Append { .. }) | None => {}
            }
            if self.last_compact.elapsed() >= COMPACT_INTERVAL {
                self.maybe_compact();
            }
        }
        self.close();
    }

    fn close(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        // Jobs that raced with the close flag.
        while let Ok(job) = self.rx.try_recv() {
            match job {
                Job::Append { records, reply } => {
                    let mut s = self.shared.state.lock();
                    for p in &records {
                        s.unreserve(&p.key.0, p.bytes.len() as u64);
                    }
                    drop(s);
                    let _ = reply.send(Err(AppendError::Closed));
                }
                Job::Compact { reply } => {
                    let _ = reply.send(Err(QueueError::Closed));
                }
                Job::Close { reply } => {
                    let _ = reply.send(());
                }
            }
        }
        if let Some(h) = &self.head {
            h.cut_tail();
            if let Err(e) = h.file.sync_data() {
                tracing::warn!(segment = h.id, error = %e, "cannot sync queue head segment at close");
            }
        }
        if let Some(s) = &mut self.spares {
            s.close();
        }
    }

    fn segment_bytes(&self) -> u64 {
        self.shared.limits.segment_bytes
    }

    /// Makes a new head segment (sealing the current one, which must have
    /// nothing staged): the written-ahead spare if one is ready, else a new
    /// empty file.
    fn roll(&mut self) -> std::io::Result<()> {
        if let Some(old) = self.head.take() {
            old.cut_tail();
            self.shared.state.lock().seal(old.id);
        }
        let dir = self.shared.dir.clone();
        let spare_len = self.segment_bytes();
        let mut spare = self.spares.as_mut().and_then(|s| s.take(spare_len));
        for _ in 0..1000 {
            let id = self.next_seg;
            self.next_seg = id.checked_add(1).ok_or_else(|| {
                std::io::Error::other("queue segment ids exhausted (4 billion segments)")
            })?;
            let path = seg_path(&dir, id);
            // `rename` would replace a file of that name; `exists` is enough
            // because the directory is locked and only this thread creates
            // segments in it.
            if path.exists() {
                // Never stall on a name collision (Vector #19155).
                tracing::warn!(path = %path.display(), "queue segment name taken; skipping it");
                continue;
            }
            let mut opened = None;
            if let Some(f) = spare.take() {
                match std::fs::rename(dir.join(SPARE_FILE), &path) {
                    Ok(()) => opened = Some((f, true)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot use the queue's written-ahead segment; creating a plain one");
                    }
                }
            }
            let (file, written_ahead) = match opened {
                Some(x) => x,
                None => match OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(f) => (f, false),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        tracing::warn!(path = %path.display(), "queue segment name taken; skipping it");
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let setup = File::open(&path).and_then(|r| sync_dir(&dir).map(|()| r));
            let reader = match setup {
                Ok(r) => r,
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
            };
            if written_ahead && let Some(s) = &mut self.spares {
                s.request_next(spare_len);
            }
            self.shared
                .state
                .lock()
                .add_segment(id, Segment::new(reader, 0, false));
            self.head = Some(Head {
                id,
                file,
                len: 0,
                synced: 0,
                written_ahead,
            });
            tracing::debug!(segment = id, written_ahead, "queue segment opened");
            return Ok(());
        }
        Err(std::io::Error::other("no free queue segment name"))
    }

    /// Makes sure `n` more seqs are below the limit persisted in `seq`.
    fn reserve_seqs(&mut self, n: u64) -> std::io::Result<()> {
        if self.next_seq + n <= self.seq_limit {
            return Ok(());
        }
        let limit = self.next_seq + n + SEQ_BLOCK;
        write_seq_file(&self.shared.dir, limit)?;
        self.seq_limit = limit;
        Ok(())
    }

    fn append_group(&mut self, jobs: Vec<(Vec<Pending>, AppendReply)>) {
        let mut st = Staged::default();
        for (records, reply) in jobs {
            if let Err(e) = self.reserve_seqs(records.len() as u64) {
                tracing::warn!(error = %e, "cannot reserve queue sequence numbers; appends rejected");
                self.fail(records, reply, &e);
                continue;
            }
            let job_len: u64 = records.iter().map(|p| p.bytes.len() as u64).sum();
            let fits = self
                .head
                .as_ref()
                .is_some_and(|h| h.len == 0 || h.len + job_len <= self.segment_bytes());
            if !fits {
                if !st.replies.is_empty() {
                    self.flush(&mut st);
                }
                if let Err(e) = self.roll() {
                    tracing::warn!(error = %e, "cannot open a queue segment; appends rejected");
                    self.fail(records, reply, &e);
                    continue;
                }
            }
            let Some(head) = self.head.as_mut() else {
                // Invariant: roll() succeeded just above, or the head fit.
                self.fail(records, reply, &std::io::Error::other("no head segment"));
                continue;
            };
            if st.replies.is_empty() {
                st.start_len = head.len;
            }
            let n = records.len();
            let mut ids = Vec::with_capacity(n);
            for (i, mut p) in records.into_iter().enumerate() {
                let seq = self.next_seq;
                self.next_seq += 1;
                format::stamp(&mut p.bytes, seq, if i + 1 < n { FLAG_MORE } else { 0 });
                let len = p.bytes.len() as u64;
                // Offsets and lengths fit u32: segment_bytes < 4 GiB and a
                // job never exceeds it (checked in Limits::validate / append).
                st.entries.push((
                    p.key.clone(),
                    Entry {
                        seq,
                        created_ms: p.created_ms,
                        seg: head.id,
                        offset: head.len as u32,
                        len: len as u32,
                        items: p.items,
                    },
                ));
                st.reserved.push((p.key.0, len));
                st.bufs.push(p.bytes);
                head.len += len;
                ids.push(RecordId(seq));
            }
            st.replies.push((reply, ids));
        }
        if !st.replies.is_empty() {
            self.flush(&mut st);
        }
    }

    fn fail(&self, records: Vec<Pending>, reply: AppendReply, e: &std::io::Error) {
        let mut s = self.shared.state.lock();
        for p in &records {
            s.unreserve(&p.key.0, p.bytes.len() as u64);
        }
        drop(s);
        let _ = reply.send(Err(AppendError::Io(copy_err(e))));
    }

    /// Writes and syncs the staged appends, then publishes and completes
    /// them; on error fails them all and abandons the head segment.
    fn flush(&mut self, st: &mut Staged) {
        let Some(head) = self.head.as_mut() else {
            return;
        };
        let started = Instant::now();
        let res = write_all_vectored(&mut head.file, &st.bufs).and_then(|()| head.file.sync_data());
        st.bufs.clear();
        match res {
            Ok(()) => {
                if let Some(observe) = self.shared.commit_observer.get() {
                    observe(started.elapsed());
                }
                head.synced = head.len;
                let mut s = self.shared.state.lock();
                s.grow(head.id, head.len);
                for (k, e) in st.entries.drain(..) {
                    s.insert(&k, e);
                }
                for (t, b) in st.reserved.drain(..) {
                    s.unreserve(&t, b);
                }
                drop(s);
                for (reply, ids) in st.replies.drain(..) {
                    let _ = reply.send(Ok(ids));
                }
                self.shared.notify_data();
            }
            Err(e) => {
                tracing::warn!(segment = head.id, error = %e, "queue write failed; appends rejected, moving to a new segment");
                let len = head.cut_back(st.start_len);
                let id = head.id;
                self.head = None;
                let mut s = self.shared.state.lock();
                s.grow(id, len);
                for (t, b) in st.reserved.drain(..) {
                    s.unreserve(&t, b);
                }
                s.seal(id);
                drop(s);
                st.entries.clear();
                for (reply, _) in st.replies.drain(..) {
                    let _ = reply.send(Err(AppendError::Io(copy_err(&e))));
                }
            }
        }
    }

    fn maybe_compact(&mut self) {
        self.last_compact = Instant::now();
        let pick = {
            let s = self.shared.state.lock();
            let pressure = s.disk_bytes as f64 > self.shared.limits.max_bytes as f64 * PRESSURE_AT;
            if pressure {
                s.compaction_candidate(PRESSURE_BELOW, None)
            } else {
                s.compaction_candidate(COMPACT_BELOW, Some(COMPACT_MIN_AGE))
            }
        };
        if let Some(id) = pick
            && let Err(e) = self.compact_segment(id)
        {
            tracing::warn!(segment = id, error = %e, "queue compaction failed; segment kept");
        }
        self.last_compact = Instant::now();
    }

    fn compact_all(&mut self) -> Result<u64, QueueError> {
        let ids: Vec<u32> = {
            let s = self.shared.state.lock();
            s.segments
                .iter()
                .filter(|(_, seg)| seg.sealed_at.is_some() && seg.live_bytes < seg.len)
                .map(|(id, _)| *id)
                .collect()
        };
        let mut n = 0;
        for id in ids {
            if !self.shared.state.lock().segments.contains_key(&id) {
                continue;
            }
            self.compact_segment(id).map_err(|source| QueueError::Io {
                path: seg_path(&self.shared.dir, id),
                source,
            })?;
            n += 1;
        }
        Ok(n)
    }

    /// Copies the live records of sealed segment `from` to the head, syncs,
    /// then commits (index points at the copies) and deletes `from`.
    fn compact_segment(&mut self, from: u32) -> std::io::Result<()> {
        let (file, live) = {
            let mut s = self.shared.state.lock();
            let Some(seg) = s.segments.get_mut(&from) else {
                return Ok(());
            };
            seg.compacting = true;
            let file = seg.file.clone();
            (file, s.live_in(from))
        };
        let before = live.len();
        let mut moves = Vec::with_capacity(live.len());
        let mut dest: Vec<u32> = Vec::new();
        let mut chunk: Vec<Vec<u8>> = Vec::new();
        let mut chunk_bytes = 0usize;
        let result = (|| -> std::io::Result<()> {
            for (key, e) in live {
                let mut buf = vec![0u8; e.len as usize];
                file.read_exact_at(&mut buf, u64::from(e.offset))?;
                let header = match format::verify(&buf) {
                    Ok(v) if v.header.seq == e.seq => v.header,
                    _ => {
                        self.shared.record_corrupt(from, e.offset, e.seq);
                        self.shared.state.lock().drop_corrupt_anywhere(&key, e.seq);
                        continue;
                    }
                };
                if header.flags & FLAG_MORE != 0 {
                    format::stamp(&mut buf, e.seq, 0);
                }
                let len = buf.len() as u64;
                let fits = self
                    .head
                    .as_ref()
                    .is_some_and(|h| h.len == 0 || h.len + len <= self.segment_bytes());
                if !fits {
                    self.write_chunk(&mut chunk, true)?;
                    chunk_bytes = 0;
                    self.roll()?;
                }
                let Some(head) = self.head.as_mut() else {
                    return Err(std::io::Error::other("no head segment"));
                };
                if dest.last() != Some(&head.id) {
                    dest.push(head.id);
                    if let Some(s) = self.shared.state.lock().segments.get_mut(&head.id) {
                        s.pinned = true;
                    }
                }
                moves.push(Move {
                    key,
                    seq: e.seq,
                    seg: head.id,
                    offset: head.len as u32,
                });
                head.len += len;
                chunk_bytes += buf.len();
                chunk.push(buf);
                if chunk_bytes >= COMPACT_CHUNK {
                    self.write_chunk(&mut chunk, false)?;
                    chunk_bytes = 0;
                }
            }
            self.write_chunk(&mut chunk, true)
        })();
        let mut s = self.shared.state.lock();
        match result {
            Ok(()) => {
                let moved = moves.len();
                s.commit_moves(from, moves, &dest);
                drop(s);
                tracing::info!(
                    segment = from,
                    moved,
                    corrupt = before - moved,
                    "queue segment compacted"
                );
                Ok(())
            }
            Err(e) => {
                // The copies already written are dead (never indexed): drop
                // them in their own segments' ack files, so that none of
                // them outlives the original's ack.
                let mut drops: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
                for m in &moves {
                    format::encode_ack(m.seq | ACK_KIND_DROP, drops.entry(m.seg).or_default());
                }
                s.write_acks(drops);
                // Synced: a copy that outlived its DROP could win over the
                // original at recovery.
                if let Err(e) = s.sync_acks() {
                    tracing::warn!(error = %e, "cannot sync queue ack files after a failed compaction");
                }
                if let Some(seg) = s.segments.get_mut(&from) {
                    seg.compacting = false;
                    seg.compact_failed = true;
                }
                for id in &dest {
                    if let Some(seg) = s.segments.get_mut(id) {
                        seg.pinned = false;
                    }
                }
                for id in dest {
                    s.reap(id);
                }
                s.reap(from);
                drop(s);
                if let Some(h) = self.head.take() {
                    let len = h.cut_back(h.synced);
                    let mut s = self.shared.state.lock();
                    s.grow(h.id, len);
                    s.seal(h.id);
                }
                Err(e)
            }
        }
    }

    /// Writes compaction copies to the head (and syncs if `sync`).
    fn write_chunk(&mut self, chunk: &mut Vec<Vec<u8>>, sync: bool) -> std::io::Result<()> {
        let Some(head) = self.head.as_mut() else {
            return Ok(());
        };
        if !chunk.is_empty() {
            write_all_vectored(&mut head.file, chunk)?;
            chunk.clear();
        }
        if sync {
            head.file.sync_data()?;
            head.synced = head.len;
        }
        self.shared.state.lock().grow(head.id, head.len);
        Ok(())
    }
}
