//! The in-memory index of the queue: where each live record is on disk,
//! which are in flight, per-tenant and per-segment accounting, and the ack
//! files.
//!
//! Owns: the per-(tenant, stream) FIFO of ready records, the in-flight set,
//! byte/item counters, quota reservations and the map of segments with
//! their live counts. It writes ack entries and deletes segment files whose
//! records are all gone, because both must happen under the same lock as
//! the index change they record (see "Ack files" in [`crate::queue`]).
//!
//! Must not know: payload contents, the writer's head file, or what a
//! stream code means. Everything here runs under one `parking_lot::Mutex`
//! held for short, bounded steps; the only I/O under it is appending a few
//! ack entries and unlinking files.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::format::{self, HEADER_LEN};
use super::{AppendError, Limits, RecordId, Stats};

/// A (tenant, stream code) pair: the unit of ordering.
pub(crate) type StreamKey = (Arc<str>, u8);

/// A summary of a stream's ready records (see `State::ready_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadyInfo {
    /// Ready records counted (all of them, or until enough bytes or items).
    pub(crate) records: u64,
    /// Their payload bytes (as stored).
    pub(crate) bytes: u64,
    /// Their items.
    pub(crate) items: u64,
    /// The earliest `created_ms` among them.
    pub(crate) oldest_created_ms: i64,
}

/// What the index keeps per live record: 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) created_ms: i64,
    pub(crate) seg: u32,
    pub(crate) offset: u32,
    /// Framed length (header + tenant + payload).
    pub(crate) len: u32,
    pub(crate) items: u32,
}

impl Entry {
    pub(crate) fn payload_len(&self, tenant: &str) -> u64 {
        u64::from(self.len).saturating_sub((HEADER_LEN + tenant.len()) as u64)
    }
}

/// Ack-file entry kinds (the top bit of the stored u64).
pub(crate) const ACK_KIND_DROP: u64 = 1 << 63;

/// Ack-file path of a segment.
pub(crate) fn ack_path(dir: &Path, seg: u32) -> PathBuf {
    dir.join(format!("{seg:08x}.ack"))
}

/// Segment data-file path.
pub(crate) fn seg_path(dir: &Path, seg: u32) -> PathBuf {
    dir.join(format!("{seg:08x}.seg"))
}

/// One segment file as the index sees it.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Read handle (payloads are read with `pread`).
    pub(crate) file: Arc<File>,
    /// Bytes in the file (durably written, or being written by the writer).
    pub(crate) len: u64,
    pub(crate) live_records: u64,
    pub(crate) live_bytes: u64,
    /// `None` while this is the head segment the writer appends to.
    pub(crate) sealed_at: Option<Instant>,
    /// Receiving compaction copies not yet committed: not to be deleted.
    pub(crate) pinned: bool,
    /// Being compacted; not picked again.
    pub(crate) compacting: bool,
    /// Compaction of this segment failed once; not retried until restart.
    pub(crate) compact_failed: bool,
    /// The ack file, opened on first use in append mode.
    pub(crate) ack: Option<File>,
    /// Its length up to the last whole entry written: a write that fails
    /// part way is cut back to it.
    pub(crate) ack_len: u64,
}

