//! A few endpoints of Datadog's public REST API, read with an OAuth access
//! token (docs/datadog.md "Calling Datadog's API with the access token"):
//! what the pull-side proxy's tests and a partner's
//! on-call tool rehearsal need, nothing more.
//!
//! | route (on `api.<domain>` only) | scope | answers |
//! |---|---|---|
//! | `GET /api/v1/monitor[?name=..]` | `monitors_read` | the org's monitors, a JSON array, sent **chunked** (no `Content-Length`), as large API answers are |
//! | `GET /api/v1/monitor/{id}` | `monitors_read` | one monitor; 404 `{"errors":["Monitor not found"]}` |
//! | `POST /api/v1/monitor` | `monitors_write` | creates one from `{"name","type","query"[,"message","tags"]}`: 200 with the monitor |
//! | `GET /api/v2/users` | `user_access_read` | the org's users, JSON:API `{"data":[..],"meta":{"page":{..}}}` |
//!
//! Authentication is `Authorization: Bearer <access token>` only. A missing,
//! unknown, expired or revoked token, a token without the route's scope, or a
//! token of another site's org (also a [`super::ViolationKind::WrongSite`]) gets
//! 403 `{"errors":["Forbidden"]}`: "a missing scope or an expired or invalid
//! token gives 403" (Datadog's troubleshooting; a third party's claim of
//! 401 for a missing scope is UNCONFIRMED, so 401 is only produced by a
//! fault). Scope names are Datadog's: `monitors_read`, `monitors_write`,
//! `user_access_read` (docs/datadog.md "Scopes of the pull-side endpoints").
//!
//! Successful answers carry Datadog's `X-RateLimit-Limit`, `-Period`,
//! `-Remaining`, `-Reset` and `-Name` headers with fixed values; real rate
//! limiting is a fault ([`super::Fault::rate_limited`]).
//!
//! Every org is seeded with two monitors and two users when it is created.
//! Every request to these routes, and every request to an unknown path on
//! any host, is recorded with its headers ([`ApiRequest`]) so tests can check
//! what a client forwarded.

use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, State as AxState};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::site::HostRole;

use super::server::{Target, errors, not_found};
use super::state::{Org, Shared, State, uuid};

/// Reads monitors (`GET /api/v1/monitor`, `GET /api/v1/monitor/{id}`).
pub const MONITORS_READ: &str = "monitors_read";
/// Creates and edits monitors (`POST /api/v1/monitor`).
pub const MONITORS_WRITE: &str = "monitors_write";
/// Reads users (`GET /api/v2/users`).
pub const USER_ACCESS_READ: &str = "user_access_read";

/// Monitor ids start here (Datadog's are large integers).
const FIRST_MONITOR_ID: i64 = 1_000_000;
/// Largest monitor creation body read.
const MAX_CREATE_BODY: usize = 1 << 20;

/// A request fakedog received on its public API routes (or on an unknown
/// path), as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiRequest {
    /// The host it arrived at (lowercase, no port).
    pub host: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Every header, names lowercase, values as received (lossy UTF-8).
    pub(crate) headers: Vec<(String, String)>,
}

impl ApiRequest {
    /// The values of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A monitor of one org.
#[derive(Debug, Clone)]
pub(crate) struct Monitor {
    pub(crate) org: String,
    pub(crate) id: i64,
    pub(crate) body: Value,
}

/// A user of one org.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) org: String,
    pub(crate) body: Value,
}

pub(super) fn record(
    shared: &Shared,
    target: Option<&Target>,
    method: &Method,
    uri: &Uri,
    h: &HeaderMap,
) {
    let headers = h
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let host = target
        .map(|t| t.host.clone())
        .or_else(|| uri.host().map(str::to_string))
        .unwrap_or_default();
    shared.lock().rec.api_requests.push(ApiRequest {
        host,
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers,
    });
}

