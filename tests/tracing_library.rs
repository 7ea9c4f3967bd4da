//! Datadog's tracing library for Python (PyPI `ddtrace`), pointed at the
//! relay as its agent (`DD_TRACE_AGENT_URL`) with the tenant in `DD_TAGS`,
//! works unchanged: its spans, and the stats computed for them, reach the
//! tenant's own org at fakedog.
//!
//! Needs DDRELAYTEST_PYTHON with ddtrace installed (scripts/test installs
//! it). Without it the test is skipped, unless DDRELAYTEST_REQUIRE_EXTERNAL=1
//! (CI), where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ddrelay::site::Endpoint;
use support::{connect, dog, wait_items};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_tracing_library_works_unchanged() {
    let Some(python) = support::python() else {
        return;
    };
    let dog = dog().await;
    let (relay, _dir) = support::fast().start(&dog).await;
    connect(&relay, &dog, "shop", "datadoghq.eu", "Demo EU1").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/send_traces.py");
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .env("DD_TRACE_AGENT_URL", format!("http://{}", relay.api))
        .env("DD_TAGS", "ddrelay.tenant:shop")
        .env("DD_ENV", "prod")
        .env("DD_REMOTE_CONFIGURATION_ENABLED", "false")
        .env("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "false")
        .env("DD_TRACE_STARTUP_LOGS", "false")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ddtrace script failed: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sent",
        "{stderr}"
    );
    wait_items(&dog, "Demo EU1", Endpoint::Traces, 3).await;
    let eu = dog.org("Demo EU1").unwrap().id;
    let spans = dog.received(&eu, Endpoint::Traces);
    let names: Vec<(&str, &str)> = spans
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap(),
                s["resource"].as_str().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("checkout", "GET /cart"),
        ("checkout-db", "SELECT cart"),
        ("checkout", "POST /pay"),
    ] {
        assert!(names.contains(&expected), "{expected:?} not in {names:?}");
    }
    assert!(spans.iter().all(|s| s["language"] == "python"), "{spans:?}");
    assert!(
        spans
            .iter()
            .all(|s| s["meta"].get("ddrelay.tenant").is_none())
    );
    let pay = spans.iter().find(|s| s["resource"] == "POST /pay").unwrap();
    assert_eq!(pay["error"], 1);
    // The stats of the three top-level spans, an error among them.
    support::eventually("stats for every top-level span", || {
        let stats = dog.received(&eu, Endpoint::TraceStats);
        let hits: u64 = stats.iter().map(|g| g["hits"].as_u64().unwrap()).sum();
        let errors: u64 = stats.iter().map(|g| g["errors"].as_u64().unwrap()).sum();
        hits == 3 && errors == 1
    })
    .await;
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}
