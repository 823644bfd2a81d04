//! Rate limits, API clients and the SMS-pumping defence, over HTTP against a real
//! server on a manual clock.

use std::collections::BTreeMap;
use std::time::Duration;

use otpd::config::{ClientConfig, Config, PumpingMode, Rate};
use otpd::policy::clients::hash_key;
use otpd_e2e::Backend;
use otpd_e2e::{Answer, TestServer};
use serde_json::{Value, json};

fn client(name: &str, admin: bool) -> ClientConfig {
    ClientConfig {
        admin,
        ..ClientConfig::new(name, hash_key(&format!("key-of-{name}")))
    }
}

fn key(name: &str) -> String {
    format!("key-of-{name}")
}

async fn post_as(t: &TestServer, who: &str, path: &str, body: Value) -> Answer {
    t.send(t.client.post(t.url(path)).bearer_auth(key(who)).json(&body))
        .await
}

async fn get_as(t: &TestServer, who: &str, path: &str) -> Answer {
    t.send(t.client.get(t.url(path)).bearer_auth(key(who)))
        .await
}

fn assert_limited(a: &Answer, limit: &str) {
    assert_eq!(a.status, 429, "{}", a.text);
    assert_eq!(a.error_code(), "rate_limited", "{}", a.text);
    assert_eq!(a.body["error"]["limit"], limit, "{}", a.text);
    let retry: u64 = a
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(a.body["error"]["retry_after"], retry);
}

/// A wrong code for `id` (one the outbox shows is not its code).
async fn wrong_check(t: &TestServer, id: &str, ip: Option<&str>) -> Answer {
    let code = t.code(id, 1).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let mut body = json!({"code": wrong});
    if let Some(ip) = ip {
        body["ip"] = json!(ip);
    }
    t.post(&format!("/v1/verifications/{id}/check"), body).await
}

fn with_signup(c: &mut Config) {
    let login = c.purposes["login"];
    c.purposes.insert("signup".into(), login);
    c.purposes.insert("reset".into(), login);
}

async fn api_keys_are_required_once_clients_are_configured(on: Backend) {
    let t = TestServer::start_on(
        on,
        |c| {
            with_signup(c);
            c.clients = vec![
                ClientConfig {
                    purposes: vec!["login".into()],
                    countries: vec!["ES".into()],
                    ..client("sede", false)
                },
                client("ops", true),
            ];
        },
        None,
    )
    .await;
    let body = json!({"to": "+34600000101"});
    let none = t.post("/v1/verifications", body.clone()).await;
    assert_eq!(none.status, 401, "{}", none.text);
    assert_eq!(none.error_code(), "unauthorized");
    assert!(
        none.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );
    let wrong = t
        .send(
            t.client
                .post(t.url("/v1/verifications"))
                .bearer_auth("not-a-key")
                .json(&body),
        )
        .await;
    assert_eq!(wrong.status, 401);
    let basic = t
        .send(
            t.client
                .post(t.url("/v1/verifications"))
                .header("authorization", "Basic c2VkZTpzZWNyZXQ=")
                .json(&body),
        )
        .await;
    assert_eq!(basic.status, 401);
    assert!(
        basic.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bearer")
    );
    // Nothing was made or sent for the refused ones.
    assert!(t.outbox_lines().is_empty());

    let created = post_as(&t, "sede", "/v1/verifications", body.clone()).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_string();

    let abroad = post_as(
        &t,
        "sede",
        "/v1/verifications",
        json!({"to": "+33612345678"}),
    )
    .await;
    assert_eq!(abroad.status, 403, "{}", abroad.text);
    assert_eq!(abroad.error_code(), "country_not_allowed");
    let other_purpose = post_as(
        &t,
        "sede",
        "/v1/verifications",
        json!({"to": "+34600000102", "purpose": "signup"}),
    )
    .await;
    assert_eq!(other_purpose.status, 403, "{}", other_purpose.text);
    assert_eq!(other_purpose.error_code(), "purpose_not_allowed");

    // Another client neither sees nor checks sede's verification, and its tries
    // cost sede's nothing.
    let path = format!("/v1/verifications/{id}");
    assert_eq!(get_as(&t, "ops", &path).await.status, 404);
    for _ in 0..6 {
        let a = post_as(
            &t,
            "ops",
            &format!("{path}/check"),
            json!({"code": "000000"}),
        )
        .await;
        assert_eq!(a.status, 404, "{}", a.text);
    }
    let cancel = t
        .send(t.client.delete(t.url(&path)).bearer_auth(key("ops")))
        .await;
    assert_eq!(cancel.status, 404);
    let code = t.code(&id, 1).await;
    let ok = post_as(&t, "sede", &format!("{path}/check"), json!({"code": code})).await;
    assert_eq!(ok.body["status"], "approved", "{}", ok.text);

    // Admin endpoints for admin clients only; health and metrics stay open.
    let denied = get_as(&t, "sede", "/v1/admin/limits?to=%2B34600000101").await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.error_code(), "forbidden");
    let view = get_as(&t, "ops", "/v1/admin/limits?to=%2B34600000101&client=sede").await;
    assert_eq!(view.status, 200, "{}", view.text);
    assert_eq!(view.body["client"], "sede");
    assert_eq!(t.get("/healthz").await.status, 200);
    assert_eq!(t.get("/metrics").await.status, 200);
}

