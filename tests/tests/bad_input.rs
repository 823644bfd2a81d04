//! Bad input gets a clear 4xx naming what is wrong, and changes nothing.

use otpd_e2e::TestServer;
use serde_json::json;

async fn assert_nothing_created(t: &TestServer) {
    // No send happened, and the number is free: a good request now creates (201),
    // where a half-created verification would answer 429 (cooldown).
    assert!(t.outbox_lines().is_empty(), "nothing may be sent");
    let a = t
        .post("/v1/verifications", json!({"to": "+34600123456"}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
}

#[tokio::test]
async fn malformed_json_is_400_invalid_json() {
    let t = TestServer::start().await;
    for body in [
        "{",
        "{\"to\": }",
        "not json",
        "{\"to\": \"+34600123456\"} trailing",
        "",
    ] {
        let a = t
            .send(
                t.client
                    .post(t.url("/v1/verifications"))
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        assert_eq!(a.status, 400, "{body:?}: {}", a.text);
        assert_eq!(a.error_code(), "invalid_json", "{body:?}");
        assert!(!a.body["error"]["message"].as_str().unwrap().is_empty());
    }
    assert_nothing_created(&t).await;
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let t = TestServer::start().await;
    let cases = [
        (json!({"to": 34600123456u64}), "to"),
        (json!({"to": "+34600123456", "channel": 1}), "channel"),
        (json!({"to": "+34600123456", "channel": "fax"}), "channel"),
        (json!({"to": "+34600123456", "locale": ["es"]}), "locale"),
        (
            json!({"to": "+34600123456", "subject": {"dni": 1}}),
            "subject",
        ),
        (json!({"to": "+34600123456", "purpose": true}), "purpose"),
    ];
    for (body, field) in cases {
        let a = t.post("/v1/verifications", body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {}", a.text);
        assert_eq!(a.error_code(), "invalid_field", "{body}");
        assert_eq!(a.body["error"]["field"], field, "{body}");
    }
    for body in [json!(["+34600123456"]), json!("+34600123456"), json!(null)] {
        let a = t.post("/v1/verifications", body).await;
        assert_eq!(a.status, 400, "{}", a.text);
        assert_eq!(a.error_code(), "invalid_body");
    }
    assert_nothing_created(&t).await;
}

#[tokio::test]
async fn unknown_and_missing_fields_are_named() {
    let t = TestServer::start().await;
    let a = t
        .post(
            "/v1/verifications",
            json!({"to": "+34600123456", "phone": "x"}),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.error_code(), "unknown_field");
    assert_eq!(a.body["error"]["field"], "phone");
    let a = t.post("/v1/verifications", json!({"channel": "sms"})).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.error_code(), "missing_field");
    assert_eq!(a.body["error"]["field"], "to");
    assert_nothing_created(&t).await;
}

#[tokio::test]
async fn invalid_numbers_say_why() {
    let t = TestServer::start().await;
    let cases = [
        ("60012", "too_short"),
        ("+34 912 345 678", "not_mobile"),
        ("+34 412 345 678", "invalid_number"),
        ("+34 600 ABC 456", "invalid_character"),
        ("+346", "too_short"),
        ("+34600123456789012", "too_long"),
        ("+28600123456", "invalid_country_code"),
        ("", "empty"),
    ];
    for (to, reason) in cases {
        let a = t.post("/v1/verifications", json!({ "to": to })).await;
        assert_eq!(a.status, 400, "{to}: {}", a.text);
        assert_eq!(a.error_code(), "invalid_phone_number", "{to}");
        assert_eq!(a.body["error"]["field"], "to");
        assert_eq!(a.body["error"]["reason"], reason, "{to}");
    }
    assert_nothing_created(&t).await;
}

#[tokio::test]
async fn numbers_are_taken_as_people_type_them_and_their_country_recorded() {
    let t = TestServer::start().await;
    for (i, to) in [
        "600 12 34 01",
        "34600123402",
        "0034 600-123-403",
        "(+34) 600.123.404",
    ]
    .iter()
    .enumerate()
    {
        let a = t.post("/v1/verifications", json!({ "to": to })).await;
        assert_eq!(a.status, 201, "{to}: {}", a.text);
        assert_eq!(a.body["to"], format!("+3460012340{}", i + 1), "{to}");
        assert_eq!(a.body["country"], "ES");
        assert_eq!(a.body["number_type"], "mobile");
    }
    let a = t
        .post("/v1/verifications", json!({ "to": "+44 7400 123456" }))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["country"], "GB");
}

#[tokio::test]
async fn unknown_purpose_locale_and_bad_subject() {
    let t = TestServer::start().await;
    let cases = [
        (
            json!({"to": "+34600123456", "purpose": "lottery"}),
            "unknown_purpose",
            "purpose",
        ),
        (
            json!({"to": "+34600123456", "locale": "fr"}),
            "unsupported_locale",
            "locale",
        ),
        (
            json!({"to": "+34600123456", "subject": "12345678A"}),
            "invalid_subject",
            "subject",
        ),
        (
            json!({"to": "+34600123456", "subject": ""}),
            "invalid_subject",
            "subject",
        ),
        (
            json!({"to": "+34600123456", "subject": "x".repeat(65)}),
            "invalid_subject",
            "subject",
        ),
    ];
    for (body, code, field) in cases {
        let a = t.post("/v1/verifications", body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {}", a.text);
        assert_eq!(a.error_code(), code, "{body}");
        assert_eq!(a.body["error"]["field"], field, "{body}");
    }
    assert_nothing_created(&t).await;
}

#[tokio::test]
async fn bodies_over_16_kib_are_413() {
    let t = TestServer::start().await;
    let big = json!({"to": "+34600123456", "subject": "x".repeat(17 * 1024)});
    let a = t.post("/v1/verifications", big).await;
    assert_eq!(a.status, 413, "{}", a.text);
    assert_eq!(a.error_code(), "body_too_large");
    // Also when the client streams it without announcing a length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b' '; 1024])).collect();
    let a = t
        .send(
            t.client
                .post(t.url("/v1/verifications"))
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(futures_stream(chunks))),
        )
        .await;
    assert_eq!(a.status, 413, "{}", a.text);
    assert_nothing_created(&t).await;
}

fn futures_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    tokio_stream::iter(chunks)
}

#[tokio::test]
async fn non_json_media_types_are_415() {
    let t = TestServer::start().await;
    let a = t
        .send(
            t.client
                .post(t.url("/v1/verifications"))
                .header("content-type", "text/plain")
                .body(r#"{"to": "+34600123456"}"#),
        )
        .await;
    assert_eq!(a.status, 415, "{}", a.text);
    assert_eq!(a.error_code(), "unsupported_media_type");
    let a = t
        .send(
            t.client
                .post(t.url("/v1/verifications"))
                .body(r#"{"to": "+34600123456"}"#),
        )
        .await;
    assert_eq!(a.status, 415, "{}", a.text);
    assert_nothing_created(&t).await;
}

#[tokio::test]
async fn bad_check_bodies_use_no_attempt() {
    let t = TestServer::start().await;
    let id = t.issue("+34600000020").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/verifications/{id}/check");
    let cases = [
        (json!({"code": 123456}), "invalid_field"),
        (json!({"code": "12ab56"}), "invalid_code"),
        (json!({"code": "123"}), "invalid_code"),
        (json!({"code": "12345678901"}), "invalid_code"),
        (json!({"code": " 123456"}), "invalid_code"),
        (json!({}), "missing_field"),
        (json!({"code": "123456", "pin": "1"}), "unknown_field"),
    ];
    for (body, code) in cases {
        let a = t.post(&path, body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {}", a.text);
        assert_eq!(a.error_code(), code, "{body}");
    }
    let v = t.get(&format!("/v1/verifications/{id}")).await;
    assert_eq!(v.body["attempts_left"], 5, "no attempt was used");
    assert_eq!(v.body["status"], "pending");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let t = TestServer::start().await;
    let a = t.get("/v2/nothing").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.error_code(), "not_found");
    let a = t.send(t.client.put(t.url("/v1/verifications"))).await;
    assert_eq!(a.status, 405, "{}", a.text);
    assert_eq!(a.error_code(), "method_not_allowed");
}
