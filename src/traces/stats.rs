//! Trace stats: what the APM service pages are drawn from (hits, errors,
//! duration distributions per service, operation, resource and status).
//! The model of `ClientStatsPayload`, its MessagePack form (the stats
//! intake takes MessagePack with the Go field names, gzip; the tracers'
//! `/v0.6/stats` sends the same form), the stats the trace agent computes
//! for traces that arrive without them, and the DDSketch the durations go
//! in. Sources: docs/datadog.md "Traces".
//!
//! Computed per request, not in a ten-second concentrator: a request's
//! stats are stored with its traces in one durable append, so they are
//! never lost in memory and never sent without their traces. Delivery
//! batches them for `delivery.stats_max_age` (by default the other kinds'
//! age; at 10 s, the concentrator's flush period, a quiet tenant's stats
//! go in one payload per 10 s). Several payloads may cover one bucket; each
//! carries the relay's runtime id and its own sequence number, as tracers'
//! payloads do, and the backend adds them up (the usual case of many
//! tracers feeding one service; UNCONFIRMED beyond that).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message as _;

use super::decode::Traces;
use super::msgpack::{Malformed, Reader, write};
use super::pb::{DdSketch, IndexMapping, Store};
use super::span::Span;

/// Stats bucket width: the trace agent's 10 s.
pub(crate) const BUCKET_NS: u64 = 10_000_000_000;

/// One client's stats (`ClientStatsPayload`; fields the relay uses). Its
/// strings borrow what it was computed or read from (`'a`): the spans'
/// names, or a `/v0.6/stats` body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientStats<'a> {
    pub(crate) hostname: Cow<'a, str>,
    pub(crate) env: Cow<'a, str>,
    pub(crate) version: Cow<'a, str>,
    pub(crate) buckets: Vec<Bucket<'a>>,
    pub(crate) lang: Cow<'a, str>,
    pub(crate) tracer_version: Cow<'a, str>,
    pub(crate) runtime_id: Cow<'a, str>,
    pub(crate) sequence: u64,
    pub(crate) service: Cow<'a, str>,
}

/// `ClientStatsBucket`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Bucket<'a> {
    pub(crate) start: u64,
    pub(crate) duration: u64,
    pub(crate) groups: Vec<Group<'a>>,
}

/// `ClientGroupedStats` (the fields the relay computes or checks).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Group<'a> {
    pub(crate) service: Cow<'a, str>,
    pub(crate) name: Cow<'a, str>,
    pub(crate) resource: Cow<'a, str>,
    pub(crate) http_status_code: u32,
    pub r#type: Cow<'a, str>,
    pub(crate) span_kind: Cow<'a, str>,
    pub(crate) hits: u64,
    pub(crate) errors: u64,
    pub(crate) duration: u64,
    pub(crate) top_level_hits: u64,
    pub(crate) synthetics: bool,
    /// `Trilean`: 1 true, 2 false.
    pub(crate) is_trace_root: i32,
    pub(crate) ok_summary: Vec<u8>,
    pub(crate) error_summary: Vec<u8>,
}

// ---------------------------------------------------------------------------
// MessagePack

