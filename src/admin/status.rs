//! The status page: `GET /` on `api_listen`, one self-contained HTML page
//! for operators. It shows the relay's readiness, version and config
//! generation, the queue totals, items accepted and delivered per second
//! (last 1 and 5 minutes), tenant counts by state, and a table of tenants
//! with their site (for a pending tenant, the site its connect named),
//! queue, delivery figures, retries, refused requests, rates, the time of
//! the last delivery and of the last error, and the reason; each row links
//! to the tenant's detail and dead letters as the admin API answers them
//! (`GET /status/v1/tenants/{tenant}` and `.../dead_letters`, which open
//! with the page's session, see below). The page reloads itself every
//! `?refresh=` seconds (default [`DEFAULT_REFRESH_S`], `0` stops it) with a
//! `<meta http-equiv="refresh">`: no script.
//!
//! # Access
//! The page needs the admin token, like `/v1/*`. A browser cannot easily
//! send a bearer header, so it is accepted three ways:
//! 1. `Authorization: Bearer <admin_token>` (curl, a proxy that adds it);
//! 2. once, as `/?token=<admin_token>`: the relay checks it (constant time)
//!    and answers `303 See Other` to the same URL without `token`, setting
//!    the session cookie below, so the token leaves the address bar and the
//!    history at once;
//! 3. the session cookie `ddrelay_status` (`HttpOnly; SameSite=Strict;
//!    Path=/`, 12 hours; `Secure` when a proxy says `X-Forwarded-Proto:
//!    https`). Its value is not the token but a SHA-256 digest of it under a
//!    fixed label: the cookie opens this page and the two read-only tenant
//!    views it links to, never `/v1/*` (nothing it opens changes a tenant
//!    or shows dead-lettered items), and rotating `admin_token` (a reload)
//!    ends every session.
//!
//! The token is never written into the page. Every response carries
//! `Cache-Control: no-store`, `Referrer-Policy: no-referrer` and a
//! `Content-Security-Policy` that allows inline CSS and nothing else (no
//! script, no external asset, no framing).
//!
//! # Size
//! Rendered on the server in one pass. With 10,000 tenants the table shows
//! at most `?limit=` rows (default [`DEFAULT_ROWS`], at most [`MAX_ROWS`]):
//! problem tenants first (reauthorization required, delivery failing, a
//! queue backlog), then the rest by id, with a note saying how many were
//! left out. `?state=` (a state, or `problem`) and `?q=` (a substring of the
//! id, org name, org id or site) narrow the list.
//!
//! Every value is HTML-escaped ([`esc`]); org names come from Datadog's
//! callback and are not trusted.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::{AdminState, DeliveryFigures, Queued, Throughput, authorized};
use crate::clock::now_ms;
use crate::secret::{Secret, ct_eq};
use crate::store::{Tenant, TenantState};
use crate::telemetry::rate::Rates;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "ddrelay_status";

/// How long a status-page session lasts.
const SESSION_MAX_AGE_S: u64 = 12 * 3600;

/// Rows shown when `?limit=` is not given.
pub(crate) const DEFAULT_ROWS: usize = 500;

/// The most rows `?limit=` may ask for (keeps the page a few MB at most).
pub(crate) const MAX_ROWS: usize = 5000;

/// A queue whose oldest item waits longer than this is a backlog (delivery
/// batches within seconds; Datadog accepts series for an hour).
const BACKLOG_AGE_MS: i64 = 5 * 60 * 1000;

/// Seconds between reloads of the page when `?refresh=` is not given.
pub(crate) const DEFAULT_REFRESH_S: u64 = 30;

/// The shortest and longest `?refresh=` (other than 0, which stops it).
const REFRESH_RANGE_S: (u64, u64) = (5, 3600);

/// Long error texts are cut to this many characters in the table (the full
/// text is in the cell's tooltip).
const CELL_TEXT_MAX: usize = 160;

const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The routes: `GET /` and the tenant views its rows link to.
pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/status/v1/tenants/{tenant}", get(tenant_detail))
        .route(
            "/status/v1/tenants/{tenant}/dead_letters",
            get(tenant_dead_letters),
        )
        .with_state(state)
}

/// True when the request carries the admin token or a page session.
fn signed_in(state: &AdminState, headers: &HeaderMap) -> bool {
    let config = state.config.load_full();
    let token = &config.server.admin_token;
    authorized(headers, &[token]) || has_session(headers, token)
}

/// `GET /status/v1/tenants/{tenant}`: what `GET /v1/tenants/{tenant}`
/// answers, opened with the page's session.
async fn tenant_detail(
    State(state): State<AdminState>,
    headers: HeaderMap,
    tenant: Result<Path<String>, PathRejection>,
) -> Response {
    if !signed_in(&state, &headers) {
        return super::unauthorized();
    }
    let mut r = super::show(State(state), tenant).await.into_response();
    secure_headers(&mut r);
    r
}

