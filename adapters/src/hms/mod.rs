//! Huawei HMS Push Kit (v1 API): the request for one push and what an answer means
//! (pure; the client-credentials token and the HTTP client sit on top).

pub mod client;

pub use client::{HmsConfig, HmsPusher};

use serde_json::json;

use crate::push::{Notification, Outcome, retry_after};

/// HMS refuses bodies over 4 KiB (tokens excluded; one token here).
pub const MAX_BODY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the HMS message is {0} bytes; HMS accepts at most 4096")]
pub struct MessageTooLarge(pub usize);

/// `(path, JSON body)` of `POST /v1/{app_id}/messages:send`.
pub fn build(push: &Notification<'_>, app_id: &str) -> Result<(String, Vec<u8>), MessageTooLarge> {
    let body = serde_json::to_vec(&json!({
        "validate_only": false,
        "message": {
            "token": [push.token],
            // HMS wants `data` as a string.
            "data": push.data().to_string(),
            "android": {
                "urgency": "HIGH",
                "ttl": format!("{}s", push.ttl_secs),
                "notification": {
                    "title": push.title,
                    "body": push.body,
                    // 3: open the app.
                    "click_action": { "type": 3 },
                },
            },
        }
    }))
    .expect("JSON serializes");
    if body.len() > MAX_BODY {
        return Err(MessageTooLarge(body.len()));
    }
    Ok((format!("/v1/{app_id}/messages:send"), body))
}

/// Classify an answer by its result `code` (and HTTP status for flow control).
pub fn classify(
    status: u16,
    retry_after_header: Option<&str>,
    body: &[u8],
    token: &str,
) -> Outcome {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = json["code"].as_str().unwrap_or("").to_string();
    let msg = json["msg"].as_str().unwrap_or("").to_string();
    let after = retry_after(retry_after_header);
    let reason = if code.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("{code} {msg}").trim().to_string()
    };
    match code.as_str() {
        "80000000" => Outcome::Accepted {
            id: json["requestId"].as_str().map(str::to_string),
        },
        // Partial success: `msg` is JSON text listing the illegal tokens.
        "80100000" => {
            let illegal = serde_json::from_str::<serde_json::Value>(&msg)
                .ok()
                .and_then(|m| m["illegal_tokens"].as_array().cloned())
                .unwrap_or_default();
            if illegal.iter().any(|t| t.as_str() == Some(token)) {
                Outcome::RemoveDevice { reason }
            } else {
                Outcome::Accepted {
                    id: json["requestId"].as_str().map(str::to_string),
                }
            }
        }
        "80300007" => Outcome::RemoveDevice { reason },
        "80200001" | "80200003" | "80200005" => Outcome::RenewToken { reason },
        "81000001" | "80100017" => Outcome::Retry { reason, after },
        _ if matches!(status, 500 | 502 | 503 | 504) => Outcome::Retry { reason, after },
        _ => Outcome::Fail { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: &str, msg: &str) -> Vec<u8> {
        json!({"code": code, "msg": msg, "requestId": "r1"})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn the_request_follows_the_v1_api() {
        let push = Notification {
            token: "IQAAAACy",
            title: "Cl@ve",
            body: "042317 es tu código",
            verification_id: "vf_1",
            expires_at: 0,
            ttl_secs: 540,
            match_code: None,
            approval: None,
            ack_token: None,
        };
        let (path, body) = build(&push, "103456789").unwrap();
        assert_eq!(path, "/v1/103456789/messages:send");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["message"]["token"][0], "IQAAAACy");
        assert!(v["message"]["data"].is_string(), "HMS data is a string");
        assert_eq!(v["message"]["android"]["urgency"], "HIGH");
        assert_eq!(v["message"]["android"]["ttl"], "540s");
        assert_eq!(
            v["message"]["android"]["notification"]["click_action"]["type"],
            3
        );
    }

    #[test]
    fn result_codes_are_classified() {
        assert_eq!(
            classify(200, None, &answer("80000000", "Success"), "t"),
            Outcome::Accepted {
                id: Some("r1".into())
            }
        );
        assert!(matches!(
            classify(
                200,
                None,
                &answer("80300007", "All the tokens are invalid"),
                "t"
            ),
            Outcome::RemoveDevice { .. }
        ));
        let partial = answer(
            "80100000",
            r#"{"success":0,"failure":1,"illegal_tokens":["t"]}"#,
        );
        assert!(matches!(
            classify(200, None, &partial, "t"),
            Outcome::RemoveDevice { .. }
        ));
        assert!(matches!(
            classify(200, None, &partial, "other"),
            Outcome::Accepted { .. }
        ));
        for code in ["80200001", "80200003", "80200005"] {
            assert!(
                matches!(
                    classify(401, None, &answer(code, ""), "t"),
                    Outcome::RenewToken { .. }
                ),
                "{code}"
            );
        }
        assert!(matches!(
            classify(500, None, &answer("81000001", "Internal error"), "t"),
            Outcome::Retry { .. }
        ));
        assert!(
            matches!(
                classify(503, Some("2"), b"", "t"),
                Outcome::Retry { after: Some(_), .. }
            ),
            "flow control"
        );
        assert!(matches!(
            classify(400, None, &answer("80300008", "too big"), "t"),
            Outcome::Fail { .. }
        ));
        assert!(matches!(
            classify(400, None, &answer("80300002", "no permission"), "t"),
            Outcome::Fail { .. }
        ));
    }
}
