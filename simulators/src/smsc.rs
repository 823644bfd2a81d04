//! An SMSC simulator: a real SMPP 3.4 server on loopback, for otpd's tests and load
//! tests. It accepts binds for configured accounts, answers submits after a
//! configurable latency, injects faults (throttling, transient and permanent errors,
//! dropped connections, silence) from a script or at random rates, and sends delivery
//! receipts after a delay with a configurable outcome mix. What it received can be
//! inspected afterwards (up to `keep` messages) or watched as it arrives (a [`Tap`]),
//! and it can be made to hang — read everything, answer nothing — as a carrier's
//! SMSC does when it stops answering without closing its connections.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use rusmpp::pdus::{BindReceiverResp, BindTransceiverResp, BindTransmitterResp, SubmitSmResp};
use rusmpp::tlvs::MessageDeliveryRequestTlvValue;
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::COctetString;
use rusmpp::values::{ErrorCodeNetworkType, NetworkErrorCode};
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Framed;

use crate::delay_line::DelayLine;

use otpd_adapters::smpp::pdu::{self, Address, MAX_PDU_LENGTH};
use otpd_adapters::smpp::receipt::MessageState;

/// Credentials the simulator accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub system_id: String,
    pub password: String,
}

/// How the simulator writes message ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdFormat {
    Decimal,
    /// Upper-case hex, zero-padded to 8 digits.
    Hex,
}

impl IdFormat {
    fn write(self, n: u64) -> String {
        match self {
            IdFormat::Decimal => n.to_string(),
            IdFormat::Hex => format!("{n:08X}"),
        }
    }
}

/// What happens to one submit_sm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Accept it.
    None,
    /// Answer with this command_status instead of accepting.
    Status(u32),
    /// Close the connection without answering.
    Drop,
    /// Never answer (the client's response timer must fire).
    Silence,
}

/// Delivery receipts.
#[derive(Debug, Clone)]
pub struct ReceiptPolicy {
    /// Delay after the submit_sm_resp.
    pub delay: Duration,
    /// Outcomes with weights; drawn for each receipted message.
    pub outcomes: Vec<(MessageState, u32)>,
    /// Base of the id in the receipt (a real SMSC may differ from its submit_sm_resp).
    pub id_format: IdFormat,
    /// Whether to add receipted_message_id / message_state / network_error_code TLVs.
    pub tlvs: bool,
}

impl Default for ReceiptPolicy {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(10),
            outcomes: vec![(MessageState::Delivered, 1)],
            id_format: IdFormat::Decimal,
            tlvs: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SmscConfig {
    /// system_id in bind responses.
    pub system_id: String,
    /// Accepted credentials; empty accepts any.
    pub accounts: Vec<Account>,
    /// submit_sm per second per bind before answering ESME_RTHROTTLED.
    pub tps_per_bind: Option<u32>,
    /// Response latency, drawn uniformly between the two.
    pub latency: (Duration, Duration),
    pub message_ids: IdFormat,
    pub receipts: ReceiptPolicy,
    /// Faults for the first submits, in order (then `random_faults` apply).
    pub script: Vec<Fault>,
    /// Faults at random rates (per million submits), e.g. `(Fault::Status(0x58), 10_000)`.
    pub random_faults: Vec<(Fault, u32)>,
    /// Seed of the simulator's random draws: runs are repeatable.
    pub seed: u64,
    /// Accepted messages kept for [`Smsc::received`]; the newest beyond it are not
    /// kept (a load test keeps none and watches them through `tap`).
    pub keep: usize,
    /// Called with every accepted message as it is accepted.
    pub tap: Option<Tap>,
}

/// A watcher of accepted messages. It runs on the connection's task: it must be
/// quick (hand the message on, never block).
#[derive(Clone)]
pub struct Tap(pub Arc<dyn Fn(&Received) + Send + Sync>);

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tap")
    }
}

