//! The intakes (docs/datadog.md "Intakes"), each on its own host (any
//! other host: 404): `/api/v2/series`, `/api/v1/series`,
//! `/api/v1/distribution_points`, `/api/v1/events` and `/api/v1/check_run`
//! on `api.<domain>`, `/api/v2/logs` on `http-intake.logs.<domain>`,
//! `/api/v2/events` on `event-management-intake.<domain>` (its body rules in
//! `events_v2.rs`), `/api/v0.2/traces` and `/api/v0.2/stats` on
//! `trace.agent.<domain>` (decoded in `traces.rs`).
//!
//! Each request goes through what Datadog checks, in this order:
//! 1. `DD-API-KEY` (or the deprecated `api_key` query parameter) must be a
//!    live key of an org of this very site: 403 `{"errors":["Forbidden"]}`
//!    otherwise (logs: 401 when missing), and a key of another site's org is
//!    a violation.
//! 2. The body on the wire must fit [`Limits::max_compressed`] (413).
//! 3. `Content-Encoding` gzip, deflate (zlib), zstd/zstd1 or identity; an
//!    unknown one is 415; a known one Datadog does not document for the
//!    endpoint ([`Endpoint::accepted_encodings`]) is accepted but recorded.
//! 4. Bounded decompression to [`Limits::max_uncompressed`] (413).
//! 5. The JSON shape, required fields and enums (400 `{"errors":[..]}`;
//!    logs use `HTTPLogErrors`, `{"errors":[{"status","title","detail"}]}`),
//!    items per request and bytes per item (413; a log over 1 MB is accepted
//!    and truncated by Datadog, so fakedog accepts it and records it).
//! 6. Timestamps outside [`Endpoint::window`]: Datadog answers 202 and
//!    silently drops such points (DataDog/datadogpy#20), so fakedog drops
//!    them too, records a violation and, for v2 series, names them in
//!    `errors`.
//!
//! Everything refused for size or shape is also a violation.
//!
//! Validation is one streaming pass: the body is split into borrowed raw
//! items (`&RawValue`, one `Vec` per request) and each item is checked by
//! borrowed structs whose point and tag lists are counted, never collected.
//! Only full mode (not counting mode) parses items into `serde_json::Value`
//! to keep them; counting mode allocates nothing per item.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Extension;
use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::codec::{self, CodecError};
use crate::site::{Encoding, Endpoint, HostKind, HostRole, Window};

use super::keys::api_key;
use super::server::{Target, json, not_found};
use super::state::{Payload, Shared, State, ViolationKind, slot};

/// Bodies are read whole up to this size before the limits apply, so a
/// client a little over a limit reads a 413 rather than a reset connection.
const READ_CAP: usize = 64 << 20;

/// Event `text`: "maxLength 4000" (`EventCreateRequest`, docs/datadog.md
/// "Events v1").
const EVENT_TEXT_MAX: usize = 4000;
/// Event `aggregation_key`: "maxLength 100" (docs/datadog.md "Events v1").
const EVENT_AGGREGATION_KEY_MAX: usize = 100;
const EVENT_PRIORITIES: [&str; 2] = ["normal", "low"];
const EVENT_ALERT_TYPES: [&str; 7] = [
    "error",
    "warning",
    "info",
    "success",
    "user_update",
    "recommendation",
    "snapshot",
];
/// v1 series `type` (docs/datadog.md "Series v1").
const V1_TYPES: [&str; 4] = ["", "count", "gauge", "rate"];

/// Why a request was refused after its key was accepted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Reject {
    /// 413, over a size or count limit.
    #[error("{0}")]
    TooLarge(String),
    /// 400, malformed body or missing field.
    #[error("{0}")]
    Malformed(String),
    /// 400, a field over its documented length.
    #[error("{0}")]
    TooLong(String),
    /// 415, a `Content-Encoding` Datadog does not know.
    #[error("{0}")]
    Encoding(String),
}

