//! `ddrelay bench --loads`: the relay at the loads partners run, not only
//! at saturation. For each load (light series, the heavy series, logs,
//! spans) and for one tenant and for all of them: the saturation rate
//! (closed loop), then open-loop phases at 10 %, 50 % and 90 % of it. Each
//! phase reports relay CPU per item (delivery included: the figures are
//! taken once fakedog holds every item), the acknowledgement p50/p99, how
//! busy the whole machine was and the relay's RSS, beside the single-thread
//! floor of the same bodies measured in the same run; each paced phase
//! also beside that floor run at the phase's own pace ([`paced_floor`]:
//! what working from idle costs on this machine).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{
    BenchOptions, Bodies, Load, MIB, Samples, Saturated, cpu_now, floor_blocks, floor_job,
    histogram_delta_quantiles, machine_busy, median, open_loop, proc_stat, reset_peak_rss,
    saturate, total_items, wait_delivered,
};
use crate::dev::fakedog::FakeDog;
use crate::site::Endpoint;

/// Fractions of the saturation rate the paced phases run at.
const FRACTIONS: [f64; 3] = [0.1, 0.5, 0.9];

/// One load: a report label, the kind, and whether its series are light
/// (v1, one tag, one point: about 60 B of JSON per point).
const LOADS: [(&str, Endpoint, bool); 4] = [
    ("light_series", Endpoint::SeriesV1, true),
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
    pub(crate) dog: &'a FakeDog,
    pub(crate) load: &'a Arc<Load>,
    /// Tenants with the heavy series bodies, and the same tenants with the
    /// light ones.
    pub(crate) heavy: &'a Arc<Vec<(String, Arc<Bodies>)>>,
    pub(crate) light: &'a Arc<Vec<(String, Arc<Bodies>)>>,
    pub(crate) opts: &'a BenchOptions,
    /// The loads to run (every one when empty).
    pub(crate) only: &'a [String],
    pub(crate) pid: u32,
}

/// The CI smoke's bounds on the matrix (`ddrelay bench --smoke`): far from
/// the targets above, so that they catch a gross regression, not the noise
/// of a shared 2-core VM (BENCHMARKS.md "Change 13: fewer decoding
/// threads, the matrix in the CI smoke (2026-12-07)" has the figures they
/// were set from; the RSS bound is half again the 128 MiB target since
/// BENCHMARKS.md "Change 15: a smaller binary, one reading thread, half the
/// in-flight budget (2026-12-07)").
const GROSS_RELAY_OVER_FLOOR: f64 = 3.0;
/// Spans' bound: their floor borrows its strings since BENCHMARKS.md
/// "Change 17: spans that borrow the request's body (2026-12-07)" and
/// costs half what it did, so the same relay is twice the ratio (2.0-2.1
/// at saturation there); about twice that, as for the other kinds.
const GROSS_SPANS_RELAY_OVER_FLOOR: f64 = 4.5;
const GROSS_HALF_LOAD_ACK_P99_MS: f64 = 100.0;
const GROSS_RSS_MIB: f64 = 192.0;
const GROSS_ONE_TENANT_OVER_MANY: f64 = 0.5;

/// What in a matrix report is past the smoke's bounds (empty when nothing
/// is, or when the report holds no matrix).
pub(crate) fn gross_regressions(report: &serde_json::Value) -> Vec<String> {
    let Some(loads) = report["loads"].as_object() else {
        return Vec::new();
    };
    loads
        .iter()
        .flat_map(|(label, load)| load_regressions(label, load))
        .collect()
}

/// Who set a saturation phase's rate when it was not the relay, as a
/// note to a figure (empty when it was the relay).
fn set_by(phases: &serde_json::Value) -> String {
    match phases["saturation"]["bottleneck"]["by"].as_str() {
        Some(by) if by != "relay" => format!(" (the {by} set that saturation rate, not the relay)"),
        _ => String::new(),
    }
}

