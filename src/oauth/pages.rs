//! The HTML pages the browser sees at the end of a connect flow.
//!
//! Self-contained (inline CSS, no script, no external asset), every dynamic
//! value HTML-escaped, never a secret. Served with a strict CSP,
//! `Referrer-Policy: no-referrer` (the callback URL carries the code) and
//! `Cache-Control: no-store`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// HTML-escaping (one copy, in [`crate::text`]), under the name the status
/// page imports it by.
pub(crate) use crate::text::html_escape as escape;

/// A rendered page with its status.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub(crate) status: StatusCode,
    pub(crate) title: String,
    /// What happened.
    pub(crate) message: String,
    /// What to do next (may be empty).
    pub(crate) advice: String,
}

impl Page {
    pub(crate) fn success(org: Option<&str>, site: &str) -> Page {
        let who = org
            .map(|o| format!("Your Datadog organization {o} ({site})"))
            .unwrap_or_else(|| format!("Your Datadog account ({site})"));
        Page {
            status: StatusCode::OK,
            title: "Connected to Datadog".into(),
            message: format!("{who} is now connected."),
            advice: "You may now close this tab.".into(),
        }
    }

    pub(crate) fn failure(
        status: StatusCode,
        title: &str,
        message: impl Into<String>,
        advice: impl Into<String>,
    ) -> Page {
        Page {
            status,
            title: title.into(),
            message: message.into(),
            advice: advice.into(),
        }
    }

    pub(crate) fn html(&self) -> String {
        let ok = self.status.is_success();
        let accent = if ok { "#2e7d32" } else { "#b71c1c" };
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title><style>\
             body{{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f6f6f9;margin:0;\
             display:flex;min-height:100vh;align-items:center;justify-content:center;color:#222}}\
             main{{background:#fff;max-width:34rem;padding:2rem 2.5rem;border-radius:10px;\
             box-shadow:0 2px 12px rgba(0,0,0,.08);border-top:6px solid {accent}}}\
             h1{{font-size:1.4rem;margin:0 0 1rem;color:{accent}}}p{{line-height:1.5}}\
             .advice{{font-weight:600}}small{{color:#666}}</style></head>\
             <body><main><h1 id=\"title\">{title}</h1><p id=\"message\">{message}</p>\
             <p class=\"advice\" id=\"advice\">{advice}</p><small>ddrelay</small></main></body></html>\n",
            title = escape(&self.title),
            message = escape(&self.message),
            advice = escape(&self.advice),
        )
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.html()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_dynamic() {
        let p = Page::failure(
            StatusCode::BAD_REQUEST,
            "<t>",
            "<script>alert(1)</script>",
            "a&b \"q\"",
        );
        let html = p.html();
        assert!(!html.contains("<script>"));
        assert!(
            html.contains("&lt;script&gt;")
                && html.contains("a&amp;b &quot;q&quot;")
                && html.contains("&lt;t&gt;")
        );
    }

    #[test]
    fn success_page_says_close_tab() {
        let html = Page::success(Some("Acme"), "datadoghq.eu").html();
        assert!(html.contains("You may now close this tab."));
    }
}
