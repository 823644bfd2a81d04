//! The run's report: what was offered and achieved, latency percentiles per
//! operation and per delivery channel, answers by status, what the people did, the
//! tool's own accounting checks, per-second series and the processes' CPU and
//! memory. Written as `report.json`, a self-contained `report.html` (charts drawn in
//! the page from the embedded data; no network, no files beside it) and a text
//! summary.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::measure::{Measures, Op, Peak, SecondView, Via};
use crate::scenario::Scenario;
use crate::sims::SimStats;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// (percentile, milliseconds) from 0 to 99.9999 and the maximum, for the
    /// percentile-distribution chart.
    pub curve: Vec<(f64, f64)>,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        let at = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(q))
            }
        };
        let mut curve = Vec::new();
        if !h.is_empty() {
            for k in 0..=24 {
                let q = 1.0 - 10f64.powf(-(k as f64) / 4.0);
                curve.push((q * 100.0, at(q)));
            }
            curve.push((100.0, ms(h.max())));
        }
        Self {
            count: h.len(),
            mean_ms: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: if h.is_empty() { 0.0 } else { ms(h.max()) },
            curve,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpReport {
    /// Answers per second over the window the operation ran in.
    pub rate: f64,
    pub latency: Latency,
    pub answers: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessReport {
    /// Mean and highest CPU, in cores (1.0 = one core busy).
    pub cpu_mean: f64,
    pub cpu_max: f64,
    pub rss_max_mb: Option<f64>,
    pub rss_last_mb: Option<f64>,
}

/// Redis under a run on the Redis store. Round trips are what otpd sent (a script
/// run by `EVALSHA` is one, a pipeline is one; otpd's `otpd_redis_round_trips_total`);
/// commands are what Redis ran, scripts' included (`INFO commandstats`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedisReport {
    pub url: String,
    pub started_by_tool: bool,
    /// From the arrivals' start until every session settled, over the codes
    /// delivered: each verification's whole life (issue, send, receipt, the app's
    /// acknowledgement, checks, resends).
    pub round_trips_per_verification: f64,
    pub commands_per_verification: f64,
    pub commands_by_name: BTreeMap<String, f64>,
    pub round_trips_per_second: f64,
    /// During the check burst, over its checks.
    pub round_trips_per_burst_check: Option<f64>,
    /// `redis-benchmark -t set -c 32` with as many requests, on the same server after
    /// the run.
    pub benchmark_set_per_second: Option<f64>,
    /// otpd's round trips per second over redis-benchmark's requests per second.
    pub ratio_to_benchmark: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub scenario: String,
    /// otpd's store: memory or redis.
    pub store: String,
    pub redis: Option<RedisReport>,
    /// What the webhook receiver took, in a run with `--webhooks`.
    #[serde(default)]
    pub webhooks: Option<crate::webhooks::WebhookReport>,
    pub description: String,
    pub target: String,
    pub cores: usize,
    pub seed: u64,
    pub subjects: u64,
    pub connections: usize,
    /// Seconds: registering the people with apps (before the clock), the arrivals,
    /// until every session settled (or the drain ran out), and the whole run.
    pub setup_s: f64,
    pub arrivals_s: f64,
    pub drained_s: f64,
    pub total_s: f64,
    /// The check burst's start and length, in seconds from the start.
    pub burst: Option<(f64, f64)>,
    pub offered: u64,
    pub sent: u64,
    pub dropped: u64,
    pub offered_rate: f64,
    /// Verifications issued (2xx) per second over the arrivals.
    pub issued_rate: f64,
    /// Codes that reached the SMSC or the push provider, per second from the start
    /// until the last of them arrived (at least the arrivals): verifications end to
    /// end. Over the arrivals alone, a backlog delivered after them would count as
    /// throughput otpd did not have.
    pub delivered_rate: f64,
    /// Seconds from the start until the last second in which a code arrived; beyond
    /// `arrivals_s`, delivery fell behind and caught up afterwards.
    #[serde(default)]
    pub delivered_by_s: f64,
    /// The seconds at the top rate, on their own.
    #[serde(default)]
    pub peak: Option<Peak>,
    pub ops: BTreeMap<String, OpReport>,
    pub delivery: BTreeMap<String, Latency>,
    pub people: BTreeMap<String, u64>,
    /// The tool's own accounting: always true, or the figures are not to be trusted.
    pub invariants: Vec<Check>,
    /// What a healthy otpd does in this scenario; a scenario with faults may fail some.
    pub expectations: Vec<Check>,
    pub series: Vec<SecondView>,
    pub otpd: ProcessReport,
    pub tool_cpu_mean: f64,
    /// The tool's own redis-server, when it started one.
    pub redis_cpu_mean: Option<f64>,
    pub otpd_exit: Option<String>,
    pub smscs: Vec<SimStats>,
    pub push: Vec<SimStats>,
}

/// Seconds from the start to the end of the last second in which a code arrived, and
/// at least `arrivals`.
fn delivered_by(series: &[SecondView], arrivals: f64) -> f64 {
    series
        .iter()
        .rev()
        .find(|s| s.delivered > 0)
        .map_or(0.0, |s| (s.t + 1) as f64)
        .max(arrivals)
}

pub struct Inputs<'a> {
    pub scenario: &'a Scenario,
    pub m: &'a Measures,
    pub arrivals: Duration,
    pub drained: Duration,
    pub total: Duration,
    pub burst: Option<(Duration, Duration)>,
    pub setup: Duration,
    pub register_latency: Histogram<u64>,
    pub register_answers: BTreeMap<String, u64>,
    pub late_deliveries: u64,
    pub smscs: Vec<SimStats>,
    pub push: Vec<SimStats>,
    pub otpd_exit: Option<String>,
    pub target: String,
    pub store: String,
    pub redis: Option<RedisReport>,
    pub webhooks: Option<crate::webhooks::WebhookReport>,
}

