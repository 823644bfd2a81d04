//! The APNs channel: provider-token authentication over a pool of HTTP/2 connections.

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::request;
use super::response::classify;
use super::token::ProviderToken;
use crate::push::http::{HttpOptions, HttpPool, SetupError};
use crate::push::{Notification, Outcome, Pusher, now_secs};

/// Apple's production endpoint; the sandbox is `https://api.sandbox.push.apple.com`.
pub const PRODUCTION_URL: &str = "https://api.push.apple.com";

#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// Scheme, host and port, no path (`https://api.push.apple.com`).
    pub base_url: String,
    /// The `.p8` signing key (PEM, PKCS#8).
    pub key_pem: Vec<u8>,
    pub key_id: String,
    pub team_id: String,
    /// Topic (bundle id) for devices registered without an app.
    pub default_topic: Option<String>,
    pub http: HttpOptions,
}

/// Seconds since the epoch; replaceable so that tests can age the provider token.
pub type SecondsClock = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

pub struct ApnsPusher {
    clock: SecondsClock,
    token: ProviderToken,
    default_topic: Option<String>,
    pool: HttpPool,
}

impl ApnsPusher {
    pub fn new(config: ApnsConfig) -> Result<Self, SetupError> {
        let token = ProviderToken::new(&config.key_pem, &config.key_id, &config.team_id)
            .map_err(|e| SetupError::Invalid(e.to_string()))?;
        // Sign once now, so that a key that cannot sign fails at start, not per push.
        token
            .get(now_secs())
            .map_err(|e| SetupError::Invalid(e.to_string()))?;
        Ok(Self {
            clock: std::sync::Arc::new(now_secs),
            token,
            default_topic: config.default_topic,
            pool: HttpPool::new(&config.http, &config.base_url)?,
        })
    }

    /// Use `clock` for the provider token's times instead of the system clock.
    pub fn with_clock(mut self, clock: SecondsClock) -> Self {
        self.clock = clock;
        self
    }

    async fn send_once(&self, req: &request::ApnsRequest, jwt: &str) -> Outcome {
        let mut headers = HeaderMap::with_capacity(req.headers.len() + 2);
        for (name, value) in &req.headers {
            let Ok(value) = HeaderValue::from_str(value) else {
                return Outcome::Fail {
                    reason: format!("the {name} header is not valid"),
                };
            };
            headers.insert(HeaderName::from_static(name), value);
        }
        match HeaderValue::from_str(&format!("bearer {jwt}")) {
            Ok(v) => headers.insert(AUTHORIZATION, v),
            Err(_) => {
                return Outcome::Fail {
                    reason: "the provider token is not a valid header".into(),
                };
            }
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self
            .pool
            .post(&req.path, headers, Bytes::copy_from_slice(&req.body))
            .await
        {
            Ok(answer) => classify(
                answer.status,
                answer.header("apns-id"),
                answer.header("retry-after"),
                &answer.body,
            ),
            Err(e) => Outcome::Retry {
                reason: format!("APNs unreachable: {e}"),
                after: None,
            },
        }
    }
}

#[async_trait]
impl Pusher for ApnsPusher {
    fn name(&self) -> &str {
        "apns"
    }

    async fn push(&self, push: &Notification<'_>, app: &str) -> Outcome {
        let topic = match (app, &self.default_topic) {
            ("", Some(t)) => t.as_str(),
            ("", None) => {
                return Outcome::Fail {
                    reason: "the device has no app (topic) and no default topic is configured"
                        .into(),
                };
            }
            (app, _) => app,
        };
        let req = match request::build(push, topic) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Fail {
                    reason: e.to_string(),
                };
            }
        };
        let now = (self.clock)();
        let jwt = match self.token.get(now) {
            Ok(t) => t,
            Err(e) => {
                return Outcome::Fail {
                    reason: e.to_string(),
                };
            }
        };
        let outcome = self.send_once(&req, &jwt).await;
        let Outcome::RenewToken { .. } = &outcome else {
            return outcome;
        };
        // One renewal and one more try; APNs limits how often a token may change,
        // which `renew` respects (it refuses, and the refusal is the answer).
        match self.token.renew(now) {
            Ok(true) => match self.token.get(now) {
                Ok(jwt) => self.send_once(&req, &jwt).await,
                Err(e) => Outcome::Fail {
                    reason: e.to_string(),
                },
            },
            Ok(false) => outcome,
            Err(e) => Outcome::Fail {
                reason: e.to_string(),
            },
        }
    }

    async fn shutdown(&self) {
        self.pool.close();
    }
}
