//! Delivery channels for otpd.
//!
//! The dispatcher decides *what* to send and *when*; a [`Channel`] only knows *how* to
//! hand one message to one transport (an outbox file today; SMPP and push providers
//! later). Every channel classifies its failures ([`ChannelError`]) so that the
//! dispatcher, not the adapter, owns retry, failover and fallback policy.
#![forbid(unsafe_code)]

pub mod apns;
pub mod channel;
pub mod fake;
pub mod fcm;
pub mod file;
pub mod h2post;
pub mod hms;
pub mod push;
pub mod secret;
pub mod smpp;
pub mod tls;

pub use channel::{
    Channel, ChannelError, ChannelKind, DeliveryReport, Message, MessageText, Open, ReportState,
    SendGate, SubmitReceipt,
};
pub use secret::Secret;
