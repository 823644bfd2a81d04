//! A client's webhook: its events, from its log, POSTed to its URL as the Standard
//! Webhooks specification says — at least once, in order per verification, retried
//! with exponential backoff and jitter for `retry_for`, then given up and counted
//! as dead.
//!
//! One [`Deliverer`] per client with a webhook. A taker task reads the log into a
//! bounded channel; the deliverer holds at most `max_held` events in its
//! [`Lanes`] and has at most `concurrency` requests out. A receiver that fails,
//! hangs or answers slowly fills its own lanes and its log's backlog: the request
//! path only appends to the log ([`super::feed`]) and never waits for a receiver.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use otpd_adapters::h2post;

use super::lanes::{Held, Lanes};
use crate::domain::clock::Clock;
use crate::domain::name::Name;
use crate::secrets::webhook::WebhookSecret;
use crate::store::events::{EventId, EventLog, KeptEvent};

/// A receiver's answer is read to this many bytes (so the connection can be kept)
/// and no further.
const MAX_ANSWER: usize = 16 * 1024;
/// Events read from the log at a time.
const TAKE: usize = 256;
/// How long a take waits for an event before looking at the stop signal again.
const TAKE_WAIT: Duration = Duration::from_millis(500);

/// How long an h2c request may wait to share its write with those that follow. At
/// the national peak events come every few tens of microseconds, so a write then
/// carries dozens of them and the receiver answers them together; an event's
/// delivery is late by at most this.
const H2C_LINGER: Duration = Duration::from_millis(2);

/// How a client's webhook is called (`[webhooks]`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// One attempt's limit, connection included.
    pub timeout: Duration,
    /// How long after it happened an event is still tried; then it is dead.
    pub retry_for: Duration,
    /// The wait after the first failure; it doubles with each one after.
    pub first_retry: Duration,
    /// The longest wait between two attempts.
    pub max_retry: Duration,
    /// Requests out at once, per client.
    pub concurrency: usize,
}

/// How a deliverer reaches its receiver.
#[derive(Clone)]
pub enum Transport {
    /// reqwest: HTTP/1.1, or HTTP/2 where the receiver's TLS offers it.
    Any(reqwest::Client),
    /// HTTP/2 without TLS (`webhooks.h2c`) on a client made for exactly this: many
    /// small POSTs to one URL ([`otpd_adapters::h2post`]), a connection per
    /// deliverer. A general HTTP/2 stack cost more per event than everything else
    /// otpd does for it.
    H2c(h2post::ClientOptions),
}

impl Transport {
    /// h2c to `url` (`http://host:port/path?query`), `timeout` per request, at
    /// most `streams` open at once.
    pub fn h2c(url: &reqwest::Url, timeout: Duration, streams: usize) -> Transport {
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        Transport::H2c(h2post::ClientOptions {
            host: url
                .host_str()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: url.port_or_known_default().unwrap_or(80),
            path,
            content_type: "application/json".into(),
            timeout,
            max_streams: streams,
            linger: H2C_LINGER,
        })
    }
}

/// The requests a deliverer has out, on its transport.
enum Posting {
    Any {
        client: reqwest::Client,
        out: FuturesUnordered<futures_util::future::BoxFuture<'static, (Held, Attempt)>>,
    },
    /// Boxed: the client holds its whole connection state.
    H2c(Box<h2post::Client<Held>>),
}

impl Posting {
    fn new(transport: &Transport) -> Posting {
        match transport {
            Transport::Any(client) => Posting::Any {
                client: client.clone(),
                out: FuturesUnordered::new(),
            },
            Transport::H2c(options) => Posting::H2c(Box::new(h2post::Client::new(options.clone()))),
        }
    }

    fn out(&self) -> usize {
        match self {
            Posting::Any { out, .. } => out.len(),
            Posting::H2c(client) => client.out(),
        }
    }

    /// Start POSTing `held`'s event, signed.
    fn post(&mut self, held: Held, signed: Signed, url: &reqwest::Url, timeout: Duration) {
        match self {
            Posting::Any { client, out } => {
                let mut headers = http::HeaderMap::with_capacity(4);
                let value = |v: &str| http::HeaderValue::try_from(v).expect("ASCII");
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                headers.insert("webhook-id", value(&signed.id));
                headers.insert("webhook-timestamp", value(&signed.timestamp));
                headers.insert("webhook-signature", value(&signed.signature));
                let request = client
                    .post(url.clone())
                    .timeout(timeout)
                    .headers(headers)
                    .body(signed.body);
                out.push(Box::pin(async move { (held, over_reqwest(request).await) }));
            }
            Posting::H2c(client) => {
                let post = h2post::Post::new(signed.body.into())
                    .header("webhook-id", signed.id.as_bytes())
                    .header("webhook-timestamp", signed.timestamp.as_bytes())
                    .secret_header("webhook-signature", signed.signature.as_bytes());
                client.post(held, post);
            }
        }
    }

