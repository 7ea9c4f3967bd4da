//! fakedog's whole state: one plain struct behind one mutex.
//!
//! Registered OAuth clients, organizations, pending consents, codes, grants,
//! tokens and API keys (what Datadog would keep), plus what fakedog records
//! for tests (accepted items, raw payloads, request and token-call counters,
//! violations) and the faults waiting to fire.
//!
//! Every handler locks the mutex once or twice, for a short synchronous
//! critical section, and never across an `.await`. The behaviour (OAuth,
//! keys, intakes) lives in the sibling modules as `impl State` blocks; this
//! module owns the data, the clock and the operations the control listener
//! and the test-support API share.
//!
//! The clock is the wall clock plus an offset that only tests and the
//! control listener move ([`State::advance`]), so expiry (codes, access
//! tokens, fault windows) is tested without waiting.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;

use crate::secret::{Secret, random_token};
use crate::site::{Endpoint, Site};

use super::api::{ApiRequest, Monitor, User};
use super::faults::{ActiveFault, Fault};
use super::incidents::Incident;
use super::server::Target;

/// Datadog's access-token lifetime: "a time-to-live (TTL) of 1 hour"
/// (docs/datadog.md "Token").
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Authorization codes: Datadog does not document their lifetime; RFC 6749
/// §4.1.2 recommends at most 10 minutes (docs/datadog.md "Token").
pub(crate) const CODE_TTL: Duration = Duration::from_secs(600);
/// How long a rendered consent page can still be submitted.
pub(crate) const CONSENT_TTL: Duration = Duration::from_secs(600);
/// The scope that allows `POST /api/v2/api_keys/marketplace`
/// (docs/datadog.md "The marketplace API key").
pub const API_KEYS_WRITE: &str = "api_keys_write";

/// Why a state operation was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("no organization `{0}` (give its dd_oid or its name)")]
    UnknownOrg(String),
    #[error("an organization with id `{0}` already exists")]
    DuplicateOrg(String),
    #[error("no OAuth client `{0}`")]
    UnknownClient(String),
    #[error("an OAuth client `{0}` is already registered")]
    DuplicateClient(String),
    #[error("invalid OAuth client `{id}`: {reason}")]
    InvalidClient { id: String, reason: String },
    #[error("organization `{0}` has no live API key")]
    NoKey(String),
    #[error("invalid fault: {0}")]
    InvalidFault(String),
}

/// A Datadog organization (a customer account) on one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Org {
    /// The org UUID, sent as `dd_oid` on the OAuth redirect.
    pub id: String,
    /// The display name, sent as `dd_org_name`.
    pub(crate) name: String,
    /// The org's home site.
    #[serde(serialize_with = "ser_site")]
    pub site: &'static Site,
}

fn ser_site<S: serde::Serializer>(site: &&'static Site, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(site.domain)
}

/// What a registered OAuth client looks like to the control listener (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientInfo {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) scopes: Vec<String>,
    pub(crate) published: bool,
    pub(crate) owner: Option<String>,
}

/// A registered OAuth client (Datadog's Developer Platform configuration).
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) secret: Secret,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) scopes: Vec<String>,
    /// Published clients may be authorized by any org; unpublished ones only
    /// by their owner org ("Before publishing, only the partner's own org can
    /// authorize", docs/datadog.md "Authorize").
    pub(crate) published: bool,
    pub(crate) owner: Option<String>,
}

impl Client {
    pub(crate) fn info(&self) -> ClientInfo {
        ClientInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            redirect_uris: self.redirect_uris.clone(),
            scopes: self.scopes.clone(),
            published: self.published,
            owner: self.owner.clone(),
        }
    }
}

