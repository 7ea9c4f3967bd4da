//! The OAuth onboarding flow: authorize URLs with PKCE and `state`, and the
//! callback that exchanges the code, creates the tenant's API key and stores
//! everything sealed.
//!
//! Security rules enforced here (see SECURITY.md):
//! - `state` is random, single use (the store's DELETE … RETURNING decides a
//!   race), expires after `oauth.state_ttl`, and is bound to the tenant, the
//!   PKCE verifier, the OAuth client and the site the flow started at.
//! - The callback's `domain` decides where the client secret is sent, so it
//!   must be *exactly* an allowed site domain, and the same site the flow
//!   started at unless it started at the US1 region picker. Anything else is
//!   refused before any outbound request.
//! - Pages never show a secret and escape every value.
//!
//! This module decides the flow; what the callback's code becomes (the
//! token exchange, the API key, storing them sealed, the tenant's new
//! state) is `credentials.rs`'s ([`crate::credentials::Credentials`]), and
//! the pending flows are rows of the store.

pub(crate) mod pages;
pub(crate) mod pkce;

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::clock::now;
use crate::config::ClientCredentials;
use crate::credentials::{ConnectFailure, Credentials, Granted, KEY_EXISTS_REASON};
use crate::datadog::{KeyError, TokenError};
use crate::site::{AllowedSites, Site, SiteError, WebSite, us1};
use crate::store::{Flow, Reason, ReasonCode, Store, StoreError, TenantState};
use crate::telemetry::metrics::Metrics;
use crate::tenant::{ConfigHandle, Tenants, validate_id};
use pages::Page;

/// What the connect flow needs, given by `app.rs`: the tenants (states),
/// the credentials (code exchange, key, connection), the store (pending
/// flows), the config and the metrics.
pub(crate) struct OAuth {
    pub(crate) tenants: Arc<Tenants>,
    pub(crate) credentials: Arc<Credentials>,
    pub(crate) store: Store,
    pub(crate) config: ConfigHandle,
    pub(crate) metrics: Arc<Metrics>,
    /// Told of every connect completed (`app.rs` sends the test event on
    /// connect through it).
    pub(crate) on_connected: Option<Arc<dyn OnConnected>>,
}

/// What happens once a tenant is connected and stored. Called on the
/// callback's path: it must return at once, and whatever it starts may
/// neither block nor fail the callback.
pub(crate) trait OnConnected: Send + Sync {
    fn connected(&self, tenant: &str);
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth").finish_non_exhaustive()
    }
}

impl OAuth {
    fn config(&self) -> Arc<crate::config::Config> {
        self.config.load_full()
    }
}

/// Body of `POST /v1/tenants/{tenant}/connect`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConnectRequest {
    /// The `site` Datadog passed to the onboarding URL, a bare host, or a
    /// site domain. Absent: the US1 region picker.
    #[serde(default)]
    pub(crate) site: Option<String>,
    /// `"test"` to use `[oauth.test_client]`.
    #[serde(default)]
    pub(crate) client: Option<String>,
}

/// Answer of `POST /v1/tenants/{tenant}/connect`.
#[derive(Debug, Serialize)]
pub(crate) struct ConnectResponse {
    pub(crate) tenant: String,
    pub(crate) authorize_url: String,
    /// Unix seconds after which the flow's state is refused.
    pub(crate) expires_at: i64,
    /// The site the flow is bound to, or `null` when the user picks a region.
    pub(crate) site: Option<&'static str>,
}

