//! The same store behaviour on both backends: SQLite (embedded default) and
//! PostgreSQL (shared by replicas). PostgreSQL tests use the server named by
//! DDRELAYTEST_POSTGRES (scripts/test sets it), each in a fresh database
//! that is dropped afterwards; under DDRELAYTEST_REQUIRE_EXTERNAL=1 they
//! fail rather than skip when it is not set.
//!
//! "Another replica" is a second `Store` opened on the same database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ddrelay::secret::{MasterKey, Secret};
use ddrelay::store::{
    Backend as Engine, Connection, Flow, Reason, ReasonCode, Store, StoreError, TenantState,
};
use sqlx::Connection as _;
use sqlx::Row as _;

type Reopen = Box<
    dyn Fn(
        MasterKey,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Store, StoreError>>>>,
>;

struct Backend {
    store: Store,
    key: MasterKey,
    /// Opens the same database again (another replica, or a restart).
    reopen: Reopen,
    /// A URL for a raw connection (`sqlx::AnyConnection`).
    raw_url: String,
    _dir: Option<tempfile::TempDir>,
    _db: Option<support::PgDatabase>,
}

impl Backend {
    async fn replica(&self) -> Store {
        (self.reopen)(self.key.clone()).await.unwrap()
    }

    async fn raw(&self) -> sqlx::AnyConnection {
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(&self.raw_url).await.unwrap()
    }
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let key = MasterKey::generate();
    let store = Store::open_sqlite(&path, &key).await.unwrap();
    let p = path.clone();
    Backend {
        store,
        key,
        reopen: Box::new(move |k| {
            let p = p.clone();
            Box::pin(async move { Store::open_sqlite(&p, &k).await })
        }),
        raw_url: format!("sqlite://{}", path.display()),
        _dir: Some(dir),
        _db: None,
    }
}

async fn postgres() -> Option<Backend> {
    let db = support::PgDatabase::create().await?;
    let url = db.url.clone();
    let key = MasterKey::generate();
    let store = Store::open_postgres(&Secret::new(url.clone()), &key)
        .await
        .unwrap();
    let u = url.clone();
    Some(Backend {
        store,
        key,
        reopen: Box::new(move |k| {
            let s = Secret::new(u.clone());
            Box::pin(async move { Store::open_postgres(&s, &k).await })
        }),
        raw_url: url,
        _dir: None,
        _db: Some(db),
    })
}

async fn backends() -> Vec<(&'static str, Backend)> {
    let mut v = vec![("sqlite", sqlite().await)];
    if let Some(pg) = postgres().await {
        v.push(("postgres", pg));
    }
    v
}

fn connection(org: &str) -> Connection {
    Connection {
        domain: "datadoghq.eu".into(),
        org_id: Some(org.into()),
        org_name: Some("Org".into()),
        client_id: "client".into(),
        scopes: None,
        access_token: Secret::new("access-token-plaintext"),
        access_expires_at: 100,
        refresh_token: Some(Secret::new("refresh-token-plaintext")),
        api_key: Secret::new("api-key-plaintext-1234"),
        api_key_id: Some("id".into()),
    }
}

fn flow(hash: &str, tenant: &str, expires_at: i64) -> Flow {
    Flow {
        state_hash: hash.into(),
        tenant: tenant.into(),
        verifier: Secret::new("verifier-plaintext-VVVV"),
        web_host: "app.datadoghq.com".into(),
        domain: None,
        client_id: "c".into(),
        created_at: 1,
        expires_at,
    }
}

#[test]
fn both_backends_have_the_same_migrations() {
    let names = |backend: &str| {
        let mut v: Vec<String> = std::fs::read_dir(format!(
            "{}/migrations/{backend}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
        v.sort();
        v
    };
    assert_eq!(names("sqlite"), names("postgres"));
}

#[tokio::test]
async fn lifecycle_on_every_backend() {
    for (name, b) in backends().await {
        let s = &b.store;
        s.touch_pending("t1", 1).await.unwrap();
        assert_eq!(
            s.tenant("t1").await.unwrap().unwrap().state,
            TenantState::Pending,
            "{name}"
        );
        s.save_connection("t1", &connection("org-1"), 2)
            .await
            .unwrap();
        let t = s.tenant("t1").await.unwrap().unwrap();
        assert!(t.has_api_key && t.has_refresh_token, "{name}");
        assert_eq!(t.api_key_last4.as_deref(), Some("1234"), "{name}");
        s.save_tokens(
            "t1",
            &Secret::new("access-2"),
            500,
            Some(&Secret::new("refresh-2")),
            3,
        )
        .await
        .unwrap();
        let c = s.credentials("t1").await.unwrap();
        assert_eq!(c.refresh_token.unwrap().expose(), "refresh-2", "{name}");
        assert_eq!(c.access_expires_at, Some(500), "{name}");
        let why = Reason::new(ReasonCode::GrantRevoked, "why");
        s.set_state("t1", TenantState::ReauthRequired, Some(&why), 4)
            .await
            .unwrap();
        let t = s.tenant("t1").await.unwrap().unwrap();
        assert_eq!(
            (t.state, t.reason.as_deref(), t.reason_code),
            (
                TenantState::ReauthRequired,
                Some("why"),
                Some(ReasonCode::GrantRevoked)
            ),
            "{name}"
        );
        // Tags: stored, a new change number, removed by an empty list.
        let tags = vec!["team:a".to_string(), "env:prod".to_string()];
        s.set_tags("t1", &tags, 4).await.unwrap();
        let tagged = s.tenant("t1").await.unwrap().unwrap();
        assert_eq!(tagged.tags, tags, "{name}");
        assert!(tagged.version > t.version, "{name}");
        let changed = s.tenants_changed_since(t.version).await.unwrap();
        assert_eq!(changed[0].tags, tags, "{name}");
        assert!(matches!(
            s.set_tags("nobody", &tags, 4).await,
            Err(StoreError::NoTenant(_))
        ));
        s.set_tags("t1", &[], 4).await.unwrap();
        assert!(
            s.tenant("t1").await.unwrap().unwrap().tags.is_empty(),
            "{name}"
        );
        s.set_tags("t1", &tags, 4).await.unwrap();
        let t = s.tenant("t1").await.unwrap().unwrap();
        let v = t.version;
        s.touch_pending("t2", 5).await.unwrap();
        let changed = s.tenants_changed_since(v).await.unwrap();
        assert_eq!(
            changed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            vec!["t2"],
            "{name}"
        );
        assert_eq!(
            s.tenant_for_org("org-1", "t2").await.unwrap().as_deref(),
            Some("t1"),
            "{name}"
        );
        s.disconnect("t1", "bye", 6).await.unwrap();
        assert!(
            s.credentials("t1").await.unwrap().api_key.is_none(),
            "{name}"
        );
        let counts = s.count_by_state().await.unwrap();
        assert!(
            counts.contains(&(TenantState::Disconnected, 1))
                && counts.contains(&(TenantState::Pending, 1)),
            "{name}: {counts:?}"
        );
        s.close().await;
        // Reopening with another key is refused; with the right key it works.
        assert!(
            matches!(
                (b.reopen)(MasterKey::generate()).await,
                Err(StoreError::WrongMasterKey)
            ),
            "{name}"
        );
        let again = b.replica().await;
        assert_eq!(again.tenants().await.unwrap().len(), 2, "{name}");
        let t1 = again.tenant("t1").await.unwrap().unwrap();
        assert_eq!(t1.tags, ["team:a", "env:prod"], "{name}: tags kept");
        again.close().await;
    }
}

#[tokio::test]
async fn connect_reconnect_and_errors_on_every_backend() {
    for (name, b) in backends().await {
        let s = &b.store;
        assert_eq!(
            s.backend(),
            if name == "sqlite" {
                Engine::Sqlite
            } else {
                Engine::Postgres
            }
        );
        s.save_connection("acme", &connection("org-1"), 2)
            .await
            .unwrap();
        // A new connect flow does not interrupt a connected tenant.
        s.touch_pending("acme", 3).await.unwrap();
        assert_eq!(
            s.tenant("acme").await.unwrap().unwrap().state,
            TenantState::Connected,
            "{name}"
        );
        // Not rotated: the refresh token is kept.
        s.save_tokens("acme", &Secret::new("access-2"), 5000, None, 4)
            .await
            .unwrap();
        let c = s.credentials("acme").await.unwrap();
        assert_eq!(c.access_token.unwrap().expose(), "access-2", "{name}");
        assert_eq!(
            c.refresh_token.unwrap().expose(),
            "refresh-token-plaintext",
            "{name}"
        );
        // A new key clears reauth_required and its reason.
        let dead = Reason::new(ReasonCode::KeyRefused, "key dead");
        s.set_state("acme", TenantState::ReauthRequired, Some(&dead), 5)
            .await
            .unwrap();
        s.save_api_key("acme", &Secret::new("new-key-9876"), Some("kid-2"), 6)
            .await
            .unwrap();
        let t = s.tenant("acme").await.unwrap().unwrap();
        assert_eq!(
            (
                t.state,
                t.reason,
                t.reason_code,
                t.api_key_last4.as_deref(),
                t.api_key_id.as_deref()
            ),
            (
                TenantState::Connected,
                None,
                None,
                Some("9876"),
                Some("kid-2")
            ),
            "{name}"
        );
        assert_eq!(
            s.credentials("acme")
                .await
                .unwrap()
                .api_key
                .unwrap()
                .expose(),
            "new-key-9876"
        );
        // One org, one tenant: the owner itself and disconnected tenants do not count.
        assert_eq!(s.tenant_for_org("org-1", "acme").await.unwrap(), None);
        s.disconnect("acme", "bye", 7).await.unwrap();
        assert_eq!(s.tenant_for_org("org-1", "other").await.unwrap(), None);
        // A disconnected tenant that connects again is pending.
        s.touch_pending("acme", 8).await.unwrap();
        let t = s.tenant("acme").await.unwrap().unwrap();
        assert_eq!((t.state, t.reason), (TenantState::Pending, None), "{name}");
        assert_eq!(t.domain.as_deref(), Some("datadoghq.eu"), "{name}: kept");
        assert!(!t.has_api_key && !t.has_refresh_token, "{name}");
        // Unknown tenants.
        assert!(s.tenant("nope").await.unwrap().is_none());
        assert!(matches!(
            s.credentials("nope").await,
            Err(StoreError::NoTenant(_))
        ));
        assert!(matches!(
            s.set_state("nope", TenantState::Connected, None, 1).await,
            Err(StoreError::NoTenant(_))
        ));
        assert!(matches!(
            s.save_tokens("nope", &Secret::new("a"), 1, None, 1).await,
            Err(StoreError::NoTenant(_))
        ));
        assert!(matches!(
            s.save_api_key("nope", &Secret::new("k"), None, 1).await,
            Err(StoreError::NoTenant(_))
        ));
        assert!(matches!(
            s.disconnect("nope", "bye", 1).await,
            Err(StoreError::NoTenant(_))
        ));
        // Listing is sorted by id.
        s.touch_pending("zeta", 9).await.unwrap();
        s.touch_pending("beta", 9).await.unwrap();
        let ids: Vec<String> = s
            .tenants()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids, ["acme", "beta", "zeta"], "{name}");
    }
}

#[tokio::test]
async fn flows_on_every_backend() {
    for (name, b) in backends().await {
        let s = &b.store;
        s.create_flow(&flow("h1", "acme", 100)).await.unwrap();
        s.create_flow(&flow("h2", "acme", 10)).await.unwrap();
        s.create_flow(&flow("h3", "other", 100)).await.unwrap();
        assert_eq!(s.count_flows().await.unwrap(), 3, "{name}");
        // The site each tenant's newest live connect named (the status page
        // shows it for a pending tenant).
        let eu = Flow {
            domain: Some("datadoghq.eu".into()),
            created_at: 2,
            ..flow("h4", "other", 100)
        };
        s.create_flow(&eu).await.unwrap();
        let mut sites = s.flow_sites(50).await.unwrap();
        sites.sort();
        assert_eq!(
            sites,
            [
                ("acme".to_string(), None),
                ("other".to_string(), Some("datadoghq.eu".to_string()))
            ],
            "{name}"
        );
        assert!(s.take_flow("h4").await.unwrap().is_some(), "{name}");
        // Started on one replica, completed on another.
        let other = b.replica().await;
        let got = other.take_flow("h1").await.unwrap().unwrap();
        assert_eq!(
            (
                got.tenant.as_str(),
                got.verifier.expose(),
                got.expires_at,
                got.domain
            ),
            ("acme", "verifier-plaintext-VVVV", 100, None),
            "{name}"
        );
        assert!(s.take_flow("h1").await.unwrap().is_none(), "{name}");
        assert_eq!(s.purge_expired_flows(11).await.unwrap(), 1, "{name}");
        // Disconnecting a tenant drops its pending flows.
        s.touch_pending("other", 1).await.unwrap();
        s.disconnect("other", "bye", 2).await.unwrap();
        assert_eq!(s.count_flows().await.unwrap(), 0, "{name}");
        other.close().await;
    }
}

#[tokio::test]
async fn flows_are_single_use_under_concurrency_on_every_backend() {
    for (name, b) in backends().await {
        b.store.create_flow(&flow("h1", "t", 1000)).await.unwrap();
        let replica = b.replica().await;
        let takes = (0..8).map(|i| {
            let s = if i % 2 == 0 {
                b.store.clone()
            } else {
                replica.clone()
            };
            tokio::spawn(async move { s.take_flow("h1").await.unwrap().is_some() })
        });
        let mut won = 0;
        for t in takes {
            won += t.await.unwrap() as usize;
        }
        assert_eq!(won, 1, "{name}: a state must be usable exactly once");
        replica.close().await;
    }
}

#[tokio::test]
async fn secrets_are_sealed_in_the_database_on_every_backend() {
    for (name, b) in backends().await {
        let s = &b.store;
        s.save_connection("acme", &connection("org-1"), 2)
            .await
            .unwrap();
        s.create_flow(&flow("h", "acme", 100)).await.unwrap();
        let mut raw = b.raw().await;
        let mut stored: Vec<Vec<u8>> = Vec::new();
        for row in sqlx::query("SELECT access_token, refresh_token, api_key FROM tenants")
            .fetch_all(&mut raw)
            .await
            .unwrap()
        {
            for col in ["access_token", "refresh_token", "api_key"] {
                stored.push(row.try_get::<Vec<u8>, _>(col).unwrap());
            }
        }
        for row in sqlx::query("SELECT sealed FROM oauth_flows")
            .fetch_all(&mut raw)
            .await
            .unwrap()
        {
            stored.push(row.try_get::<Vec<u8>, _>("sealed").unwrap());
        }
        assert_eq!(stored.len(), 4, "{name}");
        for value in &stored {
            for needle in [
                "access-token-plaintext",
                "refresh-token-plaintext",
                "api-key-plaintext",
                "verifier-plaintext",
            ] {
                assert!(
                    !value.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{name}: {needle} stored in plaintext"
                );
            }
        }
        // Every row as the database prints it: no plaintext either.
        let dump_sql = if name == "postgres" {
            "SELECT CAST(t AS TEXT) AS row FROM tenants t"
        } else {
            "SELECT id || state || COALESCE(domain, '') || hex(access_token) || hex(api_key) AS row FROM tenants"
        };
        for row in sqlx::query(dump_sql).fetch_all(&mut raw).await.unwrap() {
            let text: String = row.try_get("row").unwrap();
            assert!(text.contains("datadoghq.eu"), "{name}: {text}");
            assert!(!text.contains("plaintext"), "{name}: {text}");
        }
        raw.close().await.unwrap();
        // A sealed value moved to another tenant's row does not open there.
        s.touch_pending("victim", 3).await.unwrap();
        let mut raw = b.raw().await;
        sqlx::query(
            "UPDATE tenants SET api_key = (SELECT api_key FROM tenants WHERE id = 'acme') WHERE id = 'victim'",
        )
        .execute(&mut raw)
        .await
        .unwrap();
        raw.close().await.unwrap();
        assert!(
            matches!(s.credentials("victim").await, Err(StoreError::Seal { .. })),
            "{name}"
        );
    }
}

/// The tenant lock is single-flight: across replicas on PostgreSQL, within
/// the process on SQLite (one process serves an embedded store).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenant_lock_is_single_flight_on_every_backend() {
    for (name, b) in backends().await {
        let a = b.store.clone();
        let other = if name == "postgres" {
            b.replica().await
        } else {
            b.store.clone()
        };
        let held = a.lock_tenant("acme").await.unwrap();
        let waiter = {
            let other = other.clone();
            tokio::spawn(async move { other.lock_tenant("acme").await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "{name}: the lock was taken twice");
        // Another tenant is not blocked.
        let unrelated = tokio::time::timeout(Duration::from_secs(5), other.lock_tenant("other"))
            .await
            .expect("another tenant's lock must not wait")
            .unwrap();
        unrelated.release().await;
        held.release().await;
        let second = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released lock must be granted")
            .unwrap();
        // Dropping (an error path, a cancelled request) releases too.
        drop(second);
        let third = tokio::time::timeout(Duration::from_secs(5), a.lock_tenant("acme"))
            .await
            .expect("a dropped lock must be released")
            .unwrap();
        third.release().await;
    }
}

/// The refresh pattern: read the refresh token, "call Datadog", store the
/// rotated one, under the lock, from two replicas at once. A token read by
/// two holders would be a refresh token presented twice (Datadog revokes the
/// grant); a write lost would be a rotated token lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotated_refresh_tokens_are_never_reused_on_every_backend() {
    for (name, b) in backends().await {
        b.store
            .save_connection("acme", &connection("org-1"), 1)
            .await
            .unwrap();
        b.store
            .save_tokens("acme", &Secret::new("a-0"), 1, Some(&Secret::new("r-0")), 1)
            .await
            .unwrap();
        let replicas = if name == "postgres" {
            vec![b.store.clone(), b.replica().await]
        } else {
            vec![b.store.clone()]
        };
        let presented = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
        let mut tasks = Vec::new();
        for i in 0..6 {
            let s = replicas[i % replicas.len()].clone();
            let presented = presented.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    let lock = s.lock_tenant("acme").await.unwrap();
                    let c = s.credentials("acme").await.unwrap();
                    let current = c.refresh_token.unwrap().expose().to_string();
                    presented.lock().push(current.clone());
                    tokio::time::sleep(Duration::from_millis(2)).await; // Datadog
                    let n: u32 = current.trim_start_matches("r-").parse().unwrap();
                    s.save_tokens(
                        "acme",
                        &Secret::new(format!("a-{}", n + 1)),
                        1,
                        Some(&Secret::new(format!("r-{}", n + 1))),
                        2,
                    )
                    .await
                    .unwrap();
                    lock.release().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let presented = presented.lock().clone();
        let distinct: std::collections::HashSet<&String> = presented.iter().collect();
        assert_eq!(
            distinct.len(),
            presented.len(),
            "{name}: a refresh token was presented twice"
        );
        let last = b.store.credentials("acme").await.unwrap();
        assert_eq!(last.refresh_token.unwrap().expose(), "r-60", "{name}");
    }
}

/// Replicas poll `tenants_changed_since(highest seen)`. Under concurrent
/// writes from two replicas, a poller must never miss a committed change:
/// numbers are commit-ordered, so nothing committed later is numbered below
/// what was already seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_numbers_are_commit_ordered_on_every_backend() {
    for (name, b) in backends().await {
        let ids: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
        for id in &ids {
            b.store.touch_pending(id, 1).await.unwrap();
        }
        let replicas = [b.store.clone(), b.replica().await];
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = {
            let s = b.store.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut mark = 0i64;
                let mut seen = HashMap::new();
                loop {
                    let done = stop.load(std::sync::atomic::Ordering::SeqCst);
                    for t in s.tenants_changed_since(mark).await.unwrap() {
                        assert!(t.version > mark);
                        mark = mark.max(t.version);
                        seen.insert(t.id.clone(), t);
                    }
                    if done {
                        return seen;
                    }
                }
            })
        };
        let mut writers = Vec::new();
        for w in 0..6 {
            let s = replicas[w % 2].clone();
            let ids = ids.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..40 {
                    let id = &ids[(w * 7 + i * 3) % ids.len()];
                    let state = if i % 2 == 0 {
                        TenantState::ReauthRequired
                    } else {
                        TenantState::Pending
                    };
                    let why = Reason::new(ReasonCode::ConnectFailed, format!("w{w}-{i}"));
                    s.set_state(id, state, Some(&why), 2).await.unwrap();
                }
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = poller.await.unwrap();
        for id in &ids {
            let now = b.store.tenant(id).await.unwrap().unwrap();
            assert_eq!(
                seen.get(id),
                Some(&now),
                "{name}: the poller missed the last change of {id}"
            );
        }
        let versions: std::collections::HashSet<i64> = b
            .store
            .tenants()
            .await
            .unwrap()
            .iter()
            .map(|t| t.version)
            .collect();
        assert_eq!(versions.len(), ids.len(), "{name}: duplicate numbers");
    }
}

/// The lifecycle webhook outbox on both backends: each state change that
/// is an event writes exactly one row with it (none while recording is
/// off, none for a change that is not an event); claims take each tenant's
/// oldest event only, never one under another replica's live lease, and a
/// lease that passed is taken over; settled events leave or come due again.
#[tokio::test]
async fn the_webhook_outbox_on_every_backend() {
    for (name, b) in backends().await {
        let s = &b.store;
        s.touch_pending("a", 1).await.unwrap();
        s.save_connection("a", &connection("org-a"), 2)
            .await
            .unwrap();
        assert_eq!(
            s.outbox_depth().await.unwrap().0,
            0,
            "{name}: recording is off"
        );
        s.record_events(true);
        s.save_connection("b", &connection("org-b"), 3)
            .await
            .unwrap();
        // Same org again while connected: not an event.
        s.save_connection("b", &connection("org-b"), 4)
            .await
            .unwrap();
        let revoked = Reason::new(ReasonCode::GrantRevoked, "the customer revoked access");
        s.set_state("b", TenantState::ReauthRequired, Some(&revoked), 5)
            .await
            .unwrap();
        s.set_state("b", TenantState::ReauthRequired, Some(&revoked), 6)
            .await
            .unwrap();
        s.disconnect("b", "disconnected by the partner", 7)
            .await
            .unwrap();
        s.set_state("a", TenantState::ReauthRequired, Some(&revoked), 8)
            .await
            .unwrap();
        assert_eq!(s.outbox_depth().await.unwrap().0, 4, "{name}");

        // Replica one claims every tenant's head: b's connect, a's reauth.
        let now = 1_000_000;
        let one = s.claim_events("one", now, now + 60_000, 10).await.unwrap();
        let kinds: Vec<serde_json::Value> = one
            .iter()
            .map(|e| serde_json::from_str(&e.body).unwrap())
            .collect();
        assert_eq!(
            kinds
                .iter()
                .map(|k| (k["tenant"].as_str().unwrap(), k["type"].as_str().unwrap()))
                .collect::<Vec<_>>(),
            [("b", "tenant.connected"), ("a", "tenant.reauth_required")],
            "{name}"
        );
        assert_eq!(kinds[1]["reason_code"], "grant_revoked");
        assert_eq!(kinds[0]["org_id"], "org-b");
        // Another replica finds nothing while the lease runs.
        let other = b.replica().await;
        assert!(
            other
                .claim_events("two", now + 1, now + 60_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // b's connect delivered: its reauth is next; a's attempt failed.
        s.event_delivered(one[0].seq).await.unwrap();
        s.event_failed(one[1].seq, "one", now + 5_000, "the receiver answered 500")
            .await
            .unwrap();
        let two = other
            .claim_events("two", now + 2, now + 60_000, 10)
            .await
            .unwrap();
        assert_eq!(two.len(), 1, "{name}: a's event is not due yet");
        assert!(two[0].body.contains("tenant.reauth_required") && two[0].tenant == "b");
        // "two" dies holding it: after its lease, "one" takes it over.
        assert!(
            s.claim_events("one", now + 59_000, now + 120_000, 10)
                .await
                .unwrap()
                .iter()
                .all(|e| e.tenant == "a")
        );
        let taken = s
            .claim_events("one", now + 60_001, now + 120_000, 10)
            .await
            .unwrap();
        assert_eq!(
            taken.iter().map(|e| e.tenant.as_str()).collect::<Vec<_>>(),
            ["b"],
            "{name}"
        );
        assert_eq!(s.release_events("one").await.unwrap(), 2, "{name}");
        assert_eq!(s.expire_events(i64::MAX).await.unwrap(), 3, "{name}");
        other.close().await;
    }
}

/// Replicas claiming at the same moment never take the same event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_never_share_an_event_on_every_backend() {
    for (name, b) in backends().await {
        b.store.record_events(true);
        for i in 0..40 {
            b.store
                .save_connection(&format!("t{i}"), &connection(&format!("org-{i}")), 1)
                .await
                .unwrap();
        }
        let mut replicas = Vec::new();
        for _ in 0..4 {
            replicas.push(b.replica().await);
        }
        let claims = replicas.iter().enumerate().map(|(i, r)| {
            let owner = format!("r{i}");
            async move {
                let mut got = Vec::new();
                for _ in 0..10 {
                    got.extend(r.claim_events(&owner, 1_000, 100_000, 3).await.unwrap());
                }
                got
            }
        });
        let all: Vec<i64> = futures_util::future::join_all(claims)
            .await
            .into_iter()
            .flatten()
            .map(|e| e.seq)
            .collect();
        let unique: std::collections::HashSet<i64> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "{name}: an event claimed twice");
        assert_eq!(all.len(), 40, "{name}");
        for r in replicas {
            r.close().await;
        }
    }
}

/// Usage rows add up across flushes and replicas (an upsert per cell),
/// read back by tenant and hour range, and are pruned by hour.
#[tokio::test]
async fn usage_rows_add_up_across_replicas_and_are_pruned() {
    use ddrelay::site::Endpoint;
    use ddrelay::usage::{Counts, Key};
    for (name, b) in backends().await {
        let other = b.replica().await;
        let key = |tenant: &str, hour: i64| Key {
            tenant: tenant.into(),
            kind: Endpoint::Logs,
            hour,
        };
        let c = |n: u64| Counts {
            accepted_items: n,
            accepted_bytes: 10 * n,
            delivered_items: n,
            ..Counts::default()
        };
        b.store
            .add_usage(&[(key("a", 3600), c(2)), (key("b", 3600), c(5))])
            .await
            .unwrap();
        other
            .add_usage(&[(key("a", 3600), c(3)), (key("a", 7200), c(1))])
            .await
            .unwrap();
        let rows = b.store.usage("a", 0, 10_800).await.unwrap();
        assert_eq!(rows.len(), 2, "{name}: {rows:?}");
        assert_eq!(rows[0].hour, 3600, "{name}");
        assert_eq!(rows[0].counts.accepted_items, 5, "{name}");
        assert_eq!(rows[0].counts.accepted_bytes, 50, "{name}");
        assert_eq!(rows[1].counts.delivered_items, 1, "{name}");
        assert_eq!(b.store.usage("a", 7200, 10_800).await.unwrap().len(), 1);
        assert_eq!(b.store.prune_usage(7200).await.unwrap(), 2, "{name}");
        assert!(b.store.usage("b", 0, 10_800).await.unwrap().is_empty());
    }
}
