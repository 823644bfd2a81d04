//! The HTTP accept loop. otpd drives hyper's connection builder itself rather than
//! `axum::serve`, for two things a dispatch engine under national load needs:
//!
//! - **`TCP_NODELAY`** on every accepted socket (`axum::serve` leaves Nagle's
//!   algorithm on, so a response written in two parts can wait for the client's
//!   delayed ACK);
//! - **write coalescing** ([`Coalesce`]): the answers to pipelined HTTP/1.1 requests
//!   (or HTTP/2 streams) that are ready in one turn of the connection's task leave in
//!   one write. hyper's own `pipeline_flush` does this but holds every answer while
//!   the read buffer has unread bytes: a request refused before its body was read
//!   (`413`) then loses its answer when the connection closes, and a client that
//!   sends a stray CRLF after a body waits forever. So that stays off.
//!
//! HTTP/2 (prior knowledge, `h2c`) is served on the same port. On the stop signal the
//! listener closes and every connection is asked to finish gracefully: requests in
//! flight are answered, keep-alive connections close.

use std::io;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::coalesce::Coalesce;

/// How long to wait before accepting again after an accept error (out of file
/// descriptors, say): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serve `app` on `listener` until `stop` resolves, then wait for the connections to
/// finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let builder = Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(|req: hyper::Request<Incoming>| req.map(Body::new));
        let service = TowerToHyperService::new(service);
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(Coalesce::new(stream)), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
