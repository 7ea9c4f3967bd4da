//! `ddrelay demo`: the whole product on a fresh machine, no Datadog account
//! needed. It starts fakedog (every Datadog site over TLS) and a relay on
//! loopback, connects three customers on three sites through the full
//! OAuth and PKCE flow (a scripted browser clicks Authorize on fakedog's
//! consent page), attaches one customer's own tags, sends every data kind
//! for each through the ingest API, and prints what each Datadog site
//! received (with the tags and the integration's source on arrival). A
//! partner endpoint on loopback receives the lifecycle webhooks; the tour
//! shows the first one, its signature checked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use parking_lot::Mutex;

use crate::clock::now;
use crate::dev::fakedog::{FakeDog, Options};
use crate::dev::sandbox::Relay;
use crate::secret::Secret;
use crate::site::{Encoding, Endpoint};
use crate::webhooks::sign;

/// The demo's `[webhooks] secret` (a demo value, not a real one).
const WEBHOOK_SECRET: &str = "ddrelay-demo-webhook-secret";

/// The demo's customers: tenant id, fakedog org, the `site` Datadog would
/// pass to the onboarding URL (`None`: the flow starts at the US1 region
/// picker).
const CUSTOMERS: [(&str, &str, Option<&str>); 3] = [
    ("acme", "Demo US1", None),
    ("globex", "Demo EU1", Some("https://app.datadoghq.eu")),
    ("initech", "Demo AP1", Some("https://ap1.datadoghq.com")),
];

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

