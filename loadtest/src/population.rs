//! The people of a run, made on demand from their index and the seed: an identity
//! number (DNI, or NIE for foreign residents, with the right check letter), a mobile
//! number (Spanish, or foreign with its country's prefix), maybe an app on APNs, FCM
//! or HMS, a language, and an address to ask from. Nothing is stored: person `i` is
//! the same every time it is asked for, and no two people share an identity number
//! or a phone number.

use crate::rng::{Rng, mix};
use crate::scenario::PopulationConfig;

/// `DNI` check letters, by number modulo 23.
const LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";

/// DNI numbers have 8 digits; NIE numbers a letter (X, Y, Z = 0, 1, 2) and 7 digits.
const DNI_SPACE: u64 = 100_000_000;
const NIE_SPACE: u64 = 30_000_000;

/// The DNI of `number` (below 10^8): eight digits and the check letter.
pub fn dni(number: u64) -> String {
    format!("{number:08}{}", LETTERS[(number % 23) as usize] as char)
}

/// The NIE of `number` (below 3·10^7): X, Y or Z for its first digit, seven digits,
/// and the check letter computed as for a DNI with the letter's digit in front.
pub fn nie(number: u64) -> String {
    let prefix = [b'X', b'Y', b'Z'][(number / 10_000_000) as usize] as char;
    format!(
        "{prefix}{:07}{}",
        number % 10_000_000,
        LETTERS[(number % 23) as usize] as char
    )
}

/// Whether `s` is a DNI or NIE with the right letter.
pub fn valid_identity(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 9 || !b[1..8].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let lead = match b[0] {
        b'X' => 0,
        b'Y' => 1,
        b'Z' => 2,
        d if d.is_ascii_digit() => u64::from(d - b'0'),
        _ => return false,
    };
    let n = s[1..8]
        .parse::<u64>()
        .map(|rest| lead * 10_000_000 + rest)
        .unwrap_or(u64::MAX);
    n != u64::MAX && LETTERS[(n % 23) as usize] == b[8]
}

/// A number pattern: `+`, fixed digits, then `X` for each digit to fill.
#[derive(Debug, Clone)]
pub struct Pattern {
    fixed: String,
    free: u32,
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, String> {
        let rest = s
            .strip_prefix('+')
            .ok_or_else(|| format!("`{s}` does not start with `+`"))?;
        let fixed: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let free = rest[fixed.len()..].chars().filter(|&c| c == 'X').count() as u32;
        if fixed.len() + free as usize != rest.len() {
            return Err(format!("`{s}` is not digits followed by X"));
        }
        if fixed.is_empty() || !(4..=10).contains(&free) || fixed.len() + free as usize > 15 {
            return Err(format!(
                "`{s}` needs a prefix and 4 to 10 X, at most 15 digits in all"
            ));
        }
        Ok(Pattern { fixed, free })
    }

    /// How many numbers the pattern holds.
    pub fn size(&self) -> u64 {
        10u64.pow(self.free)
    }

    /// The `k`-th number of the pattern (modulo its size), in E.164.
    pub fn number(&self, k: u64) -> String {
        format!(
            "+{}{:0width$}",
            self.fixed,
            k % self.size(),
            width = self.free as usize
        )
    }
}

/// Mobile ranges of the countries foreign numbers come from: ranges that
/// libphonenumber's metadata (and so otpd) knows as mobile throughout.
pub fn foreign_pattern(country: &str) -> Option<&'static str> {
    Some(match country {
        "FR" => "+3360XXXXXXX",
        "PT" => "+35191XXXXXXX",
        "GB" => "+4471XXXXXXXX",
        "DE" => "+49170XXXXXXX",
        "RO" => "+40711XXXXXX",
        "MA" => "+21260XXXXXXX",
        "IT" => "+3931XXXXXXXX",
        "CO" => "+57300XXXXXXX",
        "EC" => "+593960XXXXXX",
        "US" => "+120222XXXXX",
        _ => return None,
    })
}

/// Spanish mobiles: 6 and eight digits.
const SPANISH: &str = "+346XXXXXXXX";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Apns,
    Fcm,
    Hms,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Apns => "apns",
            Platform::Fcm => "fcm",
            Platform::Hms => "hms",
        }
    }

    fn parse(s: &str) -> Platform {
        match s {
            "apns" => Platform::Apns,
            "hms" => Platform::Hms,
            _ => Platform::Fcm,
        }
    }
}

#[derive(Debug, Clone)]
pub struct App {
    pub platform: Platform,
    /// The device token, in the provider's format.
    pub token: String,
    /// Seed of the Ed25519 key the app enrolls: the same key at registration and
    /// when it answers, without keeping millions of keys.
    pub key_seed: [u8; 32],
    /// Asked to approve in the app rather than to type a PIN.
    pub approves: bool,
}