/// `GET /status/v1/tenants/{tenant}/dead_letters`: the entries (not their
/// items) as `GET /v1/tenants/{tenant}/dead_letters` lists them.
async fn tenant_dead_letters(
    State(state): State<AdminState>,
    headers: HeaderMap,
    tenant: Result<Path<String>, PathRejection>,
) -> Response {
    if !signed_in(&state, &headers) {
        return super::unauthorized();
    }
    let mut r = super::dead_letters(State(state), tenant)
        .await
        .into_response();
    secure_headers(&mut r);
    r
}

/// The cookie value for `token`: a digest, so the cookie is not the token.
fn session_value(token: &Secret) -> String {
    let mut h = Sha256::new();
    h.update(b"ddrelay status page session v1\0");
    h.update(token.expose().as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

/// True when a `Cookie` header carries a valid session.
fn has_session(headers: &HeaderMap, token: &Secret) -> bool {
    let expected = session_value(token);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .fold(false, |ok, (_, value)| {
            ct_eq(value.trim().as_bytes(), expected.as_bytes()) | ok
        })
}

fn secure_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    secure_headers(&mut r);
    r
}

/// 401 with a page that says how to get in.
fn denied(why: &str) -> Response {
    let mut body = page_head("ddrelay status: admin token needed", 0);
    let _ = write!(
        body,
        "<main class=\"denied\"><h1>Admin token needed</h1><p>{}</p>\
         <p>Open <code>/?token=&lt;server.admin_token&gt;</code> once: the relay checks it, \
         removes it from the address bar and keeps a session cookie for this page for 12 hours. \
         Scripts can send <code>Authorization: Bearer &lt;server.admin_token&gt;</code> instead.</p>\
         </main></body></html>",
        esc(why)
    );
    let mut r = html(StatusCode::UNAUTHORIZED, body);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn page(
    State(state): State<AdminState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params: Vec<(String, String)> = query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let config = state.config.load_full();
    let token = &config.server.admin_token;

    if let Some((_, given)) = params.iter().find(|(k, _)| k == "token") {
        if !ct_eq(given.as_bytes(), token.expose().as_bytes()) {
            tracing::warn!("status page opened with a wrong admin token");
            return denied("The token in the link is not this relay's admin token.");
        }
        let rest: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "token").collect();
        let location = if rest.is_empty() {
            "/".to_string()
        } else {
            let q = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(rest.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .finish();
            format!("/?{q}")
        };
        let secure = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"));
        let cookie = format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_MAX_AGE_S}{}",
            session_value(token),
            if secure { "; Secure" } else { "" }
        );
        let mut r = StatusCode::SEE_OTHER.into_response();
        secure_headers(&mut r);
        if let (Ok(loc), Ok(c)) = (
            HeaderValue::from_str(&location),
            HeaderValue::from_str(&cookie),
        ) {
            r.headers_mut().insert(header::LOCATION, loc);
            r.headers_mut().insert(header::SET_COOKIE, c);
        }
        tracing::info!("status page session started");
        return r;
    }

    if !signed_in(&state, &headers) {
        return denied("This page needs the relay's admin token.");
    }
    let filter = Filter::parse(&params);
    let connect_sites = connect_sites(&state).await;
    let overview = gather(&state, &filter, &connect_sites);
    html(StatusCode::OK, render(&overview, &filter))
}

/// The sites pending tenants' connects named (none when no tenant is
/// pending, or the store cannot say: the page still renders).
async fn connect_sites(state: &AdminState) -> HashMap<String, String> {
    if state.tenants.ids_in(TenantState::Pending).is_empty() {
        return HashMap::new();
    }
    crate::oauth::pending_sites(&state.oauth)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the sites of pending connects");
            HashMap::new()
        })
}

/// `?state=` narrowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateFilter {
    Is(TenantState),
    /// Only tenants with a problem.
    Problem,
}

/// The page's query: `state`, `q`, `limit`, `refresh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) state: Option<StateFilter>,
    /// Lowercased substring to look for.
    pub(crate) q: String,
    pub(crate) limit: usize,
    /// Seconds between reloads; 0: none.
    pub(crate) refresh: u64,
    /// A note about a parameter that was ignored.
    pub(crate) note: Option<String>,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            state: None,
            q: String::new(),
            limit: DEFAULT_ROWS,
            refresh: DEFAULT_REFRESH_S,
            note: None,
        }
    }
}

impl Filter {
    pub(crate) fn parse(params: &[(String, String)]) -> Filter {
        let mut f = Filter::default();
        for (k, v) in params {
            let v = v.trim();
            match k.as_str() {
                "state" => match v {
                    "" | "all" => f.state = None,
                    "problem" => f.state = Some(StateFilter::Problem),
                    other => match TenantState::ALL.iter().find(|s| s.as_str() == other) {
                        Some(s) => f.state = Some(StateFilter::Is(*s)),
                        None => {
                            f.note = Some(format!(
                                "Unknown state `{other}` ignored (one of pending, connected, reauth_required, disconnected, problem)."
                            ))
                        }
                    },
                },
                "q" => f.q = v.to_lowercase(),
                "limit" => match v.parse::<usize>() {
                    Ok(n) => f.limit = n.clamp(1, MAX_ROWS),
                    Err(_) => f.note = Some(format!("limit `{v}` is not a number; ignored.")),
                },
                "refresh" => match v.parse::<u64>() {
                    Ok(0) => f.refresh = 0,
                    Ok(n) => f.refresh = n.clamp(REFRESH_RANGE_S.0, REFRESH_RANGE_S.1),
                    Err(_) => f.note = Some(format!("refresh `{v}` is not a number; ignored.")),
                },
                _ => {}
            }
        }
        f
    }

