//! `ddrelay bench`: throughput, latency, CPU and memory of the whole path,
//! partner → relay → Datadog, measured on this machine.
//!
//! It starts fakedog in counting mode (validates and counts, keeps nothing)
//! in this process, the relay as a **separate process** (`ddrelay run`, so
//! its CPU time and RSS are read from `/proc/<pid>` alone), connects N
//! tenants through the real OAuth flow, then drives keep-alive HTTP load
//! with pre-built bodies (series with tags, logs of 300 B to 2 KB, events,
//! service checks, traces as a tracing library sends them) in phases:
//! - idle RSS, before and after the tenants connect;
//! - `steady`: a mix of every kind at a fixed rate spread over every tenant
//!   (`--steady-mib`), for the peak RSS and the acknowledgement latency;
//! - `series`, `logs` and `traces`: closed-loop saturation, everything
//!   durable (202 means fsync'd) and delivered to fakedog before the phase
//!   ends;
//! - `logs_one_tenant`: the logs phase with one tenant alone, beside many;
//! - `refused`: the relay CPU a request refused from its headers costs,
//!   beside an accepted one;
//! - `latency`: open loop at half load (half the series rate the relay
//!   *delivered*, its sustainable maximum: acceptance beyond delivery only
//!   lasts until the queue quotas fill), for p50/p99/p99.9 of the ingest
//!   acknowledgement as the client sees it;
//! - end-to-end latency (202 → Datadog's 2xx) from the relay's own histogram;
//! - with `--loads`, the loads matrix (`bench/loads.rs`): every kind for one
//!   tenant and for all, at saturation and at 10, 50 and 90 % of it.
//!
//! Each saturation phase says what set its rate: the relay, fakedog or the
//! load generator (`bench/bottleneck.rs`), both of which share the relay's
//! machine and run in this process.
//!
//! The floor: the same payloads decompressed, parsed into typed values,
//! re-serialized and compressed in a tight single-thread loop (the median
//! of ten blocks of 0.25 CPU-seconds, five before the load phases and five
//! after the phase); the report gives relay CPU per item divided by floor
//! CPU per item. Beside it, diagnostics: the same floor on both CPUs at
//! once, and for traces the trace API's own stage on one thread.
//!
//! The last line printed is one JSON object with every figure.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::clock::now;
use crate::codec;
use crate::dev::fakedog::{FakeDog, Options};

mod bottleneck;
mod loads;

use crate::dev::sandbox;
use crate::site::{Encoding, Endpoint, SITES};
pub(crate) use loads::gross_regressions;

/// How to run.
#[derive(Debug, Clone)]
pub(crate) struct BenchOptions {
    pub(crate) tenants: usize,
    pub(crate) duration: Duration,
    pub(crate) concurrency: usize,
    /// Compress ingest bodies with gzip (as Datadog's clients do).
    pub(crate) gzip_ingest: bool,
    /// Series compression towards Datadog.
    pub(crate) zstd: bool,
    /// A short run for CI: checks memory bounds, not timings.
    pub(crate) smoke: bool,
    /// Series points/s for the latency phase; default half the measured
    /// delivered (sustainable) rate.
    pub(crate) latency_rate: Option<f64>,
    /// MiB/s of uncompressed JSON for the steady mixed phase (0: skipped).
    pub(crate) steady_mib_per_s: f64,
    /// Nice value of fakedog's threads (0: the relay's priority).
    pub(crate) dog_nice: i32,
    /// Series with two tags and no resource instead of five tags and a host.
    pub(crate) light_series: bool,
    /// Also run the loads matrix (`bench/loads.rs`): `Some(empty)` every
    /// load, otherwise the loads named.
    pub(crate) loads: Option<Vec<String>>,
}

/// A child relay process.
struct RelayProc {
    child: std::process::Child,
    api: std::net::SocketAddr,
    public: std::net::SocketAddr,
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) and RSS figures of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStat {
    pub cpu_seconds: f64,
    pub(crate) rss_bytes: u64,
    pub(crate) peak_rss_bytes: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn proc_stat(pid: u32) -> anyhow::Result<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(ProcStat {
        cpu_seconds: stat_cpu_seconds(&stat)?,
        rss_bytes: kb("VmRSS:"),
        peak_rss_bytes: kb("VmHWM:"),
    })
}

/// User + system CPU seconds in a process's or thread's `/proc/…/stat`
/// (the relay's own parser, `telemetry::process::parse_stat`).
pub(crate) fn stat_cpu_seconds(stat: &str) -> anyhow::Result<f64> {
    let stat = crate::telemetry::process::parse_stat(stat).context("malformed /proc stat")?;
    Ok(stat.cpu_ticks as f64 / rustix::param::clock_ticks_per_second().max(1) as f64)
}

/// The relay's high-water mark over the run so far, folded in at each
/// [`reset_peak_rss`] (the kernel's own restarts there).
static RUN_PEAK_RSS: AtomicU64 = AtomicU64::new(0);

/// Starts a phase's own high-water mark (`VmHWM`): folds the one so far
/// into the run's, then resets the kernel's (`/proc/<pid>/clear_refs`,
/// "5"). Where the kernel refuses, a phase's figure is the run's so far.
pub(crate) fn reset_peak_rss(pid: u32) -> anyhow::Result<()> {
    RUN_PEAK_RSS.fetch_max(proc_stat(pid)?.peak_rss_bytes, Ordering::Relaxed);
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    Ok(())
}

/// The relay's high-water mark over the whole run, across the resets.
pub(crate) fn run_peak_rss(pid: u32) -> anyhow::Result<u64> {
    let now = proc_stat(pid)?.peak_rss_bytes;
    Ok(RUN_PEAK_RSS.load(Ordering::Relaxed).max(now))
}

