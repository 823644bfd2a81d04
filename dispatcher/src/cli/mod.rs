//! The `otpd` binary's commands besides `serve`: the simulators and the audit trail.

pub mod audit;
pub mod simulate_push;
