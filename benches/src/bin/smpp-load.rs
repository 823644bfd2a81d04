//! submit_sm load from otpd's SMPP session against an SMSC on loopback (the
//! simulator: `otpd simulate smsc`), for comparing with other clients against the
//! same server in the same run.
//!
//! ```sh
//! smpp-load 127.0.0.1:2775 200000 [BINDS] [WINDOW]
//! ```
//! Prints one JSON line: submits, seconds, rate.

use std::time::{Duration, Instant};

use otpd_adapters::smpp::pdu::{self, Address, SubmitOptions};
use otpd_adapters::smpp::session::{Bind, BindConfig, BindState};

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

    let message = pdu::submit_sm(
        &Address {
            ton: 5,
            npi: 0,
            addr: "otpd".into(),
        },
        &Address::international("+34600123456"),
        b"123456 es tu codigo de verificacion. Caduca en 10 min.",
        SubmitOptions {
            data_coding: 0,
            registered_delivery: 0,
            esm_class: 0,
        },
    )?;
    let mut pool = Vec::new();
    for _ in 0..binds {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        // Receipts are not asked for; keep the receiver so the channel stays open.
        std::mem::forget(rx);
        let bind = Bind::start(
            BindConfig {
                address: addr.to_string(),
                system_id: "otpd".into(),
                password: "otpd".into(),
                window,
                ..BindConfig::default()
            },
            tx,
        );
        anyhow::ensure!(
            bind.wait_for(BindState::Bound, Duration::from_secs(10))
                .await,
            "could not bind to {addr}"
        );
        pool.push(bind);
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
