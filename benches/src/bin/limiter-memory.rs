//! Resident memory per key of otpd's in-process limiter: N distinct keys (default
//! 10,000,000) each charged once, then the resident set size divided by N; and what
//! is left after the keys go idle and are reclaimed.
//!
//! cargo run --release -p otpd-benches --bin limiter-memory -- 10000000

use std::time::Duration;

use otpd::policy::gcra::Quota;
use otpd::policy::limiter::{Check, MemoryLimiter};
use otpd_benches::resident_bytes;

fn main() -> anyhow::Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let quota = Quota::per(5, Duration::from_secs(600))?;
    let before = resident_bytes().unwrap_or(0);
    let limiter = MemoryLimiter::new();
    let now = 1_000_000_000u64;
    for i in 0..n {
        let key = (34_600_000_000 + i).to_be_bytes();
        let check = Check {
            limit: "destination",
            key: &key,
            quota,
        };
        limiter
            .check_now(&[check], now)
            .map_err(|r| anyhow::anyhow!("refused: {r:?}"))?;
    }
    let after = resident_bytes().unwrap_or(0);
    println!("keys: {}", limiter.len());
    println!(
        "resident before: {:.1} MiB, after: {:.1} MiB",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    println!(
        "resident bytes per key: {:.0}",
        (after - before) as f64 / n as f64
    );
    // Every key's TAT is one emission interval (120 s) ahead; past it they are idle.
    let left = limiter.reclaim(now + 121 * 1_000_000_000);
    println!(
        "after reclaiming idle keys: {left} keys, resident {:.1} MiB",
        resident_bytes().unwrap_or(0) as f64 / 1048576.0
    );
    Ok(())
}
