//! Clients' webhooks against a real HTTP receiver, with otpd as a real process on
//! the system clock: every event signed as Standard Webhooks says (checked here
//! with HMAC computed from the specification, and by the `standardwebhooks` package
//! from PyPI), in order per verification, retried when the receiver fails, hangs or
//! is down, given up and counted after `retry_for`; and `GET /v1/events` gives a
//! client its own events.

use std::collections::HashMap;
use std::time::Duration;

use otpd_e2e::process::OtpdProcess;
use otpd_e2e::receiver::{Behaviour, Receiver, expected_signature};
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const KEY: &str = "sede-key-0123456789";
const OTHER_KEY: &str = "banco-key-0123456789";

fn config(receiver: &Receiver, webhooks: &str) -> String {
    config_on(receiver, webhooks, "[store]\nkind = \"memory\"")
}

fn config_on(receiver: &Receiver, webhooks: &str, store: &str) -> String {
    let digest = |k: &str| otpd::config::KeyDigest::of(k).to_string();
    format!(
        r#"
{store}

[webhooks]
first_retry = "50ms"
max_retry = "200ms"
{webhooks}

[[clients]]
name = "sede"
key_sha256 = "{sede}"
webhook_url = "{url}"
webhook_secret = "{SECRET}"

[[clients]]
name = "banco"
key_sha256 = "{banco}"
keep_events = true
"#,
        sede = digest(KEY),
        banco = digest(OTHER_KEY),
        url = receiver.url(),
    )
}

struct Api<'a> {
    otpd: &'a OtpdProcess,
    key: &'a str,
}

impl Api<'_> {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = otpd_e2e::client()
            .request(method, format!("{}{path}", self.otpd.base))
            .bearer_auth(self.key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let answer = r.send().await.expect("an answer");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    async fn issue(&self, to: &str) -> String {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                "/v1/verifications",
                Some(json!({"to": to})),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Issue a code to `to`, read it from whichever of `nodes` sent it, and check
    /// it: the verification's id.
    async fn approved(&self, nodes: &[&OtpdProcess], to: &str) -> String {
        let id = self.issue(to).await;
        let code = code_from(nodes, &id).await;
        assert_eq!(self.check(&id, &code).await, 200);
        id
    }

    async fn check(&self, id: &str, code: &str) -> u16 {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/verifications/{id}/check"),
            Some(json!({"code": code})),
        )
        .await
        .0
    }
}

