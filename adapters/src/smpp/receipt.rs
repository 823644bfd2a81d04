//! SMSC delivery receipts: the de-facto text form of SMPP 3.4 Appendix B, the TLVs
//! that duplicate it, and matching the receipted message id to what `submit_sm_resp`
//! said — pure functions, no I/O.
//!
//! Receipt texts vary between SMSCs (key case, 10- or 12-digit dates, ids up to 64
//! characters, `err` of 1 or 3 digits, `text:` missing), so the parser reads key by key
//! and never relies on fixed offsets. When the TLVs `receipted_message_id` and
//! `message_state` are present they win over the text.
//!
//! The receipt's `text:` is the start of the message — the code itself — so it is
//! never kept, and every other field is read as one bounded token: a field that runs
//! on (a `txt:` where `text:` belongs, say) cannot carry the message into an error
//! that otpd records and shows.

/// The state of a message as an SMSC reports it (`message_state` TLV values, and the
/// `stat:` codes of the text form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    Scheduled,
    Enroute,
    Delivered,
    Expired,
    Deleted,
    Undeliverable,
    Accepted,
    Unknown,
    Rejected,
    Skipped,
}

impl MessageState {
    /// From the `message_state` TLV.
    pub fn from_tlv(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Scheduled,
            1 => Self::Enroute,
            2 => Self::Delivered,
            3 => Self::Expired,
            4 => Self::Deleted,
            5 => Self::Undeliverable,
            6 => Self::Accepted,
            7 => Self::Unknown,
            8 => Self::Rejected,
            9 => Self::Skipped,
            _ => return None,
        })
    }

    /// From the `stat:` field: the 7-letter codes, case-insensitively, and the full
    /// words some SMSCs write instead.
    pub fn from_stat(stat: &str) -> Option<Self> {
        Some(match stat.trim().to_ascii_uppercase().as_str() {
            "SCHEDLD" | "SCHEDULED" => Self::Scheduled,
            "ENROUTE" => Self::Enroute,
            "DELIVRD" | "DELIVERED" => Self::Delivered,
            "EXPIRED" => Self::Expired,
            "DELETED" => Self::Deleted,
            "UNDELIV" | "UNDELIVERABLE" | "UNDELIVERED" => Self::Undeliverable,
            "ACCEPTD" | "ACCEPTED" => Self::Accepted,
            "UNKNOWN" => Self::Unknown,
            "REJECTD" | "REJECTED" => Self::Rejected,
            "SKIPPED" => Self::Skipped,
            _ => return None,
        })
    }

    /// Whether no later receipt can change the outcome. `ACCEPTD` is not final here:
    /// many aggregators send it for "taken by the operator" before the real outcome.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Delivered
                | Self::Expired
                | Self::Deleted
                | Self::Undeliverable
                | Self::Rejected
                | Self::Skipped
        )
    }
}

/// A date of the receipt text: `YYMMDDhhmm` or `YYMMDDhhmmss`, in the SMSC's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptDate {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl ReceiptDate {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if !(s.len() == 10 || s.len() == 12) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let two = |i: usize| s[i..i + 2].parse::<u8>().ok();
        let date = ReceiptDate {
            year: 2000 + u16::from(two(0)?),
            month: two(2)?,
            day: two(4)?,
            hour: two(6)?,
            minute: two(8)?,
            second: if s.len() == 12 { two(10)? } else { 0 },
        };
        let valid = (1..=12).contains(&date.month)
            && (1..=31).contains(&date.day)
            && date.hour < 24
            && date.minute < 60
            && date.second < 61;
        valid.then_some(date)
    }
}

/// The text form, as parsed. Fields an SMSC left out (or wrote beyond their bounds)
/// are `None`. The message text is not among them (see the module's notes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiptText {
    pub id: String,
    pub sub: Option<u32>,
    pub dlvrd: Option<u32>,
    pub submit_date: Option<ReceiptDate>,
    pub done_date: Option<ReceiptDate>,
    /// The `stat:` value as written, and what it means when it is a known code.
    pub stat: Option<String>,
    pub state: Option<MessageState>,
    pub err: Option<String>,
}

