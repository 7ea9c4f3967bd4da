//! Which side set a saturation phase's rate: the relay, fakedog (standing
//! in for Datadog's intakes) or the load generator. Both of the latter run
//! in the bench's own process on the relay's two cores, so a phase can
//! measure them instead of the relay: a profiler attached to the bench
//! once slowed fakedog's answers until one tenant's spans took 100 s to
//! deliver, which the report gave as the relay's rate (BENCHMARKS.md
//! "Change 25: each saturation phase says what set its rate (2026-12-08)").
//!
//! Read at three marks (the load starts, the last request is acknowledged,
//! the last item is delivered):
//! - the load generator: this process's CPU less fakedog's threads'
//!   (named [`FAKEDOG_THREADS`]), over the load;
//! - the relay: its CPU over the drain, and over the load;
//! - fakedog: the time requests spent in its hands
//!   (`FakeDog::answering`), over the drain.

use std::time::Instant;

use serde_json::json;

use super::{proc_stat, stat_cpu_seconds};
use crate::dev::fakedog::FakeDog;

/// The name of fakedog's threads in the bench's process.
pub(crate) const FAKEDOG_THREADS: &str = "fakedog";

/// A drain this long (and [`SLOW_DRAIN_SHARE`] of the load's time) is the
/// phase's to explain.
const SLOW_DRAIN_SECS: f64 = 0.5;
const SLOW_DRAIN_SHARE: f64 = 0.25;
/// Below this many cores over a slow drain, or below half fakedog's, the
/// relay was waiting more than working.
const IDLE_RELAY_CORES: f64 = 0.25;
/// Fakedog held at least this many of the relay's requests on average
/// over the drain: the relay was waiting for fakedog's answers.
const HELD_REQUESTS: f64 = 0.5;

/// CPU seconds and fakedog's answering time at one instant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    pub(crate) at: Instant,
    /// This process: the load generator and fakedog.
    own_cpu: f64,
    dog_cpu: f64,
    dog_answering: f64,
    pub(crate) relay_cpu: f64,
}

impl Mark {
    pub(crate) fn now(dog: &FakeDog, relay_pid: u32) -> anyhow::Result<Mark> {
        Ok(Mark {
            at: Instant::now(),
            own_cpu: proc_stat(std::process::id())?.cpu_seconds,
            dog_cpu: threads_cpu(FAKEDOG_THREADS)?,
            dog_answering: dog.answering().as_secs_f64(),
            relay_cpu: proc_stat(relay_pid)?.cpu_seconds,
        })
    }
}

/// CPU seconds of this process's threads named `name`.
fn threads_cpu(name: &str) -> anyhow::Result<f64> {
    let mut seconds = 0.0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        // A thread that ended between the listing and the read is skipped.
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        if comm.trim_end() == name {
            seconds += stat_cpu_seconds(&stat)?;
        }
    }
    Ok(seconds)
}

/// What each side did over a saturation phase's load and drain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Shares {
    pub(crate) load_secs: f64,
    pub(crate) drain_secs: f64,
    pub(crate) relay_cores_in_load: f64,
    pub(crate) generator_cores_in_load: f64,
    pub(crate) relay_cores_in_drain: f64,
    /// Requests fakedog held on average over the drain.
    pub(crate) dog_held_in_drain: f64,
    /// Fakedog's own CPU over the drain (a diagnostic: 2 is both its
    /// threads busy).
    pub(crate) dog_cores_in_drain: f64,
}

/// Who set the phase's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bottleneck {
    Relay,
    Fakedog,
    LoadGenerator,
}

impl Bottleneck {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Bottleneck::Relay => "relay",
            Bottleneck::Fakedog => "fakedog",
            Bottleneck::LoadGenerator => "load generator",
        }
    }
}

impl Shares {
    /// From the marks at the load's start, at its last acknowledgement and
    /// at the last delivery.
    pub(crate) fn between(start: &Mark, accepted: &Mark, delivered: &Mark) -> Shares {
        let secs = |a: &Mark, b: &Mark| b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let (load, drain) = (secs(start, accepted), secs(accepted, delivered));
        let generator = (accepted.own_cpu - accepted.dog_cpu) - (start.own_cpu - start.dog_cpu);
        Shares {
            load_secs: load,
            drain_secs: drain,
            relay_cores_in_load: (accepted.relay_cpu - start.relay_cpu) / load,
            generator_cores_in_load: generator.max(0.0) / load,
            relay_cores_in_drain: (delivered.relay_cpu - accepted.relay_cpu) / drain,
            dog_held_in_drain: (delivered.dog_answering - accepted.dog_answering) / drain,
            dog_cores_in_drain: (delivered.dog_cpu - accepted.dog_cpu) / drain,
        }
    }

