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
//! message cut, and [`Validated::dropped`] and [`Validated::notes`] say so.
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
//! [`validate_with`] after the checks, within the same per-item limits.
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

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::pipeline::age::Trimmed;
use crate::site::Endpoint;

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
    pub dropped: Dropped,
    /// One line per dropped or truncated point or item (at most
    /// [`MAX_ERRORS`]), worded as the errors are.
    pub notes: Vec<String>,
}

/// What a request lost to Datadog's own treatment: Datadog answers `202`
/// for these and drops or cuts them, so the relay does the same (and says
/// so), rather than refusing the request and losing the rest of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Outside the acceptance window: points of a series kind, whole items
    /// of the others.
    pub stale: u32,
    /// Logs over 1 MB whose message was cut to fit.
    pub truncated: u32,
    /// Logs over 1 MB with no message to cut: dropped.
    pub oversized: u32,
}

impl Dropped {
    /// The counts by reason, for metrics: `(reason, count)`.
    pub fn by_reason(&self) -> [(&'static str, u32); 3] {
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
pub const TRUNCATED_MARK: &str = "...TRUNCATED...";

/// One problem with one item (or with a field of a single-object body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// The item's position in the request's array; `None` for a body that is
    /// one object.
    pub index: Option<usize>,
    /// Path of the field, e.g. `series[3].points[0].timestamp` or `status`;
    /// empty when the item itself is wrong.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.index {
            write!(f, "item {i}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a request was refused; nothing of it may be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Not JSON, or not the top-level shape this endpoint takes.
    #[error("{0}")]
    Body(String),
    /// Items with invalid fields: at most [`MAX_ERRORS`] listed, `more` not.
    #[error("{}", self.messages().join("; "))]
    Items { errors: Vec<ItemError>, more: usize },
    /// One item is larger than Datadog accepts for a single item, even alone.
    #[error("item {index}: {size} bytes; Datadog accepts at most {limit} bytes per item")]
    ItemTooLarge {
        index: usize,
        size: usize,
        limit: usize,
    },
    /// More items in one request than Datadog accepts in one request.
    #[error("{items} items in one request; Datadog accepts at most {limit}")]
    TooManyItems { items: usize, limit: usize },
}

impl Invalid {
    /// The strings for Datadog's `{"errors":[...]}` response body.
    pub fn messages(&self) -> Vec<String> {
        match self {
            Invalid::Items { errors, more } => {
                let mut out: Vec<String> = errors.iter().map(ToString::to_string).collect();
                if *more > 0 {
                    out.push(format!("+{more} more"));
                }
                out
            }
            other => vec![other.to_string()],
        }
    }
}

/// How many item errors a response lists; a client that sends 50,000 bad
/// series needs the pattern, not 50,000 lines.
pub const MAX_ERRORS: usize = 100;

/// Datadog's longest metric name (docs/datadog.md "Series v2").
const METRIC_NAME_MAX_CHARS: usize = 200;
/// Datadog's longest tag (docs/datadog.md "Tags").
const TAG_MAX_CHARS: usize = 200;
/// Logs: "Maximum array size if sending multiple logs in an array: 1000
/// entries" (docs/datadog.md "Logs").
const LOGS_MAX_ENTRIES: usize = 1000;
/// Events v1 `text` maxLength (docs/datadog.md "Events v1").
const EVENT_TEXT_MAX_CHARS: usize = 4000;
/// Events v1 `aggregation_key` maxLength (docs/datadog.md "Events v1").
const EVENT_AGGREGATION_KEY_MAX_CHARS: usize = 100;

/// Checks `body` (already decompressed) for `endpoint` and builds the queue
/// payload. `now_ms` is the current unix time in milliseconds.
pub fn validate(endpoint: Endpoint, body: &[u8], now_ms: i64) -> Result<Validated, Invalid> {
    validate_with(endpoint, body, now_ms, &Added::NONE)
}

/// As [`validate`], with `added` (the tenant's tags, the integration's
/// source) added to every item kept (`validate/enrich.rs`), within the
/// kind's per-item limit.
pub fn validate_with(
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
    let window = endpoint.window();
    let mut errors = Errors::default();
    let mut ctx = Ctx {
        endpoint,
        now_ms,
        past_ms: duration_ms(window.past),
        future_ms: duration_ms(window.future),
        prefix: match endpoint {
            Endpoint::SeriesV2 | Endpoint::SeriesV1 | Endpoint::Distribution => Some("series"),
            _ => None,
        },
        index: None,
        errors: &mut errors,
        oldest: i64::MAX,
        newest: i64::MIN,
        item: ItemSeen::default(),
        notes: Vec::new(),
        dropped: Dropped::default(),
    };
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
        let mut fix = check_one(&mut ctx, item, i, &syntax)?;
        if added.applies(endpoint) {
            fix = with_added(&mut ctx, item, i, fix, added).map_err(&syntax)??;
        }
        if let Some(fix) = fix {
            fixes.push((i, fix));
        }
    }
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

/// A log over `max` bytes with its `message` cut (at a character, ending
/// in [`TRUNCATED_MARK`]) so that the compact item fits; `None` when it
/// has no string message or cutting it is not enough.
fn truncate_log(item: &str, max: usize) -> Result<Option<String>, serde_json::Error> {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(item)?;
    let Some(serde_json::Value::String(message)) = v.get_mut("message") else {
        return Ok(None);
    };
    let full = std::mem::take(message);
    // Escapes make the encoded message longer than the text: cut by the
    // excess, measure, and cut again by what is still over.
    let mut keep = full.len();
    for _ in 0..8 {
        let over = item_len_with(&mut v, &full, keep).saturating_sub(max);
        if over == 0 {
            return Ok(Some(serde_json::to_string(&v).unwrap_or_default()));
        }
        if keep == 0 {
            return Ok(None);
        }
        keep = floor_char(&full, keep.saturating_sub(over.max(keep / 64)));
    }
    Ok(None)
}

/// Sets `message` to the first `keep` bytes of `full` and the mark;
/// returns the item's compact length.
fn item_len_with(
    v: &mut serde_json::Map<String, serde_json::Value>,
    full: &str,
    keep: usize,
) -> usize {
    let mut cut = String::with_capacity(keep + TRUNCATED_MARK.len());
    cut.push_str(full.get(..keep).unwrap_or_default());
    cut.push_str(TRUNCATED_MARK);
    v.insert("message".into(), serde_json::Value::String(cut));
    serde_json::to_string(v).map_or(usize::MAX, |s| s.len())
}

/// The largest character boundary of `s` at or below `at`.
fn floor_char(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Appends `,"tags":[]` inside a check-run item. UNCONFIRMED whether the
/// intake requires `tags` (see the module doc). The item is a valid,
/// compact, non-empty object (`check` is required), so it ends in `}` and
/// the `,` is valid.
fn with_empty_tags(item: &str) -> String {
    let close = item.len().saturating_sub(1);
    let mut out = String::with_capacity(item.len() + 10);
    out.push_str(item.get(..close).unwrap_or_default());
    out.push_str(r#","tags":[]}"#);
    out
}

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------
// Framing and compaction: one pass over the body.
//
// The framer walks the body's top level (`{"series":[…]}`, `[…]` or one
// object) and copies each item into the payload without insignificant
// whitespace, recording where it went. It validates only the top level; each
// item is then parsed in full by `check_item`, which refuses anything that is
// not exactly one JSON value. Whitespace is dropped only next to a structural
// byte (`{}[],:"`), so two tokens are never glued together: the compacted
// item is valid JSON exactly when the original was, with the same meaning.

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_structural(b: u8) -> bool {
    matches!(b, b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"')
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_ws(s[i]) {
        i += 1;
    }
    i
}

/// The index just past the closing quote of the string whose contents start
/// at `i` (or `s.len()` if it is unterminated).
fn string_end(s: &[u8], mut i: usize) -> usize {
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
/// Datadog's clients) can parse too. Datadog documents "nesting < 10 levels"
/// for log attributes (docs/datadog.md "Logs") and flattens deeper ones, so
/// this refuses nothing Datadog would use. serde_json alone does not bound it
/// here: values skipped as `IgnoredAny` are not depth-limited (found by
/// `tests/hostile.rs`).
pub const MAX_DEPTH: usize = 128;

/// Copies the value that starts at `start` (not whitespace) into `out`
/// without insignificant whitespace; returns the index just past it (equal
/// to `start` if there is no value there), or an error if it nests deeper
/// than [`MAX_DEPTH`] (counting the levels around it, `outer`). Not a
/// validator: the copy is parsed afterwards. Every index it slices at is at
/// an ASCII byte or the end, so slicing `src` never splits a character.
fn compact_value(
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
fn frame(
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

#[derive(Default)]
struct Errors {
    list: Vec<ItemError>,
    more: usize,
}

/// The state of one validation: where we are, the window, what we found.
struct Ctx<'e> {
    endpoint: Endpoint,
    now_ms: i64,
    past_ms: i64,
    future_ms: i64,
    /// `series` for the series bodies, whose paths start `series[i].`.
    prefix: Option<&'static str>,
    index: Option<usize>,
    errors: &'e mut Errors,
    oldest: i64,
    newest: i64,
    /// What the current item held.
    item: ItemSeen,
    /// Dropped and truncated points and items, worded (see [`Validated`]).
    notes: Vec<String>,
    dropped: Dropped,
}

/// What one item held, as far as its treatment goes.
#[derive(Debug, Default, Clone, Copy)]
struct ItemSeen {
    has_time: bool,
    has_tags: bool,
    /// Timestamps seen (one per point of a series).
    times: u32,
    /// Of those, outside the window.
    stale: u32,
}

impl Ctx<'_> {
    /// Records an error at `rel`, the path inside the current item.
    fn fail(&mut self, rel: fmt::Arguments<'_>, message: String) {
        if self.errors.list.len() >= MAX_ERRORS {
            self.errors.more += 1;
            return;
        }
        let error = self.at(rel, message);
        self.errors.list.push(error);
    }

    /// Records what was dropped or cut at `rel` (at most [`MAX_ERRORS`]).
    fn note(&mut self, rel: fmt::Arguments<'_>, message: String) {
        if self.notes.len() < MAX_ERRORS {
            let note = self.at(rel, message).to_string();
            self.notes.push(note);
        }
    }

    /// `message` about the field at `rel` inside the current item.
    fn at(&self, rel: fmt::Arguments<'_>, message: String) -> ItemError {
        let rel = rel.to_string();
        let field = match (self.prefix, self.index) {
            (Some(p), Some(i)) if rel.is_empty() => format!("{p}[{i}]"),
            (Some(p), Some(i)) => format!("{p}[{i}].{rel}"),
            _ => rel,
        };
        ItemError {
            index: self.index,
            field,
            message,
        }
    }

    fn note_time(&mut self, ms: i64) {
        self.oldest = self.oldest.min(ms);
        self.newest = self.newest.max(ms);
    }

    /// Checks a timestamp (ms) against the endpoint's window: one inside
    /// is recorded, one outside is counted as stale (Datadog answers 202
    /// and drops that point or item; so does the relay, and says so).
    fn check_time(&mut self, ms: i64, rel: fmt::Arguments<'_>) {
        self.item.has_time = true;
        self.item.times += 1;
        let age = self.now_ms.saturating_sub(ms);
        let why = if age > self.past_ms {
            format!(
                "{} in the past; Datadog accepts at most {}: dropped",
                span(age),
                window_span(self.past_ms)
            )
        } else if -age > self.future_ms {
            format!(
                "{} in the future; Datadog accepts at most {}: dropped",
                span(age.saturating_neg()),
                window_span(self.future_ms)
            )
        } else {
            self.note_time(ms);
            return;
        };
        self.item.stale += 1;
        self.note(rel, why);
    }
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// A distance in time as it is, to the second (rounded up, so that it
/// never reads as within a window it is outside of): `2 hours 1 second`,
/// `15 minutes`. From a day on, days and hours (every window is shorter).
fn span(ms: i64) -> String {
    let s = ms.saturating_add(999) / 1000;
    let parts: &[(i64, &str)] = if s >= 86_400 {
        &[(s / 86_400, "day"), (s % 86_400 / 3600, "hour")]
    } else {
        &[
            (s / 3600, "hour"),
            (s % 3600 / 60, "minute"),
            (s % 60, "second"),
        ]
    };
    let words: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| plural(*n, unit))
        .collect();
    if words.is_empty() {
        plural(0, "second")
    } else {
        words.join(" ")
    }
}

/// A window length, exact: `1 hour`, `10 minutes`, `18 hours`.
fn window_span(ms: i64) -> String {
    let s = ms / 1000;
    if s % 3600 == 0 {
        plural(s / 3600, "hour")
    } else if s % 60 == 0 {
        plural(s / 60, "minute")
    } else {
        plural(s, "second")
    }
}

/// Parses one compacted item, reporting field problems into `ctx`. An `Err`
/// is a JSON syntax error (or nesting deeper than serde_json's 128 levels).
fn check_item(ctx: &mut Ctx<'_>, item: &str) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(item);
    match ctx.endpoint {
        Endpoint::SeriesV2 => As(SeriesV2 { ctx: &mut *ctx }).deserialize(&mut de)?,
        Endpoint::SeriesV1 => As(SeriesV1 {
            ctx: &mut *ctx,
            values: false,
        })
        .deserialize(&mut de)?,
        Endpoint::Logs => As(Log { ctx: &mut *ctx }).deserialize(&mut de)?,
        Endpoint::Events => As(Event { ctx: &mut *ctx }).deserialize(&mut de)?,
        Endpoint::CheckRun => As(Check { ctx: &mut *ctx }).deserialize(&mut de)?,
        Endpoint::Distribution => As(SeriesV1 {
            ctx: &mut *ctx,
            values: true,
        })
        .deserialize(&mut de)?,
        Endpoint::EventsV2 => return events_v2::check(ctx, item),
        // Never framed as JSON items (see `frame`).
        Endpoint::Traces | Endpoint::TraceStats | Endpoint::ClientStats => {}
    }
    de.end()
}

// ---------------------------------------------------------------------------
// Borrowed, non-failing visitors.

/// An object key, borrowed unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON value seen only as far as its type (and its value for scalars).
enum Kind<'de> {
    Null,
    Bool,
    Int(i64),
    /// An integer above `i64::MAX`.
    BigInt,
    Float(f64),
    Str(Cow<'de, str>),
    Array,
    Object,
}

impl Kind<'_> {
    fn describe(&self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Int(_) | Kind::BigInt | Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Kind<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Kind<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Kind<'de>, E> {
                Ok(Kind::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Kind<'de>, E> {
                Ok(Kind::Bool)
            }
            fn visit_i64<E>(self, v: i64) -> Result<Kind<'de>, E> {
                Ok(Kind::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Kind<'de>, E> {
                Ok(i64::try_from(v).map_or(Kind::BigInt, Kind::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Kind<'de>, E> {
                Ok(Kind::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Kind<'de>, E> {
                Ok(Kind::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Kind<'de>, E> {
                Ok(Kind::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Kind<'de>, A::Error> {
                IgnoredAny.visit_seq(seq)?;
                Ok(Kind::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Kind<'de>, A::Error> {
                IgnoredAny.visit_map(map)?;
                Ok(Kind::Object)
            }
        }
        d.deserialize_any(V)
    }
}

/// A check of one JSON value that expects an object or an array. Values of
/// any other type are reported through `got` and skipped; nothing fails.
trait Shape<'de>: Sized {
    /// The value has the wrong type (`kind` is e.g. "a string").
    fn got(self, kind: &'static str);
    fn null(self) {
        self.got("null");
    }
    fn map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.got("an object");
        IgnoredAny.visit_map(map).map(|_| ())
    }
    fn seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.got("an array");
        IgnoredAny.visit_seq(seq).map(|_| ())
    }
}

/// Runs a [`Shape`] as a serde seed.
struct As<S>(S);

impl<'de, S: Shape<'de>> Visitor<'de> for As<S> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.null();
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.0.got("a boolean");
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.0.got("a number");
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.0.got("a number");
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.0.got("a number");
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.0.got("a string");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.0.seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.map(map)
    }
}

impl<'de, S: Shape<'de>> DeserializeSeed<'de> for As<S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

fn char_len_over(s: &str, max: usize) -> bool {
    // Bytes ≥ chars, so the common short string needs no counting.
    s.len() > max && s.chars().count() > max
}

// --- scalar checks on `Kind` -------------------------------------------------

/// A string field; `null` counts as absent when `optional`.
fn want_str<'a, 'de>(
    ctx: &mut Ctx<'_>,
    v: &'a Kind<'de>,
    field: &str,
    optional: bool,
) -> Option<&'a str> {
    match v {
        Kind::Str(s) => Some(s),
        Kind::Null if optional => None,
        other => {
            ctx.fail(
                format_args!("{field}"),
                format!("must be a string, got {}", other.describe()),
            );
            None
        }
    }
}

/// An integer field; `null` counts as absent when `optional`.
fn want_int(ctx: &mut Ctx<'_>, v: &Kind<'_>, field: &str, optional: bool) -> Option<i64> {
    match v {
        Kind::Int(n) => Some(*n),
        Kind::Null if optional => None,
        Kind::BigInt => {
            ctx.fail(
                format_args!("{field}"),
                "must be a 64-bit integer, got a larger number".into(),
            );
            None
        }
        other => {
            ctx.fail(
                format_args!("{field}"),
                format!("must be an integer, got {}", other.describe()),
            );
            None
        }
    }
}

fn want_int_in(ctx: &mut Ctx<'_>, v: &Kind<'_>, field: &str, optional: bool, max: i64) {
    if let Some(n) = want_int(ctx, v, field, optional)
        && !(0..=max).contains(&n)
    {
        ctx.fail(
            format_args!("{field}"),
            format!("must be between 0 and {max}, got {n}"),
        );
    }
}

fn want_object(ctx: &mut Ctx<'_>, v: &Kind<'_>, field: &str) {
    if !matches!(v, Kind::Object | Kind::Null) {
        ctx.fail(
            format_args!("{field}"),
            format!("must be an object, got {}", v.describe()),
        );
    }
}

fn want_one_of(ctx: &mut Ctx<'_>, v: &Kind<'_>, field: &str, allowed: &[&str]) {
    if let Some(s) = want_str(ctx, v, field, true)
        && !allowed.contains(&s)
    {
        let m = format!("must be one of {}, got \"{s}\"", allowed.join(", "));
        ctx.fail(format_args!("{field}"), m);
    }
}

fn want_max_chars(ctx: &mut Ctx<'_>, v: &Kind<'_>, field: &str, optional: bool, max: usize) {
    if let Some(s) = want_str(ctx, v, field, optional)
        && char_len_over(s, max)
    {
        let m = format!(
            "{} characters; Datadog accepts at most {max}",
            s.chars().count()
        );
        ctx.fail(format_args!("{field}"), m);
    }
}

/// Datadog custom metric naming (docs/datadog.md "Series v2"): starts with a
/// letter, ≤ 200 characters. Other characters are left for Datadog, which
/// converts them to underscores (see the module doc).
fn want_metric_name(ctx: &mut Ctx<'_>, v: &Kind<'_>) {
    let Some(name) = want_str(ctx, v, "metric", false) else {
        return;
    };
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        let m = if name.is_empty() {
            "must not be empty".to_string()
        } else {
            format!("\"{name}\" must start with a letter")
        };
        ctx.fail(format_args!("metric"), m);
    } else if char_len_over(name, METRIC_NAME_MAX_CHARS) {
        let m = format!(
            "{} characters; Datadog accepts at most {METRIC_NAME_MAX_CHARS}",
            name.chars().count()
        );
        ctx.fail(format_args!("metric"), m);
    }
}

fn missing(ctx: &mut Ctx<'_>, field: &str) {
    ctx.fail(format_args!("{field}"), "is required".into());
}

// --- arrays of strings -------------------------------------------------------

/// `tags`-like: an array of strings, each at most `max_chars` (0: no limit).
struct Strings<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
    field: &'static str,
    max_chars: usize,
    optional: bool,
}

impl<'de> Shape<'de> for Strings<'_, '_> {
    fn got(self, kind: &'static str) {
        let field = self.field;
        self.ctx.fail(
            format_args!("{field}"),
            format!("must be an array of strings, got {kind}"),
        );
    }
    fn null(self) {
        if !self.optional {
            self.got("null");
        }
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let field = self.field;
        let mut j = 0usize;
        while let Some(v) = seq.next_element::<Kind<'de>>()? {
            match &v {
                Kind::Str(s) => {
                    if self.max_chars > 0 && char_len_over(s, self.max_chars) {
                        let m = format!(
                            "{} characters; Datadog accepts at most {}",
                            s.chars().count(),
                            self.max_chars
                        );
                        self.ctx.fail(format_args!("{field}[{j}]"), m);
                    }
                }
                other => self.ctx.fail(
                    format_args!("{field}[{j}]"),
                    format!("must be a string, got {}", other.describe()),
                ),
            }
            j += 1;
        }
        Ok(())
    }
}

// --- series v2 ---------------------------------------------------------------

struct SeriesV2<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
}

fn not_object(ctx: &mut Ctx<'_>, kind: &'static str) {
    ctx.fail(
        format_args!(""),
        format!("must be a JSON object, got {kind}"),
    );
}

impl<'de> Shape<'de> for SeriesV2<'_, '_> {
    fn got(self, kind: &'static str) {
        not_object(self.ctx, kind);
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        let (mut metric, mut points) = (false, false);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "metric" => {
                    metric = true;
                    want_metric_name(ctx, &map.next_value()?);
                }
                "points" => {
                    points = true;
                    map.next_value_seed(As(PointsV2 { ctx: &mut *ctx }))?;
                }
                // 0 unspecified, 1 count, 2 rate, 3 gauge.
                "type" => want_int_in(ctx, &map.next_value()?, "type", true, 3),
                "interval" => {
                    want_int(ctx, &map.next_value()?, "interval", true);
                }
                "resources" => map.next_value_seed(As(Resources { ctx: &mut *ctx }))?,
                "tags" => map.next_value_seed(As(Strings {
                    ctx: &mut *ctx,
                    field: "tags",
                    max_chars: TAG_MAX_CHARS,
                    optional: true,
                }))?,
                f @ ("unit" | "source_type_name") => {
                    let v: Kind = map.next_value()?;
                    want_str(ctx, &v, f, true);
                }
                "metadata" => want_object(ctx, &map.next_value()?, "metadata"),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !metric {
            missing(ctx, "metric");
        }
        if !points {
            missing(ctx, "points");
        }
        Ok(())
    }
}

struct PointsV2<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
}

impl<'de> Shape<'de> for PointsV2<'_, '_> {
    fn got(self, kind: &'static str) {
        self.ctx.fail(
            format_args!("points"),
            format!("must be an array of {{\"timestamp\",\"value\"}} objects, got {kind}"),
        );
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut j = 0usize;
        while seq
            .next_element_seed(As(PointV2 {
                ctx: &mut *self.ctx,
                j,
            }))?
            .is_some()
        {
            j += 1;
        }
        if j == 0 {
            self.ctx
                .fail(format_args!("points"), "must not be empty".into());
        }
        Ok(())
    }
}

struct PointV2<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
    j: usize,
}