/// Longest message id (SMPP 3.4: a C-octet string of up to 65 octets).
const MAX_ID: usize = 64;
/// Longest `stat:` value (the codes are 7 letters; some SMSCs write a few more).
const MAX_STAT: usize = 16;
/// Longest `err:` value (3 digits in the appendix; some SMSCs write a type too).
const MAX_ERR: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    #[error("the receipt has no message id")]
    MissingId,
    #[error("the receipt has no state: neither a stat: field nor a message_state TLV")]
    MissingState,
}

const KEYS: &[&str] = &[
    "id",
    "sub",
    "dlvrd",
    "submit date",
    "done date",
    "stat",
    "err",
    "text",
    "txt",
];

/// The first whitespace-separated token of a field's value, when it is at most `max`
/// bytes of letters, digits and the punctuation ids use.
fn token(value: &str, max: usize) -> Option<&str> {
    let t = value.split_ascii_whitespace().next()?;
    (t.len() <= max
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/')))
    .then_some(t)
}

/// Parse the text form, key by key. Unknown keys are ignored; `text:` (or `txt:`)
/// ends it: what follows is the message, never read.
pub fn parse_text(input: &str) -> Result<ReceiptText, ReceiptError> {
    // (where the key starts, which key, where its value starts)
    let mut found: Vec<(usize, &str, usize)> = Vec::new();
    let lower = input.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || bytes[i - 1].is_ascii_whitespace();
        if at_word_start
            && let Some(key) = KEYS.iter().find(|k| {
                bytes[i..].starts_with(k.as_bytes()) && bytes.get(i + k.len()) == Some(&b':')
            })
        {
            found.push((i, key, i + key.len() + 1));
            if *key == "text" || *key == "txt" {
                break; // the message: may contain anything, the code among it
            }
            i += key.len() + 1;
            continue;
        }
        i += 1;
    }
    let mut receipt = ReceiptText::default();
    for (n, &(_, key, value_start)) in found.iter().enumerate() {
        let value_end = found.get(n + 1).map_or(input.len(), |next| next.0);
        let value = input[value_start..value_end].trim();
        match key {
            "id" => receipt.id = token(value, MAX_ID).unwrap_or_default().to_string(),
            "sub" => receipt.sub = token(value, 10).and_then(|t| t.parse().ok()),
            "dlvrd" => receipt.dlvrd = token(value, 10).and_then(|t| t.parse().ok()),
            "submit date" => receipt.submit_date = token(value, 12).and_then(ReceiptDate::parse),
            "done date" => receipt.done_date = token(value, 12).and_then(ReceiptDate::parse),
            "stat" => {
                let stat = token(value, MAX_STAT);
                receipt.state = stat.and_then(MessageState::from_stat);
                receipt.stat = stat.map(str::to_string);
            }
            "err" => receipt.err = token(value, MAX_ERR).map(str::to_string),
            _ => {}
        }
    }
    if receipt.id.is_empty() {
        return Err(ReceiptError::MissingId);
    }
    Ok(receipt)
}

/// A receipt reduced to what otpd acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The SMSC's id for the receipted message, as it reported it.
    pub message_id: String,
    pub state: MessageState,
    /// The error code, when the SMSC gave one: `network_error_code` TLV as
    /// `type:code`, else the text's `err:` (left out when it is only zeros).
    pub error: Option<String>,
}

/// Combine the parts of a `deliver_sm` receipt: the TLVs win over the text.
pub fn reconcile(
    text: Option<&str>,
    receipted_message_id: Option<&str>,
    message_state: Option<u8>,
    network_error_code: Option<(u8, u16)>,
) -> Result<Receipt, ReceiptError> {
    let parsed = text.and_then(|t| parse_text(t).ok());
    let message_id = receipted_message_id
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .or_else(|| parsed.as_ref().map(|p| p.id.clone()))
        .ok_or(ReceiptError::MissingId)?;
    let state = message_state
        .and_then(MessageState::from_tlv)
        .or_else(|| parsed.as_ref().and_then(|p| p.state))
        .ok_or(ReceiptError::MissingState)?;
    // Error code 0 (TLV or text) means "no error": it is not recorded as one.
    let error = match network_error_code {
        Some((_, 0)) => None,
        Some((kind, code)) => Some(format!("{kind}:{code}")),
        None => parsed
            .and_then(|p| p.err)
            .filter(|e| e.bytes().any(|b| b != b'0')),
    };
    Ok(Receipt {
        message_id,
        state,
        error,
    })
}

