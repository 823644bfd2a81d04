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
//! bounded by its phase's time. `otpd-loadtest run … --store redis` measures the
//! same with SMPP, push and people in the loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use otpd::config::{Config, PumpingMode, Rate, StoreKind};
use otpd::domain::clock::SystemClock;
use otpd::server::Settings;
use otpd::{Deps, Server};
use otpd_benches::{Discard, discard_channels_with};
use otpd_loadtest::redis::{CommandStats, RedisServer};

fn redis_addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// The embedded store's data directory for this run (emptied before and after).
fn data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("otpd-store-compare-{}", std::process::id()))
}

fn config(kind: StoreKind, redis_port: u16) -> Config {
    let mut c = Config::default();
    c.codes.secret = Some(
        String::from_utf8(otpd_benches::SECRET.to_vec())
            .expect("UTF-8")
            .into(),
    );
    c.delivery.queue_capacity = 1 << 16;
    c.log.level = "warn".into();
    c.limits.pumping.mode = PumpingMode::Monitor;
    c.limits.subject = Rate::Off;
    c.store.kind = kind;
    c.store.path = data_dir();
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
    /// Redis's calls per command and otpd's round trips: before the issues, once
    /// they are all sent, after the checks.
    calls: [Snapshot; 3],
}

async fn run(
    kind: StoreKind,
    redis_port: u16,
    seconds: u64,
    connections: usize,
) -> anyhow::Result<Run> {
    let discard = Arc::new(Discard::default());
    let channels = discard_channels_with(discard.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Server::start_on(
        listener,
        Settings::new(config(kind, redis_port))?.route_to("discard")?,
        Deps {
            clock: Arc::new(SystemClock),
            channels: Some(channels.clone()),
            store: None,
            config_file: None,
            events: None,
        },
    )
    .await?;
    let base = format!("http://{}", server.addr());
    otpd_adapters::push::http::install_crypto();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let calls_before = snapshot(&client, &base, redis_port).await?;
    let ids = Arc::new(parking_lot::Mutex::new(Vec::new()));
    // A new number per request: 34 6xx xxx xxx, from a per-run offset.
    let offset = match kind {
        StoreKind::Memory => 600_000_000u64,
        StoreKind::Embedded => 620_000_000u64,
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
    let calls_sent = snapshot(&client, &base, redis_port).await?;

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
                let Ok(r) = client
                    .post(format!("{base}/v1/verifications/{id}/check"))
                    .header("content-type", "application/json")
                    .body(r#"{"code":"000000"}"#)
                    .send()
                    .await
                else {
                    return false;
                };
                let status = r.status();
                if status.is_success() || status == 422 {
                    return true;
                }
                static SHOWN: std::sync::Once = std::sync::Once::new();
                let text = r.text().await.unwrap_or_default();
                SHOWN.call_once(|| eprintln!("a check answered unexpectedly: {status} {text}"));
                false
            }
        })
        .await
    };
    let calls_after = snapshot(&client, &base, redis_port).await?;
    server.shutdown();
    server.wait().await?;
    Ok(Run {
        issue,
        delivered_per_sec,
        check,
        calls: [calls_before, calls_sent, calls_after],
    })
}

/// Redis's command counts, and otpd's count of its round trips to Redis.
type Snapshot = (CommandStats, u64);

async fn snapshot(client: &reqwest::Client, base: &str, port: u16) -> anyhow::Result<Snapshot> {
    let stats = CommandStats::read(redis_addr(port))?;
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok((stats, otpd_loadtest::redis::round_trips_in(&metrics)))
}

/// Round trips and the commands Redis ran (scripts' included) per op.
fn per_op(before: &Snapshot, after: &Snapshot, ops: u64) -> String {
    let per = |n: u64| n as f64 / ops.max(1) as f64;
    let parts: Vec<String> = after
        .0
        .by_command_since(&before.0)
        .into_iter()
        .map(|(n, d)| format!("{n} {:.2}", per(d)))
        .collect();
    format!(
        "{:.3} round trips; {:.2} commands run ({})",
        per(after.1 - before.1),
        per(after.0.commands_since(&before.0)),
        parts.join(", "),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let connections: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(32);
    let redis = RedisServer::start()?;
    let port = redis.addr.port();

    let memory = run(StoreKind::Memory, port, seconds, connections).await?;
    let _ = std::fs::remove_dir_all(data_dir());
    let embedded = run(StoreKind::Embedded, port, seconds, connections).await?;
    let _ = std::fs::remove_dir_all(data_dir());
    let on_redis = run(StoreKind::Redis, port, seconds, connections).await?;

    for (name, r) in [
        ("memory", &memory),
        ("embedded", &embedded),
        ("redis", &on_redis),
    ] {
        println!(
            "{name:>8}: issue {:.0}/s ({} ok of {}) · end to end {:.0} verifications/s · check {:.0}/s ({} of {} unexpected)",
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
    let total = sent.1 - before.1;
    let commands_per_sec = total as f64 / on_redis.issue.seconds;
    let requests = total.max(10_000);
    match otpd_loadtest::redis::benchmark(redis.addr, requests, connections) {
        Some(rps) => println!(
            "redis-benchmark, as many requests ({requests}, SET, {connections} clients): {rps:.0}/s; otpd's Redis round trips/s (issue phase) over it: {commands_per_sec:.0} / {rps:.0} = {:.2}",
            commands_per_sec / rps
        ),
        None => println!("redis-benchmark is not installed: no comparison"),
    }
    println!(
        "redis over memory, end to end: {:.2}",
        on_redis.delivered_per_sec / memory.delivered_per_sec
    );
    println!(
        "embedded (on disk, store.sync = fsync) over memory only, end to end: {:.2}",
        embedded.delivered_per_sec / memory.delivered_per_sec
    );
    Ok(())
}
