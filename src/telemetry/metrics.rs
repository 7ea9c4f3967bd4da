//! Every Prometheus metric ddrelay exports, named in this one file.
//!
//! Cardinality: labels are bounded sets (data kind, site, status class,
//! reason, state, event). There is deliberately **no per-tenant label**:
//! with 10,000 tenants a per-tenant series per metric would make `/metrics`
//! tens of megabytes and overload the partner's Prometheus. Per-tenant
//! detail (queue depth, held and dead-lettered items, last error) is on the
//! admin API (`GET /v1/tenants`) and the status page instead.
//!
//! Each `App` owns its own [`Metrics`] (no global registry), so tests can run
//! several relays in one process and read each one's numbers.
//!
//! Series start at zero: every family whose labels are a known bounded set
//! (each data kind of [`Endpoint::EVERY`] by retry reason, by outcome; the
//! dead-lettered, aged-out and discarded items; unserved requests by
//! listener and status; reloads; proxy answers) is created when the
//! metrics are, so an alert on `increase()` has data before the first
//! event. Families labelled by site (ingest requests, sends, deliveries)
//! are created by their first event: their sites are the tenants', and
//! nine sites times every kind and status class would be hundreds of
//! series that stay zero.
//!
//! The process itself (`process_*`, `telemetry/process.rs`) is read at each scrape,
//! under Prometheus' standard unprefixed names.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::process::Process;
use crate::site::Endpoint;

/// Why a delivery is retried (the `reason` of `retries`): a retryable
/// answer or transport error, a 403 handed to credential recovery, a 413
/// that splits the payload in halves.
pub(crate) mod retry_reason {
    pub(crate) const RETRYABLE: &str = "retryable";
    pub(crate) const FORBIDDEN: &str = "forbidden";
    pub(crate) const SPLIT: &str = "split";
    pub(crate) const ALL: [&str; 3] = [RETRYABLE, FORBIDDEN, SPLIT];
}

/// The `outcome` of ingested items and bytes.
pub(crate) const INGEST_OUTCOMES: [&str; 2] = ["accepted", "rejected"];

/// The `outcome` of a lifecycle webhook delivery attempt: `ok` (the
/// partner answered 2xx), `refused` (another status), `error` (no answer:
/// connection, timeout), `expired` (given up after the outbox's retention,
/// see src/webhooks.rs).
pub(crate) const WEBHOOK_OUTCOMES: [&str; 4] = ["ok", "refused", "error", "expired"];

