//! A real `ddrelay run` process, for the tests that kill, signal or restart
//! one: started on a config file whose log format is JSON, its addresses
//! read from its start line, killed when dropped (a failing test leaves no
//! relay running). And connecting a tenant through such processes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ddrelay::dev::fakedog::FakeDog;
use ddrelay::dev::sandbox;

/// A `ddrelay run` child.
pub struct RunningRelay {
    pub child: Child,
    pub api: SocketAddr,
    pub public: SocketAddr,
    pub config: PathBuf,
}

impl RunningRelay {
    /// Starts `ddrelay run --config <config>` and waits for its start line.
    pub fn start(config: &Path) -> RunningRelay {
        RunningRelay::start_with(config, |_| {})
    }

    /// As [`RunningRelay::start`]; every stderr line after the start line
    /// goes to `each_line`, on a thread that keeps the pipe drained (a full
    /// pipe would block the child).
    #[allow(clippy::zombie_processes)] // waited for in `Drop`
    pub fn start_with(
        config: &Path,
        each_line: impl FnMut(String) + Send + 'static,
    ) -> RunningRelay {
        let mut child = super::ddrelay_command()
            .args(["run", "--config"])
            .arg(config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        loop {
            line.clear();
            let read = err.read_line(&mut line).unwrap_or(0);
            if read == 0 || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("relay did not start: {line}");
            }
            if line.contains("ddrelay started") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                std::thread::spawn(move || err.lines().map_while(Result::ok).for_each(each_line));
                return RunningRelay {
                    child,
                    api: v["api"].as_str().unwrap().parse().unwrap(),
                    public: v["public"].as_str().unwrap().parse().unwrap(),
                    config: config.to_path_buf(),
                };
            }
        }
    }

    /// SIGKILL, and waits for the exit.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST /v1/tenants/{tenant}/connect` with `site` on the admin API at
/// `api`, with `token`: the authorize URL.
pub async fn authorize_url_at(
    api: impl std::fmt::Display,
    token: &str,
    tenant: &str,
    site: &str,
) -> String {
    let req = super::http()
        .post(format!("http://{api}/v1/tenants/{tenant}/connect"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "site": site }));
    let v = super::json_of(req).await;
    v["authorize_url"].as_str().unwrap().to_string()
}

/// Connects `tenant` to fakedog's org `org_id` at `site`: the connect
/// starts on the admin API at `start`, and the browser, whose `relay.test`
/// is `callback`, completes it there (`dd_oid` preselects the org, as when
/// the user starts from the integration tile, so connects can run
/// concurrently).
pub async fn connect_across(
    dog: &FakeDog,
    start: SocketAddr,
    callback: SocketAddr,
    tenant: &str,
    org_id: &str,
    site: &str,
) {
    let url = authorize_url_at(start, sandbox::ADMIN_TOKEN, tenant, site).await;
    let url = format!("{url}&dd_oid={org_id}");
    super::authorized(dog, callback, &url).await;
}
