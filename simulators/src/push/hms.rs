//! The mock's Huawei side: the OAuth2 client-credentials endpoint and Push Kit v1
//! `messages:send`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::state::{AccessCheck, Provider, Verdict};
use super::{Shared, bearer, json, read_body};

/// Body limit, tokens excluded.
const MAX_BODY: usize = 4096;

/// `POST /oauth2/v3/token`, form `grant_type=client_credentials&client_id=…&client_secret=…`.
pub(super) async fn token(
    State(shared): State<Arc<Shared>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let refuse = |sub: u32, description: &str| {
        json(
            StatusCode::BAD_REQUEST,
            json!({ "error": 1101, "sub_error": sub, "error_description": description }),
        )
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return refuse(20001, "unsupported grant_type");
    }
    let id = form.get("client_id").map(String::as_str).unwrap_or("");
    let secret = form.get("client_secret").map(String::as_str).unwrap_or("");
    let Some(client) = shared.hms_clients.iter().find(|c| c.client_id == id) else {
        return refuse(20003, "invalid client_id");
    };
    // Not constant time: this is a test double, not a credential store.
    if client.client_secret != secret {
        return refuse(20058, "invalid client_secret");
    }
    shared.grant(Provider::Hms)
}

struct Answer {
    status: StatusCode,
    code: &'static str,
    msg: String,
}

fn answer(status: u16, code: &'static str, msg: impl Into<String>) -> Answer {
    Answer {
        status: StatusCode::from_u16(status).expect("valid status"),
        code,
        msg: msg.into(),
    }
}

fn is_ttl(v: &Value) -> bool {
    v.as_str()
        .and_then(|s| s.strip_suffix('s'))
        .is_some_and(|n| {
            n.parse::<f64>()
                .is_ok_and(|x| (0.0..=1_296_000.0).contains(&x))
        })
}

/// Checks the message as Push Kit does; returns its tokens.
fn validate_message(body: &[u8]) -> Result<Vec<String>, Answer> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Err(answer(
            400,
            "80100003",
            "Illegal payload, the JSON is malformed",
        ));
    };
    let m = &v["message"];
    let Some(tokens) = m["token"].as_array() else {
        return Err(answer(
            400,
            "80100001",
            "Some request parameters are abnormal: message.token",
        ));
    };
    if tokens.is_empty() || tokens.len() > 1000 {
        return Err(answer(
            400,
            "80300010",
            "The number of tokens exceeds the limit",
        ));
    }
    let tokens: Vec<String> = tokens
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    let token_bytes: usize = tokens.iter().map(|t| t.len() + 3).sum();
    if body.len().saturating_sub(token_bytes) > MAX_BODY {
        return Err(answer(
            400,
            "80300008",
            "The message body size exceeds the default value",
        ));
    }
    if m.get("data").is_some_and(|d| !d.is_string()) {
        return Err(answer(
            400,
            "80100003",
            "Illegal payload, message.data must be a string",
        ));
    }
    if let Some(android) = m.get("android") {
        if android.get("ttl").is_some_and(|t| !is_ttl(t)) {
            return Err(answer(400, "80100003", "Illegal payload, android.ttl"));
        }
        if let Some(u) = android.get("urgency")
            && !matches!(u.as_str(), Some("HIGH" | "NORMAL"))
        {
            return Err(answer(400, "80100003", "Illegal payload, android.urgency"));
        }
        if let Some(n) = android.get("notification")
            && n.get("click_action").is_none()
        {
            return Err(answer(
                400,
                "80100003",
                "Illegal payload, click_action is required",
            ));
        }
    }
    Ok(tokens)
}

async fn check(shared: &Shared, headers: &axum::http::HeaderMap, body: &[u8]) -> Answer {
    let Some(token) = bearer(headers) else {
        return answer(401, "80200001", "Oauth authentication error");
    };
    match shared.state.lock().access_ok(Provider::Hms, token) {
        AccessCheck::Valid => {}
        AccessCheck::Expired => return answer(401, "80200003", "Oauth Token expired."),
        AccessCheck::Unknown => return answer(401, "80200001", "Oauth authentication error"),
    }
    let tokens = match validate_message(body) {
        Ok(t) => t,
        Err(a) => return a,
    };
    let illegal: Vec<&String> = {
        let state = shared.state.lock();
        tokens
            .iter()
            .filter(|t| state.is_gone(Provider::Hms, t))
            .collect()
    };
    if illegal.len() == tokens.len() {
        return answer(200, "80300007", "All the tokens are invalid");
    }
    match shared.verdict(Provider::Hms).await {
        Verdict::Accept if illegal.is_empty() => answer(200, "80000000", "Success"),
        Verdict::Accept => answer(
            200,
            "80100000",
            json!({
                "success": tokens.len() - illegal.len(),
                "failure": illegal.len(),
                "illegal_tokens": illegal,
            })
            .to_string(),
        ),
        // Flow control is answered with 503.
        Verdict::Throttle { .. } => answer(503, "81000001", "flow control, retry later"),
        Verdict::ServerError => answer(500, "81000001", "Internal error"),
    }
}

/// `POST /v1/{app_id}/messages:send`.
pub(super) async fn send(
    State(shared): State<Arc<Shared>>,
    Path(_app_id): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let body = read_body(body).await.unwrap_or_default();
    let a = check(&shared, &parts.headers, &body).await;
    let n = shared.state.lock().counts(Provider::Hms).accepted + 1;
    let success = a.code == "80000000";
    shared.record(
        Provider::Hms,
        &path,
        &parts.headers,
        &body,
        a.status,
        (!success).then(|| a.code.to_string()),
    );
    let mut response = json(
        a.status,
        json!({ "code": a.code, "msg": a.msg, "requestId": format!("mock{n:016}") }),
    );
    if a.status == StatusCode::SERVICE_UNAVAILABLE
        && let Some(after) = shared.state.lock().behaviour().retry_after_secs
        && let Ok(v) = after.to_string().parse()
    {
        response.headers_mut().insert("retry-after", v);
    }
    response
}
