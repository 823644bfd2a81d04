//! Time as the engine sees it: whole milliseconds since the Unix epoch, read through a
//! [`Clock`] so that expiry and cooldown can be tested by moving a fake clock instead
//! of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    pub fn plus(self, d: Duration) -> Self {
        UnixMillis(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    pub fn minus(self, d: Duration) -> Self {
        UnixMillis(
            self.0
                .saturating_sub(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// Time from `self` until `later`, zero if `later` is not after `self`.
    pub fn until(self, later: UnixMillis) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0).max(0) as u64)
    }

    /// RFC 3339 in UTC with second precision, e.g. `2026-11-23T10:00:00Z`.
    pub fn to_rfc3339(self) -> String {
        self.rfc3339().to_string()
    }

    /// The same, as a `Display` value that formats without allocating.
    pub fn rfc3339(self) -> Rfc3339 {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64))
    }
}

/// A time formatted as RFC 3339 when displayed.
pub type Rfc3339 = humantime::Rfc3339Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixMillis;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        UnixMillis(since.as_millis() as i64)
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: UnixMillis) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }

    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }

    pub fn set(&self, t: UnixMillis) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_seconds() {
        assert_eq!(
            UnixMillis(1_795_435_200_999).to_rfc3339(),
            "2026-11-23T12:00:00Z"
        );
    }

    #[test]
    fn until_never_goes_negative() {
        assert_eq!(UnixMillis(10).until(UnixMillis(5)), Duration::ZERO);
        assert_eq!(
            UnixMillis(5).until(UnixMillis(10)),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(UnixMillis(1000));
        let other = clock.clone();
        assert_eq!(clock.now(), UnixMillis(1000));
        other.advance(Duration::from_secs(2));
        assert_eq!(clock.now(), UnixMillis(3000));
    }
}