/// What in one load's figures is past the smoke's bounds.
fn load_regressions(label: &str, load: &serde_json::Value) -> Vec<String> {
    let mut failed = Vec::new();
    let r = load["one_tenant_over_many"].as_f64().unwrap_or(f64::NAN);
    // The bound is a floor here: at least half of many tenants' rate.
    if !within(GROSS_ONE_TENANT_OVER_MANY, r) {
        let by: String = load["by_tenants"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, phases)| set_by(phases))
            .collect();
        failed.push(format!(
            "{label}: one tenant's rate is {r:.2} of many tenants'{by}"
        ));
    }
    let by_tenants = load["by_tenants"].as_object().into_iter().flatten();
    for (tenants, phases) in by_tenants {
        let phase = |p: &str, k: &str| phases[p][k].as_f64().unwrap_or(f64::NAN);
        let over = phase("saturation", "relay_over_floor");
        let bound = match label {
            "traces" => GROSS_SPANS_RELAY_OVER_FLOOR,
            _ => GROSS_RELAY_OVER_FLOOR,
        };
        // NaN (a figure missing) fails too.
        if !within(over, bound) {
            failed.push(format!(
                "{label}, {tenants}: relay / floor at saturation {over:.2}{}",
                set_by(phases)
            ));
        }
        let p99 = phases["50%"]["ingest_ack_ms"]["p99"]
            .as_f64()
            .unwrap_or(f64::NAN);
        if !within(p99, GROSS_HALF_LOAD_ACK_P99_MS) {
            failed.push(format!(
                "{label}, {tenants}: ack p99 at 50 % load {p99:.1} ms"
            ));
        }
        // The most any phase held, at its own peak (a figure missing in
        // any phase fails).
        let rss = ["10%", "50%", "90%", "saturation"]
            .map(|p| phase(p, "peak_rss_mib"))
            .into_iter()
            .fold(0.0, |m: f64, p| {
                if m.is_nan() || p.is_nan() {
                    f64::NAN
                } else {
                    m.max(p)
                }
            });
        if !within(rss, GROSS_RSS_MIB) {
            failed.push(format!("{label}, {tenants}: peak RSS {rss:.0} MiB"));
        }
    }
    failed
}

/// `figure` is at most `bound`; a missing figure (NaN) is not.
fn within(figure: f64, bound: f64) -> bool {
    figure <= bound
}

/// Refuses a load name the matrix does not know, before the run starts.
pub(super) fn check_names(only: &[String]) -> anyhow::Result<()> {
    let known: Vec<&str> = LOADS.iter().map(|l| l.0).collect();
    match only.iter().find(|o| !known.contains(&o.as_str())) {
        Some(o) => anyhow::bail!("--loads: no load named {o:?} (known: {})", known.join(", ")),
        None => Ok(()),
    }
}

/// Runs the whole matrix; returns its report.
///
/// In the smoke, a load past a bound is measured once more and the second
/// figures are the ones reported (and checked): a gross regression is past
/// its bound every time, a stall of the shared VM during one 2-second phase
/// is not. The first try's findings stay in the report.
pub(super) async fn run(s: &Setup<'_>) -> anyhow::Result<serde_json::Value> {
    let mut report = serde_json::Map::new();
    for (label, endpoint, light) in LOADS {
        if !s.only.is_empty() && !s.only.iter().any(|o| o == label) {
            continue;
        }
        let mut figures = measure_load(s, label, endpoint, light).await?;
        let past = load_regressions(label, &figures);
        if s.opts.smoke && !past.is_empty() {
            eprintln!(
                "loads: {label} past the smoke's bounds ({}); measuring it once more",
                past.join("; ")
            );
            figures = measure_load(s, label, endpoint, light).await?;
            figures["first_try_past_bounds"] = json!(past);
        }
        report.insert(label.into(), figures);
    }
    Ok(serde_json::Value::Object(report))
}

