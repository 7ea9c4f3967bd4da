//! The test event on connect (`[integration] test_event_on_connect`): one
//! v1 event queued for a tenant as soon as it connects, so the customer
//! sees the integration's data in Datadog at once.
//!
//! It is queued as a partner's request would be ([`super::api::queue_own`]):
//! the tenant's connection generation, its tags, the durable queue, and
//! from there the delivery every item gets (retries, the 403 fallback,
//! age-out). It names the integration and nothing else: no key, token,
//! tenant id or org of any kind.

use super::api::{IngestError, IngestState, queue_own};
use crate::site::Endpoint;

/// The event's body: a v1 event (docs/datadog.md "Events v1"), with the
/// integration's source as `source_type_name` when one is configured.
pub(crate) fn body(source: Option<&str>) -> Vec<u8> {
    let name = source.unwrap_or("ddrelay");
    let mut event = serde_json::json!({
        "title": format!("{name} is connected"),
        "text": format!(
            "This organization now receives data from {name}. This event was sent once, when the connection was made."
        ),
        "alert_type": "success",
        "priority": "low",
    });
    if let Some(source) = source {
        event["source_type_name"] = source.into();
    }
    event.to_string().into_bytes()
}

/// Queues the test event for `tenant`.
pub(crate) async fn send(state: &IngestState, tenant: &str) -> Result<(), IngestError> {
    let source = state.config.load().integration.source.clone();
    queue_own(state, Endpoint::Events, tenant, body(source.as_deref())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_event_naming_only_the_integration() {
        let b = body(Some("acme-cloud"));
        let v = crate::ingest::validate::validate(Endpoint::Events, &b, 0).unwrap();
        assert_eq!(v.items, 1);
        let e: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(e["source_type_name"], "acme-cloud");
        assert!(body(None).windows(7).any(|w| w == b"ddrelay"));
    }
}
