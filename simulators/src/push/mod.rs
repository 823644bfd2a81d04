//! A local stand-in for APNs, FCM HTTP v1 and Huawei Push Kit, for tests and load
//! tests: one HTTP/2 server (TLS with a self-signed certificate by default, as the
//! real services are TLS) that speaks all three APIs and their token endpoints.
//!
//! It validates what the providers validate — the APNs provider token's ES256
//! signature, key id, team and age; the FCM service-account assertion's RS256
//! signature, audience, scope and lifetime; HMS client credentials; bearer tokens it
//! issued and their expiry; required headers; payload sizes and shapes — and answers
//! with the providers' own status codes and error bodies. Latency and an error mix
//! (rate limits, server errors) are configurable, devices can be unregistered and
//! credentials expired on demand, and `/_mock/…` shows what it received.
//!
//! | path | provider |
//! |---|---|
//! | `POST /3/device/{token}` | APNs |
//! | `POST /token` | Google OAuth2 (service-account JWT grant) |
//! | `POST /v1/projects/{project}/messages:send` | FCM HTTP v1 |
//! | `POST /oauth2/v3/token` | Huawei OAuth2 (client credentials) |
//! | `POST /v1/{app_id}/messages:send` | HMS Push Kit v1 |
//! | `GET /_mock/requests[?provider=]`, `DELETE /_mock/requests` | recorded requests |
//! | `GET /_mock/stats` | counts per provider |
//! | `PUT /_mock/behaviour` | latency and error mix |
//! | `POST /_mock/unregister` `{"provider","token"}` | make a device token gone |
//! | `POST /_mock/expire-credentials` | every token issued or seen so far expires |

mod apns;
mod fcm;
mod hms;
mod inspect;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use jsonwebtoken::DecodingKey;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use state::State;
pub use state::{Behaviour, Counts, Provider, Recorded};

/// Largest body read; bigger ones are answered with the provider's size error.
const BODY_LIMIT: usize = 64 * 1024;

/// An APNs signing key the mock accepts: its key id, its team, and the public half.
#[derive(Debug, Clone)]
pub struct ApnsKey {
    pub key_id: String,
    pub team_id: String,
    pub public_pem: Vec<u8>,
}

/// A Google service account the mock accepts assertions from.
#[derive(Debug, Clone)]
pub struct FcmAccount {
    pub client_email: String,
    pub public_pem: Vec<u8>,
}

/// A Huawei OAuth client the mock accepts.
#[derive(Debug, Clone)]
pub struct HmsClient {
    pub client_id: String,
    pub client_secret: String,
}

#[derive(Debug, Clone)]
pub struct MockConfig {
    pub listen: SocketAddr,
    /// Serve TLS with a fresh self-signed certificate ([`PushMock::ca_pem`]); else h2c
    /// and HTTP/1.1 in the clear.
    pub tls: bool,
    pub apns_keys: Vec<ApnsKey>,
    /// Topics (bundle ids) APNs accepts; empty accepts any.
    pub apns_topics: Vec<String>,
    pub fcm_accounts: Vec<FcmAccount>,
    pub hms_clients: Vec<HmsClient>,
    /// Lifetime of the access tokens the token endpoints issue.
    pub access_token_ttl: Duration,
    pub behaviour: Behaviour,
    /// Requests kept for inspection (the oldest go first); 0 keeps none.
    pub keep: usize,
    /// Called with every push the mock accepts, as it answers it.
    pub tap: Option<PushTap>,
}

/// A watcher of accepted pushes: the provider and the request body as sent. It runs
/// on the request's task: it must be quick (hand the push on, never block).
#[derive(Clone)]
pub struct PushTap(pub Arc<TapFn>);

/// What a [`PushTap`] calls.
pub type TapFn = dyn Fn(Provider, &[u8]) + Send + Sync;

impl std::fmt::Debug for PushTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushTap")
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: true,
            apns_keys: Vec::new(),
            apns_topics: Vec::new(),
            fcm_accounts: Vec::new(),
            hms_clients: Vec::new(),
            access_token_ttl: Duration::from_secs(3600),
            behaviour: Behaviour::default(),
            keep: 10_000,
            tap: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("the {what} public key is not valid PEM: {reason}")]
    Key { what: String, reason: String },
    #[error("cannot make the TLS certificate: {0}")]
    Tls(String),
}

/// What the handlers share.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub apns_keys: Vec<(String, String, DecodingKey)>,
    pub apns_topics: Vec<String>,
    pub fcm_accounts: Vec<(String, DecodingKey)>,
    pub hms_clients: Vec<HmsClient>,
    pub access_token_ttl: Duration,
    pub tap: Option<PushTap>,
}

impl Shared {
    /// Wait as configured, then decide how a validated push is answered.
    pub async fn verdict(&self, provider: Provider) -> state::Verdict {
        let (latency, verdict) = {
            let mut s = self.state.lock();
            (s.behaviour().latency_ms, s.verdict(provider))
        };
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        verdict
    }

