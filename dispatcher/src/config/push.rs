//! `[push.apns]`, `[push.fcm]`, `[push.hms]`: the push providers. A platform without a
//! section is served by `delivery.push` (the outbox, or nothing).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns: Option<ApnsSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fcm: Option<FcmSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hms: Option<HmsSection>,
}

/// How a provider's connections are made (the same keys in every section).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApnsSection {
    /// `https://api.push.apple.com`, the sandbox, or a local stand-in.
    #[serde(default = "apns_url")]
    pub url: String,
    /// The `.p8` signing key from Apple's developer account.
    pub key_file: PathBuf,
    /// The key's 10-character id.
    pub key_id: String,
    /// The 10-character team id.
    pub team_id: String,
    /// Topic (bundle id) for devices registered without an `app`.
    #[serde(default)]
    pub topic: Option<String>,
    /// PEM file of the CA to trust instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "connections")]
    pub connections: usize,
    #[serde(default = "max_streams")]
    pub max_streams: usize,
    #[serde(default = "timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FcmSection {
    #[serde(default = "fcm_url")]
    pub url: String,
    /// The service-account key file (JSON) from the Firebase console.
    pub service_account_file: PathBuf,
    /// The Firebase project; the service account's `project_id` when absent.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Overrides the service account's `token_uri`.
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "connections")]
    pub connections: usize,
    #[serde(default = "max_streams")]
    pub max_streams: usize,
    #[serde(default = "timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HmsSection {
    #[serde(default = "hms_url")]
    pub url: String,
    #[serde(default = "hms_token_url")]
    pub token_url: String,
    /// The app messages are sent as; the client id when absent.
    #[serde(default)]
    pub app_id: Option<String>,
    pub client_id: String,
    /// Better given as `OTPD_PUSH__HMS__CLIENT_SECRET` than written in the file.
    pub client_secret: otpd_adapters::Secret,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "connections")]
    pub connections: usize,
    #[serde(default = "max_streams")]
    pub max_streams: usize,
    #[serde(default = "timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl std::fmt::Debug for HmsSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmsSection")
            .field("url", &self.url)
            .field("token_url", &self.token_url)
            .field("app_id", &self.app_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn apns_url() -> String {
    otpd_adapters::apns::client::PRODUCTION_URL.into()
}
fn fcm_url() -> String {
    otpd_adapters::fcm::client::PRODUCTION_URL.into()
}
fn hms_url() -> String {
    otpd_adapters::hms::client::PRODUCTION_URL.into()
}
fn hms_token_url() -> String {
    otpd_adapters::hms::client::PRODUCTION_TOKEN_URL.into()
}
fn connections() -> usize {
    2
}
fn max_streams() -> usize {
    1000
}
fn timeout() -> Duration {
    Duration::from_secs(10)
}

fn check_url(key: String, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(()),
        _ => Err(invalid(key, url, "must be an http:// or https:// URL")),
    }
}

fn check_pool(
    section: &str,
    connections: usize,
    max_streams: usize,
    timeout: Duration,
) -> Result<(), ConfigError> {
    if !(1..=64).contains(&connections) {
        return Err(invalid(
            format!("push.{section}.connections"),
            connections,
            "must be between 1 and 64",
        ));
    }
    if !(1..=100_000).contains(&max_streams) {
        return Err(invalid(
            format!("push.{section}.max_streams"),
            max_streams,
            "must be between 1 and 100000",
        ));
    }
    if timeout < Duration::from_millis(100) {
        return Err(invalid(
            format!("push.{section}.timeout"),
            humantime::format_duration(timeout).to_string(),
            "must be at least 100ms",
        ));
    }
    Ok(())
}

impl PushConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(a) = &self.apns {
            check_url("push.apns.url".into(), &a.url)?;
            check_pool("apns", a.connections, a.max_streams, a.timeout)?;
            for (k, v) in [("key_id", &a.key_id), ("team_id", &a.team_id)] {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(invalid(
                        format!("push.apns.{k}"),
                        v,
                        "must be the id Apple shows (letters and digits)",
                    ));
                }
            }
        }
        if let Some(f) = &self.fcm {
            check_url("push.fcm.url".into(), &f.url)?;
            if let Some(t) = &f.token_url {
                check_url("push.fcm.token_url".into(), t)?;
            }
            check_pool("fcm", f.connections, f.max_streams, f.timeout)?;
        }
        if let Some(h) = &self.hms {
            check_url("push.hms.url".into(), &h.url)?;
            check_url("push.hms.token_url".into(), &h.token_url)?;
            check_pool("hms", h.connections, h.max_streams, h.timeout)?;
            if h.client_id.is_empty() {
                return Err(invalid("push.hms.client_id", "", "must not be empty"));
            }
            if h.client_secret.is_empty() {
                return Err(invalid("push.hms.client_secret", "", "must not be empty"));
            }
        }
        Ok(())
    }
}
