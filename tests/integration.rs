//! The `[integration]` settings end to end: every log is sent with
//! `ddsource` set to the integration's source (Datadog's partner log
//! rules), and, when asked, one test event reaches a tenant's org as soon
//! as it connects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ddrelay::site::{Encoding, Endpoint};
use serde_json::json;
use support::{connect, dog, fast, wait_items};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_arrives_with_the_integration_s_source() {
    let dog = dog().await;
    let (relay, _dir) = fast().source("acme-cloud").start(&dog).await;
    connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    let logs = json!([
        { "message": "client's own source", "ddsource": "Custom", "service": "Billing" },
        { "message": "no source", "service": "billing" },
        { "message": "no service either" },
        { "message": "null source", "ddsource": null, "service": null }
    ]);
    let body = logs.to_string().into_bytes();
    let (status, v) = relay
        .send("acme", Endpoint::Logs, &body, Encoding::Gzip)
        .await
        .unwrap();
    assert_eq!(status, 202, "{v}");
    // A request large enough to be packed at ingest, as a ready payload.
    let many: Vec<_> = (0..600)
        .map(|i| json!({ "message": format!("{i} {}", support::noise(i, 5000)), "ddsource": "x" }))
        .collect();
    let body = json!(many).to_string().into_bytes();
    let (status, v) = relay
        .send("acme", Endpoint::Logs, &body, Encoding::Gzip)
        .await
        .unwrap();
    assert_eq!(status, 202, "{v}");
    wait_items(&dog, "Demo EU1", Endpoint::Logs, 604).await;
    let eu = dog.org("Demo EU1").unwrap().id;
    let got = dog.received(&eu, Endpoint::Logs);
    assert!(got.iter().all(|l| l["ddsource"] == "acme-cloud"), "{got:?}");
    let service = |m: &str| {
        got.iter()
            .find(|l| l["message"] == m)
            .map(|l| l["service"].clone())
            .unwrap()
    };
    // Services lowercase; a log without one gets the source.
    assert_eq!(service("client's own source"), "billing");
    assert_eq!(service("no source"), "billing");
    assert_eq!(service("no service either"), "acme-cloud");
    assert_eq!(service("null source"), "acme-cloud");
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_event_reaches_the_org_on_connect_when_asked() {
    let dog = dog().await;
    let setup = fast().source("acme-cloud").test_event_on_connect(true);
    let (relay, _dir) = setup.start(&dog).await;
    connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    wait_items(&dog, "Demo EU1", Endpoint::Events, 1).await;
    let eu = dog.org("Demo EU1").unwrap().id;
    let events = dog.received(&eu, Endpoint::Events);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["source_type_name"], "acme-cloud", "{e}");
    assert!(e["title"].as_str().unwrap().contains("acme-cloud"), "{e}");
    // Nothing secret in it: no key, token or tenant secret of any kind.
    let text = e.to_string();
    for secret in ["api_key", "token", "secret"] {
        assert!(!text.to_lowercase().contains(secret), "{text}");
    }
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_test_event_by_default() {
    let dog = dog().await;
    let (relay, _dir) = fast().source("acme-cloud").start(&dog).await;
    connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    // A log sent after the connect arrives; an event sent on connect would
    // have been queued before it, on a stream of its own: give it time.
    let body = br#"[{"message":"after connect"}]"#;
    let (status, _) = relay
        .send("acme", Endpoint::Logs, body, Encoding::Identity)
        .await
        .unwrap();
    assert_eq!(status, 202);
    wait_items(&dog, "Demo EU1", Endpoint::Logs, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let eu = dog.org("Demo EU1").unwrap().id;
    assert_eq!(dog.item_count(&eu, Endpoint::Events), 0);
}
