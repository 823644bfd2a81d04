//! Wiring and lifecycle: build the engine from a validated [`Config`], serve the API,
//! run the delivery workers and the sweeper, and shut down in order.
//!
//! Shutdown is one signal. The listener stops accepting and in-flight requests finish;
//! then the delivery queue closes and every job accepted before is sent (within
//! `server.shutdown_grace`); then channels flush. Nothing accepted is dropped
//! silently: a job still queued when the deadline passes is logged.

pub mod accept;
pub(crate) mod coalesce;
pub(crate) mod connection;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;

use otpd_adapters::Channel;
use otpd_adapters::apns::{ApnsConfig, ApnsPusher};
use otpd_adapters::fcm::{FcmConfig, FcmPusher, ServiceAccount};
use otpd_adapters::file::{FileChannel, FilePusher};
use otpd_adapters::hms::{HmsConfig, HmsPusher};
use otpd_adapters::push::http::HttpOptions;
use otpd_adapters::push::{Notification, Outcome, Pusher};
use otpd_adapters::smpp::carrier::{CarrierConfig, SmppCarrier};
use otpd_adapters::smpp::directory::MessageDirectory;
use otpd_adapters::smpp::encoding::{Policy as EncodingPolicy, Preferred};
use otpd_adapters::smpp::pdu::Address;
use otpd_adapters::smpp::session::BindConfig;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::config::{BindModeConfig, Config, DataCodingPolicy, SmppCarrierConfig, StoreKind};
use crate::delivery::router::{Plan, Router};
use crate::delivery::{Channels, DeliveryQueue, Pushers, RetryPolicy, Workers};
use crate::domain::clock::{Clock, SystemClock};
use crate::domain::verification::Policy;
use crate::engine::{Engine, EngineParts, Purpose, Settings};
use crate::metrics::{self, Metrics};
use crate::numbers::reader::{NumberParser, NumberRules};
use crate::policy::admission::{Admission, Rules};
use crate::secrets::code::{CodeKeys, CodeLength, OsRandom, RandomSource};
use crate::store::redis::Handoff;
use crate::store::redis::directory::RedisDirectory;
use crate::store::redis::queue::{JobReader, StreamConsumer};
use crate::store::redis::{Keys, Redis};
use crate::store::{MemoryStore, RedisStore, Store};

/// What a server can be given instead of what its config would build: tests pass a
/// manual clock, fake channels or a faulty store here.
pub struct Deps {
    pub clock: Arc<dyn Clock>,
    pub channels: Option<Channels>,
    pub store: Option<Arc<dyn Store>>,
    /// Where the configuration came from, for reloads (`None`: defaults and
    /// environment only).
    pub config_file: Option<PathBuf>,
}

