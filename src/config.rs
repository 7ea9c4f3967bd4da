//! Configuration: TOML plus `DDRELAY_<SECTION>__<KEY>` environment overrides,
//! parsed without I/O side effects into a validated, typed [`Config`].
//!
//! Two layers, as quickwit does it: [`raw`] mirrors the file with every field
//! optional and unknown keys rejected; [`Config::from_sources`] validates the
//! whole of it and reports *every* problem, one line each, naming the file
//! (or environment variable), the key and what was expected.
//!
//! Secrets may be inline, in the environment, or in a file (`*_file` keys);
//! they become [`Secret`]s and print as `[redacted]`, so the effective config
//! can be shown by `check-config` without leaking anything.
//!
//! This module reads files (the config and `*_file` secrets) but binds no
//! port and opens no store: that is `app.rs`'s build phase.

mod raw;

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
use crate::site::{AllowedSites, Encoding};
use raw::RawConfig;

/// Smallest queue sizes: one Datadog-sized request must fit a record.
const MIN_QUEUE_BYTES: u64 = 8 << 20;
/// Smallest in-flight budget: one take of the largest payload (5 MiB).
const MIN_INFLIGHT_BYTES: u64 = 8 << 20;

/// The environment variable prefix for overrides.
pub const ENV_PREFIX: &str = "DDRELAY_";

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    #[serde(skip)]
    pub source: Option<PathBuf>,
    pub oauth: OAuthConfig,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub datadog: DatadogConfig,
    pub log: LogConfig,
    pub queue: QueueConfig,
    pub delivery: DeliveryConfig,
    pub limits: LimitsConfig,
    pub proxy: ProxyConfig,
    pub integration: IntegrationConfig,
    /// `[webhooks]`: where lifecycle events go; `None` when `url` is unset.
    pub webhooks: Option<WebhooksConfig>,
}

/// One OAuth client registered with Datadog.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Secret,
}

#[derive(Debug, Clone, Serialize)]
pub struct OAuthConfig {
    /// The published client (or the only one).
    #[serde(flatten)]
    pub client: ClientCredentials,
    /// A private test client (Datadog's "Test the OAuth client" step); flows
    /// started with `"client": "test"` use it, and tenants remember which.
    pub test_client: Option<ClientCredentials>,
    #[serde(serialize_with = "ser_display")]
    pub redirect_uri: Url,
    #[serde(serialize_with = "ser_duration")]
    pub state_ttl: Duration,
    /// Every connected tenant's grant is confirmed with Datadog at least
    /// this often (a customer who uninstalls revokes the grant, while the
    /// API key may keep working): 5 s to 24 h, default 1 h.
    #[serde(serialize_with = "ser_duration")]
    pub grant_check_interval: Duration,
    /// Scopes sent on the authorize URL. Empty (the default): no `scope`
    /// parameter, since marketplace clients get their scopes from the
    /// Developer Platform (UNCONFIRMED whether to send it: docs/datadog.md
    /// "Authorize").
    pub scopes: Vec<String>,
}

