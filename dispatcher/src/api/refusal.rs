//! The engine's refusals as HTTP answers: a status, a stable code, a message that
//! says what to do, and the field to fix — never the value that was refused.

use axum::http::StatusCode;

use super::error::ApiError;
use crate::domain::approval::AnswerRefusal;
use crate::engine::{Refused, Unanswerable};
use crate::secrets::id::VerificationId;

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        refused(r, None)
    }
}

/// `r` as an answer about verification `id` (when the request named one).
pub(crate) fn refused(r: Refused, id: Option<&VerificationId>) -> ApiError {
    let about = |e: ApiError, status: &'static str| match id {
        Some(id) => e.about(id.to_string(), status),
        None => e,
    };
    match r {
        Refused::InvalidNumber(e) => ApiError::bad_request("invalid_phone_number", e.to_string())
            .field("to")
            .reason(e.reason()),
        Refused::ContrastRequired => ApiError::bad_request(
            "missing_field",
            "requests by `subject` must carry the subject's `contrast` value (the identity document's validity date or support number)",
        )
        .field("contrast"),
        Refused::UnknownSubject => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_subject",
            "no subscriber is registered with this subject; send `to` or register it first",
        )
        .field("subject"),
        Refused::ToNotAllowed => ApiError::new(
            StatusCode::FORBIDDEN,
            "to_not_allowed",
            "`to` is not the number registered for this subject, and this API key may not send a subject's codes elsewhere (`override_to`)",
        )
        .field("to"),
        Refused::CountryNotAllowed { allowed } => ApiError::new(
            StatusCode::FORBIDDEN,
            "country_not_allowed",
            format!("this client may send only to: {}", allowed.join(", ")),
        )
        .field("to"),
        Refused::UnknownPurpose { configured } => ApiError::bad_request(
            "unknown_purpose",
            format!("no such purpose; configured: {}", configured.join(", ")),
        )
        .field("purpose"),
        Refused::PurposeNotAllowed => ApiError::new(
            StatusCode::FORBIDDEN,
            "purpose_not_allowed",
            "this client may not use this purpose",
        )
        .field("purpose"),
        Refused::UnknownClient => {
            ApiError::bad_request("unknown_client", "no client is configured with this name")
                .field("client")
        }
        Refused::NoDeviceKey { field } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_device_key",
            "approval in the app needs a `subject` with a registered device that enrolled a key",
        )
        .field(field),
        Refused::NoDevice { field } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_device",
            "push needs a `subject` with a registered device; use `auto` to fall back to SMS",
        )
        .field(field),
        Refused::Limited(refusal) => ApiError::limited(refusal),
        Refused::SubjectLocked(refusal) => {
            about(ApiError::limited(refusal), "locked").attempts_left(0)
        }
        Refused::Denied => ApiError::new(
            StatusCode::FORBIDDEN,
            "destination_denied",
            "codes are not sent to this number range",
        )
        .field("to")
        .limit("deny_list"),
        Refused::LimitsUnavailable(e) => super::error::limits_unavailable(e),
        Refused::Overloaded { retry_after } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many codes are waiting to be sent; retry shortly",
        )
        .retry_after(retry_after),
        Refused::Cooldown { retry_after } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "resend_cooldown",
            "a code was sent to this number moments ago; it can be sent again after Retry-After seconds",
        )
        .retry_after(retry_after),
        Refused::MaxSends { retry_after } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "max_sends_reached",
            "the code was already sent the maximum number of times; a new one can be requested when it expires",
        )
        .retry_after(retry_after),
        Refused::IdempotencyInProgress => ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still being processed; retry shortly",
        )
        .retry_after(std::time::Duration::from_secs(1)),
        Refused::IdempotencyMismatch => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
        )
        .field("Idempotency-Key"),
        Refused::NotFound => ApiError::not_found(
            "no verification with this id (it may have expired and been removed)",
        ),
        Refused::Unanswerable(u) => unanswerable(u, id),
        Refused::Answer(e) => answer(e),
        Refused::BadAckToken => ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_ack_token",
            "this is not the acknowledgement token the push carried",
        )
        .field("ack_token"),
        Refused::StoreUnavailable => ApiError::store_unavailable(),
        Refused::NoRandomness => ApiError::internal("could not generate a code"),
    }
}

fn unanswerable(u: Unanswerable, id: Option<&VerificationId>) -> ApiError {
    let (error, status) = match u {
        Unanswerable::NotApp => return answer(AnswerRefusal::NotApp),
        Unanswerable::Expired => (
            ApiError::new(
                StatusCode::GONE,
                "expired",
                "this approval request has expired",
            ),
            "expired",
        ),
        Unanswerable::AlreadyAnswered(status) => (
            ApiError::new(
                StatusCode::CONFLICT,
                "already_answered",
                format!(
                    "this approval request was already answered ({}); the first answer is final",
                    status.as_str()
                ),
            ),
            status.as_str(),
        ),
        Unanswerable::Final(status) => (
            ApiError::new(
                StatusCode::CONFLICT,
                "already_final",
                format!("this verification is already {}", status.as_str()),
            ),
            status.as_str(),
        ),
    };
    match id {
        Some(id) => error.about(id.to_string(), status),
        None => error,
    }
}

fn answer(e: AnswerRefusal) -> ApiError {
    let (status, field) = match e {
        AnswerRefusal::NotApp => (StatusCode::CONFLICT, None),
        AnswerRefusal::UnknownDevice => (StatusCode::FORBIDDEN, Some("device")),
        AnswerRefusal::BadSignature => (StatusCode::FORBIDDEN, Some("signature")),
        AnswerRefusal::MalformedSignature => (StatusCode::BAD_REQUEST, Some("signature")),
        AnswerRefusal::Stale { .. } => (StatusCode::FORBIDDEN, Some("timestamp")),
    };
    let error = ApiError::new(status, e.code(), e.to_string());
    match field {
        Some(f) => error.field(f),
        None => error,
    }
}
