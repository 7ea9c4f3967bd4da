//! The pull-side proxy: `/v1/tenants/{tenant}/datadog/{path}` on
//! `api_listen`. Any method, query and body is forwarded to
//! `https://api.<tenant's domain>/{path}` with the tenant's OAuth access
//! token as `Authorization: Bearer` (docs/datadog.md "Calling Datadog's API
//! with the access token"), and Datadog's answer (status, headers such as
//! `X-RateLimit-*`, body) is streamed back. The partner's backend never
//! touches a token or a region.
//!
//! What it owns:
//! - **Authentication**: `Authorization: Bearer <proxy.token>`, or the admin
//!   token when `proxy.token` is unset (constant time, current config).
//! - **Path policy** ([`check_path`]): the path after `datadog/` is taken
//!   from the raw request line, never a decoded copy. It must be canonical
//!   (pchar bytes only, no `;` or `\`, no empty or dot segment, no
//!   percent-encoded `/`, `\`, `%`, control or unreserved byte, so `%2e%2e`
//!   and `%2F` are refused) → 400; then it must start with one of
//!   `proxy.allowed_prefixes` (default `api/`) → else 403. The URL is built
//!   by `site.rs` and checked again: https, the tenant's API host, no port,
//!   the path unchanged. `Host`, absolute-form targets and `@` cannot
//!   change the destination.
//! - **Header hygiene**: request headers are an allow-list
//!   ([`FORWARDED_HEADERS`] + `Accept-Encoding` limited to codings ddrelay can
//!   decode + `User-Agent` suffixed with ddrelay's). `Authorization`,
//!   `DD-API-KEY`, `DD-APPLICATION-KEY`, `Cookie`, `Host`, hop-by-hop and
//!   everything else are dropped, and so are the `api_key` and
//!   `application_key` query parameters. Response headers lose hop-by-hop
//!   headers, `Set-Cookie`, `Authorization`, `WWW-Authenticate`, `Alt-Svc`,
//!   HSTS, any `DD-Relay-*` and any header whose value contains the token.
//!   `TRACE` (which echoes request headers) and `CONNECT` are refused.
//! - **Refresh and one retry**: [`Credentials::with_token`] owns the policy
//!   (the token refreshed single-flight and ahead of expiry; on a 401 or
//!   403 from Datadog refreshed once, forced, and the request sent once
//!   more: the body is buffered for this). A 401/403
//!   that remains is returned with Datadog's status, its headers and its
//!   body extended with an explanation (see below). A token fresh from a
//!   forced refresh that Datadog refused is not refreshed again for a
//!   minute: its next refusals are explained at once (no refresh-token churn
//!   when a caller polls an endpoint the grant does not cover).
//! - **Limits** (`[proxy]`): `max_request_body` (413 before Datadog is
//!   contacted), `max_response_body` (see below), `timeout` per attempt
//!   (headers and body; 504 when no answer came), `tenant_concurrency`
//!   (requests in flight per tenant, streaming included; over it: 429 with
//!   `Retry-After: 1` at once, no queueing), `tenant_requests_per_second`
//!   (0 = unlimited; 429 with `Retry-After`). Datadog's own 429 is passed
//!   through untouched with its `X-RateLimit-*` and `Retry-After` headers.
//!   `proxy_requests` counts every answer by status class.
//!
//! **Response size.** Bodies stream (`bytes_stream` → `Body::from_stream`);
//! at most the first 64 KiB of an answer (and a whole 401/403 body, at most
//! 64 KiB) is held in memory. Bytes are counted as they come from Datadog
//! (compressed when Datadog compresses). An answer is refused with 502
//! `{"errors":[..max_response_body..]}` before anything is sent when its
//! `Content-Length` exceeds `max_response_body`, or when it passes the limit
//! within its first 64 KiB. A longer answer without a length is cut when it
//! passes the limit: the connection is closed without completing the
//! response (no final chunk), so the client sees a transfer error (possibly
//! before the status line), never a short body that looks complete.
//!
//! **Explanations.** Every answer carries `DD-Relay-Origin: datadog` (Datadog
//! answered) or `relay` (ddrelay answered itself, body
//! `{"errors":["..."]}`). A 401/403 that survives the refresh and retry, or
//! whose refresh failed, keeps Datadog's status and gets
//! `DD-Relay-Explanation: <cause>`, `DD-Relay-Tenant-State: <state>` and a
//! JSON body: Datadog's JSON object with a `ddrelay` member added (other
//! bodies become `{"errors":[<Datadog's text>]}` first):
//! `{"errors":["Forbidden"],"ddrelay":{"cause":..,"explanation":..,"tenant":..,
//! "tenant_state":..,"granted_scopes":[..],"required_scope":..,"retried_with_fresh_token":bool}}`.
//! Causes: `missing_scope_or_permission` (a freshly refreshed token was
//! refused too: the client lacks the endpoint's scope, or the authorizing
//! user lacks the permission; `retried_with_fresh_token` is false when that
//! token was refreshed for an earlier request; `required_scope` names the
//! endpoint's scope when `proxy/scopes.rs` records it, e.g. `incident_write`
//! for `POST api/v2/incidents`, and the explanation says whether the grant
//! lacks it, so the customer must connect again once the client has it, or
//! has it, so the user's permission is missing; else it is null), `grant_revoked` (the refresh itself failed
//! with `invalid_grant`: the tenant is now `reauth_required`),
//! `token_refresh_failed` (the refresh failed for another reason). When a
//! tenant's token cannot be had *before* asking Datadog, ddrelay answers
//! itself: 409 (must reconnect, same `ddrelay` member), 503 (refresh
//! unavailable, `Retry-After`) or 502 (our client credentials refused).
//!
//! What it must not know: the queue, the pipeline, ingest, OAuth flows or
//! any Datadog hostname (URLs come from `site.rs`, tokens from `tenant.rs`,
//! the HTTP client from `datadog.rs`).

