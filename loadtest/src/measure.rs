//! What a run measures, as it happens: HDR latency histograms per operation (from
//! the time each request was due), answers by status, delivery latency per channel,
//! the people's outcomes, and per-second series for the report's charts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, to 3 significant
/// digits.
const MAX_MICROS: u64 = 600_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds")
}

/// The series' histograms keep 2 digits: a second's p99 needs no more.
fn small_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("valid bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_MICROS)
}

/// How an answer that never came is keyed among the answers, before its reason.
pub const TRANSPORT_ERROR: &str = "transport error";

/// The HTTP operations a run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A person asks for a code.
    Issue,
    /// A person types a code.
    Check,
    /// A person asks again.
    Resend,
    /// The app acknowledges a push.
    Ack,
    /// The attack asks for a code.
    AbuseIssue,
    /// The check burst.
    BurstCheck,
    /// Registering people with an app, before the run.
    Register,
    /// The app approves an approval request (signed).
    Approve,
}

impl Op {
    pub const ALL: [Op; 8] = [
        Op::Issue,
        Op::Check,
        Op::Resend,
        Op::Ack,
        Op::AbuseIssue,
        Op::BurstCheck,
        Op::Register,
        Op::Approve,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Issue => "issue",
            Op::Check => "check",
            Op::Resend => "resend",
            Op::Ack => "ack",
            Op::AbuseIssue => "abuse_issue",
            Op::BurstCheck => "burst_check",
            Op::Register => "register",
            Op::Approve => "approve",
        }
    }
}

/// Where codes arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Sms,
    Apns,
    Fcm,
    Hms,
}

impl Via {
    pub const ALL: [Via; 4] = [Via::Sms, Via::Apns, Via::Fcm, Via::Hms];

    pub fn as_str(self) -> &'static str {
        match self {
            Via::Sms => "sms",
            Via::Apns => "apns",
            Via::Fcm => "fcm",
            Via::Hms => "hms",
        }
    }
}

struct OpStats {
    latency: Mutex<Histogram<u64>>,
    answers: Mutex<BTreeMap<String, u64>>,
}

/// One second of the run.
#[derive(Default)]
struct Second {
    offered: u64,
    dropped: u64,
    issued: u64,
    issue_errors: u64,
    issue: Option<Histogram<u64>>,
    checks: u64,
    check: Option<Histogram<u64>>,
    delivered: u64,
    /// Of `delivered`: by SMS, over SMPP.
    delivered_sms: u64,
    otpd_cpu: Option<f64>,
    otpd_rss: Option<u64>,
    tool_cpu: Option<f64>,
    redis_cpu: Option<f64>,
}

/// Counters of the run and of its people (see the report for what each means).
#[derive(Default)]
pub struct Counters {
    pub offered: AtomicU64,
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub abuse_offered: AtomicU64,
    pub abuse_accepted: AtomicU64,
    pub abuse_delivered: AtomicU64,
    pub sessions: AtomicU64,
    pub refused: AtomicU64,
    pub replaced: AtomicU64,
    pub issues_in_flight: AtomicU64,
    pub burst_dropped: AtomicU64,
    pub cut_off: AtomicU64,
    pub delivered: AtomicU64,
    pub undelivered: AtomicU64,
    pub extra_deliveries: AtomicU64,
    pub escalated: AtomicU64,
    pub unmatched_deliveries: AtomicU64,
    pub code_mismatches: AtomicU64,
    pub approved: AtomicU64,
    /// Of `approved`: in the app, by a signed answer.
    pub approved_in_app: AtomicU64,
    pub wrong_rejected: AtomicU64,
    pub never_typed: AtomicU64,
    pub unexpected_checks: AtomicU64,
    pub registered: AtomicU64,
}

pub struct Measures {
    pub start: Instant,
    ops: Vec<OpStats>,
    delivery: Vec<Mutex<Histogram<u64>>>,
    seconds: Vec<Mutex<Second>>,
    pub counters: Counters,
}

