//! The application: built from a validated [`Config`] by [`App::build`]
//! (bind the listeners, open the store and the queue), then run by
//! [`App::run`] until a shutdown future fires. This is the only module that
//! knows every other one.
//!
//! Two listeners:
//! - `public_listen` (browser-facing): the OAuth callback and nothing else,
//!   served by [`public::serve`] (header-read timeout, bounded heads and
//!   connections);
//! - `api_listen` (partner-facing): ingest and the trace API, the admin
//!   API and the status page, the pull-side proxy, `/metrics`, `/healthz`,
//!   `/readyz`.
//!
//! It also runs what belongs to no request: delivery, the grant check, the
//! webhook sender, the housekeeping loop (tenant sync, discarding a
//! disconnected tenant's queue, ageing out held data, queue gauges,
//! expired flows, the usage flush) and reloads on SIGHUP ([`Reloader`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use std::collections::HashMap;

use crate::admin::{
    self, AdminState, DeadLetterTotals, DeliveryFigures, DeliveryView, Purged, QueueView, Queued,
    RelayView, Throughput,
};
use crate::config::Config;
use crate::credentials::{Credentials, grant};
use crate::datadog;
use crate::ingest::{self, api::IngestState, figures::Figures};
use crate::oauth;
use crate::pipeline::deadletter::DeadLetters;
use crate::pipeline::send::{Pipeline, Seams};
use crate::proxy::{self, ProxyState};
use crate::queue::{Limits as QueueLimits, Queue, QueueError};
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};
use crate::telemetry::LogHandle;
use crate::telemetry::metrics::Metrics;
use crate::tenant::{ConfigHandle, Tenants};
use crate::webhooks;

pub(crate) mod public;

/// Why the app could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("cannot listen on {name} {addr}: {error}")]
    Bind {
        name: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("storage.data_dir {path} is not usable: {error}")]
    DataDir { path: String, error: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Datadog(#[from] datadog::BuildError),
    #[error("cannot open the queue: {0}")]
    Queue(#[from] QueueError),
    #[error("cannot start the delivery threads: {0}")]
    Threads(std::io::Error),
    #[error("cannot set up lifecycle webhooks: {0}")]
    Webhooks(String),
}

/// State shared by every part of the running relay.
pub struct Shared {
    config: ConfigHandle,
    generation: AtomicU64,
    pub(crate) metrics: Arc<Metrics>,
    pub store: Store,
    pub tenants: Arc<Tenants>,
    pub credentials: Arc<Credentials>,
    pub(crate) datadog: datadog::Client,
    pub queue: Queue,
    /// Memory for decoding large request bodies (`server.decode_memory`).
    pub decode_memory: Arc<crate::ingest::budget::Budget>,
    /// Per-tenant refused requests and accepted rates (ingest counts them,
    /// the admin API and status page show them).
    pub(crate) ingest_figures: Arc<Figures>,
    /// Usage per tenant, kind and hour (counted by ingest and delivery,
    /// flushed to the store by housekeeping and at shutdown).
    pub(crate) usage: crate::usage::Ledger,
    pub pipeline: Arc<Pipeline>,
    /// Lifecycle webhook delivery: this replica's claims, the receiver.
    webhooks: (webhooks::StoreOutbox, webhooks::HttpReceiver),
    ready: AtomicBool,
    pub(crate) shutdown: Shutdown,
    log: Option<LogHandle>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// The current configuration (changes on reload).
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.shutdown.is_triggered()
    }
}

impl RelayView for Shared {
    fn ready(&self) -> bool {
        self.is_ready()
    }
    fn config_generation(&self) -> u64 {
        self.generation()
    }
}

/// A built, not yet running, relay.
pub(crate) struct App {
    shared: Arc<Shared>,
    public: TcpListener,
    api: TcpListener,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("public", &self.public_addr())
            .field("api", &self.api_addr())
            .finish()
    }
}

