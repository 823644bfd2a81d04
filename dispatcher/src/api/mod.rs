//! The HTTP API. [`router`] builds the whole of it from an [`AppState`], so tests can
//! drive it without a socket and the server only adds a listener.

pub mod error;
pub mod json;
pub mod ops;
pub mod verifications;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::engine::Engine;
use error::ApiError;

/// What handlers share.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub prometheus: Option<PrometheusHandle>,
    pub default_purpose: String,
    pub default_locale: String,
    pub idempotency_ttl: Duration,
    pub overload_retry_after: Duration,
}

pub fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    Router::new()
        .route("/v1/verifications", post(verifications::create))
        .route(
            "/v1/verifications/{id}",
            get(verifications::get).delete(verifications::cancel),
        )
        .route("/v1/verifications/{id}/check", post(verifications::check))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Count every request by route template (not raw path, to keep label cardinality
/// fixed) and time it.
async fn observe(State(_): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("otpd_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("otpd_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}
