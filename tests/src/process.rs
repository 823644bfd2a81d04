//! otpd as a real process: started from its binary with a configuration file, on a
//! free loopback port, and killed however a test needs (SIGKILL included). Killed
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis::free_port;

pub struct OtpdProcess {
    pub base: String,
    pub pid: u32,
    child: Child,
    dir: tempfile::TempDir,
    open_files: Option<u32>,
    /// Over TLS: the client that trusts otpd's certificate (`base` is `https://`).
    tls_client: Option<reqwest::Client>,
}

/// The `otpd` binary of this build. `cargo test --workspace` builds it beside the
/// test executables (`target/<profile>/otpd`); when it is not there (one package
/// tested alone), it is built.
pub fn otpd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("OTPD_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("the test executable");
    // target/<profile>/deps/<test> → target/<profile>/otpd
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("otpd");
    if !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "otpd", "--bin", "otpd"])
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building otpd failed");
    }
    assert!(bin.exists(), "no otpd binary at {}", bin.display());
    bin
}

impl OtpdProcess {
    /// Start `otpd serve` on `config` (TOML; `[server] listen` is set here) and wait
    /// until it answers `/healthz` with 200.
    pub async fn start(config: &str) -> Self {
        Self::start_limited(config, None).await
    }

    /// [`OtpdProcess::start`], allowed at most `open_files` file descriptors
    /// (`ulimit -n`) when given.
    pub async fn start_limited(config: &str, open_files: Option<u32>) -> Self {
        Self::start_full(config, open_files, |_| {}).await
    }

    /// [`OtpdProcess::start`], after `prepare` has set up otpd's directory (a
    /// symbolic link for its outbox, say).
    pub async fn start_prepared(config: &str, prepare: impl FnOnce(&Path)) -> Self {
        Self::start_full(config, None, prepare).await
    }

    /// [`OtpdProcess::start`] for a configuration with `[server.tls]`: `client`
    /// (one that trusts otpd's certificate) is the one that waits for it, and `base`
    /// is `https://127.0.0.1:<port>`.
    pub async fn start_tls(config: &str, client: reqwest::Client) -> Self {
        Self::start_over(config, None, |_| {}, Some(client)).await
    }

    async fn start_full(
        config: &str,
        open_files: Option<u32>,
        prepare: impl FnOnce(&Path),
    ) -> Self {
        Self::start_over(config, open_files, prepare, None).await
    }

