//! The Datadog HTTP client talks TLS to the real hostname while
//! `[datadog.resolve]` pins it to a local address: the right host is served,
//! a certificate for another name is rejected, the resolve port is honoured.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use ddrelay::config::DatadogConfig;
use ddrelay::datadog::{Client, Validity};
use ddrelay::dev::tls::{Authority, ServerName};
use ddrelay::secret::Secret;
use ddrelay::site::{AllowedSites, Site};

/// A TLS server with a certificate for `names`; answers `/api/v1/validate`
/// with the Host header and SNI it saw.
async fn server(ca: &Authority, names: &[&str]) -> SocketAddr {
    let config = ca
        .server_config(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route(
        "/api/v1/validate",
        get(
            |uri: axum::http::Uri,
             headers: HeaderMap,
             axum::Extension(sni): axum::Extension<ServerName>| async move {
                // HTTP/1.1 carries the host in `Host`, HTTP/2 in the `:authority` (the URI).
                let host = headers
                    .get("host")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| uri.host().map(str::to_string))
                    .unwrap_or_default();
                let key = headers
                    .get("dd-api-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let valid = key == "good-key"
                    && host == "api.datadoghq.eu"
                    && sni.0.as_deref() == Some("api.datadoghq.eu");
                if valid {
                    (axum::http::StatusCode::OK, "{\"valid\":true}")
                } else {
                    (
                        axum::http::StatusCode::FORBIDDEN,
                        "{\"errors\":[\"Forbidden\"]}",
                    )
                }
            },
        ),
    );
    tokio::spawn(ddrelay::dev::tls::serve(
        listener,
        config,
        router,
        std::future::pending(),
    ));
    addr
}

fn client(ca: &Authority, dir: &tempfile::TempDir, resolve: &[(&str, SocketAddr)]) -> Client {
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.ca_pem()).unwrap();
    let config = DatadogConfig {
        allowed_sites: AllowedSites::default(),
        ca_file: Some(ca_file),
        resolve: resolve
            .iter()
            .map(|(h, a)| (h.to_string(), *a))
            .collect::<BTreeMap<_, _>>(),
    };
    Client::new(&config).unwrap()
}

#[tokio::test]
async fn resolve_pins_the_real_hostname_to_a_local_tls_server() {
    let ca = Authority::generate("test ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = server(&ca, &["api.datadoghq.eu"]).await;
    let eu = Site::by_domain("datadoghq.eu").unwrap();
    let c = client(&ca, &dir, &[("api.datadoghq.eu", addr)]);
    // The server only says valid when Host and SNI are the real name and the
    // request arrived at its (random) port: the resolve port was honoured.
    assert_eq!(
        c.validate_key(eu, &Secret::new("good-key")).await,
        Validity::Valid
    );
    assert_eq!(
        c.validate_key(eu, &Secret::new("bad-key")).await,
        Validity::Invalid
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_rejected() {
    let ca = Authority::generate("test ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The server presents a certificate for US1's API host only.
    let addr = server(&ca, &["api.datadoghq.com"]).await;
    let eu = Site::by_domain("datadoghq.eu").unwrap();
    let c = client(&ca, &dir, &[("api.datadoghq.eu", addr)]);
    match c.validate_key(eu, &Secret::new("good-key")).await {
        Validity::Unknown(why) => assert!(
            why.to_lowercase().contains("certificate") || why.contains("NotValidForName"),
            "{why}"
        ),
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[tokio::test]
async fn an_untrusted_ca_is_rejected() {
    let ca = Authority::generate("test ca").unwrap();
    let other = Authority::generate("other ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = server(&ca, &["api.datadoghq.eu"]).await;
    let eu = Site::by_domain("datadoghq.eu").unwrap();
    let c = client(&other, &dir, &[("api.datadoghq.eu", addr)]);
    assert!(matches!(
        c.validate_key(eu, &Secret::new("good-key")).await,
        Validity::Unknown(_)
    ));
}
