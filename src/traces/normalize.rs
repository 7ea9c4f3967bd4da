//! Datadog's span rules, as the trace agent applies them before it sends
//! (docs/datadog.md "Traces": `normalizer.go`, `truncator.go`,
//! `normalize.go`).
//!
//! What the agent would drop is refused here with a `400` that names the
//! trace, the span and the field, so the client learns of it: a zero
//! `trace_id` or `span_id`, a span of another trace in the same trace, a
//! negative or overflowing duration. A `start` before the year 2000 is
//! refused too (the agent replaces it by "now", hiding a unit mistake: a
//! start in seconds or milliseconds). What the agent accepts and rewrites
//! is rewritten the same way and counted: service and name normalised and
//! cut to 100 bytes, an empty resource set to the name, resource cut to
//! 5,000 bytes, type to 100, meta keys and metric keys to 200 and meta
//! values to 25,000 (with `...`), an invalid `http.status_code` removed.

use std::borrow::Cow;

use super::decode::Traces;
use super::msgpack::Malformed;
use super::span::{Span, SpanMap, Text};
use crate::text::clip as truncate;

const MAX_SERVICE: usize = 100;
const MAX_NAME: usize = 100;
const MAX_RESOURCE: usize = 5000;
const MAX_TYPE: usize = 100;
const MAX_META_KEY: usize = 200;
const MAX_META_VALUE: usize = 25_000;
const MAX_TAG: usize = 200;
/// 2000-01-01T00:00:00Z in nanoseconds.
const YEAR_2000_NS: i64 = 946_684_800_000_000_000;
const DEFAULT_NAME: &str = "unnamed_operation";

/// Applies the rules to every span; empty traces are left out. Returns how
/// many fields were rewritten.
pub(crate) fn normalize(traces: &mut Traces<'_>, lang: &str) -> Result<u64, Malformed> {
    traces.retain(|t| !t.is_empty());
    let mut rewritten = 0;
    for (t, trace) in traces.iter_mut().enumerate() {
        let trace_id = trace[0].trace_id;
        for (s, span) in trace.iter_mut().enumerate() {
            let at = |field: &str, why: String| {
                Malformed(format!("trace {t}, span {s}: {field}: {why}"))
            };
            if span.trace_id == 0 {
                return Err(at("trace_id", "is 0; Datadog drops such a trace".into()));
            }
            if span.span_id == 0 {
                return Err(at("span_id", "is 0; Datadog drops such a trace".into()));
            }
            if span.trace_id != trace_id {
                return Err(at(
                    "trace_id",
                    format!(
                        "{} differs from the trace's first span ({trace_id}): each trace holds the spans of one trace",
                        span.trace_id
                    ),
                ));
            }
            check_times(span).map_err(|why| at(why.0, why.1))?;
            rewritten += rewrite(span, lang);
        }
    }
    Ok(rewritten)
}

fn check_times(span: &Span<'_>) -> Result<(), (&'static str, String)> {
    if span.start < YEAR_2000_NS {
        return Err((
            "start",
            format!(
                "{} is before the year 2000 in nanoseconds since the Unix epoch (seconds or milliseconds?)",
                span.start
            ),
        ));
    }
    if span.duration < 0 {
        return Err(("duration", format!("{} is negative", span.duration)));
    }
    if span.start.checked_add(span.duration).is_none() {
        return Err(("duration", format!("start + {} overflows", span.duration)));
    }
    Ok(())
}

/// The agent's rewrites; returns how many fields changed.
fn rewrite(span: &mut Span<'_>, lang: &str) -> u64 {
    let mut n = 0;
    let mut set = |field: &mut Text<'_>, new: String| {
        if **field != *new {
            *field = Cow::Owned(new);
            n += 1;
        }
    };
    // Most spans are already normal: checked without allocating.
    if !is_normal_service(&span.service) {
        let new_service = service(&span.service, lang);
        set(&mut span.service, new_service);
    }
    if !is_normal_name(&span.name) {
        let new_name = name(&span.name);
        set(&mut span.name, new_name);
    }
    if span.resource.is_empty() {
        if !span.name.is_empty() {
            span.resource = span.name.clone();
            n += 1;
        }
    } else if span.resource.len() > MAX_RESOURCE {
        cut_to(&mut span.resource, MAX_RESOURCE);
        n += 1;
    }
    if span.r#type.len() > MAX_TYPE {
        cut_to(&mut span.r#type, MAX_TYPE);
        n += 1;
    }
    if span.parent_id == span.trace_id && span.parent_id == span.span_id {
        span.parent_id = 0;
        n += 1;
    }
    if span
        .meta
        .get("http.status_code")
        .is_some_and(|c| !c.parse::<u64>().is_ok_and(|c| (100..600).contains(&c)))
    {
        span.meta.remove("http.status_code");
        n += 1;
    }
    n + long_tags(span)
}

