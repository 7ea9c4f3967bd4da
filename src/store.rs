//! The credential and tenant store: tenants (their tags included), their
//! sealed tokens and API keys, pending OAuth flows, the outbox of lifecycle
//! events (`outbox`) that webhooks deliver, and the hourly usage rows
//! ([`usage`]). `copy` is `ddrelay store migrate`.
//!
//! One implementation over `sqlx::AnyPool` serves both backends: SQLite
//! under `storage.data_dir` (the embedded default) and PostgreSQL when
//! `storage.database_url` is set (several replicas sharing credentials). The
//! SQL is portable (`$1` placeholders, `ON CONFLICT`, `RETURNING`); the DDL
//! lives in `migrations/<backend>/` (same versions on both) and is versioned
//! by sqlx's migrator.
//!
//! Every secret column is sealed by `Sealer` with the tenant (or flow) and
//! the column name as associated data, so the database never sees plaintext
//! and a value moved between rows fails to open. The `meta` table holds a
//! sealed canary: opening the store with a different master key is a clear
//! startup error, never silent garbage.
//!
//! What several replicas rely on (docs/scale-out.md):
//! - **Change numbers.** Every change to a tenant row sets `version` to the
//!   next number. Replicas poll [`Store::tenants_changed_since`], so a
//!   committed change must never carry a number lower than one a replica has
//!   already seen. SQLite takes its write lock at the start of each writing
//!   statement, so `MAX(version) + 1` inside the statement is ordered.
//!   PostgreSQL takes the number from a one-row counter
//!   (`ddrelay_next_tenant_version()`, migration 0002) whose row lock is held
//!   until the change commits: numbers are handed out and committed in the
//!   same order (a rolled-back change gives its number back), so every
//!   change still invisible to a reader is numbered above all it can see.
//! - **The tenant lock.** [`Store::lock_tenant`] serialises whoever reads a
//!   tenant's credentials, renews them at Datadog and writes them back
//!   (refresh, key re-creation, a callback's new connection, a disconnect):
//!   an in-process mutex, and on PostgreSQL also a transaction-scoped
//!   advisory lock held on a connection of its own until [`TenantLock`] is
//!   released, so it is single-flight across replicas.
//! - **Flows** are rows: a connect started on one replica completes on any
//!   other (`take_flow` is one `DELETE … RETURNING`).
//! - **State changes and their events**: every write that may change a
//!   tenant's state runs in one transaction that holds the row, writes it,
//!   and inserts the lifecycle event the change calls for
//!   (`outbox`); the outbox is claimed with row locks and leases, so one
//!   replica sends each event.
//!
//! This module knows nothing of HTTP, OAuth or Datadog: it stores what the
//! tenant lifecycle gives it.

pub(crate) mod copy;
pub(crate) mod outbox;
pub mod usage;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor as _, Row as _};

use crate::secret::{MasterKey, SealError, Sealer, Secret};

/// Which database engine is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A tenant's lifecycle state, as the admin API reports it (`state` in
/// `GET /v1/tenants/{tenant}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    /// A connect flow was started but never completed.
    Pending,
    /// Tokens and an API key are held; data flows.
    Connected,
    /// Datadog refused the grant or the key and we could not recover: the
    /// customer must connect again. Data is held meanwhile.
    ReauthRequired,
    /// The partner disconnected the tenant; its secrets are deleted.
    Disconnected,
}

impl TenantState {
    pub(crate) const ALL: [TenantState; 4] = [
        TenantState::Pending,
        TenantState::Connected,
        TenantState::ReauthRequired,
        TenantState::Disconnected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Pending => "pending",
            TenantState::Connected => "connected",
            TenantState::ReauthRequired => "reauth_required",
            TenantState::Disconnected => "disconnected",
        }
    }
}

impl fmt::Display for TenantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TenantState {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        TenantState::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown tenant state `{s}`")))
    }
}

/// Why a tenant is not connected, in a word partners' code can match
/// (the admin API's `reason_code`); `Reason::text` is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Datadog refused the refresh token: the customer revoked access or
    /// uninstalled the integration.
    GrantRevoked,
    /// The org already has this integration's key, which the relay does
    /// not hold (409 on key creation).
    KeyConflict,
    /// Datadog refused the API key and a new one could not be created.
    KeyRefused,
    /// No usable access token could be had (not a revoked grant).
    RefreshFailed,
    /// The tenant's site was removed from `datadog.allowed_sites`.
    SiteNotAllowed,
    /// The last connect attempt failed (denied, code exchange, key).
    ConnectFailed,
    /// The partner disconnected the tenant (`DELETE /v1/tenants/{t}`).
    Disconnected,
}

impl ReasonCode {
    pub(crate) const ALL: [ReasonCode; 7] = [
        ReasonCode::GrantRevoked,
        ReasonCode::KeyConflict,
        ReasonCode::KeyRefused,
        ReasonCode::RefreshFailed,
        ReasonCode::SiteNotAllowed,
        ReasonCode::ConnectFailed,
        ReasonCode::Disconnected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::GrantRevoked => "grant_revoked",
            ReasonCode::KeyConflict => "key_conflict",
            ReasonCode::KeyRefused => "key_refused",
            ReasonCode::RefreshFailed => "refresh_failed",
            ReasonCode::SiteNotAllowed => "site_not_allowed",
            ReasonCode::ConnectFailed => "connect_failed",
            ReasonCode::Disconnected => "disconnected",
        }
    }

    /// The code stored as `s`; `None` for a code this build does not know.
    pub(crate) fn parse(s: &str) -> Option<ReasonCode> {
        ReasonCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Why a tenant is in its state: a code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub(crate) code: ReasonCode,
    pub(crate) text: String,
}

