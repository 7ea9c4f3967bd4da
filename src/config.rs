//! Configuration: TOML plus `DDRELAY_<SECTION>__<KEY>` environment overrides,
//! parsed without I/O side effects into a validated, typed [`Config`].
//!
//! Two layers, as quickwit does it: `raw` mirrors the file with every field
//! optional and unknown keys rejected; `Config::from_sources` validates the
//! whole of it (`config/validate.rs`, one function per section) and reports
//! *every* problem, one line each, naming the file (or environment
//! variable), the key and what was expected.
//!
//! Secrets may be inline, in the environment, or in a file (`*_file` keys);
//! they become [`Secret`]s and print as `[redacted]`, so the effective config
//! can be shown by `check-config` without leaking anything.
//!
//! This module reads files (the config and `*_file` secrets) but binds no
//! port and opens no store: that is `app.rs`'s build phase.

mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format as _, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;
use url::Url;

use crate::secret::{MasterKey, Secret};
use crate::site::{AllowedSites, Encoding, Endpoint};
use raw::RawConfig;
use validate::Validator;

/// The environment variable prefix for overrides.
pub(crate) const ENV_PREFIX: &str = "DDRELAY_";

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    #[serde(skip)]
    pub(crate) source: Option<PathBuf>,
    pub(crate) oauth: OAuthConfig,
    pub server: ServerConfig,
    pub(crate) storage: StorageConfig,
    pub(crate) datadog: DatadogConfig,
    pub(crate) log: LogConfig,
    pub(crate) queue: QueueConfig,
    pub(crate) delivery: DeliveryConfig,
    pub(crate) limits: LimitsConfig,
    pub(crate) proxy: ProxyConfig,
    pub(crate) integration: IntegrationConfig,
    /// `[webhooks]`: where lifecycle events go; `None` when `url` is unset.
    pub(crate) webhooks: Option<WebhooksConfig>,
}

/// One OAuth client registered with Datadog.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Secret,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct OAuthConfig {
    /// The published client (or the only one).
    #[serde(flatten)]
    pub(crate) client: ClientCredentials,
    /// A private test client (Datadog's "Test the OAuth client" step); flows
    /// started with `"client": "test"` use it, and tenants remember which.
    pub(crate) test_client: Option<ClientCredentials>,
    #[serde(serialize_with = "ser_display")]
    pub(crate) redirect_uri: Url,
    #[serde(serialize_with = "ser_duration")]
    pub(crate) state_ttl: Duration,
    /// Every connected tenant's grant is confirmed with Datadog at least
    /// this often (a customer who uninstalls revokes the grant, while the
    /// API key may keep working): 5 s to 24 h, default 1 h.
    #[serde(serialize_with = "ser_duration")]
    pub(crate) grant_check_interval: Duration,
    /// Scopes sent on the authorize URL. Empty (the default): no `scope`
    /// parameter, since marketplace clients get their scopes from the
    /// Developer Platform (UNCONFIRMED whether to send it: docs/datadog.md
    /// "Authorize").
    pub(crate) scopes: Vec<String>,
}

