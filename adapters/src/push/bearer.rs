//! An OAuth2 access token, cached until shortly before it expires, fetched by one
//! caller at a time (the others wait for that fetch instead of each asking the token
//! endpoint), and dropped when the provider calls it invalid.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::RwLock;
use serde::Deserialize;

/// What token endpoints answer (RFC 6749 §5.1).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
}

fn default_expires_in() -> u64 {
    3600
}

/// Renew when this share of the lifetime is left, at least a minute before expiry.
fn renew_after(lifetime: Duration) -> Duration {
    let margin = (lifetime / 10).max(Duration::from_secs(60));
    lifetime.saturating_sub(margin)
}

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct FetchError {
    pub reason: String,
    /// The endpoint refused the credentials (4xx): asking again will not help.
    pub permanent: bool,
}

impl FetchError {
    pub fn temporary(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            permanent: false,
        }
    }
}

/// POST `form` to a token endpoint and read its answer.
pub async fn fetch_token(
    client: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Result<TokenResponse, FetchError> {
    let response = client
        .post(url)
        .form(form)
        .send()
        .await
        .map_err(|e| FetchError::temporary(crate::push::http::describe(e)))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| FetchError::temporary(crate::push::http::describe(e)))?;
    if !status.is_success() {
        return Err(FetchError {
            reason: format!(
                "the token endpoint answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
            permanent: status.is_client_error() && status.as_u16() != 429,
        });
    }
    serde_json::from_slice(&body)
        .map_err(|e| FetchError::temporary(format!("the token endpoint's answer: {e}")))
}

/// A provider endpoint reached with an OAuth2 bearer token (FCM, HMS): POST over the
/// pool, classify the answer, and when the provider refuses the token, forget it,
/// fetch another and try once more.
pub struct BearerEndpoint {
    /// For error texts (`FCM`, `HMS`).
    pub provider: &'static str,
    pub content_type: &'static str,
    pub pool: crate::push::http::HttpPool,
    pub cache: BearerCache,
}

impl BearerEndpoint {
    pub async fn send<F, Fut>(
        &self,
        path: &str,
        body: &[u8],
        fetch: F,
        classify: impl Fn(&crate::push::http::Answer) -> crate::push::Outcome,
    ) -> crate::push::Outcome
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<TokenResponse, FetchError>>,
    {
        let (outcome, used) = self.send_once(path, body, &fetch, &classify).await;
        match (&outcome, used) {
            (crate::push::Outcome::RenewToken { .. }, Some(used)) => {
                self.cache.invalidate(&used);
                self.send_once(path, body, &fetch, &classify).await.0
            }
            _ => outcome,
        }
    }

    async fn send_once<F, Fut>(
        &self,
        path: &str,
        body: &[u8],
        fetch: &F,
        classify: &impl Fn(&crate::push::http::Answer) -> crate::push::Outcome,
    ) -> (crate::push::Outcome, Option<Arc<str>>)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<TokenResponse, FetchError>>,
    {
        use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
        let bearer = match self.cache.get(fetch).await {
            Ok(b) => b,
            Err(e) => return (failed(self.provider, e), None),
        };
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        let Ok(value) = HeaderValue::from_str(&bearer) else {
            let reason = "the access token is not a valid header".to_string();
            return (crate::push::Outcome::Fail { reason }, None);
        };
        headers.insert(AUTHORIZATION, value);
        let outcome = match self
            .pool
            .post(path, headers, bytes::Bytes::copy_from_slice(body))
            .await
        {
            Ok(answer) => classify(&answer),
            Err(e) => crate::push::Outcome::Retry {
                reason: format!("{} unreachable: {e}", self.provider),
                after: None,
            },
        };
        (outcome, Some(bearer))
    }
}

/// What a push gets when its provider's access token could not be had.
pub fn failed(provider: &str, e: FetchError) -> crate::push::Outcome {
    let reason = format!("no {provider} access token: {}", e.reason);
    if e.permanent {
        crate::push::Outcome::Fail { reason }
    } else {
        crate::push::Outcome::Retry {
            reason,
            after: None,
        }
    }
}

struct Current {
    /// The whole header value, `Bearer …`.
    header: Arc<str>,
    renew_at: Instant,
}

#[derive(Default)]
pub struct BearerCache {
    current: RwLock<Option<Current>>,
    fetching: tokio::sync::Mutex<()>,
}

impl BearerCache {
    /// The `authorization` header value, fetching a token with `fetch` when there is
    /// none or it is near its end.
    pub async fn get<F, Fut>(&self, fetch: &F) -> Result<Arc<str>, FetchError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<TokenResponse, FetchError>>,
    {
        if let Some(h) = self.fresh() {
            return Ok(h);
        }
        let _one = self.fetching.lock().await;
        // Someone else may have fetched while this caller waited.
        if let Some(h) = self.fresh() {
            return Ok(h);
        }
        let token = fetch().await?;
        if token.access_token.is_empty() {
            return Err(FetchError::temporary(
                "the token endpoint answered an empty access_token",
            ));
        }
        let header: Arc<str> = format!("Bearer {}", token.access_token).into();
        *self.current.write() = Some(Current {
            header: header.clone(),
            renew_at: Instant::now() + renew_after(Duration::from_secs(token.expires_in)),
        });
        Ok(header)
    }

    fn fresh(&self) -> Option<Arc<str>> {
        let current = self.current.read();
        current
            .as_ref()
            .filter(|c| Instant::now() < c.renew_at)
            .map(|c| c.header.clone())
    }

    /// The provider refused `header`: forget it (unless it was replaced already).
    pub fn invalidate(&self, header: &str) {
        let mut current = self.current.write();
        if current.as_ref().is_some_and(|c| &*c.header == header) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn token(value: &str, expires_in: u64) -> Result<TokenResponse, FetchError> {
        Ok(TokenResponse {
            access_token: value.into(),
            expires_in,
        })
    }

    #[tokio::test]
    async fn cached_until_near_expiry_and_dropped_when_refused() {
        let cache = BearerCache::default();
        let fetches = AtomicUsize::new(0);
        let fetch = |v: &'static str, e: u64| {
            fetches.fetch_add(1, Ordering::SeqCst);
            async move { token(v, e) }
        };
        assert_eq!(&*cache.get(&|| fetch("a", 3600)).await.unwrap(), "Bearer a");
        assert_eq!(&*cache.get(&|| fetch("b", 3600)).await.unwrap(), "Bearer a");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        cache.invalidate("Bearer other");
        assert_eq!(&*cache.get(&|| fetch("b", 3600)).await.unwrap(), "Bearer a");
        cache.invalidate("Bearer a");
        assert_eq!(&*cache.get(&|| fetch("b", 30)).await.unwrap(), "Bearer b");
        // 30 s of life is inside the one-minute margin: the next call fetches again.
        assert_eq!(&*cache.get(&|| fetch("c", 3600)).await.unwrap(), "Bearer c");
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let cache = Arc::new(BearerCache::default());
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(&|| {
                        let fetches = fetches.clone();
                        async move {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            token("shared", 3600)
                        }
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(&*t.await.unwrap(), "Bearer shared");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_or_empty_fetch_is_an_error_and_caches_nothing() {
        let cache = BearerCache::default();
        assert!(
            cache
                .get(&|| async { Err(FetchError::temporary("down")) })
                .await
                .is_err()
        );
        assert!(cache.get(&|| async { token("", 3600) }).await.is_err());
        assert_eq!(
            &*cache.get(&|| async { token("ok", 3600) }).await.unwrap(),
            "Bearer ok"
        );
    }

    #[test]
    fn renewal_margin() {
        assert_eq!(
            renew_after(Duration::from_secs(3600)),
            Duration::from_secs(3240)
        );
        assert_eq!(
            renew_after(Duration::from_secs(120)),
            Duration::from_secs(60)
        );
        assert_eq!(renew_after(Duration::from_secs(10)), Duration::ZERO);
    }
}
