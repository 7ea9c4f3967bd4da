//! Copying one store into another: `ddrelay store migrate`, the move from
//! the embedded SQLite store to a PostgreSQL store shared by replicas.
//!
//! What is copied: every tenant row (state, reason, site, org, client,
//! scopes, timestamps, and the **sealed** tokens and API key byte for byte)
//! and every pending OAuth flow that has not expired (its sealed PKCE
//! verifier too). Nothing is opened or re-sealed on the way: the target must
//! be opened with the same master key, which its canary proves (a target
//! created with another key is refused by [`Store::open_postgres`]). Copied
//! rows get fresh change numbers from the target, so replicas already
//! running on it pick them up at their next sync.
//!
//! The copy is one transaction on the target: all of it or nothing. It
//! refuses a target that already holds tenants unless forced (then rows
//! with the same id are overwritten, others kept). Afterwards it verifies:
//! every copied row reads back identical, the counts match, and every
//! sealed secret opens on the target.
//!
//! Stop the relay that uses the source first: a change made there after the
//! copy would not reach the target (the command checks the queue lock).

use serde::Serialize;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Store, StoreError, TenantState, flow_scope};

/// Why a copy was refused or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    #[error(
        "the target store already holds {0} tenants; copy into an empty database, or pass --force to overwrite tenants with the same id"
    )]
    TargetNotEmpty(u64),
    #[error("the source and the target are the same database")]
    SameStore,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("verification failed after the copy: {0}")]
    Verify(String),
}

/// What a copy did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Report {
    /// Tenants the target held before the copy.
    pub(crate) target_tenants_before: u64,
    /// Tenants copied (and verified).
    pub(crate) tenants: u64,
    /// Copied tenants per state.
    pub(crate) by_state: Vec<(TenantState, u64)>,
    /// Pending, unexpired flows copied (and verified).
    pub(crate) flows: u64,
    /// Expired flows left behind.
    pub(crate) expired_flows_skipped: u64,
    /// Sealed values opened on the target during verification.
    pub(crate) secrets_verified: u64,
}

/// A tenant row as stored: secrets still sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawTenant {
    id: String,
    state: String,
    reason: Option<String>,
    reason_code: Option<String>,
    domain: Option<String>,
    org_id: Option<String>,
    org_name: Option<String>,
    client_id: Option<String>,
    scopes: Option<String>,
    access_token: Option<Vec<u8>>,
    access_expires_at: Option<i64>,
    refresh_token: Option<Vec<u8>>,
    api_key: Option<Vec<u8>>,
    api_key_id: Option<String>,
    api_key_last4: Option<String>,
    created_at: i64,
    updated_at: i64,
    connected_at: Option<i64>,
    generation: i64,
    grant_checked_at: Option<i64>,
    /// The tenant's tags, as stored (JSON; migration 0004).
    tags: Option<String>,
}

/// A pending flow row as stored: the verifier still sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawFlow {
    state_hash: String,
    tenant: String,
    sealed: Vec<u8>,
    web_host: String,
    domain: Option<String>,
    client_id: String,
    created_at: i64,
    expires_at: i64,
}

const RAW_TENANT_COLUMNS: &str = "SELECT id, state, reason, reason_code, domain, org_id, org_name, client_id, scopes, access_token, \
     access_expires_at, refresh_token, api_key, api_key_id, api_key_last4, created_at, updated_at, connected_at, \
     generation, grant_checked_at, tags FROM tenants ORDER BY id";

const RAW_FLOW_COLUMNS: &str = "SELECT state_hash, tenant, sealed, web_host, domain, client_id, created_at, expires_at \
     FROM oauth_flows ORDER BY state_hash";

