//! Stand-ins for the peers otpd talks to, started for real on loopback: an SMSC
//! ([`smsc`], SMPP 3.4 over TCP) and the push services ([`push`]: APNs, FCM HTTP v1
//! and Huawei Push Kit over HTTP/2, with their token endpoints).
//!
//! They live in a crate of their own so that otpd's production library carries no
//! test servers; otpd's tests, the load tool and the `otpd simulate …` commands use
//! them.
#![forbid(unsafe_code)]

mod delay_line;
pub mod push;
pub mod smsc;