mod scopes;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures_util::StreamExt as _;
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use crate::admin::authorized;
use crate::codec;
use crate::config::ProxyConfig;
use crate::credentials::{Authorized, CredentialError, Credentials};
use crate::datadog::{USER_AGENT, describe};
use crate::secret::Secret;
use crate::site::{Encoding, HostKind, Site};
use crate::store::TenantState;
use crate::telemetry::metrics::{Metrics, StatusClass, status_class};
use crate::tenant::{ConfigHandle, Entry, IdError, Tenants, validate_id};
use crate::text::clip;

/// Where the proxy's routes start; the tenant id and `datadog/` follow.
const ROUTE_PREFIX: &str = "/v1/tenants/";

/// Datadog's 401/403 bodies are a few bytes (`{"errors":["Forbidden"]}`,
/// docs/datadog.md "Calling Datadog's API with the access token"); at most
/// this much is read to explain one.
const AUTH_BODY_MAX: usize = 64 * 1024;

/// `Retry-After` when the tenant already has `tenant_concurrency` requests
/// in flight.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `Retry-After` when the token refresh could not reach Datadog.
const REFRESH_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Request headers forwarded as they are. Everything else is dropped.
pub const FORWARDED_HEADERS: [HeaderName; 7] = [
    header::ACCEPT,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// Content codings a client may ask Datadog for: the ones `codec.rs` can
/// decode, so an explained 401/403 body can always be read.
const ACCEPTED_CODINGS: [&str; 5] = ["gzip", "x-gzip", "deflate", "zstd", "identity"];

/// Response headers never returned: hop-by-hop (RFC 9110 §7.6.1), cookies,
/// credentials, and what only makes sense for Datadog's own host.
const DROPPED_RESPONSE_HEADERS: [&str; 15] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "set-cookie",
    "set-cookie2",
    "authorization",
    "www-authenticate",
    "alt-svc",
    "strict-transport-security",
];

/// Names the answer's author: `datadog` or `relay`.
pub const ORIGIN_HEADER: &str = "dd-relay-origin";
/// The cause of a 401/403 ddrelay explains.
pub const EXPLANATION_HEADER: &str = "dd-relay-explanation";
/// The tenant's state after an explained 401/403.
pub const TENANT_STATE_HEADER: &str = "dd-relay-tenant-state";

/// Why the proxy answered itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "missing or wrong token (Authorization: Bearer <proxy.token>, or <server.admin_token> when proxy.token is not set)"
    )]
    Unauthorized,
    #[error("method {0} is not forwarded (GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS are)")]
    Method(Method),
    #[error("invalid tenant id: {0}")]
    BadTenant(IdError),
    #[error("tenant {0} does not exist")]
    UnknownTenant(String),
    #[error("tenant {tenant} is {state}{}; connect it first", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    NotConnected {
        tenant: String,
        state: TenantState,
        reason: Option<String>,
    },
    #[error("invalid path `{path}`: {why}")]
    BadPath { path: String, why: String },
    #[error(
        "path `{path}` is not forwarded: only paths starting with {allowed} are (proxy.allowed_prefixes)"
    )]
    PathNotAllowed { path: String, allowed: String },
    #[error("request body is larger than {limit} bytes (proxy.max_request_body)")]
    BodyTooLarge { limit: u64 },
    #[error("cannot read the request body: {0}")]
    BodyRead(String),
    #[error(
        "tenant {tenant} already has {limit} proxied requests in flight (proxy.tenant_concurrency); retry shortly"
    )]
    Busy { tenant: String, limit: usize },
    #[error(
        "tenant {tenant} is over {rate} proxied requests per second (proxy.tenant_requests_per_second)"
    )]
    RateLimited {
        tenant: String,
        rate: f64,
        retry_after: Duration,
    },
    #[error("no access token for this request: {error}")]
    Credentials {
        error: CredentialError,
        tenant_state: TenantState,
        granted_scopes: Vec<String>,
    },
    #[error("Datadog did not answer within {} (proxy.timeout)", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("cannot reach Datadog: {0}")]
    Upstream(String),
    /// The tenant's site was taken off `datadog.allowed_sites`.
    #[error("{0}")]
    SiteNotAllowed(String),
    #[error(
        "Datadog's response is larger than {limit} bytes (proxy.max_response_body); narrow the query (paging, filters)"
    )]
    ResponseTooLarge { limit: u64 },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BadTenant(_) | ProxyError::BadPath { .. } | ProxyError::BodyRead(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::PathNotAllowed { .. } | ProxyError::SiteNotAllowed(_) => {
                StatusCode::FORBIDDEN
            }
            ProxyError::UnknownTenant(_) => StatusCode::NOT_FOUND,
            ProxyError::NotConnected { .. } => StatusCode::CONFLICT,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Busy { .. } | ProxyError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ProxyError::Credentials { error, .. } => match error {
                CredentialError::Unknown(_) => StatusCode::NOT_FOUND,
                CredentialError::Refresh { error, .. } if error.is_client_error() => {
                    StatusCode::BAD_GATEWAY
                }
                e if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::CONFLICT,
            },
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) | ProxyError::ResponseTooLarge { .. } => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ProxyError::Busy { .. } => Some(BUSY_RETRY_AFTER),
            ProxyError::RateLimited { retry_after, .. } => Some(*retry_after),
            ProxyError::Credentials { error, .. } if error.is_transient() => {
                Some(REFRESH_RETRY_AFTER)
            }
            _ => None,
        }
    }

    /// The `ddrelay` member for a tenant that must reconnect.
    fn explanation(&self) -> Option<(Cause, Value)> {
        let ProxyError::Credentials {
            error: error @ CredentialError::Refresh { tenant, .. },
            tenant_state,
            granted_scopes,
        } = self
        else {
            return None;
        };
        let why = Why {
            cause: Cause::of_refresh_failure(error),
            retried: false,
            detail: error.to_string(),
            required_scope: None,
        };
        Some((why.cause, why.body(tenant, *tenant_state, granted_scopes)))
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = json!({ "errors": [self.to_string()] });
        let explained = self.explanation();
        if let Some((_, member)) = &explained {
            body["ddrelay"] = member.clone();
        }
        let mut r = (status, axum::Json(body)).into_response();
        let h = r.headers_mut();
        h.insert(ORIGIN_HEADER, HeaderValue::from_static("relay"));
        if let Some(after) = self.retry_after()
            && let Ok(v) = HeaderValue::from_str(&after.as_secs_f64().ceil().max(1.0).to_string())
        {
            h.insert(header::RETRY_AFTER, v);
        }
        if let Some((cause, member)) = &explained {
            h.insert(EXPLANATION_HEADER, HeaderValue::from_static(cause.code()));
            if let Some(v) = member["tenant_state"]
                .as_str()
                .and_then(|s| HeaderValue::from_str(s).ok())
            {
                h.insert(TENANT_STATE_HEADER, v);
            }
        }
        match self {
            ProxyError::Unauthorized => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ProxyError::Method(_) => {
                h.insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                );
            }
            _ => {}
        }
        r
    }
}

