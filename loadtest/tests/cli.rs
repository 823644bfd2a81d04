//! The command line: every shipped scenario validates, and a broken one is refused
//! with a message naming what is wrong, before anything starts.

use std::path::Path;
use std::process::Command;

fn tool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_otpd-loadtest"))
}

#[test]
fn every_shipped_scenario_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/loadtest");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = tool().arg("check").arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            seen.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    seen.sort();
    for name in [
        "abuse",
        "carrier-outage",
        "national-peak",
        "national-peak-sms",
        "push-degraded",
        "smoke",
    ] {
        assert!(
            seen.iter().any(|s| s == name),
            "no {name}.toml in config/loadtest"
        );
    }
}

#[test]
fn a_broken_scenario_is_refused_with_its_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "name = \"x\"\nduration = \"5s\"\nmax_requests = 10\nrate = { kind = \"constant\", rate = -1 }\n[[carriers]]\nname = \"a\"",
            "rate.rate",
        ),
        (
            "name = \"x\"\nduration = \"5s\"\nmax_requests = 10\nrate = { kind = \"constant\", rate = 1 }\ncarriers = []",
            "carriers",
        ),
        ("name = \"x\"\nduration = \"soon\"", "duration"),
        ("this is not toml", "expected"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        for args in [vec!["check"], vec!["run", "--quiet"]] {
            let out = tool().args(&args).arg(&path).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{args:?} {text}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }
    let out = tool()
        .arg("check")
        .arg(dir.path().join("absent.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let out = tool()
        .args(["run", "--quiet", "--url", "http://10.0.0.1:8080"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/loadtest/smoke.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

/// The README's command shape: a scenario by path and the report in a directory
/// relative to where the tool runs (otpd itself runs inside that directory).
#[test]
fn run_writes_its_report_to_a_relative_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/loadtest/smoke.toml");
    let out = tool()
        .current_dir(cwd.path())
        .args([
            "run",
            "--quiet",
            "--duration",
            "1s",
            "--out",
            "reports/smoke",
        ])
        .arg(&scenario)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("[ ok ] every delivered code matched to its request"),
        "{stdout}"
    );
    for file in [
        "report.html",
        "report.json",
        "summary.txt",
        "otpd.toml",
        "otpd.log",
    ] {
        assert!(
            cwd.path().join("reports/smoke").join(file).exists(),
            "{file}"
        );
    }
}
