//! Framing and compaction: one pass over the body.
//!
//! The framer walks the body's top level (`{"series":[…]}`, `[…]` or one
//! object) and copies each item into the payload without insignificant
//! whitespace, recording where it went. It validates only the top level; each
//! item is then parsed in full by `check_item`, which refuses anything that is
//! not exactly one JSON value. Whitespace is dropped only next to a structural
//! byte (`{}[],:"`), so two tokens are never glued together: the compacted
//! item is valid JSON exactly when the original was, with the same meaning.

use std::ops::Range;

use serde::de::IgnoredAny;

use super::Invalid;
use super::visit::Key;
use crate::site::Endpoint;

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_structural(b: u8) -> bool {
    matches!(b, b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"')
}

pub(super) fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_ws(s[i]) {
        i += 1;
    }
    i
}

/// The index just past the closing quote of the string whose contents start
/// at `i` (or `s.len()` if it is unterminated).
pub(super) fn string_end(s: &[u8], mut i: usize) -> usize {
    // Most JSON strings (keys, tags, enum values) are short: a plain loop
    // over the first bytes beats the set-up cost of a vectorized search.
    const SHORT: usize = 24;
    let short_end = s.len().min(i + SHORT);
    while i < short_end {
        match s[i] {
            b'"' => return i + 1,
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    loop {
        match s.get(i..).and_then(|t| memchr::memchr2(b'"', b'\\', t)) {
            Some(k) if s[i + k] == b'\\' => i += k + 2,
            Some(k) => return i + k + 1,
            None => return s.len(),
        }
    }
}

/// The deepest nesting of arrays and objects accepted in a body: serde_json's
/// own recursion limit, so whatever the relay accepts, every consumer that
/// parses items with serde_json (the pipeline's window trimming, fakedog,
/// Datadog's clients) can parse too. Datadog documents "nesting < 10
/// levels" for log attributes (docs/datadog.md "Logs") and flattens deeper ones, so
/// this refuses nothing Datadog would use. serde_json alone does not bound
/// it here: values skipped as `IgnoredAny` are not depth-limited (found by
/// `tests/hostile.rs`).
pub(crate) const MAX_DEPTH: usize = 128;

/// Copies the value that starts at `start` (not whitespace) into `out`
/// without insignificant whitespace; returns the index just past it (equal
/// to `start` if there is no value there), or an error if it nests deeper
/// than [`MAX_DEPTH`] (counting the levels around it, `outer`). Not a
/// validator: the copy is parsed afterwards. Every index it slices at is at
/// an ASCII byte or the end, so slicing `src` never splits a character.
pub(super) fn compact_value(
    src: &str,
    start: usize,
    out: &mut String,
    outer: usize,
) -> Result<usize, Invalid> {
    let s = src.as_bytes();
    let mut depth = 0usize;
    let mut run = start;
    let mut i = start;
    while i < s.len() {
        match s[i] {
            b'"' => {
                i = string_end(s, i + 1);
                if depth == 0 {
                    break;
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if outer + depth > MAX_DEPTH {
                    return Err(Invalid::Body(format!(
                        "body nests arrays and objects deeper than {MAX_DEPTH} levels (at byte {i})"
                    )));
                }
                i += 1;
            }
            b'}' | b']' => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
                i += 1;
                if depth == 0 {
                    break;
                }
            }
            b',' | b':' if depth == 0 => break,
            b if is_ws(b) => {
                if depth == 0 {
                    break;
                }
                let j = skip_ws(s, i);
                out.push_str(src.get(run..i).unwrap_or_default());
                let glue = !is_structural(s[i - 1]) && s.get(j).is_some_and(|&n| !is_structural(n));
                if glue {
                    // Two tokens side by side: invalid JSON, kept invalid.
                    out.push(' ');
                }
                run = j;
                i = j;
            }
            _ => i += 1,
        }
    }
    out.push_str(src.get(run..i).unwrap_or_default());
    Ok(i)
}

/// Frames the items of the array whose `[` is at `i`; returns the index
/// past its `]`.
fn frame_array(
    src: &str,
    i: usize,
    out: &mut String,
    ranges: &mut Vec<Range<usize>>,
    outer: usize,
) -> Result<usize, Invalid> {
    let not_json = |m: String| Invalid::Body(format!("body is not valid JSON: {m}"));
    let s = src.as_bytes();
    let mut i = skip_ws(s, i + 1);
    if s.get(i) == Some(&b']') {
        return Ok(i + 1);
    }
    loop {
        if !ranges.is_empty() {
            out.push('\n');
        }
        let start = out.len();
        let end = compact_value(src, i, out, outer + 1)?;
        if end == i {
            return Err(not_json(format!("expected a value at byte {i}")));
        }
        ranges.push(start..out.len());
        i = skip_ws(s, end);
        match s.get(i) {
            Some(b',') => i = skip_ws(s, i + 1),
            Some(b']') => return Ok(i + 1),
            _ => return Err(not_json(format!("expected `,` or `]` at byte {i}"))),
        }
    }
}

/// Finds and compacts the items of `body` into `out`. Returns their ranges
/// in `out` and whether the body was a single object (not an array).
pub(super) fn frame(
    endpoint: Endpoint,
    body: &str,
    out: &mut String,
) -> Result<(Vec<Range<usize>>, bool), Invalid> {
    let s = body.as_bytes();
    let not_json = |m: String| Invalid::Body(format!("body is not valid JSON: {m}"));
    let mut ranges = Vec::new();
    let i = skip_ws(s, 0);
    let (end, single) = match (endpoint, s.get(i)) {
        (Endpoint::SeriesV2 | Endpoint::SeriesV1 | Endpoint::Distribution, Some(b'{')) => {
            (frame_series(body, i, out, &mut ranges)?, false)
        }
        (Endpoint::SeriesV2 | Endpoint::SeriesV1 | Endpoint::Distribution, _) => {
            return Err(Invalid::Body(
                r#"body must be a JSON object {"series":[...]}"#.into(),
            ));
        }
        (Endpoint::Logs | Endpoint::CheckRun, Some(b'[')) => {
            (frame_array(body, i, out, &mut ranges, 0)?, false)
        }
        (
            Endpoint::Logs | Endpoint::CheckRun | Endpoint::Events | Endpoint::EventsV2,
            Some(b'{'),
        ) => {
            let end = compact_value(body, i, out, 0)?;
            ranges.push(0..out.len());
            (end, true)
        }
        (Endpoint::Logs | Endpoint::CheckRun, _) => {
            return Err(Invalid::Body(format!(
                "body must be a JSON array of {} objects, or one object",
                if endpoint == Endpoint::Logs {
                    "log"
                } else {
                    "service check"
                }
            )));
        }
        (Endpoint::Events, _) => {
            return Err(Invalid::Body("body must be one JSON event object".into()));
        }
        (Endpoint::EventsV2, _) => {
            return Err(Invalid::Body(
                r#"body must be one JSON object {"data":{"type":"event","attributes":{...}}}"#
                    .into(),
            ));
        }
        (Endpoint::Traces | Endpoint::TraceStats | Endpoint::ClientStats, _) => {
            return Err(Invalid::Body(
                "traces are validated by the trace API (ingest/traces)".into(),
            ));
        }
    };
    let rest = skip_ws(s, end);
    if rest != s.len() {
        return Err(not_json(format!("trailing characters at byte {rest}")));
    }
    Ok((ranges, single))
}

/// Frames `{"series":[…]}` whose `{` is at `i`. Other top-level keys are
/// checked for syntax and ignored (they are not forwarded).
fn frame_series(
    src: &str,
    i: usize,
    out: &mut String,
    ranges: &mut Vec<Range<usize>>,
) -> Result<usize, Invalid> {
    let s = src.as_bytes();
    let not_json = |m: String| Invalid::Body(format!("body is not valid JSON: {m}"));
    let shape = || Invalid::Body(r#"body must be a JSON object {"series":[...]}"#.to_string());
    let mut i = skip_ws(s, i + 1);
    let mut found = false;
    if s.get(i) == Some(&b'}') {
        return Err(shape());
    }
    loop {
        if s.get(i) != Some(&b'"') {
            return Err(not_json(format!("expected a key at byte {i}")));
        }
        let key_end = string_end(s, i + 1);
        let key: Key = serde_json::from_str(src.get(i..key_end).unwrap_or_default())
            .map_err(|e| not_json(e.to_string()))?;
        i = skip_ws(s, key_end);
        if s.get(i) != Some(&b':') {
            return Err(not_json(format!("expected `:` at byte {i}")));
        }
        i = skip_ws(s, i + 1);
        if key.0 == "series" {
            if found {
                return Err(Invalid::Body("body has `series` twice".into()));
            }
            found = true;
            if s.get(i) != Some(&b'[') {
                return Err(shape());
            }
            i = frame_array(src, i, out, ranges, 1)?;
        } else {
            let mut other = String::new();
            let end = compact_value(src, i, &mut other, 1)?;
            serde_json::from_str::<IgnoredAny>(&other).map_err(|e| not_json(e.to_string()))?;
            i = end;
        }
        i = skip_ws(s, i);
        match s.get(i) {
            Some(b',') => i = skip_ws(s, i + 1),
            Some(b'}') => break,
            _ => return Err(not_json(format!("expected `,` or `}}` at byte {i}"))),
        }
    }
    if !found {
        return Err(shape());
    }
    Ok(i + 1)
}
