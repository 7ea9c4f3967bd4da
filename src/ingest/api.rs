//! The Datadog-compatible ingest endpoints on `api_listen`.
//!
//! `POST /api/v2/series`, `/api/v1/series`, `/api/v1/distribution_points`,
//! `/api/v2/logs`, `/api/v1/events`, `/api/v2/events`, `/api/v1/check_run`
//! (every [`Endpoint::ALL`]), and `GET /api/v1/validate`: the tenant is the
//! `DD-Relay-Tenant` header, else the value of `DD-API-KEY` (so Datadog's
//! own clients work with the tenant id as their API key), else the
//! `api_key` query parameter. The body is decoded (bounded), validated as
//! Datadog would, and appended to the durable queue as one record; `202`
//! only once it is durable. Nothing of a rejected request is queued; what
//! Datadog would accept and drop (a stale point) is dropped and counted.
//!
//! Status codes (README.md "Sending a customer's data"): 400 bad input, 404
//! unknown tenant, 409 tenant not connected, 413 body too large, 429 tenant
//! over its queue share, 503 queue full or draining — each with `{"errors":
//! [...]}` naming what is wrong, and `Retry-After` where waiting helps.
//!
//! A logs request whose items fill half a Datadog payload is handed to
//! `pipeline::record` to be stored packed and compressed as delivery will
//! send it; this module knows no retries and no Datadog host. Accepted and
//! dropped items are counted per tenant for `usage`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::budget::Budget;
use super::validate::{Added, Dropped, Invalid, validate_with};
use crate::clock::now_ms;
use crate::codec::{self, CodecError, OverBudget};
use crate::config::{Config, QueueCompression};
use crate::pipeline::{self, record};
use crate::queue::{AppendError, NewRecord, Prepared, Queue};
use crate::site::{Encoding, Endpoint, Site};
use crate::store::TenantState;
use crate::tags::Tags;
use crate::telemetry::metrics::{
    KindLabels, KindOutcome, KindReason, Metrics, SendLabels, status_class,
};
use crate::tenant::{Tenants, validate_id};

/// The header that names the tenant.
pub(crate) const TENANT_HEADER: &str = "dd-relay-tenant";

/// Bodies expected to take at least this much memory to decode (three
/// copies, see [`expected_memory`]) are decoded and validated off the
/// async workers, within the decoding memory budget, so large batches never
/// stall the acknowledgement of small requests and a burst of them stays
/// within `server.decode_memory`. Smaller ones (a few KiB of JSON, or a
/// compressed body of under 2 KiB) are decoded where they arrive: as many
/// at once as there are async workers, each within its own limits.
pub(super) const BLOCKING_THRESHOLD: u64 = 48 * 1024;

/// What the ingest endpoints need.
#[derive(Clone)]
pub(crate) struct IngestState {
    pub(crate) tenants: Arc<Tenants>,
    pub(crate) queue: Queue,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: crate::tenant::ConfigHandle,
    /// Memory for decoding bodies at once (`server.decode_memory`).
    pub(crate) decode_memory: Arc<Budget>,
    /// Per-tenant refused requests and accepted rates.
    pub(crate) figures: Arc<super::figures::Figures>,
    /// Usage per tenant, kind and hour (`crate::usage`).
    pub(crate) usage: Arc<crate::usage::Usage>,
    /// Triggered by SIGTERM: from then on requests are refused (`503`),
    /// also on connections opened before it, while the queue drains.
    pub(crate) shutdown: crate::shutdown::Shutdown,
}