impl<'a> ClientStats<'a> {
    /// The MessagePack form, with the Go field names.
    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(self.size_hint());
        self.write_msgpack(&mut o);
        o
    }

    /// About the bytes of the MessagePack form (at least them, give or
    /// take a few per field name), so that one allocation holds it.
    pub(crate) fn size_hint(&self) -> usize {
        let group = |g: &Group<'_>| {
            g.service.len()
                + g.name.len()
                + g.resource.len()
                + g.r#type.len()
                + g.span_kind.len()
                + g.ok_summary.len()
                + g.error_summary.len()
                + 256
        };
        let buckets: usize = self
            .buckets
            .iter()
            .map(|b| 64 + b.groups.iter().map(group).sum::<usize>())
            .sum();
        buckets
            + 256
            + self.hostname.len()
            + self.env.len()
            + self.version.len()
            + self.service.len()
    }

    /// Appends the MessagePack form to `o`.
    pub(crate) fn write_msgpack(&self, o: &mut Vec<u8>) {
        write::map(o, 9);
        write::kv_str(o, "Hostname", &self.hostname);
        write::kv_str(o, "Env", &self.env);
        write::kv_str(o, "Version", &self.version);
        write::str(o, "Stats");
        write::array(o, self.buckets.len() as u32);
        for b in &self.buckets {
            write::map(o, 3);
            write::kv_uint(o, "Start", b.start);
            write::kv_uint(o, "Duration", b.duration);
            write::str(o, "Stats");
            write::array(o, b.groups.len() as u32);
            for g in &b.groups {
                g.write(o);
            }
        }
        write::kv_str(o, "Lang", &self.lang);
        write::kv_str(o, "TracerVersion", &self.tracer_version);
        write::kv_str(o, "RuntimeID", &self.runtime_id);
        write::kv_uint(o, "Sequence", self.sequence);
        write::kv_str(o, "Service", &self.service);
    }

    /// Reads a `ClientStatsPayload` (unknown keys skipped).
    pub(crate) fn from_msgpack(r: &mut Reader<'a>) -> Result<ClientStats<'a>, Malformed> {
        let mut s = ClientStats::default();
        for _ in 0..r.map("stats payload")? {
            let key = r.str("stats payload: a field name")?;
            match &*key {
                "Hostname" => s.hostname = r.str("Hostname")?,
                "Env" => s.env = r.str("Env")?,
                "Version" => s.version = r.str("Version")?,
                "Lang" => s.lang = r.str("Lang")?,
                "TracerVersion" => s.tracer_version = r.str("TracerVersion")?,
                "RuntimeID" => s.runtime_id = r.str("RuntimeID")?,
                "Sequence" => s.sequence = r.u64("Sequence")?,
                "Service" => s.service = r.str("Service")?,
                "Stats" => {
                    for i in 0..r.array("Stats")? {
                        s.buckets.push(Bucket::read(r, &format!("Stats[{i}]"))?);
                    }
                }
                _ => r.skip()?,
            }
        }
        Ok(s)
    }
}

