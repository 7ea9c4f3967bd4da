//! No secret leaks, end to end (ARCHITECTURE.md "Secrets"; SECURITY.md
//! "Threats and how they are met": secrets at rest and in logs). One relay
//! run connects tenants on several sites, delivers data, rotates tokens, lets
//! a key be refused and replaced, and disconnects a tenant; then every secret
//! the run used (the client secret, the admin token, the master key, every
//! access and refresh token and API key any tenant held) is searched for in:
//! - every log line, at `debug` for all crates and `trace` for ddrelay;
//! - `/metrics`, `/healthz`, the admin API's answers and the status page;
//! - `ddrelay check-config` output (the real binary);
//! - every file under the data dir (the SQLite database with its WAL, the
//!   queue segments and ack files, dead letters), as raw bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use ddrelay::dev::sandbox::{ADMIN_TOKEN, CLIENT_SECRET, Relay};
use ddrelay::site::{Encoding, Endpoint};
use reqwest::Method;
use serde_json::json;
use support::dog;

/// Every secret a tenant holds right now.
async fn note(relay: &Relay, tenant: &str, secrets: &mut BTreeSet<String>) {
    let c = relay.shared().store.credentials(tenant).await.unwrap();
    for s in [c.access_token, c.refresh_token, c.api_key]
        .into_iter()
        .flatten()
    {
        secrets.insert(s.expose().to_string());
    }
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

async fn text(relay: &Relay, path: &str, auth: bool) -> String {
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = c.get(relay.url(path));
    if auth {
        req = req.bearer_auth(ADMIN_TOKEN);
    }
    let r = req.send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.text().await.unwrap()
}

#[tokio::test]
async fn no_secret_in_logs_metrics_answers_check_config_or_the_data_dir() {
    let logs = support::logs::captured();
    let dog = dog().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = support::fast().start_in(&dog, dir.path()).await;
    let mut secrets: BTreeSet<String> = [CLIENT_SECRET, ADMIN_TOKEN]
        .into_iter()
        .map(str::to_string)
        .collect();
    let master_key = std::fs::read_to_string(dir.path().join("master.key")).unwrap();
    secrets.insert(master_key.trim().to_string());

    let tenants = [
        ("alpha", "datadoghq.eu", "Demo EU1"),
        ("beta", "us5.datadoghq.com", "Demo US5"),
        ("gamma", "ap1.datadoghq.com", "Demo AP1"),
    ];
    for (t, site, org) in tenants {
        let page = relay.connect(&dog, t, Some(site), org).await.unwrap();
        assert_eq!(page.status, 200, "{}", page.body);
        note(&relay, t, &mut secrets).await;
    }
    // Data of every kind, delivered.
    for (t, _, _) in tenants {
        let logs_body = json!([{ "message": format!("hello from {t}") }]).to_string();
        support::accepted(&relay, t, Endpoint::Logs, logs_body.as_bytes()).await;
    }
    // Token rotation (refresh), and a key refused then replaced.
    relay
        .shared()
        .credentials
        .access_token("alpha", true)
        .await
        .unwrap();
    note(&relay, "alpha", &mut secrets).await;
    dog.revoke_key(&dog.org("Demo US5").unwrap().id).unwrap();
    support::accepted_as(
        &relay,
        "beta",
        Endpoint::Logs,
        Encoding::Identity,
        json!([{ "message": "after revoke" }]).to_string(),
    )
    .await;
    let us5 = dog.org("Demo US5").unwrap().id;
    let deadline = Instant::now() + Duration::from_secs(60);
    while dog.item_count(&us5, Endpoint::Logs) < 2 {
        assert!(Instant::now() < deadline, "beta's data after a new key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    note(&relay, "beta", &mut secrets).await;
    note(&relay, "gamma", &mut secrets).await;
    // A disconnect (revokes and deletes gamma's secrets).
    let (s, v) = relay
        .admin(Method::DELETE, "/v1/tenants/gamma", None)
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    assert!(
        secrets.len() >= 3 + 3 * 3,
        "{} secrets noted",
        secrets.len()
    );

    // What the relay shows.
    let mut shown = vec![
        text(&relay, "/metrics", false).await,
        text(&relay, "/healthz", false).await,
        text(&relay, "/v1/tenants", true).await,
        text(&relay, "/v1/tenants/alpha", true).await,
        text(&relay, "/", true).await,
    ];
    let out = support::ddrelay_command()
        .args(["check-config", "--config"])
        .arg(&relay.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    shown.push(String::from_utf8_lossy(&out.stdout).into_owned());
    shown.push(String::from_utf8_lossy(&out.stderr).into_owned());
    let data_dir = relay.data_dir.clone();
    relay.stop().await.unwrap();

    let logs = logs.text();
    assert!(logs.contains("tenant connected"), "logs were captured");
    let mut paths = Vec::new();
    files(&data_dir, &mut paths);
    assert!(
        paths
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "seg"))
    );
    assert!(
        paths
            .iter()
            .any(|p| p.to_string_lossy().contains("ddrelay.db"))
    );
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret in the logs");
        for s in &shown {
            assert!(!s.contains(secret.as_str()), "a secret in an answer: {s}");
        }
        for p in &paths {
            let bytes = std::fs::read(p).unwrap();
            assert!(
                memchr::memmem::find(&bytes, secret.as_bytes()).is_none(),
                "a secret in {}",
                p.display()
            );
        }
    }
}
