//! The intakes: encodings, keys, limits, required fields, timestamp windows,
//! success bodies, and counting mode.

use ddrelay::codec::compress;
use ddrelay::dev::fakedog::ViolationKind;
use ddrelay::site::{Encoding, Endpoint};

use super::*;

fn encode(token: &str, body: &[u8]) -> Vec<u8> {
    let e = Encoding::from_header(token).unwrap();
    compress(e, 3, body)
}

#[tokio::test]
async fn every_intake_accepts_its_encodings_with_datadogs_bodies() {
    let w = world().await;
    let key = w.api_key(&w.eu).await;
    let now = w.fd.now_unix();
    let api = "api.datadoghq.eu";
    struct Case {
        endpoint: Endpoint,
        host: &'static str,
        body: Vec<u8>,
        encodings: &'static [&'static str],
        per_request: u64,
    }
    let case = |endpoint, host, body, encodings, per_request| Case {
        endpoint,
        host,
        body,
        encodings,
        per_request,
    };
    let logs_host = "http-intake.logs.datadoghq.eu";
    let cases = vec![
        case(
            Endpoint::SeriesV2,
            api,
            series_v2(now, 3),
            &["", "gzip", "deflate", "zstd1", "zstd"],
            3,
        ),
        case(
            Endpoint::SeriesV1,
            api,
            series_v1(now, 2),
            &["", "gzip", "deflate"],
            2,
        ),
        case(
            Endpoint::Logs,
            logs_host,
            logs(now, 4),
            &["identity", "gzip", "deflate"],
            4,
        ),
        case(
            Endpoint::Events,
            api,
            event(now),
            &["", "gzip", "deflate"],
            1,
        ),
        case(
            Endpoint::CheckRun,
            api,
            checks(now, 2),
            &["", "gzip", "deflate"],
            2,
        ),
    ];
    for Case {
        endpoint,
        host,
        body,
        encodings,
        per_request,
    } in cases
    {
        for token in encodings {
            let (data, header) = if token.is_empty() {
                (body.clone(), None)
            } else {
                (encode(token, &body), Some(*token))
            };
            let (s, resp) = w
                .post(host, endpoint.path(), Some(&key), header, data)
                .await;
            assert_eq!(s, StatusCode::ACCEPTED, "{endpoint} {token}: {resp}");
            match endpoint {
                Endpoint::SeriesV2 => assert_eq!(resp, json!({"errors": []})),
                Endpoint::Logs => assert_eq!(resp, json!({})),
                Endpoint::Events => {
                    assert_eq!(resp["status"], "ok");
                    assert!(resp["event"]["id"].as_u64().unwrap() > 0);
                    assert_eq!(resp["event"]["id_str"], resp["event"]["id"].to_string());
                    assert_eq!(resp["event"]["title"], "Deploy");
                }
                _ => assert_eq!(resp, json!({"status": "ok"})),
            }
        }
        let expected = per_request * encodings.len() as u64;
        assert_eq!(w.fd.item_count(&w.eu.id, endpoint), expected, "{endpoint}");
        assert_eq!(w.fd.received(&w.eu.id, endpoint).len() as u64, expected);
        assert_eq!(w.fd.host_item_count(host, endpoint), expected);
    }
    let series = w.fd.received(&w.eu.id, Endpoint::SeriesV2);
    assert_eq!(series[0]["metric"], "app.m0");
    assert_eq!(
        w.fd.received(&w.eu.id, Endpoint::Logs)[1]["message"],
        "line 1"
    );
    assert!(w.fd.violations().is_empty(), "{:?}", w.fd.violations());
    assert_eq!(w.fd.item_count(&w.us1.id, Endpoint::SeriesV2), 0);
}

