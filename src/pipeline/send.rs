//! The dispatcher: decides which (tenant, kind) stream sends now, runs one
//! task per take (`take.rs`: queue -> plan -> intake -> ack), and keeps each
//! stream's and tenant's state (backoff, pause, the Forbidden fallback,
//! figures). Records are acked only after Datadog's 2xx (or settled for
//! good: dead-lettered, aged out, discarded for an earlier connection).
//! The outside world is two seams (`seam.rs`); `tests.rs` drives all of
//! this on paused tokio time against scripted ones.
//!
//! Isolation is the design goal (one revoked key must never stall every
//! tenant: docs/peers.md "One bad key must not stall the others"):
//! - one task per (tenant, kind) stream, or several while it has a backlog
//!   (a full payload or more waiting: one large tenant is not capped by one
//!   payload in flight), at most `delivery.tenant_concurrency` per tenant
//!   and never more than half of
//!   `delivery.max_concurrency` (at least one), so no tenant can hold every
//!   sending slot (a site that hangs, a tenant throttled);
//! - a global permit (`delivery.max_concurrency` in all) is held only while
//!   a request is being sent: not while a task waits for its tenant's rate
//!   limit, the in-flight budget or packing, so a throttled tenant holds
//!   no slot while it waits;
//! - a failing stream does not wait in memory: its records go back to the
//!   queue (on disk) and the stream gets a jittered exponential backoff, so
//!   an outage of one site costs the others nothing and memory stays flat;
//! - a 401/403 pauses just that tenant and runs the Forbidden fallback
//!   (`credentials::Credentials::recover_key`) once per incident;
//! - the dispatcher serves ready streams least-recently-served first.
//!
//! Batching: a stream is sent when it holds about a payload's worth of data
//! or its oldest record is `delivery.batch_max_age` old (trace stats:
//! `delivery.stats_max_age`), or on drain.
//!
//! Age-out: items that could only arrive after Datadog's acceptance window
//! (`Endpoint::window`) are not sent; they are counted per tenant and kind.
//!
//! This module never imports axum.

mod take;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::background::{self, Background};
use super::deadletter::DeadLetters;
use super::limits::Limiters;
use super::retry::Backoff;
use super::seam::{Intake, Keys};
use crate::clock::now_ms;
use crate::config::Config;
use crate::credentials::{Credentials, Recovery};
use crate::queue::Queue;
use crate::secret::Secret;
use crate::shutdown::Shutdown;
use crate::site::{Encoding, Endpoint};
use crate::telemetry::metrics::{KindLabels, KindReason, Metrics, retry_reason};
use crate::telemetry::rate::{Rates, Window};
use crate::tenant::ConfigHandle;

/// How long to keep sending on shutdown before leaving the rest on disk is
/// `delivery.drain_timeout`; this is the dispatcher's idle re-check period.
const IDLE_RECHECK: Duration = Duration::from_millis(500);

/// A stream's state in the dispatcher.
#[derive(Debug, Default)]
struct StreamState {
    /// Tasks taking from this stream now (several with a backlog).
    in_flight: usize,
    failures: u32,
    next_attempt: Option<Instant>,
}

/// Per-tenant delivery state and figures (shown by the admin API).
#[derive(Debug, Default, Clone, Serialize)]
pub struct TenantDelivery {
    #[serde(skip)]
    in_flight: usize,
    #[serde(skip)]
    paused_until: Option<Instant>,
    #[serde(skip)]
    recovering: bool,
    /// 403s while the key still validated, since the last success.
    pub forbidden_in_a_row: u32,
    pub(crate) delivered_items: u64,
    pub dead_lettered_items: u64,
    pub aged_out_items: u64,
    /// Items accepted for an earlier connection (before a disconnect, or
    /// for another org or site), discarded at send time.
    pub(crate) discarded_items: u64,
    pub(crate) retries: u64,
    pub(crate) last_error: Option<String>,
    pub(crate) last_error_ms: Option<i64>,
    pub(crate) last_delivery_ms: Option<i64>,
    /// Items delivered per minute, for rates.
    #[serde(skip)]
    delivered: Window,
}

impl TenantDelivery {
    /// Items delivered per second over the last minutes.
    pub(crate) fn delivered_per_s(&self) -> Rates {
        self.delivered.rates(Instant::now())
    }
}

#[derive(Debug, Default)]
struct DispatchState {
    streams: HashMap<(Arc<str>, u8), StreamState>,
    tenants: HashMap<Arc<str>, TenantDelivery>,
    /// Items delivered per minute, all tenants.
    delivered: Window,
}