/// What a 401/403 from Datadog most likely means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A freshly refreshed token was refused too.
    ScopeOrPermission,
    /// The refresh failed with `invalid_grant`: the customer revoked access.
    GrantRevoked,
    /// The refresh failed for another reason.
    RefreshFailed,
}

impl Cause {
    pub fn code(self) -> &'static str {
        match self {
            Cause::ScopeOrPermission => "missing_scope_or_permission",
            Cause::GrantRevoked => "grant_revoked",
            Cause::RefreshFailed => "token_refresh_failed",
        }
    }

    fn of_refresh_failure(e: &CredentialError) -> Cause {
        match e {
            CredentialError::Refresh { error, .. } if error.is_grant_revoked() => {
                Cause::GrantRevoked
            }
            _ => Cause::RefreshFailed,
        }
    }
}

/// Why a 401/403 is explained: its cause and what ddrelay knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Why {
    cause: Cause,
    /// A token fresh from a forced refresh was refused too.
    retried: bool,
    /// The refresh failure, when the refresh failed.
    detail: String,
    /// The scope the endpoint needs, when `proxy/scopes.rs` records it.
    required_scope: Option<&'static str>,
}

impl Why {
    fn explanation(&self, scopes: &[String]) -> String {
        let detail = &self.detail;
        match self.cause {
            Cause::ScopeOrPermission => scope_or_permission(self.required_scope, scopes),
            Cause::GrantRevoked => format!(
                "Datadog refused the tenant's refresh token ({detail}): the customer revoked the integration's access or \
uninstalled it. The tenant is now reauth_required; the customer must connect again from the Datadog integration tile."
            ),
            Cause::RefreshFailed => format!(
                "Datadog refused the access token and ddrelay could not refresh it ({detail}). Retry later; if it \
persists, check the relay's OAuth client credentials and the tenant's state."
            ),
        }
    }

    fn body(&self, tenant: &str, state: TenantState, scopes: &[String]) -> Value {
        json!({
            "cause": self.cause.code(),
            "explanation": self.explanation(scopes),
            "tenant": tenant,
            "tenant_state": state.as_str(),
            "granted_scopes": scopes,
            "required_scope": self.required_scope,
            "retried_with_fresh_token": self.retried,
        })
    }
}

/// A valid token refused: the scope the endpoint needs is named when
/// `proxy/scopes.rs` knows it, and said to be missing from the grant or,
/// when the grant has it, the user's permission is the likely cause.
fn scope_or_permission(required: Option<&str>, scopes: &[String]) -> String {
    const VALID: &str = "Datadog refused this request even with a freshly refreshed access token, so the token itself is valid.";
    let granted = if scopes.is_empty() {
        "unknown".to_string()
    } else {
        scopes.join(" ")
    };
    let reconnect = "then the customer must connect again so that the new grant includes it";
    match required {
        Some(scope) if scopes.iter().any(|s| s == scope) => format!(
            "{VALID} This endpoint needs the `{scope}` scope, and the tenant's grant includes it (granted: {granted}), \
so the Datadog user who authorized most likely lacks the `{scope}` permission in their org: an admin of the \
customer's org can grant it through the user's role."
        ),
        Some(scope) => format!(
            "{VALID} This endpoint needs the `{scope}` scope, which the tenant's grant lacks (granted: {granted}): add \
`{scope}` to the integration's OAuth client in Datadog's Developer Platform, {reconnect}. Otherwise the Datadog \
user who authorized lacks the `{scope}` permission in their org."
        ),
        None => format!(
            "{VALID} Most likely the integration's OAuth client lacks the scope this endpoint needs (granted: {granted}): \
add it to the client in Datadog's Developer Platform, {reconnect}. Otherwise the Datadog user who authorized lacks \
this endpoint's own permission in their org."
        ),
    }
}

/// Per-tenant concurrency slots and rate limiters, rebuilt when a reload
/// changes their settings (requests in flight keep their old slots).
#[derive(Default)]
struct Limits {
    inner: Mutex<LimitsInner>,
}

#[derive(Default)]
struct LimitsInner {
    rate: f64,
    limiter: Option<Arc<DefaultKeyedRateLimiter<Arc<str>>>>,
    concurrency: usize,
    slots: HashMap<Arc<str>, Arc<Semaphore>>,
}

/// A quota of `rate` requests per second (burst: one second's worth, at
/// least one request); `None` for 0 (unlimited).
fn quota(rate: f64) -> Option<Quota> {
    if rate <= 0.0 || !rate.is_finite() {
        return None;
    }
    if rate >= 1.0 {
        let n = NonZeroU32::new(rate.round().min(u32::MAX as f64) as u32)?;
        Some(Quota::per_second(n))
    } else {
        Quota::with_period(Duration::from_secs_f64(1.0 / rate))
    }
}

