//! Resident memory per live verification: issue N verifications (default 1,000,000)
//! through the engine with the embedded store, let every delivery be recorded, and
//! report the growth of the process's resident set divided by N. With `subjects`,
//! each request carries an identity number of its own (as Cl@ve's do), which the
//! store indexes too.
//!
//! ```sh
//! cargo run --release -p otpd-benches --bin memory -- 1000000 [subjects]
//! ```

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use otpd::domain::clock::SystemClock;
use otpd_benches::{engine, everybody, issue, issue_request, request_with_subject, resident_bytes};

/// otpd's allocator, so that the figure is otpd's: with glibc's malloc (a header
/// per allocation, sizes rounded to 16) the same records took 40-odd bytes more.
/// Counted, so that the report can say what the heap holds besides what is resident.
#[global_allocator]
static ALLOCATOR: Counted = Counted;

/// mimalloc, counting the bytes and blocks asked for and not yet freed.
struct Counted;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_BLOCKS: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Relaxed);
        LIVE_BLOCKS.fetch_add(1, Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Relaxed);
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let subjects = match std::env::args().nth(2).as_deref() {
        None => false,
        Some("subjects") => true,
        Some(other) => anyhow::bail!("unknown argument {other:?}; expected `subjects`"),
    };
    let (engine, _keys, store, _stop) = engine(
        Arc::new(SystemClock),
        Duration::from_secs(3600),
        Duration::from_secs(600),
        1 << 16,
    );
    // Warm up allocator and runtime, then measure from a settled baseline.
    tokio::task::yield_now().await;
    let caller = everybody();
    let before = resident_bytes().unwrap_or(0);
    let heap_before = (LIVE_BYTES.load(Relaxed), LIVE_BLOCKS.load(Relaxed));
    for i in 0..n {
        if subjects {
            issue_request(&engine, &caller, request_with_subject(i)).await?;
        } else {
            issue(&engine, &caller, i).await?;
        }
        if i % 1024 == 1023 {
            while engine.queue().depth() > 0 {
                tokio::task::yield_now().await;
            }
        }
    }
    while engine.queue().depth() > 0 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = resident_bytes().unwrap_or(0);
    let heap = (
        LIVE_BYTES.load(Relaxed) - heap_before.0,
        LIVE_BLOCKS.load(Relaxed) - heap_before.1,
    );
    let live = store.len();
    let per = (after.saturating_sub(before)) as f64 / live.max(1) as f64;
    println!("live verifications: {live}");
    println!(
        "resident before: {:.1} MiB, after: {:.1} MiB",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    println!("resident bytes per live verification: {per:.0}");
    println!(
        "of which asked of the allocator: {:.0} bytes in {:.2} blocks",
        heap.0 as f64 / live.max(1) as f64,
        heap.1 as f64 / live.max(1) as f64
    );
    println!(
        "inline size of a Verification: {} bytes, of a send: {}, of an SMS send's details: {}",
        std::mem::size_of::<otpd::domain::verification::Verification>(),
        std::mem::size_of::<otpd::domain::verification::SendAttempt>(),
        std::mem::size_of::<otpd::domain::verification::SendDetails>(),
    );
    Ok(())
}
