//! **Path policy** ([`check_path`]): the path after `datadog/` is taken
//! from the raw request line, never a decoded copy. It must be canonical
//! (pchar bytes only, no `;` or `\`, no empty or dot segment, no
//! percent-encoded `/`, `\`, `%`, control or unreserved byte, so `%2e%2e`
//! and `%2F` are refused) → 400; then it must start with one of
//! `proxy.allowed_prefixes` (default `api/`) → else 403. The URL is built
//! by `site.rs` and checked again: https, the tenant's API host, no port,
//! the path unchanged. `Host`, absolute-form targets and `@` cannot
//! change the destination.
//!
//! The query loses the caller's own Datadog credentials
//! ([`forwarded_query`]).

use url::Url;

use super::ProxyError;
use crate::site::{HostKind, Site};
use crate::text::clip;

/// Whether `b` may appear in a forwarded path as it is: RFC 3986 `pchar`
/// (unreserved, `%`, sub-delims but `;`, `:`, `@`) and `/`.
fn path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,=:@/".contains(&b)
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The path policy (see the module doc): `raw` is the path after
/// `datadog/`, exactly as on the request line.
pub fn check_path(raw: &str, allowed: &[String]) -> Result<(), ProxyError> {
    let bad = |why: String| ProxyError::BadPath {
        path: clip(raw, 200).to_string(),
        why,
    };
    if let Some(b) = raw.bytes().find(|b| !path_byte(*b)) {
        let shown = if b.is_ascii_graphic() {
            format!("`{}`", b as char)
        } else {
            format!("byte 0x{b:02x}")
        };
        return Err(bad(format!("{shown} is not allowed in a forwarded path")));
    }
    let segments: Vec<&str> = raw.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() && i + 1 < segments.len() {
            return Err(bad("empty path segment (a leading `/` or `//`)".into()));
        }
        check_segment(segment).map_err(bad)?;
    }
    if raw.is_empty() || !allowed.iter().any(|p| raw.starts_with(p.as_str())) {
        let allowed = allowed
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ProxyError::PathNotAllowed {
            path: clip(raw, 200).to_string(),
            allowed,
        });
    }
    Ok(())
}

/// One segment of a forwarded path, percent-decoded: why it is refused,
/// if it is.
fn check_segment(segment: &str) -> Result<(), String> {
    let mut decoded = Vec::with_capacity(segment.len());
    let bytes = segment.as_bytes();
    let mut j = 0;
    while j < bytes.len() {
        if bytes[j] != b'%' {
            decoded.push(bytes[j]);
            j += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(j + 1).copied().and_then(hex),
            bytes.get(j + 2).copied().and_then(hex),
        ) else {
            return Err("`%` must start a percent-encoded byte".into());
        };
        let b = hi * 16 + lo;
        if unreserved(b) {
            return Err(format!(
                "percent-encoded `{}`: write it as it is",
                b as char
            ));
        }
        if matches!(b, b'/' | b'\\' | b'%' | b';') || b.is_ascii_control() {
            return Err(format!(
                "percent-encoded byte 0x{b:02x} (`/`, `\\`, `%`, `;` and control bytes may not be encoded)"
            ));
        }
        decoded.push(b);
        j += 3;
    }
    if decoded == b"." || decoded == b".." {
        return Err("`.` and `..` segments are not allowed".into());
    }
    Ok(())
}

/// The query without the `api_key` and `application_key` parameters (the
/// caller's Datadog credentials are never forwarded), otherwise verbatim.
pub fn forwarded_query(raw: Option<&str>) -> Option<String> {
    let kept: Vec<&str> = raw?
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            let name: String = url::form_urlencoded::parse(name.as_bytes())
                .map(|(k, _)| k.into_owned())
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            !matches!(
                name.as_str(),
                "api_key" | "application_key" | "dd-api-key" | "dd-application-key"
            )
        })
        .collect();
    Some(kept.join("&")).filter(|q| !q.is_empty())
}