impl Measures {
    /// Measures for a run of at most `length` (the series stop there).
    pub fn new(start: Instant, length: Duration) -> Self {
        let n = length.as_secs() as usize + 2;
        Self {
            start,
            ops: Op::ALL
                .iter()
                .map(|_| OpStats {
                    latency: Mutex::new(histogram()),
                    answers: Mutex::new(BTreeMap::new()),
                })
                .collect(),
            delivery: Via::ALL.iter().map(|_| Mutex::new(histogram())).collect(),
            seconds: (0..n).map(|_| Mutex::new(Second::default())).collect(),
            counters: Counters::default(),
        }
    }

    fn second(&self, at: Instant) -> Option<&Mutex<Second>> {
        let i = at.saturating_duration_since(self.start).as_secs() as usize;
        self.seconds.get(i)
    }

    /// An arrival was due at `at`; `sent` says whether it went out.
    pub fn offered(&self, at: Instant, sent: bool) {
        self.counters.offered.fetch_add(1, Ordering::Relaxed);
        let c = if sent {
            &self.counters.sent
        } else {
            &self.counters.dropped
        };
        c.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = self.second(at) {
            let mut s = s.lock();
            s.offered += 1;
            s.dropped += u64::from(!sent);
        }
    }

    /// An answer (`answer`: "201", "429 rate_limited", "transport"…) to a request due
    /// at `due`, received at `done`.
    pub fn answered(&self, op: Op, due: Instant, done: Instant, answer: &str, ok: bool) {
        let latency = micros(done.saturating_duration_since(due));
        let stats = &self.ops[op as usize];
        let _ = stats.latency.lock().record(latency);
        *stats.answers.lock().entry(answer.to_string()).or_insert(0) += 1;
        let Some(s) = self.second(done) else { return };
        let mut s = s.lock();
        match op {
            Op::Issue => {
                if ok {
                    s.issued += 1;
                } else {
                    s.issue_errors += 1;
                }
                let _ = s.issue.get_or_insert_with(small_histogram).record(latency);
            }
            Op::Check | Op::BurstCheck => {
                s.checks += 1;
                let _ = s.check.get_or_insert_with(small_histogram).record(latency);
            }
            _ => {}
        }
    }

    /// A code reached the phone (or the app) `latency` after it was asked for.
    pub fn delivered(&self, via: Via, latency: Duration, at: Instant) {
        let _ = self.delivery[via as usize].lock().record(micros(latency));
        if let Some(s) = self.second(at) {
            let mut s = s.lock();
            s.delivered += 1;
            s.delivered_sms += u64::from(via == Via::Sms);
        }
    }

    /// The processes' CPU (share of one core) and otpd's resident memory, sampled.
    pub fn sampled(
        &self,
        at: Instant,
        otpd_cpu: Option<f64>,
        otpd_rss: Option<u64>,
        tool_cpu: f64,
        redis_cpu: Option<f64>,
    ) {
        if let Some(s) = self.second(at) {
            let mut s = s.lock();
            s.otpd_cpu = otpd_cpu;
            s.otpd_rss = otpd_rss;
            s.tool_cpu = Some(tool_cpu);
            s.redis_cpu = redis_cpu;
        }
    }

    pub fn count(&self, counter: impl Fn(&Counters) -> &AtomicU64) {
        counter(&self.counters).fetch_add(1, Ordering::Relaxed);
    }

    pub fn latency(&self, op: Op) -> Histogram<u64> {
        self.ops[op as usize].latency.lock().clone()
    }

    pub fn answers(&self, op: Op) -> BTreeMap<String, u64> {
        self.ops[op as usize].answers.lock().clone()
    }

    pub fn delivery(&self, via: Via) -> Histogram<u64> {
        self.delivery[via as usize].lock().clone()
    }