fn spawn_relay(config: &Path) -> anyhow::Result<RelayProc> {
    use std::io::BufRead as _;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    for (k, _) in std::env::vars() {
        if k.starts_with("DDRELAY_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(["run", "--config"])
        .arg(config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting the relay process")?;
    let stderr = child.stderr.take().context("relay stderr")?;
    let mut reader = std::io::BufReader::new(stderr);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut line = String::new();
    loop {
        if Instant::now() > deadline {
            bail!("the relay did not start within 60 s");
        }
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("the relay exited before starting");
        }
        if line.contains("ddrelay started") {
            let v: serde_json::Value = serde_json::from_str(&line)?;
            let api = v["api"].as_str().context("api")?.parse()?;
            let public = v["public"].as_str().context("public")?.parse()?;
            std::thread::spawn(move || for _ in reader.lines() {});
            return Ok(RelayProc { child, api, public });
        }
    }
}

/// Pre-built request bodies for one tenant.
struct Bodies {
    series: bytes::Bytes,
    series_points: u64,
    series_raw: Vec<u8>,
    logs: bytes::Bytes,
    logs_items: u64,
    logs_raw: Vec<u8>,
    event: bytes::Bytes,
    checks: bytes::Bytes,
    /// `/v0.4/traces`, uncompressed (tracers do not compress).
    traces: bytes::Bytes,
    trace_spans: u64,
}

/// The saturation phases: (kind, report label).
const PHASES: [(Endpoint, &str); 3] = [
    (Endpoint::SeriesV2, "series"),
    (Endpoint::Logs, "logs"),
    (Endpoint::Traces, "traces"),
];

impl Bodies {
    /// (uncompressed body, body on the wire, items per request) of a kind;
    /// items are spans for traces.
    fn of(&self, endpoint: Endpoint) -> (&[u8], &bytes::Bytes, u64) {
        match endpoint {
            Endpoint::SeriesV2 | Endpoint::SeriesV1 => {
                (&self.series_raw, &self.series, self.series_points)
            }
            Endpoint::Traces => (&self.traces, &self.traces, self.trace_spans),
            _ => (&self.logs_raw, &self.logs, self.logs_items),
        }
    }
}

/// Bytes per MiB, for reports.
const MIB: f64 = 1_048_576.0;

const SERIES_PER_REQUEST: usize = 1000;
const LOGS_PER_REQUEST: usize = 500;
/// Traces per request, and spans per trace, as a tracer flushes them.
const TRACES_PER_REQUEST: u64 = 50;
const SPANS_PER_TRACE: u64 = 10;

/// A `/v0.4/traces` body (MessagePack, as tracing libraries send it,
/// uncompressed): web requests with a database span and handlers below,
/// ten tags and three metrics each.
fn traces_msgpack(seed: u64) -> Vec<u8> {
    use crate::traces::msgpack::write;
    let start = crate::clock::now_ms() * 1_000_000;
    let mut b = Vec::new();
    write::array(&mut b, TRACES_PER_REQUEST as u32);
    for t in 0..TRACES_PER_REQUEST {
        write::array(&mut b, SPANS_PER_TRACE as u32);
        for s in 0..SPANS_PER_TRACE {
            let service = if s == 1 { "orders-db" } else { "orders" };
            write::map(&mut b, 11);
            write::kv_str(&mut b, "service", service);
            write::kv_str(
                &mut b,
                "name",
                if s == 0 {
                    "http.request"
                } else {
                    "handler.step"
                },
            );
            write::kv_str(
                &mut b,
                "resource",
                &format!("GET /api/v1/orders/{}", (seed + t) % 97),
            );
            write::kv_uint(&mut b, "trace_id", seed * 1_000_000 + t + 1);
            write::kv_uint(&mut b, "span_id", s + 1);
            write::kv_uint(&mut b, "parent_id", s.min(1) * s);
            write::str(&mut b, "start");
            write::sint(&mut b, start + (s as i64) * 1000);
            write::str(&mut b, "duration");
            write::sint(&mut b, 1_000_000 + ((seed + t * 7 + s) % 500) as i64 * 1000);
            write::kv_str(&mut b, "type", "web");
            write::str(&mut b, "meta");
            write::map(&mut b, 10);
            for (k, v) in [
                ("env", "prod"),
                ("version", "1.4.2"),
                ("http.method", "GET"),
                ("http.url", "https://shop.example/api/v1/orders"),
                ("http.status_code", "200"),
                ("component", "flask"),
                ("span.kind", if s == 0 { "server" } else { "internal" }),
                ("runtime-id", "a4f0c8e2-6b1d-4d2a-9c3e-5f7b8a9d0e1f"),
                ("_dd.p.dm", "-0"),
                ("language", "python"),
            ] {
                write::kv_str(&mut b, k, v);
            }
            write::str(&mut b, "metrics");
            write::map(&mut b, 3);
            write::str(&mut b, "_sampling_priority_v1");
            write::uint(&mut b, 1);
            write::str(&mut b, "_dd.measured");
            write::f64(&mut b, 1.0);
            write::str(&mut b, "process_id");
            write::uint(&mut b, 4242);
        }
    }
    b
}

/// How heavy the series bodies are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// v2: five tags and a host resource, one point (about 210 B of JSON
    /// per point).
    Heavy,
    /// v2: two tags, no resource (about 110 B per point): `--light-series`.
    Light,
    /// v1 (`/api/v1/series`): one tag, one point (about 60 B per point):
    /// the loads matrix's light series.
    Minimal,
}

/// `n` series of the given shape.
fn series_json(tenant: &str, seed: u64, n: usize, shape: Shape) -> serde_json::Value {
    let ts = now();
    if shape == Shape::Minimal {
        return json!({ "series": (0..n).map(|i| json!({
            "metric": format!("bench.m.{}", i % 50),
            "points": [[ts, (i % 1000) as f64]],
            "tags": [format!("host:h{}", (i as u64 + seed) % 200)],
        })).collect::<Vec<_>>() });
    }
    json!({ "series": (0..n).map(|i| {
        let mut s = json!({
            "metric": format!("bench.metric.{}", i % 50),
            "type": 3,
            "points": [{ "timestamp": ts, "value": (i as f64) * 1.5 }],
        });
        if shape == Shape::Light {
            s["tags"] = json!([format!("host:h{}", (i as u64 + seed) % 200), format!("customer:{tenant}")]);
        } else {
            s["tags"] = json!([format!("host:h{}", i % 200), "env:prod", format!("customer:{tenant}"), format!("shard:{}", (i as u64 + seed) % 17), "service:api"]);
            s["resources"] = json!([{ "name": format!("h{}", i % 200), "type": "host" }]);
        }
        s
    }).collect::<Vec<_>>() })
}

/// `n` logs of 300 B to 2 KB of text.
fn logs_json(tenant: &str, seed: u64, n: usize) -> serde_json::Value {
    let words = [
        "GET",
        "/api/v1/orders",
        "200",
        "user",
        "checkout",
        "completed",
        "latency_ms",
        "cache",
        "miss",
        "upstream",
        "timeout",
        "retry",
    ];
    let mut rng_state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut next = move || {
        rng_state = rng_state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng_state >> 33) as usize
    };
    serde_json::Value::Array(
        (0..n)
            .map(|i| {
                let target = 300 + next() % 1700;
                let mut msg = String::with_capacity(target);
                while msg.len() < target {
                    msg.push_str(words[next() % words.len()]);
                    msg.push(' ');
                    msg.push_str(&format!("{}", next() % 100_000));
                    msg.push(' ');
                }
                json!({ "message": msg, "service": "bench", "ddsource": "bench", "hostname": format!("h{}", i % 50), "ddtags": format!("customer:{tenant},env:prod") })
            })
            .collect(),
    )
}

fn event_json(tenant: &str) -> serde_json::Value {
    json!({ "title": format!("bench event for {tenant}"), "text": "a deployment happened", "tags": [format!("customer:{tenant}")] })
}

fn checks_json(tenant: &str) -> serde_json::Value {
    json!([{ "check": "bench.ok", "host_name": "h1", "status": 0, "tags": [format!("customer:{tenant}")], "timestamp": now() }])
}

/// A request body, shared (not copied) by every request that sends it.
fn encode_body(v: &serde_json::Value, gzip: bool) -> bytes::Bytes {
    let raw = v.to_string().into_bytes();
    if gzip {
        codec::compress(Encoding::Gzip, 1, &raw).into()
    } else {
        raw.into()
    }
}

fn bodies(tenant: &str, seed: u64, gzip: bool, shape: Shape) -> Bodies {
    let series = series_json(tenant, seed, SERIES_PER_REQUEST, shape);
    let logs = logs_json(tenant, seed, LOGS_PER_REQUEST);
    let (event, checks) = (event_json(tenant), checks_json(tenant));
    Bodies {
        series: encode_body(&series, gzip),
        series_points: SERIES_PER_REQUEST as u64,
        series_raw: series.to_string().into_bytes(),
        logs: encode_body(&logs, gzip),
        logs_items: LOGS_PER_REQUEST as u64,
        logs_raw: logs.to_string().into_bytes(),
        event: encode_body(&event, gzip),
        checks: encode_body(&checks, gzip),
        traces: traces_msgpack(seed).into(),
        trace_spans: TRACES_PER_REQUEST * SPANS_PER_TRACE,
    }
}

/// One request of the steady mixed phase.
struct MixedRequest {
    endpoint: Endpoint,
    body: bytes::Bytes,
    raw_len: usize,
    items: u64,
}

