//! A lean HTTP/1.1 client for driving otpd: a fixed number of keep-alive
//! connections, each carrying up to `pipeline` requests at once (HTTP/1.1
//! pipelining: requests are written without waiting for the earlier answers, which
//! come back in order). With `pipeline = 1` it is a plain keep-alive client, one
//! request at a time per connection.
//!
//! Pipelining is why this is not hyper's client (which has none): a backend serving
//! a nation sends many requests at once, and writing the ones that are ready
//! together — one write and one read for many — is what keeps the client's own
//! kernel time from being the limit of a load test on a small machine. A request
//! waits for a free place on a connection; that wait is part of its latency, as it
//! would be for a real backend.
//!
//! Every answer has a bound: a connection on which the oldest request has waited
//! `answer_within` with nothing read is closed and its requests fail as timed out,
//! so a peer that accepts and never answers (a hung otpd, or something else on the
//! port) costs the run its requests, never its end.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use hyper::Method;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc, oneshot};

#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// Most bytes of requests gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;
/// A response head larger than this is refused (otpd's are a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 32;
/// How long a request waits for its answer unless told otherwise.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(30);

pub struct Http {
    addr: SocketAddr,
    host: String,
    /// `authorization` header value sent with every request, when the run is a
    /// configured client.
    bearer: Option<String>,
    /// A request's longest wait for its answer.
    answer_within: Duration,
    /// Places for requests over all connections (`connections × pipeline`).
    places: Semaphore,
    /// Filled in order: a request takes the first lane with room, so requests that
    /// are ready together share a lane and leave in one write, and otpd reads them in
    /// one read and answers them in one write. Spreading them round-robin over the
    /// lanes cost a write and a read on each side per request.
    lanes: Vec<Lane>,
}

/// One connection: its places, and the way to its writer while it lives.
struct Lane {
    places: Semaphore,
    jobs: tokio::sync::Mutex<Option<mpsc::UnboundedSender<Job>>>,
}

struct Job {
    request: Vec<u8>,
    reply: oneshot::Sender<Result<Answer, HttpError>>,
}

type Reply = oneshot::Sender<Result<Answer, HttpError>>;

/// Answers owed on a connection, in the order their requests were written (with
/// when each was), and why the connection closed once it has: a request handed to
/// a closed connection fails at once instead of waiting for a reader that is gone.
#[derive(Default)]
struct OwedState {
    replies: VecDeque<(Instant, Reply)>,
    closed: Option<HttpError>,
}

type Owed = Arc<Mutex<OwedState>>;

impl Http {
    /// A client of `addr` with `connections` connections of `pipeline` requests each.
    pub fn new(addr: SocketAddr, connections: usize, pipeline: usize) -> Self {
        let connections = connections.max(1);
        let pipeline = pipeline.max(1);
        Self {
            addr,
            host: addr.to_string(),
            bearer: None,
            answer_within: ANSWER_WITHIN,
            places: Semaphore::new(connections * pipeline),
            lanes: (0..connections)
                .map(|_| Lane {
                    places: Semaphore::new(pipeline),
                    jobs: tokio::sync::Mutex::new(None),
                })
                .collect(),
        }
    }

    /// Send `key` as the API key (`authorization: Bearer …`) with every request.
    pub fn with_key(mut self, key: &str) -> Self {
        self.bearer = Some(format!("Bearer {key}"));
        self
    }

