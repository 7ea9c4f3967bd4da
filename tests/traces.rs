//! Traces end to end: the Agent's trace API on the relay (v0.3 JSON as the
//! "Send traces to the Agent by API" guide sends it, v0.4 and v0.5
//! MessagePack as tracing libraries send them, client stats, `/info`),
//! delivered to each tenant's own trace intake at fakedog, with the stats
//! the trace agent would compute.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ddrelay::dev::sandbox::Relay;
use ddrelay::site::Endpoint;
use serde_json::{Value, json};
use support::{connect, dog, fast, wait_items};

const NS: i64 = 1_000_000_000;

fn now_ns() -> i64 {
    ddrelay::clock::now_ms() * 1_000_000
}

/// A PUT of `body` to `path` on the relay's API listener.
async fn put(relay: &Relay, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
    let mut req = reqwest::Client::new().put(relay.url(path)).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A v0.4 body: `traces` traces of `spans` spans (a root and children of
/// another service), with `meta` on every span.
/// A `/v0.6/stats` body as a tracer writes it (`ClientStatsPayload` in
/// MessagePack with the Go field names): one bucket of one group.
fn client_stats(service: &str) -> Vec<u8> {
    let mut b = Vec::new();
    let text = |b: &mut Vec<u8>, v: &str| rmp::encode::write_str(b, v).unwrap();
    let uint = |b: &mut Vec<u8>, v: u64| {
        rmp::encode::write_uint(b, v).unwrap();
    };
    rmp::encode::write_map_len(&mut b, 6).unwrap();
    for (k, v) in [
        ("Hostname", ""),
        ("Env", "prod"),
        ("Version", "1.0"),
        ("Service", service),
    ] {
        text(&mut b, k);
        text(&mut b, v);
    }
    text(&mut b, "Sequence");
    uint(&mut b, 1);
    text(&mut b, "Stats");
    rmp::encode::write_array_len(&mut b, 1).unwrap();
    rmp::encode::write_map_len(&mut b, 3).unwrap();
    let bucket = 10 * NS as u64;
    text(&mut b, "Start");
    uint(&mut b, now_ns() as u64 / bucket * bucket);
    text(&mut b, "Duration");
    uint(&mut b, bucket);
    text(&mut b, "Stats");
    rmp::encode::write_array_len(&mut b, 1).unwrap();
    rmp::encode::write_map_len(&mut b, 5).unwrap();
    for (k, v) in [("Service", service), ("Name", "op"), ("Resource", "op")] {
        text(&mut b, k);
        text(&mut b, v);
    }
    text(&mut b, "Hits");
    uint(&mut b, 1);
    text(&mut b, "Duration");
    uint(&mut b, 10);
    b
}

fn v04(traces: u64, spans: u64, meta: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    rmp::encode::write_array_len(&mut b, traces as u32).unwrap();
    for t in 1..=traces {
        rmp::encode::write_array_len(&mut b, spans as u32).unwrap();
        for s in 1..=spans {
            rmp::encode::write_map_len(&mut b, 9).unwrap();
            for (k, v) in [
                ("service", if s == 1 { "web" } else { "db" }),
                ("name", if s == 1 { "http.request" } else { "db.query" }),
                ("resource", "GET /users"),
            ] {
                rmp::encode::write_str(&mut b, k).unwrap();
                rmp::encode::write_str(&mut b, v).unwrap();
            }
            for (k, v) in [("trace_id", 1000 + t), ("span_id", s), ("parent_id", s - 1)] {
                rmp::encode::write_str(&mut b, k).unwrap();
                rmp::encode::write_u64(&mut b, v).unwrap();
            }
            rmp::encode::write_str(&mut b, "start").unwrap();
            rmp::encode::write_sint(&mut b, now_ns() - 2 * NS).unwrap();
            rmp::encode::write_str(&mut b, "duration").unwrap();
            rmp::encode::write_sint(&mut b, 1_000_000).unwrap();
            rmp::encode::write_str(&mut b, "meta").unwrap();
            rmp::encode::write_map_len(&mut b, meta.len() as u32 + 1).unwrap();
            rmp::encode::write_str(&mut b, "env").unwrap();
            rmp::encode::write_str(&mut b, "prod").unwrap();
            for (k, v) in meta {
                rmp::encode::write_str(&mut b, k).unwrap();
                rmp::encode::write_str(&mut b, v).unwrap();
            }
        }
    }
    b
}

fn hits(dog: &ddrelay::dev::fakedog::FakeDog, org: &str) -> u64 {
    dog.received(org, Endpoint::TraceStats)
        .iter()
        .map(|g| g["hits"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracer_s_v04_traces_and_their_stats_reach_the_tenant_s_own_org() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    connect(&relay, &dog, "other", "datadoghq.com", "Demo US1").await;
    let headers = [
        ("DD-Relay-Tenant", "acme"),
        ("Content-Type", "application/msgpack"),
        ("Datadog-Meta-Lang", "python"),
        ("X-Datadog-Trace-Count", "3"),
    ];
    let (status, body) = put(&relay, "/v0.4/traces", &headers, v04(3, 2, &[])).await;
    assert_eq!(status, 200, "{body}");
    let rates: Value = serde_json::from_str(&body).unwrap();
    assert!(rates["rate_by_service"].is_object(), "{body}");
    let eu = dog.org("Demo EU1").unwrap().id;
    wait_items(&dog, "Demo EU1", Endpoint::Traces, 6).await;
    let spans = dog.received(&eu, Endpoint::Traces);
    assert_eq!(spans.len(), 6);
    assert!(
        spans
            .iter()
            .all(|s| s["language"] == "python" && s["env"] == "prod")
    );
    // Stats as the agent computes them: two top-level spans per trace
    // (the root, and a child of another service).
    support::eventually("the stats", || hits(&dog, &eu) == 6).await;
    let stats = dog.received(&eu, Endpoint::TraceStats);
    let web = stats.iter().find(|g| g["service"] == "web").unwrap();
    assert_eq!(
        (web["hits"].as_u64(), web["ok_count"].as_f64()),
        (Some(3), Some(3.0))
    );
    // Nothing anywhere else.
    let us = dog.org("Demo US1").unwrap().id;
    assert_eq!(dog.item_count(&us, Endpoint::Traces), 0);
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_span_tag_names_the_tenant_and_is_not_forwarded() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    let tagged = [("ddrelay.tenant", "acme")];
    let (status, body) = put(&relay, "/v0.4/traces", &[], v04(1, 3, &tagged)).await;
    assert_eq!(status, 200, "{body}");
    wait_items(&dog, "Demo EU1", Endpoint::Traces, 3).await;
    let eu = dog.org("Demo EU1").unwrap().id;
    for span in dog.received(&eu, Endpoint::Traces) {
        assert!(span["meta"].get("ddrelay.tenant").is_none(), "{span}");
    }
    // An empty payload, as tracers send to check the agent: 200.
    let (status, body) = put(&relay, "/v0.4/traces", &[], vec![0x90]).await;
    assert_eq!(status, 200, "{body}");
    // A header naming one tenant and spans tagged for another: refused.
    let acme_header = [("DD-Relay-Tenant", "acme")];
    let other = [("ddrelay.tenant", "globex")];
    let (status, body) = put(&relay, "/v0.4/traces", &acme_header, v04(1, 1, &other)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("differs from the tenant"), "{body}");
    // Without any tenant: 400, and it says how to name one.
    let (status, body) = put(&relay, "/v0.4/traces", &[], v04(1, 1, &[])).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("ddrelay.tenant"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v03_json_as_the_guide_sends_it_and_bad_spans_named() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    let span = |id: u64, start: i64| {
        json!({"trace_id": 7, "span_id": id, "parent_id": if id == 1 { 0 } else { 1 },
               "name": "span_name", "resource": "/home", "service": "service_name",
               "type": "web", "start": start, "duration": 12000})
    };
    let good = json!([[span(1, now_ns()), span(2, now_ns())]]);
    let json_header = [
        ("DD-Relay-Tenant", "acme"),
        ("Content-Type", "application/json"),
    ];
    let (status, body) = put(
        &relay,
        "/v0.3/traces",
        &json_header,
        good.to_string().into_bytes(),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "OK\n"));
    wait_items(&dog, "Demo EU1", Endpoint::Traces, 2).await;
    // A start in seconds: 400 naming trace, span and field; nothing queued.
    let bad = json!([
        [span(1, now_ns())],
        [span(1, now_ns()), span(2, now_ns() / NS)]
    ]);
    let (status, body) = put(
        &relay,
        "/v0.3/traces",
        &json_header,
        bad.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("trace 1, span 1: start"), "{body}");
    support::wait_drained(&relay).await;
    let eu = dog.org("Demo EU1").unwrap().id;
    assert_eq!(
        dog.item_count(&eu, Endpoint::Traces),
        2,
        "the bad request queued nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v05_and_client_stats_and_info() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    let info: Value = reqwest::get(relay.url("/info"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        info["endpoints"]
            .as_array()
            .unwrap()
            .contains(&json!("/v0.5/traces")),
        "{info}"
    );
    assert_eq!(info["client_drop_p0s"], false);
    // v0.5: [strings, traces], each span 12 elements of indexes and numbers.
    let mut b = Vec::new();
    rmp::encode::write_array_len(&mut b, 2).unwrap();
    let strings = [
        "",
        "_dd.origin",
        "checkout",
        "cart.add",
        "POST /cart",
        "env",
        "prod",
        "ddrelay.tenant",
        "acme",
    ];
    rmp::encode::write_array_len(&mut b, strings.len() as u32).unwrap();
    for s in strings {
        rmp::encode::write_str(&mut b, s).unwrap();
    }
    rmp::encode::write_array_len(&mut b, 1).unwrap();
    rmp::encode::write_array_len(&mut b, 1).unwrap();
    rmp::encode::write_array_len(&mut b, 12).unwrap();
    for v in [2u64, 3, 4, 77, 1, 0] {
        rmp::encode::write_uint(&mut b, v).unwrap();
    }
    rmp::encode::write_sint(&mut b, now_ns()).unwrap();
    rmp::encode::write_sint(&mut b, 5_000).unwrap();
    rmp::encode::write_sint(&mut b, 1).unwrap();
    rmp::encode::write_map_len(&mut b, 2).unwrap();
    for (k, v) in [(5u64, 6u64), (7, 8)] {
        rmp::encode::write_uint(&mut b, k).unwrap();
        rmp::encode::write_uint(&mut b, v).unwrap();
    }
    rmp::encode::write_map_len(&mut b, 0).unwrap();
    rmp::encode::write_uint(&mut b, 0).unwrap();
    let (status, body) = put(
        &relay,
        "/v0.5/traces",
        &[("Content-Type", "application/msgpack")],
        b,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_items(&dog, "Demo EU1", Endpoint::Traces, 1).await;
    let eu = dog.org("Demo EU1").unwrap().id;
    let span = &dog.received(&eu, Endpoint::Traces)[0];
    assert_eq!(
        (span["service"].as_str(), span["error"].as_i64()),
        (Some("checkout"), Some(1))
    );
    support::eventually("error stats", || {
        dog.received(&eu, Endpoint::TraceStats)
            .iter()
            .any(|g| g["errors"] == 1)
    })
    .await;
    // Client stats with the tenant in a header, passed on as the tracer's.
    let body = client_stats("cli");
    let (status, text) = put(&relay, "/v0.6/stats", &[("DD-Relay-Tenant", "acme")], body).await;
    assert_eq!((status, text.as_str()), (200, ""));
    wait_items(&dog, "Demo EU1", Endpoint::ClientStats, 1).await;
    let g = &dog.received(&eu, Endpoint::ClientStats)[0];
    assert_eq!(
        (g["service"].as_str(), g["client_computed"].as_bool()),
        (Some("cli"), Some(true))
    );
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_during_trace_delivery_recovers_with_a_new_key() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    let org = dog.org("Demo EU1").unwrap().id;
    let headers = [("DD-Relay-Tenant", "acme")];
    assert_eq!(
        put(&relay, "/v0.4/traces", &headers, v04(1, 1, &[]))
            .await
            .0,
        200
    );
    wait_items(&dog, "Demo EU1", Endpoint::Traces, 1).await;
    dog.revoke_key(&org).unwrap();
    for _ in 0..5 {
        assert_eq!(
            put(&relay, "/v0.4/traces", &headers, v04(2, 2, &[]))
                .await
                .0,
            200
        );
    }
    wait_items(&dog, "Demo EU1", Endpoint::Traces, 21).await;
    assert_eq!(
        dog.keys_created(&org),
        2,
        "one key at connect, one after the 403"
    );
    support::eventually("every stat too", || hits(&dog, &org) == 1 + 5 * 4).await;
}

/// Many large traces at once: payloads split below the intake's 3.2 MB,
/// every span delivered once, no violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_and_bursty_trace_load_stays_within_the_intake_s_limits() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    let big = "x".repeat(4000);
    let sends = (0..16).map(|_| {
        let body = v04(100, 5, &[("payload", big.as_str())]);
        let relay = &relay;
        async move { put(relay, "/v0.4/traces", &[("DD-Relay-Tenant", "acme")], body).await }
    });
    for (status, body) in futures_util::future::join_all(sends).await {
        assert_eq!(status, 200, "{body}");
    }
    wait_items(&dog, "Demo EU1", Endpoint::Traces, 16 * 500).await;
    support::wait_drained(&relay).await;
    let eu = dog.org("Demo EU1").unwrap().id;
    assert_eq!(
        dog.item_count(&eu, Endpoint::Traces),
        16 * 500,
        "each span once"
    );
    assert!(
        dog.requests("trace.agent.datadoghq.eu", 200) >= 3,
        "32 MB of spans took several payloads"
    );
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}