/// A validated authorization request (the parameters of `GET /oauth2/v1/authorize`).
#[derive(Debug, Clone)]
pub(crate) struct AuthRequest {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) state: Option<String>,
    pub(crate) challenge: String,
    pub(crate) scopes: Vec<String>,
    /// The web host the request arrived at (the `site` sent back).
    pub(crate) host: String,
    pub(crate) site: &'static Site,
    /// The original query, replayed when the region picker sends the
    /// browser to the org's own site.
    pub(crate) query: String,
}

/// An authorization request shown on a consent page, waiting for a decision.
#[derive(Debug, Clone)]
pub(crate) struct Consent {
    pub(crate) req: AuthRequest,
    /// The org, when it was already known; otherwise the user picks one of
    /// `candidates`.
    pub(crate) org: Option<String>,
    pub(crate) candidates: Vec<String>,
    pub(crate) expires: SystemTime,
}

/// An authorization code.
#[derive(Debug, Clone)]
pub(crate) struct Code {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) challenge: String,
    pub(crate) org: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) expires: SystemTime,
    pub(crate) used: bool,
    /// The grant issued from this code, revoked if the code is replayed.
    pub(crate) grant: Option<u64>,
}

/// One authorization of one client by one org: the family of tokens that
/// a code exchange starts and refreshes continue.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) client_id: String,
    pub(crate) org: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) revoked: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub(crate) grant: u64,
    pub(crate) expires: SystemTime,
    pub(crate) revoked: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct RefreshToken {
    pub(crate) grant: u64,
    /// Already exchanged for a newer refresh token; presenting it again is
    /// reuse, which revokes the grant.
    pub(crate) rotated: bool,
}

/// An API key, live or dead.
#[derive(Debug, Clone)]
pub(crate) struct ApiKey {
    pub(crate) id: String,
    pub(crate) org: String,
    pub(crate) client_id: String,
    pub(crate) live: bool,
}

/// What kind of rule the client broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// Over a documented size, count or length limit.
    OverLimit,
    /// A key, token or code presented at another site's host.
    WrongSite,
    /// A body Datadog would refuse with 400 (bad JSON, missing fields).
    Malformed,
    /// An item outside the endpoint's timestamp window (Datadog drops it).
    TimestampWindow,
    /// A `Content-Encoding` Datadog does not document for the endpoint.
    Encoding,
}

/// A request that broke one of Datadog's documented rules. The relay's own
/// tests assert there are none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub host: String,
    pub path: String,
    /// The org whose key or token was used, when known.
    pub org: Option<String>,
    pub(crate) detail: String,
}

/// One accepted intake request as received (for the fakeintake view).
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    pub(crate) timestamp: SystemTime,
    pub(crate) api_key: String,
    pub(crate) data: Bytes,
    pub(crate) encoding: String,
    pub(crate) content_type: String,
}

/// Per-endpoint counters, indexed by [`slot`].
pub(crate) type Counts = [u64; SLOTS];

/// How many kinds fakedog counts: one slot per [`Endpoint::EVERY`].
pub(crate) const SLOTS: usize = Endpoint::EVERY.len();

/// The index of an endpoint in [`Counts`].
pub(crate) fn slot(e: Endpoint) -> usize {
    match e {
        Endpoint::SeriesV2 => 0,
        Endpoint::SeriesV1 => 1,
        Endpoint::Logs => 2,
        Endpoint::Events => 3,
        Endpoint::CheckRun => 4,
        Endpoint::Traces => 5,
        Endpoint::TraceStats => 6,
        Endpoint::ClientStats => 7,
        Endpoint::Distribution => 8,
        Endpoint::EventsV2 => 9,
    }
}

