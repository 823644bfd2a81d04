//! App push end to end, against the push mock (TLS, validating like the providers) and
//! the SMSC simulator: APNs with the app's acknowledgement, FCM with a device that is
//! gone and the fallback to SMS, HMS, subjects without devices, and escalation when
//! no acknowledgement comes — driven by the manual clock, never by sleeping it out.

use std::sync::Arc;
use std::time::Duration;

use otpd::config::{PushAck, SmppCarrierConfig};
use otpd::store::{MemoryStore, Stores};
use otpd_e2e::providers::{Providers, fixture};
use otpd_e2e::{TestServer, code_in};
use otpd_simulators::push::{Provider, Recorded};
use otpd_simulators::smsc::{Account, Smsc, SmscConfig};
use serde_json::{Value, json};

const SUBJECT: &str = "12345678Z";
const PHONE: &str = "+34600123456";
const APNS_TOKEN: &str = "5a0f3c9e1b7d4a2e8c6f0b1d3e5a7c9e2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a";
const FCM_TOKEN: &str = "fGx1Y2s6APA91bH_android-device-token_0123456789";
const HMS_TOKEN: &str = "IQAAAACy0kYkAAB-huawei-device-token";

async fn register(t: &TestServer, devices: Value) {
    let a = t
        .put(
            &format!("/v1/subscribers/{SUBJECT}"),
            json!({"phone": PHONE, "devices": devices, "locale": "es"}),
        )
        .await;
    assert!(a.status == 201 || a.status == 200, "{}", a.text);
}

async fn create(t: &TestServer, body: Value) -> Value {
    let a = t.post("/v1/verifications", body).await;
    assert_eq!(a.status, 201, "{}", a.text);
    a.body
}

/// Wait (bounded) until `done` holds for the verification as GET shows it.
async fn until(t: &TestServer, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = t.get(&format!("/v1/verifications/{id}")).await.body;
        if done(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {what}: {v}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn sms_lines(t: &TestServer, id: &str) -> Vec<Value> {
    t.outbox_lines()
        .into_iter()
        .filter(|l| l["verification_id"] == id && l["channel"] == "sms")
        .collect()
}

fn header<'a>(r: &'a Recorded, name: &str) -> &'a str {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test]
async fn ios_push_is_signed_acknowledged_and_approved_without_any_sms() {
    let p = Providers::start().await;
    let t = TestServer::start_with(|c| p.configure(c), None).await;
    register(
        &t,
        json!([{"platform": "apns", "token": APNS_TOKEN, "app": "es.gob.clave"}]),
    )
    .await;
    let v = create(&t, json!({"subject": SUBJECT})).await;
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["delivery"]["channel"], "push");
    assert_eq!(v["to"], PHONE);
    let match_code = v["match_code"].as_str().expect("a match code").to_string();
    assert!(match_code.len() == 3 && match_code.bytes().all(|b| b.is_ascii_digit()));
    assert!(v["escalates_at"].is_string());

    // What APNs got: a provider token that verifies with the team's public key.
    let r = p.requests(Provider::Apns, 1).await.remove(0);
    assert_eq!(r.status, 200);
    let jwt = header(&r, "authorization").strip_prefix("bearer ").unwrap();
    let key = jsonwebtoken::DecodingKey::from_ec_pem(
        &std::fs::read(fixture("apns-test-key.pub")).unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation).unwrap();
    assert_eq!(claims.header.kid.as_deref(), Some("ABC123DEFG"));
    assert_eq!(claims.claims["iss"], "TEAM123456");
    assert_eq!(header(&r, "apns-topic"), "es.gob.clave");
    assert_eq!(header(&r, "apns-collapse-id"), id);
    assert_eq!(header(&r, "apns-push-type"), "alert");
    let expires = test_clock_seconds(v["expires_at"].as_str().unwrap());
    assert_eq!(header(&r, "apns-expiration"), expires.to_string());
    assert_eq!(r.body["otpd"]["match_code"], match_code);
    assert_eq!(r.body["otpd"]["verification_id"], id);
    assert!(
        r.body["aps"]["alert"]["title"]
            .as_str()
            .unwrap()
            .ends_with(&match_code)
    );
    let code = code_in(r.body["aps"]["alert"]["body"].as_str().unwrap());

    // The app acknowledges with the token the push carried; the answer says only
    // the id and status.
    let token = json!({"ack_token": r.body["otpd"]["ack_token"]});
    let ack = t
        .post(&format!("/v1/verifications/{id}/ack"), token.clone())
        .await;
    assert_eq!(ack.status, 200, "{}", ack.text);
    assert_eq!(ack.body, json!({"id": id, "status": "pending"}));
    let seen = t.get(&format!("/v1/verifications/{id}")).await.body;
    assert!(seen["acknowledged_at"].is_string());
    assert!(seen.get("escalates_at").is_none());
    assert_eq!(seen["delivery"]["state"], "delivered");
    let again = t.post(&format!("/v1/verifications/{id}/ack"), token).await;
    assert_eq!(again.status, 200);

    // Acknowledged: the minute passes and no SMS follows.
    t.clock.advance(Duration::from_secs(120));
    t.escalations_settled().await;
    assert!(sms_lines(&t, id).is_empty());
    let check = t.check(id, &code).await;
    assert_eq!(check.body["status"], "approved", "{}", check.text);
    t.stop().await;
}