impl Reject {
    fn status(&self) -> StatusCode {
        match self {
            Reject::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::Malformed(_) | Reject::TooLong(_) => StatusCode::BAD_REQUEST,
            Reject::Encoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    fn kind(&self) -> ViolationKind {
        match self {
            Reject::TooLarge(_) | Reject::TooLong(_) => ViolationKind::OverLimit,
            Reject::Malformed(_) => ViolationKind::Malformed,
            Reject::Encoding(_) => ViolationKind::Encoding,
        }
    }
}

/// Datadog's error body for `endpoint`: `{"errors":[".."]}`, or for logs
/// `{"errors":[{"status","title","detail"}]}` (docs/datadog.md "Logs").
fn error_response(endpoint: Endpoint, status: StatusCode, detail: &str) -> Response {
    let body = if endpoint == Endpoint::Logs {
        serde_json::json!({"errors": [{
            "status": status.as_u16().to_string(),
            "title": status.canonical_reason().unwrap_or("Error"),
            "detail": detail,
        }]})
    } else {
        serde_json::json!({ "errors": [detail] })
    };
    json(status, body)
}

/// What an accepted request yields.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Items accepted (series objects, log entries, events, checks).
    pub(crate) items: u64,
    /// The accepted items themselves (full mode only).
    pub(crate) values: Vec<serde_json::Value>,
    /// Accepted but against the rules (dropped points, truncated logs,
    /// undocumented encodings).
    pub(crate) notes: Vec<(ViolationKind, String)>,
    /// Events: what the 202 body echoes.
    pub(crate) event: Option<serde_json::Value>,
    /// The kind to record under, when the body decides it (stats a
    /// tracer computed).
    pub(crate) kind: Option<Endpoint>,
}

impl Outcome {
    /// Whether timestamp `t` falls outside `window`; if so, notes that
    /// `what` (e.g. `log entry 3: timestamp`) was dropped.
    fn dropped_outside(
        &mut self,
        window: &Bounds,
        t: Option<i64>,
        what: fmt::Arguments<'_>,
    ) -> bool {
        let Some(t) = t.filter(|t| !window.contains(*t)) else {
            return false;
        };
        self.notes.push((
            ViolationKind::TimestampWindow,
            format!(
                "{what} {t} outside the accepted window ({}) dropped",
                window.describe()
            ),
        ));
        true
    }

    /// Counts one accepted item, kept in full mode.
    fn accept(&mut self, raw: &RawValue, keep: bool) -> Result<(), Reject> {
        self.items += 1;
        if keep {
            self.values.push(to_value(raw)?);
        }
        Ok(())
    }
}

/// `POST` on every intake path.
pub(crate) async fn submit(
    AxState(shared): AxState<Arc<Shared>>,
    Extension(target): Extension<Target>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(endpoint) =
        Endpoint::from_path(uri.path()).or_else(|| super::traces::endpoint(uri.path()))
    else {
        return not_found();
    };
    let expected = match endpoint.host_kind() {
        HostKind::Api => HostRole::Api,
        HostKind::Logs => HostRole::Logs,
        HostKind::Trace => HostRole::Trace,
        HostKind::Events => HostRole::Events,
    };
    if target.role != expected {
        return not_found();
    }
    let path = endpoint.path();
    let Some(key) = api_key(&headers, uri.query()) else {
        return if endpoint == Endpoint::Logs {
            error_response(
                endpoint,
                StatusCode::UNAUTHORIZED,
                "Unauthorized: missing API key",
            )
        } else {
            error_response(endpoint, StatusCode::FORBIDDEN, "Forbidden")
        };
    };
    let (org, now) = {
        let mut st = shared.lock();
        (st.check_key(&target, path, &key), st.now_unix())
    };
    let Some(org) = org else {
        return error_response(endpoint, StatusCode::FORBIDDEN, "Forbidden");
    };
    let body = match axum::body::to_bytes(body, READ_CAP).await {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => {
            let r = Reject::TooLarge(format!("Payload too large: over {READ_CAP} bytes"));
            return refuse(&shared, &target, endpoint, &org, r);
        }
        // The client went away mid-body: nothing to answer that it will read.
        Err(_) => return error_response(endpoint, StatusCode::BAD_REQUEST, "Incomplete body"),
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let keep = !shared.counting;
    let mut outcome = match process(endpoint, &body, encoding, now, keep) {
        Ok(o) => o,
        Err(r) => return refuse(&shared, &target, endpoint, &org, r),
    };
    if endpoint.binary() {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        outcome.notes.extend(super::traces::content_type_note(
            endpoint,
            content_type.unwrap_or(""),
        ));
    }
    let payload = keep.then(|| Payload {
        timestamp: SystemTime::now(),
        api_key: key,
        data: body.clone(),
        encoding: encoding.to_string(),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
    });
    let dropped: Vec<String> = if endpoint == Endpoint::SeriesV2 {
        outcome
            .notes
            .iter()
            .filter(|(k, _)| *k == ViolationKind::TimestampWindow)
            .map(|(_, d)| d.clone())
            .collect()
    } else {
        Vec::new()
    };
    let event_id = shared
        .lock()
        .record_intake(&org, &target, endpoint, &mut outcome, payload);
    let body = match endpoint {
        Endpoint::SeriesV2 => serde_json::json!({ "errors": dropped }),
        Endpoint::Logs => serde_json::json!({}),
        Endpoint::Events => {
            let mut event = outcome
                .event
                .take()
                .unwrap_or_else(|| serde_json::json!({}));
            if let Some(obj) = event.as_object_mut() {
                obj.insert("id".into(), event_id.into());
                obj.insert("id_str".into(), event_id.to_string().into());
                obj.insert(
                    "url".into(),
                    format!("https://{}/event/event?id={event_id}", target.site.web_host).into(),
                );
            }
            serde_json::json!({"status": "ok", "event": event})
        }
        Endpoint::SeriesV1 | Endpoint::CheckRun | Endpoint::Distribution => {
            serde_json::json!({"status": "ok"})
        }
        Endpoint::EventsV2 => super::events_v2::answer(event_id, &target),
        // Served by `fakedog/traces.rs`; `from_path` never finds them here.
        Endpoint::Traces | Endpoint::TraceStats | Endpoint::ClientStats => serde_json::json!({}),
    };
    let status = StatusCode::from_u16(endpoint.success_status()).unwrap_or(StatusCode::ACCEPTED);
    json(status, body)
}

/// True when reading the body stopped at [`READ_CAP`].
fn is_length_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() || c.to_string().contains("length limit") {
            return true;
        }
        cause = c.source();
    }
    false
}

