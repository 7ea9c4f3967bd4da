//! v2 events (`POST /api/v2/events`): the rules of Datadog's
//! `EventCreateRequest` (docs/datadog.md "Events v2"). One event per
//! request, so this parses it as a `serde_json::Value`: speed does not
//! matter here, and the category decides which nested fields are required.

use serde_json::Value;

use super::Ctx;

/// `title`: 1 to 500 characters.
const TITLE_MAX: usize = 500;
/// `message`: 1 to 4000 characters.
const MESSAGE_MAX: usize = 4000;
/// `aggregation_key`: 1 to 100 characters.
const AGGREGATION_KEY_MAX: usize = 100;
/// `host`: 1 to 255 characters.
const HOST_MAX: usize = 255;
/// `tags`: 1 to 100 tags.
const TAGS_MAX: usize = 100;
/// `changed_resource.name`: at most 128 characters, not blank.
const RESOURCE_NAME_MAX: usize = 128;
/// The categories in General Availability.
const CATEGORIES: [&str; 2] = ["change", "alert"];
const RESOURCE_TYPES: [&str; 2] = ["feature_flag", "configuration"];
const ALERT_STATUSES: [&str; 3] = ["warn", "error", "ok"];
const ALERT_PRIORITIES: [&str; 5] = ["1", "2", "3", "4", "5"];

/// Checks one v2 event (compact JSON), reporting problems into `ctx`. An
/// `Err` is a JSON syntax error.
pub(super) fn check(ctx: &mut Ctx<'_>, item: &str) -> Result<(), serde_json::Error> {
    let v: Value = serde_json::from_str(item)?;
    let Some(data) = object(ctx, &v, "", "the body")
        .and_then(|top| required(ctx, top.get("data"), "data"))
        .and_then(|d| object(ctx, d, "data", "data"))
    else {
        return Ok(());
    };
    if let Some(t) = required(ctx, data.get("type"), "data.type") {
        one_of(ctx, t, "data.type", &["event"]);
    }
    let Some(attrs) = required(ctx, data.get("attributes"), "data.attributes")
        .and_then(|a| object(ctx, a, "data.attributes", "data.attributes"))
    else {
        return Ok(());
    };
    payload(ctx, attrs);
    Ok(())
}

/// `data.attributes`: the event itself.
fn payload(ctx: &mut Ctx<'_>, attrs: &serde_json::Map<String, Value>) {
    const P: &str = "data.attributes";
    if let Some(t) = required(ctx, attrs.get("title"), "data.attributes.title") {
        text(ctx, t, &format!("{P}.title"), TITLE_MAX);
    }
    let category = required(ctx, attrs.get("category"), "data.attributes.category")
        .and_then(|c| one_of(ctx, c, &format!("{P}.category"), &CATEGORIES));
    let custom = required(ctx, attrs.get("attributes"), "data.attributes.attributes")
        .and_then(|a| object(ctx, a, "data.attributes.attributes", "attributes"));
    if let (Some(category), Some(custom)) = (category, custom) {
        category_attributes(ctx, category, custom);
    }
    let optional = [
        ("message", MESSAGE_MAX),
        ("aggregation_key", AGGREGATION_KEY_MAX),
        ("host", HOST_MAX),
    ];
    for (field, max) in optional {
        if let Some(v) = present(attrs.get(field)) {
            text(ctx, v, &format!("{P}.{field}"), max);
        }
    }
    if let Some(tags) = present(attrs.get("tags")) {
        tag_list(ctx, tags);
    }
    if let Some(id) = present(attrs.get("integration_id")) {
        string(ctx, id, &format!("{P}.integration_id"));
    }
    if let Some(ts) = present(attrs.get("timestamp")) {
        timestamp(ctx, ts);
    }
}

