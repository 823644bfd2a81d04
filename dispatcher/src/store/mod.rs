//! The store's seams: [`Verifications`], the delivery [`JobLedger`],
//! [`Idempotency`] records and the subscriber [`Registry`] — each implemented by the
//! embedded store ([`memory`]) and the Redis one ([`redis`]), and held together as
//! [`Stores`].
//!
//! Every operation that reads and then writes is one call on the trait, so that each
//! implementation can make it atomic in its own way: one shard lock in [`memory`], one
//! Lua script (one round trip) on Redis. Nothing above the store does
//! read-modify-write.

mod chunked;
pub mod embedded;
pub mod events;
pub mod fake;
pub mod idempotency;
pub mod jobs;
pub mod memory;
pub mod redis;
pub mod registry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::domain::clock::UnixMillis;
use crate::domain::subscriber::{Device, Platform, Subscriber};
use crate::domain::verification::{
    AckOutcome, AnswerOutcome, CancelOutcome, CheckOutcome, Closing, EscalationCause,
    ResendRefusal, SendDetails, SendResult, SendState, Verification,
};
use crate::numbers::e164::E164;
use crate::policy::limiter::{
    CheckLimits, Denial, IssueLimits, Limiter, Refusal, Unavailable, charge_issue, refund_issue,
};
use crate::secrets::code::CodeMac;
use crate::secrets::id::VerificationId;

pub use self::redis::RedisStore;
pub use memory::MemoryStore;

/// What `issue` did.
#[derive(Debug, Clone)]
pub enum IssueOutcome {
    /// No pending verification existed for the destination and purpose: the candidate
    /// was stored, with its first send queued.
    Created,
    /// A pending one existed: another send of its code was queued on it. The
    /// candidate was discarded.
    Resent(Box<Verification>),
    /// The store queues deliveries itself (Redis streams) and that queue is full:
    /// nothing was written.
    Overloaded,
    /// A limit refused the request: nothing was written or charged.
    Limited(Refusal),
    /// The limits could not be read: nothing was written or charged.
    LimitsUnavailable(Unavailable),
    /// A pending one existed but may not be re-sent yet (or any more).
    Refused {
        existing: VerificationId,
        refusal: ResendRefusal,
        /// When the existing verification expires (a new one can be asked for then).
        expires_at: UnixMillis,
    },
}

/// What [`Store::check`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckedWithin {
    /// The `before` limit refused: nothing was counted.
    Limited(Refusal),
    /// The limits could not be read.
    LimitsUnavailable(Unavailable),
    /// No such verification (of that client).
    NotFound,
    Checked {
        result: CheckResult,
        /// The wrong code took the subject past its limit (the verification was
        /// locked for it).
        subject_refused: Option<Refusal>,
    },
}

impl CheckedWithin {
    /// The attempt's result, if it was counted.
    pub fn into_result(self) -> Option<CheckResult> {
        match self {
            CheckedWithin::Checked { result, .. } => Some(result),
            _ => None,
        }
    }
}

/// `found` newest first (by creation, then id, so that every store answers alike),
/// at most `limit` and [`MAX_OF_SUBJECT`].
pub(crate) fn newest(mut found: Vec<Verification>, limit: usize) -> Vec<Verification> {
    found.sort_unstable_by(|a, b| {
        (b.created_at, b.id.as_bytes()).cmp(&(a.created_at, a.id.as_bytes()))
    });
    found.truncate(limit.min(MAX_OF_SUBJECT));
    found
}

/// [`Store::issue`] for a store whose limits live where its own atomic step cannot
/// reach them (the embedded store's limiter, a Redis Cluster's other slots): the
/// limits are charged on `limiter` first, then `issue` runs, and the charge is
/// given back if it sent nothing.
pub(crate) async fn issue_charged(
    limiter: &dyn Limiter,
    limits: &IssueLimits<'_>,
    issue: impl Future<Output = Result<IssueOutcome, StoreError>>,
) -> Result<IssueOutcome, StoreError> {
    let charged = match charge_issue(limiter, limits).await {
        Ok(charged) => charged,
        Err(Denial::Refused(r)) => return Ok(IssueOutcome::Limited(r)),
        Err(Denial::Unavailable(u)) => return Ok(IssueOutcome::LimitsUnavailable(u)),
    };
    let outcome = issue.await;
    if !matches!(outcome, Ok(IssueOutcome::Created | IssueOutcome::Resent(_))) {
        refund_issue(limiter, limits, charged).await;
    }
    outcome
}