    fn matches_text(&self, t: &Tenant) -> bool {
        if self.q.is_empty() {
            return true;
        }
        let hit = |s: Option<&str>| s.is_some_and(|s| s.to_lowercase().contains(&self.q));
        hit(Some(&t.id))
            || hit(t.org_name.as_deref())
            || hit(t.org_id.as_deref())
            || hit(t.domain.as_deref())
    }
}

/// One table row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) id: String,
    pub(crate) state: TenantState,
    pub(crate) site: Option<String>,
    /// `site` is the one a pending tenant's connect named.
    pub(crate) site_from_connect: bool,
    pub(crate) org_name: Option<String>,
    pub(crate) org_id: Option<String>,
    pub(crate) queued_items: u64,
    pub(crate) queued_bytes: u64,
    pub(crate) oldest_age_ms: Option<i64>,
    pub(crate) delivered: Option<u64>,
    pub(crate) dead_lettered: Option<u64>,
    pub(crate) aged_out: Option<u64>,
    pub(crate) retries: Option<u64>,
    pub(crate) rejected_requests: Option<u64>,
    /// Items per second accepted for the tenant, and delivered.
    pub(crate) accepted_per_s: Option<Rates>,
    pub(crate) delivered_per_s: Option<Rates>,
    pub(crate) last_delivery_ms: Option<i64>,
    pub(crate) last_error_ms: Option<i64>,
    pub(crate) last_error: Option<String>,
    pub(crate) reason: Option<String>,
    /// Why this tenant needs attention, if it does.
    pub(crate) problem: Option<&'static str>,
}

impl Row {
    /// Builds a row from the record, its queue figures and the delivery
    /// view's figures.
    pub fn new(t: Tenant, q: Queued, d: Option<DeliveryFigures>, now_ms: i64) -> Row {
        let oldest_age_ms = q.oldest_ms.map(|o| (now_ms - o).max(0));
        let d = d.as_ref();
        // Failing: the last error is newer than the last delivery.
        let failing = d.is_some_and(|d| {
            d.last_error.is_some()
                && d.last_error_ms.unwrap_or(0) >= d.last_delivery_ms.unwrap_or(0)
        });
        let problem = match t.state {
            TenantState::ReauthRequired => Some("reauthorization required"),
            TenantState::Connected if failing => Some("delivery failing"),
            TenantState::Connected if oldest_age_ms.is_some_and(|a| a > BACKLOG_AGE_MS) => {
                Some("queue backlog")
            }
            _ => None,
        };
        Row {
            state: t.state,
            site: t.domain,
            site_from_connect: false,
            org_name: t.org_name,
            org_id: t.org_id,
            queued_items: q.items,
            queued_bytes: q.bytes,
            oldest_age_ms,
            delivered: d.map(|d| d.delivered_items),
            dead_lettered: d.map(|d| d.dead_lettered_items),
            aged_out: d.map(|d| d.aged_out_items),
            retries: d.map(|d| d.retries),
            rejected_requests: d.map(|d| d.rejected_requests),
            accepted_per_s: d.map(|d| d.accepted_items_per_s),
            delivered_per_s: d.map(|d| d.delivered_items_per_s),
            last_delivery_ms: d.and_then(|d| d.last_delivery_ms),
            last_error_ms: d.and_then(|d| d.last_error_ms),
            last_error: d.and_then(|d| d.last_error.clone()),
            reason: t.reason,
            problem,
            id: t.id,
        }
    }

    /// A pending tenant not connected yet shows the site its connect named.
    fn with_connect_site(mut self, sites: &HashMap<String, String>) -> Row {
        if self.state == TenantState::Pending
            && self.site.is_none()
            && let Some(site) = sites.get(&self.id)
        {
            self.site = Some(site.clone());
            self.site_from_connect = true;
        }
        self
    }
}

/// Everything the page shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overview {
    pub(crate) ready: bool,
    pub(crate) version: &'static str,
    pub(crate) config_generation: u64,
    pub(crate) generated_at: String,
    pub(crate) tenants_total: usize,
    pub(crate) by_state: Vec<(TenantState, usize)>,
    pub(crate) queued: Queued,
    pub(crate) queued_tenants: usize,
    /// Items per second, all tenants (none without a delivery view).
    pub(crate) throughput: Option<Throughput>,
    pub(crate) now_ms: i64,
    /// Tenants that passed the filter.
    pub(crate) matching: usize,
    /// Of those, how many have a problem.
    pub(crate) problems: usize,
    /// The rows shown (at most `filter.limit`).
    pub(crate) rows: Vec<Row>,
}

