//! The Agent's trace API bodies, decoded into spans: `/v0.4/traces`
//! (MessagePack, an array of traces, each an array of span maps),
//! `/v0.5/traces` (MessagePack `[strings, traces]`, each span a 12-element
//! array of string-table indexes and numbers) and `/v0.3/traces` (JSON, as
//! Datadog's "Send traces to the Agent by API" guide shows it). Layouts:
//! docs/datadog.md "Traces". Every error names the trace, the span and
//! the field.

use std::borrow::Cow;

use super::msgpack::{Malformed, Reader};
use super::pb::SpanLink;
use super::span::{Span, SpanMap, Text};

/// The traces of one request, each the spans of one trace; their strings
/// borrow the request's body (`'a`).
pub(crate) type Traces<'a> = Vec<Vec<Span<'a>>>;

/// Elements reserved ahead of decoding them: counts come from the body.
const PREALLOCATE: usize = 1024;

/// The least bytes a span that can pass the span rules takes in any of the
/// formats (ids, a start after 2000 and a duration): more spans than the
/// body's length over this are refused before they are built, so a body
/// of empty maps cannot become gigabytes of spans.
const MIN_SPAN_BYTES: usize = 20;

/// How much the strings a v0.5 body's spans resolve may add up to, as a
/// multiple of the body: each index puts a table string in its span's
/// protobuf, so without a bound a few bytes could become a megabyte many
/// times over.
const MAX_V05_EXPANSION: usize = 8;

/// Counts spans against what the body can hold.
struct SpanBudget {
    left: usize,
}

impl SpanBudget {
    fn new(body: &[u8]) -> SpanBudget {
        SpanBudget {
            left: body.len() / MIN_SPAN_BYTES + 1,
        }
    }

    fn take(&mut self, at: At) -> Result<(), Malformed> {
        if self.left == 0 {
            return Err(Malformed(format!(
                "{at}: more spans than the body can hold with ids and times ({MIN_SPAN_BYTES} bytes each at least)"
            )));
        }
        self.left -= 1;
        Ok(())
    }
}

/// Where a value is, for an error message; formatted only on error (a
/// string built per field would cost more than decoding it).
#[derive(Clone, Copy)]
struct At {
    trace: usize,
    span: usize,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "trace {}, span {}", self.trace, self.span)
    }
}

/// A field of a span (`at: name`), or an entry of one (`at: name.key`).
#[derive(Clone, Copy)]
struct Field<'a> {
    at: At,
    name: &'a str,
    key: Option<&'a str>,
}

impl<'a> Field<'a> {
    fn new(at: At, name: &'a str) -> Field<'a> {
        Field {
            at,
            name,
            key: None,
        }
    }

    fn entry(self, key: &'a str) -> Field<'a> {
        Field {
            key: Some(key),
            ..self
        }
    }
}

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.name)?;
        match self.key {
            Some(k) => write!(f, ".{k}"),
            None => Ok(()),
        }
    }
}

/// Decodes a `/v0.4/traces` body.
pub(crate) fn v04(body: &[u8]) -> Result<Traces<'_>, Malformed> {
    let mut r = Reader::new(body);
    let mut budget = SpanBudget::new(body);
    let n = r.array("body (an array of traces)")?;
    let mut traces = Vec::with_capacity(n.min(PREALLOCATE));
    for t in 0..n {
        let m = r.array(format_args!("trace {t}"))?;
        let mut spans = Vec::with_capacity(m.min(PREALLOCATE));
        for s in 0..m {
            if r.nil() {
                continue; // the agent keeps a nil span as nothing
            }
            let at = At { trace: t, span: s };
            budget.take(at)?;
            spans.push(span_v04(&mut r, at)?);
        }
        traces.push(spans);
    }
    end(&r)?;
    Ok(traces)
}

fn span_v04<'a>(r: &mut Reader<'a>, at: At) -> Result<Span<'a>, Malformed> {
    let mut span = Span::default();
    let fields = r.map(at)?;
    for _ in 0..fields {
        let key = r.str(format_args!("{at}: a field name"))?;
        let what = Field::new(at, &key);
        match &*key {
            "service" => span.service = r.str(what)?,
            "name" => span.name = r.str(what)?,
            "resource" => span.resource = r.str(what)?,
            "type" => span.r#type = r.str(what)?,
            "trace_id" => span.trace_id = r.u64(what)?,
            "span_id" => span.span_id = r.u64(what)?,
            "parent_id" => span.parent_id = r.u64(what)?,
            "start" => span.start = r.i64(what)?,
            "duration" => span.duration = r.i64(what)?,
            "error" => span.error = int32(r.i64(what)?, what)?,
            "meta" => span.meta = string_map(r, what)?,
            "metrics" => {
                let n = r.map(what)?;
                span.metrics.reserve(n);
                for _ in 0..n {
                    let k = r.str(what)?;
                    let v = r.f64(what.entry(&k))?;
                    span.metrics.insert(k, v);
                }
            }
            "meta_struct" => {
                let n = r.map(what)?;
                for _ in 0..n {
                    let k = r.str(what)?;
                    let v = r.bytes(what.entry(&k))?;
                    span.meta_struct.insert(k, Cow::Borrowed(v));
                }
            }
            "span_links" => {
                let n = r.array(what)?;
                for i in 0..n {
                    span.span_links.push(link(r, format_args!("{what}[{i}]"))?);
                }
            }
            _ => r.skip()?,
        }
    }
    Ok(span)
}

