//! Calls through the pull-side proxy (`/v1/tenants/{tenant}/datadog/{path}`)
//! and what they answered: shared by the proxy and incidents tests.

use ddrelay::dev::fakedog::FakeDog;
use ddrelay::dev::sandbox::{self, ADMIN_TOKEN, Relay};
use reqwest::Method;
use serde_json::Value;

/// fakedog, the sandbox client registered with `scopes`, and a relay with
/// `extra` TOML.
pub async fn setup(scopes: &[&str], extra: &str) -> (FakeDog, Relay, tempfile::TempDir) {
    let dog = super::dog().await;
    sandbox::register_client_with_scopes(&dog, scopes).unwrap();
    let (relay, dir) = super::relay(&dog, extra).await;
    (dog, relay, dir)
}

/// A proxy answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A client that ignores any proxy the environment names.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// `method /v1/tenants/{tenant}/datadog/{path}` with `token`, extra headers
/// and an optional JSON body.
pub async fn call(
    relay: &Relay,
    token: &str,
    method: Method,
    tenant: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let mut req = http()
        .request(
            method,
            relay.url(&format!("/v1/tenants/{tenant}/datadog/{path}")),
        )
        .bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

/// [`call`] with the admin token and no extra header.
pub async fn admin_call(
    relay: &Relay,
    method: Method,
    tenant: &str,
    path: &str,
    body: Option<Value>,
) -> Answer {
    call(relay, ADMIN_TOKEN, method, tenant, path, &[], body).await
}

/// Checks that `a` is Datadog's 403 for a missing scope or permission,
/// kept as Datadog sent it and explained by the relay: the relay's
/// explanation (`ddrelay`).
pub fn missing_scope(a: &Answer) -> Value {
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.header("dd-relay-origin"), Some("datadog"));
    assert_eq!(
        a.header("dd-relay-explanation"),
        Some("missing_scope_or_permission")
    );
    let v = a.json();
    assert_eq!(
        v["errors"],
        serde_json::json!(["Forbidden"]),
        "Datadog's errors are kept"
    );
    v["ddrelay"].clone()
}
