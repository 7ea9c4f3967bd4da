//! The Agent's trace API on `api_listen`, for Datadog's tracing libraries
//! and the "Send traces to the Agent by API" guide: `PUT`/`POST
//! /v0.3/traces` (JSON), `/v0.4/traces` and `/v0.5/traces` (MessagePack),
//! `/v0.6/stats` (stats a tracer computed) and `GET /info`. Answers are the
//! Agent's (docs/datadog.md "Traces"): `200 OK\n` for v0.3, `200`
//! `{"rate_by_service":...}` for v0.4 and v0.5 (tracers parse it), `200`
//! empty for stats; refusals are the relay's `{"errors":[...]}`.
//!
//! The tenant: `DD-Relay-Tenant`, else `DD-API-KEY`, else the span tag
//! `ddrelay.tenant` (`DD_TAGS=ddrelay.tenant:<id>` puts it on every span),
//! which must then be on every span of the request with one value. The
//! tag is the partner's routing, not the customer's data: it is removed
//! before the spans are queued.
//!
//! The tenant's tags go on every span's meta (`add_span_tags`), the span's
//! own keys winning. A request becomes, in one durable append: a record of trace items (one
//! tracer payload per trace chunk, `crate::traces`; compressed as one gzip
//! piece, `pipeline::record`, when delivery sends gzip) and, unless the
//! tracer says it computed them (`Datadog-Client-Computed-Stats`), a record
//! of the stats the trace agent would have computed for those traces.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};

use super::api::{
    Admitted, DECODE_MEMORY_WAIT, IngestError, IngestState, Named, admit_as, answer, append_error,
    busy, checked_id, content_encoding, expected_memory, read_body, tenant_of,
};
use crate::clock::now_ms;
use crate::codec;
use crate::config::QueueCompression;
use crate::pipeline::record::{self, join_binary, put_item_len};
use crate::queue::{NewRecord, Prepared};
use crate::site::{Encoding, Endpoint};
use crate::tags::Tags;
use crate::telemetry::metrics::KindOutcome;
use crate::traces::decode::{self, Traces};
use crate::traces::msgpack::{Malformed, Reader};
use crate::traces::span::{EncodeSpan as _, Span};
use crate::traces::stats::{self, ClientStats, Origin};
use crate::traces::{ChunkHead, normalize};

/// The span tag that names the tenant.
pub(crate) const TENANT_TAG: &str = "ddrelay.tenant";

/// The trace API's versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V03,
    V04,
    V05,
}

/// The trace API routes (merged into the ingest router).
pub(crate) fn routes() -> Router<IngestState> {
    let traces =
        |v: Version| move |s: State<IngestState>, h: HeaderMap, b: Body| handle(v, s, h, b);
    Router::new()
        .route(
            "/v0.3/traces",
            put(traces(Version::V03)).post(traces(Version::V03)),
        )
        .route(
            "/v0.4/traces",
            put(traces(Version::V04)).post(traces(Version::V04)),
        )
        .route(
            "/v0.5/traces",
            put(traces(Version::V05)).post(traces(Version::V05)),
        )
        .route("/v0.6/stats", put(client_stats).post(client_stats))
        .route("/info", get(info))
}

/// `GET /info`, as the Agent answers it. Tracers read `endpoints` and
/// `client_drop_p0s`: both together turn on client-side stats, and with
/// them the tracer drops unsampled traces. Client stats carry no span tag,
/// so the relay could not tell whose they are when the tenant is named by
/// `ddrelay.tenant`: it says `client_drop_p0s: false`, receives every
/// trace, and computes the stats itself. `/v0.6/stats` is still served for
/// a client that names its tenant in a header.
async fn info() -> Response {
    let body = serde_json::json!({
        "version": crate::traces::AGENT_VERSION,
        "git_commit": "",
        "endpoints": ["/v0.3/traces", "/v0.4/traces", "/v0.5/traces", "/v0.6/stats"],
        "client_drop_p0s": false,
        "span_meta_structs": true,
        "long_running_spans": false,
        "span_events": false,
        "evp_proxy_allowed_headers": [],
        "peer_tags": [],
        "config": {
            "default_env": "none",
            "max_request_bytes": 16 << 20,
        },
    });
    axum::Json(body).into_response()
}