impl Default for SmscConfig {
    fn default() -> Self {
        Self {
            system_id: "otpd-sim".into(),
            accounts: Vec::new(),
            tps_per_bind: None,
            latency: (Duration::ZERO, Duration::ZERO),
            message_ids: IdFormat::Decimal,
            receipts: ReceiptPolicy::default(),
            script: Vec::new(),
            random_faults: Vec::new(),
            seed: 0x0DDB_1A5E_5BAD_5EED,
            keep: usize::MAX,
            tap: None,
        }
    }
}

/// A message the simulator accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub system_id: String,
    pub message_id: String,
    pub sequence_number: u32,
    pub source: Address,
    pub destination: Address,
    pub esm_class: u8,
    pub data_coding: u8,
    pub registered_delivery: u8,
    /// validity_period as sent (empty: the SMSC's default).
    pub validity_period: String,
    /// short_message, or message_payload when short_message is empty.
    pub body: Vec<u8>,
    /// When the submit_sm was read: throughput is measured here, at the SMSC.
    pub at: std::time::Instant,
}

impl Received {
    /// The text of this part, after its user data header (when `esm_class` says
    /// there is one): UCS-2 with `data_coding` 8, else the septets as characters
    /// (digits and Latin letters are the same in GSM 03.38), for tests to read.
    pub fn text(&self) -> String {
        let body = match (self.esm_class & 0x40 != 0, self.body.first()) {
            (true, Some(&udhl)) => self.body.get(1 + udhl as usize..).unwrap_or_default(),
            _ => &self.body[..],
        };
        if self.data_coding == 0x08 {
            let units: Vec<u16> = body
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        } else {
            String::from_utf8_lossy(body).into_owned()
        }
    }
}

/// Counters, for assertions and load reports.
#[derive(Debug, Default)]
pub struct Stats {
    pub binds: AtomicU64,
    pub bind_failures: AtomicU64,
    pub submits: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub dropped_connections: AtomicU64,
    /// Receipts made: sent, or held until a receiving bind of the account binds.
    pub receipts_sent: AtomicU64,
    /// Receipts sent again because the link they went on was lost unacknowledged.
    pub receipts_redelivered: AtomicU64,
    pub enquire_links: AtomicU64,
    pub unbinds: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindKind {
    Transmitter,
    Receiver,
    Transceiver,
}

struct Receiver {
    conn: u64,
    tx: mpsc::Sender<Outgoing>,
    sequence: Arc<AtomicU32>,
}

/// What the writer task sends. Nearly every value is a `Command`; boxing it to shrink
/// the rare `Close` would cost an allocation per PDU.
#[allow(clippy::large_enum_variant)]
enum Outgoing {
    Command(Command),
    Close,
}

struct Shared {
    config: SmscConfig,
    stats: Stats,
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Fault>>,
    rng: Mutex<u64>,
    next_id: AtomicU64,
    next_conn: AtomicU64,
    /// Receiving binds by system_id, for routing receipts.
    receivers: Mutex<HashMap<String, Vec<Receiver>>>,
    /// Receipts sent and not acknowledged yet, by (connection, sequence number): a
    /// real SMSC keeps a receipt until its deliver_sm_resp, and sends it again on
    /// another bind of the account when the link it went on is lost.
    unacked: Mutex<HashMap<(u64, u32), Receipt>>,
    /// Receipts of accounts with no receiving bind now, sent when one binds.
    backlog: Mutex<HashMap<String, VecDeque<Receipt>>>,
    /// Read every PDU, answer none.
    hung: AtomicBool,
    /// Answers after their latency and receipts after their delay.
    later: DelayLine<Later>,
}

/// A receipt to deliver to an account's receiving binds.
#[derive(Clone)]
struct Receipt {
    system_id: String,
    deliver: Pdu,
}

/// Receipts held for one account, or unacknowledged, at most: beyond, the oldest
/// backlog entry is dropped (a simulator must stay bounded too).
const MAX_HELD_RECEIPTS: usize = 1 << 20;

/// What the SMSC does later.
enum Later {
    Send(mpsc::Sender<Outgoing>, Outgoing),
    Receipt(Received, u64),
}

/// Queue `out` on a connection's writer without waiting; a full queue is waited on
/// by a task of its own, so that the delay line never stalls behind one connection.
/// Returns false only when the connection is closed (nothing will go out).
fn queue(tx: &mpsc::Sender<Outgoing>, out: Outgoing) -> bool {
    match tx.try_send(out) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Err(mpsc::error::TrySendError::Full(out)) => {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(out).await;
            });
            true
        }
    }
}

