//! `verification.expired`, told when a code stops working rather than when its record
//! is swept (a retention later).
//!
//! Each node keeps the expiry times of the verifications it issued — only while a
//! sink listens, so that a node without webhooks or an audit trail pays nothing —
//! and, on the escalation timer, reads back those whose time came: one still pending
//! at its expiry is told expired; one approved, denied, canceled or locked before
//! was told then. A node that stops takes its list with it: the embedded store's
//! restart arms it again from the journal; on Redis the verifications of a node that
//! died are not told expired (the README says so).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use parking_lot::Mutex;

use super::Engine;
use crate::domain::clock::UnixMillis;
use crate::domain::verification::Status;
use crate::events::{EventData, EventKind};
use crate::secrets::id::VerificationId;
use crate::store::StoreError;

/// At most this many expiries are kept (about 32 bytes each); past it the oldest
/// issue's is kept and the newest is not, and it is counted in the log.
const MAX_ARMED: usize = 8 << 20;

/// (expiry in Unix milliseconds, verification id), earliest on top.
type Heap = BinaryHeap<Reverse<(i64, [u8; 16])>>;

/// Expiry times of this node's verifications, earliest first.
#[derive(Default)]
pub(crate) struct Expiries {
    heap: Mutex<Heap>,
}

impl Expiries {
    /// Remember that `id` expires at `at`. False when the list is full.
    pub(crate) fn arm(&self, id: &VerificationId, at: UnixMillis) -> bool {
        let mut heap = self.heap.lock();
        if heap.len() >= MAX_ARMED {
            return false;
        }
        heap.push(Reverse((at.0, *id.as_bytes())));
        true
    }

    /// Take up to `limit` of those whose time is `now` or earlier.
    pub(crate) fn due(&self, now: UnixMillis, limit: usize) -> Vec<VerificationId> {
        let mut heap = self.heap.lock();
        let mut out = Vec::new();
        while out.len() < limit {
            match heap.peek() {
                Some(Reverse((at, _))) if *at <= now.0 => {
                    let Reverse((_, id)) = heap.pop().expect("peeked");
                    out.push(VerificationId::from_bytes(id));
                }
                _ => break,
            }
        }
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.lock().len()
    }
}

impl Engine {
    /// Remember when `id` expires, if anybody listens for it.
    pub(crate) fn arm_expiry(&self, id: &VerificationId, at: UnixMillis) {
        if self.events.listening() && !self.expiries.arm(id, at) {
            tracing::warn!(
                armed = self.expiries.len(),
                "too many verifications waiting to expire: this one will not be told expired"
            );
        }
    }

    /// Tell `verification.expired` for up to `limit` verifications whose time came
    /// and that nothing ended before. Returns how many were looked at.
    pub async fn expire_due(&self, limit: usize) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let due = self.expiries.due(now, limit);
        let looked = due.len();
        for (i, id) in due.iter().enumerate() {
            let v = match self.stores.verifications.get(id).await {
                Ok(v) => v,
                Err(e) => {
                    // Put back what was not looked at: the next pass tries again.
                    for id in &due[i..] {
                        self.expiries.arm(id, now);
                    }
                    return Err(e);
                }
            };
            let Some(v) = v else { continue };
            if v.status(now) != Status::Expired {
                continue;
            }
            self.emit(
                EventKind::Expired,
                v.client,
                EventData {
                    subject: v.subject.as_deref().map(Into::into),
                    ..EventData::of(&v.id, v.to, "expired")
                },
            );
        }
        Ok(looked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::id::ShardTag;

    #[test]
    fn due_gives_the_earliest_first_and_only_those_whose_time_came() {
        let e = Expiries::default();
        let id = |n: u8| VerificationId::new(ShardTag(0), [n; 14]);
        e.arm(&id(3), UnixMillis(300));
        e.arm(&id(1), UnixMillis(100));
        e.arm(&id(2), UnixMillis(200));
        assert!(e.due(UnixMillis(50), 10).is_empty());
        assert_eq!(e.due(UnixMillis(250), 1), vec![id(1)]);
        assert_eq!(e.due(UnixMillis(250), 10), vec![id(2)]);
        assert_eq!(e.len(), 1);
        assert_eq!(e.due(UnixMillis(300), 10), vec![id(3)]);
    }
}
