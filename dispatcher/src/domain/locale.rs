//! The languages otpd writes messages in: Cl@ve's Castellano, Català, Galego, Euskara,
//! Valencià, and English.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Locale {
    Es,
    Ca,
    Gl,
    Eu,
    Va,
    En,
}

pub const SUPPORTED: &str = "es, ca, gl, eu, va (ca-ES-valencia), en";

impl Locale {
    pub const ALL: [Locale; 6] = [
        Locale::Es,
        Locale::Ca,
        Locale::Gl,
        Locale::Eu,
        Locale::Va,
        Locale::En,
    ];

    /// Parse a language tag, case-insensitively, accepting region subtags and `_`:
    /// `es`, `es-ES`, `ca_ES`, `ca-ES-valencia`, `va`, `en-GB`, …
    pub fn parse(tag: &str) -> Option<Locale> {
        if let Some(&l) = Locale::ALL.iter().find(|l| l.as_str() == tag) {
            return Some(l);
        }
        let lower = tag.trim().to_ascii_lowercase().replace('_', "-");
        if lower == "va" || lower.starts_with("va-") || lower.ends_with("-valencia") {
            return (lower.starts_with("ca") || lower.starts_with("va")).then_some(Locale::Va);
        }
        let mut parts = lower.split('-');
        let language = parts.next()?;
        // A region subtag is 2 letters or 3 digits; anything else is not understood.
        if !parts.all(|p| {
            (p.len() == 2 && p.bytes().all(|b| b.is_ascii_alphabetic()))
                || (p.len() == 3 && p.bytes().all(|b| b.is_ascii_digit()))
        }) {
            return None;
        }
        match language {
            "es" => Some(Locale::Es),
            "ca" => Some(Locale::Ca),
            "gl" => Some(Locale::Gl),
            "eu" => Some(Locale::Eu),
            "en" => Some(Locale::En),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Locale::Es => "es",
            Locale::Ca => "ca",
            Locale::Gl => "gl",
            Locale::Eu => "eu",
            Locale::Va => "va",
            Locale::En => "en",
        }
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_tags() {
        let cases = [
            ("es", Locale::Es),
            ("ES", Locale::Es),
            ("es-ES", Locale::Es),
            ("es_419", Locale::Es),
            ("ca", Locale::Ca),
            ("ca-ES", Locale::Ca),
            ("ca-ES-valencia", Locale::Va),
            ("ca-valencia", Locale::Va),
            ("va", Locale::Va),
            ("gl-ES", Locale::Gl),
            ("eu", Locale::Eu),
            ("en-GB", Locale::En),
        ];
        for (tag, want) in cases {
            assert_eq!(Locale::parse(tag), Some(want), "{tag}");
        }
    }

    #[test]
    fn refuses_unknown_tags() {
        for tag in ["", "fr", "es-", "es-Spain", "x-valencia", "klingon", "e"] {
            assert_eq!(Locale::parse(tag), None, "{tag}");
        }
    }

    #[test]
    fn canonical_tags_parse_to_themselves() {
        for l in Locale::ALL {
            assert_eq!(Locale::parse(l.as_str()), Some(l));
        }
    }
}
