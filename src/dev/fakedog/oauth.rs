//! The OAuth 2.0 server Datadog runs for partner integrations
//! (docs/datadog.md "OAuth 2.0 for partner integrations"):
//! authorization code + PKCE (S256 only) for confidential clients.
//!
//! - `GET /oauth2/v1/authorize` on web hosts. An unknown `client_id` or a
//!   `redirect_uri` that is not exactly registered gets Datadog's error page
//!   and no redirect (docs/datadog.md "Authorize"); every later problem
//!   redirects with an RFC 6749 §4.1.2.1 `error` (+ `state`). US1's app host
//!   is the region picker: an org of another site is sent to its own web host
//!   with the same query; any other web host shows an error page for a
//!   foreign org. An unpublished client may only be authorized by its owner
//!   org. Success redirects with `code, state, domain, site, dd_oid,
//!   dd_org_name` (docs/datadog.md "The redirect to the partner").
//! - `POST /oauth2/v1/authorize`: the consent form (Authorize / Deny).
//! - `POST /oauth2/v1/token` on `api.<org's domain>` only, form or JSON body,
//!   client authentication by `client_secret` in the body (documented) or
//!   HTTP Basic (RFC 6749 §2.3.1; UNCONFIRMED at Datadog: docs/datadog.md
//!   "Token"). Codes are single
//!   use and expire; replaying one revokes the grant issued from it (RFC 6749
//!   §4.1.2). Refresh tokens rotate; presenting a rotated one again revokes
//!   the whole grant (reuse detection, OAuth 2.0 Security BCP §4.14).
//! - `POST /oauth2/v1/revoke` (RFC 7009): 200 even for unknown tokens;
//!   revoking a refresh token revokes its grant.
//!
//! A code, refresh token or revocation presented at another site's API host
//! fails as at Datadog (that site has never heard of it) and is recorded as
//! a [`super::ViolationKind::WrongSite`] violation.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{FromRequest, FromRequestParts, RawQuery, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::secret::{ct_eq, random_token};
use crate::site::HostRole;

use super::pages;
use super::server::{Target, json, not_found};
use super::state::{
    AccessToken, AuthRequest, CODE_TTL, CONSENT_TTL, Code, Consent, Grant, Org, Recording,
    RefreshToken, Shared, State,
};

/// Datadog's description for a bad code or a failed PKCE check
/// (docs/datadog.md "Token").
const INVALID_CODE: &str = "Invalid code or code verifier";

/// An RFC 6749 §5.2 error from the token or revocation endpoint.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum OAuthError {
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// 401: unknown client, missing or wrong secret.
    #[error("invalid_client: {0}")]
    InvalidClient(String),
    #[error("invalid_grant: {0}")]
    InvalidGrant(String),
    #[error("unsupported_grant_type: {0}")]
    UnsupportedGrantType(String),
}

impl OAuthError {
    fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
        }
    }

    fn description(&self) -> &str {
        match self {
            OAuthError::InvalidRequest(d)
            | OAuthError::InvalidClient(d)
            | OAuthError::InvalidGrant(d)
            | OAuthError::UnsupportedGrantType(d) => d,
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = match self {
            OAuthError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut r = json(
            status,
            serde_json::json!({"error": self.code(), "error_description": self.description()}),
        );
        no_store(&mut r);
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"datadog\""),
            );
        }
        r
    }
}

fn no_store(r: &mut Response) {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// Request parameters, in order, duplicates kept.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn from_form(text: &[u8]) -> Params {
        Params(url::form_urlencoded::parse(text).into_owned().collect())
    }

    /// The first value of `name`; an empty value counts as absent (RFC 6749 §3.1).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// A parameter given more than once (RFC 6749 §3.1: an error).
    fn repeated(&self) -> Option<&str> {
        self.0.iter().enumerate().find_map(|(i, (k, _))| {
            self.0[..i]
                .iter()
                .any(|(p, _)| p == k)
                .then_some(k.as_str())
        })
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// A token or revocation body: form (documented) or JSON (Datadog's
/// troubleshooting accepts `application/json`: docs/datadog.md "Token").
fn body_params(headers: &HeaderMap, body: &[u8]) -> Result<Params, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match content_type.as_str() {
        "" | "application/x-www-form-urlencoded" => Ok(Params::from_form(body)),
        "application/json" => {
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
                .map_err(|_| OAuthError::InvalidRequest("the body is not a JSON object".into()))?;
            let mut params = Vec::with_capacity(map.len());
            for (k, v) in map {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => continue,
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(OAuthError::InvalidRequest(format!(
                            "parameter {k} must be a string"
                        )));
                    }
                };
                params.push((k, v));
            }
            Ok(Params(params))
        }
        other => Err(OAuthError::InvalidRequest(format!(
            "unsupported content type {other}: use application/x-www-form-urlencoded or application/json"
        ))),
    }
}

