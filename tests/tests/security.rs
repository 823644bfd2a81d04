//! The public surfaces under attack, each test performing one attack of the threat
//! model (`docs/THREAT_MODEL.md`) against a real server and checking that it fails:
//! a stranger holding a verification id cannot lock the citizen out, unmask their
//! number or disarm their fallback; an API client cannot use the registry beyond its
//! permission, nor redirect a subject's code; spellings of an identity number are one
//! subject; nothing a caller sends comes back in an error or a metric label; and the
//! Redis key names carry no personal data.
//!
//! Callers are told apart by `X-Forwarded-For`, which otpd believes only from the
//! configured trusted proxies (here: the loopback the tests connect from).

use std::time::Duration;

use otpd::config::{ClientConfig, Config, Rate, RegistryAccess};
use otpd::policy::clients::hash_key;
use otpd_e2e::providers::Providers;
use otpd_e2e::{Answer, Backend, TestServer, on_both};
use otpd_loadtest::app::{AppKey, Decision, Request};
use otpd_simulators::push::Provider;
use serde_json::{Value, json};

const SUBJECT: &str = "87654321X";
const PHONE: &str = "+34600123456";
const APNS_TOKEN: &str = "5a0f3c9e1b7d4a2e8c6f0b1d3e5a7c9e2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a";
const FCM_TOKEN: &str = "fGx1Y2s6APA91bH_android-device-token_0123456789";
/// The address of the person on the phone, and of a stranger, as a trusted proxy
/// reports them.
const CITIZEN: &str = "198.51.100.20";
const STRANGER: &str = "203.0.113.7";

/// Callers as the trusted proxy (loopback) reports them.
fn behind_proxy(c: &mut Config) {
    c.server.trusted_proxies = vec!["127.0.0.1/32".into()];
}

async fn post_from(t: &TestServer, from: &str, path: &str, body: Value) -> Answer {
    t.send(
        t.client
            .post(t.url(path))
            .header("x-forwarded-for", from)
            .json(&body),
    )
    .await
}

/// An approval request for a subject whose iPhone enrolled a key, and the request as
/// the phone received it.
struct Approval {
    p: Providers,
    t: TestServer,
    iphone: AppKey,
    push: Request,
}

