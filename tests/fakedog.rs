//! fakedog, driven the way the relay and a browser drive Datadog: real HTTPS
//! clients (reqwest + rustls) trusting only fakedog's CA, real Datadog
//! hostnames pinned to fakedog's port with `.resolve(host, addr)`.
//!
//! Expiry is tested by moving fakedog's own clock (`FakeDog::advance`), never
//! by sleeping; nothing here touches the real Datadog or the environment.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;

use ddrelay::dev::fakedog::{ClientSpec, FakeDog, Options, Org, OrgSpec, challenge_of};
use ddrelay::site::{SITES, Site};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[path = "fakedog/control.rs"]
mod control;
#[path = "fakedog/faults.rs"]
mod faults;
#[path = "fakedog/intake.rs"]
mod intake;
#[path = "fakedog/keys.rs"]
mod keys;
#[path = "fakedog/oauth.rs"]
mod oauth;
#[path = "fakedog/relay_client.rs"]
mod relay_client;
#[path = "fakedog/tls.rs"]
mod tls;

pub const CLIENT: &str = "partner-app";
pub const SECRET: &str = "partner-secret";
pub const REDIRECT: &str = "https://relay.partner.example/oauth/callback";
/// A valid PKCE verifier (RFC 7636: 43..128 unreserved characters).
pub const VERIFIER: &str = "verifier-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEF";
pub const STATE: &str = "st4te-value";

pub fn site(domain: &str) -> &'static Site {
    Site::by_domain(domain).unwrap()
}

pub fn api(org: &Org) -> String {
    format!("api.{}", org.site.domain)
}

pub fn logs_host(org: &Org) -> String {
    format!("http-intake.logs.{}", org.site.domain)
}

/// A real HTTPS client: trusts only fakedog's CA, pins every Datadog
/// hostname (and `extra` ones) to fakedog, follows no redirects.
pub fn https_client(fd: &FakeDog, extra: &[&str]) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(fd.ca_pem().as_bytes()).unwrap();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    for s in SITES.iter() {
        for h in s.all_hosts() {
            b = b.resolve(&h, fd.tls_addr());
        }
    }
    for h in extra {
        b = b.resolve(h, fd.tls_addr());
    }
    b.build().unwrap()
}

/// The access token of a token response.
pub fn access_token(t: &Value) -> &str {
    t["access_token"].as_str().unwrap()
}

/// The refresh token of a token response.
pub fn refresh_token(t: &Value) -> &str {
    t["refresh_token"].as_str().unwrap()
}

pub fn authorize_url(host: &str, params: &[(&str, &str)]) -> String {
    let mut u = url::Url::parse(&format!("https://{host}/oauth2/v1/authorize")).unwrap();
    for (k, v) in params {
        u.query_pairs_mut().append_pair(k, v);
    }
    u.into()
}

/// The standard authorize parameters for the test client.
pub fn standard_params(challenge: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client_id", CLIENT.to_string()),
        ("redirect_uri", REDIRECT.to_string()),
        ("response_type", "code".to_string()),
        ("state", STATE.to_string()),
        ("code_challenge", challenge.to_string()),
        ("code_challenge_method", "S256".to_string()),
    ]
}

pub fn standard_url(host: &str) -> String {
    let challenge = challenge_of(VERIFIER);
    let params = standard_params(&challenge);
    let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    authorize_url(host, &refs)
}

/// A redirect's `Location` and its query parameters.
pub fn location(resp: &reqwest::Response) -> (String, HashMap<String, String>) {
    let loc = resp
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_string();
    let params = url::Url::parse(&loc)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    (loc, params)
}

pub async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

/// fakedog with three orgs (US1, EU1, US5), the test client, auto-consent.
pub struct World {
    pub fd: FakeDog,
    pub http: reqwest::Client,
    pub us1: Org,
    pub eu: Org,
    pub us5: Org,
}

pub async fn world() -> World {
    world_with(true, false).await
}

pub async fn world_with(auto_consent: bool, counting: bool) -> World {
    let options = Options {
        orgs: vec![
            OrgSpec::new("Acme US", site("datadoghq.com")),
            OrgSpec::new("Acme EU", site("datadoghq.eu")),
            OrgSpec::new("Acme US5", site("us5.datadoghq.com")),
        ],
        clients: vec![ClientSpec::new(CLIENT, SECRET, REDIRECT).named("Partner")],
        auto_consent,
        counting,
        ..Options::default()
    };
    let fd = FakeDog::start(options).await.unwrap();
    let http = https_client(&fd, &["bigcorp.datadoghq.com"]);
    World {
        us1: fd.org("Acme US").unwrap(),
        eu: fd.org("Acme EU").unwrap(),
        us5: fd.org("Acme US5").unwrap(),
        fd,
        http,
    }
}

