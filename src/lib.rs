//! ddrelay: a sidecar that lets a SaaS partner ship each of its customers'
//! data into that customer's own Datadog account.
//!
//! # Layout
//! - [`cli`]: the command line; [`app`]: builds and runs everything and
//!   gives each module what it needs.
//! - [`clock`]: the wall clock.
//! - [`config`]: TOML + environment → validated [`config::Config`].
//! - [`site`]: every Datadog site, host and intake limit (the only place a
//!   Datadog hostname is written).
//! - [`secret`]: the redacting [`secret::Secret`] type and sealing at rest.
//! - [`store`]: tenants, sealed credentials, pending OAuth flows, the
//!   lifecycle webhook outbox and the hourly usage rows (SQLite by default,
//!   PostgreSQL for several replicas); `store migrate` copies one store into
//!   another.
//! - [`tags`]: Datadog's tag rules, for a tenant's own tags and the
//!   integration's source name.
//! - [`codec`]: bounded decompression and compression of bodies.
//! - [`queue`]: the durable on-disk queue between ingest and delivery
//!   (group commit, crash recovery, quotas, compaction).
//! - [`datadog`]: the one HTTP client for every call to Datadog.
//! - [`ingest`]: the Datadog-compatible ingest API: the tenant from the
//!   headers, decoding, validation ([`ingest::validate`]), the durable append;
//!   and the Agent's trace API for tracing libraries ([`ingest::traces`]).
//! - [`traces`]: the trace kinds' formats and rules (the intake's protobuf,
//!   MessagePack, Datadog's span rules, stats as the trace agent computes
//!   them).
//! - [`pipeline`]: delivery: batching within Datadog's limits, sending,
//!   retries, rate limits, dead letters, age-out, isolation.
//! - [`tenant`]: the directory of tenants in memory (states, generations).
//! - [`credentials`]: the one owner of a tenant's usable token and key
//!   (refresh, the 401/403 policy, keys, revocation, the grant check).
//! - [`oauth`]: the connect flow (PKCE, state, callback, pages).
//! - [`admin`]: the `/v1` admin API and the HTML status page on `/`.
//! - [`verify`]: Datadog's "Test the OAuth client" checklist for one tenant
//!   (`ddrelay verify`, `POST /v1/tenants/{tenant}/verify`).
//! - [`proxy`]: the pull side, `/v1/tenants/{tenant}/datadog/{path}`: a
//!   tenant's Datadog API with its own token and site (path policy, header
//!   hygiene, limits, streaming; the refresh policy is [`credentials`]'s).
//! - [`webhooks`]: lifecycle webhooks to the partner (signed, from the
//!   store's outbox, in order per tenant, one replica sending).
//! - [`usage`]: usage per tenant, kind and hour (counted in memory by ingest
//!   and delivery, flushed to the store, read by the admin API).
//! - [`telemetry`]: logs, Prometheus metrics (no per-tenant label), the
//!   process metrics and per-minute rates.
//! - [`ops`]: operator commands that talk to a running relay's admin API
//!   (`tenants`, `verify`, `healthcheck`) and `store migrate`.
//! - [`shutdown`]: the shutdown signal; [`text`]: small string helpers.
//! - `dev` (hidden): the development tools, which the product never uses:
//!   fakedog (the Datadog emulator behind `ddrelay fakedog` and every
//!   test) and the run-time CA it serves TLS with, the sandbox (a relay
//!   wired to fakedog on loopback), `ddrelay demo`, `ddrelay bench`, and
//!   the properties the fuzz targets check.
//!
//! See ARCHITECTURE.md for the data flow and what each module may know.

pub(crate) mod admin;
pub(crate) mod app;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod config;
pub(crate) mod credentials;
pub mod datadog;
#[doc(hidden)]
pub mod dev;
pub mod ingest;
pub(crate) mod oauth;
pub(crate) mod ops;
pub mod pipeline;
pub(crate) mod proxy;
pub mod queue;
pub mod secret;
pub(crate) mod shutdown;
pub mod site;
pub mod store;
pub(crate) mod tags;
pub(crate) mod telemetry;
pub(crate) mod tenant;
pub(crate) mod text;
pub mod traces;
pub mod usage;
pub(crate) mod verify;
pub(crate) mod webhooks;
