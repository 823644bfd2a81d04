//! The audit trail of a real otpd process: every event and registry change in a
//! hash chain with signed checkpoints; `otpd audit verify` passes it whole and
//! names the first record that was changed, removed or signed by another key;
//! `otpd audit export --subject` gives one citizen's history; no code is in it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use otpd_e2e::process::{OtpdProcess, otpd_binary};
use serde_json::{Value, json};

const KEY: &str = "registro-key-0123456789";
const SUBJECT: &str = "12345678Z";

fn keygen() -> (String, String) {
    let out = Command::new(otpd_binary())
        .args(["audit", "keygen"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let seed = text
        .lines()
        .find_map(|l| l.strip_prefix("signing_key = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    (seed, public)
}

fn audit(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(otpd_binary())
        .arg("audit")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn call(otpd: &OtpdProcess, method: reqwest::Method, path: &str, body: Value) -> Value {
    let r = otpd_e2e::client()
        .request(method, format!("{}{path}", otpd.base))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

/// The codes in the process's outbox.
fn codes(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("outbox.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            otpd_e2e::code_in(v["text"].as_str().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn the_trail_is_whole_names_what_was_tampered_with_and_exports_a_subject() {
    let (seed, public) = keygen();
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("trail");
    let config = format!(
        r#"
[store]
kind = "memory"

[audit]
path = "{}"
signing_key = "{seed}"
checkpoint_every = 5

[[clients]]
name = "registro"
key_sha256 = "{}"
registry = "write"
"#,
        trail.display(),
        otpd::config::KeyDigest::of(KEY)
    );
    let mut otpd = OtpdProcess::start(&config).await;
    use reqwest::Method;
    call(
        &otpd,
        Method::PUT,
        &format!("/v1/subscribers/{SUBJECT}"),
        json!({"phone": "+34600123456"}),
    )
    .await;
    for _ in 0..3 {
        let v = call(
            &otpd,
            Method::POST,
            "/v1/verifications",
            json!({"subject": SUBJECT}),
        )
        .await;
        let id = v["id"].as_str().unwrap().to_string();
        // Wait for its send, then cancel it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(otpd.dir().join("outbox.jsonl"))
            .unwrap_or_default()
            .contains(&id)
        {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        call(
            &otpd,
            Method::DELETE,
            &format!("/v1/verifications/{id}"),
            json!({}),
        )
        .await;
    }
    call(
        &otpd,
        Method::POST,
        "/v1/verifications",
        json!({"to": "+34600999888"}),
    )
    .await;
    // A graceful stop seals the file.
    otpd.terminate();
    assert!(
        otpd.exited(Duration::from_secs(20))
            .await
            .is_some_and(|s| s.success())
    );

    let trail_s = trail.to_str().unwrap();
    let (ok, out, err) = audit(&["verify", trail_s, "--public-key", &public]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("0 after the last checkpoint"), "{out}");

    // One citizen's history: the registration and each verification's story.
    let (ok, out, _) = audit(&["export", "--subject", SUBJECT, "--path", trail_s]);
    assert!(ok);
    let kinds: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("subscriber.updated"),
        "{out}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "verification.canceled")
            .count(),
        3,
        "{out}"
    );
    assert!(out.contains("\"client\":\"registro\""), "{out}");

    // No code is in it.
    let files = otpd::events::audit::files(&trail).unwrap();
    let text: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let sent = codes(otpd.dir());
    assert_eq!(sent.len(), 4);
    for code in &sent {
        assert!(
            !text.contains(&format!("\"{code}\"")),
            "code {code} in the trail"
        );
    }
    assert!(!text.contains("600123456"), "a whole number in the trail");

    // Another key's signature is refused.
    let (_, other) = keygen();
    let (ok, _, err) = audit(&["verify", trail_s, "--public-key", &other]);
    assert!(!ok && err.contains("signature"), "{err}");

    // A changed record is named.
    let file = &files[0];
    let original = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let target = lines
        .iter()
        .position(|l| l.contains("verification.canceled"))
        .unwrap();
    let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    changed[target] = changed[target].replace("verification.canceled", "verification.approved");
    std::fs::write(file, changed.join("\n") + "\n").unwrap();
    let (ok, _, err) = audit(&["verify", trail_s, "--public-key", &public]);
    assert!(!ok);
    let seq = serde_json::from_str::<Value>(lines[target]).unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert!(
        err.contains(&format!("record {seq} (line {})", target + 1)),
        "{err}"
    );

    // A removed record is named too.
    let mut removed: Vec<&str> = lines.clone();
    removed.remove(target);
    std::fs::write(file, removed.join("\n") + "\n").unwrap();
    let (ok, _, err) = audit(&["verify", trail_s, "--public-key", &public]);
    assert!(!ok && err.contains("removed or inserted"), "{err}");
}
