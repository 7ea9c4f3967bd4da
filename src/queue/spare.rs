//! Written-ahead segments: a helper thread fills the next segment file with
//! zeros and syncs it before the writer needs it.
//!
//! Why: an `fdatasync` after an append that grows a file must also commit
//! the new size and block mapping (on ext4 and XFS, a journal commit); one
//! after an overwrite inside blocks already written and synced needs only
//! the data and the device flush. Measured on the bench machine's virtio
//! disk (16 KiB writes, `fdatasync` each): appending p50 0.36–0.47 ms,
//! overwriting a written-ahead file p50 0.19–0.25 ms; `fallocate` alone does
//! not help (unwritten extents still need converting: p99 11.6 ms). So the
//! writer's group commit, which an ingest acknowledgement waits for, costs
//! about half once the head segment was written ahead.
//!
//! The spare is created as [`SPARE_FILE`], zero-filled to the segment size,
//! synced, and handed to the writer, which renames it to the next segment's
//! name when it rolls (and syncs the directory, as it does for a new file).
//! The writer never waits for it: when no spare is ready it creates a plain
//! segment, as without preallocation. The zeroed tail is cut off when the
//! segment is sealed or the queue closed; after a crash, recovery tells a
//! zeroed tail (not counted) from a torn one (counted in
//! `Recovery::truncated_bytes`), and deletes a leftover spare.
//!
//! Overwrites in place reach the disk in any order when power is lost before
//! the `fdatasync` (an append that grows the file cannot land past a hole on
//! ext4's ordered mode). Only unsynced, so unacknowledged, data is exposed:
//! recovery keeps every record that checks out after a hole, and an error
//! that abandons a head cuts it back to its synced length and syncs.
//!
//! Cost: the zeros are written once more than the data (disk bandwidth, not
//! the latency path), and the disk holds up to two segments more than the
//! data (the head's unwritten tail and the spare), which the budget sets
//! aside (`Limits::written_ahead`). Pointless
//! on copy-on-write filesystems (btrfs, ZFS), where an overwrite allocates
//! anyway: there `queue.preallocate = false`.
//!
//! Must not know: records, the index, or which segment id the file gets.

use std::fs::{File, OpenOptions};
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

/// Name of the spare segment file while it is prepared and waiting.
pub(crate) const SPARE_FILE: &str = "next.spare";
/// Zeros are written this many bytes at a time (also how quickly a close
/// interrupts a preparation).
const CHUNK: usize = 256 << 10;
/// ... and synced every this many bytes, so no single `fdatasync` of the
/// helper flushes a whole segment at once in front of the writer's.
const SYNC_EVERY: u64 = 8 << 20;

/// The writer's side of the helper thread.
pub(crate) struct Spares {
    dir: PathBuf,
    /// Started at the first roll, so a queue that never rolls (an unused
    /// dead-letter queue) never preallocates anything.
    worker: Option<Worker>,
    /// A spare was asked for and not yet received.
    pending: bool,
    /// The last preparation failed (logged once until one succeeds).
    failing: bool,
}

