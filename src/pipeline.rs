//! The delivery pipeline's pure stages: queued items in, Datadog request
//! payloads out.
//!
//! - [`batch`]: packs a tenant's queued items (compact JSON) into payloads
//!   that satisfy the endpoint's [`crate::site::Limits`] exactly.
//! - [`encode`]: the streaming compressor that tells [`batch`] how large the
//!   compressed body can still become.
//! - [`record`]: what a queue record's payload holds (items, or one payload
//!   packed at ingest and sent as stored).
//!
//! Nothing here touches the network, tokio, the queue's storage or tenants;
//! the sender that posts the payloads will live beside these modules.

pub mod age;
pub mod background;
pub mod batch;
pub mod deadletter;
pub mod encode;
pub mod limits;
pub mod record;
pub mod retry;
pub mod send;
