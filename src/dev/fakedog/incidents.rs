//! Datadog's Incidents API v2, the three calls a partner integration needs
//! to open an incident in a customer's org and read it back
//! (docs/datadog.md "Incidents"), on `api.<domain>` with an OAuth access
//! token:
//!
//! | route | scope | answers |
//! |---|---|---|
//! | `POST /api/v2/incidents` | `incident_write` | 201 `{"data":{"id":"<uuid>","type":"incidents","attributes":{..}}}`; 400 `{"errors":[..]}` naming what is missing or wrong |
//! | `GET /api/v2/incidents/{incident_id}` | `incident_read` | 200, the same document; 404 `{"errors":["Not found"]}` for an id the token's org does not have |
//! | `GET /api/v2/incidents[?page[size]=..&page[offset]=..]` | `incident_read` | 200 `{"data":[..],"included":[],"meta":{"pagination":{"offset","size","next_offset"}}}`, oldest first; `page[size]` 1-100 (default 10), else 400 |
//!
//! Tokens and scopes are checked exactly as for the monitors (`api.rs`,
//! [`State::api_org`]): a missing, expired or revoked token, one without
//! the route's scope, or one of another site's org gets 403
//! `{"errors":["Forbidden"]}`. The org is always the token's: an incident
//! lands in that org and only that org reads it.
//!
//! A create body is checked as Datadog's model has it: `data.type` is
//! `incidents`; `data.attributes.title` (a non-empty string) and
//! `customer_impacted` (a boolean) are required; `customer_impact_scope`
//! is required when `customer_impacted` is true; `fields` maps names to
//! `{"type","value"}`, and `fields.severity`, when given, is one of
//! Datadog's severities. The answer fills in what Datadog computes:
//! `public_id` (1, 2, … per org), `created`, `modified`, `declared`,
//! `state` (`fields.state`, default `active`), `severity` (default
//! `UNKNOWN`). A refused body is not a [`super::Violation`]: the relay
//! forwards what the partner wrote.
//!
//! Incidents live in memory (none are seeded); they survive
//! [`State::reset`], as monitors do.

use axum::body::Body;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::api::{ApiCall, ok_json};
use super::server::errors;
use super::state::{State, uuid};

/// Reads incidents (`GET /api/v2/incidents`, `GET /api/v2/incidents/{id}`).
pub const INCIDENT_READ: &str = "incident_read";
/// Creates incidents (`POST /api/v2/incidents`).
pub const INCIDENT_WRITE: &str = "incident_write";

/// Largest create body read.
const MAX_CREATE_BODY: usize = 1 << 20;
/// `page[size]` when not given, and its largest value ("The maximum
/// allowed value is 100").
const DEFAULT_PAGE_SIZE: u64 = 10;
const MAX_PAGE_SIZE: u64 = 100;
/// Datadog's `IncidentSeverity` values.
const SEVERITIES: [&str; 7] = [
    "UNKNOWN", "SEV-0", "SEV-1", "SEV-2", "SEV-3", "SEV-4", "SEV-5",
];
/// Datadog's field types: single-value (`dropdown`, `textbox`) and
/// multiple-value (`multiselect`, `textarray`, `metrictag`, `autocomplete`).
const FIELD_TYPES: [&str; 6] = [
    "dropdown",
    "textbox",
    "multiselect",
    "textarray",
    "metrictag",
    "autocomplete",
];

/// An incident of one org: the `data` member of Datadog's answers.
#[derive(Debug, Clone)]
pub(crate) struct Incident {
    pub(crate) org: String,
    pub(crate) id: String,
    pub(crate) data: Value,
}

/// A create request that passed the checks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewIncident {
    attributes: Map<String, Value>,
    fields: Map<String, Value>,
}

