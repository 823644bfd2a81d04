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

/// The `[store]` and `[redis]` tables of a node on the Redis at `url`, quick to
/// notice it gone and to claim a silent node's jobs.
fn on_redis(url: &str) -> String {
    format!(
        "[store]\nkind = \"redis\"\n\n[redis]\nurls = [\"{url}\"]\ntimeout = \"300ms\"\nclaim_after = \"1s\""
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
    let otpd = OtpdProcess::start(&config(&smsc, &on_redis(&redis.url()))).await;
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

/// The single node on its embedded store (the default, with no `codes.secret`: the
/// one in its data directory) killed with `kill -9` while most accepted codes still
/// wait in its queue, then started again on the same directory: every accepted code
/// reaches the SMSC — the waiting ones after the restart — and goes twice only if it
/// was in a window in flight at the kill. The subscriber, its device key and its
/// contrast value are there after the restart, and a code sent before the kill is
/// still checked right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_single_embedded_node() {
    let smsc = Smsc::start(SmscConfig {
        // Slow enough that the queue holds most of the load when the kill comes,
        // on a machine where the 300 requests take a second or more (two binds of
        // window 8 deliver about 80 a second at this latency).
        latency: (Duration::from_millis(150), Duration::from_millis(250)),
        ..smsc_config()
    })
    .await
    .unwrap();
    let with_secret = config(&smsc, "");
    let secret_line = "secret = \"one secret for every node, at least 32 bytes long\"\n";
    assert!(with_secret.contains(secret_line));
    let mut otpd = OtpdProcess::start(&with_secret.replace(secret_line, "")).await;
    otpd.wait_channels().await;
    let client = otpd_e2e::client();

    // Ed25519's public key from RFC 8032's first test vector, as an SPKI.
    let spki = hex::decode(
        "302a300506032b6570032100d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    )
    .unwrap();
    let subscriber = json!({
        "phone": "+34600999001",
        "contrast": "17/05/2030",
        "devices": [{"platform": "fcm", "token": "fcm-token-1", "app": "es.gob.clave",
                     "key": {"algorithm": "Ed25519", "public_key": base64_std(&spki)}}]
    });
    let put = client
        .put(format!("{}/v1/subscribers/12345678Z", otpd.base))
        .json(&subscriber)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let registered = get_json(&otpd, "/v1/subscribers/12345678Z").await;

    let (accepted, refused) = load(&otpd, "+3460065", 300, |_| {}).await;
    otpd.kill9();
    let before_kill = smsc.received().len();
    eprintln!(
        "at the SMSC when killed: {before_kill} of {}",
        accepted.len()
    );
    assert!(
        before_kill < accepted.len() / 2,
        "the kill should find most codes still queued ({before_kill} sent)"
    );

    otpd.restart().await;
    otpd.wait_channels().await;
    let t = tally(&smsc, &accepted, refused, Duration::from_secs(60)).await;
    assert_eq!((t.accepted, t.refused), (300, 0), "{t:?}");
    assert_eq!(t.lost, 0, "{t:?}\n{}", otpd.log());
    // Only what two binds of window 8 had in flight at the kill can go twice.
    assert!(t.twice <= 16, "{t:?}");

    // The registry came back whole, device key and contrast value included.
    let after = get_json(&otpd, "/v1/subscribers/12345678Z").await;
    assert_eq!(after, registered);
    assert_eq!(after["contrast"], true);
    assert_eq!(after["devices"][0]["key"]["algorithm"], "Ed25519");
    // Admission may still judge the carrier busy from the restart's backlog: a
    // 503 `overloaded` says when to try again, as a backend would.
    let mut by_subject = None;
    for _ in 0..20 {
        let answer = client
            .post(format!("{}/v1/verifications", otpd.base))
            .json(&json!({"subject": "12345678Z", "contrast": "17/05/2030", "channel": "sms"}))
            .send()
            .await
            .unwrap();
        if answer.status() != 503 {
            by_subject = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let by_subject = by_subject.expect("admitted within 20 s of the restart's backlog");
    assert_eq!(
        by_subject.status(),
        201,
        "{}",
        by_subject.text().await.unwrap()
    );

    // A code sent before the kill is still the right one (the secret and the
    // verification both survived).
    let first = smsc.received()[0].clone();
    let number = format!("+{}", first.destination.addr);
    let id = &accepted[&first.destination.addr];
    let code = otpd_e2e::code_in(&first.text());
    let checked: Value = client
        .post(format!("{}/v1/verifications/{id}/check", otpd.base))
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(checked["status"], "approved", "{number}: {checked}");
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A small tmpfs mounted for one test, unmounted (lazily) when dropped. `None` where
/// this machine does not let the test mount one.
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk { path, _dir: dir })
    }

    /// Write a file until the disk refuses more.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&[0; 512]);
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// `GET path` on `otpd`, its JSON answer.
async fn get_json(otpd: &OtpdProcess, path: &str) -> Value {
    otpd_e2e::client()
        .get(format!("{}{path}", otpd.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn healthz(otpd: &OtpdProcess) -> Value {
    get_json(otpd, "/healthz").await
}

/// The embedded store's disk fills up mid-load: new verifications are refused with
/// 503 (and readiness fails) rather than accepted without a record; what was
/// accepted before is delivered; once space is freed the journal is written again
/// and otpd accepts again. Nothing accepted is lost or sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_stores_disk_full() {
    let Some(disk) = SmallDisk::mount("2m") else {
        eprintln!("SKIPPED: this machine does not let the test mount a tmpfs");
        return;
    };
    let smsc = Smsc::start(smsc_config()).await.unwrap();
    let store = format!(
        "[store]\nkind = \"embedded\"\npath = \"{}\"\nwrite_timeout = \"300ms\"",
        disk.path.join("otpd-data").display()
    );
    let otpd = OtpdProcess::start(&config(&smsc, &store)).await;
    otpd.wait_channels().await;
    let (mut accepted, mut refused) = load(&otpd, "+3460066", 40, |_| {}).await;
    assert_eq!(accepted.len(), 40);

    let filler = disk.fill();
    // The journal keeps room written ahead in its segment (at least 256 KiB), so
    // the disk's being full shows once that room is used: batches until one is
    // refused, within a bound.
    let mut batches = 0;
    loop {
        let prefix = format!("+346007{batches}");
        let (during, refused_during) = load(&otpd, &prefix, 40, |_| {}).await;
        eprintln!(
            "while full, batch {batches}: {} accepted, {refused_during} refused",
            during.len()
        );
        accepted.extend(during);
        refused += refused_during;
        batches += 1;
        if refused_during >= 35 {
            break;
        }
        assert!(
            batches < 10,
            "a full disk refuses new verifications once the room ahead is used"
        );
    }
    let health = healthz(&otpd).await;
    assert_eq!(health["store"], "unavailable", "{health}");

    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while healthz(&otpd).await["store"] != "ok" {
        assert!(Instant::now() < deadline, "the journal never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (after, refused_after) = load(&otpd, "+3460068", 40, |_| {}).await;
    assert_eq!(after.len(), 40, "accepting again once there is room");
    accepted.extend(after);
    refused += refused_after;

    let t = tally(&smsc, &accepted, refused, Duration::from_secs(60)).await;
    assert_eq!(t.accepted + t.refused, 80 + 40 * batches, "{t:?}");
    assert_eq!((t.lost, t.twice), (0, 0), "{t:?}\n{}", otpd.log());
}

/// The push provider (FCM) answers every push with a 5xx for 30 s, then answers
/// each in 8 s, then normally: a push it refused goes by SMS instead (after its
/// retries), a slow one is waited for. Every code reaches its person, by push or by
/// SMS; none goes twice on one channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_provider_failing_30_s_then_answering_in_8_s() {
    use otpd_simulators::push::{Behaviour, Provider};
    let providers = otpd_e2e::providers::Providers::start().await;
    let smsc = Smsc::start(smsc_config()).await.unwrap();
    // The timer's escalation is kept out of the way: only a failed push goes by SMS.
    let sections = format!(
        "{}\n[purposes.login]\nttl = \"10m\"\ncode_length = 6\nmax_attempts = 5\nmax_sends = 5\nresend_cooldown = \"30s\"\nescalate_after = \"4m\"\n",
        providers.fcm_table("10s")
    );
    let otpd = OtpdProcess::start(&config(&smsc, &sections)).await;
    otpd.wait_channels().await;
    let client = otpd_e2e::client();
    let people = 48;
    for i in 0..people {
        let put = client
            .put(format!("{}/v1/subscribers/S{i:04}", otpd.base))
            .json(&json!({
                "phone": format!("+3460069{i:04}"),
                "devices": [{"platform": "fcm", "token": fcm_token(i), "app": "es.gob.clave"}]
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201);
    }
    let ask = |i: usize| {
        let (client, base) = (client.clone(), otpd.base.clone());
        async move {
            let r = client
                .post(format!("{base}/v1/verifications"))
                .json(&json!({"subject": format!("S{i:04}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
            let v: Value = r.json().await.unwrap();
            v["id"].as_str().unwrap().to_string()
        }
    };
    let mut accepted = Vec::new();
    providers.mock.set_behaviour(Behaviour {
        server_error: 1.0,
        ..Behaviour::default()
    });
    let failing = Instant::now();
    for i in 0..16 {
        accepted.push((i, ask(i).await));
        tokio::time::sleep(Duration::from_secs(30) / 16).await;
    }
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(failing.elapsed())).await;
    providers.mock.set_behaviour(Behaviour {
        latency_ms: 8_000,
        ..Behaviour::default()
    });
    for i in 16..32 {
        accepted.push((i, ask(i).await));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    providers.mock.set_behaviour(Behaviour::default());
    for i in 32..people {
        accepted.push((i, ask(i).await));
    }

    // Each person's pushes the provider took, and SMS the SMSC took.
    let reached = |i: usize| {
        let token = fcm_token(i);
        let pushes = providers
            .mock
            .requests(Some(Provider::Fcm))
            .iter()
            .filter(|r| r.status == 200 && r.body["message"]["token"] == token.as_str())
            .count();
        let number = format!("3460069{i:04}");
        let sms = smsc
            .received()
            .iter()
            .filter(|m| m.destination.addr == number)
            .count();
        (pushes, sms)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.iter().any(|(i, _)| reached(*i) == (0, 0)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut by_push, mut by_sms, mut lost, mut twice) = (0, 0, 0, 0);
    for (i, id) in &accepted {
        match reached(*i) {
            (0, 0) => {
                eprintln!("lost: S{i:04} {id}");
                lost += 1;
            }
            (p, s) => {
                by_push += usize::from(p > 0);
                by_sms += usize::from(s > 0);
                twice += usize::from(p > 1 || s > 1);
            }
        }
    }
    eprintln!(
        "accepted {}, by push {by_push}, by SMS {by_sms}, lost {lost}, twice {twice}",
        accepted.len()
    );
    assert_eq!((lost, twice), (0, 0), "{}", otpd.log());
    assert!(by_sms >= 16, "the pushes refused for 30 s went by SMS");
    assert!(by_push >= 32, "the slow and the normal pushes went by push");
}

/// A registration token of FCM's shape (20 or more URL-safe characters) for person
/// `i`.
fn fcm_token(i: usize) -> String {
    format!("fcm-registration-token-{i:04}")
}

/// Redis (with its append-only file) fails over to its replica in the middle of the
/// load: the master is killed, the replica promoted, and the address otpd uses
/// moved to it (as a virtual address or a role-checking proxy does). Requests
/// meanwhile are refused with 503; every accepted code is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failing_over_to_its_replica() {
    let mut master = RedisServer::start_durable();
    let replica = RedisServer::start_durable_replica_of(master.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replica
        .cli(&["INFO", "replication"])
        .contains("master_link_status:up")
    {
        assert!(Instant::now() < deadline, "the replica never synced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = otpd_e2e::proxy::SwitchProxy::start(at(master.port)).await;
    let smsc = Smsc::start(smsc_config()).await.unwrap();
    let otpd = OtpdProcess::start(&config(&smsc, &on_redis(&proxy.url()))).await;
    otpd.wait_channels().await;
    let (accepted, refused) = load(&otpd, "+3460070", 100, |i| {
        if i == 40 {
            master.kill();
            assert!(replica.cli(&["REPLICAOF", "NO", "ONE"]).contains("OK"));
            proxy.switch(at(replica.port));
        }
    })
    .await;
    let t = tally(&smsc, &accepted, refused, Duration::from_secs(60)).await;
    assert_eq!(t.accepted + t.refused, 100, "{t:?}");
    assert!(t.accepted >= 80, "{t:?}");
    assert_eq!((t.lost, t.twice), (0, 0), "{t:?}\n{}", otpd.log());
}

/// The SMSC cuts the link mid-window now and then (it closes the connection on a
/// submit without answering, with others of the window accepted but unanswered):
/// nothing is lost, and what goes twice is at most a window per cut link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smsc_cutting_links_mid_window() {
    let smsc = Smsc::start(SmscConfig {
        random_faults: vec![(Fault::Drop, 25_000)],
        latency: (Duration::from_millis(5), Duration::from_millis(40)),
        ..smsc_config()
    })
    .await
    .unwrap();
    let otpd = OtpdProcess::start(&config(&smsc, "")).await;
    otpd.wait_channels().await;
    let (accepted, refused) = load(&otpd, "+3460071", 200, |_| {}).await;
    let t = tally(&smsc, &accepted, refused, Duration::from_secs(60)).await;
    let cuts = smsc
        .stats()
        .dropped_connections
        .load(std::sync::atomic::Ordering::Relaxed) as usize;
    eprintln!("links cut: {cuts}");
    assert!(cuts > 0, "the SMSC cut some links");
    assert_eq!((t.accepted, t.refused), (200, 0), "{t:?}");
    assert_eq!(t.lost, 0, "{t:?}\n{}", otpd.log());
    // Each cut can leave a window (8) accepted but unanswered: sent again.
    assert!(t.twice <= cuts * 8, "{t:?}, {cuts} cuts");
}

/// The outbox (the file channel, otpd's local delivery) sits on a disk that fills
/// up: its writes fail, the channel reports itself down so that sends wait for it
/// instead of spending their attempts, no line is left half written, and once
/// space is freed every accepted code is in the outbox once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outboxs_disk_full() {
    let Some(disk) = SmallDisk::mount("1m") else {
        eprintln!("SKIPPED: this machine does not let the test mount a tmpfs");
        return;
    };
    let outbox = disk.path.join("outbox.jsonl");
    let config = "[codes]\nsecret = \"one secret for every node, at least 32 bytes long\"\ndefault_locale = \"en\"\n\n[delivery]\nsms = \"file\"\nretry_backoff = \"100ms\"\n\n[log]\nlevel = \"warn\"\n";
    let otpd = OtpdProcess::start_prepared(config, |dir| {
        std::os::unix::fs::symlink(&outbox, dir.join("outbox.jsonl")).unwrap();
    })
    .await;
    let (mut accepted, mut refused) = load(&otpd, "+3460072", 30, |_| {}).await;
    let filler = disk.fill();
    let (during, refused_during) = load(&otpd, "+3460073", 30, |_| {}).await;
    accepted.extend(during);
    refused += refused_during;
    // The channel reports itself down (between its tries)...
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_json(&otpd, "/healthz").await["channels"]["file"] != "unavailable" {
        assert!(Instant::now() < deadline, "the full outbox never showed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...for longer than its attempts would have lasted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::remove_file(filler).unwrap();

    let lines = || -> Vec<Value> {
        std::fs::read_to_string(&outbox)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("whole JSON lines only"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines().len() < accepted.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut at: HashMap<String, usize> = HashMap::new();
    for l in lines() {
        *at.entry(
            l["to"]
                .as_str()
                .unwrap()
                .trim_start_matches('+')
                .to_string(),
        )
        .or_default() += 1;
    }
    let lost = accepted.keys().filter(|n| !at.contains_key(*n)).count();
    let twice = at.values().filter(|c| **c > 1).count();
    eprintln!(
        "accepted {}, refused {refused}, lost {lost}, twice {twice}",
        accepted.len()
    );
    if let Some((n, id)) = accepted.iter().find(|(n, _)| !at.contains_key(*n)) {
        eprintln!(
            "{n}: {}",
            get_json(&otpd, &format!("/v1/verifications/{id}")).await
        );
    }
    assert_eq!((accepted.len(), refused), (60, 0));
    assert_eq!((lost, twice), (0, 0), "{}", otpd.log());
}
