//! The browser-facing listener's HTTP server: plain HTTP/1.1 (TLS is
//! terminated in front of it), hardened against slow and oversized clients.
//!
//! `axum::serve` sets no header-read timeout, so a client that sends its
//! request headers one byte at a time ("slowloris") could hold a connection
//! and a task forever. This loop serves the same router through hyper
//! directly, with:
//! - a header-read timeout (`server.public_header_timeout`): a request whose
//!   headers are not complete in time gets its connection closed; the same
//!   timer closes a keep-alive connection that stays idle that long;
//! - at most [`MAX_HEADER_BYTES`] of request line and headers and
//!   [`MAX_HEADERS`] header fields: more gets `431` (hyper), a longer URI
//!   `414`/`431`, and the callback itself refuses any parameter over 2 KiB;
//! - at most [`MAX_CONNECTIONS`] open connections: past that, new ones wait
//!   in the kernel's accept backlog instead of costing memory here.
//!
//! Only HTTP/1.1: browsers reach the callback through a TLS-terminating
//! proxy, which speaks HTTP/1.1 to its backends; cleartext HTTP/2 would only
//! add surface. Shutdown is graceful: in-flight requests finish, idle
//! connections close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::shutdown::Shutdown;

/// Request line plus headers, in bytes. The callback's URL is a few hundred
/// bytes; the rest is room for the cookies a browser sends to the partner's
/// domain.
pub(crate) const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Header fields per request (browsers send about 20).
pub(crate) const MAX_HEADERS: usize = 64;

/// Open connections at once. Each costs a task and a small buffer; the
/// callback is visited once per customer onboarding.
pub(crate) const MAX_CONNECTIONS: usize = 2048;

/// Serves `router` on `listener` until `shutdown` fires, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEADER_BYTES)
        // The read buffer bounds what a request head can make us hold.
        .max_buf_size(MAX_HEADER_BYTES + 8 * 1024);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (close_tx, close_rx) = watch::channel(());
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.wait() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "public listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let _ = tcp.set_nodelay(true);
        let service = router.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo::<SocketAddr>(peer));
                req.map(axum::body::Body::new)
            },
        );
        let conn = http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
        let mut close = close_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = close.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                // Header timeouts, oversized heads and resets land here.
                tracing::debug!(%peer, error = %e, "public connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = close_tx.send(());
    while conns.join_next().await.is_some() {}
    Ok(())
}