async fn handle(
    version: Version,
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let named = Named::default();
    let result = traces(version, &state, &headers, body, &named).await;
    let ok = match version {
        Version::V03 => (StatusCode::OK, "OK\n").into_response(),
        Version::V04 | Version::V05 => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"rate_by_service":{"service:,env:":1}}"#,
        )
            .into_response(),
    };
    answer(&state, Endpoint::Traces, started, &named, result, ok)
}

async fn client_stats(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let named = Named::default();
    let result = stats_request(&state, &headers, body, &named).await;
    answer(
        &state,
        Endpoint::ClientStats,
        started,
        &named,
        result,
        StatusCode::OK.into_response(),
    )
}

/// Whether a header names the tenant (then it is admitted before the
/// body is read).
fn named_by_header(headers: &HeaderMap) -> bool {
    headers.contains_key(super::api::TENANT_HEADER) || headers.contains_key("dd-api-key")
}

async fn traces(
    version: Version,
    state: &IngestState,
    headers: &HeaderMap,
    body: Body,
    named: &Named,
) -> Result<(), IngestError> {
    let early = if named_by_header(headers) {
        let tenant = tenant_of(headers)?;
        match admit_as(state, tenant, headers, named).await {
            Ok(a) => Some(a),
            Err(refused) => return Err(refused.discarding(body)),
        }
    } else {
        None
    };
    let config = state.config.load_full();
    let wire = read_body(body, config.server.max_body).await?;
    let encoding = content_encoding(headers)?;
    let limit = config.server.max_decompressed_body as usize;
    // A tracer's own stats are trusted only when a header named the
    // tenant: its /v0.6/stats posts, which carry no span tag, are
    // refused otherwise, and the relay must compute them itself.
    let client_stats = named_by_header(headers) && truthy(headers, "datadog-client-computed-stats");
    let job = Encode {
        version,
        origin: origin(headers),
        meta: TracerMeta::from_headers(headers),
        client_stats,
        plain_len: 0,
        piece_level: piece_level(&config),
    };
    // Decoded spans take several times their MessagePack bytes: reserved
    // from the decoding memory budget like any large body (`api.rs`).
    let expected = 2 * expected_memory(encoding, wire.len(), limit);
    let mut held = state.decode_memory.hold();
    // A tenant named by a header is known before the spans are decoded:
    // its tags go on them, and they are encoded on the same thread.
    let early_tags = early.as_ref().map(|a| a.tags.clone());
    let (stage, plain, held) = tokio::task::spawn_blocking(move || {
        held.reserve(expected, DECODE_MEMORY_WAIT)
            .map_err(|over| busy(over.0))?;
        // Tracers send MessagePack uncompressed: decoded where it arrived,
        // not copied first.
        let plain = match encoding {
            Encoding::Identity if wire.len() <= limit => wire,
            _ => codec::decompress(encoding, &wire, limit)
                .map_err(|e| bad("bad_encoding", e.to_string()))?
                .into(),
        };
        let stage = job.run(&plain, early_tags)?;
        Ok::<_, IngestError>((stage, plain, held))
    })
    .await
    .map_err(|_| bad("internal", "decoding task failed".into()))??;
    let (encoded, admitted) = match stage {
        Stage::Encoded(e) => {
            drop((plain, held));
            let tagged = e.tagged.clone();
            (e, admitted(state, early, tagged, headers, named).await?)
        }
        // An empty payload (some tracers check the agent with one) names
        // no tenant and holds nothing to keep: answered as the Agent does.
        Stage::Tagged { empty: true, .. } => return Ok(()),
        Stage::Tagged {
            mut job, tagged, ..
        } => {
            let a = admitted(state, None, tagged, headers, named).await?;
            let tags = a.tags.clone();
            // Decoded again with the tenant's tags known, the body and its
            // memory held meanwhile: cheaper than keeping the spans across
            // the admission, which would copy every string out of the body.
            let encoded = tokio::task::spawn_blocking(move || {
                let _held = held;
                let (traces, tagged) = job.decode(&plain)?;
                job.encode(traces, tags, tagged)
            })
            .await
            .map_err(|_| bad("internal", "encoding task failed".into()))??;
            (encoded, a)
        }
    };
    store_traces(state, &admitted, encoded).await
}

