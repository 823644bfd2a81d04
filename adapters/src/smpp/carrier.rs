//! A carrier: a pool of binds to one SMSC behind otpd's [`Channel`] trait.
//!
//! Submits go round-robin to the binds that are bound; a carrier with no live bind
//! answers a temporary error at once, so the dispatcher can fail over. A message
//! longer than one SMS goes out as several parts with a concatenation UDH.
//!
//! Receipts from every bind meet in one router, which matches them to submits
//! ([`MessageIdIndex`]), waits until every part of a message has a final state, and
//! emits one [`DeliveryReport`]. A receipt can overtake the submit_sm_resp it is
//! about (the SMSC sends both, the resp may be read later); such a receipt is held
//! for `unmatched_grace` and matched as soon as the submit is registered. A receipt
//! matches its id as written at once; read in the other base (SMSCs that answer the
//! submit in hex and write the receipt in decimal, or the reverse) only after it
//! has waited [`OTHER_BASE_AFTER`]: before that, the id read in the other base may
//! be another message's, pending while the receipt's own submit is not registered
//! yet. With a shared [`MessageDirectory`] (several nodes bound to
//! one account), each submit is noted there too, and a receipt that matches nothing
//! here is looked up there: the SMSC may have sent it to this node for a message
//! another node submitted. Receipts that still match nothing are counted and logged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::directory::{MessageDirectory, Noted};
use super::encoding;
use super::pdu::{self, Address, SubmitOptions};
use super::receipt::{MessageIdIndex, MessageState, Receipt, id_keys};
use super::session::{Bind, BindConfig, BindMode, BindState, ReceiptEvent, SubmitError};
use super::status::StatusClass;
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
}

/// Counters of a carrier, beside its binds' own.
#[derive(Debug, Default)]
pub struct CarrierStats {
    pub receipts_matched: AtomicU64,
    pub receipts_unmatched: AtomicU64,
    pub receipts_unreadable: AtomicU64,
    pub reports: AtomicU64,
}

/// One message awaiting the receipts of its parts.
struct Pending {
    reference: String,
    verification_id: String,
    send: u8,
    parts_left: usize,
    worst: Option<(MessageState, Option<String>)>,
}

#[derive(Default)]
struct Router {
    /// The carrier's name, for metric labels.
    carrier: String,
    /// SMSC message id → index into `pending`.
    ids: MessageIdIndex<usize>,
    pending: std::collections::HashMap<usize, Pending>,
    next: usize,
    /// Receipts that matched nothing yet, with when they arrived.
    unmatched: VecDeque<(Receipt, Instant)>,
}

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

/// How long a receipt waits for its id as written before it may match an id read in
/// the other base.
pub const OTHER_BASE_AFTER: Duration = Duration::from_secs(1);

/// [`OTHER_BASE_AFTER`], or half the grace when that is shorter.
fn other_base_after(grace: Duration) -> Duration {
    OTHER_BASE_AFTER.min(grace / 2)
}

/// How long past a message's validity its directory note is kept: an SMSC sends
/// the final receipt at the latest when the validity ends, a little after on a slow
/// link.
const NOTE_MARGIN: Duration = Duration::from_secs(15 * 60);

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
                (mode, Bind::start(bind, receipts_tx.clone()))
            })
            .collect();
        let (reports_tx, reports_rx) = mpsc::channel(4096);
        let window = config.binds.max(1) * config.bind.window.max(1);
        let router = Arc::new(Mutex::new(Router {
            carrier: config.name.clone(),
            ..Router::default()
        }));
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
        let reports = self.router.lock().register(
            ids,
            reference,
            &message.verification_id,
            message.send,
            &self.stats,
        );
        for report in reports {
            let _ = self.reports_tx.try_send(report);
        }
    }
}

impl Router {
    /// Await the receipts of a message's parts; returns the reports of receipts that
    /// were waiting for it.
    fn register(
        &mut self,
        ids: &[String],
        reference: &str,
        verification_id: &str,
        send: u8,
        stats: &CarrierStats,
    ) -> Vec<DeliveryReport> {
        let key = self.next;
        self.next += 1;
        self.pending.insert(
            key,
            Pending {
                reference: reference.to_string(),
                verification_id: verification_id.to_string(),
                send,
                parts_left: ids.len(),
                worst: None,
            },
        );
        for id in ids {
            self.ids.insert(id, key);
        }
        // Receipts that overtook these submits can land now.
        let mut reports = Vec::new();
        let waiting: Vec<(Receipt, Instant)> = self.unmatched.drain(..).collect();
        for (receipt, at) in waiting {
            match apply(self, &receipt, stats, false) {
                Applied::Unmatched => self.unmatched.push_back((receipt, at)),
                Applied::Report(report) => reports.push(report),
                Applied::Partial => {}
            }
        }
        reports
    }

    /// Whether a receipt for `message_id` waits unmatched.
    fn is_waiting(&self, message_id: &str) -> bool {
        self.unmatched
            .iter()
            .any(|(r, _)| r.message_id == message_id)
    }
}

enum Applied {
    Unmatched,
    Partial,
    Report(DeliveryReport),
}

