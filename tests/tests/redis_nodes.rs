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

/// Every outbox line of every node, by (verification, send).
fn delivered(nodes: &[&TestServer]) -> Vec<((String, u64), serde_json::Value)> {
    nodes
        .iter()
        .flat_map(|n| n.outbox_lines())
        .map(|l| {
            let key = (
                l["verification_id"].as_str().unwrap_or("").to_string(),
                l["send"].as_u64().unwrap_or(0),
            );
            (key, l)
        })
        .collect()
}

/// The code of send 1 of `id`, from whichever node delivered it (any node's
/// workers take any node's jobs).
async fn code_from(nodes: &[&TestServer], id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((_, line)) = delivered(nodes)
            .into_iter()
            .find(|((v, n), _)| v == id && *n == 1)
        {
            return otpd_e2e::code_in(line["text"].as_str().expect("text"));
        }
        assert!(Instant::now() < deadline, "{id} was never delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_is_delivered_once_by_some_node() {
    let redis = RedisServer::start();
    let a = node(&redis, |_| {}).await;
    let b = node(&redis, |_| {}).await;
    let mut ids = Vec::new();
    for n in 0..40 {
        let on = if n % 4 == 0 { &b } else { &a };
        ids.push(
            on.issue(&format!("+3460040{n:04}")).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for id in &ids {
        code_from(&[&a, &b], id).await;
    }
    let lines = delivered(&[&a, &b]);
    assert_eq!(lines.len(), 40, "each job once: {lines:?}");
    // Each delivery is recorded on its verification, whichever node made it, and
    // the streams hold no answered job.
    for id in &ids {
        let v = a.answered(id).await;
        assert_eq!(v["delivery"]["state"], "sent", "{v}");
    }
    let queued: usize = (0..64)
        .map(|p| {
            redis
                .cli(&["XLEN", &format!("otpd:{{{p}}}:q")])
                .trim()
                .parse::<usize>()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(queued, 0);
    a.stop().await;
    b.stop().await;
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
    let code = code_from(&[&a, &b], &id).await;
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
    let code = code_from(&[&a], &id).await;

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

/// A node that died after reading jobs: its jobs sit pending in the group under its
/// name. Another node claims them once idle and delivers each once; the one the dead
/// node had already taken (it may have reached the channel) is not sent again but
/// recorded as interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_jobs_are_claimed_and_sent_once() {
    use otpd::store::{IssueOutcome, JobLedger, TakeSend, Verifications};

    let redis = RedisServer::start();
    // Jobs queued as a node would queue them, read by "ghost", which then dies.
    let store = store_on(&redis);
    let keys = test_keys();
    let mut ids = Vec::new();
    for n in 0..5u64 {
        let v = candidate(&keys, n);
        let id = v.id;
        assert!(matches!(
            store
                .issue(&v, otpd_e2e::T0, &otpd::policy::limiter::IssueLimits::NONE)
                .await
                .unwrap(),
            IssueOutcome::Created
        ));
        ids.push(id);
    }
    let streams: Vec<String> = (0..64).map(|p| format!("otpd:{{{p}}}:q")).collect();
    for s in &streams {
        redis.cli(&["XGROUP", "CREATE", s, "otpd", "0", "MKSTREAM"]);
        redis.cli(&[
            "XREADGROUP",
            "GROUP",
            "otpd",
            "ghost",
            "COUNT",
            "100",
            "STREAMS",
            s,
            ">",
        ]);
    }
    // The ghost had taken the first send of the first one when it died.
    assert_eq!(
        store.take_send(&ids[0], 1, "ghost").await.unwrap(),
        TakeSend::Go
    );

    let b = node(&redis, |c| c.redis.claim_after = Duration::from_millis(300)).await;
    for id in &ids[1..] {
        code_from(&[&b], &id.to_string()).await;
    }
    let first = b.answered(&ids[0].to_string()).await;
    assert_eq!(first["delivery"]["state"], "failed", "{first}");
    assert!(
        first.to_string().contains("interrupted"),
        "the taken send is recorded as interrupted: {first}"
    );
    // A while later nothing more has gone out: each once, the interrupted never.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let lines = delivered(&[&b]);
    assert_eq!(lines.len(), 4, "{lines:?}");
    for id in &ids[1..] {
        let v = b.answered(&id.to_string()).await;
        assert_eq!(v["delivery"]["state"], "sent", "{v}");
        assert_eq!(
            otpd_e2e::code_in(
                lines
                    .iter()
                    .find(|((v, _), _)| *v == id.to_string())
                    .unwrap()
                    .1["text"]
                    .as_str()
                    .unwrap()
            ),
            "123456",
            "the code, unsealed by the node that sent it"
        );
    }
    b.stop().await;
}

fn test_keys() -> otpd::secrets::code::CodeKeys {
    otpd::secrets::code::CodeKeys::derive(b"test secret, long enough for otpd: 0123456789")
}

/// A verification of code 123456 to a number of its own, by SMS.
fn candidate(
    keys: &otpd::secrets::code::CodeKeys,
    n: u64,
) -> otpd::domain::verification::Verification {
    let to = otpd::numbers::e164::E164::from_digits_unchecked(34_600_500_000 + n);
    let id =
        otpd::secrets::id::VerificationId::new(otpd::secrets::id::ShardTag::of(to), [n as u8; 14]);
    let code = otpd::secrets::code::Code::parse("123456").unwrap();
    otpd::domain::verification::Verification::new(
        otpd::domain::verification::NewVerification {
            id,
            to,
            line: Default::default(),
            purpose: "login".into(),
            subject: None,
            client: None,
            locale: otpd::domain::locale::Locale::En,
            channel: otpd::domain::verification::RequestedChannel::Sms,
            first_send: otpd_adapters::ChannelKind::Sms,
            code_mac: keys.mac(&id, &code),
            sealed_code: keys.seal(&id, &code),
            policy: otpd::domain::verification::Policy {
                ttl: Duration::from_secs(600),
                code_length: otpd::secrets::code::CodeLength::new(6).unwrap(),
                max_attempts: 5,
                max_sends: 5,
                resend_cooldown: Duration::from_secs(30),
                escalate_after: Duration::from_secs(60),
            },
            match_code: None,
            challenge: None,
        },
        otpd_e2e::T0,
    )
}

fn store_on(redis: &RedisServer) -> otpd::store::RedisStore {
    otpd::store::RedisStore::new(
        otpd::store::redis::Redis::new(&otpd::config::RedisConfig {
            urls: vec![redis.url()],
            ..Default::default()
        })
        .unwrap(),
        otpd::store::redis::Keys::new(
            "otpd",
            64,
            otpd::secrets::code::CodeKeys::derive(b"a test secret, thirty-two bytes long")
                .pseudonyms(),
        ),
        Duration::from_secs(600),
    )
    .with_queue(100)
}

/// The node that accepts a request is handed its job by the script that queues it:
/// the job is pending with that node at once (no read of the streams), and reaches
/// its workers' queue — while fewer than `ahead` wait there; past that, the job is
/// left unread in the stream for any node.
#[tokio::test]
async fn the_accepting_node_is_handed_its_job_in_the_same_step() {
    use otpd::store::redis::Handoff;
    use otpd::store::redis::queue::JobReader;
    use otpd::store::{IssueOutcome, Verifications};

    let redis = RedisServer::start();
    for p in 0..64 {
        redis.cli(&[
            "XGROUP",
            "CREATE",
            &format!("otpd:{{{p}}}:q"),
            "otpd",
            "0",
            "MKSTREAM",
        ]);
    }
    let keys = test_keys();
    let (queue, mut jobs) =
        otpd::delivery::DeliveryQueue::bounded(10, std::time::Duration::from_secs(5));
    let store = store_on(&redis).with_handoff(Handoff {
        reader: std::sync::Arc::new(JobReader {
            name: "node-a".into(),
            codes: keys.clone(),
            provider_ack: Default::default(),
            held: Default::default(),
        }),
        queue,
        ahead: 2,
    });
    let issued: Vec<_> = (0..3).map(|n| candidate(&keys, n)).collect();
    for v in &issued {
        assert!(matches!(
            store
                .issue(v, otpd_e2e::T0, &otpd::policy::limiter::IssueLimits::NONE)
                .await
                .unwrap(),
            IssueOutcome::Created
        ));
    }
    for v in &issued[..2] {
        let job = jobs.try_recv().expect("handed over");
        assert_eq!((job.id, job.send), (v.id, 1));
        assert_eq!(job.code.expose_digits().as_str(), "123456", "unsealed");
        let receipt = job.receipt.as_ref().expect("from the stream");
        assert!(!receipt.claimed);
        let pending = redis.cli(&["XPENDING", &receipt.stream, "otpd"]);
        assert!(pending.contains("node-a"), "{pending}");
    }
    assert!(
        jobs.try_recv().is_none(),
        "two wait already: the third is left"
    );
    let stream = otpd::store::redis::Keys::new(
        "otpd",
        64,
        otpd::secrets::code::CodeKeys::derive(b"a test secret, thirty-two bytes long").pseudonyms(),
    )
    .stream_of(&issued[2].id);
    let pending = redis.cli(&["XPENDING", &stream, "otpd"]);
    assert!(pending.starts_with('0'), "nobody has it yet: {pending}");
    assert_eq!(redis.cli(&["XLEN", &stream]).trim(), "1");
}

/// The same on a 3-master Redis Cluster: each partition's stream is read on its own
/// shard, and every job is still delivered once and recorded on its verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_every_job_is_delivered_once_by_some_node() {
    use otpd_e2e::redis::RedisCluster;

    let cluster = RedisCluster::start(3);
    let on_cluster = |urls: Vec<String>| {
        move |c: &mut otpd::Config| {
            c.store.kind = StoreKind::Redis;
            c.redis.urls = urls;
            c.redis.cluster = true;
            c.redis.timeout = Duration::from_millis(500);
        }
    };
    let a = TestServer::start_with(on_cluster(cluster.urls()), None).await;
    let b = TestServer::start_with(on_cluster(cluster.urls()), None).await;
    let mut ids = Vec::new();
    for n in 0..24 {
        let on = if n % 2 == 0 { &a } else { &b };
        let r = on
            .post(
                "/v1/verifications",
                json!({"to": format!("+3460080{n:04}")}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        code_from(&[&a, &b], id).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = delivered(&[&a, &b]);
    assert_eq!(lines.len(), 24, "each job once: {lines:?}");
    for id in &ids {
        let v = b.answered(id).await;
        assert_eq!(v["delivery"]["state"], "sent", "{v}");
    }
    a.stop().await;
    b.stop().await;
}

/// Over TLS (`rediss://`, the server's certificate checked against `redis.tls_ca`)
/// as an ACL user with a password; the default user is switched off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_as_an_acl_user() {
    otpd_adapters::push::http::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = dir.path().join("redis.crt");
    let key = dir.path().join("redis.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let tls_port = otpd_e2e::redis::free_port();
    let tls_port_arg = tls_port.to_string();
    let redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--tls-port",
        &tls_port_arg,
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        cert.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    redis.cli(&[
        "ACL",
        "SETUSER",
        "otpd",
        "on",
        ">s3cret-pass",
        "~*",
        "&*",
        "+@all",
    ]);
    redis.cli(&["ACL", "SETUSER", "default", "off"]);

    let (ca, url) = (cert.clone(), format!("rediss://127.0.0.1:{tls_port}"));
    let node = |password: &'static str| {
        let (ca, url) = (ca.clone(), url.clone());
        move |c: &mut otpd::Config| {
            c.store.kind = StoreKind::Redis;
            c.redis.urls = vec![url];
            c.redis.tls_ca = Some(ca);
            c.redis.username = Some("otpd".into());
            c.redis.password = Some(password.into());
            c.redis.timeout = Duration::from_millis(500);
            c.redis.connect_timeout = Duration::from_millis(500);
        }
    };
    let a = TestServer::start_with(node("s3cret-pass"), None).await;
    assert_eq!(a.get("/healthz").await.status, 200);
    let id = a.issue("+34600900100").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = code_from(&[&a], &id).await;
    let r = a.check(&id, &code).await;
    assert_eq!(r.body["status"], "approved", "{}", r.text);

    // A wrong password: the store is unavailable, and the node says so.
    let wrong = TestServer::start_with(node("wrong"), None).await;
    let r = wrong
        .post("/v1/verifications", json!({"to": "+34600900101"}))
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(wrong.get("/healthz").await.status, 503);
    a.stop().await;
    wrong.stop().await;
}

/// A send whose receipt never comes is closed as `unconfirmed` once the carrier's
/// `receipt_wait` past the code's expiry has gone by — read on another node, after
/// the node that sent it (and held its bookkeeping) has stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_node_stopped_and_receipt_never_came_closes_unconfirmed() {
    use otpd::config::SmppCarrierConfig;
    use otpd_simulators::smsc::{Account, ReceiptPolicy, Smsc, SmscConfig};

    let redis = RedisServer::start();
    let smsc = Smsc::start(SmscConfig {
        accounts: vec![Account {
            system_id: "otpd".into(),
            password: "secret".into(),
        }],
        // The receipt is lost: it would come in an hour.
        receipts: ReceiptPolicy {
            delay: Duration::from_secs(3600),
            ..ReceiptPolicy::default()
        },
        ..SmscConfig::default()
    })
    .await
    .unwrap();
    let port = smsc.addr().port();
    let a = node(&redis, move |c| {
        c.channels.smpp.insert(
            "movistar".into(),
            SmppCarrierConfig {
                port,
                system_id: "otpd".into(),
                password: "secret".into(),
                source_addr: "Clave".into(),
                receipt_wait: Duration::from_secs(120),
                ..SmppCarrierConfig::default()
            },
        );
        c.delivery.sms = "smpp.movistar".into();
    })
    .await;
    let r = a
        .post("/v1/verifications", json!({"to": "+34600777001"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let sent = a.answered(&id).await;
    assert_eq!(sent["delivery"]["state"], "sent", "{sent}");
    let expires_at = sent["expires_at"].clone();
    a.stop().await;

    let b = node(&redis, |_| {}).await;
    // Ten minutes of validity and a minute more: the receipt is not due yet.
    b.clock.advance(Duration::from_secs(660));
    let v = b.get(&format!("/v1/verifications/{id}")).await.body;
    assert_eq!(v["delivery"]["state"], "sent", "{v}");
    // Past the carrier's wait after expiry: closed, and said when.
    b.clock.advance(Duration::from_secs(61));
    let v = b.get(&format!("/v1/verifications/{id}")).await.body;
    assert_eq!(v["delivery"]["state"], "unconfirmed", "{v}");
    assert_eq!(v["expires_at"], expires_at);
    assert!(
        v["delivery"]["attempts"][0]["reported_at"].is_string(),
        "{v}"
    );
    b.stop().await;
}
