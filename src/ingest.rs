//! The Datadog-compatible ingest API: what the partner's Datadog clients
//! send to the relay, checked before anything is queued.
//!
//! For now this holds only [`validate`], the pure check and normalization
//! of request bodies; the HTTP handlers that call it (tenant lookup, body
//! decompression, status codes) will live here too. Nothing under `ingest`
//! knows compression for delivery, retries or Datadog hosts.

pub mod api;
pub mod budget;
pub mod traces;
pub mod validate;
