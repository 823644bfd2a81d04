//! otpd nodes on a real `redis-server`: state shared across nodes, and what a node
//! does while Redis is away.

use std::time::{Duration, Instant};

use otpd::config::StoreKind;
use otpd_e2e::TestServer;
use otpd_e2e::redis::RedisServer;
use serde_json::json;

async fn node(redis: &RedisServer, tweak: impl FnOnce(&mut otpd::Config)) -> TestServer {
    let url = redis.url();
    TestServer::start_with(
        move |c| {
            c.store.kind = StoreKind::Redis;
            c.redis.urls = vec![url];
            c.redis.timeout = Duration::from_millis(300);
            c.redis.connect_timeout = Duration::from_millis(300);
            tweak(c);
        },
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_sent_by_one_node_checks_on_another() {
    let redis = RedisServer::start();
    let a = node(&redis, |_| {}).await;
    let b = node(&redis, |_| {}).await;
    let id = a.issue("+34600100200").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = a.code(&id, 1).await;
    // B knows it, and a wrong code there counts for A too.
    let v = b.get(&format!("/v1/verifications/{id}")).await;
    assert_eq!(v.status, 200, "{}", v.text);
    assert_eq!(v.body["status"], "pending");
    let wrong = b.check(&id, "000000").await;
    assert_eq!(wrong.body["attempts_left"], 4, "{}", wrong.text);
    let right = b.check(&id, &code).await;
    assert_eq!(right.status, 200, "{}", right.text);
    assert_eq!(right.body["status"], "approved");
    let again = a.check(&id, &code).await;
    assert_ne!(
        again.body["status"], "approved",
        "a code approves once, on any node"
    );
    // A repeat request on B finds A's verification (same number and purpose).
    let id2 = b.issue("+34600100201").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dup = a
        .post("/v1/verifications", json!({"to": "+34600100201"}))
        .await;
    assert_eq!(dup.status, 200, "{}", dup.text);
    assert_eq!(dup.body["id"], id2);
    assert_eq!(dup.header("otpd-deduplicated"), Some("true"));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_nodes() {
    let redis = RedisServer::start();
    let tweak = |c: &mut otpd::Config| {
        c.limits.ip = otpd::config::Rate::per(3, 600);
    };
    let a = node(&redis, tweak).await;
    let b = node(&redis, tweak).await;
    let ask = |n: u32| json!({"to": format!("+3460020{n:04}"), "ip": "198.51.100.7"});
    for (server, n) in [(&a, 1), (&b, 2), (&a, 3)] {
        let r = server.post("/v1/verifications", ask(n)).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = b.post("/v1/verifications", ask(4)).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.body["error"]["limit"], "ip");
    let r = a.post("/v1/verifications", ask(5)).await;
    assert_eq!(r.status, 429, "{}", r.text);
    // Another address is not concerned.
    let r = a
        .post(
            "/v1/verifications",
            json!({"to": "+34600209999", "ip": "198.51.100.8"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_requests_fail_fast_and_service_resumes_with_nothing_lost() {
    let mut redis = RedisServer::start_durable();
    let a = node(&redis, |_| {}).await;
    let id = a.issue("+34600300400").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = a.code(&id, 1).await;

    redis.kill();
    let started = Instant::now();
    let mut answers = Vec::new();
    for n in 0..5 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            a.post(
                "/v1/verifications",
                json!({"to": format!("+3460030{n:04}")}),
            ),
        )
        .await
        .expect("an answer, not a hang");
        answers.push(r);
    }
    let took = started.elapsed();
    for r in &answers {
        assert_eq!(r.status, 503, "{}", r.text);
        assert!(r.header("retry-after").is_some());
    }
    assert!(took < Duration::from_secs(5), "5 requests took {took:?}");
    let check = a.check(&id, &code).await;
    assert_eq!(check.status, 503, "{}", check.text);
    let health = a.get("/healthz").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.body["store"], "unavailable");

    // Redis comes back with its append-only file: the node serves again by itself,
    // and what it accepted before the outage is there.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.get("/healthz").await.status != 200 {
        assert!(Instant::now() < deadline, "the node did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let check = a.check(&id, &code).await;
    assert_eq!(check.status, 200, "{}", check.text);
    assert_eq!(check.body["status"], "approved");
    let r = a
        .post("/v1/verifications", json!({"to": "+34600309999"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    a.stop().await;
}
