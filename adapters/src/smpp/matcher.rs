//! Matching delivery receipts to the messages they are about: a pure state machine
//! (time is passed in, nothing here does I/O), so every id form and every ordering
//! can be tested without a socket.
//!
//! An SMSC names a message twice: in its `submit_sm_resp`, and in every receipt about
//! it. Many write the id the same way both times; many do not. Some answer the submit
//! in hexadecimal and write the receipt in decimal (`000000000a` answered, `id:10` in
//! the receipt), some the reverse, with or without leading zeros, in either case. An
//! id that is all digits reads as a number in both bases, so `10` in a receipt may be
//! the message answered as `10` or the one answered as `a`: matching "any reading"
//! confuses messages, and matching "as written" leaves every message whose
//! hexadecimal id holds a letter unmatched for ever.
//!
//! So the matcher works out each carrier's [`IdForm`] — configured, or learned:
//! - from the ids' shapes: ids read alike (all digits on both sides, or letters on
//!   both) are taken as written; another base is considered only once one side shows
//!   hexadecimal letters and the other never has (any other character: opaque ids,
//!   written one way), and
//! - then from receipts that matched through one form only; once one form holds
//!   [`LEARN_AFTER`] such matches and nine in ten of all of them, it is the
//!   carrier's, and from then on a receipt id has exactly one reading, matched at
//!   once.
//!
//! Until then a receipt waits `cross_after` before it matches (its own submit may
//! not be registered yet, and another reading of its id may name another message
//! that is); then it takes the one message its readings name. When they name
//! several, it waits on, for the form to be learned, and at the end of `hold_for`
//! takes the id as written. A receipt that matches nothing is held — indexed under
//! every reading, so that a submit finds what waits for it without a scan — until
//! `hold_for` ends or the cap pushes the oldest out. A message whose receipts never
//! come lapses at `keep_until` (its code's expiry plus a margin the caller adds).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::receipt::{MessageState, Receipt};

/// How an SMSC writes, in its receipts, the message id its `submit_sm_resp` gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdForm {
    /// The same way (case and leading zeros aside).
    AsSubmitted,
    /// The submit answered in hexadecimal, the receipt in decimal.
    HexThenDecimal,
    /// The submit answered in decimal, the receipt in hexadecimal.
    DecimalThenHex,
}

impl IdForm {
    const ALL: [IdForm; 3] = [
        IdForm::AsSubmitted,
        IdForm::HexThenDecimal,
        IdForm::DecimalThenHex,
    ];

    fn index(self) -> usize {
        match self {
            Self::AsSubmitted => 0,
            Self::HexThenDecimal => 1,
            Self::DecimalThenHex => 2,
        }
    }

    /// The submit's id (normalised) that a receipt id (normalised) names in this form.
    fn submitted_of(self, receipt_id: &str) -> Option<String> {
        match self {
            Self::AsSubmitted => Some(receipt_id.to_string()),
            Self::HexThenDecimal => decimal_as_hex(receipt_id),
            Self::DecimalThenHex => hex_as_decimal(receipt_id),
        }
    }
}

/// How a carrier's receipt ids relate to its submit ids: learned, or fixed by the
/// operator who knows the SMSC (Kannel's `msg-id-type` says the same thing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdForms {
    #[default]
    Learn,
    Fixed(IdForm),
}

/// Matches that one form needs, with nine in ten of all single-form matches, before
/// it is taken as the carrier's.
pub const LEARN_AFTER: u32 = 8;

/// An id as a key: trimmed, lower case, without leading zeros (`0` stays `0`).
pub fn normalise(id: &str) -> String {
    let id = id.trim();
    let stripped = id.trim_start_matches('0');
    if stripped.is_empty() && !id.is_empty() {
        return "0".to_string();
    }
    stripped.to_ascii_lowercase()
}

/// A normalised decimal id read as a number and written in hexadecimal.
fn decimal_as_hex(id: &str) -> Option<String> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse::<u128>().ok().map(|n| format!("{n:x}"))
}

/// A normalised hexadecimal id read as a number and written in decimal.
fn hex_as_decimal(id: &str) -> Option<String> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(id, 16).ok().map(|n| n.to_string())
}

