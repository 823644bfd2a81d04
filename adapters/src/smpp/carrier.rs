//! A carrier: a pool of binds to one SMSC behind otpd's [`Channel`] trait.
//!
//! Submits go round-robin to the binds that are bound; a carrier with no live bind
//! answers a temporary error at once, so the dispatcher can fail over. A message
//! longer than one SMS goes out as several parts with a concatenation UDH.
//!
//! Receipts from every bind meet in one [`ReceiptMatcher`], which matches them to
//! submits however the SMSC writes its ids, waits until every part of a message has
//! a final state, and emits one [`DeliveryReport`]. A receipt can overtake the
//! submit_sm_resp it is about (the SMSC sends both, the resp may be read later); it
//! is held for `unmatched_grace` and matched once the submit is registered. With a
//! shared [`MessageDirectory`] (several nodes bound to one account), each submit is
//! noted there too, and a receipt that matches nothing here is looked up there: the
//! SMSC may have sent it to this node for a message another node submitted.
//! Receipts that still match nothing are counted and logged; messages whose
//! receipts never come lapse with their code, and are counted too.
//!
//! Every submit_sm carries a `validity_period` set from the code's expiry, so that a
//! carrier never delivers a code after it stopped working.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::directory::{MessageDirectory, Noted};
use super::encoding;
use super::matcher::{Event, IdForms, MatcherConfig, ReceiptMatcher};
use super::pdu::{self, Address, SubmitOptions, ValidityPeriod};
use super::receipt::{MessageState, id_keys};
use super::session::{Bind, BindConfig, BindMode, BindState, ReceiptEvent, SubmitError};
use super::status::StatusClass;
use super::validity::{self, ValidityForm};
use crate::channel::{
    Channel, ChannelError, DeliveryReport, Message, Open, ReportState, SendGate, SubmitReceipt,
};

#[derive(Debug, Clone)]
pub struct CarrierConfig {
    /// Short name, used in references, logs and metrics.
    pub name: String,
    /// The template of every bind (address, credentials, window, per-bind TPS, …).
    pub bind: BindConfig,
    /// How many binds to open (pairs, with `pair`).
    pub binds: usize,
    /// Bind as a transmitter + receiver pair instead of a transceiver.
    pub pair: bool,
    /// Sender: an alphanumeric id (TON 5, NPI 0) or a number.
    pub source: Address,
    /// registered_delivery: 0x01 asks for receipts.
    pub registered_delivery: u8,
    /// How long one submit may wait for a bind and its response before it is
    /// reported as a temporary failure.
    pub submit_timeout: Duration,
    /// How long a receipt that matches nothing yet is kept for a late match.
    pub unmatched_grace: Duration,
    /// How the SMSC wants text encoded.
    pub encoding: encoding::Policy,
    /// How the SMSC writes in its receipts the ids its submit_sm_resp gave.
    pub receipt_ids: IdForms,
    /// Which form each submit_sm's `validity_period` takes.
    pub validity: ValidityForm,
    /// How long past the code's expiry a message waits for its final receipts;
    /// then it is reported [`ReportState::Unconfirmed`].
    pub receipt_wait: Duration,
    /// SMPP over TLS, when the carrier offers it.
    pub tls: Option<super::session::TlsTcp>,
}

/// Counters of a carrier, beside its binds' own.
#[derive(Debug, Default)]
pub struct CarrierStats {
    pub receipts_matched: AtomicU64,
    pub receipts_unmatched: AtomicU64,
    pub receipts_unreadable: AtomicU64,
    pub reports: AtomicU64,
    /// Messages whose receipts had not all come when they lapsed.
    pub receipts_missing: AtomicU64,
}

/// What a message awaiting its receipts carries to its report.
#[derive(Debug)]
struct Sent {
    reference: String,
    verification_id: String,
    send: u8,
}

type Router = ReceiptMatcher<Sent>;

