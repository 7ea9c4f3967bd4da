//! Outbound rate limits: per tenant and global, in requests per second and
//! bytes per second (`[limits]`), plus Datadog's own event limit of 250,000
//! events per minute per organization (docs/datadog.md "Rate limits").
//!
//! Built from the configuration and rebuilt when a reload changes `[limits]`.
//! A limit of 0 is no limit. Waiting happens *before* a request is sent and
//! never holds a tenant's data anywhere but in that tenant's own task, so a
//! rate-limited tenant cannot slow the others.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{LimitsConfig, quota};

/// Datadog: "The rate limit for event submission is 250,000 events per
/// minute per organization."
pub(crate) const EVENTS_PER_MINUTE: u32 = 250_000;

/// The limiters for one configuration.
pub(crate) struct Limiters {
    config: LimitsConfig,
    tenant_requests: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    tenant_bytes: Option<(DefaultKeyedRateLimiter<Arc<str>>, u32)>,
    global_requests: Option<DefaultDirectRateLimiter>,
    global_bytes: Option<(DefaultDirectRateLimiter, u32)>,
    events: DefaultKeyedRateLimiter<Arc<str>>,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Bytes are counted in KiB cells so a 5 MB payload fits in a u32 burst.
const CELL: u64 = 1024;

fn bytes_quota(bytes_per_second: u64) -> Option<(Quota, u32)> {
    if bytes_per_second == 0 {
        return None;
    }
    let cells = (bytes_per_second / CELL).clamp(1, u32::MAX as u64) as u32;
    // The burst must hold the largest request (5 MB of logs), or it could
    // never be sent: at least 8 MiB worth of cells.
    let burst = cells.max(8 * 1024);
    let quota = Quota::per_second(NonZeroU32::new(cells)?).allow_burst(NonZeroU32::new(burst)?);
    Some((quota, burst))
}

impl Limiters {
    pub(crate) fn new(config: &LimitsConfig) -> Limiters {
        let events =
            Quota::per_minute(NonZeroU32::new(EVENTS_PER_MINUTE).unwrap_or(NonZeroU32::MIN));
        Limiters {
            config: config.clone(),
            tenant_requests: quota(config.tenant_requests_per_second).map(RateLimiter::keyed),
            tenant_bytes: bytes_quota(config.tenant_bytes_per_second)
                .map(|(q, b)| (RateLimiter::keyed(q), b)),
            global_requests: quota(config.global_requests_per_second).map(RateLimiter::direct),
            global_bytes: bytes_quota(config.global_bytes_per_second)
                .map(|(q, b)| (RateLimiter::direct(q), b)),
            events: RateLimiter::keyed(events),
        }
    }

    pub(crate) fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Waits until `tenant` may send one request of `bytes` bytes carrying
    /// `events` events (0 for other kinds).
    pub(crate) async fn wait(&self, tenant: &Arc<str>, bytes: usize, events: u32) {
        if let Some(l) = &self.tenant_requests {
            l.until_key_ready(tenant).await;
        }
        let cells =
            NonZeroU32::new(((bytes as u64).div_ceil(CELL)).clamp(1, u32::MAX as u64) as u32)
                .unwrap_or(NonZeroU32::MIN);
        if let Some((l, burst)) = &self.tenant_bytes {
            let n = NonZeroU32::new(cells.get().min(*burst)).unwrap_or(NonZeroU32::MIN);
            let _ = l.until_key_n_ready(tenant, n).await;
        }
        if let Some(n) = NonZeroU32::new(events) {
            let _ = self.events.until_key_n_ready(tenant, n).await;
        }
        if let Some(l) = &self.global_requests {
            l.until_ready().await;
        }
        if let Some((l, burst)) = &self.global_bytes {
            let n = NonZeroU32::new(cells.get().min(*burst)).unwrap_or(NonZeroU32::MIN);
            let _ = l.until_n_ready(n).await;
        }
    }

    /// Forgets idle tenants' limiter state (called periodically).
    pub(crate) fn shrink(&self) {
        if let Some(l) = &self.tenant_requests {
            l.retain_recent();
        }
        if let Some((l, _)) = &self.tenant_bytes {
            l.retain_recent();
        }
        self.events.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // governor keeps its own clock, so this test runs in real time with a
    // lower-bound assertion only (never flaky on a slow machine).
    #[tokio::test]
    async fn tenant_request_rate_is_enforced_per_tenant() {
        let l = Limiters::new(&LimitsConfig {
            tenant_requests_per_second: 10.0,
            tenant_bytes_per_second: 0,
            global_requests_per_second: 0.0,
            global_bytes_per_second: 0,
        });
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let start = std::time::Instant::now();
        for _ in 0..13 {
            l.wait(&a, 100, 0).await;
        }
        // 10/s with a burst of 10: the 13th request waits ~300 ms.
        assert!(
            start.elapsed() >= std::time::Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
        // Another tenant still has its whole burst: b is not slowed by a.
        let before = l.tenant_requests.as_ref().unwrap().check_key(&b);
        assert!(before.is_ok());
        l.wait(&b, 100, 0).await;
    }
}