/// A request's spans after the first blocking step: encoded when a header
/// named the tenant, else checked, and the tenant their tag names (its
/// tags go on them when they are decoded again and encoded).
enum Stage {
    Encoded(Encoded),
    Tagged {
        job: Encode,
        tagged: Option<String>,
        /// The body holds no span.
        empty: bool,
    },
}

/// The tenant the request is for: the one its headers named (a span tag
/// naming another is refused), else the one its spans' tag names.
async fn admitted(
    state: &IngestState,
    early: Option<Admitted>,
    tagged: Option<String>,
    headers: &HeaderMap,
    named: &Named,
) -> Result<Admitted, IngestError> {
    if let Some(a) = early {
        // A tag naming another tenant than the header is a mistake, not a
        // routing: refused rather than sent to the header's tenant.
        if let Some(tag) = tagged.filter(|t| *t != a.tenant) {
            return Err(bad(
                "bad_tenant",
                format!(
                    "the spans' {TENANT_TAG} {tag:?} differs from the tenant {:?} the headers name",
                    a.tenant
                ),
            ));
        }
        return Ok(a);
    }
    let tenant = tagged.ok_or_else(|| {
        bad(
            "no_tenant",
            format!("name the tenant: a DD-Relay-Tenant header, or the span tag {TENANT_TAG} on every span (DD_TAGS={TENANT_TAG}:<id>)"),
        )
    })?;
    admit_as(state, checked_id(tenant)?, headers, named).await
}

/// What turning a request's spans into queue items needs besides them.
struct Encode {
    version: Version,
    origin: Origin,
    meta: TracerMeta,
    client_stats: bool,
    /// Bytes of the decompressed body (the items' buffer is sized by it).
    plain_len: usize,
    /// Store the traces as a piece (`record::pack_piece`), compressed at
    /// this level.
    piece_level: Option<i32>,
}

/// The level to compress trace records at as pieces, when they are stored
/// so: the queue compresses records, and delivery sends traces gzipped
/// (pieces splice into gzip only). Compressing here, on the thread that
/// encoded the items, replaces the queue's LZ4 and delivery's gzip.
fn piece_level(config: &crate::config::Config) -> Option<i32> {
    (config.queue.compression == QueueCompression::Lz4
        && crate::pipeline::send::encoding_for(Endpoint::Traces, config) == Encoding::Gzip)
        .then_some(config.delivery.compression_level)
}

/// Items joined as a queue record's payload, and how many.
struct Joined {
    payload: Vec<u8>,
    count: usize,
}

/// A request's spans as queue items: the traces and the stats computed
/// for them, the spans' time range and their tenant tag. The spans
/// themselves are gone: they are decoded, checked, counted and dropped on
/// one thread (the allocator's fast path; freeing them on another thread
/// cost a third of the trace path's CPU in `ddrelay bench`).
struct Encoded {
    traces: Joined,
    /// Bytes of the trace items (usage counts these, compressed or not).
    trace_bytes: usize,
    stats: Joined,
    times: (i64, i64),
    tagged: Option<String>,
}

impl Encode {
    /// Decodes `plain` and applies the span rules; with `tenant_tags` (the
    /// tenant is known: `Some` of its tags) encodes them too.
    fn run(
        mut self,
        plain: &[u8],
        tenant_tags: Option<Option<Arc<Tags>>>,
    ) -> Result<Stage, IngestError> {
        let (traces, tagged) = self.decode(plain)?;
        match tenant_tags {
            Some(tags) => Ok(Stage::Encoded(self.encode(traces, tags, tagged)?)),
            None => Ok(Stage::Tagged {
                empty: traces.is_empty(),
                job: self,
                tagged,
            }),
        }
    }

