//! The admin API on `api_listen` (`/v1/*`), behind the admin bearer token:
//! start a tenant's connect flow, list and inspect tenants, disconnect one,
//! set and read its tags (`PUT`/`GET /v1/tenants/{tenant}/tags`, checked
//! and normalised by [`crate::tags`]), run the verification checklist (`POST /v1/tenants/{tenant}/verify`, see
//! [`crate::verify`]). The HTML status page on `/` lives in [`status`].
//!
//! The token is compared in constant time against the *current*
//! configuration, so a rotated `admin_token` takes effect on reload. Errors
//! are JSON `{"errors": ["..."]}` naming what is wrong.
//!
//! This module turns HTTP into calls on `oauth` (connect), `tenant` (the
//! directory), `credentials` (disconnect), `verify`, `tags` and `usage`
//! (`GET /v1/tenants/{tenant}/usage`); queue, delivery and ingest figures
//! come through the [`QueueView`], [`DeliveryView`] and [`RelayView`]
//! traits so it does not depend on their internals.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::credentials::CredentialError;
use crate::oauth::{self, ConnectError, ConnectRequest};
use crate::secret::ct_eq;
use crate::store::{ReasonCode, Tenant, TenantState};
use crate::telemetry::rate::Rates;
use crate::tenant::{Tenants, validate_id};

pub mod status;

/// Largest admin request body: a connect body is a few dozen bytes. The
/// API listener disables axum's default body limit (ingest bounds its own),
/// so the admin handlers bound theirs.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// Per-tenant queue figures, as the admin API and status page show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Queued {
    pub(crate) items: u64,
    pub(crate) bytes: u64,
    /// Unix milliseconds of the oldest queued record, if any.
    pub(crate) oldest_ms: Option<i64>,
}

/// What was done with a disconnected tenant's queued data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Purged {
    pub(crate) records: u64,
    pub(crate) items: u64,
    pub(crate) bytes: u64,
}

/// The queue as the admin API sees it.
pub(crate) trait QueueView: Send + Sync {
    fn tenant(&self, tenant: &str) -> Queued;
    fn all(&self) -> HashMap<String, Queued>;
    fn purge(&self, tenant: &str) -> Purged;
}

/// Items per second accepted and delivered, all tenants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Throughput {
    pub(crate) accepted: Rates,
    pub(crate) delivered: Rates,
}

/// One tenant's delivery and ingest figures: the `delivery` member of the
/// admin API's tenant, read back by the status page and `ddrelay tenants`.
///
/// The fields are in alphabetical order, the order the admin API has
/// always answered them in (a test checks it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeliveryFigures {
    /// Items per second accepted at ingest.
    pub(crate) accepted_items_per_s: Rates,
    /// Items dropped unsent: older than Datadog's acceptance window.
    pub(crate) aged_out_items: u64,
    /// The oldest queued item is older than half of the shortest
    /// acceptance window.
    pub(crate) approaching_acceptance_window: bool,
    /// Items Datadog refused for good, since the relay started.
    pub(crate) dead_lettered_items: u64,
    /// The tenant's dead-letter area now.
    pub(crate) dead_letters: DeadLetterTotals,
    pub(crate) delivered_items: u64,
    pub(crate) delivered_items_per_s: Rates,
    /// Items accepted for an earlier connection (before a disconnect, or
    /// for another org or site), discarded at send time.
    pub(crate) discarded_items: u64,
    /// 403s while the key still validated, since the last success.
    pub(crate) forbidden_in_a_row: u32,
    /// Items queued while the tenant is not connected (0 when it is).
    pub(crate) held_items: u64,
    /// What ingest accepted but did not keep: `{kind: {reason: count}}`,
    /// without zeros.
    pub(crate) ingest_dropped: BTreeMap<String, BTreeMap<String, u64>>,
    /// Unix milliseconds.
    pub(crate) last_delivery_ms: Option<i64>,
    pub(crate) last_error: Option<String>,
    /// Unix milliseconds.
    pub(crate) last_error_ms: Option<i64>,
    pub(crate) oldest_queued_age_s: Option<i64>,
    /// Ingest requests refused (any 4xx or 5xx) since the relay started.
    pub(crate) rejected_requests: u64,
    pub(crate) retries: u64,
}

