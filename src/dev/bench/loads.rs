//! `ddrelay bench --loads`: the relay at the loads partners run, not only
//! at saturation. For each load (light series, the heavy series, logs,
//! spans) and for one tenant and for all of them: the saturation rate
//! (closed loop), then open-loop phases at 10 %, 50 % and 90 % of it. Each
//! phase reports relay CPU per item (delivery included: the figures are
//! taken once fakedog holds every item), the acknowledgement p50/p99, how
//! busy the whole machine was and the relay's RSS, beside the single-thread
//! floor of the same bodies measured in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{
    BenchOptions, Bodies, Load, MIB, Samples, Saturated, floor_blocks, machine_busy, median,
    open_loop, proc_stat, saturate, total_items, wait_delivered,
};
use crate::dev::fakedog::FakeDog;
use crate::site::Endpoint;

/// Fractions of the saturation rate the paced phases run at.
const FRACTIONS: [f64; 3] = [0.1, 0.5, 0.9];

/// One load: a report label, the kind, and whether its series are light
/// (one tag, one point, no resource).
const LOADS: [(&str, Endpoint, bool); 4] = [
    ("light_series", Endpoint::SeriesV2, true),
    ("series", Endpoint::SeriesV2, false),
    ("logs", Endpoint::Logs, false),
    ("traces", Endpoint::Traces, false),
];

/// The targets at every load (BENCHMARKS.md "Change 12: the loads matrix
/// (2026-12-06)"), checked on every phase: reported, never failing the run
/// (timings on a shared VM are not a CI gate).
const RELAY_OVER_FLOOR: f64 = 1.3;
const HALF_LOAD_ACK_P99_MS: f64 = 5.0;
const ONE_TENANT_OVER_MANY: f64 = 0.9;

/// What the matrix needs from the run.
pub(super) struct Setup<'a> {
    pub dog: &'a FakeDog,
    pub load: &'a Arc<Load>,
    /// Tenants with the heavy series bodies, and the same tenants with the
    /// light ones.
    pub heavy: &'a Arc<Vec<(String, Arc<Bodies>)>>,
    pub light: &'a Arc<Vec<(String, Arc<Bodies>)>>,
    pub opts: &'a BenchOptions,
    pub pid: u32,
}

/// Runs the whole matrix; returns its report.
pub(super) async fn run(s: &Setup<'_>) -> anyhow::Result<serde_json::Value> {
    let mut report = serde_json::Map::new();
    for (label, endpoint, light) in LOADS {
        let all = if light { s.light } else { s.heavy };
        let one = Arc::new(all[..1].to_vec());
        let floor = floor_of(&all[0].1, endpoint, s.opts).await?;
        let mut by_tenants = serde_json::Map::new();
        for tenants in [&one, all] {
            let figures = one_load(s, tenants, endpoint, floor).await?;
            println!(
                "loads: {label}, {} tenant(s): {}",
                tenants.len(),
                serde_json::to_string(&figures)?
            );
            by_tenants.insert(format!("tenants_{}", tenants.len()), figures);
        }
        let sat = |k: &str| by_tenants[k]["saturation"]["items_per_s"].as_f64();
        let one_over_many = match (sat("tenants_1"), sat(&format!("tenants_{}", all.len()))) {
            (Some(one), Some(many)) if many > 0.0 => Some(one / many),
            _ => None,
        };
        report.insert(
            label.into(),
            json!({
                "floor_cpu_seconds_per_million_items": floor * 1e6,
                "by_tenants": by_tenants,
                "one_tenant_over_many": one_over_many,
                "one_tenant_over_many_met": one_over_many.map(|r| r >= ONE_TENANT_OVER_MANY),
            }),
        );
    }
    Ok(serde_json::Value::Object(report))
}

/// The single-thread floor of a kind's bodies (median of five blocks).
async fn floor_of(bodies: &Bodies, endpoint: Endpoint, opts: &BenchOptions) -> anyhow::Result<f64> {
    let blocks = floor_blocks(bodies, endpoint, opts).await?;
    Ok(median(blocks))
}