    /// Decodes `plain`, takes the tenant tag off (returned) and applies
    /// the span rules.
    fn decode<'p>(&mut self, plain: &'p [u8]) -> Result<(Traces<'p>, Option<String>), IngestError> {
        self.plain_len = plain.len();
        let mut traces = match self.version {
            Version::V03 => decode::v03(plain),
            Version::V04 => decode::v04(plain),
            Version::V05 => decode::v05(plain),
        }
        .map_err(|Malformed(m)| bad("bad_traces", m))?;
        let tagged = take_tenant_tag(&mut traces).map_err(|Malformed(m)| bad("bad_tenant", m))?;
        normalize::normalize(&mut traces, &self.origin.lang)
            .map_err(|Malformed(m)| bad("bad_traces", m))?;
        Ok((traces, tagged))
    }

    /// Adds the tenant's tags, computes the stats and encodes the items;
    /// the spans are dropped here.
    fn encode(
        &self,
        traces: Traces<'_>,
        tags: Option<Arc<Tags>>,
        tagged: Option<String>,
    ) -> Result<Encoded, IngestError> {
        // The tags' strings are borrowed by the spans that get them.
        let mut traces = traces;
        if let Some(tags) = &tags {
            add_span_tags(&mut traces, tags);
        }
        let times = span_times(&traces, now_ms());
        // The stats first: they borrow the spans' strings.
        let stats = if self.client_stats || traces.is_empty() {
            Vec::new()
        } else {
            stats::compute(&traces, &self.origin)
        };
        let mut joined = Joined {
            payload: Vec::with_capacity(stats.iter().map(|s| s.size_hint() + 4).sum()),
            count: 0,
        };
        let mut scratch = Vec::new();
        for s in stats {
            append_stats(s, MAX_ITEM - 1024, &mut joined, &mut scratch);
        }
        // Items framed straight into the record's payload: one buffer for
        // the request, sized for the spans' MessagePack (protobuf spans
        // take a little more), not one per trace.
        let mut items = Joined {
            payload: Vec::with_capacity(self.plain_len + self.plain_len / 4),
            count: 0,
        };
        let mut lens = Vec::new();
        for trace in traces {
            self.meta.append_items(trace, &mut items, &mut lens)?;
        }
        let trace_bytes = items.payload.len();
        if let Some(piece) = self
            .piece_level
            .and_then(|level| record::pack_piece(Endpoint::Traces, level, &items.payload))
        {
            items.payload = piece;
        }
        Ok(Encoded {
            traces: items,
            trace_bytes,
            stats: joined,
            times,
            tagged,
        })
    }
}

/// The trace API's CPU work on one `/v0.4` body, on this thread, as a
/// request whose tenant a header named has it done (decode, span rules,
/// stats, items compressed as a piece at level 1): `ddrelay bench` reports
/// it beside the floor. Returns the items' bytes (0 for a body the API
/// refuses).
pub(crate) fn stage_for_bench(plain: &[u8]) -> usize {
    let job = Encode {
        version: Version::V04,
        origin: Origin::default(),
        meta: TracerMeta::from_headers(&HeaderMap::new()),
        client_stats: false,
        plain_len: 0,
        piece_level: Some(1),
    };
    match job.run(plain, Some(None)) {
        Ok(Stage::Encoded(e)) => e.traces.payload.len() + e.stats.payload.len(),
        _ => 0,
    }
}

fn bad(reason: &'static str, message: String) -> IngestError {
    IngestError::new(StatusCode::BAD_REQUEST, reason, message)
}

/// The tracer, from the headers tracers send.
fn origin(headers: &HeaderMap) -> Origin {
    let text = |name: &str| header_text(headers, name);
    Origin {
        lang: text("datadog-meta-lang"),
        tracer_version: text("datadog-meta-tracer-version"),
        top_level_computed: truthy(headers, "datadog-client-computed-top-level"),
    }
}