/// The category's own required fields.
fn category_attributes(ctx: &mut Ctx<'_>, category: &str, custom: &serde_json::Map<String, Value>) {
    const P: &str = "data.attributes.attributes";
    if category == "change" {
        let Some(r) = required(
            ctx,
            custom.get("changed_resource"),
            &format!("{P}.changed_resource"),
        )
        .and_then(|r| object(ctx, r, &format!("{P}.changed_resource"), "changed_resource")) else {
            return;
        };
        if let Some(name) = required(ctx, r.get("name"), &format!("{P}.changed_resource.name")) {
            let field = format!("{P}.changed_resource.name");
            if text(ctx, name, &field, RESOURCE_NAME_MAX).is_some_and(|s| s.trim().is_empty()) {
                ctx.fail(format_args!("{field}"), "must not be blank".into());
            }
        }
        if let Some(t) = required(ctx, r.get("type"), &format!("{P}.changed_resource.type")) {
            one_of(
                ctx,
                t,
                &format!("{P}.changed_resource.type"),
                &RESOURCE_TYPES,
            );
        }
    } else {
        if let Some(s) = required(ctx, custom.get("status"), &format!("{P}.status")) {
            one_of(ctx, s, &format!("{P}.status"), &ALERT_STATUSES);
        }
        if let Some(p) = present(custom.get("priority")) {
            one_of(ctx, p, &format!("{P}.priority"), &ALERT_PRIORITIES);
        }
    }
}

fn tag_list(ctx: &mut Ctx<'_>, tags: &Value) {
    const F: &str = "data.attributes.tags";
    let Some(list) = tags.as_array() else {
        ctx.fail(
            format_args!("{F}"),
            format!("must be an array of strings, got {}", kind(tags)),
        );
        return;
    };
    if list.is_empty() || list.len() > TAGS_MAX {
        let m = format!("{} tags; Datadog accepts 1 to {TAGS_MAX}", list.len());
        ctx.fail(format_args!("{F}"), m);
    }
    for (j, t) in list.iter().enumerate() {
        string(ctx, t, &format!("{F}[{j}]"));
    }
}

/// `timestamp`: an ISO 8601 string. An RFC 3339 one is checked against the
/// window (a stale event is dropped, as Datadog drops it); any other string
/// is left for Datadog to read, as a log's date string is.
fn timestamp(ctx: &mut Ctx<'_>, ts: &Value) {
    const F: &str = "data.attributes.timestamp";
    let Some(s) = string(ctx, ts, F) else {
        return;
    };
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, rfc3339) {
        let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        ctx.check_time(ms, format_args!("{F}"));
    }
}

/// `null` counts as absent, as the clients' models allow.
fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

fn required<'v>(ctx: &mut Ctx<'_>, v: Option<&'v Value>, field: &str) -> Option<&'v Value> {
    let v = present(v);
    if v.is_none() {
        ctx.fail(format_args!("{field}"), "is required".into());
    }
    v
}

fn object<'v>(
    ctx: &mut Ctx<'_>,
    v: &'v Value,
    field: &str,
    what: &str,
) -> Option<&'v serde_json::Map<String, Value>> {
    let o = v.as_object();
    if o.is_none() {
        let m = format!("{what} must be a JSON object, got {}", kind(v));
        ctx.fail(format_args!("{field}"), m);
    }
    o
}

fn string<'v>(ctx: &mut Ctx<'_>, v: &'v Value, field: &str) -> Option<&'v str> {
    let s = v.as_str();
    if s.is_none() {
        ctx.fail(
            format_args!("{field}"),
            format!("must be a string, got {}", kind(v)),
        );
    }
    s
}

/// A string of 1 to `max` characters.
fn text<'v>(ctx: &mut Ctx<'_>, v: &'v Value, field: &str, max: usize) -> Option<&'v str> {
    let s = string(ctx, v, field)?;
    let n = s.chars().count();
    if n == 0 || n > max {
        let m = format!("{n} characters; Datadog accepts 1 to {max}");
        ctx.fail(format_args!("{field}"), m);
    }
    Some(s)
}

fn one_of<'v>(ctx: &mut Ctx<'_>, v: &'v Value, field: &str, allowed: &[&str]) -> Option<&'v str> {
    let s = string(ctx, v, field)?;
    if allowed.contains(&s) {
        Some(s)
    } else {
        let m = format!("must be one of {}, got \"{s}\"", allowed.join(", "));
        ctx.fail(format_args!("{field}"), m);
        None
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
