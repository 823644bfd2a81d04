//! The Redis store: the state of many otpd nodes, on one Redis or a Redis Cluster.
//!
//! Every operation is one round trip: a single command, or one Lua script run with
//! `EVALSHA` (the client loads it again after a `NOSCRIPT`, e.g. after a failover to
//! a replica that never saw it). The scripts apply the lifecycle of
//! [`crate::domain::verification`] to the fields of [`record`]; the same behaviour tests run
//! against this store and the memory one, so the two cannot drift apart unseen.
//!
//! Time: the lifecycle runs on the `now` otpd passes in, like the memory store, so
//! nodes agree as far as their clocks do. Redis's own clock only expires keys, with
//! relative TTLs (a record lives `retention` past its validity).

pub mod conn;
pub mod directory;
pub mod events;
pub mod keys;
pub mod limiter;
pub mod queue;
pub mod record;
pub mod subscriber;

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Script, Value};

use crate::domain::clock::UnixMillis;
use crate::domain::subscriber::{Device, MAX_DEVICES, Platform, Subscriber};
use crate::domain::verification::{
    AckOutcome, AnswerOutcome, CancelOutcome, CheckOutcome, Closing, EscalationCause,
    ResendRefusal, SendDetails, SendResult, SendState, Status, Verification,
};
use crate::numbers::e164::E164;
use crate::numbers::reader::Region;
use crate::policy::limiter::{Check, CheckLimits, IssueLimits, Limiter, Refusal};
use crate::secrets::code::CodeMac;
use crate::secrets::device_key::Decision;
use crate::secrets::id::VerificationId;

pub use conn::{ConnectError, Redis};
pub use keys::Keys;

use super::{
    CheckResult, CheckedWithin, Fingerprint, Idempotency, IdempotencyBegin, IssueOutcome,
    JobLedger, JobReceipt, PutSubscriber, Registry, StoreError, StoredResponse, TakeSend,
    Verifications, check_charged, issue_charged,
};
use conn::unavailable;
use record::{Fields, bytes, fields, text};

const PRELUDE: &str = include_str!("lua/prelude.lua");

/// A verification script: the prelude, then its body.
fn lifecycle(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

struct Scripts {
    issue: Script,
    check: Script,
    close: Script,
    record_send: Script,
    record_report: Script,
    acknowledge: Script,
    answer: Script,
    escalate: Script,
    due: Script,
    take_send: Script,
    idempotency_begin: Script,
    idempotency_finish: Script,
    idempotency_abandon: Script,
    subscriber_put: Script,
    subscriber_delete: Script,
    device_add: Script,
    device_remove: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    issue: lifecycle(&format!(
        "local SUBJECT_KEPT = {}\n{}\n{}",
        super::MAX_OF_SUBJECT,
        limiter::GCRA_LIB,
        include_str!("lua/issue.lua")
    )),
    check: lifecycle(&format!(
        "{}\n{}",
        limiter::GCRA_LIB,
        include_str!("lua/check.lua")
    )),
    close: lifecycle(include_str!("lua/close.lua")),
    record_send: lifecycle(include_str!("lua/record_send.lua")),
    record_report: lifecycle(include_str!("lua/record_report.lua")),
    acknowledge: lifecycle(include_str!("lua/acknowledge.lua")),
    answer: lifecycle(include_str!("lua/answer.lua")),
    escalate: lifecycle(include_str!("lua/escalate.lua")),
    due: Script::new(include_str!("lua/due.lua")),
    take_send: Script::new(include_str!("lua/take_send.lua")),
    idempotency_begin: Script::new(include_str!("lua/idempotency_begin.lua")),
    idempotency_finish: Script::new(include_str!("lua/idempotency_finish.lua")),
    idempotency_abandon: Script::new(include_str!("lua/idempotency_abandon.lua")),
    subscriber_put: Script::new(include_str!("lua/subscriber_put.lua")),
    subscriber_delete: Script::new(include_str!("lua/subscriber_delete.lua")),
    device_add: Script::new(include_str!("lua/device_add.lua")),
    device_remove: Script::new(include_str!("lua/device_remove.lua")),
});

