//! Shared pieces of otpd's benchmarks: an engine wired in process, and a channel that
//! accepts everything and keeps nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use otpd::delivery::router::{Plan, Router};
use otpd::delivery::{Channels, DeliveryQueue, Pushers, RetryPolicy, Workers};
use otpd::domain::clock::Clock;
use otpd::domain::locale::Locale;
use otpd::domain::verification::Policy;
use otpd::engine::{Engine, EngineParts, Issue, IssueRequest, Issued, Options, Purpose, Refused};
use otpd::metrics::Metrics;
use otpd::numbers::e164::E164;
use otpd::numbers::reader::{NumberInfo, NumberParser, NumberRules, Region};
use otpd::policy::admission::Rules;
use otpd::policy::clients::{Client, Clients};
use otpd::secrets::code::{CodeKeys, CodeLength};
use otpd::store::StoredResponse;
use otpd::store::{MemoryStore, Stores};
use otpd_adapters::{Channel, ChannelError, Message, SubmitReceipt};
use tokio::sync::watch;

/// Accepts every message at once, with a reference as long as an SMSC message id.
#[derive(Default)]
pub struct Discard {
    n: AtomicU64,
}

#[async_trait]
impl Channel for Discard {
    fn name(&self) -> &str {
        "discard"
    }

    async fn submit(&self, _message: &Message) -> Result<SubmitReceipt, ChannelError> {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        Ok(SubmitReceipt {
            reference: format!("{n:016x}"),
        })
    }
}

impl Discard {
    /// Messages accepted so far.
    pub fn sent(&self) -> u64 {
        self.n.load(Ordering::Relaxed)
    }
}

pub fn discard_channels() -> Channels {
    discard_channels_with(Arc::new(Discard::default()))
}

/// The channels of [`discard_channels`], SMS going to `channel`.
pub fn discard_channels_with(channel: Arc<Discard>) -> Channels {
    let channel: Arc<dyn Channel> = channel;
    Channels {
        sms: vec![channel],
        push: Pushers::all(Arc::new(otpd_adapters::push::fake::FakePusher::new(
            "discard",
        ))),
    }
}

/// Routes and templates sending everything to the channels' first carrier. Every
/// code is sent however little validity it has left: the benches use short ones.
pub fn router(channels: &Channels) -> Router {
    let mut config = otpd::config::Config::default();
    config.routing.min_validity_left = Duration::ZERO;
    config.routing.default = vec![otpd::config::RouteCarrier::Name(
        channels.sms[0].name().to_string(),
    )];
    let plan = Plan::build(&config).expect("default plan");
    Router::new(&channels.sms, plan).expect("the carriers run")
}

pub const SECRET: &[u8] = b"benchmark secret, long enough for otpd: 0123456789";

pub fn login(ttl: Duration) -> Purpose {
    Purpose {
        name: otpd::domain::name::Name::new("login"),
        policy: Policy {
            ttl,
            code_length: CodeLength::new(6).expect("6 digits"),
            max_attempts: 5,
            max_sends: 5,
            resend_cooldown: Duration::from_secs(30),
            escalate_after: Duration::from_secs(60),
        },
        provider_ack: false,
        app_ttl: Duration::from_secs(300),
        require_contrast: false,
    }
}

/// An engine with the memory store and delivery workers sending to [`Discard`],
/// spawned on the current runtime. Returns the engine, the keys (to recover codes
/// from sealed copies, as the delivery worker does), the store, and the handle that
/// stops the workers.
pub fn engine(
    clock: Arc<dyn Clock>,
    ttl: Duration,
    retention: Duration,
    queue_capacity: usize,
) -> (Arc<Engine>, CodeKeys, Arc<MemoryStore>, watch::Sender<bool>) {
    engine_with(clock, ttl, retention, queue_capacity, limits_off())
}

/// No rate limit at all: what the engine's own work costs, without the limiter's.
pub fn limits_off() -> Rules {
    use otpd::config::Rate;
    let mut config = otpd::Config::default();
    let l = &mut config.limits;
    for rate in [
        &mut l.destination,
        &mut l.subject,
        &mut l.ip,
        &mut l.ip_prefix,
        &mut l.check_ip,
        &mut l.check_subject,
        &mut l.public_ip,
        &mut l.answer_ip,
    ] {
        *rate = Rate::Off;
    }
    Rules::new(&config)
}