/// The most receipts held at once for submits still to come (about 200 bytes each).
const MAX_HELD_RECEIPTS: usize = 65_536;

pub struct SmppCarrier {
    config: CarrierConfig,
    binds: Vec<(BindMode, Bind)>,
    next_bind: AtomicUsize,
    next_reference: AtomicU8,
    router: Arc<Mutex<Router>>,
    reports_tx: mpsc::Sender<DeliveryReport>,
    reports_rx: Mutex<Option<mpsc::Receiver<DeliveryReport>>>,
    stats: Arc<CarrierStats>,
    directory: Option<Arc<dyn MessageDirectory>>,
    /// One permit per window slot of the binds that submit: a message waits here,
    /// before its gate, rather than inside a bind after it.
    window: tokio::sync::Semaphore,
}

/// How long a receipt waits, while the carrier's id form is not known yet, before
/// it may match through a reading of its id other than as written.
pub const OTHER_BASE_AFTER: Duration = Duration::from_secs(1);

/// [`OTHER_BASE_AFTER`], or half the grace when that is shorter.
fn other_base_after(grace: Duration) -> Duration {
    OTHER_BASE_AFTER.min(grace / 2)
}

/// How long past a message's validity its directory note is kept: an SMSC sends the
/// final receipt at the latest when the validity ends, a little after on a slow
/// link.
const NOTE_MARGIN: Duration = Duration::from_secs(15 * 60);

/// The default of [`CarrierConfig::receipt_wait`]. A message's `validity_period` is
/// its code's expiry, so an SMSC reports it final by then; five minutes more allow
/// for a slow link, and close the send while its record is still kept (10 minutes
/// past expiry by default), where the history shows it.
pub const RECEIPT_WAIT: Duration = Duration::from_secs(5 * 60);

/// A message whose bind lost its link waits this long for the bind to come back;
/// then the carrier gives it up (the bind will not send it later) and reports a
/// temporary failure, so that it goes to another bind or carrier. Without it, a SMSC
/// that stops answering held every message it had until `submit_timeout`: a load
/// test saw ten seconds without a single delivery before failover.
pub const REBIND_GRACE: Duration = Duration::from_secs(1);

/// Resolves when `bind` has left the bound state and not come back within
/// `REBIND_GRACE`.
async fn lost_for_good(bind: &Bind) {
    loop {
        bind.wait_leave(BindState::Bound).await;
        if !bind.wait_for(BindState::Bound, REBIND_GRACE).await {
            return;
        }
    }
}

impl SmppCarrier {
    /// Open the binds (they connect in the background) and start the receipt router.
    pub fn start(config: CarrierConfig) -> Self {
        Self::start_with(config, None)
    }

    /// [`SmppCarrier::start`], noting submits in a directory shared with other nodes
    /// and looking receipts up there that match nothing here.
    pub fn start_shared(config: CarrierConfig, directory: Arc<dyn MessageDirectory>) -> Self {
        Self::start_with(config, Some(directory))
    }