fn refuse(shared: &Shared, target: &Target, endpoint: Endpoint, org: &str, r: Reject) -> Response {
    shared.lock().violation(
        r.kind(),
        &target.host,
        endpoint.path(),
        Some(org),
        r.to_string(),
    );
    error_response(endpoint, r.status(), &r.to_string())
}

impl State {
    /// Records an accepted request; returns the id given to an event.
    fn record_intake(
        &mut self,
        org: &str,
        target: &Target,
        endpoint: Endpoint,
        outcome: &mut Outcome,
        payload: Option<Payload>,
    ) -> u64 {
        let endpoint = outcome.kind.unwrap_or(endpoint);
        let i = slot(endpoint);
        match self.rec.counts.get_mut(org) {
            Some(c) => c[i] += outcome.items,
            None => self.rec.counts.entry(org.to_string()).or_default()[i] += outcome.items,
        }
        match self.rec.host_counts.get_mut(&target.host) {
            Some(c) => c[i] += outcome.items,
            None => {
                self.rec.host_counts.entry(target.host.clone()).or_default()[i] += outcome.items
            }
        }
        if !outcome.values.is_empty() {
            self.rec.items.entry(org.to_string()).or_default()[i].append(&mut outcome.values);
        }
        if let Some(p) = payload {
            self.rec
                .payloads
                .entry(endpoint.path())
                .or_default()
                .push(p);
        }
        for (kind, detail) in outcome.notes.drain(..) {
            self.violation(kind, &target.host, endpoint.path(), Some(org), detail);
        }
        if endpoint.one_per_request() {
            self.next_id()
        } else {
            0
        }
    }
}

/// Validates one request body as Datadog would; `now` in Unix seconds.
pub(crate) fn process(
    endpoint: Endpoint,
    body: &[u8],
    content_encoding: &str,
    now: i64,
    keep: bool,
) -> Result<Outcome, Reject> {
    let limits = endpoint.limits();
    if body.len() > limits.max_compressed {
        return Err(Reject::TooLarge(format!(
            "Payload too large: {} bytes on the wire, the limit for {} is {}",
            body.len(),
            endpoint.path(),
            limits.max_compressed
        )));
    }
    let encoding = Encoding::from_header(content_encoding).ok_or_else(|| {
        Reject::Encoding(format!("Unsupported Content-Encoding: {content_encoding}"))
    })?;
    let mut out = Outcome::default();
    if !endpoint.accepted_encodings().contains(&encoding) {
        out.notes.push((
            ViolationKind::Encoding,
            format!(
                "Content-Encoding {content_encoding} is not documented for {}",
                endpoint.path()
            ),
        ));
    }
    let data: Cow<'_, [u8]> = match encoding {
        Encoding::Identity if body.len() <= limits.max_uncompressed => Cow::Borrowed(body),
        _ => Cow::Owned(
            codec::decompress(encoding, body, limits.max_uncompressed).map_err(|e| match e {
                CodecError::TooLarge { limit } => Reject::TooLarge(format!(
                    "Payload too large: decompressed size over {limit} bytes"
                )),
                CodecError::Corrupt { .. } | CodecError::Budget(_) => {
                    Reject::Malformed(e.to_string())
                }
            })?,
        ),
    };
    let window = Bounds::new(now, endpoint.window());
    match endpoint {
        Endpoint::SeriesV2 | Endpoint::SeriesV1 | Endpoint::Distribution => {
            series(endpoint, &data, window, keep, &mut out)?
        }
        Endpoint::EventsV2 => super::events_v2::check(&data, window.lo, keep, &mut out)?,
        Endpoint::Logs => logs(&data, window, keep, &mut out)?,
        Endpoint::Events => event(&data, window, keep, &mut out)?,
        Endpoint::CheckRun => checks(&data, window, keep, &mut out)?,
        Endpoint::Traces | Endpoint::TraceStats | Endpoint::ClientStats => {
            super::traces::check(endpoint, &data, keep, &mut out)?
        }
    }
    Ok(out)
}

/// The accepted timestamp range, in Unix seconds, both ends included.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    lo: i64,
    hi: i64,
    window: Window,
}