/// Reloads a running app's configuration (SIGHUP, or a test).
#[derive(Clone, Debug)]
pub struct Reloader {
    shared: Arc<Shared>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub(crate) generation: u64,
    /// Settings that changed but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// The settings that differ between `old` and `new` but only take effect
/// after a restart.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut needs_restart = Vec::new();
    if old.server.public_listen != new.server.public_listen {
        needs_restart.push("server.public_listen");
    }
    if old.server.api_listen != new.server.api_listen {
        needs_restart.push("server.api_listen");
    }
    if old.storage.data_dir != new.storage.data_dir {
        needs_restart.push("storage.data_dir");
    }
    if old.storage.database_url != new.storage.database_url {
        needs_restart.push("storage.database_url");
    }
    if old.storage.master_key.to_base64() != new.storage.master_key.to_base64() {
        needs_restart.push("storage.master_key");
    }
    if old.datadog.ca_file != new.datadog.ca_file || old.datadog.resolve != new.datadog.resolve {
        needs_restart.push("datadog.ca_file / datadog.resolve");
    }
    // The queue's limits are fixed when it is opened.
    let (oq, nq) = (&old.queue, &new.queue);
    if (
        oq.max_bytes,
        oq.tenant_max_bytes,
        oq.segment_bytes,
        oq.preallocate,
    ) != (
        nq.max_bytes,
        nq.tenant_max_bytes,
        nq.segment_bytes,
        nq.preallocate,
    ) {
        needs_restart.push("queue.max_bytes / tenant_max_bytes / segment_bytes / preallocate");
    }
    if old.server.decode_memory != new.server.decode_memory {
        needs_restart.push("server.decode_memory");
    }
    if old.delivery.max_concurrency != new.delivery.max_concurrency {
        needs_restart.push("delivery.max_concurrency");
    }
    if old.delivery.max_inflight_bytes != new.delivery.max_inflight_bytes {
        needs_restart.push("delivery.max_inflight_bytes");
    }
    needs_restart
}

impl Reloader {
    /// Applies `new`: secrets, limits, delivery tuning and log level take
    /// effect at once; listeners, storage and `[datadog]` need a restart.
    pub fn reload(&self, new: Config) -> Reloaded {
        let needs_restart = needs_restart(&self.shared.config(), &new);
        if let Some(log) = &self.shared.log
            && let Err(e) = log.set_level(&new.log.level)
        {
            tracing::warn!(error = %e, "log level not changed");
        }
        // Every call to Datadog checks the list as it stands now; tenants
        // on a site taken off it are held, those on a site put back resume.
        self.shared
            .datadog
            .set_allowed_sites(new.datadog.allowed_sites.clone());
        self.shared.store.record_events(new.webhooks.is_some());
        self.shared.config.store(Arc::new(new));
        let credentials = self.shared.credentials.clone();
        let pipeline = self.shared.pipeline.clone();
        tokio::spawn(async move {
            credentials.apply_allowed_sites().await;
            pipeline.poke();
        });
        // Let the sender pick up new limits and tuning now, not at its next tick.
        self.shared.pipeline.poke();
        let generation = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.metrics.config_generation.set(generation as i64);
        self.shared
            .metrics
            .config_reloads
            .get_or_create(&crate::telemetry::metrics::ResultLabels { result: "ok" })
            .inc();
        for key in &needs_restart {
            tracing::warn!(
                key,
                "setting changed on reload; it takes effect after a restart"
            );
        }
        tracing::info!(generation, "configuration reloaded");
        Reloaded {
            generation,
            needs_restart,
        }
    }

    /// Records a reload that failed validation (the old config stays).
    pub(crate) fn failed(&self) {
        self.shared
            .metrics
            .config_reloads
            .get_or_create(&crate::telemetry::metrics::ResultLabels { result: "error" })
            .inc();
    }
}

impl App {
    /// Builds the app: checks the data dir, opens the store, binds both
    /// listeners. Nothing is served until [`App::run`].
    pub(crate) async fn build(config: Config) -> Result<App, BuildError> {
        App::build_with_log(config, None).await
    }