impl Limits {
    /// A concurrency slot for `tenant`, within its request rate; held until
    /// the response body is fully sent.
    fn admit(
        &self,
        tenant: &str,
        config: &ProxyConfig,
    ) -> Result<OwnedSemaphorePermit, ProxyError> {
        let (slot, limiter) = {
            let mut l = self.inner.lock();
            if l.concurrency != config.tenant_concurrency {
                l.concurrency = config.tenant_concurrency;
                l.slots.clear();
            }
            if l.rate != config.tenant_requests_per_second {
                l.rate = config.tenant_requests_per_second;
                l.limiter = quota(l.rate).map(|q| Arc::new(RateLimiter::keyed(q)));
            }
            let concurrency = l.concurrency.max(1);
            let slot = match l.slots.get(tenant) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(Semaphore::new(concurrency));
                    l.slots.insert(Arc::from(tenant), s.clone());
                    s
                }
            };
            (slot, l.limiter.clone())
        };
        let permit = slot.try_acquire_owned().map_err(|_| ProxyError::Busy {
            tenant: tenant.to_string(),
            limit: config.tenant_concurrency,
        })?;
        if let Some(limiter) = limiter
            && let Err(not_until) = limiter.check_key(&Arc::from(tenant))
        {
            return Err(ProxyError::RateLimited {
                tenant: tenant.to_string(),
                rate: config.tenant_requests_per_second,
                retry_after: not_until.wait_time_from(limiter.clock().now()),
            });
        }
        Ok(permit)
    }
}

/// What the proxy needs: the tenants (sites, states), their credentials
/// (tokens and the refresh policy), the Datadog client, the current config
/// and the metrics.
#[derive(Clone)]
pub struct ProxyState {
    tenants: Arc<Tenants>,
    credentials: Arc<Credentials>,
    datadog: crate::datadog::Client,
    config: ConfigHandle,
    metrics: Arc<Metrics>,
    limits: Arc<Limits>,
}

impl ProxyState {
    pub fn new(
        tenants: Arc<Tenants>,
        credentials: Arc<Credentials>,
        datadog: crate::datadog::Client,
        config: ConfigHandle,
        metrics: Arc<Metrics>,
    ) -> ProxyState {
        ProxyState {
            tenants,
            credentials,
            datadog,
            config,
            metrics,
            limits: Arc::new(Limits::default()),
        }
    }
}

/// The proxy's routes. Mount them outside `server.request_timeout`: the
/// proxy bounds each attempt with `proxy.timeout` itself.
pub fn router(state: ProxyState) -> Router {
    Router::new()
        .route("/v1/tenants/{tenant}/datadog", any(handle))
        .route("/v1/tenants/{tenant}/datadog/", any(handle))
        .route("/v1/tenants/{tenant}/datadog/{*path}", any(handle))
        .with_state(state)
}

async fn handle(State(state): State<ProxyState>, req: Request) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let (tenant, path) = split_route(req.uri().path());
    let tenant = validate_id(tenant).map(|_| tenant.to_string()).ok();
    let shown_path = clip(path, 200).to_string();
    let response = match forward(&state, req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(tenant = tenant.as_deref().unwrap_or("-"), method = %method, path = %shown_path, error = %e, "proxied request failed");
            }
            e.into_response()
        }
    };
    let status = response.status().as_u16();
    state
        .metrics
        .proxy_requests
        .get_or_create(&StatusClass {
            status_class: status_class(status),
        })
        .inc();
    tracing::debug!(
        tenant = tenant.as_deref().unwrap_or("-"),
        method = %method,
        path = %shown_path,
        status,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "proxied request"
    );
    response
}

