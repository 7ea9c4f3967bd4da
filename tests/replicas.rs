//! Scale-out: three relays (`ddrelay run`, real processes) on one PostgreSQL
//! store (a fresh database) and one fakedog (in this test).
//!
//! - Tenants connect through different replicas: the partner starts the
//!   connect on replica A, the browser's callback lands on replica B.
//! - Data is sent to all three replicas for every tenant, while the pull
//!   proxy is called on all three: fakedog's tokens live 120 s, less than
//!   the refresh-ahead margin, so nearly every proxy call refreshes, and the
//!   three replicas race for each tenant's refresh token. fakedog revokes
//!   the grant when a rotated refresh token is presented again.
//! - One tenant's API key is revoked at fakedog while all three send: each
//!   replica sees 403s, exactly one new key is created.
//! - One replica is killed with SIGKILL and restarted on its data dir.
//!
//! Asserted: exactly one new key, every item acknowledged with 202 reaches
//! its tenant's org, no tenant stuck (connected on every replica at the
//! end), fakedog saw no rule violation.
//!
//! `sizing_on_one_postgres` (ignored) measures the figures quoted in
//! docs/scale-out.md:
//! `cargo test --test replicas -- --ignored --nocapture sizing`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ddrelay::dev::fakedog::{FakeDog, Fault};
use ddrelay::dev::sandbox;
use ddrelay::secret::{MasterKey, Secret};
use ddrelay::site::Endpoint;
use ddrelay::store::{Connection, Flow, Store};
use parking_lot::Mutex;
use support::http;
use support::process::{RunningRelay, connect_across};

/// One `ddrelay run` child; killed when dropped (a failing test leaves no
/// process behind).
struct Replica {
    run: RunningRelay,
    /// WARN and ERROR lines it logged (printed when the test ends).
    problems: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    /// Starts `ddrelay run --config FILE`.
    fn spawn(config: &Path, problems: Arc<Mutex<Vec<String>>>) -> Replica {
        let sink = problems.clone();
        let run = RunningRelay::start_with(config, move |l| {
            if l.contains("\"WARN\"") || l.contains("\"ERROR\"") {
                sink.lock().push(l);
            }
        });
        Replica { run, problems }
    }

    /// SIGKILL, then the same config (same data dir) again.
    fn kill_and_restart(&mut self) {
        self.run.kill();
        *self = Replica::spawn(&self.run.config.clone(), self.problems.clone());
    }
}

/// Writes a replica's config: the shared store, its own data dir.
fn replica_config(dog: &FakeDog, dir: &Path, key: &str, db: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let extra =
        "[delivery]\nbatch_max_age = \"50ms\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n";
    let path = dir.join("ddrelay.toml");
    std::fs::write(
        &path,
        sandbox::config_text_with_store(dog, &dir.join("data"), key, Some(db), extra),
    )
    .unwrap();
    path
}