impl Reason {
    pub fn new(code: ReasonCode, text: impl Into<String>) -> Reason {
        Reason {
            code,
            text: text.into(),
        }
    }
}

/// What the store knows about a tenant, without its secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: String,
    pub state: TenantState,
    pub reason: Option<String>,
    /// The machine-readable reason (migration 0003), when one was recorded.
    pub reason_code: Option<ReasonCode>,
    /// The API domain (`datadoghq.eu`), once connected.
    pub domain: Option<String>,
    pub(crate) org_id: Option<String>,
    pub(crate) org_name: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) scopes: Option<String>,
    pub(crate) access_expires_at: Option<i64>,
    pub api_key_id: Option<String>,
    pub api_key_last4: Option<String>,
    pub has_api_key: bool,
    pub has_refresh_token: bool,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) connected_at: Option<i64>,
    /// Increases on every change; replicas use it to notice changes.
    pub version: i64,
    /// The connection generation: grows on a disconnect and on a reconnect
    /// to another org or site (migration 0003). Data is sent only for the
    /// generation it was accepted for.
    pub(crate) generation: i64,
    /// When Datadog last confirmed the grant (a refresh it answered).
    pub(crate) grant_checked_at: Option<i64>,
    /// The tags the customer attaches to the integration's data,
    /// normalised (migration 0004; `crate::tags`). Empty: none.
    pub tags: Vec<String>,
}

#[cfg(test)]
impl Tenant {
    /// A tenant record for unit tests: `id` in `state` on EU1's domain, with
    /// an API key and a refresh token, version 1 and nothing else; a test
    /// sets what it needs with `Tenant { .., ..Tenant::fixture(id, state) }`.
    pub(crate) fn fixture(id: &str, state: TenantState) -> Tenant {
        Tenant {
            id: id.into(),
            state,
            reason: None,
            reason_code: None,
            domain: Some("datadoghq.eu".into()),
            org_id: None,
            org_name: None,
            client_id: None,
            scopes: None,
            access_expires_at: None,
            api_key_id: None,
            api_key_last4: None,
            has_api_key: true,
            has_refresh_token: true,
            created_at: 0,
            updated_at: 0,
            connected_at: None,
            version: 1,
            generation: 0,
            grant_checked_at: None,
            tags: Vec::new(),
        }
    }
}

/// A tenant's secrets, opened.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub access_token: Option<Secret>,
    pub access_expires_at: Option<i64>,
    pub refresh_token: Option<Secret>,
    pub api_key: Option<Secret>,
    /// The site and connection generation the key belongs to (same row,
    /// same read).
    pub(crate) domain: Option<String>,
    pub(crate) generation: i64,
}

/// An OAuth connect flow awaiting its callback.
#[derive(Debug, Clone)]
pub struct Flow {
    /// SHA-256 of the `state` value (hex); the state itself is not stored.
    pub state_hash: String,
    pub tenant: String,
    pub verifier: Secret,
    /// The host the browser was sent to authorize at.
    pub web_host: String,
    /// The site domain the flow is bound to; `None` when it started at the
    /// US1 region picker (the user may pick any region).
    pub domain: Option<String>,
    pub client_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The result of a completed connect, written atomically.
#[derive(Debug, Clone)]
pub struct Connection {
    pub domain: String,
    pub org_id: Option<String>,
    pub org_name: Option<String>,
    pub client_id: String,
    pub scopes: Option<String>,
    pub access_token: Secret,
    pub access_expires_at: i64,
    pub refresh_token: Option<Secret>,
    pub api_key: Secret,
    pub api_key_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the master key does not match the one this store was created with (storage.master_key); restore the original key"
    )]
    WrongMasterKey,
    #[error("cannot open the store at {location}: {message}")]
    Open { location: String, message: String },
    #[error("store migration failed: {0}")]
    Migrate(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored secret for tenant {tenant} ({field}) cannot be opened: {error}")]
    Seal {
        tenant: String,
        field: &'static str,
        error: SealError,
    },
    #[error("store holds unexpected data: {0}")]
    Corrupt(String),
    #[error("tenant {0} does not exist")]
    NoTenant(String),
    #[error("cannot take the credentials lock of tenant {tenant}: {message}")]
    Lock { tenant: String, message: String },
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const CANARY_SCOPE: &str = "ddrelay-store";
const CANARY_FIELD: &str = "canary";
const CANARY_TEXT: &[u8] = b"ddrelay master key check";

/// Connections reserved for holding tenant locks on PostgreSQL, per
/// replica. A locked section holds one across a Datadog call (at most
/// [`LOCK_WAIT`]), so they are kept apart from the main pool: a refresh storm
/// can never starve the reads and writes the locked sections themselves need.
/// Opened lazily; one per tenant being renewed at this moment.
const LOCK_CONNECTIONS: u32 = 8;

/// Connections of the main pool on PostgreSQL, per replica (short queries).
const POSTGRES_CONNECTIONS: u32 = 16;

/// Longest wait for a tenant lock held by another replica. A locked section
/// makes at most five Datadog calls (validate, refresh, create, refresh,
/// create) of at most 30 s each; a waiter gives up after this and its caller
/// retries later (a transient error).
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(180);

/// A lock transaction left idle longer than this is ended by PostgreSQL, so
/// a wedged holder cannot block a tenant forever (a holder that dies
/// releases at once: its connection closes).
const LOCK_IDLE_LIMIT: Duration = Duration::from_secs(300);

/// The credential and tenant store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// PostgreSQL only: the connections that hold advisory locks.
    lock_pool: Option<AnyPool>,
    /// In-process half of [`Store::lock_tenant`], shared by clones.
    local_locks: LocalLocks,
    backend: Backend,
    sealer: Sealer,
    /// Whether lifecycle events are written (`outbox`), shared by clones.
    recording: outbox::Recording,
    events_written: Arc<tokio::sync::Notify>,
}

