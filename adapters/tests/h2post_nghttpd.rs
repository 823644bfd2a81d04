//! otpd's HTTP/2 POST client against an independent HTTP/2 server: nghttpd, the
//! nghttp2 project's (Debian's `nghttp2-server`), over h2c. Many POSTs at once
//! beyond the server's stream limit, bodies larger than a frame and than the
//! windows, a 404, and the server killed and started again under the client.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use otpd_adapters::h2post::{Client, ClientOptions, Outcome, Post};

struct Nghttpd {
    child: Child,
    port: u16,
    dir: Option<tempfile::TempDir>,
}

/// A free loopback port below the ephemeral range (32768 and up on Linux). A port
/// the kernel hands out for `:0` is free again once the probe closes, and the
/// next outgoing connection of a test running beside this one may take it as its
/// source port before nghttpd binds it.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Apart from other test processes', which start elsewhere in the range.
    let start = (std::process::id() % 1000) as u16 * 12;
    loop {
        let port = 20_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed) % 12_000) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn spawn(port: u16, dir: &tempfile::TempDir) -> Child {
    let log = std::fs::File::create(dir.path().join("nghttpd.log")).unwrap();
    Command::new("nghttpd")
        .args(["--no-tls", "-a", "127.0.0.1", "-d"])
        .arg(dir.path())
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("nghttpd (Debian's nghttp2-server; scripts/test.sh installs it)")
}

/// Whether a server on `port` answers a POST within four seconds.
async fn answers(port: u16) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            let mut c = client(port, "/hook", 1);
            if run(&mut c, 1, 10, 1).await[0].1 == Outcome::Answered(200) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

impl Nghttpd {
    async fn start(port: Option<u16>, dir: Option<tempfile::TempDir>) -> Nghttpd {
        let dir = dir.unwrap_or_else(|| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("hook"), "taken\n").unwrap();
            dir
        });
        let port = port.unwrap_or_else(free_port);
        let log = dir.path().join("nghttpd.log");
        let mut server = Nghttpd {
            child: spawn(port, &dir),
            port,
            dir: Some(dir),
        };
        // Ready once it answers a POST, not merely once it accepts: a server that
        // took the connection and then went away was seen under a full test run.
        for attempt in 0..3 {
            if answers(port).await {
                return server;
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
            let dir = server.dir.as_ref().expect("the directory");
            eprintln!(
                "nghttpd on {port} did not answer (attempt {attempt}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            server.child = spawn(port, dir);
        }
        panic!(
            "nghttpd on {port} never answered: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn kill(mut self) -> (u16, tempfile::TempDir) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.port, self.dir.take().expect("the directory"))
    }
}

impl Drop for Nghttpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(port: u16, path: &str, streams: usize) -> Client<usize> {
    Client::new(options(port, path, streams))
}

fn options(port: u16, path: &str, streams: usize) -> ClientOptions {
    ClientOptions {
        host: "127.0.0.1".into(),
        port,
        path: path.into(),
        content_type: "application/json".into(),
        timeout: Duration::from_secs(5),
        max_streams: streams,
        linger: Duration::ZERO,
    }
}

fn post(n: usize, size: usize) -> Post {
    let body = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(size));
    Post::new(Bytes::from(body))
        .header("webhook-id", format!("msg_{n}").as_bytes())
        .secret_header("webhook-signature", b"v1,c2lnbmF0dXJl")
}

/// Post `count` requests, at most `window` out at once, and collect every outcome.
async fn run(
    c: &mut Client<usize>,
    count: usize,
    size: usize,
    window: usize,
) -> Vec<(usize, Outcome)> {
    let mut got = Vec::new();
    let mut sent = 0;
    while got.len() < count {
        while sent < count && c.out() < window {
            c.post(sent, post(sent, size));
            sent += 1;
        }
        got.push(
            tokio::time::timeout(Duration::from_secs(20), c.next())
                .await
                .expect("an outcome within 20 s"),
        );
    }
    got.sort_by_key(|g| g.0);
    got
}

#[tokio::test]
async fn many_posts_beyond_the_servers_stream_limit_are_all_answered() {
    let server = Nghttpd::start(None, None).await;
    // nghttpd allows 100 streams at once; the client holds the rest in order.
    let mut c = client(server.port, "/hook", 1000);
    let got = run(&mut c, 3000, 200, 1000).await;
    assert_eq!(got.len(), 3000);
    for (n, outcome) in &got {
        assert_eq!(outcome, &Outcome::Answered(200), "request {n}");
    }
    assert_eq!(c.out(), 0);
}

#[tokio::test]
async fn lingering_writes_gather_requests_and_still_answer_each() {
    let server = Nghttpd::start(None, None).await;
    let mut c = Client::new(ClientOptions {
        linger: Duration::from_millis(5),
        ..options(server.port, "/hook", 256)
    });
    let started = std::time::Instant::now();
    let got = run(&mut c, 1000, 200, 256).await;
    assert!(got.iter().all(|g| g.1 == Outcome::Answered(200)), "{got:?}");
    // A lone request still goes, after its linger.
    let got = run(&mut c, 1, 10, 1).await;
    assert_eq!(got[0].1, Outcome::Answered(200));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn bodies_larger_than_a_frame_and_the_windows_go_whole() {
    let server = Nghttpd::start(None, None).await;
    let mut c = client(server.port, "/hook", 64);
    // 40 bodies of 100 kB: each over a frame (16 kB) and a stream's window (64 kB),
    // all together over the connection's.
    let got = run(&mut c, 40, 100_000, 40).await;
    assert!(got.iter().all(|g| g.1 == Outcome::Answered(200)), "{got:?}");
}

#[tokio::test]
async fn a_missing_path_is_its_status_not_a_failure() {
    let server = Nghttpd::start(None, None).await;
    let mut c = client(server.port, "/nothing?x=1", 8);
    let got = run(&mut c, 3, 10, 8).await;
    assert!(got.iter().all(|g| g.1 == Outcome::Answered(404)), "{got:?}");
}

#[tokio::test]
async fn a_server_killed_is_refused_at_once_and_the_next_posts_reconnect() {
    let server = Nghttpd::start(None, None).await;
    let mut c = client(server.port, "/hook", 16);
    let got = run(&mut c, 50, 10, 16).await;
    assert!(got.iter().all(|g| g.1 == Outcome::Answered(200)), "{got:?}");
    let (port, dir) = server.kill();
    // Down: refused quickly, not hung.
    let got = run(&mut c, 5, 10, 5).await;
    assert!(
        got.iter().all(|g| matches!(&g.1, Outcome::Failed(_))),
        "{got:?}"
    );
    let _server = Nghttpd::start(Some(port), Some(dir)).await;
    let got = run(&mut c, 50, 10, 16).await;
    assert!(got.iter().all(|g| g.1 == Outcome::Answered(200)), "{got:?}");
}
