//! The same store behaviour on both backends: SQLite (embedded default) and
//! PostgreSQL (shared by replicas). PostgreSQL tests use the server named by
//! DDRELAYTEST_POSTGRES (scripts/test sets it), each in a fresh database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ddrelay::secret::{MasterKey, Secret};
use ddrelay::store::{Connection, Flow, Store, StoreError, TenantState};
use sqlx::Connection as _;

type Reopen = Box<
    dyn Fn(
        MasterKey,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Store, StoreError>>>>,
>;

struct Backend {
    store: Store,
    key: MasterKey,
    reopen: Reopen,
    _dir: Option<tempfile::TempDir>,
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
        _dir: Some(dir),
    }
}

/// A fresh PostgreSQL database, or None when no server is configured.
pub async fn postgres_url() -> Option<String> {
    let Ok(admin_url) = std::env::var("DDRELAYTEST_POSTGRES") else {
        assert!(
            std::env::var("DDRELAYTEST_REQUIRE_EXTERNAL").is_err(),
            "DDRELAYTEST_POSTGRES is required"
        );
        eprintln!("skipping PostgreSQL: DDRELAYTEST_POSTGRES is not set");
        return None;
    };
    let name = format!("ddrelay_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&format!("/{name}"));
    Some(url.to_string())
}

async fn postgres() -> Option<Backend> {
    let url = postgres_url().await?;
    let key = MasterKey::generate();
    let secret = Secret::new(url.clone());
    let store = Store::open_postgres(&secret, &key).await.unwrap();
    Some(Backend {
        store,
        key,
        reopen: Box::new(move |k| {
            let s = Secret::new(url.clone());
            Box::pin(async move { Store::open_postgres(&s, &k).await })
        }),
        _dir: None,
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
        s.set_state("t1", TenantState::ReauthRequired, Some("why"), 4)
            .await
            .unwrap();
        let t = s.tenant("t1").await.unwrap().unwrap();
        assert_eq!(
            (t.state, t.reason.as_deref()),
            (TenantState::ReauthRequired, Some("why")),
            "{name}"
        );
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
        let again = (b.reopen)(b.key.clone()).await.unwrap();
        assert_eq!(again.tenants().await.unwrap().len(), 2, "{name}");
    }
}

#[tokio::test]
async fn flows_are_single_use_under_concurrency_on_every_backend() {
    for (name, b) in backends().await {
        let flow = Flow {
            state_hash: "h1".into(),
            tenant: "t".into(),
            verifier: Secret::new("verifier"),
            web_host: "app.datadoghq.com".into(),
            domain: None,
            client_id: "c".into(),
            created_at: 1,
            expires_at: 1000,
        };
        b.store.create_flow(&flow).await.unwrap();
        let takes = (0..8).map(|_| {
            let s = b.store.clone();
            tokio::spawn(async move { s.take_flow("h1").await.unwrap().is_some() })
        });
        let mut won = 0;
        for t in takes {
            won += t.await.unwrap() as usize;
        }
        assert_eq!(won, 1, "{name}: a state must be usable exactly once");
    }
}
