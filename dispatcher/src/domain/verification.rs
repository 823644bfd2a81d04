//! The verification lifecycle: a pure state machine, no I/O and no clock of its own.
//!
//! ```text
//!             check(right)            check(wrong) × max_attempts
//!   Pending ───────────────► Approved    Pending ─────────────► Locked
//!      │  cancel                          │ time ≥ expires_at
//!      └──────────► Canceled              └──────────► Expired (derived, never stored)
//!
//!   channel `app`:  answer(approve) ──► Approved      answer(deny) ──► Denied
//! ```
//!
//! Approved, Denied, Canceled and Locked are final: nothing moves a verification out
//! of them, so a code (or an app's answer) approves at most once, a verification
//! approved in the app is never approved again by its PIN (or the other way round),
//! and a canceled verification never approves.
//! Expiry is derived from the time passed in, so a store needs no timer to expire
//! anything. Every transition returns what happened, and the caller turns that into
//! an answer; the store persists the mutated value.

use std::time::Duration;

use compact_str::CompactString;
use otpd_adapters::ChannelKind;
use smallvec::{SmallVec, smallvec};
use thin_vec::ThinVec;

use crate::domain::clock::{MaybeAt, UnixMillis};
use crate::domain::locale::Locale;
use crate::domain::name::Name;
use crate::domain::thin_str::ThinStr;
use crate::numbers::e164::E164;
use crate::numbers::reader::NumberLine;
use crate::secrets::code::{CodeLength, CodeMac, SealedCode};
use crate::secrets::id::VerificationId;

/// What the requester asked for; the dispatcher resolves `Auto` to a channel kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestedChannel {
    #[default]
    Auto,
    Sms,
    Push,
    /// Approval in the app: the push carries a challenge the app answers with a
    /// signature by its device key; the PIN goes by SMS only if no answer comes in
    /// time.
    App,
}

impl RequestedChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestedChannel::Auto => "auto",
            RequestedChannel::Sms => "sms",
            RequestedChannel::Push => "push",
            RequestedChannel::App => "app",
        }
    }

    pub const ALL: [RequestedChannel; 4] = [
        RequestedChannel::Auto,
        RequestedChannel::Sms,
        RequestedChannel::Push,
        RequestedChannel::App,
    ];
}

/// The rules a verification lives by, fixed when it is created (from its purpose's
/// configuration) so that a config reload never changes a verification in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub ttl: Duration,
    pub code_length: CodeLength,
    pub max_attempts: u8,
    pub max_sends: u8,
    pub resend_cooldown: Duration,
    /// With `channel: auto` and a push first: how long the push may go unacknowledged
    /// before the same code goes by SMS.
    pub escalate_after: Duration,
}

/// The status a caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    Approved,
    /// The person refused the request in the app.
    Denied,
    Canceled,
    Locked,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Canceled => "canceled",
            Status::Locked => "locked",
            Status::Expired => "expired",
        }
    }
}

/// The stored state; `Expired` is not one of them because it is derived from time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Approved,
    Denied,
    Canceled,
    Locked,
}

/// Where one send of the code stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendState {
    /// Waiting in the delivery queue.
    Queued,
    /// Accepted by the channel.
    Sent,
    /// The channel refused it or could not be reached.
    Failed,
    /// The transport reported it delivered to the handset.
    Delivered,
    /// The transport reported it could not be delivered.
    Undeliverable,
    /// The transport gave up: its validity ended before delivery.
    Expired,
    /// The network refused it after accepting it.
    Rejected,
    /// No final receipt came within the carrier's wait (`receipt_wait` past the
    /// code's expiry): lost on the way, or never sent by the SMSC.
    Unconfirmed,
}

impl SendState {
    pub const ALL: [SendState; 8] = [
        SendState::Queued,
        SendState::Sent,
        SendState::Failed,
        SendState::Delivered,
        SendState::Undeliverable,
        SendState::Expired,
        SendState::Rejected,
        SendState::Unconfirmed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SendState::Queued => "queued",
            SendState::Sent => "sent",
            SendState::Failed => "failed",
            SendState::Delivered => "delivered",
            SendState::Undeliverable => "undeliverable",
            SendState::Expired => "expired",
            SendState::Rejected => "rejected",
            SendState::Unconfirmed => "unconfirmed",
        }
    }

    /// Whether this is what a delivery report says (the end of the send's story).
    pub fn is_reported(self) -> bool {
        matches!(
            self,
            SendState::Delivered
                | SendState::Undeliverable
                | SendState::Expired
                | SendState::Rejected
                | SendState::Unconfirmed
        )
    }
}

/// Why a send was made by escalation rather than asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalationCause {
    /// The push was not acknowledged within the purpose's `escalate_after`.
    Timeout,
    /// No push could be delivered (refused, no device left, provider unreachable).
    PushFailed,
}

impl EscalationCause {
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationCause::Timeout => "push_timeout",
            EscalationCause::PushFailed => "push_failed",
        }
    }
}

/// The short number shown both on the requesting screen and in the push, so that the
/// person can tell the request on their phone is the one in front of them. It is not
/// a secret (it is shown, and it approves nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchCode(u16);

impl MatchCode {
    /// `value` below 1000.
    pub fn new(value: u16) -> Option<Self> {
        (value < 1000).then_some(Self(value))
    }

    pub fn value(self) -> u16 {
        self.0
    }