/// Each tenant's state as `replica` sees it.
async fn states(replica: SocketAddr) -> HashMap<String, String> {
    let v = support::json_of(
        http()
            .get(format!("http://{replica}/v1/tenants"))
            .bearer_auth(sandbox::ADMIN_TOKEN),
    )
    .await;
    v["tenants"]
        .as_array()
        .or(v.as_array())
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().unwrap().to_string(),
                t["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Waits until every replica sees every tenant connected; returns how long.
async fn until_connected_everywhere(replicas: &[SocketAddr], tenants: &[String]) -> Duration {
    let start = Instant::now();
    loop {
        let mut all = true;
        for r in replicas {
            let s = states(*r).await;
            all &= tenants
                .iter()
                .all(|t| s.get(t).map(String::as_str) == Some("connected"));
        }
        if all {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "tenants not connected on every replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts log batches with unique ids for `tenant` to one replica until
/// `stop`; records the ids that got a 202.
async fn sender(
    name: String,
    tenant: String,
    api: Arc<Mutex<SocketAddr>>,
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    let http = http();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let ids: Vec<String> = (0..10).map(|k| format!("{name}-{n}-{k}")).collect();
        n += 1;
        let body = serde_json::Value::Array(
            ids.iter()
                .map(|i| serde_json::json!({ "message": i, "service": "replicas" }))
                .collect(),
        );
        let addr = *api.lock();
        match http
            .post(format!("http://{addr}/api/v2/logs"))
            .header("DD-API-KEY", &tenant)
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status() == 202 => acked.lock().extend(ids),
            // Down or restarting: not acknowledged, so not owed.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Calls the pull proxy for `tenant` on one replica until `stop`; counts
/// answers by status.
async fn puller(
    tenant: String,
    api: Arc<Mutex<SocketAddr>>,
    statuses: Arc<Mutex<HashMap<u16, u64>>>,
    revoked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    gate: Arc<PullGate>,
) {
    let http = http();
    while !stop.load(Ordering::SeqCst) {
        // In flight first, then the pause check: `PullGate::pause` sees
        // every call that could still reach a replica.
        gate.inflight.fetch_add(1, Ordering::SeqCst);
        if gate.paused.load(Ordering::SeqCst) {
            gate.inflight.fetch_sub(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let addr = *api.lock();
        let sent = http
            .get(format!(
                "http://{addr}/v1/tenants/{tenant}/datadog/api/v1/monitor"
            ))
            .bearer_auth(sandbox::ADMIN_TOKEN)
            .send()
            .await;
        gate.inflight.fetch_sub(1, Ordering::SeqCst);
        if let Ok(r) = sent {
            let explained = r
                .headers()
                .get("DD-Relay-Explanation")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if explained.contains("grant_revoked") {
                revoked.fetch_add(1, Ordering::SeqCst);
            }
            *statuses.lock().entry(r.status().as_u16()).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Pauses the proxy load (and with it the token refreshes) around a kill.
#[derive(Default)]
struct PullGate {
    paused: AtomicBool,
    inflight: AtomicU64,
}

impl PullGate {
    /// Returns once no proxy call is in flight and none will start.
    async fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.inflight.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "proxy calls never finished");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_one_postgres_store() {
    let Some(db) = support::PgDatabase::create().await else {
        return;
    };
    let dog = support::dog().await;
    sandbox::register_client_with_scopes(&dog, &["api_keys_write", "monitors_read"]).unwrap();
    // Shorter than the relay's refresh-ahead margin (300 s): every token is
    // "about to expire", so every proxy call refreshes under the lock.
    dog.set_token_ttl(Duration::from_secs(120));
    let root = tempfile::tempdir().unwrap();
    let key = MasterKey::generate().to_base64();
    let problems = Arc::new(Mutex::new(Vec::new()));
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| {
            let config = replica_config(
                &dog,
                &root.path().join(format!("r{i}")),
                key.expose(),
                &db.url,
            );
            Replica::spawn(&config, problems.clone())
        })
        .collect();

    // Three tenants on three sites; tenant i starts on replica i and its
    // callback lands on replica i+1.
    let sites = ["datadoghq.eu", "datadoghq.com", "us5.datadoghq.com"];
    let mut tenants = Vec::new();
    let mut orgs = Vec::new();
    let mut early = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        let org = dog
            .orgs()
            .into_iter()
            .find(|o| o.site.domain == *site)
            .unwrap();
        let tenant = format!("tenant{i}");
        connect_across(
            &dog,
            replicas[i].run.api,
            replicas[(i + 1) % 3].run.public,
            &tenant,
            &org.id,
            site,
        )
        .await;
        // The third replica has not synced yet, and still accepts the
        // tenant's data at once (it re-reads a tenant it would refuse).
        let first = format!("first-{tenant}");
        let r = http()
            .post(format!(
                "http://{}/api/v2/logs",
                replicas[(i + 2) % 3].run.api
            ))
            .header("DD-API-KEY", &tenant)
            .json(&serde_json::json!([{ "message": first }]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{tenant} refused right after connecting");
        early.push(first);
        tenants.push(tenant);
        orgs.push(org.id);
    }
    let apis: Vec<SocketAddr> = replicas.iter().map(|r| r.run.api).collect();
    let spread = until_connected_everywhere(&apis, &tenants).await;
    eprintln!("connected state reached all three replicas after {spread:?}");
    for org in &orgs {
        assert_eq!(dog.keys_created(org), 1);
    }

    // Load: every tenant through every replica; the proxy on every replica.
    let addrs: Vec<Arc<Mutex<SocketAddr>>> = replicas
        .iter()
        .map(|r| Arc::new(Mutex::new(r.run.api)))
        .collect();
    let acked: Vec<Arc<Mutex<Vec<String>>>> = early
        .iter()
        .map(|first| Arc::new(Mutex::new(vec![first.clone()])))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Arc<Mutex<HashMap<u16, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let revoked = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(PullGate::default());
    let mut tasks = Vec::new();
    for (r, addr) in addrs.iter().enumerate() {
        for (t, tenant) in tenants.iter().enumerate() {
            tasks.push(tokio::spawn(sender(
                format!("r{r}-{tenant}"),
                tenant.clone(),
                addr.clone(),
                acked[t].clone(),
                stop.clone(),
            )));
            tasks.push(tokio::spawn(puller(
                tenant.clone(),
                addr.clone(),
                statuses.clone(),
                revoked.clone(),
                stop.clone(),
                gate.clone(),
            )));
        }
    }
    let total =
        |acked: &[Arc<Mutex<Vec<String>>>]| -> usize { acked.iter().map(|a| a.lock().len()).sum() };
    let wait_for = |goal: usize, what: &'static str| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while total(&acked) < goal {
                assert!(Instant::now() < deadline, "no progress: {what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(3000, "warm-up").await;

    // The customer of tenant0 deletes the key while all three replicas send.
    let token_calls_before = support::total_token_calls(&dog);
    assert_eq!(dog.revoke_key(&orgs[0]).unwrap(), 1);
    let revoked_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while dog.keys_created(&orgs[0]) < 2 {
        assert_eq!(
            revoked.load(Ordering::SeqCst),
            0,
            "a grant was revoked: a rotated refresh token was presented twice"
        );
        assert!(
            Instant::now() < deadline,
            "no new key after the revocation; relay problems: {:#?}",
            problems.lock()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "new key for tenant0 {:?} after the revocation",
        revoked_at.elapsed()
    );
    let n = total(&acked);
    wait_for(n + 3000, "after the key revocation").await;

    // SIGKILL one replica under ingest load; it comes back on its own data
    // dir. The proxy load pauses first: a kill between Datadog rotating a
    // refresh token and the store's commit loses the rotated token, and
    // fakedog (like a provider with reuse detection; UNCONFIRMED for
    // Datadog, docs/scale-out.md) then revokes the grant at the next
    // refresh. No client can close that window; this step tests the queue.
    gate.pause().await;
    replicas[1].kill_and_restart();
    *addrs[1].lock() = replicas[1].run.api;
    gate.resume();
    let n = total(&acked);
    wait_for(n + 3000, "after the restart").await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }

    // Every acknowledged item reaches its tenant's org.
    let deadline = Instant::now() + Duration::from_secs(120);
    for (t, org) in orgs.iter().enumerate() {
        let want: HashSet<String> = acked[t].lock().iter().cloned().collect();
        loop {
            let got: HashSet<String> = dog
                .received(org, Endpoint::Logs)
                .into_iter()
                .filter_map(|v| v["message"].as_str().map(str::to_string))
                .collect();
            let missing: Vec<&String> = want.iter().filter(|id| !got.contains(*id)).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {} acknowledged items never delivered, e.g. {:?}; relay problems: {:#?}",
                tenants[t],
                missing.len(),
                &missing[..missing.len().min(5)],
                problems.lock()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "{}: {} acknowledged items, all delivered",
            tenants[t],
            want.len()
        );
    }
    let statuses = statuses.lock().clone();
    let refreshes = support::total_token_calls(&dog) - token_calls_before;
    eprintln!("proxy answers by status: {statuses:?}; token refreshes meanwhile: {refreshes}");

    // Exactly one new key; nobody else's key touched.
    assert_eq!(dog.keys_created(&orgs[0]), 2, "one new key for tenant0");
    assert_eq!(dog.keys_created(&orgs[1]), 1);
    assert_eq!(dog.keys_created(&orgs[2]), 1);
    // No rotated refresh token was presented twice (fakedog would have
    // revoked the grant), no tenant stuck.
    assert_eq!(revoked.load(Ordering::SeqCst), 0, "a grant was revoked");
    assert!(
        refreshes > 20,
        "the proxy load refreshed only {refreshes} times"
    );
    assert!(
        statuses.get(&200).copied().unwrap_or(0) > 20,
        "{statuses:?}"
    );
    let apis: Vec<SocketAddr> = replicas.iter().map(|r| r.run.api).collect();
    until_connected_everywhere(&apis, &tenants).await;
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());

    // State changes made on one replica reach the others within seconds.
    // The customer uninstalls (grants revoked): a refresh on replica 0 finds
    // out, and everyone holds tenant1's data.
    dog.revoke_grants(&orgs[1]).unwrap();
    let r = http()
        .get(format!(
            "http://{}/v1/tenants/{}/datadog/api/v1/monitor",
            apis[0], tenants[1]
        ))
        .bearer_auth(sandbox::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(!r.status().is_success(), "{:?}", r.headers());
    let took = until_state_everywhere(&apis, &tenants[1], "reauth_required").await;
    eprintln!("reauth_required reached all three replicas after {took:?}");
    // The customer connects again: started on replica 2, callback on replica 0;
    // the still-valid key is kept.
    connect_across(
        &dog,
        apis[2],
        replicas[0].run.public,
        &tenants[1],
        &orgs[1],
        sites[1],
    )
    .await;
    let took = until_state_everywhere(&apis, &tenants[1], "connected").await;
    eprintln!("reconnected reached all three replicas after {took:?}");
    assert_eq!(
        dog.keys_created(&orgs[1]),
        1,
        "reconnect keeps the live key"
    );
    // The partner disconnects tenant2 through replica 1 while replica 0
    // still queues data for it (its intake answers 503): replica 0 discards
    // that data once it sees the disconnect, as replica 1 did with its own.
    dog.inject_fault(Fault::status(503).on_endpoint(Endpoint::Logs))
        .unwrap();
    let r = http()
        .post(format!("http://{}/api/v2/logs", apis[0]))
        .header("DD-API-KEY", &tenants[2])
        .json(&serde_json::json!([{ "message": "held" }]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(queued_items(apis[0], &tenants[2]).await > 0);
    let r = http()
        .delete(format!("http://{}/v1/tenants/{}", apis[1], tenants[2]))
        .bearer_auth(sandbox::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let took = until_state_everywhere(&apis, &tenants[2], "disconnected").await;
    eprintln!("disconnected reached all three replicas after {took:?}");
    let r = http()
        .post(format!("http://{}/api/v2/logs", apis[0]))
        .header("DD-API-KEY", &tenants[2])
        .json(&serde_json::json!([{ "message": "late" }]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        409,
        "a disconnected tenant is refused everywhere"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while queued_items(apis[0], &tenants[2]).await > 0 {
        assert!(
            Instant::now() < deadline,
            "replica 0 kept the disconnected tenant's data"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dog.clear_faults();

    let problems = problems.lock().clone();
    assert!(
        !problems.iter().any(|l| l.contains("\"ERROR\"")),
        "{problems:#?}"
    );
    drop(replicas);
}

/// `queued_items` of `tenant` on one replica.
async fn queued_items(replica: SocketAddr, tenant: &str) -> u64 {
    let v = support::json_of(
        http()
            .get(format!("http://{replica}/v1/tenants/{tenant}"))
            .bearer_auth(sandbox::ADMIN_TOKEN),
    )
    .await;
    v["queued_items"].as_u64().unwrap()
}

/// Waits until every replica reports `tenant` in `state`; returns how long.
async fn until_state_everywhere(replicas: &[SocketAddr], tenant: &str, state: &str) -> Duration {
    let start = Instant::now();
    loop {
        let mut all = true;
        for r in replicas {
            all &= states(*r).await.get(tenant).map(String::as_str) == Some(state);
        }
        if all {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{tenant} not {state} on every replica within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- sizing ------------------------------------------------------------

/// A store-level connection for the sizing runs.
fn sized_connection(i: usize) -> Connection {
    Connection {
        domain: "datadoghq.com".into(),
        org_id: Some(format!("org-{i}")),
        org_name: Some(format!("Org {i}")),
        client_id: "client".into(),
        scopes: Some("api_keys_write".into()),
        access_token: Secret::new(format!("access-{i}-{}", "x".repeat(40))),
        access_expires_at: 1,
        refresh_token: Some(Secret::new(format!("refresh-{i}-{}", "y".repeat(40)))),
        api_key: Secret::new(format!("{:032x}", i)),
        api_key_id: Some(format!("key-{i}")),
    }
}

/// Runs `tasks` concurrent loops of `op(task, i)` for `window`; returns
/// operations per second.
async fn rate<F, Fut>(tasks: usize, window: Duration, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let op = op.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                while start.elapsed() < window {
                    op(t, i).await;
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The sizing figures of docs/scale-out.md. Two parts:
/// - the store alone on one PostgreSQL, three `Store`s (three replicas'
///   worth of pools): tenants, connects, refreshes and lock hand-offs per
///   second, full and incremental sync times;
/// - end to end through three `ddrelay run` replicas and fakedog: connects
///   per second (OAuth + PKCE, code exchange, key creation) and refreshes
///   per second under the cross-replica lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "sizing run: cargo test --test replicas -- --ignored --nocapture sizing"]
async fn sizing_on_one_postgres() {
    let tenants: usize = std::env::var("DDRELAYTEST_SIZING_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let window = Duration::from_secs(10);
    let db = support::PgDatabase::create()
        .await
        .expect("DDRELAYTEST_POSTGRES");
    let key = MasterKey::generate();
    let url = Secret::new(db.url.clone());
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(Store::open_postgres(&url, &key).await.unwrap());
    }
    let mut report = serde_json::Map::new();
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    report.insert("build".into(), build.into());

    // Tenants: write N connected tenants (sealed secrets), 16 writers.
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let s = stores[w % 3].clone();
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if i >= tenants {
                        break;
                    }
                    s.save_connection(&format!("t{i}"), &sized_connection(i), 1)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    report.insert("tenants".into(), tenants.into());
    report.insert(
        "store_tenant_writes_per_s".into(),
        ((tenants as f64 / secs) as u64).into(),
    );
    let start = Instant::now();
    assert_eq!(stores[0].tenants().await.unwrap().len(), tenants);
    report.insert(
        "full_sync_ms".into(),
        (start.elapsed().as_millis() as u64).into(),
    );
    let top = stores[0]
        .tenants_changed_since(0)
        .await
        .unwrap()
        .iter()
        .map(|t| t.version)
        .max()
        .unwrap();
    let start = Instant::now();
    for _ in 0..100 {
        stores[1].tenants_changed_since(top).await.unwrap();
    }
    report.insert(
        "idle_sync_ms".into(),
        (start.elapsed().as_secs_f64() * 10.0).into(),
    );

    // Connects, store side: flow created on one replica, taken on another,
    // tenant pending then connected.
    let st = stores.clone();
    let connects = rate(16, window, move |t, i| {
        let a = st[t % 3].clone();
        let b = st[(t + 1) % 3].clone();
        async move {
            let id = format!("c{t}-{i}");
            let hash = format!("h{t}-{i}");
            a.create_flow(&Flow {
                state_hash: hash.clone(),
                tenant: id.clone(),
                verifier: Secret::new("v".repeat(43)),
                web_host: "app.datadoghq.com".into(),
                domain: None,
                client_id: "client".into(),
                created_at: 1,
                expires_at: i64::MAX,
            })
            .await
            .unwrap();
            a.touch_pending(&id, 1).await.unwrap();
            b.take_flow(&hash).await.unwrap().unwrap();
            b.save_connection(&id, &sized_connection(t * 1_000_000 + i as usize), 2)
                .await
                .unwrap();
        }
    })
    .await;
    report.insert("store_connects_per_s".into(), (connects as u64).into());

    // Refreshes, store side: lock, read, write the rotated tokens, release,
    // on random tenants from three replicas (32 at a time).
    let st = stores.clone();
    let refreshes = rate(32, window, move |t, i| {
        let s = st[t % 3].clone();
        async move {
            let id = format!("t{}", (t as u64 * 7919 + i * 104_729) % tenants as u64);
            let lock = s.lock_tenant(&id).await.unwrap();
            let c = s.credentials(&id).await.unwrap();
            assert!(c.refresh_token.is_some());
            s.save_tokens(
                &id,
                &Secret::new(format!("access-{i}")),
                2,
                Some(&Secret::new(format!("refresh-{i}"))),
                2,
            )
            .await
            .unwrap();
            lock.release().await;
        }
    })
    .await;
    report.insert("store_refreshes_per_s".into(), (refreshes as u64).into());

    // One hot tenant: every replica wants its lock (hand-offs per second).
    let st = stores.clone();
    let handoffs = rate(12, window, move |t, _| {
        let s = st[t % 3].clone();
        async move {
            let lock = s.lock_tenant("t0").await.unwrap();
            lock.release().await;
        }
    })
    .await;
    report.insert(
        "one_tenant_lock_handoffs_per_s".into(),
        (handoffs as u64).into(),
    );
    for s in &stores {
        s.close().await;
    }
    eprintln!("store: {}", serde_json::Value::Object(report.clone()));

    // End to end: three relay processes and fakedog.
    let e2e_db = support::PgDatabase::create().await.unwrap();
    let dog = support::dog().await;
    sandbox::register_client_with_scopes(&dog, &["api_keys_write", "monitors_read"]).unwrap();
    dog.set_auto_consent(true);
    dog.set_token_ttl(Duration::from_secs(120));
    let root = tempfile::tempdir().unwrap();
    let key = MasterKey::generate().to_base64();
    let problems = Arc::new(Mutex::new(Vec::new()));
    let replicas: Vec<Replica> = (0..3)
        .map(|i| {
            let config = replica_config(
                &dog,
                &root.path().join(format!("r{i}")),
                key.expose(),
                &e2e_db.url,
            );
            Replica::spawn(&config, problems.clone())
        })
        .collect();
    let site = ddrelay::site::Site::by_domain("datadoghq.com").unwrap();
    let n_connect = 120;
    let orgs: Vec<String> = (0..n_connect)
        .map(|i| dog.create_org(&format!("Sized {i}"), site).unwrap().id)
        .collect();
    let apis: Vec<SocketAddr> = replicas.iter().map(|r| r.run.api).collect();
    let publics: Vec<SocketAddr> = replicas.iter().map(|r| r.run.public).collect();
    let dog = Arc::new(dog);
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (dog, orgs, next) = (dog.clone(), orgs.clone(), next.clone());
            let (apis, publics) = (apis.clone(), publics.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if i >= orgs.len() {
                        break;
                    }
                    connect_across(
                        &dog,
                        apis[i % 3],
                        publics[(i + 1) % 3],
                        &format!("s{i}"),
                        &orgs[i],
                        "datadoghq.com",
                    )
                    .await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let connects = n_connect as f64 / start.elapsed().as_secs_f64();
    report.insert("e2e_connects_per_s".into(), (connects as u64).into());
    let ids: Vec<String> = (0..n_connect).map(|i| format!("s{i}")).collect();
    until_connected_everywhere(&apis, &ids).await;

    // Refreshes through the proxy: tokens live 120 s (< 300 s ahead), so a
    // proxy call on a replica whose token is the last one it saw refreshes.
    let before = support::total_token_calls(&dog);
    let statuses: Arc<Mutex<HashMap<u16, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (k, api) in apis.iter().enumerate() {
        for w in 0..8 {
            let ids = ids.clone();
            let (statuses, stop, api) = (statuses.clone(), stop.clone(), *api);
            tasks.push(tokio::spawn(async move {
                let http = http();
                let mut i = k * 8 + w;
                while !stop.load(Ordering::SeqCst) {
                    let tenant = &ids[i % ids.len()];
                    i += 24;
                    if let Ok(r) = http
                        .get(format!(
                            "http://{api}/v1/tenants/{tenant}/datadog/api/v1/monitor"
                        ))
                        .bearer_auth(sandbox::ADMIN_TOKEN)
                        .send()
                        .await
                    {
                        *statuses.lock().entry(r.status().as_u16()).or_default() += 1;
                    }
                }
            }));
        }
    }
    let start = Instant::now();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let refreshes =
        (support::total_token_calls(&dog) - before) as f64 / start.elapsed().as_secs_f64();
    report.insert("e2e_refreshes_per_s".into(), (refreshes as u64).into());
    report.insert(
        "e2e_proxy_statuses".into(),
        serde_json::to_value(statuses.lock().clone()).unwrap(),
    );
    until_connected_everywhere(&apis, &ids).await;
    drop(replicas);
    println!("{}", serde_json::Value::Object(report));
}