fn link(r: &mut Reader<'_>, at: std::fmt::Arguments<'_>) -> Result<SpanLink, Malformed> {
    let at = at.to_string(); // links are rare
    let mut l = SpanLink::default();
    let n = r.map(&at)?;
    for _ in 0..n {
        let key = r.str(&at)?;
        let what = format!("{at}.{key}");
        match &*key {
            "trace_id" => l.trace_id = r.u64(&what)?,
            "trace_id_high" => l.trace_id_high = r.u64(&what)?,
            "span_id" => l.span_id = r.u64(&what)?,
            "attributes" => l.attributes = links_attributes(r, &what)?,
            "tracestate" => l.tracestate = r.str(&what)?.into_owned(),
            "flags" => l.flags = r.u64(&what)? as u32,
            _ => r.skip()?,
        }
    }
    Ok(l)
}

fn string_map<'a>(r: &mut Reader<'a>, what: Field<'_>) -> Result<SpanMap<'a, Text<'a>>, Malformed> {
    let n = r.map(what)?;
    let mut m = SpanMap::default();
    m.reserve(n);
    for _ in 0..n {
        let k = r.str(what)?;
        let v = r.str(what.entry(&k))?;
        m.insert(k, v);
    }
    Ok(m)
}

fn links_attributes(
    r: &mut Reader<'_>,
    what: &str,
) -> Result<std::collections::BTreeMap<String, String>, Malformed> {
    let n = r.map(what)?;
    let mut m = std::collections::BTreeMap::new();
    for _ in 0..n {
        let k = r.str(what)?.into_owned();
        let v = r.str(format_args!("{what}.{k}"))?.into_owned();
        m.insert(k, v);
    }
    Ok(m)
}

fn int32(v: i64, what: impl std::fmt::Display) -> Result<i32, Malformed> {
    i32::try_from(v).map_err(|_| Malformed(format!("{what}: {v} does not fit a 32-bit integer")))
}

fn end(r: &Reader<'_>) -> Result<(), Malformed> {
    match r.remaining() {
        0 => Ok(()),
        n => Err(Malformed(format!("{n} bytes after the traces"))),
    }
}

/// Decodes a `/v0.5/traces` body: `[strings, traces]`, each span
/// `[service, name, resource, trace_id, span_id, parent_id, start,
/// duration, error, meta, metrics, type]` with strings as indexes.
pub(crate) fn v05<'a>(body: &'a [u8]) -> Result<Traces<'a>, Malformed> {
    let mut r = Reader::new(body);
    let top = r.array("body (an array of [strings, traces])")?;
    if top != 2 {
        return Err(Malformed(format!(
            "body: expected 2 elements [strings, traces], found {top}"
        )));
    }
    let n = r.array("the string table")?;
    let mut table = Vec::with_capacity(n.min(PREALLOCATE));
    for i in 0..n {
        table.push(r.str(format_args!("string {i}"))?);
    }
    let mut budget = SpanBudget::new(body);
    let resolved = std::cell::Cell::new(0usize);
    let at = |i: u64, what: Field<'_>| -> Result<Text<'a>, Malformed> {
        let s = table.get(i as usize).ok_or_else(|| {
            Malformed(format!(
                "{what}: string index {i} is out of the table's {} entries",
                table.len()
            ))
        })?;
        resolved.set(resolved.get() + s.len());
        if resolved.get() > MAX_V05_EXPANSION * body.len() {
            return Err(Malformed(format!(
                "{what}: the spans' strings add up to more than {MAX_V05_EXPANSION} times the body"
            )));
        }
        Ok(s.clone())
    };
    let n = r.array("traces")?;
    let mut traces = Vec::with_capacity(n.min(PREALLOCATE));
    for t in 0..n {
        let m = r.array(format_args!("trace {t}"))?;
        let mut spans = Vec::with_capacity(m.min(PREALLOCATE));
        for s in 0..m {
            let here = At { trace: t, span: s };
            budget.take(here)?;
            let fields = r.array(here)?;
            if fields != 12 {
                return Err(Malformed(format!(
                    "{here}: a span is an array of exactly 12 elements, found {fields}"
                )));
            }
            let f = |name: &'static str| Field::new(here, name);
            let mut span = Span {
                service: at(r.u64(f("service"))?, f("service"))?,
                name: at(r.u64(f("name"))?, f("name"))?,
                resource: at(r.u64(f("resource"))?, f("resource"))?,
                trace_id: r.u64(f("trace_id"))?,
                span_id: r.u64(f("span_id"))?,
                parent_id: r.u64(f("parent_id"))?,
                start: r.i64(f("start"))?,
                duration: r.i64(f("duration"))?,
                error: int32(r.i64(f("error"))?, f("error"))?,
                ..Span::default()
            };
            let meta = r.map(f("meta"))?;
            for _ in 0..meta {
                let k = at(r.u64(f("meta"))?, f("meta"))?;
                let v = at(r.u64(f("meta"))?, f("meta"))?;
                span.meta.insert(k, v);
            }
            let metrics = r.map(f("metrics"))?;
            for _ in 0..metrics {
                let k = at(r.u64(f("metrics"))?, f("metrics"))?;
                let v = r.f64(f("metrics"))?;
                span.metrics.insert(k, v);
            }
            span.r#type = at(r.u64(f("type"))?, f("type"))?;
            spans.push(span);
        }
        traces.push(spans);
    }
    end(&r)?;
    Ok(traces)
}