/// Datadog's rate-limit headers, fixed values (see the module doc).
fn with_rate_limit_headers(mut r: Response, name: &'static str) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        ("x-ratelimit-limit", "1000"),
        ("x-ratelimit-period", "10"),
        ("x-ratelimit-remaining", "999"),
        ("x-ratelimit-reset", "10"),
        ("x-ratelimit-name", name),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

pub(super) fn ok_json(status: StatusCode, body: &Value, limit_name: &'static str) -> Response {
    with_rate_limit_headers(super::server::json(status, body.clone()), limit_name)
}

/// What a public API handler reads of its request: fakedog's state, the
/// host it arrived at, and the method, URI and headers [`ApiCall::caller`]
/// records.
pub(crate) struct ApiCall {
    pub(crate) shared: Arc<Shared>,
    pub(crate) target: Target,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
}

impl FromRequestParts<Arc<Shared>> for ApiCall {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let Extension(target) = Extension::<Target>::from_request_parts(parts, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(ApiCall {
            shared: shared.clone(),
            target,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }
}

impl ApiCall {
    /// Records the call and says whose it is: the org of the bearer token
    /// when the call is on an API host and the token holds `scope`;
    /// otherwise the answer (`404` off the API host, `403` without the
    /// scope).
    pub(super) fn caller(&self, scope: &str) -> Result<Org, Box<Response>> {
        let (shared, target) = (&self.shared, &self.target);
        record(shared, Some(target), &self.method, &self.uri, &self.headers);
        if target.role != HostRole::Api {
            return Err(Box::new(not_found()));
        }
        let org = shared
            .lock()
            .api_org(target, self.uri.path(), &self.headers, scope);
        org.ok_or_else(|| Box::new(forbidden()))
    }
}

pub(super) fn forbidden() -> Response {
    errors(StatusCode::FORBIDDEN, "Forbidden")
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

impl State {
    /// The org whose live access token is in `headers`, if the token has
    /// `scope` and belongs to an org of `target`'s site.
    pub(super) fn api_org(
        &mut self,
        target: &Target,
        path: &str,
        headers: &HeaderMap,
        scope: &str,
    ) -> Option<Org> {
        let grant = self.bearer_grant(bearer(headers)?)?.clone();
        let org = self.org(&grant.org)?.clone();
        if self.wrong_site(target, path, &org.id, org.site, "access token", "used") {
            return None;
        }
        grant.scopes.iter().any(|s| s == scope).then_some(org)
    }

    fn next_monitor_id(&mut self) -> i64 {
        FIRST_MONITOR_ID + self.next_id() as i64
    }

    fn new_monitor(
        &mut self,
        org: &str,
        name: &str,
        kind: &str,
        query: &str,
        message: &str,
        tags: Value,
    ) -> Value {
        let id = self.next_monitor_id();
        let now = super::keys::timestamp(self.now());
        let body = json!({
            "id": id,
            "name": name,
            "type": kind,
            "query": query,
            "message": message,
            "tags": tags,
            "options": {"notify_no_data": false, "thresholds": {}},
            "overall_state": "OK",
            "priority": null,
            "multi": false,
            "created": now,
            "modified": now,
            "deleted": null,
            "restricted_roles": null,
        });
        self.monitors.push(Monitor {
            org: org.to_string(),
            id,
            body: body.clone(),
        });
        body
    }

    /// Two monitors and two users for a new org.
    pub(crate) fn seed_api_data(&mut self, org: &Org) {
        self.new_monitor(
            &org.id,
            &format!("[{}] CPU usage is high", org.name),
            "metric alert",
            "avg(last_5m):avg:system.cpu.user{*} > 90",
            "CPU above 90% @oncall",
            json!(["team:platform"]),
        );
        self.new_monitor(
            &org.id,
            &format!("[{}] Checkout service is down", org.name),
            "service check",
            "\"http.can_connect\".over(\"service:checkout\").by(\"host\").last(2).count_by_status()",
            "Checkout unreachable @oncall",
            json!(["service:checkout"]),
        );
        let slug: String = org
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        for (name, handle) in [("Ada Admin", "ada"), ("Otto Oncall", "otto")] {
            let email = format!("{handle}@{slug}.example");
            self.users.push(User {
                org: org.id.clone(),
                body: json!({
                    "type": "users",
                    "id": uuid(),
                    "attributes": {
                        "name": name,
                        "handle": email,
                        "email": email,
                        "status": "Active",
                        "disabled": false,
                        "verified": true,
                        "service_account": false,
                    },
                }),
            });
        }
    }
}

/// `GET /api/v1/monitor`: streamed in chunks, one per monitor.
pub(crate) async fn list_monitors(call: ApiCall) -> Response {
    let org = match call.caller(MONITORS_READ) {
        Ok(org) => org,
        Err(answer) => return *answer,
    };
    let name_filter = call.uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v.to_lowercase())
    });
    let monitors: Vec<Value> = {
        let st = call.shared.lock();
        st.monitors
            .iter()
            .filter(|m| m.org == org.id)
            .filter(|m| {
                name_filter.as_ref().is_none_or(|f| {
                    m.body["name"]
                        .as_str()
                        .is_some_and(|n| n.to_lowercase().contains(f.as_str()))
                })
            })
            .map(|m| m.body.clone())
            .collect()
    };
    let mut chunks: Vec<Result<Bytes, std::io::Error>> = Vec::with_capacity(monitors.len() * 2 + 2);
    chunks.push(Ok(Bytes::from_static(b"[")));
    for (i, m) in monitors.iter().enumerate() {
        if i > 0 {
            chunks.push(Ok(Bytes::from_static(b",")));
        }
        chunks.push(Ok(Bytes::from(m.to_string())));
    }
    chunks.push(Ok(Bytes::from_static(b"]")));
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_rate_limit_headers(r, "monitor_list")
}

/// `GET /api/v1/monitor/{id}`.
pub(crate) async fn get_monitor(call: ApiCall, Path(id): Path<String>) -> Response {
    let org = match call.caller(MONITORS_READ) {
        Ok(org) => org,
        Err(answer) => return *answer,
    };
    let st = call.shared.lock();
    let found = id
        .parse::<i64>()
        .ok()
        .and_then(|id| st.monitors.iter().find(|m| m.id == id && m.org == org.id));
    match found {
        Some(m) => ok_json(StatusCode::OK, &m.body, "monitor_get"),
        None => errors(StatusCode::NOT_FOUND, "Monitor not found"),
    }
}

/// `POST /api/v1/monitor`.
pub(crate) async fn create_monitor(call: ApiCall, body: Body) -> Response {
    let org = match call.caller(MONITORS_WRITE) {
        Ok(org) => org,
        Err(answer) => return *answer,
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_CREATE_BODY).await else {
        return errors(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large");
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return errors(StatusCode::BAD_REQUEST, "Invalid JSON body");
    };
    let field = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let (Some(name), Some(kind), Some(query)) = (field("name"), field("type"), field("query"))
    else {
        return errors(
            StatusCode::BAD_REQUEST,
            "Invalid monitor: name, type and query are required",
        );
    };
    let message = field("message").unwrap_or_default();
    let tags = v.get("tags").cloned().unwrap_or_else(|| json!([]));
    let created = call
        .shared
        .lock()
        .new_monitor(&org.id, name, kind, query, message, tags);
    ok_json(StatusCode::OK, &created, "monitor_create")
}

/// `GET /api/v2/users`.
pub(crate) async fn list_users(call: ApiCall) -> Response {
    let org = match call.caller(USER_ACCESS_READ) {
        Ok(org) => org,
        Err(answer) => return *answer,
    };
    let st = call.shared.lock();
    let data: Vec<Value> = st
        .users
        .iter()
        .filter(|u| u.org == org.id)
        .map(|u| u.body.clone())
        .collect();
    let n = data.len();
    ok_json(
        StatusCode::OK,
        &json!({
            "data": data,
            "included": [],
            "meta": {"page": {"total_count": n, "total_filtered_count": n}},
        }),
        "users_list",
    )
}

/// Any path no route serves, on any host: recorded, then Datadog's 404.
pub(crate) async fn unknown(
    AxState(shared): AxState<Arc<Shared>>,
    target: Option<Extension<Target>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    record(
        &shared,
        target.as_ref().map(|t| &t.0),
        &method,
        &uri,
        &headers,
    );
    not_found()
}