    /// The seconds at the top rate among the first `arrivals` (whole seconds only: the
    /// last, partial one offered less), or none when nothing was offered.
    pub fn peak(&self, arrivals: Duration) -> Option<Peak> {
        let whole = (arrivals.as_secs() as usize).min(self.seconds.len());
        let seconds: Vec<_> = self.seconds[..whole].iter().map(|s| s.lock()).collect();
        let top = seconds.iter().map(|s| s.offered).max().filter(|&n| n > 0)?;
        let floor = (top as f64 * PEAK_SHARE).ceil() as u64;
        let at_top: Vec<(usize, &Second)> = seconds
            .iter()
            .enumerate()
            .filter(|(_, s)| s.offered >= floor)
            .map(|(t, s)| (t, &**s))
            .collect();
        let mut issue = small_histogram();
        for (_, s) in &at_top {
            if let Some(h) = &s.issue {
                let _ = issue.add(h);
            }
        }
        let q = |p: f64| issue.value_at_quantile(p) as f64 / 1000.0;
        let per_s =
            |f: fn(&Second) -> u64| median(at_top.iter().map(|(_, s)| f(s) as f64).collect());
        let mean_of = |f: fn(&Second) -> Option<f64>| {
            let v: Vec<f64> = at_top.iter().filter_map(|(_, s)| f(s)).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        Some(Peak {
            seconds: at_top.len() as u64,
            from_s: at_top.first().map_or(0, |(t, _)| *t as u64),
            to_s: at_top.last().map_or(0, |(t, _)| *t as u64),
            offered_per_s: per_s(|s| s.offered),
            issued_per_s: per_s(|s| s.issued),
            delivered_per_s: per_s(|s| s.delivered),
            delivered_sms_per_s: per_s(|s| s.delivered_sms),
            issue_p50_ms: q(0.5),
            issue_p99_ms: q(0.99),
            issue_p999_ms: q(0.999),
            otpd_cpu: mean_of(|s| s.otpd_cpu),
            tool_cpu: mean_of(|s| s.tool_cpu),
        })
    }

    /// The per-second series up to `until` (from the start).
    pub fn series(&self, until: Duration) -> Vec<SecondView> {
        let n = (until.as_secs() as usize + 1).min(self.seconds.len());
        self.seconds[..n]
            .iter()
            .enumerate()
            .map(|(t, s)| {
                let s = s.lock();
                let q = |h: &Option<Histogram<u64>>, p: f64| {
                    h.as_ref()
                        .filter(|h| !h.is_empty())
                        .map(|h| h.value_at_quantile(p) as f64 / 1000.0)
                };
                SecondView {
                    t: t as u64,
                    offered: s.offered,
                    dropped: s.dropped,
                    issued: s.issued,
                    issue_errors: s.issue_errors,
                    issue_p50_ms: q(&s.issue, 0.5),
                    issue_p99_ms: q(&s.issue, 0.99),
                    checks: s.checks,
                    check_p50_ms: q(&s.check, 0.5),
                    check_p99_ms: q(&s.check, 0.99),
                    delivered: s.delivered,
                    otpd_cpu: s.otpd_cpu,
                    otpd_rss_mb: s.otpd_rss.map(|b| b as f64 / (1 << 20) as f64),
                    tool_cpu: s.tool_cpu,
                    redis_cpu: s.redis_cpu,
                }
            })
            .collect()
    }
}

/// The run at its top rate. A ramp or a day shape averages its slow parts into the
/// whole-run rates, which then understate what otpd held at the peak; an SRE sizing a
/// deployment asks what it carried there, and at what latency.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Peak {
    /// The seconds counted: every whole second of the arrivals offered at least
    /// [`PEAK_SHARE`] of the busiest one.
    pub seconds: u64,
    /// The first and the last of them (from the start).
    pub from_s: u64,
    pub to_s: u64,
    /// Medians over those seconds, per second.
    pub offered_per_s: f64,
    pub issued_per_s: f64,
    pub delivered_per_s: f64,
    /// Of those, by SMS over SMPP.
    pub delivered_sms_per_s: f64,
    /// Issue latency over the answers in those seconds (two significant digits).
    pub issue_p50_ms: f64,
    pub issue_p99_ms: f64,
    pub issue_p999_ms: f64,
    /// Means over those seconds, in cores.
    pub otpd_cpu: Option<f64>,
    pub tool_cpu: Option<f64>,
}