/// A tenant's dead-letter area (fields in alphabetical order, as
/// [`DeliveryFigures`]'s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeadLetterTotals {
    pub(crate) bytes: u64,
    pub(crate) entries: u64,
    /// Items evicted to stay within the budget since start.
    pub(crate) evicted_items: u64,
    pub(crate) items: u64,
}

/// Extra per-tenant figures: delivery (held, dead-lettered, aged out,
/// retries, last delivery and error, rates) and ingest (refused requests,
/// accepted rates).
pub(crate) trait DeliveryView: Send + Sync {
    fn tenant(&self, tenant: &str) -> DeliveryFigures;
    /// Items per second, all tenants.
    fn throughput(&self) -> Throughput;
    /// The tenant's dead-letter entries (metadata).
    fn dead_letters(&self, tenant: &str) -> serde_json::Value;
    /// The refused items of one dead-letter entry.
    fn dead_letter_items(&self, tenant: &str, id: u64) -> Option<Vec<String>>;
}

/// The relay as a whole, as the status page shows it.
pub(crate) trait RelayView: Send + Sync {
    /// True while `/readyz` answers 200.
    fn ready(&self) -> bool;
    /// `/healthz`'s `config_generation`.
    fn config_generation(&self) -> u64;
}

/// Everything the admin API needs.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) tenants: Arc<Tenants>,
    /// Disconnect (revocation) and `verify`.
    pub(crate) credentials: Arc<crate::credentials::Credentials>,
    /// The connect flow.
    pub(crate) oauth: Arc<crate::oauth::OAuth>,
    /// What `verify` sends test items with.
    pub(crate) datadog: crate::datadog::Client,
    pub(crate) config: crate::tenant::ConfigHandle,
    /// Whether replicas share the store (the DELETE answer says so).
    pub(crate) shared_store: bool,
    pub(crate) queue: Arc<dyn QueueView>,
    pub(crate) delivery: Option<Arc<dyn DeliveryView>>,
    pub(crate) relay: Arc<dyn RelayView>,
    /// Usage per tenant, kind and hour (`GET /v1/tenants/{t}/usage`).
    pub(crate) usage: Option<crate::usage::Ledger>,
}

/// `{"errors": [...]}` with a status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "errors": [self.message] })),
        )
            .into_response()
    }
}

impl From<ConnectError> for ApiError {
    fn from(e: ConnectError) -> ApiError {
        let status = match e {
            ConnectError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The tenant as the admin API shows it (and `ddrelay tenants` reads it).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TenantView {
    pub(crate) tenant: String,
    pub(crate) state: TenantState,
    /// The API domain, e.g. `datadoghq.eu`.
    pub(crate) site: Option<String>,
    pub(crate) org_id: Option<String>,
    pub(crate) org_name: Option<String>,
    pub(crate) reason: Option<String>,
    /// The reason in a word partners' code can match (`grant_revoked`,
    /// `key_conflict`, `site_not_allowed`, ...).
    pub(crate) reason_code: Option<ReasonCode>,
    pub(crate) queued_items: u64,
    pub(crate) queued_bytes: u64,
    pub(crate) oldest_queued_ms: Option<i64>,
    pub(crate) client_id: Option<String>,
    pub(crate) api_key_last4: Option<String>,
    pub(crate) access_token_expires_at: Option<i64>,
    pub(crate) connected_at: Option<i64>,
    pub(crate) updated_at: i64,
    /// The customer's tags, added to every item (`PUT .../tags`).
    pub(crate) tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) delivery: Option<DeliveryFigures>,
}

/// `GET /v1/tenants` as `ddrelay tenants list` reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct TenantList {
    pub(crate) tenants: Vec<TenantView>,
}

impl TenantView {
    pub fn new(t: Tenant, q: Queued, delivery: Option<DeliveryFigures>) -> TenantView {
        TenantView {
            state: t.state,
            site: t.domain,
            org_id: t.org_id,
            org_name: t.org_name,
            reason: t.reason,
            reason_code: t.reason_code,
            queued_items: q.items,
            queued_bytes: q.bytes,
            oldest_queued_ms: q.oldest_ms,
            client_id: t.client_id,
            api_key_last4: t.api_key_last4,
            access_token_expires_at: t.access_expires_at,
            connected_at: t.connected_at,
            updated_at: t.updated_at,
            tags: t.tags,
            tenant: t.id,
            delivery,
        }
    }
}

/// The `/v1` routes, token-protected, and the status page on `/` (which
/// also accepts a browser session, see [`status`]).
pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/v1/tenants", get(list))
        .route("/v1/tenants/{tenant}", get(show).delete(disconnect))
        .route("/v1/tenants/{tenant}/connect", post(connect))
        .route("/v1/tenants/{tenant}/verify", post(verify))
        .route("/v1/tenants/{tenant}/tags", get(tags).put(set_tags))
        .route("/v1/tenants/{tenant}/dead_letters", get(dead_letters))
        .route("/v1/tenants/{tenant}/usage", get(usage))
        .route("/v1/tenants/{tenant}/dead_letters/{id}", get(dead_letter))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state.clone())
        .merge(status::router(state))
}

