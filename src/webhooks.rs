//! Lifecycle webhooks: delivers the store's outbox of tenant lifecycle
//! events (`store/outbox.rs`) to the partner's `[webhooks] url`, signed,
//! at-least-once, in order per tenant, by one replica at a time.
//!
//! The contract with the partner (README.md "Lifecycle webhooks: tell your
//! UI who must reconnect"): one JSON object per
//! state change, `POST`ed with `DD-Relay-Signature: t=<unix
//! seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (`webhooks/sign.rs`),
//! retried with backoff until a `2xx`; the receiver deduplicates by `id`.
//!
//! How ([`run`]):
//! - **Claim**: each round claims, for this replica and for [`LEASE`],
//!   every tenant's oldest due event (as many as [`MAX_IN_FLIGHT`] allows).
//!   A tenant's next event is claimable only once this one left the
//!   outbox, so a tenant's events go out one at a time, in order; tenants
//!   do not wait for each other.
//! - **Settle**: `2xx` deletes the event; anything else (another status, no
//!   answer within [`REQUEST_TIMEOUT`]) releases it, due again after
//!   [`backoff`] (1 s doubling to 10 min), for any replica to claim.
//!   [`ATTEMPT_LIMIT`] bounds an attempt whatever the receiver does.
//! - **Crashes**: a replica's claims outlive it only until their lease
//!   passes ([`LEASE`], well above the request timeout), then any replica
//!   takes them. A restarted replica keeps its id (a file in its data dir,
//!   [`replica_id`]) and releases its previous life's claims at start, so
//!   it resends at once. A delivery cut by a crash is sent again: the
//!   receiver sees its `id` twice.
//! - **Retention**: an event still undelivered after [`RETENTION`] is
//!   dropped (counted, `outcome="expired"`, logged as an error); the
//!   outbox's depth and oldest age are metrics.
//!
//! Time is the seams': [`Outbox::now_ms`] and tokio's clock, so
//! `webhooks/tests.rs` runs the loop on paused time against a scripted
//! outbox and receiver. [`StoreOutbox`] and [`HttpReceiver`] are the real
//! ones. The signing secret is a [`Secret`]: it signs, it is never sent,
//! logged or shown; error messages carry no URL (it may hold a token).
//!
//! This module knows the store (the outbox), the config (`[webhooks]`) and
//! the metrics; nothing of tenants, OAuth, Datadog or the queue.

pub(crate) mod sign;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::config::WebhooksConfig;
use crate::secret::Secret;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::store::outbox::OutboxEvent;
use crate::telemetry::metrics::Metrics;

/// The running configuration, swapped on reload (as `app` holds it).
type ConfigHandle = Arc<arc_swap::ArcSwap<crate::config::Config>>;

/// How often the outbox is looked at when nothing wakes the loop (events
/// written by another replica, retries coming due).
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// Deliveries in flight at once, per replica (one per tenant at most).
pub(crate) const MAX_IN_FLIGHT: usize = 16;

/// One delivery attempt's limit: connect, send, answer.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The loop's own limit on an attempt, whatever the receiver seam does
/// (the real one times out at [`REQUEST_TIMEOUT`]): a claim is always
/// settled well within its lease.
pub(crate) const ATTEMPT_LIMIT: Duration = Duration::from_secs(20);

/// How long a claim holds an event: far above [`REQUEST_TIMEOUT`], so a
/// live replica always settles first; a dead one's claims return after it.
pub(crate) const LEASE: Duration = Duration::from_secs(60);

/// The first retry's delay; each further failure doubles it, up to [`BACKOFF_MAX`].
pub(crate) const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(600);

/// An event not delivered within this long is dropped (counted): a
/// receiver gone for a week does not grow the store forever.
pub(crate) const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often the outbox's depth is measured and expired events removed.
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// The delay before the attempt after `failures` failed ones.
pub(crate) fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.min(20);
    (BACKOFF_INITIAL * factor).min(BACKOFF_MAX)
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The receiver answered with this status.
    Status(u16),
    /// No answer: connection refused, timeout, TLS (a message without the URL).
    Failed(String),
}