pub struct RedisStore {
    redis: Redis,
    keys: Keys,
    retention: Duration,
    /// With a queue: each stream's capacity; sends are appended to the streams in
    /// the same step as they are recorded.
    queue: Option<usize>,
    /// Where the jobs of requests this node accepts go: straight to its workers.
    handoff: Option<Handoff>,
    /// The limits, on the same Redis: decided by the issue's and check's scripts
    /// on one server, around them on a cluster.
    limiter: limiter::RedisLimiter,
}

/// A node's own workers, handed the job of each request the node accepts in the
/// same script that queues it (see `hand_over` in the scripts), so that delivering
/// what it accepted costs the node no read of the streams. Only while fewer than
/// `ahead` jobs wait for its workers: past that, the job is left in the stream
/// for whichever node has room.
pub struct Handoff {
    pub reader: std::sync::Arc<queue::JobReader>,
    pub queue: super::jobs::DeliveryQueue,
    pub ahead: usize,
}

impl RedisStore {
    /// `retention`: how long a record stays readable after its validity ends.
    pub fn new(redis: Redis, keys: Keys, retention: Duration) -> Self {
        Self {
            limiter: limiter::RedisLimiter::new(redis.clone(), keys.clone()),
            redis,
            keys,
            retention,
            queue: None,
            handoff: None,
        }
    }

    /// Hand the jobs of the requests this node accepts to its workers (see
    /// [`Handoff`]).
    pub fn with_handoff(mut self, handoff: Handoff) -> Self {
        self.handoff = Some(handoff);
        self
    }