/// `(tenant, path)` from a raw `/v1/tenants/{tenant}/datadog[/{path}]`.
fn split_route(raw: &str) -> (&str, &str) {
    let rest = raw.strip_prefix(ROUTE_PREFIX).unwrap_or_default();
    let (tenant, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let path = rest.strip_prefix("datadog").unwrap_or_default();
    (tenant, path.strip_prefix('/').unwrap_or(path))
}

/// Methods forwarded. Never `TRACE` (Datadog would echo the request, our
/// `Authorization` included) nor `CONNECT`.
const ALLOWED_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

async fn forward(state: &ProxyState, req: Request) -> Result<Response, ProxyError> {
    let config = state.config.load_full();
    let expected = config
        .proxy
        .token
        .as_ref()
        .unwrap_or(&config.server.admin_token);
    if !authorized(req.headers(), &[expected]) {
        return Err(ProxyError::Unauthorized);
    }
    let method = req.method().clone();
    if !ALLOWED_METHODS.contains(&method) {
        return Err(ProxyError::Method(method));
    }
    let (tenant, path) = split_route(req.uri().path());
    validate_id(tenant).map_err(ProxyError::BadTenant)?;
    let tenant = tenant.to_string();
    check_path(path, &config.proxy.allowed_prefixes)?;
    let required_scope = scopes::required(&method, path);
    let entry = state
        .tenants
        .get(&tenant)
        .ok_or_else(|| ProxyError::UnknownTenant(tenant.clone()))?;
    let record = entry.record();
    let site = match (record.state, entry.site()) {
        (TenantState::Connected | TenantState::ReauthRequired, Some(site)) => site,
        (state, _) => {
            return Err(ProxyError::NotConnected {
                tenant,
                state,
                reason: record.reason,
            });
        }
    };
    let url = target_url(site, path, forwarded_query(req.uri().query()).as_deref())?;
    let headers = forwarded_headers(req.headers());

    let limit = config.proxy.max_request_body;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let body = axum::body::to_bytes(
        req.into_body(),
        usize::try_from(limit).unwrap_or(usize::MAX),
    )
    .await
    .map_err(|e| {
        if is_length_limit(&e) {
            ProxyError::BodyTooLarge { limit }
        } else {
            ProxyError::BodyRead(e.to_string())
        }
    })?;

    let permit = state.limits.admit(&tenant, &config.proxy)?;
    let attempt = Attempt {
        datadog: &state.datadog,
        site,
        method: &method,
        url: &url,
        headers: &headers,
        body: &body,
        timeout: config.proxy.timeout,
    };
    // A refused answer is read (bounded) at once, so its connection is
    // free before the retry and its body can be explained.
    let call = |token: Secret| {
        let attempt = &attempt;
        async move {
            let resp = attempt.send(&token).await?;
            if is_auth_failure(resp.status()) {
                Ok(Answer::Refused(Buffered::read(resp).await))
            } else {
                Ok(Answer::Stream(resp))
            }
        }
    };
    let refused = |a: &Result<Answer, ProxyError>| matches!(a, Ok(Answer::Refused(_)));
    let (outcome, used) = state
        .credentials
        .with_token(&tenant, call, refused)
        .await
        .map_err(|error| ProxyError::Credentials {
            error,
            tenant_state: entry.state(),
            granted_scopes: granted_scopes(&entry),
        })?;
    let secrets: Vec<&Secret> = used.iter().collect();
    let refused_valid = |retried| Why {
        cause: Cause::ScopeOrPermission,
        retried,
        detail: String::new(),
        required_scope,
    };
    let (answer, why) = match outcome {
        Authorized::Accepted(answer) => (answer, refused_valid(false)),
        Authorized::Refused { answer, refreshed } => (answer, refused_valid(refreshed)),
        Authorized::RefreshFailed { answer, error } => (
            answer,
            Why {
                cause: Cause::of_refresh_failure(&error),
                retried: false,
                detail: error.to_string(),
                required_scope: None,
            },
        ),
    };
    match answer? {
        Answer::Stream(resp) => {
            stream(resp, &method, permit, &config.proxy, &tenant, &secrets).await
        }
        Answer::Refused(buffered) => Ok(explain(buffered, &why, &entry, &tenant, &secrets)),
    }
}

/// One attempt's answer: to stream back, or a 401/403 read for explaining.
enum Answer {
    Stream(reqwest::Response),
    Refused(Buffered),
}

fn is_auth_failure(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

fn granted_scopes(entry: &Entry) -> Vec<String> {
    entry
        .record()
        .scopes
        .map(|s| s.split_ascii_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Whether `b` may appear in a forwarded path as it is: RFC 3986 `pchar`
/// (unreserved, `%`, sub-delims but `;`, `:`, `@`) and `/`.
fn path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,=:@/".contains(&b)
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The path policy (see the module doc): `raw` is the path after
/// `datadog/`, exactly as on the request line.
pub fn check_path(raw: &str, allowed: &[String]) -> Result<(), ProxyError> {
    let bad = |why: String| ProxyError::BadPath {
        path: clip(raw, 200).to_string(),
        why,
    };
    if let Some(b) = raw.bytes().find(|b| !path_byte(*b)) {
        let shown = if b.is_ascii_graphic() {
            format!("`{}`", b as char)
        } else {
            format!("byte 0x{b:02x}")
        };
        return Err(bad(format!("{shown} is not allowed in a forwarded path")));
    }
    let segments: Vec<&str> = raw.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() && i + 1 < segments.len() {
            return Err(bad("empty path segment (a leading `/` or `//`)".into()));
        }
        let mut decoded = Vec::with_capacity(segment.len());
        let bytes = segment.as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            if bytes[j] != b'%' {
                decoded.push(bytes[j]);
                j += 1;
                continue;
            }
            let (Some(hi), Some(lo)) = (
                bytes.get(j + 1).copied().and_then(hex),
                bytes.get(j + 2).copied().and_then(hex),
            ) else {
                return Err(bad("`%` must start a percent-encoded byte".into()));
            };
            let b = hi * 16 + lo;
            if unreserved(b) {
                return Err(bad(format!(
                    "percent-encoded `{}`: write it as it is",
                    b as char
                )));
            }
            if matches!(b, b'/' | b'\\' | b'%' | b';') || b.is_ascii_control() {
                return Err(bad(format!(
                    "percent-encoded byte 0x{b:02x} (`/`, `\\`, `%`, `;` and control bytes may not be encoded)"
                )));
            }
            decoded.push(b);
            j += 3;
        }
        if decoded == b"." || decoded == b".." {
            return Err(bad("`.` and `..` segments are not allowed".into()));
        }
    }
    if raw.is_empty() || !allowed.iter().any(|p| raw.starts_with(p.as_str())) {
        let allowed = allowed
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ProxyError::PathNotAllowed {
            path: clip(raw, 200).to_string(),
            allowed,
        });
    }
    Ok(())
}

/// The query without the `api_key` and `application_key` parameters (the
/// caller's Datadog credentials are never forwarded), otherwise verbatim.
pub fn forwarded_query(raw: Option<&str>) -> Option<String> {
    let kept: Vec<&str> = raw?
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            let name: String = url::form_urlencoded::parse(name.as_bytes())
                .map(|(k, _)| k.into_owned())
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            !matches!(
                name.as_str(),
                "api_key" | "application_key" | "dd-api-key" | "dd-application-key"
            )
        })
        .collect();
    Some(kept.join("&")).filter(|q| !q.is_empty())
}

/// `https://api.<domain>/{path}?{query}`, checked to stay on that host with
/// the path unchanged.
fn target_url(site: &Site, path: &str, query: Option<&str>) -> Result<Url, ProxyError> {
    let wanted = format!("/{path}");
    let off_host = || ProxyError::BadPath {
        path: clip(path, 200).to_string(),
        why: "it does not stay on the tenant's Datadog API host".into(),
    };
    let mut url = Url::parse(&site.url(HostKind::Api, &wanted)).map_err(|_| off_host())?;
    url.set_query(query);
    let host = site.host(HostKind::Api);
    if url.scheme() != "https"
        || url.host_str() != Some(host.as_str())
        || url.port().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.path() != wanted
        || url.fragment().is_some()
    {
        return Err(off_host());
    }
    Ok(url)
}

/// The headers sent to Datadog: the allow-list, `Accept-Encoding` limited
/// to [`ACCEPTED_CODINGS`], and the caller's `User-Agent` + ddrelay's.
pub fn forwarded_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in &FORWARDED_HEADERS {
        for v in incoming.get_all(name) {
            out.append(name.clone(), v.clone());
        }
    }
    let codings: Vec<&str> = incoming
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|c| {
            let token = c.split(';').next().unwrap_or_default().trim();
            ACCEPTED_CODINGS
                .iter()
                .any(|a| a.eq_ignore_ascii_case(token))
        })
        .collect();
    if !codings.is_empty()
        && let Ok(v) = HeaderValue::from_str(&codings.join(", "))
    {
        out.insert(header::ACCEPT_ENCODING, v);
    }
    let agent = incoming
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| format!("{} {USER_AGENT}", clip(ua.trim(), 200)))
        .and_then(|ua| HeaderValue::from_str(&ua).ok())
        .unwrap_or(HeaderValue::from_static(USER_AGENT));
    out.insert(header::USER_AGENT, agent);
    out
}

