//! Numbers as people type them, turned into E.164 and checked against libphonenumber's
//! metadata (the `phonenumber` crate).
//!
//! Accepted: `+34 600 12 34 56`, `0034600123456`, `34600123456` (the country code
//! without `+`, as Cl@ve asks for it), `600123456` (national, in the default region),
//! with spaces, dots, dashes, slashes and parentheses anywhere. A bare digit string is
//! read as national first and, when that gives no valid number, as international.
//!
//! Parsing and validating with the metadata costs microseconds (regular expressions
//! per country), so results are kept in a bounded cache keyed by the compacted input:
//! the same person asking again, or a resend, costs a hash lookup. The cache is
//! sharded to keep lock holds short, and a full shard is simply cleared, so a flood of
//! distinct numbers can never make it grow.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};

use parking_lot::Mutex;
use phonenumber::metadata::DATABASE;
use phonenumber::{PhoneNumber, Type, country};
use serde::Serialize;

use crate::numbers::e164::E164;

/// A country (ISO 3166-1 alpha-2, as libphonenumber's regions), two ASCII capitals.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region([u8; 2]);

impl Region {
    /// `ES`, `es`: any two ASCII letters, upper-cased; whether libphonenumber knows the
    /// region is checked where it matters ([`NumberRules::new`]).
    pub fn parse(s: &str) -> Option<Region> {
        let b = s.as_bytes();
        (b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic))
            .then(|| Region([b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()]))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII by construction")
    }

    fn id(self) -> Option<country::Id> {
        self.as_str().parse().ok()
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Region({})", self.as_str())
    }
}

impl Serialize for Region {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What kind of line a number is, per the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NumberKind {
    Mobile,
    FixedLine,
    /// Where the numbering plan does not tell the two apart (the NANP: US, Canada…).
    FixedLineOrMobile,
    TollFree,
    PremiumRate,
    SharedCost,
    PersonalNumber,
    Voip,
    Pager,
    Uan,
    Voicemail,
    /// Not known: numbers stored before the type was recorded, or not classified.
    #[default]
    Unknown,
}

impl NumberKind {
    pub const ALL: [NumberKind; 12] = [
        NumberKind::Mobile,
        NumberKind::FixedLine,
        NumberKind::FixedLineOrMobile,
        NumberKind::TollFree,
        NumberKind::PremiumRate,
        NumberKind::SharedCost,
        NumberKind::PersonalNumber,
        NumberKind::Voip,
        NumberKind::Pager,
        NumberKind::Uan,
        NumberKind::Voicemail,
        NumberKind::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NumberKind::Mobile => "mobile",
            NumberKind::FixedLine => "fixed_line",
            NumberKind::FixedLineOrMobile => "fixed_line_or_mobile",
            NumberKind::TollFree => "toll_free",
            NumberKind::PremiumRate => "premium_rate",
            NumberKind::SharedCost => "shared_cost",
            NumberKind::PersonalNumber => "personal_number",
            NumberKind::Voip => "voip",
            NumberKind::Pager => "pager",
            NumberKind::Uan => "uan",
            NumberKind::Voicemail => "voicemail",
            NumberKind::Unknown => "unknown",
        }
    }

    /// Whether an SMS reaches a handset on it.
    pub fn takes_sms(self) -> bool {
        matches!(self, NumberKind::Mobile | NumberKind::FixedLineOrMobile)
    }

    fn of(t: Type) -> NumberKind {
        match t {
            Type::Mobile => NumberKind::Mobile,
            Type::FixedLine => NumberKind::FixedLine,
            Type::FixedLineOrMobile => NumberKind::FixedLineOrMobile,
            Type::TollFree => NumberKind::TollFree,
            Type::PremiumRate => NumberKind::PremiumRate,
            Type::SharedCost => NumberKind::SharedCost,
            Type::PersonalNumber => NumberKind::PersonalNumber,
            Type::Voip => NumberKind::Voip,
            Type::Pager => NumberKind::Pager,
            Type::Uan => NumberKind::Uan,
            Type::Voicemail => NumberKind::Voicemail,
            _ => NumberKind::Unknown,
        }
    }
}