    /// Queue every send on the delivery streams (see [`queue`]), each holding at most
    /// `capacity` unanswered jobs; past that, `issue` answers `Overloaded`.
    pub fn with_queue(mut self, capacity: usize) -> Self {
        self.queue = Some(capacity.max(1));
        self
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Issue (see [`Store::issue`]), deciding `limits` in the same script when given.
    async fn issue_with(
        &self,
        candidate: &Verification,
        now: UnixMillis,
        limits: Option<&IssueLimits<'_>>,
    ) -> Result<IssueOutcome, StoreError> {
        let c = candidate;
        // A place in this node's queue for the job, if it has room for one more.
        let slot = self.queue.and(self.handoff.as_ref()).and_then(|h| {
            (h.queue.depth() < h.ahead)
                .then(|| h.queue.try_reserve().ok())
                .flatten()
                .map(|slot| (h, slot))
        });
        let stream = self.keys.stream_of(&c.id);
        let mut inv = SCRIPTS.issue.prepare_invoke();
        inv.key(self.keys.dedupe(c.to, &c.purpose, c.client.as_deref()))
            .key(self.keys.verification(&c.id))
            .key(self.keys.escalations_of(&c.id))
            .key(&stream)
            .arg(now.0)
            .arg(ms_until(now, c.expires_at.plus(self.retention)))
            .arg(ms_until(now, c.expires_at))
            .arg(c.channel.as_str())
            .arg(c.sends()[0].channel.as_str())
            .arg(
                c.escalate_at()
                    .map_or_else(String::new, |t| t.0.to_string()),
            )
            .arg(self.queue.map_or_else(String::new, |n| n.to_string()))
            .arg(slot.as_ref().map_or("", |(h, _)| &*h.reader.name));
        let no_fallback: &[Check<'_>] = &[];
        let (gate, charge, fallback) = match limits {
            Some(l) => (l.gate, l.charge, l.fallback.unwrap_or(no_fallback)),
            None => (no_fallback, no_fallback, no_fallback),
        };
        match limits {
            Some(l) => inv.arg(l.now / 1000),
            None => inv.arg(""),
        };
        inv.arg(gate.len())
            .arg(charge.len())
            .arg(fallback.len())
            .arg(
                charge
                    .iter()
                    .position(|c| c.limit == crate::policy::limits::name::RESERVED)
                    .map_or(0, |i| i + 1),
            );
        let all = || gate.iter().chain(charge).chain(fallback);
        for check in all() {
            let (emission, tolerance) = limiter::quota_micros(check.quota);
            inv.key(self.keys.limit(check)).arg(emission).arg(tolerance);
        }
        if let Some(subject) = &c.subject {
            inv.key(
                self.keys
                    .subject_index(self.keys.partition_of(c.id.shard_tag()), subject),
            );
        }
        for (k, v) in record::encode(c) {
            inv.arg(k).arg(v);
        }
        if let Some(subject) = &c.subject {
            // The name of the subject's wrong-code limit, for the check script to
            // find it without hashing (see `Keys::limit_name`).
            inv.arg("sk").arg(
                self.keys
                    .limit_name(
                        crate::policy::limits::name::CHECK_SUBJECT,
                        subject.as_bytes(),
                    )
                    .to_string(),
            );
        }
        let mut reply = items(self.run(&inv).await?)?.into_iter();
        let kind = text(reply.next().ok_or_else(|| corrupt("empty"))?)?;
        let outcome = match kind.as_str() {
            "created" => IssueOutcome::Created,
            "overloaded" => IssueOutcome::Overloaded,
            "limited" => {
                let at = int(reply.next().ok_or_else(|| corrupt("no limit"))?)?;
                let wait: u64 = text(reply.next().ok_or_else(|| corrupt("no wait"))?)?
                    .parse()
                    .map_err(|_| corrupt("limit wait"))?;
                let check = all()
                    .nth((at as usize).wrapping_sub(1))
                    .ok_or_else(|| corrupt("limit position"))?;
                IssueOutcome::Limited(Refusal {
                    limit: check.limit,
                    retry_after: Duration::from_micros(wait),
                })
            }
            "resent" => {
                let key = bytes(reply.next().ok_or_else(|| corrupt("no key"))?)?;
                let id = Keys::id_of(&key).ok_or_else(|| corrupt("a key without an id"))?;
                let v = self.verification(id, reply.next().ok_or_else(|| corrupt("no record"))?)?;
                IssueOutcome::Resent(Box::new(v))
            }
            "refused" => {
                let mut next = || reply.next().ok_or_else(|| corrupt("short refusal"));
                let key = bytes(next()?)?;
                let existing = Keys::id_of(&key).ok_or_else(|| corrupt("a key without an id"))?;
                let why = text(next()?)?;
                let wait_ms = int(next()?)?;
                let expires_at = UnixMillis(int(next()?)?);
                let refusal = match why.as_str() {
                    "max_sends" => ResendRefusal::MaxSends,
                    // Round up: a client that waits exactly Retry-After must succeed.
                    _ => ResendRefusal::Cooldown {
                        retry_after: Duration::from_secs((wait_ms.max(1) as u64).div_ceil(1000)),
                    },
                };
                IssueOutcome::Refused {
                    existing,
                    refusal,
                    expires_at,
                }
            }
            other => return Err(corrupt(other)),
        };
        // The job handed over with it (Lua's false arrives as nil).
        if let (Some((h, slot)), Some(entry @ Value::Array(_))) = (slot, reply.next()) {
            match h.reader.handed_over(&stream, entry) {
                Ok(Some(job)) => slot.send(job),
                Ok(None) => {}
                // Left pending with this node: claimed once idle, like any job.
                Err(e) => tracing::warn!(error = %e, "a job handed over cannot be read"),
            }
        }
        Ok(outcome)
    }

    /// Check (see [`Store::check`]), deciding `limits` in the same script when given.
    async fn check_with(
        &self,
        id: &VerificationId,
        candidate: &CodeMac,
        client: Option<&str>,
        now: UnixMillis,
        limits: Option<&CheckLimits<'_>>,
    ) -> Result<CheckedWithin, StoreError> {
        let mut inv = SCRIPTS.check.prepare_invoke();
        inv.key(self.keys.verification(id))
            .arg(&candidate.0[..])
            .arg(client_arg(client))
            .arg(now.0);
        match limits {
            None => {
                inv.arg("").arg("").arg("").arg("").arg("").arg("");
            }
            Some(l) => {
                inv.arg(l.now / 1000);
                match &l.before {
                    Some(c) => {
                        let (emission, tolerance) = limiter::quota_micros(c.quota);
                        inv.key(self.keys.limit(c)).arg(emission).arg(tolerance);
                    }
                    None => {
                        inv.arg("").arg("");
                    }
                }
                match l.wrong_per_subject {
                    Some(quota) => {
                        // The key ends with the record's `sk` (see `issue_with`).
                        let prefix = self
                            .keys
                            .limit_prefix(crate::policy::limits::name::CHECK_SUBJECT);
                        let (emission, tolerance) = limiter::quota_micros(quota);
                        inv.arg(prefix).arg(emission).arg(tolerance);
                    }
                    None => {
                        inv.arg("").arg("").arg("");
                    }
                }
            }
        }
        let reply = self.run(&inv).await?;
        if reply == Value::Nil {
            return Ok(CheckedWithin::NotFound);
        }
        let micros = |v: Value| -> Result<u64, StoreError> {
            text(v)?.parse().map_err(|_| corrupt("limit wait"))
        };
        let mut r = items(reply)?.into_iter();
        let mut next = || r.next().ok_or_else(|| corrupt("short check reply"));
        let outcome = text(next()?)?;
        if outcome == "limited" {
            let before = limits
                .and_then(|l| l.before)
                .ok_or_else(|| corrupt("limited"))?;
            return Ok(CheckedWithin::Limited(Refusal {
                limit: before.limit,
                retry_after: Duration::from_micros(micros(next()?)?),
            }));
        }
        let attempts_left = u8::try_from(int(next()?)?).map_err(corrupt)?;
        let to = E164::from_digits_unchecked(text(next()?)?.parse().map_err(corrupt)?);
        let country = Region::parse(&text(next()?)?);
        let subject = Some(text(next()?)?)
            .filter(|s| !s.is_empty())
            .map(String::into_boxed_str);
        let subject_refused = match next()? {
            Value::BulkString(b) if b.is_empty() => None,
            wait => Some(Refusal {
                limit: crate::policy::limits::name::CHECK_SUBJECT,
                retry_after: Duration::from_micros(micros(wait)?),
            }),
        };
        let outcome = match outcome.as_str() {
            "approved" => CheckOutcome::Approved,
            "wrong" => CheckOutcome::Wrong { attempts_left },
            "locked" => CheckOutcome::Locked,
            "expired" => CheckOutcome::Expired,
            "canceled" => CheckOutcome::Canceled,
            "already_approved" => CheckOutcome::AlreadyApproved,
            "denied" => CheckOutcome::Denied,
            "no_code" => CheckOutcome::NoCode,
            other => return Err(corrupt(other)),
        };
        let locked_now = !text(next()?)?.is_empty();
        Ok(CheckedWithin::Checked {
            result: CheckResult {
                outcome,
                attempts_left,
                to,
                country,
                subject,
                locked_now,
            },
            subject_refused,
        })
    }

    async fn run(&self, inv: &redis::ScriptInvocation<'_>) -> Result<Value, StoreError> {
        let mut conn = self.redis.conn().await?;
        inv.invoke_async(&mut conn).await.map_err(unavailable)
    }

    async fn command(&self, cmd: &redis::Cmd) -> Result<Value, StoreError> {
        let mut conn = self.redis.conn().await?;
        cmd.query_async(&mut conn).await.map_err(unavailable)
    }
}

fn client_arg(client: Option<&str>) -> String {
    client.map_or_else(String::new, |c| format!("={c}"))
}

/// Milliseconds from `now` to `t`, at least 1 (Redis refuses a zero TTL).
fn ms_until(now: UnixMillis, t: UnixMillis) -> i64 {
    (t.0 - now.0).max(1)
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("unexpected script reply: {what}"))
}

fn items(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(corrupt(format!("{other:?}"))),
    }
}

