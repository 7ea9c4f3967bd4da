//! Credentials: the one owner of "a usable access token or API key for
//! tenant X".
//!
//! [`Credentials`] hands out, at send time and never earlier:
//! - what delivery sends with ([`Sending`]: site, API key and connection
//!   generation, read from one store row, cached until any of them changes);
//! - a fresh access token, refreshed **single-flight** per tenant across
//!   every replica: the refresh runs under the store's tenant lock
//!   ([`Store::lock_tenant`]), re-reads the tokens after taking it (another
//!   caller, here or on another replica, may have refreshed meanwhile) and
//!   persists the rotated refresh token in the same statement as the new
//!   access token, before the lock is released or either is used. A
//!   rotated refresh token is never presented twice.
//!
//! It owns every policy about credentials: the proxy's "refresh once and
//! retry" on 401/403 ([`Credentials::with_token`]), the intake's Forbidden
//! fallback ([`Credentials::recover_key`]: validate the key, refresh, new
//! key or `reauth_required`), key validation and creation for a connect and
//! for a recovery ([`Credentials::complete_connect`]), revocation
//! ([`Credentials::disconnect`]), the grant check ([`grant`]) and the
//! allow-list's effect on tenants. Each runs under the tenant lock, on its
//! own task ([`detached`]): a caller that is dropped cannot
//! leave a rotated token unstored or a created key orphaned. Callers match
//! one error enum, [`CredentialError`].
//!
//! A refresh that Datadog refuses for good (`invalid_grant`, 401) moves the
//! tenant to `reauth_required` with a reason an operator can act on.
//!
//! This module knows the tenants, the store, the Datadog client and the
//! config; it knows nothing of HTTP servers or the pipeline, and of the
//! queue only how a record stores a generation (`queue::stored_generation`).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::clock::now;
use crate::config::ClientCredentials;
use crate::datadog::{self, TokenError, Validity};
use crate::secret::Secret;
use crate::site::Site;
use crate::store::{Connection, Reason, ReasonCode, Store, StoreError, Tenant, TenantState};
use crate::telemetry::metrics::Metrics;
use crate::tenant::{ConfigHandle, Sending, Tenants};

pub(crate) mod grant;

/// A token that a forced refresh produced and Datadog then refused is not
/// refreshed again for this long: it is fresh, so a refusal is about scope
/// or permission. This keeps a caller polling an endpoint its grant does not
/// cover from rotating the tenant's refresh token on every call.
pub(crate) const FORCED_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// What the tenant status says after key creation answered 409.
pub(crate) const KEY_EXISTS_REASON: &str = "the Datadog org already has an \"OAuth Client API Key\" for this integration that ddrelay does not hold: \
     the customer must revoke \"OAuth Client API Key\" on Datadog's Organization Settings > API Keys page, then connect again";

/// Refresh an access token this long before it expires (Datadog's own
/// clients use a 300 s buffer: docs/datadog.md "Token").
pub(crate) const REFRESH_AHEAD: Duration = Duration::from_secs(300);

/// A token refreshed by a concurrent caller (here or on another replica) is
/// used if it has at least this many seconds left.
const MIN_REMAINING: i64 = 5;

/// Why credentials could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    #[error("tenant {0} does not exist")]
    Unknown(String),
    #[error("tenant {tenant} is {state}")]
    NotConnected { tenant: String, state: TenantState },
    #[error("tenant {0} has no stored {1}")]
    Missing(String, &'static str),
    #[error("tenant {tenant}: {message}")]
    Store { tenant: String, message: String },
    #[error("tenant {tenant}: token refresh failed: {error}")]
    Refresh { tenant: String, error: TokenError },
    #[error("the relay is shutting down")]
    ShuttingDown,
    #[error(
        "tenant {tenant}: the OAuth client {client_id} it was connected with is no longer configured"
    )]
    UnknownClient { tenant: String, client_id: String },
}

impl CredentialError {
    /// True when retrying later can help (Datadog or the store briefly unavailable).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            CredentialError::Refresh { error, .. } => matches!(error, TokenError::Unavailable(_)),
            CredentialError::Store { .. } | CredentialError::ShuttingDown => true,
            _ => false,
        }
    }
}

/// What the Forbidden fallback concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The key the request used was already replaced: just send again.
    AlreadyReplaced,
    /// A new key was created and stored: resume.
    NewKey,
    /// The key still validates: the 403 was something else (treat as transient).
    KeyStillValid,
    /// The customer must connect again; data is held.
    ReauthRequired(String),
    /// Datadog could not be asked (outage, 5xx, store): try again later.
    Undecided(String),
}