struct Worker {
    requests: SyncSender<u64>,
    ready: Receiver<std::io::Result<File>>,
    cancel: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Spares {
    pub(crate) fn new(dir: PathBuf) -> Spares {
        Spares {
            dir,
            worker: None,
            pending: false,
            failing: false,
        }
    }

    /// A written-ahead file of `len` bytes at [`SPARE_FILE`], positioned at
    /// its start, if one is ready; never waits. Asks for the next one when
    /// this one is taken (or none was asked for yet): the caller renames the
    /// returned file before it calls `take` again.
    pub(crate) fn take(&mut self, len: u64) -> Option<File> {
        let mut got = None;
        if self.pending
            && let Some(w) = &self.worker
        {
            match w.ready.try_recv() {
                Ok(Ok(file)) => {
                    self.pending = false;
                    self.failing = false;
                    got = Some(file);
                }
                Ok(Err(e)) => {
                    self.pending = false;
                    if !self.failing {
                        tracing::warn!(error = %e, "cannot write a queue segment ahead; using plain segments until it works");
                    }
                    self.failing = true;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => {
                    self.pending = false;
                    self.worker = None;
                }
            }
        }
        if !self.pending && got.is_none() {
            // Asked for now, handed over at the next roll.
            self.request(len);
        }
        got
    }

    /// Asks for the next spare once the caller has renamed the last one.
    pub(crate) fn request_next(&mut self, len: u64) {
        if !self.pending {
            self.request(len);
        }
    }

    fn request(&mut self, len: u64) {
        if self.worker.is_none() {
            match Worker::start(self.dir.clone()) {
                Ok(w) => self.worker = Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the queue segment preparer; using plain segments");
                    return;
                }
            }
        }
        if let Some(w) = &self.worker {
            self.pending = w.requests.try_send(len).is_ok();
        }
    }

    /// Stops the helper (interrupting a preparation within one chunk),
    /// waits for it and deletes an unused spare.
    pub(crate) fn close(&mut self) {
        if let Some(w) = self.worker.take() {
            w.cancel.store(true, Ordering::Relaxed);
            drop(w.requests);
            if w.thread.join().is_err() {
                tracing::warn!("queue segment preparer panicked");
            }
        }
        self.pending = false;
        remove_spare(&self.dir);
    }
}

impl Drop for Spares {
    /// The writer closes it; this covers a writer that unwinds, so the
    /// helper never outlives the queue's directory lock.
    fn drop(&mut self) {
        self.close();
    }
}

/// Deletes a spare left behind (a crash, or a close).
pub(crate) fn remove_spare(dir: &Path) {
    match std::fs::remove_file(dir.join(SPARE_FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "cannot delete the queue's spare segment"),
    }
}

impl Worker {
    fn start(dir: PathBuf) -> std::io::Result<Worker> {
        let (requests, rx) = sync_channel::<u64>(1);
        let (tx, ready) = sync_channel(1);
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("queue-prepare".into())
            .spawn(move || {
                let zeros = vec![0u8; CHUNK];
                while let Ok(len) = rx.recv() {
                    if tx.send(prepare(&dir, len, &zeros, &stop)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Worker {
            requests,
            ready,
            cancel,
            thread,
        })
    }
}

/// Free space below which no spare is written: the queue's own data needs
/// the room more than the writer needs a faster fsync.
const FREE_MARGIN_SEGMENTS: u64 = 4;

/// Creates [`SPARE_FILE`] in `dir` holding `len` zero bytes, synced.
fn prepare(dir: &Path, len: u64, zeros: &[u8], cancel: &AtomicBool) -> std::io::Result<File> {
    let path = dir.join(SPARE_FILE);
    remove_spare(dir);
    let fs = rustix::fs::statvfs(dir)?;
    let free = fs.f_bavail.saturating_mul(fs.f_frsize);
    if free < len.saturating_mul(FREE_MARGIN_SEGMENTS) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!(
                "{free} bytes free on the queue's filesystem, under {FREE_MARGIN_SEGMENTS} segments; no segment is written ahead"
            ),
        ));
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let filled = (|| {
        let mut done = 0u64;
        while done < len {
            if cancel.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("queue closing"));
            }
            let n = (len - done).min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])?;
            done += n as u64;
            if done.is_multiple_of(SYNC_EVERY) {
                file.sync_data()?;
            }
        }
        file.sync_data()?;
        file.seek(SeekFrom::Start(0))?;
        Ok(())
    })();
    match filled {
        Ok(()) => Ok(file),
        Err(e) => {
            // Never leave a half-written spare taking disk space (ENOSPC).
            drop(file);
            remove_spare(dir);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_is_zero_filled_synced_and_positioned_at_its_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spares::new(dir.path().to_path_buf());
        assert!(
            s.take(1 << 20).is_none(),
            "nothing is ready before a request"
        );
        // The helper answers the request; `take` never waits, so poll the
        // channel directly for the test's synchronisation.
        let file = {
            let w = s.worker.as_ref().expect("started by the first take");
            w.ready.recv().expect("a reply").expect("prepared")
        };
        s.pending = false;
        let meta = file.metadata().expect("meta");
        assert_eq!(meta.len(), 1 << 20);
        let mut f = file;
        assert_eq!(f.stream_position().expect("pos"), 0);
        let data = std::fs::read(dir.path().join(SPARE_FILE)).expect("read");
        assert!(data.iter().all(|b| *b == 0));
        s.close();
        assert!(
            !dir.path().join(SPARE_FILE).exists(),
            "close deletes the spare"
        );
    }

    #[test]
    fn no_spare_is_written_when_the_filesystem_is_nearly_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A segment larger than a quarter of any free space there can be.
        let len = u64::MAX / 2;
        let err =
            prepare(dir.path(), len, &[0; CHUNK], &AtomicBool::new(false)).expect_err("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
        assert!(err.to_string().contains("bytes free"), "{err}");
        assert!(!dir.path().join(SPARE_FILE).exists());
    }

    #[test]
    fn close_interrupts_a_preparation_and_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cancel = AtomicBool::new(true);
        let err = prepare(dir.path(), 4 << 20, &[0; CHUNK], &cancel).expect_err("cancelled");
        assert!(err.to_string().contains("closing"), "{err}");
        assert!(!dir.path().join(SPARE_FILE).exists());
    }
}
