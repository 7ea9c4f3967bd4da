//! The two seams between delivery and the world outside the process:
//! [`Intake`] (one request to a Datadog intake) and [`Keys`] (who may be
//! sent for, with which site, key and connection generation, and the
//! Forbidden fallback). The relay plugs in `datadog::Client` and
//! `credentials::Credentials`; the delivery tests plug in scripted ones and
//! run the dispatcher on paused tokio time (`send/tests.rs`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::credentials::{CredentialError, Credentials, Recovery};
use crate::datadog::{Answer, SendError};
use crate::secret::Secret;
use crate::site::{Encoding, Endpoint, Site};
use crate::tenant::Sending;

/// One payload for one tenant's intake.
#[derive(Debug, Clone)]
pub(crate) struct Request<'a> {
    pub(crate) site: &'static Site,
    pub(crate) endpoint: Endpoint,
    pub(crate) key: &'a Secret,
    pub(crate) encoding: Encoding,
    pub(crate) body: Bytes,
    /// `delivery.request_timeout`: the intake answers `SendError::Timeout`
    /// past it.
    pub(crate) timeout: Duration,
}

/// What Datadog answered, or why it could not be asked. The retry decision
/// on it is [`super::retry::Verdict::of`].
pub(crate) type Sent = Result<Answer, SendError>;

/// Sends one payload to an intake.
pub(crate) trait Intake: Send + Sync + 'static {
    fn send<'a>(&'a self, request: Request<'a>) -> BoxFuture<'a, Sent>;
}

impl Intake for crate::datadog::Client {
    fn send<'a>(&'a self, r: Request<'a>) -> BoxFuture<'a, Sent> {
        Box::pin(crate::datadog::Client::send(
            self, r.site, r.endpoint, r.key, r.encoding, r.body, r.timeout,
        ))
    }
}

/// The tenants' credentials, as delivery needs them.
pub(crate) trait Keys: Send + Sync + 'static {
    /// Whether the tenant's data may be sent now (connected; a held tenant,
    /// `reauth_required` or gone, is not dispatched).
    fn connected(&self, tenant: &str) -> bool;
    /// Site, key and connection generation, read together.
    fn sending<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Sending, CredentialError>>;
    /// The Forbidden fallback after Datadog refused `key` (runs to the end
    /// on its own task even if the caller goes away).
    fn recover(&self, tenant: Arc<str>, key: Secret) -> BoxFuture<'static, Recovery>;
}

impl Keys for Arc<Credentials> {
    fn connected(&self, tenant: &str) -> bool {
        Credentials::connected(self, tenant)
    }

    fn sending<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Sending, CredentialError>> {
        Box::pin(Credentials::sending(self, tenant))
    }

    fn recover(&self, tenant: Arc<str>, key: Secret) -> BoxFuture<'static, Recovery> {
        let this = self.clone();
        Box::pin(async move { this.recover_key(&tenant, &key).await })
    }
}
