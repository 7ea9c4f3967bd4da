//! Usage per tenant, kind and hour: what partners bill and support their
//! customers from. Counts items and bytes accepted at ingest, delivered to
//! Datadog, and lost on the way (dropped at ingest as Datadog drops them,
//! dead-lettered, aged out, discarded for an earlier connection).
//!
//! Owns the counting in memory ([`Usage`]): a cell per (tenant, kind,
//! hour), taken whole by `Usage::take` and added to the store's
//! `tenant_usage` rows by the app's flush task (every few seconds, and at
//! shutdown). Memory holds only what arrived since the last flush: at most
//! a cell per tenant and kind of the current and previous hour, so 10,000
//! tenants on every kind stay within a few MiB. The store keeps hourly rows
//! for a retention period, additive across replicas. Prometheus carries
//! none of it (no per-tenant labels there).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::site::Endpoint;
use crate::store::usage::UsageRow;
use crate::store::{Store, StoreError};

/// The counters of one tenant, kind and hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Items and decompressed bytes accepted at ingest (durably queued).
    pub accepted_items: u64,
    pub accepted_bytes: u64,
    /// Items Datadog accepted, and the compressed bytes that carried them.
    pub delivered_items: u64,
    pub delivered_bytes: u64,
    /// Points and items dropped at ingest as Datadog drops them (outside
    /// the window, logs too large to cut).
    pub dropped_items: u64,
    /// Refused by Datadog (`400`), kept in the dead-letter area.
    pub dead_lettered_items: u64,
    /// Past Datadog's acceptance window before they could be sent.
    pub aged_out_items: u64,
    /// Accepted for an earlier connection (a disconnect, another org).
    pub discarded_items: u64,
}

impl Counts {
    /// Adds `other` to these counts.
    pub(crate) fn add(&mut self, other: &Counts) {
        self.accepted_items += other.accepted_items;
        self.accepted_bytes += other.accepted_bytes;
        self.delivered_items += other.delivered_items;
        self.delivered_bytes += other.delivered_bytes;
        self.dropped_items += other.dropped_items;
        self.dead_lettered_items += other.dead_lettered_items;
        self.aged_out_items += other.aged_out_items;
        self.discarded_items += other.discarded_items;
    }
}

/// One cell: a tenant, a kind, an hour (Unix seconds at its start).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub tenant: String,
    pub kind: Endpoint,
    pub hour: i64,
}

/// The counts since the last `Usage::take`.
#[derive(Debug, Default)]
pub struct Usage {
    cells: Mutex<HashMap<Key, Counts>>,
}

/// The start of the hour `unix_s` falls in.
pub(crate) fn hour_of(unix_s: i64) -> i64 {
    unix_s - unix_s.rem_euclid(3600)
}

impl Usage {
    /// Counts for `tenant` and `kind` now: `f` updates the cell.
    pub(crate) fn count(&self, tenant: &str, kind: Endpoint, f: impl FnOnce(&mut Counts)) {
        self.count_at(tenant, kind, crate::clock::now(), f);
    }

    /// Counts at `unix_s` (tests).
    pub(crate) fn count_at(
        &self,
        tenant: &str,
        kind: Endpoint,
        unix_s: i64,
        f: impl FnOnce(&mut Counts),
    ) {
        let key = Key {
            tenant: tenant.to_string(),
            kind,
            hour: hour_of(unix_s),
        };
        f(self.cells.lock().entry(key).or_default());
    }

    /// Everything counted since the last take; memory is empty after.
    pub(crate) fn take(&self) -> Vec<(Key, Counts)> {
        std::mem::take(&mut *self.cells.lock())
            .into_iter()
            .collect()
    }

    /// Gives back cells a flush could not store (they are counted again).
    pub(crate) fn restore(&self, cells: Vec<(Key, Counts)>) {
        let mut mine = self.cells.lock();
        for (key, counts) in cells {
            mine.entry(key).or_default().add(&counts);
        }
    }
}

/// The admin API's usage answer: the hours in `from..to`, one entry per
/// hour and kind with counts, and totals per kind.
pub(crate) fn report_json(
    tenant: &str,
    from: i64,
    to: i64,
    rows: &[UsageRow],
) -> serde_json::Value {
    let mut totals: std::collections::BTreeMap<&str, Counts> = Default::default();
    let hours: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            totals.entry(r.kind.name()).or_default().add(&r.counts);
            let mut v = serde_json::to_value(r.counts).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("hour".into(), rfc3339(r.hour).into());
                o.insert("kind".into(), r.kind.name().into());
            }
            v
        })
        .collect();
    serde_json::json!({
        "tenant": tenant,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "retention_hours": RETENTION_HOURS,
        "hours": hours,
        "totals": totals,
    })
}

fn rfc3339(unix_s: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_s)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// How long hourly rows are kept: two billing months.
pub(crate) const RETENTION_HOURS: i64 = 62 * 24;

/// The counts in memory and their rows in the store.
#[derive(Clone)]
pub(crate) struct Ledger {
    pub(crate) usage: Arc<Usage>,
    store: Store,
}

impl Ledger {
    pub fn new(usage: Arc<Usage>, store: Store) -> Ledger {
        Ledger { usage, store }
    }

    /// Adds what was counted since the last flush to the store; on a store
    /// error the counts are kept for the next flush.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let cells = self.usage.take();
        if let Err(e) = self.store.add_usage(&cells).await {
            self.usage.restore(cells);
            return Err(e);
        }
        Ok(())
    }

    /// `tenant`'s hourly rows in `from..to` (Unix seconds), everything
    /// counted so far included.
    pub(crate) async fn report(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.flush().await?;
        self.store.usage(tenant, from, to).await
    }

    /// Deletes the rows past the retention period, as of `now` (Unix s).
    pub(crate) async fn prune(&self, now: i64) -> Result<u64, StoreError> {
        self.store
            .prune_usage(hour_of(now) - RETENTION_HOURS * 3600)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_go_to_their_hour_and_are_taken_once() {
        let u = Usage::default();
        let t0 = 1_700_000_000 - 1_700_000_000 % 3600;
        u.count_at("a", Endpoint::Logs, t0 + 10, |c| c.accepted_items += 2);
        u.count_at("a", Endpoint::Logs, t0 + 3599, |c| c.accepted_items += 1);
        u.count_at("a", Endpoint::Logs, t0 + 3600, |c| c.delivered_items += 3);
        u.count_at("b", Endpoint::Logs, t0, |c| c.dropped_items += 1);
        let mut cells = u.take();
        cells.sort_by_key(|(k, _)| (k.tenant.clone(), k.hour));
        assert_eq!(cells.len(), 3);
        assert_eq!((cells[0].0.hour, cells[0].1.accepted_items), (t0, 3));
        assert_eq!(
            (cells[1].0.hour, cells[1].1.delivered_items),
            (t0 + 3600, 3)
        );
        assert_eq!(cells[2].1.dropped_items, 1);
        assert!(u.take().is_empty());
        u.restore(cells);
        u.count_at("b", Endpoint::Logs, t0, |c| c.dropped_items += 1);
        let b = u.take().into_iter().find(|(k, _)| k.tenant == "b").unwrap();
        assert_eq!(b.1.dropped_items, 2);
        assert_eq!(hour_of(-1), -3600);
    }
}