/// `https://api.<domain>/{path}?{query}`, checked to stay on that host with
/// the path unchanged.
pub(super) fn target_url(site: &Site, path: &str, query: Option<&str>) -> Result<Url, ProxyError> {
    let wanted = format!("/{path}");
    let off_host = || ProxyError::BadPath {
        path: clip(path, 200).to_string(),
        why: "it does not stay on the tenant's Datadog API host".into(),
    };
    let mut url = Url::parse(&site.url(HostKind::Api, &wanted)).map_err(|_| off_host())?;
    url.set_query(query);
    let host = site.host(HostKind::Api);
    if url.scheme() != "https"
        || url.host_str() != Some(host.as_str())
        || url.port().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.path() != wanted
        || url.fragment().is_some()
    {
        return Err(off_host());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    fn allowed() -> Vec<String> {
        vec!["api/".to_string()]
    }

    #[test]
    fn canonical_paths_under_an_allowed_prefix_pass() {
        for p in [
            "api/v1/monitor",
            "api/v1/monitor/123",
            "api/v2/users",
            "api/v1/user/ada@acme.example",
            "api/v2/metrics/system.cpu.user/tags",
            "api/v1/monitor/",
            "api/v2/query/scalar",
            "api/v1/tags/hosts/web%20server",
            "api/v1/monitor@evil.example",
            "api/v1/http:",
        ] {
            assert!(check_path(p, &allowed()).is_ok(), "{p}");
        }
    }

    #[test]
    fn hostile_paths_are_refused() {
        let bad = [
            "api/../oauth2/v1/token",
            "api/v1/%2e%2e/%2e%2e/oauth2/v1/token",
            "api/v1/%2E%2E/x",
            "api/./v1/monitor",
            "api/v1/.%2e/x",
            "api//evil.example/x",
            "/evil.example/api/v1/monitor",
            "api/v1/monitor%2F..%2F..%2Foauth2",
            "api%2Fv1%2Fmonitor",
            "api\\..\\oauth2",
            "api/v1/monitor%5C..",
            "api/v1/%252e%252e/x",
            "api/v1/monitor;/../x",
            "api/v1/%61",
            "api/v1/%zz",
            "api/v1/%2",
            "api/v1/%00",
            "api/v1/a b",
            "api/v1/é",
            "api/v1/{x}",
            "api/v1/x\"",
        ];
        for p in bad {
            let e = check_path(p, &allowed()).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{p}: {e}");
        }
        for p in [
            "",
            "oauth2/v1/token",
            "API/v1/monitor",
            "http:",
            "@evil.example/api/v1/monitor",
            "apix/v1",
        ] {
            let e = check_path(p, &allowed()).unwrap_err();
            assert_eq!(e.status(), StatusCode::FORBIDDEN, "{p}: {e}");
            assert!(e.to_string().contains("`api/`"), "{e}");
        }
    }

    #[test]
    fn urls_stay_on_the_tenants_api_host() {
        let eu = Site::by_domain("datadoghq.eu").unwrap();
        let u = target_url(eu, "api/v1/monitor", Some("name=cpu&page=1")).unwrap();
        assert_eq!(
            u.as_str(),
            "https://api.datadoghq.eu/api/v1/monitor?name=cpu&page=1"
        );
        let u = target_url(eu, "api/v1/user/ada@acme.example", None).unwrap();
        assert_eq!(u.host_str(), Some("api.datadoghq.eu"));
        assert_eq!(u.path(), "/api/v1/user/ada@acme.example");
        // Defense in depth: what check_path refuses, the URL check refuses too.
        assert!(target_url(eu, "api/../oauth2/v1/token", None).is_err());
        assert!(target_url(eu, "api/%2e%2e/oauth2", None).is_err());
        assert!(target_url(eu, "api\\..\\x", None).is_err());
    }

    #[test]
    fn callers_credentials_are_dropped_from_the_query() {
        assert_eq!(
            forwarded_query(Some("api_key=k&name=cpu&APPLICATION_KEY=a&filter%5Bx%5D=1")),
            Some("name=cpu&filter%5Bx%5D=1".to_string())
        );
        assert_eq!(forwarded_query(Some("api%5Fkey=k")), None);
        assert_eq!(forwarded_query(Some("")), None);
        assert_eq!(forwarded_query(None), None);
    }
}