impl<'a> Bucket<'a> {
    fn read(r: &mut Reader<'a>, at: &str) -> Result<Bucket<'a>, Malformed> {
        let mut b = Bucket::default();
        for _ in 0..r.map(at)? {
            let key = r.str(at)?;
            match &*key {
                "Start" => b.start = r.u64(format_args!("{at}.Start"))?,
                "Duration" => b.duration = r.u64(format_args!("{at}.Duration"))?,
                "Stats" => {
                    for i in 0..r.array(at)? {
                        b.groups.push(Group::read(r, &format!("{at}.Stats[{i}]"))?);
                    }
                }
                _ => r.skip()?,
            }
        }
        Ok(b)
    }
}

impl<'a> Group<'a> {
    fn write(&self, o: &mut Vec<u8>) {
        write::map(o, 14);
        write::kv_str(o, "Service", &self.service);
        write::kv_str(o, "Name", &self.name);
        write::kv_str(o, "Resource", &self.resource);
        write::kv_uint(o, "HTTPStatusCode", u64::from(self.http_status_code));
        write::kv_str(o, "Type", &self.r#type);
        write::kv_uint(o, "Hits", self.hits);
        write::kv_uint(o, "Errors", self.errors);
        write::kv_uint(o, "Duration", self.duration);
        write::str(o, "OkSummary");
        write::bin(o, &self.ok_summary);
        write::str(o, "ErrorSummary");
        write::bin(o, &self.error_summary);
        write::str(o, "Synthetics");
        write::bool(o, self.synthetics);
        write::kv_uint(o, "TopLevelHits", self.top_level_hits);
        write::kv_str(o, "SpanKind", &self.span_kind);
        write::str(o, "IsTraceRoot");
        write::sint(o, i64::from(self.is_trace_root));
    }

    fn read(r: &mut Reader<'a>, at: &str) -> Result<Group<'a>, Malformed> {
        let mut g = Group::default();
        for _ in 0..r.map(at)? {
            let key = r.str(at)?;
            let what = format!("{at}.{key}");
            match &*key {
                "Service" => g.service = r.str(&what)?,
                "Name" => g.name = r.str(&what)?,
                "Resource" => g.resource = r.str(&what)?,
                "HTTPStatusCode" => g.http_status_code = r.u64(&what)? as u32,
                "Type" => g.r#type = r.str(&what)?,
                "SpanKind" => g.span_kind = r.str(&what)?,
                "Hits" => g.hits = r.u64(&what)?,
                "Errors" => g.errors = r.u64(&what)?,
                "Duration" => g.duration = r.u64(&what)?,
                "TopLevelHits" => g.top_level_hits = r.u64(&what)?,
                "Synthetics" => g.synthetics = r.bool(&what)?,
                "IsTraceRoot" => g.is_trace_root = r.i64(&what)? as i32,
                "OkSummary" => g.ok_summary = r.bytes(&what)?.to_vec(),
                "ErrorSummary" => g.error_summary = r.bytes(&what)?.to_vec(),
                _ => r.skip()?,
            }
        }
        Ok(g)
    }
}

/// A `StatsPayload` body holding `items` (each a client payload's
/// MessagePack): what the stats intake takes.
pub(crate) fn stats_payload<'a, I>(client_computed: bool, items: I) -> Vec<u8>
where
    I: ExactSizeIterator<Item = &'a [u8]> + Clone,
{
    let len: usize = items.clone().map(<[u8]>::len).sum();
    let mut o = Vec::with_capacity(len + 128);
    write::map(&mut o, 6);
    write::kv_str(&mut o, "AgentHostname", "");
    write::kv_str(&mut o, "AgentEnv", "");
    write::str(&mut o, "Stats");
    write::array(&mut o, items.len() as u32);
    for i in items {
        o.extend_from_slice(i);
    }
    write::kv_str(&mut o, "AgentVersion", super::AGENT_VERSION);
    write::str(&mut o, "ClientComputed");
    write::bool(&mut o, client_computed);
    write::str(&mut o, "SplitPayload");
    write::bool(&mut o, false);
    o
}

/// Reads a `StatsPayload` body: (client computed, client payloads).
pub(crate) fn read_stats_payload(body: &[u8]) -> Result<(bool, Vec<ClientStats<'_>>), Malformed> {
    let mut r = Reader::new(body);
    let (mut computed, mut stats) = (false, Vec::new());
    for _ in 0..r.map("StatsPayload")? {
        let key = r.str("StatsPayload: a field name")?;
        match &*key {
            "ClientComputed" => computed = r.bool("ClientComputed")?,
            "Stats" => {
                for _ in 0..r.array("Stats")? {
                    stats.push(ClientStats::from_msgpack(&mut r)?);
                }
            }
            _ => r.skip()?,
        }
    }
    Ok((computed, stats))
}

// ---------------------------------------------------------------------------
// Computing stats, as the trace agent does

/// The relay's runtime id: a stats payload is known by it and its
/// sequence number.
static RUNTIME_ID: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().to_string());
static SEQUENCE: AtomicU64 = AtomicU64::new(1);

/// Who sent the traces (from the request's headers).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub(crate) lang: String,
    pub(crate) tracer_version: String,
    /// The tracer computed top-level flags (`_dd.top_level`) itself.
    pub(crate) top_level_computed: bool,
}

/// Aggregation of one group.
#[derive(Default)]
struct Acc {
    hits: f64,
    errors: f64,
    duration: f64,
    top_level: f64,
    ok: Sketch,
    err: Sketch,
}

type GroupKey<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, u32, bool, i32);
/// A bucket's groups: hashed (every eligible span looks its group up;
/// an ordered map compared up to five strings per level), seeded per
/// process as the standard map is.
type Groups<'a> = HashMap<GroupKey<'a>, Acc, foldhash::fast::RandomState>;
type PayloadKey<'a> = (&'a str, &'a str, &'a str, &'a str);

