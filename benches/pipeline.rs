//! Throughput of the per-request and per-payload hot paths: `validate`
//! (series, logs) and `Packer::pack` (series gzip-1 / zstd-1, logs gzip-1),
//! plus the "floor" (decompress, parse to `serde_json::Value`, re-serialize
//! and compress, per item, in a tight single-thread loop), the LZ4
//! encoding of a queue record and the packing of a logs record stored
//! ready to send.
//!
//! Run: `cargo bench --bench pipeline`. Before the measurements it prints
//! how full the packed payloads are and what the sync flushes cost in ratio.

// A benchmark, like a test: data that fails to validate must stop it loudly.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use ddrelay::codec;
use ddrelay::ingest::validate::validate;
use ddrelay::pipeline::batch::Packer;
use ddrelay::pipeline::record;
use ddrelay::queue::{NewRecord, Prepared};
use ddrelay::site::{Encoding, Endpoint};

const NOW_MS: i64 = 1_700_000_000_000;
const SERIES_PER_BODY: usize = 5000;
const LOGS_PER_BODY: usize = 1000;

/// xorshift, for reproducible "random" data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A typical series v2 body: 5 tags, 1 point, a host resource (~300 B each).
fn series_body(seed: u64) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    let items: Vec<String> = (0..SERIES_PER_BODY)
        .map(|i| {
            format!(
                r#"{{"metric":"app.http.{}","type":{},"points":[{{"timestamp":{},"value":{}}}],"tags":["env:prod","service:web-{}","region:us-east-{}","version:1.{}.0","endpoint:/api/v{}/items"],"resources":[{{"name":"host-{}","type":"host"}}],"unit":"request"}}"#,
                ["requests", "latency", "errors", "bytes"][i % 4],
                1 + i % 3,
                NOW_MS / 1000 - r.below(600) as i64,
                r.below(100_000) as f64 / 7.0,
                r.below(50),
                r.below(4),
                r.below(20),
                r.below(3),
                r.below(2000),
            )
        })
        .collect();
    format!(r#"{{"series":[{}]}}"#, items.join(",")).into_bytes()
}

const WORDS: [&str; 24] = [
    "request",
    "completed",
    "user",
    "session",
    "timeout",
    "retry",
    "cache",
    "miss",
    "GET",
    "POST",
    "/api/v1/orders",
    "status=200",
    "latency_ms=",
    "db",
    "query",
    "rows",
    "error",
    "warning",
    "connection",
    "pool",
    "exhausted",
    "upstream",
    "payload",
    "accepted",
];

/// A typical logs body: 1000 entries of 300 B – 2 KB.
fn logs_body(seed: u64) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    let items: Vec<String> = (0..LOGS_PER_BODY)
        .map(|_| {
            let target = 250 + r.below(1700) as usize;
            let mut msg = String::new();
            while msg.len() < target {
                msg.push_str(WORDS[r.below(WORDS.len() as u64) as usize]);
                if r.below(5) == 0 {
                    msg.push_str(&r.below(1_000_000).to_string());
                }
                msg.push(' ');
            }
            format!(
                r#"{{"message":"{msg}","ddsource":"python","ddtags":"env:prod,version:1.{}","hostname":"host-{}","service":"checkout","status":"info","timestamp":{},"trace_id":"{}","http":{{"method":"GET","status_code":200}}}}"#,
                r.below(20),
                r.below(500),
                NOW_MS - r.below(60_000) as i64,
                r.next(),
            )
        })
        .collect();
    format!("[{}]", items.join(",")).into_bytes()
}

/// Validated queue payloads of several bodies, as the packer would get them.
fn queued(endpoint: Endpoint, bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut all = Vec::new();
    for b in bodies {
        let v = validate(endpoint, b, NOW_MS).expect("bench data is valid");
        if !all.is_empty() {
            all.push(b'\n');
        }
        all.extend_from_slice(&v.payload);
    }
    all
}

fn lines(payload: &[u8]) -> Vec<&[u8]> {
    payload.split(|b| *b == b'\n').collect()
}

fn name(e: Encoding) -> &'static str {
    match e {
        Encoding::Gzip => "gzip",
        Encoding::Zstd => "zstd",
        Encoding::Deflate => "deflate",
        Encoding::Identity => "identity",
    }
}

