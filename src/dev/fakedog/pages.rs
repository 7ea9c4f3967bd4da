//! The HTML fakedog shows a browser: Datadog's error page (for an unknown
//! client or a mismatching redirect URI, where Datadog does not redirect),
//! the consent page (Authorize / Deny, a form POST back to the same web
//! host), and on the control listener the page of what each org received.
//! Every value is HTML-escaped.
//!
//! The consent form's field names are part of the [`super::browser`]
//! helper's contract: hidden `consent_id`, optional select `dd_oid`, and
//! submit buttons `decision=authorize|deny`.

use std::fmt::Write as _;

use crate::site::Site;
use crate::text::html_escape as escape;

use super::state::Org;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;\
padding:0 1rem;color:#222}h1{color:#632ca6}.box{border:1px solid #ddd;border-radius:8px;\
padding:1.5rem}button{font-size:1rem;padding:.5rem 1.2rem;margin-right:.5rem;cursor:pointer}\
.primary{background:#632ca6;color:#fff;border:0;border-radius:4px}\
small{color:#777}code{background:#f4f4f4;padding:0 .2rem}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{} | fakedog</title><style>{STYLE}</style></head>\n<body>\n{body}\n\
<p><small>fakedog: a local Datadog emulator, not Datadog.</small></p>\n</body></html>\n",
        escape(title)
    )
}

/// One org on the received page: its counts per kind and latest items.
pub(crate) struct OrgReceived<'a> {
    pub(crate) org: &'a Org,
    /// `(kind, items received)`, every kind.
    pub(crate) counts: Vec<(&'static str, u64)>,
    /// `(kind, the latest items, newest first)`, kinds with items only.
    pub(crate) latest: Vec<(&'static str, Vec<&'a serde_json::Value>)>,
}

/// The control listener's `/`: what each org received, per kind, with its
/// latest items, and the rules broken. Reloads itself every 5 seconds.
pub(crate) fn received(orgs: &[OrgReceived<'_>], violations: &[String]) -> String {
    const WIDE: &str = "<style>body{max-width:64rem}table{border-collapse:collapse}\
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:right}\
pre{background:#f4f4f4;padding:.5rem;overflow:auto;max-height:12rem}</style>";
    let mut body = format!(
        "{WIDE}\n<h1>What each org received</h1>\n<table id=\"counts\"><tr><th>org</th><th>site</th>"
    );
    let kinds = orgs
        .first()
        .map(|o| o.counts.as_slice())
        .unwrap_or_default();
    for (kind, _) in kinds {
        let _ = write!(body, "<th>{}</th>", escape(kind));
    }
    body.push_str("</tr>\n");
    for o in orgs {
        let name = escape(&o.org.name);
        let site = escape(o.org.site.name);
        let _ = write!(
            body,
            "<tr data-org=\"{name}\"><th>{name}</th><td>{site}</td>"
        );
        for (kind, n) in &o.counts {
            let _ = write!(body, "<td data-kind=\"{}\">{n}</td>", escape(kind));
        }
        body.push_str("</tr>\n");
    }
    let _ = writeln!(
        body,
        "</table>\n<h2>Rules broken: {}</h2>\n<ul id=\"violations\">",
        violations.len()
    );
    for v in violations.iter().take(20) {
        let _ = write!(body, "<li>{}</li>", escape(v));
    }
    body.push_str("</ul>\n");
    for o in orgs.iter().filter(|o| !o.latest.is_empty()) {
        let (name, domain) = (escape(&o.org.name), escape(o.org.site.domain));
        let _ = writeln!(body, "<h2>{name} <small>({domain})</small></h2>");
        for (kind, items) in &o.latest {
            let _ = writeln!(body, "<h3>{}</h3>", escape(kind));
            for item in items {
                let text = serde_json::to_string_pretty(item).unwrap_or_default();
                let _ = writeln!(body, "<pre>{}</pre>", escape(&text));
            }
        }
    }
    page("Received", &body).replacen(
        "<meta charset=\"utf-8\">",
        "<meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">",
        1,
    )
}

/// Datadog's error page: no redirect happens.
pub(crate) fn error(message: &str, hint: &str) -> String {
    let mut body = format!(
        "<h1>Error</h1>\n<div class=\"box\"><p id=\"error\">{}</p>",
        escape(message)
    );
    if !hint.is_empty() {
        let _ = write!(body, "<p>{}</p>", escape(hint));
    }
    body.push_str("</div>");
    page("Error", &body)
}

/// What the consent page shows.
pub(crate) struct ConsentView<'a> {
    pub(crate) consent_id: &'a str,
    pub(crate) client_name: &'a str,
    pub(crate) scopes: &'a [String],
    pub(crate) host: &'a str,
    pub(crate) site: &'static Site,
    /// The org being authorized, when known.
    pub(crate) org: Option<&'a Org>,
    /// Otherwise, the orgs the user may pick from (first is the default).
    pub(crate) candidates: &'a [Org],
}