/// Every tenant's queue figures added up, and how many tenants have
/// something queued.
fn queued_totals(queued: &HashMap<String, Queued>) -> (Queued, usize) {
    let mut totals = Queued::default();
    let mut queued_tenants = 0;
    for q in queued.values() {
        totals.items += q.items;
        totals.bytes += q.bytes;
        if q.items > 0 {
            queued_tenants += 1;
        }
        totals.oldest_ms = match (totals.oldest_ms, q.oldest_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    (totals, queued_tenants)
}

fn gather(
    state: &AdminState,
    filter: &Filter,
    connect_sites: &HashMap<String, String>,
) -> Overview {
    let now = now_ms();
    let all = state.tenants.list();
    let queued = state.queue.all();
    let mut counts: HashMap<TenantState, usize> = HashMap::new();
    for t in &all {
        *counts.entry(t.state).or_default() += 1;
    }
    let (totals, queued_tenants) = queued_totals(&queued);
    let tenants_total = all.len();
    let rows = all
        .into_iter()
        .filter(|t| match filter.state {
            Some(StateFilter::Is(s)) => t.state == s,
            _ => true,
        })
        .filter(|t| filter.matches_text(t))
        .map(|t| {
            let q = queued.get(&t.id).copied().unwrap_or_default();
            let d = state.delivery.as_ref().map(|d| d.tenant(&t.id));
            Row::new(t, q, d, now).with_connect_site(connect_sites)
        })
        .filter(|r| filter.state != Some(StateFilter::Problem) || r.problem.is_some());
    let (mut problems, rest): (Vec<Row>, Vec<Row>) = rows.partition(|r| r.problem.is_some());
    let matching = problems.len() + rest.len();
    let problem_count = problems.len();
    problems.extend(rest);
    problems.truncate(filter.limit);
    Overview {
        ready: state.relay.ready(),
        version: env!("CARGO_PKG_VERSION"),
        config_generation: state.relay.config_generation(),
        generated_at: utc(now),
        tenants_total,
        by_state: TenantState::ALL
            .iter()
            .map(|s| (*s, counts.get(s).copied().unwrap_or(0)))
            .collect(),
        queued: totals,
        queued_tenants,
        throughput: state.delivery.as_ref().map(|d| d.throughput()),
        now_ms: now,
        matching,
        problems: problem_count,
        rows: problems,
    }
}

/// Escapes text for HTML element content and quoted attribute values (the
/// relay's one escaper, shared with the OAuth pages).
pub(crate) use crate::oauth::pages::escape as esc;

/// `1234567` → `1.2 MiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Milliseconds → `45 s`, `3 m 20 s`, `2 h 5 m`, `3 d 4 h`.
pub(crate) fn human_age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} m {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} m", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86400, (s % 86400) / 3600),
    }
}

/// Unix milliseconds as `2024-05-01 12:00:00 UTC`.
fn utc(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// Items per second: `0`, `<0.01`, `2.50`, `1,234`.
fn per_s(x: f64) -> String {
    match x {
        x if x <= 0.0 => "0".into(),
        x if x < 0.01 => "<0.01".into(),
        x if x < 100.0 => format!("{x:.2}"),
        x => grouped(x.round() as u64),
    }
}

/// `1.5` items/s and `0.25` → `1.50 / 0.25` (last minute / last five).
fn rates(r: Option<Rates>) -> String {
    r.map(|r| format!("{} / {}", per_s(r.one), per_s(r.five)))
        .unwrap_or_else(|| "–".into())
}

/// A tenant id as one URL path segment: ids are `[A-Za-z0-9._-]`, anything
/// else is percent-encoded all the same.
fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `12345` → `12,345`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Cuts `s` to [`CELL_TEXT_MAX`] characters.
fn clipped(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(CELL_TEXT_MAX) {
        None => Cow::Borrowed(s),
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
    }
}

const STYLE: &str = "\
:root{--fg:#1d2330;--muted:#5d6677;--line:#dfe3ea;--bg:#f6f7f9;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--info:#0969da}\
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:var(--bg)}\
header{display:flex;flex-wrap:wrap;gap:.5rem 1.25rem;align-items:baseline;padding:1rem 1.5rem;background:#fff;border-bottom:1px solid var(--line)}\
h1{font-size:1.25rem;margin:0}h2{font-size:.8rem;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);margin:0 0 .5rem}\
main{padding:1rem 1.5rem}.muted{color:var(--muted)}\
.badge{display:inline-block;padding:.1rem .55rem;border-radius:1rem;font-weight:600;font-size:.8rem;color:#fff}\
.badge.ok{background:var(--ok)}.badge.bad{background:var(--bad)}\
.cards{display:flex;flex-wrap:wrap;gap:1rem;margin-bottom:1rem}\
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:.85rem 1rem;min-width:14rem}\
.big{font-size:1.6rem;font-weight:600;margin:0 0 .25rem}.unit{font-size:.9rem;font-weight:400;color:var(--muted)}\
.card ul{list-style:none;margin:0;padding:0}.card li{display:flex;justify-content:space-between;gap:1rem}\
a{color:var(--info);text-decoration:none}a:hover{text-decoration:underline}\
form{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin:0 0 .75rem}\
input,select,button{font:inherit;padding:.3rem .5rem;border:1px solid var(--line);border-radius:6px;background:#fff}\
button{background:var(--fg);color:#fff;border-color:var(--fg);cursor:pointer}\
.note{margin:.25rem 0 .75rem;color:var(--muted)}.note.warn{color:var(--warn)}\
.table{overflow-x:auto;background:#fff;border:1px solid var(--line);border-radius:8px}\
table{border-collapse:collapse;width:100%}th,td{padding:.4rem .6rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}\
th{position:sticky;top:0;background:#fafbfc;font-size:.75rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}\
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.id{font-family:ui-monospace,monospace;white-space:nowrap}\
td.text{min-width:16rem;max-width:30rem;overflow-wrap:anywhere}tr.problem{background:#fff8f0}\
.state{font-weight:600;white-space:nowrap}.s-connected{color:var(--ok)}.s-reauth_required{color:var(--bad)}.s-pending{color:var(--warn)}.s-disconnected{color:var(--muted)}\
.flag{display:block;font-size:.75rem;color:var(--bad);font-weight:400}\
.links{display:block;font-family:system-ui,sans-serif;font-size:.75rem}.links a+a{margin-left:.5rem}.when{white-space:nowrap}\
.denied{max-width:40rem;margin:3rem auto;background:#fff;border:1px solid var(--line);border-radius:8px;padding:1.5rem}\
code{font-family:ui-monospace,monospace;background:var(--bg);padding:0 .25rem;border-radius:4px}";

/// The page's `<head>`; `refresh` seconds between reloads (0: none).
fn page_head(title: &str, refresh: u64) -> String {
    let mut s = String::with_capacity(4096);
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">"
    );
    if refresh > 0 {
        let _ = write!(s, "<meta http-equiv=\"refresh\" content=\"{refresh}\">");
    }
    let _ = write!(
        s,
        "<title>{}</title><style>{STYLE}</style></head><body>",
        esc(title)
    );
    s
}

