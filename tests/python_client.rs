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
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/send_all_kinds.py"
    );
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .env("RELAY_URL", format!("http://{}", relay.api))
        .env("TENANT", "py-tenant")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all kinds sent"), "{stdout}");

    let org = dog.org("Demo EU1").unwrap().id;
    let expected = [
        (Endpoint::SeriesV2, 2),
        (Endpoint::SeriesV1, 1),
        (Endpoint::Logs, 4),
        (Endpoint::Events, 1),
        (Endpoint::CheckRun, 1),
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
