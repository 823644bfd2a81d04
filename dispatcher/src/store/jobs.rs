//! Delivery jobs and this process's queue of them: one send of one code, waiting
//! for a worker. The API reserves a place *before* it creates anything, so a full
//! queue turns into a `503` with nothing half-created; the Redis store's streams
//! hand jobs into the same queue on each node. Kept with the store — its job
//! ledger — so that the store and the delivery workers share the job without
//! depending on each other.

use std::sync::Arc;
use std::time::Duration;

use otpd_adapters::ChannelKind;
use tokio::sync::mpsc;

use super::JobReceipt;
use crate::domain::clock::UnixMillis;
use crate::domain::locale::Locale;
use crate::domain::name::Name;
use crate::domain::verification::{Challenge, MatchCode};
use crate::numbers::e164::E164;
use crate::policy::sojourn::Sojourn;
use crate::secrets::code::Code;
use crate::secrets::id::VerificationId;

/// One send of one code. It carries the plaintext code (wiped on drop) because the
/// store only has its MAC and sealed form; it lives only in this process's memory.
#[derive(Debug)]
pub struct DeliveryJob {
    pub id: VerificationId,
    pub send: u8,
    pub to: E164,
    pub kind: ChannelKind,
    pub locale: Locale,
    pub purpose: Name,
    pub code: Code,
    pub expires_at: UnixMillis,
    /// Whose devices a push goes to.
    pub subject: Option<Box<str>>,
    pub match_code: Option<MatchCode>,
    /// An approval request's challenge: the push asks the app to answer it.
    pub challenge: Option<Challenge>,
    /// The API client that asked: its display name is shown in an approval push,
    /// and the send's events are its own.
    pub client: Option<Name>,
    /// The provider's acceptance counts as the app's acknowledgement.
    pub provider_ack: bool,
    /// Where to acknowledge the job, when it came from the store's queue.
    pub receipt: Option<JobReceipt>,
    /// When it was queued: its wait until a worker takes it is what admission watches
    /// (see [`crate::policy::sojourn`]).
    pub queued_at: UnixMillis,
}

/// The sending half of the queue, shared by all request handlers.
#[derive(Clone)]
pub struct DeliveryQueue {
    tx: mpsc::Sender<DeliveryJob>,
    capacity: usize,
    sojourn: Arc<Sojourn>,
}

/// The taking half, for the workers: it measures how long each job waited.
pub struct DeliveryJobs {
    rx: mpsc::Receiver<DeliveryJob>,
    sojourn: Arc<Sojourn>,
}

impl DeliveryJobs {
    /// The next job, `None` once the queue is closed and empty.
    pub async fn recv(&mut self) -> Option<DeliveryJob> {
        self.rx.recv().await
    }

    /// The next job if one is waiting.
    pub fn try_recv(&mut self) -> Option<DeliveryJob> {
        self.rx.try_recv().ok()
    }

    /// Take no more jobs: what is queued can still be received.
    pub fn close(&mut self) {
        self.rx.close();
    }

    /// What measures how long the jobs taken waited (admission reads it).
    pub fn sojourn(&self) -> Arc<Sojourn> {
        self.sojourn.clone()
    }
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
    /// At most `capacity` jobs waiting; and new work is refused while the jobs taken
    /// have been waiting longer than `max_delay` (see [`crate::policy::sojourn`]).
    pub fn bounded(capacity: usize, max_delay: Duration) -> (Self, DeliveryJobs) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let sojourn = Arc::new(Sojourn::new(max_delay));
        (
            Self {
                tx,
                capacity: capacity.max(1),
                sojourn: sojourn.clone(),
            },
            DeliveryJobs { rx, sojourn },
        )
    }

    /// Whether jobs wait so long that no more should be accepted now.
    pub fn behind(&self, now: UnixMillis) -> bool {
        self.sojourn.over(now)
    }

    /// How long jobs have been waiting lately (the shortest wait of the last window).
    pub fn standing_delay(&self, now: UnixMillis) -> Option<Duration> {
        self.sojourn.standing(now)
    }

    pub fn try_reserve(&self) -> Result<QueueSlot<'_>, QueueFull> {
        self.tx.try_reserve().map(QueueSlot).map_err(|_| QueueFull)
    }

    /// Queue `job`, waiting for room; `Err` once the queue is closed (shutdown).
    pub async fn send(&self, job: DeliveryJob) -> Result<(), QueueFull> {
        self.tx.send(job).await.map_err(|_| QueueFull)
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