fn check(name: &str, ok: bool, detail: String) -> Check {
    Check {
        name: name.into(),
        ok,
        detail,
    }
}

impl Report {
    pub fn build(i: Inputs<'_>) -> Report {
        let c = &i.m.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let arrivals = i.arrivals.as_secs_f64().max(1e-3);
        let ops = ops(&i, arrivals);
        let delivery = delivery(i.m);
        let people = people(&i);
        let (offered, sent, dropped) = (get(&c.offered), get(&c.sent), get(&c.dropped));
        let (invariants, expectations) = checks(&i, &delivery);
        let delivered_total = get(&c.delivered) + get(&c.abuse_delivered);
        let until = i.total;
        let series = i.m.series(until);
        let delivered_by = delivered_by(&series, arrivals);
        let cpus: Vec<f64> = series.iter().filter_map(|s| s.otpd_cpu).collect();
        let rss: Vec<f64> = series.iter().filter_map(|s| s.otpd_rss_mb).collect();
        let tool: Vec<f64> = series.iter().filter_map(|s| s.tool_cpu).collect();
        let redis_cpu: Vec<f64> = series.iter().filter_map(|s| s.redis_cpu).collect();
        let mean = |v: &[f64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        Report {
            tool: format!("otpd-loadtest {}", env!("CARGO_PKG_VERSION")),
            scenario: i.scenario.name.clone(),
            store: i.store,
            redis: i.redis,
            webhooks: i.webhooks,
            description: i.scenario.description.clone(),
            target: i.target,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            seed: i.scenario.seed,
            subjects: i.scenario.population.subjects,
            connections: i.scenario.connections,
            setup_s: i.setup.as_secs_f64(),
            arrivals_s: i.arrivals.as_secs_f64(),
            drained_s: i.drained.as_secs_f64(),
            total_s: i.total.as_secs_f64(),
            burst: i.burst.map(|(a, b)| (a.as_secs_f64(), b.as_secs_f64())),
            offered,
            sent,
            dropped,
            offered_rate: offered as f64 / arrivals,
            issued_rate: i
                .m
                .answers(Op::Issue)
                .iter()
                .filter(|(k, _)| k.starts_with('2'))
                .map(|(_, v)| v)
                .sum::<u64>() as f64
                / arrivals,
            delivered_rate: delivered_total as f64 / delivered_by,
            delivered_by_s: delivered_by,
            peak: i.m.peak(i.arrivals),
            ops,
            delivery,
            people,
            invariants,
            expectations,
            series,
            otpd: ProcessReport {
                cpu_mean: mean(&cpus),
                cpu_max: cpus.iter().copied().fold(0.0, f64::max),
                rss_max_mb: rss.iter().copied().reduce(f64::max),
                rss_last_mb: rss.last().copied(),
            },
            tool_cpu_mean: mean(&tool),
            redis_cpu_mean: (!redis_cpu.is_empty()).then(|| mean(&redis_cpu)),
            otpd_exit: i.otpd_exit,
            smscs: i.smscs,
            push: i.push,
        }
    }

    pub fn invariants_hold(&self) -> bool {
        self.invariants.iter().all(|c| c.ok)
    }

    /// `report.json`, `report.html` and `summary.txt` in `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), &json)?;
        std::fs::write(dir.join("report.html"), crate::html::render(self))?;
        std::fs::write(dir.join("summary.txt"), self.summary())?;
        Ok(())
    }

