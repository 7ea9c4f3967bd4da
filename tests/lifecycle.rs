//! Drain and reload of a real `ddrelay run` process: SIGTERM stops accepting,
//! finishes in-flight sends within `delivery.drain_timeout`, leaves the rest
//! on disk and exits 0 (a restart delivers it); SIGHUP reloads secrets,
//! limits and the log level without dropping connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::zombie_processes)] // children are waited for explicitly

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ddrelay::dev::fakedog::{FakeDog, Fault};
use ddrelay::dev::sandbox;
use ddrelay::site::Endpoint;

struct Proc {
    child: Child,
    api: String,
    public: std::net::SocketAddr,
    log: PathBuf,
}

fn spawn(config: &Path, log: PathBuf) -> Proc {
    let mut cmd = support::ddrelay_command();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let child = cmd
        .args(["run", "--config"])
        .arg(config)
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "relay did not start");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().rfind(|l| l.contains("ddrelay started")) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let starts = text
                .lines()
                .filter(|l| l.contains("ddrelay started"))
                .count();
            // A restart appends to the same log: wait for this process's line.
            if starts >= 1 && child_alive(&child) {
                return Proc {
                    api: v["api"].as_str().unwrap().into(),
                    public: v["public"].as_str().unwrap().parse().unwrap(),
                    child,
                    log,
                };
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Proc {
    /// A failing test never leaves a relay running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the relay logged after its configuration was reloaded.
fn after_reload(p: &Proc) -> String {
    let log = std::fs::read_to_string(&p.log).unwrap();
    let after = log.split("configuration reloaded").nth(1);
    after.unwrap_or_default().to_string()
}

fn child_alive(c: &Child) -> bool {
    std::path::Path::new(&format!("/proc/{}", c.id())).exists()
}

fn signal(c: &Child, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &c.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// A config with `extra` TOML in a fresh dir, and a relay started on it,
/// logging to `relay.log` there (keep the dir alive).
fn setup(dog: &FakeDog, extra: &str) -> (tempfile::TempDir, PathBuf, Proc) {
    sandbox::register_client(dog).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = ddrelay::secret::MasterKey::generate().to_base64();
    let config = dir.path().join("ddrelay.toml");
    std::fs::write(
        &config,
        sandbox::config_text(dog, &dir.path().join("data"), key.expose(), extra),
    )
    .unwrap();
    let p = spawn(&config, dir.path().join("relay.log"));
    (dir, config, p)
}

async fn connect(dog: &FakeDog, p: &Proc, tenant: &str, org: &str, site: &str, token: &str) {
    let url = support::process::authorize_url_at(&p.api, token, tenant, site).await;
    dog.login(org).unwrap();
    support::authorized(dog, p.public, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_within_its_bound_and_keeps_the_rest_on_disk() {
    let dog = support::dog().await;
    let (dir, config, mut p) = setup(
        &dog,
        "[delivery]\nbatch_max_age = \"20ms\"\ndrain_timeout = \"1s\"\n[log]\nformat = \"json\"\n",
    );
    connect(
        &dog,
        &p,
        "d",
        "Demo EU1",
        "datadoghq.eu",
        sandbox::ADMIN_TOKEN,
    )
    .await;
    let org = dog.org("Demo EU1").unwrap().id;
    // Datadog is very slow: a send will be in flight when SIGTERM arrives.
    dog.inject_fault(
        Fault::delay(Duration::from_secs(30)).on_host("http-intake.logs.datadoghq.eu"),
    )
    .unwrap();
    let http = reqwest::Client::new();
    for i in 0..5 {
        let r = http
            .post(format!("http://{}/api/v2/logs", p.api))
            .header("DD-API-KEY", "d")
            .json(&serde_json::json!([{ "message": format!("m{i}") }]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    // Wait until the relay has a request in flight to Datadog (fakedog is holding it).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = support::get_text(format!("http://{}/metrics", p.api)).await;
        let queued: f64 = m
            .lines()
            .find(|l| l.starts_with("ddrelay_queue_items "))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        if queued >= 5.0 && dog.requests("http-intake.logs.datadoghq.eu", 202) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "queue never held the items");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // let the dispatcher start the send
    let started = Instant::now();
    signal(&p.child, "-TERM");
    // `kill` returns once the signal is sent, not once the relay has handled
    // it: wait for the relay to say it is draining (or to stop listening).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ready = http.get(format!("http://{}/readyz", p.api)).send().await;
        match ready {
            Err(_) => break,
            Ok(r) if r.status() == 503 => break,
            Ok(_) => {}
        }
        assert!(Instant::now() < deadline, "SIGTERM not handled within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // From then on, nothing more is accepted.
    let refused = http
        .post(format!("http://{}/api/v2/logs", p.api))
        .header("DD-API-KEY", "d")
        .json(&serde_json::json!([{ "message": "late" }]))
        .send()
        .await;
    assert!(
        refused.is_err() || refused.unwrap().status() == 503,
        "accepted after SIGTERM"
    );
    let status = p.child.wait().unwrap();
    let took = started.elapsed();
    assert!(status.success(), "exit {status}");
    assert!(
        took < Duration::from_secs(5),
        "drain took {took:?} with drain_timeout = 1s"
    );
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(log.contains("the rest stays queued on disk"), "{log}");
    assert_eq!(dog.item_count(&org, Endpoint::Logs), 0);

    // Restart with Datadog healthy again: the queued items are delivered.
    dog.clear_faults();
    let mut p = spawn(&config, dir.path().join("relay2.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while dog.item_count(&org, Endpoint::Logs) < 5 {
        assert!(
            Instant::now() < deadline,
            "only {} of 5 delivered after restart",
            dog.item_count(&org, Endpoint::Logs)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&p.child, "-TERM");
    assert!(p.child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_secrets_limits_and_log_level_without_dropping_connections() {
    let dog = support::dog().await;
    let (_dir, config, mut p) = setup(&dog, "[log]\nformat = \"json\"\nlevel = \"info\"\n");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();

    // A steady stream of requests on keep-alive connections during the reload.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (api, stop2, ok2, failed2, http2) = (
        p.api.clone(),
        stop.clone(),
        ok.clone(),
        failed.clone(),
        http.clone(),
    );
    let load = tokio::spawn(async move {
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            match http2.get(format!("http://{api}/healthz")).send().await {
                Ok(r) if r.status() == 200 => ok2.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                _ => failed2.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            };
        }
    });
    let count = |c: &std::sync::atomic::AtomicU32| c.load(std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&ok) < 20 {
        assert!(Instant::now() < deadline, "no load before the reload");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Rotate the admin token, raise the log level, set a limit.
    let new_token = "rotated-admin-token-0123456789";
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(sandbox::ADMIN_TOKEN, new_token)
        .replace("level = \"info\"", "level = \"debug\"")
        + "\n[limits]\ntenant_requests_per_second = 7\n";
    std::fs::write(&config, text).unwrap();
    signal(&p.child, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = support::json_of(http.get(format!("http://{}/healthz", p.api))).await;
        if v["config_generation"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no reload: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Keep the stream going a while after the reload too.
    let at_reload = count(&ok);
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&ok) < at_reload + 20 {
        assert!(Instant::now() < deadline, "no load after the reload");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.await.unwrap();
    assert_eq!(
        count(&failed),
        0,
        "{} ok, {} failed across the reload",
        count(&ok),
        count(&failed)
    );

    // The secret took effect: the old admin token is refused, the new one works.
    let old = http
        .get(format!("http://{}/v1/tenants", p.api))
        .bearer_auth(sandbox::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
    let new = http
        .get(format!("http://{}/v1/tenants", p.api))
        .bearer_auth(new_token)
        .send()
        .await
        .unwrap();
    assert_eq!(new.status(), 200);
    // The log level took effect: debug lines appear after the reload.
    connect(&dog, &p, "h", "Demo US1", "datadoghq.com", new_token).await;
    assert!(
        after_reload(&p).contains("\"level\":\"DEBUG\""),
        "no debug line after the reload"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !after_reload(&p).contains("outbound rate limits updated") {
        assert!(
            Instant::now() < deadline,
            "the sender never applied the new limits"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = std::fs::read_to_string(&p.log).unwrap();
    let after = after_reload(&p);
    assert!(
        after.contains("outbound rate limits updated")
            && after.contains("\"tenant_requests_per_second\":7.0"),
        "limits not reloaded: {}",
        after
            .lines()
            .filter(|l| l.contains("limits") || l.contains("reloaded"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !log.split("configuration reloaded")
            .next()
            .unwrap()
            .contains("\"level\":\"DEBUG\""),
        "debug lines before the reload"
    );
    // A bad file keeps the running configuration.
    std::fs::write(&config, "[oauth\nbroken").unwrap();
    signal(&p.child, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&p.log)
        .unwrap()
        .contains("reload refused")
    {
        assert!(Instant::now() < deadline, "bad reload not reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v = support::json_of(http.get(format!("http://{}/healthz", p.api))).await;
    assert_eq!(v["config_generation"], 2);
    signal(&p.child, "-TERM");
    assert!(p.child.wait().unwrap().success());
}
