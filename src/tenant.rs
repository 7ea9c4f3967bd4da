//! Tenants: who they are and what state they are in.
//!
//! [`Tenants`] is the in-memory directory of the store's tenants, loaded at
//! start and kept fresh by [`Tenants::sync`] (which also picks up changes
//! made by other replicas sharing a PostgreSQL store): each tenant's record
//! (state, reason, site, org, connection generation, tags) and the slots where
//! `credentials` caches its API key and access token. Ingest decides
//! 202/409 from the state; everything about credentials (refresh, keys,
//! revocation, the grant check) is `credentials`'s.
//!
//! Sync: [`Tenants::sync`] reads the changes numbered above the highest it
//! has applied from a sync (store `version`, commit-ordered on both
//! backends); single-tenant re-reads never move that mark, so a change
//! committed elsewhere is never skipped. A re-read that changes a tenant's
//! key, site or generation empties its cache slots.
//!
//! This module knows the store; it knows nothing of Datadog, HTTP servers
//! or the pipeline, and of the queue only how a record stores a generation
//! (`queue::stored_generation`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use parking_lot::RwLock;

use crate::clock::now;
use crate::config::Config;
use crate::secret::Secret;
use crate::site::{Endpoint, Site};
use crate::store::{Reason, Store, StoreError, Tenant, TenantLock, TenantState};
use crate::tags::Tags;
use crate::telemetry::metrics::Metrics;

/// With a shared store, at most this many tenants per second are re-read
/// from it because a request was about to be refused (unknown here, or not
/// connected): enough for tenants connected on another replica moments ago,
/// bounded against a client that keeps sending for unknown ids.
const RECHECKS_PER_SECOND: u32 = 50;

/// Longest tenant id accepted.
pub(crate) const MAX_ID_LEN: usize = 128;

/// The running configuration, shared and swapped on reload.
pub(crate) type ConfigHandle = Arc<ArcSwap<Config>>;

