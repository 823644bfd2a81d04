//! Who may do what, and how often. Pure decisions and the [`limiter::Limiter`] seam
//! they are charged through: the layered limits of `[limits]` ([`limits`]) decided by
//! GCRA ([`gcra`]), the API clients and what each may call ([`clients`]), the caller's
//! network ([`peer`]), the SMS-pumping defence ([`pumping`]), the queue's standing
//! delay ([`sojourn`]), and [`admission`], which puts them together for the engine.

pub mod admission;
pub mod clients;
pub mod gcra;
pub mod limiter;
pub mod limits;
pub(crate) mod peer;
pub(crate) mod pumping;
pub(crate) mod sojourn;
