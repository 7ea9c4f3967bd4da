//! Threads for delivery's CPU work (queue reads with CRC checks, packing and
//! compression), at a lower scheduling priority than ingest.
//!
//! Why: a partner's application waits for the ingest acknowledgement, while
//! delivery is asynchronous by design (the queue is durable). On a small
//! sidecar (two cores here) a 5 MB compression job on every core would make
//! each ingest request wait for a time slice; with these threads niced, the
//! kernel runs an ingest request as soon as it is runnable and delivery uses
//! what is left. Delivery is not starved: a niced thread still gets its
//! weighted share of a busy CPU, and under sustained overload the queue's
//! quotas push back on ingest (429/503) rather than letting the backlog grow
//! without bound.
//!
//! Jobs are closures; the answer comes back through a oneshot channel. A job
//! that panics is reported as [`Closed`] and the thread lives on.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc;

use parking_lot::Mutex;

/// The nice value of delivery threads (0 is normal; 19 is the lowest).
/// At 19 a normal-priority thread has about 68 times their CPU weight, so an
/// ingest request that wakes up preempts them at once; nice 10 (9 times)
/// left ingest waiting for their slice often enough to show in the p99
/// acknowledgement (4.8–6.5 ms against 4.0–4.5 ms at 150,000 points/s:
/// BENCHMARKS.md "Change 4: LZ4 at rest, delivery at nice 19, unlinks
/// outside the lock"). Delivery still gets every idle cycle.
pub(crate) const DELIVERY_NICE: i32 = 19;

type Job = Box<dyn FnOnce() + Send>;

/// The pool is shut down or the job panicked.
#[derive(Debug, thiserror::Error)]
#[error("delivery worker unavailable (shutting down, or the job panicked)")]
pub(crate) struct Closed;

/// A fixed set of low-priority threads.
pub(crate) struct Background {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    /// Jobs run on the caller (see [`Background::inline`]).
    inline: bool,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background").finish_non_exhaustive()
    }
}

impl Background {
    /// Starts `threads` threads named `name`, each lowered to `nice` (where
    /// the platform allows it; failing to lower is logged, not fatal).
    pub(crate) fn start(name: &str, threads: usize, nice: i32) -> std::io::Result<Background> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    lower_priority(nice);
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = rx.lock().recv();
                        match job {
                            Ok(job) => {
                                // The job's sender sees the panic as a closed
                                // channel; this thread keeps serving.
                                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                            }
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Background {
            tx: Mutex::new(Some(tx)),
            inline: false,
        })
    }

    /// No threads: every job runs on the caller at once. For tests on
    /// paused tokio time, where work on threads the runtime cannot see
    /// would let the clock jump while it runs.
    #[cfg(test)]
    pub(crate) fn inline() -> Background {
        Background {
            tx: Mutex::new(None),
            inline: true,
        }
    }

    /// Runs `f` on one of the threads and waits for its result.
    pub(crate) async fn run<F, R>(&self, f: F) -> Result<R, Closed>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        if self.inline {
            return Ok(f());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        match self.tx.lock().as_ref() {
            Some(sender) => sender.send(job).map_err(|_| Closed)?,
            None => return Err(Closed),
        }
        rx.await.map_err(|_| Closed)
    }

    /// Stops accepting jobs; threads exit once the queued ones are done.
    pub(crate) fn close(&self) {
        self.tx.lock().take();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.close();
    }
}

/// Lowers the calling thread's scheduling priority to `nice` (Linux; a
/// no-op elsewhere). Failing to lower is logged at debug level: it changes
/// latency under contention, never correctness.
#[cfg(target_os = "linux")]
pub(crate) fn lower_priority(nice: i32) {
    // On Linux, setpriority with a thread id applies to that thread alone.
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
        tracing::debug!(error = %e, "could not lower a delivery thread's priority");
    }
}

/// Lowers the calling thread's scheduling priority (not on this platform).
#[cfg(not(target_os = "linux"))]
pub(crate) fn lower_priority(_nice: i32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_survives_a_panicking_one() {
        let pool = Background::start("test-bg", 2, DELIVERY_NICE).unwrap();
        assert_eq!(pool.run(|| 6 * 7).await.unwrap(), 42);
        let failed = pool.run(|| -> u32 { panic!("job failed") }).await;
        assert!(failed.is_err());
        // Both threads are still there: two jobs that wait for each other
        // can only finish if they run at the same time.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (a, b) = (barrier.clone(), barrier.clone());
        let both = async {
            tokio::join!(
                pool.run(move || a.wait().is_leader()),
                pool.run(move || b.wait().is_leader())
            )
        };
        let (x, y) = tokio::time::timeout(std::time::Duration::from_secs(10), both)
            .await
            .expect("a thread died with the panicking job");
        assert!(x.unwrap() ^ y.unwrap(), "exactly one leader");
        pool.close();
        assert!(pool.run(|| 1).await.is_err(), "closed pool refuses jobs");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn threads_run_at_the_lowered_priority() {
        let pool = Background::start("test-nice", 1, 7).unwrap();
        let nice = pool
            .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
            .await
            .unwrap()
            .unwrap();
        // The test process may itself run niced; the thread is at least 7.
        assert!(nice >= 7, "thread nice {nice}");
    }
}
