//! The engine: every flow a caller can start — issue a code, check one, answer an
//! approval request in the app, acknowledge a push, cancel, read, explain the limits
//! — and the escalation timer. Each takes the authenticated caller and a request the
//! API has already parsed, takes every decision about who may do what and how often
//! (through [`crate::policy`]), and returns a typed outcome or a typed [`Refused`].
//! Nothing here knows HTTP.
//!
//! One file per flow: [`issue`](mod@issue), [`check`](mod@check),
//! [`answer`](mod@answer) (app answers and acknowledgements), [`explain`](mod@explain);
//! reading, canceling and escalating are here.

mod answer;
mod check;
mod expiry;
mod explain;
mod issue;
mod refusal;
mod resume;

pub use answer::{AnswerRequest, Answered};
pub use check::Checked;
pub use explain::{ExplainRequest, Explained};
pub use issue::{Idempotency, Issue, IssueRequest, Issued};
pub use refusal::{Refused, Unanswerable};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::delivery::router::Router;
use crate::delivery::{DeliveryJob, DeliveryQueue};
use crate::domain::clock::{Clock, UnixMillis};
use crate::domain::locale::Locale;
use crate::domain::name::Name;
use crate::domain::verification::{
    CancelOutcome, Closing, EscalationCause, Policy, SendResult, Status, Verification,
};
use crate::metrics::Metrics;
use crate::numbers::reader::NumberParser;
use crate::policy::admission::{Admission, Rules};
use crate::policy::clients::Client;
use crate::secrets::code::CodeKeys;
use crate::secrets::id::VerificationId;
use crate::store::{StoreError, Stores};
use otpd_adapters::ChannelKind;

/// A purpose (`login`, `signup`, …) and the policy its verifications get.
#[derive(Debug, Clone)]
pub struct Purpose {
    pub name: Name,
    pub policy: Policy,
    /// The push provider's acceptance counts as the app's acknowledgement (else only
    /// `POST …/ack` from the app does).
    pub provider_ack: bool,
    /// How long an approval request (`channel: app`) stays open.
    pub app_ttl: Duration,
    /// Requests by subject must carry the subject's contrast value.
    pub require_contrast: bool,
}

/// What the engine is built from.
pub struct EngineParts {
    pub stores: Stores,
    pub keys: CodeKeys,
    pub queue: DeliveryQueue,
    pub clock: Arc<dyn Clock>,
    pub purposes: Vec<Purpose>,
    pub metrics: Arc<Metrics>,
    /// Clients, limits and the pumping defence; a reload replaces them.
    pub rules: Rules,
    /// The routing plan in force, for the language of a number's country.
    pub router: Arc<Router>,
    /// Reads numbers (the registry's, for requests by subject).
    pub numbers: Arc<NumberParser>,
    pub options: Options,
}

/// The engine's share of the configuration that a reload does not change.
#[derive(Debug, Clone)]
pub struct Options {
    /// The purpose of requests that name none.
    pub default_purpose: String,
    /// The language of requests that name none, when their number's country has none
    /// configured.
    pub default_locale: Locale,
    /// How long a response is kept for replay under its idempotency key.
    pub idempotency_ttl: Duration,
    /// What an overloaded answer tells the caller to wait.
    pub overload_retry_after: Duration,
    /// How far an app answer's signed timestamp may be from otpd's clock.
    pub answer_max_skew: Duration,
}