/// Client credentials from an `Authorization: Basic` header.
enum Basic {
    Absent,
    Malformed,
    Given(String, String),
}

fn basic_auth(headers: &HeaderMap) -> Basic {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Basic::Absent;
    };
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        // A Bearer header on revoke (Datadog's example sends one,
        // docs/datadog.md "Revoke") is not client auth.
        return Basic::Absent;
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Basic::Malformed;
    };
    // RFC 6749 §2.3.1: both parts are form-urlencoded.
    let unform = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Basic::Given(unform(id), unform(secret))
}

/// `base64url(SHA-256(verifier))`, the S256 challenge (RFC 7636 §4.2).
pub fn challenge_of(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn is_s256_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 §4.1: 43..=128 unreserved characters.
fn is_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// What the authorize endpoint answers.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Datadog's error page (400), no redirect.
    ErrorPage {
        message: String,
        hint: String,
    },
    /// 302 from the GET, 303 after the consent form POST.
    Redirect {
        location: String,
        see_other: bool,
    },
    Consent {
        html: String,
    },
}

impl Answer {
    fn error(message: &str, hint: &str) -> Answer {
        Answer::ErrorPage {
            message: message.to_string(),
            hint: hint.to_string(),
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let html = |status: StatusCode, body: String| {
            let mut r = (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                body,
            )
                .into_response();
            no_store(&mut r);
            r
        };
        match self {
            Answer::ErrorPage { message, hint } => {
                html(StatusCode::BAD_REQUEST, pages::error(&message, &hint))
            }
            Answer::Consent { html: body } => html(StatusCode::OK, body),
            Answer::Redirect {
                location,
                see_other,
            } => {
                let status = if see_other {
                    StatusCode::SEE_OTHER
                } else {
                    StatusCode::FOUND
                };
                let mut r = status.into_response();
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                no_store(&mut r);
                r
            }
        }
    }
}

/// `redirect_uri` with `pairs` appended to its query.
fn with_query(redirect_uri: &str, pairs: &[(&str, &str)]) -> Option<String> {
    let mut url = url::Url::parse(redirect_uri).ok()?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    Some(url.into())
}

fn error_redirect(
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
    see_other: bool,
) -> Answer {
    let mut pairs = vec![("error", error), ("error_description", description)];
    if let Some(s) = state {
        pairs.push(("state", s));
    }
    match with_query(redirect_uri, &pairs) {
        Some(location) => Answer::Redirect {
            location,
            see_other,
        },
        None => Answer::error("invalid_request - Mismatching redirect URI", ""),
    }
}

/// `GET /oauth2/v1/authorize`.
pub(crate) async fn authorize(
    AxState(shared): AxState<Arc<Shared>>,
    Extension(target): Extension<Target>,
    RawQuery(query): RawQuery,
) -> Response {
    if target.role != HostRole::Web {
        return not_found();
    }
    let query = query.unwrap_or_default();
    let params = Params::from_form(query.as_bytes());
    let answer = shared.lock().authorize(&target, &params, &query);
    answer.into_response()
}

/// `POST /oauth2/v1/authorize`: the consent form.
pub(crate) async fn consent(
    AxState(shared): AxState<Arc<Shared>>,
    Extension(target): Extension<Target>,
    body: Bytes,
) -> Response {
    if target.role != HostRole::Web {
        return not_found();
    }
    let params = Params::from_form(&body);
    let answer = shared.lock().decide(&target, &params);
    answer.into_response()
}

/// What a form endpoint of an API host (`token`, `revoke`) reads of its
/// request.
pub(crate) struct FormCall {
    shared: Arc<Shared>,
    target: Target,
    headers: HeaderMap,
    body: Bytes,
}

impl FromRequest<Arc<Shared>> for FormCall {
    type Rejection = Response;