/// Datadog's response headers as returned to the caller (see the module doc).
pub fn returned_headers(upstream: &HeaderMap, secrets: &[&Secret]) -> HeaderMap {
    let listed: Vec<String> = upstream
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in upstream {
        let n = name.as_str();
        let leaks = secrets.iter().any(|s| {
            !s.expose().is_empty()
                && memchr::memmem::find(value.as_bytes(), s.expose().as_bytes()).is_some()
        });
        if DROPPED_RESPONSE_HEADERS.contains(&n)
            || listed.iter().any(|l| l == n)
            || n.starts_with("dd-relay-")
            || leaks
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// One request to Datadog, sendable twice.
struct Attempt<'a> {
    datadog: &'a crate::datadog::Client,
    site: &'static Site,
    method: &'a Method,
    url: &'a Url,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    timeout: Duration,
}

impl Attempt<'_> {
    async fn send(&self, token: &Secret) -> Result<reqwest::Response, ProxyError> {
        let has_body = matches!(*self.method, Method::POST | Method::PUT | Method::PATCH);
        let call = crate::datadog::ApiCall {
            method: self.method,
            url: self.url,
            headers: self.headers,
            body: (has_body || !self.body.is_empty()).then_some(self.body),
            token,
            timeout: self.timeout,
        };
        self.datadog
            .api_call(self.site, call)
            .await
            .map_err(|e| match e {
                crate::datadog::CallError::Timeout => ProxyError::Timeout(self.timeout),
                crate::datadog::CallError::NotAllowed(why) => ProxyError::SiteNotAllowed(why),
                crate::datadog::CallError::Transport(why) => ProxyError::Upstream(why),
            })
    }
}

/// Up to this much of an answer is read before its status line is sent, so
/// an answer that passes `max_response_body` within it is a clean 502 and
/// only a longer one is cut mid-stream.
const PREFETCH: u64 = 64 * 1024;

/// Streams Datadog's answer back, bounded by `max_response_body`, holding
/// the tenant's concurrency slot until the body is done.
async fn stream(
    mut resp: reqwest::Response,
    method: &Method,
    permit: OwnedSemaphorePermit,
    config: &ProxyConfig,
    tenant: &str,
    secrets: &[&Secret],
) -> Result<Response, ProxyError> {
    let max = config.max_response_body;
    let too_large = |length: u64| {
        tracing::warn!(tenant = %tenant, length, limit = max, "datadog response refused: over proxy.max_response_body");
        ProxyError::ResponseTooLarge { limit: max }
    };
    if *method != Method::HEAD
        && let Some(len) = resp.content_length()
        && len > max
    {
        return Err(too_large(len));
    }
    let status = resp.status();
    let headers = returned_headers(resp.headers(), secrets);
    let mut head = Vec::new();
    let mut got = 0u64;
    while got <= PREFETCH.min(max) {
        let chunk = resp.chunk().await.map_err(|e| {
            if e.is_timeout() {
                ProxyError::Timeout(config.timeout)
            } else {
                ProxyError::Upstream(describe(&e))
            }
        })?;
        let Some(chunk) = chunk else { break };
        got += chunk.len() as u64;
        head.push(chunk);
    }
    if got > max {
        return Err(too_large(got));
    }
    let rest = resp
        .bytes_stream()
        .map(|item| item.map_err(|e| describe(&e)));
    let body = bounded(head, rest, max, permit, tenant.to_string());
    let mut r = Response::new(Body::from_stream(body));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r.headers_mut()
        .insert(ORIGIN_HEADER, HeaderValue::from_static("datadog"));
    Ok(r)
}

