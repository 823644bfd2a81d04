//! Message texts: a template per purpose and language, with `{code}`,
//! `{ttl_minutes}` and `{app}` placeholders, and optional lines that let phones fill
//! the code in by themselves (Android SMS Retriever's app hash, the `@domain #code`
//! line of domain-bound codes on iOS and in browsers).
//!
//! Templates are parsed once, when the configuration is loaded, and checked there:
//! unknown placeholders, a missing `{code}`, and texts that would take more SMS than
//! the operator allows (measured with the longest code and validity of each purpose
//! that uses them) are refused with the template named. Sending only fills them in.
//!
//! The shipped texts fit in one SMS with a 10-digit code: in GSM 03.38 when the
//! language's accents allow (Català's and Valencià's `é`, `à`, `è`), else in 70 UCS-2
//! characters (the `ó` of Castellano and Galego is not in GSM 03.38).

use std::collections::HashMap;
use std::fmt::Write as _;

use otpd_adapters::MessageText;
use otpd_adapters::smpp::encoding::{self, Measure};
use zeroize::Zeroizing;

use crate::domain::locale::Locale;
use crate::domain::verification::MatchCode;
use crate::secrets::code::Code;

/// The shipped text of each language.
pub fn shipped(locale: Locale) -> &'static str {
    match locale {
        Locale::Es => "{code}: código de {app}. Caduca en {ttl_minutes} min. No lo compartas.",
        Locale::Ca => {
            "{code} és el teu codi de {app}. Caduca en {ttl_minutes} min. No el comparteixis."
        }
        Locale::Gl => "{code}: código de {app}. Caduca en {ttl_minutes} min. Non o compartas.",
        Locale::Eu => {
            "{code} da zure {app} kodea. {ttl_minutes} minututan iraungiko da. Ez partekatu."
        }
        Locale::Va => {
            "{code} és el teu codi de {app}. Caduca en {ttl_minutes} min. No el compartisques."
        }
        Locale::En => {
            "{code} is your {app} code. It expires in {ttl_minutes} min. Do not share it."
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Code,
    TtlMinutes,
    App,
}

/// A template as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateSpec {
    pub text: String,
    /// Android SMS Retriever: the app's 11-character hash, added on a line of its own.
    pub android_app_hash: Option<String>,
    /// Domain-bound code: `@domain #code` added as the last line.
    pub domain: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateError {
    #[error(
        "unknown placeholder `{{{0}}}`: use {{code}}, {{ttl_minutes}} or {{app}} (write {{{{ and }}}} for braces)"
    )]
    UnknownPlaceholder(String),
    #[error("a `{{` is not closed")]
    Unclosed,
    #[error("a `}}` closes nothing (write }}}} for a brace)")]
    Unopened,
    #[error("the text has no {{code}}")]
    NoCode,
    #[error("an earlier template has the same purpose and locale")]
    Duplicate,
    #[error("the text is empty or longer than 1000 characters")]
    Length,
    #[error("the text contains a control character other than a line break")]
    Control,
    #[error("`android_app_hash` must be the app's 11-character hash (A-Z a-z 0-9 + /)")]
    AppHash,
    #[error("`domain` must be a host name without scheme, port or path, e.g. clave.gob.es")]
    Domain,
    #[error(
        "with a {digits}-digit code it takes {segments} SMS ({alphabet}, {units} units); at most {max} allowed"
    )]
    TooManySegments {
        digits: usize,
        segments: usize,
        alphabet: &'static str,
        units: usize,
        max: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
    android_app_hash: Option<String>,
    domain: Option<String>,
}

