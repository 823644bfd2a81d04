//! Routing over real SMPP: two simulated SMSCs on loopback, otpd's carriers bound to
//! them, failover when one fails, no failover when the number is at fault, the
//! circuit breaker, a carrier's throughput cap counted at the SMSC, blocked prefixes,
//! the admin explanation and reloads.

use std::time::{Duration, Instant};

use otpd::config::{Config, RouteCarrier, RouteConfig, SmppCarrierConfig};
use otpd_e2e::TestServer;
use otpd_simulators::smsc::{Fault, Smsc, SmscConfig};
use serde_json::json;

async fn smsc(config: SmscConfig) -> Smsc {
    Smsc::start(config).await.expect("simulator starts")
}

fn failing() -> SmscConfig {
    SmscConfig {
        // ESME_RSYSERR on every submit: the carrier is up but broken.
        random_faults: vec![(Fault::Status(0x08), 1_000_000)],
        ..SmscConfig::default()
    }
}

fn carrier(smsc: &Smsc) -> SmppCarrierConfig {
    SmppCarrierConfig {
        port: smsc.addr().port(),
        system_id: "otpd".into(),
        password: "secret".into(),
        binds: 2,
        reconnect_min: Duration::from_millis(10),
        reconnect_max: Duration::from_millis(100),
        response_timeout: Duration::from_secs(2),
        submit_timeout: Duration::from_secs(2),
        ..SmppCarrierConfig::default()
    }
}

/// otpd with carriers `a` and `b`, `a` first on the default route.
async fn two_carriers(a: &Smsc, b: &Smsc, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let (ca, cb) = (carrier(a), carrier(b));
    let t = TestServer::start_with(
        move |c| {
            c.channels.smpp.insert("a".into(), ca);
            c.channels.smpp.insert("b".into(), cb);
            c.routing.default = vec![
                RouteCarrier::Name("a".into()),
                RouteCarrier::Name("b".into()),
            ];
            c.delivery.retry_backoff = Duration::from_millis(20);
            tweak(c);
        },
        None,
    )
    .await;
    wait_live(&t, &["a", "b"]).await;
    t
}