    async fn from_request(req: Request, shared: &Arc<Shared>) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Extension(target) = Extension::<Target>::from_request_parts(&mut parts, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let body = Bytes::from_request(Request::from_parts(parts, body), shared)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(FormCall {
            shared: shared.clone(),
            target,
            headers,
            body,
        })
    }
}

impl FormCall {
    /// The call, counted per host in the counts `calls` picks, answered by
    /// `op` with the client's Basic credentials and the form's parameters;
    /// `None` off the API host.
    fn answer<T>(
        &self,
        calls: impl FnOnce(&mut Recording) -> &mut BTreeMap<String, u64>,
        op: fn(&mut State, &Target, Basic, &Params) -> Result<T, OAuthError>,
    ) -> Option<Result<T, OAuthError>> {
        let (target, headers) = (&self.target, &self.headers);
        if target.role != HostRole::Api {
            return None;
        }
        let mut st = self.shared.lock();
        *calls(&mut st.rec).entry(target.host.clone()).or_default() += 1;
        let params = body_params(headers, &self.body);
        Some(params.and_then(|p| op(&mut st, target, basic_auth(headers), &p)))
    }
}

/// `POST /oauth2/v1/token`.
pub(crate) async fn token(call: FormCall) -> Response {
    let Some(result) = call.answer(|rec| &mut rec.token_calls, State::token) else {
        return not_found();
    };
    match result {
        Ok(t) => {
            let mut r = json(
                StatusCode::OK,
                serde_json::json!({
                    "access_token": t.access_token,
                    "refresh_token": t.refresh_token,
                    "token_type": "Bearer",
                    "expires_in": t.expires_in,
                    "scope": t.scope,
                }),
            );
            no_store(&mut r);
            r
        }
        Err(e) => {
            tracing::debug!(host = %call.target.host, error = %e, "fakedog refused a token request");
            e.into_response()
        }
    }
}

/// `POST /oauth2/v1/revoke`.
pub(crate) async fn revoke(call: FormCall) -> Response {
    let Some(result) = call.answer(|rec| &mut rec.revoke_calls, State::revoke) else {
        return not_found();
    };
    match result {
        Ok(()) => {
            let mut r = StatusCode::OK.into_response();
            no_store(&mut r);
            r
        }
        Err(e) => e.into_response(),
    }
}

/// Tokens issued by one token call.
struct Issued {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
    scope: String,
}

impl AuthRequest {
    fn is_region_picker(&self) -> bool {
        self.host == crate::site::us1().web_host
    }
}

impl State {
    fn authorize(&mut self, target: &Target, params: &Params, query: &str) -> Answer {
        let Some(client_id) = params.get("client_id") else {
            return Answer::error("invalid_request - Missing client_id parameter", "");
        };
        let Some(client) = self.clients.get(client_id) else {
            return Answer::error(
                "invalid_request - Invalid client_id parameter value",
                "No OAuth client with this client_id is registered.",
            );
        };
        let Some(redirect_uri) = params.get("redirect_uri") else {
            return Answer::error("invalid_request - Missing redirect_uri parameter", "");
        };
        if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
            return Answer::error(
                "invalid_request - Mismatching redirect URI",
                "The redirect_uri must exactly match one registered on the OAuth client.",
            );
        }
        let client_scopes = client.scopes.clone();
        let state = params.get("state");
        let fail = |error: &str, description: &str| {
            error_redirect(redirect_uri, state, error, description, false)
        };
        if let Some(name) = params.repeated() {
            return fail("invalid_request", &format!("parameter {name} is repeated"));
        }
        match params.get("response_type") {
            Some("code") => {}
            None => return fail("invalid_request", "response_type is required"),
            Some(_) => return fail("unsupported_response_type", "response_type must be code"),
        }
        let Some(challenge) = params.get("code_challenge") else {
            return fail("invalid_request", "code_challenge is required (PKCE)");
        };
        if params.get("code_challenge_method") != Some("S256") {
            return fail("invalid_request", "code_challenge_method must be S256");
        }
        if !is_s256_challenge(challenge) {
            return fail(
                "invalid_request",
                "code_challenge must be base64url(SHA-256(code_verifier)): 43 characters",
            );
        }
        if let Some(scope) = params.get("scope")
            && let Some(bad) = scope
                .split_ascii_whitespace()
                .find(|s| !client_scopes.iter().any(|c| c == s))
        {
            return fail(
                "invalid_scope",
                &format!("scope {bad} is not configured on this OAuth client"),
            );
        }
        // Marketplace clients get every configured scope (docs/datadog.md
        // "Authorize").
        let req = AuthRequest {
            client_id: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            state: state.map(str::to_string),
            challenge: challenge.to_string(),
            scopes: client_scopes,
            host: target.host.clone(),
            site: target.site,
            query: query.to_string(),
        };
        let preselected = match params.get("dd_oid") {
            Some(id) => match self.orgs.iter().find(|o| o.id == id) {
                Some(o) => Some(o.clone()),
                None => {
                    return Answer::error(
                        "invalid_request - Invalid dd_oid parameter value",
                        "No organization with this id exists.",
                    );
                }
            },
            None => self
                .logged_in
                .as_deref()
                .and_then(|id| self.org(id))
                .cloned(),
        };
        let org = match preselected {
            Some(org) => org,
            None => {
                // Not signed in: the host's own orgs, and on the region
                // picker every other org after them.
                let mut candidates: Vec<Org> = self
                    .orgs
                    .iter()
                    .filter(|o| o.site == target.site)
                    .cloned()
                    .collect();
                if target.is_region_picker() {
                    candidates.extend(self.orgs.iter().filter(|o| o.site != target.site).cloned());
                }
                match candidates.len() {
                    0 => {
                        return Answer::error(
                            "No organization exists on this Datadog site",
                            &format!(
                                "Create one on {} (ddrelay fakedog --org name=..,site={}).",
                                target.site.name, target.site.domain
                            ),
                        );
                    }
                    1 => candidates.remove(0),
                    _ if self.auto_consent => candidates.remove(0),
                    _ => return self.consent_page(req, None, candidates),
                }
            }
        };
        self.proceed(req, org, false)
    }