type LocalLocks = Arc<parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// A tenant's credentials lock (see [`Store::lock_tenant`]). Release it with
/// [`TenantLock::release`]; dropping it releases too (on PostgreSQL the
/// rollback is sent when the connection returns to the pool, a moment later).
#[must_use = "the lock is released when this is dropped"]
pub struct TenantLock {
    // Field order: the database lock goes before the in-process one, so a
    // local waiter never finds the advisory lock still held by us.
    tx: Option<sqlx::Transaction<'static, sqlx::Any>>,
    local: Option<tokio::sync::OwnedMutexGuard<()>>,
    tenant: String,
    locks: LocalLocks,
}

impl fmt::Debug for TenantLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantLock")
            .field("tenant", &self.tenant)
            .field("shared", &self.tx.is_some())
            .finish()
    }
}

impl TenantLock {
    /// Releases the lock now (commits the lock transaction on PostgreSQL).
    pub async fn release(mut self) {
        if let Some(tx) = self.tx.take()
            && let Err(e) = tx.commit().await
        {
            // The connection is dropped with the error: the server ends the
            // transaction, and the lock with it.
            tracing::warn!(tenant = %self.tenant, error = %e, "releasing a tenant lock failed");
        }
    }
}

impl Drop for TenantLock {
    fn drop(&mut self) {
        drop(self.tx.take());
        drop(self.local.take());
        let mut map = self.locks.lock();
        if map
            .get(&self.tenant)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.tenant);
        }
    }
}

