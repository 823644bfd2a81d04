//! What must not leak, and the ids that must not be guessed: one-time [`code`]s
//! (generated, MACed, sealed), subjects' [`contrast`] values, apps' [`device_key`]s,
//! verification [`id`]s, the clients' [`webhook`] secrets and the [`audit_key`].

pub mod audit_key;
pub mod code;
pub mod contrast;
pub mod device_key;
pub mod id;
pub mod webhook;