    /// Region and ownership checks for a chosen org, then consent or a code.
    fn proceed(&mut self, req: AuthRequest, org: Org, consented: bool) -> Answer {
        if org.site != req.site {
            if req.is_region_picker() {
                let mut url = match url::Url::parse(&format!(
                    "https://{}/oauth2/v1/authorize",
                    org.site.web_host
                )) {
                    Ok(u) => u,
                    Err(_) => return Answer::error("internal error", ""),
                };
                {
                    let params = Params::from_form(req.query.as_bytes());
                    let mut q = url.query_pairs_mut();
                    for (k, v) in params.iter().filter(|(k, _)| *k != "dd_oid") {
                        q.append_pair(k, v);
                    }
                    q.append_pair("dd_oid", &org.id);
                }
                tracing::debug!(org = %org.id, site = %org.site.domain, "fakedog region picker redirects");
                return Answer::Redirect {
                    location: url.into(),
                    see_other: consented,
                };
            }
            return Answer::error(
                &format!(
                    "The organization {} belongs to the Datadog site {} ({}), not {} ({})",
                    org.name, org.site.name, org.site.web_host, req.site.name, req.host
                ),
                "Authorize on your organization's own site, or start from app.datadoghq.com to pick your region.",
            );
        }
        let Some(client) = self.clients.get(&req.client_id) else {
            return Answer::error("invalid_request - Invalid client_id parameter value", "");
        };
        if !client.published && client.owner.as_deref() != Some(org.id.as_str()) {
            return Answer::error(
                "invalid_request - Invalid client_id parameter value",
                "This OAuth client is not published yet: only users of its owner organization can authorize it.",
            );
        }
        if consented || self.auto_consent {
            return self.issue_code(req, &org, consented);
        }
        self.consent_page(req, Some(org), Vec::new())
    }

