//! Items per second over the last minutes, for the status page and the
//! admin API (Prometheus computes its own rates from the counters). A
//! [`Window`] is a ring of per-minute counts: [`MINUTES`] + 1 numbers
//! whatever the traffic, so one per tenant stays small with 10,000 tenants.
//!
//! Time is a parameter (`now`, tokio's clock): callers pass
//! `Instant::now()`, tests a paused clock.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The longest span a rate covers, in minutes.
pub(crate) const MINUTES: usize = 5;

const MINUTE: Duration = Duration::from_secs(60);

/// Counts per minute over the last [`MINUTES`] minutes and the current one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    /// When the current minute began; `None` until the first count.
    current: Option<Instant>,
    /// `counts[0]` is the current minute, `counts[i]` the one `i` minutes before.
    counts: [u64; MINUTES + 1],
}

/// Items per second over the last minute and the last five.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    #[serde(rename = "1m")]
    pub(crate) one: f64,
    #[serde(rename = "5m")]
    pub(crate) five: f64,
}

impl Window {
    /// Counts `n` items at `now`.
    pub(crate) fn add(&mut self, n: u64, now: Instant) {
        self.advance(now);
        self.counts[0] = self.counts[0].saturating_add(n);
    }

    /// Moves the ring to the minute `now` is in.
    fn advance(&mut self, now: Instant) {
        let current = *self.current.get_or_insert(now);
        let passed = now.saturating_duration_since(current).as_secs() / MINUTE.as_secs();
        if passed == 0 {
            return;
        }
        let shift = (passed as usize).min(self.counts.len());
        self.counts.rotate_right(shift);
        self.counts[..shift].fill(0);
        self.current = Some(current + MINUTE * passed as u32);
    }

    /// Items per second over the last `minutes` (1 to [`MINUTES`]) before
    /// `now`: the minutes wholly inside that span, plus the share of the
    /// oldest minute that still is (a sliding window over minute counts).
    pub(crate) fn per_second(&self, minutes: usize, now: Instant) -> f64 {
        let mut w = self.clone();
        w.advance(now);
        let Some(current) = w.current else { return 0.0 };
        let m = minutes.clamp(1, MINUTES);
        let into = now.saturating_duration_since(current).as_secs_f64() / MINUTE.as_secs_f64();
        let inside: u64 = w.counts[..m].iter().sum();
        let share = w.counts[m] as f64 * (1.0 - into);
        (inside as f64 + share) / (m as f64 * MINUTE.as_secs_f64())
    }

    /// The rates over the last minute and the last five.
    pub(crate) fn rates(&self, now: Instant) -> Rates {
        Rates {
            one: self.per_second(1, now),
            five: self.per_second(MINUTES, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test(start_paused = true)]
    async fn rates_slide_over_the_minutes() {
        let mut w = Window::default();
        assert_eq!(w.rates(Instant::now()), Rates::default());
        w.add(120, Instant::now());
        advance(secs(30)).await;
        assert_eq!(
            w.rates(Instant::now()),
            Rates {
                one: 2.0,
                five: 0.4
            }
        );
        // A minute and a half in: half of the first minute is still within
        // the last minute.
        advance(secs(60)).await;
        assert_eq!(
            w.rates(Instant::now()),
            Rates {
                one: 1.0,
                five: 0.4
            }
        );
        // Five and a half minutes in: half of it is within the last five.
        advance(secs(240)).await;
        assert_eq!(
            w.rates(Instant::now()),
            Rates {
                one: 0.0,
                five: 0.2
            }
        );
        advance(secs(60)).await;
        assert_eq!(w.rates(Instant::now()), Rates::default());
    }

    #[tokio::test(start_paused = true)]
    async fn counts_land_in_their_minute_after_a_long_pause() {
        let mut w = Window::default();
        w.add(60, Instant::now());
        advance(secs(3600)).await;
        w.add(30, Instant::now());
        advance(secs(90)).await;
        w.add(60, Instant::now());
        // 60 this minute (30 s in), 30 a minute before: half of it counts.
        let r = w.rates(Instant::now());
        assert_eq!(r.one, (60.0 + 15.0) / 60.0);
        assert_eq!(r.five, 90.0 / 300.0);
        // Asking does not change the window.
        assert_eq!(w.rates(Instant::now()), r);
    }
}
