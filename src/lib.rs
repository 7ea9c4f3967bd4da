//! ddrelay: a sidecar that lets a SaaS partner ship each of its customers'
//! data into that customer's own Datadog account.
//!
//! # What these docs show
//! A user of the library runs the relay: [`cli::main`] is the whole
//! `ddrelay` binary. These docs show that entry and the vocabulary its
//! configuration is written in. The other modules are the product's
//! insides: `pub(crate)`, or public only for the integration tests,
//! benches and fuzz targets and hidden here (`#[doc(hidden)]`); their
//! `//!` docs and ARCHITECTURE.md describe them, and `cargo doc
//! --document-private-items` shows the crate-private ones.
//!
//! # Layout
//! Documented:
//! - [`cli`]: the command line (every subcommand; `ddrelay` is
//!   [`cli::main`]).
//! - [`config`]: TOML + environment → validated [`config::Config`].
//! - [`site`]: every Datadog site, host and intake limit (the only place a
//!   Datadog hostname is written).
//! - [`secret`]: the redacting [`secret::Secret`] type and sealing at rest.
//!
//! Public for the tests, benches and fuzz targets, hidden from these docs:
//! - `clock`: the wall clock.
//! - `codec`: bounded decompression and compression of bodies.
//! - `store`: tenants, sealed credentials, pending OAuth flows, the
//!   lifecycle webhook outbox and the hourly usage rows (SQLite by default,
//!   PostgreSQL for several replicas); `store migrate` copies one store into
//!   another.
//! - `queue`: the durable on-disk queue between ingest and delivery
//!   (group commit, crash recovery, quotas, compaction).
//! - `datadog`: the one HTTP client for every call to Datadog.
//! - `ingest`: the Datadog-compatible ingest API: the tenant from the
//!   headers, decoding, validation (`ingest::validate`), the durable append;
//!   and the Agent's trace API for tracing libraries (`ingest::traces`).
//! - `traces`: the trace kinds' formats and rules (the intake's protobuf,
//!   MessagePack, Datadog's span rules, stats as the trace agent computes
//!   them).
//! - `pipeline`: delivery: batching within Datadog's limits, sending,
//!   retries, rate limits, dead letters, age-out, isolation.
//! - `usage`: usage per tenant, kind and hour (counted in memory by ingest
//!   and delivery, flushed to the store, read by the admin API).
//!
//! Crate-private:
//! - `app`: builds and runs everything and gives each module what it needs.
//! - `tags`: Datadog's tag rules, for a tenant's own tags and the
//!   integration's source name.
//! - `tenant`: the directory of tenants in memory (states, generations).
//! - `credentials`: the one owner of a tenant's usable token and key
//!   (refresh, the 401/403 policy, keys, revocation, the grant check).
//! - `oauth`: the connect flow (PKCE, state, callback, pages).
//! - `admin`: the `/v1` admin API and the HTML status page on `/`.
//! - `verify`: Datadog's "Test the OAuth client" checklist for one tenant
//!   (`ddrelay verify`, `POST /v1/tenants/{tenant}/verify`).
//! - `proxy`: the pull side, `/v1/tenants/{tenant}/datadog/{path}`: a
//!   tenant's Datadog API with its own token and site (path policy, header
//!   hygiene, limits, streaming; the refresh policy is `credentials`'s).
//! - `webhooks`: lifecycle webhooks to the partner (signed, from the
//!   store's outbox, in order per tenant, one replica sending).
//! - `telemetry`: logs, Prometheus metrics (no per-tenant label), the
//!   process metrics and per-minute rates.
//! - `ops`: operator commands that talk to a running relay's admin API
//!   (`tenants`, `verify`, `healthcheck`) and `store migrate`.
//! - `shutdown`: the shutdown signal; `text`: small string helpers.
//!
//! The development tools, hidden (`src/dev/`; the product never uses them,
//! and `tests/layout.rs` checks that only `cli.rs` names them):
//! - `dev`: fakedog (the Datadog emulator behind `ddrelay fakedog` and
//!   every test) and the run-time CA it serves TLS with, the sandbox (a
//!   relay wired to fakedog on loopback), `ddrelay demo`, `ddrelay bench`,
//!   and the properties the fuzz targets check.
//!
//! See ARCHITECTURE.md for the data flow and what each module may know.

pub(crate) mod admin;
pub(crate) mod app;
pub mod cli;
#[doc(hidden)]
pub mod clock;
#[doc(hidden)]
pub mod codec;
pub mod config;
pub(crate) mod credentials;
#[doc(hidden)]
pub mod datadog;
#[doc(hidden)]
pub mod dev;
#[doc(hidden)]
pub mod ingest;
pub(crate) mod oauth;
pub(crate) mod ops;
#[doc(hidden)]
pub mod pipeline;
pub(crate) mod proxy;
#[doc(hidden)]
pub mod queue;
pub mod secret;
pub(crate) mod shutdown;
pub mod site;
#[doc(hidden)]
pub mod store;
pub(crate) mod tags;
pub(crate) mod telemetry;
pub(crate) mod tenant;
pub(crate) mod text;
#[doc(hidden)]
pub mod traces;
#[doc(hidden)]
pub mod usage;
pub(crate) mod verify;
pub(crate) mod webhooks;
