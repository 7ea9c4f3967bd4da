//! A relay wired to fakedog on loopback: the real `App`, configured
//! through a real TOML file, trusting fakedog's CA and pinning every Datadog
//! hostname to fakedog with `[datadog.resolve]`. `ddrelay demo`, the
//! benchmarks and the integration tests all start the product this way, so
//! none of them needs a Datadog account and all of them run the production
//! code paths (TLS, real hostnames, the OAuth round trip through a browser).
//!
//! The relay's `redirect_uri` is `http://relay.test/oauth/callback`; the
//! scripted browser resolves `relay.test` to the relay's public listener.
//!
//! `walk_consent` is the other way round: fakedog's browser for a relay
//! someone configured for fakedog (`ddrelay tenants connect --fakedog`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::{App, Reloader, Shared};
use crate::codec;
use crate::config::Config;
use crate::dev::fakedog::{Browser, ClientSpec, FakeDog, Page};
use crate::ops::{Landing, loopback};
use crate::site::{Encoding, Endpoint};

/// The OAuth client the sandbox relay uses (registered at fakedog).
pub const CLIENT_ID: &str = "ddrelay-sandbox-client";
/// Its secret (fakedog's, not a real one).
pub const CLIENT_SECRET: &str = "ddrelay-sandbox-client-secret";
/// The relay's redirect URI host, resolved by the scripted browser.
pub const RELAY_HOST: &str = "relay.test";
/// The sandbox relay's admin token.
pub const ADMIN_TOKEN: &str = "ddrelay-sandbox-admin-token";

/// `ddrelay tenants connect --fakedog`'s walk ([`crate::ops::ConsentWalk`]):
/// a browser for fakedog as the relay's config reaches it (trusting
/// `[datadog] ca_file`, sending Datadog's hosts where `[datadog.resolve]`
/// pins them, and the callback's host to the relay's public listener)
/// clicks Authorize, in the organization named `org` if given.
pub(crate) fn walk_consent<'a>(
    config: &'a Config,
    authorize: &'a str,
    org: Option<&'a str>,
) -> BoxFuture<'a, Result<Landing, String>> {
    Box::pin(async move {
        let browser = relay_browser(config)?;
        let page = match org {
            Some(name) => browser.authorize_in(authorize, name).await,
            None => browser.authorize(authorize).await,
        }
        .map_err(|e| e.to_string())?;
        Ok(Landing {
            status: page.status,
            url: page.url,
            body: page.body,
        })
    })
}

fn relay_browser(config: &Config) -> Result<Browser, String> {
    let not_fakedog = "--fakedog needs a relay configured for fakedog: [datadog] ca_file and \
                       [datadog.resolve] (docs/fakedog.md \"Point a relay at it\")";
    let ca_file = config.datadog.ca_file.as_ref().ok_or(not_fakedog)?;
    let ca = std::fs::read_to_string(ca_file)
        .map_err(|e| format!("datadog.ca_file {}: {e}", ca_file.display()))?;
    let dog = config
        .datadog
        .resolve
        .iter()
        .find(|(host, _)| crate::site::Site::classify_host(host).is_some())
        .map(|(_, addr)| *addr)
        .ok_or(not_fakedog)?;
    let host = config.oauth.redirect_uri.host_str().unwrap_or("localhost");
    let relay = loopback(config.server.public_listen);
    Browser::new(&ca, dog, &[(host, relay)]).map_err(|e| e.to_string())
}

/// The redirect URI registered for the sandbox client.
pub(crate) fn redirect_uri() -> String {
    format!("http://{RELAY_HOST}/oauth/callback")
}

/// Registers the sandbox client at `dog` with fakedog's default scopes
/// (`api_keys_write`), unless it is registered already.
pub fn register_client(dog: &FakeDog) -> anyhow::Result<()> {
    if dog.clients().iter().any(|c| c.id == CLIENT_ID) {
        return Ok(());
    }
    dog.register_client(
        ClientSpec::new(CLIENT_ID, CLIENT_SECRET, redirect_uri()).named("ddrelay sandbox"),
    )?;
    Ok(())
}

