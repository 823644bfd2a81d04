//! The Redis limiter: the same GCRA as [`crate::policy::limiter::MemoryLimiter`], its state
//! in Redis so that a limit holds across every node.
//!
//! One request's limits are decided by one script in one round trip: every verdict
//! first, every charge only if all allow. On a cluster a script may only touch keys
//! of one slot, and a request's limits (its number, its subject, the global purpose
//! capacity…) live on different ones: there, the keys are grouped by slot, each
//! group decided by its own script (all at once, pipelined over the cluster's
//! connections), and when any group refuses, the groups that charged are refunded.
//! Between the two, another request can see those charges and be refused where it
//! would have passed — strict by a few milliseconds, never lenient.
//!
//! Times go to Redis in microseconds: Lua numbers are doubles, exact to 2^53, and
//! Unix time in nanoseconds is past that.

use std::sync::LazyLock;
use std::time::Duration;

use futures_util::future::join_all;
use redis::{Script, Value};

use super::conn::{Redis, unavailable};
use super::keys::{Keys, slot};
use crate::policy::gcra::{self, Quota};
use crate::policy::limiter::{Check, Denial, Limiter, MAX_CHECKS, Refusal, Unavailable};
use crate::store::StoreError;

/// The GCRA functions every script deciding limits starts with.
pub(super) const GCRA_LIB: &str = include_str!("lua/gcra_lib.lua");

static GCRA: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{GCRA_LIB}\n{}", include_str!("lua/gcra.lua"))));
static REFUND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/gcra_refund.lua")));

#[derive(Clone)]
pub struct RedisLimiter {
    redis: Redis,
    keys: Keys,
}

fn micros(d: Duration) -> u64 {
    (d.as_nanos() / 1000) as u64
}

/// A quota in whole microseconds: the emission interval at least 1 µs (a key
/// allowing more than a million requests a second is no limit), the tolerance kept
/// at `burst − 1` intervals so the burst is the same.
pub(super) fn quota_micros(q: Quota) -> (u64, u64) {
    let emission = micros(q.emission()).max(1);
    (emission, emission * u64::from(q.burst() - 1))
}

impl RedisLimiter {
    /// Keys named by `keys` (see [`Keys::limit`]: hashed, never the number, subject
    /// or address itself).
    pub fn new(redis: Redis, keys: Keys) -> Self {
        Self { redis, keys }
    }

    fn key(&self, c: &Check<'_>) -> Vec<u8> {
        self.keys.limit(c)
    }

