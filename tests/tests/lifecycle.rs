//! The verification lifecycle over HTTP: every status the API can answer.

use std::time::Duration;

use otpd_e2e::{T0, TestServer, code_in};
use serde_json::json;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test]
async fn create_answers_201_with_the_verification() {
    let t = TestServer::start().await;
    let answer = t
        .post(
            "/v1/verifications",
            json!({"to": "+34 600 12-34-56", "channel": "sms", "locale": "ca", "purpose": "login", "subject": "12345678Z"}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let v = &answer.body;
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with("vf_") && id.len() == 35, "{id}");
    assert_eq!(v["status"], "pending");
    assert_eq!(v["to"], "+34600123456");
    assert_eq!(v["channel"], "sms");
    assert_eq!(v["locale"], "ca");
    assert_eq!(v["purpose"], "login");
    assert_eq!(v["subject"], "12345678Z");
    assert_eq!(v["expires_at"], T0.plus(secs(600)).to_rfc3339());
    assert_eq!(v["attempts_left"], 5);
    assert_eq!(v["sends_left"], 4);
    assert_eq!(v["delivery"]["state"], "queued");
    assert_eq!(
        answer.header("location"),
        Some(&*format!("/v1/verifications/{id}"))
    );
    let line = t.outbox_line(id, 1).await;
    assert_eq!(line["to"], "+34600123456");
    assert_eq!(line["locale"], "ca");
    assert!(
        line["text"]
            .as_str()
            .unwrap()
            .contains("és el teu codi de Cl@ve")
    );
}

#[tokio::test]
async fn defaults_are_auto_spanish_and_login() {
    let t = TestServer::start().await;
    let v = t.issue("0034600123456").await;
    assert_eq!(v["to"], "+34600123456");
    assert_eq!(v["channel"], "auto");
    assert_eq!(v["locale"], "es");
    assert_eq!(v["purpose"], "login");
    assert!(v.get("subject").is_none());
}

#[tokio::test]
async fn right_code_approves_once() {
    let t = TestServer::start().await;
    let v = t.issue("+34600000001").await;
    let id = v["id"].as_str().unwrap();
    let code = t.code(id, 1).await;
    assert_eq!(code.len(), 6);

    let first = t.check(id, &code).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["status"], "approved");

    let second = t.check(id, &code).await;
    assert_eq!(second.status, 409, "{}", second.text);
    assert_eq!(second.error_code(), "already_approved");
    assert_ne!(second.body["status"], "approved");

    let state = t.get(&format!("/v1/verifications/{id}")).await;
    assert_eq!(state.body["status"], "approved");
}

#[tokio::test]
async fn wrong_codes_count_down_then_lock() {
    let t = TestServer::start().await;
    let id = t.issue("+34600000002").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = t.code(&id, 1).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for left in (1..=4).rev() {
        let a = t.check(&id, wrong).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.body["status"], "pending");
        assert_eq!(a.body["attempts_left"], left);
    }
    let fifth = t.check(&id, wrong).await;
    assert_eq!(fifth.status, 429, "{}", fifth.text);
    assert_eq!(fifth.body["status"], "locked");
    // Locked means locked: the right code does not approve any more.
    let right = t.check(&id, &code).await;
    assert_eq!(right.status, 429);
    assert_eq!(right.body["status"], "locked");
    assert_eq!(
        t.get(&format!("/v1/verifications/{id}")).await.body["status"],
        "locked"
    );
}

#[tokio::test]
async fn codes_expire_after_ten_minutes() {
    let t = TestServer::start().await;
    let id = t.issue("+34600000003").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = t.code(&id, 1).await;
    t.clock.advance(secs(599));
    assert_eq!(
        t.get(&format!("/v1/verifications/{id}")).await.body["status"],
        "pending"
    );
    t.clock.advance(secs(1));
    let a = t.check(&id, &code).await;
    assert_eq!(a.status, 410, "{}", a.text);
    assert_eq!(a.body["status"], "expired");
    assert_eq!(
        t.get(&format!("/v1/verifications/{id}")).await.body["status"],
        "expired"
    );
}

