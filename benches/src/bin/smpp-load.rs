//! submit_sm load from otpd's SMPP session against an SMSC on loopback (the
//! simulator: `otpd simulate smsc`), for comparing with other clients against the
//! same server in the same run.
//!
//! ```sh
//! smpp-load 127.0.0.1:2775 200000 [BINDS] [WINDOW]
//! ```
//! Prints one JSON line: submits, seconds, rate.

use std::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: smpp-load HOST:PORT COUNT [BINDS] [WINDOW]";
    let addr: std::net::SocketAddr = args
        .first()
        .ok_or_else(|| anyhow::anyhow!(usage))?
        .parse()?;
    anyhow::ensure!(addr.ip().is_loopback(), "loopback targets only");
    let count: u64 = args.get(1).ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let binds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let window: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(64);

    let message = otpd_benches::bench_submit_sm();
    let mut pool = Vec::new();
    for _ in 0..binds {
        pool.push(otpd_benches::bench_bind(addr.to_string(), window).await?);
    }
    let submitters = (2 * window * binds) as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..submitters {
        let n = count / submitters + u64::from(s < count % submitters);
        let bind = pool[s as usize % binds].clone();
        let message = message.clone();
        tasks.push(tokio::spawn(async move {
            let mut refused = 0u64;
            for _ in 0..n {
                if bind.submit(message.clone()).await.is_err() {
                    refused += 1;
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    for bind in &pool {
        bind.shutdown().await;
    }
    println!(
        "{}",
        serde_json::json!({
            "client": format!("otpd session, {binds} bind(s), window {window}"),
            "submits": count, "refused": refused, "seconds": seconds, "rate": count as f64 / seconds
        })
    );
    Ok(())
}
