//! Sends one request of each data kind to a relay for one tenant, the way
//! you would send it to Datadog: same paths, same bodies, gzip-compressed.
//! The relay answers `202` once the data is durably queued and forwards it
//! to that tenant's own Datadog site with the tenant's own API key.
//!
//! ```sh
//! cargo run --example send_data -- --relay http://127.0.0.1:8126 --tenant demo-customer
//! ```
//!
//! The tenant goes in `DD-Relay-Tenant`. Clients that can only set an API
//! key can put the tenant id in `DD-API-KEY` instead; the relay never needs
//! (and never sees) a real Datadog key from you.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// The relay's api_listen address.
    #[arg(long, env = "RELAY_URL", default_value = "http://127.0.0.1:8126")]
    relay: String,
    /// The tenant (your customer's account id, as connected).
    #[arg(long, env = "RELAY_TENANT", default_value = "demo-customer")]
    tenant: String,
}

fn gzip(body: &serde_json::Value) -> anyhow::Result<Vec<u8>> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(body.to_string().as_bytes())?;
    Ok(e.finish()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let tags = json!(["env:demo", "service:checkout"]);

    let requests = [
        // Metrics v2: type 1 = count, 3 = gauge.
        (
            "/api/v2/series",
            json!({ "series": [
                { "metric": "checkout.orders", "type": 1, "points": [{ "timestamp": now, "value": 3 }], "tags": tags },
                { "metric": "checkout.latency", "type": 3, "unit": "second",
                  "points": [{ "timestamp": now, "value": 0.21 }], "tags": tags }
            ]}),
        ),
        // Logs: an array of entries.
        (
            "/api/v2/logs",
            json!([{ "message": "order 1234 paid", "service": "checkout",
                     "ddsource": "partner-app", "ddtags": "env:demo", "status": "info" }]),
        ),
        // One event.
        (
            "/api/v1/events",
            json!({ "title": "Deployed checkout v42", "text": "Rolled out to all regions",
                    "alert_type": "info", "tags": tags }),
        ),
        // Service checks: status 0 OK, 1 warning, 2 critical, 3 unknown.
        (
            "/api/v1/check_run",
            json!([{ "check": "checkout.can_connect", "host_name": "checkout-1",
                     "status": 0, "timestamp": now, "tags": tags }]),
        ),
    ];

    let http = reqwest::Client::new();
    for (path, body) in requests {
        let resp = http
            .post(format!("{}{path}", args.relay))
            .header("DD-Relay-Tenant", &args.tenant)
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .body(gzip(&body)?)
            .send()
            .await?;
        let status = resp.status();
        println!("{path:<18} {status} {}", resp.text().await?);
        // 202: queued. 409: the tenant is not connected. 429/503: back off
        // for Retry-After seconds and send again.
        anyhow::ensure!(status.is_success(), "{path} was refused");
    }
    Ok(())
}
