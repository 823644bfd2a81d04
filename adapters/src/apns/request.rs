//! One APNs request: `POST /3/device/{token}` with the `apns-*` headers and a JSON
//! payload. Pure: the HTTP/2 client only sends what this builds.

use serde_json::json;

use crate::push::Notification;

/// APNs refuses payloads over 4 KiB (`PayloadTooLarge`); checked before sending.
pub const MAX_PAYLOAD: usize = 4096;

/// Its `Debug` shows the body's size only: the payload carries the code.
#[derive(Clone, PartialEq, Eq)]
pub struct ApnsRequest {
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for ApnsRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsRequest")
            .field("path", &self.path)
            .field("headers", &self.headers)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("the APNs payload is {0} bytes; APNs accepts at most 4096")]
    PayloadTooLarge(usize),
    #[error("the collapse id is longer than APNs' 64 bytes")]
    CollapseIdTooLong,
}

/// The request for `push`; `topic` is the app's bundle id.
pub fn build(push: &Notification<'_>, topic: &str) -> Result<ApnsRequest, RequestError> {
    if push.verification_id.len() > 64 {
        return Err(RequestError::CollapseIdTooLong);
    }
    let payload = json!({
        "aps": {
            "alert": { "title": push.title, "body": push.body },
            // A code the person is waiting for: shown even in Focus modes that allow it.
            "interruption-level": "time-sensitive",
        },
        "otpd": push.data(),
    });
    let body = serde_json::to_vec(&payload).expect("JSON serializes");
    if body.len() > MAX_PAYLOAD {
        return Err(RequestError::PayloadTooLarge(body.len()));
    }
    Ok(ApnsRequest {
        path: format!("/3/device/{}", push.token),
        headers: vec![
            ("apns-push-type", "alert".into()),
            ("apns-priority", "10".into()),
            ("apns-expiration", push.expires_at.max(0).to_string()),
            // A resend replaces the earlier notification instead of stacking.
            ("apns-collapse-id", push.verification_id.into()),
            ("apns-topic", topic.into()),
        ],
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(body: &str) -> Notification<'_> {
        Notification {
            token: "a1b2",
            title: "Cl@ve",
            body,
            verification_id: "vf_0123456789abcdef0123456789abcdef",
            expires_at: 1_795_435_800,
            ttl_secs: 600,
            match_code: Some("427"),
            approval: None,
            ack_token: None,
        }
    }

    #[test]
    fn path_headers_and_payload() {
        let r = build(&push("042317 es tu código"), "es.gob.clave").unwrap();
        assert!(
            !format!("{r:?}").contains("042317"),
            "Debug hides the payload"
        );
        assert_eq!(r.path, "/3/device/a1b2");
        let h = |name: &str| {
            r.headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(h("apns-push-type"), Some("alert"));
        assert_eq!(h("apns-priority"), Some("10"));
        assert_eq!(h("apns-expiration"), Some("1795435800"));
        assert_eq!(
            h("apns-collapse-id"),
            Some("vf_0123456789abcdef0123456789abcdef")
        );
        assert_eq!(h("apns-topic"), Some("es.gob.clave"));
        let payload: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(payload["aps"]["alert"]["body"], "042317 es tu código");
        assert_eq!(payload["aps"]["interruption-level"], "time-sensitive");
        assert_eq!(payload["otpd"]["match_code"], "427");
    }

    #[test]
    fn oversized_payloads_are_refused_before_sending() {
        let long = "x".repeat(5000);
        assert!(
            matches!(build(&push(&long), "t"), Err(RequestError::PayloadTooLarge(n)) if n > 4096)
        );
        let mut p = push("x");
        let long_id = "v".repeat(65);
        p.verification_id = &long_id;
        assert_eq!(build(&p, "t"), Err(RequestError::CollapseIdTooLong));
    }
}
