//! Limit decisions per second: otpd's limiter checking a request's set of limits,
//! against governor alone on one key and on a million keys.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use governor::{Quota as GovQuota, RateLimiter};
use otpd::policy::admission::{Admission, Rules};
use otpd::policy::gcra::Quota;
use otpd::policy::limiter::{Check, IssueLimits, MemoryLimiter, charge_issue};
use otpd::policy::limits::IssueFacts;

const KEYS: u64 = 1_000_000;

/// The output of a future that does not wait (in-process admission never does), with
/// no runtime around it.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("an in-process admission waited"),
    }
}

fn limiter(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter");
    group.throughput(Throughput::Elements(1));
    // Generous quotas: the benches measure decisions, mostly allowing ones.
    let q = Quota::per(1_000_000, Duration::from_secs(1)).unwrap();
    let now = 1_000_000_000u64;

    let one = MemoryLimiter::new();
    group.bench_function("otpd, one limit, one key", |b| {
        let check = [Check {
            limit: "global",
            key: b"login",
            quota: q,
        }];
        b.iter(|| black_box(one.check_now(black_box(&check), now)))
    });

    let set = MemoryLimiter::new();
    let mut i = 0u64;
    group.bench_function("otpd, a request's 7 limits, 1M destinations", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let number = (34_600_000_000 + i).to_be_bytes();
            let ip = ((i % 65_536) as u32).to_be_bytes();
            let net = ((i % 256) as u32).to_be_bytes();
            let checks = [
                Check {
                    limit: "destination",
                    key: &number,
                    quota: q,
                },
                Check {
                    limit: "subject",
                    key: &number[2..],
                    quota: q,
                },
                Check {
                    limit: "ip",
                    key: &ip,
                    quota: q,
                },
                Check {
                    limit: "ip_prefix",
                    key: &net,
                    quota: q,
                },
                Check {
                    limit: "client",
                    key: b"backend-1",
                    quota: q,
                },
                Check {
                    limit: "country",
                    key: b"ES",
                    quota: q,
                },
                Check {
                    limit: "purpose",
                    key: b"login",
                    quota: q,
                },
            ];
            black_box(set.check_now(&checks, now))
        })
    });

    let many = MemoryLimiter::new();
    let mut j = 0u64;
    group.bench_function("otpd, one limit, 1M keys", |b| {
        b.iter(|| {
            j = (j + 1) % KEYS;
            let key = j.to_be_bytes();
            black_box(many.check_now(
                &[Check {
                    limit: "destination",
                    key: &key,
                    quota: q,
                }],
                now,
            ))
        })
    });

    admission(&mut group);

    let gov_quota = GovQuota::per_second(NonZeroU32::new(1_000_000).unwrap());
    let direct = RateLimiter::direct(gov_quota);
    group.bench_function("governor, one key", |b| {
        b.iter(|| black_box(direct.check()))
    });

    let keyed = RateLimiter::dashmap(gov_quota);
    let mut k = 0u64;
    group.bench_function("governor keyed, 1M keys", |b| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(keyed.check_key(&k))
        })
    });
    group.finish();
}

/// The whole admission of a request as the API runs it: pumping judgement of the
/// number's prefix and country, then destination, subject, IP, network, client,
/// country and purpose capacity in one limiter call.
fn admission(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let mut config = otpd::Config::default();
    config.limits.destination = otpd::config::Rate::per(1_000_000, 1);
    config.limits.subject = otpd::config::Rate::per(1_000_000, 1);
    config.limits.ip = otpd::config::Rate::per(1_000_000, 1);
    config.limits.ip_prefix = otpd::config::Rate::per(1_000_000, 1);
    config.limits.country = otpd::config::Rate::per(1_000_000, 1);
    config
        .limits
        .purposes
        .insert("login".into(), otpd::config::Rate::per(1_000_000, 1));
    let limiter = std::sync::Arc::new(MemoryLimiter::new());
    let admission = Admission::new(limiter.clone(), Rules::new(&config));
    let rules = admission.rules();
    let client = rules.clients.authenticate(None).unwrap();
    let es = otpd::numbers::reader::Region::parse("ES");
    let at = otpd::domain::clock::UnixMillis(1_800_000_000_000);
    let mut a = 0u64;
    group.bench_function("otpd admission, a whole request, 1M destinations", |b| {
        b.iter(|| {
            a = (a + 1) % KEYS;
            let subject = format!("{:08}Z", a);
            let facts = IssueFacts {
                to: otpd::numbers::e164::E164::from_digits_unchecked(34_600_000_000 + a),
                country: es,
                subject: Some(&subject),
                ip: Some(std::net::IpAddr::from([
                    10,
                    (a >> 16) as u8,
                    (a >> 8) as u8,
                    a as u8,
                ])),
                client: &client,
                purpose: "login",
            };
            // What the engine asks of admission, and what the store then charges.
            let Ok(plan) = admission.plan_issue(&rules, &facts, at) else {
                return black_box(false);
            };
            let gate = plan.gate(&rules, &facts);
            let charge = plan.charge(&rules, &facts, plan.pool());
            let limits = IssueLimits {
                gate: &gate,
                charge: &charge,
                fallback: None,
                now: plan.now,
            };
            black_box(ready(charge_issue(&*limiter, &limits)).is_ok())
        })
    });
}

criterion_group!(benches, limiter);
criterion_main!(benches);
