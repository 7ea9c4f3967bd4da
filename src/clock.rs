//! The wall clock, in the units the relay stores and Datadog uses: Unix
//! seconds (token expiry, grant checks, tenant rows, point timestamps) and
//! milliseconds (queue records, delivery figures). Everything that reads
//! the wall clock reads it here; timers and timeouts use tokio's clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
