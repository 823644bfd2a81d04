//! The clients' events on Redis: a stream per client (`<prefix>:{ev.<client>}:s`),
//! so that every node appends to it and whichever node delivers reads it.
//!
//! One node at a time delivers a client's webhook — the one holding the client's
//! lease (`…:lease`, `SET NX PX`, renewed as it reads) — so that a verification's
//! events go out in order even with many nodes. It reads through the consumer group
//! `webhooks` under one consumer name, `deliverer`, shared by whichever node holds
//! the lease: a node that takes the lease over first reads that consumer's pending
//! entries (taken by the node before, never acknowledged) and then new ones. Done
//! is `XACK`. The stream is trimmed to `webhooks.keep` entries as it is written
//! (`MAXLEN ~`) and to `webhooks.retry_for` of age as the backlog is read
//! (`XTRIM MINID ~`). Reads never block a connection (`XREADGROUP` without
//! `BLOCK`): the multiplexed connection is the store's too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::Value;

use super::conn::{Redis, unavailable};
use super::queue::parse_entries;
use crate::domain::clock::{Clock, UnixMillis};
use crate::store::StoreError;
use crate::store::events::{EventId, EventLog, KeptEvent, NewEvent};

const GROUP: &str = "webhooks";
const CONSUMER: &str = "deliverer";
/// How long a lease lasts unless renewed.
const LEASE: Duration = Duration::from_secs(10);
/// How often an idle take looks again.
const POLL: Duration = Duration::from_millis(50);

pub struct RedisEventLog {
    redis: Redis,
    prefix: Box<str>,
    /// This node's name, written in the leases it holds.
    node: Arc<str>,
    keep: usize,
    retention: Duration,
    clock: Arc<dyn Clock>,
    /// Per client: where this node reads its pending entries from, while it has
    /// not read them all since it took the lease.
    reading: Mutex<HashMap<Arc<str>, Reading>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Reading {
    /// Not holding the lease.
    Idle,
    /// Holding it, reading the pending entries after this id.
    Pending(String),
    /// Holding it, reading new entries.
    New,
}

impl RedisEventLog {
    pub fn new(
        redis: Redis,
        prefix: &str,
        node: Arc<str>,
        keep: usize,
        retention: Duration,
        clock: Arc<dyn Clock>,
    ) -> RedisEventLog {
        RedisEventLog {
            redis,
            prefix: prefix.into(),
            node,
            keep,
            retention,
            clock,
            reading: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, client: &str, what: &str) -> String {
        format!("{}:{{ev.{client}}}:{what}", self.prefix)
    }

    /// Take or renew `client`'s lease; whether this node holds it.
    async fn lease(&self, client: &str) -> Result<bool, StoreError> {
        let key = self.key(client, "lease");
        let ms = LEASE.as_millis() as u64;
        // Renew if ours, else take if free: one script, one round trip.
        let held: i64 = redis::Script::new(
            r"
            local v = redis.call('GET', KEYS[1])
            if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
            if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
            return 0",
        )
        .key(&key)
        .arg(&*self.node)
        .arg(ms)
        .invoke_async(&mut self.redis.conn().await?)
        .await
        .map_err(unavailable)?;
        if held == 2 {
            // Newly ours: make sure the group exists, then read what was pending.
            let created: Result<Value, _> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.key(client, "s"))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut self.redis.conn().await?)
                .await;
            if let Err(e) = created
                && e.code() != Some("BUSYGROUP")
            {
                return Err(unavailable(e));
            }
            self.reading
                .lock()
                .insert(client.into(), Reading::Pending("0".into()));
        }
        if held == 0 {
            self.reading.lock().insert(client.into(), Reading::Idle);
        }
        Ok(held != 0)
    }

    async fn read(
        &self,
        client: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Option<KeptEvent>)>, StoreError> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(CONSUMER)
            .arg("COUNT")
            .arg(limit)
            .arg("STREAMS")
            .arg(self.key(client, "s"))
            .arg(from)
            .query_async(&mut self.redis.conn().await?)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for (_, entries) in super::queue::parse_read(reply)? {
            for (id, fields) in entries {
                let event = kept(&id, &fields);
                out.push((id, event));
            }
        }
        Ok(out)
    }
}

/// An entry as a kept event (`None`: unreadable).
fn kept(id: &str, fields: &HashMap<String, String>) -> Option<KeptEvent> {
    let (ms, seq) = id.split_once('-')?;
    Some(KeptEvent {
        id: EventId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        },
        order: fields.get("o")?.parse().ok()?,
        at: UnixMillis(fields.get("a")?.parse().ok()?),
        payload: fields.get("p")?.clone().into_bytes().into(),
    })
}