fn int(v: Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(i),
        other => text(other)?.parse().map_err(corrupt),
    }
}

fn status_named(s: &str) -> Result<Status, StoreError> {
    Ok(match s {
        "pending" => Status::Pending,
        "approved" => Status::Approved,
        "denied" => Status::Denied,
        "canceled" => Status::Canceled,
        "locked" => Status::Locked,
        "expired" => Status::Expired,
        other => return Err(corrupt(format!("status {other:?}"))),
    })
}

impl RedisStore {
    fn verification(&self, id: VerificationId, v: Value) -> Result<Verification, StoreError> {
        record::decode(id, &fields(v)?)
    }

    /// A `{outcome, HGETALL}` reply (nil: unknown).
    fn outcome_and_record(
        &self,
        id: VerificationId,
        reply: Value,
    ) -> Result<Option<(String, Verification)>, StoreError> {
        if reply == Value::Nil {
            return Ok(None);
        }
        let mut r = items(reply)?.into_iter();
        let outcome = text(r.next().ok_or_else(|| corrupt("no outcome"))?)?;
        let v = self.verification(id, r.next().ok_or_else(|| corrupt("no record"))?)?;
        Ok(Some((outcome, v)))
    }

    /// Record a channel's answer; with a receipt, acknowledge and delete its job in
    /// the same script (the stream is in the verification's slot).
    async fn record_answer(
        &self,
        id: &VerificationId,
        send: u8,
        result: SendResult,
        details: Option<SendDetails>,
        now: UnixMillis,
        receipt: Option<&JobReceipt>,
    ) -> Result<bool, StoreError> {
        let (kind, text) = match result {
            SendResult::Sent { reference } => ("sent", reference),
            SendResult::Failed { error } => ("failed", error),
            SendResult::Expired { error } => ("expired", error),
        };
        let mut inv = SCRIPTS.record_send.prepare_invoke();
        inv.key(self.keys.verification(id))
            .key(self.keys.stream_of(id))
            .arg(send)
            .arg(kind)
            .arg(text)
            .arg(
                details
                    .as_ref()
                    .map(record::encode_details)
                    .unwrap_or_default(),
            )
            .arg(now.0)
            .arg(receipt.map_or("", |r| r.entry.as_str()));
        Ok(int(self.run(&inv).await?)? == 1)
    }
}

