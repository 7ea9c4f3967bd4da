//! The dispatcher and the take loop against a scripted intake and scripted
//! keys, on paused tokio time: backoff and `Retry-After`, 413 splits, dead
//! letters, the 403 hand-off, held tenants, and one hung site beside a
//! healthy tenant. The queue and the dead-letter area are the real ones, on
//! a temporary directory.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Pipeline, Seams};
use crate::config::Config;
use crate::credentials::{CredentialError, Recovery};
use crate::datadog::{Answer, SendError};
use crate::pipeline::background::Background;
use crate::pipeline::deadletter::DeadLetters;
use crate::pipeline::seam::{Intake, Keys, Request, Sent};
use crate::queue::{Limits, NewRecord, Queue};
use crate::secret::Secret;
use crate::shutdown::Shutdown;
use crate::site::{Endpoint, SITES};
use crate::telemetry::metrics::Metrics;
use crate::tenant::Sending;

/// One request the intake saw.
#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    tenant: String,
    /// The key's version: `key-<tenant>-<version>`.
    version: u32,
    endpoint: Endpoint,
    items: usize,
}

/// What the scripted intake answers.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    StatusAfter(u16, Duration),
    /// The site never answers: the request times out.
    Hang,
}

type Script = Box<dyn Fn(&Call, usize) -> Reply + Send + Sync>;

/// Answers each request by the script, given the call and how many calls
/// the same tenant made before it; records every call.
struct ScriptedIntake {
    calls: Mutex<Vec<Call>>,
    script: Script,
}

impl ScriptedIntake {
    fn calls(&self, tenant: &str) -> Vec<Call> {
        let calls = self.calls.lock();
        calls
            .iter()
            .filter(|c| c.tenant == tenant)
            .cloned()
            .collect()
    }
}

impl Intake for ScriptedIntake {
    fn send<'a>(&'a self, r: Request<'a>) -> BoxFuture<'a, Sent> {
        Box::pin(async move {
            let (tenant, version) = parse_key(r.key);
            let call = Call {
                at: Instant::now(),
                tenant,
                version,
                endpoint: r.endpoint,
                items: items_in(r.endpoint, &r.body),
            };
            let before = self.calls(&call.tenant).len();
            let reply = (self.script)(&call, before);
            self.calls.lock().push(call);
            let (status, after) = match reply {
                Reply::Status(s) => (s, None),
                Reply::StatusAfter(s, d) => (s, Some(d)),
                Reply::Hang => {
                    tokio::time::sleep(r.timeout).await;
                    return Err(SendError::Timeout);
                }
            };
            Ok(Answer {
                status,
                retry_after: after,
                excerpt: format!("scripted {status}"),
            })
        })
    }
}

fn parse_key(key: &Secret) -> (String, u32) {
    let text = key.expose();
    let (tenant, version) = text
        .strip_prefix("key-")
        .and_then(|k| k.rsplit_once('-'))
        .expect("scripted key");
    (tenant.to_string(), version.parse().expect("key version"))
}

/// Items in a gzip JSON array body (logs), an events body (one item) or
/// a traces body (tracer payloads); none in a body that does not inflate
/// (a damaged record sent as stored, which Datadog refuses).
fn items_in(endpoint: Endpoint, body: &[u8]) -> usize {
    let mut text = Vec::new();
    if flate2::read::GzDecoder::new(body)
        .read_to_end(&mut text)
        .is_err()
    {
        return 0;
    }
    if endpoint.is_stats() {
        let (_, stats) = crate::traces::stats::read_stats_payload(&text).expect("stats body");
        return stats.len();
    }
    if endpoint == Endpoint::Traces {
        use prost::Message as _;
        let payload = crate::traces::pb::AgentPayload::decode(&text[..]).expect("protobuf body");
        return payload.tracer_payloads.len();
    }
    match serde_json::from_slice::<serde_json::Value>(&text).expect("JSON body") {
        serde_json::Value::Array(a) => a.len(),
        _ => 1,
    }
}