impl Shared {
    /// xorshift64*: deterministic from the seed, good enough for fault draws.
    fn random(&self) -> u64 {
        let mut s = self.rng.lock();
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fault(&self) -> Fault {
        if let Some(f) = self.script.lock().pop_front() {
            return f;
        }
        for (fault, per_million) in &self.config.random_faults {
            if self.random() % 1_000_000 < u64::from(*per_million) {
                return *fault;
            }
        }
        Fault::None
    }

    fn latency(&self) -> Duration {
        let (min, max) = self.config.latency;
        if max <= min {
            return min;
        }
        let span = (max - min).as_nanos() as u64;
        min + Duration::from_nanos(self.random() % span)
    }

    fn outcome(&self) -> MessageState {
        let total: u32 = self.config.receipts.outcomes.iter().map(|(_, w)| *w).sum();
        if total == 0 {
            return MessageState::Delivered;
        }
        let mut pick = (self.random() % u64::from(total)) as u32;
        for (state, weight) in &self.config.receipts.outcomes {
            if pick < *weight {
                return *state;
            }
            pick -= weight;
        }
        MessageState::Delivered
    }

    fn authorised(&self, system_id: &str, password: &str) -> Result<(), CommandStatus> {
        if self.config.accounts.is_empty() {
            return Ok(());
        }
        match self
            .config
            .accounts
            .iter()
            .find(|a| a.system_id == system_id)
        {
            None => Err(CommandStatus::EsmeRinvsysid),
            Some(a) if a.password != password => Err(CommandStatus::EsmeRinvpaswd),
            Some(_) => Ok(()),
        }
    }
}

/// A running simulator.
pub struct Smsc {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl Smsc {
    /// Listen on `127.0.0.1:0` and serve.
    pub async fn start(config: SmscConfig) -> std::io::Result<Smsc> {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await?, config).await
    }

    pub async fn start_on(listener: TcpListener, config: SmscConfig) -> std::io::Result<Smsc> {
        let addr = listener.local_addr()?;
        let seed = config.seed.max(1);
        let (stop, stop_rx) = watch::channel(false);
        let line_stop = stop_rx.clone();
        let shared = Arc::new_cyclic(|weak: &std::sync::Weak<Shared>| {
            let weak = weak.clone();
            Shared {
                later: DelayLine::start(line_stop, move |later| {
                    let Some(shared) = weak.upgrade() else { return };
                    match later {
                        Later::Send(tx, out) => {
                            queue(&tx, out);
                        }
                        Later::Receipt(message, n) => send_receipt(&shared, message, n),
                    }
                }),
                script: Mutex::new(config.script.iter().copied().collect()),
                config,
                stats: Stats::default(),
                received: Mutex::new(Vec::new()),
                rng: Mutex::new(seed),
                next_id: AtomicU64::new(1),
                next_conn: AtomicU64::new(1),
                receivers: Mutex::new(HashMap::new()),
                unacked: Mutex::new(HashMap::new()),
                backlog: Mutex::new(HashMap::new()),
                hung: AtomicBool::new(false),
            }
        });
        tokio::spawn(accept(listener, shared.clone(), stop_rx));
        Ok(Smsc { addr, shared, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Every accepted message so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().clone()
    }

    /// Append faults to the script (applied to the next submits, in order).
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.script.lock().extend(faults);
    }

    /// Hang (`true`): keep every connection open and read what comes, but answer
    /// nothing — binds, submits, enquire_links — and send no receipts, as an SMSC
    /// that stops responding does. `false` resumes answering what comes next.
    pub fn set_hung(&self, hung: bool) {
        self.shared.hung.store(hung, Ordering::Relaxed);
    }

    /// Close every connection and stop listening.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Smsc {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, shared.clone(), stop.clone()));
            }
            _ = stop.changed() => return,
        }
    }
}

