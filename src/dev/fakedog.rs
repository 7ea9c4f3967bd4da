//! fakedog: an emulator of everything ddrelay depends on at Datadog, for
//! partners rehearsing the OAuth flow offline (`ddrelay fakedog`) and as the
//! test double of every other test in the project.
//!
//! What it owns:
//! - **Every site at once, over TLS.** One HTTPS listener serves every host
//!   of every Datadog site ([`crate::site::SITES`]: web hosts, custom
//!   subdomains through wildcard SANs, `api.*`, `http-intake.logs.*`,
//!   `trace.agent.*`, `event-management-intake.*`) and
//!   picks the behaviour from the `Host` header (`fakedog/server.rs`). A CA and a
//!   server certificate are made at start; the CA goes to a file for a relay
//!   (`[datadog] ca_file` + `[datadog.resolve]`, see [`FakeDog::resolve_map`])
//!   or curl.
//! - **The OAuth server** (`oauth.rs`, its pages in `pages.rs`), **API
//!   keys** (`keys.rs`), the **intakes** (`intake.rs`; v2 events' rules in
//!   `events_v2.rs`, the trace intake's in `traces.rs`) and a few **public
//!   API reads** with OAuth
//!   scopes (`api.rs`: monitors, users; `incidents.rs`: create, get and
//!   list incidents), each enforcing Datadog's documented
//!   rules and answering Datadog's status codes and bodies (docs/datadog.md
//!   "OAuth 2.0 for partner integrations", docs/datadog.md "API keys",
//!   docs/datadog.md "Intakes" and the sections after it).
//! - **A plain-HTTP control listener** (`control.rs`): inspection, faults
//!   (`faults.rs`) and
//!   fakeintake-compatible routes (docs/datadog.md "fakeintake: Datadog's
//!   test intake").
//! - **This test-support API** ([`FakeDog`]) and a scripted [`Browser`].
//!
//! What it must not know: anything about the relay (tenants, queues,
//! configuration files). It speaks only Datadog's protocol. Hostnames come
//! from `site.rs`, limits and windows from [`Endpoint`], codecs from
//! `codec.rs`.
//!
//! Where docs/datadog.md marks a Datadog behaviour UNCONFIRMED, fakedog takes
//! the reading it names and says so in the module that implements it.
//! Requests that break a documented rule are also recorded as [`Violation`]s:
//! the relay's tests assert there are none.

mod api;
mod browser;
mod control;
mod events_v2;
mod faults;
mod incidents;
mod intake;
mod keys;
mod oauth;
mod pages;
mod server;
mod state;
mod traces;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::dev::tls::{Authority, TlsError};
use crate::secret::{Secret, random_token};
use crate::shutdown::Shutdown;
use crate::site::{Endpoint, SITES, Site};

pub use api::{ApiRequest, MONITORS_READ, MONITORS_WRITE, USER_ACCESS_READ};
pub use browser::{Browser, BrowserError, Page};
pub use faults::Fault;
pub use incidents::{INCIDENT_READ, INCIDENT_WRITE};
pub use oauth::challenge_of;
pub use state::{API_KEYS_WRITE, ClientInfo, DEFAULT_TOKEN_TTL, StateError};
pub use state::{Org, Violation, ViolationKind};

use state::{Client, Shared, State};

/// The demo client `ddrelay fakedog` registers when given no `--client`.
pub(crate) const DEMO_CLIENT_ID: &str = "demo-client";
/// The demo client's secret (a local emulator's, printed on start).
pub(crate) const DEMO_CLIENT_SECRET: &str = "demo-secret";
/// The demo client's redirect URIs: a relay on its default public port.
pub(crate) const DEMO_REDIRECT_URIS: [&str; 2] = [
    "http://localhost:8080/oauth/callback",
    "http://127.0.0.1:8080/oauth/callback",
];

/// Why fakedog could not start or an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum FakeDogError {
    #[error("cannot listen on {what} {addr}: {error}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot write the CA certificate to {path}: {error}")]
    CaFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot build an HTTP client trusting fakedog: {0}")]
    HttpClient(String),
}

