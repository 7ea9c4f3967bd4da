//! Validation and normalization of ingest request bodies, one data kind per
//! [`Endpoint`].
//!
//! Owns: the body shape each intake accepts, the per-field checks Datadog
//! documents, the timestamp windows, and turning the accepted items into the
//! queue record payload (each item as compact JSON, items joined by `\n`).
//! Knows nothing of HTTP, tenants, compression or the queue's format: the
//! caller hands in a decompressed body and the current time, and gets back
//! either [`Validated`] or an [`Invalid`] whose messages go into Datadog's
//! `{"errors":[...]}` body. All or nothing: one bad item rejects the
//! request. What Datadog itself accepts and then drops or cuts is not bad
//! (docs/datadog.md "What Datadog accepts and drops or cuts"): a point or
//! item outside the timestamp window is dropped, a log over 1 MB has its
//! message cut, and `Validated::dropped` and `Validated::notes` say so.
//!
//! Limits enforced (values from [`Endpoint::limits`] and
//! [`Endpoint::window`]):
//! - series v2/v1 (docs/datadog.md "Series v2", docs/datadog.md "Series v1"):
//!   `metric` starts with a letter, ≤ 200 characters; tags ≤ 200 characters;
//!   point timestamps at most 1 hour in the past and 10 minutes in the
//!   future; v2 `type` 0..=3; v1 `type` one of `""`, `count`, `gauge`,
//!   `rate`; v1 points are `[ts, value]` pairs.
//! - distribution points (docs/datadog.md "Distribution points"): as v1
//!   series, with points `[ts, [values...]]` and `type` `distribution`.
//! - logs (docs/datadog.md "Logs"): ≤ 1000 entries per request, ≤ 1,000,000
//!   bytes per entry (a longer one is cut), reserved attributes are strings,
//!   numeric `timestamp` (ms) within 18 hours past / 2 hours future.
//! - events v1 (docs/datadog.md "Events v1"): `title` and `text` required,
//!   `text` ≤ 4000 characters, `aggregation_key` ≤ 100, `priority` and
//!   `alert_type` enums, `date_happened` within 18 hours past.
//! - check_run (docs/datadog.md "Service checks"): `check`, `host_name`,
//!   `status` 0..=3 required, `timestamp` within 10 minutes past.
//! - events v2 (docs/datadog.md "Events v2"): `validate/events_v2.rs`.
//!
//! What the relay adds to the items it keeps (the tenant's tags, the
//! integration's source on logs) is `validate/enrich.rs`'s, applied by
//! `validate_with` after the checks, within the same per-item limits.
//!
//! Decisions where docs/datadog.md finds Datadog silent or UNCONFIRMED (each
//! also noted at the check itself):
//! - Unknown fields are kept untouched everywhere (forward compatibility:
//!   Datadog adds fields; the relay must not drop what the client sent).
//! - `null` for an optional field counts as absent (the clients' models mark
//!   these fields nullable); `null` for a required field is an error.
//! - Metric names: only the first character (a letter) and the length are
//!   enforced. Datadog's custom-metrics page says other characters are
//!   converted to underscores by Datadog, so refusing them would refuse data
//!   Datadog accepts.
//! - Logs: any JSON object is a log (no field is required; Datadog accepts a
//!   log without `message`); `message` may be of any type; a string
//!   `timestamp` is not parsed (Datadog accepts many date formats).
//! - check_run `tags`: the spec marks it required, but whether the intake
//!   refuses a check without it is UNCONFIRMED. A missing `tags` is accepted
//!   and `"tags":[]` is appended to the item, so what we forward is valid
//!   under either reading; `"tags":null` is refused.
//! - series v1 point values must be numbers (the v1 model allows `null`;
//!   whether the intake does is UNCONFIRMED, so we refuse it clearly).
//!
//! Speed: this runs on every request, so it never builds a
//! `serde_json::Value`. The body's UTF-8 is checked once; one pass of our own
//! frames the items and copies them, compacted, into the payload; one serde
//! pass then parses each compact item with borrowed, non-allocating visitors
//! that skip unknown values and report problems instead of failing.
//!
//! The files, one concern each:
//! - `frame.rs`: framing and compaction, one pass over the body;
//! - `context.rs`: the state of one validation (`Ctx`), the wording of
//!   paths and spans of time;
//! - `errors.rs`: what a refused request says ([`Invalid`]);
//! - `visit.rs`: the borrowed visitors and field checks every kind uses;
//! - one file per kind: `series.rs` (what the series versions share),
//!   `series_v2.rs`, `series_v1.rs` (v1 and distribution points),
//!   `logs.rs`, `events.rs`, `checks.rs`, `events_v2.rs`;
//! - `enrich.rs`: what the relay adds to the items it keeps.

