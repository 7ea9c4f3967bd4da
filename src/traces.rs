//! The trace kinds' formats and rules, shared by ingest (the Agent's trace
//! API), delivery (the trace intake) and fakedog:
//! - [`pb`]: the intake's protobuf messages;
//! - `msgpack`: a lenient MessagePack reader, and writers;
//! - `decode`: `/v0.3`, `/v0.4` and `/v0.5` trace bodies into spans;
//! - `normalize`: Datadog's span rules;
//! - `span`: the span as the trace path holds it (borrowing the request's
//!   body) and its protobuf encoding;
//! - [`stats`]: stats (model, MessagePack, computing, the DDSketch).
//!
//! A queued trace item is one `AgentPayload.tracerPayloads` field, framed
//! (`frame`): a tracer payload holding one trace chunk. A payload to the
//! intake is then the items one after another plus `agent_payload_tail`,
//! which the packer can bound exactly, like the JSON kinds.

use std::sync::LazyLock;

use prost::Message as _;

use span::EncodeSpan;

pub(crate) mod decode;
pub(crate) mod msgpack;
pub(crate) mod normalize;
pub mod pb;
pub(crate) mod span;
pub mod stats;

/// A trace chunk's root, as the trace agent finds it (`GetRoot`): the span
/// without a parent, else one whose parent is not in the chunk (a partial
/// flush, a downstream service), else the last span. `spans` is not empty.
pub(crate) fn root<'s, 'a>(spans: &'s [span::Span<'a>]) -> &'s span::Span<'a> {
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
pub(crate) const AGENT_VERSION: &str = concat!("ddrelay-", env!("CARGO_PKG_VERSION"));

/// One tracer payload as a queue item: the framed `tracerPayloads` field.
pub(crate) fn frame(payload: &pb::TracerPayload) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.encoded_len() + 8);
    prost::encoding::message::encode(pb::TRACER_PAYLOADS_FIELD, payload, &mut out);
    out
}

/// [`frame`] for a tracer payload (`payload`, its `chunks` empty) holding
/// one chunk (`chunk`, its `spans` empty) of `spans`. It decodes as
/// [`frame`] of the assembled message ([`ChunkHead::write`]).
pub(crate) fn frame_chunk<S: EncodeSpan>(
    payload: &pb::TracerPayload,
    chunk: &pb::TraceChunk,
    spans: &[S],
) -> Vec<u8> {
    let head = ChunkHead {
        container_id: &payload.container_id,
        language_name: &payload.language_name,
        language_version: &payload.language_version,
        tracer_version: &payload.tracer_version,
        runtime_id: &payload.runtime_id,
        env: &payload.env,
        hostname: &payload.hostname,
        app_version: &payload.app_version,
        priority: chunk.priority,
        origin: &chunk.origin,
    };
    let mut lens = Vec::new();
    let size = head.size(spans, &mut lens);
    let mut out = Vec::with_capacity(size.framed());
    head.write(&mut out, spans, &lens, size);
    out
}

/// The fields of a tracer payload holding one trace chunk, borrowed (the
/// payload's `tags` and the chunk's `tags` and `droppedTrace` are never
/// set by the relay): a queue item is framed from them and the spans
/// without building the messages.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ChunkHead<'a> {
    pub(crate) container_id: &'a str,
    pub(crate) language_name: &'a str,
    pub(crate) language_version: &'a str,
    pub(crate) tracer_version: &'a str,
    pub(crate) runtime_id: &'a str,
    pub(crate) env: &'a str,
    pub(crate) hostname: &'a str,
    pub(crate) app_version: &'a str,
    pub(crate) priority: i32,
    pub(crate) origin: &'a str,
}

/// The sizes [`ChunkHead::write`] needs, from [`ChunkHead::size`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkSize {
    payload: usize,
    chunk: usize,
}

impl ChunkSize {
    /// Bytes of the framed `tracerPayloads` field.
    pub(crate) fn framed(&self) -> usize {
        use prost::encoding::{encoded_len_varint, key_len};
        key_len(pb::TRACER_PAYLOADS_FIELD) + encoded_len_varint(self.payload as u64) + self.payload
    }
}

/// A string field's bytes (none when empty, as proto3 leaves defaults out).
fn str_len(tag: u32, v: &str) -> usize {
    use prost::encoding::{encoded_len_varint, key_len};
    if v.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(v.len() as u64) + v.len()
    }
}

