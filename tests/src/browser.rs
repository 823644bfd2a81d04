//! Debian's Chromium, headless (scripts/test.sh installs it): a page's DOM after
//! its scripts ran, and a screenshot of it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> &'static str {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is installed (scripts/test.sh installs Debian's package)")
}

/// Run headless Chromium on `url` with `extra` arguments, its standard output into
/// `out`, letting the page's timers run for `virtual_ms` of virtual time.
fn run(url: &str, extra: &[String], out: &Path, virtual_ms: u64) {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1400,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={virtual_ms}"))
        .args(extra)
        .arg(url)
        .stdout(Stdio::from(std::fs::File::create(out).unwrap()))
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
}

/// The DOM of `url` once its scripts have run for `virtual_ms`.
pub fn dom(url: &str, virtual_ms: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dom.html");
    run(url, &["--dump-dom".to_string()], &file, virtual_ms);
    std::fs::read_to_string(file).unwrap()
}

/// A PNG screenshot of `url` at `to`, once its scripts have run for `virtual_ms`.
pub fn screenshot(url: &str, to: &Path, virtual_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    run(
        url,
        &[format!("--screenshot={}", to.display())],
        &dir.path().join("out"),
        virtual_ms,
    );
    let size = std::fs::metadata(to).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "no screenshot at {} ({size} bytes)",
        to.display()
    );
}