    /// Fail a request whose answer has not come within `within`.
    pub fn with_answer_within(mut self, within: Duration) -> Self {
        self.answer_within = within;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `method path` with `body` (JSON) if any.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, HttpError> {
        let _place = self.places.acquire().await.expect("never closed");
        // Holding one of the `connections × pipeline` places, some lane has a free
        // one of its own: every holder of a lane's place holds one of these.
        let (lane, _lane_place) = loop {
            if let Some(found) = self
                .lanes
                .iter()
                .find_map(|lane| lane.places.try_acquire().ok().map(|p| (lane, p)))
            {
                break found;
            }
            tokio::task::yield_now().await;
        };
        let request = self.encode(&method, path, body.as_deref());
        let (reply, answer) = oneshot::channel();
        lane.submit(self.addr, self.answer_within, Job { request, reply })
            .await?;
        answer
            .await
            .unwrap_or_else(|_| Err(HttpError::Lost("the connection closed".into())))
    }

    fn encode(&self, method: &Method, path: &str, body: Option<&[u8]>) -> Vec<u8> {
        let body = body.unwrap_or_default();
        let mut r = Vec::with_capacity(128 + body.len());
        r.extend_from_slice(method.as_str().as_bytes());
        r.push(b' ');
        r.extend_from_slice(path.as_bytes());
        r.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        r.extend_from_slice(self.host.as_bytes());
        if let Some(b) = &self.bearer {
            r.extend_from_slice(b"\r\nauthorization: ");
            r.extend_from_slice(b.as_bytes());
        }
        if !body.is_empty() {
            r.extend_from_slice(b"\r\ncontent-type: application/json");
        }
        r.extend_from_slice(b"\r\ncontent-length: ");
        r.extend_from_slice(body.len().to_string().as_bytes());
        r.extend_from_slice(b"\r\n\r\n");
        r.extend_from_slice(body);
        r
    }
}

impl Lane {
    /// Hand `job` to this lane's connection, connecting first when it has none.
    async fn submit(
        &self,
        addr: SocketAddr,
        answer_within: Duration,
        job: Job,
    ) -> Result<(), HttpError> {
        let mut jobs = self.jobs.lock().await;
        let job = match jobs.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let tx = connect(addr, answer_within).await?;
        tx.send(job)
            .map_err(|_| HttpError::Lost("the connection closed at once".into()))?;
        *jobs = Some(tx);
        Ok(())
    }
}

/// Open a connection and start its writer and reader.
async fn connect(
    addr: SocketAddr,
    answer_within: Duration,
) -> Result<mpsc::UnboundedSender<Job>, HttpError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| HttpError::Connect(addr, e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let owed: Owed = Arc::default();
    tokio::spawn(write_requests(write, rx, owed.clone()));
    tokio::spawn(read_answers(read, owed, answer_within));
    Ok(tx)
}

/// Write the requests that are ready together; each one's answer is owed before its
/// bytes leave, so the reader always finds it (or, once the connection has closed,
/// it fails at once and the writer ends, so that the lane connects again). The writer lets the other tasks run
/// once before it writes: requests made in the same tick by tasks on the other
/// worker join the batch instead of each costing a write of its own (on loopback a
/// write also pays for the receiver's side of the stack).
async fn write_requests(
    mut write: OwnedWriteHalf,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    owed: Owed,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    // Whether the job was taken; false once the connection has closed.
    let take = |job: Job, batch: &mut Vec<u8>| {
        let mut owed = owed.lock();
        if let Some(e) = &owed.closed {
            let _ = job.reply.send(Err(e.clone()));
            return false;
        }
        batch.extend_from_slice(&job.request);
        owed.replies.push_back((Instant::now(), job.reply));
        true
    };
    while let Some(job) = jobs.recv().await {
        if !take(job, &mut batch) {
            return;
        }
        for turn in 0..2 {
            while batch.len() < WRITE_BATCH {
                match jobs.try_recv() {
                    Ok(job) => {
                        if !take(job, &mut batch) {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            if turn == 0 && batch.len() < WRITE_BATCH {
                tokio::task::yield_now().await;
            }
        }
        if let Err(e) = write.write_all(&batch).await {
            fail_all(&owed, &HttpError::Lost(format!("write failed: {e}")));
            return;
        }
        batch.clear();
    }
}

/// Read answers in order and hand each to the request that owes it; give up on
/// the connection when its oldest request has waited `answer_within`.
async fn read_answers(mut read: OwnedReadHalf, owed: Owed, answer_within: Duration) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // How often a quiet connection looks at the age of what it owes.
    let look = answer_within.min(Duration::from_secs(1));
    let error = loop {
        match parse(&mut buf) {
            Ok(Some(answer)) => {
                match owed.lock().replies.pop_front() {
                    Some((_, reply)) => {
                        let _ = reply.send(Ok(answer));
                    }
                    None => break HttpError::Malformed("an answer to no request".into()),
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => break e,
        }
        match tokio::time::timeout(look, read.read_buf(&mut buf)).await {
            Ok(Ok(0)) => break HttpError::Lost("otpd closed the connection".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break HttpError::Lost(format!("read failed: {e}")),
            Err(_) => {
                let oldest = owed.lock().replies.front().map(|(at, _)| *at);
                if oldest.is_some_and(|at| at.elapsed() >= answer_within) {
                    break HttpError::Timeout(answer_within);
                }
            }
        }
    };
    fail_all(&owed, &error);
}

/// Close the connection's account: every request still owed fails with `error`,
/// and so does any handed to it later.
fn fail_all(owed: &Owed, error: &HttpError) {
    let mut owed = owed.lock();
    owed.closed = Some(error.clone());
    for (_, reply) in owed.replies.drain(..) {
        let _ = reply.send(Err(error.clone()));
    }
}

/// One whole response from the front of `buf`, if it is all there.
fn parse(buf: &mut BytesMut) -> Result<Option<Answer>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(HttpError::Malformed(format!(
                "a response head over {MAX_HEAD} bytes"
            )));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    let mut length = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_none() {
                return Err(HttpError::Malformed("a bad content-length".into()));
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::Malformed(
                "a chunked response (otpd's answers have a length)".into(),
            ));
        }
    }
    let length = length.ok_or_else(|| HttpError::Malformed("no content-length".into()))?;
    if buf.len() < head + length {
        buf.reserve(head + length - buf.len());
        return Ok(None);
    }
    buf.advance(head);
    let body = buf.split_to(length).freeze();
    Ok(Some(Answer { status, body }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelined_answers_split_anywhere() {
        let wire = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(a) = parse(&mut buf).unwrap() {
                got.push((a.status, a.body));
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(a) = parse(&mut buf).unwrap() {
                got.push((a.status, a.body));
            }
            assert_eq!(
                got,
                vec![(201, Bytes::from_static(b"{\"a\":1}")), (404, Bytes::new())],
                "cut at {cut}"
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn refuses_what_it_cannot_frame() {
        for (wire, what) in [
            (
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..],
                "chunked",
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", "no content-length"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
                "bad content-length",
            ),
            (b"HTTQ/1.1 200 OK\r\n\r\n", ""),
        ] {
            let mut buf = BytesMut::from(wire);
            let e = parse(&mut buf).err().expect("refused").to_string();
            assert!(e.contains(what), "{e}");
        }
    }

    #[tokio::test]
    async fn pipelined_requests_get_their_own_answers_in_order() {
        // A server that echoes the path of each request as its body, answering
        // only after it has read three requests, so they really are pipelined.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let mut paths = Vec::new();
            while paths.len() < 3 {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                paths = String::from_utf8_lossy(&buf)
                    .split("\r\n\r\n")
                    .filter_map(|r| r.split(' ').nth(1).map(str::to_string))
                    .collect();
            }
            let mut out = Vec::new();
            for p in &paths {
                out.extend_from_slice(
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{p}", p.len()).as_bytes(),
                );
            }
            s.write_all(&out).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        });
        let http = Arc::new(Http::new(addr, 1, 3));
        let calls = ["/a", "/bb", "/ccc"].map(|p| {
            let http = http.clone();
            tokio::spawn(async move { http.send(Method::GET, p, None).await })
        });
        for (call, p) in calls.into_iter().zip(["/a", "/bb", "/ccc"]) {
            let a = call.await.unwrap().unwrap();
            assert_eq!(a.status, 200);
            assert_eq!(&a.body[..], p.as_bytes());
        }
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_fails_the_request_in_time_and_the_next_connects_again() {
        // The first connection is read and never answered; the second is answered.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut silent, _) = listener.accept().await.unwrap();
            let mut chunk = [0u8; 4096];
            let _ = silent.read(&mut chunk).await;
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = s.read(&mut chunk).await;
            s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            drop(silent);
        });
        let http = Http::new(addr, 1, 1).with_answer_within(Duration::from_millis(300));
        let started = Instant::now();
        let e = http.send(Method::GET, "/healthz", None).await.err();
        assert!(matches!(e, Some(HttpError::Timeout(_))), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        // The closed connection may fail one more request handed to it; within a
        // few, the lane has connected again and is answered.
        let mut answered = None;
        for _ in 0..3 {
            if let Ok(a) = http.send(Method::GET, "/healthz", None).await {
                answered = Some(a.status);
                break;
            }
        }
        assert_eq!(answered, Some(204));
    }
}
