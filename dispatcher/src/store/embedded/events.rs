//! The clients' events on the embedded store: a [`MemoryLog`] that writes each
//! event, and each batch of events done, to a journal of its own
//! (`<store.path>/events/`), and is read back from it at start — so that a restart
//! sends a webhook what it had not taken, and `GET /v1/events` still has the day.
//!
//! Events are appended without waiting for the disk: the request that caused one
//! waited for its verification's own record, and the event follows it, gathered
//! with the others of the next [`LINGER`]. They are written to the operating system but not flushed
//! to the device (`Sync::Write`, whatever `store.sync` says): they survive otpd
//! being killed, and a power cut can lose the last moments' events. Flushing them
//! too doubled the flushes of the verification journal beside them and cost about
//! a third of the delivered rate at the national peak. Segments go once every event
//! in them is past `webhooks.retry_for`.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::DataDirError;
use super::frame::{self, Record};
use super::journal::{Journal, Sync};
use crate::domain::clock::UnixMillis;
use crate::store::events::{EventDisk, EventId, KeptEvent, MemoryLog, NewEvent};

/// A waiter never waits on this journal; the limit only bounds a shutdown's flush.
const WAIT_LIMIT: Duration = Duration::from_secs(5);
/// Events are written together, at most this often: one wake-up of the journal's
/// writer per batch rather than per event (see [`Journal::open`]).
const LINGER: Duration = Duration::from_millis(20);

struct JournalEvents {
    journal: Journal,
    /// The latest time seen, for retiring spent segments.
    now: AtomicI64,
    retention: Duration,
}

impl EventDisk for JournalEvents {
    fn appended(&self, client: &str, id: EventId, event: &NewEvent, retain_until: UnixMillis) {
        self.journal.append_lazily(retain_until, |out| {
            frame::put_event(
                out,
                client,
                (id.ms, id.seq),
                event.order,
                event.at,
                retain_until,
                &event.payload,
            );
        });
        let before = self.now.fetch_max(event.at.0, Ordering::Relaxed);
        if event.at.0 > before {
            self.journal
                .retire_before(UnixMillis(event.at.0).minus(self.retention));
        }
    }

    fn done(&self, client: &str, ids: &[EventId], retain_until: UnixMillis) {
        let ids: Vec<(u64, u64)> = ids.iter().map(|i| (i.ms, i.seq)).collect();
        self.journal.append_lazily(retain_until, |out| {
            frame::put_events_done(out, client, retain_until, &ids);
        });
    }
}

/// The clients' event log kept in `data/events`, read back at `now`.
pub fn open_event_log(
    data: &Path,
    now: UnixMillis,
    keep: usize,
    retention: Duration,
) -> Result<MemoryLog, DataDirError> {
    let (journal, replayed) =
        Journal::open(&data.join("events"), Sync::Write, now, WAIT_LIMIT, LINGER)?;
    let log = MemoryLog::new(keep, retention);
    let mut restored = 0usize;
    for record in replayed.events {
        match record {
            Record::Event {
                client,
                id,
                order,
                at,
                payload,
                ..
            } => {
                let event = KeptEvent {
                    id: EventId {
                        ms: id.0,
                        seq: id.1,
                    },
                    order,
                    at,
                    payload: payload.into(),
                };
                log.restore(&client, event, false);
                restored += 1;
            }
            Record::EventsDone { client, ids, .. } => {
                for (ms, seq) in ids {
                    log.restore_done(&client, EventId { ms, seq });
                }
            }
            _ => {}
        }
    }
    if restored > 0 {
        tracing::info!(events = restored, "clients' events read back");
    }
    Ok(log.on_disk(Box::new(JournalEvents {
        journal,
        now: AtomicI64::new(now.0),
        retention,
    })))
}