fn opt(v: &Option<String>) -> Cow<'_, str> {
    match v {
        Some(s) if !s.is_empty() => esc(s),
        _ => Cow::Borrowed("–"),
    }
}

fn opt_num(v: Option<u64>) -> String {
    v.map(grouped).unwrap_or_else(|| "–".into())
}

/// Renders the page. Pure: the same overview gives the same HTML.
pub(crate) fn render(o: &Overview, filter: &Filter) -> String {
    let mut s = page_head("ddrelay status", filter.refresh);
    s.reserve(o.rows.len() * 1200);
    header(&mut s, o, filter);
    cards(&mut s, o);
    form(&mut s, filter);
    summary(&mut s, o);
    table(&mut s, o);
    s.push_str("</main></body></html>");
    s
}

fn header(s: &mut String, o: &Overview, filter: &Filter) {
    let reload = match filter.refresh {
        0 => "not reloading".to_string(),
        n => format!("reloads every {n} s"),
    };
    let _ = write!(
        s,
        "<header><h1>ddrelay status</h1>\
         <span id=\"readiness\" class=\"badge {}\">{}</span>\
         <span>version <b id=\"version\">{}</b></span>\
         <span>config generation <b id=\"config-generation\">{}</b></span>\
         <span class=\"muted\">generated {}; {}</span></header><main>",
        if o.ready { "ok" } else { "bad" },
        if o.ready { "ready" } else { "not ready" },
        esc(o.version),
        o.config_generation,
        esc(&o.generated_at),
        esc(&reload),
    );
}

/// Cards: tenants by state, queue totals, items per second.
fn cards(s: &mut String, o: &Overview) {
    let _ = write!(
        s,
        "<section class=\"cards\"><div class=\"card\"><h2>Tenants</h2>\
         <p class=\"big\" id=\"tenants-total\">{}</p><ul>",
        grouped(o.tenants_total as u64)
    );
    for (state, n) in &o.by_state {
        let _ = write!(
            s,
            "<li><a href=\"/?state={st}\">{st}</a><b id=\"count-{st}\">{}</b></li>",
            grouped(*n as u64),
            st = state.as_str(),
        );
    }
    let _ = write!(
        s,
        "</ul></div><div class=\"card\"><h2>Queue</h2>\
         <p class=\"big\"><span id=\"queued-items\">{}</span> <span class=\"unit\">items</span></p><ul>\
         <li><span>bytes on disk</span><b id=\"queued-bytes\">{}</b></li>\
         <li><span>tenants with queued data</span><b>{}</b></li>\
         <li><span>oldest queued</span><b>{}</b></li></ul></div>",
        grouped(o.queued.items),
        esc(&human_bytes(o.queued.bytes)),
        grouped(o.queued_tenants as u64),
        o.queued
            .oldest_ms
            .map(|t| human_age(o.now_ms - t))
            .unwrap_or_else(|| "–".into()),
    );
    if let Some(t) = &o.throughput {
        let _ = write!(
            s,
            "<div class=\"card\"><h2>Items per second</h2>\
             <p class=\"big\"><span id=\"accepted-1m\">{}</span> <span class=\"unit\">accepted, last minute</span></p><ul>\
             <li><span>accepted, last 5 minutes</span><b id=\"accepted-5m\">{}</b></li>\
             <li><span>delivered, last minute</span><b id=\"delivered-1m\">{}</b></li>\
             <li><span>delivered, last 5 minutes</span><b id=\"delivered-5m\">{}</b></li></ul></div>",
            per_s(t.accepted.one),
            per_s(t.accepted.five),
            per_s(t.delivered.one),
            per_s(t.delivered.five),
        );
    }
    s.push_str("</section>");
}

