//! Issue a code: the flow of `POST /v1/verifications`.
//!
//! In order: the idempotency key (a retry gets the first answer), the subject (its
//! registered number, language and devices; its contrast value, a guess charged when
//! wrong), what the client may ask for (countries, purposes, another number than the
//! subject's), the channel, then admission — the pumping defence and every limit,
//! decided by the store in the same step as it writes the verification — and the
//! queued send.

use std::net::IpAddr;
use std::time::Duration;

use super::{Engine, Purpose, Refused};
use crate::delivery::{self, DeliveryJob};
use crate::domain::locale::Locale;
use crate::domain::subscriber::Subscriber;
use crate::domain::thin_str::ThinStr;
use crate::domain::verification::{
    Challenge, MatchCode, NewVerification, RequestedChannel, ResendRefusal, Verification,
};
use crate::numbers::reader::NumberInfo;
use crate::policy::admission::Rules;
use crate::policy::clients::Client;
use crate::policy::limiter::{Denial, IssueLimits};
use crate::policy::limits::{IssueFacts, Pool};
use crate::secrets::code::{Code, OsRandom, RandomSource};
use crate::secrets::contrast::ContrastMac;
use crate::secrets::id::{ShardTag, VerificationId};
use crate::store::{Fingerprint, IdempotencyBegin, IssueOutcome, StoredResponse};
use otpd_adapters::ChannelKind;

/// A request to send a code, as the API parsed it: every field read and in its
/// normal form, nothing yet decided.
#[derive(Debug, Clone, Default)]
pub struct IssueRequest {
    /// The number asked for; optional when `subject` names a registered subscriber.
    pub to: Option<NumberInfo>,
    pub channel: RequestedChannel,
    /// The language asked for; else the subscriber's, the country's, the default.
    pub locale: Option<Locale>,
    /// The purpose's name; else the default purpose.
    pub purpose: Option<String>,
    /// The identity number, normalised ([`crate::domain::subject::normalize`]).
    pub subject: Option<Box<str>>,
    /// The subject's contrast value, normalised ([`crate::secrets::contrast::normalize`]).
    pub contrast: Option<String>,
    /// The end user's address, as the backend saw it (keys the per-address limits).
    pub ip: Option<IpAddr>,
}

/// An `Idempotency-Key` and what the request carried: a retry with the same key
/// and the same request gets the first answer.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: Fingerprint,
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

    /// Whether a code went out (created or re-sent).
    pub fn sent(&self) -> bool {
        !matches!(self, Issued::Deduplicated(_))
    }
}

/// What an issue answers: done now, or the answer kept from the first time the same
/// idempotent request was made.
// `Done` carries the verification itself; boxing it would cost an allocation per
// request to shrink a value that is returned once and taken apart at once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Issue {
    Done {
        issued: Issued,
        /// What `render` made of it (and what a retry will be answered with).
        response: StoredResponse,
    },
    Replayed(StoredResponse),
}

/// What the registry says about the request's subject.
#[derive(Debug, Default)]
struct SubjectFacts {
    /// The number the code goes to, when the registry decided it.
    number: Option<NumberInfo>,
    /// The subscriber's language, when the request named none.
    locale: Option<Locale>,
    /// A device is registered: push is possible.
    has_devices: bool,
    /// A device enrolled a key: approval in the app is possible.
    has_keys: bool,
    /// `to` is another number than the subject's, by a client allowed to say so.
    to_override: bool,
}

/// What the engine decided a request is, before admission.
struct Planned {
    number: NumberInfo,
    channel: RequestedChannel,
    locale: Locale,
    purpose: Purpose,
    subject: Option<Box<str>>,
    has_devices: bool,
    to_override: bool,
}