    fn consent_page(&mut self, req: AuthRequest, org: Option<Org>, candidates: Vec<Org>) -> Answer {
        let now = self.now();
        self.consents.retain(|_, c| c.expires > now);
        let id = random_token(24);
        let client_name = self
            .clients
            .get(&req.client_id)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let html = pages::consent(&pages::ConsentView {
            consent_id: &id,
            client_name: &client_name,
            scopes: &req.scopes,
            host: &req.host,
            site: req.site,
            org: org.as_ref(),
            candidates: &candidates,
        });
        self.consents.insert(
            id,
            Consent {
                req,
                org: org.map(|o| o.id),
                candidates: candidates.into_iter().map(|o| o.id).collect(),
                expires: now + CONSENT_TTL,
            },
        );
        Answer::Consent { html }
    }

    fn decide(&mut self, target: &Target, params: &Params) -> Answer {
        let expired = || {
            Answer::error(
                "This authorization request is unknown, expired or already answered",
                "Start the authorization again from the partner's site.",
            )
        };
        let Some(consent) = params
            .get("consent_id")
            .and_then(|id| self.consents.remove(id))
        else {
            return expired();
        };
        if consent.expires <= self.now() || consent.req.host != target.host {
            return expired();
        }
        match params.get("decision") {
            Some("deny") => error_redirect(
                &consent.req.redirect_uri,
                consent.req.state.as_deref(),
                "access_denied",
                "The user denied access",
                true,
            ),
            Some("authorize") => {
                let org_id = match (&consent.org, params.get("dd_oid")) {
                    (Some(id), _) => Some(id.clone()),
                    (None, Some(chosen)) => {
                        consent.candidates.iter().find(|c| *c == chosen).cloned()
                    }
                    (None, None) => consent.candidates.first().cloned(),
                };
                match org_id.and_then(|id| self.org(&id).cloned()) {
                    Some(org) => self.proceed(consent.req, org, true),
                    None => Answer::error("invalid_request - Invalid dd_oid parameter value", ""),
                }
            }
            _ => Answer::error("invalid_request - Missing decision", ""),
        }
    }

    fn issue_code(&mut self, req: AuthRequest, org: &Org, see_other: bool) -> Answer {
        let code = random_token(24);
        let site = format!("https://{}", req.host);
        let mut pairs = vec![("code", code.as_str())];
        if let Some(s) = req.state.as_deref() {
            pairs.push(("state", s));
        }
        pairs.extend([
            ("domain", org.site.domain),
            ("site", site.as_str()),
            ("dd_oid", org.id.as_str()),
            ("dd_org_name", org.name.as_str()),
        ]);
        let Some(location) = with_query(&req.redirect_uri, &pairs) else {
            return Answer::error("invalid_request - Mismatching redirect URI", "");
        };
        tracing::info!(client = %req.client_id, org = %org.id, site = %org.site.domain, "fakedog issued an authorization code");
        let expires = self.now() + CODE_TTL;
        self.codes.insert(
            code,
            Code {
                client_id: req.client_id,
                redirect_uri: req.redirect_uri,
                challenge: req.challenge,
                org: org.id.clone(),
                scopes: req.scopes,
                expires,
                used: false,
                grant: None,
            },
        );
        Answer::Redirect {
            location,
            see_other,
        }
    }

