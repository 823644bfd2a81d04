//! Contrast data: a second fact about a subject, besides the identity number, that a
//! request by subject must carry when its client or purpose requires it — Cl@ve
//! PIN asks for the identity document's validity date or its support number. It
//! makes knowing someone's ID number not enough to make their phone buzz.
//!
//! The registry keeps only a keyed MAC of the value (bound to the subject, so one
//! subject's MAC says nothing about another's), compared in constant time. Values
//! are compared in a normal form: letters upper-cased, and spaces, `-`, `/` and `.`
//! dropped, so `17/05/2030`, `17-05-2030` and `17.05.2030` are one value, and so are
//! `e12345678` and `E 123 456 78`.

use std::fmt;

use subtle::ConstantTimeEq;

/// Longest contrast value accepted, in characters.
pub const MAX_CHARS: usize = 64;

/// The MAC of a subject's contrast value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ContrastMac(pub [u8; 32]);

impl ContrastMac {
    /// Constant-time equality.
    pub fn matches(&self, other: &ContrastMac) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for ContrastMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContrastMac(..)")
    }
}

/// Why a contrast value was refused. Never echoes the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ContrastError {
    #[error("the contrast value is empty")]
    Empty,
    #[error("the contrast value is longer than {MAX_CHARS} characters")]
    TooLong,
    #[error("the contrast value contains control characters")]
    Control,
}

/// The normal form of `value`, what is MACed; refused when it cannot be one.
pub fn normalize(value: &str) -> Result<String, ContrastError> {
    if value.chars().count() > MAX_CHARS {
        return Err(ContrastError::TooLong);
    }
    if value.chars().any(char::is_control) {
        return Err(ContrastError::Control);
    }
    let normal: String = value
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '/' | '.'))
        .flat_map(char::to_uppercase)
        .collect();
    if normal.is_empty() {
        return Err(ContrastError::Empty);
    }
    Ok(normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_case_do_not_matter() {
        let date = normalize("17/05/2030").unwrap();
        assert_eq!(normalize("17-05-2030").unwrap(), date);
        assert_eq!(normalize(" 17.05.2030 ").unwrap(), date);
        assert_eq!(normalize("e 123-456 78").unwrap(), "E12345678");
        assert_ne!(normalize("18/05/2030").unwrap(), date);
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(normalize(""), Err(ContrastError::Empty));
        assert_eq!(normalize(" - / "), Err(ContrastError::Empty));
        assert_eq!(normalize(&"9".repeat(65)), Err(ContrastError::TooLong));
        assert_eq!(normalize("12\n34"), Err(ContrastError::Control));
        assert!(normalize(&"9".repeat(64)).is_ok());
    }
}
