//! `ddrelay verify` and `POST /v1/tenants/{tenant}/verify` against fakedog:
//! a healthy tenant passes every step (and test items of each kind arrive,
//! tagged), a revoked key fails the key step, a revoked grant fails the
//! authorization step, a scope missing from the grant fails the scopes step,
//! and the real binary prints the checklist and exits 0, 1 or 2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ddrelay::dev::sandbox::Relay;
use ddrelay::site::Endpoint;
use reqwest::Method;
use serde_json::Value;
use support::{dog, relay, tenant_json};

const STEPS: [&str; 13] = [
    "state",
    "site",
    "authorization",
    "api_key",
    "host_api",
    "host_logs",
    "host_trace",
    "intake_series",
    "intake_logs",
    "intake_event",
    "intake_service_check",
    "intake_trace",
    "scopes",
];

async fn verify(relay: &Relay, tenant: &str) -> Value {
    let (status, report) = relay
        .admin(Method::POST, &format!("/v1/tenants/{tenant}/verify"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{report}");
    report
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {report}"))
}

fn passed(report: &Value, name: &str) -> bool {
    step(report, name)["passed"].as_bool().unwrap()
}

/// Runs the real binary: `ddrelay verify --config <file> <tenant>`.
async fn cli(relay: &Relay, tenant: &str) -> (i32, String, String) {
    support::ddrelay_against(relay, &["verify"], &[tenant]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_tenant_passes_every_step_and_the_cli_exits_0() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    let page = relay
        .connect(&dog, "acme", Some("https://app.datadoghq.eu"), "Demo EU1")
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    let tokens_before = dog.token_calls("api.datadoghq.eu");

    let report = verify(&relay, "acme").await;
    let names: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, STEPS);
    for name in STEPS {
        assert!(passed(&report, name), "{name}: {report:#}");
    }
    assert_eq!(report["passed"], true);
    assert_eq!(report["site"], "datadoghq.eu");
    // The forced refresh really went to the tenant's own site.
    assert_eq!(dog.token_calls("api.datadoghq.eu"), tokens_before + 1);
    assert!(
        step(&report, "host_logs")["title"]
            .as_str()
            .unwrap()
            .contains("http-intake.logs.datadoghq.eu"),
        "{report:#}"
    );
    // One tagged test item of each kind reached the tenant's org.
    let org = dog.org("Demo EU1").unwrap();
    for endpoint in [
        Endpoint::SeriesV2,
        Endpoint::Logs,
        Endpoint::Events,
        Endpoint::CheckRun,
    ] {
        let items = dog.received(&org.id, endpoint);
        assert_eq!(items.len(), 1, "{endpoint:?}: {items:?}");
        assert!(
            items[0].to_string().contains("ddrelay:verify"),
            "{endpoint:?}: {}",
            items[0]
        );
    }
    let spans = dog.received(&org.id, Endpoint::Traces);
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0]["meta"]["ddrelay"], "verify", "{}", spans[0]);
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
    // No secret in the report.
    let text = report.to_string();
    assert!(!text.contains(ddrelay::dev::sandbox::CLIENT_SECRET));

    // The real binary against the same relay.
    let (code, stdout, stderr) = cli(&relay, "acme").await;
    println!("{stdout}");
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    for name in STEPS {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains(name)),
            "{name} missing:\n{stdout}"
        );
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(
        stdout.contains("result: 13 of 13 checks passed"),
        "{stdout}"
    );

    // An unknown tenant: 404 from the API, exit 2 from the CLI.
    let (status, body) = relay
        .admin(Method::POST, "/v1/tenants/nobody/verify", None)
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    let (code, _, stderr) = cli(&relay, "nobody").await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nobody does not exist"), "{stderr}");

    // The endpoint needs the admin token.
    let resp = reqwest::Client::new()
        .post(relay.url("/v1/tenants/acme/verify"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_at_datadog_fails_the_key_step_and_the_cli_exits_1() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    relay
        .connect(
            &dog,
            "globex",
            Some("https://us5.datadoghq.com"),
            "Demo US5",
        )
        .await
        .unwrap();
    let org = dog.org("Demo US5").unwrap();
    assert_eq!(dog.revoke_key(&org.id).unwrap(), 1);

    let report = verify(&relay, "globex").await;
    assert_eq!(report["passed"], false);
    assert!(!passed(&report, "api_key"), "{report:#}");
    let detail = step(&report, "api_key")["detail"].as_str().unwrap();
    assert!(detail.contains("refused the key"), "{detail}");
    // The grant itself is fine; data is refused with the dead key.
    assert!(passed(&report, "authorization"), "{report:#}");
    assert!(passed(&report, "host_api") && passed(&report, "host_logs"));
    assert!(!passed(&report, "intake_logs"), "{report:#}");

    let (code, stdout, stderr) = cli(&relay, "globex").await;
    println!("{stdout}");
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("api_key")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("PASS") && l.contains("authorization")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_fails_the_authorization_step() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    relay
        .connect(
            &dog,
            "initech",
            Some("https://ap1.datadoghq.com"),
            "Demo AP1",
        )
        .await
        .unwrap();
    let org = dog.org("Demo AP1").unwrap();
    assert!(dog.revoke_grants(&org.id).unwrap() >= 1);

    let report = verify(&relay, "initech").await;
    assert_eq!(report["passed"], false);
    assert!(!passed(&report, "authorization"), "{report:#}");
    let detail = step(&report, "authorization")["detail"].as_str().unwrap();
    assert!(detail.contains("grant was revoked"), "{detail}");
    // The refused refresh moved the tenant, and the state step says so.
    assert_eq!(
        tenant_json(&relay, "initech").await["state"],
        "reauth_required"
    );
    assert!(!passed(&report, "state"), "{report:#}");
    // The API key itself still works.
    assert!(passed(&report, "api_key"), "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_scope_missing_from_the_grant_fails_the_scopes_step() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    relay
        .connect(&dog, "hooli", Some("datadoghq.com"), "Demo US1")
        .await
        .unwrap();
    // The partner now asks for a scope the customer never granted.
    let text = std::fs::read_to_string(&relay.config_path).unwrap();
    let text = text.replacen(
        "[oauth]\n",
        "[oauth]\nscopes = [\"api_keys_write\", \"metrics_read\"]\n",
        1,
    );
    std::fs::write(&relay.config_path, text).unwrap();
    let config = ddrelay::config::Config::load_with_env(&relay.config_path, &[]).unwrap();
    relay.reloader().reload(config);

    let report = verify(&relay, "hooli").await;
    assert!(!passed(&report, "scopes"), "{report:#}");
    let detail = step(&report, "scopes")["detail"].as_str().unwrap();
    assert!(detail.contains("not granted: metrics_read"), "{detail}");
    assert!(passed(&report, "authorization"), "{report:#}");
}