/// `2026-11-23T12:10:00.000Z` → seconds since the epoch, for the test clock's dates.
fn test_clock_seconds(rfc3339: &str) -> i64 {
    // The test clock starts at 2026-11-23T12:00:00Z = 1795435200.
    let base = 1_795_435_200i64;
    let (date, time) = rfc3339.split_once('T').unwrap();
    assert_eq!(date, "2026-11-23");
    let mut parts = time.trim_end_matches('Z').split(':');
    let h: i64 = parts.next().unwrap().parse().unwrap();
    let m: i64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    base + (h - 12) * 3600 + m * 60 + s as i64
}

#[tokio::test]
async fn an_unregistered_android_device_is_removed_and_the_code_goes_by_smpp() {
    let p = Providers::start().await;
    let smsc = Smsc::start(SmscConfig {
        accounts: vec![Account {
            system_id: "otpd".into(),
            password: "secret".into(),
        }],
        ..SmscConfig::default()
    })
    .await
    .unwrap();
    let port = smsc.addr().port();
    let t = TestServer::start_with(
        |c| {
            p.configure(c);
            c.channels.smpp.insert(
                "movistar".into(),
                SmppCarrierConfig {
                    port,
                    system_id: "otpd".into(),
                    password: "secret".into(),
                    source_addr: "Clave".into(),
                    reconnect_min: Duration::from_millis(10),
                    reconnect_max: Duration::from_millis(100),
                    ..SmppCarrierConfig::default()
                },
            );
            c.delivery.sms = "smpp.movistar".into();
        },
        None,
    )
    .await;
    register(
        &t,
        json!([{"platform": "fcm", "token": FCM_TOKEN, "app": "es.gob.clave.app"}]),
    )
    .await;
    p.mock.unregister(Provider::Fcm, FCM_TOKEN);

    // English: GSM 7-bit, one segment at the SMSC.
    let v = create(
        &t,
        json!({"subject": SUBJECT, "channel": "auto", "locale": "en"}),
    )
    .await;
    let id = v["id"].as_str().unwrap();
    let v = until(&t, id, "sent by SMS", |v| {
        v["delivery"]["attempts"][1]["state"] == "sent"
            || v["delivery"]["attempts"][1]["state"] == "delivered"
    })
    .await;
    let push = &v["delivery"]["attempts"][0];
    assert_eq!(push["channel"], "push");
    assert_eq!(push["state"], "failed");
    assert!(
        push["error"].as_str().unwrap().contains("UNREGISTERED"),
        "{push}"
    );
    let sms = &v["delivery"]["attempts"][1];
    assert_eq!(sms["channel"], "sms");
    assert_eq!(sms["escalated"], "push_failed");
    assert_eq!(p.mock.requests(Some(Provider::Fcm))[0].status, 404);

    let subscriber = t.get(&format!("/v1/subscribers/{SUBJECT}")).await;
    assert_eq!(subscriber.body["devices"], json!([]), "{}", subscriber.text);

    let received = smsc.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].destination.addr, "34600123456");
    let code = code_in(&String::from_utf8(received[0].body.clone()).unwrap());
    assert_eq!(t.check(id, &code).await.body["status"], "approved");

    // Told: the dead token's device removed, the push escalated to SMS.
    let told: Vec<_> = t
        .told(id)
        .into_iter()
        .map(|e| (e.kind.as_str(), e.data.reason, e.data.platform))
        .collect();
    assert!(
        told.contains(&("device.removed", Some("token_dead"), Some("fcm"))),
        "{told:?}"
    );
    assert!(
        told.contains(&("verification.escalated", Some("push_failed"), None)),
        "{told:?}"
    );

    // The next request for this subject goes straight to SMS: no device is left.
    t.clock.advance(Duration::from_secs(31));
    let next = create(&t, json!({"subject": SUBJECT, "purpose": "login"})).await;
    assert_eq!(next["delivery"]["channel"], "sms");
    t.stop().await;
}

