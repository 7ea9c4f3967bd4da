//! The OAuth onboarding flow end to end, against fakedog over TLS with real
//! hostnames: every site, the region picker, denial, state misuse, tampered
//! domains, PKCE, refresh rotation and single-flight, 409 on key creation,
//! client-secret rotation on reload, and the admin API's guard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use ddrelay::dev::fakedog::Browser;
use ddrelay::dev::sandbox::{self, ADMIN_TOKEN, Relay};
use ddrelay::site::SITES;
use ddrelay::store::TenantState;
use reqwest::Method;
use support::{dog, relay, tenant_json, total_token_calls};

/// Gets the relay's callback with `query` in `browser`, and checks the
/// page refuses it (400) and says `says`.
async fn refused_callback(browser: &Browser, relay: &Relay, query: &str, says: &str) {
    let url = format!("http://{}/oauth/callback?{query}", relay.public);
    let p = browser.get(&url).await.unwrap();
    assert_eq!(p.status, 400, "{query}: {}", p.body);
    assert!(p.body.contains(says), "{query}: {}", p.body);
}

fn query_param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

#[tokio::test]
async fn every_site_connects_through_the_consent_page() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    for site in SITES.iter() {
        let tenant = format!("t-{}", site.name.to_lowercase());
        let org = format!("Demo {}", site.name);
        let page = relay
            .connect(
                &dog,
                &tenant,
                Some(&format!("https://{}", site.web_host)),
                &org,
            )
            .await
            .unwrap();
        assert_eq!(page.status, 200, "{}: {}", site.name, page.body);
        assert!(
            page.body.contains("You may now close this tab."),
            "{}",
            page.body
        );
        let t = tenant_json(&relay, &tenant).await;
        assert_eq!(t["state"], "connected", "{}: {t}", site.name);
        assert_eq!(t["site"], site.domain);
        assert_eq!(t["org_id"], dog.org(&org).unwrap().id);
        assert_eq!(dog.keys_created(&org), 1, "{}", site.name);
        assert_eq!(
            dog.token_calls(&format!("api.{}", site.domain)),
            1,
            "{}: the code is exchanged at the org's own site",
            site.name
        );
    }
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
    let (s, list) = relay.admin(Method::GET, "/v1/tenants", None).await.unwrap();
    assert_eq!(s, 200);
    let tenants = list["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 9);
    for t in tenants {
        for field in [
            "tenant",
            "state",
            "site",
            "org_id",
            "reason",
            "queued_items",
            "queued_bytes",
        ] {
            assert!(t.get(field).is_some(), "{field} missing in {t}");
        }
    }
}

#[tokio::test]
async fn the_us1_app_host_is_the_region_picker() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    let url = relay.authorize_url("picker", None).await.unwrap();
    assert!(
        url.starts_with("https://app.datadoghq.com/oauth2/v1/authorize?"),
        "{url}"
    );
    for p in ["redirect_uri", "client_id", "state", "code_challenge"] {
        assert!(!query_param(&url, p).is_empty());
    }
    assert_eq!(query_param(&url, "response_type"), "code");
    assert_eq!(query_param(&url, "code_challenge_method"), "S256");
    assert_eq!(tenant_json(&relay, "picker").await["state"], "pending");
    dog.login("Demo EU1").unwrap();
    support::authorized(&dog, relay.public, &url).await;
    let t = tenant_json(&relay, "picker").await;
    assert_eq!(
        (t["state"].as_str(), t["site"].as_str()),
        (Some("connected"), Some("datadoghq.eu"))
    );
    assert_eq!(dog.token_calls("api.datadoghq.eu"), 1);
    assert_eq!(dog.token_calls("api.datadoghq.com"), 0);
}