/// Decodes a `/v0.3/traces` body (JSON).
pub(crate) fn v03(body: &[u8]) -> Result<Traces<'static>, Malformed> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Malformed(format!("body is not valid JSON: {e}")))?;
    let Some(list) = v.as_array() else {
        return Err(Malformed(
            "body must be a JSON array of traces, each an array of spans".into(),
        ));
    };
    let mut traces = Vec::with_capacity(list.len());
    for (t, trace) in list.iter().enumerate() {
        let Some(spans) = trace.as_array() else {
            return Err(Malformed(format!("trace {t}: must be an array of spans")));
        };
        let mut out = Vec::with_capacity(spans.len());
        for (s, span) in spans.iter().enumerate() {
            out.push(span_json(span, &format!("trace {t}, span {s}"))?);
        }
        traces.push(out);
    }
    Ok(traces)
}

fn span_json(v: &serde_json::Value, at: &str) -> Result<Span<'static>, Malformed> {
    let Some(obj) = v.as_object() else {
        return Err(Malformed(format!("{at}: must be a JSON object")));
    };
    let mut span = Span::default();
    for (key, value) in obj {
        let what = format!("{at}: {key}");
        let bad = |expected: &str| Malformed(format!("{what}: expected {expected}, found {value}"));
        let string = || {
            value
                .as_str()
                .map(|s| Cow::Owned(s.to_string()))
                .ok_or_else(|| bad("a string"))
        };
        match key.as_str() {
            "service" => span.service = string()?,
            "name" => span.name = string()?,
            "resource" => span.resource = string()?,
            "type" => span.r#type = string()?,
            "trace_id" => {
                span.trace_id = value
                    .as_u64()
                    .ok_or_else(|| bad("an unsigned 64-bit integer"))?
            }
            "span_id" => {
                span.span_id = value
                    .as_u64()
                    .ok_or_else(|| bad("an unsigned 64-bit integer"))?
            }
            "parent_id" => {
                span.parent_id = value
                    .as_u64()
                    .ok_or_else(|| bad("an unsigned 64-bit integer"))?
            }
            "start" => {
                span.start = value
                    .as_i64()
                    .ok_or_else(|| bad("an integer (nanoseconds)"))?
            }
            "duration" => {
                span.duration = value
                    .as_i64()
                    .ok_or_else(|| bad("an integer (nanoseconds)"))?
            }
            "error" => {
                let e = value.as_i64().ok_or_else(|| bad("0 or 1"))?;
                span.error = int32(e, &what)?;
            }
            "meta" => {
                let Some(m) = value.as_object() else {
                    return Err(bad("an object of strings"));
                };
                for (k, v) in m {
                    let s = v.as_str().ok_or_else(|| {
                        Malformed(format!("{what}.{k}: expected a string, found {v}"))
                    })?;
                    span.meta.insert(k.clone(), Cow::Owned(s.to_string()));
                }
            }
            "metrics" => {
                let Some(m) = value.as_object() else {
                    return Err(bad("an object of numbers"));
                };
                for (k, v) in m {
                    let n = v.as_f64().ok_or_else(|| {
                        Malformed(format!("{what}.{k}: expected a number, found {v}"))
                    })?;
                    span.metrics.insert(k.clone(), n);
                }
            }
            _ => {} // unknown fields are ignored, as the agent does
        }
    }
    Ok(span)
}