/// Where events are kept: the store's outbox, or a scripted one in tests.
pub(crate) trait Outbox: Send + Sync + 'static {
    /// Claims up to `limit` due events (each tenant's oldest) for [`LEASE`].
    fn claim(&self, limit: usize) -> BoxFuture<'_, Result<Vec<OutboxEvent>, String>>;
    /// The event was acknowledged: remove it.
    fn delivered(&self, seq: i64) -> BoxFuture<'_, Result<(), String>>;
    /// The attempt failed: release the event, due again at `retry_at` (ms).
    fn failed(&self, seq: i64, retry_at: i64, error: String) -> BoxFuture<'_, Result<(), String>>;
    /// Releases this replica's claims (at start and at shutdown).
    fn release(&self) -> BoxFuture<'_, Result<u64, String>>;
    /// Drops events written before `before` (ms); returns how many.
    fn expire(&self, before: i64) -> BoxFuture<'_, Result<u64, String>>;
    /// Events waiting, and when the oldest was written (ms).
    fn depth(&self) -> BoxFuture<'_, Result<(i64, Option<i64>), String>>;
    /// Unix milliseconds, as the outbox counts them.
    fn now_ms(&self) -> i64;
}

/// Where events go: the partner's endpoint, or a scripted one in tests.
pub(crate) trait Receiver: Send + Sync + 'static {
    /// Whether webhooks are configured now (a reload may change it).
    fn enabled(&self) -> bool;
    /// One signed `POST` of `body`, as of `now` (Unix seconds).
    fn post(&self, body: String, now: i64) -> BoxFuture<'static, Answer>;
}

/// Runs delivery until `shutdown`; `wake` is notified when an event is
/// written here (events of other replicas are found at the next [`TICK`]).
pub(crate) async fn run(
    outbox: Arc<dyn Outbox>,
    receiver: Arc<dyn Receiver>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    shutdown: Shutdown,
) {
    release(&*outbox, "claims left by a previous run").await;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    let mut running: JoinSet<(OutboxEvent, Answer)> = JoinSet::new();
    loop {
        if receiver.enabled() {
            claim(&*outbox, &receiver, &mut running).await;
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tick.tick() => {}
            _ = wake.notified() => {}
            _ = housekeeping.tick() => measure(&*outbox, &metrics).await,
            Some(Ok((event, answer))) = running.join_next(), if !running.is_empty() => {
                settle(&*outbox, &metrics, event, answer).await;
            }
        }
    }
    // Deliveries cut short are sent again by whoever claims them next.
    running.shutdown().await;
    release(&*outbox, "claims of deliveries cut by shutdown").await;
}

/// Claims what there is room for and starts each delivery.
async fn claim(
    outbox: &dyn Outbox,
    receiver: &Arc<dyn Receiver>,
    running: &mut JoinSet<(OutboxEvent, Answer)>,
) {
    let room = MAX_IN_FLIGHT.saturating_sub(running.len());
    if room == 0 {
        return;
    }
    let events = match outbox.claim(room).await {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(error = %e, "cannot claim webhook events; trying again");
            return;
        }
    };
    let now = outbox.now_ms() / 1000;
    for event in events {
        let post = tokio::time::timeout(ATTEMPT_LIMIT, receiver.post(event.body.clone(), now));
        running.spawn(async move {
            let answer = post.await.unwrap_or_else(|_| {
                Answer::Failed(format!("no answer within {} s", ATTEMPT_LIMIT.as_secs()))
            });
            (event, answer)
        });
    }
}

/// Records an attempt's answer: delivered, or due again after the backoff.
async fn settle(outbox: &dyn Outbox, metrics: &Metrics, event: OutboxEvent, answer: Answer) {
    let error = match answer {
        Answer::Status(s) if (200..300).contains(&s) => {
            metrics.webhook("ok", 1);
            tracing::debug!(tenant = %event.tenant, event = %event.id, "webhook delivered");
            if let Err(e) = outbox.delivered(event.seq).await {
                // Claimed until the lease passes, then sent again.
                tracing::warn!(event = %event.id, error = %e, "cannot remove a delivered webhook event; it will be sent again");
            }
            return;
        }
        Answer::Status(s) => {
            metrics.webhook("refused", 1);
            format!("the receiver answered {s}")
        }
        Answer::Failed(why) => {
            metrics.webhook("error", 1);
            why
        }
    };
    let wait = backoff(event.attempts);
    tracing::warn!(tenant = %event.tenant, event = %event.id, attempts = event.attempts + 1, retry_in = ?wait, error = %error, "webhook not delivered; retrying");
    let retry_at = outbox.now_ms() + wait.as_millis() as i64;
    if let Err(e) = outbox.failed(event.seq, retry_at, error).await {
        tracing::warn!(event = %event.id, error = %e, "cannot record a failed webhook attempt");
    }
}

