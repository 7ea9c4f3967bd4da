//! Datadog sites, their hosts, and the intake endpoints with their limits.
//!
//! This is the only module that knows a Datadog hostname. Every URL the relay
//! (or fakedog) builds for Datadog comes from [`Site`] and [`Endpoint`]; no
//! other module assembles a host string.
//!
//! Facts come from docs/datadog.md "Sites and hosts" (sourced from Datadog's
//! `regions.config.js` and the OpenAPI `site` enum) and its sections on each
//! intake, from docs/datadog.md "Intakes" on. Where a fact is UNCONFIRMED we
//! pick the safe reading and say so next to the constant.
//!
//! Two inputs arrive from outside and are parsed here:
//! - the `site` parameter Datadog passes to the partner's onboarding URL (a
//!   full URL that may carry a custom subdomain, e.g.
//!   `https://bigcorp.datadoghq.eu`), which decides where the browser goes to
//!   authorize (`WebSite::parse`);
//! - the `domain` parameter on the OAuth callback (a bare site domain such as
//!   `datadoghq.eu`), which decides where the relay sends the client secret
//!   and every later call ([`AllowedSites::by_domain`]). It must be *exactly*
//!   a known domain: a look-alike such as `datadoghq.com.evil.example` never
//!   passes.

use std::fmt;
use std::time::Duration;

/// One Datadog site (a region).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Site {
    /// Datadog's short name, e.g. `EU1`.
    pub name: &'static str,
    /// The site parameter (`domain` on the OAuth callback), e.g. `datadoghq.eu`.
    /// API host is `api.<domain>`, logs intake `http-intake.logs.<domain>`.
    pub domain: &'static str,
    /// The web (app) host, where users sign in and authorize.
    /// `app.` is prefixed only for US1, EU1 and US1-FED (docs/datadog.md
    /// "Sites and hosts").
    pub web_host: &'static str,
}

/// Every Datadog site, in the order of the table in docs/datadog.md "Sites
/// and hosts".
pub static SITES: [Site; 9] = [
    Site {
        name: "US1",
        domain: "datadoghq.com",
        web_host: "app.datadoghq.com",
    },
    Site {
        name: "US3",
        domain: "us3.datadoghq.com",
        web_host: "us3.datadoghq.com",
    },
    Site {
        name: "US5",
        domain: "us5.datadoghq.com",
        web_host: "us5.datadoghq.com",
    },
    Site {
        name: "EU1",
        domain: "datadoghq.eu",
        web_host: "app.datadoghq.eu",
    },
    Site {
        name: "AP1",
        domain: "ap1.datadoghq.com",
        web_host: "ap1.datadoghq.com",
    },
    Site {
        name: "AP2",
        domain: "ap2.datadoghq.com",
        web_host: "ap2.datadoghq.com",
    },
    // UK1 web host: secondary source (datadog-labs agent-skills), UNCONFIRMED.
    Site {
        name: "UK1",
        domain: "uk1.datadoghq.com",
        web_host: "uk1.datadoghq.com",
    },
    Site {
        name: "US1-FED",
        domain: "ddog-gov.com",
        web_host: "app.ddog-gov.com",
    },
    // US2-FED web host: Datadog's Japanese site table.
    Site {
        name: "US2-FED",
        domain: "us2.ddog-gov.com",
        web_host: "us2.ddog-gov.com",
    },
];

/// The US1 site: the region picker for flows that start outside Datadog.
pub(crate) fn us1() -> &'static Site {
    &SITES[0]
}

/// Which of a site's hosts a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostKind {
    /// `api.<domain>`: OAuth token/revoke, API keys, validate, metrics, events, checks.
    Api,
    /// `http-intake.logs.<domain>`: logs.
    Logs,
    /// `trace.agent.<domain>`: traces and their stats.
    Trace,
    /// `event-management-intake.<domain>`: v2 events (docs/datadog.md
    /// "Events v2": on all nine sites).
    Events,
}