/// High-cardinality series: ten random 20-character tags each (~330 B),
/// so that the 512,000-byte compressed cap binds before the item cap.
fn random_tag_series(n: usize) -> Vec<Vec<u8>> {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut r = Rng(7);
    (0..n)
        .map(|i| {
            let tags: Vec<String> = (0..10)
                .map(|t| {
                    let v: String = (0..20).map(|_| ALNUM[r.below(62) as usize] as char).collect();
                    format!("\"t{t}:{v}\"")
                })
                .collect();
            format!(
                r#"{{"metric":"app.requests","type":1,"points":[{{"timestamp":1700000000,"value":{i}}}],"tags":[{}]}}"#,
                tags.join(",")
            )
            .into_bytes()
        })
        .collect()
}

/// Fill and flush cost, printed once.
fn report(series: &[&[u8]], logs: &[&[u8]]) {
    println!("== payload fill (level 1) ==");
    let random = random_tag_series(40_000);
    let random: Vec<&[u8]> = random.iter().map(Vec::as_slice).collect();
    for (endpoint, items, encoding) in [
        (Endpoint::SeriesV2, series, Encoding::Gzip),
        (Endpoint::SeriesV2, series, Encoding::Zstd),
        (Endpoint::SeriesV2, &random[..], Encoding::Gzip),
        (Endpoint::SeriesV2, &random[..], Encoding::Zstd),
        (Endpoint::Logs, logs, Encoding::Gzip),
    ] {
        let l = endpoint.limits();
        let t = Instant::now();
        let out = Packer::new(endpoint, encoding, 1).pack(items);
        let elapsed = t.elapsed();
        let payloads: Vec<_> = out.into_iter().map(|r| r.expect("packs")).collect();
        let full = &payloads[..payloads.len() - 1];
        let n = full.len().max(1) as f64;
        let comp = full.iter().map(|p| p.body.len()).sum::<usize>() as f64 / n;
        let unc = full.iter().map(|p| p.uncompressed_len).sum::<usize>() as f64 / n;
        let cnt = full.iter().map(|p| p.item_count).sum::<usize>() as f64 / n;
        // What one-shot compression of the same bodies gives: the flush cost.
        let mut oneshot = 0usize;
        let mut ours = 0usize;
        for p in full {
            let raw = codec::decompress(encoding, &p.body, p.uncompressed_len).expect("round trip");
            oneshot += codec::compress(encoding, 1, &raw).len();
            ours += p.body.len();
        }
        println!(
            "{endpoint} {}-1: {} items -> {} payloads in {elapsed:.2?}; full ones average {comp:.0} B compressed \
             ({:.2}% of {}), {unc:.0} B uncompressed ({:.1}% of {}), {cnt:.0} items ({:.1}% of {}); \
             sync-flush cost {:+.3}% vs one-shot",
            name(encoding),
            items.len(),
            payloads.len(),
            100.0 * comp / l.max_compressed as f64,
            l.max_compressed,
            100.0 * unc / l.max_uncompressed as f64,
            l.max_uncompressed,
            100.0 * cnt / l.max_items as f64,
            l.max_items,
            100.0 * (ours as f64 / oneshot as f64 - 1.0),
        );
    }
}

/// This thread's CPU time in nanoseconds (Linux), so figures hold even when
/// other work shares the machine; `None` elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// CPU nanoseconds per call of `f`, over at least a second of CPU.
fn cpu_per_call(mut f: impl FnMut()) -> Option<f64> {
    f();
    let start = thread_cpu_ns()?;
    let mut calls = 0u64;
    loop {
        f();
        calls += 1;
        let spent = thread_cpu_ns()? - start;
        if spent > 1_000_000_000 && calls >= 3 {
            return Some(spent as f64 / calls as f64);
        }
    }
}

/// One line of the CPU-time table: items/s and MB/s (10^6 bytes).
fn cpu_line(label: &str, items: usize, bytes: usize, f: impl FnMut()) {
    match cpu_per_call(f) {
        Some(ns) => println!(
            "{label:<48} {:>7.0} ns/item {:>9.3} M items/s {:>7.0} MB/s",
            ns / items as f64,
            items as f64 / ns * 1e3,
            bytes as f64 / ns * 1e3,
        ),
        None => println!("{label}: no per-thread CPU clock here"),
    }
}

