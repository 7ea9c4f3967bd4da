//! When Datadog says no: the Forbidden fallback, retries, dead letters,
//! splitting on 413, rate limits, age-out and tenant isolation, against
//! fakedog over TLS. Backoffs are configured small so real-time waits stay
//! short; every wait polls an observable condition with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use ddrelay::clock::now;
use ddrelay::dev::fakedog::{FakeDog, Fault};
use ddrelay::dev::sandbox::Relay;
use ddrelay::site::{Encoding, Endpoint};
use serde_json::json;
use support::{Setup, dog, ms, relay, tenant_json};

/// Batches after 20 ms, retries from 20 ms to 300 ms, two 403s with a valid key.
fn fast() -> Setup {
    Setup::default()
        .batch_max_age(ms(20))
        .retry(ms(20), ms(300))
        .forbidden_retries(2)
}

fn items(dog: &FakeDog, org: &str, endpoint: Endpoint) -> u64 {
    dog.item_count(&dog.org(org).unwrap().id, endpoint)
}

async fn send_logs(relay: &Relay, tenant: &str, n: usize, tag: &str) {
    let body = json!(
        (0..n)
            .map(|i| json!({ "message": format!("{tag}-{i}") }))
            .collect::<Vec<_>>()
    );
    support::accepted(relay, tenant, Endpoint::Logs, body.to_string()).await;
}

async fn send_series(relay: &Relay, tenant: &str, n: usize) {
    let ts = now();
    let body = json!({ "series": (0..n).map(|i| json!({ "metric": "m", "points": [{ "timestamp": ts, "value": i }] })).collect::<Vec<_>>() });
    support::accepted(relay, tenant, Endpoint::SeriesV2, body.to_string()).await;
}