    /// As [`App::build`], with a handle to change the log level on reload.
    pub(crate) async fn build_with_log(
        config: Config,
        log: Option<LogHandle>,
    ) -> Result<App, BuildError> {
        check_data_dir(&config.storage.data_dir)?;
        let datadog = datadog::Client::new(&config.datadog)?;
        let store = open_store(&config).await?;
        let owner =
            webhooks::replica_id(&config.storage.data_dir).map_err(|e| BuildError::DataDir {
                path: config.storage.data_dir.display().to_string(),
                error: format!("cannot keep the replica id there: {e}"),
            })?;
        let public = bind("server.public_listen", config.server.public_listen).await?;
        let api = bind("server.api_listen", config.server.api_listen).await?;
        let metrics = Arc::new(Metrics::new());
        let config: ConfigHandle = Arc::new(ArcSwap::from_pointee(config));
        let tenants = Arc::new(Tenants::load(store.clone(), metrics.clone()).await?);
        let credentials = Arc::new(Credentials::new(
            tenants.clone(),
            store.clone(),
            datadog.clone(),
            config.clone(),
            metrics.clone(),
        ));
        let cfg = config.load_full();
        let queue = open_queue(&cfg, &tenants, &metrics)?;
        let dead = open_dead_letters(&cfg)?;
        queue.set_outside_bytes(dead.total_bytes());
        let usage = crate::usage::Ledger::new(Arc::default(), store.clone());
        let pipeline = Arc::new(
            Pipeline::new(
                queue.clone(),
                Seams::live(credentials.clone(), datadog.clone()).map_err(BuildError::Threads)?,
                config.clone(),
                metrics.clone(),
                dead,
            )
            .with_usage(usage.usage.clone()),
        );
        let webhooks = (
            webhooks::StoreOutbox {
                store: store.clone(),
                owner,
            },
            webhooks::HttpReceiver::new(config.clone())
                .map_err(|e| BuildError::Webhooks(e.to_string()))?,
        );
        let shared = Arc::new(Shared {
            config,
            generation: AtomicU64::new(1),
            metrics,
            store,
            tenants,
            credentials,
            datadog,
            decode_memory: crate::ingest::budget::Budget::new(cfg.server.decode_memory),
            ingest_figures: Arc::new(Figures::default()),
            usage,
            queue,
            pipeline,
            webhooks,
            ready: AtomicBool::new(false),
            shutdown: Shutdown::new(),
            log,
        });
        shared.metrics.config_generation.set(1);
        Ok(App {
            shared,
            public,
            api,
        })
    }

    /// The bound browser-facing address (useful with port 0).
    pub(crate) fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .unwrap_or_else(|_| self.shared.config().server.public_listen)
    }

    /// The bound partner-facing address.
    pub(crate) fn api_addr(&self) -> SocketAddr {
        self.api
            .local_addr()
            .unwrap_or_else(|_| self.shared.config().server.api_listen)
    }

    pub fn reloader(&self) -> Reloader {
        Reloader {
            shared: self.shared.clone(),
        }
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until `shutdown` resolves, then drains and returns.
    pub(crate) async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            shared,
            public,
            api,
        } = self;
        let signal = shared.shutdown.clone();
        tokio::spawn(async move {
            shutdown.await;
            signal.trigger();
        });

        let api_router = api_router(shared.clone());
        let public_router = public_router(shared.clone());
        let (delivery, hooks) = spawn_tasks(&shared);
        shared.ready.store(true, Ordering::SeqCst);
        tracing::info!(
            api = %api.local_addr()?,
            public = %public.local_addr()?,
            version = env!("CARGO_PKG_VERSION"),
            "ddrelay started"
        );

        let s1 = shared.shutdown.clone();
        let api_server = axum::serve(
            api,
            api_router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { s1.wait().await });
        let public_server = public::serve(
            public,
            public_router,
            shared.config().server.public_header_timeout,
            shared.shutdown.clone(),
        );
        let (a, p) = tokio::join!(api_server.into_future(), public_server);
        close(&shared, delivery, hooks).await;
        a?;
        p?;
        tracing::info!("ddrelay stopped");
        Ok(())
    }
}

/// The store the config names: PostgreSQL, or SQLite under `data_dir`.
async fn open_store(config: &Config) -> Result<Store, BuildError> {
    let store = match &config.storage.database_url {
        Some(url) => Store::open_postgres(url, &config.storage.master_key).await?,
        None => Store::open_sqlite(&config.sqlite_path(), &config.storage.master_key).await?,
    };
    store.record_events(config.webhooks.is_some());
    Ok(store)
}

