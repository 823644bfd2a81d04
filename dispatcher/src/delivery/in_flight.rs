//! What this node's workers are doing with the sends they took: which they are
//! making now, and the answers they could not record.
//!
//! A job the store queued stays pending until its answer is recorded. If recording
//! fails (the store is away longer than the retries), the job goes idle, and this
//! node may claim it back: the store then says the send is this node's own
//! ([`TakeSend::Mine`](crate::store::TakeSend::Mine)). Either another worker of
//! this node is still making it (a second copy of the job: it is theirs), or its
//! worker finished and its answer was lost. Telling the two apart takes this node's
//! memory: the answer kept here is recorded then, or, when it is not kept, the send
//! is recorded as interrupted — and the job acknowledged either way, instead of
//! cycling in the stream for ever.
//!
//! A take can also fail after the store made it (the store went away before its
//! answer came): the send is this node's in the store, but no worker handed it to a
//! channel. Such a send is remembered too, and when its job comes back it is sent —
//! never recorded as interrupted (a fault test lost a code that way).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::domain::verification::{SendDetails, SendResult};
use crate::secrets::id::VerificationId;

/// Answers kept for a claim back: about 200 bytes each.
const MAX_UNRECORDED: usize = 10_000;

type SendKey = (VerificationId, u8);

#[derive(Default)]
struct State {
    making: HashSet<SendKey>,
    unrecorded: HashMap<SendKey, (SendResult, Option<SendDetails>)>,
    /// Arrival order of `unrecorded`, for its cap.
    order: VecDeque<SendKey>,
    /// Sends whose take failed: no worker handed them to a channel.
    untaken: HashSet<SendKey>,
    /// Arrival order of `untaken`, for its cap.
    untaken_order: VecDeque<SendKey>,
}

/// Shared by the node's workers.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<State>>);

/// A send being made; it stops being made when this is dropped.
pub struct Making {
    state: Arc<Mutex<State>>,
    key: SendKey,
}

impl Drop for Making {
    fn drop(&mut self) {
        self.state.lock().making.remove(&self.key);
    }
}

/// What to record for a send of this node's that no worker is making.
pub enum Orphan {
    /// Another worker is making it.
    Making,
    /// Its answer, kept when recording it failed.
    Answered(SendResult, Option<SendDetails>),
    /// Nothing kept: its outcome is unknown.
    Unknown,
}

impl InFlight {
    /// A worker took send `send` of `id`.
    pub fn start(&self, id: VerificationId, send: u8) -> Making {
        self.0.lock().making.insert((id, send));
        Making {
            state: self.0.clone(),
            key: (id, send),
        }
    }

    /// Recording the answer failed: keep it for when the job comes back.
    pub fn unrecorded(
        &self,
        id: VerificationId,
        send: u8,
        result: SendResult,
        details: Option<SendDetails>,
    ) {
        let mut state = self.0.lock();
        let key = (id, send);
        if state.unrecorded.insert(key, (result, details)).is_none() {
            state.order.push_back(key);
        }
        while state.unrecorded.len() > MAX_UNRECORDED {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            state.unrecorded.remove(&oldest);
        }
    }

    /// Taking send `send` of `id` failed: the store may have made it this node's,
    /// but no channel has it.
    pub fn take_failed(&self, id: VerificationId, send: u8) {
        let mut state = self.0.lock();
        let key = (id, send);
        if state.untaken.insert(key) {
            state.untaken_order.push_back(key);
        }
        while state.untaken.len() > MAX_UNRECORDED {
            let Some(oldest) = state.untaken_order.pop_front() else {
                break;
            };
            state.untaken.remove(&oldest);
        }
    }

    /// The store says the send is this node's: if it is one whose take failed (no
    /// channel has it), a worker makes it now — one worker, however many copies of
    /// the job come back.
    pub fn resume(&self, id: VerificationId, send: u8) -> Option<Making> {
        let mut state = self.0.lock();
        let key = (id, send);
        if state.making.contains(&key) || !state.untaken.remove(&key) {
            return None;
        }
        state.untaken_order.retain(|k| *k != key);
        state.making.insert(key);
        Some(Making {
            state: self.0.clone(),
            key,
        })
    }

    /// Start making a send unless a worker is making it already.
    pub fn start_unless_making(&self, id: VerificationId, send: u8) -> Option<Making> {
        let mut state = self.0.lock();
        let key = (id, send);
        if !state.making.insert(key) {
            return None;
        }
        Some(Making {
            state: self.0.clone(),
            key,
        })
    }

    /// A job for a send this node took came back.
    pub fn orphan(&self, id: VerificationId, send: u8) -> Orphan {
        let mut state = self.0.lock();
        let key = (id, send);
        if state.making.contains(&key) {
            return Orphan::Making;
        }
        match state.unrecorded.remove(&key) {
            Some((result, details)) => {
                state.order.retain(|k| *k != key);
                Orphan::Answered(result, details)
            }
            None => Orphan::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::id::ShardTag;

    fn id(n: u8) -> VerificationId {
        VerificationId::new(ShardTag(1), [n; 14])
    }

    #[test]
    fn a_send_is_made_until_its_guard_drops() {
        let f = InFlight::default();
        let making = f.start(id(1), 1);
        assert!(matches!(f.orphan(id(1), 1), Orphan::Making));
        drop(making);
        assert!(matches!(f.orphan(id(1), 1), Orphan::Unknown));
    }

    #[test]
    fn an_unrecorded_answer_is_given_back_once() {
        let f = InFlight::default();
        f.unrecorded(id(2), 1, SendResult::Failed { error: "x".into() }, None);
        assert!(matches!(
            f.orphan(id(2), 1),
            Orphan::Answered(SendResult::Failed { .. }, None)
        ));
        assert!(matches!(f.orphan(id(2), 1), Orphan::Unknown));
    }

    #[test]
    fn a_send_whose_take_failed_is_resumed_by_one_worker() {
        let f = InFlight::default();
        assert!(f.resume(id(3), 1).is_none(), "never taken here");
        f.take_failed(id(3), 1);
        let making = f.resume(id(3), 1).expect("resumed");
        assert!(f.resume(id(3), 1).is_none(), "once");
        assert!(matches!(f.orphan(id(3), 1), Orphan::Making));
        drop(making);
        assert!(matches!(f.orphan(id(3), 1), Orphan::Unknown));
    }

    #[test]
    fn unrecorded_answers_are_capped() {
        let f = InFlight::default();
        for n in 0..=MAX_UNRECORDED {
            let mut raw = [0u8; 14];
            raw[..8].copy_from_slice(&(n as u64).to_be_bytes());
            f.unrecorded(
                VerificationId::new(ShardTag(1), raw),
                1,
                SendResult::Failed { error: "x".into() },
                None,
            );
        }
        let state = f.0.lock();
        assert_eq!(state.unrecorded.len(), MAX_UNRECORDED);
        assert_eq!(state.order.len(), MAX_UNRECORDED);
    }
}
