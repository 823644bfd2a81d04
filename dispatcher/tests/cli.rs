//! The `otpd` binary as an operator runs it: embedded defaults, bad configuration,
//! logs that never carry a code, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const EX_CONFIG: i32 = 78;

fn otpd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_otpd"));
    // Only what a test sets: no OTPD_* from the surrounding environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("OTPD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A running `otpd serve`, its address read from its log.
struct Running {
    child: Child,
    addr: String,
    log: mpsc::Receiver<String>,
}

fn serve(dir: &std::path::Path, extra_env: &[(&str, &str)]) -> Running {
    serve_args(dir, &[], extra_env)
}

fn serve_args(dir: &std::path::Path, args: &[&str], extra_env: &[(&str, &str)]) -> Running {
    let mut cmd = otpd();
    cmd.arg("serve")
        .args(args)
        .current_dir(dir)
        .env("OTPD_SERVER__LISTEN", "127.0.0.1:0")
        .env("OTPD_LOG__LEVEL", "debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("otpd starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("otpd logs its address");
        if let Some(pos) = line.find("addr=") {
            let rest = &line[pos + 5..];
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != ':')
                .to_string();
        }
    };
    Running {
        child,
        addr,
        log: rx,
    }
}

/// A tiny HTTP/1.1 client over a blocking socket: keeps this test free of an async
/// runtime and of any client library between it and the binary.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn wait_for_line(path: &std::path::Path) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.lines().next().map(str::to_string))
        {
            return serde_json::from_str(&line).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "no outbox line");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(unix)]
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "otpd did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(unix)]
#[test]
fn serve_without_arguments_issues_and_checks_codes_and_never_logs_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = serve(dir.path(), &[]);
    let (status, body) = http(
        &running.addr,
        "POST",
        "/v1/verifications",
        r#"{"to":"+34600123456"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The embedded default writes to ./otpd-outbox.jsonl.
    let line = wait_for_line(&dir.path().join("otpd-outbox.jsonl"));
    let code: String = line["text"].as_str().unwrap().chars().take(6).collect();
    let (status, body) = http(
        &running.addr,
        "POST",
        &format!("/v1/verifications/{id}/check"),
        &format!(r#"{{"code":"{code}"}}"#),
    );
    assert_eq!((status, body.contains("approved")), (200, true), "{body}");

    let exit = terminate(&mut running.child);
    assert!(exit.success(), "graceful exit, got {exit}");
    let log: Vec<String> = running.log.try_iter().collect();
    let log = log.join("\n");
    assert!(log.contains("otpd stopped"), "{log}");
    assert!(!log.contains(&code), "the code appeared in the log:\n{log}");
}

#[test]
fn bad_configuration_exits_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[server]\nport = 80\n", "port"),
        (
            "[purposes.login]\ncode_length = 12\n",
            "purposes.login.code_length",
        ),
        ("[purposes.login]\nttl = 10\n", "purposes.login.ttl"),
        ("this is not toml", "invalid configuration"),
    ];
    for (text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = otpd()
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(EX_CONFIG), "{text:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{text:?}: {stderr}");
    }
    let out = otpd()
        .args(["serve"])
        .env("OTPD_DELIVERY__QUEUE_CAPACITY", "-1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OTPD_DELIVERY__QUEUE_CAPACITY"));
}

#[test]
fn check_config_accepts_the_shipped_file_and_hides_the_secret() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/otpd.toml");
    let out = otpd()
        .args(["check-config", "--config"])
        .arg(&shipped)
        .env(
            "OTPD_SECRET",
            "a secret that must not be printed, 32+ bytes",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"login\""), "{stdout}");
    assert!(!stdout.contains("must not be printed"), "{stdout}");
}