/// What a partner's backend sends for one customer at a time, in the order
/// the steady phase cycles through: 100 series, 20 logs, 100 series, 20
/// logs, one event, one service check.
fn mixed_requests(tenant: &str, seed: u64, gzip: bool) -> Vec<MixedRequest> {
    let series = series_json(tenant, seed, 100, Shape::Heavy);
    let logs = logs_json(tenant, seed, 20);
    let (event, checks) = (event_json(tenant), checks_json(tenant));
    let req = |endpoint, v: &serde_json::Value, items| MixedRequest {
        endpoint,
        body: encode_body(v, gzip),
        raw_len: v.to_string().len(),
        items,
    };
    vec![
        req(Endpoint::SeriesV2, &series, 100),
        req(Endpoint::Logs, &logs, 20),
        req(Endpoint::SeriesV2, &series, 100),
        req(Endpoint::Logs, &logs, 20),
        req(Endpoint::Events, &event, 1),
        req(Endpoint::CheckRun, &checks, 1),
    ]
}

/// Latency samples in microseconds.
#[derive(Default)]
struct Samples(parking_lot::Mutex<Vec<u32>>);

impl Samples {
    fn add(&self, d: Duration) {
        self.0
            .lock()
            .push(d.as_micros().min(u32::MAX as u128) as u32);
    }
    fn quantiles(&self) -> (f64, f64, f64) {
        let mut v = self.0.lock().clone();
        if v.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        v.sort_unstable();
        let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
        (q(0.5), q(0.99), q(0.999))
    }
}

struct Load {
    http: reqwest::Client,
    api: String,
    gzip: bool,
    backpressured: AtomicU64,
}

impl Load {
    /// The relay's `/metrics` text.
    async fn metrics(&self) -> anyhow::Result<String> {
        let url = format!("{}/metrics", self.api);
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// Items queued in the relay, over every tenant and kind, delivery's
    /// takes in flight included (the admin API's tenant list).
    async fn queued_items(&self) -> anyhow::Result<u64> {
        let list: serde_json::Value = self
            .http
            .get(format!("{}/v1/tenants", self.api))
            .bearer_auth(sandbox::ADMIN_TOKEN)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let tenants = list["tenants"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("the tenant list has no tenants array"))?;
        Ok(tenants
            .iter()
            .map(|t| t["queued_items"].as_u64().unwrap_or(0))
            .sum())
    }

    async fn post(
        &self,
        tenant: &str,
        endpoint: Endpoint,
        body: &bytes::Bytes,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        // Traces go to the Agent's trace API, as a tracer sends them.
        let (path, content_type, gzip) = match endpoint {
            Endpoint::Traces => ("/v0.4/traces", "application/msgpack", false),
            _ => (endpoint.path(), "application/json", self.gzip),
        };
        loop {
            let mut req = self
                .http
                .post(format!("{}{path}", self.api))
                .header("DD-API-KEY", tenant)
                .header("Content-Type", content_type)
                .body(body.clone());
            if gzip {
                req = req.header("Content-Encoding", "gzip");
            }
            let resp = req.send().await?;
            let status = resp.status();
            let _ = resp.bytes().await;
            match status.as_u16() {
                200 | 202 => return Ok(started.elapsed()),
                // Backpressure (queue share or disk budget full): a
                // well-behaved client waits and retries; the bench counts it.
                429 | 503 => {
                    self.backpressured.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => bail!("{} answered {status}", endpoint.path()),
            }
        }
    }
}

/// One closed-loop phase: `concurrency` workers post `endpoint` bodies for
/// `duration`; returns (requests, wall seconds).
async fn closed_loop(
    load: &Arc<Load>,
    tenants: &Arc<Vec<(String, Arc<Bodies>)>>,
    endpoint: Endpoint,
    concurrency: usize,
    duration: Duration,
    samples: &Arc<Samples>,
) -> anyhow::Result<(u64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (load, tenants, stop, done, samples) = (
            load.clone(),
            tenants.clone(),
            stop.clone(),
            done.clone(),
            samples.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let (tenant, b) = &tenants[i % tenants.len()];
                i += concurrency;
                let body = match endpoint {
                    Endpoint::SeriesV2 | Endpoint::SeriesV1 => &b.series,
                    Endpoint::Logs => &b.logs,
                    Endpoint::Traces => &b.traces,
                    Endpoint::Events => &b.event,
                    _ => &b.checks,
                };
                samples.add(load.post(tenant, endpoint, body).await?);
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok((
        done.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    ))
}

/// Open loop: requests at `rate` per second for `duration`, whatever the
/// answers' latency (a late answer does not delay the next request), the
/// k-th request being `request(k)`. Waits for every answer; returns how
/// many were sent. The schedule catches up in small bursts rather than
/// relying on a timer finer than the runtime's millisecond resolution.
async fn open_loop<F, Fut>(rate: f64, duration: Duration, request: F) -> anyhow::Result<usize>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let started = Instant::now();
    let mut inflight = tokio::task::JoinSet::new();
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = (elapsed.as_secs_f64() * rate) as usize + 1;
        while sent < due {
            inflight.spawn(request(sent));
            sent += 1;
        }
        while let Some(r) = inflight.try_join_next() {
            r??;
        }
    }
    while let Some(r) = inflight.join_next().await {
        r??;
    }
    Ok(sent)
}

/// Samples a process's RSS every 50 ms until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(st) = proc_stat(pid) {
                    seen.push(st.rss_bytes);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        });
        RssSampler { stop, task }
    }

    /// (maximum, mean of the second half) in MiB.
    async fn finish(self) -> anyhow::Result<(f64, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.task.await?;
        let mib = |b: u64| b as f64 / MIB;
        let max = seen.iter().copied().max().map(mib).unwrap_or(0.0);
        let tail = &seen[seen.len() / 2..];
        let mean = if tail.is_empty() {
            0.0
        } else {
            tail.iter().map(|b| mib(*b)).sum::<f64>() / tail.len() as f64
        };
        Ok((max, mean))
    }
}

fn total_items(dog: &FakeDog, endpoint: Endpoint) -> u64 {
    SITES
        .iter()
        .map(|s| dog.host_item_count(&s.host(endpoint.host_kind()), endpoint))
        .sum()
}

