//! The trace kinds' formats and rules, shared by ingest (the Agent's trace
//! API), delivery (the trace intake) and fakedog:
//! - [`pb`]: the intake's protobuf messages;
//! - [`msgpack`]: a lenient MessagePack reader, and writers;
//! - [`decode`]: `/v0.3`, `/v0.4` and `/v0.5` trace bodies into spans;
//! - [`normalize`]: Datadog's span rules;
//! - [`stats`]: stats (model, MessagePack, computing, the DDSketch).
//!
//! A queued trace item is one `AgentPayload.tracerPayloads` field, framed
//! ([`frame`]): a tracer payload holding one trace chunk. A payload to the
//! intake is then the items one after another plus [`agent_payload_tail`],
//! which the packer can bound exactly, like the JSON kinds.

use std::sync::LazyLock;

use prost::Message as _;

pub mod decode;
pub mod msgpack;
pub mod normalize;
pub mod pb;
pub mod stats;

/// What the relay reports as its agent version to the intakes.
pub const AGENT_VERSION: &str = concat!("ddrelay-", env!("CARGO_PKG_VERSION"));

/// One tracer payload as a queue item: the framed `tracerPayloads` field.
pub fn frame(payload: &pb::TracerPayload) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.encoded_len() + 8);
    prost::encoding::message::encode(pb::TRACER_PAYLOADS_FIELD, payload, &mut out);
    out
}

/// The `AgentPayload` fields the relay sets, encoded once: the agent
/// version, and the target and error rates Datadog's agentless sender
/// reports (60 each; docs/datadog.md "Traces").
pub fn agent_payload_tail() -> &'static [u8] {
    static TAIL: LazyLock<Vec<u8>> = LazyLock::new(|| {
        pb::AgentPayload {
            agent_version: AGENT_VERSION.into(),
            target_tps: 60.0,
            error_tps: 60.0,
            ..Default::default()
        }
        .encode_to_vec()
    });
    &TAIL
}
