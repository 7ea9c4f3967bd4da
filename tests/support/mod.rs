//! Shared helpers for the integration tests: fakedog and a relay on port 0,
//! wired together by `ddrelay::dev::sandbox` exactly as `ddrelay demo` does.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod logs;
pub mod process;
pub mod proxy;
pub mod tools;

use std::time::Duration;

use ddrelay::dev::fakedog::{FakeDog, Options};
use ddrelay::dev::sandbox::Relay;
use ddrelay::site::SITES;

/// The `ddrelay` binary with no `DDRELAY_*` or `RUST_LOG` variable from the
/// test's own environment: every child process is configured by its file
/// and by what the test sets explicitly.
pub fn ddrelay_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ddrelay"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DDRELAY_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `DDRELAYTEST_REQUIRE_EXTERNAL=1` (scripts/test and CI set it): a missing
/// external tool or service fails the test instead of skipping it.
pub fn require_external() -> bool {
    std::env::var("DDRELAYTEST_REQUIRE_EXTERNAL").as_deref() == Ok("1")
}

/// DDRELAYTEST_PYTHON: a Python with Datadog's API client and tracing
/// library (scripts/test makes one). Without it the caller skips, unless
/// external tools are required (CI), where this fails the test.
pub fn python() -> Option<String> {
    match std::env::var("DDRELAYTEST_PYTHON") {
        Ok(p) => Some(p),
        Err(_) => {
            assert!(
                !require_external(),
                "DDRELAYTEST_PYTHON is required (run scripts/test)"
            );
            eprintln!("skipping: DDRELAYTEST_PYTHON is not set (run scripts/test)");
            None
        }
    }
}

/// fakedog with one org per site (`Demo US1`, `Demo EU1`, …).
pub async fn dog() -> FakeDog {
    FakeDog::start(Options::demo()).await.unwrap()
}

/// A relay wired to `dog`, with `extra` TOML; keep the TempDir alive.
pub async fn relay(dog: &FakeDog, extra: &str) -> (Relay, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dog, dir.path(), extra).await.unwrap();
    (relay, dir)
}

/// A test relay's settings, typed: what the tests tune, written into the
/// config file as TOML (and as `DDRELAY_*` for the `[server]` table, which
/// the sandbox writes itself).
///
/// `Setup::default().batch_max_age(ms(20)).start(&dog).await`
#[derive(Debug, Default, Clone)]
pub struct Setup {
    /// (table, key, TOML value)
    keys: Vec<(&'static str, &'static str, String)>,
    env: Vec<(String, String)>,
}

/// Milliseconds, for [`Setup`]'s durations.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn toml_duration(d: Duration) -> String {
    format!("\"{}ms\"", d.as_millis())
}

impl Setup {
    fn set(mut self, table: &'static str, key: &'static str, value: String) -> Setup {
        self.keys.retain(|(t, k, _)| (*t, *k) != (table, key));
        self.keys.push((table, key, value));
        self
    }

    /// `delivery.batch_max_age`.
    pub fn batch_max_age(self, d: Duration) -> Setup {
        self.set("delivery", "batch_max_age", toml_duration(d))
    }

    /// `delivery.retry_initial` and `delivery.retry_max`.
    pub fn retry(self, initial: Duration, max: Duration) -> Setup {
        self.set("delivery", "retry_initial", toml_duration(initial))
            .set("delivery", "retry_max", toml_duration(max))
    }

    /// `delivery.max_concurrency`.
    pub fn max_concurrency(self, n: usize) -> Setup {
        self.set("delivery", "max_concurrency", n.to_string())
    }

    /// `delivery.tenant_concurrency`.
    pub fn tenant_concurrency(self, n: usize) -> Setup {
        self.set("delivery", "tenant_concurrency", n.to_string())
    }

    /// `delivery.forbidden_retries`.
    pub fn forbidden_retries(self, n: u32) -> Setup {
        self.set("delivery", "forbidden_retries", n.to_string())
    }

    /// `delivery.max_inflight_bytes`.
    pub fn max_inflight_bytes(self, bytes: u64) -> Setup {
        self.set("delivery", "max_inflight_bytes", bytes.to_string())
    }

    /// `queue.max_bytes`.
    pub fn queue_max_bytes(self, bytes: u64) -> Setup {
        self.set("queue", "max_bytes", bytes.to_string())
    }

    /// `queue.tenant_max_bytes`.
    pub fn tenant_max_bytes(self, bytes: u64) -> Setup {
        self.set("queue", "tenant_max_bytes", bytes.to_string())
    }