/// Tenants, each connected or not, with a key version that a `NewKey`
/// recovery bumps; recoveries take `recover_takes` and answer `recovery`.
struct ScriptedKeys {
    tenants: Mutex<HashMap<String, (bool, u32)>>,
    recoveries: Mutex<Vec<(String, u32, Instant)>>,
    recovery: Mutex<Recovery>,
    recover_takes: Duration,
}

impl Keys for ScriptedKeys {
    fn connected(&self, tenant: &str) -> bool {
        self.tenants.lock().get(tenant).is_some_and(|t| t.0)
    }

    fn sending<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Sending, CredentialError>> {
        let found = self.tenants.lock().get(tenant).copied();
        Box::pin(async move {
            let (_, version) = found.ok_or_else(|| CredentialError::Unknown(tenant.into()))?;
            Ok(Sending {
                site: &SITES[0],
                key: Secret::new(format!("key-{tenant}-{version}")),
                generation: 0,
            })
        })
    }

    fn recover(&self, tenant: Arc<str>, key: Secret) -> BoxFuture<'static, Recovery> {
        let (_, version) = parse_key(&key);
        self.recoveries
            .lock()
            .push((tenant.to_string(), version, Instant::now()));
        let recovery = self.recovery.lock().clone();
        let mut tenants = self.tenants.lock();
        let entry = tenants.get_mut(&*tenant).expect("known tenant");
        match &recovery {
            Recovery::NewKey => entry.1 += 1,
            Recovery::ReauthRequired(_) => entry.0 = false,
            _ => {}
        }
        let takes = self.recover_takes;
        Box::pin(async move {
            tokio::time::sleep(takes).await;
            recovery
        })
    }
}