impl fmt::Display for NumberKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the metadata says of a number beyond its digits: recorded on the
/// verification, shown by the API, used to pick a language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NumberLine {
    /// `None` for non-geographic numbers, and for numbers taken without metadata.
    pub country: Option<Region>,
    pub kind: NumberKind,
}

/// A number that passed: its E.164 form, country and kind of line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberInfo {
    pub e164: E164,
    /// `None` for non-geographic numbers (`+882…`, `+883…`: international networks).
    pub country: Option<Region>,
    pub kind: NumberKind,
}

/// Why a number was refused; [`NumberError::reason`] is the stable machine form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NumberError {
    #[error("the number is empty")]
    Empty,
    #[error(
        "the number contains a character that is not a digit, a leading `+` or a separator (space . - / ( ))"
    )]
    InvalidCharacter,
    #[error("the number is too short for its country")]
    TooShort,
    #[error("the number is too long for its country")]
    TooLong,
    #[error("the number does not start with an assigned country calling code")]
    InvalidCountryCode,
    #[error("no such number exists in its country's numbering plan")]
    InvalidNumber,
    #[error("the number is a {0} line, not a mobile one; only mobile numbers can receive codes")]
    NotMobile(NumberKind),
    #[error(
        "the number belongs to no country (a satellite phone or an international network); codes are not sent to such numbers"
    )]
    NonGeographic,
}

impl NumberInfo {
    pub fn line(&self) -> NumberLine {
        NumberLine {
            country: self.country,
            kind: self.kind,
        }
    }
}

impl NumberError {
    pub fn reason(self) -> &'static str {
        match self {
            NumberError::Empty => "empty",
            NumberError::InvalidCharacter => "invalid_character",
            NumberError::TooShort => "too_short",
            NumberError::TooLong => "too_long",
            NumberError::InvalidCountryCode => "invalid_country_code",
            NumberError::InvalidNumber => "invalid_number",
            NumberError::NotMobile(_) => "not_mobile",
            NumberError::NonGeographic => "non_geographic",
        }
    }
}

/// The calling codes that belong to no country (ITU-T E.164 "global services"):
/// international freephone and shared cost (800, 808), Inmarsat (870), universal
/// personal telecommunications (878), global mobile satellite systems (881: Iridium,
/// Globalstar…), international networks (882, 883), international emergency and
/// premium rate services (888, 979). Reaching them costs much, and they escape every
/// limit a country has.
const NON_GEOGRAPHIC: [u64; 9] = [800, 808, 870, 878, 881, 882, 883, 888, 979];

/// Whether `n` is under a non-geographic calling code. Calling codes are prefix-free
/// and these are all three digits long, so its first three digits tell.
pub fn is_non_geographic(n: E164) -> bool {
    let digits = n.digits();
    let len = digits.checked_ilog10().map_or(1, |l| l + 1);
    len > 3 && NON_GEOGRAPHIC.contains(&(digits / 10u64.pow(len - 3)))
}

/// How numbers are read: the region assumed for national forms and whether only
/// mobile lines are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberRules {
    default_region: Region,
    mobile_only: bool,
    /// Numbers of the non-geographic calling codes (satellite, international
    /// networks) are accepted.
    non_geographic: bool,
    /// The default region's country calling code, to tell `34600…` (international
    /// without `+`) from a national number when neither reading is valid.
    default_code: u16,
}

/// A region libphonenumber has no metadata for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown region {0:?}: expected an ISO 3166-1 alpha-2 code libphonenumber knows, such as ES"
)]
pub struct UnknownRegion(pub String);

/// Regular expressions libphonenumber's metadata keeps compiled.
///
/// The metadata compiles its patterns on first use into one LRU cache of 100. Numbers
/// from a dozen countries use more than that, so under load every parse evicted and
/// recompiled patterns (regex compilation was a tenth of otpd's CPU in a national load
/// test with 4 % foreign numbers). Every country's patterns together are a few
/// thousand; the ones traffic uses stay compiled.
const REGEX_CACHE: usize = 4096;

