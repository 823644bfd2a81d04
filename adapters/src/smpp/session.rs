//! One carrier bind: an SMPP 3.4 ESME session that stays connected.
//!
//! A [`Bind`] is a handle; a task owns the connection. The task connects, binds as a
//! transceiver, and then keeps a *window* of submit_sm in flight, matched to their
//! responses by sequence number. It paces submits to the bind's TPS, answers the
//! SMSC's deliver_sm (forwarding delivery receipts) and enquire_link, and sends its
//! own enquire_link when the link is idle. Whatever goes wrong with the link — a
//! response that does not come within the response timeout, a closed socket, an
//! unbind from the SMSC — it reconnects with exponential backoff and jitter, and
//! sends again every submit that never got a response (at least once: the SMSC may
//! have taken it, so this can duplicate an SMS; the count is kept).
//!
//! How each `command_status` is handled follows [`StatusClass`]: throttling puts
//! the message back at the head of the queue and pauses the bind; transient errors
//! are retried a few times; permanent ones fail the message with the status name.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rusmpp::pdus::{
    BindReceiver, BindTransceiver, BindTransmitter, DataSmResp, DeliverSmResp, SubmitSm,
};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::values::InterfaceVersion;
use rusmpp::{Command, CommandStatus as Status, Pdu};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::codec::Framed;

use super::pdu::{self, MAX_PDU_LENGTH};
use super::receipt::{Receipt, ReceiptError};
use super::status::{CommandStatus, StatusClass};
use super::window::{Due, Window, WindowConfig};

/// Everything one bind needs.
#[derive(Debug, Clone)]
pub struct BindConfig {
    /// `host:port` of the SMSC.
    pub address: String,
    pub system_id: String,
    pub password: crate::Secret,
    pub system_type: String,
    pub address_range: String,
    /// Submits awaiting their response at most.
    pub window: usize,
    /// Submits per second at most; `None` for no cap.
    pub tps: Option<u32>,
    /// An enquire_link is sent when nothing was received for this long.
    pub enquire_link_interval: Duration,
    /// A request unanswered for this long declares the bind dead.
    pub response_timeout: Duration,
    pub connect_timeout: Duration,
    /// Reconnect backoff: from `min`, doubling, up to `max`, with ±50% jitter.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// First pause after ESME_RTHROTTLED / ESME_RMSGQFUL; doubles while it repeats.
    pub throttle_pause: Duration,
    /// Submits of one message on transient errors, the first included.
    pub max_attempts: u32,
    /// Transceiver, or one half of a transmitter + receiver pair.
    pub mode: BindMode,
    /// The carrier this bind belongs to, and its number there: metric labels.
    pub carrier: String,
    pub index: usize,
}

/// What a bind does on its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindMode {
    /// Submits and receipts on one link.
    #[default]
    Transceiver,
    /// Submits only.
    Transmitter,
    /// Receipts only: it takes no submits.
    Receiver,
}

impl BindMode {
    pub fn can_submit(self) -> bool {
        self != BindMode::Receiver
    }

    fn label(self, index: usize) -> String {
        match self {
            BindMode::Transceiver => index.to_string(),
            BindMode::Transmitter => format!("{index}-tx"),
            BindMode::Receiver => format!("{index}-rx"),
        }
    }
}

impl Default for BindConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:2775".into(),
            system_id: String::new(),
            password: crate::Secret::default(),
            system_type: String::new(),
            address_range: String::new(),
            window: 64,
            tps: None,
            enquire_link_interval: Duration::from_secs(30),
            response_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(30),
            throttle_pause: Duration::from_millis(100),
            max_attempts: 3,
            mode: BindMode::Transceiver,
            carrier: "smpp".into(),
            index: 0,
        }
    }
}

/// Where a bind stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindState {
    Connecting,
    Bound,
    /// Shut down: it takes no more submits.
    Closed,
}

/// Why a submit did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The SMSC refused the message with this status (permanent, or transient after
    /// the last attempt).
    #[error("the SMSC refused the message: {0}")]
    Refused(CommandStatus),
    /// The bind was shut down before the message could be sent.
    #[error("the bind is closed")]
    Closed,
}

impl SubmitError {
    pub fn is_retriable(&self) -> bool {
        match self {
            SubmitError::Refused(status) => status.class() != StatusClass::Permanent,
            SubmitError::Closed => true,
        }
    }
}

/// A receipt as it arrived, or why it could not be read.
pub type ReceiptEvent = Result<Receipt, ReceiptError>;

