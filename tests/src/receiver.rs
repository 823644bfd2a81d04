//! A webhook receiver: a real HTTP/1.1 server on loopback that records every
//! request otpd sends it and answers as a test tells it — failing an event's first
//! attempts, hanging past otpd's timeout, answering slowly — and that can be
//! stopped and started again on the same port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// How the receiver answers.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Each event's first this many attempts are answered 500.
    pub fail_first: usize,
    /// Each event's first this many attempts are held for `hang` (otpd times out).
    pub hang_first: usize,
    pub hang: Duration,
    /// Every answer waits this long.
    pub delay: Duration,
}

/// One request as it came.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Which attempt of this event id it was (1 for the first).
    pub attempt: usize,
    /// Whether it was answered 2xx.
    pub taken: bool,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
}

impl Request {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct State {
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<Request>>,
    attempts: Mutex<HashMap<String, usize>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(State::default());
        *state.behaviour.lock() = behaviour;
        let mut r = Receiver {
            addr: listener.local_addr().unwrap(),
            state,
            stop: None,
            task: None,
        };
        r.serve(listener);
        r
    }

    /// The URL to configure as a client's `webhook_url`.
    pub fn url(&self) -> String {
        format!("http://{}/otpd/events", self.addr)
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock() = behaviour;
    }

    /// Every request so far, in the order they came.
    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().clone()
    }

    /// The requests answered 2xx.
    pub fn taken(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.taken).collect()
    }

    /// Wait until `n` distinct events were taken (at most `within`). Distinct: an
    /// event whose answer reached otpd too late is sent again (at least once), and
    /// its second delivery is not another event.
    pub async fn wait_taken(&self, n: usize, within: Duration) -> Vec<Request> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let taken = self.taken();
            let distinct = taken
                .iter()
                .map(|r| &r.id)
                .collect::<std::collections::HashSet<_>>()
                .len();
            if distinct >= n {
                return taken;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the receiver took {distinct} of {n} events: {:?}",
                taken.iter().map(|r| r.json()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stop listening (requests in progress are answered; the port is closed).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listen again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        let app = axum::Router::new()
            .route(
                "/otpd/events",
                axum::routing::post(
                    move |version: axum::http::Version, headers: HeaderMap, body: Bytes| {
                        let state = state.clone();
                        async move { answer(&state, version, &headers, body).await }
                    },
                ),
            )
            .into_make_service();
        let (tx, rx) = oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        }));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn answer(
    state: &State,
    version: axum::http::Version,
    headers: &HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let id = header("webhook-id");
    let attempt = {
        let mut attempts = state.attempts.lock();
        let n = attempts.entry(id.clone()).or_default();
        *n += 1;
        *n
    };
    let b = state.behaviour.lock().clone();
    if attempt <= b.hang_first {
        tokio::time::sleep(b.hang).await;
    }
    tokio::time::sleep(b.delay).await;
    let taken = attempt > b.fail_first;
    state.requests.lock().push(Request {
        id,
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        content_type: header("content-type"),
        body: body.to_vec(),
        attempt,
        taken,
        version: format!("{version:?}"),
    });
    if taken {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// The signature of a message as the Standard Webhooks specification defines it,
/// computed here from the specification alone (not with otpd's code): `v1,` and
/// base64 of HMAC-SHA256 over `id.timestamp.body`, keyed by the secret's bytes.
pub fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("base64 secret");
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}
