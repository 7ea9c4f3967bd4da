//! Tenants: who they are, what state they are in, and their credentials.
//!
//! [`Tenants`] is the in-memory view of the store's tenants, loaded at start
//! and kept fresh by [`Tenants::sync`] (which also picks up changes made by
//! other replicas sharing a PostgreSQL store). It hands out what the rest of
//! the relay needs, at send time, never earlier:
//! - the tenant's site and state (ingest decides 202/409 from it);
//! - its API key (opened from the store once, then cached in memory);
//! - a fresh access token, refreshed **single-flight** per tenant across
//!   every replica: the refresh runs under the store's tenant lock
//!   ([`Store::lock_tenant`]), re-reads the tokens after taking it (another
//!   caller, here or on another replica, may have refreshed meanwhile) and
//!   persists the rotated refresh token in the same statement as the new
//!   access token, before the lock is released or either is used. A
//!   rotated refresh token is never presented twice.
//!
//! The Forbidden fallback ([`Tenants::recover_key`]) runs under the same
//! lock, so a 403 seen by every replica at once creates one new key: the
//! replicas that waited re-read the store and find the key replaced.
//!
//! A refresh that Datadog refuses for good (`invalid_grant`, 401) moves the
//! tenant to `reauth_required` with a reason an operator can act on.
//!
//! Sync: [`Tenants::sync`] reads the changes numbered above the highest it
//! has applied from a sync (store `version`, commit-ordered on both
//! backends); single-tenant re-reads never move that mark, so a change
//! committed elsewhere is never skipped.
//!
//! This module knows the store and the Datadog client; it knows nothing of
//! HTTP servers, the queue or the pipeline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::RwLock;
use serde::Serialize;

use crate::clock::now;
use crate::config::{ClientCredentials, Config};
use crate::datadog::{self, TokenError};
use crate::secret::Secret;
use crate::site::Site;
use crate::store::{
    Connection, Reason, ReasonCode, Store, StoreError, Tenant, TenantLock, TenantState,
};
use crate::telemetry::metrics::Metrics;

pub mod grant;

/// Refresh an access token this long before it expires (Datadog's own
/// clients use a 300 s buffer, reference §7.6).
pub const REFRESH_AHEAD: Duration = Duration::from_secs(300);

/// A token refreshed by a concurrent caller (here or on another replica) is
/// used if it has at least this many seconds left.
const MIN_REMAINING: i64 = 5;

/// With a shared store, at most this many tenants per second are re-read
/// from it because a request was about to be refused (unknown here, or not
/// connected): enough for tenants connected on another replica moments ago,
/// bounded against a client that keeps sending for unknown ids.
const RECHECKS_PER_SECOND: u32 = 50;

/// Longest tenant id accepted.
pub const MAX_ID_LEN: usize = 128;

/// The running configuration, shared and swapped on reload.
pub type ConfigHandle = Arc<ArcSwap<Config>>;

/// Why a tenant id is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("tenant id is empty")]
    Empty,
    #[error("tenant id is longer than {MAX_ID_LEN} characters")]
    TooLong,
    #[error("tenant id `{0}` has a character outside A-Z a-z 0-9 . _ - (at position {1})")]
    BadChar(String, usize),
    #[error("tenant id must start with a letter or digit")]
    BadStart,
}

/// Checks a tenant id: 1 to 128 characters of `A-Za-z0-9._-`, starting
/// with a letter or digit.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if let Some(pos) = id
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'))
    {
        let shown: String = id
            .chars()
            .take(MAX_ID_LEN)
            .filter(|c| !c.is_control())
            .collect();
        return Err(IdError::BadChar(shown, pos));
    }
    // Ids name directories (dead letters): never `.`, `..` or hidden names.
    if !id.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(IdError::BadStart);
    }
    Ok(())
}

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
    pub fn is_transient(&self) -> bool {
        match self {
            CredentialError::Refresh { error, .. } => matches!(error, TokenError::Unavailable(_)),
            CredentialError::Store { .. } | CredentialError::ShuttingDown => true,
            _ => false,
        }
    }
}