/// What the matcher knows of a carrier's id form.
#[derive(Debug, Clone, Default)]
struct Learning {
    /// A submit's id held a hexadecimal letter: the submit side is hexadecimal.
    submit_letters: bool,
    /// A receipt's id held one: the receipt side is hexadecimal.
    receipt_letters: bool,
    /// An id held something else: ids are opaque strings, written one way.
    opaque: bool,
    /// Receipts that matched through this form and no other.
    single: [u32; 3],
}

/// What an id's characters say of its base.
fn shape(id: &str) -> (bool, bool) {
    let letters = id
        .bytes()
        .any(|b| b.is_ascii_hexdigit() && !b.is_ascii_digit());
    let opaque = !id.bytes().all(|b| b.is_ascii_hexdigit());
    (letters, opaque)
}

impl Learning {
    fn submitted(&mut self, id: &str) {
        let (letters, opaque) = shape(id);
        self.submit_letters |= letters;
        self.opaque |= opaque;
    }

    fn receipted(&mut self, id: &str) {
        let (letters, opaque) = shape(id);
        self.receipt_letters |= letters;
        self.opaque |= opaque;
    }

    /// The forms the ids' shapes allow. Reading an id in another base is only
    /// considered once the ids show that the two sides differ — a letter on one
    /// side, never on the other: digits alike on both sides are taken to mean the
    /// same number. (Matching through another base on a guess confused messages when
    /// receipts for other nodes' messages came in: their ids, read as hexadecimal,
    /// named this node's own.)
    fn possible(&self) -> impl Iterator<Item = IdForm> + '_ {
        let hex_then_decimal = self.submit_letters && !self.receipt_letters && !self.opaque;
        let decimal_then_hex = self.receipt_letters && !self.submit_letters && !self.opaque;
        IdForm::ALL.into_iter().filter(move |f| match f {
            IdForm::AsSubmitted => true,
            IdForm::HexThenDecimal => hex_then_decimal,
            IdForm::DecimalThenHex => decimal_then_hex,
        })
    }

    /// The carrier's form, once it is known.
    fn settled(&self) -> Option<IdForm> {
        let mut possible = self.possible();
        let first = possible.next()?;
        if possible.next().is_none() {
            return Some(first);
        }
        let total: u32 = self.possible().map(|f| self.single[f.index()]).sum();
        self.possible().find(|f| {
            let n = self.single[f.index()];
            n >= LEARN_AFTER && u64::from(n) * 10 >= u64::from(total) * 9
        })
    }
}

/// How long receipts wait, and how many may.
#[derive(Debug, Clone, Copy)]
pub struct MatcherConfig {
    pub forms: IdForms,
    /// How long a receipt that matches nothing is held for a submit still to come.
    pub hold_for: Duration,
    /// How long a receipt waits for its id as written before, while the form is not
    /// known yet, it may match through another form.
    pub cross_after: Duration,
    /// The most receipts held at once; beyond it the oldest gives way.
    pub max_held: usize,
}

/// What happened, for the caller to count, log and report.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<T> {
    /// A receipt matched a part of a message.
    Matched(MessageState),
    /// Every part of a message has its final receipt: the message's outcome (the
    /// first failure of a part, else delivered).
    Settled {
        value: T,
        state: MessageState,
        error: Option<String>,
    },
    /// A final receipt matched nothing yet and is held (its id as it came).
    Held(String),
    /// A held receipt matched nothing within its time, or gave way to newer ones.
    Unmatched(Receipt),
    /// A message whose receipts did not all come before it lapsed.
    Lapsed(T),
}

struct Entry<T> {
    value: T,
    /// When it lapses; its key in `lapse`.
    keep_until: Instant,
    /// Its parts' ids (normalised) still awaiting a final receipt.
    ids: Vec<String>,
    worst: Option<(MessageState, Option<String>)>,
}

struct Held {
    receipt: Receipt,
    /// The receipt's id, normalised.
    id: String,
    arrived: Instant,
    /// Every submit id this receipt may name: where `by_submitted` lists it.
    readings: Vec<String>,
}

/// Receipts that matched nothing yet, indexed by the submit ids they may name.
struct HeldReceipts {
    held: HashMap<u64, Held>,
    by_submitted: HashMap<String, Vec<u64>>,
    /// Arrival order, for expiry and the cap.
    order: VecDeque<u64>,
    /// Held receipts that may try another form once `cross_after` has passed.
    cross_due: VecDeque<(Instant, u64)>,
    next: u64,
    cap: usize,
}

