//! otpd end to end on the memory store and on the Redis store, in one run, with the
//! Redis commands each verification costs, and `redis-benchmark` on the same server
//! for scale:
//!
//! ```sh
//! cargo run --release -p otpd-benches --bin store-compare -- [SECONDS] [CONNECTIONS]
//! ```
//!
//! Each phase drives otpd's HTTP API over loopback from `CONNECTIONS` clients for
//! `SECONDS` (default 5, 32): first issues (each to a new number; a verification
//! counts once its send is recorded — the channel accepts everything at once), then
//! checks of a wrong code against the verifications issued. It starts its own
//! `redis-server` on a free loopback port and stops it at the end; every loop is
//! bounded by its phase's time.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use otpd::clock::SystemClock;
use otpd::config::{Config, PumpingMode, Rate, StoreKind};
use otpd::{Deps, Server};
use otpd_benches::{Discard, discard_channels_with};

struct RedisProcess {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> anyhow::Result<RedisProcess> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("redis-server must be installed")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while cli(port, &["PING"])
        .map(|o| !o.contains("PONG"))
        .unwrap_or(true)
    {
        anyhow::ensure!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(RedisProcess {
        port,
        child,
        _dir: dir,
    })
}

fn cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `INFO commandstats`: calls per command.
fn command_calls(port: u16) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut calls = BTreeMap::new();
    for line in cli(port, &["INFO", "commandstats"])?.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, stats)) = rest.split_once(':') else {
            continue;
        };
        let n = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        calls.insert(name.to_string(), n);
    }
    Ok(calls)
}

fn config(kind: StoreKind, redis_port: u16) -> Config {
    let mut c = Config::default();
    c.codes.secret = Some(String::from_utf8(otpd_benches::SECRET.to_vec()).expect("UTF-8"));
    c.delivery.queue_capacity = 1 << 16;
    c.log.level = "warn".into();
    c.routing.default = vec![otpd::config::RouteCarrier::Name("discard".into())];
    c.limits.pumping.mode = PumpingMode::Monitor;
    c.limits.subject = Rate::Off;
    c.store.kind = kind;
    c.redis.urls = vec![format!("redis://127.0.0.1:{redis_port}")];
    c
}

struct Phase {
    ops: u64,
    errors: u64,
    seconds: f64,
}

