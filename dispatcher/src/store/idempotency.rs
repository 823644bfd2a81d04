//! The in-memory table of idempotency records, sharded like the verifications.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::time::Duration;

use hashbrown::DefaultHashBuilder;
use hashbrown::HashMap;
use parking_lot::Mutex;

use super::{Fingerprint, IdempotencyBegin, StoredResponse};
use crate::domain::clock::UnixMillis;

#[derive(Debug)]
enum Record {
    InProgress {
        fingerprint: Fingerprint,
        lapses_at: UnixMillis,
    },
    Done {
        fingerprint: Fingerprint,
        response: StoredResponse,
        lapses_at: UnixMillis,
    },
}

impl Record {
    fn lapses_at(&self) -> UnixMillis {
        match self {
            Record::InProgress { lapses_at, .. } | Record::Done { lapses_at, .. } => *lapses_at,
        }
    }
}

#[derive(Default)]
struct Shard {
    records: HashMap<Box<str>, Record>,
    /// (lapses_at, key) in time order, for reclaiming; stale entries are skipped.
    expiry: BinaryHeap<Reverse<(UnixMillis, Box<str>)>>,
}

impl Shard {
    fn reclaim(&mut self, now: UnixMillis, limit: usize) -> usize {
        let mut removed = 0;
        for _ in 0..limit {
            match self.expiry.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => break,
            }
            let Reverse((_, key)) = self.expiry.pop().expect("peeked");
            if self.records.get(&key).is_some_and(|r| r.lapses_at() <= now) {
                self.records.remove(&key);
                removed += 1;
            }
        }
        removed
    }
}

pub struct IdempotencyTable {
    shards: Box<[Mutex<Shard>]>,
    hasher: DefaultHashBuilder,
}

impl IdempotencyTable {
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| Mutex::default()).collect(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let h = self.hasher.hash_one(key);
        &self.shards[(h as usize) % self.shards.len()]
    }

    pub fn begin(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        now: UnixMillis,
        ttl: Duration,
    ) -> IdempotencyBegin {
        let mut shard = self.shard(key).lock();
        shard.reclaim(now, 4);
        if let Some(record) = shard.records.get(key).filter(|r| r.lapses_at() > now) {
            return match record {
                Record::InProgress { fingerprint: f, .. } if f == fingerprint => {
                    IdempotencyBegin::InProgress
                }
                Record::Done {
                    fingerprint: f,
                    response,
                    ..
                } if f == fingerprint => IdempotencyBegin::Replay(response.clone()),
                _ => IdempotencyBegin::Mismatch,
            };
        }
        let lapses_at = now.plus(ttl);
        shard.records.insert(
            key.into(),
            Record::InProgress {
                fingerprint: *fingerprint,
                lapses_at,
            },
        );
        shard.expiry.push(Reverse((lapses_at, key.into())));
        IdempotencyBegin::Started
    }

    pub fn finish(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        response: StoredResponse,
        now: UnixMillis,
        ttl: Duration,
    ) {
        let mut shard = self.shard(key).lock();
        let lapses_at = now.plus(ttl);
        let Some(record) = shard.records.get_mut(key) else {
            return;
        };
        if !matches!(record, Record::InProgress { fingerprint: f, .. } if f == fingerprint) {
            return;
        }
        *record = Record::Done {
            fingerprint: *fingerprint,
            response,
            lapses_at,
        };
        shard.expiry.push(Reverse((lapses_at, key.into())));
    }

    pub fn abandon(&self, key: &str, fingerprint: &Fingerprint) {
        let mut shard = self.shard(key).lock();
        if matches!(shard.records.get(key), Some(Record::InProgress { fingerprint: f, .. }) if f == fingerprint)
        {
            shard.records.remove(key);
        }
    }

    pub fn sweep(&self, now: UnixMillis) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().reclaim(now, usize::MAX))
            .sum()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().records.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixMillis = UnixMillis(1_000_000);
    const TTL: Duration = Duration::from_secs(60);

    fn response() -> StoredResponse {
        StoredResponse {
            status: 201,
            body: bytes::Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn begin_finish_replay() {
        let t = IdempotencyTable::new(4);
        assert_eq!(t.begin("k", &[1; 32], T0, TTL), IdempotencyBegin::Started);
        assert_eq!(
            t.begin("k", &[1; 32], T0, TTL),
            IdempotencyBegin::InProgress
        );
        assert_eq!(t.begin("k", &[2; 32], T0, TTL), IdempotencyBegin::Mismatch);
        t.finish("k", &[1; 32], response(), T0, TTL);
        assert_eq!(
            t.begin("k", &[1; 32], T0, TTL),
            IdempotencyBegin::Replay(response())
        );
        assert_eq!(t.begin("k", &[2; 32], T0, TTL), IdempotencyBegin::Mismatch);
    }

    #[test]
    fn abandon_frees_the_key_for_a_retry() {
        let t = IdempotencyTable::new(4);
        t.begin("k", &[1; 32], T0, TTL);
        t.abandon("k", &[2; 32]);
        assert_eq!(
            t.begin("k", &[1; 32], T0, TTL),
            IdempotencyBegin::InProgress
        );
        t.abandon("k", &[1; 32]);
        assert_eq!(t.begin("k", &[1; 32], T0, TTL), IdempotencyBegin::Started);
    }

    #[test]
    fn records_lapse_and_are_reclaimed() {
        let t = IdempotencyTable::new(2);
        for i in 0..100 {
            t.begin(&format!("k{i}"), &[1; 32], T0, TTL);
        }
        assert_eq!(t.len(), 100);
        let later = T0.plus(TTL);
        assert_eq!(
            t.begin("k1", &[9; 32], later, TTL),
            IdempotencyBegin::Started
        );
        // `begin` reclaims a few on its way; the sweep takes the rest.
        t.sweep(later);
        assert_eq!(t.len(), 1);
    }
}