#[tokio::test]
async fn connect_validates_its_input() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    // A custom subdomain keeps its host; a site domain means its web host.
    let url = relay
        .authorize_url("c1", Some("https://bigcorp.datadoghq.eu"))
        .await
        .unwrap();
    assert!(
        url.starts_with("https://bigcorp.datadoghq.eu/oauth2/v1/authorize?"),
        "{url}"
    );
    let url = relay
        .authorize_url("c2", Some("us5.datadoghq.com"))
        .await
        .unwrap();
    assert!(
        url.starts_with("https://us5.datadoghq.com/oauth2/v1/authorize?"),
        "{url}"
    );
    for bad in [
        "https://datadoghq.com.evil.example",
        "https://evil.example",
        "http://app.datadoghq.com",
    ] {
        let (s, v) = relay
            .admin(
                Method::POST,
                "/v1/tenants/c3/connect",
                Some(serde_json::json!({ "site": bad })),
            )
            .await
            .unwrap();
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(
            v["errors"][0].as_str().unwrap().contains(
                bad.trim_start_matches("https://")
                    .trim_start_matches("http://")
            ) || v["errors"][0].as_str().unwrap().contains("https"),
            "{v}"
        );
    }
    let (s, v) = relay
        .admin(Method::POST, "/v1/tenants/bad%20id/connect", None)
        .await
        .unwrap();
    assert_eq!(s, 400, "{v}");
    assert!(
        v["errors"][0].as_str().unwrap().contains("tenant id"),
        "{v}"
    );
    let (s, v) = relay
        .admin(
            Method::POST,
            "/v1/tenants/c4/connect",
            Some(serde_json::json!({ "sitez": "x" })),
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "{v}");
    let (s, _) = relay
        .admin(Method::GET, "/v1/tenants/nobody", None)
        .await
        .unwrap();
    assert_eq!(s, 404);
}

#[tokio::test]
async fn allowed_sites_restrict_connects() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    relay.stop().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Rebuild with an allow-list: only EU1.
    let relay = Relay::start(&dog, dir.path(), "").await.unwrap();
    let text = std::fs::read_to_string(&relay.config_path)
        .unwrap()
        .replace("[datadog]\n", "[datadog]\nallowed_sites = [\"EU1\"]\n");
    std::fs::write(&relay.config_path, text).unwrap();
    relay
        .reloader()
        .reload(ddrelay::config::Config::load_with_env(&relay.config_path, &[]).unwrap());
    let (s, v) = relay
        .admin(
            Method::POST,
            "/v1/tenants/x/connect",
            Some(serde_json::json!({ "site": "https://us5.datadoghq.com" })),
        )
        .await
        .unwrap();
    assert_eq!(s, 400);
    assert!(
        v["errors"][0].as_str().unwrap().contains("allowed_sites"),
        "{v}"
    );
    assert_eq!(
        relay
            .admin(
                Method::POST,
                "/v1/tenants/x/connect",
                Some(serde_json::json!({ "site": "datadoghq.eu" }))
            )
            .await
            .unwrap()
            .0,
        200
    );
}

