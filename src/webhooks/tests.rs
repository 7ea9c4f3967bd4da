//! The delivery loop on paused tokio time against a scripted outbox (the
//! store's claim, lease and order rules, in memory) and a scripted
//! receiver: backoff, order per tenant beside other tenants, a dead
//! replica's lease, a restart's own claims, a hung receiver, retention.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::*;
use crate::telemetry::metrics::OutcomeLabels;

/// An outbox row, as the store keeps it.
#[derive(Debug, Clone)]
struct Row {
    event: OutboxEvent,
    next_at: i64,
    claimed_by: Option<String>,
    claimed_until: i64,
}

/// The store's outbox rules in memory; its clock is tokio's.
struct ScriptedOutbox {
    owner: String,
    start: Instant,
    rows: Mutex<Vec<Row>>,
}

const BASE_MS: i64 = 1_700_000_000_000;

impl ScriptedOutbox {
    fn new(events: &[(&str, &str)]) -> Arc<ScriptedOutbox> {
        let rows = events
            .iter()
            .enumerate()
            .map(|(i, (tenant, id))| Row {
                event: OutboxEvent {
                    seq: i as i64 + 1,
                    id: id.to_string(),
                    tenant: tenant.to_string(),
                    body: format!("{{\"id\":\"{id}\"}}"),
                    attempts: 0,
                    created_at_ms: BASE_MS,
                },
                next_at: BASE_MS,
                claimed_by: None,
                claimed_until: 0,
            })
            .collect();
        Arc::new(ScriptedOutbox {
            owner: "me".into(),
            start: Instant::now(),
            rows: Mutex::new(rows),
        })
    }

    /// Marks event `id` claimed by `owner` until `until_ms` after the start.
    fn claimed(&self, id: &str, owner: &str, until_ms: i64) {
        let mut rows = self.rows.lock();
        let row = rows.iter_mut().find(|r| r.event.id == id).unwrap();
        row.claimed_by = Some(owner.into());
        row.claimed_until = BASE_MS + until_ms;
    }

    fn ids(&self) -> Vec<String> {
        self.rows
            .lock()
            .iter()
            .map(|r| r.event.id.clone())
            .collect()
    }
}

impl Outbox for ScriptedOutbox {
    fn claim(&self, limit: usize) -> BoxFuture<'_, Result<Vec<OutboxEvent>, String>> {
        let now = self.now_ms();
        let mut rows = self.rows.lock();
        let mut heads: HashMap<String, i64> = HashMap::new();
        for r in rows.iter() {
            let head = heads.entry(r.event.tenant.clone()).or_insert(r.event.seq);
            *head = (*head).min(r.event.seq);
        }
        let mut out = Vec::new();
        for r in rows.iter_mut() {
            let free = r.claimed_by.is_none() || r.claimed_until < now;
            if heads[&r.event.tenant] == r.event.seq
                && r.next_at <= now
                && free
                && out.len() < limit
            {
                r.claimed_by = Some(self.owner.clone());
                r.claimed_until = now + LEASE.as_millis() as i64;
                out.push(r.event.clone());
            }
        }
        Box::pin(async move { Ok(out) })
    }

    fn delivered(&self, seq: i64) -> BoxFuture<'_, Result<(), String>> {
        self.rows.lock().retain(|r| r.event.seq != seq);
        Box::pin(async { Ok(()) })
    }

    fn failed(&self, seq: i64, retry_at: i64, _: String) -> BoxFuture<'_, Result<(), String>> {
        let mut rows = self.rows.lock();
        if let Some(r) = rows
            .iter_mut()
            .find(|r| r.event.seq == seq && r.claimed_by.as_deref() == Some(&self.owner))
        {
            r.event.attempts += 1;
            r.next_at = retry_at;
            r.claimed_by = None;
        }
        Box::pin(async { Ok(()) })
    }

    fn release(&self) -> BoxFuture<'_, Result<u64, String>> {
        let mut n = 0;
        for r in self.rows.lock().iter_mut() {
            if r.claimed_by.as_deref() == Some(&self.owner) {
                r.claimed_by = None;
                n += 1;
            }
        }
        Box::pin(async move { Ok(n) })
    }

    fn expire(&self, before: i64) -> BoxFuture<'_, Result<u64, String>> {
        let mut rows = self.rows.lock();
        let n = rows.len();
        rows.retain(|r| r.event.created_at_ms >= before);
        let gone = (n - rows.len()) as u64;
        Box::pin(async move { Ok(gone) })
    }

    fn depth(&self) -> BoxFuture<'_, Result<(i64, Option<i64>), String>> {
        let rows = self.rows.lock();
        let oldest = rows.iter().map(|r| r.event.created_at_ms).min();
        let n = rows.len() as i64;
        Box::pin(async move { Ok((n, oldest)) })
    }

    fn now_ms(&self) -> i64 {
        BASE_MS + self.start.elapsed().as_millis() as i64
    }
}