impl OAuthConfig {
    /// The configured client with this id, if any.
    pub(crate) fn client(&self, client_id: &str) -> Option<&ClientCredentials> {
        std::iter::once(&self.client)
            .chain(self.test_client.as_ref())
            .find(|c| c.client_id == client_id)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    pub(crate) public_listen: SocketAddr,
    pub(crate) api_listen: SocketAddr,
    pub(crate) admin_token: Secret,
    /// Largest request body accepted on the wire.
    pub max_body: u64,
    /// Largest request body once decompressed (decompression bombs stop here).
    pub(crate) max_decompressed_body: u64,
    /// Memory for decoding large request bodies at once (decompressed
    /// bodies, their validated copies and records): see `ingest::budget`.
    pub(crate) decode_memory: u64,
    #[serde(serialize_with = "ser_duration")]
    pub(crate) request_timeout: Duration,
    /// How long a client of `public_listen` may take to send a request's
    /// headers (also how long an idle keep-alive connection stays open):
    /// a slow client is cut off after it (SECURITY.md "Threats and how they
    /// are met": slow clients on the public listener).
    #[serde(serialize_with = "ser_duration")]
    pub public_header_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct StorageConfig {
    pub(crate) data_dir: PathBuf,
    #[serde(serialize_with = "ser_redacted")]
    pub(crate) master_key: MasterKey,
    /// The shared store (PostgreSQL) URL; `None`: SQLite under `data_dir`.
    /// Printed with its password redacted.
    #[serde(serialize_with = "ser_db_url")]
    pub(crate) database_url: Option<Secret>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatadogConfig {
    #[serde(serialize_with = "ser_sites")]
    pub allowed_sites: AllowedSites,
    pub ca_file: Option<PathBuf>,
    pub resolve: BTreeMap<String, SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct LogConfig {
    pub(crate) level: String,
    pub(crate) format: LogFormat,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueueConfig {
    /// Global disk budget for queued data.
    pub(crate) max_bytes: u64,
    /// Per-tenant share of the queue.
    pub(crate) tenant_max_bytes: u64,
    /// Data held for tenants that are not connected, in all: bounded apart
    /// from `max_bytes`, so held data never makes the queue refuse a
    /// connected tenant. Default: a quarter of `max_bytes`.
    pub(crate) held_max_bytes: u64,
    /// Size at which a segment file is rolled.
    pub(crate) segment_bytes: u64,
    /// Per-tenant dead-letter budget.
    pub(crate) dead_letter_max_bytes: u64,
    /// How accepted payloads are stored (new records; the queue reads both).
    pub(crate) compression: QueueCompression,
    /// Write segment files ahead with zeros, so that the fsync an
    /// acknowledgement waits for overwrites blocks already allocated.
    pub(crate) preallocate: bool,
}

/// How the queue stores accepted payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum QueueCompression {
    /// Compressed: a logs request that fills half a payload as the
    /// payload it will be sent as (`pipeline::record`), anything else LZ4
    /// where it saves at least an eighth. Fewer bytes written, synced and
    /// held on disk for a little CPU (series: about 4 GB/s, a tenth of the
    /// bytes; text logs: about 0.6 GB/s, half).
    Lz4,
    /// As accepted (items, uncompressed): what older builds read.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    pub(crate) fn encoding(self) -> Encoding {
        match self {
            Compression::Gzip => Encoding::Gzip,
            Compression::Zstd => Encoding::Zstd,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeliveryConfig {
    #[serde(serialize_with = "ser_duration")]
    pub(crate) batch_max_age: Duration,
    /// The batch age of trace stats streams (`Endpoint::is_stats`).
    #[serde(serialize_with = "ser_duration")]
    pub(crate) stats_max_age: Duration,
    /// Compression for series v2 (`zstd` sends `zstd1`); other endpoints
    /// always use what Datadog documents for them (gzip, or deflate for checks).
    pub(crate) compression: Compression,
    pub(crate) compression_level: i32,
    pub(crate) max_concurrency: usize,
    pub(crate) tenant_concurrency: usize,
    /// Memory for records read from the queue and not yet answered by
    /// Datadog, over all streams (read at start).
    pub(crate) max_inflight_bytes: u64,
    #[serde(serialize_with = "ser_duration")]
    pub(crate) request_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub(crate) retry_initial: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub(crate) retry_max: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub(crate) drain_timeout: Duration,
    /// How many times a 403 is retried while the key still validates.
    pub(crate) forbidden_retries: u32,
}

impl DeliveryConfig {
    /// How long a stream of `endpoint` may wait to fill a payload.
    pub(crate) fn batch_age(&self, endpoint: Endpoint) -> Duration {
        if endpoint.is_stats() {
            self.stats_max_age
        } else {
            self.batch_max_age
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LimitsConfig {
    /// 0 means unlimited.
    pub(crate) tenant_requests_per_second: f64,
    pub(crate) tenant_bytes_per_second: u64,
    pub(crate) global_requests_per_second: f64,
    pub(crate) global_bytes_per_second: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProxyConfig {
    pub(crate) allowed_prefixes: Vec<String>,
    pub(crate) token: Option<Secret>,
    pub(crate) max_request_body: u64,
    pub(crate) max_response_body: u64,
    #[serde(serialize_with = "ser_duration")]
    pub(crate) timeout: Duration,
    pub(crate) tenant_concurrency: usize,
    pub(crate) tenant_requests_per_second: f64,
}

/// A `*_requests_per_second` setting (`[limits]`, `[proxy]`) as a
/// governor quota: `rate` requests per second (burst: one second's worth,
/// at least one request); `None` for 0 (unlimited).
pub(crate) fn quota(rate: f64) -> Option<governor::Quota> {
    if rate <= 0.0 || !rate.is_finite() {
        return None;
    }
    if rate >= 1.0 {
        let n = std::num::NonZeroU32::new(rate.round().min(u32::MAX as f64) as u32)?;
        Some(governor::Quota::per_second(n))
    } else {
        // Fractional rates: one request every 1/rate seconds.
        governor::Quota::with_period(Duration::from_secs_f64(1.0 / rate))
    }
}

/// `[integration]`: what the partner's Datadog integration is, as the
/// relay enforces it on the data it sends (docs/datadog.md "Partner log
/// rules").
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub(crate) struct IntegrationConfig {
    /// The integration's name: every log is sent with `ddsource` set to it
    /// (and `service` lowercase, this when the log has none). `None`: logs
    /// are sent with the source and service they came with.
    pub(crate) source: Option<String>,
    /// Send one event to a tenant's org when it connects, so the customer
    /// sees the integration's data at once (default off).
    pub(crate) test_event_on_connect: bool,
}

/// `[webhooks]`: the partner's endpoint for lifecycle events and the
/// secret that signs them (src/webhooks.rs).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WebhooksConfig {
    /// `https://`, or `http://` on a loopback host. Shown with any password
    /// and query redacted: they may carry a credential.
    #[serde(serialize_with = "ser_redacted_url")]
    pub(crate) url: Url,
    pub(crate) secret: Secret,
}

fn ser_redacted_url<S: serde::Serializer>(url: &Url, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redacted_url(url))
}

/// `url` with its password and query replaced by `redacted`, for config
/// dumps and messages.
pub(crate) fn redacted_url(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("redacted"));
    }
    if u.query().is_some() {
        u.set_query(Some("redacted"));
    }
    u.to_string()
}

/// Whether `url` names a loopback host (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// One configuration problem: where, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The file, or `environment variable DDRELAY_...`.
    pub(crate) origin: String,
    pub(crate) key: String,
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub(crate) problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Loads `path` with overrides from the process environment.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Config::load_with_env(path, &env)
    }

    /// Loads `path` with overrides from `env` (tests pass a map).
    pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                origin: origin.clone(),
                key: String::new(),
                message: format!("cannot read config file: {e}"),
            }],
        })?;
        let mut config = Config::from_sources(&text, &origin, env)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses TOML `text` (named `origin` in errors) with `env` overrides.
    pub(crate) fn from_sources(
        text: &str,
        origin: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let figment = Figment::new()
            .merge(NamedToml {
                text: text.to_string(),
                origin: origin.to_string(),
            })
            .merge(EnvMap::new(env));
        let (raw, problems) = extract_raw(&figment, origin)?;
        let mut v = Validator {
            figment: &figment,
            file: origin,
            problems,
        };
        let config = v.config(raw);
        // A key already reported (a wrong type, set aside) is not reported
        // again as missing.
        let mut seen = std::collections::HashSet::new();
        v.problems.retain(|p| seen.insert(p.key.clone()));
        match config {
            Some(c) if v.problems.is_empty() => Ok(c),
            _ => Err(ConfigError {
                problems: v.problems,
            }),
        }
    }

