//! The raw serde mirror of the TOML file: every field optional, unknown keys
//! rejected. `config.rs` turns it into the validated [`super::Config`], so
//! all missing or malformed values are reported together, each naming its key.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) oauth: RawOAuth,
    #[serde(default)]
    pub(crate) server: RawServer,
    #[serde(default)]
    pub(crate) storage: RawStorage,
    #[serde(default)]
    pub(crate) datadog: RawDatadog,
    #[serde(default)]
    pub(crate) log: RawLog,
    #[serde(default)]
    pub(crate) queue: RawQueue,
    #[serde(default)]
    pub(crate) delivery: RawDelivery,
    #[serde(default)]
    pub(crate) limits: RawLimits,
    #[serde(default)]
    pub(crate) proxy: RawProxy,
    #[serde(default)]
    pub(crate) integration: RawIntegration,
    #[serde(default)]
    pub(crate) webhooks: RawWebhooks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIntegration {
    #[serde(default, deserialize_with = "string")]
    pub(crate) source: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) test_event_on_connect: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOAuth {
    #[serde(default, deserialize_with = "string")]
    pub(crate) client_id: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) client_secret: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) client_secret_file: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) redirect_uri: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) state_ttl: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) grant_check_interval: Option<String>,
    #[serde(default)]
    pub(crate) scopes: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) test_client: Option<RawClient>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    #[serde(default, deserialize_with = "string")]
    pub(crate) client_id: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) client_secret: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) client_secret_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    #[serde(default, deserialize_with = "string")]
    pub(crate) public_listen: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) api_listen: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) admin_token: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) admin_token_file: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) max_body: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) max_decompressed_body: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) decode_memory: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) request_timeout: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) public_header_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStorage {
    #[serde(default, deserialize_with = "string")]
    pub(crate) data_dir: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) master_key: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) master_key_file: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) database_url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) database_url_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatadog {
    #[serde(default)]
    pub(crate) allowed_sites: Option<Vec<String>>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) ca_file: Option<String>,
    #[serde(default)]
    pub(crate) resolve: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    #[serde(default, deserialize_with = "string")]
    pub(crate) level: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueue {
    #[serde(default, deserialize_with = "string")]
    pub(crate) max_bytes: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) tenant_max_bytes: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) held_max_bytes: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) segment_bytes: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) dead_letter_max_bytes: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) compression: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) preallocate: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDelivery {
    #[serde(default, deserialize_with = "string")]
    pub(crate) batch_max_age: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) stats_max_age: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) compression: Option<String>,
    #[serde(default)]
    pub(crate) compression_level: Option<i64>,
    #[serde(default)]
    pub(crate) max_concurrency: Option<i64>,
    #[serde(default)]
    pub(crate) tenant_concurrency: Option<i64>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) max_inflight_bytes: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) request_timeout: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) retry_initial: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) retry_max: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) drain_timeout: Option<String>,
    #[serde(default)]
    pub(crate) forbidden_retries: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    #[serde(default)]
    pub(crate) tenant_requests_per_second: Option<f64>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) tenant_bytes_per_second: Option<String>,
    #[serde(default)]
    pub(crate) global_requests_per_second: Option<f64>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) global_bytes_per_second: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxy {
    #[serde(default)]
    pub(crate) allowed_prefixes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) token: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) token_file: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) max_request_body: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) max_response_body: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) timeout: Option<String>,
    #[serde(default)]
    pub(crate) tenant_concurrency: Option<i64>,
    #[serde(default)]
    pub(crate) tenant_requests_per_second: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhooks {
    #[serde(default, deserialize_with = "string")]
    pub(crate) url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) secret: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(crate) secret_file: Option<String>,
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
