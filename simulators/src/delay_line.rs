//! Things due later (an SMSC's answers after its latency, its receipts after the
//! handset's delay), kept in one queue and handed out by one task when due.
//!
//! A task and a timer per message cost more than the message at load-test rates
//! (tens of thousands a second), and each woke the connection's writer on its own, so
//! every PDU was its own write. Here everything due in the same tick is handed out
//! together, in the order it was queued, and the writers send it together.
//!
//! The heap orders small keys (when, queue order, a slot); the items wait in a slab.
//! Tens of thousands of receipts wait at once, and a heap of the items themselves
//! moved each one (a few hundred bytes) through every level on every pop.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

/// The sending side; the task ends when every `DelayLine` is dropped or on stop.
pub struct DelayLine<T> {
    tx: mpsc::UnboundedSender<(Instant, T)>,
}

impl<T> Clone for DelayLine<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

struct Entry {
    due: Instant,
    seq: u64,
    /// Where the item waits in the slab.
    slot: usize,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Earliest first (the heap is a max-heap), then first queued.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

impl<T: Send + 'static> DelayLine<T> {
    /// Start the task; `deliver` is called with each item when it is due.
    pub fn start(
        mut stop: watch::Receiver<bool>,
        mut deliver: impl FnMut(T) + Send + 'static,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, T)>();
        tokio::spawn(async move {
            let mut waiting = Waiting::default();
            loop {
                let next = waiting.heap.peek().map(|e| e.due);
                tokio::select! {
                    got = rx.recv() => match got {
                        Some((due, item)) => {
                            waiting.push(due, item);
                            while let Ok((due, item)) = rx.try_recv() {
                                waiting.push(due, item);
                            }
                        }
                        None => return,
                    },
                    () = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                        let now = Instant::now();
                        while let Some(item) = waiting.pop_due(now) {
                            deliver(item);
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
        });
        Self { tx }
    }

    /// Hand `item` out at `due`.
    pub fn at(&self, due: Instant, item: T) {
        let _ = self.tx.send((due, item));
    }
}

/// The items not yet due: keys in a heap, items in a slab whose free slots are reused.
struct Waiting<T> {
    heap: BinaryHeap<Entry>,
    items: Vec<Option<T>>,
    free: Vec<usize>,
    seq: u64,
}

impl<T> Default for Waiting<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            items: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }
}

impl<T> Waiting<T> {
    fn push(&mut self, due: Instant, item: T) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.items[slot] = Some(item);
                slot
            }
            None => {
                self.items.push(Some(item));
                self.items.len() - 1
            }
        };
        self.seq += 1;
        self.heap.push(Entry {
            due,
            seq: self.seq,
            slot,
        });
    }

    /// The earliest item due by `now`, if any.
    fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.heap.peek()?.due > now {
            return None;
        }
        let slot = self.heap.pop().expect("peeked").slot;
        self.free.push(slot);
        self.items[slot].take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[tokio::test]
    async fn items_come_out_when_due_in_time_then_queue_order() {
        let (_stop_tx, stop) = watch::channel(false);
        let out = Arc::new(Mutex::new(Vec::new()));
        let seen = out.clone();
        let line = DelayLine::start(stop, move |i: u32| seen.lock().unwrap().push(i));
        let t0 = Instant::now();
        line.at(t0 + Duration::from_millis(90), 3);
        line.at(t0 + Duration::from_millis(50), 1);
        line.at(t0 + Duration::from_millis(90), 4);
        line.at(t0 + Duration::from_millis(70), 2);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(out.lock().unwrap().is_empty(), "nothing before it is due");
        tokio::time::sleep_until(t0 + Duration::from_millis(300)).await;
        assert_eq!(*out.lock().unwrap(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn waiting_items_come_out_in_order_and_slots_are_reused() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Waiting::default();
        for (ms, item) in [(30, "c"), (10, "a"), (30, "d"), (20, "b")] {
            w.push(at(ms), item);
        }
        assert_eq!(w.pop_due(at(5)), None);
        assert_eq!(w.pop_due(at(20)), Some("a"));
        assert_eq!(w.pop_due(at(20)), Some("b"));
        assert_eq!(w.pop_due(at(20)), None);
        w.push(at(25), "e");
        w.push(at(40), "f");
        assert_eq!(w.items.len(), 4, "freed slots are taken again");
        let rest: Vec<_> = std::iter::from_fn(|| w.pop_due(at(100))).collect();
        assert_eq!(rest, ["e", "c", "d", "f"]);
        assert!(w.heap.is_empty());
    }
}
