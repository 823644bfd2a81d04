//! Which event a webhook deliverer sends next: in order per verification, the
//! others meanwhile.
//!
//! Events with the same order key (a verification's id, hashed) form a lane. Only a
//! lane's first event is ever out; the next goes once it was taken or given up. A
//! failed event stays first in its lane until its retry time — the lanes of other
//! verifications go on. Pure bookkeeping, no clock or I/O: the deliverer says when.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use crate::domain::clock::UnixMillis;
use crate::store::events::KeptEvent;

/// An event and how many times it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub event: KeptEvent,
    pub failures: u32,
}

#[derive(Default)]
pub struct Lanes {
    lanes: HashMap<u64, VecDeque<Held>>,
    /// Lanes whose first event may go now, in the order they became so.
    ready: VecDeque<u64>,
    /// Lanes whose first event failed, by when to try it again.
    retries: BinaryHeap<Reverse<(i64, u64)>>,
    held: usize,
}

impl Lanes {
    /// How many events are held (out, waiting behind another, or waiting to retry).
    pub fn held(&self) -> usize {
        self.held
    }

    /// Hold `event` behind the earlier ones of its lane.
    pub fn push(&mut self, event: KeptEvent) {
        let key = event.order;
        let lane = self.lanes.entry(key).or_default();
        lane.push_back(Held { event, failures: 0 });
        if lane.len() == 1 {
            self.ready.push_back(key);
        }
        self.held += 1;
    }

    /// The next event to send at `now`: a lane's first event, ready or due for a
    /// retry. It stays held until [`Lanes::taken`] or [`Lanes::failed`].
    pub fn next(&mut self, now: UnixMillis) -> Option<Held> {
        while let Some(Reverse((at, key))) = self.retries.peek().copied() {
            if at > now.0 {
                break;
            }
            self.retries.pop();
            self.ready.push_back(key);
        }
        let key = self.ready.pop_front()?;
        self.lanes.get(&key).and_then(|l| l.front()).cloned()
    }

    /// When the earliest retry falls due.
    pub fn next_retry(&self) -> Option<UnixMillis> {
        self.retries.peek().map(|Reverse((at, _))| UnixMillis(*at))
    }

    /// The first event of lane `key` was taken by the receiver (or given up): the
    /// next one of the lane may go.
    pub fn taken(&mut self, key: u64) {
        let Some(lane) = self.lanes.get_mut(&key) else {
            return;
        };
        lane.pop_front();
        self.held -= 1;
        if lane.is_empty() {
            self.lanes.remove(&key);
        } else {
            self.ready.push_back(key);
        }
    }

    /// The first event of lane `key` failed: try it again at `retry_at`; its lane
    /// waits. Returns how many times it has failed now.
    pub fn failed(&mut self, key: u64, retry_at: UnixMillis) -> u32 {
        let Some(first) = self.lanes.get_mut(&key).and_then(|l| l.front_mut()) else {
            return 0;
        };
        first.failures += 1;
        self.retries.push(Reverse((retry_at.0, key)));
        first.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::events::EventId;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn event(seq: u64, order: u64) -> KeptEvent {
        KeptEvent {
            id: EventId { ms: 1, seq },
            order,
            at: UnixMillis(1),
            payload: Bytes::new(),
        }
    }

    #[test]
    fn a_lane_waits_for_its_first_event_and_the_others_go_on() {
        let mut l = Lanes::default();
        l.push(event(0, 7));
        l.push(event(1, 7));
        l.push(event(2, 9));
        let first = l.next(UnixMillis(0)).unwrap();
        assert_eq!(first.event.id.seq, 0);
        // Lane 7's second waits; lane 9 goes.
        assert_eq!(l.next(UnixMillis(0)).unwrap().event.id.seq, 2);
        assert!(l.next(UnixMillis(0)).is_none());
        assert_eq!(l.failed(7, UnixMillis(100)), 1);
        assert!(l.next(UnixMillis(99)).is_none());
        assert_eq!(l.next_retry(), Some(UnixMillis(100)));
        let again = l.next(UnixMillis(100)).unwrap();
        assert_eq!((again.event.id.seq, again.failures), (0, 1));
        l.taken(7);
        assert_eq!(l.next(UnixMillis(100)).unwrap().event.id.seq, 1);
        l.taken(7);
        l.taken(9);
        assert_eq!(l.held(), 0);
    }

    proptest! {
        /// Whatever fails and when, each lane's events are taken in the order they
        /// were pushed, every event is taken once, and nothing is out twice at once.
        #[test]
        fn each_lane_is_delivered_in_order_and_once(
            orders in prop::collection::vec(0u64..5, 1..60),
            fails in prop::collection::vec(any::<bool>(), 1..200),
        ) {
            let mut l = Lanes::default();
            for (seq, order) in orders.iter().enumerate() {
                l.push(event(seq as u64, *order));
            }
            let mut taken: Vec<KeptEvent> = Vec::new();
            let mut now = 0i64;
            let mut f = fails.iter().cycle();
            let mut steps = 0;
            while l.held() > 0 {
                steps += 1;
                prop_assert!(steps < 10_000);
                let mut out = Vec::new();
                while let Some(h) = l.next(UnixMillis(now)) {
                    prop_assert!(!out.iter().any(|o: &Held| o.event.order == h.event.order));
                    out.push(h);
                }
                for h in out {
                    if *f.next().unwrap() && h.failures < 3 {
                        l.failed(h.event.order, UnixMillis(now + 5));
                    } else {
                        l.taken(h.event.order);
                        taken.push(h.event);
                    }
                }
                now += 1;
            }
            prop_assert_eq!(taken.len(), orders.len());
            for key in 0..5 {
                let seqs: Vec<u64> = taken.iter().filter(|e| e.order == key).map(|e| e.id.seq).collect();
                let mut sorted = seqs.clone();
                sorted.sort();
                prop_assert_eq!(seqs, sorted);
            }
        }
    }
}
