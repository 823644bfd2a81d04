//! The sink that keeps clients' events in their [`EventLog`], for their webhooks and
//! `GET /v1/events`.
//!
//! [`Feed::emit`] runs on the request path, so it only hands a copy of the event
//! to a bounded queue; a writer task, on the events' own thread, serialises what
//! gathered over [`LINGER`] and appends it to the log in batches (one round trip on
//! Redis, one journal append on the embedded store). A
//! queue that is full — the log cannot keep up — loses the event and counts it
//! (`otpd_events_dropped_total`) rather than hold a request.

use std::collections::HashSet;
use std::hash::Hasher;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Event, EventSink, payload};
use crate::domain::name::Name;
use crate::store::events::{EventLog, NewEvent};

/// Events waiting for the writer, at most.
const QUEUE: usize = 65_536;
/// Events appended to the log in one call, at most.
const BATCH: usize = 1024;
/// After a batch short of [`BATCH`], the writer lets events gather this long: at
/// the national peak waking for each event cost the events' thread some 10 000
/// context switches a second; gathered, it wakes ~100 times.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

pub struct Feed {
    /// The clients whose events are kept (those with a webhook, or that read
    /// `GET /v1/events`).
    clients: HashSet<Name>,
    queue: mpsc::Sender<(Name, Event)>,
}

impl Feed {
    /// A feed into `log` for `clients`, with its writer task on `on` (it ends once
    /// the feed is dropped and what was queued is written).
    pub fn start(
        log: Arc<dyn EventLog>,
        clients: impl IntoIterator<Item = Name>,
        on: &tokio::runtime::Handle,
    ) -> Feed {
        let (tx, rx) = mpsc::channel(QUEUE);
        on.spawn(write(log, rx));
        Feed {
            clients: clients.into_iter().collect(),
            queue: tx,
        }
    }
}

/// The key that keeps a verification's events in order: its id, hashed the same
/// on every node.
pub fn order_key(event: &Event) -> u64 {
    let mut h = siphasher::sip::SipHasher13::new();
    match (&event.data.verification_id, &event.data.subject) {
        (Some(id), _) => h.write(id.as_bytes()),
        (None, Some(subject)) => h.write(subject.as_bytes()),
        (None, None) => {}
    }
    h.finish()
}

impl EventSink for Feed {
    fn emit(&self, event: &Event) {
        let Some(client) = event.client.filter(|c| self.clients.contains(c)) else {
            return;
        };
        if self.queue.try_send((client, event.clone())).is_err() {
            metrics::counter!("otpd_events_dropped_total").increment(1);
        }
    }

    fn listening(&self) -> bool {
        !self.clients.is_empty()
    }
}

async fn write(log: Arc<dyn EventLog>, mut rx: mpsc::Receiver<(Name, Event)>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let events: Vec<NewEvent> = batch
            .drain(..)
            .map(|(client, event)| NewEvent {
                client,
                order: order_key(&event),
                at: event.at,
                payload: payload(&event).into(),
            })
            .collect();
        let n = events.len();
        if let Err(e) = log.append(events).await {
            metrics::counter!("otpd_events_dropped_total").increment(n as u64);
            tracing::warn!(error = %e, lost = n, "cannot keep clients' events");
        }
        if n < BATCH {
            tokio::time::sleep(LINGER).await;
        }
    }
}
