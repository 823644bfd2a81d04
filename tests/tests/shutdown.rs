//! Shutdown is bounded: a request stuck inside the server (here, on a store that never
//! answers) cannot hold it open past the grace period.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use otpd::clock::UnixMillis;
use otpd::code::CodeMac;
use otpd::config::Config;
use otpd::id::VerificationId;
use otpd::store::{
    CheckResult, Fingerprint, IdempotencyBegin, IssueOutcome, MemoryStore, Store, StoreError,
    StoredResponse,
};
use otpd::verification::{CancelOutcome, SendResult, Verification};
use otpd::{Deps, Server};

/// A store whose `issue` never returns, as a store behind a dead network link might.
struct Hanging(MemoryStore);

#[async_trait]
impl Store for Hanging {
    async fn issue(&self, _: &Verification, _: UnixMillis) -> Result<IssueOutcome, StoreError> {
        std::future::pending().await
    }
    async fn check(
        &self,
        id: &VerificationId,
        mac: &CodeMac,
        now: UnixMillis,
    ) -> Result<Option<CheckResult>, StoreError> {
        self.0.check(id, mac, now).await
    }
    async fn get(&self, id: &VerificationId) -> Result<Option<Verification>, StoreError> {
        self.0.get(id).await
    }
    async fn cancel(
        &self,
        id: &VerificationId,
        now: UnixMillis,
    ) -> Result<Option<(CancelOutcome, Verification)>, StoreError> {
        self.0.cancel(id, now).await
    }
    async fn record_send(
        &self,
        id: &VerificationId,
        send: u8,
        r: SendResult,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.0.record_send(id, send, r, now).await
    }
    async fn idempotency_begin(
        &self,
        k: &str,
        f: &Fingerprint,
        now: UnixMillis,
        ttl: Duration,
    ) -> Result<IdempotencyBegin, StoreError> {
        self.0.idempotency_begin(k, f, now, ttl).await
    }
    async fn idempotency_finish(
        &self,
        k: &str,
        f: &Fingerprint,
        r: StoredResponse,
        now: UnixMillis,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.0.idempotency_finish(k, f, r, now, ttl).await
    }
    async fn idempotency_abandon(&self, k: &str, f: &Fingerprint) -> Result<(), StoreError> {
        self.0.idempotency_abandon(k, f).await
    }
    async fn sweep(&self, now: UnixMillis) -> Result<usize, StoreError> {
        self.0.sweep(now).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_request_stuck_in_the_server_does_not_hold_the_shutdown_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.channels.file.path = dir.path().join("outbox.jsonl");
    config.server.shutdown_grace = Duration::from_millis(200);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start_on(
        listener,
        config,
        Deps {
            store: Some(Arc::new(Hanging(MemoryStore::new(1, Duration::ZERO)))),
            ..Deps::default()
        },
    )
    .await
    .unwrap();
    let url = format!("http://{}/v1/verifications", server.addr());
    let stuck = tokio::spawn(async move {
        reqwest::Client::new()
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
