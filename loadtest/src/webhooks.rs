//! A webhook receiver on loopback, for runs with `--webhooks`: it takes every event
//! otpd POSTs (answering 204 at once), checks its Standard Webhooks signature with
//! the run's secret, counts events by type, and keeps their bodies in
//! `webhook-events.jsonl` — the file a test reads to see that no code left otpd.
//!
//! It speaks HTTP/2 without TLS only (the tool configures otpd with
//! `webhooks.h2c`), through [`crate::h2c_server`]: each connection is one task
//! that walks a read's frames in one pass and writes their answers in one write,
//! with no task, request object or header map per event. The receiver shares the
//! machine with otpd, and through a general web framework, then the `h2` crate, it
//! cost the run more per event than otpd's own delivery did.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::h2c_server::{Connection, Request};
use otpd_adapters::h2post::frame::FrameError;
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
    /// Why connections were closed for breaking HTTP/2 (the first few): otpd's
    /// client got something wrong, or this receiver did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocol_errors: Vec<String>,
}

/// Protocol errors kept in the report.
const KEEP_ERRORS: usize = 8;

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

/// One HTTP/2 connection: each read's frames taken in one pass, its requests
/// checked together, and their answers written in one write.
async fn serve(mut tcp: tokio::net::TcpStream, state: Arc<State>) {
    let mut conn = Connection::new();
    let mut input = BytesMut::with_capacity(READ);
    let mut done = Vec::new();
    loop {
        if !conn.output().is_empty() {
            if tcp.write_all(conn.output()).await.is_err() {
                return;
            }
            conn.output().clear();
        }
        if conn.finished() {
            return;
        }
        input.reserve(READ);
        match tcp.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Err(e) = conn.receive(&mut input, &mut done) {
            state.broken(&e);
            conn.fail(&e);
            let _ = tcp.write_all(conn.output()).await;
            return;
        }
        if !done.is_empty() {
            for (stream, status) in state.take(&done) {
                conn.answer(stream, status);
            }
            done.clear();
        }
    }
}

/// What a read asks of the socket at least.
const READ: usize = 64 * 1024;

impl State {
    fn broken(&self, error: &FrameError) {
        let mut report = self.report.lock();
        if report.protocol_errors.len() < KEEP_ERRORS {
            report.protocol_errors.push(error.to_string());
        }
    }

    /// Check, count and keep a read's requests; their statuses, in order.
    fn take(&self, requests: &[Request]) -> Vec<(u32, u16)> {
        let mut answers = Vec::with_capacity(requests.len());
        let mut report = self.report.lock();
        let mut seen = self.seen.lock();
        let mut file = self.file.lock();
        for r in requests {
            let status = match (r.header(b":method"), r.header(b":path")) {
                (_, p) if p != Some(b"/hook".as_slice()) => 404,
                (m, _) if m != Some(b"POST".as_slice()) => 405,
                _ => {
                    let (good, id) = self.signed(r);
                    let key = (u128::from(self.id_keys.0.hash_one(id)) << 64)
                        | u128::from(self.id_keys.1.hash_one(id));
                    report.received += 1;
                    if !good {
                        report.bad_signatures += 1;
                    }
                    if seen.insert(key) {
                        report.distinct += 1;
                        let kind = event_type(&r.body).unwrap_or("unreadable");
                        match report.by_type.get_mut(kind) {
                            Some(n) => *n += 1,
                            None => {
                                report.by_type.insert(kind.to_string(), 1);
                            }
                        }
                    }
                    let _ = file.write_all(&r.body);
                    let _ = file.write_all(b"\n");
                    204
                }
            };
            answers.push((r.stream, status));
        }
        answers
    }

