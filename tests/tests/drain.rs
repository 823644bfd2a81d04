//! SIGTERM with sends in flight: otpd stops accepting, lets the SMPP window it has
//! written finish (every submit answered and recorded), unbinds, and exits within its
//! grace. Nothing is lost: what it had not taken yet stays queued in Redis and the
//! next node sends it; nothing goes out twice, nothing is left `interrupted`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use otpd_e2e::process::{OtpdProcess, with_carrier};
use otpd_e2e::redis::RedisServer;
use otpd_simulators::smsc::{Account, Smsc, SmscConfig};
use serde_json::{Value, json};

fn config(redis: &RedisServer, smsc: &Smsc) -> String {
    let sections = format!(
        "[server]\nshutdown_grace = \"20s\"\n\n[store]\nkind = \"redis\"\n\n[redis]\nurls = [\"{}\"]\nclaim_after = \"1s\"",
        redis.url()
    );
    with_carrier(smsc.addr().port(), &sections, "binds = 2\nwindow = 4")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_sends_in_flight_finishes_them_unbinds_and_loses_nothing() {
    let redis = RedisServer::start();
    let smsc = Smsc::start(SmscConfig {
        accounts: vec![Account {
            system_id: "otpd".into(),
            password: "secret".into(),
        }],
        // Slow answers: when SIGTERM comes, both binds have their windows full.
        latency: (Duration::from_millis(400), Duration::from_millis(600)),
        ..SmscConfig::default()
    })
    .await
    .unwrap();
    let config = config(&redis, &smsc);
    let mut a = OtpdProcess::start(&config).await;
    a.wait_channels().await;
    let client = otpd_e2e::client();
    let total = 60usize;
    let mut ids = HashMap::new();
    for n in 0..total {
        let to = format!("+3460080{n:04}");
        let r = client
            .post(format!("{}/v1/verifications", a.base))
            .json(&json!({"to": to}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        ids.insert(
            to[1..].to_string(),
            body["id"].as_str().unwrap().to_string(),
        );
    }
    // Submits written and not yet answered: the windows are busy.
    let deadline = Instant::now() + Duration::from_secs(20);
    while smsc.stats().submits.load(Ordering::Relaxed) < 6 {
        assert!(Instant::now() < deadline, "deliveries never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    a.terminate();
    let status = a.exited(Duration::from_secs(25)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}; log:\n{}",
        a.log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "within the grace"
    );
    assert!(
        smsc.stats().unbinds.load(Ordering::Relaxed) >= 2,
        "every bind unbound"
    );

    // The next node sends what A had not taken; every send ends answered.
    let b = OtpdProcess::start(&config).await;
    b.wait_channels().await;
    let records = b
        .records_once_none_queued(&ids, Duration::from_secs(30))
        .await;
    let mut at_smsc: HashMap<String, usize> = HashMap::new();
    for m in smsc.received() {
        *at_smsc.entry(m.destination.addr.clone()).or_default() += 1;
    }
    for (number, v) in &records {
        assert_eq!(
            at_smsc.get(number).copied(),
            Some(1),
            "{number} reached the SMSC once: {v}"
        );
        let state = v["delivery"]["state"].as_str().unwrap();
        assert!(
            state == "sent" || state == "delivered",
            "{number}: {v}\nA's log:\n{}",
            a.log()
        );
    }
}
