//! SMPP 3.4: the pure pieces of otpd's SMS channel. Command status classification and
//! delivery receipts live here; PDU framing comes from the `rusmpp` codec, and the
//! session (binds, window, reconnect) sits on top, doing the I/O.

pub mod carrier;
pub mod directory;
pub mod encoding;
pub mod matcher;
pub mod pdu;
pub mod receipt;
pub mod session;
pub mod status;
pub mod validity;
pub mod window;
