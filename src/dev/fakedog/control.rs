//! The plain-HTTP control listener: inspection and faults, in JSON.
//!
//! fakedog's own API lives under `/fakedog/`; fakeintake's (Datadog's test
//! intake, docs/datadog.md "fakeintake: Datadog's test intake") under
//! `/fakeintake/`, with the same routes and body shapes so tools written for
//! fakeintake work. Everything here is for the operator or the test on the
//! same machine; it is never served on the TLS listener.
//!
//! | route | does |
//! |---|---|
//! | `GET /fakedog/health` | `{"status":"ok"}` |
//! | `GET /fakedog/summary` | everything below in one document |
//! | `GET /fakedog/counts` | accepted items per org and per host, by kind; incidents per org |
//! | `GET /fakedog/received?org=&kind=` | accepted items (full mode) |
//! | `GET /fakedog/incidents?org=` | the org's incidents (`incidents.rs`), oldest first |
//! | `GET /fakedog/requests` | responses per host and status (`0`: dropped) |
//! | `GET /fakedog/keys` | keys created per org, and every key's state |
//! | `GET /fakedog/token_calls` | token and revoke calls per host |
//! | `GET /fakedog/violations` | rule violations |
//! | `GET /fakedog/api_requests` | requests to the public API routes and unknown paths, with headers |
//! | `POST /fakedog/reset` | forget what was recorded and every fault |
//! | `GET`/`POST`/`DELETE /fakedog/faults` | list, add (a `Fault`), clear |
//! | `GET`/`POST /fakedog/orgs` | list, create `{"name","site"[,"id"]}` |
//! | `POST /fakedog/orgs/{org}/revoke_key` | the customer deleted the key |
//! | `POST /fakedog/orgs/{org}/rotate_key` | key replaced out of band |
//! | `POST /fakedog/orgs/{org}/revoke_grants` | the customer uninstalled |
//! | `GET`/`POST /fakedog/clients` | list, register a client |
//! | `POST /fakedog/clients/{id}/rotate_secret` | `{"client_secret":..}` |
//! | `POST /fakedog/token_ttl` | `{"seconds":N}` for tokens issued from now |
//! | `POST /fakedog/consent` | `{"auto":bool}` |
//! | `POST /fakedog/login` | `{"org":"<id or name>"}` or `{"org":null}` |
//! | `POST /fakedog/clock/advance` | `{"seconds":N}` moves fakedog's clock |
//! | `GET /fakeintake/payloads?endpoint=..[&format=json]` | fakeintake's view |
//! | `GET /fakeintake/flushPayloads` | forget payloads and items |
//! | `GET /fakeintake/routestats` | payload count per route |
//! | `GET /fakeintake/health` | 200 |
//! | `POST /fakeintake/configure/override` | fakeintake's response override |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::site::{Endpoint, Site};

use super::ClientSpec;
use super::faults::{Fault, Override};
use super::intake::decode_payload;
use super::server;
use super::state::{Counts, Shared, State, StateError};

/// A control request that cannot be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    BadRequest(String),
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let status = match &self {
            ControlError::State(StateError::UnknownOrg(_) | StateError::UnknownClient(_)) => {
                StatusCode::NOT_FOUND
            }
            _ => StatusCode::BAD_REQUEST,
        };
        server::json(status, json!({ "error": self.to_string() }))
    }
}

type Answer = Result<Json<Value>, ControlError>;

/// Parses a JSON body whatever its content type (curl's `-d` sends a form type).
fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ControlError> {
    serde_json::from_slice(body)
        .map_err(|e| ControlError::BadRequest(format!("invalid {what}: {e}")))
}
type Shr = AxState<Arc<Shared>>;

