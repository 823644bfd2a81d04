//! Delivery: a full queue answers 503 and creates nothing, and so does a queue whose
//! sends stand in it too long; channel failures are recorded; shutdown delivers what
//! was accepted.

use std::sync::Arc;
use std::time::Duration;

use otpd::delivery::{Channels, Pushers};
use otpd_adapters::ChannelError;
use otpd_adapters::fake::{FakeChannel, Outcome};
use otpd_adapters::push::fake::FakePusher;
use otpd_e2e::TestServer;
use serde_json::json;

fn fake_channels(fake: &Arc<FakeChannel>) -> Channels {
    Channels {
        sms: vec![fake.clone()],
        push: Pushers::all(Arc::new(FakePusher::new("push"))),
    }
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never became true"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_full_queue_answers_503_and_creates_nothing() {
    let fake = Arc::new(FakeChannel::gated("held"));
    let t = TestServer::start_with(
        |c| {
            c.delivery.queue_capacity = 1;
            c.delivery.concurrency = 1;
        },
        Some(fake_channels(&fake)),
    )
    .await;
    // One send held by the channel, one waiting in the queue: full.
    t.issue("+34600000040").await;
    let engine = t.server().engine().clone();
    wait_until(|| engine.queue().depth() == 0).await;
    t.issue("+34600000041").await;

    let a = t
        .post("/v1/verifications", json!({"to": "+34600000042"}))
        .await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(a.error_code(), "overloaded");
    assert_eq!(a.header("retry-after"), Some("1"));

    fake.release(2);
    wait_until(|| fake.sent().len() == 2).await;
    wait_until(|| engine.queue().depth() == 0).await;
    // Nothing was half-created: the refused number gets a fresh verification.
    fake.release(1);
    let a = t
        .post("/v1/verifications", json!({"to": "+34600000042"}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    wait_until(|| fake.sent().len() == 3).await;
}

#[tokio::test]
async fn a_queue_whose_sends_wait_too_long_answers_503_until_it_drains() {
    let fake = Arc::new(FakeChannel::gated("slow"));
    let t = TestServer::start_with(
        |c| {
            c.delivery.queue_capacity = 100;
            c.delivery.concurrency = 1;
            c.delivery.max_queue_delay = Duration::from_secs(1);
        },
        Some(fake_channels(&fake)),
    )
    .await;
    let engine = t.server().engine().clone();
    // The first send is taken at once (and held by the carrier); two more wait.
    t.issue("+34600000050").await;
    wait_until(|| engine.queue().depth() == 0).await;
    t.issue("+34600000051").await;
    t.issue("+34600000052").await;
    // The carrier answers slowly: the waiting sends are taken 2 s and 3 s late.
    t.clock.advance(Duration::from_secs(2));
    fake.release(1);
    wait_until(|| engine.queue().depth() == 1).await;
    // Room in the queue, but a wait of a second or more for a whole window.
    let a = t
        .post("/v1/verifications", json!({"to": "+34600000053"}))
        .await;
    assert_eq!(
        a.status, 201,
        "one late send is not yet a standing queue: {}",
        a.text
    );
    t.clock.advance(Duration::from_secs(1));
    fake.release(1);
    wait_until(|| engine.queue().depth() == 1).await;

    let a = t
        .post("/v1/verifications", json!({"to": "+34600000054"}))
        .await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(a.error_code(), "overloaded");
    assert_eq!(a.header("retry-after"), Some("1"));
    let health = t.get("/healthz").await;
    assert!(
        health.body["delivery_queue"]["standing_delay_ms"]
            .as_u64()
            .is_some_and(|ms| ms >= 1000),
        "{}",
        health.text
    );

    // Delivery catches up; with nothing waiting, requests are taken again.
    fake.release(10);
    wait_until(|| fake.sent().len() == 4).await;
    t.clock.advance(Duration::from_secs(3));
    let a = t
        .post("/v1/verifications", json!({"to": "+34600000054"}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let health = t.get("/healthz").await;
    assert_eq!(
        health.body["delivery_queue"]["standing_delay_ms"],
        serde_json::Value::Null,
        "{}",
        health.text
    );
}

#[tokio::test]
async fn a_rejected_send_is_recorded_as_failed() {
    let fake = Arc::new(FakeChannel::new("carrier"));
    fake.script(Outcome::Fail(ChannelError::Rejected {
        reason: "invalid destination".into(),
    }));
    let t = TestServer::start_with(|_| {}, Some(fake_channels(&fake))).await;
    let id = t.issue("+34600000043").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = t.answered(&id).await;
    assert_eq!(v["delivery"]["state"], "failed");
    let error = v["delivery"]["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("invalid destination"), "{error}");
    assert!(fake.sent().is_empty());
}

#[tokio::test]
async fn temporary_failures_are_retried() {
    let fake = Arc::new(FakeChannel::new("flaky"));
    fake.script(Outcome::Fail(ChannelError::Temporary {
        reason: "throttled".into(),
        retry_after: Some(Duration::from_millis(1)),
    }));
    let t = TestServer::start_with(|_| {}, Some(fake_channels(&fake))).await;
    t.issue("+34600000044").await;
    wait_until(|| fake.sent().len() == 1).await;
}

#[tokio::test]
async fn push_requests_go_to_the_subjects_devices_and_sms_to_the_sms_channel() {
    let sms = Arc::new(FakeChannel::new("sms"));
    let push = Arc::new(FakePusher::new("push"));
    let t = TestServer::start_with(
        |_| {},
        Some(Channels {
            sms: vec![sms.clone()],
            push: Pushers::all(push.clone()),
        }),
    )
    .await;
    let put = t
        .put(
            "/v1/subscribers/12345678Z",
            json!({"phone": "+34600000045", "devices": [
                {"platform": "fcm", "token": "fcm-token-0123456789abcdef", "app": "es.gob.clave"}
            ]}),
        )
        .await;
    assert!(put.status < 300, "{}", put.text);
    let a = t
        .post(
            "/v1/verifications",
            json!({"subject": "12345678Z", "channel": "push"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["delivery"]["channel"], "push");
    t.issue("+34600000046").await;
    wait_until(|| push.pushed().len() == 1 && sms.sent().len() == 1).await;
    let pushed = &push.pushed()[0];
    assert_eq!(pushed.token, "fcm-token-0123456789abcdef");
    assert_eq!(pushed.app, "es.gob.clave");
    assert_eq!(pushed.match_code.as_deref(), a.body["match_code"].as_str());
    assert_eq!(sms.sent()[0].to, "+34600000046");
}

#[tokio::test]
async fn shutdown_delivers_everything_accepted() {
    let fake = Arc::new(FakeChannel::gated("slow"));
    let t =
        TestServer::start_with(|c| c.delivery.concurrency = 4, Some(fake_channels(&fake))).await;
    for i in 0..20 {
        t.issue(&format!("+346000001{i:02}")).await;
    }
    fake.release(20);
    t.stop().await;
    assert_eq!(
        fake.sent().len(),
        20,
        "every accepted send went out before exit"
    );
}
