//! What the citizen's app says: its signed answer to an approval request
//! (`…/approve`, `…/deny`) and its acknowledgement that a push arrived (`…/ack`).
//!
//! Anyone who sees the QR code holds the id, so both are built for strangers (see
//! docs/THREAT_MODEL.md): what is final or expired is refused before any work, a
//! caller network past its budget of refused answers is refused before the
//! signature or token is looked at, and a refused one is charged to the caller's
//! network — never to the subject, so that nobody can lock a citizen out.

use std::net::IpAddr;

use super::{Engine, Refused, Unanswerable};
use crate::domain::approval::{self, SignedAnswer};
use crate::domain::clock::UnixMillis;
use crate::domain::verification::{
    AckOutcome, AnswerOutcome, RequestedChannel, Status, Verification,
};
use crate::secrets::device_key::Decision;
use crate::secrets::id::VerificationId;

/// An app's answer, as it came.
#[derive(Debug, Clone, Copy)]
pub struct AnswerRequest<'a> {
    pub decision: Decision,
    /// The thumbprint of the device key that signed.
    pub device: &'a str,
    /// Unix milliseconds, as signed.
    pub timestamp_ms: i64,
    /// The signature over the answer message, base64.
    pub signature: &'a str,
}

/// The status an answer or acknowledgement left the verification in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub status: Status,
}

/// Why an answer to `v` cannot be taken whatever it says.
fn unanswerable(v: &Verification, now: UnixMillis) -> Option<Unanswerable> {
    match v.status(now) {
        Status::Pending if v.channel == RequestedChannel::App => None,
        Status::Pending => Some(Unanswerable::NotApp),
        Status::Expired => Some(Unanswerable::Expired),
        status if v.answered_by().is_some() => Some(Unanswerable::AlreadyAnswered(status)),
        status => Some(Unanswerable::Final(status)),
    }
}

impl Engine {
    /// An app's answer to approval request `id`, from `caller`'s network.
    pub async fn answer(
        &self,
        caller: IpAddr,
        id: &VerificationId,
        answer: AnswerRequest<'_>,
    ) -> Result<Answered, Refused> {
        let v = self
            .stores
            .verifications
            .get(id)
            .await?
            .ok_or(Refused::NotFound)?;
        let now = self.clock.now();
        // Refused before any work, and charged to nobody: it cannot change the
        // outcome.
        if let Some(u) = unanswerable(&v, now) {
            self.metrics.answer_refused(u.code());
            return Err(Refused::Unanswerable(u));
        }
        let rules = self.admission.rules();
        self.admission.answer_allowed(&rules, caller, now).await?;
        let devices = match v.subject.as_deref() {
            Some(subject) => self
                .stores
                .registry
                .get_subscriber(subject)
                .await?
                .map(|s| s.devices)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let signed = SignedAnswer {
            device: answer.device,
            timestamp_ms: answer.timestamp_ms,
            signature: answer.signature,
        };
        let skew = self.options.answer_max_skew;
        if let Err(e) = approval::judge(&v, &devices, answer.decision, &signed, now, skew) {
            self.metrics.answer_refused(e.code());
            tracing::info!(%id, reason = e.code(), "an app's answer was refused");
            if e.is_guess() {
                self.admission.answer_refused(&rules, caller, now).await;
            }
            return Err(Refused::Answer(e));
        }
        let (outcome, v) = self
            .stores
            .verifications
            .answer(id, answer.decision, answer.device, now)
            .await?
            .ok_or(Refused::NotFound)?;
        match outcome {
            AnswerOutcome::Answered(status) => {
                self.metrics.answered(answer.decision);
                let kind = match status {
                    Status::Approved => crate::events::EventKind::Approved,
                    _ => crate::events::EventKind::Denied,
                };
                self.emit(
                    kind,
                    v.client,
                    crate::events::EventData {
                        subject: v.subject.as_deref().map(Into::into),
                        reason: Some("app"),
                        ..crate::events::EventData::of(&v.id, v.to, status.as_str())
                    },
                );
                Ok(Answered { status })
            }
            // Another answer (or the end) came between the read and the write.
            AnswerOutcome::NotApp | AnswerOutcome::Final(_) => {
                let u = unanswerable(&v, self.clock.now()).unwrap_or(Unanswerable::NotApp);
                self.metrics.answer_refused(u.code());
                Err(Refused::Unanswerable(u))
            }
        }
    }

    /// The app says the push of `id` arrived, proving it with the token the push
    /// carried: checked before the store is read, a wrong one charged to `caller`'s
    /// network. The push counts as delivered and the SMS fallback is called off.
    pub async fn acknowledge(
        &self,
        caller: IpAddr,
        id: &VerificationId,
        token: &str,
    ) -> Result<(AckOutcome, Answered), Refused> {
        let rules = self.admission.rules();
        let now = self.clock.now();
        self.admission.answer_allowed(&rules, caller, now).await?;
        if !self.keys.ack_token(id).matches(token) {
            self.admission.answer_refused(&rules, caller, now).await;
            self.metrics.answer_refused("bad_ack_token");
            return Err(Refused::BadAckToken);
        }
        let (outcome, v) = self
            .stores
            .verifications
            .acknowledge(id, now)
            .await?
            .ok_or(Refused::NotFound)?;
        if outcome == AckOutcome::Acknowledged {
            self.metrics.acknowledged();
        }
        let status = v.status(self.clock.now());
        Ok((outcome, Answered { status }))
    }
}
