//! A webhook receiver on loopback, for runs with `--webhooks`: it takes every event
//! otpd POSTs (answering 204 at once), checks its Standard Webhooks signature with
//! the run's secret, counts events by type, and keeps their bodies in
//! `webhook-events.jsonl` — the file a test reads to see that no code left otpd.
//!
//! It speaks HTTP/2 without TLS only (the tool configures otpd with
//! `webhooks.h2c`), on the `h2` crate directly: each connection is one task that
//! answers its streams as they come, with no task, router or service call per
//! event. The receiver shares the machine with otpd, and through a general web
//! framework it cost the run more per event than otpd's own delivery did.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use serde::Serialize;

/// The run's webhook secret (`whsec_` and 32 bytes, base64): a load test's, not a
/// secret.
pub const SECRET: &str = "whsec_b3RwZC1sb2FkdGVzdC13ZWJob29rLXNlY3JldC0wMQ==";

/// What the receiver saw.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct WebhookReport {
    pub received: u64,
    pub bad_signatures: u64,
    /// Distinct event ids (a retry repeats one).
    pub distinct: u64,
    pub by_type: BTreeMap<String, u64>,
}

struct State {
    key: ring::hmac::Key,
    report: Mutex<WebhookReport>,
    /// Event ids seen, as 128-bit keyed hashes: a run takes millions of events,
    /// and a string apiece cost the tool an allocation per event and a hundred
    /// megabytes. Two ids share a hash with odds near 2^-128 × n².
    seen: Mutex<std::collections::HashSet<u128>>,
    id_keys: (RandomState, RandomState),
    file: Mutex<std::io::BufWriter<std::fs::File>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listen on a free loopback port, keeping bodies in `out/webhook-events.jsonl`.
    pub async fn start(out: &Path) -> std::io::Result<Receiver> {
        let secret = base64::engine::general_purpose::STANDARD
            .decode(SECRET.trim_start_matches("whsec_"))
            .expect("the run's secret is base64");
        let file = std::fs::File::create(out.join("webhook-events.jsonl"))?;
        let state = Arc::new(State {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            report: Mutex::default(),
            seen: Mutex::default(),
            id_keys: (RandomState::new(), RandomState::new()),
            // A write to the file per 1 MiB of bodies, not per 8 KiB.
            file: Mutex::new(std::io::BufWriter::with_capacity(1 << 20, file)),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    // Answers go out at once, as a production receiver's would
                    // (Nagle's algorithm would hold each for otpd's delayed ACK).
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(serve(tcp, state.clone()));
                }
            }
        });
        Ok(Receiver { addr, state, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Wait (at most `within`) until events stop coming: the webhook caught up.
    pub async fn settle(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let mut last = u64::MAX;
        while tokio::time::Instant::now() < deadline {
            let now = self.state.report.lock().received;
            if now == last {
                return;
            }
            last = now;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Stop, write what is buffered, and say what came.
    pub fn finish(self) -> WebhookReport {
        self.task.abort();
        let _ = self.state.file.lock().flush();
        self.state.report.lock().clone()
    }
}

/// The `type` of an event's body, found without parsing the whole of it (otpd
/// writes `"type":"…"` plainly).
fn event_type(body: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"type\":\"";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = body[at..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&body[at..at + len]).ok()
}

/// [`Receiver::settle`], when the run has a receiver.
pub async fn settle(receiver: Option<&Receiver>, within: Duration) {
    if let Some(r) = receiver {
        r.settle(within).await;
    }
}

/// The largest event body taken; otpd's are under a kilobyte.
const MAX_BODY: usize = 1 << 20;

/// One HTTP/2 connection: its streams answered in the connection's own task.
async fn serve(tcp: tokio::net::TcpStream, state: Arc<State>) {
    let Ok(mut conn) = h2::server::Builder::new()
        .max_concurrent_streams(4096)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 24)
        .handshake::<_, Bytes>(tcp)
        .await
    else {
        return;
    };
    let mut answering = FuturesUnordered::new();
    loop {
        tokio::select! {
            got = conn.accept() => match got {
                Some(Ok((request, respond))) => answering.push(answer(&state, request, respond)),
                _ => break,
            },
            Some(()) = answering.next(), if !answering.is_empty() => {}
        }
    }
}

/// Read one request's body, take it, and answer.
async fn answer(
    state: &State,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let (parts, mut body) = request.into_parts();
    let mut bytes = BytesMut::new();
    let status = loop {
        match body.data().await {
            Some(Ok(chunk)) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                if bytes.len() + chunk.len() > MAX_BODY {
                    break StatusCode::PAYLOAD_TOO_LARGE;
                }
                bytes.extend_from_slice(&chunk);
            }
            Some(Err(_)) => return,
            None if parts.uri.path() != "/hook" => break StatusCode::NOT_FOUND,
            None if parts.method != http::Method::POST => break StatusCode::METHOD_NOT_ALLOWED,
            None => break take(state, &parts.headers, &bytes),
        }
    };
    let answer = http::Response::builder()
        .status(status)
        .body(())
        .expect("a status alone");
    let _ = respond.send_response(answer, true);
}

fn take(state: &State, headers: &HeaderMap, body: &[u8]) -> StatusCode {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (id, ts, signatures) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let mut signed = Vec::with_capacity(id.len() + ts.len() + body.len() + 2);
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(ts.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    let expected = ring::hmac::sign(&state.key, &signed);
    let good = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .any(|b| b == expected.as_ref());
    let kind = event_type(body).unwrap_or("unreadable").to_string();
    let key =
        (u128::from(state.id_keys.0.hash_one(id)) << 64) | u128::from(state.id_keys.1.hash_one(id));
    let fresh = state.seen.lock().insert(key);
    {
        let mut r = state.report.lock();
        r.received += 1;
        if !good {
            r.bad_signatures += 1;
        }
        if fresh {
            r.distinct += 1;
            *r.by_type.entry(kind).or_default() += 1;
        }
    }
    let mut f = state.file.lock();
    let _ = f.write_all(body);
    let _ = f.write_all(b"\n");
    StatusCode::NO_CONTENT
}