#[tokio::test]
async fn huawei_devices_get_hms_and_the_provider_can_acknowledge() {
    let p = Providers::start().await;
    let t = TestServer::start_with(
        |c| {
            p.configure(c);
            c.purposes.get_mut("login").unwrap().push_ack = PushAck::Provider;
        },
        None,
    )
    .await;
    register(
        &t,
        json!([{"platform": "hms", "token": HMS_TOKEN, "app": "104523"}]),
    )
    .await;
    let v = create(&t, json!({"subject": SUBJECT})).await;
    let id = v["id"].as_str().unwrap();
    let r = p.requests(Provider::Hms, 1).await.remove(0);
    assert_eq!(r.path, "/v1/104523/messages:send");
    assert_eq!(r.body["message"]["token"], json!([HMS_TOKEN]));
    let data: Value = serde_json::from_str(r.body["message"]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["match_code"], v["match_code"]);

    let v = until(&t, id, "acknowledged by the provider", |v| {
        v["acknowledged_at"].is_string()
    })
    .await;
    assert_eq!(v["delivery"]["state"], "delivered");
    assert!(
        v["delivery"]["attempts"][0]["reference"]
            .as_str()
            .unwrap()
            .starts_with("hms:")
    );
    t.clock.advance(Duration::from_secs(120));
    t.escalations_settled().await;
    assert!(
        sms_lines(&t, id).is_empty(),
        "acknowledged pushes do not escalate"
    );
    t.stop().await;
}

#[tokio::test]
async fn without_a_device_auto_is_sms_and_push_is_refused() {
    let p = Providers::start().await;
    let t = TestServer::start_with(|c| p.configure(c), None).await;
    register(&t, json!([])).await;
    let v = create(&t, json!({"subject": SUBJECT})).await;
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["delivery"]["channel"], "sms");
    assert!(v.get("match_code").is_none());
    assert!(v.get("escalates_at").is_none());
    t.outbox_line(id, 1).await;
    // No push carried a token for it: nothing can acknowledge it.
    let ack = t
        .post(
            &format!("/v1/verifications/{id}/ack"),
            json!({"ack_token": "AAAAAAAAAAAAAAAAAAAAAA"}),
        )
        .await;
    assert_eq!(ack.status, 403);
    assert_eq!(ack.error_code(), "bad_ack_token");

    let push = t
        .post(
            "/v1/verifications",
            json!({"subject": SUBJECT, "channel": "push", "purpose": "login"}),
        )
        .await;
    assert_eq!(push.status, 422, "{}", push.text);
    assert_eq!(push.error_code(), "no_device");
    let no_subject = t
        .post(
            "/v1/verifications",
            json!({"to": "+34600123498", "channel": "push"}),
        )
        .await;
    assert_eq!(no_subject.status, 422);
    assert!(p.mock.requests(None).is_empty());

    // An unknown id is refused like a known one: the token is checked first.
    let unknown = t
        .post(
            "/v1/verifications/vf_0123456789abcdef0123456789abcdef/ack",
            json!({"ack_token": "AAAAAAAAAAAAAAAAAAAAAA"}),
        )
        .await;
    assert_eq!(unknown.status, 403);
    t.stop().await;
}

