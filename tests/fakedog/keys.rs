//! The marketplace API key endpoint and key validation.

use std::time::Duration;

use ddrelay::dev::fakedog::ViolationKind;

use super::*;

#[tokio::test]
async fn a_key_is_created_once_per_org_and_client() {
    let w = world().await;
    let t = w.tokens(&w.eu).await;
    let access = access_token(&t);
    let (s, body) = w.create_key("api.datadoghq.eu", access).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let data = &body["data"];
    assert_eq!(data["type"], "api_keys");
    assert!(!data["id"].as_str().unwrap().is_empty());
    let attrs = &data["attributes"];
    let key = attrs["key"].as_str().unwrap();
    assert_eq!(key.len(), 32);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(attrs["last4"], &key[28..]);
    assert_eq!(attrs["name"], "Partner OAuth Client API Key");
    assert!(attrs["created_at"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(attrs["created_at"], attrs["modified_at"]);
    assert_eq!(data["relationships"]["created_by"]["data"]["type"], "users");

    let (s, body) = w.create_key("api.datadoghq.eu", access).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(
        body,
        json!({"errors": ["An API key with this name already exists"]})
    );
    assert_eq!(w.fd.keys_created(&w.eu.id), 1);

    let (s, body) = w.validate("api.datadoghq.eu", key).await;
    assert_eq!((s, body), (StatusCode::OK, json!({"valid": true})));
    let (s, body) = w
        .validate("api.datadoghq.eu", "0123456789abcdef0123456789abcdef")
        .await;
    assert_eq!(
        (s, body),
        (StatusCode::FORBIDDEN, json!({"errors": ["Forbidden"]}))
    );
}

#[tokio::test]
async fn a_client_without_api_keys_write_is_forbidden() {
    let w = world().await;
    w.fd.register_client(ClientSpec::new("reader", "pw", REDIRECT).scopes(&["metrics_read"]))
        .unwrap();
    w.fd.login(&w.us1.id).unwrap();
    let challenge = challenge_of(VERIFIER);
    let mut params = standard_params(&challenge);
    params[0].1 = "reader".into();
    let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = w
        .http
        .get(authorize_url("app.datadoghq.com", &refs))
        .send()
        .await
        .unwrap();
    let (_, p) = location(&r);
    let (s, t) = w
        .token(
            "api.datadoghq.com",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "reader"),
                ("client_secret", "pw"),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("code", &p["code"]),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t["scope"], "metrics_read");
    let (s, body) = w.create_key("api.datadoghq.com", access_token(&t)).await;
    assert_eq!(
        (s, body),
        (StatusCode::FORBIDDEN, json!({"errors": ["Forbidden"]}))
    );
    assert_eq!(w.fd.keys_created(&w.us1.id), 0);
}

#[tokio::test]
async fn bad_expired_or_missing_tokens_are_forbidden() {
    let w = world().await;
    w.fd.set_token_ttl(Duration::from_secs(5));
    let t = w.tokens(&w.us1).await;
    w.fd.advance(Duration::from_secs(6));
    for token in [access_token(&t), "garbage"] {
        let (s, _) = w.create_key("api.datadoghq.com", token).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    let r = w
        .http
        .post("https://api.datadoghq.com/api/v2/api_keys/marketplace")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(w.fd.keys_created(&w.us1.id), 0);
}

#[tokio::test]
async fn keys_and_tokens_only_work_at_their_orgs_site() {
    let w = world().await;
    let t = w.tokens(&w.eu).await;
    let (s, _) = w.create_key("api.datadoghq.com", access_token(&t)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = w.create_key("api.datadoghq.eu", access_token(&t)).await;
    assert_eq!(s, StatusCode::CREATED);
    let key = w.fd.issue_key(&w.us5.id, CLIENT).unwrap();
    let (s, _) = w.validate("api.us3.datadoghq.com", &key).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let v = w.fd.violations();
    assert_eq!(v.len(), 2);
    assert!(v.iter().all(|v| v.kind == ViolationKind::WrongSite));
    assert_eq!(v[1].host, "api.us3.datadoghq.com");
    assert_eq!(v[1].org.as_deref(), Some(w.us5.id.as_str()));
}

#[tokio::test]
async fn revoked_and_rotated_keys() {
    let w = world().await;
    let t = w.tokens(&w.us1).await;
    let access = access_token(&t);
    let (_, body) = w.create_key("api.datadoghq.com", access).await;
    let key = body["data"]["attributes"]["key"]
        .as_str()
        .unwrap()
        .to_string();

    // The customer deleted the key: it dies and a new one can be created.
    assert_eq!(w.fd.revoke_key(&w.us1.id).unwrap(), 1);
    assert_eq!(
        w.validate("api.datadoghq.com", &key).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, body) = w.create_key("api.datadoghq.com", access).await;
    assert_eq!(s, StatusCode::CREATED);
    let key2 = body["data"]["attributes"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(key, key2);

    // Rotated out of band: the relay's key dies, and a new creation is a 409.
    w.fd.rotate_key(&w.us1.id).unwrap();
    assert!(!w.fd.key_is_live(&key2));
    assert_eq!(
        w.validate("api.datadoghq.com", &key2).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        w.create_key("api.datadoghq.com", access).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(w.fd.keys_created(&w.us1.id), 2);
}
