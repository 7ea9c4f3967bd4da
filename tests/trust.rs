//! The trust core (consent, credentials, data staying with its org), each
//! break from outside reproduced against fakedog: work that changes
//! credentials at Datadog survives a caller that gives up, a revoked grant
//! stops the data, and data accepted for one org never reaches another.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use ddrelay::dev::fakedog::{FakeDog, Fault};
use ddrelay::dev::sandbox::{RELAY_HOST, Relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A refresh whose caller is dropped after Datadog rotated the refresh token
/// (the proxy's client hung up, a timeout fired) is still stored: the next
/// refresh presents the rotated token, and Datadog's reuse detection, which
/// fakedog models, has nothing to revoke. Before the refresh ran on its own
/// task, the store kept the used token and the next refresh lost the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_whose_caller_gave_up_is_still_stored() {
    let dog = support::dog().await;
    let (relay, _dir) = support::relay(&dog, "").await;
    support::connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    let tenants = relay.shared().credentials.clone();
    let calls = support::total_token_calls(&dog);
    dog.inject_fault(
        Fault::late_answer(Duration::from_millis(1500))
            .on_path("/oauth2/v1/token")
            .times(1),
    )
    .unwrap();

    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        tenants.access_token("acme", true),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "the caller gave up before Datadog answered"
    );
    support::eventually("Datadog to see the refresh", || {
        support::total_token_calls(&dog) == calls + 1
    })
    .await;

    // Waits for the tenant lock, which the first refresh holds until it is
    // stored, and takes its token; then a forced refresh presents the
    // refresh token the store now holds.
    let first = tenants.access_token("acme", true).await;
    assert!(first.is_ok(), "after the dropped refresh: {first:?}");
    let second = tenants.access_token("acme", true).await;
    assert!(
        second.is_ok(),
        "a refresh with the stored token: {second:?}"
    );
    assert_ne!(first.unwrap().expose(), second.unwrap().expose());
    let v = support::tenant_json(&relay, "acme").await;
    assert_eq!(v["state"], "connected", "{v}");
    assert_eq!(support::total_token_calls(&dog), calls + 2);
    assert!(
        dog.violations().is_empty(),
        "fakedog saw: {:?}",
        dog.violations()
    );
}

/// The callback URL fakedog redirects the browser to, captured by a
/// listener standing in for the relay's public host (the browser does not
/// reach the relay).
async fn callback_path(relay: &Relay, dog: &FakeDog) -> String {
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = trap.local_addr().unwrap();
    let catch = tokio::spawn(async move {
        let (mut s, _) = trap.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the browser closed before its request ended");
            buf.extend_from_slice(&chunk[..n]);
        }
        let _ = s.shutdown().await;
        let head = String::from_utf8_lossy(&buf).to_string();
        head.split_whitespace().nth(1).unwrap().to_string()
    });
    dog.login("Demo EU1").unwrap();
    let url = relay
        .authorize_url("acme", Some("datadoghq.eu"))
        .await
        .unwrap();
    let browser = dog.browser(&[(RELAY_HOST, addr)]).unwrap();
    let _ = browser.authorize(&url).await;
    catch.await.unwrap()
}

/// A browser that gives up during the callback, after Datadog created the
/// org's one API key, does not leave that key orphaned: the connection is
/// stored anyway. Before, the key was created and never stored, and every
/// reconnect met 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_whose_browser_gave_up_still_connects() {
    let dog = support::dog().await;
    let (relay, _dir) = support::relay(&dog, "").await;
    let path = callback_path(&relay, &dog).await;
    assert!(path.starts_with("/oauth/callback?"), "{path}");
    dog.inject_fault(
        Fault::late_answer(Duration::from_millis(1500))
            .on_path("/api/v2/api_keys/marketplace")
            .times(1),
    )
    .unwrap();

    let gave_up = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}{path}", relay.public))
        .header("Host", RELAY_HOST)
        .send()
        .await;
    assert!(gave_up.is_err(), "the browser gave up: {gave_up:?}");
    let org = dog.org("Demo EU1").unwrap().id;
    support::eventually("the key to be created", || dog.keys_created(&org) == 1).await;

    support::eventually_async("the tenant to be connected", || async {
        support::tenant_json(&relay, "acme").await["state"] == "connected"
    })
    .await;
    let v = support::tenant_json(&relay, "acme").await;
    let issued = dog.keys_issued(&org);
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert!(
        issued[0].ends_with(v["api_key_last4"].as_str().unwrap_or("missing")),
        "the stored key is the one Datadog created: {v}"
    );
}