/// An OAuth client as registered in Datadog's Developer Platform.
/// Also the JSON body of `POST /fakedog/clients`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    pub(crate) id: String,
    pub(crate) secret: String,
    /// Display name; the API key is named `<name> OAuth Client API Key`.
    #[serde(default)]
    pub(crate) name: String,
    pub(crate) redirect_uris: Vec<String>,
    /// Default: `["api_keys_write"]`.
    #[serde(default = "default_scopes")]
    pub(crate) scopes: Vec<String>,
    /// Published clients may be authorized by any org; unpublished (test)
    /// clients only by users of `owner`.
    #[serde(default = "yes")]
    pub(crate) published: bool,
    /// The owner org (id or name); required when unpublished.
    #[serde(default)]
    pub(crate) owner: Option<String>,
}

fn default_scopes() -> Vec<String> {
    vec![API_KEYS_WRITE.to_string()]
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for ClientSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSpec")
            .field("id", &self.id)
            .field("secret", &crate::secret::REDACTED)
            .field("name", &self.name)
            .field("redirect_uris", &self.redirect_uris)
            .field("scopes", &self.scopes)
            .field("published", &self.published)
            .field("owner", &self.owner)
            .finish()
    }
}

impl ClientSpec {
    /// A published client with one redirect URI and the `api_keys_write` scope.
    pub fn new(
        id: impl Into<String>,
        secret: impl Into<String>,
        redirect_uri: impl Into<String>,
    ) -> ClientSpec {
        let id = id.into();
        ClientSpec {
            name: id.clone(),
            id,
            secret: secret.into(),
            redirect_uris: vec![redirect_uri.into()],
            scopes: default_scopes(),
            published: true,
            owner: None,
        }
    }

    /// Sets the display name.
    pub fn named(mut self, name: impl Into<String>) -> ClientSpec {
        self.name = name.into();
        self
    }

    /// Registers one more redirect URI.
    pub(crate) fn redirect_uri(mut self, uri: impl Into<String>) -> ClientSpec {
        self.redirect_uris.push(uri.into());
        self
    }

    /// Replaces the scopes.
    pub fn scopes(mut self, scopes: &[&str]) -> ClientSpec {
        self.scopes = scopes.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Makes this an unpublished (private, test) client of `owner_org`.
    pub fn unpublished(mut self, owner_org: impl Into<String>) -> ClientSpec {
        self.published = false;
        self.owner = Some(owner_org.into());
        self
    }

    /// The demo client of `ddrelay fakedog`.
    pub fn demo() -> ClientSpec {
        let mut c = ClientSpec::new(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_REDIRECT_URIS[0])
            .named("ddrelay demo");
        for uri in &DEMO_REDIRECT_URIS[1..] {
            c = c.redirect_uri(*uri);
        }
        c
    }

    /// Parses `--client id=..,secret=..,redirect=..[,redirect=..][,scopes=a+b]
    /// [,name=..][,test][,owner=ORG]`.
    pub(crate) fn parse_cli(spec: &str) -> Result<ClientSpec, String> {
        let mut c = ClientSpec {
            id: String::new(),
            secret: String::new(),
            name: String::new(),
            redirect_uris: Vec::new(),
            scopes: default_scopes(),
            published: true,
            owner: None,
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("id", v)) => c.id = v.to_string(),
                Some(("secret", v)) => c.secret = v.to_string(),
                Some(("name", v)) => c.name = v.to_string(),
                Some(("redirect" | "redirect_uri", v)) => c.redirect_uris.push(v.to_string()),
                Some(("scopes" | "scope", v)) => {
                    c.scopes = v
                        .split(['+', ' ', ';'])
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                Some(("owner", v)) => c.owner = Some(v.to_string()),
                None if part == "test" || part == "unpublished" => c.published = false,
                None if part == "published" => c.published = true,
                _ => {
                    return Err(format!(
                        "--client: unknown part `{part}` (expected id=, secret=, redirect=, scopes=, name=, owner=, test)"
                    ));
                }
            }
        }
        if c.id.is_empty() || c.secret.is_empty() || c.redirect_uris.is_empty() {
            return Err(format!(
                "--client `{spec}`: id=, secret= and redirect= are required"
            ));
        }
        if c.name.is_empty() {
            c.name = c.id.clone();
        }
        Ok(c)
    }