fn raw_tenant(r: &AnyRow) -> Result<RawTenant, sqlx::Error> {
    Ok(RawTenant {
        id: r.try_get("id")?,
        state: r.try_get("state")?,
        reason: r.try_get("reason")?,
        reason_code: r.try_get("reason_code")?,
        domain: r.try_get("domain")?,
        org_id: r.try_get("org_id")?,
        org_name: r.try_get("org_name")?,
        client_id: r.try_get("client_id")?,
        scopes: r.try_get("scopes")?,
        access_token: r.try_get("access_token")?,
        access_expires_at: r.try_get("access_expires_at")?,
        refresh_token: r.try_get("refresh_token")?,
        api_key: r.try_get("api_key")?,
        api_key_id: r.try_get("api_key_id")?,
        api_key_last4: r.try_get("api_key_last4")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        connected_at: r.try_get("connected_at")?,
        generation: r.try_get("generation")?,
        grant_checked_at: r.try_get("grant_checked_at")?,
        tags: r.try_get("tags")?,
    })
}

fn raw_flow(r: &AnyRow) -> Result<RawFlow, sqlx::Error> {
    Ok(RawFlow {
        state_hash: r.try_get("state_hash")?,
        tenant: r.try_get("tenant")?,
        sealed: r.try_get("sealed")?,
        web_host: r.try_get("web_host")?,
        domain: r.try_get("domain")?,
        client_id: r.try_get("client_id")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

async fn tenants_of(store: &Store) -> Result<Vec<RawTenant>, StoreError> {
    let rows = sqlx::query(RAW_TENANT_COLUMNS)
        .fetch_all(&store.pool)
        .await?;
    Ok(rows.iter().map(raw_tenant).collect::<Result<_, _>>()?)
}

async fn flows_of(store: &Store) -> Result<Vec<RawFlow>, StoreError> {
    let rows = sqlx::query(RAW_FLOW_COLUMNS).fetch_all(&store.pool).await?;
    Ok(rows.iter().map(raw_flow).collect::<Result<_, _>>()?)
}

/// Copies every tenant and every unexpired pending flow of `from` into `to`
/// (see the module documentation), then verifies the copy. `now` (Unix
/// seconds) decides which flows have expired. `same_database` is the
/// caller's judgement that both name one database (refused).
pub(crate) async fn copy(
    from: &Store,
    to: &Store,
    force: bool,
    now: i64,
    same_database: bool,
) -> Result<Report, CopyError> {
    if same_database {
        return Err(CopyError::SameStore);
    }
    let before: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tenants")
        .fetch_one(&to.pool)
        .await
        .map_err(StoreError::from)?
        .try_get("n")
        .map_err(StoreError::from)?;
    let before = before.max(0) as u64;
    if before > 0 && !force {
        return Err(CopyError::TargetNotEmpty(before));
    }
    let tenants = tenants_of(from).await?;
    let (flows, expired): (Vec<RawFlow>, Vec<RawFlow>) = flows_of(from)
        .await?
        .into_iter()
        .partition(|f| f.expires_at >= now);

    let mut tx = to.pool.begin().await.map_err(StoreError::from)?;
    let insert_tenant = to.versioned(
        "INSERT INTO tenants (id, state, reason, domain, org_id, org_name, client_id, scopes, access_token, \
           access_expires_at, refresh_token, api_key, api_key_id, api_key_last4, created_at, updated_at, connected_at, \
           generation, grant_checked_at, reason_code, tags, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, {next}) \
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, reason = excluded.reason, domain = excluded.domain, \
           org_id = excluded.org_id, org_name = excluded.org_name, client_id = excluded.client_id, \
           scopes = excluded.scopes, access_token = excluded.access_token, \
           access_expires_at = excluded.access_expires_at, refresh_token = excluded.refresh_token, \
           api_key = excluded.api_key, api_key_id = excluded.api_key_id, api_key_last4 = excluded.api_key_last4, \
           created_at = excluded.created_at, updated_at = excluded.updated_at, \
           connected_at = excluded.connected_at, generation = excluded.generation, \
           grant_checked_at = excluded.grant_checked_at, reason_code = excluded.reason_code, \
           tags = excluded.tags, version = excluded.version",
    );
    for t in &tenants {
        sqlx::query(insert_tenant)
            .bind(&t.id)
            .bind(&t.state)
            .bind(t.reason.as_deref())
            .bind(t.domain.as_deref())
            .bind(t.org_id.as_deref())
            .bind(t.org_name.as_deref())
            .bind(t.client_id.as_deref())
            .bind(t.scopes.as_deref())
            .bind(t.access_token.clone())
            .bind(t.access_expires_at)
            .bind(t.refresh_token.clone())
            .bind(t.api_key.clone())
            .bind(t.api_key_id.as_deref())
            .bind(t.api_key_last4.as_deref())
            .bind(t.created_at)
            .bind(t.updated_at)
            .bind(t.connected_at)
            .bind(t.generation)
            .bind(t.grant_checked_at)
            .bind(t.reason_code.as_deref())
            .bind(t.tags.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
    }
    for f in &flows {
        sqlx::query(
            "INSERT INTO oauth_flows (state_hash, tenant, sealed, web_host, domain, client_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (state_hash) DO UPDATE SET tenant = excluded.tenant, sealed = excluded.sealed, \
               web_host = excluded.web_host, domain = excluded.domain, client_id = excluded.client_id, \
               created_at = excluded.created_at, expires_at = excluded.expires_at",
        )
        .bind(&f.state_hash)
        .bind(&f.tenant)
        .bind(f.sealed.clone())
        .bind(&f.web_host)
        .bind(f.domain.as_deref())
        .bind(&f.client_id)
        .bind(f.created_at)
        .bind(f.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
    }
    tx.commit().await.map_err(StoreError::from)?;

    let secrets_verified = verify(to, &tenants, &flows, before == 0).await?;
    let mut by_state: Vec<(TenantState, u64)> = Vec::new();
    for t in &tenants {
        let state: TenantState = t.state.parse()?;
        match by_state.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => by_state.push((state, 1)),
        }
    }
    Ok(Report {
        target_tenants_before: before,
        tenants: tenants.len() as u64,
        by_state,
        flows: flows.len() as u64,
        expired_flows_skipped: expired.len() as u64,
        secrets_verified,
    })
}

/// Reads the copied rows back from `to`: each must be identical to its
/// source, and every sealed value must open with the target's key.
/// `exact`: the target was empty, so it must now hold exactly the copy.
async fn verify(
    to: &Store,
    tenants: &[RawTenant],
    flows: &[RawFlow],
    exact: bool,
) -> Result<u64, CopyError> {
    let there: std::collections::HashMap<String, RawTenant> = tenants_of(to)
        .await?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    let mut opened = 0u64;
    for t in tenants {
        match there.get(&t.id) {
            Some(copy) if copy == t => {}
            Some(_) => {
                return Err(CopyError::Verify(format!(
                    "tenant {} reads back different from its source",
                    t.id
                )));
            }
            None => {
                return Err(CopyError::Verify(format!(
                    "tenant {} is missing on the target",
                    t.id
                )));
            }
        }
        let c = to.credentials(&t.id).await?;
        opened += [
            c.access_token.is_some(),
            c.refresh_token.is_some(),
            c.api_key.is_some(),
        ]
        .into_iter()
        .filter(|x| *x)
        .count() as u64;
    }
    let there: std::collections::HashMap<String, RawFlow> = flows_of(to)
        .await?
        .into_iter()
        .map(|f| (f.state_hash.clone(), f))
        .collect();
    for f in flows {
        if there.get(&f.state_hash) != Some(f) {
            return Err(CopyError::Verify(format!(
                "pending flow of tenant {} is missing or different on the target",
                f.tenant
            )));
        }
        to.sealer
            .open(&flow_scope(&f.state_hash), "verifier", &f.sealed)
            .map_err(|error| StoreError::Seal {
                tenant: f.tenant.clone(),
                field: "verifier",
                error,
            })?;
        opened += 1;
    }
    let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tenants")
        .fetch_one(&to.pool)
        .await
        .map_err(StoreError::from)?
        .try_get("n")
        .map_err(StoreError::from)?;
    let count = count.max(0) as usize;
    if count < tenants.len() || (exact && count != tenants.len()) {
        return Err(CopyError::Verify(format!(
            "the target holds {count} tenants after copying {}",
            tenants.len()
        )));
    }
    Ok(opened)
}