/// Starts `POST /api/v2/logs` for `tenant` with `Expect: 100-continue` on a
/// raw connection and returns once the relay asks for the body: the tenant
/// was checked and the request is past the point where it is refused.
async fn logs_request_waiting_for_body(
    relay: &Relay,
    tenant: &str,
    body_len: usize,
) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(relay.api).await.unwrap();
    let head = format!(
        "POST /api/v2/logs HTTP/1.1\r\nHost: relay\r\nDD-API-KEY: {tenant}\r\n\
         Content-Type: application/json\r\nContent-Length: {body_len}\r\n\
         Expect: 100-continue\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the relay closed the connection");
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 100"), "{text}");
    s
}

/// Sends the body and reads the status line of the answer.
async fn finish_request(mut s: tokio::net::TcpStream, body: &[u8]) -> u16 {
    s.write_all(body).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the relay closed the connection");
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn logs(n: usize, tag: &str) -> Vec<u8> {
    let items: Vec<_> = (0..n)
        .map(|i| serde_json::json!({ "message": format!("{tag} {i}"), "service": "trust" }))
        .collect();
    serde_json::to_vec(&items).unwrap()
}

async fn send_logs(relay: &Relay, tenant: &str, body: &[u8]) -> u16 {
    let (status, v) = relay
        .send(
            tenant,
            ddrelay::site::Endpoint::Logs,
            body,
            ddrelay::site::Encoding::Identity,
        )
        .await
        .unwrap();
    assert!(status == 202 || status == 409, "{status} {v}");
    status
}

/// Waits until `org` received a log whose message is `message`.
async fn wait_for_log(dog: &FakeDog, org: &str, message: &str) {
    let id = dog.org(org).unwrap().id;
    support::eventually(&format!("{org} to receive `{message}`"), || {
        dog.received(&id, ddrelay::site::Endpoint::Logs)
            .iter()
            .any(|l| l["message"] == message)
    })
    .await;
}

/// After acme moved from `Demo EU1` to `Demo US5`: a log tagged `new`
/// sent through `relay` reaches `Demo US5`, `relay`'s queue drains, and no
/// log tagged `old` reached either org.
async fn only_new_logs_arrive(relay: &Relay, dog: &FakeDog, new: &str, old: &str) {
    assert_eq!(send_logs(relay, "acme", &logs(1, new)).await, 202);
    wait_for_log(dog, "Demo US5", &format!("{new} 0")).await;
    support::eventually("the queue to drain", || {
        relay.shared().queue.stats().items == 0
    })
    .await;
    assert_eq!(logs_received(dog, "Demo US5", old), 0);
    assert_eq!(logs_received(dog, "Demo EU1", old), 0);
}

fn logs_received(dog: &FakeDog, org: &str, prefix: &str) -> usize {
    let id = dog.org(org).unwrap().id;
    dog.received(&id, ddrelay::site::Endpoint::Logs)
        .iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
        .count()
}

/// A request whose body is still arriving when `DELETE /v1/tenants/{t}`
/// runs is never delivered, whichever org the tenant id connects to next.
/// Before records carried their connection's generation, the request was
/// acknowledged after the purge, stayed queued, and its 20 items went to
/// the org the tenant id connected to next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_racing_a_delete_never_reaches_the_next_org() {
    let dog = support::dog().await;
    let (relay, _dir) = support::relay(&dog, "").await;
    support::connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    // Held so that nothing is sent before the DELETE.
    dog.inject_fault(Fault::status(503).on_host("http-intake.logs.datadoghq.eu"))
        .unwrap();

    let body = logs(20, "before-delete");
    let pending = logs_request_waiting_for_body(&relay, "acme", body.len()).await;
    let (status, v) = relay
        .admin(reqwest::Method::DELETE, "/v1/tenants/acme", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    let answered = finish_request(pending, &body).await;
    assert!(answered == 202 || answered == 409, "{answered}");
    dog.clear_faults();

    support::connect(&relay, &dog, "acme", "us5.datadoghq.com", "Demo US5").await;
    only_new_logs_arrive(&relay, &dog, "after-reconnect", "before-delete").await;
}

/// A tenant that reconnects to another org on another site: the previous
/// org's grant is revoked at Datadog, and data held for it is discarded and
/// counted, never sent to the new org.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_to_another_org_revokes_the_old_grant_and_discards_its_data() {
    let dog = support::dog().await;
    let (relay, _dir) = support::relay(&dog, "").await;
    support::connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    // Held: the intake refuses for now, so the data stays queued.
    dog.inject_fault(Fault::status(503).on_host("http-intake.logs.datadoghq.eu"))
        .unwrap();
    assert_eq!(send_logs(&relay, "acme", &logs(10, "for-eu1")).await, 202);
    let revokes = dog.revoke_calls("api.datadoghq.eu");

    support::connect(&relay, &dog, "acme", "us5.datadoghq.com", "Demo US5").await;
    assert_eq!(
        dog.revoke_calls("api.datadoghq.eu"),
        revokes + 2,
        "refresh and access token of the EU1 grant revoked"
    );
    dog.clear_faults();
    assert_eq!(send_logs(&relay, "acme", &logs(1, "for-us5")).await, 202);
    wait_for_log(&dog, "Demo US5", "for-us5 0").await;
    support::eventually("the queue to drain", || {
        relay.shared().queue.stats().items == 0
    })
    .await;
    assert_eq!(logs_received(&dog, "Demo US5", "for-eu1"), 0);
    assert_eq!(logs_received(&dog, "Demo EU1", "for-eu1"), 0);
    let v = support::tenant_json(&relay, "acme").await;
    assert_eq!(v["delivery"]["discarded_items"], 10, "{v}");
}

