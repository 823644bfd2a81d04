//! The HTTP/2 client the push providers share: a few long-lived connections to one
//! provider, each carrying many concurrent streams, with a cap on how many streams are
//! open at once.
//!
//! It speaks HTTP/2 with the `h2` crate directly rather than through reqwest. A push
//! is one small POST to one known origin, and reqwest's general machinery — a URL
//! parsed (with IDNA) per request, a pool keyed by origin, a task per connection fed
//! over channels — cost as much CPU as the HTTP/2 framing and the TLS together under
//! national load. Here the origin is read once (`origin`) and a request goes straight
//! onto a live connection's `SendRequest` handle.
//!
//! - Connections are made when first needed, and again after one is lost (closed by
//!   the server, a GOAWAY, an unanswered keep-alive PING).
//! - A request that fails before the provider could act on it (the connection was
//!   found gone, or the server refused the stream) is tried once more on a fresh
//!   connection; one that may have reached the provider is not.
//! - The stream cap is ours (a semaphore), not only the server's SETTINGS: a burst
//!   waits here, in order, instead of piling up inside the HTTP/2 layer.
//! - One deadline covers the whole exchange, connecting included; when it passes the
//!   stream is reset and the error says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::header::{CONTENT_LENGTH, HeaderMap, HeaderValue};
use parking_lot::RwLock;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

use super::origin::Origin;

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

/// The providers answer a push with a few hundred bytes; more than this is refused
/// rather than buffered.
const MAX_ANSWER: usize = 64 * 1024;
/// A PING every this often keeps an idle connection open through middleboxes and
/// finds a dead one before a push does.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// A PING unanswered this long means the connection is gone.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

pub use crate::tls::install_crypto;