/// One client connection: a reader loop here, a writer task for everything sent.
async fn serve(stream: TcpStream, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let framed = Framed::new(stream, CommandCodec::new().with_max_length(MAX_PDU_LENGTH));
    let (sink, mut frames) = framed.split();
    let (tx, rx) = mpsc::channel::<Outgoing>(4096);
    let writer = spawn_writer(sink, rx);
    let sequence = Arc::new(AtomicU32::new(1));
    let mut bound: Option<(BindKind, String)> = None;
    let mut window_start = Instant::now();
    let mut in_window = 0u32;
    loop {
        let frame = tokio::select! {
            frame = frames.next() => frame,
            _ = stop.changed() => break,
        };
        let command = match frame {
            Some(Ok(c)) => c,
            // A malformed PDU: tell the client, as SMSCs do, and drop the link.
            Some(Err(_)) => {
                let nack = Command::new(CommandStatus::EsmeRinvcmdlen, 0, Pdu::GenericNack);
                let _ = tx.send(Outgoing::Command(nack)).await;
                break;
            }
            None => break,
        };
        if shared.hung.load(Ordering::Relaxed) {
            continue;
        }
        let seq = command.sequence_number();
        let reply =
            |status: CommandStatus, pdu: Pdu| Outgoing::Command(Command::new(status, seq, pdu));
        match command.pdu().cloned() {
            Some(
                pdu @ (Pdu::BindTransmitter(_) | Pdu::BindReceiver(_) | Pdu::BindTransceiver(_)),
            ) => {
                let link = Link {
                    conn,
                    tx: &tx,
                    sequence: &sequence,
                    seq,
                };
                if let Some(now_bound) = on_bind(&shared, link, &pdu, bound.is_some()).await {
                    bound = Some(now_bound);
                }
            }
            Some(Pdu::SubmitSm(submit)) => {
                // Only a bound transmitter or transceiver may submit.
                let system_id = match &bound {
                    Some((kind, system_id)) if *kind != BindKind::Receiver => system_id.clone(),
                    _ => {
                        let refusal = reply(
                            CommandStatus::EsmeRinvbndsts,
                            SubmitSmResp::builder().build().into(),
                        );
                        let _ = tx.send(refusal).await;
                        continue;
                    }
                };
                shared.stats.submits.fetch_add(1, Ordering::Relaxed);
                // Per-bind TPS: a one-second window.
                let mut fault = shared.fault();
                if let Some(tps) = shared.config.tps_per_bind {
                    if window_start.elapsed() >= Duration::from_secs(1) {
                        window_start = Instant::now();
                        in_window = 0;
                    }
                    in_window += 1;
                    if in_window > tps && fault == Fault::None {
                        fault = Fault::Status(CommandStatus::EsmeRthrottled.into());
                    }
                }
                match fault {
                    Fault::Drop => {
                        shared
                            .stats
                            .dropped_connections
                            .fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Fault::Silence => continue,
                    Fault::Status(code) => {
                        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                        let resp = SubmitSmResp::builder().build();
                        let out = reply(CommandStatus::from(code), resp.into());
                        respond_later(&shared, &tx, out);
                    }
                    Fault::None => take_submit(&shared, &tx, &system_id, seq, &submit),
                }
            }
            Some(Pdu::EnquireLink) => {
                shared.stats.enquire_links.fetch_add(1, Ordering::Relaxed);
                let _ = tx
                    .send(reply(CommandStatus::EsmeRok, Pdu::EnquireLinkResp))
                    .await;
            }
            Some(Pdu::Unbind) => {
                shared.stats.unbinds.fetch_add(1, Ordering::Relaxed);
                let _ = tx
                    .send(reply(CommandStatus::EsmeRok, Pdu::UnbindResp))
                    .await;
                break;
            }
            // The receipt sent with this sequence number is acknowledged.
            Some(Pdu::DeliverSmResp(_)) => {
                shared.unacked.lock().remove(&(conn, seq));
            }
            // Answers to what we sent (enquire_link_resp): nothing to do.
            Some(Pdu::EnquireLinkResp) | Some(Pdu::GenericNack) => {}
            _ => {
                let _ = tx
                    .send(reply(CommandStatus::EsmeRinvcmdid, Pdu::GenericNack))
                    .await;
            }
        }
    }
    shared
        .receivers
        .lock()
        .values_mut()
        .for_each(|list| list.retain(|r| r.conn != conn));
    // Receipts this link never acknowledged go again, on another bind.
    let orphaned: Vec<Receipt> = {
        let mut unacked = shared.unacked.lock();
        let keys: Vec<(u64, u32)> = unacked
            .keys()
            .filter(|(c, _)| *c == conn)
            .copied()
            .collect();
        keys.iter().filter_map(|k| unacked.remove(k)).collect()
    };
    for receipt in orphaned {
        shared
            .stats
            .receipts_redelivered
            .fetch_add(1, Ordering::Relaxed);
        route_receipt(&shared, receipt);
    }
    let _ = tx.send(Outgoing::Close).await;
    let _ = writer.await;
}

/// The connection a PDU came on, and the sequence number to answer it with.
struct Link<'a> {
    conn: u64,
    tx: &'a mpsc::Sender<Outgoing>,
    sequence: &'a Arc<AtomicU32>,
    seq: u32,
}