#[async_trait]
impl Verifications for RedisStore {
    /// On one server, where a script may touch any key, the limits live beside the
    /// verifications and the issue's script decides them. On a cluster they are on
    /// other slots than the verification's, so the limiter decides them in scripts of
    /// their own around it.
    async fn issue(
        &self,
        candidate: &Verification,
        now: UnixMillis,
        limits: &IssueLimits<'_>,
    ) -> Result<IssueOutcome, StoreError> {
        if limits.gate.is_empty() && limits.charge.is_empty() {
            return self.issue_with(candidate, now, None).await;
        }
        if self.redis.is_cluster() {
            let issue = self.issue_with(candidate, now, None);
            return issue_charged(&self.limiter, limits, issue).await;
        }
        self.issue_with(candidate, now, Some(limits)).await
    }

    async fn check(
        &self,
        id: &VerificationId,
        candidate: &CodeMac,
        client: Option<&str>,
        now: UnixMillis,
        limits: &CheckLimits<'_>,
    ) -> Result<CheckedWithin, StoreError> {
        if limits.before.is_none() && limits.wrong_per_subject.is_none() {
            return self.check_with(id, candidate, client, now, None).await;
        }
        if self.redis.is_cluster() {
            let check = async {
                Ok(self
                    .check_with(id, candidate, client, now, None)
                    .await?
                    .into_result())
            };
            let lock = || async { self.close(id, client, Closing::Lock, now).await.map(|_| ()) };
            return check_charged(&self.limiter, limits, check, lock).await;
        }
        self.check_with(id, candidate, client, now, Some(limits))
            .await
    }

    fn limiter(&self) -> std::sync::Arc<dyn Limiter> {
        std::sync::Arc::new(self.limiter.clone())
    }

    async fn get(&self, id: &VerificationId) -> Result<Option<Verification>, StoreError> {
        let f = fields(
            self.command(redis::cmd("HGETALL").arg(self.keys.verification(id)))
                .await?,
        )?;
        if f.is_empty() {
            return Ok(None);
        }
        record::decode(*id, &f).map(Some)
    }