fn widen_regex_cache() {
    let cache = DATABASE.cache();
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if cache.capacity() < REGEX_CACHE {
        cache.set_capacity(REGEX_CACHE);
    }
}

impl NumberRules {
    pub fn new(default_region: &str, mobile_only: bool) -> Result<NumberRules, UnknownRegion> {
        let unknown = || UnknownRegion(default_region.to_string());
        let region = Region::parse(default_region).ok_or_else(unknown)?;
        let meta = DATABASE.by_id(region.as_str()).ok_or_else(unknown)?;
        widen_regex_cache();
        Ok(NumberRules {
            default_region: region,
            mobile_only,
            non_geographic: false,
            default_code: meta.country_code(),
        })
    }

    /// Accept numbers that belong to no country (`numbers.allow_non_geographic`):
    /// satellite phones and international networks, which cost much to reach and
    /// escape every per-country limit.
    pub fn allow_non_geographic(mut self, allow: bool) -> Self {
        self.non_geographic = allow;
        self
    }

    /// Parse and validate without the cache.
    pub fn parse_uncached(&self, input: &str) -> Result<NumberInfo, NumberError> {
        self.parse_compact(&compact(input)?)
    }

    fn parse_compact(&self, compact: &str) -> Result<NumberInfo, NumberError> {
        if let Some(info) = self.parse_plain(compact) {
            return self.admit(info);
        }
        self.parse_with_crate(compact)
    }

    /// A valid number of a region with nothing to strip, read without the crate's
    /// parser (its regexes and allocations cost more than the rest of a request's
    /// validation). Anything else, valid or not, goes to the crate.
    fn parse_plain(&self, compact: &str) -> Option<NumberInfo> {
        let international = compact
            .strip_prefix('+')
            .or_else(|| compact.strip_prefix("00"));
        let (code, national) = if let Some(digits) = international {
            crate::numbers::metadata::split_calling_code(digits)?
        } else if compact.starts_with(&self.default_code.to_string()) {
            // The crate may read a leading home code as the country: ask it.
            return None;
        } else {
            (self.default_code, compact)
        };
        let verdict = crate::numbers::metadata::judge_plain(code, national)?;
        info(code, national, &verdict)
    }

    fn admit(&self, info: NumberInfo) -> Result<NumberInfo, NumberError> {
        if !self.non_geographic && is_non_geographic(info.e164) {
            return Err(NumberError::NonGeographic);
        }
        if self.mobile_only && !info.kind.takes_sms() {
            return Err(NumberError::NotMobile(info.kind));
        }
        Ok(info)
    }

    /// Parse with the crate's parser, then validate.
    fn parse_with_crate(&self, compact: &str) -> Result<NumberInfo, NumberError> {
        let info = if let Some(digits) = compact.strip_prefix('+') {
            international(digits)?
        } else if let Some(digits) = compact.strip_prefix("00") {
            international(digits)?
        } else {
            let national = national(self.default_region, compact);
            match national {
                Ok(info) => info,
                Err(national_error) => match international(compact) {
                    Ok(info) => info,
                    Err(international_error) => {
                        // Say what is wrong with the reading the person most likely
                        // meant: international when it starts with the home country
                        // code and is longer than a national number.
                        let meant_international = compact
                            .starts_with(&self.default_code.to_string())
                            && national_error == NumberError::TooLong;
                        return Err(if meant_international {
                            international_error
                        } else {
                            national_error
                        });
                    }
                },
            }
        };
        self.admit(info)
    }
}

/// The shape of what [`NumberParser::parse`] reads (ECMA-262 and Rust syntax alike),
/// for the OpenAPI description: separators, at most one `+` before the first digit,
/// 1 to 17 digits. Whether the digits make a number is the metadata's call.
pub const INPUT_PATTERN: &str = r"^[ .\-/()\t\u00a0\u2009\u202f]*\+?(?:[ .\-/()\t\u00a0\u2009\u202f]*[0-9]){1,17}[ .\-/()\t\u00a0\u2009\u202f]*$";