async fn idempotency_keys_belong_to_their_client(on: Backend) {
    let t = TestServer::start_on(
        on,
        |c| c.clients = vec![client("a", false), client("b", false)],
        None,
    )
    .await;
    let post = |who: &'static str, to: &'static str| {
        t.send(
            t.client
                .post(t.url("/v1/verifications"))
                .bearer_auth(key(who))
                .header("idempotency-key", "order-1")
                .json(&json!({"to": to})),
        )
    };
    let a = post("a", "+34600000111").await;
    let b = post("b", "+34600000112").await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(
        b.status, 201,
        "the same key from another client is another request: {}",
        b.text
    );
    assert_ne!(a.body["id"], b.body["id"]);
}

async fn a_refused_request_is_charged_to_no_other_limit(on: Backend) {
    let t = TestServer::start_on(
        on,
        |c| {
            with_signup(c);
            c.limits.destination = Rate::per(2, 600);
            c.limits.ip = Rate::per(3, 600);
        },
        None,
    )
    .await;
    let issue = |to: &'static str, purpose: &'static str| {
        t.post(
            "/v1/verifications",
            json!({"to": to, "purpose": purpose, "ip": "192.0.2.7"}),
        )
    };
    assert_eq!(issue("+34600000121", "login").await.status, 201);
    assert_eq!(issue("+34600000121", "signup").await.status, 201);
    // The number's third code in ten minutes: refused by `destination`…
    let third = issue("+34600000121", "reset").await;
    assert_limited(&third, "destination");
    assert_eq!(third.header("retry-after"), Some("300"));
    // …and the address was not charged for it: one more passes, then `ip` refuses.
    assert_eq!(issue("+34600000122", "login").await.status, 201);
    assert_limited(&issue("+34600000123", "login").await, "ip");
    // Once the interval passes, one more code to the number.
    t.clock.advance(Duration::from_secs(300));
    assert_eq!(issue("+34600000121", "reset").await.status, 201);
}

/// Only a request that sends a code is charged: the same request again
/// (deduplicated), a resend too soon, or a full queue costs its limits nothing.
async fn a_request_that_sends_nothing_is_not_charged(on: Backend) {
    let t = TestServer::start_on(
        on,
        |c| {
            with_signup(c);
            c.limits.destination = Rate::per(2, 600);
        },
        None,
    )
    .await;
    let issue = |purpose: &'static str| {
        t.post(
            "/v1/verifications",
            json!({"to": "+34600000191", "purpose": purpose}),
        )
    };
    assert_eq!(issue("login").await.status, 201);
    // The same request again: deduplicated, nothing sent.
    let same = issue("login").await;
    assert_eq!(same.status, 200, "{}", same.text);
    assert_eq!(same.header("otpd-deduplicated"), Some("true"));
    // Past the dedupe window but within the cooldown: refused, nothing sent.
    t.clock.advance(Duration::from_secs(11));
    assert_eq!(issue("login").await.error_code(), "resend_cooldown");
    // So the number still has its second code…
    assert_eq!(issue("signup").await.status, 201);
    // …and no third.
    assert_limited(&issue("reset").await, "destination");
}

