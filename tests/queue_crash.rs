//! Crash tests of the durable queue with a real `kill -9`.
//!
//! The test binary re-invokes itself (`crash_child`, selected by an
//! environment variable) as a writer process that appends concurrently,
//! acks, releases and compacts, printing each completed step on stdout as
//! soon as the call returns. The parent SIGKILLs it at a random moment
//! (`Child::kill`), reopens the queue and checks:
//! - every record whose append returned is there, byte for byte;
//! - no record whose `ack` returned is there (acks are plain writes: the
//!   page cache survives a killed process; only a power loss could lose
//!   them, which the queue documents as a redelivery);
//! - nothing is duplicated (a compaction cut short leaves two copies of a
//!   record on disk, which recovery must resolve to one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ddrelay::queue::{Limits, NewRecord, Prepared, Queue, Taken};
use rand::Rng as _;

const CHILD_DIR: &str = "DDRELAYTEST_QUEUE_CRASH_DIR";
const CHILD_GEN: &str = "DDRELAYTEST_QUEUE_CRASH_GEN";
const CHILD_MODE: &str = "DDRELAYTEST_QUEUE_CRASH_MODE";

const LIMITS: Limits = Limits {
    max_bytes: 1 << 30,
    tenant_max_bytes: 512 << 20,
    held_max_bytes: 512 << 20,
    segment_bytes: 64 << 10,
    preallocate: true,
};

/// What a record written by the child is: everything derives from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    generation: u64,
    writer: u64,
    n: u64,
}

impl Key {
    fn tenant(&self) -> String {
        format!("tenant-{}", self.writer % 3)
    }

    fn stream(&self) -> u8 {
        (self.n % 2) as u8 + 1
    }

    fn items(&self) -> u32 {
        (self.n % 100) as u32
    }

    fn created_ms(&self) -> i64 {
        (self.generation * 1_000_000 + self.n) as i64
    }

    fn payload(&self) -> Vec<u8> {
        let mut p = format!("{}:{}:{}:", self.generation, self.writer, self.n).into_bytes();
        let h = (self.generation * 7919 + self.writer * 104_729 + self.n * 1_299_709) % 20_000;
        let len = p.len() + h as usize;
        let mut i = 0u64;
        while p.len() < len {
            p.push((i.wrapping_mul(31) ^ self.n) as u8);
            i += 1;
        }
        p
    }

    fn parse_payload(p: &[u8]) -> Option<Key> {
        let mut it = p.splitn(4, |b| *b == b':');
        let mut field = || -> Option<u64> { std::str::from_utf8(it.next()?).ok()?.parse().ok() };
        Some(Key {
            generation: field()?,
            writer: field()?,
            n: field()?,
        })
    }

    /// Checks a taken record is exactly what was written for this key.
    fn check(&self, t: &Taken) {
        assert_eq!(&*t.tenant, self.tenant(), "{self:?}");
        assert_eq!(t.stream, self.stream(), "{self:?}");
        assert_eq!(t.items, self.items(), "{self:?}");
        assert_eq!(t.created_ms, self.created_ms(), "{self:?}");
        assert_eq!(t.oldest_ms, self.created_ms() - 5, "{self:?}");
        assert_eq!(t.newest_ms, self.created_ms() + 5, "{self:?}");
        assert!(
            t.payload[..] == self.payload()[..],
            "payload of {self:?} differs"
        );
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The child: not a test of its own (it returns at once without the
/// environment variable); run by the crash tests with `--ignored`.
#[test]
#[ignore = "child process of the crash tests"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let generation: u64 = std::env::var(CHILD_GEN)
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0);
    let mode = std::env::var(CHILD_MODE).unwrap_or_default();
    // The harness has printed "test crash_child ... " without a newline.
    say("");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (q, _) = Queue::open(Path::new(&dir), LIMITS).expect("open");
        if mode == "close" {
            close_child(q, generation).await;
        } else {
            load_child(q, generation).await;
        }
    });
}

