//! Recovery: rebuilds the index from the segment and ack files at open.
//!
//! Owns the procedure described in [`crate::queue`] ("Recovery"): list the
//! files, drop orphan ack files, read every ack file, scan every segment
//! (headers always, payload checksums of the last segment, where an
//! un-synced tail can be), truncate torn tails, resolve duplicate copies left
//! by an interrupted compaction, make every dead copy dead *in its own
//! segment's ack file* (synced), then delete segments with nothing live.
//!
//! Never fatal on content: a torn tail is truncated, a corrupt record is
//! counted, logged once with its segment and offset, and skipped. Only I/O
//! errors on the directory itself (cannot list, cannot open a file) fail
//! `open`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;

use super::format::{self, FLAG_MORE, HEADER_LEN, MAGIC};
use super::index::{self, ACK_KIND_DROP, Entry, Segment, State, ack_path, seg_path};
use super::{QueueError, Recovery};

/// The outcome of recovery.
pub(crate) struct Recovered {
    pub(crate) state: State,
    pub(crate) report: Recovery,
    pub(crate) next_seq: u64,
    pub(crate) next_seg: u32,
}

/// One copy of a record found on disk.
struct Copy {
    seg: u32,
    offset: u32,
    len: u32,
    seq: u64,
    tenant: Arc<str>,
    stream: u8,
    items: u32,
    created_ms: i64,
}

/// What a scan of one segment found.
struct Scan {
    copies: Vec<Copy>,
    /// Seqs of records whose header is intact but payload checksum is not.
    corrupt_seqs: Vec<u64>,
    /// Corrupt records (or unparseable regions) found.
    corrupt: u64,
    /// Where valid data ends; the file is truncated there.
    end: u64,
}

