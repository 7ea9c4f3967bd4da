//! The one HTTP client for every call ddrelay makes to Datadog: OAuth token
//! exchange, refresh and revocation, API key creation and validation, intake
//! submissions and the pull-side proxy.
//!
//! - TLS only (rustls), redirects never followed (a redirect could carry a
//!   secret to another host), no proxy from the environment.
//! - `[datadog] ca_file` adds trusted roots; `[datadog.resolve]` pins a
//!   hostname to an address and port. The URL, the `Host` header and the TLS
//!   server name all stay the real Datadog hostname, so tests and private
//!   links exercise exactly the production code path.
//! - Every call names a [`Site`] and is refused before anything is sent when
//!   that site is not in `datadog.allowed_sites` as it stands now (a reload
//!   that narrows the list takes effect on the next call, for tokens, keys,
//!   intakes and the proxy alike: `Client::set_allowed_sites`); URLs come
//!   from `site.rs` only.
//!
//! Errors are typed so callers can act on them ([`TokenError`],
//! [`KeyError`], [`SendError`]); none carries a secret (request bodies are
//! never echoed, response excerpts are truncated).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::config::{ClientCredentials, DatadogConfig};
use crate::secret::Secret;
use crate::site::{AllowedSites, Encoding, Endpoint, HostKind, Site};

/// The `User-Agent` on every request.
pub(crate) const USER_AGENT: &str = concat!("ddrelay/", env!("CARGO_PKG_VERSION"));

/// Timeout for OAuth and key-management calls.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("datadog.ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The Datadog HTTP client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `datadog.allowed_sites`, swapped on reload; shared by the clones.
    allowed: Arc<ArcSwap<AllowedSites>>,
}

/// One request of the pull proxy (see [`Client::api_call`]).
#[derive(Debug)]
pub(crate) struct ApiCall<'a> {
    pub(crate) method: &'a reqwest::Method,
    pub(crate) url: &'a url::Url,
    pub(crate) headers: &'a reqwest::header::HeaderMap,
    /// Sent when given (methods with a body, or a body on any method).
    pub(crate) body: Option<&'a Bytes>,
    pub(crate) token: &'a Secret,
    pub(crate) timeout: Duration,
}

/// Why a proxied call got no answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum CallError {
    #[error("{0}")]
    NotAllowed(String),
    #[error("request timed out")]
    Timeout,
    #[error("{0}")]
    Transport(String),
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub expires_in: Option<u64>,
    pub(crate) scope: Option<String>,
}

#[derive(Deserialize)]
struct RawTokens {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize, Default)]
struct OAuthErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    errors: Option<Vec<serde_json::Value>>,
}

/// A token endpoint failure.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Datadog answered with an error (RFC 6749 §5.2 `error`, or a 401).
    #[error("Datadog refused the token request ({status}): {error}{}", description.as_deref().map(|d| format!(" - {d}")).unwrap_or_default())]
    Refused {
        status: u16,
        error: String,
        description: Option<String>,
    },
    /// Datadog could not be reached, or answered 5xx/429.
    #[error("token request failed: {0}")]
    Unavailable(String),
    /// An answer we cannot read.
    #[error("unexpected token response ({status}): {excerpt}")]
    Unexpected { status: u16, excerpt: String },
    /// The site is not in `datadog.allowed_sites`: nothing was sent.
    #[error("{0}")]
    NotAllowed(String),
}

impl TokenError {
    /// True when the grant itself is gone (refresh token revoked or invalid):
    /// the customer must authorize again.
    pub fn is_grant_revoked(&self) -> bool {
        match self {
            // A wrong client secret is our problem, not a revoked grant.
            TokenError::Refused { error, .. } if error == "invalid_client" => false,
            TokenError::Refused { status, error, .. } => {
                error == "invalid_grant" || *status == 401 || error == "unauthorized_client"
            }
            _ => false,
        }
    }

    /// True when our client credentials are wrong (secret rotated but not
    /// reloaded, wrong client id): an operator problem, not the customer's.
    pub fn is_client_error(&self) -> bool {
        matches!(self, TokenError::Refused { error, .. } if error == "invalid_client")
    }

    /// The metric label for this failure (`ddrelay_oauth_events_total`).
    pub(crate) fn label(&self) -> &'static str {
        match self {
            TokenError::Refused { error, .. } if error == "invalid_client" => "invalid_client",
            TokenError::Refused { error, .. } if error == "invalid_grant" => "invalid_grant",
            TokenError::Refused { .. } => "refused",
            TokenError::Unavailable(_) => "unavailable",
            TokenError::Unexpected { .. } => "unexpected",
            TokenError::NotAllowed(_) => "site_not_allowed",
        }
    }
}

