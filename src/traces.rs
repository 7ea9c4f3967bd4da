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

/// A trace chunk's root, as the trace agent finds it (`GetRoot`): the span
/// without a parent, else one whose parent is not in the chunk (a partial
/// flush, a downstream service), else the last span. `spans` is not empty.
pub fn root(spans: &[pb::Span]) -> &pb::Span {
    if let Some(s) = spans.iter().find(|s| s.parent_id == 0) {
        return s;
    }
    let ids: std::collections::HashSet<u64> = spans.iter().map(|s| s.span_id).collect();
    match spans.iter().find(|s| !ids.contains(&s.parent_id)) {
        Some(s) => s,
        None => &spans[spans.len() - 1],
    }
}

/// What the relay reports as its agent version to the intakes.
pub const AGENT_VERSION: &str = concat!("ddrelay-", env!("CARGO_PKG_VERSION"));

/// One tracer payload as a queue item: the framed `tracerPayloads` field.
pub fn frame(payload: &pb::TracerPayload) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.encoded_len() + 8);
    prost::encoding::message::encode(pb::TRACER_PAYLOADS_FIELD, payload, &mut out);
    out
}

/// [`frame`] for a tracer payload (`payload`, its `chunks` empty) holding
/// one chunk (`chunk`, its `spans` empty) of `spans`, encoded by hand so
/// that each span is sized once and written once (prost's nested encoding
/// sizes every span once per level above it). It decodes as [`frame`] of
/// the assembled message; the chunk and the spans come after the other
/// fields of their message (protobuf readers take fields in any order).
pub fn frame_chunk(
    payload: &pb::TracerPayload,
    chunk: &pb::TraceChunk,
    spans: &[pb::Span],
) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    let span_lens: Vec<usize> = spans.iter().map(|s| s.encoded_len()).collect();
    let spans_len: usize = span_lens
        .iter()
        .map(|l| key_len(3) + encoded_len_varint(*l as u64) + l)
        .sum();
    let chunk_len = chunk.encoded_len() + spans_len;
    let payload_len =
        payload.encoded_len() + key_len(6) + encoded_len_varint(chunk_len as u64) + chunk_len;
    let mut out = Vec::with_capacity(payload_len + 8);
    encode_key(
        pb::TRACER_PAYLOADS_FIELD,
        WireType::LengthDelimited,
        &mut out,
    );
    encode_varint(payload_len as u64, &mut out);
    payload.encode_raw(&mut out);
    encode_key(6, WireType::LengthDelimited, &mut out);
    encode_varint(chunk_len as u64, &mut out);
    chunk.encode_raw(&mut out);
    for (span, len) in spans.iter().zip(span_lens) {
        encode_key(3, WireType::LengthDelimited, &mut out);
        encode_varint(len as u64, &mut out);
        span.encode_raw(&mut out);
    }
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

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn a_chunk_framed_by_hand_decodes_as_the_assembled_message() {
        let span = |id: u64| pb::Span {
            trace_id: 9,
            span_id: id,
            name: "op".into(),
            meta: [("k".to_string(), "v".to_string())].into(),
            metrics: [("m".to_string(), 1.5)].into(),
            ..Default::default()
        };
        let payload = pb::TracerPayload {
            language_name: "go".into(),
            env: "prod".into(),
            ..Default::default()
        };
        let chunk = pb::TraceChunk {
            priority: 1,
            origin: "lambda".into(),
            ..Default::default()
        };
        let spans = vec![span(1), span(2)];
        let mut whole = payload.clone();
        whole.chunks.push(pb::TraceChunk {
            spans: spans.clone(),
            ..chunk.clone()
        });
        let by_hand = frame_chunk(&payload, &chunk, &spans);
        assert_eq!(by_hand.len(), frame(&whole).len());
        let decoded = pb::AgentPayload::decode(by_hand.as_slice()).unwrap();
        assert_eq!(decoded.tracer_payloads, vec![whole]);
    }
}
