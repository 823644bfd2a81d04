//! `validity_period`: how long an SMSC may keep trying a message, in SMPP 3.4's time
//! format (§7.1.1), set from the code's expiry so that a carrier that keeps retrying
//! never hands over a code that no longer works.
//!
//! The format is 16 characters, `YYMMDDhhmmsstnnp`: an absolute time, `t` tenths of
//! a second, `nn` the offset from UTC in quarter hours and `p` its sign; or, with
//! `p = R`, a duration in the same fields (years, months, days, hours, minutes,
//! seconds). Relative is otpd's default: the SMSC counts from when it takes the
//! message, so neither clock's error matters; absolute is there for SMSCs that
//! mishandle it.

use std::time::Duration;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// Which form `validity_period` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValidityForm {
    /// A duration: the time the code has left (`…R`).
    #[default]
    Relative,
    /// The code's expiry, in UTC (`…000+`).
    Absolute,
    /// Left empty: the SMSC's default validity applies.
    Omitted,
}

/// The longest duration the relative form can say here: 99 days (no months, whose
/// length an SMSC may count differently).
const MAX_RELATIVE: Duration = Duration::from_secs(99 * 86_400);

/// `validity_period` for a code that expires at `expires_at_ms` (milliseconds since
/// the Unix epoch), sent at `now_ms`; `None` when the form is omitted. Whole seconds,
/// rounded down: the SMSC never holds the message past the code's expiry.
pub fn validity_period(form: ValidityForm, expires_at_ms: i64, now_ms: i64) -> Option<String> {
    match form {
        ValidityForm::Omitted => None,
        ValidityForm::Relative => {
            let left = Duration::from_millis(expires_at_ms.saturating_sub(now_ms).max(0) as u64)
                .min(MAX_RELATIVE);
            Some(relative(left))
        }
        ValidityForm::Absolute => Some(absolute(expires_at_ms)),
    }
}

/// The relative form of `left`, in whole seconds.
pub fn relative(left: Duration) -> String {
    let s = left.as_secs();
    let (days, s) = (s / 86_400, s % 86_400);
    let (hours, s) = (s / 3_600, s % 3_600);
    let (minutes, seconds) = (s / 60, s % 60);
    format!("0000{days:02}{hours:02}{minutes:02}{seconds:02}000R")
}

/// The absolute form of `at_ms`, in UTC, to the tenth of a second (rounded down).
pub fn absolute(at_ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp(at_ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}{}00+",
        at.year().rem_euclid(100),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at_ms.rem_euclid(1000) / 100,
    )
}

/// Reads either form back: how long from `now_ms` the SMSC may keep the message.
/// For tests and the SMSC simulator, which hold otpd to what it sent.
pub fn parse(value: &str, now_ms: i64) -> Option<Duration> {
    let b = value.as_bytes();
    if b.len() != 16 || !b[..15].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = |i: usize| (b[i] - b'0') * 10 + (b[i + 1] - b'0');
    match b[15] {
        b'R' => {
            if n(0) != 0 || n(2) != 0 {
                return None;
            }
            let secs = u64::from(n(4)) * 86_400
                + u64::from(n(6)) * 3_600
                + u64::from(n(8)) * 60
                + u64::from(n(10));
            Some(Duration::from_secs(secs))
        }
        sign @ (b'+' | b'-') => {
            let date =
                Date::from_calendar_date(2000 + i32::from(n(0)), Month::try_from(n(2)).ok()?, n(4))
                    .ok()?;
            let time =
                Time::from_hms_milli(n(6), n(8), n(10), u16::from(b[12] - b'0') * 100).ok()?;
            let quarters = i64::from(n(13));
            if quarters > 48 {
                return None;
            }
            let offset = quarters * 15 * 60 * if sign == b'+' { 1 } else { -1 };
            let at_ms = (PrimitiveDateTime::new(date, time)
                .assume_utc()
                .unix_timestamp()
                - offset)
                * 1000
                + i64::from(b[12] - b'0') * 100;
            Some(Duration::from_millis(
                at_ms.saturating_sub(now_ms).max(0) as u64
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ten_minutes_left_reads_as_ten_minutes() {
        assert_eq!(relative(Duration::from_secs(600)), "000000001000000R");
        assert_eq!(
            validity_period(ValidityForm::Relative, 1_000_599_999, 1_000_000_000).as_deref(),
            Some("000000000959000R"),
            "rounded down to the second"
        );
        assert_eq!(
            relative(Duration::from_secs(86_400 + 3_661)),
            "000001010101000R"
        );
    }

    #[test]
    fn an_expired_code_has_no_time_left_and_long_ones_are_capped() {
        assert_eq!(
            validity_period(ValidityForm::Relative, 5, 10).as_deref(),
            Some("000000000000000R")
        );
        assert_eq!(
            validity_period(ValidityForm::Relative, i64::MAX, 0).as_deref(),
            Some("000099000000000R")
        );
    }

    #[test]
    fn absolute_is_utc_to_the_tenth() {
        // 2026-12-06 20:15:00.750 UTC
        let at = 1_796_588_100_750;
        assert_eq!(absolute(at), "261206201500700+");
        assert_eq!(
            parse("261206201500700+", at - 600_000),
            Some(Duration::from_millis(599_950)),
            "the tenths rounded down"
        );
        // The same instant written an hour ahead of UTC (four quarter hours).
        assert_eq!(parse("261206211500704+", at), Some(Duration::ZERO));
        assert_eq!(validity_period(ValidityForm::Omitted, at, 0), None);
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "000000001000000",
            "000000001000000X",
            "0000000010000a0R",
            "261306201500700+",
            "010000000000000R",
        ] {
            assert_eq!(parse(bad, 0), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn both_forms_read_back_as_the_time_left(now in 946_684_800_000i64..4_000_000_000_000, left_ms in 0i64..(99 * 86_400_000)) {
            let expires = now + left_ms;
            let r = validity_period(ValidityForm::Relative, expires, now).unwrap();
            prop_assert_eq!(parse(&r, now), Some(Duration::from_secs((left_ms / 1000) as u64)));
            let a = validity_period(ValidityForm::Absolute, expires, now).unwrap();
            let back = parse(&a, now).unwrap();
            let want = Duration::from_millis(((expires / 100) * 100 - now).max(0) as u64);
            prop_assert_eq!(back, want);
        }
    }
}