/// The stats of `traces`, one client payload per (env, hostname, version,
/// service of the root) as the agent keys them.
pub(crate) fn compute<'s>(traces: &'s Traces<'_>, origin: &'s Origin) -> Vec<ClientStats<'s>> {
    let mut payloads: BTreeMap<PayloadKey, BTreeMap<u64, Groups>> = BTreeMap::new();
    for trace in traces {
        if trace.is_empty() {
            continue;
        }
        let root = super::root(trace);
        let weight = match root.metrics.get("_sample_rate") {
            Some(r) if *r > 0.0 && *r <= 1.0 => 1.0 / r,
            _ => 1.0,
        };
        let meta = |k: &str| root.meta.get(k).map_or("", |v| v.as_ref());
        let env = Some(meta("env"))
            .filter(|e| !e.is_empty())
            .unwrap_or("none");
        let pkey = (
            env,
            meta("_dd.hostname"),
            meta("version"),
            root.service.as_ref(),
        );
        let synthetics = meta("_dd.origin").starts_with("synthetics");
        let ids = Parents::of(trace);
        let buckets = payloads.entry(pkey).or_default();
        for span in trace {
            let top = top_level(span, &ids, origin.top_level_computed);
            let kind = span.meta.get("span.kind").map_or("", |v| v.as_ref());
            if !eligible(span, top, kind) {
                continue;
            }
            let end = (span.start + span.duration).max(0) as u64;
            let gkey: GroupKey = (
                &span.service,
                &span.name,
                &span.resource,
                &span.r#type,
                kind,
                status_code(span),
                synthetics,
                if span.parent_id == 0 { 1 } else { 2 },
            );
            let acc = buckets
                .entry(end - end % BUCKET_NS)
                .or_default()
                .entry(gkey)
                .or_default();
            acc.hits += weight;
            acc.duration += span.duration as f64 * weight;
            if top {
                acc.top_level += weight;
            }
            if span.error != 0 {
                acc.errors += weight;
                acc.err.add(span.duration);
            } else {
                acc.ok.add(span.duration);
            }
        }
    }
    payloads
        .into_iter()
        .map(|((env, hostname, version, service), buckets)| ClientStats {
            hostname: hostname.into(),
            env: env.into(),
            version: version.into(),
            service: service.into(),
            lang: origin.lang.as_str().into(),
            tracer_version: origin.tracer_version.as_str().into(),
            runtime_id: RUNTIME_ID.as_str().into(),
            sequence: SEQUENCE.fetch_add(1, Ordering::Relaxed),
            buckets: buckets
                .into_iter()
                .map(|(start, groups)| bucket(start, groups))
                .collect(),
        })
        .collect()
}

fn bucket<'s>(start: u64, groups: Groups<'s>) -> Bucket<'s> {
    let mut groups: Vec<(GroupKey, Acc)> = groups.into_iter().collect();
    // In the order of their keys, as an ordered map would give them: the
    // same traces make the same payload.
    groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let groups: Vec<Group<'s>> = groups
        .into_iter()
        .map(
            |((service, name, resource, r#type, span_kind, code, synthetics, root), a)| Group {
                service: service.into(),
                name: name.into(),
                resource: resource.into(),
                r#type: r#type.into(),
                span_kind: span_kind.into(),
                http_status_code: code,
                synthetics,
                is_trace_root: root,
                hits: a.hits.round() as u64,
                errors: a.errors.round() as u64,
                duration: a.duration.round() as u64,
                top_level_hits: a.top_level.round() as u64,
                ok_summary: a.ok.to_proto(),
                error_summary: a.err.to_proto(),
            },
        )
        .collect();
    Bucket {
        start,
        duration: BUCKET_NS,
        groups,
    }
}

/// Top-level: marked by the tracer (`_top_level`, `_dd.top_level`) or,
/// when it did not compute them, a root, a span whose parent is not in the
/// chunk, or one whose parent is of another service.
fn top_level(span: &Span<'_>, ids: &Parents<'_, '_>, tracer_computed: bool) -> bool {
    let marked = |k: &str| span.metrics.get(k) == Some(&1.0);
    if marked("_top_level") || marked("_dd.top_level") {
        return true;
    }
    if tracer_computed {
        return false;
    }
    span.parent_id == 0
        || ids
            .get(span.parent_id)
            .is_none_or(|p| p.service != span.service)
}

/// A trace's spans by id: a scan for a small trace (most are), a map for a
/// large one.
enum Parents<'s, 'a> {
    Few(&'s [Span<'a>]),
    Many(HashMap<u64, &'s Span<'a>>),
}

impl<'s, 'a> Parents<'s, 'a> {
    fn of(trace: &'s [Span<'a>]) -> Parents<'s, 'a> {
        if trace.len() <= 32 {
            Parents::Few(trace)
        } else {
            Parents::Many(trace.iter().map(|s| (s.span_id, s)).collect())
        }
    }

    fn get(&self, id: u64) -> Option<&'s Span<'a>> {
        match self {
            Parents::Few(spans) => spans.iter().find(|s| s.span_id == id),
            Parents::Many(map) => map.get(&id).copied(),
        }
    }
}

