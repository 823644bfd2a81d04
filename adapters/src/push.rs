//! What a push provider's answer means for otpd, the same for APNs, FCM and HMS:
//! accepted, the device is gone (remove it from the registry), the credentials need
//! renewing, try again later, or failed for good.

use std::time::Duration;

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
