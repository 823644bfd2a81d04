//! Where events go: one seam, [`EventSink`], so that the engine and delivery say
//! what happened once and each sink (metrics, the audit trail, webhooks) takes it.
//! [`Fanout`] hands one event to several sinks; [`Counted`] counts them by type; [`Recorder`] is the fake that keeps
//! them for tests.

use std::sync::Arc;

use parking_lot::Mutex;

use super::{Event, EventKind};

/// Takes events as they happen. It must not block or fail the caller: a sink that
/// writes or sends hands the event on (a bounded queue of its own) and counts what
/// it could not take.
pub trait EventSink: Send + Sync + 'static {
    fn emit(&self, event: &Event);

    /// Whether anything takes events: an event that costs a store read to make is
    /// not made for nobody.
    fn listening(&self) -> bool {
        true
    }

    /// `kind` happened, where nothing is [`EventSink::listening`]: for sinks that
    /// keep only counts. A caller with an event cheap to make may count it this
    /// way instead of making it: a `verification.sent` built for the counter alone
    /// cost each live verification 40 resident bytes, its short-lived strings
    /// scattered among the store's long-lived ones.
    fn count(&self, _kind: EventKind) {}
}

/// Every sink in turn.
#[derive(Clone, Default)]
pub struct Fanout(Vec<Arc<dyn EventSink>>);

impl Fanout {
    pub fn new(sinks: Vec<Arc<dyn EventSink>>) -> Fanout {
        Fanout(sinks)
    }
}

impl EventSink for Fanout {
    fn emit(&self, event: &Event) {
        for sink in &self.0 {
            sink.emit(event);
        }
    }

    fn listening(&self) -> bool {
        self.0.iter().any(|s| s.listening())
    }

    fn count(&self, kind: EventKind) {
        for sink in &self.0 {
            sink.count(kind);
        }
    }
}

/// Counts events by type in `otpd_events_total{type}`.
pub struct Counted {
    counters: [metrics::Counter; EventKind::ALL.len()],
}

impl Default for Counted {
    fn default() -> Self {
        Counted {
            counters: EventKind::ALL
                .map(|k| metrics::counter!("otpd_events_total", "type" => k.as_str())),
        }
    }
}

impl EventSink for Counted {
    fn emit(&self, event: &Event) {
        self.count(event.kind);
    }

    fn count(&self, kind: EventKind) {
        let i = EventKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is in ALL");
        self.counters[i].increment(1);
    }

    /// Counts the events made for others: none is worth a store read of its own.
    fn listening(&self) -> bool {
        false
    }
}

/// Keeps every event, for tests to read (at most `cap`; the oldest go first).
pub struct Recorder {
    events: Mutex<std::collections::VecDeque<Event>>,
    cap: usize,
}

impl Recorder {
    pub fn new(cap: usize) -> Recorder {
        Recorder {
            events: Mutex::new(Default::default()),
            cap: cap.max(1),
        }
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().iter().cloned().collect()
    }
}

impl EventSink for Recorder {
    fn emit(&self, event: &Event) {
        let mut events = self.events.lock();
        if events.len() == self.cap {
            events.pop_front();
        }
        events.push_back(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::UnixMillis;
    use crate::events::{EventData, EventKind};

    fn event(kind: EventKind) -> Event {
        Event {
            kind,
            at: UnixMillis(0),
            client: None,
            data: EventData::default(),
        }
    }

    #[test]
    fn a_fanout_hands_each_event_to_every_sink_and_a_recorder_keeps_the_newest() {
        let a = Arc::new(Recorder::new(2));
        let b = Arc::new(Recorder::new(10));
        let fanout = Fanout::new(vec![a.clone(), b.clone()]);
        for kind in [EventKind::Sent, EventKind::Delivered, EventKind::Approved] {
            fanout.emit(&event(kind));
        }
        let kinds = |r: &Recorder| r.events().iter().map(|e| e.kind).collect::<Vec<_>>();
        assert_eq!(kinds(&a), [EventKind::Delivered, EventKind::Approved]);
        assert_eq!(kinds(&b).len(), 3);
        assert!(fanout.listening());
        assert!(!Fanout::default().listening());
    }

    #[test]
    fn an_event_counted_without_being_made_is_counted_as_if_emitted() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let fanout = Fanout::new(vec![Arc::new(Counted::default())]);
            assert!(!fanout.listening(), "a counter alone reads nothing");
            fanout.count(EventKind::Sent);
            fanout.emit(&event(EventKind::Sent));
            fanout.count(EventKind::Approved);
        });
        let text = handle.render();
        assert!(
            text.contains("otpd_events_total{type=\"verification.sent\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("otpd_events_total{type=\"verification.approved\"} 1"),
            "{text}"
        );
    }
}
