//! Incidents through the pull-side proxy, against fakedog's incidents API
//! (`POST`/`GET /api/v2/incidents`, `GET /api/v2/incidents/{id}`, scopes
//! `incident_write` and `incident_read`; docs/datadog.md "Incidents"):
//! an incident created for one tenant lands in that tenant's org only and
//! reads back through the proxy, an expired access token is refreshed and
//! the incident created exactly once, and a grant without `incident_write`
//! gets an answer that names the scope and says the customer must connect
//! again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use ddrelay::dev::fakedog::{FakeDog, Fault, INCIDENT_READ, INCIDENT_WRITE};
use ddrelay::dev::sandbox::Relay;
use reqwest::Method;
use serde_json::{Value, json};
use support::proxy::{Answer, admin_call};
use support::{connect, tenant_json};

const EU_API: &str = "api.datadoghq.eu";
const US5_API: &str = "api.us5.datadoghq.com";
const EU_ORG: &str = "Demo EU1";
const US5_ORG: &str = "Demo US5";

/// fakedog, the sandbox client registered with `scopes`, and a relay.
async fn setup(scopes: &[&str]) -> (FakeDog, Relay, tempfile::TempDir) {
    support::proxy::setup(scopes, "").await
}

/// What `examples/create_incident.rs` sends: Datadog's create request.
fn incident(title: &str) -> Value {
    json!({"data": {"type": "incidents", "attributes": {
        "title": title,
        "customer_impacted": false,
        "fields": {"severity": {"type": "dropdown", "value": "SEV-2"}},
    }}})
}

async fn create(relay: &Relay, tenant: &str, title: &str) -> Answer {
    admin_call(
        relay,
        Method::POST,
        tenant,
        "api/v2/incidents",
        Some(incident(title)),
    )
    .await
}