/// What fakedog recorded; cleared by a reset.
#[derive(Debug, Default)]
pub(crate) struct Recording {
    /// Accepted items per org (full mode only).
    pub(crate) items: BTreeMap<String, [Vec<serde_json::Value>; SLOTS]>,
    /// Accepted item counts per org.
    pub(crate) counts: BTreeMap<String, Counts>,
    /// Accepted item counts per host.
    pub(crate) host_counts: BTreeMap<String, Counts>,
    /// Raw accepted payloads per path (full mode only).
    pub(crate) payloads: BTreeMap<&'static str, Vec<Payload>>,
    /// Responses per host and status (0: connection dropped).
    pub(crate) requests: BTreeMap<String, BTreeMap<u16, u64>>,
    pub(crate) token_calls: BTreeMap<String, u64>,
    pub(crate) revoke_calls: BTreeMap<String, u64>,
    pub(crate) keys_created: BTreeMap<String, u64>,
    pub(crate) violations: Vec<Violation>,
    /// Requests to the public API routes and to unknown paths (`api.rs`).
    pub(crate) api_requests: Vec<ApiRequest>,
}

/// The emulated Datadog, and what it saw.
#[derive(Debug)]
pub(crate) struct State {
    offset: Duration,
    pub(crate) token_ttl: Duration,
    pub(crate) auto_consent: bool,
    pub(crate) logged_in: Option<String>,
    pub(crate) clients: BTreeMap<String, Client>,
    /// In creation order: the first org of a site is its default.
    pub(crate) orgs: Vec<Org>,
    pub(crate) consents: HashMap<String, Consent>,
    pub(crate) codes: HashMap<String, Code>,
    pub(crate) grants: HashMap<u64, Grant>,
    pub(crate) access: HashMap<String, AccessToken>,
    pub(crate) refresh: HashMap<String, RefreshToken>,
    /// Every key ever created, by value.
    pub(crate) keys: HashMap<String, ApiKey>,
    /// Every org's monitors and users (`api.rs`), seeded at org creation.
    pub(crate) monitors: Vec<Monitor>,
    pub(crate) users: Vec<User>,
    /// Every org's incidents (`incidents.rs`), none seeded.
    pub(crate) incidents: Vec<Incident>,
    pub(crate) faults: Vec<ActiveFault>,
    next_id: u64,
    pub(crate) rec: Recording,
}

/// The state and what is read or counted on every request without the lock.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Counting mode: validate and count, keep no items or payloads.
    pub(crate) counting: bool,
    /// Nanoseconds requests spent in fakedog's hands, summed over requests
    /// (from their head to their answer): how long a client waited on it.
    pub(crate) answering_ns: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub(crate) fn new(state: State, counting: bool) -> Shared {
        Shared {
            state: Mutex::new(state),
            counting,
            answering_ns: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }
}