#[cfg(test)]
mod tests {
    use super::super::msgpack::write;
    use super::*;

    fn v04_span(out: &mut Vec<u8>, trace: u64, span: u64) {
        write::map(out, 6);
        write::kv_str(out, "service", "web");
        write::kv_str(out, "name", "http.request");
        // Fixed-width ids as dd-trace-js writes them.
        write::str(out, "trace_id");
        rmp::encode::write_u64(out, trace).unwrap();
        write::str(out, "span_id");
        rmp::encode::write_u64(out, span).unwrap();
        write::str(out, "metrics");
        write::map(out, 2);
        write::str(out, "_sampling_priority_v1");
        write::uint(out, 1); // an integer metric, as tracers send them
        write::str(out, "_dd.measured");
        write::f64(out, 1.0);
        write::str(out, "unknown");
        write::array(out, 0);
    }

    #[test]
    fn v04_reads_what_tracers_write() {
        let mut b = Vec::new();
        write::array(&mut b, 1);
        write::array(&mut b, 2);
        v04_span(&mut b, 9, 1);
        v04_span(&mut b, 9, 2);
        let t = v04(&b).unwrap();
        assert_eq!(t[0].len(), 2);
        assert_eq!((t[0][1].trace_id, t[0][1].span_id), (9, 2));
        assert_eq!(t[0][0].metrics["_sampling_priority_v1"], 1.0);
    }

    #[test]
    fn v05_resolves_the_string_table() {
        let mut b = Vec::new();
        write::array(&mut b, 2);
        write::array(&mut b, 5);
        for s in ["", "_dd.origin", "svc", "op", "GET /"] {
            write::str(&mut b, s);
        }
        write::array(&mut b, 1);
        write::array(&mut b, 1);
        write::array(&mut b, 12);
        for v in [2, 3, 4, 7, 8, 0, 1_700_000_000_000_000_000, 5, 0] {
            write::uint(&mut b, v);
        }
        write::map(&mut b, 1);
        write::uint(&mut b, 1);
        write::uint(&mut b, 3);
        write::map(&mut b, 0);
        write::uint(&mut b, 0);
        let t = v05(&b).unwrap();
        let s = &t[0][0];
        assert_eq!(
            (&*s.service, &*s.name, &*s.resource),
            ("svc", "op", "GET /")
        );
        assert_eq!(s.meta["_dd.origin"], "op");
        let mut bad = b.clone();
        let at = bad.len() - 4;
        bad[at] = 0x0f; // an index past the table
        assert!(v05(&bad).unwrap_err().0.contains("out of the table"));
    }

    #[test]
    fn bodies_that_would_expand_are_refused_before_they_do() {
        // 100,000 empty span maps: one byte each, no room for real spans.
        let mut b = Vec::new();
        write::array(&mut b, 1);
        write::array(&mut b, 100_000);
        b.extend(std::iter::repeat_n(0x80u8, 100_000));
        assert!(
            v04(&b)
                .unwrap_err()
                .0
                .contains("more spans than the body can hold")
        );
        // v0.5: one 10 kB string that every span's fields point at.
        let mut b = Vec::new();
        write::array(&mut b, 2);
        write::array(&mut b, 1);
        write::str(&mut b, &"x".repeat(10_000));
        write::array(&mut b, 1);
        write::array(&mut b, 600);
        for _ in 0..600 {
            write::array(&mut b, 12);
            for _ in 0..3 {
                write::uint(&mut b, 0);
            }
            for v in [1u64, 1, 0, 1_700_000_000_000_000_000, 1, 0] {
                write::uint(&mut b, v);
            }
            write::map(&mut b, 0);
            write::map(&mut b, 0);
            write::uint(&mut b, 0);
        }
        assert!(
            v05(&b)
                .unwrap_err()
                .0
                .contains("more than 8 times the body")
        );
    }

    #[test]
    fn v03_names_the_trace_span_and_field() {
        let e = v03(br#"[[{"trace_id":1,"span_id":2,"start":1,"duration":1}],[{"trace_id":1,"span_id":"x"}]]"#)
            .unwrap_err();
        assert!(
            e.0.starts_with("trace 1, span 0: span_id: expected an unsigned"),
            "{e}"
        );
        let e = v03(br#"[[{"trace_id":1,"meta":{"k":3}}]]"#).unwrap_err();
        assert!(
            e.0.starts_with("trace 0, span 0: meta.k: expected a string"),
            "{e}"
        );
    }
}
