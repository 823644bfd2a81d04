//! Phone numbers: [`e164`] is how otpd holds one, [`reader`] turns what people type
//! into it (checked against libphonenumber's [`metadata`]), and [`prefix_map`] maps
//! number prefixes to values, longest first.

pub mod e164;
pub(crate) mod metadata;
pub(crate) mod prefix_map;
pub mod reader;