/// A created API key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub key: Secret,
    pub(crate) id: Option<String>,
}

/// An API key creation failure.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// 409: the org already has this client's key, which we cannot read.
    #[error("the Datadog org already has an \"OAuth Client API Key\" for this integration (409)")]
    Exists,
    /// 401/403: the token is invalid or lacks `api_keys_write`.
    #[error(
        "Datadog refused to create an API key ({status}): the access token is invalid or lacks the api_keys_write scope"
    )]
    Forbidden { status: u16 },
    #[error("API key creation failed: {0}")]
    Unavailable(String),
    #[error("unexpected API key response ({status}): {excerpt}")]
    Unexpected { status: u16, excerpt: String },
    /// The site is not in `datadog.allowed_sites`: nothing was sent.
    #[error("{0}")]
    NotAllowed(String),
}

impl KeyError {
    /// The metric label for this failure (`ddrelay_oauth_events_total`).
    pub(crate) fn label(&self) -> &'static str {
        match self {
            KeyError::Exists => "exists",
            KeyError::Forbidden { .. } => "forbidden",
            KeyError::Unavailable(_) => "unavailable",
            KeyError::Unexpected { .. } => "unexpected",
            KeyError::NotAllowed(_) => "site_not_allowed",
        }
    }
}

/// What `GET /api/v1/validate` said about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validity {
    Valid,
    /// 401/403: the key is dead.
    Invalid,
    /// We could not tell (transport error, 5xx, 429): assume nothing.
    Unknown(String),
}

/// The outcome of one intake request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After` or `X-RateLimit-Reset`, whichever is given (seconds).
    pub(crate) retry_after: Option<Duration>,
    /// The start of the body, for logs (Datadog's error text).
    pub excerpt: String,
}

/// A transport-level failure sending to an intake.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("request timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("transport error: {0}")]
    Transport(String),
    /// The site is not in `datadog.allowed_sites`: nothing was sent.
    #[error("{0}")]
    NotAllowed(String),
}