    async fn of_subject(
        &self,
        subject: &str,
        limit: usize,
    ) -> Result<Vec<Verification>, StoreError> {
        let limit = limit.min(super::MAX_OF_SUBJECT);
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Every partition's index, then the records they name (those gone since
        // are skipped).
        let lists: Vec<redis::Cmd> = (0..self.keys.partitions())
            .map(|p| {
                let mut c = redis::cmd("ZREVRANGE");
                c.arg(self.keys.subject_index(p, subject))
                    .arg(0)
                    .arg(limit - 1);
                c
            })
            .collect();
        let mut ids = Vec::new();
        for list in self.redis.query_all(&lists).await? {
            for key in items(list)? {
                let key = bytes(key)?;
                ids.push(Keys::id_of(&key).ok_or_else(|| corrupt("a key without an id"))?);
            }
        }
        let reads: Vec<redis::Cmd> = ids
            .iter()
            .map(|id| {
                let mut c = redis::cmd("HGETALL");
                c.arg(self.keys.verification(id));
                c
            })
            .collect();
        let mut found = Vec::new();
        for (id, record) in ids.into_iter().zip(self.redis.query_all(&reads).await?) {
            let f = fields(record)?;
            if !f.is_empty() {
                found.push(record::decode(id, &f)?);
            }
        }
        Ok(super::newest(found, limit))
    }

    async fn close(
        &self,
        id: &VerificationId,
        client: Option<&str>,
        how: Closing,
        now: UnixMillis,
    ) -> Result<Option<(CancelOutcome, Verification)>, StoreError> {
        let mut inv = SCRIPTS.close.prepare_invoke();
        inv.key(self.keys.verification(id))
            .arg(client_arg(client))
            .arg(match how {
                Closing::Cancel => "cancel",
                Closing::Lock => "lock",
            })
            .arg(now.0);
        let Some((outcome, v)) = self.outcome_and_record(*id, self.run(&inv).await?)? else {
            return Ok(None);
        };
        let outcome = match outcome.as_str() {
            "canceled" => CancelOutcome::Canceled,
            "already_canceled" => CancelOutcome::AlreadyCanceled,
            other => match other.strip_prefix("final:") {
                Some(s) => CancelOutcome::Final(status_named(s)?),
                None => return Err(corrupt(other)),
            },
        };
        Ok(Some((outcome, v)))
    }

    async fn acknowledge(
        &self,
        id: &VerificationId,
        now: UnixMillis,
    ) -> Result<Option<(AckOutcome, Verification)>, StoreError> {
        let mut inv = SCRIPTS.acknowledge.prepare_invoke();
        inv.key(self.keys.verification(id))
            .key(self.keys.escalations_of(id))
            .arg(now.0);
        let Some((outcome, v)) = self.outcome_and_record(*id, self.run(&inv).await?)? else {
            return Ok(None);
        };
        let outcome = match outcome.as_str() {
            "acknowledged" => AckOutcome::Acknowledged,
            "already_acknowledged" => AckOutcome::AlreadyAcknowledged,
            "not_push" => AckOutcome::NotPush,
            other => AckOutcome::Final(status_named(other)?),
        };
        Ok(Some((outcome, v)))
    }

    async fn answer(
        &self,
        id: &VerificationId,
        decision: Decision,
        device: &str,
        now: UnixMillis,
    ) -> Result<Option<(AnswerOutcome, Verification)>, StoreError> {
        let mut inv = SCRIPTS.answer.prepare_invoke();
        inv.key(self.keys.verification(id))
            .key(self.keys.escalations_of(id))
            .arg(decision.as_str())
            .arg(device)
            .arg(now.0);
        let Some((outcome, v)) = self.outcome_and_record(*id, self.run(&inv).await?)? else {
            return Ok(None);
        };
        let outcome = match outcome.as_str() {
            "answered" => AnswerOutcome::Answered(v.status(now)),
            "not_app" => AnswerOutcome::NotApp,
            other => AnswerOutcome::Final(status_named(other)?),
        };
        Ok(Some((outcome, v)))
    }

    async fn escalate(
        &self,
        id: &VerificationId,
        cause: EscalationCause,
        now: UnixMillis,
    ) -> Result<Option<Verification>, StoreError> {
        let mut inv = SCRIPTS.escalate.prepare_invoke();
        inv.key(self.keys.verification(id))
            .key(self.keys.escalations_of(id))
            .key(self.keys.stream_of(id))
            .arg(cause.as_str())
            .arg(now.0)
            .arg(if self.queue.is_some() { "1" } else { "" });
        match self.run(&inv).await? {
            Value::Nil => Ok(None),
            reply => self.verification(*id, reply).map(Some),
        }
    }

