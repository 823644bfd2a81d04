//! Wiring and lifecycle: build the engine from [`Settings`] (the configuration,
//! parsed once), serve the API, run the delivery workers and the background tasks,
//! and shut down in order.
//!
//! - [`settings`]: the configuration parsed into what the server runs on;
//! - [`backend`]: the store and its queue, per `store.kind`;
//! - [`channels`]: the carriers and push providers the configuration names;
//! - [`accept`] (with [`connection`]'s watchdog and [`coalesce`]): the accept loop
//!   and what bounds each connection;
//! - [`reload`]: reading the configuration again while running;
//! - [`tasks`]: escalation, reclaiming and sweeping timers.
//!
//! Shutdown is one signal. The listener stops accepting and in-flight requests finish;
//! then the delivery queue closes and every job accepted before is sent (within
//! `server.shutdown_grace`); then channels flush. Nothing accepted is dropped
//! silently: a job still queued when the deadline passes is logged.

pub mod accept;
mod after_the_fact;
mod backend;
mod channels;
pub(crate) mod coalesce;
pub(crate) mod connection;
mod events;
mod reload;
mod settings;
mod tasks;
pub mod tls;

pub use reload::{ReloadError, Reloader};
pub use settings::Settings;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::delivery::router::Router;
use crate::delivery::{Channels, DeliveryJobs, DeliveryQueue, RetryPolicy, Workers};
use crate::domain::clock::{Clock, SystemClock};
use crate::engine::{Engine, EngineParts};
use crate::metrics::{self, Metrics};
use crate::numbers::reader::NumberParser;
use crate::policy::admission::Rules;
use crate::secrets::code::{CodeKeys, OsRandom, RandomSource};
use crate::store::Stores;
use crate::store::embedded::DataDir;
use backend::Backend;

/// What a server can be given instead of what its config would build: tests pass a
/// manual clock, fake channels or a faulty store here.
pub struct Deps {
    pub clock: Arc<dyn Clock>,
    pub channels: Option<Channels>,
    pub store: Option<Stores>,
    /// Where the configuration came from, for reloads (`None`: defaults and
    /// environment only).
    pub config_file: Option<PathBuf>,
    /// Where what happens is told (a test's recorder); `None`: nowhere yet.
    pub events: Option<Arc<dyn crate::events::EventSink>>,
}

impl Default for Deps {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            channels: None,
            store: None,
            config_file: None,
            events: None,
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
    #[error("the embedded store: {0}")]
    DataDir(String),
    #[error("{0}")]
    Audit(String),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("server.tls: {0}")]
    Tls(#[from] crate::config::tls::TlsError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    engine: Arc<Engine>,
    reloader: Arc<Reloader>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServerError>>,
}

/// The tasks a server runs beside the HTTP listener, stopped in order.
struct Background {
    workers: JoinHandle<()>,
    stop_workers: watch::Sender<bool>,
    consumer: Option<JoinHandle<()>>,
    reports: Vec<JoinHandle<()>>,
    reclaimer: JoinHandle<()>,
    escalator: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    /// The clients' webhook deliverers and their backlog gauge.
    webhooks: events::Webhooks,
}

impl Server {
    /// Bind `server.listen` and start.
    pub async fn start(settings: Settings, deps: Deps) -> Result<Server, ServerError> {
        let addr = settings.config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Self::start_on(listener, settings, deps).await
    }