/// Checks `Authorization: Bearer <admin_token>` in constant time.
pub(crate) fn authorized(headers: &HeaderMap, expected: &[&crate::secret::Secret]) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    else {
        return false;
    };
    // Evaluate every candidate so timing does not reveal which one matched.
    expected.iter().fold(false, |ok, t| {
        ct_eq(given.trim().as_bytes(), t.expose().as_bytes()) | ok
    })
}

/// Answers 401 without the admin token.
pub(crate) fn unauthorized() -> Response {
    let mut r = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong admin token (Authorization: Bearer <server.admin_token>)",
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let config = state.config.load_full();
    if authorized(req.headers(), &[&config.server.admin_token]) {
        next.run(req).await
    } else {
        unauthorized()
    }
}

fn view(state: &AdminState, t: Tenant) -> TenantView {
    let q = state.queue.tenant(&t.id);
    let d = state.delivery.as_ref().map(|d| d.tenant(&t.id));
    TenantView::new(t, q, d)
}

async fn list(State(state): State<AdminState>) -> Response {
    let queued = state.queue.all();
    let tenants: Vec<TenantView> = state
        .tenants
        .list()
        .into_iter()
        .map(|t| {
            let q = queued.get(&t.id).copied().unwrap_or_default();
            let d = state.delivery.as_ref().map(|d| d.tenant(&t.id));
            TenantView::new(t, q, d)
        })
        .collect();
    axum::Json(serde_json::json!({ "tenants": tenants })).into_response()
}

/// The `{tenant}` path segment, or a JSON 400 (axum's own rejection is
/// plain text).
fn tenant_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(t)| t)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid path: {e}")))
}

fn checked(tenant: &str) -> Result<(), ApiError> {
    validate_id(tenant)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid tenant id: {e}")))
}

fn not_found(tenant: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("tenant {tenant} does not exist"),
    )
}

/// Re-reads one tenant from the store: with replicas, a change made on
/// another one shows at once rather than at the next sync (the list is as
/// of the last sync, at most about 2 s old).
async fn fresh(state: &AdminState, tenant: &str) {
    if let Err(e) = state.tenants.reload(tenant).await {
        tracing::warn!(tenant = %tenant, error = %e, "cannot re-read the tenant from the store");
    }
}

/// The tenant a path names, re-read from the store, or `400`/`404`.
async fn fresh_entry(
    state: &AdminState,
    tenant: Result<Path<String>, PathRejection>,
) -> Result<Arc<crate::tenant::Entry>, ApiError> {
    let tenant = tenant_path(tenant)?;
    checked(&tenant)?;
    fresh(state, &tenant).await;
    state.tenants.get(&tenant).ok_or_else(|| not_found(&tenant))
}

async fn show(
    State(state): State<AdminState>,
    tenant: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let entry = fresh_entry(&state, tenant).await?;
    Ok(axum::Json(view(&state, entry.record())).into_response())
}

