//! A bind's bookkeeping, as a pure state machine: the window of submits awaiting
//! their responses, the sequence numbers, the pacing to the bind's TPS, the pause
//! after throttling, and the keepalive. No I/O and no clock of its own: the session
//! ([`super::session`]) tells it what happened and when, and asks it what is due.
//!
//! Kept apart from the session so that its rules — never more than `window` in
//! flight, sequence numbers unique among them, responses overdue after the timeout,
//! what was in flight handed back in the order it was sent — can be checked with
//! property tests at any time scale, without a socket.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// The highest sequence number; the next one is 1 again (SMPP 3.4 §3.2: 0x00000001
/// to 0x7FFFFFFF).
pub const MAX_SEQUENCE: u32 = 0x7FFF_FFFF;

/// The longest pause throttling answers can build up to.
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// What a window is sized and timed by.
#[derive(Debug, Clone, Copy)]
pub struct WindowConfig {
    /// Submits awaiting their response at most.
    pub window: usize,
    /// Submits per second at most; `None` for no cap.
    pub tps: Option<u32>,
    /// A request unanswered for this long declares the link dead.
    pub response_timeout: Duration,
    /// An enquire_link is due when nothing was heard for this long.
    pub enquire_link_interval: Duration,
    /// First pause after a throttling answer; doubles while they repeat.
    pub throttle_pause: Duration,
}

/// What the session should do when its timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// A response (to a submit or to our enquire_link) is overdue: the link is dead.
    Overdue,
    /// Nothing was heard for the keepalive interval: send an enquire_link with this
    /// sequence number.
    Keepalive(u32),
    /// Nothing yet.
    Nothing,
}

/// One link's window of submits (`R`: what the session keeps for each).
#[derive(Debug)]
pub struct Window<R> {
    config: WindowConfig,
    /// Between two submits at the TPS cap (zero: no cap).
    gap: Duration,
    next_seq: u32,
    in_flight: HashMap<u32, (R, Instant)>,
    /// Sequence numbers in the order they were sent: the first one still in flight
    /// is the oldest (answers come in any order; a scan of the window on every
    /// event would cost more than the event).
    order: VecDeque<(u32, Instant)>,
    enquire_pending: Option<Instant>,
    last_heard: Instant,
    next_send: Instant,
    pause: Duration,
}

impl<R> Window<R> {
    /// A window for a link bound at `now`, whose bind took sequence number 1.
    pub fn new(config: WindowConfig, now: Instant) -> Self {
        let gap = config
            .tps
            .filter(|t| *t > 0)
            .map(|t| Duration::from_secs_f64(1.0 / f64::from(t)))
            .unwrap_or(Duration::ZERO);
        Self {
            config,
            gap,
            next_seq: 2,
            in_flight: HashMap::new(),
            order: VecDeque::new(),
            enquire_pending: None,
            last_heard: now,
            next_send: now,
            pause: config.throttle_pause,
        }
    }

    /// The next sequence number, for any request this side sends.
    pub fn next_seq(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq = if s >= MAX_SEQUENCE { 1 } else { s + 1 };
        s
    }