/// Counters of one bind.
#[derive(Debug, Default)]
pub struct BindStats {
    pub connects: AtomicU64,
    pub submits: AtomicU64,
    pub accepted: AtomicU64,
    pub throttled: AtomicU64,
    pub refused: AtomicU64,
    /// Submits sent again after a reconnect because their response never came.
    pub resent: AtomicU64,
    pub receipts: AtomicU64,
    pub in_flight: AtomicU64,
    /// The most submits ever in flight at once (never above the window).
    pub max_in_flight: AtomicU64,
}

/// Prometheus series of one bind, registered once (the hot path bumps atomics).
struct BindMetrics {
    up: metrics::Gauge,
    submits: metrics::Counter,
    accepted: metrics::Counter,
    throttled: metrics::Counter,
    resent: metrics::Counter,
    reconnects: metrics::Counter,
    window: metrics::Gauge,
    latency: metrics::Histogram,
    carrier: String,
    bind: String,
}

impl BindMetrics {
    fn new(carrier: &str, bind: String) -> Self {
        let (c, b) = (carrier.to_string(), bind);
        let labels = [("carrier", c.clone()), ("bind", b.clone())];
        Self {
            up: metrics::gauge!("otpd_smpp_bind_up", &labels),
            submits: metrics::counter!("otpd_smpp_submits_total", &labels),
            accepted: metrics::counter!(
                "otpd_smpp_responses_total",
                &[
                    ("carrier", c.clone()),
                    ("bind", b.clone()),
                    ("status", "ESME_ROK".to_string())
                ]
            ),
            throttled: metrics::counter!("otpd_smpp_throttled_total", &labels),
            resent: metrics::counter!("otpd_smpp_resent_total", &labels),
            reconnects: metrics::counter!("otpd_smpp_reconnects_total", &labels),
            window: metrics::gauge!("otpd_smpp_window_in_use", &labels),
            latency: metrics::histogram!("otpd_smpp_submit_duration_seconds", &labels),
            carrier: c,
            bind: b,
        }
    }

    /// A response other than ESME_ROK (rare: registered on use).
    fn response(&self, status: CommandStatus) {
        metrics::counter!(
            "otpd_smpp_responses_total",
            &[
                ("carrier", self.carrier.clone()),
                ("bind", self.bind.clone()),
                ("status", status.to_string())
            ]
        )
        .increment(1);
    }
}

struct Request {
    submit: SubmitSm,
    reply: oneshot::Sender<Result<String, SubmitError>>,
    attempts: u32,
}

/// How a bind reaches its SMSC: a TCP connection in production; tests hand the
/// session one end of an in-memory pipe and play the SMSC on the other.
pub trait Connect: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn connect(&self, address: &str) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

/// Connects over TCP, without Nagle's delay (submits are small and latency counts).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

impl Connect for Tcp {
    type Io = TcpStream;