impl Link<'_> {
    fn reply(&self, status: CommandStatus, pdu: Pdu) -> Outgoing {
        Outgoing::Command(Command::new(status, self.seq, pdu))
    }
}

/// A bind (of any kind): checked against the accounts, answered, and — for a
/// receiver or transceiver — the link noted as one receipts may go to. Returns what
/// the link is now bound as, if the bind was accepted (`already`: it was bound).
async fn on_bind(
    shared: &Arc<Shared>,
    link: Link<'_>,
    pdu: &Pdu,
    already: bool,
) -> Option<(BindKind, String)> {
    let (kind, system_id, password) = match &pdu {
        Pdu::BindTransmitter(b) => (
            BindKind::Transmitter,
            b.system_id.as_str().to_string(),
            b.password.as_str().to_string(),
        ),
        Pdu::BindReceiver(b) => (
            BindKind::Receiver,
            b.system_id.as_str().to_string(),
            b.password.as_str().to_string(),
        ),
        Pdu::BindTransceiver(b) => (
            BindKind::Transceiver,
            b.system_id.as_str().to_string(),
            b.password.as_str().to_string(),
        ),
        _ => unreachable!("matched above"),
    };
    let status = if already {
        Err(CommandStatus::EsmeRalybnd)
    } else {
        shared.authorised(&system_id, &password)
    };
    let sid = smsc_id(&shared.config.system_id);
    let resp: Pdu = match kind {
        BindKind::Transmitter => BindTransmitterResp::builder().system_id(sid).build().into(),
        BindKind::Receiver => BindReceiverResp::builder().system_id(sid).build().into(),
        BindKind::Transceiver => BindTransceiverResp::builder().system_id(sid).build().into(),
    };
    match status {
        Ok(()) => {
            shared.stats.binds.fetch_add(1, Ordering::Relaxed);
            if kind != BindKind::Transmitter {
                shared
                    .receivers
                    .lock()
                    .entry(system_id.clone())
                    .or_default()
                    .push(Receiver {
                        conn: link.conn,
                        tx: link.tx.clone(),
                        sequence: link.sequence.clone(),
                    });
            }
            let _ = link.tx.send(link.reply(CommandStatus::EsmeRok, resp)).await;
            if kind != BindKind::Transmitter {
                // Receipts that waited for a receiving bind of this account.
                let waiting = shared.backlog.lock().remove(&system_id).unwrap_or_default();
                for receipt in waiting {
                    route_receipt(shared, receipt);
                }
            }
            Some((kind, system_id))
        }
        Err(status) => {
            shared.stats.bind_failures.fetch_add(1, Ordering::Relaxed);
            let _ = link.tx.send(link.reply(status, resp)).await;
            None
        }
    }
}

