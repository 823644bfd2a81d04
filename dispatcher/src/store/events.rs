//! The clients' event logs: what each API client's webhook is sent, and what
//! `GET /v1/events` reads back when its backend was down.
//!
//! An [`EventLog`] keeps a client's events in the order they were appended, each
//! under an [`EventId`] the log gives it, until its retention ends. A deliverer
//! [`EventLog::take`]s the events not yet handed out and marks them
//! [`EventLog::done`] once its webhook took them (or gave up on them): after a
//! restart, what was taken but not done is handed out again — at least once.
//!
//! The log keeps an event's JSON without its id ([`NewEvent::payload`]: `{"type",
//! "created_at", "data"}`) and splices the id in when it is read
//! ([`KeptEvent::body`]), because on Redis the id is the stream's, known only once
//! the event is written.
//!
//! [`MemoryLog`] keeps them in memory (the `memory` store), and on disk too when it
//! is given an [`EventDisk`] (the embedded store's journal); the Redis log is in
//! [`super::redis::events`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::StoreError;
use crate::domain::clock::UnixMillis;
use crate::domain::name::Name;

/// An event's place in its client's log: the millisecond it was appended at and a
/// sequence within it, written `evt_<ms>-<seq>` (Redis streams' ids, prefixed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    /// The next id after `self` at `now`: `now`'s first if the clock moved on,
    /// else the next in `self`'s millisecond (a clock that went back does not
    /// reorder the log).
    pub fn next(self, now: UnixMillis) -> EventId {
        let ms = u64::try_from(now.0).unwrap_or(0);
        if ms > self.ms {
            EventId { ms, seq: 0 }
        } else {
            EventId {
                ms: self.ms,
                seq: self.seq + 1,
            }
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "evt_{}-{}", self.ms, self.seq)
    }
}

/// Why a text is not an event id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event id is evt_<milliseconds>-<sequence>, as events carry it")]
pub struct BadEventId;

impl FromStr for EventId {
    type Err = BadEventId;

    fn from_str(s: &str) -> Result<EventId, BadEventId> {
        let rest = s.strip_prefix("evt_").ok_or(BadEventId)?;
        let (ms, seq) = rest.split_once('-').ok_or(BadEventId)?;
        let num = |t: &str| {
            if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadEventId);
            }
            t.parse::<u64>().map_err(|_| BadEventId)
        };
        Ok(EventId {
            ms: num(ms)?,
            seq: num(seq)?,
        })
    }
}

/// An event to keep for `client`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub client: Name,
    /// Events with the same key are delivered in order (a verification's id hashed).
    pub order: u64,
    pub at: UnixMillis,
    /// The event's JSON object without its id.
    pub payload: Bytes,
}

/// An event as a log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptEvent {
    pub id: EventId,
    pub order: u64,
    pub at: UnixMillis,
    pub payload: Bytes,
}

impl KeptEvent {
    /// The JSON body as webhooks and `GET /v1/events` give it: the payload with
    /// `"id"` first.
    pub fn body(&self) -> Vec<u8> {
        let id = self.id.to_string();
        let rest = self.payload.strip_prefix(b"{").unwrap_or(&self.payload);
        let mut out = Vec::with_capacity(self.payload.len() + id.len() + 8);
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(id.as_bytes());
        out.push(b'"');
        if rest != b"}" {
            out.push(b',');
        }
        out.extend_from_slice(rest);
        out
    }
}

/// Where clients' events are kept.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Keep `events`, each at the end of its client's log, in the order given.
    async fn append(&self, events: Vec<NewEvent>) -> Result<(), StoreError>;

    /// `client`'s events after `after`, oldest first, at most `limit`.
    async fn after(
        &self,
        client: &str,
        after: EventId,
        limit: usize,
    ) -> Result<Vec<KeptEvent>, StoreError>;

    /// Up to `limit` of `client`'s events to deliver that were not handed out yet
    /// (after a restart: every one not done), waiting up to `wait` for one to come.
    async fn take(
        &self,
        client: &str,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<KeptEvent>, StoreError>;

    /// `client`'s webhook took these (or they were given up): never handed out again.
    async fn done(&self, client: &str, ids: &[EventId]) -> Result<(), StoreError>;

    /// How many of `client`'s events are not done.
    async fn backlog(&self, client: &str) -> Result<u64, StoreError>;

    /// Events never handed out because the log was full and let them go (the
    /// oldest first), since start.
    fn dropped(&self) -> u64 {
        0
    }
}

/// What [`MemoryLog`] writes through to, so that a restart finds its events again.
pub trait EventDisk: Send + Sync + 'static {
    /// An event appended under `id` (its retention ends at `retain_until`).
    fn appended(&self, client: &str, id: EventId, event: &NewEvent, retain_until: UnixMillis);
    /// Events of `client` done.
    fn done(&self, client: &str, ids: &[EventId], retain_until: UnixMillis);
}