    async fn connect(&self, address: &str) -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect(address).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// Connects over TCP, then TLS: SMPP over TLS, as carriers that offer it run it
/// (on a port of its own, the whole session inside TLS). The SMSC's certificate is
/// checked against the carrier's CA file, or the system's roots, for `server_name`.
#[derive(Clone)]
pub struct TlsTcp {
    connector: tokio_rustls::TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for TlsTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTcp")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Why an SMPP-over-TLS connector cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsTcpError {
    #[error(transparent)]
    Roots(#[from] crate::tls::TlsSetupError),
    #[error("{0:?} is not a host name or an address")]
    ServerName(String),
}

impl TlsTcp {
    /// Trusting `ca_pem` (or the system's roots), for the SMSC named `server_name`
    /// (a host name or an IP address, as its certificate names it).
    pub fn new(ca_pem: Option<&[u8]>, server_name: &str) -> Result<TlsTcp, TlsTcpError> {
        let config = crate::tls::client_config(ca_pem)?;
        let server_name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|_| TlsTcpError::ServerName(server_name.to_string()))?;
        Ok(TlsTcp {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

impl Connect for TlsTcp {
    type Io = tokio_rustls::client::TlsStream<TcpStream>;

    async fn connect(&self, address: &str) -> std::io::Result<Self::Io> {
        let tcp = Tcp.connect(address).await?;
        self.connector.connect(self.server_name.clone(), tcp).await
    }
}

/// A handle on one bind. Cloning shares the bind.
#[derive(Clone)]
pub struct Bind {
    requests: mpsc::Sender<Request>,
    state: watch::Receiver<BindState>,
    stop: Arc<watch::Sender<bool>>,
    stats: Arc<BindStats>,
    done: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Bind {
    /// Start the bind's task over TCP; receipts go to `receipts`.
    pub fn start(config: BindConfig, receipts: mpsc::Sender<ReceiptEvent>) -> Bind {
        Bind::start_with(config, receipts, Tcp)
    }

    /// Start the bind's task, reaching the SMSC through `connector`.
    pub fn start_with<C: Connect>(
        config: BindConfig,
        receipts: mpsc::Sender<ReceiptEvent>,
        connector: C,
    ) -> Bind {
        let (requests, rx) = mpsc::channel(config.window.max(1) * 4);
        let (state_tx, state) = watch::channel(BindState::Connecting);
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(BindStats::default());
        let metrics = BindMetrics::new(&config.carrier, config.mode.label(config.index));
        let task = tokio::spawn(
            Session {
                connector,
                metrics,
                config,
                receipts,
                state: state_tx,
                stats: stats.clone(),
                queue: VecDeque::new(),
                requests: rx,
                stop: stop_rx,
            }
            .run(),
        );
        Bind {
            requests,
            state,
            stop: Arc::new(stop),
            stats,
            done: Arc::new(tokio::sync::Mutex::new(Some(task))),
        }
    }

    /// Send one message; answers with the SMSC's message id.
    pub async fn submit(&self, submit: SubmitSm) -> Result<String, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request {
                submit,
                reply,
                attempts: 0,
            })
            .await
            .map_err(|_| SubmitError::Closed)?;
        answer.await.unwrap_or(Err(SubmitError::Closed))
    }

    pub fn state(&self) -> BindState {
        *self.state.borrow()
    }

    /// Wait until the bind is no longer in `state` (or has ended).
    pub async fn wait_leave(&self, state: BindState) {
        let mut rx = self.state.clone();
        let _ = rx.wait_for(|s| *s != state).await;
    }

    /// Wait until the bind is in `state` (or give up after `within`).
    pub async fn wait_for(&self, state: BindState, within: Duration) -> bool {
        let mut rx = self.state.clone();
        tokio::time::timeout(within, rx.wait_for(|s| *s == state))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn stats(&self) -> &BindStats {
        &self.stats
    }

    /// Stop taking submits, wait for the responses of those in flight (up to the
    /// response timeout), unbind, and close. Queued submits fail with `Closed`.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.done.lock().await.take() {
            let _ = task.await;
        }
    }
}

struct Session<C: Connect> {
    connector: C,
    config: BindConfig,
    metrics: BindMetrics,
    receipts: mpsc::Sender<ReceiptEvent>,
    state: watch::Sender<BindState>,
    stats: Arc<BindStats>,
    /// Taken from callers, not yet sent (or sent and to be sent again).
    queue: VecDeque<Request>,
    requests: mpsc::Receiver<Request>,
    stop: watch::Receiver<bool>,
}

/// How a connection ended.
enum Ended {
    /// Asked to stop, and done: do not reconnect.
    Stopped,
    /// The link failed; reconnect.
    Lost(String),
}

type Link<Io> = Framed<Io, CommandCodec>;
type Sink<Io> = SplitSink<Link<Io>, Command>;
type Frames<Io> = SplitStream<Link<Io>>;

/// One bound connection: its two halves, and whether PDUs were fed to the sink
/// and not yet flushed.
struct Wire<Io> {
    sink: Sink<Io>,
    dirty: bool,
}

impl<Io: AsyncRead + AsyncWrite + Unpin> Wire<Io> {
    /// Queue `command` for the next flush.
    async fn feed(&mut self, command: Command) -> Result<(), String> {
        self.dirty = true;
        self.sink
            .feed(command)
            .await
            .map_err(|e| format!("write failed: {e}"))
    }
}

impl<C: Connect> Session<C> {
    async fn run(mut self) {
        let mut backoff = self.config.reconnect_min;
        loop {
            if *self.stop.borrow() {
                break;
            }
            let _ = self.state.send(BindState::Connecting);
            match self.connect_and_bind().await {
                Ok(framed) => {
                    backoff = self.config.reconnect_min;
                    if self.stats.connects.fetch_add(1, Ordering::Relaxed) > 0 {
                        self.metrics.reconnects.increment(1);
                    }
                    self.metrics.up.set(1.0);
                    let _ = self.state.send(BindState::Bound);
                    match self.bound(framed).await {
                        Ended::Stopped => break,
                        Ended::Lost(why) => {
                            tracing::warn!(smsc = %self.config.address, system_id = %self.config.system_id, reason = %why, "bind lost; reconnecting");
                        }
                    }
                }
                Err(why) => {
                    tracing::warn!(smsc = %self.config.address, system_id = %self.config.system_id, reason = %why, "bind failed");
                }
            }
            self.metrics.up.set(0.0);
            let _ = self.state.send(BindState::Connecting);
            let wait = jitter(backoff);
            backoff = (backoff * 2).min(self.config.reconnect_max);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.changed() => {}
            }
        }
        self.metrics.up.set(0.0);
        let _ = self.state.send(BindState::Closed);
        self.requests.close();
        for request in self.queue.drain(..) {
            let _ = request.reply.send(Err(SubmitError::Closed));
        }
        while let Ok(request) = self.requests.try_recv() {
            let _ = request.reply.send(Err(SubmitError::Closed));
        }
    }

