//! The state of one validation ([`Ctx`]): where in the body it is, the
//! kind's acceptance window, and what it found (errors, notes, what was
//! dropped), with the wording of paths and spans of time every kind shares.

use std::fmt;

use super::Dropped;
use super::errors::{Errors, ItemError, MAX_ERRORS};
use crate::site::Endpoint;

/// The state of one validation: where we are, the window, what we found.
pub(super) struct Ctx<'e> {
    pub(super) endpoint: Endpoint,
    pub(super) now_ms: i64,
    pub(super) past_ms: i64,
    pub(super) future_ms: i64,
    /// `series` for the series bodies, whose paths start `series[i].`.
    pub(super) prefix: Option<&'static str>,
    pub(super) index: Option<usize>,
    pub(super) errors: &'e mut Errors,
    pub(super) oldest: i64,
    pub(super) newest: i64,
    /// What the current item held.
    pub(super) item: ItemSeen,
    /// Dropped and truncated points and items, worded (see [`Validated`]).
    pub(super) notes: Vec<String>,
    pub(super) dropped: Dropped,
}

/// What one item held, as far as its treatment goes.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ItemSeen {
    pub(super) has_time: bool,
    pub(super) has_tags: bool,
    /// Timestamps seen (one per point of a series).
    pub(super) times: u32,
    /// Of those, outside the window.
    pub(super) stale: u32,
}

impl<'e> Ctx<'e> {
    /// A validation of a body for `endpoint` at `now_ms` (unix
    /// milliseconds), its errors going into `errors`.
    pub(super) fn new(endpoint: Endpoint, now_ms: i64, errors: &'e mut Errors) -> Ctx<'e> {
        let window = endpoint.window();
        Ctx {
            endpoint,
            now_ms,
            past_ms: duration_ms(window.past),
            future_ms: duration_ms(window.future),
            prefix: match endpoint {
                Endpoint::SeriesV2 | Endpoint::SeriesV1 | Endpoint::Distribution => Some("series"),
                _ => None,
            },
            index: None,
            errors,
            oldest: i64::MAX,
            newest: i64::MIN,
            item: ItemSeen::default(),
            notes: Vec::new(),
            dropped: Dropped::default(),
        }
    }
    /// Records an error at `rel`, the path inside the current item.
    pub(super) fn fail(&mut self, rel: fmt::Arguments<'_>, message: String) {
        if self.errors.list.len() >= MAX_ERRORS {
            self.errors.more += 1;
            return;
        }
        let error = self.at(rel, message);
        self.errors.list.push(error);
    }

    /// Records what was dropped or cut at `rel` (at most [`MAX_ERRORS`]).
    pub(super) fn note(&mut self, rel: fmt::Arguments<'_>, message: String) {
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

    pub(super) fn note_time(&mut self, ms: i64) {
        self.oldest = self.oldest.min(ms);
        self.newest = self.newest.max(ms);
    }

    /// Checks a timestamp (ms) against the endpoint's window: one inside
    /// is recorded, one outside is counted as stale (Datadog answers 202
    /// and drops that point or item; so does the relay, and says so).
    pub(super) fn check_time(&mut self, ms: i64, rel: fmt::Arguments<'_>) {
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
pub(super) fn span(ms: i64) -> String {
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

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