impl<'de> Shape<'de> for PointV2<'_, '_> {
    fn got(self, kind: &'static str) {
        let j = self.j;
        self.ctx.fail(
            format_args!("points[{j}]"),
            format!("must be a {{\"timestamp\",\"value\"}} object, got {kind}"),
        );
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (ctx, j) = (self.ctx, self.j);
        let (mut ts, mut value) = (false, false);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "timestamp" => {
                    ts = true;
                    match map.next_value()? {
                        Kind::Int(s) => {
                            ctx.check_time(
                                s.saturating_mul(1000),
                                format_args!("points[{j}].timestamp"),
                            );
                        }
                        other => ctx.fail(
                            format_args!("points[{j}].timestamp"),
                            format!(
                                "must be an integer (seconds since the epoch), got {}",
                                other.describe()
                            ),
                        ),
                    }
                }
                "value" => {
                    value = true;
                    match map.next_value()? {
                        Kind::Int(_) | Kind::BigInt | Kind::Float(_) => {}
                        other => ctx.fail(
                            format_args!("points[{j}].value"),
                            format!("must be a number, got {}", other.describe()),
                        ),
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        // The model marks both optional, but a point without them is
        // meaningless (docs/datadog.md "Series v2": "needs both in practice").
        if !ts {
            ctx.fail(format_args!("points[{j}].timestamp"), "is required".into());
        }
        if !value {
            ctx.fail(format_args!("points[{j}].value"), "is required".into());
        }
        Ok(())
    }
}

struct Resources<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
}

impl<'de> Shape<'de> for Resources<'_, '_> {
    fn got(self, kind: &'static str) {
        self.ctx.fail(
            format_args!("resources"),
            format!("must be an array of {{\"name\",\"type\"}} objects, got {kind}"),
        );
    }
    fn null(self) {}
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut j = 0usize;
        while seq
            .next_element_seed(As(Resource {
                ctx: &mut *self.ctx,
                j,
            }))?
            .is_some()
        {
            j += 1;
        }
        Ok(())
    }
}