/// The tenant a request named, once the directory knew it, and its site:
/// [`answer`] counts the request under that site and in that tenant's
/// figures. Set by [`admit_as`]; a request refused before (no tenant
/// named, an unknown one) has none.
#[derive(Debug, Default)]
pub(super) struct Named(OnceLock<(String, Option<&'static Site>)>);

impl Named {
    fn set(&self, tenant: &str, site: Option<&'static Site>) {
        // The first tenant admitted is the request's.
        let _ = self.0.set((tenant.to_string(), site));
    }

    fn tenant(&self) -> Option<&str> {
        self.0.get().map(|(t, _)| t.as_str())
    }

    /// The `site` label: the tenant's site, or `none`.
    fn site_label(&self) -> &'static str {
        self.0
            .get()
            .and_then(|(_, s)| *s)
            .map_or("none", |s| s.name)
    }
}

/// An ingest failure: a status, the errors body, and maybe Retry-After.
#[derive(Debug)]
pub(crate) struct IngestError {
    pub(crate) status: StatusCode,
    pub(crate) reason: &'static str,
    pub(crate) errors: Vec<String>,
    pub(crate) retry_after: Option<Duration>,
    /// For a request refused before its body was read: how much of the
    /// body to read and throw away so the connection stays usable.
    discard_limit: u64,
    /// The body was not read to its end: the connection closes after the
    /// answer (`Connection: close` tells the client not to reuse it).
    close: bool,
}

/// The most of a refused request's body that is read and thrown away:
/// reading it off the socket is a copy, and keeps the client's connection
/// open (an unread body makes the server close the connection, and a
/// client that already sent its next request on it sees a broken
/// connection instead of an answer).
const DISCARD_LIMIT: u64 = 16 << 20;

/// How long a refused request's body may take to arrive after the answer.
const DISCARD_TIME: Duration = Duration::from_secs(30);

impl IngestError {
    pub(super) fn new(
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> IngestError {
        IngestError {
            status,
            reason,
            errors: vec![message.into()],
            retry_after: None,
            discard_limit: DISCARD_LIMIT,
            close: false,
        }
    }

    fn retry(mut self, after: Duration) -> IngestError {
        self.retry_after = Some(after);
        self
    }

    /// Answers now; the refused request's body is then read to its end
    /// and thrown away, without keeping or decoding it, on its own task
    /// (at most `discard_limit` bytes within [`DISCARD_TIME`]; beyond
    /// that the connection closes). A body declared too large is not read
    /// at all: the connection closes after the answer.
    pub(super) fn discarding(mut self, body: Body) -> IngestError {
        if self.discard_limit == 0 {
            self.close = true;
            return self;
        }
        let limit = self.discard_limit;
        tokio::spawn(async move {
            use http_body_util::BodyExt as _;
            let mut body = body;
            let mut seen = 0u64;
            let drain = async {
                while let Some(Ok(frame)) = body.frame().await {
                    seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if seen > limit {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
        });
        self
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(serde_json::json!({ "errors": self.errors })),
        )
            .into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.close {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// The ingest routes.
pub(crate) fn router(state: IngestState) -> Router {
    let mut r = Router::new();
    for endpoint in Endpoint::ALL {
        r = r.route(
            endpoint.path(),
            post(
                move |s: State<IngestState>, q: RawQuery, h: HeaderMap, b: Body| {
                    handle(endpoint, s, q, h, b)
                },
            ),
        );
    }
    r = r.route("/api/v1/validate", axum::routing::get(validate_key));
    r.merge(super::traces::routes()).with_state(state)
}

async fn handle(
    endpoint: Endpoint,
    State(state): State<IngestState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let named = Named::default();
    let result = ingest(endpoint, &state, query.as_deref(), &headers, body, &named).await;
    let body = match &result {
        // v2 series answer `{"errors": [...]}` with their 202: what was
        // dropped goes there, as Datadog's model has room for it.
        Ok(notes) if endpoint == Endpoint::SeriesV2 && !notes.is_empty() => {
            serde_json::json!({ "errors": notes }).to_string()
        }
        _ => success_body(endpoint).to_string(),
    };
    let ok = (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    answer(&state, endpoint, started, &named, result.map(drop), ok)
}

/// Counts an ingest request (requests by site and status class, the
/// acknowledgement time, refusals by reason and in the named tenant's
/// figures) and gives its answer: `ok`, or the error.
pub(super) fn answer(
    state: &IngestState,
    endpoint: Endpoint,
    started: Instant,
    named: &Named,
    result: Result<(), IngestError>,
    ok: Response,
) -> Response {
    let kind = endpoint.name();
    let status = result.as_ref().map_or_else(|e| e.status, |()| ok.status());
    let m = &state.metrics;
    m.ingest_requests
        .get_or_create(&SendLabels {
            kind,
            site: named.site_label(),
            status_class: status_class(status.as_u16()),
        })
        .inc();
    if let (Err(_), Some(tenant)) = (&result, named.tenant()) {
        state.figures.refused(tenant);
    }
    match result {
        Ok(()) => {
            m.ingest_ack_seconds
                .get_or_create(&KindLabels { kind })
                .observe(started.elapsed().as_secs_f64());
            ok
        }
        Err(e) => {
            m.ingest_rejections
                .get_or_create(&KindReason {
                    kind,
                    reason: e.reason,
                })
                .inc();
            e.into_response()
        }
    }
}

/// Datadog's own success bodies, so clients parse them as they would Datadog's.
fn success_body(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::SeriesV2 => r#"{"errors":[]}"#,
        Endpoint::Logs => "{}",
        Endpoint::SeriesV1 | Endpoint::Events | Endpoint::CheckRun | Endpoint::Distribution => {
            r#"{"status":"ok"}"#
        }
        // `EventCreateResponsePayload`: every field optional.
        Endpoint::EventsV2 => r#"{"data":{"type":"event","attributes":{}}}"#,
        // Answered by the trace API (`ingest/traces`).
        Endpoint::Traces | Endpoint::TraceStats | Endpoint::ClientStats => "{}",
    }
}

/// Which tenant a request names. The header naming it must appear once: a
/// proxy in front that reads the last copy while we read the first could
/// otherwise be made to disagree with us about whose data this is.
/// The tenant a request names: `DD-Relay-Tenant`, else `DD-API-KEY`, else
/// the `api_key` query parameter (Datadog's v1 endpoints accept the key
/// there, and some clients put it there).
pub(crate) fn tenant_named(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<String, IngestError> {
    if headers.contains_key(TENANT_HEADER) || headers.contains_key("dd-api-key") {
        return tenant_of(headers);
    }
    let from_query = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "api_key")
            .map(|(_, v)| v.into_owned())
    });
    match from_query {
        Some(id) => checked_id(id),
        None => tenant_of(headers),
    }
}

/// `GET /api/v1/validate`, as Datadog answers it for the named tenant:
/// `200 {"valid": true}` when the relay takes its data (connected, or held
/// for a reconnect), else `403 {"errors": ["Forbidden"]}`.
async fn validate_key(
    State(state): State<IngestState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let known = match tenant_named(&headers, query.as_deref()) {
        Ok(id) => state.tenants.recheck(&id).await.is_some_and(|e| {
            matches!(
                e.state(),
                TenantState::Connected | TenantState::ReauthRequired
            )
        }),
        Err(_) => false,
    };
    if known {
        axum::Json(serde_json::json!({ "valid": true })).into_response()
    } else {
        (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({ "errors": ["Forbidden"] })),
        )
            .into_response()
    }
}

/// The tenant named by a header (`DD-Relay-Tenant`, else `DD-API-KEY`).
pub(crate) fn tenant_of(headers: &HeaderMap) -> Result<String, IngestError> {
    let name = if headers.contains_key(TENANT_HEADER) {
        TENANT_HEADER
    } else {
        "dd-api-key"
    };
    let mut values = headers.get_all(name).iter();
    let raw = values.next().ok_or_else(|| {
        IngestError::new(
            StatusCode::BAD_REQUEST,
            "no_tenant",
            "missing DD-Relay-Tenant header (or DD-API-KEY holding the tenant id)",
        )
    })?;
    if values.next().is_some() {
        return Err(IngestError::new(
            StatusCode::BAD_REQUEST,
            "bad_tenant",
            format!("more than one {name} header; name the tenant once"),
        ));
    }
    let id = raw
        .to_str()
        .map_err(|_| {
            IngestError::new(
                StatusCode::BAD_REQUEST,
                "bad_tenant",
                "the tenant header is not ASCII",
            )
        })?
        .trim()
        .to_string();
    checked_id(id)
}

/// The request's `Content-Encoding` (none is identity), or `400`.
pub(super) fn content_encoding(headers: &HeaderMap) -> Result<Encoding, IngestError> {
    match headers.get(header::CONTENT_ENCODING) {
        None => Ok(Encoding::Identity),
        Some(v) => v.to_str().ok().and_then(Encoding::from_header).ok_or_else(|| {
            IngestError::new(
                StatusCode::BAD_REQUEST,
                "bad_encoding",
                format!("unsupported Content-Encoding {v:?}; expected gzip, deflate, zstd, zstd1 or identity"),
            )
        }),
    }
}

/// The whole body, at most `max` bytes (`server.max_body`), or `413`.
pub(super) async fn read_body(body: Body, max: u64) -> Result<Bytes, IngestError> {
    axum::body::to_bytes(body, max as usize).await.map_err(|_| {
        IngestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body is larger than {max} bytes (server.max_body)"),
        )
    })
}

/// `id` if it is a valid tenant id, else `400 bad_tenant` saying why.
pub(super) fn checked_id(id: String) -> Result<String, IngestError> {
    validate_id(&id).map_err(|e| {
        IngestError::new(
            StatusCode::BAD_REQUEST,
            "bad_tenant",
            format!("invalid tenant id: {e}"),
        )
    })?;
    Ok(id)
}

/// What the headers decided: the request may be read.
pub(super) struct Admitted {
    pub(crate) tenant: String,
    /// The tenant's connection generation when it was checked.
    pub(crate) generation: u32,
    /// The tenant's tags when it was checked: added to every item of the
    /// request (`None`: it has none, nothing is added).
    pub(crate) tags: Option<Arc<Tags>>,
    pub(crate) encoding: Encoding,
    pub(crate) config: Arc<crate::config::Config>,
}

async fn ingest(
    endpoint: Endpoint,
    state: &IngestState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    named: &Named,
) -> Result<Vec<String>, IngestError> {
    let tenant = match tenant_named(headers, query) {
        Ok(t) => t,
        Err(refused) => return Err(refused.discarding(body)),
    };
    match admit_as(state, tenant, headers, named).await {
        Ok(admitted) => accept(endpoint, state, admitted, body).await,
        Err(refused) => Err(refused.discarding(body)),
    }
}

/// Queues `body` (plain JSON of `endpoint`) for `tenant` as the relay's
/// own request, through everything a partner's request goes through
/// (admission, validation, the tenant's tags, the durable append); for
/// [`super::test_event`].
pub(crate) async fn queue_own(
    state: &IngestState,
    endpoint: Endpoint,
    tenant: &str,
    body: Vec<u8>,
) -> Result<(), IngestError> {
    let named = Named::default();
    let headers = HeaderMap::new();
    let admitted = admit_as(state, tenant.to_string(), &headers, &named).await?;
    accept(endpoint, state, admitted, Body::from(body))
        .await
        .map(drop)
}

/// Everything decided from the headers alone, before the body is read:
/// the tenant and its state, the encoding, a declared body over the limit,
/// a tenant at its quota, a full queue. Overload then costs a header's
/// worth of work, not a read, decompression and validation of a body that
/// is thrown away.
/// `tenant` is the one the request names ([`tenant_named`], or for the
/// trace API perhaps a span tag); once the directory knows it, `named`
/// says so.
pub(super) async fn admit_as(
    state: &IngestState,
    tenant: String,
    headers: &HeaderMap,
    named: &Named,
) -> Result<Admitted, IngestError> {
    if state.shutdown.is_triggered() {
        return Err(append_error(&tenant, AppendError::Closed));
    }
    let admitted = |e: &crate::tenant::Entry| {
        matches!(
            e.state(),
            TenantState::Connected | TenantState::ReauthRequired
        )
    };
    let entry = match state.tenants.get(&tenant) {
        Some(e) if admitted(&e) => Some(e),
        // Connected on another replica since the last sync?
        _ => state.tenants.recheck(&tenant).await,
    };
    let entry = entry.ok_or_else(|| IngestError::new(StatusCode::NOT_FOUND, "unknown_tenant", format!("tenant {tenant} does not exist; connect it first (POST /v1/tenants/{tenant}/connect)")))?;
    named.set(&tenant, entry.site());
    match entry.state() {
        TenantState::Connected | TenantState::ReauthRequired => {}
        state @ (TenantState::Pending | TenantState::Disconnected) => {
            return Err(IngestError::new(
                StatusCode::CONFLICT,
                "not_connected",
                format!(
                    "tenant {tenant} is {state}: its Datadog account is not connected, so its data cannot be accepted"
                ),
            ));
        }
    }
    // The connection the request is accepted for, taken now: a DELETE or a
    // reconnect to another org while the body is still arriving moves the
    // tenant to a later generation, and delivery discards this record.
    let generation = entry.generation();
    let tags = entry.tags();
    let encoding = content_encoding(headers)?;
    let config = state.config.load_full();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.server.max_body) {
        let mut e = IngestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "request body is larger than {} bytes (server.max_body)",
                config.server.max_body
            ),
        );
        // Not read: the connection closes after the answer.
        e.discard_limit = 0;
        return Err(e);
    }
    if let Err(e) = state.queue.admits(&tenant) {
        return Err(append_error(&tenant, e));
    }
    Ok(Admitted {
        tenant,
        generation,
        tags,
        encoding,
        config,
    })
}