impl Approval {
    async fn start(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let p = Providers::start().await;
        let t = TestServer::start_on(
            backend,
            |c| {
                p.configure(c);
                behind_proxy(c);
                tweak(c);
            },
            None,
        )
        .await;
        let iphone = AppKey::es256();
        let a = t
            .put(
                &format!("/v1/subscribers/{SUBJECT}"),
                json!({"phone": PHONE, "devices": [
                    {"platform": "apns", "token": APNS_TOKEN, "app": "es.gob.clave", "key": iphone.enrollment()},
                ]}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        let push = Self::ask(&t, &p, 1).await;
        Self { p, t, iphone, push }
    }

    /// Ask for an approval; `n` is how many approval pushes APNs will have had.
    async fn ask(t: &TestServer, p: &Providers, n: usize) -> Request {
        let a = t
            .post(
                "/v1/verifications",
                json!({"subject": SUBJECT, "channel": "app"}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        let id = a.body["id"].as_str().unwrap().to_string();
        let pushes = p.requests(Provider::Apns, n).await;
        pushes
            .iter()
            .filter_map(|r| Request::from_push(&r.body))
            .find(|r| r.verification == id)
            .expect("the approval push")
    }

    fn now(&self) -> i64 {
        use otpd::domain::clock::Clock as _;
        self.t.clock.now().0
    }

    /// An answer to this request as a stranger forges it.
    async fn forged(&self, from: &str, decision: &str) -> Answer {
        self.forged_to(&self.push, from, decision).await
    }

    /// An answer to `r` as a stranger forges it: an invented device thumbprint, a
    /// junk signature.
    async fn forged_to(&self, r: &Request, from: &str, decision: &str) -> Answer {
        post_from(
            &self.t,
            from,
            &format!("/v1/verifications/{}/{decision}", r.verification),
            json!({"device": "AAAAAAAAAAAAAAAAAAAAAA", "timestamp": self.now(), "signature": "AAAA"}),
        )
        .await
    }

    async fn genuine(&self, from: &str, decision: Decision) -> Answer {
        post_from(
            &self.t,
            from,
            &AppKey::path(decision, &self.push),
            self.iphone.answer(decision, &self.push, self.now()),
        )
        .await
    }
}

// 1. Lockout by a stranger.

async fn a_stranger_holding_the_qr_id_cannot_lock_the_subject_out(backend: Backend) {
    let a = Approval::start(backend, |c| {
        c.limits.check_subject = Rate::per(10, 3600);
    })
    .await;
    // Twelve forged denials, each from another address (a botnet), past the
    // subject's guess limit if they were charged to it.
    for i in 0..12 {
        let r = a.forged(&format!("203.0.113.{}", 10 + i), "deny").await;
        assert_eq!(r.status, 403, "{}", r.text);
    }
    // The citizen still gets codes and approvals: a request for the subject past
    // the resend cooldown is decided by its limits again, and they are whole.
    a.t.clock.advance(Duration::from_secs(31));
    let more =
        a.t.post(
            "/v1/verifications",
            json!({"subject": SUBJECT, "channel": "app"}),
        )
        .await;
    assert_eq!(more.status, 201, "{}", more.text);
    let ok = a.genuine(CITIZEN, Decision::Approve).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["status"], "approved");
    a.t.stop().await;
}

async fn forged_answers_are_charged_to_the_callers_address(backend: Backend) {
    let a = Approval::start(backend, |c| {
        c.limits.answer_ip = Rate::per(3, 600);
    })
    .await;
    for _ in 0..3 {
        assert_eq!(a.forged(STRANGER, "approve").await.status, 403);
    }
    // The stranger's address is spent; it is refused before any signature is looked at.
    let refused = a.forged(STRANGER, "approve").await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.body["error"]["limit"], "answer_ip");
    // A spoofed X-Forwarded-For from an untrusted peer changes nothing: only the
    // proxy's word counts, and here the peer is the proxy. The citizen, elsewhere,
    // is not concerned.
    let ok = a.genuine(CITIZEN, Decision::Approve).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    a.t.stop().await;
}

async fn answers_to_a_final_or_expired_request_are_refused_before_any_work(backend: Backend) {
    let a = Approval::start(backend, |c| {
        c.limits.answer_ip = Rate::per(2, 600);
    })
    .await;
    assert_eq!(a.genuine(CITIZEN, Decision::Approve).await.status, 200);
    // Final: forged answers are refused as such, and cost the address nothing.
    for _ in 0..5 {
        let r = a.forged(STRANGER, "deny").await;
        assert_eq!(r.status, 409, "{}", r.text);
        assert_eq!(r.error_code(), "already_answered");
    }
    // Expired: the same.
    let pending = Approval::ask(&a.t, &a.p, 2).await;
    a.t.clock.advance(Duration::from_secs(301));
    for _ in 0..5 {
        let r = a.forged_to(&pending, STRANGER, "approve").await;
        assert_eq!(r.status, 410, "{}", r.text);
    }
    // The stranger's budget is whole: a forged answer to a pending request is judged.
    let fresh = Approval::ask(&a.t, &a.p, 3).await;
    let r = a.forged_to(&fresh, STRANGER, "approve").await;
    assert_eq!(r.status, 403, "{}", r.text);
    a.t.stop().await;
}

async fn a_flood_of_unauthenticated_calls_is_limited_per_address(backend: Backend) {
    let a = Approval::start(backend, |c| {
        c.limits.public_ip = Rate::per(5, 60);
    })
    .await;
    let path = format!("/v1/verifications/{}/ack", a.push.verification);
    let mut limited = 0;
    for _ in 0..8 {
        let r = post_from(&a.t, STRANGER, &path, json!({"ack_token": "x"})).await;
        if r.status == 429 {
            assert_eq!(r.body["error"]["limit"], "public_ip", "{}", r.text);
            limited += 1;
        }
    }
    assert_eq!(limited, 3);
    // Another address is not concerned.
    let ok = a.genuine(CITIZEN, Decision::Approve).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    a.t.stop().await;
}

// 2. `/ack` leaks and disarms.

async fn ack_without_the_push_secret_neither_leaks_nor_disarms_the_fallback(backend: Backend) {
    let p = Providers::start().await;
    let t = TestServer::start_on(
        backend,
        |c| {
            p.configure(c);
            behind_proxy(c);
        },
        None,
    )
    .await;
    let a = t
        .put(
            &format!("/v1/subscribers/{SUBJECT}"),
            json!({"phone": PHONE, "devices": [{"platform": "fcm", "token": FCM_TOKEN, "app": "es.gob.clave"}]}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let v = t
        .post("/v1/verifications", json!({"subject": SUBJECT}))
        .await;
    assert_eq!(v.status, 201, "{}", v.text);
    let id = v.body["id"].as_str().unwrap();
    let path = format!("/v1/verifications/{id}/ack");
    let push = p.requests(Provider::Fcm, 1).await.remove(0);
    let data = &push.body["message"]["data"];
    let token = data["ack_token"]
        .as_str()
        .expect("the push carries its ack token");

    for body in [json!({}), json!({"ack_token": "AAAAAAAAAAAAAAAAAAAAAA"})] {
        let r = post_from(&t, STRANGER, &path, body).await;
        assert!(r.status == 400 || r.status == 403, "{}", r.text);
        for secret in ["34600123456", SUBJECT, "match_code", "challenge"] {
            assert!(!r.text.contains(secret), "{secret} in {}", r.text);
        }
    }
    // Another verification's token does not fit this one.
    // The fallback is still armed: the minute passes and the SMS goes.
    t.clock.advance(Duration::from_secs(61));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !t
        .outbox_lines()
        .iter()
        .any(|l| l["verification_id"] == id && l["channel"] == "sms")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SMS fallback never went"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The app's own token acknowledges, and the answer is only the id and status.
    let r = post_from(&t, CITIZEN, &path, json!({"ack_token": token})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"id": id, "status": "pending"}));
    t.stop().await;
}

// 3. Registry.

fn client(name: &str, registry: RegistryAccess) -> ClientConfig {
    ClientConfig {
        registry,
        ..ClientConfig::new(name, hash_key(&format!("key-of-{name}")))
    }
}

async fn as_client(
    t: &TestServer,
    who: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let mut r = t
        .client
        .request(method, t.url(path))
        .bearer_auth(format!("key-of-{who}"));
    if let Some(b) = body {
        r = r.json(&b);
    }
    t.send(r).await
}

async fn a_client_without_registry_permission_cannot_read_or_change_it(backend: Backend) {
    let t = TestServer::start_on(
        backend,
        |c| {
            c.clients = vec![
                ClientConfig {
                    purposes: vec!["login".into()],
                    countries: vec!["ES".into()],
                    ..client("sede", RegistryAccess::None)
                },
                client("auditor", RegistryAccess::Read),
                client("registro", RegistryAccess::Write),
            ];
        },
        None,
    )
    .await;
    use reqwest::Method;
    let path = format!("/v1/subscribers/{SUBJECT}");
    let body = json!({"phone": PHONE});
    let put = as_client(&t, "registro", Method::PUT, &path, Some(body.clone())).await;
    assert_eq!(put.status, 201, "{}", put.text);
    let device = json!({"platform": "fcm", "token": FCM_TOKEN, "app": "es.gob.clave",
        "key": AppKey::ed25519().enrollment()});
    let devices = format!("{path}/devices");
    for (who, method, p, b) in [
        ("sede", Method::GET, &path, None),
        (
            "sede",
            Method::PUT,
            &path,
            Some(json!({"phone": "+34600999999"})),
        ),
        ("sede", Method::DELETE, &path, None),
        ("sede", Method::POST, &devices, Some(device.clone())),
        (
            "auditor",
            Method::PUT,
            &path,
            Some(json!({"phone": "+34600999999"})),
        ),
        ("auditor", Method::DELETE, &path, None),
        ("auditor", Method::POST, &devices, Some(device.clone())),
    ] {
        let r = as_client(&t, who, method.clone(), p, b).await;
        assert_eq!(r.status, 403, "{who} {method} {p}: {}", r.text);
        assert_eq!(r.error_code(), "registry_not_allowed");
    }
    let read = as_client(&t, "auditor", Method::GET, &path, None).await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.body["phone"], PHONE, "unchanged");
    assert!(read.body["devices"].as_array().unwrap().is_empty());
    t.stop().await;
}

async fn phone_taken_names_no_subject(backend: Backend) {
    let t = TestServer::start_on(backend, |_| {}, None).await;
    let a = t
        .put(
            &format!("/v1/subscribers/{SUBJECT}"),
            json!({"phone": PHONE}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let b = t
        .put("/v1/subscribers/12345678Z", json!({"phone": PHONE}))
        .await;
    assert_eq!(b.status, 409, "{}", b.text);
    assert_eq!(b.error_code(), "phone_taken");
    assert!(!b.text.contains(SUBJECT), "{}", b.text);
    t.stop().await;
}

// 4. A request by a registered subject may not carry another `to`.

async fn a_request_by_subject_cannot_send_its_code_to_another_number(backend: Backend) {
    let p = Providers::start().await;
    let t = TestServer::start_on(
        backend,
        |c| {
            p.configure(c);
            c.clients = vec![
                client("sede", RegistryAccess::Write),
                ClientConfig {
                    override_to: true,
                    ..client("helpdesk", RegistryAccess::None)
                },
            ];
        },
        None,
    )
    .await;
    use reqwest::Method;
    let r = as_client(
        &t,
        "sede",
        Method::PUT,
        &format!("/v1/subscribers/{SUBJECT}"),
        Some(json!({"phone": PHONE, "devices": [{"platform": "fcm", "token": FCM_TOKEN, "app": "es.gob.clave"}]})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let hijack = json!({"subject": SUBJECT, "to": "+34699000111"});
    let r = as_client(
        &t,
        "sede",
        Method::POST,
        "/v1/verifications",
        Some(hijack.clone()),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.error_code(), "to_not_allowed");
    assert!(!r.text.contains("600123456"), "{}", r.text);
    // The same number as registered is fine.
    let same = json!({"subject": SUBJECT, "to": "600 12 34 56"});
    let r = as_client(&t, "sede", Method::POST, "/v1/verifications", Some(same)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // A client allowed to override: the code goes by SMS to the other number only,
    // and the verification records it.
    let r = as_client(
        &t,
        "helpdesk",
        Method::POST,
        "/v1/verifications",
        Some(hijack),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["to"], "+34699000111");
    assert_eq!(r.body["to_override"], true);
    assert_eq!(r.body["delivery"]["channel"], "sms");
    let id = r.body["id"].as_str().unwrap();
    let seen = as_client(
        &t,
        "helpdesk",
        Method::GET,
        &format!("/v1/verifications/{id}"),
        None,
    )
    .await;
    assert_eq!(seen.body["to_override"], true, "{}", seen.text);
    // Only the first request reached the devices.
    assert_eq!(p.requests(Provider::Fcm, 1).await.len(), 1);
    t.stop().await;
}

// 5. Subjects are normalised.

async fn spellings_of_one_identity_number_share_its_limits(backend: Backend) {
    let t = TestServer::start_on(
        backend,
        |c| {
            c.limits.subject = Rate::per(1, 600);
        },
        None,
    )
    .await;
    let first = t
        .post(
            "/v1/verifications",
            json!({"to": "+34600000001", "subject": "87654321X"}),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.body["subject"], "87654321X");
    for (n, spelling) in ["87654321x", "８７６５４３２１Ｘ"].iter().enumerate() {
        let r = t
            .post(
                "/v1/verifications",
                json!({"to": format!("+3460000001{n}"), "subject": spelling}),
            )
            .await;
        assert_eq!(r.status, 429, "{spelling}: {}", r.text);
        assert_eq!(r.body["error"]["limit"], "subject");
    }
    for hidden in [
        "87654321X\u{200B}",
        "\u{FEFF}87654321X",
        "\u{202E}87654321X",
        "87654321X\u{200F}",
        "12345678A\u{200B}",
    ] {
        let r = t
            .post(
                "/v1/verifications",
                json!({"to": "+34600000020", "subject": hidden}),
            )
            .await;
        assert_eq!(
            r.status,
            400,
            "{:?}: {}",
            hidden.escape_unicode().to_string(),
            r.text
        );
        assert_eq!(r.error_code(), "invalid_subject");
    }
    let r = t
        .put("/v1/subscribers/%E2%80%AEabc", json!({"phone": PHONE}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // The registry reads every spelling as one subject.
    let r = t
        .put("/v1/subscribers/87654321x", json!({"phone": PHONE}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["subject"], "87654321X");
    let r = t.get("/v1/subscribers/%EF%BC%98%EF%BC%97%EF%BC%96%EF%BC%95%EF%BC%94%EF%BC%93%EF%BC%92%EF%BC%91%EF%BC%B8").await;
    assert_eq!(r.status, 200, "{}", r.text);
    t.stop().await;
}

async fn a_wrong_check_letter_is_refused_without_telling_the_right_one(backend: Backend) {
    let t = TestServer::start_on(backend, |_| {}, None).await;
    let r = t
        .post(
            "/v1/verifications",
            json!({"to": PHONE, "subject": "12345678A"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "invalid_subject");
    assert!(
        !r.body["error"]["message"].as_str().unwrap().contains('Z'),
        "{}",
        r.text
    );
    t.stop().await;
}

// 7. Metric labels.

async fn invented_http_methods_do_not_become_metric_labels(backend: Backend) {
    let t = TestServer::start_on(backend, |_| {}, None).await;
    for i in 0..200 {
        let method =
            reqwest::Method::from_bytes(format!("X{i:03}{}", "Q".repeat(40)).as_bytes()).unwrap();
        let r = t
            .send(t.client.request(method, t.url("/v1/verifications")))
            .await;
        assert_eq!(r.status, 405);
    }
    let metrics = t.get("/metrics").await.text;
    let methods: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("otpd_http_requests_total"))
        .filter_map(|l| l.split("method=\"").nth(1)?.split('"').next())
        .collect();
    assert!(methods.len() <= 8, "{methods:?}");
    assert!(methods.contains("other"), "{methods:?}");
    assert!(!metrics.contains("QQQQ"));
    t.stop().await;
}

// 8. Echoes.

async fn nothing_a_caller_sends_comes_back_in_an_error(backend: Backend) {
    let t = TestServer::start_on(backend, |_| {}, None).await;
    let script = "<script>alert(1)</script>";
    // An unknown key, long and hostile.
    let key = format!("{script}\u{1}{}", "k".repeat(15_000));
    let mut body = serde_json::Map::new();
    body.insert("to".into(), json!(PHONE));
    body.insert(key, json!(1));
    let r = t.post("/v1/verifications", Value::Object(body)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "unknown_field");
    assert!(r.text.len() < 512, "{} bytes", r.text.len());
    assert!(
        !r.text.contains("<script>") && !r.text.contains("kkkk"),
        "{}",
        r.text
    );
    // A short, plain unknown key is still named.
    let r = t
        .post("/v1/verifications", json!({"to": PHONE, "pin": "1"}))
        .await;
    assert_eq!(r.body["error"]["field"], "pin", "{}", r.text);
    // Unknown routes and methods: no path, no method in the answer.
    let long = format!("/v1/{script}{}", "p".repeat(8_000));
    let r = t.get(&long).await;
    assert_eq!(r.status, 404);
    assert!(
        r.text.len() < 512 && !r.text.contains("script"),
        "{}",
        r.text
    );
    let r = t
        .send(t.client.request(
            reqwest::Method::from_bytes(b"EXPLOIT").unwrap(),
            t.url("/v1/verifications"),
        ))
        .await;
    assert_eq!(r.status, 405);
    assert!(
        !r.text.contains("EXPLOIT") && !r.text.contains("/v1/"),
        "{}",
        r.text
    );
    // Path segments that are not text, query parameters nobody asked for: JSON
    // errors that repeat nothing.
    for path in [
        "/v1/subscribers/%FF%3Cscript%3E",
        "/v1/subscribers/87654321X/devices/apns/%FF%3Cscript%3E",
        "/v1/admin/limits?to=%2B34600123456&%3Cscript%3Eevil=1",
    ] {
        let r = if path.contains("devices") {
            t.delete(path).await
        } else {
            t.get(path).await
        };
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert!(r.body["error"]["code"].is_string(), "{path}: {}", r.text);
        assert!(
            !r.text.contains("script") && !r.text.contains("evil"),
            "{}",
            r.text
        );
    }
    t.stop().await;
}

// 9. Duplicate JSON keys.

async fn a_duplicate_json_key_is_refused_and_counts_nothing(backend: Backend) {
    let t = TestServer::start_on(backend, |_| {}, None).await;
    let v = t.issue(PHONE).await;
    let id = v["id"].as_str().unwrap();
    let code = t.code(id, 1).await;
    let body = format!(r#"{{"code": "{code}", "code": "000000"}}"#);
    let r = t
        .send(
            t.client
                .post(t.url(&format!("/v1/verifications/{id}/check")))
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "duplicate_key");
    assert_eq!(r.body["error"]["field"], "code");
    let seen = t.get(&format!("/v1/verifications/{id}")).await;
    assert_eq!(seen.body["attempts_left"], 5, "nothing was counted");
    // Nested objects too.
    let r = t
        .send(
            t.client
                .put(t.url(&format!("/v1/subscribers/{SUBJECT}")))
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"phone": "{PHONE}", "devices": [{{"platform": "fcm", "platform": "apns", "token": "{FCM_TOKEN}", "app": "a"}}]}}"#
                )),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "duplicate_key");
    assert_eq!(r.body["error"]["field"], "devices[0].platform");
    t.stop().await;
}

// 11. Costly destinations.

async fn satellite_and_international_network_numbers_are_refused(backend: Backend) {
    let t = TestServer::start_on(backend, |_| {}, None).await;
    for number in [
        "+870773111632",
        "+881612345678",
        "+882 34 2123 4567",
        "+88351001234567",
    ] {
        let r = t.post("/v1/verifications", json!({"to": number})).await;
        assert_eq!(r.status, 400, "{number}: {}", r.text);
        assert_eq!(
            r.body["error"]["reason"], "non_geographic",
            "{number}: {}",
            r.text
        );
    }
    t.stop().await;
    let t = TestServer::start_on(
        backend,
        |c| {
            c.numbers.allow_non_geographic = true;
            c.numbers.mobile_only = false;
        },
        None,
    )
    .await;
    let r = t
        .post("/v1/verifications", json!({"to": "+870773111632"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    t.stop().await;
}

on_both!(
    a_stranger_holding_the_qr_id_cannot_lock_the_subject_out,
    forged_answers_are_charged_to_the_callers_address,
    answers_to_a_final_or_expired_request_are_refused_before_any_work,
    a_flood_of_unauthenticated_calls_is_limited_per_address,
    ack_without_the_push_secret_neither_leaks_nor_disarms_the_fallback,
    a_client_without_registry_permission_cannot_read_or_change_it,
    phone_taken_names_no_subject,
    a_request_by_subject_cannot_send_its_code_to_another_number,
    spellings_of_one_identity_number_share_its_limits,
    a_wrong_check_letter_is_refused_without_telling_the_right_one,
    invented_http_methods_do_not_become_metric_labels,
    nothing_a_caller_sends_comes_back_in_an_error,
    a_duplicate_json_key_is_refused_and_counts_nothing,
    satellite_and_international_network_numbers_are_refused,
);

// 10. Personal data in Redis key names.

#[tokio::test]
async fn redis_key_names_carry_no_identity_number_phone_or_raw_hash_tag() {
    let redis = otpd_e2e::redis::RedisServer::start();
    let url = redis.url();
    let t = TestServer::start_with(
        |c| {
            c.store.kind = otpd::config::StoreKind::Redis;
            c.redis.urls = vec![url];
        },
        None,
    )
    .await;
    let r = t
        .put(
            &format!("/v1/subscribers/{SUBJECT}"),
            json!({"phone": PHONE}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = t
        .post(
            "/v1/verifications",
            json!({"subject": SUBJECT, "ip": "192.0.2.1"}),
        )
        .await;
    assert_eq!(v.status, 201, "{}", v.text);
    let id = v.body["id"].as_str().unwrap();
    // A wrong code charges the subject's wrong-code limit.
    let wrong = t
        .post(
            &format!("/v1/verifications/{id}/check"),
            json!({"code": "000000", "ip": "192.0.2.1"}),
        )
        .await;
    assert_eq!(wrong.status, 200, "{}", wrong.text);
    // An idempotency key that would move the hash tag.
    let r = t
        .send(
            t.client
                .post(t.url("/v1/verifications"))
                .header("idempotency-key", "}{evil}")
                .json(&json!({"to": "+34600765432"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let keys = redis.cli(&["--scan"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert!(keys.len() > 5, "{keys:?}");
    let digits_be = 34_600_123_456u64.to_be_bytes();
    for key in &keys {
        for personal in [SUBJECT, "600123456", "600765432", "192.0.2.1", "evil"] {
            assert!(!key.contains(personal), "{personal} in key {key:?}");
        }
        assert!(
            !key.as_bytes().windows(8).any(|w| w == digits_be),
            "the number's bytes in key {key:?}"
        );
        // Every hash tag is otpd's own: a partition number, the registry, or a hash.
        if let Some(start) = key.find('{') {
            let tag = &key[start + 1..start + 1 + key[start + 1..].find('}').unwrap()];
            assert!(
                tag == "reg"
                    || tag
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_hexdigit()),
                "hash tag {tag:?} in {key:?}"
            );
        }
    }
    // And it still all works: the subject's record is found again.
    assert_eq!(
        t.get(&format!("/v1/subscribers/{SUBJECT}")).await.status,
        200
    );
    t.stop().await;
}
