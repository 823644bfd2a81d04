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
    let store_ok = state.engine.stores().verifications.ping().await.is_ok();
    let queue = state.engine.queue();
    let accepting = !queue.is_closed();
    let healthy = store_ok && accepting;
    // Channels are reported, not required: a node whose carrier is down still
    // accepts requests (they wait in the queue, or fail over), so it stays ready.
    let channels: serde_json::Map<String, serde_json::Value> = state
        .channels
        .iter()
        .map(|c| {
            let status = if c.healthy() { "ok" } else { "unavailable" };
            (c.name().to_string(), json!(status))
        })
        .collect();
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "store": if store_ok { "ok" } else { "unavailable" },
        "channels": channels,
        "push": state
            .push_providers
            .iter()
            .map(|(platform, provider)| (platform.to_string(), json!(provider)))
            .collect::<serde_json::Map<_, _>>(),
        "delivery_queue": {
            "depth": queue.depth(),
            "capacity": queue.capacity(),
            "accepting": accepting,
            // How long sends have stood in it lately; over the limit, new requests
            // are answered 503 until it drains.
            "standing_delay_ms": queue
                .standing_delay(state.engine.now())
                .map(|d| d.as_millis() as u64),
        },
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /livez`: the process serves requests. Nothing else is asked — a store or
/// a carrier that is down is not cured by restarting otpd, which is what a failed
/// liveness probe does.
pub async fn livez() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: whether this node should be sent traffic — its store answers,
/// its delivery queue is taking sends, at least one carrier is live, and it is not
/// stopping. A standing queue does not make it unready: every node behind the same
/// carriers would be, and a balancer with no ready node left refuses everything;
/// the node answers `503 overloaded` itself, with `Retry-After`.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let store = state.engine.stores().verifications.ping().await.is_ok();
    let delivery = !state.engine.queue().is_closed();
    let live = state.channels.iter().filter(|c| c.healthy()).count();
    let carriers = state.channels.is_empty() || live > 0;
    let stopping = *state.stopping.borrow();
    let ready = store && delivery && carriers && !stopping;
    let word = |ok: bool| if ok { "ok" } else { "failing" };
    let body = json!({
        "status": if ready { "ok" } else { "unavailable" },
        "checks": {
            "store": word(store),
            "delivery": word(delivery),
            "carriers": word(carriers),
            "serving": word(!stopping),
        },
        "carriers_live": live,
        "carriers_configured": state.channels.len(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.engine.publish_gauges();
    // One ping per scrape: what an alert on an unreachable store (Redis) reads.
    let store_up = state.engine.stores().verifications.ping().await.is_ok();
    metrics::gauge!("otpd_store_up").set(f64::from(u8::from(store_up)));
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

/// The description, with what depends on this server filled in: the purposes it is
/// configured with, and the shape of the numbers it reads. Rendered on first use and
/// kept: every answer shares the same bytes.
pub async fn openapi(State(state): State<Arc<AppState>>) -> Response {
    let body = state.openapi.get_or_init(|| render_openapi(&state)).clone();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn render_openapi(state: &AppState) -> bytes::Bytes {
    let mut spec: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    let create = &mut spec["components"]["schemas"]["CreateVerification"]["properties"];
    let mut purposes = json!(state.engine.purpose_names());
    purposes
        .as_array_mut()
        .expect("array")
        .push(serde_json::Value::Null);
    create["purpose"]["enum"] = purposes;
    let number = json!(crate::numbers::reader::INPUT_PATTERN);
    create["to"]["pattern"] = number.clone();
    spec["paths"]["/v1/admin/routes"]["get"]["parameters"][0]["schema"]["pattern"] = number.clone();
    spec["components"]["schemas"]["PutSubscriber"]["properties"]["phone"]["pattern"] = number;
    serde_json::to_vec(&spec).expect("JSON serializes").into()
}
