//! The events wired up: the sinks the engine and delivery tell (metrics, a test's
//! recorder, the clients' logs, the audit trail), and a webhook deliverer per
//! client that has a `webhook_url`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ServerError;
use super::after_the_fact::{AfterTheFact, CALLING, KEEPING};
use crate::config::Config;
use crate::domain::clock::Clock;
use crate::domain::name::Name;
use crate::events::audit::{Audit, AuditSettings};
use crate::events::feed::Feed;
use crate::events::webhook::{Deliverer, Target, Transport, WebhookSettings, report_backlog};
use crate::events::{Counted, EventSink, Fanout};
use crate::store::events::EventLog;

/// How often the backlog gauge is read.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

pub(super) struct Events {
    /// What the engine and delivery tell.
    pub sink: Arc<dyn EventSink>,
    pub log: Arc<dyn EventLog>,
    targets: Vec<Target>,
    keepers: Vec<Name>,
    /// Where the clients' logs are written and their webhooks called.
    runtime: Option<AfterTheFact>,
}

/// The webhook deliverers, their backlog gauge and the thread they run on, and the
/// thread that keeps the events.
#[derive(Default)]
pub(super) struct Webhooks {
    tasks: Vec<JoinHandle<()>>,
    calling: Option<AfterTheFact>,
    runtime: Option<AfterTheFact>,
}

impl Webhooks {
    /// After the stop signal: let the deliverers mark what they delivered, then stop
    /// their thread, and then the one that keeps the events.
    pub(super) async fn stop(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(r) = self.calling {
            r.stop().await;
        }
        if let Some(r) = self.runtime {
            r.stop().await;
        }
    }
}

impl Events {
    /// The sinks for `config`: counted always, `extra` (a test's recorder) when
    /// given, and the clients' logs for those that keep events. Call it after the
    /// metrics recorder is installed.
    pub(super) fn new(
        config: &Config,
        log: Arc<dyn EventLog>,
        extra: Option<Arc<dyn EventSink>>,
        clock: &Arc<dyn Clock>,
        node: &str,
    ) -> Result<Events, ServerError> {
        let keepers: Vec<Name> = config
            .clients
            .iter()
            .filter(|c| c.keeps_events())
            .map(|c| Name::new(c.name.as_str()))
            .collect();
        let targets = config
            .clients
            .iter()
            .filter_map(|c| {
                Some(Target {
                    client: c.name.as_str().into(),
                    // Checked by the configuration's validation; one that a URL
                    // parser refuses still is left without a webhook, said below.
                    url: match reqwest::Url::parse(c.webhook_url.as_deref()?) {
                        Ok(u) => u,
                        Err(e) => {
                            tracing::error!(client = %c.name, error = %e, "webhook_url cannot be used");
                            return None;
                        }
                    },
                    secret: c.webhook_secret.clone()?,
                })
            })
            .collect();
        let mut sinks: Vec<Arc<dyn EventSink>> = vec![Arc::new(Counted::default())];
        sinks.extend(extra);
        let runtime = if keepers.is_empty() {
            None
        } else {
            let runtime = AfterTheFact::start("otpd-events", KEEPING)?;
            sinks.push(Arc::new(Feed::start(
                log.clone(),
                keepers.clone(),
                &runtime.handle,
            )));
            Some(runtime)
        };
        let a = &config.audit;
        if let (Some(dir), Some(key)) = (&a.path, &a.signing_key) {
            let settings = AuditSettings {
                dir: dir.clone(),
                key: key.clone(),
                checkpoint_every: a.checkpoint_every,
                checkpoint_interval: a.checkpoint_interval,
                rotate_every: a.rotate_every,
                retention: a.retention,
                node: node.to_string(),
            };
            let audit = Audit::start(settings, clock.clone())
                .map_err(|e| ServerError::Audit(e.to_string()))?;
            tracing::info!(path = %dir.display(), key = %key.public(), "the audit trail is kept");
            sinks.push(Arc::new(audit));
        }
        Ok(Events {
            sink: Arc::new(Fanout::new(sinks)),
            log,
            targets,
            keepers,
            runtime,
        })
    }

    /// A deliverer per webhook and the backlog gauge, until `stop`.
    pub(super) fn spawn(
        &mut self,
        config: &Config,
        clock: &Arc<dyn Clock>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Webhooks, ServerError> {
        let Some(runtime) = self.runtime.take() else {
            return Ok(Webhooks::default());
        };
        let calling = if self.targets.is_empty() {
            None
        } else {
            Some(AfterTheFact::start("otpd-webhooks", CALLING)?)
        };
        let on = calling
            .as_ref()
            .map_or(&runtime.handle, |c| &c.handle)
            .clone();
        let w = &config.webhooks;
        let settings = WebhookSettings {
            timeout: w.timeout,
            retry_for: w.retry_for,
            first_retry: w.first_retry,
            max_retry: w.max_retry,
            concurrency: w.concurrency,
        };
        let options = otpd_adapters::push::http::HttpOptions {
            timeout: w.timeout,
            ..Default::default()
        };
        let setup = |e: otpd_adapters::push::http::SetupError| ServerError::Push {
            key: "webhooks".into(),
            reason: e.to_string(),
        };
        let http = otpd_adapters::push::http::plain_client(&options).map_err(setup)?;
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        for target in &self.targets {
            let transport = if w.h2c && target.url.scheme() == "http" {
                Transport::h2c(&target.url, w.timeout, w.concurrency)
            } else {
                Transport::Any(http.clone())
            };
            let deliverer = Deliverer {
                target: target.clone(),
                http: transport,
                log: self.log.clone(),
                settings: settings.clone(),
                clock: clock.clone(),
            };
            tasks.push(on.spawn(deliverer.run(stop.clone())));
        }
        tasks.push(on.spawn(report_backlog(
            self.log.clone(),
            self.keepers.clone(),
            BACKLOG_EVERY,
            stop.clone(),
        )));
        Ok(Webhooks {
            tasks,
            calling,
            runtime: Some(runtime),
        })
    }
}
