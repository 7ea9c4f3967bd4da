//! The grant check: confirms every connected tenant's grant with Datadog at
//! least every `oauth.grant_check_interval`.
//!
//! A customer who uninstalls the integration revokes its grant, but the
//! marketplace API key may keep working, and Datadog calls no partner
//! back; only a refresh that Datadog refuses
//! (`invalid_grant`) reveals it. So each connected tenant whose grant was
//! last confirmed (a refresh Datadog answered, for any reason: the store's
//! `grant_checked_at`) longer than the interval ago is refreshed, and a
//! refused refresh moves it to `reauth_required` ("the customer revoked
//! access"): nothing more is sent to its org until it reconnects.
//!
//! Spread and cheap: each second at most about `2 × tenants / interval`
//! checks start (so a whole population is covered in half the interval,
//! never all at once after a restart or an upgrade), oldest confirmation
//! first, a few at a time. Single-flight across replicas: a check runs
//! under the tenant lock and skips a grant that another replica confirmed
//! meanwhile; a refresh there updates `grant_checked_at` for every replica.
//!
//! The scheduling ([`due`], [`run`]) talks to a [`Probe`], so it is tested
//! on paused time against a scripted one; [`Grants`] is the real probe.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::{CredentialError, Credentials};
use crate::shutdown::Shutdown;
use crate::store::TenantState;

/// How often the scheduler looks for due tenants.
const TICK: Duration = Duration::from_secs(1);

/// Checks running at once, at most.
const MAX_IN_FLIGHT: usize = 8;

/// After a check that could not decide (Datadog or the store unavailable),
/// the tenant is tried again after this long (or the interval, if shorter).
const RETRY_AFTER_SECS: i64 = 60;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Datadog answered a refresh: the grant stands.
    Confirmed,
    /// Another replica (or a refresh for another reason) confirmed it meanwhile.
    AlreadyConfirmed,
    /// Datadog refused the refresh: the tenant is now `reauth_required`.
    Revoked,
    /// The tenant is not connected any more: nothing to check.
    NotConnected,
    /// Datadog or the store could not be asked: try again later.
    Undecided(String),
}

/// A boxed future (the probe is used as a trait object).
pub(crate) type Pending = Pin<Box<dyn Future<Output = Checked> + Send>>;

/// What the scheduler checks grants with.
pub(crate) trait Probe: Send + Sync + 'static {
    /// Connected tenants and when each grant was last confirmed (Unix s).
    fn connected(&self) -> Vec<(String, Option<i64>)>;
    /// Confirms `tenant`'s grant unless it was confirmed since `since`.
    fn check(&self, tenant: String, since: i64) -> Pending;
    /// Seconds since the Unix epoch, as `connected` counts them.
    fn now(&self) -> i64;
}

/// At most how many checks may start in one tick: twice the even spread
/// of `tenants` over `interval`, rounded up, at least one.
pub(crate) fn per_tick(tenants: usize, interval: Duration) -> usize {
    let secs = interval.as_secs().max(1) as usize;
    (2 * tenants).div_ceil(secs).max(1)
}

/// The tenants to check now, oldest confirmation first (never confirmed
/// first of all), at most `budget`: those confirmed longer than `interval`
/// ago, not already being checked, and not waiting to be retried.
pub(crate) fn due(
    connected: &[(String, Option<i64>)],
    now: i64,
    interval: Duration,
    busy: &HashSet<String>,
    retry_at: &HashMap<String, i64>,
    budget: usize,
) -> Vec<String> {
    let cutoff = now - interval.as_secs() as i64;
    let mut due: Vec<&(String, Option<i64>)> = connected
        .iter()
        .filter(|(id, at)| {
            at.is_none_or(|at| at <= cutoff)
                && !busy.contains(id)
                && retry_at.get(id).is_none_or(|r| *r <= now)
        })
        .collect();
    due.sort_by_key(|(id, at)| (at.unwrap_or(i64::MIN), id.clone()));
    due.into_iter()
        .take(budget)
        .map(|(id, _)| id.clone())
        .collect()
}