mod checks;
mod context;
pub(crate) mod enrich;
mod errors;
mod events;
mod events_v2;
mod frame;
mod logs;
mod series;
mod series_v1;
mod series_v2;
mod visit;

use std::borrow::Cow;
use std::ops::Range;

use serde::de::DeserializeSeed;

use crate::pipeline::age::Trimmed;
use crate::site::Endpoint;
use checks::{Check, with_empty_tags};
use context::{Ctx, ItemSeen};
pub(crate) use enrich::Added;
use errors::Errors;
pub(crate) use errors::MAX_ERRORS;
pub use errors::{Invalid, ItemError};
use events::Event;
use frame::frame;
use logs::{LOGS_MAX_ENTRIES, Log, truncate_log};
use series::Series;
use series_v1::V1;
use series_v2::V2;
use visit::As;

/// An accepted request: the queue record payload and its summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// The items, each as compact JSON (no raw newline inside), joined by
    /// `b'\n'`: the queue record payload.
    pub payload: Vec<u8>,
    pub items: u32,
    /// Min and max item timestamps, unix milliseconds (items without a
    /// timestamp count as `now`; an empty request gives `now` for both).
    pub oldest_ms: i64,
    pub newest_ms: i64,
    /// What was accepted but not kept, as Datadog would not keep it.
    pub(crate) dropped: Dropped,
    /// One line per dropped or truncated point or item (at most
    /// [`MAX_ERRORS`]), worded as the errors are.
    pub(crate) notes: Vec<String>,
}

/// What a request lost to Datadog's own treatment: Datadog answers `202`
/// for these and drops or cuts them, so the relay does the same (and says
/// so), rather than refusing the request and losing the rest of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    /// Outside the acceptance window: points of a series kind, whole items
    /// of the others.
    pub(crate) stale: u32,
    /// Logs over 1 MB whose message was cut to fit.
    pub(crate) truncated: u32,
    /// Logs over 1 MB with no message to cut: dropped.
    pub(crate) oversized: u32,
}

