//! Approval in the app end to end, on the memory store and on Redis: the reference
//! app (`otpd_loadtest::app`, keys by ring; the load tool's people use it too)
//! enrolls its key, receives the approval request from the APNs and FCM mocks or
//! scans its QR URI, and answers over the HTTP API.
//! Also: the refusals (wrong key, bad signature, stale timestamp, replay, after
//! expiry), the fallback to the SMS PIN, and contrast data.

use std::time::Duration;

use otpd::config::{ClientConfig, Rate};
use otpd::domain::clock::Clock as _;
use otpd_e2e::providers::Providers;
use otpd_e2e::{Answer, Backend, TestServer, on_both};
use otpd_loadtest::app::{AppKey, Decision, Request};
use otpd_simulators::push::{Behaviour, Provider};
use serde_json::{Value, json};

const SUBJECT: &str = "12345678Z";
const PHONE: &str = "+34600123456";
const APNS_TOKEN: &str = "5a0f3c9e1b7d4a2e8c6f0b1d3e5a7c9e2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a";
const FCM_TOKEN: &str = "fGx1Y2s6APA91bH_android-device-token_0123456789";
const HMS_TOKEN: &str = "IQAAAACy0kYkAAB-huawei-device-token";

/// otpd on `backend` with the push mock behind its providers.
async fn start(backend: Backend, p: &Providers) -> TestServer {
    TestServer::start_on(backend, |c| p.configure(c), None).await
}