/// How one stream task ended.
#[derive(Debug)]
enum Outcome {
    /// Nothing was there to send.
    Idle,
    /// Everything taken was settled (delivered, dead-lettered or aged out).
    Done,
    /// Datadog or the network failed: back off this stream.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// 401/403 with this key.
    Forbidden { key: Secret, status: u16 },
    /// Credentials unavailable (tenant not connected any more, store error).
    Hold { why: String, transient: bool },
}

impl Outcome {
    fn retry(why: impl Into<String>) -> Outcome {
        Outcome::Retry {
            after: None,
            why: why.into(),
        }
    }
}

/// The delivery pipeline.
pub struct Pipeline {
    queue: Queue,
    /// Who is connected (held tenants are not dispatched); site, key and
    /// generation at send time; the Forbidden fallback.
    keys: Arc<dyn Keys>,
    /// Datadog's intakes.
    intake: Arc<dyn Intake>,
    config: ConfigHandle,
    metrics: Arc<Metrics>,
    dead: DeadLetters,
    global: Arc<Semaphore>,
    /// Bounds concurrent packing (CPU and memory): one per core.
    packing: Arc<Semaphore>,
    /// Low-priority threads for packing, one per permit.
    work: Background,
    /// The one low-priority thread that reads takes from the queue.
    read: Background,
    /// `delivery.max_inflight_bytes` in KiB permits: records read from the
    /// queue stay in memory until Datadog answers their payloads.
    inflight: Arc<Semaphore>,
    /// The permits `inflight` was created with (the setting is read at start).
    inflight_kib: usize,
    state: Mutex<DispatchState>,
    wake: Notify,
    /// Usage per tenant, kind and hour: delivered, dead-lettered, aged out,
    /// discarded.
    usage: Arc<crate::usage::Usage>,
    limiters: ArcSwap<Limiters>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

/// Delivery tasks one tenant may run at once: `delivery.tenant_concurrency`,
/// and never more than half the sending slots (at least one), so that a
/// tenant whose site hangs leaves slots for the others.
fn tenant_cap(tenant_concurrency: usize, max_concurrency: usize) -> usize {
    tenant_concurrency.min((max_concurrency / 2).max(1))
}

/// Records per take: enough for a full payload of small items.
const MAX_RECORDS_PER_TAKE: usize = 4096;

/// When a stream is worth sending before `delivery.batch_max_age`: about
/// half a payload, in bytes (as the queue stores them) or in items. At
/// typical compression ratios a series payload's 512 KB compressed cap is
/// reached near 3-4 MB of JSON. The items count catches what is stored
/// compressed (LZ4 series hold a tenth of their bytes; a ready logs record,
/// `record`, is a payload of at least half the items on its own).
fn fill_target(endpoint: Endpoint) -> (u64, u64) {
    let limits = endpoint.limits();
    (
        (limits.max_uncompressed / 2) as u64,
        limits.max_items.div_ceil(2) as u64,
    )
}

/// What the pipeline reaches the world through (see `seam.rs`).
pub(crate) struct Seams {
    pub(crate) keys: Arc<dyn Keys>,
    pub(crate) intake: Arc<dyn Intake>,
    /// Where packing runs.
    pub(crate) work: Background,
    /// Where queue reads run: one thread, so that the records in flight
    /// (most of delivery's memory) are allocated from one allocator arena,
    /// whose high-water mark is then the budget, not up to twice it
    /// (BENCHMARKS.md "Change 15: a smaller binary, one reading thread,
    /// half the in-flight budget (2026-12-07)").
    pub(crate) read: Background,
}

impl Seams {
    /// The relay's own: its credentials, Datadog's intakes, one
    /// low-priority packing thread per core and one reading thread.
    pub(crate) fn live(
        credentials: Arc<Credentials>,
        datadog: crate::datadog::Client,
    ) -> std::io::Result<Seams> {
        Ok(Seams {
            keys: Arc::new(credentials),
            intake: Arc::new(datadog),
            work: Background::start("ddrelay-deliver", cores(), background::DELIVERY_NICE)?,
            read: Background::start("ddrelay-read", 1, background::DELIVERY_NICE)?,
        })
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

impl Pipeline {
    pub(crate) fn new(
        queue: Queue,
        seams: Seams,
        config: ConfigHandle,
        metrics: Arc<Metrics>,
        dead: DeadLetters,
    ) -> Pipeline {
        let handle = config;
        let config = handle.load_full();
        let inflight_kib = (config.delivery.max_inflight_bytes / 1024) as usize;
        Pipeline {
            global: Arc::new(Semaphore::new(config.delivery.max_concurrency)),
            packing: Arc::new(Semaphore::new(cores())),
            inflight: Arc::new(Semaphore::new(inflight_kib)),
            inflight_kib,
            work: seams.work,
            read: seams.read,
            limiters: ArcSwap::from_pointee(Limiters::new(&config.limits)),
            queue,
            keys: seams.keys,
            intake: seams.intake,
            config: handle,
            metrics,
            dead,
            state: Mutex::new(DispatchState::default()),
            wake: Notify::new(),
            usage: Arc::default(),
        }
    }

    pub(crate) fn dead_letters(&self) -> &DeadLetters {
        &self.dead
    }

    /// The tenant's delivery figures.
    pub fn tenant(&self, tenant: &str) -> TenantDelivery {
        self.state
            .lock()
            .tenants
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }

    /// Items delivered per second over the last minutes, all tenants.
    pub(crate) fn delivered_per_s(&self) -> Rates {
        self.state.lock().delivered.rates(Instant::now())
    }

    /// Wakes the dispatcher (a tenant reconnected, the config changed).
    pub(crate) fn poke(&self) {
        self.wake.notify_one();
    }

    fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Runs until `shutdown`, then drains for at most `delivery.drain_timeout`
    /// and leaves the rest on disk.
    pub(crate) async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut tasks = JoinSet::new();
        let mut housekeeping = tokio::time::interval(Duration::from_secs(30));
        loop {
            let limits = self.config().limits.clone();
            if self.limiters.load().config() != &limits {
                tracing::info!(
                    tenant_requests_per_second = limits.tenant_requests_per_second,
                    tenant_bytes_per_second = limits.tenant_bytes_per_second,
                    global_requests_per_second = limits.global_requests_per_second,
                    global_bytes_per_second = limits.global_bytes_per_second,
                    "outbound rate limits updated"
                );
                self.limiters.store(Arc::new(Limiters::new(&limits)));
            }
            let wake_at = self.dispatch(&mut tasks, false);
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = self.queue.wait_for_data() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
                _ = housekeeping.tick() => self.limiters.load().shrink(),
            }
        }
        let deadline = Instant::now() + self.config().delivery.drain_timeout;
        tracing::info!(in_flight = tasks.len(), "draining deliveries");
        loop {
            let wake_at = self.dispatch(&mut tasks, true).min(deadline);
            if tasks.is_empty() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tasks.join_next() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
        let left = tasks.len();
        tasks.shutdown().await;
        let stats = self.queue.stats();
        tracing::info!(
            aborted_sends = left,
            queued_items = stats.items,
            queued_bytes = stats.bytes,
            "delivery stopped; the rest stays queued on disk"
        );
    }

    /// Starts a task for every stream that may send now; returns when to look again.
    fn dispatch(self: &Arc<Self>, tasks: &mut JoinSet<()>, draining: bool) -> Instant {
        let now = Instant::now();
        let mut wake = now + IDLE_RECHECK;
        let config = self.config();
        let now_wall = now_ms();
        let ready = self.queue.ready_streams();
        let tenant_cap = tenant_cap(
            config.delivery.tenant_concurrency,
            config.delivery.max_concurrency,
        );
        let mut st = self.state.lock();
        for (tenant, code) in ready {
            let Some(endpoint) = Endpoint::from_code(code) else {
                continue;
            };
            if !self.keys.connected(&tenant) {
                continue; // held: reauth_required, or gone
            }
            let DispatchState {
                streams, tenants, ..
            } = &mut *st;
            let td = tenants.entry(tenant.clone()).or_default();
            if let Some(until) = td.paused_until {
                if until > now {
                    wake = wake.min(until);
                    continue;
                }
                td.paused_until = None;
            }
            if td.recovering || td.in_flight >= tenant_cap {
                continue;
            }
            let ss = streams.entry((tenant.clone(), code)).or_default();
            if let Some(at) = ss.next_attempt
                && at > now
            {
                wake = wake.min(at);
                continue;
            }
            let (enough_bytes, enough_items) = fill_target(endpoint);
            let info = self
                .queue
                .ready_info(&tenant, code, enough_bytes, enough_items);
            let backlog = info.as_ref().is_some_and(|i| {
                i.bytes >= enough_bytes
                    || i.items >= enough_items
                    || i.records as usize >= MAX_RECORDS_PER_TAKE
            });
            // A stream with a backlog runs several takes at once (within
            // the tenant's cap), so one large tenant is not capped by one
            // payload in flight; each take acks its own records.
            if ss.in_flight > 0 && !backlog {
                continue;
            }
            if ss.in_flight == 0
                && !draining
                && !backlog
                && !endpoint.one_per_request()
                && let Some(info) = info
            {
                let age = now_wall - info.oldest_created_ms;
                let max_age_ms = config.delivery.batch_age(endpoint).as_millis() as i64;
                if age < max_age_ms {
                    wake = wake.min(now + Duration::from_millis((max_age_ms - age).max(1) as u64));
                    continue;
                }
            }
            ss.in_flight += 1;
            td.in_flight += 1;
            let this = self.clone();
            tasks.spawn(async move {
                let outcome = this.deliver(&tenant, code, endpoint).await;
                this.settle(&tenant, code, endpoint, outcome).await;
                this.wake.notify_one();
            });
        }
        wake
    }

    /// Updates stream and tenant state after a task.
    async fn settle(
        self: &Arc<Self>,
        tenant: &Arc<str>,
        code: u8,
        endpoint: Endpoint,
        outcome: Outcome,
    ) {
        let config = self.config();
        let backoff = Backoff {
            initial: config.delivery.retry_initial,
            max: config.delivery.retry_max,
        };
        let mut start_recovery = None;
        {
            let mut st = self.state.lock();
            let DispatchState {
                streams, tenants, ..
            } = &mut *st;
            let td = tenants.entry(tenant.clone()).or_default();
            td.in_flight = td.in_flight.saturating_sub(1);
            let ss = streams.entry((tenant.clone(), code)).or_default();
            ss.in_flight = ss.in_flight.saturating_sub(1);
            match outcome {
                Outcome::Idle => {}
                Outcome::Done => {
                    ss.failures = 0;
                    ss.next_attempt = None;
                    td.forbidden_in_a_row = 0;
                }
                Outcome::Retry { after, why } => {
                    ss.failures += 1;
                    let delay = backoff.delay(ss.failures, after, rand::random::<f64>());
                    ss.next_attempt = Some(Instant::now() + delay);
                    td.retries += 1;
                    td.last_error = Some(why.clone());
                    td.last_error_ms = Some(now_ms());
                    self.metrics
                        .retries
                        .get_or_create(&KindReason {
                            kind: endpoint.name(),
                            reason: retry_reason::RETRYABLE,
                        })
                        .inc();
                    tracing::debug!(tenant = %tenant, kind = endpoint.name(), failures = ss.failures, delay_ms = delay.as_millis() as u64, error = %why, "delivery failed; backing off");
                }
                Outcome::Hold { why, transient } => {
                    ss.failures += 1;
                    let delay = if transient {
                        backoff.delay(ss.failures, None, rand::random::<f64>())
                    } else {
                        backoff.max
                    };
                    ss.next_attempt = Some(Instant::now() + delay);
                    td.last_error = Some(why);
                    td.last_error_ms = Some(now_ms());
                }
                Outcome::Forbidden { key, status } => {
                    td.last_error =
                        Some(format!("Datadog answered {status} to the tenant's API key"));
                    td.last_error_ms = Some(now_ms());
                    self.metrics
                        .retries
                        .get_or_create(&KindReason {
                            kind: endpoint.name(),
                            reason: retry_reason::FORBIDDEN,
                        })
                        .inc();
                    if !td.recovering {
                        td.recovering = true;
                        start_recovery = Some(key);
                    }
                }
            }
        }
        if let Some(key) = start_recovery {
            let this = self.clone();
            let tenant = tenant.clone();
            tokio::spawn(async move { this.recover(tenant, key).await });
        }
    }

    /// The Forbidden fallback for one incident; other streams of the tenant
    /// stay paused until it ends.
    async fn recover(self: Arc<Self>, tenant: Arc<str>, key: Secret) {
        let result = self.keys.recover(tenant.clone(), key).await;
        let config = self.config();
        let backoff = Backoff {
            initial: config.delivery.retry_initial,
            max: config.delivery.retry_max,
        };
        let mut st = self.state.lock();
        let td = st.tenants.entry(tenant.clone()).or_default();
        td.recovering = false;
        match result {
            Recovery::AlreadyReplaced | Recovery::NewKey => {
                td.paused_until = None;
                td.forbidden_in_a_row = 0;
            }
            Recovery::KeyStillValid => {
                td.forbidden_in_a_row += 1;
                let n = td.forbidden_in_a_row;
                if n > config.delivery.forbidden_retries {
                    tracing::error!(tenant = %tenant, forbidden_in_a_row = n, "datadog keeps answering 403 to a key that validates; holding the tenant's data and retrying slowly (check the org's permissions)");
                    td.paused_until = Some(Instant::now() + backoff.max);
                } else {
                    tracing::warn!(tenant = %tenant, forbidden_in_a_row = n, "403 from an intake although the key validates; treating as transient");
                    td.paused_until =
                        Some(Instant::now() + backoff.delay(n, None, rand::random::<f64>()));
                }
                td.last_error = Some(format!(
                    "Datadog answered 403 although the API key validates ({n} in a row)"
                ));
            }
            Recovery::ReauthRequired(reason) => {
                // The tenant's state holds it; a reconnect resumes it.
                td.last_error = Some(reason);
            }
            Recovery::Undecided(why) => {
                tracing::warn!(tenant = %tenant, error = %why, "forbidden fallback could not decide; retrying later");
                td.paused_until =
                    Some(Instant::now() + backoff.delay(2, None, rand::random::<f64>()));
                td.last_error = Some(why);
            }
        }
        td.last_error_ms = Some(now_ms());
        drop(st);
        self.wake.notify_one();
    }

    /// Ages out the data held for `held` tenants (not connected) that has
    /// passed Datadog's acceptance window: it could never be accepted, so
    /// it is dropped and counted while held, not kept until a reconnect.
    /// A record goes when even its newest possible item is too old: it was
    /// accepted before `now - past - future` of its kind's window.
    pub(crate) fn age_out_held(&self, held: &[String]) {
        if held.is_empty() {
            return;
        }
        let held: std::collections::HashSet<&str> = held.iter().map(String::as_str).collect();
        let now = now_ms();
        for (tenant, code) in self.queue.ready_streams() {
            let Some(endpoint) = Endpoint::from_code(code) else {
                continue;
            };
            if !held.contains(&*tenant) {
                continue;
            }
            let window = endpoint.window();
            let before = now - (window.past + window.future).as_millis() as i64;
            let (records, items) = self.queue.expire(&tenant, code, before);
            if records > 0 {
                self.count_aged_out(&tenant, endpoint, items);
                tracing::warn!(tenant = %tenant, kind = endpoint.name(), items, "held data passed Datadog's acceptance window; aged out");
            }
        }
    }

    /// Updates the tenant's delivery figures.
    fn figures(&self, tenant: &Arc<str>, f: impl FnOnce(&mut TenantDelivery)) {
        f(self.state.lock().tenants.entry(tenant.clone()).or_default());
    }

    /// Counts `items` delivered for `tenant` now (`at_ms` on the wall clock).
    fn count_delivered_now(&self, tenant: &Arc<str>, items: u64, at_ms: i64) {
        let now = Instant::now();
        let mut state = self.state.lock();
        state.delivered.add(items, now);
        let td = state.tenants.entry(tenant.clone()).or_default();
        td.delivered_items += items;
        td.delivered.add(items, now);
        td.last_delivery_ms = Some(at_ms);
    }

    /// Counts usage (`crate::usage`) for `tenant`'s `endpoint` now.
    pub(crate) fn usage(
        &self,
        tenant: &str,
        endpoint: Endpoint,
        f: impl FnOnce(&mut crate::usage::Counts),
    ) {
        self.usage.count(tenant, endpoint, f);
    }

    /// Counts usage in `usage` (the app's ledger) instead of on its own.
    pub(crate) fn with_usage(mut self, usage: Arc<crate::usage::Usage>) -> Pipeline {
        self.usage = usage;
        self
    }

    fn count_aged_out(&self, tenant: &Arc<str>, endpoint: Endpoint, items: u64) {
        self.metrics
            .aged_out_items
            .get_or_create(&KindLabels {
                kind: endpoint.name(),
            })
            .inc_by(items);
        self.figures(tenant, |td| td.aged_out_items += items);
        self.usage(tenant, endpoint, |c| c.aged_out_items += items);
    }
}

/// The wire encoding for an endpoint: series v2 may use zstd (`zstd1`);
/// the others use what Datadog documents for them (`Endpoint::default_encoding`).
pub(crate) fn encoding_for(endpoint: Endpoint, config: &Config) -> Encoding {
    match endpoint {
        Endpoint::SeriesV2 => config.delivery.compression.encoding(),
        e => e.default_encoding(),
    }
}