/// With replicas on one PostgreSQL store: a tenant is deleted while the
/// replica holding some of its data is stopped, then connects to another
/// org. When that replica comes back, it never sends the old data to the
/// new org (its records are of the connection before the DELETE). Before,
/// the restarted replica never saw the tenant disconnected and sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_during_a_delete_never_sends_to_the_next_org() {
    let Some(db) = support::PgDatabase::create().await else {
        return;
    };
    let dog = support::dog().await;
    let key = ddrelay::secret::MasterKey::generate().to_base64();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let extra = "[delivery]\ndrain_timeout = \"1s\"\n";
    let start = |dir: std::path::PathBuf| {
        let (dog, key, url) = (&dog, key.expose().to_string(), db.url.clone());
        async move {
            Relay::start_with_store(dog, &dir, &key, Some(&url), extra)
                .await
                .unwrap()
        }
    };
    let a = start(dir_a.path().to_path_buf()).await;
    let b = start(dir_b.path().to_path_buf()).await;
    support::connect(&a, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    dog.inject_fault(Fault::status(503).on_host("http-intake.logs.datadoghq.eu"))
        .unwrap();
    support::eventually_async("replica B to see the tenant", || async {
        send_logs(&b, "acme", &logs(15, "held-on-b")).await == 202
    })
    .await;
    b.stop().await.unwrap();

    let (status, v) = a
        .admin(reqwest::Method::DELETE, "/v1/tenants/acme", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    support::connect(&a, &dog, "acme", "us5.datadoghq.com", "Demo US5").await;
    dog.clear_faults();

    let b = start(dir_b.path().to_path_buf()).await;
    assert!(b.shared().queue.stats().items >= 15, "B kept its queue");
    only_new_logs_arrive(&b, &dog, "after-restart", "held-on-b").await;
}

/// A reconnect to the same org while Datadog cannot say whether the key is
/// valid (5xx on validate) keeps the working key: unknown is not invalid.
/// Before, the relay took the key for dead, met 409 creating another (one
/// key per org) and moved a working tenant to `reauth_required`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_while_validation_fails_keeps_the_working_key() {
    let dog = support::dog().await;
    let (relay, _dir) = support::relay(&dog, "").await;
    support::connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    let before = support::tenant_json(&relay, "acme").await;
    let org = dog.org("Demo EU1").unwrap().id;
    assert_eq!(dog.keys_created(&org), 1);

    dog.inject_fault(Fault::status(503).on_path("/api/v1/validate"))
        .unwrap();
    support::connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    dog.clear_faults();

    let after = support::tenant_json(&relay, "acme").await;
    assert_eq!(after["state"], "connected", "{after}");
    assert_eq!(after["api_key_last4"], before["api_key_last4"], "{after}");
    assert_eq!(dog.keys_created(&org), 1, "no second key was attempted");
    assert_eq!(
        send_logs(&relay, "acme", &logs(1, "still-works")).await,
        202
    );
    wait_for_log(&dog, "Demo EU1", "still-works 0").await;
}