/// One tenant in memory.
#[derive(Debug)]
pub struct Entry {
    record: RwLock<Tenant>,
    api_key: RwLock<Option<Sending>>,
    access: RwLock<Option<(Secret, i64)>>,
}

impl Entry {
    fn new(record: Tenant) -> Entry {
        Entry {
            record: RwLock::new(record),
            api_key: RwLock::new(None),
            access: RwLock::new(None),
        }
    }

    pub fn record(&self) -> Tenant {
        self.record.read().clone()
    }

    pub fn state(&self) -> TenantState {
        self.record.read().state
    }

    /// The tenant's connection generation as the queue stores it (modulo
    /// 2^24): records carry the generation they were accepted for, and
    /// only records of the current one are ever sent.
    pub fn generation(&self) -> u32 {
        crate::queue::stored_generation(self.record.read().generation)
    }

    /// The tenant's site, once connected.
    pub fn site(&self) -> Option<&'static Site> {
        self.record
            .read()
            .domain
            .as_deref()
            .and_then(Site::by_domain)
    }
}

/// What delivery sends with: the tenant's site, API key and the connection
/// generation they belong to, read from one store row together, so a
/// record is never sent with the key of another connection than its own.
#[derive(Debug, Clone)]
pub struct Sending {
    pub site: &'static Site,
    pub key: Secret,
    /// As the queue stores it (modulo 2^24), see [`Entry::generation`].
    pub generation: u32,
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
    pub refresh_token: String,
    pub access_token: String,
}

/// What one [`Tenants::sync`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    /// Tenants whose record changed.
    pub changed: usize,
    /// Tenants seen becoming disconnected since the last sync (here or on
    /// another replica): data still queued here for them is to be
    /// discarded, as the relay that answered the DELETE did with its own.
    pub disconnected: Vec<String>,
}

/// The tenants and their credentials.
pub struct Tenants {
    store: Store,
    datadog: datadog::Client,
    config: ConfigHandle,
    metrics: Arc<Metrics>,
    entries: RwLock<HashMap<String, Arc<Entry>>>,
    synced_version: parking_lot::Mutex<i64>,
    /// (second, rechecks in it), see [`Tenants::recheck`].
    rechecks: parking_lot::Mutex<(i64, u32)>,
    /// Tenants seen becoming disconnected since the last sync.
    newly_disconnected: parking_lot::Mutex<Vec<String>>,
}

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants")
            .field("count", &self.entries.read().len())
            .finish_non_exhaustive()
    }
}