impl OAuthConfig {
    /// The configured client with this id, if any.
    pub fn client(&self, client_id: &str) -> Option<&ClientCredentials> {
        std::iter::once(&self.client)
            .chain(self.test_client.as_ref())
            .find(|c| c.client_id == client_id)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    pub public_listen: SocketAddr,
    pub api_listen: SocketAddr,
    pub admin_token: Secret,
    /// Largest request body accepted on the wire.
    pub max_body: u64,
    /// Largest request body once decompressed (decompression bombs stop here).
    pub max_decompressed_body: u64,
    /// Memory for decoding large request bodies at once (decompressed
    /// bodies, their validated copies and records): see `ingest::budget`.
    pub decode_memory: u64,
    #[serde(serialize_with = "ser_duration")]
    pub request_timeout: Duration,
    /// How long a client of `public_listen` may take to send a request's
    /// headers (also how long an idle keep-alive connection stays open):
    /// a slow client is cut off after it (SECURITY.md "Threats and how they
    /// are met": slow clients on the public listener).
    #[serde(serialize_with = "ser_duration")]
    pub public_header_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    #[serde(serialize_with = "ser_redacted")]
    pub master_key: MasterKey,
    /// The shared store (PostgreSQL) URL; `None`: SQLite under `data_dir`.
    /// Printed with its password redacted.
    #[serde(serialize_with = "ser_db_url")]
    pub database_url: Option<Secret>,
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
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueConfig {
    /// Global disk budget for queued data.
    pub max_bytes: u64,
    /// Per-tenant share of the queue.
    pub tenant_max_bytes: u64,
    /// Data held for tenants that are not connected, in all: bounded apart
    /// from `max_bytes`, so held data never makes the queue refuse a
    /// connected tenant. Default: a quarter of `max_bytes`.
    pub held_max_bytes: u64,
    /// Size at which a segment file is rolled.
    pub segment_bytes: u64,
    /// Per-tenant dead-letter budget.
    pub dead_letter_max_bytes: u64,
    /// How accepted payloads are stored (new records; the queue reads both).
    pub compression: QueueCompression,
    /// Write segment files ahead with zeros, so that the fsync an
    /// acknowledgement waits for overwrites blocks already allocated.
    pub preallocate: bool,
}

/// How the queue stores accepted payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueCompression {
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
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    pub fn encoding(self) -> Encoding {
        match self {
            Compression::Gzip => Encoding::Gzip,
            Compression::Zstd => Encoding::Zstd,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryConfig {
    #[serde(serialize_with = "ser_duration")]
    pub batch_max_age: Duration,
    /// Compression for series v2 (`zstd` sends `zstd1`); other endpoints
    /// always use what Datadog documents for them (gzip, or deflate for checks).
    pub compression: Compression,
    pub compression_level: i32,
    pub max_concurrency: usize,
    pub tenant_concurrency: usize,
    /// Memory for records read from the queue and not yet answered by
    /// Datadog, over all streams (read at start).
    pub max_inflight_bytes: u64,
    #[serde(serialize_with = "ser_duration")]
    pub request_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub retry_initial: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub retry_max: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
    /// How many times a 403 is retried while the key still validates.
    pub forbidden_retries: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LimitsConfig {
    /// 0 means unlimited.
    pub tenant_requests_per_second: f64,
    pub tenant_bytes_per_second: u64,
    pub global_requests_per_second: f64,
    pub global_bytes_per_second: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProxyConfig {
    pub allowed_prefixes: Vec<String>,
    pub token: Option<Secret>,
    pub max_request_body: u64,
    pub max_response_body: u64,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    pub tenant_concurrency: usize,
    pub tenant_requests_per_second: f64,
}

/// `[integration]`: what the partner's Datadog integration is, as the
/// relay enforces it on the data it sends (docs/datadog.md "Partner log
/// rules").
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct IntegrationConfig {
    /// The integration's name: every log is sent with `ddsource` set to it
    /// (and `service` lowercase, this when the log has none). `None`: logs
    /// are sent with the source and service they came with.
    pub source: Option<String>,
    /// Send one event to a tenant's org when it connects, so the customer
    /// sees the integration's data at once (default off).
    pub test_event_on_connect: bool,
}

/// `[webhooks]`: the partner's endpoint for lifecycle events and the
/// secret that signs them (src/webhooks.rs).
#[derive(Debug, Clone, Serialize)]
pub struct WebhooksConfig {
    /// `https://`, or `http://` on a loopback host. Shown with any password
    /// and query redacted: they may carry a credential.
    #[serde(serialize_with = "ser_redacted_url")]
    pub url: Url,
    pub secret: Secret,
}

fn ser_redacted_url<S: serde::Serializer>(url: &Url, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redacted_url(url))
}

/// `url` with its password and query replaced by `redacted`, for config
/// dumps and messages.
pub fn redacted_url(url: &Url) -> String {
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
pub struct Problem {
    /// The file, or `environment variable DDRELAY_...`.
    pub origin: String,
    pub key: String,
    pub message: String,
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
    pub problems: Vec<Problem>,
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
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
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
    pub fn from_sources(
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
    pub fn redacted_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// The SQLite store location when no `database_url` is set.
    pub fn sqlite_path(&self) -> PathBuf {
        self.storage.data_dir.join("ddrelay.db")
    }

    /// Where the durable queue lives.
    pub fn queue_dir(&self) -> PathBuf {
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

/// Collects problems while turning a [`RawConfig`] into a [`Config`].
struct Validator<'a> {
    figment: &'a Figment,
    file: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn origin(&self, key: &str) -> String {
        match self.figment.find_metadata(key) {
            Some(m) if m.name.as_ref() == "environment variable" => {
                format!(
                    "environment variable {}{}",
                    ENV_PREFIX,
                    key.replace('.', "__").to_ascii_uppercase()
                )
            }
            _ => self.file.to_string(),
        }
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let origin = self.origin(key);
        self.problems.push(Problem {
            origin,
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn required<T>(&mut self, key: &str, value: Option<T>, what: &str) -> Option<T> {
        if value.is_none() {
            self.problem(key, format!("missing (expected {what})"));
        }
        value
    }

    /// A secret given inline (`key`) or by file (`key_file`).
    fn secret(
        &mut self,
        key: &str,
        inline: Option<String>,
        file: Option<String>,
        required: bool,
    ) -> Option<Secret> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(
                    key,
                    format!("set both `{key}` and `{key}_file`; give exactly one"),
                );
                None
            }
            (Some(v), None) => {
                if v.trim().is_empty() {
                    self.problem(key, "is empty");
                    None
                } else {
                    Some(Secret::new(v))
                }
            }
            (None, Some(path)) => {
                let file_key = format!("{key}_file");
                match std::fs::read_to_string(&path) {
                    Ok(v) if v.trim().is_empty() => {
                        self.problem(&file_key, format!("file {path} is empty"));
                        None
                    }
                    // Secret files conventionally end with a newline.
                    Ok(v) => Some(Secret::new(v.trim_end_matches(['\n', '\r']).to_string())),
                    Err(e) => {
                        self.problem(&file_key, format!("cannot read secret file {path}: {e}"));
                        None
                    }
                }
            }
            (None, None) => {
                if required {
                    self.problem(
                        key,
                        format!("missing (set `{key}`, `{key}_file`, or the environment variable)"),
                    );
                }
                None
            }
        }
    }

    fn duration(&mut self, key: &str, value: Option<String>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => {
                match humantime::parse_duration(v.trim()) {
                    Ok(d) => d,
                    Err(e) => {
                        self.problem(key, format!("`{v}` is not a duration ({e}); expected e.g. \"10m\", \"30s\", \"1h\""));
                        default
                    }
                }
            }
        }
    }

    fn size(&mut self, key: &str, value: Option<String>, default: u64) -> u64 {
        match value {
            None => default,
            Some(v) => match parse_size(&v) {
                Some(n) => n,
                None => {
                    self.problem(key, format!("`{v}` is not a size; expected bytes or e.g. \"256MiB\", \"8GiB\", \"5MB\""));
                    default
                }
            },
        }
    }

    fn flag(&mut self, key: &str, value: Option<String>, default: bool) -> bool {
        match value.as_deref() {
            None => default,
            Some("true") => true,
            Some("false") => false,
            Some(v) => {
                self.problem(
                    key,
                    format!("`{v}` is not a boolean; expected true or false"),
                );
                default
            }
        }
    }

    /// A size of at least `min` bytes.
    fn min_size(&mut self, key: &str, value: Option<String>, default: u64, min: u64) -> u64 {
        let n = self.size(key, value, default);
        if n < min {
            self.problem(
                key,
                format!("{n} bytes is too small; it must be at least {min} (one full payload)"),
            );
            return default;
        }
        n
    }

    fn addr(&mut self, key: &str, value: Option<String>, default: &str) -> Option<SocketAddr> {
        let v = value.unwrap_or_else(|| default.to_string());
        match v.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    key,
                    format!(
                        "`{v}` is not an address; expected host:port such as \"127.0.0.1:8126\""
                    ),
                );
                None
            }
        }
    }

    fn count(&mut self, key: &str, value: Option<i64>, default: usize, min: usize) -> usize {
        match value {
            None => default,
            Some(n) if n >= min as i64 => n as usize,
            Some(n) => {
                self.problem(key, format!("{n} is too small; expected at least {min}"));
                default
            }
        }
    }

    fn rate(&mut self, key: &str, value: Option<f64>) -> f64 {
        match value {
            None => 0.0,
            Some(r) if r >= 0.0 && r.is_finite() => r,
            Some(r) => {
                self.problem(
                    key,
                    format!("{r} is not a rate; expected a number ≥ 0 (0 = unlimited)"),
                );
                0.0
            }
        }
    }

    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        // [oauth]
        let client_id = self.required(
            "oauth.client_id",
            raw.oauth.client_id,
            "the OAuth client id from Datadog's Developer Platform",
        );
        let client_secret = self.secret(
            "oauth.client_secret",
            raw.oauth.client_secret,
            raw.oauth.client_secret_file,
            true,
        );
        let redirect_uri = self
            .required(
                "oauth.redirect_uri",
                raw.oauth.redirect_uri,
                "the redirect URI registered on the OAuth client",
            )
            .and_then(|v| match Url::parse(&v) {
                Ok(u)
                    if (u.scheme() == "https" || u.scheme() == "http")
                        && u.host().is_some()
                        && u.fragment().is_none() =>
                {
                    Some(u)
                }
                _ => {
                    self.problem(
                        "oauth.redirect_uri",
                        format!("`{v}` is not an absolute http(s) URL without a fragment"),
                    );
                    None
                }
            });
        let state_ttl = self.duration(
            "oauth.state_ttl",
            raw.oauth.state_ttl,
            Duration::from_secs(600),
        );
        if state_ttl < Duration::from_secs(30) || state_ttl > Duration::from_secs(24 * 3600) {
            self.problem("oauth.state_ttl", "must be between 30s and 24h");
        }
        let grant_check_interval = self.duration(
            "oauth.grant_check_interval",
            raw.oauth.grant_check_interval,
            Duration::from_secs(3600),
        );
        if grant_check_interval < Duration::from_secs(5)
            || grant_check_interval > Duration::from_secs(24 * 3600)
        {
            self.problem("oauth.grant_check_interval", "must be between 5s and 24h");
        }
        let test_client = raw.oauth.test_client.and_then(|t| {
            let id = self.required(
                "oauth.test_client.client_id",
                t.client_id,
                "the test client's id",
            );
            let secret = self.secret(
                "oauth.test_client.client_secret",
                t.client_secret,
                t.client_secret_file,
                true,
            );
            Some(ClientCredentials {
                client_id: id?,
                client_secret: secret?,
            })
        });
        let scopes = raw.oauth.scopes.unwrap_or_default();
        for s in &scopes {
            if s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            {
                self.problem("oauth.scopes", format!("`{s}` is not a scope name"));
            }
        }

        // [server]
        let public_listen = self.addr(
            "server.public_listen",
            raw.server.public_listen,
            "0.0.0.0:8080",
        );
        let api_listen = self.addr("server.api_listen", raw.server.api_listen, "127.0.0.1:8126");
        let admin_token = self.secret(
            "server.admin_token",
            raw.server.admin_token,
            raw.server.admin_token_file,
            true,
        );
        if let Some(t) = &admin_token
            && t.expose().len() < 16
        {
            self.problem(
                "server.admin_token",
                "is shorter than 16 characters; use a long random token",
            );
        }
        // Datadog's largest request is 5 MB of logs; compressed bodies are
        // smaller. 16 MiB on the wire and 64 MiB decompressed leave headroom.
        let max_body = self.size("server.max_body", raw.server.max_body, 16 << 20);
        let max_decompressed_body = self.size(
            "server.max_decompressed_body",
            raw.server.max_decompressed_body,
            64 << 20,
        );
        let decode_memory = self.size("server.decode_memory", raw.server.decode_memory, 256 << 20);
        if max_decompressed_body < 5_242_880 {
            self.problem(
                "server.max_decompressed_body",
                "must be at least 5 MiB so Datadog-sized requests are accepted",
            );
        }
        let request_timeout = self.duration(
            "server.request_timeout",
            raw.server.request_timeout,
            Duration::from_secs(30),
        );
        let public_header_timeout = self.duration(
            "server.public_header_timeout",
            raw.server.public_header_timeout,
            Duration::from_secs(10),
        );
        if public_header_timeout.is_zero() {
            self.problem(
                "server.public_header_timeout",
                "must be longer than 0s (it cuts off clients that send headers slowly)",
            );
        }

        // [storage]
        let data_dir = self
            .required(
                "storage.data_dir",
                raw.storage.data_dir,
                "a directory for the store and the queue",
            )
            .map(PathBuf::from);
        let master_key = self
            .secret(
                "storage.master_key",
                raw.storage.master_key,
                raw.storage.master_key_file,
                true,
            )
            .and_then(|s| match MasterKey::from_base64(s.expose()) {
                Ok(k) => Some(k),
                Err(e) => {
                    self.problem("storage.master_key", e.to_string());
                    None
                }
            });
        let database_url = self.secret(
            "storage.database_url",
            raw.storage.database_url,
            raw.storage.database_url_file,
            false,
        );
        if let Some(url) = &database_url {
            let ok = Url::parse(url.expose())
                .map(|u| matches!(u.scheme(), "postgres" | "postgresql"))
                .unwrap_or(false);
            if !ok {
                self.problem(
                    "storage.database_url",
                    "expected a postgres://user@host:5432/db URL",
                );
            }
        }

        // [datadog]
        let allowed_sites = match raw.datadog.allowed_sites {
            None => AllowedSites::default(),
            Some(list) if list.is_empty() => {
                self.problem(
                    "datadog.allowed_sites",
                    "is empty; omit it to allow every Datadog site",
                );
                AllowedSites::default()
            }
            Some(list) => AllowedSites::from_values(&list).unwrap_or_else(|e| {
                self.problem("datadog.allowed_sites", e.to_string());
                AllowedSites::default()
            }),
        };
        let ca_file = raw.datadog.ca_file.map(PathBuf::from);
        if let Some(p) = &ca_file {
            match std::fs::read(p) {
                Ok(pem)
                    if reqwest::Certificate::from_pem_bundle(&pem)
                        .map(|c| !c.is_empty())
                        .unwrap_or(false) => {}
                Ok(_) => self.problem(
                    "datadog.ca_file",
                    format!("{} holds no PEM certificate", p.display()),
                ),
                Err(e) => self.problem(
                    "datadog.ca_file",
                    format!("cannot read {}: {e}", p.display()),
                ),
            }
        }
        let mut resolve = BTreeMap::new();
        for (host, addr) in raw.datadog.resolve.unwrap_or_default() {
            let key = "datadog.resolve".to_string();
            let valid_host = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid_host {
                self.problem(&key, format!("`{host}` is not a hostname"));
                continue;
            }
            match addr.parse::<SocketAddr>() {
                Ok(a) => {
                    resolve.insert(host.to_ascii_lowercase(), a);
                }
                Err(_) => self.problem(
                    &key,
                    format!(
                        "\"{host}\" = \"{addr}\": expected an ip:port such as \"127.0.0.1:9443\""
                    ),
                ),
            }
        }

        // [log]
        let level = raw.log.level.unwrap_or_else(|| "info".to_string());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.problem("log.level", format!("`{level}` is not a level or filter (expected e.g. \"info\", \"debug\", \"ddrelay=debug,info\")"));
        }
        let format = match raw.log.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.problem(
                    "log.format",
                    format!("`{other}` is not a format; expected \"text\" or \"json\""),
                );
                LogFormat::Text
            }
        };

        // [queue]
        let queue = QueueConfig {
            max_bytes: self.size("queue.max_bytes", raw.queue.max_bytes, 8 << 30),
            tenant_max_bytes: self.size(
                "queue.tenant_max_bytes",
                raw.queue.tenant_max_bytes,
                512 << 20,
            ),
            held_max_bytes: 0,
            segment_bytes: self.size("queue.segment_bytes", raw.queue.segment_bytes, 64 << 20),
            dead_letter_max_bytes: self.size(
                "queue.dead_letter_max_bytes",
                raw.queue.dead_letter_max_bytes,
                16 << 20,
            ),
            compression: match raw.queue.compression.as_deref() {
                None | Some("lz4") => QueueCompression::Lz4,
                Some("none") => QueueCompression::None,
                Some(other) => {
                    self.problem(
                        "queue.compression",
                        format!("`{other}` is not supported; expected \"lz4\" or \"none\""),
                    );
                    QueueCompression::Lz4
                }
            },
            preallocate: self.flag("queue.preallocate", raw.queue.preallocate, true),
        };
        let mut queue = queue;
        queue.held_max_bytes = self.size(
            "queue.held_max_bytes",
            raw.queue.held_max_bytes,
            queue.max_bytes / 4,
        );
        if queue.tenant_max_bytes > queue.max_bytes {
            self.problem("queue.tenant_max_bytes", "is larger than queue.max_bytes");
        }
        // A request Datadog accepts (5 MB of logs, once normalised) must fit
        // one record, or the relay would refuse it for its size.
        for (key, value) in [
            ("queue.segment_bytes", queue.segment_bytes),
            ("queue.tenant_max_bytes", queue.tenant_max_bytes),
            ("queue.max_bytes", queue.max_bytes),
        ] {
            if value < MIN_QUEUE_BYTES {
                self.problem(
                    key,
                    "must be at least 8MiB so a Datadog-sized request (5 MB of logs) fits",
                );
            }
        }

        // [delivery]
        let compression = match raw.delivery.compression.as_deref() {
            None | Some("gzip") => Compression::Gzip,
            Some("zstd") | Some("zstd1") => Compression::Zstd,
            Some(other) => {
                self.problem(
                    "delivery.compression",
                    format!("`{other}` is not supported; expected \"gzip\" or \"zstd\""),
                );
                Compression::Gzip
            }
        };
        let compression_level = match raw.delivery.compression_level {
            None => 1,
            Some(l) if (1..=9).contains(&l) => l as i32,
            Some(l) => {
                self.problem(
                    "delivery.compression_level",
                    format!("{l} is out of range; expected 1 to 9"),
                );
                1
            }
        };
        let delivery = DeliveryConfig {
            batch_max_age: self.duration(
                "delivery.batch_max_age",
                raw.delivery.batch_max_age,
                Duration::from_secs(1),
            ),
            compression,
            compression_level,
            max_concurrency: self.count(
                "delivery.max_concurrency",
                raw.delivery.max_concurrency,
                64,
                1,
            ),
            tenant_concurrency: self.count(
                "delivery.tenant_concurrency",
                raw.delivery.tenant_concurrency,
                4,
                1,
            ),
            max_inflight_bytes: self.min_size(
                "delivery.max_inflight_bytes",
                raw.delivery.max_inflight_bytes,
                64 << 20,
                MIN_INFLIGHT_BYTES,
            ),
            request_timeout: self.duration(
                "delivery.request_timeout",
                raw.delivery.request_timeout,
                Duration::from_secs(20),
            ),
            retry_initial: self.duration(
                "delivery.retry_initial",
                raw.delivery.retry_initial,
                Duration::from_secs(1),
            ),
            retry_max: self.duration(
                "delivery.retry_max",
                raw.delivery.retry_max,
                Duration::from_secs(64),
            ),
            drain_timeout: self.duration(
                "delivery.drain_timeout",
                raw.delivery.drain_timeout,
                Duration::from_secs(20),
            ),
            forbidden_retries: self.count(
                "delivery.forbidden_retries",
                raw.delivery.forbidden_retries,
                5,
                0,
            ) as u32,
        };
        if delivery.retry_initial > delivery.retry_max {
            self.problem(
                "delivery.retry_initial",
                "is larger than delivery.retry_max",
            );
        }

        // [limits]
        let limits = LimitsConfig {
            tenant_requests_per_second: self.rate(
                "limits.tenant_requests_per_second",
                raw.limits.tenant_requests_per_second,
            ),
            tenant_bytes_per_second: self.size(
                "limits.tenant_bytes_per_second",
                raw.limits.tenant_bytes_per_second,
                0,
            ),
            global_requests_per_second: self.rate(
                "limits.global_requests_per_second",
                raw.limits.global_requests_per_second,
            ),
            global_bytes_per_second: self.size(
                "limits.global_bytes_per_second",
                raw.limits.global_bytes_per_second,
                0,
            ),
        };

        // [proxy]
        let allowed_prefixes = raw
            .proxy
            .allowed_prefixes
            .unwrap_or_else(|| vec!["api/".to_string()]);
        for p in &allowed_prefixes {
            if p.starts_with('/') || p.contains("..") || p.contains("://") {
                self.problem(
                    "proxy.allowed_prefixes",
                    format!("`{p}` must be a relative path prefix such as \"api/\""),
                );
            }
        }
        let proxy = ProxyConfig {
            allowed_prefixes,
            token: self.secret("proxy.token", raw.proxy.token, raw.proxy.token_file, false),
            max_request_body: self.size(
                "proxy.max_request_body",
                raw.proxy.max_request_body,
                8 << 20,
            ),
            max_response_body: self.size(
                "proxy.max_response_body",
                raw.proxy.max_response_body,
                64 << 20,
            ),
            timeout: self.duration("proxy.timeout", raw.proxy.timeout, Duration::from_secs(30)),
            tenant_concurrency: self.count(
                "proxy.tenant_concurrency",
                raw.proxy.tenant_concurrency,
                8,
                1,
            ),
            tenant_requests_per_second: self.rate(
                "proxy.tenant_requests_per_second",
                raw.proxy.tenant_requests_per_second,
            ),
        };

        // [integration]
        let source = raw.integration.source.map(|s| s.trim().to_string());
        if let Some(Err(why)) = source.as_deref().map(crate::tags::check_source) {
            self.problem("integration.source", why);
        }
        let integration = IntegrationConfig {
            source,
            test_event_on_connect: self.flag(
                "integration.test_event_on_connect",
                raw.integration.test_event_on_connect,
                false,
            ),
        };
        let webhooks = self.webhooks(raw.webhooks);

        Some(Config {
            source: None,
            oauth: OAuthConfig {
                client: ClientCredentials {
                    client_id: client_id?,
                    client_secret: client_secret?,
                },
                test_client,
                redirect_uri: redirect_uri?,
                state_ttl,
                grant_check_interval,
                scopes,
            },
            server: ServerConfig {
                public_listen: public_listen?,
                api_listen: api_listen?,
                admin_token: admin_token?,
                max_body,
                max_decompressed_body,
                decode_memory,
                request_timeout,
                public_header_timeout,
            },
            storage: StorageConfig {
                data_dir: data_dir?,
                master_key: master_key?,
                database_url,
            },
            datadog: DatadogConfig {
                allowed_sites,
                ca_file,
                resolve,
            },
            log: LogConfig { level, format },
            queue,
            delivery,
            limits,
            proxy,
            integration,
            webhooks,
        })
    }

