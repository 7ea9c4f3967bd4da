//! An on-call tool reading a connected customer's Datadog monitors through
//! ddrelay's pull-side proxy. It never sees the customer's OAuth token or
//! Datadog site: ddrelay adds the token and picks `api.<customer's site>`.
//!
//! ```sh
//! cargo run --example oncall_monitors -- \
//!     --relay http://127.0.0.1:8126 --token "$RELAY_PROXY_TOKEN" --tenant acme
//! # or: RELAY_URL=... RELAY_PROXY_TOKEN=... RELAY_TENANT=acme cargo run --example oncall_monitors
//! ```
//!
//! `--token` is `[proxy] token` (or the admin token when that is unset).
//! When Datadog refuses, ddrelay's `ddrelay.explanation` says why (a scope
//! the integration lacks, a revoked grant) and this tool prints it.

mod proxy;

use anyhow::Context as _;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "List a customer's Datadog monitors through ddrelay")]
struct Args {
    /// ddrelay's partner-facing address (`[server] api_listen`).
    #[arg(long, env = "RELAY_URL", default_value = "http://127.0.0.1:8126")]
    relay: String,
    /// The proxy token (`[proxy] token`), or the admin token.
    #[arg(long, env = "RELAY_PROXY_TOKEN", hide_env_values = true)]
    token: String,
    /// The customer (tenant id in ddrelay).
    #[arg(long, env = "RELAY_TENANT")]
    tenant: String,
    /// Only monitors whose name contains this text.
    #[arg(long)]
    name: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = format!(
        "{}/v1/tenants/{}/datadog/api/v1/monitor",
        args.relay.trim_end_matches('/'),
        args.tenant
    );
    let mut req = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&args.token)
        .header("Accept", "application/json")
        .header("User-Agent", "oncall-monitors-example/1.0");
    if let Some(name) = &args.name {
        req = req.query(&[("name", name)]);
    }
    let resp = req.send().await.with_context(|| format!("calling {url}"))?;
    let body = proxy::answer(resp).await?;
    let monitors = body
        .as_array()
        .context("expected a JSON array of monitors")?;
    println!("{} monitor(s) for {}:", monitors.len(), args.tenant);
    for m in monitors {
        println!(
            "  {:>10}  {:<8}  {}",
            m["id"],
            m["overall_state"].as_str().unwrap_or("?"),
            m["name"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}
