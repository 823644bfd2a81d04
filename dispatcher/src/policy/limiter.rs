//! The `Limiter` seam: one request checked against several keyed GCRA limits at
//! once (destination, subject, IP, client, country, prefix, purpose…), charged to all
//! of them only when every one allows it.
//!
//! [`MemoryLimiter`] keeps each key's state — one theoretical arrival time — in
//! sharded hash maps. Keys are stored as 128-bit keyed hashes of (limit, key), so a
//! key costs the same 24 bytes whatever its length and nobody can aim collisions at a
//! shard. A request locks only the shards its keys fall in (in shard order, so two
//! requests never wait on each other in a cycle); no lock is shared by all requests.
//! Keys whose TAT has passed are as good as absent and are reclaimed by
//! [`MemoryLimiter::reclaim`], which a timer runs, so the maps never grow without
//! bound.
//!
//! The maps resize incrementally (`griddle`): each insert moves a few keys to the
//! bigger table. With hashbrown's all-at-once resize, the evenly filled shards all
//! doubled within the same fraction of a second under national load, rehashing
//! millions of keys and faulting in their new pages at once, with every request
//! that needed one of those shards waiting for it.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use griddle::HashMap;
use parking_lot::Mutex;
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::policy::gcra::{self, Quota, Verdict};

/// One limit to check: which limit (its name is the machine-readable reason of a
/// refusal), the key within it, and its quota.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    pub limit: &'static str,
    pub key: &'a [u8],
    pub quota: Quota,
}

/// The request was refused by `limit`; it may come back after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub limit: &'static str,
    pub retry_after: Duration,
}

/// The limits' state cannot be reached (a shared store is down): nothing can be
/// decided, so nothing is admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limits unavailable: {0}")]
pub struct Unavailable(pub String);

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    Refused(Refusal),
    Unavailable(Unavailable),
}

impl From<Refusal> for Denial {
    fn from(r: Refusal) -> Self {
        Denial::Refused(r)
    }
}

impl From<Unavailable> for Denial {
    fn from(u: Unavailable) -> Self {
        Denial::Unavailable(u)
    }
}

/// Checks requests against keyed limits. Times are nanoseconds on a scale shared by
/// every caller of one limiter (Unix time, so that nodes sharing one agree).
#[async_trait::async_trait]
pub trait Limiter: Send + Sync {
    /// Allow (and charge every limit) or refuse (and charge none). When several
    /// limits refuse, the one that keeps the request out longest answers. At most
    /// [`MAX_CHECKS`] limits per request; more is a programming error and panics.
    async fn check(&self, checks: &[Check<'_>], now: u64) -> Result<(), Denial>;

    /// What [`Limiter::check`] would answer, charging nothing: for limits that gate a
    /// request but are charged by something else (wrong codes gate new codes).
    async fn peek(&self, checks: &[Check<'_>], now: u64) -> Result<(), Denial>;

    /// Give back one charge to each limit: the request was admitted but sent nothing
    /// (a duplicate collapsed into an earlier one), so it should not count.
    async fn refund(&self, checks: &[Check<'_>], now: u64) -> Result<(), Unavailable>;

    /// Where one limit's key stands, for explaining decisions.
    async fn standing(&self, check: &Check<'_>, now: u64) -> Result<gcra::Standing, Unavailable>;

    /// Forget one limit's key: back to its full burst. An operator's unlock (a
    /// subject's wrong-code budget given back).
    async fn forget(&self, check: &Check<'_>) -> Result<(), Unavailable>;

    /// Forget keys back at a full burst; returns how many are left. A limiter whose
    /// keys expire by themselves (Redis) has nothing to do.
    fn reclaim(&self, _now: u64) -> usize {
        0
    }
}

/// A request's limits for issuing a code, decided in the same step as the issue
/// (see [`crate::store::Store::issue`]): one round trip where the store can reach
/// the limits from one script, and no refund to make for a request that sends
/// nothing.
#[derive(Debug, Clone, Copy)]
pub struct IssueLimits<'a> {
    /// Limits that gate the request but are charged by something else.
    pub gate: &'a [Check<'a>],
    /// What the request is charged if it sends a code.
    pub charge: &'a [Check<'a>],
    /// Charged instead when `charge` is refused by its reserved share
    /// ([`crate::policy::limits::name::RESERVED`]).
    pub fallback: Option<&'a [Check<'a>]>,
    /// The limiter's time (nanoseconds, as [`Limiter`] takes it).
    pub now: u64,
}

impl IssueLimits<'static> {
    /// No limits at all.
    pub const NONE: IssueLimits<'static> = IssueLimits {
        gate: &[],
        charge: &[],
        fallback: None,
        now: 0,
    };
}

/// A check's limits, decided in the same step as the attempt is counted (see
/// [`crate::store::Store::check`]).
#[derive(Debug, Clone, Copy)]
pub struct CheckLimits<'a> {
    /// Charged before the attempt counts (the caller's address); a refusal counts
    /// nothing.
    pub before: Option<Check<'a>>,
    /// The quota of wrong codes per subject
    /// ([`crate::policy::limits::name::CHECK_SUBJECT`], keyed by the verification's
    /// subject): a wrong code past it locks the verification too.
    pub wrong_per_subject: Option<Quota>,
    /// The limiter's time (nanoseconds).
    pub now: u64,
}

impl CheckLimits<'static> {
    /// No limits at all.
    pub const NONE: CheckLimits<'static> = CheckLimits {
        before: None,
        wrong_per_subject: None,
        now: 0,
    };
}