/// Message ids as keys that match however the SMSC wrote them: case and leading zeros
/// never matter, and an id may come back in the other base (hex in `submit_sm_resp`,
/// decimal in the receipt, or the reverse). The first key is the id itself,
/// normalised; the others are its readings in the other base.
pub fn id_keys(id: &str) -> Vec<String> {
    let raw = id.trim().to_ascii_lowercase();
    let stripped = match raw.trim_start_matches('0') {
        "" if !raw.is_empty() => "0".to_string(),
        s => s.to_string(),
    };
    let mut keys = vec![stripped.clone()];
    if stripped.is_empty() {
        return keys;
    }
    if stripped.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = stripped.parse::<u128>()
    {
        keys.push(format!("{n:x}"));
    }
    if stripped.bytes().all(|b| b.is_ascii_hexdigit())
        && let Ok(n) = u128::from_str_radix(&stripped, 16)
    {
        keys.push(n.to_string());
    }
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STANDARD: &str = "id:0123456789 sub:001 dlvrd:001 submit date:2611231200 done date:2611231201 stat:DELIVRD err:000 text:042317 es tu código";

    #[test]
    fn parses_the_standard_form() {
        let r = parse_text(STANDARD).unwrap();
        assert_eq!(r.id, "0123456789");
        assert_eq!(r.sub, Some(1));
        assert_eq!(r.dlvrd, Some(1));
        assert_eq!(
            r.submit_date,
            Some(ReceiptDate {
                year: 2026,
                month: 11,
                day: 23,
                hour: 12,
                minute: 0,
                second: 0
            })
        );
        assert_eq!(r.done_date.unwrap().minute, 1);
        assert_eq!(r.state, Some(MessageState::Delivered));
        assert_eq!(r.stat.as_deref(), Some("DELIVRD"));
        assert_eq!(r.err.as_deref(), Some("000"));
    }

    #[test]
    fn tolerates_the_usual_variations() {
        let variants = [
            // Upper-case keys, 12-digit dates, one-digit err, no text.
            "ID:ABCDEF SUB:001 DLVRD:000 SUBMIT DATE:261123120000 DONE DATE:261123120105 STAT:UNDELIV ERR:1",
            // Text: with a capital, empty.
            "id:abcdef sub:1 dlvrd:0 submit date:2611231200 done date:2611231201 stat:undeliv err:001 Text:",
            // Extra spaces and an unknown key.
            "id:abcdef  sub:1  foo:bar  stat:UNDELIV   err:001",
        ];
        for v in variants {
            let r = parse_text(v).unwrap();
            assert_eq!(r.id.to_ascii_lowercase(), "abcdef", "{v}");
            assert_eq!(r.state, Some(MessageState::Undeliverable), "{v}");
        }
        let r = parse_text(variants[0]).unwrap();
        assert_eq!(r.done_date.unwrap().second, 5);
    }

    #[test]
    fn text_may_contain_anything_including_keys() {
        let r = parse_text("id:7 stat:DELIVRD err:000 text:id:9 stat:REJECTD").unwrap();
        assert_eq!(r.id, "7");
        assert_eq!(r.state, Some(MessageState::Delivered));
    }

    #[test]
    fn the_message_never_runs_into_a_field() {
        // `txt:` where `text:` belongs, and a field that runs on: the code in the
        // message stays out of everything kept.
        for t in [
            "id:1 sub:001 dlvrd:001 stat:UNDELIV err:001 txt:042317 es tu codigo",
            "id:1 sub:001 dlvrd:001 stat:UNDELIV err:001 mensaje:042317 es tu codigo",
            "id:1 stat:UNDELIV err:001 042317",
        ] {
            let r = parse_text(t).unwrap();
            assert_eq!(r.err.as_deref(), Some("001"), "{t}");
            assert!(!format!("{r:?}").contains("042317"), "{t}: {r:?}");
            let receipt = reconcile(Some(t), None, None, None).unwrap();
            assert_eq!(receipt.error.as_deref(), Some("001"), "{t}");
        }
        // Over-long fields are not taken.
        let long = format!("id:{} stat:DELIVRD err:{}", "9".repeat(65), "1".repeat(9));
        assert_eq!(parse_text(&long), Err(ReceiptError::MissingId));
        let r = parse_text("id:5 stat:DELIVRD err:123456789").unwrap();
        assert_eq!(r.err, None);
    }

    #[test]
    fn a_key_inside_a_word_is_not_a_key() {
        let r = parse_text("id:5 xstat:REJECTD stat:DELIVRD").unwrap();
        assert_eq!(r.state, Some(MessageState::Delivered));
    }

    #[test]
    fn a_receipt_without_id_is_refused() {
        assert_eq!(
            parse_text("stat:DELIVRD err:000"),
            Err(ReceiptError::MissingId)
        );
        assert_eq!(parse_text(""), Err(ReceiptError::MissingId));
        assert_eq!(parse_text("id: stat:DELIVRD"), Err(ReceiptError::MissingId));
    }

    #[test]
    fn bad_dates_and_unknown_stats_are_none_not_errors() {
        let r = parse_text("id:1 submit date:2613231200 done date:26112312 stat:WEIRD").unwrap();
        assert_eq!(r.submit_date, None);
        assert_eq!(r.done_date, None);
        assert_eq!(r.state, None);
        assert_eq!(r.stat.as_deref(), Some("WEIRD"));
    }

    #[test]
    fn tlvs_win_over_the_text() {
        let r = reconcile(Some(STANDARD), Some("99"), Some(5), Some((3, 34))).unwrap();
        assert_eq!(r.message_id, "99");
        assert_eq!(r.state, MessageState::Undeliverable);
        assert_eq!(r.error.as_deref(), Some("3:34"));
        let r = reconcile(Some(STANDARD), None, None, None).unwrap();
        assert_eq!(r.message_id, "0123456789");
        assert_eq!(r.state, MessageState::Delivered);
        assert_eq!(r.error, None, "err:000 is no error");
        let r = reconcile(None, Some("abc"), Some(2), None).unwrap();
        assert_eq!(r.state, MessageState::Delivered);
        let r = reconcile(None, Some("abc"), Some(2), Some((3, 0))).unwrap();
        assert_eq!(r.error, None, "network error code 0 is no error");
        assert_eq!(
            reconcile(None, Some("abc"), None, None),
            Err(ReceiptError::MissingState)
        );
        assert_eq!(
            reconcile(Some("garbage"), None, Some(2), None),
            Err(ReceiptError::MissingId)
        );
    }

    #[test]
    fn final_states() {
        assert!(MessageState::Delivered.is_final());
        assert!(MessageState::Rejected.is_final());
        assert!(!MessageState::Enroute.is_final());
        assert!(!MessageState::Accepted.is_final());
        for v in 0..=9 {
            let s = MessageState::from_tlv(v).unwrap();
            assert!(
                s.is_final()
                    || matches!(
                        s,
                        MessageState::Scheduled
                            | MessageState::Enroute
                            | MessageState::Accepted
                            | MessageState::Unknown
                    )
            );
        }
        assert_eq!(MessageState::from_tlv(10), None);
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,200}") {
            let _ = parse_text(&s);
        }

        #[test]
        fn round_trip_of_generated_receipts(id in "[0-9A-Za-z]{1,64}", stat in prop_oneof![Just("DELIVRD"), Just("UNDELIV"), Just("EXPIRED"), Just("REJECTD")], err in 0u16..1000) {
            let text = format!("id:{id} sub:001 dlvrd:001 submit date:2611231200 done date:2611231201 stat:{stat} err:{err:03} text:hola");
            let r = parse_text(&text).unwrap();
            prop_assert_eq!(r.id, id);
            prop_assert_eq!(r.state, MessageState::from_stat(stat));
            let err_text = format!("{err:03}");
            prop_assert_eq!(r.err.as_deref(), Some(err_text.as_str()));
        }
    }
}