/// The queue, recovered, holding the tenants that are not connected, its
/// commits timed.
fn open_queue(cfg: &Config, tenants: &Tenants, metrics: &Metrics) -> Result<Queue, BuildError> {
    let (queue, recovery) = Queue::open(&cfg.queue_dir(), QueueLimits::from(&cfg.queue))?;
    hold(tenants, &queue);
    let commits = metrics.queue_commit_seconds.clone();
    queue.observe_commits(move |took| commits.observe(took.as_secs_f64()));
    tracing::info!(
        records = recovery.records,
        items = recovery.items,
        bytes = recovery.bytes,
        corrupt_records = recovery.corrupt_records,
        truncated_bytes = recovery.truncated_bytes,
        "queue recovered"
    );
    Ok(queue)
}

/// The dead-letter areas under `data_dir`.
fn open_dead_letters(cfg: &Config) -> Result<DeadLetters, BuildError> {
    let dead_dir = cfg.storage.data_dir.join("dead-letters");
    DeadLetters::open(
        &dead_dir,
        cfg.queue.dead_letter_max_bytes,
        cfg.queue.max_bytes / 16,
    )
    .map_err(|e| BuildError::DataDir {
        path: dead_dir.display().to_string(),
        error: e.to_string(),
    })
}

/// Starts what runs beside the listeners: housekeeping, the allowed
/// sites' effect on tenants, the grant check, delivery and the webhooks.
/// Returns the delivery and webhook tasks, which [`close`] waits for.
fn spawn_tasks(shared: &Arc<Shared>) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    spawn_housekeeping(shared.clone());
    let credentials = shared.credentials.clone();
    tokio::spawn(async move { credentials.apply_allowed_sites().await });
    let grants: Arc<dyn grant::Probe> = Arc::new(grant::Grants(shared.credentials.clone()));
    let config = shared.config.clone();
    tokio::spawn(grant::run(
        grants,
        move || config.load().oauth.grant_check_interval,
        shared.shutdown.clone(),
    ));
    let delivery = tokio::spawn(shared.pipeline.clone().run(shared.shutdown.clone()));
    let hooks = tokio::spawn(webhooks::run(
        Arc::new(shared.webhooks.0.clone()),
        Arc::new(shared.webhooks.1.clone()),
        shared.metrics.clone(),
        shared.store.events_written(),
        shared.shutdown.clone(),
    ));
    (delivery, hooks)
}

/// Once no request is in flight any more: finishes the drain, then closes
/// the queue (syncs its ack files) and the store.
async fn close(
    shared: &Shared,
    delivery: tokio::task::JoinHandle<()>,
    hooks: tokio::task::JoinHandle<()>,
) {
    if let Err(e) = delivery.await {
        tracing::error!(error = %e, "delivery task failed");
    }
    if let Err(e) = hooks.await {
        tracing::error!(error = %e, "webhook delivery task failed");
    }
    if let Err(e) = shared.usage.flush().await {
        tracing::error!(error = %e, "usage counts could not be stored at shutdown");
    }
    shared.queue.close().await;
    shared.store.close().await;
}

async fn bind(name: &'static str, addr: SocketAddr) -> Result<TcpListener, BuildError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| BuildError::Bind { name, addr, error })
}

