//! The HMS Push Kit channel: an OAuth2 client-credentials token, cached, and a pool of
//! HTTP/2 connections to `…/v1/{appId}/messages:send`.

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::{build, classify};
use crate::push::bearer::{BearerCache, BearerEndpoint, FetchError, TokenResponse, fetch_token};
use crate::push::http::{self, HttpOptions, HttpPool, SetupError};
use crate::push::{Notification, Outcome, Pusher};

pub const PRODUCTION_URL: &str = "https://push-api.cloud.huawei.com";
pub const PRODUCTION_TOKEN_URL: &str = "https://oauth-login.cloud.huawei.com/oauth2/v3/token";

#[derive(Clone)]
pub struct HmsConfig {
    pub base_url: String,
    pub token_url: String,
    /// The app the messages are sent as (`/v1/{app_id}/…`); usually the client id.
    pub app_id: String,
    pub client_id: String,
    pub client_secret: Zeroizing<String>,
    pub http: HttpOptions,
}

impl std::fmt::Debug for HmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmsConfig")
            .field("base_url", &self.base_url)
            .field("token_url", &self.token_url)
            .field("app_id", &self.app_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

pub struct HmsPusher {
    config: HmsConfig,
    tokens: reqwest::Client,
    endpoint: BearerEndpoint,
}

impl HmsPusher {
    pub fn new(config: HmsConfig) -> Result<Self, SetupError> {
        if config.app_id.is_empty() || config.client_id.is_empty() {
            return Err(SetupError::Invalid(
                "HMS needs an app_id and a client_id".into(),
            ));
        }
        Ok(Self {
            tokens: http::token_client(&config.http)?,
            endpoint: BearerEndpoint {
                provider: "HMS",
                content_type: "application/json;charset=UTF-8",
                pool: HttpPool::new(&config.http, &config.base_url)?,
                cache: BearerCache::default(),
            },
            config,
        })
    }

    async fn fetch_token(&self) -> Result<TokenResponse, FetchError> {
        fetch_token(
            &self.tokens,
            &self.config.token_url,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &self.config.client_id),
                ("client_secret", &self.config.client_secret),
            ],
        )
        .await
    }
}

#[async_trait]
impl Pusher for HmsPusher {
    fn name(&self) -> &str {
        "hms"
    }

    async fn push(&self, push: &Notification<'_>, _app: &str) -> Outcome {
        let (path, body) = match build(push, &self.config.app_id) {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Fail {
                    reason: e.to_string(),
                };
            }
        };
        self.endpoint
            .send(
                &path,
                &body,
                || self.fetch_token(),
                |a| classify(a.status, a.header("retry-after"), &a.body, push.token),
            )
            .await
    }

    async fn shutdown(&self) {
        self.endpoint.pool.close();
    }
}