impl NewIncident {
    /// Checks a `POST /api/v2/incidents` body; the error names what is
    /// missing or wrong.
    pub(crate) fn parse(body: &[u8]) -> Result<NewIncident, String> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
        let data = v
            .get("data")
            .and_then(Value::as_object)
            .ok_or("data is required (an object)")?;
        if data.get("type").and_then(Value::as_str) != Some("incidents") {
            return Err("data.type must be \"incidents\"".into());
        }
        let attributes = data
            .get("attributes")
            .and_then(Value::as_object)
            .ok_or("data.attributes is required (an object)")?
            .clone();
        let text = |k: &str| attributes.get(k).and_then(Value::as_str).map(str::trim);
        if text("title").is_none_or(str::is_empty) {
            return Err("data.attributes.title is required (a non-empty string)".into());
        }
        let impacted = attributes
            .get("customer_impacted")
            .and_then(Value::as_bool)
            .ok_or("data.attributes.customer_impacted is required (true or false)")?;
        if impacted && text("customer_impact_scope").is_none_or(str::is_empty) {
            return Err(
                "data.attributes.customer_impact_scope is required when customer_impacted is true"
                    .into(),
            );
        }
        let fields = match attributes.get("fields") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(f)) => f.clone(),
            Some(_) => return Err("data.attributes.fields must be an object".into()),
        };
        for (name, field) in &fields {
            check_field(name, field)?;
        }
        Ok(NewIncident { attributes, fields })
    }

    /// The incident's `data` as Datadog answers it.
    fn data(self, id: &str, public_id: u64, now: &str) -> Value {
        let mut fields = self.fields;
        let value = |fields: &Map<String, Value>, k: &str, default: &str| {
            fields
                .get(k)
                .and_then(|f| f.get("value"))
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_string()
        };
        let state = value(&fields, "state", "active");
        let severity = value(&fields, "severity", "UNKNOWN");
        for (k, v) in [("state", &state), ("severity", &severity)] {
            fields
                .entry(k)
                .or_insert_with(|| json!({"type": "dropdown", "value": v}));
        }
        let a = &self.attributes;
        let given = |k: &str| a.get(k).cloned().unwrap_or(Value::Null);
        json!({
            "id": id,
            "type": "incidents",
            "attributes": {
                "title": given("title"),
                "customer_impacted": given("customer_impacted"),
                "customer_impact_scope": given("customer_impact_scope"),
                "customer_impact_start": null,
                "customer_impact_end": null,
                "customer_impact_duration": 0,
                "fields": fields,
                "severity": severity,
                "state": state,
                "public_id": public_id,
                "created": now,
                "modified": now,
                "declared": now,
                "detected": now,
                "resolved": null,
                "archived": null,
                "is_test": a.get("is_test").and_then(Value::as_bool).unwrap_or(false),
                "notification_handles": given("notification_handles"),
                "time_to_detect": 0,
                "time_to_internal_response": 0,
                "time_to_repair": 0,
                "time_to_resolve": 0,
            },
        })
    }
}

/// One entry of `fields`: `{"type": <known type>, "value": <string, list
/// of strings or null>}`, `severity` one of [`SEVERITIES`].
fn check_field(name: &str, field: &Value) -> Result<(), String> {
    let at = format!("data.attributes.fields.{name}");
    let field = field
        .as_object()
        .ok_or_else(|| format!("{at} must be an object with type and value"))?;
    if let Some(t) = field.get("type")
        && !t.as_str().is_some_and(|t| FIELD_TYPES.contains(&t))
    {
        return Err(format!(
            "{at}.type must be one of {}",
            FIELD_TYPES.join(", ")
        ));
    }
    let value = field.get("value").unwrap_or(&Value::Null);
    let ok = match value {
        Value::Null | Value::String(_) => true,
        Value::Array(items) => items.iter().all(Value::is_string),
        _ => false,
    };
    if !ok {
        return Err(format!(
            "{at}.value must be a string, a list of strings or null"
        ));
    }
    if name == "severity"
        && let Some(s) = value.as_str()
        && !SEVERITIES.contains(&s)
    {
        return Err(format!(
            "{at}.value must be one of {}",
            SEVERITIES.join(", ")
        ));
    }
    Ok(())
}

/// `page[size]` and `page[offset]` from a query.
fn page(query: Option<&str>) -> Result<(u64, u64), String> {
    let mut size = DEFAULT_PAGE_SIZE;
    let mut offset = 0;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "page[size]" => {
                size = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                    .ok_or_else(|| {
                        format!("page[size] must be an integer from 1 to {MAX_PAGE_SIZE}")
                    })?;
            }
            "page[offset]" => {
                offset = v
                    .parse()
                    .map_err(|_| "page[offset] must be a non-negative integer".to_string())?;
            }
            _ => {}
        }
    }
    Ok((size, offset))
}

impl State {
    /// Stores a new incident for `org`; its `data`.
    fn add_incident(&mut self, org: &str, new: NewIncident) -> Value {
        let public_id = self.incidents.iter().filter(|i| i.org == org).count() as u64 + 1;
        let id = uuid();
        let now = super::keys::timestamp(self.now());
        let data = new.data(&id, public_id, &now);
        self.incidents.push(Incident {
            org: org.to_string(),
            id,
            data: data.clone(),
        });
        data
    }

    /// The incidents of `org` (id or name), oldest first.
    pub(crate) fn incidents_of(&self, org: &str) -> Vec<Value> {
        let Some(org) = self.org(org) else {
            return Vec::new();
        };
        self.incidents
            .iter()
            .filter(|i| i.org == org.id)
            .map(|i| i.data.clone())
            .collect()
    }
}

