//! The embedded store: everything in this process's memory, for a single node.
//!
//! Layout, chosen for a small resident footprint per live verification:
//!
//! - Records live in a dense slab per shard ([`ChunkedVec`]), reused through a free
//!   list. It only makes resident the pages it has written, while a hash map
//!   spreading large values over twice as many buckets as entries would touch them
//!   all; and it grows without moving a record.
//! - Two `hashbrown::HashTable`s index the slab: by id (hashed by the id's own random
//!   bits, no hashing work) and by dedupe key (destination + purpose). Each bucket is
//!   eight bytes: the slot and half of the key's hash, so that an index grows by
//!   rehashing its buckets alone. Reading each record back to hash it again cost a
//!   cache miss per record, under the shard's lock, in every shard at once.
//! - A min-heap per shard orders records by the end of their retention. Each `issue`
//!   reclaims a few due records in its shard, so memory stays flat under sustained
//!   load even without the periodic sweep; the sweep catches idle shards.
//!
//! The shard is chosen by the destination's shard tag, which every id carries, so an
//! issue-or-resend touches one shard under one lock.
//!
//! With a data directory ([`MemoryStore::durable`]), every change of a verification
//! is appended to the journal under the same lock it was made under, and every
//! registry change written to the registry file, before the caller is answered: the
//! memory stays where requests are decided, the disk is where a restart finds them
//! (see [`super::embedded`]).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;
use parking_lot::Mutex;

use super::chunked::ChunkedVec;
use super::embedded::journal::Ticket;
use super::embedded::{DataDir, Recovered};
use super::idempotency::IdempotencyTable;
use super::registry::Registry as RegistryTable;
use super::{
    CheckResult, CheckedWithin, Fingerprint, Idempotency, IdempotencyBegin, IssueOutcome,
    JobLedger, PutSubscriber, Registry, StoreError, StoredResponse, Verifications, check_charged,
    issue_charged, newest,
};
use crate::domain::clock::UnixMillis;
use crate::domain::subscriber::{Device, Platform, Subscriber};
use crate::domain::verification::{
    AckOutcome, AnswerOutcome, CancelOutcome, CheckOutcome, Closing, EscalationCause,
    RequestedChannel, SendDetails, SendResult, SendState, Status, Verification,
};
use crate::policy::limiter::{CheckLimits, IssueLimits, Limiter, MemoryLimiter};
use crate::secrets::code::CodeMac;
use crate::secrets::id::VerificationId;
use otpd_adapters::ChannelKind;

/// How many due records an `issue` reclaims on its way, at most.
const RECLAIM_PER_ISSUE: usize = 4;

pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    mask: usize,
    retention: Duration,
    hasher: DefaultHashBuilder,
    idempotency: IdempotencyTable,
    registry: RegistryTable,
    live: AtomicUsize,
    /// Armed escalations by due time. Entries are not removed when an escalation is
    /// disarmed (acknowledged, canceled): `escalate` re-checks under the shard lock
    /// and takes the entry out then.
    escalations: Mutex<EscalationIndex>,
    /// Where the limits are kept: decided around each issue and check (see
    /// [`crate::store::issue_charged`]), and by admission for the rest.
    limiter: Arc<MemoryLimiter>,
    /// Where changes are kept to survive a restart; `None`: memory only.
    disk: Option<Arc<DataDir>>,
    /// Registry changes one at a time, so that the file sees them in the order the
    /// memory did.
    registry_writes: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Shard {
    slots: ChunkedVec<Option<Verification>>,
    free: Vec<u32>,
    by_id: HashTable<Indexed>,
    by_dest: HashTable<Indexed>,
    /// Records by subject: many entries may share a subject (a multi-map, read by
    /// [`Verifications::of_subject`]); records without a subject are not in it.
    by_subject: HashTable<Indexed>,
    /// Slots by the second their retention ends in (rounded up: a record is
    /// reclaimed at most a second late), eight bytes an entry where a millisecond
    /// time and a slot took sixteen.
    expiry: BinaryHeap<Reverse<(u32, u32)>>,
}

