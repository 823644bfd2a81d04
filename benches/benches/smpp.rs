//! submit_sm throughput through otpd's SMPP session to the simulator on loopback:
//! one bind with window 64, and four binds. Every submit waits for its
//! submit_sm_resp; receipts are off so that the figure is submits alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use otpd_adapters::smpp::session::Bind;
use otpd_simulators::smsc::{Smsc, SmscConfig};

/// Submitters per bind: enough to keep a window of 64 full.
const SUBMITTERS_PER_BIND: u64 = 128;

fn submits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let smsc = rt.block_on(Smsc::start(SmscConfig::default())).unwrap();
    let message = otpd_benches::bench_submit_sm();
    let mut group = c.benchmark_group("smpp");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    for binds in [1usize, 4] {
        let pool: Vec<Bind> = rt.block_on(async {
            let mut pool = Vec::new();
            for _ in 0..binds {
                pool.push(
                    otpd_benches::bench_bind(smsc.addr().to_string(), 64)
                        .await
                        .unwrap(),
                );
            }
            pool
        });
        let pool = Arc::new(pool);
        group.bench_function(format!("submit_sm, {binds} bind(s), window 64"), |b| {
            b.iter_custom(|iters| {
                let pool = pool.clone();
                let message = message.clone();
                rt.block_on(async move {
                    let submitters = SUBMITTERS_PER_BIND * pool.len() as u64;
                    let start = Instant::now();
                    let mut tasks = Vec::new();
                    for s in 0..submitters {
                        let n = iters / submitters + u64::from(s < iters % submitters);
                        let bind = pool[s as usize % pool.len()].clone();
                        let message = message.clone();
                        tasks.push(tokio::spawn(async move {
                            for _ in 0..n {
                                bind.submit(message.clone()).await.unwrap();
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, submits);
criterion_main!(benches);