impl HeldReceipts {
    fn insert(&mut self, held: Held, cross_at: Instant) -> Option<Receipt> {
        let key = self.next;
        self.next += 1;
        for reading in &held.readings {
            self.by_submitted
                .entry(reading.clone())
                .or_default()
                .push(key);
        }
        self.held.insert(key, held);
        self.order.push_back(key);
        self.cross_due.push_back((cross_at, key));
        if self.held.len() > self.cap {
            let oldest = self.order.pop_front()?;
            return self.remove(oldest).map(|h| h.receipt);
        }
        None
    }

    fn remove(&mut self, key: u64) -> Option<Held> {
        let held = self.held.remove(&key)?;
        for reading in &held.readings {
            if let Some(keys) = self.by_submitted.get_mut(reading) {
                keys.retain(|k| *k != key);
                if keys.is_empty() {
                    self.by_submitted.remove(reading);
                }
            }
        }
        Some(held)
    }

    /// Drop bookkeeping of receipts already gone from the fronts of the queues.
    fn trim(&mut self) {
        while self
            .order
            .front()
            .is_some_and(|k| !self.held.contains_key(k))
        {
            self.order.pop_front();
        }
        while self
            .cross_due
            .front()
            .is_some_and(|(_, k)| !self.held.contains_key(k))
        {
            self.cross_due.pop_front();
        }
    }
}

/// What a receipt id finds.
enum Found {
    /// The message, and the submit id (normalised) of the part.
    Entry(u64, String),
    /// Readings name messages, but it is not yet time to choose.
    Wait,
    /// No reading names a message awaiting receipts.
    Nothing,
}

/// Messages awaiting their receipts, and receipts awaiting their messages.
pub struct ReceiptMatcher<T> {
    config: MatcherConfig,
    learning: Learning,
    /// Submit id (normalised) → entry.
    ids: HashMap<String, u64>,
    entries: HashMap<u64, Entry<T>>,
    /// Entries by when they lapse: a settled entry leaves at once, so what is kept
    /// is what still awaits receipts.
    lapse: BTreeSet<(Instant, u64)>,
    next: u64,
    held: HeldReceipts,
}

impl<T> ReceiptMatcher<T> {
    pub fn new(config: MatcherConfig) -> Self {
        Self {
            config,
            learning: Learning::default(),
            ids: HashMap::new(),
            entries: HashMap::new(),
            lapse: BTreeSet::new(),
            next: 0,
            held: HeldReceipts {
                held: HashMap::new(),
                by_submitted: HashMap::new(),
                order: VecDeque::new(),
                cross_due: VecDeque::new(),
                next: 0,
                cap: config.max_held.max(1),
            },
        }
    }

    /// The carrier's id form, once configured or learned.
    pub fn form(&self) -> Option<IdForm> {
        match self.config.forms {
            IdForms::Fixed(form) => Some(form),
            IdForms::Learn => self.learning.settled(),
        }
    }

    /// Messages awaiting receipts.
    pub fn awaiting(&self) -> usize {
        self.entries.len()
    }

    /// Whether a message with this submit id awaits receipts.
    pub fn awaits(&self, submitted_id: &str) -> bool {
        self.ids.contains_key(&normalise(submitted_id))
    }

    /// Receipts held for a message still to come.
    pub fn held(&self) -> usize {
        self.held.held.len()
    }

    /// Whether a receipt with this id is held. Its id as written is one of its
    /// readings, so the index finds it.
    pub fn is_held(&self, receipt_id: &str) -> bool {
        let id = normalise(receipt_id);
        self.held.by_submitted.get(&id).is_some_and(|keys| {
            keys.iter()
                .any(|k| self.held.held.get(k).is_some_and(|h| h.id == id))
        })
    }

    /// A message went out as parts with these SMSC ids; await their receipts until
    /// `keep_until`. Receipts already held for them land now.
    pub fn submitted(
        &mut self,
        ids: &[String],
        value: T,
        keep_until: Instant,
        now: Instant,
    ) -> Vec<Event<T>> {
        let before = self.form();
        let key = self.next;
        self.next += 1;
        let ids: Vec<String> = ids.iter().map(|id| normalise(id)).collect();
        for id in &ids {
            if let IdForms::Learn = self.config.forms {
                self.learning.submitted(id);
            }
            self.ids.insert(id.clone(), key);
        }
        let waiting: Vec<u64> = ids
            .iter()
            .filter_map(|id| self.held.by_submitted.get(id))
            .flatten()
            .copied()
            .collect();
        self.entries.insert(
            key,
            Entry {
                value,
                keep_until,
                ids,
                worst: None,
            },
        );
        self.lapse.insert((keep_until, key));
        let mut events = Vec::new();
        for held in waiting {
            self.retry(held, now, false, &mut events);
        }
        self.on_learned(before, now, &mut events);
        events
    }

