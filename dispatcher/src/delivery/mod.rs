//! Delivery: the bounded job queue between the API and the channels, and the workers
//! that drain it.
//!
//! The API reserves a queue slot *before* it creates anything, so a full queue turns
//! into a `503` with nothing half-created, and the request path never waits on a
//! channel. Workers render the message, submit it, retry what the channel calls
//! temporary (never past the code's expiry), and record the answer in the store.
//!
//! A push goes to every registered device of the subject, each through its platform's
//! provider. A device the provider calls gone is removed from the registry. When no
//! device took the push and the verification may fall back (`channel: auto`), the same
//! worker sends the same code by SMS at once; when the push went out, the escalation
//! timer ([`crate::engine::Engine::escalate_due`]) sends it if no acknowledgement comes in time.

pub mod breaker;
pub mod in_flight;
pub mod router;
pub mod routes;
pub mod template;
pub(crate) mod throttle;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use otpd_adapters::push::{Approval, Notification, Outcome, Pusher};
use otpd_adapters::{
    Channel, ChannelError, ChannelKind, DeliveryReport, Message, MessageText, Open, ReportState,
    SendGate,
};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;

use crate::delivery::in_flight::{InFlight, Making, Orphan};
use crate::delivery::router::{CarrierSlot, Router};
use crate::delivery::routes::Target;
use crate::delivery::throttle::ThrottleError;
use crate::domain::clock::{Clock, UnixMillis};
use crate::domain::name::Name;
use crate::domain::subscriber::{Device, Platform};
use crate::domain::verification::{
    EscalationCause, Failover, RequestedChannel, SendDetails, SendResult, SendState, Verification,
};
use crate::metrics::Metrics;
use crate::secrets::id::VerificationId;
use crate::store::{JobLedger, Stores, TakeSend};

pub use crate::store::jobs::{DeliveryJob, DeliveryJobs, DeliveryQueue, QueueFull, QueueSlot};

/// Which kind of channel a request goes to: `auto` is push when the subject has a
/// registered device, SMS otherwise.
pub fn resolve(requested: RequestedChannel, has_devices: bool) -> ChannelKind {
    match requested {
        RequestedChannel::Auto if has_devices => ChannelKind::Push,
        RequestedChannel::Auto | RequestedChannel::Sms => ChannelKind::Sms,
        RequestedChannel::Push | RequestedChannel::App => ChannelKind::Push,
    }
}

/// The push provider serving each platform.
#[derive(Clone)]
pub struct Pushers {
    pub apns: Arc<dyn Pusher>,
    pub fcm: Arc<dyn Pusher>,
    pub hms: Arc<dyn Pusher>,
}

impl Pushers {
    /// One provider for every platform (the outbox, a fake).
    pub fn all(pusher: Arc<dyn Pusher>) -> Self {
        Self {
            apns: pusher.clone(),
            fcm: pusher.clone(),
            hms: pusher,
        }
    }

    pub fn for_platform(&self, platform: Platform) -> &Arc<dyn Pusher> {
        match platform {
            Platform::Apns => &self.apns,
            Platform::Fcm => &self.fcm,
            Platform::Hms => &self.hms,
        }
    }

    /// Each provider once, with the platforms it serves.
    pub fn distinct(&self) -> Vec<(Vec<Platform>, Arc<dyn Pusher>)> {
        let mut out: Vec<(Vec<Platform>, Arc<dyn Pusher>)> = Vec::new();
        for platform in [Platform::Apns, Platform::Fcm, Platform::Hms] {
            let p = self.for_platform(platform);
            match out.iter_mut().find(|(_, q)| Arc::ptr_eq(p, q)) {
                Some((platforms, _)) => platforms.push(platform),
                None => out.push((vec![platform], p.clone())),
            }
        }
        out
    }
}

/// The SMS carriers and the push providers.
#[derive(Clone)]
pub struct Channels {
    /// Every SMS carrier, known to routes by [`Channel::name`].
    pub sms: Vec<Arc<dyn Channel>>,
    pub push: Pushers,
}

/// How workers retry what a channel calls temporary.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Submits per send, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles each time.
    pub backoff: Duration,
}

impl RetryPolicy {
    /// The wait before another try, after try number `attempt` failed temporarily
    /// (`asked`: what the transport said to wait, else the doubling backoff). `None`
    /// when no other try fits: the attempts are used up, or the wait would reach the
    /// code's expiry.
    fn pause(
        &self,
        attempt: u32,
        asked: Option<Duration>,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let pause = asked.unwrap_or_else(|| {
            self.backoff
                .saturating_mul(1u32 << attempt.saturating_sub(1).min(31))
        });
        (now.plus(pause) < expires_at).then_some(pause)
    }