    /// The effective configuration as TOML, every secret redacted.
    pub(crate) fn redacted_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// The SQLite store location when no `database_url` is set.
    pub(crate) fn sqlite_path(&self) -> PathBuf {
        self.storage.data_dir.join("ddrelay.db")
    }

    /// Where the durable queue lives.
    pub(crate) fn queue_dir(&self) -> PathBuf {
        self.storage.data_dir.join("queue")
    }
}

/// A TOML source that names itself after its file in errors.
struct NamedToml {
    text: String,
    origin: String,
}

impl Provider for NamedToml {
    fn metadata(&self) -> Metadata {
        Metadata::from(
            self.origin.clone(),
            figment::Source::File(PathBuf::from(&self.origin)),
        )
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Toml::string(&self.text).data().map_err(|e| e.with_path(""))
    }
}

/// `DDRELAY_<SECTION>__<KEY>` overrides from an explicit list of variables.
struct EnvMap {
    vars: Vec<(String, String)>,
}

impl EnvMap {
    fn new(env: &[(String, String)]) -> EnvMap {
        EnvMap {
            vars: env
                .iter()
                .filter(|(k, _)| k.starts_with(ENV_PREFIX))
                .cloned()
                .collect(),
        }
    }
}

impl Provider for EnvMap {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_, keys| {
            format!(
                "{}{}",
                ENV_PREFIX,
                keys.iter()
                    .map(|k| k.to_ascii_uppercase())
                    .collect::<Vec<_>>()
                    .join("__")
            )
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (var, value) in &self.vars {
            let parts: Vec<String> = var[ENV_PREFIX.len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            if parts.iter().any(|p| p.is_empty()) {
                return Err(figment::Error::from(format!(
                    "environment variable {var}: malformed name"
                )));
            }
            let parsed: Value = value.parse().unwrap_or_else(|_| Value::from(value.clone()));
            insert_path(&mut root, &parts, parsed);
        }
        Ok(Profile::Default.collect(root))
    }
}

fn insert_path(dict: &mut Dict, parts: &[String], value: Value) {
    match parts {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            } else {
                let mut inner = Dict::new();
                insert_path(&mut inner, rest, value);
                *entry = Value::from(inner);
            }
        }
    }
}

