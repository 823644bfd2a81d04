//! HTTP/2 POSTs to one origin, many at once on one connection, written for
//! otpd's webhooks over h2c.
//!
//! A webhook event is one small POST to one known URL, and a national peak makes
//! tens of thousands of them a second. Through a general HTTP/2 stack each cost
//! about 8 µs of CPU (a request and a response built, a stream task woken, a timer
//! armed, a header map encoded and decoded); this client writes the same bytes for
//! a fraction of that: the header block is a fixed prefix plus three literals, the
//! frames go into one buffer flushed by one write, answers are read in batches and
//! only `:status` is decoded, and one owner drives it all without a task or a
//! future per request.
//!
//! - [`frame`] and [`hpack`]: pure codecs.
//! - [`session`]: the connection's state machine (streams, flow control, SETTINGS,
//!   GOAWAY, deadlines), bytes in and bytes out, no I/O.
//! - [`client`]: the TCP connection under it, made again when lost.

pub mod client;
pub mod frame;
pub mod hpack;
pub mod session;

pub use client::{Client, ClientOptions};
pub use session::{Outcome, Post};
