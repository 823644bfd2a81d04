//! The operator console, in headless Chromium against a real otpd process and its
//! SMPP carrier: the page is served to anyone but shows nothing without an admin
//! key; with one it goes live, its values follow what happens (codes sent show in
//! the carrier's row), and a screenshot is written for the record.

use std::time::{Duration, Instant};

use otpd_e2e::browser;
use otpd_e2e::process::{OtpdProcess, smsc_for_carrier, with_carrier};
use otpd_simulators::smsc::Smsc;

const CLIENTS: &str = r#"
[[clients]]
name = "ops"
key_sha256 = "KEY_OPS"
admin = true

[[clients]]
name = "sede"
key_sha256 = "KEY_SEDE"
"#;

fn sha256(key: &str) -> String {
    String::from(otpd::policy::clients::hash_key(key))
}

/// The number the carrier row shows as sent in total, from the dumped DOM.
fn sent_total(dom: &str) -> u64 {
    let at = dom.find("data-sent=\"").expect("a carrier row") + "data-sent=\"".len();
    dom[at..].split('"').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_goes_live_with_an_admin_key_and_follows_what_happens() {
    let smsc = Smsc::start(smsc_for_carrier()).await.unwrap();
    let clients = CLIENTS
        .replace("KEY_OPS", &sha256("key-of-ops"))
        .replace("KEY_SEDE", &sha256("key-of-sede"));
    let config = with_carrier(smsc.addr().port(), "", "binds = 2")
        .replace("[log]", &format!("{clients}\n[log]"));
    let otpd = OtpdProcess::start(&config).await;
    otpd.wait_channels().await;
    let client = otpd_e2e::client();

    // The page itself is anyone's: it holds no data, and forbids framing.
    let page = client
        .get(format!("{}/console", otpd.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    // Its data is the admin's alone.
    let overview = |key: &'static str| {
        client
            .get(format!("{}/v1/admin/overview", otpd.base))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(overview("key-of-sede").await.unwrap().status(), 403);
    assert_eq!(overview("key-of-ops").await.unwrap().status(), 200);

    let console = format!("{}/console", otpd.base);
    let tokio_dom = |url: String| tokio::task::spawn_blocking(move || browser::dom(&url, 7_000));
    // Without a key, or with a client's that is not an admin's: nothing shown.
    let dom = tokio_dom(console.clone()).await.unwrap();
    assert!(
        dom.contains("admin key needed"),
        "{}",
        &dom[..dom.len().min(3000)]
    );
    let dom = tokio_dom(format!("{console}#key=key-of-sede"))
        .await
        .unwrap();
    assert!(dom.contains("admin key needed"));
    assert!(
        !dom.contains("data-carrier=\"sim\""),
        "a non-admin saw the carriers"
    );

    // An admin's: live, polled more than once, the carrier and its binds shown.
    let admin = format!("{console}#key=key-of-ops");
    let before = tokio_dom(admin.clone()).await.unwrap();
    assert!(
        before.contains(">live<"),
        "{}",
        &before[..before.len().min(3000)]
    );
    let updates: u32 = before
        .split("data-updates=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(updates >= 2, "polled {updates} times");
    assert!(before.contains("data-carrier=\"sim\""));
    assert!(before.contains("2 / 2"), "both binds shown up");
    let sent_before = sent_total(&before);

    // Codes go out: the console shows them.
    for i in 0..5 {
        let answer = client
            .post(format!("{}/v1/verifications", otpd.base))
            .bearer_auth("key-of-sede")
            .json(&serde_json::json!({"to": format!("+3460050000{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while smsc.received().len() < 5 {
        assert!(
            Instant::now() < deadline,
            "the codes did not reach the SMSC"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = tokio_dom(admin.clone()).await.unwrap();
    assert_eq!(
        sent_total(&after),
        sent_before + 5,
        "the console did not follow"
    );
    assert!(after.contains("delivered"), "receipts by outcome shown");

    // A helpdesk's lookup: the subject's verifications, the number masked.
    let asked = client
        .post(format!("{}/v1/verifications", otpd.base))
        .bearer_auth("key-of-sede")
        .json(&serde_json::json!({"to": "+34600500077", "subject": "12345678Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 201);
    let id = asked.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let looked = tokio_dom(format!("{console}#key=key-of-ops&subject=12345678z"))
        .await
        .unwrap();
    let row = looked
        .split(&format!("<tr data-id=\"{id}\">"))
        .nth(1)
        .unwrap_or_else(|| panic!("no row for {id}: {}", &looked[..looked.len().min(3000)]))
        .split("</tr>")
        .next()
        .unwrap();
    assert!(
        row.contains("+34*******77") && row.contains("sede"),
        "{row}"
    );
    assert!(!looked.contains("600500077"), "a whole number shown");

    // A screenshot, for the record.
    let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let shot = png.clone();
    let with_lookup = format!("{admin}&subject=12345678Z");
    tokio::task::spawn_blocking(move || browser::screenshot(&with_lookup, &shot, 7_000))
        .await
        .unwrap();
    println!("console screenshot: {}", png.display());
}
