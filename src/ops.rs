//! Operator commands: those that talk to a running relay through its admin
//! API (`ddrelay tenants list|show|disconnect|connect`, where `connect
//! --fakedog` walks fakedog's consent page with the [`ConsentWalk`] the
//! binary's front passes in, and `ddrelay verify`), `ddrelay healthcheck` (a probe of `/healthz` for
//! container health checks), and `ddrelay store migrate`, which works on
//! the store itself, offline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;

use crate::admin::{TenantList, TenantView};
use crate::cli::{TenantsAction, runtime, with_config};
use crate::config::Config;
use crate::store::TenantState;

/// The address to reach a listener bound to `addr` from this machine.
pub(crate) fn local_url(addr: SocketAddr) -> String {
    format!("http://{}", loopback(addr))
}

/// `addr`, with an unspecified IP (a listener on every interface) as
/// loopback: where a command on the same machine reaches it.
pub(crate) fn loopback(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Where `tenants connect --fakedog`'s walk ended: the page the browser
/// was left on.
#[derive(Debug)]
pub(crate) struct Landing {
    pub(crate) status: u16,
    pub(crate) url: String,
    pub(crate) body: String,
}

/// `tenants connect --fakedog`'s walk of an authorize URL: with the
/// relay's config, follow it through the emulator's consent page (as the
/// named organization, if any) and say where it ended. The product knows no
/// emulator: `cli.rs` passes the development tools' walk.
pub(crate) type ConsentWalk =
    for<'a> fn(
        &'a Config,
        &'a str,
        Option<&'a str>,
    ) -> futures_util::future::BoxFuture<'a, Result<Landing, String>>;

pub fn tenants(path: &Path, action: TenantsAction, walk: ConsentWalk) -> ExitCode {
    let done = with_config(path, ExitCode::FAILURE, |config| async move {
        tenants_async(&config, action, walk).await
    });
    done.map_or_else(|code| code, |()| ExitCode::SUCCESS)
}

/// Sends one admin API request; a non-2xx answer becomes its `errors` text.
async fn admin_call(
    req: reqwest::RequestBuilder,
    base: &str,
    url: &str,
) -> Result<serde_json::Value, String> {
    let resp = req.send().await.map_err(|e| {
        format!("cannot reach the relay's admin API at {base} (server.api_listen): {e}")
    })?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("unreadable answer from {url}: {e}"))?;
    if !status.is_success() {
        let msg = body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        return Err(format!("{status}: {msg}"));
    }
    Ok(body)
}

async fn tenants_async(
    config: &Config,
    action: TenantsAction,
    walk: ConsentWalk,
) -> Result<(), String> {
    let base = local_url(config.server.api_listen);
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let token = config.server.admin_token.expose();
    if let TenantsAction::Connect {
        id,
        site,
        fakedog,
        org,
    } = &action
    {
        let ask = ConnectAsk {
            http: &http,
            base: &base,
            token,
            walk,
        };
        return connect(config, ask, id, site.as_deref(), *fakedog, org.as_deref()).await;
    }
    let (method, url) = match &action {
        TenantsAction::List { .. } => (reqwest::Method::GET, format!("{base}/v1/tenants")),
        TenantsAction::Show { id } => (
            reqwest::Method::GET,
            format!("{base}/v1/tenants/{}", encode(id)),
        ),
        TenantsAction::Disconnect { id } => (
            reqwest::Method::DELETE,
            format!("{base}/v1/tenants/{}", encode(id)),
        ),
        TenantsAction::Connect { .. } => unreachable!("handled above"),
    };
    let body = admin_call(http.request(method, &url).bearer_auth(token), &base, &url).await?;
    match action {
        TenantsAction::List { json: false } => print_table(&read_as(body, &url)?),
        _ => println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        ),
    }
    Ok(())
}

/// An admin API answer read as the type the relay answers it with.
fn read_as<T: serde::de::DeserializeOwned>(
    body: serde_json::Value,
    url: &str,
) -> Result<T, String> {
    serde_json::from_value(body).map_err(|e| format!("unreadable answer from {url}: {e}"))
}

/// How to reach the relay's admin API, and how to walk a consent page.
struct ConnectAsk<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    token: &'a str,
    walk: ConsentWalk,
}

