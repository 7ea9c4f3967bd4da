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

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::headers::returned_headers;
use super::{EXPLANATION_HEADER, ORIGIN_HEADER, TENANT_STATE_HEADER, granted_scopes};
use crate::codec;
use crate::credentials::{Authorized, CredentialError};
use crate::secret::Secret;
use crate::site::Encoding;
use crate::store::TenantState;
use crate::tenant::Entry;
use crate::text::clip;

/// Datadog's 401/403 bodies are a few bytes (`{"errors":["Forbidden"]}`,
/// docs/datadog.md "Calling Datadog's API with the access token"); at most
/// this much is read to explain one.
const AUTH_BODY_MAX: usize = 64 * 1024;

/// What a 401/403 from Datadog most likely means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
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

    pub(super) fn of_refresh_failure(e: &CredentialError) -> Cause {
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
pub(super) struct Why {
    pub(super) cause: Cause,
    /// A token fresh from a forced refresh was refused too.
    pub(super) retried: bool,
    /// The refresh failure, when the refresh failed.
    pub(super) detail: String,
    /// The scope the endpoint needs, when `proxy/scopes.rs` records it.
    pub(super) required_scope: Option<&'static str>,
}

impl Why {
    /// The last answer, and why it is refused if it is: a valid token
    /// refused (a fresh one tried too, or not), or the refresh failure.
    pub(super) fn of<T>(outcome: Authorized<T>, required_scope: Option<&'static str>) -> (T, Why) {
        let refused_valid = |retried| Why {
            cause: Cause::ScopeOrPermission,
            retried,
            detail: String::new(),
            required_scope,
        };
        match outcome {
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
        }
    }

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

    pub(super) fn body(&self, tenant: &str, state: TenantState, scopes: &[String]) -> Value {
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

/// A 401/403 answer, read (bounded) so it can be explained.
pub(super) struct Buffered {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Buffered {
    pub(super) async fn read(mut resp: reqwest::Response) -> Buffered {
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
pub(super) fn explain(
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
}