impl Bounds {
    fn new(now: i64, window: Window) -> Bounds {
        Bounds {
            lo: now - window.past.as_secs() as i64,
            hi: now + window.future.as_secs() as i64,
            window,
        }
    }

    fn contains(&self, t: i64) -> bool {
        (self.lo..=self.hi).contains(&t)
    }

    fn describe(&self) -> String {
        format!(
            "now-{} .. now+{}",
            humantime::format_duration(self.window.past),
            humantime::format_duration(self.window.future)
        )
    }
}

fn first_byte(data: &[u8]) -> Option<u8> {
    data.iter().copied().find(|b| !b.is_ascii_whitespace())
}

fn malformed(e: impl fmt::Display) -> Reject {
    Reject::Malformed(format!("Malformed JSON payload: {e}"))
}

/// A body that is a JSON array of items, or one item object.
fn array_or_object<'a>(data: &'a [u8], what: &str) -> Result<Vec<&'a RawValue>, Reject> {
    match first_byte(data) {
        Some(b'[') => serde_json::from_slice(data).map_err(malformed),
        Some(b'{') => Ok(vec![serde_json::from_slice(data).map_err(malformed)?]),
        _ => Err(Reject::Malformed(format!(
            "Malformed JSON payload: expected {what} (a JSON array or object)"
        ))),
    }
}

fn check_count(items: usize, endpoint: Endpoint) -> Result<(), Reject> {
    let max = endpoint.limits().max_items;
    if items > max {
        return Err(Reject::TooLarge(format!(
            "Too many items in one request: {items}, the limit for {} is {max}",
            endpoint.path()
        )));
    }
    Ok(())
}

fn is_object(raw: &RawValue) -> bool {
    first_byte(raw.get().as_bytes()) == Some(b'{')
}

fn to_value(raw: &RawValue) -> Result<serde_json::Value, Reject> {
    serde_json::from_str(raw.get()).map_err(malformed)
}

/// A JSON string, borrowed from the body unless it has escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// An array of strings, counted and type-checked, never collected.
struct Strs;

impl<'de> Deserialize<'de> for Strs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strs, A::Error> {
                while seq.next_element::<Str<'de>>()?.is_some() {}
                Ok(Strs)
            }
        }
        d.deserialize_seq(V)
    }
}

/// A point with a timestamp in seconds.
trait Timestamped {
    fn timestamp(&self) -> i64;
}

/// v2 point `{"timestamp": i64, "value": f64}` (`MetricPoint`, docs/datadog.md
/// "Series v2").
#[derive(Deserialize)]
struct PointV2 {
    timestamp: i64,
    #[allow(dead_code)]
    value: f64,
}

impl Timestamped for PointV2 {
    fn timestamp(&self) -> i64 {
        self.timestamp
    }
}

/// v1 point `[timestamp, value]`, exactly two numbers (`Point`,
/// docs/datadog.md "Series v1").
#[derive(Deserialize)]
struct PointV1(f64, #[allow(dead_code)] f64);

impl Timestamped for PointV1 {
    fn timestamp(&self) -> i64 {
        self.0 as i64
    }
}

/// A distribution point `[timestamp, [values...]]` (`DistributionPoint`,
/// docs/datadog.md "Distribution points"): a timestamp and a list of numbers.
#[derive(Deserialize)]
struct PointDist(f64, #[allow(dead_code)] Vec<f64>);

impl Timestamped for PointDist {
    fn timestamp(&self) -> i64 {
        self.0 as i64
    }
}

/// A list of points reduced to its count and timestamp range.
struct Points<P> {
    count: u64,
    min: i64,
    max: i64,
    _point: PhantomData<P>,
}

impl<'de, P: Deserialize<'de> + Timestamped> Deserialize<'de> for Points<P> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<P>(PhantomData<P>);
        impl<'de, P: Deserialize<'de> + Timestamped> Visitor<'de> for V<P> {
            type Value = Points<P>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of points")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Points<P>, A::Error> {
                let mut p = Points {
                    count: 0,
                    min: i64::MAX,
                    max: i64::MIN,
                    _point: PhantomData,
                };
                while let Some(point) = seq.next_element::<P>()? {
                    let t = point.timestamp();
                    p.count += 1;
                    p.min = p.min.min(t);
                    p.max = p.max.max(t);
                }
                Ok(p)
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

#[derive(Deserialize)]
struct SeriesTop<'a> {
    #[serde(borrow)]
    series: Option<Vec<&'a RawValue>>,
}

/// A v2 series object (`MetricSeries`, docs/datadog.md "Series v2"):
/// `metric` and `points` required, `type` 0..=3.
#[derive(Deserialize)]
struct SeriesV2<'a> {
    #[serde(borrow)]
    metric: Option<Str<'a>>,
    #[serde(rename = "type")]
    kind: Option<i64>,
    points: Option<Points<PointV2>>,
    #[allow(dead_code)]
    tags: Option<Strs>,
    #[allow(dead_code)]
    interval: Option<i64>,
}

