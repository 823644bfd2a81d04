//! An independent HTTP/2 client against otpd's h2c: `h2load` (Debian's
//! `nghttp2-client`, installed by scripts/test.sh) with 4 connections of 200 streams
//! each. Every request must be answered — no GOAWAY, no reset, no failure — while
//! the server holds each connection to its own stream limit (`server.http2_max_streams`,
//! 128 by default: h2load keeps to what the server advertises). The figure it prints
//! is a debug build's on a shared machine: a check that it works, not a benchmark.

use std::process::Command;

use otpd_e2e::TestServer;

fn h2load() -> Option<std::path::PathBuf> {
    let out = Command::new("sh")
        .args(["-c", "command -v h2load"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().into())
}

/// The number before `word` in h2load's `requests:` line (`4000 succeeded`).
fn count(line: &str, word: &str) -> u64 {
    let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let at = words
        .iter()
        .position(|w| *w == word)
        .unwrap_or_else(|| panic!("no `{word}` in {line:?}"));
    words[at - 1].parse().expect("a count")
}

#[tokio::test]
async fn h2load_with_4_connections_of_200_streams_gets_every_answer() {
    let h2load = h2load().expect("h2load is installed (Debian nghttp2-client; scripts/test.sh)");
    let t = TestServer::start().await;
    let v = t.issue("+34600123456").await;
    let url = t.url(&format!("/v1/verifications/{}", v["id"].as_str().unwrap()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(h2load)
            .args(["-n", "8000", "-c", "4", "-m", "200", &url])
            .output()
            .expect("h2load runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no requests line in\n{text}"));
    assert_eq!(count(requests, "total"), 8000, "{requests}");
    assert_eq!(count(requests, "succeeded"), 8000, "{requests}");
    for bad in ["failed", "errored", "timeout"] {
        assert_eq!(count(requests, bad), 0, "{requests}");
    }
    let statuses = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .expect("a status line");
    assert_eq!(count(statuses, "2xx"), 8000, "{statuses}");
    let finished = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .unwrap_or_default();
    eprintln!("h2load, 4 connections x 200 streams: {finished}");
    // No connection was cut or sent away by the server while it was in use.
    let metrics = t.get("/metrics").await.text;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("otpd_http_connections_closed_total") && l.contains("stalled")),
        "{metrics}"
    );
    t.stop().await;
}