/// An index bucket: a record's slot and the upper half of its key's hash.
#[derive(Debug, Clone, Copy)]
struct Indexed {
    slot: u32,
    hash: u32,
}

impl Indexed {
    fn new(slot: u32, hash: u64) -> Self {
        Self {
            slot,
            hash: (hash >> 32) as u32,
        }
    }

    /// The hash the table sees: the kept half in both halves, so that hashbrown's
    /// bucket index (low bits) and tag (top bits) both come from real hash bits.
    fn table_hash(&self) -> u64 {
        spread(self.hash)
    }
}

/// The table hash of a key whose full hash is `hash` (see [`Indexed::table_hash`]).
fn table_hash(hash: u64) -> u64 {
    spread((hash >> 32) as u32)
}

fn spread(half: u32) -> u64 {
    (u64::from(half) << 32) | u64::from(half)
}

/// The second (since the Unix epoch) `t` falls in, rounded up; 0 before 1970 and
/// `u32::MAX` after 2106.
fn due_second(t: UnixMillis) -> u32 {
    u32::try_from((t.0.max(0) as u64).div_ceil(1000)).unwrap_or(u32::MAX)
}

/// The hashes a record is indexed under besides its id.
#[derive(Debug, Clone, Copy)]
struct Keyed {
    /// Its number, purpose and client (the dedupe index).
    dest: u64,
    /// Its subject, if it has one.
    subject: Option<u64>,
}

fn id_hash(id: &VerificationId) -> u64 {
    // Bytes 2.. are uniformly random: they are their own hash.
    let b = id.as_bytes();
    u64::from_le_bytes(b[2..10].try_into().expect("8 bytes"))
}

impl MemoryStore {
    /// `shards` is rounded up to a power of two; `retention` is how long a record stays
    /// readable after its validity ends.
    pub fn new(shards: usize, retention: Duration) -> Self {
        let n = shards.clamp(1, 1 << 16).next_power_of_two();
        Self {
            shards: (0..n).map(|_| Mutex::default()).collect(),
            mask: n - 1,
            retention,
            hasher: DefaultHashBuilder::default(),
            idempotency: IdempotencyTable::new(n),
            registry: RegistryTable::default(),
            live: AtomicUsize::new(0),
            escalations: Mutex::new(EscalationIndex::default()),
            limiter: Arc::new(MemoryLimiter::new()),
            disk: None,
            registry_writes: tokio::sync::Mutex::new(()),
        }
    }

    /// A store that keeps its changes in `disk`, holding what it `recovered` from
    /// there at `now`.
    pub fn durable(
        shards: usize,
        retention: Duration,
        disk: DataDir,
        recovered: &Recovered,
        now: UnixMillis,
    ) -> Self {
        let mut store = Self::new(shards, retention);
        for s in &recovered.subscribers {
            store.registry.put(s.clone());
        }
        for v in &recovered.verifications {
            let retain_until = store.retain_until(v);
            if retain_until <= now {
                continue;
            }
            let keyed = store.keyed(v);
            let mut shard = store.shard_of(&v.id).lock();
            let previous = shard.find_dest(keyed.dest, v);
            shard.insert(v.clone(), keyed, previous, retain_until);
            drop(shard);
            if let Some(due) = v.escalate_at() {
                store.escalations.lock().arm(*v.id.as_bytes(), due);
            }
            store.live.fetch_add(1, Ordering::Relaxed);
        }
        store.disk = Some(Arc::new(disk));
        store
    }

    /// Append `v`'s new state to the journal (call it under the lock it changed
    /// under); `None` when memory only.
    fn journal(&self, v: &Verification) -> Option<Ticket> {
        let disk = self.disk.as_ref()?;
        let fields = super::redis::record::encode(v);
        Some(
            disk.journal
                .append(v.id.as_bytes(), self.retain_until(v), &fields),
        )
    }

    /// Wait until the change behind `ticket` is on disk.
    async fn durable_wait(&self, ticket: Option<Ticket>) -> Result<(), StoreError> {
        match (&self.disk, ticket) {
            (Some(disk), Some(t)) => disk.journal.wait(t).await,
            _ => Ok(()),
        }
    }

