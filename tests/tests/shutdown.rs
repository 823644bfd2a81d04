//! Shutdown is bounded: a request stuck inside the server (here, on a store that never
//! answers) cannot hold it open past the grace period.

use std::time::Duration;

use otpd::config::Config;
use otpd::server::Settings;
use otpd::store::MemoryStore;
use otpd::{Deps, Server};
use otpd_e2e::faults::Hanging;

#[tokio::test]
async fn a_request_stuck_in_the_server_does_not_hold_the_shutdown_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.channels.file.path = dir.path().join("outbox.jsonl");
    config.server.shutdown_grace = Duration::from_millis(200);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start_on(
        listener,
        Settings::new(config).unwrap(),
        Deps {
            store: Some(Hanging::over(MemoryStore::new(1, Duration::ZERO))),
            ..Deps::default()
        },
    )
    .await
    .unwrap();
    let url = format!("http://{}/v1/verifications", server.addr());
    let stuck = tokio::spawn(async move {
        otpd_e2e::client()
            .post(url)
            .json(&serde_json::json!({"to": "+34600000060"}))
            .send()
            .await
    });
    // Wait until the request is inside the server (its connection is counted).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.engine().queue().depth() == 0 && !stuck.is_finished() {
        // The slot is reserved before the store is called, so depth turns 1.
        assert!(
            tokio::time::Instant::now() < deadline,
            "request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.shutdown();
    tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .expect("shutdown finished within its grace period despite the stuck request")
        .unwrap();
    // The stuck request itself never got an answer (the store never returned).
    assert!(!stuck.is_finished());
    stuck.abort();
}