    /// `limits.tenant_requests_per_second`.
    pub fn tenant_requests_per_second(self, n: f64) -> Setup {
        self.set("limits", "tenant_requests_per_second", n.to_string())
    }

    /// `integration.source`: every log is sent with `ddsource` = this.
    pub fn source(self, source: &str) -> Setup {
        self.set("integration", "source", format!("{source:?}"))
    }

    /// `integration.test_event_on_connect`.
    pub fn test_event_on_connect(self, on: bool) -> Setup {
        self.set("integration", "test_event_on_connect", on.to_string())
    }

    /// A `[server]` key, as `DDRELAY_SERVER__<KEY>`.
    pub fn server(mut self, key: &str, value: &str) -> Setup {
        self.env.push((
            format!("DDRELAY_SERVER__{}", key.to_uppercase()),
            value.to_string(),
        ));
        self
    }

    /// `oauth.grant_check_interval` (as `DDRELAY_OAUTH__GRANT_CHECK_INTERVAL`:
    /// the sandbox writes `[oauth]` itself).
    pub fn grant_check_interval(mut self, d: Duration) -> Setup {
        self.env.push((
            "DDRELAY_OAUTH__GRANT_CHECK_INTERVAL".into(),
            format!("{}ms", d.as_millis()),
        ));
        self
    }

    /// The extra TOML the sandbox appends to its config file.
    pub fn toml(&self) -> String {
        let mut out = String::new();
        for table in ["delivery", "queue", "limits", "integration"] {
            let keys: Vec<_> = self.keys.iter().filter(|(t, _, _)| *t == table).collect();
            if keys.is_empty() {
                continue;
            }
            out.push_str(&format!("[{table}]\n"));
            for (_, k, v) in keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    }

    /// A relay with these settings in a fresh directory (keep it alive).
    pub async fn start(&self, dog: &FakeDog) -> (Relay, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let relay = self.start_in(dog, dir.path()).await;
        (relay, dir)
    }

    /// A relay with these settings in `dir` (starting again in the same
    /// dir finds its queue and store).
    pub async fn start_in(&self, dog: &FakeDog, dir: &std::path::Path) -> Relay {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Relay::start_with_env(dog, dir, &self.toml(), &env)
            .await
            .unwrap()
    }
}

/// Batches sent after 100 ms: what most tests want.
pub fn fast() -> Setup {
    Setup::default().batch_max_age(ms(100))
}

/// `GET /v1/tenants/{tenant}`.
pub async fn tenant_json(relay: &Relay, tenant: &str) -> serde_json::Value {
    let (s, v) = relay
        .admin(reqwest::Method::GET, &format!("/v1/tenants/{tenant}"), None)
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    v
}

/// A client for the relays of a test: no proxy from the environment, and
/// 30 s at most per request, so that a hung relay fails the test.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap()
}

/// The body of `GET url`, whatever its status (`/metrics`, mostly).
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    http().get(url).send().await.unwrap().text().await.unwrap()
}

/// Sends `req` and reads its answer as JSON, whatever its status.
pub async fn json_of(req: reqwest::RequestBuilder) -> serde_json::Value {
    req.send().await.unwrap().json().await.unwrap()
}

/// Sends `req` and checks that its answer's status is `status`.
pub async fn expect_status(req: reqwest::RequestBuilder, status: u16) {
    let (client, req) = req.build_split();
    let req = req.unwrap();
    let what = format!("{} {}", req.method(), req.url());
    let got = client.execute(req).await.unwrap().status().as_u16();
    assert_eq!(got, status, "{what}");
}