    /// A token endpoint's success: a new access token for `provider`.
    pub fn grant(&self, provider: Provider) -> Response {
        let ttl = self.access_token_ttl;
        let token = self.state.lock().issue_access_token(provider, ttl);
        json(
            StatusCode::OK,
            serde_json::json!({ "access_token": token, "expires_in": ttl.as_secs(), "token_type": "Bearer" }),
        )
    }

    pub fn record(
        &self,
        provider: Provider,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        status: StatusCode,
        reason: Option<String>,
    ) {
        if let Some(tap) = &self.tap
            && status == StatusCode::OK
            && reason.is_none()
        {
            (tap.0)(provider, body);
        }
        let accepted = status == StatusCode::OK && reason.is_none();
        let mut s = self.state.lock();
        s.record(provider, accepted, || Recorded {
            seq: 0,
            provider,
            path: path.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: serde_json::from_slice(body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
            }),
            status: status.as_u16(),
            reason,
        });
    }
}

/// `Authorization: Bearer …` (any case of the scheme), the token part.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

pub(crate) fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A running mock. Dropping it stops the server.
pub struct PushMock {
    addr: SocketAddr,
    tls: bool,
    ca_pem: Option<String>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for PushMock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PushMock {
    pub async fn start(config: MockConfig) -> Result<Self, MockError> {
        let key = |what: String, pem: &[u8], ec: bool| {
            let parsed = if ec {
                DecodingKey::from_ec_pem(pem)
            } else {
                DecodingKey::from_rsa_pem(pem)
            };
            parsed.map_err(|e| MockError::Key {
                what,
                reason: e.to_string(),
            })
        };
        let apns_keys = config
            .apns_keys
            .iter()
            .map(|k| {
                Ok((
                    k.key_id.clone(),
                    k.team_id.clone(),
                    key(format!("APNs key {}", k.key_id), &k.public_pem, true)?,
                ))
            })
            .collect::<Result<_, MockError>>()?;
        let fcm_accounts = config
            .fcm_accounts
            .iter()
            .map(|a| {
                Ok((
                    a.client_email.clone(),
                    key(
                        format!("service account {}", a.client_email),
                        &a.public_pem,
                        false,
                    )?,
                ))
            })
            .collect::<Result<_, MockError>>()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(config.behaviour, config.keep)),
            apns_keys,
            apns_topics: config.apns_topics.clone(),
            fcm_accounts,
            hms_clients: config.hms_clients.clone(),
            access_token_ttl: config.access_token_ttl,
            tap: config.tap.clone(),
        });

        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| MockError::Listen(config.listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| MockError::Listen(config.listen, e))?;
        let (acceptor, ca_pem) = if config.tls {
            let (acceptor, pem) = tls_acceptor()?;
            (Some(acceptor), Some(pem))
        } else {
            (None, None)
        };
        let app = router(shared.clone());
        let task = tokio::spawn(serve(listener, acceptor, app));
        Ok(Self {
            addr,
            tls: config.tls,
            ca_pem,
            shared,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT` (or `http://` without TLS): the base URL for every
    /// provider and token endpoint.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The self-signed certificate clients must trust (PEM), when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    pub fn requests(&self, provider: Option<Provider>) -> Vec<Recorded> {
        self.shared.state.lock().recorded(provider)
    }

    pub fn counts(&self, provider: Provider) -> Counts {
        self.shared.state.lock().counts(provider)
    }

    pub fn unregister(&self, provider: Provider, token: &str) {
        self.shared.state.lock().unregister(provider, token);
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.shared.state.lock().set_behaviour(behaviour);
    }

    pub fn expire_credentials(&self) {
        self.shared.state.lock().expire_credentials();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/3/device/{token}", post(apns::push))
        .route("/token", post(fcm::token))
        .route("/v1/projects/{project}/messages:send", post(fcm::send))
        .route("/oauth2/v3/token", post(hms::token))
        .route("/v1/{app_id}/messages:send", post(hms::send))
        .route(
            "/_mock/requests",
            get(inspect::requests).delete(inspect::clear),
        )
        .route("/_mock/stats", get(inspect::stats))
        .route("/_mock/behaviour", put(inspect::behaviour))
        .route("/_mock/unregister", post(inspect::unregister))
        .route("/_mock/expire-credentials", post(inspect::expire))
        .with_state(shared)
}

fn tls_acceptor() -> Result<(tokio_rustls::TlsAcceptor, String), MockError> {
    let certified = rcgen::generate_simple_self_signed(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(|e| MockError::Tls(e.to_string()))?;
    let cert_pem = certified.cert.pem();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MockError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| MockError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), cert_pem))
}

async fn serve(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, app: Router) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "push mock: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let tls = tls.clone();
        connections.spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http2()
                .max_concurrent_streams(1000)
                .initial_connection_window_size(4 << 20)
                .initial_stream_window_size(1 << 20);
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => builder.serve_connection(TokioIo::new(s), service).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "push mock: TLS handshake failed");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "push mock: connection ended");
            }
        });
    }
}

/// Read a body up to the limit; `None` if it is larger.
pub(crate) async fn read_body(body: axum::body::Body) -> Option<Bytes> {
    axum::body::to_bytes(body, BODY_LIMIT).await.ok()
}