/// `tenants connect`: asks the relay for the tenant's authorize URL;
/// prints it, or with `fakedog` walks it (`ask.walk`) and reports the state.
async fn connect(
    config: &Config,
    ask: ConnectAsk<'_>,
    id: &str,
    site: Option<&str>,
    fakedog: bool,
    org: Option<&str>,
) -> Result<(), String> {
    let url = format!("{}/v1/tenants/{}/connect", ask.base, encode(id));
    let body = match site {
        Some(s) => serde_json::json!({ "site": onboarding_site(s)? }),
        None => serde_json::json!({}),
    };
    let req = ask.http.post(&url).bearer_auth(ask.token).json(&body);
    let answer = admin_call(req, ask.base, &url).await?;
    let authorize = answer["authorize_url"]
        .as_str()
        .ok_or_else(|| format!("{url} answered without an authorize_url: {answer}"))?;
    if !fakedog {
        println!(
            "open this URL in a browser signed in to the customer's Datadog org:
{authorize}"
        );
        return Ok(());
    }
    let page = (ask.walk)(config, authorize, org).await?;
    let url = format!("{}/v1/tenants/{}", ask.base, encode(id));
    let req = ask.http.get(&url).bearer_auth(ask.token);
    let t: TenantView = read_as(admin_call(req, ask.base, &url).await?, &url)?;
    let s = |v: &Option<String>| v.as_deref().unwrap_or("-").to_string();
    if t.state != TenantState::Connected {
        let text: String = page.body.chars().take(300).collect();
        return Err(format!(
            "{id} is {} after the callback ({} {}): {}",
            t.state, page.status, page.url, text
        ));
    }
    println!(
        "{id} connected: org {} ({}) on {}",
        s(&t.org_name),
        s(&t.org_id),
        s(&t.site)
    );
    Ok(())
}

/// `EU1`, `datadoghq.eu` or a URL, as the onboarding `site` parameter.
fn onboarding_site(value: &str) -> Result<String, String> {
    if value.starts_with("https://") {
        return Ok(value.to_string());
    }
    crate::site::Site::by_name_or_domain(value)
        .map(|s| format!("https://{}", s.web_host))
        .ok_or_else(|| format!("--site {value:?} is not a Datadog site name, domain or URL"))
}

fn encode(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

fn print_table(list: &TenantList) {
    let s = |v: &Option<String>| v.as_deref().unwrap_or("-").to_string();
    let rows: Vec<[String; 6]> = list
        .tenants
        .iter()
        .map(|t| {
            [
                t.tenant.clone(),
                t.state.to_string(),
                s(&t.site),
                t.queued_items.to_string(),
                t.queued_bytes.to_string(),
                s(&t.reason),
            ]
        })
        .collect();
    let header = [
        "TENANT",
        "STATE",
        "SITE",
        "QUEUED_ITEMS",
        "QUEUED_BYTES",
        "REASON",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(5) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < 5 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    c.clone()
                }
            })
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    println!("{} tenant(s)", rows.len());
}

/// Exit status of `ddrelay verify` when the checklist could not run at all.
const VERIFY_NOT_RUN: u8 = 2;

