//! What to do with Datadog's answer, and how long to wait before trying
//! again. Pure code: no clock, no I/O.
//!
//! Classification (what each status means: docs/datadog.md "Status codes";
//! what Datadog's senders and other forwarders do with it: docs/peers.md
//! "Retries by status code"):
//! - 2xx: delivered.
//! - 400: never retried; the payload goes to the tenant's dead-letter area.
//! - 401/403: the key or the grant changed: the Forbidden fallback decides
//!   (validate the key, refresh, new key, or `reauth_required`). Unlike
//!   Vector we never retry it blindly; unlike the old Agent we never drop it.
//! - 413: unexpected (payloads are sized exactly), so split in halves and
//!   resend; a single item still refused is dead-lettered.
//! - 408, 429, 5xx, 404 and transport errors: retried with jittered
//!   exponential backoff, honouring `Retry-After` / `X-RateLimit-Reset`.
//!   404 is retried as the Agent does ("we want to retry 404s"): a proxy or
//!   region hiccup, not bad data.
//! - Any other 4xx: dead-lettered (the payload will never be accepted).

use std::time::Duration;

use crate::datadog::{Answer, SendError};

/// The decision for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Delivered,
    DeadLetter,
    Forbidden,
    Split,
    Retry { after: Option<Duration> },
}

impl Verdict {
    /// The decision on what an intake request gave: Datadog's answer by
    /// its status, and any transport failure (timeout, refused connection,
    /// a site outside `datadog.allowed_sites`) retried with backoff.
    pub(crate) fn of(sent: &Result<Answer, SendError>) -> Verdict {
        match sent {
            Ok(a) => classify(a.status, a.retry_after),
            Err(_) => Verdict::Retry { after: None },
        }
    }
}

/// Classifies an HTTP status (with the server's suggested wait).
pub(crate) fn classify(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        401 | 403 => Verdict::Forbidden,
        413 => Verdict::Split,
        404 | 408 | 425 | 429 | 500..=599 => Verdict::Retry { after: retry_after },
        _ => Verdict::DeadLetter,
    }
}

/// Jittered exponential backoff, as the Datadog Agent and Saluki do it
/// (docs/peers.md "Retries by status code"):
/// `initial * 2^failures`, capped at `max`, drawn uniformly from
/// `[d/2, d]`; a server-given wait is honoured (never less than it, capped
/// at `max` so a bogus header cannot stall a tenant for hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    /// The wait after `failures` consecutive failures (1 = the first),
    /// with `unit` in `[0, 1)` supplying the jitter.
    pub(crate) fn delay(&self, failures: u32, server: Option<Duration>, unit: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let base = self
            .initial
            .saturating_mul(1u32 << exp.min(20))
            .min(self.max);
        let unit = unit.clamp(0.0, 1.0);
        let jittered = base.mul_f64(0.5 + 0.5 * unit);
        match server {
            Some(s) => s.min(self.max).max(jittered.min(self.initial)),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(202, None), Verdict::Delivered);
        assert_eq!(classify(400, None), Verdict::DeadLetter);
        assert_eq!(classify(403, None), Verdict::Forbidden);
        assert_eq!(classify(401, None), Verdict::Forbidden);
        assert_eq!(classify(413, None), Verdict::Split);
        let after = Some(Duration::from_secs(7));
        assert_eq!(classify(429, after), Verdict::Retry { after });
        assert_eq!(classify(503, None), Verdict::Retry { after: None });
        assert_eq!(classify(408, None), Verdict::Retry { after: None });
        assert_eq!(classify(422, None), Verdict::DeadLetter);
        let answer = |status| Answer {
            status,
            retry_after: None,
            excerpt: String::new(),
        };
        assert_eq!(Verdict::of(&Ok(answer(202))), Verdict::Delivered);
        assert_eq!(Verdict::of(&Ok(answer(403))), Verdict::Forbidden);
        let retry = Verdict::Retry { after: None };
        assert_eq!(Verdict::of(&Err(SendError::Timeout)), retry);
        assert_eq!(Verdict::of(&Err(SendError::NotAllowed("x".into()))), retry);
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(64),
        };
        assert_eq!(b.delay(1, None, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(1, None, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(4, None, 1.0), Duration::from_secs(8));
        assert_eq!(b.delay(30, None, 1.0), Duration::from_secs(64));
        assert_eq!(b.delay(u32::MAX, None, 0.0), Duration::from_secs(32));
        // A server-given wait is honoured, but capped.
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(30)), 0.0),
            Duration::from_secs(30)
        );
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(3600)), 0.0),
            Duration::from_secs(64)
        );
    }
}