/// Why a connect could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("{0}")]
    Site(#[from] SiteError),
    #[error("invalid tenant id: {0}")]
    Tenant(#[from] crate::tenant::IdError),
    #[error("no [oauth.test_client] is configured, so {{\"client\": \"test\"}} cannot be used")]
    NoTestClient,
    #[error("unknown client `{0}`; expected \"test\" or omit it")]
    UnknownClient(String),
    #[error("store error: {0}")]
    Store(#[from] StoreError),
}

/// Starts a connect flow for `tenant`: returns the authorize URL.
pub async fn connect(
    oauth: &OAuth,
    tenant: &str,
    req: ConnectRequest,
) -> Result<ConnectResponse, ConnectError> {
    validate_id(tenant)?;
    let config = oauth.config();
    let web = match req.site.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(site) => config.datadog.allowed_sites.web_site(site)?,
        None => WebSite {
            site: us1(),
            host: us1().web_host.to_string(),
        },
    };
    let client = match req.client.as_deref() {
        None | Some("") | Some("published") | Some("default") => config.oauth.client.clone(),
        Some("test") => config
            .oauth
            .test_client
            .clone()
            .ok_or(ConnectError::NoTestClient)?,
        Some(other) => return Err(ConnectError::UnknownClient(other.to_string())),
    };
    let verifier = pkce::verifier();
    let state = pkce::state();
    let created_at = now();
    let expires_at = created_at + config.oauth.state_ttl.as_secs() as i64;
    let bound = if web.is_region_picker() {
        None
    } else {
        Some(web.site.domain)
    };
    oauth.store.purge_expired_flows(created_at).await?;
    oauth
        .store
        .create_flow(&Flow {
            state_hash: pkce::state_hash(state.expose()),
            tenant: tenant.to_string(),
            verifier: verifier.clone(),
            web_host: web.host.clone(),
            domain: bound.map(str::to_string),
            client_id: client.client_id.clone(),
            created_at,
            expires_at,
        })
        .await?;
    oauth.tenants.touch_pending(tenant).await?;
    let mut url = url::Url::parse(&web.authorize_url())
        .map_err(|_| SiteError::Malformed(web.host.clone(), "bad host"))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("redirect_uri", config.oauth.redirect_uri.as_str());
        q.append_pair("client_id", &client.client_id);
        q.append_pair("response_type", "code");
        q.append_pair("state", state.expose());
        q.append_pair("code_challenge", &pkce::challenge(&verifier));
        q.append_pair("code_challenge_method", "S256");
        if !config.oauth.scopes.is_empty() {
            q.append_pair("scope", &config.oauth.scopes.join(" "));
        }
    }
    oauth.metrics.oauth("connect", "started");
    tracing::info!(tenant = %tenant, authorize_host = %web.host, bound_site = bound.unwrap_or("any"), "connect flow started");
    Ok(ConnectResponse {
        tenant: tenant.to_string(),
        authorize_url: url.to_string(),
        expires_at,
        site: bound,
    })
}

/// The site each started, unfinished connect named, by tenant (the newest
/// connect of a tenant wins; a connect that named no site is left out).
pub(crate) async fn pending_sites(oauth: &OAuth) -> Result<HashMap<String, String>, StoreError> {
    Ok(oauth
        .store
        .flow_sites(now())
        .await?
        .into_iter()
        .filter_map(|(tenant, site)| Some((tenant, site?)))
        .collect())
}

/// The query Datadog sends to the redirect URI.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CallbackQuery {
    pub(crate) code: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) domain: Option<String>,
    pub(crate) site: Option<String>,
    pub(crate) dd_oid: Option<String>,
    pub(crate) dd_org_name: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) error_description: Option<String>,
}

/// Longest value accepted for any callback parameter.
pub(crate) const MAX_PARAM: usize = 2048;

impl CallbackQuery {
    /// True when a parameter is longer than [`MAX_PARAM`] bytes.
    pub(crate) fn any_too_long(&self) -> bool {
        [
            &self.code,
            &self.state,
            &self.domain,
            &self.site,
            &self.dd_oid,
            &self.dd_org_name,
            &self.error,
            &self.error_description,
        ]
        .iter()
        .any(|v| v.as_ref().is_some_and(|s| s.len() > MAX_PARAM))
    }
}

fn bad(
    status: StatusCode,
    title: &str,
    message: impl Into<String>,
    advice: impl Into<String>,
) -> Page {
    Page::failure(status, title, message, advice)
}

const START_AGAIN: &str =
    "Start the connection again from the Datadog integration tile (Connect Accounts).";

/// The callback's checks on its own parameters, before anything is looked
/// up: every parameter at most [`MAX_PARAM`] bytes, and a non-empty
/// `state`. Returns the state. Pure, so it is fuzzed
/// (`fuzz/fuzz_targets/callback_query.rs`).
pub(crate) fn check_params(q: &CallbackQuery) -> Result<&str, Page> {
    if q.any_too_long() {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "A parameter of this request is too long.",
            START_AGAIN,
        ));
    }
    q.state.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
        bad(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "This page was opened without the `state` parameter that ties it to a connection you started.",
            START_AGAIN,
        )
    })
}