#[tokio::test]
async fn denial_and_state_misuse_get_clear_pages_and_contact_nobody() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    let browser = dog.browser(&[(sandbox::RELAY_HOST, relay.public)]).unwrap();

    // The customer denies.
    dog.login("Demo US1").unwrap();
    let url = relay.authorize_url("denier", None).await.unwrap();
    let page = browser.deny(&url).await.unwrap();
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("denied"), "{}", page.body);
    let t = tenant_json(&relay, "denier").await;
    assert_eq!(t["state"], "pending");
    assert!(
        t["reason"].as_str().unwrap().contains("access_denied"),
        "{t}"
    );

    let callback = |q: &str| format!("http://{}/oauth/callback?{q}", relay.public);
    // Unknown state.
    let query = "code=abc&state=nope&domain=datadoghq.com";
    refused_callback(&browser, &relay, query, "unknown or was already used").await;
    // Missing state.
    let p = browser
        .get(&callback("code=abc&domain=datadoghq.com"))
        .await
        .unwrap();
    assert_eq!(p.status, 400);

    // Reused state: the first callback succeeds, a replay is refused.
    let url = relay.authorize_url("reuser", None).await.unwrap();
    let page = browser.authorize(&url).await.unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    let replay = browser.get(&page.url).await.unwrap();
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(replay.body.contains("already used"), "{}", replay.body);

    // Expired state: age the stored flow past its expiry.
    let url = relay.authorize_url("late", None).await.unwrap();
    let state = query_param(&url, "state");
    let db = relay.data_dir.join("ddrelay.db");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        db.display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE oauth_flows SET expires_at = 0")
        .execute(&mut conn)
        .await
        .unwrap();
    let query = format!("code=abc&state={state}&domain=datadoghq.com");
    refused_callback(&browser, &relay, &query, "expired").await;
    assert_eq!(
        total_token_calls(&dog),
        1,
        "only the one successful flow reached a token endpoint"
    );
}

#[tokio::test]
async fn tampered_domains_are_refused_without_contacting_anyone() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    let browser = dog.browser(&[(sandbox::RELAY_HOST, relay.public)]).unwrap();
    for domain in [
        "datadoghq.com.evil.example",
        "evil.example",
        "bigcorp.datadoghq.com",
        "app.datadoghq.com",
        "datadoghq.com%2Fevil",
        "localhost",
    ] {
        let url = relay.authorize_url("victim", None).await.unwrap();
        let state = query_param(&url, "state");
        let query = format!("code=stolen&state={state}&domain={domain}");
        refused_callback(&browser, &relay, &query, "not a Datadog site").await;
    }
    // A flow started for EU1 cannot complete for another site.
    let url = relay
        .authorize_url("victim", Some("https://app.datadoghq.eu"))
        .await
        .unwrap();
    let state = query_param(&url, "state");
    let query = format!("code=c&state={state}&domain=datadoghq.com");
    refused_callback(&browser, &relay, &query, "mismatch").await;
    assert_eq!(
        total_token_calls(&dog),
        0,
        "no token endpoint was contacted"
    );
    assert_eq!(tenant_json(&relay, "victim").await["state"], "pending");
}

