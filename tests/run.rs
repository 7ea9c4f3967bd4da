//! `ddrelay run`: serves health, readiness and metrics; a taken port or an
//! unusable data dir is a clear error and a non-zero exit; SIGTERM exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, data_dir: &str, public: u16, api: u16) -> std::path::PathBuf {
    let text = format!(
        r#"
[oauth]
client_id = "client"
client_secret = "client-secret-value"
redirect_uri = "http://relay.test/oauth/callback"
[server]
public_listen = "127.0.0.1:{public}"
api_listen = "127.0.0.1:{api}"
admin_token = "admin-token-0123456789"
[storage]
data_dir = "{data_dir}"
master_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
[log]
format = "json"
"#
    );
    let p = dir.join("ddrelay.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn command(config: &Path) -> Command {
    let mut cmd = support::ddrelay_command();
    cmd.args(["run", "--config", config.to_str().unwrap()]);
    cmd
}

/// Waits until the relay logs that it started (no sleeps: reads its log).
fn wait_started(child: &mut std::process::Child) -> BufReader<std::process::ChildStderr> {
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("relay exited before starting");
        }
        if line.contains("ddrelay started") {
            return err;
        }
    }
    panic!("relay did not start");
}

fn get(url: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn serves_health_and_metrics_then_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let cfg = write_config(
        dir.path(),
        dir.path().join("data").to_str().unwrap(),
        free_port(),
        api,
    );
    let mut child = command(&cfg).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = wait_started(&mut child);
    let (s, body) = get(&format!("http://127.0.0.1:{api}/healthz"));
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["config_generation"], 1);
    assert_eq!(get(&format!("http://127.0.0.1:{api}/readyz")).0, 200);
    let (s, metrics) = get(&format!("http://127.0.0.1:{api}/metrics"));
    assert_eq!(s, 200);
    assert!(metrics.contains("ddrelay_config_generation 1"), "{metrics}");
    // The admin API needs the token.
    assert_eq!(get(&format!("http://127.0.0.1:{api}/v1/tenants")).0, 401);

    // SIGHUP reloads: the generation increments.
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = get(&format!("http://127.0.0.1:{api}/healthz"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["config_generation"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "reload did not happen");
        std::thread::yield_now();
    }

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(rest.contains("ddrelay stopped"), "{rest}");
    assert!(!rest.contains("client-secret-value") && !rest.contains("admin-token-0123456789"));
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = write_config(
        dir.path(),
        dir.path().join("data").to_str().unwrap(),
        free_port(),
        port,
    );
    let out = command(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.api_listen") && err.contains(&port.to_string()),
        "{err}"
    );
}

#[test]
fn an_unusable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let cfg = write_config(
        dir.path(),
        file.join("sub").to_str().unwrap(),
        free_port(),
        free_port(),
    );
    let out = command(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("storage.data_dir") && err.contains("not-a-dir"),
        "{err}"
    );
}