    /// A uniformly random one.
    pub fn generate(
        rng: &mut impl crate::secrets::code::RandomSource,
    ) -> Result<Self, crate::secrets::code::RandomError> {
        crate::secrets::code::uniform_below(1000, rng).map(|v| Self(v as u16))
    }
}

impl std::fmt::Display for MatchCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:03}", self.0)
    }
}

/// The random value an app signs to answer an approval request (channel `app`). It
/// ties a signature to one request beyond its id: ids appear in URLs and logs, the
/// challenge only in the push and the QR code. 128 bits, shown in base64url.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Challenge(pub [u8; 16]);

impl Challenge {
    pub fn generate(
        rng: &mut impl crate::secrets::code::RandomSource,
    ) -> Result<Self, crate::secrets::code::RandomError> {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// From its base64url text (22 characters).
    pub fn parse(s: &str) -> Option<Self> {
        use base64::Engine as _;
        if s.len() != 22 {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?;
        bytes.try_into().ok().map(Self)
    }
}

impl std::fmt::Display for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use base64::Engine as _;
        f.write_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Challenge({self})")
    }
}

/// What an app's signed answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerOutcome {
    /// Recorded now: the verification is approved (or denied), for good.
    Answered(Status),
    /// The verification is not an approval request (not channel `app`).
    NotApp,
    /// Final already (answered, approved by PIN, canceled, locked, expired): an
    /// answer after the first changes nothing.
    Final(Status),
}

/// What an acknowledgement from the app did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Recorded now: the push counts as delivered, and no escalation will follow.
    Acknowledged,
    /// Recorded before; nothing changed.
    AlreadyAcknowledged,
    /// The verification was never sent by push.
    NotPush,
    /// Final (approved, canceled, locked, expired): nothing to acknowledge.
    Final(Status),
}

/// One send of the code: the delivery history has one per send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAttempt {
    pub channel: ChannelKind,
    /// Set when this send was made by escalating from push.
    pub escalated: Option<EscalationCause>,
    pub state: SendState,
    pub queued_at: UnixMillis,
    /// When the channel answered (sent or failed).
    pub answered_at: MaybeAt,
    /// When the delivery report arrived (delivered, undeliverable, …).
    pub reported_at: MaybeAt,
    /// The channel's reference (SMSC message id, outbox position…). Inline up to
    /// 24 bytes, as most carriers' message ids are: a block of its own cost more.
    pub reference: Option<CompactString>,
    /// Why it failed, as the channel said it (rare: one pointer when absent).
    pub error: Option<ThinStr>,
    /// For SMS: the carrier, the carriers tried before it, the encoding; absent for
    /// pushes. Inline: nearly every verification has an SMS send, and a block of its
    /// own cost more (its pointer, the allocator's rounding) than the bytes a push
    /// send leaves unused.
    pub details: Option<SendDetails>,
}

/// How an SMS send was routed and encoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendDetails {
    /// The carrier that took it (or the last one tried).
    pub carrier: Option<Name>,
    /// The route's prefix (`default` for the default route).
    pub route: Option<Name>,
    /// Carriers passed over before, each with why. Rare, so a `ThinVec`: one
    /// pointer (to a shared empty header when there are none) where a `Vec` or a
    /// boxed slice take two or three.
    pub failovers: ThinVec<Failover>,
    /// `gsm7` or `ucs2`.
    pub encoding: Option<otpd_adapters::smpp::encoding::Alphabet>,
    /// SMS the text takes.
    pub segments: u8,
    /// When its final receipt is due at the latest (the code's expiry plus the
    /// carrier's `receipt_wait`), if the carrier sends receipts: a send still `sent`
    /// then reads as `unconfirmed` ([`Verification::settle`]), whichever node reads
    /// it and whether or not the node that sent it is still there.
    pub receipt_due: MaybeAt,
}

/// A carrier a send moved on from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub carrier: Name,
    pub error: Box<str>,
}

/// A channel's answer about one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    Sent {
        reference: String,
    },
    Failed {
        error: String,
    },
    /// Not sent: too little validity was left for the code to be of use.
    Expired {
        error: String,
    },
}

/// What a check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The code was right: the verification is now approved.
    Approved,
    /// The code was wrong; this many attempts remain (at least one).
    Wrong {
        attempts_left: u8,
    },
    /// The last attempt was used up now, or earlier.
    Locked,
    Expired,
    Canceled,
    /// Approved earlier: a code approves once, so this check approves nothing.
    AlreadyApproved,
    /// Denied in the app: final.
    Denied,
    /// An approval request whose PIN was never sent (it has not fallen back to
    /// SMS): nobody can know the code, so nothing is compared or counted.
    NoCode,
}

/// Why a repeat request did not re-send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResendRefusal {
    /// Too soon after the previous send; try again after this long.
    Cooldown { retry_after: Duration },
    /// The code was sent `max_sends` times already.
    MaxSends,
}

/// How a pending verification is closed before its end: canceled by its client,
/// or locked by otpd (its subject typed too many wrong codes across verifications).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    Cancel,
    Lock,
}

/// What a cancel (or lock) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Canceled,
    AlreadyCanceled,
    /// Final in another way: approved, locked or expired.
    Final(Status),
}