impl Default for Deps {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            channels: None,
            store: None,
            config_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the outbox {path}: {source}")]
    Outbox {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot set up {key}: {reason}")]
    Push { key: String, reason: String },
    #[error("routing: {0}")]
    Routing(String),
    #[error("{0}")]
    Redis(String),
    #[error("no randomness for the server secret: {0}")]
    Random(String),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    engine: Arc<Engine>,
    reloader: Arc<Reloader>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Server {
    /// Bind `server.listen` and start.
    pub async fn start(config: Config, deps: Deps) -> Result<Server, ServerError> {
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Self::start_on(listener, config, deps).await
    }

    /// Start on a listener the caller bound (tests bind `127.0.0.1:0`).
    pub async fn start_on(
        listener: TcpListener,
        config: Config,
        deps: Deps,
    ) -> Result<Server, ServerError> {
        let addr = listener.local_addr().map_err(ServerError::Serve)?;
        let keys = CodeKeys::derive(&server_secret(&config)?);
        // With Redis, it holds everything shared: records and limits alike.
        let redis = match config.store.kind {
            StoreKind::Memory => None,
            StoreKind::Redis => {
                Some(Redis::new(&config.redis).map_err(|e| ServerError::Redis(e.to_string()))?)
            }
        };
        let redis_keys = Keys::new(
            &config.redis.prefix,
            config.redis.partitions,
            keys.pseudonyms(),
        );
        let (queue, jobs) = DeliveryQueue::bounded(
            config.delivery.queue_capacity,
            config.delivery.max_queue_delay,
        );
        let purposes = config.purposes.iter().map(|(name, p)| Purpose {
            name: Arc::from(name.as_str()),
            policy: Policy {
                ttl: p.ttl,
                code_length: CodeLength::new(p.code_length).expect("validated"),
                max_attempts: p.max_attempts,
                max_sends: p.max_sends,
                resend_cooldown: p.resend_cooldown,
                escalate_after: p.escalate_after,
            },
            provider_ack: p.push_ack == crate::config::PushAck::Provider,
            app_ttl: p.app_ttl,
            require_contrast: p.require_contrast,
        });
        let provider_ack: std::collections::HashMap<Box<str>, bool> = purposes
            .clone()
            .map(|p| (Box::from(&*p.name), p.provider_ack))
            .collect();
        let node = node_name();
        // The jobs of this node: read from the streams, or handed over as it accepts
        // requests (see `Handoff`).
        let reader = Arc::new(JobReader {
            name: node.clone(),
            codes: keys.clone(),
            provider_ack,
            held: Default::default(),
        });
        let ahead = config.delivery.concurrency * 2;
        // Sends go through Redis streams when the store is the Redis one built here.
        let store_queues = redis.is_some() && deps.store.is_none();
        let store: Arc<dyn Store> = match (deps.store, &redis) {
            (Some(store), _) => store,
            (None, None) => Arc::new(MemoryStore::new(
                config.store.shards,
                config.store.retention,
            )),
            (None, Some(redis)) => Arc::new(
                RedisStore::new(redis.clone(), redis_keys.clone(), config.store.retention)
                    .with_queue(config.delivery.queue_capacity)
                    .with_handoff(Handoff {
                        reader: reader.clone(),
                        queue: queue.clone(),
                        ahead,
                    }),
            ),
        };

        let plan = Plan::build(&config).map_err(|e| ServerError::Routing(e.to_string()))?;
        let channels = match deps.channels {
            Some(channels) => channels,
            None => {
                // Receipts may reach any node bound to an account: carriers note
                // their submits where every node can find them.
                let directory = redis.as_ref().map(|r| {
                    Arc::new(RedisDirectory::start(r.clone(), redis_keys.clone()))
                        as Arc<dyn MessageDirectory>
                });
                configured_channels(&config, &plan, directory)?
            }
        };
        // Before anything takes metric handles, so that theirs are live.
        let prometheus = metrics::install();
        let router = Arc::new(
            Router::new(&channels.sms, plan).map_err(|e| ServerError::Routing(e.to_string()))?,
        );
        if config.clients.is_empty() {
            tracing::warn!(
                "no [[clients]] configured: the API is open to anyone who can reach it (keep it on loopback)"
            );
        }
        let numbers = NumberRules::new(&config.numbers.default_region, config.numbers.mobile_only)
            .expect("validated")
            .allow_non_geographic(config.numbers.allow_non_geographic);
        let metrics = Arc::new(Metrics::new());
        let mut engine = Engine::new(EngineParts {
            store: store.clone(),
            keys: keys.clone(),
            queue: queue.clone(),
            clock: deps.clock.clone(),
            purposes: purposes.collect(),
            metrics: metrics.clone(),
            rules: Rules::new(&config),
            router: router.clone(),
            numbers: Arc::new(NumberParser::new(numbers, config.numbers.cache_capacity)),
            settings: Settings::new(&config),
        });
        if store_queues {
            engine = engine.with_store_queue();
        }
        let engine = Arc::new(engine);
        let admission = engine.admission().clone();
        let reloader = Arc::new(Reloader {
            router: router.clone(),
            admission: admission.clone(),
            file: deps.config_file.clone(),
            lock: tokio::sync::Mutex::new(()),
        });

        let (stop, stop_rx) = watch::channel(false);
        let (stop_workers, stop_workers_rx) = watch::channel(false);
        let workers = tokio::spawn(
            Workers {
                channels: channels.clone(),
                router: router.clone(),
                seed: std::hash::RandomState::new(),
                store: store.clone(),
                clock: deps.clock.clone(),
                metrics: metrics.clone(),
                concurrency: config.delivery.concurrency,
                retry: RetryPolicy {
                    max_attempts: config.delivery.max_attempts,
                    backoff: config.delivery.retry_backoff,
                },
                name: node.clone(),
                display_names: Arc::new(crate::policy::clients::DisplayNames::new(
                    &config.clients,
                    &config.app.display_name,
                )),
                keys: keys.clone(),
            }
            .run(jobs, stop_workers_rx),
        );
        // Jobs from the shared streams into this node's queue, until the stop.
        let consumer = match (&redis, store_queues) {
            (Some(redis), true) => Some(tokio::spawn(
                StreamConsumer {
                    redis: redis.clone(),
                    keys: redis_keys,
                    reader,
                    claim_after: config.redis.claim_after,
                    prefetch: ahead,
                }
                .run(queue, stop_rx.clone()),
            )),
            _ => None,
        };
        // Delivery reports from every channel that has them (one task per channel).
        let mut report_tasks = Vec::new();
        for channel in &channels.sms {
            if let Some(reports) = channel.take_reports() {
                report_tasks.push(tokio::spawn(crate::delivery::apply_reports(
                    reports,
                    store.clone(),
                    deps.clock.clone(),
                    metrics.clone(),
                )));
            }
        }
        let reclaimer = tokio::spawn(reclaim(
            admission.clone(),
            deps.clock.clone(),
            stop_rx.clone(),
        ));
        let escalator = tokio::spawn(escalate(engine.clone(), ESCALATION_TICK, stop_rx.clone()));
        let sweeper = tokio::spawn(sweep(
            store.clone(),
            deps.clock.clone(),
            config.store.sweep_interval,
            prometheus.clone(),
            stop_rx.clone(),
        ));

        let state = Arc::new(AppState {
            engine: engine.clone(),
            prometheus: Some(prometheus),
            http_metrics: Default::default(),
            channels: channels.sms.clone(),
            reloader: Some(reloader.clone()),
            app: config.app.clone(),
            trusted_proxies: crate::policy::peer::TrustedProxies::new(
                &config.server.trusted_proxies,
            ),
            body_read_timeout: config.server.body_read_timeout,
            body_limit: config.server.body_limit,
            stopping: stop_rx.clone(),
            openapi: Default::default(),
            push_providers: channels
                .push
                .distinct()
                .into_iter()
                .flat_map(|(platforms, p)| {
                    platforms
                        .into_iter()
                        .map(move |pl| (pl.as_str(), p.name().to_string()))
                })
                .collect(),
        });
        let app = api::router(state);
        let limits = crate::server::accept::Limits::new(&config.server);
        let grace = config.server.shutdown_grace;
        let mut http_stop = stop_rx.clone();
        let mut deadline_stop = stop_rx.clone();
        let task = tokio::spawn(async move {
            let serve = crate::server::accept::serve(listener, app, limits, async move {
                let _ = http_stop.wait_for(|stop| *stop).await;
            });
            // A request stuck inside the server (a store that never answers) must not
            // hold the shutdown open: after the grace period we stop waiting for
            // connections. Their tasks end when the runtime does, i.e. when `otpd`
            // exits right after this.
            let deadline = async move {
                let _ = deadline_stop.wait_for(|stop| *stop).await;
                tokio::time::sleep(grace).await;
            };
            let served = tokio::select! {
                served = serve => served,
                () = deadline => {
                    tracing::warn!(grace = ?grace, "HTTP requests still in flight after the grace period; not waiting for them");
                    Ok(())
                }
            };
            // Requests are done, and escalations stop queuing: deliver what was queued.
            let _ = escalator.await;
            // No more jobs from the shared streams; those read are delivered.
            if let Some(consumer) = consumer {
                let _ = consumer.await;
            }
            let _ = stop_workers.send(true);
            if tokio::time::timeout(grace, workers).await.is_err() {
                tracing::error!(
                    grace = ?grace,
                    "shutdown deadline passed with deliveries still queued or in flight"
                );
            }
            let _ = sweeper.await;
            let _ = reclaimer.await;
            for channel in &channels.sms {
                channel.shutdown().await;
            }
            for (_, pusher) in channels.push.distinct() {
                pusher.shutdown().await;
            }
            // Reports that arrive after the channels closed have nowhere to go.
            for task in report_tasks {
                task.abort();
            }
            tracing::info!("otpd stopped");
            served.map_err(ServerError::Serve)
        });
        tracing::info!(%addr, "otpd listening");
        Ok(Server {
            addr,
            engine,
            reloader,
            stop,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Read the configuration again and apply what can change while running: routes,
    /// templates, carriers' throughput caps and breaker thresholds. An invalid
    /// configuration is refused with its error, and the one in force stays.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        self.reloader.reload().await
    }

    /// Begin a graceful shutdown; [`Server::wait`] returns when it is complete.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    pub async fn wait(self) -> Result<(), ServerError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ServerError::Serve(std::io::Error::other(e))),
        }
    }
}

fn server_secret(config: &Config) -> Result<Vec<u8>, ServerError> {
    if let Some(secret) = &config.codes.secret {
        return Ok(secret.expose().as_bytes().to_vec());
    }
    tracing::warn!(
        "no codes.secret configured: using a random one for this process (codes do not survive a restart)"
    );
    let mut secret = vec![0u8; 32];
    OsRandom
        .fill(&mut secret)
        .map_err(|e| ServerError::Random(e.to_string()))?;
    Ok(secret)
}

fn configured_channels(
    config: &Config,
    plan: &Plan,
    directory: Option<Arc<dyn MessageDirectory>>,
) -> Result<Channels, ServerError> {
    let mut outbox: Option<Arc<FileChannel>> = None;
    let mut open_outbox = || -> Result<Arc<FileChannel>, ServerError> {
        if let Some(f) = &outbox {
            return Ok(f.clone());
        }
        let path = &config.channels.file.path;
        let file = Arc::new(
            FileChannel::open(path).map_err(|source| ServerError::Outbox {
                path: path.display().to_string(),
                source,
            })?,
        );
        outbox = Some(file.clone());
        Ok(file)
    };
    // Every configured carrier runs, whether a route names it now or not, so that a
    // reload can route to it; the outbox only when something names it.
    let mut sms: Vec<Arc<dyn Channel>> = config
        .channels
        .smpp
        .iter()
        .map(|(name, c)| {
            let config = carrier_config(name, c);
            Arc::new(match &directory {
                Some(d) => SmppCarrier::start_shared(config, d.clone()),
                None => SmppCarrier::start(config),
            }) as Arc<dyn Channel>
        })
        .collect();
    if plan.carriers().contains("file") {
        sms.push(open_outbox()?);
    }
    let mut fallback = |platform: &'static str| -> Result<Arc<dyn Pusher>, ServerError> {
        Ok(match config.delivery.push.as_str() {
            "file" => Arc::new(FilePusher::new(open_outbox()?, platform)),
            _ => Arc::new(NoProvider(platform)),
        })
    };
    let push = &config.push;
    let apns: Arc<dyn Pusher> = match &push.apns {
        Some(a) => Arc::new(apns_pusher(a)?),
        None => fallback("apns")?,
    };
    let fcm: Arc<dyn Pusher> = match &push.fcm {
        Some(f) => Arc::new(fcm_pusher(f)?),
        None => fallback("fcm")?,
    };
    let hms: Arc<dyn Pusher> = match &push.hms {
        Some(h) => Arc::new(hms_pusher(h)?),
        None => fallback("hms")?,
    };
    Ok(Channels {
        sms,
        push: Pushers { apns, fcm, hms },
    })
}

/// The push stand-in for a platform with no provider and `delivery.push = "none"`.
struct NoProvider(&'static str);

#[async_trait::async_trait]
impl Pusher for NoProvider {
    fn name(&self) -> &str {
        "none"
    }

    async fn push(&self, _: &Notification<'_>, _: &str) -> Outcome {
        Outcome::Fail {
            reason: format!("no push provider is configured for {}", self.0),
        }
    }
}

fn read(key: &str, path: &std::path::Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|e| ServerError::Push {
        key: key.to_string(),
        reason: format!("cannot read {}: {e}", path.display()),
    })
}

fn http_options(
    section: &str,
    ca_file: &Option<std::path::PathBuf>,
    connections: usize,
    max_streams: usize,
    timeout: Duration,
) -> Result<HttpOptions, ServerError> {
    Ok(HttpOptions {
        ca_pem: match ca_file {
            Some(path) => Some(read(&format!("push.{section}.ca_file"), path)?),
            None => None,
        },
        connections,
        max_streams,
        timeout,
    })
}

fn push_error(section: &str) -> impl Fn(otpd_adapters::push::http::SetupError) -> ServerError {
    let key = format!("[push.{section}]");
    move |e| ServerError::Push {
        key: key.clone(),
        reason: e.to_string(),
    }
}

fn apns_pusher(a: &crate::config::ApnsSection) -> Result<ApnsPusher, ServerError> {
    ApnsPusher::new(ApnsConfig {
        base_url: a.url.clone(),
        key_pem: read("push.apns.key_file", &a.key_file)?,
        key_id: a.key_id.clone(),
        team_id: a.team_id.clone(),
        default_topic: a.topic.clone().filter(|t| !t.is_empty()),
        http: http_options("apns", &a.ca_file, a.connections, a.max_streams, a.timeout)?,
    })
    .map_err(push_error("apns"))
}

fn fcm_pusher(f: &crate::config::FcmSection) -> Result<FcmPusher, ServerError> {
    let json = read("push.fcm.service_account_file", &f.service_account_file)?;
    let mut account = ServiceAccount::from_json(&json).map_err(|e| ServerError::Push {
        key: "push.fcm.service_account_file".into(),
        reason: e.to_string(),
    })?;
    if let Some(url) = &f.token_url {
        account.token_uri = url.clone();
    }
    FcmPusher::new(FcmConfig {
        base_url: f.url.clone(),
        account,
        project_id: f.project_id.clone(),
        http: http_options("fcm", &f.ca_file, f.connections, f.max_streams, f.timeout)?,
    })
    .map_err(push_error("fcm"))
}

fn hms_pusher(h: &crate::config::HmsSection) -> Result<HmsPusher, ServerError> {
    HmsPusher::new(HmsConfig {
        base_url: h.url.clone(),
        token_url: h.token_url.clone(),
        app_id: h.app_id.clone().unwrap_or_else(|| h.client_id.clone()),
        client_id: h.client_id.clone(),
        client_secret: h.client_secret.expose().to_string().into(),
        http: http_options("hms", &h.ca_file, h.connections, h.max_streams, h.timeout)?,
    })
    .map_err(push_error("hms"))
}

fn carrier_config(name: &str, c: &SmppCarrierConfig) -> CarrierConfig {
    CarrierConfig {
        name: name.to_string(),
        bind: BindConfig {
            address: format!("{}:{}", c.host, c.port),
            system_id: c.system_id.clone(),
            password: c.password.clone(),
            system_type: c.system_type.clone(),
            address_range: c.address_range.clone(),
            window: c.window,
            tps: c.bind_tps,
            enquire_link_interval: c.enquire_link_interval,
            response_timeout: c.response_timeout,
            reconnect_min: c.reconnect_min,
            reconnect_max: c.reconnect_max,
            ..BindConfig::default()
        },
        binds: c.binds,
        pair: c.bind_mode == BindModeConfig::Pair,
        source: Address {
            ton: c.source_ton,
            npi: c.source_npi,
            addr: c.source_addr.clone(),
        },
        registered_delivery: u8::from(c.registered_delivery),
        submit_timeout: c.submit_timeout,
        unmatched_grace: Duration::from_secs(30),
        encoding: EncodingPolicy {
            preferred: match c.data_coding {
                DataCodingPolicy::Gsm7 => Preferred::Gsm7,
                DataCodingPolicy::Latin1 => Preferred::Latin1,
                DataCodingPolicy::Ucs2 => Preferred::Ucs2,
            },
            gsm7_packed: c.gsm7_packed,
        },
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    NotRunning(#[from] crate::delivery::router::NotRunning),
}

/// Reads the configuration again and installs its plan. One reload at a time.
pub struct Reloader {
    router: Arc<Router>,
    admission: Arc<Admission>,
    file: Option<PathBuf>,
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let _one = self.lock.lock().await;
        let result = (|| {
            let config = Config::load(self.file.as_deref(), std::env::vars())?;
            let plan = Plan::build(&config)?;
            self.router.install(plan)?;
            self.admission.install(Rules::new(&config));
            Ok::<_, ReloadError>(())
        })();
        match &result {
            Ok(()) => {
                ::metrics::counter!("otpd_config_reloads_total", "result" => "ok").increment(1);
                tracing::info!(file = ?self.file, "configuration reloaded: routes, templates, carrier caps, limits and clients");
            }
            Err(e) => {
                ::metrics::counter!("otpd_config_reloads_total", "result" => "refused")
                    .increment(1);
                tracing::error!(error = %e, "configuration reload refused; the one in force stays");
            }
        }
        result
    }
}

/// How often due escalations are looked for. Escalation happens within this much of
/// its time, which is small beside the tens of seconds it waits.
const ESCALATION_TICK: Duration = Duration::from_millis(100);

/// Send by SMS the pushes left unacknowledged past their time, until stopped.
async fn escalate(engine: Arc<Engine>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                // Drain what is due now, a batch at a time.
                loop {
                    match engine.escalate_due(256).await {
                        Ok(256) => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "escalation check failed");
                            break;
                        }
                    }
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// Reclaim expired records on a timer, and keep the metrics exporter tidy.
/// Forget limit keys back to a full burst and idle pumping scopes, every
/// `limits.reclaim_interval` (read again after a reload), until stopped.
async fn reclaim(
    admission: Arc<Admission>,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let every = admission.rules().policy.reclaim_interval;
        tokio::select! {
            () = tokio::time::sleep(every) => {
                admission.reclaim(clock.now());
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

async fn sweep(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    every: std::time::Duration,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if let Err(e) = store.sweep(clock.now()).await {
                    tracing::warn!(error = %e, "sweep failed");
                }
                prometheus.run_upkeep();
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// This process's name among the nodes sharing a Redis: host, process id and a
/// random part (a restarted process is another consumer; its old jobs are claimed).
fn node_name() -> Arc<str> {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "otpd".into());
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    Arc::from(format!(
        "{host}-{}-{}",
        std::process::id(),
        hex::encode(random)
    ))
}