/// Reads, decodes, validates and queues an admitted request; returns what
/// was dropped or cut, worded (`Validated::notes`).
async fn accept(
    endpoint: Endpoint,
    state: &IngestState,
    admitted: Admitted,
    body: Body,
) -> Result<Vec<String>, IngestError> {
    let kind = endpoint.name();
    let Admitted {
        tenant,
        generation,
        tags,
        encoding,
        config,
    } = admitted;
    let additions = Additions {
        tags,
        source: config.integration.source.clone(),
    };
    let owner = Owner {
        generation,
        tenant: &tenant,
    };
    let wire = read_body(body, config.server.max_body).await?;
    let limit = config.server.max_decompressed_body as usize;
    let at_rest = AtRest::new(&config, endpoint);
    let now = now_ms();
    let job = Decode {
        endpoint,
        encoding,
        limit,
        now,
        owner,
        at_rest,
        additions,
    };
    let decoded = if expected_memory(encoding, wire.len(), limit) >= BLOCKING_THRESHOLD {
        // Large bodies decode on the blocking pool, within the decoding
        // memory budget (small ones, on the async workers, are as many at
        // once as there are workers).
        let (tenant, generation) = (tenant.clone(), owner.generation);
        let mut held = state.decode_memory.hold();
        tokio::task::spawn_blocking(move || {
            let job = Decode {
                owner: Owner {
                    tenant: &tenant,
                    generation,
                },
                ..job
            };
            let expected = expected_memory(encoding, wire.len(), limit);
            if let Err(over) = held.reserve(expected, DECODE_MEMORY_WAIT) {
                return Err((busy(over.0), wire.len()));
            }
            let mut left = expected;
            let mut grow = |n: usize| {
                let n = n as u64;
                held.grow(n.saturating_sub(left));
                left = left.saturating_sub(n);
                Ok(())
            };
            decode_and_prepare(job, &wire, &mut grow)
        })
        .await
        .map_err(|_| {
            IngestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "validation task failed",
            )
        })?
    } else {
        decode_and_prepare(job, &wire, &mut |_| Ok(()))
    };
    let outcome = |outcome: &'static str| KindOutcome { kind, outcome };
    let accepted = match decoded {
        Ok(a) => a,
        Err((e, body_len)) => {
            state
                .metrics
                .ingest_bytes
                .get_or_create(&outcome("rejected"))
                .inc_by(body_len as u64);
            return Err(e);
        }
    };
    let Accepted {
        record,
        items,
        body_len,
        dropped,
        notes,
    } = accepted;
    // Everything was dropped (stale, say): nothing to queue.
    let appended = match record {
        Some(record) => state.queue.append_prepared(vec![record]).await.map(drop),
        None => Ok(()),
    };
    match appended {
        Ok(()) => {
            let m = &state.metrics;
            m.ingest_items
                .get_or_create(&outcome("accepted"))
                .inc_by(u64::from(items));
            m.ingest_bytes
                .get_or_create(&outcome("accepted"))
                .inc_by(body_len as u64);
            state.figures.accepted(&tenant, u64::from(items));
            state.usage.count(&tenant, endpoint, |c| {
                c.accepted_items += u64::from(items);
                c.accepted_bytes += body_len as u64;
            });
            count_dropped(state, endpoint, &tenant, dropped);
            Ok(notes)
        }
        Err(e) => {
            state
                .metrics
                .ingest_items
                .get_or_create(&outcome("rejected"))
                .inc_by(u64::from(items));
            Err(append_error(&tenant, e))
        }
    }
}

