//! `/metrics` after a realistic run: valid for promtool, scraped by a real
//! Prometheus server (Debian's `prometheus` package), every family present,
//! and its size independent of the number of tenants (no per-tenant labels).
//!
//! promtool and prometheus come from scripts/test; without them the checks
//! that need them are skipped, unless DDRELAYTEST_REQUIRE_EXTERNAL=1 (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ddrelay::site::{Encoding, Endpoint};
use support::tools::tool;
use support::{Setup, dog, ms};

async fn exercised_relay() -> (
    ddrelay::dev::fakedog::FakeDog,
    ddrelay::dev::sandbox::Relay,
    tempfile::TempDir,
) {
    let dog = dog().await;
    let (relay, dir) = Setup::default().batch_max_age(ms(20)).start(&dog).await;
    support::connect(&relay, &dog, "m", "datadoghq.eu", "Demo EU1").await;
    let body = serde_json::json!([{ "message": "hello" }]).to_string();
    support::accepted(&relay, "m", Endpoint::Logs, body.as_bytes()).await;
    assert_eq!(
        relay
            .send("m", Endpoint::Logs, b"not json", Encoding::Identity)
            .await
            .unwrap()
            .0,
        400
    );
    let org = dog.org("Demo EU1").unwrap().id;
    let deadline = Instant::now() + Duration::from_secs(20);
    while dog.item_count(&org, Endpoint::Logs) < 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (dog, relay, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_complete_and_bounded() {
    let (_dog, relay, _dir) = exercised_relay().await;
    let http = reqwest::Client::new();
    let text = support::get_text(relay.url("/metrics")).await;
    for family in [
        "ddrelay_ingest_requests_total",
        "ddrelay_ingest_items_total",
        "ddrelay_ingest_bytes_total",
        "ddrelay_ingest_rejections_total",
        "ddrelay_ingest_ack_seconds_bucket",
        "ddrelay_queue_items",
        "ddrelay_queue_bytes",
        "ddrelay_queue_oldest_age_seconds",
        "ddrelay_queue_commit_seconds_bucket",
        "ddrelay_send_requests_total",
        "ddrelay_delivered_items_total",
        "ddrelay_end_to_end_seconds_bucket",
        "ddrelay_tenants{state=\"connected\"}",
        "ddrelay_oauth_events_total{event=\"callback\",outcome=\"connected\"}",
        "ddrelay_config_generation",
        "ddrelay_build_info",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
    assert!(
        text.contains("ddrelay_ingest_rejections_total{kind=\"logs\",reason=\"bad_body\"} 1"),
        "{text}"
    );
    assert!(!text.contains("tenant="), "no per-tenant label: {text}");
    // Every accepted request went through a group commit of the queue.
    let commits: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ddrelay_queue_commit_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(commits >= 1, "no queue commit observed:\n{text}");

    // OpenMetrics on request.
    let om = http
        .get(relay.url("/metrics"))
        .header("Accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        om.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(om.text().await.unwrap().trim_end().ends_with("# EOF"));

    // promtool accepts it.
    if let Some(promtool) = tool("promtool") {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // 500 more tenants do not change the size of /metrics beyond noise.
    for i in 0..500 {
        relay
            .authorize_url(&format!("many-{i}"), None)
            .await
            .unwrap();
    }
    let after = support::get_text(relay.url("/metrics")).await;
    assert!(
        after.len() < text.len() + 2048,
        "{} -> {} bytes",
        text.len(),
        after.len()
    );
}

/// What an operator alerts on is there and says what it should: the
/// ingest requests under the tenant's real site, requests to paths the
/// relay does not serve, the process metrics, and zero series before the
/// first event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_sites_unserved_paths_and_the_process() {
    let (_dog, relay, _dir) = exercised_relay().await;
    let http = reqwest::Client::new();
    let get = |url: String| http.get(url).send();
    assert_eq!(get(relay.url("/no/such/path")).await.unwrap().status(), 404);
    assert_eq!(get(relay.url("/api/v2/logs")).await.unwrap().status(), 405);
    assert_eq!(
        http.post(relay.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    let public = format!("http://{}/wp-login.php", relay.public);
    assert_eq!(get(public).await.unwrap().status(), 404);
    let text = support::get_text(relay.url("/metrics")).await;
    let value = |series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    };
    // Every missing piece is reported at once.
    let mut missing = Vec::new();
    let mut expect = |what: &str, ok: bool| {
        if !ok {
            missing.push(what.to_string());
        }
    };
    // Ingest requests carry the site of the tenant they named.
    for class in ["2xx", "4xx"] {
        let s = format!(
            "ddrelay_ingest_requests_total{{kind=\"logs\",site=\"EU1\",status_class=\"{class}\"}}"
        );
        expect(&s, value(&s) == Some(1.0));
    }
    expect("no site=\"-\"", !text.contains("site=\"-\""));
    // Unserved paths: counted by listener and status, never by path.
    for (listener, status, n) in [("api", 404, 1.0), ("api", 405, 2.0), ("public", 404, 1.0)] {
        let s = format!(
            "ddrelay_unserved_requests_total{{listener=\"{listener}\",status=\"{status}\"}}"
        );
        expect(&s, value(&s) == Some(n));
    }
    expect("no path label", !text.contains("wp-login"));
    // Series that exist before their first event.
    for s in [
        "ddrelay_retries_total{kind=\"traces\",reason=\"retryable\"}",
        "ddrelay_dead_lettered_items_total{kind=\"logs\"}",
    ] {
        expect(s, value(s) == Some(0.0));
    }
    // The process, as every exporter reports it.
    if cfg!(target_os = "linux") {
        for name in [
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            expect(name, value(name).is_some_and(|v| v > 0.0));
        }
    }
    assert!(missing.is_empty(), "missing: {missing:#?}\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_server_scrapes_the_relay() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let (_dog, relay, dir) = exercised_relay().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ddrelay\n    static_configs:\n      - targets: ['{}']\n", relay.api),
    )
    .unwrap();
    let mut server = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let query = |q: &str| format!("http://127.0.0.1:{port}/api/v1/query?query={q}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let ok = loop {
        if Instant::now() > deadline {
            break false;
        }
        if let Ok(r) = http
            .get(query("ddrelay_delivered_items_total"))
            .send()
            .await
        {
            last = r.text().await.unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
            if v["data"]["result"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                let up: serde_json::Value = http
                    .get(query("up"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
                break true;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        ok,
        "prometheus never ingested ddrelay_delivered_items_total: {last}"
    );
}