/// A v1 series object (`Series`, docs/datadog.md "Series v1"; points `P`
/// = [`PointV1`]): `metric` and `points` required, `type` one of `""`,
/// `count`, `gauge`, `rate`. Or a distribution series
/// (`DistributionPointsSeries`, docs/datadog.md "Distribution points"; `P`
/// = [`PointDist`]): `metric` and `points` required, `type` only
/// `distribution`.
#[derive(Deserialize)]
#[serde(bound(deserialize = "P: Deserialize<'de> + Timestamped"))]
struct SeriesV1<'a, P> {
    #[serde(borrow)]
    metric: Option<Str<'a>>,
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    points: Option<Points<P>>,
    #[allow(dead_code)]
    tags: Option<Strs>,
    #[allow(dead_code)]
    #[serde(borrow)]
    host: Option<Str<'a>>,
}

/// What the series checks need of either version.
struct SeriesSummary<'a> {
    metric: Option<Str<'a>>,
    kind_ok: bool,
    count: u64,
    min: i64,
    max: i64,
}

impl<'a> SeriesSummary<'a> {
    fn of<P>(metric: Option<Str<'a>>, kind_ok: bool, points: Option<Points<P>>) -> Self {
        let (count, min, max) = points.map_or((0, 0, 0), |p| (p.count, p.min, p.max));
        SeriesSummary {
            metric,
            kind_ok,
            count,
            min,
            max,
        }
    }
}

fn summarize(endpoint: Endpoint, raw: &RawValue) -> Result<SeriesSummary<'_>, serde_json::Error> {
    Ok(match endpoint {
        Endpoint::SeriesV2 => {
            let s: SeriesV2<'_> = serde_json::from_str(raw.get())?;
            let kind_ok = s.kind.is_none_or(|k| (0..=3).contains(&k));
            SeriesSummary::of(s.metric, kind_ok, s.points)
        }
        Endpoint::Distribution => {
            let s: SeriesV1<'_, PointDist> = serde_json::from_str(raw.get())?;
            let kind_ok = s.kind.as_ref().is_none_or(|k| k.0 == "distribution");
            SeriesSummary::of(s.metric, kind_ok, s.points)
        }
        _ => {
            let s: SeriesV1<'_, PointV1> = serde_json::from_str(raw.get())?;
            let kind_ok = s
                .kind
                .as_ref()
                .is_none_or(|k| V1_TYPES.contains(&k.0.as_ref()));
            SeriesSummary::of(s.metric, kind_ok, s.points)
        }
    })
}

fn point_timestamp(endpoint: Endpoint, point: &serde_json::Value) -> Option<i64> {
    if endpoint == Endpoint::SeriesV2 {
        point.get("timestamp").and_then(serde_json::Value::as_i64)
    } else {
        point
            .get(0)
            .and_then(serde_json::Value::as_f64)
            .map(|t| t as i64)
    }
}

fn series(
    endpoint: Endpoint,
    data: &[u8],
    window: Bounds,
    keep: bool,
    out: &mut Outcome,
) -> Result<(), Reject> {
    if first_byte(data) != Some(b'{') {
        return Err(Reject::Malformed(
            "Malformed JSON payload: expected an object with a \"series\" array".into(),
        ));
    }
    let top: SeriesTop<'_> = serde_json::from_slice(data).map_err(malformed)?;
    let items = top
        .series
        .ok_or_else(|| Reject::Malformed("Payload is missing the \"series\" field".into()))?;
    check_count(items.len(), endpoint)?;
    let max_item = endpoint.limits().max_item;
    for (i, raw) in items.iter().enumerate() {
        if raw.get().len() > max_item {
            return Err(Reject::TooLarge(format!(
                "series[{i}] is {} bytes, over the {max_item}-byte limit",
                raw.get().len()
            )));
        }
        if !is_object(raw) {
            return Err(Reject::Malformed(format!("series[{i}] is not an object")));
        }
        let s =
            summarize(endpoint, raw).map_err(|e| Reject::Malformed(format!("series[{i}]: {e}")))?;
        let metric = match &s.metric {
            Some(m) if !m.0.is_empty() => m.0.as_ref(),
            _ => {
                return Err(Reject::Malformed(format!(
                    "series[{i}]: \"metric\" is required"
                )));
            }
        };
        if s.count == 0 {
            return Err(Reject::Malformed(format!(
                "series[{i}] ({metric}): \"points\" is required and must not be empty"
            )));
        }
        if !s.kind_ok {
            return Err(Reject::Malformed(format!(
                "series[{i}] ({metric}): invalid \"type\""
            )));
        }
        if window.contains(s.min) && window.contains(s.max) {
            out.items += 1;
            if keep {
                out.values.push(to_value(raw)?);
            }
            continue;
        }
        // Some points are outside the window: Datadog drops those points.
        let mut value = to_value(raw)?;
        let mut dropped = 0u64;
        if let Some(points) = value.get_mut("points").and_then(|p| p.as_array_mut()) {
            points.retain(|p| {
                let ok = point_timestamp(endpoint, p).is_some_and(|t| window.contains(t));
                dropped += u64::from(!ok);
                ok
            });
        }
        out.notes.push((
            ViolationKind::TimestampWindow,
            format!(
                "series[{i}] ({metric}): {dropped} of {} point(s) outside the accepted window ({}) dropped",
                s.count,
                window.describe()
            ),
        ));
        if dropped < s.count {
            out.items += 1;
            if keep {
                out.values.push(value);
            }
        }
    }
    Ok(())
}