/// Which spans count: top-level, measured, or of a kind the agent computes
/// stats for; never a partial snapshot of a long-running span.
/// `kind` is the span's `span.kind` (empty without one).
fn eligible(span: &Span<'_>, top: bool, kind: &str) -> bool {
    if span
        .metrics
        .get("_dd.partial_version")
        .is_some_and(|v| *v >= 0.0)
    {
        return false;
    }
    top || span.metrics.get("_dd.measured") == Some(&1.0)
        || ["server", "client", "producer", "consumer"]
            .iter()
            .any(|k| kind.eq_ignore_ascii_case(k))
}

fn status_code(span: &Span<'_>) -> u32 {
    if let Some(c) = span.metrics.get("http.status_code") {
        return *c as u32;
    }
    span.meta
        .get("http.status_code")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// DDSketch

/// The trace agent's latency sketch: logarithmic mapping at 1 % relative
/// accuracy (gamma = 1.01 / 0.99, offset 0, no interpolation), dense bins,
/// durations in nanoseconds with the mantissa cut to 10 bits. The bins are
/// a dense run (`counts[i]` is bin `offset + i`), as the agent's store:
/// durations of 1 ns to `i64::MAX` ns map to bins 0 to about 2,200, so the
/// run is bounded whatever the spans say.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sketch {
    counts: Vec<f64>,
    offset: i32,
    zero: f64,
}

const GAMMA: f64 = 1.01 / 0.99;

/// The agent's sketch keeps at most 2,048 bins (`maxNumBins`).
const MAX_BINS: usize = 2048;

impl Sketch {
    pub(crate) fn add(&mut self, duration_ns: i64) {
        let v = f64::from_bits((duration_ns.max(0) as f64).to_bits() & 0xffff_f800_0000_0000);
        if v <= 0.0 {
            self.zero += 1.0;
            return;
        }
        let index = (v.ln() / GAMMA.ln()).floor() as i32;
        if self.counts.is_empty() {
            self.offset = index;
        } else if index < self.offset {
            let grow = (self.offset - index) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0.0, grow));
            self.offset = index;
        }
        let at = (index - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0.0);
        }
        self.counts[at] += 1.0;
    }

    /// The protobuf `DDSketch` bytes the stats carry.
    pub(crate) fn to_proto(&self) -> Vec<u8> {
        static EMPTY: LazyLock<Vec<u8>> = LazyLock::new(|| Sketch::default().encode());
        if self.counts.is_empty() && self.zero == 0.0 {
            return EMPTY.clone();
        }
        self.encode()
    }

    fn encode(&self) -> Vec<u8> {
        let positive = if self.counts.is_empty() {
            Store::default()
        } else {
            // At most MAX_BINS bins, the lowest collapsed into the lowest
            // kept, as the agent's collapsing store does.
            let cut = self.counts.len().saturating_sub(MAX_BINS);
            let mut counts = self.counts[cut..].to_vec();
            counts[0] += self.counts[..cut].iter().sum::<f64>();
            Store {
                contiguous_bin_counts: counts,
                contiguous_bin_index_offset: self.offset + cut as i32,
                ..Store::default()
            }
        };
        DdSketch {
            mapping: Some(IndexMapping {
                gamma: GAMMA,
                index_offset: 0.0,
                interpolation: 0,
            }),
            positive_values: Some(positive),
            negative_values: Some(Store::default()),
            zero_count: self.zero,
        }
        .encode_to_vec()
    }
}