    /// Start on a listener the caller bound (tests bind `127.0.0.1:0`).
    pub async fn start_on(
        listener: TcpListener,
        settings: Settings,
        deps: Deps,
    ) -> Result<Server, ServerError> {
        let addr = listener.local_addr().map_err(ServerError::Serve)?;
        let config = &settings.config;
        // Before anything takes metric handles — the store's, the carriers' binds' —
        // so that theirs are live: a handle taken earlier counts into nothing.
        let prometheus = metrics::install();
        let started = deps.clock.now();
        let data = backend::open_data_dir(&settings, deps.store.is_some(), started)?;
        let keys = CodeKeys::derive(&server_secret(config, data.as_ref().map(|(d, _)| d))?);
        let (queue, jobs) = DeliveryQueue::bounded(
            config.delivery.queue_capacity,
            config.delivery.max_queue_delay,
        );
        let node = tasks::node_name();
        let (data, recovered) = match data {
            Some((dir, recovered)) => (Some(dir), Some(recovered)),
            None => (None, None),
        };
        let mut backend = Backend::build(
            &settings,
            deps.store,
            &keys,
            &node,
            &queue,
            data.map(|d| (d, recovered.as_ref().expect("read with it"), started)),
            &deps.clock,
        )?;
        let channels = match deps.channels {
            Some(channels) => channels,
            None => {
                channels::configured_channels(config, &settings.plan, backend.directory.clone())?
            }
        };
        warn_about(config);
        let Settings {
            config,
            plan,
            numbers,
            purposes,
            options,
        } = settings;
        let router = Arc::new(
            Router::new(&channels.sms, plan).map_err(|e| ServerError::Routing(e.to_string()))?,
        );
        let metrics = Arc::new(Metrics::new());
        let mut engine = Engine::new(EngineParts {
            stores: backend.stores.clone(),
            keys: keys.clone(),
            queue: queue.clone(),
            clock: deps.clock.clone(),
            purposes,
            metrics: metrics.clone(),
            rules: Rules::new(&config),
            router: router.clone(),
            numbers: Arc::new(NumberParser::new(numbers, config.numbers.cache_capacity)),
            options,
        });
        if backend.store_queues {
            engine = engine.with_store_queue();
        }
        let mut events = events::Events::new(
            &config,
            backend.event_log.clone(),
            deps.events.clone(),
            &deps.clock,
            &node,
        )?;
        engine = engine
            .with_events(events.sink.clone())
            .with_event_log(events.log.clone());
        let engine = Arc::new(engine);
        let tls = match &config.server.tls {
            Some(t) => Some(Arc::new(tls::Certificates::load(t)?)),
            None => None,
        };
        let reloader = Arc::new(Reloader::new(
            router.clone(),
            engine.admission().clone(),
            tls.clone(),
            deps.config_file.clone(),
        ));

        let (stop, stop_rx) = watch::channel(false);
        let workers = Workers {
            channels: channels.clone(),
            router: router.clone(),
            seed: std::hash::RandomState::new(),
            stores: backend.stores.clone(),
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
            in_flight: Default::default(),
            keys: keys.clone(),
            events: events.sink.clone(),
        };
        if let Some(recovered) = recovered {
            // Behind the workers, which make room in the queue as they go.
            tokio::spawn({
                let engine = engine.clone();
                async move { engine.resume(recovered.verifications).await }
            });
        }
        let webhooks = events.spawn(&config, &deps.clock, &stop_rx)?;
        let mut background = Background::spawn(
            &config,
            &engine,
            &mut backend,
            &channels,
            workers,
            (queue, jobs),
            (&prometheus, &stop_rx),
            &deps.clock,
        );
        background.webhooks = webhooks;
        let state = app_state(&config, &engine, &channels, prometheus, &reloader, &stop_rx);
        let app = api::router(state);
        let limits = accept::Limits::new(&config.server);
        let grace = config.server.shutdown_grace;
        let task = tokio::spawn(serve_then_stop(
            (listener, tls),
            app,
            limits,
            grace,
            stop_rx,
            background,
            channels,
        ));
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

impl Background {
    /// Start the delivery workers, the stream consumer (Redis), a receipt task per
    /// channel that has receipts, and the timers.
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        config: &Config,
        engine: &Arc<Engine>,
        backend: &mut Backend,
        channels: &Channels,
        workers: Workers,
        (queue, jobs): (DeliveryQueue, DeliveryJobs),
        (prometheus, stop): (
            &metrics_exporter_prometheus::PrometheusHandle,
            &watch::Receiver<bool>,
        ),
        clock: &Arc<dyn Clock>,
    ) -> Background {
        let metrics = workers.metrics.clone();
        let (stop_workers, stop_workers_rx) = watch::channel(false);
        let workers = tokio::spawn(workers.run(jobs, stop_workers_rx));
        // Jobs from the shared streams into this node's queue, until the stop.
        let consumer = backend.consume(queue, stop.clone());
        // Delivery reports from every channel that has them (one task per channel).
        let reports = channels
            .sms
            .iter()
            .filter_map(|channel| channel.take_reports())
            .map(|reports| {
                tokio::spawn(crate::delivery::apply_reports(
                    reports,
                    backend.stores.clone(),
                    clock.clone(),
                    metrics.clone(),
                    engine.events().clone(),
                ))
            })
            .collect();
        let admission = engine.admission().clone();
        Background {
            workers,
            stop_workers,
            consumer,
            reports,
            reclaimer: tokio::spawn(tasks::reclaim(admission, clock.clone(), stop.clone())),
            escalator: tokio::spawn(tasks::escalate(
                engine.clone(),
                tasks::ESCALATION_TICK,
                stop.clone(),
            )),
            sweeper: tokio::spawn(tasks::sweep(
                backend.stores.verifications.clone(),
                clock.clone(),
                config.store.sweep_interval,
                prometheus.clone(),
                stop.clone(),
            )),
            webhooks: Default::default(),
        }
    }

    /// After the listener: stop queuing escalations and reading streams, deliver what
    /// was queued (within `grace`), then stop the timers. The receipt tasks are
    /// left for the caller to end once the channels are closed.
    async fn stop(self, grace: std::time::Duration) -> Vec<JoinHandle<()>> {
        // Requests are done, and escalations stop queuing: deliver what was queued.
        let _ = self.escalator.await;
        // No more jobs from the shared streams; those read are delivered.
        if let Some(consumer) = self.consumer {
            let _ = consumer.await;
        }
        let _ = self.stop_workers.send(true);
        if tokio::time::timeout(grace, self.workers).await.is_err() {
            tracing::error!(
                grace = ?grace,
                "shutdown deadline passed with deliveries still queued or in flight"
            );
        }
        let _ = self.sweeper.await;
        let _ = self.reclaimer.await;
        self.webhooks.stop().await;
        self.reports
    }
}

/// Say what in a valid configuration is probably a mistake.
fn warn_about(config: &Config) {
    for (name, c) in &config.channels.smpp {
        if c.receipt_wait >= config.store.retention {
            tracing::warn!(
                carrier = %name,
                "receipt_wait is not shorter than store.retention: a send whose receipt never comes is gone before it reads unconfirmed"
            );
        }
    }
    if config.clients.is_empty() {
        tracing::warn!(
            "no [[clients]] configured: the API is open to anyone who can reach it (keep it on loopback)"
        );
    }
}

/// What every request handler reads.
fn app_state(
    config: &Config,
    engine: &Arc<Engine>,
    channels: &Channels,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    reloader: &Arc<Reloader>,
    stop: &watch::Receiver<bool>,
) -> Arc<AppState> {
    Arc::new(AppState {
        engine: engine.clone(),
        prometheus: Some(prometheus),
        http_metrics: Default::default(),
        channels: channels.sms.clone(),
        reloader: Some(reloader.clone() as Arc<dyn api::Reload>),
        app: config.app.clone(),
        trusted_proxies: crate::policy::peer::TrustedProxies::new(&config.server.trusted_proxies),
        body_read_timeout: config.server.body_read_timeout,
        body_limit: config.server.body_limit,
        stopping: stop.clone(),
        openapi: Default::default(),
        push_providers: push_providers(channels),
    })
}

/// Which provider serves each push platform, for the health endpoint.
fn push_providers(channels: &Channels) -> Vec<(&'static str, String)> {
    channels
        .push
        .distinct()
        .into_iter()
        .flat_map(|(platforms, p)| {
            platforms
                .into_iter()
                .map(move |pl| (pl.as_str(), p.name().to_string()))
        })
        .collect()
}

/// Serve until the stop signal, then shut down in order.
async fn serve_then_stop(
    (listener, tls): (TcpListener, Option<Arc<tls::Certificates>>),
    app: axum::Router,
    limits: accept::Limits,
    grace: std::time::Duration,
    stop: watch::Receiver<bool>,
    background: Background,
    channels: Channels,
) -> Result<(), ServerError> {
    let mut http_stop = stop.clone();
    let mut deadline_stop = stop;
    let serve = accept::serve(listener, app, limits, tls, async move {
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
    let reports = background.stop(grace).await;
    for channel in &channels.sms {
        channel.shutdown().await;
    }
    for (_, pusher) in channels.push.distinct() {
        pusher.shutdown().await;
    }
    // Reports that arrive after the channels closed have nowhere to go.
    for task in reports {
        task.abort();
    }
    tracing::info!("otpd stopped");
    served.map_err(ServerError::Serve)
}

/// `codes.secret`; else the one kept in the embedded store's data directory;
/// else a random one, for this process only.
fn server_secret(config: &Config, data: Option<&DataDir>) -> Result<Vec<u8>, ServerError> {
    if let Some(secret) = &config.codes.secret {
        return Ok(secret.expose().as_bytes().to_vec());
    }
    if let Some(dir) = data {
        return dir
            .secret()
            .map_err(|e| ServerError::DataDir(e.to_string()));
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