async fn connect(
    State(state): State<AdminState>,
    tenant: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = tenant_path(tenant)?;
    checked(&tenant)?;
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_BODY} bytes; expected {{\"site\": \"...\"}}"),
        )
    })?;
    let req: ConnectRequest = if body.iter().all(|b| b.is_ascii_whitespace()) {
        ConnectRequest::default()
    } else {
        if let Some(ct) = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            && !ct.starts_with("application/json")
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("expected a JSON body (Content-Type: application/json), got {ct}"),
            ));
        }
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid JSON body: {e} (expected {{\"site\": \"https://app.datadoghq.eu\"}})"
                ),
            )
        })?
    };
    let resp = oauth::connect(&state.oauth, &tenant, req).await?;
    Ok(axum::Json(resp).into_response())
}

async fn disconnect(
    State(state): State<AdminState>,
    tenant: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant_path(tenant)?;
    checked(&tenant)?;
    fresh(&state, &tenant).await;
    if state.tenants.get(&tenant).is_none() {
        return Err(not_found(&tenant));
    }
    let revocation = state
        .credentials
        .disconnect(&tenant)
        .await
        .map_err(|e| match e {
            CredentialError::Unknown(_) => not_found(&tenant),
            other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
        })?;
    let purged = state.queue.purge(&tenant);
    let shared_store = state.shared_store;
    if purged.items > 0 {
        tracing::warn!(tenant = %tenant, items = purged.items, bytes = purged.bytes, "queued data of a disconnected tenant discarded");
    }
    Ok(axum::Json(serde_json::json!({
        "tenant": tenant,
        "state": "disconnected",
        "revoked": revocation,
        "secrets": "deleted",
        "queued_data": {
            "action": if purged.items > 0 { "discarded" } else { "none_queued" },
            "records": purged.records,
            "items": purged.items,
            "bytes": purged.bytes,
            "note": "a disconnected tenant has no API key, so its queued data could not be delivered; it was removed from disk",
            "scope": if shared_store { "this replica's queue; the other replicas sharing the store discard theirs at their next sync (within seconds)" } else { "this relay's queue" },
        },
    }))
    .into_response())
}

/// `GET /v1/tenants/{tenant}/tags`: `{"tags": [...]}`, as stored.
async fn tags(
    State(state): State<AdminState>,
    tenant: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let entry = fresh_entry(&state, tenant).await?;
    let tags = entry.record().tags;
    Ok(axum::Json(serde_json::json!({ "tags": tags })).into_response())
}

/// `PUT /v1/tenants/{tenant}/tags`, `{"tags": [...]}`: replaces the
/// tenant's tags with the list normalised by Datadog's tag rules, or
/// answers 400 naming the tag that cannot be one (nothing is changed).
/// Answers the stored list.
async fn set_tags(
    State(state): State<AdminState>,
    tenant: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = tenant_path(tenant)?;
    checked(&tenant)?;
    let raw = tags_body(body).await?;
    let tags = crate::tags::normalize_list(&raw)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    fresh(&state, &tenant).await;
    if state.tenants.get(&tenant).is_none() {
        return Err(not_found(&tenant));
    }
    state
        .tenants
        .set_tags(&tenant, &tags)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NoTenant(_) => not_found(&tenant),
            other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
        })?;
    tracing::info!(tenant = %tenant, tags = tags.len(), "tenant tags set");
    Ok(axum::Json(serde_json::json!({ "tags": tags })).into_response())
}

/// The list of a `{"tags": [...]}` body, or a 400 saying what is wrong.
async fn tags_body(body: Body) -> Result<Vec<String>, ApiError> {
    const SHAPE: &str = r#"expected {"tags": ["key:value", ...]}"#;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_BODY} bytes; {SHAPE}"),
        )
    })?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("invalid JSON body: {e} ({SHAPE})")))?;
    let Some(list) = v.get("tags").and_then(|t| t.as_array()) else {
        return Err(bad(format!("body has no `tags` list; {SHAPE}")));
    };
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("tags[{i}] must be a string, got {t}")))
        })
        .collect()
}

