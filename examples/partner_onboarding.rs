//! A minimal partner web app that onboards a customer through ddrelay.
//!
//! The flow, as Datadog runs it:
//! 1. The customer clicks Install on your Datadog tile; Datadog sends the
//!    browser to your onboarding URL, `GET /onboarding?site=https://app.datadoghq.eu`.
//! 2. You sign the customer in (here: a fixed demo account) and ask the relay
//!    for an authorize URL for that account:
//!    `POST {relay}/v1/tenants/{tenant}/connect {"site": "<site as given>"}`.
//! 3. You redirect the browser there; the customer clicks Authorize.
//! 4. Datadog redirects to the relay's `/oauth/callback`, which finishes the
//!    connection and says "You may now close this tab."
//! 5. `GET /status` shows the tenant's state from `GET {relay}/v1/tenants/{tenant}`.
//!
//! Run it next to a relay (see examples/README.md):
//!
//! ```sh
//! cargo run --example partner_onboarding -- --relay http://127.0.0.1:8126 --admin-token "$ADMIN_TOKEN"
//! # then open http://127.0.0.1:3000/onboarding?site=https://app.datadoghq.eu
//! ```
//!
//! The admin token stays on your server: the browser only ever sees the
//! authorize URL.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use clap::Parser;
use serde::Deserialize;

#[derive(Debug, Clone, Parser)]
struct Args {
    /// The relay's api_listen address.
    #[arg(long, env = "RELAY_URL", default_value = "http://127.0.0.1:8126")]
    relay: String,
    /// The relay's server.admin_token.
    #[arg(long, env = "RELAY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Where this app listens.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// The signed-in customer's account id, used as the relay's tenant id.
    #[arg(long, default_value = "demo-customer")]
    tenant: String,
}

struct App {
    args: Args,
    http: reqwest::Client,
}

/// Any failure becomes a 502 page (the relay could not be asked).
struct AppError(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for AppError {
    fn from(e: E) -> AppError {
        AppError(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = format!(
            "<h1>Something went wrong</h1><p>{}</p>",
            esc(&format!("{:#}", self.0))
        );
        (StatusCode::BAD_GATEWAY, Html(body)).into_response()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "partner app on http://{} (relay {})",
        listener.local_addr()?,
        args.relay
    );
    let app = Arc::new(App {
        args,
        http: reqwest::Client::new(),
    });
    let router = Router::new()
        .route("/", get(home))
        .route("/onboarding", get(onboarding))
        .route("/status", get(status))
        .with_state(app);
    axum::serve(listener, router).await?;
    Ok(())
}

async fn home(State(app): State<Arc<App>>) -> Html<String> {
    Html(format!(
        "<h1>Partner app</h1><p>Signed in as <b>{}</b>.</p>\
         <p><a href=\"/onboarding\">Connect Datadog</a> (US1 region picker) · \
         <a href=\"/onboarding?site=https://app.datadoghq.eu\">Connect Datadog EU</a> · \
         <a href=\"/status\">Connection status</a></p>",
        esc(&app.args.tenant)
    ))
}

#[derive(Deserialize)]
struct Onboarding {
    /// Exactly as Datadog passed it, e.g. `https://app.datadoghq.eu`.
    site: Option<String>,
}

/// Datadog's onboarding URL: sign in, ask the relay, redirect to Datadog.
async fn onboarding(
    State(app): State<Arc<App>>,
    Query(q): Query<Onboarding>,
) -> Result<Redirect, AppError> {
    // A real app signs the user in here (or sends them to its login page
    // first, keeping `site`); this one has a single demo account.
    let tenant = &app.args.tenant;
    let body = match &q.site {
        Some(site) => serde_json::json!({ "site": site }),
        None => serde_json::json!({}),
    };
    let resp = app
        .http
        .post(format!("{}/v1/tenants/{tenant}/connect", app.args.relay))
        .bearer_auth(&app.args.admin_token)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let answer: serde_json::Value = resp.json().await?;
    let Some(url) = answer["authorize_url"].as_str() else {
        return Err(anyhow::anyhow!("the relay answered {status}: {answer}").into());
    };
    Ok(Redirect::to(url))
}

/// The tenant's connection state, from the relay's admin API.
async fn status(State(app): State<Arc<App>>) -> Result<Html<String>, AppError> {
    let tenant = &app.args.tenant;
    let resp = app
        .http
        .get(format!("{}/v1/tenants/{tenant}", app.args.relay))
        .bearer_auth(&app.args.admin_token)
        .send()
        .await?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(Html(format!(
            "<h1>Not connected</h1><p>{} has not started connecting. <a href=\"/onboarding\">Connect Datadog</a></p>",
            esc(tenant)
        )));
    }
    let t: serde_json::Value = resp.error_for_status()?.json().await?;
    let field = |k: &str| esc(t[k].as_str().unwrap_or("-")).to_string();
    Ok(Html(format!(
        "<h1>Datadog connection</h1><dl>\
         <dt>tenant</dt><dd id=\"tenant\">{}</dd><dt>state</dt><dd id=\"state\">{}</dd>\
         <dt>site</dt><dd>{}</dd><dt>organization</dt><dd>{}</dd><dt>reason</dt><dd>{}</dd>\
         <dt>queued items</dt><dd>{}</dd></dl>",
        field("tenant"),
        field("state"),
        field("site"),
        field("org_name"),
        field("reason"),
        t["queued_items"].as_u64().unwrap_or(0),
    )))
}

/// HTML-escapes text (org names come from Datadog, errors from anywhere).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