/// The code of `id`'s first send, from whichever node's outbox has it.
async fn code_from(nodes: &[&OtpdProcess], id: &str) -> String {
    let otpd = nodes[0];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        for node in nodes {
            let text = std::fs::read_to_string(node.dir().join("outbox.jsonl")).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(id)) {
                let v: Value = serde_json::from_str(line).unwrap();
                return otpd_e2e::code_in(v["text"].as_str().unwrap());
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} never reached the outbox: {:?}\n{}",
            std::fs::read_dir(otpd.dir())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect::<Vec<_>>(),
            otpd.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The types each verification was told, in the order the receiver took them
/// (first taking of each event id).
fn stories(taken: &[otpd_e2e::receiver::Request]) -> HashMap<String, Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for r in taken {
        if !seen.insert(r.id.clone()) {
            continue;
        }
        let v = r.json();
        let id = v["data"]["verification_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out.entry(id)
            .or_default()
            .push(v["type"].as_str().unwrap().to_string());
    }
    out
}

#[tokio::test]
async fn every_event_is_signed_in_order_per_verification_and_without_its_code() {
    let taken = signed_in_order("timeout = \"300ms\"").await;
    assert!(taken.iter().all(|r| r.version == "HTTP/1.1"));
}

/// The same over HTTP/2 without TLS (`h2c`), many events sharing a connection.
#[tokio::test]
async fn over_cleartext_http2_too() {
    let taken = signed_in_order("timeout = \"300ms\"\nh2c = true").await;
    assert!(taken.iter().all(|r| r.version == "HTTP/2.0"), "{taken:?}");
}

async fn signed_in_order(webhooks: &str) -> Vec<otpd_e2e::receiver::Request> {
    let receiver = Receiver::start(Behaviour::default()).await;
    let otpd = OtpdProcess::start(&config(&receiver, webhooks)).await;
    let api = Api {
        otpd: &otpd,
        key: KEY,
    };
    let mut codes = Vec::new();
    let mut ids = Vec::new();
    for n in 0..20 {
        let id = api.approved(&[&otpd], &format!("+346001122{n:02}")).await;
        codes.push(code_from(&[&otpd], &id).await);
        ids.push(id);
    }
    let taken = receiver.wait_taken(40, Duration::from_secs(20)).await;
    for r in &taken {
        assert_eq!(r.content_type, "application/json");
        assert_eq!(
            r.signature,
            expected_signature(SECRET, &r.id, &r.timestamp, &r.body),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["id"], r.id.as_str());
        let ts: i64 = r.timestamp.parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((now - ts).abs() < 60, "timestamp {ts} against {now}");
        let text = String::from_utf8_lossy(&r.body);
        for code in &codes {
            assert!(!text.contains(&format!("\"{code}\"")), "a code in {text}");
        }
        assert!(!text.contains("600112200"), "a whole number in {text}");
    }
    let stories = stories(&taken);
    for id in &ids {
        assert_eq!(
            stories[id],
            ["verification.sent", "verification.approved"],
            "{id}"
        );
    }
    // The other client's events are not sent to this webhook.
    assert_eq!(stories.len(), ids.len());
    taken
}

#[tokio::test]
async fn a_receiver_that_fails_hangs_or_restarts_gets_every_event_in_order() {
    fails_hangs_or_restarts("timeout = \"300ms\"").await;
}

/// The same over h2c: a 500 answered on a stream, a stream reset at the deadline
/// while others share its connection, a connection lost and made again.
#[tokio::test]
async fn over_cleartext_http2_a_receiver_that_fails_hangs_or_restarts_gets_every_event() {
    fails_hangs_or_restarts("timeout = \"300ms\"\nh2c = true").await;
}

async fn fails_hangs_or_restarts(webhooks: &str) {
    let mut receiver = Receiver::start(Behaviour {
        fail_first: 2,
        ..Behaviour::default()
    })
    .await;
    let otpd = OtpdProcess::start(&config(&receiver, webhooks)).await;
    let api = Api {
        otpd: &otpd,
        key: KEY,
    };
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = api.approved(&[&otpd], &format!("+346001133{n:02}")).await;
        ids.push(id);
    }
    let taken = receiver.wait_taken(10, Duration::from_secs(20)).await;
    // Each event was refused twice, then taken on its third attempt.
    assert!(taken.iter().all(|r| r.attempt == 3), "{taken:?}");
    let s = stories(&taken);
    for id in &ids {
        assert_eq!(s[id], ["verification.sent", "verification.approved"]);
    }

    // Hanging past otpd's timeout (300 ms): tried again, taken.
    receiver.set(Behaviour {
        hang_first: 1,
        hang: Duration::from_secs(2),
        ..Behaviour::default()
    });
    let hung = api.issue("+34600114400").await;
    let taken = receiver.wait_taken(11, Duration::from_secs(20)).await;
    let first = taken
        .iter()
        .find(|r| r.json()["data"]["verification_id"] == hung.as_str());
    assert!(first.is_some_and(|r| r.attempt >= 2), "{first:?}");

    // Down: what happens meanwhile is kept and sent once it is back, in order.
    receiver.stop().await;
    receiver.set(Behaviour::default());
    let mut later = Vec::new();
    for n in 0..5 {
        let id = api.approved(&[&otpd], &format!("+346001155{n:02}")).await;
        later.push(id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.restart().await;
    let taken = receiver.wait_taken(11 + 10, Duration::from_secs(20)).await;
    let s = stories(&taken);
    for id in &later {
        assert_eq!(
            s[id],
            ["verification.sent", "verification.approved"],
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_slow_receiver_never_slows_the_requests() {
    let receiver = Receiver::start(Behaviour {
        delay: Duration::from_millis(250),
        ..Behaviour::default()
    })
    .await;
    let otpd = OtpdProcess::start(&config(&receiver, "concurrency = 1\ntimeout = \"5s\"")).await;
    let api = Api {
        otpd: &otpd,
        key: KEY,
    };
    for n in 0..40 {
        api.issue(&format!("+346001166{n:02}")).await;
    }
    // Forty requests answered while the receiver, taking one event at a time at
    // 250 ms each, has taken only a few of their forty events.
    let taken = receiver.taken().len();
    assert!(
        taken < 20,
        "the requests waited for the receiver: {taken} taken"
    );
    let (_, metrics) = (
        0,
        otpd_e2e::client()
            .get(format!("{}/metrics", otpd.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(metrics.contains("otpd_events_total"), "{metrics}");
}

#[tokio::test]
async fn events_nobody_takes_are_given_up_after_retry_for_and_counted_dead() {
    let receiver = Receiver::start(Behaviour {
        fail_first: usize::MAX,
        ..Behaviour::default()
    })
    .await;
    let otpd = OtpdProcess::start(&config(
        &receiver,
        "timeout = \"300ms\"\nretry_for = \"1s\"",
    ))
    .await;
    let api = Api {
        otpd: &otpd,
        key: KEY,
    };
    api.issue("+34600117700").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = otpd_e2e::client()
            .get(format!("{}/metrics", otpd.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("otpd_webhook_dead_total{client=\"sede\"} 1") {
            assert!(
                metrics.contains("otpd_webhook_attempts_total{client=\"sede\",outcome=\"failed\"}")
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Tried several times within the second, with growing waits.
    let tries = receiver.requests().len();
    assert!((3..=20).contains(&tries), "{tries} attempts");
}

#[tokio::test]
async fn a_client_reads_back_its_own_events_after_an_id() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let otpd = OtpdProcess::start(&config(&receiver, "timeout = \"300ms\"")).await;
    let sede = Api {
        otpd: &otpd,
        key: KEY,
    };
    let banco = Api {
        otpd: &otpd,
        key: OTHER_KEY,
    };
    let mine = banco.approved(&[&otpd], "+34600118800").await;
    sede.issue("+34600118801").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let events = loop {
        let (status, v) = banco.call(reqwest::Method::GET, "/v1/events", None).await;
        assert_eq!(status, 200, "{v}");
        if v["data"].as_array().unwrap().len() >= 2 {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let data = events["data"].as_array().unwrap();
    assert!(
        data.iter()
            .all(|e| e["data"]["verification_id"] == mine.as_str()),
        "{events}"
    );
    assert_eq!(data[0]["type"], "verification.sent");
    assert_eq!(data[1]["type"], "verification.approved");
    assert_eq!(events["has_more"], false);
    // After the first: the second alone; one at a time says there is more.
    let first = data[0]["id"].as_str().unwrap();
    let (_, after) = banco
        .call(
            reqwest::Method::GET,
            &format!("/v1/events?after={first}"),
            None,
        )
        .await;
    assert_eq!(after["data"].as_array().unwrap().len(), 1);
    assert_eq!(after["data"][0]["id"], data[1]["id"]);
    let (_, one) = banco
        .call(reqwest::Method::GET, "/v1/events?limit=1", None)
        .await;
    assert_eq!(one["has_more"], true);
    // Nonsense is named.
    for (query, field) in [
        ("after=12", "after"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("since=1", "since"),
    ] {
        let (status, v) = banco
            .call(reqwest::Method::GET, &format!("/v1/events?{query}"), None)
            .await;
        assert_eq!(status, 400, "{query}: {v}");
        assert_eq!(v["error"]["field"], field, "{query}: {v}");
    }
    // Without a key: refused.
    let anonymous = otpd_e2e::client()
        .get(format!("{}/v1/events", otpd.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// On the embedded store, events a receiver had not taken when otpd was killed
/// (`kill -9`) are sent after the restart, and `GET /v1/events` still has them.
#[tokio::test]
async fn events_outlive_a_kill_on_the_embedded_store() {
    let mut receiver = Receiver::start(Behaviour::default()).await;
    receiver.stop().await;
    let mut otpd = OtpdProcess::start(&config_on(
        &receiver,
        "timeout = \"300ms\"",
        "[store]\nkind = \"embedded\"\n\n[codes]\nsecret = \"0123456789abcdef0123456789abcdef\"",
    ))
    .await;
    let mut ids = Vec::new();
    {
        let api = Api {
            otpd: &otpd,
            key: KEY,
        };
        for n in 0..3 {
            let id = api.approved(&[&otpd], &format!("+346001211{n:02}")).await;
            ids.push(id);
        }
    }
    // The events follow their verifications to disk within the moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    otpd.kill9();
    otpd.restart().await;
    receiver.restart().await;
    let taken = receiver.wait_taken(6, Duration::from_secs(20)).await;
    let s = stories(&taken);
    for id in &ids {
        assert_eq!(
            s[id],
            ["verification.sent", "verification.approved"],
            "{id}"
        );
    }
    let api = Api {
        otpd: &otpd,
        key: KEY,
    };
    let (_, kept) = api.call(reqwest::Method::GET, "/v1/events", None).await;
    assert_eq!(kept["data"].as_array().unwrap().len(), 6, "{kept}");
}

/// On Redis, events made on any node reach the webhook, one node delivering at a
/// time, in order per verification; when that node dies another takes over.
#[tokio::test]
async fn on_redis_any_node_delivers_and_a_dead_node_is_taken_over() {
    let redis = otpd_e2e::redis::RedisServer::start();
    let receiver = Receiver::start(Behaviour::default()).await;
    let store = format!(
        "[store]\nkind = \"redis\"\n\n[redis]\nurls = [\"{}\"]\nclaim_after = \"1s\"\n\n[codes]\nsecret = \"0123456789abcdef0123456789abcdef\"",
        redis.url()
    );
    let config = config_on(&receiver, "timeout = \"300ms\"", &store);
    let mut a = OtpdProcess::start(&config).await;
    let b = OtpdProcess::start(&config).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let (node, other) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let api = Api {
            otpd: node,
            key: KEY,
        };
        let id = api
            .approved(&[node, other], &format!("+346001222{n:02}"))
            .await;
        ids.push(id);
    }
    let taken = receiver.wait_taken(12, Duration::from_secs(20)).await;
    let s = stories(&taken);
    for id in &ids {
        assert_eq!(
            s[id],
            ["verification.sent", "verification.approved"],
            "{id}"
        );
    }
    // One of them holds the lease; kill A, and what B makes still arrives (after A's
    // lease lapses, if it was A's).
    a.kill9();
    let api = Api { otpd: &b, key: KEY };
    let late = api.approved(&[&b], "+34600122299").await;
    let taken = receiver.wait_taken(14, Duration::from_secs(30)).await;
    assert_eq!(
        stories(&taken)[&late],
        ["verification.sent", "verification.approved"]
    );
}

/// The `standardwebhooks` package from PyPI (installed by `scripts/test.sh` into
/// `tests/interop/python`) verifies what the receiver took.
#[tokio::test]
async fn an_independent_library_verifies_the_signatures() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let otpd = OtpdProcess::start(&config(&receiver, "timeout = \"300ms\"")).await;
    let api = Api {
        otpd: &otpd,
        key: KEY,
    };
    api.approved(&[&otpd], "+34600119900").await;
    let taken = receiver.wait_taken(2, Duration::from_secs(10)).await;
    let messages: Vec<Value> = taken
        .iter()
        .map(|r| {
            json!({
                "headers": {
                    "webhook-id": r.id,
                    "webhook-timestamp": r.timestamp,
                    "webhook-signature": r.signature,
                },
                "body": String::from_utf8(r.body.clone()).unwrap(),
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("messages.json");
    std::fs::write(&file, serde_json::to_vec(&messages).unwrap()).unwrap();
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/python");
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
wh = Webhook(sys.argv[1])
messages = json.load(open(sys.argv[2]))
for m in messages:
    wh.verify(m["body"], m["headers"])
    try:
        wh.verify(m["body"].replace("verification", "Verification"), m["headers"])
        sys.exit("a changed body was accepted")
    except Exception:
        pass
print(len(messages), "verified")
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(SECRET)
        .arg(&file)
        .env("PYTHONPATH", &python)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "standardwebhooks refused otpd's signatures (scripts/test.sh installs it into {}):\n{}{}",
        python.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2 verified");
}