/// Separators people put in numbers.
fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '.' | '-' | '/' | '(' | ')' | '\t' | '\u{a0}' | '\u{2009}' | '\u{202f}'
    )
}

/// The most digits accepted: `00` plus 15 digits of E.164.
const MAX_INPUT_DIGITS: usize = 17;

/// `+` (if it came first) and the digits, or why the input is not a number at all.
fn compact(input: &str) -> Result<String, NumberError> {
    let mut out = String::with_capacity(18);
    let mut digits = 0usize;
    for c in input.chars() {
        if c.is_ascii_digit() {
            digits += 1;
            if digits > MAX_INPUT_DIGITS {
                return Err(NumberError::TooLong);
            }
            out.push(c);
        } else if c == '+' && out.is_empty() {
            out.push('+');
        } else if !is_separator(c) {
            return Err(NumberError::InvalidCharacter);
        }
    }
    if digits == 0 {
        return Err(NumberError::Empty);
    }
    Ok(out)
}

fn international(digits: &str) -> Result<NumberInfo, NumberError> {
    if digits.starts_with('0') {
        return Err(NumberError::InvalidCountryCode);
    }
    let parsed = phonenumber::parse(None, format!("+{digits}")).map_err(parse_error)?;
    check(&parsed)
}

fn national(region: Region, digits: &str) -> Result<NumberInfo, NumberError> {
    let parsed = phonenumber::parse(region.id(), digits).map_err(parse_error)?;
    check(&parsed)
}

fn parse_error(e: phonenumber::ParseError) -> NumberError {
    match e {
        phonenumber::ParseError::InvalidCountryCode => NumberError::InvalidCountryCode,
        phonenumber::ParseError::TooLong => NumberError::TooLong,
        // NoNumber: fewer than three digits, or nothing the parser recognises.
        _ => NumberError::TooShort,
    }
}

/// Validate a parsed number against its country's metadata.
fn check(number: &PhoneNumber) -> Result<NumberInfo, NumberError> {
    let code = number.code().value();
    let national = number.national();
    let verdict =
        crate::numbers::metadata::judge(code, &national.to_string(), &national.value().to_string());
    if !verdict.valid {
        let Some(metas) = DATABASE.by_code(&code) else {
            return Err(NumberError::InvalidCountryCode);
        };
        // Lengths of the national significant number, over every region sharing the
        // code: shorter than all is too short, longer than all too long.
        let len = national.value().to_string().len() as u16 + u16::from(national.zeros());
        // The metadata lists lengths per type of line (the general one is often
        // empty), so take them all.
        let lengths = metas.iter().flat_map(|m| {
            let d = m.descriptors();
            std::iter::once(d.general())
                .chain(LINE_TYPES.iter().filter_map(|t| d.get(*t)))
                .flat_map(|desc| desc.possible_length().iter().copied())
        });
        let (min, max) = lengths.fold((u16::MAX, 0), |(lo, hi), l| (lo.min(l), hi.max(l)));
        return Err(if len < min {
            NumberError::TooShort
        } else if len > max {
            NumberError::TooLong
        } else {
            NumberError::InvalidNumber
        });
    }
    info(code, national, &verdict).ok_or(NumberError::InvalidNumber)
}

/// A valid number's facts: E.164 is the calling code and the national number with
/// its zeros.
fn info(
    code: u16,
    national: impl fmt::Display,
    verdict: &crate::numbers::metadata::Verdict,
) -> Option<NumberInfo> {
    let digits: u64 = format!("{code}{national}").parse().ok()?;
    Some(NumberInfo {
        e164: E164::from_digits_unchecked(digits),
        country: verdict.meta.and_then(|m| Region::parse(m.id())),
        kind: NumberKind::of(verdict.kind),
    })
}

