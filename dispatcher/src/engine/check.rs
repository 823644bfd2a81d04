//! Check a typed code: the flow of `POST /v1/verifications/{id}/check`.
//!
//! The store counts the attempt and decides its limits in one step: the caller's
//! address before the attempt counts, and, for a wrong code, the subject's budget
//! of wrong codes across all its verifications — past it, this verification is
//! locked too.

use std::net::IpAddr;

use super::{Engine, Refused};
use crate::domain::verification::CheckOutcome;
use crate::policy::admission::nanos;
use crate::policy::clients::Client;
use crate::policy::limiter::CheckLimits;
use crate::policy::limits::ip_key;
use crate::secrets::code::Code;
use crate::secrets::id::VerificationId;
use crate::store::CheckedWithin;

/// What a counted attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub outcome: CheckOutcome,
    pub attempts_left: u8,
}

impl Engine {
    /// Check `code` against `caller`'s verification `id`, typed by the end user at
    /// `ip` (when the backend says).
    pub async fn check(
        &self,
        caller: &Client,
        id: &VerificationId,
        code: &Code,
        ip: Option<IpAddr>,
    ) -> Result<Checked, Refused> {
        let rules = self.admission.rules();
        let now = self.clock.now();
        let ip = ip.map(ip_key);
        let limits = CheckLimits {
            before: ip.as_ref().and_then(|k| rules.policy.check_ip(k)),
            wrong_per_subject: rules.policy.check_subject_quota(),
            now: nanos(now),
        };
        let owner = caller.id().map(|n| n.as_str());
        let candidate = self.keys.mac(id, code);
        let checked = self
            .stores
            .verifications
            .check(id, &candidate, owner, now, &limits)
            .await?;
        let (result, subject_refused) = match checked {
            CheckedWithin::Limited(r) => return Err(self.admission.check_refused(r).into()),
            CheckedWithin::LimitsUnavailable(u) => return Err(Refused::LimitsUnavailable(u)),
            CheckedWithin::NotFound => return Err(Refused::NotFound),
            CheckedWithin::Checked {
                result,
                subject_refused,
            } => (result, subject_refused),
        };
        self.metrics.checked(result.outcome);
        if let Some(r) = subject_refused {
            self.emit(
                crate::events::EventKind::Locked,
                caller.id(),
                crate::events::EventData {
                    subject: result.subject.clone(),
                    reason: Some("subject_guessing"),
                    ..crate::events::EventData::of(id, result.to, "locked")
                },
            );
            self.admission.check_refused(r);
            tracing::warn!(%id, "too many wrong codes for the subject: verification locked");
            return Err(Refused::SubjectLocked(r));
        }
        if result.locked_now {
            self.emit(
                crate::events::EventKind::Locked,
                caller.id(),
                crate::events::EventData {
                    subject: result.subject.clone(),
                    reason: Some("too_many_attempts"),
                    ..crate::events::EventData::of(id, result.to, "locked")
                },
            );
        }
        if result.outcome == CheckOutcome::Approved {
            self.admission
                .converted(&rules, result.to, result.country, now);
            self.emit(
                crate::events::EventKind::Approved,
                caller.id(),
                crate::events::EventData {
                    subject: result.subject.clone(),
                    reason: Some("code"),
                    ..crate::events::EventData::of(id, result.to, "approved")
                },
            );
        }
        Ok(Checked {
            outcome: result.outcome,
            attempts_left: result.attempts_left,
        })
    }
}