/// Which of an issue's charges were taken (to give them back if it sends nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charged {
    /// `charge`.
    First,
    /// `fallback`: the reserved share was used up.
    Fallback,
}

/// Decide an issue's limits on `limiter`, charging them: the gate looked at, the
/// charges taken all or none, the shared pool tried when the reserved share
/// refuses. For a store whose limits live where its own atomic step cannot reach
/// them; it gives the charge back with [`refund_issue`] if nothing is sent.
pub async fn charge_issue(
    limiter: &dyn Limiter,
    limits: &IssueLimits<'_>,
) -> Result<Charged, Denial> {
    if !limits.gate.is_empty() {
        limiter.peek(limits.gate, limits.now).await?;
    }
    match limiter.check(limits.charge, limits.now).await {
        Err(Denial::Refused(r)) if r.limit == crate::policy::limits::name::RESERVED => {
            match limits.fallback {
                // The client's own share is used up: the shared pool.
                Some(fallback) => {
                    limiter.check(fallback, limits.now).await?;
                    Ok(Charged::Fallback)
                }
                None => Err(Denial::Refused(r)),
            }
        }
        other => other.map(|()| Charged::First),
    }
}

/// Give back what [`charge_issue`] took.
pub async fn refund_issue(limiter: &dyn Limiter, limits: &IssueLimits<'_>, charged: Charged) {
    let checks = match charged {
        Charged::First => limits.charge,
        Charged::Fallback => limits.fallback.unwrap_or_default(),
    };
    if let Err(e) = limiter.refund(checks, limits.now).await {
        // The charge stays: the limit errs on the strict side until it drains.
        tracing::warn!(error = %e, "could not give a request's limit charges back");
    }
}

/// Limits one request may be checked against at once.
pub const MAX_CHECKS: usize = 16;

const SHARDS: usize = 64;

/// A shard's keys: hashbrown's own hasher would hash the already-random ids again;
/// their low bits are as good as any hash.
type Shard = Mutex<HashMap<u128, u64, IdHash>>;

#[derive(Clone, Copy, Default)]
struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

/// Takes the id's upper 64 bits (the shard index uses the lower ones).
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u128 ids are hashed; this is their byte form, for completeness.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u128(&mut self, i: u128) {
        self.0 = (i >> 64) as u64;
    }
}

pub struct MemoryLimiter {
    shards: Box<[Shard]>,
    keys: (u64, u64),
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLimiter {
    pub fn new() -> Self {
        let mut seed = [0u8; 16];
        // Without OS randomness the ids are still well spread, only predictable.
        let _ = getrandom::fill(&mut seed);
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(IdHash)))
                .collect(),
            keys: (
                u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(seed[8..].try_into().expect("8 bytes")),
            ),
        }
    }

    /// The stored key of `key` in `limit`: a keyed 128-bit SipHash.
    fn id(&self, limit: &str, key: &[u8]) -> u128 {
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        limit.hash(&mut h);
        key.hash(&mut h);
        h.finish128().as_u128()
    }

    fn shard_of(id: u128) -> usize {
        (id as usize) % SHARDS
    }

    /// Forget keys back to a full burst (their TAT has passed), and give memory back
    /// when a shard is mostly empty. Returns how many keys are left.
    pub fn reclaim(&self, now: u64) -> usize {
        let mut left = 0;
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            map.retain(|_, tat| *tat > now);
            if map.capacity() > 64 && map.len() * 4 < map.capacity() {
                map.shrink_to_fit();
            }
            left += map.len();
        }
        left
    }

    /// Keys held now (reclaimed or not).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait::async_trait]
