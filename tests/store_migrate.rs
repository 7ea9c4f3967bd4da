//! `ddrelay store migrate`: a relay's embedded SQLite store copied into a
//! fresh PostgreSQL database (the binary, as an operator runs it), then a
//! relay started on that database with the same master key and a new data
//! dir: its tenants deliver, and a connect started before the move
//! completes after it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use ddrelay::dev::sandbox::Relay;
use ddrelay::secret::{MasterKey, Secret};
use ddrelay::site::{Encoding, Endpoint};
use ddrelay::store::{Reason, ReasonCode, Store, TenantState};

fn migrate(config: &Path, to: &str, extra: &[&str]) -> Output {
    let mut cmd = support::ddrelay_command();
    cmd.args([
        "store",
        "migrate",
        "--config",
        config.to_str().unwrap(),
        "--to",
        to,
    ])
    .args(extra)
    .output()
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_moves_to_postgres() {
    let Some(db) = support::PgDatabase::create().await else {
        return;
    };
    let dog = support::dog().await;
    let (relay, dir) = support::relay(&dog, "[delivery]\nbatch_max_age = \"50ms\"\n").await;
    let eu = relay
        .connect(&dog, "acme", Some("datadoghq.eu"), "Demo EU1")
        .await
        .unwrap();
    assert_eq!(eu.status, 200, "{}", eu.body);
    let us = relay
        .connect(&dog, "globex", Some("datadoghq.com"), "Demo US1")
        .await
        .unwrap();
    assert_eq!(us.status, 200, "{}", us.body);
    let tags = vec!["team:payments".to_string()];
    relay
        .shared()
        .tenants
        .set_tags("acme", &tags)
        .await
        .unwrap();
    relay
        .shared()
        .tenants
        .set_state(
            "globex",
            TenantState::ReauthRequired,
            Some(&Reason::new(ReasonCode::KeyRefused, "key refused")),
        )
        .await
        .unwrap();
    // A connect started before the move, completed after it.
    let pending_url = relay
        .authorize_url("initech", Some("us5.datadoghq.com"))
        .await
        .unwrap();
    let config = relay.config_path.clone();

    // Refused while the relay runs (it would keep changing the source).
    let out = migrate(&config, &db.url, &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("stop it"), "{}", text(&out));
    relay.stop().await.unwrap();

    // Bad targets are named, and nothing is written.
    let out = migrate(&config, "mysql://db/ddrelay", &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("expected a PostgreSQL URL"),
        "{}",
        text(&out)
    );

    let out = migrate(&config, &db.url, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    assert!(
        report.contains("copied 3 tenants")
            && report.contains("connected 1")
            && report.contains("reauth_required 1")
            && report.contains("pending 1")
            && report.contains("and 1 pending flows")
            && report.contains("verified"),
        "{report}"
    );
    assert!(!report.contains("apikey") && !report.contains("token="));

    // Again: the target holds tenants now.
    let out = migrate(&config, &db.url, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("already holds 3 tenants"),
        "{}",
        text(&out)
    );
    let out = migrate(&config, &db.url, &["--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("the target held 3 tenants before"),
        "{}",
        text(&out)
    );

    // A replica on the new store: same master key, a new data dir.
    let key = std::fs::read_to_string(dir.path().join("master.key")).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let relay = Relay::start_with_store(
        &dog,
        dir2.path(),
        key.trim(),
        Some(&db.url),
        "[delivery]\nbatch_max_age = \"50ms\"\n",
    )
    .await
    .unwrap();
    let acme = support::tenant_json(&relay, "acme").await;
    assert_eq!(acme["state"], "connected", "{acme}");
    assert_eq!(acme["tags"], serde_json::json!(["team:payments"]), "{acme}");
    assert_eq!(
        support::tenant_json(&relay, "globex").await["state"],
        "reauth_required"
    );
    let (status, body) = relay
        .send(
            "acme",
            Endpoint::Logs,
            br#"[{"message":"after the move"}]"#,
            Encoding::Identity,
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let org = dog.org("Demo EU1").unwrap().id;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dog
        .received(&org, Endpoint::Logs)
        .iter()
        .any(|v| v["message"] == "after the move")
    {
        assert!(
            Instant::now() < deadline,
            "not delivered with the copied key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The pending flow, started on the old store, completes on the new one.
    dog.login("Demo US5").unwrap();
    support::authorized(&dog, relay.public, &pending_url).await;
    assert_eq!(
        support::tenant_json(&relay, "initech").await["state"],
        "connected"
    );
    relay.stop().await.unwrap();
    assert_eq!(dog.keys_created(&org), 1, "the copied key was used");
}

#[tokio::test]
async fn a_target_made_with_another_master_key_is_refused() {
    let Some(db) = support::PgDatabase::create().await else {
        return;
    };
    // The target already carries another key's canary.
    Store::open_postgres(&Secret::new(db.url.clone()), &MasterKey::generate())
        .await
        .unwrap()
        .close()
        .await;
    let dog = support::dog().await;
    let (relay, _dir) = support::relay(&dog, "").await;
    relay.authorize_url("acme", None).await.unwrap();
    let config = relay.config_path.clone();
    relay.stop().await.unwrap();
    let out = migrate(&config, &db.url, &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("master key"), "{}", text(&out));
    // A password in the URL is never echoed.
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some("s3cr3t-pw")).unwrap();
    let out = migrate(&config, url.as_str(), &[]);
    assert!(!text(&out).contains("s3cr3t-pw"), "{}", text(&out));
}