    /// A receipt came.
    pub fn receipt(&mut self, receipt: Receipt, now: Instant) -> Vec<Event<T>> {
        let before = self.form();
        let id = normalise(&receipt.message_id);
        if let IdForms::Learn = self.config.forms {
            self.learning.receipted(&id);
        }
        let mut events = Vec::new();
        match self.find(&id, Duration::ZERO, false) {
            Found::Entry(entry, part) => self.apply(entry, part, &receipt, &mut events),
            found if receipt.state.is_final() => {
                if matches!(found, Found::Nothing) {
                    events.push(Event::Held(receipt.message_id.clone()));
                }
                let mut readings: Vec<String> = Vec::with_capacity(3);
                for reading in IdForm::ALL.into_iter().filter_map(|f| f.submitted_of(&id)) {
                    if !readings.contains(&reading) {
                        readings.push(reading);
                    }
                }
                let held = Held {
                    receipt,
                    id,
                    arrived: now,
                    readings,
                };
                if let Some(pushed_out) = self.held.insert(held, now + self.config.cross_after) {
                    events.push(Event::Unmatched(pushed_out));
                }
            }
            // ENROUTE, ACCEPTD… about nothing known here: nothing to keep.
            _ => {}
        }
        self.on_learned(before, now, &mut events);
        events
    }

    /// Let time pass: held receipts that waited `cross_after` choose among their
    /// readings, those at the end of `hold_for` take their last chance or are given
    /// up, and messages past `keep_until` lapse.
    pub fn tick(&mut self, now: Instant) -> Vec<Event<T>> {
        let before = self.form();
        let mut events = Vec::new();
        while let Some(&(at, key)) = self.held.cross_due.front() {
            if at > now {
                break;
            }
            self.held.cross_due.pop_front();
            self.retry(key, now, false, &mut events);
        }
        while let Some(&key) = self.held.order.front() {
            let Some(held) = self.held.held.get(&key) else {
                self.held.order.pop_front();
                continue;
            };
            if now.duration_since(held.arrived) < self.config.hold_for {
                break;
            }
            self.held.order.pop_front();
            self.retry(key, now, true, &mut events);
            if let Some(held) = self.held.remove(key) {
                events.push(Event::Unmatched(held.receipt));
            }
        }
        self.held.trim();
        while let Some(&(at, key)) = self.lapse.first() {
            if at > now {
                break;
            }
            self.lapse.pop_first();
            if let Some(entry) = self.entries.remove(&key) {
                for id in &entry.ids {
                    if self.ids.get(id) == Some(&key) {
                        self.ids.remove(id);
                    }
                }
                events.push(Event::Lapsed(entry.value));
            }
        }
        self.on_learned(before, now, &mut events);
        events
    }

    /// Once the form is learned, held receipts that waited for it choose.
    fn on_learned(&mut self, before: Option<IdForm>, now: Instant, events: &mut Vec<Event<T>>) {
        if before.is_some() || self.form().is_none() {
            return;
        }
        let held: Vec<u64> = self.held.order.iter().copied().collect();
        for key in held {
            self.retry(key, now, false, events);
        }
    }

    /// Try a held receipt again: a submit it may name came, it waited long enough,
    /// or this is its `last_chance`.
    fn retry(&mut self, key: u64, now: Instant, last_chance: bool, events: &mut Vec<Event<T>>) {
        let Some(held) = self.held.held.get(&key) else {
            return;
        };
        let waited = now.duration_since(held.arrived);
        let id = held.id.clone();
        if let Found::Entry(entry, part) = self.find(&id, waited, last_chance) {
            let held = self.held.remove(key).expect("present");
            self.apply(entry, part, &held.receipt, events);
        }
    }

