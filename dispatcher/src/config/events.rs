//! `[webhooks]` and `[audit]`: how clients' events leave otpd, how long they are
//! kept, and the trail of everything that happened.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// `[webhooks]`: how every client's webhook is called. A client has one when its
/// `[[clients]]` entry names `webhook_url` and `webhook_secret`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// One attempt's limit, connecting included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long after it happened an event is still tried; after that it is given
    /// up and counted in `otpd_webhook_dead_total`. Events are kept this long for
    /// `GET /v1/events` too.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    /// The wait after an event's first failure; it doubles with each failure after
    /// (each wait a random point in its upper half).
    #[serde(with = "humantime_serde")]
    pub first_retry: Duration,
    /// The longest wait between two attempts of one event.
    #[serde(with = "humantime_serde")]
    pub max_retry: Duration,
    /// Requests out at once to one client's receiver.
    pub concurrency: usize,
    /// Events kept per client at most; past it the oldest go (counted in
    /// `otpd_webhook_dropped_total` when they were not delivered).
    pub keep: usize,
    /// Speak HTTP/2 to `http://` receivers without asking first (prior knowledge),
    /// for receivers known to take it: many events share one connection and its
    /// writes. `https://` receivers negotiate HTTP/2 when they offer it, whatever
    /// this says.
    pub h2c: bool,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(24 * 3600),
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(3600),
            concurrency: 32,
            keep: 1_000_000,
            h2c: false,
        }
    }
}

impl WebhooksConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let d = |v: Duration| humantime::format_duration(v).to_string();
        if self.timeout < Duration::from_millis(10) || self.timeout > Duration::from_secs(300) {
            return Err(invalid(
                "webhooks.timeout",
                d(self.timeout),
                "must be between 10ms and 5m",
            ));
        }
        if self.first_retry < Duration::from_millis(10) {
            return Err(invalid(
                "webhooks.first_retry",
                d(self.first_retry),
                "must be at least 10ms",
            ));
        }
        if self.max_retry < self.first_retry {
            return Err(invalid(
                "webhooks.max_retry",
                d(self.max_retry),
                "must not be shorter than webhooks.first_retry",
            ));
        }
        if self.retry_for < Duration::from_secs(1)
            || self.retry_for > Duration::from_secs(30 * 86_400)
        {
            return Err(invalid(
                "webhooks.retry_for",
                d(self.retry_for),
                "must be between 1s and 30 days",
            ));
        }
        if !(1..=4096).contains(&self.concurrency) {
            return Err(invalid(
                "webhooks.concurrency",
                self.concurrency,
                "must be between 1 and 4096",
            ));
        }
        if !(1..=100_000_000).contains(&self.keep) {
            return Err(invalid(
                "webhooks.keep",
                self.keep,
                "must be between 1 and 100000000",
            ));
        }
        Ok(())
    }
}

/// `[audit]`: the hash-chained trail of every event and admin action, on this
/// node's disk. Off unless `path` is given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The directory of the trail's files (`audit-<ms>.jsonl`); absent: no trail.
    pub path: Option<std::path::PathBuf>,
    /// The Ed25519 key (base64 of its 32-byte seed) that signs the checkpoints;
    /// `otpd audit keygen` makes one. Required with `path`.
    pub signing_key: Option<crate::secrets::audit_key::AuditKey>,
    /// A checkpoint after this many records…
    pub checkpoint_every: u64,
    /// …or this long after the last one, whichever comes first.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// A new file this often (and at each start).
    #[serde(with = "humantime_serde")]
    pub rotate_every: Duration,
    /// Files whose records are all older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: None,
            signing_key: None,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            rotate_every: Duration::from_secs(86_400),
            retention: Duration::from_secs(365 * 86_400),
        }
    }
}

impl AuditConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let d = |v: Duration| humantime::format_duration(v).to_string();
        if self.path.is_some() && self.signing_key.is_none() {
            return Err(invalid(
                "audit.signing_key",
                "",
                "required with audit.path: `otpd audit keygen` makes one",
            ));
        }
        if self.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(invalid("audit.path", "", "must not be empty"));
        }
        if !(1..=1_000_000).contains(&self.checkpoint_every) {
            return Err(invalid(
                "audit.checkpoint_every",
                self.checkpoint_every,
                "must be between 1 and 1000000",
            ));
        }
        if self.checkpoint_interval < Duration::from_millis(100) {
            return Err(invalid(
                "audit.checkpoint_interval",
                d(self.checkpoint_interval),
                "must be at least 100ms",
            ));
        }
        if self.rotate_every < Duration::from_secs(1) {
            return Err(invalid(
                "audit.rotate_every",
                d(self.rotate_every),
                "must be at least 1s",
            ));
        }
        if self.retention < self.rotate_every {
            return Err(invalid(
                "audit.retention",
                d(self.retention),
                "must not be shorter than audit.rotate_every",
            ));
        }
        Ok(())
    }
}

/// A client's `webhook_url` (at `key`): an absolute `http` or `https` URL with a
/// host, given with a secret to sign with.
pub(super) fn validate_webhook(
    key: &str,
    url: Option<&str>,
    has_secret: bool,
) -> Result<(), ConfigError> {
    let secret_key = key.replace("webhook_url", "webhook_secret");
    let Some(url) = url else {
        if has_secret {
            return Err(invalid(
                secret_key,
                "whsec_…",
                "given without a webhook_url",
            ));
        }
        return Ok(());
    };
    let uri: http::Uri = url.parse().map_err(|_| invalid(key, url, "not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(invalid(key, url, "must start with http:// or https://"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid(key, url, "names no host"));
    }
    if !has_secret {
        return Err(invalid(
            secret_key,
            "",
            "required with webhook_url: `whsec_` and 24 to 64 random bytes in base64",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_needs_an_http_url_with_a_host_and_a_secret() {
        let k = "clients[0].webhook_url";
        assert!(validate_webhook(k, None, false).is_ok());
        assert!(validate_webhook(k, Some("https://sede.example/otpd"), true).is_ok());
        assert!(validate_webhook(k, Some("http://127.0.0.1:9000/h"), true).is_ok());
        let err = |u: Option<&str>, s: bool| validate_webhook(k, u, s).unwrap_err().to_string();
        assert!(err(Some("ftp://x/"), true).contains("http://"));
        assert!(err(Some("not a url"), true).contains("not a URL"));
        assert!(err(Some("/relative"), true).contains("http"));
        assert!(err(Some("https://sede.example/"), false).contains("webhook_secret"));
        assert!(err(None, true).contains("webhook_secret"));
    }

    #[test]
    fn the_defaults_are_valid_and_nonsense_is_named() {
        assert!(WebhooksConfig::default().validate().is_ok());
        let bad = WebhooksConfig {
            max_retry: Duration::from_secs(1),
            ..WebhooksConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("webhooks.max_retry")
        );
    }
}
