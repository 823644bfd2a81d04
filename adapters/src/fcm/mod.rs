//! Firebase Cloud Messaging HTTP v1: the request for one push and what an answer
//! means (pure; the OAuth token and the HTTP/2 client sit on top).

pub mod client;
pub mod oauth;

pub use client::{FcmConfig, FcmPusher};
pub use oauth::ServiceAccount;

use serde_json::json;

use crate::push::{Notification, Outcome, retry_after};

/// FCM refuses messages over 4 KiB.
pub const MAX_MESSAGE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the FCM message is {0} bytes; FCM accepts at most 4096")]
pub struct MessageTooLarge(pub usize);

/// `(path, JSON body)` of `POST /v1/projects/{project}/messages:send`; `package` is
/// the Android package the token must belong to.
pub fn build(
    push: &Notification<'_>,
    project: &str,
    package: Option<&str>,
) -> Result<(String, Vec<u8>), MessageTooLarge> {
    let mut android = json!({
        "priority": "HIGH",
        "ttl": format!("{}s", push.ttl_secs),
        // A resend replaces the earlier notification on the device.
        "collapse_key": push.verification_id,
    });
    if let Some(p) = package {
        android["restricted_package_name"] = json!(p);
    }
    let body = serde_json::to_vec(&json!({
        "message": {
            "token": push.token,
            "notification": { "title": push.title, "body": push.body },
            "data": push.data(),
            "android": android,
        }
    }))
    .expect("JSON serializes");
    if body.len() > MAX_MESSAGE {
        return Err(MessageTooLarge(body.len()));
    }
    Ok((format!("/v1/projects/{project}/messages:send"), body))
}

/// Classify an answer by HTTP status and `error.details[].errorCode`.
pub fn classify(status: u16, retry_after_header: Option<&str>, body: &[u8]) -> Outcome {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if status == 200 {
        return Outcome::Accepted {
            id: json["name"].as_str().map(str::to_string),
        };
    }
    let error = &json["error"];
    let code = error["details"]
        .as_array()
        .and_then(|d| d.iter().find_map(|x| x["errorCode"].as_str()))
        .or_else(|| error["status"].as_str())
        .unwrap_or("")
        .to_string();
    let message = error["message"].as_str().unwrap_or("").to_string();
    let reason = if code.is_empty() {
        format!("HTTP {status}")
    } else {
        code.clone()
    };
    let after = retry_after(retry_after_header);
    match (status, code.as_str()) {
        (_, "UNREGISTERED" | "SENDER_ID_MISMATCH") => Outcome::RemoveDevice { reason },
        // INVALID_ARGUMENT covers many mistakes; only a bad token means the device.
        (_, "INVALID_ARGUMENT") if message.contains("registration token") => {
            Outcome::RemoveDevice { reason }
        }
        (401, _) | (_, "UNAUTHENTICATED") => Outcome::RenewToken { reason },
        (_, "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL") | (429 | 500 | 502 | 503 | 504, _) => {
            Outcome::Retry { reason, after }
        }
        _ => Outcome::Fail {
            reason: if message.is_empty() {
                reason
            } else {
                format!("{reason}: {message}")
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn error(status: u16, error_code: &str, message: &str) -> Vec<u8> {
        json!({"error": {"code": status, "message": message, "status": "X",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}]}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn the_request_is_a_high_priority_message_living_as_long_as_the_code() {
        let push = Notification {
            token: "tok",
            title: "Cl@ve",
            body: "042317 es tu código",
            verification_id: "vf_1",
            expires_at: 0,
            ttl_secs: 540,
            match_code: Some("427"),
            approval: None,
            ack_token: None,
        };
        let (path, body) = build(&push, "clave-prod", Some("es.gob.clave")).unwrap();
        assert_eq!(path, "/v1/projects/clave-prod/messages:send");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let m = &v["message"];
        assert_eq!(m["token"], "tok");
        assert_eq!(m["android"]["priority"], "HIGH");
        assert_eq!(m["android"]["ttl"], "540s");
        assert_eq!(m["android"]["restricted_package_name"], "es.gob.clave");
        assert_eq!(m["data"]["match_code"], "427");
        assert_eq!(m["notification"]["body"], "042317 es tu código");
    }

    #[test]
    fn answers_are_classified_by_error_code() {
        assert_eq!(
            classify(200, None, br#"{"name":"projects/p/messages/123"}"#),
            Outcome::Accepted {
                id: Some("projects/p/messages/123".into())
            }
        );
        assert!(matches!(
            classify(404, None, &error(404, "UNREGISTERED", "")),
            Outcome::RemoveDevice { .. }
        ));
        assert!(matches!(
            classify(403, None, &error(403, "SENDER_ID_MISMATCH", "")),
            Outcome::RemoveDevice { .. }
        ));
        assert!(matches!(
            classify(
                400,
                None,
                &error(
                    400,
                    "INVALID_ARGUMENT",
                    "The registration token is not a valid FCM registration token"
                )
            ),
            Outcome::RemoveDevice { .. }
        ));
        assert!(matches!(
            classify(400, None, &error(400, "INVALID_ARGUMENT", "Invalid TTL")),
            Outcome::Fail { .. }
        ));
        assert_eq!(
            classify(429, Some("30"), &error(429, "QUOTA_EXCEEDED", "")),
            Outcome::Retry {
                reason: "QUOTA_EXCEEDED".into(),
                after: Some(Duration::from_secs(30))
            }
        );
        assert!(matches!(
            classify(503, None, &error(503, "UNAVAILABLE", "")),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(500, None, &error(500, "INTERNAL", "")),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(401, None, b"{}"),
            Outcome::RenewToken { .. }
        ));
        assert!(matches!(
            classify(401, None, &error(401, "THIRD_PARTY_AUTH_ERROR", "")),
            Outcome::RenewToken { .. }
        ));
        assert!(matches!(
            classify(502, None, b"<html>"),
            Outcome::Retry { .. }
        ));
    }
}