/// [`Store::check`] the same way: the `before` limit charged on `limiter`, the
/// attempt counted by `check`, a wrong code charged to the subject's quota and,
/// past it, the verification locked by `lock`.
pub(crate) async fn check_charged<C, L>(
    limiter: &dyn Limiter,
    limits: &CheckLimits<'_>,
    check: C,
    lock: impl FnOnce() -> L,
) -> Result<CheckedWithin, StoreError>
where
    C: Future<Output = Result<Option<CheckResult>, StoreError>>,
    L: Future<Output = Result<(), StoreError>>,
{
    if let Some(before) = limits.before {
        match limiter.check(&[before], limits.now).await {
            Ok(()) => {}
            Err(Denial::Refused(r)) => return Ok(CheckedWithin::Limited(r)),
            Err(Denial::Unavailable(u)) => return Ok(CheckedWithin::LimitsUnavailable(u)),
        }
    }
    let Some(result) = check.await? else {
        return Ok(CheckedWithin::NotFound);
    };
    let mut subject_refused = None;
    if matches!(
        result.outcome,
        CheckOutcome::Wrong { .. } | CheckOutcome::Locked
    ) && let (Some(subject), Some(quota)) = (&result.subject, limits.wrong_per_subject)
    {
        let c = crate::policy::limiter::Check {
            limit: crate::policy::limits::name::CHECK_SUBJECT,
            key: subject.as_bytes(),
            quota,
        };
        match limiter.check(&[c], limits.now).await {
            Ok(()) => {}
            Err(Denial::Refused(r)) => {
                // Guessing across verifications: this one is locked too.
                lock().await?;
                subject_refused = Some(r);
            }
            Err(Denial::Unavailable(u)) => return Ok(CheckedWithin::LimitsUnavailable(u)),
        }
    }
    Ok(CheckedWithin::Checked {
        result,
        subject_refused,
    })
}

/// What `check` did, with what the answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub outcome: CheckOutcome,
    pub attempts_left: u8,
    /// Whose code it was: the number (and its country) for the pumping defence's
    /// conversion counts, the subject for the wrong-code limit.
    pub to: E164,
    pub country: Option<crate::numbers::reader::Region>,
    pub subject: Option<Box<str>>,
    /// This attempt used up the last one and locked the verification (a
    /// [`CheckOutcome::Locked`] that is not only the earlier lock read back).
    pub locked_now: bool,
}

/// Where a delivery job handed out by a store-held queue is acknowledged.
#[derive(Debug)]
pub struct JobReceipt {
    /// The stream (queue) the job came from.
    pub stream: String,
    /// Its entry there.
    pub entry: String,
    /// Whether it was claimed from another worker that went quiet (else read new).
    pub claimed: bool,
    /// Tells the queue this node still has the job, until the job is dropped.
    pub hold: Hold,
}

/// Kept with a job while this node has it; dropping it lets the queue know the node
/// is done with the job (answered, or left for another to claim).
pub struct Hold(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Hold {
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self(Some(Box::new(release)))
    }

    /// A hold that tells nobody anything.
    pub fn none() -> Self {
        Self(None)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release();
        }
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hold")
    }
}

/// Whether a worker may hand a send to its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeSend {
    /// Yes: it is now this worker's.
    Go,
    /// It was answered already (the job came round again): only acknowledge it.
    Answered,
    /// Another node took it and never answered. It may have reached the channel,
    /// so it is not sent again.
    Interrupted,
    /// Another worker of this node has it (a second copy of the same job): it is
    /// theirs to answer.
    Mine,
    /// The verification (or that send) is gone.
    Gone,
}

/// What `put_subscriber` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutSubscriber {
    Created,
    Replaced,
    /// The number belongs to another subject; nothing was written.
    PhoneTaken {
        by: String,
    },
}

/// Hash of what an idempotent request carried (method, path, body): a retry must carry
/// the same.
pub type Fingerprint = [u8; 32];

/// A response kept for replay under an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Bytes,
}

/// What `idempotency_begin` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// The key is new: it is now reserved for this request.
    Started,
    /// The same request completed before: answer with this.
    Replay(StoredResponse),
    /// The same key is being processed right now by another request.
    InProgress,
    /// The key was used with a different request.
    Mismatch,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backing service cannot be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something that cannot be a valid record.
    #[error("store returned a corrupt record: {0}")]
    Corrupt(String),
}