    /// Client authentication (RFC 6749 §2.3.1): the client's id.
    fn authenticate(&self, basic: Basic, p: &Params) -> Result<String, OAuthError> {
        let (id, secret) = match basic {
            Basic::Malformed => {
                return Err(OAuthError::InvalidClient(
                    "malformed Basic credentials".into(),
                ));
            }
            Basic::Given(id, secret) => {
                if p.get("client_secret").is_some() {
                    return Err(OAuthError::InvalidRequest(
                        "use only one client authentication method".into(),
                    ));
                }
                (id, Some(secret))
            }
            Basic::Absent => match p.get("client_id") {
                Some(id) => (id.to_string(), p.get("client_secret").map(str::to_string)),
                None => {
                    return Err(OAuthError::InvalidClient(
                        "Client authentication failed: client_id is required".into(),
                    ));
                }
            },
        };
        let Some(client) = self.clients.get(&id) else {
            return Err(OAuthError::InvalidClient(
                "Client authentication failed".into(),
            ));
        };
        if p.get("client_id").is_some_and(|b| b != client.id) {
            return Err(OAuthError::InvalidRequest(
                "client_id does not match the authenticated client".into(),
            ));
        }
        let Some(secret) = secret else {
            return Err(OAuthError::InvalidClient(
                "Client authentication failed: client_secret is required".into(),
            ));
        };
        if !ct_eq(secret.as_bytes(), client.secret.expose().as_bytes()) {
            return Err(OAuthError::InvalidClient(
                "Client authentication failed".into(),
            ));
        }
        Ok(client.id.clone())
    }

    fn token(&mut self, target: &Target, basic: Basic, p: &Params) -> Result<Issued, OAuthError> {
        let client = self.authenticate(basic, p)?;
        match p.get("grant_type") {
            Some("authorization_code") => self.exchange(target, &client, p),
            Some("refresh_token") => self.refresh_grant(target, &client, p),
            Some(other) => Err(OAuthError::UnsupportedGrantType(format!(
                "grant_type {other} is not supported"
            ))),
            None => Err(OAuthError::InvalidRequest("grant_type is required".into())),
        }
    }

    fn exchange(
        &mut self,
        target: &Target,
        client: &str,
        p: &Params,
    ) -> Result<Issued, OAuthError> {
        let bad = || OAuthError::InvalidGrant(INVALID_CODE.into());
        let code = p
            .get("code")
            .ok_or_else(|| OAuthError::InvalidRequest("code is required".into()))?;
        let rec = self.codes.get(code).cloned().ok_or_else(bad)?;
        let org = self.org(&rec.org).cloned().ok_or_else(bad)?;
        let (path, what) = ("/oauth2/v1/token", "authorization code");
        if self.wrong_site(target, path, &org.id, org.site, what, "presented") {
            return Err(bad());
        }
        if rec.client_id != client {
            return Err(bad());
        }
        if rec.used {
            if let Some(g) = rec.grant.and_then(|g| self.grants.get_mut(&g)) {
                g.revoked = true;
            }
            return Err(OAuthError::InvalidGrant(
                "authorization code already used; the tokens issued from it are revoked".into(),
            ));
        }
        if self.now() >= rec.expires {
            return Err(OAuthError::InvalidGrant(
                "authorization code expired".into(),
            ));
        }
        if p.get("redirect_uri") != Some(rec.redirect_uri.as_str()) {
            return Err(OAuthError::InvalidGrant(
                "redirect_uri does not match the authorization request".into(),
            ));
        }
        let verifier = p.get("code_verifier").ok_or_else(bad)?;
        if !is_verifier(verifier)
            || !ct_eq(challenge_of(verifier).as_bytes(), rec.challenge.as_bytes())
        {
            return Err(bad());
        }
        let grant = self.next_id();
        self.grants.insert(
            grant,
            Grant {
                client_id: client.to_string(),
                org: org.id.clone(),
                scopes: rec.scopes.clone(),
                revoked: false,
            },
        );
        if let Some(c) = self.codes.get_mut(code) {
            c.used = true;
            c.grant = Some(grant);
        }
        tracing::info!(client = %client, org = %org.id, host = %target.host, "fakedog exchanged a code");
        Ok(self.issue_tokens(grant))
    }

