//! The command line: every shipped scenario validates, and a broken one is refused
//! with a message naming what is wrong, before anything starts.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_otpd-loadtest"))
}

/// Run `command` to its end, killed (and the test failed, with what it printed) if it
/// has not ended within `limit`: a run that stalls fails its test instead of holding
/// the suite.
fn output_within(mut command: Command, limit: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = command
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {limit:?}; it printed:\n{}\n{}",
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
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
    let mut command = tool();
    command
        .current_dir(cwd.path())
        .args([
            "run",
            "--quiet",
            "--duration",
            "1s",
            "--out",
            "reports/smoke",
        ])
        .arg(&scenario);
    let out = output_within(command, Duration::from_secs(240));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\notpd's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(cwd.path().join("reports/smoke/otpd.log")).unwrap_or_default()
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

/// A target that takes connections and never answers (a stalled otpd, or another
/// program on its port): every request fails after `answer_timeout`, and the run
/// ends on its own schedule with the failures in its report.
#[test]
fn a_target_that_never_answers_ends_the_run_on_time() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("silent.toml");
    std::fs::write(
        &scenario,
        "name = \"silent\"\nduration = \"2s\"\ndrain = \"2s\"\nmax_requests = 20\n\
         answer_timeout = \"500ms\"\nconnections = 4\n\
         rate = { kind = \"constant\", rate = 10 }\n[population]\napp_share = 0.5\n\
         [[carriers]]\nname = \"a\"\n",
    )
    .unwrap();
    let mut command = tool();
    command
        .args([
            "run",
            "--quiet",
            "--url",
            &format!("http://{addr}"),
            "--out",
        ])
        .arg(dir.path().join("report"))
        .arg(&scenario);
    let started = Instant::now();
    let out = output_within(command, Duration::from_secs(90));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(started.elapsed() < Duration::from_secs(60), "{stdout}");
    // The tool's own accounting holds (exit 0); otpd's failure is in the checks.
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("[FAIL] every request answered by otpd — 20 transport errors"),
        "{stdout}"
    );
    let report = std::fs::read_to_string(dir.path().join("report/report.json")).unwrap();
    assert!(report.contains("no answer within 500ms"), "{report}");
}
