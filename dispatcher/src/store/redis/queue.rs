//! The delivery queue on Redis Streams: one stream per partition (in the slot of
//! the verifications it carries, so that the store's scripts append a job in the
//! same step as they record the send), one consumer group `otpd`, one consumer per
//! node.
//!
//! Any node's workers take any node's jobs. A job is acknowledged and deleted in the
//! same step as its answer is recorded, so a stream holds only jobs not yet
//! answered; its length is bounded by refusing new requests (503) when full, never
//! by trimming (`MAXLEN` on Redis 7 would drop jobs nobody has answered). A node that
//! dies leaves its jobs pending in the group: the others claim them once they have
//! been idle for `redis.claim_after` (`XAUTOCLAIM`), and the send's owner mark
//! ([`crate::store::Store::take_send`]) keeps a claimed job from going out twice.
//! A live node keeps the jobs it holds (waiting for a worker, or being sent,
//! however long its retries take) from looking idle: it re-claims them for itself
//! (`XCLAIM … JUSTID`, which resets their idle time) every third of `claim_after`.
//! It reads no more than `prefetch` jobs ahead of its workers, so that the others
//! get their share.
//!
//! Jobs carry the code sealed (as the verification does); the node that sends it
//! unseals it with the shared server secret.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use futures_util::future::join_all;
use redis::Value;
use tokio::sync::watch;

use super::conn::{Redis, unavailable};
use super::keys::Keys;
use super::record::{channel_kind, text};
use crate::domain::clock::UnixMillis;
use crate::domain::locale::Locale;
use crate::domain::name::Name;
use crate::domain::verification::{Challenge, MatchCode};
use crate::numbers::e164::E164;
use crate::secrets::code::{CodeKeys, CodeLength, SealedCode};
use crate::secrets::id::VerificationId;
use crate::store::jobs::{DeliveryJob, DeliveryQueue};
use crate::store::{Hold, JobReceipt, StoreError};

pub const GROUP: &str = "otpd";

/// Takes jobs from the streams into this node's bounded in-process queue, where
/// its workers pick them up.
pub struct StreamConsumer {
    pub redis: Redis,
    pub keys: Keys,
    /// Turns entries into jobs held by this node.
    pub reader: Arc<JobReader>,
    /// How long a job may sit unanswered with another node before it is claimed.
    pub claim_after: Duration,
    /// Most jobs read ahead of the workers (waiting in the node's queue).
    pub prefetch: usize,
}

/// Turns stream entries into this node's delivery jobs, and keeps count of the jobs
/// the node holds (so that it can keep them from looking idle). Shared by the
/// consumer, which reads jobs, and the store, which is handed the job of a request
/// this node accepted in the same step as it queues it.
pub struct JobReader {
    /// This node's consumer name (also its workers' name for `take_send`).
    pub name: Arc<str>,
    pub codes: CodeKeys,
    /// Purposes whose push is acknowledged by the provider's acceptance.
    pub provider_ack: HashMap<Box<str>, bool>,
    /// The jobs this node has: stream → entry → how many copies it holds.
    pub held: Arc<Held>,
}

/// See [`JobReader::held`].
#[derive(Default)]
pub struct Held(Mutex<HashMap<String, HashMap<String, usize>>>);

impl Held {
    fn hold(self: &Arc<Self>, stream: &str, entry: &str) -> Hold {
        *self
            .0
            .lock()
            .entry(stream.to_owned())
            .or_default()
            .entry(entry.to_owned())
            .or_default() += 1;
        let (this, stream, entry) = (self.clone(), stream.to_owned(), entry.to_owned());
        Hold::new(move || {
            let mut held = this.0.lock();
            if let Some(entries) = held.get_mut(&stream) {
                if let Some(n) = entries.get_mut(&entry) {
                    *n -= 1;
                    if *n == 0 {
                        entries.remove(&entry);
                    }
                }
                if entries.is_empty() {
                    held.remove(&stream);
                }
            }
        })
    }