/// One load for one tenant and for all of them, against its floor.
async fn measure_load(
    s: &Setup<'_>,
    label: &str,
    endpoint: Endpoint,
    light: bool,
) -> anyhow::Result<serde_json::Value> {
    let all = if light { s.light } else { s.heavy };
    let one = Arc::new(all[..1].to_vec());
    // The floor is measured before, between and after the two sets of
    // tenants, so that a quiet or a busy spell of the machine does not
    // land on the floor alone.
    let mut blocks = floor_blocks(&all[0].1, endpoint, s.opts).await?;
    let mut by_tenants = serde_json::Map::new();
    for tenants in [&one, all] {
        let figures = one_load(s, tenants, endpoint).await?;
        blocks.extend(floor_blocks(&all[0].1, endpoint, s.opts).await?);
        by_tenants.insert(format!("tenants_{}", tenants.len()), figures);
    }
    let floor = median(blocks);
    for (key, figures) in &mut by_tenants {
        against_floor(figures, floor);
        println!("loads: {label}, {key}: {}", serde_json::to_string(figures)?);
    }
    let over = |figure: &str| {
        let sat = |k: &str| by_tenants[k]["saturation"][figure].as_f64();
        match (sat("tenants_1"), sat(&format!("tenants_{}", all.len()))) {
            (Some(one), Some(many)) if many > 0.0 => Some(one / many),
            _ => None,
        }
    };
    let one_over_many = over("items_per_s");
    Ok(json!({
        "floor_cpu_seconds_per_million_items": floor * 1e6,
        "by_tenants": by_tenants,
        "one_tenant_over_many": one_over_many,
        "one_tenant_over_many_met": one_over_many.map(|r| r >= ONE_TENANT_OVER_MANY),
        "one_tenant_over_many_accepted": over("accepted_items_per_s"),
    }))
}

/// Adds each phase's relay / floor and whether it meets the target.
fn against_floor(figures: &mut serde_json::Value, floor: f64) {
    let Some(phases) = figures.as_object_mut() else {
        return;
    };
    for phase in phases.values_mut() {
        let relay = phase["relay_cpu_seconds_per_million_items"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let over = relay / (floor * 1e6);
        phase["relay_over_floor"] = json!(over);
        phase["relay_over_floor_met"] = json!(over <= RELAY_OVER_FLOOR);
    }
}

/// Saturation, then the paced phases, for one load and set of tenants.
async fn one_load(
    s: &Setup<'_>,
    tenants: &Arc<Vec<(String, Arc<Bodies>)>>,
    endpoint: Endpoint,
) -> anyhow::Result<serde_json::Value> {
    let per_req = tenants[0].1.of(endpoint).2;
    let samples = Arc::new(Samples::default());
    let Saturated {
        requests,
        secs,
        total_secs,
        cpu,
        st,
        shares,
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
            // Durably acknowledged: the relay's own rate when fakedog set
            // the delivered one (`bottleneck`).
            "accepted_items_per_s": items / secs,
            "relay_cpu_seconds_per_million_items": relay * 1e6,
            "ingest_ack_ms": { "p50": p50, "p99": p99 },
            "rss_mib": st.rss_bytes as f64 / MIB,
            "peak_rss_mib": st.peak_rss_bytes as f64 / MIB,
            "bottleneck": shares.to_json(),
        }),
    );
    for fraction in FRACTIONS {
        let mut paced = paced(s, tenants, endpoint, per_req, rate * fraction).await?;
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
    // On stderr, so that a profiler can be started on the phase.
    eprintln!(
        "loads: {} for {} tenant(s) at {rate:.0} items/s from now",
        endpoint.name(),
        tenants.len()
    );
    let samples = Arc::new(Samples::default());
    let before = total_items(s.dog, endpoint);
    let metrics_before = s.load.metrics().await?;
    reset_peak_rss(s.pid)?;
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
    wait_delivered(s.dog, s.load, endpoint, expected, Duration::from_secs(300)).await?;
    let (busy1, st) = (machine_busy()?, proc_stat(s.pid)?);
    let items = (sent * per_req).max(1) as f64;
    let (p50, p99, p999) = samples.quantiles();
    // The same acknowledgements timed inside the relay, from its histogram
    // (bucket upper bounds): a tail the client sees and the relay does not
    // is the load generator's or the loopback's.
    let metrics_after = s.load.metrics().await?;
    let (r50, r99, r999) = histogram_delta_quantiles(
        &metrics_before,
        &metrics_after,
        "ddrelay_ingest_ack_seconds",
    );
    // The disk's part of that tail: this phase's group commits (write +
    // fdatasync), which every acknowledgement waits for one of.
    let (c50, c99, c999) = histogram_delta_quantiles(
        &metrics_before,
        &metrics_after,
        "ddrelay_queue_commit_seconds",
    );
    // The floor at this phase's pace, while the relay is idle again.
    let relay = (st.cpu_seconds - cpu0) / items;
    let paced_floor = paced_floor(&tenants[0].1, endpoint, s.opts, req_rate).await?;
    Ok(json!({
        "items_per_s": items / secs,
        "relay_cpu_seconds_per_million_items": relay * 1e6,
        "paced_floor_cpu_seconds_per_million_items": paced_floor * 1e6,
        "relay_over_paced_floor": relay / paced_floor,
        "ingest_ack_ms": { "p50": p50, "p99": p99, "p999": p999 },
        "relay_ack_ms": { "p50": r50, "p99": r99, "p999": r999 },
        "queue_commit_ms": { "p50": c50, "p99": c99, "p999": c999 },
        "machine_busy": (busy1.0 - busy0.0) / (busy1.1 - busy0.1).max(1.0),
        "rss_mib": st.rss_bytes as f64 / MIB,
        "peak_rss_mib": st.peak_rss_bytes as f64 / MIB,
    }))
}