impl World {
    /// GETs the standard authorize URL on web host `host`.
    pub async fn open_authorize(&self, host: &str) -> reqwest::Response {
        self.http.get(standard_url(host)).send().await.unwrap()
    }

    /// Authorizes as `org` on its own web host: the callback parameters.
    pub async fn authorize(&self, org: &Org) -> HashMap<String, String> {
        self.fd.login(&org.id).unwrap();
        let resp = self.open_authorize(org.site.web_host).await;
        assert_eq!(resp.status(), StatusCode::FOUND);
        let (loc, params) = location(&resp);
        assert!(loc.starts_with(REDIRECT), "{loc}");
        assert!(params.contains_key("code"), "{loc}");
        params
    }

    pub async fn token(&self, host: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("https://{host}/oauth2/v1/token"))
            .form(form)
            .send()
            .await
            .unwrap();
        json_of(resp).await
    }

    pub async fn exchange_code(
        &self,
        host: &str,
        code: &str,
        verifier: &str,
    ) -> (StatusCode, Value) {
        self.token(
            host,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
                ("code", code),
            ],
        )
        .await
    }

    pub async fn refresh(&self, host: &str, refresh_token: &str) -> (StatusCode, Value) {
        self.token(
            host,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// The full code flow for `org`: the token response.
    pub async fn tokens(&self, org: &Org) -> Value {
        let params = self.authorize(org).await;
        let (status, body) = self
            .exchange_code(&api(org), &params["code"], VERIFIER)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn create_key(&self, host: &str, access_token: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("https://{host}/api/v2/api_keys/marketplace"))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap();
        json_of(resp).await
    }

    /// OAuth + key creation for `org`: the API key.
    pub async fn api_key(&self, org: &Org) -> String {
        let t = self.tokens(org).await;
        let (status, body) = self.create_key(&api(org), access_token(&t)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["data"]["attributes"]["key"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// POSTs an intake body.
    pub async fn post(
        &self,
        host: &str,
        path: &str,
        key: Option<&str>,
        encoding: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(format!("https://{host}{path}"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            req = req.header("DD-API-KEY", k);
        }
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        json_of(req.send().await.unwrap()).await
    }

    /// POSTs one v2 series point at `now` to `host` with `key`.
    pub async fn one_series(&self, host: &str, key: &str, now: i64) -> (StatusCode, Value) {
        let body = series_v2(now, 1);
        self.post(host, "/api/v2/series", Some(key), None, body)
            .await
    }

    pub async fn validate(&self, host: &str, key: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("https://{host}/api/v1/validate"))
            .header("DD-API-KEY", key)
            .send()
            .await
            .unwrap();
        json_of(resp).await
    }
}

pub fn series_v2(now: i64, n: usize) -> Vec<u8> {
    let series: Vec<Value> = (0..n)
        .map(|i| {
            json!({"metric": format!("app.m{i}"), "type": 3,
                   "points": [{"timestamp": now, "value": i as f64}],
                   "tags": ["env:test"], "resources": [{"name": "h1", "type": "host"}]})
        })
        .collect();
    json!({ "series": series }).to_string().into_bytes()
}

pub fn series_v1(now: i64, n: usize) -> Vec<u8> {
    let series: Vec<Value> = (0..n)
        .map(|i| json!({"metric": format!("app.v1.m{i}"), "type": "gauge", "points": [[now, 0.5]], "host": "h1"}))
        .collect();
    json!({ "series": series }).to_string().into_bytes()
}

pub fn logs(now: i64, n: usize) -> Vec<u8> {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"message": format!("line {i}"), "ddsource": "app", "service": "web", "timestamp": now * 1000}))
        .collect();
    Value::Array(items).to_string().into_bytes()
}

pub fn event(now: i64) -> Vec<u8> {
    json!({"title": "Deploy", "text": "v1.2.3 rolled out", "date_happened": now, "priority": "normal", "tags": ["env:test"]})
        .to_string()
        .into_bytes()
}

pub fn checks(now: i64, n: usize) -> Vec<u8> {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"check": format!("app.ok{i}"), "host_name": "h1", "status": 0, "tags": ["env:test"], "timestamp": now}))
        .collect();
    Value::Array(items).to_string().into_bytes()
}

/// A plain-HTTP client for the control listener (no proxy from the environment).
pub fn plain() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A plain-HTTP server standing in for the relay's OAuth callback
/// (`relay.test`): answers 200 with the callback's query string.
pub async fn callback_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route(
        "/oauth/callback",
        axum::routing::get(|uri: axum::http::Uri| async move {
            format!("callback:{}", uri.query().unwrap_or_default())
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}
