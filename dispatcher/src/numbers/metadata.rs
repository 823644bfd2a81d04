//! libphonenumber's rules for whether a parsed number exists and what kind of line
//! it is, run on patterns compiled once per country calling code.
//!
//! The `phonenumber` crate keeps its metadata's patterns in one LRU cache behind one
//! mutex, hashing each pattern's text on every use, and its validity check, line type
//! and country each look the region up and run the type patterns again: a Spanish
//! mobile cost some thirty locked, hashed regex searches, a sixth of otpd's CPU in a
//! national load test. Here each region's type patterns form one `RegexSet` (one pass
//! over the digits answers them all), kept for the life of the process in a table
//! indexed by calling code, so a check takes no lock at all after the first number of
//! a country. The rules are the crate's own, step for step (`validator::source_for`,
//! `validator::number_type`), and a test compares both over every region's examples.

use std::sync::OnceLock;

use phonenumber::Type;
use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

/// The types libphonenumber tries after the general pattern, in its order; fixed
/// line and mobile come last and are decided together.
const SPECIFIC: [Type; 8] = [
    Type::PremiumRate,
    Type::TollFree,
    Type::SharedCost,
    Type::Voip,
    Type::PersonalNumber,
    Type::Pager,
    Type::Uan,
    Type::Voicemail,
];

/// One region's patterns.
struct Plan {
    meta: &'static Metadata,
    /// `^(?:pattern)` of the general descriptor, then of each present type.
    set: RegexSet,
    /// Per pattern of `set`: the type (None for the general one) and its lengths.
    slots: Vec<(Option<Type>, &'static [u16])>,
    /// The metadata gives fixed lines and mobiles one pattern (the NANP).
    fixed_is_mobile: bool,
    /// The region's leading digits, which pick it among the regions of its code.
    leading: Option<Regex>,
}

/// The regions of one calling code, in the metadata's order.
struct Code {
    plans: Vec<Plan>,
    /// The code belongs to no region (`001`: international networks, +800, +882…).
    non_geographic: bool,
    /// One region, with no pattern for stripping prefixes: its national numbers are
    /// read as written, but for a leading national prefix (`0` in France).
    plain: bool,
    national_prefix: Option<&'static str>,
}

/// Calling codes have at most three digits.
static CODES: [OnceLock<Option<Code>>; 1000] = [const { OnceLock::new() }; 1000];

fn prefix_pattern(pattern: &str) -> String {
    format!("^(?:{pattern})")
}

fn compile(pattern: &str) -> Regex {
    RegexBuilder::new(&prefix_pattern(pattern))
        .ignore_whitespace(true)
        .build()
        .expect("libphonenumber's patterns compile, as they do in the crate")
}

impl Plan {
    fn new(meta: &'static Metadata) -> Plan {
        let d = meta.descriptors();
        let mut patterns = vec![prefix_pattern(d.general().national_number().as_str())];
        let mut slots = vec![(None, d.general().possible_length())];
        for t in SPECIFIC.into_iter().chain([Type::FixedLine, Type::Mobile]) {
            if let Some(desc) = d.get(t) {
                patterns.push(prefix_pattern(desc.national_number().as_str()));
                slots.push((Some(t), desc.possible_length()));
            }
        }
        let set = RegexSetBuilder::new(&patterns)
            .ignore_whitespace(true)
            .build()
            .expect("libphonenumber's patterns compile, as they do in the crate");
        fn pattern_of(d: Option<&Descriptor>) -> Option<&str> {
            d.map(|d| d.national_number().as_str())
        }
        Plan {
            meta,
            set,
            slots,
            fixed_is_mobile: pattern_of(d.fixed_line()) == pattern_of(d.mobile()),
            leading: meta.leading_digits().map(|r| compile(r.as_str())),
        }
    }

    /// `validator::number_type`: the line type of a national number, `Unknown` when
    /// the region has no such number.
    fn number_type(&self, national: &str) -> Type {
        let len = national.len() as u16;
        let matched = self.set.matches(national);
        let is = |want: Option<Type>| {
            self.slots.iter().enumerate().any(|(i, (t, lengths))| {
                *t == want && (lengths.is_empty() || lengths.contains(&len)) && matched.matched(i)
            })
        };
        if !is(None) {
            return Type::Unknown;
        }
        if let Some(t) = SPECIFIC.into_iter().find(|t| is(Some(*t))) {
            return t;
        }
        if is(Some(Type::FixedLine)) {
            return if self.fixed_is_mobile || is(Some(Type::Mobile)) {
                Type::FixedLineOrMobile
            } else {
                Type::FixedLine
            };
        }
        if is(Some(Type::Mobile)) {
            return Type::Mobile;
        }
        Type::Unknown
    }
}

fn code(code: u16) -> Option<&'static Code> {
    CODES
        .get(usize::from(code))?
        .get_or_init(|| {
            let regions = DATABASE.region(&code)?;
            let non_geographic = regions.len() == 1 && regions[0] == "001";
            let metas: Vec<&'static Metadata> = if non_geographic {
                DATABASE.by_code(&code)?.into_iter().take(1).collect()
            } else {
                regions
                    .iter()
                    .map(|r| DATABASE.by_id(*r))
                    .collect::<Option<_>>()?
            };
            let plain = !non_geographic
                && metas.len() == 1
                && metas[0].national_prefix_for_parsing().is_none();
            Some(Code {
                national_prefix: metas[0].national_prefix(),
                plans: metas.into_iter().map(Plan::new).collect(),
                non_geographic,
                plain,
            })
        })
        .as_ref()
}