/// The answer to a refused append.
pub(super) fn append_error(tenant: &str, e: AppendError) -> IngestError {
    match e {
        AppendError::TenantFull { tenant_bytes, limit, retry_after } => IngestError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "tenant_queue_full",
            format!("tenant {tenant} has {tenant_bytes} bytes queued, its share is {limit} (queue.tenant_max_bytes); retry later"),
        )
        .retry(retry_after),
        AppendError::DiskFull { retry_after } => {
            IngestError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_full", "the relay's queue is full (queue.max_bytes); retry later").retry(retry_after)
        }
        AppendError::TooLarge { len, limit } => {
            IngestError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("request is {len} bytes once normalised; the queue accepts at most {limit}"))
        }
        AppendError::Closed => IngestError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", "the relay is shutting down; retry against another replica or later")
            .retry(Duration::from_secs(5)),
        AppendError::Io(err) => {
            tracing::error!(tenant = %tenant, error = %err, "queue write failed");
            IngestError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_error", "the relay could not store the request; retry later").retry(Duration::from_secs(5))
        }
    }
}

/// A request decoded, validated and encoded as a queue record.
struct Accepted {
    /// `None` when no item is left to queue.
    record: Option<Prepared>,
    items: u32,
    /// The decoded body's length, for the byte counters.
    body_len: usize,
    dropped: Dropped,
    notes: Vec<String>,
}

