//! Delivery: from the durable queue to each tenant's own Datadog site.
//!
//! Synchronous stages, without I/O, clock or locks, each unit-tested:
//! - `plan`: what one take sends (items to pack, payloads stored ready,
//!   age-out, which records settle when);
//! - `items`: a take's items, as byte ranges of its records' buffers;
//! - [`batch`]: packs items (compact JSON) into payloads that satisfy the
//!   endpoint's [`crate::site::Limits`] exactly;
//! - [`encode`]: the streaming compressor that tells [`batch`] how large the
//!   compressed body can still become;
//! - [`record`]: what a queue record's payload holds (items, or one payload
//!   packed at ingest and sent as stored, or one compressed piece that
//!   delivery splices with others);
//! - `splice`: gzip payloads joined from pieces compressed apart;
//! - `retry`: the verdict on each answer and the backoff;
//! - `age`: trimming items to Datadog's acceptance window.
//!
//! The rest runs them: [`send`] (the dispatcher, the per-take loop that
//! sends and settles, isolation between tenants), `seam` (the intake and
//! the credentials as delivery sees them: scripted in tests), `limits`
//! (outbound rate limits), `deadletter` (refused payloads kept per
//! tenant) and `background` (the low-priority threads that read and pack).

pub(crate) mod age;
pub(crate) mod background;
pub mod batch;
pub(crate) mod deadletter;
pub mod encode;
pub(crate) mod items;
pub(crate) mod limits;
pub(crate) mod plan;
pub mod record;
pub(crate) mod retry;
pub(crate) mod seam;
pub mod send;
pub(crate) mod splice;