impl Engine {
    /// Issue a code for `req` on behalf of `caller`, or re-send the pending one for
    /// the same number and purpose. `render` turns the outcome into the answer a
    /// retry under the same idempotency key gets.
    pub async fn issue(
        &self,
        caller: &Client,
        req: IssueRequest,
        idempotency: Option<Idempotency>,
        render: impl FnOnce(&Issued) -> StoredResponse,
    ) -> Result<Issue, Refused> {
        let Some(idem) = idempotency else {
            let issued = self.issue_now(caller, req).await?;
            let response = render(&issued);
            return Ok(Issue::Done { issued, response });
        };
        // Keys are the client's own: two clients may well pick the same one.
        let key = format!("{}\n{}", caller.name, idem.key);
        let ttl = self.options.idempotency_ttl;
        match self
            .stores
            .idempotency
            .idempotency_begin(&key, &idem.fingerprint, self.clock.now(), ttl)
            .await?
        {
            IdempotencyBegin::Started => {}
            IdempotencyBegin::Replay(stored) => return Ok(Issue::Replayed(stored)),
            IdempotencyBegin::InProgress => return Err(Refused::IdempotencyInProgress),
            IdempotencyBegin::Mismatch => return Err(Refused::IdempotencyMismatch),
        }
        match self.issue_now(caller, req).await {
            Ok(issued) => {
                let response = render(&issued);
                let kept = self
                    .stores
                    .idempotency
                    .idempotency_finish(
                        &key,
                        &idem.fingerprint,
                        response.clone(),
                        self.clock.now(),
                        ttl,
                    )
                    .await;
                if let Err(e) = kept {
                    tracing::warn!(error = %e, "could not keep the idempotent response");
                }
                Ok(Issue::Done { issued, response })
            }
            Err(refused) => {
                // Failed requests are not kept: the same key may be retried.
                let _ = self
                    .stores
                    .idempotency
                    .idempotency_abandon(&key, &idem.fingerprint)
                    .await;
                Err(refused)
            }
        }
    }

    /// The issue itself: decide, admit, write, queue.
    async fn issue_now(&self, caller: &Client, req: IssueRequest) -> Result<Issued, Refused> {
        // One view of the limits for the whole request, even across a reload.
        let rules = self.admission.rules();
        let facts = self.resolve_subject(&rules, caller, &req).await?;
        let ip = req.ip;
        let planned = self.plan(caller, req, facts)?;
        self.admit_and_issue(&rules, caller, ip, planned).await
    }

    /// Fill in what a registered subject implies: the number when `to` is absent, the
    /// subscriber's language, the devices. Checks the contrast value when the client
    /// or purpose requires one (or the request carries one), and that a code for a
    /// registered subject goes to the subject's number.
    async fn resolve_subject(
        &self,
        rules: &Rules,
        caller: &Client,
        req: &IssueRequest,
    ) -> Result<SubjectFacts, Refused> {
        let Some(subject) = req.subject.as_deref() else {
            return Ok(SubjectFacts::default());
        };
        let contrast_required = caller.require_contrast
            || self
                .purpose(
                    req.purpose
                        .as_deref()
                        .unwrap_or(&self.options.default_purpose),
                )
                .is_some_and(|p| p.require_contrast);
        if contrast_required && req.contrast.is_none() {
            return Err(Refused::ContrastRequired);
        }
        let now = self.clock.now();
        if req.contrast.is_some() {
            // Decided before the comparison, so that a subject past its limit is
            // refused whatever it sends (a refusal after it would tell a right guess
            // from a wrong one); only failures are charged.
            self.admission
                .guess_allowed(rules, subject, req.ip, now)
                .await?;
        }
        let subscriber = self.stores.registry.get_subscriber(subject).await?;
        if let Some(normal) = &req.contrast
            && !self.contrast_matches(subject, normal, subscriber.as_ref())
        {
            tracing::info!("a request by subject failed its contrast check");
            metrics::counter!("otpd_contrast_failures_total").increment(1);
            self.admission
                .guess_failed(rules, subject, req.ip, now)
                .await;
            return Err(Refused::UnknownSubject);
        }
        let Some(s) = subscriber else {
            return match req.to {
                None => Err(Refused::UnknownSubject),
                Some(_) => Ok(SubjectFacts::default()),
            };
        };
        let locale = s.locale;
        match &req.to {
            Some(number) if number.e164 != s.phone => {
                // A code for a registered subject goes to the subject's number:
                // anything else would send the citizen's PIN (or approval) to
                // whoever asked.
                if !caller.override_to {
                    return Err(Refused::ToNotAllowed);
                }
                metrics::counter!("otpd_to_overrides_total").increment(1);
                tracing::info!(client = %caller.name, "a subject's code is sent to another number than the registered one (override_to)");
                // The subject's devices belong with the registered number: the
                // code goes by SMS to the number asked for, and nowhere else.
                Ok(SubjectFacts {
                    locale,
                    to_override: true,
                    ..SubjectFacts::default()
                })
            }
            Some(_) => Ok(registered(&s, None, locale)),
            None => {
                let number = self
                    .numbers
                    .parse(&s.phone.to_string())
                    .map_err(Refused::InvalidNumber)?;
                Ok(registered(&s, Some(number), locale))
            }
        }
    }