/// How many of one subject's verifications [`Verifications::of_subject`] answers at
/// most (and the Redis store indexes per partition).
pub const MAX_OF_SUBJECT: usize = 50;

/// Verifications: issued within their limits, checked, answered in the app,
/// acknowledged, canceled, escalated, swept. Every read-then-write is one call, so
/// that each implementation makes it atomic in its own way.
#[async_trait]
pub trait Verifications: Send + Sync + 'static {
    /// Issue-or-resend, atomically, within `limits`. If a *pending* verification
    /// exists for the candidate's destination and purpose, queue another send of its
    /// code on it (subject to its cooldown and send limit) and discard the candidate;
    /// otherwise store the candidate, which becomes the destination's pending
    /// verification. Refused by the gate or the charges → [`IssueOutcome::Limited`],
    /// nothing written; a code sent (created or resent) → the charges taken;
    /// anything else → nothing charged.
    async fn issue(
        &self,
        candidate: &Verification,
        now: UnixMillis,
        limits: &IssueLimits<'_>,
    ) -> Result<IssueOutcome, StoreError>;

    /// Check-and-count, atomically, within `limits`: compare `candidate` with the
    /// stored MAC in constant time, count the attempt, and apply the lifecycle.
    /// `client` must be the one that asked for the verification, else it is not
    /// found (and nothing is counted). A wrong code past the subject's quota locks
    /// the verification too.
    async fn check(
        &self,
        id: &VerificationId,
        candidate: &CodeMac,
        client: Option<&str>,
        now: UnixMillis,
        limits: &CheckLimits<'_>,
    ) -> Result<CheckedWithin, StoreError>;

    /// The limiter that holds this store's limits: the one its `issue` and `check`
    /// decide them on, for the limits decided on their own (guesses, answers).
    fn limiter(&self) -> Arc<dyn Limiter>;

    async fn get(&self, id: &VerificationId) -> Result<Option<Verification>, StoreError>;

    /// The verifications of `subject` (in its normal form) still held, whatever
    /// client asked for them, newest first and at most `limit`
    /// ([`MAX_OF_SUBJECT`] at most). For an operator's lookup, never on a request's
    /// path: it may visit every shard or partition.
    async fn of_subject(
        &self,
        subject: &str,
        limit: usize,
    ) -> Result<Vec<Verification>, StoreError>;

    /// Cancel if pending. `None` if unknown.
    /// Cancel or lock a pending verification of `client` (else not found).
    async fn close(
        &self,
        id: &VerificationId,
        client: Option<&str>,
        how: Closing,
        now: UnixMillis,
    ) -> Result<Option<(CancelOutcome, Verification)>, StoreError>;

    /// The push arrived (the app said so, or the provider, per configuration):
    /// record it and disarm the escalation, atomically. `None` if unknown.
    async fn acknowledge(
        &self,
        id: &VerificationId,
        now: UnixMillis,
    ) -> Result<Option<(AckOutcome, Verification)>, StoreError>;

    /// An app's answer to approval request `id`, already verified (the device is
    /// the subject's, the signature and timestamp good): the first one makes it
    /// final (approved or denied) and disarms its escalation, atomically, so that an
    /// app answer and a typed PIN never both approve. `None` if unknown.
    async fn answer(
        &self,
        id: &VerificationId,
        decision: crate::secrets::device_key::Decision,
        device: &str,
        now: UnixMillis,
    ) -> Result<Option<(AnswerOutcome, Verification)>, StoreError>;

    /// Queue the SMS send of a pending escalation if it is due for `cause`, atomically
    /// and at most once per verification, whichever node or task asks — so a timer
    /// firing on two nodes, or again after a restart, sends one SMS. Returns the
    /// verification with the new send last, or `None` if nothing was escalated.
    async fn escalate(
        &self,
        id: &VerificationId,
        cause: EscalationCause,
        now: UnixMillis,
    ) -> Result<Option<Verification>, StoreError>;

    /// Up to `limit` verifications whose escalation time has come. They stay listed
    /// until `escalate` escalates them (or finds nothing left to escalate), so a pass
    /// cut short by an error loses none; some may have been acknowledged meanwhile,
    /// and `escalate` decides.
    async fn due_escalations(
        &self,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<VerificationId>, StoreError>;

    /// Drop what has outlived its retention; returns how many records went.
    async fn sweep(&self, now: UnixMillis) -> Result<usize, StoreError>;

    /// Whether the store can serve requests (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The delivery job ledger: which worker has a send, and what came of it (the
/// channel's answer, then the delivery report).
#[async_trait]
pub trait JobLedger: Send + Sync + 'static {
    /// Before handing send `send` to a channel: make it `worker`'s, so that a job
    /// handed out twice is sent once. A store that hands each job out once (the
    /// memory one) always says go.
    async fn take_send(
        &self,
        _id: &VerificationId,
        _send: u8,
        _worker: &str,
    ) -> Result<TakeSend, StoreError> {
        Ok(TakeSend::Go)
    }

    /// Record a channel's answer for send number `send`. Returns false if the
    /// verification is gone or that send was already answered.
    async fn record_send(
        &self,
        id: &VerificationId,
        send: u8,
        result: SendResult,
        details: Option<SendDetails>,
        now: UnixMillis,
    ) -> Result<bool, StoreError>;

    /// [`Store::record_send`], and acknowledge the job that carried the send, in one
    /// step (a store that keeps no queue has nothing to acknowledge).
    async fn record_send_and_ack(
        &self,
        id: &VerificationId,
        send: u8,
        result: SendResult,
        details: Option<SendDetails>,
        now: UnixMillis,
        _receipt: &JobReceipt,
    ) -> Result<bool, StoreError> {
        self.record_send(id, send, result, details, now).await
    }

    /// Record a delivery report for send number `send`. Returns the verification
    /// as the report left it — what its event tells, without a read of its own —
    /// or `None` if it is gone or the report changes nothing.
    async fn record_report(
        &self,
        id: &VerificationId,
        send: u8,
        state: SendState,
        error: Option<String>,
        now: UnixMillis,
    ) -> Result<Option<Verification>, StoreError>;
}