    fn refresh_grant(
        &mut self,
        target: &Target,
        client: &str,
        p: &Params,
    ) -> Result<Issued, OAuthError> {
        let invalid = || OAuthError::InvalidGrant("Invalid refresh token".into());
        let token = p
            .get("refresh_token")
            .ok_or_else(|| OAuthError::InvalidRequest("refresh_token is required".into()))?;
        let rec = self.refresh.get(token).cloned().ok_or_else(invalid)?;
        let grant = self.grants.get(&rec.grant).cloned().ok_or_else(invalid)?;
        let org = self.org(&grant.org).cloned().ok_or_else(invalid)?;
        let (path, what) = ("/oauth2/v1/token", "refresh token");
        if self.wrong_site(target, path, &org.id, org.site, what, "presented") {
            return Err(invalid());
        }
        if grant.client_id != client {
            return Err(invalid());
        }
        if grant.revoked {
            return Err(OAuthError::InvalidGrant(
                "the authorization was revoked".into(),
            ));
        }
        if rec.rotated {
            if let Some(g) = self.grants.get_mut(&rec.grant) {
                g.revoked = true;
            }
            tracing::info!(org = %org.id, "fakedog saw a rotated refresh token reused; grant revoked");
            return Err(OAuthError::InvalidGrant(
                "refresh token already used; the authorization is revoked".into(),
            ));
        }
        if let Some(r) = self.refresh.get_mut(token) {
            r.rotated = true;
        }
        Ok(self.issue_tokens(rec.grant))
    }

    fn issue_tokens(&mut self, grant: u64) -> Issued {
        let access_token = random_token(32);
        let refresh_token = random_token(32);
        let expires = self.now() + self.token_ttl;
        self.access.insert(
            access_token.clone(),
            AccessToken {
                grant,
                expires,
                revoked: false,
            },
        );
        self.refresh.insert(
            refresh_token.clone(),
            RefreshToken {
                grant,
                rotated: false,
            },
        );
        let scope = self
            .grants
            .get(&grant)
            .map(|g| g.scopes.join(" "))
            .unwrap_or_default();
        Issued {
            access_token,
            refresh_token,
            expires_in: self.token_ttl.as_secs(),
            scope,
        }
    }

    fn revoke(&mut self, target: &Target, basic: Basic, p: &Params) -> Result<(), OAuthError> {
        let client = self.authenticate(basic, p)?;
        let token = p
            .get("token")
            .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))?;
        // token_type_hint is only a hint (RFC 7009 §2.1): look in both.
        let access = self.access.get(token).map(|a| a.grant);
        let refresh = self.refresh.get(token).map(|r| r.grant);
        let Some(grant_id) = access.or(refresh) else {
            return Ok(());
        };
        let Some(grant) = self.grants.get(&grant_id).cloned() else {
            return Ok(());
        };
        let Some(org) = self.org(&grant.org).cloned() else {
            return Ok(());
        };
        if self.wrong_site(
            target,
            "/oauth2/v1/revoke",
            &org.id,
            org.site,
            "token",
            "revoked",
        ) {
            return Ok(());
        }
        if grant.client_id != client {
            return Ok(());
        }
        if access.is_some() {
            if let Some(a) = self.access.get_mut(token) {
                a.revoked = true;
            }
        } else if let Some(g) = self.grants.get_mut(&grant_id) {
            g.revoked = true;
        }
        tracing::info!(org = %org.id, "fakedog revoked a token");
        Ok(())
    }

    /// The live grant behind a bearer access token.
    pub(crate) fn bearer_grant(&self, token: &str) -> Option<&Grant> {
        let a = self.access.get(token)?;
        if a.revoked || self.now() >= a.expires {
            return None;
        }
        self.grants.get(&a.grant).filter(|g| !g.revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(is_s256_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!is_s256_challenge("12345"));
        assert!(is_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert!(!is_verifier("short"));
    }

    #[test]
    fn params_treat_empty_as_absent_and_find_repeats() {
        let p = Params::from_form(b"a=1&b=&a=2&c=x%20y");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert_eq!(p.get("c"), Some("x y"));
        assert_eq!(p.repeated(), Some("a"));
    }

    #[test]
    fn json_bodies_are_accepted() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        let p = body_params(&h, br#"{"grant_type":"refresh_token","n":3,"x":null}"#).unwrap();
        assert_eq!(p.get("grant_type"), Some("refresh_token"));
        assert_eq!(p.get("n"), Some("3"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(body_params(&h, b"a=b").is_err());
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode("my%20id:s%3Acret");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
        );
        match basic_auth(&h) {
            Basic::Given(id, secret) => {
                assert_eq!((id.as_str(), secret.as_str()), ("my id", "s:cret"))
            }
            _ => panic!("not parsed"),
        }
    }
}
