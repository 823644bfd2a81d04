//! How long sends wait in the delivery queue, and whether the queue has become a
//! standing one that otpd should stop feeding.
//!
//! A queue bounded only by its length lets delivery fall behind by as many seconds as
//! its capacity holds at the current pace: when the machine or a carrier cannot keep
//! up, otpd goes on accepting requests whose codes reach people tens of seconds late,
//! and people who wait that long ask again, which makes it worse. What matters to the
//! person is the wait, so admission looks at the wait: each send's time in the queue
//! (its sojourn) is measured when a worker takes it, and when even the shortest
//! sojourn over a whole window was above the limit — a standing queue, not a burst —
//! new requests are refused (503, `Retry-After`) until the queue drains below it. The
//! shortest, not the last or the mean, so that one old job (a send claimed from a node
//! that died) does not stop admission; this is CoDel's observation, used for
//! admission instead of dropping.
//!
//! Under sustained overload admission alternates: some seconds of refusals while the
//! backlog drains (what is taken then was queued before they began), then requests
//! taken until it builds up again. Refusing only the excess — those that the jobs
//! ahead, at the pace they are taken, would keep past the limit — was tried on the
//! national-peak load: it held the queue at the limit itself, so every code waited
//! about that long (median 5.5 s against 2.6–3.5 s), more requests were refused and
//! fewer codes delivered.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::domain::clock::UnixMillis;

/// No sojourn seen yet in a window.
const NONE: u64 = u64::MAX;

pub struct Sojourn {
    limit_ms: u64,
    window_ms: i64,
    /// Start of the window being measured.
    window_start: AtomicI64,
    /// The shortest sojourn seen in it.
    window_min: AtomicU64,
    /// The shortest sojourn of the last whole window (`NONE` when nothing was taken),
    /// and when that window ended.
    standing: AtomicU64,
    standing_at: AtomicI64,
}

impl Sojourn {
    /// Refuse new work while the queue's standing wait is above `limit`; the window is
    /// the limit itself, at most a second.
    pub fn new(limit: Duration) -> Self {
        let limit_ms = limit.as_millis().max(1) as u64;
        Self {
            limit_ms,
            window_ms: limit_ms.min(1000) as i64,
            window_start: AtomicI64::new(i64::MIN),
            window_min: AtomicU64::new(NONE),
            standing: AtomicU64::new(NONE),
            standing_at: AtomicI64::new(i64::MIN),
        }
    }

    /// A worker took a send queued at `queued_at`.
    pub fn observe(&self, queued_at: UnixMillis, now: UnixMillis) {
        let waited = now.0.saturating_sub(queued_at.0).max(0) as u64;
        self.roll(now);
        self.window_min.fetch_min(waited, Ordering::Relaxed);
    }

    /// Close the window when its time is up: its shortest sojourn becomes the
    /// standing one. One caller wins the swap; the others measure into the new window.
    fn roll(&self, now: UnixMillis) {
        let start = self.window_start.load(Ordering::Relaxed);
        if start != i64::MIN && now.0 < start.saturating_add(self.window_ms) {
            return;
        }
        if self
            .window_start
            .compare_exchange(start, now.0, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let min = self.window_min.swap(NONE, Ordering::Relaxed);
        if start != i64::MIN {
            // A window closed only now, long after its time (nothing was taken
            // since), measured a queue that is history.
            let late = now.0 >= start.saturating_add(2 * self.window_ms);
            self.standing
                .store(if late { NONE } else { min }, Ordering::Relaxed);
            self.standing_at.store(now.0, Ordering::Relaxed);
        }
    }

    /// The standing wait: the shortest sojourn of the last whole window, if that
    /// window is recent. Long after the last send was taken there is no standing
    /// queue to speak of (otpd was idle; or no worker is taking anything, which the
    /// queue's capacity bounds).
    pub fn standing(&self, now: UnixMillis) -> Option<Duration> {
        let at = self.standing_at.load(Ordering::Relaxed);
        if at == i64::MIN || now.0.saturating_sub(at) > 2 * self.window_ms {
            return None;
        }
        match self.standing.load(Ordering::Relaxed) {
            NONE => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Whether new work should be refused now.
    pub fn over(&self, now: UnixMillis) -> bool {
        self.standing(now)
            .is_some_and(|d| d.as_millis() as u64 > self.limit_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(500);

    fn at(ms: i64) -> UnixMillis {
        UnixMillis(ms)
    }

    #[test]
    fn a_standing_queue_over_the_limit_refuses_until_it_drains() {
        let s = Sojourn::new(LIMIT);
        // A whole window in which every send had waited over half a second.
        for t in (0..=500).step_by(50) {
            s.observe(at(t - 800), at(t));
        }
        assert!(s.over(at(500)));
        assert_eq!(s.standing(at(500)), Some(Duration::from_millis(800)));
        // The queue drains: the next window's shortest wait is short again.
        s.observe(at(600), at(620));
        s.observe(at(990), at(1001));
        assert!(!s.over(at(1001)), "{:?}", s.standing(at(1001)));
    }

    #[test]
    fn one_old_send_among_quick_ones_does_not_stop_admission() {
        let s = Sojourn::new(LIMIT);
        s.observe(at(0), at(0));
        s.observe(at(10 - 30_000), at(10)); // claimed from a node that died
        s.observe(at(400), at(405));
        s.observe(at(600), at(601)); // closes the window
        assert!(!s.over(at(601)));
        assert_eq!(s.standing(at(601)), Some(Duration::ZERO));
    }

    #[test]
    fn nothing_measured_or_long_idle_is_no_standing_queue() {
        let s = Sojourn::new(LIMIT);
        assert!(!s.over(at(0)));
        s.observe(at(-900), at(0));
        // Only one window opened: nothing closed yet.
        assert_eq!(s.standing(at(100)), None);
        s.observe(at(-900), at(500));
        assert!(s.over(at(500)));
        // Nobody took a send since: the measure is stale.
        assert!(!s.over(at(500 + 2 * 500 + 1)));
    }

    #[test]
    fn the_first_send_after_an_idle_spell_does_not_revive_an_old_wait() {
        let s = Sojourn::new(LIMIT);
        s.observe(at(-900), at(0));
        s.observe(at(-900), at(500));
        assert!(s.over(at(500)));
        // Idle for seconds; then a send that did not wait closes the old window.
        s.observe(at(5000), at(5000));
        assert_eq!(s.standing(at(5000)), None);
        assert!(!s.over(at(5000)));
    }

    #[test]
    fn a_window_in_which_nothing_was_taken_says_nothing() {
        let s = Sojourn::new(LIMIT);
        s.observe(at(-900), at(0));
        s.roll(at(500)); // the window closes with one slow send
        assert!(s.over(at(500)));
        s.roll(at(1000)); // a window with no send taken at all
        assert_eq!(s.standing(at(1000)), None);
    }

    #[test]
    fn the_window_is_the_limit_up_to_a_second() {
        assert_eq!(Sojourn::new(Duration::from_millis(200)).window_ms, 200);
        assert_eq!(Sojourn::new(Duration::from_secs(5)).window_ms, 1000);
        assert_eq!(Sojourn::new(Duration::ZERO).window_ms, 1);
    }
}