    pub(crate) fn into_client(self) -> Client {
        Client {
            name: if self.name.is_empty() {
                self.id.clone()
            } else {
                self.name
            },
            id: self.id,
            secret: Secret::new(self.secret),
            redirect_uris: self.redirect_uris,
            scopes: self.scopes,
            published: self.published,
            owner: self.owner,
        }
    }
}

/// An organization to create at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgSpec {
    pub(crate) name: String,
    pub(crate) site: &'static Site,
    /// The `dd_oid`; default: a random UUID.
    pub(crate) id: Option<String>,
}

impl OrgSpec {
    pub fn new(name: impl Into<String>, site: &'static Site) -> OrgSpec {
        OrgSpec {
            name: name.into(),
            site,
            id: None,
        }
    }

    /// Parses `--org name=..,site=datadoghq.eu[,id=..]` (site: domain or
    /// short name such as `EU1`).
    pub(crate) fn parse_cli(spec: &str) -> Result<OrgSpec, String> {
        let (mut name, mut site, mut id) = (None, None, None);
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("name", v)) => name = Some(v.to_string()),
                Some(("site", v)) => {
                    site = Some(
                        Site::by_name_or_domain(v)
                            .ok_or_else(|| format!("--org: unknown Datadog site `{v}`"))?,
                    )
                }
                Some(("id", v)) => id = Some(v.to_string()),
                _ => {
                    return Err(format!(
                        "--org: unknown part `{part}` (expected name=, site=, id=)"
                    ));
                }
            }
        }
        match (name, site) {
            (Some(name), Some(site)) => Ok(OrgSpec { name, site, id }),
            _ => Err(format!("--org `{spec}`: name= and site= are required")),
        }
    }

    /// One demo org per Datadog site, named `Demo <site>` (e.g. `Demo EU1`).
    pub(crate) fn one_per_site() -> Vec<OrgSpec> {
        SITES
            .iter()
            .map(|s| OrgSpec::new(format!("Demo {}", s.name), s))
            .collect()
    }
}

/// How to start fakedog.
#[derive(Debug, Clone)]
pub struct Options {
    /// The HTTPS listener for every Datadog host (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The plain-HTTP control listener (default `127.0.0.1:0`).
    pub control: SocketAddr,
    /// Where to write the CA certificate (PEM); default: a private
    /// temporary directory removed when fakedog is dropped.
    pub ca_out: Option<PathBuf>,
    /// Organizations, created before the clients (owners refer to them).
    pub orgs: Vec<OrgSpec>,
    pub clients: Vec<ClientSpec>,
    /// Skip the consent page (tests).
    pub auto_consent: bool,
    /// Validate and count only; keep no items or payloads (benchmarks).
    pub counting: bool,
    /// Access-token lifetime (Datadog: 1 hour).
    pub token_ttl: Duration,
}

impl Default for Options {
    fn default() -> Options {
        let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        Options {
            listen: loopback,
            control: loopback,
            ca_out: None,
            orgs: Vec::new(),
            clients: Vec::new(),
            auto_consent: false,
            counting: false,
            token_ttl: DEFAULT_TOKEN_TTL,
        }
    }
}

impl Options {
    /// The `ddrelay fakedog` defaults: one org per site and the demo client.
    pub fn demo() -> Options {
        Options {
            orgs: OrgSpec::one_per_site(),
            clients: vec![ClientSpec::demo()],
            ..Options::default()
        }
    }