/// Saturation, then the paced phases, for one load and set of tenants.
async fn one_load(
    s: &Setup<'_>,
    tenants: &Arc<Vec<(String, Arc<Bodies>)>>,
    endpoint: Endpoint,
    floor: f64,
) -> anyhow::Result<serde_json::Value> {
    let per_req = tenants[0].1.of(endpoint).2;
    let samples = Arc::new(Samples::default());
    let Saturated {
        requests,
        total_secs,
        cpu,
        st,
        ..
    } = saturate(
        s.dog, s.load, tenants, endpoint, per_req, s.opts, &samples, s.pid,
    )
    .await?;
    let items = (requests * per_req) as f64;
    // The rate the relay sustains: delivered, not only accepted.
    let rate = items / total_secs;
    let (p50, p99, _) = samples.quantiles();
    let relay = cpu / items.max(1.0);
    let mut figures = serde_json::Map::new();
    figures.insert(
        "saturation".into(),
        json!({
            "items_per_s": rate,
            "relay_cpu_seconds_per_million_items": relay * 1e6,
            "relay_over_floor": relay / floor,
            "relay_over_floor_met": relay / floor <= RELAY_OVER_FLOOR,
            "ingest_ack_ms": { "p50": p50, "p99": p99 },
            "rss_mib": st.rss_bytes as f64 / MIB,
        }),
    );
    for fraction in FRACTIONS {
        let mut paced = paced(s, tenants, endpoint, per_req, rate * fraction).await?;
        let over = paced["relay_cpu_seconds_per_million_items"]
            .as_f64()
            .unwrap_or(f64::NAN)
            / (floor * 1e6);
        paced["relay_over_floor"] = json!(over);
        paced["relay_over_floor_met"] = json!(over <= RELAY_OVER_FLOOR);
        if fraction == 0.5 {
            let p99 = paced["ingest_ack_ms"]["p99"].as_f64().unwrap_or(f64::NAN);
            paced["ingest_ack_p99_met"] = json!(p99 <= HALF_LOAD_ACK_P99_MS);
        }
        figures.insert(format!("{}%", (fraction * 100.0).round()), paced);
    }
    Ok(serde_json::Value::Object(figures))
}

/// One open-loop phase at `rate` items per second.
async fn paced(
    s: &Setup<'_>,
    tenants: &Arc<Vec<(String, Arc<Bodies>)>>,
    endpoint: Endpoint,
    per_req: u64,
    rate: f64,
) -> anyhow::Result<serde_json::Value> {
    let samples = Arc::new(Samples::default());
    let before = total_items(s.dog, endpoint);
    let (busy0, cpu0) = (machine_busy()?, proc_stat(s.pid)?.cpu_seconds);
    let started = Instant::now();
    let req_rate = (rate / per_req as f64).max(0.5);
    let sent = open_loop(req_rate, s.opts.duration, |k| {
        let (load, tenants, samples) = (s.load.clone(), tenants.clone(), samples.clone());
        async move {
            let (tenant, b) = &tenants[k % tenants.len()];
            samples.add(load.post(tenant, endpoint, b.of(endpoint).1).await?);
            anyhow::Ok(())
        }
    })
    .await? as u64;
    let secs = started.elapsed().as_secs_f64();
    let expected = before + sent * per_req;
    wait_delivered(s.dog, endpoint, expected, Duration::from_secs(300)).await?;
    let (busy1, st) = (machine_busy()?, proc_stat(s.pid)?);
    let items = (sent * per_req).max(1) as f64;
    let (p50, p99, p999) = samples.quantiles();
    Ok(json!({
        "items_per_s": items / secs,
        "relay_cpu_seconds_per_million_items": (st.cpu_seconds - cpu0) / items * 1e6,
        "ingest_ack_ms": { "p50": p50, "p99": p99, "p999": p999 },
        "machine_busy": (busy1.0 - busy0.0) / (busy1.1 - busy0.1).max(1.0),
        "rss_mib": st.rss_bytes as f64 / MIB,
    }))
}