/// Creates the data dir if needed and proves it is writable.
fn check_data_dir(dir: &Path) -> Result<(), BuildError> {
    let err = |error: String| BuildError::DataDir {
        path: dir.display().to_string(),
        error,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let probe = dir.join(".ddrelay-write-probe");
    std::fs::write(&probe, b"ok").map_err(|e| err(format!("not writable: {e}")))?;
    std::fs::remove_file(&probe).map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// What the connect flow gets (see [`oauth::OAuth`]).
fn oauth_state(shared: &Shared) -> Arc<oauth::OAuth> {
    Arc::new(oauth::OAuth {
        tenants: shared.tenants.clone(),
        credentials: shared.credentials.clone(),
        store: shared.store.clone(),
        config: shared.config.clone(),
        metrics: shared.metrics.clone(),
        on_connected: Some(Arc::new(TestEventOnConnect(ingest_state(shared)))),
    })
}

/// What the ingest API gets (see [`IngestState`]).
fn ingest_state(shared: &Shared) -> IngestState {
    IngestState {
        tenants: shared.tenants.clone(),
        queue: shared.queue.clone(),
        metrics: shared.metrics.clone(),
        config: shared.config.clone(),
        decode_memory: shared.decode_memory.clone(),
        figures: shared.ingest_figures.clone(),
        usage: shared.usage.usage.clone(),
        shutdown: shared.shutdown.clone(),
    }
}

/// `[integration] test_event_on_connect`: queues the test event
/// (`ingest::test_event`) for a tenant that just connected, on a task of
/// its own, so the callback neither waits for it nor fails with it.
struct TestEventOnConnect(IngestState);

impl oauth::OnConnected for TestEventOnConnect {
    fn connected(&self, tenant: &str) {
        if !self.0.config.load().integration.test_event_on_connect {
            return;
        }
        let (state, tenant) = (self.0.clone(), tenant.to_string());
        tokio::spawn(async move {
            match ingest::test_event::send(&state, &tenant).await {
                Ok(()) => {
                    tracing::info!(tenant = %tenant, "test event queued for the new connection")
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant, errors = ?e.errors, "test event on connect not queued")
                }
            }
        });
    }
}

fn api_router(shared: Arc<Shared>) -> Router {
    let views = Arc::new(Views {
        queue: shared.queue.clone(),
        pipeline: shared.pipeline.clone(),
        tenants: shared.tenants.clone(),
        ingest: shared.ingest_figures.clone(),
    });
    let oauth = oauth_state(&shared);
    let admin = admin::router(AdminState {
        tenants: shared.tenants.clone(),
        credentials: shared.credentials.clone(),
        oauth,
        datadog: shared.datadog.clone(),
        config: shared.config.clone(),
        shared_store: shared.store.backend() == crate::store::Backend::Postgres,
        queue: views.clone(),
        delivery: Some(views),
        relay: shared.clone(),
        usage: Some(shared.usage.clone()),
    });
    let ingest = ingest::api::router(ingest_state(&shared));
    let proxy = proxy::router(ProxyState::new(
        shared.tenants.clone(),
        shared.credentials.clone(),
        shared.datadog.clone(),
        shared.config.clone(),
        shared.metrics.clone(),
    ));
    let config = shared.config();
    let counted = shared.metrics.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
        .merge(admin)
        .merge(ingest)
        // Bodies are bounded by the handlers themselves (413 with a JSON body).
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.server.request_timeout,
        ))
        // Merged after the layers: the proxy bounds its own body and each
        // attempt (`proxy.timeout`, a refresh and a retry may exceed
        // `server.request_timeout`), and streams after the handler returns.
        .merge(proxy)
        // Datadog's clients parse every answer as `{"errors": [...]}`.
        .fallback(unserved(&counted, "api", StatusCode::NOT_FOUND, || {
            datadog_error(StatusCode::NOT_FOUND, "Not found")
        }))
        .method_not_allowed_fallback(unserved(
            &counted,
            "api",
            StatusCode::METHOD_NOT_ALLOWED,
            || datadog_error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
        ))
}

/// A fallback handler that counts the request in `unserved_requests` (by
/// listener and status, never by path) and answers `answer()`.
fn unserved<F>(
    metrics: &Metrics,
    listener: &'static str,
    status: StatusCode,
    answer: F,
) -> impl Fn() -> std::future::Ready<Response> + Clone + Send + Sync + 'static
where
    F: Fn() -> Response + Clone + Send + Sync + 'static,
{
    let counter = metrics.unserved(listener, status.as_u16());
    move || {
        counter.inc();
        std::future::ready(answer())
    }
}

/// An answer shaped as Datadog's errors: `{"errors": [message]}`.
fn datadog_error(status: StatusCode, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        status,
        axum::Json(serde_json::json!({ "errors": [message] })),
    )
        .into_response()
}

/// The browser-facing listener serves the OAuth callback and nothing else.
fn public_router(shared: Arc<Shared>) -> Router {
    let metrics = &shared.metrics;
    Router::new()
        .route("/oauth/callback", get(callback))
        .fallback(unserved(metrics, "public", StatusCode::NOT_FOUND, || {
            (StatusCode::NOT_FOUND, "not found\n").into_response()
        }))
        .method_not_allowed_fallback(unserved(
            metrics,
            "public",
            StatusCode::METHOD_NOT_ALLOWED,
            || StatusCode::METHOD_NOT_ALLOWED.into_response(),
        ))
        .with_state(oauth_state(&shared))
}

