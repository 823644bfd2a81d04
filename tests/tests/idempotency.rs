//! `Idempotency-Key`: a retry with the same key and body replays the first answer and
//! sends nothing; the same key with another body is refused.

use otpd_e2e::TestServer;
use serde_json::json;

async fn post_with_key(t: &TestServer, key: &str, body: serde_json::Value) -> otpd_e2e::Answer {
    t.send(
        t.client
            .post(t.url("/v1/verifications"))
            .header("idempotency-key", key)
            .json(&body),
    )
    .await
}

#[tokio::test]
async fn a_retry_replays_the_first_answer_and_sends_nothing() {
    let t = TestServer::start().await;
    let body = json!({"to": "+34600000030", "locale": "gl"});
    let first = post_with_key(&t, "req-1", body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let id = first.body["id"].as_str().unwrap().to_string();
    t.outbox_line(&id, 1).await;

    let retry = post_with_key(&t, "req-1", body.clone()).await;
    assert_eq!(retry.status, 201, "{}", retry.text);
    assert_eq!(retry.text, first.text, "the very same answer");
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));

    // Even after the cooldown, when a fresh request would re-send.
    t.clock.advance(std::time::Duration::from_secs(60));
    let later = post_with_key(&t, "req-1", body).await;
    assert_eq!(later.text, first.text);
    assert_eq!(t.outbox_lines().len(), 1, "nothing was sent again");
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let t = TestServer::start().await;
    let first = post_with_key(&t, "req-2", json!({"to": "+34600000031"})).await;
    assert_eq!(first.status, 201);
    let other = post_with_key(&t, "req-2", json!({"to": "+34600000032"})).await;
    assert_eq!(other.status, 422, "{}", other.text);
    assert_eq!(other.error_code(), "idempotency_key_reused");
    t.outbox_line(first.body["id"].as_str().unwrap(), 1).await;
    assert_eq!(t.outbox_lines().len(), 1);
}

#[tokio::test]
async fn a_failed_request_does_not_burn_its_key() {
    let t = TestServer::start().await;
    t.issue("+34600000033").await;
    // Past the dedupe window but inside the resend cooldown: refused, and not kept,
    // so the same key works once the cooldown ends.
    t.clock.advance(std::time::Duration::from_secs(10));
    let refused = post_with_key(&t, "req-3", json!({"to": "+34600000033"})).await;
    assert_eq!(refused.status, 429);
    t.clock.advance(std::time::Duration::from_secs(20));
    let ok = post_with_key(&t, "req-3", json!({"to": "+34600000033"})).await;
    assert_eq!(ok.status, 201, "{}", ok.text);
}

#[tokio::test]
async fn malformed_keys_are_400() {
    let t = TestServer::start().await;
    for key in ["", &"k".repeat(256), "with space"] {
        let a = post_with_key(&t, key, json!({"to": "+34600000034"})).await;
        assert_eq!(a.status, 400, "{key:?}: {}", a.text);
        assert_eq!(a.error_code(), "invalid_idempotency_key");
    }
    assert!(t.outbox_lines().is_empty());
}

#[tokio::test]
async fn a_retry_while_the_first_is_in_flight_is_409() {
    // The first request hangs in the store (its key is reserved); the retry must not
    // run a second issue beside it.
    let t = TestServer::start_with_store(otpd_e2e::faults::Hanging::over(
        otpd::store::MemoryStore::new(1, std::time::Duration::ZERO),
    ))
    .await;
    let client = t.client.clone();
    let url = t.url("/v1/verifications");
    let first = tokio::spawn(async move {
        client
            .post(url)
            .header("idempotency-key", "req-5")
            .json(&json!({"to": "+34600000035"}))
            .send()
            .await
    });
    let engine = t.server().engine().clone();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while engine.queue().depth() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first request never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let retry = post_with_key(&t, "req-5", json!({"to": "+34600000035"})).await;
    assert_eq!(retry.status, 409, "{}", retry.text);
    assert_eq!(retry.error_code(), "idempotency_key_in_use");
    assert_eq!(retry.header("retry-after"), Some("1"));
    first.abort();
}