/// Runs Datadog's "Test the OAuth client" checklist for the tenant and
/// answers the [`crate::verify::Report`] (200 whether or not every step passed).
async fn verify(
    State(state): State<AdminState>,
    tenant: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant_path(tenant)?;
    checked(&tenant)?;
    let verifier = crate::verify::Verifier {
        tenants: &state.tenants,
        credentials: &state.credentials,
        datadog: &state.datadog,
        config: state.config.load_full(),
    };
    let report = crate::verify::run(&verifier, &tenant)
        .await
        .ok_or_else(|| not_found(&tenant))?;
    Ok(axum::Json(report).into_response())
}

#[derive(Debug, serde::Deserialize)]
struct UsageQuery {
    /// The last this many hours, the current one included (default 24).
    hours: Option<i64>,
}

/// `GET /v1/tenants/{tenant}/usage?hours=N`: items and bytes accepted,
/// delivered and lost per kind and hour over the last `N` hours (default
/// 24, at most the retention), with totals per kind. Kept after a tenant
/// is deleted, for billing, until the retention passes.
async fn usage(
    State(state): State<AdminState>,
    tenant: Result<Path<String>, PathRejection>,
    query: Result<axum::extract::Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant_path(tenant)?;
    checked(&tenant)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let max = crate::usage::RETENTION_HOURS;
    let hours = query.map_err(|e| bad(e.body_text()))?.hours.unwrap_or(24);
    if !(1..=max).contains(&hours) {
        return Err(bad(format!(
            "hours must be 1 to {max} (the retention), got {hours}"
        )));
    }
    let ledger = state
        .usage
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "usage is not counted here"))?;
    let to = crate::usage::hour_of(crate::clock::now()) + 3600;
    let from = to - hours * 3600;
    let rows = ledger.report(&tenant, from, to).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read usage: {e}"),
        )
    })?;
    if rows.is_empty() && state.tenants.get(&tenant).is_none() {
        return Err(not_found(&tenant));
    }
    Ok(axum::Json(crate::usage::report_json(&tenant, from, to, &rows)).into_response())
}

/// The delivery view that holds a known tenant's dead letters; 404 for an
/// unknown tenant or a relay without delivery.
fn dead_letter_view<'a>(
    state: &'a AdminState,
    tenant: &str,
) -> Result<&'a Arc<dyn DeliveryView>, ApiError> {
    checked(tenant)?;
    state.tenants.get(tenant).ok_or_else(|| not_found(tenant))?;
    state
        .delivery
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no delivery pipeline"))
}

async fn dead_letters(
    State(state): State<AdminState>,
    tenant: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant_path(tenant)?;
    let d = dead_letter_view(&state, &tenant)?;
    Ok(axum::Json(d.dead_letters(&tenant)).into_response())
}

async fn dead_letter(
    State(state): State<AdminState>,
    path: Result<Path<(String, u64)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((tenant, id)) = path.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid path: {e} (expected /v1/tenants/{{tenant}}/dead_letters/{{number}})"),
        )
    })?;
    let d = dead_letter_view(&state, &tenant)?;
    let items = d.dead_letter_items(&tenant, id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("tenant {tenant} has no dead letter {id}"),
        )
    })?;
    Ok(
        axum::Json(serde_json::json!({ "tenant": tenant, "id": id, "items": items }))
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant's `delivery` keeps the key order the admin API has always
    /// answered with (alphabetical, as a `serde_json::Value` writes it),
    /// and reads back as it was written.
    #[test]
    fn delivery_figures_keep_their_key_order_and_read_back() {
        let mut f = DeliveryFigures {
            last_error: Some("Datadog answered 503".into()),
            last_error_ms: Some(5),
            dead_letters: DeadLetterTotals {
                bytes: 1,
                entries: 2,
                evicted_items: 3,
                items: 4,
            },
            accepted_items_per_s: Rates {
                one: 2.5,
                five: 0.5,
            },
            ..DeliveryFigures::default()
        };
        f.ingest_dropped
            .insert("logs".into(), BTreeMap::from([("stale".into(), 2)]));
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(text, serde_json::to_value(&f).unwrap().to_string());
        assert_eq!(serde_json::from_str::<DeliveryFigures>(&text).unwrap(), f);
    }
}
