//! The answers the proxy gives itself ([`ProxyError`]): each refusal's
//! status and `Retry-After`, and its JSON body `{"errors":[..]}` (with the
//! `ddrelay` member of `explain.rs` for a tenant that must reconnect).

use std::time::Duration;

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::explain::{Cause, Why};
use super::{EXPLANATION_HEADER, ORIGIN_HEADER, TENANT_STATE_HEADER};
use crate::credentials::CredentialError;
use crate::store::TenantState;
use crate::tenant::IdError;

/// `Retry-After` when the tenant already has `tenant_concurrency` requests
/// in flight.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `Retry-After` when the token refresh could not reach Datadog.
const REFRESH_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Why the proxy answered itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
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