/// The site a callback's `domain` names: it decides where the client
/// secret and the code are sent, so it must be *exactly* the domain of an
/// allowed site (`datadoghq.eu`, never `app.datadoghq.eu`,
/// `datadoghq.eu.evil.example` or a custom subdomain). Pure, so it is
/// fuzzed (`fuzz/fuzz_targets/callback_query.rs`).
pub(crate) fn callback_site(
    allowed: &AllowedSites,
    domain: Option<&str>,
) -> Result<&'static Site, Page> {
    let Some(domain) = domain.filter(|d| !d.is_empty()) else {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "Datadog's answer did not say which Datadog site your account is on (`domain`).",
            START_AGAIN,
        ));
    };
    allowed.by_domain(domain).map_err(|_| {
        bad(
            StatusCode::BAD_REQUEST,
            "Unsupported Datadog site",
            format!("`{domain}` is not a Datadog site this service can connect to."),
            "If your Datadog account is on another site, contact the service's support.",
        )
    })
}

/// Handles `GET /oauth/callback`: the whole second half of the flow.
pub(crate) async fn callback(oauth: &Arc<OAuth>, q: CallbackQuery) -> Page {
    let metrics = &oauth.metrics;
    let state = match check_params(&q) {
        Ok(state) => state,
        Err(page) => {
            let label = if q.any_too_long() {
                "malformed"
            } else {
                "missing_state"
            };
            metrics.oauth("callback", label);
            return page;
        }
    };
    let flow = match oauth.store.take_flow(&pkce::state_hash(state)).await {
        Ok(Some(f)) => f,
        Ok(None) => {
            metrics.oauth("callback", "unknown_state");
            return bad(
                StatusCode::BAD_REQUEST,
                "Link expired or already used",
                "This authorization link is unknown or was already used. Each link works once.",
                START_AGAIN,
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "store unavailable during oauth callback");
            metrics.oauth("callback", "store_error");
            return bad(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The connection could not be completed.",
                "Please try again in a minute.",
            );
        }
    };
    let tenant = flow.tenant.clone();
    // The flow may have started on another replica: read the tenant now
    // rather than at the next sync.
    if let Err(e) = oauth.tenants.reload(&tenant).await {
        tracing::warn!(tenant = %tenant, error = %e, "cannot re-read the tenant during oauth callback");
    }
    if flow.expires_at < now() {
        metrics.oauth("callback", "expired_state");
        tracing::info!(tenant = %tenant, "oauth callback with an expired state");
        return bad(
            StatusCode::BAD_REQUEST,
            "Link expired",
            "This authorization link has expired.",
            START_AGAIN,
        );
    }
    if let Some(error) = q.error.as_deref() {
        let (title, message) = if error == "access_denied" {
            (
                "Access was not granted",
                "The connection was cancelled: access was denied on Datadog's authorization page."
                    .to_string(),
            )
        } else {
            (
                "Datadog reported an error",
                format!(
                    "Datadog reported `{error}`{}.",
                    q.error_description
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                ),
            )
        };
        metrics.oauth(
            "callback",
            if error == "access_denied" {
                "denied"
            } else {
                "error"
            },
        );
        tracing::info!(tenant = %tenant, error = %error, "oauth callback carried an error");
        note_pending_reason(
            oauth,
            &tenant,
            &format!("the last connect attempt ended with `{error}` at Datadog"),
        )
        .await;
        return bad(StatusCode::FORBIDDEN, title, message, START_AGAIN);
    }
    let config = oauth.config();
    let site: &'static Site = match callback_site(
        &config.datadog.allowed_sites,
        q.domain.as_deref(),
    ) {
        Ok(s) => s,
        Err(page) => {
            match q.domain.as_deref().filter(|d| !d.is_empty()) {
                None => metrics.oauth("callback", "missing_domain"),
                Some(domain) => {
                    metrics.oauth("callback", "bad_domain");
                    tracing::warn!(tenant = %tenant, domain = %domain.chars().take(100).collect::<String>(), "oauth callback with a domain that is not an allowed Datadog site; nothing contacted");
                }
            }
            return page;
        }
    };
    if let Some(bound) = flow.domain.as_deref()
        && bound != site.domain
    {
        metrics.oauth("callback", "site_mismatch");
        tracing::warn!(tenant = %tenant, started = %bound, returned = %site.domain, "oauth callback site differs from the one the flow started at; nothing contacted");
        return bad(
            StatusCode::BAD_REQUEST,
            "Datadog site mismatch",
            format!(
                "The connection was started for {bound} but Datadog answered for {}.",
                site.domain
            ),
            START_AGAIN,
        );
    }
    let Some(code) = q.code.clone().filter(|c| !c.is_empty()) else {
        metrics.oauth("callback", "missing_code");
        return bad(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "Datadog's answer carried no authorization code.",
            START_AGAIN,
        );
    };
    let Some(client) = config.oauth.client(&flow.client_id).cloned() else {
        metrics.oauth("callback", "unknown_client");
        return bad(
            StatusCode::BAD_REQUEST,
            "Configuration changed",
            "The OAuth client this connection started with is no longer configured.",
            START_AGAIN,
        );
    };

    // What follows changes credentials at Datadog (a code is single use, a
    // key is created once per org): it runs on its own task, so a browser
    // that gives up mid-way cannot leave a key created and not stored.
    let oauth = oauth.clone();
    let done = crate::credentials::detached(async move {
        complete(&oauth, &q, &flow, site, &client, &code).await
    })
    .await;
    done.unwrap_or_else(|| {
        bad(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "The service is shutting down.",
            START_AGAIN,
        )
    })
}