    fn start_with(config: CarrierConfig, directory: Option<Arc<dyn MessageDirectory>>) -> Self {
        let (receipts_tx, receipts_rx) = mpsc::channel(4096);
        let modes: &[BindMode] = if config.pair {
            &[BindMode::Transmitter, BindMode::Receiver]
        } else {
            &[BindMode::Transceiver]
        };
        let binds = (0..config.binds.max(1))
            .flat_map(|index| modes.iter().map(move |mode| (index, *mode)))
            .map(|(index, mode)| {
                let bind = BindConfig {
                    carrier: config.name.clone(),
                    index,
                    mode,
                    ..config.bind.clone()
                };
                let bind = match &config.tls {
                    Some(tls) => Bind::start_with(bind, receipts_tx.clone(), tls.clone()),
                    None => Bind::start(bind, receipts_tx.clone()),
                };
                (mode, bind)
            })
            .collect();
        let (reports_tx, reports_rx) = mpsc::channel(4096);
        let window = config.binds.max(1) * config.bind.window.max(1);
        let router = Arc::new(Mutex::new(Router::new(MatcherConfig {
            forms: config.receipt_ids,
            hold_for: config.unmatched_grace,
            cross_after: other_base_after(config.unmatched_grace),
            max_held: MAX_HELD_RECEIPTS,
        })));
        let stats = Arc::new(CarrierStats::default());
        tokio::spawn(route_receipts(
            Routing {
                carrier: config.name.clone(),
                router: router.clone(),
                reports: reports_tx.clone(),
                stats: stats.clone(),
                grace: config.unmatched_grace,
                directory: directory.clone(),
            },
            receipts_rx,
        ));
        Self {
            config,
            binds,
            next_bind: AtomicUsize::new(0),
            next_reference: AtomicU8::new(1),
            router,
            reports_tx,
            reports_rx: Mutex::new(Some(reports_rx)),
            stats,
            directory,
            window: tokio::sync::Semaphore::new(window),
        }
    }

    /// Whether at least one bind that can submit is bound.
    pub fn is_healthy(&self) -> bool {
        self.binds
            .iter()
            .any(|(mode, b)| mode.can_submit() && b.state() == BindState::Bound)
    }

    /// The binds, with what each does.
    pub fn binds(&self) -> &[(BindMode, Bind)] {
        &self.binds
    }

    pub fn stats(&self) -> &CarrierStats {
        &self.stats
    }

    /// Wait until every bind is bound (or give up after `within`).
    pub async fn wait_bound(&self, within: Duration) -> bool {
        for (_, bind) in &self.binds {
            if !bind.wait_for(BindState::Bound, within).await {
                return false;
            }
        }
        true
    }

    fn pick_bind(&self) -> Option<&Bind> {
        let n = self.binds.len();
        let start = self.next_bind.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.binds[(start + i) % n])
            .find(|(mode, b)| mode.can_submit() && b.state() == BindState::Bound)
            .map(|(_, b)| b)
    }

    fn register(&self, ids: &[String], message: &Message, reference: &str) {
        let now = Instant::now();
        let sent = Sent {
            reference: reference.to_string(),
            verification_id: message.verification_id.clone(),
            send: message.send,
        };
        let keep_until = now + until(message.expires_at_ms) + self.config.receipt_wait;
        let events = self.router.lock().submitted(ids, sent, keep_until, now);
        for report in account(&self.config.name, &self.stats, events).reports {
            let _ = self.reports_tx.try_send(report);
        }
    }
}

/// What the matcher's events come to: reports to send, and the ids of receipts that
/// matched nothing here (to look up in the directory).
#[derive(Default)]
struct Accounted {
    reports: Vec<DeliveryReport>,
    strays: Vec<String>,
}

/// Count, log and turn into reports what the matcher said.
fn account(carrier: &str, stats: &CarrierStats, events: Vec<Event<Sent>>) -> Accounted {
    let mut out = Accounted::default();
    for event in events {
        match event {
            Event::Matched(state) => {
                stats.receipts_matched.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("otpd_smpp_receipts_total", "carrier" => carrier.to_string(), "state" => format!("{state:?}").to_ascii_lowercase())
                    .increment(1);
            }
            Event::Settled {
                value,
                state,
                error,
            } => {
                stats.reports.fetch_add(1, Ordering::Relaxed);
                out.reports.push(DeliveryReport {
                    reference: value.reference,
                    verification_id: value.verification_id,
                    send: value.send,
                    state: report_state(state),
                    error,
                });
            }
            Event::Held(message_id) => out.strays.push(message_id),
            Event::Unmatched(receipt) => {
                stats.receipts_unmatched.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("otpd_smpp_receipts_unmatched_total", "carrier" => carrier.to_string()).increment(1);
                tracing::warn!(carrier = %carrier, message_id = %receipt.message_id, state = ?receipt.state, "delivery receipt matched no submitted message");
            }
            Event::Lapsed(sent) => {
                stats.receipts_missing.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("otpd_smpp_receipts_missing_total", "carrier" => carrier.to_string()).increment(1);
                tracing::debug!(carrier = %carrier, reference = %sent.reference, verification = %sent.verification_id, "no final receipt came for a message before it lapsed");
                out.reports.push(DeliveryReport {
                    reference: sent.reference,
                    verification_id: sent.verification_id,
                    send: sent.send,
                    state: ReportState::Unconfirmed,
                    error: Some(format!("{carrier}: no final receipt came")),
                });
            }
        }
    }
    out
}