    /// Whether `r` carries a good `v1` signature, and its `webhook-id`.
    fn signed<'r>(&self, r: &'r Request) -> (bool, &'r [u8]) {
        let header = |n: &[u8]| r.header(n).unwrap_or_default();
        let id = header(b"webhook-id");
        let mut mac = ring::hmac::Context::with_key(&self.key);
        mac.update(id);
        mac.update(b".");
        mac.update(header(b"webhook-timestamp"));
        mac.update(b".");
        mac.update(&r.body);
        let mut expected = [0u8; 44];
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(mac.sign().as_ref(), &mut expected)
            .expect("44 bytes hold a SHA-256 in base64");
        let good = header(b"webhook-signature")
            .split(|&b| b == b' ')
            .filter_map(|s| s.strip_prefix(b"v1,"))
            .any(|s| s == &expected[..n]);
        (good, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpd_adapters::h2post::frame;

    /// The Standard Webhooks signature of `id.ts.body` under the run's secret.
    fn signature(id: &str, ts: &str, body: &str) -> String {
        let secret = base64::engine::general_purpose::STANDARD
            .decode(SECRET.trim_start_matches("whsec_"))
            .unwrap();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let tag = ring::hmac::sign(&key, format!("{id}.{ts}.{body}").as_bytes());
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        )
    }

    /// The `h2` crate as the client (its HPACK uses the dynamic table and Huffman
    /// strings, which otpd's own client does not): what the receiver answers and
    /// what it counts and keeps.
    #[tokio::test]
    async fn an_independent_http2_client_is_answered_and_counted() {
        let out = tempfile::tempdir().unwrap();
        let receiver = Receiver::start(out.path()).await.unwrap();
        let tcp = tokio::net::TcpStream::connect(receiver.addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let sent = r#"{"id":"msg_1","type":"verification.sent","data":{}}"#;
        let approved = r#"{"id":"msg_2","type":"verification.approved","data":{}}"#;
        let good = |id: &str, body: &str| (id.to_string(), signature(id, "1700000000", body));
        let cases = [
            ("POST", "/hook", good("msg_1", sent), sent, 204),
            // A retry of the same event.
            ("POST", "/hook", good("msg_1", sent), sent, 204),
            ("POST", "/hook", good("msg_2", approved), approved, 204),
            (
                "POST",
                "/hook",
                ("msg_3".into(), signature("msg_3", "1700000001", sent)),
                sent,
                204,
            ),
            ("GET", "/hook", good("msg_4", ""), "", 405),
            ("POST", "/other", good("msg_5", sent), sent, 404),
        ];
        for (method, path, (id, sig), body, status) in cases {
            let mut client = client.clone().ready().await.unwrap();
            let request = http::Request::builder()
                .method(method)
                .uri(format!("http://{}{path}", receiver.addr))
                .header("content-type", "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", "1700000000")
                .header("webhook-signature", format!("v1,bm90LXRoaXM= {sig}"))
                .body(())
                .unwrap();
            let (answer, mut stream) = client.send_request(request, body.is_empty()).unwrap();
            if !body.is_empty() {
                // The body in two DATA frames.
                let (a, b) = body.split_at(10);
                stream
                    .send_data(bytes::Bytes::from(a.to_string()), false)
                    .unwrap();
                stream
                    .send_data(bytes::Bytes::from(b.to_string()), true)
                    .unwrap();
            }
            let answer = answer.await.unwrap();
            assert_eq!(answer.status().as_u16(), status, "{method} {path} {id}");
        }
        let report = receiver.finish();
        assert_eq!(report.received, 4);
        assert_eq!(report.distinct, 3);
        assert_eq!(
            report.bad_signatures, 1,
            "msg_3 signed over another timestamp"
        );
        assert_eq!(report.by_type["verification.sent"], 2);
        assert_eq!(report.by_type["verification.approved"], 1);
        assert!(report.protocol_errors.is_empty());
        let kept = std::fs::read_to_string(out.path().join("webhook-events.jsonl")).unwrap();
        assert_eq!(
            kept.lines().collect::<Vec<_>>(),
            [sent, sent, approved, sent]
        );
    }

    #[tokio::test]
    async fn a_connection_that_breaks_http2_is_closed_and_reported() {
        let out = tempfile::tempdir().unwrap();
        let receiver = Receiver::start(out.path()).await.unwrap();
        let mut tcp = tokio::net::TcpStream::connect(receiver.addr).await.unwrap();
        tcp.write_all(b"POST /hook HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        // The SETTINGS and window the receiver opens with, then its GOAWAY.
        let goaway = frame::whole_frames(&answer)
            .0
            .into_iter()
            .find(|(h, _)| h.kind == frame::GOAWAY)
            .map(|(_, payload)| payload[8..].to_vec());
        let goaway = goaway.expect("a GOAWAY");
        assert!(String::from_utf8_lossy(&goaway).contains("preface"));
        let report = receiver.finish();
        assert_eq!(
            report.protocol_errors.len(),
            1,
            "{:?}",
            report.protocol_errors
        );
    }
}
