//! What a push provider's answer means for otpd, the same for APNs, FCM and HMS:
//! accepted, the device is gone (remove it from the registry), the credentials need
//! renewing, try again later, or failed for good.

pub mod bearer;
pub mod fake;
pub mod http;
pub mod origin;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

/// One push, whatever the provider: to which token, what it says, for which
/// verification, and for how long it is worth delivering. Its `Debug` leaves out the
/// text (it carries the code) and the acknowledgement token.
#[derive(Clone)]
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
    /// Set when the push is an approval request the app answers with its key.
    pub approval: Option<Approval<'a>>,
    /// The secret the app proves it received the push with, when it acknowledges it
    /// (`POST /v1/verifications/{id}/ack`): only the push carries it.
    pub ack_token: Option<&'a str>,
}

impl std::fmt::Debug for Notification<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notification")
            .field("verification_id", &self.verification_id)
            .field("title", &self.title)
            .field(
                "body",
                &format_args!("<{} chars redacted>", self.body.chars().count()),
            )
            .field("expires_at", &self.expires_at)
            .field("approval", &self.approval.is_some())
            .finish_non_exhaustive()
    }
}

/// What an app needs to show an approval request and sign its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Approval<'a> {
    /// The value the answer signs.
    pub challenge: &'a str,
    /// Who asks, as people know them.
    pub requester: &'a str,
    /// What for (the purpose's name).
    pub purpose: &'a str,
}

impl Notification<'_> {
    /// The app-facing data every provider carries beside the visible text.
    pub fn data(&self) -> serde_json::Value {
        let mut data = json!({ "verification_id": self.verification_id });
        if let Some(m) = self.match_code {
            data["match_code"] = json!(m);
        }
        if let Some(t) = self.ack_token {
            data["ack_token"] = json!(t);
        }
        if let Some(a) = self.approval {
            data["kind"] = json!("approval");
            data["challenge"] = json!(a.challenge);
            data["requester"] = json!(a.requester);
            data["purpose"] = json!(a.purpose);
            // FCM takes string values only.
            data["expires_at"] = json!(self.expires_at.to_string());
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

/// Seconds since the Unix epoch: the time JWTs (provider tokens, grant assertions)
/// carry.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `Retry-After` in seconds, when present and well-formed.
pub fn retry_after(header: Option<&str>) -> Option<Duration> {
    header
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A push provider: one notification to one device token of one app.
///
/// The provider's own credentials (APNs provider token, OAuth access tokens) are the
/// adapter's business: a refused credential is renewed and the push tried once more
/// before an answer comes back, so the caller only sees [`Outcome::RenewToken`] when
/// renewing did not help. Retrying [`Outcome::Retry`] is the caller's policy.
#[async_trait]
pub trait Pusher: Send + Sync + 'static {
    /// Short name for metrics and the delivery history (`apns`, `fcm`, `hms`, `file`).
    fn name(&self) -> &str;

    /// Send `push`. `app` is the app the token was registered for (the APNs topic,
    /// the Android package, the HMS app id); empty means the configured default.
    async fn push(&self, push: &Notification<'_>, app: &str) -> Outcome;

    /// Release connections; called once at shutdown.
    async fn shutdown(&self) {}
}

impl Outcome {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted { .. } => "accepted",
            Outcome::RemoveDevice { .. } => "remove_device",
            Outcome::RenewToken { .. } => "renew_token",
            Outcome::Retry { .. } => "retry",
            Outcome::Fail { .. } => "fail",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_code_or_the_ack_token() {
        let n = Notification {
            token: "device-token",
            title: "Cl@ve 427",
            body: "Tu código es 918273",
            verification_id: "vf_1",
            expires_at: 1,
            ttl_secs: 600,
            match_code: Some("427"),
            approval: None,
            ack_token: Some("secret-ack-token"),
        };
        let shown = format!("{n:?} {n:#?}");
        assert!(
            !shown.contains("918273") && !shown.contains("secret-ack"),
            "{shown}"
        );
        assert_eq!(n.data()["ack_token"], "secret-ack-token");
    }
}
