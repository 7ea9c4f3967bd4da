//! API keys (docs/datadog.md "API keys"): the private marketplace key
//! endpoint and key validation.
//!
//! - `POST /api/v2/api_keys/marketplace` with `Authorization: Bearer`: 201
//!   with the JSON:API body of Datadog's example (status UNCONFIRMED there;
//!   201 as for `POST /api/v2/api_keys`). One key per (org, client), named
//!   `<client name> OAuth Client API Key`; while one is live a new creation
//!   answers 409 `{"errors":["An API key with this name already exists"]}`
//!   (secondary evidence; docs/datadog.md "The marketplace API key"). A
//!   missing, expired or revoked token, or one without `api_keys_write`,
//!   gets 403 `{"errors":["Forbidden"]}` (docs/datadog.md "Calling
//!   Datadog's API with the access token").
//! - `GET /api/v1/validate` with `DD-API-KEY`: 200 `{"valid":true}` or 403
//!   (docs/datadog.md "Key validation").
//!
//! Both must arrive at `api.<the org's domain>`; a token or key of another
//! site's org is unknown there (403) and recorded as a violation.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Extension;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use crate::site::HostRole;

use super::server::{Target, errors, json, not_found};
use super::state::{API_KEYS_WRITE, ApiKey, Shared, State, new_key_value, uuid};

/// Why a key was not created.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub(crate) enum KeyError {
    #[error("Forbidden")]
    Forbidden,
    #[error("An API key with this name already exists")]
    Exists,
}

/// `2021-05-06T16:32:07.411970+00:00`, the shape of Datadog's `created_at`.
pub(crate) fn timestamp(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
    );
    t.format(&format).unwrap_or_default()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

/// The `DD-API-KEY` header, or the deprecated `api_key` query parameter
/// (docs/datadog.md "Intakes").
pub(crate) fn api_key(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(k) = headers.get("dd-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim().to_string()).filter(|k| !k.is_empty());
    }
    let query = query?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, v)| k == "api_key" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// `POST /api/v2/api_keys/marketplace`.
pub(crate) async fn create(
    AxState(shared): AxState<Arc<Shared>>,
    Extension(target): Extension<Target>,
    headers: HeaderMap,
) -> Response {
    if target.role != HostRole::Api {
        return not_found();
    }
    let result = shared.lock().create_key(&target, bearer(&headers));
    match result {
        Ok(body) => json(StatusCode::CREATED, body),
        Err(KeyError::Exists) => errors(StatusCode::CONFLICT, &KeyError::Exists.to_string()),
        Err(KeyError::Forbidden) => errors(StatusCode::FORBIDDEN, "Forbidden"),
    }
}

/// `GET /api/v1/validate`.
pub(crate) async fn validate(
    AxState(shared): AxState<Arc<Shared>>,
    Extension(target): Extension<Target>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if target.role != HostRole::Api {
        return not_found();
    }
    let key = api_key(&headers, uri.query());
    let valid = key.is_some_and(|k| {
        shared
            .lock()
            .check_key(&target, "/api/v1/validate", &k)
            .is_some()
    });
    if valid {
        json(StatusCode::OK, serde_json::json!({"valid": true}))
    } else {
        errors(StatusCode::FORBIDDEN, "Forbidden")
    }
}

impl State {
    fn create_key(
        &mut self,
        target: &Target,
        token: Option<&str>,
    ) -> Result<serde_json::Value, KeyError> {
        let grant = token
            .and_then(|t| self.bearer_grant(t))
            .cloned()
            .ok_or(KeyError::Forbidden)?;
        let org = self.org(&grant.org).cloned().ok_or(KeyError::Forbidden)?;
        let path = "/api/v2/api_keys/marketplace";
        if self.wrong_site(target, path, &org.id, org.site, "access token", "used") {
            return Err(KeyError::Forbidden);
        }
        if !grant.scopes.iter().any(|s| s == API_KEYS_WRITE) {
            return Err(KeyError::Forbidden);
        }
        if self
            .keys
            .values()
            .any(|k| k.live && k.org == org.id && k.client_id == grant.client_id)
        {
            return Err(KeyError::Exists);
        }
        let client_name = self
            .clients
            .get(&grant.client_id)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let key = new_key_value();
        let id = uuid();
        let created = timestamp(self.now());
        self.keys.insert(
            key.clone(),
            ApiKey {
                id: id.clone(),
                org: org.id.clone(),
                client_id: grant.client_id.clone(),
                live: true,
            },
        );
        *self.rec.keys_created.entry(org.id.clone()).or_default() += 1;
        tracing::info!(org = %org.id, client = %grant.client_id, "fakedog created a marketplace api key");
        // Datadog names the user who authorized; fakedog has no users, so
        // each key gets a fresh user id.
        let user = serde_json::json!({"data": {"type": "users", "id": uuid()}});
        Ok(serde_json::json!({
            "data": {
                "type": "api_keys",
                "id": id,
                "attributes": {
                    "created_at": created,
                    "key": key,
                    "last4": key[key.len() - 4..],
                    "modified_at": created,
                    "name": format!("{client_name} OAuth Client API Key"),
                },
                "relationships": {
                    "created_by": user,
                    "modified_by": user,
                },
            }
        }))
    }

    /// The org id of a live key usable at `target`; a key of another site's
    /// org is refused and recorded as a violation.
    pub(crate) fn check_key(&mut self, target: &Target, path: &str, key: &str) -> Option<String> {
        let org_id = self.live_key(key)?.org.clone();
        let site = self.org(&org_id)?.site;
        if self.wrong_site(target, path, &org_id, site, "API key", "used") {
            return None;
        }
        Some(org_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_at_has_datadogs_shape() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_620_318_727_411_970);
        assert_eq!(timestamp(t), "2021-05-06T16:32:07.411970+00:00");
    }

    #[test]
    fn api_key_from_header_or_query() {
        let mut h = HeaderMap::new();
        assert_eq!(api_key(&h, Some("api_key=abc")), Some("abc".into()));
        assert_eq!(api_key(&h, Some("x=1")), None);
        h.insert("DD-API-KEY", "k1".parse().unwrap());
        assert_eq!(api_key(&h, Some("api_key=abc")), Some("k1".into()));
    }
}
