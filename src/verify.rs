//! `verify`: Datadog's "Test the OAuth client" checklist (in "OAuth for
//! Integrations", <https://docs.datadoghq.com/developers/integrations/oauth_for_integrations/>),
//! automated for one connected tenant and run inside the relay.
//!
//! | step | Datadog's checklist item | passes when |
//! |---|---|---|
//! | `state` | – | the relay holds the tenant as `connected` (checked after the others) |
//! | `site` | test multiple sites | the tenant's site is a known Datadog site and still allowed |
//! | `authorization` | authorization works | a forced token refresh at `api.<domain>` succeeds |
//! | `api_key` | create an API key | the stored key validates (`GET /api/v1/validate`) |
//! | `host_api`, `host_logs`, `host_trace` | cross-regional support | each intake host resolves and answers HTTP over TLS |
//! | `intake_*` | data flow | one item tagged `ddrelay:verify` of each kind gets a 2xx, sent with the tenant's key |
//! | `scopes` | data flow for all scopes | the granted scopes include `oauth.scopes` and `api_keys_write` |
//!
//! Side effects, all deliberate: the forced refresh rotates the tenant's
//! tokens (stored as any refresh is), and a refused grant moves the tenant to
//! `reauth_required`, exactly as delivery would; five test items (a series,
//! a log, an event, a service check and a span) land in the customer's
//! Datadog account, tagged `ddrelay:verify`.
//!
//! Every step is bounded so the whole checklist answers within the admin
//! API's `server.request_timeout`. No step's detail carries a secret: keys
//! are named by their last four characters at most.
//!
//! This module knows `tenant`, `credentials` (the forced refresh),
//! `datadog`, `site`, `codec` and `traces` (the test span); it knows nothing
//! of HTTP servers (the admin API serves its [`Report`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clock::now;
use crate::codec;
use crate::credentials::{CredentialError, Credentials};
use crate::datadog::Validity;
use crate::site::{Endpoint, HostKind, Site};
use crate::store::{Tenant, TenantState};
use crate::tenant::Tenants;

/// The tag on every test item, so a customer can find (or filter out) them.
pub(crate) const TAG: &str = "ddrelay:verify";

/// The scope every data-sending integration needs (Datadog: "to submit data
/// into Datadog, the api_keys_write scope must be selected").
pub(crate) const API_KEYS_WRITE: &str = "api_keys_write";

/// Time kept back from `server.request_timeout` to write the answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(3);

/// The shortest budget a step gets, whatever the request timeout.
const MIN_STEP_BUDGET: Duration = Duration::from_secs(2);

/// Upper bound for one step (a refresh or a send answering slower than this
/// is a failure worth reporting).
const MAX_STEP_BUDGET: Duration = Duration::from_secs(20);

/// One checklist line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Step {
    /// A stable machine name (`authorization`, `intake_logs`, …).
    pub(crate) name: &'static str,
    /// What is checked, in words.
    pub(crate) title: String,
    pub(crate) passed: bool,
    /// What was seen; on failure, why and what to do.
    pub(crate) detail: String,
}

/// The whole checklist for one tenant.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) tenant: String,
    /// The tenant's API domain, when known.
    pub(crate) site: Option<String>,
    /// True when every step passed.
    pub(crate) passed: bool,
    pub(crate) steps: Vec<Step>,
    pub(crate) duration_ms: u64,
}

fn pass(name: &'static str, title: impl Into<String>, detail: impl Into<String>) -> Step {
    Step {
        name,
        title: title.into(),
        passed: true,
        detail: detail.into(),
    }
}

fn fail(name: &'static str, title: impl Into<String>, detail: impl Into<String>) -> Step {
    Step {
        name,
        title: title.into(),
        passed: false,
        detail: detail.into(),
    }
}

/// What `verify` needs: the tenant's record, its credentials, the Datadog
/// client the test items go through, and the config.
pub(crate) struct Verifier<'a> {
    pub(crate) tenants: &'a Arc<Tenants>,
    pub(crate) credentials: &'a Arc<Credentials>,
    pub(crate) datadog: &'a crate::datadog::Client,
    pub(crate) config: Arc<crate::config::Config>,
}

