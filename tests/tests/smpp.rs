//! otpd with an SMPP carrier, end to end: HTTP request → submit_sm to the SMSC
//! simulator → deliver_sm receipt → the verification's delivery state.

use std::time::Duration;

use otpd::config::SmppCarrierConfig;
use otpd_adapters::smpp::receipt::MessageState;
use otpd_e2e::{TestServer, code_in};
use otpd_simulators::smsc::{Account, Fault, IdFormat, ReceiptPolicy, Smsc, SmscConfig};
use serde_json::json;

async fn smsc(receipts: ReceiptPolicy) -> Smsc {
    Smsc::start(SmscConfig {
        accounts: vec![Account {
            system_id: "otpd".into(),
            password: "secret".into(),
        }],
        message_ids: IdFormat::Hex,
        receipts,
        ..SmscConfig::default()
    })
    .await
    .unwrap()
}

async fn otpd_with_carrier(smsc: &Smsc) -> TestServer {
    otpd_with_carrier_and(smsc, |_| {}).await
}

async fn otpd_with_carrier_and(
    smsc: &Smsc,
    tweak: impl FnOnce(&mut otpd::config::Config),
) -> TestServer {
    let port = smsc.addr().port();
    TestServer::start_with(
        move |c| {
            c.channels.smpp.insert(
                "movistar".into(),
                SmppCarrierConfig {
                    port,
                    system_id: "otpd".into(),
                    password: "secret".into(),
                    binds: 2,
                    source_addr: "Clave".into(),
                    reconnect_min: Duration::from_millis(10),
                    reconnect_max: Duration::from_millis(100),
                    ..SmppCarrierConfig::default()
                },
            );
            c.delivery.sms = "smpp.movistar".into();
            tweak(c);
        },
        None,
    )
    .await
}

/// Wait (bounded) until the latest send of `id` reaches `state`.
async fn delivery_reaches(t: &TestServer, id: &str, state: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = t.get(&format!("/v1/verifications/{id}")).await.body;
        if v["delivery"]["state"] == state {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery never reached {state}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_code_goes_out_by_smpp_and_its_receipt_marks_it_delivered() {
    let smsc = smsc(ReceiptPolicy {
        id_format: IdFormat::Decimal,
        ..ReceiptPolicy::default()
    })
    .await;
    let t = otpd_with_carrier(&smsc).await;
    let a = t
        .post(
            "/v1/verifications",
            json!({"to": "+34 600 12 34 56", "locale": "en"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let id = a.body["id"].as_str().unwrap().to_string();

    let v = delivery_reaches(&t, &id, "delivered").await;
    let mut kinds: Vec<_> = told(&t, &id)
        .await
        .iter()
        .map(|e| e.kind.as_str())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["verification.delivered", "verification.sent"]);
    let attempt = &v["delivery"]["attempts"][0];
    assert!(
        attempt["reference"]
            .as_str()
            .unwrap()
            .starts_with("movistar:")
    );
    assert!(attempt["reported_at"].is_string());
    assert!(
        attempt.get("error").is_none(),
        "a delivered send has no error: {attempt}"
    );

    // The SMSC got the code: reading it there, the person can approve.
    let received = smsc.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].destination.addr, "34600123456");
    assert_eq!(
        (received[0].destination.ton, received[0].destination.npi),
        (1, 1)
    );
    assert_eq!(
        (received[0].source.addr.as_str(), received[0].source.ton),
        ("Clave", 5)
    );
    assert_eq!(received[0].registered_delivery, 1);
    let code = code_in(&String::from_utf8(received[0].body.clone()).unwrap());
    let check = t.check(&id, &code).await;
    assert_eq!(check.body["status"], "approved", "{}", check.text);

    let metrics = t.get("/metrics").await.text;
    assert!(
        metrics.contains("otpd_delivery_reports_total{state=\"delivered\"}"),
        "{metrics}"
    );
    t.stop().await;
}

#[tokio::test]
async fn an_undeliverable_receipt_is_recorded_with_its_error() {
    let smsc = smsc(ReceiptPolicy {
        outcomes: vec![(MessageState::Undeliverable, 1)],
        ..ReceiptPolicy::default()
    })
    .await;
    let t = otpd_with_carrier(&smsc).await;
    let id = t.issue("+34600000070").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = delivery_reaches(&t, &id, "undeliverable").await;
    assert_eq!(v["delivery"]["attempts"][0]["error"], "3:34");
    // Told: sent by the carrier, then undeliverable, why in a word.
    let told = told(&t, &id).await;
    assert_eq!(told.len(), 2, "{told:?}");
    let undeliverable = told
        .iter()
        .find(|e| e.kind == otpd::events::EventKind::Undeliverable)
        .expect("told undeliverable");
    assert_eq!(undeliverable.data.reason, Some("undeliverable"));
    assert_eq!(undeliverable.data.carrier.as_deref(), Some("movistar"));
    assert_eq!(undeliverable.data.to.as_deref(), Some("+34*******70"));
    t.stop().await;
}

/// The events told about verification `id` once its story has settled.
async fn told(t: &TestServer, id: &str) -> Vec<otpd::events::Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let told = t.told(id);
        if told.len() >= 2 || tokio::time::Instant::now() > deadline {
            return told;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_refused_destination_fails_the_send_with_the_status_name() {
    let smsc = smsc(ReceiptPolicy::default()).await;
    let t = otpd_with_carrier(&smsc).await;
    smsc.inject([Fault::Status(0x0B)]);
    let id = t.issue("+34600000071").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = delivery_reaches(&t, &id, "failed").await;
    let error = v["delivery"]["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("ESME_RINVDSTADR"), "{error}");
    t.stop().await;
}

#[tokio::test]
async fn long_spanish_goes_as_ucs2_in_two_parts_and_is_delivered_once() {
    let smsc = smsc(ReceiptPolicy::default()).await;
    let t = otpd_with_carrier_and(&smsc, |c| {
        c.messages.templates = vec![otpd::config::TemplateConfig {
            purpose: "*".into(),
            locale: "es".into(),
            text: "{code} es tu código de verificación de {app}. Caduca en {ttl_minutes} minutos. No lo compartas.".into(),
            android_app_hash: None,
            domain: None,
        }];
    })
    .await;
    let id = t.issue("+34600000072").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    delivery_reaches(&t, &id, "delivered").await;
    let parts = smsc.received();
    assert_eq!(parts.len(), 2);
    assert!(
        parts
            .iter()
            .all(|p| p.data_coding == 0x08 && p.esm_class == 0x40)
    );
    // Reassemble the UCS-2 text after each 6-octet UDH.
    let units: Vec<u16> = parts
        .iter()
        .flat_map(|p| {
            p.body[6..]
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect::<Vec<_>>()
        })
        .collect();
    let text = String::from_utf16(&units).unwrap();
    assert!(text.contains("código de verificación"), "{text}");
    t.stop().await;
}

#[tokio::test]
async fn health_shows_the_carrier_and_its_outage() {
    let smsc = smsc(ReceiptPolicy::default()).await;
    let t = otpd_with_carrier(&smsc).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let h = t.get("/healthz").await;
        if h.body["channels"]["movistar"] == "ok" {
            assert_eq!(h.status, 200);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "carrier never healthy: {}",
            h.text
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The SMSC goes away: the carrier is reported down, the node stays ready.
    smsc.stop();
    drop(smsc);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let h = t.get("/healthz").await;
        if h.body["channels"]["movistar"] == "unavailable" {
            assert_eq!(h.status, 200, "{}", h.text);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outage never shown: {}",
            h.text
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.stop().await;
}