impl Template {
    pub fn parse(spec: &TemplateSpec) -> Result<Template, TemplateError> {
        let text = &spec.text;
        if text.trim().is_empty() || text.chars().count() > 1000 {
            return Err(TemplateError::Length);
        }
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(TemplateError::Control);
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::Unopened),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if name.len() < 32 => name.push(c),
                            _ => return Err(TemplateError::Unclosed),
                        }
                    }
                    let piece = match name.as_str() {
                        "code" => Piece::Code,
                        "ttl_minutes" => Piece::TtlMinutes,
                        "app" => Piece::App,
                        _ => return Err(TemplateError::UnknownPlaceholder(name)),
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        if !pieces.contains(&Piece::Code) {
            return Err(TemplateError::NoCode);
        }
        if let Some(hash) = &spec.android_app_hash
            && (hash.len() != 11
                || !hash
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'))
        {
            return Err(TemplateError::AppHash);
        }
        if let Some(domain) = &spec.domain
            && !is_host(domain)
        {
            return Err(TemplateError::Domain);
        }
        Ok(Template {
            pieces,
            android_app_hash: spec.android_app_hash.clone(),
            domain: spec.domain.clone(),
        })
    }

    /// The text with the placeholders filled in; with `autofill`, the app-hash and
    /// domain lines too (SMS only: a push shows the text).
    fn fill(&self, digits: &str, minutes: u64, app: &str, autofill: bool) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(160));
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Code => out.push_str(digits),
                Piece::TtlMinutes => {
                    let _ = write!(out, "{minutes}");
                }
                Piece::App => out.push_str(app),
            }
        }
        if autofill {
            // The hash before the domain line: SMS Retriever only needs the hash
            // somewhere in the text, domain-bound codes need their line last.
            if let Some(hash) = &self.android_app_hash {
                out.push('\n');
                out.push_str(hash);
            }
            if let Some(domain) = &self.domain {
                let _ = write!(out, "\n@{domain} #{digits}");
            }
        }
        out
    }
}

