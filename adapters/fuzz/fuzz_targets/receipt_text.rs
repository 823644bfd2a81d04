//! Receipt texts as SMSCs write them, and message ids as they report them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd_adapters::smpp::receipt::{self, MessageIdIndex};

fuzz_target!(|text: &str| {
    let _ = receipt::parse_text(text);
    let _ = receipt::reconcile(Some(text), None, None, None);
    let mut index = MessageIdIndex::default();
    index.insert(text, ());
    let _ = index.take(text);
    let _ = receipt::id_keys(text);
});
