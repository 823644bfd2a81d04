//! otpd against an independent SMSC with real carriers' habits (the npm `smpp`
//! package's server, `tests/interop/carrier-smsc.js`): ids answered in zero-padded
//! hexadecimal and receipted in decimal, receipts that overtake their answers,
//! throttled submits, a session cut with a window in flight, undeliverable messages.
//! Every accepted verification ends `delivered` or `undeliverable`; none stays
//! `sent`.

use std::time::Duration;

use otpd::config::SmppCarrierConfig;
use otpd_e2e::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verification_ends_delivered_or_undeliverable_with_a_carrier_of_real_habits() {
    let node = otpd_e2e::interop::NodeSmsc::start("carrier-smsc.js", &["40"]);
    let port = node.port;
    let t = TestServer::start_with(
        move |c| {
            c.channels.smpp.insert(
                "habits".into(),
                SmppCarrierConfig {
                    port,
                    system_id: "otpd".into(),
                    password: "secret".into(),
                    binds: 2,
                    window: 8,
                    source_addr: "Clave".into(),
                    reconnect_min: Duration::from_millis(10),
                    reconnect_max: Duration::from_millis(100),
                    response_timeout: Duration::from_secs(2),
                    ..SmppCarrierConfig::default()
                },
            );
            c.delivery.sms = "smpp.habits".into();
            c.delivery.max_attempts = 6;
            c.delivery.retry_backoff = Duration::from_millis(50);
        },
        None,
    )
    .await;
    let total = 90;
    let mut ids = Vec::new();
    for n in 0..total {
        let r = t
            .post(
                "/v1/verifications",
                json!({"to": format!("+3460090{n:04}")}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let (mut delivered, mut undeliverable) = (0, 0);
    for id in &ids {
        loop {
            let v = t.get(&format!("/v1/verifications/{id}")).await.body;
            match v["delivery"]["state"].as_str() {
                Some("delivered") => {
                    delivered += 1;
                    break;
                }
                Some("undeliverable") => {
                    undeliverable += 1;
                    break;
                }
                _ => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} never reached a final state: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("delivered {delivered}, undeliverable {undeliverable}");
    assert_eq!(delivered + undeliverable, total);
    assert!(undeliverable > 0, "some are reported undeliverable");
    let metrics = t.get("/metrics").await.text;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("otpd_smpp_receipts_unmatched_total") && !l.ends_with(" 0")),
        "no receipt left unmatched:\n{metrics}"
    );
    t.stop().await;
}