/// Writes what the connection's tasks queue. Everything queued by the time the
/// writer wakes goes out in one write: a busy SMSC answers a window of submits (and
/// sends receipts) in a few TCP segments, not one each.
fn spawn_writer(
    mut sink: futures_util::stream::SplitSink<Framed<TcpStream, CommandCodec>, Command>,
    mut rx: mpsc::Receiver<Outgoing>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        'write: while let Some(mut out) = rx.recv().await {
            loop {
                match out {
                    Outgoing::Command(c) => {
                        if sink.feed(c).await.is_err() {
                            break 'write;
                        }
                    }
                    Outgoing::Close => break 'write,
                }
                match rx.try_recv() {
                    Ok(next) => out = next,
                    Err(_) => break,
                }
            }
            if sink.flush().await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    })
}

/// A submit taken: recorded (and tapped), answered with its message id after the
/// configured latency, and its receipt scheduled when one was asked for.
fn take_submit(
    shared: &Arc<Shared>,
    tx: &mpsc::Sender<Outgoing>,
    system_id: &str,
    seq: u32,
    submit: &rusmpp::pdus::SubmitSm,
) {
    let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let message_id = shared.config.message_ids.write(n);
    let body = if submit.short_message().as_ref().is_empty() {
        submit
            .tlvs()
            .iter()
            .find_map(|t| match t.value() {
                Some(rusmpp::tlvs::TlvValue::MessagePayload(p)) => Some(p.value.as_ref().to_vec()),
                _ => None,
            })
            .unwrap_or_default()
    } else {
        submit.short_message().as_ref().to_vec()
    };
    let received = Received {
        at: std::time::Instant::now(),
        system_id: system_id.to_string(),
        message_id: message_id.clone(),
        sequence_number: seq,
        source: Address {
            ton: submit.source_addr_ton.into(),
            npi: submit.source_addr_npi.into(),
            addr: submit.source_addr.as_str().to_string(),
        },
        destination: Address {
            ton: submit.dest_addr_ton.into(),
            npi: submit.dest_addr_npi.into(),
            addr: submit.destination_addr.as_str().to_string(),
        },
        esm_class: submit.esm_class.into(),
        data_coding: submit.data_coding.into(),
        registered_delivery: submit.registered_delivery.into(),
        validity_period: submit.validity_period.as_str().to_string(),
        body,
    };
    if let Some(tap) = &shared.config.tap {
        (tap.0)(&received);
    }
    {
        let mut kept = shared.received.lock();
        if kept.len() < shared.config.keep {
            kept.push(received.clone());
        }
    }
    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
    let resp = SubmitSmResp::builder()
        .message_id(pdu::c_string("message_id", &message_id).expect("ids are short"))
        .build();
    let ok = Outgoing::Command(Command::new(CommandStatus::EsmeRok, seq, resp));
    respond_later(shared, tx, ok);
    if received.registered_delivery & 0x03 != 0 {
        schedule_receipt(shared, received, n);
    }
}

fn smsc_id(id: &str) -> COctetString<1, 16> {
    let cut: String = id.chars().take(15).collect();
    pdu::c_string("system_id", &cut).expect("15 characters fit")
}

/// Send `out` after the configured latency, without holding up the reader.
fn respond_later(shared: &Arc<Shared>, tx: &mpsc::Sender<Outgoing>, out: Outgoing) {
    let delay = shared.latency();
    if delay.is_zero() {
        queue(tx, out);
        return;
    }
    shared.later.at(
        tokio::time::Instant::now() + delay,
        Later::Send(tx.clone(), out),
    );
}

fn schedule_receipt(shared: &Shared, message: Received, n: u64) {
    let due = tokio::time::Instant::now() + shared.config.receipts.delay;
    shared.later.at(due, Later::Receipt(message, n));
}

