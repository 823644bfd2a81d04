//! One handle on Redis, a single server or a cluster, for every part of otpd that
//! keeps state there (store, limiter, delivery queue).
//!
//! Both kinds multiplex all commands over few connections, so the handle is cheap to
//! clone and needs no pool. Every command is bounded by `redis.timeout`; a lost
//! connection is re-made in the background, and commands fail fast meanwhile, so an
//! outage turns requests away (503) instead of piling them up.

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

use crate::config::RedisConfig;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("redis.urls: {0}")]
    Url(String),
    #[error("redis TLS files: {0}")]
    Tls(String),
    #[error("cannot set up the Redis client: {0}")]
    Client(#[from] redis::RedisError),
}

/// A cloneable handle; see the module doc.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

enum Inner {
    Single(ConnectionManager),
    /// The cluster client connects on first use (and again after a failure), so that
    /// otpd starts while the cluster is down and serves once it is up.
    Cluster {
        client: Box<redis::cluster::ClusterClient>,
        conn: OnceCell<ClusterConnection>,
    },
}

/// A connection for one operation.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Redis {
    pub fn new(config: &RedisConfig) -> Result<Self, ConnectError> {
        let tls = tls_certificates(config)?;
        let infos = config
            .urls
            .iter()
            .map(|u| {
                let mut info = u
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| ConnectError::Url(e.to_string()))?;
                let mut settings = info.redis_settings().clone();
                if let Some(user) = &config.username {
                    settings = settings.set_username(user);
                }
                if let Some(pass) = &config.password {
                    settings = settings.set_password(pass.expose());
                }
                info = info.set_redis_settings(settings);
                Ok(info)
            })
            .collect::<Result<Vec<_>, ConnectError>>()?;
        let inner = if config.cluster {
            let mut b = ClusterClientBuilder::new(infos)
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.timeout)
                .retries(1);
            if let Some(user) = &config.username {
                b = b.username(user);
            }
            if let Some(pass) = &config.password {
                b = b.password(pass.expose());
            }
            if let Some(certs) = tls {
                b = b.certs(certs);
            }
            Inner::Cluster {
                client: Box::new(b.build()?),
                conn: OnceCell::new(),
            }
        } else {
            let info = infos
                .into_iter()
                .next()
                .ok_or_else(|| ConnectError::Url("at least one URL is needed".into()))?;
            let client = match tls {
                Some(certs) => redis::Client::build_with_tls(info, certs)?,
                None => redis::Client::open(info)?,
            };
            let manager = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.timeout))
                // Reconnect in the background; a command fails rather than waits.
                .set_number_of_retries(1)
                .set_min_delay(std::time::Duration::from_millis(50))
                .set_max_delay(std::time::Duration::from_secs(2));
            Inner::Single(ConnectionManager::new_lazy_with_config(client, manager)?)
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// A connection to run commands on.
    pub async fn conn(&self) -> Result<Conn, StoreError> {
        match &*self.inner {
            Inner::Single(m) => Ok(Conn::Single(m.clone())),
            Inner::Cluster { client, conn } => conn
                .get_or_try_init(|| client.get_async_connection())
                .await
                .map(|c| Conn::Cluster(c.clone()))
                .map_err(unavailable),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(&*self.inner, Inner::Cluster { .. })
    }

    /// Run `commands`, whose answers nobody needs, in as few round trips as the
    /// deployment allows: one pipeline on a single server; on a cluster, where they
    /// may live on many slots, each on its own, all in flight at once.
    pub async fn run_all(&self, commands: &[Cmd]) -> Result<(), StoreError> {
        if commands.is_empty() {
            return Ok(());
        }
        let conn = self.conn().await?;
        if self.is_cluster() {
            let answers = futures_util::future::join_all(commands.iter().map(|c| {
                let mut conn = conn.clone();
                async move { c.query_async::<Value>(&mut conn).await }
            }))
            .await;
            for answer in answers {
                answer.map_err(unavailable)?;
            }
        } else {
            let mut pipe = redis::pipe();
            for c in commands {
                pipe.add_command(c.clone()).ignore();
            }
            let mut conn = conn;
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Run `commands` and return their answers, in order: one pipeline on one
    /// server; concurrently on a cluster, where each goes to its own slot's node.
    pub async fn query_all(&self, commands: &[Cmd]) -> Result<Vec<Value>, StoreError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn().await?;
        if self.is_cluster() {
            futures_util::future::join_all(commands.iter().map(|c| {
                let mut conn = conn.clone();
                async move { c.query_async::<Value>(&mut conn).await }
            }))
            .await
            .into_iter()
            .map(|answer| answer.map_err(unavailable))
            .collect()
        } else {
            let mut pipe = redis::pipe();
            for c in commands {
                pipe.add_command(c.clone());
            }
            let mut conn = conn;
            pipe.query_async::<Vec<Value>>(&mut conn)
                .await
                .map_err(unavailable)
        }
    }
}

fn tls_certificates(config: &RedisConfig) -> Result<Option<redis::TlsCertificates>, ConnectError> {
    if config.tls_ca.is_none() && config.tls_cert.is_none() {
        return Ok(None);
    }
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| ConnectError::Tls(format!("{}: {e}", p.display())))
    };
    let root_cert = config.tls_ca.as_deref().map(read).transpose()?;
    let client_tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
            client_cert: read(c)?,
            client_key: read(k)?,
        }),
        _ => None,
    };
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// What a Redis error means to a caller: the server could not be reached or did
/// not answer in time (unavailable), or it answered with an error (a script or data
/// problem, reported as corrupt so that it is not mistaken for an outage).
pub fn unavailable(e: redis::RedisError) -> StoreError {
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || e.is_unrecoverable_error()
    {
        StoreError::Unavailable(e.to_string())
    } else {
        match e.kind() {
            redis::ErrorKind::Server(
                redis::ServerErrorKind::BusyLoading
                | redis::ServerErrorKind::TryAgain
                | redis::ServerErrorKind::ClusterDown
                | redis::ServerErrorKind::MasterDown
                | redis::ServerErrorKind::ReadOnly,
            ) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Corrupt(format!("redis answered an error: {e}")),
        }
    }
}

/// Every command or pipeline otpd sends Redis goes through [`Conn`], which counts
/// them here: the round trips an operation costs, as the client sees them (Redis's
/// own `commandstats` also count the commands scripts run).
const ROUND_TRIPS: &str = "otpd_redis_round_trips_total";

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        metrics::counter!(ROUND_TRIPS).increment(1);
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        metrics::counter!(ROUND_TRIPS).increment(1);
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