    /// Stream → entries held now.
    fn snapshot(&self) -> Vec<(String, Vec<String>)> {
        self.0
            .lock()
            .iter()
            .map(|(s, e)| (s.clone(), e.keys().cloned().collect()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.0.lock().values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("delivery job: {what}"))
}

impl StreamConsumer {
    fn streams(&self) -> Vec<String> {
        (0..self.keys.partitions())
            .map(|p| self.keys.stream(p))
            .collect()
    }

    /// Make the group on every stream (and the stream, if new); an existing group
    /// is left as it is.
    pub async fn prepare(&self) -> Result<(), StoreError> {
        let mut conn = self.redis.conn().await?;
        for stream in self.streams() {
            let r: Result<Value, _> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match r {
                Ok(_) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }

    /// Move jobs into `queue` until `stop`; then return (jobs read but not yet
    /// taken stay pending in Redis, for this node after a restart or for another).
    pub async fn run(self, queue: DeliveryQueue, mut stop: watch::Receiver<bool>) {
        let mut idle = Duration::from_millis(1);
        let mut prepared = false;
        let mut last_claim = tokio::time::Instant::now();
        let mut last_refresh = tokio::time::Instant::now();
        while !*stop.borrow() {
            let room = queue
                .capacity()
                .min(self.prefetch.max(1))
                .saturating_sub(queue.depth())
                .min(256);
            let work = async {
                if !prepared {
                    self.prepare().await?;
                    prepared = true;
                }
                if last_refresh.elapsed() >= self.claim_after / 3 {
                    last_refresh = tokio::time::Instant::now();
                    self.refresh().await?;
                }
                if room == 0 {
                    return Ok(Vec::new());
                }
                let mut jobs = if last_claim.elapsed() >= self.claim_after / 4 {
                    last_claim = tokio::time::Instant::now();
                    self.claim(room).await?
                } else {
                    Vec::new()
                };
                if jobs.len() < room {
                    jobs.extend(self.read(room - jobs.len()).await?);
                }
                Ok::<_, StoreError>(jobs)
            };
            let jobs = match work.await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the delivery streams");
                    Vec::new()
                }
            };
            if jobs.is_empty() {
                // Nothing to do (or no room, or Redis away): back off up to 20 ms.
                tokio::select! {
                    () = tokio::time::sleep(idle) => {}
                    _ = stop.changed() => {}
                }
                idle = (idle * 2).min(Duration::from_millis(20));
                continue;
            }
            idle = Duration::from_millis(1);
            for job in jobs {
                if queue.send(job).await.is_err() {
                    return; // shutting down: the job stays pending
                }
            }
        }
    }

    /// New jobs, up to `count`, from every stream.
    async fn read(&self, count: usize) -> Result<Vec<DeliveryJob>, StoreError> {
        let streams = self.streams();
        let replies: Vec<Result<Value, StoreError>> = if self.redis.is_cluster() {
            // One slot per stream: one command each, all at once.
            let per = count.div_ceil(streams.len()).max(1);
            join_all(
                streams
                    .iter()
                    .map(|s| self.xreadgroup(std::slice::from_ref(s), per)),
            )
            .await
        } else {
            vec![self.xreadgroup(&streams, count).await]
        };
        let mut jobs = Vec::new();
        for reply in replies {
            for (stream, entries) in parse_read(reply?)? {
                for (entry, fields) in entries {
                    jobs.push(self.reader.job(&stream, entry, fields, false)?);
                }
            }
        }
        Ok(jobs)
    }

    async fn xreadgroup(&self, streams: &[String], count: usize) -> Result<Value, StoreError> {
        let mut conn = self.redis.conn().await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&*self.reader.name)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(streams);
        for _ in streams {
            cmd.arg(">");
        }
        cmd.query_async(&mut conn).await.map_err(unavailable)
    }

    /// Reset the idle time of every job this node holds, so that nobody claims it.
    async fn refresh(&self) -> Result<(), StoreError> {
        let held = self.reader.held.snapshot();
        let claims: Vec<redis::Cmd> = held
            .iter()
            .map(|(stream, entries)| {
                let mut c = redis::cmd("XCLAIM");
                c.arg(stream)
                    .arg(GROUP)
                    .arg(&*self.reader.name)
                    .arg(0)
                    .arg(entries)
                    .arg("JUSTID");
                c
            })
            .collect();
        self.redis.run_all(&claims).await
    }

    /// Jobs other consumers left unanswered for `claim_after`, now this node's.
    async fn claim(&self, count: usize) -> Result<Vec<DeliveryJob>, StoreError> {
        let min_idle = self.claim_after.as_millis() as u64;
        let mut jobs = Vec::new();
        for stream in self.streams() {
            if jobs.len() >= count {
                break;
            }
            let mut conn = self.redis.conn().await?;
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(GROUP)
                .arg(&*self.reader.name)
                .arg(min_idle)
                .arg("0-0")
                .arg("COUNT")
                .arg(count - jobs.len())
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let Value::Array(parts) = reply else {
                return Err(corrupt("XAUTOCLAIM reply"));
            };
            if let Some(entries) = parts.into_iter().nth(1) {
                for (entry, fields) in parse_entries(entries)? {
                    tracing::info!(%stream, %entry, "claimed a job another node left unanswered");
                    jobs.push(self.reader.job(&stream, entry, fields, true)?);
                }
            }
        }
        Ok(jobs)
    }
}

/// When Redis queued an entry: its id is `<unix ms>-<sequence>`, given by the server
/// (`XADD *`). An id of another form (none is made) counts as not having waited.
fn queued_at(entry: &str) -> UnixMillis {
    entry
        .split_once('-')
        .and_then(|(ms, _)| ms.parse().ok())
        .map_or(UnixMillis(i64::MAX), UnixMillis)
}

impl JobReader {
    /// A job from one entry's fields; it counts as held by this node until dropped.
    pub fn job(
        &self,
        stream: &str,
        entry: String,
        f: HashMap<String, String>,
        claimed: bool,
    ) -> Result<DeliveryJob, StoreError> {
        let get = |k: &str| f.get(k).map(String::as_str).ok_or_else(|| corrupt(k));
        let num = |k: &str| -> Result<i64, StoreError> { get(k)?.parse().map_err(|_| corrupt(k)) };
        let id: VerificationId = get("v")?.parse().map_err(|_| corrupt("v"))?;
        let len = CodeLength::new(num("cn")? as u8).ok_or_else(|| corrupt("cn"))?;
        let sealed = SealedCode(get("sc")?.parse().map_err(|_| corrupt("sc"))?);
        let purpose = get("pu")?;
        Ok(DeliveryJob {
            id,
            send: num("n")? as u8,
            to: E164::from_digits_unchecked(num("to")? as u64),
            kind: channel_kind("k", get("k")?)?,
            locale: Locale::parse(get("lo")?).ok_or_else(|| corrupt("lo"))?,
            purpose: Name::new(purpose),
            code: self.codes.unseal(&id, sealed, len),
            expires_at: UnixMillis(num("ex")?),
            subject: f.get("su").map(|s| s.as_str().into()),
            match_code: f
                .get("mc")
                .and_then(|m| m.parse().ok())
                .and_then(MatchCode::new),
            challenge: f.get("cg").and_then(|c| Challenge::parse(c)),
            client: f.get("cl").map(|c| Name::new(c)),
            provider_ack: self.provider_ack.get(purpose).copied().unwrap_or(false),
            queued_at: queued_at(&entry),
            receipt: Some(JobReceipt {
                stream: stream.to_owned(),
                hold: self.held.hold(stream, &entry),
                entry,
                claimed,
            }),
        })
    }