struct Resource<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
    j: usize,
}

impl<'de> Shape<'de> for Resource<'_, '_> {
    fn got(self, kind: &'static str) {
        let j = self.j;
        self.ctx.fail(
            format_args!("resources[{j}]"),
            format!("must be a {{\"name\",\"type\"}} object, got {kind}"),
        );
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (ctx, j) = (self.ctx, self.j);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                f @ ("name" | "type") => {
                    let v: Kind = map.next_value()?;
                    if !matches!(v, Kind::Str(_) | Kind::Null) {
                        ctx.fail(
                            format_args!("resources[{j}].{f}"),
                            format!("must be a string, got {}", v.describe()),
                        );
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

// --- series v1 ---------------------------------------------------------------

/// A v1 series, or a distribution series when `values` (its points carry
/// a list of values each, and its `type` is `distribution`).
struct SeriesV1<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
    values: bool,
}

impl<'de> Shape<'de> for SeriesV1<'_, '_> {
    fn got(self, kind: &'static str) {
        not_object(self.ctx, kind);
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (ctx, values) = (self.ctx, self.values);
        let (mut metric, mut points) = (false, false);
        let types: &[&str] = if values {
            &["distribution"]
        } else {
            &["", "count", "gauge", "rate"]
        };
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "metric" => {
                    metric = true;
                    want_metric_name(ctx, &map.next_value()?);
                }
                "points" => {
                    points = true;
                    map.next_value_seed(As(PointsV1 {
                        ctx: &mut *ctx,
                        values,
                    }))?;
                }
                "type" => want_one_of(ctx, &map.next_value()?, "type", types),
                "host" => {
                    want_str(ctx, &map.next_value()?, "host", true);
                }
                "interval" => {
                    want_int(ctx, &map.next_value()?, "interval", true);
                }
                "tags" => map.next_value_seed(As(Strings {
                    ctx: &mut *ctx,
                    field: "tags",
                    max_chars: TAG_MAX_CHARS,
                    optional: true,
                }))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !metric {
            missing(ctx, "metric");
        }
        if !points {
            missing(ctx, "points");
        }
        Ok(())
    }
}

struct PointsV1<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
    values: bool,
}

impl<'de> Shape<'de> for PointsV1<'_, '_> {
    fn got(self, kind: &'static str) {
        self.ctx.fail(
            format_args!("points"),
            format!("must be an array of [timestamp, value] pairs, got {kind}"),
        );
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut j = 0usize;
        while seq
            .next_element_seed(As(PointV1 {
                ctx: &mut *self.ctx,
                j,
                values: self.values,
            }))?
            .is_some()
        {
            j += 1;
        }
        if j == 0 {
            self.ctx
                .fail(format_args!("points"), "must not be empty".into());
        }
        Ok(())
    }
}

struct PointV1<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
    j: usize,
    /// A distribution point: `[timestamp, [values...]]`.
    values: bool,
}

impl<'de> Shape<'de> for PointV1<'_, '_> {
    fn got(self, kind: &'static str) {
        let j = self.j;
        self.ctx.fail(
            format_args!("points[{j}]"),
            format!("must be a [timestamp, value] pair, got {kind}"),
        );
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (ctx, j) = (self.ctx, self.j);
        let mut n = 0usize;
        if self.values {
            return distribution_point(ctx, j, seq);
        }
        while let Some(v) = seq.next_element::<Kind<'de>>()? {
            match (n, &v) {
                // v1 points are doubles in the model: a float timestamp is fine.
                (0, _) => point_time(ctx, j, &v),
                // UNCONFIRMED whether the intake takes a null value: refuse it.
                (1, Kind::Int(_) | Kind::BigInt | Kind::Float(_)) => {}
                (1, other) => ctx.fail(
                    format_args!("points[{j}][1]"),
                    format!("value must be a number, got {}", other.describe()),
                ),
                _ => {}
            }
            n += 1;
        }
        if n != 2 {
            ctx.fail(
                format_args!("points[{j}]"),
                format!("must be a [timestamp, value] pair, got {n} elements"),
            );
        }
        Ok(())
    }
}

