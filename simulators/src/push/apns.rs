//! The mock's APNs: `POST /3/device/{token}` with provider-token authentication.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use otpd_adapters::push::now_secs;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::json;

use super::state::{Provider, Verdict};
use super::{Shared, bearer, read_body};

const MAX_PAYLOAD: usize = 4096;
const PUSH_TYPES: &[&str] = &[
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
];

#[derive(Deserialize)]
struct Claims {
    iss: String,
    iat: i64,
}

struct Refusal(StatusCode, &'static str);

fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal(StatusCode::from_u16(status).expect("valid status"), reason)
}

/// The provider token: signature by a known key, issuer its team, no older than an
/// hour. Verified signatures are remembered, as APNs does per connection.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(jwt) = bearer(headers) else {
        return Err(refuse(403, "MissingProviderToken"));
    };
    let now = now_secs();
    let iat = {
        let state = shared.state.lock();
        if state.jwt_revoked(jwt) {
            return Err(refuse(403, "ExpiredProviderToken"));
        }
        state.jwt_verified(jwt)
    };
    let iat = match iat {
        Some(iat) => iat,
        None => {
            let header = jsonwebtoken::decode_header(jwt)
                .map_err(|_| refuse(403, "InvalidProviderToken"))?;
            if header.alg != Algorithm::ES256 {
                return Err(refuse(403, "InvalidProviderToken"));
            }
            let kid = header.kid.unwrap_or_default();
            let Some((_, team, key)) = shared.apns_keys.iter().find(|(k, _, _)| *k == kid) else {
                return Err(refuse(403, "InvalidProviderToken"));
            };
            let mut validation = Validation::new(Algorithm::ES256);
            validation.required_spec_claims.clear();
            validation.validate_exp = false;
            let claims = jsonwebtoken::decode::<Claims>(jwt, key, &validation)
                .map_err(|_| refuse(403, "InvalidProviderToken"))?
                .claims;
            if claims.iss != *team {
                return Err(refuse(403, "InvalidProviderToken"));
            }
            shared.state.lock().remember_jwt(jwt, claims.iat);
            claims.iat
        }
    };
    if now - iat > 3600 {
        return Err(refuse(403, "ExpiredProviderToken"));
    }
    if iat > now + 60 {
        return Err(refuse(403, "InvalidProviderToken"));
    }
    Ok(())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn validate(shared: &Shared, token: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    authenticate(shared, headers)?;
    if token.len() < 64
        || token.len() > 200
        || !token.len().is_multiple_of(2)
        || !token.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(refuse(400, "BadDeviceToken"));
    }
    let Some(topic) = header(headers, "apns-topic") else {
        return Err(refuse(400, "MissingTopic"));
    };
    if !shared.apns_topics.is_empty() && !shared.apns_topics.iter().any(|t| t == topic) {
        return Err(refuse(400, "TopicDisallowed"));
    }
    if let Some(t) = header(headers, "apns-push-type")
        && !PUSH_TYPES.contains(&t)
    {
        return Err(refuse(400, "InvalidPushType"));
    }
    if let Some(p) = header(headers, "apns-priority")
        && !matches!(p, "1" | "5" | "10")
    {
        return Err(refuse(400, "BadPriority"));
    }
    if let Some(e) = header(headers, "apns-expiration")
        && e.parse::<u64>().is_err()
    {
        return Err(refuse(400, "BadExpirationDate"));
    }
    if header(headers, "apns-collapse-id").is_some_and(|c| c.len() > 64) {
        return Err(refuse(400, "BadCollapseId"));
    }
    if let Some(id) = header(headers, "apns-id")
        && !is_uuid(id)
    {
        return Err(refuse(400, "BadMessageId"));
    }
    if body.is_empty() {
        return Err(refuse(400, "PayloadEmpty"));
    }
    if body.len() > MAX_PAYLOAD {
        return Err(refuse(413, "PayloadTooLarge"));
    }
    // APNs wants a JSON dictionary with `aps`; it has no dedicated reason for a
    // malformed one, and answers it as an empty payload.
    let ok = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .is_some_and(|v| v.get("aps").is_some_and(|a| a.is_object()));
    if !ok {
        return Err(refuse(400, "PayloadEmpty"));
    }
    Ok(())
}

fn uuid_for(n: u64) -> String {
    let h = format!(
        "{:032x}",
        (n as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    );
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub(super) async fn push(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let Some(body) = read_body(body).await else {
        shared.record(
            Provider::Apns,
            &path,
            &parts.headers,
            b"",
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("PayloadTooLarge".into()),
        );
        return answer(StatusCode::PAYLOAD_TOO_LARGE, Some("PayloadTooLarge"), None);
    };
    if parts.version != Version::HTTP_2 {
        // APNs speaks HTTP/2 only.
        return (
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "APNs requires HTTP/2",
        )
            .into_response();
    }
    let result = match validate(&shared, &token, &parts.headers, &body) {
        Err(r) => Err(r),
        Ok(()) if shared.state.lock().is_gone(Provider::Apns, &token) => {
            Err(refuse(410, "Unregistered"))
        }
        Ok(()) => match shared.verdict(Provider::Apns).await {
            Verdict::Accept => Ok(()),
            Verdict::Throttle { .. } => Err(refuse(429, "TooManyRequests")),
            Verdict::ServerError => Err(refuse(500, "InternalServerError")),
        },
    };
    let (status, reason) = match result {
        Ok(()) => (StatusCode::OK, None),
        Err(Refusal(status, reason)) => (status, Some(reason)),
    };
    shared.record(
        Provider::Apns,
        &path,
        &parts.headers,
        &body,
        status,
        reason.map(str::to_string),
    );
    let id = match header(&parts.headers, "apns-id") {
        Some(id) => id.to_string(),
        None => uuid_for(shared.state.lock().counts(Provider::Apns).accepted + 1),
    };
    answer(status, reason, Some(id))
}

fn answer(status: StatusCode, reason: Option<&str>, id: Option<String>) -> Response {
    let mut response = match reason {
        None => status.into_response(),
        Some(reason) => {
            let mut body = json!({ "reason": reason });
            if status == StatusCode::GONE {
                let ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                body["timestamp"] = json!(ms);
            }
            super::json(status, body)
        }
    };
    if let Some(id) = id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert("apns-id", id);
    }
    response
}