#[tokio::test]
async fn per_purpose_ttl_and_code_length() {
    let t = TestServer::start_with(
        |c| {
            c.purposes.insert(
                "payment".into(),
                otpd::config::PurposeConfig {
                    ttl: secs(120),
                    code_length: 8,
                    ..Default::default()
                },
            );
        },
        None,
    )
    .await;
    let a = t
        .post(
            "/v1/verifications",
            json!({"to": "+34600000004", "purpose": "payment"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["expires_at"], T0.plus(secs(120)).to_rfc3339());
    let id = a.body["id"].as_str().unwrap();
    assert_eq!(t.code(id, 1).await.len(), 8);
}

#[tokio::test]
async fn unknown_ids_are_404_and_malformed_ids_400() {
    let t = TestServer::start().await;
    let unknown = "vf_0123456789abcdef0123456789abcdef";
    for a in [
        t.get(&format!("/v1/verifications/{unknown}")).await,
        t.check(unknown, "123456").await,
        t.delete(&format!("/v1/verifications/{unknown}")).await,
    ] {
        assert_eq!(a.status, 404, "{}", a.text);
        assert_eq!(a.error_code(), "not_found");
    }
    for bad in [
        "nope",
        "vf_XYZ",
        "vf_0123456789ABCDEF0123456789ABCDEF",
        "%ff",
    ] {
        let a = t.get(&format!("/v1/verifications/{bad}")).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.text);
        assert_eq!(a.error_code(), "invalid_id");
        assert_eq!(a.body["error"]["field"], "id");
        let a = t.check(bad, "123456").await;
        assert_eq!(a.status, 400, "{bad}: {}", a.text);
    }
}

#[tokio::test]
async fn get_shows_the_delivery_history() {
    let t = TestServer::start().await;
    let id = t.issue("+34600000005").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = t.answered(&id).await;
    assert_eq!(v["status"], "pending");
    let d = &v["delivery"];
    assert_eq!(d["state"], "sent");
    assert_eq!(d["channel"], "sms");
    let attempt = &d["attempts"][0];
    assert_eq!(attempt["send"], 1);
    assert_eq!(attempt["state"], "sent");
    assert_eq!(attempt["queued_at"], T0.to_rfc3339());
    assert_eq!(attempt["answered_at"], T0.to_rfc3339());
    assert!(
        attempt["reference"]
            .as_str()
            .unwrap()
            .starts_with("outbox:")
    );
}

#[tokio::test]
async fn cancel_makes_a_verification_unusable() {
    let t = TestServer::start().await;
    let id = t.issue("+34600000006").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = t.code(&id, 1).await;
    let path = format!("/v1/verifications/{id}");
    let a = t.delete(&path).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["status"], "canceled");
    // Idempotent.
    assert_eq!(t.delete(&path).await.body["status"], "canceled");
    let a = t.check(&id, &code).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.body["status"], "canceled");
    assert_eq!(t.get(&path).await.body["status"], "canceled");
}

#[tokio::test]
async fn approved_or_expired_verifications_cannot_be_canceled() {
    let t = TestServer::start().await;
    let id = t.issue("+34600000007").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = t.code(&id, 1).await;
    t.check(&id, &code).await;
    let a = t.delete(&format!("/v1/verifications/{id}")).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.body["status"], "approved");

    let id = t.issue("+34600000008").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    t.clock.advance(secs(600));
    let a = t.delete(&format!("/v1/verifications/{id}")).await;
    assert_eq!(a.status, 410, "{}", a.text);
    assert_eq!(a.body["status"], "expired");
}

#[tokio::test]
async fn a_repeat_request_resends_the_same_code_after_the_cooldown() {
    let t = TestServer::start().await;
    let first = t.issue("+34600000009").await;
    let id = first["id"].as_str().unwrap();
    let code = t.code(id, 1).await;

    // Straight away: the same request again, deduplicated — same verification,
    // nothing sent.
    let same = t
        .post("/v1/verifications", json!({"to": "+34600000009"}))
        .await;
    assert_eq!(same.status, 200, "{}", same.text);
    assert_eq!(same.header("otpd-deduplicated"), Some("true"));
    assert_eq!(same.body["id"], id);
    assert_eq!(
        same.body["delivery"]["attempts"].as_array().unwrap().len(),
        1
    );

    // Past the dedupe window, inside the resend cooldown: refused.
    t.clock.advance(secs(10));
    let early = t
        .post("/v1/verifications", json!({"to": "+34600000009"}))
        .await;
    assert_eq!(early.status, 429, "{}", early.text);
    assert_eq!(early.error_code(), "resend_cooldown");
    assert_eq!(early.header("retry-after"), Some("20"));

    t.clock.advance(secs(20));
    let again = t
        .post("/v1/verifications", json!({"to": "0034 600 000 009"}))
        .await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.body["id"], id, "same verification");
    assert_eq!(again.body["sends_left"], 3);
    assert_eq!(
        again.body["delivery"]["attempts"].as_array().unwrap().len(),
        2
    );
    assert_eq!(t.code(id, 2).await, code, "same code");

    // A resend does not extend the validity.
    assert_eq!(again.body["expires_at"], first["expires_at"]);
    assert_eq!(t.check(id, &code).await.body["status"], "approved");
}