/// `[timestamp, [values...]]`: the v1 point whose value is a list.
fn distribution_point<'de, A: SeqAccess<'de>>(
    ctx: &mut Ctx<'_>,
    j: usize,
    mut seq: A,
) -> Result<(), A::Error> {
    let mut n = 0usize;
    loop {
        let more = match n {
            0 => seq
                .next_element::<Kind<'de>>()?
                .map(|v| point_time(ctx, j, &v)),
            1 => seq.next_element_seed(As(Values { ctx: &mut *ctx, j }))?,
            _ => seq.next_element::<IgnoredAny>()?.map(|_| ()),
        };
        if more.is_none() {
            break;
        }
        n += 1;
    }
    if n != 2 {
        ctx.fail(
            format_args!("points[{j}]"),
            format!("must be a [timestamp, [values...]] pair, got {n} elements"),
        );
    }
    Ok(())
}

/// A v1 point's timestamp: seconds, an integer or a float.
fn point_time(ctx: &mut Ctx<'_>, j: usize, v: &Kind<'_>) {
    match v {
        Kind::Int(s) => ctx.check_time(s.saturating_mul(1000), format_args!("points[{j}][0]")),
        // `as` saturates; a NaN cannot come from JSON.
        Kind::Float(s) => ctx.check_time((s * 1000.0) as i64, format_args!("points[{j}][0]")),
        other => ctx.fail(
            format_args!("points[{j}][0]"),
            format!(
                "timestamp must be a number (seconds since the epoch), got {}",
                other.describe()
            ),
        ),
    }
}