/// The listeners whose unserved requests are counted: `api_listen` and
/// `public_listen`.
pub(crate) const LISTENERS: [&str; 2] = ["api", "public"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabels {
    pub(crate) kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindReason {
    pub(crate) kind: &'static str,
    pub(crate) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindOutcome {
    pub(crate) kind: &'static str,
    pub(crate) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SendLabels {
    pub(crate) kind: &'static str,
    pub(crate) site: &'static str,
    pub(crate) status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindSite {
    pub(crate) kind: &'static str,
    pub(crate) site: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabels {
    pub(crate) state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OAuthLabels {
    pub(crate) event: &'static str,
    pub(crate) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub(crate) result: &'static str,
}

/// A request to a path or method the listener does not serve. The path is
/// deliberately not a label: scanners would make it unbounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UnservedLabels {
    pub(crate) listener: &'static str,
    /// `404` (no such path) or `405` (not this method).
    pub(crate) status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusClass {
    pub(crate) status_class: &'static str,
}

/// The relay's metrics.
pub struct Metrics {
    registry: Registry,
    /// Ingest requests by kind, the named tenant's site (`none` when the
    /// request names no tenant the relay knows) and HTTP status class.
    pub(crate) ingest_requests: Family<SendLabels, Counter>,
    /// Items received, by kind and outcome (`accepted`, `rejected`).
    pub(crate) ingest_items: Family<KindOutcome, Counter>,
    /// Decompressed body bytes received, by kind and outcome.
    pub(crate) ingest_bytes: Family<KindOutcome, Counter>,
    /// Rejected requests by kind and reason.
    pub(crate) ingest_rejections: Family<KindReason, Counter>,
    /// Accepted but not kept, as Datadog would not keep it, by kind and
    /// reason (`stale`: points of series kinds, items of others, outside
    /// the window; `truncated`: logs cut to 1 MB; `oversized`: logs over
    /// 1 MB with no message to cut).
    pub(crate) ingest_dropped: Family<KindReason, Counter>,
    /// Seconds from request start to the 202 (durable) answer.
    pub(crate) ingest_ack_seconds: Family<KindLabels, Histogram>,
    /// Items and bytes in the durable queue, and the oldest item's age.
    pub(crate) queue_items: Gauge,
    pub(crate) queue_bytes: Gauge,
    pub(crate) queue_oldest_age_seconds: Gauge<f64, AtomicU64>,
    /// Records that failed their checksum on read (reported, skipped).
    pub(crate) queue_corrupt_records: Counter,
    /// Seconds per group commit of the queue (vectored write + fdatasync):
    /// the disk's share of every ingest acknowledgement.
    pub(crate) queue_commit_seconds: Histogram,
    /// Requests sent to Datadog by kind, site and status class
    /// (`2xx`, `4xx`, `5xx`, `transport`).
    pub(crate) send_requests: Family<SendLabels, Counter>,
    /// Items and compressed bytes delivered (2xx) by kind and site.
    pub(crate) delivered_items: Family<KindSite, Counter>,
    pub(crate) delivered_bytes: Family<KindSite, Counter>,
    /// Retries scheduled, by kind and reason.
    pub(crate) retries: Family<KindReason, Counter>,
    /// Items dead-lettered (Datadog answered 400) and aged out.
    pub(crate) dead_lettered_items: Family<KindLabels, Counter>,
    pub(crate) aged_out_items: Family<KindLabels, Counter>,
    /// Items accepted for an earlier connection of their tenant (before a
    /// disconnect, or for another org or site), discarded at send time.
    pub(crate) discarded_items: Family<KindLabels, Counter>,
    /// Seconds from ingest acknowledgement to Datadog's 2xx.
    pub(crate) end_to_end_seconds: Family<KindLabels, Histogram>,
    /// Tenants by state.
    pub(crate) tenants: Family<StateLabels, Gauge>,
    /// OAuth events: connect, callback, refresh, key_create, key_validate, revoke.
    pub(crate) oauth_events: Family<OAuthLabels, Counter>,
    /// Config reloads by result, and the current generation.
    pub(crate) config_reloads: Family<ResultLabels, Counter>,
    pub(crate) config_generation: Gauge,
    /// Pull-side proxy responses by status class.
    pub(crate) proxy_requests: Family<StatusClass, Counter>,
    /// Requests to paths (404) or methods (405) a listener does not serve.
    pub(crate) unserved_requests: Family<UnservedLabels, Counter>,
    /// Lifecycle webhook deliveries by this replica, by outcome
    /// ([`WEBHOOK_OUTCOMES`]).
    pub(crate) webhook_deliveries: Family<OutcomeLabels, Counter>,
    /// Events in the webhook outbox (shared by replicas: each reports the
    /// same figure), and the oldest one's age.
    pub(crate) webhook_outbox_events: Gauge,
    pub(crate) webhook_outbox_oldest_age_seconds: Gauge<f64, AtomicU64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Request latencies, 0.5 ms .. 60 s: fine between 1 and 20 ms, where an
/// acknowledgement's objective sits (5 ms is a bound), coarse beyond.
const LATENCY_BUCKETS: [f64; 22] = [
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            ingest_requests: Family::default(),
            ingest_items: Family::default(),
            ingest_bytes: Family::default(),
            ingest_rejections: Family::default(),
            ingest_dropped: Family::default(),
            ingest_ack_seconds: Family::new_with_constructor(latency_histogram),
            queue_items: Gauge::default(),
            queue_bytes: Gauge::default(),
            queue_oldest_age_seconds: Gauge::default(),
            queue_corrupt_records: Counter::default(),
            // 50 µs .. ~1.6 s
            queue_commit_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            send_requests: Family::default(),
            delivered_items: Family::default(),
            delivered_bytes: Family::default(),
            retries: Family::default(),
            dead_lettered_items: Family::default(),
            aged_out_items: Family::default(),
            discarded_items: Family::default(),
            end_to_end_seconds: Family::new_with_constructor(latency_histogram),
            tenants: Family::default(),
            oauth_events: Family::default(),
            config_reloads: Family::default(),
            config_generation: Gauge::default(),
            proxy_requests: Family::default(),
            unserved_requests: Family::default(),
            webhook_deliveries: Family::default(),
            webhook_outbox_events: Gauge::default(),
            webhook_outbox_oldest_age_seconds: Gauge::default(),
            registry: Registry::default(),
        };
        let relay = registry.sub_registry_with_prefix("ddrelay");
        relay.register(
            "ingest_requests",
            "Ingest API requests by data kind and HTTP status class",
            m.ingest_requests.clone(),
        );
        relay.register(
            "ingest_items",
            "Items received by data kind and outcome",
            m.ingest_items.clone(),
        );
        relay.register(
            "ingest_bytes",
            "Decompressed request bytes received by data kind and outcome",
            m.ingest_bytes.clone(),
        );
        relay.register(
            "ingest_rejections",
            "Rejected ingest requests by data kind and reason",
            m.ingest_rejections.clone(),
        );
        relay.register(
            "ingest_dropped",
            "Points and items accepted but dropped or truncated as Datadog would, by data kind and reason",
            m.ingest_dropped.clone(),
        );
        for kind in Endpoint::ALL {
            for (reason, _) in crate::ingest::validate::Dropped::default().by_reason() {
                let _ = m.ingest_dropped.get_or_create(&KindReason {
                    kind: kind.name(),
                    reason,
                });
            }
        }
        relay.register(
            "ingest_ack_seconds",
            "Seconds from request start to the durable 202",
            m.ingest_ack_seconds.clone(),
        );
        relay.register(
            "queue_items",
            "Items waiting in the durable queue",
            m.queue_items.clone(),
        );
        relay.register(
            "queue_bytes",
            "Bytes stored in the durable queue",
            m.queue_bytes.clone(),
        );
        relay.register(
            "queue_oldest_age_seconds",
            "Age of the oldest queued record",
            m.queue_oldest_age_seconds.clone(),
        );
        relay.register(
            "queue_commit_seconds",
            "Seconds per group commit of the durable queue (write + fdatasync)",
            m.queue_commit_seconds.clone(),
        );
        relay.register(
            "queue_corrupt_records",
            "Queue records that failed their checksum",
            m.queue_corrupt_records.clone(),
        );
        relay.register(
            "send_requests",
            "Requests sent to Datadog intakes by kind, site and status class",
            m.send_requests.clone(),
        );
        relay.register(
            "delivered_items",
            "Items Datadog accepted, by kind and site",
            m.delivered_items.clone(),
        );
        relay.register(
            "delivered_bytes",
            "Compressed bytes Datadog accepted, by kind and site",
            m.delivered_bytes.clone(),
        );
        relay.register(
            "retries",
            "Delivery retries by kind and reason",
            m.retries.clone(),
        );
        relay.register(
            "dead_lettered_items",
            "Items Datadog refused with 400, kept in the dead-letter area",
            m.dead_lettered_items.clone(),
        );
        relay.register(
            "aged_out_items",
            "Items not sent because they passed Datadog's acceptance window",
            m.aged_out_items.clone(),
        );
        relay.register(
            "discarded_items",
            "Items accepted for an earlier connection of their tenant (before a disconnect, or for another org or site), discarded instead of sent",
            m.discarded_items.clone(),
        );
        relay.register(
            "end_to_end_seconds",
            "Seconds from ingest acknowledgement to Datadog's 2xx",
            m.end_to_end_seconds.clone(),
        );
        relay.register("tenants", "Tenants by state", m.tenants.clone());
        relay.register(
            "oauth_events",
            "OAuth and key lifecycle events by outcome",
            m.oauth_events.clone(),
        );
        relay.register(
            "config_reloads",
            "Configuration reloads by result",
            m.config_reloads.clone(),
        );
        relay.register(
            "config_generation",
            "Configuration generation, incremented by each successful reload",
            m.config_generation.clone(),
        );
        relay.register(
            "proxy_requests",
            "Pull-side proxy responses by status class",
            m.proxy_requests.clone(),
        );
        let info = prometheus_client::metrics::info::Info::new(vec![(
            "version",
            env!("CARGO_PKG_VERSION"),
        )]);
        relay.register("build", "ddrelay build information", info);
        relay.register(
            "unserved_requests",
            "Requests to a path or method a listener does not serve, by listener and status",
            m.unserved_requests.clone(),
        );
        relay.register(
            "webhook_deliveries",
            "Lifecycle webhook delivery attempts by this replica, by outcome",
            m.webhook_deliveries.clone(),
        );
        relay.register(
            "webhook_outbox_events",
            "Lifecycle events waiting in the webhook outbox (all replicas)",
            m.webhook_outbox_events.clone(),
        );
        relay.register(
            "webhook_outbox_oldest_age_seconds",
            "Age of the oldest event waiting in the webhook outbox",
            m.webhook_outbox_oldest_age_seconds.clone(),
        );
        // Unprefixed: see `process`.
        registry.register_collector(Box::new(Process));
        m.start_at_zero();
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The classic Prometheus text format (0.0.4), for scrapers and tools
    /// that do not speak OpenMetrics (promtool, older agents).
    pub(crate) fn render_text(&self) -> String {
        openmetrics_to_text(&self.render())
    }

    /// Creates every series of a known bounded label set, at zero (the
    /// guards `get_or_create` returns are dropped at once).
    fn start_at_zero(&self) {
        for kind in Endpoint::EVERY.map(Endpoint::name) {
            for reason in retry_reason::ALL {
                let _ = self.retries.get_or_create(&KindReason { kind, reason });
            }
            for family in [
                &self.dead_lettered_items,
                &self.aged_out_items,
                &self.discarded_items,
            ] {
                let _ = family.get_or_create(&KindLabels { kind });
            }
            for outcome in INGEST_OUTCOMES {
                let _ = self
                    .ingest_items
                    .get_or_create(&KindOutcome { kind, outcome });
                let _ = self
                    .ingest_bytes
                    .get_or_create(&KindOutcome { kind, outcome });
            }
        }
        for listener in LISTENERS {
            for status in [404, 405] {
                self.unserved(listener, status);
            }
        }
        for result in ["ok", "error"] {
            let _ = self.config_reloads.get_or_create(&ResultLabels { result });
        }
        for status_class in ["2xx", "4xx", "5xx"] {
            let _ = self
                .proxy_requests
                .get_or_create(&StatusClass { status_class });
        }
        for outcome in WEBHOOK_OUTCOMES {
            let _ = self
                .webhook_deliveries
                .get_or_create(&OutcomeLabels { outcome });
        }
    }

    /// Counts a webhook delivery attempt (`outcome` of [`WEBHOOK_OUTCOMES`]).
    pub(crate) fn webhook(&self, outcome: &'static str, n: u64) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(n);
    }

    /// The counter of requests `listener` answered with `status` (404 or
    /// 405) because it serves no such path or method; other statuses are
    /// counted as `other`.
    pub(crate) fn unserved(&self, listener: &'static str, status: u16) -> Counter {
        let status = match status {
            404 => "404",
            405 => "405",
            _ => "other",
        };
        self.unserved_requests
            .get_or_create(&UnservedLabels { listener, status })
            .clone()
    }

    pub(crate) fn oauth(&self, event: &'static str, outcome: &'static str) {
        self.oauth_events
            .get_or_create(&OAuthLabels { event, outcome })
            .inc();
    }
}

/// Converts OpenMetrics text to the Prometheus 0.0.4 text format: counter
/// families are named with their `_total` samples, `info` families become
/// `_info` gauges, and `# UNIT` / `# EOF` lines are dropped.
pub(crate) fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut pending_help: Option<(String, String)> = None;
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name.to_string(), help.to_string()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gaugehistogram" | "stateset" | "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            if let Some((_, help)) = pending_help.take() {
                out.push_str(&format!("# HELP {name} {help}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `2xx`, `4xx`, `5xx` for an HTTP status.
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics() {
        let m = Metrics::new();
        m.ingest_items
            .get_or_create(&KindOutcome {
                kind: "logs",
                outcome: "accepted",
            })
            .inc_by(3);
        m.oauth("refresh", "ok");
        let text = m.render();
        assert!(
            text.contains("ddrelay_ingest_items_total{kind=\"logs\",outcome=\"accepted\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("ddrelay_oauth_events_total{event=\"refresh\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("ddrelay_build_info"), "{text}");
    }

    /// A family's sample line for `labels`, e.g. `ddrelay_retries_total{kind="logs",reason="split"}`.
    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    /// Alerts need the series before the first event: every delivery kind
    /// and reason is there at zero from the start.
    #[test]
    fn known_label_sets_start_at_zero() {
        let text = Metrics::new().render_text();
        for kind in crate::site::Endpoint::EVERY.map(|e| e.name()) {
            for reason in ["retryable", "forbidden", "split"] {
                let s = format!("ddrelay_retries_total{{kind=\"{kind}\",reason=\"{reason}\"}}");
                assert_eq!(sample(&text, &s), Some("0"), "{s} in:\n{text}");
            }
            for family in ["dead_lettered_items", "aged_out_items", "discarded_items"] {
                let s = format!("ddrelay_{family}_total{{kind=\"{kind}\"}}");
                assert_eq!(sample(&text, &s), Some("0"), "{s} in:\n{text}");
            }
            for outcome in ["accepted", "rejected"] {
                let s =
                    format!("ddrelay_ingest_items_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}");
                assert_eq!(sample(&text, &s), Some("0"), "{s} in:\n{text}");
            }
        }
        for listener in ["api", "public"] {
            for status in ["404", "405"] {
                let s = format!(
                    "ddrelay_unserved_requests_total{{listener=\"{listener}\",status=\"{status}\"}}"
                );
                assert_eq!(sample(&text, &s), Some("0"), "{s} in:\n{text}");
            }
        }
        assert!(!text.contains("tenant="), "{text}");
    }

    /// The process metrics every exporter has, under their standard
    /// (unprefixed) names, read from `/proc/self` at each scrape.
    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_read_at_scrape_time() {
        let m = Metrics::new();
        let text = m.render_text();
        let value = |name: &str| -> f64 {
            sample(&text, name)
                .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
                .parse()
                .unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = crate::clock::now() as f64;
        let start = value("process_start_time_seconds");
        assert!(
            start > now - 86_400.0 * 30.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
        assert!(!text.contains("ddrelay_process_"), "{text}");
        // Read again at the next scrape: CPU time only grows.
        let busy: u64 = (0..3_000_000u64).fold(0, |a, i| a ^ i.wrapping_mul(31));
        assert!(busy != 1);
        let again = m.render_text();
        let cpu = |t: &str| -> f64 {
            sample(t, "process_cpu_seconds_total")
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(cpu(&again) >= cpu(&text));
        // OpenMetrics names the counter family without `_total`.
        assert!(m.render().contains("# TYPE process_cpu_seconds counter"));
    }
}
