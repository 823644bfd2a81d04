//! Receipt texts as SMSCs write them, and message ids as they report them.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use otpd_adapters::smpp::matcher::{IdForms, MatcherConfig, ReceiptMatcher};
use otpd_adapters::smpp::receipt::{self, MessageState, Receipt};
use tokio::time::Instant;

fuzz_target!(|text: &str| {
    let _ = receipt::parse_text(text);
    let _ = receipt::reconcile(Some(text), None, None, None);
    let mut matcher = ReceiptMatcher::new(MatcherConfig {
        forms: IdForms::Learn,
        hold_for: Duration::from_secs(30),
        cross_after: Duration::from_secs(1),
        max_held: 4,
    });
    let now = Instant::now();
    let _ = matcher.submitted(&[text.to_string()], (), now + Duration::from_secs(60), now);
    let receipt = Receipt {
        message_id: text.to_string(),
        state: MessageState::Delivered,
        error: None,
    };
    let _ = matcher.receipt(receipt, now);
    let _ = matcher.tick(now + Duration::from_secs(61));
    let _ = receipt::id_keys(text);
});