    async fn connect_and_bind(&mut self) -> Result<Link<C::Io>, String> {
        let stream = tokio::time::timeout(
            self.config.connect_timeout,
            self.connector.connect(&self.config.address),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect failed: {e}"))?;
        let mut framed = Framed::new(stream, CommandCodec::new().with_max_length(MAX_PDU_LENGTH));
        let too_long = |e: pdu::PduError| e.to_string();
        let (system_id, password, system_type, address_range) = (
            pdu::c_string("system_id", &self.config.system_id).map_err(too_long)?,
            pdu::c_string("password", self.config.password.expose()).map_err(too_long)?,
            pdu::c_string("system_type", &self.config.system_type).map_err(too_long)?,
            pdu::c_string("address_range", &self.config.address_range).map_err(too_long)?,
        );
        // The three binds have the same fields; only their command differs.
        macro_rules! bind_pdu {
            ($pdu:ident) => {
                Pdu::from(
                    $pdu::builder()
                        .system_id(system_id)
                        .password(password)
                        .system_type(system_type)
                        .interface_version(InterfaceVersion::Smpp3_4)
                        .address_range(address_range)
                        .build(),
                )
            };
        }
        let bind = match self.config.mode {
            BindMode::Transceiver => bind_pdu!(BindTransceiver),
            BindMode::Transmitter => bind_pdu!(BindTransmitter),
            BindMode::Receiver => bind_pdu!(BindReceiver),
        };
        framed
            .send(Command::new(Status::EsmeRok, 1, bind))
            .await
            .map_err(|e| format!("bind send failed: {e}"))?;
        let answer = tokio::time::timeout(self.config.response_timeout, framed.next())
            .await
            .map_err(|_| "no bind response".to_string())?
            .ok_or("closed during bind")?
            .map_err(|e| format!("bad bind response: {e}"))?;
        let answered = matches!(
            (self.config.mode, answer.pdu()),
            (BindMode::Transceiver, Some(Pdu::BindTransceiverResp(_)))
                | (BindMode::Transmitter, Some(Pdu::BindTransmitterResp(_)))
                | (BindMode::Receiver, Some(Pdu::BindReceiverResp(_)))
                | (_, Some(Pdu::GenericNack))
        );
        if !answered {
            return Err("unexpected answer to bind".into());
        }
        if answer.status() != Status::EsmeRok {
            return Err(format!(
                "bind refused: {}",
                CommandStatus(u32::from(answer.status()))
            ));
        }
        Ok(framed)
    }

    fn window_config(&self) -> WindowConfig {
        WindowConfig {
            window: self.config.window,
            tps: self.config.tps,
            response_timeout: self.config.response_timeout,
            enquire_link_interval: self.config.enquire_link_interval,
            throttle_pause: self.config.throttle_pause,
        }
    }

    /// Serve one bound connection until it ends.
    async fn bound(&mut self, link: Link<C::Io>) -> Ended {
        let (sink, mut frames) = link.split();
        let mut wire = Wire { sink, dirty: false };
        let mut w: Window<Request> = Window::new(self.window_config(), Instant::now());
        // A receiver takes no submits: they stay with the caller's queue (and the
        // carrier never gives it any).
        let mut stopping = !self.config.mode.can_submit();
        let receiving_only = stopping;

        let ended = loop {
            if !stopping && let Err(why) = self.fill(&mut w, &mut wire).await {
                break Ended::Lost(why);
            }
            self.publish(&w);
            if stopping && w.is_empty() && !receiving_only {
                break Ended::Stopped;
            }
            let can_take = !stopping && w.has_room();
            let wake = w.wake_at(Instant::now(), !self.queue.is_empty(), can_take);

            // Frames already here are read before anything is written, so that the
            // answers to a burst of them, and the submits queued meanwhile, leave
            // together: the write happens when nothing more is ready to read.
            tokio::select! {
                biased;
                frame = frames.next() => {
                    let command = match frame {
                        Some(Ok(c)) => c,
                        Some(Err(e)) => break Ended::Lost(format!("bad PDU from the SMSC: {e}")),
                        None => break Ended::Lost("the SMSC closed the connection".into()),
                    };
                    w.heard(Instant::now());
                    if let Some(ended) = self.on_command(command, &mut w, &mut wire).await {
                        break ended;
                    }
                }
                flushed = wire.sink.flush(), if wire.dirty => {
                    wire.dirty = false;
                    if let Err(e) = flushed {
                        break Ended::Lost(format!("write failed: {e}"));
                    }
                }
                request = self.requests.recv(), if can_take && self.queue.is_empty() => {
                    match request {
                        Some(r) => self.queue.push_back(r),
                        None => stopping = true,
                    }
                }
                _ = self.stop.changed(), if !stopping || receiving_only => {
                    if receiving_only {
                        if *self.stop.borrow() {
                            break Ended::Stopped;
                        }
                    } else {
                        stopping = true;
                    }
                }
                _ = sleep_until(wake) => match w.due(Instant::now()) {
                    Due::Overdue => break Ended::Lost("a response did not come in time".into()),
                    Due::Keepalive(s) => {
                        let probe = Command::new(Status::EsmeRok, s, Pdu::EnquireLink);
                        if let Err(e) = wire.sink.send(probe).await {
                            break Ended::Lost(format!("write failed: {e}"));
                        }
                    }
                    Due::Nothing => {}
                },
            }
        };
        self.end(ended, w, wire, frames).await
    }

    /// Fill the window from the queue, paced by the TPS cap.
    async fn fill(
        &mut self,
        w: &mut Window<Request>,
        wire: &mut Wire<C::Io>,
    ) -> Result<(), String> {
        let now = Instant::now();
        while w.may_send(now) {
            let Some(request) = self
                .queue
                .pop_front()
                .or_else(|| self.requests.try_recv().ok())
            else {
                break;
            };
            if request.reply.is_closed() {
                continue; // the caller gave up
            }
            let s = w.next_seq();
            let submit = Command::new(Status::EsmeRok, s, request.submit.clone());
            if let Err(why) = wire.feed(submit).await {
                self.queue.push_front(request);
                return Err(why);
            }
            self.stats.submits.fetch_add(1, Ordering::Relaxed);
            self.metrics.submits.increment(1);
            w.sent(s, request, Instant::now());
        }
        Ok(())
    }

    /// The window's use, for the stats and the gauge.
    fn publish(&self, w: &Window<Request>) {
        let n = w.len() as u64;
        self.stats.in_flight.store(n, Ordering::Relaxed);
        self.stats.max_in_flight.fetch_max(n, Ordering::Relaxed);
        self.metrics.window.set(n as f64);
    }

    /// One PDU from the SMSC; `Some` when it ends the connection.
    async fn on_command(
        &mut self,
        command: Command,
        w: &mut Window<Request>,
        wire: &mut Wire<C::Io>,
    ) -> Option<Ended> {
        let s = command.sequence_number();
        let lost = |why: String| Some(Ended::Lost(why));
        match command.pdu() {
            Some(Pdu::SubmitSmResp(resp)) => {
                let (request, sent_at) = w.answer(s)?;
                let status = CommandStatus(u32::from(command.status()));
                let id = resp.message_id().as_str().to_string();
                return self.on_response(request, sent_at, status, id, w);
            }
            Some(Pdu::DeliverSm(deliver)) => {
                let ack = Command::new(Status::EsmeRok, s, DeliverSmResp::default());
                if let Err(why) = wire.feed(ack).await {
                    return lost(why);
                }
                if let Some(receipt) = pdu::receipt_of(deliver) {
                    self.stats.receipts.fetch_add(1, Ordering::Relaxed);
                    let _ = self.receipts.send(receipt).await;
                }
            }
            Some(Pdu::DataSm(data)) => {
                let ack = Command::new(Status::EsmeRok, s, DataSmResp::builder().build());
                if let Err(why) = wire.feed(ack).await {
                    return lost(why);
                }
                if let Some(receipt) = pdu::receipt_of_data_sm(data) {
                    self.stats.receipts.fetch_add(1, Ordering::Relaxed);
                    let _ = self.receipts.send(receipt).await;
                }
            }
            // Takes no response; otpd does not hold messages for later.
            Some(Pdu::AlertNotification(_)) => {}
            Some(Pdu::EnquireLink) => {
                let answer = Command::new(Status::EsmeRok, s, Pdu::EnquireLinkResp);
                if let Err(why) = wire.feed(answer).await {
                    return lost(why);
                }
            }
            Some(Pdu::EnquireLinkResp) => w.enquire_answered(),
            Some(Pdu::Unbind) => {
                let _ = wire
                    .sink
                    .send(Command::new(Status::EsmeRok, s, Pdu::UnbindResp))
                    .await;
                return lost("the SMSC unbound".into());
            }
            Some(Pdu::UnbindResp) => return Some(Ended::Stopped),
            Some(Pdu::GenericNack) => {
                // A nack for one of our submits: the SMSC could not read it.
                if let Some((request, _)) = w.answer(s) {
                    let status = CommandStatus(u32::from(command.status()));
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    let _ = request.reply.send(Err(SubmitError::Refused(status)));
                }
            }
            _ => {
                let nack = Command::new(Status::EsmeRinvcmdid, s, Pdu::GenericNack);
                if let Err(why) = wire.feed(nack).await {
                    return lost(why);
                }
            }
        }
        None
    }

    /// A submit_sm_resp: the message is taken, paused for, retried, or refused.
    fn on_response(
        &mut self,
        mut request: Request,
        sent_at: Instant,
        status: CommandStatus,
        message_id: String,
        w: &mut Window<Request>,
    ) -> Option<Ended> {
        self.metrics.latency.record(sent_at.elapsed().as_secs_f64());
        if status.class() == StatusClass::Ok {
            self.metrics.accepted.increment(1);
        } else {
            self.metrics.response(status);
        }
        match status.class() {
            StatusClass::Ok => {
                w.accepted();
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = request.reply.send(Ok(message_id));
            }
            StatusClass::SlowDown => {
                // Not a failure: the same message goes first once the pause is over.
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                self.metrics.throttled.increment(1);
                w.throttled(Instant::now());
                self.queue.push_front(request);
            }
            StatusClass::Transient if request.attempts + 1 < self.config.max_attempts => {
                request.attempts += 1;
                self.queue.push_back(request);
            }
            StatusClass::Session => {
                self.queue.push_front(request);
                return Some(Ended::Lost(format!("the SMSC answered {status}")));
            }
            StatusClass::Transient | StatusClass::Permanent => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                let _ = request.reply.send(Err(SubmitError::Refused(status)));
            }
        }
        None
    }