    /// Refuse new verifications while the disk refuses their records.
    fn disk_accepting(&self) -> Result<(), StoreError> {
        match self.disk.as_ref().and_then(|d| d.journal.refusal()) {
            Some(why) => Err(StoreError::Unavailable(format!(
                "the journal cannot be written: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// Take back verification `candidate`, created but not made durable: its caller
    /// is told it failed, so no code may go out for it, now or after a restart.
    fn give_up(&self, candidate: &Verification) {
        let keyed = self.keyed(candidate);
        let removed = {
            let mut shard = self.shard_of(&candidate.id).lock();
            let slot = shard.find(&candidate.id);
            if let (Some(disk), Some(_)) = (&self.disk, slot) {
                let _ = disk.journal.give_up(candidate.id.as_bytes());
            }
            slot.map(|slot| shard.remove(slot, keyed)).is_some()
        };
        if removed {
            self.escalations.lock().disarm(candidate.id.as_bytes());
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Make one registry change: `change` on the memory, then the subject's new
    /// state written to the registry file; if the file refuses it, the memory is
    /// put back as it was and the change fails.
    async fn registry_change<T>(
        &self,
        subject: &str,
        change: impl FnOnce(&RegistryTable) -> T,
    ) -> Result<T, StoreError> {
        let Some(disk) = self.disk.clone() else {
            return Ok(change(&self.registry));
        };
        let _one_at_a_time = self.registry_writes.lock().await;
        let before = self.registry.get(subject);
        let out = change(&self.registry);
        let after = self.registry.get(subject);
        if after == before {
            return Ok(out);
        }
        let name: Box<str> = subject.into();
        let written = tokio::task::spawn_blocking(move || match after {
            Some(s) => disk.registry.put(&s),
            None => disk.registry.delete(&name),
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("registry write: {e}"))));
        if let Err(e) = written {
            self.registry.delete(subject);
            if let Some(b) = before {
                self.registry.put(b);
            }
            return Err(e);
        }
        Ok(out)
    }

    /// Verifications held right now (pending, final, or expired but retained).
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard_of(&self, id: &VerificationId) -> &Mutex<Shard> {
        &self.shards[id.shard_tag().0 as usize & self.mask]
    }

    /// The hashes `v` is indexed under. Keyed by this process's random seed, so that
    /// callers cannot choose numbers or subjects that collide.
    fn keyed(&self, v: &Verification) -> Keyed {
        let mut h = self.hasher.build_hasher();
        v.to.hash(&mut h);
        v.purpose.hash(&mut h);
        v.client.hash(&mut h);
        Keyed {
            dest: h.finish(),
            subject: v.subject.as_deref().map(|s| self.subject_hash(s)),
        }
    }

    fn subject_hash(&self, subject: &str) -> u64 {
        self.hasher.hash_one(subject)
    }

    fn retain_until(&self, v: &Verification) -> UnixMillis {
        v.expires_at.plus(self.retention)
    }
}

impl Shard {
    fn find(&self, id: &VerificationId) -> Option<u32> {
        let slots = &self.slots;
        self.by_id
            .find(table_hash(id_hash(id)), |e| {
                slots[e.slot as usize].as_ref().is_some_and(|v| v.id == *id)
            })
            .map(|e| e.slot)
    }

    fn get_mut(&mut self, id: &VerificationId) -> Option<&mut Verification> {
        let slot = self.find(id)?;
        self.slots[slot as usize].as_mut()
    }

    /// The slot of the verification indexed under this destination and purpose.
    /// The verification of the same client, number and purpose as `like`.
    fn find_dest(&self, dest_hash: u64, like: &Verification) -> Option<u32> {
        let slots = &self.slots;
        self.by_dest
            .find(table_hash(dest_hash), |e| {
                slots[e.slot as usize].as_ref().is_some_and(|v| {
                    v.to == like.to && v.purpose == like.purpose && v.client == like.client
                })
            })
            .map(|e| e.slot)
    }

    /// Store `v` as the destination's current verification, replacing `previous` (a
    /// final one) in the dedupe index if there was one.
    fn insert(
        &mut self,
        v: Verification,
        keyed: Keyed,
        previous: Option<u32>,
        retain_until: UnixMillis,
    ) {
        let dest_hash = keyed.dest;
        let id = id_hash(&v.id);
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(v);
                s
            }
            None => self.slots.push(Some(v)) as u32,
        };
        self.by_id
            .insert_unique(table_hash(id), Indexed::new(slot, id), Indexed::table_hash);
        let previous = previous.and_then(|p| {
            self.by_dest
                .find_mut(table_hash(dest_hash), |e| e.slot == p)
        });
        match previous {
            Some(entry) => *entry = Indexed::new(slot, dest_hash),
            None => {
                self.by_dest.insert_unique(
                    table_hash(dest_hash),
                    Indexed::new(slot, dest_hash),
                    Indexed::table_hash,
                );
            }
        }
        if let Some(subject) = keyed.subject {
            self.by_subject.insert_unique(
                table_hash(subject),
                Indexed::new(slot, subject),
                Indexed::table_hash,
            );
        }
        self.expiry.push(Reverse((due_second(retain_until), slot)));
    }

    /// Remove due records; returns how many.
    fn reclaim(
        &mut self,
        now: UnixMillis,
        limit: usize,
        retention: Duration,
        keyed: impl Fn(&Verification) -> Keyed,
    ) -> usize {
        let mut removed = 0;
        while removed < limit {
            match self.expiry.peek() {
                Some(Reverse((at, _))) if i64::from(*at) * 1000 <= now.0 => {}
                _ => break,
            }
            let Reverse((_, slot)) = self.expiry.pop().expect("peeked");
            let due = self.slots[slot as usize]
                .as_ref()
                .is_some_and(|v| v.expires_at.plus(retention) <= now);
            if !due {
                continue; // the slot was reused by a younger record
            }
            let keys = self.slots[slot as usize].as_ref().map(&keyed);
            self.remove(slot, keys.expect("checked"));
            removed += 1;
        }
        removed
    }

    /// Take the record in `slot` out of the slab and the indexes (its heap entry
    /// lapses by itself).
    fn remove(&mut self, slot: u32, keyed: Keyed) -> Verification {
        let v = self.slots[slot as usize].take().expect("an occupied slot");
        let by_id = self
            .by_id
            .find_entry(table_hash(id_hash(&v.id)), |e| e.slot == slot);
        if let Ok(entry) = by_id {
            entry.remove();
        }
        let by_dest = self
            .by_dest
            .find_entry(table_hash(keyed.dest), |e| e.slot == slot);
        if let Ok(entry) = by_dest {
            entry.remove();
        }
        if let Some(subject) = keyed.subject
            && let Ok(entry) = self
                .by_subject
                .find_entry(table_hash(subject), |e| e.slot == slot)
        {
            entry.remove();
        }
        self.free.push(slot);
        v
    }
}

impl MemoryStore {
    /// The issue itself, under the shard's lock (limits decided around it), with the
    /// journal's ticket for what it changed.
    fn issue_now(
        &self,
        candidate: &Verification,
        now: UnixMillis,
    ) -> (IssueOutcome, Option<Ticket>) {
        let keyed = self.keyed(candidate);
        let retain_until = self.retain_until(candidate);
        let mut guard = self.shard_of(&candidate.id).lock();
        let shard = &mut *guard;
        let reclaimed = shard.reclaim(now, RECLAIM_PER_ISSUE, self.retention, |v| self.keyed(v));
        if reclaimed > 0 {
            self.live.fetch_sub(reclaimed, Ordering::Relaxed);
        }

        let previous = shard.find_dest(keyed.dest, candidate);
        if let Some(slot) = previous {
            let current = shard.slots[slot as usize].as_mut().expect("indexed slot");
            if current.status(now) == Status::Pending {
                // `auto` keeps to where the code went last (after an escalation,
                // SMS), unless push is not possible any more.
                let wanted = candidate.sends()[0].channel;
                let channel = match (candidate.channel, wanted) {
                    (RequestedChannel::Auto, ChannelKind::Push) => {
                        current.sends().last().map_or(wanted, |s| s.channel)
                    }
                    _ => wanted,
                };
                return match current.resend(channel, now) {
                    Ok(_) => {
                        let current = current.clone();
                        let ticket = self.journal(&current);
                        (IssueOutcome::Resent(Box::new(current)), ticket)
                    }
                    Err(refusal) => (
                        IssueOutcome::Refused {
                            existing: current.id,
                            refusal,
                            expires_at: current.expires_at,
                        },
                        None,
                    ),
                };
            }
        }
        shard.insert(candidate.clone(), keyed, previous, retain_until);
        let ticket = self.journal(candidate);
        drop(guard);
        if let Some(due) = candidate.escalate_at() {
            self.escalations.lock().arm(*candidate.id.as_bytes(), due);
        }
        self.live.fetch_add(1, Ordering::Relaxed);
        (IssueOutcome::Created, ticket)
    }

    /// The issue, made durable before it is answered.
    async fn issue_durably(
        &self,
        candidate: &Verification,
        now: UnixMillis,
    ) -> Result<IssueOutcome, StoreError> {
        self.disk_accepting()?;
        let (outcome, ticket) = self.issue_now(candidate, now);
        if let Err(e) = self.durable_wait(ticket).await {
            if matches!(outcome, IssueOutcome::Created) {
                self.give_up(candidate);
            }
            return Err(e);
        }
        Ok(outcome)
    }

    /// The attempt itself, under the shard's lock.
    fn check_now(
        &self,
        id: &VerificationId,
        candidate: &CodeMac,
        client: Option<&str>,
        now: UnixMillis,
    ) -> (Option<CheckResult>, Option<Ticket>) {
        let mut shard = self.shard_of(id).lock();
        let mut ticket = None;
        let result = shard
            .get_mut(id)
            .filter(|v| v.client.as_deref() == client)
            .map(|v| {
                let matches = v.code_mac.matches(candidate);
                let was_locked = v.status(now) == Status::Locked;
                let outcome = v.check(matches, now);
                ticket = self.journal(v);
                CheckResult {
                    outcome,
                    attempts_left: v.attempts_left(),
                    to: v.to,
                    country: v.line.country,
                    subject: v.subject.as_deref().map(Into::into),
                    locked_now: outcome == CheckOutcome::Locked && !was_locked,
                }
            });
        (result, ticket)
    }

    /// `change` applied to verification `id` under its shard's lock, journaled when
    /// it says it changed something, and — when `told` (the caller answers someone
    /// with it) — on disk before it returns. What otpd records for itself (a
    /// channel's answer, a receipt, an escalation) is appended in the same order but
    /// not waited for: the writer takes it within the moment, and the worker is not
    /// held by the disk.
    async fn change<T>(
        &self,
        id: &VerificationId,
        told: bool,
        change: impl FnOnce(&mut Verification) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        let (out, ticket) = {
            let mut shard = self.shard_of(id).lock();
            match shard.get_mut(id) {
                None => (None, None),
                Some(v) => match change(v) {
                    None => (None, None),
                    Some(out) => (Some(out), self.journal(v)),
                },
            }
        };
        if told {
            self.durable_wait(ticket).await?;
        }
        Ok(out)
    }
}

#[async_trait]
impl Verifications for MemoryStore {
    async fn issue(
        &self,
        candidate: &Verification,
        now: UnixMillis,
        limits: &IssueLimits<'_>,
    ) -> Result<IssueOutcome, StoreError> {
        if limits.gate.is_empty() && limits.charge.is_empty() {
            return self.issue_durably(candidate, now).await;
        }
        issue_charged(&*self.limiter, limits, self.issue_durably(candidate, now)).await
    }

    async fn check(
        &self,
        id: &VerificationId,
        candidate: &CodeMac,
        client: Option<&str>,
        now: UnixMillis,
        limits: &CheckLimits<'_>,
    ) -> Result<CheckedWithin, StoreError> {
        let check = async {
            let (result, ticket) = self.check_now(id, candidate, client, now);
            self.durable_wait(ticket).await?;
            Ok(result)
        };
        let lock = || async { self.close(id, client, Closing::Lock, now).await.map(|_| ()) };
        check_charged(&*self.limiter, limits, check, lock).await
    }

    fn limiter(&self) -> Arc<dyn Limiter> {
        self.limiter.clone()
    }

    async fn get(&self, id: &VerificationId) -> Result<Option<Verification>, StoreError> {
        let mut shard = self.shard_of(id).lock();
        Ok(shard.get_mut(id).map(|v| v.clone()))
    }

    async fn of_subject(
        &self,
        subject: &str,
        limit: usize,
    ) -> Result<Vec<Verification>, StoreError> {
        let hash = self.subject_hash(subject);
        let mut found = Vec::new();
        // One shard's lock at a time: requests on the others go on meanwhile.
        for shard in self.shards.iter() {
            let shard = shard.lock();
            found.extend(
                shard
                    .by_subject
                    .iter_hash(table_hash(hash))
                    .filter_map(|e| shard.slots[e.slot as usize].as_ref())
                    .filter(|v| v.subject.as_deref() == Some(subject))
                    .cloned(),
            );
        }
        Ok(newest(found, limit))
    }

    async fn close(
        &self,
        id: &VerificationId,
        client: Option<&str>,
        how: Closing,
        now: UnixMillis,
    ) -> Result<Option<(CancelOutcome, Verification)>, StoreError> {
        self.change(id, true, |v| {
            (v.client.as_deref() == client).then(|| (v.close(how, now), v.clone()))
        })
        .await
    }

    async fn acknowledge(
        &self,
        id: &VerificationId,
        now: UnixMillis,
    ) -> Result<Option<(AckOutcome, Verification)>, StoreError> {
        self.change(id, true, |v| Some((v.acknowledge(now), v.clone())))
            .await
    }

    async fn answer(
        &self,
        id: &VerificationId,
        decision: crate::secrets::device_key::Decision,
        device: &str,
        now: UnixMillis,
    ) -> Result<Option<(AnswerOutcome, Verification)>, StoreError> {
        self.change(id, true, |v| {
            Some((v.answer(decision, device, now), v.clone()))
        })
        .await
    }

    async fn escalate(
        &self,
        id: &VerificationId,
        cause: EscalationCause,
        now: UnixMillis,
    ) -> Result<Option<Verification>, StoreError> {
        let (escalated, still_due) = self
            .change(id, false, |v| {
                let escalated = v.escalate(cause, now).map(|_| v.clone());
                Some((escalated, v.escalate_at()))
            })
            .await?
            .unwrap_or((None, None));
        // Listed again at its own time while it waits; out once it has nothing left
        // to escalate.
        let mut index = self.escalations.lock();
        match still_due {
            Some(at) => index.arm(*id.as_bytes(), at),
            None => index.disarm(id.as_bytes()),
        }
        Ok(escalated)
    }

    async fn due_escalations(
        &self,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<VerificationId>, StoreError> {
        Ok(self
            .escalations
            .lock()
            .due(now, limit)
            .map(VerificationId::from_bytes)
            .collect())
    }

    async fn sweep(&self, now: UnixMillis) -> Result<usize, StoreError> {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let n = shard
                .lock()
                .reclaim(now, usize::MAX, self.retention, |v| self.keyed(v));
            self.live.fetch_sub(n, Ordering::Relaxed);
            removed += n;
        }
        if let Some(disk) = &self.disk {
            disk.journal.retire_before(now);
        }
        Ok(removed + self.idempotency.sweep(now))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.disk_accepting()
    }
}

#[async_trait]
impl JobLedger for MemoryStore {
    async fn record_send(
        &self,
        id: &VerificationId,
        send: u8,
        result: SendResult,
        details: Option<SendDetails>,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let recorded = self
            .change(id, false, |v| {
                v.record_send_with(send, result, details, now).then_some(())
            })
            .await?;
        Ok(recorded.is_some())
    }

    async fn record_report(
        &self,
        id: &VerificationId,
        send: u8,
        state: SendState,
        error: Option<String>,
        now: UnixMillis,
    ) -> Result<Option<Verification>, StoreError> {
        self.change(id, false, |v| {
            v.record_report(send, state, error, now).then(|| v.clone())
        })
        .await
    }
}

#[async_trait]
impl Idempotency for MemoryStore {
    async fn idempotency_begin(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        now: UnixMillis,
        ttl: Duration,
    ) -> Result<IdempotencyBegin, StoreError> {
        Ok(self.idempotency.begin(key, fingerprint, now, ttl))
    }

    async fn idempotency_finish(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        response: StoredResponse,
        now: UnixMillis,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.idempotency
            .finish(key, fingerprint, response, now, ttl);
        Ok(())
    }

    async fn idempotency_abandon(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
    ) -> Result<(), StoreError> {
        self.idempotency.abandon(key, fingerprint);
        Ok(())
    }
}

#[async_trait]
impl Registry for MemoryStore {
    async fn put_subscriber(&self, subscriber: Subscriber) -> Result<PutSubscriber, StoreError> {
        let subject = subscriber.subject.clone();
        self.registry_change(&subject, |r| r.put(subscriber)).await
    }

    async fn get_subscriber(&self, subject: &str) -> Result<Option<Subscriber>, StoreError> {
        Ok(self.registry.get(subject))
    }

    async fn delete_subscriber(&self, subject: &str) -> Result<bool, StoreError> {
        self.registry_change(subject, |r| r.delete(subject)).await
    }

    async fn add_device(
        &self,
        subject: &str,
        device: Device,
    ) -> Result<Option<(bool, Subscriber)>, StoreError> {
        self.registry_change(subject, |r| r.add_device(subject, device))
            .await
    }

    async fn remove_device(
        &self,
        subject: &str,
        platform: Platform,
        token: &str,
    ) -> Result<Option<bool>, StoreError> {
        self.registry_change(subject, |r| r.remove_device(subject, platform, token))
            .await
    }
}

/// Armed escalations: by due time for the timer, by id to re-arm or drop one. An
/// entry leaves only through [`Verifications::escalate`], so a pass cut short loses
/// none.
#[derive(Default)]
struct EscalationIndex {
    by_time: BTreeSet<(UnixMillis, [u8; 16])>,
    at: HashMap<[u8; 16], UnixMillis>,
}

impl EscalationIndex {
    fn arm(&mut self, id: [u8; 16], at: UnixMillis) {
        if let Some(before) = self.at.insert(id, at) {
            self.by_time.remove(&(before, id));
        }
        self.by_time.insert((at, id));
    }

    fn disarm(&mut self, id: &[u8; 16]) {
        if let Some(at) = self.at.remove(id) {
            self.by_time.remove(&(at, *id));
        }
    }

    /// Up to `limit` ids due by `now`, earliest first; they stay listed.
    fn due(&self, now: UnixMillis, limit: usize) -> impl Iterator<Item = [u8; 16]> + '_ {
        self.by_time
            .iter()
            .take_while(move |(at, _)| *at <= now)
            .take(limit)
            .map(|(_, id)| *id)
    }
}

#[cfg(test)]
mod tests {
    //! What every store does is tested once for all of them in the end-to-end
    //! crate's `store_contract`; here, only what is the memory store's own.
    use super::*;
    use crate::domain::locale::Locale;
    use crate::domain::verification::{NewVerification, Policy};
    use crate::numbers::e164::E164;
    use crate::secrets::code::{CodeLength, SealedCode};
    use crate::secrets::id::ShardTag;

    const T0: UnixMillis = UnixMillis(1_800_000_000_000);
    const TTL: Duration = Duration::from_secs(600);
    const RETENTION: Duration = Duration::from_secs(60);

    #[test]
    fn retention_ends_are_kept_by_the_second_rounded_up() {
        assert_eq!(due_second(UnixMillis(1_800_000_000_000)), 1_800_000_000);
        assert_eq!(due_second(UnixMillis(1_800_000_000_001)), 1_800_000_001);
        assert_eq!(due_second(UnixMillis(-5)), 0);
        assert_eq!(due_second(UnixMillis(i64::MAX)), u32::MAX);
    }

    fn candidate(to: u64, purpose: &str, n: u64) -> Verification {
        let to = E164::from_digits_unchecked(to);
        let mut random = [0u8; 14];
        random[..8].copy_from_slice(&n.to_le_bytes());
        random[8..].copy_from_slice(&to.digits().to_le_bytes()[..6]);
        Verification::new(
            NewVerification {
                id: VerificationId::new(ShardTag::of(to), random),
                to,
                line: crate::numbers::reader::NumberLine::default(),
                purpose: crate::domain::name::Name::new(purpose),
                subject: None,
                client: None,
                locale: Locale::Es,
                channel: RequestedChannel::Auto,
                first_send: ChannelKind::Sms,
                code_mac: CodeMac([n as u8; 32]),
                sealed_code: SealedCode(n),
                policy: Policy {
                    ttl: TTL,
                    code_length: CodeLength::new(6).unwrap(),
                    max_attempts: 3,
                    max_sends: 2,
                    resend_cooldown: Duration::from_secs(30),
                    escalate_after: Duration::from_secs(60),
                },
                match_code: None,
                challenge: None,
            },
            T0,
        )
    }

    async fn create(store: &MemoryStore, v: Verification, now: UnixMillis) -> Verification {
        match store.issue(&v, now, &IssueLimits::NONE).await.unwrap() {
            IssueOutcome::Created => v,
            other => panic!("expected Created, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn records_go_after_their_retention_and_slots_are_reused() {
        let store = MemoryStore::new(1, RETENTION);
        let mut old = Vec::new();
        for i in 0..100 {
            let mut v = candidate(34600000000 + i, "login", i);
            v.subject = Some(format!("{i}Z").into());
            old.push(create(&store, v, T0).await);
        }
        assert_eq!(store.of_subject("7Z", 10).await.unwrap(), [old[7].clone()]);
        let gone = T0.plus(TTL + RETENTION);
        assert_eq!(store.sweep(gone).await.unwrap(), 100);
        assert_eq!(store.len(), 0);
        // Out of every index with the record.
        assert_eq!(store.shards[0].lock().by_subject.len(), 0);
        assert!(store.of_subject("7Z", 10).await.unwrap().is_empty());
        for v in &old {
            assert!(store.get(&v.id).await.unwrap().is_none(), "reclaimed");
        }
        // New records reuse the slots; the old ids do not find them.
        for i in 0..100 {
            create(&store, candidate(34600000000 + i, "login", 1000 + i), gone).await;
        }
        assert_eq!(store.shards[0].lock().slots.len(), 100);
        for v in &old {
            assert!(store.get(&v.id).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn memory_stays_flat_under_sustained_load() {
        // One record per simulated 10 ms for 2 hours of simulated time: far more than
        // fit in the validity + retention window. Reclaiming on issue alone (no sweep)
        // keeps the slab at the window's size.
        let store = MemoryStore::new(1, RETENTION);
        let mut now = T0;
        let per_window = ((TTL + RETENTION).as_millis() / 10) as usize;
        for i in 0..(per_window as u64 * 3) {
            now = now.plus(Duration::from_millis(10));
            store
                .issue(
                    &candidate(34600000000 + i, "login", i),
                    now,
                    &IssueLimits::NONE,
                )
                .await
                .unwrap();
        }
        let shard = store.shards[0].lock();
        assert!(
            shard.slots.len() <= per_window + RECLAIM_PER_ISSUE,
            "{} slots",
            shard.slots.len()
        );
        assert!(shard.by_id.len() <= per_window + 1);
        assert!(shard.by_dest.len() <= per_window + 1);
        assert!(shard.expiry.len() <= per_window + 1);
        assert!(store.len() <= per_window + 1);
    }
}
