//! otpd-loadtest: national-scale load against otpd, open loop.
//!
//! A scenario (`config/loadtest/*.toml`) says how many people arrive per second and
//! in what shape (constant, ramp, steps, a day with a campaign spike), who they are
//! (DNI/NIE, Spanish or foreign mobile, app or not, language), what they do with
//! their code, which carriers and push providers exist and what goes wrong with them.
//! The tool starts the simulators and otpd on loopback, sends every request when it is
//! due whether or not the earlier ones were answered, follows each code from the
//! request to the SMSC or push provider to the person's check, and reports HDR
//! latencies measured from the time each request was due.

pub mod app;
pub mod codes;
pub mod h2c_server;
pub mod html;
pub mod http;
pub mod measure;
pub mod population;
pub mod profile;
pub mod redis;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod sims;
pub mod target;
pub mod tombstones;
pub mod webhooks;

pub use report::Report;
pub use run::{Options, RunError, run};
pub use scenario::{Scenario, ScenarioError};
