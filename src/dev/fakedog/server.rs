//! The HTTPS side: one router for every host of every Datadog site.
//!
//! A request's `Host` (or HTTP/2 `:authority`) is classified with
//! [`Site::classify_host`] into a site and a role (web, API, logs, trace,
//! events); a host
//! that is no Datadog host gets 404. The [`Target`] rides along as a request
//! extension, and each handler refuses a host of the wrong role with
//! Datadog's 404 (`{"errors":["Not found"]}`), e.g. `/api/v2/logs` on
//! `api.*` or `/oauth2/v1/token` on a web host.
//!
//! Any path no route serves is recorded (`api.rs`, [`super::ApiRequest`])
//! and answered with that 404.
//!
//! The middleware also applies faults ([`super::faults`]) and counts every
//! response per host and status.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::dev::tls::Abort;
use crate::site::{Endpoint, HostRole, Site};

use super::state::Shared;
use super::{api, incidents, intake, keys, oauth};

/// The Datadog host a request arrived at.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Lowercase, without port.
    pub(crate) host: String,
    pub(crate) site: &'static Site,
    pub(crate) role: HostRole,
}

impl Target {
    /// True for US1's app host, `app.datadoghq.com`: the region picker.
    pub(crate) fn is_region_picker(&self) -> bool {
        self.role == HostRole::Web && self.host == crate::site::us1().web_host
    }
}

/// Datadog's answer for a path that does not exist on this host.
pub(crate) fn not_found() -> Response {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({"errors": ["Not found"]}),
    )
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `{"errors":[message]}` with `status`: Datadog's API error body.
pub(crate) fn errors(status: StatusCode, message: &str) -> Response {
    json(status, serde_json::json!({ "errors": [message] }))
}

/// The request's host: the URI authority (HTTP/2), else the `Host` header.
fn request_host(req: &Request) -> Option<String> {
    let raw = req.uri().host().map(str::to_string).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map(|(h, _)| h).unwrap_or(h).to_string())
    })?;
    Some(raw.trim_end_matches('.').to_ascii_lowercase())
}

/// Builds the router served on the TLS listener.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut r = Router::new()
        .route(
            "/oauth2/v1/authorize",
            get(oauth::authorize).post(oauth::consent),
        )
        .route("/oauth2/v1/token", post(oauth::token))
        .route("/oauth2/v1/revoke", post(oauth::revoke))
        .route("/api/v2/api_keys/marketplace", post(keys::create))
        .route("/api/v1/validate", get(keys::validate))
        .route(
            "/api/v1/monitor",
            get(api::list_monitors).post(api::create_monitor),
        )
        .route("/api/v1/monitor/{id}", get(api::get_monitor))
        .route("/api/v2/users", get(api::list_users))
        .route(
            "/api/v2/incidents",
            get(incidents::list).post(incidents::create),
        )
        .route("/api/v2/incidents/{incident_id}", get(incidents::get));
    for endpoint in Endpoint::ALL {
        r = r.route(endpoint.path(), post(intake::submit));
    }
    for path in ["/api/v0.2/traces", "/api/v0.2/stats"] {
        r = r.route(path, post(intake::submit));
    }
    r.fallback(api::unknown)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            front_end,
        ))
        .with_state(shared)
}

/// Host classification, faults and per-host response counting; the time
/// each request spent here (`Shared::answering_ns`).
async fn front_end(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let response = classify_and_answer(&shared, req, next).await;
    let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    shared
        .answering_ns
        .fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
    response
}

/// The host's site and role, a fault if one matches, the handler's answer
/// and its count.
async fn classify_and_answer(shared: &Arc<Shared>, mut req: Request, next: Next) -> Response {
    let Some(host) = request_host(&req) else {
        return errors(StatusCode::BAD_REQUEST, "Missing Host header");
    };
    let Some((site, role)) = Site::classify_host(&host) else {
        shared.lock().record_request(&host, 404);
        return not_found();
    };
    let fault = shared
        .lock()
        .take_fault(&host, req.uri().path(), req.method().as_str());
    // What the handlers read: where the request arrived.
    let target = Target {
        host: host.clone(),
        site,
        role,
    };
    let response = match fault {
        None => {
            req.extensions_mut().insert(target);
            next.run(req).await
        }
        Some(fault) => {
            tracing::debug!(host = %host, path = %req.uri().path(), ?fault, "fakedog fault fires");
            if fault.late {
                req.extensions_mut().insert(target);
                // The work runs to completion whether or not the client
                // waits for the answer.
                let work = tokio::spawn(next.run(req));
                let response = match work.await {
                    Ok(r) => r,
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                };
                tokio::time::sleep(Duration::from_millis(fault.delay_ms.unwrap_or(0))).await;
                shared
                    .lock()
                    .record_request(&host, response.status().as_u16());
                return response;
            }
            if let Some(ms) = fault.delay_ms {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if fault.drop_connection {
                shared.lock().record_request(&host, 0);
                let mut r = StatusCode::INTERNAL_SERVER_ERROR.into_response();
                r.extensions_mut().insert(Abort);
                return r;
            }
            match fault.status {
                Some(status) => fault.response(status),
                None => {
                    req.extensions_mut().insert(target);
                    next.run(req).await
                }
            }
        }
    };
    shared
        .lock()
        .record_request(&host, response.status().as_u16());
    response
}
