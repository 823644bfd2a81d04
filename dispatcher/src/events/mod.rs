//! What happened, as typed events: the engine and delivery say it once
//! ([`EventSink::emit`]), and the sinks — metrics, the audit trail, the clients'
//! webhooks — each take what they need from it.
//!
//! An event carries ids, states, the channel, the carrier, an error class and
//! times. It never carries a code or a contrast value, and the phone number only
//! masked ([`masked`]): events leave otpd (webhooks) and outlive the verification
//! (the audit trail), so they hold nothing a code could be recovered from and
//! nothing more personal than the caller already has.

pub mod audit;
pub mod chain;
pub mod feed;
pub mod lanes;
pub mod sink;
pub mod webhook;

use serde::Serialize;

use crate::domain::clock::UnixMillis;
use crate::domain::name::Name;
use crate::numbers::e164::E164;
use crate::secrets::id::VerificationId;
use otpd_adapters::ChannelKind;

pub use sink::{Counted, EventSink, Fanout, Recorder};

/// The kinds of event, named as webhooks carry them in `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventKind {
    #[serde(rename = "verification.sent")]
    Sent,
    #[serde(rename = "verification.delivered")]
    Delivered,
    #[serde(rename = "verification.undeliverable")]
    Undeliverable,
    #[serde(rename = "verification.escalated")]
    Escalated,
    #[serde(rename = "verification.approved")]
    Approved,
    #[serde(rename = "verification.denied")]
    Denied,
    #[serde(rename = "verification.locked")]
    Locked,
    #[serde(rename = "verification.expired")]
    Expired,
    #[serde(rename = "verification.canceled")]
    Canceled,
    /// A device was removed: its provider called its token dead, or a client
    /// removed it.
    #[serde(rename = "device.removed")]
    DeviceRemoved,
    /// A client registered or replaced a subscriber.
    #[serde(rename = "subscriber.updated")]
    SubscriberUpdated,
    /// A client removed a subscriber.
    #[serde(rename = "subscriber.deleted")]
    SubscriberDeleted,
    /// A client enrolled a device.
    #[serde(rename = "device.added")]
    DeviceAdded,
    /// An admin client had the configuration read again.
    #[serde(rename = "admin.reloaded")]
    ConfigReloaded,
    /// An admin client suspended a carrier: routing passes it over.
    #[serde(rename = "admin.carrier_suspended")]
    CarrierSuspended,
    /// An admin client resumed a suspended carrier.
    #[serde(rename = "admin.carrier_resumed")]
    CarrierResumed,
    /// An admin client gave a subject its wrong-code budget back.
    #[serde(rename = "admin.subject_unlocked")]
    SubjectUnlocked,
    /// An admin client read a subject's recent verifications (masked): reading a
    /// citizen's history is itself on the record.
    #[serde(rename = "admin.subject_looked_up")]
    SubjectLookedUp,
    /// An admin client lifted the pumping defence's judgement on a number's scopes.
    #[serde(rename = "admin.pumping_unblocked")]
    PumpingUnblocked,
}

impl EventKind {
    pub const ALL: [EventKind; 19] = [
        EventKind::Sent,
        EventKind::Delivered,
        EventKind::Undeliverable,
        EventKind::Escalated,
        EventKind::Approved,
        EventKind::Denied,
        EventKind::Locked,
        EventKind::Expired,
        EventKind::Canceled,
        EventKind::DeviceRemoved,
        EventKind::SubscriberUpdated,
        EventKind::SubscriberDeleted,
        EventKind::DeviceAdded,
        EventKind::ConfigReloaded,
        EventKind::CarrierSuspended,
        EventKind::CarrierResumed,
        EventKind::SubjectUnlocked,
        EventKind::SubjectLookedUp,
        EventKind::PumpingUnblocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Sent => "verification.sent",
            EventKind::Delivered => "verification.delivered",
            EventKind::Undeliverable => "verification.undeliverable",
            EventKind::Escalated => "verification.escalated",
            EventKind::Approved => "verification.approved",
            EventKind::Denied => "verification.denied",
            EventKind::Locked => "verification.locked",
            EventKind::Expired => "verification.expired",
            EventKind::Canceled => "verification.canceled",
            EventKind::DeviceRemoved => "device.removed",
            EventKind::SubscriberUpdated => "subscriber.updated",
            EventKind::SubscriberDeleted => "subscriber.deleted",
            EventKind::DeviceAdded => "device.added",
            EventKind::ConfigReloaded => "admin.reloaded",
            EventKind::CarrierSuspended => "admin.carrier_suspended",
            EventKind::CarrierResumed => "admin.carrier_resumed",
            EventKind::SubjectUnlocked => "admin.subject_unlocked",
            EventKind::SubjectLookedUp => "admin.subject_looked_up",
            EventKind::PumpingUnblocked => "admin.pumping_unblocked",
        }
    }
}

