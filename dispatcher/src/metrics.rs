//! Prometheus metrics. Handles are registered once at start-up, so the hot path only
//! bumps atomics; `/metrics` renders the exporter's text format.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use otpd_adapters::ChannelKind;

use crate::domain::verification::{CheckOutcome, EscalationCause, SendState};

/// Latency buckets in seconds, from 50 µs (in-process work) to 10 s (slow carriers).
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Install the process-wide Prometheus recorder (once; later calls return the same
/// handle, so several servers in one test process share it).
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by an embedding program);
            // then this handle renders only what this recorder saw, which is nothing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub struct Metrics {
    created: Counter,
    resent: Counter,
    refused_cooldown: Counter,
    refused_max_sends: Counter,
    deduplicated: Counter,
    overloaded: Counter,
    checks: [Counter; 8],
    /// App answers: approved, denied, and refused by reason.
    answers: [Counter; 2],
    sent_sms: Counter,
    sent_push: Counter,
    failed_sms: Counter,
    failed_push: Counter,
    send_seconds_sms: Histogram,
    send_seconds_push: Histogram,
    reports: [Counter; 5],
    escalations: [Counter; 2],
    acknowledgements: Counter,
    /// Channel answers the store refused to record after every retry (kept for when
    /// their job comes back; see `delivery::in_flight`).
    unrecorded: Counter,
    pub queue_depth: Gauge,
    /// The queue's standing wait (see [`crate::policy::sojourn`]); 0 when there is none.
    pub queue_delay: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every series with whatever recorder is installed (none: no-ops).
    pub fn new() -> Self {
        let issued = |outcome: &'static str| metrics::counter!("otpd_verifications_total", "outcome" => outcome);
        let check =
            |outcome: &'static str| metrics::counter!("otpd_checks_total", "outcome" => outcome);
        let sends = |channel: &'static str, outcome: &'static str| metrics::counter!("otpd_sends_total", "channel" => channel, "outcome" => outcome);
        let seconds = |channel: &'static str| metrics::histogram!("otpd_send_duration_seconds", "channel" => channel);
        Self {
            created: issued("created"),
            resent: issued("resent"),
            refused_cooldown: issued("refused_cooldown"),
            refused_max_sends: issued("refused_max_sends"),
            deduplicated: issued("deduplicated"),
            overloaded: issued("refused_overloaded"),
            checks: [
                check("approved"),
                check("wrong"),
                check("locked"),
                check("expired"),
                check("canceled"),
                check("already_approved"),
                check("denied"),
                check("no_code"),
            ],
            answers: ["approved", "denied"]
                .map(|outcome| metrics::counter!("otpd_app_answers_total", "outcome" => outcome)),
            sent_sms: sends("sms", "sent"),
            sent_push: sends("push", "sent"),
            failed_sms: sends("sms", "failed"),
            failed_push: sends("push", "failed"),
            send_seconds_sms: seconds("sms"),
            send_seconds_push: seconds("push"),
            reports: [
                "delivered",
                "undeliverable",
                "expired",
                "rejected",
                "unconfirmed",
            ]
            .map(|state| metrics::counter!("otpd_delivery_reports_total", "state" => state)),
            escalations: ["push_timeout", "push_failed"]
                .map(|cause| metrics::counter!("otpd_escalations_total", "cause" => cause)),
            acknowledgements: metrics::counter!("otpd_push_acknowledgements_total"),
            unrecorded: metrics::counter!("otpd_send_results_unrecorded_total"),
            queue_depth: metrics::gauge!("otpd_delivery_queue_depth"),
            queue_delay: metrics::gauge!("otpd_delivery_queue_delay_seconds"),
        }
    }

    pub fn created(&self) {
        self.created.increment(1);
    }
    pub fn resent(&self) {
        self.resent.increment(1);
    }
    pub fn refused_cooldown(&self) {
        self.refused_cooldown.increment(1);
    }
    pub fn refused_max_sends(&self) {
        self.refused_max_sends.increment(1);
    }
    pub fn deduplicated(&self) {
        self.deduplicated.increment(1);
    }
    pub fn overloaded(&self) {
        self.overloaded.increment(1);
    }

    pub fn checked(&self, outcome: CheckOutcome) {
        let i = match outcome {
            CheckOutcome::Approved => 0,
            CheckOutcome::Wrong { .. } => 1,
            CheckOutcome::Locked => 2,
            CheckOutcome::Expired => 3,
            CheckOutcome::Canceled => 4,
            CheckOutcome::AlreadyApproved => 5,
            CheckOutcome::Denied => 6,
            CheckOutcome::NoCode => 7,
        };
        self.checks[i].increment(1);
    }

    /// An app's signed answer made a verification final.
    pub fn answered(&self, decision: crate::secrets::device_key::Decision) {
        let i = match decision {
            crate::secrets::device_key::Decision::Approve => 0,
            crate::secrets::device_key::Decision::Deny => 1,
        };
        self.answers[i].increment(1);
    }

    /// An app's answer was refused (`reason`: bad_signature, stale, …).
    pub fn answer_refused(&self, reason: &'static str) {
        metrics::counter!("otpd_app_answers_refused_total", "reason" => reason).increment(1);
    }

    pub fn sent(&self, kind: ChannelKind, took: Duration) {
        match kind {
            ChannelKind::Sms => {
                self.sent_sms.increment(1);
                self.send_seconds_sms.record(took.as_secs_f64());
            }
            ChannelKind::Push => {
                self.sent_push.increment(1);
                self.send_seconds_push.record(took.as_secs_f64());
            }
        }
    }

    /// A delivery report arrived.
    pub fn reported(&self, state: SendState) {
        let i = match state {
            SendState::Delivered => 0,
            SendState::Undeliverable => 1,
            SendState::Expired => 2,
            SendState::Unconfirmed => 4,
            _ => 3,
        };
        self.reports[i].increment(1);
    }

    /// A push fell back to SMS.
    pub fn escalated(&self, cause: EscalationCause) {
        let i = match cause {
            EscalationCause::Timeout => 0,
            EscalationCause::PushFailed => 1,
        };
        self.escalations[i].increment(1);
    }

    pub fn acknowledged(&self) {
        self.acknowledgements.increment(1);
    }

    pub fn unrecorded(&self) {
        self.unrecorded.increment(1);
    }

    pub fn send_failed(&self, kind: ChannelKind) {
        match kind {
            ChannelKind::Sms => self.failed_sms.increment(1),
            ChannelKind::Push => self.failed_push.increment(1),
        }
    }
}
