//! The trace intake (`trace.agent.<domain>`): `POST /api/v0.2/traces`
//! takes a protobuf `AgentPayload`, `POST /api/v0.2/stats` a MessagePack
//! `StatsPayload` (docs/datadog.md "Traces"). The key, size and encoding
//! checks are the other intakes' (`intake.rs`); this decodes the body,
//! counts spans (traces) or hits (stats) per org, keeps them in full mode,
//! and records what Datadog's senders never do as violations: a body over
//! 3.2 MB, a `Content-Type` that is not the format's, a span without ids.

use prost::Message as _;

use super::intake::{Outcome, Reject};
use super::state::ViolationKind;
use crate::site::Endpoint;
use crate::traces::pb::AgentPayload;
use crate::traces::stats::{read_stats_payload, sketch_count};

/// The trace kind served at `path` on the trace host.
pub(crate) fn endpoint(path: &str) -> Option<Endpoint> {
    match path {
        "/api/v0.2/traces" => Some(Endpoint::Traces),
        "/api/v0.2/stats" => Some(Endpoint::TraceStats),
        _ => None,
    }
}

/// A note when the `Content-Type` is not the format's.
pub(crate) fn content_type_note(
    endpoint: Endpoint,
    content_type: &str,
) -> Option<(ViolationKind, String)> {
    let expected = endpoint.content_type();
    (!content_type.starts_with(expected)).then(|| {
        (
            ViolationKind::Malformed,
            format!(
                "Content-Type {content_type:?} on {}; Datadog's senders use {expected}",
                endpoint.path()
            ),
        )
    })
}

/// Checks and records one decoded body.
pub(crate) fn check(
    endpoint: Endpoint,
    data: &[u8],
    keep: bool,
    out: &mut Outcome,
) -> Result<(), Reject> {
    match endpoint {
        Endpoint::Traces => traces(data, keep, out),
        _ => stats(data, keep, out),
    }
}

fn traces(data: &[u8], keep: bool, out: &mut Outcome) -> Result<(), Reject> {
    let payload = AgentPayload::decode(data)
        .map_err(|e| Reject::Malformed(format!("not a protobuf AgentPayload: {e}")))?;
    for tp in &payload.tracer_payloads {
        for chunk in &tp.chunks {
            for span in &chunk.spans {
                out.items += 1;
                if span.trace_id == 0 || span.span_id == 0 {
                    out.notes.push((
                        ViolationKind::Malformed,
                        format!("span {:?} with a zero trace_id or span_id", span.name),
                    ));
                }
                if keep {
                    out.values.push(serde_json::json!({
                        "service": span.service, "name": span.name, "resource": span.resource,
                        "trace_id": span.trace_id, "span_id": span.span_id, "parent_id": span.parent_id,
                        "start": span.start, "duration": span.duration, "error": span.error,
                        "type": span.r#type, "meta": span.meta, "metrics": span.metrics,
                        "env": tp.env, "language": tp.language_name, "priority": chunk.priority,
                        "agent_version": payload.agent_version,
                    }));
                }
            }
        }
    }
    Ok(())
}

fn stats(data: &[u8], keep: bool, out: &mut Outcome) -> Result<(), Reject> {
    let (client_computed, payloads) = read_stats_payload(data)
        .map_err(|e| Reject::Malformed(format!("not a MessagePack StatsPayload: {e}")))?;
    if client_computed {
        out.kind = Some(Endpoint::ClientStats);
    }
    for p in &payloads {
        for bucket in &p.buckets {
            for g in &bucket.groups {
                out.items += g.hits;
                let ok = sketch_count(&g.ok_summary);
                let err = sketch_count(&g.error_summary);
                if ok.is_none() || err.is_none() {
                    out.notes.push((
                        ViolationKind::Malformed,
                        format!("stats group {:?}: a summary is not a DDSketch", g.name),
                    ));
                }
                if keep {
                    out.values.push(serde_json::json!({
                        "service": g.service, "name": g.name, "resource": g.resource,
                        "env": p.env, "hits": g.hits, "errors": g.errors, "duration": g.duration,
                        "top_level_hits": g.top_level_hits, "http_status_code": g.http_status_code,
                        "bucket_start": bucket.start, "ok_count": ok, "error_count": err,
                        "client_computed": client_computed,
                    }));
                }
            }
        }
    }
    Ok(())
}