/// `otpd check-config` printed SMPP, Redis and HMS credentials: every one is redacted
/// now, and so is a credential in a configuration error.
#[test]
fn check_config_prints_no_credential() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("otpd.toml");
    std::fs::write(
        &file,
        r#"
[store]
kind = "redis"
[redis]
urls = ["redis://otpd:redis-url-pass@127.0.0.1:6379/0"]
username = "otpd"
password = "redis-acl-pass"
[channels.smpp.movistar]
system_id = "otpd"
password = "smpp-pw"
[delivery]
sms = "smpp.movistar"
[push.hms]
url = "https://127.0.0.1:9"
token_url = "https://127.0.0.1:9/token"
client_id = "104523"
client_secret = "hms-client-secret"
"#,
    )
    .unwrap();
    let check = |file: &std::path::Path| {
        otpd()
            .args(["check-config", "--config"])
            .arg(file)
            .env("OTPD_SECRET", "the server secret, 32 bytes or more!")
            .output()
            .unwrap()
    };
    let out = check(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for secret in [
        "redis-url-pass",
        "redis-acl-pass",
        "smpp-pw",
        "hms-client-secret",
        "the server secret",
    ] {
        assert!(!stdout.contains(secret), "{secret} printed: {stdout}");
    }
    assert!(stdout.contains("<redacted>"), "{stdout}");
    // A broken URL and a credential of the wrong type: named, not shown.
    std::fs::write(
        &file,
        "[store]\nkind = \"redis\"\n[redis]\nurls = [\"http://otpd:url-pass@127.0.0.1\"]\n",
    )
    .unwrap();
    let out = check(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{stderr}");
    assert!(
        stderr.contains("redis.urls[0]") && !stderr.contains("url-pass"),
        "{stderr}"
    );
    std::fs::write(
        &file,
        "[channels.smpp.a]\nsystem_id = \"x\"\npassword = 12345678\n",
    )
    .unwrap();
    let out = check(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{stderr}");
    assert!(
        stderr.contains("password") && !stderr.contains("12345678"),
        "{stderr}"
    );
}

#[test]
fn hash_key_makes_keys_and_the_digests_the_config_holds() {
    let out = otpd().args(["hash-key", "--key", "abc"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "key_sha256 = \"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\""
    );
    let out = otpd().arg("hash-key").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("key = "))
        .expect("a key line");
    let digest = text
        .lines()
        .find_map(|l| l.strip_prefix("key_sha256 = "))
        .expect("a digest line");
    assert!(key.starts_with("otpd_") && key.len() == 69, "{text}");
    assert_eq!(
        digest.trim_matches('"'),
        otpd::policy::clients::hash_key(key).to_string()
    );
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = otpd()
        .arg("serve")
        .current_dir(dir.path())
        .env("OTPD_SERVER__LISTEN", &addr)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&addr), "{stderr}");
    // Named once, not once per layer of the error.
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn simulate_smsc_listens_on_loopback_and_stops_by_itself() {
    let out = otpd()
        .args([
            "simulate",
            "smsc",
            "--listen",
            "127.0.0.1:0",
            "--seconds",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("smsc listening on 127.0.0.1:"),
        "{stdout}"
    );
}

#[test]
fn simulate_smsc_names_bad_arguments() {
    for (args, word) in [
        (vec!["--latency-ms", "fast"], "--latency-ms"),
        (vec!["--ids", "octal"], "--ids"),
        (vec!["--account", "nopassword"], "--account"),
        (
            vec!["--undeliverable-percent", "150"],
            "--undeliverable-percent",
        ),
    ] {
        let out = otpd()
            .args([
                "simulate",
                "smsc",
                "--listen",
                "127.0.0.1:0",
                "--seconds",
                "1",
            ])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(word), "{args:?}: {stderr}");
    }
}

#[test]
fn simulate_push_serves_apns_over_tls_to_a_real_client() {
    use otpd_adapters::apns::{ApnsConfig, ApnsPusher};
    use otpd_adapters::push::http::HttpOptions;
    use otpd_adapters::push::{Notification, Outcome, Pusher};

    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../adapters/tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let key = format!(
        "ABC123DEFG:TEAM123456:{}",
        fixtures.join("apns-test-key.pub").display()
    );
    let mut child = otpd()
        .args([
            "simulate",
            "push",
            "--listen",
            "127.0.0.1:0",
            "--seconds",
            "20",
        ])
        .args(["--apns-key", &key, "--ca-out", ca.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("push mock listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(async {
        let apns = ApnsPusher::new(ApnsConfig {
            base_url: url,
            key_pem: std::fs::read(fixtures.join("apns-test-key.p8")).unwrap(),
            key_id: "ABC123DEFG".into(),
            team_id: "TEAM123456".into(),
            default_topic: Some("es.gob.clave".into()),
            http: HttpOptions {
                ca_pem: Some(std::fs::read(&ca).unwrap()),
                ..HttpOptions::default()
            },
        })
        .unwrap();
        apns.push(
            &Notification {
                token: &"ab".repeat(32),
                title: "t",
                body: "b",
                verification_id: "vf_1",
                expires_at: 0,
                ttl_secs: 60,
                match_code: None,
                approval: None,
                ack_token: None,
            },
            "",
        )
        .await
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
}

#[test]
fn simulate_push_names_bad_arguments() {
    for (args, word) in [
        (vec!["--apns-key", "onlyone"], "--apns-key"),
        (
            vec!["--apns-key", "A:B:/no/such/file.pem"],
            "/no/such/file.pem",
        ),
        (vec!["--hms-client", "id-without-secret"], "--hms-client"),
        (vec!["--throttle-percent", "150"], "--throttle-percent"),
    ] {
        let out = otpd()
            .args([
                "simulate",
                "push",
                "--listen",
                "127.0.0.1:0",
                "--seconds",
                "1",
            ])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(word), "{args:?}: {stderr}");
    }
}

/// The outbox text of verification `id`, waiting (bounded) for it.
fn outbox_text(path: &std::path::Path, id: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = std::fs::read_to_string(path).ok().and_then(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["verification_id"] == id)
                .map(|v| v["text"].as_str().unwrap().to_string())
        });
        if let Some(text) = found {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no outbox line for {id}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_log(running: &Running, needle: &str) -> String {
    loop {
        let line = running
            .log
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

#[cfg(unix)]
#[test]
fn sighup_reloads_templates_and_keeps_the_old_ones_when_the_file_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("otpd.toml");
    let write = |text: &str| {
        std::fs::write(
            &file,
            format!(
                "[[messages.templates]]\npurpose = \"*\"\nlocale = \"en\"\ntext = \"{text}\"\n"
            ),
        )
        .unwrap()
    };
    write("First {code}");
    let mut running = serve_args(dir.path(), &["--config", "otpd.toml"], &[]);
    let outbox = dir.path().join("otpd-outbox.jsonl");
    let issue = |to: &str| {
        let (status, body) = http(
            &running.addr,
            "POST",
            "/v1/verifications",
            &format!("{{\"to\": \"{to}\"}}"),
        );
        assert_eq!(status, 201, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["id"].as_str().unwrap().to_string()
    };
    let hup = |pid: u32| {
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
    };
    // A British number gets English, by its country.
    let id = issue("+44 7400 123456");
    assert!(outbox_text(&outbox, &id).starts_with("First "));

    write("Second {code}");
    hup(running.child.id());
    wait_for_log(&running, "configuration reloaded");
    let id = issue("+44 7400 123457");
    assert!(outbox_text(&outbox, &id).starts_with("Second "));

    write("Third {pin}");
    hup(running.child.id());
    let refused = wait_for_log(&running, "reload refused");
    assert!(refused.contains("pin"), "{refused}");
    let id = issue("+44 7400 123458");
    assert!(
        outbox_text(&outbox, &id).starts_with("Second "),
        "the old templates stay"
    );
    assert!(terminate(&mut running.child).success());
}
