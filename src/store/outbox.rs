//! The lifecycle webhook outbox (migration 0005): one row per tenant
//! lifecycle event, written in the transaction of the state change it
//! reports, claimed, settled and expired by delivery (`src/webhooks.rs`).
//!
//! - **Which changes are events** (`event_for`): becoming `connected`
//!   (or connecting to another org or site), becoming `reauth_required`
//!   (or a new `reason_code` while in it) and becoming `disconnected`.
//!   `pending` is not an event.
//! - **Written with the change**: every write that may change a tenant's
//!   state goes through `Store::begin_change` / `Store::finish_change`,
//!   which read the row before (locked: `FOR UPDATE` on PostgreSQL, `BEGIN
//!   IMMEDIATE` on SQLite) and after the change and insert the event in the
//!   same transaction. Either both commit or neither does. The JSON body is
//!   fixed then: every retry sends the same `id` and fields.
//! - **In order per tenant**: an event's `seq` is taken while its tenant's
//!   row is locked, so a tenant's events are numbered in the order their
//!   changes commit; only a tenant's lowest `seq` is ever claimed, and a row
//!   leaves the outbox only when delivered (or expired).
//! - **One sender**: a claim sets `claimed_by` and a lease end; on
//!   PostgreSQL it locks the rows it takes `FOR UPDATE SKIP LOCKED`, so two
//!   replicas never take the same row, and a row whose lease passed (its
//!   replica died) is taken again by any. SQLite serves one process.
//!
//! Events are recorded only while webhooks are configured
//! ([`Store::record_events`]): without a receiver nothing accumulates.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use sqlx::Row as _;

use super::{Backend, ReasonCode, Store, StoreError, Tenant, TenantState};

/// The `type` of a lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EventKind {
    Connected,
    ReauthRequired,
    Disconnected,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Connected => "tenant.connected",
            EventKind::ReauthRequired => "tenant.reauth_required",
            EventKind::Disconnected => "tenant.disconnected",
        }
    }
}

/// What a change is compared against: the row as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Before {
    state: TenantState,
    reason_code: Option<String>,
    domain: Option<String>,
    org_id: Option<String>,
}

/// The event a change from `before` (`None`: a new row) to `after` calls for.
pub(crate) fn event_for(before: Option<&Before>, after: &Tenant) -> Option<EventKind> {
    let was = |s: TenantState| before.is_some_and(|b| b.state == s);
    match after.state {
        TenantState::Connected => {
            let same_org =
                before.is_some_and(|b| b.domain == after.domain && b.org_id == after.org_id);
            (!was(TenantState::Connected) || !same_org).then_some(EventKind::Connected)
        }
        TenantState::ReauthRequired => {
            let code = after.reason_code.map(ReasonCode::as_str);
            let same_code = before.is_some_and(|b| b.reason_code.as_deref() == code);
            (!was(TenantState::ReauthRequired) || !same_code).then_some(EventKind::ReauthRequired)
        }
        TenantState::Disconnected => {
            (!was(TenantState::Disconnected)).then_some(EventKind::Disconnected)
        }
        TenantState::Pending => None,
    }
}

/// The JSON body of an event (README.md "Lifecycle webhooks: tell your UI
/// who must reconnect"): no
/// secret is in a tenant record, so none can be here.
#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    tenant: &'a str,
    site: Option<&'a str>,
    org_id: Option<&'a str>,
    reason: Option<&'a str>,
    reason_code: Option<&'static str>,
    at: String,
}