impl Site {
    /// Finds a known site by its exact domain (case-insensitive, no trailing dot).
    pub fn by_domain(domain: &str) -> Option<&'static Site> {
        SITES.iter().find(|s| s.domain.eq_ignore_ascii_case(domain))
    }

    /// Finds a known site by its short name (`EU1`) or domain.
    pub fn by_name_or_domain(value: &str) -> Option<&'static Site> {
        SITES
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(value))
            .or_else(|| Site::by_domain(value))
    }

    /// The host of the given kind, e.g. `api.datadoghq.eu`.
    pub(crate) fn host(&self, kind: HostKind) -> String {
        match kind {
            HostKind::Api => format!("api.{}", self.domain),
            HostKind::Logs => format!("http-intake.logs.{}", self.domain),
            HostKind::Trace => format!("trace.agent.{}", self.domain),
            HostKind::Events => format!("event-management-intake.{}", self.domain),
        }
    }

    /// `https://<host>/<path>` for this site. `path` starts with `/`.
    pub fn url(&self, kind: HostKind, path: &str) -> String {
        format!("https://{}{}", self.host(kind), path)
    }

    /// Every hostname of this site that ddrelay or a browser may contact:
    /// the web host, the API host and the logs intake host.
    pub fn all_hosts(&self) -> Vec<String> {
        let mut hosts = vec![
            self.web_host.to_string(),
            self.host(HostKind::Api),
            self.host(HostKind::Logs),
            self.host(HostKind::Trace),
            self.host(HostKind::Events),
        ];
        if self.web_host != self.domain {
            hosts.push(self.domain.to_string());
        }
        hosts
    }

    /// Classifies a request `Host` (as fakedog sees it): which site and which
    /// role. Custom subdomains (`bigcorp.datadoghq.com`) are web hosts.
    pub(crate) fn classify_host(host: &str) -> Option<(&'static Site, HostRole)> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host = host.split(':').next().unwrap_or_default();
        // Longest domain first so `api.us3.datadoghq.com` is US3, not US1.
        let mut best: Option<&'static Site> = None;
        for site in SITES.iter() {
            let matches = host == site.domain || host.ends_with(&format!(".{}", site.domain));
            if matches && best.is_none_or(|b| b.domain.len() < site.domain.len()) {
                best = Some(site);
            }
        }
        let site = best?;
        let role = if host == site.host(HostKind::Api) {
            HostRole::Api
        } else if host == site.host(HostKind::Logs) {
            HostRole::Logs
        } else if host == site.host(HostKind::Trace) {
            HostRole::Trace
        } else if host == site.host(HostKind::Events) {
            HostRole::Events
        } else if host == site.web_host || host == site.domain {
            HostRole::Web
        } else {
            let prefix = &host[..host.len() - site.domain.len() - 1];
            if is_dns_label(prefix) && !RESERVED_LABELS.contains(&prefix) {
                HostRole::Web
            } else {
                return None;
            }
        };
        Some((site, role))
    }
}

/// The role of a host within a site (see [`Site::classify_host`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostRole {
    Web,
    Api,
    Logs,
    Trace,
    Events,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.domain)
    }
}

/// Labels that are Datadog service hosts, never a customer's web subdomain.
const RESERVED_LABELS: [&str; 6] = [
    "api",
    "http-intake",
    "intake",
    "agent",
    "trace",
    "event-management-intake",
];

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Why a site value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SiteError {
    #[error(
        "`{0}` is not a Datadog site (expected e.g. https://app.datadoghq.eu, datadoghq.eu or us5.datadoghq.com)"
    )]
    Unknown(String),
    #[error("Datadog site {0} is not in datadog.allowed_sites")]
    NotAllowed(&'static str),
    #[error("`{0}` is not a valid site URL: {1}")]
    Malformed(String, &'static str),
}

/// A site's web host as a user reaches it: the site's own web host, or a
/// custom subdomain of the site (`bigcorp.datadoghq.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebSite {
    pub(crate) site: &'static Site,
    /// The host the browser should authorize at.
    pub(crate) host: String,
}