#[tokio::test]
async fn keys_must_be_live_and_of_that_site() {
    let w = world().await;
    let eu_key = w.fd.issue_key(&w.eu.id, CLIENT).unwrap();
    let now = w.fd.now_unix();
    // An EU key at US1: 403 and a violation.
    let (s, body) = w.one_series("api.datadoghq.com", &eu_key, now).await;
    assert_eq!(
        (s, body),
        (StatusCode::FORBIDDEN, json!({"errors": ["Forbidden"]}))
    );
    let v = w.fd.violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind, ViolationKind::WrongSite);
    assert_eq!(v[0].path, "/api/v2/series");
    // Unknown key: 403, no violation. Missing key: 403, and 401 for logs.
    let (s, _) = w
        .post(
            "api.datadoghq.eu",
            "/api/v1/check_run",
            Some("nope"),
            None,
            checks(now, 1),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = w
        .post("api.datadoghq.eu", "/api/v1/events", None, None, event(now))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = w
        .post(
            "http-intake.logs.datadoghq.eu",
            "/api/v2/logs",
            None,
            None,
            logs(now, 1),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errors"][0]["status"], "401");
    assert!(body["errors"][0]["detail"].is_string());
    let (s, body) = w
        .post(
            "http-intake.logs.datadoghq.eu",
            "/api/v2/logs",
            Some("nope"),
            None,
            logs(now, 1),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(body["errors"][0]["title"], "Forbidden");
    // A revoked key stops working.
    w.fd.revoke_key(&w.eu.id).unwrap();
    let (s, _) = w.one_series("api.datadoghq.eu", &eu_key, now).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(w.fd.violations().len(), 1);
    assert_eq!(w.fd.item_count(&w.eu.id, Endpoint::SeriesV2), 0);
}

#[tokio::test]
async fn over_limit_requests_get_413_and_are_violations() {
    let w = world().await;
    let key = w.fd.issue_key(&w.us1.id, CLIENT).unwrap();
    let now = w.fd.now_unix();
    let api = "api.datadoghq.com";
    // Over 512000 bytes on the wire for v2 series (plain JSON).
    let big = series_v2(now, 4000);
    assert!(big.len() > 512_000);
    let (s, body) = w.post(api, "/api/v2/series", Some(&key), None, big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["errors"][0].as_str().unwrap().contains("512000"));
    // Small on the wire, over 5 MiB once decompressed.
    let padded = format!(
        r#"{{"series":[{{"metric":"m","points":[{{"timestamp":{now},"value":1}}],"tags":["{}"]}}]}}"#,
        "x".repeat(5_300_000)
    );
    let bomb = encode("gzip", padded.as_bytes());
    assert!(bomb.len() < 512_000);
    let (s, _) = w
        .post(api, "/api/v2/series", Some(&key), Some("gzip"), bomb)
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // 1001 log entries.
    let (s, body) = w
        .post(
            "http-intake.logs.datadoghq.com",
            "/api/v2/logs",
            Some(&key),
            None,
            logs(now, 1001),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["errors"][0]["status"], "413");
    // 101 service checks.
    let (s, _) = w
        .post(api, "/api/v1/check_run", Some(&key), None, checks(now, 101))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let v = w.fd.violations();
    assert_eq!(v.len(), 4);
    assert!(
        v.iter().all(|v| v.kind == ViolationKind::OverLimit),
        "{v:?}"
    );
    assert_eq!(w.fd.item_count(&w.us1.id, Endpoint::SeriesV2), 0);
    assert_eq!(w.fd.item_count(&w.us1.id, Endpoint::Logs), 0);
    // A log over 1 MB is accepted (Datadog truncates it) but still a violation.
    let huge = json!([{"message": "y".repeat(1_100_000)}])
        .to_string()
        .into_bytes();
    let (s, _) = w
        .post(
            "http-intake.logs.datadoghq.com",
            "/api/v2/logs",
            Some(&key),
            Some("gzip"),
            encode("gzip", &huge),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(w.fd.item_count(&w.us1.id, Endpoint::Logs), 1);
    assert_eq!(w.fd.violations().len(), 5);
}

#[tokio::test]
async fn malformed_bodies_and_missing_fields_get_400() {
    let w = world().await;
    let key = w.fd.issue_key(&w.us1.id, CLIENT).unwrap();
    let now = w.fd.now_unix();
    let api = "api.datadoghq.com";
    let cases: Vec<(&str, String)> = vec![
        (
            "/api/v2/series",
            r#"{"series":[{"points":[{"timestamp":1,"value":1}]}]}"#.into(),
        ),
        ("/api/v2/series", r#"{"metrics":[]}"#.into()),
        (
            "/api/v2/series",
            format!(r#"{{"series":[{{"metric":"m","points":[{{"timestamp":{now}}}]}}]}}"#),
        ),
        (
            "/api/v1/series",
            format!(r#"{{"series":[{{"metric":"m","points":[[{now}]]}}]}}"#),
        ),
        ("/api/v1/events", r#"{"title":"no text"}"#.into()),
        (
            "/api/v1/events",
            format!(r#"{{"title":"t","text":"{}"}}"#, "z".repeat(4001)),
        ),
        (
            "/api/v1/events",
            r#"{"title":"t","text":"x","priority":"urgent"}"#.into(),
        ),
        (
            "/api/v1/check_run",
            r#"[{"check":"c","host_name":"h","status":0}]"#.into(),
        ),
        (
            "/api/v1/check_run",
            r#"[{"check":"c","host_name":"h","status":5,"tags":[]}]"#.into(),
        ),
        ("/api/v2/series", "{not json".into()),
    ];
    for (path, body) in &cases {
        let (s, resp) = w
            .post(api, path, Some(&key), None, body.clone().into_bytes())
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}");
        assert!(resp["errors"][0].is_string(), "{resp}");
    }
    let (s, resp) = w
        .post(
            "http-intake.logs.datadoghq.com",
            "/api/v2/logs",
            Some(&key),
            None,
            b"[1,2]".to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(resp["errors"][0]["status"], "400");
    assert_eq!(resp["errors"][0]["title"], "Bad Request");
    // Corrupt gzip and an unknown encoding.
    let (s, _) = w
        .post(
            api,
            "/api/v2/series",
            Some(&key),
            Some("gzip"),
            b"nope".to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = w
        .post(
            api,
            "/api/v2/series",
            Some(&key),
            Some("br"),
            series_v2(now, 1),
        )
        .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let v = w.fd.violations();
    assert_eq!(v.len(), cases.len() + 3);
    // The 4001-character event text is over a documented limit.
    assert_eq!(
        v.iter()
            .filter(|v| v.kind == ViolationKind::OverLimit)
            .count(),
        1
    );
    assert_eq!(w.fd.item_count(&w.us1.id, Endpoint::SeriesV2), 0);
}

#[tokio::test]
async fn items_outside_the_timestamp_window_are_dropped_and_recorded() {
    let w = world().await;
    let key = w.fd.issue_key(&w.us1.id, CLIENT).unwrap();
    let now = w.fd.now_unix();
    let api = "api.datadoghq.com";
    let old = now - 2 * 3600;
    let body = format!(
        r#"{{"series":[{{"metric":"fresh","points":[{{"timestamp":{now},"value":1}}]}},{{"metric":"stale","points":[{{"timestamp":{old},"value":1}}]}},{{"metric":"future","points":[{{"timestamp":{},"value":1}}]}}]}}"#,
        now + 3600
    );
    let (s, resp) = w
        .post(api, "/api/v2/series", Some(&key), None, body.into_bytes())
        .await;
    // Datadog answers 202 and silently drops out-of-window points.
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(resp["errors"].as_array().unwrap().len(), 2);
    assert_eq!(w.fd.item_count(&w.us1.id, Endpoint::SeriesV2), 1);
    assert_eq!(
        w.fd.received(&w.us1.id, Endpoint::SeriesV2)[0]["metric"],
        "fresh"
    );
    // A service check 11 minutes old, an event 19 hours old.
    let check =
        json!([{"check": "c", "host_name": "h", "status": 0, "tags": [], "timestamp": now - 660}]);
    let (s, resp) = w
        .post(
            api,
            "/api/v1/check_run",
            Some(&key),
            None,
            check.to_string().into_bytes(),
        )
        .await;
    assert_eq!((s, resp), (StatusCode::ACCEPTED, json!({"status": "ok"})));
    let ev = json!({"title": "t", "text": "x", "date_happened": now - 19 * 3600});
    let (s, _) = w
        .post(
            api,
            "/api/v1/events",
            Some(&key),
            None,
            ev.to_string().into_bytes(),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(w.fd.item_count(&w.us1.id, Endpoint::CheckRun), 0);
    assert_eq!(w.fd.item_count(&w.us1.id, Endpoint::Events), 0);
    let v = w.fd.violations();
    assert_eq!(v.len(), 4);
    assert!(v.iter().all(|v| v.kind == ViolationKind::TimestampWindow));
    // fakedog's clock moves the window: "now" two hours later makes `now` stale.
    w.fd.advance(std::time::Duration::from_secs(2 * 3600));
    let (s, _) = w
        .post(api, "/api/v2/series", Some(&key), None, series_v2(now, 1))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(w.fd.item_count(&w.us1.id, Endpoint::SeriesV2), 1);
}

#[tokio::test]
async fn an_undocumented_encoding_is_accepted_and_recorded() {
    let w = world().await;
    let key = w.fd.issue_key(&w.us1.id, CLIENT).unwrap();
    let now = w.fd.now_unix();
    let (s, _) = w
        .post(
            "http-intake.logs.datadoghq.com",
            "/api/v2/logs",
            Some(&key),
            Some("zstd"),
            encode("zstd", &logs(now, 2)),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(w.fd.item_count(&w.us1.id, Endpoint::Logs), 2);
    let v = w.fd.violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind, ViolationKind::Encoding);
}

#[tokio::test]
async fn counting_mode_counts_without_keeping_and_still_enforces() {
    let w = world_with(true, true).await;
    assert!(w.fd.is_counting());
    let key = w.fd.issue_key(&w.eu.id, CLIENT).unwrap();
    let now = w.fd.now_unix();
    for _ in 0..3 {
        let (s, _) = w
            .post(
                "api.datadoghq.eu",
                "/api/v2/series",
                Some(&key),
                Some("zstd1"),
                encode("zstd1", &series_v2(now, 50)),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    let (s, _) = w
        .post(
            "http-intake.logs.datadoghq.eu",
            "/api/v2/logs",
            Some(&key),
            Some("gzip"),
            encode("gzip", &logs(now, 7)),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(w.fd.item_count(&w.eu.id, Endpoint::SeriesV2), 150);
    assert_eq!(w.fd.item_count(&w.eu.id, Endpoint::Logs), 7);
    assert!(w.fd.received(&w.eu.id, Endpoint::SeriesV2).is_empty());
    // Limits, fields and keys are still enforced.
    let (s, _) = w
        .post(
            "http-intake.logs.datadoghq.eu",
            "/api/v2/logs",
            Some(&key),
            None,
            logs(now, 1001),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _) = w
        .post(
            "api.datadoghq.eu",
            "/api/v2/series",
            Some(&key),
            None,
            br#"{"series":[{}]}"#.to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = w.one_series("api.datadoghq.com", &key, now).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(w.fd.violations().len(), 3);
    let r = plain()
        .get(format!(
            "{}/fakeintake/payloads?endpoint=/api/v2/series",
            w.fd.control_url()
        ))
        .send()
        .await
        .unwrap();
    let (_, body) = json_of(r).await;
    assert_eq!(body["payloads"].as_array().unwrap().len(), 0);
}
