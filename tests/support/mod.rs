//! Shared helpers for the integration tests: fakedog and a relay on port 0,
//! wired together by `ddrelay::sandbox` exactly as `ddrelay demo` does.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ddrelay::fakedog::{FakeDog, Options};
use ddrelay::sandbox::Relay;
use ddrelay::site::SITES;

/// fakedog with one org per site (`Demo US1`, `Demo EU1`, …).
pub async fn dog() -> FakeDog {
    FakeDog::start(Options::demo()).await.unwrap()
}

/// A relay wired to `dog`, with `extra` TOML; keep the TempDir alive.
pub async fn relay(dog: &FakeDog, extra: &str) -> (Relay, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dog, dir.path(), extra).await.unwrap();
    (relay, dir)
}

/// `GET /v1/tenants/{tenant}`.
pub async fn tenant_json(relay: &Relay, tenant: &str) -> serde_json::Value {
    let (s, v) = relay
        .admin(reqwest::Method::GET, &format!("/v1/tenants/{tenant}"), None)
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    v
}

/// Token calls fakedog saw on every site's API host.
pub fn total_token_calls(dog: &FakeDog) -> u64 {
    SITES
        .iter()
        .map(|s| dog.token_calls(&format!("api.{}", s.domain)))
        .sum()
}
