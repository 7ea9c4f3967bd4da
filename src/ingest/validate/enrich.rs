//! What the relay adds to an accepted item before it is queued: the
//! tenant's tags (every JSON kind) and, for logs, the integration's source.
//!
//! - series (v1, v2), distributions, v1 events, service checks: `tags`;
//!   v2 events: `data.attributes.tags` (at most 100, Datadog's limit:
//!   docs/datadog.md "Events v2"); logs: `ddtags`, comma-separated.
//! - A tenant tag whose key the item already has is not added: the item's
//!   own tag wins (`crate::tags::Tags::missing_from`). Nothing is added
//!   twice.
//! - Logs, with `[integration] source`: `ddsource` is set to the source
//!   whatever the client sent; `service` is lowercased, and set to the
//!   source when the log has none (docs/datadog.md "Partner log rules").
//!
//! Items arrive here validated and compact (no whitespace outside
//! strings), so a top-level walk finds each member without parsing the
//! values; only the members changed are decoded. A key given twice is
//! changed wherever it appears, so whichever a reader keeps is right.
//! Callers that find the grown item over its kind's limit deal with it
//! (`validate::with_added`).

use std::borrow::Cow;
use std::ops::Range;

use super::frame::{skip_ws, string_end};
use crate::site::Endpoint;
use crate::tags::Tags;

/// What to add to a request's items.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Added<'a> {
    /// The tenant's tags; `None` when it has none.
    pub(crate) tags: Option<&'a Tags>,
    /// `[integration] source`, for logs.
    pub(crate) source: Option<&'a str>,
}

impl Added<'_> {
    /// Nothing to add.
    pub(crate) const NONE: Added<'static> = Added {
        tags: None,
        source: None,
    };

    /// Whether items of `endpoint` change at all.
    pub(crate) fn applies(&self, endpoint: Endpoint) -> bool {
        self.tags.is_some() || (self.source.is_some() && endpoint == Endpoint::Logs)
    }
}

/// `item` with what `added` says for `endpoint`; `None` when it is
/// unchanged.
pub(super) fn apply(endpoint: Endpoint, item: &str, added: &Added<'_>) -> Option<String> {
    match endpoint {
        Endpoint::SeriesV2
        | Endpoint::SeriesV1
        | Endpoint::Distribution
        | Endpoint::Events
        | Endpoint::CheckRun => added.tags.and_then(|t| with_tag_list(item, t)),
        Endpoint::Logs => log(item, added),
        Endpoint::EventsV2 => added.tags.and_then(|t| event_v2(item, t)),
        Endpoint::Traces | Endpoint::TraceStats | Endpoint::ClientStats => None,
    }
}

/// The members of the compact object `s`: each key's range (quotes
/// included) and its value's range.
fn members(s: &str) -> Vec<(Range<usize>, Range<usize>)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = skip_ws(b, 1);
    while b.get(i) == Some(&b'"') {
        let key = i..string_end(b, i + 1);
        let start = skip_ws(b, key.end + 1);
        let end = value_end(b, start);
        out.push((key, start..end));
        i = skip_ws(b, end);
        if b.get(i) != Some(&b',') {
            break;
        }
        i = skip_ws(b, i + 1);
    }
    out
}

/// The end of the JSON value that starts at `i`.
fn value_end(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i = string_end(b, i + 1);
                if depth == 0 {
                    return i;
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return i,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            b',' if depth == 0 => return i,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Whether the raw key `raw` (quotes included) is `name`.
fn key_is(raw: &str, name: &str) -> bool {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(plain) if !plain.contains('\\') => plain == name,
        _ => serde_json::from_str::<Cow<'_, str>>(raw).is_ok_and(|k| k == name),
    }
}

/// Changes to one item: values replaced, members added at the end.
#[derive(Default)]
struct Edits {
    replace: Vec<(Range<usize>, String)>,
    append: Vec<String>,
}

impl Edits {
    /// The item with the edits made, or `None` when there are none.
    fn made(mut self, item: &str) -> Option<String> {
        if self.replace.is_empty() && self.append.is_empty() {
            return None;
        }
        self.replace.sort_by_key(|(r, _)| r.start);
        let grow: usize = self.replace.iter().map(|(_, v)| v.len()).sum::<usize>()
            + self.append.iter().map(|m| m.len() + 1).sum::<usize>();
        let mut out = String::with_capacity(item.len() + grow);
        let close = item.len().saturating_sub(1);
        let mut at = 0;
        for (range, value) in &self.replace {
            out.push_str(item.get(at..range.start).unwrap_or_default());
            out.push_str(value);
            at = range.end;
        }
        out.push_str(item.get(at..close).unwrap_or_default());
        let mut empty = item.get(..close).is_some_and(|head| head.trim() == "{");
        for member in &self.append {
            if !empty {
                out.push(',');
            }
            out.push_str(member);
            empty = false;
        }
        out.push('}');
        Some(out)
    }
}

/// A JSON array of `tags` (normalised tags need no escaping:
/// `crate::tags::normalize`).
fn array_of(tags: &[&str]) -> String {
    let mut out = String::from("[");
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(t);
        out.push('"');
    }
    out.push(']');
    out
}