impl Options {
    pub fn new(config: &crate::config::Config) -> Options {
        Options {
            default_purpose: config.codes.default_purpose.clone(),
            default_locale: Locale::parse(&config.codes.default_locale).unwrap_or(Locale::Es),
            idempotency_ttl: config.idempotency.ttl,
            overload_retry_after: config.delivery.overload_retry_after,
            answer_max_skew: config.app.answer_max_skew,
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options::new(&crate::config::Config::default())
    }
}

pub struct Engine {
    stores: Stores,
    /// The store queues each send in the same step as it records it (Redis streams):
    /// this node's workers get them from there, whichever node asked.
    store_queues: bool,
    keys: CodeKeys,
    queue: DeliveryQueue,
    clock: Arc<dyn Clock>,
    purposes: HashMap<Box<str>, Purpose>,
    metrics: Arc<Metrics>,
    admission: Arc<Admission>,
    /// Where what happens is told: metrics, audit trail, webhooks.
    events: Arc<dyn crate::events::EventSink>,
    router: Arc<Router>,
    numbers: Arc<NumberParser>,
    options: Options,
    /// Passes of [`Engine::escalate_due`] completed: what a test waits on to know
    /// that the escalation timer has looked since it moved the clock.
    escalation_passes: std::sync::atomic::AtomicU64,
    /// When this node's verifications expire, while a sink listens.
    expiries: expiry::Expiries,
    /// The clients' events, for `GET /v1/events`.
    event_log: Option<Arc<dyn crate::store::events::EventLog>>,
}

impl Engine {
    /// Admission decides on the store's own limiter, so that the limits a store
    /// decides with an issue or a check and those decided on their own are the same.
    pub fn new(parts: EngineParts) -> Self {
        let admission = Arc::new(Admission::new(
            parts.stores.verifications.limiter(),
            parts.rules,
        ));
        Self {
            stores: parts.stores,
            store_queues: false,
            keys: parts.keys,
            queue: parts.queue,
            clock: parts.clock,
            purposes: parts
                .purposes
                .into_iter()
                .map(|p| (Box::from(&*p.name), p))
                .collect(),
            metrics: parts.metrics,
            admission,
            router: parts.router,
            numbers: parts.numbers,
            options: parts.options,
            escalation_passes: Default::default(),
            expiries: Default::default(),
            event_log: None,
            events: Arc::new(crate::events::Fanout::default()),
        }
    }

    /// Tell what happens to `sink` (see [`crate::events`]).
    pub fn with_events(mut self, sink: Arc<dyn crate::events::EventSink>) -> Self {
        self.events = sink;
        self
    }

    /// Read clients' events back from `log` (`GET /v1/events`).
    pub fn with_event_log(mut self, log: Arc<dyn crate::store::events::EventLog>) -> Self {
        self.event_log = Some(log);
        self
    }

    /// `caller`'s own events after `after`, oldest first, at most `limit`: none for
    /// a caller the API does not know by name (an open API keeps no events).
    pub async fn events_after(
        &self,
        caller: &Client,
        after: crate::store::events::EventId,
        limit: usize,
    ) -> Result<Vec<crate::store::events::KeptEvent>, Refused> {
        match (caller.id(), &self.event_log) {
            (Some(name), Some(log)) => Ok(log.after(&name, after, limit).await?),
            _ => Ok(Vec::new()),
        }
    }

    /// The sink the engine tells what happens.
    pub fn events(&self) -> &Arc<dyn crate::events::EventSink> {
        &self.events
    }

    /// Tell the sink that `kind` happened to `client`'s verification.
    pub(crate) fn emit(
        &self,
        kind: crate::events::EventKind,
        client: Option<Name>,
        data: crate::events::EventData,
    ) {
        self.events.emit(&crate::events::Event {
            kind,
            at: self.clock.now(),
            client,
            data,
        });
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

    /// The purpose called `name`, or the default one.
    pub fn find_purpose(&self, name: Option<&str>) -> Result<&Purpose, Refused> {
        let name = name.unwrap_or(&self.options.default_purpose);
        self.purposes
            .get(name)
            .ok_or_else(|| Refused::UnknownPurpose {
                configured: self.purpose_names().into_iter().map(String::from).collect(),
            })
    }

    pub fn purpose_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.purposes.keys().map(|k| &**k).collect();
        names.sort_unstable();
        names
    }

    /// Reads the numbers requests carry.
    pub fn numbers(&self) -> &NumberParser {
        &self.numbers
    }

    /// The routing plan in force and the carriers' health.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    pub fn options(&self) -> &Options {
        &self.options
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

    /// The store, seam by seam.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    pub fn queue(&self) -> &DeliveryQueue {
        &self.queue
    }

    /// Clients, limits and the pumping defence (a reload installs new rules here).
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// May `caller` call a route anyone may call? Charged per caller network.
    pub async fn admit_public(&self, caller: std::net::IpAddr) -> Result<(), Refused> {
        let rules = self.admission.rules();
        Ok(self
            .admission
            .admit_public(&rules, caller, self.clock.now())
            .await?)
    }