impl Limiter for MemoryLimiter {
    async fn check(&self, checks: &[Check<'_>], now: u64) -> Result<(), Denial> {
        Ok(self.check_now(checks, now)?)
    }

    async fn peek(&self, checks: &[Check<'_>], now: u64) -> Result<(), Denial> {
        Ok(self.peek_now(checks, now)?)
    }

    async fn refund(&self, checks: &[Check<'_>], now: u64) -> Result<(), Unavailable> {
        self.refund_now(checks, now);
        Ok(())
    }

    async fn standing(&self, c: &Check<'_>, now: u64) -> Result<gcra::Standing, Unavailable> {
        Ok(self.standing_now(c, now))
    }

    async fn forget(&self, c: &Check<'_>) -> Result<(), Unavailable> {
        let id = self.id(c.limit, c.key);
        self.shards[Self::shard_of(id)].lock().remove(&id);
        Ok(())
    }

    fn reclaim(&self, now: u64) -> usize {
        MemoryLimiter::reclaim(self, now)
    }
}

/// The same operations, synchronous: nothing in-process waits.
impl MemoryLimiter {
    pub fn check_now(&self, checks: &[Check<'_>], now: u64) -> Result<(), Refusal> {
        self.decide(checks, now, true)
    }

    pub fn peek_now(&self, checks: &[Check<'_>], now: u64) -> Result<(), Refusal> {
        self.decide(checks, now, false)
    }

    pub fn standing_now(&self, c: &Check<'_>, now: u64) -> gcra::Standing {
        let id = self.id(c.limit, c.key);
        let tat = self.shards[Self::shard_of(id)]
            .lock()
            .get(&id)
            .copied()
            .unwrap_or(0);
        gcra::standing(c.quota, tat, now)
    }

    pub fn refund_now(&self, checks: &[Check<'_>], now: u64) {
        for c in checks {
            let id = self.id(c.limit, c.key);
            let mut map = self.shards[Self::shard_of(id)].lock();
            if let Some(tat) = map.get_mut(&id) {
                *tat = gcra::refund(c.quota, *tat, now);
                if *tat == 0 {
                    map.remove(&id);
                }
            }
        }
    }
}

impl MemoryLimiter {
    /// Every verdict first; then, when all allow and `charge` is set, every charge.
    fn decide(&self, checks: &[Check<'_>], now: u64, charge: bool) -> Result<(), Refusal> {
        assert!(checks.len() <= MAX_CHECKS, "more than {MAX_CHECKS} limits");
        // Fixed arrays: a decision allocates nothing.
        let mut ids = [0u128; MAX_CHECKS];
        let mut shards = [0usize; MAX_CHECKS];
        for (i, c) in checks.iter().enumerate() {
            ids[i] = self.id(c.limit, c.key);
            shards[i] = Self::shard_of(ids[i]);
        }
        let n = checks.len();
        shards[..n].sort_unstable();
        let mut distinct = 0;
        for i in 0..n {
            if i == 0 || shards[i] != shards[i - 1] {
                shards[distinct] = shards[i];
                distinct += 1;
            }
        }
        let shards = &shards[..distinct];
        // Locked in ascending shard order; found again by binary search.
        let mut guards: [Option<parking_lot::MutexGuard<'_, HashMap<u128, u64, IdHash>>>;
            MAX_CHECKS] = Default::default();
        for (i, &s) in shards.iter().enumerate() {
            guards[i] = Some(self.shards[s].lock());
        }
        let map_of = |id: u128| {
            shards
                .binary_search(&Self::shard_of(id))
                .expect("its shard is locked")
        };
        // Phase one: every verdict, charging nothing. Two checks of the same key in
        // one request see each other's charge.
        let mut new_tats = [(0u128, 0u64); MAX_CHECKS];
        let mut charged = 0;
        let mut refusal: Option<Refusal> = None;
        for (c, &id) in checks.iter().zip(ids.iter()) {
            let stored = new_tats[..charged]
                .iter()
                .rev()
                .find(|(k, _)| *k == id)
                .map(|(_, t)| *t)
                .or_else(|| {
                    guards[map_of(id)]
                        .as_ref()
                        .and_then(|g| g.get(&id).copied())
                })
                .unwrap_or(0);
            match gcra::check(c.quota, stored, now) {
                Verdict::Allow { tat } => {
                    new_tats[charged] = (id, tat);
                    charged += 1;
                }
                Verdict::Deny { retry_after } => {
                    if refusal.is_none_or(|r| retry_after > r.retry_after) {
                        refusal = Some(Refusal {
                            limit: c.limit,
                            retry_after,
                        });
                    }
                }
            }
        }
        if let Some(r) = refusal {
            return Err(r);
        }
        if !charge {
            return Ok(());
        }
        // Phase two: charge them all.
        for &(id, tat) in &new_tats[..charged] {
            if let Some(g) = guards[map_of(id)].as_mut() {
                g.insert(id, tat);
            }
        }
        Ok(())
    }
}

/// A limiter that allows everything, or refuses everything with a set answer: for
/// tests of what callers do with either.
pub struct FakeLimiter(pub Option<Refusal>);

#[async_trait::async_trait]
impl Limiter for FakeLimiter {
    async fn check(&self, _: &[Check<'_>], _: u64) -> Result<(), Denial> {
        match self.0 {
            Some(r) => Err(r.into()),
            None => Ok(()),
        }
    }

    async fn peek(&self, checks: &[Check<'_>], now: u64) -> Result<(), Denial> {
        self.check(checks, now).await
    }

    async fn refund(&self, _: &[Check<'_>], _: u64) -> Result<(), Unavailable> {
        Ok(())
    }

    async fn forget(&self, _: &Check<'_>) -> Result<(), Unavailable> {
        Ok(())
    }

    async fn standing(&self, c: &Check<'_>, _: u64) -> Result<gcra::Standing, Unavailable> {
        Ok(gcra::Standing {
            remaining: if self.0.is_some() { 0 } else { c.quota.burst() },
            retry_after: self.0.map(|r| r.retry_after),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    const S: u64 = 1_000_000_000;

    fn q(count: u32, secs: u64) -> Quota {
        Quota::per(count, Duration::from_secs(secs)).unwrap()
    }

    #[test]
    fn a_refusal_charges_no_other_limit() {
        let l = MemoryLimiter::new();
        let now = 10 * S;
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
        assert!(l.check_now(&[number, ip], now).is_ok());
        assert!(l.check_now(&[number, ip], now).is_ok());
        let refused = l.check_now(&[number, ip], now).unwrap_err();
        assert_eq!(refused.limit, "ip");
        // The number was charged twice, not three times: three more pass alone.
        for _ in 0..3 {
            assert!(l.check_now(&[number], now).is_ok());
        }
        assert_eq!(
            l.check_now(&[number], now).unwrap_err().limit,
            "destination"
        );
    }

    #[test]
    fn the_limit_that_keeps_the_request_out_longest_answers() {
        let l = MemoryLimiter::new();
        let a = Check {
            limit: "short",
            key: b"k",
            quota: q(1, 10),
        };
        let b = Check {
            limit: "long",
            key: b"k",
            quota: q(1, 100),
        };
        l.check_now(&[a, b], S).unwrap();
        let r = l.check_now(&[a, b], S).unwrap_err();
        assert_eq!((r.limit, r.retry_after), ("long", Duration::from_secs(100)));
    }

    #[test]
    fn peek_charges_nothing_and_refund_gives_back() {
        let l = MemoryLimiter::new();
        let c = Check {
            limit: "destination",
            key: b"+34600123456",
            quota: q(2, 600),
        };
        for _ in 0..5 {
            assert!(l.peek_now(&[c], S).is_ok());
        }
        l.check_now(&[c], S).unwrap();
        l.check_now(&[c], S).unwrap();
        assert_eq!(l.peek_now(&[c], S).unwrap_err().limit, "destination");
        l.refund_now(&[c], S);
        assert!(l.peek_now(&[c], S).is_ok());
        l.check_now(&[c], S).unwrap();
        assert!(l.check_now(&[c], S).is_err());
        // Refunding every charge forgets the key; refunding an unknown key is a no-op.
        l.refund_now(&[c], S);
        l.refund_now(&[c], S);
        l.refund_now(&[c], S);
        assert!(l.is_empty());
    }

    #[test]
    fn the_same_key_twice_in_one_request_counts_twice() {
        let l = MemoryLimiter::new();
        let c = Check {
            limit: "x",
            key: b"k",
            quota: q(1, 10),
        };
        assert!(l.check_now(&[c, c], S).is_err());
        assert!(
            l.check_now(&[c], S).is_ok(),
            "the refused pair charged nothing"
        );
    }

    #[test]
    fn idle_keys_are_reclaimed() {
        let l = MemoryLimiter::new();
        for i in 0..10_000u32 {
            let key = i.to_be_bytes();
            let c = Check {
                limit: "destination",
                key: &key,
                quota: q(5, 600),
            };
            l.check_now(&[c], S).unwrap();
        }
        assert_eq!(l.len(), 10_000);
        // Each key's TAT is one interval (120 s) ahead: still held at 100 s…
        assert_eq!(l.reclaim(100 * S), 10_000);
        // …and forgotten after, with its memory.
        assert_eq!(l.reclaim(122 * S), 0);
        assert!(l.is_empty());
    }

    #[test]
    fn concurrent_requests_never_pass_more_than_the_quota() {
        let l = Arc::new(MemoryLimiter::new());
        let allowed = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (l, allowed) = (l.clone(), allowed.clone());
                std::thread::spawn(move || {
                    for i in 0..1000u32 {
                        let other = (t * 1000 + i).to_be_bytes();
                        let checks = [
                            Check {
                                limit: "global",
                                key: b"login",
                                quota: q(100, 3600),
                            },
                            Check {
                                limit: "destination",
                                key: &other,
                                quota: q(5, 600),
                            },
                        ];
                        if l.check_now(&checks, S).is_ok() {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(allowed.load(Ordering::Relaxed), 100);
    }

    proptest::proptest! {
        /// Requests checked against layered limits (a global one and keyed ones,
        /// shared between requests in every combination), on a clock only ever
        /// read: no key of any limit lets through more than burst + W / emission in
        /// any window W, and a refused request is charged to none of them.
        #[test]
        fn layered_limits_never_pass_more_than_rate_times_window_plus_burst(
            requests in proptest::collection::vec((0u8..4, 0u8..3, 0u64..3_000), 1..300),
            counts in (1u32..6, 1u32..6, 1u32..6),
            bursts in (1u32..4, 1u32..4, 1u32..4),
        ) {
            let l = MemoryLimiter::new();
            let quota = |count, burst| Quota::new(count, Duration::from_secs(10), burst).unwrap();
            let quotas = [
                quota(counts.0, bursts.0),
                quota(counts.1, bursts.1),
                quota(counts.2, bursts.2),
            ];
            let mut now = 100 * S;
            // (limit index, key) -> times allowed.
            let mut allowed: std::collections::HashMap<(usize, u8), Vec<u64>> =
                Default::default();
            for (number, ip, gap_ms) in requests {
                now += gap_ms * 1_000_000;
                let (nk, ik) = ([number], [ip]);
                let checks = [
                    Check { limit: "global", key: b"all", quota: quotas[0] },
                    Check { limit: "destination", key: &nk, quota: quotas[1] },
                    Check { limit: "ip", key: &ik, quota: quotas[2] },
                ];
                let before: Vec<_> = checks.iter().map(|c| l.standing_now(c, now)).collect();
                match l.check_now(&checks, now) {
                    Ok(()) => {
                        for (i, key) in [(0, 0), (1, number), (2, ip)] {
                            allowed.entry((i, key)).or_default().push(now);
                        }
                    }
                    Err(_) => {
                        let after: Vec<_> = checks.iter().map(|c| l.standing_now(c, now)).collect();
                        proptest::prop_assert_eq!(before, after, "a refusal charged something");
                    }
                }
            }
            for ((i, _), times) in &allowed {
                let q = quotas[*i];
                for windows in [1u64, 3, 10] {
                    let w = q.emission().as_nanos() as u64 * windows;
                    let cap = u64::from(q.burst()) + windows;
                    for (j, start) in times.iter().enumerate() {
                        let inside = times[j..].iter().take_while(|t| **t < start + w).count() as u64;
                        proptest::prop_assert!(inside <= cap, "limit {}: {} in {} intervals", i, inside, windows);
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn the_fake_answers_as_told() {
        let refusal = Refusal {
            limit: "x",
            retry_after: Duration::from_secs(1),
        };
        assert_eq!(
            FakeLimiter(Some(refusal)).check(&[], 0).await,
            Err(Denial::Refused(refusal))
        );
        assert_eq!(FakeLimiter(None).check(&[], 0).await, Ok(()));
    }
}
