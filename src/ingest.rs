//! The Datadog-compatible ingest API: what the partner's Datadog clients
//! send to the relay, checked before anything is queued.
//!
//! [`validate`] is the pure check and normalization of request bodies;
//! [`api`] and [`traces`] the HTTP handlers that call it (tenant lookup,
//! body decompression, status codes); [`budget`] the decoding memory;
//! [`figures`] the per-tenant refused requests and accepted rates
//! operators see; [`test_event`] the event queued for a tenant when it
//! connects. Nothing under `ingest` knows compression for delivery,
//! retries or Datadog hosts.

pub mod api;
pub mod budget;
pub mod figures;
pub mod test_event;
pub mod traces;
pub mod validate;
