//! The memory budget of ingest's decoding: bytes of decompressed bodies,
//! their validated copies and the records made of them, across every
//! request decoded at once (`server.decode_memory`).
//!
//! A burst of large bodies (each up to `server.max_decompressed_body` once
//! decoded, on a blocking pool of hundreds of threads) would otherwise hold
//! several copies of each at once, without bound. A request first reserves
//! what it expects to need (`Held::reserve`), waiting a bounded time for
//! room while it holds nothing (so waiters never hold what others wait
//! for: no deadlock); one that waits too long is refused with 503 and
//! Retry-After. A request that needs more than it expected grows past its
//! reservation (`Held::grow`) one at a time: it takes the one overrun
//! token, so at most one request's overrun (bounded by its own limits)
//! adds to the budget. The bound is the budget plus one request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::codec::OverBudget;

/// The shared budget.
#[derive(Debug)]
pub struct Budget {
    state: Mutex<State>,
    freed: Condvar,
    max: u64,
}

#[derive(Debug, Default)]
struct State {
    used: u64,
    /// The most `used` has been.
    peak: u64,
    /// One request is growing past its reservation.
    overrun: bool,
}

/// What one request holds of the budget; given back when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    budget: Arc<Budget>,
    bytes: u64,
    /// This request holds the overrun token.
    overrun: bool,
}

impl Budget {
    pub(crate) fn new(max: u64) -> Arc<Budget> {
        Arc::new(Budget {
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
            max,
        })
    }

    /// A request's share, empty to start with.
    pub(crate) fn hold(self: &Arc<Self>) -> Held {
        Held {
            budget: self.clone(),
            bytes: 0,
            overrun: false,
        }
    }

    /// Bytes held by every request now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.state.lock().used
    }

    /// The most held at once since start (decoded bytes and their copies,
    /// as counted while the output grew).
    pub fn peak(&self) -> u64 {
        self.state.lock().peak
    }
}

impl Held {
    /// Reserves `n` bytes for a request holding nothing yet, waiting at
    /// most `wait` for others to give room back. Alone (nobody holds
    /// anything) it never waits, whatever `n`.
    pub(crate) fn reserve(&mut self, n: u64, wait: Duration) -> Result<(), OverBudget> {
        debug_assert_eq!(self.bytes, 0, "reserve comes first");
        let deadline = Instant::now() + wait;
        let b = &self.budget;
        let mut st = b.state.lock();
        while st.used + n > b.max && st.used > self.bytes {
            if b.freed.wait_until(&mut st, deadline).timed_out() {
                return Err(OverBudget(format!(
                    "the relay is decoding {} MiB of other requests (server.decode_memory is {} MiB); retry shortly",
                    st.used >> 20,
                    b.max >> 20
                )));
            }
        }
        st.used += n;
        st.peak = st.peak.max(st.used);
        self.bytes += n;
        Ok(())
    }

    /// Takes `n` bytes beyond the reservation: past the budget if need be,
    /// but one request at a time (the overrun token, held until this
    /// request is done).
    pub(crate) fn grow(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        let b = &self.budget;
        let mut st = b.state.lock();
        if !self.overrun {
            while st.overrun {
                b.freed.wait(&mut st);
            }
            st.overrun = true;
            self.overrun = true;
        }
        st.used += n;
        st.peak = st.peak.max(st.used);
        self.bytes += n;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.bytes > 0 || self.overrun {
            let mut st = self.budget.state.lock();
            st.used -= self.bytes;
            if self.overrun {
                st.overrun = false;
            }
            drop(st);
            self.budget.freed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_wait_for_room_and_give_it_back() {
        let b = Budget::new(100);
        let mut a = b.hold();
        a.reserve(80, Duration::ZERO).unwrap();
        let mut c = b.hold();
        assert!(c.reserve(30, Duration::from_millis(10)).is_err(), "no room");
        let mut d = b.hold();
        d.reserve(20, Duration::ZERO).unwrap();
        assert_eq!(b.used(), 100);
        drop(a);
        drop(c);
        assert_eq!(b.used(), 20);
        d.grow(500);
        assert_eq!(b.used(), 520, "an overrun may go past the budget");
        drop(d);
        assert_eq!(b.used(), 0);
        let mut alone = b.hold();
        alone.reserve(1000, Duration::ZERO).unwrap();
        assert_eq!(b.used(), 1000, "alone, a reservation never waits");
    }

    #[test]
    fn one_overrun_at_a_time() {
        let b = Budget::new(100);
        let mut a = b.hold();
        a.reserve(10, Duration::ZERO).unwrap();
        a.grow(50);
        let b2 = b.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = std::thread::spawn(move || {
            let mut c = b2.hold();
            c.reserve(10, Duration::ZERO).unwrap();
            c.grow(50);
            tx.send(b2.used()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "the second overrun waits for the first"
        );
        drop(a);
        assert_eq!(rx.recv().unwrap(), 60);
        other.join().unwrap();
    }
}
