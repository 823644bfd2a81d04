//! Phone numbers in E.164.
//!
//! [`E164`] is how otpd holds a number once it has been read. Reading what people
//! type, with libphonenumber's metadata, is [`crate::numbers::reader`]; the strict
//! international-only parser here serves tests and stored data.

use std::fmt;

/// A number in E.164: 7 to 15 digits, starting with an assigned country calling code.
/// Held as an integer: E.164 numbers never start with 0, so no digit is lost, and
/// eight bytes beat a heap string in a store holding millions of them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(u64);

pub const MIN_DIGITS: usize = 7;
pub const MAX_DIGITS: usize = 15;

/// Why a number was refused. `reason()` is the stable machine-readable form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    #[error("the number is empty")]
    Empty,
    #[error(
        "the number must be in international form: `+` or `00`, then the country code and number"
    )]
    NotInternational,
    #[error("the number contains a character that is not a digit or a separator")]
    InvalidCharacter,
    #[error("the number has fewer than 7 digits")]
    TooShort,
    #[error("the number has more than 15 digits")]
    TooLong,
    #[error("the number does not start with an assigned country calling code")]
    InvalidCountryCode,
}

impl PhoneError {
    pub fn reason(self) -> &'static str {
        match self {
            PhoneError::Empty => "empty",
            PhoneError::NotInternational => "not_international",
            PhoneError::InvalidCharacter => "invalid_character",
            PhoneError::TooShort => "too_short",
            PhoneError::TooLong => "too_long",
            PhoneError::InvalidCountryCode => "invalid_country_code",
        }
    }
}

impl E164 {
    /// Parse a number typed in international form.
    pub fn parse_international(input: &str) -> Result<E164, PhoneError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PhoneError::Empty);
        }
        let rest = if let Some(rest) = trimmed.strip_prefix('+') {
            rest
        } else if let Some(rest) = trimmed.strip_prefix("00") {
            rest
        } else if trimmed.starts_with(|c: char| c.is_ascii_digit() || is_separator(c)) {
            return Err(PhoneError::NotInternational);
        } else {
            return Err(PhoneError::InvalidCharacter);
        };
        let mut value: u64 = 0;
        let mut count = 0usize;
        for c in rest.chars() {
            if let Some(d) = c.to_digit(10).filter(|_| c.is_ascii_digit()) {
                count += 1;
                if count > MAX_DIGITS {
                    return Err(PhoneError::TooLong);
                }
                value = value * 10 + u64::from(d);
            } else if !is_separator(c) {
                return Err(PhoneError::InvalidCharacter);
            }
        }
        if count == 0 {
            return Err(PhoneError::Empty);
        }
        if rest.trim_start_matches(is_separator).starts_with('0') {
            return Err(PhoneError::InvalidCountryCode);
        }
        if count < MIN_DIGITS {
            return Err(PhoneError::TooShort);
        }
        let number = E164(value);
        if number.country_code().is_none() {
            return Err(PhoneError::InvalidCountryCode);
        }
        Ok(number)
    }

    /// For stores that saved [`E164::digits`]; no validation.
    pub fn from_digits_unchecked(digits: u64) -> E164 {
        E164(digits)
    }

    pub fn digits(self) -> u64 {
        self.0
    }

    /// The assigned country calling code the number starts with (1 to 3 digits).
    pub fn country_code(self) -> Option<u16> {
        let s = self.0.to_string();
        (1..=3).find_map(|n| {
            let cc: u16 = s.get(..n)?.parse().ok()?;
            is_assigned_country_code(cc).then_some(cc)
        })
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164(+{})", self.0)
    }
}

fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '.' | '-' | '(' | ')' | '/' | '\u{a0}')
}

/// Country calling codes assigned by ITU-T E.164 (list of assigned codes, including
/// the non-geographic ones for satellite and international networks). Prefix-free: no
/// code is the start of another, so at most one matches a number.
fn is_assigned_country_code(cc: u16) -> bool {
    const ASSIGNED: &[u16] = &[
        1, 7, 20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53,
        54, 55, 56, 57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98,
        211, 212, 213, 216, 218, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232,
        233, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250,
        251, 252, 253, 254, 255, 256, 257, 258, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269,
        290, 291, 297, 298, 299, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 370, 371, 372,
        373, 374, 375, 376, 377, 378, 379, 380, 381, 382, 383, 385, 386, 387, 389, 420, 421, 423,
        500, 501, 502, 503, 504, 505, 506, 507, 508, 509, 590, 591, 592, 593, 594, 595, 596, 597,
        598, 599, 670, 672, 673, 674, 675, 676, 677, 678, 679, 680, 681, 682, 683, 685, 686, 687,
        688, 689, 690, 691, 692, 800, 808, 850, 852, 853, 855, 856, 870, 878, 880, 881, 882, 883,
        886, 888, 960, 961, 962, 963, 964, 965, 966, 967, 968, 970, 971, 972, 973, 974, 975, 976,
        977, 979, 991, 992, 993, 994, 995, 996, 998,
    ];
    ASSIGNED.binary_search(&cc).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_international_forms_with_separators() {
        for input in [
            "+34600123456",
            "+34 600 12 34 56",
            "0034600123456",
            "00 34 600-12-34-56",
            "+34 (600) 12.34.56",
            " +34600123456 ",
        ] {
            let n = E164::parse_international(input).unwrap();
            assert_eq!(n.to_string(), "+34600123456", "{input:?}");
            assert_eq!(n.country_code(), Some(34));
        }
    }

    #[test]
    fn country_codes_of_every_length() {
        let us = E164::parse_international("+1 202 555 0143").unwrap();
        assert_eq!(us.country_code(), Some(1));
        let pt = E164::parse_international("+351912345678").unwrap();
        assert_eq!(pt.country_code(), Some(351));
        let niue = E164::parse_international("+683 4002").unwrap();
        assert_eq!(niue.country_code(), Some(683));
    }

    #[test]
    fn refusals_say_why() {
        let cases = [
            ("", PhoneError::Empty),
            ("+", PhoneError::Empty),
            ("600123456", PhoneError::NotInternational),
            ("34600123456", PhoneError::NotInternational),
            ("+34 600 abc", PhoneError::InvalidCharacter),
            ("tel:+34600123456", PhoneError::InvalidCharacter),
            ("+3460", PhoneError::TooShort),
            ("+3460012345678901", PhoneError::TooLong),
            ("+0034600123456", PhoneError::InvalidCountryCode),
            ("+28 600123456", PhoneError::InvalidCountryCode),
            ("+969 123 4567", PhoneError::InvalidCountryCode),
            ("+34６00123456", PhoneError::InvalidCharacter),
        ];
        for (input, want) in cases {
            assert_eq!(E164::parse_international(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn assigned_codes_are_sorted_and_prefix_free() {
        let codes: Vec<u16> = (1..1000).filter(|&c| is_assigned_country_code(c)).collect();
        for a in &codes {
            for b in &codes {
                let (sa, sb) = (a.to_string(), b.to_string());
                assert!(a == b || !sb.starts_with(&sa), "{a} is a prefix of {b}");
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = E164::parse_international(&s);
        }

        #[test]
        fn display_round_trips(n in 7u32..=15, seed in any::<u64>()) {
            if let Ok(num) = E164::parse_international(&format!("+34{:0width$}", seed % 10u64.pow(n - 2), width = n as usize - 2)) {
                prop_assert_eq!(E164::parse_international(&num.to_string()).unwrap(), num);
            }
        }
    }
}
