//! The status page (`GET /` on api_listen): its access rules over plain
//! HTTP, then the page itself as headless Chromium renders it, with tenants
//! on two sites, one in `reauth_required` holding data, one pending, and an
//! org name full of HTML.
//!
//! Chromium is Debian's `chromium` (`scripts/test` installs it), driven with
//! `--dump-dom` (and `--screenshot`) and the flags this machine needs. Without
//! it the browser part is skipped, unless `DDRELAYTEST_REQUIRE_EXTERNAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use ddrelay::dev::fakedog::FakeDog;
use ddrelay::dev::sandbox::{ADMIN_TOKEN, Relay};
use ddrelay::site::{Encoding, Endpoint, Site};
use support::tools::{CHROMIUM_FLAGS, tool};
use support::{dog, expect_status, relay, tenant_json};

/// The org name Datadog passes as `dd_org_name`: untrusted text.
const EVIL_ORG: &str = "<b id=\"injected\">Evil & Co</b>";

/// Tenants on two sites (US1, EU1): acme, globex and umbrella connected
/// (umbrella's org name is HTML), initech in reauth_required holding one
/// log, pending-co pending.
async fn populate(dog: &FakeDog, relay: &Relay) {
    let eu = Site::by_domain("datadoghq.eu").unwrap();
    let evil = dog.create_org(EVIL_ORG, eu).unwrap();
    let initech = dog.create_org("Initech", eu).unwrap();
    for (tenant, site, org) in [
        ("acme", "https://app.datadoghq.com", "Demo US1"),
        ("globex", "https://app.datadoghq.eu", "Demo EU1"),
        ("umbrella", "https://app.datadoghq.eu", evil.id.as_str()),
        ("initech", "https://app.datadoghq.eu", initech.id.as_str()),
    ] {
        let page = relay.connect(dog, tenant, Some(site), org).await.unwrap();
        assert_eq!(page.status, 200, "{tenant}: {}", page.body);
    }
    relay.authorize_url("pending-co", None).await.unwrap();
    revoke(dog, relay, "initech", &initech.id).await;
    // Its data is still accepted, and held.
    let (status, body) = relay
        .send(
            "initech",
            Endpoint::Logs,
            br#"[{"message":"held while reauth is required"}]"#,
            Encoding::Gzip,
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
}

/// Moves `tenant` (connected to `org`) to reauth_required the way delivery
/// would: the grant is revoked at Datadog, then a refresh is forced.
async fn revoke(dog: &FakeDog, relay: &Relay, tenant: &str, org: &str) {
    let org = dog.org(org).unwrap();
    assert!(dog.revoke_grants(&org.id).unwrap() >= 1);
    assert!(
        relay
            .shared()
            .credentials
            .access_token(tenant, true)
            .await
            .is_err()
    );
    assert_eq!(tenant_json(relay, tenant).await["state"], "reauth_required");
}

/// Chromium (DDRELAYTEST_CHROMIUM names another), or `None`: skip.
fn chromium() -> Option<String> {
    let bin = std::env::var("DDRELAYTEST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    tool(&bin)
}

/// Runs headless Chromium on `url` and returns the DOM it rendered;
/// `screenshot` also writes a PNG.
async fn render(bin: &str, profile: &Path, url: &str, screenshot: Option<&Path>) -> String {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(CHROMIUM_FLAGS)
        .arg("--window-size=1600,1000")
        .arg(format!("--user-data-dir={}", profile.display()));
    match screenshot {
        Some(png) => cmd.arg(format!("--screenshot={}", png.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        cmd.arg(url).kill_on_drop(true).output(),
    )
    .await
    .expect("chromium did not finish within 90 s")
    .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `<tr>` of `tenant` in the dumped DOM.
fn row<'a>(dom: &'a str, tenant: &str) -> &'a str {
    let start = dom
        .find(&format!("data-tenant=\"{tenant}\""))
        .unwrap_or_else(|| panic!("no row for {tenant}"));
    let end = dom[start..].find("</tr>").unwrap() + start;
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_needs_the_token_and_keeps_it_out_of_the_page() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let r = http.get(relay.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("?token="));
    let r = http.get(relay.url("/?token=wrong")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());

    // ?token= → 303 to the same query without the token, and a session cookie.
    let r = http
        .get(relay.url(&format!("/?state=connected&token={ADMIN_TOKEN}&q=ac")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/?state=connected&q=ac");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains(ADMIN_TOKEN), "the cookie is not the token");
    let session = cookie.split(';').next().unwrap().to_string();

    let r = http
        .get(relay.url("/?state=connected"))
        .header("Cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = r.text().await.unwrap();
    assert!(body.contains("ddrelay status"));
    assert!(!body.contains(ADMIN_TOKEN));

    // The bearer header works too; the cookie does not open /v1.
    expect_status(http.get(relay.url("/")).bearer_auth(ADMIN_TOKEN), 200).await;
    expect_status(
        http.get(relay.url("/v1/tenants"))
            .header("Cookie", &session),
        401,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_tenants_and_states() {
    let Some(bin) = chromium() else { return };
    let dog = dog().await;
    let (relay, dir) = relay(&dog, "").await;
    populate(&dog, &relay).await;

    let profile = tempfile::tempdir().unwrap();
    let base = format!("http://{}", relay.api);
    let dom = render(
        &bin,
        profile.path(),
        &format!("{base}/?token={ADMIN_TOKEN}"),
        None,
    )
    .await;
    assert!(dom.contains("ddrelay status"), "{dom}");
    assert!(!dom.contains(ADMIN_TOKEN), "the token is never in the page");
    assert!(dom.contains(">ready<"), "{dom}");
    assert!(
        dom.contains(&format!(">{}<", env!("CARGO_PKG_VERSION"))),
        "version"
    );
    for (tenant, state, site) in [
        ("acme", "connected", "datadoghq.com"),
        ("globex", "connected", "datadoghq.eu"),
        ("umbrella", "connected", "datadoghq.eu"),
        ("initech", "reauth_required", "datadoghq.eu"),
    ] {
        let r = row(&dom, tenant);
        assert!(r.contains(&format!("data-state=\"{state}\"")), "{r}");
        assert!(r.contains(&format!("<td>{site}</td>")), "{r}");
    }
    assert!(row(&dom, "pending-co").contains("data-state=\"pending\""));
    // It reloads itself without a script, and each row links to the
    // tenant's detail and dead letters.
    assert!(dom.contains("http-equiv=\"refresh\""), "{dom}");
    assert!(dom.contains("Items per second"), "{dom}");
    let acme = row(&dom, "acme");
    assert!(acme.contains("href=\"/status/v1/tenants/acme\""), "{acme}");
    assert!(
        acme.contains("href=\"/status/v1/tenants/acme/dead_letters\""),
        "{acme}"
    );
    assert!(dom.contains("id=\"count-connected\">3<"), "{dom}");
    assert!(dom.contains("id=\"count-reauth_required\">1<"), "{dom}");
    assert!(dom.contains("id=\"count-pending\">1<"), "{dom}");
    assert!(dom.contains("id=\"tenants-total\">5<"), "{dom}");
    // The problem tenant comes first, with its reason and held data.
    let first = dom.find("<tr data-tenant=").unwrap();
    assert!(dom[first..].starts_with("<tr data-tenant=\"initech\""));
    let r = row(&dom, "initech");
    assert!(r.contains("class=\"problem\""), "{r}");
    assert!(r.contains("must connect again"), "{r}");
    assert!(r.contains("<td class=\"num\">1</td>"), "one held log: {r}");
    // Datadog's org name is text, never markup.
    assert!(
        !dom.contains("<b id=\"injected\">"),
        "org name was not escaped"
    );
    assert!(
        row(&dom, "umbrella").contains("&lt;b id=\"injected\"&gt;Evil &amp; Co&lt;/b&gt;"),
        "{}",
        row(&dom, "umbrella")
    );

    // Filtering: the token link keeps the other parameters.
    let dom = render(
        &bin,
        profile.path(),
        &format!("{base}/?token={ADMIN_TOKEN}&state=connected&q=glo"),
        None,
    )
    .await;
    assert!(dom.contains("data-tenant=\"globex\""), "{dom}");
    for other in ["acme", "initech", "umbrella", "pending-co"] {
        assert!(
            !dom.contains(&format!("data-tenant=\"{other}\"")),
            "{other}"
        );
    }

    // The detail link opens in the browser with the page's session.
    let detail = render(
        &bin,
        profile.path(),
        &format!("{base}/status/v1/tenants/acme"),
        None,
    )
    .await;
    assert!(detail.contains("\"tenant\":\"acme\""), "{detail}");

    // A screenshot, for people (and to prove it paints).
    let png = dir.path().join("status.png");
    render(
        &bin,
        profile.path(),
        &format!("{base}/?token={ADMIN_TOKEN}"),
        Some(&png),
    )
    .await;
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "screenshot is {size} bytes");
    if let Ok(keep) = std::env::var("DDRELAYTEST_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
}

/// What an operator needs per tenant, over plain HTTP: when it last
/// delivered, its refused requests and rates, links to its detail and dead
/// letters that open with the page's session (never `/v1` itself), the
/// site a pending tenant's connect named, and a page that refreshes itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_figures_links_and_pending_sites() {
    let dog = dog().await;
    let (relay, _dir) = support::fast().start(&dog).await;
    support::connect(&relay, &dog, "acme", "https://app.datadoghq.eu", "Demo EU1").await;
    let logs = br#"[{"message":"one"},{"message":"two"}]"#;
    let sent = relay
        .send("acme", Endpoint::Logs, logs, Encoding::Gzip)
        .await
        .unwrap();
    assert_eq!(sent.0, 202, "{}", sent.1);
    let refused = relay
        .send("acme", Endpoint::Logs, b"not json", Encoding::Identity)
        .await
        .unwrap();
    assert_eq!(refused.0, 400, "{}", refused.1);
    relay
        .authorize_url("pending-eu", Some("https://app.datadoghq.eu"))
        .await
        .unwrap();
    let org = dog.org("Demo EU1").unwrap().id;
    support::eventually("delivery", || dog.item_count(&org, Endpoint::Logs) >= 2).await;
    support::eventually_async("the delivery figures", || async {
        tenant_json(&relay, "acme").await["delivery"]["last_delivery_ms"].is_number()
    })
    .await;

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(relay.url("/"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    let acme = row(&body, "acme");
    let pending = row(&body, "pending-eu");
    // Every missing piece is reported at once.
    let checks = [
        (
            "auto-refresh",
            body.contains("<meta http-equiv=\"refresh\" content=\"30\">"),
        ),
        ("last delivery time", acme.contains(" s ago")),
        ("refused requests", acme.contains("data-rejected=\"1\"")),
        (
            "rates",
            acme.contains("data-accepted-1m=\"") && !acme.contains("data-accepted-1m=\"0.00\""),
        ),
        (
            "detail link",
            acme.contains("href=\"/status/v1/tenants/acme\""),
        ),
        (
            "dead letters link",
            acme.contains("href=\"/status/v1/tenants/acme/dead_letters\""),
        ),
        (
            "site a pending connect named",
            pending.contains("datadoghq.eu"),
        ),
    ];
    let missing: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(what, _)| *what)
        .collect();
    assert!(
        missing.is_empty(),
        "missing: {missing:?}\n{acme}\n{pending}"
    );

    // The links open with the page's session; /v1 still needs the token.
    let r = http
        .get(relay.url(&format!("/?token={ADMIN_TOKEN}")))
        .send()
        .await
        .unwrap();
    let session = r.headers()["set-cookie"].to_str().unwrap();
    let session = session.split(';').next().unwrap().to_string();
    let detail = http
        .get(relay.url("/status/v1/tenants/acme"))
        .header("Cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(detail.status(), 200);
    assert_eq!(detail.headers()["cache-control"], "no-store");
    let v: serde_json::Value = detail.json().await.unwrap();
    assert_eq!(v["tenant"], "acme", "{v}");
    assert_eq!(v["delivery"]["rejected_requests"], 1, "{v}");
    expect_status(
        http.get(relay.url("/status/v1/tenants/acme/dead_letters"))
            .header("Cookie", &session),
        200,
    )
    .await;
    expect_status(http.get(relay.url("/status/v1/tenants/acme")), 401).await;
    expect_status(
        http.get(relay.url("/v1/tenants/acme"))
            .header("Cookie", &session),
        401,
    )
    .await;
}
