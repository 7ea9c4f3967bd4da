//! Usage per tenant (`GET /v1/tenants/{t}/usage`): items and bytes
//! accepted, delivered and lost per kind and hour, for each tenant apart,
//! and nothing counted is lost across a restart. Prometheus carries none
//! of it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ddrelay::clock::now;
use ddrelay::dev::fakedog::Fault;
use ddrelay::site::{Encoding, Endpoint};
use reqwest::Method;
use serde_json::{Value, json};
use support::{dog, fast, wait_drained, wait_items};

async fn usage(relay: &ddrelay::dev::sandbox::Relay, tenant: &str, query: &str) -> (u16, Value) {
    relay
        .admin(
            Method::GET,
            &format!("/v1/tenants/{tenant}/usage{query}"),
            None,
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_counted_per_tenant_kind_and_hour_and_survives_a_restart() {
    let dog = dog().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = fast().start_in(&dog, dir.path()).await;
    support::connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    support::connect(&relay, &dog, "globex", "us5.datadoghq.com", "Demo US5").await;
    let logs = json!(
        (0..7)
            .map(|i| json!({"message": format!("log {i}")}))
            .collect::<Vec<_>>()
    )
    .to_string();
    support::accepted(&relay, "acme", Endpoint::Logs, logs.as_bytes()).await;
    let series = json!({"series": [{"metric": "m", "points": [
        {"timestamp": now() - 7200, "value": 1}, {"timestamp": now(), "value": 2}]}]});
    relay
        .send(
            "acme",
            Endpoint::SeriesV2,
            series.to_string().as_bytes(),
            Encoding::Identity,
        )
        .await
        .unwrap();
    // Datadog refuses acme's event: dead-lettered, and counted so.
    let fault = Fault::status(400).on_endpoint(Endpoint::Events);
    dog.inject_fault(fault.on_host("api.datadoghq.eu").times(1))
        .unwrap();
    let event = json!({"title": "t", "text": "x"}).to_string();
    relay
        .send(
            "acme",
            Endpoint::Events,
            event.as_bytes(),
            Encoding::Identity,
        )
        .await
        .unwrap();
    relay
        .send(
            "globex",
            Endpoint::Logs,
            br#"[{"message":"other"}]"#,
            Encoding::Identity,
        )
        .await
        .unwrap();
    wait_items(&dog, "Demo EU1", Endpoint::Logs, 7).await;
    wait_items(&dog, "Demo EU1", Endpoint::SeriesV2, 1).await;
    wait_items(&dog, "Demo US5", Endpoint::Logs, 1).await;
    wait_drained(&relay).await;

    let (s, a) = usage(&relay, "acme", "").await;
    assert_eq!(s, 200, "{a}");
    let logs = &a["totals"]["logs"];
    assert_eq!(logs["accepted_items"], 7, "{a}");
    assert_eq!(logs["delivered_items"], 7, "{a}");
    assert!(logs["accepted_bytes"].as_u64().unwrap() > 7 * 10, "{a}");
    assert!(logs["delivered_bytes"].as_u64().unwrap() > 0, "{a}");
    assert_eq!(
        a["totals"]["series"]["dropped_items"], 1,
        "the stale point: {a}"
    );
    assert_eq!(a["totals"]["series"]["delivered_items"], 1, "{a}");
    assert_eq!(a["totals"]["events"]["dead_lettered_items"], 1, "{a}");
    let hour = a["hours"][0]["hour"].as_str().unwrap();
    assert!(hour.ends_with(":00:00Z"), "{hour}");
    let (_, g) = usage(&relay, "globex", "").await;
    assert_eq!(g["totals"]["logs"]["accepted_items"], 1, "{g}");
    assert!(g["totals"].get("series").is_none(), "{g}");

    // Counted since the last flush, then a graceful restart: nothing lost.
    relay
        .send(
            "acme",
            Endpoint::Logs,
            br#"[{"message":"late"}]"#,
            Encoding::Identity,
        )
        .await
        .unwrap();
    wait_items(&dog, "Demo EU1", Endpoint::Logs, 8).await;
    relay.stop().await.unwrap();
    let relay = fast().start_in(&dog, dir.path()).await;
    let (_, a) = usage(&relay, "acme", "?hours=2").await;
    assert_eq!(a["totals"]["logs"]["accepted_items"], 8, "{a}");
    assert_eq!(a["totals"]["logs"]["delivered_items"], 8, "{a}");

    let (s, e) = usage(&relay, "acme", "?hours=0").await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["errors"][0]
            .as_str()
            .unwrap()
            .contains("hours must be 1 to"),
        "{e}"
    );
    assert_eq!(usage(&relay, "nobody", "").await.0, 404);
    let metrics = support::get_text(relay.url("/metrics")).await;
    assert!(!metrics.contains("acme"), "no per-tenant label in /metrics");
}