/// A header's text, or empty.
fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The Agent's reading of a yes/no header: anything but 0, f, false.
fn truthy(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !matches!(v.trim(), "" | "0" | "f" | "F" | "false" | "False" | "FALSE"))
}

/// Removes the tenant tag from every span; returns its value, which must
/// be the same on every span (or on none).
fn take_tenant_tag(traces: &mut Traces<'_>) -> Result<Option<String>, Malformed> {
    let mut seen: Option<String> = None;
    let mut untagged: Option<(usize, usize)> = None;
    for (t, trace) in traces.iter_mut().enumerate() {
        for (s, span) in trace.iter_mut().enumerate() {
            span.metrics.remove(TENANT_TAG);
            match (span.meta.remove(TENANT_TAG), &seen) {
                (None, _) => untagged = untagged.or(Some((t, s))),
                (Some(v), None) => seen = Some(v.into_owned()),
                (Some(v), Some(first)) if v != *first => {
                    return Err(Malformed(format!(
                        "trace {t}, span {s}: {TENANT_TAG}: {v:?} differs from {first:?} on an earlier span; one request carries one tenant's spans"
                    )));
                }
                (Some(_), Some(_)) => {}
            }
        }
    }
    match (seen, untagged) {
        (Some(tenant), Some((t, s))) => Err(Malformed(format!(
            "trace {t}, span {s}: {TENANT_TAG}: missing, while other spans carry {tenant:?}; set it on every span (DD_TAGS does)"
        ))),
        (seen, _) => Ok(seen),
    }
}

/// Adds the tenant's tags to every span's meta, where the span tags live:
/// `key:value` as `key` = `value`, unless the span has that key already
/// (its own wins, as with the other kinds). A tag without a value has no
/// place in meta (a key with an empty value would read as `key:`, which
/// is no tag) and is not added to spans. Before the items are cut to
/// size, so the spans' grown size is what is counted.
fn add_span_tags<'a>(traces: &mut Traces<'a>, tags: &'a Tags) {
    let pairs: Vec<(&str, &str)> = tags
        .as_slice()
        .iter()
        .filter_map(|t| t.split_once(':'))
        .collect();
    for span in traces.iter_mut().flatten() {
        for (k, v) in &pairs {
            if !span.meta.contains_key(k) {
                span.meta.insert(*k, (*v).into());
            }
        }
    }
}

/// Queues the traces and (unless the tracer computed them) their stats,
/// in one durable append.
async fn store_traces(
    state: &IngestState,
    admitted: &Admitted,
    encoded: Encoded,
) -> Result<(), IngestError> {
    if encoded.traces.count == 0 {
        return Ok(());
    }
    let lz4 = admitted.config.queue.compression == QueueCompression::Lz4;
    let now = now_ms();
    let items = encoded.traces.count as u64;
    // A piece is compressed already.
    let piece = record::is_ready(&encoded.traces.payload);
    let mut records = vec![record(
        admitted,
        Endpoint::Traces,
        &encoded.traces,
        encoded.times,
        now,
        lz4 && !piece,
    )?];
    if encoded.stats.count > 0 {
        records.push(record(
            admitted,
            Endpoint::TraceStats,
            &encoded.stats,
            encoded.times,
            now,
            lz4,
        )?);
    }
    let bytes = encoded.trace_bytes as u64;
    append(state, admitted, records, Endpoint::Traces, (items, bytes)).await
}

async fn append(
    state: &IngestState,
    admitted: &Admitted,
    records: Vec<Prepared>,
    endpoint: Endpoint,
    (items, bytes): (u64, u64),
) -> Result<(), IngestError> {
    state
        .queue
        .append_prepared(records)
        .await
        .map_err(|e| append_error(&admitted.tenant, e))?;
    state
        .metrics
        .ingest_items
        .get_or_create(&KindOutcome {
            kind: endpoint.name(),
            outcome: "accepted",
        })
        .inc_by(items);
    state.figures.accepted(&admitted.tenant, items);
    state.usage.count(&admitted.tenant, endpoint, |c| {
        c.accepted_items += items;
        c.accepted_bytes += bytes;
    });
    Ok(())
}

