//! The Datadog-compatible ingest API: what the partner's Datadog clients
//! send to the relay, checked before anything is queued.
//!
//! - `api`: the Datadog-compatible endpoints of the JSON kinds (tenant
//!   lookup, bounded decompression, status codes, the durable append, usage
//!   counts);
//! - [`validate`]: the pure check and normalization of their bodies, and
//!   adding the tenant's tags and the integration's source to the items;
//! - `traces`: the Agent's trace API for tracing libraries (spans decoded
//!   and checked by [`crate::traces`], their stats computed, both appended
//!   at once);
//! - [`budget`]: the memory that decoding may hold at once;
//! - `figures`: the per-tenant refused requests and accepted rates
//!   operators see;
//! - `test_event`: the event queued for a tenant when it connects.
//!
//! A large logs request is packed at ingest into the payload delivery will
//! send (`pipeline::record`, which owns that format and its compression);
//! nothing under `ingest` knows retries or Datadog hosts.

pub(crate) mod api;
pub mod budget;
pub(crate) mod figures;
pub(crate) mod test_event;
pub(crate) mod traces;
pub mod validate;
