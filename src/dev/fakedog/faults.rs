//! Faults: canned failures that answer instead of the emulated Datadog.
//!
//! A [`Fault`] matches requests by host, path and method (each optional) and
//! fires for the next `times` matching requests, for a time window on
//! fakedog's clock, or until cleared. It answers a status (500, 503, 408,
//! 429 with `X-RateLimit-*` and `Retry-After`, or any other), optionally
//! after a delay, or drops the connection; a fault with only a delay slows
//! the request down and then lets Datadog answer, and a `late` one lets
//! Datadog do the work at once and holds back its answer.
//!
//! A faulted request is never processed: nothing is recorded but the
//! response status (what a client sees when Datadog's front end fails).
//! fakeintake's `POST /fakeintake/configure/override` maps onto a fault with
//! no limit; see [`Override`].

use std::time::{Duration, SystemTime};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::site::Endpoint;

/// A canned failure. Build one with [`Fault::status`], [`Fault::rate_limited`],
/// [`Fault::drop_connection`] or [`Fault::delay`], then narrow it.
/// The same shape is the JSON body of `POST /fakedog/faults`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fault {
    /// Only requests to this host (e.g. `api.datadoghq.eu`).
    pub(crate) host: Option<String>,
    /// Only requests to this path (e.g. `/api/v2/series`).
    pub(crate) path: Option<String>,
    /// Only this method (e.g. `POST`).
    pub(crate) method: Option<String>,
    /// The status to answer; none: after `delay_ms`, Datadog answers.
    pub(crate) status: Option<u16>,
    /// Fire for the next N matching requests only.
    pub(crate) times: Option<u32>,
    /// Fire for this many seconds (fakedog's clock) from now.
    pub(crate) for_secs: Option<u64>,
    /// Wait this long before answering (or dropping).
    pub(crate) delay_ms: Option<u64>,
    /// Drop the connection instead of answering.
    pub(crate) drop_connection: bool,
    /// With `delay_ms` and no status: Datadog does the work first, then the
    /// answer takes `delay_ms` to come back (a slow or lost response: the
    /// effect happened whether or not the client waits for it).
    pub(crate) late: bool,
    /// For 429 (and 503): `Retry-After` and `X-RateLimit-Reset` in seconds.
    pub(crate) retry_after_secs: Option<u64>,
    /// The response body; default: Datadog's `{"errors":["..."]}`.
    pub(crate) body: Option<String>,
    /// The body's content type; default `application/json`.
    pub(crate) content_type: Option<String>,
}

/// A fault waiting to fire.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ActiveFault {
    pub(crate) id: u64,
    #[serde(flatten)]
    pub(crate) fault: Fault,
    pub(crate) remaining: Option<u32>,
    #[serde(skip)]
    pub(crate) until: Option<SystemTime>,
}

impl Fault {
    /// Answer `status` (e.g. 500, 503, 408).
    pub fn status(status: u16) -> Fault {
        Fault {
            status: Some(status),
            ..Fault::default()
        }
    }