fn io_err(path: &Path, source: std::io::Error) -> QueueError {
    QueueError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn parse_name(name: &str, ext: &str) -> Option<u32> {
    let stem = name.strip_suffix(ext)?;
    if stem.len() != 8 {
        return None;
    }
    u32::from_str_radix(stem, 16).ok()
}

/// Rebuilds the index from `dir` (which exists and is locked).
pub(crate) fn recover(dir: &Path) -> Result<Recovered, QueueError> {
    super::spare::remove_spare(dir);
    let mut segs = Vec::new();
    let mut acks = Vec::new();
    for ent in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let ent = ent.map_err(|e| io_err(dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = parse_name(name, ".seg") {
            segs.push(id);
        } else if let Some(id) = parse_name(name, ".ack") {
            acks.push(id);
        }
    }
    segs.sort_unstable();
    let seg_set: HashSet<u32> = segs.iter().copied().collect();

    // Ack files: global ACKs, and which entries each segment already has.
    let mut max_seq = 0u64;
    let mut acked: HashSet<u64> = HashSet::new();
    let mut local: HashMap<u32, HashSet<u64>> = HashMap::new();
    let mut dropped: HashMap<u32, HashSet<u64>> = HashMap::new();
    for id in acks {
        let path = ack_path(dir, id);
        if !seg_set.contains(&id) {
            // Orphan: its segment was deleted and the crash came before the
            // ack file went too.
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete orphan queue ack file");
            }
            continue;
        }
        let buf = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        let (entries, bad, end) = format::decode_acks(&buf);
        if bad > 0 {
            tracing::warn!(
                segment = id,
                bad,
                "queue ack file has stray bytes (a write cut short); skipped, the entries around them kept"
            );
        }
        if end < buf.len() {
            // A torn tail: cut it, so that new entries start on whole ones.
            cut_ack_file(&path, end as u64)?;
        }
        for v in entries {
            let seq = v & !ACK_KIND_DROP;
            max_seq = max_seq.max(seq);
            if v & ACK_KIND_DROP != 0 {
                dropped.entry(id).or_default().insert(seq);
            } else {
                acked.insert(seq);
                local.entry(id).or_default().insert(seq);
            }
        }
    }

    let mut report = Recovery::default();
    let mut state = State::new(dir.to_path_buf());
    let mut tenants: HashMap<String, Arc<str>> = HashMap::new();
    let mut copies = Vec::new();
    let mut repairs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let last = segs.last().copied();
    for &id in &segs {
        let path = seg_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
        let no_drops = HashSet::new();
        let dead =
            |seq: u64| acked.contains(&seq) || dropped.get(&id).unwrap_or(&no_drops).contains(&seq);
        // A segment written ahead (spare.rs) ends in zeros the writer had not
        // reached: no record starts there, so they are cut without being
        // counted. Torn bytes are those between the last complete record and
        // the last non-zero byte.
        let data_end = nonzero_end(&file, len).map_err(|e| io_err(&path, e))?;
        let scan = scan(
            &file,
            id,
            len,
            data_end,
            Some(id) == last,
            &dead,
            &mut tenants,
        )
        .map_err(|e| io_err(&path, e))?;
        if scan.end < len {
            let torn = data_end.saturating_sub(scan.end);
            if torn > 0 {
                tracing::warn!(
                    segment = id,
                    offset = scan.end,
                    bytes = torn,
                    "queue segment has a torn tail; truncated"
                );
            } else {
                tracing::debug!(
                    segment = id,
                    zeros = len - scan.end,
                    "queue segment's zeroed tail cut"
                );
            }
            file.set_len(scan.end).map_err(|e| io_err(&path, e))?;
            file.sync_data().map_err(|e| io_err(&path, e))?;
            report.truncated_bytes += torn;
        }
        report.corrupt_records += scan.corrupt;
        for seq in scan.corrupt_seqs {
            format::encode_ack(seq | ACK_KIND_DROP, repairs.entry(id).or_default());
        }
        copies.extend(scan.copies);
        state.add_segment(id, Segment::new(file, scan.end, true));
    }

    // Liveness. A copy is dead if its seq was acked anywhere (then its own
    // ack file must say so too, so it stays dead once the other segment is
    // gone) or if its own ack file drops it. Of several live copies (an
    // interrupted compaction) the one in the newest segment wins and the
    // others are dropped in their own ack files.
    let mut best: HashMap<u64, usize> = HashMap::new();
    for (i, c) in copies.iter().enumerate() {
        max_seq = max_seq.max(c.seq);
        let is_local =
            |m: &HashMap<u32, HashSet<u64>>| m.get(&c.seg).is_some_and(|s| s.contains(&c.seq));
        if acked.contains(&c.seq) {
            if !is_local(&local) && !is_local(&dropped) {
                format::encode_ack(c.seq, repairs.entry(c.seg).or_default());
            }
            continue;
        }
        if is_local(&dropped) {
            continue;
        }
        if let Some(prev) = best.insert(c.seq, i) {
            let p = &copies[prev];
            format::encode_ack(p.seq | ACK_KIND_DROP, repairs.entry(p.seg).or_default());
        }
    }
    // The repairs must be durable before any segment is deleted.
    let repaired: Vec<u32> = repairs.keys().copied().collect();
    state.write_acks(repairs);
    for id in repaired {
        if let Some(f) = state.segments.get(&id).and_then(|s| s.ack.as_ref()) {
            f.sync_data().map_err(|e| io_err(&ack_path(dir, id), e))?;
        }
    }

    let mut live: Vec<usize> = best.into_values().collect();
    live.sort_unstable_by_key(|i| copies[*i].seq);
    for i in live {
        let c = &copies[i];
        let e = Entry {
            seq: c.seq,
            created_ms: c.created_ms,
            seg: c.seg,
            offset: c.offset,
            len: c.len,
            items: c.items,
        };
        state.insert(&(c.tenant.clone(), c.stream), e);
    }
    state.reap_all();
    let doomed = state.take_doomed();
    index::delete_segment_files(dir, &doomed);
    let stats = state.stats();
    report.records = stats.records;
    report.items = stats.items;
    report.bytes = stats.bytes;
    // Seqs handed out before are all below the persisted reservation.
    let reserved = std::fs::read(dir.join(super::writer::SEQ_FILE))
        .ok()
        .and_then(|b| format::decode_acks(&b).0.first().copied())
        .unwrap_or(0);
    Ok(Recovered {
        state,
        report,
        next_seq: (max_seq + 1).max(reserved),
        next_seg: segs.last().map_or(1, |l| l.saturating_add(1)),
    })
}

/// Reads `buf.len()` bytes at `off`, or fewer at the end of the file.
fn read_at_most(file: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A record header checked by `hcrc` at `off`, with its tenant.
fn header_at(
    file: &File,
    off: u64,
    file_len: u64,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<format::Header>> {
    if file_len - off < HEADER_LEN as u64 {
        return Ok(None);
    }
    buf.resize(HEADER_LEN, 0);
    file.read_exact_at(buf, off)?;
    let Ok(h) = format::decode_header(buf) else {
        return Ok(None);
    };
    let tl = usize::from(h.tenant_len);
    if file_len - off < (HEADER_LEN + tl) as u64 {
        return Ok(None);
    }
    buf.resize(HEADER_LEN + tl, 0);
    file.read_exact_at(&mut buf[HEADER_LEN..], off + HEADER_LEN as u64)?;
    if format::check_header(&buf[..HEADER_LEN], &buf[HEADER_LEN..]).is_err()
        || std::str::from_utf8(&buf[HEADER_LEN..]).is_err()
    {
        return Ok(None);
    }
    Ok(Some(h))
}

/// The end of the last non-zero byte of the file's first `len` bytes (0 if
/// all are zero). Reads backwards in growing chunks: one small read for a
/// segment that ends in data, the whole zeroed tail of a written-ahead one.
fn nonzero_end(file: &File, len: u64) -> std::io::Result<u64> {
    let mut chunk = 4u64 << 10;
    let mut buf = Vec::new();
    let mut end = len;
    while end > 0 {
        let n = chunk.min(end);
        buf.resize(n as usize, 0);
        file.read_exact_at(&mut buf, end - n)?;
        if let Some(i) = buf.iter().rposition(|b| *b != 0) {
            return Ok(end - n + i as u64 + 1);
        }
        end -= n;
        chunk = (chunk * 2).min(1 << 20);
    }
    Ok(0)
}

/// The next offset after `from` and before `data_end` where a record
/// header checks out (the header may run into zeros up to `file_len`).
fn resync(file: &File, from: u64, data_end: u64, file_len: u64) -> std::io::Result<Option<u64>> {
    const CHUNK: usize = 64 << 10;
    let mut chunk = vec![0u8; CHUNK + MAGIC.len()];
    let mut hdr = Vec::new();
    let mut base = from;
    while base < data_end {
        let n = read_at_most(file, &mut chunk, base)?;
        if n < MAGIC.len() {
            break;
        }
        for i in 0..=n - MAGIC.len() {
            if chunk[i..i + MAGIC.len()] == MAGIC
                && header_at(file, base + i as u64, file_len, &mut hdr)?.is_some()
            {
                return Ok(Some(base + i as u64));
            }
        }
        base += (n - MAGIC.len() + 1) as u64;
    }
    Ok(None)
}

fn payload_ok(file: &File, off: u64, len: u64, want: u32) -> std::io::Result<bool> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; len.min(CHUNK) as usize];
    let mut crc = 0;
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK) as usize;
        file.read_exact_at(&mut buf[..n], off + done)?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        done += n as u64;
    }
    Ok(crc == want)
}