/// A log entry: any object; `timestamp` (ms or s since the epoch) checked
/// when numeric. `message` is not required: the intake accepts any object.
#[derive(Deserialize)]
struct LogItem<'a> {
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
}

/// A log `timestamp` in seconds: numbers above 10^11 are milliseconds.
fn log_timestamp(raw: &RawValue) -> Option<i64> {
    let n: f64 = raw.get().parse().ok()?;
    Some(if n.abs() > 1e11 {
        (n / 1000.0) as i64
    } else {
        n as i64
    })
}

fn logs(data: &[u8], window: Bounds, keep: bool, out: &mut Outcome) -> Result<(), Reject> {
    let items = array_or_object(data, "log entries")?;
    check_count(items.len(), Endpoint::Logs)?;
    let max_item = Endpoint::Logs.limits().max_item;
    for (i, raw) in items.iter().enumerate() {
        if !is_object(raw) {
            return Err(Reject::Malformed(format!(
                "log entry {i} is not a JSON object"
            )));
        }
        let item: LogItem<'_> = serde_json::from_str(raw.get())
            .map_err(|e| Reject::Malformed(format!("log entry {i}: {e}")))?;
        if raw.get().len() > max_item {
            // "Any log exceeding 1MB is accepted and truncated by Datadog".
            out.notes.push((
                ViolationKind::OverLimit,
                format!(
                    "log entry {i} is {} bytes, over the {max_item}-byte limit (Datadog truncates it)",
                    raw.get().len()
                ),
            ));
        }
        let t = item.timestamp.and_then(log_timestamp);
        if !out.dropped_outside(&window, t, format_args!("log entry {i}: timestamp")) {
            out.accept(raw, keep)?;
        }
    }
    Ok(())
}

/// An event (`EventCreateRequest`, docs/datadog.md "Events v1"): `title`
/// and `text` required.
#[derive(Deserialize)]
struct EventItem<'a> {
    #[serde(borrow)]
    title: Option<Str<'a>>,
    #[serde(borrow)]
    text: Option<Str<'a>>,
    date_happened: Option<i64>,
    #[serde(borrow)]
    priority: Option<Str<'a>>,
    #[serde(borrow)]
    alert_type: Option<Str<'a>>,
    #[serde(borrow)]
    aggregation_key: Option<Str<'a>>,
    #[allow(dead_code)]
    #[serde(borrow)]
    host: Option<Str<'a>>,
    #[allow(dead_code)]
    tags: Option<Strs>,
}

fn event(data: &[u8], window: Bounds, keep: bool, out: &mut Outcome) -> Result<(), Reject> {
    if first_byte(data) != Some(b'{') {
        return Err(Reject::Malformed(
            "Malformed JSON payload: expected one event object".into(),
        ));
    }
    let raw: &RawValue = serde_json::from_slice(data).map_err(malformed)?;
    let e: EventItem<'_> = serde_json::from_str(raw.get()).map_err(malformed)?;
    let Some(title) = e.title else {
        return Err(Reject::Malformed("Event \"title\" is required".into()));
    };
    let Some(text) = e.text else {
        return Err(Reject::Malformed("Event \"text\" is required".into()));
    };
    let chars = text.0.chars().count();
    if chars > EVENT_TEXT_MAX {
        return Err(Reject::TooLong(format!(
            "Event \"text\" is {chars} characters, the limit is {EVENT_TEXT_MAX}"
        )));
    }
    if let Some(k) = &e.aggregation_key
        && k.0.chars().count() > EVENT_AGGREGATION_KEY_MAX
    {
        return Err(Reject::TooLong(format!(
            "Event \"aggregation_key\" is over {EVENT_AGGREGATION_KEY_MAX} characters"
        )));
    }
    if let Some(p) = &e.priority
        && !EVENT_PRIORITIES.contains(&p.0.as_ref())
    {
        return Err(Reject::Malformed(format!(
            "Event \"priority\" must be one of {EVENT_PRIORITIES:?}"
        )));
    }
    if let Some(a) = &e.alert_type
        && !EVENT_ALERT_TYPES.contains(&a.0.as_ref())
    {
        return Err(Reject::Malformed(format!(
            "Event \"alert_type\" must be one of {EVENT_ALERT_TYPES:?}"
        )));
    }
    out.event = Some(serde_json::json!({
        "title": title.0,
        "text": text.0,
        "date_happened": e.date_happened,
        "priority": e.priority.as_ref().map(|p| p.0.as_ref()),
        "alert_type": e.alert_type.as_ref().map(|a| a.0.as_ref()).unwrap_or("info"),
    }));
    if out.dropped_outside(
        &window,
        e.date_happened,
        format_args!("event date_happened"),
    ) {
        return Ok(());
    }
    out.accept(raw, keep)
}

