//! Subjects — the identity numbers verifications and subscribers are keyed by —
//! in one normal form, before anything is validated, limited or stored.
//!
//! Two strings that a person reads as the same identity number must be the same
//! subject: otherwise each spelling is a subject of its own, with limits of its own
//! (`87654321x`, fullwidth `８７６５４３２１Ｘ`, or the number followed by a
//! zero-width space would each get five fresh wrong codes), and a spelling the check
//! letter validation does not recognise skips it. So a subject is read as:
//!
//! 1. bounded in bytes before any work is done on it;
//! 2. Unicode NFKC, which folds compatibility forms (fullwidth digits and letters,
//!    ligatures, superscripts) into their plain letters;
//! 3. refused when it holds anything invisible or direction-changing: controls,
//!    whitespace, format characters (zero-width spaces and joiners, bidi marks and
//!    overrides, the BOM), other default-ignorable code points (variation selectors,
//!    Hangul fillers, tags), combining marks left over after composition, and private
//!    use characters — none of them belongs in an identity number, and each can make
//!    two different strings look alike;
//! 4. upper-cased (identity numbers are case-insensitive: `12345678z` is
//!    `12345678Z`);
//! 5. at most [`MAX_CHARS`] characters; and when shaped like a Spanish DNI or NIE,
//!    its check letter must be right.
//!
//! Errors say what is wrong without repeating the value, nor the right check letter
//! (that would make the API a check-letter oracle).

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Longest subject, in characters, after normalisation.
pub const MAX_CHARS: usize = 64;

/// Longest input looked at, in bytes: four bytes per character of the longest subject
/// is as much as any real spelling needs; more is refused before it is normalised.
const MAX_INPUT_BYTES: usize = 4 * MAX_CHARS;

/// Why a subject was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    #[error("the subject is empty")]
    Empty,
    #[error("the subject is longer than {MAX_CHARS} characters")]
    TooLong,
    #[error("the subject contains whitespace or control characters")]
    Control,
    #[error(
        "the subject contains invisible, formatting or direction-changing characters (zero-width, bidi, BOM, combining marks)"
    )]
    Invisible,
    #[error("the DNI/NIE check letter is wrong")]
    CheckLetter,
}

impl SubjectError {
    /// The stable machine form (the API's `reason`).
    pub fn reason(self) -> &'static str {
        match self {
            SubjectError::Empty => "empty",
            SubjectError::TooLong => "too_long",
            SubjectError::Control => "invalid_character",
            SubjectError::Invisible => "invisible_character",
            SubjectError::CheckLetter => "check_letter",
        }
    }
}

/// The normal form of a subject as typed, or why it is not one.
pub fn normalize(raw: &str) -> Result<Box<str>, SubjectError> {
    if raw.is_empty() {
        return Err(SubjectError::Empty);
    }
    if raw.len() > MAX_INPUT_BYTES {
        return Err(SubjectError::TooLong);
    }
    // The common case — a plain ASCII identity number — needs no normalisation.
    let folded: String = if raw.bytes().all(|b| b.is_ascii_graphic()) {
        raw.to_ascii_uppercase()
    } else {
        let mut out = String::with_capacity(raw.len());
        for c in raw.nfkc() {
            refuse(c)?;
            out.extend(c.to_uppercase());
        }
        // Upper-casing can itself leave a non-NFKC sequence (rarely: a few Greek
        // letters with marks); the normal form is the fixed point.
        if unicode_normalization::is_nfkc_quick(out.chars())
            != unicode_normalization::IsNormalized::Yes
        {
            out = out.nfkc().collect();
            for c in out.chars() {
                refuse(c)?;
            }
        }
        out
    };
    if folded.chars().count() > MAX_CHARS {
        return Err(SubjectError::TooLong);
    }
    if folded.is_empty() {
        return Err(SubjectError::Empty);
    }
    if spanish_id_check_letter_is_wrong(&folded) {
        return Err(SubjectError::CheckLetter);
    }
    Ok(folded.into_boxed_str())
}

fn refuse(c: char) -> Result<(), SubjectError> {
    if c.is_control() || c.is_whitespace() {
        return Err(SubjectError::Control);
    }
    if is_invisible(c) || is_combining_mark(c) {
        return Err(SubjectError::Invisible);
    }
    Ok(())
}

/// Characters that show nothing, or change how their neighbours show: the format
/// characters (general category Cf), the default-ignorable code points, a few blanks
/// that are letters by category, private use and noncharacters.
fn is_invisible(c: char) -> bool {
    const RANGES: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),    // soft hyphen
        (0x034F, 0x034F),    // combining grapheme joiner
        (0x0600, 0x0605),    // Arabic number signs (Cf)
        (0x061C, 0x061C),    // Arabic letter mark (bidi)
        (0x06DD, 0x06DD),    // Arabic end of ayah (Cf)
        (0x070F, 0x070F),    // Syriac abbreviation mark (Cf)
        (0x0890, 0x0891),    // Arabic pound and piastre marks above (Cf)
        (0x08E2, 0x08E2),    // Arabic disputed end of ayah (Cf)
        (0x115F, 0x1160),    // Hangul fillers
        (0x17B4, 0x17B5),    // Khmer inherent vowels
        (0x180B, 0x180F),    // Mongolian variation selectors and vowel separator
        (0x200B, 0x200F),    // zero-width space, joiners, LRM, RLM
        (0x2028, 0x202E),    // line and paragraph separators, bidi embeddings, overrides
        (0x2060, 0x206F),    // word joiner, invisible operators, bidi isolates
        (0x2800, 0x2800),    // braille blank
        (0x3164, 0x3164),    // Hangul filler
        (0xE000, 0xF8FF),    // private use
        (0xFE00, 0xFE0F),    // variation selectors
        (0xFEFF, 0xFEFF),    // zero-width no-break space (BOM)
        (0xFFA0, 0xFFA0),    // halfwidth Hangul filler
        (0xFFF0, 0xFFFB),    // unassigned specials, interlinear annotation
        (0xFFFE, 0xFFFF),    // noncharacters
        (0x110BD, 0x110BD),  // Kaithi number sign (Cf)
        (0x110CD, 0x110CD),  // Kaithi number sign above (Cf)
        (0x13430, 0x1345F),  // Egyptian hieroglyph format controls
        (0x1BCA0, 0x1BCA3),  // shorthand format controls
        (0x1D173, 0x1D17A),  // musical symbol format controls
        (0xE0000, 0xE0FFF),  // tags, variation selectors supplement
        (0xF0000, 0x10FFFF), // supplementary private use
    ];
    let c = c as u32;
    RANGES.iter().any(|&(lo, hi)| (lo..=hi).contains(&c)) || (c & 0xFFFE) == 0xFFFE
}

