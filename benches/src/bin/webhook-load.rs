//! One client's webhook at full speed: COUNT events put in a log, then delivered by
//! otpd's deliverer over cleartext HTTP/2 (`webhooks.h2c`) to the load tool's
//! receiver on loopback, which checks every signature. Prints the rate and the CPU
//! the deliverer's thread spent per event — the figure that decides what webhooks
//! cost at the national peak, measured without the rest of a load run around it.
//!
//! ```sh
//! cargo run --release -p otpd-benches --bin webhook-load -- [COUNT] [CONCURRENCY]
//! ```
//! The deliverer runs on a thread and single-threaded runtime of its own, as in
//! otpd (`otpd-webhooks`); the receiver on another. Bounded: COUNT at most 2 000 000,
//! and no run goes on longer than two minutes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use otpd::domain::clock::{Clock, SystemClock};
use otpd::events::webhook::{Deliverer, Target, Transport, WebhookSettings};
use otpd::secrets::webhook::WebhookSecret;
use otpd::store::events::{EventLog, MemoryLog, NewEvent};

/// otpd's allocator, so that the figure is otpd's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MAX_COUNT: u64 = 2_000_000;
const MAX_RUN: Duration = Duration::from_secs(120);
const CLIENT: &str = "bench";

/// CPU time (user and system) of the calling thread.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis, from the state (field 3 of
    // proc(5)): utime and stime (fields 14 and 15) are the 12th and 13th, in clock
    // ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = tick(11) + tick(12);
    Duration::from_millis(ticks * 10)
}

/// An event's JSON as otpd writes it (a `verification.delivered`, without its id).
fn payload(i: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"type":"verification.delivered","created_at":"2026-12-07T15:00:00.000Z","data":{{"verification_id":"vf_{i:032x}","status":"pending","send":1,"channel":"sms","carrier":"movistar","to":"+34*******{:02}"}}}}"#,
        i % 100
    ))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200_000);
    let concurrency: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(256);
    anyhow::ensure!(
        (1..=MAX_COUNT).contains(&count),
        "COUNT is 1 to {MAX_COUNT}"
    );

    // The receiver, on a runtime of its own.
    let out = tempfile::tempdir()?;
    let receiving = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let receiver = receiving.block_on(otpd_loadtest::webhooks::Receiver::start(out.path()))?;

    // The log, filled before the clock starts.
    let log = Arc::new(MemoryLog::new(
        count as usize + 1,
        Duration::from_secs(3600),
    ));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let at = clock.now();
    let events: Vec<NewEvent> = (0..count)
        .map(|i| NewEvent {
            client: CLIENT.into(),
            order: i / 3,
            at,
            payload: payload(i),
        })
        .collect();
    receiving.block_on(log.append(events))?;

    let url = receiver.url();
    let deliverer = Deliverer {
        target: Target {
            client: CLIENT.into(),
            url: url.parse()?,
            secret: WebhookSecret::parse(otpd_loadtest::webhooks::SECRET)?,
        },
        http: Transport::h2c(&url.parse()?, Duration::from_secs(10), concurrency),
        log: log.clone(),
        settings: WebhookSettings {
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(3600),
            first_retry: Duration::from_millis(100),
            max_retry: Duration::from_secs(1),
            concurrency,
        },
        clock,
    };

    // The deliverer, on its own thread, until the log is empty.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let delivering = std::thread::Builder::new()
        .name("otpd-webhooks".into())
        .spawn(move || -> anyhow::Result<(Duration, Duration)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let cpu = thread_cpu();
            let started = Instant::now();
            rt.block_on(async {
                let task = tokio::spawn(deliverer.run(stop));
                while log.backlog(CLIENT).await? > 0 && started.elapsed() < MAX_RUN {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let elapsed = started.elapsed();
                let _ = stop_tx.send(true);
                let _ = task.await;
                Ok::<_, anyhow::Error>(elapsed)
            })
            .map(|elapsed| (elapsed, thread_cpu().saturating_sub(cpu)))
        });
    let (elapsed, cpu) = delivering?
        .join()
        .map_err(|_| anyhow::anyhow!("the deliverer's thread panicked"))??;
    let report = receiver.finish();
    anyhow::ensure!(
        report.bad_signatures == 0,
        "{} bad signatures",
        report.bad_signatures
    );
    println!(
        "{}",
        serde_json::json!({
            "events": count,
            "received": report.received,
            "distinct": report.distinct,
            "concurrency": concurrency,
            "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "events_per_second": (count as f64 / elapsed.as_secs_f64()).round(),
            "deliverer_cpu_us_per_event": (cpu.as_secs_f64() * 1e6 / count as f64 * 100.0).round() / 100.0,
        })
    );
    drop(receiving);
    Ok(())
}
