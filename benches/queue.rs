//! Throughput of the durable queue: durable appends with 1, 8 and 64
//! concurrent appenders (group commit shares one fsync among them), for
//! ~100 KB records (logs-sized requests) and 1 KB records (many small
//! requests), and take + ack of a backlog; and the latency of one durable
//! append (one appender, so one fsync each) with and without segments
//! written ahead (`Limits::preallocate`); and the process CPU per GB of a
//! steady flow (append, take, ack) with and without them (`flow`).
//!
//! Run: `cargo bench --bench queue` (or `--profile dev` on a shared
//! machine; the numbers are then pessimistic for CPU-bound parts).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ddrelay::queue::{Limits, NewRecord, Queue};

const LIMITS: Limits = Limits {
    max_bytes: 64 << 30,
    tenant_max_bytes: 64 << 30,
    held_max_bytes: 64 << 30,
    segment_bytes: 64 << 20,
    preallocate: true,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn record(payload: &[u8]) -> NewRecord<'_> {
    NewRecord {
        tenant: "bench-tenant",
        generation: 0,
        stream: 3,
        items: 100,
        created_ms: 1,
        oldest_ms: 1,
        newest_ms: 1,
        payload,
    }
}

/// One iteration: `appenders` tasks append `per_task` records each.
fn appends(c: &mut Criterion, size: usize, per_iter: usize) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, _) = Queue::open(dir.path(), LIMITS).expect("open");
    let payload: &'static [u8] = Vec::leak((0..size).map(|i| (i % 251) as u8).collect());
    let mut group = c.benchmark_group(format!("append_{}k", size / 1000));
    group.throughput(Throughput::Bytes((size * per_iter) as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for appenders in [1usize, 8, 64] {
        group.bench_with_input(
            BenchmarkId::from_parameter(appenders),
            &appenders,
            |b, &n| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        rt.block_on(async {
                            let mut tasks = Vec::with_capacity(n);
                            for _ in 0..n {
                                let q = q.clone();
                                tasks.push(tokio::spawn(async move {
                                    for _ in 0..per_iter / n {
                                        q.append(record(payload)).await.expect("append");
                                    }
                                }));
                            }
                            for t in tasks {
                                t.await.expect("task");
                            }
                        });
                        total += start.elapsed();
                        // Reclaim the space outside the timing.
                        q.purge_tenant("bench-tenant");
                    }
                    total
                });
            },
        );
    }
    group.finish();
}

fn append_100k(c: &mut Criterion) {
    appends(c, 100_000, 128);
}

fn append_1k(c: &mut Criterion) {
    appends(c, 1_000, 1024);
}

/// One appender, 1 KB records: each append is one group commit (write +
/// `fdatasync`), so the time per append is the commit latency an ingest
/// acknowledgement waits for. 1 MiB segments, so that the run crosses many
/// rolls and the written-ahead spare is in use after the first.
fn commit_latency(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("commit_1k");
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(6));
    let payload = vec![7u8; 1_000];
    for preallocate in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = Limits {
            segment_bytes: 1 << 20,
            preallocate,
            ..LIMITS
        };
        let (q, _) = Queue::open(dir.path(), limits).expect("open");
        let name = if preallocate {
            "written_ahead"
        } else {
            "plain"
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                rt.block_on(async {
                    for _ in 0..iters {
                        q.append(record(&payload)).await.expect("append");
                    }
                });
                let took = start.elapsed();
                q.purge_tenant("bench-tenant");
                took
            });
        });
        rt.block_on(q.close());
    }
    group.finish();
}

/// take(100) + ack of 1 KB and 100 KB records from a backlog.
fn take_ack(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("take_ack");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for size in [1_000usize, 100_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (q, _) = Queue::open(dir.path(), LIMITS).expect("open");
        let payload = vec![7u8; size];
        let backlog = 1000;
        group.throughput(Throughput::Bytes((size * backlog) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    rt.block_on(async {
                        for chunk in 0..backlog / 10 {
                            let _ = chunk;
                            let batch: Vec<_> = (0..10).map(|_| record(&payload)).collect();
                            q.append_batch(&batch).await.expect("append");
                        }
                    });
                    let start = Instant::now();
                    loop {
                        let t = q.take("bench-tenant", 3, 100, 8 << 20).expect("take");
                        if t.is_empty() {
                            break;
                        }
                        q.ack(&t.iter().map(|t| t.id).collect::<Vec<_>>());
                    }
                    total += start.elapsed();
                }
                total
            });
        });
    }
    group.finish();
}

/// A steady flow, as in production when delivery keeps up: 256 KB records
/// appended in batches of 4, taken and acknowledged right away, 8 GB in all
/// (so segments roll, drain and are deleted many times), with
/// and without segments written ahead. Prints process CPU per GB.
fn flow(_c: &mut Criterion) {
    let rt = runtime();
    let size = 256_000usize;
    // Incompressible enough to stand for LZ4-compressed logs.
    let payload: Vec<u8> = (0..size as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    let total: u64 = 8_000_000_000;
    for preallocate in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = Limits {
            preallocate,
            ..LIMITS
        };
        let (q, _) = Queue::open(dir.path(), limits).expect("open");
        // Every thread: the writer and the segment preparer included.
        let cpu = || ddrelay::dev::bench::proc_stat(std::process::id()).map(|p| p.cpu_seconds);
        let (cpu0, wall0) = (cpu(), Instant::now());
        let mut done = 0u64;
        rt.block_on(async {
            while done < total {
                let batch: Vec<_> = (0..4).map(|_| record(&payload)).collect();
                q.append_batch(&batch).await.expect("append");
                let t = q.take("bench-tenant", 3, 100, 8 << 20).expect("take");
                q.ack(&t.iter().map(|t| t.id).collect::<Vec<_>>());
                done += 4 * size as u64;
            }
            q.close().await;
        });
        let wall = wall0.elapsed().as_secs_f64();
        match (cpu0, cpu()) {
            (Ok(a), Ok(b)) => println!(
                "flow 256k preallocate={preallocate}: {:.2} CPU-s per GB, {:.0} MB/s",
                (b - a) / (total as f64 / 1e9),
                total as f64 / wall / 1e6
            ),
            _ => println!("flow: no process CPU clock here"),
        }
    }
}

criterion_group!(
    benches,
    append_100k,
    append_1k,
    take_ack,
    commit_latency,
    flow
);
criterion_main!(benches);
