//! Datadog's official Python client (datadog-api-client, PyPI), pointed at
//! the relay with the tenant id as its API key, works unchanged for every
//! data kind, and what it sends reaches the tenant's own site.
//!
//! Needs DDRELAYTEST_PYTHON (a Python with datadog-api-client; scripts/test
//! creates one). Without it the test is skipped, unless
//! DDRELAYTEST_REQUIRE_EXTERNAL=1 (CI), where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use ddrelay::site::Endpoint;
use support::dog;

/// Runs `tests/python/<script>` against `relay` as `tenant`; its stdout,
/// once it exited 0.
async fn run_script(
    python: &str,
    script: &str,
    relay: &ddrelay::dev::sandbox::Relay,
    tenant: &str,
) -> String {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    support::stdout_of(
        tokio::process::Command::new(python)
            .arg(path)
            .env("RELAY_URL", format!("http://{}", relay.api))
            .env("TENANT", tenant),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_works_unchanged() {
    let Some(python) = support::python() else {
        return;
    };
    let dog = dog().await;
    let (relay, _dir) = support::fast().start(&dog).await;
    assert_eq!(
        relay
            .connect(
                &dog,
                "py-tenant",
                Some("https://app.datadoghq.eu"),
                "Demo EU1"
            )
            .await
            .unwrap()
            .status,
        200
    );
    let stdout = run_script(&python, "send_all_kinds.py", &relay, "py-tenant").await;
    assert!(stdout.contains("all kinds sent"), "{stdout}");

    let org = dog.org("Demo EU1").unwrap().id;
    let expected = [
        (Endpoint::SeriesV2, 2),
        (Endpoint::SeriesV1, 1),
        (Endpoint::Logs, 4),
        (Endpoint::Events, 1),
        (Endpoint::CheckRun, 1),
        (Endpoint::Distribution, 1),
        (Endpoint::EventsV2, 1),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    for (endpoint, n) in expected {
        while dog.item_count(&org, endpoint) < n {
            assert!(
                Instant::now() < deadline,
                "{endpoint}: {} of {n} delivered",
                dog.item_count(&org, endpoint)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let logs = dog.received(&org, Endpoint::Logs);
    assert!(
        logs.iter()
            .any(|l| l["message"] == "hello from the official client"),
        "{logs:?}"
    );
    let series = dog.received(&org, Endpoint::SeriesV2);
    assert!(
        series.iter().all(|s| s["metric"] == "python.client.gauge"),
        "{series:?}"
    );
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

/// Datadog's older Python library (`datadog`, PyPI) and its ThreadStats,
/// unchanged, against the relay: validate, metrics, distributions (which
/// were 404 with an empty body, so the library returned None), an event
/// and a service check, each answered as Datadog answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_older_datadog_python_library_works_unchanged() {
    let Some(python) = support::python() else {
        return;
    };
    let dog = dog().await;
    let (relay, _dir) = support::fast().start(&dog).await;
    support::connect(&relay, &dog, "legacy", "datadoghq.eu", "Demo EU1").await;
    let stdout = run_script(&python, "legacy_client.py", &relay, "legacy").await;
    assert!(stdout.contains("legacy client done"), "{stdout}");
    // Distributions: one from `api`, one from ThreadStats (both values).
    support::wait_items(&dog, "Demo EU1", Endpoint::Distribution, 2).await;
    support::wait_items(&dog, "Demo EU1", Endpoint::SeriesV1, 2).await;
    support::wait_items(&dog, "Demo EU1", Endpoint::Events, 1).await;
    support::wait_items(&dog, "Demo EU1", Endpoint::CheckRun, 1).await;
    let org = dog.org("Demo EU1").unwrap().id;
    let dists = dog.received(&org, Endpoint::Distribution);
    let threadstats = dists
        .iter()
        .find(|d| d["metric"] == "legacy.threadstats.latency")
        .unwrap_or_else(|| panic!("{dists:?}"));
    let mut values: Vec<f64> = threadstats["points"][0][1]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, [5.0, 7.0]);
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}
