//! Why the engine did not do what it was asked: one typed answer per decision of
//! the threat model and of admission, which the API turns into a status and a
//! message (`api::refusal`). Nothing here names a number, a subject or a code.

use std::time::Duration;

use crate::domain::verification::Status;
use crate::policy::admission::Refused as Admission;
use crate::policy::limiter::{Refusal, Unavailable};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// A number that cannot be read (a registered one, read again under rules
    /// that changed since).
    #[error(transparent)]
    InvalidNumber(crate::numbers::reader::NumberError),

    // Who may do what.
    /// The client or purpose requires the subject's contrast value, and the
    /// request carries none.
    #[error("the request must carry the subject's contrast value")]
    ContrastRequired,
    /// No such subscriber — or, word for word the same, a wrong contrast value.
    #[error("no subscriber is registered with this subject")]
    UnknownSubject,
    /// `to` is not the subject's registered number and the client may not
    /// override it.
    #[error("`to` is not the subject's registered number")]
    ToNotAllowed,
    #[error("this client may not send to this country")]
    CountryNotAllowed { allowed: Vec<String> },
    #[error("no such purpose")]
    UnknownPurpose { configured: Vec<String> },
    #[error("this client may not use this purpose")]
    PurposeNotAllowed,
    /// An operator asked about a client that is not configured.
    #[error("no client is configured with this name")]
    UnknownClient,
    /// Approval in the app needs an enrolled device key; `field` is what to fix.
    #[error("no device key for approval in the app")]
    NoDeviceKey { field: &'static str },
    /// Push needs a registered device.
    #[error("no registered device for push")]
    NoDevice { field: &'static str },

    // How often.
    /// A limit (or the pumping throttle): come back later.
    #[error("refused by the {} limit", .0.limit)]
    Limited(Refusal),
    /// Too many wrong codes for the subject: the verification was locked too.
    #[error("too many wrong codes for the subject")]
    SubjectLocked(Refusal),
    /// The number is on the pumping deny list.
    #[error("codes are not sent to this number range")]
    Denied,
    #[error(transparent)]
    LimitsUnavailable(Unavailable),
    /// The delivery queue is full or standing.
    #[error("the delivery queue is full")]
    Overloaded { retry_after: Duration },
    #[error("a code was sent to this number moments ago")]
    Cooldown { retry_after: Duration },
    #[error("the code was already sent the maximum number of times")]
    MaxSends { retry_after: Duration },
    #[error("a request with this idempotency key is in progress")]
    IdempotencyInProgress,
    #[error("this idempotency key was used with another request")]
    IdempotencyMismatch,

    // The verification.
    /// No such verification (or not the caller's).
    #[error("no such verification")]
    NotFound,
    /// An app's answer or acknowledgement that cannot be taken whatever it says.
    #[error("this verification cannot be answered: {}", .0.code())]
    Unanswerable(Unanswerable),
    /// An app's answer that was judged and refused.
    #[error(transparent)]
    Answer(crate::domain::approval::AnswerRefusal),
    /// An acknowledgement without the token the push carried.
    #[error("not the acknowledgement token the push carried")]
    BadAckToken,

    // Failures.
    #[error("the store is unavailable")]
    StoreUnavailable,
    #[error("no randomness for a code")]
    NoRandomness,
}

/// Why an app's answer is refused before it is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswerable {
    /// Not an approval request.
    NotApp,
    Expired,
    /// Answered in the app already (approved or denied).
    AlreadyAnswered(Status),
    /// Final another way (canceled, locked, approved by code).
    Final(Status),
}

impl Unanswerable {
    /// The machine-readable reason (the API's error code and the metric's label).
    pub fn code(self) -> &'static str {
        match self {
            Unanswerable::NotApp => "not_app",
            Unanswerable::Expired => "expired",
            Unanswerable::AlreadyAnswered(_) => "already_answered",
            Unanswerable::Final(_) => "already_final",
        }
    }
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        Refused::StoreUnavailable
    }
}

impl From<Admission> for Refused {
    fn from(r: Admission) -> Self {
        match r {
            Admission::Limited(r) => Refused::Limited(r),
            Admission::Denied { .. } => Refused::Denied,
            Admission::Unavailable(u) => Refused::LimitsUnavailable(u),
        }
    }
}
