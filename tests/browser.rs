//! A real browser connects a customer: headless Chromium, driven through
//! chromedriver's WebDriver API, opens the relay's authorize URL, is shown
//! fakedog's consent page, clicks "Authorize", follows Datadog's redirect to
//! the relay's callback and lands on "You may now close this tab."
//!
//! Chromium resolves every Datadog host to fakedog and `relay.test` to the
//! relay with `--host-resolver-rules` (the URLs stay the real ones). It skips
//! certificate checks: fakedog's certificate and the relay's TLS checks are
//! covered by the other tests; this one is about the page flow in a browser.
//!
//! Needs Debian's chromium and chromium-driver (scripts/test installs them);
//! skipped without them unless DDRELAYTEST_REQUIRE_EXTERNAL=1 (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::zombie_processes)] // chromedriver is killed and waited for in Drop

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ddrelay::dev::sandbox;
use serde_json::{Value, json};
use support::tools::{CHROMIUM_FLAGS, tool};
use support::{dog, relay, tenant_json};

struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .await
            {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    return driver;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(v["value"].get("error").is_none(), "webdriver {path}: {v}");
        v["value"].clone()
    }

    /// A headless Chromium session with `args` besides the usual ones and a
    /// throw-away profile in `profile`; its id.
    async fn session(&self, args: &[String], profile: &std::path::Path) -> String {
        let mut all: Vec<String> = CHROMIUM_FLAGS.map(String::from).to_vec();
        all.extend_from_slice(args);
        all.push(format!("--user-data-dir={}", profile.display()));
        let options = json!({ "binary": "/usr/bin/chromium", "args": all });
        let caps = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": options } } });
        let session = self
            .call(reqwest::Method::POST, "/session", Some(caps))
            .await;
        session["sessionId"].as_str().unwrap().to_string()
    }

    /// Opens `url` in session `id`.
    async fn goto(&self, id: &str, url: &str) {
        let path = format!("/session/{id}/url");
        self.call(reqwest::Method::POST, &path, Some(json!({ "url": url })))
            .await;
    }

    /// The text of the element `css` selects on session `id`'s page.
    async fn text_of(&self, id: &str, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                &format!("/session/{id}/element"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        let element = found.as_object().unwrap().values().next().unwrap();
        let element = element.as_str().unwrap();
        let path = format!("/session/{id}/element/{element}/text");
        let text = self.call(reqwest::Method::GET, &path, None).await;
        text.as_str().unwrap().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_clicks_through_the_consent_page() {
    if tool("chromium").is_none() || tool("chromedriver").is_none() {
        return;
    }
    let dog = dog().await;
    let (relay, dir) = relay(&dog, "").await;
    dog.login("Demo EU1").unwrap();
    let authorize = relay
        .authorize_url("browser", Some("https://app.datadoghq.eu"))
        .await
        .unwrap();

    let fake = dog.tls_addr();
    let rules = format!(
        "MAP *.datadoghq.com {fake}, MAP datadoghq.com {fake}, MAP *.datadoghq.eu {fake}, MAP datadoghq.eu {fake}, MAP *.ddog-gov.com {fake}, MAP {} {}, EXCLUDE localhost",
        sandbox::RELAY_HOST,
        relay.public
    );
    let driver = Driver::start().await;
    let profile = dir.path().join("chromium-profile");
    let args = [
        "--ignore-certificate-errors".to_string(),
        format!("--host-resolver-rules={rules}"),
    ];
    let id = driver.session(&args, &profile).await;
    driver.goto(&id, &authorize).await;
    let here = driver
        .call(reqwest::Method::GET, &format!("/session/{id}/url"), None)
        .await;
    assert!(
        here.as_str()
            .unwrap()
            .starts_with("https://app.datadoghq.eu/oauth2/v1/authorize"),
        "{here}"
    );
    let source = driver
        .call(reqwest::Method::GET, &format!("/session/{id}/source"), None)
        .await;
    assert!(
        source.as_str().unwrap().contains("Authorize"),
        "not the consent page: {source}"
    );

    // Click "Authorize".
    let button = driver
        .call(
            reqwest::Method::POST,
            &format!("/session/{id}/element"),
            Some(json!({ "using": "css selector", "value": "button[value=authorize]" })),
        )
        .await;
    let element = button
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    driver
        .call(
            reqwest::Method::POST,
            &format!("/session/{id}/element/{element}/click"),
            Some(json!({})),
        )
        .await;

    // The browser follows Datadog's redirect to the relay's callback.
    let deadline = Instant::now() + Duration::from_secs(30);
    let landed = loop {
        let url = driver
            .call(reqwest::Method::GET, &format!("/session/{id}/url"), None)
            .await;
        let url = url.as_str().unwrap_or_default().to_string();
        if url.starts_with("http://relay.test/oauth/callback") {
            break url;
        }
        assert!(
            Instant::now() < deadline,
            "the browser never reached the callback (at {url})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        landed.contains("code=") && landed.contains("domain=datadoghq.eu"),
        "{landed}"
    );
    let advice = driver.text_of(&id, "#advice").await;
    assert_eq!(advice, "You may now close this tab.");
    driver
        .call(reqwest::Method::DELETE, &format!("/session/{id}"), None)
        .await;

    let t = tenant_json(&relay, "browser").await;
    assert_eq!(
        (t["state"].as_str(), t["site"].as_str()),
        (Some("connected"), Some("datadoghq.eu")),
        "{t}"
    );
}

/// `ddrelay demo --keep-running` keeps the relay and fakedog up after its
/// tour: every printed command is accepted, and fakedog's page of what each
/// org received, read in a real browser, counts what they sent; Ctrl-C
/// stops it cleanly. Before, the demo ended after its tour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_keeps_running_with_a_page_of_what_each_org_received() {
    use tokio::io::AsyncBufReadExt as _;
    if tool("chromium").is_none() || tool("chromedriver").is_none() {
        return;
    }
    let mut demo = tokio::process::Command::from(support::ddrelay_command())
        .args(["demo", "--keep-running"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "ready" {
                return;
            }
            printed.push(line);
        }
        panic!("the demo ended before it was ready");
    });
    ready.await.expect("the demo was not ready within 60 s");
    let page = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("fakedog page: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no fakedog page in {printed:#?}"))
        .to_string();
    let commands: Vec<&str> = printed
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert_eq!(commands.len(), 7, "one command per data kind: {printed:#?}");
    for command in &commands {
        let out = tokio::process::Command::new("bash")
            .args(["-c", command])
            .output()
            .await
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.trim_end().ends_with(" 202") || out.trim_end().ends_with(" 200"),
            "{command}\n{out}"
        );
    }

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let id = driver.session(&[], profile.path()).await;
    // The tour sent one distribution and one v2 event as acme; the printed
    // commands one more each, delivered to Demo US1 a moment later.
    let cell = |kind: &str| format!("tr[data-org='Demo US1'] td[data-kind='{kind}']");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        driver.goto(&id, &page).await;
        let dists = driver.text_of(&id, &cell("distribution")).await;
        let events = driver.text_of(&id, &cell("events_v2")).await;
        if dists == "2" && events == "2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "distribution {dists}, events_v2 {events}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(driver.text_of(&id, "h2").await, "Rules broken: 0");
    driver
        .call(reqwest::Method::DELETE, &format!("/session/{id}"), None)
        .await;

    let pid = demo.id().unwrap().to_string();
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = tokio::time::timeout(Duration::from_secs(30), demo.wait())
        .await
        .expect("the demo did not stop on Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
