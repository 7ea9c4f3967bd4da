//! Logs (docs/datadog.md "Logs"): any JSON object is a log; the reserved
//! attributes Datadog interprets are checked, and a log over 1 MB has its
//! `message` cut ([`truncate_log`]).

use serde::de::{IgnoredAny, MapAccess};

use super::TRUNCATED_MARK;
use super::context::Ctx;
use super::visit::{Key, Kind, Shape, not_object, want_str};

/// Logs: "Maximum array size if sending multiple logs in an array: 1000
/// entries" (docs/datadog.md "Logs").
pub(super) const LOGS_MAX_ENTRIES: usize = 1000;

pub(super) struct Log<'c, 'e> {
    pub(super) ctx: &'c mut Ctx<'e>,
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

/// A log over `max` bytes with its `message` cut (at a character, ending
/// in [`TRUNCATED_MARK`]) so that the compact item fits; `None` when it
/// has no string message or cutting it is not enough.
pub(super) fn truncate_log(item: &str, max: usize) -> Result<Option<String>, serde_json::Error> {
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