impl Client {
    /// Builds the client from `[datadog]`.
    pub fn new(config: &DatadogConfig) -> Result<Client, BuildError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(30));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| BuildError::CaFile {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| BuildError::CaFile {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(BuildError::CaFile {
                    path: path.display().to_string(),
                    message: "no certificate found".into(),
                });
            }
            builder = builder.tls_certs_merge(certs);
        }
        for (host, addr) in &config.resolve {
            builder = builder.resolve(host, *addr);
        }
        let http = builder
            .build()
            .map_err(|e| BuildError::Client(e.to_string()))?;
        Ok(Client {
            http,
            allowed: Arc::new(ArcSwap::from_pointee(config.allowed_sites.clone())),
        })
    }

    /// Replaces the allow-list (on reload): every later call to a site no
    /// longer in it is refused before anything is sent.
    pub(crate) fn set_allowed_sites(&self, allowed: AllowedSites) {
        self.allowed.store(Arc::new(allowed));
    }

    /// Why a call to `site` may not be made, if it may not.
    fn refused(&self, site: &Site) -> Option<String> {
        (!self.allowed.load().allows(site)).then(|| {
            format!(
                "Datadog site {} is not in datadog.allowed_sites; nothing was sent",
                site.domain
            )
        })
    }

    /// A call to the tenant's API host with its access token (the pull
    /// proxy): `url` must be on `site`'s API host; the answer comes back
    /// unread, for streaming.
    pub(crate) async fn api_call(
        &self,
        site: &Site,
        call: ApiCall<'_>,
    ) -> Result<reqwest::Response, CallError> {
        if let Some(why) = self.refused(site) {
            return Err(CallError::NotAllowed(why));
        }
        if call.url.host_str() != Some(site.host(HostKind::Api).as_str()) {
            return Err(CallError::NotAllowed(format!(
                "{} is not the API host of {}",
                call.url.host_str().unwrap_or("-"),
                site.domain
            )));
        }
        let mut req = self
            .http
            .request(call.method.clone(), call.url.clone())
            .headers(call.headers.clone())
            .bearer_auth(call.token.expose())
            .timeout(call.timeout);
        if let Some(body) = call.body {
            req = req.body(body.clone());
        }
        req.send().await.map_err(|e| {
            if e.is_timeout() {
                CallError::Timeout
            } else {
                CallError::Transport(describe(&e))
            }
        })
    }

    /// `GET https://<host>/` on one of `site`'s hosts: the HTTP status, or
    /// why no answer came (any status proves DNS, TCP, TLS and HTTP work).
    pub(crate) async fn probe_host(&self, site: &Site, kind: HostKind) -> Result<u16, String> {
        if let Some(why) = self.refused(site) {
            return Err(why);
        }
        self.http
            .get(site.url(kind, "/"))
            .timeout(CONTROL_TIMEOUT)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| describe(&e))
    }

    /// Exchanges an authorization code (PKCE) at `https://api.<domain>/oauth2/v1/token`.
    pub async fn exchange_code(
        &self,
        site: &Site,
        client: &ClientCredentials,
        code: &str,
        verifier: &Secret,
        redirect_uri: &str,
    ) -> Result<Tokens, TokenError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.client_secret.expose()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier.expose()),
            ("code", code),
        ];
        self.token_call(site, &form).await
    }

    /// Refreshes with `grant_type=refresh_token`.
    pub async fn refresh(
        &self,
        site: &Site,
        client: &ClientCredentials,
        refresh_token: &Secret,
    ) -> Result<Tokens, TokenError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.client_secret.expose()),
            ("refresh_token", refresh_token.expose()),
        ];
        self.token_call(site, &form).await
    }

    async fn token_call(&self, site: &Site, form: &[(&str, &str)]) -> Result<Tokens, TokenError> {
        if let Some(why) = self.refused(site) {
            return Err(TokenError::NotAllowed(why));
        }
        let resp = self
            .http
            .post(site.url(HostKind::Api, "/oauth2/v1/token"))
            .form(form)
            .timeout(CONTROL_TIMEOUT)
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(describe(&e)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| TokenError::Unavailable(describe(&e)))?;
        if status.is_success() {
            let raw: RawTokens =
                serde_json::from_slice(&body).map_err(|_| TokenError::Unexpected {
                    status: status.as_u16(),
                    excerpt: "token response is not the expected JSON".into(),
                })?;
            return Ok(Tokens {
                access_token: Secret::new(raw.access_token),
                refresh_token: raw.refresh_token.filter(|r| !r.is_empty()).map(Secret::new),
                expires_in: raw.expires_in,
                scope: raw.scope,
            });
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(TokenError::Unavailable(format!(
                "Datadog answered {status}"
            )));
        }
        let parsed: OAuthErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        let error = parsed
            .error
            .or_else(|| {
                parsed.errors.and_then(|e| {
                    e.first().map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    })
                })
            })
            .unwrap_or_else(|| {
                if status == StatusCode::UNAUTHORIZED {
                    "unauthorized".into()
                } else {
                    "invalid_request".into()
                }
            });
        Err(TokenError::Refused {
            status: status.as_u16(),
            error: clip(&error),
            description: parsed.error_description.map(|d| clip(&d)),
        })
    }

    /// Revokes a token (RFC 7009). Datadog answers 200 even for unknown tokens.
    pub async fn revoke(
        &self,
        site: &Site,
        client: &ClientCredentials,
        token: &Secret,
        hint: &str,
    ) -> Result<(), TokenError> {
        let form = [
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.client_secret.expose()),
            ("token", token.expose()),
            ("token_type_hint", hint),
        ];
        if let Some(why) = self.refused(site) {
            return Err(TokenError::NotAllowed(why));
        }
        let resp = self
            .http
            .post(site.url(HostKind::Api, "/oauth2/v1/revoke"))
            .form(&form)
            .timeout(CONTROL_TIMEOUT)
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(describe(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(TokenError::Unavailable(format!(
                "Datadog answered {status}"
            )));
        }
        let body = resp.bytes().await.unwrap_or_default();
        let parsed: OAuthErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        Err(TokenError::Refused {
            status: status.as_u16(),
            error: clip(&parsed.error.unwrap_or_else(|| "invalid_request".into())),
            description: parsed.error_description.map(|d| clip(&d)),
        })
    }

    /// Creates the org's marketplace API key with the access token.
    pub async fn create_api_key(
        &self,
        site: &Site,
        access_token: &Secret,
    ) -> Result<ApiKey, KeyError> {
        if let Some(why) = self.refused(site) {
            return Err(KeyError::NotAllowed(why));
        }
        let resp = self
            .http
            .post(site.url(HostKind::Api, "/api/v2/api_keys/marketplace"))
            .bearer_auth(access_token.expose())
            .timeout(CONTROL_TIMEOUT)
            .send()
            .await
            .map_err(|e| KeyError::Unavailable(describe(&e)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| KeyError::Unavailable(describe(&e)))?;
        match status.as_u16() {
            // The status is UNCONFIRMED in Datadog's docs (201 by analogy with
            // POST /api/v2/api_keys); accept any 2xx that carries a key.
            200..=299 => {
                #[derive(Deserialize)]
                struct Body {
                    data: Data,
                }
                #[derive(Deserialize)]
                struct Data {
                    #[serde(default)]
                    id: Option<String>,
                    attributes: Attributes,
                }
                #[derive(Deserialize)]
                struct Attributes {
                    key: String,
                }
                let b: Body = serde_json::from_slice(&body).map_err(|_| KeyError::Unexpected {
                    status: status.as_u16(),
                    excerpt: "API key response is not the expected JSON:API body".into(),
                })?;
                if b.data.attributes.key.is_empty() {
                    return Err(KeyError::Unexpected {
                        status: status.as_u16(),
                        excerpt: "empty key".into(),
                    });
                }
                Ok(ApiKey {
                    key: Secret::new(b.data.attributes.key),
                    id: b.data.id,
                })
            }
            409 => Err(KeyError::Exists),
            401 | 403 => Err(KeyError::Forbidden {
                status: status.as_u16(),
            }),
            429 | 500..=599 => Err(KeyError::Unavailable(format!("Datadog answered {status}"))),
            s => Err(KeyError::Unexpected {
                status: s,
                excerpt: excerpt(&body),
            }),
        }
    }

    /// `GET /api/v1/validate` with the API key.
    pub async fn validate_key(&self, site: &Site, api_key: &Secret) -> Validity {
        if let Some(why) = self.refused(site) {
            return Validity::Unknown(why);
        }
        let resp = self
            .http
            .get(site.url(HostKind::Api, "/api/v1/validate"))
            .header("DD-API-KEY", api_key.expose())
            .timeout(CONTROL_TIMEOUT)
            .send()
            .await;
        match resp {
            Err(e) => Validity::Unknown(describe(&e)),
            Ok(r) => match r.status().as_u16() {
                200 => {
                    let body = r.bytes().await.unwrap_or_default();
                    let valid = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("valid").and_then(|v| v.as_bool()))
                        .unwrap_or(true);
                    if valid {
                        Validity::Valid
                    } else {
                        Validity::Invalid
                    }
                }
                401 | 403 => Validity::Invalid,
                s => Validity::Unknown(format!("Datadog answered {s}")),
            },
        }
    }

    /// Sends one encoded intake payload with the tenant's API key.
    pub async fn send(
        &self,
        site: &Site,
        endpoint: Endpoint,
        api_key: &Secret,
        encoding: Encoding,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, SendError> {
        if let Some(why) = self.refused(site) {
            return Err(SendError::NotAllowed(why));
        }
        let mut req = self
            .http
            .post(site.url(endpoint.host_kind(), endpoint.path()))
            .header("DD-API-KEY", api_key.expose())
            .header(reqwest::header::CONTENT_TYPE, endpoint.content_type())
            .timeout(timeout)
            .body(body);
        if let Some(token) = encoding.header_token(endpoint) {
            req = req.header(reqwest::header::CONTENT_ENCODING, token);
        }
        let resp = req.send().await.map_err(|e| classify(&e))?;
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let body = resp.bytes().await.unwrap_or_default();
        Ok(Answer {
            status,
            retry_after,
            excerpt: excerpt(&body),
        })
    }
}

/// Reads `Retry-After` (seconds) or `X-RateLimit-Reset` (seconds until reset).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    for name in ["retry-after", "x-ratelimit-reset"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok())
            && let Ok(secs) = v.trim().parse::<f64>()
            && secs.is_finite()
            && secs >= 0.0
        {
            return Some(Duration::from_secs_f64(secs.min(3600.0)));
        }
    }
    None
}

fn classify(e: &reqwest::Error) -> SendError {
    if e.is_timeout() {
        SendError::Timeout
    } else if e.is_connect() {
        SendError::Connect(describe(e))
    } else {
        SendError::Transport(describe(e))
    }
}

/// A reqwest error as text, with its source chain (never contains a body).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    clip(&out)
}

fn clip(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn excerpt(body: &[u8]) -> String {
    clip(String::from_utf8_lossy(&body[..body.len().min(400)]).as_ref())
}