impl WebSite {
    /// Parses the `site` parameter Datadog passes to the onboarding URL.
    ///
    /// Accepts `https://app.datadoghq.eu`, `https://bigcorp.datadoghq.com`,
    /// `app.datadoghq.eu`, and a bare site domain such as `datadoghq.eu` or
    /// `us5.datadoghq.com` (which means that site's own web host).
    pub(crate) fn parse(value: &str) -> Result<WebSite, SiteError> {
        let raw = value.trim();
        let rest = if let Some(r) = raw.strip_prefix("https://") {
            r
        } else if raw.contains("://") {
            return Err(SiteError::Malformed(
                raw.to_string(),
                "only https:// site URLs are accepted",
            ));
        } else {
            raw
        };
        let host = rest.strip_suffix('/').unwrap_or(rest);
        if host.is_empty() {
            return Err(SiteError::Malformed(raw.to_string(), "no host"));
        }
        if host.contains(['/', '?', '#', '@', ':', '\\', ' ']) {
            return Err(SiteError::Malformed(
                raw.to_string(),
                "a site is a scheme and a host only (no path, port, query or user)",
            ));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match Site::classify_host(&host) {
            Some((site, HostRole::Web)) => {
                let host = if host == site.domain {
                    site.web_host.to_string()
                } else {
                    host
                };
                Ok(WebSite { site, host })
            }
            _ => Err(SiteError::Unknown(raw.to_string())),
        }
    }

    /// The authorize endpoint on this web host.
    pub fn authorize_url(&self) -> String {
        format!("https://{}/oauth2/v1/authorize", self.host)
    }

    /// True when this is US1's own app host, which acts as the region picker.
    pub(crate) fn is_region_picker(&self) -> bool {
        self.host == us1().web_host
    }
}

/// The sites this relay may talk to (`datadog.allowed_sites`). Every outbound
/// call consults it; by default it holds every known site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedSites {
    sites: Vec<&'static Site>,
}

impl Default for AllowedSites {
    fn default() -> Self {
        AllowedSites {
            sites: SITES.iter().collect(),
        }
    }
}

impl AllowedSites {
    /// Builds the allow-list from configured values (site names or domains).
    pub(crate) fn from_values(values: &[String]) -> Result<AllowedSites, SiteError> {
        let mut sites = Vec::new();
        for v in values {
            let site =
                Site::by_name_or_domain(v.trim()).ok_or_else(|| SiteError::Unknown(v.clone()))?;
            if !sites.contains(&site) {
                sites.push(site);
            }
        }
        Ok(AllowedSites { sites })
    }

    /// The allowed site whose domain is exactly `domain`.
    pub fn by_domain(&self, domain: &str) -> Result<&'static Site, SiteError> {
        let site = Site::by_domain(domain).ok_or_else(|| SiteError::Unknown(domain.to_string()))?;
        self.check(site)
    }

    /// Whether `site` (by domain) is in the list.
    pub(crate) fn allows(&self, site: &Site) -> bool {
        self.sites.iter().any(|s| s.domain == site.domain)
    }

    /// Refuses a site outside the allow-list.
    pub(crate) fn check(&self, site: &'static Site) -> Result<&'static Site, SiteError> {
        if self.sites.contains(&site) {
            Ok(site)
        } else {
            Err(SiteError::NotAllowed(site.name))
        }
    }

    /// Parses an onboarding `site` value and checks it against the list.
    pub(crate) fn web_site(&self, value: &str) -> Result<WebSite, SiteError> {
        let web = WebSite::parse(value)?;
        self.check(web.site)?;
        Ok(web)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &'static Site> + '_ {
        self.sites.iter().copied()
    }

    pub(crate) fn domains(&self) -> Vec<&'static str> {
        self.sites.iter().map(|s| s.domain).collect()
    }
}

/// A content encoding on the wire (request bodies in and out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    Gzip,
    /// zlib-wrapped deflate: what Datadog's clients mean by `deflate`
    /// (Datadog's Go client uses `zlib.NewWriter`: docs/datadog.md "Intakes").
    Deflate,
    /// Zstandard; Datadog's spec spells the series token `zstd1`.
    Zstd,
}

impl Encoding {
    /// Parses a `Content-Encoding` header value as Datadog's clients send it.
    pub fn from_header(value: &str) -> Option<Encoding> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Some(Encoding::Identity),
            "gzip" | "x-gzip" => Some(Encoding::Gzip),
            "deflate" => Some(Encoding::Deflate),
            "zstd" | "zstd1" => Some(Encoding::Zstd),
            _ => None,
        }
    }

    /// The header token ddrelay sends for this encoding to `endpoint`.
    pub(crate) fn header_token(self, endpoint: Endpoint) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Deflate => Some("deflate"),
            Encoding::Zstd if endpoint == Endpoint::SeriesV2 => Some("zstd1"),
            Encoding::Zstd => Some("zstd"),
        }
    }
}

