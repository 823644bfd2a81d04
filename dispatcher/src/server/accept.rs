//! The HTTP accept loop. otpd drives hyper's connection builder itself rather than
//! `axum::serve`, for what a dispatch engine facing the internet needs:
//!
//! - **`TCP_NODELAY`** on every accepted socket (`axum::serve` leaves Nagle's
//!   algorithm on, so a response written in two parts can wait for the client's
//!   delayed ACK);
//! - **write coalescing** ([`Coalesce`]): the answers to pipelined HTTP/1.1 requests
//!   (or HTTP/2 streams) that are ready in one turn of the connection's task leave in
//!   one write. hyper's own `pipeline_flush` does this but holds every answer while
//!   the read buffer has unread bytes: a request refused before its body was read
//!   (`413`) then loses its answer when the connection closes, and a client that
//!   sends a stray CRLF after a body waits forever. So that stays off;
//! - **bounds** ([`Limits`]): a cap on connections (kept below the process's
//!   file-descriptor limit, so that the store and the carriers always have
//!   descriptors), the request head's size and read time, HTTP/2 streams per
//!   connection and their send buffers, and a watchdog per connection
//!   (the `connection` module) that closes one that sits idle or whose peer stops
//!   taking its answers. Over the cap a connection is closed at once; an accept that
//!   fails (out of descriptors) backs off instead of spinning, and says so once in a
//!   while rather than on every try.
//!
//! HTTP/2 (prior knowledge, `h2c`) is served on the same port. On the stop signal the
//! listener closes and every connection is asked to finish gracefully: requests in
//! flight are answered, keep-alive connections close.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

use crate::config::ServerConfig;
use crate::server::coalesce::Coalesce;
use crate::server::connection::{Activity, Deadlines, Guarded, Overstay, watchdog};
use crate::server::tls::Certificates;

/// The address a request's connection came from (see [`crate::policy::peer`] for who
/// the caller is when that is a proxy).
pub use crate::api::PeerAddr;

/// First wait before accepting again after an accept error (out of file descriptors,
/// say): retrying at once would spin. It doubles while errors repeat.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Accept errors are logged at most this often.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);
/// What one HTTP/2 stream may hold of its answer before its peer takes it.
const H2_SEND_BUFFER: usize = 64 * 1024;
/// Descriptors kept for everything else (store, carriers, push providers, files):
/// at least this many, or an eighth of the limit.
const RESERVED_DESCRIPTORS: usize = 32;

/// The bounds of the HTTP server (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub http2_max_streams: u32,
    pub max_header_bytes: usize,
}

impl Limits {
    /// From validated configuration, with the connection cap lowered when the
    /// process may not open that many descriptors.
    pub fn new(c: &ServerConfig) -> Limits {
        let mut max_connections = c.max_connections;
        if let Some(fds) = open_files_limit() {
            let usable = fds.saturating_sub(RESERVED_DESCRIPTORS.max(fds / 8)).max(1);
            if usable < max_connections {
                tracing::warn!(
                    configured = max_connections,
                    open_files_limit = fds,
                    cap = usable,
                    "server.max_connections is above what the open-files limit allows; capped (raise `ulimit -n` for more)"
                );
                max_connections = usable;
            }
        }
        Limits {
            max_connections,
            header_read_timeout: c.header_read_timeout,
            body_read_timeout: c.body_read_timeout,
            idle_timeout: c.idle_timeout,
            write_timeout: c.write_timeout,
            http2_max_streams: c.http2_max_streams,
            max_header_bytes: c.max_header_bytes,
        }
    }

    fn deadlines(&self) -> Deadlines {
        Deadlines {
            head: self.header_read_timeout,
            idle: self.idle_timeout,
            // A request has its body's time, then its own bounds (the store's
            // timeout among them): a write timeout's worth is far past those.
            handling: self.body_read_timeout + self.write_timeout,
            write: self.write_timeout,
        }
    }

    fn builder(&self) -> Builder<TokioExecutor> {
        let mut builder = Builder::new(TokioExecutor::new());
        // The header timeout is the watchdog's (`crate::server::connection`), not hyper's:
        // hyper arms a new timer for every request head, which showed in the tail
        // latency under load, while the watchdog re-arms once per deadline.
        builder
            .http1()
            .header_read_timeout(None)
            .max_buf_size(self.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.http2_max_streams)
            .max_header_list_size(self.max_header_bytes as u32)
            .max_send_buf_size(H2_SEND_BUFFER);
        builder
    }
}

