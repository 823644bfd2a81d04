//! The engine: what an API call does, independent of HTTP. It turns a validated request
//! into a code, a stored verification and a queued delivery, and a typed code into a
//! check — the flow of DESIGN.md between "validate" and "201".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::delivery::{self, DeliveryJob, DeliveryQueue};
use crate::domain::clock::{Clock, UnixMillis};
use crate::domain::locale::Locale;
use crate::domain::verification::{
    AckOutcome, AnswerOutcome, CancelOutcome, Challenge, Closing, EscalationCause, MatchCode,
    NewVerification, Policy, RequestedChannel, ResendRefusal, SendResult, Verification,
};
use crate::metrics::Metrics;
use crate::numbers::e164::E164;
use crate::numbers::reader::NumberLine;
use crate::policy::limiter::Refusal;
use crate::secrets::code::{Code, CodeKeys, OsRandom, RandomError, RandomSource};
use crate::secrets::device_key::Decision;
use crate::secrets::id::{ShardTag, VerificationId};
use crate::store::{
    CheckLimits, CheckResult, CheckedWithin, IssueLimits, IssueOutcome, Store, StoreError,
};
use otpd_adapters::ChannelKind;

/// A purpose (`login`, `signup`, …) and the policy its verifications get.
#[derive(Debug, Clone)]
pub struct Purpose {
    pub name: Arc<str>,
    pub policy: Policy,
    /// The push provider's acceptance counts as the app's acknowledgement (else only
    /// `POST …/ack` from the app does).
    pub provider_ack: bool,
    /// How long an approval request (`channel: app`) stays open.
    pub app_ttl: Duration,
    /// Requests by subject must carry the subject's contrast value.
    pub require_contrast: bool,
}

/// A request to send a code, already validated.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub to: E164,
    pub line: NumberLine,
    pub channel: RequestedChannel,
    pub locale: Locale,
    pub purpose: Purpose,
    pub subject: Option<Box<str>>,
    /// The API client asking (`None` when the API is open).
    pub client: Option<Arc<str>>,
    /// Whether the subject has a registered device (known from the registry).
    pub has_devices: bool,
    /// `to` is not the registered subject's number (a client allowed to override
    /// asked): recorded on the verification.
    pub to_override: bool,
    /// A request for a pending verification whose last send is younger than this
    /// is the same request again: it gets that verification, and nothing is sent.
    pub dedupe_window: Duration,
}

/// Whether `issue` made a new verification, re-sent a pending one, or found the
/// same request just made (and sent nothing).
#[derive(Debug, Clone)]
pub enum Issued {
    Created(Verification),
    Resent(Verification),
    Deduplicated(Verification),
}

impl Issued {
    pub fn verification(&self) -> &Verification {
        match self {
            Issued::Created(v) | Issued::Resent(v) | Issued::Deduplicated(v) => v,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    #[error("the delivery queue is full")]
    Overloaded,
    /// Refused by a limit the store decided ([`Engine::issue_within`]).
    #[error("refused by the {} limit", .0.limit)]
    Limited(Refusal),
    #[error("a code was sent to this number moments ago; retry after {retry_after:?}")]
    Cooldown { retry_after: Duration },
    #[error("the code was already sent the maximum number of times")]
    MaxSends { retry_after: Duration },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] RandomError),
}

