//! The `smoke` scenario end to end: the tool starts the SMSC simulators, the push
//! mocks and a real otpd process, sends its load, follows every code to its check,
//! and writes its report. Asserts the tool's own accounting and the report's shape,
//! never a speed; then opens the HTML report in headless Chromium and checks that its
//! script drew every chart.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use otpd_loadtest::{Options, Report, Scenario};

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/loadtest")
        .join(format!("{name}.toml"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_runs_end_to_end_and_its_report_renders() {
    let out = tempfile::tempdir().unwrap();
    let s = Scenario::load(&scenario("smoke")).unwrap();
    let planned = s.planned_arrivals();
    let report = otpd_loadtest::run(
        s,
        Options {
            out: out.path().to_path_buf(),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let summary = report.summary();
    for c in report.invariants.iter().chain(&report.expectations) {
        assert!(c.ok, "{}: {}\n{summary}", c.name, c.detail);
    }
    // Offered is what the schedule planned, and every arrival was sent.
    assert_eq!(report.offered, planned, "{summary}");
    assert_eq!(report.sent, planned);
    // Every kind of traffic happened and was measured.
    let issue = &report.ops["issue"];
    assert_eq!(issue.latency.count, planned);
    assert!(issue.latency.p99_ms > 0.0 && issue.latency.max_ms >= issue.latency.p99_ms);
    for op in [
        "check",
        "ack",
        "resend",
        "register",
        "burst_check",
        "approve",
    ] {
        assert!(
            report.ops.get(op).is_some_and(|o| o.latency.count > 0),
            "no {op}: {summary}"
        );
    }
    for via in ["sms", "apns", "fcm", "all"] {
        assert!(
            report.delivery.get(via).is_some_and(|l| l.count > 0),
            "nothing by {via}: {summary}"
        );
    }
    let people = &report.people;
    assert!(
        people["approved"] > 0 && people["wrong_code_rejected"] > 0,
        "{summary}"
    );
    assert_eq!(
        people["delivered"] + people["refused"] + people["undelivered"] + people["replaced"],
        people["sessions"]
    );
    // Some people approved in the app, with the key they enrolled, and every answer
    // was taken (an answer otpd refused would count as an unexpected check answer).
    assert!(people["approved_in_app"] > 0, "{summary}");
    assert_eq!(
        report.ops["approve"].answers.get("200").copied(),
        Some(people["approved_in_app"]),
        "{summary}"
    );
    // Right codes and app answers approve: approvals are the people who typed
    // theirs or answered in the app.
    assert_eq!(
        people["approved"] + people["never_typed"],
        people["delivered"],
        "{summary}"
    );
    assert!(
        report.otpd.rss_max_mb.is_some_and(|m| m > 1.0),
        "otpd's memory was sampled"
    );
    assert!(!report.series.is_empty() && report.series.iter().any(|s| s.issued > 0));
    // The top rate's seconds are among the arrivals, and their answers were measured.
    let peak = report.peak.as_ref().expect("a peak");
    assert!(
        peak.seconds > 0 && (peak.to_s as f64) < report.arrivals_s,
        "{peak:?}"
    );
    assert!(
        peak.issued_per_s > 0.0 && peak.issue_p99_ms > 0.0,
        "{peak:?}"
    );
    assert!(summary.contains("at the top rate"), "{summary}");
    let carried: u64 = report.smscs.iter().map(|s| s.accepted).sum();
    assert!(carried >= report.delivery["sms"].count, "{summary}");

    // The files, and the JSON reads back.
    for file in [
        "report.json",
        "report.html",
        "summary.txt",
        "otpd.toml",
        "otpd.log",
    ] {
        assert!(out.path().join(file).exists(), "{file} missing");
    }
    let back: Report =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(back.offered, report.offered);

    renders_in_chromium(&out.path().join("report.html"));
}

/// Debian's `chromium` (scripts/test.sh installs it) opens the page headless; the DOM
/// it dumps after the scripts ran must show every chart drawn.
fn renders_in_chromium(page: &Path) {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is installed (scripts/test.sh installs Debian's package)");
    let profile = tempfile::tempdir().unwrap();
    let dom_file = profile.path().join("dom.html");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=1400,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::from(std::fs::File::create(&dom_file).unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dom = std::fs::read_to_string(&dom_file).unwrap();
    assert!(
        dom.contains(r#"data-rendered="true""#),
        "the report's script did not finish: {}",
        &dom[..dom.len().min(2000)]
    );
    // Throughput, latency over time, two percentile charts, CPU and memory: each has
    // its lines; the answers and people charts their bars; the tables their rows.
    let lines = dom.matches(r#"class="series""#).count();
    assert!(lines >= 12, "{lines} lines drawn");
    assert!(dom.matches(r#"class="bar""#).count() >= 8);
    assert!(dom.matches("<svg").count() >= 8);
    assert!(dom.contains("consistent"));
    assert!(dom.contains("burst_check"));
    assert!(dom.contains("issue p99 at the top rate"));
}

/// Runs of six digits standing alone (not part of an id, a time or a longer number).
fn six_digit_tokens(text: &str) -> std::collections::HashSet<String> {
    let b = text.as_bytes();
    let mut out = std::collections::HashSet::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let alone = |j: Option<&u8>| j.is_none_or(|c| !c.is_ascii_alphanumeric() && *c != b'_');
            if i - start == 6
                && alone(start.checked_sub(1).and_then(|j| b.get(j)))
                && alone(b.get(i))
            {
                out.insert(text[start..i].to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The smoke load with every event sent to a webhook and kept in the audit trail:
/// every webhook is signed, the trail verifies, and none of the codes the people
/// received is in the events, the trail or otpd's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_runs_events_and_audit_trail_carry_no_code() {
    let out = tempfile::tempdir().unwrap();
    let s = Scenario::load(&scenario("smoke")).unwrap();
    let report = otpd_loadtest::run(
        s,
        Options {
            out: out.path().to_path_buf(),
            webhooks: true,
            audit: true,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let summary = report.summary();
    for c in report.invariants.iter().chain(&report.expectations) {
        assert!(c.ok, "{}: {}\n{summary}", c.name, c.detail);
    }
    let w = report.webhooks.as_ref().expect("a webhook report");
    assert_eq!(w.bad_signatures, 0, "{summary}");
    for kind in [
        "verification.sent",
        "verification.approved",
        "verification.delivered",
    ] {
        assert!(
            w.by_type.get(kind).is_some_and(|n| *n > 0),
            "no {kind}: {summary}"
        );
    }
    let codes: std::collections::HashSet<String> =
        std::fs::read_to_string(out.path().join("codes.txt"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
    assert!(codes.len() > 10, "{summary}");
    // The search finds a code wherever one stands alone, as it would in a leak.
    let leak = format!("{{\"code\":\"{}\"}}", codes.iter().next().unwrap());
    assert_eq!(six_digit_tokens(&leak).len(), 1);
    let trail = out.path().join("audit");
    let files = otpd::events::audit::files(&trail).unwrap();
    assert!(!files.is_empty());
    let mut texts = vec![
        std::fs::read_to_string(out.path().join("webhook-events.jsonl")).unwrap(),
        std::fs::read_to_string(out.path().join("otpd.log")).unwrap(),
    ];
    texts.extend(files.iter().map(|f| std::fs::read_to_string(f).unwrap()));
    let events = texts[0].lines().count() as u64;
    assert_eq!(events, w.received, "every webhook body is kept");
    for (i, text) in texts.iter().enumerate() {
        let leaked: Vec<_> = six_digit_tokens(text)
            .intersection(&codes)
            .cloned()
            .collect();
        assert!(leaked.is_empty(), "codes {leaked:?} in text {i}");
    }
    // The trail of the whole run is intact and sealed by its key.
    let checked = otpd::events::audit::verify(&trail, None).unwrap();
    assert!(checked.iter().map(|(_, c)| c.records).sum::<u64>() > events / 2);
}