/// `head` then `rest`, ended by an error once more than `max` bytes came
/// (or when `rest` fails), so the server closes the connection without
/// completing the body. `permit` is released when the body is dropped.
fn bounded<S>(
    head: Vec<Bytes>,
    rest: S,
    max: u64,
    permit: OwnedSemaphorePermit,
    tenant: String,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: futures_util::Stream<Item = Result<Bytes, String>> + Send + 'static,
{
    futures_util::stream::iter(head.into_iter().map(Ok))
        .chain(rest)
        .scan((0u64, false, permit), move |(seen, done, _permit), item| {
            if *done {
                return std::future::ready(None);
            }
            let out = match item {
                Ok(chunk) => {
                    *seen += chunk.len() as u64;
                    if *seen > max {
                        *done = true;
                        tracing::warn!(tenant = %tenant, limit = max, "proxied response cut: over proxy.max_response_body");
                        Err(std::io::Error::other(format!(
                            "Datadog's response is larger than {max} bytes (proxy.max_response_body)"
                        )))
                    } else {
                        Ok(chunk)
                    }
                }
                Err(e) => {
                    *done = true;
                    tracing::warn!(tenant = %tenant, error = %e, "proxied response broken off");
                    Err(std::io::Error::other(e))
                }
            };
            std::future::ready(Some(out))
        })
}

/// A 401/403 answer, read (bounded) so it can be explained.
struct Buffered {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Buffered {
    async fn read(mut resp: reqwest::Response) -> Buffered {
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let room = AUTH_BODY_MAX.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= AUTH_BODY_MAX {
                break;
            }
        }
        Buffered {
            status,
            headers,
            body,
        }
    }

    /// The body as JSON text, decoded when Datadog compressed it.
    fn decoded(&self) -> Vec<u8> {
        let encoding = self
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(Encoding::from_header)
            .unwrap_or(Some(Encoding::Identity));
        match encoding {
            Some(e) => codec::decompress(e, &self.body, AUTH_BODY_MAX).unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

/// Datadog's 401/403 with ddrelay's explanation added (see the module doc).
fn explain(
    answer: Buffered,
    why: &Why,
    entry: &Entry,
    tenant: &str,
    secrets: &[&Secret],
) -> Response {
    let state = entry.state();
    let cause = why.cause;
    let member = why.body(tenant, state, &granted_scopes(entry));
    tracing::info!(tenant = %tenant, status = answer.status.as_u16(), cause = cause.code(), tenant_state = state.as_str(), "datadog refused a proxied request");
    let text = answer.decoded();
    let mut body = match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(Value::Array(errors)) => json!({ "errors": errors }),
        _ => {
            let shown = String::from_utf8_lossy(&text).trim().to_string();
            let shown = if shown.is_empty() {
                answer
                    .status
                    .canonical_reason()
                    .unwrap_or("Forbidden")
                    .to_string()
            } else {
                clip(&shown, 1000).to_string()
            };
            json!({ "errors": [shown] })
        }
    };
    body["ddrelay"] = member;
    let mut text = body.to_string();
    for s in secrets {
        if !s.expose().is_empty() {
            text = text.replace(s.expose(), crate::secret::REDACTED);
        }
    }
    let mut headers = returned_headers(&answer.headers, secrets);
    for h in [header::CONTENT_LENGTH, header::CONTENT_ENCODING] {
        headers.remove(h);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(ORIGIN_HEADER, HeaderValue::from_static("datadog"));
    headers.insert(EXPLANATION_HEADER, HeaderValue::from_static(cause.code()));
    headers.insert(
        TENANT_STATE_HEADER,
        HeaderValue::from_static(state.as_str()),
    );
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = answer.status;
    *r.headers_mut() = headers;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["api/".to_string()]
    }

    #[test]
    fn canonical_paths_under_an_allowed_prefix_pass() {
        for p in [
            "api/v1/monitor",
            "api/v1/monitor/123",
            "api/v2/users",
            "api/v1/user/ada@acme.example",
            "api/v2/metrics/system.cpu.user/tags",
            "api/v1/monitor/",
            "api/v2/query/scalar",
            "api/v1/tags/hosts/web%20server",
            "api/v1/monitor@evil.example",
            "api/v1/http:",
        ] {
            assert!(check_path(p, &allowed()).is_ok(), "{p}");
        }
    }

    #[test]
    fn hostile_paths_are_refused() {
        let bad = [
            "api/../oauth2/v1/token",
            "api/v1/%2e%2e/%2e%2e/oauth2/v1/token",
            "api/v1/%2E%2E/x",
            "api/./v1/monitor",
            "api/v1/.%2e/x",
            "api//evil.example/x",
            "/evil.example/api/v1/monitor",
            "api/v1/monitor%2F..%2F..%2Foauth2",
            "api%2Fv1%2Fmonitor",
            "api\\..\\oauth2",
            "api/v1/monitor%5C..",
            "api/v1/%252e%252e/x",
            "api/v1/monitor;/../x",
            "api/v1/%61",
            "api/v1/%zz",
            "api/v1/%2",
            "api/v1/%00",
            "api/v1/a b",
            "api/v1/é",
            "api/v1/{x}",
            "api/v1/x\"",
        ];
        for p in bad {
            let e = check_path(p, &allowed()).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{p}: {e}");
        }
        for p in [
            "",
            "oauth2/v1/token",
            "API/v1/monitor",
            "http:",
            "@evil.example/api/v1/monitor",
            "apix/v1",
        ] {
            let e = check_path(p, &allowed()).unwrap_err();
            assert_eq!(e.status(), StatusCode::FORBIDDEN, "{p}: {e}");
            assert!(e.to_string().contains("`api/`"), "{e}");
        }
    }

    #[test]
    fn urls_stay_on_the_tenants_api_host() {
        let eu = Site::by_domain("datadoghq.eu").unwrap();
        let u = target_url(eu, "api/v1/monitor", Some("name=cpu&page=1")).unwrap();
        assert_eq!(
            u.as_str(),
            "https://api.datadoghq.eu/api/v1/monitor?name=cpu&page=1"
        );
        let u = target_url(eu, "api/v1/user/ada@acme.example", None).unwrap();
        assert_eq!(u.host_str(), Some("api.datadoghq.eu"));
        assert_eq!(u.path(), "/api/v1/user/ada@acme.example");
        // Defense in depth: what check_path refuses, the URL check refuses too.
        assert!(target_url(eu, "api/../oauth2/v1/token", None).is_err());
        assert!(target_url(eu, "api/%2e%2e/oauth2", None).is_err());
        assert!(target_url(eu, "api\\..\\x", None).is_err());
    }

    #[test]
    fn callers_credentials_are_dropped_from_the_query() {
        assert_eq!(
            forwarded_query(Some("api_key=k&name=cpu&APPLICATION_KEY=a&filter%5Bx%5D=1")),
            Some("name=cpu&filter%5Bx%5D=1".to_string())
        );
        assert_eq!(forwarded_query(Some("api%5Fkey=k")), None);
        assert_eq!(forwarded_query(Some("")), None);
        assert_eq!(forwarded_query(None), None);
    }

    #[test]
    fn only_allow_listed_request_headers_are_forwarded() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer admin"),
            ("dd-api-key", "k"),
            ("dd-application-key", "a"),
            ("cookie", "s=1"),
            ("host", "relay"),
            ("connection", "keep-alive"),
            ("x-forwarded-for", "1.2.3.4"),
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("accept-encoding", "br, gzip;q=0.9, zstd"),
            ("user-agent", "oncall/1.0"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let out = forwarded_headers(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        for dropped in [
            "authorization",
            "dd-api-key",
            "dd-application-key",
            "cookie",
            "host",
            "connection",
            "x-forwarded-for",
        ] {
            assert!(!names.contains(&dropped), "{dropped} forwarded");
        }
        assert_eq!(out["accept-encoding"], "gzip;q=0.9, zstd");
        assert_eq!(out["content-type"], "application/json");
        assert_eq!(
            out["user-agent"].to_str().unwrap(),
            format!("oncall/1.0 {USER_AGENT}")
        );
        let out = forwarded_headers(&HeaderMap::new());
        assert_eq!(out["user-agent"], USER_AGENT);
        assert!(out.get("accept-encoding").is_none());
    }

    #[test]
    fn response_headers_lose_cookies_credentials_and_hop_by_hop() {
        let token = Secret::new("tok-123456");
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("set-cookie", "dd_session=abc"),
            ("connection", "close, x-private"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("www-authenticate", "Bearer"),
            ("alt-svc", "h3=\":443\""),
            ("dd-relay-origin", "spoofed"),
            ("x-echo", "Bearer tok-123456"),
            ("x-ratelimit-remaining", "99"),
            ("retry-after", "3"),
            ("content-type", "application/json"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let out = returned_headers(&h, &[&token]);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["x-ratelimit-remaining", "retry-after", "content-type"]
        );
    }

    #[test]
    fn explanations_keep_datadogs_errors() {
        let mut entry_headers = HeaderMap::new();
        entry_headers.insert("x-ratelimit-name", HeaderValue::from_static("monitors"));
        let answer = Buffered {
            status: StatusCode::FORBIDDEN,
            headers: entry_headers,
            body: br#"{"errors":["Forbidden"]}"#.to_vec(),
        };
        let text = answer.decoded();
        assert_eq!(text, br#"{"errors":["Forbidden"]}"#);
        let gz = Buffered {
            status: StatusCode::FORBIDDEN,
            headers: [(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"))]
                .into_iter()
                .collect(),
            body: codec::compress(Encoding::Gzip, 1, br#"{"errors":["Forbidden"]}"#),
        };
        assert_eq!(gz.decoded(), br#"{"errors":["Forbidden"]}"#);
        let why = Why {
            cause: Cause::ScopeOrPermission,
            retried: true,
            detail: String::new(),
            required_scope: None,
        };
        let member = why.body(
            "acme",
            TenantState::Connected,
            &["monitors_read".to_string()],
        );
        assert_eq!(member["cause"], "missing_scope_or_permission");
        assert!(
            member["explanation"]
                .as_str()
                .unwrap()
                .contains("granted: monitors_read")
        );
        assert_eq!(member["tenant_state"], "connected");
    }

    #[test]
    fn a_known_endpoints_scope_is_named_as_missing_or_granted() {
        let granted = ["api_keys_write".to_string(), "incident_read".to_string()];
        let lacks = scope_or_permission(Some("incident_write"), &granted);
        assert!(
            lacks.contains("needs the `incident_write` scope, which the tenant's grant lacks"),
            "{lacks}"
        );
        assert!(lacks.contains("connect again"), "{lacks}");
        let has = scope_or_permission(Some("incident_read"), &granted);
        assert!(has.contains("grant includes it"), "{has}");
        assert!(has.contains("the `incident_read` permission"), "{has}");
        assert!(!has.contains("connect again"), "{has}");
        let unknown = scope_or_permission(None, &granted);
        assert!(
            unknown.contains("the scope this endpoint needs"),
            "{unknown}"
        );
        assert!(unknown.contains("granted: api_keys_write incident_read"));
    }

    #[test]
    fn routes_split_into_tenant_and_path() {
        assert_eq!(
            split_route("/v1/tenants/acme/datadog/api/v1/monitor"),
            ("acme", "api/v1/monitor")
        );
        assert_eq!(split_route("/v1/tenants/acme/datadog"), ("acme", ""));
        assert_eq!(split_route("/v1/tenants/acme/datadog/"), ("acme", ""));
        assert_eq!(
            split_route("/v1/tenants/acme/datadog//evil"),
            ("acme", "/evil")
        );
    }

    #[tokio::test]
    async fn streamed_bodies_are_cut_past_the_limit_and_release_the_slot() {
        let slot = Arc::new(Semaphore::new(1));
        let chunks = |n: usize| {
            futures_util::stream::iter(
                (0..n).map(|_| Ok::<_, String>(Bytes::from_static(b"0123456789"))),
            )
        };
        let permit = slot.clone().try_acquire_owned().unwrap();
        let out: Vec<_> = bounded(
            vec![Bytes::from_static(b"[")],
            chunks(3),
            31,
            permit,
            "t".into(),
        )
        .collect()
        .await;
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(Result::is_ok));
        assert_eq!(slot.available_permits(), 1);

        let permit = slot.clone().try_acquire_owned().unwrap();
        let out: Vec<_> = bounded(vec![], chunks(5), 25, permit, "t".into())
            .collect()
            .await;
        assert_eq!(out.len(), 3, "two chunks, then the error, then nothing");
        assert!(out[..2].iter().all(Result::is_ok));
        assert!(
            out[2]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("proxy.max_response_body")
        );
        assert_eq!(slot.available_permits(), 1);

        let permit = slot.clone().try_acquire_owned().unwrap();
        let broken = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err("connection reset".to_string()),
            Ok(Bytes::from_static(b"cd")),
        ]);
        let out: Vec<_> = bounded(vec![], broken, 100, permit, "t".into())
            .collect()
            .await;
        assert_eq!(out.len(), 2);
        assert!(out[1].is_err());
    }

    #[test]
    fn quotas() {
        assert!(quota(0.0).is_none());
        assert!(quota(f64::NAN).is_none());
        assert!(quota(0.5).is_some());
        assert!(quota(20.0).is_some());
    }

    #[tokio::test]
    async fn concurrency_and_rate_are_per_tenant() {
        let limits = Limits::default();
        let mut config = ProxyConfig {
            allowed_prefixes: allowed(),
            token: None,
            max_request_body: 1024,
            max_response_body: 1024,
            timeout: Duration::from_secs(1),
            tenant_concurrency: 1,
            tenant_requests_per_second: 0.0,
        };
        let held = limits.admit("a", &config).unwrap();
        assert!(matches!(
            limits.admit("a", &config),
            Err(ProxyError::Busy { limit: 1, .. })
        ));
        let other = limits.admit("b", &config).unwrap();
        drop((held, other));
        assert!(limits.admit("a", &config).is_ok());
        config.tenant_requests_per_second = 1.0;
        assert!(limits.admit("a", &config).is_ok());
        let Err(ProxyError::RateLimited { retry_after, .. }) = limits.admit("a", &config) else {
            panic!("expected a rate limit");
        };
        assert!(retry_after <= Duration::from_secs(1));
        assert!(limits.admit("b", &config).is_ok());
    }
}