fn report_state(state: MessageState) -> ReportState {
    match state {
        MessageState::Delivered => ReportState::Delivered,
        MessageState::Expired | MessageState::Deleted => ReportState::Expired,
        MessageState::Rejected => ReportState::Rejected,
        _ => ReportState::Undeliverable,
    }
}

/// What the receipt router works with.
#[derive(Clone)]
struct Routing {
    carrier: String,
    router: Arc<Mutex<Router>>,
    reports: mpsc::Sender<DeliveryReport>,
    stats: Arc<CarrierStats>,
    grace: Duration,
    directory: Option<Arc<dyn MessageDirectory>>,
}

/// When a receipt that matches nothing here is looked up in the directory, counted
/// from its arrival: first soon (a submit of this node would have matched it by
/// then), then again in case the node that sent it had not noted it yet.
const LOOKUPS: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(5),
];

async fn route_receipts(routing: Routing, mut receipts: mpsc::Receiver<ReceiptEvent>) {
    let Routing {
        carrier,
        router,
        reports,
        stats,
        grace,
        directory,
    } = routing.clone();
    let strays = directory.as_ref().map(|_| {
        let (tx, rx) = mpsc::channel(MAX_STRAYS);
        tokio::spawn(look_up_strays(routing.clone(), rx));
        tx
    });
    let mut sweep =
        tokio::time::interval(other_base_after(grace).max(Duration::from_millis(8)) / 4);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let events = tokio::select! {
            event = receipts.recv() => {
                let Some(event) = event else { break };
                match event {
                    Ok(receipt) => {
                        tracing::debug!(carrier = %carrier, message_id = %receipt.message_id, state = ?receipt.state, "delivery receipt");
                        router.lock().receipt(receipt, Instant::now())
                    }
                    Err(e) => {
                        stats.receipts_unreadable.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(carrier = %carrier, error = %e, "unreadable delivery receipt");
                        continue;
                    }
                }
            }
            _ = sweep.tick() => router.lock().tick(Instant::now()),
        };
        let accounted = account(&carrier, &stats, events);
        for report in accounted.reports {
            let _ = reports.send(report).await;
        }
        if let Some(strays) = &strays {
            for message_id in accounted.strays {
                // A full queue of look-ups: this one is given up (the receipt
                // stays held, and is counted unmatched if nothing claims it).
                let _ = strays.try_send(message_id);
            }
        }
    }
}

/// Receipts that matched nothing here, waiting for a directory look-up.
const MAX_STRAYS: usize = 65_536;

/// Receipts looked up in one round trip at most.
const LOOKUP_BATCH: usize = 512;

