//! The raw serde mirror of the TOML file: every field optional, unknown keys
//! rejected. `config.rs` turns it into the validated [`super::Config`], so
//! all missing or malformed values are reported together, each naming its key.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub oauth: RawOAuth,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub datadog: RawDatadog,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub queue: RawQueue,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub integration: RawIntegration,
    #[serde(default)]
    pub webhooks: RawWebhooks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIntegration {
    #[serde(default, deserialize_with = "string")]
    pub source: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub test_event_on_connect: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOAuth {
    #[serde(default, deserialize_with = "string")]
    pub client_id: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub client_secret: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub client_secret_file: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub redirect_uri: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub state_ttl: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub grant_check_interval: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub test_client: Option<RawClient>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    #[serde(default, deserialize_with = "string")]
    pub client_id: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub client_secret: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub client_secret_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    #[serde(default, deserialize_with = "string")]
    pub public_listen: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub api_listen: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub admin_token: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub admin_token_file: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub max_body: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub max_decompressed_body: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub decode_memory: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub request_timeout: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub public_header_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStorage {
    #[serde(default, deserialize_with = "string")]
    pub data_dir: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub master_key: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub master_key_file: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub database_url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub database_url_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatadog {
    #[serde(default)]
    pub allowed_sites: Option<Vec<String>>,
    #[serde(default, deserialize_with = "string")]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub resolve: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    #[serde(default, deserialize_with = "string")]
    pub level: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueue {
    #[serde(default, deserialize_with = "string")]
    pub max_bytes: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub tenant_max_bytes: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub held_max_bytes: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub segment_bytes: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub dead_letter_max_bytes: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub compression: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub preallocate: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDelivery {
    #[serde(default, deserialize_with = "string")]
    pub batch_max_age: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub compression: Option<String>,
    #[serde(default)]
    pub compression_level: Option<i64>,
    #[serde(default)]
    pub max_concurrency: Option<i64>,
    #[serde(default)]
    pub tenant_concurrency: Option<i64>,
    #[serde(default, deserialize_with = "string")]
    pub max_inflight_bytes: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub request_timeout: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub retry_initial: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub retry_max: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub drain_timeout: Option<String>,
    #[serde(default)]
    pub forbidden_retries: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    #[serde(default)]
    pub tenant_requests_per_second: Option<f64>,
    #[serde(default, deserialize_with = "string")]
    pub tenant_bytes_per_second: Option<String>,
    #[serde(default)]
    pub global_requests_per_second: Option<f64>,
    #[serde(default, deserialize_with = "string")]
    pub global_bytes_per_second: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxy {
    #[serde(default)]
    pub allowed_prefixes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "string")]
    pub token: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub token_file: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub max_request_body: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub max_response_body: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub timeout: Option<String>,
    #[serde(default)]
    pub tenant_concurrency: Option<i64>,
    #[serde(default)]
    pub tenant_requests_per_second: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhooks {
    #[serde(default, deserialize_with = "string")]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub secret: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub secret_file: Option<String>,
}

/// Accepts a string, or a number or bool written where a string is
/// expected (environment variables arrive untyped: `DDRELAY_OAUTH__CLIENT_ID=123`).
fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
    }
    d.deserialize_any(V)
}