/// [`engine`], deciding requests by `rules`.
pub fn engine_with(
    clock: Arc<dyn Clock>,
    ttl: Duration,
    retention: Duration,
    queue_capacity: usize,
    rules: Rules,
) -> (Arc<Engine>, CodeKeys, Arc<MemoryStore>, watch::Sender<bool>) {
    let keys = CodeKeys::derive(SECRET);
    let store = Arc::new(MemoryStore::new(64, retention));
    let (queue, jobs) = DeliveryQueue::bounded(queue_capacity, Duration::from_secs(600));
    let metrics = Arc::new(Metrics::new());
    let channels = discard_channels();
    let router = Arc::new(router(&channels));
    let engine = Arc::new(Engine::new(EngineParts {
        stores: Stores::of(store.clone()),
        keys: keys.clone(),
        queue,
        clock: clock.clone(),
        purposes: vec![login(ttl)],
        metrics: metrics.clone(),
        rules,
        router: router.clone(),
        numbers: Arc::new(NumberParser::new(
            NumberRules::new("ES", true).expect("ES"),
            100_000,
        )),
        options: Options::default(),
    }));
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(
        Workers {
            router,
            seed: std::hash::RandomState::new(),
            channels,
            stores: Stores::of(store.clone()),
            clock,
            metrics,
            concurrency: 256,
            retry: RetryPolicy {
                max_attempts: 1,
                backoff: Duration::from_millis(1),
            },
            name: Arc::from("bench"),
            events: Arc::new(otpd::events::Fanout::default()),
            display_names: Arc::new(otpd::policy::clients::DisplayNames::new(&[], "otpd")),
            in_flight: Default::default(),
            keys: keys.clone(),
        }
        .run(jobs, stop_rx),
    );
    (engine, keys, store, stop)
}

/// The i-th distinct Spanish mobile number.
pub fn number(i: u64) -> E164 {
    E164::from_digits_unchecked(34_600_000_000 + (i % 100_000_000))
}

pub fn request(i: u64) -> IssueRequest {
    IssueRequest {
        to: Some(NumberInfo {
            e164: number(i),
            country: Region::parse("ES"),
            kind: Default::default(),
        }),
        locale: Some(Locale::Es),
        ..IssueRequest::default()
    }
}

/// The i-th request with an identity number of its own (a DNI with its right
/// check letter), as Cl@ve asks: the store indexes it by subject too.
pub fn request_with_subject(i: u64) -> IssueRequest {
    const LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    let n = i % 100_000_000;
    IssueRequest {
        subject: Some(format!("{n:08}{}", LETTERS[(n % 23) as usize] as char).into()),
        ..request(i)
    }
}

/// The caller of an open API (no clients configured): everybody.
pub fn everybody() -> Arc<Client> {
    Clients::new(&[]).authenticate(None).expect("an open API")
}

/// Issue the i-th request as `caller`, as the API does without an idempotency key.
pub async fn issue(engine: &Engine, caller: &Client, i: u64) -> Result<Issued, Refused> {
    issue_request(engine, caller, request(i)).await
}

/// Issue `request` as `caller`, as the API does without an idempotency key.
pub async fn issue_request(
    engine: &Engine,
    caller: &Client,
    request: IssueRequest,
) -> Result<Issued, Refused> {
    let render = |_: &Issued| StoredResponse {
        status: 201,
        body: Default::default(),
    };
    match engine.issue(caller, request, None, render).await? {
        Issue::Done { issued, .. } => Ok(issued),
        Issue::Replayed(_) => unreachable!("no idempotency key"),
    }
}

/// Resident set size of this process, in bytes (Linux).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The submit_sm the SMPP benchmarks send: a one-part GSM 7-bit code message, no
/// receipt asked for (so the figure is submits alone).
pub fn bench_submit_sm() -> rusmpp::pdus::SubmitSm {
    use otpd_adapters::smpp::pdu::{self, Address, SubmitOptions};
    pdu::submit_sm(
        &Address {
            ton: 5,
            npi: 0,
            addr: "otpd".into(),
        },
        &Address::international("+34600123456"),
        b"123456 es tu codigo de verificacion. Caduca en 10 min.",
        SubmitOptions {
            data_coding: 0,
            registered_delivery: 0,
            esm_class: 0,
            validity_period: None,
        },
    )
    .expect("a valid submit_sm")
}

/// Open a transceiver bind to `address` with `window`, and wait until it is bound.
pub async fn bench_bind(
    address: String,
    window: usize,
) -> anyhow::Result<otpd_adapters::smpp::session::Bind> {
    use otpd_adapters::smpp::session::{Bind, BindConfig, BindState};
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    // No receipts are asked for; keep the receiver so that the channel stays open.
    std::mem::forget(rx);
    let bind = Bind::start(
        BindConfig {
            address: address.clone(),
            system_id: "otpd".into(),
            password: "otpd".into(),
            window,
            ..BindConfig::default()
        },
        tx,
    );
    anyhow::ensure!(
        bind.wait_for(BindState::Bound, Duration::from_secs(10))
            .await,
        "could not bind to {address}"
    );
    Ok(bind)
}