#[tokio::test]
async fn a_code_with_another_flows_verifier_fails_pkce() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    dog.set_auto_consent(true);
    dog.login("Demo EU1").unwrap();
    let url_a = relay
        .authorize_url("pkce", Some("datadoghq.eu"))
        .await
        .unwrap();
    let url_b = relay
        .authorize_url("pkce", Some("datadoghq.eu"))
        .await
        .unwrap();
    // Authorize flow A at fakedog, but deliver its code with flow B's state.
    let no_redirects = dog
        .client_builder()
        .unwrap()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects.get(&url_a).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let code_url = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        code_url.starts_with("http://relay.test/oauth/callback?"),
        "{code_url}"
    );
    let code = query_param(&code_url, "code");
    let state_b = query_param(&url_b, "state");
    let good = dog.browser(&[(sandbox::RELAY_HOST, relay.public)]).unwrap();
    let query = format!("code={code}&state={state_b}&domain=datadoghq.eu");
    refused_callback(&good, &relay, &query, "Invalid code or code verifier").await;
    assert_eq!(dog.token_calls("api.datadoghq.eu"), 1);
    let t = tenant_json(&relay, "pkce").await;
    assert_eq!(t["state"], "pending");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_refresh_is_single_flight() {
    let dog = dog().await;
    // Tokens shorter than the refresh-ahead margin: every use needs a refresh.
    dog.set_token_ttl(Duration::from_secs(60));
    let (relay, _dir) = relay(&dog, "").await;
    let page = relay
        .connect(&dog, "rot", Some("https://app.datadoghq.eu"), "Demo EU1")
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    let tenants = relay.shared().credentials.clone();
    let before = dog.token_calls("api.datadoghq.eu");
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let t = tenants.clone();
            tokio::spawn(async move {
                t.access_token("rot", false)
                    .await
                    .map(|s| s.expose().to_string())
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for c in calls {
        tokens.push(c.await.unwrap().unwrap());
    }
    assert_eq!(
        dog.token_calls("api.datadoghq.eu") - before,
        1,
        "ten concurrent callers, one refresh"
    );
    assert!(tokens.windows(2).all(|w| w[0] == w[1]));
    // Rotation: fakedog invalidates each used refresh token (and revokes the
    // grant on reuse), so repeated refreshes only work if every rotated
    // token was persisted.
    for _ in 0..3 {
        tenants.access_token("rot", true).await.unwrap();
    }
    assert_eq!(dog.token_calls("api.datadoghq.eu") - before, 4);
    assert_eq!(tenant_json(&relay, "rot").await["state"], "connected");
    // The customer uninstalls: the next refresh fails for good.
    dog.revoke_grants(&dog.org("Demo EU1").unwrap().id).unwrap();
    assert!(tenants.access_token("rot", true).await.is_err());
    let t = tenant_json(&relay, "rot").await;
    assert_eq!(t["state"], "reauth_required", "{t}");
    assert!(
        t["reason"].as_str().unwrap().contains("connect again"),
        "{t}"
    );
}

#[tokio::test]
async fn key_creation_409_explains_what_the_customer_must_do() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    let org = dog.org("Demo AP1").unwrap();
    dog.issue_key(&org.id, sandbox::CLIENT_ID).unwrap(); // the org already has this client's key
    let page = relay
        .connect(&dog, "dup", Some("ap1.datadoghq.com"), "Demo AP1")
        .await
        .unwrap();
    assert_eq!(page.status, 409, "{}", page.body);
    assert!(page.body.contains("OAuth Client API Key"), "{}", page.body);
    let t = tenant_json(&relay, "dup").await;
    assert_eq!(t["state"], "pending");
    assert!(
        t["reason"]
            .as_str()
            .unwrap()
            .contains("revoke \"OAuth Client API Key\""),
        "{t}"
    );
}

#[tokio::test]
async fn one_org_connects_to_one_tenant_and_reconnect_keeps_the_key() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    support::connect(&relay, &dog, "first", "datadoghq.eu", "Demo EU1").await;
    let page = relay
        .connect(&dog, "second", Some("datadoghq.eu"), "Demo EU1")
        .await
        .unwrap();
    assert_eq!(page.status, 409, "{}", page.body);
    assert!(page.body.contains("already connected"), "{}", page.body);
    assert_eq!(tenant_json(&relay, "second").await["state"], "pending");
    // Reconnecting the same tenant keeps its (still valid) key: no 409.
    let page = relay
        .connect(&dog, "first", Some("datadoghq.eu"), "Demo EU1")
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(dog.keys_created(&dog.org("Demo EU1").unwrap().id), 1);
}

#[tokio::test]
async fn a_rotated_client_secret_takes_effect_on_reload() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    support::connect(&relay, &dog, "sec", "datadoghq.eu", "Demo EU1").await;
    let tenants = relay.shared().credentials.clone();
    let new_secret = dog.rotate_client_secret(sandbox::CLIENT_ID).unwrap();
    let err = tenants.access_token("sec", true).await.unwrap_err();
    assert!(err.to_string().contains("invalid_client"), "{err}");
    assert_eq!(
        tenant_json(&relay, "sec").await["state"],
        "connected",
        "a client problem is not the customer's"
    );
    let text = std::fs::read_to_string(&relay.config_path)
        .unwrap()
        .replace(sandbox::CLIENT_SECRET, new_secret.expose());
    std::fs::write(&relay.config_path, text).unwrap();
    let r = relay
        .reloader()
        .reload(ddrelay::config::Config::load_with_env(&relay.config_path, &[]).unwrap());
    assert!(r.needs_restart.is_empty(), "{:?}", r.needs_restart);
    tenants.access_token("sec", true).await.unwrap();
    let (_, health) = relay.admin(Method::GET, "/healthz", None).await.unwrap();
    assert_eq!(health["config_generation"], 2);
}

