//! The otpd under test: started by the tool as a real process (its own binary, a
//! configuration written for the simulators, loopback only), or one already running
//! that the tool is pointed at. Its CPU time and resident memory are read from
//! `/proc` while the run goes on.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::scenario::Scenario;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(
        "no otpd binary at {0} (build it with `cargo build --release -p otpd`, or pass --otpd)"
    )]
    NoBinary(PathBuf),
    #[error("building otpd failed: {0}")]
    Build(String),
    #[error("cannot start {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
    #[error("otpd did not become ready within {0:?}; the end of its log:\n{1}")]
    NotReady(Duration, String),
    #[error("otpd exited ({0}) before it was ready; the end of its log:\n{1}")]
    Exited(String, String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("{0}")]
    Url(String),
}

/// Whether `url` (http, redis…) names a loopback host: the only targets the tool
/// ever loads.
pub fn loopback_url(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The socket address of an `http://` loopback URL.
pub fn http_addr(url: &str) -> Result<SocketAddr, TargetError> {
    let bad = || {
        TargetError::Url(format!(
            "`{url}` is not an http:// URL of a loopback address"
        ))
    };
    if !loopback_url(url) {
        return Err(bad());
    }
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.replace("localhost", "127.0.0.1");
    let with_port =
        if authority.contains("]:") || (!authority.starts_with('[') && authority.contains(':')) {
            authority
        } else {
            format!("{authority}:80")
        };
    with_port.parse().map_err(|_| bad())
}

/// The otpd binary: `explicit`, `$OTPD_BIN`, or the one beside this executable
/// (`target/<profile>/otpd`; also from `target/<profile>/deps/`), built when absent.
pub fn otpd_binary(explicit: Option<&Path>) -> Result<PathBuf, TargetError> {
    if let Some(p) = explicit {
        return p
            .exists()
            .then(|| p.to_path_buf())
            .ok_or_else(|| TargetError::NoBinary(p.to_path_buf()));
    }
    if let Some(p) = std::env::var_os("OTPD_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().map_err(|e| TargetError::Spawn("otpd".into(), e))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("otpd");
    if bin.exists() {
        return Ok(bin);
    }
    // Built from this workspace, with the profile this tool was built with.
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut build = Command::new(cargo);
    build
        .current_dir(&workspace)
        .args(["build", "-p", "otpd", "--bin", "otpd"]);
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .map_err(|e| TargetError::Build(e.to_string()))?;
    if !status.success() {
        return Err(TargetError::Build(format!("cargo exited with {status}")));
    }
    bin.exists()
        .then_some(bin.clone())
        .ok_or(TargetError::NoBinary(bin))
}

/// Where otpd finds the simulators.
pub struct Endpoints {
    /// Carrier name → SMSC address.
    pub smscs: Vec<(String, SocketAddr)>,
    /// Provider → base URL of its mock.
    pub push: Vec<(&'static str, String)>,
    /// Files the push sections point at.
    pub ca_file: PathBuf,
    pub apns_key: PathBuf,
    pub fcm_account: PathBuf,
}

/// The SMPP account every simulated SMSC accepts.
pub const SYSTEM_ID: &str = "otpd";
pub const PASSWORD: &str = "loadtest";
/// What the push mocks accept.
pub const APNS_KEY_ID: &str = "ABC123DEFG";
pub const APNS_TEAM: &str = "TEAM123456";
pub const APP: &str = "es.gob.clave";
pub const FCM_EMAIL: &str = "otpd@clave-load.iam.gserviceaccount.com";
pub const HMS_CLIENT: &str = "104523";
pub const HMS_SECRET: &str = "hms-load-secret";

/// The embedded store's data directory, in the output directory.
pub const DATA_DIR: &str = "otpd-data";

/// otpd's configuration for a scenario and its simulators.
/// What a run adds to otpd's configuration beyond its scenario.
#[derive(Debug, Clone, Default)]
pub struct Additions {
    /// Make the run a configured client (with the API key [`CLIENT_KEY`]).
    pub client: bool,
    /// The client's events go to this webhook.
    pub webhook_url: Option<String>,
    /// Keep the audit trail in the output directory's `audit/`.
    pub audit: bool,
}

/// The API key of the client the run is, with `--webhooks`.
pub const CLIENT_KEY: &str = "otpd-loadtest-client-key";
/// Where the audit trail goes, in the output directory, with `--audit`.
pub const AUDIT_DIR: &str = "audit";
/// The audit trail's signing key (a load test's, base64 of a 32-byte seed).
const AUDIT_KEY: &str = "b3RwZC1sb2FkdGVzdC1hdWRpdC1rZXktMDAwMDAwMDA=";

fn additions(c: &mut String, a: &Additions) {
    if a.client {
        let digest = ring::digest::digest(&ring::digest::SHA256, CLIENT_KEY.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(
            c,
            "[[clients]]\nname = \"loadtest\"\nkey_sha256 = \"{hex}\"\nregistry = \"write\""
        );
        match &a.webhook_url {
            Some(url) => {
                let _ = writeln!(
                    c,
                    "webhook_url = \"{url}\"\nwebhook_secret = \"{}\"\n\n[webhooks]\nconcurrency = 256\nh2c = true\n",
                    crate::webhooks::SECRET
                );
            }
            None => c.push('\n'),
        }
    }
    if a.audit {
        let _ = writeln!(
            c,
            "[audit]\npath = \"{AUDIT_DIR}\"\nsigning_key = \"{AUDIT_KEY}\"\n"
        );
    }
}

pub fn config(scenario: &Scenario, endpoints: &Endpoints, add: &Additions) -> String {
    let o = &scenario.otpd;
    let mut c = String::new();
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let _ = writeln!(
        c,
        "# Written by otpd-loadtest for scenario `{}`.\n\n[codes]\nsecret = \"otpd load test secret, not for production use\"\n",
        scenario.name
    );
    let _ = writeln!(
        c,
        "[purposes.login]\nttl = \"10m\"\ncode_length = 6\nmax_attempts = 5\nmax_sends = 5\nresend_cooldown = \"30s\"\nescalate_after = \"{}\"\n",
        d(o.escalate_after)
    );
    if o.store == "redis" {
        let _ = writeln!(
            c,
            "[store]\nkind = \"redis\"\n\n[redis]\nurls = [\"{}\"]\n",
            o.redis_url.as_deref().unwrap_or_default()
        );
    } else {
        let _ = writeln!(
            c,
            "[store]\nkind = \"{}\"\npath = \"{DATA_DIR}\"\n",
            o.store
        );
    }
    let first = &endpoints.smscs[0].0;
    let _ = writeln!(
        c,
        "[delivery]\nqueue_capacity = {}\nconcurrency = {}\nsms = \"smpp.{first}\"\npush = \"none\"\nretry_backoff = \"100ms\"\n",
        o.queue_capacity, o.delivery_concurrency
    );
    if let Some(delay) = o.max_queue_delay {
        let _ = writeln!(c, "max_queue_delay = \"{}\"", d(delay));
    }
    for (carrier, (name, addr)) in scenario.carriers.iter().zip(&endpoints.smscs) {
        let _ = writeln!(
            c,
            "[channels.smpp.{name}]\nhost = \"{}\"\nport = {}\nsystem_id = \"{SYSTEM_ID}\"\npassword = \"{PASSWORD}\"\nbinds = {}\nwindow = {}\nsource_addr = \"Clave\"\nsource_ton = 5\nsource_npi = 0\nregistered_delivery = true\nresponse_timeout = \"{}\"\nsubmit_timeout = \"10s\"\nreconnect_max = \"2s\"\nqueue_capacity = 100000",
            addr.ip(),
            addr.port(),
            carrier.binds,
            carrier.window,
            d(o.smpp_response_timeout),
        );
        if let Some(tps) = carrier.tps {
            let _ = writeln!(c, "tps = {tps}");
        }
        c.push('\n');
    }
    let names: Vec<String> = scenario
        .carriers
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect();
    let _ = writeln!(c, "[routing]\ndefault = [{}]\n", names.join(", "));
    for carrier in &scenario.carriers {
        let others = scenario
            .carriers
            .iter()
            .filter(|o| o.name != carrier.name)
            .map(|o| format!("\"{}\"", o.name));
        let list: Vec<String> = std::iter::once(format!("\"{}\"", carrier.name))
            .chain(others)
            .collect();
        for prefix in &carrier.prefixes {
            let _ = writeln!(
                c,
                "[[routing.routes]]\nprefix = \"{prefix}\"\ncarriers = [{}]\n",
                list.join(", ")
            );
        }
    }
    let ca = endpoints.ca_file.display();
    let timeout = d(o.push_timeout);
    for (provider, url) in &endpoints.push {
        match *provider {
            "apns" => {
                let _ = writeln!(
                    c,
                    "[push.apns]\nurl = \"{url}\"\nkey_file = \"{}\"\nkey_id = \"{APNS_KEY_ID}\"\nteam_id = \"{APNS_TEAM}\"\ntopic = \"{APP}\"\nca_file = \"{ca}\"\ntimeout = \"{timeout}\"\n",
                    endpoints.apns_key.display()
                );
            }
            "fcm" => {
                let _ = writeln!(
                    c,
                    "[push.fcm]\nurl = \"{url}\"\nservice_account_file = \"{}\"\nca_file = \"{ca}\"\ntimeout = \"{timeout}\"\n",
                    endpoints.fcm_account.display()
                );
            }
            _ => {
                let _ = writeln!(
                    c,
                    "[push.hms]\nurl = \"{url}\"\ntoken_url = \"{url}/oauth2/v3/token\"\nclient_id = \"{HMS_CLIENT}\"\nclient_secret = \"{HMS_SECRET}\"\nca_file = \"{ca}\"\ntimeout = \"{timeout}\"\n",
                );
            }
        }
    }
    // Every simulated person's app calls from this machine's loopback: the limit per
    // caller network of the routes anyone may call would take them all for one.
    let _ = writeln!(c, "[limits]\npublic_ip = \"off\"\n");
    let _ = writeln!(c, "[log]\nlevel = \"warn\"\n");
    additions(&mut c, add);
    if !o.extra.is_empty() {
        let _ = writeln!(c, "# From the scenario's [otpd] extra:\n{}", o.extra);
    }
    c
}

/// A running otpd started by the tool; killed when dropped.
pub struct OtpdProcess {
    pub addr: SocketAddr,
    pub pid: u32,
    child: Child,
    log: PathBuf,
}

impl OtpdProcess {
    /// Start `binary serve --config config_file` on a free loopback port, its log in
    /// `log`; wait until `/healthz` says it is ready with every channel up.
    ///
    /// The port is chosen, then bound by otpd: when something else took it in
    /// between, otpd exits saying so and is started again on another (a few times).
    /// Only a listener that is otpd's own is asked whether it is ready, and each ask
    /// has a bound, so a port answered by another program never holds the run.
    pub async fn start(
        binary: &Path,
        config_file: &Path,
        log: &Path,
        worker_threads: Option<usize>,
        ready_within: Duration,
    ) -> Result<Self, TargetError> {
        let out = std::fs::File::create(log).map_err(|e| TargetError::Write(log.into(), e))?;
        let deadline = Instant::now() + ready_within;
        let mut process = Self::spawn(binary, config_file, &out, log, worker_threads)?;
        let mut attempts = 1;
        loop {
            if let Ok(Some(status)) = process.child.try_wait() {
                if attempts < 5 && process.log_tail().contains("Address already in use") {
                    attempts += 1;
                    process = Self::spawn(binary, config_file, &out, log, worker_threads)?;
                    continue;
                }
                return Err(TargetError::Exited(status.to_string(), process.log_tail()));
            }
            if listens_on(process.pid, process.addr.port()) && process.ready().await {
                return Ok(process);
            }
            if Instant::now() > deadline {
                return Err(TargetError::NotReady(ready_within, process.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One start of otpd on a port free a moment ago, its output appended to `out`.
    fn spawn(
        binary: &Path,
        config_file: &Path,
        out: &std::fs::File,
        log: &Path,
        worker_threads: Option<usize>,
    ) -> Result<Self, TargetError> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| TargetError::Spawn(binary.into(), e))?;
        let handle =
            |f: &std::fs::File| f.try_clone().map_err(|e| TargetError::Write(log.into(), e));
        let dir = log.parent().unwrap_or(Path::new("."));
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--config")
            .arg(config_file)
            .env("OTPD_SERVER__LISTEN", addr.to_string())
            .env("OTPD_CHANNELS__FILE__PATH", dir.join("outbox.jsonl"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(handle(out)?)
            .stderr(handle(out)?);
        if let Some(n) = worker_threads {
            command.env("TOKIO_WORKER_THREADS", n.to_string());
        }
        let child = command
            .spawn()
            .map_err(|e| TargetError::Spawn(binary.into(), e))?;
        Ok(Self {
            addr,
            pid: child.id(),
            child,
            log: log.into(),
        })
    }

    /// Whether `/healthz` answers, within two seconds, that otpd is ready with every
    /// channel up.
    async fn ready(&self) -> bool {
        let http =
            crate::http::Http::new(self.addr, 1, 1).with_answer_within(Duration::from_secs(2));
        http.send(hyper::Method::GET, "/healthz", None)
            .await
            .is_ok_and(|a| {
                a.status == 200
                    && serde_json::from_slice::<serde_json::Value>(&a.body)
                        .ok()
                        .and_then(|v| v["channels"].as_object().cloned())
                        .is_some_and(|c| c.values().all(|s| s == "ok"))
            })
    }

    /// The last lines otpd wrote.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then wait (bounded) for it to finish its graceful shutdown.
    pub async fn stop(mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().ok();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OtpdProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether process `pid` holds a socket listening on loopback `port` (so that what
/// answers there is that process, not another that took the port), from `/proc`.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    // local address, state 0A (listening), inode
                    (f.len() > 9 && f[1].ends_with(&wanted) && f[3] == "0A")
                        .then(|| format!("socket:[{}]", f[9]))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
}

/// CPU time (seconds) and resident memory (bytes) of a process, from `/proc`.
pub fn proc_usage(pid: Option<u32>) -> Option<(f64, u64)> {
    let base = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_string(),
    };
    let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses: the
    // state is field 3; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let statm = std::fs::read_to_string(format!("{base}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        (utime + stime) as f64 / ticks.max(1) as f64,
        pages * page.max(1) as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_targets() {
        assert!(loopback_url("http://127.0.0.1:8080"));
        assert!(loopback_url("redis://user:pw@127.0.0.1:6380/0"));
        assert!(loopback_url("http://[::1]:80/x"));
        assert!(loopback_url("http://localhost:8080"));
        assert!(!loopback_url("http://10.1.2.3:8080"));
        assert!(!loopback_url("http://example.com"));
        assert!(!loopback_url("127.0.0.1:8080"));
        assert_eq!(
            http_addr("http://localhost:8080/").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            http_addr("http://[::1]:9000").unwrap(),
            "[::1]:9000".parse().unwrap()
        );
        assert!(http_addr("https://127.0.0.1:8080").is_err());
    }

    #[test]
    fn this_process_has_a_cpu_time_and_memory() {
        let (cpu, rss) = proc_usage(None).unwrap();
        assert!(cpu >= 0.0);
        assert!(rss > 1 << 20);
    }
}
