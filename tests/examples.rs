//! The programs in `examples/` work against a real relay wired to fakedog:
//! the partner onboarding app drives a customer from the onboarding URL to
//! `connected`, `send_data` (Rust) and `send_data.py` (Datadog's official
//! Python client) get every data kind accepted and delivered, and
//! `create_incident` opens an incident in the customer's own org through
//! the pull-side proxy.
//! `webhook_receiver` verifies and prints the relay's lifecycle webhooks.
//!
//! `cargo test` builds the Rust examples next to the `ddrelay` binary; when
//! only this test file was built they are not there and their part is
//! skipped. The Python part needs `DDRELAYTEST_PYTHON` (a Python with
//! `datadog-api-client`, which `scripts/test` provides); without it that part
//! is skipped, unless `DDRELAYTEST_REQUIRE_EXTERNAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ddrelay::dev::fakedog::{FakeDog, INCIDENT_READ, INCIDENT_WRITE};
use ddrelay::dev::sandbox::{self, ADMIN_TOKEN};
use ddrelay::site::Endpoint;
use support::{dog, tenant_json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// A built example program, if `cargo test` built the examples.
fn example(name: &str) -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ddrelay"));
    let path = bin.parent()?.join("examples").join(name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "SKIP: example {name} is not built (run `cargo test` without --test, or `cargo build --examples`)"
        );
        None
    }
}

/// The URL a program printed in its banner line.
fn url_in(banner: &str) -> String {
    let url = banner.split_whitespace().find(|w| w.starts_with("http://"));
    url.unwrap_or_else(|| panic!("no URL in {banner:?}"))
        .to_string()
}

/// Waits until `org` received at least `n` items of each kind.
async fn delivered(dog: &FakeDog, org: &str, n: u64) {
    let org = dog.org(org).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let kinds = [
        Endpoint::SeriesV2,
        Endpoint::Logs,
        Endpoint::Events,
        Endpoint::CheckRun,
    ];
    while kinds.iter().any(|k| dog.item_count(&org.id, *k) < n) {
        assert!(
            Instant::now() < deadline,
            "not delivered: {:?}",
            kinds.map(|k| dog.item_count(&org.id, k))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_examples_onboard_a_customer_and_send_every_kind() {
    let (Some(app_bin), Some(send_bin)) = (example("partner_onboarding"), example("send_data"))
    else {
        return;
    };
    let dog = dog().await;
    let (relay, _dir) = support::fast().start(&dog).await;
    let relay_url = format!("http://{}", relay.api);

    // The partner app, on a free port.
    let mut app = tokio::process::Command::new(app_bin)
        .args(["--relay", &relay_url, "--listen", "127.0.0.1:0"])
        .args(["--tenant", "acme"])
        .env("RELAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(app.stdout.take().unwrap()).lines();
    let banner = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let app_url = url_in(&banner);

    // Datadog sends the customer to the onboarding URL with `site`; the app
    // redirects to the relay's authorize URL at that site.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(format!(
            "{app_url}/onboarding?site=https%3A%2F%2Fapp.datadoghq.eu"
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let authorize = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        authorize.starts_with("https://app.datadoghq.eu/oauth2/v1/authorize?"),
        "{authorize}"
    );
    assert_eq!(tenant_json(&relay, "acme").await["state"], "pending");

    // The customer authorizes; the relay's callback finishes the connection.
    dog.login("Demo EU1").unwrap();
    let page = support::authorized(&dog, relay.public, &authorize).await;
    assert!(
        page.body.contains("You may now close this tab."),
        "{}",
        page.body
    );
    let status = http
        .get(format!("{app_url}/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        status.contains("<dd id=\"state\">connected</dd>"),
        "{status}"
    );

    // send_data: every kind, gzip, tenant in DD-Relay-Tenant.
    let stdout = support::stdout_of(
        tokio::process::Command::new(send_bin).args(["--relay", &relay_url, "--tenant", "acme"]),
    )
    .await;
    assert_eq!(stdout.matches("202 Accepted").count(), 4, "{stdout}");
    delivered(&dog, "Demo EU1", 1).await;
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
    app.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_sends_every_kind_with_datadogs_client() {
    let Some(python) = support::python() else {
        return;
    };
    let dog = dog().await;
    let (relay, _dir) = support::fast().start(&dog).await;
    relay
        .connect(
            &dog,
            "globex",
            Some("https://us3.datadoghq.com"),
            "Demo US3",
        )
        .await
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/send_data.py");
    let stdout = support::stdout_of(
        tokio::process::Command::new(python)
            .arg(script)
            .env("RELAY_URL", format!("http://{}", relay.api))
            .env("RELAY_TENANT", "globex"),
    )
    .await;
    assert_eq!(stdout.matches("accepted").count(), 4, "{stdout}");
    delivered(&dog, "Demo US3", 1).await;
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_example_opens_an_incident_in_the_customers_org() {
    let Some(bin) = example("create_incident") else {
        return;
    };
    let dog = dog().await;
    sandbox::register_client_with_scopes(&dog, &["api_keys_write", INCIDENT_READ, INCIDENT_WRITE])
        .unwrap();
    let (relay, _dir) = support::fast().start(&dog).await;
    for (tenant, site, org) in [
        ("acme", "https://app.datadoghq.eu", "Demo EU1"),
        ("globex", "https://us5.datadoghq.com", "Demo US5"),
    ] {
        relay.connect(&dog, tenant, Some(site), org).await.unwrap();
    }
    let stdout = support::stdout_of(
        tokio::process::Command::new(bin)
            .args([
                "--relay",
                &format!("http://{}", relay.api),
                "--tenant",
                "acme",
            ])
            .args(["--title", "Checkout errors for acme", "--severity", "SEV-2"])
            .args(["--customer-impact", "EU checkout"])
            .env("RELAY_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("RELAY_PROXY_TOKEN"),
    )
    .await;
    let incidents = dog.incidents("Demo EU1");
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let id = incidents[0]["id"].as_str().unwrap();
    assert!(stdout.contains(&format!("id:        {id}")), "{stdout}");
    assert!(stdout.contains("public_id: 1"), "{stdout}");
    let attributes = &incidents[0]["attributes"];
    assert_eq!(attributes["severity"], "SEV-2");
    assert_eq!(attributes["customer_impact_scope"], "EU checkout");
    assert!(dog.incidents("Demo US5").is_empty());
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_receiver_verifies_signatures_and_prints_each_event() {
    let Some(bin) = example("webhook_receiver") else {
        return;
    };
    let secret = "example-webhook-secret-0123456789";
    let mut receiver = tokio::process::Command::new(bin)
        .args(["--listen", "127.0.0.1:0"])
        .env("WEBHOOK_SECRET", secret)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(receiver.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the receiver printed nothing within 30 s")
            .unwrap()
            .unwrap()
    };
    let banner = next_line().await;
    let url = url_in(&banner);

    // A request that is not signed with the secret is refused.
    let forged = reqwest::Client::new()
        .post(&url)
        .header(
            "DD-Relay-Signature",
            format!("t={},v1=00", ddrelay::clock::now()),
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    let dog = dog().await;
    let extra = format!("[webhooks]\nurl = \"{url}\"\nsecret = \"{secret}\"\n");
    let (relay, _dir) = support::relay(&dog, &extra).await;
    support::connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    let event: serde_json::Value = serde_json::from_str(&next_line().await).unwrap();
    assert_eq!(event["type"], "tenant.connected", "{event}");
    assert_eq!(event["tenant"], "acme");
    assert_eq!(event["site"], "datadoghq.eu");
    receiver.kill().await.unwrap();
}