/// Wait (bounded) until the named carriers have live binds.
async fn wait_live(t: &TestServer, carriers: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let h = t.get("/healthz").await;
        if carriers.iter().all(|c| h.body["channels"][c] == "ok") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "carriers never bound: {}",
            h.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait (bounded) until the first send of `id` is answered; its view.
async fn answered(t: &TestServer, id: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = t.get(&format!("/v1/verifications/{id}")).await.body;
        let state = v["delivery"]["attempts"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if state != "queued" {
            return v["delivery"]["attempts"][0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never answered: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn issue(t: &TestServer, to: &str) -> String {
    let a = t
        .post(
            "/v1/verifications",
            json!({"to": to, "locale": "en", "channel": "sms"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    a.body["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_failing_carrier_fails_over_to_the_next_and_the_history_says_so() {
    let (a, b) = (smsc(failing()).await, smsc(SmscConfig::default()).await);
    let t = two_carriers(&a, &b, |_| {}).await;
    let id = issue(&t, "+34600000201").await;
    let send = answered(&t, &id).await;
    assert!(
        matches!(send["state"].as_str(), Some("sent" | "delivered")),
        "{send}"
    );
    assert_eq!(send["carrier"], "b", "{send}");
    assert_eq!(send["route"], "default");
    assert_eq!(send["failovers"][0]["carrier"], "a", "{send}");
    assert!(
        send["failovers"][0]["error"]
            .as_str()
            .unwrap()
            .contains("ESME_RSYSERR"),
        "{send}"
    );
    assert_eq!(send["encoding"], "gsm7");
    assert_eq!(send["segments"], 1);
    assert!(a.stats().refused.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(b.received().len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn a_carrier_without_a_live_bind_is_passed_over() {
    let b = smsc(SmscConfig::default()).await;
    // `a` points at a port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let cb = carrier(&b);
    let t = TestServer::start_with(
        move |c| {
            c.channels.smpp.insert(
                "a".into(),
                SmppCarrierConfig {
                    port,
                    system_id: "otpd".into(),
                    reconnect_min: Duration::from_millis(50),
                    reconnect_max: Duration::from_millis(200),
                    ..SmppCarrierConfig::default()
                },
            );
            c.channels.smpp.insert("b".into(), cb);
            c.routing.default = vec![
                RouteCarrier::Name("a".into()),
                RouteCarrier::Name("b".into()),
            ];
        },
        None,
    )
    .await;
    wait_live(&t, &["b"]).await;
    let id = issue(&t, "+34600000202").await;
    let send = answered(&t, &id).await;
    assert_eq!(send["carrier"], "b", "{send}");
    assert_eq!(send["failovers"][0]["carrier"], "a");
    assert_eq!(send["failovers"][0]["error"], "no live bind");
    t.stop().await;
}

#[tokio::test]
async fn a_refused_number_does_not_fail_over() {
    let (a, b) = (
        smsc(SmscConfig::default()).await,
        smsc(SmscConfig::default()).await,
    );
    let t = two_carriers(&a, &b, |_| {}).await;
    a.inject([Fault::Status(0x0B)]);
    let id = issue(&t, "+34600000203").await;
    let send = answered(&t, &id).await;
    assert_eq!(send["state"], "failed", "{send}");
    assert!(
        send["error"].as_str().unwrap().contains("ESME_RINVDSTADR"),
        "{send}"
    );
    assert_eq!(send["carrier"], "a");
    assert!(send.get("failovers").is_none(), "{send}");
    assert!(b.received().is_empty(), "the other carrier was not tried");
    t.stop().await;
}

#[tokio::test]
async fn the_breaker_opens_on_errors_and_a_failed_probe_reopens_it() {
    let (a, b) = (smsc(failing()).await, smsc(SmscConfig::default()).await);
    let t = two_carriers(&a, &b, |c| {
        c.routing.breaker.min_sends = 3;
        c.routing.breaker.error_rate = 0.5;
        c.routing.breaker.cool_down = Duration::from_secs(30);
    })
    .await;
    for i in 0..3 {
        let id = issue(&t, &format!("+3460000021{i}")).await;
        assert_eq!(answered(&t, &id).await["carrier"], "b");
    }
    let refused = || a.stats().refused.load(std::sync::atomic::Ordering::Relaxed);
    // (The bind retries a transient status itself a few times before giving up.)
    let before = refused();
    assert!(before >= 3);
    // Open: `a` is skipped without being asked.
    let id = issue(&t, "+34600000214").await;
    let send = answered(&t, &id).await;
    assert_eq!(send["carrier"], "b");
    assert_eq!(
        send["failovers"][0]["error"], "circuit breaker open",
        "{send}"
    );
    assert_eq!(refused(), before);
    let explain = t.get("/v1/admin/routes?to=%2B34600000215").await;
    assert_eq!(
        explain.body["carriers"][0]["health"]["breaker"], "open",
        "{}",
        explain.text
    );
    assert_eq!(explain.body["carriers"][0]["health"]["available"], false);

    // After the cool-down one probe goes to `a`; it fails, so the breaker re-opens.
    t.clock.advance(Duration::from_secs(31));
    let id = issue(&t, "+34600000216").await;
    assert_eq!(answered(&t, &id).await["carrier"], "b");
    let probed = refused();
    assert!(probed > before, "one probe went to `a`");
    let id = issue(&t, "+34600000217").await;
    let send = answered(&t, &id).await;
    assert_eq!(
        send["failovers"][0]["error"], "circuit breaker open",
        "{send}"
    );
    assert_eq!(refused(), probed, "open again after the failed probe");
    t.stop().await;
}

/// The cap over a real SMPP link, end to end: what reaches the SMSC keeps to it
/// second by second. (Over long stretches the cap is proven on a paused clock, in
/// `throttle`'s own tests; here three seconds' worth is enough, waited for by
/// counting what arrives.)
#[tokio::test]
async fn a_carriers_throughput_cap_holds_at_the_smsc() {
    const TPS: usize = 20;
    let s = smsc(SmscConfig::default()).await;
    let mut c = carrier(&s);
    c.tps = Some(TPS as u32);
    c.binds = 3;
    c.queue_capacity = 10_000;
    let t = TestServer::start_with(
        move |cfg| {
            cfg.channels.smpp.insert("capped".into(), c);
            cfg.delivery.sms = "smpp.capped".into();
            cfg.delivery.concurrency = 256;
        },
        None,
    )
    .await;
    wait_live(&t, &["capped"]).await;
    // Three seconds of the cap, all at once.
    let offered = TPS * 3;
    for i in 0..offered {
        issue(&t, &format!("+346{:08}", 10_000_000 + i)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.received().len() < offered {
        assert!(
            Instant::now() < deadline,
            "{} of {offered} arrived",
            s.received().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut at: Vec<Instant> = s.received().iter().map(|r| r.at).collect();
    at.sort();
    // GCRA with a burst of one: at most TPS in any one second (+ the one at the
    // very start), and the whole lot spread over (offered - 1) / TPS seconds.
    for (i, t0) in at.iter().enumerate() {
        let in_second = at[i..]
            .iter()
            .take_while(|t| t.duration_since(*t0) < Duration::from_secs(1))
            .count();
        assert!(in_second <= TPS + 1, "{in_second} within one second");
    }
    let span = at[offered - 1].duration_since(at[0]);
    let least =
        Duration::from_secs_f64((offered - 1) as f64 / TPS as f64) - Duration::from_millis(60);
    assert!(span >= least, "{offered} spread over {span:?}");
    let metrics = t.get("/metrics").await.text;
    assert!(
        metrics.contains("otpd_carrier_queue_depth{carrier=\"capped\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("otpd_carrier_wait_seconds"),
        "wait time is a metric"
    );
    t.stop().await;
}

#[tokio::test]
async fn blocked_prefixes_and_longest_prefix_routes() {
    let (a, b) = (
        smsc(SmscConfig::default()).await,
        smsc(SmscConfig::default()).await,
    );
    let t = two_carriers(&a, &b, |c| {
        c.routing.routes = vec![
            RouteConfig {
                prefix: "34".into(),
                carriers: vec![RouteCarrier::Name("a".into())],
                blocked: false,
            },
            RouteConfig {
                prefix: "3460012".into(),
                carriers: vec![RouteCarrier::Name("b".into())],
                blocked: false,
            },
            RouteConfig {
                prefix: "447400".into(),
                carriers: Vec::new(),
                blocked: true,
            },
        ];
    })
    .await;
    let id = issue(&t, "+34600123499").await;
    let send = answered(&t, &id).await;
    assert_eq!(
        (send["carrier"].as_str(), send["route"].as_str()),
        (Some("b"), Some("3460012"))
    );
    let id = issue(&t, "+34610000001").await;
    let send = answered(&t, &id).await;
    assert_eq!(
        (send["carrier"].as_str(), send["route"].as_str()),
        (Some("a"), Some("34"))
    );
    let id = issue(&t, "+447400123456").await;
    let send = answered(&t, &id).await;
    assert_eq!(send["state"], "failed");
    assert!(
        send["error"].as_str().unwrap().contains("blocked"),
        "{send}"
    );
    assert_eq!(a.received().len() + b.received().len(), 2);
    t.stop().await;
}

#[tokio::test]
async fn a_code_too_close_to_expiry_is_marked_expired_not_sent() {
    let (a, b) = (smsc(failing()).await, smsc(failing()).await);
    let t = two_carriers(&a, &b, |c| {
        c.purposes.get_mut("login").unwrap().ttl = Duration::from_secs(60);
        c.purposes.get_mut("login").unwrap().escalate_after = Duration::from_secs(30);
        c.purposes.get_mut("login").unwrap().resend_cooldown = Duration::from_secs(10);
        c.routing.min_validity_left = Duration::from_secs(59);
        c.delivery.max_attempts = 10;
        c.delivery.retry_backoff = Duration::from_millis(50);
    })
    .await;
    let id = issue(&t, "+34600000220").await;
    // Both carriers fail; then the manual clock moves past the send deadline (60 s
    // validity, 59 s must be left) before the next round can send.
    let deadline = Instant::now() + Duration::from_secs(10);
    let tried = |s: &Smsc| s.stats().submits.load(std::sync::atomic::Ordering::Relaxed) > 0;
    while !(tried(&a) && tried(&b)) {
        assert!(Instant::now() < deadline, "both carriers were tried");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t.clock.advance(Duration::from_secs(2));
    let send = answered(&t, &id).await;
    assert_eq!(send["state"], "expired", "{send}");
    assert!(
        send["error"].as_str().unwrap().contains("validity left"),
        "{send}"
    );
    t.stop().await;
}

#[tokio::test]
async fn the_admin_view_explains_a_number() {
    let (a, b) = (
        smsc(SmscConfig::default()).await,
        smsc(SmscConfig::default()).await,
    );
    let t = two_carriers(&a, &b, |c| {
        c.routing.routes = vec![RouteConfig {
            prefix: "34".into(),
            carriers: vec![
                RouteCarrier::Weighted {
                    carrier: "a".into(),
                    priority: Some(1),
                    weight: Some(3),
                },
                RouteCarrier::Weighted {
                    carrier: "b".into(),
                    priority: Some(1),
                    weight: Some(1),
                },
            ],
            blocked: false,
        }];
    })
    .await;
    let e = t.get("/v1/admin/routes?to=600%2012%2034%2056").await;
    assert_eq!(e.status, 200, "{}", e.text);
    let b = &e.body;
    assert_eq!(b["number"], "+34600123456");
    assert_eq!(b["country"], "ES");
    assert_eq!(b["number_type"], "mobile");
    assert_eq!(b["route"]["prefix"], "34");
    assert_eq!(b["carriers"][0]["carrier"], "a");
    assert_eq!(b["carriers"][0]["share"], 0.75);
    assert_eq!(b["carriers"][1]["share"], 0.25);
    assert_eq!(b["carriers"][0]["health"]["live"], true);
    assert_eq!(b["carriers"][0]["health"]["breaker"], "closed");
    assert_eq!(b["template"]["locale"], "es");
    assert_eq!(b["template"]["locale_from"], "country");
    assert_eq!(b["template"]["encoding"], "ucs2");
    assert_eq!(b["template"]["segments"], 1);

    let e = t.get("/v1/admin/routes?to=%2B447400123456&locale=eu").await;
    assert_eq!(e.body["route"]["prefix"], "default");
    assert_eq!(e.body["template"]["encoding"], "gsm7");
    for (query, code) in [
        ("", "missing_field"),
        ("?to=912345678", "invalid_phone_number"),
        ("?to=600123456&purpose=nope", "unknown_purpose"),
        ("?to=600123456&locale=fr", "unsupported_locale"),
        ("?to=600123456&color=red", "unknown_field"),
    ] {
        let e = t.get(&format!("/v1/admin/routes{query}")).await;
        assert_eq!(e.status, 400, "{query}: {}", e.text);
        assert_eq!(e.error_code(), code, "{query}");
    }
    t.stop().await;
}

async fn explain(t: &TestServer) -> otpd_e2e::Answer {
    t.get("/v1/admin/routes?to=%2B447400123456&locale=en").await
}

#[tokio::test]
async fn a_reload_swaps_routes_and_templates_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("otpd.toml");
    let write = |routes: &str, text: &str| {
        std::fs::write(
            &file,
            format!(
                "[routing]\n{routes}\n[[messages.templates]]\npurpose = \"*\"\nlocale = \"en\"\ntext = \"{text}\"\n"
            ),
        )
        .unwrap();
    };
    write("", "First {code}");
    let t = TestServer::start_from_file(&file).await;
    assert_eq!(explain(&t).await.body["route"]["prefix"], "default");
    let id = issue(&t, "+447400123456").await;
    let line = t.outbox_line(&id, 1).await;
    assert!(
        line["text"].as_str().unwrap().starts_with("First "),
        "{line}"
    );

    write(
        "[[routing.routes]]\nprefix = \"44\"\ncarriers = [\"file\"]\n",
        "Second {code}",
    );
    let r = t.post("/v1/admin/reload", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(explain(&t).await.body["route"]["prefix"], "44");
    let id = issue(&t, "+447400123457").await;
    let line = t.outbox_line(&id, 1).await;
    assert!(
        line["text"].as_str().unwrap().starts_with("Second "),
        "{line}"
    );

    // Broken: an unknown placeholder. Refused with the reason; the old plan stays.
    write("", "Third {pin}");
    let r = t.post("/v1/admin/reload", json!({})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.error_code(), "invalid_config");
    assert!(r.text.contains("{pin}"), "{}", r.text);
    // A route to a carrier that does not run: refused too.
    std::fs::write(
        &file,
        "[routing]\ndefault = [\"smpp.ghost\"]\n[channels.smpp.ghost]\nsystem_id = \"x\"\n",
    )
    .unwrap();
    let r = t.post("/v1/admin/reload", json!({})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("ghost"), "{}", r.text);
    assert_eq!(explain(&t).await.body["route"]["prefix"], "44");
    let id = issue(&t, "+447400123458").await;
    let line = t.outbox_line(&id, 1).await;
    assert!(
        line["text"].as_str().unwrap().starts_with("Second "),
        "{line}"
    );
    t.stop().await;
}

/// An operator suspends a carrier at the peak: only admin clients may; what waits
/// in its line under the cap moves on to the route's next carrier at once, new
/// messages go there too, the delivery history says why, the action is an event
/// (hence an audit record) naming the admin client; resumed, it is routed to again.
#[tokio::test]
async fn an_operator_suspends_a_carrier_and_its_line_drains_to_the_next() {
    use otpd::config::ClientConfig;
    use otpd::policy::clients::hash_key;
    let (a, b) = (
        smsc(SmscConfig::default()).await,
        smsc(SmscConfig::default()).await,
    );
    let t = two_carriers(&a, &b, |c| {
        // One a second on `a`: the rest of a burst waits in its line.
        c.channels.smpp.get_mut("a").unwrap().tps = Some(1);
        c.channels.smpp.get_mut("a").unwrap().queue_capacity = 100;
        c.delivery.concurrency = 64;
        c.clients = vec![
            ClientConfig {
                admin: true,
                ..ClientConfig::new("ops", hash_key("key-of-ops"))
            },
            ClientConfig::new("sede", hash_key("key-of-sede")),
        ];
    })
    .await;
    let post_as = |who: &'static str, path: &str| {
        t.send(
            t.client
                .post(t.url(path))
                .bearer_auth(format!("key-of-{who}")),
        )
    };
    let refused = post_as("sede", "/v1/admin/carriers/a/suspend").await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let unknown = post_as("ops", "/v1/admin/carriers/nope/suspend").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);

    let mut ids = Vec::new();
    for i in 0..6 {
        let answer = t
            .send(
                t.client
                    .post(t.url("/v1/verifications"))
                    .bearer_auth("key-of-sede")
                    .json(&json!({"to": format!("+3460040000{i}")})),
            )
            .await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        ids.push(answer.body["id"].as_str().unwrap().to_string());
    }
    // `a` took the first; the others wait their turn, a second each.
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.received().is_empty() {
        assert!(Instant::now() < deadline, "nothing reached a");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let suspended = post_as("ops", "/v1/admin/carriers/a/suspend").await;
    assert_eq!(suspended.status, 200, "{}", suspended.text);
    assert_eq!(suspended.body["changed"], true);
    assert_eq!(suspended.body["health"]["suspended"], true);
    assert_eq!(suspended.body["health"]["available"], false);
    let suspended_at = Instant::now();
    // Everything still waiting reaches `b`, long before `a`'s line would have let it.
    while a.received().len() + b.received().len() < 6 {
        assert!(
            suspended_at.elapsed() < Duration::from_secs(2),
            "the line did not drain: a {} b {}",
            a.received().len(),
            b.received().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(a.received().len() <= 2, "a kept sending while suspended");
    let view_of = |id: String| {
        t.send(
            t.client
                .get(t.url(&format!("/v1/verifications/{id}")))
                .bearer_auth("key-of-sede"),
        )
    };
    let mut view = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while view.is_none() {
        for id in &ids {
            let v = view_of(id.clone()).await;
            if v.body["delivery"]["attempts"][0]["carrier"] == "b" {
                view = Some(v);
                break;
            }
        }
        assert!(Instant::now() < deadline, "no verification recorded on b");
    }
    let view = view.unwrap();
    assert!(
        view.text.contains("suspended by an operator"),
        "{}",
        view.text
    );

    // The action is an event of the admin client: the audit trail records it.
    let actions: Vec<_> = t
        .events
        .events()
        .into_iter()
        .filter(|e| e.kind == otpd::events::EventKind::CarrierSuspended)
        .collect();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].client.as_deref(), Some("ops"));
    assert_eq!(actions[0].data.carrier.as_deref(), Some("a"));

    let listed = t
        .send(
            t.client
                .get(t.url("/v1/admin/carriers"))
                .bearer_auth("key-of-ops"),
        )
        .await;
    assert_eq!(
        listed.body["carriers"][0]["carrier"], "a",
        "{}",
        listed.text
    );
    assert_eq!(listed.body["carriers"][0]["health"]["suspended"], true);

    // Resumed: routed to again.
    let resumed = post_as("ops", "/v1/admin/carriers/a/resume").await;
    assert_eq!(resumed.body["changed"], true, "{}", resumed.text);
    let before = a.received().len();
    let answer = t
        .send(
            t.client
                .post(t.url("/v1/verifications"))
                .bearer_auth("key-of-sede")
                .json(&json!({"to": "+34600400099"})),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.received().len() == before {
        assert!(
            Instant::now() < deadline,
            "a was not routed to after resume"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.stop().await;
}