#[tokio::test]
async fn an_unacknowledged_push_escalates_to_sms_once_when_its_time_comes() {
    let p = Providers::start().await;
    let t = TestServer::start_with(|c| p.configure(c), None).await;
    register(
        &t,
        json!([{"platform": "apns", "token": APNS_TOKEN, "app": "es.gob.clave"}]),
    )
    .await;
    let v = create(&t, json!({"subject": SUBJECT})).await;
    let id = v["id"].as_str().unwrap();
    let pushed = p.requests(Provider::Apns, 1).await.remove(0);
    let push_code = code_in(pushed.body["aps"]["alert"]["body"].as_str().unwrap());
    until(&t, id, "pushed", |v| v["delivery"]["state"] == "sent").await;

    // 59 s: still waiting for the app.
    t.clock.advance(Duration::from_secs(59));
    t.escalations_settled().await;
    assert!(sms_lines(&t, id).is_empty());

    // 60 s: the same code goes by SMS.
    t.clock.advance(Duration::from_secs(1));
    let line = t.outbox_line(id, 2).await;
    assert_eq!(line["to"], PHONE);
    assert_eq!(code_in(line["text"].as_str().unwrap()), push_code);
    let v = until(&t, id, "sent by SMS", |v| {
        v["delivery"]["attempts"][1]["state"] == "sent"
    })
    .await;
    assert_eq!(v["delivery"]["attempts"][1]["escalated"], "push_timeout");
    assert!(v.get("escalates_at").is_none());

    // Never twice, however long it waits; a late ack is recorded and sends nothing.
    t.clock.advance(Duration::from_secs(120));
    t.escalations_settled().await;
    assert_eq!(sms_lines(&t, id).len(), 1);
    let token = json!({"ack_token": pushed.body["otpd"]["ack_token"]});
    let late = t
        .post(&format!("/v1/verifications/{id}/ack"), token.clone())
        .await;
    assert_eq!(late.status, 200, "{}", late.text);
    let seen = t.get(&format!("/v1/verifications/{id}")).await.body;
    assert_eq!(seen["delivery"]["attempts"][0]["state"], "delivered");
    t.clock.advance(Duration::from_secs(600));
    let expired = t.post(&format!("/v1/verifications/{id}/ack"), token).await;
    assert_eq!(expired.status, 410, "{}", expired.text);
    let metrics = t.get("/metrics").await.text;
    assert!(
        metrics.contains("otpd_escalations_total{cause=\"push_timeout\"}"),
        "{metrics}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_pending_escalation_survives_a_restart_and_still_happens_once() {
    let p = Providers::start().await;
    let store = Arc::new(MemoryStore::new(4, Duration::from_secs(600)));
    let first =
        otpd_e2e::TestServer::start_full_with(|c| p.configure(c), Stores::of(store.clone())).await;
    register(
        &first,
        json!([{"platform": "apns", "token": APNS_TOKEN, "app": "es.gob.clave"}]),
    )
    .await;
    let v = create(&first, json!({"subject": SUBJECT})).await;
    let id = v["id"].as_str().unwrap().to_string();
    p.requests(Provider::Apns, 1).await;
    until(&first, &id, "pushed", |v| v["delivery"]["state"] == "sent").await;
    first.stop().await;

    // Another node (or the same one restarted) on the same store, 61 s later.
    let second =
        otpd_e2e::TestServer::start_full_with(|c| p.configure(c), Stores::of(store.clone())).await;
    second.clock.advance(Duration::from_secs(61));
    let line = second.outbox_line(&id, 2).await;
    assert_eq!(line["channel"], "sms");
    // A third node on the same store finds nothing left to escalate.
    let third = otpd_e2e::TestServer::start_full_with(|c| p.configure(c), Stores::of(store)).await;
    third.clock.advance(Duration::from_secs(61));
    third.escalations_settled().await;
    assert_eq!(sms_lines(&second, &id).len(), 1);
    assert!(sms_lines(&third, &id).is_empty());
    second.stop().await;
    third.stop().await;
}

/// A provider that answers slowly holds push slots, not the delivery workers: with
/// one worker (four slots), four pushes wait on APNs while the next pushes go by SMS
/// at once and a plain SMS is not held up — all before APNs has answered anything.
#[tokio::test]
async fn a_slow_provider_fills_push_slots_and_the_next_codes_go_by_sms_at_once() {
    let p = Providers::start().await;
    p.mock.set_behaviour(otpd_simulators::push::Behaviour {
        latency_ms: 3_000,
        ..Default::default()
    });
    let t = TestServer::start_with(
        |c| {
            p.configure(c);
            c.delivery.concurrency = 1;
        },
        None,
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let subject = format!("SLOW-{n}");
        let put = t
            .put(
                &format!("/v1/subscribers/{subject}"),
                json!({"phone": format!("+3460012340{n}"), "locale": "es",
                       "devices": [{"platform": "apns", "token": format!("{n:064x}"), "app": "es.gob.clave"}]}),
            )
            .await;
        assert_eq!(put.status, 201, "{}", put.text);
        let v = create(&t, json!({"subject": subject, "channel": "auto"})).await;
        assert_eq!(v["delivery"]["channel"], "push");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let plain = create(&t, json!({"to": "+34600123499"})).await;
    let plain = plain["id"].as_str().unwrap().to_string();
    // The plain SMS and two codes whose push found no slot, by SMS, at once.
    t.outbox_line(&plain, 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let by_sms = loop {
        let by_sms: Vec<&String> = ids
            .iter()
            .filter(|id| !sms_lines(&t, id).is_empty())
            .collect();
        if by_sms.len() >= 2 || tokio::time::Instant::now() > deadline {
            break by_sms.len();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(by_sms, 2, "two pushes found every slot taken");
    assert_eq!(
        p.mock.counts(Provider::Apns).accepted,
        0,
        "all that happened while APNs had answered nothing"
    );
    let saturated = until(&t, &ids[5], "failed over to SMS", |v| {
        v["delivery"]["attempts"][1]["channel"] == "sms"
    })
    .await;
    assert!(
        saturated["delivery"]["attempts"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("saturated")),
        "{saturated}"
    );
    // The four in the slots are pushed once APNs answers.
    p.requests(Provider::Apns, 4).await;
    t.stop().await;
}

/// The subject `n` (eight digits) with its check letter.
fn dni(n: u32) -> String {
    const LETTERS: &[u8] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    format!("{n:08}{}", LETTERS[(n % 23) as usize] as char)
}

/// A store error in the middle of an escalation pass loses no escalation: the pass
/// stops there, and a later one escalates the rest, each exactly once. (The due list
/// used to be emptied before the escalations were made: the SMS fallback of every
/// push in the pass was lost.) On both stores, the Redis one a server of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalations_cut_short_by_a_store_error_all_happen_once() {
    use otpd::store::redis::{Keys, Redis, RedisStore};
    use otpd_e2e::faults::Faulty;

    for backend in ["memory", "redis"] {
        let p = Providers::start().await;
        let redis = (backend == "redis").then(otpd_e2e::redis::RedisServer::start);
        let stores = match &redis {
            None => Stores::of(Arc::new(MemoryStore::new(4, Duration::from_secs(600)))),
            Some(server) => {
                let config = otpd::config::RedisConfig {
                    urls: vec![server.url()],
                    ..Default::default()
                };
                let keys = Keys::new(
                    "otpd",
                    config.partitions,
                    otpd::secrets::code::CodeKeys::derive(b"a test secret, thirty-two bytes long")
                        .pseudonyms(),
                );
                Stores::of(Arc::new(RedisStore::new(
                    Redis::new(&config).unwrap(),
                    keys,
                    Duration::from_secs(600),
                )))
            }
        };
        let t =
            TestServer::start_full_with(|c| p.configure(c), Faulty::failing_escalations(stores, 1))
                .await;
        let mut ids = Vec::new();
        for n in 0..4u32 {
            let subject = dni(40_000_000 + n);
            let token = format!("{}{n:02x}", &APNS_TOKEN[..62]);
            let a = t
                .put(
                    &format!("/v1/subscribers/{subject}"),
                    json!({"phone": format!("+3460055500{n}"), "locale": "es",
                           "devices": [{"platform": "apns", "token": token, "app": "es.gob.clave"}]}),
                )
                .await;
            assert!(a.status == 201 || a.status == 200, "{}", a.text);
            let v = create(&t, json!({"subject": subject})).await;
            ids.push(v["id"].as_str().unwrap().to_string());
        }
        for id in &ids {
            until(&t, id, "pushed", |v| v["delivery"]["state"] == "sent").await;
        }
        // Due: the first escalation of the pass fails; the next pass makes them all.
        t.clock.advance(Duration::from_secs(60));
        for id in &ids {
            let line = t.outbox_line(id, 2).await;
            assert_eq!(line["channel"], "sms", "{backend}");
        }
        t.clock.advance(Duration::from_secs(120));
        t.escalations_settled().await;
        for id in &ids {
            assert_eq!(sms_lines(&t, id).len(), 1, "{backend}: {id} once");
        }
        t.stop().await;
    }
}