/// `validator::source_for`: the region whose metadata rules `national` under `code`.
fn plan_for<'a>(code: &'a Code, national: &str) -> Option<&'a Plan> {
    if code.non_geographic || code.plans.len() == 1 {
        return code.plans.first();
    }
    code.plans.iter().find(|p| match &p.leading {
        Some(leading) => leading.is_match(national),
        None => p.number_type(national) != Type::Unknown,
    })
}

/// What the metadata says of a number: whether it is valid, its line type and its
/// region's metadata. `national` is the national significant number with its
/// leading zeros (Italy's fixed lines keep one), `value` the same without them — the
/// crate decides validity on the first and type and region on the second, and so
/// does this.
pub struct Verdict {
    pub valid: bool,
    pub kind: Type,
    pub meta: Option<&'static Metadata>,
}

pub fn judge(calling_code: u16, national: &str, value: &str) -> Verdict {
    let Some(code) = code(calling_code) else {
        return Verdict {
            valid: false,
            kind: Type::Unknown,
            meta: None,
        };
    };
    let of = |n: &str| plan_for(code, n).map(|p| (p, p.number_type(n)));
    let by_value = of(value);
    let valid = if national == value {
        by_value.is_some_and(|(_, t)| t != Type::Unknown)
    } else {
        of(national).is_some_and(|(_, t)| t != Type::Unknown)
    };
    Verdict {
        valid,
        kind: by_value.map_or(Type::Unknown, |(_, t)| t),
        meta: by_value.map(|(p, _)| p.meta),
    }
}

/// The calling code and national number of `digits` written after a `+`, by the
/// crate's rule: the first one- to three-digit prefix that is a calling code.
pub fn split_calling_code(digits: &str) -> Option<(u16, &str)> {
    if digits.starts_with('0') {
        return None;
    }
    (1..=3.min(digits.len())).find_map(|len| {
        let code: u16 = digits[..len].parse().ok()?;
        DATABASE.by_code(&code).map(|_| (code, &digits[len..]))
    })
}

/// The verdict on a number of a plain region (see [`Code::plain`]) whose national
/// number starts with neither a zero nor the national prefix, when it is valid: then the crate's parser would have
/// read the same national number, and its checks say the same. `None` means "ask
/// the crate" — for the reading, or for the reason it is wrong.
pub fn judge_plain(calling_code: u16, national: &str) -> Option<Verdict> {
    let c = code(calling_code)?;
    if national.is_empty()
        || national.starts_with('0')
        || !c.plain
        || c.national_prefix.is_some_and(|p| national.starts_with(p))
    {
        return None;
    }
    let verdict = judge(calling_code, national, national);
    verdict.valid.then_some(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phonenumber::Mode;

    /// Every region's example numbers of every type, and some mangled forms of them,
    /// judged here and by the crate: the same validity, type and region.
    #[test]
    fn agrees_with_the_crate_on_every_regions_examples() {
        let mut compared = 0;
        for meta in DATABASE.iter() {
            let d = meta.descriptors();
            let examples = std::iter::once(d.general())
                .chain(
                    SPECIFIC
                        .into_iter()
                        .chain([Type::FixedLine, Type::Mobile])
                        .filter_map(|t| d.get(t)),
                )
                .filter_map(|desc| desc.example());
            for example in examples {
                let variants = [
                    example.to_string(),
                    format!("{example}1"),
                    example[..example.len().saturating_sub(1)].to_string(),
                    format!("0{example}"),
                    example.replacen(|c: char| c.is_ascii_digit(), "9", 1),
                ];
                for national in variants {
                    let text = format!("+{} {national}", meta.country_code());
                    let Ok(number) = phonenumber::parse(None, &text) else {
                        continue;
                    };
                    let n = number.national();
                    let ours = judge(
                        number.code().value(),
                        &n.to_string(),
                        &n.value().to_string(),
                    );
                    let theirs_meta = number.metadata(&DATABASE).map(|m| m.id());
                    assert_eq!(
                        (ours.valid, ours.kind, ours.meta.map(|m| m.id())),
                        (
                            number.is_valid(),
                            number.number_type(&DATABASE),
                            theirs_meta
                        ),
                        "{text} ({})",
                        number.format().mode(Mode::E164)
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared > 2000, "only {compared} numbers compared");
    }
}
