//! In-process hot paths: the code primitives, and a whole issue + check through the
//! engine (store, queue, delivery worker, discard channel) on one core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use otpd::domain::clock::{ManualClock, UnixMillis};
use otpd::domain::verification::CheckOutcome;
use otpd::secrets::code::{Code, CodeKeys, CodeLength, OsRandom};
use otpd::secrets::id::{ShardTag, VerificationId};
use otpd_benches::{SECRET, engine, everybody, issue};

fn code(c: &mut Criterion) {
    let mut group = c.benchmark_group("code");
    group.throughput(Throughput::Elements(1));
    let keys = CodeKeys::derive(SECRET);
    let len = CodeLength::new(6).unwrap();
    let id = VerificationId::new(ShardTag(7), [3; 14]);
    let code = Code::parse("123456").unwrap();
    group.bench_function("generate (OS CSPRNG)", |b| {
        b.iter(|| Code::generate(len, &mut OsRandom).unwrap())
    });
    group.bench_function("mac", |b| b.iter(|| keys.mac(&id, &code)));
    group.bench_function("seal", |b| b.iter(|| keys.seal(&id, &code)));
    // The naive way: key the HMAC from the secret on every call instead of cloning the
    // pre-keyed state.
    group.bench_function("mac, re-keyed per call (naive)", |b| {
        b.iter(|| CodeKeys::derive(SECRET).mac(&id, &code))
    });
    group.finish();
}

fn issue_and_check(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = ManualClock::new(UnixMillis(1_800_000_000_000));
    // A short validity and no retention keep the store at a steady size however many
    // iterations criterion runs; the amortised reclaim is part of the measured cost.
    let (engine, keys, _store, _stop) = rt.block_on(async {
        engine(
            Arc::new(clock.clone()),
            Duration::from_secs(2),
            Duration::ZERO,
            1 << 16,
        )
    });
    let mut i = 0u64;
    let caller = everybody();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    group.bench_function("issue + check (one core, delivery included)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for n in 0..iters {
                    i += 1;
                    if i.is_multiple_of(1000) {
                        clock.advance(Duration::from_secs(1));
                    }
                    let issued = issue(&engine, &caller, i).await.unwrap();
                    let v = issued.verification();
                    let code = keys.unseal(&v.id, v.sealed_code, v.code_length);
                    let checked = engine.check(&caller, &v.id, &code, None).await.unwrap();
                    assert_eq!(checked.outcome, CheckOutcome::Approved);
                    if n % 256 == 255 {
                        // Let the delivery worker drain the queue, on this same core.
                        while engine.queue().depth() > 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                }
                while engine.queue().depth() > 0 {
                    tokio::task::yield_now().await;
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, code, issue_and_check);
criterion_main!(benches);