    async fn due_escalations(
        &self,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<VerificationId>, StoreError> {
        // One script over every partition's index on one server; one per partition
        // (its own slot) on a cluster.
        let partitions: Vec<u16> = (0..self.keys.partitions()).collect();
        let groups: Vec<&[u16]> = if self.redis.is_cluster() {
            partitions.chunks(1).collect()
        } else {
            vec![&partitions]
        };
        let mut due = Vec::new();
        for group in groups {
            if due.len() >= limit {
                break;
            }
            let mut inv = SCRIPTS.due.prepare_invoke();
            for p in group {
                inv.key(self.keys.escalations(*p));
            }
            inv.arg(now.0).arg(limit - due.len());
            for key in items(self.run(&inv).await?)? {
                let key = bytes(key)?;
                due.push(Keys::id_of(&key).ok_or_else(|| corrupt("a key without an id"))?);
            }
        }
        Ok(due)
    }

    /// Redis expires records by itself (each key has its TTL).
    async fn sweep(&self, _now: UnixMillis) -> Result<usize, StoreError> {
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.command(&redis::cmd("PING")).await.map(drop)
    }
}

#[async_trait]
impl JobLedger for RedisStore {
    async fn take_send(
        &self,
        id: &VerificationId,
        send: u8,
        worker: &str,
    ) -> Result<TakeSend, StoreError> {
        let mut inv = SCRIPTS.take_send.prepare_invoke();
        inv.key(self.keys.verification(id)).arg(send).arg(worker);
        Ok(match text(self.run(&inv).await?)?.as_str() {
            "go" => TakeSend::Go,
            "answered" => TakeSend::Answered,
            "interrupted" => TakeSend::Interrupted,
            "mine" => TakeSend::Mine,
            "gone" => TakeSend::Gone,
            other => return Err(corrupt(other)),
        })
    }

    async fn record_send(
        &self,
        id: &VerificationId,
        send: u8,
        result: SendResult,
        details: Option<SendDetails>,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.record_answer(id, send, result, details, now, None)
            .await
    }

    async fn record_send_and_ack(
        &self,
        id: &VerificationId,
        send: u8,
        result: SendResult,
        details: Option<SendDetails>,
        now: UnixMillis,
        receipt: &JobReceipt,
    ) -> Result<bool, StoreError> {
        self.record_answer(id, send, result, details, now, Some(receipt))
            .await
    }

    async fn record_report(
        &self,
        id: &VerificationId,
        send: u8,
        state: SendState,
        error: Option<String>,
        now: UnixMillis,
    ) -> Result<Option<Verification>, StoreError> {
        let mut inv = SCRIPTS.record_report.prepare_invoke();
        inv.key(self.keys.verification(id))
            .arg(send)
            .arg(state.as_str())
            .arg(error.map_or_else(String::new, |e| format!("={e}")))
            .arg(now.0);
        match self.run(&inv).await? {
            Value::Nil => Ok(None),
            record => self.verification(*id, record).map(Some),
        }
    }
}

#[async_trait]
impl Idempotency for RedisStore {
    async fn idempotency_begin(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        now: UnixMillis,
        ttl: Duration,
    ) -> Result<IdempotencyBegin, StoreError> {
        let mut inv = SCRIPTS.idempotency_begin.prepare_invoke();
        inv.key(self.keys.idempotency(key))
            .arg(&fingerprint[..])
            .arg(now.0)
            .arg(ttl.as_millis().max(1) as u64);
        let mut r = items(self.run(&inv).await?)?.into_iter();
        let kind = text(r.next().ok_or_else(|| corrupt("empty"))?)?;
        Ok(match kind.as_str() {
            "started" => IdempotencyBegin::Started,
            "in_progress" => IdempotencyBegin::InProgress,
            "mismatch" => IdempotencyBegin::Mismatch,
            "replay" => {
                let status = u16::try_from(int(r.next().ok_or_else(|| corrupt("no status"))?)?)
                    .map_err(corrupt)?;
                let body = bytes(r.next().ok_or_else(|| corrupt("no body"))?)?;
                IdempotencyBegin::Replay(StoredResponse {
                    status,
                    body: body.into(),
                })
            }
            other => return Err(corrupt(other)),
        })
    }