/// `connections` clients each send `request(n)` back to back until `seconds` pass.
async fn drive<F, Fut>(connections: usize, seconds: u64, request: F) -> Phase
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (request, next, errors) = (request.clone(), next.clone(), errors.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if !request(n).await {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    Phase {
        ops: next.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    }
}

struct Run {
    issue: Phase,
    delivered_per_sec: f64,
    check: Phase,
    /// Redis calls per command: before the issues, once they are all sent, after
    /// the checks.
    calls: [BTreeMap<String, u64>; 3],
}

async fn run(
    kind: StoreKind,
    redis_port: u16,
    seconds: u64,
    connections: usize,
) -> anyhow::Result<Run> {
    let discard = Arc::new(Discard::default());
    let channels = discard_channels_with(discard.clone());
    let calls_before = command_calls(redis_port)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Server::start_on(
        listener,
        config(kind, redis_port),
        Deps {
            clock: Arc::new(SystemClock),
            channels: Some(channels.clone()),
            store: None,
            config_file: None,
        },
    )
    .await?;
    let base = format!("http://{}", server.addr());
    otpd_adapters::push::http::install_crypto();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let ids = Arc::new(parking_lot::Mutex::new(Vec::new()));
    // A new number per request: 34 6xx xxx xxx, from a per-run offset.
    let offset = match kind {
        StoreKind::Memory => 600_000_000u64,
        StoreKind::Redis => 650_000_000u64,
    };
    let issue = {
        let (client, base, ids) = (client.clone(), base.clone(), ids.clone());
        drive(connections, seconds, move |n| {
            let (client, base, ids) = (client.clone(), base.clone(), ids.clone());
            async move {
                let body = format!(r#"{{"to":"+34{}","locale":"en"}}"#, offset + n);
                let Ok(r) = client
                    .post(format!("{base}/v1/verifications"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                else {
                    return false;
                };
                if r.status() != 201 {
                    static SHOWN: std::sync::Once = std::sync::Once::new();
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    SHOWN.call_once(|| eprintln!("an issue failed: {status} {text}"));
                    return false;
                }
                let Ok(v) = r.json::<serde_json::Value>().await else {
                    return false;
                };
                if let Some(id) = v["id"].as_str() {
                    ids.lock().push(id.to_string());
                }
                true
            }
        })
        .await
    };
    // End to end: until every issued code has been handed to the channel.
    let issued = ids.lock().len() as u64;
    let started = Instant::now() - Duration::from_secs_f64(issue.seconds);
    let deadline = Instant::now() + Duration::from_secs(30);
    while discard.sent() < issued && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let delivered_per_sec = discard.sent() as f64 / started.elapsed().as_secs_f64();
    // The last answers are recorded just after the channel took them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let calls_sent = command_calls(redis_port)?;

    let ids: Arc<Vec<String>> = Arc::new(std::mem::take(&mut *ids.lock()));
    let check = {
        let (client, base, ids) = (client.clone(), base.clone(), ids.clone());
        drive(connections, seconds, move |n| {
            let (client, base, ids) = (client.clone(), base.clone(), ids.clone());
            async move {
                if ids.is_empty() {
                    return false;
                }
                let id = &ids[(n as usize) % ids.len()];
                client
                    .post(format!("{base}/v1/verifications/{id}/check"))
                    .header("content-type", "application/json")
                    .body(r#"{"code":"000000"}"#)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success() || r.status() == 422)
            }
        })
        .await
    };
    let calls_after = command_calls(redis_port)?;
    server.shutdown();
    server.wait().await?;
    Ok(Run {
        issue,
        delivered_per_sec,
        check,
        calls: [calls_before, calls_sent, calls_after],
    })
}

/// Commands a client sends; the others in `commandstats` run inside scripts.
const TOP_LEVEL: &[&str] = &[
    "evalsha",
    "eval",
    "script|load",
    "xgroup|create",
    "xreadgroup",
    "xautoclaim",
    "xclaim",
    "hgetall",
    "ping",
];

/// Round trips (client commands) and all commands (script ones included) per op.
fn per_op(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, ops: u64) -> String {
    let delta =
        |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    let trips = round_trips(before, after);
    let parts: Vec<String> = TOP_LEVEL
        .iter()
        .filter(|n| delta(n) > 0)
        .map(|n| format!("{n} {:.3}", delta(n) as f64 / ops.max(1) as f64))
        .collect();
    let all = all_commands(before, after);
    format!(
        "{:.3} round trips ({}); {:.2} commands with those run by scripts",
        trips as f64 / ops.max(1) as f64,
        parts.join(", "),
        all as f64 / ops.max(1) as f64
    )
}

fn all_commands(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> u64 {
    after
        .iter()
        .filter(|(k, _)| k.as_str() != "info")
        .map(|(k, n)| n - before.get(k).copied().unwrap_or(0))
        .sum()
}

fn round_trips(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> u64 {
    TOP_LEVEL
        .iter()
        .map(|n| after.get(*n).copied().unwrap_or(0) - before.get(*n).copied().unwrap_or(0))
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let connections: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(32);
    let redis = start_redis()?;

    let memory = run(StoreKind::Memory, redis.port, seconds, connections).await?;
    let on_redis = run(StoreKind::Redis, redis.port, seconds, connections).await?;

    for (name, r) in [("memory", &memory), ("redis", &on_redis)] {
        println!(
            "{name:>6}: issue {:.0}/s ({} ok of {}) · end to end {:.0} verifications/s · check {:.0}/s ({} of {} unexpected)",
            (r.issue.ops - r.issue.errors) as f64 / r.issue.seconds,
            r.issue.ops - r.issue.errors,
            r.issue.ops,
            r.delivered_per_sec,
            r.check.ops as f64 / r.check.seconds,
            r.check.errors,
            r.check.ops,
        );
    }
    let [before, sent, after] = &on_redis.calls;
    let verifications = on_redis.issue.ops - on_redis.issue.errors;
    println!(
        "redis commands per verification issued and sent: {}",
        per_op(before, sent, verifications)
    );
    println!(
        "redis commands per check: {}",
        per_op(sent, after, on_redis.check.ops)
    );
    // Round trips/s during the issue phase against redis-benchmark's requests/s for
    // as many requests, on the same server and machine.
    let total = round_trips(before, sent);
    let commands_per_sec = total as f64 / on_redis.issue.seconds;
    let bench = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string()])
        .args([
            "-c",
            &connections.to_string(),
            "-n",
            &total.max(10_000).to_string(),
        ])
        .args(["-t", "set", "-q"])
        .output()?;
    let bench = String::from_utf8_lossy(&bench.stdout).replace('\r', "\n");
    let line = bench
        .lines()
        .rfind(|l| l.contains("requests per second"))
        .unwrap_or("")
        .trim()
        .to_string();
    let rps: f64 = line
        .split_whitespace()
        .find_map(|w| w.parse::<f64>().ok().filter(|v| *v > 1.0))
        .unwrap_or(0.0);
    println!(
        "redis-benchmark, as many requests ({}, SET, {connections} clients): {line}",
        total.max(10_000)
    );
    if rps > 0.0 {
        println!(
            "otpd's Redis round trips/s (issue phase) over redis-benchmark's requests/s: {:.0} / {:.0} = {:.2}",
            commands_per_sec,
            rps,
            commands_per_sec / rps
        );
    }
    println!(
        "redis over memory, end to end: {:.2}",
        on_redis.delivered_per_sec / memory.delivered_per_sec
    );
    Ok(())
}