/// A fresh UUID-like identifier (org ids, key ids, user ids).
pub(crate) fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl State {
    pub(crate) fn new(token_ttl: Duration, auto_consent: bool) -> State {
        State {
            offset: Duration::ZERO,
            token_ttl,
            auto_consent,
            logged_in: None,
            clients: BTreeMap::new(),
            orgs: Vec::new(),
            consents: HashMap::new(),
            codes: HashMap::new(),
            grants: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            keys: HashMap::new(),
            monitors: Vec::new(),
            users: Vec::new(),
            incidents: Vec::new(),
            faults: Vec::new(),
            next_id: 0,
            rec: Recording::default(),
        }
    }

    /// fakedog's "now": the wall clock moved forward by [`State::advance`].
    pub(crate) fn now(&self) -> SystemTime {
        SystemTime::now() + self.offset
    }

    /// Seconds since the Unix epoch, on fakedog's clock.
    pub(crate) fn now_unix(&self) -> i64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default()
    }

    /// Moves fakedog's clock forward.
    pub(crate) fn advance(&mut self, by: Duration) {
        self.offset += by;
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// An org by id, or else by name.
    pub(crate) fn org(&self, id_or_name: &str) -> Option<&Org> {
        self.orgs
            .iter()
            .find(|o| o.id == id_or_name)
            .or_else(|| self.orgs.iter().find(|o| o.name == id_or_name))
    }

    fn org_id(&self, id_or_name: &str) -> Result<String, StateError> {
        self.org(id_or_name)
            .map(|o| o.id.clone())
            .ok_or_else(|| StateError::UnknownOrg(id_or_name.to_string()))
    }

    pub(crate) fn add_org(
        &mut self,
        name: &str,
        site: &'static Site,
        id: Option<String>,
    ) -> Result<Org, StateError> {
        let id = id.unwrap_or_else(uuid);
        if self.orgs.iter().any(|o| o.id == id) {
            return Err(StateError::DuplicateOrg(id));
        }
        let org = Org {
            id,
            name: name.to_string(),
            site,
        };
        self.orgs.push(org.clone());
        self.seed_api_data(&org);
        Ok(org)
    }

    pub(crate) fn add_client(&mut self, mut client: Client) -> Result<(), StateError> {
        let invalid = |reason: &str| StateError::InvalidClient {
            id: client.id.clone(),
            reason: reason.to_string(),
        };
        if client.id.is_empty() {
            return Err(invalid("the client id is empty"));
        }
        if client.secret.is_empty() {
            return Err(invalid("the client secret is empty"));
        }
        if client.redirect_uris.is_empty() {
            return Err(invalid("at least one redirect URI is needed"));
        }
        for uri in &client.redirect_uris {
            match url::Url::parse(uri) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.fragment().is_none() => {}
                _ => {
                    return Err(invalid(&format!(
                        "redirect URI `{uri}` is not an absolute http(s) URL without fragment"
                    )));
                }
            }
        }
        if self.clients.contains_key(&client.id) {
            return Err(StateError::DuplicateClient(client.id));
        }
        client.owner = match (&client.owner, client.published) {
            (Some(owner), _) => Some(self.org_id(owner)?),
            (None, true) => None,
            (None, false) => {
                return Err(invalid(
                    "an unpublished (test) client needs an owner organization",
                ));
            }
        };
        self.clients.insert(client.id.clone(), client);
        Ok(())
    }

    /// Replaces a client's secret; the old one stops working at once
    /// ("Only one secret can be active at a time", docs/datadog.md "The
    /// client secret").
    pub(crate) fn rotate_secret(&mut self, client_id: &str) -> Result<Secret, StateError> {
        let client = self
            .clients
            .get_mut(client_id)
            .ok_or_else(|| StateError::UnknownClient(client_id.to_string()))?;
        let secret = Secret::new(random_token(24));
        client.secret = secret.clone();
        Ok(secret)
    }

    /// Issues a live key for (org, client) directly, as if created earlier.
    pub(crate) fn issue_key(&mut self, org: &str, client_id: &str) -> Result<String, StateError> {
        let org = self.org_id(org)?;
        let key = new_key_value();
        self.keys.insert(
            key.clone(),
            ApiKey {
                id: uuid(),
                org,
                client_id: client_id.to_string(),
                live: true,
            },
        );
        Ok(key)
    }

    /// Deletes every live key of the org (the customer revoked it in
    /// Organization Settings). Returns how many died.
    pub(crate) fn revoke_key(&mut self, org: &str) -> Result<usize, StateError> {
        let org = self.org_id(org)?;
        let mut n = 0;
        for k in self.keys.values_mut().filter(|k| k.org == org && k.live) {
            k.live = false;
            n += 1;
        }
        Ok(n)
    }

    /// Replaces each live key of the org by a new one nobody was given: the
    /// relay's key dies and a new creation answers 409.
    pub(crate) fn rotate_key(&mut self, org: &str) -> Result<(), StateError> {
        let org = self.org_id(org)?;
        let clients: Vec<String> = self
            .keys
            .values_mut()
            .filter(|k| k.org == org && k.live)
            .map(|k| {
                k.live = false;
                k.client_id.clone()
            })
            .collect();
        if clients.is_empty() {
            return Err(StateError::NoKey(org));
        }
        for client in clients {
            self.issue_key(&org, &client)?;
        }
        Ok(())
    }

    /// Revokes every grant of the org (the customer uninstalled the
    /// integration): its refresh and access tokens die. Returns how many.
    pub(crate) fn revoke_grants(&mut self, org: &str) -> Result<usize, StateError> {
        let org = self.org_id(org)?;
        let mut n = 0;
        for g in self
            .grants
            .values_mut()
            .filter(|g| g.org == org && !g.revoked)
        {
            g.revoked = true;
            n += 1;
        }
        Ok(n)
    }

    pub(crate) fn set_login(&mut self, org: Option<&str>) -> Result<(), StateError> {
        self.logged_in = match org {
            Some(o) => Some(self.org_id(o)?),
            None => None,
        };
        Ok(())
    }

    /// The live key `key`, if any: (org id, key record).
    pub(crate) fn live_key(&self, key: &str) -> Option<&ApiKey> {
        self.keys.get(key).filter(|k| k.live)
    }

    pub(crate) fn violation(
        &mut self,
        kind: ViolationKind,
        host: &str,
        path: &str,
        org: Option<&str>,
        detail: impl Into<String>,
    ) {
        let detail = detail.into();
        tracing::warn!(?kind, host, path, detail = %detail, "fakedog recorded a violation of datadog's rules");
        self.rec.violations.push(Violation {
            kind,
            host: host.to_string(),
            path: path.to_string(),
            org: org.map(str::to_string),
            detail,
        });
    }

    /// Whether a credential of org `org_id`, whose site is `site`, was
    /// presented at another site's host (`target`): then that is recorded
    /// as a [`ViolationKind::WrongSite`] at `path`, saying that `what` of an
    /// org on that site was `done` at the host.
    pub(crate) fn wrong_site(
        &mut self,
        target: &Target,
        path: &str,
        org_id: &str,
        site: &Site,
        what: &str,
        done: &str,
    ) -> bool {
        if site == target.site {
            return false;
        }
        let detail = format!(
            "{what} of an org on {} {done} at {}",
            site.domain, target.host
        );
        self.violation(
            ViolationKind::WrongSite,
            &target.host,
            path,
            Some(org_id),
            detail,
        );
        true
    }

    /// Counts one response to `host` (status 0: connection dropped).
    pub(crate) fn record_request(&mut self, host: &str, status: u16) {
        let per_host = match self.rec.requests.get_mut(host) {
            Some(m) => m,
            None => self.rec.requests.entry(host.to_string()).or_default(),
        };
        *per_host.entry(status).or_default() += 1;
    }

    pub(crate) fn add_fault(&mut self, fault: Fault) -> Result<u64, StateError> {
        fault.check().map_err(StateError::InvalidFault)?;
        let id = self.next_id();
        let until = fault.for_secs.map(|s| self.now() + Duration::from_secs(s));
        self.faults.push(ActiveFault {
            id,
            remaining: fault.times,
            until,
            fault,
        });
        Ok(id)
    }

    /// The fault that answers this request instead of Datadog, if any; one
    /// use of it is spent.
    pub(crate) fn take_fault(&mut self, host: &str, path: &str, method: &str) -> Option<Fault> {
        if self.faults.is_empty() {
            return None;
        }
        let now = self.now();
        self.faults
            .retain(|f| f.remaining != Some(0) && f.until.is_none_or(|u| now < u));
        let i = self
            .faults
            .iter()
            .position(|f| f.fault.matches(host, path, method))?;
        let active = &mut self.faults[i];
        if let Some(r) = active.remaining.as_mut() {
            *r = r.saturating_sub(1);
        }
        let fault = active.fault.clone();
        if active.remaining == Some(0) {
            self.faults.remove(i);
        }
        Some(fault)
    }

    /// Forgets everything recorded and every pending fault; clients, orgs,
    /// grants and keys stay.
    pub(crate) fn reset(&mut self) {
        self.rec = Recording::default();
        self.faults.clear();
    }

    /// fakeintake's flush: forgets received payloads and items.
    pub(crate) fn flush_payloads(&mut self) {
        self.rec.payloads.clear();
        self.rec.items.clear();
        self.rec.counts.clear();
        self.rec.host_counts.clear();
    }

    pub(crate) fn item_count(&self, org: &str, endpoint: Endpoint) -> u64 {
        self.org(org)
            .and_then(|o| self.rec.counts.get(&o.id))
            .map(|c| c[slot(endpoint)])
            .unwrap_or_default()
    }

    pub(crate) fn received(&self, org: &str, endpoint: Endpoint) -> Vec<serde_json::Value> {
        self.org(org)
            .and_then(|o| self.rec.items.get(&o.id))
            .map(|items| items[slot(endpoint)].clone())
            .unwrap_or_default()
    }

    pub(crate) fn keys_created(&self, org: &str) -> u64 {
        self.org(org)
            .and_then(|o| self.rec.keys_created.get(&o.id))
            .copied()
            .unwrap_or_default()
    }
}

