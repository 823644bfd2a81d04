//! Apple Push Notification service: the pure pieces of otpd's APNs channel. The
//! provider token (ES256 JWT), the request for one push, and what an answer means;
//! the HTTP/2 client sits on top.

pub mod client;
pub mod request;
pub mod response;
pub mod token;

pub use client::{ApnsConfig, ApnsPusher};