    /// After the loop: unbind politely when stopping with nothing in flight; put
    /// what was in flight back at the head of the queue when the link was lost.
    async fn end(
        &mut self,
        ended: Ended,
        mut w: Window<Request>,
        mut wire: Wire<C::Io>,
        mut frames: Frames<C::Io>,
    ) -> Ended {
        match ended {
            Ended::Stopped => {
                let s = w.next_seq();
                let unbind = Command::new(Status::EsmeRok, s, Pdu::Unbind);
                if wire.sink.send(unbind).await.is_ok() {
                    let _ = tokio::time::timeout(self.config.response_timeout, async {
                        while let Some(Ok(c)) = frames.next().await {
                            if matches!(c.pdu(), Some(Pdu::UnbindResp)) {
                                break;
                            }
                        }
                    })
                    .await;
                }
                let _ = wire.sink.close().await;
                Ended::Stopped
            }
            Ended::Lost(why) => {
                let lost = w.drain_lost();
                self.metrics.resent.increment(lost.len() as u64);
                requeue_lost(&mut self.queue, lost, &self.stats);
                Ended::Lost(why)
            }
        }
    }
}

/// After losing the link: what was in flight (`lost`, in sending order) goes back
/// to the head of the queue, to be sent again on the next connection.
fn requeue_lost(queue: &mut VecDeque<Request>, lost: Vec<Request>, stats: &BindStats) {
    stats.resent.fetch_add(lost.len() as u64, Ordering::Relaxed);
    for request in lost.into_iter().rev() {
        queue.push_front(request);
    }
    stats.in_flight.store(0, Ordering::Relaxed);
}

/// ±50% jitter, so that many binds lost together do not reconnect together.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.5 + f64::from(nanos % 1000) / 1000.0;
    d.mul_f64(factor)
}