#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    Hang,
}

/// What the scripted receiver answers, given the event id and the attempt
/// number (from 0).
type Script = Box<dyn Fn(&str, usize) -> Reply + Send + Sync>;

/// Answers by the script (event id, attempt number from 0); records when
/// each attempt started, in seconds since the test began.
struct ScriptedReceiver {
    start: Instant,
    script: Script,
    attempts: Mutex<Vec<(f64, String)>>,
}

impl ScriptedReceiver {
    fn new(script: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(ScriptedReceiver {
            start: Instant::now(),
            script: Box::new(script),
            attempts: Mutex::new(Vec::new()),
        })
    }

    fn times_of(&self, id: &str) -> Vec<f64> {
        let attempts = self.attempts.lock();
        attempts
            .iter()
            .filter(|(_, i)| i == id)
            .map(|(t, _)| *t)
            .collect()
    }

    fn order(&self) -> Vec<String> {
        self.attempts
            .lock()
            .iter()
            .map(|(_, i)| i.clone())
            .collect()
    }
}

impl Receiver for ScriptedReceiver {
    fn enabled(&self) -> bool {
        true
    }

    fn post(&self, body: String, _now: i64) -> BoxFuture<'static, Answer> {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let id = v["id"].as_str().unwrap_or_default().to_string();
        let mut attempts = self.attempts.lock();
        let n = attempts.iter().filter(|(_, i)| *i == id).count();
        attempts.push((self.start.elapsed().as_secs_f64(), id.clone()));
        let reply = (self.script)(&id, n);
        Box::pin(async move {
            match reply {
                Reply::Status(s) => Answer::Status(s),
                Reply::Hang => std::future::pending().await,
            }
        })
    }
}

