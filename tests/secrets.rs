//! No secret anywhere the relay writes. A full scenario runs against a real
//! `ddrelay run` process (debug logs, JSON): two tenants connect, data flows,
//! one tenant's key is revoked and recovered, tokens are refreshed, the
//! checklist runs. Then every secret the run used (client secret, admin
//! token, master key, access and refresh tokens, old and new API keys, the
//! OAuth states) is searched for in the logs, `/metrics`, the admin API's
//! answers, `check-config` output and every file of the data dir.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::zombie_processes)] // the child is waited for explicitly

mod support;

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ddrelay::dev::sandbox;
use ddrelay::secret::{MasterKey, Secret};
use ddrelay::site::Endpoint;
use ddrelay::store::Store;

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out)
        } else {
            out.push(p)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_metrics_output_or_files() {
    let dog = support::dog().await;
    dog.set_token_ttl(Duration::from_secs(120)); // inside the refresh-ahead margin: every use refreshes
    sandbox::register_client(&dog).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate().to_base64();
    let data = dir.path().join("data");
    let config = dir.path().join("ddrelay.toml");
    let extra = "[delivery]\nbatch_max_age = \"20ms\"\nretry_initial = \"20ms\"\nretry_max = \"200ms\"\n[log]\nformat = \"json\"\nlevel = \"debug\"\n";
    std::fs::write(
        &config,
        sandbox::config_text(&dog, &data, key.expose(), extra),
    )
    .unwrap();

    let log_path = dir.path().join("relay.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = support::ddrelay_command()
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::from(log_file))
        .spawn()
        .unwrap();
    // The start line names the addresses.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (api, public) = loop {
        assert!(Instant::now() < deadline, "relay did not start");
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("ddrelay started")) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            break (
                v["api"].as_str().unwrap().to_string(),
                v["public"].as_str().unwrap().parse().unwrap(),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let http = reqwest::Client::new();
    let admin = |m: reqwest::Method, p: &str| {
        http.request(m, format!("http://{api}{p}"))
            .bearer_auth(sandbox::ADMIN_TOKEN)
    };
    let mut seen_text = String::new(); // everything the relay answered

    let mut states = Vec::new();
    for (tenant, org, site) in [
        ("alpha", "Demo EU1", "datadoghq.eu"),
        ("beta", "Demo US1", "datadoghq.com"),
    ] {
        let url =
            support::process::authorize_url_at(&api, sandbox::ADMIN_TOKEN, tenant, site).await;
        states.push(
            url::Url::parse(&url)
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == "state")
                .unwrap()
                .1
                .to_string(),
        );
        dog.login(org).unwrap();
        let page = support::authorized(&dog, public, &url).await;
        seen_text.push_str(&page.body);
    }
    let send = |tenant: &'static str, msg: &'static str| {
        let http = http.clone();
        let api = api.clone();
        async move {
            let r = http
                .post(format!("http://{api}/api/v2/logs"))
                .header("DD-API-KEY", tenant)
                .json(&serde_json::json!([{ "message": msg }]))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
    };
    send("alpha", "one").await;
    send("beta", "two").await;
    let alpha_org = dog.org("Demo EU1").unwrap().id;
    let beta_org = dog.org("Demo US1").unwrap().id;
    support::wait_items(&dog, &alpha_org, Endpoint::Logs, 1).await;
    support::wait_items(&dog, &beta_org, Endpoint::Logs, 1).await;

    // Key recovery: alpha's key is revoked at Datadog.
    dog.revoke_key(&alpha_org).unwrap();
    send("alpha", "three").await;
    support::wait_items(&dog, &alpha_org, Endpoint::Logs, 2).await;
    assert_eq!(dog.keys_created(&alpha_org), 2);

    // Refreshes and the checklist (which sends test items with the key).
    let mut answers = Vec::new();
    for t in ["alpha", "beta"] {
        answers.push(admin(
            reqwest::Method::POST,
            &format!("/v1/tenants/{t}/verify"),
        ));
        answers.push(admin(reqwest::Method::GET, &format!("/v1/tenants/{t}")));
    }
    answers.push(admin(reqwest::Method::GET, "/v1/tenants"));
    answers.push(admin(reqwest::Method::GET, "/"));
    answers.push(http.get(format!("http://{api}/metrics")));
    answers.push(http.get(format!("http://{api}/healthz")));
    for req in answers {
        seen_text.push_str(&req.send().await.unwrap().text().await.unwrap());
    }

    // Stop (SIGTERM: drain, exit 0).
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    // check-config output.
    let out = support::ddrelay_command()
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    seen_text.push_str(&String::from_utf8_lossy(&out.stdout));
    seen_text.push_str(&String::from_utf8_lossy(&out.stderr));

    // Every secret the run used.
    let mut secrets: Vec<(String, String)> = vec![
        ("client secret".into(), sandbox::CLIENT_SECRET.into()),
        ("admin token".into(), sandbox::ADMIN_TOKEN.into()),
        ("master key".into(), key.expose().to_string()),
    ];
    for (i, s) in states.iter().enumerate() {
        secrets.push((format!("oauth state {i}"), s.clone()));
    }
    let store = Store::open_sqlite(
        &data.join("ddrelay.db"),
        &MasterKey::from_base64(key.expose()).unwrap(),
    )
    .await
    .unwrap();
    for t in ["alpha", "beta"] {
        let c = store.credentials(t).await.unwrap();
        for (what, v) in [
            ("access token", c.access_token),
            ("refresh token", c.refresh_token),
            ("api key", c.api_key),
        ] {
            let v: Secret = v.unwrap_or_else(|| panic!("{t} has no {what}"));
            secrets.push((format!("{t} {what}"), v.expose().to_string()));
        }
    }
    store.close().await;
    // The revoked key: the first key fakedog issued for alpha's org.
    for k in dog.keys_issued(&alpha_org) {
        secrets.push(("alpha api key (any, incl. revoked)".into(), k));
    }
    assert!(secrets.len() >= 13, "{}", secrets.len());

    let mut log = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.lines().count() > 20 && log.contains("\"level\":\"DEBUG\""),
        "debug logging was on"
    );
    let mut all_files = Vec::new();
    files(&data, &mut all_files);
    assert!(
        all_files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "seg")),
        "the queue's segments are scanned: {all_files:?}"
    );
    for (what, secret) in &secrets {
        assert!(secret.len() >= 16, "{what} is too short to search for");
        assert!(
            !log.contains(secret.as_str()),
            "{what} found in the relay's log"
        );
        assert!(
            !seen_text.contains(secret.as_str()),
            "{what} found in an answer, /metrics or check-config output"
        );
        for f in &all_files {
            let bytes = std::fs::read(f).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{what} found in {}",
                f.display()
            );
        }
    }
}