/// Adds the tenant's tags to the item's top-level `tags` list (created
/// when absent, filled when `null`).
fn with_tag_list(item: &str, tags: &Tags) -> Option<String> {
    let mut edits = Edits::default();
    let mut found = false;
    for (key, value) in members(item) {
        if !key_is(&item[key], "tags") {
            continue;
        }
        found = true;
        let raw = &item[value.clone()];
        let Ok(have) = serde_json::from_str::<Option<Vec<Cow<'_, str>>>>(raw) else {
            continue;
        };
        let have = have.unwrap_or_default();
        let add = tags.missing_from(&have);
        if add.is_empty() {
            continue;
        }
        let list = array_of(&add);
        if have.is_empty() {
            edits.replace.push((value, list));
        } else {
            // `[…]` becomes `[…,<added>]`.
            let close = value.end - 1;
            let extra = format!(",{}", &list[1..list.len() - 1]);
            edits.replace.push((close..close, extra));
        }
    }
    if !found {
        let add = tags.missing_from::<&str>(&[]);
        edits.append.push(format!("\"tags\":{}", array_of(&add)));
    }
    edits.made(item)
}

/// A log with the integration's source and service rules and the
/// tenant's tags in `ddtags`.
fn log(item: &str, added: &Added<'_>) -> Option<String> {
    let mut edits = Edits::default();
    let (mut source, mut service, mut ddtags) = (false, false, false);
    for (key, value) in members(item) {
        let key = &item[key];
        if let Some(name) = added.source {
            if key_is(key, "ddsource") {
                source = true;
                let wanted = format!("\"{name}\"");
                if item[value.clone()] != wanted {
                    edits.replace.push((value.clone(), wanted));
                }
            } else if key_is(key, "service") {
                service = true;
                if let Some(v) = service_value(&item[value.clone()], name) {
                    edits.replace.push((value.clone(), v));
                }
            }
        }
        if let Some(tags) = added.tags
            && key_is(key, "ddtags")
        {
            ddtags = true;
            if let Some(v) = ddtags_value(&item[value.clone()], tags) {
                edits.replace.push((value, v));
            }
        }
    }
    if let Some(name) = added.source {
        if !source {
            edits.append.push(format!("\"ddsource\":\"{name}\""));
        }
        if !service {
            edits.append.push(format!("\"service\":\"{name}\""));
        }
    }
    if let Some(tags) = added.tags
        && !ddtags
    {
        let all = tags.missing_from::<&str>(&[]).join(",");
        edits.append.push(format!("\"ddtags\":\"{all}\""));
    }
    edits.made(item)
}

/// A log's `service` value as sent: lowercase, the source when `null`;
/// `None` when it is fine as it is.
fn service_value(raw: &str, source: &str) -> Option<String> {
    match serde_json::from_str::<Option<Cow<'_, str>>>(raw) {
        Ok(None) => Some(format!("\"{source}\"")),
        Ok(Some(s)) if s.chars().any(char::is_uppercase) => {
            serde_json::to_string(&s.to_lowercase()).ok()
        }
        _ => None,
    }
}

/// A log's `ddtags` value with the tenant's tags its own do not already
/// have; `None` when nothing is added.
fn ddtags_value(raw: &str, tags: &Tags) -> Option<String> {
    let have: String = serde_json::from_str::<Option<Cow<'_, str>>>(raw)
        .ok()?
        .map(Cow::into_owned)
        .unwrap_or_default();
    let own: Vec<&str> = have.split(',').filter(|t| !t.trim().is_empty()).collect();
    let add = tags.missing_from(&own);
    if add.is_empty() {
        return None;
    }
    let mut all = own.join(",");
    for t in add {
        if !all.is_empty() {
            all.push(',');
        }
        all.push_str(t);
    }
    serde_json::to_string(&all).ok()
}

