//! What bounds one HTTP connection in time: a watchdog that closes a connection which
//! holds resources without making progress.
//!
//! hyper bounds the size of a request head and (for HTTP/1.1) the time it takes to
//! arrive; what it does not bound is a connection that sits open, or one whose peer
//! stops taking the answers: a client that never reads, or an HTTP/2 client that never
//! opens its flow-control window, keeps every answer it asked for in otpd's memory for
//! as long as it likes. So each connection has an [`Activity`], fed by its socket
//! ([`Watched`]) and its requests ([`InFlight`]), and a [`watchdog`] that says when
//! the connection has overstayed:
//!
//! - **before its first request**: a connection that sends no complete request head
//!   within `header_read_timeout` is closed (hyper's own header timeout starts only
//!   once it knows the protocol, which a silent peer never tells it);
//! - **idle**: no request in flight for `idle_timeout` (HTTP/1.1 connections are
//!   already closed sooner, by hyper's header timeout while they wait for a request);
//! - **stalled**: requests in flight, and not one byte written to the peer for
//!   `write_timeout` since they began or since the last write.
//!
//! A request counts as in flight from the moment the service is called until its
//! answer's body is written out or dropped, so an answer held back by a closed window
//! is in flight. Times are tokio's, so tests can run on a paused clock.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The deadlines of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// The first request's head must have arrived within this.
    pub first_request: Duration,
    /// Nothing in flight for this long: closed.
    pub idle: Duration,
    /// Answers owed and nothing written for this long: closed.
    pub write: Duration,
}

/// Why the watchdog ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overstay {
    /// No request yet, past the first request's deadline.
    NoRequest,
    /// Nothing in flight, past the idle deadline.
    Idle,
    /// Answers owed, and the peer took no byte of them in time.
    Stalled,
}

impl Overstay {
    pub fn as_str(self) -> &'static str {
        match self {
            Overstay::NoRequest => "no_request",
            Overstay::Idle => "idle",
            Overstay::Stalled => "stalled",
        }
    }
}

/// What one connection has been doing, in milliseconds since it was accepted.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    in_flight: AtomicU32,
    /// Some request was begun on the connection.
    served: AtomicBool,
    /// When the last byte was written to the peer.
    last_write: AtomicU64,
    /// When the number of requests in flight last went from none to one.
    busy_since: AtomicU64,
    /// When it last went back to none.
    idle_since: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(false),
            last_write: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// A request begins: it is in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.busy_since.store(self.now(), Ordering::Release);
        }
        self.served.store(true, Ordering::Release);
        InFlight(self.clone())
    }

    fn wrote(&self) {
        self.last_write.store(self.now(), Ordering::Release);
    }

    /// Requests begun and not yet answered in full.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// When the connection overstays, from what it has done so far (re-read after
    /// waiting: activity moves the deadline).
    fn deadline(&self, d: &Deadlines) -> (Instant, Overstay) {
        let ms = |v: u64| self.opened + Duration::from_millis(v);
        if self.in_flight() > 0 {
            let since = self
                .last_write
                .load(Ordering::Acquire)
                .max(self.busy_since.load(Ordering::Acquire));
            (ms(since) + d.write, Overstay::Stalled)
        } else if !self.served.load(Ordering::Acquire) {
            (self.opened + d.first_request, Overstay::NoRequest)
        } else {
            (
                ms(self.idle_since.load(Ordering::Acquire)) + d.idle,
                Overstay::Idle,
            )
        }
    }
}

/// Resolves when the connection of `activity` overstays its deadlines.
pub async fn watchdog(activity: Arc<Activity>, deadlines: Deadlines) -> Overstay {
    loop {
        let (at, why) = activity.deadline(&deadlines);
        if Instant::now() >= at {
            // Re-read: the last moment's activity may have moved it.
            let (again, why_now) = activity.deadline(&deadlines);
            if again == at && why_now == why {
                return why;
            }
            continue;
        }
        tokio::time::sleep_until(at).await;
    }
}

/// A request in flight on its connection (see [`Activity::begin`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.now();
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(now, Ordering::Release);
        }
    }
}

/// An answer's body that keeps its request in flight until it is written out (or
/// dropped, when the stream or connection goes).
pub struct Guarded {
    inner: Body,
    _in_flight: InFlight,
}

impl Guarded {
    pub fn wrap(inner: Body, in_flight: InFlight) -> Body {
        Body::new(Guarded {
            inner,
            _in_flight: in_flight,
        })
    }
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket whose writes are noted in its connection's [`Activity`].
pub struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub fn new(io: T, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.activity.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.activity.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Deadlines = Deadlines {
        first_request: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        write: Duration::from_secs(5),
    };

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_goes_after_the_first_request_deadline() {
        let a = Activity::new();
        let started = Instant::now();
        assert_eq!(watchdog(a, D).await, Overstay::NoRequest);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_goes_after_the_idle_deadline_from_its_last_answer() {
        let a = Activity::new();
        tokio::time::advance(Duration::from_secs(3)).await;
        let answered = a.begin();
        tokio::time::advance(Duration::from_secs(1)).await;
        a.wrote();
        drop(answered);
        let started = Instant::now();
        assert_eq!(watchdog(a, D).await, Overstay::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_owed_and_nothing_written_is_a_stall_and_writing_keeps_it_alive() {
        let a = Activity::new();
        let _request = a.begin();
        let dog = tokio::spawn(watchdog(a.clone(), D));
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(4)).await;
            a.wrote();
            tokio::task::yield_now().await;
            assert!(!dog.is_finished(), "writing keeps it alive");
        }
        let started = Instant::now();
        assert_eq!(dog.await.unwrap(), Overstay::Stalled);
        assert!(started.elapsed() <= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_in_flight_until_its_answer_body_is_gone() {
        let a = Activity::new();
        let body = Guarded::wrap(Body::from("{}"), a.begin());
        assert_eq!(a.in_flight(), 1);
        drop(body);
        assert_eq!(a.in_flight(), 0);
    }
}