/// Everything needed to create a verification; the code itself is already reduced to
/// its MAC and sealed copy.
#[derive(Debug, Clone)]
pub struct NewVerification {
    pub id: VerificationId,
    pub to: E164,
    /// The number's country and kind of line.
    pub line: NumberLine,
    pub purpose: Name,
    pub subject: Option<ThinStr>,
    /// The API client that asked for it (`None` when the API is open): only it sees,
    /// checks or cancels it.
    pub client: Option<Name>,
    pub locale: Locale,
    pub channel: RequestedChannel,
    pub first_send: ChannelKind,
    pub code_mac: CodeMac,
    pub sealed_code: SealedCode,
    pub policy: Policy,
    /// Shown on the requester's screen and in the push; `None` when not sent by push.
    pub match_code: Option<MatchCode>,
    /// What the app signs (channel `app` only).
    pub challenge: Option<Challenge>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub id: VerificationId,
    pub to: E164,
    pub line: NumberLine,
    pub purpose: Name,
    pub subject: Option<ThinStr>,
    pub client: Option<Name>,
    pub locale: Locale,
    pub channel: RequestedChannel,
    pub code_length: CodeLength,
    pub code_mac: CodeMac,
    pub sealed_code: SealedCode,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub(crate) state: State,
    pub(crate) state_changed_at: UnixMillis,
    pub(crate) attempts: u8,
    pub(crate) max_attempts: u8,
    pub(crate) max_sends: u8,
    pub(crate) resend_cooldown_ms: u32,
    /// Inline while there is one send, as nearly always: a block of its own per
    /// verification cost a pointer, a capacity and the allocator's rounding.
    pub(crate) sends: SmallVec<[SendAttempt; 1]>,
    pub match_code: Option<MatchCode>,
    /// When an unacknowledged push escalates to SMS; `None` when no escalation is
    /// pending (none armed, acknowledged, or done).
    pub(crate) escalate_at: MaybeAt,
    /// When the app acknowledged the push.
    pub(crate) acknowledged_at: MaybeAt,
    /// Channel `app` only (boxed, so that other verifications stay small).
    pub(crate) approval: Option<Box<ApprovalState>>,
    /// Asked for a registered subject with another number than the subject's, by a
    /// client allowed to (`override_to`): recorded for whoever reads it later.
    pub to_override: bool,
}

/// What an approval request (channel `app`) carries beyond other verifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalState {
    /// What the app signs.
    pub challenge: Challenge,
    /// The thumbprint of the device key whose signed answer made the verification
    /// final; `None` while pending, and when approved by its PIN.
    pub answered_by: Option<Box<str>>,
}

impl Verification {
    /// A new pending verification whose first send is queued now.
    pub fn new(init: NewVerification, now: UnixMillis) -> Self {
        let p = init.policy;
        // Only `auto` and `app` fall back: a caller who asked for push asked for push
        // only.
        let escalate_at = (matches!(init.channel, RequestedChannel::Auto | RequestedChannel::App)
            && init.first_send == ChannelKind::Push)
            .then(|| now.plus(p.escalate_after));
        Self {
            id: init.id,
            to: init.to,
            line: init.line,
            purpose: init.purpose,
            subject: init.subject,
            client: init.client,
            locale: init.locale,
            channel: init.channel,
            code_length: p.code_length,
            code_mac: init.code_mac,
            sealed_code: init.sealed_code,
            created_at: now,
            expires_at: now.plus(p.ttl),
            state: State::Pending,
            state_changed_at: now,
            attempts: 0,
            max_attempts: p.max_attempts.max(1),
            max_sends: p.max_sends.max(1),
            resend_cooldown_ms: p.resend_cooldown.as_millis().min(u32::MAX as u128) as u32,
            sends: smallvec![SendAttempt::queued(init.first_send, now)],
            match_code: init.match_code,
            escalate_at: escalate_at.into(),
            acknowledged_at: MaybeAt::NONE,
            approval: init.challenge.map(|challenge| {
                Box::new(ApprovalState {
                    challenge,
                    answered_by: None,
                })
            }),
            to_override: false,
        }
    }

    /// What the app signs (channel `app` only).
    pub fn challenge(&self) -> Option<Challenge> {
        self.approval.as_ref().map(|a| a.challenge)
    }

    /// The device key (thumbprint) whose answer made this verification final.
    pub fn answered_by(&self) -> Option<&str> {
        self.approval.as_ref()?.answered_by.as_deref()
    }

    /// Whether a code was sent that a person could type: an approval request (channel
    /// `app`) has a PIN only once it fell back to SMS.
    pub fn code_sent(&self) -> bool {
        self.channel != RequestedChannel::App
            || self.sends.iter().any(|s| s.channel == ChannelKind::Sms)
    }

    /// A device's answer to an approval request, already verified (the device is
    /// the subject's, the signature and timestamp good). The first answer is final;
    /// a pending escalation is disarmed.
    pub fn answer(
        &mut self,
        decision: crate::secrets::device_key::Decision,
        device: &str,
        now: UnixMillis,
    ) -> AnswerOutcome {
        match self.status(now) {
            Status::Pending => {}
            other => return AnswerOutcome::Final(other),
        }
        let Some(approval) = self
            .approval
            .as_mut()
            .filter(|_| self.channel == RequestedChannel::App)
        else {
            return AnswerOutcome::NotApp;
        };
        approval.answered_by = Some(device.into());
        let to = match decision {
            crate::secrets::device_key::Decision::Approve => State::Approved,
            crate::secrets::device_key::Decision::Deny => State::Denied,
        };
        self.transition(to, now);
        self.escalate_at = MaybeAt::NONE;
        AnswerOutcome::Answered(self.status(now))
    }

