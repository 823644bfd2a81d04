//! Delivery: the bounded job queue between the API and the channels, and the workers
//! that drain it.
//!
//! The API reserves a queue slot *before* it creates anything, so a full queue turns
//! into a `503` with nothing half-created, and the request path never waits on a
//! channel. Workers render the message, submit it, retry what the channel calls
//! temporary (never past the code's expiry), and record the answer in the store.

use std::sync::Arc;
use std::time::Duration;

use otpd_adapters::{Channel, ChannelError, ChannelKind, DeliveryReport, Message, ReportState};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;

use crate::clock::{Clock, UnixMillis};
use crate::code::Code;
use crate::id::VerificationId;
use crate::locale::Locale;
use crate::metrics::Metrics;
use crate::phone::E164;
use crate::store::Store;
use crate::template;
use crate::verification::{RequestedChannel, SendResult, SendState};

/// One send of one code. It carries the plaintext code (wiped on drop) because the
/// store only has its MAC and sealed form; it lives only in this process's memory.
#[derive(Debug)]
pub struct DeliveryJob {
    pub id: VerificationId,
    pub send: u8,
    pub to: E164,
    pub kind: ChannelKind,
    pub locale: Locale,
    pub purpose: Arc<str>,
    pub code: Code,
    pub expires_at: UnixMillis,
}

/// Which kind of channel a request goes to. Without a subscriber registry there is
/// no registered app to push to, so `auto` means SMS for now.
pub fn resolve(requested: RequestedChannel) -> ChannelKind {
    match requested {
        RequestedChannel::Auto | RequestedChannel::Sms => ChannelKind::Sms,
        RequestedChannel::Push => ChannelKind::Push,
    }
}

/// The sending half of the queue, shared by all request handlers.
#[derive(Clone)]
pub struct DeliveryQueue {
    tx: mpsc::Sender<DeliveryJob>,
    capacity: usize,
}

/// The queue is full (or closed for shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the delivery queue is full")]
pub struct QueueFull;

/// A reserved place in the queue.
pub struct QueueSlot<'a>(mpsc::Permit<'a, DeliveryJob>);

impl QueueSlot<'_> {
    pub fn send(self, job: DeliveryJob) {
        self.0.send(job);
    }
}

impl DeliveryQueue {
    pub fn bounded(capacity: usize) -> (Self, mpsc::Receiver<DeliveryJob>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                capacity: capacity.max(1),
            },
            rx,
        )
    }

    pub fn try_reserve(&self) -> Result<QueueSlot<'_>, QueueFull> {
        self.tx.try_reserve().map(QueueSlot).map_err(|_| QueueFull)
    }

    pub fn depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The channel serving each kind.
#[derive(Clone)]
pub struct Channels {
    pub sms: Arc<dyn Channel>,
    pub push: Arc<dyn Channel>,
}

impl Channels {
    /// Each channel once, however many kinds it serves.
    pub fn distinct(&self) -> Vec<Arc<dyn Channel>> {
        let mut all = vec![self.sms.clone()];
        if !Arc::ptr_eq(&self.sms, &self.push) {
            all.push(self.push.clone());
        }
        all
    }

    pub fn for_kind(&self, kind: ChannelKind) -> &Arc<dyn Channel> {
        match kind {
            ChannelKind::Sms => &self.sms,
            ChannelKind::Push => &self.push,
        }
    }
}

/// How workers retry what a channel calls temporary.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Submits per send, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles each time.
    pub backoff: Duration,
}

pub struct Workers {
    pub channels: Channels,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub concurrency: usize,
    pub retry: RetryPolicy,
}

/// The next job, or `None` once the queue is closed and drained. Closes the queue
/// when `stop` turns true.
async fn next_job(
    rx: &Mutex<mpsc::Receiver<DeliveryJob>>,
    stop: &mut watch::Receiver<bool>,
) -> Option<DeliveryJob> {
    let mut rx = rx.lock().await;
    loop {
        if *stop.borrow() {
            rx.close();
        }
        tokio::select! {
            job = rx.recv() => return job,
            changed = stop.changed(), if !*stop.borrow() => {
                if changed.is_err() {
                    // The stop sender is gone: nobody can ask for a stop any more;
                    // keep serving until the queue's senders are gone.
                    return rx.recv().await;
                }
            }
        }
    }
}