/// Waits until fakedog holds `n` items of `endpoint`, then until the
/// relay's queue is empty: what a phase's requests made besides (the
/// trace stats computed from its spans) is delivered, and its cost
/// charged, before the phase's figures are taken, not in the next phase.
/// Returns how long the items took: trace stats may wait for their own
/// batch age (`delivery.stats_max_age`), which is not the spans' delivery
/// rate.
async fn wait_delivered(
    dog: &FakeDog,
    load: &Load,
    endpoint: Endpoint,
    n: u64,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while total_items(dog, endpoint) < n {
        if started.elapsed() > timeout {
            bail!(
                "{endpoint}: only {} of {n} items delivered within {timeout:?}",
                total_items(dog, endpoint)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let items_took = started.elapsed();
    // The tenant list costs the relay CPU, which the phase is charged:
    // asked at growing intervals (about 15 times over 10 s).
    let mut every = Duration::from_millis(20);
    loop {
        let queued = load.queued_items().await?;
        if queued == 0 {
            return Ok(items_took);
        }
        if started.elapsed() > timeout {
            bail!("{endpoint}: {queued} items still queued in the relay after {timeout:?}");
        }
        tokio::time::sleep(every).await;
        every = (every * 2).min(Duration::from_secs(1));
    }
}

/// CPU seconds per item of `round` (which handles `items` items) on this
/// thread, in each of five blocks of at least a quarter CPU-second (the
/// caller takes a median).
fn cpu_per_item(items: u64, mut round: impl FnMut()) -> Vec<f64> {
    const BLOCKS: usize = 5;
    const BLOCK_CPU: f64 = 0.25;
    let mut per_item = Vec::with_capacity(BLOCKS);
    for _ in 0..BLOCKS {
        let started = cpu_now();
        let mut rounds = 0u64;
        while rounds == 0 || cpu_now() - started < BLOCK_CPU {
            round();
            rounds += 1;
        }
        per_item.push((cpu_now() - started) / (rounds as f64 * items as f64));
    }
    per_item
}

/// The single-thread floor of a kind's bodies, on a blocking thread:
/// decompress (if compressed), parse into typed values (borrowing serde
/// structs for the bench's series and logs), re-serialize, compress at
/// level 1 ([`floor_round`]). CPU seconds per item of each of five blocks.
fn floor_blocks(
    bodies: &Bodies,
    endpoint: Endpoint,
    opts: &BenchOptions,
) -> tokio::task::JoinHandle<Vec<f64>> {
    let (items, round) = floor_job(bodies, endpoint, opts);
    tokio::task::spawn_blocking(move || cpu_per_item(items, round))
}

/// One request of a kind through the floor ([`floor_round`] on a copy of
/// its bodies), and the items it handles.
fn floor_job(
    bodies: &Bodies,
    endpoint: Endpoint,
    opts: &BenchOptions,
) -> (u64, impl FnMut() + Send + 'static) {
    let (raw, wire, per_req) = bodies.of(endpoint);
    let encoding = if endpoint == Endpoint::SeriesV2 && opts.zstd {
        Encoding::Zstd
    } else {
        Encoding::Gzip
    };
    let gzip = opts.gzip_ingest && endpoint != Endpoint::Traces;
    let (raw, wire) = (raw.to_vec(), wire.clone());
    (per_req, move || {
        floor_round(&raw, &wire, gzip, endpoint, encoding)
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One request through the floor: decompress, parse into typed values,
/// re-serialize, compress.
fn floor_round(raw: &[u8], wire: &[u8], gzip: bool, endpoint: Endpoint, encoding: Encoding) {
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Point {
        timestamp: i64,
        value: f64,
    }
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Resource<'a> {
        #[serde(borrow)]
        name: std::borrow::Cow<'a, str>,
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Series<'a> {
        #[serde(borrow)]
        metric: std::borrow::Cow<'a, str>,
        #[serde(rename = "type", default)]
        kind: Option<i32>,
        points: Vec<Point>,
        #[serde(borrow, default)]
        tags: Vec<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
        resources: Vec<Resource<'a>>,
    }
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Payload<'a> {
        #[serde(borrow)]
        series: Vec<Series<'a>>,
    }
    #[derive(serde::Deserialize, serde::Serialize)]
    struct SeriesV1<'a> {
        #[serde(borrow)]
        metric: std::borrow::Cow<'a, str>,
        points: Vec<(f64, f64)>,
        #[serde(borrow, default)]
        tags: Vec<std::borrow::Cow<'a, str>>,
    }
    #[derive(serde::Deserialize, serde::Serialize)]
    struct PayloadV1<'a> {
        #[serde(borrow)]
        series: Vec<SeriesV1<'a>>,
    }
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Log<'a> {
        #[serde(borrow)]
        message: std::borrow::Cow<'a, str>,
        #[serde(borrow, default)]
        service: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        ddsource: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        hostname: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        ddtags: Option<std::borrow::Cow<'a, str>>,
    }
    if endpoint == Endpoint::Traces {
        return trace_floor_round(raw, encoding);
    }
    let body = if gzip {
        codec::decompress(Encoding::Gzip, wire, 64 << 20).unwrap_or_default()
    } else {
        raw.to_vec()
    };
    let out = match endpoint {
        Endpoint::SeriesV2 => serde_json::from_slice::<Payload>(&body)
            .ok()
            .and_then(|p| serde_json::to_vec(&p).ok()),
        Endpoint::SeriesV1 => serde_json::from_slice::<PayloadV1>(&body)
            .ok()
            .and_then(|p| serde_json::to_vec(&p).ok()),
        _ => serde_json::from_slice::<Vec<Log>>(&body)
            .ok()
            .and_then(|l| serde_json::to_vec(&l).ok()),
    }
    .unwrap_or_default();
    let c = codec::compress(encoding, 1, &out);
    std::hint::black_box(c);
}

/// The traces floor: decode the MessagePack into typed spans whose
/// strings borrow the body (as the JSON kinds' floors borrow theirs, and
/// with the relay's own decoder), encode them as a protobuf
/// `AgentPayload` (one tracer payload per trace, as the relay's items),
/// compress at level 1.
fn trace_floor_round(raw: &[u8], encoding: Encoding) {
    use crate::traces::{ChunkHead, agent_payload_tail, decode};
    let traces = decode::v04(raw).unwrap_or_default();
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 4);
    let mut lens = Vec::new();
    let head = ChunkHead::default();
    for spans in &traces {
        let size = head.size(spans, &mut lens);
        head.write(&mut out, spans, &lens, size);
    }
    out.extend_from_slice(agent_payload_tail());
    let c = codec::compress(encoding, 1, &out);
    std::hint::black_box(c);
}

/// The machine's (busy, total) CPU time in clock ticks, from /proc/stat.
fn machine_busy() -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("no cpu line in /proc/stat")?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    let total: f64 = ticks.iter().take(8).sum();
    Ok((total - idle, total))
}

/// This thread's CPU seconds.
fn cpu_now() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok())
        })
        .map(|ns| ns / 1e9)
        .unwrap_or(0.0)
}

/// One of the performance targets for this 2-core machine (BENCHMARKS.md
/// "Where the performance targets stand"), beside its figure.
struct Target {
    key: &'static str,
    name: &'static str,
    limit: f64,
    /// The figure must be at most `limit` (else at least).
    at_most: bool,
    measured: Option<f64>,
}

impl Target {
    fn met(&self) -> Option<bool> {
        self.measured.map(|m| {
            if self.at_most {
                m <= self.limit
            } else {
                m >= self.limit
            }
        })
    }
}

/// The targets, read off a finished report. A memory target that is about
/// a tenant count is "not measured" at other counts.
fn targets(report: &serde_json::Value, opts: &BenchOptions) -> Vec<Target> {
    let f = |v: &serde_json::Value| v.as_f64();
    let per_cpu_s = |phase: &str, per: f64| {
        f(&report[phase]["relay_cpu_seconds_per_million_items"])
            .filter(|c| *c > 0.0)
            .map(|c| per / c)
    };
    let logs_mb_per_cpu_s = f(&report["logs"]["relay_cpu_seconds_per_gb"])
        .filter(|c| *c > 0.0)
        .map(|c| 1000.0 / c);
    let tenants = opts.tenants;
    let target = |key, name, limit, at_most, measured| Target {
        key,
        name,
        limit,
        at_most,
        measured,
    };
    vec![
        target(
            "series_relay_over_floor",
            "relay CPU per series point / floor",
            1.5,
            true,
            f(&report["series"]["relay_over_floor"]),
        ),
        target(
            "logs_relay_over_floor",
            "relay CPU per log / floor",
            1.5,
            true,
            f(&report["logs"]["relay_over_floor"]),
        ),
        target(
            "series_points_per_cpu_second",
            "series points per relay CPU-second",
            1.5e6,
            false,
            per_cpu_s("series", 1e6),
        ),
        target(
            "logs_mb_per_cpu_second",
            "MB of logs per relay CPU-second",
            100.0,
            false,
            logs_mb_per_cpu_s,
        ),
        target(
            "traces_relay_over_floor",
            "relay CPU per span / floor",
            1.5,
            true,
            f(&report["traces"]["relay_over_floor"]),
        ),
        target(
            "logs_one_tenant_over_many",
            "one tenant's logs throughput / many tenants'",
            0.9,
            false,
            f(&report["logs_one_tenant"]["over_many_tenants"]),
        ),
        target(
            "refused_over_accepted_cpu",
            "relay CPU per refused / accepted request",
            0.1,
            true,
            f(&report["refused"]["refused_over_accepted"]),
        ),
        target(
            "half_load_ack_p99_ms",
            "ingest ack p99 at half load, ms",
            5.0,
            true,
            f(&report["half_load"]["ingest_ack_ms"]["p99"]),
        ),
        target(
            "idle_rss_mib",
            "idle RSS, MiB",
            16.0,
            true,
            f(&report["idle_rss_mib"]),
        ),
        target(
            "peak_rss_mib",
            "peak RSS over the whole run, MiB",
            128.0,
            true,
            f(&report["peak_rss_mib"]),
        ),
        target(
            "steady_10mib_1000_tenants_peak_rss_mib",
            "peak RSS at 10 MiB/s over 1,000 tenants, MiB",
            64.0,
            true,
            f(&report["steady"]["peak_rss_mib"])
                .filter(|_| tenants == 1000 && opts.steady_mib_per_s == 10.0),
        ),
        target(
            "idle_10000_tenants_rss_mib",
            "idle RSS with 10,000 tenants connected, MiB",
            100.0,
            true,
            f(&report["idle_connected_rss_mib"]).filter(|_| tenants == 10_000),
        ),
    ]
}

