//! Where a node keeps its state, per `store.kind`: the embedded store in this
//! process (its changes kept in a data directory, or in memory only), or Redis
//! shared by many nodes — records, limits, the delivery streams this node reads its
//! jobs from, and the directory that lets a receipt reaching one node find a
//! message another node submitted.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::clock::Clock;
use crate::store::events::{EventLog, MemoryLog};
use crate::store::redis::events::RedisEventLog;

use otpd_adapters::smpp::directory::MessageDirectory;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ServerError;
use super::settings::Settings;
use crate::config::{StoreKind, StoreSync};
use crate::delivery::DeliveryQueue;
use crate::domain::clock::UnixMillis;
use crate::secrets::code::CodeKeys;
use crate::store::embedded::journal::Sync;
use crate::store::embedded::{DataDir, Recovered};
use crate::store::redis::directory::RedisDirectory;
use crate::store::redis::queue::{JobReader, StreamConsumer};
use crate::store::redis::{Handoff, Keys, Redis};
use crate::store::{MemoryStore, RedisStore, Stores};

pub(super) struct Backend {
    pub stores: Stores,
    /// Sends are queued by the store in the same step as it records them (Redis
    /// streams), and this node's workers read theirs from there.
    pub store_queues: bool,
    /// Where carriers note what they submitted, for every node to find.
    pub directory: Option<Arc<dyn MessageDirectory>>,
    /// Reads this node's jobs from the streams into its queue.
    consumer: Option<StreamConsumer>,
    /// The clients' events (webhooks, `GET /v1/events`).
    pub event_log: Arc<dyn EventLog>,
}

/// The clients' events kept in memory, as `[webhooks]` bounds them.
fn memory_log(config: &crate::config::Config) -> Arc<dyn EventLog> {
    Arc::new(MemoryLog::new(
        config.webhooks.keep,
        config.webhooks.retry_for,
    ))
}

/// The embedded store's data directory, opened and read back at `now` (with
/// `store.kind = "embedded"` and no store injected).
pub(super) fn open_data_dir(
    settings: &Settings,
    injected: bool,
    now: UnixMillis,
) -> Result<Option<(DataDir, Recovered)>, ServerError> {
    let store = &settings.config.store;
    if injected || store.kind != StoreKind::Embedded {
        return Ok(None);
    }
    let sync = sync_of(store.sync);
    let (dir, recovered) = DataDir::open(&store.path, sync, now, store.write_timeout)
        .map_err(|e| ServerError::DataDir(e.to_string()))?;
    tracing::info!(
        path = %store.path.display(),
        verifications = recovered.verifications.len(),
        subscribers = recovered.subscribers.len(),
        unreadable = recovered.unreadable,
        "the embedded store's data directory is open"
    );
    Ok(Some((dir, recovered)))
}

fn sync_of(sync: StoreSync) -> Sync {
    match sync {
        StoreSync::Write => Sync::Write,
        StoreSync::Fsync => Sync::Fsync,
    }
}

impl Backend {
    /// The backend `settings` name; `injected` (a test's store) replaces the store it
    /// would build; `data` is the embedded store's directory, opened by
    /// [`open_data_dir`].
    pub fn build(
        settings: &Settings,
        injected: Option<Stores>,
        keys: &CodeKeys,
        node: &Arc<str>,
        queue: &DeliveryQueue,
        data: Option<(DataDir, &Recovered, UnixMillis)>,
        clock: &Arc<dyn Clock>,
    ) -> Result<Backend, ServerError> {
        let config = &settings.config;
        let store = &config.store;
        let embedded = |stores: Stores| Backend {
            stores,
            store_queues: false,
            directory: None,
            consumer: None,
            event_log: memory_log(config),
        };
        match (store.kind, injected, data) {
            (StoreKind::Redis, injected, _) => {
                Backend::redis(settings, injected, keys, node, queue, clock)
            }
            (_, Some(stores), _) => Ok(embedded(stores)),
            (_, None, Some((dir, recovered, now))) => {
                let events = crate::store::embedded::events::open_event_log(
                    &store.path,
                    now,
                    config.webhooks.keep,
                    config.webhooks.retry_for,
                )
                .map_err(|e| ServerError::DataDir(e.to_string()))?;
                Ok(Backend {
                    event_log: Arc::new(events),
                    ..embedded(Stores::of(Arc::new(MemoryStore::durable(
                        store.shards,
                        store.retention,
                        dir,
                        recovered,
                        now,
                    ))))
                })
            }
            (_, None, None) => Ok(embedded(Stores::of(Arc::new(MemoryStore::new(
                store.shards,
                store.retention,
            ))))),
        }
    }

    /// On Redis, it holds everything shared: records and limits alike.
    fn redis(
        settings: &Settings,
        injected: Option<Stores>,
        keys: &CodeKeys,
        node: &Arc<str>,
        queue: &DeliveryQueue,
        clock: &Arc<dyn Clock>,
    ) -> Result<Backend, ServerError> {
        let config = &settings.config;
        let redis = Redis::new(&config.redis).map_err(|e| ServerError::Redis(e.to_string()))?;
        let redis_keys = Keys::new(
            &config.redis.prefix,
            config.redis.partitions,
            keys.pseudonyms(),
        );
        // Receipts may reach any node bound to an account: carriers note their
        // submits where every node can find them.
        let directory = Some(
            Arc::new(RedisDirectory::start(redis.clone(), redis_keys.clone()))
                as Arc<dyn MessageDirectory>,
        );
        if let Some(stores) = injected {
            return Ok(Backend {
                stores,
                store_queues: false,
                directory,
                consumer: None,
                event_log: memory_log(config),
            });
        }
        let provider_ack: HashMap<Box<str>, bool> = settings
            .purposes
            .iter()
            .map(|p| (Box::from(&*p.name), p.provider_ack))
            .collect();
        // The jobs of this node: read from the streams, or handed over as it accepts
        // requests (see `Handoff`).
        let reader = Arc::new(JobReader {
            name: node.clone(),
            codes: keys.clone(),
            provider_ack,
            held: Default::default(),
        });
        let ahead = config.delivery.concurrency * 2;
        let store = RedisStore::new(redis.clone(), redis_keys.clone(), config.store.retention)
            .with_queue(config.delivery.queue_capacity)
            .with_handoff(Handoff {
                reader: reader.clone(),
                queue: queue.clone(),
                ahead,
            });
        Ok(Backend {
            stores: Stores::of(Arc::new(store)),
            store_queues: true,
            directory,
            consumer: Some(StreamConsumer {
                redis: redis.clone(),
                keys: redis_keys,
                reader,
                claim_after: config.redis.claim_after,
                prefetch: ahead,
            }),
            event_log: Arc::new(RedisEventLog::new(
                redis,
                &config.redis.prefix,
                node.clone(),
                config.webhooks.keep,
                config.webhooks.retry_for,
                clock.clone(),
            )),
        })
    }

    /// Start reading this node's jobs from the shared streams into `queue`, until
    /// `stop` (nothing to read with the embedded store).
    pub fn consume(
        &mut self,
        queue: DeliveryQueue,
        stop: watch::Receiver<bool>,
    ) -> Option<JoinHandle<()>> {
        let consumer = self.consumer.take()?;
        Some(tokio::spawn(consumer.run(queue, stop)))
    }
}