fn record(
    admitted: &Admitted,
    endpoint: Endpoint,
    items: &Joined,
    (oldest_ms, newest_ms): (i64, i64),
    now: i64,
    lz4: bool,
) -> Result<Prepared, IngestError> {
    let record = NewRecord {
        tenant: &admitted.tenant,
        generation: admitted.generation,
        stream: endpoint.code(),
        items: items.count as u32,
        created_ms: now,
        oldest_ms,
        newest_ms,
        payload: &items.payload,
    };
    Prepared::new(&record, lz4).map_err(|e| append_error(&admitted.tenant, e))
}

/// The first start and the last end of the spans, in milliseconds.
fn span_times(traces: &Traces<'_>, now: i64) -> (i64, i64) {
    let spans = traces.iter().flatten();
    let oldest = spans
        .clone()
        .map(|s| s.start / 1_000_000)
        .min()
        .unwrap_or(now);
    let newest = spans
        .map(|s| (s.start + s.duration) / 1_000_000)
        .max()
        .unwrap_or(now);
    (oldest, newest)
}

/// What a tracer payload says about its tracer, from the request.
struct TracerMeta {
    lang: String,
    lang_version: String,
    tracer_version: String,
    container_id: String,
}

/// The most a queued trace item holds: a larger trace is sent as several
/// chunks of the same trace.
const MAX_ITEM: usize = 1_000_000;

impl TracerMeta {
    fn from_headers(headers: &HeaderMap) -> TracerMeta {
        let text = |name: &str| header_text(headers, name);
        TracerMeta {
            lang: text("datadog-meta-lang"),
            lang_version: text("datadog-meta-lang-version"),
            tracer_version: text("datadog-meta-tracer-version"),
            container_id: text("datadog-container-id"),
        }
    }

    /// Appends one trace to `items`: a tracer payload with one chunk,
    /// split into several chunks when it would exceed [`MAX_ITEM`]. `lens`
    /// is scratch space, reused from trace to trace.
    fn append_items(
        &self,
        spans: Vec<Span<'_>>,
        items: &mut Joined,
        lens: &mut Vec<usize>,
    ) -> Result<(), IngestError> {
        let root = crate::traces::root(&spans);
        let meta = |k: &str| root.meta.get(k).map_or("", |v| v.as_ref());
        let head = ChunkHead {
            container_id: &self.container_id,
            language_name: &self.lang,
            language_version: &self.lang_version,
            tracer_version: &self.tracer_version,
            runtime_id: meta("runtime-id"),
            env: meta("env"),
            hostname: meta("_dd.hostname"),
            app_version: meta("version"),
            // PriorityNone (i8::MIN) when the tracer did not decide, as
            // Datadog's agentless sender does.
            priority: root
                .metrics
                .get("_sampling_priority_v1")
                .map_or(i32::from(i8::MIN), |p| *p as i32),
            origin: meta("_dd.origin"),
        };
        // Sized whole first: almost every trace fits one item, and sizing
        // span by span would cost another pass over every span.
        let size = head.size(&spans, lens);
        if size.framed() <= MAX_ITEM {
            put_item_len(&mut items.payload, size.framed());
            head.write(&mut items.payload, &spans, lens, size);
            items.count += 1;
            return Ok(());
        }
        // Room for spans once the chunk's and the payload's own fields and
        // the framing are counted.
        let room = MAX_ITEM.saturating_sub(head.size::<Span<'_>>(&[], lens).framed() + 16);
        let mut rest = &spans[..];
        while !rest.is_empty() {
            let take = fit(rest, room);
            if take == 0 {
                return Err(IngestError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!(
                        "span {} of trace {} is larger than a trace item ({MAX_ITEM} bytes) can hold",
                        rest[0].span_id, rest[0].trace_id
                    ),
                ));
            }
            let (now, later) = rest.split_at(take);
            let size = head.size(now, lens);
            put_item_len(&mut items.payload, size.framed());
            head.write(&mut items.payload, now, lens, size);
            items.count += 1;
            rest = later;
        }
        Ok(())
    }
}

