//! The API's one error type. Every failure becomes
//! `{"error": {"code", "message", "field"?, "reason"?}}` with the right status; some
//! answers also carry the verification's `id` and `status` beside the error.
//!
//! Messages are written here, never copied from the request: nothing a caller sent (a
//! code, a number) is echoed back in an error.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An API failure. Boxed: it travels in every handler's `Result`, and most results
/// are successes that should not pay for its size.
#[derive(Debug, Clone)]
pub struct ApiError(Box<ErrorParts>);

#[derive(Debug, Clone)]
pub struct ErrorParts {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub reason: Option<&'static str>,
    /// The limit that refused the request (`destination`, `ip`, …).
    pub limit: Option<&'static str>,
    pub retry_after: Option<Duration>,
    /// `id` and `status` of the verification the error is about, when useful.
    pub verification: Option<(String, &'static str)>,
    pub attempts_left: Option<u8>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts_left: Option<u8>,
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self(Box::new(ErrorParts {
            status,
            code,
            message: message.into(),
            field: None,
            reason: None,
            limit: None,
            retry_after: None,
            verification: None,
            attempts_left: None,
        }))
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.0.field = Some(field.into());
        self
    }

    /// Rename the field an error is about (the same check serves a body field and a
    /// path segment).
    pub fn field_mut(&mut self, field: impl Into<String>) {
        self.0.field = Some(field.into());
    }

    pub fn reason(mut self, reason: &'static str) -> Self {
        self.0.reason = Some(reason);
        self
    }

    pub fn limit(mut self, limit: &'static str) -> Self {
        self.0.limit = Some(limit);
        self
    }

    /// A request refused by a rate limit: 429, the limit named, when to come back.
    pub fn limited(refusal: crate::policy::limiter::Refusal) -> Self {
        let message = match refusal.limit {
            "pumping" => "sends to this number range are restricted: its codes are rarely used (suspected SMS pumping); retry later".to_string(),
            "check_subject" => "too many wrong codes for this subject; retry later".to_string(),
            "check_ip" => "too many checks from this address; retry later".to_string(),
            "public_ip" => "too many calls from this network; retry later".to_string(),
            "answer_ip" => {
                "too many refused answers from this network; retry later".to_string()
            }
            limit => format!("the `{limit}` rate limit is reached; retry after Retry-After seconds"),
        };
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            .limit(refusal.limit)
            .retry_after(refusal.retry_after)
    }

    pub fn retry_after(mut self, d: Duration) -> Self {
        self.0.retry_after = Some(d);
        self
    }

    pub fn about(mut self, id: String, status: &'static str) -> Self {
        self.0.verification = Some((id, status));
        self
    }

    pub fn attempts_left(mut self, n: u8) -> Self {
        self.0.attempts_left = Some(n);
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn limits_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "limits_unavailable",
            "the rate limits cannot be checked right now; retry later",
        )
        .retry_after(Duration::from_secs(1))
    }

    pub fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the verification store is not available; retry later",
        )
        .retry_after(Duration::from_secs(1))
    }
}

impl std::ops::Deref for ApiError {
    type Target = ErrorParts;

    fn deref(&self) -> &ErrorParts {
        &self.0
    }
}

/// Seconds for `Retry-After`, rounded up and at least 1.
fn whole_seconds(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ApiError(parts) = self;
        let this = *parts;
        let retry_after = this.retry_after.map(whole_seconds);
        let body = Body {
            id: this.verification.as_ref().map(|(id, _)| id.as_str()),
            status: this.verification.as_ref().map(|(_, s)| *s),
            attempts_left: this.attempts_left,
            error: Detail {
                code: this.code,
                message: &this.message,
                field: this.field.as_deref(),
                reason: this.reason,
                limit: this.limit,
                retry_after,
            },
        };
        let bytes = serde_json::to_vec(&body).expect("error bodies serialize");
        let mut response = (
            this.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response();
        if this.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"otpd\""),
            );
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The limiter's store is down: log it, answer 503.
pub fn limits_unavailable(e: crate::policy::limiter::Unavailable) -> ApiError {
    tracing::error!(error = %e, "limiter failure");
    ApiError::limits_unavailable()
}
