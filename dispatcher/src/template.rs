//! Message texts. Built-in wording per language for now; operator-defined templates and
//! the GSM-7 / UCS-2 encoding choice come with routing.

use otpd_adapters::MessageText;

use crate::code::Code;
use crate::locale::Locale;
use crate::verification::MatchCode;

/// Render the SMS/push text carrying `code`, valid for about `minutes` more minutes.
pub fn render(locale: Locale, code: &Code, minutes: u64) -> MessageText {
    let digits = code.expose_digits();
    let d: &str = &digits;
    let text = match locale {
        Locale::Es => format!(
            "{d} es tu código de verificación. Caduca en {minutes} min. No lo compartas con nadie."
        ),
        Locale::Ca => format!(
            "{d} és el teu codi de verificació. Caduca d'aquí a {minutes} min. No el comparteixis amb ningú."
        ),
        Locale::Gl => format!(
            "{d} é o teu código de verificación. Caduca en {minutes} min. Non o compartas con ninguén."
        ),
        Locale::Eu => format!(
            "{d} da zure egiaztapen-kodea. {minutes} minututan iraungiko da. Ez partekatu inorekin."
        ),
        Locale::Va => format!(
            "{d} és el teu codi de verificació. Caduca d'ací a {minutes} min. No el compartisques amb ningú."
        ),
        Locale::En => format!(
            "{d} is your verification code. It expires in {minutes} min. Do not share it with anyone."
        ),
    };
    MessageText::new(text)
}

/// The title of a push notification; with the match code the person compares with
/// the number on the requesting screen.
pub fn push_title(locale: Locale, match_code: Option<MatchCode>) -> String {
    let title = match locale {
        Locale::Es | Locale::Gl => "Código de verificación",
        Locale::Ca | Locale::Va => "Codi de verificació",
        Locale::Eu => "Egiaztapen-kodea",
        Locale::En => "Verification code",
    };
    match match_code {
        Some(m) => format!("{title} · {m}"),
        None => title.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_carries_the_code_and_the_minutes() {
        let code = Code::parse("042317").unwrap();
        let mut texts = std::collections::HashSet::new();
        for locale in Locale::ALL {
            let text = render(locale, &code, 10);
            assert!(text.expose().starts_with("042317 "), "{locale}");
            assert!(text.expose().contains("10"), "{locale}");
            assert!(
                texts.insert(text.expose().to_string()),
                "{locale} repeats another"
            );
        }
    }

    #[test]
    fn push_titles_carry_the_match_code() {
        assert_eq!(
            push_title(Locale::Es, MatchCode::new(42)),
            "Código de verificación · 042"
        );
        assert_eq!(push_title(Locale::En, None), "Verification code");
    }
}
