//! The trace intake's protobuf messages, written from Datadog's published
//! schema (DataDog/datadog-agent `pkg/proto/datadog/trace/{span,
//! tracer_payload,agent_payload}.proto`, kept in sync by DataDog/libdatadog
//! `libdd-trace-protobuf/src/pb/`) and the DDSketch the stats carry
//! (DataDog/sketches-go `ddsketch/pb/ddsketch.proto`). Field numbers and
//! types are the schema's; fields the relay never sets or reads are left
//! out (an unknown field is skipped by every protobuf reader). Derived with
//! prost, so the build needs no `protoc`. docs/datadog.md "Traces" lists
//! the sources.
//!
//! Left out on purpose: `TracerPayload.containerDebug` (11) and
//! `AgentPayload` fields 11-12 (`idxTracerPayloads`, `APMMode`): agent
//! versions disagree on field 11 of `TracerPayload`, and Datadog's own
//! agentless sender leaves them unset.

use std::collections::{BTreeMap, HashMap};

/// One span (`span.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub resource: String,
    #[prost(uint64, tag = "4")]
    pub trace_id: u64,
    #[prost(uint64, tag = "5")]
    pub span_id: u64,
    #[prost(uint64, tag = "6")]
    pub parent_id: u64,
    /// Nanoseconds since the Unix epoch.
    #[prost(int64, tag = "7")]
    pub start: i64,
    /// Nanoseconds.
    #[prost(int64, tag = "8")]
    pub duration: i64,
    #[prost(int32, tag = "9")]
    pub error: i32,
    // Ordered maps: a span's dozen tags insert and read faster than with
    // a hashed map (no hash per key), and encode in a stable order.
    #[prost(btree_map = "string, string", tag = "10")]
    pub meta: BTreeMap<String, String>,
    #[prost(btree_map = "string, double", tag = "11")]
    pub metrics: BTreeMap<String, f64>,
    #[prost(string, tag = "12")]
    pub r#type: String,
    #[prost(btree_map = "string, bytes", tag = "13")]
    pub meta_struct: BTreeMap<String, Vec<u8>>,
    #[prost(message, repeated, tag = "14")]
    pub span_links: Vec<SpanLink>,
}

/// A causal link to another span (`span.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SpanLink {
    #[prost(uint64, tag = "1")]
    pub(crate) trace_id: u64,
    #[prost(uint64, tag = "2")]
    pub(crate) trace_id_high: u64,
    #[prost(uint64, tag = "3")]
    pub(crate) span_id: u64,
    #[prost(btree_map = "string, string", tag = "4")]
    pub(crate) attributes: BTreeMap<String, String>,
    #[prost(string, tag = "5")]
    pub(crate) tracestate: String,
    #[prost(uint32, tag = "6")]
    pub(crate) flags: u32,
}

/// Spans of one trace (`tracer_payload.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TraceChunk {
    #[prost(int32, tag = "1")]
    pub(crate) priority: i32,
    #[prost(string, tag = "2")]
    pub(crate) origin: String,
    #[prost(message, repeated, tag = "3")]
    pub(crate) spans: Vec<Span>,
    #[prost(map = "string, string", tag = "4")]
    pub(crate) tags: HashMap<String, String>,
    #[prost(bool, tag = "5")]
    pub(crate) dropped_trace: bool,
}

/// What one tracer sent (`tracer_payload.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TracerPayload {
    #[prost(string, tag = "1")]
    pub(crate) container_id: String,
    #[prost(string, tag = "2")]
    pub(crate) language_name: String,
    #[prost(string, tag = "3")]
    pub(crate) language_version: String,
    #[prost(string, tag = "4")]
    pub(crate) tracer_version: String,
    #[prost(string, tag = "5")]
    pub(crate) runtime_id: String,
    #[prost(message, repeated, tag = "6")]
    pub(crate) chunks: Vec<TraceChunk>,
    #[prost(map = "string, string", tag = "7")]
    pub(crate) tags: HashMap<String, String>,
    #[prost(string, tag = "8")]
    pub(crate) env: String,
    #[prost(string, tag = "9")]
    pub(crate) hostname: String,
    #[prost(string, tag = "10")]
    pub(crate) app_version: String,
}

/// The body of `POST /api/v0.2/traces` (`agent_payload.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AgentPayload {
    #[prost(string, tag = "1")]
    pub(crate) host_name: String,
    #[prost(string, tag = "2")]
    pub(crate) env: String,
    #[prost(message, repeated, tag = "5")]
    pub(crate) tracer_payloads: Vec<TracerPayload>,
    #[prost(map = "string, string", tag = "6")]
    pub(crate) tags: HashMap<String, String>,
    #[prost(string, tag = "7")]
    pub(crate) agent_version: String,
    #[prost(double, tag = "8")]
    pub(crate) target_tps: f64,
    #[prost(double, tag = "9")]
    pub(crate) error_tps: f64,
    #[prost(bool, tag = "10")]
    pub(crate) rare_sampler_enabled: bool,
}

/// The field number of `AgentPayload.tracerPayloads`: a queued trace item
/// is one such field, framed (tag and length), so that payloads are the
/// items' concatenation (see `pipeline/batch.rs`).
pub(crate) const TRACER_PAYLOADS_FIELD: u32 = 5;

/// A latency distribution (`ddsketch.proto`), as stats carry it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DdSketch {
    #[prost(message, optional, tag = "1")]
    pub(crate) mapping: Option<IndexMapping>,
    #[prost(message, optional, tag = "2")]
    pub(crate) positive_values: Option<Store>,
    #[prost(message, optional, tag = "3")]
    pub(crate) negative_values: Option<Store>,
    #[prost(double, tag = "4")]
    pub(crate) zero_count: f64,
}

/// `IndexMapping`: bin index of `v` is `floor(ln(v) / ln(gamma) + indexOffset)`
/// (interpolation NONE, 0).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct IndexMapping {
    #[prost(double, tag = "1")]
    pub(crate) gamma: f64,
    #[prost(double, tag = "2")]
    pub(crate) index_offset: f64,
    #[prost(int32, tag = "3")]
    pub(crate) interpolation: i32,
}

/// `Store`: bin counts, sparse or contiguous.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Store {
    #[prost(map = "sint32, double", tag = "1")]
    pub(crate) bin_counts: HashMap<i32, f64>,
    #[prost(double, repeated, tag = "2")]
    pub(crate) contiguous_bin_counts: Vec<f64>,
    #[prost(sint32, tag = "3")]
    pub(crate) contiguous_bin_index_offset: i32,
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    /// A payload framed item by item (field 5, length-delimited) decodes
    /// as one `AgentPayload` holding every tracer payload.
    #[test]
    fn framed_tracer_payloads_concatenate_into_an_agent_payload() {
        let one = |id: u64| TracerPayload {
            language_name: "python".into(),
            chunks: vec![TraceChunk {
                spans: vec![Span {
                    trace_id: id,
                    span_id: id,
                    name: "op".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut body = Vec::new();
        for id in [1, 2, 3] {
            let p = one(id);
            prost::encoding::message::encode(TRACER_PAYLOADS_FIELD, &p, &mut body);
        }
        let decoded = AgentPayload::decode(body.as_slice()).unwrap();
        let ids: Vec<u64> = decoded
            .tracer_payloads
            .iter()
            .map(|t| t.chunks[0].spans[0].trace_id)
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }
}