#[tokio::test]
async fn resends_stop_at_max_sends() {
    let t = TestServer::start().await;
    let id = t.issue("+34600000010").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for send in 2..=5 {
        t.clock.advance(secs(30));
        let a = t
            .post("/v1/verifications", json!({"to": "+34600000010"}))
            .await;
        assert_eq!(a.status, 201, "send {send}: {}", a.text);
        assert_eq!(a.body["sends_left"], 5 - send);
    }
    t.clock.advance(secs(30));
    let a = t
        .post("/v1/verifications", json!({"to": "+34600000010"}))
        .await;
    assert_eq!(a.status, 429, "{}", a.text);
    assert_eq!(a.error_code(), "max_sends_reached");
    // Retry-After points at the end of the validity (600 - 5 × 30 = 450 s left).
    assert_eq!(a.header("retry-after"), Some("450"));
    t.code(&id, 5).await;
    assert_eq!(t.outbox_lines().len(), 5);
}

#[tokio::test]
async fn a_final_verification_makes_room_for_a_new_one() {
    let t = TestServer::start().await;
    let id = t.issue("+34600000011").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = t.code(&id, 1).await;
    t.check(&id, &code).await;
    let next = t.issue("+34600000011").await;
    assert_ne!(next["id"], id.as_str());
    assert_eq!(next["sends_left"], 4);
}

#[tokio::test]
async fn different_purposes_are_different_verifications() {
    let t = TestServer::start_with(
        |c| {
            c.purposes.insert("signup".into(), Default::default());
        },
        None,
    )
    .await;
    let a = t.issue("+34600000012").await;
    let b = t
        .post(
            "/v1/verifications",
            json!({"to": "+34600000012", "purpose": "signup"}),
        )
        .await;
    assert_eq!(b.status, 201, "{}", b.text);
    assert_ne!(a["id"], b.body["id"]);
}

#[tokio::test]
async fn concurrent_identical_requests_make_one_verification_and_one_send() {
    let t = TestServer::start().await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let client = t.client.clone();
        let url = t.url("/v1/verifications");
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&json!({"to": "+34600000013"}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }));
    }
    let mut created = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            201 => created.push(body.clone()),
            200 => {}
            other => panic!("unexpected {other}: {body}"),
        }
        ids.insert(body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(created.len(), 1, "exactly one request creates");
    assert_eq!(ids.len(), 1, "the others get the same verification");
    let id = created[0]["id"].as_str().unwrap();
    t.outbox_line(id, 1).await;
    t.queue_drained().await;
    assert_eq!(t.outbox_lines().len(), 1, "exactly one send");
    let v = t.get(&format!("/v1/verifications/{id}")).await;
    assert_eq!(
        v.body["delivery"]["attempts"].as_array().map(Vec::len),
        Some(1),
        "one send recorded: {}",
        v.text
    );
    // Duplicates were charged nothing: the number has 4 of its 5 sends left.
    let limits = t.get("/v1/admin/limits?to=%2B34600000013").await;
    let destination = limits.body["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["limit"] == "destination")
        .unwrap()
        .clone();
    assert_eq!(destination["remaining"], 4, "{}", limits.text);
}

#[tokio::test]
async fn the_code_never_appears_in_api_answers() {
    let t = TestServer::start().await;
    let id = t.issue("+34600000014").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = t.code(&id, 1).await;
    let mut texts = Vec::new();
    texts.push(t.get(&format!("/v1/verifications/{id}")).await.text);
    texts.push(
        t.post(
            &format!("/v1/verifications/{id}/check"),
            json!({"code": code.parse::<u64>().unwrap()}),
        )
        .await
        .text,
    );
    texts.push(
        t.post(
            &format!("/v1/verifications/{id}/check"),
            json!({"code": code, "extra": code}),
        )
        .await
        .text,
    );
    texts.push(t.check(&id, &code).await.text);
    texts.push(t.check(&id, &code).await.text);
    texts.push(t.get(&format!("/v1/verifications/{id}")).await.text);
    texts.push(t.get("/metrics").await.text);
    for text in texts {
        assert!(!text.contains(&code), "the code leaked: {text}");
    }
    // The outbox is the one place it may be.
    assert_eq!(code_in(t.outbox_lines()[0]["text"].as_str().unwrap()), code);
}

#[tokio::test]
async fn every_language_is_rendered() {
    let t = TestServer::start().await;
    let mut texts = std::collections::HashSet::new();
    for (i, locale) in ["es", "ca", "gl", "eu", "va", "en"].iter().enumerate() {
        let a = t
            .post(
                "/v1/verifications",
                json!({"to": format!("+3460000010{i}"), "locale": locale}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        let line = t.outbox_line(a.body["id"].as_str().unwrap(), 1).await;
        assert_eq!(line["locale"], *locale);
        assert!(
            texts.insert(
                line["text"]
                    .as_str()
                    .unwrap()
                    .replace(|c: char| c.is_ascii_digit(), "")
            )
        );
    }
}