/// The callback's second half, after every check: exchange the code,
/// enforce one org per tenant, then let the credentials get the API key and
/// store the connection.
async fn complete(
    oauth: &OAuth,
    q: &CallbackQuery,
    flow: &Flow,
    site: &'static Site,
    client: &ClientCredentials,
    code: &str,
) -> Page {
    let metrics = &oauth.metrics;
    let config = oauth.config();
    let tenant = flow.tenant.clone();
    // 1. Exchange the code.
    let redirect = config.oauth.redirect_uri.as_str();
    let tokens = match oauth
        .credentials
        .exchange_code(site, client, code, &flow.verifier, redirect)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            metrics.oauth("token_exchange", e.label());
            tracing::warn!(tenant = %tenant, site = %site.domain, error = %e, "code exchange failed");
            let page = token_error_page(&e);
            let why = format!("code exchange failed: {}", page.message);
            note_pending_reason(oauth, &tenant, &why).await;
            return page;
        }
    };
    metrics.oauth("token_exchange", "ok");
    let org_id = q.dd_oid.clone().filter(|s| !s.is_empty());

    // 2. One Datadog org, one tenant: refuse a second tenant for the same org
    //    (the org can hold only one key for this integration).
    if let Some(org) = &org_id {
        match oauth.store.tenant_for_org(org, &tenant).await {
            Ok(Some(other)) => {
                metrics.oauth("callback", "org_taken");
                tracing::warn!(tenant = %tenant, other_tenant = %other, org = %org, "datadog org already connected to another tenant; refusing");
                oauth.credentials.revoke_tokens(site, client, &tokens).await;
                let why = format!("Datadog org {org} is already connected to tenant {other}");
                note_pending_reason(oauth, &tenant, &why).await;
                return bad(
                    StatusCode::CONFLICT,
                    "Already connected",
                    "This Datadog organization is already connected to another account of this service.",
                    "Disconnect it there first, or sign in to the account it is connected to.",
                );
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "store unavailable during oauth callback");
                return bad(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Temporarily unavailable",
                    "The connection could not be completed.",
                    "Please try again in a minute.",
                );
            }
        }
    }

    // 3. The API key and the connection, stored together.
    let granted = Granted {
        site,
        org_id: org_id.clone(),
        org_name: q.dd_org_name.clone().filter(|s| !s.is_empty()),
        client,
        tokens,
    };
    match oauth.credentials.complete_connect(&tenant, granted).await {
        Ok(()) => {}
        Err(ConnectFailure::Key(e)) => {
            tracing::warn!(tenant = %tenant, site = %site.domain, error = %e, "api key creation failed during connect");
            let reason = match e {
                KeyError::Exists => Reason::new(ReasonCode::KeyConflict, KEY_EXISTS_REASON),
                _ => Reason::new(
                    ReasonCode::ConnectFailed,
                    format!("API key creation failed: {e}"),
                ),
            };
            note_failed_connect(oauth, &tenant, &reason).await;
            return key_error_page(&e);
        }
        Err(ConnectFailure::Store(e)) => {
            tracing::error!(tenant = %tenant, error = %e, "cannot store the new connection");
            metrics.oauth("callback", "store_error");
            return bad(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The connection could not be saved.",
                START_AGAIN,
            );
        }
    }
    metrics.oauth("callback", "connected");
    tracing::info!(tenant = %tenant, site = %site.domain, org = org_id.as_deref().unwrap_or("-"), "tenant connected");
    if let Some(hook) = &oauth.on_connected {
        hook.connected(&tenant);
    }
    Page::success(
        q.dd_org_name.as_deref().filter(|s| !s.is_empty()),
        site.domain,
    )
}