/// The advisory lock key of a tenant: 64 bits of SHA-256, namespaced so it
/// cannot collide with another application's keys on a shared server by
/// design (only by chance, which merely serialises two tenants).
fn advisory_key(tenant: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"ddrelay tenant lock\0");
    h.update(tenant.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

const TENANT_COLUMNS: &str = "id, state, reason, reason_code, domain, org_id, org_name, client_id, scopes, access_expires_at, \
     api_key_id, api_key_last4, api_key IS NOT NULL AS has_api_key, refresh_token IS NOT NULL AS has_refresh_token, \
     created_at, updated_at, connected_at, version, generation, grant_checked_at, tags";

impl Store {
    /// Opens (creating if needed) the SQLite store at `path`.
    pub async fn open_sqlite(path: &Path, key: &MasterKey) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
                location: parent.display().to_string(),
                message: e.to_string(),
            })?;
        }
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL: readers never block the writer; FULL: a committed
                    // credential survives power loss; busy_timeout: writers wait
                    // for each other instead of failing.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| StoreError::Open {
                location: path.display().to_string(),
                message: e.to_string(),
            })?;
        Store::init(pool, None, Backend::Sqlite, key).await
    }

    /// Opens the PostgreSQL store at `url`.
    pub async fn open_postgres(url: &Secret, key: &MasterKey) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let location = redact_url(url.expose());
        let open_error = |e: sqlx::Error| StoreError::Open {
            location: location.clone(),
            message: redact_text(&e.to_string(), url),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(POSTGRES_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url.expose())
            .await
            .map_err(open_error)?;
        let lock_pool = AnyPoolOptions::new()
            .max_connections(LOCK_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(LOCK_WAIT)
            .connect_lazy(url.expose())
            .map_err(open_error)?;
        Store::init(pool, Some(lock_pool), Backend::Postgres, key).await
    }

    async fn init(
        pool: AnyPool,
        lock_pool: Option<AnyPool>,
        backend: Backend,
        key: &MasterKey,
    ) -> Result<Store, StoreError> {
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        let store = Store {
            pool,
            lock_pool,
            local_locks: LocalLocks::default(),
            backend,
            sealer: Sealer::new(key),
            recording: outbox::Recording::default(),
            events_written: Arc::default(),
        };
        store.check_canary().await?;
        Ok(store)
    }

    async fn check_canary(&self) -> Result<(), StoreError> {
        let sealed = self.sealer.seal(CANARY_SCOPE, CANARY_FIELD, CANARY_TEXT);
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('canary', $1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(sealed)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'canary'")
            .fetch_one(&self.pool)
            .await?;
        let stored: Vec<u8> = row.try_get("value")?;
        match self.sealer.open(CANARY_SCOPE, CANARY_FIELD, &stored) {
            Ok(v) if v.as_slice() == CANARY_TEXT => Ok(()),
            Ok(_) | Err(SealError::WrongKey) | Err(SealError::Tampered) => {
                Err(StoreError::WrongMasterKey)
            }
            Err(SealError::Malformed) => Err(StoreError::Corrupt(
                "the master key canary is malformed".into(),
            )),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pools (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        if let Some(p) = &self.lock_pool {
            p.close().await;
        }
        self.pool.close().await;
    }

    /// Takes tenant `id`'s credentials lock, waiting for whoever holds it:
    /// in this process (every backend) and, on PostgreSQL, on every replica
    /// sharing the database (`pg_advisory_xact_lock` in a transaction of a
    /// connection reserved for locks, held until the lock is released).
    ///
    /// Hold it across read → call Datadog → write, and re-read the tenant
    /// after taking it: whoever held it before may have changed everything.
    /// Locks of different tenants are independent; never take a second lock
    /// while holding one.
    pub async fn lock_tenant(&self, id: &str) -> Result<TenantLock, StoreError> {
        let mutex = self
            .local_locks
            .lock()
            .entry(id.to_string())
            .or_default()
            .clone();
        let mut lock = TenantLock {
            tx: None,
            local: None,
            tenant: id.to_string(),
            locks: self.local_locks.clone(),
        };
        lock.local = Some(mutex.lock_owned().await);
        let Some(pool) = &self.lock_pool else {
            return Ok(lock);
        };
        let fail = |e: sqlx::Error| {
            let timed_out = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "55P03");
            StoreError::Lock {
                tenant: id.to_string(),
                message: if timed_out {
                    format!("still held elsewhere after {} s", LOCK_WAIT.as_secs())
                } else {
                    e.to_string()
                },
            }
        };
        let mut tx = pool.begin().await.map_err(fail)?;
        sqlx::query(
            "SELECT set_config('lock_timeout', $1, true) AS a, \
               set_config('idle_in_transaction_session_timeout', $2, true) AS b",
        )
        .bind(format!("{}ms", LOCK_WAIT.as_millis()))
        .bind(format!("{}ms", LOCK_IDLE_LIMIT.as_millis()))
        .fetch_one(&mut *tx)
        .await
        .map_err(fail)?;
        sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
            .bind(advisory_key(id))
            .fetch_one(&mut *tx)
            .await
            .map_err(fail)?;
        lock.tx = Some(tx);
        Ok(lock)
    }

    /// A statement that changes a tenant row, with `{next}` replaced by this
    /// backend's next change number (see the module documentation). Built
    /// once per statement and backend.
    fn versioned(&self, template: &'static str) -> &'static str {
        type Cache = parking_lot::Mutex<HashMap<(&'static str, Backend), &'static str>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let next = match self.backend {
            Backend::Sqlite => "(SELECT COALESCE(MAX(version), 0) + 1 FROM tenants)",
            Backend::Postgres => "ddrelay_next_tenant_version()",
        };
        let mut cache = CACHE.get_or_init(Default::default).lock();
        let sql: &'static str = cache
            .entry((template, self.backend))
            .or_insert_with(|| Box::leak(template.replace("{next}", next).into_boxed_str()));
        sql
    }

    /// Starts a write that may change tenant `id`'s state: a transaction
    /// holding the tenant row (`FOR UPDATE` on PostgreSQL; SQLite's write
    /// lock, taken at `BEGIN IMMEDIATE`), and the row as it was. Finish it
    /// with [`Store::finish_change`], which writes the lifecycle event the
    /// change calls for in the same transaction (`outbox`).
    async fn begin_change(
        &self,
        id: &str,
    ) -> Result<
        (
            sqlx::Transaction<'static, sqlx::Any>,
            Option<outbox::Before>,
        ),
        StoreError,
    > {
        let mut tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        let before = self.before_change(&mut tx, id).await?;
        Ok((tx, before))
    }

    /// Reads tenant `id` as changed, writes its lifecycle event if the
    /// change calls for one, and commits.
    async fn finish_change(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        id: &str,
        before: Option<outbox::Before>,
        now: i64,
    ) -> Result<(), StoreError> {
        let row = sqlx::query(const_format_tenant_select_one())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let after = row.map(|r| tenant_from_row(&r)).transpose()?;
        let written = match &after {
            Some(after) => {
                self.write_event(&mut tx, before.as_ref(), after, now)
                    .await?
            }
            None => false,
        };
        tx.commit().await?;
        if written {
            self.events_written.notify_one();
        }
        Ok(())
    }

    // ---- flows ----------------------------------------------------------

    /// Stores a pending flow; its verifier is sealed under the state hash.
    pub async fn create_flow(&self, flow: &Flow) -> Result<(), StoreError> {
        let sealed =
            self.sealer
                .seal_secret(&flow_scope(&flow.state_hash), "verifier", &flow.verifier);
        sqlx::query(
            "INSERT INTO oauth_flows (state_hash, tenant, sealed, web_host, domain, client_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&flow.state_hash)
        .bind(&flow.tenant)
        .bind(sealed)
        .bind(&flow.web_host)
        .bind(flow.domain.as_deref())
        .bind(&flow.client_id)
        .bind(flow.created_at)
        .bind(flow.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes and returns the flow for `state_hash`: a state is usable once,
    /// even when two callbacks race (the DELETE decides).
    pub async fn take_flow(&self, state_hash: &str) -> Result<Option<Flow>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM oauth_flows WHERE state_hash = $1 \
             RETURNING state_hash, tenant, sealed, web_host, domain, client_id, created_at, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Vec<u8> = row.try_get("sealed")?;
        let verifier = self
            .sealer
            .open_secret(&flow_scope(state_hash), "verifier", &sealed)
            .map_err(|error| StoreError::Seal {
                tenant: row.try_get("tenant").unwrap_or_default(),
                field: "verifier",
                error,
            })?;
        Ok(Some(Flow {
            state_hash: row.try_get("state_hash")?,
            tenant: row.try_get("tenant")?,
            verifier,
            web_host: row.try_get("web_host")?,
            domain: row.try_get("domain")?,
            client_id: row.try_get("client_id")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    /// Deletes flows that expired before `now`; returns how many.
    pub async fn purge_expired_flows(&self, now: i64) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM oauth_flows WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// The site each tenant's newest unexpired flow is bound to (`None`:
    /// the connect named none, the user picks a region at Datadog).
    pub async fn flow_sites(&self, now: i64) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant, domain FROM oauth_flows WHERE expires_at >= $1 ORDER BY created_at",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut newest: HashMap<String, Option<String>> = HashMap::new();
        for row in rows {
            newest.insert(row.try_get("tenant")?, row.try_get("domain")?);
        }
        Ok(newest.into_iter().collect())
    }

    /// Pending flows per tenant (tenants with a started, unfinished connect).
    pub async fn count_flows(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM oauth_flows")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    // ---- tenants --------------------------------------------------------

    /// Records that a connect flow started for `id`: a new tenant becomes
    /// `pending`; a disconnected one too; a connected one keeps its state
    /// (a reconnect must not interrupt its deliveries).
    pub async fn touch_pending(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(self.versioned(
            "INSERT INTO tenants (id, state, created_at, updated_at, version) \
             VALUES ($1, 'pending', $2, $2, {next}) \
             ON CONFLICT (id) DO NOTHING",
        ))
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        sqlx::query(self.versioned(
            "UPDATE tenants SET state = 'pending', reason = NULL, reason_code = NULL, updated_at = $2, \
             version = {next} \
             WHERE id = $1 AND state = 'disconnected'",
        ))
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let sql = const_format_tenant_select_one();
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| tenant_from_row(&r)).transpose()
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(const_format_tenant_select_all())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// Tenants changed after `version` (replicas poll this).
    pub async fn tenants_changed_since(&self, version: i64) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(const_format_tenant_select_since())
            .bind(version)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// The tenant connected to Datadog org `org_id`, other than `except`.
    pub async fn tenant_for_org(
        &self,
        org_id: &str,
        except: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT id FROM tenants WHERE org_id = $1 AND id <> $2 AND state IN ('connected', 'reauth_required') LIMIT 1",
        )
        .bind(org_id)
        .bind(except)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// Opens a tenant's secrets.
    pub async fn credentials(&self, id: &str) -> Result<Credentials, StoreError> {
        let row = sqlx::query("SELECT access_token, access_expires_at, refresh_token, api_key, domain, generation FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NoTenant(id.to_string()))?;
        Ok(Credentials {
            access_token: self.open_column(&row, id, "access_token")?,
            access_expires_at: row.try_get("access_expires_at")?,
            refresh_token: self.open_column(&row, id, "refresh_token")?,
            api_key: self.open_column(&row, id, "api_key")?,
            domain: row.try_get("domain")?,
            generation: row.try_get("generation")?,
        })
    }

    fn open_column(
        &self,
        row: &AnyRow,
        tenant: &str,
        field: &'static str,
    ) -> Result<Option<Secret>, StoreError> {
        let sealed: Option<Vec<u8>> = row.try_get(field)?;
        sealed
            .map(|s| {
                self.sealer
                    .open_secret(tenant, field, &s)
                    .map_err(|error| StoreError::Seal {
                        tenant: tenant.to_string(),
                        field,
                        error,
                    })
            })
            .transpose()
    }

    /// Stores a completed connect atomically: tokens, key, site and org, and
    /// the `connected` state, in one statement.
    pub async fn save_connection(
        &self,
        id: &str,
        c: &Connection,
        now: i64,
    ) -> Result<(), StoreError> {
        let access = self.sealer.seal_secret(id, "access_token", &c.access_token);
        let refresh = c
            .refresh_token
            .as_ref()
            .map(|r| self.sealer.seal_secret(id, "refresh_token", r));
        let key = self.sealer.seal_secret(id, "api_key", &c.api_key);
        let last4 = last4(&c.api_key);
        let (mut tx, before) = self.begin_change(id).await?;
        sqlx::query(
            self.versioned("INSERT INTO tenants (id, state, reason, domain, org_id, org_name, client_id, scopes, access_token, \
               access_expires_at, refresh_token, api_key, api_key_id, api_key_last4, created_at, updated_at, connected_at, \
               grant_checked_at, version) \
             VALUES ($1, 'connected', NULL, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $13, $13, \
               {next}) \
             ON CONFLICT (id) DO UPDATE SET state = 'connected', reason = NULL, reason_code = NULL, \
               generation = CASE WHEN tenants.domain IS DISTINCT FROM excluded.domain \
                 OR tenants.org_id IS DISTINCT FROM excluded.org_id \
                 THEN tenants.generation + 1 ELSE tenants.generation END, \
               grant_checked_at = excluded.updated_at, domain = excluded.domain, \
               org_id = excluded.org_id, org_name = excluded.org_name, client_id = excluded.client_id, \
               scopes = excluded.scopes, access_token = excluded.access_token, \
               access_expires_at = excluded.access_expires_at, refresh_token = excluded.refresh_token, \
               api_key = excluded.api_key, api_key_id = excluded.api_key_id, api_key_last4 = excluded.api_key_last4, \
               updated_at = excluded.updated_at, connected_at = excluded.connected_at, version = excluded.version"),
        )
        .bind(id)
        .bind(&c.domain)
        .bind(c.org_id.as_deref())
        .bind(c.org_name.as_deref())
        .bind(&c.client_id)
        .bind(c.scopes.as_deref())
        .bind(access)
        .bind(c.access_expires_at)
        .bind(refresh)
        .bind(key)
        .bind(c.api_key_id.as_deref())
        .bind(last4)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        self.finish_change(tx, id, before, now).await
    }

    /// Stores refreshed tokens. A rotated refresh token is written in the
    /// same statement as the access token that came with it. A refresh
    /// Datadog answered confirms the grant (`grant_checked_at`).
    pub async fn save_tokens(
        &self,
        id: &str,
        access: &Secret,
        expires_at: i64,
        refresh: Option<&Secret>,
        now: i64,
    ) -> Result<(), StoreError> {
        let access = self.sealer.seal_secret(id, "access_token", access);
        let refresh = refresh.map(|r| self.sealer.seal_secret(id, "refresh_token", r));
        let r = sqlx::query(self.versioned(
            "UPDATE tenants SET access_token = $2, access_expires_at = $3, \
               refresh_token = COALESCE($4, refresh_token), updated_at = $5, grant_checked_at = $5, \
               version = {next} WHERE id = $1",
        ))
        .bind(id)
        .bind(access)
        .bind(expires_at)
        .bind(refresh)
        .bind(now)
        .execute(&self.pool)
        .await?;
        changed_tenant(&r, id)
    }

    /// Stores a new API key (after key re-creation) and marks the tenant connected.
    pub async fn save_api_key(
        &self,
        id: &str,
        key: &Secret,
        key_id: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let sealed = self.sealer.seal_secret(id, "api_key", key);
        let (mut tx, before) = self.begin_change(id).await?;
        let r = sqlx::query(
            self.versioned("UPDATE tenants SET api_key = $2, api_key_id = $3, api_key_last4 = $4, state = 'connected', reason = NULL, reason_code = NULL, \
               updated_at = $5, version = {next} WHERE id = $1"),
        )
        .bind(id)
        .bind(sealed)
        .bind(key_id)
        .bind(last4(key))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        changed_tenant(&r, id)?;
        self.finish_change(tx, id, before, now).await
    }

    /// Changes a tenant's state and reason.
    pub async fn set_state(
        &self,
        id: &str,
        state: TenantState,
        reason: Option<&Reason>,
        now: i64,
    ) -> Result<(), StoreError> {
        let (mut tx, before) = self.begin_change(id).await?;
        let r = sqlx::query(self.versioned(
            "UPDATE tenants SET state = $2, reason = $3, reason_code = $5, updated_at = $4, \
               version = {next} WHERE id = $1",
        ))
        .bind(id)
        .bind(state.as_str())
        .bind(reason.map(|r| r.text.as_str()))
        .bind(now)
        .bind(reason.map(|r| r.code.as_str()))
        .execute(&mut *tx)
        .await?;
        changed_tenant(&r, id)?;
        self.finish_change(tx, id, before, now).await
    }

    /// Deletes a tenant's secrets and marks it disconnected. Site and org are
    /// kept so an operator can still see what it was.
    pub async fn disconnect(&self, id: &str, reason: &str, now: i64) -> Result<(), StoreError> {
        let (mut tx, before) = self.begin_change(id).await?;
        let r = sqlx::query(
            self.versioned("UPDATE tenants SET state = 'disconnected', reason = $2, reason_code = 'disconnected', access_token = NULL, access_expires_at = NULL, \
               refresh_token = NULL, api_key = NULL, updated_at = $3, generation = generation + 1, \
               version = {next} WHERE id = $1"),
        )
        .bind(id)
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        changed_tenant(&r, id)?;
        sqlx::query("DELETE FROM oauth_flows WHERE tenant = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.finish_change(tx, id, before, now).await
    }

    /// Replaces a tenant's tags (already normalised, `crate::tags`); an
    /// empty list removes them. A new change number, so replicas see it.
    pub async fn set_tags(&self, id: &str, tags: &[String], now: i64) -> Result<(), StoreError> {
        let stored = (!tags.is_empty())
            .then(|| serde_json::to_string(tags))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let r = sqlx::query(self.versioned(
            "UPDATE tenants SET tags = $2, updated_at = $3, version = {next} WHERE id = $1",
        ))
        .bind(id)
        .bind(stored)
        .bind(now)
        .execute(&self.pool)
        .await?;
        changed_tenant(&r, id)
    }

    /// Row counts per state (for metrics).
    pub async fn count_by_state(&self) -> Result<Vec<(TenantState, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM tenants GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let s: String = r.try_get("state")?;
                Ok((s.parse()?, r.try_get("n")?))
            })
            .collect()
    }
}

// sqlx 0.9 wants `&'static str` queries; these are built once.
fn const_format_tenant_select_one() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"))
}

fn const_format_tenant_select_all() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"))
}

fn const_format_tenant_select_since() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE version > $1 ORDER BY version")
    })
}

fn tenant_from_row(r: &AnyRow) -> Result<Tenant, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(Tenant {
        id: r.try_get("id")?,
        state: state.parse()?,
        reason: r.try_get("reason")?,
        reason_code: r
            .try_get::<Option<String>, _>("reason_code")?
            .as_deref()
            .and_then(ReasonCode::parse),
        domain: r.try_get("domain")?,
        org_id: r.try_get("org_id")?,
        org_name: r.try_get("org_name")?,
        client_id: r.try_get("client_id")?,
        scopes: r.try_get("scopes")?,
        access_expires_at: r.try_get("access_expires_at")?,
        api_key_id: r.try_get("api_key_id")?,
        api_key_last4: r.try_get("api_key_last4")?,
        has_api_key: get_bool(r, "has_api_key")?,
        has_refresh_token: get_bool(r, "has_refresh_token")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        connected_at: r.try_get("connected_at")?,
        version: r.try_get("version")?,
        generation: r.try_get("generation")?,
        grant_checked_at: r.try_get("grant_checked_at")?,
        tags: tags_from_column(r.try_get("tags")?)?,
    })
}

/// The `tags` column: a JSON array of strings, or NULL for none.
fn tags_from_column(stored: Option<String>) -> Result<Vec<String>, StoreError> {
    match stored {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("a tenant's tags are not a JSON list: {e}"))),
    }
}

/// SQLite returns booleans as integers, PostgreSQL as booleans.
fn get_bool(r: &AnyRow, col: &str) -> Result<bool, StoreError> {
    if let Ok(b) = r.try_get::<bool, _>(col) {
        return Ok(b);
    }
    Ok(r.try_get::<i64, _>(col)? != 0)
}

fn flow_scope(state_hash: &str) -> String {
    format!("flow:{state_hash}")
}

/// `Ok` when the update `r` reports changed a row, that is when the tenant
/// `id` it named exists.
fn changed_tenant(r: &sqlx::any::AnyQueryResult, id: &str) -> Result<(), StoreError> {
    if r.rows_affected() == 0 {
        return Err(StoreError::NoTenant(id.to_string()));
    }
    Ok(())
}

fn last4(key: &Secret) -> String {
    let k = key.expose();
    k.get(k.len().saturating_sub(4)..)
        .unwrap_or_default()
        .to_string()
}

/// A database URL with its password and query removed, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("redacted"));
            }
            if u.query().is_some() {
                u.set_query(Some("redacted"));
            }
            u.to_string()
        }
        Err(_) => crate::secret::REDACTED.to_string(),
    }
}

