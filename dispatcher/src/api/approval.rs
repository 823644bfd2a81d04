//! `POST /v1/verifications/{id}/approve` and `/deny`: the app's signed answer to an
//! approval request (channel `app`).
//!
//! The app calls these itself, without an API key: the signature by a device key
//! enrolled for the verification's subject is what authenticates it, judged by the
//! engine ([`crate::engine::Engine::answer`]), which also keeps strangers holding
//! the id from doing harm. The first good answer is final; the backend that asked
//! sees the outcome with `GET /v1/verifications/{id}`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::json::JsonBody;
use super::refusal::refused;
use super::verifications::{IdPath, json_response};
use super::{AppState, CallerAddr};
use crate::engine::AnswerRequest;
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

async fn answer(
    State(state): State<Arc<AppState>>,
    CallerAddr(caller): CallerAddr,
    IdPath(id): IdPath,
    body: JsonBody<AnswerBody>,
    decision: Decision,
) -> Result<Response, ApiError> {
    let body = body.value;
    let request = AnswerRequest {
        decision,
        device: &body.device,
        timestamp_ms: body.timestamp,
        signature: &body.signature,
    };
    let answered = state
        .engine
        .answer(caller, &id, request)
        .await
        .map_err(|r| refused(r, Some(&id)))?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&AnsweredView {
            id: id.to_string(),
            status: answered.status.as_str(),
        })
        .expect("views serialize"),
    ))
}