/// The filter form (GET; the session cookie carries the access).
fn form(s: &mut String, filter: &Filter) {
    s.push_str("<form method=\"get\" action=\"/\"><label>state <select name=\"state\">");
    let selected = |v: Option<StateFilter>| if filter.state == v { " selected" } else { "" };
    let _ = write!(
        s,
        "<option value=\"\"{}>all</option><option value=\"problem\"{}>problem</option>",
        selected(None),
        selected(Some(StateFilter::Problem))
    );
    for st in TenantState::ALL {
        let _ = write!(
            s,
            "<option value=\"{v}\"{}>{v}</option>",
            selected(Some(StateFilter::Is(st))),
            v = st.as_str()
        );
    }
    let _ = write!(
        s,
        "</select></label><label>search <input name=\"q\" value=\"{}\" \
         placeholder=\"tenant, org or site\"></label>",
        esc(&filter.q)
    );
    if filter.refresh != DEFAULT_REFRESH_S {
        let _ = write!(
            s,
            "<input type=\"hidden\" name=\"refresh\" value=\"{}\">",
            filter.refresh
        );
    }
    s.push_str("<button type=\"submit\">Filter</button><a href=\"/\">clear</a></form>");
    if let Some(note) = &filter.note {
        let _ = write!(s, "<p class=\"note warn\">{}</p>", esc(note));
    }
}

fn summary(s: &mut String, o: &Overview) {
    let shown = o.rows.len();
    let _ = write!(
        s,
        "<p class=\"note\" id=\"summary\">{} of {} matching tenant{} shown; {} with a problem. \
         Problem tenants first, then by id.",
        grouped(shown as u64),
        grouped(o.matching as u64),
        if o.matching == 1 { "" } else { "s" },
        grouped(o.problems as u64),
    );
    if shown < o.matching {
        let _ = write!(
            s,
            " <span id=\"truncated\">{} not shown: narrow the list with the filter, or raise <code>?limit=</code> (at most {}).</span>",
            grouped((o.matching - shown) as u64),
            grouped(MAX_ROWS as u64)
        );
    }
    s.push_str("</p>");
    if o.tenants_total == 0 {
        s.push_str(
            "<p class=\"note\">No tenant yet. Start one with \
             <code>POST /v1/tenants/{tenant}/connect</code>.</p>",
        );
    }
}

fn table(s: &mut String, o: &Overview) {
    s.push_str(
        "<div class=\"table\"><table id=\"tenants\"><thead><tr>\
         <th>tenant</th><th>state</th><th>site</th><th>org</th>\
         <th>queued items</th><th>queued bytes</th><th>oldest queued</th>\
         <th>delivered</th><th>dead-lettered</th><th>aged out</th>\
         <th>retries</th><th>refused requests</th>\
         <th title=\"items per second, last minute / last 5 minutes\">accepted/s 1m / 5m</th>\
         <th title=\"items per second, last minute / last 5 minutes\">delivered/s 1m / 5m</th>\
         <th>last delivery</th><th>last error</th><th>reason</th></tr></thead><tbody>",
    );
    for r in &o.rows {
        row(s, r, o.now_ms);
    }
    s.push_str("</tbody></table></div>");
}

/// `3 m 20 s ago`, with the UTC time as its tooltip; `–` for never.
fn when(s: &mut String, ms: Option<i64>, now_ms: i64) {
    match ms {
        Some(t) => {
            let _ = write!(
                s,
                "<span class=\"when\" title=\"{}\">{} ago</span>",
                esc(&utc(t)),
                esc(&human_age(now_ms - t))
            );
        }
        None => s.push('–'),
    }
}