fn put_str(out: &mut Vec<u8>, tag: u32, v: &str) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    if !v.is_empty() {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(v.len() as u64, out);
        out.extend_from_slice(v.as_bytes());
    }
}

impl ChunkHead<'_> {
    /// The payload's own fields in tag order, the chunk (6) left out.
    fn payload_fields(&self) -> [(u32, &str); 8] {
        [
            (1, self.container_id),
            (2, self.language_name),
            (3, self.language_version),
            (4, self.tracer_version),
            (5, self.runtime_id),
            (8, self.env),
            (9, self.hostname),
            (10, self.app_version),
        ]
    }

    /// Sizes the framed item; `lens` gets each span's encoded length (each
    /// span is sized once: prost's nested encoding sizes every span once
    /// per level above it).
    pub(crate) fn size<S: EncodeSpan>(&self, spans: &[S], lens: &mut Vec<usize>) -> ChunkSize {
        use prost::encoding::{encoded_len_varint, key_len};
        lens.clear();
        lens.extend(spans.iter().map(|s| s.encoded_len()));
        let spans_len: usize = lens
            .iter()
            .map(|l| key_len(3) + encoded_len_varint(*l as u64) + l)
            .sum();
        let priority = if self.priority == 0 {
            0
        } else {
            key_len(1) + encoded_len_varint(i64::from(self.priority) as u64)
        };
        let chunk = priority + str_len(2, self.origin) + spans_len;
        let fields: usize = self
            .payload_fields()
            .iter()
            .map(|(t, v)| str_len(*t, v))
            .sum();
        let payload = fields + key_len(6) + encoded_len_varint(chunk as u64) + chunk;
        ChunkSize { payload, chunk }
    }

    /// Appends the framed item ([`ChunkSize::framed`] bytes) to `out`: the
    /// payload's fields, then the chunk's, then the spans, each after the
    /// other fields of its message (protobuf readers take fields in any
    /// order), so it decodes as [`frame`] of the assembled message.
    pub(crate) fn write<S: EncodeSpan>(
        &self,
        out: &mut Vec<u8>,
        spans: &[S],
        lens: &[usize],
        size: ChunkSize,
    ) {
        use prost::encoding::{WireType, encode_key, encode_varint};
        encode_key(pb::TRACER_PAYLOADS_FIELD, WireType::LengthDelimited, out);
        encode_varint(size.payload as u64, out);
        for (tag, v) in self.payload_fields() {
            put_str(out, tag, v);
        }
        encode_key(6, WireType::LengthDelimited, out);
        encode_varint(size.chunk as u64, out);
        if self.priority != 0 {
            encode_key(1, WireType::Varint, out);
            // int32 is sign-extended to 64 bits on the wire.
            encode_varint(i64::from(self.priority) as u64, out);
        }
        put_str(out, 2, self.origin);
        for (span, len) in spans.iter().zip(lens) {
            encode_key(3, WireType::LengthDelimited, out);
            encode_varint(*len as u64, out);
            span.encode_raw(out);
        }
    }
}

/// The `AgentPayload` fields the relay sets, encoded once: the agent
/// version, and the target and error rates Datadog's agentless sender
/// reports (60 each; docs/datadog.md "Traces").
pub(crate) fn agent_payload_tail() -> &'static [u8] {
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
        let full = pb::TracerPayload {
            container_id: "c".into(),
            language_name: "go".into(),
            language_version: "1.22".into(),
            tracer_version: "v2".into(),
            runtime_id: "r".into(),
            env: "prod".into(),
            hostname: "h".into(),
            app_version: "1.0".into(),
            ..Default::default()
        };
        let sparse = pb::TracerPayload {
            language_name: "go".into(),
            env: "prod".into(),
            ..Default::default()
        };
        for (payload, priority, origin) in
            [(&full, 1, "lambda"), (&sparse, -128, ""), (&sparse, 0, "x")]
        {
            let chunk = pb::TraceChunk {
                priority,
                origin: origin.into(),
                ..Default::default()
            };
            let spans = vec![span(1), span(2)];
            let mut whole = payload.clone();
            whole.chunks.push(pb::TraceChunk {
                spans: spans.clone(),
                ..chunk.clone()
            });
            let by_hand = frame_chunk(payload, &chunk, &spans);
            assert_eq!(by_hand.len(), frame(&whole).len());
            let decoded = pb::AgentPayload::decode(by_hand.as_slice()).unwrap();
            assert_eq!(decoded.tracer_payloads, vec![whole]);
        }
    }
}