/// Deserializes the raw config, reporting every unknown or ill-typed key:
/// serde stops at the first, so each one found is set aside (removed from
/// the merged values) and the rest is read again, until what is left reads
/// cleanly. The validator then checks that, so one run reports every
/// problem. Fails only when something other than a key is wrong (a TOML
/// syntax error).
fn extract_raw(figment: &Figment, file: &str) -> Result<(RawConfig, Vec<Problem>), ConfigError> {
    let fail = |problems| ConfigError { problems };
    let mut values: Dict = figment
        .extract()
        .map_err(|e| fail(figment_problems(e, figment, file)))?;
    let mut problems = Vec::new();
    // Each round sets at least one key aside; a config has far fewer keys.
    for _ in 0..256 {
        let pass = Figment::from(figment::providers::Serialized::defaults(&values));
        let error = match pass.extract::<RawConfig>() {
            Ok(raw) => return Ok((raw, problems)),
            Err(e) => e,
        };
        let found = figment_problems(error, figment, file);
        let before = problems.len();
        for p in found {
            if p.key.is_empty() || !remove_path(&mut values, &p.key) {
                problems.push(p);
                return Err(fail(problems));
            }
            problems.push(p);
        }
        if problems.len() == before {
            return Err(fail(problems));
        }
    }
    Err(fail(problems))
}

/// Removes the value at dotted `path`; whether there was one.
fn remove_path(dict: &mut Dict, path: &str) -> bool {
    match path.split_once('.') {
        None => dict.remove(path).is_some(),
        Some((first, rest)) => match dict.get_mut(first) {
            Some(Value::Dict(_, inner)) => remove_path(inner, rest),
            _ => false,
        },
    }
}

