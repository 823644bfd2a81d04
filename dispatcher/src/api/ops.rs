//! Operational endpoints: health, Prometheus metrics, the OpenAPI description.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

/// The OpenAPI 3.1 description of the whole API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Ready when the store answers and deliveries are being taken.
pub async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let store_ok = state.engine.store().ping().await.is_ok();
    let queue = state.engine.queue();
    let accepting = !queue.is_closed();
    let healthy = store_ok && accepting;
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "store": if store_ok { "ok" } else { "unavailable" },
        "delivery_queue": {
            "depth": queue.depth(),
            "capacity": queue.capacity(),
            "accepting": accepting,
        },
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.engine.publish_gauges();
    let text = state
        .prometheus
        .as_ref()
        .map(|p| p.render())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

pub async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}