/// A Datadog intake endpoint ddrelay accepts data for and delivers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    SeriesV2,
    SeriesV1,
    Logs,
    Events,
    CheckRun,
    /// Distribution points (`/api/v1/distribution_points`): series whose
    /// points carry a list of values each.
    Distribution,
    /// v2 events (`change` and `alert`), delivered to the site's
    /// `event-management-intake` host.
    EventsV2,
    /// Traces: protobuf `AgentPayload` (`crate::traces::pb`); ingested on the
    /// Agent's trace API (`/v0.3`-`/v0.5/traces`), not at this path.
    Traces,
    /// Stats the relay computed from traces that came without them
    /// (MessagePack `StatsPayload`, `clientComputed` false).
    TraceStats,
    /// Stats a tracing library computed (`/v0.6/stats`), sent as they came
    /// (`clientComputed` true).
    ClientStats,
}

/// The size and count limits of one endpoint, per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum body bytes on the wire (after compression).
    pub max_compressed: usize,
    /// Maximum body bytes once decompressed.
    pub max_uncompressed: usize,
    /// Maximum items (series objects, log entries, events, checks) per request.
    pub max_items: usize,
    /// Maximum bytes of one serialized item.
    pub(crate) max_item: usize,
}

/// How far in the past and future an item's timestamp may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub(crate) past: Duration,
    pub(crate) future: Duration,
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;

impl Endpoint {
    /// The JSON kinds, ingested at Datadog's own paths (`Endpoint::path`).
    pub const ALL: [Endpoint; 7] = [
        Endpoint::SeriesV2,
        Endpoint::SeriesV1,
        Endpoint::Logs,
        Endpoint::Events,
        Endpoint::CheckRun,
        Endpoint::Distribution,
        Endpoint::EventsV2,
    ];

    /// The trace kinds, ingested on the Agent's trace API.
    pub(crate) const TRACES: [Endpoint; 3] = [
        Endpoint::Traces,
        Endpoint::TraceStats,
        Endpoint::ClientStats,
    ];

    /// Every kind the relay queues and delivers.
    pub(crate) const EVERY: [Endpoint; 10] = [
        Endpoint::SeriesV2,
        Endpoint::SeriesV1,
        Endpoint::Logs,
        Endpoint::Events,
        Endpoint::CheckRun,
        Endpoint::Distribution,
        Endpoint::EventsV2,
        Endpoint::Traces,
        Endpoint::TraceStats,
        Endpoint::ClientStats,
    ];

    /// Whether every request carries one item, the body being the item
    /// itself (events, v1 and v2): such items are never batched.
    pub(crate) fn one_per_request(self) -> bool {
        matches!(self, Endpoint::Events | Endpoint::EventsV2)
    }

    /// Whether items are trace stats (computed by the relay or by a
    /// tracer): batched by `delivery.stats_max_age`, not `batch_max_age`.
    pub(crate) fn is_stats(self) -> bool {
        matches!(self, Endpoint::TraceStats | Endpoint::ClientStats)
    }

    /// Whether queued items are binary (length-prefixed in a record,
    /// `pipeline/record.rs`) rather than compact JSON lines.
    pub fn binary(self) -> bool {
        Endpoint::TRACES.contains(&self)
    }

