//! The push adapters against the push mock over loopback (TLS with the mock's
//! self-signed certificate, as the real providers are TLS): requests as the providers
//! want them, every class of answer, and credential renewal.

use std::sync::Arc;
use std::time::Duration;

use otpd_adapters::apns::{ApnsConfig, ApnsPusher};
use otpd_adapters::fcm::{FcmConfig, FcmPusher, ServiceAccount};
use otpd_adapters::hms::{HmsConfig, HmsPusher};
use otpd_adapters::push::http::HttpOptions;
use otpd_adapters::push::{Notification, Outcome, Pusher};
use otpd_simulators::push::{
    ApnsKey, Behaviour, FcmAccount, HmsClient, MockConfig, Provider, PushMock,
};

const APNS_KEY: &[u8] = include_bytes!("fixtures/apns-test-key.p8");
const APNS_PUB: &[u8] = include_bytes!("fixtures/apns-test-key.pub");
const FCM_KEY: &str = include_str!("fixtures/fcm-test-account.pem");
const FCM_PUB: &[u8] = include_bytes!("fixtures/fcm-test-account.pub");
const APNS_TOKEN: &str = "5a0f3c9e1b7d4a2e8c6f0b1d3e5a7c9e2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a";
const FCM_TOKEN: &str = "fGx1Y2s6APA91bH_device-token-for-tests_0123456789";
const HMS_TOKEN: &str = "IQAAAACy0kYkAAB-hms-device-token-for-tests";

async fn mock(tls: bool) -> PushMock {
    PushMock::start(MockConfig {
        tls,
        ..mock_config()
    })
    .await
    .unwrap()
}

fn mock_config() -> MockConfig {
    MockConfig {
        apns_keys: vec![ApnsKey {
            key_id: "ABC123DEFG".into(),
            team_id: "TEAM123456".into(),
            public_pem: APNS_PUB.to_vec(),
        }],
        apns_topics: vec!["es.gob.clave".into()],
        fcm_accounts: vec![FcmAccount {
            client_email: "otpd@clave-test.iam.gserviceaccount.com".into(),
            public_pem: FCM_PUB.to_vec(),
        }],
        hms_clients: vec![HmsClient {
            client_id: "104523".into(),
            client_secret: "hms-secret".into(),
        }],
        ..MockConfig::default()
    }
}

fn http(mock: &PushMock) -> HttpOptions {
    HttpOptions {
        ca_pem: mock.ca_pem().map(|p| p.as_bytes().to_vec()),
        connections: 1,
        max_streams: 100,
        timeout: Duration::from_secs(5),
    }
}

fn apns(mock: &PushMock) -> ApnsPusher {
    ApnsPusher::new(ApnsConfig {
        base_url: mock.url(),
        key_pem: APNS_KEY.to_vec(),
        key_id: "ABC123DEFG".into(),
        team_id: "TEAM123456".into(),
        default_topic: Some("es.gob.clave".into()),
        http: http(mock),
    })
    .unwrap()
}

