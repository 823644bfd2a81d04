//! The HTTP/2 client pool the push providers share: a few long-lived connections, each
//! carrying many concurrent streams, with a cap on how many streams are open at once.
//!
//! One reqwest client holds one HTTP/2 connection per host, so a pool of `connections`
//! clients is `connections` connections; requests go round-robin over them. The
//! stream cap is ours (a semaphore), not only the server's SETTINGS: a burst then
//! waits here, in order, instead of piling up inside the HTTP/2 layer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use tokio::sync::Semaphore;

/// How a provider's connections are made.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// PEM certificates to trust *instead of* the system's roots (a private CA, the
    /// push mock's self-signed certificate). `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// HTTP/2 connections in the pool.
    pub connections: usize,
    /// Streams open at once over the whole pool.
    pub max_streams: usize,
    /// Whole-request deadline.
    pub timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            ca_pem: None,
            connections: 2,
            max_streams: 1000,
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    #[error("the CA certificates are not valid PEM: {0}")]
    BadCa(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("{0}")]
    Invalid(String),
}

/// What came back, with the headers the providers' classifiers read.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Make rustls use *ring* unless the process chose a provider already. Idempotent.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn builder(options: &HttpOptions) -> Result<reqwest::ClientBuilder, SetupError> {
    install_crypto();
    let mut b = reqwest::Client::builder()
        .timeout(options.timeout)
        .connect_timeout(options.timeout.min(Duration::from_secs(5)))
        .tcp_nodelay(true)
        .no_proxy();
    if let Some(pem) = &options.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| SetupError::BadCa(e.to_string()))?;
        if certs.is_empty() {
            return Err(SetupError::BadCa("no certificate in the file".into()));
        }
        b = b.tls_certs_only(certs);
    }
    Ok(b)
}

/// A client for the providers' token endpoints: HTTP/1.1 or HTTP/2 as the server
/// offers, same trust as the push connections.
pub fn token_client(options: &HttpOptions) -> Result<reqwest::Client, SetupError> {
    builder(options)?
        .build()
        .map_err(|e| SetupError::Client(e.to_string()))
}

pub struct HttpPool {
    clients: Vec<reqwest::Client>,
    next: AtomicUsize,
    streams: Semaphore,
}

impl HttpPool {
    /// HTTP/2 only (APNs refuses HTTP/1.1); over TLS it is negotiated by ALPN, over
    /// plain `http://` it is spoken with prior knowledge (h2c).
    pub fn new(options: &HttpOptions) -> Result<Self, SetupError> {
        if options.connections == 0 || options.max_streams == 0 {
            return Err(SetupError::Invalid(
                "connections and max_streams must be at least 1".into(),
            ));
        }
        let clients = (0..options.connections)
            .map(|_| {
                builder(options)?
                    .http2_prior_knowledge()
                    .http2_adaptive_window(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .http2_keep_alive_while_idle(true)
                    .pool_idle_timeout(None)
                    .build()
                    .map_err(|e| SetupError::Client(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            clients,
            next: AtomicUsize::new(0),
            streams: Semaphore::new(options.max_streams),
        })
    }

    /// POST `body` to `url` with `headers` on the next connection, within the stream
    /// cap. `Err` is a transport failure (nothing usable came back), as text.
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        let _permit = self
            .streams
            .acquire()
            .await
            .map_err(|_| "the connection pool is closed".to_string())?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        let response = self.clients[i]
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(describe)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(describe)?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Refuse new requests (in-flight ones finish).
    pub fn close(&self) {
        self.streams.close();
    }
}

/// A transport error with its causes, which reqwest keeps in the source chain.
pub fn describe(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
