//! The store's side of usage per tenant (`crate::usage`): hourly rows in
//! `tenant_usage` (migration 0006) that every replica adds its counts to,
//! read back for `GET /v1/tenants/{t}/usage`, and pruned after the
//! retention period.

use sqlx::Row as _;

use super::{Store, StoreError};
use crate::site::Endpoint;
use crate::usage::{Counts, Key};

/// The counters' columns, in [`Counts`]' order.
const COLUMNS: [&str; 8] = [
    "accepted_items",
    "accepted_bytes",
    "delivered_items",
    "delivered_bytes",
    "dropped_items",
    "dead_lettered_items",
    "aged_out_items",
    "discarded_items",
];

/// Adds one cell to its row (SQLite 3.24+ and PostgreSQL both upsert so).
const ADD: &str = "INSERT INTO tenant_usage (tenant, kind, hour, accepted_items, accepted_bytes, \
    delivered_items, delivered_bytes, dropped_items, dead_lettered_items, aged_out_items, \
    discarded_items) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
    ON CONFLICT (tenant, kind, hour) DO UPDATE SET \
    accepted_items = tenant_usage.accepted_items + excluded.accepted_items, \
    accepted_bytes = tenant_usage.accepted_bytes + excluded.accepted_bytes, \
    delivered_items = tenant_usage.delivered_items + excluded.delivered_items, \
    delivered_bytes = tenant_usage.delivered_bytes + excluded.delivered_bytes, \
    dropped_items = tenant_usage.dropped_items + excluded.dropped_items, \
    dead_lettered_items = tenant_usage.dead_lettered_items + excluded.dead_lettered_items, \
    aged_out_items = tenant_usage.aged_out_items + excluded.aged_out_items, \
    discarded_items = tenant_usage.discarded_items + excluded.discarded_items";

const READ: &str = "SELECT kind, hour, accepted_items, accepted_bytes, delivered_items, \
    delivered_bytes, dropped_items, dead_lettered_items, aged_out_items, discarded_items \
    FROM tenant_usage WHERE tenant = $1 AND hour >= $2 AND hour < $3 ORDER BY hour, kind";

fn values(c: &Counts) -> [u64; 8] {
    [
        c.accepted_items,
        c.accepted_bytes,
        c.delivered_items,
        c.delivered_bytes,
        c.dropped_items,
        c.dead_lettered_items,
        c.aged_out_items,
        c.discarded_items,
    ]
}

fn counts(v: [u64; 8]) -> Counts {
    Counts {
        accepted_items: v[0],
        accepted_bytes: v[1],
        delivered_items: v[2],
        delivered_bytes: v[3],
        dropped_items: v[4],
        dead_lettered_items: v[5],
        aged_out_items: v[6],
        discarded_items: v[7],
    }
}

/// One hour of one kind for a tenant, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub(crate) kind: Endpoint,
    /// Unix seconds at the hour's start.
    pub hour: i64,
    pub counts: Counts,
}

impl Store {
    /// Adds `cells` to their rows, in one transaction: all or none.
    pub async fn add_usage(&self, cells: &[(Key, Counts)]) -> Result<(), StoreError> {
        if cells.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (key, c) in cells {
            let mut q = sqlx::query(ADD)
                .bind(&key.tenant)
                .bind(key.kind.name())
                .bind(key.hour);
            for v in values(c) {
                q = q.bind(i64::try_from(v).unwrap_or(i64::MAX));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// `tenant`'s rows for hours in `from..to` (Unix seconds), oldest first.
    pub async fn usage(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let rows = sqlx::query(READ)
            .bind(tenant)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let kind: String = r.try_get("kind")?;
            // A kind this build does not know (a newer replica's): skipped.
            let Some(kind) = Endpoint::from_name(&kind) else {
                continue;
            };
            let mut v = [0u64; 8];
            for (slot, col) in v.iter_mut().zip(COLUMNS) {
                *slot = u64::try_from(r.try_get::<i64, _>(col)?).unwrap_or(0);
            }
            out.push(UsageRow {
                kind,
                hour: r.try_get("hour")?,
                counts: counts(v),
            });
        }
        Ok(out)
    }

    /// Deletes every row of an hour before `before` (Unix seconds); how many.
    pub async fn prune_usage(&self, before: i64) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM tenant_usage WHERE hour < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}