async fn limits_per_subject_network_prefix_and_country(on: Backend) {
    let t = TestServer::start_on(
        on,
        |c| {
            c.limits.subject = Rate::per(2, 3600);
            c.limits.ip = Rate::Off;
            c.limits.ip_prefix = Rate::per(3, 600);
            c.limits.prefixes = BTreeMap::from([("+37120".into(), Rate::per(2, 3600))]);
            c.limits.countries = BTreeMap::from([("PT".into(), Rate::per(1, 3600))]);
        },
        None,
    )
    .await;
    let post = |body: Value| t.post("/v1/verifications", body);
    // Subject: two codes an hour, whatever the number.
    for n in ["+34600000131", "+34600000132"] {
        let a = post(json!({"to": n, "subject": "12345678Z"})).await;
        assert_eq!(a.status, 201, "{}", a.text);
    }
    assert_limited(
        &post(json!({"to": "+34600000133", "subject": "12345678Z"})).await,
        "subject",
    );
    // Network: a /24 shares one limit; another network does not.
    for (i, ip) in ["198.51.100.1", "198.51.100.2", "198.51.100.200"]
        .iter()
        .enumerate()
    {
        let to = format!("+3460000014{i}");
        assert_eq!(post(json!({"to": to, "ip": ip})).await.status, 201);
    }
    assert_limited(
        &post(json!({"to": "+34600000149", "ip": "198.51.100.77"})).await,
        "ip_prefix",
    );
    assert_eq!(
        post(json!({"to": "+34600000149", "ip": "203.0.113.9"}))
            .await
            .status,
        201
    );
    // IPv6: one /64.
    for i in 0..3 {
        let ip = format!("2001:db8:0:1::{i}");
        let to = format!("+3460000015{i}");
        assert_eq!(post(json!({"to": to, "ip": ip})).await.status, 201);
    }
    assert_limited(
        &post(json!({"to": "+34600000159", "ip": "2001:db8:0:1:ffff::1"})).await,
        "ip_prefix",
    );
    // Number prefix.
    for n in ["+37120000001", "+37120000002"] {
        assert_eq!(post(json!({"to": n})).await.status, 201);
    }
    assert_limited(&post(json!({"to": "+37120000003"})).await, "prefix");
    // Country.
    assert_eq!(post(json!({"to": "+351912345678"})).await.status, 201);
    assert_limited(&post(json!({"to": "+351912345679"})).await, "country");
    // A malformed address is a 400 naming the field, and charges nothing.
    let bad = post(json!({"to": "+34600000160", "ip": "300.1.1.1"})).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error"]["field"], "ip");
}

async fn guessing_across_verifications_is_stopped(on: Backend) {
    let t = TestServer::start_on(
        on,
        |c| {
            with_signup(c);
            c.limits.check_subject = Rate::per(4, 3600);
            c.limits.check_ip = Rate::per(100, 600);
        },
        None,
    )
    .await;
    let issue = |to: &'static str, purpose: &'static str| {
        t.post(
            "/v1/verifications",
            json!({"to": to, "purpose": purpose, "subject": "12345678Z"}),
        )
    };
    let v1 = issue("+34600000171", "login").await.body;
    let v2 = issue("+34600000172", "signup").await.body;
    let v1: &'static str = v1["id"].as_str().unwrap().to_string().leak();
    let v2: &'static str = v2["id"].as_str().unwrap().to_string().leak();
    let wrong = |id: &'static str| wrong_check(&t, id, None);
    // Three wrong codes on one, one on the other: four, the subject's limit.
    for _ in 0..3 {
        assert_eq!(wrong(v1).await.body["status"], "pending");
    }
    assert_eq!(wrong(v2).await.body["status"], "pending");
    // The fifth, although v2 has attempts left: refused, and v2 is locked.
    let fifth = wrong(v2).await;
    assert_limited(&fifth, "check_subject");
    assert_eq!(fifth.body["status"], "locked");
    let v2_now = t.get(&format!("/v1/verifications/{v2}")).await.body;
    assert_eq!(v2_now["status"], "locked");
    let code = t.code(v2, 1).await;
    let late = t
        .post(
            &format!("/v1/verifications/{v2}/check"),
            json!({"code": code}),
        )
        .await;
    assert_ne!(late.body["status"], "approved", "{}", late.text);
    // And no new code for the subject until the limit allows...
    assert_limited(&issue("+34600000173", "reset").await, "check_subject");
    // ...or an operator gives the budget back (after the helpdesk's checks).
    let bad = t
        .post("/v1/admin/subjects/12345678Z%E2%80%AE/unlock", json!({}))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let unlocked = t
        .post("/v1/admin/subjects/12345678Z/unlock", json!({}))
        .await;
    assert_eq!(unlocked.status, 200, "{}", unlocked.text);
    assert_eq!(unlocked.body["unlocked"], true);
    let action = t
        .events
        .events()
        .into_iter()
        .find(|e| e.kind == otpd::events::EventKind::SubjectUnlocked)
        .expect("the unlock is an event");
    assert_eq!(action.data.subject.as_deref(), Some("12345678Z"));
    let again = issue("+34600000173", "reset").await;
    assert_eq!(again.status, 201, "{}", again.text);
    // The locked verification stays locked.
    let v2_after = t.get(&format!("/v1/verifications/{v2}")).await.body;
    assert_eq!(v2_after["status"], "locked");
}

