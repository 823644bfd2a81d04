//! The fault-injection suite: real otpd processes against the SMSC simulator (and a
//! real redis-server), each case counting what was accepted, what reached the SMSC,
//! what was lost and what went twice. Lost is 0 in every case; nothing goes twice
//! (the SMSC's received list is the truth: a refused or unanswered submit is not in
//! it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use otpd_e2e::process::{OtpdProcess, with_carrier};
use otpd_e2e::redis::RedisServer;
use otpd_simulators::smsc::{Account, Fault, Smsc, SmscConfig};
use serde_json::{Value, json};

fn smsc_config() -> SmscConfig {
    SmscConfig {
        accounts: vec![Account {
            system_id: "otpd".into(),
            password: "secret".into(),
        }],
        latency: (Duration::from_millis(5), Duration::from_millis(20)),
        ..SmscConfig::default()
    }
}

/// otpd's configuration for one carrier at `smsc`, with `sections` (store, …).
fn config(smsc: &Smsc, sections: &str) -> String {
    with_carrier(
        smsc.addr().port(),
        sections,
        "binds = 2\nwindow = 8\nresponse_timeout = \"2s\"\nreconnect_min = \"50ms\"\nreconnect_max = \"500ms\"",
    )
}

/// What a case counts.
#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    refused: usize,
    delivered: usize,
    lost: usize,
    twice: usize,
}

/// Ask for `n` codes (numbers `prefix` + 4 digits); the accepted ones, by number.
/// `during` runs after each request (to inject a fault mid-load).
async fn load(
    otpd: &OtpdProcess,
    prefix: &str,
    n: usize,
    mut during: impl FnMut(usize),
) -> (HashMap<String, String>, usize) {
    let client = otpd_e2e::client();
    let mut accepted = HashMap::new();
    let mut refused = 0;
    for i in 0..n {
        let to = format!("{prefix}{i:04}");
        let answer = client
            .post(format!("{}/v1/verifications", otpd.base))
            .json(&json!({"to": to}))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match answer {
            Ok(r) if r.status() == 201 => {
                let body: Value = r.json().await.unwrap();
                accepted.insert(
                    to[1..].to_string(),
                    body["id"].as_str().unwrap().to_string(),
                );
            }
            // Refused (503 while the store is away): the backend knows; not lost.
            Ok(_) | Err(_) => refused += 1,
        }
        during(i);
    }
    (accepted, refused)
}

/// Wait (at most `within`) until every accepted number reached the SMSC, then count.
async fn tally(
    smsc: &Smsc,
    accepted: &HashMap<String, String>,
    refused: usize,
    within: Duration,
) -> Tally {
    let deadline = Instant::now() + within;
    let at_smsc = loop {
        let mut at_smsc: HashMap<String, usize> = HashMap::new();
        for m in smsc.received() {
            *at_smsc.entry(m.destination.addr.clone()).or_default() += 1;
        }
        if accepted.keys().all(|n| at_smsc.contains_key(n)) || Instant::now() > deadline {
            break at_smsc;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut t = Tally {
        accepted: accepted.len(),
        refused,
        ..Tally::default()
    };
    for (number, id) in accepted {
        match at_smsc.get(number).copied().unwrap_or(0) {
            0 => {
                eprintln!("lost: {number} {id}");
                t.lost += 1;
            }
            1 => t.delivered += 1,
            _ => {
                t.delivered += 1;
                t.twice += 1;
            }
        }
    }
    eprintln!("{t:?}");
    t
}

/// The SMSC refuses half the submits with ESME_RTHROTTLED: each goes again after
/// the bind's pause, none is lost, none goes twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smsc_throttling_half_the_submits() {
    let smsc = Smsc::start(SmscConfig {
        random_faults: vec![(Fault::Status(0x58), 500_000)],
        ..smsc_config()
    })
    .await
    .unwrap();
    let otpd = OtpdProcess::start(&config(&smsc, "")).await;
    otpd.wait_channels().await;
    let (accepted, refused) = load(&otpd, "+3460061", 120, |_| {}).await;
    let t = tally(&smsc, &accepted, refused, Duration::from_secs(60)).await;
    assert_eq!((t.accepted, t.refused), (120, 0), "{t:?}");
    assert_eq!((t.lost, t.twice), (0, 0), "{t:?}\n{}", otpd.log());
}

/// The SMSC stops answering anything for 20 s with sends in flight, then resumes:
/// what was accepted meanwhile is delivered, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smsc_silent_for_twenty_seconds() {
    let smsc = Smsc::start(smsc_config()).await.unwrap();
    let otpd = OtpdProcess::start(&config(&smsc, "")).await;
    otpd.wait_channels().await;
    let (mut accepted, mut refused) = load(&otpd, "+3460062", 20, |_| {}).await;
    smsc.set_hung(true);
    let silent = Instant::now();
    let (more, more_refused) = load(&otpd, "+3460063", 40, |_| {}).await;
    accepted.extend(more);
    refused += more_refused;
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(silent.elapsed())).await;
    smsc.set_hung(false);
    let t = tally(&smsc, &accepted, refused, Duration::from_secs(60)).await;
    assert_eq!(t.accepted + t.refused, 60, "{t:?}");
    assert!(t.accepted >= 20, "{t:?}");
    assert_eq!((t.lost, t.twice), (0, 0), "{t:?}\n{}", otpd.log());
}

/// Redis (with its append-only file) is killed and restarted in the middle of the
/// load: requests meanwhile are refused with 503, and every accepted code is
/// delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_load_with_aof() {
    let mut redis = RedisServer::start_durable();
    let smsc = Smsc::start(smsc_config()).await.unwrap();
    let store = format!(
        "[store]\nkind = \"redis\"\n\n[redis]\nurls = [\"{}\"]\ntimeout = \"300ms\"\nclaim_after = \"1s\"",
        redis.url()
    );
    let otpd = OtpdProcess::start(&config(&smsc, &store)).await;
    otpd.wait_channels().await;
    let (accepted, refused) = load(&otpd, "+3460064", 100, |i| {
        if i == 40 {
            redis.kill();
        }
        if i == 50 {
            redis.restart();
        }
    })
    .await;
    let t = tally(&smsc, &accepted, refused, Duration::from_secs(60)).await;
    assert_eq!(t.accepted + t.refused, 100, "{t:?}");
    assert!(t.accepted >= 80, "{t:?}");
    assert_eq!((t.lost, t.twice), (0, 0), "{t:?}\n{}", otpd.log());
}