/// A distribution point's values: an array of numbers.
struct Values<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
    j: usize,
}

impl<'de> Shape<'de> for Values<'_, '_> {
    fn got(self, kind: &'static str) {
        let j = self.j;
        self.ctx.fail(
            format_args!("points[{j}][1]"),
            format!("values must be an array of numbers, got {kind}"),
        );
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let j = self.j;
        let mut k = 0usize;
        while let Some(v) = seq.next_element::<Kind<'de>>()? {
            if !matches!(v, Kind::Int(_) | Kind::BigInt | Kind::Float(_)) {
                self.ctx.fail(
                    format_args!("points[{j}][1][{k}]"),
                    format!("must be a number, got {}", v.describe()),
                );
            }
            k += 1;
        }
        Ok(())
    }
}

// --- logs ----------------------------------------------------------------------

struct Log<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
}

impl<'de> Shape<'de> for Log<'_, '_> {
    fn got(self, kind: &'static str) {
        not_object(self.ctx, kind);
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                // Reserved attributes Datadog interprets (docs/datadog.md "Logs").
                f @ ("ddsource" | "ddtags" | "hostname" | "service" | "status") => {
                    let v: Kind = map.next_value()?;
                    want_str(ctx, &v, f, true);
                }
                "timestamp" => match map.next_value()? {
                    Kind::Int(ms) => ctx.check_time(ms, format_args!("timestamp")),
                    // `as` saturates; a NaN cannot come from JSON.
                    Kind::Float(ms) => ctx.check_time(ms as i64, format_args!("timestamp")),
                    // A date string: Datadog parses many formats; not checked.
                    Kind::Str(_) | Kind::Null => {}
                    other => ctx.fail(
                        format_args!("timestamp"),
                        format!(
                            "must be milliseconds since the epoch or a date string, got {}",
                            other.describe()
                        ),
                    ),
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

// --- events --------------------------------------------------------------------

struct Event<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
}

/// Events v1 `alert_type` values (docs/datadog.md "Events v1").
const ALERT_TYPES: [&str; 7] = [
    "error",
    "warning",
    "info",
    "success",
    "user_update",
    "recommendation",
    "snapshot",
];

impl<'de> Shape<'de> for Event<'_, '_> {
    fn got(self, kind: &'static str) {
        not_object(self.ctx, kind);
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        let (mut title, mut text) = (false, false);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "title" => {
                    title = true;
                    want_str(ctx, &map.next_value()?, "title", false);
                }
                "text" => {
                    text = true;
                    want_max_chars(ctx, &map.next_value()?, "text", false, EVENT_TEXT_MAX_CHARS);
                }
                "date_happened" => {
                    if let Some(s) = want_int(ctx, &map.next_value()?, "date_happened", true) {
                        ctx.check_time(s.saturating_mul(1000), format_args!("date_happened"));
                    }
                }
                "priority" => want_one_of(ctx, &map.next_value()?, "priority", &["normal", "low"]),
                "alert_type" => want_one_of(ctx, &map.next_value()?, "alert_type", &ALERT_TYPES),
                "aggregation_key" => want_max_chars(
                    ctx,
                    &map.next_value()?,
                    "aggregation_key",
                    true,
                    EVENT_AGGREGATION_KEY_MAX_CHARS,
                ),
                "tags" => map.next_value_seed(As(Strings {
                    ctx: &mut *ctx,
                    field: "tags",
                    max_chars: 0,
                    optional: true,
                }))?,
                f @ ("host" | "source_type_name" | "device_name") => {
                    let v: Kind = map.next_value()?;
                    want_str(ctx, &v, f, true);
                }
                "related_event_id" => {
                    want_int(ctx, &map.next_value()?, "related_event_id", true);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !title {
            missing(ctx, "title");
        }
        if !text {
            missing(ctx, "text");
        }
        Ok(())
    }
}

// --- service checks --------------------------------------------------------------

struct Check<'c, 'e> {
    ctx: &'c mut Ctx<'e>,
}

impl<'de> Shape<'de> for Check<'_, '_> {
    fn got(self, kind: &'static str) {
        not_object(self.ctx, kind);
    }
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        let (mut check, mut host, mut status) = (false, false, false);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "check" => {
                    check = true;
                    want_str(ctx, &map.next_value()?, "check", false);
                }
                "host_name" => {
                    host = true;
                    want_str(ctx, &map.next_value()?, "host_name", false);
                }
                // 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
                "status" => {
                    status = true;
                    want_int_in(ctx, &map.next_value()?, "status", false, 3);
                }
                "tags" => {
                    ctx.item.has_tags = true;
                    map.next_value_seed(As(Strings {
                        ctx: &mut *ctx,
                        field: "tags",
                        max_chars: 0,
                        optional: false,
                    }))?;
                }
                "message" => {
                    want_str(ctx, &map.next_value()?, "message", true);
                }
                "timestamp" => {
                    if let Some(s) = want_int(ctx, &map.next_value()?, "timestamp", true) {
                        ctx.check_time(s.saturating_mul(1000), format_args!("timestamp"));
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !check {
            missing(ctx, "check");
        }
        if !host {
            missing(ctx, "host_name");
        }
        if !status {
            missing(ctx, "status");
        }
        Ok(())
    }
}

pub mod enrich;
mod events_v2;

pub use enrich::Added;

#[cfg(test)]
mod tests;
