//! otpd, the one-time-code dispatch engine.
//!
//! The folders follow a request (ARCHITECTURE.md walks one through them):
//!
//! - [`api`] parses HTTP, authenticates the caller and renders answers;
//! - [`engine`] runs each flow — issue, check, answer, acknowledge, cancel,
//!   escalate — taking every decision through [`policy`] (limits, clients, pumping);
//! - [`numbers`] reads phone numbers, [`secrets`] makes and MACs codes and ids,
//!   [`domain`] is the model (the verification lifecycle, subscribers, the clock);
//! - [`store`] keeps state (embedded, or Redis for many nodes);
//! - [`delivery`] sends codes by push and SMS (routes, breakers, throughput caps,
//!   templates);
//! - [`config`] reads the configuration, [`server`] wires a process and accepts
//!   connections within their bounds; [`metrics`] are what Prometheus scrapes.
//!
//! What each public route lets a caller do is in docs/THREAT_MODEL.md.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod engine;
pub mod events;
pub mod metrics;
pub mod numbers;
pub mod policy;
pub mod secrets;
pub mod server;
pub mod store;

pub use config::Config;
pub use server::{Deps, Server};