/// Whether `s`, shaped like a DNI (8 digits and a letter) or NIE (X, Y or Z, 7
/// digits and a letter), has the wrong check letter. Other shapes are not judged.
fn spanish_id_check_letter_is_wrong(s: &str) -> bool {
    const LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    let b = s.as_bytes();
    if b.len() != 9 || !b[8].is_ascii_uppercase() {
        return false;
    }
    let digits = |range: std::ops::Range<usize>| {
        b[range].iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let number = match b[0] {
        b'X' | b'Y' | b'Z' => match digits(1..8) {
            Some(n) => u32::from(b[0] - b'X') * 10_000_000 + n,
            None => return false,
        },
        _ => match digits(0..8) {
            Some(n) => n,
            None => return false,
        },
    };
    b[8] != LETTERS[(number % 23) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dni_and_nie_check_letters() {
        for good in [
            "12345678Z",
            "12345678z",
            "X1234567L",
            "Y1234567X",
            "Z1234567R",
        ] {
            assert!(normalize(good).is_ok(), "{good}");
        }
        for bad in ["12345678A", "X1234567A"] {
            assert_eq!(normalize(bad), Err(SubjectError::CheckLetter), "{bad}");
        }
        // Not DNI/NIE-shaped: not judged.
        for other in ["PASSPORT1", "user-42", "1234567Z"] {
            assert!(normalize(other).is_ok(), "{other}");
        }
    }

    #[test]
    fn spellings_of_one_identity_number_are_one_subject() {
        let plain = normalize("87654321X").unwrap();
        assert_eq!(&*plain, "87654321X");
        for same in [
            "87654321x",
            "８７６５４３２１Ｘ", // fullwidth digits and letter
            "８７６５４３２１ｘ", // fullwidth, lower case
        ] {
            assert_eq!(normalize(same).unwrap(), plain, "{same:?}");
        }
    }

    #[test]
    fn invisible_and_direction_changing_characters_are_refused() {
        for hidden in [
            "87654321X\u{200B}",         // zero-width space
            "\u{FEFF}87654321X",         // BOM
            "87654321\u{200D}X",         // zero-width joiner
            "\u{202E}abc",               // right-to-left override
            "\u{2066}87654321X\u{2069}", // bidi isolate
            "87654321X\u{200F}",         // right-to-left mark
            "87654321X\u{FE0F}",         // variation selector
            "87654321X\u{E0041}",        // tag
            "87654321X\u{0301}",         // a combining mark that composes with nothing
            "\u{3164}87654321X",         // Hangul filler
            "87654321X\u{00AD}",         // soft hyphen
            "\u{E000}",                  // private use
        ] {
            assert_eq!(
                normalize(hidden),
                Err(SubjectError::Invisible),
                "{:?}",
                hidden.escape_unicode().to_string()
            );
        }
    }

    #[test]
    fn whitespace_controls_and_size() {
        assert_eq!(normalize(""), Err(SubjectError::Empty));
        assert_eq!(normalize(" 12345678Z"), Err(SubjectError::Control));
        assert_eq!(normalize("a b"), Err(SubjectError::Control));
        assert_eq!(normalize("a\u{0}"), Err(SubjectError::Control));
        assert_eq!(normalize("a\u{00A0}b"), Err(SubjectError::Control));
        assert_eq!(normalize("a\u{3000}b"), Err(SubjectError::Control));
        assert_eq!(normalize(&"x".repeat(65)), Err(SubjectError::TooLong));
        assert_eq!(&*normalize(&"x".repeat(64)).unwrap(), "X".repeat(64));
        // Bounded before normalisation: a megabyte is not looked at.
        assert_eq!(normalize(&"ｘ".repeat(300_000)), Err(SubjectError::TooLong));
    }

    #[test]
    fn errors_never_tell_the_right_letter() {
        let e = normalize("12345678A").unwrap_err().to_string();
        assert!(!e.contains('Z'), "{e}");
    }

    #[test]
    fn letters_of_other_scripts_stay() {
        assert_eq!(&*normalize("ΑΒΓ123").unwrap(), "ΑΒΓ123");
        assert_eq!(&*normalize("αβγ123").unwrap(), "ΑΒΓ123");
        assert_eq!(&*normalize("año-7").unwrap(), "AÑO-7");
        // A decomposed ñ composes to the same.
        assert_eq!(&*normalize("an\u{0303}o-7").unwrap(), "AÑO-7");
    }
}
