//! The FCM HTTP v1 channel: a cached OAuth2 access token and a pool of HTTP/2
//! connections to `…/v1/projects/{project}/messages:send`.

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};

use super::oauth::{AccountError, Assertions, ServiceAccount};
use super::{build, classify};
use crate::push::bearer::BearerCache;
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
    send_url: String,
    project: String,
    assertions: Assertions,
    bearer: BearerCache,
    tokens: reqwest::Client,
    pool: HttpPool,
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
        let base = config.base_url.trim_end_matches('/');
        Ok(Self {
            send_url: format!("{base}/v1/projects/{project}/messages:send"),
            project,
            assertions,
            bearer: BearerCache::default(),
            tokens: http::token_client(&config.http)?,
            pool: HttpPool::new(&config.http)?,
        })
    }

    async fn send_once(&self, body: &[u8]) -> (Outcome, Option<std::sync::Arc<str>>) {
        let bearer = match self
            .bearer
            .get(|| self.assertions.fetch(&self.tokens))
            .await
        {
            Ok(b) => b,
            Err(e) => return (crate::push::bearer::failed("FCM", e), None),
        };
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match HeaderValue::from_str(&bearer) {
            Ok(v) => headers.insert(AUTHORIZATION, v),
            Err(_) => {
                return (
                    Outcome::Fail {
                        reason: "the access token is not a valid header".into(),
                    },
                    None,
                );
            }
        };
        let outcome = match self.pool.post(&self.send_url, headers, body.to_vec()).await {
            Ok(a) => classify(a.status, a.header("retry-after"), &a.body),
            Err(e) => Outcome::Retry {
                reason: format!("FCM unreachable: {e}"),
                after: None,
            },
        };
        (outcome, Some(bearer))
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
        let (outcome, bearer) = self.send_once(&body).await;
        match (&outcome, bearer) {
            (Outcome::RenewToken { .. }, Some(used)) => {
                // The access token expired or was revoked early: one new token, one
                // more try.
                self.bearer.invalidate(&used);
                self.send_once(&body).await.0
            }
            _ => outcome,
        }
    }

    async fn shutdown(&self) {
        self.pool.close();
    }
}