    /// `[webhooks]`: `None` when `url` is unset (then nothing else may be set).
    fn webhooks(&mut self, raw: raw::RawWebhooks) -> Option<WebhooksConfig> {
        let secret = self.secret(
            "webhooks.secret",
            raw.secret,
            raw.secret_file,
            raw.url.is_some(),
        );
        let Some(text) = raw.url else {
            if secret.is_some() {
                self.problem(
                    "webhooks.secret",
                    "is set but webhooks.url is not; set the URL that receives lifecycle events, or remove the secret",
                );
            }
            return None;
        };
        if let Some(s) = &secret
            && s.expose().len() < 16
        {
            self.problem(
                "webhooks.secret",
                "is shorter than 16 characters; use a long random secret (e.g. head -c32 /dev/urandom | base64)",
            );
        }
        let url = match Url::parse(text.trim()) {
            Ok(u) if u.host().is_some() && u.fragment().is_none() => u,
            _ => {
                self.problem(
                    "webhooks.url",
                    "is not an absolute http(s) URL without a fragment, e.g. \"https://partner.example/hooks/ddrelay\"",
                );
                return None;
            }
        };
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                self.problem(
                    "webhooks.url",
                    format!(
                        "`{}` is plain http on a host that is not loopback; use https (http:// is accepted only for localhost, 127.0.0.0/8 and ::1)",
                        redacted_url(&url)
                    ),
                );
                return None;
            }
            other => {
                self.problem(
                    "webhooks.url",
                    format!("scheme `{other}` is not http or https"),
                );
                return None;
            }
        }
        Some(WebhooksConfig {
            url,
            secret: secret?,
        })
    }
}

/// Parses `1234`, `512KiB`, `5MB`, `8GiB` (binary and decimal suffixes).
pub fn parse_size(text: &str) -> Option<u64> {
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
        assert_eq!(c.delivery.max_inflight_bytes, 64 << 20);
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