fn figment_problems(error: figment::Error, figment: &Figment, file: &str) -> Vec<Problem> {
    error
        .into_iter()
        .map(|e| {
            let mut key = e.path.join(".");
            let message = match &e.kind {
                figment::error::Kind::UnknownField(field, expected) => {
                    // Newer figment puts the field in the path already.
                    if e.path.last() != Some(field) {
                        if !key.is_empty() {
                            key.push('.');
                        }
                        key.push_str(field);
                    }
                    if expected.is_empty() {
                        "unknown key".to_string()
                    } else {
                        format!("unknown key (expected one of: {})", expected.join(", "))
                    }
                }
                figment::error::Kind::InvalidType(actual, expected) => {
                    format!("wrong type: found {actual}, expected {expected}")
                }
                other => one_line(&other.to_string()),
            };
            // Where the key was set, from the original sources (a re-read
            // pass knows only its own).
            let origin = match figment.find_metadata(&key).or(e.metadata.as_ref()) {
                Some(m) if m.name.as_ref() == "environment variable" => {
                    format!(
                        "environment variable {}{}",
                        ENV_PREFIX,
                        key.replace('.', "__").to_ascii_uppercase()
                    )
                }
                Some(m) => m.name.to_string(),
                None => file.to_string(),
            };
            Problem {
                origin,
                key,
                message,
            }
        })
        .collect()
}

/// Folds a multi-line parser message (TOML errors draw the offending line
/// and a caret) into one line: its first line plus the explanation lines.
fn one_line(message: &str) -> String {
    let mut lines = message
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    let rest: Vec<&str> = lines
        .filter(|l| {
            !l.starts_with(' ')
                && !l.contains(" | ")
                && !l.trim_start().starts_with('|')
                && !l.trim_start().starts_with('^')
        })
        .collect();
    if rest.is_empty() {
        first
    } else {
        format!("{first}: {}", rest.join(", "))
    }
}

/// Parses `1234`, `512KiB`, `5MB`, `8GiB` (binary and decimal suffixes).
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn ser_display<S: serde::Serializer, T: fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_redacted<S: serde::Serializer, T>(_: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(crate::secret::REDACTED)
}

fn ser_sites<S: serde::Serializer>(v: &AllowedSites, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.domains())
}