fn builder(options: &HttpOptions) -> Result<reqwest::ClientBuilder, SetupError> {
    install_crypto();
    let mut b = reqwest::Client::builder()
        .timeout(options.timeout)
        .connect_timeout(connect_timeout(options))
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

fn connect_timeout(options: &HttpOptions) -> Duration {
    options.timeout.min(Duration::from_secs(5))
}

/// A client for the providers' token endpoints: HTTP/1.1 or HTTP/2 as the server
/// offers, same trust as the push connections. Tokens are fetched once an hour, so
/// this one is reqwest.
pub fn token_client(options: &HttpOptions) -> Result<reqwest::Client, SetupError> {
    plain_client(options)
}

/// A pooled HTTP/1.1-or-HTTP/2 client (as the server offers) with the same trust and
/// deadlines: for the providers' token endpoints and for clients' webhooks, which
/// any web server must be able to receive.
pub fn plain_client(options: &HttpOptions) -> Result<reqwest::Client, SetupError> {
    builder(options)?
        .build()
        .map_err(|e| SetupError::Client(e.to_string()))
}

/// TLS for push connections: the given roots or the system's, ALPN `h2`.
fn tls_connector(options: &HttpOptions) -> Result<TlsConnector, SetupError> {
    let mut config = crate::tls::client_config(options.ca_pem.as_deref()).map_err(|e| match e {
        crate::tls::TlsSetupError::BadCa(e) => SetupError::BadCa(e),
        e => SetupError::Client(e.to_string()),
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

pub struct HttpPool {
    origin: Origin,
    tls: Option<TlsConnector>,
    timeout: Duration,
    connect_timeout: Duration,
    slots: Vec<Slot>,
    next: AtomicUsize,
    streams: Semaphore,
}

/// One connection's place in the pool.
#[derive(Default)]
struct Slot {
    live: RwLock<Option<Live>>,
    /// Held while connecting, so that the requests waiting for this slot share one
    /// new connection instead of each making its own.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Live {
    send: SendRequest<Bytes>,
    /// Set when the connection's task ends, or when a request finds it unusable.
    lost: Arc<AtomicBool>,
}

impl Live {
    fn usable(&self) -> bool {
        !self.lost.load(Ordering::Relaxed)
    }
}

/// How one attempt ended, and whether a second one may follow.
enum Failure {
    /// The provider cannot have acted on the request: try on a fresh connection.
    Unsent(String),
    /// It may have: report it.
    Final(String),
}

impl HttpPool {
    /// A pool of HTTP/2 connections to `base_url` (`https://host[:port][/path]`; APNs
    /// refuses HTTP/1.1). Over TLS HTTP/2 is agreed by ALPN; over plain `http://` it
    /// is spoken with prior knowledge (h2c).
    pub fn new(options: &HttpOptions, base_url: &str) -> Result<Self, SetupError> {
        if options.connections == 0 || options.max_streams == 0 {
            return Err(SetupError::Invalid(
                "connections and max_streams must be at least 1".into(),
            ));
        }
        let origin = Origin::parse(base_url).map_err(|e| SetupError::Invalid(e.to_string()))?;
        let tls = if origin.tls {
            Some(tls_connector(options)?)
        } else {
            None
        };
        Ok(Self {
            origin,
            tls,
            timeout: options.timeout,
            connect_timeout: connect_timeout(options),
            slots: (0..options.connections).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            streams: Semaphore::new(options.max_streams),
        })
    }

    /// POST `body` to `path` (under the base URL) with `headers` on the next
    /// connection, within the stream cap. `Err` is a transport failure (nothing
    /// usable came back), as text.
    pub async fn post(
        &self,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, String> {
        let _permit = self
            .streams
            .acquire()
            .await
            .map_err(|_| "the connection pool is closed".to_string())?;
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut request = http::Request::post(
            self.origin
                .uri(path)
                .map_err(|e| format!("the path {path:?}: {e}"))?,
        )
        .body(())
        .map_err(|e| e.to_string())?;
        *request.headers_mut() = headers;
        request
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let exchange = async {
            match self.attempt(slot, request.clone(), body.clone()).await {
                Ok(answer) => Ok(answer),
                Err(Failure::Unsent(_)) => match self.attempt(slot, request, body).await {
                    Ok(answer) => Ok(answer),
                    Err(Failure::Unsent(e) | Failure::Final(e)) => Err(e),
                },
                Err(Failure::Final(e)) => Err(e),
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer from {} within {:?}",
                self.origin.authority, self.timeout
            )),
        }
    }

    /// One try on the slot's connection (made first if there is none).
    async fn attempt(
        &self,
        slot: &Slot,
        request: http::Request<()>,
        body: Bytes,
    ) -> Result<Answer, Failure> {
        let live = self.live(slot).await.map_err(Failure::Final)?;
        let unsent = |e: h2::Error| {
            live.lost.store(true, Ordering::Relaxed);
            Failure::Unsent(describe_h2(&e))
        };
        let mut send = live.send.clone().ready().await.map_err(unsent)?;
        let (response, mut stream) = send
            .send_request(request, body.is_empty())
            .map_err(unsent)?;
        if !body.is_empty() {
            stream.send_data(body, true).map_err(unsent)?;
        }
        let response = response.await.map_err(|e| {
            // RFC 9113 §8.7: a refused stream, or one above a graceful GOAWAY's last
            // stream, was not processed.
            let refused = e.reason() == Some(h2::Reason::REFUSED_STREAM)
                || e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR);
            if e.is_go_away() {
                live.lost.store(true, Ordering::Relaxed);
            }
            if refused {
                Failure::Unsent(describe_h2(&e))
            } else {
                Failure::Final(describe_h2(&e))
            }
        })?;
        let (parts, mut recv) = response.into_parts();
        let mut body = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| Failure::Final(describe_h2(&e)))?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(Failure::Final(format!(
                    "an answer body over {MAX_ANSWER} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.freeze(),
        })
    }

    /// The slot's live connection, connecting when it has none.
    async fn live(&self, slot: &Slot) -> Result<Live, String> {
        if let Some(live) = slot.live.read().as_ref().filter(|l| l.usable()) {
            return Ok(live.clone());
        }
        let _one = slot.connecting.lock().await;
        if let Some(live) = slot.live.read().as_ref().filter(|l| l.usable()) {
            return Ok(live.clone());
        }
        let live = tokio::time::timeout(self.connect_timeout, self.connect())
            .await
            .map_err(|_| {
                format!(
                    "cannot connect to {} within {:?}",
                    self.origin.authority, self.connect_timeout
                )
            })??;
        *slot.live.write() = Some(live.clone());
        Ok(live)
    }

    async fn connect(&self) -> Result<Live, String> {
        let o = &self.origin;
        let tcp = TcpStream::connect((o.host.as_str(), o.port))
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", o.authority))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return start(tcp).await;
        };
        let name = ServerName::try_from(o.host.clone())
            .map_err(|e| format!("{} is not a host name for TLS: {e}", o.host))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", o.authority))?;
        if let Some(alpn) = stream.get_ref().1.alpn_protocol()
            && alpn != b"h2"
        {
            return Err(format!(
                "{} agreed to {:?} instead of HTTP/2",
                o.authority,
                String::from_utf8_lossy(alpn)
            ));
        }
        start(stream).await
    }

    /// Refuse new requests (in-flight ones finish) and let the connections close.
    pub fn close(&self) {
        self.streams.close();
        for slot in &self.slots {
            slot.live.write().take();
        }
    }
}

/// The HTTP/2 handshake over `io`, and the task that drives the connection and
/// keeps it alive with PINGs; the task ends (and marks the connection lost) when the
/// server closes it, a PING goes unanswered, or every handle to it is dropped.
async fn start<T>(io: T) -> Result<Live, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| format!("the HTTP/2 handshake: {}", describe_h2(&e)))?;
    let lost = Arc::new(AtomicBool::new(false));
    let flag = lost.clone();
    let mut ping = connection.ping_pong();
    tokio::spawn(async move {
        let keepalive = async {
            let Some(ping) = ping.as_mut() else {
                return std::future::pending().await;
            };
            loop {
                tokio::time::sleep(KEEPALIVE).await;
                match tokio::time::timeout(PING_TIMEOUT, ping.ping(h2::Ping::opaque())).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return describe_h2(&e),
                    Err(_) => return format!("no answer to a PING within {PING_TIMEOUT:?}"),
                }
            }
        };
        tokio::select! {
            ended = &mut connection => {
                if let Err(e) = ended {
                    tracing::debug!(error = %describe_h2(&e), "push connection ended");
                }
            }
            why = keepalive => tracing::debug!(error = %why, "push connection dropped"),
        }
        flag.store(true, Ordering::Relaxed);
    });
    Ok(Live { send, lost })
}