/// The tenant's first dead-letter entry (from the listing) and its items,
/// through the admin API.
async fn first_dead_letter(relay: &Relay, tenant: &str) -> (serde_json::Value, serde_json::Value) {
    let (s, v) = relay
        .admin(
            reqwest::Method::GET,
            &format!("/v1/tenants/{tenant}/dead_letters"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let entry = v["entries"][0].clone();
    assert!(entry.is_object(), "no dead-letter entry: {v}");
    let (s, items) = relay
        .admin(
            reqwest::Method::GET,
            &format!("/v1/tenants/{tenant}/dead_letters/{}", entry["id"]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{items}");
    (entry, items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_replaced_exactly_once_and_nothing_is_lost() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    support::connect(&relay, &dog, "t", "datadoghq.eu", "Demo EU1").await;
    let org = dog.org("Demo EU1").unwrap().id;
    send_logs(&relay, "t", 5, "before").await;
    support::eventually_within("first logs", Duration::from_secs(20), || {
        items(&dog, "Demo EU1", Endpoint::Logs) == 5
    })
    .await;
    dog.revoke_key(&org).unwrap();
    // Many requests of several kinds in flight when the 403s start.
    let relay_ref = &relay;
    let sends = (0..20).map(|i| async move {
        if i % 2 == 0 {
            send_logs(relay_ref, "t", 10, &format!("after{i}")).await
        } else {
            send_series(relay_ref, "t", 10).await
        }
    });
    futures_util::future::join_all(sends).await;
    support::eventually_within(
        "everything delivered with the new key",
        Duration::from_secs(30),
        || {
            items(&dog, "Demo EU1", Endpoint::Logs) >= 105
                && items(&dog, "Demo EU1", Endpoint::SeriesV2) >= 100
        },
    )
    .await;
    assert_eq!(
        dog.keys_created(&org),
        2,
        "one key at connect, exactly one after the incident"
    );
    let t = tenant_json(&relay, "t").await;
    assert_eq!(t["state"], "connected", "{t}");
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_creation_409_holds_the_data_until_the_customer_reconnects() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    support::connect(&relay, &dog, "t", "us5.datadoghq.com", "Demo US5").await;
    let org = dog.org("Demo US5").unwrap().id;
    // The key is replaced out of band: ours is dead and creation answers 409.
    dog.rotate_key(&org).unwrap();
    send_logs(&relay, "t", 7, "held").await;
    let relay_ref = &relay;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = tenant_json(relay_ref, "t").await;
        if t["state"] == "reauth_required" {
            assert!(
                t["reason"]
                    .as_str()
                    .unwrap()
                    .contains("OAuth Client API Key"),
                "{t}"
            );
            assert_eq!(t["queued_items"], 7, "{t}");
            assert_eq!(t["delivery"]["held_items"], 7, "{t}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tenant never moved to reauth_required: {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still accepted while held.
    send_logs(&relay, "t", 3, "held2").await;
    assert_eq!(items(&dog, "Demo US5", Endpoint::Logs), 0);
    // The customer revokes the key in Datadog and connects again: delivery resumes by itself.
    dog.revoke_key(&org).unwrap();
    support::connect(&relay, &dog, "t", "us5.datadoghq.com", "Demo US5").await;
    support::eventually_within(
        "held data delivered after the reconnect",
        Duration::from_secs(20),
        || items(&dog, "Demo US5", Endpoint::Logs) == 10,
    )
    .await;
    assert_eq!(tenant_json(&relay, "t").await["state"], "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_holds_the_data_until_the_customer_reconnects() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    support::connect(&relay, &dog, "t", "ap1.datadoghq.com", "Demo AP1").await;
    let org = dog.org("Demo AP1").unwrap().id;
    dog.revoke_grants(&org).unwrap(); // the customer uninstalled
    dog.revoke_key(&org).unwrap();
    send_series(&relay, "t", 4).await;
    support::eventually_within("reauth_required", Duration::from_secs(20), || {
        relay
            .shared()
            .tenants
            .get("t")
            .is_some_and(|e| e.state() == ddrelay::store::TenantState::ReauthRequired)
    })
    .await;
    let t = tenant_json(&relay, "t").await;
    assert!(
        t["reason"].as_str().unwrap().contains("connect again"),
        "{t}"
    );
    assert_eq!(t["queued_items"], 4);
    support::connect(&relay, &dog, "t", "ap1.datadoghq.com", "Demo AP1").await;
    support::eventually_within("delivered after reconnect", Duration::from_secs(20), || {
        items(&dog, "Demo AP1", Endpoint::SeriesV2) == 4
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_with_a_valid_key_is_retried_a_few_times_never_in_a_hot_loop() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    support::connect(&relay, &dog, "t", "datadoghq.com", "Demo US1").await;
    let org = dog.org("Demo US1").unwrap().id;
    dog.inject_fault(
        Fault::status(403)
            .on_host("api.datadoghq.com")
            .on_endpoint(Endpoint::SeriesV2),
    )
    .unwrap();
    send_series(&relay, "t", 3).await;
    // Watch for two seconds: the tenant backs off (300 ms cap) instead of spinning.
    let started = Instant::now();
    support::eventually_within("a visible alert", Duration::from_secs(10), || {
        relay.shared().pipeline.tenant("t").forbidden_in_a_row > 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(started.elapsed())).await;
    let attempts = dog.requests("api.datadoghq.com", 403);
    assert!((3..=20).contains(&attempts), "{attempts} attempts in 2 s");
    let t = tenant_json(&relay, "t").await;
    assert!(
        t["delivery"]["last_error"]
            .as_str()
            .unwrap()
            .contains("validates"),
        "{t}"
    );
    assert_eq!(t["state"], "connected");
    assert_eq!(dog.keys_created(&org), 1, "a valid key is never replaced");
    dog.clear_faults();
    support::eventually_within(
        "delivered once the 403s stop",
        Duration::from_secs(20),
        || items(&dog, "Demo US1", Endpoint::SeriesV2) == 3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_errors_are_retried_and_retry_after_is_honoured() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    support::connect(&relay, &dog, "t", "datadoghq.eu", "Demo EU1").await;
    dog.inject_fault(
        Fault::status(503)
            .on_host("http-intake.logs.datadoghq.eu")
            .times(3),
    )
    .unwrap();
    send_logs(&relay, "t", 4, "r").await;
    support::eventually_within(
        "delivered after three 503s",
        Duration::from_secs(20),
        || items(&dog, "Demo EU1", Endpoint::Logs) == 4,
    )
    .await;
    assert_eq!(dog.requests("http-intake.logs.datadoghq.eu", 503), 3);
    // A dropped connection is retried too.
    dog.inject_fault(
        Fault::drop_connection()
            .on_host("http-intake.logs.datadoghq.eu")
            .times(2),
    )
    .unwrap();
    send_logs(&relay, "t", 2, "d").await;
    support::eventually_within(
        "delivered after dropped connections",
        Duration::from_secs(20),
        || items(&dog, "Demo EU1", Endpoint::Logs) == 6,
    )
    .await;
    // 429 with Retry-After: 2 s (above retry_max): the wait honours it, capped at retry_max.
    let relay2_dir = tempfile::tempdir().unwrap();
    let relay2 = Relay::start(
        &dog,
        relay2_dir.path(),
        "[delivery]\nbatch_max_age = \"20ms\"\nretry_initial = \"20ms\"\nretry_max = \"5s\"\n",
    )
    .await
    .unwrap();
    support::connect(&relay2, &dog, "u", "us3.datadoghq.com", "Demo US3").await;
    dog.inject_fault(
        Fault::rate_limited(Duration::from_secs(2))
            .on_host("http-intake.logs.us3.datadoghq.com")
            .times(1),
    )
    .unwrap();
    let started = Instant::now();
    send_logs(&relay2, "u", 1, "rl").await;
    support::eventually_within("delivered after the 429", Duration::from_secs(20), || {
        items(&dog, "Demo US3", Endpoint::Logs) == 1
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "retried after {:?}, before Retry-After",
        started.elapsed()
    );
    let metrics = support::get_text(relay.url("/metrics")).await;
    assert!(
        metrics.contains("ddrelay_retries_total{kind=\"logs\",reason=\"retryable\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_goes_to_the_dead_letter_area_and_413_splits_the_payload() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    support::connect(&relay, &dog, "t", "datadoghq.com", "Demo US1").await;
    dog.inject_fault(
        Fault::status(400)
            .on_host("http-intake.logs.datadoghq.com")
            .times(1)
            .with_body(r#"{"errors":["bad payload"]}"#),
    )
    .unwrap();
    send_logs(&relay, "t", 3, "refused").await;
    support::eventually_within("dead-lettered", Duration::from_secs(20), || {
        relay.shared().pipeline.tenant("t").dead_lettered_items == 3
    })
    .await;
    send_logs(&relay, "t", 2, "fine").await;
    support::eventually_within("later data delivered", Duration::from_secs(20), || {
        items(&dog, "Demo US1", Endpoint::Logs) == 2
    })
    .await;
    assert_eq!(
        dog.requests("http-intake.logs.datadoghq.com", 400),
        1,
        "a 400 is never retried"
    );
    let (entry, items_v) = first_dead_letter(&relay, "t").await;
    assert_eq!(
        (entry["status"].as_u64(), entry["items"].as_u64()),
        (Some(400), Some(3)),
        "{entry}"
    );
    assert!(
        entry["answer"].as_str().unwrap().contains("bad payload"),
        "{entry}"
    );
    assert!(
        items_v["items"][0].as_str().unwrap().contains("refused-0"),
        "{items_v}"
    );
    assert_eq!(
        tenant_json(&relay, "t").await["delivery"]["dead_lettered_items"],
        3
    );

    // An unexpected 413 splits the payload in halves; everything arrives.
    dog.inject_fault(Fault::status(413).on_host("api.datadoghq.com").times(1))
        .unwrap();
    send_series(&relay, "t", 40).await;
    support::eventually_within("split payload delivered", Duration::from_secs(20), || {
        items(&dog, "Demo US1", Endpoint::SeriesV2) == 40
    })
    .await;
    assert!(dog.requests("api.datadoghq.com", 202) >= 2);
}

/// A logs request that fills half a payload is stored as the payload it
/// will be sent as (`pipeline::record`): sent as stored, one request for
/// the whole record; refused or split, it falls back to its items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_logs_request_is_sent_as_stored_and_falls_back_to_its_items() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    support::connect(&relay, &dog, "t", "datadoghq.com", "Demo US1").await;
    let org = dog.org("Demo US1").unwrap().id;
    let host = "http-intake.logs.datadoghq.com";

    // As stored: one intake request for 500 logs, in order, intact.
    send_logs(&relay, "t", 500, "whole").await;
    support::eventually_within("stored payload delivered", Duration::from_secs(20), || {
        items(&dog, "Demo US1", Endpoint::Logs) == 500
    })
    .await;
    assert_eq!(dog.requests(host, 202), 1, "one request for the record");
    let received = dog.received(&org, Endpoint::Logs);
    for (i, log) in received.iter().enumerate() {
        assert_eq!(log["message"], format!("whole-{i}"), "{log}");
    }

    // An unexpected 413: the items are rebuilt and split in halves.
    dog.inject_fault(Fault::status(413).on_host(host).times(1))
        .unwrap();
    send_logs(&relay, "t", 500, "split").await;
    support::eventually_within("split payload delivered", Duration::from_secs(20), || {
        items(&dog, "Demo US1", Endpoint::Logs) == 1000
    })
    .await;
    assert_eq!(dog.requests(host, 413), 1);
    assert_eq!(dog.requests(host, 202), 3, "two halves after the 413");
    let received = dog.received(&org, Endpoint::Logs);
    let mut split: Vec<&str> = received[500..]
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    split.sort_by_key(|m| m[6..].parse::<u32>().unwrap());
    let want: Vec<String> = (0..500).map(|i| format!("split-{i}")).collect();
    assert_eq!(split, want);

    // A 400: the items, rebuilt, go to the dead-letter area.
    dog.inject_fault(
        Fault::status(400)
            .on_host(host)
            .times(1)
            .with_body(r#"{"errors":["bad payload"]}"#),
    )
    .unwrap();
    send_logs(&relay, "t", 500, "refused").await;
    support::eventually_within("dead-lettered", Duration::from_secs(20), || {
        relay.shared().pipeline.tenant("t").dead_lettered_items == 500
    })
    .await;
    let (entry, items_v) = first_dead_letter(&relay, "t").await;
    assert_eq!(
        (entry["status"].as_u64(), entry["items"].as_u64()),
        (Some(400), Some(500)),
        "{entry}"
    );
    let first: serde_json::Value =
        serde_json::from_str(items_v["items"][0].as_str().unwrap()).unwrap();
    assert_eq!(first["message"], "refused-0", "{items_v}");
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

/// A stream holding half a payload's worth of items is sent at once, not
/// when `delivery.batch_max_age` passes, however few bytes the queue
/// stores for them (a ready logs record, LZ4 series).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_payload_of_items_is_sent_without_waiting_for_the_batch_age() {
    let dog = dog().await;
    let (relay, _dir) = Setup::default().batch_max_age(ms(60_000)).start(&dog).await;
    support::connect(&relay, &dog, "t", "datadoghq.com", "Demo US1").await;
    send_logs(&relay, "t", 500, "now").await;
    // Well before the 60 s batch age.
    support::eventually_within("sent before the batch age", Duration::from_secs(30), || {
        items(&dog, "Demo US1", Endpoint::Logs) == 500
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tenant_request_rate_limit_is_enforced() {
    let dog = dog().await;
    let (relay, _dir) = fast().tenant_requests_per_second(20.0).start(&dog).await;
    support::connect(&relay, &dog, "t", "datadoghq.com", "Demo US1").await;
    let started = Instant::now();
    for i in 0..50 {
        support::accepted_as(
            &relay,
            "t",
            Endpoint::Events,
            Encoding::Identity,
            json!({ "title": format!("e{i}"), "text": "t" }).to_string(),
        )
        .await;
    }
    support::eventually_within("events delivered", Duration::from_secs(20), || {
        items(&dog, "Demo US1", Endpoint::Events) == 50
    })
    .await;
    // 20/s with a burst of 20: 50 requests need at least 1.5 s.
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_past_datadogs_window_are_aged_out_and_counted() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    support::connect(&relay, &dog, "t", "datadoghq.eu", "Demo EU1").await;
    let org = dog.org("Demo EU1").unwrap().id;
    // Hold the tenant (its key dies and creation answers 409) so the check waits.
    dog.rotate_key(&org).unwrap();
    // A check 9 min 57 s old: inside the 10-minute window at ingest...
    let check = json!([{ "check": "old", "host_name": "h", "status": 0, "tags": [], "timestamp": now() - 597 }, { "check": "old2", "host_name": "h", "status": 0, "tags": [] }]);
    support::accepted(&relay, "t", Endpoint::CheckRun, check.to_string()).await;
    support::eventually_within("held", Duration::from_secs(20), || {
        relay
            .shared()
            .tenants
            .get("t")
            .is_some_and(|e| e.state() == ddrelay::store::TenantState::ReauthRequired)
    })
    .await;
    // ...and past it by the time the customer reconnects.
    tokio::time::sleep(Duration::from_secs(4)).await;
    dog.revoke_key(&org).unwrap();
    support::connect(&relay, &dog, "t", "datadoghq.eu", "Demo EU1").await;
    support::eventually_within("the fresh check delivered", Duration::from_secs(20), || {
        items(&dog, "Demo EU1", Endpoint::CheckRun) == 1
    })
    .await;
    support::eventually_within(
        "the old one counted as aged out",
        Duration::from_secs(20),
        || relay.shared().pipeline.tenant("t").aged_out_items == 1,
    )
    .await;
    let received = dog.received(&org, Endpoint::CheckRun);
    assert_eq!(received[0]["check"], "old2", "{received:?}");
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
    let t = tenant_json(&relay, "t").await;
    assert_eq!(t["delivery"]["aged_out_items"], 1, "{t}");
}

/// Sends `n` log requests for each tenant at a steady pace; returns how long
/// after the last send every item had arrived.
async fn phase(
    relay: &Relay,
    dog: &FakeDog,
    tenants: &[(&str, &str)],
    n: usize,
    tag: &str,
) -> Duration {
    let before: Vec<u64> = tenants
        .iter()
        .map(|(_, org)| items(dog, org, Endpoint::Logs))
        .collect();
    for i in 0..n {
        for (t, _) in tenants {
            send_logs(relay, t, 10, &format!("{tag}-{i}")).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last_send = Instant::now();
    support::eventually_within("phase delivered", Duration::from_secs(30), || {
        tenants
            .iter()
            .zip(&before)
            .all(|((_, org), b)| items(dog, org, Endpoint::Logs) >= b + (n as u64) * 10)
    })
    .await;
    last_send.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_outage_does_not_slow_the_others() {
    let dog = dog().await;
    let (relay, _dir) = Setup::default()
        .batch_max_age(ms(20))
        .retry(ms(20), ms(200))
        .max_concurrency(4)
        .tenant_concurrency(2)
        .start(&dog)
        .await;
    for (t, org, site) in [
        ("bad", "Demo EU1", "datadoghq.eu"),
        ("good1", "Demo US1", "datadoghq.com"),
        ("good2", "Demo AP1", "ap1.datadoghq.com"),
    ] {
        support::connect(&relay, &dog, t, site, org).await;
    }
    let good = [("good1", "Demo US1"), ("good2", "Demo AP1")];
    let baseline = phase(&relay, &dog, &good, 40, "base").await;
    // EU1 answers 503 (slowly) to everything; the bad tenant keeps sending.
    dog.inject_fault(
        Fault::status(503)
            .on_host("http-intake.logs.datadoghq.eu")
            .with_delay(Duration::from_millis(200)),
    )
    .unwrap();
    let flood = async {
        for i in 0..40 {
            send_logs(&relay, "bad", 50, &format!("flood{i}")).await;
        }
    };
    let (during, ()) = tokio::join!(phase(&relay, &dog, &good, 40, "during"), flood);
    // Generous for a shared CI machine, yet far below what a shared retry
    // budget would cost (the failing site answers slowly, for minutes).
    assert!(
        during <= baseline * 2 + Duration::from_secs(1),
        "good tenants slowed: {during:?} vs {baseline:?}"
    );
    let bad = tenant_json(&relay, "bad").await;
    assert_eq!(
        bad["queued_items"], 2000,
        "the failing tenant's data is held, not lost: {bad}"
    );
    // The outage ends: the backlog drains.
    dog.clear_faults();
    support::eventually_within("backlog drained", Duration::from_secs(30), || {
        items(&dog, "Demo EU1", Endpoint::Logs) == 2000
    })
    .await;
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datadog_outage_under_steady_load_loses_nothing_and_drains_faster_than_it_built() {
    let dog = dog().await;
    let (relay, _dir) = Setup::default()
        .batch_max_age(ms(20))
        .retry(ms(50), ms(500))
        .max_concurrency(8)
        .start(&dog)
        .await;
    let tenants = [
        ("o1", "Demo US1", "datadoghq.com"),
        ("o2", "Demo EU1", "datadoghq.eu"),
        ("o3", "Demo AP1", "ap1.datadoghq.com"),
        ("o4", "Demo US5", "us5.datadoghq.com"),
    ];
    for (t, org, site) in tenants {
        support::connect(&relay, &dog, t, site, org).await;
    }
    // Every Datadog host drops every connection: Datadog is unreachable.
    let outage = dog.inject_fault(Fault::drop_connection()).unwrap();
    // Text the queue cannot compress (no message in a body repeats another),
    // so what is queued is what was sent.
    let big = support::noise(7, 500 * 2000);
    let rss_before = rss_bytes();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut sent_bytes = 0usize;
    // Steady load for the whole outage: 160 MB of logs, a volume rather than
    // a time, so that the relay's fixed overhead (allocator arenas, buffers)
    // stays small beside it on a slow machine too.
    let body = json!(
        (0..500)
            .map(|i| json!({ "message": &big[i * 2000..(i + 1) * 2000] }))
            .collect::<Vec<_>>()
    )
    .to_string();
    while sent_bytes < 160 << 20 {
        for (t, _, _) in tenants {
            support::accepted(&relay, t, Endpoint::Logs, body.as_bytes()).await;
            sent += 500;
            sent_bytes += body.len();
        }
    }
    let built = started.elapsed();
    let queued = relay.shared().queue.stats();
    assert_eq!(queued.items, sent, "everything accepted is held on disk");
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    assert!(
        rss_growth < queued.bytes / 2,
        "memory grew {rss_growth} bytes while {} bytes queued: the backlog must live on disk",
        queued.bytes
    );
    for (_, org, _) in tenants {
        assert_eq!(items(&dog, org, Endpoint::Logs), 0);
    }
    // Datadog is back: the backlog drains faster than it built up.
    dog.clear_faults();
    let _ = outage;
    let recovery = Instant::now();
    support::eventually_within("backlog drained", Duration::from_secs(120), || {
        relay.shared().queue.stats().items == 0
    })
    .await;
    let drained = recovery.elapsed();
    let total: u64 = tenants
        .iter()
        .map(|(_, org, _)| items(&dog, org, Endpoint::Logs))
        .sum();
    assert!(total >= sent, "{total} of {sent} delivered");
    assert!(
        drained < built,
        "drained in {drained:?}, built up in {built:?}"
    );
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

/// `delivery.max_inflight_bytes` at its minimum (one full payload) while
/// Datadog answers slowly: takes wait for the budget instead of piling up in
/// memory (one record larger than the usual reservation included), and
/// every tenant's data is still delivered, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smallest_inflight_budget_still_delivers_every_tenant_exactly() {
    let dog = dog().await;
    let (relay, _dir) = Setup::default()
        .batch_max_age(ms(20))
        .max_concurrency(16)
        .max_inflight_bytes(8 << 20)
        .start(&dog)
        .await;
    let tenants = [
        ("b1", "Demo US1", "datadoghq.com"),
        ("b2", "Demo EU1", "datadoghq.eu"),
        ("b3", "Demo AP1", "ap1.datadoghq.com"),
        ("b4", "Demo US5", "us5.datadoghq.com"),
    ];
    for (t, org, site) in tenants {
        support::connect(&relay, &dog, t, site, org).await;
    }
    dog.inject_fault(Fault::delay(Duration::from_millis(150)).on_endpoint(Endpoint::Logs))
        .unwrap();
    // About 1.4 MB of logs per request, several requests per tenant: more
    // than the budget holds at once.
    let big = "x".repeat(1400);
    let sends = tenants.iter().map(|(t, _, _)| {
        let (relay, big) = (&relay, &big);
        async move {
            for r in 0..3 {
                let body = json!(
                    (0..1000)
                        .map(|i| json!({ "message": format!("{t}-{r}-{i} {big}") }))
                        .collect::<Vec<_>>()
                );
                support::accepted(relay, t, Endpoint::Logs, body.to_string()).await;
            }
        }
    });
    futures_util::future::join_all(sends).await;
    // One record larger than a whole payload (1,000 logs of 6.4 KB, about
    // 6.4 MB): its take must reserve its real size, not the usual 5 MB.
    let wide = "y".repeat(6400);
    let huge = json!(
        (0..1000)
            .map(|i| json!({ "message": format!("b1-huge-{i} {wide}") }))
            .collect::<Vec<_>>()
    );
    support::accepted(&relay, "b1", Endpoint::Logs, huge.to_string()).await;
    let expected = |t: &str| if t == "b1" { 4000 } else { 3000 };
    support::eventually_within("every tenant delivered", Duration::from_secs(60), || {
        tenants
            .iter()
            .all(|(t, org, _)| items(&dog, org, Endpoint::Logs) >= expected(t))
    })
    .await;
    for (t, org, _) in tenants {
        assert_eq!(items(&dog, org, Endpoint::Logs), expected(t), "{t}");
        // The ack follows Datadog's answer by a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = tenant_json(&relay, t).await;
            if v["queued_items"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{t}: still queued: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_data_is_stored_compressed_and_delivered_exactly_as_sent() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    support::connect(&relay, &dog, "t", "datadoghq.eu", "Demo EU1").await;
    // The logs intake is down, so what is accepted stays queued.
    dog.inject_fault(
        Fault::status(503)
            .on_host("http-intake.logs.datadoghq.eu")
            .for_duration(Duration::from_secs(600)),
    )
    .unwrap();
    let messages: Vec<String> = (0..400)
        .map(|i| {
            format!(
                "GET /api/v1/orders/{i} 200 served by api-{} in {} ms",
                i % 4,
                i % 97
            )
        })
        .collect();
    let body =
        json!(messages
        .iter()
        .map(|m| json!({ "message": m, "service": "shop", "ddtags": "env:prod,team:payments" }))
        .collect::<Vec<_>>())
        .to_string();
    let (s, v) = relay
        .send("t", Endpoint::Logs, body.as_bytes(), Encoding::Identity)
        .await
        .unwrap();
    assert_eq!(s, 202, "{v}");
    // Stored LZ4-compressed (queue.compression defaults to lz4): the
    // tenant's queued bytes, as the admin API reports them, are a fraction
    // of what was sent.
    let t = tenant_json(&relay, "t").await;
    let queued = t["queued_bytes"].as_u64().unwrap();
    assert_eq!(t["queued_items"], 400, "{t}");
    assert!(
        queued > 0 && queued * 3 < body.len() as u64,
        "{queued} bytes queued for a {}-byte body",
        body.len()
    );
    // Datadog is back: every log arrives as it was sent.
    dog.clear_faults();
    support::eventually_within("the logs delivered", Duration::from_secs(30), || {
        items(&dog, "Demo EU1", Endpoint::Logs) == 400
    })
    .await;
    let org = dog.org("Demo EU1").unwrap().id;
    let mut got: Vec<String> = dog
        .received(&org, Endpoint::Logs)
        .iter()
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .collect();
    got.sort();
    let mut want = messages.clone();
    want.sort();
    assert_eq!(got, want);
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

/// Two sending slots (`max_concurrency = 2`); one tenant throttled to one
/// request every 2 s with a backlog of events (each its own request), one
/// tenant whose site never answers: a third tenant's data still goes out at
/// once. Before, the throttled tenant held a slot while it waited for its
/// rate limit and the hung site held the other, so the third tenant waited
/// for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_tenant_and_a_hung_site_leave_room_for_the_others() {
    let dog = dog().await;
    let (relay, _dir) = relay(
        &dog,
        "[delivery]\nbatch_max_age = \"20ms\"\nmax_concurrency = 2\ntenant_concurrency = 4\n\
         request_timeout = \"120s\"\n[limits]\ntenant_requests_per_second = 0.5\n",
    )
    .await;
    for (t, site, org) in [
        ("throttled", "datadoghq.com", "Demo US1"),
        ("hung", "datadoghq.eu", "Demo EU1"),
        ("other", "ap1.datadoghq.com", "Demo AP1"),
    ] {
        support::connect(&relay, &dog, t, site, org).await;
    }
    // The hung site: every intake answer is 10 minutes away.
    for host in ["http-intake.logs.datadoghq.eu", "api.datadoghq.eu"] {
        dog.inject_fault(Fault::delay(Duration::from_secs(600)).on_host(host))
            .unwrap();
    }
    for i in 0..20 {
        let body = json!({ "title": format!("e{i}"), "text": "t" }).to_string();
        support::accepted_as(
            &relay,
            "throttled",
            Endpoint::Events,
            Encoding::Identity,
            body.as_bytes(),
        )
        .await;
    }
    send_logs(&relay, "hung", 5, "hung").await;
    send_series(&relay, "hung", 5).await;
    support::eventually_within(
        "the throttled tenant to be sending",
        Duration::from_secs(20),
        || items(&dog, "Demo US1", Endpoint::Events) >= 1,
    )
    .await;

    send_logs(&relay, "other", 5, "other").await;
    support::eventually_within("the other tenant's logs", Duration::from_secs(20), || {
        items(&dog, "Demo AP1", Endpoint::Logs) == 5
    })
    .await;
    assert!(
        items(&dog, "Demo US1", Endpoint::Events) < 20,
        "the throttled tenant still has a backlog"
    );
}

/// Data held for a tenant that is not connected is aged out (and counted)
/// once it passes Datadog's acceptance window, while it is held, instead
/// of filling the queue until a reconnect. Before, age-out ran only when a
/// record was about to be sent, which a held tenant's never is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_data_past_the_window_is_aged_out_while_held() {
    let dog = dog().await;
    let (relay, _dir) = fast().start(&dog).await;
    support::connect(&relay, &dog, "t", "datadoghq.eu", "Demo EU1").await;
    assert!(dog.revoke_grants("Demo EU1").unwrap() >= 1);
    assert!(
        relay
            .shared()
            .credentials
            .access_token("t", true)
            .await
            .is_err()
    );
    assert_eq!(tenant_json(&relay, "t").await["state"], "reauth_required");
    let generation = relay.shared().tenants.get("t").unwrap().generation();
    let two_hours_ago = ddrelay::clock::now_ms() - 2 * 3600 * 1000;
    let body = json!({ "series": [{ "metric": "m", "points": [{ "timestamp": 1, "value": 1 }] }] })
        .to_string();
    for (created_ms, items) in [(two_hours_ago, 3), (ddrelay::clock::now_ms(), 2)] {
        relay
            .shared()
            .queue
            .append(ddrelay::queue::NewRecord {
                tenant: "t",
                generation,
                stream: Endpoint::SeriesV2.code(),
                items,
                created_ms,
                oldest_ms: created_ms,
                newest_ms: created_ms,
                payload: body.as_bytes(),
            })
            .await
            .unwrap();
    }
    support::eventually_within(
        "the stale held data to age out",
        Duration::from_secs(20),
        || relay.shared().queue.tenant_stats("t").items == 2,
    )
    .await;
    let v = tenant_json(&relay, "t").await;
    assert_eq!(v["delivery"]["aged_out_items"], 3, "{v}");
    assert_eq!(v["queued_items"], 2, "recent held data stays: {v}");
}

/// One tenant with a backlog has several payloads in flight (within its
/// cap), not one: with Datadog answering each request 10 s late, a backlog
/// of 200 events (64 per take) has a request out from several takes within
/// those 10 s. Before, one (tenant, kind) stream sent one payload at a
/// time, so one large tenant was capped by one round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_a_backlog_has_several_payloads_in_flight() {
    let dog = dog().await;
    let (relay, _dir) = fast().tenant_concurrency(4).start(&dog).await;
    support::connect(&relay, &dog, "big", "datadoghq.com", "Demo US1").await;
    // Hold the tenant back while its backlog builds.
    dog.inject_fault(Fault::status(503).on_path("/api/v1/events"))
        .unwrap();
    for i in 0..200 {
        let body = json!({ "title": format!("e{i}"), "text": "t" }).to_string();
        support::accepted_as(
            &relay,
            "big",
            Endpoint::Events,
            Encoding::Identity,
            body.as_bytes(),
        )
        .await;
    }
    dog.clear_faults();
    dog.inject_fault(Fault::late_answer(Duration::from_secs(10)).on_path("/api/v1/events"))
        .unwrap();
    let started = Instant::now();
    support::eventually_within(
        "several events in flight at once",
        Duration::from_secs(30),
        || items(&dog, "Demo US1", Endpoint::Events) >= 2,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the second event went out only after the first answer: {:?}",
        started.elapsed()
    );
}
