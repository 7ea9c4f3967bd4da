//! Hostile input, written against what README.md promises and SECURITY.md
//! rather than the code:
//! - the public listener serves the OAuth callback and nothing else, and
//!   survives oversized and malformed requests;
//! - every admin route, and the status page, refuses a missing or wrong
//!   token (and a token smuggled in a query string or a status-page cookie);
//! - a barrage of malformed, oversized and hostile ingest and admin requests
//!   is answered cleanly (4xx, `{"errors":[…]}` naming the problem) while
//!   the relay stays healthy and keeps delivering another tenant's data,
//!   exactly;
//! - a client that sends its headers slowly is cut off after
//!   `server.public_header_timeout` while normal callbacks keep working;
//! - a tampered database cannot move a key to another tenant nor send data
//!   to a host that is not a Datadog site.
//!
//! Hostile proxy paths (`..`, `%2e%2e`, `%2F`, `\`, `//`, `;`, other
//! tenants' prefixes) are covered in `tests/proxy.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ddrelay::clock::now;
use ddrelay::codec;
use ddrelay::dev::fakedog::FakeDog;
use ddrelay::dev::sandbox::{ADMIN_TOKEN, Relay};
use ddrelay::site::{Encoding, Endpoint};
use reqwest::Method;
use serde_json::json;
use support::{dog, expect_status, fast, relay, tenant_json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Sends `request` as raw bytes and reads until the server closes (at most
/// 10 s). Returns the status (0 when the server answered nothing) and the
/// whole answer. Writing and reading run side by side, so an answer sent
/// before the request is fully written (431) is still read.
async fn raw(addr: SocketAddr, request: Vec<u8>) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&request).await;
        w
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut buf)).await;
    drop(writer.await);
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: relay.test\r\nConnection: close\r\n\r\n").into_bytes()
}

async fn healthy(relay: &Relay) {
    let r = http().get(relay.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "healthz");
}

/// The callback answers a (refused) callback: the public listener works.
async fn callback_works(relay: &Relay) {
    let r = http()
        .get(format!(
            "http://{}/oauth/callback?code=c&state=unknown&domain=datadoghq.com",
            relay.public
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("already used"));
}

#[tokio::test]
async fn the_public_listener_serves_nothing_but_the_callback() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    let client = http();
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::HEAD,
    ];
    for path in [
        "/",
        "/?token=x",
        "/v1/tenants",
        "/v1/tenants/acme",
        "/v1/tenants/acme/connect",
        "/v1/tenants/acme/datadog/api/v1/monitor",
        "/metrics",
        "/healthz",
        "/readyz",
        "/api/v2/series",
        "/api/v2/logs",
        "/api/v1/check_run",
        "/oauth/callback/",
        "/oauth/callback/x",
        "/oauth",
        "/OAUTH/CALLBACK",
        "/oauth//callback",
        "/favicon.ico",
        "/.env",
    ] {
        for m in &methods {
            let r = client
                .request(m.clone(), format!("http://{}{path}", relay.public))
                .bearer_auth(ADMIN_TOKEN)
                .header("DD-API-KEY", "acme")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{m} {path} on the public listener");
        }
    }
    // Dot segments and encoded slashes, as raw request targets (a client
    // library would normalize them away).
    for target in [
        "/oauth/callback/../../v1/tenants",
        "/oauth/callback/..%2f..%2fv1%2ftenants",
        "/%2e%2e/v1/tenants",
        "//v1/tenants",
        "/v1/tenants%00",
        "http://evil.example/v1/tenants",
    ] {
        let (status, text) = raw(relay.public, get(target)).await;
        assert!(status == 404 || status == 400, "{target}: {status} {text}");
        assert!(!text.contains("tenants\":"), "{target}: {text}");
    }
    // The callback itself: GET (and HEAD) only.
    for m in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        let r = client
            .request(m.clone(), format!("http://{}/oauth/callback", relay.public))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{m} /oauth/callback");
    }
    // Oversized and malformed requests: 4xx, never a crash.
    let long_param = format!(
        "/oauth/callback?code=c&state={}&domain=datadoghq.com",
        "s".repeat(3000)
    );
    let r = client
        .get(format!("http://{}{long_param}", relay.public))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("too long"));
    for (what, request) in [
        (
            "40 KB query",
            get(&format!("/oauth/callback?state={}", "q".repeat(40_000))),
        ),
        (
            "300 KB query",
            get(&format!("/oauth/callback?x={}", "q".repeat(300_000))),
        ),
        ("200 headers", {
            let mut r = b"GET /oauth/callback?state=x HTTP/1.1\r\nHost: relay.test\r\n".to_vec();
            for i in 0..200 {
                r.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
            }
            r.extend_from_slice(b"\r\n");
            r
        }),
        ("64 KB cookie", {
            format!(
                "GET /oauth/callback?state=x HTTP/1.1\r\nHost: relay.test\r\nCookie: a={}\r\n\r\n",
                "c".repeat(64 * 1024)
            )
            .into_bytes()
        }),
        (
            "garbage request line",
            b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec(),
        ),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ),
        (
            "bare CR in a header",
            b"GET /oauth/callback?state=x HTTP/1.1\r\nHost: relay.test\r\nX-A: a\rb\r\n\r\n"
                .to_vec(),
        ),
        (
            "duplicate state",
            get("/oauth/callback?state=a&state=b&domain=datadoghq.com"),
        ),
        (
            "bad percent-encoding",
            get("/oauth/callback?state=%ff%fe%00&domain=%E0%80%80"),
        ),
    ] {
        let (status, text) = raw(relay.public, request).await;
        // Bytes that are not HTTP/1.1 at all may just get the connection
        // closed (status 0).
        let closing_ok = what == "HTTP/2 preface" || what == "garbage request line";
        assert!(
            (400..500).contains(&status) || (closing_ok && status == 0),
            "{what}: {status} {}",
            text.chars().take(300).collect::<String>()
        );
    }
    callback_works(&relay).await;
    healthy(&relay).await;
}

