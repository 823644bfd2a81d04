//! Keys of sessions that closed recently, so that a message arriving after its
//! session settled counts as late, not as a message for nobody.
//!
//! Two generations: a key goes into the young one; when the young one has been
//! filling for `keep`, it becomes the old one and the old one is dropped whole. A key
//! is kept for at least `keep` and at most twice that, and nothing ever walks the
//! keys to expire them one by one: under national load a walk over a million
//! tombstones every few seconds held the generator's arrival loop, and the requests
//! due meanwhile left late.
//!
//! The maps resize incrementally (`griddle`), for the same reason: a million keys
//! rehashed at once stall every task that needs their shard.

use std::hash::{Hash, RandomState};
use std::time::{Duration, Instant};

type Set<K> = griddle::HashSet<K, RandomState>;

pub struct Tombstones<K> {
    young: Set<K>,
    old: Set<K>,
    /// When the young generation started filling.
    since: Instant,
    keep: Duration,
}

impl<K: Hash + Eq> Tombstones<K> {
    pub fn new(keep: Duration, now: Instant) -> Self {
        Self {
            young: Set::with_hasher(RandomState::new()),
            old: Set::with_hasher(RandomState::new()),
            since: now,
            keep,
        }
    }

    pub fn insert(&mut self, key: K, now: Instant) {
        if now.saturating_duration_since(self.since) >= self.keep {
            self.old = std::mem::replace(&mut self.young, Set::with_hasher(RandomState::new()));
            self.since = now;
        }
        self.young.insert(key);
    }

    pub fn contains(&self, key: &K) -> bool {
        self.young.contains(key) || self.old.contains(key)
    }

    pub fn remove(&mut self, key: &K) {
        self.young.remove(key);
        self.old.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_kept_at_least_keep_and_gone_after_twice_that() {
        let t0 = Instant::now();
        let keep = Duration::from_secs(10);
        let mut t = Tombstones::new(keep, t0);
        t.insert(1u64, t0 + Duration::from_secs(9));
        // A rotation at 10 s moves it to the old generation; it is still known.
        t.insert(2, t0 + Duration::from_secs(10));
        assert!(t.contains(&1) && t.contains(&2));
        // At 19 s (10 after key 1) it is still there: no rotation yet.
        t.insert(3, t0 + Duration::from_secs(19));
        assert!(t.contains(&1));
        // The next rotation (20 s) drops the generation holding key 1.
        t.insert(4, t0 + Duration::from_secs(20));
        assert!(!t.contains(&1));
        assert!(t.contains(&2) && t.contains(&3) && t.contains(&4));
    }

    #[test]
    fn a_removed_key_is_gone_from_both_generations() {
        let t0 = Instant::now();
        let mut t = Tombstones::new(Duration::from_secs(1), t0);
        t.insert("a", t0);
        t.insert("b", t0 + Duration::from_secs(1));
        t.remove(&"a");
        t.remove(&"b");
        assert!(!t.contains(&"a") && !t.contains(&"b"));
    }
}
