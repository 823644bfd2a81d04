//! The subscriber registry over HTTP, and verifications requested by subject.

use otpd_e2e::TestServer;
use serde_json::json;

fn apns_token(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

#[tokio::test]
async fn put_get_replace_delete() {
    let t = TestServer::start().await;
    let body = json!({
        "phone": "+34 600 11 22 33",
        "locale": "gl",
        "devices": [{"platform": "apns", "token": apns_token(1), "app": "es.gob.clave"}]
    });
    let a = t
        .send(t.client.put(t.url("/v1/subscribers/12345678Z")).json(&body))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["subject"], "12345678Z");
    assert_eq!(a.body["phone"], "+34600112233");
    assert_eq!(a.body["locale"], "gl");
    assert_eq!(a.body["devices"][0]["platform"], "apns");

    let g = t.get("/v1/subscribers/12345678Z").await;
    assert_eq!(g.status, 200);
    assert_eq!(g.body["devices"].as_array().unwrap().len(), 1);

    let again = t
        .send(
            t.client
                .put(t.url("/v1/subscribers/12345678Z"))
                .json(&json!({"phone": "+34600112244"})),
        )
        .await;
    assert_eq!(again.status, 200, "replaced: {}", again.text);
    assert_eq!(again.body["devices"].as_array().unwrap().len(), 0);

    let d = t.delete("/v1/subscribers/12345678Z").await;
    assert_eq!(d.status, 204);
    assert_eq!(t.get("/v1/subscribers/12345678Z").await.status, 404);
    assert_eq!(t.delete("/v1/subscribers/12345678Z").await.status, 404);
}

#[tokio::test]
async fn a_number_belongs_to_one_subject() {
    let t = TestServer::start().await;
    let put = |subject: &'static str, phone: &'static str| {
        t.send(
            t.client
                .put(t.url(&format!("/v1/subscribers/{subject}")))
                .json(&json!({"phone": phone})),
        )
    };
    assert_eq!(put("12345678Z", "+34600000101").await.status, 201);
    let clash = put("X1234567L", "0034 600 000 101").await;
    assert_eq!(clash.status, 409, "{}", clash.text);
    assert_eq!(clash.error_code(), "phone_taken");
    assert_eq!(clash.body["error"]["field"], "phone");
    // Who has it is not said: that would look identity numbers up by phone.
    assert!(!clash.text.contains("12345678Z"), "{}", clash.text);
    assert_eq!(
        t.get("/v1/subscribers/X1234567L").await.status,
        404,
        "nothing written"
    );
    // Once the first subject moves to another number, the old one is free.
    assert_eq!(put("12345678Z", "+34600000102").await.status, 200);
    assert_eq!(put("X1234567L", "+34600000101").await.status, 201);
}

#[tokio::test]
async fn devices_are_added_and_removed() {
    let t = TestServer::start().await;
    t.send(
        t.client
            .put(t.url("/v1/subscribers/12345678Z"))
            .json(&json!({"phone": "+34600000103"})),
    )
    .await;
    let add = t
        .post(
            "/v1/subscribers/12345678Z/devices",
            json!({"platform": "fcm", "token": "fcm-token:abc_123", "app": "es.gob.clave"}),
        )
        .await;
    assert_eq!(add.status, 201, "{}", add.text);
    assert_eq!(add.body["devices"][0]["token"], "fcm-token:abc_123");
    let gone = t
        .delete("/v1/subscribers/12345678Z/devices/fcm/fcm-token:abc_123")
        .await;
    assert_eq!(gone.status, 204, "{}", gone.text);
    assert_eq!(
        t.delete("/v1/subscribers/12345678Z/devices/fcm/fcm-token:abc_123")
            .await
            .status,
        404
    );
    assert_eq!(
        t.get("/v1/subscribers/12345678Z").await.body["devices"],
        json!([])
    );
    let unknown = t
        .post(
            "/v1/subscribers/87654321X/devices",
            json!({"platform": "hms", "token": "t", "app": "a"}),
        )
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn bad_registrations_name_the_field() {
    let t = TestServer::start().await;
    let cases = [
        (
            json!({"phone": "912 345 678"}),
            "invalid_phone_number",
            "phone",
        ),
        (
            json!({"phone": "+34600000104", "locale": "fr"}),
            "unsupported_locale",
            "locale",
        ),
        (
            json!({"phone": "+34600000104", "devices": [{"platform": "blackberry", "token": "t", "app": "a"}]}),
            "invalid_device",
            "devices[0].platform",
        ),
        (
            json!({"phone": "+34600000104", "devices": [{"platform": "apns", "token": "short", "app": "a"}]}),
            "invalid_device",
            "devices[0].token",
        ),
        (
            json!({"phone": "+34600000104", "devices": [{"platform": "fcm", "token": "t", "app": "bad app"}]}),
            "invalid_device",
            "devices[0].app",
        ),
        (
            json!({"phone": "+34600000104", "email": "x"}),
            "unknown_field",
            "email",
        ),
    ];
    for (body, code, field) in cases {
        let a = t
            .send(t.client.put(t.url("/v1/subscribers/12345678Z")).json(&body))
            .await;
        assert_eq!(a.status, 400, "{body}: {}", a.text);
        assert_eq!(a.error_code(), code, "{body}");
        assert_eq!(a.body["error"]["field"], field, "{body}");
    }
    let bad_subject = t.get("/v1/subscribers/12345678A").await;
    assert_eq!(bad_subject.status, 400, "{}", bad_subject.text);
    assert_eq!(bad_subject.error_code(), "invalid_subject");
    assert_eq!(
        t.get("/v1/subscribers/12345678Z").await.status,
        404,
        "nothing written"
    );
}

#[tokio::test]
async fn a_verification_by_subject_uses_the_registered_number_and_language() {
    let t = TestServer::start().await;
    t.send(
        t.client
            .put(t.url("/v1/subscribers/12345678Z"))
            .json(&json!({"phone": "+34600000105", "locale": "eu"})),
    )
    .await;
    let a = t
        .post("/v1/verifications", json!({"subject": "12345678Z"}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["to"], "+34600000105");
    assert_eq!(a.body["locale"], "eu");
    assert_eq!(a.body["subject"], "12345678Z");
    let line = t.outbox_line(a.body["id"].as_str().unwrap(), 1).await;
    assert_eq!(line["to"], "+34600000105");
    assert!(
        line["text"]
            .as_str()
            .unwrap()
            .contains("da zure Cl@ve kodea")
    );

    let unknown = t
        .post("/v1/verifications", json!({"subject": "87654321X"}))
        .await;
    assert_eq!(unknown.status, 422, "{}", unknown.text);
    assert_eq!(unknown.error_code(), "unknown_subject");
    let neither = t.post("/v1/verifications", json!({"locale": "es"})).await;
    assert_eq!(neither.status, 400);
    assert_eq!(neither.body["error"]["field"], "to");
}
