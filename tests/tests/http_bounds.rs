//! Slow, silent and greedy clients against the real server, over real sockets: each
//! test holds a connection the way an attacker would (a request line that never
//! ends, a body that never arrives, an HTTP/2 window that never opens, hundreds of
//! idle connections against a small descriptor limit) and checks that otpd lets go
//! of it within its bounds (`[server]` in config/otpd.toml; docs/THREAT_MODEL.md,
//! "anyone on the network") and keeps serving everybody else.

use std::time::{Duration, Instant};

use bytes::Bytes;
use otpd::config::Config;
use otpd_e2e::TestServer;
use otpd_e2e::process::OtpdProcess;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every bound at one second, so that the tests see them act.
fn tight(c: &mut Config) {
    c.server.header_read_timeout = Duration::from_secs(1);
    c.server.body_read_timeout = Duration::from_secs(1);
    c.server.idle_timeout = Duration::from_secs(1);
    c.server.write_timeout = Duration::from_secs(1);
}

async fn connect(t: &TestServer) -> TcpStream {
    TcpStream::connect(t.base.trim_start_matches("http://"))
        .await
        .expect("connects")
}

/// Read until the server closes the connection (or `within` passes: `None`); what
/// it sent meanwhile.
async fn until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_partial_request_line_is_cut_after_the_header_timeout() {
    let t = TestServer::start_with(tight, None).await;
    let mut partial = connect(&t).await;
    partial.write_all(b"POST /v1/verif").await.unwrap();
    let mut silent = connect(&t).await;
    let started = Instant::now();
    assert!(
        until_closed(&mut partial, Duration::from_secs(10))
            .await
            .is_some(),
        "a partial request line is held open"
    );
    assert!(
        until_closed(&mut silent, Duration::from_secs(10))
            .await
            .is_some(),
        "a connection that sends nothing is held open"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Others are served meanwhile and after.
    assert_eq!(t.get("/healthz").await.status, 200);
    t.stop().await;
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408_and_the_connection_closes() {
    let t = TestServer::start_with(tight, None).await;
    let mut s = connect(&t).await;
    s.write_all(
        b"POST /v1/verifications HTTP/1.1\r\nhost: otpd\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"to\": \"+346",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let got = until_closed(&mut s, Duration::from_secs(10))
        .await
        .expect("the connection is let go");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    t.stop().await;
}

#[tokio::test]
async fn expect_100_continue_with_an_oversized_body_gets_413_at_once() {
    let t = TestServer::start_with(tight, None).await;
    let mut s = connect(&t).await;
    s.write_all(
        b"POST /v1/verifications HTTP/1.1\r\nhost: otpd\r\ncontent-type: application/json\r\ncontent-length: 10485760\r\nexpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer at once")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    t.stop().await;
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let t = TestServer::start_with(tight, None).await;
    let mut s = connect(&t).await;
    let head = format!(
        "GET /healthz HTTP/1.1\r\nhost: otpd\r\nx-filler: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = s.write_all(head.as_bytes()).await;
    let got = until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("closed");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    t.stop().await;
}

/// HTTP/2 without TLS, as otpd's backends may speak it.
async fn h2(
    t: &TestServer,
    window: u32,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let io = connect(t).await;
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(io)
        .await
        .expect("h2c handshake");
    (send, tokio::spawn(conn))
}

fn get(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://otpd{path}"))
        .body(())
        .unwrap()
}

#[tokio::test]
async fn a_peer_that_never_opens_its_http2_window_is_cut() {
    let t = TestServer::start_with(tight, None).await;
    let (send, conn) = h2(&t, 0).await;
    let mut send = send.ready().await.unwrap();
    let (first, _) = send.send_request(get("/openapi.json"), true).unwrap();
    // Its head comes (heads are not flow-controlled); by then the server has said
    // how many streams it takes at once.
    let first = first.await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(
        send.current_max_send_streams() <= 128,
        "{}",
        send.current_max_send_streams()
    );
    // The other 99 are held too, never read.
    let mut pending = Vec::new();
    for _ in 0..99 {
        send = send.ready().await.unwrap();
        let (answer, _) = send.send_request(get("/openapi.json"), true).unwrap();
        pending.push(answer);
    }
    // The heads come; the bodies cannot (the window is shut), and the connection
    // holding them is let go.
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the connection is cut");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(ended);
    drop((first, pending));
    assert_eq!(t.get("/healthz").await.status, 200);
    t.stop().await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_with_goaway() {
    let t = TestServer::start_with(tight, None).await;
    let (send, conn) = h2(&t, 65_535).await;
    let mut send = send.ready().await.unwrap();
    let (answer, _) = send.send_request(get("/healthz"), true).unwrap();
    let answer = answer.await.unwrap();
    assert_eq!(answer.status(), 200);
    let mut body = answer.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the idle connection is closed")
        .unwrap();
    assert!(ended.is_ok(), "a graceful GOAWAY: {ended:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    t.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_service_goes_on() {
    let t = TestServer::start_with(
        |c| {
            c.server.max_connections = 8;
            c.server.header_read_timeout = Duration::from_secs(30);
        },
        None,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect(&t).await);
    }
    // Wait until the server has taken all eight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut over = connect(&t).await;
    let closed = until_closed(&mut over, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the ninth connection is held");
    assert!(tokio::time::Instant::now() < deadline);
    // A place frees up: served again.
    held.truncate(7);
    let mut answered = None;
    for _ in 0..50 {
        match t.client.get(t.url("/healthz")).send().await {
            Ok(r) => {
                answered = Some(r.status().as_u16());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(answered, Some(200));
    let metrics = t.get("/metrics").await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("otpd_http_connections_refused_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    drop(held);
    t.stop().await;
}

const PROCESS_CONFIG: &str = r#"
[server]
header_read_timeout = "1s"
body_read_timeout = "5s"
idle_timeout = "1s"
write_timeout = "1s"
shutdown_grace = "20s"
"#;

/// With 128 descriptors, 200 idle connections: otpd caps what it holds below its
/// limit, lets the idle ones go, does not spin on failed accepts, and serves a
/// request as soon as a place is free.
#[tokio::test]
async fn idle_connections_cannot_exhaust_a_small_descriptor_limit() {
    let otpd = OtpdProcess::start_limited(PROCESS_CONFIG, Some(128)).await;
    let addr = otpd.base.trim_start_matches("http://").to_string();
    let mut idle = Vec::new();
    for _ in 0..200 {
        if let Ok(s) = TcpStream::connect(&addr).await {
            idle.push(s);
        }
    }
    // Within the header timeout every one of them is let go…
    let started = Instant::now();
    for s in &mut idle {
        assert!(
            until_closed(s, Duration::from_secs(10)).await.is_some(),
            "an idle connection is held; log:\n{}",
            otpd.log()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(8));
    // …and the server answers.
    let client = otpd_e2e::client();
    let r = client
        .post(format!("{}/v1/verifications", otpd.base))
        .json(&json!({"to": "+34600123456"}))
        .send()
        .await
        .expect("served");
    assert_eq!(r.status(), 201);
    let log = otpd.log();
    let complaints = log.matches("cannot accept").count();
    assert!(complaints <= 3, "{complaints} accept warnings:\n{log}");
}

/// SIGTERM while a client dribbles a body: the request is refused at once (it
/// changed nothing) and the process exits well within its grace.
#[tokio::test]
async fn sigterm_is_not_held_by_a_stalled_request() {
    let mut otpd = OtpdProcess::start(PROCESS_CONFIG).await;
    let addr = otpd.base.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        b"POST /v1/verifications HTTP/1.1\r\nhost: otpd\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"to\"",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    otpd.terminate();
    let status = otpd.exited(Duration::from_secs(15)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        otpd.log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "SIGTERM held for {:?}",
        started.elapsed()
    );
    let got = until_closed(&mut s, Duration::from_secs(2))
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 503"),
        "{text}"
    );
}
