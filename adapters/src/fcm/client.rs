//! The FCM HTTP v1 channel: a cached OAuth2 access token and a pool of HTTP/2
//! connections to `…/v1/projects/{project}/messages:send`.

use async_trait::async_trait;

use super::oauth::{AccountError, Assertions, ServiceAccount};
use super::{build, classify};
use crate::push::bearer::{BearerCache, BearerEndpoint};
use crate::push::http::{self, HttpOptions, HttpPool, SetupError};
use crate::push::{Notification, Outcome, Pusher};

pub const PRODUCTION_URL: &str = "https://fcm.googleapis.com";

#[derive(Debug, Clone)]
pub struct FcmConfig {
    pub base_url: String,
    pub account: ServiceAccount,
    /// The Firebase project; the service account's `project_id` when `None`.
    pub project_id: Option<String>,
    pub http: HttpOptions,
}

pub struct FcmPusher {
    send_path: String,
    project: String,
    assertions: Assertions,
    tokens: reqwest::Client,
    endpoint: BearerEndpoint,
}

impl FcmPusher {
    pub fn new(config: FcmConfig) -> Result<Self, SetupError> {
        let project = config
            .project_id
            .clone()
            .or_else(|| config.account.project_id.clone())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                SetupError::Invalid(
                    "no FCM project: set project_id or use a service account that names one".into(),
                )
            })?;
        let assertions = Assertions::new(config.account)
            .map_err(|e: AccountError| SetupError::Invalid(e.to_string()))?;
        Ok(Self {
            send_path: format!("/v1/projects/{project}/messages:send"),
            project,
            assertions,
            tokens: http::token_client(&config.http)?,
            endpoint: BearerEndpoint {
                provider: "FCM",
                content_type: "application/json",
                pool: HttpPool::new(&config.http, &config.base_url)?,
                cache: BearerCache::default(),
            },
        })
    }
}

#[async_trait]
impl Pusher for FcmPusher {
    fn name(&self) -> &str {
        "fcm"
    }

    async fn push(&self, push: &Notification<'_>, app: &str) -> Outcome {
        let package = (!app.is_empty()).then_some(app);
        let body = match build(push, &self.project, package) {
            Ok((_, body)) => body,
            Err(e) => {
                return Outcome::Fail {
                    reason: e.to_string(),
                };
            }
        };
        self.endpoint
            .send(
                &self.send_path,
                &body,
                || self.assertions.fetch(&self.tokens),
                |a| classify(a.status, a.header("retry-after"), &a.body),
            )
            .await
    }

    async fn shutdown(&self) {
        self.endpoint.pool.close();
    }
}
