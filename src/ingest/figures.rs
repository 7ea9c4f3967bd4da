//! Per-tenant ingest figures for operators (the admin API and the status
//! page): requests refused for a tenant that exists, and the items
//! accepted per minute, from which rates are drawn (`telemetry::rate::Window`). The
//! relay-wide accepted rate is kept beside them.
//!
//! Only tenants the directory knows are counted: a request naming an
//! unknown tenant leaves nothing here, so the map grows with the tenants,
//! never with what clients send. `/metrics` keeps no per-tenant label;
//! these figures are where per-tenant detail lives.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::telemetry::rate::{Rates, Window};

/// The ingest figures of every tenant, and the relay-wide accepted rate.
#[derive(Debug, Default)]
pub(crate) struct Figures {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tenants: HashMap<String, Tenant>,
    accepted: Window,
}

#[derive(Debug, Default)]
struct Tenant {
    rejected_requests: u64,
    accepted: Window,
}

/// One tenant's figures, as the admin API shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct TenantFigures {
    /// Ingest requests refused (any 4xx or 5xx) since the relay started.
    pub(crate) rejected_requests: u64,
    pub(crate) accepted_items_per_s: Rates,
}

impl Inner {
    /// Applies `f` to `tenant`'s figures (allocated on its first request).
    fn with(&mut self, tenant: &str, f: impl FnOnce(&mut Tenant)) {
        match self.tenants.get_mut(tenant) {
            Some(t) => f(t),
            None => f(self.tenants.entry(tenant.to_string()).or_default()),
        }
    }
}

impl Figures {
    /// A request for `tenant` (known to the directory) was refused.
    pub(crate) fn refused(&self, tenant: &str) {
        self.inner.lock().with(tenant, |t| t.rejected_requests += 1);
    }

    /// `items` were queued for `tenant`.
    pub(crate) fn accepted(&self, tenant: &str, items: u64) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.accepted.add(items, now);
        inner.with(tenant, |t| t.accepted.add(items, now));
    }

    /// `tenant`'s figures now (zeros for a tenant with no request yet).
    pub(crate) fn tenant(&self, tenant: &str) -> TenantFigures {
        let now = Instant::now();
        let inner = self.inner.lock();
        inner
            .tenants
            .get(tenant)
            .map(|t| TenantFigures {
                rejected_requests: t.rejected_requests,
                accepted_items_per_s: t.accepted.rates(now),
            })
            .unwrap_or_default()
    }

    /// Items accepted per second, all tenants.
    pub(crate) fn accepted_rates(&self) -> Rates {
        self.inner.lock().accepted.rates(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_per_tenant_and_in_total() {
        let f = Figures::default();
        f.accepted("acme", 60);
        f.accepted("globex", 120);
        f.refused("acme");
        f.refused("acme");
        let acme = f.tenant("acme");
        assert_eq!(acme.rejected_requests, 2);
        assert_eq!(acme.accepted_items_per_s.one, 1.0);
        assert_eq!(f.accepted_rates().one, 3.0);
        assert_eq!(f.tenant("nobody"), TenantFigures::default());
        tokio::time::advance(std::time::Duration::from_secs(600)).await;
        assert_eq!(f.tenant("acme").accepted_items_per_s.five, 0.0);
        assert_eq!(f.tenant("acme").rejected_requests, 2);
    }
}
