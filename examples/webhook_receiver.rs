//! A partner endpoint for ddrelay's lifecycle webhooks: verifies each
//! delivery's signature, drops duplicates, prints the events.
//!
//! The relay `POST`s one JSON object per tenant state change
//! (`tenant.connected`, `tenant.reauth_required`, `tenant.disconnected`)
//! with `DD-Relay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">`, keyed with the relay's `[webhooks] secret`. Delivery is
//! at-least-once and in order per tenant, so a receiver:
//! 1. recomputes the HMAC over the raw body as received and compares in
//!    constant time (401 if it differs: not from your relay);
//! 2. refuses a `t` more than five minutes from now (a replayed request);
//! 3. answers 2xx only once the event is safely handled (here: printed);
//!    anything else, or no answer, and the relay retries with backoff;
//! 4. handles each `id` once (the relay sends an event again when it did
//!    not see your 2xx).
//!
//! A `tenant.reauth_required` event is where your UI shows "reconnect
//! Datadog" to that customer (`reason_code` says why: `grant_revoked`,
//! `key_conflict`, `key_refused`, `refresh_failed`, `site_not_allowed`).
//!
//! ```sh
//! WEBHOOK_SECRET=... cargo run --example webhook_receiver -- --listen 127.0.0.1:9000
//! # relay: [webhooks] url = "http://127.0.0.1:9000/hooks/ddrelay", secret = the same
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clap::Parser;
use hmac::{KeyInit as _, Mac as _};
use subtle::ConstantTimeEq as _;

/// Deliveries whose `t` is further than this from now are refused.
const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, Parser)]
struct Args {
    /// The relay's `[webhooks] secret`.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// Where this endpoint listens (`[webhooks] url` points here).
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
}

struct Endpoint {
    secret: String,
    /// Event ids handled so far (keep them in your database in production).
    seen: Mutex<HashSet<String>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "webhook receiver on http://{}/hooks/ddrelay",
        listener.local_addr()?
    );
    let state = Arc::new(Endpoint {
        secret: args.secret,
        seen: Mutex::new(HashSet::new()),
    });
    let app = Router::new()
        .route("/hooks/ddrelay", post(receive))
        .with_state(state);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn receive(State(ep): State<Arc<Endpoint>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers
        .get("DD-Relay-Signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Err(why) = verify(&ep.secret, signature, &body, unix_now()) {
        eprintln!("refused a delivery: {why}");
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let id = event["id"].as_str().unwrap_or_default().to_string();
    let first = ep.seen.lock().map(|mut s| s.insert(id)).unwrap_or(false);
    if first {
        // Handle it (update the customer's integration status) before
        // answering 2xx; here it is printed.
        println!("{event}");
    }
    StatusCode::NO_CONTENT
}

/// Checks `t=<seconds>,v1=<hex>` against the body and the clock.
fn verify(secret: &str, header: &str, body: &[u8], now: i64) -> Result<(), &'static str> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", x)) => t = Some(x),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err("no DD-Relay-Signature header with t= and v1=");
    };
    let sent: i64 = t.parse().map_err(|_| "t is not a number")?;
    if (now - sent).abs() > TOLERANCE_SECS {
        return Err("t is more than five minutes from now");
    }
    let mut mac = hmac::Hmac::<sha2_hmac::Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| "unusable secret")?;
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if bool::from(expected.as_bytes().ct_eq(v1.as_bytes())) {
        Ok(())
    } else {
        Err("the signature does not match")
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