/// Cuts `t` to at most `max` bytes, at a character's boundary.
fn cut_to(t: &mut Text<'_>, max: usize) {
    let len = truncate(t, max).len();
    match t {
        Cow::Borrowed(s) => *s = &s[..len],
        Cow::Owned(s) => s.truncate(len),
    }
}

/// Meta keys and values and metric keys over their limits, cut with `...`.
fn long_tags(span: &mut Span<'_>) -> u64 {
    let long_meta = span
        .meta
        .iter()
        .any(|(k, v)| k.len() > MAX_META_KEY || v.len() > MAX_META_VALUE);
    let long_metric = span.metrics.keys().any(|k| k.len() > MAX_META_KEY);
    if !long_meta && !long_metric {
        return 0;
    }
    let mut n = 0;
    fn cut<'a>(s: Text<'a>, max: usize, n: &mut u64) -> Text<'a> {
        if s.len() > max {
            *n += 1;
            Cow::Owned(format!("{}...", truncate(&s, max)))
        } else {
            s
        }
    }
    // Rebuilt entry by entry: two keys cut to the same text are one key,
    // the later value in the map's order kept, as a map collected would
    // (the agent, iterating a Go map, keeps either).
    span.meta = SpanMap::from_iter(
        span.meta
            .take()
            .into_iter()
            .map(|(k, v)| (cut(k, MAX_META_KEY, &mut n), cut(v, MAX_META_VALUE, &mut n))),
    );
    span.metrics = SpanMap::from_iter(
        span.metrics
            .take()
            .into_iter()
            .map(|(k, v)| (cut(k, MAX_META_KEY, &mut n), v)),
    );
    n
}

/// Whether [`service`] would leave `s` as it is (ASCII fast path).
fn is_normal_service(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SERVICE
        && s.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b':' | b'.' | b'/' | b'-' | b'_')
        })
}

/// Whether [`name`] would leave `s` as it is (ASCII fast path).
fn is_normal_name(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > MAX_NAME || !b[0].is_ascii_alphabetic() || s.ends_with('_') {
        return false;
    }
    // One pass: allowed bytes, and no `__`, `_.` or `._`.
    let mut prev = b[0];
    b[1..].iter().all(|&c| {
        let ok = (c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_'))
            && !matches!((prev, c), (b'_', b'_' | b'.') | (b'.', b'_'));
        prev = c;
        ok
    })
}

/// The agent's `NormalizeService`.
pub(crate) fn service(s: &str, lang: &str) -> String {
    let fallback = || {
        if lang.is_empty() {
            "unnamed-service".to_string()
        } else {
            format!("unnamed-{lang}-service")
        }
    };
    if s.is_empty() {
        return fallback();
    }
    let v = tag_value(truncate(s, MAX_SERVICE));
    if v.is_empty() { fallback() } else { v }
}

/// The agent's `NormalizeTagValue`: lower case; letters, digits and
/// `: . / - _` kept; each run of anything else one `_`, none at the end;
/// at most 200 characters.
pub(crate) fn tag_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_underscore = false;
    for c in s.chars().take(MAX_TAG) {
        if c.is_alphanumeric() || matches!(c, ':' | '.' | '/' | '-' | '_') {
            if pending_underscore && !out.is_empty() {
                out.push('_');
            }
            pending_underscore = false;
            out.extend(c.to_lowercase());
        } else {
            pending_underscore = true;
        }
    }
    out
}

