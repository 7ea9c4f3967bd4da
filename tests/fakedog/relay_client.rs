//! The relay's own Datadog client (`ddrelay::datadog::Client`), configured
//! the way a relay is pointed at fakedog (`ca_file` + `[datadog.resolve]`
//! from `FakeDog::resolve_map`), parses everything fakedog answers.

use std::time::Duration;

use bytes::Bytes;
use ddrelay::config::{ClientCredentials, DatadogConfig};
use ddrelay::datadog::{Client, KeyError, Validity};
use ddrelay::secret::Secret;
use ddrelay::site::{AllowedSites, Encoding, Endpoint};

use super::*;

#[tokio::test]
async fn the_relays_client_runs_the_whole_flow_against_fakedog() {
    let w = world().await;
    let dd = Client::new(&DatadogConfig {
        allowed_sites: AllowedSites::default(),
        ca_file: Some(w.fd.ca_file().to_path_buf()),
        resolve: w.fd.resolve_map(),
    })
    .unwrap();
    let creds = ClientCredentials {
        client_id: CLIENT.to_string(),
        client_secret: Secret::new(SECRET),
    };
    let eu = w.eu.site;
    let p = w.authorize(&w.eu).await;

    let tokens = dd
        .exchange_code(eu, &creds, &p["code"], &Secret::new(VERIFIER), REDIRECT)
        .await
        .unwrap();
    assert_eq!(tokens.expires_in, Some(3600));
    let again = dd
        .exchange_code(eu, &creds, &p["code"], &Secret::new(VERIFIER), REDIRECT)
        .await
        .unwrap_err();
    assert!(again.is_grant_revoked(), "{again}");

    // The replay revoked that grant; start a fresh one.
    let p = w.authorize(&w.eu).await;
    let tokens = dd
        .exchange_code(eu, &creds, &p["code"], &Secret::new(VERIFIER), REDIRECT)
        .await
        .unwrap();
    let key = dd.create_api_key(eu, &tokens.access_token).await.unwrap();
    assert_eq!(key.key.expose().len(), 32);
    assert_eq!(
        dd.create_api_key(eu, &tokens.access_token)
            .await
            .unwrap_err(),
        KeyError::Exists
    );
    assert_eq!(dd.validate_key(eu, &key.key).await, Validity::Valid);

    let now = w.fd.now_unix();
    for (endpoint, body) in [
        (Endpoint::SeriesV2, series_v2(now, 2)),
        (Endpoint::Logs, logs(now, 3)),
        (Endpoint::CheckRun, checks(now, 1)),
    ] {
        let encoding = endpoint.default_encoding();
        let data = ddrelay::codec::compress(encoding, 3, &body);
        let answer = dd
            .send(
                eu,
                endpoint,
                &key.key,
                encoding,
                Bytes::from(data),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 202, "{endpoint}: {}", answer.excerpt);
    }
    let zstd = ddrelay::codec::compress(Encoding::Zstd, 3, &series_v2(now, 1));
    let answer = dd
        .send(
            eu,
            Endpoint::SeriesV2,
            &key.key,
            Encoding::Zstd,
            Bytes::from(zstd),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 202);
    assert_eq!(w.fd.item_count(&w.eu.id, Endpoint::SeriesV2), 3);
    assert_eq!(w.fd.item_count(&w.eu.id, Endpoint::Logs), 3);

    let refreshed = dd
        .refresh(eu, &creds, tokens.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
    let old = tokens.refresh_token.unwrap();
    let reuse = dd.refresh(eu, &creds, &old).await.unwrap_err();
    assert!(reuse.is_grant_revoked());
    assert!(
        dd.refresh(eu, &creds, refreshed.refresh_token.as_ref().unwrap())
            .await
            .unwrap_err()
            .is_grant_revoked()
    );

    let wrong = ClientCredentials {
        client_id: CLIENT.to_string(),
        client_secret: Secret::new("rotated-away"),
    };
    let err = dd.refresh(eu, &wrong, &old).await.unwrap_err();
    assert!(err.is_client_error(), "{err}");
    dd.revoke(eu, &creds, &Secret::new("unknown"), "refresh_token")
        .await
        .unwrap();

    w.fd.revoke_key(&w.eu.id).unwrap();
    assert_eq!(dd.validate_key(eu, &key.key).await, Validity::Invalid);
    assert!(w.fd.violations().is_empty(), "{:?}", w.fd.violations());
}
