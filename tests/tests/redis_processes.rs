//! Two otpd processes on one Redis, sending over SMPP to the SMSC simulator; one is
//! killed with SIGKILL in the middle of delivering. What the SMSC received is the
//! truth: no number gets its code twice, every job the dead node had read but not
//! sent is delivered by the other node, once, and receipts the SMSC sends to the
//! surviving node for messages the dead one submitted still reach their
//! verifications.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use otpd_e2e::process::{OtpdProcess, with_carrier};
use otpd_e2e::redis::RedisServer;
use otpd_simulators::smsc::{Account, ReceiptPolicy, Smsc, SmscConfig};
use serde_json::{Value, json};

fn config(redis: &RedisServer, smsc: &Smsc) -> String {
    let sections = format!(
        "[store]\nkind = \"redis\"\n\n[redis]\nurls = [\"{}\"]\nclaim_after = \"1s\"",
        redis.url()
    );
    with_carrier(smsc.addr().port(), &sections, "binds = 1\nwindow = 4")
}

/// Jobs waiting in the group under a consumer whose name carries `pid` (node names
/// are host-pid-random).
fn pending_of(redis: &RedisServer, pid: u32) -> usize {
    let marker = format!("-{pid}-");
    (0..64)
        .map(|p| {
            let out = redis.cli(&["XINFO", "CONSUMERS", &format!("otpd:{{{p}}}:q"), "otpd"]);
            let lines: Vec<&str> = out.lines().map(str::trim).collect();
            // Field/value lines: name, <name>, pending, <n>, …
            lines
                .windows(4)
                .filter(|w| w[0] == "name" && w[1].contains(&marker) && w[2] == "pending")
                .filter_map(|w| w[3].parse::<usize>().ok())
                .sum::<usize>()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_delivery_loses_nothing_and_sends_nothing_twice() {
    let redis = RedisServer::start();
    let smsc = Smsc::start(SmscConfig {
        accounts: vec![Account {
            system_id: "otpd".into(),
            password: "secret".into(),
        }],
        // Slow enough that a node always has submits in flight.
        latency: (Duration::from_millis(60), Duration::from_millis(120)),
        receipts: ReceiptPolicy {
            delay: Duration::from_millis(30),
            ..ReceiptPolicy::default()
        },
        ..SmscConfig::default()
    })
    .await
    .unwrap();
    let config = config(&redis, &smsc);
    // B binds first: the SMSC sends every receipt to it, also those of A's messages.
    let b = OtpdProcess::start(&config).await;
    b.wait_channels().await;
    let mut a = OtpdProcess::start(&config).await;
    a.wait_channels().await;
    let client = otpd_e2e::client();

    let total = 80usize;
    let mut ids = HashMap::new();
    for n in 0..total {
        let to = format!("+3460070{n:04}");
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

    // Kill A once deliveries are under way, holding jobs it has read.
    let deadline = Instant::now() + Duration::from_secs(20);
    while smsc.received().len() < 24 {
        assert!(Instant::now() < deadline, "deliveries never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let a_pid = a.pid;
    a.kill9();
    let orphaned = pending_of(&redis, a_pid);
    assert!(
        orphaned > 0,
        "A died holding jobs (else the test proves nothing)"
    );

    // B claims A's jobs after redis.claim_after and delivers them; receipts follow.
    b.records_once_none_queued(&ids, Duration::from_secs(30))
        .await;
    // Receipts follow: a receipt that overtook its message's submit response is
    // looked up again a little later (up to 5 s).
    let deadline = Instant::now() + Duration::from_secs(8);
    let records = loop {
        let records = b.records(&ids).await;
        let sent = records
            .values()
            .filter(|v| v["delivery"]["state"] == "sent")
            .count();
        if sent == 0 || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(pending_of(&redis, a_pid), 0, "A's jobs were all claimed");

    let mut at_smsc: HashMap<String, usize> = HashMap::new();
    for m in smsc.received() {
        *at_smsc.entry(m.destination.addr.clone()).or_default() += 1;
    }
    let mut interrupted = 0;
    let mut without_receipt = 0;
    for (number, v) in &records {
        let received = at_smsc.get(number).copied().unwrap_or(0);
        assert!(received <= 1, "{number} got its code {received} times");
        match v["delivery"]["state"].as_str().unwrap() {
            "failed" => {
                // A send A had handed to the SMSC when it died, the answer not yet
                // recorded: it may have reached the SMSC, so it is not sent again.
                assert!(v.to_string().contains("interrupted"), "{v}");
                interrupted += 1;
            }
            state => {
                assert_eq!(received, 1, "{number} ({state}) reached the SMSC once");
                if state == "sent" {
                    without_receipt += 1;
                }
            }
        }
    }
    eprintln!(
        "orphaned {orphaned}, interrupted {interrupted}, without receipt {without_receipt}, at the SMSC {}",
        at_smsc.len()
    );
    // At most what A had written to the SMSC without its answer yet: one bind's
    // window. Sends waiting for the window, the bind or the throughput cap are not
    // taken yet, so B makes them.
    assert!(interrupted <= 4, "{interrupted} interrupted");
    assert!(
        without_receipt == 0,
        "{without_receipt} sent but never receipted: receipts of A's messages reach them through B; B: {}",
        b.log()
    );
}