/// What disconnecting a tenant did at Datadog.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Revocation {
    /// `revoked`, `not_held`, or `failed: <why>`, per token.
    pub(crate) refresh_token: String,
    pub(crate) access_token: String,
}

/// Whether `record` is connected to this site and org (as `dd_oid` says:
/// see `Credentials::reusable_key` for what it is trusted with).
fn same_org(record: &Tenant, site: &Site, org_id: Option<&str>) -> bool {
    record.domain.as_deref() == Some(site.domain) && record.org_id.as_deref() == org_id
}

fn store_error(id: &str, e: StoreError) -> CredentialError {
    CredentialError::Store {
        tenant: id.to_string(),
        message: e.to_string(),
    }
}

fn fresh(expires_at: i64) -> bool {
    expires_at - now() > REFRESH_AHEAD.as_secs() as i64
}

/// Runs work that changes credentials at Datadog on its own task and
/// waits for it. Dropping the caller (a client hanging up, a timeout) no
/// longer stops the work halfway: a refresh whose rotated token Datadog
/// already issued is stored, a key Datadog already created is recorded.
/// `None` only when the runtime is shutting down; a panic in the work is
/// the caller's panic.
pub(crate) async fn detached<T, Fut>(work: Fut) -> Option<T>
where
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(t) => Some(t),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// A grant a reconnect to another org or site replaces.
struct Previous {
    site: &'static Site,
    client: ClientCredentials,
    creds: crate::store::Credentials,
}

/// What Datadog granted on a connect: the site, org, client and tokens.
#[derive(Debug)]
pub(crate) struct Granted<'a> {
    pub(crate) site: &'static Site,
    pub(crate) org_id: Option<String>,
    pub(crate) org_name: Option<String>,
    pub(crate) client: &'a ClientCredentials,
    pub(crate) tokens: datadog::Tokens,
}

