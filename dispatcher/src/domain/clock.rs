//! Time as the engine sees it: whole milliseconds since the Unix epoch, read through a
//! [`Clock`] so that expiry and cooldown can be tested by moving a fake clock instead
//! of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMillis(pub i64);

/// An optional [`UnixMillis`] in 8 bytes, where `Option<UnixMillis>` takes 16: a
/// verification and its sends keep several such times, and a store keeps millions
/// of verifications. `i64::MIN` (about 292 million years before 1970) stands for
/// none; a time that low is kept as the next millisecond.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaybeAt(i64);

impl MaybeAt {
    pub const NONE: MaybeAt = MaybeAt(i64::MIN);

    pub fn get(self) -> Option<UnixMillis> {
        (self.0 != i64::MIN).then_some(UnixMillis(self.0))
    }

    pub fn is_some(self) -> bool {
        self.0 != i64::MIN
    }
}

impl Default for MaybeAt {
    fn default() -> Self {
        MaybeAt::NONE
    }
}

impl From<UnixMillis> for MaybeAt {
    fn from(t: UnixMillis) -> Self {
        MaybeAt(t.0.max(i64::MIN + 1))
    }
}

impl From<Option<UnixMillis>> for MaybeAt {
    fn from(t: Option<UnixMillis>) -> Self {
        t.map_or(MaybeAt::NONE, MaybeAt::from)
    }
}

impl PartialEq<Option<UnixMillis>> for MaybeAt {
    fn eq(&self, other: &Option<UnixMillis>) -> bool {
        self.get() == *other
    }
}

impl std::fmt::Debug for MaybeAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.get(), f)
    }
}

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
    fn an_optional_time_in_eight_bytes_keeps_every_time_but_the_lowest() {
        assert_eq!(std::mem::size_of::<MaybeAt>(), 8);
        assert_eq!(MaybeAt::default().get(), None);
        for t in [0, 1, -1, 1_795_435_200_000, i64::MAX, i64::MIN + 1] {
            let at = MaybeAt::from(UnixMillis(t));
            assert_eq!(at.get(), Some(UnixMillis(t)));
            assert!(at.is_some() && at == Some(UnixMillis(t)));
        }
        assert_eq!(
            MaybeAt::from(UnixMillis(i64::MIN)).get(),
            Some(UnixMillis(i64::MIN + 1))
        );
        assert_eq!(MaybeAt::from(None::<UnixMillis>), MaybeAt::NONE);
        assert_eq!(
            format!("{:?}", MaybeAt::from(UnixMillis(5))),
            "Some(UnixMillis(5))"
        );
    }

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
