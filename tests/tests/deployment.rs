//! The deployment kit: the systemd unit in `config/systemd/` is one that systemd
//! itself accepts (`systemd-analyze verify`) and rates as hardened
//! (`systemd-analyze security --offline`, exposure at most 2.0 of 10).

use std::path::{Path, PathBuf};
use std::process::Command;

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/systemd/otpd.service")
}

/// The unit as shipped, but for its binary: this build's, where the unit says
/// `/usr/bin/otpd` (verify refuses a unit whose command does not exist).
fn unit_with_this_build(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    let exec = "ExecStart=/usr/bin/otpd ";
    assert!(unit.contains(exec), "the unit starts /usr/bin/otpd");
    let binary = otpd_e2e::process::otpd_binary();
    let unit = unit.replace(exec, &format!("ExecStart={} ", binary.display()));
    let path = dir.join("otpd.service");
    std::fs::write(&path, unit).unwrap();
    path
}

fn systemd_analyze(args: &[&str], unit: &Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze runs (scripts/test.sh installs systemd when absent)")
}

#[test]
fn the_systemd_unit_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_this_build(dir.path());
    let out = systemd_analyze(&["verify"], &unit);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify refused the unit:\n{said}"
    );
    // A misspelt or unknown setting is only a warning: none may be left.
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warned:\n{said}"
    );
}

#[test]
fn the_systemd_unit_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_this_build(dir.path());
    let out = systemd_analyze(&["security", "--offline=true", "--threshold=20"], &unit);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exposure above 2.0:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .expect("an overall exposure level");
    println!("{overall}");
    // Each of these is what the unit promises in its comments.
    for setting in [
        "NoNewPrivileges=",
        "ProtectSystem=",
        "PrivateDevices=",
        "RestrictAddressFamilies=~AF_PACKET",
    ] {
        let line = report
            .lines()
            .find(|l| l.contains(setting))
            .unwrap_or_else(|| panic!("{setting} is rated:\n{report}"));
        assert!(line.starts_with('✓'), "{setting} is not in force: {line}");
    }
}