/// The soft limit on open files of this process (`RLIMIT_NOFILE`), read from
/// `/proc/self/limits`; `None` where that is not available.
fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Serve `app` on `listener` within `limits` — over TLS with `tls` — until `stop`
/// resolves, then wait for the connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<Certificates>>,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let builder = Arc::new(limits.builder());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closing_rx) = watch::channel(false);
    let open = metrics::gauge!("otpd_http_connections");
    let refused = metrics::counter!("otpd_http_connections_refused_total");
    let mut stop = std::pin::pin!(stop);
    let mut backoff = ACCEPT_BACKOFF;
    let mut failed_since_warning = 0u64;
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = ACCEPT_BACKOFF;
                    accepted
                }
                Err(e) => {
                    failed_since_warning += 1;
                    if last_warning.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_EVERY) {
                        tracing::warn!(error = %e, failures = failed_since_warning, "cannot accept connections");
                        last_warning = Some(tokio::time::Instant::now());
                        failed_since_warning = 0;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut stop => break,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the cap: closed at once, so that it neither waits in the backlog
            // nor takes a descriptor the others need.
            refused.increment(1);
            drop(stream);
            continue;
        };
        open.increment(1.0);
        let task = Connection {
            builder: builder.clone(),
            app: app.clone(),
            deadlines: limits.deadlines(),
            closing: closing_rx.clone(),
            _slot: slot,
        };
        let open = open.clone();
        let _ = stream.set_nodelay(true);
        let tls = tls.as_ref().map(|c| c.acceptor());
        let handshake_within = limits.header_read_timeout;
        tokio::spawn(async move {
            match tls {
                None => task.serve(stream, peer).await,
                // The handshake has the request head's time: a peer that opens a
                // connection and says nothing holds its slot no longer over TLS.
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_within, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => task.serve(stream, peer).await,
                        Ok(Err(e)) => handshake_failed(&e.to_string()),
                        Err(_) => {
                            handshake_failed("no handshake within server.header_read_timeout")
                        }
                    }
                }
            }
            open.decrement(1.0);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    // Every slot back: every connection has ended.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
    Ok(())
}

/// One accepted connection and what it needs.
struct Connection {
    builder: Arc<Builder<TokioExecutor>>,
    app: Router,
    deadlines: Deadlines,
    closing: watch::Receiver<bool>,
    /// Its place under the connection cap, given back when it ends.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve<S>(mut self, stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new();
        let io = TokioIo::new(Coalesce::new(stream));
        let app = self.app.clone();
        let requests = activity.clone();
        // Each request is in flight from here until its answer is ready; an HTTP/2
        // answer also until its body is handed over whole (see `crate::server::connection`:
        // HTTP/1.1 takes a ready body at once, so watching it there would only cost).
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let http2 = req.version() == hyper::Version::HTTP_2;
            let in_flight = requests.begin(http2);
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(PeerAddr(peer));
            let app = app.clone();
            async move {
                let response = match app.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(if http2 {
                    response.map(|body| Guarded::wrap(body, in_flight))
                } else {
                    response
                })
            }
        });
        let conn = self.builder.serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        let dog = watchdog(activity.clone(), self.deadlines);
        let mut dog = std::pin::pin!(dog);
        let mut winding_down = false;
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                why = dog.as_mut() => {
                    overstayed(why);
                    match why {
                        // Nothing owed to an HTTP/2 peer: ask it to go (GOAWAY), and
                        // close for good if it does not within the write deadline.
                        Overstay::Idle | Overstay::NoRequest
                            if !winding_down && activity.http2() =>
                        {
                            conn.as_mut().graceful_shutdown();
                            winding_down = true;
                            dog.set(watchdog(activity.clone(), Deadlines {
                                head: self.deadlines.write,
                                idle: self.deadlines.write,
                                handling: self.deadlines.handling,
                                write: self.deadlines.write,
                            }));
                        }
                        // Answers owed that the peer does not take, or an HTTP/1.1 head
                        // that did not come whole in time (nothing is owed then):
                        // dropped, and the socket with them.
                        _ => return,
                    }
                }
                _ = self.closing.wait_for(|c| *c), if !winding_down => {
                    conn.as_mut().graceful_shutdown();
                    winding_down = true;
                }
            }
        }
    }
}

fn handshake_failed(why: &str) {
    metrics::counter!("otpd_tls_handshakes_failed_total").increment(1);
    tracing::debug!(error = why, "TLS handshake failed");
}

fn overstayed(why: Overstay) {
    metrics::counter!("otpd_http_connections_closed_total", "reason" => why.as_str()).increment(1);
    tracing::debug!(
        reason = why.as_str(),
        "closing a connection that overstayed"
    );
}
