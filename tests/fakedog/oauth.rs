//! The OAuth server: authorize validation, consent, the region picker,
//! token exchange, refresh rotation, revocation.

use std::time::Duration;

use ddrelay::dev::fakedog::ViolationKind;

use super::*;

fn params_with(changes: &[(&'static str, Option<&'static str>)]) -> Vec<(&'static str, String)> {
    let mut p = standard_params(&challenge_of(VERIFIER));
    for (k, v) in changes {
        p.retain(|(n, _)| n != k);
        if let Some(v) = v {
            p.push((k, v.to_string()));
        }
    }
    p
}

fn url_with(host: &str, changes: &[(&'static str, Option<&'static str>)]) -> String {
    let p = params_with(changes);
    let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    authorize_url(host, &refs)
}

#[tokio::test]
async fn authorize_shows_an_error_page_for_a_bad_client_or_redirect_uri() {
    let w = world().await;
    w.fd.login(&w.us1.id).unwrap();
    for (changes, message) in [
        (
            vec![("client_id", Some("nope"))],
            "invalid_request - Invalid client_id parameter value",
        ),
        (
            vec![(
                "redirect_uri",
                Some("https://relay.partner.example/oauth/other"),
            )],
            "invalid_request - Mismatching redirect URI",
        ),
        (
            // A prefix of the registered URI is not a match either.
            vec![(
                "redirect_uri",
                Some("https://relay.partner.example/oauth/callback/x"),
            )],
            "invalid_request - Mismatching redirect URI",
        ),
    ] {
        let r = w
            .http
            .get(url_with("app.datadoghq.com", &changes))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.headers().get("location").is_none(), "no redirect");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(r.text().await.unwrap().contains(message), "{message}");
    }
}

#[tokio::test]
async fn authorize_redirects_with_an_error_for_bad_pkce_or_response_type() {
    let w = world().await;
    w.fd.login(&w.us1.id).unwrap();
    for (changes, error) in [
        (vec![("code_challenge", None)], "invalid_request"),
        (vec![("code_challenge_method", None)], "invalid_request"),
        (
            vec![("code_challenge_method", Some("plain"))],
            "invalid_request",
        ),
        (
            vec![("code_challenge", Some("too-short"))],
            "invalid_request",
        ),
        (
            vec![("response_type", Some("token"))],
            "unsupported_response_type",
        ),
        (vec![("response_type", None)], "invalid_request"),
        (
            vec![("scope", Some("api_keys_write admin"))],
            "invalid_scope",
        ),
    ] {
        let r = w
            .http
            .get(url_with("app.datadoghq.com", &changes))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "{changes:?}");
        let (loc, p) = location(&r);
        assert!(loc.starts_with(REDIRECT));
        assert_eq!(p["error"], error, "{changes:?}");
        assert_eq!(p["state"], STATE);
        assert!(!p.contains_key("code"));
    }
}

#[tokio::test]
async fn a_successful_authorize_redirects_with_datadogs_parameters() {
    let w = world().await;
    let p = w.authorize(&w.eu).await;
    assert_eq!(p["state"], STATE);
    assert_eq!(p["domain"], "datadoghq.eu");
    assert_eq!(p["site"], "https://app.datadoghq.eu");
    assert_eq!(p["dd_oid"], w.eu.id);
    assert_eq!(p["dd_org_name"], "Acme EU");
    assert!(p["code"].len() >= 20);
}

