//! What an APNs answer means for otpd. APNs answers 200 with an `apns-id`, or an
//! error status with `{"reason": "…"}`; the reason decides: the device is gone (remove
//! it from the registry), the provider token needs renewing, try again later, or the
//! push failed for good.

pub use crate::push::Outcome;
use crate::push::retry_after;

pub fn classify(
    status: u16,
    apns_id: Option<&str>,
    retry_after_header: Option<&str>,
    body: &[u8],
) -> Outcome {
    if status == 200 {
        return Outcome::Accepted {
            id: apns_id.map(str::to_string),
        };
    }
    let reason = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_string))
        .unwrap_or_else(|| format!("HTTP {status}"));
    let after = retry_after(retry_after_header);
    match (status, reason.as_str()) {
        (_, "BadDeviceToken" | "Unregistered" | "ExpiredToken" | "DeviceTokenNotForTopic") => {
            Outcome::RemoveDevice { reason }
        }
        (_, "ExpiredProviderToken" | "InvalidProviderToken") => Outcome::RenewToken { reason },
        (_, "TooManyRequests" | "TooManyProviderTokenUpdates" | "IdleTimeout")
        | (500 | 502 | 503 | 504, _)
        | (429, _) => Outcome::Retry { reason, after },
        _ => Outcome::Fail { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reason(r: &str) -> Vec<u8> {
        format!(r#"{{"reason":"{r}"}}"#).into_bytes()
    }

    #[test]
    fn every_documented_reason_has_a_class() {
        assert_eq!(
            classify(200, Some("abc"), None, b""),
            Outcome::Accepted {
                id: Some("abc".into())
            }
        );
        for (status, r) in [
            (400, "BadDeviceToken"),
            (410, "Unregistered"),
            (410, "ExpiredToken"),
            (400, "DeviceTokenNotForTopic"),
        ] {
            assert!(
                matches!(
                    classify(status, None, None, &reason(r)),
                    Outcome::RemoveDevice { .. }
                ),
                "{r}"
            );
        }
        for r in ["ExpiredProviderToken", "InvalidProviderToken"] {
            assert!(
                matches!(
                    classify(403, None, None, &reason(r)),
                    Outcome::RenewToken { .. }
                ),
                "{r}"
            );
        }
        for (status, r) in [
            (429, "TooManyRequests"),
            (429, "TooManyProviderTokenUpdates"),
            (500, "InternalServerError"),
            (503, "ServiceUnavailable"),
            (503, "Shutdown"),
            (400, "IdleTimeout"),
        ] {
            assert!(
                matches!(
                    classify(status, None, None, &reason(r)),
                    Outcome::Retry { .. }
                ),
                "{r}"
            );
        }
        for (status, r) in [
            (400, "BadTopic"),
            (400, "MissingTopic"),
            (400, "BadCollapseId"),
            (400, "BadExpirationDate"),
            (413, "PayloadTooLarge"),
            (403, "BadCertificate"),
            (403, "MissingProviderToken"),
            (400, "TopicDisallowed"),
            (404, "BadPath"),
        ] {
            assert!(
                matches!(
                    classify(status, None, None, &reason(r)),
                    Outcome::Fail { .. }
                ),
                "{r}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_and_odd_bodies_still_classify() {
        assert_eq!(
            classify(429, None, Some("7"), &reason("TooManyRequests")),
            Outcome::Retry {
                reason: "TooManyRequests".into(),
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify(503, None, None, b"<html>"),
            Outcome::Retry {
                reason: "HTTP 503".into(),
                after: None
            }
        );
        assert_eq!(
            classify(418, None, None, b""),
            Outcome::Fail {
                reason: "HTTP 418".into()
            }
        );
    }
}