/// Register the subject with an iPhone (ES256 key), an Android phone (Ed25519 key)
/// and a Huawei phone that enrolled no key.
async fn register(t: &TestServer, iphone: &AppKey, android: &AppKey) {
    let a = t
        .put(
            &format!("/v1/subscribers/{SUBJECT}"),
            json!({"phone": PHONE, "locale": "es", "devices": [
                {"platform": "apns", "token": APNS_TOKEN, "app": "es.gob.clave", "key": iphone.enrollment()},
                {"platform": "fcm", "token": FCM_TOKEN, "app": "es.gob.clave", "key": android.enrollment()},
                {"platform": "hms", "token": HMS_TOKEN, "app": "es.gob.clave"},
            ]}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
}

async fn ask(t: &TestServer) -> Value {
    let a = t
        .post(
            "/v1/verifications",
            json!({"subject": SUBJECT, "channel": "app"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    a.body
}

/// The usual start: the mock, otpd, the subject's iPhone and Android phone with
/// their keys, and an approval request asked for.
struct Asked {
    p: Providers,
    t: TestServer,
    iphone: AppKey,
    android: AppKey,
    v: Value,
}

impl Asked {
    async fn on(backend: Backend) -> Self {
        Self::with(backend, Behaviour::default()).await
    }

    async fn with(backend: Backend, push: Behaviour) -> Self {
        let p = Providers::start().await;
        p.mock.set_behaviour(push);
        let t = start(backend, &p).await;
        let (iphone, android) = (AppKey::es256(), AppKey::ed25519());
        register(&t, &iphone, &android).await;
        let v = ask(&t).await;
        Self {
            p,
            t,
            iphone,
            android,
            v,
        }
    }
}

fn now(t: &TestServer) -> i64 {
    t.clock.now().0
}

async fn answer(t: &TestServer, key: &AppKey, d: Decision, r: &Request, ts: i64) -> Answer {
    t.post(&AppKey::path(d, r), key.answer(d, r, ts)).await
}

async fn status(t: &TestServer, id: &str) -> Value {
    t.get(&format!("/v1/verifications/{id}")).await.body
}

fn sms_sends(v: &Value) -> usize {
    v["delivery"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["channel"] == "sms")
        .count()
}

async fn the_app_approves_what_apns_and_fcm_delivered(backend: Backend) {
    let Asked {
        p,
        t,
        iphone,
        android,
        v,
    } = Asked::on(backend).await;
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["channel"], "app");
    assert_eq!(v["status"], "pending");
    let match_code = v["match_code"].as_str().unwrap();
    // Cl@ve Móvil's five minutes, not the PIN's ten.
    assert_eq!(v["expires_at"], "2026-11-23T12:05:00Z");
    let qr = Request::from_qr(v["qr"].as_str().unwrap()).unwrap();
    assert!(v["qr"].as_str().unwrap().starts_with("otpd://approve?"));
    assert_eq!(qr.verification, id);
    assert_eq!(qr.match_code, match_code);

    // Both keyed devices got the request, with the same challenge as the QR code;
    // the Huawei phone, which cannot sign, got nothing.
    let apns = p.requests(Provider::Apns, 1).await.remove(0);
    let fcm = p.requests(Provider::Fcm, 1).await.remove(0);
    assert!(p.mock.requests(Some(Provider::Hms)).is_empty());
    let on_iphone = Request::from_push(&apns.body).expect("an approval request");
    let on_android = Request::from_push(&fcm.body).expect("an approval request");
    assert_eq!(on_iphone, on_android);
    assert_eq!(on_iphone.challenge, qr.challenge);
    assert_eq!(on_iphone.match_code, match_code);
    assert_eq!(on_iphone.requester.as_deref(), Some("otpd"));
    assert_eq!(on_iphone.purpose.as_deref(), Some("login"));
    let alert = apns.body["aps"]["alert"]["body"].as_str().unwrap();
    assert!(alert.contains(match_code), "{alert}");
    assert!(
        !alert
            .split(|c: char| !c.is_ascii_digit())
            .any(|run| run.len() > 3),
        "no PIN in an approval push: {alert}"
    );

    // Approved with the iPhone's key.
    let a = answer(&t, &iphone, Decision::Approve, &on_iphone, now(&t)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body, json!({"id": id, "status": "approved"}));
    let seen = status(&t, id).await;
    assert_eq!(seen["status"], "approved");
    assert_eq!(seen["answered_by"], iphone.thumbprint());
    assert!(seen.get("qr").is_none(), "no QR once final");
    assert_eq!(sms_sends(&seen), 0);

    // The first answer is final: a replay, the other phone, a denial.
    let replay = answer(&t, &iphone, Decision::Approve, &on_iphone, now(&t)).await;
    assert_eq!(replay.status, 409, "{}", replay.text);
    assert_eq!(replay.error_code(), "already_answered");
    let other = answer(&t, &android, Decision::Deny, &on_android, now(&t)).await;
    assert_eq!(other.status, 409, "{}", other.text);
    assert_eq!(status(&t, id).await["status"], "approved");

    // No fallback ever follows an answer.
    t.clock.advance(Duration::from_secs(120));
    t.escalations_settled().await;
    assert_eq!(sms_sends(&status(&t, id).await), 0);
    // Told once: approved in the app, nothing for the refused answers after it.
    let told: Vec<_> = t
        .told(id)
        .into_iter()
        .filter(|e| e.kind != otpd::events::EventKind::Sent)
        .map(|e| (e.kind, e.data.reason))
        .collect();
    assert_eq!(told, [(otpd::events::EventKind::Approved, Some("app"))]);
    t.stop().await;
}

async fn a_denial_is_final_and_bad_answers_change_nothing(backend: Backend) {
    let Asked {
        p,
        t,
        iphone,
        android,
        v,
    } = Asked::on(backend).await;
    let id = v["id"].as_str().unwrap();
    let r = Request::from_push(&p.requests(Provider::Fcm, 1).await[0].body).unwrap();

    // A key enrolled nowhere.
    let stranger = AppKey::ed25519();
    let a = answer(&t, &stranger, Decision::Approve, &r, now(&t)).await;
    assert_eq!(
        (a.status, a.error_code()),
        (403, "unknown_device"),
        "{}",
        a.text
    );
    // Signed by a stranger, claiming the Android phone's key.
    let mut forged = stranger.answer(Decision::Approve, &r, now(&t));
    forged["device"] = json!(android.thumbprint());
    let a = t.post(&AppKey::path(Decision::Approve, &r), forged).await;
    assert_eq!(
        (a.status, a.error_code()),
        (403, "bad_signature"),
        "{}",
        a.text
    );
    // Signed for another challenge, or another match code.
    for tamper in ["challenge", "match_code"] {
        let mut wrong = r.clone();
        match tamper {
            "challenge" => wrong.challenge = "AAAAAAAAAAAAAAAAAAAAAA".into(),
            _ => wrong.match_code = "999".into(),
        }
        let body = android.answer(Decision::Approve, &wrong, now(&t));
        let a = t.post(&AppKey::path(Decision::Approve, &r), body).await;
        assert_eq!(
            (a.status, a.error_code()),
            (403, "bad_signature"),
            "{tamper}"
        );
    }
    // An approval's signature sent as a denial.
    let approval = android.answer(Decision::Approve, &r, now(&t));
    let a = t.post(&AppKey::path(Decision::Deny, &r), approval).await;
    assert_eq!((a.status, a.error_code()), (403, "bad_signature"));
    // Signed two minutes ago: stale.
    let a = answer(&t, &android, Decision::Approve, &r, now(&t) - 120_000).await;
    assert_eq!(
        (a.status, a.error_code()),
        (403, "stale_answer"),
        "{}",
        a.text
    );
    assert_eq!(a.body["error"]["field"], "timestamp");
    // Malformed bodies.
    let path = AppKey::path(Decision::Approve, &r);
    for (body, field) in [
        (
            json!({"device": android.thumbprint(), "timestamp": now(&t), "signature": "%%%"}),
            "signature",
        ),
        (
            json!({"device": android.thumbprint(), "timestamp": "soon", "signature": "AA"}),
            "timestamp",
        ),
        (
            json!({"device": android.thumbprint(), "timestamp": now(&t)}),
            "signature",
        ),
    ] {
        let a = t.post(&path, body).await;
        assert_eq!(a.status, 400, "{}", a.text);
        assert_eq!(a.body["error"]["field"], field, "{}", a.text);
    }
    let a = t
        .post(
            "/v1/verifications/vf_nope/approve",
            android.answer(Decision::Approve, &r, now(&t)),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(status(&t, id).await["status"], "pending");

    // The person says no.
    let a = answer(&t, &android, Decision::Deny, &r, now(&t)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["status"], "denied");
    let seen = status(&t, id).await;
    assert_eq!(seen["status"], "denied");
    assert_eq!(seen["answered_by"], android.thumbprint());
    let a = answer(&t, &iphone, Decision::Approve, &r, now(&t)).await;
    assert_eq!((a.status, a.error_code()), (409, "already_answered"));
    let check = t
        .post(
            &format!("/v1/verifications/{id}/check"),
            json!({"code": "123456"}),
        )
        .await;
    assert_eq!((check.status, check.error_code()), (409, "denied"));
    // The bad answers told nothing; the denial was told once.
    let told: Vec<_> = t
        .told(id)
        .into_iter()
        .filter(|e| e.kind != otpd::events::EventKind::Sent)
        .map(|e| (e.kind, e.data.status))
        .collect();
    assert_eq!(told, [(otpd::events::EventKind::Denied, Some("denied"))]);
    t.stop().await;
}

/// Answers that no device of the subject's signed are charged to the caller's
/// network (`answer_ip`), never to the subject: past the network's budget its
/// answers are refused unchecked, and the subject's own limits are untouched (see
/// `tests/security.rs` for the stranger who tries to lock a citizen out).
async fn answers_not_signed_by_the_subject_are_charged_to_the_callers_network(backend: Backend) {
    let p = Providers::start().await;
    let t = TestServer::start_on(
        backend,
        |c| {
            p.configure(c);
            c.limits.answer_ip = Rate::per(3, 3600);
            c.limits.check_subject = Rate::per(3, 3600);
        },
        None,
    )
    .await;
    let (iphone, android) = (AppKey::es256(), AppKey::ed25519());
    register(&t, &iphone, &android).await;
    let v = ask(&t).await;
    let r = Request::from_qr(v["qr"].as_str().unwrap()).unwrap();
    let stranger = AppKey::ed25519();
    let mut forged = stranger.answer(Decision::Approve, &r, now(&t));
    forged["device"] = json!(android.thumbprint());
    let path = AppKey::path(Decision::Approve, &r);
    for (body, code) in [
        (
            stranger.answer(Decision::Approve, &r, now(&t)),
            "unknown_device",
        ),
        (forged, "bad_signature"),
        (
            android.answer(Decision::Approve, &r, now(&t) - 120_000),
            "stale_answer",
        ),
    ] {
        let a = t.post(&path, body).await;
        assert_eq!((a.status, a.error_code()), (403, code), "{}", a.text);
    }
    let a = answer(&t, &android, Decision::Approve, &r, now(&t)).await;
    assert_eq!(a.status, 429, "{}", a.text);
    assert_eq!(a.body["error"]["limit"], "answer_ip", "{}", a.text);
    assert!(a.header("retry-after").is_some());
    assert_eq!(status(&t, &r.verification).await["status"], "pending");
    // The subject was charged nothing: past the resend cooldown, a new request for
    // it is decided by whole limits.
    t.clock.advance(Duration::from_secs(31));
    let again = t
        .post(
            "/v1/verifications",
            json!({"subject": SUBJECT, "channel": "app"}),
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.text);
    t.stop().await;
}

async fn an_answer_after_expiry_is_refused(backend: Backend) {
    let Asked { t, iphone, v, .. } = Asked::on(backend).await;
    let r = Request::from_qr(v["qr"].as_str().unwrap()).unwrap();
    t.clock.advance(Duration::from_secs(300));
    let a = answer(&t, &iphone, Decision::Approve, &r, now(&t)).await;
    assert_eq!((a.status, a.error_code()), (410, "expired"), "{}", a.text);
    assert_eq!(status(&t, &r.verification).await["status"], "expired");
    t.stop().await;
}

async fn the_qr_code_works_without_any_push_and_the_pin_then_approves_nothing(backend: Backend) {
    // Every push fails: the app never hears of the request.
    let failing = Behaviour {
        server_error: 1.0,
        ..Behaviour::default()
    };
    let Asked { t, iphone, v, .. } = Asked::with(backend, failing).await;
    let id = v["id"].as_str().unwrap();
    // No push got through, so the PIN went by SMS at once.
    let line = t.outbox_line(id, 2).await;
    assert_eq!(line["to"], PHONE);
    let pin = otpd_e2e::code_in(line["text"].as_str().unwrap());
    let seen = status(&t, id).await;
    assert_eq!(seen["delivery"]["attempts"][0]["state"], "failed");
    assert_eq!(seen["delivery"]["attempts"][1]["escalated"], "push_failed");

    // The person scans the QR code on the screen instead.
    let r = Request::from_qr(seen["qr"].as_str().unwrap()).unwrap();
    let a = answer(&t, &iphone, Decision::Approve, &r, now(&t)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    // Approved once: the PIN that went by SMS approves nothing more.
    let check = t
        .post(
            &format!("/v1/verifications/{id}/check"),
            json!({"code": pin}),
        )
        .await;
    assert_eq!(
        (check.status, check.error_code()),
        (409, "already_approved")
    );
    t.stop().await;
}

async fn no_answer_in_time_sends_the_pin_and_the_pin_approves(backend: Backend) {
    let Asked {
        p, t, android, v, ..
    } = Asked::on(backend).await;
    let id = v["id"].as_str().unwrap();
    let r = Request::from_push(&p.requests(Provider::Apns, 1).await[0].body).unwrap();
    // Before the fallback there is no PIN to type.
    let early = t
        .post(
            &format!("/v1/verifications/{id}/check"),
            json!({"code": "123456"}),
        )
        .await;
    assert_eq!((early.status, early.error_code()), (409, "no_code_sent"));
    // The app says it got the push (with the token the push carried), but nobody
    // answers.
    let token = p.requests(Provider::Apns, 1).await[0].body["otpd"]["ack_token"].clone();
    let ack = t
        .post(
            &format!("/v1/verifications/{id}/ack"),
            json!({"ack_token": token}),
        )
        .await;
    assert_eq!(ack.status, 200, "{}", ack.text);
    assert_eq!(ack.body, json!({"id": id, "status": "pending"}));
    t.clock.advance(Duration::from_secs(60));
    let line = t.outbox_line(id, 2).await;
    let pin = otpd_e2e::code_in(line["text"].as_str().unwrap());
    let seen = status(&t, id).await;
    assert_eq!(seen["delivery"]["attempts"][1]["channel"], "sms");
    assert_eq!(seen["delivery"]["attempts"][1]["escalated"], "push_timeout");
    assert_eq!(seen["attempts_left"], 5, "the early check counted nothing");

    let check = t
        .post(
            &format!("/v1/verifications/{id}/check"),
            json!({"code": pin}),
        )
        .await;
    assert_eq!(check.status, 200, "{}", check.text);
    assert_eq!(check.body["status"], "approved");
    // A late tap in the app approves nothing more.
    let late = answer(&t, &android, Decision::Approve, &r, now(&t)).await;
    assert_eq!(
        (late.status, late.error_code()),
        (409, "already_final"),
        "{}",
        late.text
    );
    let seen = status(&t, id).await;
    assert!(seen.get("answered_by").is_none());
    t.stop().await;
}

async fn approval_needs_an_enrolled_key(backend: Backend) {
    let t = TestServer::start_on(backend, |_| {}, None).await;
    let a = t
        .put(
            &format!("/v1/subscribers/{SUBJECT}"),
            json!({"phone": PHONE, "devices": [
                {"platform": "hms", "token": HMS_TOKEN, "app": "es.gob.clave"}]}),
        )
        .await;
    assert_eq!(a.status, 201);
    let a = t
        .post(
            "/v1/verifications",
            json!({"subject": SUBJECT, "channel": "app"}),
        )
        .await;
    assert_eq!(
        (a.status, a.error_code()),
        (422, "no_device_key"),
        "{}",
        a.text
    );
    let a = t
        .post("/v1/verifications", json!({"to": PHONE, "channel": "app"}))
        .await;
    assert_eq!(
        (a.status, a.error_code()),
        (422, "no_device_key"),
        "{}",
        a.text
    );
    assert_eq!(a.body["error"]["field"], "channel");
    t.stop().await;
}

fn sede(require_contrast: bool) -> ClientConfig {
    ClientConfig {
        admin: true,
        display_name: Some("Sede Electrónica".into()),
        require_contrast,
        registry: otpd::config::RegistryAccess::Write,
        ..ClientConfig::new("sede", otpd::policy::clients::hash_key("key-of-sede"))
    }
}

async fn as_sede(t: &TestServer, body: Value) -> Answer {
    t.send(
        t.client
            .post(t.url("/v1/verifications"))
            .bearer_auth("key-of-sede")
            .json(&body),
    )
    .await
}

async fn a_wrong_contrast_value_is_answered_like_an_unknown_subject(backend: Backend) {
    let t = TestServer::start_on(
        backend,
        |c| {
            c.clients = vec![sede(true)];
            c.limits.check_subject = Rate::per(3, 3600);
            c.limits.check_ip = Rate::per(5, 3600);
        },
        None,
    )
    .await;
    let put = t
        .send(
            t.client
                .put(t.url(&format!("/v1/subscribers/{SUBJECT}")))
                .bearer_auth("key-of-sede")
                .json(&json!({"phone": PHONE, "contrast": "17/05/2030"})),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text);
    assert_eq!(put.body["contrast"], true);
    assert!(!put.text.contains("2030"), "the value is never shown");

    // Without the value: refused whoever the subject is.
    let a = as_sede(&t, json!({"subject": SUBJECT})).await;
    assert_eq!(
        (a.status, a.body["error"]["field"].as_str()),
        (400, Some("contrast"))
    );

    // Wrong, and unknown: the same answer, byte for byte.
    let wrong = as_sede(
        &t,
        json!({"subject": SUBJECT, "contrast": "18/05/2030", "ip": "192.0.2.7"}),
    )
    .await;
    let unknown = as_sede(
        &t,
        json!({"subject": "87654321X", "contrast": "18/05/2030", "ip": "192.0.2.7"}),
    )
    .await;
    assert_eq!(wrong.status, 422, "{}", wrong.text);
    assert_eq!(wrong.error_code(), "unknown_subject");
    assert_eq!((wrong.status, &wrong.text), (unknown.status, &unknown.text));
    assert!(t.outbox_lines().is_empty(), "no phone buzzed");

    // Right (in another spelling): a code goes out.
    let right = as_sede(&t, json!({"subject": SUBJECT, "contrast": "17-05-2030"})).await;
    assert_eq!(right.status, 201, "{}", right.text);

    // Failures count against the subject's guesses: after three, the subject is
    // refused whatever it sends, the right value too — and an unknown subject the
    // same way, so the limit tells nothing either.
    for s in [SUBJECT, "87654321X"] {
        for _ in 0..2 {
            let a = as_sede(&t, json!({"subject": s, "contrast": "01/01/2031"})).await;
            assert_eq!(a.status, 422, "{}", a.text);
        }
        let a = as_sede(&t, json!({"subject": s, "contrast": "17/05/2030"})).await;
        assert_eq!(
            (a.status, a.error_code()),
            (429, "rate_limited"),
            "{s}: {}",
            a.text
        );
        assert_eq!(a.body["error"]["limit"], "check_subject");
    }
    // And against the address's: five from one address, across subjects.
    let mut limited = false;
    for i in 0..6 {
        let s = format!("citizen-{i}");
        let a = as_sede(
            &t,
            json!({"subject": s, "contrast": "x", "ip": "198.51.100.9"}),
        )
        .await;
        if a.status == 429 {
            assert_eq!(a.body["error"]["limit"], "check_ip");
            limited = true;
        }
    }
    assert!(limited, "the address's limit refused");
    t.stop().await;
}

async fn a_purpose_can_require_contrast_and_the_push_names_the_client(backend: Backend) {
    let p = Providers::start().await;
    let t = TestServer::start_on(
        backend,
        |c| {
            p.configure(c);
            c.clients = vec![sede(false)];
            c.purposes.get_mut("login").unwrap().require_contrast = true;
        },
        None,
    )
    .await;
    let iphone = AppKey::es256();
    let put = t
        .send(
            t.client
                .put(t.url(&format!("/v1/subscribers/{SUBJECT}")))
                .bearer_auth("key-of-sede")
                .json(&json!({"phone": PHONE, "contrast": "E12345678", "devices": [
                    {"platform": "apns", "token": APNS_TOKEN, "app": "es.gob.clave", "key": iphone.enrollment()}]})),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text);
    let a = as_sede(
        &t,
        json!({"subject": SUBJECT, "channel": "app", "contrast": "e 1234 5678"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let r = Request::from_push(&p.requests(Provider::Apns, 1).await[0].body).unwrap();
    assert_eq!(r.requester.as_deref(), Some("Sede Electrónica"));
    let done = answer(&t, &iphone, Decision::Approve, &r, now(&t)).await;
    assert_eq!(done.status, 200, "{}", done.text);
    // The backend sees the outcome.
    let seen = t
        .send(
            t.client
                .get(t.url(&format!("/v1/verifications/{}", r.verification)))
                .bearer_auth("key-of-sede"),
        )
        .await;
    assert_eq!(seen.body["status"], "approved");
    t.stop().await;
}

on_both!(
    the_app_approves_what_apns_and_fcm_delivered,
    a_denial_is_final_and_bad_answers_change_nothing,
    answers_not_signed_by_the_subject_are_charged_to_the_callers_network,
    an_answer_after_expiry_is_refused,
    the_qr_code_works_without_any_push_and_the_pin_then_approves_nothing,
    no_answer_in_time_sends_the_pin_and_the_pin_approves,
    approval_needs_an_enrolled_key,
    a_wrong_contrast_value_is_answered_like_an_unknown_subject,
    a_purpose_can_require_contrast_and_the_push_names_the_client,
);