/// Idempotency records: a retried request with the same key gets the first answer.
#[async_trait]
pub trait Idempotency: Send + Sync + 'static {
    /// Reserve `key` for a request with `fingerprint`, or find what it was used for.
    /// A reservation that is never finished lapses after `ttl`.
    async fn idempotency_begin(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        now: UnixMillis,
        ttl: Duration,
    ) -> Result<IdempotencyBegin, StoreError>;

    /// Keep `response` as the answer for `key` for `ttl`.
    async fn idempotency_finish(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        response: StoredResponse,
        now: UnixMillis,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Release a reservation whose request failed, so that a retry can run.
    async fn idempotency_abandon(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
    ) -> Result<(), StoreError>;
}

/// The subscriber registry: who has which number and which devices; a number
/// belongs to at most one subject.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Create or replace a subscriber, atomically keeping each number to one subject.
    async fn put_subscriber(&self, subscriber: Subscriber) -> Result<PutSubscriber, StoreError>;

    async fn get_subscriber(&self, subject: &str) -> Result<Option<Subscriber>, StoreError>;

    /// Returns whether there was such a subscriber (its number is freed).
    async fn delete_subscriber(&self, subject: &str) -> Result<bool, StoreError>;

    /// `None` if the subject is unknown; else whether the device fit, and the result.
    async fn add_device(
        &self,
        subject: &str,
        device: Device,
    ) -> Result<Option<(bool, Subscriber)>, StoreError>;

    /// `None` if the subject is unknown; else whether there was such a device.
    async fn remove_device(
        &self,
        subject: &str,
        platform: Platform,
        token: &str,
    ) -> Result<Option<bool>, StoreError>;
}

/// Every seam in one: what the embedded and Redis stores are.
pub trait Store: Verifications + JobLedger + Idempotency + Registry {}

impl<T: Verifications + JobLedger + Idempotency + Registry> Store for T {}

/// The store, seam by seam, as the engine and the delivery workers use it. Usually
/// one store behind all four ([`Stores::of`]); a test may put a fake behind one.
#[derive(Clone)]
pub struct Stores {
    pub verifications: Arc<dyn Verifications>,
    pub jobs: Arc<dyn JobLedger>,
    pub idempotency: Arc<dyn Idempotency>,
    pub registry: Arc<dyn Registry>,
}

impl Stores {
    /// Every seam from one store.
    pub fn of<S: Store>(store: Arc<S>) -> Stores {
        Stores {
            verifications: store.clone(),
            jobs: store.clone(),
            idempotency: store.clone(),
            registry: store,
        }
    }
}