/// Builds the control router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(received_page))
        .route(
            "/fakedog/health",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route("/fakedog/summary", get(summary))
        .route("/fakedog/counts", get(counts))
        .route("/fakedog/received", get(received))
        .route("/fakedog/incidents", get(incidents))
        .route("/fakedog/requests", get(requests))
        .route("/fakedog/keys", get(keys))
        .route("/fakedog/token_calls", get(token_calls))
        .route("/fakedog/violations", get(violations))
        .route("/fakedog/api_requests", get(api_requests))
        .route("/fakedog/reset", post(reset))
        .route(
            "/fakedog/faults",
            get(faults).post(add_fault).delete(clear_faults),
        )
        .route("/fakedog/orgs", get(orgs).post(create_org))
        .route("/fakedog/orgs/{org}/{action}", post(org_action))
        .route("/fakedog/clients", get(clients).post(register_client))
        .route("/fakedog/clients/{id}/rotate_secret", post(rotate_secret))
        .route("/fakedog/token_ttl", post(token_ttl))
        .route("/fakedog/consent", post(consent))
        .route("/fakedog/login", post(login))
        .route("/fakedog/clock/advance", post(advance))
        .route("/fakeintake/payloads", get(payloads))
        .route("/fakeintake/flushPayloads", get(flush).post(flush))
        .route("/fakeintake/routestats", get(routestats))
        .route("/fakeintake/health", get(|| async { StatusCode::OK }))
        .route("/fakeintake/configure/override", post(configure_override))
        .fallback(|| async {
            server::json(
                StatusCode::NOT_FOUND,
                json!({"error": "no such control route"}),
            )
        })
        .with_state(shared)
}

fn by_kind(c: &Counts) -> BTreeMap<&'static str, u64> {
    Endpoint::EVERY
        .into_iter()
        .map(|e| (e.name(), c[super::state::slot(e)]))
        .collect()
}

impl State {
    fn counts_json(&self) -> Value {
        let orgs: BTreeMap<&str, _> = self
            .rec
            .counts
            .iter()
            .map(|(o, c)| (o.as_str(), by_kind(c)))
            .collect();
        let hosts: BTreeMap<&str, _> = self
            .rec
            .host_counts
            .iter()
            .map(|(h, c)| (h.as_str(), by_kind(c)))
            .collect();
        let mut incidents = BTreeMap::<&str, u64>::new();
        for i in &self.incidents {
            *incidents.entry(i.org.as_str()).or_default() += 1;
        }
        json!({ "orgs": orgs, "hosts": hosts, "incidents": incidents })
    }

    fn keys_json(&self) -> Value {
        let mut keys: Vec<Value> = self
            .keys
            .iter()
            .map(|(value, k)| {
                json!({
                    "id": k.id,
                    "org": k.org,
                    "client_id": k.client_id,
                    "last4": &value[value.len().saturating_sub(4)..],
                    "live": k.live,
                })
            })
            .collect();
        keys.sort_by(|a, b| a["org"].as_str().cmp(&b["org"].as_str()));
        json!({ "created": self.rec.keys_created, "keys": keys })
    }

    fn calls_json(&self) -> Value {
        json!({ "token": self.rec.token_calls, "revoke": self.rec.revoke_calls })
    }

    fn requests_json(&self) -> Value {
        json!(self.rec.requests)
    }

    fn summary_json(&self) -> Value {
        let clients: Vec<_> = self.clients.values().map(|c| c.info()).collect();
        json!({
            "orgs": self.orgs,
            "clients": clients,
            "auto_consent": self.auto_consent,
            "logged_in": self.logged_in,
            "token_ttl_secs": self.token_ttl.as_secs(),
            "clock_unix": self.now_unix(),
            "counts": self.counts_json(),
            "requests": self.requests_json(),
            "keys": self.keys_json(),
            "token_calls": self.calls_json(),
            "violations": self.rec.violations,
            "faults": self.faults,
        })
    }
}

async fn summary(AxState(s): Shr) -> Json<Value> {
    Json(s.lock().summary_json())
}

async fn counts(AxState(s): Shr) -> Json<Value> {
    Json(s.lock().counts_json())
}

#[derive(Deserialize)]
struct ReceivedQuery {
    org: String,
    kind: String,
}

async fn received(AxState(s): Shr, Query(q): Query<ReceivedQuery>) -> Answer {
    let endpoint = Endpoint::from_name(&q.kind)
        .or_else(|| Endpoint::from_path(&q.kind))
        .ok_or_else(|| {
            ControlError::BadRequest(format!(
                "kind must be one of series, series_v1, logs, events, check_run (got {})",
                q.kind
            ))
        })?;
    let st = s.lock();
    if st.org(&q.org).is_none() {
        return Err(StateError::UnknownOrg(q.org).into());
    }
    Ok(Json(json!({ "items": st.received(&q.org, endpoint) })))
}

/// How many of an org's latest items per kind the received page shows.
const PAGE_LATEST: usize = 3;

