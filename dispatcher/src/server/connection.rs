//! What bounds one HTTP connection in time: a watchdog that closes a connection which
//! holds resources without making progress.
//!
//! hyper bounds the size of a request head; what it does not bound is a connection
//! that sits open, sends its head a byte at a time, or stops taking its answers: a
//! client that never reads, or an HTTP/2 client that never opens its flow-control
//! window, keeps every answer it asked for in otpd's memory for as long as it likes.
//! So each connection has an [`Activity`], fed by its requests ([`InFlight`]) and
//! their answers ([`Guarded`]), and a [`watchdog`] that says when the connection has
//! overstayed:
//!
//! - **waiting for a request head**: a new connection, and an HTTP/1.1 connection
//!   between requests, must have a whole request head in within
//!   `header_read_timeout` (of being opened, or of its last answer) — so a head sent
//!   a byte at a time, or none, is cut;
//! - **idle**: an HTTP/2 connection with no request in flight for `idle_timeout`;
//! - **stalled**: answers owed to the peer, and none of them taken for
//!   `write_timeout` since they were ready or since the last part was.
//!
//! A request counts as in flight from the moment the service is called until its
//! answer's body is written out or dropped; an answer is owed from the moment it is
//! ready until its body is. Progress is an answer's body handed to the connection,
//! not any byte written: an HTTP/2 peer that keeps its window shut but sends PINGs
//! gets its PINGs answered, and is still cut. Times are tokio's, so tests can run on
//! a paused clock.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Instant;

/// The deadlines of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// A request head must have arrived within this of the connection's start (and,
    /// on HTTP/1.1, of the last answer).
    pub head: Duration,
    /// Nothing in flight for this long: closed.
    pub idle: Duration,
    /// A request still being handled (its body read, the store asked) after this
    /// long: something is stuck, past every bound a request has.
    pub handling: Duration,
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
    /// A request was handled for longer than its own bounds allow.
    Stuck,
}

impl Overstay {
    pub fn as_str(self) -> &'static str {
        match self {
            Overstay::NoRequest => "no_request",
            Overstay::Idle => "idle",
            Overstay::Stalled => "stalled",
            Overstay::Stuck => "stuck",
        }
    }
}

/// What one connection has been doing, in milliseconds since it was accepted.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    in_flight: AtomicU32,
    /// Answers ready and not yet handed over whole.
    owed: AtomicU32,
    /// Some request was begun on the connection.
    served: AtomicBool,
    /// Its requests are HTTP/2 (known from the first one).
    http2: AtomicBool,
    /// When an owed answer was last handed over (in part), or became owed.
    progress: AtomicU64,
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
            owed: AtomicU32::new(0),
            served: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            progress: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// A request begins (its head has been read): it is in flight until the guard
    /// is dropped.
    pub fn begin(self: &Arc<Self>, http2: bool) -> InFlight {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.busy_since.store(self.now(), Ordering::Release);
        }
        if !self.served.load(Ordering::Relaxed) {
            self.http2.store(http2, Ordering::Release);
            self.served.store(true, Ordering::Release);
        }
        InFlight(self.clone())
    }

    /// Whether the connection's requests are HTTP/2.
    pub fn http2(&self) -> bool {
        self.http2.load(Ordering::Acquire)
    }

    fn progressed(&self) {
        self.progress.store(self.now(), Ordering::Release);
    }

    /// Requests begun and not yet answered in full.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// When the connection overstays, from what it has done so far (re-read after
    /// waiting: activity moves the deadline).
    fn deadline(&self, d: &Deadlines) -> (Instant, Overstay) {
        let ms = |v: u64| self.opened + Duration::from_millis(v);
        if self.owed.load(Ordering::Acquire) > 0 {
            (
                ms(self.progress.load(Ordering::Acquire)) + d.write,
                Overstay::Stalled,
            )
        } else if self.in_flight() > 0 {
            // Being handled (its body read, the store asked): bounded by those
            // timeouts; this is only the last resort.
            (
                ms(self.busy_since.load(Ordering::Acquire)) + d.handling,
                Overstay::Stuck,
            )
        } else if !self.served.load(Ordering::Acquire) {
            (self.opened + d.head, Overstay::NoRequest)
        } else if self.http2() {
            (
                ms(self.idle_since.load(Ordering::Acquire)) + d.idle,
                Overstay::Idle,
            )
        } else {
            // HTTP/1.1 between requests: the next head is due (whole) within the
            // header timeout of the last answer, as if the connection were new.
            (
                ms(self.idle_since.load(Ordering::Acquire)) + d.head,
                Overstay::NoRequest,
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
        // The clock is read only when the connection falls idle: most requests on a
        // busy HTTP/2 connection end while others are in flight.
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(self.0.now(), Ordering::Release);
        }
    }
}

/// An answer's body: owed to the peer, and its request in flight, until it is
/// handed over whole (or dropped, when the stream or connection goes).
pub struct Guarded {
    inner: Body,
    in_flight: InFlight,
}

impl Guarded {
    pub fn wrap(inner: Body, in_flight: InFlight) -> Body {
        let activity = &in_flight.0;
        activity.owed.fetch_add(1, Ordering::AcqRel);
        activity.progressed();
        Body::new(Guarded { inner, in_flight })
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.in_flight.0.owed.fetch_sub(1, Ordering::AcqRel);
    }
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_ready() {
            self.in_flight.0.progressed();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Deadlines = Deadlines {
        head: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        handling: Duration::from_secs(30),
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
        let answered = Guarded::wrap(Body::from("{}"), a.begin(true));
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(answered);
        let started = Instant::now();
        assert_eq!(watchdog(a, D).await, Overstay::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_owed_and_not_taken_is_a_stall_and_taking_parts_keeps_it_alive() {
        let a = Activity::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let mut answer = Guarded::wrap(body, a.begin(true));
        let dog = tokio::spawn(watchdog(a.clone(), D));
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(4)).await;
            tx.send(Ok(Bytes::from_static(b"part"))).await.unwrap();
            let _ = std::future::poll_fn(|cx| {
                Poll::Ready(http_body::Body::poll_frame(Pin::new(&mut answer), cx))
            })
            .await;
            tokio::task::yield_now().await;
            assert!(!dog.is_finished(), "each part taken keeps it alive");
        }
        let started = Instant::now();
        assert_eq!(dog.await.unwrap(), Overstay::Stalled);
        assert!(started.elapsed() <= Duration::from_secs(5));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_being_handled_owes_nothing_yet() {
        let a = Activity::new();
        let _handling = a.begin(true);
        let started = Instant::now();
        // Reading its body, asking the store: not a stall; only the last resort.
        assert_eq!(watchdog(a, D).await, Overstay::Stuck);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn an_http1_connection_waits_for_its_next_head_no_longer_than_the_header_timeout() {
        let a = Activity::new();
        let answered = Guarded::wrap(Body::from("{}"), a.begin(false));
        drop(answered);
        let started = Instant::now();
        assert_eq!(watchdog(a, D).await, Overstay::NoRequest);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_in_flight_until_its_answer_body_is_gone() {
        let a = Activity::new();
        let body = Guarded::wrap(Body::from("{}"), a.begin(true));
        assert_eq!((a.in_flight(), a.owed.load(Ordering::Acquire)), (1, 1));
        drop(body);
        assert_eq!((a.in_flight(), a.owed.load(Ordering::Acquire)), (0, 0));
    }
}