async fn callback(
    State(oauth): State<Arc<oauth::OAuth>>,
    query: Result<
        axum::extract::Query<oauth::CallbackQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Response {
    match query {
        Ok(axum::extract::Query(q)) => oauth::callback(&oauth, q).await.into_response(),
        Err(_) => oauth::pages::Page::failure(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "This page was opened with a malformed query string.",
            "Start the connection again from the Datadog integration tile.",
        )
        .into_response(),
    }
}

/// Periodic work: pick up tenant changes (other replicas; discard the local
/// queue of a tenant disconnected anywhere), drop expired flows.
fn spawn_housekeeping(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = shared.shutdown.wait() => break,
                _ = tick.tick() => {}
            }
            match shared.tenants.sync().await {
                Ok(synced) => {
                    for tenant in synced.disconnected {
                        discard_disconnected(&shared, &tenant);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "tenant sync failed"),
            }
            // Held data is bounded apart and aged out while held.
            // Dead letters count against the queue's disk budget.
            let dead = shared.pipeline.dead_letters().total_bytes();
            shared.queue.set_outside_bytes(dead);
            let held = hold(&shared.tenants, &shared.queue);
            shared.pipeline.age_out_held(&held);
            let stats = shared.queue.stats();
            shared.metrics.queue_items.set(stats.items as i64);
            shared.metrics.queue_bytes.set(stats.bytes as i64);
            shared.metrics.queue_oldest_age_seconds.set(
                stats
                    .oldest_created_ms
                    .map(|t| ((crate::clock::now_ms() - t).max(0) as f64) / 1000.0)
                    .unwrap_or(0.0),
            );
            let corrupt = shared.queue.corrupt_records();
            let seen = shared.metrics.queue_corrupt_records.get();
            if corrupt > seen {
                shared.metrics.queue_corrupt_records.inc_by(corrupt - seen);
            }
            n += 1;
            if n.is_multiple_of(30)
                && let Err(e) = shared.store.purge_expired_flows(crate::clock::now()).await
            {
                tracing::warn!(error = %e, "purging expired flows failed");
            }
            usage_housekeeping(&shared.usage, n).await;
        }
    });
}

/// Usage: stored every 10 s (5 ticks), pruned past its retention hourly.
async fn usage_housekeeping(usage: &crate::usage::Ledger, tick: u64) {
    if tick.is_multiple_of(5)
        && let Err(e) = usage.flush().await
    {
        tracing::warn!(error = %e, "storing usage counts failed; kept for the next try");
    }
    if tick.is_multiple_of(1800)
        && let Err(e) = usage.prune(crate::clock::now()).await
    {
        tracing::warn!(error = %e, "pruning old usage rows failed");
    }
}

/// Tells the queue which tenants' data is held (`reauth_required`: their
/// bytes count against `queue.held_max_bytes`, not against the delivering
/// tenants' `max_bytes`); returns them.
fn hold(tenants: &Tenants, queue: &Queue) -> Vec<String> {
    let held = tenants.ids_in(crate::store::TenantState::ReauthRequired);
    queue.set_held(held.iter().map(String::as_str));
    held
}

/// `tenant` became disconnected (`DELETE /v1/tenants/{tenant}` on this or
/// another replica): discard what this replica still queues for it, as the
/// replica that answered the DELETE did with its own queue (on that one,
/// nothing is left by now).
fn discard_disconnected(shared: &Shared, tenant: &str) {
    // Connected again meanwhile: what is queued now may be new data (a
    // pending or disconnected tenant's data is refused, so that is old).
    if shared.tenants.get(tenant).is_some_and(|e| {
        matches!(
            e.state(),
            crate::store::TenantState::Connected | crate::store::TenantState::ReauthRequired
        )
    }) {
        return;
    }
    let (records, items, bytes) = shared.queue.purge_tenant(tenant);
    shared.pipeline.dead_letters().purge(tenant);
    if items > 0 {
        tracing::warn!(tenant = %tenant, records, items, bytes, "tenant disconnected; its data queued on this replica discarded");
    }
}