/// Apply one receipt to the router.
/// Apply one receipt to the router; its id read in the other base too when
/// `other_base`.
fn apply(
    router: &mut Router,
    receipt: &Receipt,
    stats: &CarrierStats,
    other_base: bool,
) -> Applied {
    if !receipt.state.is_final() {
        // ENROUTE, ACCEPTD…: the outcome is still to come; nothing to record.
        let known = if other_base {
            router.ids.get(&receipt.message_id).is_some()
        } else {
            router.ids.get_exact(&receipt.message_id).is_some()
        };
        return if known {
            Applied::Partial
        } else {
            Applied::Unmatched
        };
    }
    let key = if other_base {
        router.ids.take(&receipt.message_id)
    } else {
        router.ids.take_exact(&receipt.message_id)
    };
    let Some(key) = key else {
        return Applied::Unmatched;
    };
    stats.receipts_matched.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("otpd_smpp_receipts_total", "carrier" => router.carrier.clone(), "state" => format!("{:?}", receipt.state).to_ascii_lowercase())
        .increment(1);
    let pending = router
        .pending
        .get_mut(&key)
        .expect("indexed message is pending");
    pending.parts_left = pending.parts_left.saturating_sub(1);
    // A message is delivered only if every part is; otherwise its first failure stands.
    let first_failure_seen = pending
        .worst
        .as_ref()
        .is_some_and(|(state, _)| *state != MessageState::Delivered);
    if !first_failure_seen {
        pending.worst = Some((receipt.state, receipt.error.clone()));
    }
    if pending.parts_left > 0 {
        return Applied::Partial;
    }
    let done = router.pending.remove(&key).expect("present");
    let (state, error) = done.worst.expect("at least one part");
    stats.reports.fetch_add(1, Ordering::Relaxed);
    Applied::Report(DeliveryReport {
        reference: done.reference,
        verification_id: done.verification_id,
        send: done.send,
        state: report_state(state),
        error,
    })
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
    let other_base_after = other_base_after(grace);
    let mut sweep = tokio::time::interval(other_base_after.max(Duration::from_millis(8)) / 4);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = receipts.recv() => {
                let Some(event) = event else { break };
                let receipt = match event {
                    Ok(r) => r,
                    Err(e) => {
                        stats.receipts_unreadable.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(carrier = %carrier, error = %e, "unreadable delivery receipt");
                        continue;
                    }
                };
                let (applied, stray) = {
                    let mut r = router.lock();
                    let applied = apply(&mut r, &receipt, &stats, false);
                    let stray = matches!(applied, Applied::Unmatched) && receipt.state.is_final();
                    if stray {
                        r.unmatched.push_back((receipt.clone(), Instant::now()));
                    }
                    (applied, stray)
                };
                if let Applied::Report(report) = applied {
                    let _ = reports.send(report).await;
                }
                tracing::debug!(carrier = %carrier, message_id = %receipt.message_id, state = ?receipt.state, stray, "delivery receipt");
                if stray && directory.is_some() {
                    tokio::spawn(look_up(routing.clone(), receipt.message_id));
                }
            }
            _ = sweep.tick() => {
                let (expired, reports_now) = {
                    let mut r = router.lock();
                    let now = Instant::now();
                    let mut gone = Vec::new();
                    while r.unmatched.front().is_some_and(|(_, at)| now.duration_since(*at) >= grace) {
                        gone.push(r.unmatched.pop_front().expect("front").0);
                    }
                    // Receipts that waited long enough for their own submit: their
                    // id may now be read in the other base.
                    let mut found = Vec::new();
                    let waiting: Vec<(Receipt, Instant)> = r.unmatched.drain(..).collect();
                    for (receipt, at) in waiting {
                        let applied = if now.duration_since(at) >= other_base_after {
                            apply(&mut r, &receipt, &stats, true)
                        } else {
                            Applied::Unmatched
                        };
                        match applied {
                            Applied::Unmatched => r.unmatched.push_back((receipt, at)),
                            Applied::Report(report) => found.push(report),
                            Applied::Partial => {}
                        }
                    }
                    (gone, found)
                };
                for report in reports_now {
                    let _ = reports.send(report).await;
                }
                for receipt in expired {
                    stats.receipts_unmatched.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("otpd_smpp_receipts_unmatched_total", "carrier" => carrier.clone()).increment(1);
                    tracing::warn!(carrier = %carrier, message_id = %receipt.message_id, state = ?receipt.state, "delivery receipt matched no submitted message");
                }
            }
        }
    }
}

/// Find the message of a receipt that waits unmatched in the shared directory, and
/// once found, await its parts here as if this node had submitted it.
async fn look_up(routing: Routing, message_id: String) {
    let Some(directory) = &routing.directory else {
        return;
    };
    let arrived = Instant::now();
    for at in LOOKUPS {
        if at >= routing.grace {
            break;
        }
        tokio::time::sleep_until(arrived + at).await;
        if !routing.router.lock().is_waiting(&message_id) {
            // Matched meanwhile: by a submit of this node, or by a lookup of another
            // part of the same message.
            return;
        }
        let other_base = at >= other_base_after(routing.grace);
        let noted = match directory
            .find(&routing.carrier, &message_id, other_base)
            .await
        {
            Ok(Some(noted)) => noted,
            Ok(None) => {
                tracing::debug!(carrier = %routing.carrier, %message_id, "receipt's message not in the directory yet");
                continue;
            }
            Err(e) => {
                tracing::warn!(carrier = %routing.carrier, error = %e, "cannot look a receipt's message up");
                continue;
            }
        };
        let reports = {
            let mut r = routing.router.lock();
            if !r.is_waiting(&message_id) {
                return;
            }
            tracing::debug!(carrier = %routing.carrier, %message_id, verification = %noted.verification_id, "receipt's message found in the directory");
            let reference = format!("{}:{}", routing.carrier, noted.ids[0]);
            r.register(
                &noted.ids,
                &reference,
                &noted.verification_id,
                noted.send,
                &routing.stats,
            )
        };
        for report in reports {
            let _ = routing.reports.send(report).await;
        }
        return;
    }
}

/// From now until `at_ms` (milliseconds since the Unix epoch); zero once past.
fn until(at_ms: i64) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Duration::from_millis(at_ms.saturating_sub(now).max(0) as u64)
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