/// A service check (`ServiceCheck`, docs/datadog.md "Service checks"):
/// `check`, `host_name`,
/// `status` (0..=3) and `tags` required.
#[derive(Deserialize)]
struct CheckItem<'a> {
    #[serde(borrow)]
    check: Option<Str<'a>>,
    #[serde(borrow)]
    host_name: Option<Str<'a>>,
    status: Option<i64>,
    tags: Option<Strs>,
    timestamp: Option<i64>,
    #[allow(dead_code)]
    #[serde(borrow)]
    message: Option<Str<'a>>,
}

fn checks(data: &[u8], window: Bounds, keep: bool, out: &mut Outcome) -> Result<(), Reject> {
    let items = array_or_object(data, "service checks")?;
    check_count(items.len(), Endpoint::CheckRun)?;
    let max_item = Endpoint::CheckRun.limits().max_item;
    for (i, raw) in items.iter().enumerate() {
        if raw.get().len() > max_item {
            return Err(Reject::TooLarge(format!(
                "service check {i} is {} bytes, over the {max_item}-byte limit",
                raw.get().len()
            )));
        }
        if !is_object(raw) {
            return Err(Reject::Malformed(format!(
                "service check {i} is not an object"
            )));
        }
        let c: CheckItem<'_> = serde_json::from_str(raw.get())
            .map_err(|e| Reject::Malformed(format!("service check {i}: {e}")))?;
        let missing =
            |field: &str| Reject::Malformed(format!("service check {i}: \"{field}\" is required"));
        if c.check.as_ref().is_none_or(|s| s.0.is_empty()) {
            return Err(missing("check"));
        }
        if c.host_name.is_none() {
            return Err(missing("host_name"));
        }
        if c.tags.is_none() {
            return Err(missing("tags"));
        }
        match c.status {
            None => return Err(missing("status")),
            Some(0..=3) => {}
            Some(s) => {
                return Err(Reject::Malformed(format!(
                    "service check {i}: status {s} is not 0, 1, 2 or 3"
                )));
            }
        }
        let t = c.timestamp;
        if !out.dropped_outside(&window, t, format_args!("service check {i}: timestamp")) {
            out.accept(raw, keep)?;
        }
    }
    Ok(())
}