/// How long [`paced_floor`] runs: a second, or a quarter of a shorter
/// phase (the CI smoke's).
fn paced_floor_for(phase: Duration) -> Duration {
    (phase / 4).min(Duration::from_secs(1))
}

/// The floor at a phase's pace: one request through the floor every
/// `1 / req_rate` seconds for `run_for`, on one thread that
/// sleeps in between, as the relay's threads do below saturation. CPU
/// seconds per item. What it costs above the tight floor is what this
/// machine charges for working from idle (a wake-up per request; caches
/// and predictors that the idle time and other processes cooled), whoever
/// does the work: BENCHMARKS.md "Change 20: the floor at each phase's
/// pace (2026-12-07)".
fn paced_floor(
    bodies: &Bodies,
    endpoint: Endpoint,
    opts: &BenchOptions,
    req_rate: f64,
) -> tokio::task::JoinHandle<f64> {
    let (items, mut round) = floor_job(bodies, endpoint, opts);
    let run_for = paced_floor_for(opts.duration);
    tokio::task::spawn_blocking(move || {
        let every = Duration::from_secs_f64(1.0 / req_rate);
        let started = Instant::now();
        let cpu0 = cpu_now();
        let mut rounds = 0u32;
        while rounds == 0 || started.elapsed() < run_for {
            let due = started + every * rounds;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            round();
            rounds += 1;
        }
        (cpu_now() - cpu0) / (f64::from(rounds) * items as f64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(over: f64, p99: f64, rss: f64, one_over_many: f64) -> serde_json::Value {
        report_of("logs", over, p99, rss, one_over_many)
    }

    fn report_of(
        label: &str,
        over: f64,
        p99: f64,
        rss: f64,
        one_over_many: f64,
    ) -> serde_json::Value {
        let phases = json!({
            "saturation": { "relay_over_floor": over, "peak_rss_mib": rss },
            "10%": { "peak_rss_mib": 90.0 },
            "50%": { "ingest_ack_ms": { "p50": 1.0, "p99": p99 }, "peak_rss_mib": 90.0 },
            "90%": { "peak_rss_mib": rss },
        });
        json!({ "loads": { label: {
            "one_tenant_over_many": one_over_many,
            "by_tenants": { "tenants_1": phases.clone(), "tenants_20": phases },
        } } })
    }

    #[tokio::test]
    async fn the_paced_floor_keeps_its_pace_and_counts_only_its_own_work() {
        let opts = BenchOptions {
            tenants: 1,
            duration: Duration::from_millis(1200),
            concurrency: 1,
            gzip_ingest: true,
            zstd: false,
            smoke: true,
            latency_rate: None,
            steady_mib_per_s: 0.0,
            dog_nice: 0,
            light_series: false,
            loads: None,
        };
        let bodies = super::super::bodies("t", 1, true, super::super::Shape::Minimal);
        let run_for = paced_floor_for(opts.duration);
        assert_eq!(run_for, Duration::from_millis(300));
        assert_eq!(
            paced_floor_for(Duration::from_secs(4)),
            Duration::from_secs(1)
        );
        // Ten requests a second for 0.3 s: rounds at 0, 0.1, 0.2 and 0.3 s
        // (five at most), sleeping in between.
        let started = Instant::now();
        let per_item = paced_floor(&bodies, Endpoint::SeriesV1, &opts, 10.0)
            .await
            .unwrap();
        let wall = started.elapsed().as_secs_f64();
        assert!(wall >= 0.3, "kept the pace: {wall} s");
        let (_, _, items) = bodies.of(Endpoint::SeriesV1);
        let cpu = per_item * (5 * items) as f64;
        assert!(per_item > 0.0, "{per_item}");
        assert!(
            cpu < wall / 2.0,
            "slept between rounds: {cpu} CPU-s in {wall} s"
        );
    }

    #[test]
    fn the_smoke_fails_on_each_gross_regression_and_passes_the_figures_of_a_good_run() {
        assert!(gross_regressions(&report(1.6, 16.5, 130.0, 0.98)).is_empty());
        assert!(gross_regressions(&json!({ "steady": {} })).is_empty());
        let failed = gross_regressions(&report(3.5, 16.5, 130.0, 0.98));
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(
            failed[0].contains("relay / floor at saturation 3.50"),
            "{failed:?}"
        );
        // Spans against their borrowing floor: 3.5 passes, 4.6 does not.
        assert!(gross_regressions(&report_of("traces", 3.5, 16.5, 130.0, 0.98)).is_empty());
        let failed = gross_regressions(&report_of("traces", 4.6, 16.5, 130.0, 0.98));
        assert_eq!(failed.len(), 2, "{failed:?}");
        let failed = gross_regressions(&report(1.6, 150.0, 300.0, 0.3));
        assert_eq!(failed.len(), 5, "{failed:?}");
        assert!(
            failed
                .iter()
                .any(|f| f.contains("one tenant's rate is 0.30"))
        );
        assert!(failed.iter().any(|f| f.contains("RSS 300 MiB")));
        assert!(
            failed
                .iter()
                .any(|f| f.contains("ack p99 at 50 % load 150.0 ms"))
        );
        // Above the 128 MiB target by half again.
        let failed = gross_regressions(&report(1.6, 16.5, 200.0, 0.98));
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(failed[0].contains("RSS 200 MiB"), "{failed:?}");
        // A figure missing fails rather than passes.
        let failed = gross_regressions(&report(f64::NAN, 16.5, 130.0, 0.98));
        assert_eq!(failed.len(), 2, "{failed:?}");
        let failed = gross_regressions(&report(1.6, 16.5, 130.0, f64::NAN));
        assert_eq!(failed.len(), 1, "{failed:?}");
        // The peak of a paced phase counts as much as saturation's, and a
        // phase without its peak fails.
        let mut r = report(1.6, 16.5, 130.0, 0.98);
        r["loads"]["logs"]["by_tenants"]["tenants_1"]["10%"]["peak_rss_mib"] = json!(250.0);
        let failed = gross_regressions(&r);
        assert_eq!(failed, vec!["logs, tenants_1: peak RSS 250 MiB"]);
        let mut r = report(1.6, 16.5, 130.0, 0.98);
        r["loads"]["logs"]["by_tenants"]["tenants_20"]["50%"] = json!({
            "ingest_ack_ms": { "p50": 1.0, "p99": 16.5 },
        });
        let failed = gross_regressions(&r);
        assert_eq!(failed, vec!["logs, tenants_20: peak RSS NaN MiB"]);
    }

    #[test]
    fn a_regression_says_when_fakedog_set_the_rate() {
        let mut r = report(1.6, 16.5, 130.0, 0.3);
        r["loads"]["logs"]["by_tenants"]["tenants_1"]["saturation"]["bottleneck"] =
            json!({ "by": "fakedog" });
        r["loads"]["logs"]["by_tenants"]["tenants_20"]["saturation"]["bottleneck"] =
            json!({ "by": "relay" });
        let failed = gross_regressions(&r);
        assert_eq!(
            failed,
            vec![
                "logs: one tenant's rate is 0.30 of many tenants' (the fakedog set that saturation rate, not the relay)"
            ]
        );
    }
}