/// The queue and delivery figures, as the admin API and status page see them.
struct Views {
    queue: Queue,
    pipeline: Arc<Pipeline>,
    tenants: Arc<Tenants>,
    ingest: Arc<Figures>,
}

fn queued(stats: &crate::queue::Stats) -> Queued {
    Queued {
        items: stats.items,
        bytes: stats.bytes,
        oldest_ms: stats.oldest_created_ms,
    }
}

impl QueueView for Views {
    fn tenant(&self, tenant: &str) -> Queued {
        queued(&self.queue.tenant_stats(tenant))
    }
    fn all(&self) -> HashMap<String, Queued> {
        self.queue
            .all_tenant_stats()
            .into_iter()
            .map(|(k, v)| (k.to_string(), queued(&v)))
            .collect()
    }
    fn purge(&self, tenant: &str) -> Purged {
        let (records, items, bytes) = self.queue.purge_tenant(tenant);
        self.pipeline.dead_letters().purge(tenant);
        Purged {
            records,
            items,
            bytes,
        }
    }
}

/// Held data is flagged when its oldest item is older than half of the
/// shortest common acceptance window (series: 1 hour).
const HELD_WARNING_AGE_MS: i64 = 30 * 60 * 1000;

impl DeliveryView for Views {
    fn tenant(&self, tenant: &str) -> DeliveryFigures {
        let d = self.pipeline.tenant(tenant);
        let dead = self.pipeline.dead_letters().totals(tenant);
        let stats = self.queue.tenant_stats(tenant);
        let entry = self.tenants.get(tenant);
        let held = entry
            .as_ref()
            .is_some_and(|e| e.state() != crate::store::TenantState::Connected);
        let ingest_dropped = entry.map(|e| e.dropped.snapshot()).unwrap_or_default();
        let oldest_age_ms = stats
            .oldest_created_ms
            .map(|t| (crate::clock::now_ms() - t).max(0));
        let ingest = self.ingest.tenant(tenant);
        DeliveryFigures {
            delivered_items: d.delivered_items,
            held_items: if held { stats.items } else { 0 },
            dead_lettered_items: d.dead_lettered_items,
            dead_letters: DeadLetterTotals {
                bytes: dead.bytes,
                entries: dead.entries,
                evicted_items: dead.evicted_items,
                items: dead.items,
            },
            aged_out_items: d.aged_out_items,
            discarded_items: d.discarded_items,
            ingest_dropped,
            retries: d.retries,
            forbidden_in_a_row: d.forbidden_in_a_row,
            delivered_items_per_s: d.delivered_per_s(),
            last_error: d.last_error,
            last_error_ms: d.last_error_ms,
            last_delivery_ms: d.last_delivery_ms,
            rejected_requests: ingest.rejected_requests,
            accepted_items_per_s: ingest.accepted_items_per_s,
            oldest_queued_age_s: oldest_age_ms.map(|a| a / 1000),
            approaching_acceptance_window: oldest_age_ms.is_some_and(|a| a > HELD_WARNING_AGE_MS),
        }
    }

    fn throughput(&self) -> Throughput {
        Throughput {
            accepted: self.ingest.accepted_rates(),
            delivered: self.pipeline.delivered_per_s(),
        }
    }

    fn dead_letters(&self, tenant: &str) -> serde_json::Value {
        serde_json::json!({
            "tenant": tenant,
            "totals": self.pipeline.dead_letters().totals(tenant),
            "entries": self.pipeline.dead_letters().list(tenant),
        })
    }

    fn dead_letter_items(&self, tenant: &str, id: u64) -> Option<Vec<String>> {
        self.pipeline.dead_letters().items(tenant, id)
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "config_generation": shared.generation(),
    }))
    .into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.is_ready() {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({"ready": true})),
        )
            .into_response()
    } else {
        let why = if shared.shutdown.is_triggered() {
            "draining"
        } else {
            "starting"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"ready": false, "reason": why})),
        )
            .into_response()
    }
}

/// OpenMetrics when the scraper asks for it (Prometheus does), the classic
/// text format otherwise.
async fn metrics(State(shared): State<Arc<Shared>>, headers: axum::http::HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            shared.metrics.render(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            shared.metrics.render_text(),
        )
            .into_response()
    }
}