fn ser_db_url<S: serde::Serializer>(v: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(secret) => match Url::parse(secret.expose()) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("redacted"));
                }
                // Query parameters may carry passwords or keys too.
                if u.query().is_some() {
                    u.set_query(Some("redacted"));
                }
                s.collect_str(&u)
            }
            Err(_) => s.serialize_str(crate::secret::REDACTED),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The smallest valid config file, for tests in this crate.
    pub(crate) fn minimal(dir: &str, key: &str) -> String {
        format!(
            r#"
[oauth]
client_id = "client-1"
client_secret = "s3cret-client"
redirect_uri = "https://relay.example/oauth/callback"

[server]
admin_token = "admin-token-0123456789"

[storage]
data_dir = "{dir}"
master_key = "{key}"
"#
        )
    }

    pub(crate) fn key() -> String {
        MasterKey::generate().to_base64().expose().to_string()
    }

    #[test]
    fn integration_source_checked_and_overridable() {
        let file = format!(
            "{}\n[integration]\nsource = \"acme-cloud\"\n",
            minimal("/tmp/x", &key())
        );
        let c = Config::from_sources(&file, "test.toml", &[]).unwrap();
        assert_eq!(c.integration.source.as_deref(), Some("acme-cloud"));
        assert!(!c.integration.test_event_on_connect);
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let c = Config::from_sources(
            &file,
            "test.toml",
            &env("DDRELAY_INTEGRATION__TEST_EVENT_ON_CONNECT", "true"),
        )
        .unwrap();
        assert!(c.integration.test_event_on_connect);
        let e = Config::from_sources(
            &file,
            "test.toml",
            &env("DDRELAY_INTEGRATION__SOURCE", "Acme Cloud"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("DDRELAY_INTEGRATION__SOURCE") && e.contains("integration.source"),
            "{e}"
        );
        assert!(e.contains("lowercase"), "{e}");
        let none = Config::from_sources(&minimal("/tmp/x", &key()), "t.toml", &[]).unwrap();
        assert_eq!(none.integration, IntegrationConfig::default());
    }

    #[test]
    fn quotas() {
        assert!(quota(0.0).is_none());
        assert!(quota(f64::NAN).is_none());
        assert!(quota(0.5).is_some());
        assert!(quota(20.0).is_some());
    }

    #[test]
    fn minimal_config_loads_with_defaults() {
        let c = Config::from_sources(&minimal("/tmp/x", &key()), "test.toml", &[]).unwrap();
        assert_eq!(c.oauth.state_ttl, Duration::from_secs(600));
        assert_eq!(c.server.api_listen.to_string(), "127.0.0.1:8126");
        assert_eq!(c.datadog.allowed_sites, AllowedSites::default());
        let shown = c.redacted_toml();
        assert!(!shown.contains("s3cret-client"), "{shown}");
        assert!(!shown.contains("admin-token-0123456789"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn env_overrides_win() {
        let env = vec![
            (
                "DDRELAY_OAUTH__CLIENT_SECRET".to_string(),
                "12345".to_string(),
            ),
            (
                "DDRELAY_SERVER__API_LISTEN".to_string(),
                "127.0.0.1:9999".to_string(),
            ),
            (
                "DDRELAY_DATADOG__ALLOWED_SITES".to_string(),
                "[\"datadoghq.eu\"]".to_string(),
            ),
        ];
        let c = Config::from_sources(&minimal("/tmp/x", &key()), "test.toml", &env).unwrap();
        assert_eq!(c.oauth.client.client_secret.expose(), "12345");
        assert_eq!(c.server.api_listen.port(), 9999);
        assert_eq!(c.datadog.allowed_sites.domains(), vec!["datadoghq.eu"]);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let text = minimal("/tmp/x", &key()) + "\n[log]\nlevle = \"debug\"\n";
        let e = Config::from_sources(&text, "/etc/ddrelay.toml", &[]).unwrap_err();
        let line = e.to_string();
        assert!(
            line.contains("/etc/ddrelay.toml")
                && line.contains("log.levle")
                && line.contains("unknown key"),
            "{line}"
        );
    }

    /// Every problem once, in one run: an unknown key, a wrong type and a
    /// missing required key together (before, only the unknown key was
    /// reported, and named twice: `server.bogus_knob.bogus_knob`).
    #[test]
    fn every_problem_is_reported_once_in_one_run() {
        let text = format!(
            "[oauth]\nclient_id = \"x\"\nredirect_uri = \"https://r.example/oauth/callback\"\n\
             [server]\nbogus_knob = 1\nadmin_token = \"abcdefghijklmnopqrstuvwxyz012345\"\n\
             max_body = true\n[storage]\ndata_dir = \"/tmp/x\"\nmaster_key = \"{}\"\n\
             [log]\nlevle = \"debug\"\n",
            key()
        );
        let e = Config::from_sources(&text, "/etc/ddrelay.toml", &[]).unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "log.levle",
                "server.bogus_knob",
                "oauth.client_secret",
                "server.max_body",
            ],
            "{e}"
        );
        let text = e.to_string();
        assert!(!text.contains("bogus_knob.bogus_knob"), "{text}");
        assert!(
            e.problems.iter().all(|p| p.origin == "/etc/ddrelay.toml"),
            "{text}"
        );
    }

    #[test]
    fn unknown_env_key_is_named() {
        let env = vec![("DDRELAY_OAUTH__CLIENT_SECERT".to_string(), "x".to_string())];
        let e = Config::from_sources(&minimal("/tmp/x", &key()), "t.toml", &env).unwrap_err();
        assert!(
            e.to_string().contains("DDRELAY_OAUTH__CLIENT_SECERT"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let text = minimal("/tmp/x", &key()) + "\n[delivery]\nmax_concurrency = \"lots\"\n";
        let e = Config::from_sources(&text, "c.toml", &[]).unwrap_err();
        let line = e.to_string();
        assert!(
            line.contains("delivery.max_concurrency") && line.contains("expected"),
            "{line}"
        );
    }

    #[test]
    fn every_missing_value_is_reported() {
        let e = Config::from_sources("[oauth]\n", "c.toml", &[]).unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "oauth.client_id",
            "oauth.client_secret",
            "oauth.redirect_uri",
            "server.admin_token",
            "storage.data_dir",
            "storage.master_key",
        ] {
            assert!(keys.contains(&k), "{k} not in {keys:?}");
        }
        assert!(e.problems.iter().all(|p| p.origin == "c.toml"));
    }

    #[test]
    fn malformed_master_key_and_toml() {
        let e = Config::from_sources(&minimal("/tmp/x", "c2hvcnQ="), "c.toml", &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("storage.master_key: decodes to 5 bytes"),
            "{e}"
        );
        let e = Config::from_sources("[oauth\nclient_id=", "bad.toml", &[]).unwrap_err();
        assert!(e.to_string().starts_with("bad.toml"), "{e}");
    }

    #[test]
    fn secret_files_and_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "from-file\n").unwrap();
        let text = minimal("/tmp/x", &key()).replace(
            "client_secret = \"s3cret-client\"",
            &format!("client_secret_file = \"{}\"", f.display()),
        );
        let c = Config::from_sources(&text, "c.toml", &[]).unwrap();
        assert_eq!(c.oauth.client.client_secret.expose(), "from-file");
        let env = vec![(
            "DDRELAY_OAUTH__CLIENT_SECRET".to_string(),
            "inline".to_string(),
        )];
        let e = Config::from_sources(&text, "c.toml", &env).unwrap_err();
        assert!(e.to_string().contains("give exactly one"), "{e}");
    }

    /// `[webhooks]`: https anywhere, http only on loopback, the secret
    /// inline, by env or by file and never shown; each mistake names its key.
    #[test]
    fn webhooks_url_scheme_and_secret() {
        let load = |extra: &str, env: &[(&str, &str)]| {
            let env: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Config::from_sources(&(minimal("/tmp/x", &key()) + extra), "c.toml", &env)
        };
        assert!(load("", &[]).unwrap().webhooks.is_none());
        let secret = "whsec-0123456789abcdef";
        for url in [
            "https://partner.example/hooks",
            "http://127.0.0.1:9000/hooks",
            "http://localhost/hooks",
            "http://[::1]:80/h",
        ] {
            let c = load(
                &format!("[webhooks]\nurl = \"{url}\"\nsecret = \"{secret}\"\n"),
                &[],
            )
            .unwrap_or_else(|e| panic!("{url}: {e}"));
            let w = c.webhooks.as_ref().unwrap();
            assert_eq!(w.secret.expose(), secret);
            assert!(!c.redacted_toml().contains(secret));
        }
        let e = load(
            &format!("[webhooks]\nurl = \"http://partner.example/hooks\"\nsecret = \"{secret}\"\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("webhooks.url") && e.contains("loopback"), "{e}");
        assert!(!e.contains(secret));
        let e = load("[webhooks]\nurl = \"https://p.example/h\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("webhooks.secret") && e.contains("missing"),
            "{e}"
        );
        let e = load("[webhooks]\nsecret = \"0123456789abcdefghij\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("webhooks.secret") && e.contains("webhooks.url is not"),
            "{e}"
        );
        let e = load(
            "[webhooks]\nurl = \"ftp://p.example/h\"\nsecret = \"short\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("webhooks.url") && e.contains("ftp"), "{e}");
        assert!(e.contains("webhooks.secret") && e.contains("16"), "{e}");
        // By environment, URL credentials and query redacted when shown.
        let c = load(
            "",
            &[
                (
                    "DDRELAY_WEBHOOKS__URL",
                    "https://u:pw-secret@p.example/h?token=q-secret",
                ),
                ("DDRELAY_WEBHOOKS__SECRET", secret),
            ],
        )
        .unwrap();
        let shown = c.redacted_toml();
        assert!(shown.contains("[webhooks]"), "{shown}");
        for s in [secret, "pw-secret", "q-secret"] {
            assert!(!shown.contains(s), "{s} in {shown}");
        }
    }

    #[test]
    fn resolve_and_sizes() {
        let text = minimal("/tmp/x", &key())
            + "\n[datadog.resolve]\n\"api.datadoghq.eu\" = \"127.0.0.1:9443\"\n[queue]\nmax_bytes = \"1GiB\"\n";
        let c = Config::from_sources(&text, "c.toml", &[]).unwrap();
        assert_eq!(c.datadog.resolve["api.datadoghq.eu"].port(), 9443);
        assert_eq!(c.queue.max_bytes, 1 << 30);
        assert_eq!(parse_size("5MB"), Some(5_000_000));
        assert_eq!(parse_size("five"), None);
    }

    #[test]
    fn inflight_budget_default_value_and_floor() {
        let c = Config::from_sources(&minimal("/tmp/x", &key()), "c.toml", &[]).unwrap();
        assert_eq!(c.delivery.max_inflight_bytes, 32 << 20);
        let text = minimal("/tmp/x", &key()) + "\n[delivery]\nmax_inflight_bytes = \"16MiB\"\n";
        let c = Config::from_sources(&text, "c.toml", &[]).unwrap();
        assert_eq!(c.delivery.max_inflight_bytes, 16 << 20);
        let text = minimal("/tmp/x", &key()) + "\n[delivery]\nmax_inflight_bytes = \"1MiB\"\n";
        let e = Config::from_sources(&text, "c.toml", &[]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("delivery.max_inflight_bytes") && msg.contains("too small"),
            "{msg}"
        );
    }

    #[test]
    fn stats_batch_age_follows_the_batch_age_unless_set() {
        let with = |extra: &str| {
            let text = minimal("/tmp/x", &key()) + "\n[delivery]\n" + extra;
            let c = Config::from_sources(&text, "c.toml", &[]).unwrap();
            (c.delivery.batch_max_age, c.delivery.stats_max_age)
        };
        let s = Duration::from_secs;
        assert_eq!(with(""), (s(1), s(1)));
        assert_eq!(with("batch_max_age = \"200ms\"\n"), (s(1) / 5, s(1) / 5));
        assert_eq!(with("stats_max_age = \"10s\"\n"), (s(1), s(10)));
        let text = minimal("/tmp/x", &key()) + "\n[delivery]\nstats_max_age = \"soon\"\n";
        let msg = Config::from_sources(&text, "c.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("delivery.stats_max_age"), "{msg}");
    }

    #[test]
    fn queue_compression_default_choices_and_typo() {
        let c = Config::from_sources(&minimal("/tmp/x", &key()), "c.toml", &[]).unwrap();
        assert_eq!(c.queue.compression, QueueCompression::Lz4);
        let env = vec![("DDRELAY_QUEUE__COMPRESSION".to_string(), "none".to_string())];
        let c = Config::from_sources(&minimal("/tmp/x", &key()), "c.toml", &env).unwrap();
        assert_eq!(c.queue.compression, QueueCompression::None);
        let text = minimal("/tmp/x", &key()) + "\n[queue]\ncompression = \"lz5\"\n";
        let e = Config::from_sources(&text, "c.toml", &[]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("queue.compression") && msg.contains("lz5") && msg.contains("\"none\""),
            "{msg}"
        );
    }

    #[test]
    fn queue_preallocate_default_env_and_typo() {
        let c = Config::from_sources(&minimal("/tmp/x", &key()), "c.toml", &[]).unwrap();
        assert!(c.queue.preallocate);
        let text = minimal("/tmp/x", &key()) + "\n[queue]\npreallocate = false\n";
        assert!(
            !Config::from_sources(&text, "c.toml", &[])
                .unwrap()
                .queue
                .preallocate
        );
        let env = vec![(
            "DDRELAY_QUEUE__PREALLOCATE".to_string(),
            "false".to_string(),
        )];
        let c = Config::from_sources(&minimal("/tmp/x", &key()), "c.toml", &env).unwrap();
        assert!(!c.queue.preallocate);
        let env = vec![("DDRELAY_QUEUE__PREALLOCATE".to_string(), "yes".to_string())];
        let e = Config::from_sources(&minimal("/tmp/x", &key()), "c.toml", &env).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("queue.preallocate")
                && msg.contains("`yes`")
                && msg.contains("true or false"),
            "{msg}"
        );
    }
}
