//! The limiter's behaviour on every backend: in-process, one real `redis-server`, and
//! a real three-master cluster (where a request's limits fall on different slots).
//! Then the same random requests go to the in-process and Redis limiters, which
//! must answer alike, decision by decision.

use std::sync::Arc;
use std::time::Duration;

use otpd::config::RedisConfig;
use otpd::policy::gcra::Quota;
use otpd::policy::limiter::{Check, Denial, Limiter, MemoryLimiter, Refusal};
use otpd::store::redis::limiter::RedisLimiter;
use otpd::store::redis::{Keys, Redis};
use otpd_e2e::redis::{RedisCluster, RedisServer};

const S: u64 = 1_000_000_000;
/// 2026-11-23T12:00:00Z in nanoseconds: the limiter runs on Unix time.
const NOW: u64 = 1_795_435_200 * S;

fn q(count: u32, secs: u64) -> Quota {
    Quota::per(count, Duration::from_secs(secs)).unwrap()
}

fn redis_limiter(urls: Vec<String>, cluster: bool, prefix: &str) -> RedisLimiter {
    let config = RedisConfig {
        urls,
        cluster,
        ..RedisConfig::default()
    };
    let names =
        otpd::secrets::code::CodeKeys::derive(b"a test secret, thirty-two bytes long").pseudonyms();
    RedisLimiter::new(Redis::new(&config).unwrap(), Keys::new(prefix, 16, names))
}

fn refused(d: Result<(), Denial>) -> Refusal {
    match d {
        Err(Denial::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn a_refusal_charges_no_other_limit(l: &dyn Limiter) {
    let number = Check {
        limit: "destination",
        key: b"+34600123456",
        quota: q(5, 600),
    };
    let ip = Check {
        limit: "ip",
        key: b"192.0.2.7",
        quota: q(2, 60),
    };
    l.check(&[number, ip], NOW).await.unwrap();
    l.check(&[number, ip], NOW).await.unwrap();
    let r = refused(l.check(&[number, ip], NOW).await);
    assert_eq!(r.limit, "ip");
    assert_eq!(r.retry_after, Duration::from_secs(30));
    // The number was charged twice, not three times: three more pass.
    for _ in 0..3 {
        l.check(&[number], NOW).await.unwrap();
    }
    let r = refused(l.check(&[number], NOW).await);
    assert_eq!(r.limit, "destination");
    assert_eq!(r.retry_after, Duration::from_secs(120));
    // Its time come, one more.
    l.check(&[number], NOW + 120 * S).await.unwrap();
}

async fn the_longest_refusal_answers(l: &dyn Limiter) {
    let a = Check {
        limit: "a",
        key: b"k",
        quota: q(1, 10),
    };
    let b = Check {
        limit: "b",
        key: b"k",
        quota: q(1, 100),
    };
    l.check(&[a, b], NOW).await.unwrap();
    let r = refused(l.check(&[a, b], NOW).await);
    assert_eq!((r.limit, r.retry_after), ("b", Duration::from_secs(100)));
}

async fn peek_charges_nothing_and_refund_gives_back(l: &dyn Limiter) {
    let c = Check {
        limit: "destination",
        key: b"+34600000001",
        quota: q(2, 60),
    };
    for _ in 0..5 {
        l.peek(&[c], NOW).await.unwrap();
    }
    l.check(&[c], NOW).await.unwrap();
    l.check(&[c], NOW).await.unwrap();
    assert_eq!(refused(l.peek(&[c], NOW).await).limit, "destination");
    l.refund(&[c], NOW).await.unwrap();
    l.peek(&[c], NOW).await.unwrap();
    l.check(&[c], NOW).await.unwrap();
    refused(l.check(&[c], NOW).await);
    // Refunds never go below a full burst.
    for _ in 0..5 {
        l.refund(&[c], NOW).await.unwrap();
    }
    l.check(&[c], NOW).await.unwrap();
    l.check(&[c], NOW).await.unwrap();
    refused(l.check(&[c], NOW).await);
    let s = l.standing(&c, NOW).await.unwrap();
    assert_eq!(s.remaining, 0);
    assert_eq!(s.retry_after, Some(Duration::from_secs(30)));
    let s = l.standing(&c, NOW + 30 * S).await.unwrap();
    assert_eq!((s.remaining, s.retry_after), (1, None));
}

async fn one_key_twice_in_a_request_counts_twice(l: &dyn Limiter) {
    let c = Check {
        limit: "purpose",
        key: b"login",
        quota: q(3, 60),
    };
    refused(l.check(&[c, c, c, c], NOW).await);
    l.check(&[c, c, c], NOW).await.unwrap();
    refused(l.check(&[c], NOW).await);
}

async fn many_nodes_share_one_budget(l: Arc<dyn Limiter>) {
    // 64 requests at once against a burst of 10: exactly 10 pass.
    let c = Check {
        limit: "destination",
        key: b"+34600000777",
        quota: q(10, 600),
    };
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let l = l.clone();
            tokio::spawn(async move { l.check(&[c], NOW).await.is_ok() })
        })
        .collect();
    let mut passed = 0;
    for t in tasks {
        passed += usize::from(t.await.unwrap());
    }
    assert_eq!(passed, 10);
}

/// An operator's unlock: the key is back at its full burst; other keys of the
/// limit, and other limits, keep their charges.
async fn forget_gives_one_key_its_full_burst(l: &dyn Limiter) {
    let subject = |key: &'static [u8]| Check {
        limit: "check_subject",
        key,
        quota: q(2, 600),
    };
    let (locked, other) = (subject(b"12345678Z"), subject(b"87654321X"));
    for c in [locked, locked, other, other] {
        l.check(&[c], NOW).await.unwrap();
    }
    refused(l.check(&[locked], NOW).await);
    l.forget(&locked).await.unwrap();
    l.check(&[locked], NOW).await.unwrap();
    l.check(&[locked], NOW).await.unwrap();
    refused(l.check(&[locked], NOW).await);
    refused(l.check(&[other], NOW).await);
    // Forgetting a key never charged is harmless.
    l.forget(&subject(b"00000000T")).await.unwrap();
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&otpd::policy::limiter::MemoryLimiter::new()).await;
                }
            )*
        }

        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let server = super::RedisServer::start();
                    super::$name(&super::redis_limiter(vec![server.url()], false, "otpd")).await;
                }
            )*
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cluster_runs_every_behaviour() {
            let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3)).await.unwrap();
            $(
                $name(&redis_limiter(cluster.urls(), true, concat!("t:", stringify!($name)))).await;
            )*
            many_nodes_share_one_budget(Arc::new(redis_limiter(cluster.urls(), true, "t:nodes")))
                .await;
        }
    };
}