    /// Answer 429 with `X-RateLimit-Reset` and `Retry-After` of `retry_after`
    /// (whole seconds, rounded up).
    pub fn rate_limited(retry_after: Duration) -> Fault {
        Fault {
            status: Some(429),
            retry_after_secs: Some(
                retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0),
            ),
            ..Fault::default()
        }
    }

    /// Drop the connection without answering.
    pub fn drop_connection() -> Fault {
        Fault {
            drop_connection: true,
            ..Fault::default()
        }
    }

    /// Wait `delay`, then let Datadog answer as usual.
    pub fn delay(delay: Duration) -> Fault {
        Fault {
            delay_ms: Some(delay.as_millis() as u64),
            ..Fault::default()
        }
    }

    /// Let Datadog do the work at once and answer after `delay` (a token
    /// rotated, a key created, and the client not told yet).
    pub fn late_answer(delay: Duration) -> Fault {
        Fault {
            late: true,
            ..Fault::delay(delay)
        }
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Fault {
        self.times = Some(n);
        self
    }

    /// Only for `window` from now (fakedog's clock; see `FakeDog::advance`).
    pub fn for_duration(mut self, window: Duration) -> Fault {
        self.for_secs = Some(window.as_secs().max(1));
        self
    }

    /// Only requests to `host`.
    pub fn on_host(mut self, host: impl Into<String>) -> Fault {
        self.host = Some(host.into());
        self
    }

    /// Only requests to `path`.
    pub fn on_path(mut self, path: impl Into<String>) -> Fault {
        self.path = Some(path.into());
        self
    }

    /// Only requests to this intake's path.
    pub fn on_endpoint(self, endpoint: Endpoint) -> Fault {
        self.on_path(endpoint.path())
    }

    /// Wait `delay` before answering or dropping.
    pub fn with_delay(mut self, delay: Duration) -> Fault {
        self.delay_ms = Some(delay.as_millis() as u64);
        self
    }

    /// Answer this body (JSON unless [`Fault::content_type`] says otherwise).
    pub fn with_body(mut self, body: impl Into<String>) -> Fault {
        self.body = Some(body.into());
        self
    }

    /// Refuses a fault that could never fire or answers nonsense.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(s) = self.status
            && !(100..=599).contains(&s)
        {
            return Err(format!("status {s} is not an HTTP status"));
        }
        if self.status.is_none() && !self.drop_connection && self.delay_ms.is_none() {
            return Err("a fault needs a status, drop_connection or delay_ms".into());
        }
        if self.late && (self.status.is_some() || self.drop_connection || self.delay_ms.is_none()) {
            return Err("late needs delay_ms and neither status nor drop_connection".into());
        }
        if self.times == Some(0) {
            return Err("times must be at least 1".into());
        }
        if self.for_secs == Some(0) {
            return Err("for_secs must be at least 1".into());
        }
        Ok(())
    }

    pub(crate) fn matches(&self, host: &str, path: &str, method: &str) -> bool {
        self.host
            .as_deref()
            .is_none_or(|h| h.eq_ignore_ascii_case(host))
            && self.path.as_deref().is_none_or(|p| p == path)
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }

    /// The canned response (for a fault with a status).
    pub(crate) fn response(&self, status: u16) -> Response {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let body = self.body.clone().unwrap_or_else(|| {
            let text = match status {
                408 => "Request timeout",
                429 => "Too many requests",
                500 => "Internal Server Error",
                503 => "Service Unavailable",
                _ => code.canonical_reason().unwrap_or("Error"),
            };
            serde_json::json!({ "errors": [text] }).to_string()
        });
        let content_type = self
            .content_type
            .as_deref()
            .unwrap_or("application/json")
            .to_string();
        let mut resp = (code, body).into_response();
        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&content_type) {
            headers.insert(header::CONTENT_TYPE, v);
        }
        let retry = self.retry_after_secs.or((status == 429).then_some(1));
        if status == 429 {
            // Datadog's rate-limit headers (docs/datadog.md "Rate limits").
            let reset = retry.unwrap_or(1);
            for (name, value) in [
                ("x-ratelimit-limit", "100".to_string()),
                ("x-ratelimit-period", "60".to_string()),
                ("x-ratelimit-remaining", "0".to_string()),
                ("x-ratelimit-reset", reset.to_string()),
                ("x-ratelimit-name", "fakedog".to_string()),
            ] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(name, v);
                }
            }
        }
        if let Some(secs) = retry
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            headers.insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// fakeintake's `api.ResponseOverride`: `{"endpoint","status_code",
/// "content_type","method","body"}` with `body` as base64 (Go's `[]byte`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Override {
    pub(crate) endpoint: String,
    pub(crate) status_code: u16,
    #[serde(default)]
    pub(crate) content_type: Option<String>,
    #[serde(default)]
    pub(crate) method: Option<String>,
    #[serde(default)]
    pub(crate) body: Option<String>,
}

impl Override {
    /// The method, defaulting to POST like fakeintake.
    pub(crate) fn method(&self) -> String {
        self.method
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "POST".into())
            .to_ascii_uppercase()
    }

    /// The persistent fault this override stands for. A 2xx override means
    /// "answer normally again" (fakedog's success bodies are Datadog's), so
    /// it yields no fault and only clears earlier overrides.
    pub(crate) fn to_fault(&self) -> Result<Option<Fault>, String> {
        let body = match &self.body {
            None => None,
            Some(b) if b.is_empty() => None,
            Some(b) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|_| "body must be base64 (fakeintake sends a Go []byte)")?;
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
        };
        if (200..300).contains(&self.status_code) {
            return Ok(None);
        }
        let fault = Fault {
            path: Some(self.endpoint.clone()),
            method: Some(self.method()),
            status: Some(self.status_code),
            body,
            content_type: self.content_type.clone().filter(|c| !c.is_empty()),
            ..Fault::default()
        };
        fault.check()?;
        Ok(Some(fault))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let f = Fault::status(503)
            .on_host("api.datadoghq.eu")
            .on_path("/api/v2/series");
        assert!(f.matches("API.datadoghq.eu", "/api/v2/series", "POST"));
        assert!(!f.matches("api.datadoghq.com", "/api/v2/series", "POST"));
        assert!(!f.matches("api.datadoghq.eu", "/api/v1/series", "POST"));
        assert!(Fault::status(500).matches("any", "/any", "GET"));
    }

    #[test]
    fn rate_limit_headers() {
        let r = Fault::rate_limited(Duration::from_millis(2500)).response(429);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        assert_eq!(r.headers()["x-ratelimit-reset"], "3");
        assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    }

    #[test]
    fn checks() {
        assert!(Fault::default().check().is_err());
        assert!(Fault::status(1000).check().is_err());
        assert!(Fault::status(503).times(0).check().is_err());
        assert!(Fault::drop_connection().check().is_ok());
        assert!(Fault::delay(Duration::from_millis(5)).check().is_ok());
    }

    #[test]
    fn overrides() {
        let o: Override = serde_json::from_str(
            r#"{"endpoint":"/api/v2/series","status_code":503,"body":"eyJhIjoxfQ=="}"#,
        )
        .unwrap();
        let f = o.to_fault().unwrap().unwrap();
        assert_eq!(f.status, Some(503));
        assert_eq!(f.method.as_deref(), Some("POST"));
        assert_eq!(f.body.as_deref(), Some(r#"{"a":1}"#));
        let ok: Override =
            serde_json::from_str(r#"{"endpoint":"/api/v2/series","status_code":200}"#).unwrap();
        assert_eq!(ok.to_fault().unwrap(), None);
    }
}