/// `GET /`: the HTML page of what each org received (`pages::received`).
async fn received_page(AxState(s): Shr) -> Response {
    let st = s.lock();
    let orgs: Vec<_> = st
        .orgs
        .iter()
        .map(|org| {
            let counts = st.rec.counts.get(&org.id);
            let items = st.rec.items.get(&org.id);
            let latest = Endpoint::EVERY
                .into_iter()
                .filter_map(|e| {
                    let list = &items?[super::state::slot(e)];
                    let newest: Vec<&Value> = list.iter().rev().take(PAGE_LATEST).collect();
                    (!newest.is_empty()).then_some((e.name(), newest))
                })
                .collect();
            super::pages::OrgReceived {
                org,
                counts: Endpoint::EVERY
                    .into_iter()
                    .map(|e| (e.name(), counts.map_or(0, |c| c[super::state::slot(e)])))
                    .collect(),
                latest,
            }
        })
        .collect();
    let violations: Vec<String> = st
        .rec
        .violations
        .iter()
        .map(|v| format!("{:?} at {}{}: {}", v.kind, v.host, v.path, v.detail))
        .collect();
    let html = super::pages::received(&orgs, &violations);
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

#[derive(Deserialize)]
struct OrgQuery {
    org: String,
}

async fn incidents(AxState(s): Shr, Query(q): Query<OrgQuery>) -> Answer {
    let st = s.lock();
    if st.org(&q.org).is_none() {
        return Err(StateError::UnknownOrg(q.org).into());
    }
    Ok(Json(json!({ "incidents": st.incidents_of(&q.org) })))
}

async fn requests(AxState(s): Shr) -> Json<Value> {
    Json(s.lock().requests_json())
}

async fn keys(AxState(s): Shr) -> Json<Value> {
    Json(s.lock().keys_json())
}

async fn token_calls(AxState(s): Shr) -> Json<Value> {
    Json(s.lock().calls_json())
}

async fn violations(AxState(s): Shr) -> Json<Value> {
    Json(json!(s.lock().rec.violations))
}

async fn api_requests(AxState(s): Shr) -> Json<Value> {
    Json(json!(s.lock().rec.api_requests))
}

async fn reset(AxState(s): Shr) -> Json<Value> {
    s.lock().reset();
    Json(json!({"status": "ok"}))
}

async fn faults(AxState(s): Shr) -> Json<Value> {
    Json(json!(s.lock().faults))
}

async fn add_fault(AxState(s): Shr, body: Bytes) -> Answer {
    let fault: Fault = parse(&body, "fault")?;
    let id = s.lock().add_fault(fault)?;
    Ok(Json(json!({ "id": id })))
}

async fn clear_faults(AxState(s): Shr) -> Json<Value> {
    s.lock().faults.clear();
    Json(json!({"status": "ok"}))
}

async fn orgs(AxState(s): Shr) -> Json<Value> {
    Json(json!(s.lock().orgs))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    name: String,
    site: String,
    #[serde(default)]
    id: Option<String>,
}

async fn create_org(AxState(s): Shr, body: Bytes) -> Answer {
    let o: NewOrg = parse(&body, "org")?;
    let site = Site::by_name_or_domain(&o.site)
        .ok_or_else(|| ControlError::BadRequest(format!("unknown Datadog site {}", o.site)))?;
    let org = s.lock().add_org(&o.name, site, o.id)?;
    Ok(Json(json!(org)))
}

async fn org_action(AxState(s): Shr, Path((org, action)): Path<(String, String)>) -> Answer {
    let mut st = s.lock();
    let n = match action.as_str() {
        "revoke_key" => st.revoke_key(&org)?,
        "rotate_key" => {
            st.rotate_key(&org)?;
            1
        }
        "revoke_grants" => st.revoke_grants(&org)?,
        other => {
            return Err(ControlError::BadRequest(format!(
                "unknown action {other}: revoke_key, rotate_key or revoke_grants"
            )));
        }
    };
    Ok(Json(json!({ "status": "ok", "affected": n })))
}

async fn clients(AxState(s): Shr) -> Json<Value> {
    let st = s.lock();
    let clients: Vec<_> = st.clients.values().map(|c| c.info()).collect();
    Json(json!(clients))
}

async fn register_client(AxState(s): Shr, body: Bytes) -> Answer {
    let spec: ClientSpec = parse(&body, "client")?;
    let id = spec.id.clone();
    s.lock().add_client(spec.into_client())?;
    Ok(Json(json!({ "status": "ok", "id": id })))
}

async fn rotate_secret(AxState(s): Shr, Path(id): Path<String>) -> Answer {
    let secret = s.lock().rotate_secret(&id)?;
    Ok(Json(
        json!({ "client_id": id, "client_secret": secret.expose() }),
    ))
}

#[derive(Deserialize)]
struct Seconds {
    seconds: u64,
}

async fn token_ttl(AxState(s): Shr, body: Bytes) -> Answer {
    let b: Seconds = parse(&body, "body (expected {\"seconds\": N})")?;
    if b.seconds == 0 {
        return Err(ControlError::BadRequest(
            "seconds must be at least 1".into(),
        ));
    }
    s.lock().token_ttl = Duration::from_secs(b.seconds);
    Ok(Json(json!({ "status": "ok" })))
}

#[derive(Deserialize)]
struct Auto {
    auto: bool,
}

async fn consent(AxState(s): Shr, body: Bytes) -> Answer {
    let b: Auto = parse(&body, "body (expected {\"auto\": true|false})")?;
    s.lock().auto_consent = b.auto;
    Ok(Json(json!({ "status": "ok" })))
}

#[derive(Deserialize)]
struct Login {
    org: Option<String>,
}

async fn login(AxState(s): Shr, body: Bytes) -> Answer {
    let b: Login = parse(
        &body,
        "body (expected {\"org\": \"<id or name>\"} or {\"org\": null})",
    )?;
    s.lock().set_login(b.org.as_deref())?;
    Ok(Json(json!({ "status": "ok" })))
}

async fn advance(AxState(s): Shr, body: Bytes) -> Answer {
    let b: Seconds = parse(&body, "body (expected {\"seconds\": N})")?;
    let mut st = s.lock();
    st.advance(Duration::from_secs(b.seconds));
    Ok(Json(json!({ "clock_unix": st.now_unix() })))
}

#[derive(Deserialize)]
struct PayloadsQuery {
    endpoint: Option<String>,
    format: Option<String>,
}

/// fakeintake's `GET /fakeintake/payloads`.
async fn payloads(AxState(s): Shr, Query(q): Query<PayloadsQuery>) -> Response {
    let Some(route) = q.endpoint.filter(|e| !e.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "missing endpoint query parameter").into_response();
    };
    let Some(endpoint) = Endpoint::from_path(&route) else {
        return (StatusCode::BAD_REQUEST, "invalid route parameter").into_response();
    };
    let as_json = q.format.as_deref() == Some("json");
    let st = s.lock();
    let stored = st
        .rec
        .payloads
        .get(endpoint.path())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let list: Vec<Value> = stored
        .iter()
        .map(|p| {
            let timestamp = time::OffsetDateTime::from(p.timestamp)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            if as_json {
                json!({
                    "timestamp": timestamp,
                    "api_key": p.api_key,
                    "data": decode_payload(endpoint, &p.encoding, &p.data),
                    "encoding": p.encoding,
                })
            } else {
                json!({
                    "timestamp": timestamp,
                    "api_key": p.api_key,
                    "data": base64::engine::general_purpose::STANDARD.encode(&p.data),
                    "encoding": p.encoding,
                    "content_type": p.content_type,
                })
            }
        })
        .collect();
    Json(json!({ "payloads": list })).into_response()
}

async fn flush(AxState(s): Shr) -> StatusCode {
    s.lock().flush_payloads();
    StatusCode::OK
}

async fn routestats(AxState(s): Shr) -> Json<Value> {
    let st = s.lock();
    let routes: BTreeMap<&str, Value> = st
        .rec
        .payloads
        .iter()
        .map(|(route, list)| (*route, json!({ "id": route, "count": list.len() })))
        .collect();
    Json(json!({ "routes": routes }))
}

async fn configure_override(AxState(s): Shr, body: Bytes) -> Response {
    let o: Override = match serde_json::from_slice(&body) {
        Ok(o) => o,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("invalid override: {e}")).into_response();
        }
    };
    let fault = match o.to_fault() {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let method = o.method();
    let mut st = s.lock();
    // A new override for (method, endpoint) replaces the previous one.
    st.faults.retain(|f| {
        !(f.remaining.is_none()
            && f.until.is_none()
            && f.fault.host.is_none()
            && f.fault.path.as_deref() == Some(o.endpoint.as_str())
            && f.fault.method.as_deref() == Some(method.as_str()))
    });
    if let Some(fault) = fault
        && let Err(e) = st.add_fault(fault)
    {
        return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    StatusCode::OK.into_response()
}