/// Counts what a request lost to Datadog's own treatment, per kind and
/// reason in the metrics and per tenant in its admin figures.
fn count_dropped(state: &IngestState, endpoint: Endpoint, tenant: &str, dropped: Dropped) {
    if dropped == Dropped::default() {
        return;
    }
    let kind = endpoint.name();
    for (reason, n) in dropped.by_reason() {
        if n > 0 {
            state
                .metrics
                .ingest_dropped
                .get_or_create(&KindReason { kind, reason })
                .inc_by(u64::from(n));
        }
    }
    if let Some(entry) = state.tenants.get(tenant) {
        entry.dropped.add(endpoint, dropped.by_reason());
    }
    // Cut logs were delivered, not dropped.
    let lost = u64::from(dropped.stale) + u64::from(dropped.oversized);
    state
        .usage
        .count(tenant, endpoint, |c| c.dropped_items += lost);
    tracing::debug!(
        tenant,
        kind,
        ?dropped,
        "accepted with items dropped as Datadog drops them"
    );
}

/// One body to decode: what it is, for whom, and how to store it.
#[derive(Debug, Clone)]
struct Decode<'a> {
    endpoint: Endpoint,
    encoding: Encoding,
    /// `server.max_decompressed_body`.
    limit: usize,
    now: i64,
    owner: Owner<'a>,
    at_rest: AtRest,
    additions: Additions,
}

