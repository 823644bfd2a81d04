//! The events wired up: the sinks the engine and delivery tell (metrics, a test's
//! recorder, the clients' logs, the audit trail), and a webhook deliverer per
//! client that has a `webhook_url`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ServerError;
use crate::config::Config;
use crate::domain::clock::Clock;
use crate::events::audit::{Audit, AuditSettings};
use crate::events::feed::Feed;
use crate::events::webhook::{Deliverer, Target, WebhookSettings, report_backlog};
use crate::events::{Counted, EventSink, Fanout};
use crate::store::events::EventLog;

/// How often the backlog gauge is read.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

pub(super) struct Events {
    /// What the engine and delivery tell.
    pub sink: Arc<dyn EventSink>,
    pub log: Arc<dyn EventLog>,
    targets: Vec<Target>,
    keepers: Vec<Arc<str>>,
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
        let keepers: Vec<Arc<str>> = config
            .clients
            .iter()
            .filter(|c| c.keeps_events())
            .map(|c| Arc::from(c.name.as_str()))
            .collect();
        let targets = config
            .clients
            .iter()
            .filter_map(|c| {
                Some(Target {
                    client: c.name.as_str().into(),
                    url: c.webhook_url.clone()?,
                    secret: c.webhook_secret.clone()?,
                })
            })
            .collect();
        let mut sinks: Vec<Arc<dyn EventSink>> = vec![Arc::new(Counted::default())];
        sinks.extend(extra);
        if !keepers.is_empty() {
            sinks.push(Arc::new(Feed::start(log.clone(), keepers.clone())));
        }
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
        })
    }

    /// A deliverer per webhook and the backlog gauge, until `stop`.
    pub(super) fn spawn(
        &self,
        config: &Config,
        clock: &Arc<dyn Clock>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Vec<JoinHandle<()>>, ServerError> {
        if self.keepers.is_empty() {
            return Ok(Vec::new());
        }
        let w = &config.webhooks;
        let settings = WebhookSettings {
            timeout: w.timeout,
            retry_for: w.retry_for,
            first_retry: w.first_retry,
            max_retry: w.max_retry,
            concurrency: w.concurrency,
        };
        let http =
            otpd_adapters::push::http::plain_client(&otpd_adapters::push::http::HttpOptions {
                timeout: w.timeout,
                ..Default::default()
            })
            .map_err(|e| ServerError::Push {
                key: "webhooks".into(),
                reason: e.to_string(),
            })?;
        let mut tasks: Vec<JoinHandle<()>> = self
            .targets
            .iter()
            .map(|target| {
                let deliverer = Deliverer {
                    target: target.clone(),
                    http: http.clone(),
                    log: self.log.clone(),
                    settings: settings.clone(),
                    clock: clock.clone(),
                };
                tokio::spawn(deliverer.run(stop.clone()))
            })
            .collect();
        tasks.push(tokio::spawn(report_backlog(
            self.log.clone(),
            self.keepers.clone(),
            BACKLOG_EVERY,
            stop.clone(),
        )));
        Ok(tasks)
    }
}