async fn checks_from_one_address_are_limited_before_they_count(on: Backend) {
    let t = TestServer::start_on(on, |c| c.limits.check_ip = Rate::per(2, 600), None).await;
    let id = t.issue("+34600000181").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let check = |ip: &'static str| wrong_check(&t, &id, Some(ip));
    assert_eq!(check("192.0.2.1").await.body["attempts_left"], 4);
    assert_eq!(check("192.0.2.1").await.body["attempts_left"], 3);
    assert_limited(&check("192.0.2.1").await, "check_ip");
    // The refused check did not cost the verification an attempt.
    assert_eq!(check("192.0.2.2").await.body["attempts_left"], 2);
}

async fn a_surge_of_one_client_cannot_take_anothers_reserved_share(on: Backend) {
    let t = TestServer::start_on(
        on,
        |c| {
            c.limits.purposes = BTreeMap::from([("login".into(), Rate::per(10, 60))]);
            c.clients = vec![
                ClientConfig {
                    reserved: 0.5,
                    ..client("aeat", false)
                },
                client("campaign", true),
            ];
        },
        None,
    )
    .await;
    let mut campaign_ok = 0;
    for i in 0..20 {
        let to = format!("+346000002{i:02}");
        let a = post_as(&t, "campaign", "/v1/verifications", json!({"to": to})).await;
        match a.status {
            201 => campaign_ok += 1,
            429 => assert_eq!(a.body["error"]["limit"], "purpose"),
            other => panic!("{other}: {}", a.text),
        }
    }
    assert_eq!(campaign_ok, 5, "the shared half");
    for i in 0..5 {
        let to = format!("+346000003{i:02}");
        let a = post_as(&t, "aeat", "/v1/verifications", json!({"to": to})).await;
        assert_eq!(a.status, 201, "the reserved half is there: {}", a.text);
    }
    let view = get_as(
        &t,
        "campaign",
        "/v1/admin/limits?to=%2B34600000399&client=aeat",
    )
    .await;
    assert_eq!(view.body["decision"], "purpose", "{}", view.text);
}

async fn deny_listed_ranges_are_refused_with_403(on: Backend) {
    let t = TestServer::start_on(
        on,
        |c| c.limits.pumping.deny = vec!["+37120".into(), "LV".into()],
        None,
    )
    .await;
    let a = t
        .post("/v1/verifications", json!({"to": "+37120000001"}))
        .await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert_eq!(a.error_code(), "destination_denied");
    assert_eq!(a.body["error"]["limit"], "deny_list");
    assert!(t.outbox_lines().is_empty());
}