/// Runs the loop for `secs` of paused time, then shuts it down.
async fn run_for(
    outbox: Arc<ScriptedOutbox>,
    receiver: Arc<ScriptedReceiver>,
    secs: u64,
) -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::new());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(run(
        outbox,
        receiver,
        metrics.clone(),
        Arc::new(Notify::new()),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    shutdown.trigger();
    task.await.unwrap();
    metrics
}

fn count(metrics: &Metrics, outcome: &'static str) -> u64 {
    metrics
        .webhook_deliveries
        .get_or_create(&OutcomeLabels { outcome })
        .get()
}

/// Each attempt started within one tick of when it was due.
fn assert_near(times: &[f64], due: &[f64]) {
    assert_eq!(times.len(), due.len(), "{times:?} vs {due:?}");
    for (t, d) in times.iter().zip(due) {
        assert!(
            *t >= *d && *t <= d + TICK.as_secs_f64() + 0.01,
            "{times:?} vs {due:?}"
        );
    }
}

#[test]
fn backoff_doubles_from_one_second_to_ten_minutes() {
    let secs: Vec<u64> = (0..12).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
    assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
}

#[tokio::test(start_paused = true)]
async fn a_refused_event_is_retried_with_backoff_until_a_2xx() {
    let outbox = ScriptedOutbox::new(&[("a", "a1")]);
    let receiver = ScriptedReceiver::new(|_, n| Reply::Status(if n < 4 { 503 } else { 204 }));
    let metrics = run_for(outbox.clone(), receiver.clone(), 60).await;
    // Attempts at 0, then after 1, 2, 4 and 8 s of backoff.
    assert_near(&receiver.times_of("a1"), &[0.0, 1.0, 3.0, 7.0, 15.0]);
    assert!(outbox.ids().is_empty(), "delivered events leave the outbox");
    assert_eq!((count(&metrics, "refused"), count(&metrics, "ok")), (4, 1));
}

#[tokio::test(start_paused = true)]
async fn a_tenants_later_event_waits_for_its_earlier_one_and_others_do_not() {
    let outbox = ScriptedOutbox::new(&[("a", "a1"), ("a", "a2"), ("b", "b1"), ("a", "a3")]);
    let receiver =
        ScriptedReceiver::new(|id, n| Reply::Status(if id == "a1" && n < 3 { 500 } else { 200 }));
    run_for(outbox.clone(), receiver.clone(), 60).await;
    assert_near(&receiver.times_of("b1"), &[0.0]);
    assert_near(&receiver.times_of("a1"), &[0.0, 1.0, 3.0, 7.0]);
    let a: Vec<String> = receiver
        .order()
        .into_iter()
        .filter(|i| i.starts_with('a'))
        .collect();
    assert_eq!(a, ["a1", "a1", "a1", "a1", "a2", "a3"]);
    assert!(receiver.times_of("a2")[0] >= 7.0);
    assert!(outbox.ids().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_dead_replicas_claim_is_taken_over_once_its_lease_passed() {
    let outbox = ScriptedOutbox::new(&[("a", "a1"), ("b", "b1")]);
    // Another replica claimed a1 and died with it.
    outbox.claimed("a1", "dead-replica", LEASE.as_millis() as i64);
    let receiver = ScriptedReceiver::new(|_, _| Reply::Status(200));
    run_for(outbox.clone(), receiver.clone(), 90).await;
    assert_near(&receiver.times_of("b1"), &[0.0]);
    assert_near(&receiver.times_of("a1"), &[LEASE.as_secs_f64()]);
    assert!(outbox.ids().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_restart_releases_its_own_claims_at_once() {
    let outbox = ScriptedOutbox::new(&[("a", "a1")]);
    // Claimed by this replica's previous life, killed mid-delivery.
    outbox.claimed("a1", "me", LEASE.as_millis() as i64);
    let receiver = ScriptedReceiver::new(|_, _| Reply::Status(200));
    run_for(outbox.clone(), receiver.clone(), 5).await;
    assert_near(&receiver.times_of("a1"), &[0.0]);
}

#[tokio::test(start_paused = true)]
async fn a_hung_receiver_is_given_up_on_and_retried_within_the_lease() {
    let outbox = ScriptedOutbox::new(&[("a", "a1"), ("a", "a2")]);
    let receiver = ScriptedReceiver::new(|id, n| {
        if id == "a1" && n == 0 {
            Reply::Hang
        } else {
            Reply::Status(200)
        }
    });
    let metrics = run_for(outbox.clone(), receiver.clone(), 60).await;
    let limit = ATTEMPT_LIMIT.as_secs_f64();
    assert!(limit < LEASE.as_secs_f64());
    assert_near(&receiver.times_of("a1"), &[0.0, limit + 1.0]);
    assert_eq!(receiver.order(), ["a1", "a1", "a2"]);
    assert_eq!((count(&metrics, "error"), count(&metrics, "ok")), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn events_past_retention_are_dropped_counted_and_measured() {
    let outbox = ScriptedOutbox::new(&[("a", "a1"), ("b", "b1")]);
    outbox.rows.lock()[0].event.created_at_ms = BASE_MS - RETENTION.as_millis() as i64 - 1;
    outbox.rows.lock()[1].event.created_at_ms = BASE_MS - 30_000;
    // Nothing is accepted, so b1 stays.
    let receiver = ScriptedReceiver::new(|_, _| Reply::Status(500));
    let metrics = run_for(outbox.clone(), receiver.clone(), 6).await;
    assert_eq!(outbox.ids(), ["b1"]);
    assert_eq!(count(&metrics, "expired"), 1);
    assert_eq!(metrics.webhook_outbox_events.get(), 1);
    let age = metrics.webhook_outbox_oldest_age_seconds.get();
    assert!((30.0..=40.0).contains(&age), "{age}");
}
