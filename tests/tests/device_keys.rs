//! Device keys over HTTP: an app enrolls the public key its phone's keystore made,
//! with its device, on the memory store and on Redis. Keys are made by ring, as an
//! independent implementation of both algorithms.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use otpd_e2e::{Backend, TestServer};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};

/// RFC 5480 / RFC 8410 `SubjectPublicKeyInfo` prefixes of an uncompressed P-256
/// point and of an Ed25519 key.
const P256_SPKI_PREFIX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
const ED25519_SPKI_PREFIX: &str = "302a300506032b6570032100";

fn spki(prefix: &str, key: &[u8]) -> Vec<u8> {
    let mut out = hex_bytes(prefix);
    out.extend_from_slice(key);
    out
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn p256_spki() -> Vec<u8> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    spki(P256_SPKI_PREFIX, pair.public_key().as_ref())
}

fn ed25519_spki() -> Vec<u8> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    spki(ED25519_SPKI_PREFIX, pair.public_key().as_ref())
}

fn apns_token(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn devices(subscriber: &Value) -> &Vec<Value> {
    subscriber["devices"].as_array().unwrap()
}

async fn keys_are_kept_with_their_device_and_revoked_with_it(backend: Backend) {
    let t = TestServer::start_on(backend, |_| {}, None).await;
    let es256 = p256_spki();
    let ed25519 = ed25519_spki();
    let put = t
        .put(
            "/v1/subscribers/12345678Z",
            json!({
                "phone": "+34600000301",
                "devices": [{
                    "platform": "apns", "token": apns_token(1), "app": "es.gob.clave",
                    "key": {"algorithm": "ES256", "public_key": STANDARD.encode(&es256)}
                }]
            }),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text);
    // A second device, its key in URL-safe base64 without padding, as apps send it.
    let add = t
        .post(
            "/v1/subscribers/12345678Z/devices",
            json!({
                "platform": "fcm", "token": "fcm-token-1", "app": "es.gob.clave",
                "key": {"algorithm": "Ed25519", "public_key": URL_SAFE_NO_PAD.encode(&ed25519)}
            }),
        )
        .await;
    assert!(add.status < 300, "{}", add.text);

    let got = t.get("/v1/subscribers/12345678Z").await;
    assert_eq!(got.status, 200);
    let d = devices(&got.body);
    assert_eq!(d.len(), 2, "{}", got.text);
    assert_eq!(d[0]["key"]["algorithm"], "ES256");
    assert_eq!(d[0]["key"]["public_key"], STANDARD.encode(&es256));
    assert_eq!(d[0]["key"]["thumbprint"].as_str().unwrap().len(), 22);
    assert_eq!(d[1]["key"]["algorithm"], "Ed25519");
    assert_eq!(d[1]["key"]["public_key"], STANDARD.encode(&ed25519));

    // The same token registered again without a key: the old key is revoked.
    let again = t
        .post(
            "/v1/subscribers/12345678Z/devices",
            json!({"platform": "apns", "token": apns_token(1), "app": "es.gob.clave"}),
        )
        .await;
    assert!(again.status < 300, "{}", again.text);
    let got = t.get("/v1/subscribers/12345678Z").await;
    let apns = devices(&got.body)
        .iter()
        .find(|d| d["platform"] == "apns")
        .unwrap();
    assert!(apns.get("key").is_none(), "revoked: {apns}");

    // Removing the device removes its key.
    let gone = t
        .delete("/v1/subscribers/12345678Z/devices/fcm/fcm-token-1")
        .await;
    assert!(gone.status < 300, "{}", gone.text);
    let got = t.get("/v1/subscribers/12345678Z").await;
    assert!(
        devices(&got.body).iter().all(|d| d.get("key").is_none()),
        "{}",
        got.text
    );
}

async fn bad_keys_are_refused_naming_the_field_and_store_nothing(backend: Backend) {
    let t = TestServer::start_on(backend, |_| {}, None).await;
    let es256 = STANDARD.encode(p256_spki());
    let ed25519 = STANDARD.encode(ed25519_spki());
    let cases = [
        (
            json!({"algorithm": "RS256", "public_key": es256}),
            "devices[0].key.algorithm",
        ),
        (
            json!({"algorithm": "ES256", "public_key": "not base64!"}),
            "devices[0].key.public_key",
        ),
        // An Ed25519 key sent as ES256, and a P-256 key sent as Ed25519.
        (
            json!({"algorithm": "ES256", "public_key": ed25519}),
            "devices[0].key.public_key",
        ),
        (
            json!({"algorithm": "Ed25519", "public_key": es256}),
            "devices[0].key.public_key",
        ),
        (
            json!({"algorithm": "ES256", "public_key": STANDARD.encode([0u8; 400])}),
            "devices[0].key.public_key",
        ),
    ];
    for (key, field) in cases {
        let a = t
            .put(
                "/v1/subscribers/12345678Z",
                json!({
                    "phone": "+34600000302",
                    "devices": [{"platform": "apns", "token": apns_token(2), "app": "es.gob.clave", "key": key}]
                }),
            )
            .await;
        assert_eq!(a.status, 400, "{key}: {}", a.text);
        assert_eq!(a.error_code(), "invalid_device_key", "{key}");
        assert_eq!(a.body["error"]["field"], field, "{key}");
        assert!(
            !a.text.contains(&es256) && !a.text.contains(&ed25519),
            "no echo: {}",
            a.text
        );
    }
    // A key object with a field it does not know.
    let a = t
        .put(
            "/v1/subscribers/12345678Z",
            json!({
                "phone": "+34600000302",
                "devices": [{"platform": "apns", "token": apns_token(2), "app": "es.gob.clave",
                    "key": {"algorithm": "ES256", "public_key": es256, "private_key": "x"}}]
            }),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(t.get("/v1/subscribers/12345678Z").await.status, 404);
}

otpd_e2e::on_both!(
    keys_are_kept_with_their_device_and_revoked_with_it,
    bad_keys_are_refused_naming_the_field_and_store_nothing,
);