/// What is added to every item kept (`validate::Added`): the tenant's
/// tags and `[integration] source`. Owned, so that a large body takes it
/// to the blocking pool.
#[derive(Debug, Clone, Default)]
pub(super) struct Additions {
    pub(crate) tags: Option<Arc<Tags>>,
    pub(crate) source: Option<String>,
}

impl Additions {
    fn added(&self) -> Added<'_> {
        Added {
            tags: self.tags.as_deref(),
            source: self.source.as_deref(),
        }
    }
}

/// What decoding a body is expected to hold at its peak: the decoded body,
/// its validated copy and the record made of it. A compressed body is
/// expected to inflate tenfold (JSON telemetry does, give or take); one
/// that inflates more grows past its reservation (`budget::Held::grow`).
pub(super) fn expected_memory(encoding: Encoding, wire: usize, limit: usize) -> u64 {
    let decoded = match encoding {
        Encoding::Identity => wire,
        _ => wire.saturating_mul(10).min(limit),
    };
    3 * decoded as u64
}

/// How long a large body waits for decoding memory before it is refused.
pub(super) const DECODE_MEMORY_WAIT: Duration = Duration::from_secs(2);

/// The answer when decoding memory (`server.decode_memory`) is exhausted.
pub(super) fn busy(why: String) -> IngestError {
    IngestError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", why).retry(Duration::from_secs(1))
}

/// Whose record it is: the tenant and its connection generation
/// (`store::Tenant::generation`) when the request arrived.
#[derive(Debug, Clone, Copy)]
struct Owner<'a> {
    tenant: &'a str,
    generation: u32,
}