struct Harness {
    pipeline: Arc<Pipeline>,
    intake: Arc<ScriptedIntake>,
    keys: Arc<ScriptedKeys>,
    queue: Queue,
    shutdown: Shutdown,
    started: Instant,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A pipeline for `tenants` (all connected) with `extra` config, whose
    /// queue holds what `fill` appends before delivery starts.
    async fn start(
        tenants: &[&str],
        extra: &str,
        script: Script,
        fill: &[(&str, Endpoint, usize)],
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{}\n{extra}",
            crate::config::tests::minimal(
                &dir.path().display().to_string(),
                &crate::config::tests::key()
            )
        );
        let config = Config::from_sources(&text, "test.toml", &[]).unwrap();
        let (queue, _) =
            Queue::open(&dir.path().join("queue"), Limits::from(&config.queue)).unwrap();
        for (tenant, endpoint, items) in fill {
            append(&queue, tenant, *endpoint, *items).await;
        }
        let dead = DeadLetters::open(&dir.path().join("dead"), 1 << 20, 1 << 24).unwrap();
        let intake = Arc::new(ScriptedIntake {
            calls: Mutex::new(Vec::new()),
            script,
        });
        let keys = Arc::new(ScriptedKeys {
            tenants: Mutex::new(tenants.iter().map(|t| (t.to_string(), (true, 0))).collect()),
            recoveries: Mutex::new(Vec::new()),
            recovery: Mutex::new(Recovery::NewKey),
            recover_takes: Duration::from_secs(5),
        });
        let seams = Seams {
            keys: keys.clone(),
            intake: intake.clone(),
            work: Background::inline(),
            read: Background::inline(),
        };
        let handle = Arc::new(arc_swap::ArcSwap::from_pointee(config));
        let pipeline = Arc::new(Pipeline::new(
            queue.clone(),
            seams,
            handle,
            Arc::new(Metrics::new()),
            dead,
        ));
        let shutdown = Shutdown::new();
        tokio::spawn(pipeline.clone().run(shutdown.clone()));
        Harness {
            pipeline,
            intake,
            keys,
            queue,
            shutdown,
            started: Instant::now(),
            _dir: dir,
        }
    }

    /// Waits (on the paused clock) until `cond` holds, at most `limit`.
    async fn until(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Harness) -> bool) {
        let deadline = Instant::now() + limit;
        while !cond(self) {
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn queued(&self, tenant: &str) -> u64 {
        self.queue.tenant_stats(tenant).items
    }

    fn since_start(&self, at: Instant) -> Duration {
        at - self.started
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// One record of `items` logs, events or traces (stored as a piece, as
/// ingest stores them), accepted a minute ago.
async fn append(queue: &Queue, tenant: &str, endpoint: Endpoint, items: usize) {
    append_aged(queue, tenant, endpoint, items, Duration::from_secs(60)).await;
}

/// The same, accepted `age` ago (by the wall clock, which batch ages read);
/// stats records hold client stats payloads.
async fn append_aged(queue: &Queue, tenant: &str, endpoint: Endpoint, items: usize, age: Duration) {
    if endpoint.is_stats() {
        let one = crate::traces::stats::ClientStats::default().to_msgpack();
        let payload = crate::pipeline::record::join_binary(&vec![one; items]);
        return append_payload(queue, tenant, endpoint, items, age, &payload).await;
    }
    let body: Vec<String> = (0..items)
        .map(|i| match endpoint {
            Endpoint::Events => format!("{{\"title\":\"e{i}\",\"text\":\"t\"}}"),
            _ => format!("{{\"message\":\"m{i}\"}}"),
        })
        .collect();
    let payload = if endpoint == Endpoint::Traces {
        trace_piece(&body)
    } else {
        body.join("\n").into_bytes()
    };
    append_payload(queue, tenant, endpoint, items, age, &payload).await;
}

/// A traces record stored as a piece: one tracer payload per name.
fn trace_piece(names: &[String]) -> Vec<u8> {
    let frames: Vec<Vec<u8>> = names
        .iter()
        .map(|name| {
            crate::traces::frame(&crate::traces::pb::TracerPayload {
                container_id: name.clone(),
                ..Default::default()
            })
        })
        .collect();
    let joined = crate::pipeline::record::join_binary(&frames);
    crate::pipeline::record::pack_piece(Endpoint::Traces, 1, &joined).expect("a piece")
}

async fn append_payload(
    queue: &Queue,
    tenant: &str,
    endpoint: Endpoint,
    items: usize,
    age: Duration,
    payload: &[u8],
) {
    let at = crate::clock::now_ms() - age.as_millis() as i64;
    queue
        .append(NewRecord {
            tenant,
            generation: 0,
            stream: endpoint.code(),
            items: items as u32,
            created_ms: at,
            oldest_ms: at,
            newest_ms: at,
            payload,
        })
        .await
        .unwrap();
}

fn gaps(calls: &[Call]) -> Vec<Duration> {
    calls.windows(2).map(|w| w[1].at - w[0].at).collect()
}

const SLACK: Duration = Duration::from_millis(50);

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_then_deliver() {
    let script: Script = Box::new(|_, n| Reply::Status(if n < 3 { 503 } else { 202 }));
    let h = Harness::start(&["a"], "", script, &[("a", Endpoint::Logs, 10)]).await;
    h.until("delivered", Duration::from_secs(60), |h| h.queued("a") == 0)
        .await;
    let calls = h.intake.calls("a");
    assert_eq!(calls.len(), 4, "three 503s, then the 202");
    assert!(
        calls.iter().all(|c| c.items == 10),
        "the same payload each time"
    );
    // delivery.retry_initial = 1s: the n-th wait is drawn from
    // [2^(n-1)/2, 2^(n-1)] seconds.
    for (n, gap) in gaps(&calls).into_iter().enumerate() {
        let full = Duration::from_secs(1 << n);
        assert!(
            gap >= full / 2 && gap <= full + SLACK,
            "wait {} was {gap:?}",
            n + 1
        );
    }
    let figures = h.pipeline.tenant("a");
    assert_eq!((figures.retries, figures.delivered_items), (3, 10));
    // The rates the status page shows: 10 items within the last minute,
    // none once five minutes have passed.
    let rate = figures.delivered_per_s();
    assert!(rate.one > 0.0 && rate.five == 10.0 / 300.0, "{rate:?}");
    assert_eq!(h.pipeline.delivered_per_s(), rate);
    tokio::time::advance(Duration::from_secs(6 * 60)).await;
    assert_eq!(h.pipeline.tenant("a").delivered_per_s().five, 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_is_waited_for_and_no_longer() {
    let script: Script = Box::new(|_, n| match n {
        0 => Reply::StatusAfter(429, Duration::from_secs(7)),
        _ => Reply::Status(202),
    });
    let h = Harness::start(&["a"], "", script, &[("a", Endpoint::Logs, 3)]).await;
    h.until("delivered", Duration::from_secs(60), |h| h.queued("a") == 0)
        .await;
    let gap = gaps(&h.intake.calls("a"))[0];
    assert!(
        gap >= Duration::from_secs(7) && gap <= Duration::from_secs(7) + SLACK,
        "{gap:?}"
    );
}

/// Tenant `a`'s `fill` delivered to an intake that answers 413 to more
/// than `most` items: the item count of each request it saw. Everything
/// is delivered, nothing dead-lettered.
async fn sizes_under_413(fill: &[(&str, Endpoint, usize)], most: usize) -> Vec<usize> {
    let script: Script =
        Box::new(move |c, _| Reply::Status(if c.items > most { 413 } else { 202 }));
    let h = Harness::start(&["a"], "", script, fill).await;
    h.until("delivered", Duration::from_secs(10), |h| h.queued("a") == 0)
        .await;
    let total: usize = fill.iter().map(|f| f.2).sum();
    assert_eq!(h.pipeline.dead_letters().totals("a").items, 0);
    assert_eq!(h.pipeline.tenant("a").delivered_items, total as u64);
    h.intake.calls("a").iter().map(|c| c.items).collect()
}

#[tokio::test(start_paused = true)]
async fn an_unexpected_413_splits_in_halves_until_the_payloads_fit() {
    // Datadog takes at most 10 items here; the record holds 40.
    let sizes = sizes_under_413(&[("a", Endpoint::Logs, 40)], 10).await;
    assert_eq!(sizes, vec![40, 20, 20, 10, 10, 10, 10]);
}

#[tokio::test(start_paused = true)]
async fn trace_pieces_go_spliced_and_fall_back_to_their_items() {
    // Three records of 40 traces, spliced into one payload of 120; Datadog
    // takes at most 50 here, so it falls back to the items, in halves.
    let sizes = sizes_under_413(&[("a", Endpoint::Traces, 40); 3], 50).await;
    assert_eq!(sizes, vec![120, 60, 60, 30, 30, 30, 30]);
    // Refused for good: every record's items are dead-lettered, once.
    let script: Script = Box::new(|_, _| Reply::Status(400));
    let h = Harness::start(&["b"], "", script, &[("b", Endpoint::Traces, 40); 3]).await;
    h.until("settled", Duration::from_secs(10), |h| h.queued("b") == 0)
        .await;
    assert_eq!(h.intake.calls("b").len(), 1, "sent once, spliced");
    assert_eq!(h.pipeline.dead_letters().totals("b").items, 120);
}

#[tokio::test(start_paused = true)]
async fn a_refused_piece_that_cannot_be_rebuilt_is_dead_lettered_as_stored() {
    // Three pieces refused for good; the middle one (30 traces) has a
    // damaged body, so its items cannot be rebuilt: it is kept whole, the
    // others item by item, and every record is settled.
    let script: Script = Box::new(|_, _| Reply::Status(400));
    // Connected once the three are queued, so that they go in one take.
    let h = Harness::start(&[], "", script, &[]).await;
    let names = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
    let mut damaged = trace_piece(&names(30));
    let at = damaged.len() - 8;
    damaged[at] ^= 0xff;
    let age = Duration::from_secs(60);
    for (items, payload) in [
        (40, trace_piece(&names(40))),
        (30, damaged.clone()),
        (40, trace_piece(&names(40))),
    ] {
        append_payload(&h.queue, "c", Endpoint::Traces, items, age, &payload).await;
    }
    h.keys.tenants.lock().insert("c".into(), (true, 0));
    h.until("settled", Duration::from_secs(10), |h| h.queued("c") == 0)
        .await;
    assert_eq!(
        h.intake.calls("c").len(),
        1,
        "the three spliced, in one take"
    );
    let dead = h.pipeline.dead_letters();
    assert_eq!(dead.totals("c").items, 81, "80 items and one stored record");
    // The damaged record was sent and refused, not found damaged before:
    // kept whole, with why its items could not be rebuilt.
    let whole: Vec<(u64, String)> = dead
        .list("c")
        .into_iter()
        .filter(|e| e.items == 1)
        .map(|e| (e.bytes, e.answer))
        .collect();
    assert_eq!(whole.len(), 1, "{whole:?}");
    assert_eq!(whole[0].0, damaged.len() as u64 + 1, "the damaged record");
    assert!(whole[0].1.contains("decompress"), "{whole:?}");
}

#[tokio::test(start_paused = true)]
async fn trace_stats_wait_for_their_own_batch_age() {
    // Traces and stats 5 s old, stats 11 s old for another tenant: with a
    // 1 s batch age and a 10 s stats age, the 5 s old stats wait (until
    // drain) and the rest go at once.
    let fill = [
        ("a", Endpoint::Traces, 3),
        ("a", Endpoint::TraceStats, 2),
        ("b", Endpoint::ClientStats, 4),
    ];
    let config = "[delivery]\nbatch_max_age = \"1s\"\nstats_max_age = \"10s\"\n";
    let script: Script = Box::new(|_, _| Reply::Status(202));
    let h = Harness::start(&["a", "b"], config, script, &[]).await;
    for (tenant, endpoint, items) in fill {
        let age = if tenant == "a" { 5 } else { 11 };
        append_aged(&h.queue, tenant, endpoint, items, Duration::from_secs(age)).await;
    }
    h.until(
        "the traces and the old stats",
        Duration::from_secs(2),
        |h| h.queued("b") == 0 && h.queued("a") == 2,
    )
    .await;
    // Held through seconds more of (paused) dispatcher time; the wall
    // clock, which ages are read from, moves only by the test's own
    // milliseconds meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        h.queued("a"),
        2,
        "stats younger than stats_max_age are held"
    );
    let sent: Vec<(Endpoint, usize)> = h
        .intake
        .calls("a")
        .iter()
        .map(|c| (c.endpoint, c.items))
        .collect();
    assert_eq!(sent, vec![(Endpoint::Traces, 3)]);
    assert_eq!(h.intake.calls("b")[0].items, 4);
    // Drain sends them, whatever their age.
    h.shutdown.trigger();
    h.until("drained", Duration::from_secs(5), |h| h.queued("a") == 0)
        .await;
    let last = h.intake.calls("a").pop().unwrap();
    assert_eq!((last.endpoint, last.items), (Endpoint::TraceStats, 2));
}

#[tokio::test(start_paused = true)]
async fn refused_items_are_dead_lettered_once_and_not_resent() {
    // A 400 is final; a single item still too large after halving too.
    let script: Script = Box::new(|c, _| match c.items {
        1 => Reply::Status(413),
        _ => Reply::Status(400),
    });
    let h = Harness::start(
        &["a", "b"],
        "",
        script,
        &[("a", Endpoint::Logs, 5), ("b", Endpoint::Logs, 1)],
    )
    .await;
    h.until("settled", Duration::from_secs(10), |h| {
        h.queued("a") + h.queued("b") == 0
    })
    .await;
    for (tenant, items) in [("a", 5), ("b", 1)] {
        assert_eq!(h.intake.calls(tenant).len(), 1, "{tenant}: sent once");
        assert_eq!(h.pipeline.dead_letters().totals(tenant).items, items);
        assert_eq!(h.pipeline.tenant(tenant).dead_lettered_items, items);
    }
}

#[tokio::test(start_paused = true)]
async fn a_403_hands_off_once_pauses_the_tenant_and_resumes_with_the_new_key() {
    // `a`'s key version 0 is refused; the fallback makes version 1 (in 5 s).
    let script: Script = Box::new(|c, _| {
        Reply::Status(if (c.tenant.as_str(), c.version) == ("a", 0) {
            403
        } else {
            202
        })
    });
    let fill = [
        ("a", Endpoint::Logs, 4),
        ("a", Endpoint::Events, 2),
        ("b", Endpoint::Logs, 3),
    ];
    let extra = "[delivery]\ntenant_concurrency = 1\n";
    let h = Harness::start(&["a", "b"], extra, script, &fill).await;
    h.until("delivered", Duration::from_secs(30), |h| {
        h.queued("a") + h.queued("b") == 0
    })
    .await;
    let recoveries = h.keys.recoveries.lock().clone();
    assert_eq!(
        recoveries.len(),
        1,
        "one fallback for the incident: {recoveries:?}"
    );
    let (who, version, began) = recoveries[0].clone();
    assert_eq!((who.as_str(), version), ("a", 0));
    let calls = h.intake.calls("a");
    assert_eq!(
        calls.iter().filter(|c| c.version == 0).count(),
        1,
        "{calls:?}"
    );
    // Nothing of the tenant is sent while the fallback runs; everything
    // after it goes with the new key.
    let resumed = calls
        .iter()
        .filter(|c| c.version == 1)
        .map(|c| c.at)
        .min()
        .unwrap();
    assert!(resumed >= began + Duration::from_secs(5), "{calls:?}");
    let kinds: Vec<Endpoint> = calls
        .iter()
        .filter(|c| c.version == 1)
        .map(|c| c.endpoint)
        .collect();
    assert!(
        kinds.contains(&Endpoint::Logs) && kinds.contains(&Endpoint::Events),
        "{kinds:?}"
    );
    // The other tenant never waited for it.
    let b = h.intake.calls("b");
    assert!(h.since_start(b[0].at) < Duration::from_secs(1), "{b:?}");
}

#[tokio::test(start_paused = true)]
async fn a_tenant_that_must_reconnect_is_held_not_resent_and_not_lost() {
    let script: Script = Box::new(|_, _| Reply::Status(403));
    let h = Harness::start(&["a"], "", script, &[("a", Endpoint::Logs, 6)]).await;
    *h.keys.recovery.lock() = Recovery::ReauthRequired("grant revoked".into());
    h.until("the fallback", Duration::from_secs(10), |h| {
        !h.keys.recoveries.lock().is_empty()
    })
    .await;
    // Long after: one request, one fallback, the data still queued.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(h.intake.calls("a").len(), 1);
    assert_eq!(h.keys.recoveries.lock().len(), 1);
    assert_eq!(h.queued("a"), 6);
    assert_eq!(
        h.pipeline.tenant("a").last_error.as_deref(),
        Some("grant revoked")
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_site_and_a_throttled_tenant_leave_a_healthy_tenant_on_time() {
    // Two sending slots: `hung`'s site never answers (each try holds a
    // slot for the 20 s timeout), `slow` may send one request every 2 s
    // and has a backlog, `c` has one record.
    let script: Script = Box::new(|c, _| match c.tenant.as_str() {
        "hung" => Reply::Hang,
        _ => Reply::Status(202),
    });
    let extra = "[delivery]\nmax_concurrency = 2\n[limits]\ntenant_requests_per_second = 0.5\n";
    let mut fill: Vec<(&str, Endpoint, usize)> = vec![("hung", Endpoint::Logs, 5)];
    fill.extend((0..6).map(|_| ("slow", Endpoint::Logs, 1000)));
    fill.push(("c", Endpoint::Logs, 1));
    let h = Harness::start(&["hung", "slow", "c"], extra, script, &fill).await;
    h.until("c delivered", Duration::from_secs(5), |h| {
        h.queued("c") == 0
    })
    .await;
    let c = h.intake.calls("c");
    assert!(h.since_start(c[0].at) < Duration::from_secs(1), "{c:?}");
    assert_eq!(h.intake.calls("hung").len(), 1, "still hanging");
    assert!(h.queued("slow") > 0, "still throttled");
}