const LINE_TYPES: [Type; 11] = [
    Type::Mobile,
    Type::FixedLine,
    Type::FixedLineOrMobile,
    Type::TollFree,
    Type::PremiumRate,
    Type::SharedCost,
    Type::PersonalNumber,
    Type::Voip,
    Type::Pager,
    Type::Uan,
    Type::Voicemail,
];

type Cached = Result<NumberInfo, NumberError>;
type Shard = Mutex<HashMap<Box<str>, Cached>>;

const SHARDS: usize = 16;

/// [`NumberRules`] with a bounded cache in front.
pub struct NumberParser {
    rules: NumberRules,
    shards: Box<[Shard]>,
    per_shard: usize,
    hasher: RandomState,
}

impl NumberParser {
    /// A parser remembering up to about `capacity` inputs (0: no cache).
    pub fn new(rules: NumberRules, capacity: usize) -> NumberParser {
        NumberParser {
            rules,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            hasher: RandomState::new(),
        }
    }

    pub fn rules(&self) -> &NumberRules {
        &self.rules
    }

    pub fn parse(&self, input: &str) -> Result<NumberInfo, NumberError> {
        let compact = compact(input)?;
        if self.per_shard == 0 {
            return self.rules.parse_compact(&compact);
        }
        let shard = &self.shards[self.hasher.hash_one(&compact) as usize % SHARDS];
        if let Some(hit) = shard.lock().get(compact.as_str()) {
            return *hit;
        }
        let result = self.rules.parse_compact(&compact);
        let mut map = shard.lock();
        if map.len() >= self.per_shard {
            map.clear();
        }
        map.insert(compact.into_boxed_str(), result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reading without the crate's parser gives what the crate's gives, for every
    /// region's example numbers written internationally (`+`, `00`) and, for a few
    /// home regions, nationally — and it does read most of them.
    #[test]
    fn the_plain_reading_agrees_with_the_crate() {
        let (mut plain, mut all) = (0, 0);
        for home in ["ES", "FR", "DE", "PT", "MX"] {
            let rules = NumberRules::new(home, false).unwrap();
            for meta in DATABASE.iter() {
                let d = meta.descriptors();
                let examples = LINE_TYPES
                    .iter()
                    .filter_map(|t| d.get(*t))
                    .filter_map(|desc| desc.example());
                for example in examples {
                    let cc = meta.country_code();
                    let mut inputs = vec![format!("+{cc}{example}"), format!("00{cc}{example}")];
                    if meta.id() == home {
                        inputs.push(example.to_string());
                    }
                    for input in inputs {
                        all += 1;
                        let Some(fast) = rules.parse_plain(&input) else {
                            continue;
                        };
                        plain += 1;
                        assert_eq!(
                            Ok(fast),
                            rules.parse_with_crate(&input),
                            "{input} (home {home})"
                        );
                    }
                }
            }
        }
        assert!(plain * 2 > all, "only {plain} of {all} read plainly");
        let es = NumberRules::new("ES", true).unwrap();
        for input in ["+34600123456", "0034600123456", "600123456", "+33612345678"] {
            assert!(es.parse_plain(input).is_some(), "{input} is read plainly");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_pattern_describes_what_is_read(s in "[ +.()0-9a\\-]{0,24}") {
            let re = regex_lite::Regex::new(INPUT_PATTERN).unwrap();
            let lexical = !matches!(compact(&s), Err(NumberError::InvalidCharacter | NumberError::Empty | NumberError::TooLong));
            proptest::prop_assert_eq!(re.is_match(&s), lexical, "{:?}", s);
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = es().parse(&s);
        }
    }

    fn es() -> NumberParser {
        NumberParser::new(NumberRules::new("ES", true).unwrap(), 1024)
    }

    #[test]
    fn every_way_of_typing_a_spanish_mobile() {
        let p = es();
        for input in [
            "+34 600 12 34 56",
            "+34600123456",
            "0034600123456",
            "0034 600-12-34-56",
            "34600123456",
            "600123456",
            "600 12 34 56",
            "(+34) 600.12.34.56",
            "600/123/456",
        ] {
            let info = p.parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(info.e164.to_string(), "+34600123456", "{input}");
            assert_eq!(info.country, Region::parse("ES"), "{input}");
            assert_eq!(info.kind, NumberKind::Mobile, "{input}");
        }
    }

    #[test]
    fn refusals_say_why() {
        let p = es();
        let cases = [
            ("", NumberError::Empty),
            ("  - ", NumberError::Empty),
            ("+34 6OO 123 456", NumberError::InvalidCharacter),
            ("600+123456", NumberError::InvalidCharacter),
            ("+34 600 12", NumberError::TooShort),
            ("+34 600 123 456 789", NumberError::TooLong),
            ("+999 600 123 456", NumberError::InvalidCountryCode),
            ("+0 600 123 456", NumberError::InvalidCountryCode),
            (
                "+34 912 345 678",
                NumberError::NotMobile(NumberKind::FixedLine),
            ),
            (
                "+34 900 123 456",
                NumberError::NotMobile(NumberKind::TollFree),
            ),
            (
                "+34 803 123 456",
                NumberError::NotMobile(NumberKind::PremiumRate),
            ),
            ("123456789012345678", NumberError::TooLong),
        ];
        for (input, want) in cases {
            assert_eq!(p.parse(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn landlines_pass_when_mobiles_are_not_required() {
        let p = NumberParser::new(NumberRules::new("ES", false).unwrap(), 0);
        let info = p.parse("912 345 678").unwrap();
        assert_eq!(info.e164.to_string(), "+34912345678");
        assert_eq!(info.kind, NumberKind::FixedLine);
    }

    #[test]
    fn national_forms_follow_the_default_region() {
        let gb = NumberParser::new(NumberRules::new("gb", true).unwrap(), 0);
        assert_eq!(
            gb.parse("07911 123456").unwrap().e164.to_string(),
            "+447911123456"
        );
        assert!(NumberRules::new("XX", true).is_err());
        assert!(NumberRules::new("ESP", true).is_err());
    }

    #[test]
    fn cached_answers_equal_fresh_ones_and_the_cache_stays_bounded() {
        let p = NumberParser::new(NumberRules::new("ES", true).unwrap(), 32);
        for i in 0..1000u32 {
            let input = format!("6{:08}", i * 7919 % 100_000_000);
            assert_eq!(p.parse(&input), p.rules().parse_uncached(&input));
            assert_eq!(p.parse(&input), p.rules().parse_uncached(&input));
        }
        let held: usize = p.shards.iter().map(|s| s.lock().len()).sum();
        assert!(held <= 32 + SHARDS, "{held}");
    }
}

#[cfg(test)]
mod non_geographic_tests {
    use super::*;

    /// Valid numbers of each kind of global service (libphonenumber's examples).
    const SATELLITE_AND_NETWORKS: [&str; 4] = [
        "+870 773 111 632",    // Inmarsat
        "+881 6 1234 5678",    // global mobile satellite
        "+882 34 2123 4567",   // international network
        "+883 510 012 345 67", // international network
    ];

    #[test]
    fn global_service_numbers_are_refused_unless_allowed() {
        let rules = NumberRules::new("ES", false).unwrap();
        for n in SATELLITE_AND_NETWORKS {
            assert_eq!(
                rules.parse_uncached(n),
                Err(NumberError::NonGeographic),
                "{n}"
            );
            let allowed = rules.allow_non_geographic(true).parse_uncached(n);
            assert!(allowed.is_ok(), "{n}: {allowed:?}");
            assert_eq!(allowed.unwrap().country, None, "{n}");
        }
        // Countries are not concerned, those sharing a code among them included.
        for n in [
            "+34 600 12 34 56",
            "+39 02 1234 5678",
            "+1 212 555 0123",
            "+7 912 345 67 89",
        ] {
            assert!(rules.parse_uncached(n).is_ok(), "{n}");
        }
        assert!(!is_non_geographic(E164::from_digits_unchecked(88)));
    }
}