fn row(s: &mut String, r: &Row, now_ms: i64) {
    let id = esc(&r.id);
    let st = r.state.as_str();
    let _ = write!(s, "<tr data-tenant=\"{id}\" data-state=\"{st}\"");
    if let Some(n) = r.rejected_requests {
        let _ = write!(s, " data-rejected=\"{n}\"");
    }
    if let Some(a) = r.accepted_per_s {
        let _ = write!(s, " data-accepted-1m=\"{:.2}\"", a.one);
    }
    if r.problem.is_some() {
        s.push_str(" class=\"problem\"");
    }
    let link = esc(&path_segment(&r.id)).into_owned();
    let _ = write!(
        s,
        "><td class=\"id\">{id}<span class=\"links\">\
         <a href=\"/status/v1/tenants/{link}\" title=\"GET /v1/tenants/{id}\">detail</a> \
         <a href=\"/status/v1/tenants/{link}/dead_letters\" title=\"GET /v1/tenants/{id}/dead_letters\">dead letters</a>\
         </span></td><td><span class=\"state s-{st}\">{st}</span>"
    );
    // reauth_required says it already; other problems get a flag.
    if let Some(p) = r.problem.filter(|_| r.state != TenantState::ReauthRequired) {
        let _ = write!(s, "<span class=\"flag\">{}</span>", esc(p));
    }
    let site_title = if r.site_from_connect {
        " title=\"named by its connect; not connected yet\""
    } else {
        ""
    };
    let _ = write!(
        s,
        "</td><td{site_title}>{}</td><td title=\"{}\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">",
        opt(&r.site),
        r.org_id
            .as_deref()
            .map(|i| format!("org id {}", esc(i)))
            .unwrap_or_default(),
        opt(&r.org_name),
        grouped(r.queued_items),
        esc(&human_bytes(r.queued_bytes)),
        r.oldest_age_ms.map(human_age).unwrap_or_else(|| "–".into()),
        opt_num(r.delivered),
        opt_num(r.dead_lettered),
        opt_num(r.aged_out),
        opt_num(r.retries),
        opt_num(r.rejected_requests),
        rates(r.accepted_per_s),
        rates(r.delivered_per_s),
    );
    when(s, r.last_delivery_ms, now_ms);
    s.push_str("</td>");
    text_cell(s, r.last_error.as_deref(), r.last_error_ms, now_ms);
    text_cell(s, r.reason.as_deref(), None, now_ms);
    s.push_str("</tr>");
}