    /// The load generator, when it spent at least the relay's CPU over the
    /// load (the relay then waited for requests as much as it worked);
    /// fakedog, when the drain was slow while the relay waited (under a
    /// quarter of a core, or under half of fakedog's CPU) and fakedog held
    /// its requests; otherwise the relay. A slow drain with the relay idle
    /// and fakedog holding nothing stays the relay's: it waited on itself.
    pub(crate) fn bottleneck(&self) -> Bottleneck {
        if self.generator_cores_in_load >= self.relay_cores_in_load {
            return Bottleneck::LoadGenerator;
        }
        let slow_drain = self.drain_secs >= SLOW_DRAIN_SECS
            && self.drain_secs >= SLOW_DRAIN_SHARE * self.load_secs;
        let relay_waited =
            self.relay_cores_in_drain < IDLE_RELAY_CORES.max(self.dog_cores_in_drain / 2.0);
        if slow_drain && relay_waited && self.dog_held_in_drain >= HELD_REQUESTS {
            return Bottleneck::Fakedog;
        }
        Bottleneck::Relay
    }

    pub(crate) fn to_json(self) -> serde_json::Value {
        json!({
            "by": self.bottleneck().name(),
            "load_s": self.load_secs,
            "drain_s": self.drain_secs,
            "relay_cores_in_load": self.relay_cores_in_load,
            "load_generator_cores_in_load": self.generator_cores_in_load,
            "relay_cores_in_drain": self.relay_cores_in_drain,
            "fakedog_requests_held_in_drain": self.dog_held_in_drain,
            "fakedog_cores_in_drain": self.dog_cores_in_drain,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relay-bound phase: the relay busy over the load, the drain short.
    fn relay_bound() -> Shares {
        Shares {
            load_secs: 3.0,
            drain_secs: 0.4,
            relay_cores_in_load: 1.4,
            generator_cores_in_load: 0.3,
            relay_cores_in_drain: 1.1,
            dog_held_in_drain: 3.0,
            dog_cores_in_drain: 0.8,
        }
    }

    #[test]
    fn a_busy_relay_and_a_short_drain_are_the_relays() {
        assert_eq!(relay_bound().bottleneck(), Bottleneck::Relay);
        // A long drain the relay works through is its own too.
        let s = Shares {
            drain_secs: 4.0,
            ..relay_bound()
        };
        assert_eq!(s.bottleneck(), Bottleneck::Relay);
    }

    #[test]
    fn a_long_drain_the_relay_waits_through_for_fakedog_is_fakedogs() {
        // The profiled run: one tenant's spans drained for about 100 s, the
        // relay idle, its four delivery slots held by fakedog.
        let s = Shares {
            drain_secs: 97.0,
            relay_cores_in_drain: 0.02,
            dog_held_in_drain: 4.0,
            ..relay_bound()
        };
        assert_eq!(s.bottleneck(), Bottleneck::Fakedog);
        assert_eq!(s.to_json()["by"], "fakedog");
        // The same drain with nothing in fakedog's hands: the relay stalled.
        let stalled = Shares {
            dog_held_in_drain: 0.0,
            ..s
        };
        assert_eq!(stalled.bottleneck(), Bottleneck::Relay);
        // A short drain is not a phase's to explain.
        let short = Shares {
            drain_secs: 0.3,
            ..s
        };
        assert_eq!(short.bottleneck(), Bottleneck::Relay);
    }

    #[test]
    fn a_relay_far_less_busy_than_fakedog_over_the_drain_waited_for_it() {
        // A logs phase: the relay sends stored payloads at 0.29 cores while
        // fakedog parses them at 1.24.
        let logs = Shares {
            drain_secs: 2.8,
            relay_cores_in_drain: 0.29,
            dog_cores_in_drain: 1.24,
            dog_held_in_drain: 1.2,
            ..relay_bound()
        };
        assert_eq!(logs.bottleneck(), Bottleneck::Fakedog);
        // A series phase: the relay encodes at 0.76 cores, fakedog at 1.17.
        let series = Shares {
            drain_secs: 2.5,
            relay_cores_in_drain: 0.76,
            dog_cores_in_drain: 1.17,
            dog_held_in_drain: 1.8,
            ..relay_bound()
        };
        assert_eq!(series.bottleneck(), Bottleneck::Relay);
    }

    #[test]
    fn a_generator_busier_than_the_relay_is_the_generators() {
        let s = Shares {
            generator_cores_in_load: 1.4,
            ..relay_bound()
        };
        assert_eq!(s.bottleneck(), Bottleneck::LoadGenerator);
    }

    #[test]
    fn fakedogs_threads_are_found_by_name() {
        let (spun, rx) = std::sync::mpsc::channel();
        let busy = std::thread::Builder::new()
            .name(FAKEDOG_THREADS.into())
            .spawn(move || {
                // About 60 ms of this thread's own CPU, then alive (parked)
                // while it is measured.
                let mut x = 0u64;
                while super::super::cpu_now() < 0.06 {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                spun.send(()).expect("the test waits");
                std::thread::park();
                x
            })
            .expect("spawned");
        rx.recv().expect("the thread spun");
        // The kernel's tick accounting is statistical: well over half.
        let seen = threads_cpu(FAKEDOG_THREADS).expect("read /proc");
        busy.thread().unpark();
        busy.join().expect("joined");
        assert!(seen >= 0.03, "{seen}");
        assert_eq!(threads_cpu("no thread has this name").expect("read"), 0.0);
    }
}
