//! A carrier's circuit breaker: an error rate over a sliding window of recent sends
//! opens it; after a cool-down one probe is let through (half-open), and its answer
//! closes or re-opens it.
//!
//! Pure: the caller passes the time, so the state machine is tested without sleeping.
//! The window is a ring of ten buckets, each a tenth of the window long, so the rate
//! forgets old sends a bucket at a time without keeping one entry per send.

use std::time::Duration;

use crate::domain::clock::UnixMillis;

/// When a carrier counts as failing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// How far back sends count.
    pub window: Duration,
    /// Sends needed in the window before the rate means anything.
    pub min_sends: u32,
    /// Share of failed sends (0 to 1) that opens the breaker.
    pub error_rate: f64,
    /// How long an open breaker refuses before letting a probe through.
    pub cool_down: Duration,
}

/// The configuration's defaults (`[routing.breaker]`).
impl Default for BreakerConfig {
    fn default() -> Self {
        Self::from(&crate::config::BreakerSection::default())
    }
}

impl From<&crate::config::BreakerSection> for BreakerConfig {
    fn from(s: &crate::config::BreakerSection) -> Self {
        Self {
            window: s.window,
            min_sends: s.min_sends,
            error_rate: s.error_rate,
            cool_down: s.cool_down,
        }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Sends go through; their answers are counted.
    Closed,
    /// Sends are refused until the cool-down ends.
    Open { until: UnixMillis },
    /// One probe is out (since `since`); others are refused until it answers.
    HalfOpen { since: UnixMillis },
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which slice of time (in bucket widths since the epoch) it counts.
    slot: i64,
    sends: u32,
    failures: u32,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    buckets: [Bucket; BUCKETS],
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    /// Take new settings (a reload); the counts so far are kept.
    pub fn reconfigure(&mut self, config: BreakerConfig) {
        self.config = config;
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// May a send go to this carrier now? An open breaker whose cool-down is over
    /// turns half-open and lets this one through as the probe. A probe that never
    /// answered (its task died) is replaced after another cool-down.
    pub fn allow(&mut self, now: UnixMillis) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen { since: now };
                true
            }
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { since } if now >= since.plus(self.config.cool_down) => {
                self.state = BreakerState::HalfOpen { since: now };
                true
            }
            BreakerState::HalfOpen { .. } => false,
        }
    }

    /// Whether [`Breaker::allow`] would let a send through, without taking the probe.
    pub fn is_available(&self, now: UnixMillis) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until } => now >= until,
            BreakerState::HalfOpen { since } => now >= since.plus(self.config.cool_down),
        }
    }

    /// Count a send's answer: `ok` when the carrier took it (a refusal of the number
    /// itself is the number's fault and is not counted as the carrier's failure).
    pub fn record(&mut self, ok: bool, now: UnixMillis) {
        match self.state {
            BreakerState::HalfOpen { .. } => {
                if ok {
                    self.state = BreakerState::Closed;
                    self.buckets = [Bucket::default(); BUCKETS];
                } else {
                    self.open(now);
                }
                return;
            }
            // A late answer of a send made before the breaker opened changes nothing.
            BreakerState::Open { .. } => return,
            BreakerState::Closed => {}
        }
        let width = self.bucket_ms();
        let slot = now.0.div_euclid(width);
        let bucket = &mut self.buckets[slot.rem_euclid(BUCKETS as i64) as usize];
        if bucket.slot != slot {
            *bucket = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        bucket.sends += 1;
        bucket.failures += u32::from(!ok);
        let (sends, failures) = self.counts(slot);
        if sends >= self.config.min_sends.max(1)
            && f64::from(failures) >= self.config.error_rate * f64::from(sends)
        {
            self.open(now);
        }
    }

    /// Sends and failures within the window ending in `slot`.
    fn counts(&self, slot: i64) -> (u32, u32) {
        self.buckets
            .iter()
            .filter(|b| slot - b.slot < BUCKETS as i64 && b.slot <= slot)
            .fold((0, 0), |(s, f), b| (s + b.sends, f + b.failures))
    }

    /// The error rate over the window as of `now` (0 when nothing was sent).
    pub fn error_rate(&self, now: UnixMillis) -> f64 {
        let (sends, failures) = self.counts(now.0.div_euclid(self.bucket_ms()));
        if sends == 0 {
            0.0
        } else {
            f64::from(failures) / f64::from(sends)
        }
    }

    fn bucket_ms(&self) -> i64 {
        (self.config.window.as_millis() as i64 / BUCKETS as i64).max(1)
    }

    fn open(&mut self, now: UnixMillis) {
        self.state = BreakerState::Open {
            until: now.plus(self.config.cool_down),
        };
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixMillis = UnixMillis(1_800_000_000_000);

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            window: Duration::from_secs(10),
            min_sends: 10,
            error_rate: 0.5,
            cool_down: Duration::from_secs(5),
        })
    }

    fn at(ms: i64) -> UnixMillis {
        UnixMillis(T0.0 + ms)
    }

    #[test]
    fn opens_when_the_error_rate_crosses_the_threshold_with_enough_sends() {
        let mut b = breaker();
        for i in 0..9 {
            b.record(false, at(i));
        }
        assert_eq!(b.state(), BreakerState::Closed, "too few sends to judge");
        b.record(false, at(9));
        assert_eq!(b.state(), BreakerState::Open { until: at(5009) });
        assert!(!b.allow(at(100)));
    }

    #[test]
    fn a_healthy_majority_keeps_it_closed() {
        let mut b = breaker();
        for i in 0..100 {
            b.record(i % 3 != 0, at(i * 10));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert!((b.error_rate(at(1000)) - 0.34).abs() < 0.01);
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut b = breaker();
        for i in 0..8 {
            b.record(false, at(i));
        }
        // Eleven seconds later the eight failures are out of the 10 s window.
        for i in 0..8 {
            b.record(true, at(11_000 + i));
        }
        b.record(false, at(11_100));
        b.record(false, at(11_101));
        assert_eq!(b.state(), BreakerState::Closed);
        assert!((b.error_rate(at(11_200)) - 0.2).abs() < 1e-9);
    }

    #[test]
    fn half_opens_after_the_cool_down_with_one_probe() {
        let mut b = breaker();
        for i in 0..10 {
            b.record(false, at(i));
        }
        assert!(!b.allow(at(5000)));
        assert!(!b.is_available(at(5008)));
        assert!(b.allow(at(5009)), "the probe");
        assert_eq!(b.state(), BreakerState::HalfOpen { since: at(5009) });
        assert!(!b.allow(at(5010)), "one probe at a time");
        // The probe fails: open again for a cool-down.
        b.record(false, at(5100));
        assert_eq!(b.state(), BreakerState::Open { until: at(10_100) });
        // The next probe succeeds: closed, with a clean window.
        assert!(b.allow(at(10_100)));
        b.record(true, at(10_200));
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.error_rate(at(10_200)), 0.0);
    }

    #[test]
    fn a_lost_probe_is_replaced_after_a_cool_down() {
        let mut b = breaker();
        for i in 0..10 {
            b.record(false, at(i));
        }
        assert!(b.allow(at(6000)));
        assert!(!b.allow(at(7000)));
        assert!(b.allow(at(11_000)), "the first probe never answered");
    }
}