#[tokio::test]
async fn the_consent_page_is_a_form_and_the_browser_can_authorize_or_deny() {
    let w = world_with(false, false).await;
    let cb = callback_server().await;
    let redirect = format!("http://relay.test:{}/oauth/callback", cb.port());
    w.fd.register_client(ClientSpec::new("web-client", "web-secret", &redirect).named("Web <App>"))
        .unwrap();
    w.fd.login(&w.us5.id).unwrap();
    let challenge = challenge_of(VERIFIER);
    let url = authorize_url(
        "us5.datadoghq.com",
        &[
            ("client_id", "web-client"),
            ("redirect_uri", &redirect),
            ("response_type", "code"),
            ("state", "s1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    // The page itself: HTML, escaped, a POST form with both buttons.
    let page = w.http.get(&url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("<form method=\"post\" action=\"/oauth2/v1/authorize\">"));
    assert!(html.contains("Web &lt;App&gt;") && !html.contains("Web <App>"));
    assert!(html.contains("value=\"authorize\"") && html.contains("value=\"deny\""));

    let browser = w.fd.browser(&[("relay.test", cb)]).unwrap();
    let done = browser.authorize(&url).await.unwrap();
    assert_eq!(done.status, 200);
    assert!(done.body.starts_with("callback:"), "{}", done.body);
    assert_eq!(done.query_param("state").as_deref(), Some("s1"));
    assert_eq!(
        done.query_param("domain").as_deref(),
        Some("us5.datadoghq.com")
    );
    let code = done.query_param("code").unwrap();
    let (s, t) = w
        .token(
            "api.us5.datadoghq.com",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "web-client"),
                ("client_secret", "web-secret"),
                ("redirect_uri", &redirect),
                ("code_verifier", VERIFIER),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");

    let denied = browser.deny(&url).await.unwrap();
    assert_eq!(
        denied.query_param("error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(denied.query_param("state").as_deref(), Some("s1"));
    assert_eq!(denied.query_param("code"), None);

    // A consent form cannot be submitted twice.
    let page = w.http.get(&url).send().await.unwrap().text().await.unwrap();
    let id = page
        .split("name=\"consent_id\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let submit = |decision: &'static str| {
        w.http
            .post("https://us5.datadoghq.com/oauth2/v1/authorize")
            .form(&[("consent_id", id.as_str()), ("decision", decision)])
            .send()
    };
    assert_eq!(
        submit("authorize").await.unwrap().status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        submit("authorize").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn signed_out_users_pick_an_organization_on_the_consent_page() {
    let w = world_with(false, false).await;
    let second_us = w.fd.create_org("Other US", site("datadoghq.com")).unwrap();
    let html = w
        .open_authorize("app.datadoghq.com")
        .await
        .text()
        .await
        .unwrap();
    // US1's own orgs first, then (region picker) the other sites' orgs.
    let first = html.find(&w.us1.id).unwrap();
    assert!(html.find(&second_us.id).unwrap() > first);
    assert!(html.find(&w.eu.id).unwrap() > first);
    assert!(html.contains("<select name=\"dd_oid\">"));
}

#[tokio::test]
async fn app_datadoghq_com_is_the_region_picker() {
    let w = world().await;
    w.fd.login(&w.eu.id).unwrap();
    let r = w.open_authorize("app.datadoghq.com").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let (loc, p) = location(&r);
    assert!(
        loc.starts_with("https://app.datadoghq.eu/oauth2/v1/authorize?"),
        "{loc}"
    );
    assert_eq!(p["client_id"], CLIENT);
    assert_eq!(p["state"], STATE);
    assert_eq!(p["code_challenge"], challenge_of(VERIFIER));
    assert_eq!(p["dd_oid"], w.eu.id);
    // Following it lands on the callback with the EU org's parameters.
    let r = w.http.get(&loc).send().await.unwrap();
    let (loc, p) = location(&r);
    assert!(loc.starts_with(REDIRECT));
    assert_eq!(p["domain"], "datadoghq.eu");
    assert_eq!(p["site"], "https://app.datadoghq.eu");
    // The browser helper follows the same chain on its own.
    let b = w.fd.browser(&[]).unwrap();
    let end = b.get(&standard_url("app.datadoghq.com")).await;
    // The callback host (relay.partner.example) is not resolvable: the
    // browser refuses to leave fakedog rather than touch the network.
    assert!(end.is_err());
}

#[tokio::test]
async fn another_sites_host_refuses_a_foreign_org() {
    let w = world().await;
    w.fd.login(&w.eu.id).unwrap();
    let r = w.open_authorize("us5.datadoghq.com").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("location").is_none());
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("belongs to the Datadog site EU1")
    );
}

#[tokio::test]
async fn custom_subdomains_authorize_for_their_site() {
    let w = world().await;
    w.fd.login(&w.us1.id).unwrap();
    let r = w.open_authorize("bigcorp.datadoghq.com").await;
    let (_, p) = location(&r);
    assert_eq!(p["site"], "https://bigcorp.datadoghq.com");
    assert_eq!(p["domain"], "datadoghq.com");
}

#[tokio::test]
async fn an_unpublished_client_is_for_its_owner_org_only() {
    let w = world().await;
    w.fd.register_client(
        ClientSpec::new("private-app", "pw", REDIRECT).unpublished(w.eu.id.clone()),
    )
    .unwrap();
    let url = url_with("app.datadoghq.eu", &[("client_id", Some("private-app"))]);
    w.fd.login(&w.eu.id).unwrap();
    let r = w.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let other =
        w.fd.create_org("Stranger EU", site("datadoghq.eu"))
            .unwrap();
    w.fd.login(&other.id).unwrap();
    let r = w.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Invalid client_id parameter value")
    );
}

#[tokio::test]
async fn code_exchange_returns_datadogs_token_response() {
    let w = world().await;
    let p = w.authorize(&w.eu).await;
    let (s, t) = w
        .exchange_code("api.datadoghq.eu", &p["code"], VERIFIER)
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    assert_eq!(t["scope"], "api_keys_write");
    assert!(access_token(&t).len() >= 32);
    assert!(refresh_token(&t).len() >= 32);
    assert_eq!(w.fd.token_calls("api.datadoghq.eu"), 1);
    assert_eq!(w.fd.token_calls("api.datadoghq.com"), 0);
}

#[tokio::test]
async fn a_json_token_request_is_accepted() {
    let w = world().await;
    let p = w.authorize(&w.us1).await;
    let r = w
        .http
        .post("https://api.datadoghq.com/oauth2/v1/token")
        .json(&json!({
            "grant_type": "authorization_code", "client_id": CLIENT, "client_secret": SECRET,
            "redirect_uri": REDIRECT, "code_verifier": VERIFIER, "code": p["code"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_pkce_mismatch_is_invalid_grant() {
    let w = world().await;
    let p = w.authorize(&w.us1).await;
    let wrong = "another-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
    let (s, body) = w
        .exchange_code("api.datadoghq.com", &p["code"], wrong)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "Invalid code or code verifier"})
    );
    let (s, body) = w
        .exchange_code("api.datadoghq.com", "no-such-code", VERIFIER)
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn a_reused_code_fails_and_revokes_what_it_issued() {
    let w = world().await;
    let p = w.authorize(&w.us1).await;
    let (s, first) = w
        .exchange_code("api.datadoghq.com", &p["code"], VERIFIER)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, again) = w
        .exchange_code("api.datadoghq.com", &p["code"], VERIFIER)
        .await;
    assert_eq!(
        (s, again["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // RFC 6749 §4.1.2: the tokens issued from the replayed code are revoked.
    let (s, _) = w.refresh("api.datadoghq.com", refresh_token(&first)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = w
        .create_key("api.datadoghq.com", access_token(&first))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_code_only_works_at_its_orgs_api_host() {
    let w = world().await;
    let p = w.authorize(&w.eu).await;
    let (s, body) = w
        .exchange_code("api.datadoghq.com", &p["code"], VERIFIER)
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let v = w.fd.violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind, ViolationKind::WrongSite);
    assert_eq!(v[0].host, "api.datadoghq.com");
    // Not consumed: the right host still accepts it.
    let (s, _) = w
        .exchange_code("api.datadoghq.eu", &p["code"], VERIFIER)
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn client_authentication_and_secret_rotation() {
    let w = world().await;
    let p = w.authorize(&w.us1).await;
    let base = [
        ("grant_type", "authorization_code"),
        ("client_id", CLIENT),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("code", p["code"].as_str()),
    ];
    let (s, body) = w.token("api.datadoghq.com", &base).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let mut wrong = base.to_vec();
    wrong.push(("client_secret", "guess"));
    let (s, body) = w.token("api.datadoghq.com", &wrong).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );

    let new_secret = w.fd.rotate_client_secret(CLIENT).unwrap();
    let mut old = base.to_vec();
    old.push(("client_secret", SECRET));
    let (s, _) = w.token("api.datadoghq.com", &old).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the old secret is gone");
    // HTTP Basic with the new secret works too.
    let r = w
        .http
        .post("https://api.datadoghq.com/oauth2/v1/token")
        .basic_auth(CLIENT, Some(new_secret.expose()))
        .form(&base)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_redirect_uri_must_match_and_codes_expire() {
    let w = world().await;
    let p = w.authorize(&w.us1).await;
    let (s, body) = w
        .token(
            "api.datadoghq.com",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("code_verifier", VERIFIER),
                ("code", &p["code"]),
            ],
        )
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    w.fd.advance(Duration::from_secs(11 * 60));
    let (s, body) = w
        .exchange_code("api.datadoghq.com", &p["code"], VERIFIER)
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (s, body) = w
        .token(
            "api.datadoghq.com",
            &[("client_id", CLIENT), ("client_secret", SECRET)],
        )
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (s, body) = w
        .token(
            "api.datadoghq.com",
            &[
                ("grant_type", "password"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(body["error"], "unsupported_grant_type", "{s}");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_grant() {
    let w = world().await;
    let t0 = w.tokens(&w.eu).await;
    let r0 = refresh_token(&t0);
    let (s, t1) = w.refresh("api.datadoghq.eu", r0).await;
    assert_eq!(s, StatusCode::OK, "{t1}");
    let r1 = refresh_token(&t1);
    assert_ne!(r0, r1);
    assert_eq!(t1["token_type"], "Bearer");
    let (s, t2) = w.refresh("api.datadoghq.eu", r1).await;
    assert_eq!(s, StatusCode::OK);
    // Presenting the rotated r0 again: invalid_grant, and the whole grant dies.
    let (s, body) = w.refresh("api.datadoghq.eu", r0).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (s, _) = w.refresh("api.datadoghq.eu", refresh_token(&t2)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = w.create_key("api.datadoghq.eu", access_token(&t2)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Refreshing at another site's host is refused and recorded, not revoking.
    let t = w.tokens(&w.eu).await;
    let (s, _) = w.refresh("api.datadoghq.com", refresh_token(&t)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(w.fd.violations().len(), 1);
    let (s, _) = w.refresh("api.datadoghq.eu", refresh_token(&t)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn access_tokens_expire_after_the_configured_ttl() {
    let w = world().await;
    w.fd.set_token_ttl(Duration::from_secs(60));
    let t = w.tokens(&w.us1).await;
    assert_eq!(t["expires_in"], 60);
    w.fd.advance(Duration::from_secs(61));
    let (s, body) = w.create_key("api.datadoghq.com", access_token(&t)).await;
    assert_eq!(
        (s, body),
        (StatusCode::FORBIDDEN, json!({"errors": ["Forbidden"]}))
    );
    // The refresh token still works and gives a fresh access token.
    let (s, t2) = w.refresh("api.datadoghq.com", refresh_token(&t)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = w.create_key("api.datadoghq.com", access_token(&t2)).await;
    assert_eq!(s, StatusCode::CREATED);
}

async fn revoke(w: &World, host: &str, form: &[(&str, &str)]) -> StatusCode {
    w.http
        .post(format!("https://{host}/oauth2/v1/revoke"))
        .form(form)
        .send()
        .await
        .unwrap()
        .status()
}

/// The test client's revoke form for `token`, of kind `hint`.
fn hinted<'a>(token: &'a str, hint: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("client_id", CLIENT),
        ("client_secret", SECRET),
        ("token", token),
        ("token_type_hint", hint),
    ]
}

#[tokio::test]
async fn revocation() {
    let w = world().await;
    let auth = |token: &'static str| {
        [
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("token", token),
        ]
    };
    assert_eq!(
        revoke(&w, "api.datadoghq.eu", &auth("unknown-token")).await,
        StatusCode::OK
    );
    assert_eq!(
        revoke(
            &w,
            "api.datadoghq.eu",
            &[
                ("client_id", CLIENT),
                ("client_secret", "x"),
                ("token", "t")
            ]
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        revoke(
            &w,
            "api.datadoghq.eu",
            &[("client_id", CLIENT), ("client_secret", SECRET)]
        )
        .await,
        StatusCode::BAD_REQUEST
    );

    // Revoking an access token kills only it.
    let t = w.tokens(&w.eu).await;
    let access = access_token(&t);
    let refresh = refresh_token(&t);
    let form = hinted(access, "access_token");
    assert_eq!(revoke(&w, "api.datadoghq.eu", &form).await, StatusCode::OK);
    assert_eq!(
        w.create_key("api.datadoghq.eu", access).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, t2) = w.refresh("api.datadoghq.eu", refresh).await;
    assert_eq!(s, StatusCode::OK);

    // Revoking the refresh token revokes the grant.
    let r2 = refresh_token(&t2);
    let a2 = access_token(&t2);
    let form = hinted(r2, "refresh_token");
    assert_eq!(revoke(&w, "api.datadoghq.eu", &form).await, StatusCode::OK);
    assert_eq!(
        w.refresh("api.datadoghq.eu", r2).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        w.create_key("api.datadoghq.eu", a2).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(w.fd.revoke_calls("api.datadoghq.eu"), 5);
}

#[tokio::test]
async fn an_uninstall_revokes_every_grant_of_the_org() {
    let w = world().await;
    let t = w.tokens(&w.us5).await;
    let other = w.tokens(&w.us1).await;
    assert_eq!(w.fd.revoke_grants(&w.us5.id).unwrap(), 1);
    let (s, body) = w.refresh("api.us5.datadoghq.com", refresh_token(&t)).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (s, _) = w
        .create_key("api.us5.datadoghq.com", access_token(&t))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Another org is untouched.
    let (s, _) = w.refresh("api.datadoghq.com", refresh_token(&other)).await;
    assert_eq!(s, StatusCode::OK);
}