/// Records why the last connect attempt failed, on a tenant that is not
/// connected (a connected tenant keeps delivering with what it has).
async fn note_pending_reason(oauth: &OAuth, tenant: &str, reason: &str) {
    if let Some(e) = oauth.tenants.get(tenant)
        && e.state() == TenantState::Pending
    {
        let reason = Reason::new(ReasonCode::ConnectFailed, reason);
        let _ = oauth
            .tenants
            .set_state(tenant, TenantState::Pending, Some(&reason))
            .await;
    }
}

/// A failed key creation: a never-connected tenant stays pending with the
/// reason; a tenant that was connected needs reauthorization.
async fn note_failed_connect(oauth: &OAuth, tenant: &str, reason: &Reason) {
    if let Some(e) = oauth.tenants.get(tenant) {
        let state = match e.state() {
            TenantState::Pending | TenantState::Disconnected => TenantState::Pending,
            _ => TenantState::ReauthRequired,
        };
        let _ = oauth.tenants.set_state(tenant, state, Some(reason)).await;
    }
}

/// The page for a site taken off `datadog.allowed_sites` mid-connect.
fn site_not_allowed_page() -> Page {
    bad(
        StatusCode::BAD_REQUEST,
        "Unsupported Datadog site",
        "This Datadog site is no longer one this service connects to.",
        "If your Datadog account is on another site, contact the service's support.",
    )
}

/// Maps Datadog's documented token errors to guidance.
fn token_error_page(e: &TokenError) -> Page {
    match e {
        TokenError::Refused {
            error,
            description,
            status,
        } => {
            let text = format!("{error} {}", description.as_deref().unwrap_or_default())
                .to_ascii_lowercase();
            if text.contains("redirect") {
                bad(
                    StatusCode::BAD_REQUEST,
                    "Connection misconfigured",
                    "Datadog rejected the redirect URI (Mismatching redirect URI).",
                    "The service's oauth.redirect_uri must exactly match a redirect URI registered on its OAuth client. Please contact the service's support.",
                )
            } else if error == "invalid_client" || text.contains("client_id") || *status == 401 {
                bad(
                    StatusCode::BAD_REQUEST,
                    "Connection misconfigured",
                    "Datadog rejected this service's OAuth client credentials.",
                    "The service's client id or client secret is wrong or was rotated. Please contact the service's support.",
                )
            } else if error == "invalid_grant" || text.contains("code") {
                bad(
                    StatusCode::BAD_REQUEST,
                    "Authorization expired",
                    "Datadog did not accept the authorization code (Invalid code or code verifier): it expired or was already used.",
                    START_AGAIN,
                )
            } else {
                bad(
                    StatusCode::BAD_REQUEST,
                    "Datadog refused the connection",
                    format!("Datadog answered `{error}`."),
                    START_AGAIN,
                )
            }
        }
        TokenError::NotAllowed(_) => site_not_allowed_page(),
        TokenError::Unavailable(_) | TokenError::Unexpected { .. } => bad(
            StatusCode::BAD_GATEWAY,
            "Datadog unavailable",
            "Datadog could not be reached to complete the connection.",
            "Please try again in a few minutes.",
        ),
    }
}

fn key_error_page(e: &KeyError) -> Page {
    match e {
        KeyError::Exists => bad(
            StatusCode::CONFLICT,
            "An API key already exists",
            "Your Datadog organization already has an \"OAuth Client API Key\" for this integration, which this service cannot read.",
            "In Datadog, open Organization Settings > API Keys, revoke the key named \"OAuth Client API Key\" for this integration, then connect again.",
        ),
        KeyError::Forbidden { .. } => bad(
            StatusCode::FORBIDDEN,
            "Permission missing",
            "Datadog refused to create an API key: the integration's OAuth client lacks the api_keys_write scope.",
            "Please contact the service's support.",
        ),
        KeyError::NotAllowed(_) => site_not_allowed_page(),
        KeyError::Unavailable(_) | KeyError::Unexpected { .. } => bad(
            StatusCode::BAD_GATEWAY,
            "Datadog unavailable",
            "Datadog could not create the API key for this connection.",
            "Please try again in a few minutes.",
        ),
    }
}
