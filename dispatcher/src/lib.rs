//! otpd, the one-time-code dispatch engine.
//!
//! The modules follow the flow in DESIGN.md: [`phone`] normalises the number, [`subject`]
//! the identity number, [`code`] makes and MACs the code, [`verification`] is the
//! lifecycle, [`store`] keeps it, [`delivery`] sends it through a channel, [`engine`]
//! ties those together, [`api`] speaks HTTP, [`serve`] accepts connections within
//! their bounds (with `connection`'s watchdog) and [`peer`] says who is calling,
//! [`config`] and [`server`] wire a process. What each public route lets a caller do
//! is in docs/THREAT_MODEL.md.
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod approval;
pub mod breaker;
pub mod clients;
pub mod clock;
mod coalesce;
pub mod code;
pub mod config;
mod connection;
pub mod contrast;
pub mod delivery;
pub mod device_key;
pub mod engine;
pub mod gcra;
pub mod id;
pub mod limiter;
pub mod limits;
pub mod locale;
pub mod metrics;
pub mod number;
mod numbering;
pub mod peer;
pub mod phone;
pub mod prefix_map;
pub mod pumping;
pub mod route;
pub mod routing;
pub mod serve;
pub mod server;
pub mod sojourn;
pub mod store;
pub mod subject;
pub mod subscriber;
pub mod template;
pub mod throttle;
pub mod verification;

pub use config::Config;
pub use server::{Deps, Server};
