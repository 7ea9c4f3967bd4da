//! kill -9 under load, ten times: every item that got a 202 reaches the
//! tenant's site. The relay runs as a real child process (`ddrelay run`),
//! fakedog in this test; the child is killed with SIGKILL at a random moment
//! while four log senders and a trace sender keep posting, then restarted
//! on the same data dir.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ddrelay::dev::fakedog::FakeDog;
use ddrelay::dev::sandbox;
use ddrelay::site::Endpoint;
use parking_lot::Mutex;
use support::process::{RunningRelay, connect_across};

/// What the senders share: the relay's current address, the ids it
/// acknowledged, and the signal to stop.
type Shared = (
    Arc<Mutex<SocketAddr>>,
    Arc<Mutex<Vec<String>>>,
    Arc<std::sync::atomic::AtomicBool>,
);

/// Sends what `next` builds (the ids it carries and the request, from a
/// client, the relay's current address and a batch number from 1) until
/// stopped; records the ids of the requests answered `ok`.
async fn keep_sending(
    (api, acked, stop): Shared,
    ok: u16,
    mut next: impl FnMut(&reqwest::Client, SocketAddr, u64) -> (Vec<String>, reqwest::RequestBuilder),
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        n += 1;
        let addr = *api.lock();
        let (ids, req) = next(&http, addr, n);
        match req.send().await {
            Ok(r) if r.status() == ok => acked.lock().extend(ids),
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(5)).await, // relay down or restarting
        }
    }
}

/// Posts log batches with unique ids until stopped; records the ids that got a 202.
async fn sender(id: usize, shared: Shared) {
    keep_sending(shared, 202, |http, addr, n| {
        let ids: Vec<String> = (0..20).map(|k| format!("s{id}-{n}-{k}")).collect();
        let body = serde_json::Value::Array(
            ids.iter()
                .map(|i| serde_json::json!({ "message": i, "service": "crash" }))
                .collect(),
        );
        let req = http
            .post(format!("http://{addr}/api/v2/logs"))
            .header("DD-API-KEY", "crash")
            .json(&body);
        (ids, req)
    })
    .await
}

/// Puts v0.3 traces (two spans each, the resource a unique id) until
/// stopped; records the resources of the spans that got a 200.
async fn trace_sender(shared: Shared) {
    keep_sending(shared, 200, |http, addr, n| {
        let start = ddrelay::clock::now_ms() * 1_000_000;
        let ids: Vec<String> = (0..2).map(|k| format!("t-{n}-{k}")).collect();
        let spans: Vec<serde_json::Value> = ids
            .iter()
            .enumerate()
            .map(|(k, id)| {
                serde_json::json!({"trace_id": n, "span_id": k + 1, "parent_id": k,
                    "service": "crash", "name": "op", "resource": id,
                    "start": start, "duration": 1000})
            })
            .collect();
        let req = http
            .put(format!("http://{addr}/v0.3/traces"))
            .header("DD-Relay-Tenant", "crash")
            .json(&serde_json::json!([spans]));
        (ids, req)
    })
    .await
}

/// Waits until every acknowledged id is among fakedog's `endpoint` items
/// of `org` (read from `field`).
async fn wait_all(
    dog: &FakeDog,
    org: &str,
    endpoint: Endpoint,
    field: &str,
    acked: &HashSet<String>,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let received: HashSet<String> = dog
            .received(org, endpoint)
            .into_iter()
            .filter_map(|v| v[field].as_str().map(str::to_string))
            .collect();
        let missing: Vec<&String> = acked.iter().filter(|id| !received.contains(*id)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged {endpoint} items never delivered, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_acknowledged_is_lost_across_ten_kill_9s() {
    let dog: FakeDog = support::dog().await;
    let dir = tempfile::tempdir().unwrap();
    sandbox::register_client(&dog).unwrap();
    let key = ddrelay::secret::MasterKey::generate().to_base64();
    let config = dir.path().join("ddrelay.toml");
    let extra =
        "[delivery]\nbatch_max_age = \"50ms\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n";
    std::fs::write(
        &config,
        sandbox::config_text(&dog, &dir.path().join("data"), key.expose(), extra),
    )
    .unwrap();

    let mut proc = RunningRelay::start(&config);
    // Connect the tenant through the real browser flow.
    let org = dog.org("Demo EU1").unwrap().id;
    connect_across(&dog, proc.api, proc.public, "crash", &org, "datadoghq.eu").await;

    let api = Arc::new(Mutex::new(proc.api));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders: Vec<_> = (0..4)
        .map(|i| tokio::spawn(sender(i, (api.clone(), acked.clone(), stop.clone()))))
        .collect();
    let traces_acked = Arc::new(Mutex::new(Vec::new()));
    let shared = (api.clone(), traces_acked.clone(), stop.clone());
    senders.push(tokio::spawn(trace_sender(shared)));

    for round in 0..10 {
        // Let load build up for a random moment, then SIGKILL.
        let before = acked.lock().len();
        let spans_before = traces_acked.lock().len();
        let deadline = Instant::now() + Duration::from_secs(30);
        let want = before + 200 + rand::random_range(0..1500);
        // Both kinds under load at each kill.
        while acked.lock().len() < want || traces_acked.lock().len() < spans_before + 20 {
            assert!(Instant::now() < deadline, "round {round}: no progress");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        proc.kill(); // SIGKILL
        proc = RunningRelay::start(&config); // the old one's drop finds it already reaped
        *api.lock() = proc.api;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in senders {
        s.await.unwrap();
    }

    let acked: HashSet<String> = acked.lock().iter().cloned().collect();
    assert!(
        acked.len() > 2000,
        "only {} items acknowledged",
        acked.len()
    );
    let traces: HashSet<String> = traces_acked.lock().iter().cloned().collect();
    assert!(
        traces.len() >= 200,
        "only {} spans acknowledged",
        traces.len()
    );
    wait_all(&dog, &org, Endpoint::Logs, "message", &acked).await;
    wait_all(&dog, &org, Endpoint::Traces, "resource", &traces).await;
    drop(proc);
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}
