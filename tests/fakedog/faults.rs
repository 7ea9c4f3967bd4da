//! Faults: N responses of a status, rate limits with their headers, time
//! windows, dropped connections, delays, and fakeintake's overrides.

use std::time::Duration;

use base64::Engine as _;
use ddrelay::dev::fakedog::Fault;
use ddrelay::site::Endpoint;

use super::*;

#[tokio::test]
async fn the_next_n_matching_responses_fail() {
    let w = world().await;
    let key = w.fd.issue_key(&w.eu.id, CLIENT).unwrap();
    let us_key = w.fd.issue_key(&w.us1.id, CLIENT).unwrap();
    let now = w.fd.now_unix();
    w.fd.inject_fault(
        Fault::status(503)
            .times(2)
            .on_host("api.datadoghq.eu")
            .on_endpoint(Endpoint::SeriesV2),
    )
    .unwrap();
    // Another host and another path are not affected.
    let (s, _) = w.one_series("api.datadoghq.com", &us_key, now).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(w.validate("api.datadoghq.eu", &key).await.0, StatusCode::OK);
    for _ in 0..2 {
        let (s, body) = w.one_series("api.datadoghq.eu", &key, now).await;
        assert_eq!(
            (s, body),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"errors": ["Service Unavailable"]})
            )
        );
    }
    let (s, _) = w.one_series("api.datadoghq.eu", &key, now).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(w.fd.requests("api.datadoghq.eu", 503), 2);
    assert_eq!(w.fd.requests("api.datadoghq.eu", 202), 1);
    // Faulted requests are not processed: only one batch was accepted.
    assert_eq!(w.fd.item_count(&w.eu.id, Endpoint::SeriesV2), 1);
}