/// Registers the sandbox client with exactly `scopes` (include
/// `api_keys_write`, or connecting fails at key creation). Call it before
/// [`Relay::start`], which then keeps this registration; registering again
/// with other scopes is an error.
pub fn register_client_with_scopes(dog: &FakeDog, scopes: &[&str]) -> anyhow::Result<()> {
    if let Some(c) = dog.clients().into_iter().find(|c| c.id == CLIENT_ID) {
        anyhow::ensure!(
            c.scopes
                .iter()
                .map(String::as_str)
                .eq(scopes.iter().copied()),
            "the sandbox client is already registered with scopes {:?}",
            c.scopes
        );
        return Ok(());
    }
    dog.register_client(
        ClientSpec::new(CLIENT_ID, CLIENT_SECRET, redirect_uri())
            .named("ddrelay sandbox")
            .scopes(scopes),
    )?;
    Ok(())
}

/// The relay's configuration file for `dog`, with `extra` TOML appended
/// (extra sections, e.g. `[delivery]`; keys of `[oauth]`, `[server]`,
/// `[storage]` and `[datadog]` are set here).
pub fn config_text(dog: &FakeDog, data_dir: &Path, master_key: &str, extra: &str) -> String {
    config_text_with_store(dog, data_dir, master_key, None, extra)
}