/// `POST /api/v2/incidents`.
pub(crate) async fn create(call: ApiCall, body: Body) -> Response {
    let org = match call.caller(INCIDENT_WRITE) {
        Ok(org) => org,
        Err(answer) => return *answer,
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_CREATE_BODY).await else {
        return errors(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large");
    };
    let new = match NewIncident::parse(&body) {
        Ok(new) => new,
        Err(why) => return errors(StatusCode::BAD_REQUEST, &why),
    };
    let data = call.shared.lock().add_incident(&org.id, new);
    ok_json(StatusCode::CREATED, &json!({ "data": data }), "incidents")
}

/// `GET /api/v2/incidents/{incident_id}`.
pub(crate) async fn get(call: ApiCall, Path(id): Path<String>) -> Response {
    let org = match call.caller(INCIDENT_READ) {
        Ok(org) => org,
        Err(answer) => return *answer,
    };
    let st = call.shared.lock();
    match st.incidents.iter().find(|i| i.id == id && i.org == org.id) {
        Some(i) => ok_json(StatusCode::OK, &json!({ "data": i.data }), "incidents"),
        None => errors(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// `GET /api/v2/incidents`.
pub(crate) async fn list(call: ApiCall) -> Response {
    let org = match call.caller(INCIDENT_READ) {
        Ok(org) => org,
        Err(answer) => return *answer,
    };
    let st = call.shared.lock();
    let (size, offset) = match page(call.uri.query()) {
        Ok(p) => p,
        Err(why) => return errors(StatusCode::BAD_REQUEST, &why),
    };
    let data: Vec<Value> = st
        .incidents_of(&org.id)
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(size as usize)
        .collect();
    let next_offset = offset.saturating_add(size);
    let pagination = json!({"offset": offset, "size": size, "next_offset": next_offset});
    ok_json(
        StatusCode::OK,
        &json!({"data": data, "included": [], "meta": {"pagination": pagination}}),
        "incidents",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<NewIncident, String> {
        NewIncident::parse(v.to_string().as_bytes())
    }

    fn with(attributes: Value) -> Value {
        json!({"data": {"type": "incidents", "attributes": attributes}})
    }

    #[test]
    fn a_create_body_names_what_is_missing_or_wrong() {
        for (body, named) in [
            (json!({}), "data is required"),
            (json!({"data": {"attributes": {}}}), "data.type"),
            (
                json!({"data": {"type": "incidents"}}),
                "data.attributes is required",
            ),
            (with(json!({"customer_impacted": false})), "title"),
            (
                with(json!({"title": "  ", "customer_impacted": false})),
                "title",
            ),
            (with(json!({"title": "t"})), "customer_impacted"),
            (
                with(json!({"title": "t", "customer_impacted": "no"})),
                "customer_impacted",
            ),
            (
                with(json!({"title": "t", "customer_impacted": true})),
                "customer_impact_scope",
            ),
            (
                with(json!({"title": "t", "customer_impacted": false, "fields": []})),
                "fields",
            ),
            (
                with(json!({"title": "t", "customer_impacted": false,
                    "fields": {"severity": {"type": "dropdown", "value": "SEV-9"}}})),
                "fields.severity.value",
            ),
            (
                with(json!({"title": "t", "customer_impacted": false,
                    "fields": {"teams": {"type": "multiselect", "value": [1]}}})),
                "fields.teams.value",
            ),
            (
                with(json!({"title": "t", "customer_impacted": false,
                    "fields": {"x": {"type": "radio", "value": "a"}}})),
                "fields.x.type",
            ),
        ] {
            let e = parse(body.clone()).unwrap_err();
            assert!(e.contains(named), "{body}: {e}");
        }
        assert!(
            NewIncident::parse(b"{")
                .unwrap_err()
                .contains("invalid JSON")
        );
    }

    #[test]
    fn the_answer_fills_in_what_datadog_computes() {
        let new = parse(with(json!({
            "title": "Checkout down",
            "customer_impacted": true,
            "customer_impact_scope": "EU checkout",
            "fields": {"severity": {"type": "dropdown", "value": "SEV-1"},
                       "teams": {"type": "multiselect", "value": ["payments"]}},
        })))
        .unwrap();
        let d = new.data(
            "00000000-0000-4000-8000-000000000000",
            3,
            "2024-01-02T03:04:05.000000+00:00",
        );
        assert_eq!(d["type"], "incidents");
        let a = &d["attributes"];
        assert_eq!(a["public_id"], 3);
        assert_eq!(a["severity"], "SEV-1");
        assert_eq!(a["state"], "active");
        assert_eq!(a["fields"]["state"]["value"], "active");
        assert_eq!(a["fields"]["teams"]["value"], json!(["payments"]));
        assert_eq!(a["customer_impact_scope"], "EU checkout");
        assert_eq!(a["created"], "2024-01-02T03:04:05.000000+00:00");
        assert_eq!(a["resolved"], Value::Null);
    }

    #[test]
    fn pages_are_bounded() {
        assert_eq!(page(None), Ok((10, 0)));
        assert_eq!(page(Some("page[size]=2&page[offset]=4")), Ok((2, 4)));
        assert_eq!(page(Some("page%5Bsize%5D=100")), Ok((100, 0)));
        for q in [
            "page[size]=0",
            "page[size]=101",
            "page[size]=x",
            "page[offset]=-1",
        ] {
            assert!(page(Some(q)).unwrap_err().starts_with("page["), "{q}");
        }
    }
}