    /// An attempt that has ended already, if any (no I/O).
    fn ended(&mut self) -> Option<(Held, Attempt)> {
        match self {
            Posting::Any { out, .. } => out.next().now_or_never().flatten(),
            Posting::H2c(client) => client
                .ended()
                .map(|(held, outcome)| (held, attempt(outcome))),
        }
    }

    /// The next attempt that ended; pending while none is out.
    async fn next(&mut self) -> (Held, Attempt) {
        match self {
            Posting::Any { out, .. } => match out.next().await {
                Some(ended) => ended,
                None => std::future::pending().await,
            },
            Posting::H2c(client) => {
                let (held, outcome) = client.next().await;
                (held, attempt(outcome))
            }
        }
    }
}

fn attempt(outcome: h2post::Outcome) -> Attempt {
    match outcome {
        h2post::Outcome::Answered(s) if (200..300).contains(&s) => Attempt::Taken,
        h2post::Outcome::Answered(s) => Attempt::Failed(format!("answered {s}")),
        h2post::Outcome::Failed(e) => Attempt::Failed(e),
    }
}

/// An event's body and its Standard Webhooks headers' values.
struct Signed {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

/// Where a client's events go.
#[derive(Debug, Clone)]
pub struct Target {
    pub client: Arc<str>,
    pub url: reqwest::Url,
    pub secret: WebhookSecret,
}

/// The wait before the next attempt of an event that failed `failures` times:
/// `first_retry` doubled per failure up to `max_retry`, then a random point in its
/// upper half (`jitter` in 0..1), so that the retries of many events that failed
/// together do not come back together.
pub fn retry_delay(settings: &WebhookSettings, failures: u32, jitter: f64) -> Duration {
    let doubling = 1u32
        .checked_shl(failures.saturating_sub(1).min(30))
        .unwrap_or(u32::MAX);
    let base = settings
        .first_retry
        .saturating_mul(doubling)
        .min(settings.max_retry);
    base / 2 + base.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// A client's webhook counters, made once (a labelled look-up per event cost more
/// than the rest of its bookkeeping).
struct Counters {
    taken: metrics::Counter,
    failed: metrics::Counter,
    dead: metrics::Counter,
}

impl Counters {
    fn new(client: &str) -> Counters {
        let attempts = |outcome: &'static str| metrics::counter!("otpd_webhook_attempts_total", "client" => client.to_string(), "outcome" => outcome);
        Counters {
            taken: attempts("taken"),
            failed: attempts("failed"),
            dead: metrics::counter!("otpd_webhook_dead_total", "client" => client.to_string()),
        }
    }
}

/// How an attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// The receiver answered 2xx.
    Taken,
    /// Anything else: another status, a refused connection, a timeout.
    Failed(String),
}

pub struct Deliverer {
    pub target: Target,
    pub http: Transport,
    pub log: Arc<dyn EventLog>,
    pub settings: WebhookSettings,
    pub clock: Arc<dyn Clock>,
}

impl Deliverer {
    /// Deliver until `stop`. Events taken but not yet delivered when it stops are
    /// handed out again at the next start.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let max_held = self.settings.concurrency.max(1) * 8;
        let (tx, mut rx) = mpsc::channel(max_held);
        let taker = tokio::spawn(take(
            self.log.clone(),
            self.target.client.clone(),
            tx,
            stop.clone(),
        ));
        let jitter = RandomState::new();
        let counters = Counters::new(&self.target.client);
        let mut lanes = Lanes::default();
        let mut posting = Posting::new(&self.http);
        let mut done: Vec<EventId> = Vec::new();
        let mut open = true;
        loop {
            if !done.is_empty() {
                self.mark_done(&mut done).await;
            }
            let now = self.clock.now();
            while posting.out() < self.settings.concurrency.max(1) {
                let Some(held) = lanes.next(now) else { break };
                let signed = self.sign(&held);
                posting.post(held, signed, &self.target.url, self.settings.timeout);
            }
            let retry_in = lanes
                .next_retry()
                .map(|at| Duration::from_millis(u64::try_from(at.0 - now.0).unwrap_or(0)));
            tokio::select! {
                got = rx.recv(), if open && lanes.held() < max_held => match got {
                    Some(event) => {
                        lanes.push(event);
                        while lanes.held() < max_held {
                            let Ok(event) = rx.try_recv() else { break };
                            lanes.push(event);
                        }
                    }
                    None => open = false,
                },
                (held, attempt) = posting.next(), if posting.out() > 0 => {
                    self.settle(&mut lanes, held, attempt, (&jitter, &counters), &mut done);
                    // Settle all that have come together before the next round of
                    // writes and log updates.
                    while let Some((held, attempt)) = posting.ended() {
                        self.settle(&mut lanes, held, attempt, (&jitter, &counters), &mut done);
                    }
                }
                () = tokio::time::sleep(retry_in.unwrap_or(Duration::MAX)), if retry_in.is_some() => {}
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
        // What is out is abandoned; what was taken is handed out again next start.
        self.mark_done(&mut done).await;
        let _ = taker.await;
    }

    /// Note how `held`'s attempt went: done, dead, or to be tried again.
    fn settle(
        &self,
        lanes: &mut Lanes,
        held: Held,
        attempt: Attempt,
        (jitter, counters): (&RandomState, &Counters),
        done: &mut Vec<EventId>,
    ) {
        let client = &*self.target.client;
        let key = held.event.order;
        let error = match attempt {
            Attempt::Taken => {
                counters.taken.increment(1);
                lanes.taken(key);
                done.push(held.event.id);
                return;
            }
            Attempt::Failed(error) => error,
        };
        counters.failed.increment(1);
        let now = self.clock.now();
        let unit =
            (jitter.hash_one((held.event.id, held.failures)) >> 11) as f64 / (1u64 << 53) as f64;
        let retry_at = now.plus(retry_delay(&self.settings, held.failures + 1, unit));
        if retry_at >= held.event.at.plus(self.settings.retry_for) {
            counters.dead.increment(1);
            tracing::warn!(
                client,
                event = %held.event.id,
                attempts = held.failures + 1,
                %error,
                "webhook event given up: its receiver did not take it within retry_for"
            );
            lanes.taken(key);
            done.push(held.event.id);
            return;
        }
        tracing::debug!(client, event = %held.event.id, %error, "webhook attempt failed");
        lanes.failed(key, retry_at);
    }

    async fn mark_done(&self, done: &mut Vec<EventId>) {
        if let Err(e) = self.log.done(&self.target.client, done).await {
            // Left not done, they go again after a restart: at least once.
            tracing::warn!(client = %self.target.client, error = %e, "cannot mark webhook events done");
        }
        done.clear();
    }

    /// `held`'s event as its next attempt sends it, signed now.
    fn sign(&self, held: &Held) -> Signed {
        let body = held.event.body();
        let id = held.event.id.to_string();
        let timestamp = self.clock.now().0.div_euclid(1000);
        let signature = self.target.secret.sign(&id, timestamp, &body);
        Signed {
            id,
            timestamp: timestamp.to_string(),
            signature,
            body,
        }
    }
}

/// One POST through reqwest: HTTP/1.1, or HTTP/2 where TLS agrees on it.
async fn over_reqwest(request: reqwest::RequestBuilder) -> Attempt {
    match request.send().await {
        Ok(mut answer) => {
            let status = answer.status();
            // Read a little of the answer so that the connection is kept.
            let mut read = 0;
            while read < MAX_ANSWER {
                match answer.chunk().await {
                    Ok(Some(c)) => read += c.len(),
                    _ => break,
                }
            }
            if status.is_success() {
                Attempt::Taken
            } else {
                Attempt::Failed(format!("answered {status}"))
            }
        }
        Err(e) if e.is_timeout() => Attempt::Failed("timed out".into()),
        Err(e) if e.is_connect() => Attempt::Failed("cannot connect".into()),
        Err(e) => Attempt::Failed(e.to_string()),
    }
}

/// Read `client`'s events from `log` into `to`, until stopped.
async fn take(
    log: Arc<dyn EventLog>,
    client: Arc<str>,
    to: mpsc::Sender<KeptEvent>,
    stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let room = to.capacity().clamp(1, TAKE);
        match log.take(&client, room, TAKE_WAIT).await {
            Ok(events) => {
                for e in events {
                    if to.send(e).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(client = %client, error = %e, "cannot read the webhook events");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Keep `otpd_webhook_backlog{client}` (events not yet done) up to date, until
/// stopped.
pub async fn report_backlog(
    log: Arc<dyn EventLog>,
    clients: Vec<Name>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut dropped = 0;
    loop {
        for client in &clients {
            if let Ok(n) = log.backlog(client).await {
                metrics::gauge!("otpd_webhook_backlog", "client" => client.to_string())
                    .set(n as f64);
            }
        }
        let now = log.dropped();
        if now > dropped {
            metrics::counter!("otpd_webhook_dropped_total").increment(now - dropped);
            dropped = now;
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookSettings {
        WebhookSettings {
            timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(86_400),
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(3600),
            concurrency: 8,
        }
    }

    #[test]
    fn retries_double_up_to_the_cap_within_their_upper_half() {
        let s = settings();
        assert_eq!(retry_delay(&s, 1, 1.0), Duration::from_secs(5));
        assert_eq!(retry_delay(&s, 1, 0.0), Duration::from_millis(2500));
        assert_eq!(retry_delay(&s, 2, 1.0), Duration::from_secs(10));
        assert_eq!(retry_delay(&s, 4, 1.0), Duration::from_secs(40));
        assert_eq!(retry_delay(&s, 20, 1.0), Duration::from_secs(3600));
        assert_eq!(retry_delay(&s, u32::MAX, 0.5), Duration::from_secs(2700));
    }
}
