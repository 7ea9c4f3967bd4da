//! The pull-side proxy (`/v1/tenants/{tenant}/datadog/{path}`) against
//! fakedog over TLS with real hostnames: each tenant's reads reach its own
//! API host with its own token, tokens are refreshed ahead of expiry and
//! once after a 401/403, a missing scope and a revoked grant are explained,
//! hostile paths never leave the tenant's API host, the caller's credentials
//! are never forwarded, no token appears in any answer or log line, the
//! proxy token and the admin token, and every limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ddrelay::dev::fakedog::{FakeDog, Fault, MONITORS_READ, MONITORS_WRITE, USER_ACCESS_READ};
use ddrelay::dev::sandbox::{ADMIN_TOKEN, Relay};
use reqwest::Method;
use serde_json::{Value, json};
use support::proxy::{Answer, admin_call, call, http};
use support::{connect, tenant_json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALL_SCOPES: [&str; 4] = [
    "api_keys_write",
    MONITORS_READ,
    MONITORS_WRITE,
    USER_ACCESS_READ,
];
const EU_API: &str = "api.datadoghq.eu";

// ---- helpers ----

/// fakedog, the sandbox client registered with `scopes`, and a relay; the
/// log capture on.
async fn setup(scopes: &[&str], extra: &str) -> (FakeDog, Relay, tempfile::TempDir) {
    support::logs::captured();
    support::proxy::setup(scopes, extra).await
}

async fn get(relay: &Relay, tenant: &str, path: &str) -> Answer {
    admin_call(relay, Method::GET, tenant, path, None).await
}

/// One raw HTTP/1.1 request, exactly as written (reqwest would normalize
/// `..` and `%2e%2e` away before sending).
async fn raw(addr: SocketAddr, method: &str, target: &str, host: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Every secret a tenant has held, collected as the test goes (tokens rotate).
#[derive(Default)]
struct Secrets(BTreeSet<String>);

impl Secrets {
    async fn note(&mut self, relay: &Relay, tenant: &str) {
        let c = relay.shared().store.credentials(tenant).await.unwrap();
        for s in [c.access_token, c.refresh_token, c.api_key]
            .into_iter()
            .flatten()
        {
            self.0.insert(s.expose().to_string());
        }
    }

    fn access_token(relay: &Relay, tenant: &str) -> impl std::future::Future<Output = String> {
        let store = relay.shared().store.clone();
        let tenant = tenant.to_string();
        async move {
            store
                .credentials(&tenant)
                .await
                .unwrap()
                .access_token
                .unwrap()
                .expose()
                .to_string()
        }
    }

    /// No secret in any answer (headers and body) nor in any log line.
    fn assert_nowhere(&self, answers: &[&Answer]) {
        assert!(!self.0.is_empty());
        let logs = support::logs::captured().text();
        for secret in &self.0 {
            for a in answers {
                assert!(
                    !a.body.contains(secret.as_str()),
                    "a token in a body: {a:?}"
                );
                for (name, value) in &a.headers {
                    assert!(
                        !value.to_str().unwrap_or_default().contains(secret.as_str()),
                        "a token in header {name}"
                    );
                }
            }
            assert!(!logs.contains(secret.as_str()), "a token in the logs");
        }
    }
}

fn names(monitors: &Value) -> Vec<String> {
    monitors
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

// ---- tests ----

#[tokio::test]
async fn reads_reach_each_tenants_own_api_host_with_only_its_token() {
    let (dog, relay, _dir) = setup(&ALL_SCOPES, "").await;
    connect(&relay, &dog, "eu", "https://app.datadoghq.eu", "Demo EU1").await;
    connect(&relay, &dog, "us5", "https://us5.datadoghq.com", "Demo US5").await;
    let mut secrets = Secrets::default();
    let mut answers = Vec::new();
    let caller_headers = [
        ("DD-API-KEY", "partner-api-key"),
        ("DD-APPLICATION-KEY", "partner-app-key"),
        ("Cookie", "session=partner"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("User-Agent", "oncall-test/1.0"),
        ("Accept", "application/json"),
    ];
    for (tenant, host, org) in [
        ("eu", EU_API, "Demo EU1"),
        ("us5", "api.us5.datadoghq.com", "Demo US5"),
    ] {
        secrets.note(&relay, tenant).await;
        let token = Secrets::access_token(&relay, tenant).await;
        let before = dog.requests(host, 200);
        let seen_before = dog.api_requests().len();
        let a = call(
            &relay,
            ADMIN_TOKEN,
            Method::GET,
            tenant,
            "api/v1/monitor?name=cpu&api_key=leaked&application_key=leaked2",
            &caller_headers,
            None,
        )
        .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.header("dd-relay-origin"), Some("datadog"));
        assert_eq!(a.header("x-ratelimit-limit"), Some("1000"), "{a:?}");
        assert_eq!(names(&a.json()), [format!("[{org}] CPU usage is high")]);
        assert_eq!(
            dog.requests(host, 200),
            before + 1,
            "{tenant} reached {host}"
        );

        let received = &dog.api_requests()[seen_before];
        assert_eq!(received.host, host);
        assert_eq!(received.path, "/api/v1/monitor");
        assert_eq!(received.query.as_deref(), Some("name=cpu"));
        assert_eq!(
            received.header("authorization"),
            [format!("Bearer {token}")]
        );
        for h in [
            "dd-api-key",
            "dd-application-key",
            "cookie",
            "x-forwarded-for",
        ] {
            assert!(received.header(h).is_empty(), "{h} forwarded: {received:?}");
        }
        let ua = received.header("user-agent").join(" ");
        assert!(ua.starts_with("oncall-test/1.0 ddrelay/"), "{ua}");
        assert_eq!(received.header("accept"), ["application/json"]);
        answers.push(a);

        let users = get(&relay, tenant, "api/v2/users").await;
        assert_eq!(users.status, 200, "{users:?}");
        let users_json = users.json();
        assert_eq!(users_json["data"].as_array().unwrap().len(), 2);
        let slug = org.replace(' ', "").to_lowercase();
        assert!(
            users.body.contains(&format!("@{slug}.example")),
            "{}",
            users.body
        );
        answers.push(users);
    }

    // A body: create a monitor for eu, read it back; us5 does not see it.
    let monitor = json!({"name": "Disk full", "type": "metric alert", "query": "avg(last_5m):avg:system.disk.in_use{*} > 0.9"});
    let created = admin_call(&relay, Method::POST, "eu", "api/v1/monitor", Some(monitor)).await;
    assert_eq!(created.status, 200, "{created:?}");
    let id = created.json()["id"].as_i64().unwrap();
    let one = get(&relay, "eu", &format!("api/v1/monitor/{id}")).await;
    assert_eq!(one.status, 200, "{one:?}");
    assert_eq!(one.json()["name"], "Disk full");
    let other = get(&relay, "us5", &format!("api/v1/monitor/{id}")).await;
    assert_eq!(other.status, 404, "{other:?}");
    assert_eq!(other.json()["errors"][0], "Monitor not found");
    answers.extend([created, one, other]);

    // Nothing reached a host of another site, or any host but the two sites'.
    let allowed: BTreeSet<&str> = [
        EU_API,
        "api.us5.datadoghq.com",
        "app.datadoghq.eu",
        "us5.datadoghq.com",
    ]
    .into();
    for h in dog.hosts_seen() {
        assert!(allowed.contains(h.as_str()), "fakedog saw a request at {h}");
    }
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
    secrets.note(&relay, "eu").await;
    secrets.note(&relay, "us5").await;
    secrets.assert_nowhere(&answers.iter().collect::<Vec<_>>());
}

#[tokio::test]
async fn tokens_are_refreshed_ahead_of_expiry_and_once_after_a_refusal() {
    let (dog, relay, _dir) = setup(&ALL_SCOPES, "").await;
    // Tokens shorter than the relay's refresh-ahead margin.
    dog.set_token_ttl(Duration::from_secs(60));
    connect(&relay, &dog, "eu", "https://app.datadoghq.eu", "Demo EU1").await;
    let mut secrets = Secrets::default();
    secrets.note(&relay, "eu").await;
    let old = Secrets::access_token(&relay, "eu").await;
    let calls = dog.token_calls(EU_API);
    let a = get(&relay, "eu", "api/v1/monitor").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        dog.token_calls(EU_API),
        calls + 1,
        "refreshed ahead of expiry"
    );
    assert_eq!(
        dog.requests(EU_API, 403),
        0,
        "Datadog never saw a stale token"
    );
    let new = Secrets::access_token(&relay, "eu").await;
    assert_ne!(old, new);
    secrets.note(&relay, "eu").await;

    // Datadog's clock says the token expired; the relay's says it is fresh:
    // Datadog refuses it, the relay refreshes once and retries.
    dog.set_token_ttl(Duration::from_secs(3600));
    let a = get(&relay, "eu", "api/v2/users").await; // refreshes to a 1 h token
    assert_eq!(a.status, 200, "{a:?}");
    secrets.note(&relay, "eu").await;
    let calls = dog.token_calls(EU_API);
    dog.advance(Duration::from_secs(2 * 3600));
    let b = get(&relay, "eu", "api/v1/monitor").await;
    assert_eq!(b.status, 200, "{b:?}");
    assert_eq!(b.header("dd-relay-explanation"), None);
    assert_eq!(dog.requests(EU_API, 403), 1, "one refusal, then the retry");
    assert_eq!(dog.token_calls(EU_API), calls + 1);

    // A 401 is treated the same way.
    dog.inject_fault(Fault::status(401).on_path("/api/v1/monitor").times(1))
        .unwrap();
    let c = get(&relay, "eu", "api/v1/monitor").await;
    assert_eq!(c.status, 200, "{c:?}");
    assert_eq!(dog.requests(EU_API, 401), 1);
    assert_eq!(tenant_json(&relay, "eu").await["state"], "connected");
    secrets.note(&relay, "eu").await;
    secrets.assert_nowhere(&[&a, &b, &c]);
}

#[tokio::test]
async fn a_missing_scope_is_explained_and_the_tenant_stays_connected() {
    let (dog, relay, _dir) = setup(&["api_keys_write", MONITORS_READ], "").await;
    connect(&relay, &dog, "eu", "https://app.datadoghq.eu", "Demo EU1").await;
    let mut secrets = Secrets::default();
    secrets.note(&relay, "eu").await;
    let calls = dog.token_calls(EU_API);
    let a = get(&relay, "eu", "api/v2/users").await;
    let d = &support::proxy::missing_scope(&a);
    assert_eq!(a.header("dd-relay-tenant-state"), Some("connected"));
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(d["cause"], "missing_scope_or_permission");
    assert_eq!(d["tenant"], "eu");
    assert_eq!(d["tenant_state"], "connected");
    assert_eq!(d["retried_with_fresh_token"], true);
    assert_eq!(
        d["granted_scopes"],
        json!(["api_keys_write", "monitors_read"])
    );
    let why = d["explanation"].as_str().unwrap();
    assert!(why.contains("scope") && why.contains("permission"), "{why}");
    assert_eq!(dog.token_calls(EU_API), calls + 1, "one forced refresh");
    assert_eq!(dog.requests(EU_API, 403), 2, "the request and one retry");
    assert_eq!(tenant_json(&relay, "eu").await["state"], "connected");
    // Asking again within a minute: the token is known to be fresh, so no
    // new refresh (and no refresh-token rotation), same explanation.
    let again = get(&relay, "eu", "api/v2/users").await;
    assert_eq!(again.status, 403, "{again:?}");
    assert_eq!(
        again.json()["ddrelay"]["cause"],
        "missing_scope_or_permission"
    );
    assert_eq!(again.json()["ddrelay"]["retried_with_fresh_token"], false);
    assert_eq!(dog.token_calls(EU_API), calls + 1);
    assert_eq!(dog.requests(EU_API, 403), 3);

    // Writing needs monitors_write, which this client lacks too.
    let w = admin_call(
        &relay,
        Method::POST,
        "eu",
        "api/v1/monitor",
        Some(json!({"name": "x", "type": "metric alert", "query": "q"})),
    )
    .await;
    assert_eq!(w.status, 403, "{w:?}");
    assert_eq!(w.json()["ddrelay"]["cause"], "missing_scope_or_permission");
    // What the grant allows still works.
    let r = get(&relay, "eu", "api/v1/monitor").await;
    assert_eq!(r.status, 200, "{r:?}");
    secrets.note(&relay, "eu").await;
    secrets.assert_nowhere(&[&a, &again, &w, &r]);
}

#[tokio::test]
async fn a_revoked_grant_is_explained_and_requires_reauthorization() {
    let (dog, relay, _dir) = setup(&ALL_SCOPES, "").await;
    connect(&relay, &dog, "eu", "https://app.datadoghq.eu", "Demo EU1").await;
    let mut secrets = Secrets::default();
    secrets.note(&relay, "eu").await;
    assert_eq!(get(&relay, "eu", "api/v1/monitor").await.status, 200);
    let org = dog.org("Demo EU1").unwrap();
    dog.revoke_grants(&org.id).unwrap();

    let a = get(&relay, "eu", "api/v1/monitor").await;
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.header("dd-relay-explanation"), Some("grant_revoked"));
    assert_eq!(a.header("dd-relay-tenant-state"), Some("reauth_required"));
    let v = a.json();
    assert_eq!(v["errors"], json!(["Forbidden"]));
    assert_eq!(v["ddrelay"]["cause"], "grant_revoked");
    assert_eq!(v["ddrelay"]["tenant_state"], "reauth_required");
    assert_eq!(v["ddrelay"]["retried_with_fresh_token"], false);
    assert!(
        v["ddrelay"]["explanation"]
            .as_str()
            .unwrap()
            .contains("connect again"),
        "{v}"
    );
    let t = tenant_json(&relay, "eu").await;
    assert_eq!(t["state"], "reauth_required", "{t}");
    assert!(
        t["reason"].as_str().unwrap().contains("connect again"),
        "{t}"
    );
    // The answer is stable while the customer has not reconnected.
    let b = get(&relay, "eu", "api/v2/users").await;
    assert_eq!(b.status, 403, "{b:?}");
    assert_eq!(b.json()["ddrelay"]["cause"], "grant_revoked");

    // A tenant whose token already expired: the refresh fails before Datadog
    // is asked, and the relay answers 409 itself.
    dog.set_token_ttl(Duration::from_secs(60));
    connect(&relay, &dog, "us3", "https://us3.datadoghq.com", "Demo US3").await;
    secrets.note(&relay, "us3").await;
    dog.revoke_grants(&dog.org("Demo US3").unwrap().id).unwrap();
    let seen = dog.api_requests().len();
    let c = get(&relay, "us3", "api/v1/monitor").await;
    assert_eq!(c.status, 409, "{c:?}");
    assert_eq!(c.header("dd-relay-origin"), Some("relay"));
    assert_eq!(c.header("dd-relay-explanation"), Some("grant_revoked"));
    assert_eq!(c.json()["ddrelay"]["tenant_state"], "reauth_required");
    assert_eq!(
        dog.api_requests().len(),
        seen,
        "Datadog's API was not asked"
    );
    assert_eq!(tenant_json(&relay, "us3").await["state"], "reauth_required");
    secrets.assert_nowhere(&[&a, &b, &c]);
}

#[tokio::test]
async fn hostile_paths_never_leave_the_tenants_api_host() {
    let (dog, relay, _dir) = setup(&ALL_SCOPES, "").await;
    connect(&relay, &dog, "eu", "https://app.datadoghq.eu", "Demo EU1").await;
    let hosts_before: BTreeSet<String> = dog.hosts_seen().into_iter().collect();
    let seen = dog.api_requests().len();
    let token_calls = dog.token_calls(EU_API);
    let t = "/v1/tenants/eu/datadog";
    let refused = [
        format!("{t}/api/../oauth2/v1/token"),
        format!("{t}/api/v1/%2e%2e/%2e%2e/oauth2/v1/token"),
        format!("{t}/%2e%2e/%2e%2e/oauth2/v1/token"),
        format!("{t}/api/%2E%2E/oauth2/v1/token"),
        format!("{t}/api/./v1/monitor"),
        format!("{t}/http://evil.example/api/v1/monitor"),
        format!("{t}/https:/evil.example/api/v1/monitor"),
        format!("{t}//evil.example/api/v1/monitor"),
        format!("{t}/api//evil.example/x"),
        format!("{t}/@evil.example/api/v1/monitor"),
        format!("{t}/evil.example/api/v1/monitor"),
        format!("{t}/api/v1/monitor%2F..%2F..%2Foauth2%2Fv1%2Ftoken"),
        format!("{t}/api%2Fv1%2Fmonitor"),
        format!("{t}/api\\..\\oauth2\\v1\\token"),
        format!("{t}/api/v1/%5C..%5Coauth2"),
        format!("{t}/api/v1/%252e%252e/oauth2"),
        format!("{t}/api/v1/monitor;/../../oauth2"),
        format!("{t}/oauth2/v1/token"),
        format!("{t}/"),
        t.to_string(),
        "/v1/tenants/..%2Fother/datadog/api/v1/monitor".to_string(),
        "/v1/tenants/eu%2F..%2Fx/datadog/api/v1/monitor".to_string(),
    ];
    for target in &refused {
        let (status, text) = raw(relay.api, "GET", target, "relay.test").await;
        assert!(
            status == 400 || status == 403,
            "{target} answered {status}: {text}"
        );
    }
    let (status, text) = raw(relay.api, "TRACE", &format!("{t}/api/v1/monitor"), "x").await;
    assert_eq!(status, 405, "{text}");
    assert_eq!(dog.api_requests().len(), seen, "nothing reached Datadog");
    assert_eq!(dog.token_calls(EU_API), token_calls);
    let hosts_after: BTreeSet<String> = dog.hosts_seen().into_iter().collect();
    assert_eq!(hosts_after, hosts_before);

    // What may pass stays on the tenant's API host: the Host header, an
    // absolute-form request target and `@` inside the path change nothing.
    for (target, host, expected) in [
        (format!("{t}/api/v1/monitor"), "evil.example", 200),
        (
            format!("http://evil.example{t}/api/v1/monitor"),
            "evil.example",
            200,
        ),
        (
            format!("{t}/api/v1/monitor@evil.example"),
            "relay.test",
            404,
        ),
    ] {
        let (status, text) = raw(relay.api, "GET", &target, host).await;
        assert_eq!(status, expected, "{target}: {text}");
    }
    let new = &dog.api_requests()[seen..];
    assert_eq!(new.len(), 3);
    for r in new {
        assert_eq!(r.host, EU_API, "{r:?}");
    }
    assert_eq!(new[2].path, "/api/v1/monitor@evil.example");
    let hosts_after: BTreeSet<String> = dog.hosts_seen().into_iter().collect();
    assert!(
        hosts_after.is_subset(
            &hosts_before
                .iter()
                .cloned()
                .chain([EU_API.to_string()])
                .collect()
        ),
        "{hosts_after:?}"
    );
    assert!(hosts_after.iter().all(|h| !h.contains("evil")));
}

#[tokio::test]
async fn the_proxy_token_replaces_the_admin_token_on_the_proxy() {
    let (dog, relay, _dir) = setup(
        &ALL_SCOPES,
        "[proxy]\ntoken = \"proxy-token-for-the-oncall-tool\"\n",
    )
    .await;
    connect(&relay, &dog, "eu", "https://app.datadoghq.eu", "Demo EU1").await;
    let proxy_token = "proxy-token-for-the-oncall-tool";
    let ok = call(
        &relay,
        proxy_token,
        Method::GET,
        "eu",
        "api/v1/monitor",
        &[],
        None,
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    for wrong in [ADMIN_TOKEN, "nope", ""] {
        let a = call(
            &relay,
            wrong,
            Method::GET,
            "eu",
            "api/v1/monitor",
            &[],
            None,
        )
        .await;
        assert_eq!(a.status, 401, "{wrong}: {a:?}");
        assert_eq!(a.header("www-authenticate"), Some("Bearer"));
        assert_eq!(a.header("dd-relay-origin"), Some("relay"));
        assert!(
            a.json()["errors"][0]
                .as_str()
                .unwrap()
                .contains("proxy.token")
        );
    }
    // The proxy token opens nothing else.
    let admin = http()
        .get(relay.url("/v1/tenants"))
        .bearer_auth(proxy_token)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 401);
    // Unknown and not-yet-connected tenants.
    let a = call(
        &relay,
        proxy_token,
        Method::GET,
        "ghost",
        "api/v1/monitor",
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, 404, "{a:?}");
    relay.authorize_url("pending1", None).await.unwrap();
    let a = call(
        &relay,
        proxy_token,
        Method::GET,
        "pending1",
        "api/v1/monitor",
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, 409, "{a:?}");
    assert!(a.body.contains("pending"), "{a:?}");
}

#[tokio::test]
async fn limits_answer_as_documented() {
    let (dog, relay, _dir) = setup(
        &ALL_SCOPES,
        "[proxy]\nmax_request_body = \"4KiB\"\nmax_response_body = \"3KiB\"\ntimeout = \"2s\"\ntenant_concurrency = 1\n",
    )
    .await;
    connect(&relay, &dog, "eu", "https://app.datadoghq.eu", "Demo EU1").await;
    let mut secrets = Secrets::default();
    secrets.note(&relay, "eu").await;
    let monitor = |message_len: usize| json!({"name": "Big", "type": "metric alert", "query": "q", "message": "m".repeat(message_len)});
    let post = |body: Value| admin_call(&relay, Method::POST, "eu", "api/v1/monitor", Some(body));

    // 413 before Datadog is contacted.
    let seen = dog.api_requests().len();
    let a = post(monitor(5000)).await;
    assert_eq!(a.status, 413, "{a:?}");
    assert_eq!(a.header("dd-relay-origin"), Some("relay"));
    assert!(a.body.contains("proxy.max_request_body"), "{a:?}");
    assert_eq!(dog.api_requests().len(), seen);

    // A response with a Content-Length over the limit: 502 before a byte.
    let b = post(monitor(3300)).await;
    assert_eq!(b.status, 502, "{b:?}");
    assert!(b.body.contains("proxy.max_response_body"), "{b:?}");
    assert_eq!(dog.api_requests().len(), seen + 1, "Datadog answered");

    // A streamed (chunked, no Content-Length) answer that passes the limit
    // within its first 64 KiB: a clean 502 as well.
    let c0 = get(&relay, "eu", "api/v1/monitor").await;
    assert_eq!(c0.status, 502, "{c0:?}");
    assert_eq!(c0.header("dd-relay-origin"), Some("relay"));
    assert!(c0.body.contains("proxy.max_response_body"), "{c0:?}");
    // Under the limit, the same route streams in full.
    let small = get(&relay, "eu", "api/v1/monitor?name=cpu").await;
    assert_eq!(small.status, 200, "{small:?}");
    assert_eq!(small.json().as_array().unwrap().len(), 1);

    // Timeout: Datadog answers after 3 s, proxy.timeout is 2 s.
    dog.inject_fault(
        Fault::delay(Duration::from_secs(3))
            .on_path("/api/v2/users")
            .times(1),
    )
    .unwrap();
    let started = Instant::now();
    let c = get(&relay, "eu", "api/v2/users").await;
    assert_eq!(c.status, 504, "{c:?}");
    assert!(c.body.contains("proxy.timeout"), "{c:?}");
    assert!(started.elapsed() < Duration::from_millis(2900));

    // Concurrency: one request in flight per tenant; the second gets 429 at once.
    dog.inject_fault(
        Fault::delay(Duration::from_millis(1200))
            .on_path("/api/v2/users")
            .times(1),
    )
    .unwrap();
    let slow = {
        let url = relay.url("/v1/tenants/eu/datadog/api/v2/users");
        tokio::spawn(async move {
            http()
                .get(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let d = get(&relay, "eu", "api/v1/monitor?name=cpu").await;
    assert_eq!(d.status, 429, "{d:?}");
    assert_eq!(d.header("retry-after"), Some("1"));
    assert_eq!(d.header("dd-relay-origin"), Some("relay"));
    assert!(d.body.contains("proxy.tenant_concurrency"), "{d:?}");
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(
        get(&relay, "eu", "api/v1/monitor?name=cpu").await.status,
        200
    );

    // Datadog's own 429 passes through with its headers, not retried.
    dog.inject_fault(
        Fault::rate_limited(Duration::from_secs(7))
            .on_path("/api/v2/users")
            .times(1),
    )
    .unwrap();
    let e = get(&relay, "eu", "api/v2/users").await;
    assert_eq!(e.status, 429, "{e:?}");
    assert_eq!(e.header("dd-relay-origin"), Some("datadog"));
    assert_eq!(e.header("retry-after"), Some("7"));
    assert_eq!(e.header("x-ratelimit-reset"), Some("7"));
    assert_eq!(e.json()["errors"][0], "Too many requests");
    assert_eq!(dog.requests(EU_API, 429), 1);

    let metrics = support::get_text(relay.url("/metrics")).await;
    for class in ["2xx", "4xx", "5xx"] {
        assert!(
            metrics.contains(&format!(
                "ddrelay_proxy_requests_total{{status_class=\"{class}\"}}"
            )),
            "{class} missing:\n{metrics}"
        );
    }
    secrets.note(&relay, "eu").await;
    secrets.assert_nowhere(&[&a, &b, &c0, &small, &c, &d, &e]);
}

#[tokio::test]
async fn a_long_answer_is_cut_mid_stream_and_frees_its_slot() {
    let (dog, relay, _dir) = setup(
        &ALL_SCOPES,
        "[proxy]\nmax_request_body = \"16KiB\"\nmax_response_body = \"80KiB\"\ntenant_concurrency = 1\n",
    )
    .await;
    connect(&relay, &dog, "eu", "https://app.datadoghq.eu", "Demo EU1").await;
    for i in 0..7 {
        let body = json!({"name": format!("Big {i}"), "type": "metric alert", "query": "q", "message": "m".repeat(15_000)});
        let a = admin_call(&relay, Method::POST, "eu", "api/v1/monitor", Some(body)).await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    // ~105 KiB, streamed by fakedog without a length: more than the 64 KiB
    // read ahead, so the answer starts, and is cut past 80 KiB.
    let resp = http()
        .get(relay.url("/v1/tenants/eu/datadog/api/v1/monitor"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await;
    match resp {
        Ok(r) => {
            assert_eq!(r.status(), 200);
            assert!(r.headers().get("content-length").is_none());
            assert!(r.bytes().await.is_err(), "the body must not complete");
        }
        // The connection closed before the status line was flushed.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    // The tenant's only concurrency slot was released.
    let a = get(&relay, "eu", "api/v1/monitor?name=cpu").await;
    assert_eq!(a.status, 200, "{a:?}");
}

#[tokio::test]
async fn the_request_rate_is_limited_per_tenant() {
    let (dog, relay, _dir) = setup(&ALL_SCOPES, "[proxy]\ntenant_requests_per_second = 1\n").await;
    connect(&relay, &dog, "eu", "https://app.datadoghq.eu", "Demo EU1").await;
    connect(&relay, &dog, "us5", "https://us5.datadoghq.com", "Demo US5").await;
    assert_eq!(get(&relay, "eu", "api/v1/monitor").await.status, 200);
    let a = get(&relay, "eu", "api/v1/monitor").await;
    assert_eq!(a.status, 429, "{a:?}");
    assert_eq!(a.header("dd-relay-origin"), Some("relay"));
    assert!(a.body.contains("proxy.tenant_requests_per_second"), "{a:?}");
    let wait: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(wait, 1, "whole seconds, rounded up");
    // Another tenant has its own budget.
    assert_eq!(get(&relay, "us5", "api/v1/monitor").await.status, 200);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(get(&relay, "eu", "api/v1/monitor").await.status, 200);
}
