//! Opening an incident in a connected customer's Datadog org through
//! ddrelay's pull-side proxy, as a partner's product would when it detects
//! an outage that hits that customer. The program never sees the customer's
//! OAuth token or Datadog site: ddrelay adds the token and sends the request
//! to `https://api.<customer's site>/api/v2/incidents`.
//!
//! ```sh
//! cargo run --example create_incident -- \
//!     --relay http://127.0.0.1:8126 --token "$RELAY_ADMIN_TOKEN" --tenant acme \
//!     --title "Checkout errors for acme" --severity SEV-2
//! ```
//!
//! `--token` is `[proxy] token`, or the admin token when that is unset
//! (`RELAY_PROXY_TOKEN`, else `RELAY_ADMIN_TOKEN`). The integration's OAuth
//! client needs the `incident_write` scope; when the customer's grant lacks
//! it, ddrelay's answer names the scope and this program prints it.
//! The body is Datadog's `IncidentCreateRequest` (docs/datadog.md
//! "Incidents").

mod proxy;

use anyhow::Context as _;
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Create an incident in a customer's Datadog org through ddrelay")]
struct Args {
    /// ddrelay's partner-facing address (`[server] api_listen`).
    #[arg(long, env = "RELAY_URL", default_value = "http://127.0.0.1:8126")]
    relay: String,
    /// The proxy token (`[proxy] token`), or the admin token; default:
    /// `RELAY_PROXY_TOKEN`, else `RELAY_ADMIN_TOKEN`.
    #[arg(long, env = "RELAY_PROXY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The customer (tenant id in ddrelay).
    #[arg(long, env = "RELAY_TENANT")]
    tenant: String,
    /// What happened, as the incident's title.
    #[arg(long, default_value = "Degraded service reported by our integration")]
    title: String,
    /// Datadog's severity: UNKNOWN, SEV-0 … SEV-5.
    #[arg(long, default_value = "UNKNOWN")]
    severity: String,
    /// Whether customers were impacted; the text is the impact's scope.
    #[arg(long)]
    customer_impact: Option<String>,
}

/// Datadog's create request: `data.type` "incidents", `title` and
/// `customer_impacted` required, `customer_impact_scope` when impacted.
fn request(args: &Args) -> Value {
    let mut attributes = json!({
        "title": args.title,
        "customer_impacted": args.customer_impact.is_some(),
        "fields": {"severity": {"type": "dropdown", "value": args.severity}},
    });
    if let Some(scope) = &args.customer_impact {
        attributes["customer_impact_scope"] = json!(scope);
    }
    json!({"data": {"type": "incidents", "attributes": attributes}})
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = match &args.token {
        Some(t) => t.clone(),
        None => std::env::var("RELAY_ADMIN_TOKEN")
            .context("give --token, RELAY_PROXY_TOKEN or RELAY_ADMIN_TOKEN")?,
    };
    let url = format!(
        "{}/v1/tenants/{}/datadog/api/v2/incidents",
        args.relay.trim_end_matches('/'),
        args.tenant
    );
    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .header("Accept", "application/json")
        .header("User-Agent", "create-incident-example/1.0")
        .json(&request(&args))
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    let body = proxy::answer(resp).await?;
    let data = &body["data"];
    let id = data["id"]
        .as_str()
        .context("no incident id in the answer")?;
    let attributes = &data["attributes"];
    println!("created an incident in {}'s Datadog org", args.tenant);
    println!("  id:        {id}");
    println!("  public_id: {}", attributes["public_id"]);
    println!(
        "  title:     {}",
        attributes["title"].as_str().unwrap_or("?")
    );
    println!(
        "  state:     {}, severity {}",
        attributes["state"].as_str().unwrap_or("?"),
        attributes["severity"].as_str().unwrap_or("?")
    );
    Ok(())
}