/// The uninstall case end to end: the customer revokes the grant at
/// Datadog while the API key keeps working. Within the grant check
/// interval the tenant becomes `reauth_required` saying the customer
/// revoked access, data accepted from then on is held (not sent), and a
/// reconnect to the same org delivers it. Before the grant check, nothing
/// ever looked at the grant and data kept flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uninstall_stops_the_data_until_the_customer_reconnects() {
    let dog = support::dog().await;
    let (relay, _dir) = support::Setup::default()
        .grant_check_interval(Duration::from_secs(5))
        .start(&dog)
        .await;
    support::connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    assert_eq!(send_logs(&relay, "acme", &logs(1, "installed")).await, 202);
    wait_for_log(&dog, "Demo EU1", "installed 0").await;

    assert_eq!(dog.revoke_grants("Demo EU1").unwrap(), 1);
    let org = dog.org("Demo EU1").unwrap().id;
    let key = dog.keys_issued(&org).pop().unwrap();
    assert!(dog.key_is_live(&key), "fakedog keeps the key alive");

    support::eventually_async("the revoked grant to be noticed", || async {
        support::tenant_json(&relay, "acme").await["state"] == "reauth_required"
    })
    .await;
    let v = support::tenant_json(&relay, "acme").await;
    assert!(
        v["reason"].as_str().unwrap_or_default().contains("revoked"),
        "{v}"
    );
    assert_eq!(
        send_logs(&relay, "acme", &logs(3, "uninstalled")).await,
        202
    );
    let v = support::tenant_json(&relay, "acme").await;
    assert_eq!(v["queued_items"], 3, "held: {v}");
    assert_eq!(logs_received(&dog, "Demo EU1", "uninstalled"), 0);

    support::connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    wait_for_log(&dog, "Demo EU1", "uninstalled 2").await;
    assert_eq!(logs_received(&dog, "Demo EU1", "uninstalled"), 3);
}

/// Reloads the relay's own config file with `allowed_sites` (JSON list).
fn reload_with_sites(relay: &Relay, allowed_sites: &str) {
    let env = [(
        "DDRELAY_DATADOG__ALLOWED_SITES".to_string(),
        allowed_sites.to_string(),
    )];
    let config = ddrelay::config::Config::load_with_env(&relay.config_path, &env).unwrap();
    relay.reloader().reload(config);
}

/// A reload that takes a site off `datadog.allowed_sites` stops every call
/// to it at once: the tenant there is held (`reauth_required`, reason code
/// `site_not_allowed`), its data is accepted and held, a refresh sends
/// nothing (no client secret to the removed site), and putting the site
/// back resumes it. Before, the list was checked only at connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_taken_off_the_allow_list_gets_nothing_more() {
    let dog = support::dog().await;
    let (relay, _dir) = support::relay(&dog, "").await;
    support::connect(&relay, &dog, "eu", "datadoghq.eu", "Demo EU1").await;
    support::connect(&relay, &dog, "us", "datadoghq.com", "Demo US1").await;

    reload_with_sites(&relay, r#"["datadoghq.com"]"#);
    support::eventually_async("the EU1 tenant to be held", || async {
        support::tenant_json(&relay, "eu").await["state"] == "reauth_required"
    })
    .await;
    let v = support::tenant_json(&relay, "eu").await;
    assert_eq!(v["reason_code"], "site_not_allowed", "{v}");
    let eu_calls = dog.token_calls("api.datadoghq.eu");
    let eu_intake = dog.requests("http-intake.logs.datadoghq.eu", 202);
    let refresh = relay.shared().credentials.access_token("eu", true).await;
    assert!(
        refresh
            .as_ref()
            .is_err_and(|e| e.to_string().contains("allowed_sites")),
        "{refresh:?}"
    );
    assert_eq!(
        dog.token_calls("api.datadoghq.eu"),
        eu_calls,
        "no refresh sent"
    );
    assert_eq!(send_logs(&relay, "eu", &logs(2, "eu-held")).await, 202);
    assert_eq!(send_logs(&relay, "us", &logs(1, "us-flows")).await, 202);
    wait_for_log(&dog, "Demo US1", "us-flows 0").await;
    assert_eq!(support::tenant_json(&relay, "eu").await["queued_items"], 2);
    assert_eq!(
        dog.requests("http-intake.logs.datadoghq.eu", 202),
        eu_intake
    );

    reload_with_sites(&relay, r#"["datadoghq.com", "datadoghq.eu"]"#);
    wait_for_log(&dog, "Demo EU1", "eu-held 1").await;
    let v = support::tenant_json(&relay, "eu").await;
    assert_eq!(v["state"], "connected", "{v}");
}