/// `ddrelay verify --config FILE TENANT`: asks the relay to run the
/// checklist (`POST /v1/tenants/{tenant}/verify`) and prints one PASS/FAIL
/// line per step. Exit 0 when all pass, 1 when one fails, 2 when it could
/// not run.
pub(crate) fn verify(path: &Path, tenant: &str, json: bool) -> ExitCode {
    let report = with_config(path, ExitCode::from(VERIFY_NOT_RUN), |config| async move {
        verify_async(&config, tenant).await
    });
    let report = match report {
        Ok(r) => r,
        Err(code) => return code,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", checklist_text(&report));
    }
    if report["passed"].as_bool() == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn verify_async(config: &Config, tenant: &str) -> Result<serde_json::Value, String> {
    let base = local_url(config.server.api_listen);
    let url = format!("{base}/v1/tenants/{}/verify", encode(tenant));
    let http = reqwest::Client::builder()
        .timeout(config.server.request_timeout + std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let body = admin_call(
        http.post(&url)
            .bearer_auth(config.server.admin_token.expose()),
        &base,
        &url,
    )
    .await?;
    Ok(body)
}

/// The checklist as text: a heading, one `PASS`/`FAIL` line per step (with
/// the detail beneath), and a closing count.
pub(crate) fn checklist_text(report: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let empty = Vec::new();
    let steps = report["steps"].as_array().unwrap_or(&empty);
    let mut out = format!(
        "verifying tenant {} (site {})\n",
        s(&report["tenant"]),
        s(&report["site"])
    );
    let width = steps
        .iter()
        .map(|st| s(&st["name"]).len())
        .max()
        .unwrap_or(0);
    let mut failed = 0;
    for st in steps {
        let ok = st["passed"].as_bool() == Some(true);
        if !ok {
            failed += 1;
        }
        out.push_str(&format!(
            "{}  {:<width$}  {}\n      {}\n",
            if ok { "PASS" } else { "FAIL" },
            s(&st["name"]),
            s(&st["title"]),
            s(&st["detail"]),
        ));
    }
    out.push_str(&format!(
        "result: {} of {} checks passed{}\n",
        steps.len() - failed,
        steps.len(),
        if failed == 0 {
            String::new()
        } else {
            format!(", {failed} failed")
        }
    ));
    out
}

/// `ddrelay healthcheck`: GET `url`, exit 0 on 200.
pub(crate) fn healthcheck(url: &str) -> ExitCode {
    let Ok(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = rt.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()
            .map_err(|e| e.to_string())?;
        let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("{url} answered {}", resp.status()))
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `ddrelay store migrate --config FILE --to URL [--force]`.
pub(crate) fn store_migrate(path: &Path, to: &str, force: bool) -> ExitCode {
    let report = with_config(path, ExitCode::FAILURE, |config| async move {
        store_migrate_async(&config, to, force).await
    });
    match report {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

async fn store_migrate_async(config: &Config, to: &str, force: bool) -> Result<String, String> {
    use crate::secret::Secret;
    use crate::store::{self, Store};

    let target_shown = store::redact_url(to);
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        return Err(format!(
            "--to {target_shown}: expected a PostgreSQL URL (postgres://user@host:5432/database)"
        ));
    }
    // A relay running on this data dir would keep changing the source after
    // the copy: its queue lock says whether one is.
    let lock_path = config.queue_dir().join("LOCK");
    if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&lock_path)
        && let Err(std::fs::TryLockError::WouldBlock) = file.try_lock()
    {
        return Err(format!(
            "a relay is running on {} (its queue is locked); stop it before migrating its store",
            config.storage.data_dir.display()
        ));
    }
    let key = &config.storage.master_key;
    let (from, source_shown, same) = match &config.storage.database_url {
        Some(url) => (
            Store::open_postgres(url, key).await,
            store::redact_url(url.expose()),
            url.expose() == to,
        ),
        None => {
            let path = config.sqlite_path();
            if !path.exists() {
                return Err(format!(
                    "no store at {} (storage.data_dir): nothing to migrate",
                    path.display()
                ));
            }
            (
                Store::open_sqlite(&path, key).await,
                format!("sqlite {}", path.display()),
                false,
            )
        }
    };
    let from = from.map_err(|e| format!("source store {source_shown}: {e}"))?;
    let target = Store::open_postgres(&Secret::new(to), key)
        .await
        .map_err(|e| format!("target store {target_shown}: {e}"))?;
    let result = store::copy::copy(&from, &target, force, crate::clock::now(), same).await;
    from.close().await;
    target.close().await;
    let r = result.map_err(|e| e.to_string())?;
    let states = r
        .by_state
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(format!(
        "copied {tenants} tenants ({states}) and {flows} pending flows from {source_shown} to {target_shown}\n\
         skipped {expired} expired flows; the target held {before} tenants before\n\
         verified: every copied row reads back identical, counts match, {secrets} sealed secrets open with the master key\n\
         next: set storage.database_url (or database_url_file) to the target and start the replicas",
        tenants = r.tenants,
        flows = r.flows,
        expired = r.expired_flows_skipped,
        before = r.target_tenants_before,
        secrets = r.secrets_verified,
    ))
}