/// A v2 event with the tenant's tags in `data.attributes.tags`, up to
/// Datadog's 100. One event per request: parsed whole.
fn event_v2(item: &str, tags: &Tags) -> Option<String> {
    const MAX: usize = 100;
    let mut v: serde_json::Value = serde_json::from_str(item).ok()?;
    let attrs = v.get_mut("data")?.get_mut("attributes")?.as_object_mut()?;
    let list = attrs
        .entry("tags")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    if list.is_null() {
        *list = serde_json::Value::Array(Vec::new());
    }
    let list = list.as_array_mut()?;
    let have: Vec<&str> = list.iter().filter_map(serde_json::Value::as_str).collect();
    let add: Vec<String> = tags
        .missing_from(&have)
        .into_iter()
        .take(MAX.saturating_sub(list.len()))
        .map(str::to_string)
        .collect();
    if add.is_empty() {
        return None;
    }
    list.extend(add.into_iter().map(serde_json::Value::String));
    serde_json::to_string(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags() -> Tags {
        Tags::new(vec!["team:a".into(), "env:prod".into(), "critical".into()]).unwrap()
    }

    fn with(endpoint: Endpoint, item: &str, source: Option<&str>) -> String {
        let t = tags();
        let added = Added {
            tags: Some(&t),
            source,
        };
        apply(endpoint, item, &added).unwrap_or_else(|| item.to_string())
    }

    #[test]
    fn tag_lists_are_created_filled_and_extended() {
        let s = Endpoint::SeriesV2;
        assert_eq!(
            with(s, r#"{"metric":"m","points":[]}"#, None),
            r#"{"metric":"m","points":[],"tags":["team:a","env:prod","critical"]}"#
        );
        assert_eq!(
            with(s, r#"{"tags":["Env:dev","x"],"metric":"m"}"#, None),
            r#"{"tags":["Env:dev","x","team:a","critical"],"metric":"m"}"#
        );
        assert_eq!(
            with(s, r#"{"tags":null}"#, None),
            r#"{"tags":["team:a","env:prod","critical"]}"#
        );
        assert_eq!(
            with(s, r#"{"tags":[]}"#, None),
            r#"{"tags":["team:a","env:prod","critical"]}"#
        );
        let full = r#"{"tags":["team:b","env:x","critical"]}"#;
        assert_eq!(with(s, full, None), full);
        // Escaped key, nested `tags` left alone, a key given twice.
        assert_eq!(
            with(
                s,
                r#"{"t\u0061gs":[],"a":{"tags":[]},"tags":["critical"]}"#,
                None
            ),
            r#"{"t\u0061gs":["team:a","env:prod","critical"],"a":{"tags":[]},"tags":["critical","team:a","env:prod"]}"#
        );
        assert_eq!(
            with(s, "{}", None),
            r#"{"tags":["team:a","env:prod","critical"]}"#
        );
    }

    #[test]
    fn logs_get_ddtags_and_the_source() {
        let l = Endpoint::Logs;
        assert_eq!(
            with(l, r#"{"message":"m, \"q\"","ddtags":"env:dev,x"}"#, None),
            r#"{"message":"m, \"q\"","ddtags":"env:dev,x,team:a,critical"}"#
        );
        assert_eq!(
            with(l, r#"{"message":"m"}"#, Some("acme")),
            r#"{"message":"m","ddsource":"acme","service":"acme","ddtags":"team:a,env:prod,critical"}"#
        );
        assert_eq!(
            with(
                l,
                r#"{"ddsource":"Mine","service":"Shop","ddtags":null}"#,
                Some("acme")
            ),
            r#"{"ddsource":"acme","service":"shop","ddtags":"team:a,env:prod,critical"}"#
        );
        let none = Added {
            tags: None,
            source: Some("acme"),
        };
        let item = r#"{"ddsource":"acme","service":"shop"}"#;
        assert_eq!(apply(l, item, &none), None);
        assert!(!Added::NONE.applies(l) && none.applies(l) && !none.applies(Endpoint::Events));
    }

    #[test]
    fn v2_events_stop_at_a_hundred() {
        let e = Endpoint::EventsV2;
        let out = with(
            e,
            r#"{"data":{"attributes":{"title":"t"},"type":"event"}}"#,
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["data"]["attributes"]["tags"].as_array().unwrap().len(), 3);
        let ninety_nine: Vec<String> = (0..99).map(|i| format!("t{i}")).collect();
        let item = serde_json::json!({"data": {"attributes": {"tags": ninety_nine}}}).to_string();
        let v: serde_json::Value = serde_json::from_str(&with(e, &item, None)).unwrap();
        let list = v["data"]["attributes"]["tags"].as_array().unwrap();
        assert_eq!((list.len(), list[99].as_str()), (100, Some("team:a")));
    }
}