/// A scripted attacker requests codes for many numbers of one range (they are paid
/// for every SMS those numbers receive) and never types them, from ever-changing
/// addresses, while ordinary people keep asking for codes and typing them. The
/// range is throttled once its conversion is judged; ordinary traffic never notices.
async fn an_sms_pumping_attack_is_throttled_and_ordinary_traffic_is_not(on: Backend) {
    let t = TestServer::start_on(
        on,
        |c| {
            c.limits.ip = Rate::Off;
            c.limits.ip_prefix = Rate::Off;
            let p = &mut c.limits.pumping;
            p.mode = PumpingMode::Throttle;
            p.window = Duration::from_secs(600);
            p.grace = Duration::from_secs(60);
            p.min_sends = 20;
            p.min_conversion = 0.2;
            p.prefix_digits = 6;
            p.throttle = Rate::per(1, 60);
        },
        None,
    )
    .await;
    let (mut attack_sent, mut attack_refused) = (0u32, 0u32);
    let mut attack_sent_late = 0u32;
    let (mut normal_asked, mut normal_approved) = (0u32, 0u32);
    for minute in 0..12u64 {
        for i in 0..15u64 {
            let to = format!("+3712000{:04}", minute * 100 + i);
            let ip = format!("203.0.113.{}", (minute * 15 + i) % 250);
            let a = t
                .post(
                    "/v1/verifications",
                    json!({"to": to, "ip": ip, "locale": "en"}),
                )
                .await;
            match a.status {
                201 => {
                    attack_sent += 1;
                    if minute >= 3 {
                        attack_sent_late += 1;
                    }
                }
                429 => {
                    assert_eq!(a.body["error"]["limit"], "pumping", "{}", a.text);
                    attack_refused += 1;
                }
                other => panic!("{other}: {}", a.text),
            }
        }
        for i in 0..5u64 {
            let to = format!("+3460010{:04}", minute * 10 + i);
            normal_asked += 1;
            let a = t.post("/v1/verifications", json!({"to": to})).await;
            assert_eq!(
                a.status, 201,
                "ordinary traffic is never refused: {}",
                a.text
            );
            let id = a.body["id"].as_str().unwrap().to_string();
            let code = t.code(&id, 1).await;
            let ok = t
                .post(
                    &format!("/v1/verifications/{id}/check"),
                    json!({"code": code}),
                )
                .await;
            if ok.body["status"] == "approved" {
                normal_approved += 1;
            }
        }
        t.clock.advance(Duration::from_secs(60));
    }
    println!(
        "attack: {attack_sent} sent ({attack_sent_late} after minute 3), {attack_refused} refused; ordinary: {normal_approved}/{normal_asked} approved"
    );
    assert_eq!(
        normal_approved, normal_asked,
        "ordinary success rate unaffected"
    );
    // Judged once 20 sends were past the grace: from then on one a minute gets out.
    assert!(attack_refused > 100, "refused {attack_refused}");
    assert!(
        attack_sent_late <= 9 + 1,
        "sent after judgement: {attack_sent_late}"
    );
    assert!(attack_sent < 60, "sent {attack_sent}");

    let view = t.get("/v1/admin/limits?to=%2B37120009999").await;
    assert_eq!(
        view.body["pumping"]["judgement"]["decision"], "suspect",
        "{}",
        view.text
    );
    assert_eq!(view.body["pumping"]["judgement"]["scope"], "+371200");
    let prefix = &view.body["pumping"]["scopes"][0];
    assert_eq!(prefix["scope"], "+371200");
    assert_eq!(prefix["conversions"], 0);
    assert_eq!(prefix["suspect"], true);
    let spain = t.get("/v1/admin/limits?to=%2B34600109999").await;
    assert_eq!(
        spain.body["pumping"]["judgement"]["decision"], "clear",
        "{}",
        spain.text
    );
    assert_eq!(spain.body["decision"], "allowed");

    let metrics = t.get("/metrics").await.text;
    for series in [
        "otpd_pumping_decisions_total{decision=\"throttled\",scope=\"prefix\"}",
        "otpd_pumping_decisions_total{decision=\"throttled_through\",scope=\"prefix\"}",
        "otpd_limit_refusals_total{limit=\"pumping\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing");
    }

    // The operator learns the traffic is real and lifts the judgement: the scope's
    // counts start again, and a request goes out at once.
    let lifted = t
        .post("/v1/admin/pumping/unblock?to=%2B37120009999", json!({}))
        .await;
    assert_eq!(lifted.status, 200, "{}", lifted.text);
    assert!(
        lifted.body["cleared"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "+371200"),
        "{}",
        lifted.text
    );
    let view = t.get("/v1/admin/limits?to=%2B37120009999").await;
    assert_eq!(
        view.body["pumping"]["judgement"]["decision"], "clear",
        "{}",
        view.text
    );
    let again = t
        .post(
            "/v1/verifications",
            json!({"to": "+37120009998", "locale": "en"}),
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert!(
        t.events
            .events()
            .iter()
            .any(|e| e.kind == otpd::events::EventKind::PumpingUnblocked
                && e.data
                    .to
                    .as_deref()
                    .is_some_and(|m| m.ends_with("99") && m.contains('*'))),
        "the unblock is an event, the number masked"
    );
}