    /// Applies `--client` and `--org` values; without any, the demo client
    /// and one org per site. A `test` client without `owner=` belongs to the
    /// first org.
    pub(crate) fn with_cli_specs(
        mut self,
        clients: &[String],
        orgs: &[String],
    ) -> Result<Options, String> {
        self.orgs = if orgs.is_empty() {
            OrgSpec::one_per_site()
        } else {
            orgs.iter()
                .map(|s| OrgSpec::parse_cli(s))
                .collect::<Result<_, _>>()?
        };
        self.clients = if clients.is_empty() {
            vec![ClientSpec::demo()]
        } else {
            clients
                .iter()
                .map(|s| ClientSpec::parse_cli(s))
                .collect::<Result<_, _>>()?
        };
        let first = self.orgs.first().map(|o| o.name.clone());
        for c in self
            .clients
            .iter_mut()
            .filter(|c| !c.published && c.owner.is_none())
        {
            c.owner = first.clone();
        }
        Ok(self)
    }
}

/// Every name the server certificate covers: each site's hosts, plus a
/// wildcard for custom subdomains (`bigcorp.datadoghq.com`).
fn server_names() -> Vec<String> {
    let mut names = Vec::new();
    for site in SITES.iter() {
        for h in site.all_hosts() {
            if !names.contains(&h) {
                names.push(h);
            }
        }
        let wildcard = format!("*.{}", site.domain);
        if !names.contains(&wildcard) {
            names.push(wildcard);
        }
    }
    names
}