/// Find in the shared directory the messages of receipts that matched nothing here,
/// and await their parts here as if this node had submitted them. Strays are
/// looked up in batches (one round trip each, [`MessageDirectory::find_many`]) at
/// the times of [`LOOKUPS`] from their arrival, while they are still held.
async fn look_up_strays(routing: Routing, mut strays: mpsc::Receiver<String>) {
    let Some(directory) = routing.directory.clone() else {
        return;
    };
    // (due, arrival order) → (attempt, receipt id, arrival)
    let mut due: std::collections::BTreeMap<(Instant, u64), (usize, String, Instant)> =
        std::collections::BTreeMap::new();
    let mut arrivals = 0u64;
    loop {
        let next = due.keys().next().map(|(at, _)| *at);
        tokio::select! {
            stray = strays.recv() => {
                let Some(message_id) = stray else { return };
                let now = Instant::now();
                if due.len() < MAX_STRAYS {
                    due.insert((now + LOOKUPS[0], arrivals), (0, message_id, now));
                    arrivals += 1;
                }
            }
            () = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now();
                let mut batch = Vec::new();
                while batch.len() < LOOKUP_BATCH
                    && let Some(entry) = due.first_entry()
                    && entry.key().0 <= now
                {
                    let (attempt, message_id, arrived) = entry.remove();
                    // Matched meanwhile: by a submit of this node, or another look-up.
                    if routing.router.lock().is_held(&message_id) {
                        batch.push((attempt, message_id, arrived));
                    }
                }
                // A batch reads other bases as soon as its oldest attempt may.
                let other_base = batch
                    .iter()
                    .any(|(attempt, _, _)| LOOKUPS[*attempt] >= other_base_after(routing.grace));
                let ids: Vec<String> = batch.iter().map(|(_, id, _)| id.clone()).collect();
                let found = match directory.find_many(&routing.carrier, &ids, other_base).await {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::warn!(carrier = %routing.carrier, error = %e, "cannot look receipts' messages up");
                        vec![None; ids.len()]
                    }
                };
                for ((attempt, message_id, arrived), noted) in batch.into_iter().zip(found) {
                    match noted {
                        Some(noted) => found_in_directory(&routing, &message_id, noted).await,
                        None => {
                            let next = attempt + 1;
                            if next < LOOKUPS.len() && LOOKUPS[next] < routing.grace {
                                tracing::debug!(carrier = %routing.carrier, %message_id, "receipt's message not in the directory yet");
                                due.insert((arrived + LOOKUPS[next], arrivals), (next, message_id, arrived));
                                arrivals += 1;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A stray receipt's message, found in the directory: awaited here from now on.
async fn found_in_directory(routing: &Routing, message_id: &str, noted: Noted) {
    let events = {
        let mut r = routing.router.lock();
        if !r.is_held(message_id) || noted.ids.iter().any(|id| r.awaits(id)) {
            return;
        }
        tracing::debug!(carrier = %routing.carrier, %message_id, verification = %noted.verification_id, "receipt's message found in the directory");
        let now = Instant::now();
        let sent = Sent {
            reference: format!("{}:{}", routing.carrier, noted.ids[0]),
            verification_id: noted.verification_id.clone(),
            send: noted.send,
        };
        r.submitted(&noted.ids, sent, now + NOTE_MARGIN, now)
    };
    for report in account(&routing.carrier, &routing.stats, events).reports {
        let _ = routing.reports.send(report).await;
    }
}

/// Now, in milliseconds since the Unix epoch: the clock codes' expiries are read on.
fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// From now until `at_ms` (milliseconds since the Unix epoch); zero once past.
fn until(at_ms: i64) -> Duration {
    Duration::from_millis(at_ms.saturating_sub(unix_millis()).max(0) as u64)
}

fn channel_error(carrier: &str, e: SubmitError) -> ChannelError {
    match e {
        SubmitError::Refused(status) if status.is_destination_error() => ChannelError::Rejected {
            reason: format!("{carrier}: {status}"),
        },
        SubmitError::Refused(status) if status.class() == StatusClass::Permanent => {
            ChannelError::Refused {
                reason: format!("{carrier}: {status}"),
            }
        }
        other => ChannelError::Temporary {
            reason: format!("{carrier}: {other}"),
            retry_after: None,
        },
    }
}

#[async_trait]
impl Channel for SmppCarrier {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn receipt_wait(&self) -> Option<Duration> {
        (self.config.registered_delivery & 0x03 != 0).then_some(self.config.receipt_wait)
    }

    async fn submit(&self, message: &Message) -> Result<SubmitReceipt, ChannelError> {
        self.submit_gated(message, &Open).await
    }

    async fn submit_gated(
        &self,
        message: &Message,
        gate: &dyn SendGate,
    ) -> Result<SubmitReceipt, ChannelError> {
        let started = Instant::now();
        let waited = |what: &str| ChannelError::Temporary {
            reason: format!(
                "{}: no {what} within {:?}",
                self.config.name, self.config.submit_timeout
            ),
            retry_after: None,
        };
        let _slot = tokio::time::timeout(self.config.submit_timeout, self.window.acquire())
            .await
            .map_err(|_| waited("window slot"))?
            .map_err(|_| ChannelError::Closed)?;
        if self.pick_bind().is_none() {
            return Err(ChannelError::Temporary {
                reason: format!("{}: no live bind", self.config.name),
                retry_after: None,
            });
        }
        gate.pass().await?;
        let left = self.config.submit_timeout.saturating_sub(started.elapsed());
        let reference_byte = self.next_reference.fetch_add(1, Ordering::Relaxed);
        let encoded =
            encoding::encode_with(message.text.expose(), reference_byte, self.config.encoding);
        let destination = Address::international(&message.to);
        let options = SubmitOptions {
            data_coding: encoded.data_coding,
            registered_delivery: self.config.registered_delivery,
            esm_class: encoded.esm_class(),
            validity_period: validity::validity_period(
                self.config.validity,
                message.expires_at_ms,
                unix_millis(),
            )
            .and_then(|v| ValidityPeriod::new(&v)),
        };
        let mut ids = Vec::with_capacity(encoded.parts.len());
        for part in &encoded.parts {
            let submit =
                pdu::submit_sm(&self.config.source, &destination, part, options).map_err(|e| {
                    ChannelError::Rejected {
                        reason: format!("{}: {e}", self.config.name),
                    }
                })?;
            let bind = self.pick_bind().ok_or_else(|| ChannelError::Temporary {
                reason: format!("{}: no live bind", self.config.name),
                retry_after: None,
            })?;
            let answer = tokio::select! {
                answer = tokio::time::timeout(left, bind.submit(submit)) => answer,
                () = lost_for_good(bind) => {
                    return Err(ChannelError::Temporary {
                        reason: format!(
                            "{}: the bind lost its link and was not bound again within {REBIND_GRACE:?}",
                            self.config.name
                        ),
                        retry_after: None,
                    });
                }
            };
            let id = answer
                .map_err(|_| waited("answer"))?
                .map_err(|e| channel_error(&self.config.name, e))?;
            ids.push(id);
        }
        let reference = format!("{}:{}", self.config.name, ids[0]);
        if self.config.registered_delivery & 0x03 != 0 {
            self.register(&ids, message, &reference);
            if let Some(directory) = &self.directory {
                let noted = Noted {
                    verification_id: message.verification_id.clone(),
                    send: message.send,
                    ids: ids.iter().map(|id| id_keys(id).swap_remove(0)).collect(),
                };
                let keep = until(message.expires_at_ms) + NOTE_MARGIN;
                if let Err(e) = directory.note(&self.config.name, noted, keep).await {
                    // Sent all the same; only a receipt reaching another node is lost.
                    tracing::warn!(carrier = %self.config.name, error = %e, "could not note a submitted message");
                }
            }
        }
        Ok(SubmitReceipt { reference })
    }

    fn healthy(&self) -> bool {
        self.is_healthy()
    }

    fn take_reports(&self) -> Option<mpsc::Receiver<DeliveryReport>> {
        self.reports_rx.lock().take()
    }

    async fn shutdown(&self) {
        for (_, bind) in &self.binds {
            bind.shutdown().await;
        }
    }
}