/// Total count in a `DDSketch` (for checks and fakedog).
pub(crate) fn sketch_count(bytes: &[u8]) -> Option<f64> {
    let s = DdSketch::decode(bytes).ok()?;
    let store = |s: &Option<Store>| {
        s.as_ref().map_or(0.0, |s| {
            s.contiguous_bin_counts.iter().sum::<f64>() + s.bin_counts.values().sum::<f64>()
        })
    };
    Some(s.zero_count + store(&s.positive_values) + store(&s.negative_values))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_750_000_000_000_000_000;

    fn span(id: u64, parent: u64, service: &str, error: i32, duration: i64) -> Span<'static> {
        Span {
            trace_id: 7,
            span_id: id,
            parent_id: parent,
            service: service.to_string().into(),
            name: "op".into(),
            resource: "GET /".into(),
            start: T0,
            duration,
            error,
            ..Span::default()
        }
    }

    #[test]
    fn top_level_spans_are_counted_per_group_and_bucket() {
        let mut root = span(1, 0, "web", 0, 2_000_000);
        root.meta.insert("env", "prod".into());
        root.metrics.insert("http.status_code", 200.0);
        let trace = vec![
            root,
            span(2, 1, "web", 0, 1_000), // same service, not top-level: skipped
            span(3, 1, "db", 1, 500_000), // another service: top-level, an error
        ];
        let (traces, origin) = (vec![trace], Origin::default());
        let stats = compute(&traces, &origin);
        assert_eq!(stats.len(), 1);
        let p = &stats[0];
        assert_eq!((&*p.env, &*p.service), ("prod", "web"));
        assert_eq!(p.buckets.len(), 1);
        assert_eq!(p.buckets[0].start % BUCKET_NS, 0);
        let groups = &p.buckets[0].groups;
        assert_eq!(groups.len(), 2, "{groups:?}");
        let web = groups.iter().find(|g| g.service == "web").unwrap();
        assert_eq!(
            (
                web.hits,
                web.errors,
                web.top_level_hits,
                web.http_status_code
            ),
            (1, 0, 1, 200)
        );
        assert_eq!(web.is_trace_root, 1);
        let db = groups.iter().find(|g| g.service == "db").unwrap();
        assert_eq!((db.hits, db.errors, db.duration), (1, 1, 500_000));
        assert_eq!(sketch_count(&db.error_summary), Some(1.0));
        assert_eq!(sketch_count(&db.ok_summary), Some(0.0));
    }

    #[test]
    fn a_sample_rate_weights_the_counts() {
        let mut root = span(1, 0, "web", 0, 10);
        root.metrics.insert("_sample_rate", 0.25);
        let (traces, origin) = (vec![vec![root]], Origin::default());
        let stats = compute(&traces, &origin);
        assert_eq!(stats[0].buckets[0].groups[0].hits, 4);
    }

    #[test]
    fn msgpack_round_trip_through_a_stats_payload() {
        let (traces, origin) = (vec![vec![span(1, 0, "web", 0, 10)]], Origin::default());
        let stats = compute(&traces, &origin);
        let item = stats[0].to_msgpack();
        let body = stats_payload(false, [&item[..], &item[..]].into_iter());
        let (computed, read) = read_stats_payload(&body).unwrap();
        assert!(!computed);
        assert_eq!(read, vec![stats[0].clone(), stats[0].clone()]);
    }

    #[test]
    fn the_sketch_has_one_percent_accuracy() {
        let mut s = Sketch::default();
        for d in [1_000, 1_000_000, 0] {
            s.add(d);
        }
        let pb = DdSketch::decode(s.to_proto().as_slice()).unwrap();
        assert_eq!(pb.zero_count, 1.0);
        let store = pb.positive_values.unwrap();
        let lo = store.contiguous_bin_index_offset;
        // The lowest bin holds 1,000 ns within 1 %.
        let value = GAMMA.powi(lo) * (1.0 + GAMMA) / 2.0;
        assert!((value - 1000.0).abs() / 1000.0 < 0.02, "{value}");
        assert_eq!(store.contiguous_bin_counts.iter().sum::<f64>(), 2.0);
        // 1 ns beside 1e18 ns: collapsed to 2,048 bins, no count lost.
        let mut wide = Sketch::default();
        wide.add(1);
        wide.add(1_000_000_000_000_000_000);
        let pb = DdSketch::decode(wide.to_proto().as_slice()).unwrap();
        let store = pb.positive_values.unwrap();
        assert_eq!(store.contiguous_bin_counts.len(), 2048);
        assert_eq!(store.contiguous_bin_counts.iter().sum::<f64>(), 2.0);
    }

    #[test]
    fn the_sketch_is_the_same_whatever_order_durations_come_in() {
        let durations = [5_000, 1, 900, i64::MAX, 5_000, 0, 77, 1_000_000_007];
        let sketch = |order: &mut dyn Iterator<Item = &i64>| {
            let mut s = Sketch::default();
            order.for_each(|d| s.add(*d));
            s.to_proto()
        };
        let forward = sketch(&mut durations.iter());
        assert_eq!(sketch(&mut durations.iter().rev()), forward);
        let mut sorted = durations;
        sorted.sort_unstable();
        assert_eq!(sketch(&mut sorted.iter()), forward);
        assert_eq!(sketch(&mut sorted.iter().rev()), forward);
        assert_eq!(sketch_count(&forward), Some(durations.len() as f64));
    }
}