async fn append_key(q: &Queue, keys: &[Key]) {
    let tenants: Vec<String> = keys.iter().map(Key::tenant).collect();
    let payloads: Vec<Vec<u8>> = keys.iter().map(Key::payload).collect();
    let records: Vec<NewRecord<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| NewRecord {
            tenant: &tenants[i],
            generation: 0,
            stream: k.stream(),
            items: k.items(),
            created_ms: k.created_ms(),
            oldest_ms: k.created_ms() - 5,
            newest_ms: k.created_ms() + 5,
            payload: &payloads[i],
        })
        .collect();
    // Every other append is stored LZ4-compressed (where that pays), so
    // both kinds of record are killed mid-write and recovered.
    let prepared = records
        .iter()
        .zip(keys)
        .map(|(r, k)| Prepared::new(r, k.n % 2 == 0).expect("prepare"))
        .collect();
    let ids = q.append_prepared(prepared).await.expect("append");
    for (k, id) in keys.iter().zip(ids) {
        say(&format!(
            "A {} {} {} {}",
            k.generation,
            k.writer,
            k.n,
            id.seq()
        ));
    }
}

async fn load_child(q: Queue, generation: u64) {
    say("READY");
    let mut tasks = Vec::new();
    for writer in 0..8u64 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            loop {
                // Every fifth append is a batch of three (all or nothing).
                let count = if n % 5 == 4 { 3 } else { 1 };
                let keys: Vec<Key> = (0..count)
                    .map(|i| Key {
                        generation,
                        writer,
                        n: n + i,
                    })
                    .collect();
                n += count;
                append_key(&q, &keys).await;
            }
        }));
    }
    // The acker: takes, acks about half, releases the rest.
    let acker = q.clone();
    tasks.push(tokio::spawn(async move {
        let mut round = 0u64;
        loop {
            round += 1;
            for (tenant, stream) in acker.ready_streams() {
                let taken = acker.take(&tenant, stream, 4, 1 << 20).expect("take");
                let (ack, release): (Vec<_>, Vec<_>) = taken
                    .iter()
                    .partition(|t| (t.id.seq() + round).is_multiple_of(2));
                let ack: Vec<_> = ack.iter().map(|t| t.id).collect();
                for id in &ack {
                    say(&format!("T {}", id.seq()));
                }
                acker.ack(&ack);
                for id in &ack {
                    say(&format!("K {}", id.seq()));
                }
                acker.release(&release.iter().map(|t| t.id).collect::<Vec<_>>());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }));
    // Compaction, so that kills land in the middle of moves too.
    let compactor = q.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(30)).await;
            compactor.compact().await.expect("compact");
        }
    }));
    for t in tasks {
        let _ = t.await;
    }
}

async fn close_child(q: Queue, generation: u64) {
    let keys: Vec<Key> = (0..200)
        .map(|n| Key {
            generation,
            writer: 0,
            n,
        })
        .collect();
    for chunk in keys.chunks(2) {
        append_key(&q, chunk).await;
    }
    let mut acked = Vec::new();
    for (tenant, stream) in q.ready_streams() {
        let taken = q
            .take(&tenant, stream, usize::MAX, usize::MAX)
            .expect("take");
        for t in taken {
            if t.id.seq() % 2 == 0 {
                acked.push(t.id);
            }
        }
    }
    q.ack(&acked);
    for id in &acked {
        say(&format!("K {}", id.seq()));
    }
    q.close().await;
    say("CLOSED");
    // Wait to be killed, holding the queue open.
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What one child run reported.
#[derive(Default)]
struct Report {
    appended: HashMap<u64, Key>,
    ack_started: HashSet<u64>,
    acked: HashSet<u64>,
}

/// Runs the child until `kill_after` (from its READY or CLOSED line), then
/// SIGKILLs it and returns what it printed.
fn run_child(dir: &Path, generation: u64, mode: &str, kill_after: Duration) -> Report {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_GEN, generation.to_string())
        .env(CHILD_MODE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut report = Report::default();
    let parse = |line: &str, report: &mut Report| -> bool {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["A", g, w, n, id] => {
                if let (Ok(g), Ok(w), Ok(n), Ok(id)) = (g.parse(), w.parse(), n.parse(), id.parse())
                {
                    report.appended.insert(
                        id,
                        Key {
                            generation: g,
                            writer: w,
                            n,
                        },
                    );
                }
            }
            ["T", id] => {
                if let Ok(id) = id.parse() {
                    report.ack_started.insert(id);
                }
            }
            ["K", id] => {
                if let Ok(id) = id.parse() {
                    report.acked.insert(id);
                }
            }
            ["READY"] | ["CLOSED"] => return true,
            _ => {}
        }
        false
    };
    let start_mark = if mode == "close" { "CLOSED" } else { "READY" };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("child did not start");
        if parse(&line, &mut report) && line == start_mark {
            break;
        }
    }
    std::thread::sleep(kill_after);
    child.kill().expect("kill");
    child.wait().expect("wait");
    reader.join().expect("reader");
    for line in rx.try_iter() {
        parse(&line, &mut report);
    }
    report
}

