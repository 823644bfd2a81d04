//! `GET /console`: the operator console, one self-contained page (no CDN, no
//! library: it works on a network with no way out). The page holds no data: it
//! reads the admin endpoints (`/v1/admin/overview`, `/v1/admin/carriers/…`) with the
//! admin API key the operator gives it, and `/metrics`, every two seconds, and draws
//! its charts itself as SVG. Its controls call the admin API, so every action is
//! refused to a non-admin key and recorded in the audit trail as the API's are.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("console.html");

pub async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            // Its own script and styles only, its own origin only; never framed.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
                ),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        PAGE,
    )
        .into_response()
}