    /// The wait before looking again for a carrier when none of the route's could
    /// take the message at all (no live bind, breaker open): not an attempt — the
    /// message waits for one to come back, as long as the code is worth sending.
    fn wait_for_carrier(
        &self,
        asked: Option<Duration>,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Option<Duration> {
        let pause = asked.unwrap_or(self.backoff).min(CARRIER_WAIT);
        (now.plus(pause) < expires_at).then_some(pause)
    }
}

/// The longest pause between looks for a carrier that has come back.
const CARRIER_WAIT: Duration = Duration::from_secs(1);

/// Take a send for this node, asking a failing store again a few times; a taken
/// send comes with its [`Making`]. A take the store made but whose answer was lost
/// is answered `Mine` the next time: it is this worker's (unless another worker of
/// the node is making the send, from a second copy of the job).
async fn take(
    jobs: &dyn JobLedger,
    in_flight: &InFlight,
    id: &VerificationId,
    send: u8,
    node: &str,
) -> Result<(TakeSend, Option<Making>), crate::store::StoreError> {
    let mut pauses = RECORD_RETRIES.iter();
    let mut failed = false;
    // Held while a failed take is asked again: the store may have made the send
    // this node's already, and a second copy of the job claimed back meanwhile must
    // find it being made here — not lost, and not recorded as interrupted.
    let mut taking: Option<Making> = None;
    loop {
        match jobs.take_send(id, send, node).await {
            Ok(TakeSend::Go) => {
                let making = taking.unwrap_or_else(|| in_flight.start(*id, send));
                return Ok((TakeSend::Go, Some(making)));
            }
            Ok(TakeSend::Mine) if taking.is_some() => {
                // This worker's own take, whose answer was lost.
                return Ok((TakeSend::Go, taking));
            }
            Ok(TakeSend::Mine) => {
                let resumed = if failed {
                    in_flight.start_unless_making(*id, send)
                } else {
                    in_flight.resume(*id, send)
                };
                return Ok(match resumed {
                    Some(making) => (TakeSend::Go, Some(making)),
                    None => (TakeSend::Mine, None),
                });
            }
            Ok(other) => return Ok((other, None)),
            Err(e) => match pauses.next() {
                Some(pause) => {
                    tracing::debug!(%id, send, error = %e, "taking a send failed; trying again");
                    failed = true;
                    if taking.is_none() {
                        taking = in_flight.start_unless_making(*id, send);
                    }
                    tokio::time::sleep(*pause).await;
                }
                None => return Err(e),
            },
        }
    }
}

/// Pauses before asking a failing store again to record an answer or take a send.
const RECORD_RETRIES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1600),
];

/// Pushes awaiting their provider off the workers, per worker.
const PUSH_SLOTS_PER_WORKER: usize = 4;

pub struct Workers {
    pub channels: Channels,
    /// Routes, templates and the carriers' health and caps.
    pub router: Arc<Router>,
    /// Seeds each send's weighted carrier order.
    pub seed: RandomState,
    pub stores: Stores,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// This node's name, under which its workers take sends (see [`Store::take_send`]).
    pub name: Arc<str>,
    /// Who asks, as shown in approval requests.
    pub display_names: Arc<crate::policy::clients::DisplayNames>,
    /// Make the acknowledgement token each push carries.
    pub keys: crate::secrets::code::CodeKeys,
    /// Where what happened to each send is told (see [`crate::events`]).
    pub events: Arc<dyn crate::events::EventSink>,
    /// The sends this node's workers are making, and answers they could not record.
    pub in_flight: InFlight,
}