    /// The `Content-Type` of a request body to this endpoint.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Endpoint::Traces => "application/x-protobuf",
            Endpoint::TraceStats | Endpoint::ClientStats => "application/msgpack",
            _ => "application/json",
        }
    }

    /// The request path, identical at Datadog and on the relay's ingest API.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::SeriesV2 => "/api/v2/series",
            Endpoint::SeriesV1 => "/api/v1/series",
            Endpoint::Logs => "/api/v2/logs",
            Endpoint::Events => "/api/v1/events",
            Endpoint::CheckRun => "/api/v1/check_run",
            Endpoint::Distribution => "/api/v1/distribution_points",
            Endpoint::EventsV2 => "/api/v2/events",
            Endpoint::Traces => "/api/v0.2/traces",
            Endpoint::TraceStats | Endpoint::ClientStats => "/api/v0.2/stats",
        }
    }

    /// A JSON kind by its path (the trace kinds are not ingested at theirs).
    pub(crate) fn from_path(path: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }

    /// A short, stable name used in metrics labels, logs and the queue.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::SeriesV2 => "series",
            Endpoint::SeriesV1 => "series_v1",
            Endpoint::Logs => "logs",
            Endpoint::Events => "events",
            Endpoint::CheckRun => "check_run",
            Endpoint::Distribution => "distribution",
            Endpoint::EventsV2 => "events_v2",
            Endpoint::Traces => "traces",
            Endpoint::TraceStats => "trace_stats",
            Endpoint::ClientStats => "client_stats",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Endpoint> {
        Endpoint::EVERY.into_iter().find(|e| e.name() == name)
    }

    /// A stable one-byte code for the on-disk queue format.
    pub fn code(self) -> u8 {
        match self {
            Endpoint::SeriesV2 => 1,
            Endpoint::SeriesV1 => 2,
            Endpoint::Logs => 3,
            Endpoint::Events => 4,
            Endpoint::CheckRun => 5,
            Endpoint::Traces => 6,
            Endpoint::TraceStats => 7,
            Endpoint::ClientStats => 8,
            Endpoint::Distribution => 9,
            Endpoint::EventsV2 => 10,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Endpoint> {
        Endpoint::EVERY.into_iter().find(|e| e.code() == code)
    }

    pub(crate) fn host_kind(self) -> HostKind {
        match self {
            Endpoint::Logs => HostKind::Logs,
            Endpoint::Traces | Endpoint::TraceStats | Endpoint::ClientStats => HostKind::Trace,
            Endpoint::EventsV2 => HostKind::Events,
            _ => HostKind::Api,
        }
    }

    /// Datadog's per-request limits (docs/datadog.md, the section of each
    /// intake).
    pub fn limits(self) -> Limits {
        match self {
            // docs/datadog.md "Series v2": "maximum payload size is 500
            // kilobytes (512000 bytes)",
            // "decompressed size of less than 5 megabytes (5242880 bytes)".
            // Items: no documented cap (UNCONFIRMED); the Agent caps itself
            // at 10,000 points per payload, we cap series objects the same.
            Endpoint::SeriesV2 => Limits {
                max_compressed: 512_000,
                max_uncompressed: 5_242_880 - 1,
                max_items: 10_000,
                max_item: 512 * 1024,
            },
            // docs/datadog.md "Series v1": 3.2 MB compressed, 62 MiB
            // decompressed. We never build payloads that large: the v2 caps
            // keep batches small and safe. Distribution points: Datadog
            // states no limits (UNCONFIRMED, docs/datadog.md "Distribution
            // points"); Vector applies the v1 limits to sketches, and we cap
            // batches as series v1.
            Endpoint::SeriesV1 | Endpoint::Distribution => Limits {
                max_compressed: 3_200_000,
                max_uncompressed: 5_242_880 - 1,
                max_items: 10_000,
                max_item: 512 * 1024,
            },
            // docs/datadog.md "Logs": "5MB" uncompressed per payload (safe
            // reading: 5,000,000 bytes, as Vector uses), 1000 entries, 1 MB
            // per log (safe reading 1,000,000 bytes; a longer log is cut at
            // ingest, as Datadog cuts it: docs/datadog.md "What Datadog
            // accepts and drops or cuts").
            Endpoint::Logs => Limits {
                max_compressed: 5_000_000,
                max_uncompressed: 5_000_000,
                max_items: 1_000,
                max_item: 1_000_000,
            },
            // docs/datadog.md "Events v1": one event per request. Max request
            // size is UNCONFIRMED; an event is a title plus ≤ 4000 characters
            // of text, so 256 KiB leaves room for tags while staying far
            // below any cap. v2 events: one event per request, as v1 events.
            // Title ≤ 500 characters, message ≤ 4000, ≤ 100 tags; the request
            // size is UNCONFIRMED, so the v1 events' 256 KiB.
            Endpoint::Events | Endpoint::EventsV2 => Limits {
                max_compressed: 256 * 1024,
                max_uncompressed: 256 * 1024,
                max_items: 1,
                max_item: 256 * 1024,
            },
            // docs/datadog.md "Service checks": limits UNCONFIRMED; the
            // Agent's caps (2.5 MB compressed / 4 MB uncompressed) and
            // Saluki's 100 checks per payload.
            Endpoint::CheckRun => Limits {
                max_compressed: 2_500_000,
                max_uncompressed: 4_000_000,
                max_items: 100,
                max_item: 64 * 1024,
            },
            // The trace agent's writer flushes at 3.2 MB of AgentPayload
            // ("3.2MB is the maximum allowed by the Datadog API",
            // docs/datadog.md "Traces"); the intake's own hard limit is
            // UNCONFIRMED, so 3.2 MB is our cap compressed or not. Chunks
            // per payload: no documented cap (UNCONFIRMED); 10,000. One
            // chunk is at most 1 MB: ingest splits a larger trace into
            // several chunks of the same trace (tracers flush partial
            // traces the same way).
            Endpoint::Traces => Limits {
                max_compressed: 3_200_000,
                max_uncompressed: 3_200_000,
                max_items: 10_000,
                max_item: 1_000_000,
            },
            // The agent's stats writer keeps payloads near 1.5 MB
            // compressed (4,000 entries); the intake limit is "~3MB"
            // compressed (docs/datadog.md "Traces"). 1.5 MB uncompressed,
            // 1,000 client payloads.
            Endpoint::TraceStats | Endpoint::ClientStats => Limits {
                max_compressed: 1_500_000,
                max_uncompressed: 1_500_000,
                max_items: 1_000,
                max_item: 1_000_000,
            },
        }
    }

    /// Datadog's timestamp acceptance window (docs/datadog.md, the section
    /// of each intake).
    pub fn window(self) -> Window {
        match self {
            // "not more than ten minutes in the future or more than one hour in the past"
            // Distribution points: window UNCONFIRMED; the series' window.
            Endpoint::SeriesV2 | Endpoint::SeriesV1 | Endpoint::Distribution => Window {
                past: Duration::from_secs(HOUR),
                future: Duration::from_secs(10 * MINUTE),
            },
            // "up to 18 hours in the past" and "2h in the future" (logs docs, Notes).
            Endpoint::Logs => Window {
                past: Duration::from_secs(18 * HOUR),
                future: Duration::from_secs(2 * HOUR),
            },
            // date_happened "no older than 18 hours"; future bound UNCONFIRMED,
            // we use the logs' 2 hours.
            // v2 `timestamp`: "no older than 18 hours", the same as v1.
            Endpoint::Events | Endpoint::EventsV2 => Window {
                past: Duration::from_secs(18 * HOUR),
                future: Duration::from_secs(2 * HOUR),
            },
            // "up to 10 minutes in the past"; future bound UNCONFIRMED, we use
            // the series' 10 minutes.
            Endpoint::CheckRun => Window {
                past: Duration::from_secs(10 * MINUTE),
                future: Duration::from_secs(10 * MINUTE),
            },
            // The trace agent never drops a span for its age, and the
            // intake's window is UNCONFIRMED: the logs' window (18 h past,
            // 2 h ahead) bounds how long held traces are kept.
            Endpoint::Traces | Endpoint::TraceStats | Endpoint::ClientStats => Window {
                past: Duration::from_secs(18 * HOUR),
                future: Duration::from_secs(2 * HOUR),
            },
        }
    }

    /// The encoding ddrelay uses when it sends to this endpoint by default.
    /// check_run: Datadog documents no encoding; the Agent sends zlib
    /// (`deflate`), so we do the same. Everything else: gzip, accepted on
    /// series v1 and v2 and logs (docs/datadog.md "Intakes").
    pub fn default_encoding(self) -> Encoding {
        match self {
            Endpoint::CheckRun => Encoding::Deflate,
            // The spec's only encoding for distribution points.
            Endpoint::Distribution => Encoding::Deflate,
            _ => Encoding::Gzip,
        }
    }

    /// Encodings Datadog accepts on this endpoint (what fakedog enforces and
    /// what ddrelay may be configured to send).
    pub(crate) fn accepted_encodings(self) -> &'static [Encoding] {
        match self {
            Endpoint::SeriesV2 => &[
                Encoding::Identity,
                Encoding::Gzip,
                Encoding::Deflate,
                Encoding::Zstd,
            ],
            Endpoint::SeriesV1
            | Endpoint::Events
            | Endpoint::EventsV2
            | Endpoint::CheckRun
            | Endpoint::Logs => &[Encoding::Identity, Encoding::Gzip, Encoding::Deflate],
            // `DistributionPointsContentEncoding` has only `deflate`.
            Endpoint::Distribution => &[Encoding::Identity, Encoding::Deflate],
            // The trace agent sends zstd or gzip (level 1), libdatadog
            // zstd or nothing; stats go gzip (docs/datadog.md "Traces").
            Endpoint::Traces => &[Encoding::Identity, Encoding::Gzip, Encoding::Zstd],
            Endpoint::TraceStats | Endpoint::ClientStats => &[Encoding::Identity, Encoding::Gzip],
        }
    }

    /// Datadog's success status for this endpoint (docs/datadog.md "Status
    /// codes": v1 logs 200, everything else 202). The trace intake answers
    /// 200 in Datadog's own test double (any 2xx is success to its senders;
    /// UNCONFIRMED which); the stats intake 202, the only answer its senders
    /// accept.
    pub(crate) fn success_status(self) -> u16 {
        match self {
            Endpoint::Traces => 200,
            _ => 202,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_site_has_distinct_hosts() {
        let mut seen = std::collections::HashSet::new();
        for site in SITES.iter() {
            for h in site.all_hosts() {
                assert!(seen.insert(h.clone()), "{h} appears twice");
                let (s, _) = Site::classify_host(&h).expect(&h);
                assert_eq!(s, site, "{h}");
            }
        }
    }

    #[test]
    fn classify_hosts() {
        assert_eq!(
            Site::classify_host("api.us3.datadoghq.com"),
            Some((&SITES[1], HostRole::Api))
        );
        assert_eq!(
            Site::classify_host("http-intake.logs.datadoghq.eu"),
            Some((&SITES[3], HostRole::Logs))
        );
        assert_eq!(
            Site::classify_host("bigcorp.datadoghq.com"),
            Some((&SITES[0], HostRole::Web))
        );
        assert_eq!(Site::classify_host("datadoghq.com.evil.example"), None);
        assert_eq!(Site::classify_host("evildatadoghq.com"), None);
        assert_eq!(Site::classify_host("a.b.datadoghq.com"), None);
    }

    #[test]
    fn web_site_parsing() {
        let w = WebSite::parse("https://app.datadoghq.eu").unwrap();
        assert_eq!((w.site.name, w.host.as_str()), ("EU1", "app.datadoghq.eu"));
        let w = WebSite::parse("https://bigcorp.datadoghq.com/").unwrap();
        assert_eq!(
            (w.site.name, w.host.as_str()),
            ("US1", "bigcorp.datadoghq.com")
        );
        let w = WebSite::parse("datadoghq.eu").unwrap();
        assert_eq!(w.host, "app.datadoghq.eu");
        let w = WebSite::parse("us5.datadoghq.com").unwrap();
        assert_eq!((w.site.name, w.host.as_str()), ("US5", "us5.datadoghq.com"));
        assert!(
            WebSite::parse("https://app.datadoghq.com")
                .unwrap()
                .is_region_picker()
        );
        for bad in [
            "https://datadoghq.com.evil.example",
            "http://app.datadoghq.com",
            "https://app.datadoghq.com/path",
            "https://user@app.datadoghq.com",
            "https://app.datadoghq.com:444",
            "https://api.datadoghq.com",
            "javascript:alert(1)",
            "",
        ] {
            assert!(WebSite::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn allow_list() {
        let allowed = AllowedSites::from_values(&["EU1".into(), "datadoghq.com".into()]).unwrap();
        assert!(allowed.by_domain("datadoghq.eu").is_ok());
        assert_eq!(
            allowed.by_domain("us5.datadoghq.com"),
            Err(SiteError::NotAllowed("US5"))
        );
        assert!(allowed.by_domain("datadoghq.com.evil.example").is_err());
        assert!(allowed.by_domain("app.datadoghq.com").is_err());
        assert!(AllowedSites::from_values(&["nope.example".into()]).is_err());
    }

    #[test]
    fn endpoint_codes_round_trip() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::from_code(e.code()), Some(e));
            assert_eq!(Endpoint::from_name(e.name()), Some(e));
            assert_eq!(Endpoint::from_path(e.path()), Some(e));
            let l = e.limits();
            assert!(l.max_item <= l.max_uncompressed);
        }
    }
}
