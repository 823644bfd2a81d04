//! Things due later (an SMSC's answers after its latency, its receipts after the
//! handset's delay), kept in one queue and handed out by one task when due.
//!
//! A task and a timer per message cost more than the message at load-test rates
//! (tens of thousands a second), and each woke the connection's writer on its own, so
//! every PDU was its own write. Here everything due in the same tick is handed out
//! together, in the order it was queued, and the writers send it together.

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

struct Entry<T> {
    due: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
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
            let mut heap = BinaryHeap::new();
            let mut seq = 0u64;
            let mut push = |heap: &mut BinaryHeap<Entry<T>>, (due, item)| {
                seq += 1;
                heap.push(Entry { due, seq, item });
            };
            loop {
                let next = heap.peek().map(|e: &Entry<T>| e.due);
                tokio::select! {
                    got = rx.recv() => match got {
                        Some(first) => {
                            push(&mut heap, first);
                            while let Ok(more) = rx.try_recv() {
                                push(&mut heap, more);
                            }
                        }
                        None => return,
                    },
                    () = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                        let now = Instant::now();
                        while heap.peek().is_some_and(|e| e.due <= now) {
                            deliver(heap.pop().expect("peeked").item);
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
}