#[tokio::test]
async fn disconnect_revokes_and_deletes_secrets() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    support::connect(&relay, &dog, "gone", "us3.datadoghq.com", "Demo US3").await;
    let (s, v) = relay
        .admin(Method::DELETE, "/v1/tenants/gone", None)
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["revoked"]["refresh_token"], "revoked", "{v}");
    assert!(v["queued_data"].is_object(), "{v}");
    assert_eq!(dog.revoke_calls("api.us3.datadoghq.com"), 2);
    let t = tenant_json(&relay, "gone").await;
    assert_eq!(t["state"], TenantState::Disconnected.as_str());
    let creds = relay.shared().store.credentials("gone").await.unwrap();
    assert!(
        creds.api_key.is_none() && creds.refresh_token.is_none() && creds.access_token.is_none()
    );
    assert_eq!(
        relay
            .admin(Method::DELETE, "/v1/tenants/nobody", None)
            .await
            .unwrap()
            .0,
        404
    );
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_the_public_listener_serves_only_the_callback() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    let http = reqwest::Client::new();
    for (method, path) in [
        (Method::GET, "/v1/tenants"),
        (Method::GET, "/v1/tenants/x"),
        (Method::POST, "/v1/tenants/x/connect"),
        (Method::DELETE, "/v1/tenants/x"),
    ] {
        let r = http
            .request(method.clone(), relay.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} without a token");
        let r = http
            .request(method.clone(), relay.url(path))
            .bearer_auth("wrong-token-wrong-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} with a wrong token");
    }
    let ok = http
        .get(relay.url("/v1/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    for path in [
        "/v1/tenants",
        "/metrics",
        "/healthz",
        "/api/v2/series",
        "/",
        "/oauth/callback/../v1/tenants",
    ] {
        let r = http
            .get(format!("http://{}{path}", relay.public))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "public listener must not serve {path}");
    }
}

/// Runs `ddrelay tenants --config <file> connect <args...>` against `relay`.
async fn cli_connect(relay: &Relay, args: &[&str]) -> (i32, String, String) {
    let args: Vec<&str> = std::iter::once("connect")
        .chain(args.iter().copied())
        .collect();
    support::ddrelay_against(relay, &["tenants"], &args).await
}

/// One command line connects a tenant to fakedog (it clicks Authorize,
/// choosing the organization by name); without `--fakedog` it prints the
/// URL a person opens. Before, only Rust code could walk the consent page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_line_connects_a_tenant_to_fakedog() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    let eu = ddrelay::site::Site::by_name_or_domain("EU1").unwrap();
    dog.create_org("Second EU1", eu).unwrap();
    dog.logout();
    let (code, out, err) = cli_connect(&relay, &["acme", "--site", "EU1"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("https://app.datadoghq.eu/oauth2/v1/authorize?"),
        "{out}"
    );
    let (code, out, err) = cli_connect(
        &relay,
        &["acme", "--site", "EU1", "--fakedog", "--org", "Second EU1"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("acme connected: org Second EU1"), "{out}");
    let t = tenant_json(&relay, "acme").await;
    assert_eq!(
        (t["state"].as_str(), t["org_name"].as_str()),
        (Some("connected"), Some("Second EU1"))
    );
    let (code, _, err) = cli_connect(
        &relay,
        &[
            "other",
            "--site",
            "datadoghq.eu",
            "--fakedog",
            "--org",
            "Nobody",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("no organization named \"Nobody\""), "{err}");
    assert!(err.contains("Second EU1 (datadoghq.eu)"), "{err}");
}
