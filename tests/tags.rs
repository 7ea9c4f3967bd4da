//! Per-tenant tags (`PUT`/`GET /v1/tenants/{t}/tags`): normalised and
//! checked by Datadog's tag rules, stored with the tenant (a restart and
//! another replica on the same PostgreSQL see them), and added to every
//! item of every kind accepted for the tenant from then on, within
//! Datadog's limits, and to no other tenant's data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ddrelay::dev::fakedog::FakeDog;
use ddrelay::dev::sandbox::Relay;
use ddrelay::site::{Encoding, Endpoint};
use reqwest::Method;
use serde_json::{Value, json};
use support::{connect, dog, eventually, fast, wait_items};

async fn put_tags(relay: &Relay, tenant: &str, tags: Value) -> (u16, Value) {
    let path = format!("/v1/tenants/{tenant}/tags");
    relay
        .admin(Method::PUT, &path, Some(json!({ "tags": tags })))
        .await
        .unwrap()
}

async fn get_tags(relay: &Relay, tenant: &str) -> (u16, Value) {
    let path = format!("/v1/tenants/{tenant}/tags");
    relay.admin(Method::GET, &path, None).await.unwrap()
}

async fn send(relay: &Relay, tenant: &str, endpoint: Endpoint, body: &Value) {
    let bytes = body.to_string().into_bytes();
    let (status, answer) = relay
        .send(tenant, endpoint, &bytes, Encoding::Gzip)
        .await
        .unwrap();
    assert_eq!(status, 202, "{endpoint}: {answer}");
}