    /// The job of a script's reply `{entry id, {field, value, …}}` (see `hand_over`).
    pub fn handed_over(
        &self,
        stream: &str,
        entry: Value,
    ) -> Result<Option<DeliveryJob>, StoreError> {
        match parse_entries(Value::Array(vec![entry]))?.pop() {
            Some((id, fields)) => self.job(stream, id, fields, false).map(Some),
            None => Ok(None),
        }
    }
}

pub(super) type Entries = Vec<(String, HashMap<String, String>)>;

/// `XREADGROUP`'s reply: per stream, its entries (nil when nothing came).
pub(super) fn parse_read(v: Value) -> Result<Vec<(String, Entries)>, StoreError> {
    let streams = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut it = pair.into_iter();
                    let name = text(it.next().expect("2"))?;
                    Ok((name, parse_entries(it.next().expect("2"))?))
                }
                other => Err(corrupt(format!("stream reply {other:?}"))),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(streams) => streams
            .into_iter()
            .map(|(k, v)| Ok((text(k)?, parse_entries(v)?)))
            .collect::<Result<_, StoreError>>()?,
        other => return Err(corrupt(format!("read reply {other:?}"))),
    };
    Ok(streams)
}

/// A list of `[id, [field, value, …]]`; an entry deleted meanwhile has nil fields
/// and is skipped (its job was answered).
pub(super) fn parse_entries(v: Value) -> Result<Entries, StoreError> {
    let Value::Array(entries) = v else {
        return Err(corrupt("entries"));
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Value::Array(pair) = e else {
            return Err(corrupt("entry"));
        };
        let mut it = pair.into_iter();
        let id = text(it.next().ok_or_else(|| corrupt("entry id"))?)?;
        let fields = match it.next() {
            Some(Value::Array(kv)) => {
                let mut map = HashMap::new();
                let mut kv = kv.into_iter();
                while let (Some(k), Some(v)) = (kv.next(), kv.next()) {
                    map.insert(text(k)?, text(v)?);
                }
                map
            }
            Some(Value::Map(kv)) => kv
                .into_iter()
                .map(|(k, v)| Ok((text(k)?, text(v)?)))
                .collect::<Result<_, StoreError>>()?,
            _ => continue,
        };
        out.push((id, fields));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_id_says_when_redis_queued_it() {
        assert_eq!(queued_at("1764921600123-7"), UnixMillis(1_764_921_600_123));
        assert_eq!(queued_at("nonsense"), UnixMillis(i64::MAX));
    }
}
