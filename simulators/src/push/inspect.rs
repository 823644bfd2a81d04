//! `/_mock/…`: what the mock received, its counts, and knobs for tests.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::Shared;
use super::state::{Behaviour, Provider};

#[derive(Deserialize)]
pub(super) struct Filter {
    provider: Option<Provider>,
}

pub(super) async fn requests(
    State(shared): State<Arc<Shared>>,
    Query(filter): Query<Filter>,
) -> Response {
    Json(shared.state.lock().recorded(filter.provider)).into_response()
}

pub(super) async fn clear(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.state.lock().clear_recorded();
    StatusCode::NO_CONTENT
}

pub(super) async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.state.lock();
    let mut out = serde_json::Map::new();
    for p in Provider::ALL {
        out.insert(p.as_str().into(), json!(state.counts(p)));
    }
    out.insert("behaviour".into(), json!(state.behaviour()));
    Json(out).into_response()
}

pub(super) async fn behaviour(
    State(shared): State<Arc<Shared>>,
    Json(b): Json<Behaviour>,
) -> StatusCode {
    shared.state.lock().set_behaviour(b);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Unregister {
    provider: Provider,
    token: String,
}

pub(super) async fn unregister(
    State(shared): State<Arc<Shared>>,
    Json(u): Json<Unregister>,
) -> StatusCode {
    shared.state.lock().unregister(u.provider, &u.token);
    StatusCode::NO_CONTENT
}

pub(super) async fn expire(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.state.lock().expire_credentials();
    StatusCode::NO_CONTENT
}
