//! What the proxy examples share: reading the relay's answer to a proxied
//! Datadog call. Not an example of its own (Cargo builds `examples/*.rs`
//! and `examples/*/main.rs`); `create_incident` and `oncall_monitors` use
//! it with `mod proxy;`.

use anyhow::Context as _;
use serde_json::Value;

/// The JSON body of a successful answer, or an error that says who
/// answered (`DD-Relay-Origin`: Datadog itself or the relay), Datadog's
/// `errors`, and the relay's `ddrelay.explanation` when it gives one (a
/// scope the integration lacks, a revoked grant).
pub async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let origin = resp
        .headers()
        .get("dd-relay-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_string();
    let body: Value = resp.json().await.context("reading the answer")?;
    if !status.is_success() {
        let errors = body["errors"].to_string();
        match body["ddrelay"]["explanation"].as_str() {
            Some(why) => anyhow::bail!("{status} from {origin}: {errors}\n{why}"),
            None => anyhow::bail!("{status} from {origin}: {errors}"),
        }
    }
    Ok(body)
}