async fn monitor_mode_refuses_nothing_and_counts_what_it_would_have(on: Backend) {
    let t = TestServer::start_on(
        on,
        |c| {
            let p = &mut c.limits.pumping;
            p.mode = PumpingMode::Monitor;
            p.window = Duration::from_secs(600);
            p.grace = Duration::from_secs(60);
            p.min_sends = 5;
        },
        None,
    )
    .await;
    for i in 0..10 {
        let a = t
            .post(
                "/v1/verifications",
                json!({"to": format!("+3712000{i:04}")}),
            )
            .await;
        assert_eq!(a.status, 201);
    }
    t.clock.advance(Duration::from_secs(120));
    for i in 10..20 {
        let a = t
            .post(
                "/v1/verifications",
                json!({"to": format!("+3712000{i:04}")}),
            )
            .await;
        assert_eq!(a.status, 201, "monitor mode lets everything through");
    }
    let metrics = t.get("/metrics").await.text;
    assert!(
        metrics
            .contains("otpd_pumping_decisions_total{decision=\"would_refuse\",scope=\"prefix\"}")
    );
}

#[tokio::test]
async fn a_reload_changes_limits_and_clients_and_keeps_counts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("otpd.toml");
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    write("[limits]\ndestination = \"1/10m\"\n");
    let t = TestServer::start_from_file(&file).await;
    let issue = |to: &'static str| t.post("/v1/verifications", json!({"to": to}));
    assert_eq!(issue("+34600000401").await.status, 201);
    t.clock.advance(Duration::from_secs(40));
    assert_limited(&issue("+34600000401").await, "destination");

    // Two a window now (a key's state carries over, so the first number waits out
    // the send it already had).
    write("[limits]\ndestination = \"2/10m\"\n");
    let r = t.post("/v1/admin/reload", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_limited(&issue("+34600000401").await, "destination");
    assert_eq!(issue("+34600000403").await.status, 201);
    t.clock.advance(Duration::from_secs(40));
    assert_eq!(issue("+34600000403").await.status, 201, "resent");
    t.clock.advance(Duration::from_secs(40));
    assert_limited(&issue("+34600000403").await, "destination");

    // A broken limit is refused with its key named; the limits in force stay.
    write("[limits]\ndestination = \"lots\"\n");
    let r = t.post("/v1/admin/reload", json!({})).await;
    assert_eq!(r.status, 422);
    assert!(r.text.contains("limits.destination"), "{}", r.text);

    // Clients appear: from now on a key is needed (and the reload itself needs an
    // admin key).
    write(&format!(
        "[[clients]]\nname = \"ops\"\nkey_sha256 = \"{}\"\nadmin = true\n",
        hash_key(&key("ops"))
    ));
    assert_eq!(t.post("/v1/admin/reload", json!({})).await.status, 200);
    assert_eq!(issue("+34600000402").await.status, 401);
    let a = post_as(
        &t,
        "ops",
        "/v1/verifications",
        json!({"to": "+34600000402"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(t.post("/v1/admin/reload", json!({})).await.status, 401);
}

/// A helpdesk asks what happened to a citizen's codes: admin clients only; every
/// client's verifications of the subject, newest first, the number masked, no code
/// and no challenge; the lookup itself on the record.
async fn a_helpdesk_looks_up_a_subjects_recent_verifications(on: Backend) {
    let t = TestServer::start_on(
        on,
        |c| {
            with_signup(c);
            c.clients = vec![
                client("ops", true),
                client("sede", false),
                client("aeat", false),
            ];
        },
        None,
    )
    .await;
    let issue = |who: &'static str, to: &'static str, subject: &'static str| {
        post_as(
            &t,
            who,
            "/v1/verifications",
            json!({"to": to, "subject": subject}),
        )
    };
    let first = issue("sede", "+34600000191", "12345678Z").await;
    assert_eq!(first.status, 201, "{}", first.text);
    t.clock.advance(Duration::from_secs(5));
    let second = issue("aeat", "+34600000192", "12345678z").await;
    assert_eq!(second.status, 201, "{}", second.text);
    assert_eq!(issue("sede", "+34600000193", "X1234567L").await.status, 201);
    let ids = [&first, &second].map(|a| a.body["id"].as_str().unwrap().to_string());
    let code = t.code(&ids[0], 1).await;

    let path = "/v1/admin/subjects/12345678z/verifications";
    let refused = get_as(&t, "sede", path).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(!refused.text.contains("+346"), "{}", refused.text);

    let a = get_as(&t, "ops", path).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["subject"], "12345678Z");
    let listed = a.body["verifications"].as_array().unwrap();
    let listed_ids: Vec<_> = listed.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(
        listed_ids,
        [ids[1].as_str(), ids[0].as_str()],
        "newest first"
    );
    assert_eq!(listed[0]["client"], "aeat");
    assert_eq!(listed[1]["client"], "sede");
    assert_eq!(listed[1]["to"], "+34*******91");
    assert_eq!(listed[1]["status"], "pending");
    assert_eq!(listed[1]["delivery"]["attempts"][0]["channel"], "sms");
    for v in listed {
        assert!(
            v.get("qr").is_none() && v.get("match_code").is_none(),
            "{v}"
        );
    }
    // Neither a whole number nor the code anywhere in the answer.
    assert!(!a.text.contains("600000191"), "{}", a.text);
    assert!(!a.text.contains(&code), "the code in {}", a.text);
    let looked = t
        .events
        .events()
        .into_iter()
        .find(|e| e.kind == otpd::events::EventKind::SubjectLookedUp)
        .expect("the lookup is an event");
    assert_eq!(looked.data.subject.as_deref(), Some("12345678Z"));
    assert_eq!(looked.client.as_deref(), Some("ops"));

    let one = get_as(&t, "ops", &format!("{path}?limit=1")).await;
    assert_eq!(one.body["verifications"].as_array().unwrap().len(), 1);
    for (bad, error) in [
        (format!("{path}?limit=0"), "invalid_limit"),
        (format!("{path}?limit=51"), "invalid_limit"),
        (format!("{path}?since=1"), "unknown_field"),
        (
            "/v1/admin/subjects/12345678A/verifications".into(),
            "invalid_subject",
        ),
    ] {
        let r = get_as(&t, "ops", &bad).await;
        assert_eq!(
            (r.status, r.error_code()),
            (400, error),
            "{bad}: {}",
            r.text
        );
    }
    let nobody = get_as(&t, "ops", "/v1/admin/subjects/Y0000000Z/verifications").await;
    assert_eq!(nobody.status, 200, "{}", nobody.text);
    assert_eq!(nobody.body["verifications"], json!([]));
}

// Each behaviour on the memory store (the limiter asked before the store) and on
// Redis (the store's issue script deciding the limits in the same step).
otpd_e2e::on_both!(
    a_request_that_sends_nothing_is_not_charged,
    api_keys_are_required_once_clients_are_configured,
    idempotency_keys_belong_to_their_client,
    a_refused_request_is_charged_to_no_other_limit,
    limits_per_subject_network_prefix_and_country,
    guessing_across_verifications_is_stopped,
    checks_from_one_address_are_limited_before_they_count,
    a_surge_of_one_client_cannot_take_anothers_reserved_share,
    deny_listed_ranges_are_refused_with_403,
    an_sms_pumping_attack_is_throttled_and_ordinary_traffic_is_not,
    monitor_mode_refuses_nothing_and_counts_what_it_would_have,
    a_helpdesk_looks_up_a_subjects_recent_verifications,
);