/// Runs `cmd` to its end and returns its stdout; fails the test, showing
/// stdout and stderr, unless it exited 0.
pub async fn stdout_of(cmd: &mut tokio::process::Command) -> String {
    let out = cmd.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{}",
        cmd.as_std().get_program().to_string_lossy(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Sends `body` gzip-compressed to `endpoint` for `tenant` and checks the
/// relay accepted it (202).
pub async fn accepted(
    relay: &Relay,
    tenant: &str,
    endpoint: ddrelay::site::Endpoint,
    body: impl AsRef<[u8]>,
) {
    accepted_as(relay, tenant, endpoint, ddrelay::site::Encoding::Gzip, body).await
}

/// As [`accepted`], `body` sent with `encoding`.
pub async fn accepted_as(
    relay: &Relay,
    tenant: &str,
    endpoint: ddrelay::site::Endpoint,
    encoding: ddrelay::site::Encoding,
    body: impl AsRef<[u8]>,
) {
    let (s, v) = relay
        .send(tenant, endpoint, body.as_ref(), encoding)
        .await
        .unwrap();
    assert_eq!(s, 202, "{v}");
}

/// Token calls fakedog saw on every site's API host.
pub fn total_token_calls(dog: &FakeDog) -> u64 {
    SITES
        .iter()
        .map(|s| dog.token_calls(&format!("api.{}", s.domain)))
        .sum()
}

/// A fresh PostgreSQL database on the server named by `DDRELAYTEST_POSTGRES`
/// (scripts/test sets it), dropped again when this is dropped (connections
/// still open to it are ended).
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    /// Creates the database; `None` when no server is configured (a test
    /// then skips PostgreSQL, or fails under DDRELAYTEST_REQUIRE_EXTERNAL=1).
    pub async fn create() -> Option<PgDatabase> {
        use sqlx::Connection as _;
        let Ok(admin_url) = std::env::var("DDRELAYTEST_POSTGRES") else {
            assert!(
                !require_external(),
                "DDRELAYTEST_POSTGRES is required (scripts/test sets it)"
            );
            eprintln!("skipping PostgreSQL: DDRELAYTEST_POSTGRES is not set");
            return None;
        };
        let name = format!("ddrelay_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        Some(PgDatabase {
            url: url.to_string(),
            admin_url,
            name,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside a runtime: use a thread with its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use sqlx::Connection as _;
                let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// `len` characters no compressor shrinks much (a 64-symbol alphabet,
/// pseudo-random from `seed`): the queue stores them as they are, so tests
/// about quotas and disk use see the bytes they send.
pub fn noise(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x >> 58) as usize] as char
        })
        .collect()
}

/// Connects `tenant` to fakedog's `org` at `site` through the relay's whole
/// OAuth flow, and checks it worked.
pub async fn connect(relay: &Relay, dog: &FakeDog, tenant: &str, site: &str, org: &str) {
    let page = relay.connect(dog, tenant, Some(site), org).await.unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
}

/// Follows the authorize URL `url` in fakedog's browser, whose `relay.test`
/// is `public`, and clicks Authorize: the page it lands on, checked to be a
/// 200.
pub async fn authorized(
    dog: &FakeDog,
    public: std::net::SocketAddr,
    url: &str,
) -> ddrelay::dev::fakedog::Page {
    let browser = dog.browser(&[(ddrelay::dev::sandbox::RELAY_HOST, public)]);
    let page = browser.unwrap().authorize(url).await.unwrap();
    assert_eq!(page.status, 200, "{url}: {}", page.body);
    page
}

/// Polls `cond` until it holds; fails the test with `what` after 60 s.
/// The condition is the synchronisation; the deadline only bounds a failure.
pub async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    eventually_within(what, std::time::Duration::from_secs(60), cond).await
}

/// As [`eventually`], failing after `limit`.
pub async fn eventually_within(
    what: &str,
    limit: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// As [`eventually`], for a condition that needs to await (an HTTP call).
pub async fn eventually_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until fakedog org `org` (name or id) received at least `n` items
/// of `endpoint`.
pub async fn wait_items(dog: &FakeDog, org: &str, endpoint: ddrelay::site::Endpoint, n: u64) {
    let id = dog
        .org(org)
        .map(|o| o.id)
        .unwrap_or_else(|| org.to_string());
    let what = format!("{n} {endpoint} items at {org}");
    eventually(&what, || dog.item_count(&id, endpoint) >= n).await
}

/// Waits until the relay's queue is empty.
pub async fn wait_drained(relay: &Relay) {
    eventually("the queue to drain", || {
        relay.shared().queue.stats().items == 0
    })
    .await
}

/// Runs the real binary against `relay`: `ddrelay <command...> --config
/// <its file> <args...>`. The sandbox's file says port 0, so the bound
/// addresses are given the way an operator overrides any key: by
/// environment. Returns the exit code, stdout and stderr.
pub async fn ddrelay_against(
    relay: &ddrelay::dev::sandbox::Relay,
    command: &[&str],
    args: &[&str],
) -> (i32, String, String) {
    // Start from a clean environment: no DDRELAY_* override leaks in.
    let out = tokio::process::Command::from(ddrelay_command())
        .args(command)
        .arg("--config")
        .arg(&relay.config_path)
        .args(args)
        .env("DDRELAY_SERVER__API_LISTEN", relay.api.to_string())
        .env("DDRELAY_SERVER__PUBLIC_LISTEN", relay.public.to_string())
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
