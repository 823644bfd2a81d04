//! A carrier's throughput cap: messages per second across all its binds, enforced
//! with GCRA (governor), and a bounded line of messages waiting for their turn.
//!
//! The cap is the carrier's contract, so a message waits rather than exceed it; but
//! it never waits past its deadline (a code about to expire is worth nothing), and the
//! line is bounded: when it is full the carrier is busy and routing tries the next
//! one. GCRA with a burst of one spaces messages by `1/tps`, so no one-second window
//! ever holds more than `tps` of them.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock as _, ReasonablyRealtime};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

/// Governor's clock read from tokio's, so that the cap's turns and the waits for
/// them are on one clock — the one tests pause and advance.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl governor::clock::Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

impl ReasonablyRealtime for TokioClock {}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// Why a message did not get its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ThrottleError {
    #[error("{waiting} messages are already waiting for this carrier's throughput cap")]
    QueueFull { waiting: usize },
    #[error("the turn under this carrier's throughput cap comes after the send deadline")]
    Deadline,
}

pub struct Throttle {
    carrier: std::sync::Arc<str>,
    tps: Option<NonZeroU32>,
    limiter: Option<Limiter>,
    clock: TokioClock,
    capacity: usize,
    waiting: AtomicUsize,
}

/// Takes the place in line back when the waiting ends, however it ends.
struct InLine<'a>(&'a Throttle);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        let now = self.0.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!("otpd_carrier_queue_depth", "carrier" => self.0.carrier.clone())
            .set(now as f64);
    }
}

impl Throttle {
    /// `tps`: messages per second, `None` for no cap; `capacity`: messages that may
    /// wait at once.
    pub fn new(carrier: &str, tps: Option<NonZeroU32>, capacity: usize) -> Self {
        let clock = TokioClock;
        Self {
            carrier: std::sync::Arc::from(carrier),
            tps,
            limiter: tps.map(|tps| {
                RateLimiter::direct_with_clock(
                    Quota::per_second(tps).allow_burst(NonZeroU32::MIN),
                    clock,
                )
            }),
            clock,
            capacity,
            waiting: AtomicUsize::new(0),
        }
    }

    pub fn tps(&self) -> Option<NonZeroU32> {
        self.tps
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Messages waiting for their turn now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Wait for this message's turn; `Ok` with how long it waited.
    pub async fn admit(&self, deadline: Instant) -> Result<Duration, ThrottleError> {
        let Some(limiter) = &self.limiter else {
            return Ok(Duration::ZERO);
        };
        if limiter.check().is_ok() {
            return Ok(Duration::ZERO);
        }
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _in_line = InLine(self);
        if before >= self.capacity {
            return Err(ThrottleError::QueueFull { waiting: before });
        }
        metrics::gauge!("otpd_carrier_queue_depth", "carrier" => self.carrier.clone())
            .set((before + 1) as f64);
        let started = Instant::now();
        loop {
            let wait = match limiter.check() {
                Ok(()) => break,
                Err(not_until) => not_until.wait_time_from(self.clock.now()),
            };
            if Instant::now() + wait > deadline {
                return Err(ThrottleError::Deadline);
            }
            tokio::time::sleep(wait).await;
        }
        let waited = started.elapsed();
        metrics::histogram!("otpd_carrier_wait_seconds", "carrier" => self.carrier.clone())
            .record(waited.as_secs_f64());
        Ok(waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn no_cap_never_waits() {
        let t = Throttle::new("c", None, 0);
        for _ in 0..1000 {
            assert_eq!(t.admit(far()).await, Ok(Duration::ZERO));
        }
    }

    /// The cap holds over a long stretch (sixteen seconds of it, on a paused clock):
    /// never more than `tps` in any one second, and the whole cap used.
    #[tokio::test(start_paused = true)]
    async fn the_cap_holds_second_by_second() {
        const TPS: u32 = 20;
        let t = std::sync::Arc::new(Throttle::new("c", NonZeroU32::new(TPS), 10_000));
        let deadline = Instant::now() + Duration::from_secs(60);
        let turns: Vec<_> = (0..TPS * 16)
            .map(|_| {
                let t = t.clone();
                tokio::spawn(async move {
                    t.admit(deadline).await.unwrap();
                    Instant::now()
                })
            })
            .collect();
        let mut at = Vec::new();
        for turn in turns {
            at.push(turn.await.unwrap());
        }
        at.sort();
        for (i, t0) in at.iter().enumerate() {
            let in_second = at[i..]
                .iter()
                .take_while(|t| t.duration_since(*t0) < Duration::from_secs(1))
                .count();
            assert!(in_second <= TPS as usize, "{in_second} within one second");
        }
        let span = at.last().unwrap().duration_since(at[0]);
        let expected = Duration::from_secs_f64(f64::from(TPS * 16 - 1) / f64::from(TPS));
        assert!(
            span >= expected && span < expected + Duration::from_millis(100),
            "{span:?}"
        );
    }

    #[tokio::test]
    async fn a_full_line_and_a_near_deadline_are_refused_at_once() {
        let t = Throttle::new("c", NonZeroU32::new(1), 0);
        assert_eq!(
            t.admit(far()).await,
            Ok(Duration::ZERO),
            "the first one's turn"
        );
        assert_eq!(
            t.admit(far()).await,
            Err(ThrottleError::QueueFull { waiting: 0 })
        );
        let t = Throttle::new("c", NonZeroU32::new(1), 10);
        t.admit(far()).await.unwrap();
        let soon = Instant::now() + Duration::from_millis(100);
        assert_eq!(t.admit(soon).await, Err(ThrottleError::Deadline));
        assert_eq!(t.waiting(), 0, "the place in line was given back");
    }
}