/// The logs in memory: a bounded deque per client.
pub struct MemoryLog {
    clients: Mutex<HashMap<Name, ClientLog>>,
    /// At most this many events per client; past it the oldest go.
    keep: usize,
    retention: Duration,
    dropped: AtomicU64,
    disk: Option<Box<dyn EventDisk>>,
}

struct ClientLog {
    events: VecDeque<Entry>,
    last: EventId,
    /// Events up to this one were handed out.
    taken: EventId,
    undone: u64,
    arrived: Arc<Notify>,
}

struct Entry {
    event: KeptEvent,
    done: bool,
}

impl Default for ClientLog {
    fn default() -> Self {
        ClientLog {
            events: VecDeque::new(),
            last: EventId::default(),
            taken: EventId::default(),
            undone: 0,
            arrived: Arc::new(Notify::new()),
        }
    }
}

impl MemoryLog {
    pub fn new(keep: usize, retention: Duration) -> MemoryLog {
        MemoryLog {
            clients: Mutex::new(HashMap::new()),
            keep: keep.max(1),
            retention,
            dropped: AtomicU64::new(0),
            disk: None,
        }
    }

    /// Write every change through to `disk`.
    pub fn on_disk(mut self, disk: Box<dyn EventDisk>) -> MemoryLog {
        self.disk = Some(disk);
        self
    }

    /// Put back an event read from disk at start (in id order per client).
    pub fn restore(&self, client: &str, event: KeptEvent, done: bool) {
        let mut clients = self.clients.lock();
        let log = clients.entry(client.into()).or_default();
        log.last = log.last.max(event.id);
        if !done {
            log.undone += 1;
        }
        log.events.push_back(Entry { event, done });
    }

    /// Mark done an event read from disk at start.
    pub fn restore_done(&self, client: &str, id: EventId) {
        let mut clients = self.clients.lock();
        if let Some(log) = clients.get_mut(client) {
            mark_done(log, &[id]);
        }
    }

    fn retain_until(&self, at: UnixMillis) -> UnixMillis {
        at.plus(self.retention)
    }