/// A second belongs to the peak when it offered at least this share of the busiest.
pub const PEAK_SHARE: f64 = 0.95;

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One second of the run, as reported.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct SecondView {
    pub t: u64,
    pub offered: u64,
    pub dropped: u64,
    pub issued: u64,
    pub issue_errors: u64,
    pub issue_p50_ms: Option<f64>,
    pub issue_p99_ms: Option<f64>,
    pub checks: u64,
    pub check_p50_ms: Option<f64>,
    pub check_p99_ms: Option<f64>,
    pub delivered: u64,
    pub otpd_cpu: Option<f64>,
    pub otpd_rss_mb: Option<f64>,
    pub tool_cpu: Option<f64>,
    /// The tool's own redis-server, when it started one.
    #[serde(default)]
    pub redis_cpu: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_and_timed_from_when_they_were_due() {
        let start = Instant::now();
        let m = Measures::new(start, Duration::from_secs(5));
        let due = start + Duration::from_millis(100);
        m.offered(due, true);
        m.answered(Op::Issue, due, due + Duration::from_millis(7), "201", true);
        m.answered(
            Op::Issue,
            due,
            due + Duration::from_millis(2),
            "429 rate_limited",
            false,
        );
        let h = m.latency(Op::Issue);
        assert_eq!(h.len(), 2);
        assert_eq!(h.max() / 1000, 7);
        assert_eq!(m.answers(Op::Issue)["429 rate_limited"], 1);
        let series = m.series(Duration::from_secs(1));
        assert_eq!(series[0].offered, 1);
        assert_eq!(series[0].issued, 1);
        assert_eq!(series[0].issue_errors, 1);
        assert!(series[0].issue_p99_ms.unwrap() >= 6.9);
        assert_eq!(series[1].issue_p99_ms, None);
    }

    #[test]
    fn the_peak_is_the_seconds_at_the_top_rate_and_their_own_latency() {
        let start = Instant::now();
        let m = Measures::new(start, Duration::from_secs(10));
        // A ramp 10, 20, 100, 98, 100 a second, then a partial second of 30.
        for (t, n) in [10u64, 20, 100, 98, 100, 30].into_iter().enumerate() {
            let second = start + Duration::from_secs(t as u64);
            for k in 0..n {
                let due = second + Duration::from_micros(k * 1000);
                m.offered(due, true);
                // The ramp answers in 50 ms, the top in 2 ms.
                let took = Duration::from_millis(if n >= 98 { 2 } else { 50 });
                m.answered(Op::Issue, due, due + took, "201", true);
                if t >= 2 {
                    m.delivered(Via::Sms, took, due + took);
                }
            }
        }
        let peak = m.peak(Duration::from_millis(5_400)).expect("a peak");
        assert_eq!((peak.seconds, peak.from_s, peak.to_s), (3, 2, 4));
        assert_eq!(peak.offered_per_s, 100.0);
        assert_eq!(peak.issued_per_s, 100.0);
        assert_eq!(peak.delivered_per_s, 100.0);
        assert_eq!(peak.delivered_sms_per_s, 100.0);
        assert!((1.9..2.1).contains(&peak.issue_p99_ms), "{peak:?}");
        // The whole run's p99 carries the ramp's 50 ms.
        assert!(m.latency(Op::Issue).value_at_quantile(0.99) >= 49_000);
        assert!(
            Measures::new(start, Duration::from_secs(1))
                .peak(Duration::from_secs(1))
                .is_none()
        );
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