/// How a request's items are stored in the queue.
#[derive(Debug, Clone, Copy)]
struct AtRest {
    /// LZ4-compress records (where it saves an eighth).
    lz4: bool,
    /// Store a request that fills a payload as that payload, compressed
    /// as it will be sent (`pipeline::record`): encoding and level.
    ready: Option<(Encoding, i32)>,
}

impl AtRest {
    /// `queue.compression = "none"` stores items as received (the way
    /// back to builds that read neither LZ4 nor ready records).
    fn new(config: &Config, endpoint: Endpoint) -> AtRest {
        let compress = config.queue.compression == QueueCompression::Lz4;
        let encoding = pipeline::send::encoding_for(endpoint, config);
        AtRest {
            lz4: compress,
            ready: (compress && record::packs_at_ingest(endpoint))
                .then_some((encoding, config.delivery.compression_level)),
        }
    }
}

/// Decodes, validates and encodes (compressed as `at_rest` says) one
/// request body: the CPU work of an ingest request, done in one place so
/// that a large body does all of it off the async workers.
fn decode_and_prepare(
    job: Decode<'_>,
    wire: &Bytes,
    grow: &mut dyn FnMut(usize) -> Result<(), OverBudget>,
) -> Result<Accepted, (IngestError, usize)> {
    let Decode {
        endpoint,
        encoding,
        limit,
        now,
        owner,
        at_rest,
        additions,
    } = job;
    let body = codec::decompress_with(encoding, wire, limit, grow).map_err(|e| {
        let err = match e {
            CodecError::TooLarge { limit } => IngestError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body decompresses to more than {limit} bytes (server.max_decompressed_body)"),
            ),
            CodecError::Corrupt { .. } => IngestError::new(StatusCode::BAD_REQUEST, "bad_encoding", e.to_string()),
            CodecError::Budget(why) => busy(why),
        };
        (err, wire.len())
    })?;
    let body_len = body.len();
    // The validated copy and the record made of it (at most as large).
    grow(2 * body_len).map_err(|over| (busy(over.0), body_len))?;
    let validated = validate_with(endpoint, &body, now, &additions.added())
        .map_err(|e| (invalid_to_error(endpoint, e), body_len))?;
    if validated.items == 0 {
        return Ok(Accepted {
            record: None,
            items: 0,
            body_len,
            dropped: validated.dropped,
            notes: validated.notes,
        });
    }
    // A request that is already the payload (its body exactly the items,
    // compressed as they are sent) is stored as the client compressed it.
    let sent = record::AsSent {
        encoding,
        wire,
        body: &body,
    };
    let ready = at_rest.ready.and_then(|(at_rest, level)| {
        record::pack_ready_as_sent(endpoint, at_rest, level, &validated.payload, Some(sent))
    });
    drop(body);
    let (payload, lz4) = match &ready {
        Some(ready) => (&ready[..], false),
        None => (&validated.payload[..], at_rest.lz4),
    };
    let record = NewRecord {
        tenant: owner.tenant,
        generation: owner.generation,
        stream: endpoint.code(),
        items: validated.items,
        created_ms: now,
        oldest_ms: validated.oldest_ms,
        newest_ms: validated.newest_ms,
        payload,
    };
    match Prepared::new(&record, lz4) {
        Ok(record) => Ok(Accepted {
            record: Some(record),
            items: validated.items,
            body_len,
            dropped: validated.dropped,
            notes: validated.notes,
        }),
        Err(e) => Err((append_error(owner.tenant, e), body_len)),
    }
}

fn invalid_to_error(endpoint: Endpoint, invalid: Invalid) -> IngestError {
    match invalid {
        Invalid::Body(message) => IngestError::new(StatusCode::BAD_REQUEST, "bad_body", message),
        items @ Invalid::Items { .. } => IngestError {
            errors: items.messages(),
            ..IngestError::new(StatusCode::BAD_REQUEST, "bad_items", "")
        },
        Invalid::TooManyItems { items, limit } => IngestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_items",
            format!(
                "{items} {} items in one request; Datadog accepts at most {limit} per request",
                endpoint.name()
            ),
        ),
        Invalid::ItemTooLarge { index, size, limit } => IngestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "item_too_large",
            format!(
                "item {index} is {size} bytes; Datadog accepts at most {limit} bytes per {} item",
                endpoint.name()
            ),
        ),
    }
}