    /// Computed and compared whether or not the subject is registered, so that the
    /// time taken tells nothing either.
    fn contrast_matches(&self, subject: &str, normal: &str, s: Option<&Subscriber>) -> bool {
        let given = self.keys.contrast(subject, normal);
        let stored = s.and_then(|s| s.contrast);
        let reference = stored.unwrap_or(ContrastMac([0; 32]));
        given.matches(&reference) && stored.is_some()
    }

    /// What the request is, decided: the number, the language, the purpose and
    /// channel the client may use.
    fn plan(
        &self,
        caller: &Client,
        req: IssueRequest,
        facts: SubjectFacts,
    ) -> Result<Planned, Refused> {
        let number = facts.number.or(req.to).expect(
            "the API requires `to` without a subject, and a subject without one resolves it",
        );
        if !caller.may_send_to(number.country) {
            return Err(Refused::CountryNotAllowed {
                allowed: caller.countries(),
            });
        }
        // The request's language, else the subscriber's, else the one of the
        // number's country, else the default.
        let locale = req
            .locale
            .or(facts.locale)
            .or_else(|| self.router.plan().country_locale(number.country))
            .unwrap_or(self.options.default_locale);
        let purpose = self.find_purpose(req.purpose.as_deref())?.clone();
        if !caller.may_use(&purpose.name) {
            return Err(Refused::PurposeNotAllowed);
        }
        let subject = req.subject;
        let field = if subject.is_some() {
            "subject"
        } else {
            "channel"
        };
        if req.channel == RequestedChannel::App && (subject.is_none() || !facts.has_keys) {
            return Err(Refused::NoDeviceKey { field });
        }
        if req.channel == RequestedChannel::Push && !facts.has_devices {
            return Err(Refused::NoDevice { field });
        }
        Ok(Planned {
            number,
            channel: req.channel,
            locale,
            purpose,
            subject,
            has_devices: facts.has_devices,
            to_override: facts.to_override,
        })
    }

    /// Admission and the store's one step: the pumping defence's word, then every
    /// limit decided by the store as it writes the verification.
    async fn admit_and_issue(
        &self,
        rules: &Rules,
        caller: &Client,
        ip: Option<IpAddr>,
        planned: Planned,
    ) -> Result<Issued, Refused> {
        let now = self.clock.now();
        let (to, country) = (planned.number.e164, planned.number.country);
        let subject = planned.subject.clone();
        let purpose = planned.purpose.name;
        let facts = IssueFacts {
            to,
            country,
            subject: subject.as_deref(),
            ip,
            client: caller,
            purpose: &purpose,
        };
        let admission = &self.admission;
        let plan = admission.plan_issue(rules, &facts, now)?;
        let (gate, charge) = (
            plan.gate(rules, &facts),
            plan.charge(rules, &facts, plan.pool()),
        );
        let fallback = plan
            .falls_back()
            .then(|| plan.charge(rules, &facts, Pool::Shared));
        let limits = IssueLimits {
            gate: &gate,
            charge: &charge,
            fallback: fallback.as_deref(),
            now: plan.now,
        };
        let result = self.write(caller, planned, &limits).await;
        match &result {
            Err(Refused::Limited(r)) => {
                let denied = admission.denied(rules, &facts, Denial::Refused(*r), now);
                return Err(denied.into());
            }
            Err(Refused::LimitsUnavailable(_)) => {}
            _ => admission.admitted(&plan),
        }
        if let Ok(issued) = &result
            && issued.sent()
        {
            admission.sent(rules, to, country, now);
        }
        result
    }

