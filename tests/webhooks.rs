//! Lifecycle webhooks end to end: a real HTTP receiver (axum) that checks
//! every `DD-Relay-Signature`, against relays wired to fakedog.
//!
//! - connect, a revoked grant (reauth) and a disconnect arrive as
//!   `tenant.connected`, `tenant.reauth_required`, `tenant.disconnected`,
//!   in order, with the fields README.md "Lifecycle webhooks: tell your UI
//!   who must reconnect" lists and no secret; the receiver
//!   refuses the first deliveries and they are retried;
//! - a relay killed (SIGKILL) while deliveries are in flight and started
//!   again delivers every event, exactly once after deduplication by `id`,
//!   in order per tenant;
//! - two replicas on one PostgreSQL store deliver each event once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use ddrelay::dev::fakedog::FakeDog;
use ddrelay::dev::sandbox::{self, ADMIN_TOKEN, CLIENT_SECRET, Relay};
use hmac::{KeyInit as _, Mac as _};
use parking_lot::Mutex;
use serde_json::Value;
use support::http;
use support::process::{RunningRelay, connect_across};

const SECRET: &str = "webhook-signing-secret-0123456789";

/// What the receiver got: the parsed body and the raw text.
#[derive(Debug, Clone)]
struct Delivery {
    body: Value,
    raw: String,
}

#[derive(Default)]
struct Hook {
    deliveries: Mutex<Vec<Delivery>>,
    /// Answer 500 to this many more deliveries.
    fail_next: AtomicU32,
    /// Record, then never answer.
    hang: AtomicBool,
    bad_signatures: AtomicU32,
}

/// The partner's endpoint: checks the signature, records, answers.
struct Receiver {
    addr: SocketAddr,
    hook: Arc<Hook>,
}

impl Receiver {
    async fn start() -> Receiver {
        let hook = Arc::new(Hook::default());
        let app = axum::Router::new()
            .route("/hooks/ddrelay", axum::routing::post(receive))
            .with_state(hook.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, hook }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/ddrelay", self.addr)
    }

    fn all(&self) -> Vec<Delivery> {
        self.hook.deliveries.lock().clone()
    }

    /// Deliveries deduplicated by `id`, first arrival kept, in arrival order.
    fn unique(&self) -> Vec<Value> {
        let mut seen = HashSet::new();
        self.all()
            .into_iter()
            .filter(|d| seen.insert(d.body["id"].as_str().unwrap().to_string()))
            .map(|d| d.body)
            .collect()
    }
}