    async fn start_over(
        config: &str,
        open_files: Option<u32>,
        prepare: impl FnOnce(&Path),
        tls_client: Option<reqwest::Client>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("otpd.toml"), config).expect("config written");
        prepare(dir.path());
        let (child, base) = spawn(dir.path(), open_files);
        let mut process = Self {
            base,
            pid: child.id(),
            child,
            dir,
            open_files,
            tls_client,
        };
        process.over_tls();
        process.wait_healthy().await;
        process
    }

    /// Start otpd again (after [`OtpdProcess::kill9`], say) in the same directory,
    /// on the same configuration and data, on a new port.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, base) = spawn(self.dir.path(), self.open_files);
        self.pid = child.id();
        self.child = child;
        self.base = base;
        self.over_tls();
        self.wait_healthy().await;
    }

    /// `base` in the scheme otpd speaks.
    fn over_tls(&mut self) {
        if self.tls_client.is_some() {
            self.base = self.base.replacen("http://", "https://", 1);
        }
    }

    /// The directory otpd runs in (its configuration, log, outbox and, on the
    /// embedded store, its data directory `otpd-data`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Wait until this process answers `/healthz`. A free port can be taken by
    /// another test between its choice and otpd's bind (and that test's otpd would
    /// answer in its place): when ours exits for it, start again on another port.
    async fn wait_healthy(&mut self) {
        let client = self.tls_client.clone().unwrap_or_else(crate::client);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut tries = 0;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                tries += 1;
                assert!(
                    tries < 5 && self.log().contains("Address already in use"),
                    "otpd exited; its log:\n{}",
                    self.log()
                );
                let (child, base) = spawn(self.dir.path(), self.open_files);
                self.pid = child.id();
                self.child = child;
                self.base = base;
                self.over_tls();
                continue;
            }
            if listens(self.pid, &self.base)
                && let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "otpd did not become healthy; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until `/healthz` reports every channel up (carriers bound).
    pub async fn wait_channels(&self) {
        let client = crate::client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await
                && let Ok(body) = r.json::<serde_json::Value>().await
                && body["channels"]
                    .as_object()
                    .is_some_and(|c| c.values().all(|s| s == "ok"))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "channels never came up; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the process wrote to stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("otpd.log")).unwrap_or_default()
    }

    /// SIGHUP: read the configuration again.
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -HUP {}", self.pid);
    }

    /// SIGTERM: a graceful shutdown.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {}", self.pid);
    }

    /// Wait (at most `within`) for the process to exit; `None` if it is still running.
    pub async fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET` every verification of `ids` (number → id): number → what it answered.
    pub async fn records(
        &self,
        ids: &std::collections::HashMap<String, String>,
    ) -> std::collections::HashMap<String, serde_json::Value> {
        let client = crate::client();
        let mut records = std::collections::HashMap::new();
        for (number, id) in ids {
            let v: serde_json::Value = client
                .get(format!("{}/v1/verifications/{id}", self.base))
                .send()
                .await
                .expect("an answer")
                .json()
                .await
                .expect("JSON");
            records.insert(number.clone(), v);
        }
        records
    }

    /// [`OtpdProcess::records`] once no send of `ids` is queued any more (within
    /// `within`, else the test fails with this process's log).
    pub async fn records_once_none_queued(
        &self,
        ids: &std::collections::HashMap<String, String>,
        within: Duration,
    ) -> std::collections::HashMap<String, serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let records = self.records(ids).await;
            let queued = records
                .values()
                .filter(|v| v["delivery"]["state"] == "queued")
                .count();
            if queued == 0 {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "{queued} of {} still queued; log:\n{}",
                ids.len(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no shutdown, no flushing, nothing.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether process `pid` holds the listening socket of `base`'s port (so that what
/// answers there is this process, not another test's that took the port).
fn listens(pid: u32, base: &str) -> bool {
    base.rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .is_some_and(|port| otpd_loadtest::target::listens_on(pid, port))
}

/// `otpd serve` on `dir`'s `otpd.toml`, in `dir`, on a free loopback port, its
/// output appended to `dir`'s `otpd.log`: the child and its base URL.
fn spawn(dir: &Path, open_files: Option<u32>) -> (Child, String) {
    let port = free_port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("otpd.log"))
        .expect("log file");
    let mut command = match open_files {
        None => Command::new(otpd_binary()),
        Some(n) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(otpd_binary());
            sh
        }
    };
    let child = command
        .arg("serve")
        .arg("--config")
        .arg(dir.join("otpd.toml"))
        .env("OTPD_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("OTPD_CHANNELS__FILE__PATH", dir.join("outbox.jsonl"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("otpd starts");
    (child, format!("http://127.0.0.1:{port}"))
}

impl Drop for OtpdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The SMSC simulator's configuration for [`with_carrier`]: it accepts the account
/// (otpd/secret) that node binds with.
pub fn smsc_for_carrier() -> otpd_simulators::smsc::SmscConfig {
    otpd_simulators::smsc::SmscConfig {
        accounts: vec![otpd_simulators::smsc::Account {
            system_id: "otpd".into(),
            password: "secret".into(),
        }],
        ..Default::default()
    }
}

/// The configuration of a node that sends SMS to one SMPP carrier, `sim`, at
/// 127.0.0.1:`port` (account otpd/secret): `sections` adds tables (store, server,
/// …), `carrier` adds keys to the carrier's table (binds, window, …). Every node
/// of a test shares the code secret.
pub fn with_carrier(port: u16, sections: &str, carrier: &str) -> String {
    format!(
        r#"
[codes]
secret = "one secret for every node, at least 32 bytes long"
default_locale = "en"

{sections}

[delivery]
sms = "smpp.sim"
concurrency = 8

[channels.smpp.sim]
host = "127.0.0.1"
port = {port}
system_id = "otpd"
password = "secret"
source_addr = "Clave"
registered_delivery = true
{carrier}

[log]
level = "warn"
"#
    )
}