    /// Make the code and the verification, have the store write it within `limits`,
    /// and queue its send. Reserves the queue slot first: when the queue is full
    /// nothing is created.
    async fn write(
        &self,
        caller: &Client,
        planned: Planned,
        limits: &IssueLimits<'_>,
    ) -> Result<Issued, Refused> {
        let now = self.clock.now();
        // A standing queue: codes would reach people late; better refused now.
        if self.queue.behind(now) {
            return Err(self.overloaded());
        }
        let slot = if self.store_queues {
            None
        } else {
            Some(self.queue.try_reserve().map_err(|_| self.overloaded())?)
        };
        let (candidate, code) = self.candidate(caller, &planned)?;
        let (issued, code) = match self
            .stores
            .verifications
            .issue(&candidate, now, limits)
            .await?
        {
            IssueOutcome::Limited(refusal) => return Err(Refused::Limited(refusal)),
            IssueOutcome::LimitsUnavailable(u) => return Err(Refused::LimitsUnavailable(u)),
            IssueOutcome::Overloaded => return Err(self.overloaded()),
            IssueOutcome::Created => {
                self.metrics.created();
                self.arm_expiry(&candidate.id, candidate.expires_at);
                (Issued::Created(candidate), code)
            }
            IssueOutcome::Resent(v) => {
                self.metrics.resent();
                // Same verification, same code: recover it from its sealed form.
                let code = self.keys.unseal(&v.id, v.sealed_code, v.code_length);
                (Issued::Resent(*v), code)
            }
            IssueOutcome::Refused {
                refusal,
                expires_at,
                existing,
            } => return self.not_resent(&existing, refusal, expires_at).await,
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
            purpose: v.purpose,
            code,
            expires_at: v.expires_at,
            subject: v.subject.as_deref().map(Into::into),
            match_code: v.match_code,
            challenge: v.challenge(),
            client: v.client,
            provider_ack: planned.purpose.provider_ack,
            receipt: None,
            queued_at: now,
        });
        Ok(issued)
    }

    fn overloaded(&self) -> Refused {
        self.metrics.overloaded();
        Refused::Overloaded {
            retry_after: self.options.overload_retry_after,
        }
    }

    /// A fresh code and the verification that would carry it.
    fn candidate(&self, caller: &Client, p: &Planned) -> Result<(Verification, Code), Refused> {
        let now = self.clock.now();
        let mut policy = p.purpose.policy;
        if p.channel == RequestedChannel::App {
            policy.ttl = p.purpose.app_ttl;
        }
        let random = |e| {
            tracing::error!(error = %e, "no randomness for a code");
            Refused::NoRandomness
        };
        let mut rng = OsRandom;
        let mut bytes = [0u8; 14];
        rng.fill(&mut bytes).map_err(random)?;
        let id = VerificationId::new(ShardTag::of(p.number.e164), bytes);
        let code = Code::generate(policy.code_length, &mut rng).map_err(random)?;
        let kind = delivery::resolve(p.channel, p.has_devices);
        let match_code = match kind {
            ChannelKind::Push => Some(MatchCode::generate(&mut rng).map_err(random)?),
            ChannelKind::Sms => None,
        };
        let challenge = match p.channel {
            RequestedChannel::App => Some(Challenge::generate(&mut rng).map_err(random)?),
            _ => None,
        };
        let mut candidate = Verification::new(
            NewVerification {
                id,
                to: p.number.e164,
                line: p.number.line(),
                purpose: p.purpose.name,
                subject: p.subject.as_deref().map(ThinStr::new),
                client: caller.id(),
                locale: p.locale,
                channel: p.channel,
                first_send: kind,
                code_mac: self.keys.mac(&id, &code),
                sealed_code: self.keys.seal(&id, &code),
                policy,
                match_code,
                challenge,
            },
            now,
        );
        candidate.to_override = p.to_override;
        Ok((candidate, code))
    }

    /// A pending verification exists and may not be re-sent yet (or any more):
    /// the same request again gets it back, anything else is refused.
    async fn not_resent(
        &self,
        existing: &VerificationId,
        refusal: ResendRefusal,
        expires_at: crate::domain::clock::UnixMillis,
    ) -> Result<Issued, Refused> {
        let now = self.clock.now();
        let window = self.admission.rules().policy.dedupe_window;
        if let Some(v) = self.duplicate_of(existing, window).await? {
            self.metrics.deduplicated();
            return Ok(Issued::Deduplicated(v));
        }
        Err(match refusal {
            ResendRefusal::Cooldown { retry_after } => {
                self.metrics.refused_cooldown();
                Refused::Cooldown { retry_after }
            }
            ResendRefusal::MaxSends => {
                self.metrics.refused_max_sends();
                // A new code can be asked for once this one has expired.
                let left = now.until(expires_at);
                Refused::MaxSends {
                    retry_after: Duration::from_secs(left.as_secs().max(1)),
                }
            }
        })
    }

    /// The pending verification `id` if its last send is younger than `window`.
    async fn duplicate_of(
        &self,
        id: &VerificationId,
        window: Duration,
    ) -> Result<Option<Verification>, Refused> {
        if window.is_zero() {
            return Ok(None);
        }
        let Some(v) = self.stores.verifications.get(id).await? else {
            return Ok(None);
        };
        let last = v.sends().last().map_or(v.created_at, |s| s.queued_at);
        Ok((last.until(self.clock.now()) < window).then_some(v))
    }
}

/// What a registered subscriber brings to a request for its own number.
fn registered(s: &Subscriber, number: Option<NumberInfo>, locale: Option<Locale>) -> SubjectFacts {
    SubjectFacts {
        number,
        locale,
        has_devices: !s.devices.is_empty(),
        has_keys: s.devices.iter().any(|d| d.key.is_some()),
        to_override: false,
    }
}