/// A new API key value: 32 lowercase hex characters, like Datadog's.
pub(crate) fn new_key_value() -> String {
    let mut bytes = [0u8; 16];
    crate::secret::fill_random(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::SITES;

    fn state_with_org() -> (State, Org) {
        let mut s = State::new(DEFAULT_TOKEN_TTL, false);
        let org = s.add_org("Acme", &SITES[3], None).unwrap();
        (s, org)
    }

    #[test]
    fn keys_look_like_datadog_keys() {
        let k = new_key_value();
        assert_eq!(k.len(), 32);
        assert!(
            k.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn rotate_key_replaces_the_live_key() {
        let (mut s, org) = state_with_org();
        assert_eq!(
            s.rotate_key(&org.id),
            Err(StateError::NoKey(org.id.clone()))
        );
        let k = s.issue_key("Acme", "c").unwrap();
        s.rotate_key(&org.id).unwrap();
        assert!(s.live_key(&k).is_none());
        assert_eq!(s.keys.values().filter(|k| k.live).count(), 1);
        assert_eq!(s.revoke_key(&org.id).unwrap(), 1);
        assert_eq!(s.keys.values().filter(|k| k.live).count(), 0);
    }

    #[test]
    fn faults_are_spent_and_expire() {
        let (mut s, _) = state_with_org();
        s.add_fault(Fault::status(503).times(2).on_path("/x"))
            .unwrap();
        s.add_fault(Fault::status(500).for_duration(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(s.take_fault("h", "/x", "POST").unwrap().status, Some(503));
        assert_eq!(s.take_fault("h", "/x", "POST").unwrap().status, Some(503));
        assert_eq!(s.take_fault("h", "/x", "POST").unwrap().status, Some(500));
        s.advance(Duration::from_secs(11));
        assert!(s.take_fault("h", "/x", "POST").is_none());
        assert!(s.faults.is_empty());
    }

    #[test]
    fn unpublished_clients_need_an_owner() {
        let (mut s, org) = state_with_org();
        let client = Client {
            id: "c".into(),
            name: "C".into(),
            secret: Secret::new("s"),
            redirect_uris: vec!["https://x.example/cb".into()],
            scopes: vec![],
            published: false,
            owner: None,
        };
        assert!(matches!(
            s.add_client(client.clone()),
            Err(StateError::InvalidClient { .. })
        ));
        let mut owned = client.clone();
        owned.owner = Some("Acme".into());
        s.add_client(owned).unwrap();
        assert_eq!(s.clients["c"].owner.as_deref(), Some(org.id.as_str()));
        let mut bad = client;
        bad.id = "d".into();
        bad.published = true;
        bad.redirect_uris = vec!["not a url".into()];
        assert!(s.add_client(bad).is_err());
    }
}
