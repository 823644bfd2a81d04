//! The SMPP message directory in Redis: every node's carriers note what they
//! submitted, so that a receipt the SMSC sends to another node finds its
//! verification (see [`otpd_adapters::smpp::directory`]).
//!
//! Notes of concurrent submits go through a bounded in-process queue to one writer
//! that sends them in batches — one pipelined round trip for many notes on a single
//! server; on a cluster, where the notes of a batch live on many slots, one `SET`
//! each, all in flight at once — and tells each submit when its note is written. A lookup is one `GET` (up to three
//! when the id may be read in the other base too).

use std::time::Duration;

use async_trait::async_trait;
use otpd_adapters::smpp::directory::{DirectoryError, MessageDirectory, Noted, lookup_keys};
use tokio::sync::mpsc;

use super::conn::{Redis, unavailable};
use super::keys::Keys;

/// Notes waiting for the writer; past this many, new notes are refused (and
/// counted): Redis is then too slow or away, and the submits go on regardless.
const BACKLOG: usize = 65_536;
/// Most notes in one batch.
const BATCH: usize = 512;

pub struct RedisDirectory {
    redis: Redis,
    keys: Keys,
    notes: mpsc::Sender<Note>,
}

struct Note {
    key: String,
    value: String,
    keep: Duration,
    written: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl RedisDirectory {
    /// Start the writer; it ends when the directory is dropped.
    pub fn start(redis: Redis, keys: Keys) -> Self {
        let (notes, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(write_notes(redis.clone(), rx));
        Self { redis, keys, notes }
    }
}

async fn write_notes(redis: Redis, mut rx: mpsc::Receiver<Note>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let result = write(&redis, &batch).await.map_err(|e| e.to_string());
        if result.is_err() {
            metrics::counter!("otpd_smpp_directory_notes_lost_total").increment(batch.len() as u64);
        }
        for note in batch.drain(..) {
            let _ = note.written.send(result.clone());
        }
    }
}

async fn write(redis: &Redis, batch: &[Note]) -> Result<(), crate::store::StoreError> {
    let sets: Vec<redis::Cmd> = batch
        .iter()
        .map(|n| {
            let mut c = redis::cmd("SET");
            c.arg(&n.key)
                .arg(&n.value)
                .arg("PX")
                .arg(n.keep.as_millis().max(1) as u64);
            c
        })
        .collect();
    redis.run_all(&sets).await
}

#[async_trait]
impl MessageDirectory for RedisDirectory {
    async fn note(
        &self,
        carrier: &str,
        message: Noted,
        keep: Duration,
    ) -> Result<(), DirectoryError> {
        let value = message.encode();
        let mut waits = Vec::with_capacity(message.ids.len());
        for id in &message.ids {
            let (written, wait) = tokio::sync::oneshot::channel();
            let note = Note {
                key: self.keys.message(carrier, id),
                value: value.clone(),
                keep,
                written,
            };
            if self.notes.try_send(note).is_err() {
                metrics::counter!("otpd_smpp_directory_notes_lost_total").increment(1);
                return Err(DirectoryError("too many notes waiting".into()));
            }
            waits.push(wait);
        }
        for wait in waits {
            wait.await
                .map_err(|_| DirectoryError("the writer stopped".into()))?
                .map_err(DirectoryError)?;
        }
        Ok(())
    }

    async fn find(
        &self,
        carrier: &str,
        message_id: &str,
        other_base: bool,
    ) -> Result<Option<Noted>, DirectoryError> {
        let mut conn = self
            .redis
            .conn()
            .await
            .map_err(|e| DirectoryError(e.to_string()))?;
        for id in lookup_keys(message_id, other_base) {
            let found: Option<String> = redis::cmd("GET")
                .arg(self.keys.message(carrier, &id))
                .query_async(&mut conn)
                .await
                .map_err(|e| DirectoryError(unavailable(e).to_string()))?;
            if let Some(noted) = found.as_deref().and_then(Noted::decode) {
                return Ok(Some(noted));
            }
        }
        Ok(None)
    }

    /// Every key of every receipt in one pipeline (one round trip on one server).
    async fn find_many(
        &self,
        carrier: &str,
        message_ids: &[String],
        other_base: bool,
    ) -> Result<Vec<Option<Noted>>, DirectoryError> {
        let keys: Vec<Vec<String>> = message_ids
            .iter()
            .map(|id| lookup_keys(id, other_base))
            .collect();
        let commands: Vec<redis::Cmd> = keys
            .iter()
            .flatten()
            .map(|id| {
                let mut get = redis::cmd("GET");
                get.arg(self.keys.message(carrier, id));
                get
            })
            .collect();
        let mut answers = self
            .redis
            .query_all(&commands)
            .await
            .map_err(|e| DirectoryError(e.to_string()))?
            .into_iter();
        Ok(keys
            .iter()
            .map(|readings| {
                let mut found = None;
                for _ in readings {
                    let answer = answers.next();
                    if found.is_none()
                        && let Some(redis::Value::BulkString(bytes)) = answer
                    {
                        found = std::str::from_utf8(&bytes).ok().and_then(Noted::decode);
                    }
                }
                found
            })
            .collect())
    }
}