/// Takes every record, keyed by seq.
fn take_everything(q: &Queue) -> HashMap<u64, Taken> {
    let mut all = HashMap::new();
    for (tenant, stream) in q.ready_streams() {
        for t in q
            .take(&tenant, stream, usize::MAX, usize::MAX)
            .expect("take")
        {
            assert!(
                all.insert(t.id.seq(), t).is_none(),
                "a record was returned twice"
            );
        }
    }
    all
}

#[test]
fn kill_9_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rng();
    // Records the parent expects to find (appended, not acked), and the
    // ones that must never come back.
    let mut expected: HashMap<u64, Key> = HashMap::new();
    let mut gone: HashSet<u64> = HashSet::new();
    let mut total_appended = 0;
    let mut truncated = 0;
    for generation in 0..12u64 {
        let kill_after = Duration::from_millis(rng.random_range(20..600));
        let report = run_child(dir.path(), generation, "load", kill_after);
        total_appended += report.appended.len();
        assert!(
            !report.appended.is_empty(),
            "generation {generation}: child appended nothing"
        );
        for (id, key) in report.appended {
            expected.insert(id, key);
        }
        for id in &report.ack_started {
            // Acked or not: either way is allowed once the ack started.
            if !report.acked.contains(id) {
                expected.remove(id);
            }
        }
        for id in &report.acked {
            expected.remove(id);
            gone.insert(*id);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (q, rec) = Queue::open(dir.path(), LIMITS).expect("reopen after kill");
            truncated += rec.truncated_bytes;
            assert_eq!(rec.corrupt_records, 0, "generation {generation}: {rec:?}");
            let all = take_everything(&q);
            for (id, key) in &expected {
                let t = all.get(id).unwrap_or_else(|| {
                    panic!("generation {generation}: acknowledged record {id} {key:?} lost")
                });
                key.check(t);
            }
            let mut keys = HashSet::new();
            for (id, t) in &all {
                let key = Key::parse_payload(&t.payload).expect("a record the child wrote");
                assert!(
                    !gone.contains(id),
                    "generation {generation}: acked record {id} resurrected ({key:?})"
                );
                key.check(t);
                assert!(
                    keys.insert(key),
                    "generation {generation}: {key:?} duplicated"
                );
            }
            // Keep the directory small: ack what earlier generations wrote
            // (synced by close, so never resurrected either).
            let old: Vec<_> = all
                .values()
                .filter(|t| {
                    Key::parse_payload(&t.payload).is_some_and(|k| k.generation < generation)
                })
                .map(|t| t.id)
                .collect();
            q.ack(&old);
            for id in &old {
                expected.remove(&id.seq());
                gone.insert(id.seq());
            }
            let rest: Vec<_> = all.values().map(|t| t.id).collect();
            q.release(&rest);
            q.close().await;
        });
    }
    eprintln!(
        "crash test: 12 kills, {total_appended} acknowledged appends, {} acked, {truncated} torn bytes truncated",
        gone.len()
    );
}

#[test]
fn acks_synced_by_close_are_never_resurrected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = run_child(dir.path(), 0, "close", Duration::from_millis(50));
    assert_eq!(report.appended.len(), 200);
    assert_eq!(report.acked.len(), 100);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (q, rec) = Queue::open(dir.path(), LIMITS).expect("reopen");
        assert_eq!(rec.records, 100);
        let all = take_everything(&q);
        let mut want: Vec<u64> = report
            .appended
            .keys()
            .copied()
            .filter(|id| !report.acked.contains(id))
            .collect();
        want.sort_unstable();
        let mut got: Vec<u64> = all.keys().copied().collect();
        got.sort_unstable();
        assert_eq!(got, want);
        for (id, t) in &all {
            report.appended[id].check(t);
        }
    });
}