async fn receive(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let raw = String::from_utf8(body.to_vec()).unwrap();
    if !signature_ok(&headers, &raw) {
        hook.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    let parsed = serde_json::from_str(&raw).unwrap();
    hook.deliveries.lock().push(Delivery { body: parsed, raw });
    if hook.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let failing = hook
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// `DD-Relay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`,
/// with `t` within five minutes of now.
fn signature_ok(headers: &HeaderMap, body: &str) -> bool {
    let Some(header) = headers
        .get("DD-Relay-Signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_string()),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = ddrelay::clock::now();
    if t.parse::<i64>().map_or(true, |t| (now - t).abs() > 300) {
        return false;
    }
    let mut mac = hmac::Hmac::<sha2_hmac::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    v1 == expected
}

fn webhooks_toml(url: &str) -> String {
    format!("[webhooks]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n")
}

/// Every event of each tenant, in the order of first arrival; fails if a
/// tenant's event was (re)sent after a later one of it had arrived.
fn per_tenant_in_order(all: &[Delivery]) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for d in all {
        let events = out
            .entry(d.body["tenant"].as_str().unwrap().to_string())
            .or_default();
        match events.iter().position(|e| e["id"] == d.body["id"]) {
            None => events.push(d.body.clone()),
            Some(i) => assert_eq!(
                i,
                events.len() - 1,
                "{} sent again after a later event of its tenant: {all:#?}",
                d.body["id"]
            ),
        }
    }
    out
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// A metric's value summed over the series whose line starts with `prefix`.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(api: SocketAddr) -> String {
    support::get_text(format!("http://{api}/metrics")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reauth_and_disconnect_are_posted_signed_in_order_and_retried() {
    let dog = support::dog().await;
    let receiver = Receiver::start().await;
    // The first event is refused twice: it is retried, and nothing of the
    // tenant's overtakes it.
    receiver.hook.fail_next.store(2, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with_env(
        &dog,
        dir.path(),
        &webhooks_toml(&receiver.url()),
        &[("DDRELAY_OAUTH__GRANT_CHECK_INTERVAL", "5s")],
    )
    .await
    .unwrap();
    support::connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    support::eventually("tenant.connected", || !receiver.unique().is_empty()).await;

    // The customer uninstalls: the grant check notices within 5 s.
    assert_eq!(dog.revoke_grants("Demo EU1").unwrap(), 1);
    support::eventually("tenant.reauth_required", || receiver.unique().len() >= 2).await;
    let (status, _) = relay
        .admin(reqwest::Method::DELETE, "/v1/tenants/acme", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    support::eventually("tenant.disconnected", || receiver.unique().len() >= 3).await;

    let all = receiver.all();
    let events = per_tenant_in_order(&all).remove("acme").unwrap();
    assert_eq!(
        types(&events),
        [
            "tenant.connected",
            "tenant.reauth_required",
            "tenant.disconnected"
        ]
    );
    assert_eq!(all.len(), 5, "two refused deliveries, then one each");
    assert_eq!(receiver.hook.bad_signatures.load(Ordering::SeqCst), 0);
    let org = dog.org("Demo EU1").unwrap().id;
    for e in &events {
        let keys: HashSet<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        let expected: HashSet<&str> = [
            "id",
            "type",
            "tenant",
            "site",
            "org_id",
            "reason",
            "reason_code",
            "at",
        ]
        .into();
        assert_eq!(keys, expected, "{e}");
        assert_eq!(e["tenant"], "acme");
        assert_eq!(e["site"], "datadoghq.eu");
        assert_eq!(e["org_id"], org.as_str());
        let at = e["at"].as_str().unwrap();
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|err| panic!("`at` {at} is not RFC 3339: {err}"));
    }
    assert!(events[0]["reason"].is_null() && events[0]["reason_code"].is_null());
    assert_eq!(events[1]["reason_code"], "grant_revoked");
    assert!(events[1]["reason"].as_str().unwrap().contains("revoked"));
    assert_eq!(events[2]["reason_code"], "disconnected");
    let ids: HashSet<&Value> = events.iter().map(|e| &e["id"]).collect();
    assert_eq!(ids.len(), 3);
    for d in &all {
        for secret in [SECRET, ADMIN_TOKEN, CLIENT_SECRET] {
            assert!(!d.raw.contains(secret), "a secret in {}", d.raw);
        }
    }

    let m = metrics(relay.api).await;
    assert_eq!(
        metric(&m, "ddrelay_webhook_deliveries_total{outcome=\"ok\"}"),
        3.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "ddrelay_webhook_deliveries_total{outcome=\"refused\"}"),
        2.0
    );
    support::eventually_async("the outbox gauge to reach 0", || async {
        metric(&metrics(relay.api).await, "ddrelay_webhook_outbox_events ") == 0.0
    })
    .await;
    assert!(!m.contains(SECRET));
    relay.stop().await.unwrap();
}

/// Writes a relay's config in `dir` (its own data dir; `database_url`
/// shared by replicas).
fn config(dog: &FakeDog, dir: &Path, key: &str, db: Option<&str>, hook: &str) -> PathBuf {
    sandbox::register_client(dog).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let extra = format!("{}[log]\nformat = \"json\"\n", webhooks_toml(hook));
    let path = dir.join("ddrelay.toml");
    std::fs::write(
        &path,
        sandbox::config_text_with_store(dog, &dir.join("data"), key, db, &extra),
    )
    .unwrap();
    path
}

/// Starts the connect on `start`; the browser's callback lands on `callback`.
async fn connect(
    dog: &FakeDog,
    start: &RunningRelay,
    callback: &RunningRelay,
    tenant: &str,
    org: &str,
) {
    let org = dog.org(org).unwrap();
    let (api, public) = (start.api, callback.public);
    connect_across(dog, api, public, tenant, &org.id, org.site.domain).await;
}

async fn disconnect(p: &RunningRelay, tenant: &str) {
    let r = http()
        .delete(format!("http://{}/v1/tenants/{tenant}", p.api))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_delivery_delivers_every_event_once_after_dedup() {
    let dog = support::dog().await;
    let receiver = Receiver::start().await;
    // The receiver records deliveries and never answers: they are in
    // flight when the relay is killed.
    receiver.hook.hang.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let key = ddrelay::secret::MasterKey::generate().to_base64();
    let config = config(&dog, dir.path(), key.expose(), None, &receiver.url());
    let mut p = RunningRelay::start(&config);
    connect(&dog, &p, &p, "t1", "Demo EU1").await;
    connect(&dog, &p, &p, "t2", "Demo US1").await;
    disconnect(&p, "t1").await;
    support::eventually("both tenants' first events in flight", || {
        receiver.all().len() >= 2
    })
    .await;
    p.kill();

    receiver.hook.hang.store(false, Ordering::SeqCst);
    let restarted = Instant::now();
    let p = RunningRelay::start(&p.config.clone());
    support::eventually("every event after the restart", || {
        receiver.unique().len() >= 3
    })
    .await;
    assert!(
        restarted.elapsed() < Duration::from_secs(30),
        "the restarted relay waited {:?} for its own claims",
        restarted.elapsed()
    );
    // Give a stray duplicate the time to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = receiver.all();
    let per_tenant = per_tenant_in_order(&all);
    assert_eq!(
        types(&per_tenant["t1"]),
        ["tenant.connected", "tenant.disconnected"]
    );
    assert_eq!(types(&per_tenant["t2"]), ["tenant.connected"]);
    assert_eq!(receiver.unique().len(), 3);
    assert!(
        all.len() > 3,
        "the deliveries cut by the kill were sent again: {all:#?}"
    );
    assert_eq!(receiver.hook.bad_signatures.load(Ordering::SeqCst), 0);
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_send_each_event_once() {
    let Some(db) = support::PgDatabase::create().await else {
        return;
    };
    let dog = support::dog().await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = ddrelay::secret::MasterKey::generate().to_base64();
    let replicas: Vec<RunningRelay> = ["a", "b"]
        .iter()
        .map(|name| {
            RunningRelay::start(&config(
                &dog,
                &dir.path().join(name),
                key.expose(),
                Some(&db.url),
                &receiver.url(),
            ))
        })
        .collect();
    let orgs = ["Demo US1", "Demo EU1", "Demo AP1", "Demo US5"];
    for (i, org) in orgs.iter().enumerate() {
        let (start, callback) = (&replicas[i % 2], &replicas[(i + 1) % 2]);
        connect(&dog, start, callback, &format!("t{i}"), org).await;
    }
    disconnect(&replicas[0], "t1").await;
    disconnect(&replicas[1], "t2").await;
    support::eventually("six events", || receiver.unique().len() >= 6).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let all = receiver.all();
    assert_eq!(all.len(), 6, "each event sent by one replica: {all:#?}");
    let per_tenant = per_tenant_in_order(&all);
    for t in ["t1", "t2"] {
        assert_eq!(
            types(&per_tenant[t]),
            ["tenant.connected", "tenant.disconnected"]
        );
    }
    for t in ["t0", "t3"] {
        assert_eq!(types(&per_tenant[t]), ["tenant.connected"]);
    }
    let mut sent = 0.0;
    for r in &replicas {
        sent += metric(
            &metrics(r.api).await,
            "ddrelay_webhook_deliveries_total{outcome=\"ok\"}",
        );
    }
    assert_eq!(sent, 6.0, "the replicas' metrics count each delivery once");
}