/// Why a connect could not be completed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectFailure {
    #[error("{0}")]
    Key(#[from] datadog::KeyError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// What a call made with an access token came to, under the 401/403
/// policy ([`refresh_once`]).
#[derive(Debug)]
pub(crate) enum Authorized<T> {
    /// Datadog accepted the token (perhaps a refreshed one).
    Accepted(T),
    /// Datadog refused the token; `refreshed`: a fresh one was tried too.
    Refused { answer: T, refreshed: bool },
    /// Datadog refused the token, and no fresh one could be had.
    RefreshFailed { answer: T, error: CredentialError },
}

impl<T> Authorized<T> {
    /// The last answer, whatever it was.
    pub(crate) fn into_answer(self) -> T {
        match self {
            Authorized::Accepted(t)
            | Authorized::Refused { answer: t, .. }
            | Authorized::RefreshFailed { answer: t, .. } => t,
        }
    }
}

/// The 401/403 policy for every call made with an access token, in one
/// place: call with the current token; if Datadog refuses it (`refused`),
/// get a fresh one (single-flight, `tokens(Some(refused token))`) and call
/// once more, unless `settled` says that refusing this token cannot be
/// about its age. Returns the outcome and the tokens used (for scrubbing
/// answers). Fails only when no token could be had at all.
pub(crate) async fn refresh_once<T, G, GF, C, CF>(
    mut tokens: G,
    mut call: C,
    refused: impl Fn(&T) -> bool,
    settled: impl Fn(&Secret) -> bool,
) -> Result<(Authorized<T>, Vec<Secret>), CredentialError>
where
    G: FnMut(Option<Secret>) -> GF,
    GF: std::future::Future<Output = Result<Secret, CredentialError>>,
    C: FnMut(Secret) -> CF,
    CF: std::future::Future<Output = T>,
{
    let first_token = tokens(None).await?;
    let first = call(first_token.clone()).await;
    if !refused(&first) {
        return Ok((Authorized::Accepted(first), vec![first_token]));
    }
    if settled(&first_token) {
        let outcome = Authorized::Refused {
            answer: first,
            refreshed: false,
        };
        return Ok((outcome, vec![first_token]));
    }
    let fresh = match tokens(Some(first_token.clone())).await {
        Ok(t) => t,
        Err(error) => {
            let outcome = Authorized::RefreshFailed {
                answer: first,
                error,
            };
            return Ok((outcome, vec![first_token]));
        }
    };
    let second = call(fresh.clone()).await;
    let outcome = if refused(&second) {
        Authorized::Refused {
            answer: second,
            refreshed: true,
        }
    } else {
        Authorized::Accepted(second)
    };
    Ok((outcome, vec![first_token, fresh]))
}

/// The owner of every tenant's credentials (see the module doc).
pub struct Credentials {
    tenants: Arc<Tenants>,
    store: Store,
    datadog: datadog::Client,
    config: ConfigHandle,
    metrics: Arc<Metrics>,
    /// Per tenant: a token fresh from a forced refresh that Datadog still
    /// refused, and when (see [`FORCED_REFRESH_INTERVAL`]).
    refused: parking_lot::Mutex<std::collections::HashMap<String, (std::time::Instant, Secret)>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(
        tenants: Arc<Tenants>,
        store: Store,
        datadog: datadog::Client,
        config: ConfigHandle,
        metrics: Arc<Metrics>,
    ) -> Credentials {
        Credentials {
            tenants,
            store,
            datadog,
            config,
            metrics,
            refused: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A call with the tenant's access token under the 401/403 policy
    /// ([`refresh_once`]): refused, the token is refreshed once and the
    /// call made again, unless that token came fresh from such a refresh
    /// and was refused less than [`FORCED_REFRESH_INTERVAL`] ago (then the
    /// refusal is about scope or permission; refreshing again would only
    /// rotate the refresh token on every call).
    pub(crate) async fn with_token<T, C, CF>(
        self: &Arc<Self>,
        id: &str,
        call: C,
        refused: impl Fn(&T) -> bool,
    ) -> Result<(Authorized<T>, Vec<Secret>), CredentialError>
    where
        C: FnMut(Secret) -> CF,
        CF: std::future::Future<Output = T>,
    {
        let tokens = |seen: Option<Secret>| async move {
            if seen.is_some() {
                tracing::info!(tenant = %id, "datadog refused the access token; refreshing it once and retrying");
            }
            self.access_token(id, seen.is_some()).await
        };
        let settled = |token: &Secret| {
            self.refused
                .lock()
                .get(id)
                .is_some_and(|(at, t)| t == token && at.elapsed() < FORCED_REFRESH_INTERVAL)
        };
        let (outcome, used) = refresh_once(tokens, call, refused, settled).await?;
        if let (
            Authorized::Refused {
                refreshed: true, ..
            },
            Some(fresh),
        ) = (&outcome, used.last())
        {
            self.refused
                .lock()
                .insert(id.to_string(), (std::time::Instant::now(), fresh.clone()));
        }
        Ok((outcome, used))
    }

    fn config(&self) -> Arc<crate::config::Config> {
        self.config.load_full()
    }

    /// Whether this replica holds the tenant as connected (delivery sends
    /// only for connected tenants; held data waits for a reconnect).
    pub(crate) fn connected(&self, id: &str) -> bool {
        self.tenants
            .get(id)
            .is_some_and(|e| e.state() == crate::store::TenantState::Connected)
    }

    /// The tenant as this replica knows it.
    fn entry(&self, id: &str) -> Result<Arc<crate::tenant::Entry>, CredentialError> {
        self.tenants
            .get(id)
            .ok_or_else(|| CredentialError::Unknown(id.to_string()))
    }

    /// The tenant re-read from the store first (another replica may have
    /// refreshed, replaced the key or disconnected it).
    async fn reread(&self, id: &str) -> Result<Arc<crate::tenant::Entry>, CredentialError> {
        self.tenants
            .reload(id)
            .await
            .map_err(|e| store_error(id, e))?;
        self.entry(id)
    }

    /// Stores a completed connection and caches its secrets.
    pub(crate) async fn record_connection(
        &self,
        id: &str,
        connection: Connection,
    ) -> Result<(), StoreError> {
        self.store.save_connection(id, &connection, now()).await?;
        self.tenants.reload(id).await?;
        if let Some(entry) = self.tenants.get(id) {
            // The key is cached on its first use, read with its generation.
            *entry.api_key.write() = None;
            *entry.access.write() = Some((
                connection.access_token.clone(),
                connection.access_expires_at,
            ));
        }
        Ok(())
    }

    /// Holds the tenants whose site is no longer in `datadog.allowed_sites`
    /// (`reauth_required`, code `site_not_allowed`: nothing is sent there,
    /// data accepted meanwhile is held) and resumes those held for that
    /// reason whose site is allowed again. Run at start and on every
    /// reload; the Datadog client refuses calls to such sites regardless.
    pub(crate) async fn apply_allowed_sites(&self) {
        let allowed = self.config().datadog.allowed_sites.clone();
        for t in self.tenants.list() {
            let Some(site) = t.domain.as_deref().and_then(Site::by_domain) else {
                continue;
            };
            let change = match (t.state, allowed.allows(site), t.reason_code) {
                (TenantState::Connected, false, _) => Some((
                    TenantState::ReauthRequired,
                    Some(Reason::new(
                        ReasonCode::SiteNotAllowed,
                        format!(
                            "the tenant's Datadog site {} is not in datadog.allowed_sites: nothing is sent there and data accepted meanwhile is held; add the site back to resume, or the customer connects again on an allowed site",
                            site.domain
                        ),
                    )),
                )),
                (TenantState::ReauthRequired, true, Some(ReasonCode::SiteNotAllowed)) => {
                    Some((TenantState::Connected, None))
                }
                _ => None,
            };
            if let Some((state, reason)) = change {
                tracing::warn!(tenant = %t.id, site = %site.domain, state = %state, "tenant's site allowed or not by datadog.allowed_sites");
                if let Err(e) = self.tenants.set_state(&t.id, state, reason.as_ref()).await {
                    tracing::error!(tenant = %t.id, error = %e, "cannot record the tenant's state");
                }
            }
        }
    }

    /// Stores a new API key (after key recovery) and caches it.
    pub(crate) async fn record_api_key(
        &self,
        id: &str,
        key: &datadog::ApiKey,
    ) -> Result<(), StoreError> {
        self.store
            .save_api_key(id, &key.key, key.id.as_deref(), now())
            .await?;
        self.tenants.reload(id).await?;
        if let Some(entry) = self.tenants.get(id) {
            *entry.api_key.write() = None;
        }
        Ok(())
    }

    /// The OAuth client a tenant was connected with.
    pub(crate) fn client_for(&self, record: &Tenant) -> Result<ClientCredentials, CredentialError> {
        let config = self.config();
        let client_id = record
            .client_id
            .clone()
            .unwrap_or_else(|| config.oauth.client.client_id.clone());
        config
            .oauth
            .client(&client_id)
            .cloned()
            .ok_or(CredentialError::UnknownClient {
                tenant: record.id.clone(),
                client_id,
            })
    }

    /// The tenant's API key. Opened from the store once.
    pub(crate) async fn api_key(&self, id: &str) -> Result<Secret, CredentialError> {
        Ok(self.sending(id).await?.key)
    }

    /// What delivery sends with (see [`Sending`]). Opened from the store
    /// once and cached until the tenant's key, site or generation changes.
    /// With a store shared by replicas the tenant is re-read first, so a
    /// DELETE or reconnect answered by another replica is seen before
    /// anything more is sent, not at the next sync.
    pub(crate) async fn sending(&self, id: &str) -> Result<Sending, CredentialError> {
        let entry = if self.store.backend() == crate::store::Backend::Postgres {
            self.reread(id).await?
        } else {
            self.entry(id)?
        };
        if let Some(s) = entry.api_key.read().clone() {
            return Ok(s);
        }
        let creds = self
            .store
            .credentials(id)
            .await
            .map_err(|e| store_error(id, e))?;
        let key = creds
            .api_key
            .ok_or(CredentialError::Missing(id.to_string(), "API key"))?;
        let site = creds
            .domain
            .as_deref()
            .and_then(Site::by_domain)
            .ok_or(CredentialError::Missing(id.to_string(), "site"))?;
        let sending = Sending {
            site,
            key,
            generation: crate::queue::stored_generation(creds.generation),
        };
        // Cached only if the record in memory is of the same connection; a
        // change read meanwhile clears the cache and the next call re-reads.
        let record = entry.record.read();
        if record.generation == creds.generation && record.domain == creds.domain {
            *entry.api_key.write() = Some(sending.clone());
        }
        drop(record);
        Ok(sending)
    }

    /// Forgets the cached API key (after Datadog refused it).
    pub(crate) fn forget_api_key(&self, id: &str) {
        if let Some(e) = self.tenants.get(id) {
            *e.api_key.write() = None;
        }
    }

    /// A valid access token, refreshed single-flight when it expires within
    /// [`REFRESH_AHEAD`]. `force` refreshes even a token that looks valid
    /// (after Datadog answered 401/403 to it).
    pub async fn access_token(
        self: &Arc<Self>,
        id: &str,
        force: bool,
    ) -> Result<Secret, CredentialError> {
        let entry = self.entry(id)?;
        let cached = entry.access.read().clone();
        if !force
            && let Some((token, exp)) = &cached
            && fresh(*exp)
        {
            return Ok(token.clone());
        }
        // The token this caller judged stale: if the store holds another one
        // once we have the lock, someone refreshed meanwhile.
        let seen = match cached {
            Some((token, _)) => Some(token),
            None => {
                self.store
                    .credentials(id)
                    .await
                    .map_err(|e| store_error(id, e))?
                    .access_token
            }
        };
        let id = id.to_string();
        self.detached(move |this| async move {
            let lock = this
                .tenants
                .lock(&id)
                .await
                .map_err(|e| store_error(&id, e))?;
            let result = this.token_locked(&id, seen.as_ref(), force).await;
            lock.release().await;
            result
        })
        .await
        .unwrap_or(Err(CredentialError::ShuttingDown))
    }

    /// [`detached`] with these credentials.
    pub(crate) async fn detached<T, F, Fut>(self: &Arc<Self>, work: F) -> Option<T>
    where
        F: FnOnce(Arc<Credentials>) -> Fut,
        Fut: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        detached(work(self.clone())).await
    }

    /// The refresh itself; the caller holds the tenant lock. Re-reads the
    /// tenant and its tokens (another replica may have refreshed, replaced
    /// the key or disconnected it while we waited), refreshes unless a
    /// usable token is already there, and stores the result before
    /// returning it.
    async fn token_locked(
        &self,
        id: &str,
        seen: Option<&Secret>,
        force: bool,
    ) -> Result<Secret, CredentialError> {
        let entry = self.reread(id).await?;
        let creds = self
            .store
            .credentials(id)
            .await
            .map_err(|e| store_error(id, e))?;
        if let (Some(token), Some(exp)) = (&creds.access_token, creds.access_expires_at) {
            // Someone refreshed while we waited: use their token while it is
            // still valid, even inside the refresh-ahead margin (short-lived
            // tokens must not make every waiter refresh again).
            let refreshed_meanwhile = seen != Some(token) && exp - now() > MIN_REMAINING;
            if refreshed_meanwhile || (!force && fresh(exp)) {
                *entry.access.write() = Some((token.clone(), exp));
                return Ok(token.clone());
            }
        }
        let record = entry.record();
        if !matches!(
            record.state,
            TenantState::Connected | TenantState::ReauthRequired
        ) {
            return Err(CredentialError::NotConnected {
                tenant: id.to_string(),
                state: record.state,
            });
        }
        let site = entry
            .site()
            .ok_or(CredentialError::Missing(id.to_string(), "site"))?;
        let refresh = creds
            .refresh_token
            .ok_or(CredentialError::Missing(id.to_string(), "refresh token"))?;
        let client = self.client_for(&record)?;
        match self.datadog.refresh(site, &client, &refresh).await {
            Ok(tokens) => {
                let exp = now() + tokens.expires_in.unwrap_or(3600) as i64;
                // Stored before the lock is released: the next holder, here
                // or on another replica, reads the rotated refresh token.
                self.store
                    .save_tokens(
                        id,
                        &tokens.access_token,
                        exp,
                        tokens.refresh_token.as_ref(),
                        now(),
                    )
                    .await
                    .map_err(|e| {
                        tracing::error!(tenant = %id, error = %e, "refreshed tokens could not be stored; the tenant may need to reconnect");
                        store_error(id, e)
                    })?;
                *entry.access.write() = Some((tokens.access_token.clone(), exp));
                let _ = self.tenants.reload(id).await;
                self.metrics.oauth("refresh", "ok");
                tracing::info!(tenant = %id, rotated = tokens.refresh_token.is_some(), "access token refreshed");
                Ok(tokens.access_token)
            }
            Err(error) => {
                self.metrics.oauth(
                    "refresh",
                    if error.is_grant_revoked() {
                        "revoked"
                    } else {
                        "error"
                    },
                );
                if error.is_grant_revoked() {
                    let reason = Reason::new(
                        ReasonCode::GrantRevoked,
                        format!(
                            "Datadog refused the refresh token ({error}): the customer revoked the integration's access or uninstalled it; they must connect again from the Datadog integration tile"
                        ),
                    );
                    tracing::warn!(tenant = %id, "grant revoked, tenant needs reauthorization");
                    let _ = self
                        .tenants
                        .set_state(id, TenantState::ReauthRequired, Some(&reason))
                        .await;
                } else if error.is_client_error() {
                    tracing::error!(tenant = %id, error = %error, "Datadog rejected our client credentials; check oauth.client_id and oauth.client_secret");
                } else {
                    tracing::warn!(tenant = %id, error = %error, "token refresh failed");
                }
                Err(CredentialError::Refresh {
                    tenant: id.to_string(),
                    error,
                })
            }
        }
    }

    /// The Forbidden fallback, run once per incident (single-flight per
    /// tenant): Datadog answered 401/403 to `key_used`. Validate the key; if
    /// it is dead, get an access token (refreshing if needed) and create a
    /// new key; if that is impossible, mark the tenant `reauth_required`
    /// with a reason an operator can act on.
    ///
    /// Single-flight across replicas: it runs under the tenant lock, and
    /// whoever waited for it re-reads the tenant and its key from the store
    /// first, so a 403 seen by every replica at once creates one key.
    pub(crate) async fn recover_key(self: &Arc<Self>, id: &str, key_used: &Secret) -> Recovery {
        if self.tenants.get(id).is_none() {
            return Recovery::Undecided(format!("tenant {id} is gone"));
        }
        let (id, key_used) = (id.to_string(), key_used.clone());
        self.detached(move |this| async move {
            let lock = match this.tenants.lock(&id).await {
                Ok(l) => l,
                Err(e) => return Recovery::Undecided(e.to_string()),
            };
            let recovery = this.recover_key_locked(&id, &key_used).await;
            lock.release().await;
            recovery
        })
        .await
        .unwrap_or_else(|| Recovery::Undecided("the relay is shutting down".into()))
    }

    async fn recover_key_locked(&self, id: &str, key_used: &Secret) -> Recovery {
        // Did a concurrent incident (here or on another replica) already
        // replace the key, or change the tenant's state? Read the store, not
        // the cache, which may be up to one sync old.
        if let Err(e) = self.tenants.reload(id).await {
            return Recovery::Undecided(e.to_string());
        }
        let Some(entry) = self.tenants.get(id) else {
            return Recovery::Undecided(format!("tenant {id} is gone"));
        };
        self.forget_api_key(id);
        let current = match self.api_key(id).await {
            Ok(k) => k,
            Err(e) => return Recovery::Undecided(e.to_string()),
        };
        if &current != key_used {
            return Recovery::AlreadyReplaced;
        }
        if entry.state() != TenantState::Connected {
            return Recovery::ReauthRequired(
                entry
                    .record()
                    .reason
                    .unwrap_or_else(|| "tenant is not connected".into()),
            );
        }
        let Some(site) = entry.site() else {
            return Recovery::Undecided("tenant has no site".into());
        };
        match self.datadog.validate_key(site, &current).await {
            datadog::Validity::Valid => {
                self.metrics.oauth("key_validate", "valid");
                return Recovery::KeyStillValid;
            }
            datadog::Validity::Unknown(why) => {
                self.metrics.oauth("key_validate", "unknown");
                return Recovery::Undecided(format!("cannot validate the API key: {why}"));
            }
            datadog::Validity::Invalid => {
                self.metrics.oauth("key_validate", "invalid");
                tracing::warn!(tenant = %id, site = %site.domain, "api key refused by datadog; creating a new one");
            }
        }
        // Under the lock already: tokens come from token_locked, never from
        // access_token() (the lock is not reentrant).
        let tokens = |seen: Option<Secret>| {
            let force = seen.is_some();
            async move { self.token_locked(id, seen.as_ref(), force).await }
        };
        let create = |token: Secret| async move { self.create_key(site, &token).await };
        let refused = |r: &Result<datadog::ApiKey, datadog::KeyError>| {
            matches!(r, Err(datadog::KeyError::Forbidden { .. }))
        };
        let created = match refresh_once(tokens, create, refused, |_| false).await {
            Ok((outcome, _)) => outcome.into_answer(),
            Err(CredentialError::Refresh { error, .. }) if error.is_grant_revoked() => {
                // token_locked already moved the tenant to reauth_required.
                return Recovery::ReauthRequired(
                    self.tenants
                        .get(id)
                        .and_then(|e| e.record().reason)
                        .unwrap_or_default(),
                );
            }
            Err(e) if e.is_transient() => return Recovery::Undecided(e.to_string()),
            Err(e) => {
                return self
                    .needs_reauth(
                        id,
                        ReasonCode::RefreshFailed,
                        &format!("cannot get an access token to create a new API key: {e}"),
                    )
                    .await;
            }
        };
        match created {
            Ok(key) => {
                if let Err(e) = self.record_api_key(id, &key).await {
                    return Recovery::Undecided(format!("new API key created but not stored: {e}"));
                }
                tracing::info!(tenant = %id, "new api key created after datadog refused the old one");
                Recovery::NewKey
            }
            Err(datadog::KeyError::Exists) => {
                self.needs_reauth(id, ReasonCode::KeyConflict, KEY_EXISTS_REASON)
                    .await
            }
            Err(datadog::KeyError::Forbidden { status }) => {
                self.needs_reauth(
                    id,
                    ReasonCode::KeyRefused,
                    &format!("Datadog refused to create a new API key ({status}): the grant lacks api_keys_write or was revoked; the customer must connect again"),
                )
                .await
            }
            Err(e) => Recovery::Undecided(e.to_string()),
        }
    }

    async fn needs_reauth(&self, id: &str, code: ReasonCode, reason: &str) -> Recovery {
        tracing::warn!(tenant = %id, reason = %reason, "tenant needs reauthorization; its data is held");
        let reason = Reason::new(code, reason);
        if let Err(e) = self
            .tenants
            .set_state(id, TenantState::ReauthRequired, Some(&reason))
            .await
        {
            return Recovery::Undecided(format!("cannot record reauth_required: {e}"));
        }
        Recovery::ReauthRequired(reason.text)
    }

    /// Revokes the tenant's tokens at Datadog, deletes its secrets and marks
    /// it disconnected.
    ///
    /// Under the tenant lock: a refresh on another replica either finished
    /// before (its rotated token is the one revoked here) or finds the
    /// tenant disconnected.
    pub async fn disconnect(self: &Arc<Self>, id: &str) -> Result<Revocation, CredentialError> {
        if self.tenants.get(id).is_none() {
            return Err(CredentialError::Unknown(id.to_string()));
        }
        let id = id.to_string();
        self.detached(move |this| async move {
            let lock = this
                .tenants
                .lock(&id)
                .await
                .map_err(|e| store_error(&id, e))?;
            let result = this.disconnect_locked(&id).await;
            lock.release().await;
            result
        })
        .await
        .unwrap_or(Err(CredentialError::ShuttingDown))
    }

    async fn disconnect_locked(&self, id: &str) -> Result<Revocation, CredentialError> {
        let entry = self.reread(id).await?;
        let record = entry.record();
        let creds = self
            .store
            .credentials(id)
            .await
            .map_err(|e| store_error(id, e))?;
        let site = entry.site();
        let client = self.client_for(&record).ok();
        let mut outcome = Revocation {
            refresh_token: "not_held".into(),
            access_token: "not_held".into(),
        };
        if let (Some(site), Some(client)) = (site, client) {
            if let Some(rt) = &creds.refresh_token {
                outcome.refresh_token = match self
                    .datadog
                    .revoke(site, &client, rt, "refresh_token")
                    .await
                {
                    Ok(()) => "revoked".into(),
                    Err(e) => format!("failed: {e}"),
                };
            }
            if let Some(at) = &creds.access_token {
                outcome.access_token =
                    match self.datadog.revoke(site, &client, at, "access_token").await {
                        Ok(()) => "revoked".into(),
                        Err(e) => format!("failed: {e}"),
                    };
            }
        }
        self.metrics.oauth(
            "revoke",
            if outcome.refresh_token.starts_with("failed") {
                "error"
            } else {
                "ok"
            },
        );
        self.store
            .disconnect(
                id,
                "disconnected by the partner (DELETE /v1/tenants)",
                now(),
            )
            .await
            .map_err(|e| CredentialError::Store {
                tenant: id.to_string(),
                message: e.to_string(),
            })?;
        *entry.api_key.write() = None;
        *entry.access.write() = None;
        let _ = self.tenants.reload(id).await;
        tracing::info!(tenant = %id, refresh = %outcome.refresh_token, "tenant disconnected");
        Ok(outcome)
    }

    /// Creates the org's marketplace API key with `token`, counting the
    /// outcome: the one place a key is created (a connect, a recovery).
    async fn create_key(
        &self,
        site: &'static Site,
        token: &Secret,
    ) -> Result<datadog::ApiKey, datadog::KeyError> {
        let created = self.datadog.create_api_key(site, token).await;
        let label = created.as_ref().map_or_else(|e| e.label(), |_| "ok");
        self.metrics.oauth("key_create", label);
        created
    }

    /// Exchanges an authorization code (PKCE) for the first tokens.
    pub async fn exchange_code(
        &self,
        site: &'static Site,
        client: &ClientCredentials,
        code: &str,
        verifier: &Secret,
        redirect_uri: &str,
    ) -> Result<datadog::Tokens, TokenError> {
        self.datadog
            .exchange_code(site, client, code, verifier, redirect_uri)
            .await
    }

    /// Revokes freshly exchanged tokens the relay will not keep (an org
    /// already connected to another tenant).
    pub(crate) async fn revoke_tokens(
        &self,
        site: &'static Site,
        client: &ClientCredentials,
        tokens: &datadog::Tokens,
    ) {
        let _ = self
            .datadog
            .revoke(site, client, &tokens.access_token, "access_token")
            .await;
        if let Some(rt) = &tokens.refresh_token {
            let _ = self.datadog.revoke(site, client, rt, "refresh_token").await;
        }
    }

    /// Completes a connect: keeps the still-valid key this tenant holds
    /// for the same org (a reconnect), or creates the org's key, and stores
    /// the connection; a connection it replaces for another org or site
    /// has its grant revoked. Under the tenant lock throughout, so a key
    /// re-creation or a refresh on another replica never interleaves with
    /// it (one key per org). The caller runs it detached (the callback).
    pub(crate) async fn complete_connect(
        &self,
        tenant: &str,
        granted: Granted<'_>,
    ) -> Result<(), ConnectFailure> {
        let lock = self.tenants.lock(tenant).await?;
        let result = self.complete_connect_locked(tenant, granted).await;
        lock.release().await;
        result
    }

    async fn complete_connect_locked(
        &self,
        tenant: &str,
        granted: Granted<'_>,
    ) -> Result<(), ConnectFailure> {
        if let Err(e) = self.tenants.reload(tenant).await {
            tracing::warn!(tenant = %tenant, error = %e, "cannot re-read the tenant during oauth callback");
        }
        let Granted {
            site,
            org_id,
            org_name,
            client,
            tokens,
        } = granted;
        // Its held data is discarded by generation (store::Tenant::generation).
        let previous = self
            .previous_connection(tenant, site, org_id.as_deref())
            .await;
        let (api_key, api_key_id) = match self.reusable_key(tenant, site, org_id.as_deref()).await {
            Some(k) => (k, None),
            None => {
                let k = self.create_key(site, &tokens.access_token).await?;
                (k.key, k.id)
            }
        };
        let connection = Connection {
            domain: site.domain.to_string(),
            org_id,
            org_name,
            client_id: client.client_id.clone(),
            scopes: tokens.scope.clone(),
            access_token: tokens.access_token.clone(),
            access_expires_at: now() + tokens.expires_in.unwrap_or(3600) as i64,
            refresh_token: tokens.refresh_token.clone(),
            api_key,
            api_key_id,
        };
        self.record_connection(tenant, connection).await?;
        if let Some(previous) = &previous {
            self.revoke_previous(tenant, previous).await;
        }
        Ok(())
    }

    /// A key this tenant already holds for the same org, unless Datadog says
    /// it is dead.
    ///
    /// What is trusted: `dd_oid` comes back through the customer's browser, so
    /// it is only as good as that browser; the code exchange proves the grant,
    /// not the org. The relay uses it in directions where a forged value
    /// cannot send data to an org the tenant never held: a *changed* or
    /// missing `dd_oid` discards held data and revokes the previous grant
    /// (fail safe), and a *same* `dd_oid` only keeps the key this tenant
    /// already sends with, to the org it already sends to. Datadog's own word
    /// wins where it speaks: a key it refuses is replaced.
    ///
    /// Unknown is not invalid: when Datadog cannot say (5xx, timeout), the key
    /// the tenant holds is kept (creating one would meet 409, one key per org,
    /// and break a working tenant); the intake's 403 fallback decides later if
    /// the key really is dead.
    async fn reusable_key(
        &self,
        tenant: &str,
        site: &'static Site,
        org_id: Option<&str>,
    ) -> Option<Secret> {
        let entry = self.tenants.get(tenant)?;
        let record = entry.record();
        if !record.has_api_key || !same_org(&record, site, org_id) {
            return None;
        }
        let key = self.api_key(tenant).await.ok()?;
        match self.datadog.validate_key(site, &key).await {
            Validity::Valid => {
                tracing::info!(tenant = %tenant, "reconnect keeps the tenant's existing, still valid API key");
                Some(key)
            }
            Validity::Unknown(why) => {
                tracing::warn!(tenant = %tenant, error = %why, "cannot validate the tenant's API key during reconnect; keeping it (unknown is not invalid)");
                Some(key)
            }
            Validity::Invalid => None,
        }
    }

    /// The tenant's current grant, when the connection being completed is for
    /// another org or site: its site and tokens, to revoke once the new
    /// connection is stored.
    async fn previous_connection(
        &self,
        tenant: &str,
        site: &'static Site,
        org_id: Option<&str>,
    ) -> Option<Previous> {
        let entry = self.tenants.get(tenant)?;
        let record = entry.record();
        if same_org(&record, site, org_id) || !record.has_refresh_token {
            return None;
        }
        Some(Previous {
            site: entry.site()?,
            client: self.client_for(&record).ok()?,
            creds: self.store.credentials(tenant).await.ok()?,
        })
    }

    /// Revokes the grant of the connection a reconnect to another org replaced.
    async fn revoke_previous(&self, tenant: &str, previous: &Previous) {
        let Previous {
            site,
            client,
            creds,
        } = previous;
        for (token, hint) in [
            (&creds.refresh_token, "refresh_token"),
            (&creds.access_token, "access_token"),
        ] {
            if let Some(token) = token {
                let result = self.datadog.revoke(site, client, token, hint).await;
                self.metrics
                    .oauth("revoke", if result.is_ok() { "ok" } else { "error" });
                if let Err(e) = result {
                    tracing::warn!(tenant = %tenant, site = %site.domain, error = %e, "revoking the previous org's grant failed");
                }
            }
        }
        tracing::info!(tenant = %tenant, previous_site = %site.domain, "tenant reconnected to another org or site; the previous grant was revoked and its held data is discarded");
    }
}

#[cfg(test)]
mod tests;