/// Runs the demo; returns an error (non-zero exit) if anything is off.
/// With `keep_running`, the relay and fakedog stay up after the tour until
/// Ctrl-C (SIGINT) or SIGTERM.
pub(crate) async fn run(keep_running: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    println!(
        "ddrelay demo: a relay and a Datadog emulator on loopback; no account, nothing leaves this machine."
    );

    step(
        1,
        "starting fakedog, the Datadog emulator (every site over TLS, one org per site)",
    );
    let dog = FakeDog::start(Options {
        ca_out: Some(dir.path().join("fakedog-ca.pem")),
        ..Options::demo()
    })
    .await?;
    println!(
        "    fakedog serves every Datadog host on https://{} (CA {})",
        dog.tls_addr(),
        dog.ca_file().display()
    );

    step(
        2,
        "starting the relay (its [datadog.resolve] pins every Datadog hostname to fakedog)",
    );
    let hooks = Hooks::start().await?;
    let relay = Relay::start(
        &dog,
        &dir.path().join("relay"),
        &format!(
            "[delivery]\nbatch_max_age = \"200ms\"\n[integration]\nsource = \"ddrelay-demo\"\ntest_event_on_connect = true\n[webhooks]\nurl = \"{}\"\nsecret = \"{WEBHOOK_SECRET}\"\n",
            hooks.url
        ),
    )
    .await?;
    println!(
        "    ingest + admin API: http://{}   OAuth callback: http://{}/oauth/callback",
        relay.api, relay.public
    );

    step(
        3,
        "connecting three customers on three sites through OAuth + PKCE",
    );
    for (tenant, org, site) in CUSTOMERS {
        let page = relay.connect(&dog, tenant, site, org).await?;
        let (_, t) = relay
            .admin(reqwest::Method::GET, &format!("/v1/tenants/{tenant}"), None)
            .await?;
        let closed = page.body.contains("You may now close this tab.");
        println!(
            "    {tenant:<8} authorized at {:<22} -> callback {} {:<28} state={} site={}",
            site.map(|s| s.trim_start_matches("https://"))
                .unwrap_or("app.datadoghq.com (picker)"),
            page.status,
            if closed {
                "\"You may now close this tab.\""
            } else {
                "(unexpected page)"
            },
            t["state"].as_str().unwrap_or("?"),
            t["site"].as_str().unwrap_or("?"),
        );
        if page.status != 200 || t["state"] != "connected" {
            bail!("{tenant} did not connect: {} {}", page.status, t);
        }
    }
    let (verified, body) = hooks.first().await?;
    println!(
        "    the partner's webhook endpoint received (DD-Relay-Signature {}):\n      {body}",
        if verified { "verified" } else { "WRONG" }
    );
    if !verified {
        bail!("the webhook's signature did not verify");
    }

    let (tenant, _, _) = CUSTOMERS[0];
    let (status, tags) = relay
        .admin(
            reqwest::Method::PUT,
            &format!("/v1/tenants/{tenant}/tags"),
            Some(serde_json::json!({ "tags": DEMO_TAGS })),
        )
        .await?;
    if status != 200 {
        bail!("PUT /v1/tenants/{tenant}/tags answered {status}: {tags}");
    }
    println!(
        "    {tenant:<8} the customer's own tags {DEMO_TAGS:?} stored as {}; a test event went to each org on connect",
        tags["tags"]
    );

    step(
        4,
        "sending metrics, logs, events, service checks and a trace for each customer (Datadog's API and the Agent's trace API)",
    );
    let mut expected = Vec::new();
    for (i, (tenant, org, _)) in CUSTOMERS.iter().enumerate() {
        for (endpoint, body, items) in sample_payloads(tenant, i) {
            let (status, answer) = relay
                .send(tenant, endpoint, body.as_bytes(), Encoding::Gzip)
                .await?;
            if status != 202 {
                bail!("{tenant}: {} answered {status}: {answer}", endpoint.path());
            }
            expected.push((*tenant, *org, endpoint, items));
        }
        let status = send_trace(&relay, tenant).await?;
        if status != 200 {
            bail!("{tenant}: /v0.3/traces answered {status}");
        }
        expected.push((*tenant, *org, Endpoint::Traces, 2));
        println!(
            "    {tenant:<8} 202 Accepted x6 (series, distributions, logs, event, v2 event, service checks), 200 OK (a trace of 2 spans)"
        );
    }

    step(
        5,
        "waiting for delivery to each customer's own Datadog site",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending: Vec<_> = expected
            .iter()
            .filter(|(_, org, endpoint, items)| {
                dog.org(org)
                    .map(|o| dog.item_count(&o.id, *endpoint))
                    .unwrap_or(0)
                    < *items
            })
            .collect();
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("not delivered within 30 s: {pending:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "    {:<8} {:<10} {:>7} {:>5} {:>5} {:>6} {:>7} {:>6}   received at",
        "tenant", "site", "series", "dists", "logs", "events", "checks", "spans"
    );
    for (tenant, org, _) in CUSTOMERS {
        let o = dog.org(org).context("org")?;
        let n = |e| dog.item_count(&o.id, e);
        println!(
            "    {tenant:<8} {:<10} {:>7} {:>5} {:>5} {:>6} {:>7} {:>6}   api., http-intake.logs., event-management-intake., trace.agent.{d}",
            o.site.name,
            n(Endpoint::SeriesV2),
            n(Endpoint::Distribution),
            n(Endpoint::Logs),
            n(Endpoint::Events) + n(Endpoint::EventsV2),
            n(Endpoint::CheckRun),
            n(Endpoint::Traces),
            d = o.site.domain,
        );
    }
    show_tags(&dog)?;
    let violations = dog.violations();
    if !violations.is_empty() {
        bail!("fakedog recorded limit violations: {violations:?}");
    }
    println!(
        "    fakedog recorded no limit violations; every item reached its own customer's site with its own key."
    );

    step(
        6,
        "a customer's API key is revoked at Datadog: the relay detects the 403 and recovers on its own",
    );
    let globex = dog.org("Demo EU1").context("org")?;
    dog.revoke_key(&globex.id)?;
    let before = dog.keys_created(&globex.id);
    anyhow::ensure!(
        before == 1,
        "expected one key before the revocation, fakedog counted {before}"
    );
    let (tenant, _, _) = CUSTOMERS[1];
    let (status, _) = relay
        .send(
            tenant,
            Endpoint::Logs,
            br#"[{"message":"after the key was revoked","service":"demo"}]"#,
            Encoding::Gzip,
        )
        .await?;
    if status != 202 {
        bail!("ingest answered {status} after the key was revoked");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while dog.item_count(&globex.id, Endpoint::Logs) < 3 {
        if Instant::now() > deadline {
            bail!("the log sent after the key was revoked was not delivered");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "    {tenant}: 403 -> key validated (dead) -> new key created ({} in all) -> held log delivered",
        dog.keys_created(&globex.id)
    );

    if keep_running {
        play(&relay, &dog).await?;
    }
    step(
        if keep_running { 8 } else { 7 },
        "stopping the relay (SIGTERM would do the same: drain, keep the rest on disk, exit 0)",
    );
    relay.stop().await?;
    dog.shutdown().await;
    println!(
        "\ndemo complete in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Keeps the relay and fakedog up for a person to try: where to look, a
/// command per data kind (as tenant `acme`, on US1), then waits for Ctrl-C
/// or SIGTERM.
async fn play(relay: &crate::dev::sandbox::Relay, dog: &FakeDog) -> anyhow::Result<()> {
    step(
        7,
        "the relay and fakedog keep running for you to try (Ctrl-C stops both)",
    );
    println!(
        "    status page:  http://{}/   (admin token: {})",
        relay.api,
        crate::dev::sandbox::ADMIN_TOKEN
    );
    println!(
        "    fakedog page: http://{}/   (what each org received; its control API is under /fakedog/)",
        dog.control_addr()
    );
    println!("    send as tenant acme (its data goes to Demo US1):");
    for line in try_commands(relay.api) {
        println!("    {line}");
    }
    println!("ready");
    wait_for_stop().await
}

/// A curl command per data kind, ready to paste into a shell (each prints
/// the answer and its status).
fn try_commands(api: std::net::SocketAddr) -> Vec<String> {
    let now = "'$(date +%s)'";
    let post = |path: &str, body: &str| {
        format!(
            "curl -s -w ' %{{http_code}}\\n' -H 'DD-API-KEY: acme' -H 'Content-Type: application/json' http://{api}{path} -d '{body}'"
        )
    };
    vec![
        post(
            "/api/v2/series",
            &format!(
                r#"{{"series":[{{"metric":"try.requests","type":1,"points":[{{"timestamp":{now},"value":3}}]}}]}}"#
            ),
        ),
        post(
            "/api/v1/distribution_points",
            &format!(
                r#"{{"series":[{{"metric":"try.latency","points":[[{now},[0.1,0.2,0.9]]]}}]}}"#
            ),
        ),
        post(
            "/api/v2/logs",
            r#"[{"message":"hello from the demo","service":"try"}]"#,
        ),
        post(
            "/api/v1/events",
            r#"{"title":"Tried the relay","text":"it works"}"#,
        ),
        post(
            "/api/v2/events",
            r#"{"data":{"type":"event","attributes":{"title":"Flag flipped","category":"change","attributes":{"changed_resource":{"name":"try_flag","type":"feature_flag"}}}}}"#,
        ),
        post(
            "/api/v1/check_run",
            r#"[{"check":"try.ok","host_name":"laptop","status":0,"tags":[]}]"#,
        ),
        format!(
            "curl -s -w ' %{{http_code}}\\n' -X PUT -H 'DD-Relay-Tenant: acme' -H 'Content-Type: application/json' http://{api}/v0.3/traces -d '[[{{\"trace_id\":7,\"span_id\":7,\"name\":\"try.request\",\"resource\":\"/try\",\"service\":\"try\",\"start\":'$(date +%s%N)',\"duration\":1000000}}]]'"
        ),
    ]
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// The tags the demo's first customer attaches (normalised on the way in).
const DEMO_TAGS: [&str; 2] = ["Team:Payments", "cost-center:4242"];

/// Shows the first customer's tags and the integration's source on what
/// arrived, and that the other customers' data has neither tag.
fn show_tags(dog: &FakeDog) -> anyhow::Result<()> {
    let org = |i: usize| dog.org(CUSTOMERS[i].1).context("org");
    let first = org(0)?;
    let log = dog
        .received(&first.id, Endpoint::Logs)
        .into_iter()
        .next()
        .context("no log")?;
    let series = dog.received(&first.id, Endpoint::SeriesV2);
    let spans = dog.received(&first.id, Endpoint::Traces);
    println!(
        "    {:<8} log ddtags={} ddsource={}; series tags={}; span meta team={}",
        CUSTOMERS[0].0,
        log["ddtags"],
        log["ddsource"],
        series
            .first()
            .map(|s| s["tags"].clone())
            .unwrap_or_default(),
        spans
            .first()
            .map(|s| s["meta"]["team"].clone())
            .unwrap_or_default(),
    );
    if !log["ddtags"]
        .as_str()
        .unwrap_or("")
        .contains("team:payments")
    {
        bail!("{}'s tags did not arrive: {log}", CUSTOMERS[0].0);
    }
    let other = org(1)?;
    if dog
        .received(&other.id, Endpoint::Logs)
        .iter()
        .any(|l| l["ddtags"].as_str().unwrap_or("").contains("team:payments"))
    {
        bail!("{}'s tags reached another customer's org", CUSTOMERS[0].0);
    }
    let all_sourced = (0..CUSTOMERS.len()).all(|i| {
        org(i).is_ok_and(|o| {
            dog.received(&o.id, Endpoint::Logs)
                .iter()
                .all(|l| l["ddsource"] == "ddrelay-demo")
        })
    });
    if !all_sourced {
        bail!("a log arrived without the integration's source");
    }
    println!(
        "    {:<8} and {}: none of {}'s tags; every log ddsource=\"ddrelay-demo\"",
        CUSTOMERS[1].0, CUSTOMERS[2].0, CUSTOMERS[0].0
    );
    Ok(())
}

/// The partner's webhook endpoint for the tour, on loopback: checks each
/// delivery's `DD-Relay-Signature` and keeps what it received.
struct Hooks {
    url: String,
    got: Arc<Mutex<Vec<(bool, String)>>>,
}

impl Hooks {
    async fn start() -> anyhow::Result<Hooks> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks/ddrelay", listener.local_addr()?);
        let got: Arc<Mutex<Vec<(bool, String)>>> = Arc::default();
        let sink = got.clone();
        let app = axum::Router::new().route(
            "/hooks/ddrelay",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: String| async move {
                    let header = headers.get(sign::HEADER).and_then(|v| v.to_str().ok());
                    let verified = header.is_some_and(|h| verify(h, &body));
                    sink.lock().push((verified, body));
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Hooks { url, got })
    }

    /// The first delivery, waiting up to 10 s for it.
    async fn first(&self) -> anyhow::Result<(bool, String)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(first) = self.got.lock().first() {
                return Ok(first.clone());
            }
            if Instant::now() > deadline {
                bail!("no webhook arrived within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether `header` (`t=…,v1=…`) signs `body` with the demo's secret.
fn verify(header: &str, body: &str) -> bool {
    let t = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse::<i64>().ok());
    t.is_some_and(|t| sign::header_value(&Secret::new(WEBHOOK_SECRET), t, body) == header)
}

/// A trace of two spans, as Datadog's "Send traces to the Agent by API"
/// guide sends it; returns the status.
async fn send_trace(relay: &crate::dev::sandbox::Relay, tenant: &str) -> anyhow::Result<u16> {
    let start = crate::clock::now_ms() * 1_000_000;
    let span = |id: u64, parent: u64, name: &str| {
        serde_json::json!({"trace_id": 4242, "span_id": id, "parent_id": parent,
            "service": "demo-shop", "name": name, "resource": "GET /cart",
            "start": start, "duration": 1_500_000})
    };
    let body = serde_json::json!([[span(1, 0, "web.request"), span(2, 1, "db.query")]]);
    let status = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .put(relay.url("/v0.3/traces"))
        .header("DD-Relay-Tenant", tenant)
        .json(&body)
        .send()
        .await?
        .status();
    Ok(status.as_u16())
}

/// One request of each kind for a tenant, with how many items each holds.
fn sample_payloads(tenant: &str, i: usize) -> Vec<(Endpoint, String, u64)> {
    let ts = now();
    let series = serde_json::json!({ "series": [
        { "metric": "demo.requests", "type": 1, "points": [{ "timestamp": ts, "value": 10 + i }], "tags": [format!("customer:{tenant}"), "env:demo"] },
        { "metric": "demo.latency", "type": 3, "points": [{ "timestamp": ts, "value": 0.25 }], "tags": [format!("customer:{tenant}")], "unit": "second" }
    ]});
    let logs = serde_json::json!([
        { "message": format!("{tenant} signed in"), "service": "demo", "ddsource": "ddrelay-demo", "ddtags": format!("customer:{tenant}") },
        { "message": format!("{tenant} exported a report"), "service": "demo", "status": "info" }
    ]);
    let event = serde_json::json!({ "title": format!("Deploy for {tenant}"), "text": "version 42 is live", "tags": [format!("customer:{tenant}")], "alert_type": "info" });
    let checks = serde_json::json!([{ "check": "demo.can_connect", "host_name": format!("{tenant}-host"), "status": 0, "tags": [format!("customer:{tenant}")], "timestamp": ts }]);
    let dists = serde_json::json!({ "series": [
        { "metric": "demo.request.duration", "points": [[ts, [0.12, 0.25, 0.8]]], "type": "distribution", "tags": [format!("customer:{tenant}")] }
    ]});
    let change = serde_json::json!({ "data": { "type": "event", "attributes": {
        "title": format!("Feature flag flipped for {tenant}"), "category": "change", "tags": [format!("customer:{tenant}")],
        "attributes": { "changed_resource": { "name": "fast_checkout", "type": "feature_flag" } }
    }}});
    vec![
        (Endpoint::SeriesV2, series.to_string(), 2),
        (Endpoint::Distribution, dists.to_string(), 1),
        (Endpoint::EventsV2, change.to_string(), 1),
        (Endpoint::Logs, logs.to_string(), 2),
        (Endpoint::Events, event.to_string(), 1),
        (Endpoint::CheckRun, checks.to_string(), 1),
    ]
}