/// The agent's `NormalizeName`: leading non-letters skipped; ASCII letters
/// and digits kept; `.` kept (replacing a `_` before it); any other run one
/// `_`; no `_` at the end; no letter at all gives `unnamed_operation`.
pub(crate) fn name(s: &str) -> String {
    let s = truncate(s, MAX_NAME);
    let Some(first) = s.find(|c: char| c.is_ascii_alphabetic()) else {
        return DEFAULT_NAME.to_string();
    };
    let mut out = String::with_capacity(s.len());
    for c in s[first..].chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if c == '.' {
            if out.ends_with('_') {
                out.pop();
            }
            out.push('.');
        } else if !out.ends_with('_') && !out.ends_with('.') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000_000_000_000;

    fn span(trace: u64, id: u64) -> Span<'static> {
        Span {
            trace_id: trace,
            span_id: id,
            start: NOW,
            duration: 5,
            service: "Web Store".into(),
            name: "http request!".into(),
            ..Span::default()
        }
    }

    #[test]
    fn what_the_agent_rewrites_is_rewritten_and_counted() {
        let mut traces = vec![vec![span(1, 1)], vec![]];
        traces[0][0].meta.insert("http.status_code", "999".into());
        traces[0][0].meta.insert("k".repeat(300), "v".into());
        traces[0][0].meta.insert("k".repeat(301), "w".into());
        let n = normalize(&mut traces, "python").unwrap();
        assert_eq!(traces.len(), 1, "the empty trace is left out");
        let s = &traces[0][0];
        assert_eq!(s.service, "web_store");
        assert_eq!(s.name, "http_request");
        assert_eq!(s.resource, "http_request", "an empty resource is the name");
        assert!(!s.meta.contains_key("http.status_code"));
        // Both long keys cut to the same key: one entry, the later value.
        let cut = format!("{}...", "k".repeat(200));
        assert_eq!(s.meta.get(&cut).map(|v| v.as_ref()), Some("w"));
        assert_eq!(s.meta.keys().count(), 1);
        assert_eq!(n, 6);
        assert_eq!(service("", "python"), "unnamed-python-service");
        assert_eq!(name("0_a__b_.c"), "a_b.c");
        assert_eq!(name("!!!"), "unnamed_operation");
        for s in [
            "web",
            "web-store",
            "a.b_c",
            "Web",
            "a__b",
            "a_.b",
            "_a",
            "a b",
            "",
        ] {
            if is_normal_service(s) {
                assert_eq!(service(s, ""), s, "{s}");
            }
            if is_normal_name(s) {
                assert_eq!(name(s), s, "{s}");
            }
        }
        assert!(is_normal_service("web-store") && is_normal_name("http.request"));
    }

    /// The one-pass check says what the plain reading of the rules says,
    /// for every string of up to five characters over the ones that matter.
    #[test]
    fn the_name_fast_path_is_the_rules_read_plainly() {
        let plain = |s: &str| {
            let b = s.as_bytes();
            !b.is_empty()
                && b.len() <= MAX_NAME
                && b[0].is_ascii_alphabetic()
                && !s.ends_with('_')
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_'))
                && !s.contains("__")
                && !s.contains("_.")
                && !s.contains("._")
        };
        let alphabet = ["a", "Z", "1", "_", ".", " ", "é"];
        let mut level = vec![String::new()];
        let mut strings = level.clone();
        for _ in 0..5 {
            level = level
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            strings.extend(level.iter().cloned());
        }
        assert!(strings.len() > 10_000, "{}", strings.len());
        for s in &strings {
            assert_eq!(is_normal_name(s), plain(s), "{s:?}");
        }
    }

    #[test]
    fn what_the_agent_drops_is_refused_by_name() {
        type Break = fn(&mut Vec<Span<'static>>);
        let cases: [(Break, &str); 5] = [
            (|t| t[1].trace_id = 0, "trace 0, span 1: trace_id: is 0"),
            (|t| t[0].span_id = 0, "trace 0, span 0: span_id: is 0"),
            (
                |t| t[1].trace_id = 2,
                "trace 0, span 1: trace_id: 2 differs",
            ),
            (
                |t| t[1].start = 1_750_000_000,
                "trace 0, span 1: start: 1750000000 is before the year 2000",
            ),
            (
                |t| t[0].duration = -1,
                "trace 0, span 0: duration: -1 is negative",
            ),
        ];
        for (break_it, expected) in cases {
            let mut trace = vec![span(1, 1), span(1, 2)];
            break_it(&mut trace);
            let e = normalize(&mut vec![trace], "").unwrap_err();
            assert!(e.0.starts_with(expected), "{e} / {expected}");
        }
    }
}