contract!(
    a_refusal_charges_no_other_limit,
    the_longest_refusal_answers,
    peek_charges_nothing_and_refund_gives_back,
    one_key_twice_in_a_request_counts_twice,
    forget_gives_one_key_its_full_burst,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_nodes_share_one_budget() {
    let server = RedisServer::start();
    // Two limiters (two nodes' worth) on one server, interleaved.
    let a: Arc<dyn Limiter> = Arc::new(redis_limiter(vec![server.url()], false, "otpd"));
    many_nodes_share_one_budget(a).await;
    let b = redis_limiter(vec![server.url()], false, "otpd");
    let c = Check {
        limit: "destination",
        key: b"+34600000777",
        quota: q(10, 600),
    };
    assert_eq!(refused(b.check(&[c], NOW).await).limit, "destination");
}

#[tokio::test]
async fn memory_nodes_share_one_budget() {
    many_nodes_share_one_budget(Arc::new(MemoryLimiter::new())).await;
}

/// xorshift64*: a fixed sequence, so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

async fn differential(redis: &dyn Limiter) {
    let memory = MemoryLimiter::new();
    let limits = [
        ("destination", q(5, 600)),
        ("ip", Quota::new(30, Duration::from_secs(600), 10).unwrap()),
        ("purpose", q(40, 60)),
        ("subject", q(3, 60)),
    ];
    let keys: [&[u8]; 4] = [b"a", b"b", b"c", b"{x}"];
    let mut rng = Rng(0x5EED);
    let mut now = NOW;
    let (mut allowed, mut refusals) = (0, 0);
    for step in 0..2000 {
        let n = 1 + rng.below(4) as usize;
        let checks: Vec<Check<'_>> = (0..n)
            .map(|_| {
                let (limit, quota) = limits[rng.below(4) as usize];
                Check {
                    limit,
                    key: keys[rng.below(4) as usize],
                    quota,
                }
            })
            .collect();
        let (a, b) = match rng.below(10) {
            0 => (
                memory.peek(&checks, now).await,
                redis.peek(&checks, now).await,
            ),
            1 => {
                memory.refund(&checks, now).await.unwrap();
                redis.refund(&checks, now).await.unwrap();
                (Ok(()), Ok(()))
            }
            _ => (
                memory.check(&checks, now).await,
                redis.check(&checks, now).await,
            ),
        };
        assert_eq!(a, b, "step {step}");
        if a.is_ok() {
            allowed += 1;
        } else {
            refusals += 1;
        }
        for c in &checks {
            assert_eq!(
                memory.standing(c, now).await.unwrap(),
                redis.standing(c, now).await.unwrap(),
                "step {step}"
            );
        }
        // Whole milliseconds: both limiters agree to the microsecond.
        now += rng.below(3000) * 1_000_000;
    }
    assert!(
        allowed > 200 && refusals > 200,
        "{allowed} allowed, {refusals} refused"
    );
}

#[tokio::test]
async fn redis_decides_what_memory_decides() {
    let server = RedisServer::start();
    differential(&redis_limiter(vec![server.url()], false, "otpd")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_decides_what_memory_decides() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    differential(&redis_limiter(cluster.urls(), true, "otpd")).await;
}
