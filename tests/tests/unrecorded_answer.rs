//! A node whose store refuses to record a channel's answer: the answer is kept, and
//! recorded when the job comes back to the node, which acknowledges it. In a test
//! binary of its own: it reads a process-wide counter other tests would move.

use std::time::{Duration, Instant};

use otpd::config::StoreKind;
use otpd_e2e::TestServer;
use otpd_e2e::redis::RedisServer;
use serde_json::json;

/// A send whose answer this node could not record — Redis refused every try — is
/// not left to cycle in the stream: when the idle job comes back to the node that
/// made it, the answer it kept is recorded and the job acknowledged. Nothing is sent
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_could_not_be_recorded_lands_when_its_job_comes_back() {
    use std::sync::Arc;

    use otpd::delivery::{Channels, Pushers};
    use otpd_adapters::fake::FakeChannel;
    use otpd_adapters::push::fake::FakePusher;

    let redis = RedisServer::start();
    let fake = Arc::new(FakeChannel::gated("held"));
    let url = redis.url();
    let t = TestServer::start_with(
        move |c| {
            c.store.kind = StoreKind::Redis;
            c.redis.urls = vec![url];
            c.redis.timeout = Duration::from_millis(300);
            c.redis.claim_after = Duration::from_millis(300);
        },
        Some(Channels {
            sms: vec![fake.clone()],
            push: Pushers::all(Arc::new(FakePusher::new("push"))),
        }),
    )
    .await;
    let r = t
        .post("/v1/verifications", json!({"to": "+34600123456"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    // The worker took the send (its name is on the record) and waits on the channel.
    let key = redis
        .cli(&["--scan", "--pattern", &format!("*:v:{id}")])
        .trim()
        .to_string();
    eventually("taken", || {
        !redis.cli(&["HGET", &key, "1k"]).trim().is_empty()
    })
    .await;
    // From now on Redis refuses scripts: the answer cannot be recorded.
    redis.cli(&["ACL", "SETUSER", "default", "-eval", "-evalsha"]);
    fake.release(1);
    // Every try refused (the first and its three retries): the node counts the
    // answer it could not record.
    let unrecorded = || async {
        let text = t.get("/metrics").await.text;
        text.lines()
            .find(|l| l.starts_with("otpd_send_results_unrecorded_total"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while unrecorded().await < 1.0 {
        assert!(Instant::now() < deadline, "the answer was never given up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.cli(&["ACL", "SETUSER", "default", "+@all"]);
    // The idle job comes back to this node, which records what it kept.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = t.get(&format!("/v1/verifications/{id}")).await.body;
        if v["delivery"]["state"] == "sent" {
            break;
        }
        assert!(Instant::now() < deadline, "the answer never landed: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually("acknowledged", || {
        let pending: u64 = (0..64)
            .map(|p| {
                let out = redis.cli(&["XPENDING", &format!("otpd:{{{p}}}:q"), "otpd"]);
                out.lines()
                    .next()
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(0)
            })
            .sum();
        pending == 0
    })
    .await;
    assert_eq!(fake.sent().len(), 1, "sent once");
    t.stop().await;
}

/// Wait (bounded) until `done` holds, checking every 10 ms.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