    async fn idempotency_finish(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        response: StoredResponse,
        now: UnixMillis,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut inv = SCRIPTS.idempotency_finish.prepare_invoke();
        inv.key(self.keys.idempotency(key))
            .arg(&fingerprint[..])
            .arg(response.status)
            .arg(&response.body[..])
            .arg(now.0)
            .arg(ttl.as_millis().max(1) as u64);
        self.run(&inv).await.map(drop)
    }

    async fn idempotency_abandon(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
    ) -> Result<(), StoreError> {
        let mut inv = SCRIPTS.idempotency_abandon.prepare_invoke();
        inv.key(self.keys.idempotency(key)).arg(&fingerprint[..]);
        self.run(&inv).await.map(drop)
    }
}

#[async_trait]
impl Registry for RedisStore {
    async fn put_subscriber(&self, s: Subscriber) -> Result<PutSubscriber, StoreError> {
        let mut inv = SCRIPTS.subscriber_put.prepare_invoke();
        let owner = self.keys.phone_owner(s.phone);
        inv.key(self.keys.subscriber(&s.subject))
            .key(&owner)
            .arg(&*s.subject);
        for (k, v) in subscriber::encode(&s) {
            inv.arg(k).arg(v);
        }
        inv.arg("pk").arg(&owner);
        let mut r = items(self.run(&inv).await?)?.into_iter();
        let kind = text(r.next().ok_or_else(|| corrupt("empty"))?)?;
        Ok(match kind.as_str() {
            "created" => PutSubscriber::Created,
            "replaced" => PutSubscriber::Replaced,
            "taken" => PutSubscriber::PhoneTaken {
                by: text(r.next().ok_or_else(|| corrupt("no owner"))?)?,
            },
            other => return Err(corrupt(other)),
        })
    }

    async fn get_subscriber(&self, subject: &str) -> Result<Option<Subscriber>, StoreError> {
        let f = fields(
            self.command(redis::cmd("HGETALL").arg(self.keys.subscriber(subject)))
                .await?,
        )?;
        subscriber::decode(subject, &f)
    }

    async fn delete_subscriber(&self, subject: &str) -> Result<bool, StoreError> {
        let mut inv = SCRIPTS.subscriber_delete.prepare_invoke();
        inv.key(self.keys.subscriber(subject)).arg(subject);
        Ok(int(self.run(&inv).await?)? == 1)
    }

    async fn add_device(
        &self,
        subject: &str,
        device: Device,
    ) -> Result<Option<(bool, Subscriber)>, StoreError> {
        let mut inv = SCRIPTS.device_add.prepare_invoke();
        inv.key(self.keys.subscriber(subject))
            .arg(device.platform.as_str())
            .arg(&*device.token)
            .arg(subscriber::device_line(&device))
            .arg(MAX_DEVICES);
        let reply = self.run(&inv).await?;
        if reply == Value::Nil {
            return Ok(None);
        }
        let mut r = items(reply)?.into_iter();
        let added = int(r.next().ok_or_else(|| corrupt("empty"))?)? == 1;
        let f: Fields = fields(r.next().ok_or_else(|| corrupt("no record"))?)?;
        let s = subscriber::decode(subject, &f)?.ok_or_else(|| corrupt("an empty subscriber"))?;
        Ok(Some((added, s)))
    }

    async fn remove_device(
        &self,
        subject: &str,
        platform: Platform,
        token: &str,
    ) -> Result<Option<bool>, StoreError> {
        let mut inv = SCRIPTS.device_remove.prepare_invoke();
        inv.key(self.keys.subscriber(subject))
            .arg(platform.as_str())
            .arg(token);
        match self.run(&inv).await? {
            Value::Nil => Ok(None),
            reply => Ok(Some(int(reply)? == 1)),
        }
    }
}