    /// The message a receipt id (normalised) names. With the form known, its one
    /// reading. Before, once the receipt `waited` `cross_after`: the one message its
    /// readings name (learning from a match through one form alone), or, when they
    /// name several, on its `last_chance` the id as written.
    fn find(&mut self, id: &str, waited: Duration, last_chance: bool) -> Found {
        if let Some(form) = self.form() {
            return match form.submitted_of(id) {
                Some(part) => match self.ids.get(&part) {
                    Some(&entry) => Found::Entry(entry, part),
                    None => Found::Nothing,
                },
                None => Found::Nothing,
            };
        }
        let mut hits: Vec<(IdForm, u64, String)> = Vec::with_capacity(3);
        for form in self.learning.possible() {
            if let Some(part) = form.submitted_of(id)
                && let Some(&entry) = self.ids.get(&part)
            {
                hits.push((form, entry, part));
            }
        }
        let Some(first) = hits.first().cloned() else {
            return Found::Nothing;
        };
        if waited < self.config.cross_after && !last_chance {
            return Found::Wait;
        }
        if hits.iter().all(|(_, entry, _)| *entry == first.1) {
            // Forms that read the id alike (`7` is 7 in both bases) teach nothing.
            if hits.len() == 1 {
                let seen = &mut self.learning.single[first.0.index()];
                *seen = seen.saturating_add(1);
            }
            return Found::Entry(first.1, first.2);
        }
        if !last_chance {
            return Found::Wait;
        }
        let chosen = hits
            .iter()
            .find(|(form, _, _)| *form == IdForm::AsSubmitted)
            .or_else(|| {
                hits.iter()
                    .max_by_key(|(form, _, _)| self.learning.single[form.index()])
            })
            .cloned()
            .unwrap_or(first);
        Found::Entry(chosen.1, chosen.2)
    }

