//! The HTTP API. [`router`] builds the whole of it from an [`AppState`], so tests can
//! drive it without a socket and the server only adds a listener.

pub mod admin;
pub mod approval;
pub mod console;
pub mod error;
pub mod events;
pub mod json;
pub mod ops;
mod refusal;
pub mod subscribers;
pub mod verifications;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::engine::Engine;
use error::ApiError;

/// What handlers share.
pub struct AppState {
    /// Every flow, every decision: the handlers parse, call it, and render.
    pub engine: Arc<Engine>,
    pub prometheus: Option<PrometheusHandle>,
    pub http_metrics: HttpMetrics,
    /// The delivery channels, for the health endpoint.
    pub channels: Vec<Arc<dyn otpd_adapters::Channel>>,
    /// Which provider serves each push platform, for the health endpoint.
    pub push_providers: Vec<(&'static str, String)>,
    /// Applies `POST /v1/admin/reload`; `None` where reloading is not offered.
    pub reloader: Option<Arc<dyn Reload>>,
    /// Approval in the app: the QR URIs views carry.
    pub app: crate::config::AppConfig,
    /// The proxies whose `X-Forwarded-For` names the caller.
    pub trusted_proxies: crate::policy::peer::TrustedProxies,
    /// How long a request's body may take to arrive.
    pub body_read_timeout: Duration,
    /// The largest body accepted (`server.body_limit`).
    pub body_limit: usize,
    /// Turns true when the server begins to stop.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// `GET /openapi.json`, rendered once: it depends only on the configuration the
    /// process started with, and anyone may ask for it.
    pub openapi: std::sync::OnceLock<bytes::Bytes>,
}

/// Reads the configuration again and installs what may change while running (the
/// server's `Reloader`); the error says why a configuration was refused.
#[async_trait::async_trait]
pub trait Reload: Send + Sync {
    async fn reload(&self) -> Result<(), String>;
}

/// The TCP peer of the connection a request came on, as the accept loop records it
/// in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The authenticated API client making the request (everybody, when no client is
/// configured). A missing or unknown key is a 401 before anything else is read.
pub struct Caller(pub Arc<crate::policy::clients::Client>);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        state
            .engine
            .admission()
            .rules()
            .clients
            .authenticate(header)
            .map(Caller)
            .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))
    }
}

/// The caller's network address: the connection's peer, or what a trusted proxy
/// says (see [`crate::policy::peer`]). A request that came through no socket (a test driving
/// the router directly) is the unspecified address.
#[derive(Debug, Clone, Copy)]
pub struct CallerAddr(pub std::net::IpAddr);

impl FromRequestParts<Arc<AppState>> for CallerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<PeerAddr>()
            .map_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), |p| {
                p.0.ip()
            });
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes());
        Ok(CallerAddr(state.trusted_proxies.caller(peer, forwarded)))
    }
}

/// The limit per caller network of routes anyone may call without an API key:
/// charged before the route does any work.
async fn public(
    State(state): State<Arc<AppState>>,
    CallerAddr(caller): CallerAddr,
    request: Request,
    next: Next,
) -> Response {
    match state.engine.admit_public(caller).await {
        Ok(()) => next.run(request).await,
        Err(refusal) => ApiError::from(refusal).into_response(),
    }
}

/// A caller allowed to use `/v1/admin/*`.
pub struct AdminCaller(pub Arc<crate::policy::clients::Client>);

impl FromRequestParts<Arc<AppState>> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let Caller(client) = Caller::from_request_parts(parts, state).await?;
        if !client.admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this API key may not use the admin endpoints",
            ));
        }
        Ok(AdminCaller(client))
    }
}

/// The end user's IP address, as the backend passes it (`ip`).
pub(crate) fn read_ip(input: Option<&str>) -> Result<Option<std::net::IpAddr>, ApiError> {
    input
        .map(|s| {
            s.parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_ip",
                    "`ip` must be an IPv4 or IPv6 address (the end user's, as the backend saw it)",
                )
                .field("ip")
            })
        })
        .transpose()
}

/// A number as typed, read with the metadata; a refusal names `field` and why.
pub(crate) fn read_number(
    state: &AppState,
    input: &str,
    field: &'static str,
) -> Result<crate::numbers::reader::NumberInfo, ApiError> {
    state.engine.numbers().parse(input).map_err(|e| {
        ApiError::bad_request("invalid_phone_number", e.to_string())
            .field(field)
            .reason(e.reason())
    })
}