impl Dropped {
    /// The counts by reason, for metrics: `(reason, count)`.
    pub(crate) fn by_reason(&self) -> [(&'static str, u32); 3] {
        [
            ("stale", self.stale),
            ("truncated", self.truncated),
            ("oversized", self.oversized),
        ]
    }
}

/// What the relay appends to a log message it cut to fit 1 MB (the
/// Datadog Agent marks the lines it cuts the same way; docs/datadog.md
/// "What Datadog accepts and drops or cuts").
pub(crate) const TRUNCATED_MARK: &str = "...TRUNCATED...";

/// Checks `body` (already decompressed) for `endpoint` and builds the queue
/// payload. `now_ms` is the current unix time in milliseconds.
pub fn validate(endpoint: Endpoint, body: &[u8], now_ms: i64) -> Result<Validated, Invalid> {
    validate_with(endpoint, body, now_ms, &Added::NONE)
}

/// As [`validate`], with `added` (the tenant's tags, the integration's
/// source) added to every item kept (`validate/enrich.rs`), within the
/// kind's per-item limit.
pub(crate) fn validate_with(
    endpoint: Endpoint,
    body: &[u8],
    now_ms: i64,
    added: &Added<'_>,
) -> Result<Validated, Invalid> {
    // Validating UTF-8 once for the whole body is much cheaper than serde
    // doing it string by string, and lets every later pass skip it.
    let body = std::str::from_utf8(body)
        .map_err(|e| Invalid::Body(format!("body is not valid UTF-8 JSON: {e}")))?;
    let mut payload = String::with_capacity(body.len());
    let (ranges, single) = frame(endpoint, body, &mut payload)?;
    if endpoint == Endpoint::Logs && ranges.len() > LOGS_MAX_ENTRIES {
        return Err(Invalid::TooManyItems {
            items: ranges.len(),
            limit: LOGS_MAX_ENTRIES,
        });
    }
    let mut errors = Errors::default();
    let mut ctx = Ctx::new(endpoint, now_ms, &mut errors);
    let fixes = check_items(&mut ctx, &payload, &ranges, single, added)?;
    let Ctx {
        oldest,
        newest,
        notes,
        dropped,
        ..
    } = ctx;
    if !errors.list.is_empty() {
        return Err(Invalid::Items {
            errors: errors.list,
            more: errors.more,
        });
    }
    let mut items = ranges.len();
    if !fixes.is_empty() {
        (payload, items) = with_fixes(&payload, &ranges, fixes);
    }
    let (oldest_ms, newest_ms) = if oldest > newest {
        (now_ms, now_ms)
    } else {
        (oldest, newest)
    };
    Ok(Validated {
        payload: payload.into_bytes(),
        items: u32::try_from(items).unwrap_or(u32::MAX),
        oldest_ms,
        newest_ms,
        dropped,
        notes,
    })
}

/// Checks every item of `payload` (`single`: the body was one object, not
/// an array) and says what becomes of those not copied as they are.
fn check_items(
    ctx: &mut Ctx<'_>,
    payload: &str,
    ranges: &[Range<usize>],
    single: bool,
    added: &Added<'_>,
) -> Result<Vec<(usize, Fix)>, Invalid> {
    let mut fixes = Vec::new();
    for (i, range) in ranges.iter().enumerate() {
        ctx.index = if single && ctx.prefix.is_none() {
            None
        } else {
            Some(i)
        };
        let item = payload.get(range.clone()).unwrap_or_default();
        let syntax = |e: serde_json::Error| {
            Invalid::Body(if single {
                format!("body is not valid JSON: {e}")
            } else {
                format!("body is not valid JSON: item {i}: {e}")
            })
        };
        let mut fix = check_one(ctx, item, i, &syntax)?;
        if added.applies(ctx.endpoint) {
            fix = with_added(ctx, item, i, fix, added).map_err(&syntax)??;
        }
        if let Some(fix) = fix {
            fixes.push((i, fix));
        }
    }
    Ok(fixes)
}

/// What becomes of one item in the payload besides being copied.
enum Fix {
    /// Dropped (outside the window, or too large to cut).
    Drop,
    /// Replaced: points trimmed, a message cut, `"tags":[]` added.
    Replace(String),
}

/// Checks item `i` (an oversized log is cut first) and says what becomes
/// of it besides being copied. `syntax` words a JSON syntax error.
fn check_one(
    ctx: &mut Ctx<'_>,
    item: &str,
    i: usize,
    syntax: &impl Fn(serde_json::Error) -> Invalid,
) -> Result<Option<Fix>, Invalid> {
    let max_item = ctx.endpoint.limits().max_item;
    let mut cut = None;
    if item.len() > max_item {
        if ctx.endpoint != Endpoint::Logs {
            return Err(Invalid::ItemTooLarge {
                index: i,
                size: item.len(),
                limit: max_item,
            });
        }
        let Some(shorter) = truncate_log(item, max_item).map_err(syntax)? else {
            ctx.dropped.oversized += 1;
            let m = format!(
                "{} bytes, over Datadog's {max_item} per log, and no message to cut: dropped",
                item.len()
            );
            ctx.note(format_args!(""), m);
            return Ok(Some(Fix::Drop));
        };
        ctx.dropped.truncated += 1;
        let m = format!(
            "{} bytes, over Datadog's {max_item} per log: message truncated",
            item.len()
        );
        ctx.note(format_args!("message"), m);
        cut = Some(shorter);
    }
    let checked = cut.as_deref().unwrap_or(item);
    ctx.item = ItemSeen::default();
    check_item(ctx, checked).map_err(syntax)?;
    let seen = ctx.item;
    if !seen.has_time {
        ctx.note_time(ctx.now_ms);
    }
    if seen.stale > 0 {
        return Ok(stale_fix(ctx, checked, seen));
    }
    if ctx.endpoint == Endpoint::CheckRun && !seen.has_tags {
        return Ok(Some(Fix::Replace(with_empty_tags(checked))));
    }
    Ok(cut.map(Fix::Replace))
}

/// What becomes of item `i` once `added` is added to what `fix` made of
/// it, within the kind's per-item limit: a log that grows past it is cut
/// (its original, tagged, so the message carries one mark) or dropped as
/// any oversized log; an item of another kind that grows past it is
/// refused, as an item too large. The outer `Err` is a JSON syntax error.
fn with_added(
    ctx: &mut Ctx<'_>,
    item: &str,
    i: usize,
    fix: Option<Fix>,
    added: &Added<'_>,
) -> Result<Result<Option<Fix>, Invalid>, serde_json::Error> {
    let max = ctx.endpoint.limits().max_item;
    let base = match &fix {
        Some(Fix::Drop) => return Ok(Ok(fix)),
        // A log's only replacement is a cut: start again from the whole.
        Some(Fix::Replace(_)) if ctx.endpoint == Endpoint::Logs => item,
        Some(Fix::Replace(s)) => s.as_str(),
        None => item,
    };
    let Some(grown) = enrich::apply(ctx.endpoint, base, added) else {
        return Ok(Ok(fix));
    };
    if grown.len() <= max {
        return Ok(Ok(Some(Fix::Replace(grown))));
    }
    if ctx.endpoint != Endpoint::Logs {
        let size = grown.len();
        return Ok(Err(Invalid::ItemTooLarge {
            index: i,
            size,
            limit: max,
        }));
    }
    let was_cut = fix.is_some();
    match truncate_log(&grown, max)? {
        Some(cut) => {
            if !was_cut {
                ctx.dropped.truncated += 1;
                let m = format!(
                    "{} bytes with the tenant's tags, over Datadog's {max} per log: message truncated",
                    grown.len()
                );
                ctx.note(format_args!("message"), m);
            }
            Ok(Ok(Some(Fix::Replace(cut))))
        }
        None => {
            ctx.dropped.truncated -= u32::from(was_cut);
            ctx.dropped.oversized += 1;
            let m = format!(
                "{} bytes with the tenant's tags, over Datadog's {max} per log, and no message to cut: dropped",
                grown.len()
            );
            ctx.note(format_args!(""), m);
            Ok(Ok(Some(Fix::Drop)))
        }
    }
}

/// A series keeps its points inside the window (dropped when none is);
/// an item of another kind is dropped whole.
fn stale_fix(ctx: &mut Ctx<'_>, item: &str, seen: ItemSeen) -> Option<Fix> {
    ctx.dropped.stale += seen.stale;
    if ctx.prefix.is_none() || seen.stale >= seen.times {
        return Some(Fix::Drop);
    }
    let lo = ctx.now_ms.saturating_sub(ctx.past_ms);
    let hi = ctx.now_ms.saturating_add(ctx.future_ms);
    match crate::pipeline::age::trim_to(ctx.endpoint, item.as_bytes(), lo, hi) {
        Trimmed::Rewritten(bytes) => Some(String::from_utf8(bytes).map_or(Fix::Drop, Fix::Replace)),
        Trimmed::Drop => Some(Fix::Drop),
        // Unreadable as a `serde_json::Value` (a number out of its range):
        // sent whole, and Datadog drops the points itself.
        Trimmed::Keep => Some(Fix::Replace(item.to_string())),
    }
}

/// Joins the items again with their fixes applied; returns the payload
/// and how many items it holds.
fn with_fixes(payload: &str, ranges: &[Range<usize>], fixes: Vec<(usize, Fix)>) -> (String, usize) {
    let mut out = String::with_capacity(payload.len());
    let mut fixes = fixes.into_iter().peekable();
    let mut items = 0;
    for (i, range) in ranges.iter().enumerate() {
        let item = match fixes.next_if(|(at, _)| *at == i) {
            Some((_, Fix::Drop)) => continue,
            Some((_, Fix::Replace(s))) => Cow::Owned(s),
            None => Cow::Borrowed(payload.get(range.clone()).unwrap_or_default()),
        };
        if items > 0 {
            out.push('\n');
        }
        out.push_str(&item);
        items += 1;
    }
    (out, items)
}

/// Parses one compacted item, reporting field problems into `ctx`. An `Err`
/// is a JSON syntax error (or nesting deeper than serde_json's 128 levels).
fn check_item(ctx: &mut Ctx<'_>, item: &str) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(item);
    match ctx.endpoint {
        Endpoint::SeriesV2 => As(Series::new(ctx, V2)).deserialize(&mut de)?,
        Endpoint::SeriesV1 => As(Series::new(ctx, V1 { values: false })).deserialize(&mut de)?,
        Endpoint::Logs => As(Log { ctx: &mut *ctx }).deserialize(&mut de)?,
        Endpoint::Events => As(Event { ctx: &mut *ctx }).deserialize(&mut de)?,
        Endpoint::CheckRun => As(Check { ctx: &mut *ctx }).deserialize(&mut de)?,
        Endpoint::Distribution => As(Series::new(ctx, V1 { values: true })).deserialize(&mut de)?,
        Endpoint::EventsV2 => return events_v2::check(ctx, item),
        // Never framed as JSON items (see `frame`).
        Endpoint::Traces | Endpoint::TraceStats | Endpoint::ClientStats => {}
    }
    de.end()
}

#[cfg(test)]
mod tests;