    /// The text summary.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "otpd-loadtest — scenario {} — {}",
            self.scenario, self.target
        );
        let _ = writeln!(
            s,
            "arrivals {:.1}s, settled at {:.1}s, total {:.1}s (set-up {:.1}s); {} cores shared by otpd, simulators and this tool",
            self.arrivals_s, self.drained_s, self.total_s, self.setup_s, self.cores
        );
        let _ = writeln!(
            s,
            "offered {} ({:.0}/s), sent {}, dropped {}; issued {:.0}/s; delivered end to end {:.0}/s (the last code at {:.0}s)",
            self.offered,
            self.offered_rate,
            self.sent,
            self.dropped,
            self.issued_rate,
            self.delivered_rate,
            self.delivered_by_s
        );
        if let Some(w) = &self.webhooks {
            let _ = writeln!(
                s,
                "webhooks: {} requests taken ({} distinct events, {} with a bad signature); by type: {}",
                w.received,
                w.distinct,
                w.bad_signatures,
                w.by_type
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for e in &w.protocol_errors {
                let _ = writeln!(s, "webhooks: a connection broke HTTP/2: {e}");
            }
        }
        if let Some(p) = &self.peak {
            let _ = writeln!(
                s,
                "at the top rate ({} s, {}–{} s): offered {:.0}/s, issued {:.0}/s, delivered end to end {:.0}/s, {:.0}/s of them by SMS (medians of those seconds); issue p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms{}",
                p.seconds,
                p.from_s,
                p.to_s + 1,
                p.offered_per_s,
                p.issued_per_s,
                p.delivered_per_s,
                p.delivered_sms_per_s,
                p.issue_p50_ms,
                p.issue_p99_ms,
                p.issue_p999_ms,
                match (p.otpd_cpu, p.tool_cpu) {
                    (Some(o), Some(t)) => format!("; otpd CPU {o:.2} cores, this tool {t:.2}"),
                    _ => String::new(),
                }
            );
        }
        let _ = writeln!(
            s,
            "\n{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency ms", "count", "rate/s", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, op) in &self.ops {
            let l = &op.latency;
            let _ = writeln!(
                s,
                "{name:<12} {:>9} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                l.count, op.rate, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
        }
        for (name, l) in &self.delivery {
            let _ = writeln!(
                s,
                "{:<12} {:>9} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                format!("to {name}"),
                l.count,
                "",
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.p999_ms,
                l.max_ms
            );
        }
        let _ = writeln!(s, "\nanswers:");
        for (name, op) in &self.ops {
            let list: Vec<String> = op
                .answers
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(s, "  {name:<12} {}", list.join(", "));
        }
        let people: Vec<String> = self
            .people
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(s, "\npeople: {}", people.join(", "));
        let _ = writeln!(
            s,
            "otpd CPU mean {:.2} cores (max {:.2}), RSS max {} MB; this tool's CPU mean {:.2} cores",
            self.otpd.cpu_mean,
            self.otpd.cpu_max,
            self.otpd
                .rss_max_mb
                .map_or("?".into(), |m| format!("{m:.0}")),
            self.tool_cpu_mean
        );
        if let Some(r) = self.redis_cpu_mean {
            let _ = writeln!(s, "redis-server CPU mean {r:.2} cores");
        }
        if let Some(r) = &self.redis {
            let by: Vec<String> = r
                .commands_by_name
                .iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect();
            let _ = writeln!(
                s,
                "redis {}: {:.2} round trips per verification; {:.1} commands run per verification ({}); {:.0} round trips/s{}",
                r.url,
                r.round_trips_per_verification,
                r.commands_per_verification,
                by.join(", "),
                r.round_trips_per_second,
                r.round_trips_per_burst_check
                    .map_or(String::new(), |c| format!("; {c:.2} per burst check"))
            );
            if let (Some(b), Some(ratio)) = (r.benchmark_set_per_second, r.ratio_to_benchmark) {
                let _ = writeln!(
                    s,
                    "redis-benchmark SET, as many requests on the same server: {b:.0}/s; otpd's round trips/s over it: {ratio:.2}"
                );
            }
        }
        for c in self.invariants.iter().chain(&self.expectations) {
            let _ = writeln!(
                s,
                "[{}] {} — {}",
                if c.ok { " ok " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        s
    }
}

/// Each operation's rate, latency and answers, over the window it ran in.
fn ops(i: &Inputs<'_>, arrivals: f64) -> BTreeMap<String, OpReport> {
    let mut ops = BTreeMap::new();
    for op in Op::ALL {
        let (h, answers, window) = if op == Op::Register {
            (
                i.register_latency.clone(),
                i.register_answers.clone(),
                i.setup.as_secs_f64(),
            )
        } else {
            let window = match op {
                Op::BurstCheck => i.burst.map_or(0.0, |(_, d)| d.as_secs_f64()),
                Op::Issue | Op::AbuseIssue => arrivals,
                _ => i.drained.as_secs_f64(),
            };
            (i.m.latency(op), i.m.answers(op), window)
        };
        if h.is_empty() {
            continue;
        }
        ops.insert(
            op.as_str().to_string(),
            OpReport {
                rate: h.len() as f64 / window.max(1e-3),
                latency: Latency::of(&h),
                answers,
            },
        );
    }
    ops
}

/// How long codes took to arrive, by channel and over all.
fn delivery(m: &Measures) -> BTreeMap<String, Latency> {
    let mut delivery = BTreeMap::new();
    let mut all = crate::measure::histogram();
    for via in Via::ALL {
        let h = m.delivery(via);
        if !h.is_empty() {
            let _ = all.add(&h);
            delivery.insert(via.as_str().to_string(), Latency::of(&h));
        }
    }
    if !all.is_empty() {
        delivery.insert("all".into(), Latency::of(&all));
    }
    delivery
}

/// What happened to the simulated people, by outcome.
fn people(i: &Inputs<'_>) -> BTreeMap<String, u64> {
    let c = &i.m.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    [
        ("registered", get(&c.registered)),
        ("sessions", get(&c.sessions)),
        ("refused", get(&c.refused)),
        ("replaced", get(&c.replaced)),
        ("delivered", get(&c.delivered)),
        ("undelivered", get(&c.undelivered)),
        ("approved", get(&c.approved)),
        ("approved_in_app", get(&c.approved_in_app)),
        ("wrong_code_rejected", get(&c.wrong_rejected)),
        ("never_typed", get(&c.never_typed)),
        ("unexpected_check_answers", get(&c.unexpected_checks)),
        ("extra_deliveries", get(&c.extra_deliveries)),
        ("escalated_to_sms", get(&c.escalated)),
        ("late_deliveries", i.late_deliveries),
        ("unmatched_deliveries", get(&c.unmatched_deliveries)),
        ("code_mismatches", get(&c.code_mismatches)),
        ("abuse_offered", get(&c.abuse_offered)),
        ("abuse_accepted", get(&c.abuse_accepted)),
        ("abuse_delivered", get(&c.abuse_delivered)),
        ("burst_checks_dropped", get(&c.burst_dropped)),
        ("cut_off_at_the_end", get(&c.cut_off)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The invariants a sound run keeps whatever the load, and the expectations a run
/// within otpd's capacity meets.
fn checks(i: &Inputs<'_>, delivery: &BTreeMap<String, Latency>) -> (Vec<Check>, Vec<Check>) {
    let c = &i.m.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let (offered, sent, dropped) = (get(&c.offered), get(&c.sent), get(&c.dropped));
    let answered = |op: Op| i.m.latency(op).len();
    let issue_answers = answered(Op::Issue) + answered(Op::AbuseIssue);
    let unanswered = get(&c.issues_in_flight);
    let sessions = get(&c.sessions);
    let settled_kinds =
        get(&c.refused) + get(&c.delivered) + get(&c.undelivered) + get(&c.replaced);
    let delivered_total = get(&c.delivered) + get(&c.abuse_delivered);
    let invariants = vec![
        check(
            "offered = sent + dropped",
            offered == sent + dropped,
            format!("{offered} offered, {sent} sent, {dropped} dropped by the generator"),
        ),
        check(
            "every request sent was answered, failed, or still in flight at the end",
            issue_answers + unanswered == sent,
            format!(
                "{sent} sent, {issue_answers} answers and transport errors recorded, {unanswered} unanswered at the end"
            ),
        ),
        check(
            "every session accounted for",
            sessions == settled_kinds,
            format!(
                "{sessions} sessions = refused + delivered + undelivered + replaced = {settled_kinds}"
            ),
        ),
        check(
            "latency histograms non-empty",
            answered(Op::Issue) > 0
                && (delivered_total == 0
                    || !i.m.delivery(Via::Sms).is_empty()
                    || delivery.contains_key("all")),
            format!(
                "{} issue answers, {} delivery latencies",
                answered(Op::Issue),
                delivery.get("all").map_or(0, |l| l.count)
            ),
        ),
        check(
            "every delivered code matched to its request",
            get(&c.unmatched_deliveries) == 0 && get(&c.code_mismatches) == 0,
            format!(
                "{} messages for no request, {} with an unreadable or different code",
                get(&c.unmatched_deliveries),
                get(&c.code_mismatches)
            ),
        ),
    ];
    let transport_errors: u64 = Op::ALL
        .iter()
        .flat_map(|op| i.m.answers(*op))
        .filter(|(key, _)| key.starts_with(crate::measure::TRANSPORT_ERROR))
        .map(|(_, n)| n)
        .sum();
    let expectations = vec![
        check(
            "every request answered by otpd",
            transport_errors == 0,
            format!("{transport_errors} transport errors (no answer, or the connection lost)"),
        ),
        check(
            "nothing dropped by the generator",
            dropped == 0,
            format!("{dropped} dropped"),
        ),
        check(
            "every session's code delivered",
            get(&c.undelivered) == 0,
            format!("{} sessions never got their code", get(&c.undelivered)),
        ),
        check(
            "every right code approved, every wrong one refused",
            get(&c.unexpected_checks) == 0,
            format!("{} checks answered otherwise", get(&c.unexpected_checks)),
        ),
    ];
    (invariants, expectations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(t: u64, delivered: u64) -> SecondView {
        SecondView {
            t,
            delivered,
            ..SecondView::default()
        }
    }

    #[test]
    fn a_backlog_delivered_after_the_arrivals_stretches_the_delivery_time() {
        let series = [second(0, 10), second(1, 10), second(2, 5), second(3, 0)];
        assert_eq!(delivered_by(&series, 2.0), 3.0);
        // Kept pace: the arrivals' own length.
        assert_eq!(delivered_by(&series[..2], 2.0), 2.0);
        assert_eq!(delivered_by(&[], 1.5), 1.5);
    }
}