/// Scans one segment (`file_len` bytes; no record starts at or after
/// `data_end`, where only zeros follow). Headers are always checked; payloads only when
/// `verify_payload` (the last segment, whose tail may not have been synced;
/// older ones are checked when read by `take` or compaction), and not those
/// of records already `dead` (acked or dropped).
fn scan(
    file: &File,
    id: u32,
    file_len: u64,
    data_end: u64,
    verify_payload: bool,
    dead: &dyn Fn(u64) -> bool,
    tenants: &mut HashMap<String, Arc<str>>,
) -> std::io::Result<Scan> {
    let mut out = Scan {
        copies: Vec::new(),
        corrupt_seqs: Vec::new(),
        corrupt: 0,
        end: 0,
    };
    let mut hdr = Vec::with_capacity(HEADER_LEN + 64);
    let mut off = 0u64;
    // The end of the last complete batch (a record without MORE), and how
    // much had been found by then: an unfinished batch at the end is cut.
    let mut committed = (0u64, 0usize, 0usize, 0u64);
    while off < file_len {
        let Some(h) = header_at(file, off, file_len, &mut hdr)? else {
            match resync(file, off + 1, data_end, file_len)? {
                Some(next) => {
                    tracing::error!(
                        segment = id,
                        offset = off,
                        bytes = next - off,
                        "corrupt region in queue segment; skipped (data lost)"
                    );
                    out.corrupt += 1;
                    off = next;
                    // Not committed yet: only a complete record after the
                    // corrupt region keeps it in the file. If what follows
                    // is a torn tail, the region goes with it, so the next
                    // recovery finds exactly what this one kept (found by
                    // fuzzing: `fuzz/regressions/queue_segment/`).
                    continue;
                }
                None => break,
            }
        };
        let len = h.record_len();
        if off + len > file_len {
            break;
        }
        let (Ok(offset), Ok(len32)) = (u32::try_from(off), u32::try_from(len)) else {
            tracing::warn!(
                segment = id,
                offset = off,
                "queue segment larger than 4 GiB; the rest is ignored"
            );
            break;
        };
        let payload_off = off + HEADER_LEN as u64 + u64::from(h.tenant_len);
        let bad_payload = verify_payload
            && !dead(h.seq)
            && !payload_ok(file, payload_off, u64::from(h.payload_len), h.pcrc)?;
        if bad_payload {
            tracing::error!(
                segment = id,
                offset = off,
                seq = h.seq,
                "queue record failed its checksum; skipped (data lost)"
            );
            out.corrupt += 1;
            out.corrupt_seqs.push(h.seq);
        } else {
            let name = &hdr[HEADER_LEN..];
            let name = std::str::from_utf8(name).unwrap_or_default();
            let tenant = match tenants.get(name) {
                Some(t) => t.clone(),
                None => {
                    let t: Arc<str> = Arc::from(name);
                    tenants.insert(name.to_owned(), t.clone());
                    t
                }
            };
            out.copies.push(Copy {
                seg: id,
                offset,
                len: len32,
                seq: h.seq,
                tenant,
                stream: h.stream,
                items: h.items,
                created_ms: h.created_ms,
            });
        }
        off += len;
        // A bad payload is committed (counted as corrupt) only once a good
        // record follows it: at the end of the data it is a write torn
        // inside a zeroed tail (a written-ahead segment), cut with the rest.
        if h.flags & FLAG_MORE == 0 && !bad_payload {
            committed = (off, out.copies.len(), out.corrupt_seqs.len(), out.corrupt);
        }
    }
    let (end, copies, seqs, corrupt) = committed;
    out.copies.truncate(copies);
    out.corrupt_seqs.truncate(seqs);
    out.corrupt = corrupt;
    out.end = end;
    Ok(out)
}

/// Truncates an ack file to `len` (its last whole entry) and syncs it.
fn cut_ack_file(path: &Path, len: u64) -> Result<(), QueueError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    f.set_len(len).map_err(|e| io_err(path, e))?;
    f.sync_data().map_err(|e| io_err(path, e))
}