    /// When a pending escalation to SMS is due.
    pub fn escalate_at(&self) -> Option<UnixMillis> {
        self.escalate_at.get()
    }

    pub fn acknowledged_at(&self) -> Option<UnixMillis> {
        self.acknowledged_at.get()
    }

    /// The app (or, per configuration, the provider) says the push arrived: the
    /// latest push send counts as delivered and no escalation follows.
    pub fn acknowledge(&mut self, now: UnixMillis) -> AckOutcome {
        match self.status(now) {
            Status::Pending => {}
            other => return AckOutcome::Final(other),
        }
        let Some(i) = self
            .sends
            .iter()
            .rposition(|s| s.channel == ChannelKind::Push)
        else {
            return AckOutcome::NotPush;
        };
        if self.acknowledged_at.is_some() {
            return AckOutcome::AlreadyAcknowledged;
        }
        self.acknowledged_at = now.into();
        // An approval request falls back when no *answer* comes, received or not.
        if self.channel != RequestedChannel::App {
            self.escalate_at = MaybeAt::NONE;
        }
        let push = &mut self.sends[i];
        if !push.state.is_reported() {
            push.state = SendState::Delivered;
            push.reported_at = now.into();
        }
        AckOutcome::Acknowledged
    }

    /// Queue the SMS send of an escalation, if one is pending and due (`Timeout`: its
    /// time has come; `PushFailed`: at once). At most once: the pending escalation is
    /// consumed. Returns the new send's number.
    pub fn escalate(&mut self, cause: EscalationCause, now: UnixMillis) -> Option<u8> {
        if self.status(now) != Status::Pending {
            return None;
        }
        let due = self.escalate_at.get()?;
        if cause == EscalationCause::Timeout && now < due {
            return None;
        }
        self.escalate_at = MaybeAt::NONE;
        let mut send = SendAttempt::queued(ChannelKind::Sms, now);
        send.escalated = Some(cause);
        self.sends.push(send);
        Some(self.sends.len() as u8)
    }

