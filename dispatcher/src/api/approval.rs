//! `POST /v1/verifications/{id}/approve` and `/deny`: the app's signed answer to an
//! approval request (channel `app`).
//!
//! The app calls these itself, without an API key: the signature by a device key
//! enrolled for the verification's subject is what authenticates it
//! ([`crate::approval::judge`]). The first good answer is final; the backend that
//! asked sees the outcome with `GET /v1/verifications/{id}`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::json::JsonBody;
use super::verifications::{IdPath, json_response, not_found, store_error};
use crate::approval::{self, AnswerRefusal, SignedAnswer};
use crate::device_key::Decision;
use crate::verification::{AnswerOutcome, Status};

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
    id: IdPath,
    body: JsonBody<AnswerBody>,
) -> Result<Response, ApiError> {
    answer(state, id, body, Decision::Approve).await
}

pub async fn deny(
    state: State<Arc<AppState>>,
    id: IdPath,
    body: JsonBody<AnswerBody>,
) -> Result<Response, ApiError> {
    answer(state, id, body, Decision::Deny).await
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

async fn answer(
    State(state): State<Arc<AppState>>,
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
    // A subject past its guess limit (wrong codes, contrast values, answers its
    // devices did not sign) is refused before the signature is even looked at, so
    // that answers cannot be tried without end, nor cost a signature check each.
    let rules = state.admission.rules();
    let now = state.engine.now();
    if let Some(subject) = v.subject.as_deref() {
        state
            .admission
            .guess_allowed(&rules, subject, None, now)
            .await
            .map_err(super::verifications::refused)?;
    }
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
        if e.is_guess()
            && let Some(subject) = v.subject.as_deref()
        {
            state
                .admission
                .guess_failed(&rules, subject, None, now)
                .await;
        }
        return Err(refusal(e));
    }
    let (outcome, v) = state
        .engine
        .answer(&id, decision, &body.device)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    let id_text = id.to_string();
    match outcome {
        AnswerOutcome::Answered(status) => Ok(json_response(
            StatusCode::OK,
            serde_json::to_vec(&AnsweredView {
                id: id_text,
                status: status.as_str(),
            })
            .expect("views serialize"),
        )),
        AnswerOutcome::NotApp => Err(refusal(AnswerRefusal::NotApp)),
        AnswerOutcome::Final(Status::Expired) => {
            state.engine.metrics().answer_refused("expired");
            Err(ApiError::new(
                StatusCode::GONE,
                "expired",
                "this approval request has expired",
            )
            .about(id_text, "expired"))
        }
        AnswerOutcome::Final(status) => {
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
            state.engine.metrics().answer_refused(code);
            Err(ApiError::new(StatusCode::CONFLICT, code, message).about(id_text, status.as_str()))
        }
    }
}