/// The next job, or `None` once the queue is closed and drained. Closes the queue
/// when `stop` turns true.
async fn next_job(
    rx: &Mutex<DeliveryJobs>,
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
    ///
    /// A push waits for its provider's answer off the worker, in one of
    /// `PUSH_SLOTS_PER_WORKER × concurrency` slots: a provider that slows down (APNs
    /// answering in seconds) then holds slots, not the workers that carry SMS — a
    /// load test had every worker stuck on APNs and codes by SMS, escalations
    /// included, waiting behind them for tens of seconds. With every slot taken, the
    /// providers are saturated: the push is not tried and the code goes by SMS at
    /// once, as when no device takes it.
    pub async fn run(self, rx: DeliveryJobs, stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let sojourn = rx.sojourn();
        let rx = Arc::new(Mutex::new(rx));
        let slots = this.concurrency.max(1) * PUSH_SLOTS_PER_WORKER;
        let push_slots = Arc::new(tokio::sync::Semaphore::new(slots));
        let mut workers = JoinSet::new();
        for _ in 0..this.concurrency.max(1) {
            let (this, rx, mut stop) = (this.clone(), rx.clone(), stop.clone());
            let (push_slots, sojourn) = (push_slots.clone(), sojourn.clone());
            workers.spawn(async move {
                while let Some(job) = next_job(&rx, &mut stop).await {
                    sojourn.observe(job.queued_at, this.clock.now());
                    if job.kind == ChannelKind::Push
                        && let Ok(slot) = push_slots.clone().try_acquire_owned()
                    {
                        let this = this.clone();
                        tokio::spawn(async move {
                            this.deliver(job, false).await;
                            drop(slot);
                        });
                        continue;
                    }
                    let saturated = job.kind == ChannelKind::Push;
                    this.deliver(job, saturated).await;
                }
            });
        }
        while workers.join_next().await.is_some() {}
        // Every push off the workers has finished once all the slots are back.
        let _ = push_slots.acquire_many(slots as u32).await;
    }

    /// Deliver `job`; a push with `push_saturated` is not tried (see [`Workers::run`]).
    async fn deliver(&self, mut job: DeliveryJob, push_saturated: bool) {
        // While a taken send is being made, this node knows it (see `InFlight`).
        let mut making = None;
        // A queued push is taken before it goes to the providers; a queued SMS at
        // the carrier's last moment, by the gate it passes (see `TakeGate`).
        if job.receipt.is_some() && job.kind == ChannelKind::Push {
            match take(
                &*self.stores.jobs,
                &self.in_flight,
                &job.id,
                job.send,
                &self.name,
            )
            .await
            {
                Ok((TakeSend::Go, taken)) => making = taken,
                Ok((other, _)) => return self.not_taken(&job, other).await,
                Err(e) => {
                    // Left pending in the queue: claimed and retried later. The store
                    // may have taken it all the same: remembered as never sent.
                    tracing::warn!(id = %job.id, error = %e, "could not take a send");
                    self.in_flight.take_failed(job.id, job.send);
                    return;
                }
            }
        }
        loop {
            let started = self.clock.now();
            let (result, details) = match (job.kind, &job.receipt) {
                (ChannelKind::Sms, None) => self.send_sms(&job, &Open).await,
                (ChannelKind::Sms, Some(_)) => {
                    let gate = TakeGate {
                        jobs: &*self.stores.jobs,
                        id: job.id,
                        send: job.send,
                        node: &self.name,
                        taken: parking_lot::Mutex::new(Taken::NotYet),
                        in_flight: &self.in_flight,
                        making: parking_lot::Mutex::new(None),
                    };
                    let answer = self.send_sms(&job, &gate).await;
                    making = gate.making.lock().take();
                    let taken = *gate.taken.lock();
                    match taken {
                        // Not taken: it failed before reaching a carrier (blocked,
                        // expired, no carrier); that is its answer.
                        Taken::NotYet | Taken::Took(TakeSend::Go) => answer,
                        Taken::Took(other) => return self.not_taken(&job, other).await,
                        // Left pending in the queue: claimed and retried later.
                        Taken::Failed => return,
                    }
                }
                (ChannelKind::Push, _) if push_saturated => (
                    SendResult::Failed {
                        error: "push providers saturated: every push slot was taken".into(),
                    },
                    None,
                ),
                (ChannelKind::Push, _) => (self.push_to_devices(&job).await, None),
            };
            let now = self.clock.now();
            let sent = matches!(result, SendResult::Sent { .. });
            match &result {
                SendResult::Sent { .. } => self.metrics.sent(job.kind, started.until(now)),
                SendResult::Failed { .. } | SendResult::Expired { .. } => {
                    self.metrics.send_failed(job.kind)
                }
            }
            self.record(&job, result, details).await;
            drop(making.take());
            if job.kind != ChannelKind::Push {
                return;
            }
            if sent {
                if job.provider_ack
                    && let Err(e) = self.stores.verifications.acknowledge(&job.id, now).await
                {
                    tracing::warn!(id = %job.id, error = %e, "could not record the provider's acknowledgement");
                }
                return;
            }
            // No device took the push: fall back to SMS now, if this verification may
            // (the store says, and makes sure it happens once).
            match self
                .stores
                .verifications
                .escalate(&job.id, EscalationCause::PushFailed, now)
                .await
            {
                Ok(Some(v)) => {
                    self.metrics.escalated(EscalationCause::PushFailed);
                    self.events.emit(&crate::events::Event {
                        kind: crate::events::EventKind::Escalated,
                        at: now,
                        client: v.client,
                        data: crate::events::EventData {
                            subject: v.subject.as_deref().map(Into::into),
                            reason: Some(EscalationCause::PushFailed.as_str()),
                            send: Some(v.sends().len() as u8),
                            ..crate::events::EventData::of(&v.id, v.to, "pending")
                                .with_channel(ChannelKind::Sms)
                        },
                    });
                    tracing::info!(id = %job.id, "push failed: sending the code by SMS");
                    if job.receipt.is_some() {
                        // The store queued the SMS send with the escalation.
                        return;
                    }
                    job.kind = ChannelKind::Sms;
                    job.send = v.sends().len() as u8;
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(id = %job.id, error = %e, "could not escalate a failed push");
                    return;
                }
            }
        }
    }

    /// A queued job whose send this node could not take.
    async fn not_taken(&self, job: &DeliveryJob, outcome: TakeSend) {
        match outcome {
            TakeSend::Go => {}
            TakeSend::Answered | TakeSend::Gone => {
                // Done before (or nothing left to do): only acknowledge the job.
                // The store records nothing over an answered or missing send.
                let nothing = SendResult::Failed {
                    error: "already answered".into(),
                };
                self.record(job, nothing, None).await;
            }
            TakeSend::Interrupted if job.receipt.as_ref().is_some_and(|r| r.claimed) => {
                tracing::warn!(id = %job.id, send = job.send, "a node stopped while sending this; not sent again");
                let interrupted = SendResult::Failed {
                    error: "interrupted: the node sending it stopped before the channel answered; not sent again, to avoid a duplicate".into(),
                };
                self.record(job, interrupted, None).await;
            }
            // This node took it, and the job came back: a worker's answer could not
            // be recorded (or this is a second copy of the job).
            TakeSend::Mine => match self.in_flight.orphan(job.id, job.send) {
                Orphan::Making => {}
                Orphan::Answered(result, details) => self.record(job, result, details).await,
                Orphan::Unknown => {
                    tracing::warn!(id = %job.id, send = job.send, "this node took the send and lost its answer; not sent again");
                    let interrupted = SendResult::Failed {
                        error: "interrupted: the answer of the channel was lost before it was recorded; not sent again, to avoid a duplicate".into(),
                    };
                    self.record(job, interrupted, None).await;
                }
            },
            // Another worker took it over meanwhile; it is theirs.
            TakeSend::Interrupted => {}
        }
    }

    /// Record a channel's answer, acknowledging the job in the same step when it came
    /// from the store's queue. A store that fails is asked again a few times; an
    /// answer still not recorded is kept, for when the job comes back to this node.
    async fn record(&self, job: &DeliveryJob, result: SendResult, details: Option<SendDetails>) {
        let mut pauses = RECORD_RETRIES.iter();
        loop {
            let now = self.clock.now();
            let recorded = match &job.receipt {
                Some(r) => {
                    self.stores
                        .jobs
                        .record_send_and_ack(
                            &job.id,
                            job.send,
                            result.clone(),
                            details.clone(),
                            now,
                            r,
                        )
                        .await
                }
                None => {
                    self.stores
                        .jobs
                        .record_send(&job.id, job.send, result.clone(), details.clone(), now)
                        .await
                }
            };
            let e = match recorded {
                Ok(changed) => {
                    if changed && let SendResult::Sent { .. } = &result {
                        self.sent_event(job, details.as_ref());
                    }
                    return;
                }
                Err(e) => e,
            };
            let Some(pause) = pauses.next() else {
                tracing::warn!(id = %job.id, send = job.send, error = %e, "could not record a send result");
                self.metrics.unrecorded();
                if job.receipt.is_some() {
                    self.in_flight.unrecorded(job.id, job.send, result, details);
                }
                return;
            };
            tracing::debug!(id = %job.id, send = job.send, error = %e, "recording a send result failed; trying again");
            tokio::time::sleep(*pause).await;
        }
    }

    /// `verification.sent`: a channel took send `job.send`.
    fn sent_event(&self, job: &DeliveryJob, details: Option<&SendDetails>) {
        use crate::events::{Event, EventData, EventKind};
        if !self.events.listening() {
            self.events.count(EventKind::Sent);
            return;
        }
        self.events.emit(&Event {
            kind: EventKind::Sent,
            at: self.clock.now(),
            client: job.client,
            data: EventData {
                send: Some(job.send),
                carrier: details.and_then(|d| d.carrier.as_deref()).map(Box::from),
                subject: job.subject.clone(),
                ..EventData::of(&job.id, job.to, "pending").with_channel(job.kind)
            },
        });
    }

    /// Push to every device of the subject; sent if any provider took it.
    async fn push_to_devices(&self, job: &DeliveryJob) -> SendResult {
        let failed = |error: String| SendResult::Failed { error };
        let Some(subject) = job.subject.as_deref() else {
            return failed("push needs a subject with a registered device".into());
        };
        let devices = match self.stores.registry.get_subscriber(subject).await {
            Ok(Some(s)) => s.devices,
            Ok(None) => Vec::new(),
            Err(e) => return failed(format!("cannot read the subject's devices: {e}")),
        };
        // An approval request goes to the devices that can sign an answer.
        let devices: Vec<Device> = match job.challenge {
            Some(_) => devices.into_iter().filter(|d| d.key.is_some()).collect(),
            None => devices,
        };
        if devices.is_empty() {
            return failed(match job.challenge {
                Some(_) => "the subject has no device with an enrolled key".into(),
                None => "the subject has no registered device".into(),
            });
        }
        let now = self.clock.now();
        if now >= job.expires_at {
            return failed("the code expired before it could be sent".into());
        }
        let id = job.id.to_string();
        let ack_token = self.keys.ack_token(&job.id).to_string();
        let match_code = job.match_code.map(|m| m.to_string());
        let challenge = job.challenge.map(|c| c.to_string());
        // Only an approval request names who asks.
        let requester = challenge
            .as_ref()
            .map(|_| self.display_names.of(job.client.as_deref()));
        let (title, text) = match (&requester, job.match_code) {
            (Some(requester), Some(m)) => {
                let (title, body) = template::approval_push(job.locale, requester, &job.purpose, m);
                (title, MessageText::new(body))
            }
            _ => {
                let minutes = now.until(job.expires_at).as_secs().div_ceil(60).max(1);
                let text = self.router.plan().templates().push_body(
                    &job.purpose,
                    job.locale,
                    &job.code,
                    minutes,
                );
                (template::push_title(job.locale, job.match_code), text)
            }
        };
        let approval =
            challenge
                .as_deref()
                .zip(requester.as_deref())
                .map(|(challenge, requester)| Approval {
                    challenge,
                    requester,
                    purpose: &job.purpose,
                });
        let outcomes = futures_util::future::join_all(devices.iter().map(|device| {
            let push = Notification {
                token: &device.token,
                title: &title,
                body: text.expose(),
                verification_id: &id,
                expires_at: job.expires_at.0.div_euclid(1000),
                ttl_secs: now.until(job.expires_at).as_secs().max(1),
                match_code: match_code.as_deref(),
                approval,
                ack_token: Some(&ack_token),
            };
            async move {
                let outcome = self.push_with_retries(device, &push, job).await;
                (device, outcome)
            }
        }))
        .await;

        let mut accepted = Vec::new();
        let mut errors = Vec::new();
        for (device, outcome) in outcomes {
            let provider = self.channels.push.for_platform(device.platform).name();
            metrics::counter!("otpd_push_total", "provider" => provider.to_string(), "outcome" => outcome.label()).increment(1);
            match outcome {
                Outcome::Accepted { id } => {
                    accepted.push(format!("{provider}:{}", id.unwrap_or_default()))
                }
                Outcome::RemoveDevice { reason } => {
                    self.remove_device(job, subject, device).await;
                    errors.push(format!("{provider}: {reason} (device removed)"));
                }
                Outcome::RenewToken { reason }
                | Outcome::Retry { reason, .. }
                | Outcome::Fail { reason } => errors.push(format!("{provider}: {reason}")),
            }
        }
        if accepted.is_empty() {
            failed(errors.join("; "))
        } else {
            if !errors.is_empty() {
                tracing::info!(id = %job.id, errors = %errors.join("; "), "push reached some devices only");
            }
            SendResult::Sent {
                reference: accepted.join(","),
            }
        }
    }

    /// Remove a device its provider calls gone, and tell it (`device.removed`, to
    /// the client whose push found it gone).
    async fn remove_device(&self, job: &DeliveryJob, subject: &str, device: &Device) {
        match self
            .stores
            .registry
            .remove_device(subject, device.platform, &device.token)
            .await
        {
            Ok(removed) => {
                metrics::counter!("otpd_push_devices_removed_total", "platform" => device.platform.as_str()).increment(1);
                tracing::info!(platform = %device.platform, "removed a device its provider calls gone");
                if removed == Some(true) {
                    use crate::events::{Event, EventData, EventKind};
                    self.events.emit(&Event {
                        kind: EventKind::DeviceRemoved,
                        at: self.clock.now(),
                        client: job.client,
                        data: EventData {
                            verification_id: Some(job.id.to_string()),
                            subject: Some(subject.into()),
                            platform: Some(device.platform.as_str()),
                            reason: Some("token_dead"),
                            ..EventData::default()
                        },
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not remove a gone device"),
        }
    }

    /// One device: retry what the provider calls temporary, as for SMS.
    async fn push_with_retries(
        &self,
        device: &Device,
        push: &Notification<'_>,
        job: &DeliveryJob,
    ) -> Outcome {
        let pusher = self.channels.push.for_platform(device.platform);
        let mut attempt = 1;
        loop {
            let outcome = pusher.push(push, &device.app).await;
            let Outcome::Retry { after, .. } = &outcome else {
                return outcome;
            };
            let now = self.clock.now();
            let Some(pause) = self.retry.pause(attempt, *after, now, job.expires_at) else {
                return outcome;
            };
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// Send an SMS along the number's route: each carrier in the route's order,
    /// passing over those that are down (no live bind, breaker open) or full, moving
    /// on from one that fails in a way another may not, until one takes it. A refusal
    /// of the number itself stops there: every carrier would refuse it. When every
    /// carrier failed temporarily, the round is tried again after the retry pause,
    /// never past the send deadline; a code with less validity left than the plan's
    /// minimum is not sent at all but marked expired.
    async fn send_sms(
        &self,
        job: &DeliveryJob,
        gate: &dyn SendGate,
    ) -> (SendResult, Option<SendDetails>) {
        let plan = self.router.plan();
        let mut details = SendDetails::default();
        let now = self.clock.now();
        let minutes = now.until(job.expires_at).as_secs().div_ceil(60).max(1);
        let sms = match plan
            .templates()
            .sms(&job.purpose, job.locale, &job.code, minutes)
        {
            Ok(sms) => sms,
            Err(e) => {
                return (
                    SendResult::Failed {
                        error: format!("message template: {e}"),
                    },
                    None,
                );
            }
        };
        details.encoding = Some(sms.measure.alphabet);
        details.segments = sms.measure.segments.min(255) as u8;
        let route = plan.route(job.to);
        details.route = Some(route.name);
        let order = match route.target {
            Target::Blocked => {
                metrics::counter!("otpd_sms_blocked_total").increment(1);
                return (
                    SendResult::Failed {
                        error: format!("numbers under +{} are blocked", route.prefix),
                    },
                    Some(details),
                );
            }
            target => target.order(self.seed.hash_one((job.id, job.send))),
        };
        let deadline = job.expires_at.minus(plan.min_validity_left());
        let message = Message {
            verification_id: job.id.to_string(),
            send: job.send,
            to: job.to.to_string(),
            kind: ChannelKind::Sms,
            locale: job.locale.as_str(),
            purpose: job.purpose.to_string(),
            text: sms.text,
            expires_at_ms: job.expires_at.0,
        };
        let expired = |details: SendDetails| {
            metrics::counter!("otpd_sms_expired_before_send_total").increment(1);
            (
                SendResult::Expired {
                    error: format!(
                        "less than {} of validity left: not sent",
                        humantime::format_duration(plan.min_validity_left())
                    ),
                },
                Some(details),
            )
        };
        let mut round = 1;
        loop {
            let mut asked: Option<Duration> = None;
            let mut deadline_hit = false;
            // Whether a carrier that was up failed it: only then is it an attempt.
            let mut attempted = false;
            for &name in &order {
                let Some(slot) = self.router.slot(&name) else {
                    continue;
                };
                let tried = self
                    .try_carrier(
                        job,
                        name,
                        slot,
                        &message,
                        gate,
                        deadline,
                        &mut details,
                        round,
                    )
                    .await;
                match tried {
                    Tried::Done(result) => return (result, Some(details)),
                    Tried::Expired => return expired(details),
                    Tried::Next {
                        asked: more,
                        was_up,
                    } => {
                        asked = asked.max(more);
                        attempted |= was_up;
                    }
                    Tried::TooLate => deadline_hit = true,
                }
            }
            // A carrier whose next turn comes after the deadline: by the time any
            // retry could go, the code would be too close to expiry to be of use.
            if deadline_hit {
                return expired(details);
            }
            let now = self.clock.now();
            let pause = if attempted {
                self.retry.pause(round, asked, now, deadline)
            } else {
                self.retry.wait_for_carrier(asked, now, deadline)
            };
            let Some(pause) = pause else {
                let error = match details.failovers.last() {
                    Some(f) => format!("no carrier took it; last: {}: {}", f.carrier, f.error),
                    None => "the route has no running carrier".to_string(),
                };
                details.carrier = None;
                return (SendResult::Failed { error }, Some(details));
            };
            tokio::time::sleep(pause).await;
            if attempted {
                round += 1;
            }
        }
    }

    /// Offer the message to one carrier of the route: its breaker, its throughput
    /// cap (within `deadline`), then its binds. A failure is counted against it and
    /// noted in `details` for the next carrier.
    #[allow(clippy::too_many_arguments)]
    async fn try_carrier(
        &self,
        job: &DeliveryJob,
        name: Name,
        slot: &CarrierSlot,
        message: &Message,
        gate: &dyn SendGate,
        deadline: UnixMillis,
        details: &mut SendDetails,
        round: u32,
    ) -> Tried {
        let now = self.clock.now();
        if now >= deadline {
            return Tried::Expired;
        }
        if let Err(why) = slot.admit(now) {
            details.failover(slot, why);
            return Tried::Next {
                asked: None,
                was_up: false,
            };
        }
        let until_deadline = now.until(deadline);
        let throttle = slot.throttle();
        let turn = tokio::select! {
            turn = throttle.admit(tokio::time::Instant::now() + until_deadline) => turn,
            // Suspended while this message waited its turn: it moves on.
            () = slot.suspension() => {
                details.failover(slot, router::SUSPENDED);
                return Tried::Next {
                    asked: None,
                    was_up: false,
                };
            }
        };
        match turn {
            Ok(_) => {}
            Err(ThrottleError::Deadline) => {
                details.failover(slot, "its throughput cap has no turn before the deadline");
                return Tried::TooLate;
            }
            Err(e @ ThrottleError::QueueFull { .. }) => {
                details.failover(slot, &e.to_string());
                return Tried::Next {
                    asked: None,
                    was_up: true,
                };
            }
        }
        if self.clock.now() >= deadline {
            return Tried::Expired;
        }
        details.carrier = Some(name);
        let was_up = slot.channel.healthy();
        let answer = slot.channel.submit_gated(message, gate).await;
        let now = self.clock.now();
        let error = match answer {
            // Not this carrier's doing: the caller knows why.
            Err(ChannelError::Withheld { reason }) => {
                return Tried::Done(SendResult::Failed { error: reason });
            }
            Ok(receipt) => {
                slot.record(true, now);
                slot.counters.sent.increment(1);
                details.receipt_due = slot
                    .channel
                    .receipt_wait()
                    .map(|wait| job.expires_at.plus(wait))
                    .into();
                return Tried::Done(SendResult::Sent {
                    reference: receipt.reference,
                });
            }
            Err(e) => e,
        };
        match &error {
            ChannelError::Temporary { .. } => &slot.counters.temporary,
            ChannelError::Rejected { .. } => &slot.counters.rejected,
            ChannelError::Refused { .. } => &slot.counters.refused,
            _ => &slot.counters.closed,
        }
        .increment(1);
        if let ChannelError::Rejected { .. } = error {
            // The number's fault, not the carrier's: no failover, and the carrier's
            // health is untouched.
            tracing::info!(id = %job.id, send = job.send, carrier = %name, error = %error, "the carrier refused the number");
            return Tried::Done(SendResult::Failed {
                error: format!("{name}: {error}"),
            });
        }
        slot.record(false, now);
        let asked = match &error {
            ChannelError::Temporary { retry_after, .. } => *retry_after,
            _ => None,
        };
        tracing::info!(id = %job.id, send = job.send, carrier = %name, round, error = %error, "carrier failed; trying the next one");
        details.failover(slot, &error.to_string());
        Tried::Next { asked, was_up }
    }
}

/// What offering a message to one carrier came to.
enum Tried {
    /// An answer that ends the send: accepted, or refused for a reason no other
    /// carrier would change.
    Done(SendResult),
    /// Too little validity left to send at all.
    Expired,
    /// The carrier's throughput cap has no turn before the deadline.
    TooLate,
    /// This carrier failed or was passed over: the next one (`asked`: how long the
    /// carrier asked to be left alone; `was_up`: it could take messages, so this
    /// counts as an attempt — a carrier with no live bind or an open breaker does
    /// not use the send's attempts up).
    Next {
        asked: Option<Duration>,
        was_up: bool,
    },
}

/// Takes a queued job's send for this node (see [`JobLedger::take_send`]) when the
/// carrier is about to write it: after the throughput cap, the bind and the window,
/// so that a node that dies while its sends wait there leaves them to another node
/// rather than marked interrupted. Passes at once on a retry of a send it took.
struct TakeGate<'a> {
    jobs: &'a dyn JobLedger,
    id: VerificationId,
    send: u8,
    node: &'a str,
    taken: parking_lot::Mutex<Taken>,
    in_flight: &'a InFlight,
    /// Once taken, until its answer is recorded.
    making: parking_lot::Mutex<Option<Making>>,
}

#[derive(Debug, Clone, Copy)]
enum Taken {
    NotYet,
    Took(TakeSend),
    /// The store could not be asked.
    Failed,
}

#[async_trait::async_trait]
impl SendGate for TakeGate<'_> {
    async fn pass(&self) -> Result<(), ChannelError> {
        if let Taken::Took(TakeSend::Go) = *self.taken.lock() {
            return Ok(());
        }
        let (taken, answer) =
            match take(self.jobs, self.in_flight, &self.id, self.send, self.node).await {
                Ok((TakeSend::Go, making)) => {
                    *self.making.lock() = making;
                    (Taken::Took(TakeSend::Go), Ok(()))
                }
                Ok((other, _)) => (
                    Taken::Took(other),
                    Err(ChannelError::Withheld {
                        reason: format!("the send is not this node's to make ({other:?})"),
                    }),
                ),
                Err(e) => {
                    tracing::warn!(id = %self.id, error = %e, "could not take a send");
                    self.in_flight.take_failed(self.id, self.send);
                    (
                        Taken::Failed,
                        Err(ChannelError::Withheld {
                            reason: format!("could not take the send: {e}"),
                        }),
                    )
                }
            };
        *self.taken.lock() = taken;
        answer
    }
}

impl SendDetails {
    fn failover(&mut self, slot: &CarrierSlot, error: &str) {
        slot.counters.failovers.increment(1);
        // A long outage over many rounds would grow the history without end.
        if self.failovers.len() < 16 {
            self.failovers.push(Failover {
                carrier: slot.name,
                error: error.into(),
            });
        }
    }
}

/// Apply a channel's delivery reports to the verifications they are about, until the
/// channel closes its report stream.
pub async fn apply_reports(
    mut reports: mpsc::Receiver<DeliveryReport>,
    stores: Stores,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    events: Arc<dyn crate::events::EventSink>,
) {
    while let Some(report) = reports.recv().await {
        let state = match report.state {
            ReportState::Delivered => SendState::Delivered,
            ReportState::Undeliverable => SendState::Undeliverable,
            ReportState::Expired => SendState::Expired,
            ReportState::Rejected => SendState::Rejected,
            ReportState::Unconfirmed => SendState::Unconfirmed,
        };
        metrics.reported(state);
        let Ok(id) = report.verification_id.parse::<VerificationId>() else {
            tracing::warn!(reference = %report.reference, "delivery report for a malformed verification id");
            continue;
        };
        let now = clock.now();
        match stores
            .jobs
            .record_report(&id, report.send, state, report.error, now)
            .await
        {
            Ok(Some(v)) => report_event(&*events, &v, report.send, state, now),
            Ok(None) => {
                tracing::debug!(%id, send = report.send, reference = %report.reference, "delivery report changed nothing (gone or already reported)")
            }
            Err(e) => tracing::warn!(%id, error = %e, "could not record a delivery report"),
        }
    }
}

/// `verification.delivered` or `verification.undeliverable` for a report that
/// changed send `send` of `v` (the verification as the report left it: its client,
/// number and carrier come with the change, no read of their own).
fn report_event(
    events: &dyn crate::events::EventSink,
    v: &Verification,
    send: u8,
    state: SendState,
    now: UnixMillis,
) {
    use crate::events::{Event, EventData, EventKind};
    let (kind, reason) = match state {
        SendState::Delivered => (EventKind::Delivered, None),
        SendState::Undeliverable | SendState::Expired | SendState::Rejected => {
            (EventKind::Undeliverable, Some(state.as_str()))
        }
        _ => return,
    };
    let carrier = v
        .sends()
        .get(usize::from(send).saturating_sub(1))
        .and_then(|s| s.details.as_ref())
        .and_then(|d| d.carrier.as_deref())
        .map(Box::from);
    events.emit(&Event {
        kind,
        at: now,
        client: v.client,
        data: EventData {
            send: Some(send),
            carrier,
            reason,
            subject: v.subject.as_deref().map(Into::into),
            ..EventData::of(&v.id, v.to, v.status(now).as_str()).with_channel(ChannelKind::Sms)
        },
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_pauses_double_honour_what_was_asked_and_stop_at_expiry() {
        let policy = RetryPolicy {
            max_attempts: 4,
            backoff: Duration::from_millis(250),
        };
        let now = UnixMillis(1_000_000);
        let far = now.plus(Duration::from_secs(600));
        let ms = Duration::from_millis;
        assert_eq!(policy.pause(1, None, now, far), Some(ms(250)));
        assert_eq!(policy.pause(3, None, now, far), Some(ms(1000)));
        assert_eq!(policy.pause(4, None, now, far), None, "attempts used up");
        assert_eq!(
            policy.pause(1, Some(Duration::from_secs(7)), now, far),
            Some(Duration::from_secs(7))
        );
        let soon = now.plus(ms(200));
        assert_eq!(policy.pause(1, None, now, soon), None, "would pass expiry");
    }
}