/// The relay's Prometheus histogram `name`, summed over its label sets:
/// (upper bound, cumulative count) by ascending bound.
fn histogram_buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket");
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in metrics.lines().filter(|l| l.starts_with(&prefix)) {
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("+Inf");
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        let count: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0.0);
        buckets.push((le, count));
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f64, f64)> = Vec::new();
    for (le, c) in buckets {
        match merged.last_mut() {
            Some((l, total)) if *l == le => *total += c,
            _ => merged.push((le, c)),
        }
    }
    merged
}

/// p50, p99 and p99.9 in milliseconds (bucket upper bounds) of cumulative
/// buckets; zeros when empty.
fn bucket_quantiles(buckets: &[(f64, f64)]) -> (f64, f64, f64) {
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    if total == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let q = |p: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= p * total)
            .map(|(le, _)| le * 1000.0)
            .unwrap_or(0.0)
    };
    (q(0.5), q(0.99), q(0.999))
}

/// Reads quantiles from the relay's Prometheus histogram `name`.
fn histogram_quantiles(metrics: &str, name: &str) -> (f64, f64, f64) {
    bucket_quantiles(&histogram_buckets(metrics, name))
}

/// Quantiles of what histogram `name` recorded between two scrapes.
fn histogram_delta_quantiles(before: &str, after: &str, name: &str) -> (f64, f64, f64) {
    let before = histogram_buckets(before, name);
    let delta: Vec<(f64, f64)> = histogram_buckets(after, name)
        .into_iter()
        .map(|(le, c)| {
            let was = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, c - was)
        })
        .collect();
    bucket_quantiles(&delta)
}

/// The steady phase: `mib_per_s` MiB/s of uncompressed JSON, a mix of all
/// four kinds (see [`mixed_requests`]), spread round-robin over every
/// tenant in an open loop, everything delivered before it ends. Memory at a
/// given rate over many tenants is its figure of interest.
async fn steady_phase(
    dog: &FakeDog,
    load: &Arc<Load>,
    names: &[String],
    gzip: bool,
    mib_per_s: f64,
    duration: Duration,
    pid: u32,
) -> anyhow::Result<serde_json::Value> {
    const KINDS: [Endpoint; 4] = [
        Endpoint::SeriesV2,
        Endpoint::Logs,
        Endpoint::Events,
        Endpoint::CheckRun,
    ];
    let sets: Vec<Arc<Vec<MixedRequest>>> = (0..names.len().min(64))
        .map(|i| Arc::new(mixed_requests(&names[i], i as u64, gzip)))
        .collect();
    let first = sets.first().context("no tenants")?;
    let mean_raw = first.iter().map(|r| r.raw_len).sum::<usize>() as f64 / first.len() as f64;
    let rate = mib_per_s * MIB / mean_raw;
    let tenants: Arc<Vec<(String, Arc<Vec<MixedRequest>>)>> = Arc::new(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), sets[i % sets.len()].clone()))
            .collect(),
    );
    let before: Vec<u64> = KINDS.iter().map(|e| total_items(dog, *e)).collect();
    let items: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let raw_bytes = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(Samples::default());
    let cpu0 = proc_stat(pid)?.cpu_seconds;
    let rss = RssSampler::start(pid);
    let started = Instant::now();
    let n = tenants.len();
    let sent = open_loop(rate, duration, |k| {
        let (load, tenants, samples, items, raw_bytes) = (
            load.clone(),
            tenants.clone(),
            samples.clone(),
            items.clone(),
            raw_bytes.clone(),
        );
        async move {
            let (tenant, reqs) = &tenants[k % n];
            // Shifted every round so each tenant sends every kind.
            let r = &reqs[(k + k / n) % reqs.len()];
            samples.add(load.post(tenant, r.endpoint, &r.body).await?);
            let slot = KINDS.iter().position(|e| *e == r.endpoint).unwrap_or(0);
            items[slot].fetch_add(r.items, Ordering::Relaxed);
            raw_bytes.fetch_add(r.raw_len as u64, Ordering::Relaxed);
            anyhow::Ok(())
        }
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    for (i, e) in KINDS.iter().enumerate() {
        let n = before[i] + items[i].load(Ordering::Relaxed);
        wait_delivered(dog, load, *e, n, Duration::from_secs(120)).await?;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let (rss_max, rss_steady) = rss.finish().await?;
    let cpu = proc_stat(pid)?.cpu_seconds - cpu0;
    let (p50, p99, p999) = samples.quantiles();
    let all_items: u64 = items.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    Ok(json!({
        "target_mib_per_s": mib_per_s,
        "accepted_mib_per_s": raw_bytes.load(Ordering::Relaxed) as f64 / secs / MIB,
        "requests_per_s": sent as f64 / secs,
        "items_per_s": all_items as f64 / secs,
        "tenants": n,
        "relay_cpu_cores": cpu / total_secs,
        "ingest_ack_ms": { "p50": p50, "p99": p99, "p999": p999 },
        "drain_after_load_s": total_secs - secs,
        "rss_max_mib": rss_max,
        "rss_steady_mib": rss_steady,
    }))
}

/// Runs the benchmark and prints the report; the last line is JSON.
/// A saturation phase's raw figures.
struct Saturated {
    requests: u64,
    /// Seconds of load.
    secs: f64,
    /// Seconds until the last item was delivered (load and drain).
    total_secs: f64,
    drain: Duration,
    /// Relay CPU-seconds over the phase, drain included.
    cpu: f64,
    st: ProcStat,
    /// Who set the phase's rate.
    shares: bottleneck::Shares,
}

/// Posts `endpoint` bodies for `tenants` in a closed loop for the run's
/// duration, then waits until fakedog has every item.
#[allow(clippy::too_many_arguments)]
async fn saturate(
    dog: &FakeDog,
    load: &Arc<Load>,
    tenants: &Arc<Vec<(String, Arc<Bodies>)>>,
    endpoint: Endpoint,
    per_req: u64,
    opts: &BenchOptions,
    samples: &Arc<Samples>,
    pid: u32,
) -> anyhow::Result<Saturated> {
    load.backpressured.store(0, Ordering::Relaxed);
    let before_items = total_items(dog, endpoint);
    reset_peak_rss(pid)?;
    let start = bottleneck::Mark::now(dog, pid)?;
    let (requests, secs) = closed_loop(
        load,
        tenants,
        endpoint,
        opts.concurrency,
        opts.duration,
        samples,
    )
    .await?;
    let accepted = bottleneck::Mark::now(dog, pid)?;
    let expected = before_items + requests * per_req;
    let drain = wait_delivered(dog, load, endpoint, expected, Duration::from_secs(300)).await?;
    let st = proc_stat(pid)?;
    let delivered = bottleneck::Mark::now(dog, pid)?;
    let shares = bottleneck::Shares::between(&start, &accepted, &delivered);
    if shares.bottleneck() != bottleneck::Bottleneck::Relay {
        println!(
            "{endpoint} for {} tenant(s): the {} set this phase's rate, not the relay: {}",
            tenants.len(),
            shares.bottleneck().name(),
            shares.to_json()
        );
    }
    Ok(Saturated {
        requests,
        secs,
        total_secs: secs + accepted.at.elapsed().as_secs_f64().min(drain.as_secs_f64()),
        drain,
        cpu: delivered.relay_cpu - start.relay_cpu,
        st,
        shares,
    })
}

/// The logs saturation phase again with one tenant alone: one large tenant
/// must reach the many-tenant throughput (several payloads of one stream
/// in flight).
async fn one_tenant_phase(
    dog: &FakeDog,
    load: &Arc<Load>,
    tenants: &Arc<Vec<(String, Arc<Bodies>)>>,
    bodies: &Bodies,
    opts: &BenchOptions,
    pid: u32,
    report: &serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let one = Arc::new(tenants[..1].to_vec());
    let samples = Arc::new(Samples::default());
    let s = saturate(
        dog,
        load,
        &one,
        Endpoint::Logs,
        bodies.logs_items,
        opts,
        &samples,
        pid,
    )
    .await?;
    let raw = bodies.logs_raw.len() as f64 * s.requests as f64;
    let delivered = raw / s.total_secs / 1e6;
    let many = report["logs"]["delivered_mb_per_s"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "tenant": one[0].0,
        "accepted_mb_per_s": raw / s.secs / 1e6,
        "delivered_mb_per_s": delivered,
        "many_tenants_delivered_mb_per_s": many,
        "over_many_tenants": delivered / many.max(1e-9),
        "relay_cpu_seconds_per_gb": s.cpu / (raw / 1e9),
        "backpressured_requests": load.backpressured.load(Ordering::Relaxed),
        "bottleneck": s.shares.to_json(),
    }))
}