/// The ids of the incidents fakedog holds for `org`.
fn ids_in(dog: &FakeDog, org: &str) -> Vec<String> {
    dog.incidents(org)
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

fn titles(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["attributes"]["title"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn an_incident_lands_in_the_tenants_own_org_and_reads_back_through_the_proxy() {
    let (dog, relay, _dir) = setup(&["api_keys_write", INCIDENT_READ, INCIDENT_WRITE]).await;
    connect(&relay, &dog, "eu", "https://app.datadoghq.eu", EU_ORG).await;
    connect(&relay, &dog, "us5", "https://us5.datadoghq.com", US5_ORG).await;
    let seen = dog.api_requests().len();

    let a = create(&relay, "eu", "Checkout errors for acme").await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.header("dd-relay-origin"), Some("datadog"));
    let data = &a.json()["data"];
    assert_eq!(data["type"], "incidents");
    let id = data["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let attrs = &data["attributes"];
    assert_eq!(attrs["title"], "Checkout errors for acme");
    assert_eq!(attrs["public_id"], 1);
    assert_eq!(attrs["customer_impacted"], false);
    assert_eq!(attrs["severity"], "SEV-2");
    assert_eq!(attrs["state"], "active");
    assert!(
        attrs["created"].as_str().unwrap().ends_with("+00:00"),
        "{attrs}"
    );

    // In eu's org, not in us5's; the request went to eu's API host only,
    // as JSON, with eu's token.
    assert_eq!(ids_in(&dog, EU_ORG), std::slice::from_ref(&id));
    assert!(ids_in(&dog, US5_ORG).is_empty());
    let sent = &dog.api_requests()[seen];
    assert_eq!((sent.host.as_str(), sent.method.as_str()), (EU_API, "POST"));
    assert_eq!(sent.path, "/api/v2/incidents");
    assert_eq!(sent.header("content-type"), ["application/json"]);
    let token = relay.shared().store.credentials("eu").await.unwrap();
    let token = token.access_token.unwrap();
    assert_eq!(
        sent.header("authorization"),
        [format!("Bearer {}", token.expose())]
    );

    // Read back through the proxy: eu sees it, us5 does not.
    let one = admin_call(
        &relay,
        Method::GET,
        "eu",
        &format!("api/v2/incidents/{id}"),
        None,
    )
    .await;
    assert_eq!(one.status, 200, "{one:?}");
    assert_eq!(
        one.json()["data"]["attributes"]["title"],
        "Checkout errors for acme"
    );
    let other = admin_call(
        &relay,
        Method::GET,
        "us5",
        &format!("api/v2/incidents/{id}"),
        None,
    )
    .await;
    assert_eq!(other.status, 404, "{other:?}");
    let list = admin_call(&relay, Method::GET, "us5", "api/v2/incidents", None).await;
    assert_eq!(list.status, 200, "{list:?}");
    assert!(titles(&list.json()).is_empty(), "{list:?}");

    // A second one for eu: public ids count per org; pages as Datadog's
    // page[size] and page[offset] say (brackets as they are on the wire).
    let b = create(&relay, "eu", "Second incident").await;
    assert_eq!(b.status, 201, "{b:?}");
    assert_eq!(b.json()["data"]["attributes"]["public_id"], 2);
    let all = admin_call(&relay, Method::GET, "eu", "api/v2/incidents", None).await;
    assert_eq!(
        titles(&all.json()),
        ["Checkout errors for acme", "Second incident"]
    );
    let page = admin_call(
        &relay,
        Method::GET,
        "eu",
        "api/v2/incidents?page[size]=1&page[offset]=1",
        None,
    )
    .await;
    assert_eq!(page.status, 200, "{page:?}");
    let page = page.json();
    assert_eq!(titles(&page), ["Second incident"]);
    assert_eq!(
        page["meta"]["pagination"],
        json!({"offset": 1, "size": 1, "next_offset": 2})
    );
    assert_eq!(dog.incidents(US5_ORG).len(), 0);
    let posted_to_us5 = dog.api_requests().iter().any(|r| {
        r.host == US5_API && r.path.starts_with("/api/v2/incidents") && r.method == "POST"
    });
    assert!(!posted_to_us5, "an incident request reached us5's host");

    // Datadog's 400 for a body without a title comes back as it is.
    let bad = admin_call(
        &relay,
        Method::POST,
        "eu",
        "api/v2/incidents",
        Some(json!({"data": {"type": "incidents", "attributes": {"customer_impacted": false}}})),
    )
    .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_eq!(bad.header("dd-relay-origin"), Some("datadog"));
    assert!(
        bad.json()["errors"][0].as_str().unwrap().contains("title"),
        "{bad:?}"
    );
    assert_eq!(dog.incidents(EU_ORG).len(), 2);
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

#[tokio::test]
async fn an_expired_token_is_refreshed_and_the_incident_created_once() {
    let (dog, relay, _dir) = setup(&["api_keys_write", INCIDENT_READ, INCIDENT_WRITE]).await;
    connect(&relay, &dog, "eu", "https://app.datadoghq.eu", EU_ORG).await;
    connect(&relay, &dog, "us5", "https://us5.datadoghq.com", US5_ORG).await;
    let calls = dog.token_calls(EU_API);

    // Datadog's clock says the token expired; the relay's says it is fresh:
    // Datadog refuses it, the relay refreshes once and sends the body again.
    dog.advance(Duration::from_secs(2 * 3600));
    let a = create(&relay, "eu", "After the token expired").await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.header("dd-relay-explanation"), None);
    assert_eq!(dog.token_calls(EU_API), calls + 1, "one refresh");
    assert_eq!(dog.requests(EU_API, 403), 1, "one refusal, then the retry");
    assert_eq!(dog.incidents(EU_ORG).len(), 1, "created once");
    assert!(dog.incidents(US5_ORG).is_empty());
    let list = admin_call(&relay, Method::GET, "eu", "api/v2/incidents", None).await;
    assert_eq!(titles(&list.json()), ["After the token expired"]);
    assert_eq!(
        dog.token_calls(EU_API),
        calls + 1,
        "the new token serves on"
    );
    assert_eq!(tenant_json(&relay, "eu").await["state"], "connected");
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

#[tokio::test]
async fn a_grant_without_incident_write_is_explained_naming_the_scope() {
    let (dog, relay, _dir) = setup(&["api_keys_write", INCIDENT_READ]).await;
    connect(&relay, &dog, "eu", "https://app.datadoghq.eu", EU_ORG).await;
    let a = create(&relay, "eu", "Cannot be created").await;
    let d = &support::proxy::missing_scope(&a);
    assert_eq!(d["required_scope"], INCIDENT_WRITE);
    assert_eq!(
        d["granted_scopes"],
        json!(["api_keys_write", INCIDENT_READ])
    );
    let why = d["explanation"].as_str().unwrap();
    assert!(why.contains("`incident_write`"), "{why}");
    assert!(why.contains("connect again"), "{why}");
    assert!(dog.incidents(EU_ORG).is_empty());

    // What the grant allows works; the tenant stays connected.
    let list = admin_call(&relay, Method::GET, "eu", "api/v2/incidents", None).await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(tenant_json(&relay, "eu").await["state"], "connected");
    assert!(dog.violations().is_empty(), "{:?}", dog.violations());
}

#[tokio::test]
async fn the_read_scope_is_named_too_and_an_unknown_endpoint_is_not_guessed() {
    let (dog, relay, _dir) = setup(&["api_keys_write", INCIDENT_WRITE]).await;
    connect(&relay, &dog, "eu", "https://app.datadoghq.eu", EU_ORG).await;
    let a = admin_call(
        &relay,
        Method::GET,
        "eu",
        "api/v2/incidents?page[size]=5",
        None,
    )
    .await;
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.json()["ddrelay"]["required_scope"], INCIDENT_READ);
    let why = a.json()["ddrelay"]["explanation"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(why.contains("`incident_read`"), "{why}");
    let b = create(&relay, "eu", "Allowed").await;
    assert_eq!(b.status, 201, "{b:?}");

    // Refused although the grant has the scope: the user's permission.
    dog.inject_fault(Fault::status(403).on_path("/api/v2/incidents").times(2))
        .unwrap();
    let c = create(&relay, "eu", "Refused by permission").await;
    assert_eq!(c.status, 403, "{c:?}");
    let d = &c.json()["ddrelay"];
    assert_eq!(d["required_scope"], INCIDENT_WRITE);
    let why = d["explanation"].as_str().unwrap();
    assert!(
        why.contains("permission") && why.contains("`incident_write`"),
        "{why}"
    );
    assert!(!why.contains("connect again"), "{why}");
    dog.clear_faults();

    // An endpoint whose scope the relay does not know: no guess.
    dog.inject_fault(Fault::status(403).on_path("/api/v1/dashboard").times(2))
        .unwrap();
    let e = admin_call(&relay, Method::GET, "eu", "api/v1/dashboard", None).await;
    assert_eq!(e.status, 403, "{e:?}");
    assert_eq!(e.json()["ddrelay"]["cause"], "missing_scope_or_permission");
    assert_eq!(e.json()["ddrelay"]["required_scope"], Value::Null);
    assert_eq!(dog.incidents(EU_ORG).len(), 1);
}