/// As [`config_text`], with `storage.database_url` set when `database_url`
/// is given: replicas sharing one PostgreSQL store (same master key, each
/// its own `data_dir`).
pub fn config_text_with_store(
    dog: &FakeDog,
    data_dir: &Path,
    master_key: &str,
    database_url: Option<&str>,
    extra: &str,
) -> String {
    let database_url = database_url
        .map(|u| format!("database_url = {}\n", toml_string(u)))
        .unwrap_or_default();
    let mut resolve = String::new();
    for (host, addr) in dog.resolve_map() {
        resolve.push_str(&format!("\"{host}\" = \"{addr}\"\n"));
    }
    format!(
        r#"# written by ddrelay's sandbox: a relay wired to fakedog
[oauth]
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
redirect_uri = "{redirect}"

[server]
public_listen = "127.0.0.1:0"
api_listen = "127.0.0.1:0"
admin_token = "{ADMIN_TOKEN}"

[storage]
data_dir = "{data_dir}"
master_key = "{master_key}"
{database_url}
[datadog]
ca_file = "{ca}"

[datadog.resolve]
{resolve}
{extra}
"#,
        redirect = redirect_uri(),
        data_dir = data_dir.display(),
        ca = dog.ca_file().display(),
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A running relay.
pub struct Relay {
    pub api: SocketAddr,
    pub public: SocketAddr,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    shared: Arc<Shared>,
    reloader: Reloader,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("api", &self.api)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Reads the master key kept beside a sandbox data dir, or makes one.
fn master_key_for(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("master.key");
    if let Ok(k) = std::fs::read_to_string(&path) {
        return Ok(k.trim().to_string());
    }
    let key = crate::secret::MasterKey::generate().to_base64();
    std::fs::create_dir_all(dir)?;
    std::fs::write(&path, key.expose())?;
    Ok(key.expose().to_string())
}

impl Relay {
    /// Starts a relay in `dir` (its config file, master key and data dir
    /// live there; starting again in the same dir finds its queue and store).
    pub async fn start(dog: &FakeDog, dir: &Path, extra_toml: &str) -> anyhow::Result<Relay> {
        Relay::start_with_env(dog, dir, extra_toml, &[]).await
    }

    /// As [`Relay::start`], with `DDRELAY_*` overrides (e.g. a `[server]`
    /// key, whose table the sandbox writes itself).
    pub async fn start_with_env(
        dog: &FakeDog,
        dir: &Path,
        extra_toml: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Relay> {
        let key = master_key_for(dir)?;
        Relay::launch(dog, dir, &key, None, extra_toml, env).await
    }

    /// Starts a relay in `dir` on the store `database_url` (PostgreSQL) when
    /// given, with `master_key`: several such relays on one database are
    /// replicas (each keeps its queue under its own `dir`).
    pub async fn start_with_store(
        dog: &FakeDog,
        dir: &Path,
        master_key: &str,
        database_url: Option<&str>,
        extra_toml: &str,
    ) -> anyhow::Result<Relay> {
        Relay::launch(dog, dir, master_key, database_url, extra_toml, &[]).await
    }

    async fn launch(
        dog: &FakeDog,
        dir: &Path,
        master_key: &str,
        database_url: Option<&str>,
        extra_toml: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Relay> {
        register_client(dog)?;
        let data_dir = dir.join("data");
        let key = master_key;
        let config_path = dir.join("ddrelay.toml");
        std::fs::write(
            &config_path,
            config_text_with_store(dog, &data_dir, key, database_url, extra_toml),
        )?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config =
            Config::load_with_env(&config_path, &env).map_err(|e| anyhow::anyhow!("{e}"))?;
        let app = App::build(config).await.context("building the relay")?;
        let (api, public) = (app.api_addr(), app.public_addr());
        let shared = app.shared();
        let reloader = app.reloader();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        Ok(Relay {
            api,
            public,
            config_path,
            data_dir,
            shared,
            reloader,
            stop: Some(tx),
            task: Some(task),
            http: reqwest::Client::builder().no_proxy().build()?,
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn reloader(&self) -> &Reloader {
        &self.reloader
    }

    /// `http://<api_listen><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// Calls the admin API; returns status and JSON body.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        status_and_json(req).await
    }

    /// Asks for an authorize URL for `tenant` (optionally at `site`).
    pub async fn authorize_url(&self, tenant: &str, site: Option<&str>) -> anyhow::Result<String> {
        let body = site.map(|s| serde_json::json!({ "site": s }));
        let (status, v) = self
            .admin(
                reqwest::Method::POST,
                &format!("/v1/tenants/{tenant}/connect"),
                body,
            )
            .await?;
        anyhow::ensure!(status == 200, "connect answered {status}: {v}");
        v["authorize_url"]
            .as_str()
            .map(str::to_string)
            .context("no authorize_url")
    }

    /// Connects `tenant` to fakedog org `org` the way a customer does: the
    /// partner asks for an authorize URL, the browser follows it, clicks
    /// Authorize on fakedog's consent page and lands on the relay's callback.
    pub async fn connect(
        &self,
        dog: &FakeDog,
        tenant: &str,
        site: Option<&str>,
        org: &str,
    ) -> anyhow::Result<Page> {
        dog.login(org)?;
        let url = self.authorize_url(tenant, site).await?;
        let browser = dog.browser(&[(RELAY_HOST, self.public)])?;
        Ok(browser.authorize(&url).await?)
    }

    /// Sends an ingest request for `tenant`, compressed with `encoding`.
    pub async fn send(
        &self,
        tenant: &str,
        endpoint: Endpoint,
        body: &[u8],
        encoding: Encoding,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut req = self
            .http
            .post(self.url(endpoint.path()))
            .header("DD-API-KEY", tenant)
            .header("Content-Type", "application/json")
            .body(codec::compress(encoding, 1, body));
        if let Some(token) = match encoding {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Deflate => Some("deflate"),
            Encoding::Zstd => Some("zstd"),
        } {
            req = req.header("Content-Encoding", token);
        }
        status_and_json(req).await
    }

    /// Stops the relay (drains) and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await?,
            None => Ok(()),
        }
    }
}

/// Sends `req`: its status and its body as JSON (a body that is not JSON as
/// a JSON string).
async fn status_and_json(req: reqwest::RequestBuilder) -> anyhow::Result<(u16, serde_json::Value)> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    ))
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