#[derive(Debug, Clone)]
pub struct Person {
    pub subject: String,
    /// E.164, with `+`.
    pub phone: String,
    pub app: Option<App>,
    pub locale: &'static str,
    /// The end-user address the person asks from.
    pub ip: String,
}

/// Weighted choices, drawn with a uniform number in [0, 1).
#[derive(Debug, Clone)]
pub struct Weighted<T> {
    items: Vec<(T, f64)>,
}

impl<T: Clone> Weighted<T> {
    pub fn new(items: impl IntoIterator<Item = (T, f64)>) -> Self {
        let mut items: Vec<(T, f64)> = items.into_iter().filter(|(_, w)| *w > 0.0).collect();
        let total: f64 = items.iter().map(|(_, w)| w).sum();
        let mut acc = 0.0;
        for (_, w) in &mut items {
            acc += *w / total;
            *w = acc;
        }
        Self { items }
    }

    pub fn pick(&self, u: f64) -> Option<T> {
        self.items
            .iter()
            .find(|(_, upto)| u < *upto)
            .or(self.items.last())
            .map(|(t, _)| t.clone())
    }
}

pub struct Population {
    seed: u64,
    subjects: u64,
    nie_people: u64,
    foreign_share: f64,
    foreign: Weighted<(String, Pattern)>,
    app_share: f64,
    apps: Weighted<Platform>,
    approval_share: f64,
    locales: Weighted<&'static str>,
    ips: u32,
}

impl Population {
    pub fn new(config: &PopulationConfig, seed: u64) -> Self {
        let foreign = Weighted::new(config.foreign.iter().filter_map(|(c, w)| {
            let p = Pattern::parse(foreign_pattern(c)?).expect("built-in patterns are valid");
            Some(((c.clone(), p), *w))
        }));
        let locales = Weighted::new(config.locales.iter().filter_map(|(l, w)| {
            let l = crate::scenario::LOCALES.iter().find(|k| *k == l)?;
            Some((*l, *w))
        }));
        Self {
            seed,
            subjects: config.subjects,
            nie_people: ((config.nie_share * config.subjects as f64) as u64).min(NIE_SPACE),
            foreign_share: config.foreign_share,
            foreign,
            app_share: config.app_share,
            apps: Weighted::new(config.apps.iter().map(|(p, w)| (Platform::parse(p), *w))),
            approval_share: config.approval_share,
            locales,
            ips: config.ips,
        }
    }

    pub fn len(&self) -> u64 {
        self.subjects
    }

    pub fn is_empty(&self) -> bool {
        self.subjects == 0
    }

    /// Person `i` (taken modulo the population).
    pub fn person(&self, i: u64) -> Person {
        let i = i % self.subjects;
        let mut rng = Rng::new(mix(self.seed ^ mix(i)));
        // The first `nie_people` indices have NIEs, the rest DNIs; both are spread
        // over their number spaces by a bijection, so they look random and never
        // repeat.
        let subject = if i < self.nie_people {
            nie(spread(i, NIE_SPACE))
        } else {
            dni(spread(i, DNI_SPACE))
        };
        let foreign = rng.unit() < self.foreign_share;
        let (phone, locale) = match foreign.then(|| self.foreign.pick(rng.unit())).flatten() {
            Some((_, pattern)) => (pattern.number(spread(i, pattern.size())), "en"),
            None => (
                Pattern::parse(SPANISH)
                    .expect("valid")
                    .number(spread(i, DNI_SPACE)),
                self.locales.pick(rng.unit()).unwrap_or("es"),
            ),
        };
        let app = (rng.unit() < self.app_share)
            .then(|| self.apps.pick(rng.unit()))
            .flatten()
            .map(|platform| App {
                token: token(platform, i, self.seed),
                platform,
                key_seed: key_seed(i, self.seed),
                approves: false,
            });
        let ip = address(rng.below(u64::from(self.ips)) as u32);
        // Drawn last, so that the other draws are those of a population without
        // approvals.
        let mut app = app;
        if let Some(a) = &mut app {
            a.approves = rng.unit() < self.approval_share;
        }
        Person {
            subject,
            phone,
            app,
            locale,
            ip,
        }
    }
}

/// Person `i`'s key seed.
fn key_seed(i: u64, seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (k, chunk) in out.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&mix(seed ^ mix(i ^ (0x6B65_7900 + k as u64))).to_le_bytes());
    }
    out
}

/// A bijection of [0, space) for the spaces used here (powers of ten times 1 or 3):
/// multiplying by a number prime to 2, 3 and 5 permutes the residues.
fn spread(i: u64, space: u64) -> u64 {
    const STRIDE: u64 = 7_919 * 104_729; // primes: coprime with every space used
    ((u128::from(i % space) * u128::from(STRIDE) + 12_345) % u128::from(space)) as u64
}