impl Segment {
    pub(crate) fn new(file: File, len: u64, sealed: bool) -> Segment {
        Segment {
            file: Arc::new(file),
            len,
            live_records: 0,
            live_bytes: 0,
            sealed_at: sealed.then(Instant::now),
            pinned: false,
            compacting: false,
            compact_failed: false,
            ack: None,
            ack_len: 0,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Acc {
    pub(crate) records: u64,
    pub(crate) items: u64,
    /// Payload bytes.
    pub(crate) bytes: u64,
    /// Framed bytes on disk.
    pub(crate) disk: u64,
}

impl Acc {
    fn add(&mut self, e: &Entry, payload: u64) {
        self.records += 1;
        self.items += u64::from(e.items);
        self.bytes += payload;
        self.disk += u64::from(e.len);
    }

    fn sub(&mut self, e: &Entry, payload: u64) {
        self.records = self.records.saturating_sub(1);
        self.items = self.items.saturating_sub(u64::from(e.items));
        self.bytes = self.bytes.saturating_sub(payload);
        self.disk = self.disk.saturating_sub(u64::from(e.len));
    }
}

#[derive(Debug, Default)]
struct Tenant {
    acc: Acc,
    /// Framed bytes of appends accepted but not yet durable.
    reserved: u64,
    /// Stream codes with records.
    streams: Vec<u8>,
}

#[derive(Debug, Default)]
struct Stream {
    /// Ready records, ascending `seq`.
    ready: VecDeque<Entry>,
    in_flight: BTreeMap<u64, Entry>,
    /// Tick of the last `take`, for fairness.
    last_served: u64,
}

impl Stream {
    fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.in_flight.is_empty()
    }

    /// The entry appended first, among ready and in-flight ones.
    fn oldest(&self) -> Option<&Entry> {
        match (self.ready.front(), self.in_flight.values().next()) {
            (Some(a), Some(b)) => Some(if a.seq <= b.seq { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    fn insert_ready(&mut self, e: Entry) {
        match self.ready.back() {
            Some(last) if last.seq > e.seq => {
                let at = self.ready.partition_point(|x| x.seq < e.seq);
                self.ready.insert(at, e);
            }
            _ => self.ready.push_back(e),
        }
    }

    fn find_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        if let Some(e) = self.in_flight.get_mut(&seq) {
            return Some(e);
        }
        let at = self.ready.partition_point(|x| x.seq < seq);
        self.ready.get_mut(at).filter(|e| e.seq == seq)
    }
}

/// One taken record: where to read it.
pub(crate) struct ToRead {
    pub(crate) entry: Entry,
    pub(crate) file: Option<Arc<File>>,
}

/// A move done by compaction, to commit.
pub(crate) struct Move {
    pub(crate) key: StreamKey,
    pub(crate) seq: u64,
    pub(crate) seg: u32,
    pub(crate) offset: u32,
}

/// The index.
#[derive(Debug)]
pub(crate) struct State {
    dir: PathBuf,
    streams: HashMap<StreamKey, Stream>,
    tenants: HashMap<Arc<str>, Tenant>,
    in_flight: HashMap<u64, StreamKey>,
    pub(crate) segments: BTreeMap<u32, Segment>,
    total: Acc,
    /// Sum of segment file lengths.
    pub(crate) disk_bytes: u64,
    /// Framed bytes reserved by appends not yet durable.
    reserved: u64,
    /// Tenants whose data is held (not connected): their live bytes count
    /// against `held_max_bytes`, not against `max_bytes` for the others.
    held: HashSet<Arc<str>>,
    /// Live framed bytes of the held tenants.
    held_live: u64,
    /// Bytes the queue's budget holds for files beside it (dead letters).
    pub(crate) outside: u64,
    tick: u64,
    /// Segments gone from the index whose files are still to be deleted:
    /// [`StateGuard`] deletes them once the lock is released.
    doomed: Vec<u32>,
}

/// The index behind its lock. Deleting a drained segment (unlinking a file
/// of up to `segment_bytes`, whose cached pages the kernel drops then) can
/// take milliseconds; it happens after the lock is released, so appends,
/// which need the lock, never wait for it.
pub(crate) struct StateCell {
    inner: parking_lot::Mutex<State>,
}

impl StateCell {
    pub(crate) fn new(state: State) -> StateCell {
        StateCell {
            inner: parking_lot::Mutex::new(state),
        }
    }

    pub(crate) fn lock(&self) -> StateGuard<'_> {
        StateGuard {
            guard: Some(self.inner.lock()),
        }
    }
}

/// A locked index; on drop, unlocks it, then deletes the files of the
/// segments it reaped.
pub(crate) struct StateGuard<'a> {
    guard: Option<parking_lot::MutexGuard<'a, State>>,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        // Present until drop.
        self.guard.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard.as_deref_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        if guard.doomed.is_empty() {
            return;
        }
        let doomed = std::mem::take(&mut guard.doomed);
        let dir = guard.dir.clone();
        drop(guard);
        delete_segment_files(&dir, &doomed);
    }
}

/// Deletes reaped segments' files: the data file first, then the ack file,
/// so a crash in between leaves an orphan ack file (removed at recovery),
/// never a data file whose acks were lost.
pub(crate) fn delete_segment_files(dir: &Path, ids: &[u32]) {
    for &id in ids {
        let seg = seg_path(dir, id);
        match std::fs::remove_file(&seg) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %seg.display(), error = %e, "cannot delete drained queue segment");
                continue;
            }
        }
        let ack = ack_path(dir, id);
        if let Err(e) = std::fs::remove_file(&ack)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %ack.display(), error = %e, "cannot delete queue ack file");
        }
        tracing::debug!(segment = id, "queue segment deleted");
    }
}