/// The consent page: Authorize / Deny, posted back to `/oauth2/v1/authorize`.
pub(crate) fn consent(v: &ConsentView<'_>) -> String {
    let mut body = format!(
        "<h1>Authorize {}</h1>\n<div class=\"box\">\n<p><b>{}</b> is requesting access to your \
Datadog organization on <code>{}</code> ({}).</p>\n",
        escape(v.client_name),
        escape(v.client_name),
        escape(v.host),
        escape(v.site.name),
    );
    if !v.scopes.is_empty() {
        body.push_str("<p>Scopes:</p><ul>");
        for s in v.scopes {
            let _ = write!(body, "<li><code>{}</code></li>", escape(s));
        }
        body.push_str("</ul>\n");
    }
    body.push_str("<form method=\"post\" action=\"/oauth2/v1/authorize\">\n");
    let _ = writeln!(
        body,
        "<input type=\"hidden\" name=\"consent_id\" value=\"{}\">",
        escape(v.consent_id)
    );
    match v.org {
        Some(org) => {
            let _ = writeln!(
                body,
                "<p>Organization: <b>{}</b> <small>({}, {})</small></p>",
                escape(&org.name),
                escape(&org.id),
                escape(org.site.domain)
            );
        }
        None => {
            body.push_str("<p><label>Organization: <select name=\"dd_oid\">\n");
            for (i, org) in v.candidates.iter().enumerate() {
                let _ = writeln!(
                    body,
                    "<option value=\"{}\"{}>{} ({})</option>",
                    escape(&org.id),
                    if i == 0 { " selected" } else { "" },
                    escape(&org.name),
                    escape(org.site.domain)
                );
            }
            body.push_str("</select></label></p>\n");
        }
    }
    body.push_str(
        "<p><button class=\"primary\" type=\"submit\" name=\"decision\" value=\"authorize\">Authorize</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></p>\n</form>\n</div>",
    );
    page("Authorize", &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::SITES;

    #[test]
    fn consent_page_escapes_and_offers_both_buttons() {
        let org = Org {
            id: "o1".into(),
            name: "<b>Evil</b>".into(),
            site: &SITES[0],
        };
        let html = consent(&ConsentView {
            consent_id: "abc",
            client_name: "Partner <x>",
            scopes: &["api_keys_write".into()],
            host: "app.datadoghq.com",
            site: &SITES[0],
            org: None,
            candidates: std::slice::from_ref(&org),
        });
        assert!(html.contains("Partner &lt;x&gt;"));
        assert!(html.contains("&lt;b&gt;Evil&lt;/b&gt;"));
        assert!(!html.contains("<b>Evil"));
        assert!(html.contains("value=\"authorize\"") && html.contains("value=\"deny\""));
        assert!(html.contains("name=\"consent_id\" value=\"abc\""));
        assert!(html.contains("<option value=\"o1\" selected>"));
    }
}