impl Tenants {
    /// Loads every tenant from the store.
    pub async fn load(
        store: Store,
        datadog: datadog::Client,
        config: ConfigHandle,
        metrics: Arc<Metrics>,
    ) -> Result<Tenants, StoreError> {
        let tenants = Tenants {
            store,
            datadog,
            config,
            metrics,
            entries: RwLock::new(HashMap::new()),
            synced_version: parking_lot::Mutex::new(0),
            rechecks: parking_lot::Mutex::new((0, 0)),
            newly_disconnected: parking_lot::Mutex::new(Vec::new()),
        };
        tenants.sync().await?;
        Ok(tenants)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn datadog(&self) -> &datadog::Client {
        &self.datadog
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Applies every change in the store since the last sync (ours and
    /// other replicas'): how many tenants changed, and which became
    /// disconnected.
    ///
    /// Only this moves the mark it reads from: a record re-read alone
    /// ([`Tenants::reload`]) may carry a higher number than another tenant's
    /// change not yet read here.
    pub async fn sync(&self) -> Result<Synced, StoreError> {
        let since = *self.synced_version.lock();
        let changed = self.store.tenants_changed_since(since).await?;
        let mut synced = Synced {
            changed: changed.len(),
            disconnected: Vec::new(),
        };
        let mut highest = since;
        for t in changed {
            highest = highest.max(t.version);
            // The gauges are recounted once below.
            let _ = self.apply(t);
        }
        {
            let mut v = self.synced_version.lock();
            *v = (*v).max(highest);
        }
        synced.disconnected = std::mem::take(&mut *self.newly_disconnected.lock());
        self.update_state_gauges();
        Ok(synced)
    }

    /// Installs a fresh record, dropping cached secrets if they may have
    /// changed, and noting a tenant that became disconnected (whichever
    /// path read it: a sync, a re-read, our own disconnect). Returns whether
    /// the tenant's state changed (or it is new), i.e. the state gauges moved.
    fn apply(&self, record: Tenant) -> bool {
        let existing = self.entries.read().get(&record.id).cloned();
        match existing {
            Some(entry) => {
                let old = entry.record();
                if old.version > record.version {
                    return false;
                }
                let changed = old.state != record.state;
                if old.state != TenantState::Disconnected
                    && record.state == TenantState::Disconnected
                {
                    self.newly_disconnected.lock().push(record.id.clone());
                }
                let key_changed = old.api_key_last4 != record.api_key_last4
                    || !record.has_api_key
                    || old.api_key_id != record.api_key_id
                    || old.generation != record.generation
                    || old.domain != record.domain;
                let cached_exp = entry.access.read().as_ref().map(|(_, exp)| *exp);
                if cached_exp.is_some() && cached_exp != record.access_expires_at {
                    *entry.access.write() = None;
                }
                // The record first, then the key cache: `sending` caches
                // only under the record's read lock and only a key of the
                // record's generation, so no stale key outlives this.
                *entry.record.write() = record;
                if key_changed {
                    *entry.api_key.write() = None;
                }
                changed
            }
            None => {
                self.entries
                    .write()
                    .insert(record.id.clone(), Arc::new(Entry::new(record)));
                true
            }
        }
    }

    /// Re-reads one tenant from the store (a change made by another replica
    /// shows at once instead of at the next sync).
    pub async fn reload(&self, id: &str) -> Result<(), StoreError> {
        // Recounting walks every tenant: only when this one changed state
        // (a re-read happens on every refresh, callback and admin read).
        if let Some(t) = self.store.tenant(id).await?
            && self.apply(t)
        {
            self.update_state_gauges();
        }
        Ok(())
    }

    /// For a caller about to refuse `id` because this replica does not know
    /// it or holds it as not connected: with a store shared by replicas,
    /// re-read it (another replica may have connected it since the last
    /// sync) and return it. Bounded to [`RECHECKS_PER_SECOND`]; beyond that,
    /// and with the embedded store (one process: memory is the truth), the
    /// entry as it is.
    pub async fn recheck(&self, id: &str) -> Option<Arc<Entry>> {
        if self.store.backend() == crate::store::Backend::Postgres {
            let allowed = {
                let mut r = self.rechecks.lock();
                let second = now();
                if r.0 != second {
                    *r = (second, 0);
                }
                r.1 += 1;
                r.1 <= RECHECKS_PER_SECOND
            };
            if allowed && let Err(e) = self.reload(id).await {
                tracing::warn!(tenant = %id, error = %e, "cannot re-read the tenant from the store");
            }
        }
        self.get(id)
    }

    /// Takes tenant `id`'s credentials lock (single-flight across replicas,
    /// see [`Store::lock_tenant`]).
    pub async fn lock(&self, id: &str) -> Result<TenantLock, StoreError> {
        self.store.lock_tenant(id).await
    }

    fn update_state_gauges(&self) {
        let mut counts: HashMap<TenantState, i64> =
            TenantState::ALL.iter().map(|s| (*s, 0)).collect();
        for e in self.entries.read().values() {
            *counts.entry(e.state()).or_default() += 1;
        }
        for (state, n) in counts {
            self.metrics
                .tenants
                .get_or_create(&crate::telemetry::metrics::StateLabels {
                    state: state.as_str(),
                })
                .set(n);
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.entries.read().get(id).cloned()
    }

    /// Every tenant, sorted by id.
    pub fn list(&self) -> Vec<Tenant> {
        let mut v: Vec<Tenant> = self.entries.read().values().map(|e| e.record()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Notes that a connect flow started for `id`.
    pub async fn touch_pending(&self, id: &str) -> Result<(), StoreError> {
        self.store.touch_pending(id, now()).await?;
        self.reload(id).await
    }

    /// Stores a completed connection and caches its secrets.
    pub async fn record_connection(
        &self,
        id: &str,
        connection: Connection,
    ) -> Result<(), StoreError> {
        self.store.save_connection(id, &connection, now()).await?;
        self.reload(id).await?;
        if let Some(entry) = self.get(id) {
            // The key is cached on its first use, read with its generation.
            *entry.api_key.write() = None;
            *entry.access.write() = Some((
                connection.access_token.clone(),
                connection.access_expires_at,
            ));
        }
        Ok(())
    }

    /// Changes a tenant's state (and why).
    pub async fn set_state(
        &self,
        id: &str,
        state: TenantState,
        reason: Option<&Reason>,
    ) -> Result<(), StoreError> {
        self.store.set_state(id, state, reason, now()).await?;
        self.reload(id).await
    }

    /// Holds the tenants whose site is no longer in `datadog.allowed_sites`
    /// (`reauth_required`, code `site_not_allowed`: nothing is sent there,
    /// data accepted meanwhile is held) and resumes those held for that
    /// reason whose site is allowed again. Run at start and on every
    /// reload; the Datadog client refuses calls to such sites regardless.
    pub async fn apply_allowed_sites(&self) {
        let allowed = self.config().datadog.allowed_sites.clone();
        for t in self.list() {
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
                if let Err(e) = self.set_state(&t.id, state, reason.as_ref()).await {
                    tracing::error!(tenant = %t.id, error = %e, "cannot record the tenant's state");
                }
            }
        }
    }

    /// Stores a new API key (after key recovery) and caches it.
    pub async fn record_api_key(&self, id: &str, key: &datadog::ApiKey) -> Result<(), StoreError> {
        self.store
            .save_api_key(id, &key.key, key.id.as_deref(), now())
            .await?;
        self.reload(id).await?;
        if let Some(entry) = self.get(id) {
            *entry.api_key.write() = None;
        }
        Ok(())
    }

    /// The OAuth client a tenant was connected with.
    pub fn client_for(&self, record: &Tenant) -> Result<ClientCredentials, CredentialError> {
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
    pub async fn api_key(&self, id: &str) -> Result<Secret, CredentialError> {
        Ok(self.sending(id).await?.key)
    }

    /// What delivery sends with (see [`Sending`]). Opened from the store
    /// once and cached until the tenant's key, site or generation changes.
    /// With a store shared by replicas the tenant is re-read first, so a
    /// DELETE or reconnect answered by another replica is seen before
    /// anything more is sent, not at the next sync.
    pub async fn sending(&self, id: &str) -> Result<Sending, CredentialError> {
        if self.store.backend() == crate::store::Backend::Postgres {
            self.reload(id).await.map_err(|e| store_error(id, e))?;
        }
        let entry = self
            .get(id)
            .ok_or_else(|| CredentialError::Unknown(id.to_string()))?;
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
    pub fn forget_api_key(&self, id: &str) {
        if let Some(e) = self.get(id) {
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
        let entry = self
            .get(id)
            .ok_or_else(|| CredentialError::Unknown(id.to_string()))?;
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
            let lock = this.lock(&id).await.map_err(|e| store_error(&id, e))?;
            let result = this.token_locked(&id, seen.as_ref(), force).await;
            lock.release().await;
            result
        })
        .await
        .unwrap_or(Err(CredentialError::ShuttingDown))
    }

    /// Runs work that changes credentials at Datadog on its own task and
    /// waits for it. Dropping the caller (a client hanging up, a timeout)
    /// no longer stops the work halfway: a refresh whose rotated token
    /// Datadog already issued is stored, a key Datadog already created is
    /// recorded. `None` only when the runtime is shutting down; a panic in
    /// the work is the caller's panic.
    pub(crate) async fn detached<T, F, Fut>(self: &Arc<Self>, work: F) -> Option<T>
    where
        F: FnOnce(Arc<Tenants>) -> Fut,
        Fut: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        match tokio::spawn(work(self.clone())).await {
            Ok(t) => Some(t),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => None,
        }
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
        self.reload(id).await.map_err(|e| store_error(id, e))?;
        let entry = self
            .get(id)
            .ok_or_else(|| CredentialError::Unknown(id.to_string()))?;
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
                let _ = self.reload(id).await;
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
    pub async fn recover_key(self: &Arc<Self>, id: &str, key_used: &Secret) -> Recovery {
        if self.get(id).is_none() {
            return Recovery::Undecided(format!("tenant {id} is gone"));
        }
        let (id, key_used) = (id.to_string(), key_used.clone());
        self.detached(move |this| async move {
            let lock = match this.lock(&id).await {
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
        if let Err(e) = self.reload(id).await {
            return Recovery::Undecided(e.to_string());
        }
        let Some(entry) = self.get(id) else {
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
        let mut forced = false;
        let mut seen: Option<Secret> = None;
        loop {
            // Under the lock already: refresh here, never through
            // access_token() (the lock is not reentrant).
            let token = match self.token_locked(id, seen.as_ref(), forced).await {
                Ok(t) => t,
                Err(CredentialError::Refresh { error, .. }) if error.is_grant_revoked() => {
                    // access_token() already moved the tenant to reauth_required.
                    return Recovery::ReauthRequired(
                        self.get(id)
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
            match self.datadog.create_api_key(site, &token).await {
                Ok(key) => {
                    self.metrics.oauth("key_create", "ok");
                    if let Err(e) = self.record_api_key(id, &key).await {
                        return Recovery::Undecided(format!(
                            "new API key created but not stored: {e}"
                        ));
                    }
                    tracing::info!(tenant = %id, "new api key created after datadog refused the old one");
                    return Recovery::NewKey;
                }
                Err(datadog::KeyError::Exists) => {
                    self.metrics.oauth("key_create", "exists");
                    return self
                        .needs_reauth(id, ReasonCode::KeyConflict, crate::oauth::KEY_EXISTS_REASON)
                        .await;
                }
                Err(datadog::KeyError::Forbidden { status }) if !forced => {
                    // The token may have been revoked early: refresh once and retry.
                    tracing::info!(tenant = %id, status, "key creation refused; refreshing the token once");
                    forced = true;
                    seen = Some(token);
                }
                Err(datadog::KeyError::Forbidden { status }) => {
                    self.metrics.oauth("key_create", "forbidden");
                    return self
                        .needs_reauth(
                            id,
                            ReasonCode::KeyRefused,
                            &format!("Datadog refused to create a new API key ({status}): the grant lacks api_keys_write or was revoked; the customer must connect again"),
                        )
                        .await;
                }
                Err(e) => {
                    self.metrics.oauth("key_create", "unavailable");
                    return Recovery::Undecided(e.to_string());
                }
            }
        }
    }

    async fn needs_reauth(&self, id: &str, code: ReasonCode, reason: &str) -> Recovery {
        tracing::warn!(tenant = %id, reason = %reason, "tenant needs reauthorization; its data is held");
        let reason = Reason::new(code, reason);
        if let Err(e) = self
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
        if self.get(id).is_none() {
            return Err(CredentialError::Unknown(id.to_string()));
        }
        let id = id.to_string();
        self.detached(move |this| async move {
            let lock = this.lock(&id).await.map_err(|e| store_error(&id, e))?;
            let result = this.disconnect_locked(&id).await;
            lock.release().await;
            result
        })
        .await
        .unwrap_or(Err(CredentialError::ShuttingDown))
    }

    async fn disconnect_locked(&self, id: &str) -> Result<Revocation, CredentialError> {
        self.reload(id).await.map_err(|e| store_error(id, e))?;
        let entry = self
            .get(id)
            .ok_or_else(|| CredentialError::Unknown(id.to_string()))?;
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
        let _ = self.reload(id).await;
        tracing::info!(tenant = %id, refresh = %outcome.refresh_token, "tenant disconnected");
        Ok(outcome)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        assert!(validate_id("acme-corp_1.eu").is_ok());
        assert_eq!(validate_id(""), Err(IdError::Empty));
        assert_eq!(validate_id(&"a".repeat(129)), Err(IdError::TooLong));
        assert!(matches!(validate_id("a/b"), Err(IdError::BadChar(_, 1))));
        assert!(matches!(validate_id("a b"), Err(IdError::BadChar(_, 1))));
        assert!(matches!(validate_id("é"), Err(IdError::BadChar(_, 0))));
        assert_eq!(validate_id(".."), Err(IdError::BadStart));
        assert_eq!(validate_id("-x"), Err(IdError::BadStart));
    }
}
