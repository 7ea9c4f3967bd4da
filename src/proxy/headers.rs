//! **Header hygiene**: request headers are an allow-list
//! ([`FORWARDED_HEADERS`] + `Accept-Encoding` limited to codings ddrelay can
//! decode + `User-Agent` suffixed with ddrelay's). `Authorization`,
//! `DD-API-KEY`, `DD-APPLICATION-KEY`, `Cookie`, `Host`, hop-by-hop and
//! everything else are dropped, and so are the `api_key` and
//! `application_key` query parameters. Response headers lose hop-by-hop
//! headers, `Set-Cookie`, `Authorization`, `WWW-Authenticate`, `Alt-Svc`,
//! HSTS, any `DD-Relay-*` and any header whose value contains the token.
//! `TRACE` (which echoes request headers) and `CONNECT` are refused.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::datadog::USER_AGENT;
use crate::secret::Secret;
use crate::text::clip;

/// Request headers forwarded as they are. Everything else is dropped.
pub(crate) const FORWARDED_HEADERS: [HeaderName; 7] = [
    header::ACCEPT,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// Content codings a client may ask Datadog for: the ones `codec.rs` can
/// decode, so an explained 401/403 body can always be read.
const ACCEPTED_CODINGS: [&str; 5] = ["gzip", "x-gzip", "deflate", "zstd", "identity"];

/// Response headers never returned: hop-by-hop (RFC 9110 §7.6.1), cookies,
/// credentials, and what only makes sense for Datadog's own host.
const DROPPED_RESPONSE_HEADERS: [&str; 15] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "set-cookie",
    "set-cookie2",
    "authorization",
    "www-authenticate",
    "alt-svc",
    "strict-transport-security",
];

/// The headers sent to Datadog: the allow-list, `Accept-Encoding` limited
/// to `ACCEPTED_CODINGS`, and the caller's `User-Agent` + ddrelay's.
pub(crate) fn forwarded_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in &FORWARDED_HEADERS {
        for v in incoming.get_all(name) {
            out.append(name.clone(), v.clone());
        }
    }
    let codings: Vec<&str> = incoming
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|c| {
            let token = c.split(';').next().unwrap_or_default().trim();
            ACCEPTED_CODINGS
                .iter()
                .any(|a| a.eq_ignore_ascii_case(token))
        })
        .collect();
    if !codings.is_empty()
        && let Ok(v) = HeaderValue::from_str(&codings.join(", "))
    {
        out.insert(header::ACCEPT_ENCODING, v);
    }
    let agent = incoming
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| format!("{} {USER_AGENT}", clip(ua.trim(), 200)))
        .and_then(|ua| HeaderValue::from_str(&ua).ok())
        .unwrap_or(HeaderValue::from_static(USER_AGENT));
    out.insert(header::USER_AGENT, agent);
    out
}

/// Datadog's response headers as returned to the caller (see the module doc).
pub(crate) fn returned_headers(upstream: &HeaderMap, secrets: &[&Secret]) -> HeaderMap {
    let listed: Vec<String> = upstream
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in upstream {
        let n = name.as_str();
        let leaks = secrets.iter().any(|s| {
            !s.expose().is_empty()
                && memchr::memmem::find(value.as_bytes(), s.expose().as_bytes()).is_some()
        });
        if DROPPED_RESPONSE_HEADERS.contains(&n)
            || listed.iter().any(|l| l == n)
            || n.starts_with("dd-relay-")
            || leaks
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allow_listed_request_headers_are_forwarded() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer admin"),
            ("dd-api-key", "k"),
            ("dd-application-key", "a"),
            ("cookie", "s=1"),
            ("host", "relay"),
            ("connection", "keep-alive"),
            ("x-forwarded-for", "1.2.3.4"),
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("accept-encoding", "br, gzip;q=0.9, zstd"),
            ("user-agent", "oncall/1.0"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let out = forwarded_headers(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        for dropped in [
            "authorization",
            "dd-api-key",
            "dd-application-key",
            "cookie",
            "host",
            "connection",
            "x-forwarded-for",
        ] {
            assert!(!names.contains(&dropped), "{dropped} forwarded");
        }
        assert_eq!(out["accept-encoding"], "gzip;q=0.9, zstd");
        assert_eq!(out["content-type"], "application/json");
        assert_eq!(
            out["user-agent"].to_str().unwrap(),
            format!("oncall/1.0 {USER_AGENT}")
        );
        let out = forwarded_headers(&HeaderMap::new());
        assert_eq!(out["user-agent"], USER_AGENT);
        assert!(out.get("accept-encoding").is_none());
    }

    #[test]
    fn response_headers_lose_cookies_credentials_and_hop_by_hop() {
        let token = Secret::new("tok-123456");
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("set-cookie", "dd_session=abc"),
            ("connection", "close, x-private"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("www-authenticate", "Bearer"),
            ("alt-svc", "h3=\":443\""),
            ("dd-relay-origin", "spoofed"),
            ("x-echo", "Bearer tok-123456"),
            ("x-ratelimit-remaining", "99"),
            ("retry-after", "3"),
            ("content-type", "application/json"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let out = returned_headers(&h, &[&token]);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["x-ratelimit-remaining", "retry-after", "content-type"]
        );
    }
}
