//! The OAuth scope a Datadog API endpoint needs, for the endpoints whose
//! scope docs/datadog.md "Scopes of the pull-side endpoints" records, so
//! that a 403 the proxy explains can name the scope the grant lacks.
//!
//! Facts about Datadog, kept as data: one table of (method, path, scope).
//! An endpoint not in the table gets no guess (`None`); the explanation
//! then stays general. `HEAD` is looked up as `GET`.

use axum::http::Method;

/// `*` matches exactly one path segment.
const SCOPES: [(&str, &str, &str); 7] = [
    ("GET", "api/v2/incidents", "incident_read"),
    ("GET", "api/v2/incidents/*", "incident_read"),
    ("POST", "api/v2/incidents", "incident_write"),
    ("GET", "api/v1/monitor", "monitors_read"),
    ("GET", "api/v1/monitor/*", "monitors_read"),
    ("POST", "api/v1/monitor", "monitors_write"),
    ("GET", "api/v2/users", "user_access_read"),
];

/// The scope `method` on `path` (the part after `datadog/`, no query)
/// needs, when docs/datadog.md records it.
pub(crate) fn required(method: &Method, path: &str) -> Option<&'static str> {
    let method = if *method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let path = path.strip_suffix('/').unwrap_or(path);
    SCOPES
        .iter()
        .find(|(m, pattern, _)| *m == method && matches(pattern, path))
        .map(|(_, _, scope)| *scope)
}

fn matches(pattern: &str, path: &str) -> bool {
    let mut p = pattern.split('/');
    let mut s = path.split('/');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some("*"), Some(seg)) if !seg.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_and_the_other_known_endpoints_name_their_scope() {
        for (method, path, scope) in [
            (Method::POST, "api/v2/incidents", Some("incident_write")),
            (Method::GET, "api/v2/incidents", Some("incident_read")),
            (Method::HEAD, "api/v2/incidents/", Some("incident_read")),
            (
                Method::GET,
                "api/v2/incidents/00000000-0000-4000-8000-000000000000",
                Some("incident_read"),
            ),
            (Method::GET, "api/v1/monitor/123", Some("monitors_read")),
            (Method::POST, "api/v1/monitor", Some("monitors_write")),
            (Method::GET, "api/v2/users", Some("user_access_read")),
            // Not recorded: no guess.
            (Method::POST, "api/v2/incidents/abc/attachments", None),
            (Method::PATCH, "api/v2/incidents/abc", None),
            (Method::GET, "api/v2/incidents/abc/todos", None),
            (Method::GET, "api/v2/incidentsx", None),
            (Method::GET, "api/v1/dashboard", None),
            (Method::GET, "api/v2/incidents//", None),
        ] {
            assert_eq!(required(&method, path), scope, "{method} {path}");
        }
    }
}
