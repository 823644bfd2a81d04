//! The model, without I/O: the [`verification`] lifecycle (a pure state machine),
//! the registry's [`subscriber`]s, app [`approval`], the [`locale`]s messages are
//! written in, [`subject`]s in their normal form, configured [`name`]s, [`thin_str`]
//! for text a verification rarely has, and the [`clock`] everything reads time from.

pub mod approval;
pub mod clock;
pub mod locale;
pub mod name;
pub(crate) mod subject;
pub mod subscriber;
pub mod thin_str;
pub mod verification;