    /// Bring the sampled gauges up to date (called before each metrics scrape).
    pub fn publish_gauges(&self) {
        self.metrics.queue_depth.set(self.queue.depth() as f64);
        let delay = self.queue.standing_delay(self.clock.now());
        self.metrics
            .queue_delay
            .set(delay.unwrap_or_default().as_secs_f64());
    }

    /// Verification `id`, if it is `caller`'s, and its status now.
    pub async fn get(
        &self,
        caller: &Client,
        id: &VerificationId,
    ) -> Result<(Verification, Status), Refused> {
        let v = self
            .stores
            .verifications
            .get(id)
            .await?
            .filter(|v| v.client == caller.id())
            .ok_or(Refused::NotFound)?;
        Ok(settled(v, self.clock.now()))
    }

    /// The recent verifications of `subject` (normal form), every client's, newest
    /// first, each with its status now: an operator's lookup.
    pub async fn of_subject(
        &self,
        subject: &str,
        limit: usize,
    ) -> Result<Vec<(Verification, Status)>, Refused> {
        let found = self.stores.verifications.of_subject(subject, limit).await?;
        let now = self.clock.now();
        Ok(found.into_iter().map(|v| settled(v, now)).collect())
    }

    /// Cancel `caller`'s pending verification `id`.
    pub async fn cancel(
        &self,
        caller: &Client,
        id: &VerificationId,
    ) -> Result<(CancelOutcome, Verification), Refused> {
        let owner = caller.id().map(|n| n.as_str());
        let (outcome, v) = self
            .stores
            .verifications
            .close(id, owner, Closing::Cancel, self.clock.now())
            .await?
            .ok_or(Refused::NotFound)?;
        if outcome == CancelOutcome::Canceled {
            self.emit(
                crate::events::EventKind::Canceled,
                v.client,
                crate::events::EventData {
                    subject: v.subject.as_deref().map(Into::into),
                    ..crate::events::EventData::of(&v.id, v.to, "canceled")
                },
            );
        }
        Ok((outcome, v))
    }

    /// Send by SMS the codes whose push went unacknowledged for too long: up to
    /// `limit` of them, each exactly once (the store escalates and takes it off the
    /// due list in one atomic step, so a store error stops the pass and the rest
    /// wait for the next). Returns how many were escalated. Waits for room in the
    /// queue rather than dropping one.
    pub async fn escalate_due(&self, limit: usize) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let due = self
            .stores
            .verifications
            .due_escalations(now, limit)
            .await?;
        let mut escalated = 0;
        for id in due {
            let Some(v) = self
                .stores
                .verifications
                .escalate(&id, EscalationCause::Timeout, now)
                .await?
            else {
                continue;
            };
            self.metrics.escalated(EscalationCause::Timeout);
            self.emit(
                crate::events::EventKind::Escalated,
                v.client,
                crate::events::EventData {
                    subject: v.subject.as_deref().map(Into::into),
                    reason: Some(EscalationCause::Timeout.as_str()),
                    send: Some(v.sends().len() as u8),
                    ..crate::events::EventData::of(&v.id, v.to, "pending")
                        .with_channel(ChannelKind::Sms)
                },
            );
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
                purpose: v.purpose,
                code: self.keys.unseal(&v.id, v.sealed_code, v.code_length),
                expires_at: v.expires_at,
                subject: None,
                match_code: None,
                challenge: None,
                client: v.client,
                provider_ack: false,
                receipt: None,
                queued_at: now,
            };
            tracing::info!(%id, "push not acknowledged in time: sending the code by SMS");
            if self.queue.send(job).await.is_err() {
                let failed = SendResult::Failed {
                    error: "otpd was shutting down".into(),
                };
                self.stores
                    .jobs
                    .record_send(&id, send, failed, None, now)
                    .await?;
            }
        }
        self.escalation_passes
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(escalated)
    }

    /// How many passes of [`Engine::escalate_due`] have completed.
    pub fn escalation_passes(&self) -> u64 {
        self.escalation_passes
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

/// `v` as it stands at `now` (what time alone changed, applied), with its status.
fn settled(mut v: Verification, now: UnixMillis) -> (Verification, Status) {
    v.settle(now);
    let status = v.status(now);
    (v, status)
}
