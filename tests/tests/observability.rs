//! The observability kit in `config/observability/`: the alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`); a real
//! Prometheus scraping a real otpd fires `OtpdCarrierDown` when the carrier's SMSC
//! goes away; the Grafana dashboard reads only metrics the README's catalog lists.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use otpd_e2e::process::{OtpdProcess, smsc_for_carrier, with_carrier};
use otpd_simulators::smsc::Smsc;
use serde_json::Value;

fn kit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/observability")
}

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(kit())
        .output()
        .expect("promtool runs (scripts/test.sh installs Debian's prometheus when absent)")
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    for args in [
        ["check", "rules", "otpd-alerts.yml"],
        ["test", "rules", "otpd-alerts.test.yml"],
    ] {
        let out = promtool(&args);
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every `otpd_…` metric name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("otpd_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn the_dashboard_and_the_rules_read_only_catalogued_metrics() {
    let readme = std::fs::read_to_string(kit().join("../../README.md")).unwrap();
    let catalogue = metric_names(&readme[readme.find("### Metrics").expect("a metrics catalog")..]);
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(kit().join("otpd-dashboard.json")).unwrap())
            .expect("the dashboard is JSON");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(target["expr"].as_str().unwrap_or_default());
            exprs.push('\n');
        }
    }
    assert!(!exprs.is_empty(), "the dashboard has queries");
    let rules = std::fs::read_to_string(kit().join("otpd-alerts.yml")).unwrap();
    for (what, text) in [("dashboard", exprs), ("alert rules", rules)] {
        for name in metric_names(&text) {
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum");
            assert!(
                catalogue.contains(base),
                "the {what} read {name}, which the README's catalog does not list"
            );
        }
    }
}

/// Every metric otpd's source names (a `"otpd_…"` literal) is in the catalog.
#[test]
fn the_catalog_lists_every_metric_otpd_exports() {
    let root = kit().join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let catalogue = metric_names(&readme[readme.find("### Metrics").expect("a metrics catalog")..]);
    let mut source = String::new();
    let mut dirs = vec![root.join("dispatcher/src"), root.join("adapters/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                source.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let named: Vec<String> = source
        .split('"')
        .filter(|s| {
            s.len() > 5
                && s.starts_with("otpd_")
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(str::to_string)
        .collect();
    assert!(named.len() > 40, "the source names its metrics");
    for name in named {
        assert!(
            catalogue.contains(&name),
            "{name} is exported but not in the README's catalog"
        );
    }
}

struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Prometheus scraping `target` every second, evaluating the shipped rules
    /// every second.
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = otpd_e2e::redis::free_port();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: otpd\n    static_configs:\n      - targets: ['{target}']\n",
            kit().join("otpd-alerts.yml").display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus runs (scripts/test.sh installs Debian's prometheus when absent)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> Option<Value> {
        otpd_e2e::client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// The alerts firing now, by name and carrier.
    async fn firing(&self) -> Vec<(String, String)> {
        let Some(answer) = self.get("/api/v1/alerts").await else {
            return Vec::new();
        };
        answer["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                (
                    a["labels"]["alertname"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    a["labels"]["carrier"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }

    /// The value of `query` now, when it has one.
    async fn value(&self, query: &str) -> Option<f64> {
        let answer = self.get(&format!("/api/v1/query?query={query}")).await?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_fires_carrier_down_when_the_smsc_goes_away() {
    let smsc = Smsc::start(smsc_for_carrier()).await.unwrap();
    let otpd = OtpdProcess::start(&with_carrier(
        smsc.addr().port(),
        "",
        "binds = 2\nreconnect_min = \"50ms\"\nreconnect_max = \"500ms\"",
    ))
    .await;
    otpd.wait_channels().await;
    let prometheus = Prometheus::start(otpd.base.trim_start_matches("http://"));

    // Scraped: both binds up, the store up, nothing firing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while prometheus.value("sum(otpd_smpp_bind_up)").await != Some(2.0)
        || prometheus.value("otpd_store_up").await != Some(1.0)
    {
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw otpd's binds"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(prometheus.firing().await.is_empty());

    // The SMSC goes away: after the rule's 30 s the alert fires, naming the carrier.
    smsc.stop();
    drop(smsc);
    let down = Instant::now();
    let deadline = down + Duration::from_secs(75);
    loop {
        let firing = prometheus.firing().await;
        if firing.contains(&("OtpdCarrierDown".to_string(), "sim".to_string())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "OtpdCarrierDown never fired; firing: {firing:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = down.elapsed();
    assert!(
        after >= Duration::from_secs(30),
        "fired after {after:?}, before the rule's 30 s"
    );
    println!("OtpdCarrierDown fired {after:?} after the SMSC went away");
}