/// The same logs bodies for a tenant the relay does not know, closed loop:
/// refused from the headers (`404 unknown_tenant`) before the body is
/// read. A full share or queue (`429`/`503`) is decided at the same point
/// (`Queue::admits`, ingest/api.rs), so this is the CPU a refusal costs.
async fn refused_phase(
    load: &Arc<Load>,
    body: &bytes::Bytes,
    opts: &BenchOptions,
    pid: u32,
    report: &serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let cpu0 = proc_stat(pid)?.cpu_seconds;
    let mut tasks = Vec::new();
    for _ in 0..opts.concurrency {
        let (load, body, stop, done) = (load.clone(), body.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut req = load
                    .http
                    .post(format!("{}{}", load.api, Endpoint::Logs.path()))
                    .header("DD-API-KEY", "tenant-never-connected")
                    .header("Content-Type", "application/json")
                    .body(body.clone());
                if load.gzip {
                    req = req.header("Content-Encoding", "gzip");
                }
                let status = req.send().await?.status();
                if status != reqwest::StatusCode::NOT_FOUND {
                    bail!("an unknown tenant's request answered {status}");
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(opts.duration.min(Duration::from_secs(5))).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let requests = done.load(Ordering::Relaxed);
    let refused_us = (proc_stat(pid)?.cpu_seconds - cpu0) / requests.max(1) as f64 * 1e6;
    let accepted_us = report["logs"]["relay_cpu_us_per_request"]
        .as_f64()
        .unwrap_or(0.0);
    Ok(json!({
        "requests": requests,
        "relay_cpu_us_per_refused_request": refused_us,
        "relay_cpu_us_per_accepted_request": accepted_us,
        "refused_over_accepted": refused_us / accepted_us.max(1e-9),
        "note": "logs requests of the logs phase's size; refused: unknown tenant, from the headers",
    }))
}

pub(crate) async fn run(opts: BenchOptions) -> anyhow::Result<serde_json::Value> {
    if let Some(only) = &opts.loads {
        loads::check_names(only)?;
    }
    let dir = tempfile::tempdir()?;
    // fakedog gets its own runtime and threads, so its work (decompressing
    // and validating every delivery) never delays the load generator's
    // clock readings: client-side latencies are the relay's.
    let (dog_tx, dog_rx) = tokio::sync::oneshot::channel();
    let dog_nice = opts.dog_nice;
    std::thread::Builder::new()
        .name("fakedog".into())
        .spawn(move || {
            // fakedog stands in for Datadog, which is not on the relay's
            // machine in production: its threads run at the lowest priority
            // so its work competes with the relay only for idle CPU (unless
            // --dog-nice 0 asks for the same priority as the relay).
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                // Named, and kept (blocking threads too), so a phase can
                // read fakedog's CPU apart from the load generator's.
                .thread_name(bottleneck::FAKEDOG_THREADS)
                .thread_keep_alive(Duration::from_secs(24 * 3600))
                .on_thread_start(move || crate::pipeline::background::lower_priority(dog_nice))
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = dog_tx.send(Err(anyhow::anyhow!("fakedog runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let started = FakeDog::start(Options {
                    counting: true,
                    auto_consent: true,
                    ..Options::default()
                })
                .await;
                let _ = dog_tx.send(started.map_err(anyhow::Error::from));
                std::future::pending::<()>().await;
            });
        })?;
    let dog = dog_rx.await??;
    sandbox::register_client(&dog)?;
    let key = crate::secret::MasterKey::generate().to_base64();
    let config = dir.path().join("ddrelay.toml");
    let compression = if opts.zstd { "zstd" } else { "gzip" };
    let extra = format!(
        "[delivery]\nbatch_max_age = \"200ms\"\ncompression = \"{compression}\"\nmax_concurrency = 32\n[queue]\nmax_bytes = \"4GiB\"\ntenant_max_bytes = \"1GiB\"\n[log]\nformat = \"json\"\nlevel = \"warn,ddrelay=info\"\n"
    );
    std::fs::write(
        &config,
        sandbox::config_text(&dog, &dir.path().join("data"), key.expose(), &extra),
    )?;
    let relay = spawn_relay(&config)?;
    let pid = relay.child.id();
    let idle = proc_stat(pid)?;
    println!(
        "relay pid {pid}: idle RSS {:.1} MiB",
        idle.rss_bytes as f64 / MIB
    );

    // Tenants: one fakedog org each, connected through the OAuth flow.
    let admin = reqwest::Client::builder().no_proxy().build()?;
    let api = format!("http://{}", relay.api);
    let connect_started = Instant::now();
    let browser = dog.browser(&[(sandbox::RELAY_HOST, relay.public)])?;
    let mut names = Vec::with_capacity(opts.tenants);
    let connects = futures_util::stream::iter(0..opts.tenants).map(|i| {
        let (dog, admin, api, browser) = (&dog, &admin, &api, &browser);
        async move {
            let site = &SITES[i % SITES.len()];
            let name = format!("tenant-{i:05}");
            let org = dog.create_org(&name, site)?;
            let v: serde_json::Value = admin
                .post(format!("{api}/v1/tenants/{name}/connect"))
                .bearer_auth(sandbox::ADMIN_TOKEN)
                .json(&json!({ "site": site.domain }))
                .send()
                .await?
                .json()
                .await?;
            let url = v["authorize_url"].as_str().context("authorize_url")?;
            let url = format!("{url}&dd_oid={}", org.id);
            let page = browser.authorize(&url).await?;
            if page.status != 200 {
                bail!("{name}: callback answered {}", page.status);
            }
            anyhow::Ok(name)
        }
    });
    use futures_util::StreamExt as _;
    let mut results = connects.buffer_unordered(16);
    while let Some(r) = results.next().await {
        names.push(r?);
    }
    names.sort();
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let idle_connected = proc_stat(pid)?;
    println!(
        "connected {} tenants in {:.1} s; idle RSS with them {:.1} MiB",
        names.len(),
        connect_secs,
        idle_connected.rss_bytes as f64 / MIB
    );

    // Pre-built bodies (at most 64 distinct sets, reused across tenants).
    let sets: Vec<Arc<Bodies>> = (0..names.len().min(64))
        .map(|i| {
            Arc::new(bodies(
                &names[i],
                i as u64,
                opts.gzip_ingest,
                if opts.light_series {
                    Shape::Light
                } else {
                    Shape::Heavy
                },
            ))
        })
        .collect();
    let tenants: Arc<Vec<(String, Arc<Bodies>)>> = Arc::new(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), sets[i % sets.len()].clone()))
            .collect(),
    );
    let load = Arc::new(Load {
        http: reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?,
        api: api.clone(),
        gzip: opts.gzip_ingest,
        backpressured: AtomicU64::new(0),
    });

    let mut report = serde_json::Map::new();
    report.insert("machine".into(), json!({ "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim() }));
    report.insert("tenants".into(), json!(names.len()));
    report.insert("gzip_ingest".into(), json!(opts.gzip_ingest));
    report.insert("series_compression".into(), json!(compression));
    report.insert("dog_nice".into(), json!(opts.dog_nice));
    report.insert("light_series".into(), json!(opts.light_series));
    report.insert("idle_rss_mib".into(), json!(idle.rss_bytes as f64 / MIB));
    report.insert(
        "idle_connected_rss_mib".into(),
        json!(idle_connected.rss_bytes as f64 / MIB),
    );
    report.insert("connect_seconds".into(), json!(connect_secs));

    // The steady phase runs first, so the process's peak RSS (VmHWM) after
    // it is the peak under steady load, not under the saturation below.
    if opts.steady_mib_per_s > 0.0 {
        let mut figures = steady_phase(
            &dog,
            &load,
            &names,
            opts.gzip_ingest,
            opts.steady_mib_per_s,
            opts.duration,
            pid,
        )
        .await?;
        figures["peak_rss_mib"] = json!(proc_stat(pid)?.peak_rss_bytes as f64 / MIB);
        println!("steady: {}", serde_json::to_string_pretty(&figures)?);
        report.insert("steady".into(), figures);
    }

    // The floors: five blocks before the load phases (the relay idle) and
    // five after each phase, median of the ten. This VM's speed drifts by a
    // third over minutes (one 20-request loop after each phase, as before,
    // swung that much from run to run, and five blocks before the phases
    // too), where the relay's CPU is summed over a whole phase.
    let measure_floor = |endpoint: Endpoint| floor_blocks(&sets[0], endpoint, &opts);
    let mut floors = HashMap::new();
    for (endpoint, label) in PHASES {
        floors.insert(label, measure_floor(endpoint).await?);
    }

    let mut peak = idle_connected.peak_rss_bytes;
    for (endpoint, label) in PHASES {
        let samples = Arc::new(Samples::default());
        let (raw, wire, per_req) = sets[0].of(endpoint);
        let Saturated {
            requests,
            secs,
            total_secs,
            drain,
            cpu,
            st,
            shares,
        } = saturate(
            &dog, &load, &tenants, endpoint, per_req, &opts, &samples, pid,
        )
        .await?;
        peak = peak.max(st.peak_rss_bytes);
        let items = requests * per_req;
        let raw_bytes = raw.len() as f64 * requests as f64;
        let wire_bytes = wire.len() as f64 * requests as f64;
        let (p50, p99, p999) = samples.quantiles();
        let mut blocks = floors.remove(label).unwrap_or_default();
        blocks.extend(measure_floor(endpoint).await?);
        let floor_per_item = median(blocks);
        // The same floor on two threads at once, every CPU busy as the
        // relay's are at saturation: what sharing the machine costs the
        // same work (caches, memory bandwidth, the host's scheduling), a
        // cause outside the relay's code. The target stays the one-thread
        // floor.
        let (a, b) = tokio::join!(measure_floor(endpoint), measure_floor(endpoint));
        let floor_two_busy = median([a?, b?].concat());
        let relay_per_item = cpu / items.max(1) as f64;
        // Where a span's CPU goes: the trace API's own work on one thread
        // (decode, span rules, stats, items), beside the floor.
        let stage = match endpoint {
            Endpoint::Traces => {
                let raw = raw.to_vec();
                let blocks = tokio::task::spawn_blocking(move || {
                    cpu_per_item(per_req, || {
                        std::hint::black_box(crate::ingest::traces::stage_for_bench(&raw));
                    })
                })
                .await?;
                Some(median(blocks) * 1e6)
            }
            _ => None,
        };
        let figures = json!({
            "accepted_items_per_s": items as f64 / secs,
            "accepted_mb_per_s": raw_bytes / secs / 1e6,
            "delivered_items_per_s": items as f64 / total_secs,
            "delivered_mb_per_s": raw_bytes / total_secs / 1e6,
            "ingest_wire_mb": wire_bytes / 1e6,
            "relay_cpu_seconds": cpu,
            "relay_cpu_seconds_per_million_items": relay_per_item * 1e6,
            "relay_cpu_seconds_per_gb": cpu / (raw_bytes / 1e9),
            "relay_cpu_us_per_request": cpu / requests.max(1) as f64 * 1e6,
            "floor_cpu_seconds_per_million_items": floor_per_item * 1e6,
            "relay_over_floor": relay_per_item / floor_per_item.max(1e-12),
            "ingest_stage_cpu_seconds_per_million_items": stage,
            "floor_both_cpus_busy_cpu_seconds_per_million_items": floor_two_busy * 1e6,
            "ingest_ack_ms": { "p50": p50, "p99": p99, "p999": p999 },
            "drain_after_load_s": drain.as_secs_f64(),
            "rss_mib": st.rss_bytes as f64 / MIB,
            "backpressured_requests": load.backpressured.load(Ordering::Relaxed),
            "bottleneck": shares.to_json(),
        });
        println!("{label}: {}", serde_json::to_string_pretty(&figures)?);
        report.insert(label.into(), figures);
    }
    if tenants.len() > 1 {
        let one = one_tenant_phase(&dog, &load, &tenants, &sets[0], &opts, pid, &report).await?;
        println!("logs, one tenant: {}", serde_json::to_string_pretty(&one)?);
        report.insert("logs_one_tenant".into(), one);
    }
    let refused = refused_phase(&load, &sets[0].logs, &opts, pid, &report).await?;
    if let Some(only) = &opts.loads {
        let light: Arc<Vec<(String, Arc<Bodies>)>> = Arc::new(
            tenants
                .iter()
                .enumerate()
                .map(|(i, (n, _))| {
                    (
                        n.clone(),
                        Arc::new(bodies(n, i as u64, opts.gzip_ingest, Shape::Minimal)),
                    )
                })
                .collect(),
        );
        let setup = loads::Setup {
            dog: &dog,
            load: &load,
            heavy: &tenants,
            light: &light,
            opts: &opts,
            only,
            pid,
        };
        report.insert("loads".into(), loads::run(&setup).await?);
    }
    println!("refused: {}", serde_json::to_string_pretty(&refused)?);
    report.insert("refused".into(), refused);

    // Latency at half load, open loop. Load is what the relay sustains:
    // its delivered rate (accepted runs ahead of delivery in a saturation
    // burst only until the queue quotas fill).
    let series_rate = opts.latency_rate.unwrap_or_else(|| {
        report["series"]["delivered_items_per_s"]
            .as_f64()
            .unwrap_or(0.0)
            / 2.0
    });
    let req_rate = (series_rate / SERIES_PER_REQUEST as f64).max(1.0);
    let samples = Arc::new(Samples::default());
    let metrics_before = load.metrics().await?;
    let (busy0, cpu0) = (machine_busy()?, proc_stat(pid)?.cpu_seconds);
    let started = Instant::now();
    open_loop(req_rate, opts.duration, |k| {
        let (load, tenants, samples) = (load.clone(), tenants.clone(), samples.clone());
        async move {
            let (tenant, b) = &tenants[k % tenants.len()];
            samples.add(load.post(tenant, Endpoint::SeriesV2, &b.series).await?);
            anyhow::Ok(())
        }
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let (busy1, cpu1) = (machine_busy()?, proc_stat(pid)?.cpu_seconds);
    // How busy the whole machine was: the relay, and fakedog and the load
    // generator beside it (on a real deployment Datadog is elsewhere).
    let machine = (busy1.0 - busy0.0) / (busy1.1 - busy0.1).max(1.0);
    let (p50, p99, p999) = samples.quantiles();
    // The same acknowledgements timed inside the relay (request received →
    // answer ready): the client's figure less the load generator's own
    // scheduling and the loopback.
    let metrics_after = load.metrics().await?;
    let (r50, r99, r999) = histogram_delta_quantiles(
        &metrics_before,
        &metrics_after,
        "ddrelay_ingest_ack_seconds",
    );
    // The disk's part: the group commits (write + fdatasync) of this phase.
    let (c50, c99, c999) = histogram_delta_quantiles(
        &metrics_before,
        &metrics_after,
        "ddrelay_queue_commit_seconds",
    );
    report.insert(
        "half_load".into(),
        json!({
            "series_points_per_s": series_rate,
            "ingest_ack_ms": { "p50": p50, "p99": p99, "p999": p999 },
            "relay_ack_ms": { "p50": r50, "p99": r99, "p999": r999, "note": "the relay's ingest_ack histogram over this phase: bucket upper bounds" },
            "queue_commit_ms": { "p50": c50, "p99": c99, "p999": c999, "note": "group commits over this phase: bucket upper bounds" },
            "relay_cores": (cpu1 - cpu0) / secs,
            "machine_busy": machine,
        }),
    );

    // A mixed pass of events and service checks, and the end-to-end histogram.
    for t in tenants.iter().take(100) {
        load.post(&t.0, Endpoint::Events, &t.1.event).await?;
        load.post(&t.0, Endpoint::CheckRun, &t.1.checks).await?;
    }
    let metrics = load.metrics().await?;
    let (e50, e99, e999) = histogram_quantiles(&metrics, "ddrelay_end_to_end_seconds");
    report.insert("end_to_end_ms".into(), json!({ "p50": e50, "p99": e99, "p999": e999, "note": "from the relay's histogram: bucket upper bounds" }));
    let (c50, c99, c999) = histogram_quantiles(&metrics, "ddrelay_queue_commit_seconds");
    report.insert("queue_commit_ms".into(), json!({ "p50": c50, "p99": c99, "p999": c999, "note": "write + fdatasync per group commit, whole run; bucket upper bounds" }));
    let sent_bytes: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("ddrelay_delivered_bytes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let received_bytes: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("ddrelay_ingest_bytes_total") && l.contains("accepted"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let requests: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("ddrelay_send_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    report.insert(
        "compression_ratio".into(),
        json!(received_bytes / sent_bytes.max(1.0)),
    );
    report.insert("intake_requests".into(), json!(requests));
    // The process's high-water mark now: the matrix (`--loads`) included.
    let peak = peak.max(run_peak_rss(pid)?);
    report.insert("peak_rss_mib".into(), json!(peak as f64 / MIB));
    let violations = dog.violations().len();
    report.insert("fakedog_violations".into(), json!(violations));
    let mut report = serde_json::Value::Object(report);
    let checked = targets(&report, &opts);
    for t in &checked {
        println!(
            "target: {:<44} {:>2} {:>9}   measured {:>11}   {}",
            t.name,
            if t.at_most { "≤" } else { "≥" },
            t.limit,
            t.measured.map_or("–".into(), |m| format!("{m:.2}")),
            match t.met() {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "not measured",
            }
        );
    }
    report["targets"] = checked
        .iter()
        .map(|t| {
            (
                t.key.to_string(),
                json!({ "limit": t.limit, "at_most": t.at_most, "measured": t.measured, "met": t.met() }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    if violations > 0 {
        bail!(
            "fakedog recorded {violations} limit violations: {:?}",
            &dog.violations()[..violations.min(3)]
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
ddrelay_ingest_ack_seconds_bucket{kind=\"series\",le=\"0.001\"} 10
ddrelay_ingest_ack_seconds_bucket{kind=\"series\",le=\"0.005\"} 90
ddrelay_ingest_ack_seconds_bucket{kind=\"series\",le=\"0.02\"} 100
ddrelay_ingest_ack_seconds_bucket{kind=\"series\",le=\"+Inf\"} 100
ddrelay_ingest_ack_seconds_bucket{kind=\"logs\",le=\"0.001\"} 0
ddrelay_ingest_ack_seconds_bucket{kind=\"logs\",le=\"0.005\"} 0
ddrelay_ingest_ack_seconds_bucket{kind=\"logs\",le=\"0.02\"} 0
ddrelay_ingest_ack_seconds_bucket{kind=\"logs\",le=\"+Inf\"} 0
";

    #[test]
    fn histogram_quantiles_sum_label_sets_and_take_bucket_bounds() {
        // 100 observations: 10 ≤ 1 ms, 80 in (1, 5] ms, 10 in (5, 20] ms.
        assert_eq!(
            histogram_quantiles(BEFORE, "ddrelay_ingest_ack_seconds"),
            (5.0, 20.0, 20.0)
        );
        assert_eq!(histogram_quantiles(BEFORE, "absent"), (0.0, 0.0, 0.0));
    }

    #[test]
    fn a_phase_is_the_difference_between_two_scrapes() {
        // During the phase: 1,000 logs requests, all ≤ 1 ms but 5 at
        // (5, 20] ms; the series before it must not count.
        let after = BEFORE
            .replace(
                "kind=\"logs\",le=\"0.001\"} 0",
                "kind=\"logs\",le=\"0.001\"} 995",
            )
            .replace(
                "kind=\"logs\",le=\"0.005\"} 0",
                "kind=\"logs\",le=\"0.005\"} 995",
            )
            .replace(
                "kind=\"logs\",le=\"0.02\"} 0",
                "kind=\"logs\",le=\"0.02\"} 1000",
            )
            .replace(
                "kind=\"logs\",le=\"+Inf\"} 0",
                "kind=\"logs\",le=\"+Inf\"} 1000",
            );
        assert_eq!(
            histogram_delta_quantiles(BEFORE, &after, "ddrelay_ingest_ack_seconds"),
            (1.0, 1.0, 20.0)
        );
        assert_eq!(
            histogram_delta_quantiles(BEFORE, BEFORE, "ddrelay_ingest_ack_seconds"),
            (0.0, 0.0, 0.0)
        );
    }
}
