//! **Response size.** Bodies stream (`bytes_stream` → `Body::from_stream`);
//! at most the first 64 KiB of an answer (and a whole 401/403 body, at most
//! 64 KiB) is held in memory. Bytes are counted as they come from Datadog
//! (compressed when Datadog compresses). An answer is refused with 502
//! `{"errors":[..max_response_body..]}` before anything is sent when its
//! `Content-Length` exceeds `max_response_body`, or when it passes the limit
//! within its first 64 KiB. A longer answer without a length is cut when it
//! passes the limit: the connection is closed without completing the
//! response (no final chunk), so the client sees a transfer error (possibly
//! before the status line), never a short body that looks complete.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use futures_util::StreamExt as _;
use tokio::sync::OwnedSemaphorePermit;

use super::headers::returned_headers;
use super::{ORIGIN_HEADER, ProxyError};
use crate::config::ProxyConfig;
use crate::datadog::describe;
use crate::secret::Secret;

/// Up to this much of an answer is read before its status line is sent, so
/// an answer that passes `max_response_body` within it is a clean 502 and
/// only a longer one is cut mid-stream.
const PREFETCH: u64 = 64 * 1024;

/// Streams Datadog's answer back, bounded by `max_response_body`, holding
/// the tenant's concurrency slot until the body is done.
pub(super) async fn stream(
    mut resp: reqwest::Response,
    method: &Method,
    permit: OwnedSemaphorePermit,
    config: &ProxyConfig,
    tenant: &str,
    secrets: &[&Secret],
) -> Result<Response, ProxyError> {
    let max = config.max_response_body;
    let too_large = |length: u64| {
        tracing::warn!(tenant = %tenant, length, limit = max, "datadog response refused: over proxy.max_response_body");
        ProxyError::ResponseTooLarge { limit: max }
    };
    if *method != Method::HEAD
        && let Some(len) = resp.content_length()
        && len > max
    {
        return Err(too_large(len));
    }
    let status = resp.status();
    let headers = returned_headers(resp.headers(), secrets);
    let mut head = Vec::new();
    let mut got = 0u64;
    while got <= PREFETCH.min(max) {
        let chunk = resp.chunk().await.map_err(|e| {
            if e.is_timeout() {
                ProxyError::Timeout(config.timeout)
            } else {
                ProxyError::Upstream(describe(&e))
            }
        })?;
        let Some(chunk) = chunk else { break };
        got += chunk.len() as u64;
        head.push(chunk);
    }
    if got > max {
        return Err(too_large(got));
    }
    let rest = resp
        .bytes_stream()
        .map(|item| item.map_err(|e| describe(&e)));
    let body = bounded(head, rest, max, permit, tenant.to_string());
    let mut r = Response::new(Body::from_stream(body));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r.headers_mut()
        .insert(ORIGIN_HEADER, HeaderValue::from_static("datadog"));
    Ok(r)
}

/// `head` then `rest`, ended by an error once more than `max` bytes came
/// (or when `rest` fails), so the server closes the connection without
/// completing the body. `permit` is released when the body is dropped.
fn bounded<S>(
    head: Vec<Bytes>,
    rest: S,
    max: u64,
    permit: OwnedSemaphorePermit,
    tenant: String,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: futures_util::Stream<Item = Result<Bytes, String>> + Send + 'static,
{
    futures_util::stream::iter(head.into_iter().map(Ok))
        .chain(rest)
        .scan((0u64, false, permit), move |(seen, done, _permit), item| {
            if *done {
                return std::future::ready(None);
            }
            let out = match item {
                Ok(chunk) => {
                    *seen += chunk.len() as u64;
                    if *seen > max {
                        *done = true;
                        tracing::warn!(tenant = %tenant, limit = max, "proxied response cut: over proxy.max_response_body");
                        Err(std::io::Error::other(format!(
                            "Datadog's response is larger than {max} bytes (proxy.max_response_body)"
                        )))
                    } else {
                        Ok(chunk)
                    }
                }
                Err(e) => {
                    *done = true;
                    tracing::warn!(tenant = %tenant, error = %e, "proxied response broken off");
                    Err(std::io::Error::other(e))
                }
            };
            std::future::ready(Some(out))
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::*;

    #[tokio::test]
    async fn streamed_bodies_are_cut_past_the_limit_and_release_the_slot() {
        let slot = Arc::new(Semaphore::new(1));
        let chunks = |n: usize| {
            futures_util::stream::iter(
                (0..n).map(|_| Ok::<_, String>(Bytes::from_static(b"0123456789"))),
            )
        };
        let permit = slot.clone().try_acquire_owned().unwrap();
        let out: Vec<_> = bounded(
            vec![Bytes::from_static(b"[")],
            chunks(3),
            31,
            permit,
            "t".into(),
        )
        .collect()
        .await;
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(Result::is_ok));
        assert_eq!(slot.available_permits(), 1);

        let permit = slot.clone().try_acquire_owned().unwrap();
        let out: Vec<_> = bounded(vec![], chunks(5), 25, permit, "t".into())
            .collect()
            .await;
        assert_eq!(out.len(), 3, "two chunks, then the error, then nothing");
        assert!(out[..2].iter().all(Result::is_ok));
        assert!(
            out[2]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("proxy.max_response_body")
        );
        assert_eq!(slot.available_permits(), 1);

        let permit = slot.clone().try_acquire_owned().unwrap();
        let broken = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err("connection reset".to_string()),
            Ok(Bytes::from_static(b"cd")),
        ]);
        let out: Vec<_> = bounded(vec![], broken, 100, permit, "t".into())
            .collect()
            .await;
        assert_eq!(out.len(), 2);
        assert!(out[1].is_err());
    }
}