fn stream_id(id: EventId) -> String {
    format!("{}-{}", id.ms, id.seq)
}

#[async_trait]
impl EventLog for RedisEventLog {
    async fn append(&self, events: Vec<NewEvent>) -> Result<(), StoreError> {
        let commands: Vec<redis::Cmd> = events
            .iter()
            .map(|e| {
                let mut c = redis::cmd("XADD");
                c.arg(self.key(&e.client, "s"))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.keep)
                    .arg("*")
                    .arg("o")
                    .arg(e.order)
                    .arg("a")
                    .arg(e.at.0)
                    .arg("p")
                    .arg(&e.payload[..]);
                c
            })
            .collect();
        self.redis.run_all(&commands).await
    }

    async fn after(
        &self,
        client: &str,
        after: EventId,
        limit: usize,
    ) -> Result<Vec<KeptEvent>, StoreError> {
        let reply: Value = redis::cmd("XRANGE")
            .arg(self.key(client, "s"))
            .arg(format!("({}", stream_id(after)))
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.redis.conn().await?)
            .await
            .map_err(unavailable)?;
        Ok(parse_entries(reply)?
            .iter()
            .filter_map(|(id, fields)| kept(id, fields))
            .collect())
    }

    async fn take(
        &self,
        client: &str,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<KeptEvent>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.lease(client).await? {
                let reading = self
                    .reading
                    .lock()
                    .get(client)
                    .cloned()
                    // Held since before this process (same node name): read what
                    // the last one left pending first.
                    .unwrap_or(Reading::Pending("0".into()));
                let from = match &reading {
                    Reading::Pending(after) => after.clone(),
                    _ => ">".to_string(),
                };
                let got = self.read(client, &from, limit).await?;
                if let Reading::Pending(_) = reading {
                    let next = match got.last() {
                        Some((id, _)) => Reading::Pending(id.clone()),
                        None => Reading::New,
                    };
                    self.reading.lock().insert(client.into(), next);
                }
                let mut events = Vec::with_capacity(got.len());
                let mut unreadable = Vec::new();
                for (id, event) in got {
                    match event {
                        Some(e) => events.push(e),
                        None => unreadable.push(id),
                    }
                }
                if !unreadable.is_empty() {
                    // Trimmed away or not ours: never to be sent; let them go.
                    let mut c = redis::cmd("XACK");
                    c.arg(self.key(client, "s")).arg(GROUP).arg(&unreadable);
                    self.redis.run_all(&[c]).await?;
                }
                if !events.is_empty() {
                    return Ok(events);
                }
                if from != ">" {
                    continue;
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
    }

    async fn done(&self, client: &str, ids: &[EventId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut c = redis::cmd("XACK");
        c.arg(self.key(client, "s")).arg(GROUP);
        for id in ids {
            c.arg(stream_id(*id));
        }
        self.redis.run_all(&[c]).await
    }

    async fn backlog(&self, client: &str) -> Result<u64, StoreError> {
        let key = self.key(client, "s");
        let oldest = self.clock.now().minus(self.retention);
        let mut trim = redis::cmd("XTRIM");
        trim.arg(&key).arg("MINID").arg("~").arg(oldest.0.max(0));
        let mut groups = redis::cmd("XINFO");
        groups.arg("GROUPS").arg(&key);
        let mut answers = self.redis.query_all(&[trim, groups]).await?.into_iter();
        let _ = answers.next();
        let Some(Value::Array(groups)) = answers.next() else {
            return Ok(0);
        };
        // Each group: a flat list or a map of its fields; ours counts what it has
        // pending (taken, not done) and its lag (not yet taken).
        for g in groups {
            let pairs: Vec<(Value, Value)> = match g {
                Value::Map(m) => m,
                Value::Array(a) => {
                    let mut it = a.into_iter();
                    let mut out = Vec::new();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        out.push((k, v));
                    }
                    out
                }
                _ => continue,
            };
            let field = |name: &str| {
                pairs.iter().find_map(|(k, v)| {
                    (super::record::text(k.clone()).ok()? == name).then(|| v.clone())
                })
            };
            if field("name")
                .and_then(|v| super::record::text(v).ok())
                .as_deref()
                != Some(GROUP)
            {
                continue;
            }
            let int = |v: Option<Value>| match v {
                Some(Value::Int(i)) => u64::try_from(i).unwrap_or(0),
                _ => 0,
            };
            return Ok(int(field("pending")) + int(field("lag")));
        }
        Ok(0)
    }
}