/// Updates the outbox gauges and drops events past [`RETENTION`].
async fn measure(outbox: &dyn Outbox, metrics: &Metrics) {
    let now = outbox.now_ms();
    match outbox.expire(now - RETENTION.as_millis() as i64).await {
        Ok(0) => {}
        Ok(n) => {
            metrics.webhook("expired", n);
            tracing::error!(events = n, retention = ?RETENTION, "lifecycle events dropped undelivered: the webhook receiver did not accept them in time");
        }
        Err(e) => tracing::warn!(error = %e, "cannot expire old webhook events"),
    }
    if let Ok((n, oldest)) = outbox.depth().await {
        metrics.webhook_outbox_events.set(n);
        let age = oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
        metrics.webhook_outbox_oldest_age_seconds.set(age);
    }
}

async fn release(outbox: &dyn Outbox, what: &str) {
    match outbox.release().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(events = n, "released webhook {what}"),
        Err(e) => tracing::warn!(error = %e, "cannot release webhook {what}"),
    }
}

/// This replica's id for claims: kept in `data_dir/replica-id`, so a
/// restart recognises (and releases) its own claims; made on first use.
pub(crate) fn replica_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("replica-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let id = format!("replica-{}", uuid::Uuid::new_v4().simple());
    let tmp = data_dir.join("replica-id.tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// The store's outbox, claimed as replica `owner`.
#[derive(Debug, Clone)]
pub(crate) struct StoreOutbox {
    pub(crate) store: Store,
    pub(crate) owner: String,
}

impl Outbox for StoreOutbox {
    fn claim(&self, limit: usize) -> BoxFuture<'_, Result<Vec<OutboxEvent>, String>> {
        Box::pin(async move {
            let now = self.now_ms();
            let lease = now + LEASE.as_millis() as i64;
            let claimed = self.store.claim_events(&self.owner, now, lease, limit);
            claimed.await.map_err(|e| e.to_string())
        })
    }

    fn delivered(&self, seq: i64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.store
                .event_delivered(seq)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn failed(&self, seq: i64, retry_at: i64, error: String) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let failed = self.store.event_failed(seq, &self.owner, retry_at, &error);
            failed.await.map_err(|e| e.to_string())
        })
    }

    fn release(&self) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(async move {
            self.store
                .release_events(&self.owner)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn expire(&self, before: i64) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(async move {
            self.store
                .expire_events(before)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn depth(&self) -> BoxFuture<'_, Result<(i64, Option<i64>), String>> {
        Box::pin(async move { self.store.outbox_depth().await.map_err(|e| e.to_string()) })
    }

    fn now_ms(&self) -> i64 {
        crate::clock::now_ms()
    }
}

/// The partner's endpoint, as `[webhooks]` says now (reloadable).
#[derive(Debug, Clone)]
pub(crate) struct HttpReceiver {
    config: ConfigHandle,
    http: reqwest::Client,
}

impl HttpReceiver {
    /// A client that follows no redirect (the signature is for the URL the
    /// partner configured) and gives up after [`REQUEST_TIMEOUT`].
    pub fn new(config: ConfigHandle) -> Result<HttpReceiver, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("ddrelay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpReceiver { config, http })
    }

    fn current(&self) -> Option<WebhooksConfig> {
        self.config.load().webhooks.clone()
    }
}

impl Receiver for HttpReceiver {
    fn enabled(&self) -> bool {
        self.config.load().webhooks.is_some()
    }

    fn post(&self, body: String, now: i64) -> BoxFuture<'static, Answer> {
        let Some(hooks) = self.current() else {
            return Box::pin(async { Answer::Failed("[webhooks] url is no longer set".into()) });
        };
        let request = signed(&self.http, &hooks.url, &hooks.secret, body, now);
        Box::pin(async move {
            match request.send().await {
                Ok(resp) => Answer::Status(resp.status().as_u16()),
                // Without the URL: it may carry a token in its query.
                Err(e) => Answer::Failed(e.without_url().to_string()),
            }
        })
    }
}

/// The signed `POST` of `body` to `url`.
fn signed(
    http: &reqwest::Client,
    url: &url::Url,
    secret: &Secret,
    body: String,
    now: i64,
) -> reqwest::RequestBuilder {
    http.post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(sign::HEADER, sign::header_value(secret, now, &body))
        .body(body)
}

#[cfg(test)]
mod tests;