/// A cell of free text (an error, a reason), clipped, the whole text in
/// its tooltip, after the time it happened when known.
fn text_cell(s: &mut String, text: Option<&str>, at_ms: Option<i64>, now_ms: i64) {
    match text {
        Some(t) if !t.is_empty() => {
            let _ = write!(s, "<td class=\"text\" title=\"{}\">", esc(t));
            if at_ms.is_some() {
                when(s, at_ms, now_ms);
                s.push_str(": ");
            }
            let _ = write!(s, "{}</td>", esc(&clipped(t)));
        }
        _ => s.push_str("<td>–</td>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str, state: TenantState) -> Tenant {
        Tenant {
            org_id: Some("org-1".into()),
            org_name: Some("Org".into()),
            ..Tenant::fixture(id, state)
        }
    }

    #[test]
    fn escapes_everything() {
        assert_eq!(esc("plain"), "plain");
        assert_eq!(
            esc(r#"<b a='1'>"x" & y</b>"#),
            "&lt;b a=&#39;1&#39;&gt;&quot;x&quot; &amp; y&lt;/b&gt;"
        );
        let mut t = tenant("evil", TenantState::ReauthRequired);
        t.org_name = Some("<script>alert(1)</script>".into());
        t.reason = Some("\"><img src=x onerror=alert(1)>".into());
        let row = Row::new(t, Queued::default(), None, 0);
        let o = Overview {
            matching: 1,
            rows: vec![row],
            ..Overview::default()
        };
        let html = render(&o, &Filter::default());
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn formats() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_age(45_000), "45 s");
        assert_eq!(human_age(200_000), "3 m 20 s");
        assert_eq!(human_age(7_500_000), "2 h 5 m");
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(clipped(&"é".repeat(200)).chars().count(), CELL_TEXT_MAX + 1);
        assert_eq!(
            [0.0, 0.004, 2.5, 1234.4].map(per_s),
            ["0", "<0.01", "2.50", "1,234"]
        );
        assert_eq!(path_segment("a.b_c-1"), "a.b_c-1");
        assert_eq!(path_segment("a&b/c"), "a%26b%2Fc");
    }

    #[test]
    fn filters_parse() {
        let p = |pairs: &[(&str, &str)]| {
            Filter::parse(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            p(&[("state", "reauth_required")]).state,
            Some(StateFilter::Is(TenantState::ReauthRequired))
        );
        assert_eq!(p(&[("state", "problem")]).state, Some(StateFilter::Problem));
        let f = p(&[("state", "bogus"), ("q", " AcMe "), ("limit", "999999")]);
        assert_eq!((f.state, f.q.as_str(), f.limit), (None, "acme", MAX_ROWS));
        assert!(f.note.is_some());
    }

    #[test]
    fn problems_are_classified() {
        let now = 10 * 60 * 1000;
        let q = |oldest: Option<i64>| Queued {
            items: 1,
            bytes: 10,
            oldest_ms: oldest,
        };
        let reauth = Row::new(tenant("a", TenantState::ReauthRequired), q(None), None, now);
        assert_eq!(reauth.problem, Some("reauthorization required"));
        let backlog = Row::new(tenant("b", TenantState::Connected), q(Some(0)), None, now);
        assert_eq!(backlog.problem, Some("queue backlog"));
        let fresh = Row::new(tenant("c", TenantState::Connected), q(Some(now)), None, now);
        assert_eq!(fresh.problem, None);
        let d = |last_delivery_ms| DeliveryFigures {
            last_error: Some("503".into()),
            last_error_ms: Some(5),
            last_delivery_ms: Some(last_delivery_ms),
            ..DeliveryFigures::default()
        };
        let failing = Row::new(
            tenant("d", TenantState::Connected),
            q(None),
            Some(d(4)),
            now,
        );
        assert_eq!(failing.problem, Some("delivery failing"));
        let recovered = Row::new(
            tenant("e", TenantState::Connected),
            q(None),
            Some(d(6)),
            now,
        );
        assert_eq!(recovered.problem, None);
    }

    /// A row shows when the tenant last delivered and last failed, its
    /// retries and refused requests, its rates, and links to its detail
    /// and dead letters; the page refreshes itself without a script.
    #[test]
    fn a_row_shows_times_counts_rates_and_links() {
        let now = 1_700_000_000_000;
        let d = DeliveryFigures {
            delivered_items: 42,
            retries: 7,
            rejected_requests: 3,
            last_delivery_ms: Some(now - 200_000),
            last_error: Some("Datadog answered 503".into()),
            last_error_ms: Some(now - 45_000),
            accepted_items_per_s: Rates {
                one: 2.5,
                five: 0.5,
            },
            delivered_items_per_s: Rates {
                one: 1.25,
                five: 0.25,
            },
            ..DeliveryFigures::default()
        };
        let row = Row::new(
            tenant("acme&co", TenantState::Connected),
            Queued::default(),
            Some(d),
            now,
        );
        let o = Overview {
            now_ms: now,
            matching: 1,
            rows: vec![row],
            ..Overview::default()
        };
        let html = render(&o, &Filter::default());
        let start = html.find("<tr data-tenant=").unwrap();
        let r = &html[start..];
        assert!(r.contains("3 m 20 s ago"), "last delivery: {r}");
        assert!(r.contains("45 s ago"), "last error: {r}");
        assert!(
            r.contains("title=\"2023-11-14 22:10:00 UTC\""),
            "absolute time: {r}"
        );
        assert!(r.contains("<td class=\"num\">7</td>"), "retries: {r}");
        assert!(
            r.contains("<td class=\"num\">3</td>"),
            "refused requests: {r}"
        );
        assert!(r.contains("2.50 / 0.50"), "accepted items/s: {r}");
        assert!(r.contains("1.25 / 0.25"), "delivered items/s: {r}");
        assert!(
            r.contains("href=\"/status/v1/tenants/acme%26co\""),
            "detail link: {r}"
        );
        assert!(
            r.contains("href=\"/status/v1/tenants/acme%26co/dead_letters\""),
            "dead letters link: {r}"
        );
        assert!(
            html.contains("<meta http-equiv=\"refresh\" content=\"30\">"),
            "{html}"
        );
    }

    /// A pending tenant shows the site its connect named; a connected one
    /// keeps its own even while a new connect is pending.
    #[test]
    fn a_pending_tenant_shows_the_site_its_connect_named() {
        let sites = HashMap::from([
            ("new".to_string(), "us5.datadoghq.com".to_string()),
            ("old".to_string(), "us5.datadoghq.com".to_string()),
        ]);
        let mut t = tenant("new", TenantState::Pending);
        t.domain = None;
        let pending = Row::new(t, Queued::default(), None, 0).with_connect_site(&sites);
        assert_eq!(pending.site.as_deref(), Some("us5.datadoghq.com"));
        let o = Overview {
            matching: 1,
            rows: vec![pending],
            ..Overview::default()
        };
        let html = render(&o, &Filter::default());
        assert!(
            html.contains(
                "<td title=\"named by its connect; not connected yet\">us5.datadoghq.com</td>"
            ),
            "{html}"
        );
        let connected = Row::new(
            tenant("old", TenantState::Connected),
            Queued::default(),
            None,
            0,
        )
        .with_connect_site(&sites);
        assert_eq!(connected.site.as_deref(), Some("datadoghq.eu"));
        assert!(!connected.site_from_connect);
    }

    /// 10,000 tenants render quickly and the table is capped.
    #[test]
    fn ten_thousand_tenants_stay_fast() {
        let rows: Vec<Row> = (0..10_000)
            .map(|i| {
                let mut t = tenant(&format!("tenant-{i:05}"), TenantState::Connected);
                t.reason = Some("a reason & more".into());
                Row::new(t, Queued::default(), None, 0)
            })
            .collect();
        let started = std::time::Instant::now();
        let filter = Filter::default();
        let mut o = Overview {
            tenants_total: rows.len(),
            matching: rows.len(),
            rows,
            ..Overview::default()
        };
        o.rows.truncate(filter.limit);
        let html = render(&o, &filter);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(html.matches("<tr data-tenant=").count(), DEFAULT_ROWS);
        assert!(html.contains("9,500 not shown"), "truncation note");
    }
}