#[tokio::test]
async fn the_admin_api_and_status_page_refuse_a_missing_or_wrong_token() {
    let dog = dog().await;
    let (relay, _dir) = relay(&dog, "").await;
    let client = http();
    // A real status-page session cookie: it opens `/`, never `/v1`.
    let r = client
        .get(relay.url(&format!("/?token={ADMIN_TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let routes = [
        (Method::GET, "/v1/tenants"),
        (Method::GET, "/v1/tenants/acme"),
        (Method::DELETE, "/v1/tenants/acme"),
        (Method::POST, "/v1/tenants/acme/connect"),
        (Method::POST, "/v1/tenants/acme/verify"),
        (Method::GET, "/v1/tenants/acme/dead_letters"),
        (Method::GET, "/v1/tenants/acme/dead_letters/1"),
        (Method::GET, "/v1/tenants/acme/datadog/api/v1/monitor"),
        (Method::POST, "/v1/tenants/acme/datadog/api/v2/logs"),
    ];
    let wrong: Vec<(&str, Option<String>, Option<String>)> = vec![
        ("no token", None, None),
        ("empty bearer", Some("Bearer ".into()), None),
        ("wrong", Some("Bearer wrong-token-wrong-token".into()), None),
        ("longer", Some(format!("Bearer {ADMIN_TOKEN}x")), None),
        (
            "shorter",
            Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
            None,
        ),
        ("no scheme", Some(ADMIN_TOKEN.to_string()), None),
        ("basic", Some(format!("Basic {ADMIN_TOKEN}")), None),
        (
            "upper case",
            Some(format!("Bearer {}", ADMIN_TOKEN.to_uppercase())),
            None,
        ),
        ("status cookie", None, Some(cookie.clone())),
    ];
    for (method, path) in &routes {
        for (what, auth, cookie) in &wrong {
            let mut req = client.request(method.clone(), relay.url(path));
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            if let Some(c) = cookie {
                req = req.header("Cookie", c);
            }
            let r = req.body("{}").send().await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path}: {what}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert!(
                v["errors"][0].as_str().unwrap().contains("token"),
                "{method} {path}: {what}: {v}"
            );
        }
        // A token in the query string is not a bearer token.
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = client
            .request(
                method.clone(),
                relay.url(&format!("{path}{sep}token={ADMIN_TOKEN}")),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path}?token=");
    }
    // The status page and the tenant views it links to: no token, a wrong
    // one, a wrong cookie.
    let status_routes = [
        "/",
        "/status/v1/tenants/acme",
        "/status/v1/tenants/acme/dead_letters",
    ];
    for (auth, cookie, query, page) in [
        (None, None, ""),
        (Some("Bearer wrong-token-wrong-token"), None, ""),
        (None, Some("ddrelay_status=forged"), ""),
        (None, None, "?token=wrong-token-wrong-token"),
        (None, Some(&format!("ddrelay_status={ADMIN_TOKEN}")[..]), ""),
    ]
    .into_iter()
    .flat_map(|(a, c, q)| status_routes.map(|page| (a, c, q, page)))
    {
        let mut req = client.get(relay.url(&format!("{page}{query}")));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{page} {auth:?} {cookie:?} {query}");
        let body = r.text().await.unwrap();
        assert!(!body.contains(ADMIN_TOKEN));
    }
    // The right token works, and the cookie opens the status page.
    expect_status(
        client
            .get(relay.url("/v1/tenants"))
            .bearer_auth(ADMIN_TOKEN),
        200,
    )
    .await;
    expect_status(client.get(relay.url("/")).header("Cookie", &cookie), 200).await;
}

/// What a hostile request must get: `status`, and an errors body one of
/// whose entries contains `needle`.
async fn refused(what: &str, r: reqwest::Response, status: u16, needle: &str) {
    let got = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(
        got,
        status,
        "{what}: {}",
        text.chars().take(300).collect::<String>()
    );
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    let errors = v["errors"].as_array().expect("errors array");
    assert!(
        !errors.is_empty()
            && errors.iter().any(|e| {
                e.as_str()
                    .unwrap()
                    .to_lowercase()
                    .contains(&needle.to_lowercase())
            }),
        "{what}: `{needle}` not in {v}"
    );
}

const GOOD_REQUESTS: usize = 30;
const GOOD_LOGS: usize = 5;
const GOOD_SERIES: usize = 2;

/// The well-behaved tenant: `GOOD_REQUESTS` rounds of logs and series,
/// every one accepted.
async fn good_sender(api: SocketAddr) {
    let client = http();
    for i in 0..GOOD_REQUESTS {
        let logs: Vec<_> = (0..GOOD_LOGS)
            .map(|j| json!({ "message": format!("good {i}.{j}"), "ddtags": "t:good" }))
            .collect();
        let series = json!({ "series": (0..GOOD_SERIES).map(|j| json!({
            "metric": "good.metric", "type": 3,
            "points": [{ "timestamp": now(), "value": j }],
            "tags": [format!("i:{i}"), "t:good"],
        })).collect::<Vec<_>>() });
        for (path, body, enc) in [
            (
                Endpoint::Logs.path(),
                json!(logs).to_string(),
                Encoding::Gzip,
            ),
            (
                Endpoint::SeriesV2.path(),
                series.to_string(),
                Encoding::Zstd,
            ),
        ] {
            let r = client
                .post(format!("http://{api}{path}"))
                .header("DD-API-KEY", "good")
                .header(
                    "Content-Encoding",
                    if enc == Encoding::Gzip {
                        "gzip"
                    } else {
                        "zstd"
                    },
                )
                .body(codec::compress(enc, 1, body.as_bytes()))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                202,
                "good tenant refused: {}",
                r.text().await.unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

fn post(client: &reqwest::Client, relay: &Relay, endpoint: Endpoint) -> reqwest::RequestBuilder {
    client
        .post(relay.url(endpoint.path()))
        .header("DD-API-KEY", "bad")
}

#[tokio::test]
async fn hostile_requests_are_refused_cleanly_while_another_tenant_keeps_delivering() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    for (t, site, org) in [
        ("good", "datadoghq.eu", "Demo EU1"),
        ("bad", "datadoghq.com", "Demo US1"),
    ] {
        support::connect(&relay, &dog, t, site, org).await;
    }
    let sender = tokio::spawn(good_sender(relay.api));
    let c = http();
    let logs_body = json!([{ "message": "m" }]).to_string();
    let ts = now();

    // Compression.
    let gz = codec::compress(
        Encoding::Gzip,
        6,
        json!((0..200).map(|i| json!({"message": i})).collect::<Vec<_>>())
            .to_string()
            .as_bytes(),
    );
    let r = post(&c, &relay, Endpoint::Logs)
        .header("Content-Encoding", "gzip")
        .body(gz[..gz.len() / 2].to_vec())
        .send()
        .await
        .unwrap();
    refused("truncated gzip", r, 400, "gzip").await;
    let zstd_logs = codec::compress(Encoding::Zstd, 1, logs_body.as_bytes());
    let r = post(&c, &relay, Endpoint::Logs)
        .header("Content-Encoding", "gzip")
        .body(zstd_logs.clone())
        .send()
        .await
        .unwrap();
    refused("zstd body labelled gzip", r, 400, "gzip").await;
    let r = post(&c, &relay, Endpoint::Logs)
        .header("Content-Encoding", "zstd")
        .body(zstd_logs[..zstd_logs.len() - 3].to_vec())
        .send()
        .await
        .unwrap();
    refused("truncated zstd", r, 400, "zstd").await;
    let zeros = vec![b' '; 80 << 20];
    for (enc, token) in [
        (Encoding::Zstd, "zstd"),
        (Encoding::Gzip, "gzip"),
        (Encoding::Deflate, "deflate"),
    ] {
        let bomb = codec::compress(enc, 3, &zeros);
        assert!(bomb.len() < 1 << 20, "{token} bomb is small on the wire");
        let r = post(&c, &relay, Endpoint::Logs)
            .header("Content-Encoding", token)
            .body(bomb)
            .send()
            .await
            .unwrap();
        refused(
            &format!("{token} bomb"),
            r,
            413,
            "decompresses to more than",
        )
        .await;
    }
    drop(zeros);
    for enc in ["br", "gzip, br", "compress", "zstd;q=1"] {
        let r = post(&c, &relay, Endpoint::Logs)
            .header("Content-Encoding", enc)
            .body(logs_body.clone())
            .send()
            .await
            .unwrap();
        refused(
            &format!("Content-Encoding {enc}"),
            r,
            400,
            "Content-Encoding",
        )
        .await;
    }
    let r = post(&c, &relay, Endpoint::Logs)
        .body(vec![b'['; 17 << 20])
        .send()
        .await
        .unwrap();
    refused("17 MiB on the wire", r, 413, "server.max_body").await;

    // JSON.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = post(&c, &relay, Endpoint::Logs)
        .body(deep)
        .send()
        .await
        .unwrap();
    refused("100,000 nested arrays", r, 400, "deeper than 128 levels").await;
    let deep_item = format!(
        r#"[{{"message":{}1{}}}]"#,
        "{\"a\":".repeat(5_000),
        "}".repeat(5_000)
    );
    let r = post(&c, &relay, Endpoint::Logs)
        .body(deep_item)
        .send()
        .await
        .unwrap();
    refused(
        "5,000 nested objects in a log",
        r,
        400,
        "deeper than 128 levels",
    )
    .await;
    let r = post(&c, &relay, Endpoint::Logs)
        .body("[".repeat(1 << 20))
        .send()
        .await
        .unwrap();
    refused("a megabyte of [", r, 400, "deeper than 128 levels").await;
    for (what, endpoint, body, needle) in [
        (
            "value 1e999",
            Endpoint::SeriesV2,
            format!(r#"{{"series":[{{"metric":"m","points":[{{"timestamp":{ts},"value":1e999}}]}}]}}"#),
            "not valid JSON",
        ),
        (
            "a 100,000-digit value",
            Endpoint::SeriesV2,
            format!(
                r#"{{"series":[{{"metric":"m","points":[{{"timestamp":{ts},"value":{}}}]}}]}}"#,
                "9".repeat(100_000)
            ),
            "not valid JSON",
        ),
        (
            "timestamp 2^70",
            Endpoint::SeriesV2,
            r#"{"series":[{"metric":"m","points":[{"timestamp":1180591620717411303424,"value":1}]}]}"#.to_string(),
            "timestamp",
        ),
        (
            "status 1e300",
            Endpoint::CheckRun,
            r#"[{"check":"c","host_name":"h","status":1e300}]"#.to_string(),
            "status",
        ),
        ("empty body", Endpoint::Logs, String::new(), "JSON"),
        ("null", Endpoint::Events, "null".to_string(), "event"),
        ("a string", Endpoint::Logs, "\"log\"".to_string(), "array"),
        (
            "trailing garbage",
            Endpoint::Events,
            r#"{"title":"t","text":"x"} {"title":"u"}"#.to_string(),
            "trailing",
        ),
        (
            "series twice",
            Endpoint::SeriesV2,
            r#"{"series":[],"series":[]}"#.to_string(),
            "twice",
        ),
        (
            "a NUL in a string",
            Endpoint::Logs,
            "[{\"message\":\"a\u{0}b\"}]".to_string(),
            "not valid JSON",
        ),
        (
            "a raw newline in a string",
            Endpoint::Logs,
            "[{\"message\":\"a\nb\"}]".to_string(),
            "not valid JSON",
        ),
    ] {
        let r = post(&c, &relay, endpoint).body(body).send().await.unwrap();
        refused(what, r, 400, needle).await;
    }
    let r = post(&c, &relay, Endpoint::Logs)
        .body(b"[{\"message\":\"\xff\xfe\"}]".to_vec())
        .send()
        .await
        .unwrap();
    refused("invalid UTF-8", r, 400, "UTF-8").await;
    // The most negative timestamp is a check long past Datadog's window:
    // accepted and dropped as Datadog drops it, counted, never queued.
    let r = post(&c, &relay, Endpoint::CheckRun)
        .body(r#"[{"check":"c","host_name":"h","status":0,"timestamp":-9223372036854775808}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "negative timestamp");
    assert_eq!(
        tenant_json(&relay, "bad").await["delivery"]["ingest_dropped"]["check_run"]["stale"],
        1
    );
    let many: Vec<_> = (0..10_000).map(|i| json!({ "message": i })).collect();
    let r = post(&c, &relay, Endpoint::Logs)
        .body(json!(many).to_string())
        .send()
        .await
        .unwrap();
    refused("10,000 logs", r, 413, "at most 1000").await;
    let bad_series = json!({ "series": (0..10_000).map(|_| json!({
        "metric": "1-starts-with-a-digit", "points": [{ "timestamp": ts, "value": 1 }]
    })).collect::<Vec<_>>() });
    let r = post(&c, &relay, Endpoint::SeriesV2)
        .body(bad_series.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 101, "100 errors listed, then a count");
    assert_eq!(errors[100], "+9900 more");
    assert!(
        errors[0].as_str().unwrap().contains("series[0].metric"),
        "{}",
        errors[0]
    );

    // Content types: the body is what counts; anything not JSON is a 400.
    for (ct, body) in [
        (
            "application/x-www-form-urlencoded",
            "message=hello&service=x",
        ),
        ("text/plain", "hello world"),
        (
            "multipart/form-data; boundary=x",
            "--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--x--\r\n",
        ),
        ("application/xml", "<logs><log>hi</log></logs>"),
    ] {
        let r = post(&c, &relay, Endpoint::Logs)
            .header("Content-Type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        refused(ct, r, 400, "JSON").await;
    }

    // Tenant headers.
    let send_as = |name: &'static str, value: reqwest::header::HeaderValue| {
        c.post(relay.url(Endpoint::Logs.path()))
            .header(name, value)
            .body(logs_body.clone())
            .send()
    };
    for (what, value, needle) in [
        ("non-ASCII tenant", &b"t\xc3\xa9nant"[..], "ASCII"),
        ("Latin-1 tenant", &b"caf\xe9"[..], "ASCII"),
        (
            "path traversal",
            &b"../../etc/passwd"[..],
            "invalid tenant id",
        ),
        ("hidden name", &b".hidden"[..], "invalid tenant id"),
        ("space inside", &b"a b"[..], "invalid tenant id"),
        ("empty", &b""[..], "invalid tenant id"),
        ("very long", &[b'a'; 1000][..], "invalid tenant id"),
        ("tab inside", &b"a\tb"[..], "invalid tenant id"),
    ] {
        let v = reqwest::header::HeaderValue::from_bytes(value).unwrap();
        refused(
            what,
            send_as("DD-Relay-Tenant", v).await.unwrap(),
            400,
            needle,
        )
        .await;
    }
    let r = c
        .post(relay.url(Endpoint::Logs.path()))
        .header("DD-Relay-Tenant", "bad")
        .header("DD-Relay-Tenant", "good")
        .body(logs_body.clone())
        .send()
        .await
        .unwrap();
    refused("two tenant headers", r, 400, "more than one").await;
    let r = c
        .post(relay.url(Endpoint::Logs.path()))
        .header("DD-API-KEY", "nobody")
        .body(logs_body.clone())
        .send()
        .await
        .unwrap();
    refused("unknown tenant", r, 404, "nobody").await;
    relay.authorize_url("waiting", None).await.unwrap();
    let r = c
        .post(relay.url(Endpoint::Logs.path()))
        .header("DD-API-KEY", "waiting")
        .body(logs_body.clone())
        .send()
        .await
        .unwrap();
    refused("pending tenant", r, 409, "waiting").await;
    // CR, LF and NUL inside header values never reach the handler: hyper
    // refuses the request (400, no body) before routing.
    for (what, header) in [
        ("bare CR", &b"DD-Relay-Tenant: bad\rX-Injected: 1\r\n"[..]),
        (
            "bare LF",
            &b"DD-Relay-Tenant: bad\nDD-Relay-Tenant: good\r\n"[..],
        ),
        ("NUL", &b"DD-Relay-Tenant: bad\x00good\r\n"[..]),
        ("obs-fold", &b"DD-Relay-Tenant: bad\r\n good\r\n"[..]),
    ] {
        let mut req = format!(
            "POST /api/v2/logs HTTP/1.1\r\nHost: relay\r\nConnection: close\r\nContent-Length: {}\r\n",
            logs_body.len()
        )
        .into_bytes();
        req.extend_from_slice(header);
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(logs_body.as_bytes());
        let (status, text) = raw(relay.api, req).await;
        assert!(
            (400..500).contains(&status),
            "{what}: {status} {}",
            text.chars().take(200).collect::<String>()
        );
    }

    // Admin API with the right token, hostile bodies and paths.
    let admin =
        |method: Method, path: &str| c.request(method, relay.url(path)).bearer_auth(ADMIN_TOKEN);
    let connect = "/v1/tenants/newcomer/connect";
    for (what, ct, body, status, needle) in [
        (
            "bad JSON",
            "application/json",
            "{\"site\":".to_string(),
            400,
            "invalid JSON",
        ),
        (
            "unknown field",
            "application/json",
            r#"{"sight":"datadoghq.eu"}"#.to_string(),
            400,
            "unknown field",
        ),
        (
            "wrong type",
            "application/json",
            r#"{"site":["datadoghq.eu"]}"#.to_string(),
            400,
            "invalid JSON",
        ),
        (
            "deep JSON",
            "application/json",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            400,
            "invalid JSON",
        ),
        (
            "evil site",
            "application/json",
            r#"{"site":"https://datadoghq.com.evil.example"}"#.to_string(),
            400,
            "not a Datadog site",
        ),
        (
            "javascript site",
            "application/json",
            r#"{"site":"javascript:alert(1)"}"#.to_string(),
            400,
            "not a valid site URL",
        ),
        (
            "site with a path",
            "application/json",
            r#"{"site":"https://app.datadoghq.eu/@evil.example"}"#.to_string(),
            400,
            "host only",
        ),
        (
            "huge body",
            "application/json",
            format!(r#"{{"site":"{}"}}"#, "a".repeat(2 << 20)),
            413,
            "larger than",
        ),
        (
            "text body",
            "text/plain",
            "site=datadoghq.eu".to_string(),
            415,
            "JSON",
        ),
    ] {
        let r = admin(Method::POST, connect)
            .header("Content-Type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        refused(what, r, status, needle).await;
    }
    for (path, status, needle) in [
        (
            "/v1/tenants/..%2F..%2Fetc/connect",
            400,
            "invalid tenant id",
        ),
        (
            "/v1/tenants/%E2%80%AEevil/connect",
            400,
            "invalid tenant id",
        ),
        ("/v1/tenants/%FF%FE/connect", 400, "invalid path"),
        (
            "/v1/tenants/bad/dead_letters/not-a-number",
            400,
            "invalid path",
        ),
        (
            "/v1/tenants/bad/dead_letters/99999999999999999999999",
            400,
            "invalid path",
        ),
        ("/v1/tenants/nobody", 404, "nobody"),
    ] {
        let method = if path.ends_with("connect") {
            Method::POST
        } else {
            Method::GET
        };
        let r = admin(method, path).send().await.unwrap();
        refused(path, r, status, needle).await;
    }
    healthy(&relay).await;
    let r = http().get(relay.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // The good tenant got everything, exactly; the bad one nothing.
    sender.await.unwrap();
    let eu = dog.org("Demo EU1").unwrap().id;
    let us = dog.org("Demo US1").unwrap().id;
    let (logs, series) = (
        (GOOD_REQUESTS * GOOD_LOGS) as u64,
        (GOOD_REQUESTS * GOOD_SERIES) as u64,
    );
    support::eventually("the good tenant's data", || {
        dog.item_count(&eu, Endpoint::Logs) >= logs
            && dog.item_count(&eu, Endpoint::SeriesV2) >= series
    })
    .await;
    support::eventually("an empty queue", || relay.shared().queue.stats().items == 0).await;
    assert_eq!(dog.item_count(&eu, Endpoint::Logs), logs);
    assert_eq!(dog.item_count(&eu, Endpoint::SeriesV2), series);
    for item in dog.received(&eu, Endpoint::Logs) {
        assert_eq!(item["ddtags"], "t:good", "{item}");
    }
    for endpoint in Endpoint::ALL {
        assert_eq!(dog.item_count(&us, endpoint), 0, "bad tenant's {endpoint}");
        assert_eq!(
            dog.item_count(&eu, endpoint) > 0,
            matches!(endpoint, Endpoint::Logs | Endpoint::SeriesV2)
        );
    }
    assert_eq!(tenant_json(&relay, "bad").await["queued_items"], 0);
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
    healthy(&relay).await;
    callback_works(&relay).await;
}

/// Holds a connection to `addr` sending one header byte every 100 ms, until
/// the server closes it; returns how long that took (at most 15 s).
async fn slowloris(addr: SocketAddr) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf).await;
        buf
    });
    let _ = w
        .write_all(b"GET /oauth/callback?state=slow HTTP/1.1\r\nHost: relay.test\r\n")
        .await;
    let header = b"X-Slow: abcdefghijklmnopqrstuvwxyz\r\n";
    let mut i = 0;
    while !reader.is_finished() && start.elapsed() < Duration::from_secs(15) {
        if w.write_all(&header[i % header.len()..][..1]).await.is_err() {
            break;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the server closed the connection")
        .unwrap();
    (start.elapsed(), answer)
}

#[tokio::test]
async fn a_slow_client_is_cut_off_while_callbacks_keep_working() {
    let dog = dog().await;
    let (relay, _dir) = support::Setup::default()
        .server("public_header_timeout", "1s")
        .start(&dog)
        .await;
    assert_eq!(
        relay.shared().config().server.public_header_timeout,
        Duration::from_secs(1)
    );
    // Twenty slow clients at once…
    let slow: Vec<_> = (0..20)
        .map(|_| tokio::spawn(slowloris(relay.public)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // …while a customer connects through the whole OAuth flow.
    let page = relay
        .connect(&dog, "patient", Some("datadoghq.eu"), "Demo EU1")
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    for s in slow {
        let (took, answer) = s.await.unwrap();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "a slow client was cut off after {took:?}"
        );
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "a slow client got {answer}"
        );
    }
    // An idle keep-alive connection is closed by the same timer.
    let stream = TcpStream::connect(relay.public).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    w.write_all(b"GET /oauth/callback HTTP/1.1\r\nHost: relay.test\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut buf))
        .await
        .expect("an idle connection is closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 400"));
    assert!(start.elapsed() < Duration::from_secs(4));
    callback_works(&relay).await;
    healthy(&relay).await;
    assert_eq!(tenant_json(&relay, "patient").await["state"], "connected");
}

async fn sqlite(relay_dir: &std::path::Path) -> sqlx::SqliteConnection {
    <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        relay_dir.join("data").join("ddrelay.db").display()
    ))
    .await
    .unwrap()
}

async fn send_logs(relay: &Relay, tenant: &str) {
    support::accepted(
        relay,
        tenant,
        Endpoint::Logs,
        json!([{ "message": format!("for {tenant}") }]).to_string(),
    )
    .await;
}

async fn last_error(relay: &Relay, tenant: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = tenant_json(relay, tenant).await;
        if let Some(e) = t["delivery"]["last_error"].as_str() {
            return e.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no delivery error for {tenant}: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_tampered_database_moves_no_key_and_reaches_no_foreign_host() {
    let dog: FakeDog = dog().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = fast().start_in(&dog, dir.path()).await;
    for (t, site, org) in [
        ("alpha", "datadoghq.eu", "Demo EU1"),
        ("beta", "us5.datadoghq.com", "Demo US5"),
    ] {
        support::connect(&relay, &dog, t, site, org).await;
    }
    relay.stop().await.unwrap();
    // Someone with write access to the database copies alpha's sealed API
    // key onto beta's row and points alpha at a host of their own.
    let mut db = sqlite(dir.path()).await;
    sqlx::query("UPDATE tenants SET api_key = (SELECT api_key FROM tenants WHERE id = 'alpha') WHERE id = 'beta'")
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE tenants SET domain = 'evil.example' WHERE id = 'alpha'")
        .execute(&mut db)
        .await
        .unwrap();
    drop(db);
    let relay = fast().start_in(&dog, dir.path()).await;
    send_logs(&relay, "alpha").await;
    send_logs(&relay, "beta").await;
    let beta = last_error(&relay, "beta").await;
    assert!(beta.contains("failed authentication"), "{beta}");
    let alpha = last_error(&relay, "alpha").await;
    assert!(alpha.contains("no stored site"), "{alpha}");
    // Both held, nothing sent anywhere, no key shown at a wrong host.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for org in ["Demo EU1", "Demo US5"] {
        let id = dog.org(org).unwrap().id;
        assert_eq!(dog.item_count(&id, Endpoint::Logs), 0, "{org}");
    }
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
    assert!(
        dog.hosts_seen().iter().all(|h| !h.contains("evil")),
        "{:?}",
        dog.hosts_seen()
    );
    assert_eq!(tenant_json(&relay, "alpha").await["queued_items"], 1);
    assert_eq!(tenant_json(&relay, "beta").await["queued_items"], 1);
    healthy(&relay).await;
}
