//! The control listener (JSON) and fakeintake's inspection routes, and the
//! `ddrelay fakedog` command.

use std::io::BufRead as _;

use base64::Engine as _;
use ddrelay::site::Endpoint;

use super::*;

async fn get(w: &World, path: &str) -> (StatusCode, Value) {
    json_of(
        plain()
            .get(format!("{}{path}", w.fd.control_url()))
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// POSTs JSON the way `curl -d` does (with a form content type).
async fn post(w: &World, path: &str, body: Value) -> (StatusCode, Value) {
    json_of(
        plain()
            .post(format!("{}{path}", w.fd.control_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn inspection_reports_items_requests_keys_tokens_and_violations() {
    let w = world().await;
    let key = w.api_key(&w.eu).await;
    let now = w.fd.now_unix();
    w.post(
        "api.datadoghq.eu",
        "/api/v2/series",
        Some(&key),
        Some("gzip"),
        ddrelay::codec::compress(ddrelay::site::Encoding::Gzip, 1, &series_v2(now, 2)),
    )
    .await;
    w.post(
        "http-intake.logs.datadoghq.eu",
        "/api/v2/logs",
        Some(&key),
        None,
        logs(now, 3),
    )
    .await;
    w.one_series("api.datadoghq.com", &key, now).await;

    let (s, counts) = get(&w, "/fakedog/counts").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(counts["orgs"][&w.eu.id]["series"], 2);
    assert_eq!(counts["orgs"][&w.eu.id]["logs"], 3);
    assert_eq!(counts["hosts"]["http-intake.logs.datadoghq.eu"]["logs"], 3);

    let (_, items) = get(&w, &format!("/fakedog/received?org={}&kind=logs", w.eu.id)).await;
    assert_eq!(items["items"][2]["message"], "line 2");
    let (s, _) = get(&w, "/fakedog/received?org=nobody&kind=logs").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(
        &w,
        &format!("/fakedog/received?org={}&kind=metrics", w.eu.id),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (_, requests) = get(&w, "/fakedog/requests").await;
    assert_eq!(requests["api.datadoghq.eu"]["202"], 1);
    assert_eq!(requests["api.datadoghq.eu"]["201"], 1);
    assert_eq!(requests["api.datadoghq.com"]["403"], 1);

    let (_, keys) = get(&w, "/fakedog/keys").await;
    assert_eq!(keys["created"][&w.eu.id], 1);
    assert_eq!(keys["keys"][0]["last4"], &key[28..]);
    assert_eq!(keys["keys"][0]["live"], true);

    let (_, calls) = get(&w, "/fakedog/token_calls").await;
    assert_eq!(calls["token"]["api.datadoghq.eu"], 1);

    let (_, violations) = get(&w, "/fakedog/violations").await;
    assert_eq!(violations[0]["kind"], "wrong_site");

    let (_, summary) = get(&w, "/fakedog/summary").await;
    assert_eq!(summary["orgs"].as_array().unwrap().len(), 3);
    assert_eq!(summary["clients"][0]["id"], CLIENT);
    assert!(summary["clients"][0].get("secret").is_none());
    assert_eq!(summary["violations"].as_array().unwrap().len(), 1);

    let (s, _) = post(&w, "/fakedog/reset", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert!(w.fd.violations().is_empty());
    assert_eq!(w.fd.item_count(&w.eu.id, Endpoint::Logs), 0);
    // Keys survive a reset.
    assert_eq!(w.validate("api.datadoghq.eu", &key).await.0, StatusCode::OK);
}

#[tokio::test]
async fn fakeintake_payload_routes() {
    let w = world().await;
    let key = w.fd.issue_key(&w.us1.id, CLIENT).unwrap();
    let now = w.fd.now_unix();
    let body = series_v2(now, 2);
    let gz = ddrelay::codec::compress(ddrelay::site::Encoding::Gzip, 1, &body);
    w.post(
        "api.datadoghq.com",
        "/api/v2/series",
        Some(&key),
        Some("gzip"),
        gz.clone(),
    )
    .await;
    w.post(
        "api.datadoghq.com",
        "/api/v2/series",
        Some(&key),
        None,
        body.clone(),
    )
    .await;

    let (s, raw) = get(&w, "/fakeintake/payloads?endpoint=/api/v2/series").await;
    assert_eq!(s, StatusCode::OK);
    let p = raw["payloads"].as_array().unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[0]["encoding"], "gzip");
    assert_eq!(p[0]["api_key"], key);
    assert_eq!(p[0]["content_type"], "application/json");
    let data = base64::engine::general_purpose::STANDARD
        .decode(p[0]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(data, gz);

    let (_, decoded) = get(
        &w,
        "/fakeintake/payloads?endpoint=/api/v2/series&format=json",
    )
    .await;
    assert_eq!(
        decoded["payloads"][0]["data"]["series"][1]["metric"],
        "app.m1"
    );
    assert_eq!(
        decoded["payloads"][1]["data"]["series"][0]["metric"],
        "app.m0"
    );

    let (_, stats) = get(&w, "/fakeintake/routestats").await;
    assert_eq!(stats["routes"]["/api/v2/series"]["count"], 2);

    let r = plain()
        .get(format!("{}/fakeintake/payloads", w.fd.control_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.text().await.unwrap(), "missing endpoint query parameter");
    let (s, _) = get(&w, "/fakeintake/payloads?endpoint=/api/v9/nothing").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let r = plain()
        .get(format!("{}/fakeintake/flushPayloads", w.fd.control_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, raw) = get(&w, "/fakeintake/payloads?endpoint=/api/v2/series").await;
    assert!(raw["payloads"].as_array().unwrap().is_empty());
    assert_eq!(w.fd.item_count(&w.us1.id, Endpoint::SeriesV2), 0);
    assert_eq!(get(&w, "/fakeintake/health").await.0, StatusCode::OK);
}

#[tokio::test]
async fn control_drives_orgs_clients_keys_grants_and_time() {
    let w = world_with(false, false).await;
    // Create an org and a client; sign in; turn auto-consent on.
    let (s, org) = post(
        &w,
        "/fakedog/orgs",
        json!({"name": "Tokyo Co", "site": "AP1"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{org}");
    assert_eq!(org["site"], "ap1.datadoghq.com");
    let org_id = org["id"].as_str().unwrap().to_string();
    let (s, _) = post(
        &w,
        "/fakedog/orgs",
        json!({"name": "x", "site": "example.com"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = post(
        &w,
        "/fakedog/clients",
        json!({"id": "jp-app", "secret": "jp-secret", "name": "JP", "redirect_uris": [REDIRECT]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        post(&w, "/fakedog/login", json!({"org": "Tokyo Co"}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        post(&w, "/fakedog/login", json!({"org": "nobody"})).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(&w, "/fakedog/consent", json!({"auto": true})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        post(&w, "/fakedog/token_ttl", json!({"seconds": 120}))
            .await
            .0,
        StatusCode::OK
    );

    let challenge = challenge_of(VERIFIER);
    let r = w
        .http
        .get(authorize_url(
            "ap1.datadoghq.com",
            &[
                ("client_id", "jp-app"),
                ("redirect_uri", REDIRECT),
                ("response_type", "code"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        ))
        .send()
        .await
        .unwrap();
    let (_, p) = location(&r);
    assert_eq!(p["dd_oid"], org_id);
    assert!(!p.contains_key("state"));
    let (_, rotated) = post(&w, "/fakedog/clients/jp-app/rotate_secret", json!({})).await;
    let secret = rotated["client_secret"].as_str().unwrap().to_string();
    let (s, t) = w
        .token(
            "api.ap1.datadoghq.com",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "jp-app"),
                ("client_secret", &secret),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("code", &p["code"]),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["expires_in"], 120);
    let access = access_token(&t);
    let (_, created) = w.create_key("api.ap1.datadoghq.com", access).await;
    let key = created["data"]["attributes"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        created["data"]["attributes"]["name"],
        "JP OAuth Client API Key"
    );

    // Rotate the key out of band, then revoke everything.
    let (s, _) = post(&w, &format!("/fakedog/orgs/{org_id}/rotate_key"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!w.fd.key_is_live(&key));
    let (_, n) = post(&w, &format!("/fakedog/orgs/{org_id}/revoke_key"), json!({})).await;
    assert_eq!(n["affected"], 1);
    let (_, n) = post(
        &w,
        &format!("/fakedog/orgs/{org_id}/revoke_grants"),
        json!({}),
    )
    .await;
    assert_eq!(n["affected"], 1);
    assert_eq!(
        w.create_key("api.ap1.datadoghq.com", access).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, _) = post(&w, "/fakedog/orgs/nobody/revoke_key", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = post(&w, &format!("/fakedog/orgs/{org_id}/explode"), json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let before = w.fd.now_unix();
    let (_, clock) = post(&w, "/fakedog/clock/advance", json!({"seconds": 3600})).await;
    assert!(clock["clock_unix"].as_i64().unwrap() >= before + 3600);
}

#[tokio::test]
async fn the_cli_prints_a_ready_to_paste_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ddrelay"))
        .args([
            "fakedog",
            "--listen",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--ca-out",
            ca.to_str().unwrap(),
            "--org",
            "name=Acme EU,site=datadoghq.eu",
            "--client",
            "id=acme,secret=s3cret,redirect=https://relay.acme.example/oauth/callback",
            "--auto-consent",
            "--token-ttl",
            "90s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Keep the pipe open until the child has exited.
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        banner.push_str(&line);
        if line.contains("/fakedog/summary") {
            break;
        }
    }
    let stop = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stop.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{banner}");
    drop(reader);

    assert!(banner.contains("[datadog.resolve]"), "{banner}");
    assert!(
        banner.contains("\"api.datadoghq.eu\" = \"127.0.0.1:"),
        "{banner}"
    );
    assert!(
        banner.contains("\"http-intake.logs.ap2.datadoghq.com\""),
        "{banner}"
    );
    assert!(banner.contains("ca_file = "), "{banner}");
    assert!(banner.contains("Acme EU"), "{banner}");
    assert!(
        banner.contains("consent: automatic; access tokens live 1m 30s"),
        "{banner}"
    );
    assert!(banner.contains("curl -si --cacert"), "{banner}");
    let pem = std::fs::read_to_string(&ca).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_ddrelay"))
        .args(["fakedog", "--org", "name=x,site=nowhere.example"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown Datadog site"));
}