fn account(mock: &PushMock) -> ServiceAccount {
    ServiceAccount::from_json(
        serde_json::json!({
            "type": "service_account",
            "project_id": "clave-test",
            "private_key_id": "k1",
            "private_key": FCM_KEY,
            "client_email": "otpd@clave-test.iam.gserviceaccount.com",
            "token_uri": format!("{}/token", mock.url()),
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

fn fcm(mock: &PushMock) -> FcmPusher {
    FcmPusher::new(FcmConfig {
        base_url: mock.url(),
        account: account(mock),
        project_id: None,
        http: http(mock),
    })
    .unwrap()
}

fn hms(mock: &PushMock, secret: &str) -> HmsPusher {
    HmsPusher::new(HmsConfig {
        base_url: mock.url(),
        token_url: format!("{}/oauth2/v3/token", mock.url()),
        app_id: "104523".into(),
        client_id: "104523".into(),
        client_secret: secret.to_string().into(),
        http: http(mock),
    })
    .unwrap()
}

fn note(token: &str) -> Notification<'_> {
    Notification {
        token,
        title: "Cl@ve",
        body: "Tu código Cl@ve es 042317",
        verification_id: "vf_0123456789abcdef0123456789abcdef",
        expires_at: 4_102_444_800,
        ttl_secs: 600,
        match_code: Some("427"),
        approval: None,
        ack_token: None,
    }
}

fn accepted(o: &Outcome) -> bool {
    matches!(o, Outcome::Accepted { id: Some(_) })
}

#[tokio::test]
async fn apns_sends_a_signed_http2_request_with_every_header() {
    let mock = mock(true).await;
    let apns = apns(&mock);
    let outcome = apns.push(&note(APNS_TOKEN), "").await;
    assert!(accepted(&outcome), "{outcome:?}");

    let seen = mock.requests(Some(Provider::Apns));
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.path, format!("/3/device/{APNS_TOKEN}"));
    let h = |name: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(h("apns-topic"), Some("es.gob.clave"));
    assert_eq!(h("apns-push-type"), Some("alert"));
    assert_eq!(h("apns-priority"), Some("10"));
    assert_eq!(h("apns-expiration"), Some("4102444800"));
    assert_eq!(
        h("apns-collapse-id"),
        Some("vf_0123456789abcdef0123456789abcdef")
    );
    assert!(h("authorization").unwrap().starts_with("bearer ey"));
    assert_eq!(r.body["aps"]["alert"]["body"], "Tu código Cl@ve es 042317");
    assert_eq!(r.body["otpd"]["match_code"], "427");
}

#[tokio::test]
async fn apns_answers_are_classified() {
    let mock = mock(true).await;
    let apns = apns(&mock);

    mock.unregister(Provider::Apns, APNS_TOKEN);
    assert!(matches!(
        apns.push(&note(APNS_TOKEN), "").await,
        Outcome::RemoveDevice { reason } if reason == "Unregistered"
    ));
    assert!(matches!(
        apns.push(&note("not-a-hex-token"), "").await,
        Outcome::RemoveDevice { reason } if reason == "BadDeviceToken"
    ));
    let other = "a".repeat(64);
    assert!(matches!(
        apns.push(&note(&other), "com.example.other").await,
        Outcome::Fail { reason } if reason == "TopicDisallowed"
    ));

    mock.set_behaviour(Behaviour {
        throttle: 1.0,
        ..Behaviour::default()
    });
    assert!(matches!(
        apns.push(&note(&other), "").await,
        Outcome::Retry { reason, .. } if reason == "TooManyRequests"
    ));
    mock.set_behaviour(Behaviour {
        server_error: 1.0,
        ..Behaviour::default()
    });
    assert!(matches!(
        apns.push(&note(&other), "").await,
        Outcome::Retry { reason, .. } if reason == "InternalServerError"
    ));

    let huge = "x".repeat(5000);
    let mut big = note(&other);
    big.body = &huge;
    mock.set_behaviour(Behaviour::default());
    let before = mock.requests(None).len();
    assert!(matches!(apns.push(&big, "").await, Outcome::Fail { .. }));
    assert_eq!(mock.requests(None).len(), before, "refused before sending");
}

#[tokio::test]
async fn an_expired_provider_token_is_renewed_once_and_the_push_goes_through() {
    let mock = mock(true).await;
    let issued_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 30 * 60;
    let clock = Arc::new(std::sync::atomic::AtomicI64::new(issued_at));
    let c = clock.clone();
    let apns = apns(&mock).with_clock(Arc::new(move || {
        c.load(std::sync::atomic::Ordering::SeqCst)
    }));
    assert!(accepted(&apns.push(&note(APNS_TOKEN), "").await));

    mock.expire_credentials();
    clock.store(issued_at + 30 * 60, std::sync::atomic::Ordering::SeqCst);
    let outcome = apns.push(&note(APNS_TOKEN), "").await;
    assert!(accepted(&outcome), "{outcome:?}");
    let seen = mock.requests(Some(Provider::Apns));
    let reasons: Vec<_> = seen.iter().map(|r| r.reason.clone()).collect();
    assert_eq!(
        reasons,
        [None, Some("ExpiredProviderToken".to_string()), None]
    );
}

#[tokio::test]
async fn a_token_signed_by_an_unknown_key_is_refused() {
    let mock = mock(true).await;
    let apns = ApnsPusher::new(ApnsConfig {
        key_id: "ZZZ999ZZZZ".into(),
        ..ApnsConfig {
            base_url: mock.url(),
            key_pem: APNS_KEY.to_vec(),
            key_id: String::new(),
            team_id: "TEAM123456".into(),
            default_topic: Some("es.gob.clave".into()),
            http: http(&mock),
        }
    })
    .unwrap();
    // A fresh token may not be renewed (APNs limits renewals), so the refusal stands.
    assert!(matches!(
        apns.push(&note(APNS_TOKEN), "").await,
        Outcome::RenewToken { reason } if reason == "InvalidProviderToken"
    ));
}

#[tokio::test]
async fn fcm_gets_an_access_token_and_sends_v1_messages() {
    let mock = mock(true).await;
    let fcm = fcm(&mock);
    for _ in 0..3 {
        let outcome = fcm.push(&note(FCM_TOKEN), "es.gob.clave.app").await;
        assert!(accepted(&outcome), "{outcome:?}");
    }
    assert_eq!(
        mock.counts(Provider::Fcm).tokens_issued,
        1,
        "the token is cached"
    );
    let r = &mock.requests(Some(Provider::Fcm))[0];
    assert_eq!(r.path, "/v1/projects/clave-test/messages:send");
    let m = &r.body["message"];
    assert_eq!(m["token"], FCM_TOKEN);
    assert_eq!(m["android"]["priority"], "HIGH");
    assert_eq!(m["android"]["ttl"], "600s");
    assert_eq!(m["android"]["restricted_package_name"], "es.gob.clave.app");
    assert_eq!(m["data"]["match_code"], "427");
}

#[tokio::test]
async fn fcm_answers_are_classified_and_expired_tokens_renewed() {
    let mock = mock(true).await;
    let fcm = fcm(&mock);
    mock.unregister(Provider::Fcm, FCM_TOKEN);
    assert!(matches!(
        fcm.push(&note(FCM_TOKEN), "").await,
        Outcome::RemoveDevice { reason } if reason == "UNREGISTERED"
    ));
    assert!(matches!(
        fcm.push(&note("short"), "").await,
        Outcome::RemoveDevice { reason } if reason == "INVALID_ARGUMENT"
    ));

    let other = "cOther_device-token_0123456789";
    mock.set_behaviour(Behaviour {
        throttle: 1.0,
        retry_after_secs: Some(7),
        ..Behaviour::default()
    });
    assert_eq!(
        fcm.push(&note(other), "").await,
        Outcome::Retry {
            reason: "QUOTA_EXCEEDED".into(),
            after: Some(Duration::from_secs(7))
        }
    );
    mock.set_behaviour(Behaviour::default());

    mock.expire_credentials();
    let outcome = fcm.push(&note(other), "").await;
    assert!(accepted(&outcome), "{outcome:?}");
    assert_eq!(mock.counts(Provider::Fcm).tokens_issued, 2);
}

#[tokio::test]
async fn fcm_with_a_key_the_token_endpoint_does_not_know_fails_for_good() {
    let mock = PushMock::start(MockConfig::default()).await.unwrap();
    let fcm = fcm(&mock);
    let outcome = fcm.push(&note(FCM_TOKEN), "").await;
    assert!(
        matches!(&outcome, Outcome::Fail { reason } if reason.contains("invalid_grant")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn hms_sends_with_client_credentials_and_maps_result_codes() {
    let mock = mock(true).await;
    let hms = hms(&mock, "hms-secret");
    let outcome = hms.push(&note(HMS_TOKEN), "").await;
    assert!(accepted(&outcome), "{outcome:?}");
    let r = &mock.requests(Some(Provider::Hms))[0];
    assert_eq!(r.path, "/v1/104523/messages:send");
    assert_eq!(r.body["message"]["token"][0], HMS_TOKEN);
    assert_eq!(r.body["message"]["android"]["urgency"], "HIGH");

    mock.unregister(Provider::Hms, HMS_TOKEN);
    assert!(matches!(
        hms.push(&note(HMS_TOKEN), "").await,
        Outcome::RemoveDevice { reason } if reason.starts_with("80300007")
    ));

    let other = "IQAAAACy-another-device";
    mock.set_behaviour(Behaviour {
        throttle: 1.0,
        ..Behaviour::default()
    });
    assert!(matches!(
        hms.push(&note(other), "").await,
        Outcome::Retry { .. }
    ));
    mock.set_behaviour(Behaviour::default());

    mock.expire_credentials();
    assert!(accepted(&hms.push(&note(other), "").await));
    assert_eq!(mock.counts(Provider::Hms).tokens_issued, 2);

    let wrong = self::hms(&mock, "not-the-secret");
    assert!(matches!(
        wrong.push(&note(other), "").await,
        Outcome::Fail { reason } if reason.contains("invalid client_secret")
    ));
}

#[tokio::test]
async fn h2c_without_tls_works_too() {
    let mock = mock(false).await;
    assert!(mock.url().starts_with("http://"));
    assert!(accepted(&apns(&mock).push(&note(APNS_TOKEN), "").await));
    assert!(accepted(&fcm(&mock).push(&note(FCM_TOKEN), "").await));
}

#[tokio::test]
async fn many_concurrent_pushes_share_one_connection_pool() {
    let mock = mock(true).await;
    let apns = Arc::new(apns(&mock));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let apns = apns.clone();
        tasks.spawn(async move {
            let token = format!("{i:064x}");
            apns.push(&note(&token), "").await
        });
    }
    let mut ok = 0;
    while let Some(o) = tasks.join_next().await {
        ok += accepted(&o.unwrap()) as usize;
    }
    assert_eq!(ok, 300);
    assert_eq!(mock.counts(Provider::Apns).accepted, 300);
}

#[tokio::test]
async fn an_unreachable_provider_is_a_retry() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    drop(listener);
    let mock = mock(true).await;
    let apns = ApnsPusher::new(ApnsConfig {
        base_url: url,
        key_pem: APNS_KEY.to_vec(),
        key_id: "ABC123DEFG".into(),
        team_id: "TEAM123456".into(),
        default_topic: Some("es.gob.clave".into()),
        http: http(&mock),
    })
    .unwrap();
    assert!(matches!(
        apns.push(&note(APNS_TOKEN), "").await,
        Outcome::Retry { reason, .. } if reason.starts_with("APNs unreachable")
    ));
}

#[tokio::test]
async fn a_tap_sees_accepted_pushes_only() {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let tap = {
        let seen = seen.clone();
        otpd_simulators::push::PushTap(Arc::new(move |provider, body: &[u8]| {
            seen.lock().push((provider, body.to_vec()))
        }))
    };
    let mock = PushMock::start(MockConfig {
        tap: Some(tap),
        ..mock_config()
    })
    .await
    .unwrap();
    let apns = apns(&mock);
    assert!(accepted(&apns.push(&note(APNS_TOKEN), "").await));
    mock.unregister(Provider::Apns, APNS_TOKEN);
    let gone = apns.push(&note(APNS_TOKEN), "").await;
    assert!(matches!(gone, Outcome::RemoveDevice { .. }), "{gone:?}");
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 1, "the refused push is not tapped");
    assert_eq!(seen[0].0, Provider::Apns);
    let body: serde_json::Value = serde_json::from_slice(&seen[0].1).unwrap();
    assert_eq!(body["aps"]["alert"]["body"], "Tu código Cl@ve es 042317");
}