fn main() {
    let series_bodies: Vec<Vec<u8>> = (0..8).map(|s| series_body(s + 1)).collect();
    let logs_bodies: Vec<Vec<u8>> = (0..8).map(|s| logs_body(s + 100)).collect();
    let series_queued = queued(Endpoint::SeriesV2, &series_bodies);
    let logs_queued = queued(Endpoint::Logs, &logs_bodies);
    let series_items = lines(&series_queued);
    let logs_items = lines(&logs_queued);
    println!(
        "series body {} B ({} series, {:.0} B/series compact), logs body {} B ({} logs, {:.0} B/log compact)",
        series_bodies[0].len(),
        SERIES_PER_BODY,
        series_queued.len() as f64 / series_items.len() as f64,
        logs_bodies[0].len(),
        LOGS_PER_BODY,
        logs_queued.len() as f64 / logs_items.len() as f64,
    );
    report(&series_items, &logs_items);

    println!("== thread CPU time per item (one core; unaffected by other load) ==");
    cpu_line(
        "validate series_v2 (item = series of 1 point)",
        SERIES_PER_BODY,
        series_bodies[0].len(),
        || {
            black_box(
                validate(Endpoint::SeriesV2, black_box(&series_bodies[0]), NOW_MS).expect("valid"),
            );
        },
    );
    cpu_line("validate logs", LOGS_PER_BODY, logs_bodies[0].len(), || {
        black_box(validate(Endpoint::Logs, black_box(&logs_bodies[0]), NOW_MS).expect("valid"));
    });
    for (label, endpoint, items, encoding) in [
        (
            "pack series_v2 gzip-1",
            Endpoint::SeriesV2,
            &series_items,
            Encoding::Gzip,
        ),
        (
            "pack series_v2 zstd-1",
            Endpoint::SeriesV2,
            &series_items,
            Encoding::Zstd,
        ),
        (
            "pack logs gzip-1",
            Endpoint::Logs,
            &logs_items,
            Encoding::Gzip,
        ),
    ] {
        let bytes: usize = items.iter().map(|i| i.len() + 1).sum();
        let packer = Packer::new(endpoint, encoding, 1);
        cpu_line(label, items.len(), bytes, || {
            black_box(packer.pack(black_box(items)));
        });
    }
    // The queue record as ingest prepares it (LZ4 at rest), from the
    // validated payload.
    for (label, endpoint, body, n) in [
        (
            "queue record LZ4 series_v2",
            Endpoint::SeriesV2,
            &series_bodies[0],
            SERIES_PER_BODY,
        ),
        (
            "queue record LZ4 logs",
            Endpoint::Logs,
            &logs_bodies[0],
            LOGS_PER_BODY,
        ),
    ] {
        let v = validate(endpoint, body, NOW_MS).expect("valid");
        let record = NewRecord {
            tenant: "tenant-00001",
            generation: 0,
            stream: endpoint.code(),
            items: v.items,
            created_ms: NOW_MS,
            oldest_ms: v.oldest_ms,
            newest_ms: v.newest_ms,
            payload: &v.payload,
        };
        cpu_line(label, n, v.payload.len(), || {
            black_box(Prepared::new(black_box(&record), true).expect("fits"));
        });
    }
    // A large logs request stored ready to send (`pipeline::record`):
    // packed and gzip-1 compressed at ingest, in place of the LZ4 above
    // and of delivery's own packing.
    {
        let v = validate(Endpoint::Logs, &logs_bodies[0], NOW_MS).expect("valid");
        cpu_line(
            "queue record ready logs gzip-1",
            LOGS_PER_BODY,
            v.payload.len(),
            || {
                let ready =
                    record::pack_ready(Endpoint::Logs, Encoding::Gzip, 1, black_box(&v.payload))
                        .expect("fills a payload");
                let record = NewRecord {
                    tenant: "tenant-00001",
                    generation: 0,
                    stream: Endpoint::Logs.code(),
                    items: v.items,
                    created_ms: NOW_MS,
                    oldest_ms: v.oldest_ms,
                    newest_ms: v.newest_ms,
                    payload: &ready,
                };
                black_box(Prepared::new(&record, false).expect("fits"));
            },
        );
    }
    let gz_series = codec::compress(Encoding::Gzip, 1, &series_bodies[0]);
    let gz_logs = codec::compress(Encoding::Gzip, 1, &logs_bodies[0]);
    for (label, endpoint, body, n, raw_len) in [
        (
            "series_v2",
            Endpoint::SeriesV2,
            &gz_series,
            SERIES_PER_BODY,
            series_bodies[0].len(),
        ),
        (
            "logs",
            Endpoint::Logs,
            &gz_logs,
            LOGS_PER_BODY,
            logs_bodies[0].len(),
        ),
    ] {
        cpu_line(
            &format!("floor {label}: gunzip+Value+serialize+gzip-1"),
            n,
            raw_len,
            || {
                let raw =
                    codec::decompress(Encoding::Gzip, black_box(body), 64 << 20).expect("valid");
                let v: serde_json::Value = serde_json::from_slice(&raw).expect("valid");
                let out = serde_json::to_vec(&v).expect("serializable");
                black_box(codec::compress(Encoding::Gzip, 1, &out));
            },
        );
        let packer = Packer::new(endpoint, Encoding::Gzip, 1);
        cpu_line(
            &format!("ours  {label}: gunzip+validate+pack gzip-1"),
            n,
            raw_len,
            || {
                let raw =
                    codec::decompress(Encoding::Gzip, black_box(body), 64 << 20).expect("valid");
                let v = validate(endpoint, &raw, NOW_MS).expect("valid");
                black_box(packer.pack(&lines(&v.payload)));
            },
        );
    }

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4))
        .configure_from_args();

    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Elements(SERIES_PER_BODY as u64));
    g.bench_function("series_v2 (elements = points)", |b| {
        b.iter(|| validate(Endpoint::SeriesV2, black_box(&series_bodies[0]), NOW_MS))
    });
    g.throughput(Throughput::Bytes(logs_bodies[0].len() as u64));
    g.bench_function("logs (bytes)", |b| {
        b.iter(|| validate(Endpoint::Logs, black_box(&logs_bodies[0]), NOW_MS))
    });
    g.finish();

    let mut g = c.benchmark_group("pack");
    for (label, endpoint, items, encoding) in [
        (
            "series_v2 gzip-1",
            Endpoint::SeriesV2,
            &series_items,
            Encoding::Gzip,
        ),
        (
            "series_v2 zstd-1",
            Endpoint::SeriesV2,
            &series_items,
            Encoding::Zstd,
        ),
        ("logs gzip-1", Endpoint::Logs, &logs_items, Encoding::Gzip),
    ] {
        let bytes: usize = items.iter().map(|i| i.len() + 1).sum();
        let packer = Packer::new(endpoint, encoding, 1);
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(format!("{label} (bytes)"), |b| {
            b.iter(|| packer.pack(black_box(items)))
        });
        g.throughput(Throughput::Elements(items.len() as u64));
        g.bench_function(format!("{label} (items)"), |b| {
            b.iter(|| packer.pack(black_box(items)))
        });
    }
    g.finish();

    // The floor: what any relay pays per item if it decompresses, parses,
    // re-serializes and compresses (a naive `Value` round trip), against
    // the relay's own path (decompress + validate + pack).
    let gz_series = codec::compress(Encoding::Gzip, 1, &series_bodies[0]);
    let gz_logs = codec::compress(Encoding::Gzip, 1, &logs_bodies[0]);
    let mut g = c.benchmark_group("floor per request");
    for (label, endpoint, body, n) in [
        ("series_v2", Endpoint::SeriesV2, &gz_series, SERIES_PER_BODY),
        ("logs", Endpoint::Logs, &gz_logs, LOGS_PER_BODY),
    ] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(
            format!("{label}: gunzip + Value parse + serialize + gzip-1"),
            |b| {
                b.iter(|| {
                    let raw = codec::decompress(Encoding::Gzip, black_box(body), 64 << 20)
                        .expect("valid");
                    let v: serde_json::Value = serde_json::from_slice(&raw).expect("valid");
                    let out = serde_json::to_vec(&v).expect("serializable");
                    codec::compress(Encoding::Gzip, 1, &out)
                })
            },
        );
        let packer = Packer::new(endpoint, Encoding::Gzip, 1);
        g.bench_function(format!("{label}: gunzip + validate + pack gzip-1"), |b| {
            b.iter(|| {
                let raw =
                    codec::decompress(Encoding::Gzip, black_box(body), 64 << 20).expect("valid");
                let v = validate(endpoint, &raw, NOW_MS).expect("valid");
                packer.pack(&lines(&v.payload))
            })
        });
    }
    g.finish();
    c.final_summary();
}