/// Why a tenant id is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum IdError {
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
pub(crate) fn validate_id(id: &str) -> Result<(), IdError> {
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

/// One tenant in memory.
#[derive(Debug)]
pub struct Entry {
    pub(crate) record: RwLock<Tenant>,
    /// `credentials`'s cache slots: what delivery sends with, and the
    /// access token with its expiry.
    pub(crate) api_key: RwLock<Option<Sending>>,
    pub(crate) access: RwLock<Option<(Secret, i64)>>,
    /// The record's tags, ready for ingest to add to items; `None` when
    /// it has none (ingest then does nothing extra).
    tags: RwLock<Option<Arc<Tags>>>,
    /// What ingest accepted for this tenant but did not keep.
    pub(crate) dropped: IngestDropped,
}

/// Points and items a tenant's requests lost to Datadog's own treatment
/// at ingest (`ingest::validate::Dropped`), by kind and reason, since the
/// relay started: the admin API's `ingest_dropped`.
#[derive(Debug, Default)]
pub(crate) struct IngestDropped([[AtomicU64; 3]; Endpoint::EVERY.len()]);

impl IngestDropped {
    /// Adds `(reason, count)` pairs for `endpoint`, in the order of
    /// `Dropped::by_reason`.
    pub(crate) fn add(&self, endpoint: Endpoint, counts: [(&'static str, u32); 3]) {
        let Some(row) = Endpoint::EVERY.iter().position(|e| *e == endpoint) else {
            return;
        };
        for (cell, (_, n)) in self.0[row].iter().zip(counts) {
            cell.fetch_add(u64::from(n), Ordering::Relaxed);
        }
    }

    /// `{kind: {reason: count}}`, without zeros.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let reasons = crate::ingest::validate::Dropped::default().by_reason();
        let mut out = BTreeMap::new();
        for (endpoint, row) in Endpoint::EVERY.iter().zip(&self.0) {
            let counts: BTreeMap<_, _> = reasons
                .iter()
                .zip(row)
                .map(|((reason, _), n)| (*reason, n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .map(|(reason, n)| (reason.to_string(), n))
                .collect();
            if !counts.is_empty() {
                out.insert(endpoint.name().to_string(), counts);
            }
        }
        out
    }
}

impl Entry {
    fn new(record: Tenant) -> Entry {
        Entry {
            tags: RwLock::new(Tags::new(record.tags.clone()).map(Arc::new)),
            record: RwLock::new(record),
            api_key: RwLock::new(None),
            access: RwLock::new(None),
            dropped: IngestDropped::default(),
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

    /// The tenant's tags, for ingest to add to every item it accepts;
    /// `None` when it has none.
    pub(crate) fn tags(&self) -> Option<Arc<Tags>> {
        self.tags.read().clone()
    }

    /// The tenant's site, once connected.
    pub(crate) fn site(&self) -> Option<&'static Site> {
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
    pub(crate) site: &'static Site,
    pub(crate) key: Secret,
    /// As the queue stores it (modulo 2^24), see [`Entry::generation`].
    pub(crate) generation: u32,
}

/// What one [`Tenants::sync`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Synced {
    /// Tenants whose record changed.
    pub(crate) changed: usize,
    /// Tenants seen becoming disconnected since the last sync (here or on
    /// another replica): data still queued here for them is to be
    /// discarded, as the relay that answered the DELETE did with its own.
    pub(crate) disconnected: Vec<String>,
}

/// The tenants and their credentials.
pub struct Tenants {
    store: Store,
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
    pub(crate) async fn load(store: Store, metrics: Arc<Metrics>) -> Result<Tenants, StoreError> {
        let tenants = Tenants {
            store,
            metrics,
            entries: RwLock::new(HashMap::new()),
            synced_version: parking_lot::Mutex::new(0),
            rechecks: parking_lot::Mutex::new((0, 0)),
            newly_disconnected: parking_lot::Mutex::new(Vec::new()),
        };
        tenants.sync().await?;
        Ok(tenants)
    }

    /// Applies every change in the store since the last sync (ours and
    /// other replicas'): how many tenants changed, and which became
    /// disconnected.
    ///
    /// Only this moves the mark it reads from: a record re-read alone
    /// ([`Tenants::reload`]) may carry a higher number than another tenant's
    /// change not yet read here.
    pub(crate) async fn sync(&self) -> Result<Synced, StoreError> {
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
                if old.tags != record.tags {
                    *entry.tags.write() = Tags::new(record.tags.clone()).map(Arc::new);
                }
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
    /// sync) and return it. Bounded to `RECHECKS_PER_SECOND`; beyond that,
    /// and with the embedded store (one process: memory is the truth), the
    /// entry as it is.
    pub(crate) async fn recheck(&self, id: &str) -> Option<Arc<Entry>> {
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
    pub(crate) async fn lock(&self, id: &str) -> Result<TenantLock, StoreError> {
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

    /// The ids of the tenants in `state`.
    pub(crate) fn ids_in(&self, state: TenantState) -> Vec<String> {
        self.entries
            .read()
            .values()
            .filter_map(|e| {
                let r = e.record.read();
                (r.state == state).then(|| r.id.clone())
            })
            .collect()
    }

    /// The connected tenants and when each grant was last confirmed.
    pub(crate) fn connected_grant_checks(&self) -> Vec<(String, Option<i64>)> {
        self.entries
            .read()
            .values()
            .filter_map(|e| {
                let r = e.record.read();
                (r.state == TenantState::Connected).then(|| (r.id.clone(), r.grant_checked_at))
            })
            .collect()
    }

    /// Every tenant, sorted by id.
    pub(crate) fn list(&self) -> Vec<Tenant> {
        let mut v: Vec<Tenant> = self.entries.read().values().map(|e| e.record()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Notes that a connect flow started for `id`.
    pub async fn touch_pending(&self, id: &str) -> Result<(), StoreError> {
        self.store.touch_pending(id, now()).await?;
        self.reload(id).await
    }

    /// Replaces a tenant's tags (normalised by `crate::tags`); requests
    /// admitted from then on carry them.
    pub async fn set_tags(&self, id: &str, tags: &[String]) -> Result<(), StoreError> {
        self.store.set_tags(id, tags, now()).await?;
        self.reload(id).await
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
