//! fakedog's v2 events intake (`POST /api/v2/events` on
//! `event-management-intake.<site>`): Datadog's `EventCreateRequest` rules
//! (docs/datadog.md "Events v2"), checked on its own, apart from the
//! relay's validation, so the two can disagree and a test can notice.

use serde_json::Value;

use super::intake::{Outcome, Reject};
use super::server::Target;
use super::state::ViolationKind;

/// Checks one v2 event; a `timestamp` older than `lo` (Unix seconds) is
/// accepted and dropped, as Datadog drops it.
pub(crate) fn check(data: &[u8], lo: i64, keep: bool, out: &mut Outcome) -> Result<(), Reject> {
    let v: Value = serde_json::from_slice(data)
        .map_err(|e| Reject::Malformed(format!("Malformed JSON payload: {e}")))?;
    let attrs = v
        .pointer("/data/attributes")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("data.attributes is required"))?;
    if v.pointer("/data/type").and_then(Value::as_str) != Some("event") {
        return Err(bad("data.type must be \"event\""));
    }
    let title = attrs
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or_default();
    within("title", title, 500)?;
    for (field, max) in [("message", 4000), ("aggregation_key", 100), ("host", 255)] {
        if let Some(s) = attrs.get(field).and_then(Value::as_str) {
            within(field, s, max)?;
        }
    }
    if attrs
        .get("tags")
        .and_then(Value::as_array)
        .is_some_and(|t| t.is_empty() || t.len() > 100)
    {
        return Err(Reject::TooLong("tags: 1 to 100 tags".into()));
    }
    category(attrs)?;
    let at = attrs
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        });
    if let Some(t) = at.filter(|t| t.unix_timestamp() < lo) {
        let m = format!("event timestamp {t} older than 18 hours dropped");
        out.notes.push((ViolationKind::TimestampWindow, m));
        return Ok(());
    }
    out.items = 1;
    if keep {
        out.values.push(v);
    }
    Ok(())
}

/// The category and its own required attributes.
fn category(attrs: &serde_json::Map<String, Value>) -> Result<(), Reject> {
    let custom = attrs.get("attributes").filter(|a| a.is_object());
    let custom = custom.ok_or_else(|| bad("attributes is required"))?;
    let text = |p: &str| custom.pointer(p).and_then(Value::as_str);
    match attrs.get("category").and_then(Value::as_str) {
        Some("change") => {
            let name = text("/changed_resource/name").unwrap_or_default();
            within("changed_resource.name", name.trim(), 128)?;
            match text("/changed_resource/type") {
                Some("feature_flag" | "configuration") => Ok(()),
                _ => Err(bad(
                    "changed_resource.type must be feature_flag or configuration",
                )),
            }
        }
        Some("alert") => match text("/status") {
            Some("warn" | "error" | "ok") => Ok(()),
            _ => Err(bad("status must be warn, error or ok")),
        },
        _ => Err(bad("category must be change or alert")),
    }
}

/// A string of 1 to `max` characters.
fn within(field: &str, s: &str, max: usize) -> Result<(), Reject> {
    let n = s.chars().count();
    if n == 0 {
        return Err(bad(&format!("{field} is required")));
    }
    if n > max {
        return Err(Reject::TooLong(format!(
            "{field} is {n} characters, the limit is {max}"
        )));
    }
    Ok(())
}

fn bad(why: &str) -> Reject {
    Reject::Malformed(format!("Invalid event: {why}"))
}

/// The 202 body: `EventCreateResponsePayload`, with the event's id.
pub(crate) fn answer(event_id: u64, target: &Target) -> Value {
    let id = event_id.to_string();
    serde_json::json!({
        "data": {"type": "event", "attributes": {"attributes": {"evt": {"id": id, "uid": id}}}},
        "links": {"self": format!("https://{}/event/event?id={id}", target.site.web_host)},
    })
}
