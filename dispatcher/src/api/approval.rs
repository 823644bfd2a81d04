//! `POST /v1/verifications/{id}/approve` and `/deny`: the app's signed answer to an
//! approval request (channel `app`).
//!
//! The app calls these itself, without an API key: the signature by a device key
//! enrolled for the verification's subject is what authenticates it
//! ([`crate::domain::approval::judge`]). The first good answer is final; the backend that
//! asked sees the outcome with `GET /v1/verifications/{id}`.
//!
//! Anyone who sees the QR code holds the id, so these routes are built for
//! strangers (see `docs/THREAT_MODEL.md`): calls are limited per caller network,
//! answers to what is final or expired are refused before any work, and a refused
//! answer is charged to the caller's network, never to the subject.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::json::JsonBody;
use super::verifications::{IdPath, json_response, not_found, store_error};
use super::{AppState, CallerAddr};
use crate::domain::approval::{self, AnswerRefusal, SignedAnswer};
use crate::domain::verification::{AnswerOutcome, Status};
use crate::secrets::device_key::Decision;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    /// The thumbprint of the device key that signed (as enrolment showed it).
    device: String,
    /// Unix milliseconds, as signed.
    timestamp: i64,
    /// The signature over the answer message, base64.
    signature: String,
}

#[derive(Serialize)]
struct AnsweredView {
    id: String,
    status: &'static str,
}

pub async fn approve(
    state: State<Arc<AppState>>,
    caller: CallerAddr,
    id: IdPath,
    body: JsonBody<AnswerBody>,
) -> Result<Response, ApiError> {
    answer(state, caller, id, body, Decision::Approve).await
}

pub async fn deny(
    state: State<Arc<AppState>>,
    caller: CallerAddr,
    id: IdPath,
    body: JsonBody<AnswerBody>,
) -> Result<Response, ApiError> {
    answer(state, caller, id, body, Decision::Deny).await
}

fn refusal(e: AnswerRefusal) -> ApiError {
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

/// Why an answer to `v` cannot be taken whatever it says: it is final or expired,
/// or not an approval request. Decided before anything else is looked at.
fn unanswerable(
    v: &crate::domain::verification::Verification,
    now: crate::domain::clock::UnixMillis,
) -> Option<ApiError> {
    let id = v.id.to_string();
    match v.status(now) {
        Status::Pending if v.channel == crate::domain::verification::RequestedChannel::App => None,
        Status::Pending => Some(refusal(AnswerRefusal::NotApp)),
        Status::Expired => Some(
            ApiError::new(
                StatusCode::GONE,
                "expired",
                "this approval request has expired",
            )
            .about(id, "expired"),
        ),
        status => {
            let (code, message) = if v.answered_by().is_some() {
                (
                    "already_answered",
                    format!(
                        "this approval request was already answered ({}); the first answer is final",
                        status.as_str()
                    ),
                )
            } else {
                (
                    "already_final",
                    format!("this verification is already {}", status.as_str()),
                )
            };
            Some(ApiError::new(StatusCode::CONFLICT, code, message).about(id, status.as_str()))
        }
    }
}

async fn answer(
    State(state): State<Arc<AppState>>,
    CallerAddr(caller): CallerAddr,
    IdPath(id): IdPath,
    body: JsonBody<AnswerBody>,
    decision: Decision,
) -> Result<Response, ApiError> {
    let body = body.value;
    let v = state
        .engine
        .get(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    let now = state.engine.now();
    // An answer to what can no longer be answered is refused before any work, and
    // costs nobody anything: it cannot change the outcome.
    if let Some(e) = unanswerable(&v, now) {
        state.engine.metrics().answer_refused(e.code);
        return Err(e);
    }
    // A caller network past its budget of refused answers is refused before the
    // signature is looked at, so that answers cannot be tried without end, nor cost
    // a signature check each. The subject's own budgets are never touched: a
    // stranger holding the id (it is in the QR code) must not be able to lock the
    // citizen out.
    let rules = state.admission.rules();
    state
        .admission
        .answer_allowed(&rules, caller, now)
        .await
        .map_err(super::verifications::refused)?;
    let devices = match v.subject.as_deref() {
        Some(subject) => state
            .engine
            .store()
            .get_subscriber(subject)
            .await
            .map_err(store_error)?
            .map(|s| s.devices)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let signed = SignedAnswer {
        device: &body.device,
        timestamp_ms: body.timestamp,
        signature: &body.signature,
    };
    if let Err(e) = approval::judge(
        &v,
        &devices,
        decision,
        &signed,
        now,
        state.app.answer_max_skew,
    ) {
        state.engine.metrics().answer_refused(e.code());
        tracing::info!(%id, reason = e.code(), "an app's answer was refused");
        if e.is_guess() {
            state.admission.answer_refused(&rules, caller, now).await;
        }
        return Err(refusal(e));
    }
    let (outcome, v) = state
        .engine
        .answer(&id, decision, &body.device)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    match outcome {
        AnswerOutcome::Answered(status) => Ok(json_response(
            StatusCode::OK,
            serde_json::to_vec(&AnsweredView {
                id: id.to_string(),
                status: status.as_str(),
            })
            .expect("views serialize"),
        )),
        // Another answer (or the end) came between the read and the write.
        AnswerOutcome::NotApp | AnswerOutcome::Final(_) => {
            let e = unanswerable(&v, state.engine.now())
                .unwrap_or_else(|| refusal(AnswerRefusal::NotApp));
            state.engine.metrics().answer_refused(e.code);
            Err(e)
        }
    }
}