#[tokio::test]
async fn a_429_carries_datadogs_rate_limit_headers() {
    let w = world().await;
    let key = w.fd.issue_key(&w.us1.id, CLIENT).unwrap();
    w.fd.inject_fault(Fault::rate_limited(Duration::from_secs(7)).times(1))
        .unwrap();
    let r = w
        .http
        .get("https://api.datadoghq.com/api/v1/validate")
        .header("DD-API-KEY", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let h = r.headers();
    assert_eq!(h["x-ratelimit-reset"], "7");
    assert_eq!(h["retry-after"], "7");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert!(h.contains_key("x-ratelimit-limit") && h.contains_key("x-ratelimit-period"));
    // The relay's own header reader sees the same delay.
    assert_eq!(
        ddrelay::datadog::retry_after(h),
        Some(Duration::from_secs(7))
    );
    assert_eq!(
        w.validate("api.datadoghq.com", &key).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_fault_window_ends_on_fakedogs_clock() {
    let w = world().await;
    let key = w.fd.issue_key(&w.us5.id, CLIENT).unwrap();
    w.fd.inject_fault(
        Fault::status(500)
            .on_path("/api/v1/validate")
            .for_duration(Duration::from_secs(60)),
    )
    .unwrap();
    for _ in 0..3 {
        assert_eq!(
            w.validate("api.us5.datadoghq.com", &key).await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    w.fd.advance(Duration::from_secs(61));
    assert_eq!(
        w.validate("api.us5.datadoghq.com", &key).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_dropped_connection_is_a_transport_error() {
    let w = world().await;
    let key = w.fd.issue_key(&w.us1.id, CLIENT).unwrap();
    let http1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(w.fd.ca_pem().as_bytes()).unwrap()])
        .http1_only()
        .resolve("api.datadoghq.com", w.fd.tls_addr())
        .build()
        .unwrap();
    for client in [&w.http, &http1] {
        w.fd.inject_fault(
            Fault::drop_connection()
                .times(1)
                .on_path("/api/v1/validate"),
        )
        .unwrap();
        let err = client
            .get("https://api.datadoghq.com/api/v1/validate")
            .header("DD-API-KEY", &key)
            .send()
            .await
            .unwrap_err();
        assert!(err.status().is_none(), "{err:?}");
        let ok = client
            .get("https://api.datadoghq.com/api/v1/validate")
            .header("DD-API-KEY", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
    }
    assert_eq!(w.fd.requests("api.datadoghq.com", 0), 2);
}

#[tokio::test]
async fn a_delay_holds_the_answer_back() {
    let w = world().await;
    let key = w.fd.issue_key(&w.us1.id, CLIENT).unwrap();
    // A delay far longer than the client's timeout: the client gives up.
    w.fd.inject_fault(
        Fault::status(503)
            .with_delay(Duration::from_secs(600))
            .times(1),
    )
    .unwrap();
    let err = w
        .http
        .get("https://api.datadoghq.com/api/v1/validate")
        .header("DD-API-KEY", &key)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // A delay-only fault lets Datadog answer afterwards.
    w.fd.inject_fault(Fault::delay(Duration::from_millis(20)).times(1))
        .unwrap();
    assert_eq!(
        w.validate("api.datadoghq.com", &key).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn fakeintake_overrides_and_faults_over_the_control_listener() {
    let w = world().await;
    let key = w.fd.issue_key(&w.us1.id, CLIENT).unwrap();
    let now = w.fd.now_unix();
    let control = plain();
    let custom = base64::engine::general_purpose::STANDARD.encode(r#"{"errors":["custom"]}"#);
    let r = control
        .post(format!(
            "{}/fakeintake/configure/override",
            w.fd.control_url()
        ))
        .json(&json!({"endpoint": "/api/v2/series", "status_code": 503,
                      "content_type": "application/json", "body": custom}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for _ in 0..2 {
        let (s, body) = w.one_series("api.datadoghq.com", &key, now).await;
        assert_eq!(
            (s, body),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"errors": ["custom"]})
            )
        );
    }
    // A 2xx override restores Datadog's own answers.
    control
        .post(format!(
            "{}/fakeintake/configure/override",
            w.fd.control_url()
        ))
        .json(&json!({"endpoint": "/api/v2/series", "status_code": 200}))
        .send()
        .await
        .unwrap();
    let (s, _) = w.one_series("api.datadoghq.com", &key, now).await;
    assert_eq!(s, StatusCode::ACCEPTED);

    // fakedog's own fault API.
    let r = control
        .post(format!("{}/fakedog/faults", w.fd.control_url()))
        .json(&json!({"status": 408, "times": 1, "path": "/api/v1/events"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (s, _) = w
        .post(
            "api.datadoghq.com",
            "/api/v1/events",
            Some(&key),
            None,
            event(now),
        )
        .await;
    assert_eq!(s, StatusCode::REQUEST_TIMEOUT);
    let r = control
        .post(format!("{}/fakedog/faults", w.fd.control_url()))
        .json(&json!({"times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = control
        .post(format!("{}/fakedog/faults", w.fd.control_url()))
        .json(&json!({"status": 500, "for_secs": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, listed) = json_of(
        control
            .get(format!("{}/fakedog/faults", w.fd.control_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    control
        .delete(format!("{}/fakedog/faults", w.fd.control_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        w.validate("api.datadoghq.com", &key).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_time_requests_spend_answered_counts_a_delay() {
    // What `ddrelay bench` reads to tell a phase fakedog held up from one
    // the relay did: the time requests spent in fakedog's hands.
    let w = world().await;
    let key = w.fd.issue_key(&w.us1.id, CLIENT).unwrap();
    let now = w.fd.now_unix();
    let (s, _) = w.one_series("api.datadoghq.com", &key, now).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let before = w.fd.answering();
    assert!(before > Duration::ZERO, "an answered request counts");
    w.fd.inject_fault(
        Fault::delay(Duration::from_millis(300))
            .times(2)
            .on_endpoint(Endpoint::SeriesV2),
    )
    .unwrap();
    let (a, b) = tokio::join!(
        w.one_series("api.datadoghq.com", &key, now),
        w.one_series("api.datadoghq.com", &key, now)
    );
    assert_eq!((a.0, b.0), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    // Two requests held at once count twice.
    let held = w.fd.answering() - before;
    assert!(held >= Duration::from_millis(600), "{held:?}");
}