/// How many leading spans fit in `budget` bytes (none, when the first
/// alone does not).
fn fit(spans: &[Span<'_>], budget: usize) -> usize {
    let mut size = 0;
    for (i, s) in spans.iter().enumerate() {
        // Tag and length of the span within the chunk: at most 6 bytes.
        size += s.encoded_len() + 6;
        if size > budget {
            return i;
        }
    }
    spans.len()
}

/// `s` in two payloads of about half its buckets each, or of half the
/// groups of its one bucket; the second is empty when `s` holds one group.
fn halves(mut s: ClientStats<'_>) -> (ClientStats<'_>, ClientStats<'_>) {
    let mut other = ClientStats {
        buckets: Vec::new(),
        ..s.clone()
    };
    if s.buckets.len() > 1 {
        other.buckets = s.buckets.split_off(s.buckets.len() / 2);
    } else if let Some(b) = s.buckets.first_mut().filter(|b| b.groups.len() > 1) {
        let rest = b.groups.split_off(b.groups.len() / 2);
        other.buckets.push(stats::Bucket {
            groups: rest,
            ..b.clone()
        });
    }
    (s, other)
}

/// Appends a client stats payload to `items` as queue items of at most
/// `max` bytes each: split by buckets, then by groups, as needed (the
/// backend adds up payloads of the same bucket). `scratch` is reused.
fn append_stats(s: ClientStats<'_>, max: usize, items: &mut Joined, scratch: &mut Vec<u8>) {
    scratch.clear();
    s.write_msgpack(scratch);
    if scratch.len() > max {
        let (a, b) = halves(s);
        // One group alone is bounded by the span rules' limits.
        if !b.buckets.is_empty() {
            append_stats(a, max, items, scratch);
            append_stats(b, max, items, scratch);
            return;
        }
    }
    put_item_len(&mut items.payload, scratch.len());
    items.payload.extend_from_slice(scratch);
    items.count += 1;
}

async fn stats_request(
    state: &IngestState,
    headers: &HeaderMap,
    body: Body,
    named: &Named,
) -> Result<(), IngestError> {
    if !named_by_header(headers) {
        return Err(bad(
            "no_tenant",
            "client stats carry no span tag: name the tenant with a DD-Relay-Tenant header".into(),
        )
        .discarding(body));
    }
    let admitted = match admit_as(state, tenant_of(headers)?, headers, named).await {
        Ok(a) => a,
        Err(refused) => return Err(refused.discarding(body)),
    };
    let wire = read_body(body, admitted.config.server.max_body).await?;
    let plain = codec::decompress(
        admitted.encoding,
        &wire,
        admitted.config.server.max_decompressed_body as usize,
    )
    .map_err(|e| bad("bad_encoding", e.to_string()))?;
    if plain.len() > MAX_ITEM {
        return Err(IngestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "a stats payload of {} bytes; at most {MAX_ITEM}",
                plain.len()
            ),
        ));
    }
    let mut r = Reader::new(&plain);
    let parsed = ClientStats::from_msgpack(&mut r).map_err(|Malformed(m)| bad("bad_stats", m))?;
    if r.remaining() != 0 {
        return Err(bad(
            "bad_stats",
            format!("{} bytes after the stats payload", r.remaining()),
        ));
    }
    let now = now_ms();
    let times = parsed
        .buckets
        .iter()
        .map(|b| (b.start / 1_000_000) as i64)
        .fold((now, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let lz4 = admitted.config.queue.compression == QueueCompression::Lz4;
    let rec = record(
        &admitted,
        Endpoint::ClientStats,
        &Joined {
            payload: join_binary(&[&plain[..]]),
            count: 1,
        },
        (times.0, times.1.max(times.0)),
        now,
        lz4,
    )?;
    let bytes = plain.len() as u64;
    append(
        state,
        &admitted,
        vec![rec],
        Endpoint::ClientStats,
        (1, bytes),
    )
    .await
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::pipeline::record::binary_ranges;

    fn span(id: u64, tenant: Option<&str>) -> Span<'static> {
        let mut s = Span {
            trace_id: 1,
            span_id: id,
            ..Span::default()
        };
        if let Some(t) = tenant {
            s.meta.insert(TENANT_TAG, t.to_string().into());
        }
        s
    }

    #[test]
    fn the_tenant_tag_must_be_on_every_span_once() {
        let mut t = vec![vec![span(1, Some("acme")), span(2, Some("acme"))]];
        assert_eq!(take_tenant_tag(&mut t).unwrap().as_deref(), Some("acme"));
        assert!(
            !t[0][0].meta.contains_key(TENANT_TAG),
            "removed before queueing"
        );
        let mut t = vec![vec![span(1, Some("acme"))], vec![span(2, Some("other"))]];
        let e = take_tenant_tag(&mut t).unwrap_err();
        assert!(e.0.starts_with("trace 1, span 0: ddrelay.tenant"), "{e}");
        let mut t = vec![vec![span(1, None), span(2, Some("acme"))]];
        assert!(
            take_tenant_tag(&mut t)
                .unwrap_err()
                .0
                .contains("trace 0, span 0")
        );
        let mut t = vec![vec![span(1, None)]];
        assert_eq!(take_tenant_tag(&mut t).unwrap(), None);
    }

    #[test]
    fn large_stats_are_split_into_items_that_fit() {
        let group = |i: usize| stats::Group {
            resource: format!("{i} {}", "r".repeat(4000)).into(),
            hits: 1,
            ..Default::default()
        };
        let s = ClientStats {
            buckets: vec![stats::Bucket {
                start: 10,
                duration: 10,
                groups: (0..1000).map(group).collect(),
            }],
            ..Default::default()
        };
        let mut joined = Joined {
            payload: Vec::new(),
            count: 0,
        };
        append_stats(s, 900_000, &mut joined, &mut Vec::new());
        let items: Vec<&[u8]> = binary_ranges(&joined.payload)
            .map(|r| &joined.payload[r])
            .collect();
        assert_eq!(items.len(), joined.count);
        assert!(items.len() >= 5, "{}", items.len());
        let mut hits = 0;
        for item in &items {
            assert!(item.len() <= 900_000);
            let mut r = Reader::new(item);
            let back = ClientStats::from_msgpack(&mut r).unwrap();
            hits += back
                .buckets
                .iter()
                .flat_map(|b| &b.groups)
                .map(|g| g.hits)
                .sum::<u64>();
        }
        assert_eq!(hits, 1000, "every group once");
    }

    #[test]
    fn a_large_trace_is_split_into_chunks_of_one_trace() {
        let meta = TracerMeta::from_headers(&HeaderMap::new());
        let spans: Vec<Span> = (1..=300)
            .map(|i| Span {
                trace_id: 5,
                span_id: i,
                resource: "r".repeat(10_000).into(),
                ..Span::default()
            })
            .collect();
        let mut joined = Joined {
            payload: Vec::new(),
            count: 0,
        };
        meta.append_items(spans, &mut joined, &mut Vec::new())
            .unwrap();
        let items: Vec<&[u8]> = binary_ranges(&joined.payload)
            .map(|r| &joined.payload[r])
            .collect();
        assert_eq!(items.len(), joined.count);
        assert!(items.len() >= 3, "{}", items.len());
        assert!(items.iter().all(|i| i.len() <= MAX_ITEM));
        // Every span once, in order, each item one trace's chunk.
        let ids: Vec<u64> = items
            .iter()
            .flat_map(|i| {
                let p = crate::traces::pb::AgentPayload::decode(*i).unwrap();
                assert_eq!(p.tracer_payloads.len(), 1);
                assert_eq!(p.tracer_payloads[0].chunks.len(), 1);
                p.tracer_payloads[0].chunks[0].spans.clone()
            })
            .map(|s| s.span_id)
            .collect();
        assert_eq!(ids, (1..=300).collect::<Vec<u64>>());
    }
}
