//! GCRA (the generic cell rate algorithm), as a pure function of one key's state.
//!
//! A limit of `count` per `period` with a burst of `burst` spaces requests by an
//! emission interval `T = period / count` and lets them run ahead of that schedule
//! by at most `τ = T × (burst − 1)`. The whole state of a key is one number, its
//! theoretical arrival time (TAT). Keeping it pure — the caller passes the time and
//! stores the TAT — lets one request be checked against several limits first and
//! charged to all of them only when every one allows it, so that a refusal by one
//! limit consumes nothing from the others; and the same arithmetic can run in a
//! Redis script for the shared store.

use std::time::Duration;

/// A limit: `count` requests per `period`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Emission interval, in nanoseconds.
    emission: u64,
    /// How far ahead of the schedule requests may run, in nanoseconds.
    tolerance: u64,
}

/// Why a quota cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("the count and the burst must be at least 1")]
    Zero,
    #[error("the period divided by the count must be at least 1 ns and at most a year")]
    Interval,
}

impl Quota {
    pub fn new(count: u32, period: Duration, burst: u32) -> Result<Quota, QuotaError> {
        if count == 0 || burst == 0 {
            return Err(QuotaError::Zero);
        }
        let emission = period.as_nanos() / u128::from(count);
        if emission == 0 || emission > 365 * 24 * 3600 * 1_000_000_000 {
            return Err(QuotaError::Interval);
        }
        let emission = emission as u64;
        Ok(Quota {
            emission,
            tolerance: emission * u64::from(burst - 1),
        })
    }

    /// `count` per `period`, with all of them allowed at once.
    pub fn per(count: u32, period: Duration) -> Result<Quota, QuotaError> {
        Quota::new(count, period, count)
    }

    pub fn emission(&self) -> Duration {
        Duration::from_nanos(self.emission)
    }

    /// How far ahead of the schedule requests may run: `emission × (burst − 1)`.
    pub fn tolerance(&self) -> Duration {
        Duration::from_nanos(self.tolerance)
    }

    pub fn burst(&self) -> u32 {
        (self.tolerance / self.emission + 1) as u32
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at once, then 1 every {}",
            self.burst(),
            humantime::format_duration(Duration::from_millis(self.emission / 1_000_000))
        )
    }
}

/// Where a key stands, without charging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Requests that would be allowed right now, one after another.
    pub remaining: u32,
    /// When the next one is allowed, if none is now.
    pub retry_after: Option<Duration>,
}

/// The standing of a key whose stored TAT is `tat`.
pub fn standing(quota: Quota, tat: u64, now: u64) -> Standing {
    let ahead = tat.max(now) - now;
    if ahead <= quota.tolerance {
        Standing {
            remaining: ((quota.tolerance - ahead) / quota.emission + 1) as u32,
            retry_after: None,
        }
    } else {
        Standing {
            remaining: 0,
            retry_after: Some(Duration::from_nanos(ahead - quota.tolerance)),
        }
    }
}

/// The answer for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed: store this TAT for the key (only if every other limit allows too).
    Allow { tat: u64 },
    /// Refused: the earliest a request could be allowed is this long from now.
    Deny { retry_after: Duration },
}

/// Check one request at `now` (nanoseconds on any monotonic scale) against a key
/// whose stored TAT is `tat` (0, or anything in the past, for a key never seen).
/// Once `now` passes a key's TAT the key is back to a full burst, the same as a key
/// never seen: from then on its state can be forgotten, which is how keyed limiters
/// stay bounded.
pub fn check(quota: Quota, tat: u64, now: u64) -> Verdict {
    let tat = tat.max(now);
    // Allowed when the schedule is no more than `tolerance` ahead of now.
    let ahead = tat - now;
    if ahead <= quota.tolerance {
        Verdict::Allow {
            tat: tat.saturating_add(quota.emission),
        }
    } else {
        Verdict::Deny {
            retry_after: Duration::from_nanos(ahead - quota.tolerance),
        }
    }
}