/// A running fakedog. Dropping it stops it (in the background); call
/// `FakeDog::shutdown` to wait.
///
/// All inspection and control methods act on the state directly, with no
/// HTTP round trip; the control listener offers the same over JSON.
pub struct FakeDog {
    shared: Arc<Shared>,
    tls_addr: SocketAddr,
    control_addr: SocketAddr,
    ca_pem: String,
    ca_file: PathBuf,
    temp_dir: Option<PathBuf>,
    shutdown: Shutdown,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeDog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDog")
            .field("tls_addr", &self.tls_addr)
            .field("control_addr", &self.control_addr)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl FakeDog {
    /// Generates the CA, binds both listeners and starts serving.
    pub async fn start(options: Options) -> Result<FakeDog, FakeDogError> {
        let mut state = State::new(options.token_ttl, options.auto_consent);
        for o in &options.orgs {
            state.add_org(&o.name, o.site, o.id.clone())?;
        }
        for c in options.clients {
            state.add_client(c.into_client())?;
        }
        let authority = Authority::generate("fakedog local CA")?;
        let tls_config = authority.server_config(&server_names())?;
        let ca_pem = authority.ca_pem();
        let (ca_file, temp_dir) = write_ca(options.ca_out.as_deref(), &ca_pem)?;
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|error| FakeDogError::Bind { what, addr, error })
        };
        let tls_listener = bind("the HTTPS listener", options.listen).await?;
        let control_listener = bind("the control listener", options.control).await?;
        let local = |l: &TcpListener, what: &'static str, addr: SocketAddr| {
            l.local_addr()
                .map_err(|error| FakeDogError::Bind { what, addr, error })
        };
        let tls_addr = local(&tls_listener, "the HTTPS listener", options.listen)?;
        let control_addr = local(&control_listener, "the control listener", options.control)?;

        let shared = Arc::new(Shared::new(state, options.counting));
        let shutdown = Shutdown::new();
        let tls_task = {
            let s = shutdown.clone();
            tokio::spawn(crate::dev::tls::serve(
                tls_listener,
                tls_config,
                server::router(shared.clone()),
                async move { s.wait().await },
            ))
        };
        let control_task = {
            let s = shutdown.clone();
            let router = control::router(shared.clone());
            tokio::spawn(async move {
                let served = axum::serve(control_listener, router)
                    .with_graceful_shutdown(async move { s.wait().await })
                    .await;
                if let Err(e) = served {
                    tracing::warn!(error = %e, "fakedog control listener stopped");
                }
            })
        };
        tracing::info!(%tls_addr, %control_addr, ca_file = %ca_file.display(), counting = options.counting, "fakedog started");
        Ok(FakeDog {
            shared,
            tls_addr,
            control_addr,
            ca_pem,
            ca_file,
            temp_dir,
            shutdown,
            tasks: vec![tls_task, control_task],
        })
    }

    /// Stops both listeners and waits (at most a few seconds) for them.
    pub(crate) async fn shutdown(mut self) {
        self.shutdown.trigger();
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// The HTTPS listener's address (every Datadog host resolves here).
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr
    }

    /// The control listener's address.
    pub(crate) fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// `http://<control addr>`, the base of the control API.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control_addr)
    }

    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate file (for `[datadog] ca_file` or `curl --cacert`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Every hostname of every site mapped to [`FakeDog::tls_addr`], ready
    /// for the relay's `[datadog.resolve]`.
    pub fn resolve_map(&self) -> BTreeMap<String, SocketAddr> {
        let addr = display_addr(self.tls_addr);
        SITES
            .iter()
            .flat_map(|s| s.all_hosts())
            .map(|h| (h, addr))
            .collect()
    }

    /// A reqwest builder that trusts only fakedog's CA, resolves every host
    /// of [`FakeDog::resolve_map`] to fakedog and follows no redirects.
    pub fn client_builder(&self) -> Result<reqwest::ClientBuilder, FakeDogError> {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes())
            .map_err(|e| FakeDogError::HttpClient(e.to_string()))?;
        let mut b = reqwest::Client::builder()
            .tls_certs_only([ca])
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        for (host, addr) in self.resolve_map() {
            b = b.resolve(&host, addr);
        }
        Ok(b)
    }

    /// A scripted browser trusting fakedog, with extra `(host, addr)`
    /// mappings such as `("relay.test", relay_public_addr)`.
    pub fn browser(&self, extra_hosts: &[(&str, SocketAddr)]) -> Result<Browser, BrowserError> {
        Browser::new(&self.ca_pem, display_addr(self.tls_addr), extra_hosts)
    }

    /// Registers an OAuth client.
    pub fn register_client(&self, spec: ClientSpec) -> Result<(), FakeDogError> {
        Ok(self.shared.lock().add_client(spec.into_client())?)
    }

    /// Registered clients (without secrets).
    pub(crate) fn clients(&self) -> Vec<ClientInfo> {
        self.shared
            .lock()
            .clients
            .values()
            .map(|c| c.info())
            .collect()
    }

    /// Replaces a client's secret; the old one fails from now on.
    pub fn rotate_client_secret(&self, client_id: &str) -> Result<Secret, FakeDogError> {
        Ok(self.shared.lock().rotate_secret(client_id)?)
    }

    /// Creates an organization on `site` with a random `dd_oid`.
    pub fn create_org(&self, name: &str, site: &'static Site) -> Result<Org, FakeDogError> {
        Ok(self.shared.lock().add_org(name, site, None)?)
    }

    /// Every organization, in creation order.
    pub fn orgs(&self) -> Vec<Org> {
        self.shared.lock().orgs.clone()
    }

    /// An organization by `dd_oid` or name.
    pub fn org(&self, id_or_name: &str) -> Option<Org> {
        self.shared.lock().org(id_or_name).cloned()
    }

    /// Signs the browser user in as a member of `org` (id or name): the
    /// org authorize pages act for.
    pub fn login(&self, org: &str) -> Result<(), FakeDogError> {
        Ok(self.shared.lock().set_login(Some(org))?)
    }

    /// Signs out: authorize pages offer a choice of organization.
    pub fn logout(&self) {
        self.shared.lock().logged_in = None;
    }

    /// Skips the consent page when on.
    pub fn set_auto_consent(&self, on: bool) {
        self.shared.lock().auto_consent = on;
    }

    /// Lifetime of access tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.shared.lock().token_ttl = ttl;
    }

    /// Moves fakedog's clock forward (expiry of codes and tokens, fault
    /// windows, the intakes' timestamp windows).
    pub fn advance(&self, by: Duration) {
        self.shared.lock().advance(by);
    }

    /// fakedog's "now", in Unix seconds.
    pub fn now_unix(&self) -> i64 {
        self.shared.lock().now_unix()
    }

    /// Items of `endpoint` accepted for `org` (id or name). Empty in
    /// counting mode.
    pub fn received(&self, org: &str, endpoint: Endpoint) -> Vec<serde_json::Value> {
        self.shared.lock().received(org, endpoint)
    }

    /// How many items of `endpoint` were accepted for `org` (id or name):
    /// series objects, log entries, events or service checks.
    pub fn item_count(&self, org: &str, endpoint: Endpoint) -> u64 {
        self.shared.lock().item_count(org, endpoint)
    }

    /// How many items of `endpoint` were accepted at `host`.
    pub fn host_item_count(&self, host: &str, endpoint: Endpoint) -> u64 {
        self.shared
            .lock()
            .rec
            .host_counts
            .get(host)
            .map(|c| c[state::slot(endpoint)])
            .unwrap_or_default()
    }

    /// The time requests have spent in fakedog's hands, summed over
    /// requests (from each one's head to its answer): a client waiting on
    /// fakedog waits this long in all. Over an interval, divided by its
    /// length: how many requests fakedog held on average.
    pub fn answering(&self) -> Duration {
        Duration::from_nanos(
            self.shared
                .answering_ns
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// How many responses `host` gave with `status` (0: dropped connection).
    pub fn requests(&self, host: &str, status: u16) -> u64 {
        self.shared
            .lock()
            .rec
            .requests
            .get(host)
            .and_then(|m| m.get(&status))
            .copied()
            .unwrap_or_default()
    }

    /// Requests received on the public API routes (`/api/v1/monitor`,
    /// `/api/v2/users`, …) and on unknown paths, with their headers.
    pub fn api_requests(&self) -> Vec<ApiRequest> {
        self.shared.lock().rec.api_requests.clone()
    }

    /// The incidents of `org` (id or name), oldest first: each the `data`
    /// member of Datadog's answer (`id`, `type`, `attributes`).
    pub fn incidents(&self, org: &str) -> Vec<serde_json::Value> {
        self.shared.lock().incidents_of(org)
    }

    /// Every host that received a request (answered or not), sorted.
    pub fn hosts_seen(&self) -> Vec<String> {
        self.shared.lock().rec.requests.keys().cloned().collect()
    }

    /// How many API keys the marketplace endpoint created for `org`.
    pub fn keys_created(&self, org: &str) -> u64 {
        self.shared.lock().keys_created(org)
    }

    /// Every API key value issued for `org` (id or name), live or revoked:
    /// tests search the relay's output for them.
    pub fn keys_issued(&self, org: &str) -> Vec<String> {
        let state = self.shared.lock();
        let Some(id) = state.org(org).map(|o| o.id.clone()) else {
            return Vec::new();
        };
        state
            .keys
            .iter()
            .filter(|(_, k)| k.org == id)
            .map(|(value, _)| value.clone())
            .collect()
    }

    /// A live key for (org, client) made directly, as if created earlier
    /// (for tests that skip the OAuth flow); not counted in `keys_created`.
    pub fn issue_key(&self, org: &str, client_id: &str) -> Result<String, FakeDogError> {
        Ok(self.shared.lock().issue_key(org, client_id)?)
    }

    /// True when `key` is a live API key.
    pub fn key_is_live(&self, key: &str) -> bool {
        self.shared.lock().live_key(key).is_some()
    }

    /// How many `POST /oauth2/v1/token` calls arrived at `host`.
    pub fn token_calls(&self, host: &str) -> u64 {
        self.shared
            .lock()
            .rec
            .token_calls
            .get(host)
            .copied()
            .unwrap_or_default()
    }

    /// How many `POST /oauth2/v1/revoke` calls arrived at `host`.
    pub fn revoke_calls(&self, host: &str) -> u64 {
        self.shared
            .lock()
            .rec
            .revoke_calls
            .get(host)
            .copied()
            .unwrap_or_default()
    }

    /// Every rule violation seen so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.shared.lock().rec.violations.clone()
    }

    /// Adds a fault; returns its id.
    pub fn inject_fault(&self, fault: Fault) -> Result<u64, FakeDogError> {
        Ok(self.shared.lock().add_fault(fault)?)
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Deletes the org's live API key(s); returns how many.
    pub fn revoke_key(&self, org: &str) -> Result<usize, FakeDogError> {
        Ok(self.shared.lock().revoke_key(org)?)
    }

    /// Replaces the org's live key by one nobody holds (a new creation then
    /// answers 409).
    pub fn rotate_key(&self, org: &str) -> Result<(), FakeDogError> {
        Ok(self.shared.lock().rotate_key(org)?)
    }

    /// Revokes every grant of the org (the customer uninstalled): its
    /// refresh and access tokens stop working. Returns how many.
    pub fn revoke_grants(&self, org: &str) -> Result<usize, FakeDogError> {
        Ok(self.shared.lock().revoke_grants(org)?)
    }

    /// Counting mode is on.
    pub fn is_counting(&self) -> bool {
        self.shared.counting
    }

    /// The text `ddrelay fakedog` prints on start: addresses, the CA, a
    /// `[datadog]` snippet for a relay and curl examples.
    pub(crate) fn banner(&self) -> String {
        let st = self.shared.lock();
        let addr = display_addr(self.tls_addr);
        let ca = self.ca_file.display();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "fakedog: a local Datadog emulator (every site, OAuth, API keys, intakes)\n"
        );
        let _ = writeln!(out, "  HTTPS, every Datadog host: {}", self.tls_addr);
        let _ = writeln!(out, "  control (plain HTTP):      {}", self.control_url());
        let _ = writeln!(out, "  CA certificate:            {ca}");
        let _ = writeln!(
            out,
            "  mode: {}; consent: {}; access tokens live {}\n",
            if self.shared.counting {
                "counting"
            } else {
                "full"
            },
            if st.auto_consent { "automatic" } else { "page" },
            humantime::format_duration(st.token_ttl)
        );
        let _ = writeln!(out, "Organizations:");
        for o in &st.orgs {
            let _ = writeln!(
                out,
                "  {:<14} {:<20} dd_oid={}",
                o.name, o.site.domain, o.id
            );
        }
        let _ = writeln!(out, "\nOAuth clients:");
        for c in st.clients.values() {
            let _ = writeln!(
                out,
                "  {} ({}) secret={} scopes={}",
                c.id,
                if c.published {
                    "published".to_string()
                } else {
                    format!("unpublished, owner {}", c.owner.as_deref().unwrap_or("-"))
                },
                c.secret.expose(),
                c.scopes.join(" ")
            );
            for r in &c.redirect_uris {
                let _ = writeln!(out, "      redirect {r}");
            }
        }
        let _ = writeln!(out, "\nRelay configuration (paste into ddrelay.toml):\n");
        let _ = writeln!(out, "[datadog]\nca_file = {:?}\n", ca.to_string());
        let _ = writeln!(out, "[datadog.resolve]");
        for site in SITES.iter() {
            for h in [
                site.host(crate::site::HostKind::Api),
                site.host(crate::site::HostKind::Logs),
            ] {
                let _ = writeln!(out, "{h:?} = \"{addr}\"");
            }
        }
        let client = st
            .clients
            .values()
            .next()
            .map(|c| (c.id.clone(), c.redirect_uris[0].clone()));
        if let Some((id, redirect)) = client {
            let verifier = EXAMPLE_VERIFIER;
            let challenge = challenge_of(verifier);
            let mut authorize =
                url::Url::parse("https://app.datadoghq.eu/oauth2/v1/authorize").ok();
            if let Some(u) = authorize.as_mut() {
                u.query_pairs_mut()
                    .append_pair("client_id", &id)
                    .append_pair("redirect_uri", &redirect)
                    .append_pair("response_type", "code")
                    .append_pair("state", "xyz")
                    .append_pair("code_challenge", &challenge)
                    .append_pair("code_challenge_method", "S256");
            }
            let authorize = authorize.map(String::from).unwrap_or_default();
            let connect = format!("--connect-to ::{addr}");
            let _ = writeln!(out, "\nTry it (see docs/fakedog.md):\n");
            let _ = writeln!(
                out,
                "  # 1. authorize (or open the URL in a browser that trusts the CA)\n  \
curl -si --cacert {ca} {connect} '{authorize}'"
            );
            let _ = writeln!(
                out,
                "  # 2. exchange the code from the Location header (PKCE verifier {verifier})\n  \
curl -s --cacert {ca} {connect} https://api.datadoghq.eu/oauth2/v1/token \\\n    \
-d grant_type=authorization_code -d client_id={id} -d client_secret=... \\\n    \
--data-urlencode redirect_uri={redirect} -d code_verifier={verifier} -d code=CODE"
            );
            let _ = writeln!(
                out,
                "  # 3. create the API key, then send data with it\n  \
curl -s --cacert {ca} {connect} -X POST -H 'Authorization: Bearer ACCESS_TOKEN' \
https://api.datadoghq.eu/api/v2/api_keys/marketplace"
            );
            let _ = writeln!(
                out,
                "  # 4. inspect\n  curl -s {}/fakedog/summary",
                self.control_url()
            );
        }
        out
    }
}