/// A device token in the provider's shape, unique to person `i`.
fn token(platform: Platform, i: u64, seed: u64) -> String {
    let words = [
        mix(i ^ seed),
        mix(i.wrapping_add(1) ^ seed),
        mix(i ^ 0xA5A5),
        i,
    ];
    match platform {
        Platform::Apns => words.iter().map(|w| format!("{w:016x}")).collect(),
        Platform::Fcm => format!("load{i}:APA91b{:016x}{:016x}", words[0], words[1]),
        Platform::Hms => format!("IQAAAACy0kYkAAB{:016x}{i}", words[0]),
    }
}

/// The `n`-th end-user address: 10.x.y.z spread over the private range.
pub fn address(n: u32) -> String {
    let n = n.wrapping_mul(2_654_435_761) >> 8;
    format!("10.{}.{}.{}", (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn check_letters_are_right() {
        // Published examples: 12345678Z, and X0000000T (0 mod 23 → T).
        assert_eq!(dni(12_345_678), "12345678Z");
        assert_eq!(nie(0), "X0000000T");
        assert_eq!(nie(10_000_000 + 1_234_567), "Y1234567X");
        assert!(valid_identity("12345678Z"));
        assert!(valid_identity("Y1234567X"));
        assert!(!valid_identity("12345678A"));
        assert!(!valid_identity("W1234567X"));
    }

    #[test]
    fn people_are_distinct_valid_and_repeatable() {
        let config = PopulationConfig {
            subjects: 20_000,
            nie_share: 0.2,
            foreign_share: 0.3,
            ..PopulationConfig::default()
        };
        let pop = Population::new(&config, 7);
        let mut subjects = HashSet::new();
        let mut phones = HashSet::new();
        let (mut nies, mut foreign, mut apps) = (0, 0, 0);
        for i in 0..config.subjects {
            let p = pop.person(i);
            assert!(valid_identity(&p.subject), "{}", p.subject);
            nies += usize::from(!p.subject.as_bytes()[0].is_ascii_digit());
            foreign += usize::from(!p.phone.starts_with("+34"));
            apps += usize::from(p.app.is_some());
            assert!(subjects.insert(p.subject.clone()), "subject twice");
            assert!(phones.insert(p.phone.clone()), "phone twice: {}", p.phone);
        }
        assert_eq!(nies, 4000);
        assert!((5400..6600).contains(&foreign), "{foreign}");
        assert!((5400..6600).contains(&apps), "{apps}");
        assert_eq!(pop.person(5).phone, pop.person(5).phone);
        assert_eq!(
            pop.person(5).subject,
            Population::new(&config, 7).person(5).subject
        );
    }

    #[test]
    fn patterns_fill_their_digits() {
        let p = Pattern::parse("+2126XXXXXXXX").unwrap();
        assert_eq!(p.number(42), "+212600000042");
        assert!(Pattern::parse("2126XX").is_err());
        assert!(Pattern::parse("+21a6XXXX").is_err());
        assert!(Pattern::parse("+2126XX").is_err());
    }

    #[test]
    fn weights_pick_in_proportion() {
        let w = Weighted::new([("a", 1.0), ("b", 3.0), ("c", 0.0)]);
        assert_eq!(w.pick(0.2), Some("a"));
        assert_eq!(w.pick(0.3), Some("b"));
        assert_eq!(w.pick(0.999_999), Some("b"));
    }
}

#[cfg(test)]
mod numbers_otpd_accepts {
    use super::*;

    /// Every pattern's numbers are mobiles by libphonenumber's metadata, as otpd
    /// checks them (a number otpd refuses would be load that measures nothing).
    #[test]
    fn every_pattern_makes_mobile_numbers() {
        let rules = otpd::numbers::reader::NumberRules::new("ES", true).unwrap();
        let mut patterns: Vec<&str> = ["FR", "PT", "GB", "DE", "RO", "MA", "IT", "CO", "EC", "US"]
            .iter()
            .map(|c| foreign_pattern(c).unwrap())
            .collect();
        patterns.push(SPANISH);
        let mut refused = Vec::new();
        for pattern in patterns {
            let p = Pattern::parse(pattern).unwrap();
            for k in 0..400 {
                let n = p.number(spread(k * 7_919, p.size()));
                if let Err(e) = rules.parse_uncached(&n) {
                    refused.push(format!("{n}: {}", e.reason()));
                }
            }
        }
        assert!(
            refused.is_empty(),
            "{} refused: {:?}",
            refused.len(),
            &refused[..refused.len().min(20)]
        );
    }
}