/// Give one request back to a key whose stored TAT is `tat`: the charge of a request
/// that, once admitted, turned out to send nothing (a duplicate). Returns the TAT to
/// store, 0 when the key is back to a full burst.
pub fn refund(quota: Quota, tat: u64, now: u64) -> u64 {
    let back = tat.saturating_sub(quota.emission);
    if back <= now { 0 } else { back }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_burst_then_one_per_interval() {
        let q = Quota::new(5, Duration::from_secs(600), 5).unwrap();
        assert_eq!(q.emission(), Duration::from_secs(120));
        assert_eq!(q.burst(), 5);
        let mut tat = 0;
        let now = 1_000 * S;
        for _ in 0..5 {
            match check(q, tat, now) {
                Verdict::Allow { tat: t } => tat = t,
                v => panic!("{v:?}"),
            }
        }
        assert_eq!(
            check(q, tat, now),
            Verdict::Deny {
                retry_after: Duration::from_secs(120)
            }
        );
        assert!(matches!(
            check(q, tat, now + 120 * S),
            Verdict::Allow { .. }
        ));
        assert!(matches!(check(q, tat, now + 119 * S), Verdict::Deny { .. }));
    }

    #[test]
    fn a_refund_gives_one_request_back() {
        let q = Quota::new(2, Duration::from_secs(60), 2).unwrap();
        let now = 100 * S;
        let Verdict::Allow { tat } = check(q, 0, now) else {
            panic!()
        };
        let Verdict::Allow { tat } = check(q, tat, now) else {
            panic!()
        };
        assert!(matches!(check(q, tat, now), Verdict::Deny { .. }));
        assert_eq!(
            standing(q, tat, now),
            Standing {
                remaining: 0,
                retry_after: Some(Duration::from_secs(30))
            }
        );
        let tat = refund(q, tat, now);
        assert_eq!(standing(q, tat, now).remaining, 1);
        assert_eq!(standing(q, 0, now).remaining, 2);
        assert!(matches!(check(q, tat, now), Verdict::Allow { .. }));
        // Refunding the last charge forgets the key.
        assert_eq!(refund(q, refund(q, tat, now), now), 0);
    }

    #[test]
    fn bad_quotas_are_refused() {
        assert_eq!(
            Quota::new(0, Duration::from_secs(1), 1),
            Err(QuotaError::Zero)
        );
        assert_eq!(
            Quota::new(1, Duration::from_secs(1), 0),
            Err(QuotaError::Zero)
        );
        assert_eq!(
            Quota::new(10, Duration::from_nanos(5), 1),
            Err(QuotaError::Interval)
        );
    }

    proptest! {
        /// Whatever the arrival times, no window of length W lets through more than
        /// burst + W / emission requests (W a multiple of the emission interval; the
        /// clock only ever read, never slept on).
        #[test]
        fn never_more_than_rate_times_window_plus_burst(
            count in 1u32..50,
            period_ms in 1u64..10_000,
            burst in 1u32..20,
            gaps in proptest::collection::vec(0u64..2_000_000_000, 1..400),
            windows in 1u64..20,
        ) {
            let Ok(q) = Quota::new(count, Duration::from_millis(period_ms), burst) else {
                return Ok(());
            };
            let mut tat = 0;
            let mut now = 5 * S;
            let mut allowed = Vec::new();
            for gap in gaps {
                now += gap % (q.emission * 3 + 1);
                if let Verdict::Allow { tat: t } = check(q, tat, now) {
                    tat = t;
                    allowed.push(now);
                }
            }
            let window = q.emission * windows;
            let cap = u64::from(q.burst()) + windows;
            for (i, start) in allowed.iter().enumerate() {
                let inside = allowed[i..].iter().take_while(|t| **t < start + window).count() as u64;
                prop_assert!(inside <= cap, "{} in a window of {} intervals, cap {}", inside, windows, cap);
            }
        }

        /// A refusal says when to come back, and coming back then is allowed.
        #[test]
        fn retry_after_is_exact(count in 1u32..20, burst in 1u32..5, n in 1usize..40) {
            let q = Quota::new(count, Duration::from_secs(60), burst).unwrap();
            let now = 100 * S;
            let mut tat = 0;
            for _ in 0..n {
                match check(q, tat, now) {
                    Verdict::Allow { tat: t } => tat = t,
                    Verdict::Deny { retry_after } => {
                        let later = now + retry_after.as_nanos() as u64;
                        let allowed = matches!(check(q, tat, later), Verdict::Allow { .. });
                        let early = matches!(check(q, tat, later - 1), Verdict::Deny { .. });
                        prop_assert!(allowed, "not allowed after {:?}", retry_after);
                        prop_assert!(early, "allowed before {:?}", retry_after);
                        break;
                    }
                }
            }
        }
    }
}