    pub fn status(&self, now: UnixMillis) -> Status {
        match self.state {
            State::Pending if now >= self.expires_at => Status::Expired,
            State::Pending => Status::Pending,
            State::Approved => Status::Approved,
            State::Denied => Status::Denied,
            State::Canceled => Status::Canceled,
            State::Locked => Status::Locked,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// When the stored state last changed (creation, approval, cancel, lock).
    pub fn state_changed_at(&self) -> UnixMillis {
        self.state_changed_at
    }

    pub fn attempts_left(&self) -> u8 {
        self.max_attempts.saturating_sub(self.attempts)
    }

    pub fn sends_left(&self) -> u8 {
        self.max_sends.saturating_sub(self.sends.len() as u8)
    }

    /// The delivery history, one entry per send, oldest first.
    pub fn sends(&self) -> &[SendAttempt] {
        &self.sends
    }

    /// Compare-and-count: `code_matches` is the constant-time comparison's result.
    pub fn check(&mut self, code_matches: bool, now: UnixMillis) -> CheckOutcome {
        match self.status(now) {
            Status::Expired => return CheckOutcome::Expired,
            Status::Canceled => return CheckOutcome::Canceled,
            Status::Approved => return CheckOutcome::AlreadyApproved,
            Status::Denied => return CheckOutcome::Denied,
            Status::Locked => return CheckOutcome::Locked,
            Status::Pending => {}
        }
        if !self.code_sent() {
            return CheckOutcome::NoCode;
        }
        self.attempts += 1;
        if code_matches {
            self.transition(State::Approved, now);
            CheckOutcome::Approved
        } else if self.attempts >= self.max_attempts {
            self.transition(State::Locked, now);
            CheckOutcome::Locked
        } else {
            CheckOutcome::Wrong {
                attempts_left: self.attempts_left(),
            }
        }
    }

    /// Queue another send of the same code, if the cooldown and send limit allow.
    /// Returns the send's number (2 for the first resend). Only a pending
    /// verification can be re-sent; the caller creates a new one otherwise.
    pub fn resend(&mut self, channel: ChannelKind, now: UnixMillis) -> Result<u8, ResendRefusal> {
        debug_assert_eq!(self.status(now), Status::Pending);
        if self.sends.len() >= self.max_sends as usize {
            return Err(ResendRefusal::MaxSends);
        }
        let last = self
            .sends
            .last()
            .map(|s| s.queued_at)
            .unwrap_or(self.created_at);
        let ready_at = last.plus(Duration::from_millis(u64::from(self.resend_cooldown_ms)));
        if now < ready_at {
            // Round up: a client that waits exactly Retry-After seconds must succeed.
            let wait = now.until(ready_at);
            let secs = wait.as_millis().div_ceil(1000) as u64;
            return Err(ResendRefusal::Cooldown {
                retry_after: Duration::from_secs(secs.max(1)),
            });
        }
        self.sends.push(SendAttempt::queued(channel, now));
        Ok(self.sends.len() as u8)
    }

    pub fn cancel(&mut self, now: UnixMillis) -> CancelOutcome {
        self.close(Closing::Cancel, now)
    }

    /// Cancel or lock a pending verification; a final one stays as it is.
    pub fn close(&mut self, how: Closing, now: UnixMillis) -> CancelOutcome {
        match (self.status(now), how) {
            (Status::Pending, Closing::Cancel) => {
                self.transition(State::Canceled, now);
                CancelOutcome::Canceled
            }
            (Status::Pending, Closing::Lock) => {
                self.transition(State::Locked, now);
                CancelOutcome::Final(Status::Locked)
            }
            (Status::Canceled, Closing::Cancel) => CancelOutcome::AlreadyCanceled,
            (other, _) => CancelOutcome::Final(other),
        }
    }

    /// Record a channel's answer for send number `send` (1-based). Returns false if
    /// there is no such send or it was already answered (a duplicate answer, e.g. a
    /// redelivered job, changes nothing).
    pub fn record_send(&mut self, send: u8, result: SendResult, now: UnixMillis) -> bool {
        self.record_send_with(send, result, None, now)
    }

    /// [`Verification::record_send`] with how the send was routed.
    pub fn record_send_with(
        &mut self,
        send: u8,
        result: SendResult,
        details: Option<SendDetails>,
        now: UnixMillis,
    ) -> bool {
        let Some(attempt) = self.attempt_mut(send) else {
            return false;
        };
        if attempt.answered_at.is_some() {
            return false;
        }
        attempt.answered_at = now.into();
        match result {
            SendResult::Sent { reference } => {
                // A report may have overtaken the channel's answer; it says more.
                if !attempt.state.is_reported() {
                    attempt.state = SendState::Sent;
                }
                attempt.reference = Some(CompactString::new(&reference));
            }
            SendResult::Failed { error } => {
                attempt.state = SendState::Failed;
                attempt.error = Some(ThinStr::new(&error));
            }
            SendResult::Expired { error } => {
                attempt.state = SendState::Expired;
                attempt.error = Some(ThinStr::new(&error));
            }
        }
        attempt.details = details;
        true
    }

    /// Record a delivery report for send number `send`. Returns false if there is no
    /// such send, it failed, or it was reported already (the first report stands).
    pub fn record_report(
        &mut self,
        send: u8,
        state: SendState,
        error: Option<String>,
        now: UnixMillis,
    ) -> bool {
        debug_assert!(state.is_reported());
        let Some(attempt) = self.attempt_mut(send) else {
            return false;
        };
        if attempt.state == SendState::Failed || attempt.state.is_reported() {
            return false;
        }
        attempt.state = state;
        attempt.reported_at = now.into();
        if error.is_some() {
            attempt.error = error.map(ThinStr::from);
        }
        true
    }

    /// Read as of `now`: a send still `sent` past its receipt's due time
    /// ([`SendDetails::receipt_due`]) is `unconfirmed`, reported at that time. The
    /// carrier's own bookkeeping reports it so on the node that sent it; this is
    /// what closes it where that node died or restarted. Nothing is stored: a
    /// receipt that still comes later is recorded over it.
    pub fn settle(&mut self, now: UnixMillis) {
        for s in &mut self.sends {
            let due = s.details.as_ref().and_then(|d| d.receipt_due.get());
            if s.state == SendState::Sent
                && let Some(due) = due
                && due <= now
            {
                s.state = SendState::Unconfirmed;
                s.reported_at = due.into();
            }
        }
    }

    fn attempt_mut(&mut self, send: u8) -> Option<&mut SendAttempt> {
        send.checked_sub(1)
            .and_then(|i| self.sends.get_mut(i as usize))
    }

    /// The state of the latest send, which is what "delivery state" means to a caller.
    pub fn delivery_state(&self) -> SendState {
        self.sends
            .last()
            .map(|s| s.state)
            .unwrap_or(SendState::Queued)
    }

    fn transition(&mut self, to: State, now: UnixMillis) {
        debug_assert_eq!(self.state, State::Pending, "final states are final");
        self.state = to;
        self.state_changed_at = now;
    }
}

impl SendAttempt {
    fn queued(channel: ChannelKind, now: UnixMillis) -> Self {
        Self {
            channel,
            escalated: None,
            state: SendState::Queued,
            queued_at: now,
            answered_at: MaybeAt::NONE,
            reported_at: MaybeAt::NONE,
            reference: None,
            error: None,
            details: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::id::ShardTag;
    use proptest::prelude::*;

    const T0: UnixMillis = UnixMillis(1_800_000_000_000);

    fn policy() -> Policy {
        Policy {
            ttl: Duration::from_secs(600),
            code_length: CodeLength::new(6).unwrap(),
            max_attempts: 5,
            max_sends: 3,
            resend_cooldown: Duration::from_secs(30),
            escalate_after: Duration::from_secs(60),
        }
    }

    fn verification() -> Verification {
        Verification::new(
            NewVerification {
                id: VerificationId::new(ShardTag(1), [1; 14]),
                to: E164::parse_international("+34600123456").unwrap(),
                line: NumberLine::default(),
                purpose: Name::new("login"),
                subject: None,
                client: None,
                locale: Locale::Es,
                channel: RequestedChannel::Auto,
                first_send: ChannelKind::Sms,
                code_mac: CodeMac([0; 32]),
                sealed_code: SealedCode(0),
                policy: policy(),
                match_code: None,
                challenge: None,
            },
            T0,
        )
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn new_verification_is_pending_with_one_queued_send() {
        let v = verification();
        assert_eq!(v.status(T0), Status::Pending);
        assert_eq!(v.expires_at, T0.plus(secs(600)));
        assert_eq!(v.attempts_left(), 5);
        assert_eq!(v.sends_left(), 2);
        assert_eq!(v.sends().len(), 1);
        assert_eq!(v.delivery_state(), SendState::Queued);
    }

    #[test]
    fn right_code_approves_once() {
        let mut v = verification();
        assert_eq!(v.check(true, T0), CheckOutcome::Approved);
        assert_eq!(v.status(T0), Status::Approved);
        assert_eq!(v.check(true, T0), CheckOutcome::AlreadyApproved);
        assert_eq!(v.check(false, T0), CheckOutcome::AlreadyApproved);
        // Even after the validity ends, an approved verification stays approved.
        assert_eq!(v.status(T0.plus(secs(601))), Status::Approved);
    }

    #[test]
    fn wrong_codes_count_down_then_lock() {
        let mut v = verification();
        for left in (1..=4).rev() {
            assert_eq!(
                v.check(false, T0),
                CheckOutcome::Wrong {
                    attempts_left: left
                }
            );
        }
        assert_eq!(v.check(false, T0), CheckOutcome::Locked);
        assert_eq!(v.status(T0), Status::Locked);
        assert_eq!(
            v.check(true, T0),
            CheckOutcome::Locked,
            "locked never approves"
        );
        assert_eq!(v.attempts_left(), 0);
    }

    #[test]
    fn the_last_attempt_can_still_approve() {
        let mut v = verification();
        for _ in 0..4 {
            v.check(false, T0);
        }
        assert_eq!(v.check(true, T0), CheckOutcome::Approved);
    }

    #[test]
    fn expiry_is_derived_from_time_and_blocks_checks() {
        let mut v = verification();
        let late = T0.plus(secs(600));
        assert_eq!(v.status(late), Status::Expired);
        assert_eq!(v.check(true, late), CheckOutcome::Expired);
        assert_eq!(v.attempts_left(), 5, "an expired check uses no attempt");
        assert_eq!(v.cancel(late), CancelOutcome::Final(Status::Expired));
    }

    #[test]
    fn canceled_never_approves() {
        let mut v = verification();
        assert_eq!(v.cancel(T0), CancelOutcome::Canceled);
        assert_eq!(v.cancel(T0), CancelOutcome::AlreadyCanceled);
        assert_eq!(v.check(true, T0), CheckOutcome::Canceled);
        assert_eq!(v.status(T0), Status::Canceled);
    }

    #[test]
    fn approved_cannot_be_canceled() {
        let mut v = verification();
        v.check(true, T0);
        assert_eq!(v.cancel(T0), CancelOutcome::Final(Status::Approved));
    }

    #[test]
    fn resend_waits_for_the_cooldown_and_stops_at_max_sends() {
        let mut v = verification();
        assert_eq!(
            v.resend(ChannelKind::Sms, T0.plus(Duration::from_millis(100))),
            Err(ResendRefusal::Cooldown {
                retry_after: secs(30)
            })
        );
        assert_eq!(
            v.resend(ChannelKind::Sms, T0.plus(Duration::from_millis(29_001))),
            Err(ResendRefusal::Cooldown {
                retry_after: secs(1)
            })
        );
        assert_eq!(v.resend(ChannelKind::Sms, T0.plus(secs(30))), Ok(2));
        assert_eq!(v.resend(ChannelKind::Sms, T0.plus(secs(60))), Ok(3));
        assert_eq!(
            v.resend(ChannelKind::Sms, T0.plus(secs(90))),
            Err(ResendRefusal::MaxSends)
        );
        assert_eq!(v.sends_left(), 0);
        assert_eq!(v.sends().len(), 3);
    }

    #[test]
    fn send_results_are_recorded_once() {
        let mut v = verification();
        let later = T0.plus(secs(1));
        assert!(v.record_send(
            1,
            SendResult::Sent {
                reference: "outbox:0".into()
            },
            later
        ));
        assert_eq!(v.delivery_state(), SendState::Sent);
        assert!(!v.record_send(
            1,
            SendResult::Failed {
                error: "late duplicate".into()
            },
            later
        ));
        assert_eq!(v.sends()[0].reference.as_deref(), Some("outbox:0"));
        assert_eq!(v.sends()[0].answered_at, Some(later));
        assert!(!v.record_send(0, SendResult::Failed { error: "x".into() }, later));
        assert!(!v.record_send(2, SendResult::Failed { error: "x".into() }, later));
    }

    #[test]
    fn reports_follow_sends_and_the_first_report_stands() {
        let mut v = verification();
        let t1 = T0.plus(secs(1));
        let t2 = T0.plus(secs(2));
        assert!(v.record_send(
            1,
            SendResult::Sent {
                reference: "c:1".into()
            },
            t1
        ));
        assert!(v.record_report(1, SendState::Delivered, None, t2));
        assert_eq!(v.delivery_state(), SendState::Delivered);
        assert_eq!(v.sends()[0].reported_at, Some(t2));
        assert!(!v.record_report(1, SendState::Undeliverable, Some("late".into()), t2));
        assert_eq!(v.delivery_state(), SendState::Delivered);
    }

    #[test]
    fn a_send_whose_receipt_is_overdue_reads_unconfirmed_until_one_comes() {
        let mut v = verification();
        let due = T0.plus(secs(900));
        let details = SendDetails {
            receipt_due: due.into(),
            ..SendDetails::default()
        };
        let sent = SendResult::Sent {
            reference: "c:1".into(),
        };
        assert!(v.record_send_with(1, sent, Some(details), T0));
        let mut read = v.clone();
        read.settle(due.plus(Duration::from_millis(999)).min(T0.plus(secs(899))));
        assert_eq!(read.delivery_state(), SendState::Sent, "not yet due");
        let mut read = v.clone();
        read.settle(due);
        assert_eq!(read.delivery_state(), SendState::Unconfirmed);
        assert_eq!(read.sends()[0].reported_at, Some(due));
        // A receipt that still comes is recorded and read as it says.
        assert!(v.record_report(1, SendState::Delivered, None, due.plus(secs(5))));
        v.settle(due.plus(secs(60)));
        assert_eq!(v.delivery_state(), SendState::Delivered);
        // A channel without receipts leaves its sends as they are.
        let mut push = verification();
        let sent = SendResult::Sent {
            reference: "p:1".into(),
        };
        assert!(push.record_send(1, sent, T0));
        push.settle(T0.plus(secs(86_400)));
        assert_eq!(push.delivery_state(), SendState::Sent);
    }

    #[test]
    fn a_report_that_overtakes_the_answer_is_kept() {
        let mut v = verification();
        assert!(v.record_report(1, SendState::Undeliverable, Some("3:34".into()), T0));
        assert!(v.record_send(
            1,
            SendResult::Sent {
                reference: "c:1".into()
            },
            T0
        ));
        assert_eq!(v.delivery_state(), SendState::Undeliverable);
        assert_eq!(v.sends()[0].reference.as_deref(), Some("c:1"));
        assert_eq!(v.sends()[0].error.as_deref(), Some("3:34"));
    }

    #[test]
    fn a_failed_send_takes_no_report() {
        let mut v = verification();
        v.record_send(
            1,
            SendResult::Failed {
                error: "down".into(),
            },
            T0,
        );
        assert!(!v.record_report(1, SendState::Delivered, None, T0));
        assert!(!v.record_report(9, SendState::Delivered, None, T0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Check(bool),
        Cancel,
        Resend,
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<bool>().prop_map(Op::Check),
            Just(Op::Cancel),
            Just(Op::Resend),
            (0u16..400).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Whatever happens, a verification approves at most once, never after it was
        /// canceled, locked or expired, and never allows more than max_attempts checks.
        #[test]
        fn never_approves_twice_or_after_a_final_state(ops in proptest::collection::vec(op(), 0..60)) {
            let mut v = verification();
            let mut now = T0;
            let mut approvals = 0;
            let mut counted_checks = 0;
            for op in ops {
                let before = v.status(now);
                match op {
                    Op::Check(right) => {
                        let outcome = v.check(right, now);
                        if matches!(outcome, CheckOutcome::Approved) {
                            approvals += 1;
                            prop_assert_eq!(before, Status::Pending);
                        }
                        if before == Status::Pending {
                            counted_checks += 1;
                        }
                    }
                    Op::Cancel => { v.cancel(now); }
                    Op::Resend => {
                        if before == Status::Pending {
                            let _ = v.resend(ChannelKind::Sms, now);
                        }
                    }
                    Op::Advance(s) => now = now.plus(secs(u64::from(s))),
                }
                if before != Status::Pending {
                    prop_assert_eq!(v.status(now), before, "final states are final");
                }
                prop_assert!(v.sends().len() <= 3);
            }
            prop_assert!(approvals <= 1);
            prop_assert!(counted_checks <= 5);
        }
    }
}

#[cfg(test)]
mod escalation_tests {
    use super::*;
    use crate::secrets::id::ShardTag;

    const T0: UnixMillis = UnixMillis(1_800_000_000_000);

    fn pushed(channel: RequestedChannel) -> Verification {
        Verification::new(
            NewVerification {
                id: VerificationId::new(ShardTag(1), [2; 14]),
                to: E164::parse_international("+34600123456").unwrap(),
                line: NumberLine::default(),
                purpose: Name::new("login"),
                subject: Some("12345678Z".into()),
                client: None,
                locale: Locale::Es,
                channel,
                first_send: ChannelKind::Push,
                code_mac: CodeMac([0; 32]),
                sealed_code: SealedCode(0),
                policy: Policy {
                    ttl: Duration::from_secs(600),
                    code_length: CodeLength::new(6).unwrap(),
                    max_attempts: 5,
                    max_sends: 3,
                    resend_cooldown: Duration::from_secs(30),
                    escalate_after: Duration::from_secs(60),
                },
                match_code: MatchCode::new(7),
                challenge: (channel == RequestedChannel::App).then_some(Challenge([5; 16])),
            },
            T0,
        )
    }

    #[test]
    fn an_app_answer_is_final_and_the_first_one_wins() {
        use crate::secrets::device_key::Decision;
        let mut v = pushed(RequestedChannel::App);
        assert_eq!(v.escalate_at(), Some(T0.plus(Duration::from_secs(60))));
        let t = T0.plus(Duration::from_secs(5));
        assert_eq!(
            v.answer(Decision::Approve, "dev-a", t),
            AnswerOutcome::Answered(Status::Approved)
        );
        assert_eq!(v.answered_by(), Some("dev-a"));
        assert_eq!(v.escalate_at(), None, "an answer disarms the fallback");
        assert_eq!(
            v.answer(Decision::Deny, "dev-b", t),
            AnswerOutcome::Final(Status::Approved)
        );
        assert_eq!(v.answered_by(), Some("dev-a"));
        assert_eq!(v.check(true, t), CheckOutcome::AlreadyApproved);
        assert_eq!(
            v.escalate(EscalationCause::Timeout, T0.plus(Duration::from_secs(61))),
            None
        );
    }

    #[test]
    fn a_denial_is_final_too() {
        use crate::secrets::device_key::Decision;
        let mut v = pushed(RequestedChannel::App);
        assert_eq!(
            v.answer(Decision::Deny, "dev-a", T0),
            AnswerOutcome::Answered(Status::Denied)
        );
        assert_eq!(v.status(T0.plus(Duration::from_secs(900))), Status::Denied);
        assert_eq!(v.check(true, T0), CheckOutcome::Denied);
        assert_eq!(v.cancel(T0), CancelOutcome::Final(Status::Denied));
    }

    #[test]
    fn only_approval_requests_take_answers_and_not_after_expiry() {
        use crate::secrets::device_key::Decision;
        let mut v = pushed(RequestedChannel::Auto);
        assert_eq!(v.answer(Decision::Approve, "d", T0), AnswerOutcome::NotApp);
        let mut v = pushed(RequestedChannel::App);
        let late = T0.plus(Duration::from_secs(600));
        assert_eq!(
            v.answer(Decision::Approve, "d", late),
            AnswerOutcome::Final(Status::Expired)
        );
    }

    #[test]
    fn an_approval_request_has_no_pin_until_it_falls_back_then_either_path_approves_once() {
        use crate::secrets::device_key::Decision;
        let mut v = pushed(RequestedChannel::App);
        assert_eq!(v.check(true, T0), CheckOutcome::NoCode);
        assert_eq!(v.attempts_left(), 5, "nothing is counted");
        // Receiving the push does not stop the fallback: only an answer does.
        assert_eq!(v.acknowledge(T0), AckOutcome::Acknowledged);
        assert!(v.escalate_at().is_some());
        let due = T0.plus(Duration::from_secs(60));
        assert_eq!(v.escalate(EscalationCause::Timeout, due), Some(2));
        assert_eq!(
            v.check(false, due),
            CheckOutcome::Wrong { attempts_left: 4 }
        );
        assert_eq!(v.check(true, due), CheckOutcome::Approved);
        assert_eq!(
            v.answer(Decision::Approve, "d", due),
            AnswerOutcome::Final(Status::Approved)
        );
        assert_eq!(v.answered_by(), None, "approved by its PIN");
    }

    #[test]
    fn a_timeout_escalates_once_and_only_when_due() {
        let mut v = pushed(RequestedChannel::Auto);
        assert_eq!(v.escalate_at(), Some(T0.plus(Duration::from_secs(60))));
        assert_eq!(
            v.escalate(EscalationCause::Timeout, T0.plus(Duration::from_secs(59))),
            None
        );
        let due = T0.plus(Duration::from_secs(60));
        assert_eq!(v.escalate(EscalationCause::Timeout, due), Some(2));
        assert_eq!(v.escalate(EscalationCause::Timeout, due), None);
        assert_eq!(v.escalate(EscalationCause::PushFailed, due), None);
        let sms = &v.sends()[1];
        assert_eq!(sms.channel, ChannelKind::Sms);
        assert_eq!(sms.escalated, Some(EscalationCause::Timeout));
        assert_eq!(v.escalate_at(), None);
    }

    #[test]
    fn a_failed_push_escalates_at_once() {
        let mut v = pushed(RequestedChannel::Auto);
        assert_eq!(v.escalate(EscalationCause::PushFailed, T0), Some(2));
        assert_eq!(
            v.escalate(EscalationCause::Timeout, T0.plus(Duration::from_secs(61))),
            None
        );
    }

    #[test]
    fn an_acknowledgement_stops_the_escalation_and_marks_the_push_delivered() {
        let mut v = pushed(RequestedChannel::Auto);
        let t = T0.plus(Duration::from_secs(5));
        assert_eq!(v.acknowledge(t), AckOutcome::Acknowledged);
        assert_eq!(v.acknowledge(t), AckOutcome::AlreadyAcknowledged);
        assert_eq!(v.sends()[0].state, SendState::Delivered);
        assert_eq!(
            v.escalate(EscalationCause::Timeout, T0.plus(Duration::from_secs(61))),
            None
        );
        assert_eq!(v.escalate(EscalationCause::PushFailed, t), None);
    }

    #[test]
    fn only_auto_escalates_and_only_pending_verifications_move() {
        let mut v = pushed(RequestedChannel::Push);
        assert_eq!(v.escalate_at(), None);
        assert_eq!(v.escalate(EscalationCause::PushFailed, T0), None);

        let mut v = pushed(RequestedChannel::Auto);
        v.cancel(T0);
        assert_eq!(v.escalate(EscalationCause::PushFailed, T0), None);
        assert_eq!(v.acknowledge(T0), AckOutcome::Final(Status::Canceled));

        let mut v = pushed(RequestedChannel::Auto);
        let late = T0.plus(Duration::from_secs(601));
        assert_eq!(v.escalate(EscalationCause::Timeout, late), None, "expired");
    }

    #[test]
    fn match_codes_have_three_digits() {
        assert_eq!(MatchCode::new(7).unwrap().to_string(), "007");
        assert_eq!(MatchCode::new(999).unwrap().to_string(), "999");
        assert!(MatchCode::new(1000).is_none());
    }
}