impl State {
    pub(crate) fn new(dir: PathBuf) -> State {
        State {
            doomed: Vec::new(),
            dir,
            streams: HashMap::new(),
            tenants: HashMap::new(),
            in_flight: HashMap::new(),
            segments: BTreeMap::new(),
            total: Acc::default(),
            disk_bytes: 0,
            held: HashSet::new(),
            held_live: 0,
            outside: 0,
            reserved: 0,
            tick: 0,
        }
    }

    /// Interns a tenant id so every record of a tenant shares one `Arc`.
    pub(crate) fn intern(&self, tenant: &str) -> Arc<str> {
        match self.tenants.get_key_value(tenant) {
            Some((k, _)) => k.clone(),
            None => Arc::from(tenant),
        }
    }

    /// Checks quota and budget for `per_tenant` framed bytes and reserves
    /// them until [`State::unreserve`].
    pub(crate) fn reserve(
        &mut self,
        per_tenant: &[(&str, u64)],
        limits: &Limits,
    ) -> Result<(), AppendError> {
        self.check(per_tenant, limits)?;
        let total: u64 = per_tenant.iter().map(|(_, b)| b).sum();
        for (tenant, bytes) in per_tenant {
            let key = self.intern(tenant);
            self.tenants.entry(key).or_default().reserved += bytes;
        }
        self.reserved += total;
        Ok(())
    }

    /// Whether an append for `tenant` is refused now whatever its size:
    /// not even the smallest record fits its quota or its budget.
    pub(crate) fn admits(&self, tenant: &str, limits: &Limits) -> Result<(), AppendError> {
        let smallest = (HEADER_LEN + tenant.len() + 1) as u64;
        self.check(&[(tenant, smallest)], limits)
    }

    /// Whether `per_tenant` framed bytes fit the quotas and budgets now.
    pub(crate) fn check(
        &self,
        per_tenant: &[(&str, u64)],
        limits: &Limits,
    ) -> Result<(), AppendError> {
        let total: u64 = per_tenant.iter().map(|(_, b)| b).sum();
        for (tenant, bytes) in per_tenant {
            let used = self
                .tenants
                .get(*tenant)
                .map_or(0, |t| t.acc.disk + t.reserved);
            if used + bytes > limits.tenant_max_bytes {
                return Err(AppendError::TenantFull {
                    tenant_bytes: used,
                    limit: limits.tenant_max_bytes,
                    retry_after: super::TENANT_FULL_RETRY_AFTER,
                });
            }
        }
        // Held tenants' data is bounded apart: it never fills the budget of
        // the tenants still delivering (README.md "Consent: disconnect,
        // reconnect, uninstall").
        let full = || AppendError::DiskFull {
            retry_after: super::DISK_FULL_RETRY_AFTER,
        };
        let held_total: u64 = per_tenant
            .iter()
            .filter(|(t, _)| self.held.contains(*t))
            .map(|(_, b)| b)
            .sum();
        if self.held_live + held_total > limits.held_max_bytes {
            return Err(full());
        }
        // Within max_bytes: the segments (less the held tenants' data), the
        // files beside them (dead letters) and the segments written ahead.
        let budget = limits.max_bytes.saturating_sub(limits.written_ahead());
        let others = self.disk_bytes.saturating_sub(self.held_live) + self.outside;
        if others + self.reserved + (total - held_total) > budget
            || self.disk_bytes + self.outside + self.reserved + total
                > budget + limits.held_max_bytes
        {
            return Err(full());
        }
        Ok(())
    }

