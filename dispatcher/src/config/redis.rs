//! `[redis]`: the shared state of many otpd nodes (with `store.kind = "redis"`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://` for TLS). With `cluster`, any number of
    /// the cluster's nodes: the rest are discovered. A password in a URL is never
    /// shown (printed configurations and errors redact it).
    #[serde(serialize_with = "serialize_urls")]
    pub urls: Vec<String>,
    /// A Redis Cluster rather than one server (with its replicas behind it).
    pub cluster: bool,
    /// Start of every key name, so that several deployments can share a server.
    pub prefix: String,
    /// How many hash-tag partitions verifications are spread over (1 to 16384). Part
    /// of every key name: fixed for the life of a dataset.
    pub partitions: u16,
    /// ACL user and password (else those of the URL, if any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<otpd_adapters::Secret>,
    /// A CA certificate (PEM) to trust for `rediss://`, instead of the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for servers that ask for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// How long one command may take before the request fails (503): bounded so
    /// that an unreachable Redis turns requests away quickly instead of piling them
    /// up.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long making a connection may take.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a delivery job may sit unanswered with one node before another
    /// claims it (the first is presumed dead). Longer than a send can take.
    #[serde(with = "humantime_serde")]
    pub claim_after: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            urls: vec!["redis://127.0.0.1:6379".into()],
            cluster: false,
            prefix: "otpd".into(),
            partitions: 64,
            username: None,
            password: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
            claim_after: Duration::from_secs(30),
        }
    }
}

/// A Redis URL with its password, if any, replaced by `<redacted>`:
/// `redis://user:secret@host:6379` → `redis://user:<redacted>@host:6379`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let user = rest[..at].split(':').next().unwrap_or("");
    format!(
        "{scheme}://{user}:{}{}",
        otpd_adapters::secret::REDACTED,
        &rest[at..]
    )
}

fn serialize_urls<S: serde::Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| redact_url(u)))
}

impl RedisConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let shown: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        if self.urls.is_empty() {
            return Err(invalid("redis.urls", &shown, "at least one URL"));
        }
        if !self.cluster && self.urls.len() > 1 {
            return Err(invalid(
                "redis.urls",
                &shown,
                "one URL without `cluster = true` (replicas are found by the server)",
            ));
        }
        for (i, url) in self.urls.iter().enumerate() {
            let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
            let parsed = redis::parse_redis_url(url).filter(|_| scheme_ok);
            if parsed.is_none() {
                return Err(invalid(
                    format!("redis.urls[{i}]"),
                    redact_url(url),
                    "expected redis://host:port[/db] or rediss://…",
                ));
            }
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 64
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        {
            return Err(invalid(
                "redis.prefix",
                &self.prefix,
                "1 to 64 of A-Z, a-z, 0-9, '_', '-', '.', ':'",
            ));
        }
        if !(1..=16384).contains(&self.partitions) {
            return Err(invalid(
                "redis.partitions",
                self.partitions,
                "must be between 1 and 16384",
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid(
                "redis.tls_cert",
                &self.tls_cert,
                "tls_cert and tls_key go together",
            ));
        }
        for (key, d, min) in [
            ("redis.timeout", self.timeout, Duration::from_millis(1)),
            (
                "redis.connect_timeout",
                self.connect_timeout,
                Duration::from_millis(1),
            ),
        ] {
            if d < min || d > Duration::from_secs(60) {
                return Err(invalid(
                    key,
                    humantime::format_duration(d).to_string(),
                    "must be between 1ms and 60s",
                ));
            }
        }
        if self.claim_after < Duration::from_millis(100)
            || self.claim_after > Duration::from_secs(3600)
        {
            return Err(invalid(
                "redis.claim_after",
                humantime::format_duration(self.claim_after).to_string(),
                "must be between 100ms and 1h",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url("redis://otpd:s3cret@10.0.0.1:6379/0"),
            "redis://otpd:<redacted>@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("rediss://:s3cret@cache.example:6380"),
            "rediss://:<redacted>@cache.example:6380"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        let c = RedisConfig {
            urls: vec!["redis://u:s3cret@h:1".into(), "redis://u:s3cret@h:2".into()],
            ..RedisConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("s3cret"), "{json}");
    }
}
