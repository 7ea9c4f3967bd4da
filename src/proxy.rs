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
//! - **Refresh and one retry**: [`Credentials::with_token`] owns the policy
//!   (the token refreshed single-flight and ahead of expiry; on a 401 or
//!   403 from Datadog refreshed once, forced, and the request sent once
//!   more: the body is buffered for this). A 401/403
//!   that remains is returned with Datadog's status, its headers and its
//!   body extended with an explanation (`explain.rs`). A token fresh from a
//!   forced refresh that Datadog refused is not refreshed again for a
//!   minute: its next refusals are explained at once (no refresh-token churn
//!   when a caller polls an endpoint the grant does not cover).
//!
//! Its parts, one concern each:
//! - `path.rs`: the path policy ([`check_path`]) and the URL it gives.
//! - `headers.rs`: header hygiene, both ways.
//! - `limits.rs`: the `[proxy]` limits; the per-tenant slots and rates.
//! - `stream.rs`: Datadog's answer streamed back within
//!   `max_response_body`.
//! - `explain.rs`: the explanation added to a 401/403 that remains.
//! - `error.rs`: the answers ddrelay gives itself ([`ProxyError`]).
//! - `scopes.rs`: the scope each known endpoint needs.
//!
//! What it must not know: the queue, the pipeline, ingest, OAuth flows or
//! any Datadog hostname (URLs come from `site.rs`, tokens from `tenant.rs`,
//! the HTTP client from `datadog.rs`).

mod error;
mod explain;
mod headers;
mod limits;
mod path;
mod scopes;
mod stream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use url::Url;

use crate::admin::authorized;
use crate::config::Config;
use crate::credentials::Credentials;
use crate::secret::Secret;
use crate::site::Site;
use crate::store::TenantState;
use crate::telemetry::metrics::{Metrics, StatusClass, status_class};
use crate::tenant::{ConfigHandle, Entry, Tenants, validate_id};
use crate::text::clip;

pub(crate) use error::ProxyError;
use explain::{Buffered, Why, explain};
pub(crate) use headers::forwarded_headers;
use limits::Limits;
use path::target_url;
pub use path::{check_path, forwarded_query};
use stream::stream;

/// Where the proxy's routes start; the tenant id and `datadog/` follow.
const ROUTE_PREFIX: &str = "/v1/tenants/";

/// Names the answer's author: `datadog` or `relay`.
pub(crate) const ORIGIN_HEADER: &str = "dd-relay-origin";
/// The cause of a 401/403 ddrelay explains.
pub(crate) const EXPLANATION_HEADER: &str = "dd-relay-explanation";
/// The tenant's state after an explained 401/403.
pub(crate) const TENANT_STATE_HEADER: &str = "dd-relay-tenant-state";

/// What the proxy needs: the tenants (sites, states), their credentials
/// (tokens and the refresh policy), the Datadog client, the current config
/// and the metrics.
#[derive(Clone)]
pub(crate) struct ProxyState {
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
pub(crate) fn router(state: ProxyState) -> Router {
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

/// Where a request goes, once its caller, method, tenant and path passed.
struct Target {
    method: Method,
    tenant: String,
    entry: Arc<Entry>,
    site: &'static Site,
    url: Url,
    headers: HeaderMap,
    /// The scope the endpoint needs, when `proxy/scopes.rs` records it.
    required_scope: Option<&'static str>,
}

/// Checks the caller's token, the method, the tenant and the path (in
/// that order) and says where the request goes.
fn target(state: &ProxyState, config: &Config, req: &Request) -> Result<Target, ProxyError> {
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
    Ok(Target {
        method,
        tenant,
        entry,
        site,
        url,
        headers,
        required_scope,
    })
}

/// The request body; over `proxy.max_request_body` (declared or read) it
/// is a 413, before Datadog is contacted.
async fn read_body(req: Request, limit: u64) -> Result<Bytes, ProxyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    axum::body::to_bytes(
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
    })
}

async fn forward(state: &ProxyState, req: Request) -> Result<Response, ProxyError> {
    let config = state.config.load_full();
    let target = target(state, &config, &req)?;
    let body = read_body(req, config.proxy.max_request_body).await?;
    let permit = state.limits.admit(&target.tenant, &config.proxy)?;
    let attempt = Attempt {
        datadog: &state.datadog,
        site: target.site,
        method: &target.method,
        url: &target.url,
        headers: &target.headers,
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
        .with_token(&target.tenant, call, refused)
        .await
        .map_err(|error| ProxyError::Credentials {
            error,
            tenant_state: target.entry.state(),
            granted_scopes: granted_scopes(&target.entry),
        })?;
    let secrets: Vec<&Secret> = used.iter().collect();
    let (answer, why) = Why::of(outcome, target.required_scope);
    let (method, tenant) = (&target.method, target.tenant.as_str());
    match answer? {
        Answer::Stream(resp) => stream(resp, method, permit, &config.proxy, tenant, &secrets).await,
        Answer::Refused(buffered) => Ok(explain(buffered, &why, &target.entry, tenant, &secrets)),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
