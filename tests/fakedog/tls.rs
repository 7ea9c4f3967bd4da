//! One HTTPS listener, every host of every site, a certificate that covers
//! them all (custom subdomains through wildcards) and nothing else.

use super::*;

#[tokio::test]
async fn every_host_of_every_site_is_served_with_a_valid_certificate() {
    let w = world().await;
    for s in SITES.iter() {
        let custom = format!("bigcorp-{}.{}", s.name.to_ascii_lowercase(), s.domain);
        let client = https_client(&w.fd, &[custom.as_str()]);
        // API host: validate without a key is Datadog's 403.
        let r = client
            .get(format!("https://api.{}/api/v1/validate", s.domain))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{}", s.domain);
        // Logs host: a missing key is 401 there.
        let r = client
            .post(format!("https://http-intake.logs.{}/api/v2/logs", s.domain))
            .body("[]")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{}", s.domain);
        // Web hosts (own and custom): authorize without a client is an error page.
        for web in [s.web_host.to_string(), custom.clone()] {
            let r = client
                .get(format!("https://{web}/oauth2/v1/authorize"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{web}");
            assert!(
                r.text().await.unwrap().contains("Missing client_id"),
                "{web}"
            );
        }
    }
}

#[tokio::test]
async fn a_name_outside_the_certificate_is_rejected() {
    let w = world().await;
    // Two labels under a site domain, and a non-Datadog name, both pinned
    // to fakedog: the TLS handshake must fail the name check.
    let client = https_client(&w.fd, &["a.b.datadoghq.com", "api.example.com"]);
    for url in [
        "https://a.b.datadoghq.com/api/v1/validate",
        "https://api.example.com/api/v1/validate",
    ] {
        let err = client.get(url).send().await.unwrap_err();
        let text = format!("{:?}", err).to_lowercase();
        assert!(
            text.contains("certificate") || text.contains("notvalidforname"),
            "{url}: {text}"
        );
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_rejected() {
    let w = world().await;
    let other = ddrelay::dev::tls::Authority::generate("someone else").unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(other.ca_pem().as_bytes()).unwrap()])
        .resolve("api.datadoghq.com", w.fd.tls_addr())
        .build()
        .unwrap();
    assert!(
        client
            .get("https://api.datadoghq.com/api/v1/validate")
            .send()
            .await
            .is_err()
    );
    // The CA file on disk is the one that works.
    let pem = std::fs::read_to_string(w.fd.ca_file()).unwrap();
    assert_eq!(pem, w.fd.ca_pem());
}

#[tokio::test]
async fn each_path_lives_on_its_own_kind_of_host() {
    let w = world().await;
    let key = w.fd.issue_key(&w.us1.id, CLIENT).unwrap();
    let now = w.fd.now_unix();
    // Logs on the API host, series on the logs host: 404.
    let (s, body) = w
        .post(
            "api.datadoghq.com",
            "/api/v2/logs",
            Some(&key),
            None,
            logs(now, 1),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, _) = w
        .one_series("http-intake.logs.datadoghq.com", &key, now)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The token endpoint on a web host, authorize on an API host: 404.
    let (s, _) = w.token("app.datadoghq.com", &[("grant_type", "x")]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let r = w.open_authorize("api.datadoghq.com").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(w.fd.item_count(&w.us1.id, ddrelay::site::Endpoint::Logs), 0);
    assert_eq!(w.fd.requests("api.datadoghq.com", 404), 2);
}

#[tokio::test]
async fn http1_clients_are_routed_by_the_host_header() {
    let w = world().await;
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(w.fd.ca_pem().as_bytes()).unwrap()])
        .http1_only()
        .resolve("api.datadoghq.eu", w.fd.tls_addr())
        .build()
        .unwrap();
    let key = w.fd.issue_key(&w.eu.id, CLIENT).unwrap();
    let r = client
        .get("https://api.datadoghq.eu/api/v1/validate")
        .header("DD-API-KEY", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), r#"{"valid":true}"#);
}

#[tokio::test]
async fn the_helper_client_and_resolve_map_cover_every_site() {
    let w = world().await;
    let map = w.fd.resolve_map();
    for s in SITES.iter() {
        for h in s.all_hosts() {
            assert_eq!(map.get(&h), Some(&w.fd.tls_addr()), "{h}");
        }
    }
    let client = w.fd.client_builder().unwrap().build().unwrap();
    let key = w.fd.issue_key(&w.us5.id, CLIENT).unwrap();
    let r = client
        .get("https://api.us5.datadoghq.com/api/v1/validate")
        .header("DD-API-KEY", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