/// A language tag of the request's `locale`.
pub(crate) fn read_locale(tag: &str) -> Result<crate::domain::locale::Locale, ApiError> {
    crate::domain::locale::Locale::parse(tag).ok_or_else(|| {
        ApiError::bad_request(
            "unsupported_locale",
            format!(
                "unsupported language; supported: {}",
                crate::domain::locale::SUPPORTED
            ),
        )
        .field("locale")
    })
}

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.body_limit;
    // Routes anyone may call (no API key) are limited per caller network.
    let open = middleware::from_fn_with_state(state.clone(), public);
    Router::new()
        .route("/v1/verifications", post(verifications::create))
        .route(
            "/v1/verifications/{id}",
            get(verifications::get).delete(verifications::cancel),
        )
        .route("/v1/verifications/{id}/check", post(verifications::check))
        .route(
            "/v1/verifications/{id}/ack",
            post(verifications::acknowledge).layer(open.clone()),
        )
        .route(
            "/v1/verifications/{id}/approve",
            post(approval::approve).layer(open.clone()),
        )
        .route(
            "/v1/verifications/{id}/deny",
            post(approval::deny).layer(open.clone()),
        )
        .route(
            "/v1/subscribers/{subject}",
            get(subscribers::get)
                .put(subscribers::put)
                .delete(subscribers::delete),
        )
        .route(
            "/v1/subscribers/{subject}/devices",
            post(subscribers::add_device),
        )
        .route(
            "/v1/subscribers/{subject}/devices/{platform}/{token}",
            axum::routing::delete(subscribers::remove_device),
        )
        .route("/v1/events", get(events::list))
        .route("/v1/admin/routes", get(admin::routes))
        .route("/v1/admin/reload", post(admin::reload))
        .route("/v1/admin/limits", get(admin::limits))
        .route("/v1/admin/carriers", get(admin::carriers))
        .route("/v1/admin/carriers/{name}/suspend", post(admin::suspend))
        .route("/v1/admin/carriers/{name}/resume", post(admin::resume))
        .route("/v1/admin/subjects/{subject}/unlock", post(admin::unlock))
        .route(
            "/v1/admin/subjects/{subject}/verifications",
            get(admin::subject_verifications),
        )
        .route("/v1/admin/pumping/unblock", post(admin::unblock))
        .route("/v1/admin/overview", get(admin::overview))
        .route("/console", get(console::page).layer(open.clone()))
        .route("/healthz", get(ops::healthz).layer(open.clone()))
        .route("/livez", get(ops::livez).layer(open.clone()))
        .route("/readyz", get(ops::readyz).layer(open.clone()))
        .route("/metrics", get(ops::metrics).layer(open.clone()))
        .route("/openapi.json", get(ops::openapi).layer(open))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Neither answer repeats the method or the path: they are the caller's, and could
/// be anything (`openapi.json` lists the routes).
async fn not_found() -> ApiError {
    ApiError::not_found("no such route; /openapi.json describes the API")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed on this route; /openapi.json describes the API",
    )
}

/// `413 body_too_large`.
pub(crate) fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "the request body is larger than the server accepts (server.body_limit, 16 KiB by default)",
    )
}

/// Whether a request announces a body over `limit`: refused at once, before any of
/// it is read — and before `100 Continue` invites a client that sent `Expect:
/// 100-continue` to send it. (Bodies of unannounced length are cut at the limit as
/// they are read.)
fn announces_too_much(request: &Request, limit: usize) -> bool {
    request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// Count every request by route template (not raw path, to keep label cardinality
/// fixed) and time it.
/// It is also where a body announced over the limit is refused (one layer rather
/// than two: each costs a boxed future per request).
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = if announces_too_much(&request, state.body_limit) {
        too_large().into_response()
    } else {
        next.run(request).await
    };
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let (count, latency) = state
        .http_metrics
        .series(route, &method, response.status().as_u16());
    latency.record(started.elapsed().as_secs_f64());
    count.increment(1);
    response
}

/// Metric handles per (route, method, status), registered on first use. Building a
/// labelled key and looking it up in the recorder on every request costs allocations
/// and a hash of three strings; this costs one read lock and no allocation.
#[derive(Default)]
pub struct HttpMetrics {
    series: parking_lot::RwLock<hashbrown::HashMap<SeriesKey, (Counter, Histogram)>>,
}

/// Every label value comes from a fixed set: the route templates of [`router`] (or
/// `unmatched`), the methods of [`method_label`], and the statuses otpd answers
/// with (three digits). Nothing a caller sends becomes a label value, so the series
/// cannot grow past what the code names.
#[derive(Hash, PartialEq, Eq)]
struct SeriesKey {
    route: Box<str>,
    method: &'static str,
    status: u16,
}

/// A borrowed [`SeriesKey`], hashing the same fields in the same order.
#[derive(Hash)]
struct SeriesRef<'a> {
    route: &'a str,
    method: &'static str,
    status: u16,
}

impl hashbrown::Equivalent<SeriesKey> for SeriesRef<'_> {
    fn equivalent(&self, key: &SeriesKey) -> bool {
        self.status == key.status && self.method == key.method && self.route == &*key.route
    }
}

/// The method as a label: the standard ones by name, anything else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

impl HttpMetrics {
    fn series(&self, route: &str, method: &Method, status: u16) -> (Counter, Histogram) {
        let method = method_label(method);
        let key = SeriesRef {
            route,
            method,
            status,
        };
        if let Some(found) = self.series.read().get(&key) {
            return found.clone();
        }
        let labels = [("route", route.to_string()), ("method", method.to_string())];
        let count = metrics::counter!(
            "otpd_http_requests_total",
            &[
                ("route", route.to_string()),
                ("method", method.to_string()),
                ("status", status.to_string())
            ]
        );
        let latency = metrics::histogram!("otpd_http_request_duration_seconds", &labels);
        self.series
            .write()
            .entry(SeriesKey {
                route: route.into(),
                method,
                status,
            })
            .or_insert((count, latency))
            .clone()
    }
}
