//! **Limits** (`[proxy]`): `max_request_body` (413 before Datadog is
//! contacted), `max_response_body` (`stream.rs`), `timeout` per attempt
//! (headers and body; 504 when no answer came), `tenant_concurrency`
//! (requests in flight per tenant, streaming included; over it: 429 with
//! `Retry-After: 1` at once, no queueing), `tenant_requests_per_second`
//! (0 = unlimited; 429 with `Retry-After`). Datadog's own 429 is passed
//! through untouched with its `X-RateLimit-*` and `Retry-After` headers.
//! `proxy_requests` counts every answer by status class.
//!
//! This file holds the per-tenant slots and rate limiters ([`Limits`]);
//! the body limits are checked where the bodies are read (`proxy.rs`,
//! `stream.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ProxyError;
use crate::config::{ProxyConfig, quota};

/// Per-tenant concurrency slots and rate limiters, rebuilt when a reload
/// changes their settings (requests in flight keep their old slots).
#[derive(Default)]
pub(super) struct Limits {
    inner: Mutex<LimitsInner>,
}

#[derive(Default)]
struct LimitsInner {
    rate: f64,
    limiter: Option<Arc<DefaultKeyedRateLimiter<Arc<str>>>>,
    concurrency: usize,
    slots: HashMap<Arc<str>, Arc<Semaphore>>,
}

impl Limits {
    /// A concurrency slot for `tenant`, within its request rate; held until
    /// the response body is fully sent.
    pub(super) fn admit(
        &self,
        tenant: &str,
        config: &ProxyConfig,
    ) -> Result<OwnedSemaphorePermit, ProxyError> {
        let (slot, limiter) = {
            let mut l = self.inner.lock();
            if l.concurrency != config.tenant_concurrency {
                l.concurrency = config.tenant_concurrency;
                l.slots.clear();
            }
            if l.rate != config.tenant_requests_per_second {
                l.rate = config.tenant_requests_per_second;
                l.limiter = quota(l.rate).map(|q| Arc::new(RateLimiter::keyed(q)));
            }
            let concurrency = l.concurrency.max(1);
            let slot = match l.slots.get(tenant) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(Semaphore::new(concurrency));
                    l.slots.insert(Arc::from(tenant), s.clone());
                    s
                }
            };
            (slot, l.limiter.clone())
        };
        let permit = slot.try_acquire_owned().map_err(|_| ProxyError::Busy {
            tenant: tenant.to_string(),
            limit: config.tenant_concurrency,
        })?;
        if let Some(limiter) = limiter
            && let Err(not_until) = limiter.check_key(&Arc::from(tenant))
        {
            return Err(ProxyError::RateLimited {
                tenant: tenant.to_string(),
                rate: config.tenant_requests_per_second,
                retry_after: not_until.wait_time_from(limiter.clock().now()),
            });
        }
        Ok(permit)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrency_and_rate_are_per_tenant() {
        let limits = Limits::default();
        let mut config = ProxyConfig {
            allowed_prefixes: vec!["api/".to_string()],
            token: None,
            max_request_body: 1024,
            max_response_body: 1024,
            timeout: Duration::from_secs(1),
            tenant_concurrency: 1,
            tenant_requests_per_second: 0.0,
        };
        let held = limits.admit("a", &config).unwrap();
        assert!(matches!(
            limits.admit("a", &config),
            Err(ProxyError::Busy { limit: 1, .. })
        ));
        let other = limits.admit("b", &config).unwrap();
        drop((held, other));
        assert!(limits.admit("a", &config).is_ok());
        config.tenant_requests_per_second = 1.0;
        assert!(limits.admit("a", &config).is_ok());
        let Err(ProxyError::RateLimited { retry_after, .. }) = limits.admit("a", &config) else {
            panic!("expected a rate limit");
        };
        assert!(retry_after <= Duration::from_secs(1));
        assert!(limits.admit("b", &config).is_ok());
    }
}