/// A host name as domain-bound codes want it: labels of letters, digits and
/// hyphens, at least two of them.
fn is_host(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').count() >= 2
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An SMS ready to go, and how it goes.
#[derive(Debug)]
pub struct RenderedSms {
    pub text: MessageText,
    pub measure: Measure,
}

/// Every template in force: configured ones by purpose and language, `*` ones for
/// every purpose, and the shipped ones for the rest.
#[derive(Debug, Clone)]
pub struct Templates {
    app: String,
    max_segments: usize,
    by_purpose: HashMap<String, HashMap<Locale, Template>>,
    any_purpose: HashMap<Locale, Template>,
    shipped: Vec<Template>,
}

/// A template entry as configured: which purpose (`*` for all) and language.
pub struct Entry {
    pub purpose: String,
    pub locale: Locale,
    pub spec: TemplateSpec,
}

/// A template that failed, with its place in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {error}")]
pub struct TemplatesError {
    /// e.g. `messages.templates[2] (purpose login, locale eu)`.
    pub what: String,
    pub error: TemplateError,
}

impl Templates {
    /// Build and check: `purposes` are (name, code length, validity in minutes) of
    /// every purpose, so each template is measured with the longest text it can give.
    pub fn new(
        app: &str,
        max_segments: usize,
        entries: Vec<Entry>,
        purposes: &[(String, usize, u64)],
    ) -> Result<Templates, TemplatesError> {
        let mut t = Templates {
            app: app.to_string(),
            max_segments,
            by_purpose: HashMap::new(),
            any_purpose: HashMap::new(),
            shipped: Locale::ALL
                .iter()
                .map(|&l| {
                    Template::parse(&TemplateSpec {
                        text: shipped(l).to_string(),
                        ..TemplateSpec::default()
                    })
                    .expect("shipped templates parse")
                })
                .collect(),
        };
        for (i, entry) in entries.into_iter().enumerate() {
            let what = format!(
                "messages.templates[{i}] (purpose {}, locale {})",
                entry.purpose, entry.locale
            );
            let template = Template::parse(&entry.spec).map_err(|error| TemplatesError {
                what: what.clone(),
                error,
            })?;
            let duplicate = if entry.purpose == "*" {
                t.any_purpose.insert(entry.locale, template).is_some()
            } else {
                t.by_purpose
                    .entry(entry.purpose.clone())
                    .or_default()
                    .insert(entry.locale, template)
                    .is_some()
            };
            if duplicate {
                return Err(TemplatesError {
                    what,
                    error: TemplateError::Duplicate,
                });
            }
        }
        for (purpose, digits, minutes) in purposes {
            for locale in Locale::ALL {
                let longest = "9".repeat(*digits);
                let text = t.get(purpose, locale).fill(&longest, *minutes, app, true);
                let m = encoding::measure(&text);
                if m.segments > max_segments {
                    return Err(TemplatesError {
                        what: format!("the template of purpose {purpose}, locale {locale}"),
                        error: TemplateError::TooManySegments {
                            digits: *digits,
                            segments: m.segments,
                            alphabet: m.alphabet.as_str(),
                            units: m.units,
                            max: max_segments,
                        },
                    });
                }
            }
        }
        Ok(t)
    }

    /// The template of `purpose` in `locale`, and where it comes from.
    pub fn source(&self, purpose: &str, locale: Locale) -> &'static str {
        if self
            .by_purpose
            .get(purpose)
            .is_some_and(|m| m.contains_key(&locale))
        {
            "purpose"
        } else if self.any_purpose.contains_key(&locale) {
            "any_purpose"
        } else {
            "shipped"
        }
    }

    fn get(&self, purpose: &str, locale: Locale) -> &Template {
        self.by_purpose
            .get(purpose)
            .and_then(|m| m.get(&locale))
            .or_else(|| self.any_purpose.get(&locale))
            .unwrap_or_else(|| {
                let i = Locale::ALL.iter().position(|&l| l == locale).unwrap_or(0);
                &self.shipped[i]
            })
    }

    pub fn max_segments(&self) -> usize {
        self.max_segments
    }

    /// The SMS for `code`, valid for about `minutes` more minutes.
    pub fn sms(
        &self,
        purpose: &str,
        locale: Locale,
        code: &Code,
        minutes: u64,
    ) -> Result<RenderedSms, TemplateError> {
        let digits = code.expose_digits();
        let mut text = self
            .get(purpose, locale)
            .fill(&digits, minutes, &self.app, true);
        let measure = encoding::measure(&text);
        if measure.segments > self.max_segments {
            return Err(TemplateError::TooManySegments {
                digits: digits.len(),
                segments: measure.segments,
                alphabet: measure.alphabet.as_str(),
                units: measure.units,
                max: self.max_segments,
            });
        }
        Ok(RenderedSms {
            // Moved, not copied: MessageText wipes it in its turn.
            text: MessageText::new(std::mem::take(&mut *text)),
            measure,
        })
    }

    /// How the SMS of a purpose and language goes, measured with a code of
    /// `digits` digits (for the routing explanation: no real code involved).
    pub fn preview(&self, purpose: &str, locale: Locale, digits: usize, minutes: u64) -> Measure {
        let sample = "0".repeat(digits);
        encoding::measure(
            &self
                .get(purpose, locale)
                .fill(&sample, minutes, &self.app, true),
        )
    }

    /// The text of a push notification: the template without the autofill lines.
    pub fn push_body(
        &self,
        purpose: &str,
        locale: Locale,
        code: &Code,
        minutes: u64,
    ) -> MessageText {
        let digits = code.expose_digits();
        let mut text = self
            .get(purpose, locale)
            .fill(&digits, minutes, &self.app, false);
        MessageText::new(std::mem::take(&mut *text))
    }
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

/// The title and text of an approval request's push (channel `app`): who asks, for
/// what, and the number to compare with the requesting screen. It carries no code:
/// the app answers with its key, not by showing a PIN.
pub fn approval_push(
    locale: Locale,
    requester: &str,
    purpose: &str,
    match_code: MatchCode,
) -> (String, String) {
    let (title, body) = match locale {
        Locale::Es => (
            "Solicitud de acceso",
            format!(
                "{requester} pide tu aprobación ({purpose}). Aprueba solo si ves el número {match_code} en la pantalla donde la pediste."
            ),
        ),
        Locale::Gl => (
            "Solicitude de acceso",
            format!(
                "{requester} pide a túa aprobación ({purpose}). Aproba só se ves o número {match_code} na pantalla onde a pediches."
            ),
        ),
        Locale::Ca | Locale::Va => (
            "Sol·licitud d'accés",
            format!(
                "{requester} demana la teua aprovació ({purpose}). Aprova-la només si veus el número {match_code} a la pantalla on l'has demanada."
            ),
        ),
        Locale::Eu => (
            "Sarbide-eskaera",
            format!(
                "{requester} zure onarpena eskatzen du ({purpose}). Onartu soilik eskatu duzun pantailan {match_code} zenbakia ikusten baduzu."
            ),
        ),
        Locale::En => (
            "Sign-in request",
            format!(
                "{requester} asks for your approval ({purpose}). Approve only if you see the number {match_code} on the screen where you asked."
            ),
        ),
    };
    (format!("{title} · {match_code}"), body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpd_adapters::smpp::encoding::Alphabet;

    #[test]
    fn approval_pushes_name_the_requester_and_the_match_code_in_every_language() {
        let m = MatchCode::new(42).unwrap();
        for locale in Locale::ALL {
            let (title, body) = approval_push(locale, "Agencia Tributaria", "login", m);
            assert!(title.ends_with("· 042"), "{title}");
            assert!(
                body.contains("Agencia Tributaria") && body.contains("042"),
                "{body}"
            );
        }
    }

    fn spec(text: &str) -> TemplateSpec {
        TemplateSpec {
            text: text.into(),
            ..TemplateSpec::default()
        }
    }

    fn one(text: &str, max: usize) -> Result<Templates, TemplatesError> {
        Templates::new(
            "Cl@ve",
            max,
            vec![Entry {
                purpose: "login".into(),
                locale: Locale::Eu,
                spec: spec(text),
            }],
            &[("login".into(), 6, 10)],
        )
    }

    #[test]
    fn every_shipped_language_fits_one_sms_with_the_longest_code() {
        let t = Templates::new("Cl@ve", 1, Vec::new(), &[("login".into(), 10, 1440)]).unwrap();
        let code = Code::parse("0423171234").unwrap();
        let mut texts = std::collections::HashSet::new();
        for locale in Locale::ALL {
            let sms = t.sms("login", locale, &code, 1440).unwrap();
            let text = sms.text.expose();
            assert!(text.starts_with("0423171234"), "{locale}: {text}");
            assert!(text.contains("1440") && text.contains("Cl@ve"), "{locale}");
            assert_eq!(sms.measure.segments, 1, "{locale}: {text}");
            assert!(texts.insert(text.to_string()), "{locale} repeats another");
            let want = match locale {
                Locale::Es | Locale::Gl => Alphabet::Ucs2,
                _ => Alphabet::Gsm7,
            };
            assert_eq!(sms.measure.alphabet, want, "{locale}: {text}");
        }
    }

    #[test]
    fn gsm_and_ucs2_boundaries() {
        let code = Code::parse("123456").unwrap();
        let cases: [(&str, Alphabet, usize); 8] = [
            // ñ and ü are in GSM 03.38 (Galego, Euskara loanwords): one septet each.
            (
                "Kode berria: {code}. Ñandu eta pingüino",
                Alphabet::Gsm7,
                39,
            ),
            // € and [ ] are in the extension table: two septets each.
            ("{code} €", Alphabet::Gsm7, 9),
            ("[{code}]", Alphabet::Gsm7, 10),
            // ç (lower case) is not; Ç is. One ç turns the text to UCS-2.
            ("Código {code}: ça", Alphabet::Ucs2, 17),
            ("ÇA {code}", Alphabet::Gsm7, 9),
            ("{code} Euskal Herria ☺", Alphabet::Ucs2, 22),
            // Outside the BMP: a surrogate pair, two UCS-2 units.
            ("{code} 😀", Alphabet::Ucs2, 9),
            ("{code} á", Alphabet::Ucs2, 8),
        ];
        for (text, alphabet, units) in cases {
            let t = one(text, 10).unwrap();
            let m = t.sms("login", Locale::Eu, &code, 10).unwrap().measure;
            assert_eq!(
                (m.alphabet, m.units, m.segments),
                (alphabet, units, 1),
                "{text}"
            );
        }
        // 154 + a 6-digit code = 160 septets: one SMS; one € more: two.
        let fill = "a".repeat(154);
        let t = one(&format!("{fill}{{code}}"), 10).unwrap();
        assert_eq!(
            t.sms("login", Locale::Eu, &code, 10)
                .unwrap()
                .measure
                .segments,
            1
        );
        let t = one(&format!("{fill}€{{code}}"), 10).unwrap();
        let m = t.sms("login", Locale::Eu, &code, 10).unwrap().measure;
        assert_eq!((m.units, m.segments), (162, 2));
        // 64 ó + 6 digits = 70 UCS-2 units: one; 65: two.
        let t = one(&format!("{}{{code}}", "ó".repeat(64)), 10).unwrap();
        assert_eq!(
            t.sms("login", Locale::Eu, &code, 10)
                .unwrap()
                .measure
                .segments,
            1
        );
        let t = one(&format!("{}{{code}}", "ó".repeat(65)), 10).unwrap();
        assert_eq!(
            t.sms("login", Locale::Eu, &code, 10)
                .unwrap()
                .measure
                .segments,
            2
        );
    }

    #[test]
    fn the_segment_cap_is_checked_at_load_with_the_longest_code() {
        let text = format!("{}{{code}}", "a".repeat(152));
        // 152 + 6 digits = 158: fits one SMS with purpose login's 6-digit codes…
        assert!(one(&text, 1).is_ok());
        // …but not with 10 digits.
        let e = Templates::new(
            "x",
            1,
            vec![Entry {
                purpose: "*".into(),
                locale: Locale::En,
                spec: spec(&text),
            }],
            &[("long".into(), 10, 10)],
        )
        .unwrap_err();
        assert!(
            matches!(
                e.error,
                TemplateError::TooManySegments {
                    segments: 2,
                    max: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("purpose long, locale en"), "{e}");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        for (text, want) in [
            ("Your code", TemplateError::NoCode),
            (
                "{code} {name}",
                TemplateError::UnknownPlaceholder("name".into()),
            ),
            ("{code} {app", TemplateError::Unclosed),
            ("{code} }", TemplateError::Unopened),
            ("", TemplateError::Length),
            ("{code}\u{7}", TemplateError::Control),
        ] {
            assert_eq!(Template::parse(&spec(text)), Err(want), "{text:?}");
        }
        let t = Template::parse(&spec("{{literal}} {code}")).unwrap();
        assert_eq!(&*t.fill("1", 1, "a", true), "{literal} 1");
    }

    #[test]
    fn autofill_lines_end_the_sms_and_stay_out_of_pushes() {
        let t = Templates::new(
            "Cl@ve",
            3,
            vec![Entry {
                purpose: "login".into(),
                locale: Locale::En,
                spec: TemplateSpec {
                    text: "Your {app} code is {code}".into(),
                    android_app_hash: Some("FA+9qCX9VSu".into()),
                    domain: Some("clave.gob.es".into()),
                },
            }],
            &[("login".into(), 6, 10)],
        )
        .unwrap();
        let code = Code::parse("123456").unwrap();
        let sms = t.sms("login", Locale::En, &code, 10).unwrap();
        assert_eq!(
            sms.text.expose(),
            "Your Cl@ve code is 123456\nFA+9qCX9VSu\n@clave.gob.es #123456"
        );
        let push = t.push_body("login", Locale::En, &code, 10);
        assert_eq!(push.expose(), "Your Cl@ve code is 123456");
        // Other purposes and languages keep the shipped text.
        assert_eq!(t.source("login", Locale::Es), "shipped");
        assert_eq!(t.source("login", Locale::En), "purpose");
        for (hash, domain) in [
            (Some("short"), None),
            (Some("FA+9qCX9VS!"), None),
            (None, Some("https://clave.gob.es")),
            (None, Some("clave.gob.es:443")),
            (None, Some("localhost")),
        ] {
            let s = TemplateSpec {
                text: "{code}".into(),
                android_app_hash: hash.map(Into::into),
                domain: domain.map(Into::into),
            };
            assert!(Template::parse(&s).is_err(), "{hash:?} {domain:?}");
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