    /// A receipt matched `part` of message `entry`.
    fn apply(&mut self, entry: u64, part: String, receipt: &Receipt, events: &mut Vec<Event<T>>) {
        events.push(Event::Matched(receipt.state));
        if !receipt.state.is_final() {
            return;
        }
        let Some(pending) = self.entries.get_mut(&entry) else {
            return;
        };
        self.ids.remove(&part);
        pending.ids.retain(|id| *id != part);
        // A message is delivered only if every part is; otherwise its first failure
        // stands.
        let failed = pending
            .worst
            .as_ref()
            .is_some_and(|(state, _)| *state != MessageState::Delivered);
        if !failed {
            pending.worst = Some((receipt.state, receipt.error.clone()));
        }
        if !pending.ids.is_empty() {
            return;
        }
        let done = self.entries.remove(&entry).expect("present");
        self.lapse.remove(&(done.keep_until, entry));
        let (state, error) = done.worst.expect("a final receipt");
        events.push(Event::Settled {
            value: done.value,
            state,
            error,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CROSS: Duration = Duration::from_secs(1);
    const HOLD: Duration = Duration::from_secs(30);

    fn matcher(forms: IdForms) -> ReceiptMatcher<usize> {
        ReceiptMatcher::new(MatcherConfig {
            forms,
            hold_for: HOLD,
            cross_after: CROSS,
            max_held: 1000,
        })
    }

    fn receipt(id: &str, state: MessageState, error: Option<&str>) -> Receipt {
        Receipt {
            message_id: id.to_string(),
            state,
            error: error.map(str::to_string),
        }
    }

    fn delivered(id: &str) -> Receipt {
        receipt(id, MessageState::Delivered, None)
    }

    /// The (value, state) of every message settled among `events`.
    fn settled(events: &[Event<usize>]) -> Vec<(usize, MessageState)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Settled { value, state, .. } => Some((*value, *state)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ids_normalise_case_and_leading_zeros() {
        assert_eq!(normalise(" 000000000A "), "a");
        assert_eq!(normalise("0000"), "0");
        assert_eq!(normalise("abc-DEF"), "abc-def");
        assert_eq!(decimal_as_hex("10").as_deref(), Some("a"));
        assert_eq!(hex_as_decimal("a").as_deref(), Some("10"));
        assert_eq!(hex_as_decimal("g"), None);
        // Beyond 128 bits an id has no other reading.
        assert_eq!(decimal_as_hex(&"9".repeat(60)), None);
    }

    #[test]
    fn a_fixed_form_matches_at_once_even_where_readings_collide() {
        // Answered `000000000a` and `0000000010` (16); receipts in decimal.
        let mut m = matcher(IdForms::Fixed(IdForm::HexThenDecimal));
        let now = Instant::now();
        let later = now + Duration::from_secs(600);
        assert!(
            m.submitted(&["000000000a".into()], 10, later, now)
                .is_empty()
        );
        assert!(
            m.submitted(&["0000000010".into()], 16, later, now)
                .is_empty()
        );
        let events = m.receipt(delivered("10"), now);
        assert_eq!(settled(&events), [(10, MessageState::Delivered)]);
        let events = m.receipt(delivered("16"), now);
        assert_eq!(settled(&events), [(16, MessageState::Delivered)]);
        assert_eq!(m.awaiting(), 0);
    }

    #[test]
    fn opaque_ids_settle_the_form_at_once() {
        let mut m = matcher(IdForms::Learn);
        let now = Instant::now();
        m.submitted(&["4f1c-77aa".into()], 1, now + HOLD, now);
        assert_eq!(m.form(), Some(IdForm::AsSubmitted));
        let events = m.receipt(delivered("4F1C-77AA"), now);
        assert_eq!(settled(&events), [(1, MessageState::Delivered)]);
    }

    #[test]
    fn hex_answers_and_decimal_receipts_are_learned_from_sequential_ids() {
        // The carrier habit that left every id with a letter unmatched: ids 1..=40
        // answered in zero-padded hexadecimal, receipted in decimal, so `10` in a
        // receipt reads as both message 10 (`a`) and message 16 (`10`).
        let mut m = matcher(IdForms::Learn);
        let start = Instant::now();
        let keep = start + Duration::from_secs(900);
        for n in 1..=40usize {
            m.submitted(&[format!("{n:010x}")], n, keep, start);
        }
        let mut events = Vec::new();
        for n in 1..=40usize {
            events.extend(m.receipt(delivered(&n.to_string()), start));
        }
        events.extend(m.tick(start + CROSS));
        assert_eq!(m.form(), Some(IdForm::HexThenDecimal));
        let mut got = settled(&events);
        got.sort_by_key(|(n, _)| *n);
        let want: Vec<_> = (1..=40).map(|n| (n, MessageState::Delivered)).collect();
        assert_eq!(got, want);
        assert_eq!(m.held(), 0);
        // From now on, at once.
        m.submitted(&["00000000ff".into()], 255, keep, start);
        assert_eq!(
            settled(&m.receipt(delivered("255"), start)),
            [(255, MessageState::Delivered)]
        );
    }

    /// Several nodes on one account: receipts for the other nodes' messages reach
    /// this one. `45`, read as hexadecimal, is 69 — this node's own message — but
    /// ids all digits on both sides are read as written: it is held for the
    /// directory, and 69 waits for its own receipt.
    #[test]
    fn another_nodes_receipt_never_takes_this_nodes_message_through_another_base() {
        let mut m = matcher(IdForms::Learn);
        let now = Instant::now();
        m.submitted(&["69".into()], 69, now + HOLD, now);
        assert_eq!(m.form(), Some(IdForm::AsSubmitted));
        assert_eq!(m.receipt(delivered("45"), now), [Event::Held("45".into())]);
        assert!(m.tick(now + HOLD / 2).is_empty());
        assert_eq!(
            settled(&m.receipt(delivered("69"), now + HOLD / 2)),
            [(69, MessageState::Delivered)]
        );
    }

    #[test]
    fn a_receipt_before_its_submit_lands_when_the_submit_does() {
        let mut m = matcher(IdForms::Fixed(IdForm::AsSubmitted));
        let now = Instant::now();
        let events = m.receipt(delivered("777"), now);
        assert_eq!(events, [Event::Held("777".into())]);
        assert!(m.is_held("0777"));
        let events = m.submitted(&["777".into()], 7, now + HOLD, now);
        assert_eq!(settled(&events), [(7, MessageState::Delivered)]);
        assert_eq!(m.held(), 0);
    }

    #[test]
    fn every_part_must_be_delivered_and_the_first_failure_stands() {
        let mut m = matcher(IdForms::Fixed(IdForm::AsSubmitted));
        let now = Instant::now();
        m.submitted(&["1".into(), "2".into(), "3".into()], 9, now + HOLD, now);
        assert_eq!(
            m.receipt(delivered("1"), now),
            [Event::Matched(MessageState::Delivered)]
        );
        m.receipt(receipt("2", MessageState::Undeliverable, Some("1:34")), now);
        let events = m.receipt(receipt("3", MessageState::Expired, None), now);
        assert_eq!(
            events.last(),
            Some(&Event::Settled {
                value: 9,
                state: MessageState::Undeliverable,
                error: Some("1:34".into())
            })
        );
    }

    #[test]
    fn intermediate_states_are_matched_but_settle_nothing_and_are_not_held() {
        let mut m = matcher(IdForms::Fixed(IdForm::AsSubmitted));
        let now = Instant::now();
        assert!(
            m.receipt(receipt("5", MessageState::Enroute, None), now)
                .is_empty()
        );
        assert_eq!(m.held(), 0);
        m.submitted(&["5".into()], 5, now + HOLD, now);
        assert_eq!(
            m.receipt(receipt("5", MessageState::Accepted, None), now),
            [Event::Matched(MessageState::Accepted)]
        );
        assert_eq!(m.awaiting(), 1);
    }

    #[test]
    fn held_receipts_are_given_up_after_their_time_and_beyond_the_cap() {
        let mut m = ReceiptMatcher::<usize>::new(MatcherConfig {
            forms: IdForms::Fixed(IdForm::AsSubmitted),
            hold_for: HOLD,
            cross_after: CROSS,
            max_held: 2,
        });
        let now = Instant::now();
        m.receipt(delivered("1"), now);
        m.receipt(delivered("2"), now + Duration::from_secs(1));
        let events = m.receipt(delivered("3"), now + Duration::from_secs(2));
        assert!(
            events.contains(&Event::Unmatched(delivered("1"))),
            "{events:?}"
        );
        assert_eq!(m.held(), 2);
        assert!(m.tick(now + HOLD).is_empty(), "`2` waited 29 s only");
        let events = m.tick(now + HOLD + Duration::from_secs(2));
        assert_eq!(
            events,
            [
                Event::Unmatched(delivered("2")),
                Event::Unmatched(delivered("3"))
            ]
        );
        assert_eq!(m.held(), 0);
        assert!(m.held.by_submitted.is_empty() && m.held.order.is_empty());
    }

    #[test]
    fn messages_whose_receipts_never_come_lapse() {
        let mut m = matcher(IdForms::Fixed(IdForm::AsSubmitted));
        let now = Instant::now();
        m.submitted(
            &["1".into(), "2".into()],
            1,
            now + Duration::from_secs(60),
            now,
        );
        m.submitted(&["3".into()], 3, now + Duration::from_secs(10), now);
        m.receipt(delivered("1"), now);
        assert_eq!(m.tick(now + Duration::from_secs(10)), [Event::Lapsed(3)]);
        assert_eq!(m.tick(now + Duration::from_secs(60)), [Event::Lapsed(1)]);
        assert_eq!(m.awaiting(), 0);
        assert!(m.ids.is_empty(), "no id left behind");
        // A receipt that comes after is held, not matched.
        assert_eq!(m.receipt(delivered("2"), now), [Event::Held("2".into())]);
    }

    /// How an SMSC writes its ids.
    #[derive(Debug, Clone, Copy)]
    struct Style {
        hex: bool,
        upper: bool,
        width: usize,
    }

    impl Style {
        fn write(self, n: u64) -> String {
            let w = self.width;
            match (self.hex, self.upper) {
                (false, _) => format!("{n:0w$}"),
                (true, false) => format!("{n:0w$x}"),
                (true, true) => format!("{n:0w$X}"),
            }
        }
    }

    fn style() -> impl Strategy<Value = Style> {
        (any::<bool>(), any::<bool>(), 0usize..22).prop_map(|(hex, upper, width)| Style {
            hex,
            upper,
            width,
        })
    }

    /// A soak on simulated time: 300 000 messages, one a millisecond, a tenth of
    /// their receipts lost and one stray receipt in a hundred. What the matcher keeps
    /// stays flat — the messages of the last `keep` window and the strays of the last
    /// `hold_for` — and is empty once time has passed.
    #[test]
    fn bookkeeping_stays_flat_when_receipts_are_lost() {
        let keep = Duration::from_secs(60);
        let mut m = matcher(IdForms::Fixed(IdForm::AsSubmitted));
        let start = Instant::now();
        let mut receipts: VecDeque<(Instant, u64)> = VecDeque::new();
        let (mut settled, mut lapsed, mut unmatched) = (0u64, 0u64, 0u64);
        let mut count = |events: Vec<Event<usize>>| {
            for e in events {
                match e {
                    Event::Settled { .. } => settled += 1,
                    Event::Lapsed(_) => lapsed += 1,
                    Event::Unmatched(_) => unmatched += 1,
                    _ => {}
                }
            }
        };
        let mut peak = (0usize, 0usize);
        for n in 0..300_000u64 {
            let now = start + Duration::from_millis(n);
            count(m.submitted(&[n.to_string()], n as usize, now + keep, now));
            if n % 10 != 0 {
                receipts.push_back((now + Duration::from_millis(500), n));
            }
            if n % 100 == 0 {
                count(m.receipt(delivered(&format!("stray{n}")), now));
            }
            while receipts.front().is_some_and(|(at, _)| *at <= now) {
                let (_, id) = receipts.pop_front().unwrap();
                count(m.receipt(delivered(&id.to_string()), now));
            }
            if n % 100 == 0 {
                count(m.tick(now));
            }
            peak = (peak.0.max(m.awaiting()), peak.1.max(m.held()));
        }
        // A minute of messages of which a tenth never settle, plus half a second of
        // the rest; thirty seconds of strays.
        assert!(peak.0 <= 6_000 + 500 + 200, "awaiting peaked at {}", peak.0);
        assert!(peak.1 <= 300 + 10, "held peaked at {}", peak.1);
        for (at, id) in receipts.drain(..) {
            count(m.receipt(delivered(&id.to_string()), at));
        }
        count(m.tick(start + Duration::from_secs(400)));
        assert_eq!((m.awaiting(), m.held()), (0, 0));
        assert!(m.ids.is_empty() && m.held.by_submitted.is_empty() && m.held.order.is_empty());
        assert!(m.lapse.is_empty());
        assert_eq!(settled, 270_000);
        assert_eq!(lapsed, 30_000);
        assert_eq!(unmatched, 3_000);
    }

    proptest! {
        /// Random ids, written in every pairing of bases, case and padding, with
        /// receipts that come before or after their submits: once time has passed,
        /// every message settled once, with its own receipt (each carries its own
        /// error code), and nothing is left held.
        #[test]
        fn every_receipt_finds_its_own_message_in_every_pairing(
            ids in proptest::collection::hash_set(any::<u64>(), 1..40),
            submit in style(),
            receipts in style(),
            early in proptest::collection::vec(any::<bool>(), 40),
        ) {
            // Across bases the matcher learns from a letter on one side only (see
            // `Learning::possible`): ids whose hexadecimal forms are all digits
            // read as the same decimal number, by design. Such a set, rare (each id
            // has odds near 1 in 1 900), cannot teach it and is not this property's.
            prop_assume!(
                submit.hex == receipts.hex
                    || ids.iter().any(|n| format!("{n:x}").bytes().any(|b| b.is_ascii_alphabetic()))
            );
            let mut m = matcher(IdForms::Learn);
            let start = Instant::now();
            let keep = start + Duration::from_secs(900);
            let ids: Vec<u64> = ids.into_iter().collect();
            let mut events = Vec::new();
            for (i, &n) in ids.iter().enumerate() {
                let now = start + Duration::from_millis(10 * i as u64);
                let own = receipt(&receipts.write(n), MessageState::Undeliverable, Some(&format!("e{i}")));
                if early[i] {
                    events.extend(m.receipt(own, now));
                    events.extend(m.submitted(&[submit.write(n)], i, keep, now));
                } else {
                    events.extend(m.submitted(&[submit.write(n)], i, keep, now));
                    events.extend(m.receipt(own, now));
                }
                events.extend(m.tick(now));
            }
            events.extend(m.tick(start + HOLD + Duration::from_secs(1)));
            let mut got: Vec<(usize, Option<String>)> = events
                .into_iter()
                .filter_map(|e| match e {
                    Event::Settled { value, error, .. } => Some((value, error)),
                    Event::Unmatched(r) => panic!("unmatched: {r:?}"),
                    _ => None,
                })
                .collect();
            got.sort();
            let want: Vec<_> = (0..ids.len()).map(|i| (i, Some(format!("e{i}")))).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(m.held(), 0);
            prop_assert_eq!(m.awaiting(), 0);
        }
    }
}