/// Decodes a stored payload for fakeintake's `format=json` view.
pub(crate) fn decode_payload(
    endpoint: Endpoint,
    encoding: &str,
    data: &Bytes,
) -> serde_json::Value {
    let Some(encoding) = Encoding::from_header(encoding) else {
        return serde_json::Value::Null;
    };
    codec::decompress(encoding, data, endpoint.limits().max_uncompressed)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn run(endpoint: Endpoint, body: &str) -> Result<Outcome, Reject> {
        process(endpoint, body.as_bytes(), "", NOW, true)
    }

    #[test]
    fn series_v2_checks() {
        let ok = format!(
            r#"{{"series":[{{"metric":"a.b","type":3,"points":[{{"timestamp":{NOW},"value":1.5}}],"tags":["x:y"]}}]}}"#
        );
        let o = run(Endpoint::SeriesV2, &ok).unwrap();
        assert_eq!(o.items, 1);
        assert_eq!(o.values[0]["metric"], "a.b");
        for bad in [
            r#"{"series":[{"points":[{"timestamp":1,"value":1}]}]}"#,
            r#"{"series":[{"metric":"a","points":[]}]}"#,
            r#"{"series":[{"metric":"a","type":9,"points":[{"timestamp":1,"value":1}]}]}"#,
            r#"{"series":[{"metric":"a","points":[{"value":1}]}]}"#,
            r#"{"series":[{"metric":"a","points":[{"timestamp":1,"value":1}],"tags":[1]}]}"#,
            r#"{"nope":[]}"#,
            r#"[1]"#,
            r#"{"series":[1]}"#,
            "not json",
        ] {
            assert!(
                matches!(run(Endpoint::SeriesV2, bad), Err(Reject::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn stale_points_are_dropped_not_refused() {
        let old = NOW - 7200;
        let body = format!(
            r#"{{"series":[{{"metric":"m","points":[{{"timestamp":{old},"value":1}},{{"timestamp":{NOW},"value":2}}]}},{{"metric":"n","points":[{{"timestamp":{old},"value":1}}]}}]}}"#
        );
        let o = run(Endpoint::SeriesV2, &body).unwrap();
        assert_eq!(o.items, 1);
        assert_eq!(o.values[0]["points"].as_array().unwrap().len(), 1);
        assert_eq!(o.notes.len(), 2);
        assert!(
            o.notes
                .iter()
                .all(|(k, _)| *k == ViolationKind::TimestampWindow)
        );
    }

    #[test]
    fn series_v1_points_are_pairs() {
        let ok =
            format!(r#"{{"series":[{{"metric":"m","type":"gauge","points":[[{NOW},0.7]]}}]}}"#);
        assert_eq!(run(Endpoint::SeriesV1, &ok).unwrap().items, 1);
        let three = format!(r#"{{"series":[{{"metric":"m","points":[[{NOW},0.7,1]]}}]}}"#);
        assert!(run(Endpoint::SeriesV1, &three).is_err());
        let bad_type =
            format!(r#"{{"series":[{{"metric":"m","type":"histo","points":[[{NOW},1]]}}]}}"#);
        assert!(run(Endpoint::SeriesV1, &bad_type).is_err());
    }

    #[test]
    fn logs_accept_objects_and_arrays() {
        assert_eq!(
            run(Endpoint::Logs, r#"{"message":"one"}"#).unwrap().items,
            1
        );
        assert_eq!(
            run(
                Endpoint::Logs,
                r#"[{"message":"a"},{"message":"b","timestamp":"x"}]"#
            )
            .unwrap()
            .items,
            2
        );
        assert!(run(Endpoint::Logs, r#"["just a string"]"#).is_err());
        let old_ms = (NOW - 19 * 3600) * 1000;
        let o = run(
            Endpoint::Logs,
            &format!(r#"[{{"message":"a","timestamp":{old_ms}}}]"#),
        )
        .unwrap();
        assert_eq!((o.items, o.notes.len()), (0, 1));
        let many = format!("[{}]", vec![r#"{"message":"x"}"#; 1001].join(","));
        assert!(matches!(
            run(Endpoint::Logs, &many),
            Err(Reject::TooLarge(_))
        ));
    }

    #[test]
    fn events_and_checks() {
        let o = run(
            Endpoint::Events,
            r#"{"title":"t","text":"x","priority":"low"}"#,
        )
        .unwrap();
        assert_eq!(o.items, 1);
        assert_eq!(o.event.unwrap()["title"], "t");
        assert!(matches!(
            run(Endpoint::Events, r#"{"text":"x"}"#),
            Err(Reject::Malformed(_))
        ));
        let long = format!(r#"{{"title":"t","text":"{}"}}"#, "x".repeat(4001));
        assert!(matches!(
            run(Endpoint::Events, &long),
            Err(Reject::TooLong(_))
        ));
        let c = r#"[{"check":"app.ok","host_name":"h","status":0,"tags":[]}]"#;
        assert_eq!(run(Endpoint::CheckRun, c).unwrap().items, 1);
        let no_tags = r#"[{"check":"app.ok","host_name":"h","status":0}]"#;
        assert!(run(Endpoint::CheckRun, no_tags).is_err());
        let bad_status = r#"[{"check":"app.ok","host_name":"h","status":7,"tags":[]}]"#;
        assert!(run(Endpoint::CheckRun, bad_status).is_err());
    }

    #[tokio::test]
    async fn the_read_cap_is_recognised() {
        let e = axum::body::to_bytes(Body::from(vec![0u8; 10]), 5)
            .await
            .unwrap_err();
        assert!(is_length_limit(&e));
    }

    #[test]
    fn encodings_and_sizes() {
        let body = format!(r#"[{{"message":"a","timestamp":{NOW}}}]"#);
        for (enc, token) in [
            (Encoding::Gzip, "gzip"),
            (Encoding::Deflate, "deflate"),
            (Encoding::Zstd, "zstd"),
        ] {
            let c = codec::compress(enc, 3, body.as_bytes());
            let o = process(Endpoint::Logs, &c, token, NOW, false).unwrap();
            assert_eq!(o.items, 1, "{token}");
            assert!(o.values.is_empty());
        }
        let z = codec::compress(Encoding::Zstd, 3, body.as_bytes());
        let o = process(Endpoint::Logs, &z, "zstd", NOW, false).unwrap();
        assert_eq!(o.notes[0].0, ViolationKind::Encoding);
        assert!(matches!(
            process(Endpoint::Logs, body.as_bytes(), "br", NOW, false),
            Err(Reject::Encoding(_))
        ));
        assert!(matches!(
            process(Endpoint::Logs, b"garbage", "gzip", NOW, false),
            Err(Reject::Malformed(_))
        ));
        let big = vec![b' '; 512_001];
        assert!(matches!(
            process(Endpoint::SeriesV2, &big, "", NOW, false),
            Err(Reject::TooLarge(_))
        ));
    }
}