    /// Submits awaiting their response.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Whether another submit fits in the window.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < self.config.window
    }

    /// Whether a submit may go now: room in the window, and its turn at the TPS cap.
    pub fn may_send(&self, now: Instant) -> bool {
        self.has_room() && now >= self.next_send
    }

    /// A submit went out as `seq` at `now`.
    pub fn sent(&mut self, seq: u32, request: R, now: Instant) {
        self.in_flight.insert(seq, (request, now));
        self.order.push_back((seq, now));
        self.next_send = if self.gap.is_zero() {
            now
        } else {
            // A cap that was idle does not save up turns for a burst.
            let earliest = now.checked_sub(self.gap).unwrap_or(now);
            self.next_send.max(earliest) + self.gap
        };
    }

    /// The response to `seq` came: the submit it answers, and when it was sent.
    /// `None` for a response to nothing in flight (late, or not ours).
    pub fn answer(&mut self, seq: u32) -> Option<(R, Instant)> {
        self.in_flight.remove(&seq)
    }

    /// Something arrived from the SMSC at `now`.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// A submit was accepted: throttling is over.
    pub fn accepted(&mut self) {
        self.pause = self.config.throttle_pause;
    }

    /// The SMSC asked to slow down: nothing goes for the pause, which doubles (up to
    /// ten seconds) while it keeps asking.
    pub fn throttled(&mut self, now: Instant) {
        self.next_send = now + self.pause;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
    }

    /// Our enquire_link was answered.
    pub fn enquire_answered(&mut self) {
        self.enquire_pending = None;
    }

    /// When the session must look again: a response's deadline, the keepalive, or —
    /// when submits wait (`queued`) and may be taken — the next turn at the TPS cap.
    pub fn wake_at(&mut self, now: Instant, queued: bool, taking: bool) -> Instant {
        let deadline = self.response_deadline();
        let keepalive = self.last_heard + self.config.enquire_link_interval;
        let pacing =
            (taking && self.has_room() && queued && self.next_send > now).then_some(self.next_send);
        [Some(keepalive), deadline, pacing]
            .into_iter()
            .flatten()
            .min()
            .expect("the keepalive is always set")
    }

    /// What is due at `now`. A keepalive sent counts as hearing (one probe per
    /// interval) and is awaited like a submit.
    pub fn due(&mut self, now: Instant) -> Due {
        if self.response_deadline().is_some_and(|d| now >= d) {
            return Due::Overdue;
        }
        if now >= self.last_heard + self.config.enquire_link_interval
            && self.enquire_pending.is_none()
        {
            let seq = self.next_seq();
            self.enquire_pending = Some(now);
            self.last_heard = now;
            return Due::Keepalive(seq);
        }
        Due::Nothing
    }

    /// The link is lost: every submit in flight, in the order it was sent. (By
    /// the sending order itself, not the times: submits fed in one turn share
    /// their time.)
    pub fn drain_lost(&mut self) -> Vec<R> {
        let mut lost = Vec::with_capacity(self.in_flight.len());
        for (seq, at) in self.order.drain(..) {
            if self
                .in_flight
                .get(&seq)
                .is_some_and(|(_, sent)| *sent == at)
                && let Some((request, _)) = self.in_flight.remove(&seq)
            {
                lost.push(request);
            }
        }
        debug_assert!(self.in_flight.is_empty(), "every submit is in the order");
        self.in_flight.clear();
        lost
    }

    /// When the oldest unanswered request (submit or enquire_link) is overdue.
    fn response_deadline(&mut self) -> Option<Instant> {
        // Answered ones at the front are forgotten here, lazily.
        while let Some((s, at)) = self.order.front() {
            if self.in_flight.get(s).is_some_and(|(_, sent)| sent == at) {
                break;
            }
            self.order.pop_front();
        }
        let oldest = self.order.front().map(|(_, at)| *at);
        oldest
            .into_iter()
            .chain(self.enquire_pending)
            .min()
            .map(|t| t + self.config.response_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(window: usize, tps: Option<u32>) -> WindowConfig {
        WindowConfig {
            window,
            tps,
            response_timeout: Duration::from_secs(10),
            enquire_link_interval: Duration::from_secs(30),
            throttle_pause: Duration::from_millis(100),
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Send as many as may go.
        Fill(u8),
        /// Answer the in-flight submit at this position (of the sorted sequence numbers).
        Answer(u8),
        Throttle,
        Wait(u16),
        Lose,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..20).prop_map(Step::Fill),
            any::<u8>().prop_map(Step::Answer),
            Just(Step::Throttle),
            (0u16..5000).prop_map(Step::Wait),
            Just(Step::Lose),
        ]
    }

    proptest! {
        /// Whatever happens, the window never holds more than its size, the
        /// sequence numbers in flight are distinct and valid, and a lost link hands
        /// back exactly what was in flight, oldest first.
        #[test]
        fn the_window_keeps_its_rules(
            size in 1usize..16,
            tps in prop::option::of(1u32..1000),
            steps in prop::collection::vec(step(), 1..200),
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut w: Window<u64> = Window::new(config(size, tps), now);
            let mut sent_count = 0u64;
            // What is in flight, by the order it was sent.
            let mut expected: Vec<u64> = Vec::new();
            for s in steps {
                match s {
                    Step::Fill(n) => {
                        for _ in 0..n {
                            if !w.may_send(now) {
                                break;
                            }
                            let seq = w.next_seq();
                            prop_assert!((1..=MAX_SEQUENCE).contains(&seq));
                            prop_assert!(w.answer(seq).is_none(), "sequence {} reused", seq);
                            // Submits of one turn share their time.
                            w.sent(seq, sent_count, now);
                            expected.push(sent_count);
                            sent_count += 1;
                        }
                    }
                    Step::Answer(i) => {
                        if !expected.is_empty() {
                            let pick = expected[usize::from(i) % expected.len()];
                            let seq = w
                                .in_flight
                                .iter()
                                .find(|(_, (r, _))| *r == pick)
                                .map(|(s, _)| *s)
                                .expect("in flight");
                            let (r, _) = w.answer(seq).expect("answered once");
                            prop_assert_eq!(r, pick);
                            prop_assert!(w.answer(seq).is_none());
                            expected.retain(|e| *e != pick);
                            w.accepted();
                        }
                    }
                    Step::Throttle => w.throttled(now),
                    Step::Wait(ms) => now += Duration::from_millis(u64::from(ms)),
                    Step::Lose => {
                        let lost = w.drain_lost();
                        prop_assert_eq!(&lost, &expected);
                        expected.clear();
                    }
                }
                prop_assert!(w.len() <= size);
                prop_assert_eq!(w.len(), expected.len());
            }
        }

        /// At the TPS cap, submits keep at least the cap's spacing on average: in any
        /// stretch of time, no more than one second's worth plus one go out.
        #[test]
        fn submits_keep_to_the_tps_cap(tps in 1u32..200, ticks in 1u32..3000) {
            let t0 = Instant::now();
            let mut w: Window<()> = Window::new(config(usize::MAX, Some(tps)), t0);
            let mut sent = Vec::new();
            for tick in 0..ticks {
                let now = t0 + Duration::from_millis(u64::from(tick));
                while w.may_send(now) {
                    let seq = w.next_seq();
                    w.sent(seq, (), now);
                    sent.push(now);
                }
            }
            for (i, at) in sent.iter().enumerate() {
                let within = sent[i..]
                    .iter()
                    .take_while(|t| t.duration_since(*at) < Duration::from_secs(1))
                    .count();
                prop_assert!(within as u32 <= tps + 1, "{} in a second at {} per second", within, tps);
            }
        }

        /// The link is declared dead exactly when its oldest unanswered request has
        /// waited the response timeout, never before.
        #[test]
        fn a_response_is_overdue_after_the_timeout(offsets in prop::collection::vec(0u64..20_000, 1..20)) {
            let t0 = Instant::now();
            let mut w: Window<usize> = Window::new(config(64, None), t0);
            let mut times: Vec<u64> = offsets.clone();
            times.sort_unstable();
            for (i, ms) in times.iter().enumerate() {
                let seq = w.next_seq();
                w.sent(seq, i, t0 + Duration::from_millis(*ms));
            }
            let oldest = t0 + Duration::from_millis(times[0]);
            let just_before = oldest + Duration::from_secs(10) - Duration::from_millis(1);
            prop_assert_ne!(w.due(just_before), Due::Overdue);
            prop_assert_eq!(w.due(oldest + Duration::from_secs(10)), Due::Overdue);
        }
    }

    #[test]
    fn sequence_numbers_wrap_to_one() {
        let mut w: Window<()> = Window::new(config(1, None), Instant::now());
        w.next_seq = MAX_SEQUENCE;
        assert_eq!(w.next_seq(), MAX_SEQUENCE);
        assert_eq!(w.next_seq(), 1);
    }

    #[test]
    fn an_idle_link_is_probed_once_per_interval() {
        let t0 = Instant::now();
        let mut w: Window<()> = Window::new(config(1, None), t0);
        assert_eq!(w.due(t0 + Duration::from_secs(29)), Due::Nothing);
        let at = t0 + Duration::from_secs(30);
        assert!(matches!(w.due(at), Due::Keepalive(2)));
        // Awaiting its answer: no second probe, and overdue after the timeout.
        assert_eq!(w.due(at + Duration::from_secs(9)), Due::Nothing);
        assert_eq!(w.due(at + Duration::from_secs(10)), Due::Overdue);
        w.enquire_answered();
        assert_eq!(w.due(at + Duration::from_secs(10)), Due::Nothing);
    }

    #[test]
    fn throttling_pauses_and_backs_off_up_to_ten_seconds() {
        let t0 = Instant::now();
        let mut w: Window<()> = Window::new(config(4, None), t0);
        w.throttled(t0);
        assert!(!w.may_send(t0 + Duration::from_millis(99)));
        assert!(w.may_send(t0 + Duration::from_millis(100)));
        for _ in 0..10 {
            w.throttled(t0);
        }
        assert_eq!(w.pause, MAX_PAUSE);
        w.accepted();
        assert_eq!(w.pause, Duration::from_millis(100));
    }
}
