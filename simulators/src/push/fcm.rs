//! The mock's Google side: the OAuth2 token endpoint for service-account assertions,
//! and FCM HTTP v1 `messages:send`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::{AccessCheck, Provider, Verdict};
use super::{Shared, bearer, json, read_body};

const MAX_MESSAGE: usize = 4096;
const SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/firebase.messaging",
    "https://www.googleapis.com/auth/cloud-platform",
];

#[derive(Deserialize)]
struct Assertion {
    iss: String,
    scope: String,
    aud: String,
    iat: i64,
    exp: i64,
}

fn grant_error(error: &str, description: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        json!({ "error": error, "error_description": description }),
    )
}

/// `POST /token`, form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=…`.
pub(super) async fn token(
    State(shared): State<Arc<Shared>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if form.get("grant_type").map(String::as_str) != Some(otpd_adapters::fcm::oauth::GRANT_TYPE) {
        return grant_error("unsupported_grant_type", "Invalid grant_type");
    }
    let Some(assertion) = form.get("assertion") else {
        return grant_error("invalid_request", "Missing required parameter: assertion");
    };
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return grant_error("invalid_grant", "Invalid JWT: malformed");
    };
    if header.alg != Algorithm::RS256 {
        return grant_error("invalid_grant", "Invalid JWT: alg must be RS256");
    }
    // Find the account by the claimed issuer, then check the signature with its key.
    let Ok(claimed) = jsonwebtoken::dangerous::insecure_decode_claims::<Assertion>(assertion)
    else {
        return grant_error("invalid_grant", "Invalid JWT: missing claims");
    };
    let Some((_, key)) = shared
        .fcm_accounts
        .iter()
        .find(|(email, _)| *email == claimed.iss)
    else {
        return grant_error("invalid_grant", "Invalid grant: account not found");
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let Ok(verified) = jsonwebtoken::decode::<Assertion>(assertion, key, &validation) else {
        return grant_error("invalid_grant", "Invalid JWT Signature.");
    };
    let c = verified.claims;
    let now = otpd_adapters::push::now_secs();
    if c.exp <= now || c.iat > now + 60 {
        return grant_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        );
    }
    if c.exp - c.iat > 3600 {
        return grant_error("invalid_grant", "Invalid JWT: lifetime over one hour");
    }
    if !c.aud.ends_with("/token") {
        return grant_error("invalid_grant", "Invalid JWT: wrong audience");
    }
    if !c.scope.split(' ').any(|s| SCOPES.contains(&s)) {
        return grant_error(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    }
    shared.grant(Provider::Fcm)
}

/// The FCM error body: `status` for the HTTP status, `errorCode` in the details.
fn fcm_error(status: StatusCode, rpc_status: &str, code: Option<&str>, message: &str) -> Response {
    let mut details = Vec::new();
    if let Some(code) = code {
        details.push(json!({
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": code,
        }));
    }
    json(
        status,
        json!({ "error": {
            "code": status.as_u16(),
            "message": message,
            "status": rpc_status,
            "details": details,
        }}),
    )
}

struct Refusal {
    status: StatusCode,
    rpc: &'static str,
    code: Option<&'static str>,
    message: &'static str,
}

fn refuse(
    status: u16,
    rpc: &'static str,
    code: Option<&'static str>,
    message: &'static str,
) -> Refusal {
    Refusal {
        status: StatusCode::from_u16(status).expect("valid status"),
        rpc,
        code,
        message,
    }
}

fn invalid(message: &'static str) -> Refusal {
    refuse(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"), message)
}

fn is_duration(v: &Value) -> bool {
    v.as_str()
        .and_then(|s| s.strip_suffix('s'))
        .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok_and(|x| x >= 0.0))
}

/// Checks the message as FCM does; returns the target token.
fn validate_message(body: &[u8]) -> Result<String, Refusal> {
    if body.len() > MAX_MESSAGE {
        return Err(invalid(
            "Request contains an invalid argument: message is too big",
        ));
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid("Invalid JSON payload received."));
    };
    let m = &v["message"];
    if !m.is_object() {
        return Err(invalid("Request contains an invalid argument: no message"));
    }
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|k| m.get(**k).is_some())
        .count();
    if targets != 1 {
        return Err(invalid(
            "Request contains an invalid argument: exactly one of token, topic or condition",
        ));
    }
    if let Some(data) = m.get("data") {
        let all_strings = data
            .as_object()
            .is_some_and(|d| d.values().all(Value::is_string));
        if !all_strings {
            return Err(invalid(
                "Invalid value at 'message.data': values must be strings",
            ));
        }
    }
    if let Some(android) = m.get("android") {
        if let Some(p) = android.get("priority")
            && !matches!(p.as_str(), Some("NORMAL" | "HIGH"))
        {
            return Err(invalid("Invalid value at 'message.android.priority'"));
        }
        if let Some(ttl) = android.get("ttl")
            && !is_duration(ttl)
        {
            return Err(invalid("Invalid value at 'message.android.ttl' (Duration)"));
        }
    }
    let token = m["token"].as_str().unwrap_or_default();
    let well_formed = token.len() >= 20
        && token.len() <= 4096
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'));
    if !well_formed {
        return Err(invalid(
            "The registration token is not a valid FCM registration token",
        ));
    }
    Ok(token.to_string())
}

/// `POST /v1/projects/{project}/messages:send`.
pub(super) async fn send(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let body = read_body(body).await.unwrap_or_default();
    let result = check(&shared, &parts.headers, &body).await;
    let (response, status, reason) = match result {
        Ok(()) => {
            let n = shared.state.lock().counts(Provider::Fcm).accepted + 1;
            (
                json(
                    StatusCode::OK,
                    json!({ "name": format!("projects/{project}/messages/0:{n}") }),
                ),
                StatusCode::OK,
                None,
            )
        }
        Err((r, retry_after)) => {
            let mut response = fcm_error(r.status, r.rpc, r.code, r.message);
            if let Some(s) = retry_after
                && let Ok(v) = s.to_string().parse()
            {
                response.headers_mut().insert("retry-after", v);
            }
            (
                response,
                r.status,
                Some(r.code.unwrap_or(r.rpc).to_string()),
            )
        }
    };
    shared.record(Provider::Fcm, &path, &parts.headers, &body, status, reason);
    response
}

async fn check(
    shared: &Shared,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<(), (Refusal, Option<u64>)> {
    let unauthenticated = refuse(
        401,
        "UNAUTHENTICATED",
        None,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
    );
    let Some(token) = bearer(headers) else {
        return Err((unauthenticated, None));
    };
    if shared.state.lock().access_ok(Provider::Fcm, token) != AccessCheck::Valid {
        return Err((unauthenticated, None));
    }
    let device = validate_message(body).map_err(|r| (r, None))?;
    if shared.state.lock().is_gone(Provider::Fcm, &device) {
        return Err((
            refuse(
                404,
                "NOT_FOUND",
                Some("UNREGISTERED"),
                "Requested entity was not found.",
            ),
            None,
        ));
    }
    match shared.verdict(Provider::Fcm).await {
        Verdict::Accept => Ok(()),
        Verdict::Throttle { retry_after } => Err((
            refuse(
                429,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                "Quota exceeded for quota metric 'Send requests'.",
            ),
            retry_after,
        )),
        Verdict::ServerError => Err((
            refuse(
                503,
                "UNAVAILABLE",
                Some("UNAVAILABLE"),
                "The service is currently unavailable.",
            ),
            None,
        )),
    }
}