    pub(crate) fn unreserve(&mut self, tenant: &str, bytes: u64) {
        self.reserved = self.reserved.saturating_sub(bytes);
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.reserved = t.reserved.saturating_sub(bytes);
        }
        self.gc_tenant(tenant);
    }

    /// Adds a durable record to the back of its stream.
    pub(crate) fn insert(&mut self, key: &StreamKey, e: Entry) {
        let payload = e.payload_len(&key.0);
        self.total.add(&e, payload);
        if self.held.contains(&key.0) {
            self.held_live += u64::from(e.len);
        }
        let tenant = self.tenants.entry(key.0.clone()).or_default();
        tenant.acc.add(&e, payload);
        if !tenant.streams.contains(&key.1) {
            tenant.streams.push(key.1);
        }
        if let Some(seg) = self.segments.get_mut(&e.seg) {
            seg.live_records += 1;
            seg.live_bytes += u64::from(e.len);
        }
        self.streams.entry(key.clone()).or_default().insert_ready(e);
    }

    /// Grows a segment's recorded length (the writer wrote to it).
    pub(crate) fn grow(&mut self, seg: u32, new_len: u64) {
        if let Some(s) = self.segments.get_mut(&seg) {
            self.disk_bytes = self.disk_bytes.saturating_sub(s.len) + new_len;
            s.len = new_len;
        }
    }

    pub(crate) fn add_segment(&mut self, id: u32, seg: Segment) {
        self.disk_bytes += seg.len;
        self.segments.insert(id, seg);
    }

    /// Seals the head segment (the writer rolled past it).
    pub(crate) fn seal(&mut self, id: u32) {
        if let Some(s) = self.segments.get_mut(&id) {
            s.sealed_at = Some(Instant::now());
        }
        self.reap(id);
    }

    /// Drops segment `id` if it is sealed, has no live record, and is
    /// neither being compacted (its acks must outlive the uncommitted
    /// copies) nor receiving compaction copies. Its files are deleted once
    /// the lock is released ([`StateGuard`]), or by [`State::take_doomed`]'s
    /// caller.
    pub(crate) fn reap(&mut self, id: u32) {
        let Some(s) = self.segments.get(&id) else {
            return;
        };
        if s.sealed_at.is_none() || s.pinned || s.compacting || s.live_records != 0 {
            return;
        }
        if let Some(s) = self.segments.remove(&id) {
            self.disk_bytes = self.disk_bytes.saturating_sub(s.len);
        }
        self.doomed.push(id);
    }

    /// The segments reaped and not yet deleted (for callers holding a bare
    /// `State`, i.e. recovery).
    pub(crate) fn take_doomed(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.doomed)
    }

    /// Deletes every sealed segment with no live record.
    pub(crate) fn reap_all(&mut self) {
        let ids: Vec<u32> = self.segments.keys().copied().collect();
        for id in ids {
            self.reap(id);
        }
    }

    /// Appends encoded ack entries to segment ack files (no fsync: see the
    /// module doc, "Ack files").
    pub(crate) fn write_acks(&mut self, per_seg: BTreeMap<u32, Vec<u8>>) {
        for (id, buf) in per_seg {
            let dir = &self.dir;
            let Some(seg) = self.segments.get_mut(&id) else {
                continue;
            };
            if seg.ack.is_none() {
                let opened = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(ack_path(dir, id))
                    .and_then(|f| Ok((f.metadata()?.len(), f)));
                match opened {
                    Ok((len, f)) => {
                        seg.ack = Some(f);
                        seg.ack_len = len;
                    }
                    Err(e) => {
                        tracing::warn!(segment = id, error = %e, "cannot open queue ack file; acked records may be redelivered after a restart");
                        continue;
                    }
                }
            }
            let Some(f) = seg.ack.as_mut() else {
                continue;
            };
            match f.write_all(&buf) {
                Ok(()) => seg.ack_len += buf.len() as u64,
                Err(e) => {
                    // Part of it may be written: cut back to whole entries,
                    // so the entries written after it stay on the grid.
                    let cut = f.set_len(seg.ack_len);
                    tracing::warn!(segment = id, error = %e, cut_back = cut.is_ok(), "cannot write queue ack file; acked records may be redelivered after a restart");
                }
            }
        }
    }

    /// fsyncs every open ack file.
    pub(crate) fn sync_acks(&self) -> std::io::Result<()> {
        for seg in self.segments.values() {
            if let Some(f) = &seg.ack {
                f.sync_data()?;
            }
        }
        Ok(())
    }

    /// Removes a record from the accounting (not from its stream).
    fn account_remove(&mut self, key: &StreamKey, e: &Entry, acks: &mut BTreeMap<u32, Vec<u8>>) {
        let payload = e.payload_len(&key.0);
        self.total.sub(e, payload);
        if self.held.contains(&key.0) {
            self.held_live = self.held_live.saturating_sub(u64::from(e.len));
        }
        if let Some(t) = self.tenants.get_mut(&key.0) {
            t.acc.sub(e, payload);
        }
        if let Some(seg) = self.segments.get_mut(&e.seg) {
            seg.live_records = seg.live_records.saturating_sub(1);
            seg.live_bytes = seg.live_bytes.saturating_sub(u64::from(e.len));
        }
        format::encode_ack(e.seq, acks.entry(e.seg).or_default());
    }

    fn gc_stream(&mut self, key: &StreamKey) {
        if self.streams.get(key).is_some_and(Stream::is_empty) {
            self.streams.remove(key);
            if let Some(t) = self.tenants.get_mut(&key.0) {
                t.streams.retain(|c| *c != key.1);
            }
            self.gc_tenant(&key.0);
        }
    }

    fn gc_tenant(&mut self, tenant: &str) {
        if self
            .tenants
            .get(tenant)
            .is_some_and(|t| t.streams.is_empty() && t.reserved == 0 && t.acc.records == 0)
        {
            self.tenants.remove(tenant);
        }
    }

    fn finish_removal(&mut self, acks: BTreeMap<u32, Vec<u8>>) {
        let segs: Vec<u32> = acks.keys().copied().collect();
        self.write_acks(acks);
        for id in segs {
            self.reap(id);
        }
    }

    /// What is ready in one stream, counting from the front until `enough`
    /// payload bytes (so the cost is bounded by one batch, not the backlog).
    pub(crate) fn ready_info(
        &self,
        tenant: &str,
        stream: u8,
        enough_bytes: u64,
        enough_items: u64,
    ) -> Option<ReadyInfo> {
        let (key, _) = self.tenants.get_key_value(tenant)?;
        let s = self.streams.get(&(key.clone(), stream))?;
        let front = s.ready.front()?;
        let mut info = ReadyInfo {
            records: 0,
            bytes: 0,
            items: 0,
            oldest_created_ms: front.created_ms,
        };
        for e in &s.ready {
            info.records += 1;
            info.bytes += e.payload_len(tenant);
            info.items += u64::from(e.items);
            info.oldest_created_ms = info.oldest_created_ms.min(e.created_ms);
            if info.bytes >= enough_bytes || info.items >= enough_items {
                break;
            }
        }
        Some(info)
    }

    /// Streams with ready records, least recently served first (ties: the
    /// one whose oldest ready record is older).
    pub(crate) fn ready_streams(&self) -> Vec<(Arc<str>, u8)> {
        let mut v: Vec<(u64, u64, &StreamKey)> = self
            .streams
            .iter()
            .filter_map(|(k, s)| s.ready.front().map(|e| (s.last_served, e.seq, k)))
            .collect();
        v.sort_unstable_by_key(|(served, seq, _)| (*served, *seq));
        v.into_iter().map(|(_, _, k)| k.clone()).collect()
    }

    /// Moves up to the limits from the front of a stream to in flight.
    pub(crate) fn take(
        &mut self,
        tenant: &str,
        stream: u8,
        max_records: usize,
        max_bytes: usize,
    ) -> (Option<Arc<str>>, Vec<ToRead>) {
        let Some((key, _)) = self.tenants.get_key_value(tenant) else {
            return (None, Vec::new());
        };
        let key: StreamKey = (key.clone(), stream);
        self.tick += 1;
        let tick = self.tick;
        let Some(s) = self.streams.get_mut(&key) else {
            return (None, Vec::new());
        };
        let mut out = Vec::new();
        let mut bytes = 0u64;
        while out.len() < max_records.max(1) {
            let Some(front) = s.ready.front() else { break };
            let payload = front.payload_len(&key.0);
            if !out.is_empty() && bytes + payload > max_bytes as u64 {
                break;
            }
            let Some(e) = s.ready.pop_front() else { break };
            bytes += payload;
            s.in_flight.insert(e.seq, e);
            out.push(e);
        }
        if !out.is_empty() {
            s.last_served = tick;
        }
        let mut reads = Vec::with_capacity(out.len());
        for e in out {
            self.in_flight.insert(e.seq, key.clone());
            // Invariant: a live entry's segment is in the map (segments are
            // deleted only once they hold no live record); `None` is
            // handled as a corrupt record by the caller.
            let file = self.segments.get(&e.seg).map(|s| s.file.clone());
            reads.push(ToRead { entry: e, file });
        }
        (Some(key.0), reads)
    }

    /// Returns in-flight records to the front of their streams, in order.
    pub(crate) fn release(&mut self, ids: &[RecordId]) -> bool {
        let mut any = false;
        for id in ids {
            let Some(key) = self.in_flight.remove(&id.0) else {
                continue;
            };
            if let Some(s) = self.streams.get_mut(&key)
                && let Some(e) = s.in_flight.remove(&id.0)
            {
                s.insert_ready(e);
                any = true;
            }
        }
        any
    }

    /// Removes in-flight records for good. Returns how many were removed.
    pub(crate) fn ack(&mut self, ids: &[RecordId]) -> u64 {
        let mut acks = BTreeMap::new();
        let mut n = 0;
        for id in ids {
            let Some(key) = self.in_flight.remove(&id.0) else {
                continue;
            };
            let Some(e) = self
                .streams
                .get_mut(&key)
                .and_then(|s| s.in_flight.remove(&id.0))
            else {
                continue;
            };
            self.account_remove(&key, &e, &mut acks);
            self.gc_stream(&key);
            n += 1;
        }
        self.finish_removal(acks);
        n
    }

    /// Marks exactly `held` as the tenants whose data is held, recounting
    /// their live bytes.
    pub(crate) fn set_held(&mut self, held: HashSet<Arc<str>>) {
        self.held_live = held
            .iter()
            .filter_map(|t| self.tenants.get(t))
            .map(|t| t.acc.disk)
            .sum();
        self.held = held;
    }

    /// Drops the ready records at the front of a stream created before
    /// `before_ms` (held data past Datadog's window): (records, items).
    pub(crate) fn expire(&mut self, key: &StreamKey, before_ms: i64) -> (u64, u64) {
        let mut acks = BTreeMap::new();
        let (mut records, mut items) = (0, 0);
        while let Some(e) = self
            .streams
            .get_mut(key)
            .and_then(|s| s.ready.front().copied())
            .filter(|e| e.created_ms < before_ms)
        {
            if let Some(s) = self.streams.get_mut(key) {
                s.ready.pop_front();
            }
            self.account_remove(key, &e, &mut acks);
            records += 1;
            items += u64::from(e.items);
        }
        self.gc_stream(key);
        self.finish_removal(acks);
        (records, items)
    }

    /// Drops every record of a tenant, ready or in flight.
    pub(crate) fn purge_tenant(&mut self, tenant: &str) -> (u64, u64, u64) {
        let Some(t) = self.tenants.get(tenant) else {
            return (0, 0, 0);
        };
        let before = t.acc;
        let Some((name, _)) = self.tenants.get_key_value(tenant) else {
            return (0, 0, 0);
        };
        let name = name.clone();
        let codes = t.streams.clone();
        let mut acks = BTreeMap::new();
        for code in codes {
            let key = (name.clone(), code);
            let Some(s) = self.streams.remove(&key) else {
                continue;
            };
            for e in s.ready.iter().chain(s.in_flight.values()) {
                self.in_flight.remove(&e.seq);
                self.account_remove(&key, e, &mut acks);
            }
            if let Some(t) = self.tenants.get_mut(&name) {
                t.streams.retain(|c| *c != code);
            }
        }
        self.gc_tenant(&name);
        self.finish_removal(acks);
        (before.records, before.items, before.bytes)
    }

    /// Drops one in-flight record found corrupt on read.
    pub(crate) fn drop_corrupt(&mut self, seq: u64) -> Option<Entry> {
        let key = self.in_flight.remove(&seq)?;
        let e = self
            .streams
            .get_mut(&key)
            .and_then(|s| s.in_flight.remove(&seq))?;
        let mut acks = BTreeMap::new();
        self.account_remove(&key, &e, &mut acks);
        self.gc_stream(&key);
        self.finish_removal(acks);
        Some(e)
    }

    /// Drops a record wherever it is (ready or in flight), as corrupt:
    /// used by compaction when a live record fails its checksum.
    pub(crate) fn drop_corrupt_anywhere(&mut self, key: &StreamKey, seq: u64) -> Option<Entry> {
        let s = self.streams.get_mut(key)?;
        let e = if let Some(e) = s.in_flight.remove(&seq) {
            self.in_flight.remove(&seq);
            e
        } else {
            let at = s.ready.partition_point(|x| x.seq < seq);
            if s.ready.get(at).is_some_and(|e| e.seq == seq) {
                s.ready.remove(at)?
            } else {
                return None;
            }
        };
        let mut acks = BTreeMap::new();
        self.account_remove(key, &e, &mut acks);
        self.gc_stream(key);
        self.finish_removal(acks);
        Some(e)
    }

    /// Live records of segment `id`, ascending `seq` (a walk of the whole
    /// index: compaction is rare).
    pub(crate) fn live_in(&self, id: u32) -> Vec<(StreamKey, Entry)> {
        let mut v = Vec::new();
        for (k, s) in &self.streams {
            for e in s.ready.iter().chain(s.in_flight.values()) {
                if e.seg == id {
                    v.push((k.clone(), *e));
                }
            }
        }
        v.sort_unstable_by_key(|(_, e)| e.seq);
        v
    }

    /// Commits compaction moves: points each still-live record at its new
    /// copy; a record acked meanwhile gets an ack entry next to its new
    /// (dead) copy so that copy is never resurrected; then deletes `from`.
    pub(crate) fn commit_moves(&mut self, from: u32, moves: Vec<Move>, dest: &[u32]) {
        let mut acks: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for m in moves {
            let found = self
                .streams
                .get_mut(&m.key)
                .and_then(|s| s.find_mut(m.seq))
                .filter(|e| e.seg == from);
            match found {
                Some(e) => {
                    let len = u64::from(e.len);
                    e.seg = m.seg;
                    e.offset = m.offset;
                    if let Some(s) = self.segments.get_mut(&from) {
                        s.live_records = s.live_records.saturating_sub(1);
                        s.live_bytes = s.live_bytes.saturating_sub(len);
                    }
                    if let Some(s) = self.segments.get_mut(&m.seg) {
                        s.live_records += 1;
                        s.live_bytes += len;
                    }
                }
                None => format::encode_ack(m.seq, acks.entry(m.seg).or_default()),
            }
        }
        self.write_acks(acks);
        for id in dest {
            if let Some(s) = self.segments.get_mut(id) {
                s.pinned = false;
            }
        }
        if let Some(s) = self.segments.get_mut(&from) {
            s.compacting = false;
            if s.live_records != 0 {
                // Not expected: nothing is appended to a sealed segment.
                tracing::warn!(
                    segment = from,
                    live = s.live_records,
                    "compacted segment still has live records; kept"
                );
            }
        }
        self.reap(from);
        for id in dest {
            self.reap(*id);
        }
    }

    /// Whole-queue statistics.
    pub(crate) fn stats(&self) -> Stats {
        let oldest = self
            .streams
            .values()
            .filter_map(|s| s.oldest().map(|e| e.created_ms))
            .min();
        Stats {
            records: self.total.records,
            items: self.total.items,
            bytes: self.total.bytes,
            oldest_created_ms: oldest,
            disk_bytes: self.disk_bytes,
        }
    }

    fn tenant_stats_of(&self, name: &Arc<str>, t: &Tenant) -> Stats {
        let oldest = t
            .streams
            .iter()
            .filter_map(|c| self.streams.get(&(name.clone(), *c)))
            .filter_map(|s| s.oldest().map(|e| e.created_ms))
            .min();
        Stats {
            records: t.acc.records,
            items: t.acc.items,
            bytes: t.acc.bytes,
            oldest_created_ms: oldest,
            disk_bytes: t.acc.disk,
        }
    }

    pub(crate) fn tenant_stats(&self, tenant: &str) -> Stats {
        match self.tenants.get_key_value(tenant) {
            Some((name, t)) => self.tenant_stats_of(name, t),
            None => Stats::default(),
        }
    }

    pub(crate) fn all_tenant_stats(&self) -> HashMap<Arc<str>, Stats> {
        self.tenants
            .iter()
            .filter(|(_, t)| t.acc.records > 0)
            .map(|(name, t)| (name.clone(), self.tenant_stats_of(name, t)))
            .collect()
    }

    /// Picks a sealed segment to compact: the lowest live fraction among
    /// those under `max_fraction` (and older than `min_age`, if given).
    pub(crate) fn compaction_candidate(
        &self,
        max_fraction: f64,
        min_age: Option<std::time::Duration>,
    ) -> Option<u32> {
        self.segments
            .iter()
            .filter(|(_, s)| !s.pinned && !s.compacting && !s.compact_failed && s.len > 0)
            .filter(|(_, s)| match (s.sealed_at, min_age) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(at), Some(age)) => at.elapsed() >= age,
            })
            .map(|(id, s)| (*id, s.live_bytes as f64 / s.len as f64))
            .filter(|(_, f)| *f < max_fraction)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(id, _)| id)
    }
}
