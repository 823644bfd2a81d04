//! `GET /v1/events?after=<id>&limit=<n>`: a client's own events, oldest first, for a
//! backend that was down while its webhook was called (or that reads them instead).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::error::ApiError;
use super::{AppState, Caller};
use crate::store::events::EventId;

/// Events given at most per call.
const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;

pub async fn list(
    State(state): State<Arc<AppState>>,
    Caller(client): Caller,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = super::admin::known_params(query, &["after", "limit"])?;
    let after = match query.get("after") {
        None => EventId::default(),
        Some(t) => t.parse().map_err(|e: crate::store::events::BadEventId| {
            ApiError::bad_request("invalid_event_id", e.to_string()).field("after")
        })?,
    };
    let limit = super::admin::limit_param(&query, DEFAULT_LIMIT, MAX_LIMIT)?;
    // One more than asked tells whether there is more.
    let mut events = state.engine.events_after(&client, after, limit + 1).await?;
    let more = events.len() > limit;
    events.truncate(limit);
    let mut out =
        Vec::with_capacity(events.iter().map(|e| e.payload.len() + 40).sum::<usize>() + 32);
    out.extend_from_slice(b"{\"data\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&e.body());
    }
    out.extend_from_slice(b"],\"has_more\":");
    out.extend_from_slice(if more { b"true" } else { b"false" });
    out.push(b'}');
    Ok(super::verifications::json_response(StatusCode::OK, out))
}