    /// Run the GCRA script over `checks` (one slot's worth, or all on one server).
    async fn decide(
        &self,
        checks: &[(usize, Check<'_>)],
        now_us: u64,
        charge: bool,
    ) -> Result<Option<Refusal>, StoreError> {
        let mut inv = GCRA.prepare_invoke();
        inv.arg(now_us).arg(if charge { "charge" } else { "peek" });
        for (_, c) in checks {
            let (emission, tolerance) = quota_micros(c.quota);
            inv.key(self.key(c)).arg(emission).arg(tolerance);
        }
        let mut conn = self.redis.conn().await?;
        let reply: Vec<Value> = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        let mut it = reply.into_iter();
        let worst: i64 = match it.next() {
            Some(Value::Int(i)) => i,
            other => return Err(StoreError::Corrupt(format!("gcra reply {other:?}"))),
        };
        if worst == 0 {
            return Ok(None);
        }
        let wait: u64 = match it.next() {
            Some(Value::BulkString(b)) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| StoreError::Corrupt("gcra wait".into()))?,
            other => return Err(StoreError::Corrupt(format!("gcra wait {other:?}"))),
        };
        let (_, c) = checks
            .get(worst as usize - 1)
            .ok_or_else(|| StoreError::Corrupt("gcra key index".into()))?;
        Ok(Some(Refusal {
            limit: c.limit,
            retry_after: Duration::from_micros(wait),
        }))
    }

    async fn refund_group(
        &self,
        checks: &[(usize, Check<'_>)],
        now_us: u64,
    ) -> Result<(), StoreError> {
        let mut inv = REFUND.prepare_invoke();
        inv.arg(now_us);
        for (_, c) in checks {
            inv.key(self.key(c)).arg(quota_micros(c.quota).0);
        }
        let mut conn = self.redis.conn().await?;
        let _: Value = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }

    /// The checks in groups that one script may decide: all of them on one server,
    /// one group per slot on a cluster.
    fn groups<'a>(&self, checks: &[Check<'a>]) -> Vec<Vec<(usize, Check<'a>)>> {
        assert!(checks.len() <= MAX_CHECKS, "more than {MAX_CHECKS} limits");
        let indexed = checks.iter().copied().enumerate();
        if !self.redis.is_cluster() {
            return vec![indexed.collect()];
        }
        let mut groups: Vec<(u16, Vec<(usize, Check<'a>)>)> = Vec::new();
        for (i, c) in indexed {
            let s = slot(&self.key(&c));
            match groups.iter_mut().find(|(gs, _)| *gs == s) {
                Some((_, g)) => g.push((i, c)),
                None => groups.push((s, vec![(i, c)])),
            }
        }
        groups.into_iter().map(|(_, g)| g).collect()
    }

    async fn run(&self, checks: &[Check<'_>], now: u64, charge: bool) -> Result<(), Denial> {
        let now_us = now / 1000;
        let groups = self.groups(checks);
        let verdicts = join_all(groups.iter().map(|g| self.decide(g, now_us, charge))).await;
        let mut worst: Option<Refusal> = None;
        let mut failure = None;
        for v in &verdicts {
            match v {
                Ok(Some(r)) if worst.is_none_or(|w| r.retry_after > w.retry_after) => {
                    worst = Some(*r)
                }
                Ok(_) => {}
                Err(e) => failure = Some(e.to_string()),
            }
        }
        if charge && (worst.is_some() || failure.is_some()) && groups.len() > 1 {
            // Give back what the groups that allowed charged.
            let charged = groups
                .iter()
                .zip(&verdicts)
                .filter(|(_, v)| matches!(v, Ok(None)))
                .map(|(g, _)| self.refund_group(g, now_us));
            for r in join_all(charged).await {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "could not refund a partly charged request");
                }
            }
        }
        if let Some(e) = failure {
            return Err(Denial::Unavailable(Unavailable(e)));
        }
        match worst {
            Some(r) => Err(Denial::Refused(r)),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Limiter for RedisLimiter {
    async fn check(&self, checks: &[Check<'_>], now: u64) -> Result<(), Denial> {
        self.run(checks, now, true).await
    }

    async fn peek(&self, checks: &[Check<'_>], now: u64) -> Result<(), Denial> {
        self.run(checks, now, false).await
    }

    async fn refund(&self, checks: &[Check<'_>], now: u64) -> Result<(), Unavailable> {
        let groups = self.groups(checks);
        for r in join_all(groups.iter().map(|g| self.refund_group(g, now / 1000))).await {
            r.map_err(|e| Unavailable(e.to_string()))?;
        }
        Ok(())
    }

    async fn standing(&self, c: &Check<'_>, now: u64) -> Result<gcra::Standing, Unavailable> {
        let mut conn = self
            .redis
            .conn()
            .await
            .map_err(|e| Unavailable(e.to_string()))?;
        let tat: Option<u64> = redis::cmd("GET")
            .arg(self.key(c))
            .query_async(&mut conn)
            .await
            .map_err(|e| Unavailable(e.to_string()))?;
        // Back to nanoseconds, on the quota as the script sees it.
        let (emission, tolerance) = quota_micros(c.quota);
        let q = Quota::new(
            1,
            Duration::from_micros(emission),
            (tolerance / emission + 1) as u32,
        )
        .unwrap_or(c.quota);
        Ok(gcra::standing(q, tat.unwrap_or(0) * 1000, now))
    }

    async fn forget(&self, c: &Check<'_>) -> Result<(), Unavailable> {
        let mut conn = self
            .redis
            .conn()
            .await
            .map_err(|e| Unavailable(e.to_string()))?;
        redis::cmd("DEL")
            .arg(self.key(c))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| Unavailable(e.to_string()))
    }
}
