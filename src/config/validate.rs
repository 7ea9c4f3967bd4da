//! Validation: a [`RawConfig`] becomes a [`Config`], one function per
//! section ([`Validator`]), every problem collected (where it was set, the
//! key, what was expected) rather than only the first one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use url::Url;

use super::raw::{self, RawConfig};
use super::{
    ClientCredentials, Compression, Config, DatadogConfig, DeliveryConfig, ENV_PREFIX,
    IntegrationConfig, LimitsConfig, LogConfig, LogFormat, OAuthConfig, Problem, ProxyConfig,
    QueueCompression, QueueConfig, ServerConfig, StorageConfig, WebhooksConfig, is_loopback,
    parse_size, redacted_url,
};
use crate::secret::{MasterKey, Secret};
use crate::site::AllowedSites;

/// Smallest queue sizes: one Datadog-sized request must fit a record.
const MIN_QUEUE_BYTES: u64 = 8 << 20;
/// Smallest in-flight budget: one take of the largest payload (5 MiB).
const MIN_INFLIGHT_BYTES: u64 = 8 << 20;

/// Collects problems while turning a [`RawConfig`] into a [`Config`].
pub(super) struct Validator<'a> {
    pub(super) figment: &'a Figment,
    pub(super) file: &'a str,
    pub(super) problems: Vec<Problem>,
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

    pub(super) fn config(&mut self, raw: RawConfig) -> Option<Config> {
        // Every section is checked before any is given up on, so that one
        // run reports every problem, in the order of the file.
        let oauth = self.oauth(raw.oauth);
        let server = self.server(raw.server);
        let storage = self.storage(raw.storage);
        let datadog = self.datadog(raw.datadog);
        let log = self.log(raw.log);
        let queue = self.queue(raw.queue);
        let delivery = self.delivery(raw.delivery);
        let limits = self.limits(raw.limits);
        let proxy = self.proxy(raw.proxy);
        let integration = self.integration(raw.integration);
        let webhooks = self.webhooks(raw.webhooks);
        Some(Config {
            source: None,
            oauth: oauth?,
            server: server?,
            storage: storage?,
            datadog,
            log,
            queue,
            delivery,
            limits,
            proxy,
            integration,
            webhooks,
        })
    }

    /// `[oauth]`.
    fn oauth(&mut self, raw: raw::RawOAuth) -> Option<OAuthConfig> {
        let published = raw::RawClient {
            client_id: raw.client_id,
            client_secret: raw.client_secret,
            client_secret_file: raw.client_secret_file,
        };
        let client = self.client(
            "oauth",
            published,
            "the OAuth client id from Datadog's Developer Platform",
        );
        let redirect_uri = self.redirect_uri(raw.redirect_uri);
        let state_ttl = self.duration("oauth.state_ttl", raw.state_ttl, Duration::from_secs(600));
        if state_ttl < Duration::from_secs(30) || state_ttl > Duration::from_secs(24 * 3600) {
            self.problem("oauth.state_ttl", "must be between 30s and 24h");
        }
        let grant_check_interval = self.duration(
            "oauth.grant_check_interval",
            raw.grant_check_interval,
            Duration::from_secs(3600),
        );
        if grant_check_interval < Duration::from_secs(5)
            || grant_check_interval > Duration::from_secs(24 * 3600)
        {
            self.problem("oauth.grant_check_interval", "must be between 5s and 24h");
        }
        let test_client = raw
            .test_client
            .and_then(|t| self.client("oauth.test_client", t, "the test client's id"));
        let scopes = self.scopes(raw.scopes.unwrap_or_default());
        Some(OAuthConfig {
            client: client?,
            test_client,
            redirect_uri: redirect_uri?,
            state_ttl,
            grant_check_interval,
            scopes,
        })
    }

    /// `oauth.redirect_uri`: required, an absolute http(s) URL.
    fn redirect_uri(&mut self, value: Option<String>) -> Option<Url> {
        self.required(
            "oauth.redirect_uri",
            value,
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
        })
    }

    /// The OAuth client of `section` (`oauth`, `oauth.test_client`): its
    /// `client_id` (`what` it is, said when it is missing) and its secret,
    /// both required.
    fn client(
        &mut self,
        section: &str,
        raw: raw::RawClient,
        what: &str,
    ) -> Option<ClientCredentials> {
        let id = self.required(&format!("{section}.client_id"), raw.client_id, what);
        let secret = self.secret(
            &format!("{section}.client_secret"),
            raw.client_secret,
            raw.client_secret_file,
            true,
        );
        Some(ClientCredentials {
            client_id: id?,
            client_secret: secret?,
        })
    }

    /// `oauth.scopes`: scope names.
    fn scopes(&mut self, scopes: Vec<String>) -> Vec<String> {
        for s in &scopes {
            if s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            {
                self.problem("oauth.scopes", format!("`{s}` is not a scope name"));
            }
        }
        scopes
    }

    /// `[server]`.
    fn server(&mut self, raw: raw::RawServer) -> Option<ServerConfig> {
        let public_listen = self.addr("server.public_listen", raw.public_listen, "0.0.0.0:8080");
        let api_listen = self.addr("server.api_listen", raw.api_listen, "127.0.0.1:8126");
        let admin_token = self.secret(
            "server.admin_token",
            raw.admin_token,
            raw.admin_token_file,
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
        let max_body = self.size("server.max_body", raw.max_body, 16 << 20);
        let max_decompressed_body = self.size(
            "server.max_decompressed_body",
            raw.max_decompressed_body,
            64 << 20,
        );
        let decode_memory = self.size("server.decode_memory", raw.decode_memory, 256 << 20);
        if max_decompressed_body < 5_242_880 {
            self.problem(
                "server.max_decompressed_body",
                "must be at least 5 MiB so Datadog-sized requests are accepted",
            );
        }
        let request_timeout = self.duration(
            "server.request_timeout",
            raw.request_timeout,
            Duration::from_secs(30),
        );
        let public_header_timeout = self.public_header_timeout(raw.public_header_timeout);
        Some(ServerConfig {
            public_listen: public_listen?,
            api_listen: api_listen?,
            admin_token: admin_token?,
            max_body,
            max_decompressed_body,
            decode_memory,
            request_timeout,
            public_header_timeout,
        })
    }

    /// `server.public_header_timeout`: longer than 0s.
    fn public_header_timeout(&mut self, value: Option<String>) -> Duration {
        let timeout = self.duration(
            "server.public_header_timeout",
            value,
            Duration::from_secs(10),
        );
        if timeout.is_zero() {
            self.problem(
                "server.public_header_timeout",
                "must be longer than 0s (it cuts off clients that send headers slowly)",
            );
        }
        timeout
    }

    /// `[storage]`.
    fn storage(&mut self, raw: raw::RawStorage) -> Option<StorageConfig> {
        let data_dir = self
            .required(
                "storage.data_dir",
                raw.data_dir,
                "a directory for the store and the queue",
            )
            .map(PathBuf::from);
        let master_key = self
            .secret(
                "storage.master_key",
                raw.master_key,
                raw.master_key_file,
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
            raw.database_url,
            raw.database_url_file,
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
        Some(StorageConfig {
            data_dir: data_dir?,
            master_key: master_key?,
            database_url,
        })
    }

    /// `[datadog]`.
    fn datadog(&mut self, raw: raw::RawDatadog) -> DatadogConfig {
        let allowed_sites = match raw.allowed_sites {
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
        let ca_file = raw.ca_file.map(PathBuf::from);
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
        let resolve = self.resolve(raw.resolve.unwrap_or_default());
        DatadogConfig {
            allowed_sites,
            ca_file,
            resolve,
        }
    }

    /// `[datadog.resolve]`: hostname → ip:port.
    fn resolve(&mut self, raw: BTreeMap<String, String>) -> BTreeMap<String, SocketAddr> {
        let mut resolve = BTreeMap::new();
        for (host, addr) in raw {
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
        resolve
    }

    /// `[log]`.
    fn log(&mut self, raw: raw::RawLog) -> LogConfig {
        let level = raw.level.unwrap_or_else(|| "info".to_string());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.problem("log.level", format!("`{level}` is not a level or filter (expected e.g. \"info\", \"debug\", \"ddrelay=debug,info\")"));
        }
        let format = match raw.format.as_deref() {
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
        LogConfig { level, format }
    }

    /// `[queue]`.
    fn queue(&mut self, raw: raw::RawQueue) -> QueueConfig {
        let queue = QueueConfig {
            max_bytes: self.size("queue.max_bytes", raw.max_bytes, 8 << 30),
            tenant_max_bytes: self.size("queue.tenant_max_bytes", raw.tenant_max_bytes, 512 << 20),
            held_max_bytes: 0,
            segment_bytes: self.size("queue.segment_bytes", raw.segment_bytes, 64 << 20),
            dead_letter_max_bytes: self.size(
                "queue.dead_letter_max_bytes",
                raw.dead_letter_max_bytes,
                16 << 20,
            ),
            compression: match raw.compression.as_deref() {
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
            preallocate: self.flag("queue.preallocate", raw.preallocate, true),
        };
        let mut queue = queue;
        queue.held_max_bytes = self.size(
            "queue.held_max_bytes",
            raw.held_max_bytes,
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
        queue
    }

    /// `[delivery]`.
    fn delivery(&mut self, raw: raw::RawDelivery) -> DeliveryConfig {
        let (compression, compression_level) =
            self.compression(raw.compression.as_deref(), raw.compression_level);
        let batch_max_age = self.duration(
            "delivery.batch_max_age",
            raw.batch_max_age,
            Duration::from_secs(1),
        );
        let delivery = DeliveryConfig {
            batch_max_age,
            // Unset: the same as the other kinds. 10 s, the trace agent's
            // flush period (docs/datadog.md "Stats the relay computes (as the
            // trace agent does)"), sends fewer payloads for quiet tenants;
            // not the default, for what it cost in the bench (BENCHMARKS.md
            // "Change 22: trace stats on their own batch age, not by default
            // (2026-12-07)").
            stats_max_age: self.duration(
                "delivery.stats_max_age",
                raw.stats_max_age,
                batch_max_age,
            ),
            compression,
            compression_level,
            max_concurrency: self.count("delivery.max_concurrency", raw.max_concurrency, 64, 1),
            tenant_concurrency: self.count(
                "delivery.tenant_concurrency",
                raw.tenant_concurrency,
                4,
                1,
            ),
            max_inflight_bytes: self.min_size(
                "delivery.max_inflight_bytes",
                raw.max_inflight_bytes,
                32 << 20,
                MIN_INFLIGHT_BYTES,
            ),
            request_timeout: self.duration(
                "delivery.request_timeout",
                raw.request_timeout,
                Duration::from_secs(20),
            ),
            retry_initial: self.duration(
                "delivery.retry_initial",
                raw.retry_initial,
                Duration::from_secs(1),
            ),
            retry_max: self.duration("delivery.retry_max", raw.retry_max, Duration::from_secs(64)),
            drain_timeout: self.duration(
                "delivery.drain_timeout",
                raw.drain_timeout,
                Duration::from_secs(20),
            ),
            forbidden_retries: self.count("delivery.forbidden_retries", raw.forbidden_retries, 5, 0)
                as u32,
        };
        if delivery.retry_initial > delivery.retry_max {
            self.problem(
                "delivery.retry_initial",
                "is larger than delivery.retry_max",
            );
        }
        delivery
    }

    /// `delivery.compression` and `delivery.compression_level`.
    fn compression(&mut self, name: Option<&str>, level: Option<i64>) -> (Compression, i32) {
        let compression = match name {
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
        let level = match level {
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
        (compression, level)
    }

    /// `[limits]`.
    fn limits(&mut self, raw: raw::RawLimits) -> LimitsConfig {
        LimitsConfig {
            tenant_requests_per_second: self.rate(
                "limits.tenant_requests_per_second",
                raw.tenant_requests_per_second,
            ),
            tenant_bytes_per_second: self.size(
                "limits.tenant_bytes_per_second",
                raw.tenant_bytes_per_second,
                0,
            ),
            global_requests_per_second: self.rate(
                "limits.global_requests_per_second",
                raw.global_requests_per_second,
            ),
            global_bytes_per_second: self.size(
                "limits.global_bytes_per_second",
                raw.global_bytes_per_second,
                0,
            ),
        }
    }

    /// `[proxy]`.
    fn proxy(&mut self, raw: raw::RawProxy) -> ProxyConfig {
        let allowed_prefixes = raw
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
        ProxyConfig {
            allowed_prefixes,
            token: self.secret("proxy.token", raw.token, raw.token_file, false),
            max_request_body: self.size("proxy.max_request_body", raw.max_request_body, 8 << 20),
            max_response_body: self.size(
                "proxy.max_response_body",
                raw.max_response_body,
                64 << 20,
            ),
            timeout: self.duration("proxy.timeout", raw.timeout, Duration::from_secs(30)),
            tenant_concurrency: self.count(
                "proxy.tenant_concurrency",
                raw.tenant_concurrency,
                8,
                1,
            ),
            tenant_requests_per_second: self.rate(
                "proxy.tenant_requests_per_second",
                raw.tenant_requests_per_second,
            ),
        }
    }

    /// `[integration]`.
    fn integration(&mut self, raw: raw::RawIntegration) -> IntegrationConfig {
        let source = raw.source.map(|s| s.trim().to_string());
        if let Some(Err(why)) = source.as_deref().map(crate::tags::check_source) {
            self.problem("integration.source", why);
        }
        IntegrationConfig {
            source,
            test_event_on_connect: self.flag(
                "integration.test_event_on_connect",
                raw.test_event_on_connect,
                false,
            ),
        }
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