    /// Let go of what is past its retention or over the bound, from the front.
    fn trim(&self, log: &mut ClientLog, now: UnixMillis) {
        while let Some(front) = log.events.front() {
            let old = self.retain_until(front.event.at) <= now;
            if !old && log.events.len() <= self.keep {
                break;
            }
            let gone = log.events.pop_front().expect("front");
            if !gone.done {
                log.undone -= 1;
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn mark_done(log: &mut ClientLog, ids: &[EventId]) -> bool {
    let mut any = false;
    for id in ids {
        if let Ok(i) = log.events.binary_search_by_key(id, |e| e.event.id) {
            let e = &mut log.events[i];
            if !e.done {
                e.done = true;
                log.undone -= 1;
                any = true;
            }
        }
    }
    any
}

#[async_trait]
impl EventLog for MemoryLog {
    async fn append(&self, events: Vec<NewEvent>) -> Result<(), StoreError> {
        let mut clients = self.clients.lock();
        for event in events {
            let log = clients.entry(event.client).or_default();
            let id = log.last.next(event.at);
            log.last = id;
            if let Some(disk) = &self.disk {
                disk.appended(&event.client, id, &event, self.retain_until(event.at));
            }
            log.events.push_back(Entry {
                event: KeptEvent {
                    id,
                    order: event.order,
                    at: event.at,
                    payload: event.payload,
                },
                done: false,
            });
            log.undone += 1;
            self.trim(log, event.at);
            log.arrived.notify_one();
        }
        Ok(())
    }

    async fn after(
        &self,
        client: &str,
        after: EventId,
        limit: usize,
    ) -> Result<Vec<KeptEvent>, StoreError> {
        let clients = self.clients.lock();
        let Some(log) = clients.get(client) else {
            return Ok(Vec::new());
        };
        let start = log.events.partition_point(|e| e.event.id <= after);
        Ok(log
            .events
            .range(start..)
            .take(limit)
            .map(|e| e.event.clone())
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
            let arrived = {
                let mut clients = self.clients.lock();
                let log = clients.entry(client.into()).or_default();
                let start = log.events.partition_point(|e| e.event.id <= log.taken);
                let out: Vec<KeptEvent> = log
                    .events
                    .range(start..)
                    .filter(|e| !e.done)
                    .take(limit)
                    .map(|e| e.event.clone())
                    .collect();
                if let Some(last) = out.last() {
                    log.taken = last.id;
                    return Ok(out);
                }
                log.arrived.clone()
            };
            let notified = arrived.notified();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn done(&self, client: &str, ids: &[EventId]) -> Result<(), StoreError> {
        let mut clients = self.clients.lock();
        if let Some(log) = clients.get_mut(client)
            && mark_done(log, ids)
            && let Some(disk) = &self.disk
        {
            let last = ids.iter().max().copied().unwrap_or_default();
            let at = UnixMillis(i64::try_from(last.ms).unwrap_or(i64::MAX));
            disk.done(client, ids, self.retain_until(at));
        }
        Ok(())
    }

    async fn backlog(&self, client: &str) -> Result<u64, StoreError> {
        Ok(self.clients.lock().get(client).map_or(0, |l| l.undone))
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(client: &str, order: u64, at: i64) -> NewEvent {
        NewEvent {
            client: client.into(),
            order,
            at: UnixMillis(at),
            payload: Bytes::from(format!("{{\"type\":\"t\",\"n\":{order}}}")),
        }
    }

    #[test]
    fn ids_read_back_as_written_and_refuse_anything_else() {
        let id = EventId { ms: 1_700, seq: 3 };
        assert_eq!(id.to_string(), "evt_1700-3");
        assert_eq!("evt_1700-3".parse::<EventId>(), Ok(id));
        for bad in [
            "",
            "evt_",
            "1700-3",
            "evt_17x-3",
            "evt_1-",
            "evt_-1",
            "evt_1-2-3",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad}");
        }
        // A clock that went back keeps the order.
        assert_eq!(id.next(UnixMillis(1_000)), EventId { ms: 1_700, seq: 4 });
        assert_eq!(id.next(UnixMillis(1_800)), EventId { ms: 1_800, seq: 0 });
    }

    #[test]
    fn the_body_has_its_id_first() {
        let e = KeptEvent {
            id: EventId { ms: 5, seq: 1 },
            order: 0,
            at: UnixMillis(5),
            payload: Bytes::from_static(b"{\"type\":\"x\"}"),
        };
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v, serde_json::json!({"id": "evt_5-1", "type": "x"}));
    }

    #[tokio::test]
    async fn events_are_taken_once_read_back_in_order_and_counted_until_done() {
        let log = MemoryLog::new(100, Duration::from_secs(3600));
        log.append(vec![
            event("a", 1, 10),
            event("b", 2, 10),
            event("a", 3, 11),
        ])
        .await
        .unwrap();
        let taken = log.take("a", 10, Duration::ZERO).await.unwrap();
        assert_eq!(taken.iter().map(|e| e.order).collect::<Vec<_>>(), [1, 3]);
        assert!(log.take("a", 10, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(log.backlog("a").await.unwrap(), 2);
        log.done("a", &[taken[0].id]).await.unwrap();
        assert_eq!(log.backlog("a").await.unwrap(), 1);
        // Reading back is for everything kept, done or not, after an id.
        let all = log.after("a", EventId::default(), 10).await.unwrap();
        assert_eq!(all.len(), 2);
        let rest = log.after("a", all[0].id, 10).await.unwrap();
        assert_eq!(rest, &all[1..]);
        // Another client's events are its own.
        assert_eq!(
            log.after("b", EventId::default(), 10).await.unwrap().len(),
            1
        );
    }

    #[tokio::test]
    async fn a_take_waits_for_the_next_event() {
        let log = Arc::new(MemoryLog::new(100, Duration::from_secs(3600)));
        let waiting = tokio::spawn({
            let log = log.clone();
            async move { log.take("a", 10, Duration::from_secs(10)).await.unwrap() }
        });
        tokio::task::yield_now().await;
        log.append(vec![event("a", 7, 10)]).await.unwrap();
        assert_eq!(waiting.await.unwrap()[0].order, 7);
    }

    #[tokio::test]
    async fn past_its_bound_the_oldest_go_and_are_counted() {
        let log = MemoryLog::new(2, Duration::from_secs(3600));
        for n in 0..5 {
            log.append(vec![event("a", n, 10 + n as i64)])
                .await
                .unwrap();
        }
        let kept = log.after("a", EventId::default(), 10).await.unwrap();
        assert_eq!(kept.iter().map(|e| e.order).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(log.dropped(), 3);
        assert_eq!(log.backlog("a").await.unwrap(), 2);
    }

    #[tokio::test]
    async fn events_past_their_retention_go() {
        let log = MemoryLog::new(100, Duration::from_millis(100));
        log.append(vec![event("a", 1, 0)]).await.unwrap();
        log.append(vec![event("a", 2, 1_000)]).await.unwrap();
        let kept = log.after("a", EventId::default(), 10).await.unwrap();
        assert_eq!(kept.iter().map(|e| e.order).collect::<Vec<_>>(), [2]);
    }
}