/// Removes the URL's password from a driver error message, should it echo it.
fn redact_text(text: &str, url: &Secret) -> String {
    let mut out = text.replace(url.expose(), &redact_url(url.expose()));
    if let Ok(u) = url::Url::parse(url.expose())
        && let Some(p) = u.password()
        && !p.is_empty()
    {
        out = out.replace(p, "redacted");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two dialects' migrations are one schema written twice, because a
    /// shipped migration can never change (below). What keeps them the
    /// same: every SQLite file is its PostgreSQL twin with the types mapped,
    /// except 0002, whose counter only PostgreSQL needs (the file says why).
    #[test]
    fn the_sqlite_migrations_are_the_postgres_ones_with_sqlite_types() {
        let map = [
            ("(PostgreSQL)", "(SQLite)"),
            ("BIGSERIAL PRIMARY KEY", "INTEGER PRIMARY KEY AUTOINCREMENT"),
            ("BYTEA", "BLOB"),
            ("BIGINT", "INTEGER"),
        ];
        let pg: Vec<_> = POSTGRES_MIGRATOR.iter().collect();
        let lite: Vec<_> = SQLITE_MIGRATOR.iter().collect();
        let versions =
            |m: &[&sqlx::migrate::Migration]| m.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(versions(&pg), versions(&lite), "the same versions on both");
        for (p, l) in pg.iter().zip(&lite) {
            assert_eq!(p.description, l.description, "version {}", p.version);
            if p.version == 2 {
                continue;
            }
            // SQLite takes BIGINT too (as INTEGER), so both sides are mapped.
            let sqlite = |sql: &str| {
                map.iter()
                    .fold(sql.to_string(), |s, (a, b)| s.replace(a, b))
            };
            assert_eq!(
                sqlite(p.sql.as_str()),
                sqlite(l.sql.as_str()),
                "migration {} differs beyond its types",
                p.version
            );
        }
    }

    /// sqlx records each applied migration's checksum and refuses to start
    /// on a database whose migration file changed since: editing a shipped
    /// migration would stop every deployed relay. A schema change is a new
    /// file; this pins the shipped ones.
    #[test]
    fn shipped_migrations_never_change() {
        for (migrator, want) in [
            (&SQLITE_MIGRATOR, SQLITE_SHIPPED),
            (&POSTGRES_MIGRATOR, POSTGRES_SHIPPED),
        ] {
            let got: Vec<(i64, String)> = migrator
                .iter()
                .map(|m| {
                    (
                        m.version,
                        m.checksum
                            .iter()
                            .take(8)
                            .map(|b| format!("{b:02x}"))
                            .collect(),
                    )
                })
                .collect();
            for (version, checksum) in want {
                assert!(
                    got.contains(&(*version, checksum.to_string())),
                    "shipped migration {version} changed (or is gone); got {got:?}"
                );
            }
        }
    }

    const SQLITE_SHIPPED: &[(i64, &str)] = &[
        (1, "d385b71d3a8b8615"),
        (2, "86be422a2037b723"),
        (3, "04b4e649e038f513"),
        (4, "1d3cadb04cbce2cf"),
        (5, "8ffe7e1592429618"),
        (6, "1be7c14696ad5ace"),
    ];
    const POSTGRES_SHIPPED: &[(i64, &str)] = &[
        (1, "c700f0c8534e6c7a"),
        (2, "11125db5c3caf0cc"),
        (3, "04b4e649e038f513"),
        (4, "1d3cadb04cbce2cf"),
        (5, "9491cab15701f6d6"),
        (6, "1be7c14696ad5ace"),
    ];

    async fn store(dir: &tempfile::TempDir) -> (Store, MasterKey) {
        let key = MasterKey::generate();
        (
            Store::open_sqlite(&dir.path().join("t.db"), &key)
                .await
                .unwrap(),
            key,
        )
    }

    fn connection(key: &str) -> Connection {
        Connection {
            domain: "datadoghq.eu".into(),
            org_id: Some("org-1".into()),
            org_name: Some("Org One".into()),
            client_id: "client".into(),
            scopes: Some("api_keys_write".into()),
            access_token: Secret::new("access-AAAA-plaintext"),
            access_expires_at: 1000,
            refresh_token: Some(Secret::new("refresh-RRRR-plaintext")),
            api_key: Secret::new(key),
            api_key_id: Some("key-id".into()),
        }
    }

    #[tokio::test]
    async fn wrong_master_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = store(&dir).await;
        s.close().await;
        let err = Store::open_sqlite(&dir.path().join("t.db"), &MasterKey::generate())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::WrongMasterKey), "{err}");
    }

    #[tokio::test]
    async fn tenant_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = store(&dir).await;
        s.touch_pending("acme", 1).await.unwrap();
        assert_eq!(
            s.tenant("acme").await.unwrap().unwrap().state,
            TenantState::Pending
        );
        s.save_connection("acme", &connection("apikey-KKKK-plaintext-0001"), 2)
            .await
            .unwrap();
        let t = s.tenant("acme").await.unwrap().unwrap();
        assert_eq!(
            (t.state, t.domain.as_deref(), t.has_api_key),
            (TenantState::Connected, Some("datadoghq.eu"), true)
        );
        assert_eq!(t.api_key_last4.as_deref(), Some("0001"));
        // A new connect flow does not interrupt a connected tenant.
        s.touch_pending("acme", 3).await.unwrap();
        assert_eq!(
            s.tenant("acme").await.unwrap().unwrap().state,
            TenantState::Connected
        );
        let c = s.credentials("acme").await.unwrap();
        assert_eq!(c.api_key.unwrap().expose(), "apikey-KKKK-plaintext-0001");
        s.save_tokens("acme", &Secret::new("access-2"), 5000, None, 4)
            .await
            .unwrap();
        let c = s.credentials("acme").await.unwrap();
        assert_eq!(c.access_token.unwrap().expose(), "access-2");
        assert_eq!(
            c.refresh_token.unwrap().expose(),
            "refresh-RRRR-plaintext",
            "refresh kept when not rotated"
        );
        assert_eq!(
            s.tenant_for_org("org-1", "other").await.unwrap().as_deref(),
            Some("acme")
        );
        assert_eq!(s.tenant_for_org("org-1", "acme").await.unwrap(), None);
        s.disconnect("acme", "disconnected by operator", 5)
            .await
            .unwrap();
        let c = s.credentials("acme").await.unwrap();
        assert!(c.api_key.is_none() && c.refresh_token.is_none() && c.access_token.is_none());
        assert_eq!(
            s.tenant("acme").await.unwrap().unwrap().state,
            TenantState::Disconnected
        );
        assert!(matches!(
            s.set_state("nope", TenantState::Connected, None, 1).await,
            Err(StoreError::NoTenant(_))
        ));
    }

    #[tokio::test]
    async fn flows_are_single_use() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = store(&dir).await;
        let flow = Flow {
            state_hash: "abc".into(),
            tenant: "acme".into(),
            verifier: Secret::new("verifier-VVVV-plaintext"),
            web_host: "app.datadoghq.com".into(),
            domain: None,
            client_id: "client".into(),
            created_at: 1,
            expires_at: 100,
        };
        s.create_flow(&flow).await.unwrap();
        let got = s.take_flow("abc").await.unwrap().unwrap();
        assert_eq!(got.verifier.expose(), "verifier-VVVV-plaintext");
        assert!(s.take_flow("abc").await.unwrap().is_none());
        s.create_flow(&Flow {
            state_hash: "old".into(),
            ..flow
        })
        .await
        .unwrap();
        assert_eq!(s.purge_expired_flows(101).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn no_plaintext_secret_in_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = store(&dir).await;
        s.save_connection("acme", &connection("apikey-KKKK-plaintext-0001"), 2)
            .await
            .unwrap();
        s.create_flow(&Flow {
            state_hash: "h".into(),
            tenant: "acme".into(),
            verifier: Secret::new("verifier-VVVV-plaintext"),
            web_host: "app.datadoghq.com".into(),
            domain: None,
            client_id: "c".into(),
            created_at: 1,
            expires_at: 2,
        })
        .await
        .unwrap();
        s.close().await;
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            all.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        for needle in [
            "apikey-KKKK-plaintext",
            "access-AAAA-plaintext",
            "refresh-RRRR-plaintext",
            "verifier-VVVV-plaintext",
        ] {
            assert!(
                !all.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} found in plaintext"
            );
        }
        // The non-secret fields are there, so the scan would have found them.
        assert!(all.windows(12).any(|w| w == b"datadoghq.eu"));
    }
}
