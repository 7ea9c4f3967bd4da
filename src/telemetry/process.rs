//! The process metrics every Prometheus exporter has: resident and virtual
//! memory, CPU time, open and allowed file descriptors, start time. Read
//! from `/proc/self` at each scrape (a collector, nothing is sampled in
//! between); on other systems they are left out, never reported as zero.
//!
//! They keep Prometheus' standard names (`process_resident_memory_bytes`,
//! ...), without the relay's `ddrelay_` prefix: Prometheus' convention
//! names them the same in every exporter, so the dashboards and alerts
//! written for any process (client_golang's process collector, node and
//! JVM exporters) find them, and the scrape's `job` and `instance` labels
//! tell processes apart.
//!
//! The parsers are plain functions over the files' text, tested on samples.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The `process_*` collector (registered unprefixed, see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Process;

/// One reading of the process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    pub(crate) resident_bytes: u64,
    pub(crate) virtual_bytes: u64,
    pub(crate) cpu_seconds: f64,
    pub(crate) open_fds: u64,
    pub(crate) max_fds: Option<u64>,
    pub(crate) start_time_seconds: f64,
}

/// What `/proc/self/stat` says (its fields 14, 15, 22, 23 and 24, counted
/// from 1: utime, stime, starttime, vsize, rss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// User and system CPU time, in clock ticks.
    pub(crate) cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    pub(crate) start_ticks: u64,
    pub(crate) virtual_bytes: u64,
    pub(crate) resident_pages: u64,
}

/// Parses `/proc/self/stat`. The command name (field 2) is in parentheses
/// and may hold spaces and parentheses itself, so fields are counted from
/// the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    // `after` starts at field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The boot time (`btime`, Unix seconds) from `/proc/stat`.
pub(crate) fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

impl Reading {
    /// A reading from the two files' text and the system's constants.
    pub(crate) fn from_parts(
        stat: Stat,
        boot_time: u64,
        ticks_per_second: u64,
        page_size: u64,
        open_fds: u64,
        max_fds: Option<u64>,
    ) -> Reading {
        let ticks = ticks_per_second.max(1) as f64;
        Reading {
            resident_bytes: stat.resident_pages.saturating_mul(page_size),
            virtual_bytes: stat.virtual_bytes,
            cpu_seconds: stat.cpu_ticks as f64 / ticks,
            open_fds,
            max_fds,
            start_time_seconds: boot_time as f64 + stat.start_ticks as f64 / ticks,
        }
    }
}

/// Reads the running process, or `None` where there is no `/proc`.
#[cfg(target_os = "linux")]
pub(crate) fn read() -> Option<Reading> {
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let boot = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    Some(Reading::from_parts(
        stat,
        boot,
        rustix::param::clock_ticks_per_second(),
        rustix::param::page_size() as u64,
        open_fds,
        max_fds,
    ))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn read() -> Option<Reading> {
    None
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: ConstGauge<f64>,
) -> std::fmt::Result {
    value.encode(encoder.encode_descriptor(name, help, None, value.metric_type())?)
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(r) = read() else { return Ok(()) };
        let e = &mut encoder;
        let memory = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                r.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                r.virtual_bytes,
            ),
        ];
        for (name, help, bytes) in memory {
            gauge(e, name, help, ConstGauge::new(bytes as f64))?;
        }
        let cpu = ConstCounter::new(r.cpu_seconds);
        cpu.encode(e.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        gauge(
            e,
            "process_open_fds",
            "Number of open file descriptors",
            ConstGauge::new(r.open_fds as f64),
        )?;
        if let Some(max) = r.max_fds {
            gauge(
                e,
                "process_max_fds",
                "Maximum number of open file descriptors",
                ConstGauge::new(max as f64),
            )?;
        }
        gauge(
            e,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            ConstGauge::new(r.start_time_seconds),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command name with spaces and parentheses, as the kernel allows.
    const STAT: &str = "4242 (dd relay) (x)) S 1 4242 4242 0 -1 4194560 2580 0 0 0 \
        150 75 0 0 20 0 9 0 123456 987654321 3000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        assert_eq!(
            parse_stat(STAT),
            Some(Stat {
                cpu_ticks: 225,
                start_ticks: 123_456,
                virtual_bytes: 987_654_321,
                resident_pages: 3000,
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn boot_time_and_units() {
        let proc_stat = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(parse_boot_time(proc_stat), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
        let stat = parse_stat(STAT).unwrap();
        let r = Reading::from_parts(stat, 1_700_000_000, 100, 4096, 12, Some(1024));
        assert_eq!(r.resident_bytes, 3000 * 4096);
        assert_eq!(r.cpu_seconds, 2.25);
        assert_eq!(r.start_time_seconds, 1_700_000_000.0 + 1234.56);
        assert_eq!((r.open_fds, r.max_fds), (12, Some(1024)));
    }
}