/// One event. `client` is whose it is (its webhook and `GET /v1/events`); it is
/// not part of what the client is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub at: UnixMillis,
    pub client: Option<Name>,
    pub data: EventData,
}

/// What an event says, as the webhook's `data`. Absent fields are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_id: Option<String>,
    /// The verification's status after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    /// Which send of the code (1, 2, …) the event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier: Option<Box<str>>,
    /// The number, masked: its country code and last two digits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Box<str>>,
    /// Why, in a word from a fixed set (`push_timeout`, `push_failed`,
    /// `undeliverable`, `too_many_attempts`, `token_dead`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// A device's platform (`device.removed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<&'static str>,
}

impl EventData {
    /// The fields every verification event has.
    pub fn of(id: &VerificationId, to: E164, status: &'static str) -> EventData {
        EventData {
            verification_id: Some(id.to_string()),
            status: Some(status),
            to: Some(masked(to)),
            ..EventData::default()
        }
    }

    pub fn with_channel(mut self, channel: ChannelKind) -> EventData {
        self.channel = Some(channel.as_str());
        self
    }
}

/// `number` with all but its country code and last two digits hidden:
/// `+34*******22`. Enough for a help desk to tell two numbers of one person apart,
/// too little to call anyone.
pub fn masked(number: E164) -> String {
    let digits = number.digits().to_string();
    let cc = number.country_code().map_or(0, |c| c.to_string().len());
    let keep_end = 2.min(digits.len().saturating_sub(cc));
    let hidden = digits.len() - cc - keep_end;
    format!(
        "+{}{}{}",
        &digits[..cc],
        "*".repeat(hidden),
        &digits[digits.len() - keep_end..]
    )
}

/// The JSON of an event without its id, as an event log keeps it:
/// `{"type", "created_at", "data"}`.
pub fn payload(event: &Event) -> Vec<u8> {
    #[derive(Serialize)]
    struct Payload<'a> {
        #[serde(rename = "type")]
        kind: EventKind,
        created_at: String,
        data: &'a EventData,
    }
    serde_json::to_vec(&Payload {
        kind: event.kind,
        created_at: event.at.to_rfc3339(),
        data: &event.data,
    })
    .expect("plain data serialises")
}

/// The JSON body of an event as webhooks and `GET /v1/events` give it, under the
/// id `id`: `{"id", "type", "created_at", "data"}`.
pub fn body(id: &str, event: &Event) -> Vec<u8> {
    let mut out = format!("{{\"id\":{},", serde_json::Value::from(id)).into_bytes();
    out.extend_from_slice(&payload(event)[1..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::id::ShardTag;

    #[test]
    fn numbers_are_masked_to_country_and_last_two_digits() {
        let n = |s: &str| E164::parse_international(s).unwrap();
        assert_eq!(masked(n("+34600112233")), "+34*******33");
        assert_eq!(masked(n("+14155550123")), "+1********23");
        assert_eq!(masked(n("+447700900123")), "+44********23");
    }

    #[test]
    fn an_event_body_has_the_webhook_shape_and_nothing_secret() {
        let id = VerificationId::new(ShardTag(3), [7; 14]);
        let to = E164::parse_international("+34600112233").unwrap();
        let event = Event {
            kind: EventKind::Delivered,
            at: UnixMillis(1_795_435_200_000),
            client: Some("sede".into()),
            data: EventData {
                send: Some(1),
                carrier: Some("movistar".into()),
                ..EventData::of(&id, to, "pending").with_channel(ChannelKind::Sms)
            },
        };
        let body: serde_json::Value = serde_json::from_slice(&body("evt_1", &event)).unwrap();
        assert_eq!(body["id"], "evt_1");
        assert_eq!(body["type"], "verification.delivered");
        assert_eq!(body["created_at"], "2026-11-23T12:00:00Z");
        assert_eq!(body["data"]["verification_id"], id.to_string());
        assert_eq!(body["data"]["to"], "+34*******33");
        assert_eq!(body["data"]["channel"], "sms");
        assert_eq!(body["data"]["carrier"], "movistar");
        assert!(body["data"].get("reason").is_none());
        assert!(!body.to_string().contains("600112233"));
        assert!(body.get("client").is_none());
    }

    #[test]
    fn every_kind_is_named_as_it_serialises() {
        for kind in EventKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
    }
}