fn describe_h2(e: &h2::Error) -> String {
    if let Some(io) = e.get_io() {
        return format!("connection failed: {io}");
    }
    e.to_string()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// What the test server does with each request.
    #[derive(Clone, Copy)]
    enum Then {
        /// Answer 200, then close the connection abruptly.
        AnswerAndDrop,
        /// Answer 200, then send a graceful GOAWAY.
        AnswerAndGoAway,
        /// Answer 200 and keep the connection.
        Answer,
        /// Answer with a body larger than the client takes.
        AnswerHuge,
        /// Read the request, then close without answering.
        Drop,
        /// Never answer.
        Hang,
    }

    #[derive(Default)]
    struct Seen {
        connections: AtomicU32,
        requests: AtomicU32,
    }

    /// A bare HTTP/2 (h2c) server on a free loopback port.
    async fn server(then: Then) -> (String, Arc<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let counts = counts.clone();
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(tcp).await.unwrap();
                    while let Some(Ok((request, mut respond))) = conn.accept().await {
                        let mut body = request.into_body();
                        while let Some(Ok(_)) = body.data().await {}
                        counts.requests.fetch_add(1, Ordering::SeqCst);
                        let ok = http::Response::builder().status(200).body(()).unwrap();
                        match then {
                            Then::Answer | Then::AnswerAndDrop | Then::AnswerAndGoAway => {
                                let mut s = respond.send_response(ok, false).unwrap();
                                s.send_data(Bytes::from_static(b"{}"), true).unwrap();
                            }
                            Then::AnswerHuge => {
                                let mut s = respond.send_response(ok, false).unwrap();
                                s.send_data(Bytes::from(vec![b'x'; MAX_ANSWER + 1]), true)
                                    .unwrap();
                            }
                            Then::Drop => return,
                            Then::Hang => {
                                tokio::time::sleep(Duration::from_secs(60)).await;
                            }
                        }
                        match then {
                            Then::AnswerAndDrop => {
                                // Let the answer leave, then vanish.
                                let _ =
                                    tokio::time::timeout(Duration::from_millis(50), conn.accept())
                                        .await;
                                return;
                            }
                            Then::AnswerAndGoAway => conn.graceful_shutdown(),
                            _ => {}
                        }
                    }
                });
            }
        });
        (url, seen)
    }

    fn pool(url: &str, timeout: Duration) -> HttpPool {
        let options = HttpOptions {
            connections: 1,
            timeout,
            ..HttpOptions::default()
        };
        HttpPool::new(&options, url).unwrap()
    }

    async fn post(pool: &HttpPool) -> Result<Answer, String> {
        pool.post("/push", HeaderMap::new(), Bytes::from_static(b"{\"a\":1}"))
            .await
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced() {
        for then in [Then::AnswerAndDrop, Then::AnswerAndGoAway] {
            let (url, seen) = server(then).await;
            let pool = pool(&url, Duration::from_secs(5));
            for _ in 0..3 {
                let answer = post(&pool).await.unwrap();
                assert_eq!((answer.status, &answer.body[..]), (200, &b"{}"[..]));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
            assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
        }
    }

    #[tokio::test]
    async fn back_to_back_requests_survive_graceful_goaways() {
        // Each answer is followed by a GOAWAY; the next request, sent at once, may
        // meet the closing connection and must go through on a new one.
        let (url, seen) = server(Then::AnswerAndGoAway).await;
        let pool = pool(&url, Duration::from_secs(5));
        for _ in 0..10 {
            assert_eq!(post(&pool).await.unwrap().status, 200);
        }
        assert_eq!(seen.requests.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn requests_share_a_kept_connection() {
        let (url, seen) = server(Then::Answer).await;
        let pool = Arc::new(pool(&url, Duration::from_secs(5)));
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { post(&pool).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap().status, 200);
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
        assert_eq!(seen.requests.load(Ordering::SeqCst), 20);
    }

    #[tokio::test]
    async fn a_request_that_may_have_arrived_is_not_sent_twice() {
        let (url, seen) = server(Then::Drop).await;
        let pool = pool(&url, Duration::from_secs(5));
        let e = post(&pool).await.unwrap_err();
        assert!(!e.is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(seen.requests.load(Ordering::SeqCst), 1, "{e}");
    }

    #[tokio::test]
    async fn no_answer_within_the_deadline_is_an_error_that_says_so() {
        let (url, _) = server(Then::Hang).await;
        let pool = pool(&url, Duration::from_millis(300));
        let e = post(&pool).await.unwrap_err();
        assert!(e.contains("within 300ms"), "{e}");
    }

    #[tokio::test]
    async fn an_oversized_answer_is_refused() {
        let (url, _) = server(Then::AnswerHuge).await;
        let pool = pool(&url, Duration::from_secs(5));
        let e = post(&pool).await.unwrap_err();
        assert!(e.contains("over 65536 bytes"), "{e}");
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error_naming_the_host() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pool = pool(&format!("http://127.0.0.1:{port}"), Duration::from_secs(5));
        let e = post(&pool).await.unwrap_err();
        assert!(
            e.contains(&format!("cannot connect to 127.0.0.1:{port}")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_closed_pool_refuses_new_requests() {
        let (url, _) = server(Then::Answer).await;
        let pool = pool(&url, Duration::from_secs(5));
        assert!(post(&pool).await.is_ok());
        pool.close();
        assert!(post(&pool).await.unwrap_err().contains("closed"));
    }

    #[test]
    fn bad_settings_are_refused_at_start() {
        let bad = |options: HttpOptions, url: &str| {
            HttpPool::new(&options, url)
                .err()
                .expect("refused")
                .to_string()
        };
        assert!(bad(HttpOptions::default(), "ftp://x").contains("must be https"));
        let none = HttpOptions {
            connections: 0,
            ..HttpOptions::default()
        };
        assert!(bad(none, "https://x").contains("at least 1"));
        let ca = HttpOptions {
            ca_pem: Some(b"not pem".to_vec()),
            ..HttpOptions::default()
        };
        assert!(bad(ca, "https://x").contains("no certificate"));
    }
}