impl Workers {
    /// Drain the queue until `stop` turns true, then stop taking new jobs (the queue
    /// closes, so the API answers 503), finish what is queued and in flight, and
    /// return. The caller bounds the whole with its shutdown deadline.
    ///
    /// `concurrency` long-lived tasks share the receiver; the one holding it waits for
    /// the next job (or the stop signal) and lets go as soon as it has one. A busy
    /// worker never holds it, so jobs wait in the bounded queue — where they count
    /// against its capacity — until a worker is free, and no task is spawned per job.
    pub async fn run(self, rx: mpsc::Receiver<DeliveryJob>, stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = JoinSet::new();
        for _ in 0..this.concurrency.max(1) {
            let (this, rx, mut stop) = (this.clone(), rx.clone(), stop.clone());
            workers.spawn(async move {
                while let Some(job) = next_job(&rx, &mut stop).await {
                    this.deliver(job).await;
                }
            });
        }
        while workers.join_next().await.is_some() {}
    }

    async fn deliver(&self, job: DeliveryJob) {
        let channel = self.channels.for_kind(job.kind).clone();
        let started = self.clock.now();
        let result = self.submit_with_retries(channel.as_ref(), &job).await;
        let now = self.clock.now();
        match &result {
            SendResult::Sent { .. } => self.metrics.sent(job.kind, started.until(now)),
            SendResult::Failed { .. } => self.metrics.send_failed(job.kind),
        }
        match self.store.record_send(&job.id, job.send, result, now).await {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(id = %job.id, send = job.send, error = %e, "could not record a send result")
            }
        }
    }

    async fn submit_with_retries(&self, channel: &dyn Channel, job: &DeliveryJob) -> SendResult {
        let mut wait = self.retry.backoff;
        let mut attempt = 1;
        loop {
            let now = self.clock.now();
            if now >= job.expires_at {
                return SendResult::Failed {
                    error: "the code expired before it could be sent".into(),
                };
            }
            let minutes = now.until(job.expires_at).as_secs().div_ceil(60).max(1);
            let message = Message {
                verification_id: job.id.to_string(),
                send: job.send,
                to: job.to.to_string(),
                kind: job.kind,
                locale: job.locale.as_str(),
                purpose: job.purpose.to_string(),
                text: template::render(job.locale, &job.code, minutes),
                expires_at_ms: job.expires_at.0,
            };
            let error = match channel.submit(&message).await {
                Ok(receipt) => {
                    return SendResult::Sent {
                        reference: receipt.reference,
                    };
                }
                Err(e) => e,
            };
            let retry_after = match &error {
                ChannelError::Temporary { retry_after, .. } => retry_after.unwrap_or(wait),
                _ => Duration::MAX,
            };
            let deadline = self.clock.now().plus(retry_after);
            if !error.is_retriable()
                || attempt >= self.retry.max_attempts
                || deadline >= job.expires_at
            {
                tracing::info!(id = %job.id, send = job.send, channel = channel.name(), attempt, error = %error, "send failed");
                return SendResult::Failed {
                    error: format!("{}: {error}", channel.name()),
                };
            }
            tracing::debug!(id = %job.id, send = job.send, attempt, error = %error, "send failed, retrying");
            tokio::time::sleep(retry_after).await;
            wait = wait.saturating_mul(2);
            attempt += 1;
        }
    }
}

/// Apply a channel's delivery reports to the verifications they are about, until the
/// channel closes its report stream.
pub async fn apply_reports(
    mut reports: mpsc::Receiver<DeliveryReport>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
) {
    while let Some(report) = reports.recv().await {
        let state = match report.state {
            ReportState::Delivered => SendState::Delivered,
            ReportState::Undeliverable => SendState::Undeliverable,
            ReportState::Expired => SendState::Expired,
            ReportState::Rejected => SendState::Rejected,
        };
        metrics.reported(state);
        let Ok(id) = report.verification_id.parse::<VerificationId>() else {
            tracing::warn!(reference = %report.reference, "delivery report for a malformed verification id");
            continue;
        };
        match store
            .record_report(&id, report.send, state, report.error, clock.now())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(%id, send = report.send, reference = %report.reference, "delivery report changed nothing (gone or already reported)")
            }
            Err(e) => tracing::warn!(%id, error = %e, "could not record a delivery report"),
        }
    }
}