/// A receipt for `message`, now that the handset's delay is over.
fn send_receipt(shared: &Shared, message: Received, n: u64) {
    {
        if shared.hung.load(Ordering::Relaxed) {
            return;
        }
        let state = shared.outcome();
        let id = shared.config.receipts.id_format.write(n);
        let stat = match state {
            MessageState::Delivered => "DELIVRD",
            MessageState::Expired => "EXPIRED",
            MessageState::Deleted => "DELETED",
            MessageState::Undeliverable => "UNDELIV",
            MessageState::Accepted => "ACCEPTD",
            MessageState::Rejected => "REJECTD",
            MessageState::Enroute => "ENROUTE",
            MessageState::Scheduled => "SCHEDLD",
            MessageState::Skipped => "SKIPPED",
            MessageState::Unknown => "UNKNOWN",
        };
        let err = if state == MessageState::Delivered {
            0
        } else {
            34
        };
        let text = format!(
            "id:{id} sub:001 dlvrd:{:03} submit date:2611231200 done date:2611231200 stat:{stat} err:{err:03} text:",
            u8::from(state == MessageState::Delivered)
        );
        let tlvs = if shared.config.receipts.tlvs {
            vec![
                MessageDeliveryRequestTlvValue::ReceiptedMessageId(
                    pdu::c_string("message_id", &id).expect("ids are short"),
                ),
                MessageDeliveryRequestTlvValue::MessageState(rusmpp::values::MessageState::from(
                    tlv_state(state),
                )),
                MessageDeliveryRequestTlvValue::NetworkErrorCode(NetworkErrorCode::new(
                    ErrorCodeNetworkType::Gsm,
                    err,
                )),
            ]
        } else {
            Vec::new()
        };
        // The receipt goes from the handset to the sender: swap the addresses.
        let Ok(deliver) =
            pdu::receipt_deliver_sm(&message.destination, &message.source, &text, tlvs)
        else {
            return;
        };
        shared.stats.receipts_sent.fetch_add(1, Ordering::Relaxed);
        route_receipt(
            shared,
            Receipt {
                system_id: message.system_id,
                deliver: deliver.into(),
            },
        );
    }
}

/// Send a receipt on the account's first receiving bind and hold it until that
/// link acknowledges it; with no receiving bind, hold it until one binds.
fn route_receipt(shared: &Shared, receipt: Receipt) {
    let target = {
        let receivers = shared.receivers.lock();
        receivers
            .get(&receipt.system_id)
            .and_then(|list| list.first())
            .map(|r| {
                (
                    r.conn,
                    r.tx.clone(),
                    r.sequence.fetch_add(1, Ordering::Relaxed),
                )
            })
    };
    if let Some((conn, tx, seq)) = target {
        {
            let mut unacked = shared.unacked.lock();
            if unacked.len() < MAX_HELD_RECEIPTS {
                unacked.insert((conn, seq), receipt.clone());
            }
        }
        let command = Command::new(CommandStatus::EsmeRok, seq, receipt.deliver.clone());
        if queue(&tx, Outgoing::Command(command)) {
            return;
        }
        // The link is closed: the receipt waits for another.
        shared.unacked.lock().remove(&(conn, seq));
    }
    let mut backlog = shared.backlog.lock();
    let held = backlog.entry(receipt.system_id.clone()).or_default();
    if held.len() >= MAX_HELD_RECEIPTS {
        held.pop_front();
    }
    held.push_back(receipt);
}

fn tlv_state(state: MessageState) -> u8 {
    match state {
        MessageState::Scheduled => 0,
        MessageState::Enroute => 1,
        MessageState::Delivered => 2,
        MessageState::Expired => 3,
        MessageState::Deleted => 4,
        MessageState::Undeliverable => 5,
        MessageState::Accepted => 6,
        MessageState::Unknown => 7,
        MessageState::Rejected => 8,
        MessageState::Skipped => 9,
    }
}