/// The RFC 7636 Appendix B example verifier, used in printed examples.
pub(crate) const EXAMPLE_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

impl Drop for FakeDog {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A listening address clients can dial (an unspecified IP becomes loopback).
fn display_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

fn write_ca(out: Option<&Path>, pem: &str) -> Result<(PathBuf, Option<PathBuf>), FakeDogError> {
    let (path, temp) = match out {
        Some(p) => (p.to_path_buf(), None),
        None => {
            let dir = std::env::temp_dir().join(format!("fakedog-{}", random_token(12)));
            std::fs::create_dir_all(&dir).map_err(|error| FakeDogError::CaFile {
                path: dir.clone(),
                error,
            })?;
            (dir.join("fakedog-ca.pem"), Some(dir))
        }
    };
    std::fs::write(&path, pem).map_err(|error| FakeDogError::CaFile {
        path: path.clone(),
        error,
    })?;
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    Ok((path, temp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_specs() {
        let c = ClientSpec::parse_cli(
            "id=acme,secret=s3,redirect=https://r.example/cb,redirect=http://localhost/cb,scopes=api_keys_write+metrics_read,test",
        )
        .unwrap();
        assert_eq!(c.redirect_uris.len(), 2);
        assert_eq!(c.scopes, ["api_keys_write", "metrics_read"]);
        assert!(!c.published);
        assert_eq!(c.name, "acme");
        assert!(!format!("{c:?}").contains("s3"));
        assert!(ClientSpec::parse_cli("id=a,secret=b").is_err());
        assert!(ClientSpec::parse_cli("id=a,secret=b,redirect=x,bogus").is_err());

        let o = OrgSpec::parse_cli("name=Acme EU,site=datadoghq.eu").unwrap();
        assert_eq!((o.name.as_str(), o.site.name), ("Acme EU", "EU1"));
        assert_eq!(
            OrgSpec::parse_cli("name=x,site=AP1").unwrap().site.name,
            "AP1"
        );
        assert!(OrgSpec::parse_cli("name=x,site=example.com").is_err());
        assert!(OrgSpec::parse_cli("name=x").is_err());

        let opts = Options::default()
            .with_cli_specs(&["id=t,secret=s,redirect=http://x/cb,test".into()], &[])
            .unwrap();
        assert_eq!(opts.orgs.len(), SITES.len());
        assert_eq!(opts.clients[0].owner.as_deref(), Some("Demo US1"));
        let demo = Options::default().with_cli_specs(&[], &[]).unwrap();
        assert_eq!(demo.clients, vec![ClientSpec::demo()]);
    }

    #[test]
    fn certificate_names_cover_every_host() {
        let names = server_names();
        for site in SITES.iter() {
            for h in site.all_hosts() {
                let covered = names.contains(&h)
                    || names.iter().any(|n| {
                        n.strip_prefix("*.").is_some_and(|d| {
                            h.strip_suffix(d)
                                .and_then(|p| p.strip_suffix('.'))
                                .is_some_and(|p| !p.contains('.'))
                        })
                    });
                assert!(covered, "{h}");
            }
            assert!(names.contains(&format!("*.{}", site.domain)));
        }
    }
}