/// Runs the grant check until `shutdown`; `interval` is read on every tick
/// (a reload changes it).
pub(crate) async fn run(
    probe: Arc<dyn Probe>,
    interval: impl Fn() -> Duration + Send,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running: JoinSet<(String, Checked)> = JoinSet::new();
    let mut busy: HashSet<String> = HashSet::new();
    let mut retry_at: HashMap<String, i64> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tick.tick() => {}
            Some(Ok((id, checked))) = running.join_next(), if !running.is_empty() => {
                busy.remove(&id);
                match checked {
                    Checked::Undecided(why) => {
                        tracing::warn!(tenant = %id, error = %why, "grant check could not decide; trying again later");
                        let wait = RETRY_AFTER_SECS.min(interval().as_secs() as i64);
                        retry_at.insert(id, probe.now() + wait);
                    }
                    _ => { retry_at.remove(&id); }
                }
                continue;
            }
        }
        let interval = interval();
        let connected = probe.connected();
        let now = probe.now();
        retry_at.retain(|_, at| *at > now);
        let room = MAX_IN_FLIGHT.saturating_sub(running.len());
        let budget = per_tick(connected.len(), interval).min(room);
        let since = now - interval.as_secs() as i64;
        for id in due(&connected, now, interval, &busy, &retry_at, budget) {
            busy.insert(id.clone());
            let check = probe.check(id.clone(), since);
            running.spawn(async move { (id, check.await) });
        }
    }
    running.shutdown().await;
}

/// The relay's credentials as a [`Probe`].
#[derive(Debug, Clone)]
pub(crate) struct Grants(pub Arc<Credentials>);

impl Probe for Grants {
    fn connected(&self) -> Vec<(String, Option<i64>)> {
        self.0.tenants.connected_grant_checks()
    }

    fn check(&self, tenant: String, since: i64) -> Pending {
        let credentials = self.0.clone();
        Box::pin(async move { credentials.confirm_grant(&tenant, since).await })
    }

    fn now(&self) -> i64 {
        crate::clock::now()
    }
}

impl Credentials {
    /// Confirms `id`'s grant with a refresh, unless it was confirmed after
    /// `since` (by another replica, or a refresh for another reason). Runs
    /// on its own task under the tenant lock, like every refresh.
    pub(crate) async fn confirm_grant(self: &Arc<Self>, id: &str, since: i64) -> Checked {
        let id = id.to_string();
        self.detached(move |this| async move {
            let lock = match this.tenants.lock(&id).await {
                Ok(l) => l,
                Err(e) => return Checked::Undecided(e.to_string()),
            };
            let checked = this.confirm_grant_locked(&id, since).await;
            lock.release().await;
            checked
        })
        .await
        .unwrap_or_else(|| Checked::Undecided("the relay is shutting down".into()))
    }

    async fn confirm_grant_locked(&self, id: &str, since: i64) -> Checked {
        if let Err(e) = self.tenants.reload(id).await {
            return Checked::Undecided(e.to_string());
        }
        let Some(record) = self.tenants.get(id).map(|e| e.record()) else {
            return Checked::NotConnected;
        };
        if record.state != TenantState::Connected {
            return Checked::NotConnected;
        }
        if record.grant_checked_at.is_some_and(|at| at > since) {
            return Checked::AlreadyConfirmed;
        }
        // Force a refresh: the token the store holds is the one to replace.
        let seen = match self.store.credentials(id).await {
            Ok(c) => c.access_token,
            Err(e) => return Checked::Undecided(e.to_string()),
        };
        let checked = match self.token_locked(id, seen.as_ref(), true).await {
            Ok(_) => Checked::Confirmed,
            Err(CredentialError::Refresh { error, .. }) if error.is_grant_revoked() => {
                Checked::Revoked
            }
            Err(e) => Checked::Undecided(e.to_string()),
        };
        let label = match &checked {
            Checked::Confirmed => "confirmed",
            Checked::Revoked => "revoked",
            _ => "undecided",
        };
        self.metrics.oauth("grant_check", label);
        checked
    }
}

#[cfg(test)]
mod tests;