/// Runs every step for `id`. Returns `None` for an unknown tenant.
pub(crate) async fn run(v: &Verifier<'_>, id: &str) -> Option<Report> {
    let started = Instant::now();
    let entry = v.tenants.get(id)?;
    let record = entry.record();
    let config = v.config.clone();
    let budget = config
        .server
        .request_timeout
        .saturating_sub(ANSWER_MARGIN)
        .clamp(MIN_STEP_BUDGET, MAX_STEP_BUDGET);

    let site_step = site_step(v, &record);
    let site = entry
        .site()
        .filter(|s| config.datadog.allowed_sites.check(s).is_ok());

    let (authorization, api_key, host_api, host_logs, host_trace, intakes) = tokio::join!(
        bounded(budget, "authorization", authorization_title(site), {
            authorization(v, id, site)
        }),
        bounded(budget, "api_key", API_KEY_TITLE, api_key_step(v, id, site)),
        bounded(
            budget,
            "host_api",
            host_title(site, HostKind::Api),
            host_step("host_api", v, site, HostKind::Api)
        ),
        bounded(
            budget,
            "host_logs",
            host_title(site, HostKind::Logs),
            host_step("host_logs", v, site, HostKind::Logs)
        ),
        bounded(
            budget,
            "host_trace",
            host_title(site, HostKind::Trace),
            host_step("host_trace", v, site, HostKind::Trace)
        ),
        intake_steps(v, id, site, budget),
    );
    // Checked last: the forced refresh may have just moved the tenant.
    let state_step = state_step(&entry.record());
    let scopes_step = scopes_step(&config.oauth.scopes, &entry.record());

    let mut steps = vec![
        state_step,
        site_step,
        authorization,
        api_key,
        host_api,
        host_logs,
        host_trace,
    ];
    steps.extend(intakes);
    steps.push(scopes_step);
    let passed = steps.iter().all(|s| s.passed);
    let failed: Vec<&str> = steps.iter().filter(|s| !s.passed).map(|s| s.name).collect();
    tracing::info!(tenant = %id, passed, failed = ?failed, "tenant verified");
    Some(Report {
        tenant: id.to_string(),
        site: record.domain.clone(),
        passed,
        steps,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Runs `step`, failing it when it takes longer than `budget`.
async fn bounded(
    budget: Duration,
    name: &'static str,
    title: impl Into<String>,
    step: impl std::future::Future<Output = Step>,
) -> Step {
    match tokio::time::timeout(budget, step).await {
        Ok(s) => s,
        Err(_) => fail(
            name,
            title,
            format!(
                "no answer within {} s; Datadog (or the network to it) is slow or unreachable",
                budget.as_secs()
            ),
        ),
    }
}

fn state_step(record: &Tenant) -> Step {
    const TITLE: &str = "the relay holds the tenant as connected";
    match record.state {
        TenantState::Connected => pass("state", TITLE, "connected"),
        other => fail(
            "state",
            TITLE,
            format!(
                "tenant is {other}{}",
                record
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        ),
    }
}

fn site_step(v: &Verifier<'_>, record: &Tenant) -> Step {
    const TITLE: &str =
        "the tenant's site is a known Datadog site, allowed by datadog.allowed_sites";
    let Some(domain) = record.domain.as_deref() else {
        return fail(
            "site",
            TITLE,
            "the tenant has no site: it never completed a connection",
        );
    };
    let Some(site) = Site::by_domain(domain) else {
        return fail(
            "site",
            TITLE,
            format!("{domain} is not a known Datadog site"),
        );
    };
    match v.config.datadog.allowed_sites.check(site) {
        Ok(_) => pass("site", TITLE, site.to_string()),
        Err(e) => fail("site", TITLE, e.to_string()),
    }
}

fn authorization_title(site: Option<&Site>) -> String {
    format!(
        "authorization is still valid: a forced token refresh at {} succeeds",
        site.map(|s| s.host(HostKind::Api))
            .unwrap_or_else(|| "the tenant's site".into())
    )
}

async fn authorization(v: &Verifier<'_>, id: &str, site: Option<&Site>) -> Step {
    let title = authorization_title(site);
    if site.is_none() {
        return fail(
            "authorization",
            title,
            "skipped: the tenant has no usable site",
        );
    }
    match v.credentials.access_token(id, true).await {
        Ok(_) => {
            let left = v
                .tenants
                .get(id)
                .and_then(|e| e.record().access_expires_at)
                .map(|exp| format!(", valid for {} s", exp - now()))
                .unwrap_or_default();
            pass(
                "authorization",
                title,
                format!("Datadog issued a new access token{left}"),
            )
        }
        Err(CredentialError::Refresh { error, .. }) if error.is_grant_revoked() => fail(
            "authorization",
            title,
            format!(
                "{error}: the grant was revoked (the customer uninstalled the integration or revoked its access); the tenant is now reauth_required and the customer must connect again"
            ),
        ),
        Err(CredentialError::Refresh { error, .. }) if error.is_client_error() => fail(
            "authorization",
            title,
            format!("{error}: check oauth.client_id and oauth.client_secret"),
        ),
        Err(e) => fail("authorization", title, e.to_string()),
    }
}

const API_KEY_TITLE: &str = "the tenant's API key validates (GET /api/v1/validate)";

async fn api_key_step(v: &Verifier<'_>, id: &str, site: Option<&Site>) -> Step {
    let Some(site) = site else {
        return fail(
            "api_key",
            API_KEY_TITLE,
            "skipped: the tenant has no usable site",
        );
    };
    let key = match v.credentials.api_key(id).await {
        Ok(k) => k,
        Err(e) => return fail("api_key", API_KEY_TITLE, e.to_string()),
    };
    let last4 = v
        .tenants
        .get(id)
        .and_then(|e| e.record().api_key_last4)
        .map(|l| format!(" (…{l})"))
        .unwrap_or_default();
    match v.datadog.validate_key(site, &key).await {
        Validity::Valid => pass(
            "api_key",
            API_KEY_TITLE,
            format!("{} accepts the key{last4}", site.host(HostKind::Api)),
        ),
        Validity::Invalid => fail(
            "api_key",
            API_KEY_TITLE,
            format!(
                "Datadog refused the key{last4}: it was revoked or deleted in the customer's org; delivery will try to create a new one, or the customer must connect again"
            ),
        ),
        Validity::Unknown(why) => fail(
            "api_key",
            API_KEY_TITLE,
            format!("cannot validate the key{last4}: {why}"),
        ),
    }
}

fn host_title(site: Option<&Site>, kind: HostKind) -> String {
    match site {
        Some(s) => format!("{} resolves and answers over TLS", s.host(kind)),
        None => match kind {
            HostKind::Api => "the site's API host resolves and answers".into(),
            HostKind::Logs => "the site's logs intake host resolves and answers".into(),
            HostKind::Trace => "the site's trace intake host resolves and answers".into(),
            HostKind::Events => "the site's events intake host resolves and answers".into(),
        },
    }
}

/// Resolves the host (honouring `[datadog.resolve]`), then sends one cheap
/// `GET /`: any HTTP status proves DNS, TCP, TLS and HTTP all work.
async fn host_step(
    name: &'static str,
    v: &Verifier<'_>,
    site: Option<&Site>,
    kind: HostKind,
) -> Step {
    let title = host_title(site, kind);
    let Some(site) = site else {
        return fail(name, title, "skipped: the tenant has no usable site");
    };
    let host = site.host(kind);
    let resolved = match v.config.datadog.resolve.get(&host) {
        Some(addr) => format!("pinned to {addr} by [datadog.resolve]"),
        None => match tokio::net::lookup_host((host.as_str(), 443)).await {
            Ok(addrs) => {
                let addrs: Vec<String> = addrs.take(3).map(|a| a.ip().to_string()).collect();
                if addrs.is_empty() {
                    return fail(name, title, format!("{host} resolves to no address"));
                }
                format!("resolves to {}", addrs.join(", "))
            }
            Err(e) => return fail(name, title, format!("{host} does not resolve: {e}")),
        },
    };
    let started = Instant::now();
    match v.datadog.probe_host(site, kind).await {
        Ok(status) => pass(
            name,
            title,
            format!(
                "{resolved}; answered HTTP {status} in {} ms",
                started.elapsed().as_millis()
            ),
        ),
        Err(why) => fail(
            name,
            title,
            format!("{resolved}, but no HTTP answer: {why}"),
        ),
    }
}

/// One test item per kind: (step name, endpoint, words for the title,
/// uncompressed body).
fn test_items() -> [(&'static str, Endpoint, &'static str, Vec<u8>); 5] {
    let [a, b, c, d] = json_test_items().map(|(n, e, w, v)| (n, e, w, v.to_string().into_bytes()));
    [
        a,
        b,
        c,
        d,
        ("intake_trace", Endpoint::Traces, "a test span", test_span()),
    ]
}

/// An `AgentPayload` with one span tagged [`TAG`].
fn test_span() -> Vec<u8> {
    let id = u64::from(rand::random::<u32>()) + 1;
    let span = crate::traces::pb::Span {
        service: "ddrelay".into(),
        name: "ddrelay.verify".into(),
        resource: "verify".into(),
        trace_id: id,
        span_id: id,
        start: now() * 1_000_000_000,
        duration: 1_000,
        meta: [("ddrelay".to_string(), "verify".to_string())].into(),
        ..Default::default()
    };
    let payload = crate::traces::pb::TracerPayload {
        chunks: vec![crate::traces::pb::TraceChunk {
            spans: vec![span],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut body = crate::traces::frame(&payload);
    body.extend_from_slice(crate::traces::agent_payload_tail());
    body
}

fn json_test_items() -> [(&'static str, Endpoint, &'static str, serde_json::Value); 4] {
    let ts = now();
    [
        (
            "intake_series",
            Endpoint::SeriesV2,
            "a test metric",
            serde_json::json!({ "series": [{
                "metric": "ddrelay.verify",
                "type": 3,
                "points": [{ "timestamp": ts, "value": 1 }],
                "tags": [TAG],
            }]}),
        ),
        (
            "intake_logs",
            Endpoint::Logs,
            "a test log",
            serde_json::json!([{
                "message": "ddrelay verify: test log",
                "ddsource": "ddrelay",
                "service": "ddrelay",
                "ddtags": TAG,
            }]),
        ),
        (
            "intake_event",
            Endpoint::Events,
            "a test event",
            serde_json::json!({
                "title": "ddrelay verify",
                "text": "A test event sent by `ddrelay verify` to check the integration's data flow.",
                "tags": [TAG],
                "alert_type": "info",
            }),
        ),
        (
            "intake_service_check",
            Endpoint::CheckRun,
            "a test service check",
            serde_json::json!([{
                "check": "ddrelay.verify",
                "host_name": "ddrelay-verify",
                "status": 0,
                "timestamp": ts,
                "message": "sent by ddrelay verify",
                "tags": [TAG],
            }]),
        ),
    ]
}

async fn intake_steps(
    v: &Verifier<'_>,
    id: &str,
    site: Option<&Site>,
    budget: Duration,
) -> Vec<Step> {
    let key = match site {
        Some(_) => v.credentials.api_key(id).await.map_err(|e| e.to_string()),
        None => Err("the tenant has no usable site".to_string()),
    };
    let sends = test_items().map(|(name, endpoint, what, body)| {
        let title = format!(
            "{what} tagged {TAG} is accepted ({} {})",
            site.map(|s| s.host(endpoint.host_kind()))
                .unwrap_or_else(|| "the site's intake".into()),
            endpoint.path()
        );
        let key = key.clone();
        async move {
            let (site, key) = match (site, key) {
                (Some(site), Ok(key)) => (site, key),
                (_, Err(why)) => return fail(name, title, format!("skipped: {why}")),
                (None, Ok(_)) => {
                    return fail(name, title, "skipped: the tenant has no usable site");
                }
            };
            let encoding = endpoint.default_encoding();
            let wire = codec::compress(encoding, 6, &body);
            let sent = v
                .datadog
                .send(site, endpoint, &key, encoding, wire.into(), budget)
                .await;
            match sent {
                Ok(a) if (200..300).contains(&a.status) => match reported_errors(&a.excerpt) {
                    Some(errors) => fail(
                        name,
                        title,
                        format!("answered {} but reported errors: {errors}", a.status),
                    ),
                    None => pass(name, title, format!("accepted ({})", a.status)),
                },
                Ok(a) if a.status == 401 || a.status == 403 => fail(
                    name,
                    title,
                    format!(
                        "refused ({}): Datadog does not accept the tenant's API key",
                        a.status
                    ),
                ),
                Ok(a) => fail(name, title, format!("answered {}: {}", a.status, a.excerpt)),
                Err(e) => fail(name, title, e.to_string()),
            }
        }
    });
    let [a, b, c, d, e] = sends;
    let (a, b, c, d, e) = tokio::join!(a, b, c, d, e);
    vec![a, b, c, d, e]
}

/// A 2xx body with a non-empty `errors` list (series v2 names dropped points there).
fn reported_errors(excerpt: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(excerpt).ok()?;
    let errors = v.get("errors")?.as_array()?;
    (!errors.is_empty()).then(|| serde_json::Value::Array(errors.clone()).to_string())
}

fn scopes_step(requested: &[String], record: &Tenant) -> Step {
    let mut wanted: Vec<&str> = requested.iter().map(String::as_str).collect();
    if !wanted.contains(&API_KEYS_WRITE) {
        wanted.push(API_KEYS_WRITE);
    }
    let title = format!(
        "the granted scopes include every requested one ({})",
        wanted.join(" ")
    );
    let Some(granted) = record.scopes.as_deref() else {
        // Datadog's token response may omit `scope`; the key created at
        // connect time proves api_keys_write, nothing proves the others.
        let extra: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|s| *s != API_KEYS_WRITE)
            .collect();
        return if extra.is_empty() && record.has_api_key {
            pass(
                "scopes",
                title,
                "Datadog's token response named no scopes; api_keys_write is proven by the API key it let the relay create",
            )
        } else {
            fail(
                "scopes",
                title,
                format!(
                    "Datadog's token response named no scopes, so {} cannot be confirmed",
                    if extra.is_empty() {
                        API_KEYS_WRITE.to_string()
                    } else {
                        extra.join(" ")
                    }
                ),
            )
        };
    };
    let granted: Vec<&str> = granted.split_whitespace().collect();
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|s| !granted.contains(s))
        .collect();
    let unrequested: Vec<&str> = granted
        .iter()
        .copied()
        .filter(|s| !wanted.contains(s))
        .collect();
    let also = if unrequested.is_empty() {
        String::new()
    } else {
        format!(" (also granted: {})", unrequested.join(" "))
    };
    if missing.is_empty() {
        pass(
            "scopes",
            title,
            format!("granted: {}{also}", granted.join(" ")),
        )
    } else {
        fail(
            "scopes",
            title,
            format!(
                "not granted: {}; granted: {}. Select the missing scopes on the OAuth client in Datadog's Developer Platform (or drop them from oauth.scopes), then have the customer connect again",
                missing.join(" "),
                if granted.is_empty() {
                    "none".to_string()
                } else {
                    granted.join(" ")
                }
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(scopes: Option<&str>) -> Tenant {
        Tenant {
            scopes: scopes.map(str::to_string),
            ..Tenant::fixture("t", TenantState::Connected)
        }
    }

    #[test]
    fn scopes_must_cover_the_request_and_api_keys_write() {
        assert!(scopes_step(&[], &record(Some("api_keys_write"))).passed);
        let s = scopes_step(&[], &record(Some("metrics_read")));
        assert!(!s.passed);
        assert!(s.detail.contains("not granted: api_keys_write"), "{s:?}");
        let wanted = vec!["metrics_read".to_string()];
        assert!(scopes_step(&wanted, &record(Some("api_keys_write metrics_read"))).passed);
        let s = scopes_step(&wanted, &record(Some("api_keys_write")));
        assert!(!s.passed && s.detail.contains("metrics_read"), "{s:?}");
        // Extra grants are reported, not failed.
        let s = scopes_step(&[], &record(Some("api_keys_write dashboards_read")));
        assert!(s.passed && s.detail.contains("also granted: dashboards_read"));
        // No scope in the token response: only api_keys_write can be inferred.
        assert!(scopes_step(&[], &record(None)).passed);
        assert!(!scopes_step(&wanted, &record(None)).passed);
    }

    #[test]
    fn a_2xx_with_errors_is_reported() {
        assert_eq!(reported_errors(r#"{"errors":[]}"#), None);
        assert_eq!(reported_errors("{}"), None);
        assert_eq!(reported_errors(""), None);
        assert!(reported_errors(r#"{"errors":["point dropped"]}"#).is_some());
    }

    #[test]
    fn test_items_are_tagged() {
        for (_, _, _, body) in json_test_items() {
            assert!(body.to_string().contains(TAG));
        }
        let span = test_span();
        assert!(
            span.windows(7).any(|w| w == b"ddrelay") && span.windows(6).any(|w| w == b"verify")
        );
    }
}