/// A trace of two spans (v0.3 JSON); the first has its own `env`.
async fn send_trace(relay: &Relay, tenant: &str) {
    let start = ddrelay::clock::now_ms() * 1_000_000;
    let span = |id: u64, parent: u64, meta: Value| {
        json!({"trace_id": 77, "span_id": id, "parent_id": parent, "service": "shop",
               "name": "web.request", "resource": "GET /", "start": start,
               "duration": 1000, "meta": meta})
    };
    let body = json!([[span(1, 0, json!({"env": "staging"})), span(2, 1, json!({}))]]);
    let r = reqwest::Client::new()
        .put(relay.url("/v0.3/traces"))
        .header("DD-Relay-Tenant", tenant)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// One request of every JSON kind; the first item of each carries its own
/// `env:staging`.
async fn send_every_kind(relay: &Relay, tenant: &str) {
    let ts = ddrelay::clock::now();
    let point = json!([{ "timestamp": ts, "value": 1 }]);
    send(
        relay,
        tenant,
        Endpoint::SeriesV2,
        &json!({ "series": [
            { "metric": "a.b", "type": 3, "points": point, "tags": ["env:staging"] },
            { "metric": "a.c", "type": 3, "points": point }
        ]}),
    )
    .await;
    send(
        relay,
        tenant,
        Endpoint::Distribution,
        &json!({ "series": [
            { "metric": "a.d", "points": [[ts, [1.0, 2.0]]], "tags": ["env:staging"] },
            { "metric": "a.e", "points": [[ts, [1.0]]] }
        ]}),
    )
    .await;
    send(
        relay,
        tenant,
        Endpoint::Logs,
        &json!([
            { "message": "one", "ddtags": "env:staging,shop" },
            { "message": "two" }
        ]),
    )
    .await;
    let event = json!({ "title": "t", "text": "x", "tags": ["env:staging"] });
    send(relay, tenant, Endpoint::Events, &event).await;
    send(
        relay,
        tenant,
        Endpoint::CheckRun,
        &json!([
            { "check": "c.up", "host_name": "h", "status": 0, "tags": ["env:staging"] },
            { "check": "c.down", "host_name": "h", "status": 0 }
        ]),
    )
    .await;
    send(
        relay,
        tenant,
        Endpoint::EventsV2,
        &json!({ "data": { "type": "event", "attributes": {
            "title": "flag", "category": "change",
            "attributes": { "changed_resource": { "name": "f", "type": "feature_flag" } }
        }}}),
    )
    .await;
    send_trace(relay, tenant).await;
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The tags of a received item of `endpoint`, as a list.
fn tags_of(endpoint: Endpoint, item: &Value) -> Vec<String> {
    match endpoint {
        Endpoint::Logs => item["ddtags"]
            .as_str()
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        Endpoint::EventsV2 => strings(&item["data"]["attributes"]["tags"])
            .into_iter()
            .chain(strings(&item["tags"]))
            .collect(),
        _ => strings(&item["tags"]),
    }
}

const KINDS: [(Endpoint, u64); 6] = [
    (Endpoint::SeriesV2, 2),
    (Endpoint::Distribution, 2),
    (Endpoint::Logs, 2),
    (Endpoint::Events, 1),
    (Endpoint::CheckRun, 2),
    (Endpoint::EventsV2, 1),
];

async fn wait_every_kind(dog: &FakeDog, org: &str) {
    for (endpoint, n) in KINDS {
        wait_items(dog, org, endpoint, n).await;
    }
    wait_items(dog, org, Endpoint::Traces, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_reach_every_kind_of_the_tenant_s_data_and_no_other_tenant_s() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    connect(&relay, &dog, "other", "datadoghq.com", "Demo US1").await;
    let (status, v) = put_tags(
        &relay,
        "acme",
        json!(["Team:Payments", "env:prod", "critical"]),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let normalised = json!({ "tags": ["team:payments", "env:prod", "critical"] });
    assert_eq!(v, normalised);
    assert_eq!(get_tags(&relay, "acme").await, (200, normalised));
    assert_eq!(
        get_tags(&relay, "other").await,
        (200, json!({ "tags": [] }))
    );
    send_every_kind(&relay, "acme").await;
    send_every_kind(&relay, "other").await;
    wait_every_kind(&dog, "Demo EU1").await;
    wait_every_kind(&dog, "Demo US1").await;

    let eu = dog.org("Demo EU1").unwrap().id;
    let us = dog.org("Demo US1").unwrap().id;
    for (endpoint, _) in KINDS {
        for item in dog.received(&eu, endpoint) {
            let tags = tags_of(endpoint, &item);
            let has = |t: &str| tags.iter().any(|x| x == t);
            assert!(
                has("team:payments") && has("critical"),
                "{endpoint}: {item}"
            );
            // The item's own `env` wins over the tenant's; never both.
            assert!(has("env:staging") != has("env:prod"), "{endpoint}: {item}");
            let n = |t: &str| tags.iter().filter(|x| *x == t).count();
            assert_eq!(n("team:payments"), 1, "{endpoint}: {item}");
        }
        for item in dog.received(&us, endpoint) {
            let tags = tags_of(endpoint, &item);
            assert!(
                !tags.iter().any(|t| t == "team:payments"),
                "{endpoint}: {item}"
            );
        }
    }
    // Spans carry tags as meta; the span's own `env` wins.
    let spans = dog.received(&eu, Endpoint::Traces);
    assert!(
        spans.iter().all(|s| s["meta"]["team"] == "payments"),
        "{spans:?}"
    );
    let envs: Vec<&Value> = spans.iter().map(|s| &s["meta"]["env"]).collect();
    assert!(
        envs.contains(&&json!("staging")) && envs.contains(&&json!("prod")),
        "{envs:?}"
    );
    assert!(
        dog.received(&us, Endpoint::Traces)
            .iter()
            .all(|s| s["meta"].get("team").is_none())
    );
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tags_are_refused_naming_the_tag_and_good_ones_normalised() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    for (bad, named) in [
        (json!(["ok:1", "1abc"]), "1abc"),
        (json!(["team:"]), "team:"),
        (json!(["service:shop"]), "service:shop"),
        (json!(["source:x"]), "source:x"),
        (json!([""]), "empty"),
        (json!([format!("a{}", "b".repeat(200))]), "200"),
        (json!(["ok", 7]), "tags[1]"),
    ] {
        let (status, v) = put_tags(&relay, "acme", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(
            v["errors"][0].as_str().unwrap().contains(named),
            "{bad}: {v}"
        );
    }
    let many: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
    let (status, v) = put_tags(&relay, "acme", json!(many)).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("50"), "{v}");
    // Nothing of a refused PUT was kept.
    assert_eq!(get_tags(&relay, "acme").await, (200, json!({ "tags": [] })));
    // 50 is fine; case, characters and underscores as Datadog converts them.
    let (status, _) = put_tags(&relay, "acme", json!(many[..50])).await;
    assert_eq!(status, 200);
    let (status, v) = put_tags(
        &relay,
        "acme",
        json!([
            "Team:Payments & Ops",
            "Région:Île-de-France",
            "a__b_",
            "team:payments & ops"
        ]),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let want = json!({ "tags": ["team:payments_ops", "région:île-de-france", "a_b"] });
    assert_eq!(v, want);
    // An empty list clears them.
    assert_eq!(
        put_tags(&relay, "acme", json!([])).await,
        (200, json!({ "tags": [] }))
    );
    // Unknown tenant, bad body, no token.
    assert_eq!(put_tags(&relay, "nobody", json!(["a"])).await.0, 404);
    let (status, v) = relay
        .admin(Method::PUT, "/v1/tenants/acme/tags", Some(json!(["a"])))
        .await
        .unwrap();
    assert_eq!(status, 400, "{v}");
    let r = reqwest::Client::new()
        .get(relay.url("/v1/tenants/acme/tags"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_survive_a_restart() {
    let dog = dog().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = fast().start_in(&dog, dir.path()).await;
    connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    assert_eq!(
        put_tags(&relay, "acme", json!(["team:payments"])).await.0,
        200
    );
    relay.stop().await.unwrap();
    let relay = fast().start_in(&dog, dir.path()).await;
    let want = json!({ "tags": ["team:payments"] });
    assert_eq!(get_tags(&relay, "acme").await, (200, want));
    send(
        &relay,
        "acme",
        Endpoint::Logs,
        &json!([{ "message": "after" }]),
    )
    .await;
    wait_items(&dog, "Demo EU1", Endpoint::Logs, 1).await;
    let eu = dog.org("Demo EU1").unwrap().id;
    assert_eq!(
        dog.received(&eu, Endpoint::Logs)[0]["ddtags"],
        "team:payments"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_on_the_same_postgresql_sees_and_applies_them() {
    let Some(db) = support::PgDatabase::create().await else {
        return;
    };
    let dog = dog().await;
    let key = ddrelay::secret::MasterKey::generate().to_base64();
    let extra = "[delivery]\nbatch_max_age = \"50ms\"\n";
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Relay::start_with_store(&dog, da.path(), key.expose(), Some(&db.url), extra)
        .await
        .unwrap();
    let b = Relay::start_with_store(&dog, db_dir.path(), key.expose(), Some(&db.url), extra)
        .await
        .unwrap();
    connect(&a, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    assert_eq!(put_tags(&a, "acme", json!(["team:payments"])).await.0, 200);
    // B applies them from its sync of the store, without being asked.
    eventually("replica B to sync the tags", || {
        b.shared()
            .tenants
            .get("acme")
            .is_some_and(|e| e.record().tags == ["team:payments"])
    })
    .await;
    send(&b, "acme", Endpoint::Logs, &json!([{ "message": "via b" }])).await;
    wait_items(&dog, "Demo EU1", Endpoint::Logs, 1).await;
    let eu = dog.org("Demo EU1").unwrap().id;
    assert_eq!(
        dog.received(&eu, Endpoint::Logs)[0]["ddtags"],
        "team:payments"
    );
    let want = json!({ "tags": ["team:payments"] });
    assert_eq!(get_tags(&b, "acme").await, (200, want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_stay_within_datadog_s_limits_with_tags_added() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    connect(&relay, &dog, "acme", "datadoghq.eu", "Demo EU1").await;
    // 50 tags of 150 characters: about 7.5 KB more on every item.
    let tags: Vec<String> = (0..50)
        .map(|i| format!("k{i:02}:{}", "v".repeat(146)))
        .collect();
    assert_eq!(put_tags(&relay, "acme", json!(tags)).await.0, 200);
    // Two requests of 1,000 logs of 4 KB: each within Datadog's 5 MB when
    // sent, nearly three payloads' worth once tagged.
    let logs: Vec<Value> = (0..1000)
        .map(|i| json!({ "message": format!("{i} {}", support::noise(i, 4000)) }))
        .collect();
    for _ in 0..2 {
        send(&relay, "acme", Endpoint::Logs, &json!(logs)).await;
    }
    // A log just under 1 MB: its message is cut so that it still fits.
    let big = json!([{ "message": "x".repeat(999_900) }]);
    send(&relay, "acme", Endpoint::Logs, &big).await;
    // Series near a payload too.
    let ts = ddrelay::clock::now();
    let series: Vec<Value> = (0..3000)
        .map(|i| {
            json!({ "metric": format!("m.{i}"), "type": 3,
                          "points": [{ "timestamp": ts, "value": i }] })
        })
        .collect();
    send(
        &relay,
        "acme",
        Endpoint::SeriesV2,
        &json!({ "series": series }),
    )
    .await;
    wait_items(&dog, "Demo EU1", Endpoint::Logs, 2001).await;
    wait_items(&dog, "Demo EU1", Endpoint::SeriesV2, 3000).await;
    let eu = dog.org("Demo EU1").unwrap().id;
    let logs = dog.received(&eu, Endpoint::Logs);
    assert!(
        logs.iter()
            .all(|l| l["ddtags"].as_str().unwrap().split(',').count() == 50)
    );
    let cut = logs
        .iter()
        .find(|l| l["message"].as_str().unwrap().starts_with("xxx"))
        .unwrap();
    assert!(
        cut["message"]
            .as_str()
            .unwrap()
            .ends_with("...TRUNCATED...")
    );
    assert!(serde_json::to_vec(cut).unwrap().len() <= 1_000_000);
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}
