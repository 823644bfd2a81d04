//! What a push provider's answer means for otpd, the same for APNs, FCM and HMS:
//! accepted, the device is gone (remove it from the registry), the credentials need
//! renewing, try again later, or failed for good.

use std::time::Duration;

use serde_json::json;

/// One push, whatever the provider: to which token, what it says, for which
/// verification, and for how long it is worth delivering.
#[derive(Debug, Clone)]
pub struct Notification<'a> {
    pub token: &'a str,
    pub title: &'a str,
    /// The text shown (it carries the code, as an SMS would).
    pub body: &'a str,
    pub verification_id: &'a str,
    /// When the code expires (seconds since the epoch).
    pub expires_at: i64,
    /// Seconds of validity left: the provider drops the message after.
    pub ttl_secs: u64,
    /// The short number also shown on the requesting screen, when there is one.
    pub match_code: Option<&'a str>,
}

impl Notification<'_> {
    /// The app-facing data every provider carries beside the visible text.
    pub fn data(&self) -> serde_json::Value {
        let mut data = json!({ "verification_id": self.verification_id });
        if let Some(m) = self.match_code {
            data["match_code"] = json!(m);
        }
        data
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken by the provider, with its id for the message when it gives one.
    Accepted { id: Option<String> },
    /// The token no longer reaches the app (uninstalled, another app or sender):
    /// remove the device.
    RemoveDevice { reason: String },
    /// The provider token / access token was refused: renew it, then retry.
    RenewToken { reason: String },
    /// Temporary: retry after the given time, or with backoff.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Will not succeed as it is (bad request, configuration).
    Fail { reason: String },
}

/// `Retry-After` in seconds, when present and well-formed.
pub fn retry_after(header: Option<&str>) -> Option<Duration> {
    header
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}