pub struct Engine {
    store: Arc<dyn Store>,
    /// The store queues each send in the same step as it records it (Redis streams):
    /// this node's workers get them from there, whichever node asked.
    store_queues: bool,
    keys: CodeKeys,
    queue: DeliveryQueue,
    clock: Arc<dyn Clock>,
    purposes: HashMap<Box<str>, Purpose>,
    metrics: Arc<Metrics>,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        keys: CodeKeys,
        queue: DeliveryQueue,
        clock: Arc<dyn Clock>,
        purposes: impl IntoIterator<Item = Purpose>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            store_queues: false,
            keys,
            queue,
            clock,
            purposes: purposes
                .into_iter()
                .map(|p| (Box::from(&*p.name), p))
                .collect(),
            metrics,
        }
    }

    /// Sends are queued by the store itself (see [`Engine::store_queues`]).
    pub fn with_store_queue(mut self) -> Self {
        self.store_queues = true;
        self
    }

    /// Whether sends go through the store's queue rather than this process's.
    pub fn store_queues(&self) -> bool {
        self.store_queues
    }

    pub fn purpose(&self, name: &str) -> Option<&Purpose> {
        self.purposes.get(name)
    }

    pub fn purpose_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.purposes.keys().map(|k| &**k).collect();
        names.sort_unstable();
        names
    }

    /// The MAC of `subject`'s contrast value in its normal form.
    pub fn contrast_mac(
        &self,
        subject: &str,
        normal: &str,
    ) -> crate::secrets::contrast::ContrastMac {
        self.keys.contrast(subject, normal)
    }

    /// The token the pushes of `id` carry for the app to acknowledge them with.
    pub fn ack_token(&self, id: &VerificationId) -> crate::secrets::code::AckToken {
        self.keys.ack_token(id)
    }

    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn queue(&self) -> &DeliveryQueue {
        &self.queue
    }

    /// Bring the sampled gauges up to date (called before each metrics scrape).
    pub fn publish_gauges(&self) {
        self.metrics.queue_depth.set(self.queue.depth() as f64);
        let delay = self.queue.standing_delay(self.clock.now());
        self.metrics
            .queue_delay
            .set(delay.unwrap_or_default().as_secs_f64());
    }

    /// Issue a new code, or re-send the pending one for the same destination and
    /// purpose. Reserves the queue slot first: when the queue is full nothing is
    /// created.
    pub async fn issue(&self, req: IssueRequest) -> Result<Issued, IssueError> {
        self.issue_with(req, None).await
    }

    /// [`Engine::issue`], with the request's limits decided by the store in the same
    /// step (see [`Store::issue_within`]); a refusal is [`IssueError::Limited`].
    pub async fn issue_within(
        &self,
        req: IssueRequest,
        limits: &IssueLimits<'_>,
    ) -> Result<Issued, IssueError> {
        self.issue_with(req, Some(limits)).await
    }

    async fn issue_with(
        &self,
        req: IssueRequest,
        limits: Option<&IssueLimits<'_>>,
    ) -> Result<Issued, IssueError> {
        let now = self.clock.now();
        // A standing queue: codes would reach people late; better refused now.
        if self.queue.behind(now) {
            self.metrics.overloaded();
            return Err(IssueError::Overloaded);
        }
        let slot = if self.store_queues {
            None
        } else {
            Some(self.queue.try_reserve().map_err(|_| {
                self.metrics.overloaded();
                IssueError::Overloaded
            })?)
        };

        let mut policy = req.purpose.policy;
        if req.channel == RequestedChannel::App {
            policy.ttl = req.purpose.app_ttl;
        }
        let mut rng = OsRandom;
        let mut random = [0u8; 14];
        rng.fill(&mut random)?;
        let id = VerificationId::new(ShardTag::of(req.to), random);
        let code = Code::generate(policy.code_length, &mut rng)?;
        let kind = delivery::resolve(req.channel, req.has_devices);
        let match_code = match kind {
            ChannelKind::Push => Some(MatchCode::generate(&mut rng)?),
            ChannelKind::Sms => None,
        };
        let challenge = match req.channel {
            RequestedChannel::App => Some(Challenge::generate(&mut rng)?),
            _ => None,
        };
        let mut candidate = Verification::new(
            NewVerification {
                id,
                to: req.to,
                line: req.line,
                purpose: req.purpose.name.clone(),
                subject: req.subject,
                client: req.client,
                locale: req.locale,
                channel: req.channel,
                first_send: kind,
                code_mac: self.keys.mac(&id, &code),
                sealed_code: self.keys.seal(&id, &code),
                policy,
                match_code,
                challenge,
            },
            now,
        );
        candidate.to_override = req.to_override;

        let outcome = match limits {
            Some(limits) => self.store.issue_within(&candidate, now, limits).await?,
            None => self.store.issue(&candidate, now).await?,
        };
        let (issued, code) = match outcome {
            IssueOutcome::Limited(refusal) => return Err(IssueError::Limited(refusal)),
            IssueOutcome::Created => {
                self.metrics.created();
                (Issued::Created(candidate), code)
            }
            IssueOutcome::Overloaded => {
                self.metrics.overloaded();
                return Err(IssueError::Overloaded);
            }
            IssueOutcome::Resent(v) => {
                self.metrics.resent();
                // Same verification, same code: recover it from its sealed form.
                let code = self.keys.unseal(&v.id, v.sealed_code, v.code_length);
                (Issued::Resent(v), code)
            }
            IssueOutcome::Refused {
                refusal,
                expires_at,
                existing,
            } => {
                if let Some(v) = self.duplicate_of(&existing, req.dedupe_window, now).await? {
                    self.metrics.deduplicated();
                    return Ok(Issued::Deduplicated(v));
                }
                return Err(match refusal {
                    ResendRefusal::Cooldown { retry_after } => {
                        self.metrics.refused_cooldown();
                        IssueError::Cooldown { retry_after }
                    }
                    ResendRefusal::MaxSends => {
                        self.metrics.refused_max_sends();
                        // A new code can be asked for once this one has expired.
                        let left = now.until(expires_at);
                        IssueError::MaxSends {
                            retry_after: Duration::from_secs(left.as_secs().max(1)),
                        }
                    }
                });
            }
        };
        let Some(slot) = slot else {
            // Queued by the store with the verification.
            return Ok(issued);
        };
        let v = issued.verification();
        let last = v
            .sends()
            .last()
            .expect("a verification has at least one send");
        slot.send(DeliveryJob {
            id: v.id,
            send: v.sends().len() as u8,
            to: v.to,
            kind: last.channel,
            locale: v.locale,
            purpose: v.purpose.clone(),
            code,
            expires_at: v.expires_at,
            subject: v.subject.clone(),
            match_code: v.match_code,
            challenge: v.challenge(),
            client: v.client.clone(),
            provider_ack: req.purpose.provider_ack,
            receipt: None,
            queued_at: now,
        });
        Ok(issued)
    }

    /// The pending verification `id` if its last send is younger than `window`.
    async fn duplicate_of(
        &self,
        id: &VerificationId,
        window: Duration,
        now: UnixMillis,
    ) -> Result<Option<Verification>, StoreError> {
        if window.is_zero() {
            return Ok(None);
        }
        let Some(v) = self.store.get(id).await? else {
            return Ok(None);
        };
        let last = v.sends().last().map_or(v.created_at, |s| s.queued_at);
        Ok((last.until(now) < window).then_some(v))
    }

    /// The app says the push arrived. `None` if the verification is unknown.
    pub async fn acknowledge(
        &self,
        id: &VerificationId,
    ) -> Result<Option<(AckOutcome, Verification)>, StoreError> {
        let result = self.store.acknowledge(id, self.clock.now()).await?;
        if let Some((AckOutcome::Acknowledged, _)) = &result {
            self.metrics.acknowledged();
        }
        Ok(result)
    }

    /// Record an app's answer, already verified (device, signature, timestamp), on
    /// approval request `id`. `None` if unknown.
    pub async fn answer(
        &self,
        id: &VerificationId,
        decision: Decision,
        device: &str,
    ) -> Result<Option<(AnswerOutcome, Verification)>, StoreError> {
        let result = self
            .store
            .answer(id, decision, device, self.clock.now())
            .await?;
        if let Some((AnswerOutcome::Answered(_), _)) = &result {
            self.metrics.answered(decision);
        }
        Ok(result)
    }

    /// Send by SMS the codes whose push went unacknowledged for too long: up to
    /// `limit` of them, each at most once (the store decides, atomically). Returns how
    /// many were escalated. Waits for room in the queue rather than dropping one.
    pub async fn escalate_due(&self, limit: usize) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let due = self.store.due_escalations(now, limit).await?;
        let mut escalated = 0;
        for id in due {
            let Some(v) = self
                .store
                .escalate(&id, EscalationCause::Timeout, now)
                .await?
            else {
                continue;
            };
            self.metrics.escalated(EscalationCause::Timeout);
            escalated += 1;
            if self.store_queues {
                continue;
            }
            let send = v.sends().len() as u8;
            let job = DeliveryJob {
                id: v.id,
                send,
                to: v.to,
                kind: ChannelKind::Sms,
                locale: v.locale,
                purpose: v.purpose.clone(),
                code: self.keys.unseal(&v.id, v.sealed_code, v.code_length),
                expires_at: v.expires_at,
                subject: None,
                match_code: None,
                challenge: None,
                client: None,
                provider_ack: false,
                receipt: None,
                queued_at: now,
            };
            tracing::info!(%id, "push not acknowledged in time: sending the code by SMS");
            if self.queue.send(job).await.is_err() {
                let failed = SendResult::Failed {
                    error: "otpd was shutting down".into(),
                };
                self.store.record_send(&id, send, failed, None, now).await?;
            }
        }
        Ok(escalated)
    }

    /// Check a typed code. `None` if the verification is unknown (or `client`'s
    /// it is not).
    pub async fn check(
        &self,
        id: &VerificationId,
        code: &Code,
        client: Option<&str>,
    ) -> Result<Option<CheckResult>, StoreError> {
        let candidate = self.keys.mac(id, code);
        let result = self
            .store
            .check(id, &candidate, client, self.clock.now())
            .await?;
        if let Some(r) = &result {
            self.metrics.checked(r.outcome);
        }
        Ok(result)
    }

    /// [`Engine::check`], with the check's limits decided by the store in the same
    /// step (see [`Store::check_within`]).
    pub async fn check_within(
        &self,
        id: &VerificationId,
        code: &Code,
        client: Option<&str>,
        limits: &CheckLimits<'_>,
    ) -> Result<CheckedWithin, StoreError> {
        let candidate = self.keys.mac(id, code);
        let result = self
            .store
            .check_within(id, &candidate, client, self.clock.now(), limits)
            .await?;
        if let CheckedWithin::Checked { result, .. } = &result {
            self.metrics.checked(result.outcome);
        }
        Ok(result)
    }

    pub async fn get(&self, id: &VerificationId) -> Result<Option<Verification>, StoreError> {
        self.store.get(id).await
    }

    /// Cancel (by its client) or lock (by otpd) a pending verification.
    pub async fn close(
        &self,
        id: &VerificationId,
        client: Option<&str>,
        how: Closing,
    ) -> Result<Option<(CancelOutcome, Verification)>, StoreError> {
        self.store.close(id, client, how, self.clock.now()).await
    }
}