/// `at` as RFC 3339 (UTC, seconds).
fn rfc3339(unix_seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// The event's body for `after`, as of `now` (Unix seconds).
pub(crate) fn body(id: &str, kind: EventKind, after: &Tenant, now: i64) -> String {
    let (reason, reason_code) = match kind {
        EventKind::Connected => (None, None),
        _ => (
            after.reason.as_deref(),
            after.reason_code.map(ReasonCode::as_str),
        ),
    };
    let body = Body {
        id,
        kind: kind.as_str(),
        tenant: &after.id,
        site: after.domain.as_deref(),
        org_id: after.org_id.as_deref(),
        reason,
        reason_code,
        at: rfc3339(now),
    };
    // Serializing strings and options cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}

/// An event claimed for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The outbox's order (per tenant, the order of the changes).
    pub seq: i64,
    /// The event's `id` (in `body` too).
    pub(crate) id: String,
    pub tenant: String,
    /// The JSON body, exactly as sent.
    pub body: String,
    /// Failed attempts so far.
    pub(crate) attempts: u32,
    /// When the event was written (Unix ms).
    pub(crate) created_at_ms: i64,
}

/// Whether events are recorded, shared by a store's clones.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recording(Arc<AtomicBool>);

impl Recording {
    pub(crate) fn on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where a claim takes rows from: every tenant's oldest event that is due
/// and not claimed by a live lease. `{lock}`: PostgreSQL's row locking.
const CLAIM: &str = "UPDATE webhook_outbox SET claimed_by = $1, claimed_until = $2 \
     WHERE seq IN (SELECT o.seq FROM webhook_outbox o \
       WHERE o.next_attempt_at <= $3 \
         AND (o.claimed_until IS NULL OR o.claimed_until < $3) \
         AND o.seq = (SELECT MIN(h.seq) FROM webhook_outbox h WHERE h.tenant = o.tenant) \
       ORDER BY o.seq LIMIT $4 {lock}) \
     RETURNING seq, id, tenant, body, attempts, created_at";

impl Store {
    /// Records lifecycle events from now on (`true`) or not: on while
    /// `[webhooks]` is configured.
    pub fn record_events(&self, on: bool) {
        self.recording.0.store(on, Ordering::Relaxed);
    }

    /// Woken whenever an event is committed (delivery waits on it).
    pub(crate) fn events_written(&self) -> Arc<tokio::sync::Notify> {
        self.events_written.clone()
    }

    /// The tenant row before a change, read in the change's transaction.
    pub(super) async fn before_change(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        id: &str,
    ) -> Result<Option<Before>, StoreError> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT state, reason_code, domain, org_id FROM tenants WHERE id = $1"
            }
            Backend::Postgres => {
                "SELECT state, reason_code, domain, org_id FROM tenants WHERE id = $1 FOR UPDATE"
            }
        };
        let row = sqlx::query(sql).bind(id).fetch_optional(&mut **tx).await?;
        row.map(|r| {
            let state: String = r.try_get("state")?;
            Ok(Before {
                state: state.parse()?,
                reason_code: r.try_get("reason_code")?,
                domain: r.try_get("domain")?,
                org_id: r.try_get("org_id")?,
            })
        })
        .transpose()
    }

    /// Inserts the event a change calls for, if any, in its transaction;
    /// whether one was written.
    pub(super) async fn write_event(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        before: Option<&Before>,
        after: &Tenant,
        now: i64,
    ) -> Result<bool, StoreError> {
        let Some(kind) = event_for(before, after).filter(|_| self.recording.on()) else {
            return Ok(false);
        };
        let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
        let now_ms = now.saturating_mul(1000);
        sqlx::query(
            "INSERT INTO webhook_outbox (id, tenant, kind, body, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(&id)
        .bind(&after.id)
        .bind(kind.as_str())
        .bind(body(&id, kind, after, now))
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
        Ok(true)
    }

    /// Claims up to `limit` events for `owner` until `lease_until` (Unix
    /// ms): each tenant's oldest, if due at `now_ms` and not claimed by a
    /// lease still running. Oldest first.
    pub async fn claim_events(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        type Cache = std::sync::OnceLock<[&'static str; 2]>;
        static SQL: Cache = Cache::new();
        let [sqlite, postgres] = *SQL.get_or_init(|| {
            let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
            [
                leak(CLAIM.replace("{lock}", "")),
                leak(CLAIM.replace("{lock}", "FOR UPDATE SKIP LOCKED")),
            ]
        });
        let sql = match self.backend {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        };
        let rows = sqlx::query(sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now_ms)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        let mut events = rows
            .iter()
            .map(|r| {
                Ok(OutboxEvent {
                    seq: r.try_get("seq")?,
                    id: r.try_get("id")?,
                    tenant: r.try_get("tenant")?,
                    body: r.try_get("body")?,
                    attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                    created_at_ms: r.try_get("created_at")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        events.sort_by_key(|e| e.seq);
        Ok(events)
    }

    /// The partner acknowledged event `seq`: it leaves the outbox.
    pub async fn event_delivered(&self, seq: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM webhook_outbox WHERE seq = $1")
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// An attempt at event `seq` by `owner` failed: it is due again at
    /// `retry_at` (Unix ms), claimable by any replica.
    pub async fn event_failed(
        &self,
        seq: i64,
        owner: &str,
        retry_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = $3, \
               claimed_by = NULL, claimed_until = NULL, last_error = $4 \
             WHERE seq = $1 AND claimed_by = $2",
        )
        .bind(seq)
        .bind(owner)
        .bind(retry_at)
        .bind(crate::text::clip(error, 500))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Releases every claim `owner` holds (at start, a previous life's; at
    /// shutdown, the deliveries cut short); returns how many.
    pub async fn release_events(&self, owner: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE webhook_outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Deletes events written before `before` (Unix ms), delivered or not;
    /// returns how many.
    pub async fn expire_events(&self, before: i64) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM webhook_outbox WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Events in the outbox, and when the oldest was written (Unix ms).
    pub async fn outbox_depth(&self) -> Result<(i64, Option<i64>), StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM webhook_outbox")
                .fetch_one(&self.pool)
                .await?;
        Ok((row.try_get("n")?, row.try_get("oldest")?))
    }
}
